//! The health listener as an orchestrator sees it: the real binary, `run`, loopback only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pushprobe");

/// A port nothing listens on right now (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET; `None` while nothing accepts connections.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Polls until `path` answers `want`, up to a generous bound for a loaded machine.
fn wait_for(addr: SocketAddr, path: &str, want: u16, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((status, body)) = get(addr, path) {
            if status == want {
                return body;
            }
        }
        if let Ok(Some(code)) = child.try_wait() {
            panic!("pushprobe exited early with {code}");
        }
        assert!(Instant::now() < deadline, "{path} never answered {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_config(dir: &Path, listen: &str) -> std::path::PathBuf {
    let path = dir.join("pushprobe.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nlisten = \"{listen}\"\ndrain_timeout = \"2s\"\nself_metrics_interval = \"1s\"\n"
        ),
    )
    .unwrap();
    path
}

fn terminate(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
}

#[test]
fn run_serves_health_readiness_and_metrics_then_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = write_config(dir.path(), &addr.to_string());
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    wait_for(addr, "/-/healthy", 200, &mut child);
    wait_for(addr, "/-/ready", 200, &mut child);
    let metrics = wait_for(addr, "/metrics", 200, &mut child);
    assert!(
        metrics.contains("# TYPE pushprobe_build_info gauge")
            && metrics.contains("pushprobe_build_info{version=")
            && metrics.contains("pushprobe_start_time_seconds "),
        "{metrics}"
    );
    assert_eq!(get(addr, "/nope").map(|r| r.0), Some(404));

    terminate(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "run exited with {status}");
    assert!(
        get(addr, "/-/healthy").is_none(),
        "listener still up after exit"
    );
}

#[test]
fn a_port_in_use_stops_run_at_start_with_the_config_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_config(dir.path(), &busy.local_addr().unwrap().to_string());
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agent.listen"), "{stderr}");
}

#[test]
fn once_never_listens() {
    let dir = tempfile::tempdir().unwrap();
    // Holding the port proves `once` does not try to bind it (it would fail with 78).
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_config(dir.path(), &busy.local_addr().unwrap().to_string());
    let out = Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn readiness_drops_to_503_while_draining_and_liveness_holds() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // A receiver nobody listens on: the queue cannot empty, so the drain lasts its full
    // deadline and the draining state can be observed.
    let config = dir.path().join("pushprobe.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"{addr}\"\ndrain_timeout = \"5s\"\nself_metrics_interval = \"1s\"\n\
             [[remote_write]]\nurl = \"http://127.0.0.1:{}/api/v1/write\"\n",
            free_port()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(addr, "/-/ready", 200, &mut child);

    terminate(&child);
    // Not ready from the moment the signal is handled; still alive while samples flush.
    wait_for(addr, "/-/ready", 503, &mut child);
    assert_eq!(get(addr, "/-/healthy").map(|r| r.0), Some(200));
    let status = child.wait().unwrap();
    assert!(status.success(), "run exited with {status}");
}
