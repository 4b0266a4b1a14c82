//! DNS service discovery against Debian's real `dnsmasq`, and discovered targets for the
//! tcp and icmp probe kinds, end to end into a real Prometheus: SRV records pointing at local
//! exporters become scrape targets, A records take the configured port, changed records
//! (a restarted dnsmasq, a re-read hosts file) change the targets, and a stopped dnsmasq
//! keeps the last good set while the failures are counted.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::target::{Reply, TargetServer};
use common::*;
use pushprobe::dns::{Client, RecordType, Transport};

/// A dnsmasq on a fixed port, serving `srv` records (`name,target,port`) and a hosts file.
struct Dnsmasq {
    process: ChildGuard,
    addr: SocketAddr,
}

impl Dnsmasq {
    async fn start(dir: &Path, port: u16, hosts: &Path, srv: &[String]) -> Option<Dnsmasq> {
        let bin = require_binary("dnsmasq")?;
        let mut cmd = Command::new(bin);
        cmd.arg("--conf-file=/dev/null")
            .arg(format!("--port={port}"))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg("--local=/sd.test/")
            .arg("--keep-in-foreground")
            .arg("--log-facility=-")
            .arg("--pid-file=");
        for s in srv {
            cmd.arg(format!("--srv-host={s}"));
        }
        // As root, dnsmasq would drop to its own user, who cannot read the private temp dir.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--user=root");
        }
        let process = ChildGuard::spawn("dnsmasq", cmd, dir).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let client = Client::new(addr, Transport::Udp).with_timeout(Duration::from_millis(300));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while client.query("sd.test", RecordType::A).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "dnsmasq did not answer on {addr}:\n{}",
                process.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(Dnsmasq { process, addr })
    }
}

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

fn label_values(results: &[QueryResult], name: &str) -> Vec<String> {
    let mut out: Vec<String> = results
        .iter()
        .map(|r| r.labels.get(name).cloned().unwrap_or_default())
        .collect();
    out.sort();
    out
}

