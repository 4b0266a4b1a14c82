//! The series an OpenAI-compatible probe publishes, and the pure functions that record one
//! check's results into a [`Registry`].
//!
//! Every label value is bounded: the probe name, the provider host, the configured model, the
//! check, a [`Reason`], a token kind, a phase, and a served model reduced to names the
//! configuration knows. No key, prompt or response text ever becomes a label.

use std::sync::Arc;
use std::time::Duration;

use super::classify::{Failure, Reason};
use super::response::{output_tokens_per_second, ChatReply, ModelList};
use super::Check;
use crate::pricing::{cost, PriceTable, Usage};
use crate::series::{MetricType, Registry};

/// 1 if the last run succeeded (all checks that ran), per probe, with the probe's `provider`
/// and `model`: blackbox compatibility.
pub const PROBE_SUCCESS: &str = "probe_success";
/// Wall time of the last run in seconds: blackbox compatibility.
pub const PROBE_DURATION: &str = "probe_duration_seconds";
/// Seconds per phase of each check's last request, by `check` and `phase`, with `provider`
/// and `model`.
pub const PHASE_DURATION: &str = "probe_http_duration_seconds";
/// Earliest expiry (Unix seconds) of the certificates the server sent.
pub const CERT_EXPIRY: &str = "probe_ssl_earliest_cert_expiry";
/// 1 if the check's last run succeeded, else 0.
pub const UP: &str = "pushprobe_ai_up";
/// Requests by `check`, `outcome` and `reason`.
pub const REQUESTS: &str = "pushprobe_ai_requests_total";
/// Latency of successful requests, request sent to body read (streams: to `[DONE]`).
pub const REQUEST_DURATION: &str = "pushprobe_ai_request_duration_seconds";
/// Time from sending a streamed request to the first visible (answer) token.
pub const TTFT: &str = "pushprobe_ai_time_to_first_token_seconds";
/// Completion tokens per second after the first token, last stream.
pub const TOKENS_PER_SECOND: &str = "pushprobe_ai_output_tokens_per_second";
/// Number of models the last successful `models` check listed.
pub const MODELS_AVAILABLE: &str = "pushprobe_ai_models_available";
/// 1 if the configured model was in the last successful model list, else 0.
pub const MODEL_LISTED: &str = "pushprobe_ai_model_listed";
/// Tokens by `check` and `kind` (`input`, `output`; `cached_input` (read from the prompt
/// cache) and `cache_write` (written to it), both subsets of `input`).
pub const TOKENS: &str = "pushprobe_ai_tokens_total";
/// Dollars spent by the probe's requests, by `check`.
pub const COST: &str = "pushprobe_ai_cost_dollars_total";
/// Responses whose model has no price, by `check`.
pub const UNPRICED: &str = "pushprobe_ai_unpriced_total";
/// Successful responses without a usable `usage` object, by `check`.
pub const MISSING_USAGE: &str = "pushprobe_ai_missing_usage_total";
/// Successful responses whose `usage` reported an implausible token count, by `check`.
pub const INVALID_USAGE: &str = "pushprobe_ai_invalid_usage_total";
/// Successful chat responses by the model the server says answered (`served_model`).
pub const RESPONSES: &str = "pushprobe_ai_responses_total";
/// Seconds the last 429 asked to wait (`Retry-After`); 0 after any other outcome.
pub const RETRY_AFTER: &str = "pushprobe_ai_retry_after_seconds";
/// 1 while the daily spend limit pauses the paid checks.
pub const SPEND_GUARD_ENGAGED: &str = "pushprobe_ai_spend_guard_engaged";
/// Dollars the probe spent since 00:00 UTC.
pub const SPEND_TODAY: &str = "pushprobe_ai_probe_spend_today_dollars";
/// Checks not run, by `check` and `reason` (`spend_guard`).
pub const SKIPPED: &str = "pushprobe_ai_checks_skipped_total";
/// Dimensions of the embedding the last successful `embeddings` check received.
pub const EMBEDDING_DIMENSIONS: &str = "pushprobe_ai_embedding_dimensions";

/// The `served_model` value of a server-named model no configuration knows.
pub const OTHER_MODEL: &str = "other";

