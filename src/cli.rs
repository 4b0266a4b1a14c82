//! Command line: argument parsing, logging set-up, signal handling and exit codes.
//!
//! Exit codes are part of the interface (cron jobs and CI steps branch on them):
//! 0 success, 1 a probe failed, 2 usage error, 3 delivery failed, 70 internal error,
//! 78 bad configuration (EX_CONFIG).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentError, OnceSummary};
use crate::config::{self, ConfigError, PushMethod, Settings};
use crate::exec;
pub use crate::exit::{
    EXIT_CONFIG, EXIT_DELIVERY_FAILED, EXIT_INTERNAL, EXIT_OK, EXIT_PROBE_FAILED, EXIT_USAGE,
};
use crate::series::Registry;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of `check` and `config check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people: `check` prints one aligned line per probe, `config check` the effective
    /// configuration as TOML.
    Table,
    /// One JSON document, for scripts.
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
        default_value = "info",
        value_parser = parse_log_level
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
    /// Run a command as a monitored job, push its duration and exit code, and exit with the
    /// command's exit code (128+N if a signal killed it; 127 not found, 126 not executable).
    Exec {
        /// The `job` label and Pushgateway job name (default: the first `[[pushgateway]]` job,
        /// else the command's file name).
        #[arg(long)]
        job: Option<String>,
        /// The command and its arguments (put `--` before them).
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<OsString>,
    },
    /// Run every probe once and print one line per probe; exit 1 if any failed. Pushes
    /// nothing unless `--push`.
    Check {
        /// Also push the results, as `once` does, print each sink's delivery, and exit 3 if
        /// something was not delivered.
        #[arg(long)]
        push: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Table: show every detail (tokens, cost, phase timings) and the whole failure
        /// reason under each probe's line.
        #[arg(short, long)]
        verbose: bool,
    },
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
    /// Validate the configuration and print it as pushprobe reads it, secrets redacted,
    /// with what each probe and scrape job discovers its targets from (target files read
    /// now; HTTP and DNS discovery are resolved at run time).
    Check {
        /// Output format: the configuration as TOML with discovery as comments, or one JSON
        /// document.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

/// Parses arguments and runs the command; the binary's whole `main`.
pub fn main() -> ExitCode {
    use clap::{parser::ValueSource, CommandFactory, FromArgMatches};
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    // `check` prints every failure in its table; repeating them as warnings on stderr would
    // only clutter it, unless a level was asked for.
    let level = match (&cli.command, matches.value_source("log_level")) {
        (Command::Check { .. }, Some(ValueSource::DefaultValue)) => "error",
        _ => cli.log_level.as_str(),
    };
    init_logging(cli.log_format, level);
    ExitCode::from(run_command(&cli))
}

/// Accepts what the log filter accepts, so a typo is a usage error (exit 2) at the start
/// rather than a warning and a silently different level.
fn parse_log_level(level: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| level.to_string())
        .map_err(|e| {
            format!("{e}; give a level (error, warn, info, debug, trace) or a filter such as pushprobe=debug")
        })
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
    let file = config::load(path, true).map_err(|errs| {
        report_config_errors(&errs);
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
    let mut settings = match load_settings(&cli.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match &cli.command {
        Command::Config {
            command: ConfigCommand::Check { output },
        } => return config_check(&settings, *output),
        Command::Exec { job, command } => return exec_command(settings, job.as_deref(), command),
        Command::Check { push: false, .. } => {
            settings.remote_write.clear();
            settings.pushgateway.clear();
        }
        _ => {}
    }
    // `agent.worker_threads` (one by default, two with a disk queue): the agent mostly waits,
    // and a second worker costs more in wake-ups, work stealing and cache lines moving between
    // cores (a sixth more CPU in paired runs forwarding 20,000 samples/s) than it saves.
    // Short-lived commands always use one.
    let runtime = match cli.command {
        Command::Run if settings.agent.worker_threads > 1 => started(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(settings.agent.worker_threads)
                .enable_all()
                .build(),
        ),
        _ => current_thread_runtime(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(code) => return code,
    };
    let code = runtime.block_on(async {
        let built = match cli.command {
            Command::Run => Agent::new(settings),
            _ => short_lived_agent(settings),
        };
        let mut agent = match built {
            Ok(a) => a,
            Err(e) => {
                eprintln!("pushprobe: {e}");
                return EXIT_CONFIG;
            }
        };
        if !agent.has_sinks() && !matches!(cli.command, Command::Check { .. }) {
            tracing::warn!(
                "no [[remote_write]] or [[pushgateway]] configured: probe results are not sent anywhere"
            );
        }
        let shutdown = CancellationToken::new();
        let abort = CancellationToken::new();
        let signals = tokio::spawn(watch_signals(shutdown.clone(), abort.clone()));
        let hangups = match cli.command {
            Command::Run => Some(tokio::spawn(watch_hangups(
                agent.enable_reload(cli.config.clone()),
            ))),
            _ => None,
        };
        if matches!(cli.command, Command::Run) {
            // Start-up is over: what it alone touched need not stay resident for the
            // agent's lifetime (see `startup_pages`).
            let kib = crate::startup_pages::release();
            tracing::debug!(kib, "unmapped the code and constants of start-up");
        }
        let code = match cli.command {
            Command::Run => match agent.run(shutdown.clone(), abort.clone()).await {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    // Only the listener's bind fails here: the configuration names an
                    // address this host cannot use.
                    eprintln!("pushprobe: {e}");
                    EXIT_CONFIG
                }
            },
            Command::Once => once_exit_code(&agent.once(abort.clone()).await),
            Command::Check {
                push,
                output,
                verbose,
            } => {
                let summary = agent.once(abort.clone()).await;
                print!("{}", render_check(&summary, push, output, verbose));
                once_exit_code(&summary)
            }
            Command::Config { .. } | Command::Exec { .. } => EXIT_OK,
        };
        signals.abort();
        let _ = signals.await;
        if let Some(hangups) = hangups {
            hangups.abort();
            let _ = hangups.await;
        }
        code
    });
    finish(runtime);
    code
}

/// Shuts the runtime down without waiting: everything pushprobe started has been awaited by
/// now, and a DNS lookup stuck in the blocking pool must not hold the exit past the deadline.
fn finish(runtime: tokio::runtime::Runtime) {
    runtime.shutdown_background();
}

/// `check`'s output: the table (and, after `--push`, each sink's delivery) or the JSON.
fn render_check(summary: &OnceSummary, push: bool, output: OutputFormat, verbose: bool) -> String {
    let pushed = push.then_some(summary.sinks.as_slice());
    match output {
        OutputFormat::Json => crate::check::render_json(&summary.reports, pushed),
        OutputFormat::Table => {
            let style = crate::check::TableStyle {
                colour: crate::check::use_colour(
                    std::io::IsTerminal::is_terminal(&std::io::stdout()),
                    std::env::var_os("NO_COLOR").as_deref(),
                ),
                verbose,
                width: crate::check::DEFAULT_WIDTH,
            };
            let mut text = crate::check::render_table(&summary.reports, &style);
            if let Some(sinks) = pushed {
                text.push_str(&crate::check::render_delivery(sinks, &style));
            }
            text
        }
    }
}

/// `once`'s exit code: delivery failure first, then probe failure.
fn once_exit_code(summary: &OnceSummary) -> u8 {
    if !summary.delivered {
        tracing::error!(
            undelivered = summary.undelivered,
            "not every sample was delivered"
        );
        EXIT_DELIVERY_FAILED
    } else if summary.reports.iter().any(|(_, r)| !r.success) || summary.scrapes_failed > 0 {
        EXIT_PROBE_FAILED
    } else {
        EXIT_OK
    }
}

/// `exec`: runs the command, then delivers its metrics within the drain deadline. Whatever
/// happens to the delivery, the exit code is the command's.
fn exec_command(mut settings: Settings, job: Option<&str>, command: &[OsString]) -> u8 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("pushprobe: exec needs a command");
        return EXIT_USAGE;
    };
    if job == Some("") {
        eprintln!("pushprobe: --job must not be empty");
        return EXIT_USAGE;
    }
    let runtime = match current_thread_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let code = runtime.block_on(async {
        let mut signals = match exec::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("pushprobe: cannot install signal handlers: {e}");
                return EXIT_INTERNAL;
            }
        };
        let outcome = exec::run(program, args, &mut signals).await;
        if let Some(e) = &outcome.spawn_error {
            eprintln!("pushprobe: {e}");
        }
        let job_name = job
            .map(str::to_string)
            .or_else(|| settings.pushgateway.first().map(|p| p.job.clone()))
            .unwrap_or_else(|| exec::default_job_name(program));
        if let Some(job) = job {
            for pg in &mut settings.pushgateway {
                pg.job = job.to_string();
            }
        }
        // exec measures the command, not the configured probes.
        settings.probes.clear();
        if settings.remote_write.is_empty() && settings.pushgateway.is_empty() {
            tracing::warn!("no [[remote_write]] or [[pushgateway]] configured: the job's metrics are not sent anywhere");
            return outcome.exit_code;
        }
        let mut registry = Registry::new();
        if let Err(e) = exec::record(&mut registry, &job_name, &outcome) {
            eprintln!("pushprobe: cannot record the job's metrics: {e}");
            return outcome.exit_code;
        }
        let mut agent = match short_lived_agent(settings) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("pushprobe: {e}; the job's metrics were not sent");
                return outcome.exit_code;
            }
        };
        if !outcome.success() {
            // A PUT without the last-success series would erase the one an earlier
            // successful run left on the Pushgateway.
            agent.override_push_method(PushMethod::Post);
        }
        let abort = CancellationToken::new();
        let push = agent.push("exec", &registry, outcome.end_ms, abort.clone());
        tokio::pin!(push);
        // A signal after the command ended means: stop waiting for delivery.
        let summary = loop {
            tokio::select! {
                s = &mut push => break s,
                _ = signals.recv() => abort.cancel(),
            }
        };
        if !summary.delivered {
            eprintln!(
                "pushprobe: the job's metrics did not reach every sink ({} undelivered); exiting with the job's exit code {}",
                summary.undelivered, outcome.exit_code
            );
        }
        outcome.exit_code
    });
    finish(runtime);
    code
}

/// Builds the agent for `once`, `exec` or `check`. Such a command often shares its configuration
/// with a running agent; when that agent holds `data_dir`, the command still delivers, through
/// memory queues, instead of failing the job it reports on.
fn short_lived_agent(settings: Settings) -> Result<Agent, AgentError> {
    match Agent::new(settings.clone()) {
        Err(AgentError::DataDirLocked { dir }) => {
            tracing::warn!(
                data_dir = %dir,
                "agent.data_dir is held by a running agent: this command delivers through memory \
                 queues instead"
            );
            let mut settings = settings;
            settings.agent.data_dir = None;
            Agent::new(settings)
        }
        other => other,
    }
}

/// A single-threaded runtime (exec, config check), or the internal-error exit code.
fn current_thread_runtime() -> Result<tokio::runtime::Runtime, u8> {
    started(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    )
}

/// A built runtime, or the internal-error exit code after saying why it could not start.
fn started(built: std::io::Result<tokio::runtime::Runtime>) -> Result<tokio::runtime::Runtime, u8> {
    built.map_err(|e| {
        eprintln!("pushprobe: cannot start the async runtime: {e}");
        EXIT_INTERNAL
    })
}

/// `config check`: refuses what `run` would refuse short of opening sockets (by building the
/// agent's parts and dropping them), warns about what may stop `run` in `data_dir`, then
/// prints the configuration, secrets redacted, and what discovery finds now.
fn config_check(settings: &Settings, output: OutputFormat) -> u8 {
    // The parts are built as `run` builds them, inside a runtime; nothing is started.
    let runtime = match current_thread_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let checked = runtime.block_on(async { Agent::check(settings) });
    finish(runtime);
    match checked {
        Ok(warnings) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            let discovery = crate::check::discovery::gather(settings);
            match output {
                OutputFormat::Table => {
                    let code = print_effective_config(settings);
                    print!("{}", crate::check::discovery::render_table(&discovery));
                    code
                }
                OutputFormat::Json => print_config_json(settings, &discovery),
            }
        }
        Err(e) => {
            eprintln!("pushprobe: invalid configuration:\n  {e}");
            EXIT_CONFIG
        }
    }
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

/// `config check --output json`: `{"valid", "configuration", "discovery"}`.
fn print_config_json(
    settings: &Settings,
    discovery: &[crate::check::discovery::JobDiscovery],
) -> u8 {
    let configuration = match serde_json::to_value(&settings.file) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("pushprobe: cannot print the configuration: {e}");
            return EXIT_INTERNAL;
        }
    };
    let doc = serde_json::json!({
        "valid": true,
        "configuration": configuration,
        "discovery": crate::check::discovery::to_json(discovery),
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    EXIT_OK
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

/// Every SIGHUP asks `run` to reload its configuration; the agent logs the outcome.
async fn watch_hangups(trigger: crate::reload::ReloadTrigger) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: reload with POST /-/reload instead");
            return;
        }
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        // The outcome is logged by the agent; the reply only says it is done.
        let _ = trigger.reload().await;
    }
}

async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
