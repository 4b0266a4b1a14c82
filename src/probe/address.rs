//! What the probes that resolve a name share: which address to probe, given
//! `preferred_ip_protocol` and `ip_protocol_fallback`, and `probe_ip_addr_hash`'s value for it,
//! both as the blackbox exporter computes them (pure).

use std::net::IpAddr;

use crate::config::IpProtocol;

/// Picks the address to probe, as the blackbox exporter does: the first of the preferred
/// family, else (with `fallback`) the first of the other; the flag says whether it fell back.
pub(crate) fn choose_address(
    addrs: &[IpAddr],
    preferred: IpProtocol,
    fallback: bool,
) -> Option<(IpAddr, bool)> {
    if let Some(ip) = addrs.iter().find(|a| preferred.matches(a)) {
        return Some((*ip, false));
    }
    addrs.first().filter(|_| fallback).map(|ip| (*ip, true))
}

/// The blackbox exporter's address hash: 32-bit FNV-1a over the address's bytes (4 for IPv4,
/// 16 for IPv6), so that the series keeps its value across the two exporters.
pub(crate) fn ip_hash(ip: IpAddr) -> f64 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    match ip {
        IpAddr::V4(v4) => eat(&v4.octets()),
        IpAddr::V6(v6) => eat(&v6.octets()),
    }
    f64::from(h)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn addresses_follow_the_preference_and_fallback() {
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(
            choose_address(&[v4, v6], IpProtocol::Ip6, true),
            Some((v6, false))
        );
        assert_eq!(
            choose_address(&[v6, v4], IpProtocol::Ip4, false),
            Some((v4, false))
        );
        assert_eq!(
            choose_address(&[v4], IpProtocol::Ip6, true),
            Some((v4, true))
        );
        assert_eq!(choose_address(&[v4], IpProtocol::Ip6, false), None);
        assert_eq!(choose_address(&[], IpProtocol::Ip4, true), None);
    }

    #[test]
    fn address_hashes_match_the_blackbox_exporter() {
        // The values blackbox_exporter 0.28 reports for these addresses.
        assert_eq!(ip_hash(IpAddr::V4(Ipv4Addr::LOCALHOST)), 3_668_918_509.0);
        assert_eq!(ip_hash(IpAddr::V6(Ipv6Addr::LOCALHOST)), 1_751_717_746.0);
        assert_ne!(
            ip_hash(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
            ip_hash(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
    }
}
