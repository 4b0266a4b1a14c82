//! Reading the configuration: the figment stack (the file, then `PUSHPROBE_*` environment
//! variables) extracted into the serde schema, with figment's errors turned into messages
//! that name the key and the source. Nothing here validates values.

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use super::probe::PROBE_KINDS;
use super::{ConfigError, ConfigFile};

/// Environment variable prefix for configuration overrides.
pub const ENV_PREFIX: &str = "PUSHPROBE_";

/// Loads the configuration from `path` (if it exists or was given explicitly) and the
/// environment, without validating it.
pub fn load(path: &Path, explicit: bool) -> Result<ConfigFile, ConfigError> {
    if explicit && !path.exists() {
        return Err(ConfigError::Load(format!(
            "config file {} does not exist (give --config or set PUSHPROBE_CONFIG)",
            path.display()
        )));
    }
    figment_for(path)
        .extract()
        .map_err(|e| ConfigError::Load(describe_figment_error(e)))
}

/// The figment stack: file, then `PUSHPROBE_*` environment (`__` separates nested keys).
pub fn figment_for(path: &Path) -> Figment {
    Figment::new().merge(Toml::file(path)).merge(
        Env::prefixed(ENV_PREFIX)
            .ignore(&["config", "log_format", "log_level"])
            .split("__"),
    )
}

/// Joins figment's errors into one line, each with its key path and source.
pub(super) fn describe_figment_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map(|s| format!(" (in {s})"))
                .unwrap_or_default();
            if let Some(message) = unknown_probe_kind(&e) {
                return format!("{message}{source}");
            }
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.path.join("."))
            };
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// An unknown `kind` of a `[[probe]]`, worded for a person: figment reports it at the probe's
/// path (`probe.0`) in serde's variant notation, which names neither the key nor the kinds
/// plainly.
fn unknown_probe_kind(e: &figment::Error) -> Option<String> {
    let figment::error::Kind::UnknownVariant(found, expected) = &e.kind else {
        return None;
    };
    if *expected != PROBE_KINDS {
        return None;
    }
    let key = match e.path.as_slice() {
        [table, index] if index.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{table}[{index}].kind")
        }
        path => format!("{}.kind", path.join(".")),
    };
    Some(format!(
        "{key}: unknown probe kind {found:?}; expected one of: {}",
        PROBE_KINDS.join(", ")
    ))
}
