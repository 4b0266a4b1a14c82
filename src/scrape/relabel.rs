//! Metric relabeling (`metric_relabel_configs`) with Prometheus' semantics: the same
//! defaults, the same validation, regexes anchored as `^(?s:REGEX)$`, Go's `$1`/`${name}`
//! expansion, and `hashmod` picking the same shard (MD5, last 8 bytes, big-endian).

use std::fmt;
use std::sync::OnceLock;

use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};

use crate::series::{is_valid_label_name, Label, LabelRef, Labels};

fn default_separator() -> String {
    ";".to_string()
}
fn default_regex() -> String {
    "(.*)".to_string()
}
fn default_replacement() -> String {
    "$1".to_string()
}

/// What a relabel rule does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Sets `target_label` to the expanded `replacement` when `regex` matches.
    #[default]
    Replace,
    /// Keeps the series only if `regex` matches the joined source values.
    Keep,
    /// Drops the series if `regex` matches the joined source values.
    Drop,
    /// Keeps the series only if the joined source values equal `target_label`'s value.
    KeepEqual,
    /// Drops the series if the joined source values equal `target_label`'s value.
    DropEqual,
    /// Sets `target_label` to the MD5-based hash of the source values modulo `modulus`.
    HashMod,
    /// Copies labels whose names match `regex` to names made from `replacement`.
    LabelMap,
    /// Removes labels whose names match `regex`.
    LabelDrop,
    /// Removes labels whose names do not match `regex`.
    LabelKeep,
    /// Sets `target_label` to the lowercased source values.
    Lowercase,
    /// Sets `target_label` to the uppercased source values.
    Uppercase,
}

impl Action {
    /// The action's name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = String;

    /// Reads an action name in any case, as Prometheus does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return Err(format!("unknown relabel action {s:?}")),
        })
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One relabel rule as configured, with Prometheus' defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` to form the input.
    #[serde(default)]
    pub source_labels: Vec<String>,
    /// Joins the source values; default `;`.
    #[serde(default = "default_separator")]
    pub separator: String,
    /// The label to write (`replace`, `hashmod`, `lowercase`, `uppercase`) or compare
    /// (`keepequal`, `dropequal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_label: Option<String>,
    /// The regex, anchored at both ends when compiled; default `(.*)`.
    #[serde(default = "default_regex")]
    pub regex: String,
    /// Modulus for `hashmod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modulus: Option<u64>,
    /// Replacement with `$1`, `${1}`, `$name`; default `$1`.
    #[serde(default = "default_replacement")]
    pub replacement: String,
    /// The action; default `replace`.
    #[serde(default)]
    pub action: Action,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        RelabelConfig {
            source_labels: Vec::new(),
            separator: default_separator(),
            target_label: None,
            regex: default_regex(),
            modulus: None,
            replacement: default_replacement(),
            action: Action::Replace,
        }
    }
}

/// A relabel rule that failed validation, naming the rule's index and field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("metric_relabel_configs[{index}].{field}: {message}")]
pub struct RelabelError {
    /// Position of the rule in its list.
    pub index: usize,
    /// The offending field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// A validated, compiled relabel rule.
#[derive(Clone, Debug)]
pub struct RelabelRule {
    source_labels: Vec<String>,
    separator: String,
    target_label: String,
    regex: Regex,
    modulus: u64,
    replacement: String,
    action: Action,
}

/// Target labels with `$` references must still look like label names (Prometheus' check).
fn target_template() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").expect("constant regex compiles")
    })
}

