//! What a group may use ([`Limits`]) and the translations from a QoS class and its numbers to
//! kernel settings, as Kubernetes makes them: millicores to `cpu.shares` to v2 `cpu.weight`,
//! a CPU cap to a CFS quota, requests and maximums to [`Limits`] ([`limits_for`]), and the QoS
//! class to an `oom_score_adj` ([`oom_score_adj_for`]).

use std::fmt;
use std::str::FromStr;

/// The CFS period every CPU cap is expressed in, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel accepts, in microseconds.
const MIN_QUOTA_US: u64 = 1_000;
/// `cpu.shares` bounds (the kernel's, and Kubernetes').
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;

/// The limits of one group. `None` is "unlimited" (or the kernel default for a weight), so
/// applying a `None` removes a limit set before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    /// A hard CPU cap in millicores: 200 is a quota of 20000 µs per 100000 µs period (v2
    /// `cpu.max`, v1 `cpu.cfs_quota_us`); at least 1000 µs is written.
    pub cpu_max_millis: Option<u64>,
    /// The relative CPU weight, in `cpu.shares` units (2..=262144; a request of 1000 millicores
    /// is 1024, see [`shares_from_millis`]): v1 writes it to `cpu.shares`, v2 converts it to
    /// `cpu.weight` 1..=10000 with [`weight_from_shares`]. `None` is the kernel default
    /// (1024 shares, weight 100).
    pub cpu_weight: Option<u64>,
    /// The hard memory limit in bytes (v2 `memory.max`, v1 `memory.limit_in_bytes`).
    pub memory_max: Option<u64>,
    /// The memory throttling threshold in bytes (v2 `memory.high`, v1
    /// `memory.soft_limit_in_bytes`).
    pub memory_high: Option<u64>,
    /// Memory protected from reclaim in bytes (v2 `memory.min`; v1 has no such thing and
    /// ignores it).
    pub memory_min: Option<u64>,
    /// The most tasks (threads) in the group (`pids.max`).
    pub pids_max: Option<u64>,
}

/// `cpu.shares` for a CPU request in millicores, as Kubernetes computes them (1000 → 1024,
/// 100 → 102, 0 → 2).
pub fn shares_from_millis(millis: u64) -> u64 {
    (millis.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// v2 `cpu.weight` for `cpu.shares`, as Kubernetes and runc convert them (1024 → 39, 102 → 4,
/// 2 → 1, 262144 → 10000).
pub fn weight_from_shares(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - MIN_SHARES) * 9999) / (MAX_SHARES - MIN_SHARES)
}

/// The CFS quota per [`CPU_PERIOD_US`] for a cap in millicores (200 → 20000), at least the
/// kernel's minimum of 1000 µs.
pub fn quota_from_millis(millis: u64) -> u64 {
    (millis.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_QUOTA_US)
}

/// Quality-of-service class, with the names of `qm-core`'s `Qos` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    /// Limits equal to requests.
    Guaranteed,
    /// Requests below limits, or no limits.
    Burstable,
    /// No requests at all.
    BestEffort,
}

impl Qos {
    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Qos::Guaranteed => "guaranteed",
            Qos::Burstable => "burstable",
            Qos::BestEffort => "best-effort",
        }
    }
}

impl fmt::Display for Qos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A QoS name that is none of `guaranteed`, `burstable`, `best-effort`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown qos class {0:?}")]
pub struct UnknownQos(pub String);

impl FromStr for Qos {
    type Err = UnknownQos;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort]
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| UnknownQos(s.to_owned()))
    }
}

/// What an agent requested: its share of the node, protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// The most an agent may use; `None` (or 0) is no maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maximums {
    /// CPU in millicores.
    pub cpu_millis: Option<u64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
}

/// The limits for an agent of class `qos`:
/// - guaranteed: capped at its requests (CPU cap and memory maximum = request), its memory
///   protected (`memory.min` = request), weighted by its CPU request;
/// - burstable: weighted by its CPU request, its memory request protected, capped where
///   `maximums` says;
/// - best-effort: the lowest weight (2 shares, `cpu.weight` 1), no protection, no cap.
///
/// A request or maximum of 0 sets nothing for that resource (never a limit of zero).
pub fn limits_for(qos: Qos, requests: Requests, maximums: Maximums) -> Limits {
    let nonzero = |v: u64| (v > 0).then_some(v);
    match qos {
        Qos::Guaranteed => Limits {
            cpu_max_millis: nonzero(requests.cpu_millis),
            cpu_weight: Some(shares_from_millis(requests.cpu_millis)),
            memory_max: nonzero(requests.memory_bytes),
            memory_min: nonzero(requests.memory_bytes),
            ..Limits::default()
        },
        Qos::Burstable => Limits {
            cpu_max_millis: maximums.cpu_millis.and_then(nonzero),
            cpu_weight: Some(shares_from_millis(requests.cpu_millis)),
            memory_max: maximums.memory_bytes.and_then(nonzero),
            memory_min: nonzero(requests.memory_bytes),
            ..Limits::default()
        },
        Qos::BestEffort => Limits {
            cpu_weight: Some(MIN_SHARES),
            ..Limits::default()
        },
    }
}

/// `oom_score_adj` of a guaranteed agent: killed last.
const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
/// `oom_score_adj` of a best-effort agent: killed first.
const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;

