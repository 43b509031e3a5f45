//! The targets, judged on the results. A smoke run is scaled down, so only its
//! correctness check (storm accounting) is judged; the rest say "not judged".

use super::{
    egress::{EgressResults, Protocol},
    latency::Condition,
    monitors::Monitor,
    report::{mib, percent, Results},
    syscalls::{Clock, Workload},
};

/// The exec capture must cost an exec at most this, against no monitor.
const EXEC_LIMIT: f64 = 1.05;
/// Untracked open/close with no secret holder on the host, and beside one.
const UNTRACKED_LIMIT: f64 = 1.03;
const BESIDE_HOLDER_LIMIT: f64 = 1.05;
const TRACKED_OPEN_LIMIT: f64 = 1.10;
const TRACKED_CONNECT_LIMIT: f64 = 1.15;
const ENGINE_EVENTS_PER_SECOND: f64 = 1e6;
const IDLE_P99_NS: f64 = 5e6;
const RSS_BYTES: u64 = 50 << 20;
const TRACKED_PROCESSES: u64 = 10_000;
const STORM_EVENTS: u64 = 1_000_000;
/// What the egress proxy may add to a request's p99 on loopback, and what it must carry on one core.
const EGRESS_ADDED_P99_NS: f64 = 1e6;
const EGRESS_REQUESTS_PER_SECOND: f64 = 5_000.0;

/// Added p99 within the limit for both protocols (false when a row is missing).
pub fn egress_latency_met(egress: &EgressResults) -> bool {
    Protocol::BOTH.iter().all(|&protocol| egress.row(protocol).is_some_and(|row| row.added_p99.median <= EGRESS_ADDED_P99_NS))
}

/// Requests per second through the proxy on one core at least the target for both protocols.
pub fn egress_throughput_met(egress: &EgressResults) -> bool {
    Protocol::BOTH
        .iter()
        .all(|&protocol| egress.row(protocol).is_some_and(|row| row.proxy_rps.median >= EGRESS_REQUESTS_PER_SECOND))
}