const DESCRIPTIONS: &[(&str, MetricType, &str)] = &[
    (
        PROBE_SUCCESS,
        MetricType::Gauge,
        "Whether the probe succeeded.",
    ),
    (
        PROBE_DURATION,
        MetricType::Gauge,
        "Returns how long the probe took to complete in seconds.",
    ),
    (
        PHASE_DURATION,
        MetricType::Gauge,
        "Duration of each phase of the check's last request in seconds.",
    ),
    (
        CERT_EXPIRY,
        MetricType::Gauge,
        "Returns last SSL chain expiry in unixtime.",
    ),
    (
        UP,
        MetricType::Gauge,
        "1 if the check's last run succeeded, else 0.",
    ),
    (
        REQUESTS,
        MetricType::Counter,
        "API requests by check, outcome and failure reason.",
    ),
    (
        REQUEST_DURATION,
        MetricType::Histogram,
        "Latency of successful API requests in seconds.",
    ),
    (
        TTFT,
        MetricType::Histogram,
        "Time from sending a streamed chat request to the first visible token, in seconds.",
    ),
    (
        TOKENS_PER_SECOND,
        MetricType::Gauge,
        "Completion tokens per second after the first token, last stream.",
    ),
    (
        MODELS_AVAILABLE,
        MetricType::Gauge,
        "Number of models the provider listed.",
    ),
    (
        MODEL_LISTED,
        MetricType::Gauge,
        "1 if the configured model is in the provider's model list, else 0.",
    ),
    (
        TOKENS,
        MetricType::Counter,
        "Tokens used by the probe's requests, by kind (cached_input and cache_write are part of input).",
    ),
    (
        COST,
        MetricType::Counter,
        "Dollars the probe's requests cost, from the [pricing] table.",
    ),
    (
        UNPRICED,
        MetricType::Counter,
        "Responses whose model has no [pricing] entry (tokens counted, no cost).",
    ),
    (
        MISSING_USAGE,
        MetricType::Counter,
        "Successful responses that reported no token usage.",
    ),
    (
        INVALID_USAGE,
        MetricType::Counter,
        "Successful responses whose usage was implausible (over 2^24 tokens of a kind): \
         no tokens and no cost counted.",
    ),
    (
        RESPONSES,
        MetricType::Counter,
        "Successful chat responses by the model the server says answered.",
    ),
    (
        RETRY_AFTER,
        MetricType::Gauge,
        "Seconds the last 429 response asked to wait; 0 otherwise.",
    ),
    (
        SPEND_GUARD_ENGAGED,
        MetricType::Gauge,
        "1 while the daily spend limit pauses the probe's paid checks.",
    ),
    (
        SPEND_TODAY,
        MetricType::Gauge,
        "Dollars the probe spent since 00:00 UTC (reset when the agent restarts).",
    ),
    (SKIPPED, MetricType::Counter, "Checks not run, by reason."),
    (
        EMBEDDING_DIMENSIONS,
        MetricType::Gauge,
        "Dimensions of the embedding the last successful embeddings check received.",
    ),
];

/// Declares every family with its type and help text.
pub fn describe(r: &mut Registry) {
    for (name, kind, help) in DESCRIPTIONS {
        r.describe(name, *kind, help);
    }
    super::signals::describe(r);
}

/// Publishes at 0 every counter whose labels are known before the first request (per check:
/// successful requests; per paid check: tokens by kind, cost, unpriced, missing and invalid
/// usage, skips by the spend guard), so `increase()` and alerts see the first occurrence
/// instead of a series that appears already at 1. Adding 0 to an existing counter changes
/// nothing, so this is safe on every run.
pub fn declare_counters(r: &mut Registry, labels: &BaseLabels, checks: &[Check]) {
    super::signals::declare_counters(r, labels, checks);
    for check in checks {
        let c = check.as_str();
        let at = |extra: &[(&'static str, &'static str)]| {
            let mut l = labels.with(&[("check", c)]);
            l.extend_from_slice(extra);
            l
        };
        ignore(r.counter_add(
            REQUESTS,
            &at(&[("outcome", "success"), ("reason", Reason::Ok.as_str())]),
            0.0,
        ));
        if !check.is_paid() {
            continue;
        }
        for kind in ["input", "output", "cached_input", "cache_write"] {
            ignore(r.counter_add(TOKENS, &at(&[("kind", kind)]), 0.0));
        }
        for name in [COST, UNPRICED, MISSING_USAGE, INVALID_USAGE] {
            ignore(r.counter_add(name, &at(&[]), 0.0));
        }
        ignore(r.counter_add(SKIPPED, &at(&[("reason", "spend_guard")]), 0.0));
    }
}

