//! `pushprobe config check` as a process: it prints the configuration with every credential
//! redacted, refuses what `run` would refuse, and names the key of each problem.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every credential the configuration below holds; none may be printed.
const SECRETS: &[&str] = &[
    "rw-url-pw",
    "rw-api-key",
    "rw-auth-header",
    "rw-cookie",
    "rw-bearer-inline",
    "pg-url-pw",
    "pg-basic-pw",
    "probe-url-pw",
    "probe-auth-header",
    "probe-auth-token",
    "probe-proxy-auth",
    "ai-gateway-key",
    "ai-key-in-file",
    "scrape-bearer-inline",
    "scrape-target-pw",
];

/// A configuration with a credential in every place one can go: URLs with a password,
/// credential headers on remote write and the probes, inline tokens and passwords.
fn with_secrets(dir: &Path) -> String {
    std::fs::write(dir.join("ai-key"), "ai-key-in-file\n").unwrap();
    format!(
        r#"
[[remote_write]]
name = "with-headers"
url = "http://rw-user:rw-url-pw@127.0.0.1:9/api/v1/write"
headers = {{ "X-Api-Key" = "rw-api-key", Authorization = "Bearer rw-auth-header", Cookie = "s=rw-cookie", "X-Scope-OrgID" = "team-a" }}

[[remote_write]]
name = "with-token"
url = "http://127.0.0.1:9/api/v1/write"
bearer_token = "rw-bearer-inline"

[[pushgateway]]
url = "http://pg-user:pg-url-pw@127.0.0.1:9"
job = "nightly"
basic_auth = {{ username = "u", password = "pg-basic-pw" }}

[[probe]]
name = "web"
kind = "http"
url = "http://probe-user:probe-url-pw@127.0.0.1:9/health"
headers = {{ Authorization = "Bearer probe-auth-header", "X-Auth-Token" = "probe-auth-token", "Proxy-Authorization" = "Basic probe-proxy-auth" }}
timeout = "5s"

[[probe]]
name = "ai"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_file = "{key}"
model = "m"
checks = ["models"]
headers = {{ "X-Gateway-Key" = "ai-gateway-key" }}

[[scrape]]
job = "node"
targets = ["127.0.0.1:9"]
bearer_token = "scrape-bearer-inline"
"#,
        key = dir.join("ai-key").display()
    )
}

/// Runs `pushprobe config check` on `toml`, written to `dir`; a run that takes longer than 20s is
/// killed (a secret file that never ends used to make it read forever).
fn config_check(dir: &Path, toml: &str) -> Output {
    config_check_with(dir, toml, &[])
}

/// [`config_check`] with `env` set for the process, in the project's directory (where the
/// examples' relative paths point).
fn config_check_with(dir: &Path, toml: &str, env: &[(&str, &str)]) -> Output {
    let path = dir.join("pushprobe.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushprobe"))
        .args(["config", "check", "--config"])
        .arg(&path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().copied())
        .env_remove("PUSHPROBE_LOG_LEVEL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn assert_no_secret(out: &Output) {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
}

#[test]
fn valid_configuration_is_printed_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let out = config_check(dir.path(), &with_secrets(dir.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret(&out);
    // What is not a credential is still shown, and where a credential was is visible.
    assert!(stdout.contains("team-a"), "{stdout}");
    assert!(stdout.contains("rw-user:xxxxx@127.0.0.1:9"), "{stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
}

#[test]
fn errors_of_a_bad_configuration_hold_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let toml = with_secrets(dir.path())
        .replace("timeout = \"5s\"", "timeout = \"0s\"")
        .replace(
            "targets = [\"127.0.0.1:9\"]",
            "targets = [\"scrape-user:scrape-target-pw@127.0.0.1:9\", \"scrape-user:scrape-target-pw@127.0.0.1:9\"]",
        )
        .replace("Cookie = \"s=rw-cookie\"", "Cookie = \"s=rw-cookie\\n\"");
    let out = config_check(dir.path(), &toml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("probe[0].timeout"), "{stderr}");
    assert!(stderr.contains("scrape[0].targets[0]"), "{stderr}");
    assert!(stderr.contains("scrape[0].targets[1]"), "{stderr}");
    assert!(
        stderr.contains("remote_write[0].headers.Cookie"),
        "{stderr}"
    );
    assert_no_secret(&out);
}

#[test]
fn bearer_token_and_an_authorization_header_are_refused_together() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n\
                bearer_token = \"rw-bearer-inline\"\n\
                headers = { Authorization = \"Bearer rw-auth-header\" }\n";
    let out = config_check(dir.path(), toml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("remote_write[0].headers.authorization: conflicts with"),
        "{stderr}"
    );
    assert_no_secret(&out);
}

