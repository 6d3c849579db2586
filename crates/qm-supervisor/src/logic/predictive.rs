//! Predictive scaling: a fleet's total load (its per-replica metric × the replicas measured)
//! smoothed with Holt's double exponential smoothing (`qm_pressure::Holt`) and forecast a
//! horizon ahead (the members' start-up time, typically), so the autoscaler can add replicas
//! before a ramp arrives rather than after. The trend is believed only while a straight line
//! fits the recent load (R² of at least `qm_pressure::MIN_R2`, as for exhaustion forecasts):
//! a step or noise makes Holt's trend overshoot, and then the forecast is the smoothed level.
//! The forecast only ever scales up: removing capacity stays with the reactive algorithm and
//! its stabilization window. Pure: time is a parameter.

use qm_pressure::{Holt, MIN_R2, Window, linear_fit};

/// The longest horizon: one hour.
pub const MAX_HORIZON_S: f64 = 3600.0;
/// Default level weight, per observation (the fleet controller observes once a second).
pub const DEFAULT_ALPHA: f64 = 0.4;
/// Default trend weight, per observation.
pub const DEFAULT_BETA: f64 = 0.03;
/// A series silent this long starts over: its old level and trend say nothing about now.
const STALE_MS: u64 = 300_000;
/// The recent load a straight line must fit for the trend to be believed: at least this
/// long, and at least the horizon.
const FIT_WINDOW_S: f64 = 300.0;
/// The most samples the fit keeps (one a second for an hour).
const FIT_SAMPLES: usize = 3600;

/// How far ahead, and how smoothly, a fleet's load is forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Predictive {
    /// Seconds ahead, 1 to 3600: how long a new member takes to become useful.
    pub horizon_s: f64,
    /// Holt's level weight in (0, 1]: higher follows the latest load more closely.
    pub alpha: f64,
    /// Holt's trend weight in (0, 1]: higher turns sooner, and is fooled by noise more.
    pub beta: f64,
}

impl Predictive {
    /// A forecast `horizon_s` ahead with the default weights.
    pub fn new(horizon_s: f64) -> Self {
        Self {
            horizon_s,
            alpha: DEFAULT_ALPHA,
            beta: DEFAULT_BETA,
        }
    }

    /// Adds a (field, message) to `errors` for each bad value, fields named under
    /// `predictive.`.
    pub fn validate(&self, errors: &mut Vec<(String, String)>) {
        if !(self.horizon_s.is_finite() && (1.0..=MAX_HORIZON_S).contains(&self.horizon_s)) {
            errors.push((
                "predictive.horizon_s".to_owned(),
                format!("{} must be 1 to {MAX_HORIZON_S} (1 h)", self.horizon_s),
            ));
        }
        for (field, w) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(w.is_finite() && w > 0.0 && w <= 1.0) {
                errors.push((
                    format!("predictive.{field}"),
                    format!("{w} must be above 0 and at most 1"),
                ));
            }
        }
    }
}

/// A fleet's load, smoothed, and where it is heading.
#[derive(Debug, Clone)]
pub struct LoadForecast {
    spec: Predictive,
    holt: Holt,
    /// The recent load, for the fit that vouches for the trend.
    recent: Window,
    /// When the last load was observed (unix ms).
    last_ms: Option<u64>,
}

impl PartialEq for LoadForecast {
    /// Two forecasts are alike when their settings and their state are.
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
            && self.last_ms == other.last_ms
            && self.holt.level() == other.holt.level()
            && self.holt.trend_per_s() == other.holt.trend_per_s()
    }
}

impl LoadForecast {
    /// A forecast that has seen nothing.
    pub fn new(spec: Predictive) -> Self {
        Self {
            spec,
            holt: Holt::new(spec.alpha, spec.beta),
            recent: Self::window(&spec),
            last_ms: None,
        }
    }

    fn window(spec: &Predictive) -> Window {
        Window::new(FIT_WINDOW_S.max(spec.horizon_s), FIT_SAMPLES)
    }

    /// The settings.
    pub fn spec(&self) -> &Predictive {
        &self.spec
    }

