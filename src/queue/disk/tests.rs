//! Behaviour of the whole queue: delivery, crashes, corruption, bounds, and a model-based
//! property test against a plain in-memory model.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::memfs::{Faults, MemFs};
use super::*;
use crate::series::Labels;

const DIR: &str = "/data/queue";

fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn series(i: usize) -> Labels {
    Labels::with_name("probe_up", [("probe", format!("p{i}"))]).unwrap()
}

/// `n` samples whose values and timestamps start at `from`.
fn batch(from: i64, n: usize) -> Vec<Sample> {
    let sets = [series(0), series(1), series(2)];
    (0..n)
        .map(|i| {
            let v = from + i as i64;
            Sample {
                labels: sets[i % 3].clone(),
                value: v as f64,
                timestamp_ms: v,
            }
        })
        .collect()
}

fn opts(fsync: FsyncPolicy) -> DiskQueueOptions {
    DiskQueueOptions {
        max_disk_bytes: MIN_DISK_BYTES,
        segment_bytes: MIN_SEGMENT_BYTES,
        fsync,
        max_sample_age: None,
    }
}

fn open_mem(
    fs: &MemFs,
    o: DiskQueueOptions,
    consumers: &[&str],
) -> (Arc<DiskLog>, Vec<DiskConsumer>) {
    DiskLog::open(&dir(), o, Arc::new(fs.clone()), &names(consumers)).unwrap()
}

/// Values of everything the consumer would send now, without acknowledging.
fn drain_values(c: &mut DiskConsumer) -> Vec<i64> {
    match c.peek(usize::MAX).unwrap() {
        Some(b) => b.iter().map(|s| s.value as i64).collect(),
        None => Vec::new(),
    }
}

fn segments(fs: &MemFs) -> Vec<PathBuf> {
    fs.files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect()
}

#[test]
fn peek_repeats_until_ack_and_ack_releases() {
    let fs = MemFs::new();
    let (_log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    let c = &mut cs[0];
    c.append(&batch(0, 5)).unwrap();
    let b1 = c.peek(3).unwrap().unwrap();
    let b2 = c.peek(3).unwrap().unwrap();
    assert_eq!(b1.last_seq, 2);
    assert_eq!(b1.to_vec(), b2.to_vec());
    assert_eq!(c.pending(), 5);
    c.ack(b1.last_seq).unwrap();
    assert_eq!(c.pending(), 2);
    assert_eq!(drain_values(c), [3, 4]);
    // Acknowledging beyond the end, or going back, changes nothing more than it should.
    c.ack(1).unwrap();
    assert_eq!(c.pending(), 2);
    c.ack(1_000).unwrap();
    assert_eq!(c.pending(), 0);
    assert!(c.peek(10).unwrap().is_none());
}

#[test]
fn real_fs_survives_a_kill_and_resumes_at_the_acknowledged_position() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("queue");
    let open = || {
        DiskLog::open(
            &dir,
            opts(FsyncPolicy::Interval(Duration::from_secs(1))),
            Arc::new(fs::RealFs),
            &names(&["prom", "mimir"]),
        )
        .unwrap()
    };
    let (log, mut cs) = open();
    for i in 0..50 {
        log.append(&batch(i * 100, 100)).unwrap();
    }
    let b = cs[0].peek(1234).unwrap().unwrap();
    cs[0].ack(b.last_seq).unwrap();
    // A kill runs no destructor: forget everything instead of dropping it.
    std::mem::forget(cs);
    std::mem::forget(log);

    let (log, mut cs) = open();
    assert!(
        !log.recovery_report().found_damage(),
        "{:?}",
        log.recovery_report()
    );
    assert_eq!(cs[0].pending(), 5000 - 1234);
    assert_eq!(cs[1].pending(), 5000);
    assert_eq!(drain_values(&mut cs[0])[0], 1234);
    // New samples continue the numbering.
    log.append(&batch(9_000, 1)).unwrap();
    assert_eq!(log.stats().next_seq, 5001);
}

#[test]
fn consumers_are_independent_and_segments_go_when_all_acknowledged() {
    let fs = MemFs::new();
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a", "b"]);
    for i in 0..40 {
        log.append(&batch(i * 50, 50)).unwrap();
    }
    let before = log.stats().segments;
    assert!(before > 3, "{before}");
    let last = cs[0].peek(usize::MAX).unwrap().unwrap().last_seq;
    cs[0].ack(last).unwrap();
    assert_eq!(cs[0].pending(), 0);
    assert_eq!(cs[1].pending(), 2000);
    assert_eq!(log.stats().segments, before, "b still needs them");
    cs[1].ack(last).unwrap();
    assert_eq!(log.stats().segments, 1, "only the active segment stays");
    assert_eq!(segments(&fs).len(), 1);
}