/// What one check measured: its outcome plus the request's timing facts.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRun {
    /// Which check.
    pub check: Check,
    /// From sending the request to the end of the body (or the failure).
    pub duration: Duration,
    /// Time per phase (`phase` label value, seconds), from the HTTP client.
    pub phases: Vec<(&'static str, Duration)>,
    /// Earliest certificate expiry (Unix seconds) if TLS was used.
    pub cert_expiry: Option<i64>,
    /// What came of it.
    pub result: Result<Measured, Failure>,
}

/// What a successful check found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measured {
    /// The model list (`models` check).
    pub models: Option<ModelList>,
    /// Usage and served model (chat checks).
    pub reply: ChatReply,
    /// Time to the first visible token (`chat_stream`).
    pub time_to_first_token: Option<Duration>,
    /// Time to the first generated token of any kind, reasoning included: where decoding
    /// starts, so the output rate counts from it. `None`: the same as `time_to_first_token`.
    pub first_text: Option<Duration>,
    /// Dimensions of the embedding (`embeddings`).
    pub embedding_dimensions: Option<usize>,
}

/// What recording a check worked out about money, for the spend guard, logs and the report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Accounting {
    /// Tokens reported.
    pub usage: Option<Usage>,
    /// A usage refused as implausible (see [`crate::pricing::MAX_PLAUSIBLE_TOKENS`]).
    pub invalid_usage: Option<Usage>,
    /// Dollars, when the answering model is priced.
    pub cost: Option<f64>,
    /// The model name that has no price (for a once-per-model warning).
    pub unpriced_model: Option<String>,
    /// Output tokens per second (`chat_stream`).
    pub tokens_per_second: Option<f64>,
}

/// The probe's fixed labels (probe, provider, model, user labels) plus per-series extras.
#[derive(Debug, Clone)]
pub struct BaseLabels {
    /// Labels every `pushprobe_ai_*` series carries.
    pub all: Vec<(String, String)>,
    /// Labels of per-probe series (probe and user labels, no provider or model).
    pub probe: Vec<(String, String)>,
}

impl BaseLabels {
    /// Builds the label sets of a probe; `provider` and `model` are capped and cleaned (see
    /// [`super::signals::label_value`]).
    pub fn new(probe: &str, provider: &str, model: &str, extra: &[(String, String)]) -> Self {
        let mut probe_only = vec![("probe".to_string(), probe.to_string())];
        probe_only.extend(extra.iter().cloned());
        let mut all = probe_only.clone();
        all.push(("provider".into(), super::signals::label_value(provider)));
        all.push(("model".into(), super::signals::label_value(model)));
        BaseLabels {
            all,
            probe: probe_only,
        }
    }

    /// The full set plus `extra`, borrowed as the registry takes them.
    pub fn with<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        self.all
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied())
            .collect()
    }

    /// The per-probe set plus `extra`.
    pub fn probe_with<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        self.probe
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied())
            .collect()
    }
}

/// The `served_model` label of a server-named model: the name itself if it is the configured
/// model or literally in the price table, the price entry for a glob match, else `other`.
pub fn served_model_label<'a>(
    served: &'a str,
    configured: &'a str,
    pricing: &'a PriceTable,
) -> &'a str {
    if served == configured {
        return served;
    }
    match pricing.lookup(served) {
        Some(m) if m.kind == crate::pricing::MatchKind::Glob => m.entry,
        Some(_) => served,
        None => OTHER_MODEL,
    }
}

/// Everything [`record_check`] needs besides the run.
pub struct RecordContext<'a> {
    /// The probe's labels.
    pub labels: &'a BaseLabels,
    /// The configured model.
    pub model: &'a str,
    /// Prices.
    pub pricing: &'a PriceTable,
    /// Histogram bounds.
    pub buckets: &'a Arc<[f64]>,
}

