//! Stream timing bookkeeping, independent of any API's JSON: a stream parser reports when
//! generated text arrived ([`StreamTiming::on_text`]) and why generation stopped
//! ([`StreamTiming::on_finish_reason`]); the summary gives the first visible and first
//! reasoning token, the gaps between consecutive text chunks, the longest gap and the stalls.
//!
//! Memory stays bounded whatever the stream: at most [`MAX_GAPS`] gaps are kept for the
//! histogram, while the longest gap, the stall count and the chunk count cover all of them.

use std::time::Duration;

/// Most gaps kept for the histogram; later gaps still count towards the longest and stalls.
pub const MAX_GAPS: usize = 4096;

/// Default gap after which a pause between two text chunks counts as a stall.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_secs(2);

/// What kind of generated text a chunk carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// Answer text a user sees (`content`, Anthropic's `text_delta`).
    Visible,
    /// Reasoning text (`reasoning_content`, Anthropic's `thinking_delta`).
    Reasoning,
}

/// Why generation stopped, reduced to a bounded set (the `finish_reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// The model ended its answer (OpenAI `stop`; Anthropic `end_turn`, `stop_sequence`).
    Stop,
    /// The token limit was reached (OpenAI `length`; Anthropic `max_tokens`).
    Length,
    /// The provider filtered the answer (OpenAI `content_filter`; Anthropic `refusal`).
    ContentFilter,
    /// The model called a tool (OpenAI `tool_calls`, `function_call`; Anthropic `tool_use`).
    ToolCalls,
    /// Anything else.
    Other,
}

impl FinishReason {
    /// Every value, for declaring series up front.
    pub const ALL: [FinishReason; 5] = [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::ContentFilter,
        FinishReason::ToolCalls,
        FinishReason::Other,
    ];

    /// Maps an OpenAI `finish_reason` or an Anthropic `stop_reason`.
    pub fn parse(value: &str) -> FinishReason {
        match value {
            "stop" | "end_turn" | "stop_sequence" => FinishReason::Stop,
            "length" | "max_tokens" => FinishReason::Length,
            "content_filter" | "refusal" => FinishReason::ContentFilter,
            "tool_calls" | "function_call" | "tool_use" => FinishReason::ToolCalls,
            _ => FinishReason::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Other => "other",
        }
    }
}

/// Follows the arrival times of a stream's text chunks.
#[derive(Debug, Clone)]
pub struct StreamTiming {
    stall_threshold: Duration,
    first_visible: Option<Duration>,
    first_reasoning: Option<Duration>,
    last_text: Option<Duration>,
    gaps: Vec<Duration>,
    longest_gap: Option<Duration>,
    stalls: u64,
    chunks: u64,
    finish_reason: Option<FinishReason>,
}

/// What the timing of one stream came to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimingSummary {
    /// Request sent to the first visible text.
    pub first_visible: Option<Duration>,
    /// Request sent to the first reasoning text.
    pub first_reasoning: Option<Duration>,
    /// Gaps between consecutive text chunks (at most [`MAX_GAPS`]).
    pub gaps: Vec<Duration>,
    /// The longest of all gaps.
    pub longest_gap: Option<Duration>,
    /// Gaps longer than the stall threshold.
    pub stalls: u64,
    /// Text chunks received.
    pub chunks: u64,
    /// The last finish reason the stream gave.
    pub finish_reason: Option<FinishReason>,
}

