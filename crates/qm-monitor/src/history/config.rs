//! History's configuration: the downsampling tiers of host and agent series and the bound
//! on series, with their defaults, validation (each problem names its field) and the
//! clamping that keeps an unvalidated config from breaking the history.

use qm_core::FieldError;

/// The most points one tier may hold.
pub const MAX_TIER_POINTS: usize = 1 << 24;

/// One downsampling tier: `points` steps of `step_ms` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// The step, in milliseconds.
    pub step_ms: u64,
    /// How many steps the ring holds.
    pub points: usize,
}

impl Tier {
    /// A tier of `points` steps of `step_ms`.
    pub const fn new(step_ms: u64, points: usize) -> Self {
        Tier { step_ms, points }
    }

    /// How far back the tier reaches: step × points.
    pub fn span_ms(&self) -> u64 {
        self.step_ms.saturating_mul(self.points as u64)
    }
}

/// How much history to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Tiers for host series, finest first.
    pub host_tiers: Vec<Tier>,
    /// Tiers for agent series (those with an `agent` label), finest first.
    pub agent_tiers: Vec<Tier>,
    /// The most series held; a new series beyond it evicts the stalest.
    pub max_series: usize,
    /// The agent series kept (by name); empty keeps every one. Bounds agent history to
    /// these series × the agent tiers per agent.
    pub agent_series: Vec<String>,
}

/// The agent series history keeps by default: what sizing and post-mortems need.
pub const DEFAULT_AGENT_SERIES: [&str; 6] = [
    "qm_agent_cpu_usage_cores",
    "qm_agent_memory_bytes",
    "qm_agent_io_read_bytes_per_second",
    "qm_agent_io_write_bytes_per_second",
    "qm_agent_threads",
    "qm_agent_open_files",
];

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            host_tiers: vec![
                Tier::new(1_000, 900),
                Tier::new(10_000, 2_160),
                Tier::new(60_000, 10_080),
            ],
            agent_tiers: vec![
                Tier::new(1_000, 300),
                Tier::new(10_000, 360),
                Tier::new(60_000, 1_440),
            ],
            max_series: 20_000,
            agent_series: DEFAULT_AGENT_SERIES.map(String::from).to_vec(),
        }
    }
}

impl HistoryConfig {
    /// Checks every field: at least one tier per set, steps at least 1 ms, strictly
    /// increasing and each a multiple of the previous, points 1 to [`MAX_TIER_POINTS`],
    /// `max_series` at least 1.
    /// Every problem found (empty when valid); each names its field (`host_tiers[1].step_ms`).
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_tiers("host_tiers", &self.host_tiers, &mut errors);
        check_tiers("agent_tiers", &self.agent_tiers, &mut errors);
        if self.max_series == 0 {
            errors.push(field_error("max_series", "must be at least 1"));
        }
        errors
    }

    /// The config with what would break the history clamped: an empty tier list becomes the
    /// default one, steps and points at least 1 (points at most [`MAX_TIER_POINTS`]),
    /// `max_series` at least 1. A valid config is unchanged.
    pub(super) fn clamped(mut self) -> Self {
        let default = HistoryConfig::default();
        for (tiers, fallback) in [
            (&mut self.host_tiers, default.host_tiers),
            (&mut self.agent_tiers, default.agent_tiers),
        ] {
            if tiers.is_empty() {
                *tiers = fallback;
            }
            for t in tiers.iter_mut() {
                t.step_ms = t.step_ms.max(1);
                t.points = t.points.clamp(1, MAX_TIER_POINTS);
            }
        }
        self.max_series = self.max_series.max(1);
        self
    }

    pub(super) fn tiers(&self, agent: bool) -> &[Tier] {
        if agent {
            &self.agent_tiers
        } else {
            &self.host_tiers
        }
    }
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

fn check_tiers(field: &str, tiers: &[Tier], errors: &mut Vec<FieldError>) {
    if tiers.is_empty() {
        errors.push(field_error(field, "at least one tier is needed"));
    }
    let mut prev: Option<u64> = None;
    for (i, t) in tiers.iter().enumerate() {
        if t.step_ms == 0 {
            errors.push(field_error(
                format!("{field}[{i}].step_ms"),
                "must be at least 1",
            ));
        } else if let Some(prev) = prev.filter(|p| *p > 0) {
            if t.step_ms <= prev {
                errors.push(field_error(
                    format!("{field}[{i}].step_ms"),
                    format!("must be greater than the previous tier's step ({prev} ms)"),
                ));
            } else if t.step_ms % prev != 0 {
                errors.push(field_error(
                    format!("{field}[{i}].step_ms"),
                    format!("must be a multiple of the previous tier's step ({prev} ms)"),
                ));
            }
        }
        if t.points == 0 || t.points > MAX_TIER_POINTS {
            errors.push(field_error(
                format!("{field}[{i}].points"),
                format!("must be 1 to {MAX_TIER_POINTS}"),
            ));
        }
        prev = Some(t.step_ms);
    }
}
