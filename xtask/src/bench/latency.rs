//! Latency from the kernel's timestamp to the daemon's decision (measured by the daemon, read
//! from `credwatch status`), while a process opens the watched secret every few milliseconds:
//! once on an otherwise idle daemon, once with the untracked open/close loop running beside it.
//! Each round starts a fresh daemon per condition, since its histogram covers its whole life.

use std::{thread, time::Duration};

use super::{daemon::Daemon, error::BenchError, stats::Spread, worker::Worker, Bench};

/// Lets the daemon handle the last events before `status` is asked.
const SETTLE: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Idle,
    OpenLoop,
}

impl Condition {
    pub const fn label(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::OpenLoop => "under the open/close loop",
        }
    }
}

pub struct Latency {
    pub condition: Condition,
    /// Nanoseconds, over the rounds.
    pub p50: Spread,
    pub p99: Spread,
    pub max: Spread,
    /// Events the daemon timed, over the rounds.
    pub events: Spread,
}

pub fn measure(bench: &Bench) -> Result<Vec<Latency>, BenchError> {
    let conditions = [Condition::Idle, Condition::OpenLoop];
    let mut samples = vec![[const { Vec::new() }; 4]; conditions.len()];
    let rounds = bench.scale.rounds.div_ceil(2);
    for round in 0..rounds {
        for turn in 0..conditions.len() {
            let index = (turn + round) % conditions.len();
            let summary = one(bench, conditions[index])?;
            eprintln!(
                "bench: latency round {}/{rounds}: {:<26} p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs over {} events",
                round + 1,
                conditions[index].label(),
                summary[0] / 1e3,
                summary[1] / 1e3,
                summary[2] / 1e3,
                summary[3]
            );
            for (samples, value) in samples[index].iter_mut().zip(summary) {
                samples.push(value);
            }
        }
    }
    Ok(conditions
        .iter()
        .zip(samples)
        .map(|(&condition, [p50, p99, max, events])| {
            let spread = |samples: Vec<f64>| Spread::of(&samples).expect("at least one round");
            Latency {
                condition,
                p50: spread(p50),
                p99: spread(p99),
                max: spread(max),
                events: spread(events),
            }
        })
        .collect())
}

/// One daemon's life under `condition`: p50, p99, max (ns) and the number of events timed.
fn one(bench: &Bench, condition: Condition) -> Result<[f64; 4], BenchError> {
    let daemon = Daemon::start(&bench.binary, &bench.scratch)?;
    let load = match condition {
        Condition::Idle => None,
        Condition::OpenLoop => {
            let mut load =
                Worker::spawn(&["open".into(), bench.scratch.plain().into(), "0".into()])?;
            load.go()?;
            Some(load)
        }
    };
    let scale = &bench.scale;
    let mut trickle = Worker::spawn(&[
        "trickle".into(),
        bench.scratch.secret().into(),
        scale.trickle_opens.to_string().into(),
        scale.trickle_millis.to_string().into(),
    ])?;
    trickle.go()?;
    trickle.result("opened")?;
    trickle.finish()?;
    if let Some(load) = load {
        load.finish()?;
    }
    thread::sleep(SETTLE);
    let status = daemon.status()?;
    let summary = [
        "latency.p50_ns",
        "latency.p99_ns",
        "latency.max_ns",
        "latency.count",
    ]
    .map(|key| status.number(key).map(|value| value as f64));
    daemon.stop()?;
    let [p50, p99, max, count] = summary;
    Ok([p50?, p99?, max?, count?])
}
