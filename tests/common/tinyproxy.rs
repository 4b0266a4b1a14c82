//! Debian's `tinyproxy`, started on a free loopback port with a minimal configuration: plain
//! forwarding and `CONNECT` to any port, optionally with basic authentication.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{free_port, require_binary, ChildGuard, STARTUP_TIMEOUT};

/// A running tinyproxy; killed when dropped.
pub struct Tinyproxy {
    process: Option<ChildGuard>,
    port: u16,
    dir: TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy; with `credentials`, it asks for them (`BasicAuth user password`).
    /// `None` when the binary is missing outside CI.
    pub async fn start(credentials: Option<(&str, &str)>) -> Option<Tinyproxy> {
        let bin = require_binary("tinyproxy")?;
        let dir = tempfile::Builder::new()
            .prefix("pushprobe-tinyproxy-")
            .tempdir()
            .expect("create temp dir");
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let pid = dir.path().join("tinyproxy.pid");
        // No `ConnectPort` line: CONNECT to every port is allowed, so that tunnels reach the
        // test servers' free ports.
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nMaxClients 50\n\
             LogLevel Info\nLogFile \"{}\"\nPidFile \"{}\"\n",
            log.display(),
            pid.display()
        );
        if let Some((user, password)) = credentials {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let config_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&config_path, config).expect("write tinyproxy config");
        let mut cmd = Command::new(bin);
        cmd.arg("-d").arg("-c").arg(&config_path);
        let process = ChildGuard::spawn("tinyproxy", cmd, dir.path()).expect("spawn tinyproxy");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tinyproxy did not listen on {port}:\n{}",
                process.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Tinyproxy {
            process: Some(process),
            port,
            dir,
        })
    }

    /// `http://127.0.0.1:PORT`, optionally with user info.
    pub fn url(&self, user_info: Option<&str>) -> String {
        match user_info {
            Some(u) => format!("http://{u}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log (one line per connection and request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops it now; the port is then refused.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill_now();
        }
    }
}