impl RelabelRule {
    /// Validates rule number `index` as Prometheus does and compiles its regex.
    pub fn new(index: usize, c: &RelabelConfig) -> Result<RelabelRule, RelabelError> {
        let err = |field: &'static str, message: String| RelabelError {
            index,
            field,
            message,
        };
        let action = c.action;
        for name in &c.source_labels {
            if !is_valid_label_name(name) {
                return Err(err(
                    "source_labels",
                    format!("{name:?} is not a valid label name"),
                ));
            }
        }
        let target = c.target_label.clone().unwrap_or_default();
        let modulus = c.modulus.unwrap_or(0);
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if action == Action::HashMod && modulus == 0 {
            return Err(err(
                "modulus",
                "hashmod requires a non-zero modulus".to_string(),
            ));
        }
        if needs_target && target.is_empty() {
            return Err(err(
                "target_label",
                format!("the {action} action requires a target_label"),
            ));
        }
        let templated = target.contains('$');
        let target_ok = match action {
            Action::Replace if templated => target_template().is_match(&target),
            Action::Replace
            | Action::HashMod
            | Action::Lowercase
            | Action::Uppercase
            | Action::KeepEqual
            | Action::DropEqual => is_valid_label_name(&target),
            _ => true,
        };
        if !target_ok {
            return Err(err(
                "target_label",
                format!("{target:?} is not a valid target_label for the {action} action"),
            ));
        }
        let default_replacement = c.replacement == "$1";
        if matches!(
            action,
            Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual
        ) && !default_replacement
        {
            return Err(err(
                "replacement",
                format!("replacement cannot be set for the {action} action"),
            ));
        }
        if action == Action::LabelMap && !target_template().is_match(&c.replacement) {
            return Err(err(
                "replacement",
                format!(
                    "{:?} is not a valid replacement for the labelmap action",
                    c.replacement
                ),
            ));
        }
        if matches!(action, Action::KeepEqual | Action::DropEqual)
            && (c.regex != "(.*)" || modulus != 0 || c.separator != ";")
        {
            return Err(err(
                "action",
                format!("the {action} action takes only source_labels and target_label"),
            ));
        }
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && (!c.source_labels.is_empty()
                || !target.is_empty()
                || modulus != 0
                || c.separator != ";"
                || !default_replacement)
        {
            return Err(err(
                "action",
                format!("the {action} action takes only regex"),
            ));
        }
        let regex = Regex::new(&format!("^(?s:{})$", c.regex))
            .map_err(|e| err("regex", format!("invalid regex {:?}: {e}", c.regex)))?;
        Ok(RelabelRule {
            source_labels: c.source_labels.clone(),
            separator: c.separator.clone(),
            target_label: target,
            regex,
            modulus,
            replacement: c.replacement.clone(),
            action,
        })
    }

    /// The rule's action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Applies the rule to a sorted label list; `false` means the series is dropped.
    fn apply(&self, lb: &mut Vec<Label>) -> bool {
        let mut val = String::new();
        for (i, name) in self.source_labels.iter().enumerate() {
            if i > 0 {
                val.push_str(&self.separator);
            }
            val.push_str(get(lb, name));
        }
        match self.action {
            Action::Drop => return !self.regex.is_match(&val),
            Action::Keep => return self.regex.is_match(&val),
            Action::DropEqual => return get(lb, &self.target_label) != val,
            Action::KeepEqual => return get(lb, &self.target_label) == val,
            Action::Replace => {
                if let Some(caps) = self.regex.captures(&val) {
                    let target = expand(&self.target_label, &caps);
                    // An expansion that is not a label name is skipped, as in Prometheus.
                    if is_valid_label_name(&target) {
                        let value = expand(&self.replacement, &caps);
                        set(lb, &target, value);
                    }
                }
            }
            Action::Lowercase => set(lb, &self.target_label, val.to_lowercase()),
            Action::Uppercase => set(lb, &self.target_label, val.to_uppercase()),
            Action::HashMod => {
                use md5::Digest as _;
                let digest = md5::Md5::digest(val.as_bytes());
                let mut last = [0u8; 8];
                last.copy_from_slice(digest.get(8..16).unwrap_or(&[0; 8]));
                // Prometheus takes the last 8 bytes, for the shards of its older versions.
                let shard = u64::from_be_bytes(last) % self.modulus.max(1);
                set(lb, &self.target_label, shard.to_string());
            }
            Action::LabelMap => {
                let snapshot = lb.clone();
                for l in snapshot {
                    if let Some(caps) = self.regex.captures(&l.name) {
                        let name = expand(&self.replacement, &caps);
                        if is_valid_label_name(&name) {
                            set(lb, &name, l.value);
                        }
                    }
                }
            }
            Action::LabelDrop => lb.retain(|l| !self.regex.is_match(&l.name)),
            Action::LabelKeep => lb.retain(|l| self.regex.is_match(&l.name)),
        }
        true
    }
}

/// Validates and compiles a list of rules, naming the first bad rule's index and field.
pub fn compile(configs: &[RelabelConfig]) -> Result<Vec<RelabelRule>, RelabelError> {
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| RelabelRule::new(i, c))
        .collect()
}

/// Applies `rules` in order; `None` means a rule dropped the series.
///
/// A result whose `__name__` is not a valid metric name is also `None`: Prometheus would fail
/// the whole scrape on it, and the label model cannot hold it.
pub fn relabel(labels: &Labels, rules: &[RelabelRule]) -> Option<Labels> {
    if rules.is_empty() {
        return Some(labels.clone());
    }
    let mut lb: Vec<Label> = labels.iter().map(LabelRef::to_label).collect();
    for rule in rules {
        if !rule.apply(&mut lb) {
            return None;
        }
    }
    Labels::from_pairs(lb.into_iter().map(|l| (l.name, l.value))).ok()
}

fn get<'a>(lb: &'a [Label], name: &str) -> &'a str {
    lb.binary_search_by(|l| l.name.as_str().cmp(name))
        .ok()
        .and_then(|i| lb.get(i))
        .map_or("", |l| l.value.as_str())
}

/// Sets a label, keeping the list sorted; an empty value removes it.
fn set(lb: &mut Vec<Label>, name: &str, value: String) {
    match lb.binary_search_by(|l| l.name.as_str().cmp(name)) {
        Ok(i) if value.is_empty() => {
            lb.remove(i);
        }
        Ok(i) => {
            if let Some(l) = lb.get_mut(i) {
                l.value = value;
            }
        }
        Err(_) if value.is_empty() => {}
        Err(i) => lb.insert(
            i,
            Label {
                name: name.to_string(),
                value,
            },
        ),
    }
}

/// Expands `$1`, `${1}`, `$name`, `${name}` and `$$` as Go's `Regexp.Expand` does: a name
/// is the longest run of letters, digits and `_` (so `$1x` means group `1x`, usually
/// empty), numbers with a leading zero are names, unknown groups expand to nothing, and a
/// malformed `$` stays as it is.
fn expand(template: &str, caps: &Captures<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(rest.get(..i).unwrap_or(""));
        rest = rest.get(i + 1..).unwrap_or("");
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let Some((name, after)) = group_ref(rest) else {
            out.push('$');
            continue;
        };
        rest = after;
        let is_number = name.bytes().all(|b| b.is_ascii_digit())
            && !(name.starts_with('0') && name.len() > 1)
            && name.len() <= 8;
        let m = if is_number {
            name.parse::<usize>().ok().and_then(|n| caps.get(n))
        } else {
            caps.name(name)
        };
        if let Some(m) = m {
            out.push_str(m.as_str());
        }
    }
    out.push_str(rest);
    out
}

/// Splits a group reference (`name` or `{name}`) off the front of `s`.
fn group_ref(s: &str) -> Option<(&str, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = body.get(..end)?;
    let after = body.get(end..)?;
    if braced {
        Some((name, after.strip_prefix('}')?))
    } else {
        Some((name, after))
    }
}

#[cfg(test)]
mod tests;
