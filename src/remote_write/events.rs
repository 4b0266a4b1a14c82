//! Everything a sender reports about itself: each event's self-metric updates and its log
//! line live together in one method of [`SenderEvents`], so a new counter or a changed message
//! has one place to go, and the two cannot drift apart.
//!
//! Rejections are rate-limited ([`RejectionLog`]): a misconfigured series can be refused every
//! few seconds for hours, so the first refusal of a burst is logged in full and the rest are
//! counted, then summarised at most once a minute while they go on, when an in-order request
//! is accepted again (which ends the burst; a part of a refused request does not), and at
//! shutdown.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::compression::{Compression, HandshakeFailure};
use super::encode::{EncodeError, EncodeStats};
use super::protocol::{BadCount, Protocol};
use super::retry::{DropReason, Outcome};
use super::service::Answer;
use crate::queue::QueueError;
use crate::telemetry::{
    Telemetry, RW_BYTES_SENT, RW_COMPRESSION, RW_COMPRESSION_HANDSHAKES, RW_INVALID_ANSWERS,
    RW_LAST_SUCCESS, RW_PARTIAL_WRITES, RW_PENDING, RW_PROTOCOL, RW_REQUESTS, RW_SAMPLES_DROPPED,
    RW_SAMPLES_FAILED, RW_SAMPLES_RETRIED, RW_SAMPLES_SENT, RW_ZSTD_REFUSED,
};

/// Log target of every line below: operators filter the sender's logs by it
/// (`--log-level pushprobe::remote_write::sender=debug`) and JSON logs carry it, so it names
/// the sender, not the file the events are written in.
const TARGET: &str = "pushprobe::remote_write::sender";

/// How often a burst of rejections is summarised in the log.
const REJECTION_SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// The self-metrics and log lines of one endpoint's sender.
pub(crate) struct SenderEvents {
    endpoint: String,
    telemetry: Arc<Telemetry>,
    /// Rejections not yet logged, shared by the shards and the live lane.
    rejections: Mutex<RejectionLog>,
}

impl SenderEvents {
    /// Events of the sender for `endpoint`, counted in `telemetry`.
    pub(crate) fn new(endpoint: String, telemetry: Arc<Telemetry>) -> Self {
        SenderEvents {
            endpoint,
            telemetry,
            rejections: Mutex::new(RejectionLog::default()),
        }
    }

