//! Durable store-and-forward, end to end: the real binary with `agent.data_dir`, a real
//! Prometheus (killed and restarted on the same port and storage), and SIGKILL of the agent;
//! and the disk queue itself on a filesystem that fills up.
//!
//! Every check counts samples; none measures time. Most tests run an HTTP probe every second
//! against a local target; the number of runs is the target's hit count (a run abandoned by a
//! kill or a shutdown hits the target without publishing, hence the "at most one fewer"
//! bounds) and, exactly, the `pushprobe_probe_runs_total` an agent pushes in its last
//! self-metrics snapshot. The test of twenty kills scrapes a target that numbers its answers
//! instead, so each stored sample names the scrape it came from: loss, duplication and order
//! are checked number by number. The full-filesystem test mounts a 2 MiB tmpfs (as root).

mod common;

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::rw_receiver::RwReceiver;
use common::*;
use pushprobe::queue::disk::fs::{AppendFile, Fs, ReadFile, RealFs};
use pushprobe::queue::disk::{DiskConsumer, DiskLog, DiskQueueOptions};
use pushprobe::queue::Queue;
use pushprobe::series::{Labels, Sample};

const SELECTOR: &str = r#"probe_success{probe="x"}"#;

/// An agent with a disk queue in `data` (relative to its directory), one receiver named
/// `prom`, one HTTP probe `x` every second, and the health listener on `listen`.
fn config(write_url: &str, target_url: &str, listen: u16, remote_write_extra: &str) -> String {
    format!(
        "[agent]\n\
         data_dir = \"data\"\n\
         listen = \"127.0.0.1:{listen}\"\n\
         self_metrics_interval = \"1s\"\n\
         drain_timeout = \"60s\"\n\
         \n\
         [[remote_write]]\n\
         name = \"prom\"\n\
         url = {}\n\
         batch_send_deadline = \"500ms\"\n\
         max_backoff = \"1s\"\n\
         {remote_write_extra}\n\
         \n\
         [[probe]]\n\
         name = \"x\"\n\
         kind = \"http\"\n\
         url = {}\n\
         interval = \"1s\"\n\
         timeout = \"1s\"\n",
        toml_string(write_url),
        toml_string(target_url),
    )
}

