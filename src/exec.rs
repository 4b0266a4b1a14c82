//! `pushprobe exec`: runs a command as a monitored job and records how it went.
//!
//! The command inherits stdin, stdout and stderr, receives the signals pushprobe receives
//! (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2), and its exit status becomes
//! pushprobe's: an exit code as is, a death by signal N as 128+N, as shells report it. A command
//! that cannot be started exits 127 (not found) or 126 (not executable), like a shell.
//!
//! The recording ([`record`]) and the status mapping ([`exit_code`]) are pure; [`run`] is the
//! thin process shell around them.

use std::ffi::OsString;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::clock::now_ms;
use crate::series::{LabelError, MetricType, Registry};

/// Wall time the job ran, in seconds.
pub const JOB_DURATION: &str = "pushprobe_job_duration_seconds";
/// The job's exit code (128+N for a death by signal N; 127/126 when it could not start).
pub const JOB_EXIT_CODE: &str = "pushprobe_job_exit_code";
/// Unix time at which the job started.
pub const JOB_START: &str = "pushprobe_job_start_timestamp_seconds";
/// Unix time at which the job ended.
pub const JOB_END: &str = "pushprobe_job_end_timestamp_seconds";
/// Unix time at which the job last ended with exit code 0 (only sent by successful runs).
pub const JOB_LAST_SUCCESS: &str = "pushprobe_job_last_success_timestamp_seconds";

/// Exit code of a command that was not found.
pub const EXIT_NOT_FOUND: u8 = 127;
/// Exit code of a command that was found but could not be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;

/// The signals forwarded to the child.
const FORWARDED: [(SignalKind, libc::c_int); 6] = [
    (SignalKind::interrupt(), libc::SIGINT),
    (SignalKind::terminate(), libc::SIGTERM),
    (SignalKind::hangup(), libc::SIGHUP),
    (SignalKind::quit(), libc::SIGQUIT),
    (SignalKind::user_defined1(), libc::SIGUSR1),
    (SignalKind::user_defined2(), libc::SIGUSR2),
];

/// How one run of the job went.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    /// Unix time in milliseconds at which the job started.
    pub start_ms: i64,
    /// Unix time in milliseconds at which it ended.
    pub end_ms: i64,
    /// Wall time, from a monotonic clock.
    pub duration: Duration,
    /// The code pushprobe exits with: the child's, 128+signal, or 126/127.
    pub exit_code: u8,
    /// Why the command did not start, if it did not.
    pub spawn_error: Option<String>,
}

impl JobOutcome {
    /// Tells whether the job succeeded (exit code 0).
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// Maps an exit status as a shell does: the exit code, or 128+N after a death by signal N.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        // Neither is possible for a waited-for child on Unix; report it as a failure.
        (None, None) => 1,
    }
}

/// Records the job's series into `registry`, labelled `job`. The last-success timestamp is
/// only recorded on success, so that a failed run leaves the previous value where it is.
pub fn record(registry: &mut Registry, job: &str, o: &JobOutcome) -> Result<(), LabelError> {
    let labels = [("job", job)];
    let secs = |ms: i64| ms as f64 / 1000.0;
    for (name, help) in [
        (JOB_DURATION, "Wall time the job ran, in seconds."),
        (
            JOB_EXIT_CODE,
            "Exit code of the job's last run (128+N after signal N).",
        ),
        (JOB_START, "Unix time at which the job's last run started."),
        (JOB_END, "Unix time at which the job's last run ended."),
        (
            JOB_LAST_SUCCESS,
            "Unix time at which the job last ended with exit code 0.",
        ),
    ] {
        registry.describe(name, MetricType::Gauge, help);
    }
    registry.gauge_set(JOB_DURATION, &labels, o.duration.as_secs_f64())?;
    registry.gauge_set(JOB_EXIT_CODE, &labels, f64::from(o.exit_code))?;
    registry.gauge_set(JOB_START, &labels, secs(o.start_ms))?;
    registry.gauge_set(JOB_END, &labels, secs(o.end_ms))?;
    if o.success() {
        registry.gauge_set(JOB_LAST_SUCCESS, &labels, secs(o.end_ms))?;
    }
    Ok(())
}

