//! Fleet autoscaling with Kubernetes' HPA algorithm: desired = ceil(current × metric / target),
//! nothing within the tolerance (or an optional hysteresis band), stabilization windows over
//! past recommendations (the lowest for scale-up, the highest for scale-down, so it does not
//! flap), rate limits relative to the replica count at the start of their period, and the
//! fleet's min and max. Optionally predictive (`logic::predictive`): the fleet's load is
//! forecast a horizon ahead, and when HPA's arithmetic on that forecast asks for more replicas
//! than the fleet has and than the metric asks for, it scales up to that (through the same
//! limits); it never holds back or deepens a scale-down. Pure: the caller passes the time and
//! the metric.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use super::predictive::{LoadForecast, Predictive};

/// What a fleet scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Average cpu use of the ready replicas as a fraction of what they requested
    /// (0.8 = 80 % of the requested cpu).
    Cpu,
    /// Average memory use of the ready replicas as a fraction of what they requested.
    Memory,
    /// A value pushed for the fleet (`POST /v1/fleets/{name}/metric`), read as the per-replica
    /// average of whatever it measures (queue length per agent, say).
    Custom,
}

impl Metric {
    /// `cpu`, `memory` or `custom`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
            Metric::Custom => "custom",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an autoscaling metric: use cpu, memory or custom")]
pub struct ParseMetricError(pub String);

impl FromStr for Metric {
    type Err = ParseMetricError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "cpu" => Ok(Metric::Cpu),
            "memory" => Ok(Metric::Memory),
            "custom" => Ok(Metric::Custom),
            _ => Err(ParseMetricError(s.to_owned())),
        }
    }
}

/// How fast replicas may be added (or removed) within `period_ms`, counted from the replica
/// count at the start of the period. With both `pods` and `percent`, the one allowing the
/// larger change applies (HPA's `selectPolicy: Max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// At most this many replicas per period.
    pub pods: Option<u32>,
    /// At most this percentage of the period's starting count per period (a scale-up may
    /// always add at least one).
    pub percent: Option<u32>,
    /// The period.
    pub period_ms: u64,
}

impl RateLimit {
    /// HPA's default scale-up limit: 4 replicas or 100 %, whichever is more, per 15 s.
    pub fn hpa_scale_up() -> Self {
        Self {
            pods: Some(4),
            percent: Some(100),
            period_ms: 15_000,
        }
    }

    /// HPA's default scale-down limit: 100 % per 15 s.
    pub fn hpa_scale_down() -> Self {
        Self {
            pods: None,
            percent: Some(100),
            period_ms: 15_000,
        }
    }

    /// The most replicas allowed after scaling up from `start` (the count at the period's
    /// start).
    fn up_to(&self, start: u32) -> u32 {
        let start = u64::from(start);
        let by_pods = self.pods.map(|p| start + u64::from(p));
        let by_percent = self
            .percent
            .map(|p| (start + (start * u64::from(p)).div_ceil(100)).max(start + 1));
        let most = match (by_pods, by_percent) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => u64::MAX,
        };
        u32::try_from(most).unwrap_or(u32::MAX)
    }

    /// The fewest replicas allowed after scaling down from `start`.
    fn down_to(&self, start: u32) -> u32 {
        let by_pods = self.pods.map(|p| start.saturating_sub(p));
        let by_percent = self.percent.map(|p| {
            let keep = 100u64.saturating_sub(u64::from(p));
            u32::try_from(u64::from(start) * keep / 100).unwrap_or(u32::MAX)
        });
        match (by_pods, by_percent) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 0,
        }
    }

    fn validate(&self, field: &str, max_percent: Option<u32>, errors: &mut Vec<(String, String)>) {
        let mut problem =
            |sub: &str, message: String| errors.push((format!("{field}{sub}"), message));
        if self.pods.is_none() && self.percent.is_none() {
            problem(
                "",
                "must set pods or percent (leave the limit unset for none)".to_owned(),
            );
        }
        if self.pods == Some(0) {
            problem(".pods", "0 must be at least 1".to_owned());
        }
        if let Some(percent) = self.percent {
            let most = max_percent.unwrap_or(u32::MAX);
            if percent == 0 || percent > most {
                let message = match max_percent {
                    Some(m) => format!("{percent} must be 1 to {m}"),
                    None => format!("{percent} must be at least 1"),
                };
                problem(".percent", message);
            }
        }
        if self.period_ms == 0 || self.period_ms > MAX_WINDOW_MS {
            problem(
                ".period_ms",
                format!("{} must be 1 to {MAX_WINDOW_MS} (1 h)", self.period_ms),
            );
        }
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: u32| if n == 1 { "replica" } else { "replicas" };
        match (self.pods, self.percent) {
            (Some(n), Some(p)) => write!(f, "{n} {} or {p}%", plural(n))?,
            (Some(n), None) => write!(f, "{n} {}", plural(n))?,
            (None, Some(p)) => write!(f, "{p}%")?,
            (None, None) => f.write_str("no limit")?,
        }
        write!(f, " per {} s", self.period_ms as f64 / 1000.0)
    }
}

