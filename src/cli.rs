//! Command line: argument parsing, logging set-up, signal handling and exit codes.
//!
//! Exit codes are part of the interface (cron jobs and CI steps branch on them):
//! 0 success, 1 a probe failed, 2 usage error, 3 delivery failed, 70 internal error,
//! 78 bad configuration (EX_CONFIG).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::config::{self, ConfigError, Settings};

/// Everything went as it should.
pub const EXIT_OK: u8 = 0;
/// At least one probe failed (its results were still delivered).
pub const EXIT_PROBE_FAILED: u8 = 1;
/// The command line was wrong.
pub const EXIT_USAGE: u8 = 2;
/// Some samples could not be delivered before the deadline.
pub const EXIT_DELIVERY_FAILED: u8 = 3;
/// Something unexpected inside pushprobe.
pub const EXIT_INTERNAL: u8 = 70;
/// The configuration is invalid.
pub const EXIT_CONFIG: u8 = 78;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// pushprobe: probe endpoints and AI APIs, push the results with Prometheus remote write.
#[derive(Debug, Parser)]
#[command(name = "pushprobe", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        short,
        long,
        global = true,
        env = "PUSHPROBE_CONFIG",
        default_value = "pushprobe.toml"
    )]
    pub config: PathBuf,
    /// Log format.
    #[arg(long, global = true, env = "PUSHPROBE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level filter (e.g. `info`, `debug`, `pushprobe=debug`).
    #[arg(
        long,
        global = true,
        env = "PUSHPROBE_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run probes on their intervals and push until SIGINT/SIGTERM, then flush and exit.
    Run,
    /// Run every probe once, push, and exit: 0 ok, 1 probe failed, 3 delivery failed.
    Once,
    /// Configuration tools.
    Config {
        /// Configuration subcommand.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it as pushprobe reads it, secrets redacted.
    Check,
}

/// Parses arguments and runs the command; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    init_logging(cli.log_format, &cli.log_level);
    ExitCode::from(run_command(&cli))
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|e| {
        eprintln!("pushprobe: log level {level:?} is not valid ({e}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Loads and validates the configuration, printing every error.
pub fn load_settings(path: &std::path::Path) -> Result<Settings, u8> {
    let source = path.display().to_string();
    let file = config::load(path, true).map_err(|e| {
        report_config_errors(&[e]);
        EXIT_CONFIG
    })?;
    file.validate(&source).map_err(|errs| {
        report_config_errors(&errs);
        EXIT_CONFIG
    })
}

fn report_config_errors(errors: &[ConfigError]) {
    eprintln!("pushprobe: invalid configuration:");
    for e in errors {
        eprintln!("  {e}");
    }
}

fn run_command(cli: &Cli) -> u8 {
    let settings = match load_settings(&cli.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Command::Config {
        command: ConfigCommand::Check,
    } = cli.command
    {
        return print_effective_config(&settings);
    }
    // A short-lived command gets a single-threaded runtime: less start-up work and memory.
    let runtime = match cli.command {
        Command::Run => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pushprobe: cannot start the async runtime: {e}");
            return EXIT_INTERNAL;
        }
    };
    runtime.block_on(async {
        let agent = match Agent::new(settings) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("pushprobe: {e}");
                return EXIT_CONFIG;
            }
        };
        if !agent.has_sinks() {
            tracing::warn!(
                "no [[remote_write]] or [[pushgateway]] configured: probe results are not sent anywhere"
            );
        }
        let shutdown = CancellationToken::new();
        let abort = CancellationToken::new();
        let signals = tokio::spawn(watch_signals(shutdown.clone(), abort.clone()));
        let code = match cli.command {
            Command::Run => {
                agent.run(shutdown.clone(), abort.clone()).await;
                EXIT_OK
            }
            Command::Once => {
                let summary = agent.once(abort.clone()).await;
                if !summary.delivered {
                    tracing::error!(
                        undelivered = summary.undelivered,
                        "not every sample was delivered"
                    );
                    EXIT_DELIVERY_FAILED
                } else if summary.reports.iter().any(|(_, r)| !r.success) {
                    EXIT_PROBE_FAILED
                } else {
                    EXIT_OK
                }
            }
            Command::Config { .. } => EXIT_OK,
        };
        signals.abort();
        let _ = signals.await;
        code
    })
}

fn print_effective_config(settings: &Settings) -> u8 {
    match toml::to_string_pretty(&settings.file) {
        Ok(text) => {
            println!("# configuration is valid; effective values (secrets redacted):");
            print!("{text}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("pushprobe: cannot print the configuration: {e}");
            EXIT_INTERNAL
        }
    }
}

/// First SIGINT/SIGTERM: graceful shutdown. Second: stop without waiting for delivery.
async fn watch_signals(shutdown: CancellationToken, abort: CancellationToken) {
    for token in [shutdown, abort] {
        if wait_for_signal().await.is_err() {
            return;
        }
        token.cancel();
    }
}

async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
