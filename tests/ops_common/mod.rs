//! Helpers shared by the operations-kit tests (alerts, dashboard, deployment files).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root (where Cargo.toml is).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the repository, by path relative to its root.
pub fn repo_file(rel: &str) -> PathBuf {
    root().join(rel)
}

/// Reads a repository file, naming it on failure.
pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Parses YAML into JSON values (one per document), naming the file on failure.
pub fn yaml_documents(rel: &str, text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            serde_json::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}