impl TimingSummary {
    /// The first generated token of either kind: where decoding starts.
    pub fn first_text(&self) -> Option<Duration> {
        match (self.first_visible, self.first_reasoning) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl StreamTiming {
    /// Starts timing; gaps longer than `stall_threshold` count as stalls.
    pub fn new(stall_threshold: Duration) -> Self {
        StreamTiming {
            stall_threshold,
            first_visible: None,
            first_reasoning: None,
            last_text: None,
            gaps: Vec::new(),
            longest_gap: None,
            stalls: 0,
            chunks: 0,
            finish_reason: None,
        }
    }

    /// Records a chunk of non-empty generated text that arrived `at` after the request was
    /// sent. Callers skip empty text: an empty delta is no token.
    pub fn on_text(&mut self, at: Duration, kind: TextKind) {
        self.chunks = self.chunks.saturating_add(1);
        let first = match kind {
            TextKind::Visible => &mut self.first_visible,
            TextKind::Reasoning => &mut self.first_reasoning,
        };
        first.get_or_insert(at);
        if let Some(last) = self.last_text {
            // Arrival times come from one monotonic clock; saturate anyway so a caller's
            // out-of-order report cannot underflow.
            let gap = at.saturating_sub(last);
            if self.gaps.len() < MAX_GAPS {
                self.gaps.push(gap);
            }
            if self.longest_gap.is_none_or(|l| gap > l) {
                self.longest_gap = Some(gap);
            }
            if gap > self.stall_threshold {
                self.stalls += 1;
            }
        }
        self.last_text = Some(at.max(self.last_text.unwrap_or(at)));
    }

    /// Records a finish reason as the API named it; the last one given wins.
    pub fn on_finish_reason(&mut self, value: &str) {
        self.finish_reason = Some(FinishReason::parse(value));
    }

    /// The summary so far.
    pub fn summary(&self) -> TimingSummary {
        TimingSummary {
            first_visible: self.first_visible,
            first_reasoning: self.first_reasoning,
            gaps: self.gaps.clone(),
            longest_gap: self.longest_gap,
            stalls: self.stalls,
            chunks: self.chunks,
            finish_reason: self.finish_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn gaps_longest_and_stalls() {
        let mut t = StreamTiming::new(MS(500));
        for at in [100, 150, 900, 950, 2000] {
            t.on_text(MS(at), TextKind::Visible);
        }
        let s = t.summary();
        assert_eq!(s.first_visible, Some(MS(100)));
        assert_eq!(s.first_reasoning, None);
        assert_eq!(s.gaps, [MS(50), MS(750), MS(50), MS(1050)]);
        assert_eq!(s.longest_gap, Some(MS(1050)));
        assert_eq!(s.stalls, 2);
        assert_eq!(s.chunks, 5);
        // A gap exactly at the threshold is no stall.
        let mut t = StreamTiming::new(MS(500));
        t.on_text(MS(0), TextKind::Visible);
        t.on_text(MS(500), TextKind::Visible);
        assert_eq!(t.summary().stalls, 0);
    }

    #[test]
    fn reasoning_then_visible() {
        let mut t = StreamTiming::new(DEFAULT_STALL_THRESHOLD);
        t.on_text(MS(200), TextKind::Reasoning);
        t.on_text(MS(300), TextKind::Reasoning);
        t.on_text(MS(700), TextKind::Visible);
        let s = t.summary();
        assert_eq!(s.first_reasoning, Some(MS(200)));
        assert_eq!(s.first_visible, Some(MS(700)));
        assert_eq!(s.first_text(), Some(MS(200)));
        assert_eq!(s.gaps, [MS(100), MS(400)]);
    }

    #[test]
    fn one_chunk_has_no_gap_and_finish_reasons_map() {
        let mut t = StreamTiming::new(MS(1));
        t.on_text(MS(5), TextKind::Visible);
        t.on_finish_reason("length");
        let s = t.summary();
        assert!(s.gaps.is_empty());
        assert_eq!(s.longest_gap, None);
        assert_eq!(s.finish_reason, Some(FinishReason::Length));
        let cases = [
            ("stop", "stop"),
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("content_filter", "content_filter"),
            ("refusal", "content_filter"),
            ("tool_calls", "tool_calls"),
            ("tool_use", "tool_calls"),
            ("function_call", "tool_calls"),
            ("pause_turn", "other"),
            ("", "other"),
        ];
        for (given, label) in cases {
            assert_eq!(FinishReason::parse(given).as_str(), label, "{given}");
        }
    }

    proptest! {
        #[test]
        fn any_arrival_order_is_bounded(ats in proptest::collection::vec(0u64..10_000, 0..6000)) {
            let mut t = StreamTiming::new(MS(100));
            for (i, at) in ats.iter().enumerate() {
                let kind = if i % 3 == 0 { TextKind::Reasoning } else { TextKind::Visible };
                t.on_text(MS(*at), kind);
            }
            let s = t.summary();
            prop_assert!(s.gaps.len() <= MAX_GAPS);
            prop_assert_eq!(s.chunks, ats.len() as u64);
            prop_assert!(s.stalls <= s.chunks);
            if let Some(l) = s.longest_gap {
                prop_assert!(s.gaps.iter().all(|g| *g <= l));
            }
        }
    }
}
