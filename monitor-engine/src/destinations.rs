//! Where a task may connect: a network in CIDR notation and an optional port.
//!
//! Written `10.0.0.0/8:443`, `192.0.2.7`, `[2001:db8::/32]:443` or `2001:db8::1`. Host names are
//! resolved by the daemon before they reach the engine, which only compares addresses.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The network address, host bits cleared.
    network: IpAddr,
    prefix_len: u8,
    /// `None` allows every port.
    port: Option<u16>,
}

impl Destination {
    /// The network address, host bits cleared.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// `None` allows every port.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    pub fn matches(&self, address: SocketAddr) -> bool {
        if self.port.is_some_and(|port| port != address.port()) {
            return false;
        }
        // A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d; compare it as IPv4.
        match (self.network, address.ip().to_canonical()) {
            (network @ IpAddr::V4(_), ip @ IpAddr::V4(_)) | (network @ IpAddr::V6(_), ip @ IpAddr::V6(_)) => {
                masked(ip, self.prefix_len) == network
            }
            (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

fn masked(address: IpAddr, prefix_len: u8) -> IpAddr {
    match address {
        IpAddr::V4(ip) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(ip) & mask))
        }
        IpAddr::V6(ip) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(ip) & mask))
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("{text:?} is not an IP address or a network in CIDR notation")]
    Address { text: String },
    #[error("{text:?}: the prefix length must be a number from 0 to {max}")]
    PrefixLength { text: String, max: u8 },
    #[error("{text:?}: the port must be a number from 1 to 65535")]
    Port { text: String },
    #[error("{text:?}: an IPv6 address with a port is written [ADDRESS]:PORT")]
    Brackets { text: String },
}

impl FromStr for Destination {
    type Err = DestinationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (network, port) = split_port(text)?;
        let (address, prefix_len) = match network.split_once('/') {
            Some((address, prefix_len)) => (address, Some(prefix_len)),
            None => (network, None),
        };
        let address: IpAddr = address.parse().map_err(|_| DestinationError::Address { text: text.to_owned() })?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_len {
            None => max,
            Some(prefix_len) => prefix_len
                .parse::<u8>()
                .ok()
                .filter(|&prefix_len| prefix_len <= max)
                .ok_or_else(|| DestinationError::PrefixLength { text: text.to_owned(), max })?,
        };
        Ok(Self { network: masked(address, prefix_len), prefix_len, port })
    }
}

/// Splits `NETWORK:PORT` or `[NETWORK]:PORT`; a bare IPv6 network has several colons and no port.
fn split_port(text: &str) -> Result<(&str, Option<u16>), DestinationError> {
    let parse_port = |port: &str| {
        port.parse::<u16>()
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| DestinationError::Port { text: text.to_owned() })
    };
    if let Some(rest) = text.strip_prefix('[') {
        let brackets = || DestinationError::Brackets { text: text.to_owned() };
        let (network, after) = rest.split_once(']').ok_or_else(brackets)?;
        let port = match after {
            "" => None,
            after => Some(parse_port(after.strip_prefix(':').ok_or_else(brackets)?)?),
        };
        return Ok((network, port));
    }
    match text.split_once(':') {
        Some((network, port)) if !port.contains(':') => Ok((network, Some(parse_port(port)?))),
        _ => Ok((text, None)),
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { network, prefix_len, port } = self;
        match (network, port) {
            (IpAddr::V4(_), None) | (IpAddr::V6(_), None) => write!(f, "{network}/{prefix_len}"),
            (IpAddr::V4(_), Some(port)) => write!(f, "{network}/{prefix_len}:{port}"),
            (IpAddr::V6(_), Some(port)) => write!(f, "[{network}/{prefix_len}]:{port}"),
        }
    }
}

impl Serialize for Destination {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(text: &str) -> Destination {
        text.parse().unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    fn address(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_match_addresses_inside_them() {
        let private = destination("10.0.0.0/8:443");
        assert!(private.matches(address("10.200.1.2:443")));
        assert!(!private.matches(address("10.200.1.2:80")));
        assert!(!private.matches(address("11.0.0.1:443")));

        let host = destination("192.0.2.7");
        assert!(host.matches(address("192.0.2.7:22")));
        assert!(!host.matches(address("192.0.2.8:22")));

        let everywhere = destination("0.0.0.0/0");
        assert!(everywhere.matches(address("203.0.113.9:53")));
        assert!(!everywhere.matches(address("[2001:db8::1]:53")));
    }

    #[test]
    fn ipv6_networks_and_mapped_ipv4_peers() {
        let documentation = destination("[2001:db8::/32]:443");
        assert!(documentation.matches(address("[2001:db8:1::5]:443")));
        assert!(!documentation.matches(address("[2001:db9::5]:443")));
        assert!(destination("2001:db8::1").matches(address("[2001:db8::1]:8080")));
        assert!(destination("10.0.0.0/8").matches(address("[::ffff:10.1.2.3]:443")));
    }

    #[test]
    fn host_bits_are_cleared_and_text_round_trips() {
        assert_eq!(destination("10.1.2.3/8:443").to_string(), "10.0.0.0/8:443");
        for text in ["192.0.2.7/32", "10.0.0.0/8:443", "[2001:db8::/32]:443", "2001:db8::/32"] {
            assert_eq!(destination(text).to_string(), text);
            let json = serde_json::to_string(&destination(text)).unwrap();
            assert_eq!(serde_json::from_str::<Destination>(&json).unwrap(), destination(text));
        }
    }

    #[test]
    fn bad_destinations_say_what_is_wrong() {
        let error = |text: &str| text.parse::<Destination>().unwrap_err();
        assert!(matches!(error("example.com:443"), DestinationError::Address { .. }));
        assert!(matches!(error("10.0.0.0/33"), DestinationError::PrefixLength { max: 32, .. }));
        assert!(matches!(error("10.0.0.1:0"), DestinationError::Port { .. }));
        assert!(matches!(error("10.0.0.1:https"), DestinationError::Port { .. }));
        assert!(matches!(error("[2001:db8::1443"), DestinationError::Brackets { .. }));
        assert_eq!(error("10.0.0.0/x").to_string(), "\"10.0.0.0/x\": the prefix length must be a number from 0 to 32");
    }
}
