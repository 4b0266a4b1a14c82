//! Pieces both text formats share: character classes, quoted strings and their escapes, label
//! blocks, and floats read and written the way Prometheus (Go's `strconv`) does.

use std::borrow::Cow;

use super::{LineError, LineResult, ParseErrorKind, RawLabel};

/// Bit pattern of the NaN Prometheus stores for any NaN a target exposes, so that a target
/// can never inject a staleness marker.
pub const NORMAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;

pub(super) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Character classes of name bytes, one table lookup a byte: metric and label names are most
/// of what a parser scans.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphabetic() || c == b'_' {
            t[b] = METRIC_START | METRIC | LABEL_START | LABEL;
        } else if c.is_ascii_digit() {
            t[b] = METRIC | LABEL;
        } else if c == b':' {
            t[b] = METRIC_START | METRIC;
        }
        b += 1;
    }
    t
};
const METRIC_START: u8 = 1;
const METRIC: u8 = 2;
const LABEL_START: u8 = 4;
const LABEL: u8 = 8;

fn class(b: u8, of: u8) -> bool {
    CLASS[b as usize] & of != 0
}

pub(super) fn is_metric_start(b: u8) -> bool {
    class(b, METRIC_START)
}

pub(super) fn is_metric_char(b: u8) -> bool {
    class(b, METRIC)
}

fn is_label_start(b: u8) -> bool {
    class(b, LABEL_START)
}

fn is_label_char(b: u8) -> bool {
    class(b, LABEL)
}

/// Index of the first byte at or after `i` that fails `f` (or the end).
pub(super) fn scan_while(b: &[u8], mut i: usize, f: impl Fn(u8) -> bool) -> usize {
    while b.get(i).is_some_and(|&c| f(c)) {
        i += 1;
    }
    i
}

pub(super) fn skip_ws(b: &[u8], i: usize) -> usize {
    scan_while(b, i, is_ws)
}

/// Describes what is at `pos` for an error message.
pub(super) fn found(line: &str, pos: usize) -> String {
    match line.get(pos..).and_then(|s| s.chars().next()) {
        None => "end of line".to_string(),
        Some(c) => format!("{c:?}"),
    }
}

pub(super) fn expected(line: &str, pos: usize, what: &'static str) -> LineError {
    LineError {
        pos,
        kind: ParseErrorKind::Expected {
            expected: what,
            found: found(line, pos),
        },
    }
}

/// Scans a quoted string starting at the `"` at `start`; returns the index past the closing
/// quote. A backslash always takes the next byte with it, so `\"` never closes the string.
pub(super) fn scan_quoted(line: &str, start: usize) -> LineResult<usize> {
    let b = line.as_bytes();
    let mut i = start + 1;
    loop {
        match b.get(i) {
            None => return Err(expected(line, line.len(), "a closing '\"'")),
            Some(b'\\') => i += 2,
            Some(b'"') => return Ok(i + 1),
            Some(_) => i += 1,
        }
    }
}

/// The content of the quoted string spanning `start..end` (quotes included).
pub(super) fn quoted_content(line: &str, start: usize, end: usize) -> &str {
    line.get(start + 1..end.saturating_sub(1)).unwrap_or("")
}

/// Undoes escaping: `\\` and `\n` always, `\"` unless `help_only` (text-format help text).
/// Any other backslash stays as it is, as Prometheus leaves it.
pub(super) fn unescape(s: &str, help_only: bool) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.clone().next() {
            Some('\\') => {
                out.push('\\');
                chars.next();
            }
            Some('n') => {
                out.push('\n');
                chars.next();
            }
            Some('"') if !help_only => {
                out.push('"');
                chars.next();
            }
            _ => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// Reads a metric name at `i`: a bare name or a quoted one (which must still be a legacy
/// name). Returns the unescaped name and the index past it.
pub(super) fn metric_name<'a>(
    line: &'a str,
    i: usize,
    what: &'static str,
) -> LineResult<(Cow<'a, str>, usize)> {
    let b = line.as_bytes();
    match b.get(i) {
        Some(&c) if is_metric_start(c) => {
            let end = scan_while(b, i, is_metric_char);
            Ok((Cow::Borrowed(line.get(i..end).unwrap_or("")), end))
        }
        Some(b'"') => {
            let end = scan_quoted(line, i)?;
            let name = unescape(quoted_content(line, i, end), false);
            if !crate::series::is_valid_metric_name(&name) {
                return Err(LineError {
                    pos: i,
                    kind: ParseErrorKind::InvalidName(name.into_owned()),
                });
            }
            Ok((name, end))
        }
        _ => Err(expected(line, i, what)),
    }
}