#[test]
fn a_consumer_added_while_open_starts_at_the_tail_and_keeps_its_place_across_a_restart() {
    let fs = MemFs::new();
    {
        let (log, _cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
        log.append(&batch(0, 10)).unwrap();
        let mut b = log.add_consumer("b").unwrap();
        assert_eq!(b.pending(), 0, "the backlog kept for a is not b's");
        log.append(&batch(10, 5)).unwrap();
        assert_eq!(drain_values(&mut b), (10..15).collect::<Vec<_>>());
        assert!(log.add_consumer("b").is_err(), "names stay distinct");
        assert!(log.add_consumer("a").is_err());
    }
    let (_log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a", "b"]);
    assert_eq!(drain_values(&mut cs[1]), (10..15).collect::<Vec<_>>());
}

#[test]
fn a_released_consumer_drains_up_to_its_end_then_pins_nothing() {
    let fs = MemFs::new();
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a", "b"]);
    for i in 0..40 {
        log.append(&batch(i * 50, 50)).unwrap();
    }
    cs[1].end_at_tail();
    log.append(&batch(2000, 5)).unwrap();
    assert_eq!(cs[1].pending(), 2000, "nothing appended after its end");
    assert_eq!(cs[0].pending(), 2005);
    let first = cs[1].peek(500).unwrap().unwrap();
    cs[1].ack(first.last_seq).unwrap();
    let rest = drain_values(&mut cs[1]);
    assert_eq!(rest.len(), 1500);
    assert_eq!(*rest.last().unwrap(), 1999);
    // a delivers everything; b's backlog alone holds the segments until it is released.
    let last = cs[0].peek(usize::MAX).unwrap().unwrap().last_seq;
    cs[0].ack(last).unwrap();
    assert!(log.stats().segments > 1);
    assert_eq!(cs[1].release(), 1500);
    assert_eq!(cs[1].pending(), 0);
    assert_eq!(cs[1].peek(10).unwrap().map(|b| b.len()), None);
    assert_eq!(log.stats().segments, 1, "only the active segment stays");
    assert_eq!(log.stats().consumers.len(), 1);
    assert!(!fs.files().contains(&dir().join("b.ack")));
    // The name can come back, from the tail.
    let mut again = log.add_consumer("b").unwrap();
    assert_eq!(again.pending(), 0);
    log.append(&batch(3000, 2)).unwrap();
    assert_eq!(drain_values(&mut again), [3000, 3001]);
}

#[test]
fn unconfigured_consumers_are_forgotten_and_new_ones_start_at_the_oldest_data() {
    let fs = MemFs::new();
    {
        let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["old"]);
        log.append(&batch(0, 10)).unwrap();
        cs[0].ack(3).unwrap();
    }
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["new"]);
    let r = log.recovery_report();
    assert_eq!(r.consumers_forgotten, ["old.ack"]);
    assert_eq!(r.consumers_new, ["new"]);
    assert!(!fs.files().contains(&dir().join("old.ack")));
    assert_eq!(drain_values(&mut cs[0]), (0..10).collect::<Vec<_>>());
}

#[test]
fn sequence_numbers_are_not_reused_after_everything_was_deleted() {
    let fs = MemFs::new();
    {
        let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
        log.append(&batch(0, 10)).unwrap();
        cs[0].ack(9).unwrap();
    }
    // Lose every segment: the acknowledgement alone must keep numbering ahead.
    for p in segments(&fs) {
        fs.delete(&p);
    }
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    assert_eq!(log.stats().next_seq, 10);
    log.append(&batch(10, 2)).unwrap();
    assert_eq!(drain_values(&mut cs[0]), [10, 11]);
}

