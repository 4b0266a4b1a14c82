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
/// gathered, the relay workload's resident code went from 5.0 to 2.6 MiB (docs/performance.md,
/// "Code layout"). The script only adds a section (`INSERT BEFORE .text`), so the layout is
/// otherwise the linker's own.
///
/// Applied to optimised builds for Linux. Left out, with a warning, when the script is missing
/// or the flags or the configured linker name gold or mold, which do not read `INSERT`; left
/// out silently with `HOT_TEXT_LAYOUT=off` (what `scripts/hot-text.sh` profiles, and the way
/// out for any other linker that refuses the script). A layout left out costs memory only.
fn hot_text_layout() {
    println!("cargo:rerun-if-changed=scripts/hot-text.ld");
    println!("cargo:rerun-if-env-changed=HOT_TEXT_LAYOUT");
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // Only optimised builds: the layout matters where the code is measured and deployed, and
    // matching the patterns against an unoptimised build's sections slows each link by
    // seconds.
    let optimised = env::var("OPT_LEVEL").is_ok_and(|l| l != "0");
    if target_os != "linux" || !optimised || env::var("HOT_TEXT_LAYOUT").as_deref() == Ok("off") {
        return;
    }
    let Some(dir) = env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let script = std::path::Path::new(&dir).join("scripts/hot-text.ld");
    let Some(script) = script.to_str().filter(|_| script.is_file()) else {
        println!(
            "cargo:warning=scripts/hot-text.ld is missing: linking without the hot-text layout"
        );
        return;
    };
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let linker = env::var("RUSTC_LINKER").unwrap_or_default();
    let linker = std::path::Path::new(&linker)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let other = ["gold", "mold"].into_iter().find(|l| {
        flags.contains(&format!("fuse-ld={l}"))
            || flags.contains(&format!("ld.{l}"))
            || linker.contains(l)
    });
    if let Some(other) = other {
        println!("cargo:warning={other} does not read INSERT: linking without the hot-text layout");
        return;
    }
    // One argument, joined: compiler drivers and linkers called directly both read `-Tpath`,
    // and nothing splits it (`-Wl,` would, at a comma in the checkout's path).
    println!("cargo:rustc-link-arg-bin=pushprobe=-T{script}");
}
