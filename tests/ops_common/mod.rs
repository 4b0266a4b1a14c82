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

/// Finds an external tool on PATH (or in /usr/bin). Without it the test is skipped on a
/// developer machine but fails under CI (`CI` set), where a silent skip would hide that the
/// check never ran.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is required under CI (apt-get install the package that ships it)");
        }
        eprintln!("SKIPPED: {name} not found; install it to run this test");
    }
    found
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
