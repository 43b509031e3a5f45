//! Syscall overhead: an open/close loop and a TCP loopback connect loop, each run by a process
//! in no task holding no secret (untracked) and by a task's root holding its secret (tracked),
//! under every monitor. Each monitor's run set sits between two baseline run sets, and its ratio
//! is to their mean, so that the machine's drift cancels; the monitors' order rotates by round.
//!
//! Every run reports its time per iteration twice: elapsed, and on the loop thread's CPU. The
//! verdicts use the CPU time, which leaves out the time other processes of a shared machine held
//! the CPU; the cost of the hooks themselves is on the calling thread's CPU either way.

use std::{collections::BTreeMap, ffi::OsString};

use super::{
    error::BenchError,
    monitors::{Monitor, Running},
    stats::Spread,
    worker::Worker,
    Bench,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    OpenUntracked,
    /// The same, while another process (a task's root) holds a secret.
    OpenBesideHolder,
    OpenTracked,
    ConnectUntracked,
    ConnectTracked,
    /// fork + exec + exit of `/bin/true` by a process in no task: the exec capture's cost.
    ExecUntracked,
    /// open/close of its own secret by a task's root: on the tracepoint tier, the file guard's
    /// permission round trip.
    OpenSecretOwned,
    /// Keep-alive HTTPS requests over loopback through OpenSSL: the TLS uprobes' cost.
    HttpsUntracked,
    HttpsTracked,
}

impl Workload {
    pub const ALL: [Self; 9] = [
        Self::OpenUntracked,
        Self::OpenBesideHolder,
        Self::OpenTracked,
        Self::ConnectUntracked,
        Self::ConnectTracked,
        Self::ExecUntracked,
        Self::OpenSecretOwned,
        Self::HttpsUntracked,
        Self::HttpsTracked,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Self::OpenUntracked => "open/close, untracked",
            Self::OpenBesideHolder => "open/close, untracked, beside a holder",
            Self::OpenTracked => "open/close, tracked",
            Self::ConnectUntracked => "TCP connect, untracked",
            Self::ConnectTracked => "TCP connect, tracked",
            Self::ExecUntracked => "fork+exec+exit of /bin/true, untracked",
            Self::OpenSecretOwned => "open/close of its own secret, by its owner",
            Self::HttpsUntracked => "HTTPS request (OpenSSL), untracked",
            Self::HttpsTracked => "HTTPS request (OpenSSL), tracked",
        }
    }

    pub const fn is_tracked(self) -> bool {
        matches!(
            self,
            Self::OpenTracked | Self::ConnectTracked | Self::OpenSecretOwned | Self::HttpsTracked
        )
    }

    /// Whether the row measures syscalls (what the bpftrace peer hooks), not a library call.
    pub const fn is_syscall(self) -> bool {
        !matches!(self, Self::HttpsUntracked | Self::HttpsTracked)
    }

    fn spawn(self, bench: &Bench) -> Result<Worker, BenchError> {
        match self {
            Self::HttpsUntracked | Self::HttpsTracked => {
                let hold = self.is_tracked().then(|| bench.scratch.secret());
                let (program, args) = bench.https.client(bench.scale.https_requests, hold);
                Worker::spawn_program(&program, &args, "the HTTPS client".to_owned())
            }
            _ => Worker::spawn(&self.args(bench)),
        }
    }

    fn args(self, bench: &Bench) -> Vec<OsString> {
        let mut args: Vec<OsString> = match self {
            Self::OpenUntracked | Self::OpenBesideHolder | Self::OpenTracked => {
                vec![
                    "open".into(),
                    bench.scratch.plain().into(),
                    bench.scale.opens.to_string().into(),
                ]
            }
            Self::ConnectUntracked | Self::ConnectTracked => {
                vec!["connect".into(), bench.scale.connects.to_string().into()]
            }
            Self::ExecUntracked => vec!["exec".into(), bench.scale.execs.to_string().into()],
            // Each open waits for the guard's answer: as many as connects, not opens.
            Self::OpenSecretOwned => vec![
                "open".into(),
                bench.scratch.secret().into(),
                bench.scale.connects.to_string().into(),
            ],
            Self::HttpsUntracked | Self::HttpsTracked => unreachable!("run by `spawn` as a Python client"),
        };
        if self.is_tracked() {
            args.push(bench.scratch.secret().into());
        }
        args
    }
}

/// Which time a figure is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Clock {
    /// On the loop thread's CPU.
    Cpu,
    Elapsed,
}

impl Clock {
    pub const BOTH: [Self; 2] = [Self::Cpu, Self::Elapsed];

    pub const fn label(self) -> &'static str {
        match self {
            Self::Cpu => "CPU time",
            Self::Elapsed => "elapsed time",
        }
    }
}

/// One workload under one monitor, over the rounds.
pub struct Overhead {
    pub workload: Workload,
    pub monitor: Monitor,
    /// Time per iteration over the baseline's.
    pub ratio: BTreeMap<Clock, Spread>,
    /// Nanoseconds per iteration.
    pub ns_per_op: BTreeMap<Clock, Spread>,
}

pub struct SyscallResults {
    /// Nanoseconds per iteration with no monitor, over every baseline run set.
    pub baseline: BTreeMap<(Workload, Clock), Spread>,
    pub overheads: Vec<Overhead>,
}

