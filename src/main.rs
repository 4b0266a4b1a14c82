//! The pushprobe binary: all behaviour lives in the library; see `pushprobe::cli`.

fn main() -> std::process::ExitCode {
    pushprobe::cli::main()
}
