//! ICMP echo messages as plain bytes (pure): the Internet checksum, echo requests for IPv4
//! and IPv6, the IPv4 header a raw socket sends when it must set Don't Fragment, and the
//! parsing and matching of what a socket hands back.
//!
//! Parsing never trusts its input: every length is checked before it is used, so a short,
//! truncated or hostile packet is an [`ParseError`], never a panic.

use std::net::Ipv4Addr;

/// The address family of a message: it decides the ICMP type numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// ICMP for IPv4 (RFC 792).
    V4,
    /// ICMPv6 (RFC 4443).
    V6,
}

impl Family {
    /// The type of an echo request.
    pub(crate) fn echo_request(self) -> u8 {
        match self {
            Family::V4 => 8,
            Family::V6 => 128,
        }
    }

    /// The type of an echo reply.
    pub(crate) fn echo_reply(self) -> u8 {
        match self {
            Family::V4 => 0,
            Family::V6 => 129,
        }
    }
}

/// Length of an ICMP echo header: type, code, checksum, identifier, sequence.
pub(crate) const ECHO_HEADER_LEN: usize = 8;
/// Length of an IPv4 header without options.
pub(crate) const IPV4_HEADER_LEN: usize = 20;

/// The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of
/// the 16-bit words, an odd last byte padded with zero.
pub(crate) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One echo message: what a request carries and a reply must give back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Echo {
    /// The identifier (on an unprivileged Linux socket, the socket's local "port").
    pub(crate) ident: u16,
    /// The sequence number.
    pub(crate) seq: u16,
    /// The payload, echoed back byte for byte.
    pub(crate) payload: Vec<u8>,
}

/// Encodes an echo request. IPv4 carries its checksum; IPv6's is left zero because it
/// covers a pseudo-header with the source address, which the kernel fills in (it always
/// computes the checksum of ICMPv6 it sends).
pub(crate) fn encode_echo_request(family: Family, echo: &Echo) -> Vec<u8> {
    let mut out = Vec::with_capacity(ECHO_HEADER_LEN + echo.payload.len());
    out.push(family.echo_request());
    out.push(0);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&echo.ident.to_be_bytes());
    out.extend_from_slice(&echo.seq.to_be_bytes());
    out.extend_from_slice(&echo.payload);
    if family == Family::V4 {
        let sum = checksum(&out);
        out[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    out
}

/// The IPv4 header a raw socket with `IP_HDRINCL` sends in front of an ICMP message of
/// `icmp_len` bytes: the only way to set Don't Fragment without a socket option socket2
/// lacks. `None` when the message does not fit an IPv4 datagram.
pub(crate) fn encode_ipv4_header(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    ttl: u8,
    icmp_len: usize,
    dont_fragment: bool,
) -> Option<[u8; IPV4_HEADER_LEN]> {
    let total = u16::try_from(IPV4_HEADER_LEN + icmp_len).ok()?;
    let mut h = [0u8; IPV4_HEADER_LEN];
    h[0] = 0x45; // version 4, five 32-bit words
    h[2..4].copy_from_slice(&total.to_be_bytes());
    // Identification 0: the kernel picks one. Flags: DF is the second bit of byte 6.
    if dont_fragment {
        h[6] = 0x40;
    }
    h[8] = ttl;
    h[9] = 1; // ICMP
    h[12..16].copy_from_slice(&source.octets());
    h[16..20].copy_from_slice(&destination.octets());
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    Some(h)
}

/// Why a received packet could not be read as an ICMP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    /// Fewer bytes than the headers need.
    #[error("packet of {len} bytes is shorter than its headers ({needed} bytes)")]
    Short {
        /// Bytes received.
        len: usize,
        /// Bytes the headers need.
        needed: usize,
    },
    /// The IPv4 header in front is not one (wrong version or length).
    #[error("not an IPv4 header")]
    BadIpHeader,
    /// The IPv4 header says another protocol than ICMP.
    #[error("IP protocol {0} is not ICMP")]
    NotIcmp(u8),
    /// The ICMP checksum does not add up.
    #[error("ICMP checksum does not match")]
    BadChecksum,
}

