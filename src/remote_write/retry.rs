//! What a write response means and how long to wait before trying again: pure functions of
//! the outcome, the `Retry-After` header, the attempt number, the current time and a jitter
//! draw, so that every rule is tested without a network or a clock.
//!
//! The rules follow the remote-write 1.0 specification and Prometheus: 2xx is delivered;
//! 5xx, 429 (rate limited), 408 (request timeout) and transport errors are retried with the
//! same body, and so is 407: a proxy between here and the receiver refused its credentials,
//! which says nothing about the batch and is fixed on this side; every other status is a permanent refusal of the batch, which is dropped —
//! retrying a request the receiver will always refuse would block the queue forever.
//!
//! The exponential schedule (`min · 2ⁿ`, capped at `max`) is computed once per [`Backoff`]
//! with the `backoff` 0.4 crate. RustSec flags that crate unmaintained (RUSTSEC-2025-0012);
//! it is kept only for the schedule: its randomisation is switched off (its global random
//! generator then moves a step by at most a nanosecond of rounding) and it has no
//! elapsed-time limit (so its clock never cuts the schedule short). None of its timers or its
//! retry loop is used: the jitter is applied here from a draw the caller passes in (`Jitter`
//! below makes those draws), and the sender does its own waiting.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

/// Longest `Retry-After` honoured when `max_backoff` is shorter: a receiver asking for more
/// than five minutes is more likely misconfigured than overloaded, and waiting longer would
/// let the queue overflow silently.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(5 * 60);

/// Why retry parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    /// `min_backoff` is zero.
    #[error("min_backoff must be > 0")]
    ZeroMinBackoff,
    /// `min_backoff` exceeds `max_backoff`.
    #[error("min_backoff ({min:?}) must not exceed max_backoff ({max:?})")]
    MinAboveMax {
        /// The minimum given.
        min: Duration,
        /// The maximum given.
        max: Duration,
    },
}

/// How one write attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this HTTP status.
    Status(u16),
    /// No answer: connection refused or reset, TLS failure, timeout.
    Transport,
    /// No request sent: the credentials could not be obtained (a token endpoint down, a
    /// configuration error). Retried with backoff, so that the samples stay queued until the
    /// endpoint recovers or the configuration (a rotated file) is fixed.
    Credentials,
}

impl Outcome {
    /// Value of the `outcome` label of a failed request that is retried.
    pub fn retried_label(self) -> &'static str {
        match self {
            Outcome::Status(_) => "retryable",
            Outcome::Transport => "transport",
            Outcome::Credentials => "credentials",
        }
    }

    /// The HTTP status for log lines: 0 when no answer came (transport, credentials).
    pub fn status_or_zero(self) -> u16 {
        match self {
            Outcome::Status(s) => s,
            Outcome::Transport | Outcome::Credentials => 0,
        }
    }
}

/// Whether a request answered `outcome` is sent again at once with fresh credentials: only a
/// `401`, only when the credentials changed on refusal ([`crate::auth::Authorizer::refused`]
/// said so), and only once per request, so that a receiver refusing every credential costs one
/// extra request, never a loop. Anything else goes to [`RetryPolicy::decide`].
pub fn reauthorize(outcome: Outcome, credentials_changed: bool, reauthorized: bool) -> bool {
    outcome == Outcome::Status(401) && credentials_changed && !reauthorized
}

/// Why a batch is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The receiver refused it with a status that retrying cannot change.
    Rejected {
        /// The HTTP status.
        status: u16,
    },
}

impl DropReason {
    /// Value of the `reason` label on the dropped-samples counter.
    pub fn as_label(self) -> &'static str {
        match self {
            DropReason::Rejected { .. } => "rejected",
        }
    }
}

/// What to do with a batch after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Delivered: release it.
    Done,
    /// Send the same bytes again after waiting `after`.
    Retry {
        /// How long to wait first.
        after: Duration,
    },
    /// Give it up: release it without delivery.
    Drop {
        /// Why.
        reason: DropReason,
    },
}

/// Tells whether a status is worth retrying: 5xx, 429, 408, and a proxy's 407 (the
/// receiver never saw the batch).
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 407 | 408 | 429 | 500..=599)
}

/// Capped exponential backoff with jitter: attempt `n` waits about `min · 2ⁿ`, at most `max`.
///
/// The `backoff` crate computes the schedule, once, when the value is built; it is flagged
/// unmaintained (RUSTSEC-2025-0012), so it is used for nothing else and stays behind this type:
/// its randomisation is switched off (it draws from a global generator tests cannot control)
/// and the jitter is applied here from a draw the caller passes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Base delays by attempt, growing until the first one that reaches `max`.
    steps: Vec<Duration>,
}

