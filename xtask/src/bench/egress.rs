//! The egress proxy's cost: an HTTPS keep-alive request loop through the daemon's proxy against
//! the same loop straight to the server, side by side in one daemon's life, for HTTP/1.1 and
//! HTTP/2. Both ends are Go's net/http (egress/loop.go, built here with the standard library
//! only), so that the proxy is what the rows measure: a server answering `200 ok`, and a client
//! that runs as a task (`credwatch task exec`), `--egress direct` or `--egress proxy`, finding the
//! proxy and its CA from the variables `task exec` sets.
//!
//! Latency: one keep-alive connection, one request at a time; each round runs the direct loop,
//! the proxied loop and the direct loop again, and what the proxy adds is the proxied percentile
//! less the mean of the two direct ones. Throughput: several keep-alive loops at once, through
//! the proxy and direct. The daemon is pinned to one CPU for the whole section, the server and the
//! client to the others, so that the proxy has one core of its own.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

use super::{
    daemon::Daemon, error::BenchError, procfs, stats::Spread, worker::Worker, Bench,
};
use crate::workspace;

const SOURCE: &str = include_str!("egress/loop.go");
/// The upstream's made-up name (loop.go's `name`): Go never sends a loopback address through a
/// proxy, so the client asks for this name, which the proxy resolves from `[egress.hosts]`.
const NAME: &str = "bench-upstream.test";
/// Keep-alive loops at once in the throughput runs.
pub const CONCURRENCY: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    pub const BOTH: [Self; 2] = [Self::Http1, Self::Http2];

    pub fn label(self) -> &'static str {
        match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Self::Http1 => "h1",
            Self::Http2 => "h2",
        }
    }
}

/// One protocol's rows, each figure over the rounds. Times in nanoseconds.
pub struct EgressRow {
    pub protocol: Protocol,
    pub direct_p50: Spread,
    pub direct_p99: Spread,
    pub proxy_p50: Spread,
    pub proxy_p99: Spread,
    /// Proxied less the mean of the direct runs before and after it, per round.
    pub added_p50: Spread,
    pub added_p99: Spread,
    /// The daemon's CPU time (all threads, user + system) per proxied request, one at a time.
    pub daemon_cpu_ns: Spread,
    /// The client's own CPU time per request, direct and proxied, one at a time.
    pub client_cpu_direct_ns: Spread,
    pub client_cpu_proxy_ns: Spread,
    /// Requests per second of wall time with [`CONCURRENCY`] loops.
    pub direct_rps: Spread,
    pub proxy_rps: Spread,
    /// The daemon's CPU time per request in the proxied throughput run, and the share of its core
    /// it used (1.0: the core was saturated).
    pub throughput_cpu_ns: Spread,
    pub core_busy: Spread,
    /// The share of its core the daemon used over the direct loops, which it does not serve: the
    /// events of the host's other processes, its tick.
    pub background: Spread,
}

impl EgressRow {
    /// Requests per second the daemon's core could carry at the throughput run's CPU cost.
    pub fn capacity(&self) -> f64 {
        1e9 / self.throughput_cpu_ns.median
    }
}

pub struct EgressResults {
    pub requests: u64,
    pub rounds: usize,
    /// Where the daemon ran, and where the server and the client ran.
    pub daemon_cpu: Option<usize>,
    pub other_cpus: Vec<usize>,
    pub rows: Vec<EgressRow>,
}

impl EgressResults {
    pub fn row(&self, protocol: Protocol) -> Option<&EgressRow> {
        self.rows.iter().find(|row| row.protocol == protocol)
    }
}

/// One loop's result, as the client printed it.
#[derive(Clone, Copy)]
struct Run {
    p50: f64,
    p99: f64,
    rps: f64,
    client_cpu_ns: f64,
    /// The daemon's CPU seconds over the measured requests, and the wall time it was read over.
    daemon_cpu: f64,
    window: f64,
}

impl Run {
    /// The share of its core the daemon used over the run.
    fn busy(&self) -> f64 {
        self.daemon_cpu / self.window
    }
}

