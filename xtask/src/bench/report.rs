//! The Markdown report: how to run it, the machine, the targets, then one section per
//! measurement, each median given with its min–max over the rounds.

use std::{fmt::Write as _, process::Command, time::Duration};

use super::{
    egress::{self as egress_rows, EgressResults, Protocol},
    engine::EngineResults,
    footprint::Footprint,
    latency::Latency,
    monitors::Monitor,
    profile::Profile,
    syscalls::{Clock, SyscallResults, Workload},
    targets::{self, Verdict},
    tiers::TierOverhead,
    Scale,
};
use crate::{cmd, workspace};

pub struct Results {
    pub scale: Scale,
    pub machine: Machine,
    pub syscalls: SyscallResults,
    pub profiles: Vec<Profile>,
    pub engine: EngineResults,
    pub latency: Vec<Latency>,
    pub footprint: Footprint,
    pub tiers: Vec<TierOverhead>,
    pub egress: EgressResults,
    pub wall: Duration,
}

/// Where the numbers come from.
pub struct Machine {
    kernel: String,
    cpu: String,
    cpus: usize,
    memory: String,
    commit: String,
    date: String,
}

impl Machine {
    pub fn probe() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let field = |text: &str, name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.trim_start().strip_prefix(':'))
                .map_or_else(|| "unknown".to_owned(), |value| value.trim().to_owned())
        };
        let mut git = Command::new("git");
        git.current_dir(workspace::root())
            .args(["describe", "--always", "--dirty"]);
        Self {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu: field(&cpuinfo, "model name"),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory: field(&read("/proc/meminfo"), "MemTotal"),
            commit: quiet_output(&mut git),
            date: quiet_output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
        }
    }
}

fn quiet_output(command: &mut Command) -> String {
    cmd::output(command)
        .ok()
        .filter(|output| output.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |output| String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        )
}