/// How a label block is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LabelMode {
    /// Text format: blanks between tokens, commas optional between pairs.
    Text,
    /// OpenMetrics series: no blanks, commas required (a trailing one is allowed).
    OpenMetrics,
    /// OpenMetrics exemplar: as a series, but no metric name inside the braces.
    Exemplar,
}

/// Where a label block that starts just after its `{` ends (the index past its `}`), by a
/// quick scan that only tracks quoted strings; `None` if the line ends first. For a valid block
/// this is where [`label_block`] ends too.
pub(super) fn label_block_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut quoted = false;
    loop {
        // Only `"`, `\\` and `}` can change anything: jump to the next one a word at a time.
        if let Some(word) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
            let found = specials(u64::from_le_bytes(word));
            if found == 0 {
                i += 8;
                continue;
            }
            // The lowest flag is exact (only flags above a match can be false).
            i += (found.trailing_zeros() / 8) as usize;
        }
        let &c = b.get(i)?;
        match (quoted, c) {
            (true, b'\\') => i += 1,
            (true, b'"') => quoted = false,
            (false, b'"') => quoted = true,
            (false, b'}') => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
}

/// The high bit of each byte of `w` that may be `"`, `\\` or `}`: none is flagged unless one
/// of them is there, and the lowest flagged byte is one of them.
fn specials(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_at = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    zero_at(w ^ (ONES * u64::from(b'"')))
        | zero_at(w ^ (ONES * u64::from(b'\\')))
        | zero_at(w ^ (ONES * u64::from(b'}')))
}

/// Parses a label block from just after its `{`; returns the index past the `}`. A quoted
/// string followed by `,` or `}` is the metric name, which fills `name`.
pub(super) fn label_block<'a>(
    line: &'a str,
    mut i: usize,
    mode: LabelMode,
    name: &mut Option<(Cow<'a, str>, usize)>,
    out: &mut Vec<RawLabel<'a>>,
) -> LineResult<usize> {
    let b = line.as_bytes();
    let blanks = mode == LabelMode::Text;
    loop {
        if blanks {
            i = skip_ws(b, i);
        }
        let start = i;
        let (lname, quoted) = match b.get(i) {
            Some(b'}') => return Ok(i + 1),
            Some(&c) if is_label_start(c) => {
                i = scan_while(b, i, is_label_char);
                (line.get(start..i).unwrap_or(""), false)
            }
            Some(b'"') => {
                i = scan_quoted(line, i)?;
                (quoted_content(line, start, i), true)
            }
            _ => return Err(expected(line, i, "a label name or '}'")),
        };
        if blanks {
            i = skip_ws(b, i);
        }
        if quoted && mode != LabelMode::Exemplar && matches!(b.get(i), Some(b',' | b'}')) {
            if name.is_some() {
                return Err(LineError {
                    pos: start,
                    kind: ParseErrorKind::NameTwice,
                });
            }
            let n = unescape(lname, false);
            if !crate::series::is_valid_metric_name(&n) {
                return Err(LineError {
                    pos: start,
                    kind: ParseErrorKind::InvalidName(n.into_owned()),
                });
            }
            *name = Some((n, start));
            if b.get(i) == Some(&b',') {
                i += 1;
            }
            continue;
        }
        if b.get(i) != Some(&b'=') {
            return Err(expected(line, i, "'='"));
        }
        i += 1;
        if blanks {
            i = skip_ws(b, i);
        }
        if b.get(i) != Some(&b'"') {
            return Err(expected(line, i, "a quoted label value"));
        }
        let end = scan_quoted(line, i)?;
        out.push(RawLabel {
            name: lname,
            quoted,
            pos: start,
            value: quoted_content(line, i, end),
        });
        i = end;
        if blanks {
            i = skip_ws(b, i);
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            // Prometheus' text parser takes the next pair even without a comma.
            _ if blanks => {}
            _ => return Err(expected(line, i, "',' or '}'")),
        }
    }
}

