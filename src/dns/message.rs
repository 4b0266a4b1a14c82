//! The pure half of the DNS client: a query's bytes, and an answer's bytes checked against
//! the query and turned into plain [`Answer`] data, with each record's text form as
//! `dig` and the blackbox exporter print it (`example.com.\t300\tIN\tA\t127.0.0.1`).
//!
//! Everything here works on byte slices the network handed over, so nothing may panic: the
//! decoder's errors become a "malformed" verdict, and names and data are rendered by hand
//! from their bytes (escaping what is not printable) rather than through a `Display` that
//! could fail.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RData, Record as WireRecord, RecordType};

/// Size of the fixed DNS header; anything shorter cannot be an answer.
pub(crate) const HEADER_LEN: usize = 12;

/// One question: a name, a type and a class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name asked about, as written (a trailing dot is added when sent).
    pub name: String,
    /// The record type asked for.
    pub record_type: RecordType,
    /// The class, almost always `IN`.
    pub class: DNSClass,
    /// Whether to ask the server to recurse (the `RD` bit).
    pub recursion_desired: bool,
}

impl Question {
    /// An `IN`-class question with recursion desired, as a resolver asks.
    pub fn new(name: impl Into<String>, record_type: RecordType) -> Self {
        Question {
            name: name.into(),
            record_type,
            class: DNSClass::IN,
            recursion_desired: true,
        }
    }
}

/// One resource record of an answer, in plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The owner name, fully qualified, escaped as in zone files.
    pub name: String,
    /// Time to live, seconds.
    pub ttl: u32,
    /// The record's class (`IN`, `CH`, … or `CLASS<n>`).
    pub class: String,
    /// The record's type (`A`, `SRV`, … or `TYPE<n>`).
    pub record_type: RecordType,
    /// The typed data, for lookups.
    pub data: RecordData,
    /// The data as text (`10 mail.example.com.`, `"v=spf1 -all"`).
    pub data_text: String,
}

impl Record {
    /// The record's text form, as the blackbox exporter matches regexes against:
    /// name, TTL, class, type and data, separated by tabs.
    pub fn text(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}",
            self.name,
            self.ttl,
            self.class,
            type_name(self.record_type),
            self.data_text
        )
    }
}

/// A record's data, typed for the kinds a lookup needs and as text for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A service location.
    Srv {
        /// Lower is tried first.
        priority: u16,
        /// Relative weight among equal priorities.
        weight: u16,
        /// The service's port.
        port: u16,
        /// The host serving it, fully qualified.
        target: String,
    },
    /// A mail exchanger.
    Mx {
        /// Lower is preferred.
        preference: u16,
        /// The exchanger's host, fully qualified.
        exchange: String,
    },
    /// A name pointing elsewhere (`CNAME`, `NS`, `PTR`).
    Name(String),
    /// The strings of a `TXT` record, as bytes.
    Txt(Vec<Vec<u8>>),
    /// A zone's start of authority; its serial is what `probe_dns_serial` reports.
    Soa {
        /// The zone's serial number.
        serial: u32,
    },
    /// Any other type: only its text form is kept.
    Other,
}

/// A parsed answer to one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The response code (`0` = NOERROR; extended codes included).
    pub rcode: u16,
    /// The `TC` bit: the server cut the answer short to fit a UDP datagram.
    pub truncated: bool,
    /// The `AA` bit.
    pub authoritative: bool,
    /// The `RA` bit.
    pub recursion_available: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section.
    pub authority: Vec<Record>,
    /// The additional section (without the EDNS `OPT` pseudo-record).
    pub additional: Vec<Record>,
}

impl Answer {
    /// The response code's name (`NOERROR`, `NXDOMAIN`, … or `RCODE<n>`).
    pub fn rcode_name(&self) -> String {
        rcode_name(self.rcode)
    }
}

/// What a datagram or TCP message turned out to be, checked against the query.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// The answer to our query.
    Answer(Answer),
    /// A message carrying another ID: stale, spoofed or meant for someone else.
    OtherId(u16),
    /// Our ID, but not an answer to our question (another name, type or class).
    OtherQuestion(String),
    /// Bytes that are not a well-formed answer.
    Malformed(String),
}

/// Encodes `question` as a query message with `id`.
pub(crate) fn encode_query(id: u16, question: &Question) -> Result<Vec<u8>, String> {
    let name = fqdn(&question.name)?;
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = question.recursion_desired;
    let mut query = Query::query(name, question.record_type);
    query.set_query_class(question.class);
    message.add_query(query);
    message.to_vec().map_err(|e| e.to_string())
}

