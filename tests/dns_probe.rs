//! The DNS probe and its client against Debian's real `dnsmasq`, and against scripted UDP and
//! TCP servers that answer badly on purpose (malformed, cut short, another query's ID,
//! silence). Every server is started here on 127.0.0.1; assertions are on outcomes, reasons
//! and series, never on elapsed time.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record as WireRecord};
use pushprobe::dns::{Client, RecordType, Transport};
use pushprobe::probe::dns::DnsProbe;
use pushprobe::probe::ProbeReport;
use pushprobe::series::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

// ---------------------------------------------------------------------------------------
// dnsmasq

/// Names a record set larger than a 512-byte UDP answer can carry.
const BIG_RECORDS: u8 = 40;

/// A dnsmasq serving `example.test` from its own flags and a hosts file, on a free port.
struct Dnsmasq {
    _process: ChildGuard,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Dnsmasq {
    async fn start() -> Option<Dnsmasq> {
        let bin = require_binary("dnsmasq")?;
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        let mut text = String::from("127.0.0.1 www.example.test\n2001:db8::1 www.example.test\n");
        for i in 1..=BIG_RECORDS {
            text.push_str(&format!("10.0.1.{i} big.example.test\n"));
        }
        std::fs::write(&hosts, text).unwrap();
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg("--conf-file=/dev/null")
            .arg(format!("--port={port}"))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg(format!("--addn-hosts={}", hosts.display()))
            // Names under example.test that are not configured are NXDOMAIN, not forwarded.
            .arg("--local=/example.test/")
            .arg("--srv-host=_http._tcp.example.test,www.example.test,8080,1,5")
            .arg("--txt-record=txt.example.test,v=spf1 -all,second string")
            .arg("--mx-host=example.test,mail.example.test,10")
            .arg("--keep-in-foreground")
            .arg("--log-facility=-")
            .arg("--log-queries")
            .arg("--pid-file=");
        // As root, dnsmasq would drop to its own user, who cannot read the private temp dir.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--user=root");
        }
        let process = ChildGuard::spawn("dnsmasq", cmd, dir.path()).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let client = Client::new(addr, Transport::Udp).with_timeout(Duration::from_millis(300));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if client
                .query("www.example.test", RecordType::A)
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "dnsmasq did not answer on {addr}:\n{}",
                process.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(Dnsmasq {
            _process: process,
            _dir: dir,
            addr,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Probes built from configuration, as the agent builds them

/// A `kind = "dns"` probe named `dns` from the TOML keys in `keys`.
fn probe(keys: &str) -> DnsProbe {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pushprobe.toml");
    std::fs::write(
        &path,
        format!(
            "[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n\n\
             [[probe]]\nname = \"dns\"\nkind = \"dns\"\ninterval = \"10s\"\n{keys}"
        ),
    )
    .unwrap();
    let settings = pushprobe::config::load(&path, true)
        .unwrap()
        .validate("test")
        .unwrap();
    match settings.probes.into_iter().next() {
        Some(pushprobe::config::ProbeSettings::Dns(s)) => DnsProbe::new(s),
        other => panic!("not a dns probe: {other:?}"),
    }
}

/// Runs `probe` once; the report and the registry it recorded into.
async fn run(mut probe: DnsProbe) -> (ProbeReport, Registry) {
    let mut registry = Registry::new();
    let report = probe.run(&mut registry).await;
    (report, registry)
}

/// The value of the one series named `name` (with `phase` when given).
fn value(registry: &Registry, name: &str, phase: Option<&str>) -> Option<f64> {
    registry
        .samples_at(0)
        .into_iter()
        .find(|s| {
            s.labels.get("__name__") == Some(name)
                && phase.is_none_or(|p| s.labels.get("phase") == Some(p))
        })
        .map(|s| s.value)
}

fn detail(report: &ProbeReport, key: &str) -> Option<String> {
    report
        .details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| format!("{v:?}"))
}

fn at(server: SocketAddr, name: &str, qtype: &str) -> String {
    format!("server = \"{server}\"\nquery_name = \"{name}\"\nquery_type = \"{qtype}\"\n")
}

// ---------------------------------------------------------------------------------------
// Against dnsmasq

#[tokio::test]
async fn a_aaaa_srv_mx_and_txt_answers_pass_and_are_counted() {
    let Some(dns) = Dnsmasq::start().await else {
        return;
    };
    for (name, qtype, expect) in [
        (
            "www.example.test",
            "A",
            "www.example.test.\t0\tIN\tA\t127.0.0.1",
        ),
        ("www.example.test", "AAAA", "\tIN\tAAAA\t2001:db8::1"),
        (
            "_http._tcp.example.test",
            "SRV",
            "_http._tcp.example.test.\t0\tIN\tSRV\t1 5 8080 www.example.test.",
        ),
        ("example.test", "MX", "\tIN\tMX\t10 mail.example.test."),
        (
            "txt.example.test",
            "TXT",
            "\tIN\tTXT\t\"v=spf1 -all\" \"second string\"",
        ),
    ] {
        // The whole record must match: `fail_if_not_matches_regexp` fails on any other.
        let keys = format!(
            "{}[probe.validate_answer_rrs]\nfail_if_not_matches_regexp = [{:?}]\n",
            at(dns.addr, name, qtype),
            // Rust's escapes of a string are TOML's: the regex arrives as written.
            regex::escape(expect),
        );
        let (report, registry) = run(probe(&keys)).await;
        assert!(report.success, "{qtype} {name}: {report:?}");
        assert_eq!(report.status, "NOERROR");
        assert_eq!(value(&registry, "probe_success", None), Some(1.0));
        assert_eq!(
            value(&registry, "probe_dns_query_succeeded", None),
            Some(1.0)
        );
        assert_eq!(
            value(&registry, "probe_dns_answer_rrs", None),
            Some(1.0),
            "{qtype}"
        );
        assert_eq!(value(&registry, "probe_ip_protocol", None), Some(4.0));
        // FNV-1a of 127.0.0.1's four bytes, the value the blackbox exporter reports.
        assert_eq!(
            value(&registry, "probe_ip_addr_hash", None),
            Some(3_668_918_509.0)
        );
        for phase in ["resolve", "connect", "request"] {
            assert!(
                value(&registry, "probe_dns_duration_seconds", Some(phase)).is_some(),
                "{phase}"
            );
        }
        assert!(value(&registry, "probe_dns_lookup_time_seconds", None).is_some());
        assert_eq!(
            value(&registry, "probe_dns_serial", None),
            None,
            "only for SOA"
        );
    }
}

#[tokio::test]
async fn nxdomain_fails_unless_listed_in_valid_rcodes() {
    let Some(dns) = Dnsmasq::start().await else {
        return;
    };
    let keys = at(dns.addr, "nope.example.test", "A");
    let (report, registry) = run(probe(&keys)).await;
    assert!(!report.success);
    assert_eq!(report.status, "NXDOMAIN");
    assert_eq!(
        report.reason.as_deref(),
        Some("rcode NXDOMAIN not in valid_rcodes [NOERROR]")
    );
    // The server answered: the query succeeded, the probe did not.
    assert_eq!(
        value(&registry, "probe_dns_query_succeeded", None),
        Some(1.0)
    );
    assert_eq!(value(&registry, "probe_success", None), Some(0.0));

    let (report, _) = run(probe(&format!(
        "{keys}valid_rcodes = [\"NOERROR\", \"NXDOMAIN\"]\n"
    )))
    .await;
    assert!(report.success, "{report:?}");
    assert_eq!(report.status, "NXDOMAIN");
}

#[tokio::test]
async fn regex_checks_fail_with_the_check_and_the_record() {
    let Some(dns) = Dnsmasq::start().await else {
        return;
    };
    let base = at(dns.addr, "www.example.test", "A");
    let (report, _) = run(probe(&format!(
        "{base}[probe.validate_answer_rrs]\nfail_if_not_matches_regexp = [\"10\\\\.0\\\\.0\\\\.1$\"]\n"
    )))
    .await;
    assert!(!report.success);
    assert_eq!(
        report.reason.as_deref(),
        Some(
            "answer: fail_if_not_matches_regexp \"10\\\\.0\\\\.0\\\\.1$\" did not match \
             \"www.example.test.\\t0\\tIN\\tA\\t127.0.0.1\""
        )
    );
    assert_eq!(report.status, "NOERROR");

    let (report, _) = run(probe(&format!(
        "{base}[probe.validate_answer_rrs]\nfail_if_matches_regexp = [\"127\\\\.0\\\\.0\\\\.1\"]\n"
    )))
    .await;
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("answer: fail_if_matches_regexp ")),
        "{report:?}"
    );

    let (report, _) = run(probe(&format!(
        "{base}[probe.validate_answer_rrs]\nfail_if_none_matches_regexp = [\"127\\\\.0\\\\.0\\\\.1\"]\n\
         fail_if_all_match_regexp = [\"AAAA\"]\n\
         [probe.validate_authority_rrs]\nfail_if_matches_regexp = [\".\"]\n"
    )))
    .await;
    assert!(report.success, "{report:?}");

    // An empty section fails a check that needs a record.
    let (report, _) = run(probe(&format!(
        "{base}[probe.validate_additional_rrs]\nfail_if_none_matches_regexp = [\".\"]\n"
    )))
    .await;
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("additional: fail_if_none_matches_regexp")
                && r.contains("no records came back")),
        "{report:?}"
    );
}

