//! A proxied task's connects: HTTP(S) ports redirected to the daemon's egress proxy, the proxy's
//! own address let through, each recorded (who, where to) for the proxy to read back by the
//! client's port once the connection is established; UDP but DNS, and any other TCP destination
//! outside the task's allow list, refused with EPERM. Called first by the cgroup connect and
//! sendmsg hooks (`sockets.rs`); processes of other tasks, or of none, are left to them.

use aya_ebpf::{
    helpers::generated::bpf_get_socket_cookie,
    macros::{map, sock_ops},
    maps::{Array, HashMap, LruHashMap},
    programs::{SockAddrContext, SockOpsContext},
};
use monitor_common::egress::{port_bit, Origin, PeerKey, Proxy, PORT_WORDS, PROXIED};

use crate::{destinations::AF_INET, maps::TASK_OF};

#[map]
pub static EGRESS_PROXY: Array<Proxy> = Array::with_max_entries(1, 0);

/// Task handle → [`PROXIED`], for the tasks whose connects go through the proxy. Kept after a
/// task ends: its surviving processes still reach nothing but through the proxy.
#[map]
pub static EGRESS_TASKS: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

/// Destination ports sent to the proxy, one bit each.
#[map]
pub static EGRESS_PORTS: Array<u64> = Array::with_max_entries(PORT_WORDS, 0);

/// Connections to the proxy not yet established, by socket cookie.
#[map]
pub static EGRESS_COOKIES: LruHashMap<u64, Origin> = LruHashMap::with_max_entries(16384, 0);

/// Established connections to the proxy, by the client's address and port; the proxy removes
/// each entry when it accepts the connection.
#[map]
pub static EGRESS_PEERS: LruHashMap<PeerKey, Origin> = LruHashMap::with_max_entries(16384, 0);

/// What the hooks do about a proxied task's connect or send.
pub enum Route {
    /// Judged as anyone's (a process of no proxied task, DNS, a destination its allow list
    /// names): the caller's holder check follows.
    Continue,
    /// To the proxy, as asked or redirected.
    ToProxy,
    Refuse,
}

const SOCK_STREAM: u32 = 1;
const DNS_PORT: u16 = 53;
/// `BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB`: a connect completed; the local port is known.
const ACTIVE_ESTABLISHED: u32 = 4;

/// The route of a connect (`connect`) or a datagram send of `tgid` to the caller's destination
/// (`sockaddr` fields of `ctx`); `allowed` says whether the task's allow list covers it (true
/// for a task without one). UDP is refused but for DNS (QUIC would leave unread); TCP to a port
/// not sent to the proxy passes only where the allow list covers it.
#[inline(always)]
pub fn route(ctx: &SockAddrContext, tgid: u32, family: u16, connect: bool, allowed: impl Fn() -> bool) -> Route {
    // SAFETY: plain values copied out.
    let Some(task) = (unsafe { TASK_OF.get(&tgid) }).copied() else { return Route::Continue };
    if unsafe { EGRESS_TASKS.get(&task) }.copied() != Some(PROXIED) {
        return Route::Continue;
    }
    let Some(proxy) = EGRESS_PROXY.get(0).copied().filter(|proxy| proxy.enabled != 0) else { return Route::Continue };
    let ipv4 = family == AF_INET;
    // SAFETY: the context is the kernel's `bpf_sock_addr`, read with each field's own width and
    // only the fields of the hook's family, as the verifier requires.
    let (port_field, ip4, ip6, kind) = unsafe {
        let addr = ctx.sock_addr;
        let (ip4, ip6) = if ipv4 {
            ((*addr).user_ip4, [0; 4])
        } else {
            (0, [(*addr).user_ip6[0], (*addr).user_ip6[1], (*addr).user_ip6[2], (*addr).user_ip6[3]])
        };
        ((*addr).user_port, ip4, ip6, (*addr).type_)
    };
    let port = u16::from_be(port_field as u16);
    if !connect || kind != SOCK_STREAM {
        return if port == DNS_PORT { Route::Continue } else { Route::Refuse };
    }
    // A dual-stack socket reaches IPv4 as ::ffff:a.b.c.d, the proxy's IPv4 listener too.
    let mapped = !ipv4 && is_v4_mapped(ip6);
    let to_proxy = if ipv4 {
        ip4 == proxy.ip4
    } else if mapped {
        ip6[3] == proxy.ip4
    } else {
        ip6 == proxy.ip6
    };
    if port_field == proxy.port && to_proxy {
        record(ctx, tgid, task, family, port_field, ip4, ip6, 0);
        return Route::ToProxy;
    }
    if !redirected_port(port) {
        return if allowed() { Route::Continue } else { Route::Refuse };
    }
    if !ipv4 && !mapped && proxy.ip6 == [0; 4] {
        return Route::Refuse;
    }
    record(ctx, tgid, task, family, port_field, ip4, ip6, 1);
    // SAFETY: connect hooks may rewrite the destination; these fields are writable there.
    unsafe {
        let addr = ctx.sock_addr;
        if ipv4 {
            (*addr).user_ip4 = proxy.ip4;
        } else if mapped {
            (*addr).user_ip6[3] = proxy.ip4;
        } else {
            (*addr).user_ip6[0] = proxy.ip6[0];
            (*addr).user_ip6[1] = proxy.ip6[1];
            (*addr).user_ip6[2] = proxy.ip6[2];
            (*addr).user_ip6[3] = proxy.ip6[3];
        }
        (*addr).user_port = proxy.port;
    }
    Route::ToProxy
}

