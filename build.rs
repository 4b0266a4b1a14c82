//! Compiles `proto/` into Rust with prost-build, parsing the schema with protox
//! (pure Rust) so that building pushprobe needs no system `protoc`; and links the binary
//! with its hot-text layout (`scripts/hot-text.ld`, see [`hot_text_layout`]).

use std::env;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    hot_text_layout();
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(
        [
            "proto/remote.proto",
            "proto/write_v2.proto",
            "proto/metrics.proto",
        ],
        ["proto"],
    )?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}

/// Links the `pushprobe` binary with `scripts/hot-text.ld`, which gathers the functions its
/// workloads run into one `.text.hot` section ahead of the rest of the code. A process's
/// resident code is every page the kernel mapped around the code it ran, not just that code:
/// gathered, the same run maps about half as many pages (docs/performance.md, "Code
/// layout"). The script only adds a section (`INSERT BEFORE .text`), so the layout is
/// otherwise the linker's own.
///
/// Applied to release builds for Linux, with the linkers that read `INSERT` (GNU ld, LLD);
/// skipped when the flags name gold or mold, which do not, and when `HOT_TEXT_LAYOUT=off` is
/// set (what `scripts/hot-text.sh` builds its profiled binary with).
fn hot_text_layout() {
    println!("cargo:rerun-if-changed=scripts/hot-text.ld");
    println!("cargo:rerun-if-env-changed=HOT_TEXT_LAYOUT");
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // Only optimised builds: the layout matters where the code is measured and deployed, and
    // matching the patterns against an unoptimised build's sections slows each link by
    // seconds.
    let optimised = env::var("PROFILE").as_deref() == Ok("release");
    // The linker is named in the flags (`-fuse-ld=mold`) or configured (`RUSTC_LINKER`); a
    // false match only leaves the layout out.
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let linker = env::var("RUSTC_LINKER").unwrap_or_default();
    let other_linker = ["gold", "mold"]
        .iter()
        .any(|l| flags.contains(l) || linker.contains(l));
    let off = env::var("HOT_TEXT_LAYOUT").as_deref() == Ok("off");
    if target_os != "linux" || !optimised || other_linker || off {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    // `-Xlinker`, not `-Wl,`: the latter would split a checkout path that has a comma.
    for arg in ["-T", &format!("{dir}/scripts/hot-text.ld")] {
        println!("cargo:rustc-link-arg-bin=pushprobe=-Xlinker");
        println!("cargo:rustc-link-arg-bin=pushprobe={arg}");
    }
}
