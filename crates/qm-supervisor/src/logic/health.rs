//! Health checks as a state machine: when the next probe is due (an HTTP GET or a command,
//! run by the supervisor), how probe results add up to healthy or unhealthy (after
//! `failure_threshold` consecutive failures; healthy again after one success), and heartbeat
//! deadlines for agents that report in themselves. Pure: the caller passes the time.

use std::fmt;

/// How an agent's health is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HealthKind {
    /// A GET of `url`; a 2xx or 3xx answer is healthy.
    Http {
        /// `http://host:port/path`.
        url: String,
    },
    /// A command; exit code 0 is healthy.
    Exec {
        /// The program and its arguments.
        argv: Vec<String>,
    },
    /// The agent posts heartbeats itself; no probe runs.
    Heartbeat {
        /// How often the agent promises to beat.
        every_ms: u64,
    },
}

/// A health check and its timing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthSpec {
    /// What is checked.
    pub kind: HealthKind,
    /// Time between probe starts.
    pub period_ms: u64,
    /// How long a probe may run before it counts as failed.
    pub timeout_ms: u64,
    /// Consecutive failures (or missed heartbeats) that make the agent unhealthy.
    pub failure_threshold: u32,
    /// Time after the agent starts before the first probe (or heartbeat deadline).
    pub initial_delay_ms: u64,
}

/// The longest period, timeout or delay accepted: one day.
const MAX_SPEC_MS: u64 = 86_400_000;

impl HealthSpec {
    /// A check of `kind` with the default timing: every 10 s, 1 s timeout, 3 failures.
    pub fn new(kind: HealthKind) -> Self {
        Self {
            kind,
            period_ms: 10_000,
            timeout_ms: 1_000,
            failure_threshold: 3,
            initial_delay_ms: 0,
        }
    }

    /// Every problem found, as (field, message); empty when the spec is valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut problem = |field: &str, message: String| errors.push((field.to_owned(), message));
        match &self.kind {
            HealthKind::Http { url } => {
                let host = url.strip_prefix("http://").unwrap_or_default();
                if !url.starts_with("http://") || host.is_empty() || host.starts_with('/') {
                    problem(
                        "url",
                        format!("{url:?} must start with http:// and name a host"),
                    );
                }
            }
            HealthKind::Exec { argv } => {
                if argv.first().is_none_or(|program| program.is_empty()) {
                    problem("argv", "must name a program".to_owned());
                }
            }
            HealthKind::Heartbeat { every_ms } => {
                if *every_ms == 0 || *every_ms > MAX_SPEC_MS {
                    problem("every_ms", format!("{every_ms} must be 1 to {MAX_SPEC_MS}"));
                }
            }
        }
        if self.period_ms == 0 || self.period_ms > MAX_SPEC_MS {
            problem(
                "period_ms",
                format!("{} must be 1 to {MAX_SPEC_MS}", self.period_ms),
            );
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.period_ms {
            problem(
                "timeout_ms",
                format!(
                    "{} must be at least 1 and at most period_ms ({})",
                    self.timeout_ms, self.period_ms
                ),
            );
        }
        if !(1..=100).contains(&self.failure_threshold) {
            problem(
                "failure_threshold",
                format!("{} must be 1 to 100", self.failure_threshold),
            );
        }
        if self.initial_delay_ms > MAX_SPEC_MS {
            problem(
                "initial_delay_ms",
                format!("{} must be at most {MAX_SPEC_MS}", self.initial_delay_ms),
            );
        }
        errors
    }
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    /// Healthy.
    Ok,
    /// Unhealthy, with what went wrong ("connection refused", "exit code 2").
    Failed(String),
    /// No answer within `timeout_ms`: a failure.
    TimedOut,
}

/// A change of health worth an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transition {
    /// The failures reached the threshold.
    BecameUnhealthy {
        /// The last failure's reason.
        reason: String,
        /// Failures (or missed heartbeats) in a row.
        consecutive_failures: u32,
    },
    /// A success (or a heartbeat) after unknown or unhealthy.
    BecameHealthy,
}

/// What is known of an agent's health.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Health {
    /// No verdict yet: no success, and fewer failures than the threshold.
    #[default]
    Unknown,
    /// The last probe succeeded (or a heartbeat is on time).
    Healthy,
    /// The threshold of failures was reached.
    Unhealthy {
        /// The last failure's reason.
        reason: String,
    },
}

impl Health {
    /// `unknown`, `healthy` or `unhealthy`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy { .. } => "unhealthy",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Unhealthy { reason } => write!(f, "unhealthy: {reason}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// One agent's health checking. Each run of the agent starts it afresh
/// ([`HealthState::started`]); until the first start nothing is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    spec: HealthSpec,
    /// When the current run started; `None` before the first.
    started_at: Option<u64>,
    /// When the next probe should start.
    next_due: u64,
    /// When the running probe started, if one runs.
    in_flight: Option<u64>,
    consecutive_failures: u32,
    last_beat: Option<u64>,
    health: Health,
}

impl HealthState {
    /// Checking by `spec`, for an agent not started yet.
    pub fn new(spec: HealthSpec) -> Self {
        Self {
            spec,
            started_at: None,
            next_due: 0,
            in_flight: None,
            consecutive_failures: 0,
            last_beat: None,
            health: Health::Unknown,
        }
    }

