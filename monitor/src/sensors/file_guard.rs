//! Secret files guarded by fanotify permission events, on the base tier (no BPF LSM to refuse).
//!
//! Needs Linux 5.1+ (`FAN_OPEN_EXEC_PERM`; `FAN_REPORT_PIDFD` is used from 5.15 where offered),
//! `CONFIG_FANOTIFY_ACCESS_PERMISSIONS` and `CAP_SYS_ADMIN`. Every watched inode carries an inode
//! mark for `FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM | FAN_ACCESS_PERM`: each open of it, by any route
//! (open syscalls, io_uring, `open_by_handle_at`, exec), and each read through any fd (one opened
//! before the binding, inherited, passed over a socket; `read`, `sendfile`, `splice`, io_uring)
//! waits in the kernel until the guard answers. Opens of unmarked files never reach it. `mmap` of
//! an fd opened earlier is not seen (no permission event covers it here).
//!
//! The decision is made on a thread of its own from the kernel's maps, with the functions every
//! eBPF program uses ([`policy::caller`], [`policy::kills`]), never waiting on the engine: a
//! refused use gets EPERM, and the process lives where the rule only denies; where it kills
//! (`kill_process`, `kill_task`), the opener is killed while its open still waits, so it never
//! returns. The use is then reported to the engine as an event, like the kernel's.
//!
//! If the daemon dies, the kernel drops its marks with the fanotify group and lets waiting opens
//! through: protection fails open, as every sensor's does when its programs are detached. If the
//! decision thread stalls (it never waits on the engine, but it reads `/proc`), a watchdog refuses
//! any use that waited longer than [`ANSWER_DEADLINE`], so no open hangs for ever; answers given
//! by the watchdog are counted.

use std::{
    collections::HashMap as StdHashMap,
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, MapData};
use monitor_common::{
    maps::{enforce, fail_closed, policy, GranteeKey, InodeKey, WatchedInode, UNKNOWN_TASK},
    syscalls,
};
use tokio::sync::mpsc;

use super::{
    decode::{kernel_dev, open_syscall},
    named_path::NamedPaths,
    syscall_hooks::SyscallHooks,
};
use crate::{
    clock,
    event::{Event, EventKind, ExecId, InodeId, KernelAction, OpenSyscall, SecretId, SecretOpen},
    procfs,
};

/// What the marks ask the kernel to wait on.
const MASK: u64 = libc::FAN_OPEN_PERM | libc::FAN_OPEN_EXEC_PERM | libc::FAN_ACCESS_PERM;
/// How long a use may wait for its answer before the watchdog refuses it.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(2);
/// Reports waiting for the daemon; beyond this they are dropped and counted.
const REPORT_QUEUE: usize = 4096;
/// fanotify's read buffer: many events per read.
const READ_BUFFER: usize = 16 << 10;

/// The guard's counters, for `status` and metrics.
#[derive(Debug, Default)]
pub struct GuardCounters {
    pub allowed: AtomicU64,
    pub refused: AtomicU64,
    /// Uses the watchdog refused because the decision took longer than [`ANSWER_DEADLINE`].
    pub late: AtomicU64,
    /// Reports the daemon's queue had no room for (the decision was still made).
    pub reports_dropped: AtomicU64,
    /// Events that could not be read or judged (unknown metadata version, unreadable inode):
    /// allowed, as the kernel would without the guard.
    pub unreadable: AtomicU64,
    /// Failed `HOLDERS` writes for allowed uses.
    pub holder_writes_failed: AtomicU64,
    /// Watched inodes the guard could not mark: left to the syscall tracepoints.
    pub marks_failed: AtomicU64,
}

impl GuardCounters {
    /// The counters as they are now, for `status`.
    pub fn snapshot(&self) -> serde_json::Value {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "allowed": load(&self.allowed),
            "refused": load(&self.refused),
            "late": load(&self.late),
            "reports_dropped": load(&self.reports_dropped),
            "unreadable": load(&self.unreadable),
            "holder_writes_failed": load(&self.holder_writes_failed),
            "marks_failed": load(&self.marks_failed),
        })
    }
}

