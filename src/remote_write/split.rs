//! How a request refused for some of its samples is narrowed down to them (pure): which parts
//! of it to send again, and how many requests that may cost.
//!
//! A remote-write 1.0 receiver such as Prometheus answers 400 to a whole request when one
//! sample in it is bad (older than its series' newest, another value at a stored timestamp,
//! out of bounds), and stores nothing of it. Dropping the request would lose every other
//! series in it. So a request of several series refused with 400 is split in two by series,
//! each half is sent on its own, and a refused half is split again, until only parts of one
//! series are refused: those samples are dropped, every other one is delivered.
//!
//! - **Cost.** One bad sample among `n` series costs at most two requests per halving, about
//!   `2·log₂ n` in all. The budget grows by that much for each refused one-series part found,
//!   up to [`MAX_SPLIT_REQUESTS`]; once it is spent, the parts not yet sent are dropped without
//!   a request (and counted as refused), so a request full of bad samples costs a bounded number
//!   of requests instead of one per series.
//! - **Safe to repeat.** A refused request stored nothing, so its halves carry nothing the
//!   receiver holds; and if a receiver did store part of it, it keeps one copy of a sample sent
//!   twice.
//! - **Order.** A part holds whole series (each with its samples in the request's order) and
//!   parts are sent one after another, so each series still reaches the receiver oldest first.

use std::ops::Range;

use super::protocol::{Count, Written};
use super::retry::Outcome;
use super::service::Answer;

/// Most requests one refused request may cost in parts, however many bad samples it holds.
pub const MAX_SPLIT_REQUESTS: usize = 64;

/// Tells whether a refused request of `series` series is worth splitting: the receiver
/// answered 400 (the status remote write 1.0 receivers give a request holding a bad sample,
/// which they roll back whole) and there is more than one series to tell apart.
///
/// Other refusals (401, 403, 413, …) concern the request, not a sample: every part would be
/// refused the same way.
pub(crate) fn splits(answer: &Answer, series: usize) -> bool {
    // A remote write 2.0 receiver says how much of a request it stored, in the
    // `X-Prometheus-Remote-Write-Samples-Written` (and `-Histograms-`, `-Exemplars-Written`)
    // headers: a refusal that wrote some samples (or whose count cannot be read) is not
    // split, since its parts would write those samples twice.
    answer.outcome == Outcome::Status(400) && series > 1 && !wrote_some(&answer.written)
}

/// Tells whether a receiver's `-Written` headers say (or may say) that it wrote something.
fn wrote_some(written: &Written) -> bool {
    [&written.samples, &written.histograms, &written.exemplars]
        .into_iter()
        .flatten()
        .any(|c| !matches!(c, Count::Number(0)))
}

/// The next thing to do with a refused request's series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these series (indices into the refused request's series, in its order) as one
    /// request.
    Send(Range<usize>),
    /// The budget is spent: drop these series unsent, counted as refused.
    Drop(Range<usize>),
}

/// Narrows a request refused whole down to the series the receiver refuses, halving by series.
#[derive(Debug, Clone)]
pub struct SplitPlan {
    /// Parts still to handle, the next one last: earlier series go first.
    todo: Vec<Range<usize>>,
    /// Requests one bad sample may cost: two per halving of the request's series.
    per_refusal: usize,
    /// Requests sent so far.
    sent: usize,
    /// One-series parts refused so far.
    refused: usize,
}

impl SplitPlan {
    /// A plan for a request of `series` series that the receiver refused whole.
    pub fn new(series: usize) -> Self {
        let halvings = series.max(2).next_power_of_two().trailing_zeros() as usize;
        let mut plan = SplitPlan {
            todo: Vec::new(),
            per_refusal: 2 * halvings,
            sent: 0,
            refused: 0,
        };
        plan.halve(0..series);
        plan
    }

    /// Requests sent so far (the refused request itself not included).
    pub fn requests(&self) -> usize {
        self.sent
    }

    /// What to do next; `None` once every series was delivered or dropped.
    pub fn next_step(&mut self) -> Option<Step> {
        let part = self.todo.pop()?;
        let budget = (self.per_refusal * (self.refused + 1)).min(MAX_SPLIT_REQUESTS);
        if self.sent >= budget {
            return Some(Step::Drop(part));
        }
        self.sent += 1;
        Some(Step::Send(part))
    }