    /// Feeds the fleet's total load at `now` (unix ms); a series silent for five minutes
    /// starts over.
    pub fn observe(&mut self, now: u64, load: f64) {
        if !load.is_finite() || load < 0.0 {
            return;
        }
        if self
            .last_ms
            .is_some_and(|last| now.saturating_sub(last) >= STALE_MS)
        {
            self.holt = Holt::new(self.spec.alpha, self.spec.beta);
            self.recent = Self::window(&self.spec);
        }
        let t_s = now as f64 / 1000.0;
        self.holt.observe(t_s, load);
        self.recent.push(t_s, load);
        self.last_ms = Some(now);
    }

    /// Whether a straight line fits the recent load well enough to believe a trend.
    pub fn trending(&self) -> bool {
        linear_fit(self.recent.samples()).is_some_and(|fit| fit.r2 >= MIN_R2)
    }

    /// The load expected `horizon_s` after the last observation (never below 0), once one was
    /// made: along Holt's level and trend while [`LoadForecast::trending`], else the level.
    pub fn ahead(&self) -> Option<f64> {
        let last = self.last_ms? as f64 / 1000.0;
        let ahead = if self.trending() {
            self.holt.predict(last + self.spec.horizon_s)
        } else {
            self.holt.level()
        };
        ahead.map(|l| l.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn validate_names_fields() {
        let mut errors = Vec::new();
        Predictive::new(60.0).validate(&mut errors);
        assert!(errors.is_empty());
        let bad = Predictive {
            horizon_s: 0.5,
            alpha: 0.0,
            beta: 1.5,
        };
        bad.validate(&mut errors);
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "predictive.horizon_s",
                "predictive.alpha",
                "predictive.beta"
            ]
        );
        assert_eq!(errors[0].1, "0.5 must be 1 to 3600 (1 h)");
        let mut errors = Vec::new();
        Predictive {
            horizon_s: f64::NAN,
            ..Predictive::new(4000.0)
        }
        .validate(&mut errors);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn a_steady_load_forecasts_itself() {
        let mut f = LoadForecast::new(Predictive::new(60.0));
        assert_eq!(f.ahead(), None);
        for s in 0..100 {
            f.observe(T0 + s * 1000, 4.0);
        }
        assert!((f.ahead().unwrap() - 4.0).abs() < 1e-9);
    }

    #[test]
    fn a_ramp_is_forecast_ahead() {
        let mut f = LoadForecast::new(Predictive::new(60.0));
        // 0.05 a second: in 60 s, 3 more.
        for s in 0..600 {
            f.observe(T0 + s * 1000, 1.0 + 0.05 * s as f64);
        }
        let now = 1.0 + 0.05 * 599.0;
        let ahead = f.ahead().unwrap();
        assert!((ahead - (now + 3.0)).abs() < 0.1, "{ahead}");
    }

    #[test]
    fn a_step_is_not_a_trend() {
        let mut f = LoadForecast::new(Predictive::new(60.0));
        for s in 0..300 {
            f.observe(T0 + s * 1000, 4.0);
        }
        // Right after a step Holt's trend is steep, but no line fits: the forecast is the level.
        for s in 300..320 {
            f.observe(T0 + s * 1000, 10.0);
        }
        assert!(f.holt.trend_per_s() > 0.05);
        assert!(!f.trending());
        let level = f.holt.level().unwrap();
        assert_eq!(f.ahead(), Some(level));
        // Along the trend it would have been far above the step.
        assert!(level < 11.0 && f.holt.predict(380.0 + T0 as f64 / 1000.0).unwrap() > 13.0);
    }

    #[test]
    fn a_silent_series_starts_over() {
        let mut f = LoadForecast::new(Predictive::new(60.0));
        for s in 0..100 {
            f.observe(T0 + s * 1000, s as f64);
        }
        f.observe(T0 + 1_000_000, 2.0);
        assert_eq!(f.ahead(), Some(2.0));
    }

    #[test]
    fn a_falling_forecast_stops_at_zero() {
        let mut f = LoadForecast::new(Predictive::new(600.0));
        for s in 0..300 {
            f.observe(T0 + s * 1000, 300.0 - s as f64);
        }
        assert_eq!(f.ahead(), Some(0.0));
    }
}