/// An ICMP message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received<'a> {
    /// ICMP type.
    pub(crate) kind: u8,
    /// ICMP code.
    pub(crate) code: u8,
    /// Identifier field (meaningful for echo messages only).
    pub(crate) ident: u16,
    /// Sequence field (meaningful for echo messages only).
    pub(crate) seq: u16,
    /// What follows the eight header bytes.
    pub(crate) payload: &'a [u8],
    /// The TTL of the IPv4 header in front, when the socket delivers one.
    pub(crate) hop_limit: Option<u8>,
}

/// Reads what a socket delivered. `with_ip_header`: a raw IPv4 socket hands over the IP
/// header too (its TTL is the reply's hop limit); ICMPv6 and unprivileged sockets do not.
/// The IPv4 ICMP checksum is verified (a raw socket receives packets before the kernel
/// checks them); ICMPv6's covers addresses the kernel has already checked it against.
pub(crate) fn parse(
    family: Family,
    with_ip_header: bool,
    packet: &[u8],
) -> Result<Received<'_>, ParseError> {
    let (icmp, hop_limit) = if with_ip_header {
        let (icmp, ttl) = strip_ipv4_header(packet)?;
        (icmp, Some(ttl))
    } else {
        (packet, None)
    };
    let Some((header, payload)) = icmp.split_first_chunk::<ECHO_HEADER_LEN>() else {
        return Err(ParseError::Short {
            len: packet.len(),
            needed: packet.len() - icmp.len() + ECHO_HEADER_LEN,
        });
    };
    if family == Family::V4 && checksum(icmp) != 0 {
        return Err(ParseError::BadChecksum);
    }
    Ok(Received {
        kind: header[0],
        code: header[1],
        ident: u16::from_be_bytes([header[4], header[5]]),
        seq: u16::from_be_bytes([header[6], header[7]]),
        payload,
        hop_limit,
    })
}

/// Splits an IPv4 packet into its ICMP message and TTL.
fn strip_ipv4_header(packet: &[u8]) -> Result<(&[u8], u8), ParseError> {
    let Some(first) = packet.first() else {
        return Err(ParseError::Short {
            len: 0,
            needed: IPV4_HEADER_LEN,
        });
    };
    if first >> 4 != 4 {
        return Err(ParseError::BadIpHeader);
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < IPV4_HEADER_LEN {
        return Err(ParseError::BadIpHeader);
    }
    let (Some(header), Some(icmp)) = (packet.get(..header_len), packet.get(header_len..)) else {
        return Err(ParseError::Short {
            len: packet.len(),
            needed: header_len,
        });
    };
    if header[9] != 1 {
        return Err(ParseError::NotIcmp(header[9]));
    }
    Ok((icmp, header[8]))
}

/// What a received message is to the probe waiting for `expected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    /// The reply to our request.
    Ours,
    /// Not an echo reply (our own request seen by a raw socket, an error, …).
    NotEchoReply,
    /// An echo reply for another pinger (another identifier).
    OtherIdentifier,
    /// Our identifier but another sequence: a late reply to an earlier run, or a collision.
    OtherSequence,
    /// Identifier and sequence match but the payload differs: someone else's packet that
    /// happens to share them (a NAT rewriting identifiers can cause it).
    OtherPayload,
}

/// Whether `received` answers `expected`: an echo reply, code 0, with the same identifier,
/// sequence and payload. All three must match: other pingers on the host and NATs mix
/// identifiers up, and a reply that only shares an identifier is not ours.
pub(crate) fn classify(family: Family, expected: &Echo, received: &Received<'_>) -> Match {
    if received.kind != family.echo_reply() || received.code != 0 {
        Match::NotEchoReply
    } else if received.ident != expected.ident {
        Match::OtherIdentifier
    } else if received.seq != expected.seq {
        Match::OtherSequence
    } else if received.payload != expected.payload.as_slice() {
        Match::OtherPayload
    } else {
        Match::Ours
    }
}