impl SyscallResults {
    pub fn get(&self, workload: Workload, monitor: Monitor) -> Option<&Overhead> {
        self.overheads
            .iter()
            .find(|overhead| overhead.workload == workload && overhead.monitor == monitor)
    }

    /// The median ratio on CPU time, the one verdicts use.
    pub fn ratio(&self, workload: Workload, monitor: Monitor) -> f64 {
        self.get(workload, monitor)
            .map_or(f64::NAN, |overhead| overhead.ratio[&Clock::Cpu].median)
    }
}

type RunSet = BTreeMap<(Workload, Clock), f64>;
type Samples = BTreeMap<(Workload, Clock), Vec<f64>>;

pub fn measure(bench: &Bench) -> Result<SyscallResults, BenchError> {
    let rounds = bench.scale.rounds;
    let mut baseline = Samples::new();
    let mut ratios: BTreeMap<usize, Samples> = BTreeMap::new();
    let mut times: BTreeMap<usize, Samples> = BTreeMap::new();
    let mut before = run_set(bench, &Running::Nothing)?;
    record(&mut baseline, &before);
    for round in 0..rounds {
        for turn in 0..Monitor::COMPARED.len() {
            let index = (turn + round) % Monitor::COMPARED.len();
            let monitor = Monitor::COMPARED[index];
            let running = monitor.start(bench)?;
            let during = run_set(bench, &running)?;
            running.stop()?;
            let after = run_set(bench, &Running::Nothing)?;
            record(&mut baseline, &after);
            record(times.entry(index).or_default(), &during);
            let ratio: RunSet = during
                .iter()
                .map(|(&key, &ns)| (key, ns / ((before[&key] + after[&key]) / 2.0)))
                .collect();
            record(ratios.entry(index).or_default(), &ratio);
            let summary: Vec<String> = Workload::ALL
                .iter()
                .map(|&workload| format!("{:.3}", ratio[&(workload, Clock::Cpu)]))
                .collect();
            eprintln!(
                "bench: syscalls round {}/{rounds}: {:<22} CPU time ratios {}",
                round + 1,
                monitor.label(),
                summary.join(" ")
            );
            before = after;
        }
    }
    let spreads = |samples: &Samples, workload: Workload| {
        Clock::BOTH
            .iter()
            .map(|&clock| (clock, spread(&samples[&(workload, clock)])))
            .collect()
    };
    let overheads = Monitor::COMPARED
        .iter()
        .enumerate()
        .flat_map(|(index, &monitor)| {
            let (ratios, times) = (&ratios[&index], &times[&index]);
            Workload::ALL.map(|workload| Overhead {
                workload,
                monitor,
                ratio: spreads(ratios, workload),
                ns_per_op: spreads(times, workload),
            })
        })
        .collect();
    let baseline = baseline
        .iter()
        .map(|(&key, samples)| (key, spread(samples)))
        .collect();
    Ok(SyscallResults {
        baseline,
        overheads,
    })
}

fn spread(samples: &[f64]) -> Spread {
    Spread::of(samples).expect("every workload ran at least once")
}

fn record(samples: &mut Samples, set: &RunSet) {
    for (&key, &ns) in set {
        samples.entry(key).or_default().push(ns);
    }
}

/// Every workload once under `running`: nanoseconds per iteration, by clock.
fn run_set(bench: &Bench, running: &Running) -> Result<RunSet, BenchError> {
    let mut set = RunSet::new();
    for workload in Workload::ALL {
        let [elapsed, cpu] = run(bench, running, workload)?;
        set.insert((workload, Clock::Elapsed), elapsed);
        set.insert((workload, Clock::Cpu), cpu);
    }
    Ok(set)
}

/// One run of `workload`: nanoseconds per iteration, elapsed and on CPU.
pub fn run(bench: &Bench, running: &Running, workload: Workload) -> Result<[f64; 2], BenchError> {
    let holder = match workload {
        Workload::OpenBesideHolder => Some(holder(bench, running)?),
        _ => None,
    };
    if let (false, None, Some(daemon)) = (workload.is_tracked(), &holder, running.daemon()) {
        daemon.wait_for_no_holder()?;
    }
    let mut worker = workload.spawn(bench)?;
    if let (true, Some(daemon)) = (workload.is_tracked(), running.daemon()) {
        daemon.start_task(&bench.next_task_id(), worker.pid(), &bench.scratch.secret())?;
    }
    worker.go()?;
    let timing = match worker.result("ns_per_op")?[..] {
        [elapsed, cpu] => [elapsed, cpu],
        _ => return Err(worker.failure("said ns_per_op without cpu_ns_per_op")),
    };
    worker.finish()?;
    if let Some(holder) = holder {
        holder.finish()?;
    }
    Ok(timing)
}

/// A task's root that has opened its secret and idles: a secret holder on the host.
fn holder(bench: &Bench, running: &Running) -> Result<Worker, BenchError> {
    let secret = bench.scratch.secret();
    let mut holder = Worker::spawn(&["hold".into(), secret.clone().into()])?;
    if let Some(daemon) = running.daemon() {
        daemon.start_task(&bench.next_task_id(), holder.pid(), &secret)?;
    }
    holder.go()?;
    holder.result("holding")?;
    Ok(holder)
}