#[test]
fn large_batches_split_into_records_and_oversized_samples_are_refused() {
    let fs = MemFs::new();
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    let out = log.append(&batch(0, 5000)).unwrap();
    assert_eq!(out.appended, 5000);
    assert_eq!(cs[0].pending(), 5000);
    let b = cs[0].peek(usize::MAX).unwrap().unwrap();
    assert_eq!(b.len(), 5000);
    assert_eq!(b.last_seq, 4999);

    let huge = Sample {
        labels: Labels::with_name("m", [("big", "x".repeat(MIN_SEGMENT_BYTES as usize))]).unwrap(),
        value: 1.0,
        timestamp_ms: 1,
    };
    let before = log.stats();
    match log.append(&[huge]) {
        Err(QueueError::RecordTooLarge { len, limit }) => {
            assert!(len > limit);
            assert_eq!(limit, MIN_SEGMENT_BYTES);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(log.stats(), before);
}

// ---- corruption -------------------------------------------------------------------------

/// Writes `records` appends of 10 samples into one segment and returns its path.
fn one_segment(fs: &MemFs, records: i64) -> PathBuf {
    let (log, _cs) = open_mem(&fs.clone(), opts(FsyncPolicy::Never), &["a"]);
    for i in 0..records {
        log.append(&batch(i * 10, 10)).unwrap();
    }
    let segs = segments(fs);
    assert_eq!(segs.len(), 1);
    segs[0].clone()
}

fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        out.push(at);
        let h = format::parse_header(&bytes[at..]).unwrap();
        at += h.record_len() as usize;
    }
    out
}

#[test]
fn torn_tail_is_truncated_and_counted() {
    let fs = MemFs::new();
    let seg = one_segment(&fs, 3);
    let bytes = fs.read(&seg).unwrap();
    let starts = record_starts(&bytes);
    let cut = starts[2] + 7;
    fs.write(&seg, &bytes[..cut]);

    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    let r = log.recovery_report();
    assert_eq!(r.bytes_truncated, 7);
    assert_eq!(r.records_recovered, 2);
    assert_eq!(
        fs.read(&seg).unwrap().len(),
        starts[2],
        "tail cut off on disk"
    );
    assert_eq!(drain_values(&mut cs[0]), (0..20).collect::<Vec<_>>());
    // The torn record's numbers are reused: nobody can have acknowledged them.
    log.append(&batch(100, 1)).unwrap();
    assert_eq!(log.stats().next_seq, 21);
    drop((log, cs));
    let (log, _) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    assert!(!log.recovery_report().found_damage());
}

#[test]
fn flipped_byte_in_a_middle_record_skips_only_that_record() {
    let fs = MemFs::new();
    let seg = one_segment(&fs, 3);
    let mut bytes = fs.read(&seg).unwrap();
    let starts = record_starts(&bytes);
    bytes[starts[1] + 40] ^= 0x10;
    fs.write(&seg, &bytes);

    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    let r = log.recovery_report();
    assert_eq!(r.records_skipped, 1);
    assert_eq!(r.samples_missing, 10);
    assert_eq!(r.bytes_skipped, (starts[2] - starts[1]) as u64);
    assert_eq!(cs[0].pending(), 20);
    let want: Vec<i64> = (0..10).chain(20..30).collect();
    assert_eq!(drain_values(&mut cs[0]), want);
    assert_eq!(log.stats().corrupt_records, 1);
}

