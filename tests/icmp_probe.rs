//! The ICMP probe against loopback (127.0.0.1 and ::1): raw and unprivileged sockets, the
//! series checked against what a real blackbox exporter reports for the same targets, and
//! delivery of `probe_success` to a real Prometheus. Assertions are on outcomes and series,
//! never on elapsed time.
//!
//! Raw sockets need CAP_NET_RAW: these tests run as root here and in CI. Unprivileged ICMP
//! sockets need the process' group in `net.ipv4.ping_group_range`, which defaults to none;
//! `.ci/run` widens it before the tests, and under `CI` a range that still excludes the
//! group fails the test rather than skipping it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::*;
use pushprobe::config::{IcmpProbeSettings, IcmpSocket, IpProtocol};
use pushprobe::probe::icmp::{ping_group_range_allows_this_process, IcmpProbe};
use pushprobe::probe::{Detail, ProbeReport};
use pushprobe::series::{MetricType, Registry};

fn settings(name: &str, target: &str, socket: IcmpSocket) -> IcmpProbeSettings {
    IcmpProbeSettings {
        name: name.into(),
        target: target.into(),
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
        preferred_ip_protocol: IpProtocol::Ip6,
        ip_protocol_fallback: true,
        source_ip_address: None,
        payload_size: 56,
        dont_fragment: false,
        ttl: None,
        socket,
        labels: vec![("team".into(), "net".into())],
    }
}

fn labels<'a>(s: &'a IcmpProbeSettings, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![
        ("probe", s.name.as_str()),
        ("instance", s.target.as_str()),
        ("team", "net"),
    ];
    l.extend_from_slice(extra);
    l
}

fn gauge(r: &Registry, s: &IcmpProbeSettings, name: &str) -> Option<f64> {
    r.value(name, &labels(s, &[]))
}

fn detail<'a>(report: &'a ProbeReport, key: &str) -> Option<&'a Detail> {
    report
        .details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

async fn run(s: &IcmpProbeSettings) -> (ProbeReport, Registry) {
    let mut registry = Registry::new();
    let report = IcmpProbe::new(s.clone()).run(&mut registry).await;
    (report, registry)
}

/// Whether this process may open raw ICMP sockets; outside CI, a notice and `false` when not.
fn raw_allowed() -> bool {
    let ok = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::ICMPV4),
    )
    .is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "raw ICMP sockets need CAP_NET_RAW: CI runs the tests as root"
        );
        eprintln!("SKIPPED: no CAP_NET_RAW for raw ICMP sockets");
    }
    ok
}

/// Whether `net.ipv4.ping_group_range` lets this process open unprivileged ICMP sockets;
/// under CI a refusal is a failure, elsewhere a notice and `false`.
fn unprivileged_allowed() -> bool {
    if ping_group_range_allows_this_process() == Some(true) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "net.ipv4.ping_group_range does not include this process' group: .ci/run sets it with \
         sysctl -w net.ipv4.ping_group_range=\"0 2147483647\" before the tests"
    );
    eprintln!(
        "SKIPPED: net.ipv4.ping_group_range excludes this process' group; \
         sysctl -w net.ipv4.ping_group_range=\"0 2147483647\" to run the unprivileged cases"
    );
    false
}