/// `HTTP/1.1 …, HTTP/2 …`: a figure of each protocol's row.
fn per_protocol(egress: &EgressResults, figure: impl Fn(&super::egress::EgressRow) -> String) -> String {
    Protocol::BOTH
        .iter()
        .map(|&protocol| match egress.row(protocol) {
            Some(row) => format!("{} {}", protocol.label(), figure(row)),
            None => format!("{} not measured", protocol.label()),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub enum Verdict {
    Pass,
    Fail,
    /// A smoke run: too small to judge.
    NotJudged,
}

pub struct Target {
    pub target: &'static str,
    pub measured: String,
    pub verdict: Verdict,
}

pub fn evaluate(results: &Results) -> Vec<Target> {
    let ratio = |workload, monitor| results.syscalls.ratio(workload, monitor);
    let untracked = ratio(Workload::OpenUntracked, Monitor::Credwatch);
    let floor = ratio(Workload::OpenUntracked, Monitor::Floor);
    let beside_holder = ratio(Workload::OpenBesideHolder, Monitor::Credwatch);
    // Syscall rows where credwatch costs more than the bpftrace peer.
    let above_peer: Vec<&str> = Workload::ALL
        .iter()
        .filter(|workload| workload.is_syscall())
        .filter(|&&workload| ratio(workload, Monitor::Credwatch) >= ratio(workload, Monitor::Bpftrace))
        .map(|workload| workload.label())
        .collect();
    let tracked_open = ratio(Workload::OpenTracked, Monitor::Credwatch);
    let tracked_connect = ratio(Workload::ConnectTracked, Monitor::Credwatch);
    let exec = ratio(Workload::ExecUntracked, Monitor::Credwatch);
    let exec_floor = ratio(Workload::ExecUntracked, Monitor::Floor);
    // The permission round trip: what an owner's open of its secret costs over no monitor.
    let round_trip_us = results
        .syscalls
        .get(Workload::OpenSecretOwned, Monitor::Credwatch)
        .map_or(f64::NAN, |overhead| {
            let baseline = results.syscalls.baseline[&(Workload::OpenSecretOwned, Clock::Elapsed)].median;
            (overhead.ns_per_op[&Clock::Elapsed].median - baseline) / 1e3
        });
    let engine = results.engine.events_per_second.median;
    let idle_p99 = results
        .latency
        .iter()
        .find(|latency| latency.condition == Condition::Idle)
        .map_or(f64::NAN, |latency| latency.p99.median);
    let footprint = &results.footprint;
    let storm = &footprint.storm;
    let judged = |pass: bool| match (results.scale.quick, pass) {
        (true, _) => Verdict::NotJudged,
        (false, true) => Verdict::Pass,
        (false, false) => Verdict::Fail,
    };
    vec![
        Target {
            target: "every syscall row: overhead below the bpftrace peer's",
            measured: if above_peer.is_empty() {
                "below on every row".to_owned()
            } else {
                format!("at or above on: {}", above_peer.join("; "))
            },
            verdict: judged(above_peer.is_empty()),
        },
        Target {
            target: "untracked open/close, no secret holder on the host: at most 1.03× baseline",
            measured: format!(
                "{untracked:.3}× ({}; empty raw sys_enter/sys_exit programs: {floor:.3}×)",
                percent(untracked)
            ),
            verdict: judged(untracked <= UNTRACKED_LIMIT),
        },
        Target {
            target: "untracked open/close beside a task holding a secret: at most 1.05× baseline",
            measured: format!("{beside_holder:.3}×"),
            verdict: judged(beside_holder <= BESIDE_HOLDER_LIMIT),
        },
        Target {
            target: "tracked open/close: at most 1.10× baseline",
            measured: format!("{tracked_open:.3}×"),
            verdict: judged(tracked_open <= TRACKED_OPEN_LIMIT),
        },
        Target {
            target: "tracked TCP connect: at most 1.15× baseline",
            measured: format!("{tracked_connect:.3}×"),
            verdict: judged(tracked_connect <= TRACKED_CONNECT_LIMIT),
        },
        Target {
            target: "fork+exec+exit by a process in no task: at most 1.05× baseline",
            measured: format!("{exec:.3}× (the floor: {exec_floor:.3}×)"),
            verdict: judged(exec <= EXEC_LIMIT),
        },
        Target {
            target: "an owner's open of its secret: the file guard's round trip (reported)",
            measured: format!("{round_trip_us:.1} µs per open over no monitor"),
            verdict: Verdict::NotJudged,
        },
        Target {
            target: "engine: at least 1 M events/s on one core",
            measured: format!("{:.2} M events/s", engine / 1e6),
            verdict: judged(engine >= ENGINE_EVENTS_PER_SECOND),
        },
        Target {
            target: "p99 event → decision at most 5 ms at idle",
            measured: format!("{:.2} ms", idle_p99 / 1e6),
            verdict: judged(idle_p99 <= IDLE_P99_NS),
        },
        Target {
            target: "RSS at most 50 MiB with 10 k tracked processes",
            measured: format!(
                "{} with {} processes tracked",
                mib(footprint.idle_rss_bytes),
                footprint.processes_tracked
            ),
            verdict: judged(
                footprint.idle_rss_bytes <= RSS_BYTES
                    && footprint.processes_tracked >= TRACKED_PROCESSES,
            ),
        },
        Target {
            target: "storm of at least 1 M events: produced = received + counted lost",
            measured: format!(
                "{} = {} + {}{}",
                storm.produced,
                storm.received,
                storm.lost,
                if storm.is_exact() {
                    ""
                } else {
                    " does not hold"
                }
            ),
            verdict: match (
                storm.is_exact(),
                results.scale.quick || storm.produced >= STORM_EVENTS,
            ) {
                (true, true) => Verdict::Pass,
                (true, false) | (false, _) => Verdict::Fail,
            },
        },
        Target {
            target: "egress proxy: added p99 at most 1 ms per request on loopback (HTTP/1.1 and HTTP/2)",
            measured: per_protocol(&results.egress, |row| {
                format!(
                    "{:+.0} µs (p99 {:.0} µs direct, {:.0} µs proxied)",
                    row.added_p99.median / 1e3,
                    row.direct_p99.median / 1e3,
                    row.proxy_p99.median / 1e3
                )
            }),
            verdict: judged(egress_latency_met(&results.egress)),
        },
        Target {
            target: "egress proxy: at least 5 000 requests/s on one core (HTTP/1.1 and HTTP/2)",
            measured: per_protocol(&results.egress, |row| {
                format!(
                    "{:.0}/s (the daemon's core {:.0} % busy, {:.1} µs CPU per request)",
                    row.proxy_rps.median,
                    row.core_busy.median * 100.0,
                    row.throughput_cpu_ns.median / 1e3
                )
            }),
            verdict: judged(egress_throughput_met(&results.egress)),
        },
    ]
}
