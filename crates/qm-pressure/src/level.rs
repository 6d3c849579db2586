//! Pressure levels with hysteresis and dwell: a [`LevelTracker`] turns a stream of utilisation
//! samples (0..=1, time in milliseconds) into `ok` / `warning` / `critical` transitions that rise
//! at once when a threshold is reached and fall only below a lower threshold after the current
//! level has been held for a minimum time, so a noisy signal near a threshold does not flap.

use std::fmt;

/// How much pressure a resource is under; ordered `Ok < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    /// Below the warning threshold.
    #[default]
    Ok,
    /// At or above the warning threshold.
    Warning,
    /// At or above the critical threshold.
    Critical,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        })
    }
}

/// Enter and leave thresholds for a rising utilisation signal, plus the minimum time a level is
/// held before it may be left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Utilisation at or above which `warning` is entered.
    pub warning_enter: f64,
    /// Utilisation below which `warning` is left (must be below `warning_enter`).
    pub warning_leave: f64,
    /// Utilisation at or above which `critical` is entered.
    pub critical_enter: f64,
    /// Utilisation below which `critical` is left (must be below `critical_enter`).
    pub critical_leave: f64,
    /// Minimum time a level is held before the tracker steps down from it.
    pub min_dwell_ms: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            warning_enter: 0.80,
            warning_leave: 0.70,
            critical_enter: 0.95,
            critical_leave: 0.85,
            min_dwell_ms: 10_000,
        }
    }
}

/// Thresholds that failed [`Thresholds::validate`]; `problems` holds `(field, reason)` pairs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid thresholds: {}", describe(.problems))]
pub struct InvalidThresholds {
    /// `(field, reason)` for every problem found.
    pub problems: Vec<(String, String)>,
}

fn describe(problems: &[(String, String)]) -> String {
    problems
        .iter()
        .map(|(field, reason)| format!("{field} {reason}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Thresholds {
    /// Every problem with these thresholds as `(field, reason)`; empty when they are usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut push = |field: &str, reason: String| problems.push((field.to_owned(), reason));
        let fields = [
            ("warning_enter", self.warning_enter),
            ("warning_leave", self.warning_leave),
            ("critical_enter", self.critical_enter),
            ("critical_leave", self.critical_leave),
        ];
        for (field, value) in fields {
            if !(0.0..=1.0).contains(&value) {
                push(field, format!("must be within 0..=1, got {value}"));
            }
        }
        if self.warning_leave >= self.warning_enter {
            push(
                "warning_leave",
                format!("must be below warning_enter ({})", self.warning_enter),
            );
        }
        if self.critical_leave >= self.critical_enter {
            push(
                "critical_leave",
                format!("must be below critical_enter ({})", self.critical_enter),
            );
        }
        if self.critical_enter <= self.warning_enter {
            push(
                "critical_enter",
                format!("must be above warning_enter ({})", self.warning_enter),
            );
        }
        if self.critical_leave < self.warning_leave {
            push(
                "critical_leave",
                format!("must not be below warning_leave ({})", self.warning_leave),
            );
        }
        problems
    }

    /// These thresholds if [`validate`](Self::validate) finds nothing wrong.
    pub fn validated(self) -> Result<Self, InvalidThresholds> {
        let problems = self.validate();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(InvalidThresholds { problems })
        }
    }
}

/// Tracks the pressure level of one signal; see the module documentation.
#[derive(Debug, Clone)]
pub struct LevelTracker {
    thresholds: Thresholds,
    level: Level,
    entered_ms: Option<u64>,
}

impl LevelTracker {
    /// A tracker at `ok`. Thresholds are used as given; check them with
    /// [`Thresholds::validated`] first.
    pub fn new(thresholds: Thresholds) -> Self {
        LevelTracker {
            thresholds,
            level: Level::Ok,
            entered_ms: None,
        }
    }

    /// The current level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// When the current level was entered (`None` while still at the initial `ok`).
    pub fn entered_ms(&self) -> Option<u64> {
        self.entered_ms
    }

