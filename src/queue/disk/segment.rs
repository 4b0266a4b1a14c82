//! Segment files: naming, what is known about each in memory, buffered positioned reads, and
//! the recovery scan that finds the valid records in whatever bytes a crash left.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::format::{self, FormatError, RecordHeader, HEADER_LEN, RECORD_MAGIC};
use super::fs::ReadFile;

/// File name extension of segments.
pub const SEGMENT_EXT: &str = ".seg";
/// Bytes read from a segment at a time.
const WINDOW: usize = 256 << 10;

/// The file name of the segment whose first sequence number is `base_seq`: zero-padded so
/// that names sort in sequence order.
pub fn segment_name(base_seq: u64) -> String {
    format!("{base_seq:020}{SEGMENT_EXT}")
}

/// The base sequence number in a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXT)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the queue knows about one segment, kept in memory (a few dozen bytes, however big
/// the segment).
#[derive(Debug, Clone)]
pub struct SegmentMeta {
    /// Sequence number in the file name; every record in it starts at or after it.
    pub base_seq: u64,
    /// The file.
    pub path: PathBuf,
    /// Bytes known to be written and checked; nothing at or after it is ever read.
    pub len: u64,
    /// Byte ranges below `len` known to be corrupt, skipped by readers.
    pub holes: Vec<Range<u64>>,
    /// Sequence numbers of the valid records, as ascending, disjoint, merged ranges.
    pub runs: Vec<Range<u64>>,
}

impl SegmentMeta {
    /// An empty segment.
    pub fn new(dir: &Path, base_seq: u64) -> Self {
        SegmentMeta {
            base_seq,
            path: dir.join(segment_name(base_seq)),
            len: 0,
            holes: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// Records that a valid record numbered `seqs` was found or written.
    pub fn push_run(&mut self, seqs: Range<u64>) {
        if seqs.is_empty() {
            return;
        }
        match self.runs.last_mut() {
            Some(last) if last.end == seqs.start => last.end = seqs.end,
            _ => self.runs.push(seqs),
        }
    }

    /// Removes the sequence numbers of a record found corrupt after it was counted.
    pub fn remove_seqs(&mut self, seqs: Range<u64>) {
        let mut out = Vec::with_capacity(self.runs.len() + 1);
        for r in self.runs.drain(..) {
            if r.end <= seqs.start || r.start >= seqs.end {
                out.push(r);
                continue;
            }
            if r.start < seqs.start {
                out.push(r.start..seqs.start);
            }
            if seqs.end < r.end {
                out.push(seqs.end..r.end);
            }
        }
        self.runs = out;
    }

    /// Sequence number after the last valid sample (the base when there is none).
    pub fn end_seq(&self) -> u64 {
        self.runs.last().map_or(self.base_seq, |r| r.end)
    }

    /// Valid samples held.
    pub fn samples(&self) -> u64 {
        self.runs.iter().map(|r| r.end - r.start).sum()
    }

    /// Valid samples numbered `seq` or later.
    pub fn samples_from(&self, seq: u64) -> u64 {
        self.runs
            .iter()
            .map(|r| r.end.saturating_sub(r.start.max(seq)))
            .sum()
    }

    /// The hole starting at `offset`, if any.
    pub fn hole_at(&self, offset: u64) -> Option<&Range<u64>> {
        self.holes.iter().find(|h| h.start == offset)
    }
}

/// Buffered positioned reads of one file, never past a limit the caller gives.
#[derive(Debug)]
pub struct SegmentReader {
    file: Box<dyn ReadFile>,
    buf: Vec<u8>,
    buf_off: u64,
}

impl SegmentReader {
    /// Wraps an open file.
    pub fn new(file: Box<dyn ReadFile>) -> Self {
        SegmentReader {
            file,
            buf: Vec::new(),
            buf_off: 0,
        }
    }

    /// Returns bytes `offset..offset + n`, or `None` if the file (or `limit`) ends first.
    pub fn read(&mut self, offset: u64, n: usize, limit: u64) -> io::Result<Option<&[u8]>> {
        let Some(end) = offset.checked_add(n as u64) else {
            return Ok(None);
        };
        if end > limit {
            return Ok(None);
        }
        let buf_end = self.buf_off + self.buf.len() as u64;
        if offset < self.buf_off || end > buf_end {
            // Refill from `offset`: a window ahead, so the next records cost no system call.
            let want = (n.max(WINDOW) as u64).min(limit - offset) as usize;
            self.buf.resize(want, 0);
            self.buf_off = offset;
            let mut filled = 0;
            while filled < want {
                match self
                    .file
                    .read_at(offset + filled as u64, &mut self.buf[filled..])
                {
                    Ok(0) => break,
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.clear();
                        return Err(e);
                    }
                }
            }
            self.buf.truncate(filled);
            if filled < n {
                return Ok(None);
            }
        }
        let start = (offset - self.buf_off) as usize;
        Ok(Some(&self.buf[start..start + n]))
    }

    /// Length of the underlying file.
    pub fn file_len(&self) -> io::Result<u64> {
        self.file.size()
    }
}

/// Why no valid record was read at an offset.
#[derive(Debug)]
pub enum RecordFault {
    /// The bytes are not a valid record (or not the one expected).
    Corrupt(FormatError),
    /// The file could not be read.
    Io(io::Error),
}

/// A record read and checked, with its payload.
#[derive(Debug)]
pub struct RawRecord<'a> {
    /// The header.
    pub header: RecordHeader,
    /// The payload, checksum verified.
    pub payload: &'a [u8],
}

