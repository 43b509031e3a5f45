//! `cargo xtask bench [--quick] [--out PATH]`: what credwatch costs on this machine, written as a
//! Markdown report (docs/PERFORMANCE.md unless `--out` says otherwise).
//!
//! 1. syscall overhead against no monitor, the floor (empty programs on the same hooks), an
//!    empty per-syscall tracepoint and a bpftrace peer, and the run time of each hook's program;
//!    2. engine throughput; 3. event →
//!    decision latency; 4. the daemon's memory and CPU; 5. an event storm whose every event must
//!    be received or counted lost; 6. open/close on the LSM and fmod_ret tiers, in the test VM;
//!    7. the egress proxy: an HTTPS keep-alive loop through it against the same loop direct.
//!    `--quick` scales everything down to a smoke run that `cargo xtask test` ends with, so that
//!    the benchmark cannot rot.

mod bpftrace;
mod daemon;
mod egress;
mod engine;
mod error;
mod footprint;
mod https;
mod latency;
pub mod load;
mod monitors;
mod procfs;
mod profile;
mod report;
mod scratch;
mod stats;
mod syscalls;
mod targets;
mod tiers;
mod worker;

use std::{
    cell::Cell,
    ffi::OsString,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

pub use self::error::BenchError;
use self::{https::HttpsServer, report::Results, scratch::Scratch};
use crate::{build, cmd, error::Error, setup, workspace};

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub quick: bool,
    /// Rounds of the syscall measurement; latency takes half as many.
    pub rounds: usize,
    /// Iterations per run of the open/close loop and of the connect loop.
    pub opens: u64,
    pub connects: u64,
    /// Iterations per run of the fork+exec+exit loop.
    pub execs: u64,
    /// Requests per run of the HTTPS loop.
    pub https_requests: u64,
    pub engine_events: u64,
    pub engine_runs: u64,
    /// Secret opens of the latency probe, and the pause between two.
    pub trickle_opens: u64,
    pub trickle_millis: u64,
    /// Live processes the daemon tracks while its footprint is measured, and for how long.
    pub tracked_processes: u64,
    pub idle_seconds: f64,
    pub storm_events: u64,
    /// Open/close iterations per run, and rounds, of the loop in the test VM (emulated CPU).
    pub vm_opens: u64,
    pub vm_rounds: usize,
    /// Requests per run of the egress loop, and rounds of it.
    pub egress_requests: u64,
    pub egress_rounds: usize,
}

impl Scale {
    const FULL: Self = Self {
        quick: false,
        rounds: 11,
        opens: 200_000,
        connects: 10_000,
        execs: 2_000,
        https_requests: 2_000,
        engine_events: 2_000_000,
        engine_runs: 5,
        trickle_opens: 300,
        trickle_millis: 10,
        tracked_processes: 10_000,
        idle_seconds: 10.0,
        storm_events: 1_000_000,
        vm_opens: 20_000,
        vm_rounds: 5,
        egress_requests: 20_000,
        egress_rounds: 5,
    };

    const QUICK: Self = Self {
        quick: true,
        rounds: 1,
        opens: 20_000,
        connects: 1_000,
        execs: 200,
        https_requests: 200,
        engine_events: 100_000,
        engine_runs: 1,
        trickle_opens: 50,
        trickle_millis: 5,
        tracked_processes: 500,
        idle_seconds: 1.0,
        storm_events: 50_000,
        vm_opens: 2_000,
        vm_rounds: 1,
        egress_requests: 300,
        egress_rounds: 1,
    };
}

/// What every measurement works with.
pub struct Bench {
    /// The `credwatch` binary under test.
    pub binary: PathBuf,
    pub scratch: Scratch,
    pub scale: Scale,
    /// The HTTPS loop's server, in no task.
    pub https: HttpsServer,
    tasks: Cell<u32>,
}

impl Bench {
    /// A task id not used before in this run.
    pub fn next_task_id(&self) -> String {
        self.tasks.set(self.tasks.get() + 1);
        format!("bench-{}", self.tasks.get())
    }
}

