//! `PUSHPROBE_*` environment overrides, merged into the values read from the file.
//!
//! A variable names a key path with `__` between levels: `PUSHPROBE_AGENT__DRAIN_TIMEOUT`,
//! `PUSHPROBE_PROBE__0__INTERVAL`. A number after a list's name is an index into it: the
//! file's entry at that index is changed, the next index (the list's length) adds an entry,
//! and one beyond that is refused. A level names an existing key whatever its case and with
//! `_` standing for `-` or `.` (`PUSHPROBE_PRICING__GPT_4_1__INPUT_PER_MTOK` changes
//! `[pricing."gpt-4.1"]`), since variable names cannot spell them; a key the file does not
//! have is added in lower case, except model names under `[pricing]` and header names, which
//! a variable cannot spell: those are added by setting their whole table. Values are read
//! as figment reads them (`5` a number, `true` a boolean, `[a, b]` a list, `{ k = v }` a
//! table, anything else a string); a table set on a table is merged into it.
//!
//! [`apply_overrides`] is pure; only [`read_env`] looks at the process.

use std::cmp::Ordering;

use figment::value::{Dict, Tag, Value};

use super::keypath::{KeyPath, Segment};
use super::ENV_PREFIX;

/// Variables with the prefix that configure the command line, not the file.
const NOT_KEYS: &[&str] = &["config", "log_format", "log_level"];

/// An override that was merged, and where: errors at that path name the variable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Applied {
    /// The variable's name.
    pub(crate) var: String,
    /// The key it set.
    pub(crate) path: KeyPath,
}

/// An override that names no usable key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OverrideError {
    /// The variable's name.
    pub(crate) var: String,
    /// As much of the path as could be followed.
    pub(crate) path: KeyPath,
    /// What is wrong and what to do instead.
    pub(crate) message: String,
}

/// What merging the overrides did.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// The overrides merged.
    pub(crate) applied: Vec<Applied>,
    /// The overrides refused.
    pub(crate) errors: Vec<OverrideError>,
}

/// The `PUSHPROBE_*` variables of this process that override keys, as (name, value).
pub(crate) fn read_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .filter(|(k, _)| key_part(k).is_some())
        .collect()
}

/// The key path part of a variable's name: after the prefix (in any case), and not one of
/// the command line's own variables.
fn key_part(var: &str) -> Option<&str> {
    let head = var.get(..ENV_PREFIX.len())?;
    let rest = &var[ENV_PREFIX.len()..];
    let is_key = head.eq_ignore_ascii_case(ENV_PREFIX)
        && !rest.is_empty()
        && !NOT_KEYS.iter().any(|k| k.eq_ignore_ascii_case(rest));
    is_key.then_some(rest)
}

/// Merges `vars` (name, value) into `root`, the file's top-level table.
pub(crate) fn apply_overrides(root: &mut Dict, vars: &[(String, String)]) -> Overlay {
    let mut overrides: Vec<(&str, Vec<&str>, &str)> = vars
        .iter()
        .filter_map(|(var, value)| {
            let segments: Vec<&str> = key_part(var)?.split("__").collect();
            // `PUSHPROBE_A____B` has an empty level: it names no key, and is ignored as
            // figment ignores it (the deployment notes rely on that).
            if segments.iter().any(|s| s.is_empty()) {
                return None;
            }
            Some((var.as_str(), segments, value.as_str()))
        })
        .collect();
    // Indexes in ascending order, so that `__0__` adds an entry before `__1__` adds the next.
    overrides.sort_by(|a, b| compare_segments(&a.1, &b.1).then(a.0.cmp(b.0)));
    let mut overlay = Overlay::default();
    let mut tree = Value::Dict(Tag::Default, std::mem::take(root));
    for (var, segments, text) in overrides {
        let value = text.parse::<Value>().unwrap_or_else(|never| match never {});
        // On a copy, so that a refused variable leaves no half-made entry behind.
        let mut candidate = tree.clone();
        match set(&mut candidate, var, &segments, value) {
            Ok(path) => {
                tree = candidate;
                overlay.applied.push(Applied {
                    var: var.to_string(),
                    path,
                });
            }
            Err((path, message)) => overlay.errors.push(OverrideError {
                var: var.to_string(),
                path,
                message,
            }),
        }
    }
    if let Value::Dict(_, dict) = tree {
        *root = dict;
    }
    overlay
}

/// Orders key paths level by level, numbers by value and before names.
fn compare_segments(a: &[&str], b: &[&str]) -> Ordering {
    let rank = |s: &str| match s.parse::<usize>() {
        Ok(n) => (0, n, String::new()),
        Err(_) => (1, 0, s.to_ascii_lowercase()),
    };
    a.iter().map(|s| rank(s)).cmp(b.iter().map(|s| rank(s)))
}

