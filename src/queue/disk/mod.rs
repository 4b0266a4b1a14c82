//! A durable, bounded, multi-consumer queue on disk: samples survive receiver outages,
//! process crashes (SIGKILL, OOM) and restarts.
//!
//! # Design
//!
//! **One log, many readers.** The agent appends each batch once to a single [`DiskLog`];
//! every remote-write endpoint reads it through its own [`DiskConsumer`], which implements
//! [`Queue`] and keeps its own durable acknowledgement position. Writing once keeps disk use
//! and write cost independent of the number of endpoints; a slow endpoint holds data back
//! for itself only (until the disk bound, below).
//!
//! **Files.** Everything lives in one directory:
//! - `<base_seq:020>.seg`: append-only segments. The name is the sequence number of the
//!   first sample the segment was created for, so names sort in log order. A segment is a
//!   sequence of records (see [`format`](mod@format)): a 24-byte header (magic+version, payload length,
//!   first sequence number, sample count, CRC32C over header fields and payload) and a
//!   payload that encodes a batch of samples with their full label sets, so each record
//!   decodes on its own. Sample `i` of a record has sequence number `first_seq + i`.
//! - `<consumer>.ack`: per consumer, the first sequence number it has not acknowledged
//!   (see [`ackfile`]), replaced atomically (temporary file, then rename).
//! - `*.tmp`: an interrupted atomic replacement; removed at open.
//!
//! **Invariants.** Sequence numbers strictly increase along the log, across segments and
//! restarts, and are never reused for a number any consumer may have acknowledged (at open
//! the next number is the maximum of the log's end and every stored position). Bytes below a
//! segment's known length never change once written: after a failed write the segment is
//! sealed and the next append starts a new one, and at open appends always go to a new
//! segment. Only the newest segment is written to. A segment is deleted once every consumer
//! has acknowledged all of it, or when the disk bound or a full filesystem needs its space.
//! (A write that fails for want of space is cut off and the same segment goes on; see
//! "Full filesystem".)
//!
//! **Recovery** (at [`DiskLog::open`]) never fails on content. Every segment is scanned and
//! every record's checksum verified, one buffered window at a time (memory does not grow with
//! the backlog; the cost is one sequential read of the retained log). A bad record is skipped
//! by looking for the next magic that begins a record whose checksum holds; the skipped bytes
//! become a *hole* that readers jump over. Bytes after the last valid record (a torn write, a
//! zero-filled tail left by a power loss) are truncated. A segment with no valid record is
//! removed; one that cannot be read is left alone and skipped. An acknowledgement file that
//! does not decode restarts its consumer from the oldest retained data. Everything lost is
//! counted in the [`RecoveryReport`] and logged with `tracing::warn`. Corruption that appears
//! after open (bit rot) is found when reading, skipped the same way and counted in
//! [`DiskStats::corrupt_records`].
//!
//! **Delivery is at least once.** A consumer's position only moves on [`Queue::ack`] (or past
//! samples too old to send), so after a crash it resumes at its last *persisted* position and
//! re-sends what it had sent but not yet persisted as acknowledged. Receivers (Prometheus,
//! Mimir, VictoriaMetrics) accept or drop an identical sample (same series, timestamp and
//! value) sent twice, so duplicates are harmless. A consumer that is new (no acknowledgement
//! file) starts at the oldest retained data: no sample is skipped, at the price of possibly
//! re-sending data another endpoint already delivered. Consumers with an acknowledgement file
//! but absent from the configuration are forgotten (file removed) so they no longer pin data.
//!
//! **Durability by [`FsyncPolicy`].** A process crash (SIGKILL, OOM, panic) loses nothing
//! under any policy: written data is in the kernel's page cache. A power loss or kernel crash
//! loses what was not yet synced:
//! - `Never`: whatever the page cache held (the kernel writes back within ~30 s by default).
//! - `Interval(d)` (default 1 s): up to `d` of appends; a background thread syncs the active
//!   segment and acknowledgement files every `d`.
//! - `Always`: nothing an `append` returned `Ok` for; costs one fsync per append.
//!
//! A lost acknowledgement only ever moves a position *back* (duplicates, not loss).
//!
//! **Bounds.** `max_disk_bytes` caps the segments' total size: when an append would exceed it
//! the oldest segment is deleted even if not acknowledged, and its unacknowledged samples are
//! counted as dropped for reason `disk_full` (per consumer, and once in total). Segments are at
//! most a quarter of the bound, so dropping frees space in steps of at most 25%.
//! `max_sample_age` skips samples older than it when read, counted for reason `too_old`:
//! Prometheus refuses a whole write request if one sample is older than its head block, so
//! sending them would block the endpoint forever. Reads decode only the records a
//! [`Queue::peek`] needs, so memory stays flat however large the backlog.
//!
//! **Full filesystem.** The filesystem may run out of space (ENOSPC) or quota (EDQUOT) long
//! before `max_disk_bytes`. The log then takes the space it holds as the bound: what the
//! failed write left is cut off, the oldest segment is deleted (even if not acknowledged; its
//! samples are counted as dropped for reason `disk_full`, as under the bound) and the write is
//! tried again in the room made, in the same segment, until it goes through. From then on
//! segments are at most a quarter of what the log held when space ran out (the segment being
//! written is sealed, and so can be deleted, if already larger), so later deletions free it in
//! steps of at most 25%; they grow back as the log does once more fits. When nothing is left
//! to delete (others fill the filesystem), the new samples are dropped, counted for reason
//! `disk_full`, and the append returns the error; the log stays usable, and the next append
//! tries again, so it recovers by itself once space is freed. An acknowledgement position
//! that cannot be written for want of space stays in memory and is written at the next
//! chance (a crash before then only re-sends). No segment is created per failure, and the
//! log says so once, then once a minute while it lasts (see [`full`]).
//!
//! **Concurrency.** One mutex guards the log; appends and reads are short (one write system
//! call per append; a peek decodes at most the records it returns).

pub mod ackfile;
pub mod format;
pub mod fs;
pub mod full;
#[cfg(test)]
pub mod memfs;
pub mod segment;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use self::format::{EncodeScratch, FormatError, RecordHeader, HEADER_LEN, MAX_PAYLOAD_LEN};
use self::fs::{AppendFile, Fs};
use self::segment::{RecordFault, SegmentMeta, SegmentReader};
use super::{AppendOutcome, Batch, Queue, QueueError, Seq};
use crate::series::Sample;