/// Reads and checks the record at `offset`, which must end by `limit` and number its samples
/// at or after `min_seq` (sequence numbers only grow along a log).
pub fn read_record<'r>(
    reader: &'r mut SegmentReader,
    offset: u64,
    limit: u64,
    min_seq: u64,
) -> Result<RawRecord<'r>, RecordFault> {
    let header = match reader.read(offset, HEADER_LEN, limit) {
        Ok(Some(h)) => format::parse_header(h).map_err(RecordFault::Corrupt)?,
        Ok(None) => {
            return Err(RecordFault::Corrupt(FormatError::Truncated {
                offset: 0,
                needed: HEADER_LEN,
                available: limit.saturating_sub(offset) as usize,
            }))
        }
        Err(e) => return Err(RecordFault::Io(e)),
    };
    if header.first_seq < min_seq
        || header
            .first_seq
            .checked_add(u64::from(header.count))
            .is_none()
    {
        return Err(RecordFault::Corrupt(FormatError::Implausible {
            what: "first sequence number",
            value: header.first_seq,
            offset: 8,
        }));
    }
    let len = header.payload_len as usize;
    let payload = match reader.read(offset + HEADER_LEN as u64, len, limit) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Err(RecordFault::Corrupt(FormatError::Truncated {
                offset: HEADER_LEN,
                needed: len,
                available: limit.saturating_sub(offset + HEADER_LEN as u64) as usize,
            }))
        }
        Err(e) => return Err(RecordFault::Io(e)),
    };
    header.verify(payload).map_err(RecordFault::Corrupt)?;
    Ok(RawRecord { header, payload })
}

/// Finds the first valid record after `from` and before `limit`, by looking for the record
/// magic and checking each candidate in full.
pub fn resync(
    reader: &mut SegmentReader,
    from: u64,
    limit: u64,
    min_seq: u64,
) -> io::Result<Option<u64>> {
    let mut at = from;
    let mut candidates = Vec::new();
    while at + HEADER_LEN as u64 <= limit {
        let n = ((limit - at) as usize).min(WINDOW);
        let Some(chunk) = reader.read(at, n, limit)? else {
            return Ok(None);
        };
        candidates.clear();
        candidates.extend(
            chunk
                .windows(RECORD_MAGIC.len())
                .enumerate()
                .filter(|(_, w)| format::is_record_magic(w))
                .map(|(i, _)| at + i as u64),
        );
        for &c in &candidates {
            match read_record(reader, c, limit, min_seq) {
                Ok(_) => return Ok(Some(c)),
                Err(RecordFault::Io(e)) => return Err(e),
                Err(RecordFault::Corrupt(_)) => {}
            }
        }
        // Overlap by the magic's length less one so a magic across the boundary is seen.
        at += (n - (RECORD_MAGIC.len() - 1)).max(1) as u64;
    }
    Ok(None)
}

/// What the recovery scan of one segment found.
#[derive(Debug)]
pub struct ScanOutcome {
    /// The segment as it may be used: `len` ends after the last valid record.
    pub meta: SegmentMeta,
    /// Length of the file as found.
    pub file_len: u64,
    /// Valid records found.
    pub records: u64,
    /// Corrupt regions skipped between valid records.
    pub holes: u64,
    /// Bytes in those regions.
    pub hole_bytes: u64,
    /// Sequence numbers missing between valid records (lost with the holes).
    pub missing_seqs: u64,
}

impl ScanOutcome {
    /// Bytes after the last valid record: a torn or zeroed tail, to be cut off.
    pub fn tail_bytes(&self) -> u64 {
        self.file_len - self.meta.len
    }
}

