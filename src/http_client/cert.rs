//! Reads the expiry (`tbsCertificate.validity.notAfter`) of DER-encoded X.509 certificates.
//!
//! Only the few fields in front of `validity` are walked, so a dozen lines of DER reading do
//! the job that a full X.509 parser (and its dependency tree) would. Everything a server sends
//! is untrusted: every read is bounds-checked and a malformed certificate is an error, never
//! a panic.

/// Why a certificate's expiry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The data ends inside an element.
    #[error("certificate DER is truncated")]
    Truncated,
    /// An element has another type than the X.509 structure puts there.
    #[error("certificate DER has tag {found:#04x} where {expected} belongs")]
    UnexpectedTag {
        /// What the structure expects at that place.
        expected: &'static str,
        /// The tag byte found.
        found: u8,
    },
    /// A length uses the indefinite form or more than four bytes, which DER never does.
    #[error("certificate DER has an unsupported length encoding")]
    BadLength,
    /// The `notAfter` time is not a valid UTCTime or GeneralizedTime.
    #[error("certificate notAfter {0:?} is not a valid X.509 time")]
    BadTime(String),
}

const TAG_INTEGER: u8 = 0x02;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_VERSION: u8 = 0xa0;

/// One DER element: its tag byte, its contents, and what follows it.
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
    rest: &'a [u8],
}

fn read_element(input: &[u8]) -> Result<Element<'_>, CertError> {
    let (&tag, after_tag) = input.split_first().ok_or(CertError::Truncated)?;
    if tag & 0x1f == 0x1f {
        // High tag numbers never occur in the part of a certificate walked here.
        return Err(CertError::UnexpectedTag {
            expected: "a low-number tag",
            found: tag,
        });
    }
    let (&first, after_len) = after_tag.split_first().ok_or(CertError::Truncated)?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), after_len)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(CertError::BadLength);
        }
        let bytes = after_len.get(..n).ok_or(CertError::Truncated)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &after_len[n..])
    };
    if len > body.len() {
        return Err(CertError::Truncated);
    }
    let (content, rest) = body.split_at(len);
    Ok(Element { tag, content, rest })
}

fn expect<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<Element<'a>, CertError> {
    let e = read_element(input)?;
    if e.tag != tag {
        return Err(CertError::UnexpectedTag {
            expected: what,
            found: e.tag,
        });
    }
    Ok(e)
}

/// Returns the certificate's `notAfter` as Unix seconds.
pub fn not_after(der: &[u8]) -> Result<i64, CertError> {
    let cert = expect(der, TAG_SEQUENCE, "Certificate")?;
    let tbs = expect(cert.content, TAG_SEQUENCE, "tbsCertificate")?;
    let mut fields = tbs.content;
    if fields.first() == Some(&TAG_VERSION) {
        fields = read_element(fields)?.rest;
    }
    let serial = expect(fields, TAG_INTEGER, "serialNumber")?;
    let signature = expect(serial.rest, TAG_SEQUENCE, "signature")?;
    let issuer = expect(signature.rest, TAG_SEQUENCE, "issuer")?;
    let validity = expect(issuer.rest, TAG_SEQUENCE, "validity")?;
    let not_before = read_element(validity.content)?;
    let not_after = read_element(not_before.rest)?;
    parse_time(not_after.tag, not_after.content)
}

/// Returns the earliest `notAfter` among the certificates that can be read, if any.
pub fn earliest_not_after<'a>(chain: impl IntoIterator<Item = &'a [u8]>) -> Option<i64> {
    chain.into_iter().filter_map(|c| not_after(c).ok()).min()
}