/// The default `job` label: the command's file name.
pub fn default_job_name(command: &OsString) -> String {
    std::path::Path::new(command)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "exec".to_string())
}

/// Signal streams, installed before the child starts so that no signal in between falls
/// back to its default action (which would kill pushprobe and orphan the child).
pub struct Signals(Vec<(Signal, libc::c_int)>);

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Signals> {
        FORWARDED
            .iter()
            .map(|(kind, num)| signal(*kind).map(|s| (s, *num)))
            .collect::<Result<Vec<_>, _>>()
            .map(Signals)
    }

    /// Waits for the next forwarded signal and returns its number.
    pub async fn recv(&mut self) -> libc::c_int {
        let [a, b, c, d, e, f] = &mut self.0[..] else {
            // Only `install` builds this, with exactly the six signals.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = a.0.recv() => a.1,
            _ = b.0.recv() => b.1,
            _ = c.0.recv() => c.1,
            _ = d.0.recv() => d.1,
            _ = e.0.recv() => e.1,
            _ = f.0.recv() => f.1,
        }
    }
}

/// Runs the command to completion, forwarding signals, and says how it went.
pub async fn run(program: &OsString, args: &[OsString], signals: &mut Signals) -> JobOutcome {
    let start_ms = now_ms();
    let started = Instant::now();
    let spawned = tokio::process::Command::new(program).args(args).spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_NOT_EXECUTABLE,
            };
            let what = match e.kind() {
                std::io::ErrorKind::NotFound => "command not found".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => e.to_string(),
            };
            return JobOutcome {
                start_ms,
                end_ms: now_ms(),
                duration: started.elapsed(),
                exit_code: code,
                spawn_error: Some(format!("{}: {what}", program.to_string_lossy())),
            };
        }
    };
    let pid = child.id();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            sig = signals.recv() => {
                if let Some(pid) = pid {
                    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own
                    // child, not yet reaped (we are still waiting for it), so it cannot have
                    // been recycled for another process. The crate denies `unsafe` elsewhere;
                    // forwarding a signal to the child needs this one call.
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::kill(pid as libc::pid_t, sig);
                    }
                }
            }
        }
    };
    let exit_code = match status {
        Ok(s) => exit_code(s),
        Err(e) => {
            tracing::error!(error = %e, "could not wait for the command");
            crate::exit::EXIT_INTERNAL
        }
    };
    JobOutcome {
        start_ms,
        end_ms: now_ms(),
        duration: started.elapsed(),
        exit_code,
        spawn_error: None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn outcome(exit_code: u8) -> JobOutcome {
        JobOutcome {
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_002_500,
            duration: Duration::from_millis(2500),
            exit_code,
            spawn_error: None,
        }
    }

    #[test]
    fn exit_status_maps_like_a_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }

    #[test]
    fn success_records_every_series() {
        let mut r = Registry::new();
        record(&mut r, "backup", &outcome(0)).unwrap();
        let job = [("job", "backup")];
        assert_eq!(r.value(JOB_DURATION, &job), Some(2.5));
        assert_eq!(r.value(JOB_EXIT_CODE, &job), Some(0.0));
        assert_eq!(r.value(JOB_START, &job), Some(1_700_000_000.0));
        assert_eq!(r.value(JOB_END, &job), Some(1_700_000_002.5));
        assert_eq!(r.value(JOB_LAST_SUCCESS, &job), Some(1_700_000_002.5));
    }

    #[test]
    fn failure_leaves_last_success_out() {
        let mut r = Registry::new();
        record(&mut r, "backup", &outcome(137)).unwrap();
        let job = [("job", "backup")];
        assert_eq!(r.value(JOB_EXIT_CODE, &job), Some(137.0));
        assert_eq!(r.value(JOB_LAST_SUCCESS, &job), None);
        // A family without series is not rendered at all.
        let text = crate::pushgateway::render(r.families(), &Default::default()).text;
        assert!(!text.contains(JOB_LAST_SUCCESS), "{text}");
    }

    #[test]
    fn default_job_name_is_the_file_name() {
        assert_eq!(
            default_job_name(&"/usr/local/bin/backup.sh".into()),
            "backup.sh"
        );
        assert_eq!(default_job_name(&"".into()), "exec");
    }
}