/// Checks one successful run's report and series.
fn assert_reply(report: &ProbeReport, r: &Registry, s: &IcmpProbeSettings, socket: &str) {
    assert!(report.success, "{report:?}");
    assert_eq!(report.reason, None);
    assert_eq!(
        detail(report, "socket").and_then(Detail::as_text),
        Some(socket)
    );
    assert_eq!(gauge(r, s, "probe_success"), Some(1.0));
    let v6 = s.target.contains(':');
    assert_eq!(
        gauge(r, s, "probe_ip_protocol"),
        Some(if v6 { 6.0 } else { 4.0 })
    );
    assert!(gauge(r, s, "probe_duration_seconds").is_some());
    assert!(gauge(r, s, "probe_dns_lookup_time_seconds").is_some());
    assert!(gauge(r, s, "probe_ip_addr_hash").is_some_and(|h| h > 0.0));
    for phase in ["resolve", "setup", "rtt"] {
        assert!(
            r.value(
                "probe_icmp_duration_seconds",
                &labels(s, &[("phase", phase)])
            )
            .is_some(),
            "phase {phase} missing"
        );
    }
    // The reply's TTL comes with the IPv4 header only a raw IPv4 socket delivers.
    let hop_limit = gauge(r, s, "probe_icmp_reply_hop_limit");
    if socket == "raw" && !v6 {
        assert!(hop_limit.is_some_and(|h| h > 0.0), "{hop_limit:?}");
        assert!(
            report.status.starts_with("reply (raw, ttl "),
            "{}",
            report.status
        );
    } else {
        assert_eq!(hop_limit, None);
        assert_eq!(report.status, format!("reply ({socket})"));
    }
    for f in r.families() {
        assert!(!f.meta.help.is_empty(), "{} has no help", f.meta.name);
        assert_eq!(f.meta.kind, MetricType::Gauge, "{}", f.meta.name);
    }
}

#[tokio::test]
async fn raw_sockets_get_replies_from_ipv4_and_ipv6_loopback() {
    if !raw_allowed() {
        return;
    }
    for target in ["127.0.0.1", "::1"] {
        let s = settings("raw", target, IcmpSocket::Raw);
        let (report, r) = run(&s).await;
        assert_reply(&report, &r, &s, "raw");
    }
}

#[tokio::test]
async fn unprivileged_sockets_get_replies_from_ipv4_and_ipv6_loopback() {
    if !unprivileged_allowed() {
        return;
    }
    for target in ["127.0.0.1", "::1"] {
        let s = settings("unprivileged", target, IcmpSocket::Unprivileged);
        let (report, r) = run(&s).await;
        assert_reply(&report, &r, &s, "unprivileged");
        // The kernel writes the bound port into the identifier; it is random per run.
        assert!(matches!(
            detail(&report, "identifier"),
            Some(Detail::Count(_))
        ));
    }
}

/// `auto` takes an unprivileged socket when the range allows one.
#[tokio::test]
async fn auto_prefers_an_unprivileged_socket() {
    if !unprivileged_allowed() {
        return;
    }
    let s = settings("auto", "127.0.0.1", IcmpSocket::Auto);
    let (report, r) = run(&s).await;
    assert_reply(&report, &r, &s, "unprivileged");
}

/// Don't Fragment needs the IPv4 header written by pushprobe, on a raw socket; the request's
/// TTL is the configured one, and the loopback reply still comes back.
#[tokio::test]
async fn dont_fragment_and_ttl_go_through_a_raw_socket() {
    if !raw_allowed() {
        return;
    }
    let mut s = settings("df", "127.0.0.1", IcmpSocket::Auto);
    s.dont_fragment = true;
    s.ttl = Some(5);
    s.payload_size = 1000;
    let (report, r) = run(&s).await;
    assert_reply(&report, &r, &s, "raw");
}

