//! Processes that make the raw syscalls no busybox applet makes (io_uring, openat2,
//! open_by_handle_at, sendfile, mmap, ptrace, process_vm_readv, connect), for the LSM-tier tests.
//!
//! Each is forked from the test process, optionally does something first (open a secret while it
//! is still unbound), then waits at a gate until the test has registered it as a task root, runs
//! its [`Op`] and reports every step's result: the syscall's return value, or `-errno`. The child
//! of a multi-threaded process may only make async-signal-safe calls, so every buffer is built
//! before the fork and the child makes raw syscalls only: no allocation, no panic, `_exit`.

use std::{
    ffi::CString,
    net::SocketAddrV4,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// How many results an op reports; unused ones are 0.
pub const RESULTS: usize = 6;

/// The fd an early open is moved to, so that its `/proc/self/fd` path is known before the fork.
const EARLY_FD: i32 = 100;

/// What the forked process does after the gate.
pub enum Op {
    /// `openat2(AT_FDCWD, path, {O_RDONLY})`, then `read`: `[openat2, read]`.
    Openat2(CString),
    /// `open_by_handle_at` of a handle the parent made with `name_to_handle_at`, relative to an
    /// fd on `mount_dir` opened before the gate; then `read`: `[open_by_handle_at, read]`.
    OpenByHandle { mount_dir: CString, handle: Vec<u8> },
    /// `open(O_PATH)` (allowed: it cannot read), then a reopen through `/proc/self/fd/N` and a
    /// `read`: `[o_path open, reopen, read]`.
    OpenPathThenReopen(CString),
    /// An io_uring `IORING_OP_OPENAT` submitted with `io_uring_enter`, then `read` of the fd it
    /// gave: `[io_uring_setup, cqe.res, read]`.
    IoUringOpenat(CString),
    /// Opens the file **before** the gate (while it is unbound), then reads it every way:
    /// `[read, pread, sendfile, mmap, /proc/self/fd reopen]`.
    EarlyFd(CString),
    /// Opens and reads the file (becoming a holder), then connects to each address in turn:
    /// `[open, read, connect 1, connect 2]`.
    HoldThenConnect { secret: CString, to: [SocketAddrV4; 2] },
    /// Opens and reads the file (becoming a holder), then sends one UDP datagram to each address
    /// in turn from an unconnected socket: `[open, read, sendto 1, sendto 2]`.
    HoldThenSendTo { secret: CString, to: [SocketAddrV4; 2] },
    /// Opens and reads the file (becoming a holder), reports, then sleeps until killed:
    /// `[open, read]`.
    HoldAndStay(CString),
    /// Reaches into process `pid`: `[open environ, read, open mem, ptrace attach,
    /// process_vm_readv]`.
    Harvest { pid: i32, environ: CString, mem: CString },
}

/// A forked process waiting at its gate.
pub struct Forked {
    pub pid: u32,
    gate: OwnedFd,
    results: OwnedFd,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
    // SAFETY: both fds were just created and are owned here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Forked {
    /// Forks a process that will run `op`; returns once it is at the gate (its early open done).
    pub fn spawn(op: Op) -> Self {
        let (gate_read, gate_write) = pipe();
        let (ready_read, ready_write) = pipe();
        let (results_read, results_write) = pipe();
        let proc_fd = CString::new(format!("/proc/self/fd/{EARLY_FD}")).unwrap();
        // SAFETY: the child only makes raw syscalls on memory prepared above, then `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: in the child; see `child`.
            unsafe { child(&op, &proc_fd, gate_read.as_raw_fd(), ready_write.as_raw_fd(), results_write.as_raw_fd()) }
        }
        drop((gate_read, ready_write, results_write));
        let mut byte = [0u8; 1];
        // SAFETY: reading one byte into a local buffer.
        let n = unsafe { libc::read(ready_read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        assert_eq!(n, 1, "the forked process died before its gate");
        Self { pid: pid as u32, gate: gate_write, results: results_read }
    }

    /// Opens the gate and returns the op's results (it may go on running: `HoldAndStay`).
    pub fn release(&self) -> [i64; RESULTS] {
        // SAFETY: writing one byte from a local buffer.
        assert_eq!(unsafe { libc::write(self.gate.as_raw_fd(), b"g".as_ptr().cast(), 1) }, 1, "gate");
        let mut results = [0i64; RESULTS];
        let len = std::mem::size_of_val(&results);
        // SAFETY: reading at most `len` bytes into `results`.
        let n = unsafe { libc::read(self.results.as_raw_fd(), results.as_mut_ptr().cast(), len) };
        assert_eq!(n, len as isize, "the forked process died before reporting (killed?)");
        results
    }

    /// Waits for it to exit; returns its wait status.
    pub fn wait(self) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
        status
    }

    pub fn kill(self) {
        // SAFETY: signalling our own child, then reaping it.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        self.wait();
    }
}

/// `-errno` of the last failed call.
unsafe fn errno() -> i64 {
    -i64::from(*libc::__errno_location())
}

unsafe fn ret(value: i64) -> i64 {
    if value < 0 {
        errno()
    } else {
        value
    }
}

/// Reads up to 64 bytes from `fd` (if it is one) into a buffer nobody looks at.
unsafe fn read_some(fd: i64) -> i64 {
    if fd < 0 {
        return 0;
    }
    let mut buf = [0u8; 64];
    ret(libc::read(fd as i32, buf.as_mut_ptr().cast(), buf.len()) as i64)
}

unsafe fn open(path: &CString, flags: i32) -> i64 {
    ret(i64::from(libc::open(path.as_ptr(), flags | libc::O_CLOEXEC)))
}

/// The forked side. Never returns.
unsafe fn child(op: &Op, proc_fd: &CString, gate: i32, ready: i32, results_fd: i32) -> ! {
    let mut results = [0i64; RESULTS];
    // Before the gate.
    let mut mount_fd = -1;
    match op {
        Op::EarlyFd(path) => {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
            if fd >= 0 {
                libc::dup2(fd, EARLY_FD);
                libc::close(fd);
            }
        }
        Op::OpenByHandle { mount_dir, .. } => mount_fd = libc::open(mount_dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY),
        _ => {}
    }
    let byte = [1u8];
    libc::write(ready, byte.as_ptr().cast(), 1);
    let mut gate_byte = [0u8];
    if libc::read(gate, gate_byte.as_mut_ptr().cast(), 1) != 1 {
        libc::_exit(2);
    }
    match op {
        Op::Openat2(path) => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let how = [libc::O_RDONLY as u64, 0, 0];
            results[0] = ret(libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, path.as_ptr(), how.as_ptr(), 24usize));
            results[1] = read_some(results[0]);
        }
        Op::OpenByHandle { handle, .. } => {
            results[0] = ret(i64::from(libc::syscall(libc::SYS_open_by_handle_at, mount_fd, handle.as_ptr(), libc::O_RDONLY) as i32));
            results[1] = read_some(results[0]);
        }
        Op::OpenPathThenReopen(path) => {
            let fd = libc::open(path.as_ptr(), libc::O_PATH);
            results[0] = ret(i64::from(fd));
            if fd >= 0 {
                libc::dup2(fd, EARLY_FD);
            }
            results[1] = open(proc_fd, libc::O_RDONLY);
            results[2] = read_some(results[1]);
        }
        Op::IoUringOpenat(path) => {
            let (setup, res) = io_uring_openat(path);
            results[0] = setup;
            results[1] = res;
            results[2] = read_some(res);
        }
        Op::EarlyFd(_) => {
            let mut buf = [0u8; 64];
            results[0] = ret(libc::read(EARLY_FD, buf.as_mut_ptr().cast(), buf.len()) as i64);
            results[1] = ret(libc::pread(EARLY_FD, buf.as_mut_ptr().cast(), buf.len(), 0) as i64);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            results[2] = ret(libc::sendfile(null, EARLY_FD, std::ptr::null_mut(), 64) as i64);
            let map = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE, EARLY_FD, 0);
            results[3] = if map == libc::MAP_FAILED { errno() } else { 0 };
            results[4] = open(proc_fd, libc::O_RDONLY);
        }
        Op::HoldThenConnect { secret, to } => {
            results[0] = open(secret, libc::O_RDONLY);
            results[1] = read_some(results[0]);
            results[2] = connect(&to[0]);
            results[3] = connect(&to[1]);
        }
        Op::HoldThenSendTo { secret, to } => {
            results[0] = open(secret, libc::O_RDONLY);
            results[1] = read_some(results[0]);
            results[2] = send_to(&to[0]);
            results[3] = send_to(&to[1]);
        }
        Op::HoldAndStay(path) => {
            results[0] = open(path, libc::O_RDONLY);
            results[1] = read_some(results[0]);
        }
        Op::Harvest { pid, environ, mem } => {
            results[0] = open(environ, libc::O_RDONLY);
            results[1] = read_some(results[0]);
            results[2] = open(mem, libc::O_RDONLY);
            results[3] = ret(libc::ptrace(libc::PTRACE_ATTACH, *pid, 0usize, 0usize));
            if results[3] == 0 {
                libc::ptrace(libc::PTRACE_DETACH, *pid, 0usize, 0usize);
            }
            let mut buf = [0u8; 8];
            let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let remote = libc::iovec { iov_base: 0x1000 as *mut libc::c_void, iov_len: buf.len() };
            results[4] = ret(libc::process_vm_readv(*pid, &local, 1, &remote, 1, 0) as i64);
        }
    }
    libc::write(results_fd, results.as_ptr().cast(), std::mem::size_of_val(&results));
    if let Op::HoldAndStay(_) = op {
        loop {
            libc::pause();
        }
    }
    libc::_exit(0)
}

