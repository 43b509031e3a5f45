//! The egress proxy's kernel maps (`monitor-ebpf/src/egress.rs`): where the proxy listens, which
//! tasks are proxied, which ports go to it, and who made each connection it accepts.

use std::net::{IpAddr, SocketAddr};

use aya::maps::{Array, HashMap, MapData, MapError};
use monitor_common::egress::{port_bit, Origin, PeerKey, Proxy, PORT_WORDS, PROXIED};

const AF_INET6: u32 = 10;

pub struct EgressMaps {
    pub(super) proxy: Array<MapData, Proxy>,
    pub(super) tasks: HashMap<MapData, u32, u32>,
    pub(super) ports: Array<MapData, u64>,
    /// An LRU hash in the kernel: plain hash operations work on it.
    pub(super) peers: HashMap<MapData, PeerKey, Origin>,
}

/// Who made a connection to the proxy, as the kernel recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub tgid: u32,
    pub task: u32,
    /// Where it was going when the kernel redirected it; `None` when it connected to the proxy.
    pub original: Option<SocketAddr>,
}

impl EgressMaps {
    /// Points the hooks at the proxy (`address`, and `address6` on IPv6 loopback) and sends the
    /// `ports` to it.
    pub fn configure(&mut self, address: SocketAddr, address6: Option<SocketAddr>, ports: &[u16]) -> Result<(), MapError> {
        let mut words = [0u64; PORT_WORDS as usize];
        for &port in ports {
            let (word, bit) = port_bit(port);
            words[word as usize] |= bit;
        }
        for (index, word) in words.iter().enumerate().filter(|(_, word)| **word != 0) {
            self.ports.set(index as u32, word, 0)?;
        }
        let ip4 = match address.ip() {
            IpAddr::V4(ip) => u32::from_ne_bytes(ip.octets()),
            IpAddr::V6(_) => 0,
        };
        let ip6 = match address6.map(|address| address.ip()) {
            Some(IpAddr::V6(ip)) => ip6_words(ip.octets()),
            _ => [0; 4],
        };
        let port = u32::from(address.port().to_be());
        self.proxy.set(0, Proxy { ip4, ip6, port, enabled: 1 }, 0)
    }

    /// Sends task `handle`'s connects through the proxy, for the rest of its processes' lives.
    pub fn proxy_task(&mut self, handle: u32) -> Result<(), MapError> {
        self.tasks.insert(handle, PROXIED, 0)
    }

    /// Who connected from `client` (the peer of an accepted connection); the entry is removed,
    /// so that a later connection from the same port is not taken for this one.
    pub fn take_peer(&mut self, client: SocketAddr) -> Option<Peer> {
        let key = match client.ip().to_canonical() {
            IpAddr::V4(ip) => PeerKey { ipv6: 0, port: u32::from(client.port()), address: [u32::from_ne_bytes(ip.octets()), 0, 0, 0] },
            IpAddr::V6(ip) => PeerKey { ipv6: 1, port: u32::from(client.port()), address: ip6_words(ip.octets()) },
        };
        let origin = self.peers.get(&key, 0).ok()?;
        let _ = self.peers.remove(&key);
        let original = (origin.redirected != 0).then(|| {
            let port = u16::from_be(origin.port as u16);
            let ip = if origin.family == AF_INET6 {
                IpAddr::from(origin.address.map(u32::to_ne_bytes).concat().try_into().unwrap_or([0u8; 16]))
            } else {
                IpAddr::from(origin.address[0].to_ne_bytes())
            };
            SocketAddr::new(ip, port)
        });
        Some(Peer { tgid: origin.tgid, task: origin.task, original })
    }
}

/// An IPv6 address as the kernel's four words in network order (`bpf_sock_addr::user_ip6`).
fn ip6_words(octets: [u8; 16]) -> [u32; 4] {
    std::array::from_fn(|word| u32::from_ne_bytes([octets[word * 4], octets[word * 4 + 1], octets[word * 4 + 2], octets[word * 4 + 3]]))
}
