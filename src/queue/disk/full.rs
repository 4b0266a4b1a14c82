//! Telling a full filesystem apart from other write failures, and keeping its log quiet.
//!
//! A full filesystem is not a fault of one write: it lasts, and every append meets it again
//! until space is freed. The log makes room by dropping its oldest samples (see "Full
//! filesystem" in the module above); `FullDiskLog` turns the stream of such episodes into
//! one line for the first, a summary per minute while it lasts, and one line once the
//! filesystem has taken writes for a minute without complaint.

use std::io;
use std::time::{Duration, Instant};

/// How often a lasting full filesystem is summarised in the log.
pub(crate) const FULL_DISK_SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Tells whether a write failed because the filesystem (ENOSPC) or the user's quota (EDQUOT)
/// has no room left, as opposed to a fault of the device or the file.
pub fn is_out_of_space(e: &io::Error) -> bool {
    if matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) {
        return true;
    }
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Samples a full filesystem cost, over some period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FullDiskTally {
    /// Times a write met a full filesystem.
    pub events: u64,
    /// Oldest samples dropped (with their segment) to make room.
    pub evicted: u64,
    /// New samples not stored because nothing older was left to drop.
    pub refused: u64,
}

/// What to log for a full-filesystem episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FullDiskReport {
    /// The first of a run of episodes: log it in full.
    First,
    /// A minute has passed since the last report: log what happened since.
    Summary(FullDiskTally),
    /// Counted, reported later.
    Quiet,
}

/// Rate-limits the full-filesystem log: the first episode is logged, then at most one summary
/// a minute, and the run ends once writes have gone through for a minute.
#[derive(Debug, Default)]
pub(crate) struct FullDiskLog {
    run: Option<Run>,
}

#[derive(Debug)]
struct Run {
    last_report: Instant,
    last_event: Instant,
    unreported: FullDiskTally,
}

impl FullDiskLog {
    /// Records an episode at `now` that evicted and refused the given samples; says what to log.
    pub(crate) fn full(&mut self, now: Instant, evicted: u64, refused: u64) -> FullDiskReport {
        let Some(run) = &mut self.run else {
            self.run = Some(Run {
                last_report: now,
                last_event: now,
                unreported: FullDiskTally::default(),
            });
            return FullDiskReport::First;
        };
        run.last_event = now;
        run.unreported.events += 1;
        run.unreported.evicted += evicted;
        run.unreported.refused += refused;
        if now.saturating_duration_since(run.last_report) < FULL_DISK_SUMMARY_EVERY {
            return FullDiskReport::Quiet;
        }
        run.last_report = now;
        FullDiskReport::Summary(std::mem::take(&mut run.unreported))
    }

    /// Records a write that went through at `now`. Once none has met a full filesystem for a
    /// minute the run is over: returns what it left unreported (possibly nothing).
    pub(crate) fn stored(&mut self, now: Instant) -> Option<FullDiskTally> {
        let run = self.run.as_ref()?;
        if now.saturating_duration_since(run.last_event) < FULL_DISK_SUMMARY_EVERY {
            return None;
        }
        self.run.take().map(|r| r.unreported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_space_is_enospc_or_edquot_whatever_its_form() {
        assert!(is_out_of_space(&io::Error::from(
            io::ErrorKind::StorageFull
        )));
        assert!(is_out_of_space(&io::Error::from(
            io::ErrorKind::QuotaExceeded
        )));
        #[cfg(unix)]
        {
            assert!(is_out_of_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
            assert!(is_out_of_space(&io::Error::from_raw_os_error(libc::EDQUOT)));
            assert!(!is_out_of_space(&io::Error::from_raw_os_error(libc::EIO)));
        }
        assert!(!is_out_of_space(&io::Error::other("bad sector")));
        assert!(!is_out_of_space(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
    }

    #[test]
    fn full_disk_log_reports_the_first_then_one_summary_a_minute() {
        let t0 = Instant::now();
        let mut log = FullDiskLog::default();
        assert_eq!(log.full(t0, 100, 0), FullDiskReport::First);
        for i in 1..=30 {
            assert_eq!(
                log.full(t0 + Duration::from_secs(i), 0, 10),
                FullDiskReport::Quiet
            );
            // Writes between the failures do not end the run.
            assert_eq!(log.stored(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(
            log.full(t0 + FULL_DISK_SUMMARY_EVERY, 50, 0),
            FullDiskReport::Summary(FullDiskTally {
                events: 31,
                evicted: 50,
                refused: 300,
            })
        );
        assert_eq!(
            log.full(t0 + FULL_DISK_SUMMARY_EVERY + Duration::from_secs(1), 0, 5),
            FullDiskReport::Quiet
        );
    }

    #[test]
    fn full_disk_run_ends_after_a_minute_of_writes_reporting_the_rest() {
        let t0 = Instant::now();
        let mut log = FullDiskLog::default();
        assert_eq!(log.stored(t0), None, "no run, nothing to say");
        assert_eq!(log.full(t0, 7, 0), FullDiskReport::First);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(log.full(t1, 0, 3), FullDiskReport::Quiet);
        assert_eq!(log.stored(t1 + Duration::from_secs(59)), None);
        assert_eq!(
            log.stored(t1 + FULL_DISK_SUMMARY_EVERY),
            Some(FullDiskTally {
                events: 1,
                evicted: 0,
                refused: 3,
            })
        );
        // The next episode starts a new run, logged in full.
        assert_eq!(
            log.full(t1 + FULL_DISK_SUMMARY_EVERY * 2, 1, 0),
            FullDiskReport::First
        );
    }
}
