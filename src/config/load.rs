//! Reading the configuration into the serde schema, reporting every problem at once.
//!
//! The file is parsed as TOML (a syntax error stops there, with its line), the `PUSHPROBE_*`
//! environment overrides are merged into it (see `env.rs`), and the result is read into
//! [`ConfigFile`] piece by piece: the top-level tables, then each entry of each list. Each
//! piece is read again after every error with the offending key taken out, so one run finds
//! every unknown key and every malformed value, and the keys known come from the serde structs
//! alone. Each problem names its key path (`probe[0].interval`) and where it came from: the
//! file and line, or the variable. Nothing here validates values.

use std::fmt;
use std::path::Path;

use figment::error::Kind;
use figment::value::{Dict, Tag, Value};

use super::env::{apply_overrides, read_env, Applied};
use super::keypath::{KeyPath, LineIndex, Segment};
use super::probe::PROBE_KINDS;
use super::{ConfigError, ConfigFile, ProbeEntry};

/// Environment variable prefix for configuration overrides.
pub const ENV_PREFIX: &str = "PUSHPROBE_";

/// Most times one piece is read again after an error: each time removes a key, and no
/// hand-written table has this many.
const MAX_ROUNDS: usize = 256;

/// Where a value came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file, with the line when the key is in it.
    File {
        /// The file as given.
        name: String,
        /// The line (from 1) of the key, or of the nearest table holding it.
        line: Option<usize>,
    },
    /// A `PUSHPROBE_*` environment variable, by name.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                name,
                line: Some(line),
            } => write!(f, "in {name}, line {line}"),
            Origin::File { name, line: None } => write!(f, "in {name}"),
            Origin::Env(var) => write!(f, "in environment variable {var}"),
        }
    }
}

/// Loads the configuration from `path` (if it exists or was given explicitly) and the
/// environment, without validating it; reports every problem found.
pub fn load(path: &Path, explicit: bool) -> Result<ConfigFile, Vec<ConfigError>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(vec![ConfigError::Load(format!(
                "config file {} does not exist (give --config or set PUSHPROBE_CONFIG)",
                path.display()
            ))]);
        }
        Err(e) => {
            return Err(vec![ConfigError::Load(format!(
                "cannot read config file {}: {e}",
                path.display()
            ))]);
        }
    };
    read(&text, &path.display().to_string(), &read_env())
}

/// Reads `text` (the file named `source_name`) with the overrides `vars` (name, value).
fn read(
    text: &str,
    source_name: &str,
    vars: &[(String, String)],
) -> Result<ConfigFile, Vec<ConfigError>> {
    let mut root: Dict = match toml::from_str(text) {
        Ok(root) => root,
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            return Err(vec![ConfigError::Syntax {
                message: e.message().trim().replace('\n', "; "),
                origin: Origin::File {
                    name: source_name.to_string(),
                    line,
                },
            }]);
        }
    };
    let overlay = apply_overrides(&mut root, vars);
    let origins = Origins {
        source_name,
        lines: LineIndex::new(text),
        applied: overlay.applied,
    };
    let mut errors: Vec<(ConfigError, (bool, usize))> = overlay
        .errors
        .into_iter()
        .map(|e| {
            let error = ConfigError::Read {
                key: e.path.to_string(),
                message: e.message,
                origin: Origin::Env(e.var),
            };
            (error, (true, 0))
        })
        .collect();
    let root = Value::Dict(Tag::Default, root);
    for problem in find_problems(&root) {
        let origin = origins.origin(&problem.path);
        let order = match &origin {
            Origin::File { line, .. } => (false, line.unwrap_or(usize::MAX)),
            Origin::Env(_) => (true, 0),
        };
        let error = ConfigError::Read {
            key: problem.path.to_string(),
            message: problem.message,
            origin,
        };
        errors.push((error, order));
    }
    if errors.is_empty() {
        // Every piece was read without error, so the whole reads too; should it not, that
        // is reported like any other problem rather than trusted.
        return root.deserialize::<ConfigFile>().map_err(|e| {
            vec![ConfigError::Load(format!(
                "{} (in {source_name})",
                describe_figment_error(e)
            ))]
        });
    }
    // In the file's order, then the variables'.
    errors.sort_by_key(|(_, order)| *order);
    Err(errors.into_iter().map(|(e, _)| e).collect())
}