fn ignore<E>(_: Result<(), E>) {
    // Label names are fixed here and values validated by the configuration, so a refused
    // label set is a bug caught by tests, not something to stop a probe run for.
}

/// Records one check's series and returns its accounting.
pub fn record_check(r: &mut Registry, cx: &RecordContext<'_>, run: &CheckRun) -> Accounting {
    let check = run.check.as_str();
    let at = |extra: &[(&'static str, &'static str)]| {
        let mut l = cx.labels.with(&[("check", check)]);
        l.extend_from_slice(extra);
        l
    };
    for (phase, d) in &run.phases {
        let mut l = cx.labels.with(&[("check", check)]);
        l.push(("phase", phase));
        ignore(r.gauge_set(PHASE_DURATION, &l, d.as_secs_f64()));
    }
    let (outcome, reason) = match &run.result {
        Ok(_) => ("success", Reason::Ok),
        Err(f) => ("failure", f.reason),
    };
    ignore(r.counter_add(
        REQUESTS,
        &at(&[("outcome", outcome), ("reason", reason.as_str())]),
        1.0,
    ));
    ignore(r.gauge_set(UP, &at(&[]), if run.result.is_ok() { 1.0 } else { 0.0 }));
    let wait = run.result.as_ref().err().and_then(|f| f.retry_after);
    ignore(r.gauge_set(RETRY_AFTER, &at(&[]), wait.unwrap_or(0.0)));
    let Ok(m) = &run.result else {
        return Accounting::default();
    };
    ignore(r.histogram_observe(
        REQUEST_DURATION,
        &at(&[]),
        cx.buckets,
        run.duration.as_secs_f64(),
    ));
    if let Some(list) = &m.models {
        ignore(r.gauge_set(MODELS_AVAILABLE, &cx.labels.with(&[]), list.count as f64));
        ignore(r.gauge_set(
            MODEL_LISTED,
            &cx.labels.with(&[]),
            if list.listed { 1.0 } else { 0.0 },
        ));
    }
    if let Some(d) = m.embedding_dimensions {
        ignore(r.gauge_set(EMBEDDING_DIMENSIONS, &at(&[]), d as f64));
    }
    if !run.check.is_paid() {
        return Accounting::default();
    }
    let served = m.reply.served_model.as_deref().unwrap_or(cx.model);
    let served_label =
        super::signals::label_value(served_model_label(served, cx.model, cx.pricing));
    let mut l = at(&[]);
    l.push(("served_model", &served_label));
    ignore(r.counter_add(RESPONSES, &l, 1.0));

    let mut acc = Accounting::default();
    // An implausible usage is dropped before anything derives from it (tokens, cost, rate).
    let usage = match m.reply.usage {
        Some(u) if !u.is_plausible() => {
            ignore(r.counter_add(INVALID_USAGE, &at(&[]), 1.0));
            acc.invalid_usage = Some(u);
            None
        }
        other => other,
    };
    if let Some(ttft) = m.time_to_first_token {
        ignore(r.histogram_observe(TTFT, &at(&[]), cx.buckets, ttft.as_secs_f64()));
    }
    if run.check == Check::ChatStream {
        let decode_start = m.first_text.or(m.time_to_first_token);
        acc.tokens_per_second =
            output_tokens_per_second(usage.as_ref(), decode_start, run.duration);
        match acc.tokens_per_second {
            Some(tps) => ignore(r.gauge_set(TOKENS_PER_SECOND, &at(&[]), tps)),
            // A stale rate would mislead; without a new one the series goes away.
            None => r.remove(TOKENS_PER_SECOND, &at(&[])),
        }
    }
    let Some(usage) = usage else {
        if acc.invalid_usage.is_none() {
            ignore(r.counter_add(MISSING_USAGE, &at(&[]), 1.0));
        }
        return acc;
    };
    acc.usage = Some(usage);
    for (kind, n) in [
        ("input", usage.prompt_tokens),
        ("output", usage.completion_tokens),
        ("cached_input", usage.billable_cached_tokens()),
        ("cache_write", usage.billable_cache_write_tokens()),
    ] {
        ignore(r.counter_add(TOKENS, &at(&[("kind", kind)]), n as f64));
    }
    // The answering model is billed; a different model is never priced in its place.
    match cx.pricing.lookup(served) {
        Some(p) => {
            let dollars = cost(&usage, &p.price);
            ignore(r.counter_add(COST, &at(&[]), dollars));
            acc.cost = Some(dollars);
        }
        None => {
            ignore(r.counter_add(UNPRICED, &at(&[]), 1.0));
            acc.unpriced_model = Some(served.to_string());
        }
    }
    acc
}