/// The longest stabilization window or rate-limit period: one hour.
const MAX_WINDOW_MS: u64 = 3_600_000;
/// The most replicas a fleet may have.
const MAX_REPLICAS: u32 = 10_000;
/// Slack for floating-point error in `current × metric / target` (2 × 0.9 / 0.6 is
/// 3.0000000000000004, which must not round up to 4).
const EPSILON: f64 = 1e-9;

/// How a fleet scales.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoscaleSpec {
    /// The fewest replicas (0 lets an idle fleet scale to zero).
    pub min: u32,
    /// The most replicas, 1 to 10 000.
    pub max: u32,
    /// What is measured.
    pub metric: Metric,
    /// The metric's target value per replica (0.6 = 60 % of requests for cpu and memory).
    pub target: f64,
    /// No scaling while `|metric / target - 1|` is at most this (0.1 = ±10 %).
    pub tolerance: f64,
    /// A scale-up goes only as high as the lowest recommendation of this window.
    pub scale_up_stabilization_ms: u64,
    /// A scale-down goes only as low as the highest recommendation of this window.
    pub scale_down_stabilization_ms: u64,
    /// How fast replicas may be added; `None` for no limit.
    pub scale_up_limit: Option<RateLimit>,
    /// How fast replicas may be removed; `None` for no limit.
    pub scale_down_limit: Option<RateLimit>,
    /// Hysteresis `(low, high)` around the target: scale up only above `high`, down only below
    /// `low` (then to what the target asks).
    pub band: Option<(f64, f64)>,
    /// Scale up ahead of the load's forecast (metric × replicas measured); `None` (the
    /// default) for reactive only.
    pub predictive: Option<Predictive>,
}

impl AutoscaleSpec {
    /// Scaling between `min` and `max` replicas to hold `metric` at `target`, with HPA's
    /// defaults for the rest.
    pub fn new(min: u32, max: u32, metric: Metric, target: f64) -> Self {
        Self {
            min,
            max,
            metric,
            target,
            tolerance: 0.1,
            scale_up_stabilization_ms: 0,
            scale_down_stabilization_ms: 300_000,
            scale_up_limit: Some(RateLimit::hpa_scale_up()),
            scale_down_limit: Some(RateLimit::hpa_scale_down()),
            band: None,
            predictive: None,
        }
    }

    /// Every problem found, as (field, message); empty when the spec is valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut problem = |field: &str, message: String| errors.push((field.to_owned(), message));
        if self.min > self.max {
            problem(
                "min",
                format!("{} must be at most max ({})", self.min, self.max),
            );
        }
        if self.max == 0 || self.max > MAX_REPLICAS {
            problem("max", format!("{} must be 1 to {MAX_REPLICAS}", self.max));
        }
        let target_ok = self.target.is_finite() && self.target > 0.0;
        if !target_ok {
            problem(
                "target",
                format!("{} must be a finite number above 0", self.target),
            );
        }
        if !(self.tolerance.is_finite() && (0.0..1.0).contains(&self.tolerance)) {
            problem(
                "tolerance",
                format!("{} must be at least 0 and below 1", self.tolerance),
            );
        }
        if let Some((low, high)) = self.band {
            let ordered = low.is_finite()
                && high.is_finite()
                && low >= 0.0
                && (!target_ok || (low < self.target && self.target < high))
                && low < high;
            if !ordered {
                problem(
                    "band",
                    format!(
                        "({low}, {high}) must be finite with 0 <= low < target ({}) < high",
                        self.target
                    ),
                );
            }
        }
        for (field, ms) in [
            ("scale_up_stabilization_ms", self.scale_up_stabilization_ms),
            (
                "scale_down_stabilization_ms",
                self.scale_down_stabilization_ms,
            ),
        ] {
            if ms > MAX_WINDOW_MS {
                problem(field, format!("{ms} must be at most {MAX_WINDOW_MS} (1 h)"));
            }
        }
        if let Some(limit) = &self.scale_up_limit {
            limit.validate("scale_up_limit", None, &mut errors);
        }
        if let Some(limit) = &self.scale_down_limit {
            limit.validate("scale_down_limit", Some(100), &mut errors);
        }
        if let Some(p) = &self.predictive {
            p.validate(&mut errors);
        }
        errors
    }
}

