//! `pushprobe check`: the human view of one round of probes, as an aligned table or as JSON.
//!
//! Both renderings are pure functions of the reports, so they are tested with fixed reports;
//! the command itself is `once` with the sinks left out (unless `--push`).

use std::fmt::Write as _;

use crate::probe::ProbeReport;

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Whether to colour the table: only on a terminal, and never when `NO_COLOR` is set to
/// anything non-empty (<https://no-color.org>).
pub fn use_colour(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Latency as shown in the table: whole milliseconds, one decimal below 10 ms.
pub fn format_latency(d: std::time::Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Whether a detail belongs in the table: token counts, cost and spend (AI checks). Other
/// details (phase timings, addresses) would drown the reason; the JSON output has them all.
pub fn is_table_detail(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    last == "tokens" || last.starts_with("cost") || last.starts_with("spend")
}

/// The details column: `name=value` pairs of the table details, separated by `; `.
fn details(report: &ProbeReport) -> String {
    report
        .details
        .iter()
        .filter(|(k, _)| is_table_detail(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(width(s))))
}

/// Renders one line per probe — mark, name, status, latency, details, failure reason — with
/// columns aligned, and a closing summary line.
pub fn render_table(reports: &[(String, ProbeReport)], colour: bool) -> String {
    let rows: Vec<[String; 4]> = reports
        .iter()
        .map(|(name, r)| {
            [
                name.clone(),
                r.status.clone(),
                format_latency(r.duration),
                details(r),
            ]
        })
        .collect();
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let paint = |code: &str, text: &str| {
        if colour {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    for ((_, report), [name, status, latency, det]) in reports.iter().zip(&rows) {
        let mark = if report.success {
            paint(GREEN, "✓")
        } else {
            paint(RED, "✗")
        };
        let latency = format!(
            "{}{latency}",
            " ".repeat(widths[2].saturating_sub(width(latency)))
        );
        let mut line = format!(
            "{mark} {}  {}  {latency}",
            pad(name, widths[0]),
            pad(status, widths[1])
        );
        if widths[3] > 0 {
            line.push_str("  ");
            line.push_str(&pad(det, widths[3]));
        }
        if let Some(reason) = report.reason.as_deref().filter(|r| !r.is_empty()) {
            line.push_str("  ");
            line.push_str(&paint(RED, reason));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let failed = reports.iter().filter(|(_, r)| !r.success).count();
    let summary = match (reports.len(), failed) {
        (0, _) => "no probes configured".to_string(),
        (n, 0) => format!("{n} of {n} probes succeeded"),
        (n, f) => format!("{f} of {n} probes failed"),
    };
    let _ = writeln!(out, "{}", paint(DIM, &summary));
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

/// The same as [`render_table`], as one JSON object: `{"ok", "delivered", "probes": [...]}`;
/// `delivered` is null unless the results were pushed.
pub fn render_json(reports: &[(String, ProbeReport)], delivered: Option<bool>) -> String {
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
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
            reason: r.reason.as_deref(),
        })
        .collect();
    let doc = serde_json::json!({
        "ok": reports.iter().all(|(_, r)| r.success),
        "delivered": delivered,
        "probes": probes,
    });
    // A `Value` built from strings, numbers and bools always serializes.
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
                        ("chat.ttft".into(), "0.301s".into()),
                        ("chat.tokens".into(), "input 20, output 7".into()),
                        ("chat.cost".into(), "$0.000041".into()),
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

    #[test]
    fn table_is_aligned_without_colour() {
        assert_eq!(
            render_table(&reports(), false),
            "✓ api          200       42 ms\n\
             ✓ openai-chat  200      813 ms  chat.tokens=input 20, output 7; chat.cost=$0.000041\n\
             ✗ db           connect  3.2 ms                                                       connection refused\n\
             1 of 3 probes failed\n"
        );
    }

    #[test]
    fn table_colours_marks_and_reasons_only_when_asked() {
        let t = render_table(&reports(), true);
        assert!(t.starts_with("\x1b[32m✓\x1b[0m api"), "{t:?}");
        assert!(t.contains("\x1b[31m✗\x1b[0m db"), "{t:?}");
        assert!(t.contains("\x1b[31mconnection refused\x1b[0m"), "{t:?}");
        assert!(!render_table(&reports(), false).contains('\x1b'));
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
        assert_eq!(v["probes"][1]["name"], "openai-chat");
        assert_eq!(v["probes"][1]["latency_ms"], 812.6);
        assert_eq!(
            v["probes"][1]["details"]["chat.tokens"],
            "input 20, output 7"
        );
        assert_eq!(v["probes"][1]["details"]["chat.ttft"], "0.301s");
        assert_eq!(v["probes"][2]["reason"], "connection refused");
        assert_eq!(v["probes"][0]["reason"], serde_json::Value::Null);
    }

    #[test]
    fn only_token_cost_and_spend_details_go_in_the_table() {
        assert!(is_table_detail("chat.tokens"));
        assert!(is_table_detail("chat.cost"));
        assert!(is_table_detail("spend_today"));
        assert!(!is_table_detail("chat.tokens_per_second"));
        assert!(!is_table_detail("time_to_first_byte"));
    }

    #[test]
    fn empty_config_says_so() {
        assert_eq!(render_table(&[], false), "no probes configured\n");
    }
}