#[tokio::test]
async fn tcp_transport_asks_over_tcp() {
    let Some(dns) = Dnsmasq::start().await else {
        return;
    };
    let (report, registry) = run(probe(&format!(
        "{}transport_protocol = \"tcp\"\n",
        at(dns.addr, "_http._tcp.example.test", "SRV")
    )))
    .await;
    assert!(report.success, "{report:?}");
    assert_eq!(
        detail(&report, "transport").as_deref(),
        Some("Text(\"tcp\")")
    );
    assert_eq!(value(&registry, "probe_dns_answer_rrs", None), Some(1.0));

    let answer = Client::new(dns.addr, Transport::Tcp)
        .query("_http._tcp.example.test", RecordType::SRV)
        .await
        .unwrap();
    assert_eq!(
        answer.answers[0].data,
        pushprobe::dns::RecordData::Srv {
            priority: 1,
            weight: 5,
            port: 8080,
            target: "www.example.test.".into()
        }
    );
}

#[tokio::test]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let Some(dns) = Dnsmasq::start().await else {
        return;
    };
    let keys = at(dns.addr, "big.example.test", "A");

    // By default: UDP, truncated, then TCP with every record.
    let (report, registry) = run(probe(&keys)).await;
    assert!(report.success, "{report:?}");
    assert_eq!(
        detail(&report, "retried_over_tcp").as_deref(),
        Some("Flag(true)")
    );
    assert_eq!(
        detail(&report, "transport").as_deref(),
        Some("Text(\"tcp\")")
    );
    assert_eq!(
        value(&registry, "probe_dns_answer_rrs", None),
        Some(f64::from(BIG_RECORDS))
    );

    // UDP alone gets the cut answer and says so.
    let (report, registry) = run(probe(&format!("{keys}transport_protocol = \"udp\"\n"))).await;
    assert!(!report.success);
    assert_eq!(report.status, "truncated");
    assert!(
        report.reason.as_deref().is_some_and(
            |r| r.starts_with("answer truncated (TC bit) over UDP, not retried over TCP")
        ),
        "{report:?}"
    );
    let partial = value(&registry, "probe_dns_answer_rrs", None).unwrap();
    assert!(partial < f64::from(BIG_RECORDS), "{partial}");
    assert_eq!(
        value(&registry, "probe_dns_query_succeeded", None),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------------------
// Scripted servers that answer badly

/// What a scripted UDP server sends back for one query.
#[derive(Clone, Copy)]
enum Reply {
    /// Our ID, then bytes that do not decode.
    Garbage,
    /// A valid answer cut in the middle of its record.
    CutShort,
    /// A valid answer under another ID.
    OtherId,
    /// A valid answer under another ID, then the right one.
    OtherIdThenRight,
    /// Nothing at all.
    Silence,
}

/// A valid answer to `query`: one A record, 192.0.2.1.
fn answer_to(query: &[u8]) -> Vec<u8> {
    let q = Message::from_vec(query).unwrap();
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.add_queries(q.queries.clone());
    m.add_answer(WireRecord::from_rdata(
        q.queries[0].name().clone(),
        60,
        RData::A(A::new(192, 0, 2, 1)),
    ));
    m.to_vec().unwrap()
}

fn with_id(mut bytes: Vec<u8>, id: u16) -> Vec<u8> {
    bytes[..2].copy_from_slice(&id.to_be_bytes());
    bytes
}

async fn udp_server(reply: Reply) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let query = &buf[..n];
            let good = answer_to(query);
            let id = u16::from_be_bytes([query[0], query[1]]);
            let replies: Vec<Vec<u8>> = match reply {
                Reply::Garbage => {
                    let mut b = with_id(vec![0u8; 12], id);
                    b[2] = 0x81; // an answer
                    b[7] = 3; // three answers promised
                    b.extend_from_slice(&[0xc0, 0xff, 0xff]);
                    vec![b]
                }
                Reply::CutShort => vec![good[..good.len() - 3].to_vec()],
                Reply::OtherId => vec![with_id(good, id.wrapping_add(1))],
                Reply::OtherIdThenRight => vec![with_id(good.clone(), id.wrapping_add(1)), good],
                Reply::Silence => vec![],
            };
            for r in replies {
                let _ = socket.send_to(&r, from).await;
            }
        }
    });
    addr
}

