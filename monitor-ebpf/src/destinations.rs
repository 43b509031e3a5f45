//! Where secret holders connect: the per-task allowlist and the report, shared by the LSM
//! tier's `socket_connect` hook and the cgroup socket-address hooks (`sockets.rs`).

use aya_ebpf::maps::lpm_trie::Key;
use monitor_common::{
    event::{
        connect::{ConnectBody, SOCKADDR_LEN},
        EventKind,
    },
    maps::{DestinationKey, DESTINATION_TASK_BITS},
};

use crate::{
    emit::reserve_decided,
    maps::{ALLOWED_DESTINATIONS, TASK_OF},
};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Whether the task of `tgid` may reach the address in `sockaddr` (a `sockaddr_in` or
/// `sockaddr_in6`, by `family`): yes for a process in no task or a task without an allowlist (no
/// entry of its own in the trie).
#[inline(always)]
pub fn allowed_destination(tgid: u32, family: u16, sockaddr: &[u8; SOCKADDR_LEN]) -> bool {
    // SAFETY: plain value copied out.
    let Some(task) = unsafe { TASK_OF.get(&tgid) }.copied() else {
        return true;
    };
    let port = u16::from_be_bytes([sockaddr[2], sockaddr[3]]);
    let mut address = [0u8; 16];
    if family == AF_INET {
        address[10] = 0xff;
        address[11] = 0xff;
        address[12..16].copy_from_slice(&sockaddr[4..8]);
    } else {
        address.copy_from_slice(&sockaddr[8..24]);
    }
    let key = Key::new(DESTINATION_TASK_BITS + 128, DestinationKey { task: task.to_be_bytes(), address });
    match ALLOWED_DESTINATIONS.get(&key) {
        Some(ports) => ports.allows(port),
        None => true,
    }
}

/// Reports a holder's connect or send through `syscall` to `sockaddr`; `action` is one of
/// `kernel_action`.
#[inline(always)]
pub fn report_connect(syscall: u32, sockaddr: &[u8; SOCKADDR_LEN], address_len: u32, action: u32) {
    let Some(mut entry) = reserve_decided::<ConnectBody>(EventKind::Connect, action) else {
        return;
    };
    // SAFETY: reserved record of the right size; every field is written before submit.
    unsafe {
        (&raw mut (*entry.as_mut_ptr()).body).write(ConnectBody {
            syscall,
            addr_len: address_len,
            addr: *sockaddr,
            action,
        });
    }
    entry.submit(0);
}
