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
}