    /// The endpoint's name, as in every label and log line.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn labels(&self) -> [(&str, &str); 1] {
        [("endpoint", self.endpoint.as_str())]
    }

    fn with_label<'a>(&'a self, name: &'a str, value: &'a str) -> [(&'a str, &'a str); 2] {
        [("endpoint", self.endpoint.as_str()), (name, value)]
    }

    fn rejections(&self) -> MutexGuard<'_, RejectionLog> {
        // The log only holds counters for messages: a poisoned one is still usable.
        self.rejections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates every series at zero so dashboards see them before the first event, and sets
    /// the pending gauge.
    pub(crate) fn touch_metrics(&self, pending: usize) {
        let t = &self.telemetry;
        for name in [
            RW_SAMPLES_SENT,
            RW_SAMPLES_FAILED,
            RW_SAMPLES_RETRIED,
            RW_BYTES_SENT,
        ] {
            t.add(name, &self.labels(), 0.0);
        }
        t.add(RW_ZSTD_REFUSED, &self.labels(), 0.0);
        for outcome in ["success", "retryable", "rejected", "split", "transport"] {
            t.add(RW_REQUESTS, &self.with_label("outcome", outcome), 0.0);
        }
        t.add(RW_PARTIAL_WRITES, &self.labels(), 0.0);
        for reason in [
            "written_not_a_number",
            "written_exceeds_sent",
            "success_with_body",
        ] {
            t.add(RW_INVALID_ANSWERS, &self.with_label("reason", reason), 0.0);
        }
        // Every reason a sample of this endpoint can be dropped for: refused here, duplicated
        // by a resend, or pushed out of its queue by the agent (full, failed, out of disk).
        for reason in [
            "rejected",
            "duplicate",
            "queue_full",
            "queue_error",
            "disk_full",
        ] {
            t.add(RW_SAMPLES_DROPPED, &self.with_label("reason", reason), 0.0);
        }
        self.set_pending(pending);
    }

    /// Sets the compression gauge: 1 for `now`, 0 for the other.
    pub(crate) fn compression_in_use(&self, now: Compression) {
        for c in [Compression::Snappy, Compression::Zstd] {
            let value = if c == now { 1.0 } else { 0.0 };
            self.telemetry.set(
                RW_COMPRESSION,
                &self.with_label("compression", c.as_str()),
                value,
            );
        }
    }

    /// Creates the handshake counters at zero, for an endpoint that asks the receiver.
    pub(crate) fn touch_handshakes(&self) {
        for result in ["zstd", "status", "unexpected", "timeout", "transport"] {
            self.telemetry.add(
                RW_COMPRESSION_HANDSHAKES,
                &self.with_label("result", result),
                0.0,
            );
        }
    }

    /// The receiver announced zstd: bodies go zstd from now on.
    pub(crate) fn handshake_zstd(&self) {
        self.telemetry.add(
            RW_COMPRESSION_HANDSHAKES,
            &self.with_label("result", "zstd"),
            1.0,
        );
        tracing::info!(
            target: TARGET,
            endpoint = %self.endpoint,
            "the receiver takes zstd bodies (get_vm_proto_version answered 1); sending zstd"
        );
        self.compression_in_use(Compression::Zstd);
    }

    /// The handshake did not announce zstd: bodies stay snappy.
    pub(crate) fn handshake_failed(&self, failure: &HandshakeFailure) {
        self.telemetry.add(
            RW_COMPRESSION_HANDSHAKES,
            &self.with_label("result", failure.result()),
            1.0,
        );
        tracing::info!(
            target: TARGET,
            endpoint = %self.endpoint,
            reason = %failure,
            "the receiver does not announce zstd (get_vm_proto_version); sending snappy"
        );
        self.compression_in_use(Compression::Snappy);
    }

    /// A zstd request was refused for its encoding and is sent again as snappy; `first` when
    /// this refusal switched the endpoint to snappy (logged then only).
    pub(crate) fn zstd_refused(&self, answer: &Answer, first: bool) {
        self.telemetry.add(RW_ZSTD_REFUSED, &self.labels(), 1.0);
        if first {
            let status = answer.outcome.status_or_zero();
            tracing::warn!(
                target: TARGET,
                endpoint = %self.endpoint,
                status,
                message = %answer.message,
                "the receiver refused a zstd body; sending the same samples as snappy, and \
                 snappy from now on (until restart)"
            );
            self.compression_in_use(Compression::Snappy);
        }
    }

    /// zstd compression failed (it only can when memory runs out): the body goes snappy.
    pub(crate) fn zstd_failed(&self, error: &std::io::Error) {
        tracing::warn!(
            target: TARGET,
            endpoint = %self.endpoint,
            error = %error,
            "zstd compression failed; sending this request as snappy"
        );
    }

    /// The message the endpoint is sent now (1) and the other (0).
    pub(crate) fn protocol_in_use(&self, protocol: Protocol) {
        for p in [Protocol::V1, Protocol::V2] {
            let value = if p == protocol { 1.0 } else { 0.0 };
            self.telemetry
                .set(RW_PROTOCOL, &self.with_label("message", p.message()), value);
        }
    }

    /// The receiver does not take 2.0 (415, or a success without `-Written` headers): the
    /// endpoint is sent 1.0 until the agent restarts. Logged once.
    pub(crate) fn fell_back(&self, answer: &Answer) {
        self.protocol_in_use(Protocol::V1);
        let status = answer.outcome.status_or_zero();
        tracing::warn!(
            target: TARGET,
            endpoint = %self.endpoint,
            status,
            receiver_message = %answer.message,
            "receiver does not take remote write 2.0 (io.prometheus.write.v2.Request); sending the same samples as 1.0 (prometheus.WriteRequest) until restart"
        );
    }

    /// After falling back, the receiver refused the 1.0 message too.
    pub(crate) fn both_messages_refused(&self, answer: &Answer) {
        tracing::error!(
            target: TARGET,
            endpoint = %self.endpoint,
            receiver_message = %answer.message,
            "receiver refuses both remote write 2.0 and 1.0 messages (415); dropping the batch: check that the URL is a remote-write endpoint"
        );
    }

    /// A 2.0 receiver wrote only part of a request: what it wrote counts as sent, the rest
    /// as refused; nothing is sent again.
    pub(crate) fn partial_write(
        &self,
        stats: &EncodeStats,
        bytes: usize,
        unwritten: u64,
        answer: &Answer,
    ) {
        let unwritten = (unwritten as usize).min(stats.samples);
        let written = EncodeStats {
            samples: stats.samples - unwritten,
            ..*stats
        };
        self.record_success(&written, bytes);
        self.telemetry.add(RW_PARTIAL_WRITES, &self.labels(), 1.0);
        self.count_dropped(unwritten, "rejected", true);
        let status = answer.outcome.status_or_zero();
        tracing::warn!(
            target: TARGET,
            endpoint = %self.endpoint,
            status,
            sent = stats.samples,
            unwritten,
            receiver_message = %answer.message,
            "receiver wrote only part of a request; the rest is dropped, not sent again (that would write samples twice)"
        );
    }

    /// A `-Written` header could not be trusted (not a number, or more than was sent).
    pub(crate) fn untrusted_count(&self, bad: &BadCount, answer: &Answer) {
        self.telemetry.add(
            RW_INVALID_ANSWERS,
            &self.with_label("reason", bad.reason()),
            1.0,
        );
        tracing::warn!(
            target: TARGET,
            endpoint = %self.endpoint,
            header = bad.header,
            value = %bad.value,
            sent = bad.sent,
            receiver_message = %answer.message,
            "receiver's written count is not a number or exceeds what was sent; going by its status instead, and sending nothing again"
        );
    }

    /// A 2.0 success came with a body, which the protocol reserves: it is ignored.
    pub(crate) fn success_with_body(&self, answer: &Answer) {
        self.telemetry.add(
            RW_INVALID_ANSWERS,
            &self.with_label("reason", "success_with_body"),
            1.0,
        );
        tracing::debug!(
            target: TARGET,
            endpoint = %self.endpoint,
            bytes = answer.body_bytes,
            receiver_message = %answer.message,
            "receiver answered success with a body; ignoring it"
        );
    }

    /// Samples waiting in the queue.
    pub(crate) fn set_pending(&self, pending: usize) {
        self.telemetry
            .set(RW_PENDING, &self.labels(), pending as f64);
    }

    /// `run` ended on `abort`.
    pub(crate) fn aborted(&self) {
        tracing::debug!(target: TARGET, endpoint = %self.endpoint, "remote write aborted");
    }

    /// `run` ended because draining found the queue empty.
    pub(crate) fn drained(&self) {
        tracing::debug!(target: TARGET, endpoint = %self.endpoint, "remote write drained");
    }

    /// `run` is over: rejections not yet reported are summarised.
    pub(crate) fn stopped(&self) {
        if let Some(summary) = self.rejections().end() {
            self.log_rejection_summary(&summary, "until shutdown");
        }
    }

    /// Reading a window from the queue failed; the pump backs off and reads again.
    pub(crate) fn queue_read_failed(&self, error: &str) {
        tracing::error!(target: TARGET, endpoint = %self.endpoint, %error, "reading the queue failed");
    }

    /// Releasing a delivered window from the queue failed.
    pub(crate) fn ack_failed(&self, error: &QueueError) {
        // The batch will be sent again; duplicates are harmless to receivers.
        tracing::error!(target: TARGET, endpoint = %self.endpoint, error = %error, "releasing a sent batch failed");
    }

    /// A batch could not be encoded at all and is dropped.
    pub(crate) fn encode_failed(&self, samples: usize, error: &EncodeError) {
        tracing::error!(
            target: TARGET,
            endpoint = %self.endpoint,
            samples,
            error = %error,
            "cannot encode batch; dropping it"
        );
        self.count_dropped(samples, "encode_error", true);
    }

    /// Samples left out of a request because their series has no metric name.
    pub(crate) fn nameless_dropped(&self, samples: usize) {
        tracing::warn!(
            target: TARGET,
            endpoint = %self.endpoint,
            samples,
            "dropping samples whose series has no metric name"
        );
        self.count_dropped(samples, "invalid", true);
    }

    fn count_dropped(&self, samples: usize, reason: &str, failed: bool) {
        let n = samples as f64;
        if failed {
            self.telemetry.add(RW_SAMPLES_FAILED, &self.labels(), n);
        }
        self.telemetry
            .add(RW_SAMPLES_DROPPED, &self.with_label("reason", reason), n);
    }

    /// After a restart, the oldest samples of a series were skipped because the receiver
    /// already held them.
    pub(crate) fn duplicates_skipped(&self, samples: usize) {
        tracing::info!(
            target: TARGET,
            endpoint = %self.endpoint,
            samples,
            "after the restart, skipped samples the receiver already held"
        );
        self.telemetry.add(
            RW_SAMPLES_DROPPED,
            &self.with_label("reason", "duplicate"),
            samples as f64,
        );
    }

    /// A request was accepted.
    pub(crate) fn record_success(&self, stats: &EncodeStats, bytes: usize) {
        let t = &self.telemetry;
        t.add(RW_SAMPLES_SENT, &self.labels(), stats.samples as f64);
        t.add(RW_BYTES_SENT, &self.labels(), bytes as f64);
        t.add(RW_REQUESTS, &self.with_label("outcome", "success"), 1.0);
        t.set(
            RW_LAST_SUCCESS,
            &self.labels(),
            crate::clock::now_ms() as f64 / 1000.0,
        );
    }

    /// An in-order request was accepted after `attempt` failed attempts: besides the
    /// success, this ends a burst of rejections (the receiver takes data again).
    pub(crate) fn batch_delivered(&self, stats: &EncodeStats, bytes: usize, attempt: u32) {
        self.part_delivered(stats, bytes, attempt);
        let summary = self.rejections().end();
        if let Some(summary) = summary {
            self.log_rejection_summary(&summary, "before this success");
        }
    }

    /// An in-order request, or a part of a refused one, was accepted after `attempt` failed
    /// attempts. A part leaves a burst of rejections going: the rest of its request may still
    /// be refused.
    pub(crate) fn part_delivered(&self, stats: &EncodeStats, bytes: usize, attempt: u32) {
        self.record_success(stats, bytes);
        if attempt > 0 {
            tracing::info!(
                target: TARGET,
                endpoint = %self.endpoint,
                attempts = attempt + 1,
                "batch delivered after retries"
            );
        }
    }

    /// A request of several series was refused for some of its samples (the receiver stored
    /// none of it); it is sent again in parts.
    pub(crate) fn request_split(&self, stats: &EncodeStats, answer: &Answer) {
        self.telemetry
            .add(RW_REQUESTS, &self.with_label("outcome", "split"), 1.0);
        tracing::debug!(
            target: TARGET,
            endpoint = %self.endpoint,
            series = stats.series,
            samples = stats.samples,
            receiver_message = %answer.message,
            "receiver refused a request for some of its samples; sending it again in halves"
        );
    }

    /// A refused request was sent in parts: `requests` more, `dropped` of its samples
    /// refused or left unsent.
    pub(crate) fn split_finished(&self, requests: usize, dropped: usize) {
        tracing::debug!(
            target: TARGET,
            endpoint = %self.endpoint,
            requests,
            dropped,
            "refused request delivered in parts"
        );
    }

    /// The requests a refused request may cost in parts are spent: samples of the parts not
    /// yet sent are dropped, as refused with the last refusal's answer.
    pub(crate) fn split_budget_spent(&self, samples: usize, reason: DropReason, answer: &Answer) {
        self.count_dropped(samples, reason.as_label(), true);
        tracing::warn!(
            target: TARGET,
            endpoint = %self.endpoint,
            samples,
            receiver_message = %answer.message,
            "receiver refused too many parts of a request; dropping the rest unsent"
        );
    }

    /// A request was refused for good and its samples dropped: logged in full when it starts
    /// a burst, otherwise counted towards the burst's summary.
    pub(crate) fn record_rejection(
        &self,
        stats: &EncodeStats,
        reason: DropReason,
        answer: &Answer,
    ) {
        self.telemetry
            .add(RW_REQUESTS, &self.with_label("outcome", "rejected"), 1.0);
        self.count_dropped(stats.samples, reason.as_label(), true);
        let DropReason::Rejected { status } = reason;
        let report =
            self.rejections()
                .rejected(Instant::now(), stats.samples, status, &answer.message);
        match report {
            RejectionReport::First => {
                let hint = if (300..400).contains(&status) {
                    "; the URL redirects, point it at the final write endpoint"
                } else if matches!(status, 401 | 403) {
                    // Not retried: the same credentials would be refused again. With SigV4
                    // the usual causes are these, and the receiver's message names which.
                    "; authentication failed: check the credentials (for sigv4 also the \
                     region, the service and the clock)"
                } else {
                    ""
                };
                tracing::warn!(
                    target: TARGET,
                    endpoint = %self.endpoint,
                    status,
                    samples = stats.samples,
                    receiver_message = %answer.message,
                    "receiver rejected a batch, dropping it{hint} (repeats are summarised)"
                );
            }
            RejectionReport::Summary(summary) => {
                self.log_rejection_summary(&summary, "in the last minute")
            }
            RejectionReport::Quiet => {}
        }
    }

    fn log_rejection_summary(&self, s: &RejectionSummary, period: &str) {
        tracing::warn!(
            target: TARGET,
            endpoint = %self.endpoint,
            requests = s.requests,
            samples = s.samples,
            last_status = s.last_status,
            last_receiver_message = %s.last_message,
            "receiver rejected more batches {period}, dropped"
        );
    }

    /// Failed attempt `attempt` (0 for the first) of a request that is sent again `after`.
    pub(crate) fn record_retry(
        &self,
        stats: &EncodeStats,
        answer: &Answer,
        attempt: u32,
        after: Duration,
    ) {
        self.count_failed_request(answer);
        self.telemetry
            .add(RW_SAMPLES_RETRIED, &self.labels(), stats.samples as f64);
        let status = match answer.outcome {
            Outcome::Status(s) => Some(s),
            Outcome::Transport | Outcome::Credentials => None,
        };
        // One warning per batch: a long outage would otherwise log every backoff step.
        if attempt == 0 {
            tracing::warn!(
                target: TARGET,
                endpoint = %self.endpoint,
                status,
                samples = stats.samples,
                retry_in = ?after,
                error = %answer.message,
                "write failed, retrying"
            );
        } else {
            tracing::debug!(
                target: TARGET,
                endpoint = %self.endpoint,
                status,
                attempt = attempt + 1,
                retry_in = ?after,
                error = %answer.message,
                "write failed again, retrying"
            );
        }
    }

    /// A live-lane request failed in a way worth retrying; it is not retried, its samples
    /// stay queued for the in-order reader.
    pub(crate) fn live_send_failed(&self, answer: &Answer) {
        self.count_failed_request(answer);
        tracing::debug!(target: TARGET, endpoint = %self.endpoint, error = %answer.message,
            "live send failed; the samples stay queued");
    }

    /// Counts a request that got no answer or a retryable status.
    fn count_failed_request(&self, answer: &Answer) {
        let outcome = answer.outcome.retried_label();
        self.telemetry
            .add(RW_REQUESTS, &self.with_label("outcome", outcome), 1.0);
    }
}

