//! The Prometheus text exposition format 0.0.4, rendered from registry families (pure).
//!
//! What the Pushgateway needs differs from a scrape page in two ways: no sample may carry a
//! timestamp (the gateway refuses them), and labels that the grouping key sets (`job` and the
//! grouping labels) must not appear in the body, since the gateway sets them from the URL path
//! and would otherwise silently overwrite them.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use crate::series::{format_float, Family, Labels, MetricType, SeriesValue, METRIC_NAME_LABEL};

/// The `Content-Type` of a text-format body.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How series labels are adjusted for one group.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Labels added to every series that does not have them (the agent's external labels).
    pub extra_labels: Vec<(String, String)>,
    /// Label names removed from every series (`job` and the grouping-key names).
    pub strip_labels: Vec<String>,
}

/// A rendered body and what went into it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    /// The text-format body.
    pub text: String,
    /// Series lines written (a histogram series counts once).
    pub series: usize,
    /// Series left out because, after stripping grouping labels, another series of the same
    /// family already had the same labels (the gateway refuses duplicates).
    pub duplicates: usize,
}

/// The `# TYPE` word for a family: 0.0.4 knows no info or stateset, which are gauges there.
pub fn type_word(kind: MetricType) -> &'static str {
    match kind {
        MetricType::Counter => "counter",
        MetricType::Gauge | MetricType::Info | MetricType::StateSet => "gauge",
        MetricType::Histogram => "histogram",
        MetricType::Summary => "summary",
        MetricType::Unknown => "untyped",
    }
}

/// Escapes `# HELP` text: backslash and newline.
pub fn escape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a label value: backslash, double quote and newline; everything else (unicode
/// included) passes through.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Renders families (several may share a name, e.g. one per probe registry; they are merged
/// under one `# TYPE` line because a repeated one is a parse error) into one body.
pub fn render<'a>(
    families: impl IntoIterator<Item = &'a Family>,
    opts: &RenderOptions,
) -> Rendered {
    let mut by_name: BTreeMap<&str, Vec<&Family>> = BTreeMap::new();
    for f in families {
        by_name.entry(f.meta.name.as_str()).or_default().push(f);
    }
    let mut out = Rendered::default();
    for (name, group) in by_name {
        let meta = &group[0].meta;
        let mut lines = String::new();
        let mut seen: HashSet<Labels> = HashSet::new();
        for family in &group {
            for series in family.series.values() {
                let labels = adjust(&series.labels, opts);
                if !seen.insert(labels.clone()) {
                    out.duplicates += 1;
                    continue;
                }
                out.series += 1;
                match &series.value {
                    SeriesValue::Counter(v) | SeriesValue::Gauge(v) => {
                        line(&mut lines, name, &labels, None, *v)
                    }
                    SeriesValue::Histogram(h) => {
                        let bucket = format!("{name}_bucket");
                        let bounds = h.bounds.iter().copied().chain([f64::INFINITY]);
                        for (bound, count) in bounds.zip(h.cumulative()) {
                            line(&mut lines, &bucket, &labels, Some(bound), count as f64);
                        }
                        line(&mut lines, &format!("{name}_sum"), &labels, None, h.sum);
                        line(
                            &mut lines,
                            &format!("{name}_count"),
                            &labels,
                            None,
                            h.count as f64,
                        );
                    }
                }
            }
        }
        if lines.is_empty() {
            // A family without series would still be announced to the gateway and take part
            // in its consistency checks for nothing.
            continue;
        }
        if !meta.help.is_empty() {
            let _ = writeln!(out.text, "# HELP {name} {}", escape_help(&meta.help));
        }
        let _ = writeln!(out.text, "# TYPE {name} {}", type_word(meta.kind));
        out.text.push_str(&lines);
    }
    out
}

/// The series' labels minus the stripped names, plus extra labels it does not have.
fn adjust(labels: &Labels, opts: &RenderOptions) -> Labels {
    let mut l = labels.without(METRIC_NAME_LABEL);
    for name in &opts.strip_labels {
        l = l.without(name);
    }
    for (name, value) in &opts.extra_labels {
        if l.get(name).is_none() && !opts.strip_labels.iter().any(|s| s == name) {
            l = l.with(name, value);
        }
    }
    l
}

