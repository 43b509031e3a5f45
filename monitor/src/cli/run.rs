//! `credwatch run`: the daemon.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use super::CommandError;
use crate::{
    api,
    config::Config,
    daemon::{instance::InstanceLock, metrics::Metrics, outputs, Daemon, DaemonOptions},
    export,
};

/// Control requests waiting for the daemon's loop; an API caller beyond this waits its turn.
const CONTROL_QUEUE: usize = 64;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  credwatch run                                  built-in catalogue, auto mode, API on /run/credwatch/api.sock,
                                                 metrics on 127.0.0.1:9477, audit log in /var/log/credwatch
  credwatch run --config /etc/credwatch/credwatch.toml
  credwatch run --log debug --record /tmp/trace.jsonl   log every exec/exit, record inputs for `credwatch replay`")]
pub struct RunArgs {
    /// TOML configuration file; without it, the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overrides `state_dir` (task registry, host key).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Overrides `api.socket`.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Writes every engine input to this file as JSON lines, for `credwatch replay`.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Size of the kernel → daemon ring buffer in MiB (a power of two).
    #[arg(long, default_value_t = 4, value_parser = parse_ring_buffer_mib)]
    pub ring_buffer_mib: u32,
}

fn parse_ring_buffer_mib(value: &str) -> Result<u32, String> {
    let mib: u32 = value.parse().map_err(|error| format!("{value:?} is not a number of MiB: {error}"))?;
    if !mib.is_power_of_two() || mib > 1024 {
        return Err(format!("{mib} MiB is not a power of two between 1 and 1024"));
    }
    Ok(mib)
}

pub fn main(args: RunArgs) -> Result<ExitCode, CommandError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: RunArgs) -> Result<ExitCode, CommandError> {
    let RunArgs { config, state_dir, socket, record, ring_buffer_mib } = args;
    let mut config = match config {
        Some(path) => Config::load(&path)?,
        None => Config::default(),
    };
    if let Some(state_dir) = state_dir {
        config.state_dir = state_dir;
    }
    if let Some(socket) = socket {
        config.api.socket = socket;
    }
    // Before anything else: a second daemon must not touch the first one's socket or sinks.
    let _instance = InstanceLock::acquire(&config.api.socket)?;
    // Handlers first: a signal that arrives once the sensors are up must stop them cleanly.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let api_config = config.api.clone();
    let metrics = Arc::new(Metrics::default());
    let (exports, records) = outputs::channel();
    // Before the sensors load, so that a taken metrics port or an unwritable audit log fails
    // the start at once.
    let exporters = export::spawn(&config.export, records, Arc::clone(&metrics))?;
    let daemon = Daemon::start(DaemonOptions {
        config: config.daemon(),
        ring_buffer_bytes: ring_buffer_mib << 20,
        record,
        metrics: Arc::clone(&metrics),
        exports,
    })?;
    let (control, requests) = mpsc::channel(CONTROL_QUEUE);
    let server = api::serve(&api_config, control, daemon.feed(), metrics.api_refused.clone()).await?;
    let shutdown = async {
        tokio::select! {
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        }
    };
    daemon.run(requests, shutdown).await?;
    drop(server);
    // Routes the last records, gives the alert sinks a moment, and syncs the audit log.
    drop(exporters);
    Ok(ExitCode::SUCCESS)
}