    /// Starts checking a run of the agent that started at `now` (unix ms), forgetting the
    /// previous run: health unknown, no failures, no beat, the first probe (or heartbeat
    /// deadline) after the initial delay.
    pub fn started(&mut self, now: u64) {
        self.started_at = Some(now);
        self.next_due = now.saturating_add(self.spec.initial_delay_ms);
        self.in_flight = None;
        self.consecutive_failures = 0;
        self.last_beat = None;
        self.health = Health::Unknown;
    }

    /// The spec.
    pub fn spec(&self) -> &HealthSpec {
        &self.spec
    }

    /// The current verdict.
    pub fn status(&self) -> &Health {
        &self.health
    }

    /// Failures (or, for heartbeats, missed beats at the last check) in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether a probe should start now: never for heartbeats, never while one runs, never
    /// before [`HealthState::started`].
    pub fn due(&self, now: u64) -> bool {
        self.started_at.is_some()
            && !self.is_heartbeat()
            && self.in_flight.is_none()
            && now >= self.next_due
    }

    /// Notes that a probe started at `now`. The next one is due a period after the one just
    /// due, skipping whole periods the caller missed (no burst of catch-up probes).
    pub fn probe_started(&mut self, now: u64) {
        self.in_flight = Some(now);
        let period = self.spec.period_ms.max(1);
        let behind = now.saturating_sub(self.next_due);
        let periods = behind / period + 1;
        self.next_due = self
            .next_due
            .saturating_add(periods.saturating_mul(period))
            .max(now.saturating_add(1));
    }

    /// When the running probe must be abandoned and recorded as [`ProbeResult::TimedOut`].
    pub fn probe_deadline(&self) -> Option<u64> {
        self.in_flight
            .map(|start| start.saturating_add(self.spec.timeout_ms))
    }

    /// The next time something is to be done: the running probe's deadline, the next probe,
    /// or the moment the heartbeat deadline is missed; `None` before the first start. The
    /// caller wakes then and calls [`HealthState::due`] or [`HealthState::check`].
    pub fn next_deadline(&self) -> Option<u64> {
        self.started_at?;
        Some(if self.is_heartbeat() {
            self.heartbeat_deadline().saturating_add(1)
        } else {
            self.probe_deadline().unwrap_or(self.next_due)
        })
    }

    /// Records the result of the probe that started last.
    pub fn record(&mut self, _now: u64, result: ProbeResult) -> Option<Transition> {
        self.in_flight = None;
        let reason = match result {
            ProbeResult::Ok => return self.succeed(),
            ProbeResult::Failed(reason) => reason,
            ProbeResult::TimedOut => format!("probe timed out after {} ms", self.spec.timeout_ms),
        };
        let failures = self.consecutive_failures.saturating_add(1);
        self.fail(failures, reason)
    }

    /// Records a heartbeat from the agent; for a heartbeat check, it makes the agent healthy.
    pub fn heartbeat(&mut self, now: u64) -> Option<Transition> {
        self.last_beat = Some(now.max(self.last_beat.unwrap_or(0)));
        if self.is_heartbeat() {
            self.succeed()
        } else {
            None
        }
    }

    /// For a heartbeat check: unhealthy once `now - last beat > every_ms × failure_threshold`
    /// (before the first beat, counted from the start plus the initial delay). Does nothing
    /// for probes.
    pub fn check(&mut self, now: u64) -> Option<Transition> {
        let HealthKind::Heartbeat { every_ms } = self.spec.kind else {
            return None;
        };
        let started_at = self.started_at?;
        if now <= self.heartbeat_deadline() {
            return None;
        }
        let since = self.last_beat.unwrap_or(self.next_due);
        let silent_ms = now.saturating_sub(since);
        let missed = u32::try_from(silent_ms / every_ms.max(1)).unwrap_or(u32::MAX);
        let reason = match self.last_beat {
            Some(_) => format!(
                "no heartbeat for {} s (expected every {} s)",
                silent_ms / 1000,
                every_ms as f64 / 1000.0
            ),
            None => format!(
                "no heartbeat since the start {} s ago (expected every {} s)",
                now.saturating_sub(started_at) / 1000,
                every_ms as f64 / 1000.0
            ),
        };
        self.fail(missed, reason)
    }

    fn is_heartbeat(&self) -> bool {
        matches!(self.spec.kind, HealthKind::Heartbeat { .. })
    }

    /// The last moment a heartbeat check is still healthy without a new beat.
    fn heartbeat_deadline(&self) -> u64 {
        let every_ms = match self.spec.kind {
            HealthKind::Heartbeat { every_ms } => every_ms,
            _ => self.spec.period_ms,
        };
        let since = self.last_beat.unwrap_or(self.next_due);
        since.saturating_add(every_ms.saturating_mul(u64::from(self.spec.failure_threshold)))
    }

    fn succeed(&mut self) -> Option<Transition> {
        self.consecutive_failures = 0;
        if self.health == Health::Healthy {
            return None;
        }
        self.health = Health::Healthy;
        Some(Transition::BecameHealthy)
    }

    fn fail(&mut self, failures: u32, reason: String) -> Option<Transition> {
        self.consecutive_failures = failures;
        if failures < self.spec.failure_threshold {
            return None;
        }
        let was_unhealthy = matches!(self.health, Health::Unhealthy { .. });
        self.health = Health::Unhealthy {
            reason: reason.clone(),
        };
        if was_unhealthy {
            return None;
        }
        Some(Transition::BecameUnhealthy {
            reason,
            consecutive_failures: failures,
        })
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