/// Records the spend guard's state.
pub fn record_spend(r: &mut Registry, labels: &BaseLabels, spent_today: f64, engaged: bool) {
    let l = labels.probe_with(&[]);
    ignore(r.gauge_set(SPEND_TODAY, &l, spent_today));
    ignore(r.gauge_set(SPEND_GUARD_ENGAGED, &l, if engaged { 1.0 } else { 0.0 }));
}

/// Records a paid check skipped by the spend guard: counted, and its `up` series removed (a
/// paused check is neither up nor down; the gap lets the series go stale).
pub fn record_skipped(r: &mut Registry, labels: &BaseLabels, check: Check) {
    let c = check.as_str();
    ignore(r.counter_add(
        SKIPPED,
        &labels.with(&[("check", c), ("reason", "spend_guard")]),
        1.0,
    ));
    r.remove(UP, &labels.with(&[("check", c)]));
}

/// Records the run's overall success, duration and earliest certificate expiry.
pub fn record_run(
    r: &mut Registry,
    labels: &BaseLabels,
    success: bool,
    duration: Duration,
    cert_expiry: Option<i64>,
) {
    // One dashboard splits every AI series by model and provider, this one included.
    ignore(r.gauge_set(
        PROBE_SUCCESS,
        &labels.with(&[]),
        if success { 1.0 } else { 0.0 },
    ));
    let l = labels.probe_with(&[]);
    ignore(r.gauge_set(PROBE_DURATION, &l, duration.as_secs_f64()));
    if let Some(t) = cert_expiry {
        ignore(r.gauge_set(CERT_EXPIRY, &l, t as f64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::Price;

    fn pricing() -> PriceTable {
        let aliases = vec!["deepseek-chat".to_string(), "deepseek-v3.2-*".to_string()];
        PriceTable::new([(
            "deepseek-v3.2",
            Price {
                input_per_mtok: 0.5,
                output_per_mtok: 2.0,
                cached_input_per_mtok: Some(0.25),
                cache_write_per_mtok: None,
                cache_read_per_mtok: None,
            },
            aliases.as_slice(),
        )])
        .unwrap()
    }

    fn labels() -> BaseLabels {
        BaseLabels::new(
            "p",
            "api.example.com",
            "deepseek-v3.2",
            &[("team".into(), "ai".into())],
        )
    }

    fn chat_run(served: Option<&str>, usage: Option<Usage>) -> CheckRun {
        CheckRun {
            check: Check::ChatStream,
            duration: Duration::from_secs(3),
            phases: vec![("connect", Duration::from_millis(5))],
            cert_expiry: None,
            result: Ok(Measured {
                models: None,
                reply: ChatReply {
                    usage,
                    served_model: served.map(str::to_string),
                },
                time_to_first_token: Some(Duration::from_secs(1)),
                first_text: None,
                embedding_dimensions: None,
            }),
        }
    }

    #[test]
    fn served_model_labels_stay_bounded() {
        let t = pricing();
        assert_eq!(
            served_model_label("deepseek-v3.2", "deepseek-v3.2", &t),
            "deepseek-v3.2"
        );
        assert_eq!(
            served_model_label("deepseek-chat", "deepseek-v3.2", &t),
            "deepseek-chat"
        );
        assert_eq!(
            served_model_label("deepseek-v3.2-exp-1", "x", &t),
            "deepseek-v3.2"
        );
        assert_eq!(served_model_label("made-up-123", "x", &t), OTHER_MODEL);
    }

    #[test]
    fn priced_stream_records_tokens_cost_rate_and_served_model() {
        let mut r = Registry::new();
        describe(&mut r);
        let (l, t, b) = (labels(), pricing(), Arc::from(vec![1.0, 5.0]));
        let cx = RecordContext {
            labels: &l,
            model: "deepseek-v3.2",
            pricing: &t,
            buckets: &b,
        };
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 4,
            cached_tokens: 2,
            cache_write_tokens: 0,
        };
        let acc = record_check(&mut r, &cx, &chat_run(Some("deepseek-chat"), Some(usage)));
        let expected = 8.0 * 0.5 / 1e6 + 2.0 * 0.25 / 1e6 + 4.0 * 2.0 / 1e6;
        assert_eq!(acc.cost, Some(expected));
        assert_eq!(acc.tokens_per_second, Some(2.0));
        let at = |extra: &[(&'static str, &'static str)]| {
            let mut v = l.with(&[("check", "chat_stream")]);
            v.extend_from_slice(extra);
            v
        };
        assert_eq!(r.value(COST, &at(&[])), Some(expected));
        assert_eq!(r.value(TOKENS, &at(&[("kind", "input")])), Some(10.0));
        assert_eq!(r.value(TOKENS, &at(&[("kind", "cached_input")])), Some(2.0));
        assert_eq!(r.value(TOKENS, &at(&[("kind", "output")])), Some(4.0));
        assert_eq!(r.value(TOKENS_PER_SECOND, &at(&[])), Some(2.0));
        assert_eq!(r.value(UP, &at(&[])), Some(1.0));
        assert_eq!(r.value(RETRY_AFTER, &at(&[])), Some(0.0));
        assert_eq!(
            r.value(RESPONSES, &at(&[("served_model", "deepseek-chat")])),
            Some(1.0)
        );
        assert_eq!(
            r.value(REQUESTS, &at(&[("outcome", "success"), ("reason", "ok")])),
            Some(1.0)
        );
        let phase = l.with(&[("check", "chat_stream"), ("phase", "connect")]);
        assert_eq!(r.value(PHASE_DURATION, &phase), Some(0.005));
    }

    #[test]
    fn counters_start_at_zero_before_their_first_increment() {
        let mut r = Registry::new();
        let l = labels();
        declare_counters(&mut r, &l, &[Check::Models, Check::Chat]);
        let chat = l.with(&[("check", "chat")]);
        for name in [COST, UNPRICED, MISSING_USAGE, INVALID_USAGE] {
            assert_eq!(r.value(name, &chat), Some(0.0), "{name}");
        }
        for kind in ["input", "output", "cached_input", "cache_write"] {
            let mut tok = chat.clone();
            tok.push(("kind", kind));
            assert_eq!(r.value(TOKENS, &tok), Some(0.0), "{kind}");
        }
        let models = l.with(&[("check", "models")]);
        for at in [&chat, &models] {
            let mut ok = at.clone();
            ok.extend_from_slice(&[("outcome", "success"), ("reason", "ok")]);
            assert_eq!(r.value(REQUESTS, &ok), Some(0.0));
        }
        // The free check has no money series.
        assert_eq!(r.value(UNPRICED, &models), None);
        // Declaring again (every run does) keeps what was counted.
        ignore(r.counter_add(UNPRICED, &chat, 1.0));
        declare_counters(&mut r, &l, &[Check::Chat]);
        assert_eq!(r.value(UNPRICED, &chat), Some(1.0));
    }

    #[test]
    fn implausible_usage_counts_no_tokens_and_no_cost() {
        let mut r = Registry::new();
        let (l, t, b) = (labels(), pricing(), Arc::from(vec![1.0]));
        let cx = RecordContext {
            labels: &l,
            model: "deepseek-chat",
            pricing: &t,
            buckets: &b,
        };
        let at = l.with(&[("check", "chat_stream")]);
        let mut input = at.clone();
        input.push(("kind", "input"));
        // A relay answering u64::MAX (what one did) and one just past the bound.
        for prompt_tokens in [u64::MAX, crate::pricing::MAX_PLAUSIBLE_TOKENS + 1] {
            let usage = Usage {
                prompt_tokens,
                completion_tokens: 2,
                cached_tokens: 0,
                cache_write_tokens: 0,
            };
            let acc = record_check(&mut r, &cx, &chat_run(Some("deepseek-chat"), Some(usage)));
            assert_eq!(acc.usage, None);
            assert_eq!(acc.invalid_usage, Some(usage));
            assert_eq!(acc.cost, None);
            assert_eq!(acc.tokens_per_second, None);
        }
        assert_eq!(r.value(INVALID_USAGE, &at), Some(2.0));
        assert_eq!(r.value(MISSING_USAGE, &at), None);
        assert_eq!(r.value(TOKENS, &input), None);
        assert_eq!(r.value(COST, &at), None);
        // A count at the bound is real usage and is counted.
        let usage = Usage {
            prompt_tokens: crate::pricing::MAX_PLAUSIBLE_TOKENS,
            completion_tokens: 2,
            cached_tokens: 0,
            cache_write_tokens: 0,
        };
        let acc = record_check(&mut r, &cx, &chat_run(Some("deepseek-chat"), Some(usage)));
        assert_eq!(acc.usage, Some(usage));
        assert_eq!(
            r.value(TOKENS, &input),
            Some(crate::pricing::MAX_PLAUSIBLE_TOKENS as f64)
        );
    }

    #[test]
    fn unpriced_and_usageless_responses() {
        let mut r = Registry::new();
        let (l, t, b) = (labels(), pricing(), Arc::from(vec![1.0]));
        let cx = RecordContext {
            labels: &l,
            model: "deepseek-v3.2",
            pricing: &t,
            buckets: &b,
        };
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 1,
            cached_tokens: 0,
            cache_write_tokens: 0,
        };
        // The configured model is priced, but a different one answered: never priced as it.
        let acc = record_check(&mut r, &cx, &chat_run(Some("gpt-4.1-mini"), Some(usage)));
        assert_eq!(acc.cost, None);
        assert_eq!(acc.unpriced_model.as_deref(), Some("gpt-4.1-mini"));
        let at = l.with(&[("check", "chat_stream")]);
        assert_eq!(r.value(UNPRICED, &at), Some(1.0));
        assert_eq!(r.value(COST, &at), None);
        let mut tok = at.clone();
        tok.push(("kind", "output"));
        assert_eq!(r.value(TOKENS, &tok), Some(1.0));
        let mut other = at.clone();
        other.push(("served_model", OTHER_MODEL));
        assert_eq!(r.value(RESPONSES, &other), Some(1.0));

        assert!(r.value(TOKENS_PER_SECOND, &at).is_some());
        let acc = record_check(&mut r, &cx, &chat_run(None, None));
        assert_eq!(acc, Accounting::default());
        assert_eq!(r.value(MISSING_USAGE, &at), Some(1.0));
        // No usage, no rate: the previous run's rate is withdrawn, not repeated.
        assert_eq!(r.value(TOKENS_PER_SECOND, &at), None);
    }

    #[test]
    fn failures_count_reason_and_retry_after() {
        let mut r = Registry::new();
        let (l, t, b) = (labels(), pricing(), Arc::from(vec![1.0]));
        let cx = RecordContext {
            labels: &l,
            model: "deepseek-v3.2",
            pricing: &t,
            buckets: &b,
        };
        let mut f = Failure::new(Reason::RateLimited, "429");
        f.retry_after = Some(30.0);
        let run = CheckRun {
            check: Check::Chat,
            duration: Duration::from_millis(10),
            phases: vec![],
            cert_expiry: None,
            result: Err(f),
        };
        assert_eq!(record_check(&mut r, &cx, &run), Accounting::default());
        let at = l.with(&[("check", "chat")]);
        assert_eq!(r.value(UP, &at), Some(0.0));
        assert_eq!(r.value(RETRY_AFTER, &at), Some(30.0));
        let mut req = at.clone();
        req.extend([("outcome", "failure"), ("reason", "rate_limited")]);
        assert_eq!(r.value(REQUESTS, &req), Some(1.0));
        // Failed requests stay out of the latency histogram.
        assert!(r
            .samples_at(0)
            .iter()
            .all(|s| !s.labels.metric_name().starts_with(REQUEST_DURATION)));

        record_skipped(&mut r, &l, Check::Chat);
        assert_eq!(r.value(UP, &at), None);
        record_spend(&mut r, &l, 0.5, true);
        assert_eq!(r.value(SPEND_GUARD_ENGAGED, &l.probe_with(&[])), Some(1.0));
    }
}