/// What the autoscaler recommends now.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decision {
    /// The replica count to run.
    pub replicas: u32,
    /// Why, for people ("cpu 0.92 of target 0.60: 3 → 5").
    pub reason: String,
    /// Whether `replicas` differs from the current count.
    pub changed: bool,
}

/// A change of replica count the autoscaler decided, for the rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScaleEvent {
    at: u64,
    from: u32,
    to: u32,
}

/// One fleet's autoscaler: the spec and the recent recommendations and scale events.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscaler {
    spec: AutoscaleSpec,
    /// (when, recommendation within [min, max]), oldest first.
    history: VecDeque<(u64, u32)>,
    /// Changes decided, oldest first.
    events: VecDeque<ScaleEvent>,
    /// Whether the first recommendation was asked for.
    started: bool,
    /// The load's forecast, when the spec is predictive.
    forecast: Option<LoadForecast>,
}

impl Autoscaler {
    /// An autoscaler with no history.
    pub fn new(spec: AutoscaleSpec) -> Self {
        Self {
            spec,
            history: VecDeque::new(),
            events: VecDeque::new(),
            started: false,
            forecast: spec.predictive.map(LoadForecast::new),
        }
    }

    /// The spec.
    pub fn spec(&self) -> &AutoscaleSpec {
        &self.spec
    }

    /// Recommends a replica count at `now` (unix ms) for a fleet whose replica target is
    /// `current_replicas` and whose metric reads `metric` (`None`: no reading, so no scaling).
    /// A change it recommends is assumed to be carried out: later rate limits count it.
    ///
    /// A count outside [min, max] is brought back at once, metric or not. As in HPA, the
    /// first call seeds the scale-down window with the current count, so a freshly started
    /// daemon does not scale down before the window has passed.
    pub fn recommend(&mut self, now: u64, current_replicas: u32, metric: Option<f64>) -> Decision {
        self.recommend_measured(now, current_replicas, current_replicas, metric)
    }