/// Parses a name as written, adding the root's dot.
pub(crate) fn fqdn(name: &str) -> Result<Name, String> {
    let mut parsed =
        Name::from_ascii(name).map_err(|e| format!("{name:?} is not a valid DNS name: {e}"))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// The message ID in the first two bytes, when there are two.
pub(crate) fn message_id(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

/// Checks `bytes` against the query (`id`, `question`) and decodes the answer.
pub(crate) fn decode_answer(bytes: &[u8], id: u16, question: &Question) -> Decoded {
    match message_id(bytes) {
        Some(got) if got != id => return Decoded::OtherId(got),
        Some(_) if bytes.len() >= HEADER_LEN => {}
        _ => {
            return Decoded::Malformed(format!(
                "{} bytes, shorter than a DNS header ({HEADER_LEN})",
                bytes.len()
            ))
        }
    }
    let message = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => return Decoded::Malformed(e.to_string()),
    };
    if message.metadata.message_type != MessageType::Response {
        return Decoded::Malformed("the QR bit is not set: a query, not an answer".into());
    }
    // A server answering an unparseable query may echo no question; one that echoes a
    // question must echo ours (RFC 5452 §9.1, as resolvers check against spoofing).
    if let Some(q) = message.queries.first() {
        let same_name = fqdn(&question.name).is_ok_and(|n| n.eq_case(q.name()) || n == *q.name());
        if !same_name || q.query_type() != question.record_type || q.query_class() != question.class
        {
            return Decoded::OtherQuestion(format!(
                "{} {} {}",
                render_name(q.name()),
                class_name(q.query_class()),
                type_name(q.query_type())
            ));
        }
    }
    if message.queries.len() > 1 {
        return Decoded::Malformed(format!(
            "{} questions echoed for one asked",
            message.queries.len()
        ));
    }
    Decoded::Answer(Answer {
        rcode: u16::from(message.metadata.response_code),
        truncated: message.metadata.truncation,
        authoritative: message.metadata.authoritative,
        recursion_available: message.metadata.recursion_available,
        answers: message.answers.iter().map(record).collect(),
        authority: message.authorities.iter().map(record).collect(),
        additional: message.additionals.iter().map(record).collect(),
    })
}

fn record(r: &WireRecord) -> Record {
    let (data, data_text) = record_data(&r.data);
    Record {
        name: render_name(&r.name),
        ttl: r.ttl,
        class: class_name(r.dns_class),
        record_type: r.record_type(),
        data,
        data_text,
    }
}

fn record_data(data: &RData) -> (RecordData, String) {
    match data {
        RData::A(a) => (RecordData::A(a.0), a.0.to_string()),
        RData::AAAA(a) => (RecordData::Aaaa(a.0), a.0.to_string()),
        RData::CNAME(n) => name_data(&n.0),
        RData::NS(n) => name_data(&n.0),
        RData::PTR(n) => name_data(&n.0),
        RData::MX(mx) => {
            let exchange = render_name(&mx.exchange);
            let text = format!("{} {exchange}", mx.preference);
            (
                RecordData::Mx {
                    preference: mx.preference,
                    exchange,
                },
                text,
            )
        }
        RData::SRV(srv) => {
            let target = render_name(&srv.target);
            let text = format!("{} {} {} {target}", srv.priority, srv.weight, srv.port);
            (
                RecordData::Srv {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target,
                },
                text,
            )
        }
        RData::TXT(txt) => {
            let strings: Vec<Vec<u8>> = txt.txt_data.iter().map(|s| s.to_vec()).collect();
            let text = strings
                .iter()
                .map(|s| quote_string(s))
                .collect::<Vec<_>>()
                .join(" ");
            (RecordData::Txt(strings), text)
        }
        RData::SOA(soa) => (
            RecordData::Soa { serial: soa.serial },
            format!(
                "{} {} {} {} {} {} {}",
                render_name(&soa.mname),
                render_name(&soa.rname),
                soa.serial,
                // The wire carries these as unsigned 32-bit numbers; shown as sent.
                soa.refresh as u32,
                soa.retry as u32,
                soa.expire as u32,
                soa.minimum
            ),
        ),
        RData::Unknown { rdata, .. } => (RecordData::Other, unknown_rdata(&rdata.anything)),
        other => {
            // Types a probe rarely asks for keep the decoder's own text; writing into a
            // String reports a failing `Display` as an error instead of panicking.
            let mut text = String::new();
            if write!(text, "{other}").is_err() {
                text = "(unprintable)".into();
            }
            (RecordData::Other, text)
        }
    }
}

fn name_data(name: &Name) -> (RecordData, String) {
    let text = render_name(name);
    (RecordData::Name(text.clone()), text)
}

/// Data of a type the decoder does not know, in the generic form of RFC 3597.
fn unknown_rdata(bytes: &[u8]) -> String {
    let mut text = format!("\\# {}", bytes.len());
    if !bytes.is_empty() {
        text.push(' ');
        for b in bytes {
            let _ = write!(text, "{b:02x}");
        }
    }
    text
}

/// A name as zone files write it: labels joined by dots, a final dot, special bytes
/// escaped with a backslash and unprintable ones as `\DDD`.
pub(crate) fn render_name(name: &Name) -> String {
    let mut out = String::new();
    for label in name.iter() {
        for &b in label {
            match b {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b' ' | b'@' | b'$' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x21..=0x7e => out.push(char::from(b)),
                _ => {
                    let _ = write!(out, "\\{b:03}");
                }
            }
        }
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// A character string in double quotes, `"` and `\` escaped, unprintable bytes as `\DDD`.
pub(crate) fn quote_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out.push('"');
    out
}

/// A type's mnemonic, or `TYPE<n>` for one without a name.
pub fn type_name(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        RecordType::ANY => "ANY".into(),
        other => {
            let mut s = String::new();
            if write!(s, "{other}").is_err() || s.is_empty() || s == "Unknown" {
                return format!("TYPE{}", u16::from(other));
            }
            s
        }
    }
}

/// A class's mnemonic, or `CLASS<n>`.
pub fn class_name(c: DNSClass) -> String {
    match u16::from(c) {
        1 => "IN".into(),
        3 => "CH".into(),
        4 => "HS".into(),
        254 => "NONE".into(),
        255 => "ANY".into(),
        n => format!("CLASS{n}"),
    }
}

/// The response codes by name, as `valid_rcodes` and messages write them.
pub const RCODES: &[(&str, u16)] = &[
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
    ("NOTZONE", 10),
    ("BADSIG", 16),
    ("BADKEY", 17),
    ("BADTIME", 18),
    ("BADMODE", 19),
    ("BADNAME", 20),
    ("BADALG", 21),
    ("BADTRUNC", 22),
    ("BADCOOKIE", 23),
];

/// A response code's name, or `RCODE<n>`.
pub fn rcode_name(code: u16) -> String {
    RCODES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or_else(|| format!("RCODE{code}"), |(n, _)| (*n).to_string())
}

/// A response code by name (`NXDOMAIN`, case-insensitive).
pub fn rcode_by_name(name: &str) -> Option<u16> {
    RCODES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, MX, SOA, SRV, TXT};

    fn question() -> Question {
        Question::new("example.com", RecordType::A)
    }

    fn answer_bytes(id: u16, q: &Question, records: Vec<WireRecord>) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        let mut query = Query::query(fqdn(&q.name).unwrap(), q.record_type);
        query.set_query_class(q.class);
        m.add_query(query);
        m.add_answers(records);
        m.to_vec().unwrap()
    }

    fn rec(data: RData) -> WireRecord {
        WireRecord::from_rdata(Name::from_ascii("example.com.").unwrap(), 300, data)
    }

    #[test]
    fn records_render_as_blackbox_matches_them() {
        let q = question();
        let records = vec![
            rec(RData::A(A::new(127, 0, 0, 1))),
            rec(RData::MX(MX::new(
                10,
                Name::from_ascii("mail.example.com.").unwrap(),
            ))),
            rec(RData::SRV(SRV::new(
                1,
                5,
                8080,
                Name::from_ascii("web.example.com.").unwrap(),
            ))),
            rec(RData::TXT(TXT::new(vec![
                "v=spf1 -all".into(),
                "say \"hi\"".into(),
            ]))),
            rec(RData::SOA(SOA::new(
                Name::from_ascii("ns.example.com.").unwrap(),
                Name::from_ascii("noc.example.com.").unwrap(),
                1000,
                7200,
                3600,
                1_209_600,
                3600,
            ))),
        ];
        let Decoded::Answer(a) = decode_answer(&answer_bytes(7, &q, records), 7, &q) else {
            panic!("not an answer");
        };
        let texts: Vec<String> = a.answers.iter().map(Record::text).collect();
        assert_eq!(
            texts,
            [
                "example.com.\t300\tIN\tA\t127.0.0.1",
                "example.com.\t300\tIN\tMX\t10 mail.example.com.",
                "example.com.\t300\tIN\tSRV\t1 5 8080 web.example.com.",
                "example.com.\t300\tIN\tTXT\t\"v=spf1 -all\" \"say \\\"hi\\\"\"",
                "example.com.\t300\tIN\tSOA\tns.example.com. noc.example.com. 1000 7200 3600 1209600 3600",
            ]
        );
        assert_eq!(a.answers[4].data, RecordData::Soa { serial: 1000 });
        assert_eq!(a.rcode_name(), "NOERROR");
    }

    #[test]
    fn odd_bytes_in_names_and_strings_are_escaped() {
        assert_eq!(quote_string(b"a\x01\xffb"), "\"a\\001\\255b\"");
        let name = Name::from_labels(vec![&b"a b"[..], &b"c.d"[..]]).unwrap();
        assert_eq!(render_name(&name), "a\\ b.c\\.d.");
        assert_eq!(render_name(&Name::root()), ".");
        assert_eq!(unknown_rdata(&[1, 0xab]), "\\# 2 01ab");
        assert_eq!(type_name(RecordType::Unknown(65280)), "TYPE65280");
        assert_eq!(class_name(DNSClass::from(77)), "CLASS77");
    }

    #[test]
    fn ids_and_questions_are_checked() {
        let q = question();
        let bytes = answer_bytes(7, &q, vec![]);
        assert!(matches!(decode_answer(&bytes, 8, &q), Decoded::OtherId(7)));
        let other = Question::new("example.org", RecordType::A);
        assert!(matches!(
            decode_answer(&answer_bytes(7, &other, vec![]), 7, &q),
            Decoded::OtherQuestion(s) if s == "example.org. IN A"
        ));
        // Names compare without regard to case, as DNS does.
        let upper = Question::new("EXAMPLE.com", RecordType::A);
        assert!(matches!(
            decode_answer(&answer_bytes(7, &upper, vec![]), 7, &q),
            Decoded::Answer(_)
        ));
    }

    #[test]
    fn hostile_bytes_are_errors_never_panics() {
        let q = question();
        let full = answer_bytes(9, &q, vec![rec(RData::A(A::new(10, 0, 0, 1)))]);
        for cut in 0..full.len() {
            let d = decode_answer(&full[..cut], 9, &q);
            assert!(
                matches!(d, Decoded::Malformed(_) | Decoded::OtherId(_)),
                "cut at {cut}: {d:?}"
            );
        }
        // A header claiming thousands of records with none behind it.
        let mut lying = full.clone();
        lying[6] = 0xff;
        lying[7] = 0xff;
        assert!(matches!(
            decode_answer(&lying, 9, &q),
            Decoded::Malformed(_)
        ));
        // A query, not an answer.
        let query = encode_query(9, &q).unwrap();
        assert!(matches!(
            decode_answer(&query, 9, &q),
            Decoded::Malformed(_)
        ));
        // Every single-byte corruption decodes or fails, never panics.
        for i in 0..full.len() {
            for v in [0u8, 0x3f, 0xc0, 0xff] {
                let mut b = full.clone();
                b[i] = v;
                let _ = decode_answer(&b, 9, &q);
            }
        }
    }

    proptest::proptest! {
        /// Whatever a server sends, the answer decodes or is refused: never a panic, and
        /// every record's text form can be rendered.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        ) {
            let q = question();
            // Under our ID (0), so that the bytes reach the decoder.
            let mut bytes = bytes;
            bytes.splice(0..bytes.len().min(2), [0, 0]);
            if let Decoded::Answer(a) = decode_answer(&bytes, 0, &q) {
                for r in a.answers.iter().chain(&a.authority).chain(&a.additional) {
                    let _ = r.text();
                }
            }
        }

        /// A valid answer with bytes overwritten anywhere (names, counts, lengths).
        #[test]
        fn corrupted_answers_decode_or_fail_cleanly(
            edits in proptest::collection::vec((0usize..200, proptest::num::u8::ANY), 1..8),
        ) {
            let q = Question::new("srv.example.com", RecordType::SRV);
            let mut bytes = answer_bytes(3, &q, vec![
                rec(RData::SRV(SRV::new(1, 2, 3, Name::from_ascii("t.example.com.").unwrap()))),
                rec(RData::TXT(TXT::new(vec!["x".into()]))),
            ]);
            for (at, value) in edits {
                let len = bytes.len();
                bytes[at % len] = value;
            }
            if let Decoded::Answer(a) = decode_answer(&bytes, 3, &q) {
                for r in &a.answers {
                    let _ = r.text();
                }
            }
        }
    }

    #[test]
    fn rcodes_by_name_and_number() {
        assert_eq!(rcode_by_name("nxdomain"), Some(3));
        assert_eq!(rcode_by_name("NOPE"), None);
        assert_eq!(rcode_name(5), "REFUSED");
        assert_eq!(rcode_name(42), "RCODE42");
    }

    #[test]
    fn bad_names_are_refused_when_encoding() {
        assert!(encode_query(1, &Question::new("a..b", RecordType::A)).is_err());
        let long = "a".repeat(64);
        assert!(encode_query(1, &Question::new(long, RecordType::A)).is_err());
        assert!(encode_query(1, &question()).is_ok());
    }
}