/// `::ffff:0:0/96`, in the words of `bpf_sock_addr::user_ip6` and `bpf_sock_ops::remote_ip6`.
#[inline(always)]
fn is_v4_mapped(ip6: [u32; 4]) -> bool {
    ip6[0] == 0 && ip6[1] == 0 && ip6[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

#[inline(always)]
fn redirected_port(port: u16) -> bool {
    let (word, bit) = port_bit(port);
    EGRESS_PORTS.get(word).is_some_and(|bits| bits & bit != 0)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn record(ctx: &SockAddrContext, tgid: u32, task: u32, family: u16, port: u32, ip4: u32, ip6: [u32; 4], redirected: u32) {
    let address = if family == AF_INET { [ip4, 0, 0, 0] } else { ip6 };
    let origin = Origin { tgid, task, family: u32::from(family), port, address, redirected, _pad: 0 };
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // A full map evicts its oldest entry: that connection's proxy then finds no origin and
    // closes it unread.
    let _ = EGRESS_COOKIES.insert(&cookie, &origin, 0);
}

/// Moves a connection's origin from its cookie to its local port once it is established, where
/// the proxy, which sees only its peer's address, can find it.
#[sock_ops]
pub fn egress_established(ctx: SockOpsContext) -> u32 {
    if ctx.op() != ACTIVE_ESTABLISHED {
        return 1;
    }
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    // SAFETY: plain value copied out.
    let Some(origin) = (unsafe { EGRESS_COOKIES.get(&cookie) }).copied() else { return 1 };
    // As the proxy sees its peer: a dual-stack client reaching the IPv4 listener is IPv4 there.
    let (ipv6, address) = if ctx.family() == u32::from(AF_INET) {
        (0, [ctx.local_ip4(), 0, 0, 0])
    } else {
        // SAFETY: the context is the kernel's `bpf_sock_ops`; each word is read on its own, at a
        // constant offset from the context, as the verifier requires.
        let (remote, local) = unsafe {
            let ops = ctx.ops;
            let word = |field: *const u32| core::ptr::read_volatile(field);
            (
                [word(&(*ops).remote_ip6[0]), word(&(*ops).remote_ip6[1]), word(&(*ops).remote_ip6[2]), word(&(*ops).remote_ip6[3])],
                [word(&(*ops).local_ip6[0]), word(&(*ops).local_ip6[1]), word(&(*ops).local_ip6[2]), word(&(*ops).local_ip6[3])],
            )
        };
        if is_v4_mapped(remote) {
            (0, [local[3], 0, 0, 0])
        } else {
            (1, local)
        }
    };
    let key = PeerKey { ipv6, port: ctx.local_port(), address };
    let _ = EGRESS_PEERS.insert(&key, &origin, 0);
    let _ = EGRESS_COOKIES.remove(&cookie);
    1
}
