//! Command-line interface: one module per subcommand.

pub mod baseline;
pub mod bench_floor;
pub mod completions;
pub mod demo;
pub mod doctor;
pub mod findings;
pub mod manpages;
pub mod replay;
pub mod run;
pub mod status;
pub mod task;

mod render;
mod socket;

use clap::{Parser, Subcommand};

/// Errors a subcommand reports to `main`, which prints the chain of causes.
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(name = "credwatch", version, about = "Stops AI agents from reusing credentials (eBPF runtime monitor)")]
pub struct Cli {
    /// Log filter in `tracing` syntax, e.g. `debug` or `monitor=debug`; overrides `RUST_LOG`.
    #[arg(long, global = true)]
    pub log: Option<String>,
    /// Log lines as text, or as one JSON object per line for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: load the kernel sensors and watch (root).
    Run(run::RunArgs),
    /// A one-minute tour: a fake token, an agent using it, another reusing it (killed), a harvest.
    Demo(demo::DemoArgs),
    /// Probe which hooks this kernel allows and which tier `run` will use.
    Doctor(doctor::DoctorArgs),
    /// Register, end and list tasks; run a command as a task.
    Task(task::TaskArgs),
    /// Show the running daemon's findings, or follow them live.
    Findings(findings::FindingsArgs),
    /// Show the running daemon's state: tier, tasks, secrets watched, counters.
    Status(status::StatusArgs),
    /// Show or forget what the daemon learnt of each secret's use (anomalous_use).
    Baseline(baseline::BaselineArgs),
    /// Run the engine over a recording (JSON lines of inputs) and print its findings.
    Replay(replay::ReplayArgs),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Write the man pages to a directory: what `cargo xtask package` installs.
    #[command(hide = true)]
    Manpages(manpages::ManpagesArgs),
    /// Hold empty programs on syscall hooks until stdin closes: the floor of `cargo xtask bench`.
    #[command(hide = true)]
    BenchFloor(bench_floor::BenchFloorArgs),
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr so that stdout stays free for command output; in colour only on a terminal.
pub fn init_tracing(filter: Option<&str>, format: LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(filter) => EnvFilter::new(filter),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}
