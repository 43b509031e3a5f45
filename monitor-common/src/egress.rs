//! The egress proxy's kernel side: where the cgroup connect hooks send a proxied task's HTTP(S)
//! connects, and what they record of each connection so that the proxy learns from the kernel,
//! never from the client, which process made it and where it was going.

/// `EGRESS_PROXY[0]`: where the proxy listens, in the byte order of `bpf_sock_addr`'s
/// `user_ip4`, `user_ip6` and `user_port` fields (network order). `enabled` 0: no proxy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Proxy {
    pub ip4: u32,
    /// All zero when the proxy has no IPv6 listener: a proxied task's IPv6 HTTP(S) connects are
    /// then refused rather than left unseen.
    pub ip6: [u32; 4],
    /// Network order in the low 16 bits.
    pub port: u32,
    pub enabled: u32,
}

/// `EGRESS_TASKS` value: the task's connects go through the proxy.
pub const PROXIED: u32 = 1;

/// Words of `EGRESS_PORTS`, a bit per destination port redirected to the proxy.
pub const PORT_WORDS: u32 = 65536 / 64;

/// Slots of the destination port's bit in `EGRESS_PORTS`.
pub const fn port_bit(port: u16) -> (u32, u64) {
    ((port / 64) as u32, 1 << (port % 64))
}

/// `EGRESS_COOKIES` value (by the client socket's cookie, at the connect) and `EGRESS_PEERS`
/// value (by [`peer_key`], once the connection is established and its local port known).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub tgid: u32,
    /// The kernel handle of the process's task.
    pub task: u32,
    /// `AF_INET` or `AF_INET6` of the original destination.
    pub family: u32,
    /// The original destination's port, network order in the low 16 bits.
    pub port: u32,
    /// The original destination, network order; IPv4 in the first word.
    pub address: [u32; 4],
    /// 1: the kernel redirected the connect here; 0: the process connected to the proxy itself.
    pub redirected: u32,
    pub _pad: u32,
}

/// `EGRESS_PEERS` key of a connection to the proxy: the client's address and port as the proxy
/// sees its peer. The whole address, not the port alone: another process could bind the same
/// port on another loopback address and be taken for this one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerKey {
    /// 1 for IPv6 (not v4-mapped), 0 for IPv4.
    pub ipv6: u32,
    /// Host order.
    pub port: u32,
    /// Network order; IPv4 in the first word.
    pub address: [u32; 4],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` of plain integers, no padding left implicit.
    unsafe impl aya::Pod for super::Proxy {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Origin {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PeerKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_have_one_bit_each() {
        assert_eq!(port_bit(0), (0, 1));
        assert_eq!(port_bit(443), (6, 1 << 59));
        assert_eq!(port_bit(65535), (PORT_WORDS - 1, 1 << 63));
    }
}