/// Most schedule steps kept: doubling from a nanosecond passes any sane maximum well before.
const MAX_STEPS: usize = 96;

fn schedule(min: Duration, max: Duration) -> Vec<Duration> {
    use backoff::backoff::Backoff as _;
    let mut exp: backoff::ExponentialBackoff = backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(min)
        .with_multiplier(2.0)
        .with_randomization_factor(0.0)
        .with_max_interval(max)
        .with_max_elapsed_time(None)
        .build();
    let mut steps = Vec::new();
    while steps.len() < MAX_STEPS {
        let Some(step) = exp.next_backoff() else {
            break;
        };
        let step = step.clamp(min, max);
        steps.push(step);
        if step >= max {
            break;
        }
    }
    if steps.is_empty() {
        steps.push(min);
    }
    steps
}

impl Backoff {
    /// Builds a schedule from `min` to `max`, both > 0 and `min ≤ max`.
    pub fn new(min: Duration, max: Duration) -> Result<Self, RetryError> {
        if min.is_zero() {
            return Err(RetryError::ZeroMinBackoff);
        }
        if min > max {
            return Err(RetryError::MinAboveMax { min, max });
        }
        Ok(Backoff {
            min,
            max,
            steps: schedule(min, max),
        })
    }

    /// The shortest delay.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The longest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Delay before the retry that follows failed attempt `attempt` (0 for the first failure),
    /// before jitter: `min · 2^attempt`, capped at `max`.
    pub fn base(&self, attempt: u32) -> Duration {
        self.steps
            .get(attempt as usize)
            .or_else(|| self.steps.last())
            .copied()
            .unwrap_or(self.max)
    }

    /// The base delays before attempt `attempt`, summed: about how long a request has been
    /// retried when attempt `attempt` fails.
    pub fn waited(&self, attempt: u32) -> Duration {
        (0..attempt).fold(Duration::ZERO, |sum, a| sum.saturating_add(self.base(a)))
    }

    /// Delay after failed attempt `attempt`, with `jitter` (a uniform draw in `[0, 1)`)
    /// spreading it over the upper half of the base delay, never below `min`.
    ///
    /// Half-range ("equal") jitter keeps the schedule growing while still spreading senders
    /// that failed together, so they do not hit a recovering receiver in lock-step.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let base = self.base(attempt);
        let half = base / 2;
        (half + half.mul_f64(jitter)).max(self.min)
    }
}

/// How long a batch answered `401` stays queued, retried with backoff, when its credentials
/// can rotate: a receiver and a client rarely switch to a new credential at the same instant,
/// and dropping every batch written in between would lose data for a routine rotation.
pub const UNAUTHORIZED_GRACE: Duration = Duration::from_secs(60);

/// Decides what follows each write attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    backoff: Backoff,
    retry_after_cap: Duration,
    /// How long `401` answers are retried (credentials that rotate); zero: refused at once.
    unauthorized_grace: Duration,
}

impl RetryPolicy {
    /// Builds a policy retrying between `min_backoff` and `max_backoff`; `Retry-After` is
    /// honoured up to the larger of `max_backoff` and [`RETRY_AFTER_CAP`].
    pub fn new(min_backoff: Duration, max_backoff: Duration) -> Result<Self, RetryError> {
        let backoff = Backoff::new(min_backoff, max_backoff)?;
        Ok(RetryPolicy {
            backoff,
            retry_after_cap: max_backoff.max(RETRY_AFTER_CAP),
            unauthorized_grace: Duration::ZERO,
        })
    }

    /// Retries `401` answers with backoff while the backoff schedule's waits so far stay
    /// within `grace` (see [`UNAUTHORIZED_GRACE`]); for credentials that rotate.
    pub fn with_unauthorized_grace(mut self, grace: Duration) -> Self {
        self.unauthorized_grace = grace;
        self
    }

    /// The backoff schedule.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The longest `Retry-After` honoured.
    pub fn retry_after_cap(&self) -> Duration {
        self.retry_after_cap
    }

