//! Fleet identity against a real VictoriaMetrics: the agent's own series carry `job` and
//! `instance`, probe and AI series carry `job`, and an HA pair deduplicated by
//! `-dedup.minScrapeInterval` leaves one series without gap or duplicate when one agent dies.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// The labels of the one exported series matching `selector`, without `__name__`.
async fn labels_of(vm: &VictoriaMetrics, selector: &str) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let series = vm.export(selector).await;
        if series.len() == 1 {
            let mut labels = series[0].labels.clone();
            labels.remove("__name__");
            return labels;
        }
        assert!(
            series.len() < 2,
            "{selector}: more than one series: {series:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "{selector}: nothing stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// This host's name, as the agent reads it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("host name")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_probe_and_ai_series_carry_job_and_instance_in_a_real_receiver() {
    let Some(vm) = VictoriaMetrics::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let api = common::openai::serve_keyless().await;
    let probes = format!(
        "[[probe]]\nname = \"web\"\nkind = \"http\"\nurl = {url}\ntimeout = \"2s\"\n\n\
         [[probe]]\nname = \"pay\"\nkind = \"http\"\nurl = {url}\ntimeout = \"2s\"\n\
         job = \"payments\"\n\n\
         [[probe]]\nname = \"ai\"\nkind = \"openai\"\nbase_url = \"http://{api}/v1\"\n\
         model = \"deepseek-v3.2\"\nchecks = [\"models\"]\njob = \"llm\"\n\n\
         [[probe]]\nname = \"ai-default\"\nkind = \"openai\"\nbase_url = \"http://{api}/v1\"\n\
         model = \"deepseek-v3.2\"\nchecks = [\"models\"]\n",
        url = toml_string(&target.url("/health")),
    );
    let config = |agent: &str| {
        format!(
            "[agent]\n{agent}\n\n[[remote_write]]\nurl = {}\n\n{probes}",
            toml_string(&vm.write_url())
        )
    };

    // `[agent] instance` and `job` set.
    let named = Pushprobe::with_config(&config(
        "instance = \"edge-7\"\njob = \"edge-probes\"\nexternal_labels = { site = \"one\" }",
    ));
    named.once().await.assert_code(0);
    let info = labels_of(&vm, r#"pushprobe_build_info{site="one"}"#).await;
    assert_eq!(
        info,
        map(&[
            ("job", "pushprobe"),
            ("instance", "edge-7"),
            ("site", "one"),
            ("version", env!("CARGO_PKG_VERSION")),
        ])
    );
    // Every self-metric, not only the heartbeat.
    let runs = labels_of(
        &vm,
        r#"pushprobe_probe_runs_total{site="one",probe="web",outcome="success"}"#,
    )
    .await;
    assert_eq!(
        (runs["job"].as_str(), runs["instance"].as_str()),
        ("pushprobe", "edge-7")
    );
    let web = labels_of(&vm, r#"probe_success{site="one",probe="web"}"#).await;
    assert_eq!(web["job"], "edge-probes");
    assert_eq!(
        web["instance"],
        target.url("/health"),
        "the target, as before"
    );
    let pay = labels_of(&vm, r#"probe_success{site="one",probe="pay"}"#).await;
    assert_eq!(pay["job"], "payments");
    let ai = labels_of(&vm, r#"pushprobe_ai_up{site="one",probe="ai"}"#).await;
    assert_eq!(ai["job"], "llm");
    let ai = labels_of(&vm, r#"pushprobe_ai_up{site="one",probe="ai-default"}"#).await;
    assert_eq!(ai["job"], "edge-probes");

    // Nothing set: the host name, and job "pushprobe" on probes too.
    let plain = Pushprobe::with_config(&config("external_labels = { site = \"two\" }"));
    plain.once().await.assert_code(0);
    let info = labels_of(&vm, r#"pushprobe_build_info{site="two"}"#).await;
    assert_eq!(info["instance"], host_name());
    assert_eq!(info["job"], "pushprobe");
    let web = labels_of(&vm, r#"probe_success{site="two",probe="web"}"#).await;
    assert_eq!(web["job"], "pushprobe");

    // External labels of the same names win over the agent's defaults, not over a probe's own.
    let ext = Pushprobe::with_config(&config(
        "instance = \"ignored\"\nexternal_labels = { site = \"three\", instance = \"ext-host\", job = \"ext-job\" }",
    ));
    ext.once().await.assert_code(0);
    let info = labels_of(&vm, r#"pushprobe_build_info{site="three"}"#).await;
    assert_eq!(
        (info["job"].as_str(), info["instance"].as_str()),
        ("ext-job", "ext-host")
    );
    let web = labels_of(&vm, r#"probe_success{site="three",probe="web"}"#).await;
    assert_eq!(web["job"], "ext-job");
    assert_eq!(web["instance"], target.url("/health"));
    let pay = labels_of(&vm, r#"probe_success{site="three",probe="pay"}"#).await;
    assert_eq!(pay["job"], "payments");
}

/// Interval of the HA pair's probe, and VictoriaMetrics' dedup interval.
const INTERVAL_MS: i64 = 2_000;

/// A probe name whose wall-clock phase (from its name and the external labels, as the agent
/// computes it) sits well inside a dedup interval: two agents a few milliseconds apart then
/// never straddle a boundary of VictoriaMetrics' dedup intervals.
fn probe_name_mid_interval(external: &pushprobe::series::Labels) -> String {
    let interval = Duration::from_millis(INTERVAL_MS as u64);
    (0..100)
        .map(|i| format!("web-{i}"))
        .find(|name| {
            let phase = pushprobe::clock::spread_offset(&format!("{name}{external}"), interval);
            let ms = phase.as_millis() as i64;
            (INTERVAL_MS / 4..3 * INTERVAL_MS / 4).contains(&ms)
        })
        .expect("some name lands mid-interval")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_pair_deduplicated_by_victoriametrics_survives_one_agent_dying() {
    let Some(vm) = VictoriaMetrics::start_with(&["-dedup.minScrapeInterval=2s"]).await else {
        return;
    };
    let target = TargetServer::start().await;
    let external =
        pushprobe::series::Labels::from_pairs([("site", "ha")]).expect("external labels");
    let probe = probe_name_mid_interval(&external);
    // The same configuration on both, but for the instance of their own series: the same
    // external labels (no replica label), the same probe and interval.
    let config = |instance: &str| {
        format!(
            "[agent]\ninstance = \"{instance}\"\nexternal_labels = {{ site = \"ha\" }}\n\
             self_metrics_interval = \"2s\"\n\n\
             [[remote_write]]\nurl = {}\nbatch_send_deadline = \"500ms\"\n\n\
             [[probe]]\nname = \"{probe}\"\nkind = \"http\"\nurl = {}\ninterval = \"2s\"\n\
             timeout = \"1s\"\n",
            toml_string(&vm.write_url()),
            toml_string(&target.url("/health")),
        )
    };
    let a = Pushprobe::with_config(&config("agent-a"));
    let b = Pushprobe::with_config(&config("agent-b"));
    let mut run_a = a.spawn_run(&[]);
    let run_b = b.spawn_run(&[]);

    tokio::time::sleep(Duration::from_secs(10)).await;
    let killed_ms = now_ms();
    run_b.kill();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Restart half an interval out of step with the survivor's start: counted from its own
    // start, the restarted agent would then probe half an interval after the other.
    let since_a = (now_ms() - run_a.started_ms).rem_euclid(INTERVAL_MS);
    let wait = (INTERVAL_MS / 2 - since_a).rem_euclid(INTERVAL_MS);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    let restarted_ms = now_ms();
    let mut run_b = b.spawn_run_as("run-again", &[]);
    tokio::time::sleep(Duration::from_secs(12)).await;
    run_a.assert_running();
    run_b.assert_running();
    let end_ms = now_ms();
    run_a
        .terminate(Duration::from_secs(30))
        .await
        .assert_code(0);
    run_b
        .terminate(Duration::from_secs(30))
        .await
        .assert_code(0);

    // Both agents really wrote the probe's series, before and after the outage: their own
    // (distinct) series say so.
    for (instance, what) in [
        ("agent-a", "the survivor"),
        ("agent-b", "the restarted one"),
    ] {
        let runs = vm
            .export(&format!(
                r#"pushprobe_probe_runs_total{{instance="{instance}",probe="{probe}",outcome="success"}}"#
            ))
            .await;
        assert_eq!(runs.len(), 1, "{what}: {runs:?}");
        let last = runs[0].samples.last().expect("samples");
        assert!(last.1 >= 3.0, "{what} ran the probe: {runs:?}");
        assert!(last.0 >= restarted_ms, "{what} reported after the restart");
    }

    // The restarted agent probes in step with the survivor: the target sees the two
    // requests of each run together, not half an interval apart.
    let hits = target.hit_times_ms();
    let settled: Vec<i64> = hits
        .iter()
        .copied()
        .filter(|t| (restarted_ms + 2 * INTERVAL_MS..end_ms - INTERVAL_MS).contains(t))
        .collect();
    assert!(settled.len() >= 6, "both agents probed: {hits:?}");
    for t in &settled {
        // Itself, and the other agent's request of the same run (possibly the same ms).
        let together = hits
            .iter()
            .filter(|u| (*u - t).abs() < INTERVAL_MS / 5)
            .count();
        assert!(
            together >= 2,
            "the request at {t} has no partner from the other agent: {settled:?}"
        );
    }

    // One series, as if one agent had probed all along.
    let stored = vm
        .export(&format!(r#"probe_success{{probe="{probe}"}}"#))
        .await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let stamps: Vec<i64> = stored[0].samples.iter().map(|s| s.0).collect();
    assert!(
        stamps.first().is_some_and(|t| *t < killed_ms)
            && stamps.last().is_some_and(|t| *t > restarted_ms),
        "the series spans the outage: {stamps:?} (killed {killed_ms}, restarted {restarted_ms})"
    );
    for pair in stamps.windows(2) {
        let gap = pair[1] - pair[0];
        // No gap: at most one run missing (the killed agent's last batch may not have been
        // sent, the survivor's first after the kill still is).
        assert!(
            gap <= 2 * INTERVAL_MS + INTERVAL_MS / 4,
            "a gap of {gap} ms at {}: {stamps:?}",
            pair[0]
        );
        // No duplicate: the two agents' samples of one run are milliseconds apart, and
        // deduplication keeps one. Consecutive runs are an interval apart, give or take
        // scheduling jitter on a loaded machine.
        assert!(
            gap >= INTERVAL_MS / 2,
            "two samples {gap} ms apart at {}: {stamps:?}",
            pair[0]
        );
    }
    assert!(
        stamps.last().is_some_and(|t| end_ms - t < 4 * INTERVAL_MS),
        "samples until the end: {stamps:?}"
    );
}
