//! Stream quality and integrity, rate-limit headroom and relay honesty: the series beyond a
//! check's outcome, and the pure functions that record them.
//!
//! What a run observed travels in [`Signals`] beside the check's result, so it is recorded on
//! failure too (a stream that stalls then breaks off, a 429 that still names the limits).
//! What must be remembered between runs (the last fingerprint and answering model of each
//! check) lives in [`History`], bounded to one entry per check.
//!
//! Label values from the server (the answering model) pass through [`label_value`], the one
//! place that caps and cleans them.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::metrics::{BaseLabels, CheckRun, RecordContext};
use super::ratelimit::{RateLimits, Resource};
use super::response::AnswerFacts;
use super::timing::{FinishReason, TimingSummary};
use super::Check;
use crate::pricing::PriceTable;
use crate::series::{MetricType, Registry};

/// Gaps between consecutive text chunks of a `chat_stream` run.
pub const INTER_TOKEN_GAP: &str = "pushprobe_ai_inter_token_gap_seconds";
/// The longest gap of the last `chat_stream` run.
pub const LONGEST_GAP: &str = "pushprobe_ai_stream_longest_gap_seconds";
/// Gaps longer than the probe's `stall_threshold`.
pub const STALLS: &str = "pushprobe_ai_stream_stalls_total";
/// Request sent to the first reasoning token.
pub const TTFRT: &str = "pushprobe_ai_time_to_first_reasoning_token_seconds";
/// Answers by `finish_reason`.
pub const FINISH_REASONS: &str = "pushprobe_ai_finish_reasons_total";
/// Stream integrity problems by `anomaly`.
pub const ANOMALIES: &str = "pushprobe_ai_stream_anomalies_total";
/// Rate limit per window, by `resource`.
pub const RATELIMIT_LIMIT: &str = "pushprobe_ai_ratelimit_limit";
/// What is left of the rate limit, by `resource`.
pub const RATELIMIT_REMAINING: &str = "pushprobe_ai_ratelimit_remaining";
/// Seconds until the rate-limit window resets, by `resource`.
pub const RATELIMIT_RESET: &str = "pushprobe_ai_ratelimit_reset_seconds";
/// Answers from a model other than the one requested.
pub const MODEL_MISMATCHES: &str = "pushprobe_ai_model_mismatches_total";
/// 1, labelled with the requested and the answering model of the last answer.
pub const ANSWERING_MODEL_INFO: &str = "pushprobe_ai_answering_model_info";
/// Changes of `system_fingerprint` between runs.
pub const FINGERPRINT_CHANGES: &str = "pushprobe_ai_system_fingerprint_changes_total";

/// Longest label value taken from outside, in characters.
pub const MAX_LABEL_CHARS: usize = 128;

const DESCRIPTIONS: &[(&str, MetricType, &str)] = &[
    (
        INTER_TOKEN_GAP,
        MetricType::Histogram,
        "Gaps between consecutive generated-text chunks of a streamed answer, in seconds.",
    ),
    (
        LONGEST_GAP,
        MetricType::Gauge,
        "The longest gap between generated-text chunks of the last stream, in seconds.",
    ),
    (
        STALLS,
        MetricType::Counter,
        "Gaps between streamed text chunks longer than the probe's stall_threshold.",
    ),
    (
        TTFRT,
        MetricType::Histogram,
        "Time from sending a streamed chat request to the first reasoning token, in seconds.",
    ),
    (
        FINISH_REASONS,
        MetricType::Counter,
        "Answers by why generation stopped (stop, length, content_filter, tool_calls, other).",
    ),
    (
        ANOMALIES,
        MetricType::Counter,
        "Stream integrity problems: missing_done, error_event, missing_usage.",
    ),
    (
        RATELIMIT_LIMIT,
        MetricType::Gauge,
        "Rate limit per window the provider announced, by resource.",
    ),
    (
        RATELIMIT_REMAINING,
        MetricType::Gauge,
        "What is left of the rate limit in the current window, by resource.",
    ),
    (
        RATELIMIT_RESET,
        MetricType::Gauge,
        "Seconds until the rate-limit window resets, from the response, by resource.",
    ),
    (
        MODEL_MISMATCHES,
        MetricType::Counter,
        "Answers from a model other than the one requested (after pricing aliases).",
    ),
    (
        ANSWERING_MODEL_INFO,
        MetricType::Gauge,
        "1, labelled with the requested model and the model that gave the last answer.",
    ),
    (
        FINGERPRINT_CHANGES,
        MetricType::Counter,
        "Changes of the provider's system_fingerprint between runs.",
    ),
];

