//! [`SecretFile`]: a credential file that is re-read when it changes, as Prometheus re-reads
//! `bearer_token_file` on every request, so that a rotated secret (cert-manager, Vault agent,
//! a Kubernetes secret volume's symlink swap) is used without a restart.
//!
//! Each use costs one `stat`: the file is read again only when its identity or metadata (device,
//! inode, length, modification and change times) differ from the last reading. A file that
//! disappears, becomes unreadable or empty keeps the last good value, and that is logged once
//! per episode, naming the key and the path, never the contents; its recovery is logged too.
//! A FIFO is read once, at start: reading one again would wait for a writer on every request.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{read_secret_file, SecretFileError};
use crate::secret::Secret;

/// A secret held in a file, re-read when the file changes; cheap to clone (shared state).
#[derive(Clone)]
pub struct SecretFile(Arc<Inner>);

struct Inner {
    /// The configuration key, e.g. `remote_write[0].bearer_token_file`, for log lines.
    key: String,
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    /// The last good value.
    value: Secret,
    /// What the file looked like when `value` was read; `None` for a FIFO (never re-read).
    stamp: Option<Stamp>,
    /// Whether the last attempt to read a changed file failed (logged once until it recovers).
    failing: bool,
}

/// What tells a changed file from the one last read, without reading it; the TLS files'
/// reloading uses it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of the regular file at `path` (symbolic links followed); `None` when it is
    /// missing or not a regular file.
    pub(crate) fn of_path(path: &Path) -> Option<Stamp> {
        std::fs::metadata(path).ok().and_then(|m| Stamp::of(&m))
    }

    /// The stamp of a regular file; `None` for anything else (a FIFO is not re-read).
    fn of(meta: &std::fs::Metadata) -> Option<Stamp> {
        meta.is_file().then(|| Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

impl SecretFile {
    /// Reads the file now (so a bad path fails at start, under `key`) and keeps watching it.
    /// An empty file is refused: it is what a missing systemd credential looks like.
    pub fn open(key: impl Into<String>, path: &Path) -> Result<SecretFile, SecretFileError> {
        // Stamped before reading: a change during the read is then seen at the next use.
        let stamp = Stamp::of_path(path);
        let value = read_secret_file(path)?;
        if value.is_empty() {
            return Err(SecretFileError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(SecretFile(Arc::new(Inner {
            key: key.into(),
            path: path.to_path_buf(),
            state: Mutex::new(State {
                value,
                stamp,
                failing: false,
            }),
        })))
    }

    /// The configuration key this file was given under.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// The current value: the file is read again if it changed since the last reading; if it
    /// cannot be read (or is empty), the last good value is kept.
    pub fn current(&self) -> Secret {
        let mut state = self.lock();
        if state.stamp.is_some() {
            let now = Stamp::of_path(&self.0.path);
            if now != state.stamp || state.failing {
                self.refresh(&mut state, now);
            }
        }
        state.value.clone()
    }

    /// The value last read, without looking at the file: what the latest request sent. Used
    /// for scrubbing logs, so that listing secrets does not consume a change that a refusal
    /// should discover ([`SecretFile::reload`]).
    pub fn last_read(&self) -> Secret {
        self.lock().value.clone()
    }

    /// Reads the file again whatever its metadata says (after a receiver refused the value);
    /// tells whether the value changed.
    pub fn reload(&self) -> bool {
        let mut state = self.lock();
        if state.stamp.is_none() {
            return false;
        }
        let before = state.value.clone();
        let now = Stamp::of_path(&self.0.path);
        self.refresh(&mut state, now);
        state.value != before
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is only assigned whole values under the lock, so a panic elsewhere while it
        // was held cannot leave it half-updated.
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the file into `state`, keeping the last good value on failure.
    fn refresh(&self, state: &mut State, stamp: Option<Stamp>) {
        let read = match stamp {
            None => Err("is missing or no longer a regular file".to_string()),
            Some(_) => match read_secret_file(&self.0.path) {
                Ok(v) if v.is_empty() => Err("is empty".to_string()),
                Ok(v) => Ok(v),
                Err(e) => Err(e.to_string()),
            },
        };
        match read {
            Ok(value) => {
                if state.failing {
                    tracing::info!(
                        key = %self.0.key,
                        path = %self.0.path.display(),
                        "the secret file is readable again; its current value is used"
                    );
                }
                state.value = value;
                state.stamp = stamp;
                state.failing = false;
            }
            Err(why) => {
                if !state.failing {
                    tracing::warn!(
                        key = %self.0.key,
                        path = %self.0.path.display(),
                        problem = %why,
                        "the secret file changed but cannot be used; keeping its last good value"
                    );
                }
                state.failing = true;
            }
        }
    }
}

impl PartialEq for SecretFile {
    /// Two are equal when they read the same file under the same key.
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key && self.0.path == other.0.path
    }
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("key", &self.0.key)
            .field("path", &self.0.path)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "one\n").unwrap();
        let f = SecretFile::open("basic_auth.password_file", &path).unwrap();
        assert_eq!(f.current().expose(), "one");
        // Same length, new content: the times tell.
        std::fs::write(&path, "two\n").unwrap();
        assert_eq!(f.current().expose(), "two");
        // Replaced by rename, as secret managers do.
        let tmp = dir.path().join("pw.tmp");
        std::fs::write(&tmp, "three").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(f.current().expose(), "three");
        // Removed, then emptied: the last good value stays.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(f.current().expose(), "three");
        std::fs::write(&path, "").unwrap();
        assert_eq!(f.current().expose(), "three");
        // Back: used again.
        std::fs::write(&path, "four").unwrap();
        assert_eq!(f.current().expose(), "four");
        assert_eq!(f.key(), "basic_auth.password_file");
        assert!(!format!("{f:?}").contains("four"));
    }

    #[test]
    fn reload_reports_whether_the_value_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "a").unwrap();
        let f = SecretFile::open("k", &path).unwrap();
        assert!(!f.reload());
        std::fs::write(&path, "b").unwrap();
        assert!(f.reload());
        assert_eq!(f.current().expose(), "b");
    }

    #[test]
    fn an_empty_or_missing_file_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "\n").unwrap();
        let e = SecretFile::open("k", &path).unwrap_err().to_string();
        assert!(e.ends_with("is empty"), "{e}");
        assert!(SecretFile::open("k", &dir.path().join("none")).is_err());
    }
}
