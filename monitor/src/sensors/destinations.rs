//! A task's allowed destinations as the `ALLOWED_DESTINATIONS` LPM trie holds them, for the LSM
//! tier's `socket_connect` hook.
//!
//! The trie answers with the longest matching prefix only, while an address is allowed when any
//! listed network holds it. So every entry carries the ports of the networks of the same family
//! that contain it, and each family gets a default entry that allows nothing: the task alone
//! (prefix 32) for IPv6, `::ffff:0:0/96` for IPv4. The latter also keeps an IPv6 network such as
//! `::/0` from matching IPv4 peers, as the engine's `Destination::matches` does.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use monitor_common::maps::{AllowedPorts, DestinationKey, DESTINATION_TASK_BITS, MAX_PORTS};

/// An allowed network and port (the parts of the engine's `Destination`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowedNetwork {
    pub network: IpAddr,
    pub prefix_len: u8,
    /// `None`: every port.
    pub port: Option<u16>,
}

/// One trie entry: prefix length in bits (task included), key data, ports.
pub type TrieEntry = (u32, DestinationKey, AllowedPorts);

/// The IPv4-mapped IPv6 range, where IPv4 networks live in the trie.
const MAPPED_V4_BITS: u32 = 96;

/// The trie entries for task handle `task` allowed to reach `allowed`, and whether a network had
/// more ports than an entry holds (it then allows every port).
pub fn entries(task: u32, allowed: &[AllowedNetwork]) -> (Vec<TrieEntry>, bool) {
    // (address bits, address) → ports (None: any), per family; the defaults first.
    let mut v4: BTreeMap<(u32, u128), Option<Vec<u16>>> = BTreeMap::new();
    let mut v6: BTreeMap<(u32, u128), Option<Vec<u16>>> = BTreeMap::new();
    v4.insert((MAPPED_V4_BITS, mapped(0)), Some(Vec::new()));
    v6.insert((0, 0), Some(Vec::new()));
    for &AllowedNetwork { network, prefix_len, port } in allowed {
        let (family, bits, address) = match network {
            IpAddr::V4(ip) => (&mut v4, MAPPED_V4_BITS + u32::from(prefix_len), mapped(u32::from(ip))),
            IpAddr::V6(ip) => {
                let address = u128::from(ip);
                // The engine compares an IPv4-mapped peer as IPv4, so such a network never matches.
                if address >> 32 == 0xffff {
                    continue;
                }
                (&mut v6, u32::from(prefix_len), address)
            }
        };
        let slot = family.entry((bits, masked(address, bits))).or_insert_with(|| Some(Vec::new()));
        match port {
            None => *slot = None,
            Some(port) => {
                if let Some(ports) = slot {
                    ports.push(port);
                }
            }
        }
    }
    let mut too_many_ports = false;
    let mut out = Vec::new();
    for family in [&v4, &v6] {
        for (&(bits, address), _) in family.iter() {
            let mut ports = Some(Vec::new());
            for (&(outer_bits, outer), outer_ports) in family.iter() {
                if outer_bits > bits || masked(address, outer_bits) != outer {
                    continue;
                }
                match outer_ports {
                    None => ports = None,
                    Some(more) => {
                        if let Some(ports) = &mut ports {
                            ports.extend(more);
                        }
                    }
                }
            }
            let value = match ports {
                None => AllowedPorts { any_port: 1, count: 0, ports: [0; MAX_PORTS] },
                Some(mut ports) => {
                    ports.sort_unstable();
                    ports.dedup();
                    if ports.len() > MAX_PORTS {
                        too_many_ports = true;
                        AllowedPorts { any_port: 1, count: 0, ports: [0; MAX_PORTS] }
                    } else {
                        let mut slots = [0; MAX_PORTS];
                        slots[..ports.len()].copy_from_slice(&ports);
                        AllowedPorts { any_port: 0, count: ports.len() as u32, ports: slots }
                    }
                }
            };
            let key = DestinationKey { task: task.to_be_bytes(), address: address.to_be_bytes() };
            out.push((DESTINATION_TASK_BITS + bits, key, value));
        }
    }
    (out, too_many_ports)
}

fn mapped(ipv4: u32) -> u128 {
    u128::from(Ipv4Addr::from(ipv4).to_ipv6_mapped())
}

/// `address` with only its first `bits` bits kept.
fn masked(address: u128, bits: u32) -> u128 {
    address & u128::MAX.checked_shl(128 - bits).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(text: &str) -> AllowedNetwork {
        let destination: crate::engine::Destination = text.parse().unwrap_or_else(|error| panic!("{error}"));
        AllowedNetwork { network: destination.network(), prefix_len: destination.prefix_len(), port: destination.port() }
    }

    /// What the kernel's lookup answers for `address:port` of task 7: the longest matching entry.
    fn allows(entries: &[TrieEntry], address: IpAddr, port: u16) -> bool {
        let address = match address {
            IpAddr::V4(ip) => mapped(u32::from(ip)),
            IpAddr::V6(ip) => u128::from(ip),
        };
        let best = entries
            .iter()
            .filter(|(bits, key, _)| {
                key.task == 7u32.to_be_bytes()
                    && masked(address, bits - DESTINATION_TASK_BITS) == u128::from_be_bytes(key.address)
            })
            .max_by_key(|(bits, _, _)| *bits);
        best.is_none_or(|(_, _, ports)| ports.allows(port))
    }

    #[test]
    fn the_trie_allows_what_any_listed_network_allows() {
        let list = [network("10.0.0.0/8:443"), network("10.1.0.0/16:80"), network("192.0.2.7/32"), network("[2001:db8::/32]:22")];
        let (trie, too_many) = entries(7, &list);
        assert!(!too_many);
        let entries = trie;
        let at = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(allows(&entries, at("10.200.0.1"), 443));
        assert!(!allows(&entries, at("10.200.0.1"), 80));
        assert!(allows(&entries, at("10.1.2.3"), 80));
        assert!(allows(&entries, at("10.1.2.3"), 443), "the /8's port holds inside the /16");
        assert!(allows(&entries, at("192.0.2.7"), 5432));
        assert!(!allows(&entries, at("192.0.2.8"), 443));
        assert!(allows(&entries, at("2001:db8::1"), 22));
        assert!(!allows(&entries, at("2001:db9::1"), 22));
        assert!(!allows(&entries, at("::ffff:10.0.0.1"), 80));
    }

    #[test]
    fn an_empty_list_refuses_everything_and_v6_everywhere_is_not_v4() {
        let at = |text: &str| text.parse::<IpAddr>().unwrap();
        let (nowhere, _) = entries(7, &[]);
        assert!(!allows(&nowhere, at("127.0.0.1"), 80));
        assert!(!allows(&nowhere, at("::1"), 80));
        let (v6_everywhere, _) = entries(7, &[network("::/0")]);
        assert!(allows(&v6_everywhere, at("2001:db8::1"), 80));
        assert!(!allows(&v6_everywhere, at("127.0.0.1"), 80), "the engine does not match IPv4 peers against ::/0");
        let (v4_everywhere, _) = entries(7, &[network("0.0.0.0/0")]);
        assert!(allows(&v4_everywhere, at("127.0.0.1"), 80));
        assert!(!allows(&v4_everywhere, at("::1"), 80));
    }

    #[test]
    fn too_many_ports_on_one_network_allow_any_port() {
        let list: Vec<_> = (1..=17).map(|port| network(&format!("127.0.0.1/32:{port}"))).collect();
        let (trie, too_many) = entries(7, &list);
        assert!(too_many);
        assert!(allows(&trie, "127.0.0.1".parse().unwrap(), 9999));
    }
}