/// A key that does not fit the schema, and why.
#[derive(Debug, PartialEq)]
struct Problem {
    path: KeyPath,
    message: String,
}

/// Reads the merged configuration piece by piece and returns every problem found: first the
/// top level with its lists left empty (unknown sections, `[agent]`, `[pricing]`), then each
/// entry of each list on its own, so that one bad entry hides nothing of another.
fn find_problems(root: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Value::Dict(_, dict) = root else {
        return problems;
    };
    let mut skeleton = dict.clone();
    for value in skeleton.values_mut() {
        if let Value::Array(_, items) = value {
            items.clear();
        }
    }
    collect(
        Value::from(skeleton),
        |v| v.deserialize::<ConfigFile>().err(),
        |path| path,
        &mut problems,
    );
    for (section, value) in dict {
        let Value::Array(_, items) = value else {
            continue;
        };
        // An unknown section was reported whole by the top level.
        let section_path = KeyPath::default().key(section);
        if problems.iter().any(|p| p.path.starts_with(&section_path)) {
            continue;
        }
        for (i, item) in items.iter().enumerate() {
            let entry = section_path.index(i);
            if section == "probe" {
                // A probe's schema depends on its `kind`: read it as the schema would.
                collect(
                    item.clone(),
                    |v| ProbeEntry::from_value(v.clone()).err().map(|e| *e),
                    |path| KeyPath([entry.0.clone(), path.0].concat()),
                    &mut problems,
                );
            } else {
                // The entry alone in its list, read as the whole file: the schema of each list
                // stays in the serde structs.
                let alone = Dict::from([(
                    section.clone(),
                    Value::Array(Tag::Default, vec![item.clone()]),
                )]);
                collect(
                    Value::from(alone),
                    |v| v.deserialize::<ConfigFile>().err(),
                    |mut path| {
                        if let Some(first) = path.0.get_mut(1) {
                            *first = Segment::Index(i);
                        }
                        path
                    },
                    &mut problems,
                );
            }
        }
    }
    problems
}

/// Reads `value` with `read` (which gives the error, if any) until it succeeds, recording each error (its path made whole by
/// `rebase`) and taking out the offending key before the next try.
fn collect(
    mut value: Value,
    read: impl Fn(&Value) -> Option<figment::Error>,
    rebase: impl Fn(KeyPath) -> KeyPath,
    problems: &mut Vec<Problem>,
) {
    // Keys taken out because their value was wrong: their absence is no further problem.
    let mut removed: Vec<KeyPath> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let Some(e) = read(&value) else {
            return;
        };
        let mut path = key_path(&value, &e.path);
        if let Kind::MissingField(field) = &e.kind {
            path = path.key(field);
        }
        let already_reported =
            matches!(e.kind, Kind::MissingField(_)) && removed.iter().any(|r| path.starts_with(r));
        if !already_reported {
            problems.push(Problem {
                path: rebase(path.clone()),
                message: describe_kind(&e.kind),
            });
        }
        // Take out the nearest key of a table holding the problem; a list entry cannot go,
        // as the entries after it would then be misnamed.
        let Some(n) = (1..=path.0.len())
            .rev()
            .find(|&n| matches!(path.0[n - 1], Segment::Key(_)) && holds(&value, &path.0[..n]))
        else {
            return;
        };
        let target = KeyPath(path.0[..n].to_vec());
        if !remove(&mut value, &target) {
            return;
        }
        removed.push(target);
    }
}

