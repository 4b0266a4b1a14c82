//! `pushprobe check`: the human view of one round of probes, as a table or as JSON.
//!
//! Every rendering here is a pure function of the reports (and, after `--push`, of each sink's
//! delivery), so they are tested with fixed values; the command itself is `once` with the
//! sinks left out (unless `--push`).
//!
//! The table keeps one line per probe within the width (100 columns): mark, name, status,
//! latency and the failure reason, cut short with `…`. `--verbose` adds the whole reason and
//! every detail, indented under the probe's line. Numbers are rounded here, for display only:
//! the reports, and so the JSON, keep them exact.

pub mod discovery;

use std::fmt::Write as _;

use crate::agent::SinkDelivery;
use crate::probe::{Detail, ProbeReport};

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The table's width when nothing says otherwise: what a default terminal shows.
pub const DEFAULT_WIDTH: usize = 100;

/// Longest status shown; the longest pushprobe sets is `ok (spend limit reached)`.
const STATUS_MAX: usize = 24;

/// Fewest columns worth giving a reason on the probe's line; with less room, only
/// `--verbose` shows it.
const MIN_REASON: usize = 8;

/// Indentation of the verbose lines under a probe's line.
const INDENT: &str = "    ";

/// Whether to colour the table: only on a terminal, and never when `NO_COLOR` is set to
/// anything non-empty (<https://no-color.org>).
pub fn use_colour(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// How the table is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStyle {
    /// ANSI colours for marks and reasons.
    pub colour: bool,
    /// Every detail and the whole reason, under each probe's line.
    pub verbose: bool,
    /// Columns a line may take.
    pub width: usize,
}

impl Default for TableStyle {
    fn default() -> Self {
        TableStyle {
            colour: false,
            verbose: false,
            width: DEFAULT_WIDTH,
        }
    }
}

impl TableStyle {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour && !text.is_empty() {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

/// Latency as shown in the table: whole milliseconds, one decimal below 10 ms.
pub fn format_latency(d: std::time::Duration) -> String {
    format_millis(d.as_secs_f64() * 1000.0)
}

fn format_millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Dollars as shown in the table: cents from a cent up (`$1.50`), two significant digits
/// below (`$0.0000027`, `$0.00002`). Display only: counters and JSON keep the exact sum.
pub(crate) fn format_dollars(dollars: f64) -> String {
    if !dollars.is_finite() || dollars == 0.0 {
        return format!("${dollars}");
    }
    if dollars.abs() >= 0.01 {
        return format!("${dollars:.2}");
    }
    // Below a cent the first significant digit is at 10^e, e <= -3; one more makes two.
    let e = dollars.abs().log10().floor() as i32;
    let decimals = usize::try_from(1 - e).unwrap_or(2);
    let text = format!("{dollars:.decimals$}");
    format!("${}", text.trim_end_matches('0').trim_end_matches('.'))
}

/// A detail's value as shown under `--verbose`.
pub(crate) fn format_detail(value: &Detail) -> String {
    match value {
        Detail::Text(t) => one_line(t),
        Detail::Count(n) => n.to_string(),
        Detail::Seconds(s) => format_millis(s * 1000.0),
        Detail::Dollars(d) => format_dollars(*d),
        Detail::PerSecond(r) => format!("{r:.1}"),
        Detail::Flag(b) => if *b { "yes" } else { "no" }.to_string(),
    }
}

/// A detail's name as shown under `--verbose`: the unit the value now shows is dropped.
fn detail_label<'a>(key: &'a str, value: &Detail) -> &'a str {
    let suffix = match value {
        Detail::Seconds(_) => "_seconds",
        Detail::Dollars(_) => "_dollars",
        _ => return key,
    };
    key.strip_suffix(suffix).unwrap_or(key)
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(width(s))))
}

fn pad_left(s: &str, w: usize) -> String {
    format!("{}{s}", " ".repeat(w.saturating_sub(width(s))))
}