/// Counts of rejections not yet logged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RejectionSummary {
    requests: u64,
    samples: u64,
    last_status: u16,
    last_message: String,
}

/// What to log for a rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RejectionReport {
    /// First of a burst: log it in full.
    First,
    /// A minute has passed since the last report: log the counts.
    Summary(RejectionSummary),
    /// Counted, reported later.
    Quiet,
}

/// Rate-limits rejection logging: a misconfigured series can be refused every few seconds for
/// hours, and one line per minute says as much as thousands.
#[derive(Debug, Default)]
struct RejectionLog {
    burst: Option<Burst>,
}

/// Rejections since the first one was logged in full.
#[derive(Debug)]
struct Burst {
    /// When the burst began or was last summarised.
    last_report: Instant,
    /// What has not been logged yet.
    unreported: Option<RejectionSummary>,
}

impl RejectionLog {
    /// Records a rejection at `now` and says what to log.
    fn rejected(
        &mut self,
        now: Instant,
        samples: usize,
        status: u16,
        message: &str,
    ) -> RejectionReport {
        let Some(burst) = &mut self.burst else {
            self.burst = Some(Burst {
                last_report: now,
                unreported: None,
            });
            return RejectionReport::First;
        };
        let s = burst.unreported.get_or_insert_with(|| RejectionSummary {
            requests: 0,
            samples: 0,
            last_status: status,
            last_message: String::new(),
        });
        s.requests += 1;
        s.samples += samples as u64;
        s.last_status = status;
        s.last_message.clear();
        s.last_message.push_str(message);
        if now.saturating_duration_since(burst.last_report) >= REJECTION_SUMMARY_EVERY {
            burst.last_report = now;
            burst
                .unreported
                .take()
                .map_or(RejectionReport::Quiet, RejectionReport::Summary)
        } else {
            RejectionReport::Quiet
        }
    }

