//! Gives back the pages of code and constants that only starting up used.
//!
//! Reading the configuration, building TLS and HTTP clients, and the dynamic loader's
//! relocation of the binary touch code and read-only data that the running agent never
//! touches again. Those pages stay mapped into the process, and counted in its resident
//! memory, until the kernel needs the memory back: on the relay workload of
//! `docs/performance.md`, the binary's relocation table alone (456 KiB, read once by the
//! loader) and the code and constants of start-up. An agent's memory is judged by that count,
//! so `run` unmaps every clean, read-only file page once, after start-up and before the first
//! scrape or probe; the pages the agent then uses are mapped again from the page cache on
//! their first touch, as the kernel would map them after reclaiming memory.
//!
//! Only mappings that hold nothing but the file's own bytes are touched: private, not
//! writable, and with no page of their own (no `Anonymous` or `Private_Dirty` memory, which
//! a mapping has once a page of it was written, as the loader writes the relocated
//! read-only data). Unmapping such a page loses nothing: its next touch reads the same bytes
//! from the same file.

use std::ops::Range;

/// A mapping whose resident pages can be given back, as `/proc/self/smaps` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanMapping {
    /// The mapping's addresses.
    pub range: Range<usize>,
    /// Its resident memory when listed, in KiB.
    pub rss_kib: u64,
}

/// The mappings of `smaps` (the text of `/proc/<pid>/smaps`) that map a file read-only and
/// privately, with resident pages and no page of their own. A block that does not parse is
/// left out: giving back less is always correct.
pub fn clean_file_mappings(smaps: &str) -> Vec<CleanMapping> {
    let mut found = Vec::new();
    let mut current: Option<Block> = None;
    for line in smaps.lines() {
        if let Some(header) = Block::header(line) {
            found.extend(current.take().and_then(Block::clean));
            current = Some(header);
        } else if let Some(block) = current.as_mut() {
            block.field(line);
        }
    }
    found.extend(current.and_then(Block::clean));
    found
}

/// One mapping's block of `smaps`, as far as it is read.
struct Block {
    range: Range<usize>,
    /// Read-only, private and backed by a named file.
    candidate: bool,
    rss_kib: Option<u64>,
    anonymous_kib: Option<u64>,
    private_dirty_kib: Option<u64>,
}

impl Block {
    /// The block a header line (`start-end perms offset dev inode [path]`) starts.
    fn header(line: &str) -> Option<Block> {
        let mut parts = line.split_ascii_whitespace();
        let (start, end) = parts.next()?.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let perms = parts.next()?.as_bytes();
        // offset, device and inode come before the path.
        let path = parts.nth(3);
        if start >= end || perms.len() != 4 {
            return None;
        }
        let candidate = perms[0] == b'r'
            && perms[1] != b'w'
            && perms[3] == b'p'
            && path.is_some_and(|p| p.starts_with('/'));
        Some(Block {
            range: start..end,
            candidate,
            rss_kib: None,
            anonymous_kib: None,
            private_dirty_kib: None,
        })
    }

    /// Reads a `Name:   N kB` line of the block.
    fn field(&mut self, line: &str) {
        let Some((name, rest)) = line.split_once(':') else {
            return;
        };
        let slot = match name {
            "Rss" => &mut self.rss_kib,
            "Anonymous" => &mut self.anonymous_kib,
            "Private_Dirty" => &mut self.private_dirty_kib,
            _ => return,
        };
        *slot = rest
            .trim()
            .strip_suffix("kB")
            .and_then(|n| n.trim().parse().ok());
    }

    /// The mapping, if it may be given back and has pages to give.
    fn clean(self) -> Option<CleanMapping> {
        let own_pages = self.anonymous_kib? + self.private_dirty_kib?;
        let rss_kib = self.rss_kib?;
        (self.candidate && own_pages == 0 && rss_kib > 0).then_some(CleanMapping {
            range: self.range,
            rss_kib,
        })
    }
}

/// Unmaps the resident pages of every clean file mapping of this process (see the module
/// documentation) and returns how many KiB they held. Does nothing where there is no
/// `/proc/self/smaps`.
#[cfg(target_os = "linux")]
pub fn release() -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for mapping in clean_file_mappings(&smaps) {
        let len = mapping.range.end - mapping.range.start;
        // SAFETY: madvise(2) with MADV_DONTNEED only unmaps pages; the range is a whole
        // mapping the kernel just listed. It is a read-only private file mapping with no
        // page of its own, so its contents are the file's and come back unchanged on the
        // next touch; nothing holds a reference that the unmapping could invalidate. The
        // crate denies `unsafe` elsewhere; the standard library has no call for this.
        #[allow(unsafe_code)]
        let done = unsafe {
            libc::madvise(
                mapping.range.start as *mut libc::c_void,
                len,
                libc::MADV_DONTNEED,
            )
        };
        if done == 0 {
            released += mapping.rss_kib;
        }
    }
    released
}

