//! The processes whose syscalls are measured, run as `cargo xtask bench-load KIND ARGS…` (hidden
//! from help) so that every run is a fresh process: in no task and holding no secret until the
//! benchmark makes it so.
//!
//! Protocol: the process prints `ready`, waits for one line on stdin (meanwhile the benchmark may
//! register it as a task's root), does its work and prints one `name value…` result line.

use std::{
    ffi::{CString, OsString},
    io::{self, BufRead as _, Read as _, Write as _},
    mem,
    net::TcpListener,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

/// Untimed iterations before a timed loop, as a share of it: caches, dentries, socket slabs.
const WARMUP_DIVISOR: u64 = 10;
/// A loop that runs until stdin closes checks it this often.
const STOP_CHECK_EVERY: u64 = 256;
/// The kernel caps it at `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: libc::c_int = 4096;

pub const USAGE: &str = "\
bench-load open FILE N [HOLD]      open+close FILE N times (0: until stdin closes) -> ns_per_op
bench-load connect N [HOLD]        TCP loopback connect+close N times -> ns_per_op
bench-load exec N                  fork+exec+wait of /bin/true N times -> ns_per_op (CPU: with the children's)
                                   (ns_per_op WALL cpu_ns_per_op CPU: elapsed and on-CPU time)
bench-load trickle FILE N MILLIS   open+close FILE N times, MILLIS apart -> opened
bench-load storm FILE N            open+close FILE N times at full speed -> opened, seconds
bench-load spawn N                 fork N idle children, kept until stdin closes -> spawned
bench-load hold FILE               open+close FILE once, then idle until stdin closes -> holding
HOLD: a file opened once before the loop (a secret, so that the process holds it).";

pub fn main(args: &[OsString]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-load: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[OsString]) -> io::Result<()> {
    let words: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
    let result = match words.as_slice() {
        [b"open", file, n, hold @ ..] => {
            let (file, n, hold) = (path(file)?, number(n)?, optional_path(hold)?);
            start(hold.as_ref())?;
            if n == 0 {
                let opened = until_stdin_closes(|| open_close(&file))?;
                format!("opened {opened}")
            } else {
                timed(n, || open_close(&file))?
            }
        }
        [b"exec", n] => {
            let n = number(n)?;
            start(None)?;
            timed_with_children(n, spawn_true)?
        }
        [b"connect", n, hold @ ..] => {
            let (n, hold) = (number(n)?, optional_path(hold)?);
            let server = Server::start()?;
            start(hold.as_ref())?;
            timed(n, || server.connect_close())?
        }
        [b"trickle", file, n, millis] => {
            let (file, n, pause) = (
                path(file)?,
                number(n)?,
                Duration::from_millis(number(millis)?),
            );
            start(None)?;
            for _ in 0..n {
                open_close(&file)?;
                thread::sleep(pause);
            }
            format!("opened {n}")
        }
        [b"storm", file, n] => {
            let (file, n) = (path(file)?, number(n)?);
            start(None)?;
            let started = Instant::now();
            for _ in 0..n {
                open_close(&file)?;
            }
            format!("opened {n} seconds {:.3}", started.elapsed().as_secs_f64())
        }
        [b"hold", file] => {
            start(Some(&path(file)?))?;
            say("holding 1")?;
            io::stdin().lock().read_to_end(&mut Vec::new())?;
            return Ok(());
        }
        [b"spawn", n] => {
            let n = number(n)?;
            start(None)?;
            return spawn_idle(n);
        }
        _ => return Err(invalid(format!("usage:\n{USAGE}"))),
    };
    say(&result)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn path(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| invalid("a path with a NUL byte".to_owned()))
}

fn optional_path(rest: &[&[u8]]) -> io::Result<Option<CString>> {
    match rest {
        [] => Ok(None),
        [hold] => path(hold).map(Some),
        _ => Err(invalid(format!("too many arguments; usage:\n{USAGE}"))),
    }
}

fn number(bytes: &[u8]) -> io::Result<u64> {
    let text = String::from_utf8_lossy(bytes);
    text.parse()
        .map_err(|_| invalid(format!("{text:?} is not a count")))
}

fn say(line: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// Says `ready`, waits for the go line, then opens `hold` once.
fn start(hold: Option<&CString>) -> io::Result<()> {
    say("ready")?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    match hold {
        Some(secret) => open_close(secret),
        None => Ok(()),
    }
}

/// Mean nanoseconds per call of `op` over `n` calls, after a warm-up: elapsed, and on this
/// thread's CPU (which leaves out the time other processes on a shared machine took the CPU).
fn timed(n: u64, mut op: impl FnMut() -> io::Result<()>) -> io::Result<String> {
    for _ in 0..n / WARMUP_DIVISOR {
        op()?;
    }
    let (started, cpu_started) = (Instant::now(), thread_cpu_ns()?);
    for _ in 0..n {
        op()?;
    }
    let (wall, cpu) = (
        started.elapsed().as_nanos() as f64,
        (thread_cpu_ns()? - cpu_started) as f64,
    );
    Ok(format!(
        "ns_per_op {:.1} cpu_ns_per_op {:.1}",
        wall / n as f64,
        cpu / n as f64
    ))
}

/// Like `timed`, with the CPU time of the children reaped meanwhile added: an exec's hooks run
/// in the child.
fn timed_with_children(n: u64, mut op: impl FnMut() -> io::Result<()>) -> io::Result<String> {
    for _ in 0..n / WARMUP_DIVISOR {
        op()?;
    }
    let (started, cpu_started, children_started) = (Instant::now(), thread_cpu_ns()?, children_cpu_ns());
    for _ in 0..n {
        op()?;
    }
    let wall = started.elapsed().as_nanos() as f64;
    let cpu = (thread_cpu_ns()? - cpu_started + children_cpu_ns() - children_started) as f64;
    Ok(format!("ns_per_op {:.1} cpu_ns_per_op {:.1}", wall / n as f64, cpu / n as f64))
}

/// User and system time of the children reaped so far.
fn children_cpu_ns() -> u64 {
    // SAFETY: all-zero is a valid rusage, which getrusage fills in.
    let mut usage: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: a valid `who` and an rusage to write.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let ns = |time: libc::timeval| time.tv_sec as u64 * 1_000_000_000 + time.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// One fork, exec of `/bin/true` and wait.
fn spawn_true() -> io::Result<()> {
    let status = std::process::Command::new("/bin/true").status()?;
    if status.success() { Ok(()) } else { Err(io::Error::other(format!("/bin/true: {status}"))) }
}

fn thread_cpu_ns() -> io::Result<u64> {
    // SAFETY: all-zero is a valid timespec, which clock_gettime fills in.
    let mut now: libc::timespec = unsafe { mem::zeroed() };
    // SAFETY: a valid clock id and a timespec to write.
    check(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) })?;
    Ok(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

/// Calls `op` until stdin reaches its end; returns how many times.
fn until_stdin_closes(mut op: impl FnMut() -> io::Result<()>) -> io::Result<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = Arc::clone(&stop);
    thread::spawn(move || {
        let _ = io::stdin().lock().read_to_end(&mut Vec::new());
        stopper.store(true, Ordering::Relaxed);
    });
    let mut calls = 0;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..STOP_CHECK_EVERY {
            op()?;
        }
        calls += STOP_CHECK_EVERY;
    }
    Ok(calls)
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn open_close(file: &CString) -> io::Result<()> {
    // SAFETY: a NUL-terminated path; the descriptor is closed at once.
    let fd = check(unsafe { libc::open(file.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: closing the descriptor just opened.
    check(unsafe { libc::close(fd) }).map(drop)
}

/// A loopback listener that accepts and drops connections on a thread of its own.
struct Server {
    address: libc::sockaddr_in,
}

impl Server {
    fn start() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        // std listens with a backlog of 128: whenever the accepting thread is not scheduled for
        // a couple of milliseconds, the queue overflows and a connect waits for a SYN retransmit.
        // SAFETY: listen again on a socket this process owns, only to enlarge its backlog.
        check(unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) })?;
        let port = listener.local_addr()?.port();
        thread::spawn(move || {
            for connection in listener.incoming() {
                drop(connection);
            }
        });
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut address: libc::sockaddr_in = unsafe { mem::zeroed() };
        address.sin_family = libc::AF_INET as libc::sa_family_t;
        address.sin_port = port.to_be();
        address.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        Ok(Self { address })
    }

    /// One connect and close. Linger 0 makes the close a reset, so that no TIME_WAIT socket
    /// is left behind to exhaust the ephemeral ports over a long run.
    fn connect_close(&self) -> io::Result<()> {
        // SAFETY: plain socket syscalls on a descriptor owned here and closed before returning;
        // the option and address structs outlive the calls that read them.
        unsafe {
            let fd = check(libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
            ))?;
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            let connected = check(libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                mem::size_of::<libc::linger>() as libc::socklen_t,
            ))
            .and_then(|_| {
                check(libc::connect(
                    fd,
                    (&raw const self.address).cast(),
                    mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ))
            });
            libc::close(fd);
            connected.map(drop)
        }
    }
}

/// Forks `n` children that sleep on a pipe, says `spawned N`, and when stdin closes lets them
/// exit and reaps them.
fn spawn_idle(n: u64) -> io::Result<()> {
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    check(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let [read_end, write_end] = pipe;
    for _ in 0..n {
        // SAFETY: this process is single-threaded here, and the child calls only
        // async-signal-safe functions before `_exit`.
        match check(unsafe { libc::fork() })? {
            0 => unsafe {
                libc::close(write_end);
                let mut byte = 0u8;
                // Returns at end of file: when the parent closes the write end.
                libc::read(read_end, (&raw mut byte).cast(), 1);
                libc::_exit(0);
            },
            _child => {}
        }
    }
    say(&format!("spawned {n}"))?;
    io::stdin().lock().read_to_end(&mut Vec::new())?;
    // SAFETY: closing our own write end wakes every child; then reap them all.
    unsafe {
        libc::close(write_end);
        while libc::wait(std::ptr::null_mut()) > 0 {}
    }
    Ok(())
}
