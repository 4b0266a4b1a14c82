//! OpenMetrics 1.0 text, read as Prometheus reads it: single spaces as separators, no blank
//! lines and no comments other than `# HELP`, `# TYPE`, `# UNIT`; float-second timestamps;
//! exemplars after ` # `; and a final `# EOF` with nothing after it.

use std::borrow::Cow;

use super::lex::{self, expected, label_block, metric_name, scan_while, LabelMode};
use super::{
    exemplar_labels, Builder, Exemplar, FamilyType, LineError, LineResult, ParseError,
    ParseErrorKind, Point, RawLabel, Sink,
};

/// What a line turned out to be.
enum Entry {
    Line,
    Eof,
}

/// Parses a whole OpenMetrics body into `out`.
pub(super) fn parse<S: Sink>(body: &str, out: &mut Builder<'_, S>) -> Result<(), ParseError> {
    let mut labels: Vec<RawLabel<'_>> = Vec::new();
    let mut ex_labels: Vec<RawLabel<'_>> = Vec::new();
    let mut rest = body;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, has_newline, next) = match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(i) => (
                rest.get(..i).unwrap_or(""),
                true,
                rest.get(i + 1..).unwrap_or(""),
            ),
            None => (rest, false, ""),
        };
        rest = next;
        let entry =
            line_entry(line, out, &mut labels, &mut ex_labels).map_err(|e| e.at(line_no, line))?;
        match entry {
            Entry::Eof if rest.is_empty() => return Ok(()),
            Entry::Eof => {
                return Err(LineError {
                    pos: 0,
                    kind: ParseErrorKind::DataAfterEof,
                }
                .at(line_no + 1, rest))
            }
            // Every line but `# EOF` must end in a newline.
            Entry::Line if !has_newline => {
                return Err(LineError {
                    pos: line.len(),
                    kind: ParseErrorKind::MissingEof,
                }
                .at(line_no, line))
            }
            Entry::Line => {}
        }
    }
    Err(ParseError::At {
        line: line_no + 1,
        column: 1,
        kind: ParseErrorKind::MissingEof,
    })
}

fn line_entry<'a, S: Sink>(
    line: &'a str,
    out: &mut Builder<'_, S>,
    labels: &mut Vec<RawLabel<'a>>,
    ex_labels: &mut Vec<RawLabel<'a>>,
) -> LineResult<Entry> {
    match line.as_bytes().first() {
        None => Err(expected(
            line,
            0,
            "a metric name, '{' or '# ' (no blank lines)",
        )),
        Some(b'#') => metadata(line, out),
        Some(_) => sample(line, out, labels, ex_labels).map(|()| Entry::Line),
    }
}