/// Polls `cond` every 100 ms until it holds; panics with `what` after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not reached after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sum of the agent's self-metric lines starting with `prefix`, from its `/metrics`.
async fn agent_metric(listen: u16, prefix: &str) -> Option<f64> {
    let text = http_get_text(
        &http_client(),
        &format!("http://127.0.0.1:{listen}/metrics"),
    )
    .await
    .ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Waits until the agent reports samples queued for the receiver.
async fn wait_for_backlog(listen: u16) {
    let deadline = Instant::now() + DATA_TIMEOUT;
    loop {
        let pending = agent_metric(listen, "pushprobe_remote_write_pending_samples").await;
        if pending.is_some_and(|p| p > 0.0) {
            return;
        }
        assert!(Instant::now() < deadline, "no backlog reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Samples of probe `x`'s `probe_success` stored by the receiver.
async fn stored(prom: &Prometheus) -> u64 {
    prom.query(&format!("count_over_time({SELECTOR}[30m])"))
        .await
        .first()
        .map_or(0, |r| r.value as u64)
}

/// Runs of probe `x` that the last agent published, from its final self-metrics snapshot.
async fn published_runs(prom: &Prometheus) -> u64 {
    prom.query(r#"sum(last_over_time(pushprobe_probe_runs_total{probe="x"}[30m]))"#)
        .await
        .first()
        .map_or(0, |r| r.value as u64)
}

/// Polls until the receiver stores at least `want` samples of probe `x`.
async fn wait_stored(prom: &Prometheus, want: u64) {
    let promql = format!("count_over_time({SELECTOR}[30m])");
    prom.wait_for(
        &promql,
        |r| r.first().is_some_and(|s| s.value as u64 >= want),
        Duration::from_secs(120),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_arrives_across_a_receiver_outage() {
    let Some(mut prom) = Prometheus::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let listen = free_port();
    let pp = Pushprobe::with_config(&config(
        &prom.write_url(),
        &target.url("/health"),
        listen,
        "",
    ));
    let agent = pp.spawn_run(&[]);
    prom.wait_for_any(SELECTOR).await;

    prom.kill();
    let hits_at_kill = target.hits();
    // Probing goes on while the receiver is down: the samples wait on disk.
    wait_until("probe runs during the outage", DATA_TIMEOUT, || {
        target.hits() >= hits_at_kill + 6
    })
    .await;
    wait_for_backlog(listen).await;
    prom.restart().await;

    let hits_at_restart = target.hits();
    wait_stored(&prom, hits_at_restart - 1).await;
    agent
        .terminate(Duration::from_secs(90))
        .await
        .assert_code(0);

    let runs = published_runs(&prom).await;
    let hits = target.hits();
    assert!(runs >= hits_at_kill + 6, "runs {runs}");
    assert!(hits == runs || hits == runs + 1, "hits {hits}, runs {runs}");
    assert_eq!(stored(&prom).await, runs, "one sample per run, none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_queued_on_disk_survive_sigkill_of_the_agent() {
    let Some(mut prom) = Prometheus::start().await else {
        return;
    };
    // The receiver is down from the start: everything the first agent measures is on disk.
    prom.kill();
    let target = TargetServer::start().await;
    let listen = free_port();
    let pp = Pushprobe::with_config(&config(
        &prom.write_url(),
        &target.url("/health"),
        listen,
        "",
    ));
    let first = pp.spawn_run_as("run-1", &[]);
    wait_until("probe runs", DATA_TIMEOUT, || target.hits() >= 6).await;
    wait_for_backlog(listen).await;
    first.kill();
    let first_hits = target.hits();

    let second = pp.spawn_run_as("run-2", &[]);
    // The kernel released the dead agent's lock; the live one holds it now.
    wait_until("second agent serving", DATA_TIMEOUT, || {
        std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
    })
    .await;
    // A second long-running agent on the same directory is refused before it starts: two
    // agents must never share one queue. (A short-lived `once`/`exec` falls back to memory
    // queues instead; tests/e2e_exec.rs covers that.)
    let config_path = pp.config_path().to_string_lossy().into_owned();
    let locked = pp
        .run_to_end(
            "run-locked",
            &["run", "--config", &config_path],
            Duration::from_secs(60),
        )
        .await;
    locked.assert_code(78);
    assert!(
        locked
            .stderr
            .contains("is in use by another pushprobe process"),
        "{}",
        locked.stderr
    );

    prom.restart().await;
    wait_stored(&prom, first_hits - 1).await;
    // A few runs of its own, so its last snapshot carries its own run count.
    wait_until("second agent's runs", DATA_TIMEOUT, || {
        target.hits() >= first_hits + 3
    })
    .await;
    let done = second.terminate(Duration::from_secs(90)).await;
    done.assert_code(0);
    assert!(
        done.stderr.contains("disk queue opened; resuming"),
        "{}",
        done.stderr
    );

    let second_runs = published_runs(&prom).await;
    let count = stored(&prom).await;
    // The first agent may have been killed between a probe's request and its publication.
    assert!(
        count == second_runs + first_hits || count + 1 == second_runs + first_hits,
        "stored {count}, first agent's runs {first_hits} (hits), second's {second_runs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_catch_up_loses_nothing() {
    let Some(mut prom) = Prometheus::start().await else {
        return;
    };
    prom.kill();
    let target = TargetServer::start().await;
    let listen = free_port();
    // Catch-up paced below the rate samples are produced: the agent is still catching up
    // whenever it is killed.
    let slow = config(
        &prom.write_url(),
        &target.url("/health"),
        listen,
        "max_samples_per_send = 20\nmax_shards = 2\nmax_catchup_bytes_per_second = \"1KiB\"",
    );
    let pp = Pushprobe::with_config(&slow);
    let first = pp.spawn_run_as("run-1", &[]);
    wait_until("probe runs", DATA_TIMEOUT, || target.hits() >= 8).await;
    wait_for_backlog(listen).await;
    prom.restart().await;
    wait_stored(&prom, 1).await;
    first.kill();
    let first_hits = target.hits();
    let partial = stored(&prom).await;
    assert!(
        partial + 1 < first_hits,
        "killed mid-catch-up: {partial} of {first_hits} stored"
    );

    pp.rewrite_config(&config(
        &prom.write_url(),
        &target.url("/health"),
        listen,
        "max_samples_per_send = 20\nmax_shards = 2",
    ));
    let second = pp.spawn_run_as("run-2", &[]);
    wait_stored(&prom, first_hits - 1).await;
    // A few runs of its own, so its last snapshot carries its own run count.
    wait_until("second agent's runs", DATA_TIMEOUT, || {
        target.hits() >= first_hits + 3
    })
    .await;
    let done = second.terminate(Duration::from_secs(90)).await;
    done.assert_code(0);

    let second_runs = published_runs(&prom).await;
    let count = stored(&prom).await;
    assert!(
        count == second_runs + first_hits || count + 1 == second_runs + first_hits,
        "stored {count}, first agent's runs {first_hits} (hits), second's {second_runs}\n{}",
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_are_counted_and_do_not_stall_the_rest() {
    // About every third probe result is a bad sample, and a request holding one is refused
    // whole, as Prometheus does: the agent sends the rest again in parts until only the bad
    // series' part is refused. The first window after start (at most max_shards requests) is
    // left alone: a refusal there takes the after-restart path, which re-sends series by series.
    let receiver = RwReceiver::start(|n, request| {
        let bad = request.timeseries.iter().any(|t| {
            t.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == "probe_success")
                && t.samples.iter().any(|s| (s.timestamp / 1000) % 3 == 1)
        });
        if n >= 6 && bad {
            400
        } else {
            204
        }
    })
    .await;
    let target = TargetServer::start().await;
    let listen = free_port();
    let pp = Pushprobe::with_config(&config(
        &receiver.write_url(),
        &target.url("/health"),
        listen,
        "max_samples_per_send = 10",
    ));
    let agent = pp.spawn_run(&[]);
    wait_until("refusals and later deliveries", DATA_TIMEOUT, || {
        let series = receiver.series("probe_success{");
        let tally = series.values().next().cloned().unwrap_or_default();
        match (tally.refused.first(), tally.accepted.last()) {
            (Some(first_refused), Some(last_accepted)) => {
                last_accepted > first_refused && tally.accepted.len() >= 3
            }
            _ => false,
        }
    })
    .await;

    // The agent counts exactly what the receiver refused for good, i.e. never accepted in a
    // part sent again (compared while no request is in flight, which the 1 s probe interval
    // leaves room for).
    let deadline = Instant::now() + DATA_TIMEOUT;
    loop {
        let refused: usize = receiver
            .series("")
            .values()
            .map(|t| {
                let refused: BTreeSet<i64> = t.refused.iter().copied().collect();
                refused.iter().filter(|ts| !t.accepted.contains(ts)).count()
            })
            .sum();
        let failed = agent_metric(listen, "pushprobe_remote_write_samples_failed_total").await;
        if failed == Some(refused as f64) && refused > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent counts {failed:?} failed, receiver refused {refused}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent
        .terminate(Duration::from_secs(90))
        .await
        .assert_code(0);

    let series = receiver.series("probe_success{");
    assert_eq!(series.len(), 1, "{series:?}");
    let tally = series.into_values().next().unwrap();
    let accepted: BTreeSet<i64> = tally.accepted.iter().copied().collect();
    assert_eq!(
        accepted.len(),
        tally.accepted.len(),
        "each sample accepted once"
    );
    // Refused whole, then accepted in a part: answered all the same.
    let all: BTreeSet<i64> = accepted
        .union(&tally.refused.iter().copied().collect())
        .copied()
        .collect();
    let total = all.len() as u64;
    let hits = target.hits();
    assert!(
        total == hits || total + 1 == hits,
        "{total} answered, {hits} runs"
    );
}

// ---- a full filesystem ----------------------------------------------------------------------

/// A tmpfs mounted on a temporary directory for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it); the error says why not.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Before the directory itself is removed (fields drop after this).
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Bytes the regular files under `root` (and its subdirectories) hold.
fn bytes_under(root: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The real filesystem with a byte budget over everything under `root`: a write past it
/// stores what fits and fails with ENOSPC, as a full filesystem does.
#[derive(Debug, Clone)]
struct BudgetFs {
    root: PathBuf,
    capacity: u64,
}

#[derive(Debug)]
struct BudgetFile {
    fs: BudgetFs,
    file: Box<dyn AppendFile>,
}

impl AppendFile for BudgetFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let room = self.fs.capacity.saturating_sub(bytes_under(&self.fs.root));
        let fits = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.file.append(&buf[..fits])?;
        if fits < buf.len() {
            return Err(io::Error::from_raw_os_error(28));
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync()
    }
}

impl Fs for BudgetFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        RealFs.list(dir)
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = RealFs.open_append(path)?;
        Ok(Box::new(BudgetFile {
            fs: self.clone(),
            file,
        }))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = RealFs.create(path)?;
        Ok(Box::new(BudgetFile {
            fs: self.clone(),
            file,
        }))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        RealFs.open_read(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        RealFs.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
}

/// `n` samples of three series, values (and timestamps) counting up from `from`.
fn numbered(from: u64, n: u64) -> Vec<Sample> {
    let series: Vec<Labels> = (0..3)
        .map(|i| Labels::with_name("full_disk_test", [("series", format!("s{i}"))]).unwrap())
        .collect();
    (from..from + n)
        .map(|v| Sample {
            labels: series[(v % 3) as usize].clone(),
            value: v as f64,
            timestamp_ms: 1_700_000_000_000 + v as i64,
        })
        .collect()
}

/// Values a consumer would send now, acknowledging them when `ack`.
fn take_values(c: &mut DiskConsumer, ack: bool) -> Vec<u64> {
    let Some(batch) = c.peek(usize::MAX).expect("peek") else {
        return Vec::new();
    };
    if ack {
        c.ack(batch.last_seq).expect("ack");
    }
    batch.iter().map(|s| s.value as u64).collect()
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .count()
        })
        .unwrap_or(0)
}

/// Runs the disk queue, with its default bound (1 GiB) and segment size (16 MiB), in `root`,
/// a filesystem of `capacity` bytes reached through `fs`; `fill` takes whatever room is left
/// with a file of its own, whose path it returns.
fn check_full_filesystem(
    fs: Arc<dyn Fs>,
    root: &Path,
    capacity: u64,
    fill: impl Fn(&Path) -> PathBuf,
) {
    const BATCH: u64 = 50;
    let dir = root.join("queue");
    let names = ["slow".to_string(), "fast".to_string()];
    let options = DiskQueueOptions::default;
    let (log, mut cs) = DiskLog::open(&dir, options(), fs.clone(), &names).expect("open");

    // Write four times what fits, the fast endpoint keeping up, the slow one not at all.
    log.append(&numbered(0, BATCH)).expect("first append");
    let per_batch = log.stats().bytes;
    let batches = 4 * capacity / per_batch;
    let mut most_segments = 0;
    for i in 1..batches {
        log.append(&numbered(i * BATCH, BATCH))
            .unwrap_or_else(|e| panic!("append {i} of {batches}: {e}"));
        take_values(&mut cs[1], true);
        most_segments = most_segments.max(log.stats().segments);
    }
    let written = batches * BATCH;
    let s = log.stats();
    assert!(s.dropped.disk_full > 0, "{s:?}");
    assert_eq!(s.consumers[0].dropped.disk_full, s.dropped.disk_full);
    assert_eq!(s.consumers[1].dropped.disk_full, 0);
    assert_eq!(s.write_errors, 0, "every append went through");
    assert!(most_segments <= 6, "{most_segments} segments at most");
    let kept = take_values(&mut cs[0], false);
    assert_eq!(kept.len() as u64 + s.dropped.disk_full, written);
    assert!(kept[0] > 0, "the oldest went");
    assert_eq!(*kept.last().unwrap(), written - 1, "the newest stayed");
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "no hole");
    assert!(
        s.bytes >= capacity / 2,
        "most of the room holds data: {} of {capacity}",
        s.bytes
    );

    // Everything delivered and the queue restarted, so it holds no data; then someone else
    // takes all the room: nothing is left to drop.
    take_values(&mut cs[0], true);
    drop((log, cs));
    let (log, mut cs) = DiskLog::open(&dir, options(), fs.clone(), &names).expect("reopen");
    assert_eq!(log.stats().segments, 0, "all delivered, all removed");
    let hog = fill(root);
    let mut next = written;
    let before = log.stats();
    let files = segment_files(&dir);
    for _ in 0..20 {
        let err = log.append(&numbered(next, BATCH)).expect_err("no room");
        assert!(err.is_out_of_space(), "{err}");
        next += BATCH;
    }
    let s = log.stats();
    assert_eq!(s.dropped.disk_full, before.dropped.disk_full + 20 * BATCH);
    assert_eq!(s.consumers[0].dropped.disk_full, s.dropped.disk_full);
    assert!(
        segment_files(&dir) <= files.max(1),
        "no segment per failure"
    );

    // Room again: the queue takes new samples by itself.
    std::fs::remove_file(&hog).expect("remove the filler");
    log.append(&numbered(next, BATCH))
        .expect("append once space is back");
    let want: Vec<u64> = (next..next + BATCH).collect();
    assert_eq!(take_values(&mut cs[0], true), want);
    assert_eq!(take_values(&mut cs[1], true), want);
    drop((log, cs));
    let (log, _cs) = DiskLog::open(&dir, options(), fs, &names).expect("reopen");
    assert!(
        !log.recovery_report().found_damage(),
        "{:?}",
        log.recovery_report()
    );
}

#[test]
fn a_full_filesystem_drops_the_oldest_samples_and_the_queue_recovers() {
    const CAPACITY: u64 = 2 << 20;
    match Tmpfs::mount("2m") {
        Ok(tmpfs) => check_full_filesystem(Arc::new(RealFs), tmpfs.path(), CAPACITY, |root| {
            let hog = root.join("hog");
            let mut f = std::fs::File::create(&hog).expect("create filler");
            let chunk = [0u8; 4096];
            while f.write_all(&chunk).is_ok() {}
            hog
        }),
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "SKIPPED a_full_filesystem_drops_the_oldest_samples_and_the_queue_recovers: \
                 cannot mount a tmpfs ({why}); the queue's unit tests cover a full filesystem \
                 through its Fs trait"
            );
        }
        Err(why) => {
            // In CI a skip would pass unseen: the same checks run through the queue's Fs trait
            // instead, with a byte budget on the real filesystem standing in for the tmpfs.
            eprintln!("cannot mount a tmpfs ({why}); checking through a byte budget instead");
            let root = tempfile::tempdir().expect("temporary directory");
            let fs = BudgetFs {
                root: root.path().to_path_buf(),
                capacity: CAPACITY,
            };
            check_full_filesystem(Arc::new(fs), root.path(), CAPACITY, |root| {
                let hog = root.join("hog");
                let room = CAPACITY.saturating_sub(bytes_under(root));
                std::fs::write(&hog, vec![0u8; room as usize]).expect("write filler");
                hog
            });
        }
    }
}

// ---- crash-safety at scale ----------------------------------------------------------------

/// A scrape target whose one sample, `crash_counter`, is its own hit count: each scrape gets
/// the next number, so every number stored names one scrape.
struct CounterTarget {
    addr: std::net::SocketAddr,
    hits: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CounterTarget {
    async fn start() -> CounterTarget {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind counter target");
        let addr = listener.local_addr().expect("counter target address");
        let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let body = format!("crash_counter {n}\n");
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    // A scraper killed mid-response is what this target is for.
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        CounterTarget { addr, hits, task }
    }

    /// Scrapes answered so far (the last number handed out).
    fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CounterTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// SplitMix64: a small seeded generator, so a failing run can be repeated with its seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration between `lo` and `hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

/// An agent with a disk queue scraping the counter every 200 ms, writing to `write_url`;
/// `remote_write_extra` goes into its `[[remote_write]]` section.
fn crash_config(write_url: &str, target: &str, remote_write_extra: &str) -> String {
    format!(
        "[agent]\n\
         data_dir = \"data\"\n\
         drain_timeout = \"60s\"\n\
         \n\
         [[remote_write]]\n\
         name = \"prom\"\n\
         url = {}\n\
         batch_send_deadline = \"200ms\"\n\
         max_backoff = \"500ms\"\n\
         {remote_write_extra}\n\
         \n\
         [[scrape]]\n\
         job = \"crash\"\n\
         targets = [{}]\n\
         interval = \"200ms\"\n\
         timeout = \"150ms\"\n",
        toml_string(write_url),
        toml_string(target),
    )
}

/// Scrape numbers that may legitimately be missing: each kill (or the final shutdown) may
/// abandon the scrape in flight, which is any number handed out from just before the signal
/// until the next agent starts. Every other number was queued before the next scrape began.
#[derive(Debug, Default)]
struct InFlight(Vec<std::ops::RangeInclusive<u64>>);

impl InFlight {
    fn contains(&self, n: u64) -> bool {
        self.0.iter().any(|r| r.contains(&n))
    }
}

/// Kills `agent` at once and records the scrape numbers it may have left unqueued.
async fn kill_recording(agent: RunningAgent, target: &CounterTarget, in_flight: &mut InFlight) {
    let before = target.hits();
    agent.kill();
    // A request the dead agent had sent may still be read (and numbered) by the target.
    tokio::time::sleep(Duration::from_millis(50)).await;
    in_flight.0.push(before.max(1)..=target.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_at_random_moments_lose_and_duplicate_nothing() {
    let Some(mut prom) = Prometheus::start().await else {
        return;
    };
    let seed = std::env::var("PUSHPROBE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    eprintln!("crash test seed {seed} (set PUSHPROBE_CRASH_SEED={seed} to repeat it)");
    let mut rng = SplitMix(seed);
    let target = CounterTarget::start().await;
    // Catch-up paced below what the scrapes produce: once the receiver is back, every agent
    // until the last is killed while still draining the backlog.
    let paced = crash_config(
        &prom.write_url(),
        &target.addr.to_string(),
        "max_samples_per_send = 20\nmax_shards = 2\nmax_catchup_bytes_per_second = \"2KiB\"",
    );
    let pp = Pushprobe::with_config(&paced);
    let mut in_flight = InFlight::default();
    let mut outage_end = 0;
    let mut killed_mid_drain = 0;
    for kill in 0..20 {
        if kill == 6 {
            // The receiver goes away: the next agents queue everything on disk.
            prom.kill();
        }
        if kill == 12 {
            prom.restart().await;
            outage_end = target.hits();
        }
        let agent = pp.spawn_run_as(&format!("run-{kill}"), &[]);
        // From before the first scrape (during start-up and recovery) to a few scrapes in;
        // longer during the catch-up, so that it makes progress between kills.
        // The first kill after the outage comes soon, well before the backlog can drain.
        let alive = match kill {
            6..=11 => rng.millis(500, 1500),
            12 => rng.millis(100, 1000),
            13.. => rng.millis(200, 2500),
            _ => rng.millis(50, 1500),
        };
        tokio::time::sleep(alive).await;
        kill_recording(agent, &target, &mut in_flight).await;
        if kill >= 12 {
            let stored = stored_counter(&prom).await.len() as u64;
            eprintln!(
                "kill {kill}: {stored} scrapes stored of {} made",
                target.hits()
            );
            if stored + 1 < outage_end {
                killed_mid_drain += 1;
            }
        }
    }
    assert!(
        killed_mid_drain > 0,
        "no kill landed before the backlog of the outage was delivered"
    );

    // A last agent, not paced, drains everything and stops cleanly.
    pp.rewrite_config(&crash_config(
        &prom.write_url(),
        &target.addr.to_string(),
        "max_samples_per_send = 20\nmax_shards = 2",
    ));
    let last = pp.spawn_run_as("run-final", &[]);
    let made = target.hits();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = stored_counter(&prom).await;
        let missing = (1..=made)
            .filter(|n| !stored.iter().any(|(_, v)| v == n) && !in_flight.contains(*n))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} scrapes not delivered by the final agent (seed {seed})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let before_stop = target.hits();
    last.terminate(Duration::from_secs(90)).await.assert_code(0);
    in_flight.0.push(before_stop..=target.hits());

    let stored = stored_counter(&prom).await;
    let made = target.hits();
    let mut seen = std::collections::BTreeMap::new();
    for (_, v) in &stored {
        *seen.entry(*v).or_insert(0u32) += 1;
    }
    let duplicated: Vec<u64> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(v, _)| *v)
        .collect();
    let lost: Vec<u64> = (1..=made)
        .filter(|n| !seen.contains_key(n) && !in_flight.contains(*n))
        .collect();
    let abandoned = (1..=made).filter(|n| !seen.contains_key(n)).count();
    eprintln!(
        "seed {seed}: {made} scrapes made, {} stored, {abandoned} abandoned in flight by a kill",
        stored.len()
    );
    assert!(lost.is_empty(), "lost {lost:?} (seed {seed})");
    assert!(
        duplicated.is_empty(),
        "duplicated {duplicated:?} (seed {seed})"
    );
    assert!(
        seen.keys().all(|v| (1..=made).contains(v)),
        "numbers never handed out: {seen:?}"
    );
    // In order: each later sample carries a later scrape's number.
    assert!(
        stored
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
        "out of order (seed {seed}): {stored:?}"
    );
}

/// `(timestamp_ms, number)` of every `crash_counter` sample stored, in time order (staleness
/// markers left out).
async fn stored_counter(prom: &Prometheus) -> Vec<(i64, u64)> {
    let series = prom
        .raw_samples(r#"crash_counter{job="crash"}"#, "1h")
        .await;
    assert!(series.len() <= 1, "one series expected: {series:?}");
    series
        .into_iter()
        .flat_map(|s| s.samples)
        .filter(|(_, v)| !v.is_nan())
        .map(|(t, v)| (t, v as u64))
        .collect()
}