/// `+23.4 %` for a ratio of 1.234.
pub fn percent(ratio: f64) -> String {
    format!("{:+.1} %", (ratio - 1.0) * 100.0)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn ratio(value: f64) -> String {
    format!("{value:.3}×")
}

fn micros(ns: f64) -> String {
    format!("{:.0} µs", ns / 1e3)
}

pub fn render(results: &Results) -> String {
    let mut out = String::new();
    header(&mut out, results);
    target_table(&mut out, results);
    syscalls(&mut out, &results.syscalls, &results.scale);
    profiles(&mut out, &results.profiles);
    engine(&mut out, &results.engine);
    latency(&mut out, &results.latency, &results.scale);
    footprint(&mut out, &results.footprint);
    tiers(&mut out, &results.tiers, &results.scale);
    egress(&mut out, &results.egress, &results.scale);
    out
}

fn egress(out: &mut String, results: &EgressResults, scale: &Scale) {
    let cpus = |cpus: &[usize]| cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
    let pinning = match results.daemon_cpu {
        Some(cpu) => format!(
            "The daemon (every thread) is pinned to CPU {cpu} for the whole section, the server and the client to \
             CPU {}: the proxy has one core, shared with nothing of the benchmark's (other users of this machine may \
             still run there).",
            cpus(&results.other_cpus)
        ),
        None => "This machine gives the benchmark one CPU: nothing is pinned, the daemon, the server and the client \
                 share it."
            .to_owned(),
    };
    let _ = write!(
        out,
        "## 7. The egress proxy\n\n\
         An HTTPS keep-alive request loop through credwatch's egress proxy against the same loop straight to the \
         server, in one daemon's life: {rounds} round(s), {requests} requests per run after {warm} to warm up \
         (connections and TLS set up). Both ends are Go's net/http (`xtask/src/bench/egress/loop.go`), so that the \
         proxy is what is measured: a loopback server answering `200 ok` with a certificate from a CA of its own \
         (the daemon's `[egress] upstream_ca`), and a client run as a task, `credwatch task exec --egress direct` or \
         `--egress proxy`, which finds the proxy (a CONNECT tunnel) and trusts its CA through the variables \
         `task exec` sets. Each GET carries an `Authorization` header holding no known secret. Through the proxy each \
         request is read, scanned, judged by the daemon's loop and forwarded over the proxy's own TLS connection to \
         the server, HTTP/2 when the client spoke it. {pinning}\n\n\
         ### Latency, one request at a time\n\n\
         One keep-alive connection, each request sent when the previous response has ended; latency from the send \
         to the end of the response body, as the client measures it. Each round runs the direct loop, the proxied \
         loop and the direct loop again; *added* is the proxied percentile less the mean of the two direct ones, \
         per round. CPU time (user + system): the daemon's, all its threads (/proc), over the proxied loop; the \
         client's own, direct → proxied.\n\n\
         | protocol | direct p50 | direct p99 | proxied p50 | proxied p99 | added p50 | added p99 | daemon CPU per request | client CPU per request |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        rounds = results.rounds,
        requests = results.requests,
        warm = (results.requests / 10).max(u64::from(egress_rows::CONCURRENCY)),
    );
    let us = |ns: f64| format!("{:.0} µs", ns / 1e3);
    let us1 = |ns: f64| format!("{:.1} µs", ns / 1e3);
    for row in &results.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} → {} |",
            row.protocol.label(),
            row.direct_p50.show(us),
            row.direct_p99.show(us),
            row.proxy_p50.show(us),
            row.proxy_p99.show(us),
            row.added_p50.show(us),
            row.added_p99.show(us),
            row.daemon_cpu_ns.show(us1),
            us1(row.client_cpu_direct_ns.median),
            us1(row.client_cpu_proxy_ns.median),
        );
    }
    let _ = write!(
        out,
        "\n### Throughput, {loops} loops at once\n\n\
         {loops} keep-alive loops in one client (HTTP/1.1: as many connections; HTTP/2: as many streams on one \
         connection), requests per second of wall time. Over the proxied run: the daemon's CPU time per request, \
         the share of its core it used (100 %: the proxy was the bottleneck; less: the server and the client on the \
         other CPU were, or the loops' round trips), and the requests per second one core could carry at that \
         cost.\n\n\
         | protocol | direct, requests/s | through the proxy, requests/s | daemon CPU per request | the daemon's core busy | one core at that cost, requests/s |\n\
         |---|---|---|---|---|---|\n",
        loops = egress_rows::CONCURRENCY,
    );
    for row in &results.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} |",
            row.protocol.label(),
            row.direct_rps.show(|rps| format!("{rps:.0}")),
            row.proxy_rps.show(|rps| format!("{rps:.0}")),
            row.throughput_cpu_ns.show(us1),
            row.core_busy.show(|share| format!("{:.0} %", share * 100.0)),
            row.capacity(),
        );
    }
    let background = figures_of(results, |row| row.background.show(|share| format!("{:.1} %", share * 100.0)));
    let _ = write!(
        out,
        "\nOver the direct loops, which it does not serve, the daemon used {background} of its core (the events of \
         the host's other processes, its tick): that much of each figure of its CPU above is not the proxy's. One at \
         a time, each request finds the daemon idle and wakes it; at {loops} loops, wake-ups are shared.\n",
        loops = egress_rows::CONCURRENCY,
    );
    let verdict = |met: bool| match (scale.quick, met) {
        (true, _) => "not judged on a smoke run",
        (false, true) => "**met**",
        (false, false) => "**not met**",
    };
    let figures = |value: fn(&egress_rows::EgressRow) -> String| figures_of(results, value);
    let _ = write!(
        out,
        "\nTargets: added p99 at most 1 ms per request on loopback: {added} ({}); at least 5 000 requests/s through \
         the proxy on one core: {rps} ({}).\n\n",
        verdict(targets::egress_latency_met(results)),
        verdict(targets::egress_throughput_met(results)),
        added = figures(|row| format!("{:.0} µs", row.added_p99.median / 1e3)),
        rps = figures(|row| format!("{:.0}/s", row.proxy_rps.median)),
    );
}

