//! The allocator's own metrics, kept by the engine thread: decisions by result, preemptions,
//! and a histogram of decision latency. [`Snapshot`] adds the gauges read off the ledger at
//! scrape time; `qm-api` renders it as Prometheus text.

use std::time::Duration;

/// Upper bounds of the decision latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2,
];

/// How a request was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Granted,
    Queued,
    Refused,
    Invalid,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Self; 4] = [Self::Granted, Self::Queued, Self::Refused, Self::Invalid];

    /// The `result` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Queued => "queued",
            Self::Refused => "refused",
            Self::Invalid => "invalid",
        }
    }
}

/// Counters the engine keeps.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Decisions by [`Outcome`], in `Outcome::ALL` order.
    pub decisions: [u64; 4],
    /// Allocations preempted.
    pub preempted: u64,
    /// Cumulative counts per latency bucket (the last is +Inf).
    pub latency_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of decision latencies, in seconds.
    pub latency_sum: f64,
}

impl Counters {
    pub(crate) fn decided(&mut self, outcome: Outcome, took: Duration, preempted: usize) {
        if let Some(c) = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .and_then(|i| self.decisions.get_mut(i))
        {
            *c += 1;
        }
        self.preempted += preempted as u64;
        let secs = took.as_secs_f64();
        self.latency_sum += secs;
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        for c in self.latency_buckets.iter_mut().skip(i) {
            *c += 1;
        }
    }
}

/// One node's amounts, per resource: `(resource, allocatable, allocated)` in base units.
#[derive(Debug, Clone)]
pub struct NodeAmounts {
    pub node: String,
    pub ready: bool,
    pub resources: Vec<(String, u64, u64)>,
}

/// Everything `/metrics` shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counters: Counters,
    pub nodes: Vec<NodeAmounts>,
    /// `(pool, queued, dominant share)`.
    pub pools: Vec<(String, usize, f64)>,
    pub live_granted: usize,
    pub live_queued: usize,
    pub store_transactions: u64,
    pub store_batches: u64,
}