fn scripted(server: SocketAddr, transport: &str) -> String {
    format!(
        "{}timeout = \"1s\"\ntransport_protocol = \"{transport}\"\n",
        at(server, "x.example.test", "A")
    )
}

#[tokio::test]
async fn a_malformed_answer_is_a_clear_failure() {
    let server = udp_server(Reply::Garbage).await;
    let (report, registry) = run(probe(&scripted(server, "udp"))).await;
    assert!(!report.success);
    assert_eq!(report.status, "malformed");
    let reason = report.reason.unwrap();
    assert!(
        reason.starts_with(&format!(
            "malformed answer from DNS server {server} over udp for x.example.test: "
        )),
        "{reason}"
    );
    assert_eq!(
        value(&registry, "probe_dns_query_succeeded", None),
        Some(0.0)
    );
    assert_eq!(value(&registry, "probe_dns_answer_rrs", None), Some(0.0));
}

#[tokio::test]
async fn an_answer_cut_mid_record_is_malformed() {
    let server = udp_server(Reply::CutShort).await;
    let (report, _) = run(probe(&scripted(server, "udp"))).await;
    assert_eq!(report.status, "malformed", "{report:?}");
}

#[tokio::test]
async fn an_answer_with_another_id_is_ignored_until_the_timeout() {
    let server = udp_server(Reply::OtherId).await;
    let (report, registry) = run(probe(&scripted(server, "udp"))).await;
    assert!(!report.success);
    assert_eq!(report.status, "timeout");
    let reason = report.reason.clone().unwrap();
    assert!(
        reason.starts_with(&format!(
            "no answer from DNS server {server} over udp for x.example.test within "
        )) && reason.contains("(ignored 1 message not answering it: ID "),
        "{reason}"
    );
    assert_eq!(
        detail(&report, "ignored_messages").as_deref(),
        Some("Count(1)")
    );
    assert_eq!(
        value(&registry, "probe_dns_query_succeeded", None),
        Some(0.0)
    );

    // The right answer after a wrong one is taken.
    let server = udp_server(Reply::OtherIdThenRight).await;
    let (report, registry) = run(probe(&scripted(server, "udp"))).await;
    assert!(report.success, "{report:?}");
    assert_eq!(
        detail(&report, "ignored_messages").as_deref(),
        Some("Count(1)")
    );
    assert_eq!(value(&registry, "probe_dns_answer_rrs", None), Some(1.0));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let server = udp_server(Reply::Silence).await;
    let (report, _) = run(probe(&scripted(server, "udp"))).await;
    assert_eq!(report.status, "timeout");
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("within 1s") && !r.contains("ignored")),
        "{report:?}"
    );
}