/// Parses an X.509 time (RFC 5280 §4.1.2.5) into Unix seconds.
fn parse_time(tag: u8, content: &[u8]) -> Result<i64, CertError> {
    let bad = || CertError::BadTime(String::from_utf8_lossy(content).into_owned());
    let text = std::str::from_utf8(content).map_err(|_| bad())?;
    let text = text.strip_suffix('Z').ok_or_else(bad)?;
    let (year, rest) = match tag {
        TAG_UTC_TIME => {
            let yy = digits(text, 0, 2).ok_or_else(bad)?;
            // RFC 5280: two-digit years 50..99 are 19xx, 00..49 are 20xx.
            let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
            (year, text.get(2..).ok_or_else(bad)?)
        }
        TAG_GENERALIZED_TIME => {
            let year = digits(text, 0, 4).ok_or_else(bad)?;
            let rest = text.get(4..).ok_or_else(bad)?;
            // Fractional seconds are allowed in GeneralizedTime; they do not matter here.
            let rest = rest.split_once('.').map_or(rest, |(whole, _)| whole);
            (year, rest)
        }
        found => {
            return Err(CertError::UnexpectedTag {
                expected: "UTCTime or GeneralizedTime",
                found,
            })
        }
    };
    if rest.len() != 10 {
        return Err(bad());
    }
    let field = |i: usize| digits(rest, i, 2).ok_or_else(bad);
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Reads `len` ASCII digits of `s` starting at `at`.
fn digits(s: &str, at: usize, len: usize) -> Option<i64> {
    let part = s.get(at..at + len)?;
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats Unix seconds as an RFC 3339 UTC time, e.g. `2031-05-17T00:00:00Z`.
pub fn format_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Inverse of `days_from_civil`.
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn utc_and_generalized_times_convert_to_unix_seconds() {
        assert_eq!(parse_time(TAG_UTC_TIME, b"700101000000Z"), Ok(0));
        assert_eq!(parse_time(TAG_UTC_TIME, b"000301000000Z"), Ok(951_868_800));
        assert_eq!(
            parse_time(TAG_UTC_TIME, b"491231235959Z"),
            Ok(2_524_607_999)
        );
        assert_eq!(parse_time(TAG_UTC_TIME, b"500101000000Z"), Ok(-631_152_000));
        assert_eq!(
            parse_time(TAG_UTC_TIME, b"240229120000Z"),
            Ok(1_709_208_000)
        );
        assert_eq!(
            parse_time(TAG_GENERALIZED_TIME, b"99991231235959Z"),
            Ok(253_402_300_799)
        );
        assert_eq!(
            parse_time(TAG_GENERALIZED_TIME, b"20500101000000.5Z"),
            Ok(2_524_608_000)
        );
    }

    #[test]
    fn impossible_times_are_refused() {
        for bad in [
            &b"230229000000Z"[..],
            b"241301000000Z",
            b"240101240000Z",
            b"2401010000Z",
            b"240101000000",
            b"24010100000aZ",
            b"+40101000000Z",
        ] {
            assert!(
                matches!(parse_time(TAG_UTC_TIME, bad), Err(CertError::BadTime(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_time(0x04, b"240101000000Z"),
            Err(CertError::UnexpectedTag { .. })
        ));
    }

    #[test]
    fn format_unix_inverts_the_conversion() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_709_208_000), "2024-02-29T12:00:00Z");
        assert_eq!(format_unix(-631_152_000), "1950-01-01T00:00:00Z");
        assert_eq!(format_unix(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    fn rcgen_cert(not_after: (i32, u8, u8)) -> (Vec<u8>, i64) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.der().to_vec(), params.not_after.unix_timestamp())
    }

    #[test]
    fn reads_not_after_of_real_certificates() {
        // 2049 is still UTCTime, 2050 and later GeneralizedTime (RFC 5280).
        for date in [(2031, 5, 17), (2049, 12, 31), (2050, 1, 1), (2120, 2, 29)] {
            let (der, expected) = rcgen_cert(date);
            assert_eq!(not_after(&der), Ok(expected), "{date:?}");
        }
    }

    #[test]
    fn earliest_skips_garbage_and_picks_the_minimum() {
        let (a, a_exp) = rcgen_cert((2031, 5, 17));
        let (b, _) = rcgen_cert((2040, 1, 1));
        let chain = [&b[..], &b"garbage"[..], &a[..]];
        assert_eq!(earliest_not_after(chain), Some(a_exp));
        assert_eq!(earliest_not_after([&b"\x30\x00"[..]]), None);
    }

    #[test]
    fn structural_errors_are_typed() {
        assert_eq!(not_after(b""), Err(CertError::Truncated));
        assert_eq!(not_after(b"\x30\x05\x01"), Err(CertError::Truncated));
        assert_eq!(not_after(b"\x30\x80\x00\x00"), Err(CertError::BadLength));
        assert_eq!(
            not_after(b"\x30\x85\x01\x01\x01\x01\x01"),
            Err(CertError::BadLength)
        );
        assert!(matches!(
            not_after(b"\x04\x00"),
            Err(CertError::UnexpectedTag { found: 0x04, .. })
        ));
        assert!(matches!(
            not_after(b"\x1f\x00"),
            Err(CertError::UnexpectedTag { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = not_after(&bytes);
        }

        #[test]
        fn sequence_wrapped_random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            // A plausible outer header gets the walker past the first checks.
            let mut der = vec![0x30, 0x82, (bytes.len() >> 8) as u8, bytes.len() as u8];
            der.extend_from_slice(&bytes);
            let _ = not_after(&der);
        }

        #[test]
        fn mutated_certificates_never_panic(
            pos in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let der = fixture_cert();
            let mut der = der.to_vec();
            let i = pos.index(der.len());
            der[i] = byte;
            der.truncate(cut.index(der.len() + 1));
            let _ = not_after(&der);
        }
    }

    fn fixture_cert() -> &'static [u8] {
        static CERT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        CERT.get_or_init(|| rcgen_cert((2031, 5, 17)).0)
    }
}