    /// [`Autoscaler::recommend`] for a metric averaged over `measured` replicas (the ready
    /// ones) rather than all `current_replicas`. As in HPA, a scale-up counts only the load
    /// measured (replicas still starting add none), so a fleet waiting for its new members
    /// does not ask for still more; a scale-down counts every replica. The load
    /// (`metric × measured`) is what a predictive autoscaler forecasts. `measured` 0 reads
    /// as `current_replicas`.
    pub fn recommend_measured(
        &mut self,
        now: u64,
        current_replicas: u32,
        measured: u32,
        metric: Option<f64>,
    ) -> Decision {
        let current = current_replicas;
        let measured = if measured == 0 { current } else { measured };
        let AutoscaleSpec { min, max, .. } = self.spec;
        if current > max {
            return self.decide(
                now,
                current,
                max,
                format!(
                    "{} is above the maximum {max}: {current} → {max}",
                    count(current)
                ),
            );
        }
        if current < min {
            return self.decide(
                now,
                current,
                min,
                format!(
                    "{} is below the minimum {min}: {current} → {min}",
                    count(current)
                ),
            );
        }
        let name = self.spec.metric;
        let Some(value) = metric else {
            return Self::keep(
                current,
                format!("no {name} value: keeping {}", count(current)),
            );
        };
        if !value.is_finite() || value < 0.0 {
            return Self::keep(
                current,
                format!(
                    "{name} value {value} is not usable: keeping {}",
                    count(current)
                ),
            );
        }
        let target = self.spec.target;
        let mut summary = format!("{name} {value:.2} of target {target:.2}");
        if measured < current {
            summary.push_str(&format!(" on {measured} ready"));
        }

        if !self.started {
            self.started = true;
            if self.spec.scale_down_stabilization_ms > 0 {
                self.history.push_back((now, current));
            }
        }
        self.forget(now);

        // The raw recommendation, or a dead zone (tolerance, band) that keeps the count.
        let ratio = value / target;
        let dead_zone = if current == 0 {
            None
        } else if (ratio - 1.0).abs() <= self.spec.tolerance + EPSILON {
            Some(format!(
                "within tolerance (±{}%)",
                (self.spec.tolerance * 100.0).round()
            ))
        } else {
            match self.spec.band {
                Some((low, high)) if (low..=high).contains(&value) => {
                    Some(format!("within band {low:.2} to {high:.2}"))
                }
                _ => None,
            }
        };
        let load = value * f64::from(measured);
        let reactive = match (&dead_zone, current) {
            (Some(_), _) => current,
            // Nothing runs to measure: wake the fleet if there is load.
            (None, 0) => u32::from(value > 0.0).max(min),
            (None, _) if ratio > 1.0 && measured < current => {
                ceil_replicas(load / target).max(current)
            }
            (None, _) => ceil_replicas(f64::from(current) * ratio),
        };
        // The forecast may scale up beyond the recommendation; it never holds back or
        // deepens a scale-down.
        let (raw, summary) = match self.forecast_wanted(now, current, load) {
            Some((n, note)) if n > reactive && n > current => (n, format!("{summary}; {note}")),
            _ => (reactive, summary),
        };
        let wanted = raw.clamp(min, max);
        self.history.push_back((now, wanted));
        if raw == current
            && let Some(zone) = dead_zone
        {
            return Self::keep(
                current,
                format!("{summary}: {zone}, keeping {}", count(current)),
            );
        }

        let mut notes = Vec::new();
        if raw > max {
            notes.push(format!("capped at max {max}"));
        } else if raw < min {
            notes.push(format!("raised to min {min}"));
        }
        let stabilized = self.stabilize(now, current, wanted, &mut notes);
        let replicas = self.rate_limit(now, current, stabilized, &mut notes);
        let wants = if notes.is_empty() {
            String::new()
        } else {
            format!(" wants {raw}; {}", notes.join("; "))
        };
        let outcome = if replicas == current {
            format!("keeping {}", count(current))
        } else {
            format!("{current} → {replicas}")
        };
        self.decide(
            now,
            current,
            replicas,
            format!("{summary}{wants}: {outcome}"),
        )
    }

    /// What the load's forecast alone recommends, with a note saying so: HPA's arithmetic on
    /// the load expected a horizon ahead, and the current count when that load per replica is
    /// within the tolerance or the band. `None` when the spec is not predictive or nothing
    /// runs to measure.
    fn forecast_wanted(&mut self, now: u64, current: u32, load: f64) -> Option<(u32, String)> {
        let forecast = self.forecast.as_mut()?;
        if current == 0 {
            return None;
        }
        forecast.observe(now, load);
        let ahead = forecast.ahead()?;
        let target = self.spec.target;
        let per_replica = ahead / f64::from(current);
        let within_band = self
            .spec
            .band
            .is_some_and(|(low, high)| (low..=high).contains(&per_replica));
        let n =
            if within_band || (per_replica / target - 1.0).abs() <= self.spec.tolerance + EPSILON {
                current
            } else {
                ceil_replicas(ahead / target)
            };
        let note = format!(
            "forecast {} load {ahead:.2} in {} s",
            self.spec.metric,
            forecast.spec().horizon_s
        );
        Some((n, note))
    }

