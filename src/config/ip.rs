//! `preferred_ip_protocol`: the address family the probes that resolve a name try first, as
//! the blackbox exporter's probers name it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// An address family, as `preferred_ip_protocol` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpProtocol {
    /// IPv4.
    Ip4,
    /// IPv6: the blackbox exporter's default.
    #[default]
    Ip6,
}

impl IpProtocol {
    /// Whether `ip` belongs to this family.
    pub fn matches(self, ip: &IpAddr) -> bool {
        match self {
            IpProtocol::Ip4 => ip.is_ipv4(),
            IpProtocol::Ip6 => ip.is_ipv6(),
        }
    }

    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            IpProtocol::Ip4 => "ip4",
            IpProtocol::Ip6 => "ip6",
        }
    }

    /// Picks the address to use, as the blackbox exporter does: the first of this family,
    /// else (with `fallback`) the first of the other; the flag says whether it fell back.
    pub fn choose(self, addrs: &[IpAddr], fallback: bool) -> Option<(IpAddr, bool)> {
        if let Some(ip) = addrs.iter().find(|a| self.matches(a)) {
            return Some((*ip, false));
        }
        addrs.first().filter(|_| fallback).map(|ip| (*ip, true))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn addresses_follow_the_preference_and_fallback() {
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(IpProtocol::Ip6.choose(&[v4, v6], true), Some((v6, false)));
        assert_eq!(IpProtocol::Ip4.choose(&[v6, v4], false), Some((v4, false)));
        assert_eq!(IpProtocol::Ip6.choose(&[v4], true), Some((v4, true)));
        assert_eq!(IpProtocol::Ip6.choose(&[v4], false), None);
        assert_eq!(IpProtocol::Ip4.choose(&[], true), None);
    }
}
