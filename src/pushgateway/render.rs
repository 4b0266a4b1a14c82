//! The Pushgateway body: registry families in the text exposition format 0.0.4 (pure).
//!
//! The bytes of each family come from [`crate::exposition`], the same writer as the `/metrics`
//! endpoint, so escaping and number formatting cannot drift apart. What a Pushgateway body
//! adds: families of several registries (one per probe) are merged under one `# TYPE` line,
//! because a repeated one is a parse error; labels that the grouping key sets (`job` and the
//! grouping labels) are left out, since the gateway sets them from the URL path and would
//! otherwise silently overwrite them; and no sample carries a timestamp, which the gateway
//! refuses.

use std::collections::BTreeMap;

use crate::exposition;
use crate::series::{Family, Labels, SeriesMap, METRIC_NAME_LABEL};

pub use crate::exposition::CONTENT_TYPE;

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
    /// Series written (a histogram series counts once).
    pub series: usize,
    /// Series left out because, after stripping grouping labels, another series of the same
    /// family already had the same labels (the gateway refuses duplicates).
    pub duplicates: usize,
}

/// Renders families (several may share a name) into one body. Families left without series
/// are skipped: announcing them would only involve them in the gateway's consistency checks.
pub fn render<'a>(
    families: impl IntoIterator<Item = &'a Family>,
    opts: &RenderOptions,
) -> Rendered {
    let mut by_name: BTreeMap<&str, Vec<&Family>> = BTreeMap::new();
    for f in families {
        by_name.entry(f.meta.name.as_str()).or_default().push(f);
    }
    let mut out = Rendered::default();
    for group in by_name.into_values() {
        let mut merged = Family {
            meta: group[0].meta.clone(),
            series: SeriesMap::new(),
        };
        for family in group {
            for series in family.series.values() {
                let labels = adjust(&series.labels, opts);
                if merged.series.contains_key(&labels) {
                    out.duplicates += 1;
                    continue;
                }
                let mut series = series.clone();
                series.labels = labels.clone();
                merged.series.insert(labels, series);
            }
        }
        if merged.series.is_empty() {
            continue;
        }
        out.series += merged.series.len();
        exposition::render_family(&merged, &mut out.text);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::series::{MetricType, Registry};

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
             lat_seconds_bucket{probe=\"p\",le=\"0.1\"} 1\n\
             lat_seconds_bucket{probe=\"p\",le=\"1\"} 2\n\
             lat_seconds_bucket{probe=\"p\",le=\"+Inf\"} 3\n\
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
}
