//! Syscall numbers the sensors dispatch on (x86_64 ABI; other architectures are not built yet).

pub const OPEN: u32 = 2;
pub const SENDTO: u32 = 44;
pub const CONNECT: u32 = 42;
pub const SENDMSG: u32 = 46;
pub const CREAT: u32 = 85;
pub const PTRACE: u32 = 101;
pub const OPENAT: u32 = 257;
pub const OPEN_BY_HANDLE_AT: u32 = 304;
pub const PROCESS_VM_READV: u32 = 310;
pub const OPENAT2: u32 = 437;

/// `ptrace` requests that attach to a process.
pub const PTRACE_ATTACH: u64 = 16;
pub const PTRACE_SEIZE: u64 = 0x4206;
