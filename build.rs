//! Compiles `proto/` into Rust with prost-build, parsing the schema with protox
//! (pure Rust) so that building pushprobe needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