/// Writes one sample line, with `le` inserted in name order for a bucket. No timestamp.
fn line(out: &mut String, metric: &str, labels: &Labels, le: Option<f64>, value: f64) {
    let le = le.map(format_float);
    let labels = match &le {
        Some(le) => labels.with("le", le),
        None => labels.clone(),
    };
    out.push_str(metric);
    if !labels.is_empty() {
        out.push('{');
        for (i, l) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{}=\"{}\"", l.name, escape_label_value(&l.value));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_float(value));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::series::Registry;

    #[test]
    fn escapes_help_and_label_values() {
        assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
        assert_eq!(
            escape_label_value("say \"hi\"\\now\nnext ünï ✓"),
            "say \\\"hi\\\"\\\\now\\nnext ünï ✓"
        );
    }

    #[test]
    fn renders_gauges_counters_and_histograms_without_timestamps() {
        let mut r = Registry::new();
        r.describe("up", MetricType::Gauge, "Whether it\nworked.");
        r.describe("runs_total", MetricType::Counter, "Runs.");
        r.describe("lat_seconds", MetricType::Histogram, "Latency.");
        r.gauge_set("up", &[("probe", "a\"b")], 1.0).unwrap();
        r.counter_add("runs_total", &[], 3.0).unwrap();
        let bounds: Arc<[f64]> = Arc::from(vec![0.1, 1.0]);
        for v in [0.05, 0.5, 7.0] {
            r.histogram_observe("lat_seconds", &[("probe", "p")], &bounds, v)
                .unwrap();
        }
        let got = render(r.families(), &RenderOptions::default());
        assert_eq!(
            got.text,
            "# HELP lat_seconds Latency.\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{le=\"0.1\",probe=\"p\"} 1\n\
             lat_seconds_bucket{le=\"1\",probe=\"p\"} 2\n\
             lat_seconds_bucket{le=\"+Inf\",probe=\"p\"} 3\n\
             lat_seconds_sum{probe=\"p\"} 7.55\n\
             lat_seconds_count{probe=\"p\"} 3\n\
             # HELP runs_total Runs.\n\
             # TYPE runs_total counter\n\
             runs_total 3\n\
             # HELP up Whether it\\nworked.\n\
             # TYPE up gauge\n\
             up{probe=\"a\\\"b\"} 1\n"
        );
        assert_eq!(got.series, 3);
        assert_eq!(got.duplicates, 0);
    }

    #[test]
    fn strips_grouping_labels_adds_extra_and_skips_duplicates() {
        let mut a = Registry::new();
        a.describe("pushprobe_job_exit_code", MetricType::Gauge, "Exit code.");
        a.gauge_set(
            "pushprobe_job_exit_code",
            &[("job", "backup"), ("instance", "x")],
            0.0,
        )
        .unwrap();
        let mut b = Registry::new();
        b.describe("pushprobe_job_exit_code", MetricType::Gauge, "Exit code.");
        b.gauge_set("pushprobe_job_exit_code", &[("job", "other")], 2.0)
            .unwrap();
        b.gauge_set("nan_gauge", &[("cluster", "mine")], f64::NAN)
            .unwrap();
        let opts = RenderOptions {
            extra_labels: vec![
                ("cluster".into(), "edge".into()),
                ("job".into(), "x".into()),
            ],
            strip_labels: vec!["job".into(), "instance".into()],
        };
        let got = render(a.families().chain(b.families()), &opts);
        assert_eq!(
            got.text,
            "# TYPE nan_gauge untyped\n\
             nan_gauge{cluster=\"mine\"} NaN\n\
             # HELP pushprobe_job_exit_code Exit code.\n\
             # TYPE pushprobe_job_exit_code gauge\n\
             pushprobe_job_exit_code{cluster=\"edge\"} 0\n"
        );
        assert_eq!(got.series, 2);
        assert_eq!(got.duplicates, 1);
    }

    #[test]
    fn info_and_unknown_types_map_to_text_format_words() {
        assert_eq!(type_word(MetricType::Info), "gauge");
        assert_eq!(type_word(MetricType::StateSet), "gauge");
        assert_eq!(type_word(MetricType::Unknown), "untyped");
    }
}