/// A name resolves with the preferred family first; without fallback, a family it lacks
/// fails the run at the resolve phase, before any socket is opened.
#[tokio::test]
async fn ip_protocol_preference_and_fallback() {
    if !raw_allowed() {
        return;
    }
    let mut s = settings("pref", "127.0.0.1", IcmpSocket::Raw);
    s.preferred_ip_protocol = IpProtocol::Ip6;
    s.ip_protocol_fallback = true;
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(4.0));

    s.ip_protocol_fallback = false;
    let (report, r) = run(&s).await;
    assert!(!report.success);
    assert_eq!(report.status, "resolve");
    assert_eq!(gauge(&r, &s, "probe_success"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_icmp_reply_hop_limit"), None);
}

// ---------------------------------------------------------------------------------------
// A target that does not answer

/// A network namespace of its own, whose kernel ignores echo requests and keeps the
/// default `ping_group_range` ("1 0"): a loopback target that never answers, and a kernel
/// that refuses unprivileged ICMP sockets, without touching the host's settings.
/// `pushprobe check` runs inside it.
#[test]
fn a_silent_target_times_out_and_a_refused_socket_names_both_ways_out() {
    let (Some(unshare), Some(_), Some(_)) = (
        require_binary("unshare"),
        require_binary("ip"),
        require_binary("sysctl"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pushprobe.toml");
    let probe = |name: &str, target: &str, socket: &str| {
        format!(
            "[[probe]]\nname = \"{name}\"\nkind = \"icmp\"\ntarget = \"{target}\"\n\
             socket = \"{socket}\"\ninterval = \"5s\"\ntimeout = \"1s\"\n"
        )
    };
    std::fs::write(
        &config,
        [
            "[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n".to_string(),
            probe("silent-v4", "127.0.0.1", "raw"),
            probe("silent-v6", "::1", "raw"),
            probe("auto", "127.0.0.1", "auto"),
            probe("refused", "127.0.0.1", "unprivileged"),
        ]
        .concat(),
    )
    .unwrap();
    let script = format!(
        "ip link set lo up && \
         sysctl -q -w net.ipv4.icmp_echo_ignore_all=1 net.ipv6.icmp.echo_ignore_all=1 && \
         sysctl -q -w net.ipv4.ping_group_range='1 0' && \
         exec '{}' -c '{}' check --output json",
        env!("CARGO_BIN_EXE_pushprobe"),
        config.display()
    );
    let out = Command::new(unshare)
        .args(["--net", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.stdout.is_empty() {
        // No namespace (no CAP_SYS_ADMIN, or a sandbox that forbids it).
        assert!(
            std::env::var_os("CI").is_none(),
            "unshare --net failed under CI: {stderr}"
        );
        eprintln!("SKIPPED: cannot make a network namespace: {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probe = |name: &str| {
        doc["probes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {doc}"))
            .clone()
    };
    for name in ["silent-v4", "silent-v6"] {
        let p = probe(name);
        assert_eq!(p["success"], false, "{p}");
        assert_eq!(p["status"], "timeout", "{p}");
        assert_eq!(
            p["reason"], "timed out after 1s waiting for the echo reply",
            "{p}"
        );
        assert_eq!(p["details"]["socket"], "raw", "{p}");
        assert!(p["details"]["rtt_seconds"].is_null(), "{p}");
    }
    // auto: the unprivileged socket is refused, so a raw one is used.
    let auto = probe("auto");
    assert_eq!(auto["status"], "timeout", "{auto}");
    assert_eq!(auto["details"]["socket"], "raw", "{auto}");
    let refused = probe("refused");
    assert_eq!(refused["status"], "socket", "{refused}");
    let reason = refused["reason"].as_str().unwrap();
    for part in [
        "net.ipv4.ping_group_range is \"1\t0\"",
        "does not include the process' group",
        "CAP_NET_RAW",
        "socket = \"raw\"",
    ] {
        assert!(reason.contains(part), "{part:?} missing: {reason}");
    }
}

// ---------------------------------------------------------------------------------------
// Against the blackbox exporter

/// Reads the unlabelled-or-`phase`-labelled samples of a `/probe` answer:
/// `name{labels}` → value.
fn parse_probe_page(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The same view of pushprobe's registry: the probe's own labels left out.
fn registry_page(r: &Registry) -> BTreeMap<String, f64> {
    r.samples_at(0)
        .into_iter()
        .map(|s| {
            let name = s.labels.metric_name().to_string();
            let phase = s.labels.get("phase").map(str::to_string);
            let key = match phase {
                Some(p) => format!("{name}{{phase=\"{p}\"}}"),
                None => name,
            };
            (key, s.value)
        })
        .collect()
}

/// The same targets probed by the blackbox exporter 0.28 and by pushprobe give the same
/// series: names, phases, success, protocol and address hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_match_the_blackbox_exporter() {
    let Some(bin) = require_tool("prometheus-blackbox-exporter-0.28.0") else {
        return;
    };
    if !raw_allowed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("blackbox.yml");
    std::fs::write(
        &config,
        "modules:\n  icmp4:\n    prober: icmp\n    timeout: 5s\n    icmp:\n      \
         preferred_ip_protocol: ip4\n  icmp6:\n    prober: icmp\n    timeout: 5s\n",
    )
    .unwrap();
    let client = http_client();
    let mut started = None;
    for _ in 0..3 {
        let port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut guard = ChildGuard::spawn("blackbox", cmd, dir.path()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let url = format!("http://127.0.0.1:{port}/-/healthy");
            if http_get_text(&client, &url).await.is_ok() {
                started = Some((guard, port));
                break;
            }
            if guard.try_wait().is_some() || std::time::Instant::now() > deadline {
                guard.dump_logs();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if started.is_some() {
            break;
        }
    }
    let (_guard, port) = started.expect("the blackbox exporter did not start");

    for (target, module) in [("127.0.0.1", "icmp4"), ("::1", "icmp6")] {
        let url = format!("http://127.0.0.1:{port}/probe?module={module}&target={target}");
        let theirs = parse_probe_page(&http_get_text(&client, &url).await.unwrap());
        let s = settings("parity", target, IcmpSocket::Raw);
        let (report, r) = run(&s).await;
        assert!(report.success, "{report:?}");
        let ours = registry_page(&r);

        let names = |m: &BTreeMap<String, f64>| m.keys().cloned().collect::<BTreeSet<_>>();
        let mut expected = names(&theirs);
        if target == "::1" {
            // The hop limit of ICMPv6 replies is not read (see docs/metrics.md).
            expected.remove("probe_icmp_reply_hop_limit");
        }
        assert_eq!(names(&ours), expected, "{target}: {ours:?} vs {theirs:?}");
        for same in ["probe_success", "probe_ip_protocol", "probe_ip_addr_hash"] {
            assert_eq!(ours.get(same), theirs.get(same), "{target}: {same}");
        }
        if target == "127.0.0.1" {
            let key = "probe_icmp_reply_hop_limit";
            assert_eq!(ours.get(key), theirs.get(key), "{target}: {key}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// End to end

/// `pushprobe once` with an ICMP probe: a real Prometheus stores its `probe_success`, with
/// the probe's series beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_delivers_the_icmp_probe_to_prometheus() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    if !raw_allowed() {
        return;
    }
    let config = format!(
        "[agent]\nexternal_labels = {{ cluster = \"edge-1\" }}\n\
         [[remote_write]]\nurl = {}\nbatch_send_deadline = \"1s\"\n\
         [[probe]]\nname = \"loopback\"\nkind = \"icmp\"\ntarget = \"127.0.0.1\"\n\
         socket = \"raw\"\ntimeout = \"5s\"\n",
        toml_string(&prom.write_url())
    );
    let agent = Pushprobe::with_config(&config);
    agent.once().await.assert_code(0);

    let success = prom
        .wait_for_any(r#"probe_success{probe="loopback"}"#)
        .await;
    let s = only(
        &success,
        &[("probe", "loopback"), ("instance", "127.0.0.1")],
    );
    assert_eq!(s.value, 1.0);
    assert_eq!(s.labels["cluster"], "edge-1");
    let rtt = prom
        .wait_for_any(r#"probe_icmp_duration_seconds{probe="loopback",phase="rtt"}"#)
        .await;
    assert_eq!(rtt.len(), 1, "{rtt:?}");
    let hash = prom
        .wait_for_any(r#"probe_ip_addr_hash{probe="loopback"}"#)
        .await;
    // FNV-1a of 127.0.0.1, as the blackbox exporter reports it.
    assert_eq!(only(&hash, &[]).value, 3_668_918_509.0);
    let ttl = prom
        .wait_for_any(r#"probe_icmp_reply_hop_limit{probe="loopback"}"#)
        .await;
    assert!(only(&ttl, &[]).value > 0.0);
}

// ---------------------------------------------------------------------------------------
// The example

/// examples/icmp-probes.toml passes `config check` and its probes run against loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_icmp_example_validates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/icmp-probes.toml");
    let example = std::fs::read_to_string(path).unwrap();
    for kind in [
        "kind = \"icmp\"",
        "socket = \"raw\"",
        "dont_fragment = true",
    ] {
        assert!(example.contains(kind), "the example shows {kind}");
    }
    let agent = Pushprobe::with_config(&example);
    let out = agent.config_check().await;
    out.assert_code(0);
}
