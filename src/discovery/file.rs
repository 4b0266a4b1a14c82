//! `file_sd_configs`: target files in Prometheus' format (a list of `{targets, labels}`),
//! JSON (`.json`) or YAML (`.yml`, `.yaml`), named by paths whose last part may be a glob.
//!
//! Change detection polls: every few seconds each matching file's size, modification time
//! and inode are compared with the last read, and a changed file is read again; every
//! `refresh_interval` all of them are, whatever their stamps say (Prometheus re-reads
//! periodically too). Polling works the same on every filesystem (network mounts, bind
//! mounts of ConfigMaps, editors that write a new file and rename it over the old one),
//! where inotify needs care for each; a stat per file every few seconds costs nothing.
//!
//! A file that fails to read or parse keeps its last good targets, and the error names the
//! file and, for a syntax error, its line and column. A file that disappears takes its
//! targets with it. Each target gets `__meta_filepath`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::time::Instant;

use super::{Group, LabelMap, Provider, Refreshed, ADDRESS_LABEL};
use crate::config::discovery::FileSdSettings;
use crate::series::is_valid_label_name;

/// Largest target file read; a bigger one is refused rather than buffered.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// How often files are checked for changes (at most; never less often than the
/// `refresh_interval`).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// The label naming the file a target came from.
pub const FILEPATH_LABEL: &str = "__meta_filepath";

/// One entry of a target file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGroup {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Why a target file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileSdError {
    /// The file's syntax or shape is wrong.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// Parsed, but something in it is invalid (no position known).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Parses a target file's bytes; `path` names it in groups and errors, and its extension
/// picks the format.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<Group>, FileSdError> {
    let shown = path.display().to_string();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let parsed: Vec<FileGroup> = match ext {
        "json" => serde_json::from_slice(bytes).map_err(|e| FileSdError::Syntax {
            path: shown.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?,
        "yml" | "yaml" => {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                // An empty YAML document is no groups, as in Prometheus.
                Vec::new()
            } else {
                serde_norway::from_slice(bytes).map_err(|e| {
                    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                    FileSdError::Syntax {
                        path: shown.clone(),
                        line,
                        column,
                        message: e.to_string(),
                    }
                })?
            }
        }
        _ => {
            return Err(FileSdError::Invalid {
                path: shown,
                message: "a target file must end in .json, .yml or .yaml".to_string(),
            })
        }
    };
    let mut out = Vec::with_capacity(parsed.len());
    for (i, g) in parsed.into_iter().enumerate() {
        for name in g.labels.keys() {
            if !is_valid_label_name(name) {
                return Err(FileSdError::Invalid {
                    path: shown,
                    message: format!("group {i}: {name:?} is not a valid label name"),
                });
            }
        }
        let mut labels: LabelMap = g.labels;
        labels.insert(FILEPATH_LABEL.to_string(), shown.clone());
        out.push(Group {
            source: format!("{shown}:{i}"),
            targets: g
                .targets
                .into_iter()
                .map(|a| LabelMap::from([(ADDRESS_LABEL.to_string(), a)]))
                .collect(),
            labels,
        });
    }
    Ok(out)
}

/// Whether `name` matches `pattern`, where `*` is any run of characters and `?` one.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point: linear enough for file names.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// The files `pattern` names now: itself, or the matches of the glob in its last part.
fn expand(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let name = pattern
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let dir = match pattern.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: listing {}: {e}", pattern.display(), dir.display()))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob_match(name, n)))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// What a file looked like when last read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
    })
}

/// The file provider of one `file_sd_configs` entry.
#[derive(Debug)]
pub struct FileProvider {
    settings: FileSdSettings,
    /// When every file was last read regardless of its stamp.
    last_full: Option<Instant>,
    stamps: BTreeMap<PathBuf, Stamp>,
    /// The last good groups of each file.
    good: BTreeMap<PathBuf, Vec<Group>>,
}

impl FileProvider {
    /// A provider that has read nothing yet.
    pub fn new(settings: FileSdSettings) -> FileProvider {
        FileProvider {
            settings,
            last_full: None,
            stamps: BTreeMap::new(),
            good: BTreeMap::new(),
        }
    }

    /// One look at the files (synchronous: a few small reads).
    pub fn refresh_now(&mut self) -> Refreshed {
        let mut errors = Vec::new();
        let mut files = BTreeSet::new();
        for p in &self.settings.files {
            match expand(p) {
                Ok(found) => files.extend(found),
                Err(e) => errors.push(e),
            }
        }
        let full = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.settings.refresh_interval);
        if full {
            self.last_full = Some(Instant::now());
        }
        let mut changed = false;
        // A file gone since the last look takes its targets with it.
        let before = self.good.len() + self.stamps.len();
        self.good.retain(|f, _| files.contains(f));
        self.stamps.retain(|f, _| files.contains(f));
        changed |= before != self.good.len() + self.stamps.len();
        for f in files {
            let now = match stamp(&f) {
                Ok(s) => s,
                Err(e) => {
                    // A path named without a glob that is missing: said once per change.
                    if self.stamps.remove(&f).is_some() || full {
                        errors.push(format!("{}: {e}", f.display()));
                    }
                    changed |= self.good.remove(&f).is_some();
                    continue;
                }
            };
            if !full && self.stamps.get(&f) == Some(&now) {
                continue;
            }
            self.stamps.insert(f.clone(), now.clone());
            if now.len > MAX_FILE_BYTES {
                errors.push(format!(
                    "{}: {} bytes is more than the {MAX_FILE_BYTES} a target file may hold",
                    f.display(),
                    now.len
                ));
                continue;
            }
            match std::fs::read(&f) {
                Ok(bytes) => match parse_file(&f, &bytes) {
                    Ok(groups) => {
                        changed |= self.good.get(&f) != Some(&groups);
                        self.good.insert(f, groups);
                    }
                    Err(e) => errors.push(format!("{e} (keeping this file's last good targets)")),
                },
                Err(e) => errors.push(format!("{}: {e}", f.display())),
            }
        }
        Refreshed {
            groups: (changed || full).then(|| self.good.values().flatten().cloned().collect()),
            errors,
        }
    }
}

impl Provider for FileProvider {
    fn mechanism(&self) -> &'static str {
        "file"
    }

    fn interval(&self) -> Duration {
        WATCH_INTERVAL.min(self.settings.refresh_interval)
    }

    fn refresh(&mut self) -> BoxFuture<'_, Refreshed> {
        Box::pin(async move { self.refresh_now() })
    }
}

#[cfg(test)]
mod tests;