#[test]
fn zero_filled_segment_is_removed_and_the_rest_kept() {
    let fs = MemFs::new();
    {
        let (log, _cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
        for i in 0..30 {
            log.append(&batch(i * 50, 50)).unwrap();
        }
    }
    let segs = segments(&fs);
    assert!(segs.len() >= 3);
    let victim = &segs[1];
    let len = fs.read(victim).unwrap().len();
    fs.write(victim, &vec![0u8; len]);

    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    let r = log.recovery_report();
    assert_eq!(r.segments_removed, 1);
    assert_eq!(r.bytes_truncated, len as u64);
    assert!(r.samples_missing > 0);
    assert!(!fs.files().contains(victim));
    let got = drain_values(&mut cs[0]);
    assert_eq!(got.len() as u64, 1500 - r.samples_missing);
    assert!(got.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn missing_segment_is_a_counted_gap() {
    let fs = MemFs::new();
    {
        let (log, _cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
        for i in 0..30 {
            log.append(&batch(i * 50, 50)).unwrap();
        }
    }
    let segs = segments(&fs);
    fs.delete(&segs[1]);
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    let missing = log.recovery_report().samples_missing;
    assert!(missing > 0);
    assert_eq!(drain_values(&mut cs[0]).len() as u64, 1500 - missing);
}

#[test]
fn unreadable_segment_is_skipped_and_left_alone() {
    let fs = MemFs::new();
    {
        let (log, _cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
        for i in 0..30 {
            log.append(&batch(i * 50, 50)).unwrap();
        }
    }
    let segs = segments(&fs);
    fs.set_faults(Faults {
        unreadable: vec![segs[0].clone()],
        ..Faults::default()
    });
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    assert_eq!(log.recovery_report().segments_skipped, 1);
    assert!(fs.files().contains(&segs[0]));
    let got = drain_values(&mut cs[0]);
    assert!(!got.is_empty() && got[0] > 0);
}

#[test]
fn garbage_ack_file_resends_from_the_oldest_data() {
    let fs = MemFs::new();
    {
        let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
        log.append(&batch(0, 10)).unwrap();
        cs[0].ack(4).unwrap();
    }
    fs.write(&dir().join("a.ack"), b"\x00\x01garbage");
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    assert_eq!(log.recovery_report().ack_files_reset, 1);
    assert_eq!(drain_values(&mut cs[0]), (0..10).collect::<Vec<_>>());
}

#[test]
fn leftover_temporary_files_are_removed() {
    let fs = MemFs::new();
    fs.write(&dir().join("a.ack.tmp"), b"half");
    let (log, _cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    assert_eq!(log.recovery_report().temp_files_removed, 1);
    assert!(fs.files().is_empty());
}

#[test]
fn corruption_found_while_reading_is_skipped_and_counted() {
    let fs = MemFs::new();
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    for i in 0..3 {
        log.append(&batch(i * 10, 10)).unwrap();
    }
    let seg = segments(&fs)[0].clone();
    let mut bytes = fs.read(&seg).unwrap();
    let starts = record_starts(&bytes);
    // Damage the second record's header: its numbers cannot be read any more.
    bytes[starts[1] + 9] ^= 0xff;
    fs.write(&seg, &bytes);
    let want: Vec<i64> = (0..10).chain(20..30).collect();
    assert_eq!(drain_values(&mut cs[0]), want);
    assert_eq!(cs[0].pending(), 20, "lost samples are no longer pending");
    assert_eq!(drain_values(&mut cs[0]), want, "counted once");
    assert_eq!(log.stats().corrupt_records, 1);
}

#[test]
fn full_disk_on_append_is_an_error_and_counts_nothing() {
    let fs = MemFs::new();
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Always), &["a"]);
    log.append(&batch(0, 10)).unwrap();
    let used: u64 = fs
        .files()
        .iter()
        .map(|p| fs.read(p).unwrap().len() as u64)
        .sum();
    // Room for half a record: a short write, then ENOSPC.
    fs.set_faults(Faults {
        capacity: Some(used + 60),
        ..Faults::default()
    });
    let before = log.stats();
    let err = log.append(&batch(10, 10)).unwrap_err();
    assert!(
        matches!(&err, QueueError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull),
        "{err:?}"
    );
    let after = log.stats();
    assert_eq!(after.next_seq, before.next_seq);
    assert_eq!(after.bytes, before.bytes);
    assert_eq!(after.write_errors, 1);
    assert_eq!(cs[0].pending(), 10);
    assert_eq!(drain_values(&mut cs[0]), (0..10).collect::<Vec<_>>());

    // Space comes back: appends resume in a fresh segment, numbering continues.
    fs.set_faults(Faults::default());
    log.append(&batch(10, 10)).unwrap();
    assert_eq!(drain_values(&mut cs[0]), (0..20).collect::<Vec<_>>());
    drop((log, cs));
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Always), &["a"]);
    assert!(
        !log.recovery_report().found_damage(),
        "{:?}",
        log.recovery_report()
    );
    assert_eq!(drain_values(&mut cs[0]), (0..20).collect::<Vec<_>>());
}

#[test]
fn failed_sync_is_reported_and_the_next_append_uses_a_new_segment() {
    let fs = MemFs::new();
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Always), &["a"]);
    log.append(&batch(0, 5)).unwrap();
    fs.set_faults(Faults {
        fail_syncs: true,
        ..Faults::default()
    });
    assert!(log.append(&batch(5, 5)).is_err());
    fs.set_faults(Faults::default());
    log.append(&batch(10, 5)).unwrap();
    assert_eq!(segments(&fs).len(), 2);
    // Written data stays readable: delivered at least once.
    assert_eq!(drain_values(&mut cs[0]), (0..15).collect::<Vec<_>>());
}

// ---- bounds -----------------------------------------------------------------------------