    /// Records that the receiver refused `part`, the last one sent; `divisible` says whether
    /// its answer allows a split (see `splits`). Returns true when the part's samples are to
    /// be dropped: it holds one series, or the refusal was not about a sample.
    pub fn refused(&mut self, part: Range<usize>, divisible: bool) -> bool {
        if divisible && part.len() > 1 {
            self.halve(part);
            false
        } else {
            self.refused += 1;
            true
        }
    }

    fn halve(&mut self, part: Range<usize>) {
        let mid = part.start + part.len() / 2;
        self.todo.push(mid..part.end);
        self.todo.push(part.start..mid);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Runs a plan against a consistent receiver that refuses any part holding a series of
    /// `bad`: returns the requests sent, the series delivered and the series dropped (refused
    /// or unsent), each in order.
    fn run(series: usize, bad: &BTreeSet<usize>) -> (usize, Vec<usize>, Vec<usize>) {
        let mut plan = SplitPlan::new(series);
        let (mut delivered, mut dropped) = (Vec::new(), Vec::new());
        while let Some(step) = plan.next_step() {
            match step {
                Step::Send(part) => {
                    if part.clone().any(|s| bad.contains(&s)) {
                        if plan.refused(part.clone(), true) {
                            dropped.extend(part);
                        }
                    } else {
                        delivered.extend(part);
                    }
                }
                Step::Drop(part) => dropped.extend(part),
            }
        }
        (plan.requests(), delivered, dropped)
    }

    #[test]
    fn one_bad_series_among_a_thousand_costs_about_two_requests_per_halving() {
        let bound = (2.0 * 1000f64.log2() + 1.0) as usize;
        for bad in [0, 1, 499, 500, 617, 998, 999] {
            let (requests, delivered, dropped) = run(1000, &BTreeSet::from([bad]));
            assert!(requests <= bound, "bad {bad}: {requests} > {bound}");
            assert_eq!(dropped, [bad]);
            assert_eq!(delivered.len(), 999);
            assert!(!delivered.contains(&bad));
        }
    }

    #[test]
    fn every_series_is_sent_once_and_in_order_unless_dropped() {
        let bad = BTreeSet::from([3, 4, 17]);
        let (_, delivered, dropped) = run(40, &bad);
        assert_eq!(dropped, [3, 4, 17]);
        let expected: Vec<usize> = (0..40).filter(|s| !bad.contains(s)).collect();
        assert_eq!(delivered, expected);
    }

    #[test]
    fn the_budget_grows_with_each_bad_series_found() {
        // Two bad series, far apart: each found within its own allowance of 2·⌈log₂ n⌉.
        let (requests, delivered, dropped) = run(64, &BTreeSet::from([5, 60]));
        assert_eq!(dropped, [5, 60]);
        assert_eq!(delivered.len(), 62);
        assert!(requests <= 2 * 2 * 6, "{requests}");
    }

    #[test]
    fn all_bad_is_capped_then_the_rest_is_dropped_unsent() {
        let all: BTreeSet<usize> = (0..1000).collect();
        let (requests, delivered, dropped) = run(1000, &all);
        assert_eq!(requests, MAX_SPLIT_REQUESTS);
        assert!(delivered.is_empty());
        // Every series is accounted for, once, in order.
        assert_eq!(dropped, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn small_requests_are_narrowed_down_completely() {
        let (requests, delivered, dropped) = run(2, &BTreeSet::from([1]));
        assert_eq!((requests, delivered, dropped), (2, vec![0], vec![1]));
        let all: BTreeSet<usize> = (0..4).collect();
        let (requests, _, dropped) = run(4, &all);
        assert_eq!(dropped, [0, 1, 2, 3]);
        // Halves, then quarters: every series refused on its own.
        assert_eq!(requests, 6);
    }

    #[test]
    fn a_refusal_that_is_not_about_a_sample_drops_the_part_whole() {
        let mut plan = SplitPlan::new(10);
        assert_eq!(plan.next_step(), Some(Step::Send(0..5)));
        assert!(plan.refused(0..5, false));
        assert_eq!(plan.next_step(), Some(Step::Send(5..10)));
        assert_eq!(plan.next_step(), None);
    }
}