/// Scans a whole segment, checking every record, and says which bytes hold valid records.
/// Never fails on content; only a read error ends it early.
pub fn scan(reader: &mut SegmentReader, meta: SegmentMeta) -> io::Result<ScanOutcome> {
    let file_len = reader.file_len()?;
    let mut out = ScanOutcome {
        meta: SegmentMeta {
            len: 0,
            holes: Vec::new(),
            runs: Vec::new(),
            ..meta
        },
        file_len,
        records: 0,
        holes: 0,
        hole_bytes: 0,
        missing_seqs: 0,
    };
    let mut offset = 0u64;
    let mut min_seq = out.meta.base_seq;
    while offset < file_len {
        match read_record(reader, offset, file_len, min_seq) {
            Ok(rec) => {
                let h = rec.header;
                let valid_end = out.meta.len;
                if offset > valid_end {
                    out.holes += 1;
                    out.hole_bytes += offset - valid_end;
                    out.meta.holes.push(valid_end..offset);
                    out.missing_seqs += h.first_seq - min_seq;
                }
                out.records += 1;
                out.meta.push_run(h.first_seq..h.end_seq());
                offset += h.record_len();
                out.meta.len = offset;
                min_seq = h.end_seq();
            }
            Err(RecordFault::Io(e)) => return Err(e),
            Err(RecordFault::Corrupt(_)) => match resync(reader, offset + 1, file_len, min_seq)? {
                Some(next) => offset = next,
                None => break,
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::queue::disk::format::{write_record, EncodeScratch};
    use crate::queue::disk::fs::Fs;
    use crate::queue::disk::memfs::MemFs;
    use crate::series::{Labels, Sample};

    fn samples(n: usize) -> Vec<Sample> {
        let l = Labels::with_name("m", [("a", "b")]).unwrap();
        (0..n)
            .map(|i| Sample {
                labels: l.clone(),
                value: i as f64,
                timestamp_ms: i as i64,
            })
            .collect()
    }

    fn scan_bytes(bytes: &[u8]) -> ScanOutcome {
        let fs = MemFs::new();
        let p = Path::new("/q/00000000000000000000.seg");
        fs.write(p, bytes);
        let mut r = SegmentReader::new(fs.open_read(p).unwrap());
        scan(&mut r, SegmentMeta::new(Path::new("/q"), 0)).unwrap()
    }

    fn three_records() -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        let mut seq = 0;
        for n in [3, 4, 5] {
            starts.push(out.len() as u64);
            write_record(seq, &samples(n), &mut EncodeScratch::default(), &mut out);
            seq += n as u64;
        }
        (out, starts)
    }

    #[test]
    fn names_sort_in_sequence_order_and_parse_back() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.seg"), None);
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn clean_segment_scans_whole() {
        let (bytes, _) = three_records();
        let o = scan_bytes(&bytes);
        assert_eq!(o.records, 3);
        assert_eq!(o.meta.len, bytes.len() as u64);
        assert_eq!(o.meta.runs, vec![0..12]);
        assert_eq!(o.tail_bytes(), 0);
    }

    #[test]
    fn torn_tail_is_cut_at_the_last_whole_record() {
        let (bytes, starts) = three_records();
        for cut in starts[2] + 1..bytes.len() as u64 {
            let o = scan_bytes(&bytes[..cut as usize]);
            assert_eq!(o.records, 2);
            assert_eq!(o.meta.len, starts[2]);
            assert_eq!(o.tail_bytes(), cut - starts[2]);
        }
    }

    #[test]
    fn corrupt_middle_record_becomes_a_hole() {
        let (mut bytes, starts) = three_records();
        bytes[starts[1] as usize + 30] ^= 0x40;
        let o = scan_bytes(&bytes);
        assert_eq!(o.records, 2);
        assert_eq!(o.holes, 1);
        assert_eq!(o.missing_seqs, 4);
        assert_eq!(o.meta.holes, vec![starts[1]..starts[2]]);
        assert_eq!(o.meta.runs, vec![0..3, 7..12]);
        assert_eq!(o.meta.samples_from(5), 5);
    }

    #[test]
    fn zero_filled_segment_has_no_records() {
        let o = scan_bytes(&[0u8; 5000]);
        assert_eq!(o.records, 0);
        assert_eq!(o.tail_bytes(), 5000);
    }

    proptest! {
        #[test]
        fn scan_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let o = scan_bytes(&bytes);
            prop_assert!(o.meta.len <= bytes.len() as u64);
        }

        #[test]
        fn scan_keeps_every_record_outside_the_damage(
            at in any::<prop::sample::Index>(),
            garbage in proptest::collection::vec(any::<u8>(), 1..40),
        ) {
            let (mut bytes, starts) = three_records();
            let pos = at.index(bytes.len());
            for (i, g) in garbage.iter().enumerate() {
                if let Some(b) = bytes.get_mut(pos + i) {
                    *b ^= g | 1;
                }
            }
            let end = pos + garbage.len();
            let o = scan_bytes(&bytes);
            let mut bounds = starts.clone();
            bounds.push(bytes.len() as u64);
            // Every record wholly outside the damaged range survives.
            for w in 0..3 {
                let (s, e) = (bounds[w] as usize, bounds[w + 1] as usize);
                if e <= pos || s >= end {
                    let seqs = [0..3u64, 3..7, 7..12][w].clone();
                    prop_assert!(o.meta.samples_from(seqs.start) - o.meta.samples_from(seqs.end) == seqs.end - seqs.start,
                        "record {} lost: runs {:?}", w, o.meta.runs);
                }
            }
        }
    }
}
