//! What the benchmark targets share: listening on free local ports and telling the script
//! which ones.

use std::io::Write;

use tokio::net::TcpListener;

/// Binds `ports` listeners on free ports of 127.0.0.1 and prints one port per line on stdout
/// once all are listening, which is what the benchmark scripts wait for.
pub async fn listen_and_announce(ports: usize) -> Vec<TcpListener> {
    let mut listeners = Vec::with_capacity(ports);
    for _ in 0..ports {
        listeners.push(
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1"),
        );
    }
    let mut out = std::io::stdout().lock();
    for l in &listeners {
        writeln!(out, "{}", l.local_addr().expect("address").port()).expect("stdout");
    }
    out.flush().expect("stdout");
    listeners
}