fn hosts_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("hosts");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_become_scrape_targets_follow_changes_and_survive_a_dead_server() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let a = TargetServer::start_with(exporter_body("a")).await;
    let b = TargetServer::start_with(exporter_body("b")).await;
    let c = TargetServer::start_with(exporter_body("c")).await;
    let port = |s: &TargetServer| s.addr().port();
    let dir = tempfile::tempdir().unwrap();
    let hosts = hosts_file(dir.path(), "127.0.0.1 sd.test\n");
    let dns_port = free_port();
    // `localhost` is the SRV target: the agent resolves it as Prometheus would, with the
    // system resolver.
    let srv = |ports: &[u16]| -> Vec<String> {
        ports
            .iter()
            .map(|p| format!("_metrics._tcp.sd.test,localhost,{p}"))
            .collect()
    };
    let Some(mut dns) =
        Dnsmasq::start(dir.path(), dns_port, &hosts, &srv(&[port(&a), port(&b)])).await
    else {
        return;
    };
    let config = format!(
        "{}\n[[scrape]]\njob = \"dsd\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[scrape.dns_sd_configs]]\nnames = [\"_metrics._tcp.sd.test\"]\nserver = {}\n\
         refresh_interval = \"1s\"\n\
         [[scrape.relabel_configs]]\nsource_labels = [\"__meta_dns_srv_record_port\"]\n\
         target_label = \"srv_port\"\n\
         [[scrape.relabel_configs]]\nsource_labels = [\"__meta_dns_name\"]\n\
         target_label = \"dns_name\"\n",
        agent_header(&prom.write_url()),
        toml_string(&dns.addr.to_string()),
    );
    let agent = Pushprobe::with_config(&config);
    let mut run = agent.spawn_run(&[]);
    let things = prom
        .wait_for(r#"sd_thing{job="dsd"}"#, |r| r.len() == 2, DATA_TIMEOUT)
        .await;
    assert_eq!(label_values(&things, "served_by"), ["a", "b"]);
    let mut want = vec![
        format!("localhost:{}", port(&a)),
        format!("localhost:{}", port(&b)),
    ];
    want.sort();
    assert_eq!(label_values(&things, "instance"), want);
    assert!(
        things
            .iter()
            .all(|t| t.labels["dns_name"] == "_metrics._tcp.sd.test"
                && t.labels["srv_port"] == t.labels["instance"]["localhost:".len()..]),
        "{things:?}"
    );

    // The records change (dnsmasq restarted with others): b and c, a's series end.
    drop(dns);
    dns = Dnsmasq::start(dir.path(), dns_port, &hosts, &srv(&[port(&b), port(&c)]))
        .await
        .unwrap();
    let things = prom
        .wait_for(
            r#"sd_thing{job="dsd"}"#,
            |r| label_values(r, "served_by") == ["b", "c"],
            DATA_TIMEOUT,
        )
        .await;
    assert_eq!(things.len(), 2, "{things:?}");

    // dnsmasq stops: b and c are still scraped, failures are counted.
    dns.process.kill_now();
    prom.wait_for(
        r#"pushprobe_sd_refresh_failures_total{mechanism="dns",config="dsd"}"#,
        |r| r.len() == 1 && r[0].value >= 2.0,
        DATA_TIMEOUT,
    )
    .await;
    let hits = (b.hits(), c.hits());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        b.hits() > hits.0 && c.hits() > hits.1,
        "the last good targets are still scraped"
    );
    assert!(a.hits() > 0);
    run.assert_running();
    run.terminate(Duration::from_secs(30)).await.assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_take_the_configured_port_and_a_reread_hosts_file_changes_them() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let exporter = TargetServer::start_with(exporter_body("a")).await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = hosts_file(dir.path(), "127.0.0.1 web.sd.test\n");
    let Some(dns) = Dnsmasq::start(dir.path(), free_port(), &hosts, &[]).await else {
        return;
    };
    let port = exporter.addr().port();
    let config = format!(
        "{}\n[[scrape]]\njob = \"asd\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[scrape.dns_sd_configs]]\nnames = [\"web.sd.test\"]\ntype = \"A\"\nport = {port}\n\
         server = {}\nrefresh_interval = \"1s\"\n",
        agent_header(&prom.write_url()),
        toml_string(&dns.addr.to_string()),
    );
    let agent = Pushprobe::with_config(&config);
    let mut run = agent.spawn_run(&[]);
    let up = prom
        .wait_for(r#"up{job="asd"}"#, |r| r.len() == 1, DATA_TIMEOUT)
        .await;
    assert_eq!(up[0].labels["instance"], format!("127.0.0.1:{port}"));
    assert_eq!(up[0].value, 1.0);

    // The hosts file gains an address; dnsmasq re-reads it on SIGHUP.
    std::fs::write(&hosts, "127.0.0.1 web.sd.test\n127.0.0.2 web.sd.test\n").unwrap();
    dns.process.signal("HUP");
    let up = prom
        .wait_for(r#"up{job="asd"}"#, |r| r.len() == 2, DATA_TIMEOUT)
        .await;
    assert_eq!(
        label_values(&up, "instance"),
        [format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")]
    );
    run.assert_running();
    run.terminate(Duration::from_secs(30)).await.assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_icmp_probes_run_once_per_discovered_target() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = [
        first.local_addr().unwrap().to_string(),
        second.local_addr().unwrap().to_string(),
    ];
    for listener in [first, second] {
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hosts.json");
    std::fs::write(
        &file,
        r#"[{"targets": ["127.0.0.1", "127.0.0.2"], "labels": {"site": "lo"}}]"#,
    )
    .unwrap();
    let config = format!(
        "{}\n[[probe]]\nname = \"ports\"\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[probe.static_configs]]\ntargets = [{}, {}]\n\n\
         [[probe]]\nname = \"ping\"\nkind = \"icmp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[probe.file_sd_configs]]\nfiles = [{}]\nrefresh_interval = \"1s\"\n",
        agent_header(&prom.write_url()),
        toml_string(&addrs[0]),
        toml_string(&addrs[1]),
        toml_string(&file.display().to_string()),
    );
    let agent = Pushprobe::with_config(&config);
    let mut run = agent.spawn_run(&[]);
    let tcp = prom
        .wait_for(
            r#"probe_success{probe="ports"}"#,
            |r| r.len() == 2,
            DATA_TIMEOUT,
        )
        .await;
    let mut want = addrs.to_vec();
    want.sort();
    assert_eq!(label_values(&tcp, "instance"), want);
    assert!(tcp.iter().all(|r| r.value == 1.0), "{tcp:?}");
    let ping = prom
        .wait_for(
            r#"probe_success{probe="ping"}"#,
            |r| r.len() == 2,
            DATA_TIMEOUT,
        )
        .await;
    assert_eq!(label_values(&ping, "instance"), ["127.0.0.1", "127.0.0.2"]);
    assert!(
        ping.iter()
            .all(|r| r.value == 1.0 && r.labels["site"] == "lo"),
        "{ping:?}"
    );
    run.assert_running();
    run.terminate(Duration::from_secs(30)).await.assert_code(0);
}