/// A stream integrity problem: the `anomaly` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// The stream ended without `data: [DONE]`.
    MissingDone,
    /// The 200 stream carried an error event.
    ErrorEvent,
    /// The stream had no usage chunk (`stream_options.include_usage` ignored).
    MissingUsage,
}

impl Anomaly {
    /// Every anomaly.
    pub const ALL: [Anomaly; 3] = [
        Anomaly::MissingDone,
        Anomaly::ErrorEvent,
        Anomaly::MissingUsage,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::MissingDone => "missing_done",
            Anomaly::ErrorEvent => "error_event",
            Anomaly::MissingUsage => "missing_usage",
        }
    }
}

/// What a check observed beyond its result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// Stream timing (`chat_stream`, also when the stream failed).
    pub timing: Option<TimingSummary>,
    /// Finish reason, answer and fingerprint of a chat answer.
    pub facts: Option<AnswerFacts>,
    /// The model the server says answered.
    pub answering_model: Option<String>,
    /// Stream integrity problems.
    pub anomalies: Vec<Anomaly>,
    /// Rate limits of the response, when one arrived.
    pub ratelimits: Option<RateLimits>,
}

/// What must be remembered between runs, per check.
#[derive(Debug, Default)]
pub struct History {
    fingerprint: HashMap<Check, String>,
    answering_model: HashMap<Check, String>,
}

/// Declares every family.
pub fn describe(r: &mut Registry) {
    for (name, kind, help) in DESCRIPTIONS {
        r.describe(name, *kind, help);
    }
}

fn ignore<E>(_: Result<(), E>) {
    // As in `metrics`: fixed label names and bounded values; a refusal is a bug for tests.
}

/// Publishes the counters at 0 whose labels are known up front.
pub fn declare_counters(r: &mut Registry, labels: &BaseLabels, checks: &[Check]) {
    for check in checks.iter().filter(|c| c.is_paid()) {
        let at = |extra: &[(&'static str, &'static str)]| {
            let mut l = labels.with(&[("check", check.as_str())]);
            l.extend_from_slice(extra);
            l
        };
        ignore(r.counter_add(MODEL_MISMATCHES, &at(&[]), 0.0));
        // An embedding has no finish reason and no fingerprint.
        if *check == Check::Embeddings {
            continue;
        }
        for f in FinishReason::ALL {
            ignore(r.counter_add(FINISH_REASONS, &at(&[("finish_reason", f.as_str())]), 0.0));
        }
        ignore(r.counter_add(FINGERPRINT_CHANGES, &at(&[]), 0.0));
        if *check == Check::ChatStream {
            ignore(r.counter_add(STALLS, &at(&[]), 0.0));
            for a in Anomaly::ALL {
                ignore(r.counter_add(ANOMALIES, &at(&[("anomaly", a.as_str())]), 0.0));
            }
        }
    }
}