/// Figment's string path, walked through `value` to tell list indexes from table keys.
fn key_path(value: &Value, path: &[String]) -> KeyPath {
    let mut out = KeyPath::default();
    let mut node = Some(value);
    for segment in path {
        match (node, segment.parse::<usize>()) {
            (Some(Value::Array(_, items)), Ok(i)) => {
                out = out.index(i);
                node = items.get(i);
            }
            (Some(Value::Dict(_, dict)), _) => {
                out = out.key(segment);
                node = dict.get(segment);
            }
            // Off the tree (figment's own view of a value): a number is most likely an index.
            (_, Ok(i)) => {
                out = out.index(i);
                node = None;
            }
            (_, Err(_)) => {
                out = out.key(segment);
                node = None;
            }
        }
    }
    out
}

/// Whether `value` has a key at `path`, whose last segment is a table key.
fn holds(value: &Value, path: &[Segment]) -> bool {
    let Some((Segment::Key(last), parents)) = path.split_last() else {
        return false;
    };
    matches!(find(value, parents), Some(Value::Dict(_, d)) if d.contains_key(last))
}

/// The value at `path`.
fn find<'v>(value: &'v Value, path: &[Segment]) -> Option<&'v Value> {
    path.iter()
        .try_fold(value, |node, segment| match (node, segment) {
            (Value::Dict(_, d), Segment::Key(k)) => d.get(k),
            (Value::Array(_, items), Segment::Index(i)) => items.get(*i),
            _ => None,
        })
}

/// Takes the key at `path` out of its table.
fn remove(value: &mut Value, path: &KeyPath) -> bool {
    let Some((Segment::Key(last), parents)) = path.0.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        node = match (node, segment) {
            (Value::Dict(_, d), Segment::Key(k)) => match d.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Value::Array(_, items), Segment::Index(i)) => match items.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        Value::Dict(_, d) => d.remove(last).is_some(),
        _ => false,
    }
}

/// What the file and the environment gave, to say where a problem came from.
struct Origins<'a> {
    source_name: &'a str,
    lines: LineIndex,
    applied: Vec<Applied>,
}

impl Origins<'_> {
    /// The variable that set `path` (or the table holding it) when one did, else the file and
    /// the line of the key or of the nearest table holding it.
    fn origin(&self, path: &KeyPath) -> Origin {
        let in_file = self.lines.deepest(path);
        let file_depth = in_file.map_or(0, |(depth, _)| depth);
        let from_env = self
            .applied
            .iter()
            .map(|a| (a.path.common_len(path), a))
            .filter(|(depth, a)| *depth > file_depth || path.starts_with(&a.path))
            .max_by_key(|(depth, _)| *depth);
        match from_env {
            Some((_, a)) => Origin::Env(a.var.clone()),
            None => Origin::File {
                name: self.source_name.to_string(),
                line: in_file.map(|(_, line)| line),
            },
        }
    }
}

