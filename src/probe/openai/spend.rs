//! The daily spend guard: a pure state machine over (time, spend), so it is tested without
//! a clock.
//!
//! A probe's spend is summed per UTC day. Once it reaches the probe's limit, the paid checks
//! pause until 00:00 UTC of the next day. The sum lives in memory: a restart starts the day at
//! zero again, which can at most double a day's probe spend.

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// Spend of one probe in the current UTC day, against an optional limit.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendGuard {
    limit: Option<f64>,
    day: i64,
    spent: f64,
}

/// The UTC day number (days since 1970-01-01) of a Unix time in milliseconds.
pub fn utc_day(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS)
}

impl SpendGuard {
    /// A guard with `limit` dollars per UTC day (`None`: never engages).
    pub fn new(limit: Option<f64>) -> Self {
        SpendGuard {
            limit,
            day: i64::MIN,
            spent: 0.0,
        }
    }

    fn roll(&mut self, now_ms: i64) {
        let today = utc_day(now_ms);
        if today != self.day {
            self.day = today;
            self.spent = 0.0;
        }
    }

    /// Adds `dollars` spent at `now_ms`.
    pub fn record(&mut self, now_ms: i64, dollars: f64) {
        self.roll(now_ms);
        if dollars.is_finite() && dollars > 0.0 {
            self.spent += dollars;
        }
    }

    /// Dollars spent so far today.
    pub fn spent_today(&mut self, now_ms: i64) -> f64 {
        self.roll(now_ms);
        self.spent
    }

    /// Tells whether paid checks are paused at `now_ms`: today's spend has reached the limit.
    pub fn engaged(&mut self, now_ms: i64) -> bool {
        self.roll(now_ms);
        self.limit.is_some_and(|l| self.spent >= l)
    }

    /// When the pause ends: the next 00:00 UTC, in Unix milliseconds.
    pub fn resumes_at_ms(now_ms: i64) -> i64 {
        (utc_day(now_ms) + 1) * DAY_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2025-01-01T00:00:00Z.
    const JAN1: i64 = 1_735_689_600_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn pauses_at_the_limit_and_resumes_at_utc_midnight() {
        let mut g = SpendGuard::new(Some(0.5));
        let t = JAN1 + 10 * HOUR;
        assert!(!g.engaged(t));
        g.record(t, 0.25);
        assert!(!g.engaged(t));
        g.record(t + 1, 0.25);
        assert_eq!(g.spent_today(t + 1), 0.5);
        assert!(g.engaged(t + 2));
        // Still paused one millisecond before midnight.
        assert!(g.engaged(JAN1 + DAY_MS - 1));
        assert_eq!(SpendGuard::resumes_at_ms(t), JAN1 + DAY_MS);
        // The new UTC day starts from zero.
        assert!(!g.engaged(JAN1 + DAY_MS));
        assert_eq!(g.spent_today(JAN1 + DAY_MS), 0.0);
    }

    #[test]
    fn no_limit_never_engages_and_bad_amounts_are_ignored() {
        let mut g = SpendGuard::new(None);
        g.record(JAN1, 1e9);
        assert!(!g.engaged(JAN1));
        let mut g = SpendGuard::new(Some(1.0));
        g.record(JAN1, f64::NAN);
        g.record(JAN1, -5.0);
        g.record(JAN1, f64::INFINITY);
        assert_eq!(g.spent_today(JAN1), 0.0);
        // A zero limit pauses paid checks from the start.
        assert!(SpendGuard::new(Some(0.0)).engaged(JAN1));
    }

    #[test]
    fn days_before_1970_roll_correctly() {
        assert_eq!(utc_day(-1), -1);
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(DAY_MS), 1);
    }
}
