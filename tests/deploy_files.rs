//! The deployment files (deploy/) agree with the code and with each other: what cannot run
//! here (docker, kubectl) is checked by reading the files, and every embedded pushprobe
//! configuration is validated by the real binary.

mod common;
mod ops_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::require_binary;
use ops_common::{read, repo_file, root, yaml_documents};
use pushprobe::listener::{DEFAULT_PORT, HEALTHY_PATH, READY_PATH};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pushprobe");
/// Where every example reads its configuration (the image's CMD).
const CONFIG_PATH: &str = "/etc/pushprobe/pushprobe.toml";

/// Every YAML file under `dir`, relative to the repository root.
fn yaml_files(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            out.push(
                path.strip_prefix(root())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

fn yaml(rel: &str) -> Vec<Value> {
    yaml_documents(rel, &read(rel))
}

/// The one document of kind `kind` in a Kubernetes manifest.
fn manifest(rel: &str, kind: &str) -> Value {
    yaml(rel)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("{rel} has no {kind}"))
}

/// Runs `pushprobe config check` on `toml` (written to a temp file), with `env` set and the
/// API key variable the examples read. Returns the effective configuration it prints.
fn config_check(name: &str, toml: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pushprobe.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&path)
        .env("RELAY_API_KEY", "sk-test-key")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: pushprobe config check failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The port of an `IP:port` listen address in a configuration.
fn listen_port(toml_text: &str) -> u16 {
    let v: toml::Value = toml::from_str(toml_text).unwrap();
    let listen = v["agent"]["listen"].as_str().expect("agent.listen is set");
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

fn configmap_toml() -> String {
    manifest("deploy/kubernetes/configmap.yaml", "ConfigMap")["data"]["pushprobe.toml"]
        .as_str()
        .expect("ConfigMap has pushprobe.toml")
        .to_string()
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn every_yaml_file_parses() {
    let mut files = Vec::new();
    yaml_files(&repo_file("deploy"), &mut files);
    yaml_files(&repo_file("ops"), &mut files);
    assert!(files.len() >= 10, "found only {files:?}");
    for f in &files {
        assert!(!yaml(f).is_empty(), "{f} is empty");
    }
}

#[test]
fn embedded_configurations_pass_config_check() {
    config_check(
        "deploy/compose/pushprobe.toml",
        &read("deploy/compose/pushprobe.toml"),
        &[],
    );
    config_check("deploy/kubernetes/configmap.yaml", &configmap_toml(), &[]);
    // The systemd example reads its password from the credentials directory systemd
    // creates; point that at a temporary one.
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("remote-write-password"), "pw\n").unwrap();
    let systemd = read("deploy/systemd/pushprobe.toml").replace(
        "/run/credentials/pushprobe.service",
        creds.path().to_str().unwrap(),
    );
    config_check("deploy/systemd/pushprobe.toml", &systemd, &[]);
}

#[test]
fn replica_label_comes_from_the_pod_name_through_the_env_override() {
    let deployment = manifest("deploy/kubernetes/deployment.yaml", "Deployment");
    let env = container(&deployment)["env"].as_array().unwrap().clone();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    assert_eq!(
        var("POD_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        var("PUSHPROBE_AGENT__EXTERNAL_LABELS__REPLICA").unwrap()["value"],
        "$(POD_NAME)"
    );
    let key = var("RELAY_API_KEY").unwrap();
    assert_eq!(key["valueFrom"]["secretKeyRef"]["key"], "RELAY_API_KEY");

    // What the pod sees after Kubernetes expands $(POD_NAME): the label is really set.
    let effective = config_check(
        "configmap + replica env",
        &configmap_toml(),
        &[(
            "PUSHPROBE_AGENT__EXTERNAL_LABELS__REPLICA",
            "pushprobe-7c9d-x2",
        )],
    );
    assert!(
        effective.contains(r#"replica = "pushprobe-7c9d-x2""#),
        "{effective}"
    );
    // Why the manifest does not use Mimir's default `__replica__`: split on `__`, the
    // variable name yields empty key segments and is ignored, so the label would silently
    // be missing.
    let ignored = config_check(
        "configmap + __replica__ env",
        &configmap_toml(),
        &[(
            "PUSHPROBE_AGENT__EXTERNAL_LABELS____REPLICA__",
            "pushprobe-0",
        )],
    );
    assert!(!ignored.contains("pushprobe-0"), "{ignored}");
}

#[test]
fn ports_and_health_paths_agree_with_the_code() {
    let deployment = manifest("deploy/kubernetes/deployment.yaml", "Deployment");
    let c = container(&deployment);
    assert_eq!(c["ports"][0]["containerPort"], DEFAULT_PORT);
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], HEALTHY_PATH);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], READY_PATH);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "http");
    }
    assert_eq!(listen_port(&configmap_toml()), DEFAULT_PORT);
    assert_eq!(
        listen_port(&read("deploy/compose/pushprobe.toml")),
        DEFAULT_PORT
    );
    assert_eq!(
        listen_port(&read("deploy/systemd/pushprobe.toml")),
        DEFAULT_PORT
    );
    let compose = &yaml("deploy/docker-compose.yml")[0];
    assert_eq!(
        compose["services"]["pushprobe"]["ports"][0],
        format!("{DEFAULT_PORT}:{DEFAULT_PORT}")
    );
    assert!(read("deploy/Dockerfile").contains(&format!("\nEXPOSE {DEFAULT_PORT}\n")));
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_reads_the_mounted_config() {
    let dockerfile = read("deploy/Dockerfile");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    assert!(froms[0].contains(" AS "), "first stage is not named");
    assert!(
        froms
            .last()
            .unwrap()
            .contains("gcr.io/distroless/static-debian12"),
        "{froms:?}"
    );
    assert!(instructions
        .iter()
        .any(|l| l.starts_with("COPY --from=build")));
    // build.rs links release builds with the hot-text script: without it the build stage
    // would link a binary without the layout.
    assert!(
        instructions
            .iter()
            .any(|l| l.starts_with("COPY scripts/hot-text.ld")),
        "the build stage does not copy scripts/hot-text.ld"
    );
    let user = instructions
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER set");
    let uid = user["USER ".len()..].split(':').next().unwrap();
    assert_eq!(uid, "65532", "runs as {user}");
    assert!(instructions.contains(&r#"ENTRYPOINT ["/pushprobe"]"#));
    let cmd = format!(r#"CMD ["run", "--config", "{CONFIG_PATH}"]"#);
    assert!(instructions.contains(&cmd.as_str()), "CMD is not {cmd}");
    // The build context must not drag target/ along.
    assert!(read(".dockerignore").lines().any(|l| l == "target"));
}

#[test]
fn config_path_matches_every_mount() {
    // Kubernetes: the ConfigMap key, mounted as a directory, lands where the CMD reads it.
    let deployment = manifest("deploy/kubernetes/deployment.yaml", "Deployment");
    let c = container(&deployment);
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .expect("config mount");
    let mounted = format!("{}/pushprobe.toml", mount["mountPath"].as_str().unwrap());
    assert_eq!(mounted, CONFIG_PATH);
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run", "--config", CONFIG_PATH]);
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let cm = volumes.iter().find(|v| v["name"] == "config").unwrap();
    assert_eq!(
        cm["configMap"]["name"],
        manifest("deploy/kubernetes/configmap.yaml", "ConfigMap")["metadata"]["name"]
    );

    // Compose: the file is mounted at the same path.
    let compose = &yaml("deploy/docker-compose.yml")[0];
    let volumes = compose["services"]["pushprobe"]["volumes"]
        .as_array()
        .unwrap();
    assert!(volumes
        .iter()
        .any(|v| v.as_str().unwrap().split(':').nth(1) == Some(CONFIG_PATH)));

    // systemd: ExecStart reads the same file. No `config check` runs before it: `run`
    // validates first anyway, and the check printed the whole configuration on every start.
    let unit = read("deploy/systemd/pushprobe.service");
    let line = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(line.ends_with(&format!("--config {CONFIG_PATH}")), "{line}");
    assert!(
        !unit.lines().any(|l| l.starts_with("ExecStartPre=")),
        "a pre-start config check prints the configuration into the journal"
    );
    // Every install step that writes under /etc/pushprobe creates the directory first.
    let mkdir = unit
        .find("install -d -m 0755 /etc/pushprobe")
        .expect("install -d");
    let first_write = unit.find("/etc/pushprobe/pushprobe.toml").unwrap();
    assert!(
        mkdir < first_write,
        "/etc/pushprobe is created before it is written"
    );
}

#[test]
fn kubernetes_pod_is_locked_down_and_sized() {
    let deployment = manifest("deploy/kubernetes/deployment.yaml", "Deployment");
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(spec["automountServiceAccountToken"], false);
    let c = container(&deployment);
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for k in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][k].is_string(), "request {k}");
    }
    assert!(c["resources"]["limits"]["memory"].is_string());

    // The pod's grace period outlasts the agent's flush.
    let v: toml::Value = toml::from_str(&configmap_toml()).unwrap();
    let drain =
        pushprobe::config::parse_duration(v["agent"]["drain_timeout"].as_str().unwrap()).unwrap();
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > drain.as_secs(), "grace {grace}s <= drain {drain:?}");

    // Every kustomization resource exists; the placeholder Secret is not among them.
    let k = &yaml("deploy/kubernetes/kustomization.yaml")[0];
    for r in k["resources"].as_array().unwrap() {
        let f = repo_file("deploy/kubernetes").join(r.as_str().unwrap());
        assert!(f.is_file(), "{} missing", f.display());
        assert!(!r.as_str().unwrap().contains("secret"));
    }
}