/// The `oom_score_adj` for an agent of class `qos` that requested `memory_request_bytes` of a
/// node with `memory_capacity_bytes`, as the kubelet sets it: guaranteed -997, best-effort
/// 1000, burstable by [`oom_score_adj_burstable`].
pub fn oom_score_adj_for(qos: Qos, memory_request_bytes: u64, memory_capacity_bytes: u64) -> i32 {
    match qos {
        Qos::Guaranteed => GUARANTEED_OOM_SCORE_ADJ,
        Qos::BestEffort => BEST_EFFORT_OOM_SCORE_ADJ,
        Qos::Burstable => oom_score_adj_burstable(memory_request_bytes, memory_capacity_bytes),
    }
}

/// A burstable agent's `oom_score_adj`: `1000 - 1000 * request / capacity`, kept strictly
/// between guaranteed and best-effort, in 3..=999 (the kubelet's bounds: `1000 - 997` and
/// `1000 - 1`). The more it requested, the later it is killed. An unknown capacity (0) gives
/// 999.
pub fn oom_score_adj_burstable(request_bytes: u64, capacity_bytes: u64) -> i32 {
    let lowest = 1000 + GUARANTEED_OOM_SCORE_ADJ;
    let highest = BEST_EFFORT_OOM_SCORE_ADJ - 1;
    if capacity_bytes == 0 {
        return highest;
    }
    let share = (1000 * u128::from(request_bytes)) / u128::from(capacity_bytes);
    let adj = 1000 - i64::try_from(share).unwrap_or(i64::MAX).min(2000);
    i32::try_from(adj.clamp(i64::from(lowest), i64::from(highest))).unwrap_or(highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_weights_match_kubernetes() {
        for (millis, shares, weight) in [
            (1000, 1024, 39),
            (100, 102, 4),
            (2, 2, 1),
            (0, 2, 1),
            (250, 256, 10),
            (500_000, 262_144, 10_000),
        ] {
            assert_eq!(shares_from_millis(millis), shares, "{millis}m");
            assert_eq!(weight_from_shares(shares), weight, "{shares} shares");
        }
        assert_eq!(weight_from_shares(0), 1);
        assert_eq!(weight_from_shares(u64::MAX), 10_000);
        assert_eq!(shares_from_millis(u64::MAX), 262_144);
    }

    #[test]
    fn cpu_caps_are_quotas() {
        assert_eq!(quota_from_millis(200), 20_000);
        assert_eq!(quota_from_millis(1500), 150_000);
        assert_eq!(quota_from_millis(1), 1_000, "the kernel's minimum");
        assert_eq!(quota_from_millis(0), 1_000);
    }

    #[test]
    fn oom_score_adj_matches_kubernetes() {
        let gib = 1 << 30;
        assert_eq!(oom_score_adj_for(Qos::Guaranteed, gib, 16 * gib), -997);
        assert_eq!(oom_score_adj_for(Qos::BestEffort, 0, 16 * gib), 1000);
        assert_eq!(oom_score_adj_for(Qos::Burstable, 4 * gib, 16 * gib), 750);
        assert_eq!(oom_score_adj_burstable(gib, 10 * gib), 900);
        assert_eq!(
            oom_score_adj_burstable(0, gib),
            999,
            "never best-effort's 1000"
        );
        assert_eq!(oom_score_adj_burstable(gib, gib), 3, "never guaranteed's");
        assert_eq!(oom_score_adj_burstable(2 * gib, gib), 3);
        assert_eq!(oom_score_adj_burstable(u64::MAX, 1), 3);
        assert_eq!(oom_score_adj_burstable(gib, 0), 999);
    }

    #[test]
    fn qos_classes_become_limits() {
        let mib = 1 << 20;
        let req = Requests {
            cpu_millis: 500,
            memory_bytes: 256 * mib,
        };
        let g = limits_for(Qos::Guaranteed, req, Maximums::default());
        assert_eq!(
            g,
            Limits {
                cpu_max_millis: Some(500),
                cpu_weight: Some(512),
                memory_max: Some(256 * mib),
                memory_high: None,
                memory_min: Some(256 * mib),
                pids_max: None,
            }
        );
        let max = Maximums {
            cpu_millis: Some(2000),
            memory_bytes: None,
        };
        let b = limits_for(Qos::Burstable, req, max);
        assert_eq!(b.cpu_max_millis, Some(2000));
        assert_eq!(b.cpu_weight, Some(512));
        assert_eq!((b.memory_max, b.memory_min), (None, Some(256 * mib)));
        let e = limits_for(Qos::BestEffort, req, max);
        assert_eq!(
            e,
            Limits {
                cpu_weight: Some(2),
                ..Limits::default()
            }
        );
        assert_eq!(weight_from_shares(e.cpu_weight.unwrap()), 1);
        let cpu_only = limits_for(
            Qos::Guaranteed,
            Requests {
                cpu_millis: 100,
                memory_bytes: 0,
            },
            max,
        );
        assert_eq!((cpu_only.memory_max, cpu_only.memory_min), (None, None));
    }

    #[test]
    fn qos_names_round_trip() {
        for q in [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort] {
            assert_eq!(q.name().parse::<Qos>().unwrap(), q);
        }
        assert_eq!(
            "gold".parse::<Qos>().unwrap_err().to_string(),
            r#"unknown qos class "gold""#
        );
    }
}