/// Most samples in one record: bounds the work of decoding a record to serve a small peek.
pub const MAX_SAMPLES_PER_RECORD: usize = 2048;
/// Default bound on the queue's disk use: 1 GiB.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 1 << 30;
/// Default segment size: 16 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// Smallest disk bound accepted: 1 MiB.
pub const MIN_DISK_BYTES: u64 = 1 << 20;
/// Smallest segment accepted: 4 KiB.
pub const MIN_SEGMENT_BYTES: u64 = 4 << 10;

/// When appended data and acknowledgement positions are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every append and acknowledgement: a power loss loses nothing acknowledged.
    Always,
    /// At most this long after a write: a power loss loses up to this much.
    Interval(Duration),
    /// Never explicitly: a power loss loses what the page cache held.
    Never,
}

/// Settings of a disk queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskQueueOptions {
    /// Most bytes the segments may take; the oldest segment is dropped beyond it.
    pub max_disk_bytes: u64,
    /// Size at which a segment is closed and a new one started (at most a quarter of
    /// `max_disk_bytes` is used).
    pub segment_bytes: u64,
    /// When data is synced to stable storage.
    pub fsync: FsyncPolicy,
    /// Samples older than this when read are skipped instead of sent.
    pub max_sample_age: Option<Duration>,
}

impl Default for DiskQueueOptions {
    fn default() -> Self {
        DiskQueueOptions {
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            max_sample_age: None,
        }
    }
}

impl DiskQueueOptions {
    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<(), QueueError> {
        let bad = |field: &'static str, message: String| {
            Err(QueueError::InvalidOptions { field, message })
        };
        if self.max_disk_bytes < MIN_DISK_BYTES {
            return bad(
                "max_disk_bytes",
                format!(
                    "{} is below the minimum {MIN_DISK_BYTES}",
                    self.max_disk_bytes
                ),
            );
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return bad(
                "segment_bytes",
                format!(
                    "{} is below the minimum {MIN_SEGMENT_BYTES}",
                    self.segment_bytes
                ),
            );
        }
        if self.fsync == FsyncPolicy::Interval(Duration::ZERO) {
            return bad("fsync_interval", "must be > 0".into());
        }
        if self.max_sample_age == Some(Duration::ZERO) {
            return bad("max_sample_age", "must be > 0".into());
        }
        Ok(())
    }

    /// Segment size used: the configured one, at most a quarter of the disk bound.
    pub fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes
            .min(self.max_disk_bytes / 4)
            .max(MIN_SEGMENT_BYTES)
    }
}

/// Source of "now" in milliseconds since the Unix epoch, for `max_sample_age`.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What recovery found and repaired when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files found.
    pub segments_found: u64,
    /// Valid records found.
    pub records_recovered: u64,
    /// Valid samples found.
    pub samples_recovered: u64,
    /// Corrupt regions skipped between valid records (each at least one record).
    pub records_skipped: u64,
    /// Bytes in those regions.
    pub bytes_skipped: u64,
    /// Bytes cut from segment ends (torn writes, zero-filled tails).
    pub bytes_truncated: u64,
    /// Segment files that could not be read and were left alone.
    pub segments_skipped: u64,
    /// Segment files without a single valid record, removed.
    pub segments_removed: u64,
    /// Sequence numbers missing between valid records: samples known to be lost.
    pub samples_missing: u64,
    /// Acknowledgement files that did not decode; their consumers restart at the oldest data.
    pub ack_files_reset: u64,
    /// Acknowledgement files (file names) of consumers no longer configured, removed.
    pub consumers_forgotten: Vec<String>,
    /// Configured consumers without a position on disk (they start at the oldest data).
    pub consumers_new: Vec<String>,
    /// Interrupted atomic writes cleaned up.
    pub temp_files_removed: u64,
}

impl RecoveryReport {
    /// Tells whether anything was lost or repaired (as opposed to a clean start).
    pub fn found_damage(&self) -> bool {
        self.records_skipped
            + self.bytes_truncated
            + self.segments_skipped
            + self.segments_removed
            + self.samples_missing
            + self.ack_files_reset
            > 0
    }
}

/// Samples dropped without being sent, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Dropped for room (`disk_full`): with the oldest segment because the disk bound was
    /// reached or the filesystem was full, or, new, because a full filesystem left nothing
    /// older to drop.
    pub disk_full: u64,
    /// Skipped at read time as older than `max_sample_age` (`too_old`).
    pub too_old: u64,
}

/// Per-consumer figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Consumer (endpoint) name.
    pub name: String,
    /// Samples not yet acknowledged.
    pub pending: u64,
    /// First sequence number not acknowledged.
    pub next_seq: Seq,
    /// Samples this consumer lost, by reason.
    pub dropped: DropCounts,
}

/// Figures for the agent to export as metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskStats {
    /// Bytes the segments hold.
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Samples retained (acknowledged by some consumers or none).
    pub samples: u64,
    /// Sequence number the next appended sample gets.
    pub next_seq: Seq,
    /// Dropped samples: `disk_full` counts each sample once (if any consumer still needed
    /// it, and every new sample a full filesystem left no room for); `too_old` sums over
    /// consumers.
    pub dropped: DropCounts,
    /// Corrupt records found since open, at open and when reading
    /// (`pushprobe_queue_corrupt_records_total`).
    pub corrupt_records: u64,
    /// Bytes skipped or truncated as corrupt since open.
    pub corrupt_bytes: u64,
    /// Appends that failed on a write or sync error (a full filesystem counts only when no
    /// room could be made).
    pub write_errors: u64,
    /// Per consumer.
    pub consumers: Vec<ConsumerStats>,
}

/// The shared log; see the module documentation.
pub struct DiskLog {
    inner: Mutex<Inner>,
    report: RecoveryReport,
}

impl std::fmt::Debug for DiskLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskLog")
            .field("dir", &self.lock().dir)
            .finish_non_exhaustive()
    }
}