/// Host paths of `service`'s bind mounts in deploy/docker-compose.yml, resolved, with their
/// container paths.
fn compose_mounts(compose: &Value, service: &str) -> Vec<(PathBuf, String)> {
    compose["services"][service]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| {
            let mut parts = v.as_str().unwrap().split(':');
            let host = parts.next().unwrap();
            let target = parts.next().unwrap().to_string();
            host.starts_with('.')
                .then(|| (repo_file("deploy").join(host), target))
        })
        .collect()
}

#[test]
fn compose_wires_receiver_rules_alertmanager_and_grafana() {
    let compose = &yaml("deploy/docker-compose.yml")[0];
    for service in ["pushprobe", "prometheus", "alertmanager", "grafana"] {
        assert!(compose["services"][service].is_object(), "no {service}");
        for (host, _) in compose_mounts(compose, service) {
            assert!(host.exists(), "{service} mounts missing {}", host.display());
        }
    }
    let prom = &compose["services"]["prometheus"];
    let flags: Vec<&str> = prom["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(flags.contains(&"--web.enable-remote-write-receiver"));

    // The rules Prometheus loads are ops/alerts.yml, at the path prometheus.yml names.
    let prom_cfg = &yaml("deploy/compose/prometheus.yml")[0];
    let rule_file = prom_cfg["rule_files"][0].as_str().unwrap();
    let mounts = compose_mounts(compose, "prometheus");
    let (host, _) = mounts
        .iter()
        .find(|(_, t)| t == rule_file)
        .expect("rule file mounted");
    assert_eq!(
        host.canonicalize().unwrap(),
        repo_file("ops/alerts.yml").canonicalize().unwrap()
    );
    assert_eq!(
        prom_cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0],
        "alertmanager:9093"
    );
    // pushprobe's remote write goes to the Prometheus service's receiver.
    let pp: toml::Value = toml::from_str(&read("deploy/compose/pushprobe.toml")).unwrap();
    assert_eq!(
        pp["remote_write"][0]["url"].as_str().unwrap(),
        "http://prometheus:9090/api/v1/write"
    );

    // Grafana: the provider's directory holds the mounted dashboard.
    let provider = &yaml("deploy/grafana/provisioning/dashboards/pushprobe.yml")[0];
    let dir = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let mounts = compose_mounts(compose, "grafana");
    let (host, target) = mounts
        .iter()
        .find(|(h, _)| h.ends_with("grafana-dashboard.json"))
        .expect("dashboard mounted");
    assert_eq!(Path::new(target).parent().unwrap(), Path::new(dir));
    assert!(host.is_file());
    assert!(mounts.iter().any(|(_, t)| t == "/etc/grafana/provisioning"));
    let ds = &yaml("deploy/grafana/provisioning/datasources/prometheus.yml")[0];
    assert_eq!(ds["datasources"][0]["type"], "prometheus");
    assert_eq!(ds["datasources"][0]["url"], "http://prometheus:9090");
}

