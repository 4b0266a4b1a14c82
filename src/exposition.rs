//! The Prometheus text exposition format (version 0.0.4) for a [`Registry`].
//!
//! Used by the `/metrics` endpoint of the health listener; it is kept apart from the listener
//! so that anything else that needs the text format (a Pushgateway body) renders the same
//! bytes. Samples carry no timestamp: whoever reads the text stamps it, as a scrape does.

use std::fmt::Write;

use crate::series::{format_float, Family, Labels, MetricType, Registry, SeriesValue};

/// `Content-Type` of the text this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every family of `registry`, in name order, with `# HELP` and `# TYPE` lines.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    for family in registry.families() {
        render_family(family, &mut out);
    }
    out
}

/// Appends one family to `out`. A family without series still gets its HELP and TYPE lines,
/// as client libraries write them.
pub fn render_family(family: &Family, out: &mut String) {
    let name = &family.meta.name;
    if !family.meta.help.is_empty() {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.meta.help));
    }
    // 0.0.4 knows counter, gauge, histogram, summary and untyped; the OpenMetrics-only kinds
    // are written as gauges (info, stateset) or untyped so an old parser accepts them.
    let kind = match family.meta.kind {
        MetricType::Info | MetricType::StateSet => "gauge",
        k => k.as_text(),
    };
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for series in family.series.values() {
        match &series.value {
            SeriesValue::Counter(v) | SeriesValue::Gauge(v) => {
                line(out, name, &series.labels, None, *v);
            }
            SeriesValue::Histogram(h) => {
                let bucket = format!("{name}_bucket");
                let bounds = h
                    .bounds
                    .iter()
                    .copied()
                    .chain(std::iter::once(f64::INFINITY));
                for (bound, count) in bounds.zip(h.cumulative()) {
                    let le = format_float(bound);
                    line(
                        out,
                        &bucket,
                        &series.labels,
                        Some(("le", &le)),
                        count as f64,
                    );
                }
                line(out, &format!("{name}_sum"), &series.labels, None, h.sum);
                line(
                    out,
                    &format!("{name}_count"),
                    &series.labels,
                    None,
                    h.count as f64,
                );
            }
        }
    }
}

/// Writes `name{labels,extra} value`.
fn line(out: &mut String, name: &str, labels: &Labels, extra: Option<(&str, &str)>, v: f64) {
    out.push_str(name);
    let pairs = labels.iter().map(|l| (l.name, l.value)).chain(extra);
    let mut first = true;
    for (k, val) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label_value(val));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_float(v));
    out.push('\n');
}

/// Escapes a label value: backslash, double quote and line feed, as the format requires.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Escapes HELP text: backslash and line feed (quotes are literal there).
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let mut r = Registry::new();
        r.describe(
            "runs_total",
            MetricType::Counter,
            "Runs.\nBy outcome \\ kind.",
        );
        r.counter_add("runs_total", &[("outcome", "ok")], 3.0)
            .unwrap();
        r.gauge_set("up", &[], 1.0).unwrap();
        let bounds: Arc<[f64]> = Arc::from(vec![0.5]);
        r.describe("lat_seconds", MetricType::Histogram, "Latency.");
        r.histogram_observe("lat_seconds", &[("probe", "p")], &bounds, 0.25)
            .unwrap();
        r.histogram_observe("lat_seconds", &[("probe", "p")], &bounds, 2.0)
            .unwrap();
        assert_eq!(
            render(&r),
            "# HELP lat_seconds Latency.\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{probe=\"p\",le=\"0.5\"} 1\n\
             lat_seconds_bucket{probe=\"p\",le=\"+Inf\"} 2\n\
             lat_seconds_sum{probe=\"p\"} 2.25\n\
             lat_seconds_count{probe=\"p\"} 2\n\
             # HELP runs_total Runs.\\nBy outcome \\\\ kind.\n\
             # TYPE runs_total counter\n\
             runs_total{outcome=\"ok\"} 3\n\
             # TYPE up untyped\n\
             up 1\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = Registry::new();
        r.describe("g", MetricType::Gauge, "G.");
        r.gauge_set("g", &[("path", "a\"b\\c\nd")], f64::NAN)
            .unwrap();
        assert!(render(&r).contains("g{path=\"a\\\"b\\\\c\\nd\"} NaN\n"));
    }
}
