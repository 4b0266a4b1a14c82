//! Synthetic exporters for `scripts/bench-scrape.sh`: listens on 127.0.0.1 on N free ports
//! (one scrape target each, so each has its own `instance`) and serves, on every path, a text
//! exposition of M series shaped like node_exporter's (families of counters and gauges with
//! two or three labels, `# HELP`/`# TYPE` lines). Counter values grow on every request, so the
//! forwarders see changing samples as with a real exporter.
//!
//! The benchmark measures the forwarders, not the target: bodies are rendered once per port,
//! and a request only rewrites the values into a reused buffer, on one thread.
//!
//! With `--gzip`, a request whose `Accept-Encoding` names gzip gets the body gzip-encoded, as
//! exporters answer Prometheus; at the fastest level, to keep the unmeasured target cheap (the
//! forwarders' cost of decoding hardly depends on the level).
//!
//! Usage: `scrape_target [--gzip] [PORTS] [SERIES]` (defaults 50, 2000). Prints one port per
//! line once all are listening, then serves until killed.

#[path = "support/mod.rs"]
mod support;

use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write as _;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const SERIES_PER_FAMILY: usize = 20;

/// One target's series: `(family line prefix, series text, is counter)`, rendered once.
struct Payload {
    lines: Vec<(Option<String>, String, bool)>,
    requests: u64,
}

impl Payload {
    fn new(series: usize) -> Payload {
        let modes = [
            "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
        ];
        let mut lines = Vec::with_capacity(series);
        for i in 0..series {
            let f = i / SERIES_PER_FAMILY;
            let counter = f % 3 != 2;
            let name = if counter {
                format!("bench_family_{f}_total")
            } else {
                format!("bench_family_{f}_bytes")
            };
            let header = (i % SERIES_PER_FAMILY == 0).then(|| {
                format!(
                    "# HELP {name} Synthetic node-exporter-like family {f}.\n# TYPE {name} {}\n",
                    if counter { "counter" } else { "gauge" }
                )
            });
            let j = i % SERIES_PER_FAMILY;
            let series = if f.is_multiple_of(2) {
                format!(
                    "{name}{{cpu=\"{}\",mode=\"{}\"}}",
                    j / modes.len(),
                    modes[j % modes.len()]
                )
            } else {
                format!(
                    "{name}{{device=\"nvme{}n1\",fstype=\"ext4\",mountpoint=\"/srv/data{j}\"}}",
                    j % 4
                )
            };
            lines.push((header, series, counter));
        }
        Payload { lines, requests: 0 }
    }

    fn render(&mut self) -> Bytes {
        self.requests += 1;
        let r = self.requests as f64;
        let mut out = String::with_capacity(self.lines.len() * 80);
        for (i, (header, series, counter)) in self.lines.iter().enumerate() {
            if let Some(h) = header {
                out.push_str(h);
            }
            let v = if *counter {
                r * (i as f64 + 1.0)
            } else {
                (i as f64 * 1024.0) + (r % 7.0)
            };
            let _ = writeln!(out, "{series} {v}");
        }
        Bytes::from(out)
    }
}

/// Whether the request's `Accept-Encoding` names gzip (a `q=0` refusal is not expected here).
fn accepts_gzip(req: &Request<hyper::body::Incoming>) -> bool {
    req.headers()
        .get_all("accept-encoding")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let name = coding.split(';').next().unwrap_or("").trim();
            name.eq_ignore_ascii_case("gzip")
        })
}

fn gzip(body: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body).expect("gzip into memory");
    Bytes::from(e.finish().expect("gzip into memory"))
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let gzip_when_asked = args.iter().any(|a| a == "--gzip");
    args.retain(|a| a != "--gzip");
    let mut args = args.into_iter();
    let ports: usize = args
        .next()
        .map(|a| a.parse().expect("PORTS must be a number"))
        .unwrap_or(50);
    let series: usize = args
        .next()
        .map(|a| a.parse().expect("SERIES must be a number"))
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listeners = support::listen_and_announce(ports).await;
        let mut tasks = Vec::new();
        for listener in listeners {
            let payload = Rc::new(RefCell::new(Payload::new(series)));
            tasks.push(tokio::task::spawn_local(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let payload = payload.clone();
                    tokio::task::spawn_local(async move {
                        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let body = payload.borrow_mut().render();
                            let mut response = Response::builder()
                                .header("content-type", "text/plain; version=0.0.4");
                            let body = if gzip_when_asked && accepts_gzip(&req) {
                                response = response.header("content-encoding", "gzip");
                                gzip(&body)
                            } else {
                                body
                            };
                            async move {
                                Ok::<_, Infallible>(
                                    response.body(Full::new(body)).expect("response"),
                                )
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}
