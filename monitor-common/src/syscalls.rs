//! Syscall numbers the sensors dispatch on or report (x86_64 ABI; other architectures are not
//! built yet).

pub const READ: u32 = 0;
pub const OPEN: u32 = 2;
pub const MMAP: u32 = 9;
pub const PREAD64: u32 = 17;
pub const READV: u32 = 19;
pub const SENDFILE: u32 = 40;
pub const SENDTO: u32 = 44;
pub const CONNECT: u32 = 42;
pub const SENDMSG: u32 = 46;
pub const EXECVE: u32 = 59;
pub const CREAT: u32 = 85;
pub const PTRACE: u32 = 101;
pub const OPENAT: u32 = 257;
pub const SPLICE: u32 = 275;
pub const PREADV: u32 = 295;
pub const OPEN_BY_HANDLE_AT: u32 = 304;
pub const PROCESS_VM_READV: u32 = 310;
pub const PROCESS_VM_WRITEV: u32 = 311;
pub const EXECVEAT: u32 = 322;
pub const COPY_FILE_RANGE: u32 = 326;
pub const PREADV2: u32 = 327;
pub const IO_URING_ENTER: u32 = 426;
pub const OPENAT2: u32 = 437;

/// `ptrace` requests that attach to a process.
pub const PTRACE_ATTACH: u64 = 16;
pub const PTRACE_SEIZE: u64 = 0x4206;

/// Whether `nr` returns a new fd for a path or handle: the tracepoint tier reports those opens
/// at syscall exit, with the fd.
pub const fn is_open(nr: u32) -> bool {
    matches!(nr, OPEN | CREAT | OPENAT | OPENAT2 | OPEN_BY_HANDLE_AT)
}