/// Unmaps nothing: only Linux lists the mappings this needs.
#[cfg(not(target_os = "linux"))]
pub fn release() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0074000 r--p 00000000 08:01 1234 /usr/bin/pushprobe
Size:                464 kB
Rss:                 456 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
55d0c0074000-55d0c0200000 r-xp 00074000 08:01 1234 /usr/bin/pushprobe
Rss:                1200 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
55d0c0200000-55d0c0255000 r--p 00200000 08:01 1234 /usr/bin/pushprobe
Rss:                 340 kB
Private_Dirty:       340 kB
Anonymous:           340 kB
55d0c0255000-55d0c025a000 rw-p 00255000 08:01 1234 /usr/bin/pushprobe
Rss:                  20 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
55d0c1000000-55d0c2000000 rw-p 00000000 00:00 0 [heap]
Rss:                7000 kB
Private_Dirty:      7000 kB
Anonymous:          7000 kB
7f0000000000-7f0000010000 r--p 00000000 00:00 0
Rss:                  64 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000100000-7f0000200000 ---p 00000000 08:01 99 /usr/lib/libc.so.6
Rss:                   0 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 r-xp 00028000 08:01 99 /usr/lib/libc.so.6
Rss:                 900 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000300000-7f0000301000 r--s 00000000 08:01 77 /dev/shm/x
Rss:                   4 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7fff00000000-7fff00002000 r-xp 00000000 00:00 0 [vdso]
Rss:                   8 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_private_file_mappings_are_given_back() {
        let found = clean_file_mappings(SMAPS);
        assert_eq!(
            found,
            vec![
                CleanMapping {
                    range: 0x55d0_c000_0000..0x55d0_c007_4000,
                    rss_kib: 456
                },
                CleanMapping {
                    range: 0x55d0_c007_4000..0x55d0_c020_0000,
                    rss_kib: 1200
                },
                CleanMapping {
                    range: 0x7f00_0020_0000..0x7f00_0030_0000,
                    rss_kib: 900
                },
            ]
        );
    }

    #[test]
    fn a_block_missing_a_field_or_garbled_is_left_alone() {
        let no_anon = "1000-2000 r--p 00000000 08:01 1 /bin/x\nRss: 4 kB\nPrivate_Dirty: 0 kB\n";
        assert!(clean_file_mappings(no_anon).is_empty());
        let bad_number = "1000-2000 r--p 00000000 08:01 1 /bin/x\nRss: 4 kB\n\
                          Private_Dirty: x kB\nAnonymous: 0 kB\n";
        assert!(clean_file_mappings(bad_number).is_empty());
        let bad_range = "2000-1000 r--p 00000000 08:01 1 /bin/x\nRss: 4 kB\n\
                         Private_Dirty: 0 kB\nAnonymous: 0 kB\n";
        assert!(clean_file_mappings(bad_range).is_empty());
        // A line that is neither a header nor a field is skipped.
        let garbled = "1000-2000 r--p 00000000 08:01 1 /bin/x\nzz-yy r--p\nRss: 4 kB\n\
                       Private_Dirty: 0 kB\nAnonymous: 0 kB\n";
        assert_eq!(clean_file_mappings(garbled).len(), 1);
        assert!(clean_file_mappings("").is_empty());
        assert!(clean_file_mappings("\u{0}\u{ff}garbage\n:::\n").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn released_pages_read_back_the_same() {
        // The test binary's own code and constants: after release, the process keeps
        // running and reads what it read before.
        static TABLE: [u64; 4096] = {
            let mut t = [0u64; 4096];
            let mut i = 0;
            while i < t.len() {
                t[i] = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                i += 1;
            }
            t
        };
        let before: u64 = TABLE.iter().fold(0, |a, &x| a ^ x);
        let file_kib = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        let resident = file_kib();
        let released = release();
        assert!(released > 0, "nothing to give back");
        // Other tests run meanwhile and map pages again, but far fewer than were given back.
        assert!(file_kib() < resident, "{resident} KiB before");
        let after: u64 = std::hint::black_box(&TABLE).iter().fold(0, |a, &x| a ^ x);
        assert_eq!(before, after);
    }
}
