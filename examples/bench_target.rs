//! A cheap HTTP target for `scripts/bench-probes.sh`: listens on 127.0.0.1 on the given number
//! of free ports and answers `200 ok` to every request on every path, with keep-alive.
//!
//! The benchmark measures the probers, not the target, so the target must not be what limits
//! them: a small async server on one thread answers thousands of requests a second for little
//! CPU. It prints one port per line on stdout once all are listening, then serves until killed.
//!
//! Usage: `bench_target [PORTS]` (default 4).

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn ok(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
}

fn main() {
    let ports: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("PORTS must be a number"))
        .unwrap_or(4);
    // One thread: the target should stay light and predictable next to the measured processes.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listeners = support::listen_and_announce(ports).await;
        let mut tasks = Vec::new();
        for listener in listeners {
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service_fn(ok))
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