pub fn measure(bench: &Bench) -> Result<EgressResults, BenchError> {
    let scale = bench.scale;
    let dir = bench.scratch.run_dir("egress")?;
    let program = build(&dir)?;
    let (daemon_cpu, other_cpus) = cpus()?;
    let server = Server::start(&program, &dir, &other_cpus)?;
    let more = format!(
        "\n[egress]\nupstream_ca = {:?}\n\n[egress.hosts]\n{NAME:?} = \"127.0.0.1\"\n",
        server.ca.display().to_string()
    );
    let daemon = Daemon::start_with(&bench.binary, &bench.scratch, &more)?;
    if let Some(cpu) = daemon_cpu {
        pin_threads(daemon.pid(), &[cpu])?;
    }
    let url = format!("https://{NAME}:{}/", server.port);
    let client = Client { bench, daemon: &daemon, program: &program, url: &url, ca: &server.ca, cpus: &other_cpus };
    let requests = scale.egress_requests;
    let mut runs: Vec<(Protocol, [Vec<Run>; 5])> = Protocol::BOTH.iter().map(|&protocol| (protocol, Default::default())).collect();
    for round in 0..scale.egress_rounds {
        for (protocol, samples) in &mut runs {
            let protocol = *protocol;
            let before = client.run(protocol, false, requests, 1)?;
            let proxied = client.run(protocol, true, requests, 1)?;
            let after = client.run(protocol, false, requests, 1)?;
            let direct_many = client.run(protocol, false, requests, CONCURRENCY)?;
            let proxied_many = client.run(protocol, true, requests, CONCURRENCY)?;
            eprintln!(
                "bench: egress round {}/{}: {:<8} p99 direct {:.0}/{:.0} µs, proxied {:.0} µs; {:.0} requests/s direct, {:.0} proxied",
                round + 1,
                scale.egress_rounds,
                protocol.label(),
                before.p99 / 1e3,
                after.p99 / 1e3,
                proxied.p99 / 1e3,
                direct_many.rps,
                proxied_many.rps,
            );
            for (samples, run) in samples.iter_mut().zip([before, proxied, after, direct_many, proxied_many]) {
                samples.push(run);
            }
        }
    }
    daemon.stop()?;
    let requests_f = requests as f64;
    let rows = runs
        .into_iter()
        .map(|(protocol, [before, proxied, after, direct_many, proxied_many])| {
            let spread = |values: Vec<f64>| Spread::of(&values).expect("at least one round");
            let of = |runs: &[Run], field: fn(&Run) -> f64| spread(runs.iter().map(field).collect());
            let direct: Vec<Run> = before.iter().chain(&after).copied().collect();
            let added = |field: fn(&Run) -> f64| {
                spread(
                    proxied
                        .iter()
                        .zip(before.iter().zip(&after))
                        .map(|(proxied, (before, after))| field(proxied) - (field(before) + field(after)) / 2.0)
                        .collect(),
                )
            };
            EgressRow {
                protocol,
                direct_p50: of(&direct, |run| run.p50),
                direct_p99: of(&direct, |run| run.p99),
                proxy_p50: of(&proxied, |run| run.p50),
                proxy_p99: of(&proxied, |run| run.p99),
                added_p50: added(|run| run.p50),
                added_p99: added(|run| run.p99),
                daemon_cpu_ns: spread(proxied.iter().map(|run| run.daemon_cpu * 1e9 / requests_f).collect()),
                client_cpu_direct_ns: of(&direct, |run| run.client_cpu_ns),
                client_cpu_proxy_ns: of(&proxied, |run| run.client_cpu_ns),
                direct_rps: of(&direct_many, |run| run.rps),
                proxy_rps: of(&proxied_many, |run| run.rps),
                throughput_cpu_ns: spread(proxied_many.iter().map(|run| run.daemon_cpu * 1e9 / requests_f).collect()),
                core_busy: of(&proxied_many, Run::busy),
                background: of(&direct, Run::busy),
            }
        })
        .collect();
    Ok(EgressResults { requests, rounds: scale.egress_rounds, daemon_cpu, other_cpus, rows })
}