/// Sets the value at `segments` under `tree`; returns the path set, or how far it got and why
/// it stopped.
fn set(
    tree: &mut Value,
    var: &str,
    segments: &[&str],
    value: Value,
) -> Result<KeyPath, (KeyPath, String)> {
    let mut path = KeyPath::default();
    let mut node = tree;
    let mut value = Some(value);
    for (n, segment) in segments.iter().enumerate() {
        let last = n + 1 == segments.len();
        let next_is_index = segments
            .get(n + 1)
            .is_some_and(|s| s.parse::<usize>().is_ok());
        let empty = || {
            if next_is_index {
                Value::Array(Tag::Default, Vec::new())
            } else {
                Value::Dict(Tag::Default, Dict::new())
            }
        };
        node = match node {
            Value::Dict(_, dict) => {
                let key = match existing_key(dict, segment) {
                    Ok(Some(key)) => key,
                    Ok(None) if names_are_unspellable(&path) => {
                        return Err((path.clone(), no_such_name(&path, var, n, segment)));
                    }
                    Ok(None) => segment.to_ascii_lowercase(),
                    Err(message) => return Err((path, message)),
                };
                path = path.key(&key);
                let slot = dict.entry(key).or_insert_with(empty);
                if last {
                    merge(slot, value.take());
                    return Ok(path);
                }
                slot
            }
            Value::Array(_, items) => {
                let Ok(i) = segment.parse::<usize>() else {
                    return Err((
                        path.clone(),
                        format!(
                            "{path} is a list: give the index of an entry after it, e.g. \
                             {}__0__{}",
                            var_for(var, n),
                            segments[n..].join("__")
                        ),
                    ));
                };
                if i > items.len() {
                    return Err((path.clone(), past_the_end(&path, i, items.len())));
                }
                if i == items.len() {
                    items.push(empty());
                }
                path = path.index(i);
                if last {
                    merge(&mut items[i], value.take());
                    return Ok(path);
                }
                &mut items[i]
            }
            _ => {
                return Err((
                    path.clone(),
                    format!(
                        "{path} is a single value, not a table or list; set {} instead",
                        var_for(var, n)
                    ),
                ));
            }
        };
    }
    Ok(path)
}

/// The key of `dict` that `segment` names: the same, else the same in another case, else the
/// same with `-` or `.` written `_`; `Err` when it names more than one.
fn existing_key(dict: &Dict, segment: &str) -> Result<Option<String>, String> {
    if dict.contains_key(segment) {
        return Ok(Some(segment.to_string()));
    }
    let fold = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                '-' | '.' => '_',
                c => c.to_ascii_lowercase(),
            })
            .collect()
    };
    let tests: [&dyn Fn(&str) -> bool; 2] =
        [&|k: &str| k.eq_ignore_ascii_case(segment), &|k: &str| {
            fold(k) == fold(segment)
        }];
    for matches in tests {
        let found: Vec<&String> = dict.keys().filter(|k| matches(k)).collect();
        match found.as_slice() {
            [] => continue,
            [one] => return Ok(Some((*one).clone())),
            many => {
                let names: Vec<String> = many.iter().map(|k| format!("{k:?}")).collect();
                return Err(format!(
                    "{segment:?} could name any of {}; set the table they are in instead",
                    names.join(", ")
                ));
            }
        }
    }
    Ok(None)
}

/// Tables whose keys a variable name cannot spell: model names (`gpt-4.1`) and HTTP header
/// names (`X-Scope-OrgID`), which a lower-cased `GPT_4_1` would get wrong without a word.
fn names_are_unspellable(path: &KeyPath) -> bool {
    match path.0.as_slice() {
        [Segment::Key(k)] => k == "pricing",
        [.., Segment::Key(k)] => k == "headers",
        _ => false,
    }
}

/// The message for a model or header name the file does not have.
fn no_such_name(path: &KeyPath, var: &str, n: usize, segment: &str) -> String {
    let (what, example) = if path.to_string() == "pricing" {
        (
            "[pricing] entry",
            "'{ \"gpt-oss-20b\" = { input_per_mtok = 0.1, output_per_mtok = 0.5 } }'",
        )
    } else {
        ("header", "'{ \"X-Scope-OrgID\" = \"team-b\" }'")
    };
    format!(
        "no {what} in the file matches {segment:?}, and a variable name cannot spell a new \
         one (it has no `-` or `.`, and no case); add it to the file, or set the whole table, \
         e.g. {}={example}",
        var_for(var, n)
    )
}