#[test]
fn unbounded_wrong_or_empty_secret_files_are_refused_quickly_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'a'; 65 * 1024]).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let rw = "[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n";
    let cases = [
        (
            format!("{rw}bearer_token_file = \"/dev/zero\"\n"),
            "remote_write[0].bearer_token_file: /dev/zero is a character device",
        ),
        (
            format!("{rw}bearer_token_file = {:?}\n", dir.path()),
            "remote_write[0].bearer_token_file: ",
        ),
        (
            format!("{rw}bearer_token_file = {big:?}\n"),
            "remote_write[0].bearer_token_file: ",
        ),
        (
            format!("{rw}bearer_token_file = {empty:?}\n"),
            "remote_write[0].bearer_token_file: ",
        ),
        (
            format!("{rw}basic_auth = {{ username = \"u\", password_file = {empty:?} }}\n"),
            "remote_write[0].basic_auth.password_file: ",
        ),
        (
            "[[probe]]\nname = \"ai\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
             api_key_file = \"/dev/zero\"\nmodel = \"m\"\nchecks = [\"models\"]\n"
                .to_string(),
            "probe[0].api_key_file: /dev/zero is a character device",
        ),
    ];
    let whats = [
        "",
        "is a directory",
        "holds more than 65536 bytes",
        "is empty",
        "is empty",
        "",
    ];
    for ((toml, want), what) in cases.iter().zip(whats) {
        let started = Instant::now();
        let out = config_check(dir.path(), toml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{toml}: {stderr}");
        assert!(stderr.contains(want), "{toml}: {stderr}");
        assert!(stderr.contains(what), "{toml}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{toml}: took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn what_run_refuses_config_check_refuses_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let rw = "[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n";
    let probe = "[[probe]]\nname = \"web\"\nkind = \"http\"\nurl = \"https://127.0.0.1:9/\"\n";
    let cases = [
        (
            format!("[agent]\ndata_dir = \"/dev/null\"\n{rw}"),
            "agent.data_dir: /dev/null is not a directory",
        ),
        (
            format!("[agent]\ndata_dir = \"/dev/null/pushprobe\"\n{rw}"),
            "agent.data_dir: /dev/null/pushprobe cannot be created: /dev/null is not a directory",
        ),
        (
            format!("{probe}tls = {{ ca_file = {not_pem:?} }}\n"),
            "probe[0].tls.ca_file: ",
        ),
        (
            format!("{rw}[[scrape]]\njob = \"n\"\ntargets = [\"127.0.0.1:9\"]\ntls = {{ ca_file = {not_pem:?} }}\n"),
            "scrape[0].tls.ca_file: ",
        ),
        (
            format!(
                "[[remote_write]]\nurl = \"https://127.0.0.1:9/api/v1/write\"\ntls = {{ ca_file = {not_pem:?} }}\n"
            ),
            "remote_write[0].tls.ca_file: ",
        ),
    ];
    for (toml, want) in &cases {
        let out = config_check(dir.path(), toml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{toml}: {stderr}");
        assert!(stderr.contains(want), "{toml}: {stderr}");
    }
    // Over plain http the sender never reads the CA file, and run accepts it: so does check.
    let toml = format!("{rw}tls = {{ ca_file = {not_pem:?} }}\n");
    let out = config_check(dir.path(), &toml);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_data_dir_held_by_a_running_agent_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let lock = std::fs::File::create(data.join(pushprobe::agent::LOCK_FILE)).unwrap();
    lock.lock().unwrap();
    let toml = format!(
        "[agent]\ndata_dir = {data:?}\n[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n"
    );
    let out = config_check(dir.path(), &toml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("is in use by a running pushprobe"),
        "{stderr}"
    );
    lock.unlock().unwrap();
    let out = config_check(dir.path(), &toml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("in use"), "{stderr}");
}

#[test]
fn probes_nothing_tells_from_another_agents_are_a_warning_saying_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let rw = "[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n";
    let probes = "[[probe]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
                  [[probe]]\nname = \"api\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/api\"\n\
                  job = \"api\"\n";
    let out = config_check(dir.path(), &format!("{rw}{probes}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning, not an error: {stderr}"
    );
    assert!(
        stderr.contains(
            "agent.external_labels: no label tells this agent's probe series from those of \
             another agent probing the same targets (probes: web, api)"
        ) && stderr.contains("[agent.external_labels] region = \"…\""),
        "{stderr}"
    );
    // An external label (here from the environment, as a fleet would set it) tells it apart.
    let path = dir.path().join("pushprobe.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_pushprobe"))
        .args(["config", "check", "--config"])
        .arg(&path)
        .env_remove("PUSHPROBE_LOG_LEVEL")
        .env("PUSHPROBE_AGENT__EXTERNAL_LABELS__REGION", "eu-west")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("no label tells"), "{stderr}");
}

/// The Grafana Cloud example is a working configuration once its token file exists, and
/// `config check` never prints the token.
#[test]
fn the_grafana_cloud_example_validates_once_its_token_file_exists() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana-cloud.toml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("grafana-cloud-token");
    std::fs::write(&token, "glc_example-token-value\n").unwrap();
    let config = example.replace(
        "/run/secrets/grafana-cloud-token",
        &token.display().to_string(),
    );
    assert_ne!(config, example, "the example names its token file");
    let out = config_check(dir.path(), &config);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("glc_example-token-value"), "{text}");
}