#[test]
fn max_disk_bytes_drops_the_oldest_segment_and_counts_per_consumer() {
    let fs = MemFs::new();
    let o = opts(FsyncPolicy::Never);
    let (log, mut cs) = open_mem(&fs, o.clone(), &["slow", "fast"]);
    let mut dropped = 0;
    let mut appended = 0u64;
    for i in 0..1500 {
        let out = log.append(&batch(i * 100, 100)).unwrap();
        dropped += out.dropped_oldest as u64;
        appended += 100;
        // The fast consumer keeps up.
        let b = cs[1].peek(usize::MAX).unwrap().unwrap();
        cs[1].ack(b.last_seq).unwrap();
    }
    let s = log.stats();
    assert!(
        s.bytes <= o.max_disk_bytes,
        "{} > {}",
        s.bytes,
        o.max_disk_bytes
    );
    assert!(dropped > 0);
    assert_eq!(s.dropped.disk_full, dropped);
    assert_eq!(s.consumers[0].dropped.disk_full, dropped);
    assert_eq!(s.consumers[1].dropped.disk_full, 0);
    assert_eq!(cs[0].pending() as u64, appended - dropped);
    // The slow consumer gets the newest data, oldest first, without a hole in the middle.
    let got = drain_values(&mut cs[0]);
    assert_eq!(got.len() as u64, appended - dropped);
    assert_eq!(*got.last().unwrap(), appended as i64 - 1);
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn max_sample_age_skips_old_samples_and_counts_them_once() {
    let fs = MemFs::new();
    let now = Arc::new(AtomicI64::new(1_000));
    let clock_now = now.clone();
    let mut o = opts(FsyncPolicy::Never);
    o.max_sample_age = Some(Duration::from_millis(500));
    let (log, mut cs) = DiskLog::open_with_clock(
        &dir(),
        o,
        Arc::new(fs.clone()),
        &names(&["a", "b"]),
        Arc::new(move || clock_now.load(Ordering::SeqCst)),
    )
    .unwrap();
    log.append(&batch(0, 10)).unwrap(); // timestamps 0..10
    log.append(&batch(900, 10)).unwrap(); // timestamps 900..910
    let b = cs[0].peek(100).unwrap().unwrap();
    assert_eq!(b.len(), 10);
    assert_eq!(b.iter().next().map(|s| s.timestamp_ms), Some(900));
    assert_eq!(b.last_seq, 19);
    let b2 = cs[0].peek(100).unwrap().unwrap();
    assert_eq!(b2.to_vec(), b.to_vec());
    assert_eq!(log.stats().consumers[0].dropped.too_old, 10, "counted once");

    // When everything left is too old, peek says so and moves past it for good.
    now.store(10_000, Ordering::SeqCst);
    assert!(cs[1].peek(100).unwrap().is_none());
    assert_eq!(cs[1].pending(), 0);
    let s = log.stats();
    assert_eq!(s.consumers[1].dropped.too_old, 20);
    assert_eq!(s.dropped.too_old, 30);
}

#[test]
fn invalid_options_name_the_field() {
    let fs = MemFs::new();
    let mut o = opts(FsyncPolicy::Never);
    o.max_disk_bytes = 10;
    match DiskLog::open(&dir(), o, Arc::new(fs.clone()), &names(&["a"])) {
        Err(QueueError::InvalidOptions { field, .. }) => assert_eq!(field, "max_disk_bytes"),
        other => panic!("{other:?}"),
    }
    match DiskLog::open(
        &dir(),
        opts(FsyncPolicy::Never),
        Arc::new(fs),
        &names(&["a", "a"]),
    ) {
        Err(QueueError::InvalidOptions { field, .. }) => assert_eq!(field, "consumers"),
        other => panic!("{other:?}"),
    }
}

// ---- full filesystem --------------------------------------------------------------------

/// Bytes all files of the in-memory filesystem hold.
fn used(fs: &MemFs) -> u64 {
    fs.files()
        .iter()
        .map(|p| fs.read(p).map_or(0, |d| d.len() as u64))
        .sum()
}

/// A bound far above the filesystem's room, and segments of the default size (16 MiB): only
/// the filesystem says when it is full.
fn roomy(fsync: FsyncPolicy) -> DiskQueueOptions {
    DiskQueueOptions {
        max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
        segment_bytes: DEFAULT_SEGMENT_BYTES,
        fsync,
        max_sample_age: None,
    }
}

#[test]
fn full_filesystem_drops_the_oldest_keeps_the_newest_and_bounds_segments() {
    const CAPACITY: u64 = 64 << 10;
    let fs = MemFs::new();
    fs.set_faults(Faults {
        capacity: Some(CAPACITY),
        ..Faults::default()
    });
    let (log, mut cs) = open_mem(&fs, roomy(FsyncPolicy::Always), &["slow", "fast"]);
    let mut appended = 0u64;
    let mut most_segments = 0;
    for i in 0..600 {
        log.append(&batch(i * 20, 20))
            .unwrap_or_else(|e| panic!("append {i} on a full filesystem: {e}"));
        appended += 20;
        // The fast consumer keeps up, so only the slow one loses samples.
        let b = cs[1].peek(usize::MAX).unwrap().unwrap();
        cs[1].ack(b.last_seq).unwrap();
        most_segments = most_segments.max(log.stats().segments);
        assert!(used(&fs) <= CAPACITY);
    }
    let s = log.stats();
    assert!(appended * 20 > CAPACITY, "the test writes more than fits");
    assert!(s.dropped.disk_full > 0, "{s:?}");
    assert_eq!(s.consumers[0].dropped.disk_full, s.dropped.disk_full);
    assert_eq!(s.consumers[1].dropped.disk_full, 0);
    assert_eq!(s.write_errors, 0, "every append went through");
    // A quarter of the room per segment, plus the one being written.
    assert!(most_segments <= 6, "{most_segments} segments");
    // The slow consumer gets the newest data, oldest first, without a hole in the middle.
    let got = drain_values(&mut cs[0]);
    assert_eq!(got.len() as u64 + s.dropped.disk_full, appended);
    assert!(got[0] > 0, "the oldest went");
    assert_eq!(
        *got.last().unwrap(),
        appended as i64 - 1,
        "the newest stayed"
    );
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1));
    // Each deletion freed a quarter of the room at most: most of it still holds data.
    assert!(s.bytes >= CAPACITY / 2, "{} of {CAPACITY} bytes", s.bytes);

    // What the full filesystem left is clean: a restart finds no damage and the same data.
    drop((log, cs));
    let (log, mut cs) = open_mem(&fs, roomy(FsyncPolicy::Always), &["slow", "fast"]);
    assert!(
        !log.recovery_report().found_damage(),
        "{:?}",
        log.recovery_report()
    );
    assert_eq!(drain_values(&mut cs[0]), got);
}