    /// Decides after failed-or-not attempt `attempt` (0 for the first) that ended in
    /// `outcome`, with the response's `Retry-After` header if any.
    ///
    /// A usable `Retry-After` replaces the backoff delay (the receiver knows its load best),
    /// kept within `[min_backoff, cap]`; an unparsable one is ignored.
    pub fn decide(
        &self,
        outcome: Outcome,
        retry_after: Option<&str>,
        attempt: u32,
        now: SystemTime,
        jitter: f64,
    ) -> Decision {
        match outcome {
            Outcome::Status(s) if (200..300).contains(&s) => Decision::Done,
            Outcome::Status(401) if self.backoff.waited(attempt) < self.unauthorized_grace => {
                Decision::Retry {
                    after: self.backoff.delay(attempt, jitter),
                }
            }
            Outcome::Status(s) if is_retryable_status(s) => {
                let after = retry_after
                    .and_then(|v| parse_retry_after(v, now))
                    .map(|d| d.clamp(self.backoff.min, self.retry_after_cap))
                    .unwrap_or_else(|| self.backoff.delay(attempt, jitter));
                Decision::Retry { after }
            }
            Outcome::Status(status) => Decision::Drop {
                reason: DropReason::Rejected { status },
            },
            Outcome::Transport | Outcome::Credentials => Decision::Retry {
                after: self.backoff.delay(attempt, jitter),
            },
        }
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date (a date in the past means
/// "now"). Returns `None` for anything else.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than fit a u64 is still "a very long time", not garbage.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Uniform draws in `[0, 1)` for [`Backoff::delay`] (xorshift64*): jitter needs spread, not
/// cryptographic quality. Each generator is seeded from a fresh `RandomState` (the process'
/// random hash keys), so senders, and the shards of one sender, draw different sequences.
pub(crate) struct Jitter(u64);

impl Jitter {
    /// A generator with its own seed.
    pub(crate) fn new() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        // xorshift never leaves the all-zero state: keep the seed odd.
        Jitter(h.finish() | 1)
    }

    /// The next draw in `[0, 1)`.
    pub(crate) fn next(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        // The top 53 bits of the scrambled state fill an f64 mantissa exactly.
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> RetryPolicy {
        RetryPolicy::new(30 * MS, Duration::from_secs(5)).unwrap()
    }

    fn now() -> SystemTime {
        // Sun, 06 Nov 1994 08:49:37 GMT, the RFC 9110 example date.
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn statuses_map_to_decisions() {
        let p = policy();
        let table: &[(u16, &str)] = &[
            (200, "done"),
            (204, "done"),
            (299, "done"),
            (407, "retry"),
            (408, "retry"),
            (429, "retry"),
            (500, "retry"),
            (502, "retry"),
            (503, "retry"),
            (599, "retry"),
            (301, "drop"),
            (307, "drop"),
            (400, "drop"),
            (401, "drop"),
            (403, "drop"),
            (404, "drop"),
            (409, "drop"),
            (413, "drop"),
            (422, "drop"),
            (600, "drop"),
        ];
        for &(status, want) in table {
            let got = match p.decide(Outcome::Status(status), None, 0, now(), 0.5) {
                Decision::Done => "done",
                Decision::Retry { .. } => "retry",
                Decision::Drop { reason } => {
                    assert_eq!(reason, DropReason::Rejected { status });
                    assert_eq!(reason.as_label(), "rejected");
                    "drop"
                }
            };
            assert_eq!(got, want, "status {status}");
        }
        assert!(matches!(
            p.decide(Outcome::Transport, None, 0, now(), 0.5),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn a_401_is_sent_again_once_and_only_with_new_credentials() {
        assert!(reauthorize(Outcome::Status(401), true, false));
        // Nothing new to send, or already tried with the new credentials: refused.
        assert!(!reauthorize(Outcome::Status(401), false, false));
        assert!(!reauthorize(Outcome::Status(401), true, true));
        for other in [
            Outcome::Status(403),
            Outcome::Status(500),
            Outcome::Transport,
            Outcome::Credentials,
        ] {
            assert!(!reauthorize(other, true, false), "{other:?}");
        }
        // A 401 that was not re-authorized is a refusal like any other 4xx.
        assert!(matches!(
            policy().decide(Outcome::Status(401), None, 0, now(), 0.5),
            Decision::Drop { .. }
        ));
    }

    #[test]
    fn with_rotating_credentials_a_401_is_retried_within_the_grace_only() {
        // 30 ms doubling: 0, 30, 90, 210 ms waited before attempts 0, 1, 2, 3.
        let p = policy().with_unauthorized_grace(Duration::from_millis(100));
        assert_eq!(p.backoff().waited(3), Duration::from_millis(210));
        for attempt in 0..=2 {
            assert!(
                matches!(
                    p.decide(Outcome::Status(401), None, attempt, now(), 0.5),
                    Decision::Retry { .. }
                ),
                "{attempt}"
            );
        }
        assert!(matches!(
            p.decide(Outcome::Status(401), None, 3, now(), 0.5),
            Decision::Drop { .. }
        ));
        // Other refusals are not affected.
        assert!(matches!(
            p.decide(Outcome::Status(403), None, 0, now(), 0.5),
            Decision::Drop { .. }
        ));
    }

    #[test]
    fn credentials_that_cannot_be_obtained_are_retried_with_backoff() {
        let p = policy();
        assert_eq!(
            p.decide(Outcome::Credentials, Some("1"), 3, now(), 0.0),
            p.decide(Outcome::Transport, None, 3, now(), 0.0)
        );
        assert_eq!(Outcome::Credentials.retried_label(), "credentials");
    }

    #[test]
    fn retry_after_seconds_and_dates_are_parsed() {
        assert_eq!(parse_retry_after("1", now()), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now()),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now()),
            Some(Duration::from_secs(30))
        );
        // The obsolete forms recipients must still accept (RFC 9110 §5.6.7).
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:50:07 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:50:07 1994", now()),
            Some(Duration::from_secs(30))
        );
        // A date already past means "retry now".
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        for garbage in [
            "",
            "soon",
            "-1",
            "1.5",
            "0x10",
            "Sun, 32 Nov 1994 08:50:07 GMT",
        ] {
            assert_eq!(parse_retry_after(garbage, now()), None, "{garbage:?}");
        }
    }

    #[test]
    fn retry_after_replaces_backoff_within_bounds() {
        let p = policy();
        let decide = |status, ra| p.decide(Outcome::Status(status), ra, 8, now(), 0.0);
        assert_eq!(
            decide(429, Some("1")),
            Decision::Retry {
                after: Duration::from_secs(1)
            }
        );
        assert_eq!(
            decide(503, Some("Sun, 06 Nov 1994 08:50:07 GMT")),
            Decision::Retry {
                after: Duration::from_secs(30)
            }
        );
        // Capped, and floored at min_backoff so "0" does not spin.
        assert_eq!(
            decide(429, Some("86400")),
            Decision::Retry {
                after: RETRY_AFTER_CAP
            }
        );
        assert_eq!(decide(429, Some("0")), Decision::Retry { after: 30 * MS });
        // Garbage falls back to the schedule: attempt 8 is capped at max_backoff, jitter 0
        // takes its lower half.
        assert_eq!(
            decide(429, Some("later")),
            Decision::Retry {
                after: Duration::from_millis(2500)
            }
        );
        // A refusal stays a refusal whatever Retry-After says.
        assert!(matches!(decide(400, Some("1")), Decision::Drop { .. }));
    }

    #[test]
    fn retry_after_cap_follows_a_longer_max_backoff() {
        let p = RetryPolicy::new(MS, Duration::from_secs(600)).unwrap();
        assert_eq!(p.retry_after_cap(), Duration::from_secs(600));
        assert_eq!(policy().retry_after_cap(), RETRY_AFTER_CAP);
    }

    #[test]
    fn schedule_doubles_then_caps() {
        let b = Backoff::new(30 * MS, Duration::from_secs(5)).unwrap();
        let bases: Vec<u64> = (0..10).map(|n| b.base(n).as_millis() as u64).collect();
        assert_eq!(bases, [30, 60, 120, 240, 480, 960, 1920, 3840, 5000, 5000]);
        // Huge attempt numbers neither overflow nor panic.
        assert_eq!(b.base(u32::MAX), Duration::from_secs(5));
        assert_eq!(b.delay(u32::MAX, 0.999), b.delay(1000, 0.999));
    }

    #[test]
    fn jitter_stays_within_min_and_max() {
        let b = Backoff::new(30 * MS, Duration::from_secs(5)).unwrap();
        for attempt in 0..40 {
            let base = b.base(attempt);
            for j in [
                0.0,
                0.25,
                0.5,
                0.999_999,
                1.0,
                -3.0,
                7.0,
                f64::NAN,
                f64::INFINITY,
            ] {
                let d = b.delay(attempt, j);
                assert!(d >= b.min() && d <= b.max(), "{attempt} {j}: {d:?}");
                assert!(d <= base && d >= (base / 2).max(b.min()), "{attempt} {j}");
            }
        }
        // The draw actually spreads the delay.
        assert!(b.delay(5, 0.0) < b.delay(5, 0.9));
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::from_secs(1)),
            Err(RetryError::ZeroMinBackoff)
        );
        assert_eq!(
            RetryPolicy::new(Duration::from_secs(2), Duration::from_secs(1)).map(|_| ()),
            Err(RetryError::MinAboveMax {
                min: Duration::from_secs(2),
                max: Duration::from_secs(1)
            })
        );
        assert!(Backoff::new(MS, MS).is_ok());
    }

    #[test]
    fn jitter_draws_are_uniform_in_unit_interval() {
        let mut j = Jitter::new();
        let draws: Vec<f64> = (0..10_000).map(|_| j.next()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let low = draws.iter().filter(|d| **d < 0.5).count();
        // Loose: a broken generator (constant, stuck at 0) fails, a fair one never does.
        assert!((4_000..6_000).contains(&low), "{low}");
    }
}
