//! The docs keep up with the configuration: every key a probe kind accepts, as `config check`
//! lists it when it refuses an unknown one, is named in the blackbox migration page or the
//! configuration reference; every probe kind has its section in the configuration reference,
//! the migration page and the metrics reference; and every example configuration is linked
//! from the docs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root, where the docs and examples live.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text of a file under the repository root.
fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The stderr of `pushprobe config check` on `config`, which must be refused.
fn refused(config: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pushprobe.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_pushprobe"))
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .current_dir(dir.path())
        .env_remove("PUSHPROBE_CONFIG")
        .output()
        .expect("run pushprobe");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(78),
        "config check must refuse:\n{config}\n--- stderr ---\n{stderr}"
    );
    stderr
}

/// The names after "expected one of: " in the error about `key_path`.
fn expected_after(stderr: &str, key_path: &str) -> Vec<String> {
    let line = stderr
        .lines()
        .find(|l| l.contains(key_path) && l.contains("expected one of: "))
        .unwrap_or_else(|| panic!("no `expected one of` error at {key_path} in:\n{stderr}"));
    let list = line
        .split("expected one of: ")
        .nth(1)
        .unwrap_or_default()
        .split(" (in ")
        .next()
        .unwrap_or_default();
    let names: Vec<String> = list
        .split(", ")
        .map(|k| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty())
        .collect();
    assert!(!names.is_empty(), "no names listed in: {line}");
    names
}

/// The keys `config check` accepts in the table `table` of a probe, learnt by adding a key
/// no table has.
fn known_keys(probe_toml: &str, key_path: &str) -> Vec<String> {
    let stderr = refused(probe_toml);
    expected_after(&stderr, key_path)
}

/// Each probe kind with a minimal valid table, and the place a bogus key goes.
const TABLES: &[(&str, &str, &str)] = &[
    (
        "http",
        "[[probe]]\nname = \"p\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\nzz_not_a_key = 1\n",
        "probe[0].zz_not_a_key",
    ),
    (
        "tcp",
        "[[probe]]\nname = \"p\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:9\"\nzz_not_a_key = 1\n",
        "probe[0].zz_not_a_key",
    ),
    (
        "tcp query_response",
        "[[probe]]\nname = \"p\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:9\"\n\
         [[probe.query_response]]\nzz_not_a_key = 1\n",
        "probe[0].query_response[0].zz_not_a_key",
    ),
    (
        "tcp tls_config",
        "[[probe]]\nname = \"p\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:9\"\ntls = true\n\
         tls_config = { zz_not_a_key = 1 }\n",
        "probe[0].tls_config.zz_not_a_key",
    ),
    (
        "dns",
        "[[probe]]\nname = \"p\"\nkind = \"dns\"\nserver = \"127.0.0.1\"\nquery_name = \"a.example\"\n\
         zz_not_a_key = 1\n",
        "probe[0].zz_not_a_key",
    ),
    (
        "dns validate_answer_rrs",
        "[[probe]]\nname = \"p\"\nkind = \"dns\"\nserver = \"127.0.0.1\"\nquery_name = \"a.example\"\n\
         [probe.validate_answer_rrs]\nzz_not_a_key = 1\n",
        "probe[0].validate_answer_rrs.zz_not_a_key",
    ),
    (
        "icmp",
        "[[probe]]\nname = \"p\"\nkind = \"icmp\"\ntarget = \"127.0.0.1\"\nzz_not_a_key = 1\n",
        "probe[0].zz_not_a_key",
    ),
    (
        "grpc",
        "[[probe]]\nname = \"p\"\nkind = \"grpc\"\ntarget = \"127.0.0.1:9\"\nzz_not_a_key = 1\n",
        "probe[0].zz_not_a_key",
    ),
    (
        "grpc tls_config",
        "[[probe]]\nname = \"p\"\nkind = \"grpc\"\ntarget = \"127.0.0.1:9\"\ntls = true\n\
         tls_config = { zz_not_a_key = 1 }\n",
        "probe[0].tls_config.zz_not_a_key",
    ),
];

#[test]
fn every_probe_key_is_documented() {
    let docs = format!(
        "{}\n{}",
        read("docs/blackbox-migration.md"),
        read("docs/configuration.md")
    );
    let mut missing = Vec::new();
    for (what, toml, key_path) in TABLES {
        let keys = known_keys(toml, key_path);
        // A handful of keys is a sign the error did not come from the table meant.
        assert!(keys.len() >= 2, "{what}: too few keys learnt: {keys:?}");
        for key in keys {
            if !docs.contains(&format!("`{key}`")) {
                missing.push(format!("{what}: `{key}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys accepted but named in neither docs/blackbox-migration.md nor \
         docs/configuration.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_probe_kind_has_its_sections() {
    let stderr = refused("[[probe]]\nname = \"p\"\nkind = \"zz-no-such-kind\"\n");
    let kinds = expected_after(&stderr, "probe[0].kind");
    assert!(kinds.iter().any(|k| k == "tcp"), "kinds learnt: {kinds:?}");
    let configuration = read("docs/configuration.md");
    let migration = read("docs/blackbox-migration.md");
    let metrics = read("docs/metrics.md");
    let contents = |page: &str| -> String {
        page.lines()
            .skip_while(|l| !l.starts_with("Sections:"))
            .take_while(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    for kind in &kinds {
        let heading = format!("## `[[probe]]` with `kind = \"{kind}\"`");
        assert!(
            configuration.lines().any(|l| l.starts_with(&heading)),
            "docs/configuration.md has no section `{heading}`"
        );
        assert!(
            contents(&configuration).contains(&format!("(#probe-with-kind--{kind}")),
            "docs/configuration.md's Sections line does not link the {kind} section"
        );
        if *kind != "openai" {
            assert!(
                migration.contains(&format!("kind = \"{kind}\"")),
                "docs/blackbox-migration.md has no `kind = \"{kind}\"` translation"
            );
        }
        let metrics_anchor = if *kind == "http" {
            "(#http-probe".to_string()
        } else {
            format!("-probe-kind--{kind}")
        };
        assert!(
            contents(&metrics).contains(&metrics_anchor),
            "docs/metrics.md's Sections line does not link the {kind} probe's series"
        );
    }
}

#[test]
fn every_example_configuration_is_linked_from_the_docs() {
    let mut docs = read("README.md");
    for entry in std::fs::read_dir(root().join("docs")).expect("read docs/") {
        let path = entry.expect("docs entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push_str(&std::fs::read_to_string(&path).expect("read a docs page"));
        }
    }
    let mut unlinked = Vec::new();
    for entry in std::fs::read_dir(root().join("examples")).expect("read examples/") {
        let path = entry.expect("examples entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let name = example_name(&path);
        if !docs.contains(&format!("examples/{name}")) {
            unlinked.push(name);
        }
    }
    assert!(
        unlinked.is_empty(),
        "example configurations no docs page (or README.md) links to: {unlinked:?}"
    );
}

/// The file name of an example, as the docs write it after `examples/`.
fn example_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