#[test]
fn full_filesystem_with_nothing_to_drop_refuses_new_samples_and_recovers() {
    for quota in [false, true] {
        let fs = MemFs::new();
        let (log, mut cs) = open_mem(&fs, roomy(FsyncPolicy::Never), &["a", "b"]);
        log.append(&batch(0, 10)).unwrap();
        // Someone else fills the filesystem.
        let hog = PathBuf::from("/data/other/hog");
        fs.write(&hog, &[0; 4096]);
        fs.set_faults(Faults {
            capacity: Some(used(&fs)),
            quota,
            ..Faults::default()
        });
        let before = log.stats();
        for i in 0..50 {
            let err = log.append(&batch(10 + i * 10, 10)).unwrap_err();
            assert!(err.is_out_of_space(), "{err:?}");
        }
        let s = log.stats();
        assert_eq!(s.dropped.disk_full, 500, "quota {quota}: {s:?}");
        assert_eq!(s.consumers[0].dropped.disk_full, 500);
        assert_eq!(s.consumers[1].dropped.disk_full, 500);
        assert_eq!(s.write_errors, 50);
        assert_eq!(s.segments, before.segments, "no segment per failure");
        assert_eq!((s.bytes, s.next_seq), (before.bytes, before.next_seq));
        // Still usable: what it holds is delivered.
        assert_eq!(drain_values(&mut cs[0]), (0..10).collect::<Vec<_>>());

        // Space is freed: the next append goes through, numbering goes on.
        fs.delete(&hog);
        let out = log.append(&batch(510, 10)).unwrap();
        assert_eq!((out.appended, out.first_seq), (10, 10));
        let got = drain_values(&mut cs[1]);
        assert_eq!(got, (0..10).chain(510..520).collect::<Vec<_>>());
        assert_eq!(log.stats().segments, before.segments);
    }
}

#[test]
fn acknowledgement_without_room_is_kept_and_written_once_space_is_back() {
    let fs = MemFs::new();
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Always), &["a"]);
    log.append(&batch(0, 10)).unwrap();
    fs.set_faults(Faults {
        capacity: Some(used(&fs)),
        ..Faults::default()
    });
    // Not an error: the position holds in memory.
    cs[0].ack(4).unwrap();
    assert_eq!(cs[0].pending(), 5);
    assert_eq!(drain_values(&mut cs[0]), (5..10).collect::<Vec<_>>());
    fs.set_faults(Faults::default());
    cs[0].ack(6).unwrap();
    drop((log, cs));
    let (_log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Always), &["a"]);
    assert_eq!(drain_values(&mut cs[0]), (7..10).collect::<Vec<_>>());
}

