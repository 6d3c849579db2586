//! Wire types of the monitoring routes: the current samples (`GET /v1/metrics`), the series
//! history holds and their points (`GET /v1/metrics/series`, `GET /v1/metrics/query`), and
//! alerts (`GET /v1/alerts`, and the `alert` of `alert.firing` / `alert.resolved` events).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One value of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SampleDoc {
    /// `qm_host_memory_used_bytes`.
    pub name: String,
    /// `gauge`, `counter` or `rate` (a per-second rate or ratio derived from counters).
    pub kind: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The latest collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricsSnapshotDoc {
    /// When it was collected (RFC 3339); null before the first collection.
    pub at: Option<String>,
    /// What the collection cost: wall and CPU milliseconds.
    pub collection_ms: f64,
    pub collection_cpu_ms: f64,
    /// Agents tracked.
    pub agents: usize,
    pub samples: Vec<SampleDoc>,
}

/// A series name and how many label sets history holds for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeriesNameDoc {
    pub name: String,
    pub series: usize,
}

/// What history holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeriesListDoc {
    pub items: Vec<SeriesNameDoc>,
    /// Series held, points held, series evicted for the `max_series` bound, heap bytes.
    pub series: usize,
    pub points: usize,
    pub evicted: u64,
    pub memory_bytes: usize,
}

/// One series' points over a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeriesDoc {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Seconds between points.
    pub step_s: f64,
    /// `[unix seconds, value]` pairs, oldest first; missing points are omitted.
    pub points: Vec<[f64; 2]>,
}

/// The answer to a history query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueryDoc {
    pub items: Vec<SeriesDoc>,
}

/// An alert: one rule over one series (its labels), pending, firing or resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertDoc {
    /// The rule's name.
    pub rule: String,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// The series' labels plus the rule's.
    pub labels: BTreeMap<String, String>,
    /// The series, the comparison and the threshold: `qm_host_memory_used_ratio > 0.9`.
    pub expr: String,
    /// The last value seen.
    pub value: f64,
    pub summary: Option<String>,
    /// Why it resolved, when not by its value (`series absent`: the agent ended).
    pub note: Option<String>,
    /// Stable for one rule and label set: de-duplicates notifications.
    pub fingerprint: String,
    pub pending_since: String,
    pub fired_at: Option<String>,
    pub resolved_at: Option<String>,
}

/// `GET /v1/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertList {
    pub items: Vec<AlertDoc>,
}

/// One pressure signal (`GET /v1/pressure`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignalDoc {
    /// `ok`, `warning` or `critical`.
    pub level: String,
    /// The worse of the managed view (agents against the node's allocatable) and the host's.
    pub utilization: f64,
    /// What is left: bytes for memory and disk, cores for cpu, threads for pids.
    pub available: f64,
    pub psi_some_avg10: Option<f64>,
    pub psi_full_avg10: Option<f64>,
    /// Base units per second.
    pub trend_per_s: f64,
    pub exhaustion_in_s: Option<f64>,
    /// How much to trust the forecast, 0..1.
    pub confidence: f64,
    pub anomaly: bool,
    pub anomaly_score: f64,
}

/// `GET /v1/pressure`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PressureDoc {
    pub level: String,
    pub since: String,
    /// `open`, `best-effort-paused` (memory or pids at warning) or `paused` (critical).
    pub admission: String,
    pub signals: BTreeMap<String, SignalDoc>,
    /// Agents' memory trends, the fastest-growing first.
    #[serde(default)]
    pub agents: Vec<AgentPressureDoc>,
    /// What the responder has done.
    #[serde(default)]
    pub responder: ResponderDoc,
}

/// One agent's memory and where it is heading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentPressureDoc {
    pub agent: String,
    pub memory_bytes: f64,
    /// Bytes per second.
    pub trend_per_s: f64,
    /// When this agent alone, at its trend, would use up what the node has left.
    pub exhaustion_in_s: Option<f64>,
    /// 0..1.
    pub confidence: f64,
    /// Held by the responder (memory.high or cpu.max lowered).
    pub throttled: bool,
}

/// The responder's actions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResponderDoc {
    /// Evictions under critical memory pressure.
    pub evictions_critical: u64,
    /// Evictions of agents forecast to exhaust the node, before the reading reached critical.
    pub evictions_forecast: u64,
    pub throttles: u64,
    /// Agents throttled now.
    pub throttled: Vec<String>,
    pub last_eviction: Option<EvictionDoc>,
}

/// One eviction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvictionDoc {
    pub agent: String,
    pub at: String,
    pub reason: String,
    /// From the collection that saw the level to the SIGTERM.
    pub response_ms: u64,
}