/// The message for an index past a list's end.
fn past_the_end(path: &KeyPath, i: usize, len: usize) -> String {
    let entries = match len {
        0 => "no entries".to_string(),
        1 => "1 entry (index 0)".to_string(),
        n => format!("{n} entries (indexes 0 to {})", n - 1),
    };
    format!(
        "index {i} is past the end of {path}, which has {entries}; index {len} adds an entry, \
         or add the table to the file"
    )
}

/// The variable naming the first `n` levels of `var`'s path: what to set instead.
fn var_for(var: &str, n: usize) -> String {
    let prefix_len = ENV_PREFIX.len();
    let levels: Vec<&str> = var[prefix_len..].split("__").take(n).collect();
    format!("{}{}", &var[..prefix_len], levels.join("__"))
}

/// Puts `value` in `slot`: a table merges into a table, key by key; anything else replaces.
fn merge(slot: &mut Value, value: Option<Value>) {
    let Some(value) = value else { return };
    match (slot, value) {
        (Value::Dict(_, into), Value::Dict(_, from)) => {
            for (k, v) in from {
                match into.get_mut(&k) {
                    Some(existing) => merge(existing, Some(v)),
                    None => {
                        into.insert(k, v);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(toml: &str) -> Dict {
        toml::from_str(toml).unwrap()
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const FILE: &str = r#"
        [agent]
        drain_timeout = "15s"
        external_labels = { cluster = "edge-1" }
        [[remote_write]]
        url = "http://a/write"
        headers = { "X-Scope-OrgID" = "team-a" }
        [[probe]]
        name = "api"
        interval = "30s"
        [pricing."gpt-oss-20b"]
        input_per_mtok = 0.1
        output_per_mtok = 0.5
        [pricing."gpt-4.1"]
        input_per_mtok = 2.0
        output_per_mtok = 8.0
    "#;

    /// The value at a path with `/` between levels (`probe/0/interval`), for the expectations.
    fn at<'v>(root: &'v Dict, path: &str) -> Option<&'v Value> {
        let mut parts = path.split('/');
        let mut node = root.get(parts.next()?)?;
        for part in parts {
            node = match node {
                Value::Dict(_, d) => d.get(part)?,
                Value::Array(_, items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    #[test]
    fn overrides_reach_every_key() {
        // (variables, [(where, the value found there)]); "-" means absent.
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]);
        let cases: &[Case<'_>] = &[
            (
                &[("PUSHPROBE_PROBE__0__INTERVAL", "5s")],
                &[("probe/0/interval", "5s"), ("probe/0/name", "api")],
            ),
            (
                &[("PUSHPROBE_REMOTE_WRITE__0__URL", "http://b/write")],
                &[
                    ("remote_write/0/url", "http://b/write"),
                    ("remote_write/0/headers/X-Scope-OrgID", "team-a"),
                ],
            ),
            // The next index adds an entry; its variables may come in any order.
            (
                &[
                    ("PUSHPROBE_REMOTE_WRITE__1__URL", "http://c/write"),
                    ("PUSHPROBE_REMOTE_WRITE__1__NAME", "c"),
                ],
                &[
                    ("remote_write/0/url", "http://a/write"),
                    ("remote_write/1/url", "http://c/write"),
                    ("remote_write/1/name", "c"),
                ],
            ),
            // Model names in any case, with `_` for `-` and `.`.
            (
                &[("PUSHPROBE_PRICING__GPT_OSS_20B__INPUT_PER_MTOK", "0.2")],
                &[
                    ("pricing/gpt-oss-20b/input_per_mtok", "0.2"),
                    ("pricing/gpt_oss_20b", "-"),
                ],
            ),
            (
                &[("PUSHPROBE_PRICING__GPT_4_1__OUTPUT_PER_MTOK", "9")],
                &[("pricing/gpt-4.1/output_per_mtok", "9")],
            ),
            // Header names in any case, with `_` for `-`.
            (
                &[(
                    "PUSHPROBE_REMOTE_WRITE__0__HEADERS__X_SCOPE_ORGID",
                    "team-b",
                )],
                &[("remote_write/0/headers/X-Scope-OrgID", "team-b")],
            ),
            // A new model is added by setting its table; a table merges into a table.
            (
                &[(
                    "PUSHPROBE_PRICING",
                    r#"{ "llama-3.1-8b" = { input_per_mtok = 0.05, output_per_mtok = 0.08 } }"#,
                )],
                &[
                    ("pricing/llama-3.1-8b/output_per_mtok", "0.08"),
                    ("pricing/gpt-oss-20b/input_per_mtok", "0.1"),
                ],
            ),
            // A new label is added in lower case.
            (
                &[("PUSHPROBE_AGENT__EXTERNAL_LABELS__REPLICA", "pod-1")],
                &[
                    ("agent/external_labels/replica", "pod-1"),
                    ("agent/external_labels/cluster", "edge-1"),
                ],
            ),
            (
                &[("pushprobe_agent__drain_timeout", "2s")],
                &[("agent/drain_timeout", "2s")],
            ),
            // A list set whole replaces the file's.
            (
                &[("PUSHPROBE_PROBE__0__BUCKETS", "[0.1, 1]")],
                &[("probe/0/buckets", "[0.1, 1]")],
            ),
            // A list the file does not have is made by its first index.
            (
                &[("PUSHPROBE_SCRAPE__0__TARGETS__0", "h:1")],
                &[("scrape/0/targets", "[\"h:1\"]")],
            ),
            // The command line's variables, empty levels and other prefixes are no keys.
            (
                &[
                    ("PUSHPROBE_CONFIG", "x.toml"),
                    ("PUSHPROBE_LOG_LEVEL", "debug"),
                    ("PUSHPROBE_AGENT__EXTERNAL_LABELS____REPLICA__", "x"),
                    ("OTHER_AGENT__DRAIN_TIMEOUT", "1s"),
                ],
                &[
                    ("config", "-"),
                    ("log_level", "-"),
                    ("agent/drain_timeout", "15s"),
                ],
            ),
        ];
        for (env, expected) in cases {
            let mut got = dict(FILE);
            let overlay = apply_overrides(&mut got, &vars(env));
            assert_eq!(overlay.errors, [], "{env:?}");
            for (path, want) in *expected {
                let found = at(&got, path);
                match *want {
                    "-" => assert_eq!(found, None, "{env:?}: {path}"),
                    want => assert_eq!(found, Some(&want.parse().unwrap()), "{env:?}: {path}"),
                }
            }
        }
        let mut untouched = dict(FILE);
        let overlay = apply_overrides(&mut untouched, &vars(cases[cases.len() - 1].0));
        assert!(overlay.applied.is_empty());
        assert_eq!(untouched, dict(FILE));
    }

    #[test]
    fn overrides_that_name_no_key_say_what_to_do() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "PUSHPROBE_PROBE__2__INTERVAL",
                "probe",
                "index 2 is past the end of probe, which has 1 entry (index 0); index 1 adds \
                 an entry",
            ),
            (
                "PUSHPROBE_PROBE__INTERVAL",
                "probe",
                "probe is a list: give the index of an entry after it, e.g. \
                 PUSHPROBE_PROBE__0__INTERVAL",
            ),
            (
                "PUSHPROBE_PRICING__GPT_OSS_21B__INPUT_PER_MTOK",
                "pricing",
                "no [pricing] entry in the file matches \"GPT_OSS_21B\"",
            ),
            (
                "PUSHPROBE_PRICING__GPT_OSS_21B__INPUT_PER_MTOK",
                "pricing",
                "PUSHPROBE_PRICING='{ \"gpt-oss-20b\"",
            ),
            (
                "PUSHPROBE_REMOTE_WRITE__0__HEADERS__X_TEAM",
                "remote_write[0].headers",
                "no header in the file matches \"X_TEAM\"",
            ),
            (
                "PUSHPROBE_AGENT__DRAIN_TIMEOUT__SECONDS",
                "agent.drain_timeout",
                "agent.drain_timeout is a single value, not a table or list; set \
                 PUSHPROBE_AGENT__DRAIN_TIMEOUT instead",
            ),
        ];
        for (var, path, want) in cases {
            let mut file = dict(FILE);
            let overlay = apply_overrides(&mut file, &vars(&[(var, "1")]));
            let [e] = overlay.errors.as_slice() else {
                panic!("{var}: {:?}", overlay.errors);
            };
            assert_eq!(e.var, *var);
            assert_eq!(e.path.to_string(), *path, "{var}");
            assert!(e.message.contains(want), "{var}: {}", e.message);
            assert_eq!(file, dict(FILE), "{var} changed the file");
        }
    }

    #[test]
    fn applied_overrides_remember_their_variable() {
        let mut file = dict(FILE);
        let overlay = apply_overrides(
            &mut file,
            &vars(&[("PUSHPROBE_PRICING__GPT_4_1__INPUT_PER_MTOK", "3")]),
        );
        assert_eq!(
            overlay.applied[0].path.to_string(),
            "pricing.\"gpt-4.1\".input_per_mtok"
        );
        assert_eq!(
            overlay.applied[0].var,
            "PUSHPROBE_PRICING__GPT_4_1__INPUT_PER_MTOK"
        );
    }
}
