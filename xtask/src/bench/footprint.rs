//! Footprint and the event storm, on one daemon: its memory and CPU at rest while it tracks many
//! live processes, then a burst of opens of the watched secret, every one of which must be either
//! received by the daemon or counted as lost by the kernel.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use super::{
    daemon::{Daemon, Status},
    error::BenchError,
    procfs,
    worker::Worker,
    Bench,
};

const POLL: Duration = Duration::from_millis(200);
/// How long the daemon may take to see every fork of the idle processes.
const TRACK_TIMEOUT: Duration = Duration::from_secs(120);
/// Before the idle window: the forks' events handled, the first refresh of gauges done.
const SETTLE: Duration = Duration::from_secs(2);
/// The storm is drained when the counts stop moving for this long.
const QUIET: Duration = Duration::from_secs(2);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
const RSS_SAMPLE: Duration = Duration::from_millis(20);

pub struct Footprint {
    pub processes_tracked: u64,
    pub idle_seconds: f64,
    pub idle_rss_bytes: u64,
    pub idle_cpu_percent: f64,
    pub storm: Storm,
}

pub struct Storm {
    /// Opens of the watched secret the storm process made.
    pub produced: u64,
    /// Secret-open events the daemon received during the storm.
    pub received: u64,
    /// Secret-open events the kernel could not reserve ring buffer space for, counted.
    pub lost: u64,
    pub decode_errors: u64,
    pub produce_seconds: f64,
    /// From the first open until the daemon had handled the last event.
    pub drain_seconds: f64,
    pub peak_rss_bytes: u64,
    pub cpu_percent: f64,
    /// The daemon's event → decision latency over its life, storm included (ns).
    pub latency_p50: u64,
    pub latency_p99: u64,
    pub latency_max: u64,
}

impl Storm {
    pub const fn accounted(&self) -> u64 {
        self.received + self.lost
    }

    pub const fn is_exact(&self) -> bool {
        self.accounted() == self.produced && self.decode_errors == 0
    }
}

pub fn measure(bench: &Bench) -> Result<Footprint, BenchError> {
    let daemon = Daemon::start(&bench.binary, &bench.scratch)?;
    let wanted = bench.scale.tracked_processes;
    let mut idle = Worker::spawn(&["spawn".into(), wanted.to_string().into()])?;
    idle.go()?;
    idle.result("spawned")?;
    let processes_tracked = wait_tracked(&daemon, wanted)?;
    thread::sleep(SETTLE);
    let pid = daemon.pid();
    let cpu_before = procfs::cpu_seconds(pid)?;
    let idle_seconds = bench.scale.idle_seconds;
    thread::sleep(Duration::from_secs_f64(idle_seconds));
    let idle_cpu_percent = (procfs::cpu_seconds(pid)? - cpu_before) / idle_seconds * 100.0;
    let idle_rss_bytes = procfs::rss_bytes(pid)?;
    eprintln!(
        "bench: footprint: {processes_tracked} processes tracked, RSS {:.1} MiB, CPU {idle_cpu_percent:.2} % at rest",
        idle_rss_bytes as f64 / (1 << 20) as f64
    );
    let storm = storm(bench, &daemon)?;
    idle.finish()?;
    daemon.stop()?;
    Ok(Footprint {
        processes_tracked,
        idle_seconds,
        idle_rss_bytes,
        idle_cpu_percent,
        storm,
    })
}

fn wait_tracked(daemon: &Daemon, wanted: u64) -> Result<u64, BenchError> {
    let started = Instant::now();
    loop {
        let tracked = daemon.status()?.number("processes_tracked")?;
        if tracked >= wanted {
            return Ok(tracked);
        }
        if started.elapsed() > TRACK_TIMEOUT {
            return Err(BenchError::Helper {
                what: format!(
                    "the daemon tracked {tracked} processes after {TRACK_TIMEOUT:?}, not {wanted}"
                ),
                log: String::new(),
            });
        }
        thread::sleep(POLL);
    }
}

/// The counters the storm is judged by: secret opens received, lost, and undecodable records.
fn counts(status: &Status) -> Result<[u64; 3], BenchError> {
    Ok([
        status.count("daemon.events.secret_open"),
        status.number("kernel.lost.secret_open")?,
        status.number("kernel.decode_errors")?,
    ])
}

fn storm(bench: &Bench, daemon: &Daemon) -> Result<Storm, BenchError> {
    let pid = daemon.pid();
    let before = counts(&daemon.status()?)?;
    let peak = Arc::new(AtomicU64::new(procfs::rss_bytes(pid)?));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(rss) = procfs::rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(RSS_SAMPLE);
            }
        })
    };
    let cpu_before = procfs::cpu_seconds(pid)?;
    let started = Instant::now();
    let mut storm = Worker::spawn(&[
        "storm".into(),
        bench.scratch.secret().into(),
        bench.scale.storm_events.to_string().into(),
    ])?;
    storm.go()?;
    let [produced, produce_seconds] = storm.result("opened")?[..] else {
        return Err(storm.failure("did not say how long it took"));
    };
    storm.finish()?;
    let produced = produced as u64;
    let (after, status) = wait_drained(daemon, before, produced)?;
    let drain_seconds = started.elapsed().as_secs_f64();
    let cpu_percent = (procfs::cpu_seconds(pid)? - cpu_before) / drain_seconds * 100.0;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let [received, lost, decode_errors] = [0, 1, 2].map(|index| after[index] - before[index]);
    let storm = Storm {
        produced,
        received,
        lost,
        decode_errors,
        produce_seconds,
        drain_seconds,
        peak_rss_bytes: peak.load(Ordering::Relaxed),
        cpu_percent,
        latency_p50: status.number("latency.p50_ns")?,
        latency_p99: status.number("latency.p99_ns")?,
        latency_max: status.number("latency.max_ns")?,
    };
    eprintln!(
        "bench: storm: {produced} produced in {produce_seconds:.2} s, {received} received + {lost} lost, drained in \
         {drain_seconds:.2} s",
    );
    Ok(storm)
}

/// Polls until every produced event is accounted for and the counts stay still, or they stop
/// moving short of it (the report then shows the gap).
fn wait_drained(
    daemon: &Daemon,
    before: [u64; 3],
    produced: u64,
) -> Result<([u64; 3], Status), BenchError> {
    let started = Instant::now();
    let mut last = counts(&daemon.status()?)?;
    let mut still_since = Instant::now();
    loop {
        thread::sleep(POLL);
        let status = daemon.status()?;
        let now = counts(&status)?;
        if now != last {
            (last, still_since) = (now, Instant::now());
            continue;
        }
        let accounted = (now[0] - before[0]) + (now[1] - before[1]);
        if accounted >= produced
            || still_since.elapsed() >= QUIET
            || started.elapsed() > DRAIN_TIMEOUT
        {
            return Ok((now, status));
        }
    }
}