/// Caps a label value from outside at [`MAX_LABEL_CHARS`] characters and replaces control
/// characters with `?`, so no server or configuration can make a label unbounded or
/// unprintable.
pub fn label_value(s: &str) -> String {
    s.chars()
        .take(MAX_LABEL_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The name a model is known by: its `[pricing]` entry when the table knows it, else the
/// name without a dated snapshot suffix (`-2024-08-06`, `-20240806`).
pub fn canonical_model<'a>(name: &'a str, pricing: &'a PriceTable) -> &'a str {
    if let Some(m) = pricing.lookup(name) {
        return m.entry;
    }
    strip_snapshot_date(name)
}

fn strip_snapshot_date(name: &str) -> &str {
    let is_digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    // -YYYY-MM-DD
    if name.len() > 11 && name.is_char_boundary(name.len() - 11) {
        let (head, tail) = name.split_at(name.len() - 11);
        let parts: Vec<&str> = tail.split('-').collect();
        if let ["", y, m, d] = parts.as_slice() {
            if is_digits(y, 4) && is_digits(m, 2) && is_digits(d, 2) {
                return head;
            }
        }
    }
    // -YYYYMMDD
    if let Some((head, tail)) = name.rsplit_once('-') {
        if is_digits(tail, 8) && !head.is_empty() {
            return head;
        }
    }
    name
}

/// Tells whether `answered` is the model `requested` names, through pricing aliases and
/// dated snapshots; case is ignored.
pub fn same_model(requested: &str, answered: &str, pricing: &PriceTable) -> bool {
    requested.eq_ignore_ascii_case(answered)
        || canonical_model(requested, pricing)
            .eq_ignore_ascii_case(canonical_model(answered, pricing))
}

/// Records a check's signals; returns the one-line note for `check` (empty: nothing to say)
/// and adds details.
pub fn record(
    r: &mut Registry,
    cx: &RecordContext<'_>,
    max_tokens: u32,
    run: &CheckRun,
    sig: &Signals,
    history: &mut History,
) -> Vec<(String, crate::probe::Detail)> {
    use crate::probe::Detail;
    let check = run.check.as_str();
    let at = |extra: &[(&'static str, &'static str)]| {
        let mut l = cx.labels.with(&[("check", check)]);
        l.extend_from_slice(extra);
        l
    };
    let mut details: Vec<(String, Detail)> = Vec::new();
    let mut add = |key: &str, value: Detail| details.push((format!("{check}.{key}"), value));

    if let Some(t) = &sig.timing {
        for g in &t.gaps {
            ignore(r.histogram_observe(INTER_TOKEN_GAP, &at(&[]), cx.buckets, g.as_secs_f64()));
        }
        if let Some(ttfr) = t.first_reasoning {
            ignore(r.histogram_observe(TTFRT, &at(&[]), cx.buckets, ttfr.as_secs_f64()));
            add("time_to_first_reasoning_token_seconds", ttfr.into());
        }
        match t.longest_gap {
            Some(g) => {
                ignore(r.gauge_set(LONGEST_GAP, &at(&[]), g.as_secs_f64()));
                add("longest_gap_seconds", g.into());
            }
            // One chunk or none: no gap to report, and last run's would be stale.
            None => r.remove(LONGEST_GAP, &at(&[])),
        }
        ignore(r.counter_add(STALLS, &at(&[]), t.stalls as f64));
        add("stalls", Detail::Count(t.stalls));
    }
    for a in &sig.anomalies {
        ignore(r.counter_add(ANOMALIES, &at(&[("anomaly", a.as_str())]), 1.0));
    }
    if !sig.anomalies.is_empty() {
        let names: Vec<&str> = sig.anomalies.iter().map(|a| a.as_str()).collect();
        add("anomalies", names.join(", ").into());
    }
    if let Some(f) = sig.facts.as_ref().and_then(|f| f.finish_reason) {
        ignore(r.counter_add(FINISH_REASONS, &at(&[("finish_reason", f.as_str())]), 1.0));
        let completion = run
            .result
            .as_ref()
            .ok()
            .and_then(|m| m.reply.usage)
            .map(|u| u.completion_tokens);
        add(
            "finish_reason",
            describe_finish(f, completion, max_tokens).into(),
        );
    }
    if let Some(rl) = &sig.ratelimits {
        record_ratelimits(r, &at(&[]), rl);
        if let Some((res, pct)) = rl.tightest() {
            add(
                "ratelimit_headroom",
                format!("{pct:.1}% of the {} limit left", res.as_str()).into(),
            );
        }
        if rl.unparsed > 0 {
            add(
                "ratelimit_unparsed_headers",
                Detail::Count(u64::from(rl.unparsed)),
            );
        }
    }
    if let Some(answered) = &sig.answering_model {
        let answered = label_value(answered);
        let requested = label_value(cx.model);
        if !same_model(cx.model, &answered, cx.pricing) {
            ignore(r.counter_add(MODEL_MISMATCHES, &at(&[]), 1.0));
            add(
                "model_mismatch",
                format!("asked for {requested}, answered by {answered}").into(),
            );
        }
        // One info series per check: the previous one goes when the model changes, so a
        // relay rotating names cannot grow the series without bound.
        let info = |model: &str| -> Vec<(String, String)> {
            let mut l: Vec<(String, String)> = cx
                .labels
                .with(&[("check", check)])
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            l.push(("requested_model".into(), requested.clone()));
            l.push(("answering_model".into(), model.to_string()));
            l
        };
        let previous = history.answering_model.insert(run.check, answered.clone());
        if let Some(p) = previous.filter(|p| *p != answered) {
            r.remove(ANSWERING_MODEL_INFO, &borrow(&info(&p)));
        }
        ignore(r.gauge_set(ANSWERING_MODEL_INFO, &borrow(&info(&answered)), 1.0));
    }
    if let Some(fp) = sig
        .facts
        .as_ref()
        .and_then(|f| f.system_fingerprint.as_ref())
    {
        match history.fingerprint.insert(run.check, fp.clone()) {
            Some(old) if old != *fp => {
                ignore(r.counter_add(FINGERPRINT_CHANGES, &at(&[]), 1.0));
                add("system_fingerprint", "changed since the last run".into());
            }
            _ => {}
        }
    }
    details
}

fn borrow(l: &[(String, String)]) -> Vec<(&str, &str)> {
    l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn record_ratelimits(r: &mut Registry, base: &[(&str, &str)], rl: &RateLimits) {
    for res in Resource::ALL {
        let mut l = base.to_vec();
        l.push(("resource", res.as_str()));
        let h = rl
            .resources
            .iter()
            .find(|(x, _)| *x == res)
            .map(|(_, h)| *h)
            .unwrap_or_default();
        // A value the response did not carry is withdrawn rather than left stale.
        for (name, v) in [
            (RATELIMIT_LIMIT, h.limit),
            (RATELIMIT_REMAINING, h.remaining),
            (RATELIMIT_RESET, h.reset_seconds),
        ] {
            match v {
                Some(v) => ignore(r.gauge_set(name, &l, v)),
                None => r.remove(name, &l),
            }
        }
    }
}

/// A finish reason in words; `length` at the probe's own `max_tokens` is normal.
pub fn describe_finish(f: FinishReason, completion_tokens: Option<u64>, max_tokens: u32) -> String {
    match (f, completion_tokens) {
        (FinishReason::Length, Some(n)) if n < u64::from(max_tokens) => format!(
            "length after {n} of max_tokens {max_tokens}: the provider cut the answer short"
        ),
        (FinishReason::Length, _) => {
            format!("length (the probe's own max_tokens = {max_tokens}: normal)")
        }
        (FinishReason::ContentFilter, _) => {
            "content_filter: the provider filtered the answer; use a neutral prompt".into()
        }
        (f, _) => f.as_str().into(),
    }
}

/// A short summary of a check's signals for the probe's line in `check`.
pub fn summary_line(check: Check, details: &[(String, crate::probe::Detail)]) -> String {
    use crate::probe::Detail;
    let prefix = format!("{}.", check.as_str());
    let mut out = String::new();
    for (k, v) in details {
        let Some(key) = k.strip_prefix(&prefix) else {
            continue;
        };
        let part = match (key, v) {
            ("finish_reason", Detail::Text(t)) => {
                format!("finish {}", t.split(' ').next().unwrap_or(t))
            }
            ("longest_gap_seconds", Detail::Seconds(s)) => format!("longest gap {s:.2}s"),
            ("stalls", Detail::Count(n)) => format!("{n} stalls"),
            ("ratelimit_headroom", Detail::Text(t)) => {
                format!("headroom {}", t.split(" left").next().unwrap_or(t))
            }
            ("model_mismatch", Detail::Text(t)) => format!("MODEL MISMATCH ({t})"),
            ("anomalies", Detail::Text(t)) => format!("anomalies: {t}"),
            ("system_fingerprint", _) => "fingerprint changed".into(),
            _ => continue,
        };
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{part}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::Price;
    use proptest::prelude::*;

    fn pricing() -> PriceTable {
        let aliases = vec!["deepseek-chat".to_string(), "deepseek-v3.2-*".to_string()];
        PriceTable::new([(
            "deepseek-v3.2",
            Price {
                input_per_mtok: 0.5,
                output_per_mtok: 2.0,
                cached_input_per_mtok: None,
                cache_read_per_mtok: None,
                cache_write_per_mtok: None,
            },
            aliases.as_slice(),
        )])
        .unwrap()
    }

    #[test]
    fn models_compare_through_aliases_and_snapshots() {
        let t = pricing();
        assert!(same_model("deepseek-v3.2", "deepseek-chat", &t));
        assert!(same_model("deepseek-chat", "deepseek-v3.2-exp", &t));
        assert!(same_model("gpt-4o", "gpt-4o-2024-08-06", &t));
        assert!(same_model(
            "claude-3-5-haiku",
            "claude-3-5-haiku-20241022",
            &t
        ));
        assert!(same_model("GPT-4o", "gpt-4o", &t));
        assert!(!same_model("gpt-4o", "gpt-4o-mini", &t));
        assert!(!same_model("deepseek-v3.2", "qwen-72b", &t));
        assert_eq!(strip_snapshot_date("-2024-08-06"), "-2024-08-06");
        assert_eq!(strip_snapshot_date("é-2024-08-0é"), "é-2024-08-0é");
    }

    #[test]
    fn label_values_are_capped_and_cleaned() {
        assert_eq!(label_value("gpt\n4\u{7}"), "gpt?4?");
        let long = "m".repeat(10 * 1024);
        assert_eq!(label_value(&long).chars().count(), MAX_LABEL_CHARS);
    }

    #[test]
    fn finish_length_at_the_probes_own_limit_is_normal() {
        assert!(describe_finish(FinishReason::Length, Some(5), 5).contains("normal"));
        assert!(describe_finish(FinishReason::Length, None, 5).contains("normal"));
        assert!(describe_finish(FinishReason::Length, Some(2), 5).contains("cut the answer short"));
        assert_eq!(describe_finish(FinishReason::Stop, Some(2), 5), "stop");
    }

    #[test]
    fn gaps_go_to_a_native_histogram_when_the_registry_keeps_them() {
        use super::super::metrics::Measured;
        use std::sync::Arc;
        use std::time::Duration;
        let mut r =
            Registry::with_native(Some(crate::series::native::NativeOptions::from_factor(1.1)));
        describe(&mut r);
        let (l, t, b) = (
            BaseLabels::new("p", "h", "deepseek-v3.2", &[]),
            pricing(),
            Arc::from(vec![0.5, 1.0]),
        );
        let cx = RecordContext {
            labels: &l,
            model: "deepseek-v3.2",
            pricing: &t,
            buckets: &b,
        };
        let run = CheckRun {
            check: Check::ChatStream,
            duration: Duration::from_secs(1),
            phases: vec![],
            cert_expiry: None,
            result: Ok(Measured::default()),
        };
        let sig = Signals {
            timing: Some(TimingSummary {
                gaps: vec![Duration::from_millis(100), Duration::from_millis(900)],
                longest_gap: Some(Duration::from_millis(900)),
                stalls: 1,
                chunks: 3,
                ..TimingSummary::default()
            }),
            ..Signals::default()
        };
        let mut h = History::default();
        let details = record(&mut r, &cx, 5, &run, &sig, &mut h);
        let at = l.with(&[("check", "chat_stream")]);
        assert_eq!(r.value(STALLS, &at), Some(1.0));
        assert_eq!(r.value(LONGEST_GAP, &at), Some(0.9));
        assert!(r
            .samples_at(0)
            .iter()
            .any(|s| s.labels.metric_name() == INTER_TOKEN_GAP && s.histogram().is_some()));
        let line = summary_line(Check::ChatStream, &details);
        assert_eq!(line, "longest gap 0.90s, 1 stalls");
    }

    proptest! {
        #[test]
        fn any_label_value_is_bounded_and_printable(s in any::<String>()) {
            let v = label_value(&s);
            prop_assert!(v.chars().count() <= MAX_LABEL_CHARS);
            prop_assert!(!v.chars().any(char::is_control));
        }

        #[test]
        fn model_comparison_never_panics(a in any::<String>(), b in any::<String>()) {
            let t = pricing();
            let _ = same_model(&a, &b, &t);
        }
    }
}
