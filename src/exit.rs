//! Process exit codes, part of pushprobe's interface: cron jobs and CI steps branch on them.
//! Sysexits-style (`EX_SOFTWARE`, `EX_CONFIG`) where one fits, small numbers otherwise. `exec`
//! passes its command's own status through instead (see [`crate::exec`]).

/// Everything went as it should.
pub const EXIT_OK: u8 = 0;
/// At least one probe failed (its results were still delivered).
pub const EXIT_PROBE_FAILED: u8 = 1;
/// The command line was wrong.
pub const EXIT_USAGE: u8 = 2;
/// Some samples could not be delivered before the deadline.
pub const EXIT_DELIVERY_FAILED: u8 = 3;
/// Something unexpected inside pushprobe (EX_SOFTWARE).
pub const EXIT_INTERNAL: u8 = 70;
/// The configuration is invalid (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
