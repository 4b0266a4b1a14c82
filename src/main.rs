//! The pushprobe binary: all behaviour lives in the library; see `pushprobe::cli`.

#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    tune_allocator();
    pushprobe::cli::main()
}

/// Keeps large, short-lived buffers (scrape bodies, HTTP read buffers, encoder output) out of
/// the heap.
///
/// glibc serves allocations of 128 KiB and more with their own mappings, but raises that
/// threshold each time such a mapping is freed, after which every scrape's body and read
/// buffer land on the heap, fragment it, and stay resident: about 5 MiB of a 40 MiB agent
/// forwarding 100,000 series. Fixing the threshold keeps them mapped and returned on free.
/// An operator's own `MALLOC_MMAP_THRESHOLD_` wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt(3) only changes allocator parameters; it is called before any
        // other thread exists, and the value is glibc's own default made fixed. Allowed here
        // alone: std offers no way to set an allocator parameter.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