#[tokio::test]
async fn tcp_answers_cut_short_or_refused_are_clear_failures() {
    // A length prefix promising more than is sent before the connection closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).await.is_err() {
                continue;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if s.read_exact(&mut query).await.is_err() {
                continue;
            }
            let good = answer_to(&query);
            let mut framed = (good.len() as u16 + 100).to_be_bytes().to_vec();
            framed.extend_from_slice(&good);
            let _ = s.write_all(&framed).await;
        }
    });
    let (report, _) = run(probe(&scripted(server, "tcp"))).await;
    assert_eq!(report.status, "malformed", "{report:?}");
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("connection closed after")),
        "{report:?}"
    );

    // Nobody listening: refused.
    let closed: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (report, registry) = run(probe(&scripted(closed, "tcp"))).await;
    assert_eq!(report.status, "connect", "{report:?}");
    assert_eq!(value(&registry, "probe_success", None), Some(0.0));
    // Over UDP, the port-unreachable answer is the same failure.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let (report, _) = run(probe(&scripted(closed_addr, "udp"))).await;
    assert_eq!(report.status, "connect", "{report:?}");
    assert!(
        report.reason.as_deref().is_some_and(
            |r| r.starts_with(&format!("cannot reach DNS server {closed_addr} over udp"))
        ),
        "{report:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The shipped example

#[test]
fn the_dns_example_is_a_valid_configuration() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dns-probes.toml");
    let settings = pushprobe::config::load(&path, true)
        .unwrap()
        .validate("examples/dns-probes.toml")
        .unwrap();
    assert!(
        settings
            .probes
            .iter()
            .filter(|p| matches!(p, pushprobe::config::ProbeSettings::Dns(_)))
            .count()
            >= 3
    );
}

