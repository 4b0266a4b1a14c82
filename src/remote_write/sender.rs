//! The pump of one remote-write endpoint: it moves samples from a queue to one receiver, and
//! its code reads in the order the samples travel.
//!
//! Wait until a window is worth sending (full, old enough, or the agent is draining); choose
//! as many shards as the backlog needs and peek that many requests' worth of the oldest
//! samples; split them by series into shards sent in parallel (see [`super::shard`] for why
//! per-series order holds); encode each request once ([`super::encode`]) and POST the same
//! bytes (through `service`, the request side) until [`super::retry`] says the receiver
//! accepted or permanently refused them; only when every shard is answered is the window
//! released from the queue. Samples are therefore delivered at least once: a request cut
//! short by `abort` (or a crash) is sent again by whoever reads the queue next. Every count
//! and log line on the way goes through `events`.
//!
//! A request of several series refused with 400 (one bad sample makes a 1.0 receiver refuse
//! it whole) is sent again in halves by series, as [`super::split`] plans, so that only the
//! refused samples are dropped.
//!
//! Bodies are snappy, or zstd where the receiver takes it ([`super::compression`]): with
//! `compression = "auto"` the pump asks the receiver once before its first window (within a
//! short deadline, and not while stopping). A zstd request refused for its encoding is sent
//! again at once as snappy, before the retry rules or the split above see the refusal, and
//! every later request of the endpoint is snappy.
//!
//! An endpoint configured for remote write 2.0 is sent 2.0 until an answer shows the receiver
//! does not take it ([`super::protocol`]); the request that found out is encoded again as 1.0
//! and sent, and so is everything after it, by every shard and the live lane. A partly
//! written 2.0 request is done: sending it again, whole or in parts, would write samples
//! twice.
//!
//! A sender winds down in two steps ([`Drain`]): *flush* sends everything queued without
//! waiting for full batches, and tells the agent when the queue is empty; *stop* sends what
//! was queued since, and ends the sender once its queue is empty.
//!
//! # Catching up after an outage
//!
//! The queue is read oldest first, so after an outage fresh samples would wait behind the
//! whole backlog. What is allowed depends on the receiver:
//! - **In order** (default; Prometheus without an out-of-order window answers 400 "out of
//!   order sample" to a sample older than its series' newest, and refuses the whole request):
//!   the backlog is sent strictly oldest first, with up to `max_shards` requests in parallel,
//!   so it clears as fast as the receiver takes it; fresh samples arrive after it.
//! - **`accepts_out_of_order = true`** (VictoriaMetrics; Prometheus or Mimir with
//!   `out_of_order_time_window` covering the backlog): a second, *live* lane runs beside the
//!   in-order one. While the endpoint is more than one window behind, each fresh batch is also
//!   posted at once by the live lane; the in-order reader later skips what the live lane
//!   delivered (see [`crate::queue::live`]). Dashboards and alerts see current data within a
//!   batch deadline while history fills in behind. Per-series order is not kept across the two
//!   lanes, which such receivers do not need; within each lane it is.
//!
//! `max_catchup_bytes_per_second` bounds the in-order lane's bytes while it is behind (a full
//! request or more still queued behind the window being sent), so a fleet of agents
//! reconnecting at once does not flatten the receiver; the live lane and a caught-up endpoint
//! are never slowed.

use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use super::compression::{self, Compression, Fallback, Negotiation, ZstdCompressor};
use super::encode::{EncodeStats, Encoder};
use super::encode_v2::{EncoderV2, NoMeta, SeriesMeta};
use super::events::SenderEvents;
use super::protocol::{self, judge, Protocol, Verdict};
use super::retry::{Decision, DropReason, Jitter, Outcome, RetryPolicy, UNAUTHORIZED_GRACE};
use super::service::{Answer, WriteService};
use super::shard::{partition, shard_count, TokenBucket};
use super::split::{splits, SplitPlan, Step};
use crate::config::RemoteWriteSettings;
use crate::queue::live::LiveBatch;
use crate::queue::{Batch, SharedQueue};
use crate::series::{Labels, Sample};
use crate::telemetry::Telemetry;

// The request side defines them; they stay reachable here as part of the sender's public API.
pub use super::service::{REMOTE_WRITE_VERSION, USER_AGENT_VALUE};

/// Why a sender could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// The settings were refused (backoff, batch size, headers, credentials) or the HTTP
    /// client could not be built.
    #[error("remote_write {endpoint}: {message}")]
    Client {
        /// Endpoint name.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
}