/// Joins figment's errors into one line, each with its key path.
pub(super) fn describe_figment_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let path = KeyPath(
                e.path
                    .iter()
                    .map(|s| match s.parse::<usize>() {
                        Ok(i) => Segment::Index(i),
                        Err(_) => Segment::Key(s.clone()),
                    })
                    .collect(),
            );
            let path = match &e.kind {
                Kind::MissingField(field) => path.key(field),
                _ => path,
            };
            if path.0.is_empty() {
                describe_kind(&e.kind)
            } else {
                format!("{path}: {}", describe_kind(&e.kind))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One error, worded for a person: what is wrong with the key its path names.
fn describe_kind(kind: &Kind) -> String {
    match kind {
        Kind::UnknownField(found, expected) => {
            let hint = closest(found, expected)
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            format!(
                "unknown key{hint}; expected one of: {}",
                expected.join(", ")
            )
        }
        Kind::MissingField(_) => "is required".to_string(),
        Kind::UnknownVariant(found, expected) if *expected == PROBE_KINDS => format!(
            "unknown probe kind {found:?}; expected one of: {}",
            expected.join(", ")
        ),
        Kind::UnknownVariant(found, expected) => format!(
            "unknown value {found:?}; expected one of: {}",
            expected
                .iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::InvalidType(found, expected) => format!("expected {expected}, found {found}"),
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    }
}

/// The expected key a misspelt `found` most likely meant: at most two edits away.
fn closest<'a>(found: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|k| (edit_distance(found, k), *k))
        .filter(|(d, _)| *d <= 2 && *d < found.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edits (insert, delete, substitute, swap two neighbours) turning `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    fn read_errors(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match read(text, "pushprobe.toml", &vars) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    const FILE: &str = r#"[agnet]
drain_timeout = "5s"

[[remote_write]]
url = "http://127.0.0.1:9090/api/v1/write"
timeout = "soon"

[[probe]]
name = "api"
kind = "http"
url = "http://127.0.0.1:8080/health"
intervall = "30s"
timeout = "5"
colour = "blue"

[[probe]]
name = "ai"
kind = "openai"
base_url = "https://api.example.com/v1"

[pricing."gpt-4.1"]
input_per_mtok = 2.0
output_per_mtok = "eight"
"#;

    #[test]
    fn every_problem_is_reported_with_its_line() {
        assert_eq!(
            read_errors(FILE, &[]),
            [
                "agnet: unknown key (did you mean `agent`?); expected one of: agent, \
                 remote_write, probe, pushgateway, pricing, scrape (in pushprobe.toml, line 1)",
                "remote_write[0].timeout: \"soon\" is not a duration (expected e.g. \"30s\", \
                 \"1m30s\") (in pushprobe.toml, line 6)",
                "probe[0].intervall: unknown key (did you mean `interval`?); expected one of: \
                 name, url, interval, timeout, method, headers, body, valid_status_codes, \
                 follow_redirects, basic_auth, bearer_token, bearer_token_file, tls, proxy_url, \
                 no_proxy, proxy_from_environment, proxy_connect_header, proxy_password_file, \
                 oauth2, buckets, labels, job, fail_if_body_matches_regexp, \
                 fail_if_body_not_matches_regexp, fail_if_header_matches, \
                 fail_if_header_not_matches, fail_if_body_json, valid_http_versions, fail_if_ssl, \
                 fail_if_not_ssl, body_size_limit, compression, preferred_ip_protocol, \
                 ip_protocol_fallback, targets, static_configs, file_sd_configs, \
                 http_sd_configs, dns_sd_configs, relabel_configs (in pushprobe.toml, line 12)",
                "probe[0].timeout: \"5\": missing unit (ms, s, m, h, d, w, y) \
                 (in pushprobe.toml, line 13)",
                "probe[0].colour: unknown key; expected one of: name, url, interval, timeout, \
                 method, headers, body, valid_status_codes, follow_redirects, basic_auth, \
                 bearer_token, bearer_token_file, tls, proxy_url, no_proxy, \
                 proxy_from_environment, proxy_connect_header, proxy_password_file, oauth2, \
                 buckets, labels, job, fail_if_body_matches_regexp, \
                 fail_if_body_not_matches_regexp, fail_if_header_matches, \
                 fail_if_header_not_matches, fail_if_body_json, valid_http_versions, fail_if_ssl, \
                 fail_if_not_ssl, body_size_limit, compression, preferred_ip_protocol, \
                 ip_protocol_fallback, targets, static_configs, file_sd_configs, \
                 http_sd_configs, dns_sd_configs, relabel_configs (in pushprobe.toml, line 14)",
                "probe[1].model: is required (in pushprobe.toml, line 16)",
                "pricing.\"gpt-4.1\".output_per_mtok: expected f64, found string \"eight\" \
                 (in pushprobe.toml, line 23)",
            ]
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = read_errors("[agent]\ndrain_timeout = \"5s\"\nlisten = \n", &[]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].ends_with("(in pushprobe.toml, line 3)"), "{e:?}");
        assert!(e[0].starts_with("TOML syntax: "), "{e:?}");
    }

    #[test]
    fn problems_from_a_variable_name_it() {
        let file = "[[probe]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://h/\"\n";
        let mut e = read_errors(
            file,
            &[
                ("PUSHPROBE_PROBE__0__INTERVAL", "soon"),
                ("PUSHPROBE_PROBE__3__INTERVAL", "5s"),
                ("PUSHPROBE_REMOTE_WRITE__0__NAME", "a"),
            ],
        );
        e.sort();
        assert_eq!(
            e,
            [
                "probe: index 3 is past the end of probe, which has 1 entry (index 0); index 1 \
                 adds an entry, or add the table to the file (in environment variable \
                 PUSHPROBE_PROBE__3__INTERVAL)",
                "probe[0].interval: \"soon\" is not a duration (expected e.g. \"30s\", \
                 \"1m30s\") (in environment variable PUSHPROBE_PROBE__0__INTERVAL)",
                "remote_write[0].url: is required (in environment variable \
                 PUSHPROBE_REMOTE_WRITE__0__NAME)",
            ]
        );
    }

    #[test]
    fn env_overrides_reach_lists_and_model_names() {
        let file = r#"
            [[remote_write]]
            url = "http://127.0.0.1:9090/api/v1/write"
            [[probe]]
            name = "api"
            kind = "http"
            url = "http://127.0.0.1:8080/health"
            interval = "30s"
            timeout = "5s"
            [pricing."gpt-oss-20b"]
            input_per_mtok = 0.1
            output_per_mtok = 0.5
        "#;
        figment::Jail::expect_with(|jail| {
            jail.create_file("pushprobe.toml", file)?;
            jail.set_env("PUSHPROBE_PROBE__0__INTERVAL", "5s");
            jail.set_env(
                "PUSHPROBE_REMOTE_WRITE__0__URL",
                "http://10.0.0.1:8428/api/v1/write",
            );
            jail.set_env("PUSHPROBE_PRICING__GPT_OSS_20B__INPUT_PER_MTOK", "0.25");
            let f = load(Path::new("pushprobe.toml"), true).unwrap();
            assert_eq!(f.probe[0].interval().to_string(), "5s");
            assert_eq!(
                f.remote_write[0].url.as_str(),
                "http://10.0.0.1:8428/api/v1/write"
            );
            assert_eq!(f.pricing.keys().collect::<Vec<_>>(), ["gpt-oss-20b"]);
            assert_eq!(f.pricing["gpt-oss-20b"].input_per_mtok, 0.25);
            f.validate("pushprobe.toml").unwrap();

            jail.set_env("PUSHPROBE_PROBE__1__INTERVAL", "5s");
            jail.set_env("PUSHPROBE_PRICING__GPT_OSS_120B__INPUT_PER_MTOK", "1");
            let e: Vec<String> = load(Path::new("pushprobe.toml"), true)
                .unwrap_err()
                .iter()
                .map(|e| e.to_string())
                .collect();
            assert_eq!(e.len(), 2, "{e:?}");
            assert!(
                e[0].starts_with(
                    "pricing: no [pricing] entry in the file matches \"GPT_OSS_120B\""
                ) && e[0].ends_with(
                    "(in environment variable PUSHPROBE_PRICING__GPT_OSS_120B__INPUT_PER_MTOK)"
                ),
                "{e:?}"
            );
            // A new entry needs all its keys: the first index past the end adds one, whose
            // missing keys are then named with the variable that made it.
            assert!(
                e[1].starts_with("probe[1].kind: is required")
                    && e[1].ends_with("(in environment variable PUSHPROBE_PROBE__1__INTERVAL)"),
                "{e:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn misspellings_are_matched_within_two_edits() {
        assert_eq!(closest("agnet", &["agent", "probe"]), Some("agent"));
        assert_eq!(
            closest("intervall", &["interval", "timeout"]),
            Some("interval")
        );
        assert_eq!(closest("colour", &["name", "url"]), None);
        assert_eq!(closest("a", &["b"]), None);
    }
}