/// A payload of `size` bytes that starts with `cookie` (cut short when `size` is smaller)
/// and repeats a fixed pattern after it, so a reply is recognised by content too.
pub(crate) fn payload(cookie: [u8; 8], size: usize) -> Vec<u8> {
    let pattern = b"pushprobe ";
    cookie
        .iter()
        .copied()
        .chain(pattern.iter().copied().cycle())
        .take(size)
        .collect()
}

/// The echo reply a well-behaved host would send to `request` (for tests, and to build
/// crafted replies): the request with the reply type and a fresh checksum.
#[cfg(test)]
pub(crate) fn encode_echo_reply(family: Family, echo: &Echo) -> Vec<u8> {
    let mut out = encode_echo_request(family, echo);
    out[0] = family.echo_reply();
    out[2..4].copy_from_slice(&[0, 0]);
    if family == Family::V4 {
        let sum = checksum(&out);
        out[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn echo() -> Echo {
        Echo {
            ident: 0xbeef,
            seq: 7,
            payload: payload([1, 2, 3, 4, 5, 6, 7, 8], 20),
        }
    }

    #[test]
    fn checksum_matches_known_values() {
        // RFC 1071's worked example: the sum of these words is 0xddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        assert_eq!(checksum(&[]), 0xffff);
        // An odd length pads with a zero byte.
        assert_eq!(checksum(&[0x12]), !0x1200);
        // A message carrying its own checksum sums to zero.
        let msg = encode_echo_request(Family::V4, &echo());
        assert_eq!(checksum(&msg), 0);
    }

    #[test]
    fn echo_requests_have_the_family_type_and_fields() {
        let v4 = encode_echo_request(Family::V4, &echo());
        assert_eq!(&v4[..2], &[8, 0]);
        assert_eq!(&v4[4..8], &[0xbe, 0xef, 0, 7]);
        assert_eq!(&v4[8..], echo().payload.as_slice());
        let v6 = encode_echo_request(Family::V6, &echo());
        assert_eq!(
            &v6[..4],
            &[128, 0, 0, 0],
            "the kernel fills ICMPv6's checksum"
        );
    }

    #[test]
    fn the_payload_starts_with_the_cookie_and_has_the_asked_size() {
        let p = payload([9; 8], 12);
        assert_eq!(p.len(), 12);
        assert_eq!(&p[..8], &[9; 8]);
        assert_eq!(&p[8..], b"push");
        assert_eq!(payload([9; 8], 3), vec![9, 9, 9]);
        assert!(payload([9; 8], 0).is_empty());
    }

    #[test]
    fn a_reply_round_trips_and_matches() {
        for family in [Family::V4, Family::V6] {
            let reply = encode_echo_reply(family, &echo());
            let got = parse(family, false, &reply).unwrap();
            assert_eq!(got.ident, 0xbeef);
            assert_eq!(got.seq, 7);
            assert_eq!(got.hop_limit, None);
            assert_eq!(classify(family, &echo(), &got), Match::Ours);
        }
    }

    #[test]
    fn a_raw_ipv4_packet_gives_its_ttl() {
        let icmp = encode_echo_reply(Family::V4, &echo());
        let header = encode_ipv4_header(
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
            57,
            icmp.len(),
            false,
        )
        .unwrap();
        let packet = [header.as_slice(), &icmp].concat();
        let got = parse(Family::V4, true, &packet).unwrap();
        assert_eq!(got.hop_limit, Some(57));
        assert_eq!(classify(Family::V4, &echo(), &got), Match::Ours);
    }

    #[test]
    fn the_ipv4_header_sets_dont_fragment_and_sums_to_zero() {
        let h = encode_ipv4_header(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            64,
            64,
            true,
        )
        .unwrap();
        assert_eq!(h[0], 0x45);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 84);
        assert_eq!(h[6] & 0x40, 0x40);
        assert_eq!((h[8], h[9]), (64, 1));
        assert_eq!(checksum(&h), 0);
        let plain =
            encode_ipv4_header(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, 8, false).unwrap();
        assert_eq!(plain[6], 0);
        assert!(
            encode_ipv4_header(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, 70_000, true).is_none()
        );
    }

    #[test]
    fn replies_for_other_pingers_are_told_apart() {
        let family = Family::V4;
        let mine = echo();
        let classify_bytes =
            |bytes: &[u8]| classify(family, &mine, &parse(family, false, bytes).unwrap());
        let other_id = Echo {
            ident: 0x1234,
            ..echo()
        };
        assert_eq!(
            classify_bytes(&encode_echo_reply(family, &other_id)),
            Match::OtherIdentifier
        );
        let other_seq = Echo { seq: 8, ..echo() };
        assert_eq!(
            classify_bytes(&encode_echo_reply(family, &other_seq)),
            Match::OtherSequence
        );
        let other_payload = Echo {
            payload: payload([0; 8], 20),
            ..echo()
        };
        assert_eq!(
            classify_bytes(&encode_echo_reply(family, &other_payload)),
            Match::OtherPayload
        );
        // A raw socket sees our own request on loopback: not the reply.
        assert_eq!(
            classify_bytes(&encode_echo_request(family, &mine)),
            Match::NotEchoReply
        );
        // An ICMPv6 reply type means nothing to an IPv4 probe, and the other way round.
        let v6_reply = encode_echo_reply(Family::V6, &mine);
        assert_eq!(
            classify(family, &mine, &parse(Family::V6, false, &v6_reply).unwrap()),
            Match::NotEchoReply
        );
        let v4_reply = encode_echo_reply(Family::V4, &mine);
        assert_eq!(
            classify(
                Family::V6,
                &mine,
                &parse(Family::V6, false, &v4_reply).unwrap()
            ),
            Match::NotEchoReply
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(
            parse(Family::V4, false, &[0, 0, 0]),
            Err(ParseError::Short { len: 3, needed: 8 })
        );
        assert_eq!(
            parse(Family::V4, true, &[]),
            Err(ParseError::Short { len: 0, needed: 20 })
        );
        assert_eq!(
            parse(Family::V4, true, &[0x60; 40]),
            Err(ParseError::BadIpHeader)
        );
        assert_eq!(
            parse(Family::V4, true, &[0x44; 40]),
            Err(ParseError::BadIpHeader)
        );
        // A header length of 60 bytes in a 30-byte packet.
        let mut long_header = [0u8; 30];
        long_header[0] = 0x4f;
        assert_eq!(
            parse(Family::V4, true, &long_header),
            Err(ParseError::Short {
                len: 30,
                needed: 60
            })
        );
        let mut tcp = [0u8; 40];
        tcp[0] = 0x45;
        tcp[9] = 6;
        assert_eq!(parse(Family::V4, true, &tcp), Err(ParseError::NotIcmp(6)));
        // A whole IPv4 header but a truncated ICMP message.
        let mut short_icmp = [0u8; 24];
        short_icmp[0] = 0x45;
        short_icmp[9] = 1;
        assert_eq!(
            parse(Family::V4, true, &short_icmp),
            Err(ParseError::Short {
                len: 24,
                needed: 28
            })
        );
        let mut corrupt = encode_echo_reply(Family::V4, &echo());
        corrupt[9] ^= 0xff;
        assert_eq!(
            parse(Family::V4, false, &corrupt),
            Err(ParseError::BadChecksum)
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..128),
            v6 in any::<bool>(),
            header in any::<bool>(),
        ) {
            let family = if v6 { Family::V6 } else { Family::V4 };
            if let Ok(r) = parse(family, header, &bytes) {
                let _ = classify(family, &echo(), &r);
            }
        }

        #[test]
        fn every_request_carries_a_valid_checksum(
            ident in any::<u16>(),
            seq in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let msg = encode_echo_request(Family::V4, &Echo { ident, seq, payload });
            prop_assert_eq!(checksum(&msg), 0);
        }
    }
}