/// The kernel maps the decision reads, through handles of the guard's own.
pub struct GuardMaps {
    pub watched: HashMap<MapData, InodeKey, WatchedInode>,
    pub task_of: HashMap<MapData, u32, u32>,
    pub finished_tasks: HashMap<MapData, u32, u32>,
    pub grantees: HashMap<MapData, GranteeKey, u32>,
    pub holders: HashMap<MapData, u32, u32>,
    pub enforce: Array<MapData, u32>,
    pub fail_closed: Array<MapData, u32>,
}

impl GuardMaps {
    fn enforced(&self, slot: u32) -> u32 {
        self.enforce.get(&slot, 0).unwrap_or(0)
    }
}

impl policy::Lookups for GuardMaps {
    fn task_of(&self, tgid: u32) -> Option<u32> {
        self.task_of.get(&tgid, 0).ok()
    }

    fn finished(&self, task: u32) -> bool {
        self.finished_tasks.get(&task, 0).is_ok()
    }

    fn grantee(&self, secret: u32, task: u32) -> bool {
        self.grantees.get(&GranteeKey { secret, task }, 0).is_ok()
    }

    fn files_policy(&self) -> u32 {
        self.enforced(enforce::FILES)
    }

    fn membership_failed(&self) -> bool {
        self.fail_closed.get(&fail_closed::MEMBERSHIP, 0).is_ok_and(|flag| flag != 0)
    }
}

/// The inode marks: one O_PATH handle per marked inode, through which it is unmarked.
pub struct Marks {
    fanotify: Arc<OwnedFd>,
    marked: StdHashMap<InodeId, OwnedFd>,
    counters: Arc<GuardCounters>,
}