    /// The thresholds in use.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Feeds one sample; returns `(from, to)` when the level changes. Rising is immediate
    /// (`ok` may jump straight to `critical`); falling needs the value below the current level's
    /// leave threshold and the level held for `min_dwell_ms`, and then goes to the level the
    /// value belongs to. A non-finite value changes nothing.
    pub fn update(&mut self, now_ms: u64, utilization: f64) -> Option<(Level, Level)> {
        if !utilization.is_finite() {
            return None;
        }
        let t = &self.thresholds;
        let entered = if utilization >= t.critical_enter {
            Level::Critical
        } else if utilization >= t.warning_enter {
            Level::Warning
        } else {
            Level::Ok
        };
        let next = if entered > self.level {
            entered
        } else {
            let below_leave = match self.level {
                Level::Ok => false,
                Level::Warning => utilization < t.warning_leave,
                Level::Critical => utilization < t.critical_leave,
            };
            let held_ms = self
                .entered_ms
                .map_or(u64::MAX, |since| now_ms.saturating_sub(since));
            if below_leave && held_ms >= t.min_dwell_ms {
                if utilization >= t.warning_leave {
                    Level::Warning
                } else {
                    Level::Ok
                }
            } else {
                self.level
            }
        };
        if next == self.level {
            return None;
        }
        let from = self.level;
        self.level = next;
        self.entered_ms = Some(now_ms);
        Some((from, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds(min_dwell_ms: u64) -> Thresholds {
        Thresholds {
            min_dwell_ms,
            ..Thresholds::default()
        }
    }

    #[test]
    fn default_thresholds_are_valid() {
        assert!(Thresholds::default().validate().is_empty());
        assert!(Thresholds::default().validated().is_ok());
    }

    #[test]
    fn validate_names_fields() {
        let bad = Thresholds {
            warning_enter: 0.7,
            warning_leave: 0.8,
            critical_enter: 1.5,
            critical_leave: 0.9,
            min_dwell_ms: 0,
        };
        let fields: Vec<String> = bad.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["critical_enter", "warning_leave"]);
        let err = bad.validated().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid thresholds: critical_enter must be within")
        );
    }

    #[test]
    fn validate_rejects_critical_below_warning() {
        let bad = Thresholds {
            critical_enter: 0.75,
            critical_leave: 0.6,
            ..Thresholds::default()
        };
        let fields: Vec<String> = bad.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["critical_enter", "critical_leave"]);
    }

    #[test]
    fn rises_immediately_and_jumps_to_critical() {
        let mut t = LevelTracker::new(thresholds(10_000));
        assert_eq!(t.update(0, 0.5), None);
        assert_eq!(t.update(1, 0.97), Some((Level::Ok, Level::Critical)));
        assert_eq!(t.level(), Level::Critical);
        assert_eq!(t.entered_ms(), Some(1));
    }

    #[test]
    fn hysteresis_band_holds_the_level() {
        let mut t = LevelTracker::new(thresholds(0));
        assert_eq!(t.update(0, 0.80), Some((Level::Ok, Level::Warning)));
        // Between leave (0.70) and enter (0.80): stays warning.
        for (i, v) in [0.79, 0.75, 0.70, 0.71].into_iter().enumerate() {
            assert_eq!(t.update(1 + i as u64, v), None);
        }
        assert_eq!(t.update(10, 0.69), Some((Level::Warning, Level::Ok)));
        // Back in the band from below: stays ok.
        assert_eq!(t.update(11, 0.75), None);
    }

    #[test]
    fn steps_down_to_the_level_the_value_belongs_to() {
        let mut t = LevelTracker::new(thresholds(0));
        t.update(0, 0.99);
        // Below critical_leave but above warning_leave: warning.
        assert_eq!(t.update(1, 0.80), Some((Level::Critical, Level::Warning)));
        t.update(2, 0.99);
        // Far below everything: straight to ok.
        assert_eq!(t.update(3, 0.10), Some((Level::Critical, Level::Ok)));
    }

    #[test]
    fn dwell_delays_leaving() {
        let mut t = LevelTracker::new(thresholds(5_000));
        assert_eq!(t.update(1_000, 0.9), Some((Level::Ok, Level::Warning)));
        assert_eq!(t.update(2_000, 0.1), None);
        assert_eq!(t.update(5_999, 0.1), None);
        assert_eq!(t.update(6_000, 0.1), Some((Level::Warning, Level::Ok)));
    }

    #[test]
    fn dwell_does_not_delay_rising() {
        let mut t = LevelTracker::new(thresholds(60_000));
        t.update(0, 0.85);
        assert_eq!(t.update(1, 0.96), Some((Level::Warning, Level::Critical)));
    }

    #[test]
    fn noisy_series_around_threshold_does_not_flap() {
        let mut t = LevelTracker::new(thresholds(2_000));
        let mut changes = 0;
        for i in 0..200u64 {
            // Alternates 0.77 / 0.83 around warning_enter (0.80), well above warning_leave.
            let v = if i % 2 == 0 { 0.77 } else { 0.83 };
            if t.update(i * 500, v).is_some() {
                changes += 1;
            }
        }
        assert_eq!(changes, 1);
        assert_eq!(t.level(), Level::Warning);
    }

    #[test]
    fn noisy_series_across_the_band_is_damped_by_dwell() {
        let mut t = LevelTracker::new(thresholds(5_000));
        let mut changes = 0;
        for i in 0..100u64 {
            // Crosses both enter and leave every sample (1 s apart).
            let v = if i % 2 == 0 { 0.65 } else { 0.85 };
            if t.update(i * 1_000, v).is_some() {
                changes += 1;
            }
        }
        // Without dwell this would change on every sample (99 times).
        assert!(changes <= 100 / 5 * 2, "{changes} changes");
    }

    #[test]
    fn non_finite_is_ignored() {
        let mut t = LevelTracker::new(thresholds(0));
        assert_eq!(t.update(0, f64::NAN), None);
        assert_eq!(t.update(0, f64::INFINITY), None);
        assert_eq!(t.level(), Level::Ok);
    }
}
