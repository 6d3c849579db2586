//! Restart policies and crash-loop backoff, after Kubernetes' CrashLoopBackOff: when an agent
//! exits, [`Restarts::on_exit`] decides whether and when to start it again. The delay doubles
//! with each restart (10 s, 20 s, 40 s, … capped at 5 min) and returns to the first step once a
//! run lasted long enough to count as healthy. Pure: the caller passes the time.

use std::fmt;
use std::str::FromStr;

/// When an agent that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartPolicy {
    /// Never: an exit is final.
    Never,
    /// Only after a failure (non-zero exit code, a signal, the OOM killer).
    OnFailure,
    /// After any exit the user did not ask for, successful ones included.
    Always,
}

impl RestartPolicy {
    /// `never`, `on-failure` or `always`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a restart policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a restart policy: use never, on-failure or always")]
pub struct ParseRestartPolicyError(pub String);

impl FromStr for RestartPolicy {
    type Err = ParseRestartPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "never" => Ok(RestartPolicy::Never),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            _ => Err(ParseRestartPolicyError(s.to_owned())),
        }
    }
}

/// How restarts are spaced out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackoffConfig {
    /// The delay before the first restart after a reset; each further restart doubles it.
    pub initial_ms: u64,
    /// The longest delay.
    pub max_ms: u64,
    /// A run at least this long counts as healthy: it resets the delay to `initial_ms` and
    /// clears the crash loop.
    pub reset_after_ms: u64,
    /// After this many consecutive restarts of short runs the agent is crash-looping.
    pub crash_loop_after: u32,
    /// After this many consecutive restarts of short runs, the next short run's exit gives up
    /// instead of restarting; `None` (the default, like Kubernetes) never gives up.
    pub give_up_after: Option<u32>,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_ms: 10_000,
            max_ms: 300_000,
            reset_after_ms: 600_000,
            crash_loop_after: 5,
            give_up_after: None,
        }
    }
}

/// The longest delay or reset time accepted: one day.
const MAX_CONFIG_MS: u64 = 86_400_000;

impl BackoffConfig {
    /// Every problem found, as (field, message); empty when the configuration is valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut problem = |field: &str, message: String| errors.push((field.to_owned(), message));
        if self.initial_ms == 0 || self.initial_ms > MAX_CONFIG_MS {
            problem(
                "initial_ms",
                format!("{} must be 1 to {MAX_CONFIG_MS}", self.initial_ms),
            );
        }
        if self.max_ms < self.initial_ms || self.max_ms > MAX_CONFIG_MS {
            problem(
                "max_ms",
                format!(
                    "{} must be at least initial_ms ({}) and at most {MAX_CONFIG_MS}",
                    self.max_ms, self.initial_ms
                ),
            );
        }
        if self.reset_after_ms == 0 || self.reset_after_ms > MAX_CONFIG_MS {
            problem(
                "reset_after_ms",
                format!("{} must be 1 to {MAX_CONFIG_MS}", self.reset_after_ms),
            );
        }
        if self.crash_loop_after == 0 {
            problem("crash_loop_after", "0 must be at least 1".to_owned());
        }
        if self.give_up_after == Some(0) {
            problem(
                "give_up_after",
                "0 must be at least 1 (leave it unset to never give up)".to_owned(),
            );
        }
        errors
    }

    /// The delay before restart number `attempt` since the last reset (1-based):
    /// `initial × 2^(attempt-1)`, at most `max_ms`.
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1);
        let delay = if doublings >= 64 {
            u64::MAX
        } else {
            self.initial_ms.saturating_mul(1u64 << doublings)
        };
        delay.min(self.max_ms)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitKind {
    /// Exit code 0.
    Success,
    /// A non-zero exit code, a signal, the OOM killer.
    Failure,
    /// The user asked for the stop, or the agent was evicted: never restarted.
    Stopped,
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Start the agent again at `at` (unix ms); `attempt` counts restarts since the last
    /// healthy run (1 for the first).
    Restart {
        /// When to start it.
        at: u64,
        /// The restart's number since the last reset, from 1.
        attempt: u32,
    },
    /// The agent keeps failing quickly and [`BackoffConfig::give_up_after`] is reached: it
    /// stays down (failed).
    GiveUp,
    /// The exit is final by policy or by request: nothing to do.
    Done,
}

/// One agent's restart bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restarts {
    policy: RestartPolicy,
    config: BackoffConfig,
    /// Every restart decided, ever.
    total: u32,
    /// Restarts since the last reset (a healthy run): the backoff step.
    attempt: u32,
    /// Consecutive restarts whose runs were shorter than `reset_after_ms`.
    short_streak: u32,
}

impl Restarts {
    /// Fresh bookkeeping: no restart yet.
    pub fn new(config: BackoffConfig, policy: RestartPolicy) -> Self {
        Self {
            policy,
            config,
            total: 0,
            attempt: 0,
            short_streak: 0,
        }
    }

    /// Bookkeeping carried over from an earlier daemon: `total` restarts so far, and whether
    /// the agent was crash looping (it then keeps the backoff step of a loop).
    pub fn resume(
        config: BackoffConfig,
        policy: RestartPolicy,
        total: u32,
        crash_loop: bool,
    ) -> Self {
        let streak = if crash_loop {
            config.crash_loop_after
        } else {
            0
        };
        Self {
            policy,
            config,
            total,
            attempt: streak,
            short_streak: streak,
        }
    }

    /// The policy.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// The backoff configuration.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// How many restarts were decided, in all.
    pub fn restarts(&self) -> u32 {
        self.total
    }

    /// Restarts since the last healthy run (the backoff step).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the last `crash_loop_after` (or more) restarts all followed runs shorter than
    /// `reset_after_ms`; a long run clears it.
    pub fn crash_looping(&self) -> bool {
        self.short_streak >= self.config.crash_loop_after
    }

    /// Decides what follows a run that started at `started_at` and ended at `now` (unix ms).
    pub fn on_exit(&mut self, now: u64, exit: ExitKind, started_at: u64) -> Decision {
        let ran_ms = now.saturating_sub(started_at);
        let healthy_run = ran_ms >= self.config.reset_after_ms;
        if healthy_run {
            self.attempt = 0;
            self.short_streak = 0;
        }
        let restart = match (exit, self.policy) {
            (ExitKind::Stopped, _) | (_, RestartPolicy::Never) => false,
            (ExitKind::Success, RestartPolicy::OnFailure) => false,
            (ExitKind::Success | ExitKind::Failure, _) => true,
        };
        if !restart {
            return Decision::Done;
        }
        if !healthy_run {
            if self
                .config
                .give_up_after
                .is_some_and(|limit| self.short_streak >= limit)
            {
                return Decision::GiveUp;
            }
            self.short_streak = self.short_streak.saturating_add(1);
        }
        self.attempt = self.attempt.saturating_add(1);
        self.total = self.total.saturating_add(1);
        Decision::Restart {
            at: now.saturating_add(self.config.delay_ms(self.attempt)),
            attempt: self.attempt,
        }
    }
}

#[cfg(test)]
#[path = "backoff_tests.rs"]
mod tests;
