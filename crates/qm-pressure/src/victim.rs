//! Victim choice: the order in which agents are evicted under pressure, as Kubernetes ranks
//! pods: agents using more than they requested first (lowest priority first, then the largest
//! excess), agents at or under their request after them, guaranteed agents last; an agent whose
//! own forecast says it is leaking goes before others of its priority. Ties break by id.

use std::cmp::{Ordering, Reverse};

/// An agent whose forecast exhausts within this many seconds counts as leaking.
pub const LEAK_HORIZON_S: f64 = 300.0;

/// Quality-of-service class, as Kubernetes defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Qos {
    /// Request equals limit for every resource; evicted last.
    Guaranteed,
    /// Some request set, below its limit.
    Burstable,
    /// No request; always counts as above it.
    BestEffort,
}

/// One agent that could be evicted.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The agent's id; ties break on it.
    pub id: String,
    /// Its QoS class.
    pub qos: Qos,
    /// Its priority; lower is evicted first.
    pub priority: i64,
    /// What it uses now.
    pub usage_bytes: u64,
    /// What it requested.
    pub request_bytes: u64,
    /// When its own usage forecast reaches its limit, if a forecast was made.
    pub exhaustion_in_s: Option<f64>,
}

impl Candidate {
    /// Whether it uses more than it requested (best-effort always does; guaranteed never
    /// counts).
    pub fn above_request(&self) -> bool {
        match self.qos {
            Qos::Guaranteed => false,
            Qos::BestEffort => true,
            Qos::Burstable => self.usage_bytes > self.request_bytes,
        }
    }

    /// How far usage is above request, in bytes (0 when at or under).
    pub fn excess_bytes(&self) -> u64 {
        self.usage_bytes.saturating_sub(self.request_bytes)
    }

    /// Whether its forecast exhausts within [`LEAK_HORIZON_S`].
    pub fn leaking(&self) -> bool {
        self.exhaustion_in_s
            .is_some_and(|s| s.is_finite() && (0.0..LEAK_HORIZON_S).contains(&s))
    }

    /// 0: above request, 1: at or under request, 2: guaranteed.
    fn tier(&self) -> u8 {
        if self.qos == Qos::Guaranteed {
            2
        } else if self.above_request() {
            0
        } else {
            1
        }
    }
}

fn eviction_cmp(a: &Candidate, b: &Candidate) -> Ordering {
    let key = |c: &Candidate| {
        (
            c.tier(),
            c.priority,
            !c.leaking(),
            Reverse(c.excess_bytes()),
            Reverse(c.usage_bytes),
        )
    };
    key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
}

/// Candidate ids in eviction order, first to evict first.
pub fn order(candidates: &[Candidate]) -> Vec<String> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| eviction_cmp(a, b));
    sorted.into_iter().map(|c| c.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, qos: Qos, priority: i64, usage: u64, request: u64) -> Candidate {
        Candidate {
            id: id.to_owned(),
            qos,
            priority,
            usage_bytes: usage,
            request_bytes: request,
            exhaustion_in_s: None,
        }
    }

    fn leaking(mut cand: Candidate, in_s: f64) -> Candidate {
        cand.exhaustion_in_s = Some(in_s);
        cand
    }

    #[test]
    fn empty_gives_empty() {
        assert!(order(&[]).is_empty());
    }

    #[test]
    fn above_request_goes_first_even_at_higher_priority() {
        let got = order(&[
            c("under", Qos::Burstable, 0, 50, 100),
            c("over", Qos::Burstable, 10, 150, 100),
        ]);
        assert_eq!(got, ["over", "under"]);
    }

    #[test]
    fn best_effort_counts_as_above_request() {
        let got = order(&[
            c("burst-under", Qos::Burstable, 0, 10, 100),
            c("best-effort", Qos::BestEffort, 0, 0, 0),
        ]);
        assert_eq!(got, ["best-effort", "burst-under"]);
    }

    #[test]
    fn lowest_priority_first_among_the_above() {
        let got = order(&[
            c("high", Qos::Burstable, 100, 1_000, 100),
            c("low", Qos::Burstable, -5, 110, 100),
            c("mid", Qos::BestEffort, 7, 50, 0),
        ]);
        assert_eq!(got, ["low", "mid", "high"]);
    }

    #[test]
    fn largest_excess_first_at_equal_priority() {
        let got = order(&[
            c("small", Qos::Burstable, 1, 120, 100),
            c("large", Qos::Burstable, 1, 500, 100),
            c("medium", Qos::BestEffort, 1, 200, 0),
        ]);
        assert_eq!(got, ["large", "medium", "small"]);
    }

    #[test]
    fn guaranteed_goes_last_even_over_request_or_at_low_priority() {
        let got = order(&[
            c("guaranteed", Qos::Guaranteed, -100, 200, 100),
            c("under", Qos::Burstable, 100, 10, 100),
            c("over", Qos::Burstable, 100, 200, 100),
        ]);
        assert_eq!(got, ["over", "under", "guaranteed"]);
    }

    #[test]
    fn leaking_goes_before_others_of_its_priority_only() {
        let got = order(&[
            c("big", Qos::Burstable, 5, 900, 100),
            leaking(c("leak", Qos::Burstable, 5, 150, 100), 60.0),
            c("lower-priority", Qos::Burstable, 1, 110, 100),
        ]);
        assert_eq!(got, ["lower-priority", "leak", "big"]);
    }

    #[test]
    fn distant_or_invalid_forecasts_are_not_leaks() {
        let got = order(&[
            c("big", Qos::Burstable, 5, 900, 100),
            leaking(c("far", Qos::Burstable, 5, 150, 100), 3_600.0),
            leaking(c("nan", Qos::Burstable, 5, 140, 100), f64::NAN),
        ]);
        assert_eq!(got, ["big", "far", "nan"]);
    }

    #[test]
    fn ties_break_by_id_regardless_of_input_order() {
        let a = c("a", Qos::Burstable, 1, 200, 100);
        let b = c("b", Qos::Burstable, 1, 200, 100);
        let z = c("z", Qos::Burstable, 1, 200, 100);
        assert_eq!(order(&[z.clone(), b.clone(), a.clone()]), ["a", "b", "z"]);
        assert_eq!(order(&[a, z, b]), ["a", "b", "z"]);
    }
}
