//! `probe_ip_addr_hash`, as the blackbox exporter computes it, for every probe kind that
//! reports the address it probed (pure). The address itself is chosen by
//! [`IpProtocol::choose`](crate::config::IpProtocol::choose).

use std::net::IpAddr;

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