fn metadata<S: Sink>(line: &str, out: &mut Builder<'_, S>) -> LineResult<Entry> {
    if line == "# EOF" {
        return Ok(Entry::Eof);
    }
    #[derive(PartialEq)]
    enum Meta {
        Help,
        Type,
        Unit,
    }
    let (meta, what) = if line.starts_with("# HELP ") {
        (Meta::Help, "a metric name after HELP")
    } else if line.starts_with("# TYPE ") {
        (Meta::Type, "a metric name after TYPE")
    } else if line.starts_with("# UNIT ") {
        (Meta::Unit, "a metric name after UNIT")
    } else {
        return Err(LineError {
            pos: 0,
            kind: ParseErrorKind::Expected {
                expected: "\"# HELP \", \"# TYPE \", \"# UNIT \" or \"# EOF\"",
                found: format!("{:?}", line.chars().take(16).collect::<String>()),
            },
        });
    };
    let (name, name_end) = metric_name(line, 7, what)?;
    if line.as_bytes().get(name_end) != Some(&b' ') {
        return Err(expected(line, name_end, "' ' and the text after the name"));
    }
    let text = line.get(name_end + 1..).unwrap_or("");
    match meta {
        Meta::Help => {
            let help = lex::unescape(text, false).into_owned();
            if let Some(f) = out.meta(&name) {
                f.help = Some(help);
            }
        }
        Meta::Type => {
            let kind = match text {
                "counter" => FamilyType::Counter,
                "gauge" => FamilyType::Gauge,
                "histogram" => FamilyType::Histogram,
                "gaugehistogram" => FamilyType::GaugeHistogram,
                "summary" => FamilyType::Summary,
                "info" => FamilyType::Info,
                "stateset" => FamilyType::StateSet,
                "unknown" => FamilyType::Unknown,
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
        Meta::Unit => {
            if !text.is_empty()
                && name
                    .strip_suffix(text)
                    .is_none_or(|base| !base.ends_with('_'))
            {
                return Err(LineError {
                    pos: name_end + 1,
                    kind: ParseErrorKind::UnitNotSuffix {
                        unit: text.to_string(),
                        metric: name.into_owned(),
                    },
                });
            }
            let unit = (!text.is_empty()).then(|| text.to_string());
            if let Some(f) = out.meta(&name) {
                f.unit = unit;
            }
        }
    }
    Ok(Entry::Line)
}

fn sample<'a, S: Sink>(
    line: &'a str,
    out: &mut Builder<'_, S>,
    labels: &mut Vec<RawLabel<'a>>,
    ex_labels: &mut Vec<RawLabel<'a>>,
) -> LineResult<()> {
    let b = line.as_bytes();
    labels.clear();
    let mut name: Option<(Cow<'a, str>, usize)> = None;
    let mut i = match b.first() {
        Some(&c) if lex::is_metric_start(c) => {
            let end = scan_while(b, 0, lex::is_metric_char);
            name = Some((Cow::Borrowed(line.get(..end).unwrap_or("")), 0));
            end
        }
        Some(b'{') => 0,
        _ => return Err(expected(line, 0, "a metric name, '{' or '# '")),
    };
    if b.get(i) == Some(&b'{') {
        i = label_block(line, i + 1, LabelMode::OpenMetrics, &mut name, labels)?;
    }
    let series_end = i;
    let Some((name, name_pos)) = name else {
        return Err(LineError {
            pos: 0,
            kind: ParseErrorKind::MissingName,
        });
    };
    if b.get(i) != Some(&b' ') {
        return Err(expected(line, i, "' ' and a value after the series"));
    }
    let (value, mut i) = float_token(line, i + 1, "a value after the series")?;
    let mut timestamp_ms = None;
    let mut exemplar = None;
    if is_exemplar_start(line, i) {
        exemplar = Some(parse_exemplar(line, i + 4, ex_labels)?);
    } else if b.get(i) == Some(&b' ') {
        let (ts, end) = timestamp(line, i + 1, "a timestamp or ' # ' and an exemplar")?;
        timestamp_ms = Some(ts);
        i = end;
        if is_exemplar_start(line, i) {
            exemplar = Some(parse_exemplar(line, i + 4, ex_labels)?);
        } else if i < b.len() {
            return Err(expected(line, i, "end of line or ' # ' and an exemplar"));
        }
    }
    let raw = line.get(..series_end).unwrap_or("");
    out.sample(
        raw,
        &name,
        name_pos,
        labels,
        Point::new(value, timestamp_ms, exemplar),
        None,
    )
}

fn is_exemplar_start(line: &str, i: usize) -> bool {
    line.get(i..).is_some_and(|s| s.starts_with(" # {"))
}

/// Reads a space-free token at `i` as a float; returns it and the index past it.
fn float_token(line: &str, i: usize, what: &'static str) -> LineResult<(f64, usize)> {
    let end = scan_while(line.as_bytes(), i, |c| c != b' ');
    if end == i {
        return Err(expected(line, i, what));
    }
    let raw = line.get(i..end).unwrap_or("");
    let v = lex::parse_go_float(raw).ok_or_else(|| LineError {
        pos: i,
        kind: ParseErrorKind::InvalidValue(raw.to_string()),
    })?;
    Ok((v, end))
}

/// Reads a timestamp in float seconds and returns whole milliseconds (truncated, as
/// Prometheus does).
fn timestamp(line: &str, i: usize, what: &'static str) -> LineResult<(i64, usize)> {
    let end = scan_while(line.as_bytes(), i, |c| c != b' ');
    if end == i {
        return Err(expected(line, i, what));
    }
    let raw = line.get(i..end).unwrap_or("");
    match lex::parse_go_float(raw) {
        Some(s) if s.is_finite() => Ok(((s * 1000.0) as i64, end)),
        _ => Err(LineError {
            pos: i,
            kind: ParseErrorKind::InvalidTimestamp(raw.to_string()),
        }),
    }
}

/// Parses an exemplar from just after ` # {` to the end of the line.
fn parse_exemplar<'a>(
    line: &'a str,
    i: usize,
    ex_labels: &mut Vec<RawLabel<'a>>,
) -> LineResult<Box<Exemplar>> {
    let b = line.as_bytes();
    ex_labels.clear();
    let mut no_name = None;
    let i = label_block(line, i, LabelMode::Exemplar, &mut no_name, ex_labels)?;
    if b.get(i) != Some(&b' ') {
        return Err(expected(
            line,
            i,
            "' ' and a value after the exemplar labels",
        ));
    }
    let (value, i) = float_token(line, i + 1, "a value after the exemplar labels")?;
    let mut timestamp_ms = None;
    if b.get(i) == Some(&b' ') {
        let (ts, end) = timestamp(line, i + 1, "an exemplar timestamp")?;
        timestamp_ms = Some(ts);
        if end < b.len() {
            return Err(expected(line, end, "end of line after the exemplar"));
        }
    }
    Ok(Box::new(Exemplar {
        labels: exemplar_labels(ex_labels)?,
        value,
        timestamp_ms,
    }))
}