/// One endpoint's view of the log; implements [`Queue`].
#[derive(Debug)]
pub struct DiskConsumer {
    log: Arc<DiskLog>,
    index: usize,
}

struct ActiveSegment {
    file: Box<dyn AppendFile>,
    unsynced: bool,
}

/// Where a consumer's next read starts: all records before `offset` in segment `base_seq`
/// end at or before the consumer's position. A hint, checked before use.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    base_seq: u64,
    offset: u64,
}

struct ConsumerState {
    name: String,
    ack_path: PathBuf,
    /// First sequence number not acknowledged.
    next: Seq,
    /// Position last written to the acknowledgement file.
    persisted: Seq,
    /// Whether the written position is also synced.
    synced: bool,
    last_sync: Instant,
    cursor: Option<Cursor>,
    reader: Option<(u64, SegmentReader)>,
    /// Too-old samples below this were already counted.
    too_old_counted: Seq,
    dropped: DropCounts,
    /// Reads stop before this sequence number: its endpoint was removed, and it only drains
    /// what was queued until then.
    until: Option<Seq>,
    /// Its endpoint is gone: it pins no data, reads nothing and has no position on disk.
    released: bool,
}

impl ConsumerState {
    /// A consumer at its `stored` position, or at `start` when it has none on disk yet.
    fn new(name: &str, ack_path: PathBuf, stored: Option<Seq>, start: Seq, now: Instant) -> Self {
        let next = stored.unwrap_or(start);
        ConsumerState {
            name: name.to_string(),
            ack_path,
            next,
            persisted: if stored.is_some() { next } else { Seq::MAX },
            synced: stored.is_some(),
            last_sync: now,
            cursor: None,
            reader: None,
            too_old_counted: 0,
            dropped: DropCounts::default(),
            until: None,
            released: false,
        }
    }
}