/// Reads a float as Prometheus does: Go's `strconv.ParseFloat` without hex floats or
/// underscores. `Inf`/`Infinity` (any case, optional sign) and `NaN` (any case, no sign) are
/// accepted; out-of-range values are refused; NaN comes back as the normal NaN.
pub fn parse_go_float(s: &str) -> Option<f64> {
    if let Some(v) = plain_decimal(s.as_bytes()) {
        return Some(v);
    }
    if s.is_empty() || s.bytes().any(|b| matches!(b, b'p' | b'P' | b'_')) {
        return None;
    }
    let (negative, signed, rest) = if let Some(r) = s.strip_prefix('-') {
        (true, true, r)
    } else if let Some(r) = s.strip_prefix('+') {
        (false, true, r)
    } else {
        (false, false, s)
    };
    if rest.eq_ignore_ascii_case("inf") || rest.eq_ignore_ascii_case("infinity") {
        return Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if !signed && rest.eq_ignore_ascii_case("nan") {
        return Some(f64::from_bits(NORMAL_NAN_BITS));
    }
    // Only what Go accepts for a decimal float may reach Rust's parser, which also knows
    // words like "nan" after a sign.
    if !rest
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    // Go reports overflow as an error rather than returning infinity.
    if v.is_infinite() {
        return None;
    }
    Some(v)
}

/// Largest integer below which every integer is exactly an `f64`.
const EXACT_INT: u64 = 1 << 53;

/// Powers of ten that are exactly `f64`s.
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Most exposed values, read without a general float parser: an optional sign, digits and at
/// most one `.`, whose digits make an integer below 2^53 with at most 22 after the point.
/// Both that integer and the power of ten are then exact, so one division, which IEEE 754
/// rounds correctly, gives the correctly rounded value every parser agrees on. `None`
/// for anything else (exponents, words, long mantissas), which takes the general path.
fn plain_decimal(s: &[u8]) -> Option<f64> {
    let (negative, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, s),
    };
    let mut mantissa = 0u64;
    let mut any_digit = false;
    let mut point = false;
    let mut after_point = 0usize;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                if mantissa >= EXACT_INT {
                    return None;
                }
                any_digit = true;
                if point {
                    after_point += 1;
                }
            }
            b'.' if !point => point = true,
            _ => return None,
        }
    }
    if !any_digit {
        return None;
    }
    let v = mantissa as f64 / EXACT_POW10.get(after_point)?;
    Some(if negative { -v } else { v })
}

/// Writes a float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` does, with Prometheus'
/// `+Inf`, `-Inf` and `NaN`: the shortest text that reads back to the same value.
pub fn format_go_float(v: f64) -> String {
    let mut out = String::new();
    write_go_float(&mut out, v);
    out
}

pub(super) fn write_go_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if v == 0.0 {
        out.push_str(if v.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits and the decimal exponent.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if mantissa.starts_with('-') {
        out.push('-');
    }
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let nd = digits.len() as i32;
    // Go switches to exponent form below 1e-4 and from 1e6 when asked for the shortest form.
    if !(-4..6).contains(&exp) {
        let mut chars = digits.chars();
        if let Some(first) = chars.next() {
            out.push(first);
        }
        let rest = chars.as_str();
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        out.push_str(&e.to_string());
        return;
    }
    let dp = exp + 1;
    if dp <= 0 {
        out.push_str("0.");
        for _ in 0..-dp {
            out.push('0');
        }
        out.push_str(&digits);
    } else if dp >= nd {
        out.push_str(&digits);
        for _ in 0..dp - nd {
            out.push('0');
        }
    } else {
        let (int, frac) = digits.split_at(dp as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    }
}

/// The canonical form Prometheus gives `le` and `quantile` values (`1` → `1.0`,
/// `1e3` → `1000.0`, `inf` → `+Inf`), or `None` when the value is not a float or is
/// already canonical.
pub(super) fn canonical_float_label(v: &str) -> Option<String> {
    let f = parse_go_float(v)?;
    let s = if f.is_nan() || f.is_infinite() {
        format_go_float(f)
    } else if f == 0.0 {
        "0.0".to_string()
    } else {
        let mut s = format_go_float(f);
        if !s.contains(['e', '.']) {
            s.push_str(".0");
        }
        s
    };
    (s != v).then_some(s)
}
