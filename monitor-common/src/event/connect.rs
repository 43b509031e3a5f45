//! A connect or datagram send by a process that holds a secret: at `sys_enter` on the tracepoint
//! tier, in the `socket_connect` LSM hook (connects, io_uring's included) on the LSM tier.

/// Size of the copied socket address: `sizeof(struct sockaddr_in6)`.
pub const SOCKADDR_LEN: usize = 28;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectBody {
    /// Syscall number (x86_64 numbering).
    pub syscall: u32,
    /// The address length the caller passed.
    pub addr_len: u32,
    /// The caller's `struct sockaddr` bytes as passed (family, port and address in network order).
    pub addr: [u8; SOCKADDR_LEN],
    /// One of [`crate::event::kernel_action`]: `DENIED` when the LSM tier refused the connect.
    pub action: u32,
}