struct Inner {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    opts: DiskQueueOptions,
    segment_bytes: u64,
    /// Segment size learnt when the filesystem ran out of space (see "Full filesystem").
    room_segment_bytes: Option<u64>,
    clock: Clock,
    /// Oldest first; only the last may be active.
    segments: VecDeque<SegmentMeta>,
    active: Option<ActiveSegment>,
    next_seq: Seq,
    bytes: u64,
    last_sync: Instant,
    consumers: Vec<ConsumerState>,
    scratch: EncodeScratch,
    buf: Vec<u8>,
    records: Vec<RecordHeader>,
    dropped_disk_full: u64,
    corrupt_records: u64,
    corrupt_bytes: u64,
    write_errors: u64,
    full_log: full::FullDiskLog,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl DiskLog {
    /// Opens (or creates) the queue in `dir` for the named consumers, recovering whatever
    /// state a crash left; returns the log and one consumer per name, in order.
    pub fn open(
        dir: &Path,
        opts: DiskQueueOptions,
        fs: Arc<dyn Fs>,
        consumers: &[String],
    ) -> Result<(Arc<DiskLog>, Vec<DiskConsumer>), QueueError> {
        Self::open_with_clock(dir, opts, fs, consumers, Arc::new(crate::clock::now_ms))
    }

    /// [`DiskLog::open`] with an explicit clock (for `max_sample_age`).
    pub fn open_with_clock(
        dir: &Path,
        opts: DiskQueueOptions,
        fs: Arc<dyn Fs>,
        consumers: &[String],
        clock: Clock,
    ) -> Result<(Arc<DiskLog>, Vec<DiskConsumer>), QueueError> {
        opts.validate()?;
        for (i, name) in consumers.iter().enumerate() {
            if name.is_empty() || consumers[..i].contains(name) {
                return Err(QueueError::InvalidOptions {
                    field: "consumers",
                    message: format!("consumer names must be distinct and not empty: {name:?}"),
                });
            }
        }
        let (inner, report) = recover(dir, opts, fs, consumers, clock)?;
        let log = Arc::new(DiskLog {
            inner: Mutex::new(inner),
            report,
        });
        if let FsyncPolicy::Interval(every) = log.lock().opts.fsync {
            spawn_syncer(Arc::downgrade(&log), every);
        }
        let handles = (0..consumers.len())
            .map(|index| DiskConsumer {
                log: log.clone(),
                index,
            })
            .collect();
        Ok((log, handles))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation leaves `Inner` consistent before anything that can panic, so a
        // poisoned lock is taken over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends samples for every consumer. On an error nothing of the failed record is
    /// visible; records of the same call written before it stay (and will be delivered).
    pub fn append(&self, samples: &[Sample]) -> Result<AppendOutcome, QueueError> {
        self.lock().append(samples)
    }

    /// Adds a consumer while the log is open (an endpoint a reload added). It starts at the
    /// log's tail: it gets what is appended from now on, not the backlog kept for the others,
    /// and its position is written at once so that a restart resumes it there too. A name
    /// released before is taken up again from the tail.
    pub fn add_consumer(self: &Arc<Self>, name: &str) -> Result<DiskConsumer, QueueError> {
        let index = self.lock().add_consumer(name)?;
        Ok(DiskConsumer {
            log: self.clone(),
            index,
        })
    }

    /// What recovery found when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Current figures.
    pub fn stats(&self) -> DiskStats {
        self.lock().stats()
    }

    /// Syncs appended data and acknowledgement positions now, whatever the policy.
    pub fn flush(&self) -> Result<(), QueueError> {
        self.lock().sync_all()
    }

    /// Syncs what the `Interval` policy says is due; the background thread calls it.
    fn sync_due(&self) {
        let mut inner = self.lock();
        if let Err(e) = inner.sync_due() {
            tracing::warn!(error = %e, "disk queue: periodic sync failed");
        }
    }
}

impl Drop for DiskLog {
    fn drop(&mut self) {
        if let Err(e) = self.lock().sync_all() {
            tracing::warn!(error = %e, "disk queue: final sync failed");
        }
    }
}

fn spawn_syncer(log: Weak<DiskLog>, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("pushprobe-diskq-sync".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            match log.upgrade() {
                Some(log) => log.sync_due(),
                None => return,
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "disk queue: cannot start the sync thread; data is synced on append only");
    }
}

impl DiskConsumer {
    /// The consumer's name.
    pub fn name(&self) -> String {
        self.log.lock().consumers[self.index].name.clone()
    }

    /// The shared log.
    pub fn log(&self) -> &Arc<DiskLog> {
        &self.log
    }

    /// Ends this consumer's view at the log's current tail: what is appended from now on is
    /// not for it (its endpoint was removed and drains what it had).
    pub fn end_at_tail(&self) {
        let mut inner = self.log.lock();
        let tail = inner.next_seq;
        inner.consumers[self.index].until = Some(tail);
    }

    /// Gives up this consumer: the samples it has not acknowledged are released (and
    /// returned as a count, for the caller to report), its position file is removed, and the
    /// segments only it still needed are deleted.
    pub fn release(&self) -> u64 {
        self.log.lock().release(self.index)
    }
}

impl Queue for DiskConsumer {
    /// Appends to the shared log, for every consumer: call it once per batch (on any one
    /// consumer, or use [`DiskLog::append`]), then wake every endpoint.
    fn append(&mut self, samples: &[Sample]) -> Result<AppendOutcome, QueueError> {
        self.log.append(samples)
    }

    fn peek(&mut self, max: usize) -> Result<Option<Batch>, QueueError> {
        self.log.lock().peek(self.index, max)
    }

    fn ack(&mut self, seq: Seq) -> Result<(), QueueError> {
        self.log.lock().ack(self.index, seq)
    }

    fn pending(&self) -> usize {
        usize::try_from(self.log.lock().pending(self.index)).unwrap_or(usize::MAX)
    }

    fn end_input(&mut self) {
        self.end_at_tail();
    }

    fn release(&mut self) -> usize {
        usize::try_from(DiskConsumer::release(self)).unwrap_or(usize::MAX)
    }
}

/// Scans the directory and builds the in-memory state; see "Recovery" above.
fn recover(
    dir: &Path,
    opts: DiskQueueOptions,
    fs: Arc<dyn Fs>,
    names: &[String],
    clock: Clock,
) -> Result<(Inner, RecoveryReport), QueueError> {
    fs.create_dir_all(dir).map_err(io_error(dir))?;
    let mut files = fs.list(dir).map_err(io_error(dir))?;
    files.sort();
    let mut report = RecoveryReport::default();
    let mut bases = Vec::new();
    let mut ack_files = Vec::new();
    let mut changed_dir = false;
    for f in &files {
        let path = dir.join(f);
        if f.ends_with(".tmp") {
            match fs.remove(&path) {
                Ok(()) => {
                    report.temp_files_removed += 1;
                    changed_dir = true;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "disk queue: cannot remove temporary file")
                }
            }
        } else if let Some(base) = segment::parse_segment_name(f) {
            bases.push(base);
        } else if f.ends_with(ackfile::ACK_EXT) {
            ack_files.push(f.clone());
        }
    }
    bases.sort_unstable();
    report.segments_found = bases.len() as u64;

    let mut segments = VecDeque::new();
    let mut min_next_seq = 0u64;
    let mut prev_end: Option<u64> = None;
    for base in bases {
        let meta = SegmentMeta::new(dir, base);
        let path = meta.path.clone();
        let scanned = fs
            .open_read(&path)
            .and_then(|f| segment::scan(&mut SegmentReader::new(f), meta));
        let o = match scanned {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "disk queue: segment unreadable, skipping it");
                report.segments_skipped += 1;
                // Never reuse its name, so it cannot be overwritten.
                min_next_seq = min_next_seq.max(base.saturating_add(1));
                continue;
            }
        };
        report.records_recovered += o.records;
        report.samples_recovered += o.meta.samples();
        report.records_skipped += o.holes;
        report.bytes_skipped += o.hole_bytes;
        report.samples_missing += o.missing_seqs;
        if o.holes > 0 {
            tracing::warn!(path = %path.display(), regions = o.holes, bytes = o.hole_bytes, samples = o.missing_seqs,
                "disk queue: skipped corrupt records");
        }
        let tail = o.tail_bytes();
        if o.meta.runs.is_empty() {
            // Nothing to keep: remove it so it is not rescanned at every start.
            if tail > 0 {
                tracing::warn!(path = %path.display(), bytes = tail, "disk queue: segment holds no valid record, removing it");
                report.bytes_truncated += tail;
                report.segments_removed += 1;
            }
            if let Err(e) = fs.remove(&path) {
                tracing::warn!(path = %path.display(), error = %e, "disk queue: cannot remove empty segment");
            }
            changed_dir = true;
            min_next_seq = min_next_seq.max(base);
            continue;
        }
        if tail > 0 {
            tracing::warn!(path = %path.display(), bytes = tail, "disk queue: truncating torn or corrupt segment tail");
            report.bytes_truncated += tail;
            if let Err(e) = fs.truncate(&path, o.meta.len) {
                // Readers never go past the valid length, so this only wastes space.
                tracing::warn!(path = %path.display(), error = %e, "disk queue: cannot truncate segment");
            }
        }
        let first = o.meta.runs[0].start;
        if let Some(prev) = prev_end {
            if first > prev {
                tracing::warn!(
                    from = prev,
                    to = first,
                    "disk queue: samples missing between segments"
                );
                report.samples_missing += first - prev;
            }
        }
        prev_end = Some(o.meta.end_seq());
        segments.push_back(o.meta);
    }

    let log_end = prev_end.unwrap_or(0).max(min_next_seq);
    let oldest = segments
        .front()
        .and_then(|s: &SegmentMeta| s.runs.first())
        .map_or(log_end, |r| r.start);
    let now = Instant::now();
    let mut consumers = Vec::with_capacity(names.len());
    for name in names {
        let file = ackfile::ack_file_name(name);
        let ack_path = dir.join(&file);
        let stored = if ack_files.contains(&file) {
            match fs::read_small(fs.as_ref(), &ack_path, ackfile::MAX_ACK_FILE_LEN)
                .map_err(|e| e.to_string())
                .and_then(|b| ackfile::decode_ack(&b, name).map_err(|e| e.to_string()))
            {
                Ok(seq) => Some(seq),
                Err(e) => {
                    tracing::warn!(consumer = %name, path = %ack_path.display(), error = %e,
                        "disk queue: acknowledgement position unreadable, resending from the oldest data");
                    report.ack_files_reset += 1;
                    None
                }
            }
        } else {
            report.consumers_new.push(name.clone());
            None
        };
        consumers.push(ConsumerState::new(name, ack_path, stored, oldest, now));
    }
    for file in &ack_files {
        if names.iter().any(|n| &ackfile::ack_file_name(n) == file) {
            continue;
        }
        let path = dir.join(file);
        tracing::warn!(path = %path.display(), "disk queue: forgetting the position of a consumer no longer configured");
        report.consumers_forgotten.push(file.clone());
        if let Err(e) = fs.remove(&path) {
            tracing::warn!(path = %path.display(), error = %e, "disk queue: cannot remove acknowledgement file");
        }
        changed_dir = true;
    }
    let next_seq = consumers.iter().map(|c| c.next).fold(log_end, u64::max);
    if changed_dir && opts.fsync != FsyncPolicy::Never {
        fs.sync_dir(dir).map_err(io_error(dir))?;
    }
    let corrupt_records = report.records_skipped + report.segments_removed;
    let corrupt_bytes = report.bytes_skipped + report.bytes_truncated;
    let mut inner = Inner {
        dir: dir.to_path_buf(),
        fs,
        segment_bytes: opts.effective_segment_bytes(),
        room_segment_bytes: None,
        opts,
        clock,
        bytes: segments.iter().map(|s| s.len).sum(),
        segments,
        active: None,
        next_seq,
        last_sync: now,
        consumers,
        scratch: EncodeScratch::default(),
        buf: Vec::new(),
        records: Vec::new(),
        dropped_disk_full: 0,
        corrupt_records,
        corrupt_bytes,
        write_errors: 0,
        full_log: full::FullDiskLog::default(),
    };
    inner.collect_garbage();
    if report.found_damage() {
        tracing::warn!(?report, "disk queue: recovered with losses");
    } else {
        tracing::info!(
            segments = inner.segments.len(),
            samples = report.samples_recovered,
            "disk queue: opened"
        );
    }
    Ok((inner, report))
}

