//! Service discovery and target relabeling end to end: pushprobe discovers scrape and probe
//! targets from files (rewritten during the test, renamed over, half written) and from an
//! HTTP SD endpoint (that changes its answer, then fails), and a real Prometheus shows new
//! targets appearing with their own `instance`, removed ones ending at once (staleness
//! markers), and bad input keeping the last good targets.

mod common;

use std::path::Path;
use std::time::Duration;

use common::target::{Reply, TargetServer};
use common::*;

/// An exposition naming its target, so each target's series can be told apart.
fn exporter_body(name: &str) -> Reply {
    Reply {
        body: format!("# TYPE sd_thing gauge\nsd_thing{{served_by=\"{name}\"}} 1\n"),
        ..Reply::default()
    }
}

fn agent_header(write_url: &str) -> String {
    format!(
        "[agent]\ndrain_timeout = \"10s\"\nself_metrics_interval = \"1s\"\n\n\
         [[remote_write]]\nurl = {}\nbatch_send_deadline = \"1s\"\n",
        toml_string(write_url)
    )
}

/// Writes `text` to `path` the way config management does: a temporary file renamed over.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn instances(results: &[QueryResult]) -> Vec<String> {
    let mut out: Vec<String> = results
        .iter()
        .map(|r| r.labels.get("instance").cloned().unwrap_or_default())
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sd_targets_come_and_go_with_staleness_and_bad_files_keep_the_last_good_set() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let a = TargetServer::start_with(exporter_body("a")).await;
    let b = TargetServer::start_with(exporter_body("b")).await;
    let c = TargetServer::start_with(exporter_body("c")).await;
    let skipped = TargetServer::start_with(exporter_body("skipped")).await;
    let (a_addr, b_addr, c_addr) = (
        a.addr().to_string(),
        b.addr().to_string(),
        c.addr().to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("targets.json");
    let yaml = dir.path().join("more.yml");
    std::fs::write(
        &json,
        format!(
            r#"[{{"targets": ["{a_addr}"], "labels": {{"team": "alpha"}}}},
                {{"targets": ["{}"], "labels": {{"skip": "yes"}}}}]"#,
            skipped.addr()
        ),
    )
    .unwrap();
    std::fs::write(
        &yaml,
        format!("- targets: ['{b_addr}']\n  labels:\n    team: beta\n"),
    )
    .unwrap();
    let config = format!(
        "{}\n[[scrape]]\njob = \"fsd\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[scrape.file_sd_configs]]\nfiles = [{}, {}]\nrefresh_interval = \"1s\"\n\
         [[scrape.relabel_configs]]\nsource_labels = [\"skip\"]\nregex = \"yes\"\naction = \"drop\"\n\
         [[scrape.relabel_configs]]\nsource_labels = [\"__meta_filepath\"]\nregex = \".*/(.*)\"\n\
         target_label = \"from_file\"\n",
        agent_header(&prom.write_url()),
        toml_string(&json.display().to_string()),
        toml_string(&dir.path().join("*.yml").display().to_string()),
    );
    let agent = Pushprobe::with_config(&config);
    let mut run = agent.spawn_run(&[]);

    // Both targets, each its own instance, with their group's labels and no meta label.
    let up = prom
        .wait_for(r#"up{job="fsd"}"#, |r| r.len() == 2, DATA_TIMEOUT)
        .await;
    let mut want = vec![a_addr.clone(), b_addr.clone()];
    want.sort();
    assert_eq!(instances(&up), want);
    let things = prom
        .wait_for(r#"sd_thing{job="fsd"}"#, |r| r.len() == 2, DATA_TIMEOUT)
        .await;
    let a_series = only(&things, &[("served_by", "a")]);
    assert_eq!(a_series.labels["instance"], a_addr);
    assert_eq!(a_series.labels["team"], "alpha");
    assert_eq!(a_series.labels["from_file"], "targets.json");
    assert!(a_series.labels.keys().all(|k| !k.starts_with("__meta")));
    assert_eq!(only(&things, &[("served_by", "b")]).labels["team"], "beta");
    assert_eq!(skipped.hits(), 0, "a dropped target is never scraped");

    // Renamed over: a goes, c comes. a's series end at once (staleness markers), c's appear.
    write_atomically(&json, &format!(r#"[{{"targets": ["{c_addr}"]}}]"#));
    prom.wait_for(
        r#"sd_thing{job="fsd"}"#,
        |r| {
            let mut s: Vec<&str> = r.iter().map(|x| x.labels["served_by"].as_str()).collect();
            s.sort();
            s == ["b", "c"]
        },
        DATA_TIMEOUT,
    )
    .await;
    let up = prom
        .wait_for(r#"up{job="fsd"}"#, |r| r.len() == 2, DATA_TIMEOUT)
        .await;
    let mut want = vec![b_addr.clone(), c_addr.clone()];
    want.sort();
    assert_eq!(instances(&up), want, "the removed target's up ended too");
    let a_hits = a.hits();

    // Half written: the file's last good targets stay, and the failure is counted and named.
    std::fs::write(&json, format!(r#"[{{"targets": ["{c_addr}", "#)).unwrap();
    prom.wait_for(
        r#"pushprobe_sd_refresh_failures_total{mechanism="file",config="fsd"}"#,
        |r| r.len() == 1 && r[0].value >= 1.0,
        DATA_TIMEOUT,
    )
    .await;
    let hits_before = c.hits();
    prom.wait_for(r#"sd_thing{job="fsd"}"#, |r| r.len() == 2, DATA_TIMEOUT)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(c.hits() > hits_before, "c is still scraped");
    assert_eq!(
        instances(&prom.query(r#"up{job="fsd"}"#).await),
        want,
        "the last good set is kept"
    );
    assert!(a.hits() <= a_hits + 1, "the removed target stays removed");
    prom.wait_for(
        r#"pushprobe_sd_discovered_targets{config="fsd"}"#,
        |r| r.len() == 1 && r[0].value == 2.0,
        DATA_TIMEOUT,
    )
    .await;
    run.assert_running();

    let done = run.terminate(Duration::from_secs(30)).await;
    done.assert_code(0);
    let log = done.stderr;
    assert!(
        log.contains(&format!("{}:1:", json.display())),
        "the error names the file and position:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sd_answers_change_the_targets_and_failures_keep_the_last_good_set() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let a = TargetServer::start_with(exporter_body("a")).await;
    let b = TargetServer::start_with(exporter_body("b")).await;
    let sd = TargetServer::start_with(Reply {
        body: format!(
            r#"[{{"targets": ["{}"], "labels": {{"env": "prod"}}}}]"#,
            a.addr()
        ),
        content_type: "application/json".into(),
        ..Reply::default()
    })
    .await;
    let config = format!(
        "{}\n[[scrape]]\njob = \"hsd\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[scrape.http_sd_configs]]\nurl = {}\nrefresh_interval = \"1s\"\n",
        agent_header(&prom.write_url()),
        toml_string(&sd.url("/sd")),
    );
    let agent = Pushprobe::with_config(&config);
    let mut run = agent.spawn_run(&[]);
    let things = prom
        .wait_for(r#"sd_thing{job="hsd"}"#, |r| r.len() == 1, DATA_TIMEOUT)
        .await;
    assert_eq!(things[0].labels["env"], "prod");
    assert_eq!(things[0].labels["instance"], a.addr().to_string());

    // A new answer: b replaces a, whose series end.
    sd.set_body(&format!(r#"[{{"targets": ["{}"]}}]"#, b.addr()));
    prom.wait_for(
        r#"sd_thing{job="hsd"}"#,
        |r| r.len() == 1 && r[0].labels["served_by"] == "b",
        DATA_TIMEOUT,
    )
    .await;

    // Failing: b stays, failures are counted.
    sd.set_status(503);
    prom.wait_for(
        r#"pushprobe_sd_refresh_failures_total{mechanism="http",config="hsd"}"#,
        |r| r.len() == 1 && r[0].value >= 2.0,
        DATA_TIMEOUT,
    )
    .await;
    let hits = b.hits();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(b.hits() > hits, "the last good target is still scraped");
    let things = prom.query(r#"sd_thing{job="hsd"}"#).await;
    assert_eq!(things.len(), 1, "{things:?}");
    run.assert_running();
    run.terminate(Duration::from_secs(30)).await.assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_probe_definition_probes_each_discovered_target_as_its_own_instance() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let a = TargetServer::start().await;
    let b = TargetServer::start().await;
    let a_url = a.url("/health");
    let b_addr = b.addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    // A full URL, and a bare host:port (probed as http://host:port/).
    std::fs::write(
        &file,
        format!("- targets: ['{a_url}', '{b_addr}']\n  labels:\n    site: edge-1\n"),
    )
    .unwrap();
    let config = format!(
        "{}\n[[probe]]\nname = \"web\"\nkind = \"http\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[probe.file_sd_configs]]\nfiles = [{}]\nrefresh_interval = \"1s\"\n",
        agent_header(&prom.write_url()),
        toml_string(&file.display().to_string()),
    );
    let agent = Pushprobe::with_config(&config);
    let mut run = agent.spawn_run(&[]);
    let ok = prom
        .wait_for(
            r#"probe_success{probe="web"}"#,
            |r| r.len() == 2,
            DATA_TIMEOUT,
        )
        .await;
    let mut want = vec![a_url.clone(), format!("http://{b_addr}/")];
    want.sort();
    assert_eq!(instances(&ok), want);
    assert!(
        ok.iter()
            .all(|r| r.value == 1.0 && r.labels["site"] == "edge-1"),
        "{ok:?}"
    );

    // b leaves the file: its series end at once, a's go on.
    write_atomically(&file, &format!("- targets: ['{a_url}']\n"));
    let ok = prom
        .wait_for(
            r#"probe_success{probe="web"}"#,
            |r| r.len() == 1,
            DATA_TIMEOUT,
        )
        .await;
    assert_eq!(ok[0].labels["instance"], a_url);
    let left = prom
        .query(&format!(r#"{{probe="web",instance="http://{b_addr}/"}}"#))
        .await;
    assert!(
        left.is_empty(),
        "the removed target's series are stale: {left:?}"
    );
    run.assert_running();
    run.terminate(Duration::from_secs(30)).await.assert_code(0);
}

/// The example configuration loads, its target files parse, and its rules keep this agent's
/// share of the production hosts and every website.
#[test]
fn the_file_sd_example_loads_and_its_target_files_parse() {
    use pushprobe::discovery::{build_targets, file::parse_file};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings = pushprobe::config::load(&root.join("examples/file-sd.toml"), true)
        .unwrap()
        .validate("examples/file-sd.toml")
        .unwrap_or_else(|e| panic!("{e:?}"));
    let groups = |name: &str| {
        parse_file(
            &root.join("examples/file-sd").join(name),
            &std::fs::read(root.join("examples/file-sd").join(name)).unwrap(),
        )
        .unwrap()
    };
    let job = &settings.scrapes[0];
    assert!(job.discovery.is_dynamic());
    let nodes = build_targets(&groups("nodes.json"), &job.discovery.relabel, &job.defaults);
    assert!(nodes.errors.is_empty(), "{:?}", nodes.errors);
    // 7 production hosts, about a third of them on shard 0; never the staging one.
    assert!(
        !nodes.targets.is_empty() && nodes.targets.len() < 7,
        "{:?}",
        nodes.targets
    );
    assert!(nodes
        .targets
        .iter()
        .all(|t| t.labels.get("env") == Some("prod")));
    let probe = &settings.probe_discovery[0];
    let sites = build_targets(
        &groups("websites.yml"),
        &probe.discovery.relabel,
        &probe.defaults,
    );
    assert_eq!(sites.targets.len(), 3);
    for t in &sites.targets {
        probe.probe.with_target(t).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_discovers_then_scrapes_each_target_once() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let a = TargetServer::start_with(exporter_body("a")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.json");
    std::fs::write(&file, format!(r#"[{{"targets": ["{}"]}}]"#, a.addr())).unwrap();
    let config = format!(
        "{}\n[[scrape]]\njob = \"once\"\ntimeout = \"5s\"\n\
         [[scrape.file_sd_configs]]\nfiles = [{}]\n",
        agent_header(&prom.write_url()),
        toml_string(&file.display().to_string()),
    );
    Pushprobe::with_config(&config).once().await.assert_code(0);
    assert_eq!(a.hits(), 1);
    let things = prom
        .wait_for(r#"sd_thing{job="once"}"#, |r| r.len() == 1, DATA_TIMEOUT)
        .await;
    assert_eq!(things[0].labels["instance"], a.addr().to_string());
}

/// Polls `f` until it gives something (at most [`DATA_TIMEOUT`]).
async fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + DATA_TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The agent's `/metrics` lines of `family` (without its comments).
async fn metric_lines(listen: u16, family: &str) -> Vec<String> {
    let text = http_get_text(
        &http_client(),
        &format!("http://127.0.0.1:{listen}/metrics"),
    )
    .await
    .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .map(str::to_string)
        .collect()
}

/// A relabeled `instance` names a tcp probe's series; a blackbox exporter job's relabel
/// rules, copied as they are, probe `__param_target` (not the exporter address they set) and
/// name it `instance`; and a discovered probe a reload removes takes its self-metrics with
/// it: off `/metrics`, and ended on the wire with staleness markers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabeled_instances_and_the_self_metrics_of_a_removed_probe() {
    use common::rw_receiver::RwReceiver;
    let receiver = RwReceiver::start(|_, _| 200).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let listen = free_port();
    let header = agent_header(&receiver.write_url()).replacen(
        "[agent]\n",
        &format!("[agent]\nlisten = \"127.0.0.1:{listen}\"\n"),
        1,
    );
    let ports = format!(
        "[[probe]]\nname = \"ports\"\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[probe.static_configs]]\ntargets = [{a}]\n\
         [[probe.relabel_configs]]\ntarget_label = \"instance\"\nreplacement = \"edge-a\"\n",
        a = toml_string(&addr)
    );
    // Nothing listens on port 9: probing the exporter address would fail.
    let ssh = format!(
        "[[probe]]\nname = \"ssh\"\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         targets = [{a}]\n\
         [[probe.relabel_configs]]\nsource_labels = [\"__address__\"]\n\
         target_label = \"__param_target\"\n\
         [[probe.relabel_configs]]\nsource_labels = [\"__param_target\"]\n\
         target_label = \"instance\"\n\
         [[probe.relabel_configs]]\ntarget_label = \"__address__\"\nreplacement = \"127.0.0.1:9\"\n",
        a = toml_string(&addr)
    );
    let agent = Pushprobe::with_config(&format!("{header}\n{ports}\n{ssh}"));
    let mut run = agent.spawn_run(&[]);
    let success = |probe: &str| {
        receiver
            .accepted_samples()
            .into_iter()
            .rev()
            .find(|s| {
                s.label("__name__") == Some("probe_success") && s.label("probe") == Some(probe)
            })
            .map(|s| (s.label("instance").unwrap_or_default().to_string(), s.value))
    };
    let ports_success = wait_until("probe_success of ports", || success("ports")).await;
    assert_eq!(ports_success, ("edge-a".to_string(), 1.0));
    let ssh_success = wait_until("probe_success of ssh", || success("ssh")).await;
    assert_eq!(ssh_success, (addr.clone(), 1.0));
    let runs = metric_lines(listen, "pushprobe_probe_runs_total").await;
    assert!(
        runs.iter().any(|l| l.contains("probe=\"ports\"")),
        "{runs:?}"
    );

    // The reload removes "ports": its self-metrics go, "ssh"'s stay.
    agent.rewrite_config(&format!("{header}\n{ssh}"));
    run.signal("HUP");
    let deadline = std::time::Instant::now() + DATA_TIMEOUT;
    loop {
        let mut lines = metric_lines(listen, "pushprobe_probe_runs_total").await;
        lines.extend(metric_lines(listen, "pushprobe_probe_attempts_total").await);
        lines.extend(metric_lines(listen, "pushprobe_sd_discovered_targets").await);
        lines.extend(metric_lines(listen, "pushprobe_sd_refresh_failures_total").await);
        let gone = !lines
            .iter()
            .any(|l| l.contains("probe=\"ports\"") || l.contains("config=\"ports\""));
        if gone {
            assert!(
                lines.iter().any(|l| l.contains("probe=\"ssh\"")),
                "{lines:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the removed probe's self-metrics stay: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stale = |family: &str, label: &str| {
        receiver.accepted_samples().into_iter().any(|s| {
            s.label("__name__") == Some(family)
                && s.label(label) == Some("ports")
                && pushprobe::series::is_stale_nan(s.value)
        })
    };
    wait_until(
        "staleness markers of the removed probe's self-metrics",
        || {
            (stale("pushprobe_probe_runs_total", "probe")
                && stale("pushprobe_probe_attempts_total", "probe")
                && stale("pushprobe_sd_discovered_targets", "config"))
            .then_some(())
        },
    )
    .await;
    run.assert_running();
    run.terminate(Duration::from_secs(30)).await.assert_code(0);
}

/// `config check` says what each discovering probe and scrape job reads its targets from and
/// how many there are now after relabeling, reading target files but asking no HTTP or DNS
/// discovery; a broken file is named with its line and column. Table and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_shows_what_discovery_reads_now() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &good,
        r#"[{"targets": ["10.0.0.1:9100", "10.0.0.2:9100"], "labels": {"env": "prod"}}]"#,
    )
    .unwrap();
    std::fs::write(&bad, "[{\"targets\": [\"10.0.0.3:9100\"]\n").unwrap();
    let config = format!(
        "[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n\n\
         [[probe]]\nname = \"web\"\nkind = \"http\"\n\
         [[probe.static_configs]]\ntargets = [\"a.example:80\", \"b.example:80\", \"skip.example:80\"]\n\
         [[probe.relabel_configs]]\nsource_labels = [\"__address__\"]\nregex = \"skip.*\"\n\
         action = \"drop\"\n\
         [[probe.http_sd_configs]]\nurl = \"http://127.0.0.1:9/sd\"\n\n\
         [[scrape]]\njob = \"node\"\n\
         [[scrape.file_sd_configs]]\nfiles = [{}]\n\
         [[scrape.dns_sd_configs]]\nnames = [\"_node._tcp.example.com\"]\n\n\
         [[scrape]]\njob = \"plain\"\ntargets = [\"127.0.0.1:9\"]\n",
        toml_string(&dir.path().join("*.json").display().to_string()),
    );
    let agent = Pushprobe::with_config(&config);
    let out = agent.config_check().await;
    out.assert_code(0);
    let table = out.stdout;
    for line in [
        "# probe \"web\": 2 targets after relabeling + those resolved at run time, 1 dropped by relabeling",
        "#   static_configs: 3 listed",
        "#   http_sd_configs http://127.0.0.1:9/sd: resolved at run time",
        "# scrape \"node\": 2 targets after relabeling + those resolved at run time, 0 dropped by relabeling",
        "#   dns_sd_configs _node._tcp.example.com (SRV): resolved at run time",
    ] {
        assert!(table.lines().any(|l| l == line), "{line:?} missing:\n{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("#   file_sd_configs ") && l.ends_with("*.json: 2 listed")),
        "{table}"
    );
    // The file, then its line and column.
    let problem = format!("#   problem: {}:2:", bad.display());
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&problem) && l.contains("EOF")),
        "{problem:?} missing:\n{table}"
    );
    assert!(
        !table.contains("# scrape \"plain\""),
        "a job with targets only discovers nothing"
    );
    // The output is still a configuration file.
    toml::from_str::<toml::Value>(&table).unwrap();

    let config_path = agent.config_path().to_string_lossy().into_owned();
    let out = agent
        .run_to_end(
            "config-check-json",
            &[
                "config",
                "check",
                "--config",
                &config_path,
                "--output",
                "json",
            ],
            Duration::from_secs(60),
        )
        .await;
    out.assert_code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["configuration"]["probe"][0]["name"], "web");
    let jobs = doc["discovery"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(
        (
            &jobs[0]["section"],
            &jobs[0]["name"],
            &jobs[0]["targets"],
            &jobs[0]["dropped"]
        ),
        (&"probe".into(), &"web".into(), &2.into(), &1.into())
    );
    assert_eq!(jobs[0]["sources"][1]["targets"], serde_json::Value::Null);
    assert_eq!(jobs[1]["name"], "node");
    assert_eq!(jobs[1]["more_at_run_time"], true);
    assert!(
        jobs[1]["problems"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:2:", bad.display())),
        "{jobs:?}"
    );
}

/// A readable PEM file of CA certificates on this machine.
fn ca_file() -> String {
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file())
    .expect("a system CA bundle")
    .to_string()
}

/// The multi-target probe examples of the discovery and blackbox migration pages are valid
/// as written, and each static target is probed under its own address as `instance`: the
/// blackbox exporter's relabel rules copied as they are included.
#[test]
fn the_documented_multi_target_probes_work_as_written() {
    use pushprobe::config::ProbeSettings;
    use pushprobe::discovery::build_targets;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for page in ["docs/discovery.md", "docs/blackbox-migration.md"] {
        let text = std::fs::read_to_string(root.join(page)).unwrap();
        let blocks = text
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next());
        for (i, block) in blocks.enumerate() {
            let discovers = ["targets", "static_configs", "sd_configs"]
                .iter()
                .any(|k| block.contains(k));
            if !block.contains("[[probe]]") || !discovers {
                continue;
            }
            let path = dir.path().join(format!("{i}.toml"));
            // Validation reads a CA file, and the page's is the reader's: this machine's
            // CA bundle stands in for it.
            let block = block.replace("/etc/ssl/internal-ca.pem", &ca_file());
            std::fs::write(
                &path,
                format!("[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n\n{block}"),
            )
            .unwrap();
            let settings = pushprobe::config::load(&path, true)
                .and_then(|f| f.validate(page))
                .unwrap_or_else(|e| panic!("{page} block {i}: {e:?}\n{block}"));
            for d in &settings.probe_discovery {
                let built = build_targets(
                    &d.discovery.static_groups,
                    &d.discovery.relabel,
                    &d.defaults,
                );
                assert!(built.errors.is_empty(), "{page} block {i}: {built:?}");
                for t in &built.targets {
                    let probe = d.probe.with_target(t).unwrap();
                    let (aimed_at, instance) = match &probe {
                        ProbeSettings::Tcp(p) => (p.target.clone(), p.labels.clone()),
                        ProbeSettings::Grpc(p) => (p.target_text.clone(), p.labels.clone()),
                        ProbeSettings::Icmp(p) => (p.target.clone(), p.labels.clone()),
                        ProbeSettings::Dns(p) => match &p.server {
                            pushprobe::config::DnsServer::Given { host, .. } => {
                                (host.clone(), p.labels.clone())
                            }
                            other => panic!("{other:?}"),
                        },
                        other => panic!("{page} block {i}: {other:?}"),
                    };
                    let original = t.labels.get("instance").unwrap();
                    assert!(
                        original.starts_with(&aimed_at),
                        "{page} block {i}: aims at {aimed_at}, target {original}"
                    );
                    // The series' instance: the kind's own (the address) or the same one
                    // relabeling gave.
                    let named = instance.iter().find(|(n, _)| n == "instance");
                    assert!(
                        named.is_none_or(|(_, v)| v == original),
                        "{page} block {i}: {named:?} for {original}"
                    );
                    checked += 1;
                }
            }
        }
    }
    // ssh (twice), dns, icmp and grpc static targets, two each.
    assert!(checked >= 10, "only {checked} documented targets checked");
}

/// A reload that removes scrape jobs, one with static targets and one discovering them, ends
/// their self-metrics: off `/metrics`, and ended on the wire with staleness markers; the kept
/// job's stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_metrics_of_removed_scrape_jobs_end_with_them() {
    use common::rw_receiver::RwReceiver;
    let receiver = RwReceiver::start(|_, _| 200).await;
    let a = TargetServer::start_with(exporter_body("a")).await;
    let b = TargetServer::start_with(exporter_body("b")).await;
    let c = TargetServer::start_with(exporter_body("c")).await;
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.json");
    std::fs::write(&targets, format!(r#"[{{"targets": ["{}"]}}]"#, c.addr())).unwrap();
    let listen = free_port();
    let header = agent_header(&receiver.write_url()).replacen(
        "[agent]\n",
        &format!("[agent]\nlisten = \"127.0.0.1:{listen}\"\n"),
        1,
    );
    let kept = format!(
        "[[scrape]]\njob = \"kept\"\ninterval = \"1s\"\ntimeout = \"1s\"\ntargets = [{}]\n",
        toml_string(&a.addr().to_string())
    );
    // Dropping the name rejects every scraped sample, so the job has rejected-sample series.
    let gone = format!(
        "[[scrape]]\njob = \"gone\"\ninterval = \"1s\"\ntimeout = \"1s\"\ntargets = [{}]\n\
         [[scrape.metric_relabel_configs]]\nregex = \"__name__\"\naction = \"labeldrop\"\n",
        toml_string(&b.addr().to_string())
    );
    let gone_sd = format!(
        "[[scrape]]\njob = \"gonesd\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[scrape.file_sd_configs]]\nfiles = [{}]\nrefresh_interval = \"1s\"\n",
        toml_string(&targets.display().to_string())
    );
    let agent = Pushprobe::with_config(&format!("{header}\n{kept}\n{gone}\n{gone_sd}"));
    let mut run = agent.spawn_run(&[]);
    let families = [
        "pushprobe_scrape_failures_total",
        "pushprobe_scrape_samples_rejected_total",
        "pushprobe_sd_discovered_targets",
        "pushprobe_sd_refresh_failures_total",
    ];
    let self_lines = || async {
        let mut lines = Vec::new();
        for family in families {
            lines.extend(metric_lines(listen, family).await);
        }
        lines
    };
    let has = |lines: &[String], family: &str, label: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
    };
    let deadline = std::time::Instant::now() + DATA_TIMEOUT;
    loop {
        let lines = self_lines().await;
        if has(&lines, families[1], "scrape_job=\"gone\"")
            && has(&lines, families[0], "scrape_job=\"gonesd\"")
            && has(&lines, families[2], "config=\"gonesd\"")
            && has(&lines, families[0], "scrape_job=\"kept\"")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the jobs' self-metrics never appear: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The reload removes "gone" and "gonesd": their self-metrics go, "kept"'s stay.
    agent.rewrite_config(&format!("{header}\n{kept}"));
    run.signal("HUP");
    let ended = |l: &String| {
        [
            "scrape_job=\"gone\"",
            "scrape_job=\"gonesd\"",
            "config=\"gonesd\"",
        ]
        .iter()
        .any(|label| l.contains(label))
    };
    let deadline = std::time::Instant::now() + DATA_TIMEOUT;
    loop {
        let lines = self_lines().await;
        if !lines.iter().any(ended) {
            assert!(has(&lines, families[0], "scrape_job=\"kept\""), "{lines:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the removed jobs' self-metrics stay: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stale = |family: &str, label: &str, value: &str| {
        receiver.accepted_samples().into_iter().any(|s| {
            s.label("__name__") == Some(family)
                && s.label(label) == Some(value)
                && pushprobe::series::is_stale_nan(s.value)
        })
    };
    wait_until(
        "staleness markers of the removed jobs' self-metrics",
        || {
            (stale(families[0], "scrape_job", "gone")
                && stale(families[1], "scrape_job", "gone")
                && stale(families[0], "scrape_job", "gonesd")
                && stale(families[2], "config", "gonesd")
                && stale(families[3], "config", "gonesd"))
            .then_some(())
        },
    )
    .await;
    assert!(
        !stale(families[0], "scrape_job", "kept"),
        "the kept job's self-metrics are not ended"
    );
    run.assert_running();
    run.terminate(Duration::from_secs(30)).await.assert_code(0);
}
