//! `pushprobe exec` as a process: exit-code passthrough, signal forwarding, and a delivery
//! deadline that a dead sink cannot stretch or turn into a different exit code.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn pushprobe(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pushprobe"));
    c.arg("-c").arg(config);
    c
}

fn empty_config(dir: &tempfile::TempDir) -> PathBuf {
    let p = dir.path().join("pushprobe.toml");
    std::fs::write(&p, "").unwrap();
    p
}

/// Waits for the child, killing it and failing after a generous bound so a hang is a
/// failure, not a stuck test run. The bound is not a timing assertion.
fn wait_bounded(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pushprobe exec did not finish within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exit_codes_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let config = empty_config(&dir);
    for (script, want) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 200", 200),
        ("kill -9 $$", 137),
    ] {
        let status = pushprobe(&config)
            .args(["exec", "--", "sh", "-c", script])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(want), "{script}");
    }
}

#[test]
fn missing_or_unexecutable_commands_exit_like_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let config = empty_config(&dir);
    let out = pushprobe(&config)
        .args(["exec", "--", "/nonexistent/pushprobe-test-cmd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("command not found"), "{err}");

    let not_exec = dir.path().join("script.sh");
    std::fs::write(&not_exec, "#!/bin/sh\nexit 0\n").unwrap();
    let out = pushprobe(&config)
        .arg("exec")
        .arg(&not_exec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126));
}

#[test]
fn stdio_is_inherited() {
    let dir = tempfile::tempdir().unwrap();
    let config = empty_config(&dir);
    let mut child = pushprobe(&config)
        .args([
            "exec",
            "--",
            "sh",
            "-c",
            "read line; echo \"got $line\"; echo oops >&2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn sigterm_is_forwarded_to_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = empty_config(&dir);
    // The trap also stops the background sleep, so the test leaves no process behind.
    let mut child = pushprobe(&config)
        .args([
            "exec",
            "--",
            "sh",
            "-c",
            "trap 'kill $! 2>/dev/null; exit 42' TERM; echo ready; sleep 30 & wait",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Signal only once the trap is in place, or sh would die of the signal instead.
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: kill(2) on a child we have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(42));
}

#[test]
fn a_dead_sink_neither_changes_the_exit_code_nor_outlasts_the_deadline() {
    // A receiver that accepts connections and never answers: only the deadline ends it.
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blackhole.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pushprobe.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ndrain_timeout = \"1s\"\n\
             [[remote_write]]\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\n\
             [[pushgateway]]\nurl = \"http://127.0.0.1:{port}\"\njob = \"j\"\ntimeout = \"10m\"\n"
        ),
    )
    .unwrap();
    let mut child = pushprobe(&config)
        .args(["exec", "--", "sh", "-c", "exit 5"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    assert_eq!(status.code(), Some(5));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("did not reach every sink"), "{err}");
    drop(blackhole);
}