// ---------------------------------------------------------------------------------------
// End to end: the agent pushes the probe's series to a real Prometheus

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stores_the_dns_probe_series() {
    let Some(dns) = Dnsmasq::start().await else {
        return;
    };
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let mut config = basic_config(&prom.write_url(), &[], "1s");
    config.push_str(&format!(
        "\n[[probe]]\nname = \"resolver\"\nkind = \"dns\"\ninterval = \"1s\"\ntimeout = \"1s\"\n{}",
        at(dns.addr, "www.example.test", "A")
    ));
    let agent = Pushprobe::with_config(&config);
    agent.once().await.assert_code(0);

    let instance = dns.addr.to_string();
    let want = [("probe", "resolver"), ("instance", instance.as_str())];
    let success = prom
        .wait_for_any(r#"probe_success{probe="resolver"}"#)
        .await;
    assert_eq!(only(&success, &want).value, 1.0);
    let rrs = prom
        .wait_for_any(r#"probe_dns_answer_rrs{probe="resolver"}"#)
        .await;
    assert_eq!(only(&rrs, &want).value, 1.0);
    let phases = prom
        .wait_for_any(r#"probe_dns_duration_seconds{probe="resolver"}"#)
        .await;
    for phase in ["resolve", "connect", "request"] {
        only(&phases, &[("phase", phase)]);
    }
    let ok = prom
        .wait_for_any(r#"probe_dns_query_succeeded{probe="resolver"}"#)
        .await;
    assert_eq!(only(&ok, &want).value, 1.0);
}