impl Marks {
    /// Marks `inode`, found at `path`. Fails if `path` no longer names it.
    pub fn mark(&mut self, inode: InodeId, path: &Path) -> io::Result<()> {
        if self.marked.contains_key(&inode) {
            return Ok(());
        }
        let result = self.try_mark(inode, path);
        if result.is_err() {
            self.counters.marks_failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn try_mark(&mut self, inode: InodeId, path: &Path) -> io::Result<()> {
        let handle = std::fs::File::options().read(true).custom_flags(libc::O_PATH | libc::O_CLOEXEC).open(path)?;
        let metadata = handle.metadata()?;
        if (metadata.dev(), metadata.ino()) != (inode.dev, inode.ino) {
            return Err(io::Error::other(format!("{} is no longer the watched inode", path.display())));
        }
        let handle = OwnedFd::from(handle);
        fanotify_mark(&self.fanotify, libc::FAN_MARK_ADD, &handle)?;
        self.marked.insert(inode, handle);
        Ok(())
    }

    pub fn unmark(&mut self, inode: InodeId) {
        if let Some(handle) = self.marked.remove(&inode) {
            // ENOENT: the kernel already dropped the mark with the inode.
            if let Err(error) = fanotify_mark(&self.fanotify, libc::FAN_MARK_REMOVE, &handle) {
                if error.raw_os_error() != Some(libc::ENOENT) {
                    tracing::warn!(%error, ino = inode.ino, "cannot remove a file guard mark");
                }
            }
        }
    }

    pub fn is_marked(&self, inode: InodeId) -> bool {
        self.marked.contains_key(&inode)
    }
}

/// Adds or removes (`action`) the guard's mark on the inode `handle` (an O_PATH fd) refers to:
/// fanotify takes no O_PATH fd as its object, so the mark goes through its `/proc/self/fd` link.
fn fanotify_mark(fanotify: &OwnedFd, action: libc::c_uint, handle: &OwnedFd) -> io::Result<()> {
    let link = CString::new(format!("/proc/self/fd/{}", handle.as_raw_fd())).expect("no NUL in a number");
    // SAFETY: valid fds and a NUL-terminated path.
    let result = unsafe { libc::fanotify_mark(fanotify.as_raw_fd(), action, MASK, libc::AT_FDCWD, link.as_ptr()) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The running guard: its decision thread, its watchdog, and the reports for the engine.
pub struct FileGuard {
    reports: mpsc::Receiver<Event>,
    counters: Arc<GuardCounters>,
    stop: Arc<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
}

impl FileGuard {
    /// Starts the guard, or says why this kernel cannot have one. `daemon` is the daemon's own
    /// tgid, whose uses are allowed unjudged.
    /// `syscall_hooks` are attached before the guard records a holding, where holders need them.
    pub fn start(maps: GuardMaps, daemon: u32, syscall_hooks: SyscallHooks) -> io::Result<(Self, Marks)> {
        let fanotify = Arc::new(fanotify_init()?);
        // SAFETY: plain syscall; the fd is owned below.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if stop < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created, owned here.
        let stop = Arc::new(unsafe { OwnedFd::from_raw_fd(stop) });
        let counters = Arc::new(GuardCounters::default());
        let (sender, reports) = mpsc::channel(REPORT_QUEUE);
        let waiting = Arc::new(Mutex::new(None::<Waiting>));
        let decider = Decider {
            fanotify: fanotify.clone(),
            maps,
            daemon,
            syscall_hooks,
            paths: NamedPaths::start()?,
            reports: sender,
            counters: counters.clone(),
            waiting: waiting.clone(),
        };
        let decide_stop = stop.clone();
        let decision =
            std::thread::Builder::new().name("file-guard".into()).spawn(move || decider.run(&decide_stop))?;
        let watchdog = {
            let (fanotify, counters, stop) = (fanotify.clone(), counters.clone(), stop.clone());
            std::thread::Builder::new()
                .name("file-guard-watchdog".into())
                .spawn(move || watch(&fanotify, &waiting, &counters, &stop))?
        };
        let marks = Marks { fanotify, marked: StdHashMap::new(), counters: counters.clone() };
        Ok((Self { reports, counters, stop, threads: vec![decision, watchdog] }, marks))
    }

    /// Moves every report already made into `out`.
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        while let Ok(event) = self.reports.try_recv() {
            out.push(event);
        }
    }

    /// Waits for the next report.
    pub async fn next(&mut self) -> Option<Event> {
        self.reports.recv().await
    }

    pub fn counters(&self) -> &GuardCounters {
        &self.counters
    }
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes to an eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn fanotify_init() -> io::Result<OwnedFd> {
    let base = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_UNLIMITED_QUEUE;
    let flags = libc::O_RDONLY as libc::c_uint | libc::O_CLOEXEC as libc::c_uint | libc::O_LARGEFILE as libc::c_uint;
    // FAN_REPORT_PIDFD (Linux 5.15) where offered; the opener is then pinned by a pidfd.
    for init in [base | libc::FAN_REPORT_PIDFD, base] {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::fanotify_init(init, flags) };
        if fd >= 0 {
            // SAFETY: just created, owned here.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINVAL) {
            return Err(error);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EINVAL))
}

/// The use being decided, for the watchdog.
struct Waiting {
    fd: RawFd,
    since: Instant,
}

struct Decider {
    fanotify: Arc<OwnedFd>,
    maps: GuardMaps,
    daemon: u32,
    syscall_hooks: SyscallHooks,
    paths: NamedPaths,
    reports: mpsc::Sender<Event>,
    counters: Arc<GuardCounters>,
    waiting: Arc<Mutex<Option<Waiting>>>,
}

/// One permission event, as read.
struct Request {
    fd: OwnedFd,
    tgid: u32,
    mask: u64,
    pidfd: Option<OwnedFd>,
}

impl Decider {
    fn run(mut self, stop: &OwnedFd) {
        let mut buffer = vec![0u8; READ_BUFFER];
        loop {
            let mut fds = [
                libc::pollfd { fd: self.fanotify.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: two valid pollfds.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                continue; // EINTR
            }
            if fds[1].revents != 0 {
                return;
            }
            // SAFETY: reads into a buffer of the given length.
            let read = unsafe { libc::read(self.fanotify.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
            if read <= 0 {
                continue; // EAGAIN: another wake-up
            }
            let counters = self.counters.clone();
            for request in requests(&buffer[..read as usize], &counters) {
                self.decide(request);
            }
        }
    }

    fn decide(&mut self, request: Request) {
        if request.tgid == self.daemon {
            return self.answer(&request, true);
        }
        *self.waiting.lock().expect("not poisoned") =
            Some(Waiting { fd: request.fd.as_raw_fd(), since: Instant::now() });
        let Some((inode, watched)) = self.watched(&request.fd) else {
            // Unwatched since the mark was read, or unreadable: as if there were no guard.
            return self.answer(&request, true);
        };
        let (caller_task, caller) = policy::caller(&self.maps, request.tgid, watched);
        let judged =
            |slot| caller.is_some_and(|caller| policy::kills(self.maps.enforced(slot), watched.binding, caller));
        let refused = judged(enforce::FILES);
        // A process whose task could not be recorded (a full membership map) may be the owner's
        // own new one: refused, never killed.
        let killed = refused && judged(enforce::FILES_KILL) && caller_task != UNKNOWN_TASK;
        let opened = request.mask & (libc::FAN_OPEN_PERM | libc::FAN_OPEN_EXEC_PERM) != 0;
        // A read by a process that holds no secret came through an fd whose open was not judged
        // (opened before the watch, inherited, passed over a socket): a use of its own.
        let report = refused || opened || self.maps.holders.get(&request.tgid, 0).is_err();
        let action = match (refused, killed) {
            (_, true) => KernelAction::Killed,
            (true, false) => KernelAction::Denied,
            (false, _) => KernelAction::None,
        };
        let event = report.then(|| self.event(&request, inode, watched, caller_task, action, opened));
        if !refused {
            // What sees a holder's harvest is attached before it holds.
            let holders = &mut self.maps.holders;
            let (inserted, attached) = self.syscall_hooks.record_holding(|| holders.insert(request.tgid, 1, 0));
            if let Err((program, error)) = attached {
                tracing::warn!(program, %error, "cannot attach a program that watches secret holders");
            }
            if inserted.is_err() {
                self.counters.holder_writes_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Killed while its open or read still waits: it never sees a byte, nor returns.
        if killed {
            match &request.pidfd {
                Some(pidfd) => {
                    kill(pidfd); // fails only if the opener is already gone
                }
                // SAFETY: plain syscall; without a pidfd (before Linux 5.15) the pid is the
                // opener's, which waits for this answer.
                None => unsafe {
                    libc::kill(request.tgid as i32, libc::SIGKILL);
                },
            }
        }
        // Queued before the answer, so that the daemon's next drain finds the open by the time
        // the opener sees its result (unless the queue is full, which is counted): a caller that
        // waits on the opener and then asks the daemon finds it.
        if let Some(event) = event {
            if self.reports.try_send(event).is_err() {
                self.counters.reports_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.answer(&request, !refused);
    }

    /// The watched inode behind a permission event's fd.
    fn watched(&self, fd: &OwnedFd) -> Option<(InodeId, WatchedInode)> {
        // SAFETY: fstat into a zeroed struct.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd and a stat buffer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
            self.counters.unreadable.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let inode = InodeId { dev: stat.st_dev, ino: stat.st_ino };
        let key = InodeKey { dev: kernel_dev(inode.dev), _pad: 0, ino: inode.ino };
        self.maps.watched.get(&key, 0).ok().map(|watched| (inode, watched))
    }

    fn event(
        &mut self,
        request: &Request,
        inode: InodeId,
        watched: WatchedInode,
        caller_task: u32,
        kernel_action: KernelAction,
        opened: bool,
    ) -> Event {
        // The opener waits for the answer, so /proc still shows it; its pidfd tells a read of a
        // reused pid from one of the opener.
        let process = procfs::exec_id(request.tgid).filter(|_| request.pidfd.as_ref().is_none_or(is_alive));
        let (syscall, named) = waiting_in(request.tgid, &mut self.paths);
        let syscall = match syscall {
            _ if request.mask & libc::FAN_OPEN_EXEC_PERM != 0 => OpenSyscall::Exec,
            OpenSyscall::Other if !opened => OpenSyscall::Read,
            syscall => syscall,
        };
        let path = named.or_else(|| {
            std::fs::read_link(format!("/proc/self/fd/{}", request.fd.as_raw_fd()))
                .ok()
                .map(|path| path.to_string_lossy().into_owned())
        });
        Event {
            ktime_ns: clock::boottime_ns(),
            process: process.unwrap_or(ExecId { tgid: request.tgid, start_time: 0 }),
            thread: request.tgid,
            truncated: false,
            read_failed: process.is_none(),
            kind: EventKind::SecretOpen(SecretOpen {
                secret: SecretId(watched.secret),
                inode,
                syscall,
                path: path.unwrap_or_default(),
                resolved_path: String::new(),
                fd: -1,
                kernel_action,
                caller_task,
            }),
        }
    }

    fn answer(&self, request: &Request, allow: bool) {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        let answered_late = waiting.as_ref().is_some_and(|waiting| waiting.fd != request.fd.as_raw_fd());
        *waiting = None;
        if answered_late {
            return; // the watchdog refused it; the fd is closed when `request` drops
        }
        respond(&self.fanotify, request.fd.as_raw_fd(), allow);
        let counter = if allow { &self.counters.allowed } else { &self.counters.refused };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The syscall process `tgid` waits in (its main thread's, from `/proc/PID/syscall`) and, for an
/// open syscall, the path it named, as the tracepoints report them. A use by another thread, or by
/// an io_uring worker, shows as the main thread's syscall.
fn waiting_in(tgid: u32, paths: &mut NamedPaths) -> (OpenSyscall, Option<String>) {
    let Ok(line) = std::fs::read_to_string(format!("/proc/{tgid}/syscall")) else {
        return (OpenSyscall::Other, None);
    };
    let mut fields = line.split_whitespace();
    let Some(nr) = fields.next().and_then(|nr| nr.parse::<u32>().ok()) else {
        return (OpenSyscall::Other, None); // "running": not in a syscall
    };
    let args: Vec<u64> =
        fields.take(6).filter_map(|arg| u64::from_str_radix(arg.trim_start_matches("0x"), 16).ok()).collect();
    let path_arg = match nr {
        syscalls::OPEN | syscalls::CREAT => args.first(),
        syscalls::OPENAT | syscalls::OPENAT2 => args.get(1),
        _ => None,
    };
    (open_syscall(nr), path_arg.and_then(|&address| paths.read(tgid, address)))
}

/// Refuses a use that waited past the deadline, so that a stalled decision never hangs an open.
fn watch(fanotify: &OwnedFd, waiting: &Mutex<Option<Waiting>>, counters: &GuardCounters, stop: &OwnedFd) {
    loop {
        let mut fds = [libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, (ANSWER_DEADLINE.as_millis() / 4) as i32) } > 0 {
            return;
        }
        let mut waiting = waiting.lock().expect("not poisoned");
        if let Some(late) = waiting.as_ref().filter(|waiting| waiting.since.elapsed() > ANSWER_DEADLINE) {
            respond(fanotify, late.fd, false);
            counters.late.fetch_add(1, Ordering::Relaxed);
            // Marked answered: a different fd than any the decider holds.
            *waiting = Some(Waiting { fd: -1, since: Instant::now() });
        }
    }
}

fn respond(fanotify: &OwnedFd, fd: RawFd, allow: bool) {
    let response = libc::fanotify_response { fd, response: if allow { libc::FAN_ALLOW } else { libc::FAN_DENY } };
    // SAFETY: writes one response struct.
    let written = unsafe {
        libc::write(fanotify.as_raw_fd(), (&raw const response).cast(), size_of::<libc::fanotify_response>())
    };
    if written < 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot answer a file guard permission event");
    }
}

fn is_alive(pidfd: &OwnedFd) -> bool {
    send_signal(pidfd, 0)
}

fn kill(pidfd: &OwnedFd) -> bool {
    send_signal(pidfd, libc::SIGKILL)
}

fn send_signal(pidfd: &OwnedFd, signal: i32) -> bool {
    // SAFETY: a valid pidfd, no siginfo.
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<u8>(), 0) == 0 }
}

/// The permission events in one read: each record's metadata, then its info records (the
/// pidfd's, with `FAN_REPORT_PIDFD`).
fn requests<'a>(mut buffer: &'a [u8], counters: &'a GuardCounters) -> impl Iterator<Item = Request> + 'a {
    std::iter::from_fn(move || loop {
        let metadata_len = size_of::<libc::fanotify_event_metadata>();
        if buffer.len() < metadata_len {
            return None;
        }
        // SAFETY: at least one metadata struct is left; read unaligned from the byte buffer.
        let metadata: libc::fanotify_event_metadata = unsafe { std::ptr::read_unaligned(buffer.as_ptr().cast()) };
        let event_len = (metadata.event_len as usize).clamp(metadata_len, buffer.len());
        let (record, rest) = buffer.split_at(event_len);
        buffer = rest;
        if metadata.vers != libc::FANOTIFY_METADATA_VERSION || metadata.fd < 0 {
            counters.unreadable.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // SAFETY: the kernel opened this fd for the guard, which now owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(metadata.fd) };
        let pidfd = pidfd_info(&record[metadata.metadata_len as usize..]);
        return Some(Request { fd, tgid: metadata.pid as u32, mask: metadata.mask, pidfd });
    })
}

fn pidfd_info(mut info: &[u8]) -> Option<OwnedFd> {
    let header_len = size_of::<libc::fanotify_event_info_header>();
    while info.len() >= header_len {
        // SAFETY: at least one header is left.
        let header: libc::fanotify_event_info_header = unsafe { std::ptr::read_unaligned(info.as_ptr().cast()) };
        let len = usize::from(header.len).clamp(header_len, info.len());
        if header.info_type == libc::FAN_EVENT_INFO_TYPE_PIDFD && len >= size_of::<libc::fanotify_event_info_pidfd>() {
            // SAFETY: a whole pidfd info record.
            let record: libc::fanotify_event_info_pidfd = unsafe { std::ptr::read_unaligned(info.as_ptr().cast()) };
            // SAFETY: the kernel opened this pidfd for the guard (negative: none).
            return (record.pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(record.pidfd) });
        }
        info = &info[len..];
    }
    None
}

/// Whether this kernel gives fanotify permission events to this process, for `doctor`: a group
/// of the guard's class with a permission mark on a file of `dir`.
pub fn probe(dir: &Path) -> io::Result<()> {
    let fanotify = fanotify_init()?;
    let file = dir.join(format!(".credwatch-fanotify-probe-{}", std::process::id()));
    std::fs::write(&file, b"")?;
    let handle = std::fs::File::options().read(true).custom_flags(libc::O_PATH | libc::O_CLOEXEC).open(&file);
    let _ = std::fs::remove_file(&file);
    fanotify_mark(&fanotify, libc::FAN_MARK_ADD, &OwnedFd::from(handle?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fd: i32, pid: i32, pidfd: Option<i32>) -> Vec<u8> {
        let info_len = pidfd.map_or(0, |_| size_of::<libc::fanotify_event_info_pidfd>());
        let metadata = libc::fanotify_event_metadata {
            event_len: (size_of::<libc::fanotify_event_metadata>() + info_len) as u32,
            vers: libc::FANOTIFY_METADATA_VERSION,
            reserved: 0,
            metadata_len: size_of::<libc::fanotify_event_metadata>() as u16,
            mask: libc::FAN_OPEN_PERM,
            fd,
            pid,
        };
        // SAFETY: a plain repr(C) struct viewed as bytes.
        let mut bytes = unsafe {
            std::slice::from_raw_parts((&raw const metadata).cast::<u8>(), size_of::<libc::fanotify_event_metadata>())
        }
        .to_vec();
        if let Some(pidfd) = pidfd {
            let info = libc::fanotify_event_info_pidfd {
                hdr: libc::fanotify_event_info_header {
                    info_type: libc::FAN_EVENT_INFO_TYPE_PIDFD,
                    pad: 0,
                    len: size_of::<libc::fanotify_event_info_pidfd>() as u16,
                },
                pidfd,
            };
            // SAFETY: as above.
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts((&raw const info).cast::<u8>(), size_of::<libc::fanotify_event_info_pidfd>())
            });
        }
        bytes
    }

    fn dup_null() -> i32 {
        // SAFETY: opens /dev/null; the fd is handed to the parser, which owns it.
        unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }
    }

    #[test]
    fn records_are_split_with_their_pidfds_and_bad_ones_counted() {
        let counters = GuardCounters::default();
        let mut buffer = record(dup_null(), 41, Some(dup_null()));
        buffer.extend(record(-1, 42, None)); // a queue overflow record: no fd
        buffer.extend(record(dup_null(), 43, None));
        buffer.extend_from_slice(&[0u8; 7]); // a cut record
        let requests: Vec<Request> = requests(&buffer, &counters).collect();
        assert_eq!(requests.iter().map(|request| request.tgid).collect::<Vec<_>>(), [41, 43]);
        assert!(requests[0].pidfd.is_some() && requests[1].pidfd.is_none());
        assert_eq!(counters.unreadable.load(Ordering::Relaxed), 1);
    }
}