/// `s` in at most `max` columns, its end replaced by `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Text on one line: newlines, tabs and runs of spaces become one space, so that a reason
/// quoting a server cannot break the table.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits `text` into lines of at most `max` columns, at spaces where it can.
fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word = word.to_string();
        while width(&word) > max {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(max).collect();
            word = word.chars().skip(max).collect();
            lines.push(head);
        }
        if line.is_empty() {
            line = word;
        } else if width(&line) + 1 + width(&word) <= max {
            line.push(' ');
            line.push_str(&word);
        } else {
            lines.push(std::mem::replace(&mut line, word));
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// `label  value` lines under a probe, the values aligned and wrapped within the width.
fn verbose_lines(out: &mut String, rows: &[(String, String)], style: &TableStyle) {
    // A label never takes more than a third of the line, so values keep room.
    let label_max = (style.width / 3).max(8);
    let label_width = rows
        .iter()
        .map(|(l, _)| width(l).min(label_max))
        .max()
        .unwrap_or(0);
    let value_width = style
        .width
        .saturating_sub(width(INDENT) + label_width + 2)
        .max(16);
    for (label, value) in rows {
        let label = pad(&truncate(label, label_max), label_width);
        for (i, part) in wrap(value, value_width).iter().enumerate() {
            let head = if i == 0 {
                label.clone()
            } else {
                " ".repeat(label_width)
            };
            let line = format!("{INDENT}{head}  {part}");
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

/// The `summary` detail of a report, on one line, if it has one.
fn summary_detail(report: &ProbeReport) -> Option<String> {
    report
        .details
        .iter()
        .find(|(k, _)| k == "summary")
        .and_then(|(_, v)| v.as_text())
        .map(one_line)
        .filter(|s| !s.is_empty())
}

/// Renders one line per probe — mark, name, status, latency, failure reason — with columns
/// aligned and every line within `style.width`; with `style.verbose`, the whole reason and
/// every detail under each line. Ends with a summary line.
pub fn render_table(reports: &[(String, ProbeReport)], style: &TableStyle) -> String {
    // The name gets up to 30% of the width, the reason what is left.
    let name_max = (style.width * 3 / 10).max(12);
    let rows: Vec<[String; 3]> = reports
        .iter()
        .map(|(name, r)| {
            [
                truncate(&one_line(name), name_max),
                truncate(&one_line(&r.status), STATUS_MAX),
                format_latency(r.duration),
            ]
        })
        .collect();
    let mut widths = [0usize; 3];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let mut out = String::new();
    for ((_, report), [name, status, latency]) in reports.iter().zip(&rows) {
        let (mark, mark_colour) = if report.success {
            ("✓", GREEN)
        } else {
            ("✗", RED)
        };
        let fixed = format!(
            "{} {}  {}  {}",
            mark,
            pad(name, widths[0]),
            pad(status, widths[1]),
            pad_left(latency, widths[2])
        );
        let mut line = format!("{}{}", style.paint(mark_colour, mark), &fixed[mark.len()..]);
        let reason = report
            .reason
            .as_deref()
            .map(one_line)
            .filter(|r| !r.is_empty());
        let mut reason_cut = false;
        if let Some(reason) = &reason {
            let room = style.width.saturating_sub(width(&fixed) + 2);
            let shown = if room >= MIN_REASON {
                truncate(reason, room)
            } else {
                String::new()
            };
            reason_cut = shown != *reason;
            if !shown.is_empty() {
                line.push_str("  ");
                line.push_str(&style.paint(RED, &shown));
            }
        } else if let Some(note) = summary_detail(report) {
            // A probe that succeeded may still have something to say (an AI check's finish
            // reason, longest stream gap, rate-limit headroom): shown dimmed, cut to fit.
            let room = style.width.saturating_sub(width(&fixed) + 2);
            if room >= MIN_REASON {
                line.push_str("  ");
                line.push_str(&style.paint(DIM, &truncate(&note, room)));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if style.verbose {
            let mut rows: Vec<(String, String)> = Vec::new();
            // The whole reason, unless the line already shows it whole.
            if let Some(reason) = reason.filter(|_| reason_cut) {
                rows.push(("reason".into(), reason));
            }
            rows.extend(
                report
                    .details
                    .iter()
                    .map(|(k, v)| (detail_label(k, v).to_string(), format_detail(v))),
            );
            verbose_lines(&mut out, &rows, style);
        }
    }
    let failed = reports.iter().filter(|(_, r)| !r.success).count();
    let summary = match (reports.len(), failed) {
        (0, _) => "no probes configured".to_string(),
        (n, 0) => format!("{n} of {n} probes succeeded"),
        (n, f) => format!("{f} of {n} probes failed"),
    };
    let _ = writeln!(out, "{}", style.paint(DIM, &summary));
    out
}

/// Renders what `--push` delivered: one line per sink, `✓ remote_write NAME  delivered` or
/// `✗ … N samples not delivered: why`, each within `style.width`; with `style.verbose`, the
/// whole result under a line that had to cut it.
pub fn render_delivery(sinks: &[SinkDelivery], style: &TableStyle) -> String {
    if sinks.is_empty() {
        return format!(
            "{}\n",
            style.paint(
                DIM,
                "nothing pushed: no [[remote_write]] or [[pushgateway]] configured"
            )
        );
    }
    // A sink's result is short, so its name may take more room than a probe's.
    let name_max = (style.width * 2 / 5).max(12);
    let names: Vec<String> = sinks
        .iter()
        .map(|s| truncate(&format!("{} {}", s.kind.as_str(), s.name), name_max))
        .collect();
    let name_width = names.iter().map(|n| width(n)).max().unwrap_or(0);
    let mut out = String::new();
    for (sink, name) in sinks.iter().zip(&names) {
        let (mark, colour, result) = if sink.delivered {
            ("✓", GREEN, "delivered".to_string())
        } else {
            ("✗", RED, sink.shortfall())
        };
        let room = style.width.saturating_sub(2 + name_width + 2);
        let shown = truncate(&result, room);
        let cut = shown != result;
        let shown = if sink.delivered {
            shown
        } else {
            style.paint(RED, &shown)
        };
        let line = format!(
            "{} {}  {shown}",
            style.paint(colour, mark),
            pad(name, name_width)
        );
        out.push_str(line.trim_end());
        out.push('\n');
        if style.verbose && cut {
            verbose_lines(&mut out, &[("reason".to_string(), result)], style);
        }
    }
    out
}

/// One probe in the JSON output.
#[derive(Debug, serde::Serialize)]
struct JsonProbe<'a> {
    name: &'a str,
    success: bool,
    status: &'a str,
    latency_ms: f64,
    details: serde_json::Map<String, serde_json::Value>,
    reason: Option<&'a str>,
}

/// The same as [`render_table`] (always with every detail), as one JSON object:
/// `{"ok", "delivered", "sinks", "probes": [...]}`. Details keep their numbers exact (a
/// numeric detail's name ends with its unit). `delivered` and `sinks` are null unless the
/// results were pushed.
pub fn render_json(reports: &[(String, ProbeReport)], pushed: Option<&[SinkDelivery]>) -> String {
    let probes: Vec<JsonProbe<'_>> = reports
        .iter()
        .map(|(name, r)| JsonProbe {
            name,
            success: r.success,
            status: &r.status,
            latency_ms: (r.duration.as_secs_f64() * 1e6).round() / 1e3,
            details: r
                .details
                .iter()
                .map(|(k, v)| {
                    // Only a non-finite number fails, and JSON has no such number: null.
                    let value = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
                    (k.clone(), value)
                })
                .collect(),
            reason: r.reason.as_deref(),
        })
        .collect();
    let doc = serde_json::json!({
        "ok": reports.iter().all(|(_, r)| r.success),
        "delivered": pushed.map(|sinks| sinks.iter().all(|s| s.delivered)),
        "sinks": pushed,
        "probes": probes,
    });
    // A `Value` built from strings, numbers and bools always serializes.
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::SinkKind;

    fn reports() -> Vec<(String, ProbeReport)> {
        vec![
            (
                "api".into(),
                ProbeReport {
                    success: true,
                    duration: Duration::from_micros(42_400),
                    status: "200".into(),
                    reason: None,
                    details: vec![],
                },
            ),
            (
                "openai-chat".into(),
                ProbeReport {
                    success: true,
                    duration: Duration::from_micros(812_600),
                    status: "200".into(),
                    reason: None,
                    details: vec![
                        ("chat".into(), "ok".into()),
                        (
                            "chat.time_to_first_token_seconds".into(),
                            Detail::Seconds(0.301),
                        ),
                        ("chat.input_tokens".into(), Detail::Count(20)),
                        ("chat.output_tokens".into(), Detail::Count(7)),
                        ("chat.cost_dollars".into(), Detail::Dollars(2.71e-6)),
                    ],
                },
            ),
            (
                "db".into(),
                ProbeReport {
                    success: false,
                    duration: Duration::from_micros(3_250),
                    status: "connect".into(),
                    reason: Some("connection refused".into()),
                    details: vec![],
                },
            ),
        ]
    }

    fn plain() -> TableStyle {
        TableStyle::default()
    }

    fn verbose() -> TableStyle {
        TableStyle {
            verbose: true,
            ..TableStyle::default()
        }
    }

    #[test]
    fn table_is_aligned_without_colour() {
        assert_eq!(
            render_table(&reports(), &plain()),
            "✓ api          200       42 ms\n\
             ✓ openai-chat  200      813 ms\n\
             ✗ db           connect  3.2 ms  connection refused\n\
             1 of 3 probes failed\n"
        );
    }

    #[test]
    fn table_colours_marks_and_reasons_only_when_asked() {
        let colour = TableStyle {
            colour: true,
            ..plain()
        };
        let t = render_table(&reports(), &colour);
        assert!(t.starts_with("\x1b[32m✓\x1b[0m api"), "{t:?}");
        assert!(t.contains("\x1b[31m✗\x1b[0m db"), "{t:?}");
        assert!(t.contains("\x1b[31mconnection refused\x1b[0m"), "{t:?}");
        assert!(!render_table(&reports(), &plain()).contains('\x1b'));
        assert!(!render_table(&reports(), &verbose()).contains('\x1b'));
    }

    #[test]
    fn a_successful_probe_shows_its_summary_on_its_line() {
        let mut r = reports();
        r[0].1.details = vec![(
            "summary".into(),
            "chat_stream: finish length, longest gap 0.40s, 0 stalls, headroom 7.5%".into(),
        )];
        let t = render_table(&r, &plain());
        let first = t.lines().next().unwrap();
        assert!(first.contains("finish length, longest gap 0.40s"), "{t}");
        // A failure's reason takes the room instead.
        r[2].1.details = r[0].1.details.clone();
        let t = render_table(&r, &plain());
        assert!(!t.lines().nth(2).unwrap().contains("finish length"), "{t}");
    }

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some("1".as_ref())));
        assert!(use_colour(true, Some("".as_ref())));
    }

    #[test]
    fn json_carries_the_same_facts() {
        let v: serde_json::Value = serde_json::from_str(&render_json(&reports(), None)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["delivered"], serde_json::Value::Null);
        assert_eq!(v["sinks"], serde_json::Value::Null);
        assert_eq!(v["probes"][1]["name"], "openai-chat");
        assert_eq!(v["probes"][1]["latency_ms"], 812.6);
        assert_eq!(v["probes"][1]["details"]["chat"], "ok");
        assert_eq!(v["probes"][1]["details"]["chat.input_tokens"], 20);
        assert_eq!(v["probes"][1]["details"]["chat.output_tokens"], 7);
        assert_eq!(
            v["probes"][1]["details"]["chat.time_to_first_token_seconds"],
            0.301
        );
        assert_eq!(v["probes"][2]["reason"], "connection refused");
        assert_eq!(v["probes"][0]["reason"], serde_json::Value::Null);
    }

    #[test]
    fn json_keeps_the_exact_cost_the_table_rounds() {
        let cost = 0.0000027099999999999995;
        let mut r = reports();
        r[1].1.details = vec![("chat.cost_dollars".into(), Detail::Dollars(cost))];
        let v: serde_json::Value = serde_json::from_str(&render_json(&r, None)).unwrap();
        assert_eq!(
            v["probes"][1]["details"]["chat.cost_dollars"].as_f64(),
            Some(cost)
        );
        let table = render_table(&r, &verbose());
        assert!(table.contains("    chat.cost  $0.0000027\n"), "{table}");
        assert!(!table.contains("99999"), "{table}");
    }

    #[test]
    fn dollars_round_to_two_significant_digits_below_a_cent_and_to_cents_above() {
        for (dollars, shown) in [
            (0.0000027099999999999995, "$0.0000027"),
            (0.000041, "$0.000041"),
            (0.00002, "$0.00002"),
            (0.0049, "$0.0049"),
            (0.0099999, "$0.01"),
            (0.01, "$0.01"),
            (0.126, "$0.13"),
            (1.5, "$1.50"),
            (42.0, "$42.00"),
            (0.0, "$0"),
        ] {
            assert_eq!(format_dollars(dollars), shown, "{dollars}");
        }
    }

    #[test]
    fn details_show_only_when_verbose_indented_under_their_probe() {
        assert!(!render_table(&reports(), &plain()).contains("tokens"));
        assert_eq!(
            render_table(&reports(), &verbose()),
            "✓ api          200       42 ms\n\
             ✓ openai-chat  200      813 ms\n\
             \x20   chat                      ok\n\
             \x20   chat.time_to_first_token  301 ms\n\
             \x20   chat.input_tokens         20\n\
             \x20   chat.output_tokens        7\n\
             \x20   chat.cost                 $0.0000027\n\
             ✗ db           connect  3.2 ms  connection refused\n\
             1 of 3 probes failed\n"
        );
    }

    #[test]
    fn long_names_and_reasons_stay_within_the_width() {
        let long = vec![(
            "a-probe-with-a-name-far-longer-than-anyone-would-read-in-a-table".to_string(),
            ProbeReport {
                success: false,
                duration: Duration::from_secs(12),
                status: "ok (spend limit reached) and then some".into(),
                reason: Some(
                    "models: HTTP 500: the provider failed to serve the request;\n chat: HTTP 500: \
                     the provider failed to serve the request; chat_stream: HTTP 500: the \
                     provider failed to serve the request"
                        .into(),
                ),
                details: vec![(
                    "final_url".into(),
                    format!("https://example.com/{}", "x".repeat(300)).into(),
                )],
            },
        )];
        for style in [plain(), verbose()] {
            let t = render_table(&long, &style);
            for line in t.lines() {
                assert!(
                    width(line) <= DEFAULT_WIDTH,
                    "{} columns: {line}",
                    width(line)
                );
            }
            let first = t.lines().next().unwrap();
            assert!(first.ends_with('…'), "{first}");
            assert!(first.contains("a-probe-with-a-name-far-longe…"), "{first}");
        }
        // The verbose view keeps the whole reason, wrapped.
        let t = render_table(&long, &verbose());
        assert!(t.contains("chat_stream: HTTP 500"), "{t}");
        let narrow = TableStyle {
            width: 60,
            ..plain()
        };
        for line in render_table(&long, &narrow).lines() {
            assert!(width(line) <= 60, "{line}");
        }
    }

    #[test]
    fn delivery_lines_say_what_arrived_and_why_not() {
        let sinks = [
            SinkDelivery {
                kind: SinkKind::RemoteWrite,
                name: "victoria".into(),
                delivered: true,
                undelivered: 0,
                reason: None,
            },
            SinkDelivery {
                kind: SinkKind::Pushgateway,
                name: "127.0.0.1:9091".into(),
                delivered: false,
                undelivered: 12,
                reason: Some("unreachable (3 failed attempts)".into()),
            },
        ];
        assert_eq!(
            render_delivery(&sinks, &plain()),
            "✓ remote_write victoria       delivered\n\
             ✗ pushgateway 127.0.0.1:9091  12 series not delivered: unreachable (3 failed attempts)\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_json(&reports(), Some(&sinks))).unwrap();
        assert_eq!(v["delivered"], false);
        assert_eq!(v["sinks"][0]["kind"], "remote_write");
        assert_eq!(v["sinks"][0]["delivered"], true);
        assert_eq!(v["sinks"][1]["undelivered"], 12);
        assert_eq!(
            render_delivery(&[], &plain()),
            "nothing pushed: no [[remote_write]] or [[pushgateway]] configured\n"
        );
    }

    #[test]
    fn text_is_wrapped_at_spaces_and_cut_when_a_word_is_too_long() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(wrap("", 3), [""]);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }

    #[test]
    fn empty_config_says_so() {
        assert_eq!(render_table(&[], &plain()), "no probes configured\n");
    }
}