#[test]
fn compose_prometheus_and_alertmanager_configs_are_valid() {
    if let Some(promtool) = require_binary("promtool") {
        // promtool also opens the rule files: point the container path at ops/alerts.yml.
        let dir = tempfile::tempdir().unwrap();
        let cfg = read("deploy/compose/prometheus.yml").replace(
            "/etc/prometheus/rules/alerts.yml",
            repo_file("ops/alerts.yml").to_str().unwrap(),
        );
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, cfg).unwrap();
        let out = Command::new(promtool)
            .args(["check", "config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some(amtool) = require_binary("amtool") {
        let out = Command::new(amtool)
            .arg("check-config")
            .arg(repo_file("deploy/compose/alertmanager.yml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = read("deploy/systemd/pushprobe.service");
    let has = |line: &str| unit.lines().any(|l| l == line);
    for line in [
        "DynamicUser=yes",
        "StateDirectory=pushprobe",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
    ] {
        assert!(has(line), "missing {line}");
    }
    assert!(unit.lines().any(|l| l.starts_with("MemoryMax=")));
    assert!(
        !unit.lines().any(|l| l.starts_with("ExecReload=")),
        "pushprobe has no reload"
    );
    // A host without basic auth has no password file: the unit itself loads no credential
    // (a missing LoadCredential= file fails the start); the basic-auth drop-in does, and it
    // provides the file the example config reads.
    assert!(!unit.lines().any(|l| l.starts_with("LoadCredential=")));
    let dropin = read("deploy/systemd/basic-auth.conf");
    let cred = dropin
        .lines()
        .find_map(|l| l.strip_prefix("LoadCredential="))
        .unwrap();
    let name = cred.split(':').next().unwrap();
    assert!(read("deploy/systemd/pushprobe.toml")
        .contains(&format!("/run/credentials/pushprobe.service/{name}")));
    assert!(unit.contains("pushprobe.service.d/basic-auth.conf"));

    let Some(analyze) = require_binary("systemd-analyze") else {
        return;
    };
    // verify checks that ExecStart is executable: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pushprobe.service");
    let unit = unit.replace("/usr/local/bin/pushprobe", BIN);
    // The unit alone, and with the drop-in's [Service] lines appended as systemd merges them.
    let with_dropin = format!("{unit}\n{dropin}");
    for text in [unit.clone(), with_dropin] {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Unknown or misspelt keys are only warnings (exit 0): any output is a failure here.
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify: {stderr}"
        );
    }
}

/// ICMP probes need unprivileged ICMP sockets or CAP_NET_RAW: the sysctl drop-in opens the
/// former to every group, the unit's drop-in gives back CAP_NET_RAW alone (and still
/// verifies), and the Kubernetes pod sets the range in its own network namespace.
#[test]
fn icmp_probes_have_a_way_to_their_sockets_in_every_deployment() {
    let sysctl = read("deploy/systemd/60-pushprobe-ping.conf");
    assert!(sysctl
        .lines()
        .any(|l| l == "net.ipv4.ping_group_range = 0 2147483647"));
    let dropin = read("deploy/systemd/icmp-raw.conf");
    for line in [
        "CapabilityBoundingSet=CAP_NET_RAW",
        "AmbientCapabilities=CAP_NET_RAW",
    ] {
        assert!(dropin.lines().any(|l| l == line), "icmp-raw.conf: {line}");
    }
    let unit = read("deploy/systemd/pushprobe.service");
    assert!(unit.contains("60-pushprobe-ping.conf") && unit.contains("icmp-raw.conf"));
    // ICMP sockets are AF_INET/AF_INET6 sockets: the unit's address families allow them.
    assert!(unit
        .lines()
        .any(|l| l == "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"));

    let deployment = manifest("deploy/kubernetes/deployment.yaml", "Deployment");
    let sysctls = &deployment["spec"]["template"]["spec"]["securityContext"]["sysctls"];
    assert_eq!(
        sysctls,
        &serde_json::json!([{"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}])
    );

    let Some(analyze) = require_binary("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pushprobe.service");
    let unit = unit.replace("/usr/local/bin/pushprobe", BIN);
    std::fs::write(&path, format!("{unit}\n{dropin}")).unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn dashboard_uses_current_panels_and_the_datasource_variable() {
    let d: Value = serde_json::from_str(&read("ops/grafana-dashboard.json")).unwrap();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 39);
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["job", "probe", "instance", "model"] {
        let v = var(name);
        assert_eq!(v["type"], "query");
        assert_eq!(v["datasource"]["uid"], "${datasource}");
        assert!(v["definition"]
            .as_str()
            .unwrap()
            .starts_with("label_values("));
        // "All" must be a regex that also matches series without the label.
        assert_eq!(v["allValue"], ".*");
    }

    let panels = d["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Availability",
        "Latency",
        "Errors",
        "Tokens and spend",
        "Agent health",
    ] {
        assert!(rows.contains(&want), "no row {want}: {rows:?}");
    }
    let mut ids = std::collections::BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id at {title}"
        );
        let kind = p["type"].as_str().unwrap();
        if kind == "row" {
            continue;
        }
        assert!(
            matches!(kind, "timeseries" | "stat" | "table"),
            "{title}: panel type {kind} (the old graph panel is gone from Grafana)"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(!t["expr"].as_str().unwrap().is_empty(), "{title}");
        }
    }
}

#[test]
fn cronjob_example_runs_the_job_under_pushprobe_exec() {
    let rel = "deploy/kubernetes/cronjob-exec.example.yaml";
    let toml = manifest(rel, "ConfigMap")["data"]["pushprobe.toml"]
        .as_str()
        .unwrap()
        .to_string();
    config_check(rel, &toml, &[]);
    let cron = manifest(rel, "CronJob");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    let cmd: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(cmd[1], "exec");
    let sep = cmd
        .iter()
        .position(|a| *a == "--")
        .expect("-- before the job");
    assert!(sep + 1 < cmd.len(), "no command after --");
    let config = cmd[..sep].windows(2).find(|w| w[0] == "--config").unwrap()[1];
    assert_eq!(config, CONFIG_PATH);
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "pushprobe-config")
        .unwrap();
    assert_eq!(
        format!("{}/pushprobe.toml", mount["mountPath"].as_str().unwrap()),
        CONFIG_PATH
    );
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"], false,
        "job container"
    );
}

/// `major.minor` of a Rust version string, for comparison.
fn rust_minor(v: &str) -> (u64, u64) {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The triple rustc builds for by default, as `rustc -vV` reports it.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names its host")
        .trim()
        .to_string()
}

#[test]
fn docker_builder_is_new_enough_for_the_locked_dependencies() {
    // The newest rust-version among the packages a release build compiles (normal and build
    // dependencies, reached from this crate), read from cargo's own resolution of Cargo.lock.
    // Resolved for this host only: without `--filter-platform`, cargo wants every package in
    // Cargo.lock in its cache, Windows-only ones included, which a machine that has only built
    // for Linux does not have, and `--offline` then fails on a fresh cargo home.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = host_triple();
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: std::collections::HashMap<&str, &Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: std::collections::HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let mut stack = vec![meta["resolve"]["root"].as_str().unwrap()];
    let mut seen = std::collections::HashSet::new();
    let mut needed = ((0, 0), String::new());
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(v) = packages[id]["rust_version"].as_str() {
            needed = needed.max((rust_minor(v), packages[id]["name"].to_string()));
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let runtime = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            if runtime {
                stack.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    let dockerfile = read("deploy/Dockerfile");
    let from = dockerfile
        .lines()
        .find(|l| l.starts_with("FROM rust:"))
        .expect("a rust builder stage");
    let tag = from["FROM rust:".len()..].split('-').next().unwrap();
    assert!(
        rust_minor(tag) >= needed.0,
        "builder {tag} is older than rust {:?} needed by {}",
        needed.0,
        needed.1
    );
}

/// `agent.data_dir` of a configuration.
fn data_dir(toml_text: &str) -> String {
    let v: toml::Value = toml::from_str(toml_text).unwrap();
    v["agent"]["data_dir"]
        .as_str()
        .expect("agent.data_dir is set")
        .to_string()
}

#[test]
fn the_queue_directory_is_where_the_writable_storage_is() {
    // systemd: StateDirectory=pushprobe is /var/lib/pushprobe, the only writable place
    // under ProtectSystem=strict.
    let unit = read("deploy/systemd/pushprobe.service");
    let state = unit
        .lines()
        .find_map(|l| l.strip_prefix("StateDirectory="))
        .unwrap();
    assert_eq!(
        data_dir(&read("deploy/systemd/pushprobe.toml")),
        format!("/var/lib/{state}")
    );
    // Kubernetes: the root filesystem is read-only, so data_dir must be a mounted volume.
    let deployment = manifest("deploy/kubernetes/deployment.yaml", "Deployment");
    let mounts = container(&deployment)["volumeMounts"]
        .as_array()
        .unwrap()
        .clone();
    let dir = data_dir(&configmap_toml());
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"] == dir.as_str())
        .unwrap_or_else(|| panic!("no volume mounted at data_dir {dir}"));
    assert_ne!(mount["readOnly"], true);
}

#[test]
fn compose_passes_the_api_key_only_when_set_and_does_not_restart_forever() {
    let compose = &yaml("deploy/docker-compose.yml")[0];
    let svc = &compose["services"]["pushprobe"];
    // `KEY: ${KEY:-}` hands the container an empty key, which pushprobe refuses at every
    // start; a bare name passes the host's variable through only when it is set.
    let env = svc["environment"]
        .as_array()
        .expect("environment as a list");
    assert!(env.iter().any(|v| v == "RELAY_API_KEY"), "{env:?}");
    // A bad configuration exits 78; restarting it forever only fills the log.
    let restart = svc["restart"].as_str().unwrap();
    let tries = restart
        .strip_prefix("on-failure:")
        .and_then(|n| n.parse::<u32>().ok());
    assert!(matches!(tries, Some(1..=10)), "restart: {restart}");
}
