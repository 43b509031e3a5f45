//! `credwatch run`: the daemon.

use std::{process::ExitCode, time::Duration};

use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, info, trace, warn};

use super::CommandError;
use crate::{
    event::{Event, EventKind},
    sensors::{loss::LossCounts, SensorOptions, Sensors},
};

/// How often the kernel's loss counters are read and reported.
const LOSS_CHECK_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct RunArgs {
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
    let RunArgs { ring_buffer_mib } = args;
    // Handlers first: a signal that arrives once the sensors are up must stop them cleanly.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sensors = Sensors::load(SensorOptions { ring_buffer_bytes: ring_buffer_mib << 20 })?;
    info!(tier = "tracepoint", "sensors attached");

    let mut loss_check = tokio::time::interval(LOSS_CHECK_PERIOD);
    let mut reported_loss = LossCounts::default();
    let mut batch = Vec::new();
    let stop = loop {
        tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            result = sensors.next_batch(&mut batch) => {
                result?;
                batch.drain(..).for_each(|event| log_event(&event));
            }
            _ = loss_check.tick() => {
                let lost = sensors.lost()?;
                if lost != reported_loss {
                    for (kind, count) in lost.iter().filter(|&(_, count)| count > 0) {
                        warn!(kind, lost = count, "ring buffer full: events lost since start");
                    }
                    reported_loss = lost;
                }
            }
        }
    };
    info!(signal = stop, "stopping");
    drop(sensors);
    info!("sensors detached");
    Ok(ExitCode::SUCCESS)
}

fn log_event(event: &Event) {
    let Event { process, kind, .. } = event;
    match kind {
        EventKind::Exec(exec) => debug!(
            pid = process.tgid,
            ppid = exec.parent.tgid,
            uid = exec.uid,
            filename = %exec.filename,
            argv0 = %exec.argv0,
            "exec"
        ),
        EventKind::Fork(fork) => trace!(pid = process.tgid, child = fork.child.tgid, "fork"),
        EventKind::Exit(exit) => debug!(pid = process.tgid, status = %exit.status, "exit"),
        EventKind::SecretOpen(open) => {
            debug!(pid = process.tgid, secret = open.secret.0, path = %open.path, "secret open")
        }
        EventKind::Harvest(harvest) => {
            debug!(pid = process.tgid, target = harvest.target, kind = ?harvest.kind, "harvest")
        }
        EventKind::Connect(connect) => {
            debug!(pid = process.tgid, destination = %connect.destination, "connect")
        }
    }
}