#[test]
fn segments_grow_back_once_the_filesystem_has_room_again() {
    let fs = MemFs::new();
    fs.set_faults(Faults {
        capacity: Some(32 << 10),
        ..Faults::default()
    });
    let (log, mut cs) = open_mem(&fs, roomy(FsyncPolicy::Never), &["a"]);
    for i in 0..200 {
        log.append(&batch(i * 20, 20)).unwrap();
    }
    let full = log.stats();
    assert!(full.dropped.disk_full > 0);
    fs.set_faults(Faults::default());
    for i in 200..2000 {
        log.append(&batch(i * 20, 20)).unwrap();
    }
    let s = log.stats();
    assert_eq!(
        s.dropped.disk_full, full.dropped.disk_full,
        "nothing more lost"
    );
    // Ten times the data in not many more files: segments grew with the log.
    assert!(s.bytes > 10 * full.bytes, "{} vs {}", s.bytes, full.bytes);
    assert!(s.segments <= 20, "{} segments", s.segments);
    let got = drain_values(&mut cs[0]);
    assert_eq!(*got.last().unwrap(), 2000 * 20 - 1);
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1));
}

// ---- model-based ------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Peek(usize, usize),
    /// Acknowledge up to a fraction (in 1/8ths, 1..=8) of the consumer's last peeked batch.
    Ack(usize, u8),
    /// Crash and reopen; with `Always`, unsynced bytes are torn at this fraction (in 1/8ths).
    Crash(u8),
    /// A crash in the middle of a write: garbage after the newest segment's last record.
    TornWrite(Vec<u8>),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..60).prop_map(Op::Append),
        3 => (0usize..2, 1usize..80).prop_map(|(c, m)| Op::Peek(c, m)),
        3 => (0usize..2, 1u8..=8).prop_map(|(c, f)| Op::Ack(c, f)),
        1 => (0u8..=8).prop_map(Op::Crash),
        1 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(Op::TornWrite),
    ]
}

/// The model: every appended value in order (value = sequence number here), and each
/// consumer's first unacknowledged sequence number.
#[derive(Debug, Default)]
struct Model {
    appended: u64,
    next: [u64; 2],
    peeked: [Option<(u64, u64)>; 2],
}

fn run_model(ops: Vec<Op>, fsync: FsyncPolicy) -> Result<(), TestCaseError> {
    let mut fs = MemFs::new();
    let o = DiskQueueOptions {
        max_disk_bytes: 64 * MIN_DISK_BYTES,
        ..opts(fsync)
    };
    let (mut log, mut cs) = open_mem(&fs, o.clone(), &["a", "b"]);
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append(n) => {
                let out = log.append(&batch(m.appended as i64, n)).unwrap();
                prop_assert_eq!(out.appended, n);
                m.appended += n as u64;
            }
            Op::Peek(c, max) => {
                let got = cs[c].peek(max).unwrap();
                let from = m.next[c];
                let want = (m.appended - from).min(max as u64);
                match got {
                    None => {
                        prop_assert_eq!(want, 0);
                        m.peeked[c] = None;
                    }
                    Some(b) => {
                        let vals: Vec<u64> = b.iter().map(|s| s.value as u64).collect();
                        prop_assert_eq!(vals, (from..from + want).collect::<Vec<_>>());
                        prop_assert_eq!(b.last_seq, from + want - 1);
                        m.peeked[c] = Some((from, b.last_seq));
                    }
                }
            }
            Op::Ack(c, frac) => {
                if let Some((from, last)) = m.peeked[c] {
                    let seq = from + (last - from) * u64::from(frac) / 8;
                    cs[c].ack(seq).unwrap();
                    m.next[c] = m.next[c].max(seq + 1);
                }
            }
            Op::Crash(frac) => {
                fs = fs.crash(|_, n| n * usize::from(frac) / 8);
                drop((log, cs));
                (log, cs) = open_mem(&fs, o.clone(), &["a", "b"]);
                m.peeked = [None, None];
                prop_assert!(!log.recovery_report().found_damage() || frac < 8);
            }
            Op::TornWrite(garbage) => {
                if let Some(seg) = segments(&fs).last() {
                    let mut bytes = fs.read(seg).unwrap_or_default();
                    bytes.extend_from_slice(&garbage);
                    fs.write(seg, &bytes);
                }
                fs = fs.crash(|_, n| n);
                drop((log, cs));
                (log, cs) = open_mem(&fs, o.clone(), &["a", "b"]);
                m.peeked = [None, None];
            }
        }
        for (c, q) in cs.iter().enumerate() {
            prop_assert_eq!(q.pending() as u64, m.appended - m.next[c], "consumer {}", c);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A process crash loses nothing whatever the policy: page-cache contents survive.
    #[test]
    fn model_process_crashes_lose_nothing(ops in proptest::collection::vec(arb_op(), 1..80)) {
        let ops = ops
            .into_iter()
            .map(|op| match op {
                Op::Crash(_) => Op::Crash(8),
                other => other,
            })
            .collect();
        run_model(ops, FsyncPolicy::Never)?;
    }

    /// With `Always`, a power loss (unsynced bytes torn anywhere) loses nothing either.
    #[test]
    fn model_power_loss_with_fsync_always_loses_nothing(ops in proptest::collection::vec(arb_op(), 1..60)) {
        run_model(ops, FsyncPolicy::Always)?;
    }
}