/// Builds loop.go into `dir`, offline: pure Go, its build cache kept in the target directory
/// (a cold cache compiles net/http and crypto/tls, some seconds), GOPATH and HOME in `dir`.
fn build(dir: &Path) -> Result<PathBuf, BenchError> {
    let source = dir.join("loop.go");
    std::fs::write(&source, SOURCE).map_err(BenchError::io(format!("writing {}", source.display())))?;
    let binary = dir.join("loop");
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .current_dir(dir)
        .env("GOCACHE", workspace::target_dir().join("bench-go-cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("HOME", dir)
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(BenchError::io("running `go build` (golang-go; `cargo xtask setup` installs it)"))?;
    if !output.status.success() {
        return Err(BenchError::Helper {
            what: format!("`go build` of the egress loop failed ({})", output.status),
            log: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(binary)
}

/// The CPUs this process may use: the last for the daemon, the rest for everything else; with a
/// single CPU, nothing is pinned.
fn cpus() -> Result<(Option<usize>, Vec<usize>), BenchError> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(BenchError::io("reading this process's CPUs")(std::io::Error::last_os_error()));
    }
    let mut allowed: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect();
    Ok(match allowed.len() {
        0 | 1 => (None, allowed),
        _ => {
            let daemon = allowed.pop();
            (daemon, allowed)
        }
    })
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it for CPUs below CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Pins every thread of `pid` to `cpus` (threads started later inherit it from their creator).
fn pin_threads(pid: u32, cpus: &[usize]) -> Result<(), BenchError> {
    let set = cpu_set(cpus);
    let dir = format!("/proc/{pid}/task");
    let threads = std::fs::read_dir(&dir).map_err(BenchError::io(format!("listing {dir}")))?;
    for thread in threads.flatten() {
        let Some(tid) = thread.file_name().to_str().and_then(|tid| tid.parse::<libc::pid_t>().ok()) else { continue };
        // SAFETY: a valid set of its own size; a thread that has exited since is skipped.
        if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::ESRCH) {
                return Err(BenchError::io(format!("pinning thread {tid} of {pid} to CPUs {cpus:?}"))(error));
            }
        }
    }
    Ok(())
}

/// Runs `command` on `cpus` (all of them when empty).
fn run_on(command: &mut Command, cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    let set = cpu_set(cpus);
    // SAFETY: only a system call between fork and exec; nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// loop.go's server, until dropped.
struct Server {
    child: Child,
    port: u16,
    ca: PathBuf,
}

impl Server {
    fn start(program: &Path, dir: &Path, cpus: &[usize]) -> Result<Self, BenchError> {
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log).map_err(BenchError::io(format!("creating {}", log.display())))?;
        let mut command = Command::new(program);
        command.arg("server").arg(dir).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log_file);
        run_on(&mut command, cpus);
        let mut child = command.spawn().map_err(BenchError::io("starting the egress loop's server"))?;
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("stdout was piped")).read_line(&mut line);
        // Owned before the port is known, so that an error below still kills the child.
        let mut server = Self { child, port: 0, ca: dir.join("ca.pem") };
        match read.ok().and_then(|_| line.trim().parse().ok()) {
            Some(port) => {
                server.port = port;
                Ok(server)
            }
            None => Err(BenchError::Helper {
                what: format!("the egress loop's server said {line:?}"),
                log: super::scratch::log_tail(&log),
            }),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every client run shares.
struct Client<'a> {
    bench: &'a Bench,
    daemon: &'a Daemon,
    program: &'a Path,
    url: &'a str,
    /// The upstream's CA, which a direct client trusts (a proxied one trusts the proxy's).
    ca: &'a Path,
    cpus: &'a [usize],
}

impl Client<'_> {
    /// One loop of `requests` requests over `concurrency` connections (HTTP/1.1) or streams
    /// (HTTP/2), as a task of its own, through the proxy or not.
    fn run(&self, protocol: Protocol, proxied: bool, requests: u64, concurrency: u32) -> Result<Run, BenchError> {
        let id = self.bench.next_task_id();
        let mut command = Command::new(&self.bench.binary);
        command
            .args(["task", "exec", "--id", &id, "--egress", if proxied { "proxy" } else { "direct" }, "--socket"])
            .arg(self.daemon.socket())
            .arg("--")
            .arg(self.program)
            .args::<[OsString; 5], _>([
                "client".into(),
                protocol.arg().into(),
                self.url.into(),
                requests.to_string().into(),
                concurrency.to_string().into(),
            ])
            // Whatever proxy this shell uses is not the benchmark's; `task exec` sets the
            // proxy's, and the bundle with its CA in SSL_CERT_FILE.
            .env("SSL_CERT_FILE", self.ca)
            .env("NO_COLOR", "1");
        for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"] {
            command.env_remove(name);
        }
        run_on(&mut command, self.cpus);
        let what = format!("the egress loop ({}, {})", protocol.label(), if proxied { "proxied" } else { "direct" });
        let mut worker = Worker::spawn_command(command, what)?;
        worker.go()?;
        worker.result("warmed")?;
        let pid = self.daemon.pid();
        let (cpu_before, started) = (procfs::cpu_seconds(pid)?, Instant::now());
        worker.go()?;
        let result = worker.result("p50_ns")?;
        let (daemon_cpu, window) = (procfs::cpu_seconds(pid)? - cpu_before, started.elapsed().as_secs_f64());
        worker.finish()?;
        match result[..] {
            [p50, p99, rps, client_cpu_ns] => Ok(Run { p50, p99, rps, client_cpu_ns, daemon_cpu, window }),
            _ => Err(BenchError::Helper { what: format!("the egress loop said {result:?}"), log: String::new() }),
        }
    }
}