pub fn main(args: &[OsString]) -> Result<ExitCode, Error> {
    let (scale, out) = parse_args(args)?;
    if !cmd::is_root() {
        return Err(Error::NotRoot {
            what: "`cargo xtask bench`".to_owned(),
            hint: "it loads eBPF programs and runs the daemon; run it as root, e.g. \
                   `sudo -E env PATH=\"$PATH\" cargo xtask bench`"
                .to_owned(),
        });
    }
    setup::ensure(setup::Needs::Test)?;
    match run(scale, &out) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(BenchError::Xtask(error)) => Err(error),
        Err(error) => Err(Error::Bench(Box::new(error))),
    }
}

fn parse_args(args: &[OsString]) -> Result<(Scale, PathBuf), Error> {
    let mut scale = Scale::FULL;
    let mut out = workspace::root().join("docs").join("PERFORMANCE.md");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--quick") => scale = Scale::QUICK,
            Some("--out") => {
                let path = args
                    .next()
                    .ok_or_else(|| Error::Usage("`--out` needs a path".to_owned()))?;
                out = PathBuf::from(path);
            }
            _ => {
                return Err(Error::Usage(format!(
                    "`bench` takes `--quick` and `--out PATH`, not `{}`",
                    arg.to_string_lossy()
                )))
            }
        }
    }
    Ok((scale, out))
}

fn run(scale: Scale, out: &Path) -> Result<(), BenchError> {
    let started = Instant::now();
    let scratch = Scratch::create()?;
    let https = HttpsServer::start(&scratch.run_dir("https")?)?;
    let bench = Bench {
        binary: build_credwatch(scale)?,
        scratch,
        scale,
        https,
        tasks: Cell::new(0),
    };
    let machine = report::Machine::probe();
    let syscalls = section("syscall overhead", || syscalls::measure(&bench))?;
    let profiles = section("run time per hook", || profile::measure(&bench))?;
    let engine = section("engine throughput", || engine::measure(&bench))?;
    let latency = section("latency", || latency::measure(&bench))?;
    let footprint = section("footprint and event storm", || footprint::measure(&bench))?;
    let egress = section("egress proxy", || egress::measure(&bench))?;
    let tiers = section("security-hook tiers in the test VM", || tiers::measure(&bench))?;
    let storm = &footprint.storm;
    let inexact = (!storm.is_exact()).then(|| BenchError::StormInexact {
        produced: storm.produced,
        received: storm.received,
        lost: storm.lost,
        accounted: storm.accounted(),
    });
    let results = Results {
        scale,
        machine,
        syscalls,
        profiles,
        engine,
        latency,
        footprint,
        tiers,
        egress,
        wall: started.elapsed(),
    };
    let text = report::render(&results);
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(BenchError::io(format!("creating {}", dir.display())))?;
    }
    std::fs::write(out, &text).map_err(BenchError::io(format!("writing {}", out.display())))?;
    println!("{text}");
    eprintln!(
        "bench: report written to {} (wall time {:.0} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    match inexact {
        Some(error) => Err(BenchError::Failed(out.to_owned(), Box::new(error))),
        None => Ok(()),
    }
}

/// Runs one measurement, saying when it starts and how long it took.
fn section<T>(
    name: &str,
    measure: impl FnOnce() -> Result<T, BenchError>,
) -> Result<T, BenchError> {
    eprintln!("bench: {name}");
    let started = Instant::now();
    let result = measure()?;
    eprintln!(
        "bench: {name}: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(result)
}

/// The daemon under test: an optimised build, or for a smoke run the test suite's debug build.
fn build_credwatch(scale: Scale) -> Result<PathBuf, BenchError> {
    let status = build::cargo_build(!scale.quick)?;
    if !status.success() {
        return Err(BenchError::Helper {
            what: format!("`cargo build -p monitor` failed ({status})"),
            log: String::new(),
        });
    }
    let profile = if scale.quick { "debug" } else { "release" };
    Ok(workspace::target_dir().join(profile).join("credwatch"))
}