    /// Ends the burst (a batch was accepted, or the sender stops); returns what is unreported.
    fn end(&mut self) -> Option<RejectionSummary> {
        self.burst.take().and_then(|b| b.unreported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_reason_and_outcome_starts_at_zero() {
        let telemetry = Arc::new(Telemetry::new());
        SenderEvents::new("rw".into(), telemetry.clone()).touch_metrics(7);
        for reason in [
            "rejected",
            "duplicate",
            "queue_full",
            "queue_error",
            "disk_full",
        ] {
            let at = [("endpoint", "rw"), ("reason", reason)];
            assert_eq!(
                telemetry.value(RW_SAMPLES_DROPPED, &at),
                Some(0.0),
                "{reason}"
            );
        }
        for outcome in ["success", "retryable", "rejected", "split", "transport"] {
            let at = [("endpoint", "rw"), ("outcome", outcome)];
            assert_eq!(telemetry.value(RW_REQUESTS, &at), Some(0.0), "{outcome}");
        }
        assert_eq!(
            telemetry.value(RW_PENDING, &[("endpoint", "rw")]),
            Some(7.0)
        );
    }

    #[test]
    fn rejections_are_logged_once_then_summarised() {
        let t0 = Instant::now();
        let mut log = RejectionLog::default();
        assert_eq!(log.rejected(t0, 10, 400, "a"), RejectionReport::First);
        for i in 1..=3 {
            assert_eq!(
                log.rejected(t0 + Duration::from_secs(i), 10, 400, "b"),
                RejectionReport::Quiet
            );
        }
        let summary = RejectionSummary {
            requests: 4,
            samples: 40,
            last_status: 422,
            last_message: "c".into(),
        };
        assert_eq!(
            log.rejected(t0 + REJECTION_SUMMARY_EVERY, 10, 422, "c"),
            RejectionReport::Summary(summary)
        );
        assert_eq!(
            log.rejected(
                t0 + REJECTION_SUMMARY_EVERY * 2 - Duration::from_secs(1),
                5,
                400,
                "d"
            ),
            RejectionReport::Quiet
        );
        // Success ends the burst, reporting what was not yet logged; the next one starts afresh.
        assert_eq!(
            log.end(),
            Some(RejectionSummary {
                requests: 1,
                samples: 5,
                last_status: 400,
                last_message: "d".into()
            })
        );
        assert_eq!(log.end(), None);
        assert_eq!(
            log.rejected(t0 + REJECTION_SUMMARY_EVERY * 3, 1, 400, "e"),
            RejectionReport::First
        );
        assert_eq!(log.end(), None);
    }

    #[test]
    fn log_lines_name_the_sender_as_their_target() {
        let log_lines = crate::remote_write::log_capture::Captured::start();

        let events = SenderEvents::new("rw-1".into(), Arc::new(Telemetry::new()));
        events.aborted();
        events.queue_read_failed("disk gone");
        let logs = log_lines.text();
        assert_eq!(
            logs.matches("pushprobe::remote_write::sender: ").count(),
            2,
            "{logs}"
        );
        assert!(
            logs.contains("remote write aborted endpoint=rw-1"),
            "{logs}"
        );
    }
}