/// Moves batches from one queue to one receiver.
pub struct Sender {
    /// Self-metrics and log lines, under the endpoint's name.
    events: SenderEvents,
    /// The request side: one attempt at a time.
    service: WriteService,
    external_labels: Labels,
    max_samples_per_send: usize,
    batch_send_deadline: Duration,
    min_shards: usize,
    max_shards: usize,
    policy: RetryPolicy,
    queue: Arc<SharedQueue>,
    /// Every wait goes through it, so tests can record waits instead of sleeping.
    timer: Arc<dyn Timer>,
    /// Byte budget of catch-up traffic, shared by the shards.
    catchup: Option<std::sync::Mutex<TokenBucket>>,
    /// Origin of the bucket's time scale.
    epoch: Instant,
    /// Shared by the shards: encoding is quick and never waits, so one encoder's batch-sized
    /// buffers serve every concurrent request.
    encoder: std::sync::Mutex<Encoder>,
    /// The queue outlives the process: its first window may repeat delivered samples.
    durable_queue: bool,
    /// The body compression this endpoint settled on, shared by the shards and the live lane.
    negotiation: std::sync::Mutex<Negotiation>,
    /// Made at the first zstd body, then reused (its context is large).
    zstd: std::sync::Mutex<Option<ZstdCompressor>>,
    /// The endpoint's `compression_level`; unset: by body size.
    zstd_level: Option<i32>,
    /// Longest the compression handshake may delay the first window.
    handshake_deadline: Duration,
    /// The 2.0 encoder, used while `protocol` says 2.0.
    encoder_v2: std::sync::Mutex<EncoderV2>,
    /// Metadata and start times for 2.0 series.
    meta: Arc<dyn SeriesMeta>,
    /// The message configured.
    configured: Protocol,
    /// The message sent now: 2.0 until the receiver shows it does not take it, then 1.0
    /// until the agent restarts. Shared by the shards and the live lane.
    protocol: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the name: the URL may carry user info and the headers carry credentials.
        f.debug_struct("Sender")
            .field("endpoint", &self.events.endpoint())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Builds a sender: checks the retry and batch settings, and builds the HTTP client (with
    /// its TLS settings) and the request headers.
    pub fn new(
        settings: RemoteWriteSettings,
        external_labels: Labels,
        queue: Arc<SharedQueue>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, SenderError> {
        let endpoint = settings.name.clone();
        let fail = |message: String| SenderError::Client {
            endpoint: endpoint.clone(),
            message,
        };
        let policy = RetryPolicy::new(settings.min_backoff, settings.max_backoff)
            .map_err(|e| fail(e.to_string()))?;
        if settings.max_samples_per_send == 0 {
            return Err(fail("max_samples_per_send must be > 0".into()));
        }
        let service = WriteService::new(&settings).map_err(fail)?;
        // A 401 during a credential rotation keeps the batch queued for a while.
        let policy = if service.credentials_rotate() {
            policy.with_unauthorized_grace(UNAUTHORIZED_GRACE)
        } else {
            policy
        };

        let sender = Sender {
            events: SenderEvents::new(endpoint, telemetry),
            service,
            external_labels,
            max_samples_per_send: settings.max_samples_per_send,
            batch_send_deadline: settings.batch_send_deadline,
            min_shards: settings.min_shards.max(1),
            max_shards: settings.max_shards.max(settings.min_shards).max(1),
            policy,
            queue,
            timer: Arc::new(TokioTimer),
            catchup: settings
                .max_catchup_bytes_per_second
                .map(|rate| std::sync::Mutex::new(TokenBucket::new(rate))),
            epoch: Instant::now(),
            encoder: std::sync::Mutex::new(Encoder::new()),
            durable_queue: false,
            negotiation: std::sync::Mutex::new(Negotiation::new(settings.compression)),
            zstd: std::sync::Mutex::new(None),
            zstd_level: settings.compression_level,
            handshake_deadline: compression::HANDSHAKE_DEADLINE.min(settings.timeout),
            encoder_v2: std::sync::Mutex::new(EncoderV2::new()),
            meta: Arc::new(NoMeta),
            configured: settings.protocol,
            protocol: std::sync::atomic::AtomicBool::new(settings.protocol == Protocol::V2),
        };
        sender.events.protocol_in_use(settings.protocol);
        sender.events.touch_metrics(sender.queue.pending());
        sender.events.compression_in_use(sender.compression());
        if sender.negotiation().needs_handshake() {
            sender.events.touch_handshakes();
        }
        Ok(sender)
    }

    /// Marks the queue as durable (on disk): its first window after start may repeat samples
    /// a crashed predecessor delivered, and a refusal of it is handled series by series.
    pub fn with_durable_queue(mut self) -> Self {
        self.durable_queue = true;
        self
    }

    /// Gives the 2.0 encoder the metadata and start times of the series it sends.
    pub fn with_series_meta(mut self, meta: Arc<dyn SeriesMeta>) -> Self {
        self.meta = meta;
        self
    }

    /// The message sent now.
    fn protocol(&self) -> Protocol {
        if self.protocol.load(std::sync::atomic::Ordering::Relaxed) {
            Protocol::V2
        } else {
            Protocol::V1
        }
    }

    /// The receiver does not take 2.0: sends 1.0 from now on (said once, by whichever
    /// request found out first).
    fn fall_back(&self, answer: &Answer) {
        let was = self
            .protocol
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        if was {
            self.events.fell_back(answer);
        }
    }

    /// What a 2.0 answer means beyond its status (see [`super::protocol`]), with its events
    /// recorded; `None` to judge the answer as for 1.0.
    fn judge_v2(
        &self,
        protocol: Protocol,
        stats: &EncodeStats,
        bytes: usize,
        answer: &Answer,
    ) -> Option<V2Step> {
        if protocol != Protocol::V2 {
            return None;
        }
        // Receivers count float samples and histogram samples apart.
        let histograms = stats.histograms.min(stats.samples);
        let sent = protocol::Sent {
            samples: (stats.samples - histograms) as u64,
            histograms: histograms as u64,
            ..Default::default()
        };
        match judge(answer.outcome, &answer.written, sent) {
            Verdict::Fallback => {
                self.fall_back(answer);
                Some(V2Step::SendAsV1)
            }
            Verdict::Written { bad } => {
                if let Some(bad) = bad {
                    self.events.untrusted_count(&bad, answer);
                }
                if answer.body_bytes > 0 {
                    self.events.success_with_body(answer);
                }
                None
            }
            Verdict::Partial { unwritten, bad } => {
                if let Some(bad) = bad {
                    self.events.untrusted_count(&bad, answer);
                }
                self.events.partial_write(stats, bytes, unwritten, answer);
                Some(V2Step::Kept)
            }
            Verdict::AsV1 => None,
        }
    }

    /// Runs until `drain` is cancelled and the queue is empty, or `abort` is cancelled.
    ///
    /// On `abort` the batch in flight stays in the queue, unacknowledged.
    pub async fn run(self, drain: CancellationToken, abort: CancellationToken) {
        let drain = DrainHandle {
            flush: drain.clone(),
            stop: drain,
            unflushed: None,
            control: SenderControl::default(),
        };
        self.run_until(drain, abort).await;
    }

    /// Runs until `drain` is stopped and the queue is empty, or `abort` is cancelled; see
    /// [`Drain`] for the flush step before the stop.
    ///
    /// On `abort` the batch in flight stays in the queue, unacknowledged.
    pub async fn run_until(self, mut drain: DrainHandle, abort: CancellationToken) {
        let mut state = RunState::new(self.max_shards, self.durable_queue);
        let mut live = ShardState::new();
        tokio::select! {
            biased;
            _ = abort.cancelled() => self.events.aborted(),
            _ = async {
                self.negotiate(&drain).await;
                self.pump(&mut drain, &mut state).await
            } => self.events.drained(),
            // Never returns: it ends with the pump (draining sends everything in order).
            _ = self.live_pump(&mut live) => {}
        }
        self.events.stopped();
        self.events.set_pending(self.queue.pending());
    }

    /// Asks the receiver whether it takes zstd, when the endpoint's `compression` is `auto`.
    /// Bounded by the handshake deadline, and given up when the sender is stopped or hands
    /// its queue over: the endpoint then stays on snappy.
    async fn negotiate(&self, drain: &DrainHandle) {
        if !self.negotiation().needs_handshake() {
            return;
        }
        let result = tokio::select! {
            result = self.service.handshake(self.handshake_deadline) => result,
            _ = drain.stop_begun() => return,
            _ = drain.control.handover.cancelled() => return,
        };
        let now = self.negotiation().handshake(&result);
        match result {
            Ok(()) if now == Compression::Zstd => self.events.handshake_zstd(),
            // A zstd body was refused meanwhile: that refusal was logged.
            Ok(()) => {}
            Err(failure) => self.events.handshake_failed(&failure),
        }
    }

    /// The endpoint's compression state; a poisoned lock still holds a whole value.
    fn negotiation(&self) -> std::sync::MutexGuard<'_, Negotiation> {
        self.negotiation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The compression of the next request.
    fn compression(&self) -> Compression {
        self.negotiation().current()
    }

    /// A zstd request was refused for its encoding: snappy from now on.
    fn zstd_refused(&self, answer: &Answer) {
        let first = self.negotiation().zstd_refused() == Fallback::Switched;
        self.events.zstd_refused(answer, first);
    }

    /// Sends windows until draining finds the queue empty. Dropping this future at any await
    /// leaves the queue consistent: a window is acknowledged only after every answer arrived.
    async fn pump(&self, drain: &mut DrainHandle, st: &mut RunState) {
        let mut queue_failures = 0u32;
        loop {
            if !self.wait_for_batch(drain, st).await {
                return;
            }
            let peek_at = Instant::now();
            let window = match self.read_window() {
                Ok(Some(window)) => window,
                Ok(None) => continue,
                Err(error) => {
                    self.events.queue_read_failed(&error);
                    let delay = self
                        .policy
                        .backoff()
                        .delay(queue_failures, st.jitter.next());
                    queue_failures = queue_failures.saturating_add(1);
                    self.timer.sleep(delay).await;
                    continue;
                }
            };
            queue_failures = 0;
            let Window {
                mut batch,
                pending: pending_at_peek,
                shards,
            } = window;
            let read = batch.len();
            // At least a full request is left behind this window: the receiver is behind, and
            // the catch-up byte budget applies. A steady flow leaves less (the part of a
            // request that waits for the next batch), and is never slowed.
            let catching_up =
                pending_at_peek - read.min(pending_at_peek) >= self.max_samples_per_send;
            if let Some(live) = &self.queue.live {
                live.filter_delivered(&mut batch);
            }
            // The first window after start begins at the last recorded position: whatever a
            // crashed predecessor had in flight is in it.
            let flags = SendFlags {
                catching_up,
                recovering: std::mem::take(&mut st.first_window),
            };
            self.deliver_window(&batch, shards, flags, st).await;
            self.ack(&batch);
            st.window_sent(peek_at, read, pending_at_peek);
        }
    }

    /// Waits until a batch should go out: true to send, false when stopping found nothing left
    /// or the queue is handed over (see [`SenderControl::hand_over`]).
    async fn wait_for_batch(&self, drain: &mut DrainHandle, st: &mut RunState) -> bool {
        loop {
            if drain.control.handover.is_cancelled() {
                return false;
            }
            let pending = self.queue.pending();
            self.events.set_pending(pending);
            if pending == 0 {
                st.oldest = None;
                if drain.stopping() {
                    return false;
                }
                let flushing = drain.flushing();
                if flushing {
                    // Everything queued before the flush began is answered.
                    drain.unflushed = None;
                }
                let drain = &*drain;
                tokio::select! {
                    _ = self.queue.appended.notified() => {}
                    // Flushing, only the stop is still to come; otherwise the flush is.
                    _ = async {
                        if flushing {
                            drain.stop_begun().await
                        } else {
                            drain.flush_begun().await
                        }
                    } => {}
                    _ = drain.control.handover.cancelled() => {}
                }
                continue;
            }
            if pending >= self.max_samples_per_send || drain.flushing() {
                return true;
            }
            let since = *st.oldest.get_or_insert_with(Instant::now);
            let remaining = self.batch_send_deadline.saturating_sub(since.elapsed());
            if remaining.is_zero() {
                return true;
            }
            tokio::select! {
                _ = self.queue.appended.notified() => {}
                _ = self.timer.sleep(remaining) => return true,
                _ = drain.flush_begun() => {}
                _ = drain.control.handover.cancelled() => {}
            }
        }
    }

    /// Peeks the next window: the oldest samples, as many as the shards chosen for the
    /// backlog (see [`shard_count`]) send in one request each. `Ok(None)` when the queue
    /// turned out to be empty.
    fn read_window(&self) -> Result<Option<Window>, String> {
        let peeked = self.queue.with(|q| {
            let pending = q.pending();
            let shards = shard_count(
                pending,
                self.max_samples_per_send,
                self.min_shards,
                self.max_shards,
            );
            q.peek(shards * self.max_samples_per_send)
                .map(|b| (b, pending, shards))
        });
        match peeked {
            Ok((Some(batch), pending, shards)) => Ok(Some(Window {
                batch,
                pending,
                shards,
            })),
            Ok((None, 0, _)) => Ok(None),
            // Samples pending yet none handed out: retrying at once would spin.
            Ok((None, n, _)) => Err(format!("queue reports {n} pending samples but yields none")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends one window: its samples split by series into `shards` lists sent concurrently,
    /// each list as consecutive requests of at most `max_samples_per_send`. Returns when every
    /// request was answered for good.
    async fn deliver_window(
        &self,
        batch: &Batch,
        shards: usize,
        flags: SendFlags,
        st: &mut RunState,
    ) {
        if batch.is_empty() {
            return;
        }
        let parts = partition(batch.iter(), shards);
        let jobs = parts
            .iter()
            .zip(st.shards.iter_mut())
            .filter(|(part, _)| !part.is_empty())
            .map(|(part, shard)| async move {
                for chunk in part.chunks(self.max_samples_per_send) {
                    self.deliver(chunk, shard, flags).await;
                }
            });
        futures_util::future::join_all(jobs).await;
    }

    /// Encodes one request and sends it until it is accepted or refused for good; a request
    /// of several series refused for a sample in it is sent again in parts
    /// ([`Sender::deliver_split`]).
    ///
    /// `flags.recovering` marks the first window after start, which may repeat samples a
    /// crashed predecessor had delivered without recording it: see [`Sender::deliver_suffixes`].
    async fn deliver<S: Borrow<Sample> + Sync>(
        &self,
        samples: &[S],
        st: &mut ShardState,
        flags: SendFlags,
    ) {
        match self.send(samples, st, flags.catching_up, false).await {
            Sent::Accepted | Sent::Nothing => {}
            Sent::Refused {
                stats,
                reason,
                answer,
            } => {
                let DropReason::Rejected { status } = reason;
                if flags.recovering && status == 400 && samples.len() > 1 {
                    self.deliver_suffixes(samples, st, flags.catching_up).await;
                } else if splits(&answer, stats.series) {
                    self.events.request_split(&stats, &answer);
                    let refusal = (reason, answer);
                    self.deliver_split(samples, st, flags.catching_up, refusal)
                        .await;
                } else {
                    self.events.record_rejection(&stats, reason, &answer);
                }
            }
        }
    }

    /// Encodes `samples` and sends them until the receiver answers for good; records
    /// successes and retries, and leaves refusals to the caller. The acceptance of a `part`
    /// of a refused request does not end a burst of rejections: the rest of it may be refused.
    async fn send<S: Borrow<Sample> + Sync>(
        &self,
        samples: &[S],
        st: &mut ShardState,
        catching_up: bool,
        part: bool,
    ) -> Sent {
        // Encoded again only when the endpoint falls back from 2.0 to 1.0.
        'encode: loop {
            let protocol = self.protocol();
            // The same bytes go out on every attempt: timestamps never change on retry.
            let Some((mut stats, mut body, mut compression)) =
                self.encode(samples, protocol, self.compression())
            else {
                return Sent::Nothing;
            };
            let mut attempt = 0u32;
            loop {
                if catching_up {
                    self.pace(body.len()).await;
                }
                let answer = self
                    .service
                    .attempt(body.clone(), protocol, compression)
                    .await;
                if let Outcome::Status(status) = answer.outcome {
                    if compression::refuses(compression, status) {
                        // The receiver cannot read zstd: the same samples again, as snappy.
                        // Not a refusal of the samples, so neither dropped nor split.
                        self.zstd_refused(&answer);
                        let Some(snappy) = self.encode_body(samples, protocol, Compression::Snappy)
                        else {
                            return Sent::Nothing;
                        };
                        (stats, body, compression) = snappy;
                        continue;
                    }
                }
                match self.judge_v2(protocol, &stats, body.len(), &answer) {
                    // A receiver that does not take 2.0 stored nothing of it: the same samples
                    // go again as 1.0, nothing lost, nothing twice.
                    Some(V2Step::SendAsV1) => continue 'encode,
                    Some(V2Step::Kept) => {
                        if let Some(live) = &self.queue.live {
                            live.set_receiver_up(true);
                        }
                        return Sent::Accepted;
                    }
                    None => {}
                }
                let decision = self.policy.decide(
                    answer.outcome,
                    answer.retry_after.as_deref(),
                    attempt,
                    SystemTime::now(),
                    st.jitter.next(),
                );
                if let Some(live) = &self.queue.live {
                    live.set_receiver_up(!matches!(decision, Decision::Retry { .. }));
                }
                match decision {
                    Decision::Done if part => {
                        self.events.part_delivered(&stats, body.len(), attempt);
                        return Sent::Accepted;
                    }
                    Decision::Done => {
                        self.events.batch_delivered(&stats, body.len(), attempt);
                        return Sent::Accepted;
                    }
                    Decision::Drop { reason } => {
                        if self.configured == Protocol::V2 && answer.outcome == Outcome::Status(415)
                        {
                            self.events.both_messages_refused(&answer);
                        }
                        return Sent::Refused {
                            stats,
                            reason,
                            answer,
                        };
                    }
                    Decision::Retry { after } => {
                        self.events.record_retry(&stats, &answer, attempt, after);
                        self.timer.sleep(after).await;
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        }
    }

    /// Encodes samples into a request body of `protocol`, compressed with `compression` (2.0
    /// bodies and a failed zstd compression: snappy), counting what cannot be sent; `None`
    /// when nothing is left to send.
    fn encode<S: Borrow<Sample>>(
        &self,
        samples: &[S],
        protocol: Protocol,
        compression: Compression,
    ) -> Option<(EncodeStats, Bytes, Compression)> {
        let encoded = self.encode_body(samples, protocol, compression)?;
        if encoded.0.skipped_no_name > 0 {
            self.events.nameless_dropped(encoded.0.skipped_no_name);
        }
        Some(encoded)
    }

    /// [`Sender::encode`] without counting the samples left out for want of a name: for
    /// samples encoded before, whose count is already in.
    fn encode_body<S: Borrow<Sample>>(
        &self,
        samples: &[S],
        protocol: Protocol,
        compression: Compression,
    ) -> Option<(EncodeStats, Bytes, Compression)> {
        // The compressor writes the body in place; it is handed over without another copy.
        let mut body = Vec::new();
        let mut used = compression;
        // Held for the encoding only, not for the logging and counting below. Poisoning
        // cannot leave an encoder half-valid: each resets its buffers on every call.
        let encoded = match (protocol, compression) {
            // The 2.0 specification allows snappy only.
            (Protocol::V2, _) => {
                used = Compression::Snappy;
                self.encoder_v2
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .encode(samples, &self.external_labels, &*self.meta, &mut body)
            }
            (Protocol::V1, Compression::Snappy) => self
                .encoder
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .encode(samples, &self.external_labels, &mut body),
            (Protocol::V1, Compression::Zstd) => {
                let mut encoder = self
                    .encoder
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match self.encode_zstd(&mut encoder, samples, &mut body) {
                    Ok(stats) => Ok(stats),
                    Err(e) => {
                        self.events.zstd_failed(&e);
                        used = Compression::Snappy;
                        encoder.encode(samples, &self.external_labels, &mut body)
                    }
                }
            }
        };
        let stats = match encoded {
            Ok(stats) => stats,
            Err(e) => {
                self.events.encode_failed(samples.len(), &e);
                return None;
            }
        };
        (stats.samples > 0).then(|| (stats, Bytes::from(body), used))
    }

    /// Encodes `samples` as a 1.0 request compressed with the sender's zstd compressor
    /// (made the first time): a large one piece by piece as the protobuf is written, a
    /// small one whole.
    fn encode_zstd<S: Borrow<Sample>>(
        &self,
        encoder: &mut Encoder,
        samples: &[S],
        out: &mut Vec<u8>,
    ) -> std::io::Result<EncodeStats> {
        let mut zstd = self
            .zstd
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let compressor = match &mut *zstd {
            Some(c) => c,
            empty => empty.insert(ZstdCompressor::new(self.zstd_level)?),
        };
        let expected = encoder.expected_len(samples.len());
        if !compression::in_pieces(expected) {
            let (mut stats, proto) = encoder.encode_uncompressed(samples, &self.external_labels);
            let compressed = compressor.compress(proto, out);
            encoder.release();
            compressed?;
            stats.compressed_bytes = out.len();
            return Ok(stats);
        }
        compressor.start(expected, out)?;
        let encoded = encoder.encode_in_pieces(samples, &self.external_labels, &mut |piece| {
            compressor.write(piece, out)
        });
        encoder.release();
        let mut stats = encoded?;
        compressor.finish(out)?;
        stats.compressed_bytes = out.len();
        Ok(stats)
    }

    /// Waits until the catch-up byte budget allows `bytes` more.
    async fn pace(&self, bytes: usize) {
        let Some(bucket) = &self.catchup else {
            return;
        };
        let wait = bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .acquire(self.epoch.elapsed(), bytes as u64);
        if !wait.is_zero() {
            self.timer.sleep(wait).await;
        }
    }

    /// Delivers a request the receiver refused whole for some of its samples, in parts by
    /// series as [`SplitPlan`] says, one after another (so each series stays in order). Only
    /// the samples of one-series parts refused, or of parts left unsent once the plan's budget
    /// is spent, are dropped; `refusal` is what the whole request got, reported with the
    /// latter until a part is refused.
    async fn deliver_split<S: Borrow<Sample> + Sync>(
        &self,
        samples: &[S],
        st: &mut ShardState,
        catching_up: bool,
        refusal: (DropReason, Answer),
    ) {
        let mut series = by_series(samples);
        // Counted already, when the whole request was encoded.
        series.retain(|one| one.first().is_some_and(|s| s.labels.has_metric_name()));
        let mut plan = SplitPlan::new(series.len());
        let mut last = refusal;
        let (mut dropped, mut unsent) = (0, 0);
        while let Some(step) = plan.next_step() {
            match step {
                Step::Send(part) => {
                    let part_samples: Vec<&Sample> =
                        series[part.clone()].iter().flatten().copied().collect();
                    let sent = self.send(&part_samples, st, catching_up, true).await;
                    if let Sent::Refused {
                        stats,
                        reason,
                        answer,
                    } = sent
                    {
                        if plan.refused(part.clone(), splits(&answer, part.len())) {
                            dropped += stats.samples;
                            self.events.record_rejection(&stats, reason, &answer);
                        } else {
                            self.events.request_split(&stats, &answer);
                        }
                        last = (reason, answer);
                    }
                }
                Step::Drop(part) => unsent += series[part].iter().map(Vec::len).sum::<usize>(),
            }
        }
        if unsent > 0 {
            self.events.split_budget_spent(unsent, last.0, &last.1);
        }
        self.events
            .split_finished(plan.requests(), dropped + unsent);
    }

    /// Delivers a refused request of the first window after a restart, series by series.
    ///
    /// A receiver without an out-of-order window refuses a whole request that holds one
    /// sample older than its series' newest, and stores nothing of it. After a crash, the
    /// window that was in flight is sent again and may mix samples stored before the crash
    /// (always a prefix of each series, since each series is sent in order) with samples that
    /// never arrived; refusing the lot would lose the latter. So each series is sent again
    /// from its oldest sample, dropping one more of the oldest after each refusal: a refusal
    /// stores nothing, and the first accepted suffix stores every sample the receiver lacked.
    /// Costs at most one request per repeated sample, and only after a restart.
    async fn deliver_suffixes<S: Borrow<Sample> + Sync>(
        &self,
        samples: &[S],
        st: &mut ShardState,
        catching_up: bool,
    ) {
        for one in &by_series(samples) {
            let mut skipped = 0;
            let mut last_refusal = None;
            while skipped < one.len() {
                match self.send(&one[skipped..], st, catching_up, false).await {
                    Sent::Accepted | Sent::Nothing => break,
                    Sent::Refused {
                        stats,
                        reason,
                        answer,
                    } => {
                        last_refusal = Some((stats, reason, answer));
                        skipped += 1;
                    }
                }
            }
            if skipped == one.len() {
                // Refused to the last sample: a real rejection, counted once per sample.
                if let Some((mut stats, reason, answer)) = last_refusal {
                    stats.samples = one.len();
                    self.events.record_rejection(&stats, reason, &answer);
                }
            } else if skipped > 0 {
                self.events.duplicates_skipped(skipped);
            }
        }
    }

    /// Releases a window whose every request was answered for good.
    fn ack(&self, batch: &Batch) {
        if let Err(e) = self.queue.with(|q| q.ack(batch.last_seq)) {
            self.events.ack_failed(&e);
        }
    }

    /// Sends what the live lane is offered, one batch at a time, never retrying: a batch
    /// that fails stays in the queue for the in-order reader. Never returns.
    async fn live_pump(&self, st: &mut ShardState) {
        let Some(live) = &self.queue.live else {
            return std::future::pending().await;
        };
        loop {
            match live.take() {
                Some(batch) => self.deliver_live(batch, st).await,
                None => live.offered.notified().await,
            }
        }
    }

    /// Posts one live batch once. Accepted or refused for good, its samples are marked
    /// delivered (the in-order reader skips them); otherwise they stay queued.
    async fn deliver_live(&self, batch: LiveBatch, st: &mut ShardState) {
        let Some(live) = &self.queue.live else {
            return;
        };
        let protocol = self.protocol();
        let Some((stats, body, compression)) =
            self.encode(&batch.samples, protocol, self.compression())
        else {
            live.mark_delivered(batch.seqs());
            return;
        };
        let answer = self
            .service
            .attempt(body.clone(), protocol, compression)
            .await;
        if let Outcome::Status(status) = answer.outcome {
            if compression::refuses(compression, status) {
                // Left queued: the in-order reader sends these samples, as snappy.
                self.zstd_refused(&answer);
                return;
            }
        }
        match self.judge_v2(protocol, &stats, body.len(), &answer) {
            // Left for the in-order reader, which sends it as 1.0.
            Some(V2Step::SendAsV1) => return,
            Some(V2Step::Kept) => {
                live.mark_delivered(batch.seqs());
                live.set_receiver_up(true);
                return;
            }
            None => {}
        }
        let decision = self.policy.decide(
            answer.outcome,
            answer.retry_after.as_deref(),
            0,
            SystemTime::now(),
            st.jitter.next(),
        );
        match decision {
            Decision::Done => {
                live.mark_delivered(batch.seqs());
                live.set_receiver_up(true);
                self.events.record_success(&stats, body.len());
            }
            Decision::Drop { reason } => {
                live.mark_delivered(batch.seqs());
                self.events.record_rejection(&stats, reason, &answer);
            }
            Decision::Retry { .. } => {
                // No retry here: the in-order reader sends these samples from the queue.
                live.set_receiver_up(false);
                self.events.live_send_failed(&answer);
            }
        }
    }

    /// Replaces the timer (tests record the waits instead of sleeping).
    #[cfg(test)]
    fn with_timer(mut self, timer: Arc<dyn Timer>) -> Self {
        self.timer = timer;
        self
    }
}

/// Groups samples by series: the series in the order they first appear, each with its samples
/// in their order.
fn by_series<S: Borrow<Sample>>(samples: &[S]) -> Vec<Vec<&Sample>> {
    let mut series: Vec<Vec<&Sample>> = Vec::new();
    let mut index: std::collections::HashMap<&Labels, usize> = Default::default();
    for s in samples {
        let s = s.borrow();
        let i = *index.entry(&s.labels).or_insert_with(|| {
            series.push(Vec::new());
            series.len() - 1
        });
        series[i].push(s);
    }
    series
}

/// The agent's side of winding senders down in two steps, so that something can be queued in
/// between (its last self-metrics snapshot, which must say what the flush achieved):
/// [`Drain::flush`] makes every sender send what is queued at once, without waiting for full
/// batches; [`Drain::flushed`] waits until each found its queue empty (or ended);
/// [`Drain::stop`] makes each send what is left and end once its queue is empty.
#[derive(Debug, Clone)]
pub struct Drain {
    stop: CancellationToken,
    /// A child of `stop`: stopping implies flushing.
    flush: CancellationToken,
    /// Tracks one token per sender not yet flushed.
    unflushed: TaskTracker,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// A drain not yet begun.
    pub fn new() -> Self {
        let stop = CancellationToken::new();
        Drain {
            flush: stop.child_token(),
            stop,
            unflushed: TaskTracker::new(),
        }
    }

    /// The handle one sender runs with ([`Sender::run_until`]); take it before the flush.
    pub fn handle(&self) -> DrainHandle {
        DrainHandle {
            flush: self.flush.clone(),
            stop: self.stop.clone(),
            unflushed: Some(self.unflushed.token()),
            control: SenderControl::default(),
        }
    }

    /// Cancelled when the flush begins: for tasks that have no second step (they take it as
    /// their only drain signal).
    pub fn flush_token(&self) -> CancellationToken {
        self.flush.clone()
    }

    /// Makes every sender send what is queued now, without waiting for full batches.
    pub fn flush(&self) {
        self.flush.cancel();
    }

    /// Completes when every sender found its queue empty since [`Drain::flush`], or ended.
    pub async fn flushed(&self) {
        self.unflushed.close();
        self.unflushed.wait().await;
    }

    /// Makes every sender send what is left and end once its queue is empty (flushing first,
    /// if that was not asked yet).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// One sender's side of a [`Drain`].
#[derive(Debug)]
pub struct DrainHandle {
    flush: CancellationToken,
    stop: CancellationToken,
    /// Dropped once the queue is found empty while flushing (or when the sender ends).
    unflushed: Option<TaskTrackerToken>,
    /// What a reload asks of this sender alone.
    control: SenderControl,
}

impl DrainHandle {
    /// What a reload can ask of the sender running with this handle.
    pub fn control(&self) -> SenderControl {
        self.control.clone()
    }

    /// Whether everything queued is to be sent without waiting for full batches.
    fn flushing(&self) -> bool {
        self.flush.is_cancelled() || self.control.alone.is_cancelled()
    }

    /// Whether the sender ends once its queue is empty.
    fn stopping(&self) -> bool {
        self.stop.is_cancelled() || self.control.alone.is_cancelled()
    }

    /// Completes when the flush begins, for every sender or this one alone.
    async fn flush_begun(&self) {
        tokio::select! {
            _ = self.flush.cancelled() => {}
            _ = self.control.alone.cancelled() => {}
        }
    }

    /// Completes when the stop begins, for every sender or this one alone.
    async fn stop_begun(&self) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = self.control.alone.cancelled() => {}
        }
    }
}

/// What a reload asks of one running sender, apart from the others: to hand its queue over
/// to a sender built from new settings, or to drain it and end (its endpoint was removed).
#[derive(Debug, Clone, Default)]
pub struct SenderControl {
    /// Flush and stop this sender alone.
    alone: CancellationToken,
    /// Take no new window; end once the one in flight is answered.
    handover: CancellationToken,
}

impl SenderControl {
    /// The sender takes no new window from its queue and ends once the window in flight is
    /// answered (and acknowledged): the rest of the queue is left, untouched, to the sender
    /// that reads it next.
    pub fn hand_over(&self) {
        self.handover.cancel();
    }

    /// The sender sends everything queued for it without waiting for full batches and ends
    /// once its queue is empty, as at shutdown, while the others go on.
    pub fn drain_alone(&self) {
        self.alone.cancel();
    }
}

/// A window read from the queue, with what was known when it was read.
struct Window {
    /// The oldest samples.
    batch: Batch,
    /// Samples pending in the queue, this window's included.
    pending: usize,
    /// Parallel request streams to send it with.
    shards: usize,
}

/// How a request is sent.
#[derive(Debug, Clone, Copy)]
struct SendFlags {
    /// The endpoint is behind: the catch-up byte budget applies.
    catching_up: bool,
    /// First window after start: may repeat samples delivered before a crash.
    recovering: bool,
}

/// What a 2.0 answer asks of the sender beyond its status.
enum V2Step {
    /// The receiver does not take 2.0: send the same samples as 1.0.
    SendAsV1,
    /// Partly written: what was written is kept, the rest counted as refused; the request
    /// is done (sending it again, whole or split, would write samples twice).
    Kept,
}

/// How a request ended.
enum Sent {
    /// Accepted (2xx).
    Accepted,
    /// Nothing to send (every sample was unencodable, and counted).
    Nothing,
    /// Refused for good.
    Refused {
        stats: EncodeStats,
        reason: DropReason,
        answer: Answer,
    },
}

/// State of one `run`, kept across windows.
struct RunState {
    /// One per possible shard.
    shards: Vec<ShardState>,
    /// For the backoff after a queue read error.
    jitter: Jitter,
    /// When the oldest pending sample started waiting (as far as the sender can tell).
    oldest: Option<Instant>,
    /// When the last window was read, and how many samples it left queued behind it.
    last_window: Option<(Instant, usize)>,
    /// No window was sent yet from a durable queue.
    first_window: bool,
}

impl RunState {
    fn new(max_shards: usize, durable_queue: bool) -> Self {
        RunState {
            shards: (0..max_shards.max(1)).map(|_| ShardState::new()).collect(),
            jitter: Jitter::new(),
            oldest: None,
            last_window: None,
            first_window: durable_queue,
        }
    }

    /// Notes that a window of `read` samples, read at `at` with `pending` queued, was sent,
    /// and so when the samples still waiting began to: a window takes the oldest, so whatever
    /// it left behind came after the previous window was read, if this window took all that
    /// one left behind. The earliest start a sample could have is kept, so that none waits
    /// past the batch deadline.
    fn window_sent(&mut self, at: Instant, read: usize, pending: usize) {
        let left = pending.saturating_sub(read);
        self.oldest = match self.last_window {
            // Everything pending now arrived after this window was read.
            _ if left == 0 => Some(at),
            Some((previous, left_then)) if read >= left_then => Some(previous),
            _ => Some(self.oldest.unwrap_or(at).min(at)),
        };
        self.last_window = Some((at, left));
    }
}

/// What one concurrent request stream keeps from request to request.
struct ShardState {
    jitter: Jitter,
}

impl ShardState {
    fn new() -> Self {
        ShardState {
            jitter: Jitter::new(),
        }
    }
}

/// Waits for a delay; the production timer is tokio's, tests record the delays instead.
trait Timer: Send + Sync {
    /// Completes after `d`.
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The real timer.
struct TokioTimer;

impl Timer for TokioTimer {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}

#[cfg(test)]
mod tests;