impl Inner {
    /// The consumers whose endpoints are configured.
    fn active(&self) -> impl Iterator<Item = &ConsumerState> {
        self.consumers.iter().filter(|c| !c.released)
    }

    fn add_consumer(&mut self, name: &str) -> Result<usize, QueueError> {
        if name.is_empty() || self.active().any(|c| c.name == name) {
            return Err(QueueError::InvalidOptions {
                field: "consumers",
                message: format!("consumer names must be distinct and not empty: {name:?}"),
            });
        }
        let ack_path = self.dir.join(ackfile::ack_file_name(name));
        let state = ConsumerState::new(name, ack_path, None, self.next_seq, Instant::now());
        let index = match self.consumers.iter().position(|c| c.name == name) {
            Some(i) => {
                self.consumers[i] = state;
                i
            }
            None => {
                self.consumers.push(state);
                self.consumers.len() - 1
            }
        };
        if let Err(e) = self.persist_ack(index, true) {
            self.consumers[index].released = true;
            return Err(e);
        }
        Ok(index)
    }

    fn release(&mut self, index: usize) -> u64 {
        let left = self.pending(index);
        let c = &mut self.consumers[index];
        if c.released {
            return 0;
        }
        c.released = true;
        c.reader = None;
        let path = c.ack_path.clone();
        if let Err(e) = self.fs.remove(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "disk queue: cannot remove acknowledgement file");
            }
        }
        self.collect_garbage();
        left
    }

    fn append(&mut self, samples: &[Sample]) -> Result<AppendOutcome, QueueError> {
        if samples.is_empty() {
            return Ok(AppendOutcome::default());
        }
        // Encode every record first, so a batch too large is refused before any write.
        let limit = self
            .segment_bytes
            .min(HEADER_LEN as u64 + u64::from(MAX_PAYLOAD_LEN));
        self.buf.clear();
        self.records.clear();
        let mut seq = self.next_seq;
        let mut i = 0;
        while i < samples.len() {
            let mut take = (samples.len() - i).min(MAX_SAMPLES_PER_RECORD);
            loop {
                let start = self.buf.len();
                let h = format::write_record(
                    seq,
                    &samples[i..i + take],
                    &mut self.scratch,
                    &mut self.buf,
                );
                if h.record_len() <= limit {
                    self.records.push(h);
                    break;
                }
                self.buf.truncate(start);
                if take == 1 {
                    return Err(QueueError::RecordTooLarge {
                        len: h.record_len(),
                        limit,
                    });
                }
                take /= 2;
            }
            seq += take as u64;
            i += take;
        }

        let mut outcome = AppendOutcome {
            first_seq: self.next_seq,
            ..AppendOutcome::default()
        };
        let records = std::mem::take(&mut self.records);
        let buf = std::mem::take(&mut self.buf);
        let mut at = 0usize;
        let mut result = Ok(());
        for h in &records {
            let len = h.record_len() as usize;
            let unwritten = (samples.len() - outcome.appended) as u64;
            match self.write_record(h, &buf[at..at + len], unwritten) {
                Ok(dropped) => {
                    outcome.appended += h.count as usize;
                    outcome.dropped_oldest += dropped;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            at += len;
        }
        self.records = records;
        self.buf = buf;
        result?;
        match self.opts.fsync {
            FsyncPolicy::Always => self.sync_active()?,
            FsyncPolicy::Interval(every) if self.last_sync.elapsed() >= every => {
                self.sync_active()?
            }
            _ => {}
        }
        Ok(outcome)
    }

    /// Writes one encoded record, making room first; returns the samples dropped to stay
    /// within the disk bound. `unwritten` counts this record's samples and those of the
    /// records after it in the same append: what a full filesystem costs when no room can be
    /// made (see "Full filesystem" above).
    fn write_record(
        &mut self,
        h: &RecordHeader,
        bytes: &[u8],
        unwritten: u64,
    ) -> Result<usize, QueueError> {
        let len = bytes.len() as u64;
        let mut dropped = 0;
        loop {
            if self.active.is_some() {
                if let Some(seg) = self.segments.back() {
                    if seg.len > 0 && seg.len + len > self.segment_limit() {
                        self.seal()?;
                    }
                }
            }
            while self.bytes + len > self.opts.max_disk_bytes {
                let sealed = self.segments.len() - usize::from(self.active.is_some());
                if sealed == 0 {
                    break;
                }
                let (path, samples) = self.drop_oldest();
                tracing::warn!(path = %path.display(), samples, "disk queue: full, dropping the oldest segment");
                dropped += samples as usize;
            }
            if self.active.is_none() {
                match self.start_segment() {
                    Ok(()) => {}
                    Err(QueueError::Io { path, source }) if full::is_out_of_space(&source) => {
                        if !self.free_space() {
                            return Err(self.refuse(unwritten, path, source));
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let (Some(active), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
                return Err(QueueError::Io {
                    path: self.dir.display().to_string(),
                    source: io::Error::other("no active segment"),
                });
            };
            let source = match active.file.append(bytes) {
                Ok(()) => {
                    active.unsynced = true;
                    seg.len += len;
                    seg.push_run(h.first_seq..h.end_seq());
                    self.bytes += len;
                    self.next_seq = h.end_seq();
                    if let Some(t) = self.full_log.stored(Instant::now()) {
                        tracing::info!(dir = %self.dir.display(), episodes = t.events, evicted = t.evicted, refused = t.refused,
                            "disk queue: the filesystem has taken every write for a minute; samples dropped since the last report");
                    }
                    return Ok(dropped);
                }
                Err(source) => source,
            };
            let path = seg.path.clone();
            if full::is_out_of_space(&source) {
                // The same write will fail until something is deleted: drop the oldest data
                // and write into the room made, in the same segment when it can go on.
                self.cut_failed_write(true);
                if !self.free_space() {
                    return Err(self.refuse(unwritten, path.display().to_string(), source));
                }
                continue;
            }
            self.write_errors += 1;
            tracing::warn!(path = %path.display(), error = %source, "disk queue: append failed, sealing segment");
            self.cut_failed_write(false);
            return Err(QueueError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    }

    /// Size at which the active segment is closed: the configured one, or less after the
    /// filesystem ran out of space (see "Full filesystem" above).
    fn segment_limit(&self) -> u64 {
        self.room_segment_bytes
            .map_or(self.segment_bytes, |r| r.min(self.segment_bytes))
    }

    /// Cuts off what a failed write left past the active segment's known length (readers
    /// never look there). With `go_on`, appends continue in the same file, reopened so they
    /// start exactly at the cut; otherwise, or if that fails, the segment is sealed and the
    /// next append starts a new one.
    fn cut_failed_write(&mut self, go_on: bool) {
        let Some(seg) = self.segments.back() else {
            self.active = None;
            return;
        };
        let (path, valid) = (seg.path.clone(), seg.len);
        let cut = self.fs.truncate(&path, valid);
        if let Err(e) = &cut {
            tracing::warn!(path = %path.display(), error = %e, "disk queue: cannot cut failed write");
        }
        if go_on && cut.is_ok() && self.active.is_some() {
            // The old handle's position may be past the cut; an appending one is not.
            if let Ok(file) = self.fs.open_append(&path) {
                if let Some(active) = self.active.as_mut() {
                    active.file = file;
                    return;
                }
            }
        }
        self.active = None;
        if valid == 0 {
            self.segments.pop_back();
            let _ = self.fs.remove(&path);
        }
    }

    /// Makes room after the filesystem said it has none: deletes the oldest segment, counted
    /// as dropped for reason `disk_full`. Returns false when nothing is left to delete.
    fn free_space(&mut self) -> bool {
        // The filesystem holds about what the queue holds now: segments of a quarter of that
        // free room in steps of at most 25%, as under `max_disk_bytes`.
        let room = (self.bytes / 4).max(MIN_SEGMENT_BYTES);
        self.room_segment_bytes = Some(room.min(self.segment_limit()));
        if self.active.is_some()
            && self
                .segments
                .back()
                .is_some_and(|s| s.len >= self.segment_limit())
        {
            // Too large for the new size: sealed, it can be dropped like the others.
            if let Err(e) = self.seal() {
                tracing::warn!(error = %e, "disk queue: cannot sync the segment sealed for room");
            }
        }
        let sealed = self.segments.len() - usize::from(self.active.is_some());
        if sealed == 0 {
            return false;
        }
        let (path, evicted) = self.drop_oldest();
        self.log_full_disk(&path, evicted, 0);
        true
    }

    /// Gives up on the samples of a write no room could be made for: counts them as dropped
    /// for reason `disk_full` and returns the error. The log stays usable: the next append
    /// tries again, and goes through once space is back.
    fn refuse(&mut self, samples: u64, path: String, source: io::Error) -> QueueError {
        self.write_errors += 1;
        for c in self.consumers.iter_mut().filter(|c| !c.released) {
            c.dropped.disk_full += samples;
        }
        self.dropped_disk_full += samples;
        let dir = self.dir.clone();
        self.log_full_disk(&dir, 0, samples);
        QueueError::Io { path, source }
    }

    /// Logs a full-filesystem episode, rate-limited (see [`full::FullDiskLog`]).
    fn log_full_disk(&mut self, path: &Path, evicted: u64, refused: u64) {
        match self.full_log.full(Instant::now(), evicted, refused) {
            full::FullDiskReport::First => tracing::warn!(
                path = %path.display(), evicted, refused,
                "disk queue: the filesystem is full; dropping the oldest samples to make room, \
                 or new ones when nothing older is left (counted as dropped, reason disk_full); \
                 free space or lower agent.queue.max_disk_bytes. Further episodes are summarised once a minute"
            ),
            full::FullDiskReport::Summary(t) => tracing::warn!(
                dir = %self.dir.display(), episodes = t.events, evicted = t.evicted, refused = t.refused,
                "disk queue: the filesystem is still full; samples dropped since the last report"
            ),
            full::FullDiskReport::Quiet => {}
        }
    }

    fn start_segment(&mut self) -> Result<(), QueueError> {
        if let Some(room) = self.room_segment_bytes {
            // More fits than when the filesystem ran out: segments grow back with the queue.
            let grown = self.bytes / 4;
            if grown >= self.segment_bytes {
                self.room_segment_bytes = None;
            } else if grown > room {
                self.room_segment_bytes = Some(grown);
            }
        }
        let meta = SegmentMeta::new(&self.dir, self.next_seq);
        let file = self.fs.create(&meta.path).map_err(io_error(&meta.path))?;
        if self.opts.fsync != FsyncPolicy::Never {
            // The new name must survive a power loss together with the data synced into it.
            if let Err(source) = self.fs.sync_dir(&self.dir) {
                let _ = self.fs.remove(&meta.path);
                return Err(QueueError::Io {
                    path: self.dir.display().to_string(),
                    source,
                });
            }
        }
        self.segments.push_back(meta);
        self.active = Some(ActiveSegment {
            file,
            unsynced: false,
        });
        Ok(())
    }

    /// Closes the active segment, syncing it unless the policy is `Never` (the periodic
    /// sync only covers the active segment).
    fn seal(&mut self) -> Result<(), QueueError> {
        if self.opts.fsync != FsyncPolicy::Never {
            self.sync_active()?;
        }
        self.active = None;
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), QueueError> {
        self.last_sync = Instant::now();
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        if !active.unsynced {
            return Ok(());
        }
        if let Err(source) = active.file.sync() {
            // After a failed fsync the kernel may have dropped the dirty pages: do not trust
            // this file for more writes. What it holds stays readable.
            self.write_errors += 1;
            self.active = None;
            let path = self
                .segments
                .back()
                .map_or_else(|| self.dir.clone(), |s| s.path.clone());
            return Err(QueueError::Io {
                path: path.display().to_string(),
                source,
            });
        }
        active.unsynced = false;
        Ok(())
    }

    /// Deletes the oldest segment for room; returns its path and the samples some consumer
    /// still needed (counted as dropped for reason `disk_full`).
    fn drop_oldest(&mut self) -> (PathBuf, u64) {
        let Some(seg) = self.segments.pop_front() else {
            return (self.dir.clone(), 0);
        };
        self.bytes -= seg.len;
        let mut needed = 0;
        let min_next = self.active().map(|c| c.next).min();
        for c in self.consumers.iter_mut().filter(|c| !c.released) {
            let lost = seg.samples_from(c.next);
            c.dropped.disk_full += lost;
        }
        if let Some(min_next) = min_next {
            needed = seg.samples_from(min_next);
        }
        self.dropped_disk_full += needed;
        self.remove_segment_file(&seg);
        (seg.path, needed)
    }

    fn remove_segment_file(&mut self, seg: &SegmentMeta) {
        for c in &mut self.consumers {
            if c.reader.as_ref().is_some_and(|(b, _)| *b == seg.base_seq) {
                c.reader = None;
            }
        }
        if let Err(e) = self.fs.remove(&seg.path) {
            tracing::warn!(path = %seg.path.display(), error = %e, "disk queue: cannot remove segment");
        }
    }

    /// Deletes segments every consumer has acknowledged entirely (never the active one).
    fn collect_garbage(&mut self) {
        // With every consumer released, nothing is needed any more.
        let min_next = self.active().map(|c| c.next).min().unwrap_or(self.next_seq);
        while self.segments.len() > usize::from(self.active.is_some()) {
            let Some(front) = self.segments.front() else {
                break;
            };
            if front.end_seq() > min_next && !front.runs.is_empty() {
                break;
            }
            if let Some(seg) = self.segments.pop_front() {
                self.bytes -= seg.len;
                self.remove_segment_file(&seg);
            }
        }
    }

    fn pending(&self, index: usize) -> u64 {
        let c = &self.consumers[index];
        if c.released {
            return 0;
        }
        let next = c.next;
        let until = c.until.unwrap_or(Seq::MAX);
        self.segments
            .iter()
            .map(|s| s.samples_from(next) - s.samples_from(until.max(next)))
            .sum()
    }

    fn ack(&mut self, index: usize, seq: Seq) -> Result<(), QueueError> {
        let target = seq.saturating_add(1).min(self.next_seq);
        let c = &mut self.consumers[index];
        if c.released || target <= c.next {
            return Ok(());
        }
        c.next = target;
        self.collect_garbage();
        self.persist_ack(index, false)
    }

    /// Writes the consumer's position if it moved; syncs it when the policy asks or `force`.
    fn persist_ack(&mut self, index: usize, force: bool) -> Result<(), QueueError> {
        let fsync = self.opts.fsync;
        let fs = self.fs.clone();
        let c = &mut self.consumers[index];
        if c.released {
            return Ok(());
        }
        let sync = force
            || match fsync {
                FsyncPolicy::Always => true,
                FsyncPolicy::Interval(every) => c.last_sync.elapsed() >= every,
                FsyncPolicy::Never => false,
            };
        if c.persisted == c.next && (c.synced || !sync) {
            return Ok(());
        }
        let data = ackfile::encode_ack(&c.name, c.next);
        match fs::write_atomic(fs.as_ref(), &c.ack_path, &data, sync) {
            Ok(()) => {}
            Err(e) if full::is_out_of_space(&e) => {
                // The position holds in memory and is written at the next acknowledgement or
                // periodic sync; a crash before then only re-sends (duplicates, not loss).
                let path = c.ack_path.clone();
                self.log_full_disk(&path, 0, 0);
                return Ok(());
            }
            Err(e) => return Err(io_error(&c.ack_path)(e)),
        }
        c.persisted = c.next;
        c.synced = sync;
        if sync {
            c.last_sync = Instant::now();
        }
        Ok(())
    }

    fn sync_due(&mut self) -> Result<(), QueueError> {
        let FsyncPolicy::Interval(every) = self.opts.fsync else {
            return Ok(());
        };
        if self.last_sync.elapsed() >= every {
            self.sync_active()?;
        }
        for i in 0..self.consumers.len() {
            if !self.consumers[i].synced || self.consumers[i].persisted != self.consumers[i].next {
                self.persist_ack(i, false)?;
            }
        }
        Ok(())
    }

    fn sync_all(&mut self) -> Result<(), QueueError> {
        let mut first_err = self.sync_active().err();
        for i in 0..self.consumers.len() {
            if let Err(e) = self.persist_ack(i, true) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn peek(&mut self, index: usize, max: usize) -> Result<Option<Batch>, QueueError> {
        if max == 0 {
            return Ok(None);
        }
        let cutoff = self.opts.max_sample_age.map(|age| {
            (self.clock)().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
        });
        let mut out: Vec<Sample> = Vec::with_capacity(max.min(4096));
        let mut seqs: Vec<Seq> = Vec::with_capacity(max.min(4096));
        let mut last_seen: Option<Seq> = None;
        let next = self.consumers[index].next;
        let until = self.consumers[index].until.unwrap_or(Seq::MAX);
        if self.consumers[index].released || next >= until {
            return Ok(None);
        }
        let mut seg_idx = self.segments.partition_point(|s| s.end_seq() <= next);
        let mut cursor_fixed = false;
        'segments: while seg_idx < self.segments.len() && out.len() < max {
            let base = self.segments[seg_idx].base_seq;
            let limit = self.segments[seg_idx].len;
            let c = &mut self.consumers[index];
            let mut offset = match c.cursor {
                Some(cur) if cur.base_seq == base => cur.offset,
                _ => 0,
            };
            if c.reader.as_ref().is_none_or(|(b, _)| *b != base) {
                let path = &self.segments[seg_idx].path;
                let file = self.fs.open_read(path).map_err(io_error(path))?;
                c.reader = Some((base, SegmentReader::new(file)));
            }
            let seg_end = self.segments[seg_idx].end_seq();
            // Lower bound of the sequence numbers lost if the next record is corrupt.
            let mut seen_end = self.segments[seg_idx]
                .runs
                .first()
                .map_or(next, |r| r.start.max(next));
            while offset < limit {
                if let Some(hole) = self.segments[seg_idx].hole_at(offset) {
                    offset = hole.end;
                    continue;
                }
                let c = &mut self.consumers[index];
                let Some((_, reader)) = c.reader.as_mut() else {
                    break 'segments;
                };
                let rec = match segment::read_record(reader, offset, limit, base) {
                    Ok(rec) => rec,
                    Err(RecordFault::Io(e)) => {
                        return Err(io_error(&self.segments[seg_idx].path)(e));
                    }
                    Err(RecordFault::Corrupt(err)) => {
                        let resume = segment::resync(reader, offset + 1, limit, base)
                            .map_err(io_error(&self.segments[seg_idx].path))?
                            .unwrap_or(limit);
                        let resume_seq = if resume < limit {
                            segment::read_record(reader, resume, limit, base)
                                .map_or(seg_end, |r| r.header.first_seq)
                        } else {
                            seg_end
                        };
                        self.mark_corrupt(seg_idx, offset..resume, seen_end..resume_seq, &err);
                        offset = resume;
                        continue;
                    }
                };
                let h = rec.header;
                if h.end_seq() <= next {
                    // Wholly acknowledged: later peeks start after it.
                    offset += h.record_len();
                    if !cursor_fixed {
                        c.cursor = Some(Cursor {
                            base_seq: base,
                            offset,
                        });
                    }
                    continue;
                }
                let decoded = format::decode_checked(&h, rec.payload);
                if !cursor_fixed {
                    // The first record not wholly acknowledged: repeated peeks start here.
                    c.cursor = Some(Cursor {
                        base_seq: base,
                        offset,
                    });
                    cursor_fixed = true;
                }
                let samples = match decoded {
                    Ok(s) => s,
                    Err(err) => {
                        let end = offset + h.record_len();
                        self.mark_corrupt(seg_idx, offset..end, h.first_seq..h.end_seq(), &err);
                        seen_end = h.end_seq();
                        offset = end;
                        continue;
                    }
                };
                let c = &mut self.consumers[index];
                for (i, s) in samples.into_iter().enumerate() {
                    let seq = h.first_seq + i as u64;
                    if seq < next {
                        continue;
                    }
                    if out.len() == max || seq >= until {
                        break 'segments;
                    }
                    last_seen = Some(seq);
                    if cutoff.is_some_and(|cut| s.timestamp_ms < cut) {
                        if seq >= c.too_old_counted {
                            c.dropped.too_old += 1;
                            c.too_old_counted = seq + 1;
                        }
                        continue;
                    }
                    out.push(s);
                    seqs.push(seq);
                }
                seen_end = h.end_seq();
                offset += h.record_len();
            }
            seg_idx += 1;
        }
        let Some(last_seq) = last_seen else {
            return Ok(None);
        };
        if out.is_empty() {
            // Everything left was too old: move past it for good.
            self.ack(index, last_seq)?;
            return Ok(None);
        }
        Ok(Some(Batch::new(out, seqs, last_seq)))
    }

    /// Records corruption found while reading so it is skipped (and counted) once.
    /// The sequence numbers in `seqs` are gone with it, so `pending` stops counting them.
    fn mark_corrupt(
        &mut self,
        seg_idx: usize,
        bytes: std::ops::Range<u64>,
        seqs: std::ops::Range<u64>,
        why: &FormatError,
    ) {
        let seg = &mut self.segments[seg_idx];
        tracing::warn!(path = %seg.path.display(), offset = bytes.start, bytes = bytes.end - bytes.start,
            samples = seqs.end.saturating_sub(seqs.start), error = %why,
            "disk queue: corrupt record found while reading, skipping it");
        self.corrupt_records += 1;
        self.corrupt_bytes += bytes.end - bytes.start;
        seg.remove_seqs(seqs);
        seg.holes.push(bytes);
    }

    fn stats(&self) -> DiskStats {
        let consumers: Vec<ConsumerStats> = (0..self.consumers.len())
            .filter(|&i| !self.consumers[i].released)
            .map(|i| {
                let c = &self.consumers[i];
                ConsumerStats {
                    name: c.name.clone(),
                    pending: self.pending(i),
                    next_seq: c.next,
                    dropped: c.dropped,
                }
            })
            .collect();
        DiskStats {
            bytes: self.bytes,
            segments: self.segments.len() as u64,
            samples: self.segments.iter().map(|s| s.samples()).sum(),
            next_seq: self.next_seq,
            dropped: DropCounts {
                disk_full: self.dropped_disk_full,
                too_old: consumers.iter().map(|c| c.dropped.too_old).sum(),
            },
            corrupt_records: self.corrupt_records,
            corrupt_bytes: self.corrupt_bytes,
            write_errors: self.write_errors,
            consumers,
        }
    }
}
