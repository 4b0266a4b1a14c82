//! Target files: both formats, errors with file and position, globs, last good kept.

use super::*;

#[test]
fn json_and_yaml_files_become_groups_with_their_path() {
    let json = br#"[{"targets": ["a:1", "b:1"], "labels": {"env": "prod"}}, {"targets": ["c:1"]}]"#;
    let g = parse_file(Path::new("/etc/sd/t.json"), json).unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].targets[1]["__address__"], "b:1");
    assert_eq!(g[0].labels["env"], "prod");
    assert_eq!(g[1].labels[FILEPATH_LABEL], "/etc/sd/t.json");
    let yaml = b"- targets: [a:1, 'b:1']\n  labels:\n    env: prod\n- targets:\n  - c:1\n";
    let y = parse_file(Path::new("/etc/sd/t.yml"), yaml).unwrap();
    assert_eq!(y[0].targets, g[0].targets);
    assert!(parse_file(Path::new("e.yaml"), b"\n").unwrap().is_empty());
}

#[test]
fn errors_name_the_file_line_and_column() {
    let e = parse_file(Path::new("sd/t.json"), b"[\n  {\"targets\": [\"a:1\"\n").unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("sd/t.json:3:"), "{text}");
    let e = parse_file(
        Path::new("sd/t.yml"),
        b"- targets: [a:1]\n  labels: {env: [x\n",
    )
    .unwrap_err();
    assert!(matches!(e, FileSdError::Syntax { line: 2.., .. }), "{e}");
    assert!(e.to_string().starts_with("sd/t.yml:"), "{e}");
    let e = parse_file(
        Path::new("t.json"),
        br#"[{"targets": ["a"], "labels": {"a-b": "x"}}]"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"a-b\""), "{e}");
    let e = parse_file(Path::new("t.json"), br#"[{"target": ["a"]}]"#).unwrap_err();
    assert!(e.to_string().contains("target"), "{e}");
    let e = parse_file(Path::new("t.txt"), b"[]").unwrap_err();
    assert!(e.to_string().contains(".json, .yml or .yaml"), "{e}");
}

#[test]
fn globs_match_star_and_question_mark() {
    assert!(glob_match("*.json", "a.json"));
    assert!(glob_match("t-?.yml", "t-1.yml"));
    assert!(glob_match("*-*.json", "a-b-c.json"));
    assert!(!glob_match("*.json", "a.json.tmp"));
    assert!(!glob_match("t-?.yml", "t-12.yml"));
    assert!(glob_match("*", ""));
}

#[test]
fn a_broken_file_keeps_its_last_good_targets_and_a_removed_file_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.yml");
    std::fs::write(&a, br#"[{"targets": ["a:1"]}]"#).unwrap();
    std::fs::write(&b, b"- targets: [b:1]\n").unwrap();
    let mut p = FileProvider::new(FileSdSettings {
        files: vec![dir.path().join("*.json"), dir.path().join("*.yml")],
        refresh_interval: Duration::from_secs(3600),
    });
    let addresses = |r: &Refreshed| -> Vec<String> {
        r.groups
            .iter()
            .flatten()
            .flat_map(|g| g.targets.iter().map(|t| t["__address__"].clone()))
            .collect()
    };
    let r = p.refresh_now();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(addresses(&r), ["a:1", "b:1"]);
    // Nothing changed: nothing to say.
    assert!(p.refresh_now().groups.is_none());
    // Half written: the error names the file; its last good targets stay.
    std::fs::write(&a, br#"[{"targets": ["a:1", "a:2"#).unwrap();
    let r = p.refresh_now();
    assert_eq!(r.errors.len(), 1);
    assert!(
        r.errors[0].contains(&format!("{}:1:", a.display())),
        "{:?}",
        r.errors
    );
    assert!(addresses(&r).is_empty() || addresses(&r) == ["a:1", "b:1"]);
    std::fs::write(&a, br#"[{"targets": ["a:1", "a:2"]}]"#).unwrap();
    let r = p.refresh_now();
    assert_eq!(addresses(&r), ["a:1", "a:2", "b:1"]);
    std::fs::remove_file(&b).unwrap();
    let r = p.refresh_now();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(addresses(&r), ["a:1", "a:2"]);
}
