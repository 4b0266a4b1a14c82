//! The Prometheus text format 0.0.4, read as Prometheus' own parser reads it: blanks allowed
//! between tokens, blank lines and `#` comments skipped, `# HELP` and `# TYPE` lines kept,
//! integer millisecond timestamps, and a last line that may lack its newline.

use std::borrow::Cow;

use super::lex::{self, expected, label_block, metric_name, scan_while, skip_ws, LabelMode};
use super::{
    Builder, FamilyType, LineError, LineResult, ParseError, ParseErrorKind, Point, RawLabel, Sink,
};

/// Parses a whole text-format body into `out`.
pub(super) fn parse<S: Sink>(body: &str, out: &mut Builder<'_, S>) -> Result<(), ParseError> {
    let mut labels: Vec<RawLabel<'_>> = Vec::new();
    // As `body.split('\n')`, with a vectorised search for the newlines.
    let ends = memchr::memchr_iter(b'\n', body.as_bytes()).chain(std::iter::once(body.len()));
    let mut start = 0;
    for (idx, end) in ends.enumerate() {
        // A newline is one byte of ASCII, so both ends are character boundaries.
        let line = body.get(start..end).unwrap_or("");
        line_entry(line, out, &mut labels).map_err(|e| e.at(idx + 1, line))?;
        start = end + 1;
    }
    Ok(())
}

fn line_entry<'a, S: Sink>(
    line: &'a str,
    out: &mut Builder<'_, S>,
    labels: &mut Vec<RawLabel<'a>>,
) -> LineResult<()> {
    let b = line.as_bytes();
    let start = skip_ws(b, 0);
    match b.get(start) {
        None => Ok(()),
        Some(b'#') => comment(line, start + 1, out),
        Some(_) => sample(line, start, out, labels),
    }
}

/// A `#` line: `# HELP` and `# TYPE` (blank-separated) are metadata, anything else is skipped.
fn comment<S: Sink>(line: &str, after_hash: usize, out: &mut Builder<'_, S>) -> LineResult<()> {
    let b = line.as_bytes();
    if !b.get(after_hash).copied().is_some_and(lex::is_ws) {
        return Ok(());
    }
    let word = skip_ws(b, after_hash);
    let rest = line.get(word..).unwrap_or("");
    let help = if rest.starts_with("HELP") {
        true
    } else if rest.starts_with("TYPE") {
        false
    } else {
        return Ok(());
    };
    // `# HELPFUL note` is a plain comment.
    if !b.get(word + 4).copied().is_some_and(lex::is_ws) {
        return Ok(());
    }
    let name_at = skip_ws(b, word + 4);
    let what = if help {
        "a metric name after HELP"
    } else {
        "a metric name after TYPE"
    };
    let (name, name_end) = metric_name(line, name_at, what)?;
    let tail = line.get(name_end..).unwrap_or("");
    // Prometheus takes the rest of the line minus its first character (the separator).
    let text = if tail.bytes().all(lex::is_ws) {
        ""
    } else {
        let mut chars = tail.chars();
        chars.next();
        chars.as_str()
    };
    if help {
        let help = lex::unescape(text, true).into_owned();
        if let Some(f) = out.meta(&name) {
            f.help = Some(help);
        }
    } else {
        let kind = match text {
            "counter" => FamilyType::Counter,
            "gauge" => FamilyType::Gauge,
            "histogram" => FamilyType::Histogram,
            "summary" => FamilyType::Summary,
            "untyped" => FamilyType::Unknown,
            _ => {
                return Err(LineError {
                    pos: name_end + 1,
                    kind: ParseErrorKind::InvalidType(text.to_string()),
                })
            }
        };
        if let Some(f) = out.meta(&name) {
            f.kind = kind;
        }
    }
    Ok(())
}

fn sample<'a, S: Sink>(
    line: &'a str,
    start: usize,
    out: &mut Builder<'_, S>,
    labels: &mut Vec<RawLabel<'a>>,
) -> LineResult<()> {
    let b = line.as_bytes();
    labels.clear();
    let mut name: Option<(Cow<'a, str>, usize)> = None;
    let mut i;
    let series_end;
    let mut hit = None;
    // The key of this line's series text, when the cache was asked about it and missed.
    let mut missed = None;
    match b.get(start) {
        Some(&c) if lex::is_metric_start(c) => {
            let end = scan_while(b, start, lex::is_metric_char);
            let metric = line.get(start..end).unwrap_or("");
            name = Some((Cow::Borrowed(metric), start));
            i = skip_ws(b, end);
            if b.get(i) == Some(&b'{') {
                // A series text seen in a recent scrape parsed then: skip lexing its labels.
                // A text that ends where the lexer would not have ended it is no such text,
                // so a bad line cannot slip through here.
                let known = lex::label_block_end(b, i + 1).and_then(|e| {
                    let raw = line.get(start..e)?;
                    match out.cached(raw, metric) {
                        Ok(hit) => Some((hit, e)),
                        Err(key) => {
                            missed = Some(key);
                            None
                        }
                    }
                });
                i = match known {
                    Some((h, e)) => {
                        hit = Some(h);
                        e
                    }
                    None => label_block(line, i + 1, LabelMode::Text, &mut name, labels)?,
                };
                series_end = i;
            } else {
                series_end = end;
            }
        }
        Some(b'{') => {
            i = label_block(line, start + 1, LabelMode::Text, &mut name, labels)?;
            series_end = i;
        }
        _ => {
            return Err(expected(
                line,
                start,
                "a metric name, '{', a comment or a blank line",
            ))
        }
    }
    let Some((name, name_pos)) = name else {
        return Err(LineError {
            pos: start,
            kind: ParseErrorKind::MissingName,
        });
    };
    i = skip_ws(b, i);
    let value_end = scan_while(b, i, |c| !lex::is_ws(c) && c != b'{');
    if value_end == i {
        return Err(expected(line, i, "a value after the series"));
    }
    let raw_value = line.get(i..value_end).unwrap_or("");
    let value = lex::parse_go_float(raw_value).ok_or_else(|| LineError {
        pos: i,
        kind: ParseErrorKind::InvalidValue(raw_value.to_string()),
    })?;
    i = skip_ws(b, value_end);
    let timestamp_ms = match b.get(i) {
        None => None,
        Some(c) if c.is_ascii_digit() => {
            let end = scan_while(b, i, |c| c.is_ascii_digit());
            let raw = line.get(i..end).unwrap_or("");
            let ts = raw.parse::<i64>().map_err(|_| LineError {
                pos: i,
                kind: ParseErrorKind::InvalidTimestamp(raw.to_string()),
            })?;
            let after = skip_ws(b, end);
            if after < b.len() {
                return Err(expected(line, after, "end of line after the timestamp"));
            }
            Some(ts)
        }
        Some(_) => return Err(expected(line, i, "a timestamp or end of line")),
    };
    let point = Point::new(value, timestamp_ms, None);
    if let Some(hit) = hit {
        out.push(hit, point);
        return Ok(());
    }
    let raw = line.get(start..series_end).unwrap_or("");
    // A miss above is added under the key it missed with: the quick scan's text, which is
    // what later scrapes look up (for a valid line, the lexer ends it in the same place).
    out.sample(raw, &name, name_pos, labels, point, missed)
}