#[test]
fn power_loss_with_fsync_never_may_lose_data_but_recovers_cleanly() {
    let fs = MemFs::new();
    let (log, cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    for i in 0..20 {
        log.append(&batch(i * 30, 30)).unwrap();
    }
    // Keep an arbitrary 5/7 of every unsynced file: records get torn mid-way, in every
    // segment (with `Never` even sealed segments are not synced).
    let crashed = fs.crash(|_, n| n * 5 / 7);
    drop((log, cs));
    let (log, mut cs) = open_mem(&crashed, opts(FsyncPolicy::Never), &["a"]);
    assert!(log.recovery_report().bytes_truncated > 0);
    let got = drain_values(&mut cs[0]);
    // What survived is in order, starts at the beginning and was appended.
    assert_eq!(got.first(), Some(&0));
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    assert!(got.iter().all(|v| *v < 600));
    assert!(log.stats().next_seq >= got.len() as u64);
}

#[test]
fn dir_layout_is_as_documented() {
    let fs = MemFs::new();
    let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["prom"]);
    log.append(&batch(0, 3)).unwrap();
    cs[0].ack(0).unwrap();
    let files: Vec<String> = fs
        .files()
        .iter()
        .map(|p| {
            p.strip_prefix(Path::new(DIR))
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(files, ["00000000000000000000.seg", "prom.ack"]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever bytes the files hold, opening succeeds and the queue works afterwards.
    #[test]
    fn open_never_fails_on_random_files(
        seg in proptest::collection::vec(any::<u8>(), 0..4096),
        ack in proptest::collection::vec(any::<u8>(), 0..64),
        keep_valid_prefix in any::<bool>(),
    ) {
        let fs = MemFs::new();
        let mut bytes = Vec::new();
        if keep_valid_prefix {
            format::write_record(0, &batch(0, 5), &mut format::EncodeScratch::default(), &mut bytes);
        }
        bytes.extend_from_slice(&seg);
        fs.write(&dir().join(segment::segment_name(0)), &bytes);
        fs.write(&dir().join("a.ack"), &ack);
        let (log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
        let before = cs[0].pending();
        if keep_valid_prefix {
            prop_assert!(before >= 5);
        }
        log.append(&batch(100, 3)).unwrap();
        prop_assert_eq!(cs[0].pending(), before + 3);
        let got = drain_values(&mut cs[0]);
        prop_assert_eq!(&got[got.len() - 3..], &[100, 101, 102]);
    }
}

#[test]
fn native_histograms_survive_a_restart_beside_float_samples_of_older_records() {
    use crate::series::native::{NativeOptions, NativeState};
    let fs = MemFs::new();
    let mut state = NativeState::new(NativeOptions::from_factor(1.1));
    for v in [0.2, 0.3, 5.0] {
        state.observe(v);
    }
    let h = Arc::new(state.snapshot());
    let lat = Labels::with_name("lat_seconds", [("probe", "p")]).unwrap();
    {
        let (log, _) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
        // A float-only record (version 1), then one with a histogram (version 2).
        log.append(&batch(0, 3)).unwrap();
        let mut mixed = batch(3, 2);
        mixed.insert(1, Sample::native(&lat, h.clone(), 4));
        log.append(&mixed).unwrap();
    }
    let (_log, mut cs) = open_mem(&fs, opts(FsyncPolicy::Never), &["a"]);
    let b = cs[0].peek(usize::MAX).unwrap().unwrap();
    let got: Vec<(String, i64, bool)> = b
        .iter()
        .map(|s| {
            (
                s.labels.to_string(),
                s.timestamp_ms,
                s.histogram().is_some(),
            )
        })
        .collect();
    assert_eq!(got.len(), 6);
    assert_eq!(
        got[4],
        (r#"lat_seconds{probe="p"}"#.to_string(), 4, true),
        "{got:?}"
    );
    assert_eq!(b.iter().nth(4).and_then(|s| s.histogram()), Some(&h));
    assert_eq!(
        b.iter().filter(|s| s.histogram().is_none()).count(),
        5,
        "the float samples around it are intact"
    );
}
