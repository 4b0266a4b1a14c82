//! Durations written the Prometheus way: `500ms`, `30s`, `5m`, `1h30m`, `1d`; units from
//! largest to smallest, each at most once, so `1s1m` and `1s1s` are refused as Prometheus
//! refuses them. None is longer than [`MAX_DURATION`], so that adding one to a clock reading
//! (`Instant::now() + timeout`) can never overflow; the validators bound some keys tighter.

use std::fmt;
use std::time::Duration;

/// A duration read from configuration; serializes back in the same notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ConfigDuration(pub Duration);

/// Longest duration read: ten years, far beyond any sensible setting and far below where
/// clock arithmetic overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_536_000);

/// The units, largest first, with their length in milliseconds; Prometheus' order.
const UNITS: [(&str, u128); 7] = [
    ("y", 31_536_000_000),
    ("w", 604_800_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a Prometheus-style duration: units from largest to smallest, each at most once,
/// as Prometheus' `model.ParseDuration` takes them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ms: u128 = 0;
    let mut rest = t;
    // Index in UNITS of the previous unit: each must be smaller than the one before it.
    let mut previous: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration (expected e.g. \"30s\", \"1m30s\")"
            ));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(if unit.is_empty() {
                format!("{text:?}: missing unit (ms, s, m, h, d, w, y)")
            } else {
                format!("{text:?}: unknown unit {unit:?} (ms, s, m, h, d, w, y)")
            });
        };
        if let Some(p) = previous.filter(|p| *p >= index) {
            let problem = if p == index {
                format!("unit {unit:?} is repeated")
            } else {
                format!("unit {unit:?} comes after the smaller {:?}", UNITS[p].0)
            };
            return Err(format!(
                "{text:?}: {problem}; write units from largest to smallest, each once \
                 (y, w, d, h, m, s, ms), e.g. \"1h30m\""
            ));
        }
        previous = Some(index);
        rest = &rest[unit_len..];
        total_ms = n
            .checked_mul(UNITS[index].1)
            .and_then(|v| v.checked_add(total_ms))
            .ok_or_else(|| format!("{text:?}: duration too large"))?;
    }
    if total_ms > MAX_DURATION.as_millis() {
        return Err(format!("{text:?}: duration too large (at most 10y)"));
    }
    // Within MAX_DURATION, so within u64 milliseconds.
    let ms = u64::try_from(total_ms).map_err(|_| format!("{text:?}: duration too large"))?;
    Ok(Duration::from_millis(ms))
}

/// Formats a duration in the notation [`parse_duration`] reads.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl serde::Serialize for ConfigDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(ConfigDuration)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999999y").is_err());
    }

    #[test]
    fn durations_are_at_most_ten_years() {
        assert_eq!(parse_duration("10y"), Ok(MAX_DURATION));
        for text in [
            "18446744073709551615ms",
            "10y1ms",
            "11y",
            "522w",
            "99999999999999999999999999999999999999999y",
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains("too large"), "{text}: {e}");
        }
        // The largest duration read still fits clock arithmetic.
        assert!(std::time::Instant::now()
            .checked_add(MAX_DURATION)
            .is_some());
    }

    #[test]
    fn formats_back() {
        for t in ["30s", "1h30m", "250ms", "1d2h"] {
            assert_eq!(format_duration(parse_duration(t).unwrap()), t);
        }
    }

    #[test]
    fn units_go_from_largest_to_smallest_each_once() {
        let ok = [
            ("1h30m", Duration::from_secs(5400)),
            ("1m30s500ms", Duration::from_millis(90_500)),
            (
                "1y1w1d1h1m1s1ms",
                Duration::from_millis(
                    31_536_000_000 + 604_800_000 + 86_400_000 + 3_600_000 + 61_001,
                ),
            ),
            ("2d12h", Duration::from_secs(216_000)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        let refused = [
            ("1s1m", "unit \"m\" comes after the smaller \"s\""),
            ("1s1s", "unit \"s\" is repeated"),
            ("1m1h", "unit \"h\" comes after the smaller \"m\""),
            ("500ms1s", "unit \"s\" comes after the smaller \"ms\""),
            ("1h30m1h", "unit \"h\" comes after the smaller \"m\""),
            ("1d1d", "unit \"d\" is repeated"),
        ];
        for (text, want) in refused {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.contains("largest to smallest"), "{text}: {e}");
        }
    }
}