/// `HTTP/1.1 X, HTTP/2 Y`.
fn figures_of(results: &EgressResults, value: impl Fn(&egress_rows::EgressRow) -> String) -> String {
    Protocol::BOTH
        .iter()
        .filter_map(|&protocol| results.row(protocol).map(|row| format!("{} {}", protocol.label(), value(row))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn tiers(out: &mut String, results: &[TierOverhead], scale: &Scale) {
    let _ = write!(
        out,
        "## 6. The security-hook tiers, in the test VM\n\n\
         This host refuses LSM and fmod_ret programs, so the open/close loop ({opens} open+close of a plain file by a \
         process in no task, CPU time) runs in the test VM (`cargo xtask vm-test`'s kernel, Debian 12's 6.1), booted \
         once with `bpf` in `lsm=` (the LSM tier) and once without (the fmod_ret tier); {rounds} round(s) each, a \
         credwatch run between two runs with no monitor. **The guest's CPU is emulated (QEMU TCG where KVM does not work, as on this project's machines)**: a syscall costs \
         it many times what it costs this host, so only the ratios mean anything, each within its own boot.\n\n\
         | tier | no monitor, ns/iteration (emulated) | credwatch |\n|---|---|---|\n",
        opens = scale.vm_opens,
        rounds = scale.vm_rounds,
    );
    for tier in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            tier.tier,
            tier.baseline_ns.show(|ns| format!("{ns:.0}")),
            tier.ratio.show(ratio),
        );
    }
    out.push('\n');
}

fn header(out: &mut String, results: &Results) {
    let Results {
        scale,
        machine,
        wall,
        ..
    } = results;
    let kind = if scale.quick {
        "a smoke run (`--quick`): scaled down, its numbers are not a verdict"
    } else {
        "the full benchmark"
    };
    let _ = write!(
        out,
        "# Performance\n\n\
         Generated by `cargo xtask bench`; do not edit by hand. This is {kind}.\n\n\
         ```sh\n\
         cargo xtask bench                                       # as root: the full benchmark, this file\n\
         cargo xtask bench --quick --out target/bench-quick.md   # the smoke run `cargo xtask test` ends with\n\
         ```\n\n\
         It loads eBPF programs (credwatch's, the floor's, bpftrace's) and builds what it needs; the wall time \
         below includes the build. \
         The machine is shared, so nothing is compared across time: each monitored run set sits between two \
         baseline run sets and is divided by their mean, the monitors' order rotates from round to round, and every \
         figure is the median over the rounds with the min–max beside it.\n\n\
         | | |\n|---|---|\n\
         | machine | {cpus} × {cpu}, {memory} |\n\
         | kernel | {kernel} |\n\
         | commit | {commit} |\n\
         | date | {date} |\n\
         | rounds | {rounds} |\n\
         | wall time | {wall} |\n\n",
        cpus = machine.cpus,
        cpu = machine.cpu,
        memory = machine.memory,
        kernel = machine.kernel,
        commit = machine.commit,
        date = machine.date,
        rounds = scale.rounds,
        wall = format_args!("{:.0} s", wall.as_secs_f64()),
    );
}

fn target_table(out: &mut String, results: &Results) {
    out.push_str("## Targets\n\n| target | measured | result |\n|---|---|---|\n");
    for target in targets::evaluate(results) {
        let verdict = match target.verdict {
            Verdict::Pass => "**pass**",
            Verdict::Fail => "**fail**",
            Verdict::NotJudged => "not judged",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {verdict} |",
            target.target, target.measured
        );
    }
    out.push('\n');
}

fn syscalls(out: &mut String, results: &SyscallResults, scale: &Scale) {
    let _ = write!(
        out,
        "## 1. Syscall overhead\n\n\
         Time per iteration as a ratio to the baseline's: {opens} open+close of a plain file, or {connects} TCP \
         connects to a loopback listener (closed with a reset, so that no TIME_WAIT builds up), per run. \
         *Untracked*: a fresh process in no task, holding no secret, on a host with no holder (under \
         credwatch, each such run waits until the daemon has detached its syscall programs, which it does on \
         its 1 s tick after the previous run's holder exited). *Tracked*: a fresh process registered as a \
         task's root (`credwatch task start`), granted the watched secret, which it opens once before the loop; \
         without credwatch it opens the secret all the same. *Beside a holder*: untracked, while another \
         task's root that opened the secret idles (credwatch's memory hooks watch it; no syscall program is \
         attached). *Its own \
         secret, by its owner*: a task's root opening the secret itself {connects} times (on the tracepoint \
         tier each open waits for the file guard's answer). *HTTPS request*: {https} keep-alive GETs over \
         loopback by a Python client on Debian's OpenSSL, each with an `Authorization` header holding no \
         known secret, to a local server in no task (credwatch's TLS uprobes send every request head to the \
         daemon, which scans it); *tracked*, by a task's root holding the secret. The targets are judged on \
         CPU time (the loop thread's own, which the hooks run on and other processes of this shared machine \
         do not inflate); elapsed time follows. The bpftrace peer hooks syscalls only: on the HTTPS rows it \
         shows what syscall hooks cost there, not a TLS sensor.\n\n",
        opens = scale.opens,
        connects = scale.connects,
        https = scale.https_requests,
    );
    for clock in Clock::BOTH {
        let _ = writeln!(out, "### Ratio to the baseline, {}\n", clock.label());
        columns(out, "no monitor, ns/iteration");
        for workload in Workload::ALL {
            let baseline = results.baseline[&(workload, clock)].show(|ns| format!("{ns:.0}"));
            let _ = write!(out, "| {} | {baseline} |", workload.label());
            for monitor in Monitor::COMPARED {
                let cell = results
                    .get(workload, monitor)
                    .map_or_else(|| "—".to_owned(), |o| o.ratio[&clock].show(ratio));
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(
        "### Nanoseconds of CPU time per iteration (medians), and what each monitor adds\n\n",
    );
    columns(out, "no monitor");
    for workload in Workload::ALL {
        let baseline = results.baseline[&(workload, Clock::Cpu)].median;
        let _ = write!(out, "| {} | {baseline:.0} |", workload.label());
        for monitor in Monitor::COMPARED {
            let cell = results.get(workload, monitor).map_or_else(
                || "—".to_owned(),
                |overhead| {
                    let ns = overhead.ns_per_op[&Clock::Cpu].median;
                    format!("{ns:.0} ({:+.0})", ns - baseline)
                },
            );
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    let added = |monitor| {
        let baseline = results.baseline[&(Workload::OpenUntracked, Clock::Cpu)].median;
        results
            .get(Workload::OpenUntracked, monitor)
            .map_or(f64::NAN, |overhead| {
                overhead.ns_per_op[&Clock::Cpu].median - baseline
            })
    };
    let (floor, credwatch) = (added(Monitor::Floor), added(Monitor::Credwatch));
    let _ = write!(
        out,
        "\nUntracked open/close: the hooks alone add {floor:.0} ns of CPU time per iteration, credwatch's work in \
         them {:.0} ns more; an empty per-syscall tracepoint adds {:.0} ns, the bpftrace peer {:.0} ns in all.\n\n",
        credwatch - floor,
        added(Monitor::OpenatTracepoint),
        added(Monitor::Bpftrace),
    );
    for monitor in Monitor::COMPARED {
        let _ = writeln!(out, "- **{}**: {}", monitor.label(), monitor.description());
    }
    out.push('\n');
}

fn profiles(out: &mut String, profiles: &[Profile]) {
    out.push_str(
        "### Run time per hook\n\n\
         What the kernel accounts to each program (`kernel.bpf_stats_enabled`, whose own two clock reads per run are \
         in every figure) during one run of a workload, against the floor's empty program on the same hook: the \
         difference is what credwatch does there. Runs include every other process's syscalls meanwhile.\n\n\
         | workload | hook | floor: runs, ns/run | credwatch: runs, ns/run | credwatch − floor, ns/run |\n\
         |---|---|---|---|---|\n",
    );
    for profile in profiles {
        let by_monitor = |wanted: Monitor| {
            profile
                .runs
                .iter()
                .find(|(monitor, _)| *monitor == wanted)
                .map(|(_, runs)| runs)
        };
        let (Some(floor), Some(credwatch)) =
            (by_monitor(Monitor::Floor), by_monitor(Monitor::Credwatch))
        else {
            continue;
        };
        // Beside the file guard, the cgroup hooks and the memory hooks, credwatch attaches no
        // syscall program for these workloads: the floor's hooks say what that spares.
        for (hook, theirs) in floor {
            let ours = match credwatch.get(hook) {
                Some(ours) => format!("{}, {:.0} | {:+.0}", ours.runs, ours.ns_per_run(), ours.ns_per_run() - theirs.ns_per_run()),
                None => "not attached | —".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | `{hook}` | {}, {:.0} | {ours} |",
                profile.workload.label(),
                theirs.runs,
                theirs.ns_per_run(),
            );
        }
    }
    out.push('\n');
}

/// The header of a table with one row per workload and one column per monitor.
fn columns(out: &mut String, baseline: &str) {
    let _ = write!(out, "| workload | {baseline} |");
    for monitor in Monitor::COMPARED {
        let _ = write!(out, " {} |", monitor.label());
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(Monitor::COMPARED.len()));
    out.push('\n');
}

fn engine(out: &mut String, results: &EngineResults) {
    let _ = write!(
        out,
        "## 2. Engine throughput\n\n\
         `Engine::apply` alone, pinned to one core, over a generated stream (`monitor/benches/engine/`): 10 k \
         long-lived processes, half of them in 100 active tasks that each hold a secret file and a token, and about \
         1 k short-lived ones beside them; 40 % forks and exits of short-lived processes, 20 % execs (one in fifty \
         with a token in its environment), 24 % secret opens, 15.8 % connects by holders, 0.2 % harvests. A few \
         uses break a rule (another task's secret, a destination outside the task's, a token in a process in no \
         task, ...), and a task ends and is replaced every 100 k inputs, leaving its processes behind. {events} \
         events per run, {runs} runs, {tracked} processes in the engine's table at the end.\n\n\
         | | median (min–max) |\n|---|---|\n\
         | events per second | {eps} |\n\
         | findings per second | {fps} |\n\n\
         Findings of the last run by rule: {rules}.\n\n",
        events = results.events,
        runs = results.runs,
        tracked = results.processes_tracked,
        eps = results.events_per_second.show(|value| format!("{:.2} M", value / 1e6)),
        fps = results.findings_per_second.show(|value| format!("{value:.0}")),
        rules = results
            .findings_by_rule
            .split_whitespace()
            .map(|rule| rule.replacen('=', " ", 1))
            .collect::<Vec<_>>()
            .join(", "),
    );
}

fn latency(out: &mut String, results: &[Latency], scale: &Scale) {
    let _ = write!(
        out,
        "## 3. Latency\n\n\
         Kernel timestamp of the event to the engine's decision, as the daemon measures it (`credwatch status`), \
         while a process opens the watched secret {opens} times, {millis} ms apart; every event the daemon \
         handled in its life counts. A fresh daemon per condition and round.\n\n\
         | condition | p50 | p99 | max | events timed |\n|---|---|---|---|---|\n",
        opens = scale.trickle_opens,
        millis = scale.trickle_millis,
    );
    for latency in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            latency.condition.label(),
            latency.p50.show(micros),
            latency.p99.show(micros),
            latency.max.show(micros),
            latency.events.show(|count| format!("{count:.0}")),
        );
    }
    out.push('\n');
}

fn footprint(out: &mut String, results: &Footprint) {
    let storm = &results.storm;
    let _ = write!(
        out,
        "## 4. Footprint\n\n\
         The daemon's resident memory and CPU time, with {tracked} live idle processes in its table (forked and \
         kept waiting), over {idle:.0} s at rest; then during the storm below, from its first event until the \
         daemon had handled the last.\n\n\
         | | RSS | CPU (one core = 100 %) |\n|---|---|---|\n\
         | at rest, {tracked} processes tracked | {idle_rss} | {idle_cpu:.2} % |\n\
         | during the storm | {storm_rss} (peak) | {storm_cpu:.1} % |\n\n\
         ## 5. Event storm\n\n\
         One process opens the watched secret {produced} times as fast as it can ({rate:.0} k opens/s, \
         {produce:.2} s); every open is an event. Each must be received by the daemon or counted as lost by the \
         kernel (ring buffer full): nothing may vanish silently.\n\n\
         | produced | received | counted lost | received + lost | undecodable | exact |\n\
         |---|---|---|---|---|---|\n\
         | {produced} | {received} | {lost} | {accounted} | {decode_errors} | {exact} |\n\n\
         Drained {drain:.2} s after the first open. Latency over the daemon's life, storm included: p50 {p50}, \
         p99 {p99}, max {max}.\n",
        tracked = results.processes_tracked,
        idle = results.idle_seconds,
        idle_rss = mib(results.idle_rss_bytes),
        idle_cpu = results.idle_cpu_percent,
        storm_rss = mib(storm.peak_rss_bytes),
        storm_cpu = storm.cpu_percent,
        produced = storm.produced,
        rate = storm.produced as f64 / storm.produce_seconds / 1e3,
        produce = storm.produce_seconds,
        received = storm.received,
        lost = storm.lost,
        accounted = storm.accounted(),
        decode_errors = storm.decode_errors,
        exact = if storm.is_exact() { "yes" } else { "**no**" },
        drain = storm.drain_seconds,
        p50 = micros(storm.latency_p50 as f64),
        p99 = micros(storm.latency_p99 as f64),
        max = micros(storm.latency_max as f64),
    );
}