/// Every example in `examples/` is a working configuration once the files and variables it
/// names exist: a key an example lacks, or a check added later that one of them fails, shows
/// here rather than to the user who copies it.
#[test]
fn every_example_passes_config_check_once_its_files_exist() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "examples found: {names:?}");
    let ca = self_signed_pem();
    let mut failed = Vec::new();
    for path in &names {
        let dir = tempfile::tempdir().unwrap();
        let example = std::fs::read_to_string(path).unwrap();
        let config = with_local_files(&example, dir.path(), &ca);
        let out = config_check_with(dir.path(), &config, &[("RELAY_API_KEY", "example-key")]);
        if !out.status.success() {
            failed.push(format!(
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// `example` with each absolute path it names (secret files, CA files, the data directory)
/// moved under `dir`, where it is created: a directory for `data_dir`, `ca_pem` for a `.pem`
/// file, a one-line secret otherwise. The file is parsed and written back, so comments go.
fn with_local_files(example: &str, dir: &Path, ca_pem: &str) -> String {
    fn localise(key: &str, value: &mut toml::Value, dir: &Path, ca_pem: &str, n: &mut usize) {
        match value {
            toml::Value::String(path) if path.starts_with('/') => {
                *n += 1;
                let local = dir.join(format!("file-{n}"));
                if key == "data_dir" {
                    std::fs::create_dir_all(&local).unwrap();
                } else if path.ends_with(".pem") {
                    std::fs::write(&local, ca_pem).unwrap();
                } else {
                    std::fs::write(&local, "example-secret\n").unwrap();
                }
                *path = local.display().to_string();
            }
            toml::Value::Table(table) => {
                for (k, v) in table.iter_mut() {
                    localise(k, v, dir, ca_pem, n);
                }
            }
            toml::Value::Array(items) => {
                for v in items {
                    localise(key, v, dir, ca_pem, n);
                }
            }
            _ => {}
        }
    }
    let mut value: toml::Value = toml::from_str(example).unwrap();
    localise("", &mut value, dir, ca_pem, &mut 0);
    toml::to_string(&value).unwrap()
}

/// A self-signed certificate in PEM, to stand for an example's CA file.
fn self_signed_pem() -> String {
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

/// A configuration that sends nowhere, or collects nothing, is valid (`check` needs no sink)
/// but `config check` says so before it is deployed.
#[test]
fn config_check_warns_about_a_configuration_that_sends_or_collects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let no_sink = r#"
[agent]
external_labels = { site = "a" }

[[probe]]
name = "web"
kind = "http"
url = "http://127.0.0.1:9/"
"#;
    let nothing_to_collect = r#"
[[remote_write]]
url = "http://127.0.0.1:9/api/v1/write"
"#;
    let no_sink_warning = "no [[remote_write]] or [[pushgateway]] configured";
    let nothing_warning = "no [[probe]] or [[scrape]] configured";
    for (toml, warned, not_warned) in [
        (no_sink, no_sink_warning, nothing_warning),
        (nothing_to_collect, nothing_warning, no_sink_warning),
    ] {
        let out = config_check(dir.path(), toml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(warned), "{stderr}");
        assert!(!stderr.contains(not_warned), "{stderr}");
    }
}
