//! Connects and datagram sends of secret holders, off the syscall path: cgroup socket-address
//! hooks at the cgroup v2 root, which every process on the host is under.
//!
//! `cgroup/connect4`, `cgroup/connect6` (Linux 4.17) and `cgroup/sendmsg4`, `cgroup/sendmsg6`
//! (Linux 4.18; UDP `sendto`/`sendmsg` with an address), `CONFIG_CGROUP_BPF`, cgroup v2 mounted
//! (alone, or beside v1 in hybrid mode). They run before any packet leaves, for io_uring's connects
//! too, and refuse with EPERM (return 0) a holder's destination outside its task's allowlist when
//! the unexpected_destination rule refuses. A process that holds no secret costs one `HOLDERS`
//! lookup per connect, after the egress routing of `egress.rs` (a proxied task's connects and
//! sends, one `TASK_OF` lookup for anyone else). The loader attaches all four where cgroup v2 is
//! mounted, on every tier (on the LSM and fmod_ret tiers the connect pair only routes:
//! `socket_connect` judges holders' connects there), and tells `sys_enter` (`SOCKET_HOOKS`) to
//! leave connects and sends to them.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::cgroup_sock_addr, programs::SockAddrContext};
use monitor_common::{
    event::{connect::SOCKADDR_LEN, kernel_action},
    maps::enforce,
    syscalls,
};

use crate::{
    destinations::{allowed_destination, report_connect, AF_INET, AF_INET6},
    egress::{self, Route},
    lsm,
    files::daemon_tgid,
    maps::{enforced, is_holder},
};

/// Set to 1 by the loader when these hooks are attached.
#[unsafe(no_mangle)]
static SOCKET_HOOKS: u32 = 0;

/// Whether the hooks here are attached: `sys_enter` then leaves connects and sends to them.
#[inline(always)]
pub fn active() -> bool {
    // SAFETY: reading a plain static set before load.
    unsafe { core::ptr::read_volatile(&raw const SOCKET_HOOKS) != 0 }
}

/// Return values of a socket-address hook.
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    judge(&ctx, AF_INET, syscalls::CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    judge(&ctx, AF_INET6, syscalls::CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    judge(&ctx, AF_INET, syscalls::SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    judge(&ctx, AF_INET6, syscalls::SENDMSG)
}

#[inline(always)]
fn judge(ctx: &SockAddrContext, family: u16, syscall: u32) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == daemon_tgid() {
        return ALLOW;
    }
    let connect = syscall == syscalls::CONNECT;
    let sockaddr = sockaddr(ctx, family);
    let length = if family == AF_INET { 16 } else { SOCKADDR_LEN as u32 };
    match egress::route(ctx, tgid, family, connect, || allowed_destination(tgid, family, &sockaddr)) {
        Route::Continue => {}
        Route::ToProxy => return ALLOW,
        Route::Refuse => {
            report_connect(syscall, &sockaddr, length, kernel_action::DENIED);
            return REFUSE;
        }
    }
    // On the security hooks' tiers the connect pair is here for the proxy only: `socket_connect`
    // judges holders' connects.
    if (connect && lsm::active()) || !is_holder(tgid) {
        return ALLOW;
    }
    let refused =
        enforced(enforce::CONNECT) != 0 && !allowed_destination(tgid, family, &sockaddr);
    report_connect(syscall, &sockaddr, length, if refused { kernel_action::DENIED } else { kernel_action::NONE });
    if refused {
        REFUSE
    } else {
        ALLOW
    }
}

/// The destination as a `sockaddr_in` or `sockaddr_in6`, as a connect's caller passed it. The
/// context's address and port fields hold network byte order in their first bytes.
#[inline(always)]
fn sockaddr(ctx: &SockAddrContext, family: u16) -> [u8; SOCKADDR_LEN] {
    let mut out = [0u8; SOCKADDR_LEN];
    out[0..2].copy_from_slice(&family.to_ne_bytes());
    // SAFETY: the context is the kernel's `bpf_sock_addr`; its fields are read with their own
    // width, as the verifier requires.
    unsafe {
        let addr = ctx.sock_addr;
        out[2..4].copy_from_slice(&((*addr).user_port as u16).to_ne_bytes());
        if family == AF_INET {
            out[4..8].copy_from_slice(&(*addr).user_ip4.to_ne_bytes());
        } else {
            out[8..12].copy_from_slice(&(*addr).user_ip6[0].to_ne_bytes());
            out[12..16].copy_from_slice(&(*addr).user_ip6[1].to_ne_bytes());
            out[16..20].copy_from_slice(&(*addr).user_ip6[2].to_ne_bytes());
            out[20..24].copy_from_slice(&(*addr).user_ip6[3].to_ne_bytes());
        }
    }
    out
}