unsafe fn connect(to: &SocketAddrV4) -> i64 {
    let socket = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
    if socket < 0 {
        return errno();
    }
    let address = sockaddr(to);
    let result = ret(i64::from(libc::connect(
        socket,
        (&raw const address).cast(),
        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
    )));
    libc::close(socket);
    result
}

/// One byte to `to` from a fresh unconnected UDP socket: the bytes sent, or `-errno`.
unsafe fn send_to(to: &SocketAddrV4) -> i64 {
    let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if socket < 0 {
        return errno();
    }
    let address = sockaddr(to);
    let result = ret(libc::sendto(
        socket,
        b"x".as_ptr().cast(),
        1,
        0,
        (&raw const address).cast(),
        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
    ) as i64);
    libc::close(socket);
    result
}

fn sockaddr(to: &SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*to.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

// io_uring, from <linux/io_uring.h>.
const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;
const IORING_OP_OPENAT: u8 = 18;
const IORING_ENTER_GETEVENTS: u32 = 1;

/// `struct io_uring_params` with its ring offsets, as `u32` words: 10 words of parameters, then
/// `io_sqring_offsets` (head, tail, ring_mask, ring_entries, flags, dropped, array, resv1, resv2
/// as two words) and `io_cqring_offsets` (head, tail, ring_mask, ring_entries, overflow, cqes,
/// flags, resv1, resv2).
#[repr(C)]
struct Params([u32; 30]);

const SQ_ENTRIES: usize = 0;
const CQ_ENTRIES: usize = 1;
const SQ_OFF: usize = 10;
const CQ_OFF: usize = 20;

/// Sets up a ring, submits one `IORING_OP_OPENAT` of `path` and waits for it: `(setup, res)`.
unsafe fn io_uring_openat(path: &CString) -> (i64, i64) {
    let mut params = Params([0; 30]);
    let ring = libc::syscall(libc::SYS_io_uring_setup, 4u32, &raw mut params) as i32;
    if ring < 0 {
        return (errno(), 0);
    }
    let p = &params.0;
    let sq_size = p[SQ_OFF + 6] as usize + p[SQ_ENTRIES] as usize * 4;
    let cq_size = p[CQ_OFF + 5] as usize + p[CQ_ENTRIES] as usize * 16;
    let map = |size: usize, offset: i64| {
        libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_POPULATE, ring, offset)
    };
    let sq = map(sq_size, IORING_OFF_SQ_RING).cast::<u8>();
    let cq = map(cq_size, IORING_OFF_CQ_RING).cast::<u8>();
    let sqes = map(64 * p[SQ_ENTRIES] as usize, IORING_OFF_SQES).cast::<u8>();
    if [sq, cq, sqes].iter().any(|&map| map.cast() == libc::MAP_FAILED) {
        return (errno(), 0);
    }
    // The request, in slot 0: opcode, fd = AT_FDCWD, addr = path, open_flags = O_RDONLY.
    std::ptr::write_bytes(sqes, 0, 64);
    sqes.write(IORING_OP_OPENAT);
    sqes.add(4).cast::<i32>().write(libc::AT_FDCWD);
    sqes.add(16).cast::<u64>().write(path.as_ptr() as u64);
    sqes.add(28).cast::<u32>().write(libc::O_RDONLY as u32);
    let tail = sq.add(p[SQ_OFF + 1] as usize).cast::<std::sync::atomic::AtomicU32>();
    let mask = sq.add(p[SQ_OFF + 2] as usize).cast::<u32>().read();
    let array = sq.add(p[SQ_OFF + 6] as usize).cast::<u32>();
    let at = (*tail).load(std::sync::atomic::Ordering::Acquire);
    array.add((at & mask) as usize).write(0);
    (*tail).store(at.wrapping_add(1), std::sync::atomic::Ordering::Release);
    let entered = libc::syscall(libc::SYS_io_uring_enter, ring, 1u32, 1u32, IORING_ENTER_GETEVENTS, 0usize, 0usize);
    if entered < 0 {
        return (errno(), 0);
    }
    let head = cq.add(p[CQ_OFF] as usize).cast::<u32>().read();
    let cq_mask = cq.add(p[CQ_OFF + 2] as usize).cast::<u32>().read();
    let cqe = cq.add(p[CQ_OFF + 5] as usize + (head & cq_mask) as usize * 16);
    (i64::from(ring), i64::from(cqe.add(8).cast::<i32>().read()))
}