    /// Brings `wanted` within the lowest recommendation of the scale-up window and the
    /// highest of the scale-down window (the current one included).
    fn stabilize(&self, now: u64, current: u32, wanted: u32, notes: &mut Vec<String>) -> u32 {
        let up_ms = self.spec.scale_up_stabilization_ms;
        let down_ms = self.spec.scale_down_stabilization_ms;
        let within = |at: u64, window: u64| now.saturating_sub(at) < window;
        let mut up_floor = wanted;
        let mut down_ceiling = wanted;
        for &(at, replicas) in &self.history {
            if within(at, up_ms) {
                up_floor = up_floor.min(replicas);
            }
            if within(at, down_ms) {
                down_ceiling = down_ceiling.max(replicas);
            }
        }
        let stabilized = current.max(up_floor).min(down_ceiling);
        if wanted > current && stabilized < wanted {
            notes.push(format!(
                "scale-up held by stabilization window (min {up_floor} in last {} s)",
                seconds(up_ms)
            ));
        } else if wanted < current && stabilized > wanted {
            notes.push(format!(
                "scale-down held by stabilization window (max {down_ceiling} in last {} s)",
                seconds(down_ms)
            ));
        }
        stabilized
    }

    /// Applies the rate limit of the direction of the change, relative to the replica count
    /// at the start of the limit's period.
    fn rate_limit(&self, now: u64, current: u32, wanted: u32, notes: &mut Vec<String>) -> u32 {
        if wanted > current {
            let Some(limit) = self.spec.scale_up_limit else {
                return wanted;
            };
            let most = limit
                .up_to(self.period_start(now, current, limit.period_ms))
                .max(current);
            if wanted > most {
                notes.push(format!(
                    "scale-up limited to {most} by rate limit ({limit})"
                ));
                return most;
            }
        } else if wanted < current {
            let Some(limit) = self.spec.scale_down_limit else {
                return wanted;
            };
            let fewest = limit
                .down_to(self.period_start(now, current, limit.period_ms))
                .min(current);
            if wanted < fewest {
                notes.push(format!(
                    "scale-down limited to {fewest} by rate limit ({limit})"
                ));
                return fewest;
            }
        }
        wanted
    }

    /// The replica count at the start of the last `period_ms`: the current count less the
    /// changes decided since.
    fn period_start(&self, now: u64, current: u32, period_ms: u64) -> u32 {
        let mut start = i64::from(current);
        for e in &self.events {
            if now.saturating_sub(e.at) < period_ms {
                start -= i64::from(e.to) - i64::from(e.from);
            }
        }
        u32::try_from(start.max(0)).unwrap_or(u32::MAX)
    }

    /// Drops recommendations and events older than every window and period.
    fn forget(&mut self, now: u64) {
        let keep_ms = self
            .spec
            .scale_up_stabilization_ms
            .max(self.spec.scale_down_stabilization_ms);
        while self
            .history
            .front()
            .is_some_and(|&(at, _)| now.saturating_sub(at) >= keep_ms)
        {
            self.history.pop_front();
        }
        let period_ms = [self.spec.scale_up_limit, self.spec.scale_down_limit]
            .iter()
            .flatten()
            .map(|l| l.period_ms)
            .max()
            .unwrap_or(0);
        while self
            .events
            .front()
            .is_some_and(|e| now.saturating_sub(e.at) >= period_ms)
        {
            self.events.pop_front();
        }
    }

    fn keep(current: u32, reason: String) -> Decision {
        Decision {
            replicas: current,
            reason,
            changed: false,
        }
    }

    fn decide(&mut self, now: u64, current: u32, replicas: u32, reason: String) -> Decision {
        let changed = replicas != current;
        if changed {
            self.events.push_back(ScaleEvent {
                at: now,
                from: current,
                to: replicas,
            });
        }
        Decision {
            replicas,
            reason,
            changed,
        }
    }
}

/// `ceil(x)` as a replica count, forgiving floating-point error just above a whole number.
fn ceil_replicas(x: f64) -> u32 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    let rounded = (x - EPSILON * x.max(1.0)).ceil();
    // `as` saturates: anything past u32::MAX becomes u32::MAX.
    rounded.max(0.0) as u32
}

/// `1 replica`, `3 replicas`.
fn count(replicas: u32) -> String {
    if replicas == 1 {
        "1 replica".to_owned()
    } else {
        format!("{replicas} replicas")
    }
}

/// Milliseconds as seconds for messages: `300`, `1.5`.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
#[path = "autoscale_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "autoscale_predictive_tests.rs"]
mod predictive_tests;
