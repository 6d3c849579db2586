//! Trends and exhaustion forecasts: a sliding [`Window`] of `(t_s, value)` samples bounded by
//! age and count, a least-squares [`LinearFit`] with R², Holt's double exponential smoothing
//! ([`Holt`]), and [`forecast`], which says when a value will reach its capacity only when the
//! trend is rising, the fit is good and the series is not a sawtooth (write-then-clean cycles
//! are what make a plain `predict_linear` cry wolf).

use std::collections::VecDeque;

/// Least R² for [`forecast`] to predict exhaustion.
pub const MIN_R2: f64 = 0.8;
/// A drop between consecutive samples larger than this share of the window's range marks a
/// cleanup cycle (sawtooth), and [`forecast`] then predicts no exhaustion.
pub const SAWTOOTH_DROP: f64 = 0.2;

/// Recent `(t_s, value)` samples, oldest first, bounded by age and count.
#[derive(Debug, Clone)]
pub struct Window {
    max_age_s: f64,
    max_len: usize,
    samples: VecDeque<(f64, f64)>,
}

impl Window {
    /// A window keeping samples at most `max_age_s` older than the newest and at most
    /// `max_len` of them (at least 2).
    pub fn new(max_age_s: f64, max_len: usize) -> Self {
        let max_len = max_len.max(2);
        Window {
            max_age_s: if max_age_s.is_finite() && max_age_s > 0.0 {
                max_age_s
            } else {
                f64::INFINITY
            },
            max_len,
            samples: VecDeque::with_capacity(max_len),
        }
    }

    /// Adds a sample; returns `false` (and keeps nothing) for a non-finite sample or one not
    /// newer than the last.
    pub fn push(&mut self, t_s: f64, value: f64) -> bool {
        if !t_s.is_finite() || !value.is_finite() {
            return false;
        }
        if self.samples.back().is_some_and(|&(last, _)| t_s <= last) {
            return false;
        }
        self.samples.push_back((t_s, value));
        while self.samples.len() > self.max_len {
            self.samples.pop_front();
        }
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| t_s - t > self.max_age_s)
        {
            self.samples.pop_front();
        }
        true
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> &VecDeque<(f64, f64)> {
        &self.samples
    }

    /// How many samples are held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Seconds between the oldest and newest sample.
    pub fn span_s(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(first, _)), Some(&(last, _))) => last - first,
            _ => 0.0,
        }
    }

    /// How full the window is, 0..=1: by count or by age, whichever is fuller.
    pub fn fill(&self) -> f64 {
        let by_count = self.samples.len() as f64 / self.max_len as f64;
        let by_age = self.span_s() / self.max_age_s;
        by_count.max(by_age).clamp(0.0, 1.0)
    }
}

/// A least-squares line `value = intercept + slope × t_s` and how well it fits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearFit {
    /// Change per second.
    pub slope: f64,
    /// Value at `t_s = 0`.
    pub intercept: f64,
    /// Coefficient of determination, 0..=1 (1 for a constant series, which the line fits exactly).
    pub r2: f64,
}

impl LinearFit {
    /// The line's value at `t_s`.
    pub fn at(&self, t_s: f64) -> f64 {
        self.intercept + self.slope * t_s
    }
}

/// Least-squares fit of `samples`; `None` with fewer than two distinct times.
pub fn linear_fit<'a>(
    samples: impl IntoIterator<Item = &'a (f64, f64)> + Clone,
) -> Option<LinearFit> {
    let (mut n, mut sum_t, mut sum_v) = (0.0, 0.0, 0.0);
    for &(t, v) in samples.clone() {
        n += 1.0;
        sum_t += t;
        sum_v += v;
    }
    if n < 2.0 {
        return None;
    }
    let (mean_t, mean_v) = (sum_t / n, sum_v / n);
    let (mut s_tt, mut s_tv, mut s_vv) = (0.0, 0.0, 0.0);
    for &(t, v) in samples.clone() {
        let (dt, dv) = (t - mean_t, v - mean_v);
        s_tt += dt * dt;
        s_tv += dt * dv;
        s_vv += dv * dv;
    }
    if s_tt <= 0.0 {
        return None;
    }
    let slope = s_tv / s_tt;
    let intercept = mean_v - slope * mean_t;
    let r2 = if s_vv <= f64::EPSILON * mean_v.abs().max(1.0) {
        1.0
    } else {
        ((s_tv * s_tv) / (s_tt * s_vv)).clamp(0.0, 1.0)
    };
    Some(LinearFit {
        slope,
        intercept,
        r2,
    })
}

/// Holt's linear (double exponential) smoothing over irregularly spaced samples; the trend is
/// kept per second.
#[derive(Debug, Clone)]
pub struct Holt {
    alpha: f64,
    beta: f64,
    state: Option<(f64, f64, f64)>,
}

impl Holt {
    /// Smoothing with level weight `alpha` and trend weight `beta`, each clamped into (0, 1].
    pub fn new(alpha: f64, beta: f64) -> Self {
        let clamp = |w: f64| {
            if w.is_finite() {
                w.clamp(1e-6, 1.0)
            } else {
                1.0
            }
        };
        Holt {
            alpha: clamp(alpha),
            beta: clamp(beta),
            state: None,
        }
    }

    /// Feeds one sample; a non-finite sample or one not newer than the last is ignored.
    pub fn observe(&mut self, t_s: f64, value: f64) {
        if !t_s.is_finite() || !value.is_finite() {
            return;
        }
        self.state = match self.state {
            None => Some((t_s, value, 0.0)),
            Some((last_t, level, trend)) => {
                let dt = t_s - last_t;
                if dt <= 0.0 {
                    return;
                }
                let level_next = self.alpha * value + (1.0 - self.alpha) * (level + trend * dt);
                let trend_next = self.beta * (level_next - level) / dt + (1.0 - self.beta) * trend;
                Some((t_s, level_next, trend_next))
            }
        };
    }

    /// The smoothed level, once a sample has been seen.
    pub fn level(&self) -> Option<f64> {
        self.state.map(|(_, level, _)| level)
    }

    /// The smoothed trend per second (0 before two samples).
    pub fn trend_per_s(&self) -> f64 {
        self.state.map_or(0.0, |(_, _, trend)| trend)
    }

    /// The value expected at `t_s` along the current level and trend.
    pub fn predict(&self, t_s: f64) -> Option<f64> {
        self.state
            .map(|(last_t, level, trend)| level + trend * (t_s - last_t))
    }
}

/// Where a series is heading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Fitted change per second (0 when there are too few samples).
    pub trend_per_s: f64,
    /// Seconds from the newest sample until the fitted line reaches the capacity; `None` unless
    /// the trend rises, R² ≥ [`MIN_R2`] and no sawtooth drop is in the window.
    pub exhaustion_in_s: Option<f64>,
    /// R² scaled by how full the window is, 0..=1.
    pub confidence: f64,
}

/// Whether consecutive samples in `window` drop by more than [`SAWTOOTH_DROP`] of its range.
pub fn has_cleanup_drop(window: &Window) -> bool {
    let samples = window.samples();
    let (min, max) = samples
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, v)| {
            (lo.min(v), hi.max(v))
        });
    let range = max - min;
    if range.is_nan() || range <= 0.0 {
        return false;
    }
    samples
        .iter()
        .zip(samples.iter().skip(1))
        .any(|(&(_, a), &(_, b))| a - b > SAWTOOTH_DROP * range)
}

/// Forecast for `window` against `capacity`; see [`Forecast`].
pub fn forecast(window: &Window, capacity: f64) -> Forecast {
    let Some(fit) = linear_fit(window.samples()) else {
        return Forecast {
            trend_per_s: 0.0,
            exhaustion_in_s: None,
            confidence: 0.0,
        };
    };
    let confidence = (fit.r2 * window.fill()).clamp(0.0, 1.0);
    let last_t = window.samples().back().map_or(0.0, |&(t, _)| t);
    let now = fit.at(last_t);
    // A trend too small to move the value measurably over the window counts as flat.
    let rising = fit.slope * window.span_s() > 1e-9 * now.abs().max(1.0);
    let exhaustion_in_s = if rising && fit.r2 >= MIN_R2 && !has_cleanup_drop(window) {
        Some(((capacity - now) / fit.slope).max(0.0))
    } else {
        None
    };
    Forecast {
        trend_per_s: fit.slope,
        exhaustion_in_s,
        confidence,
    }
}

/// Least readings a leak forecast stands on: a line fits ten readings of pure noise with
/// R² ≥ [`LEAK_R2`] about once in 100,000 tries.
pub const LEAK_MIN_READINGS: usize = 10;
/// Least R² of the recent run of readings a leak forecast is made from.
pub const LEAK_R2: f64 = 0.9;
/// How many times the span it was seen over a line is trusted to extend at full confidence:
/// one second of a steady leak answers for four.
pub const LEAK_EXTRAPOLATION: f64 = 4.0;
/// The widest gap between two readings of a run, as a share of the run's span: a line through
/// two clusters of readings (a step seen first by sparse, then by dense readings) is no trend.
pub const LEAK_MAX_GAP: f64 = 0.25;

/// Where an agent's memory is heading, judged for acting on at once: on the longest recent
/// run of readings (at least [`LEAK_MIN_READINGS`], no gap wider than [`LEAK_MAX_GAP`] of its
/// span) that a line fits with R² ≥ [`LEAK_R2`], so a leak that began a moment ago is seen
/// without the flat minute before it. Exhaustion is when the line reaches `capacity`;
/// confidence is R² times how far the forecast reaches beyond what was seen (full up to
/// [`LEAK_EXTRAPOLATION`] times the run's span), not a count of readings: 2 s of a 50 MiB/s
/// leak vouch for a forecast 4 s out, not for one 60 s out. No forecast on a window with a
/// cleanup drop (a sawtooth), on steps, on noise, on a flat or falling series.
pub fn leak_forecast(window: &Window, capacity: f64) -> Forecast {
    let samples = window.samples();
    let whole = linear_fit(samples);
    let mut out = Forecast {
        trend_per_s: whole.map_or(0.0, |f| f.slope),
        exhaustion_in_s: None,
        confidence: 0.0,
    };
    let Some(&(last_t, last_v)) = samples.back() else {
        return out;
    };
    if samples.len() < LEAK_MIN_READINGS || has_cleanup_drop(window) {
        return out;
    }
    // sums over the run (newest back to `k`), centred on the newest reading
    let (mut n, mut st, mut sv, mut stt, mut stv, mut svv) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let mut gap: f64 = 0.0;
    let mut newer_t = last_t;
    let mut best: Option<(LinearFit, f64)> = None;
    for &(t, v) in samples.iter().rev() {
        let (dt, dv) = (t - last_t, v - last_v);
        gap = gap.max(newer_t - t);
        newer_t = t;
        n += 1.0;
        st += dt;
        sv += dv;
        stt += dt * dt;
        stv += dt * dv;
        svv += dv * dv;
        let span = -dt;
        if (n as usize) < LEAK_MIN_READINGS || span <= 0.0 || gap > LEAK_MAX_GAP * span {
            continue;
        }
        let s_tt = stt - st * st / n;
        let s_tv = stv - st * sv / n;
        let s_vv = (svv - sv * sv / n).max(0.0);
        if s_tt <= 0.0 {
            continue;
        }
        let slope = s_tv / s_tt;
        let mean_v = last_v + sv / n;
        let r2 = if s_vv <= f64::EPSILON * mean_v.abs().max(1.0) {
            1.0
        } else {
            ((s_tv * s_tv) / (s_tt * s_vv)).clamp(0.0, 1.0)
        };
        if r2 >= LEAK_R2 {
            let intercept = mean_v - slope * (last_t + st / n);
            best = Some((
                LinearFit {
                    slope,
                    intercept,
                    r2,
                },
                span,
            ));
        }
    }
    let Some((fit, span)) = best else {
        return out;
    };
    let now = fit.at(last_t);
    out.trend_per_s = fit.slope;
    if fit.slope * span <= 1e-9 * now.abs().max(1.0) {
        return out;
    }
    let eta = ((capacity - now) / fit.slope).max(0.0);
    let reach = if eta > 0.0 {
        (LEAK_EXTRAPOLATION * span / eta).min(1.0)
    } else {
        1.0
    };
    out.exhaustion_in_s = Some(eta);
    out.confidence = (fit.r2 * reach).clamp(0.0, 1.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::XorShift;

    fn window_of(f: impl Fn(f64) -> f64, seconds: u32) -> Window {
        let mut w = Window::new(120.0, 1_000);
        for i in 0..=seconds {
            let t = f64::from(i);
            assert!(w.push(t, f(t)));
        }
        w
    }

    fn within(actual: f64, truth: f64, share: f64) -> bool {
        (actual - truth).abs() <= share * truth
    }

    #[test]
    fn window_bounds_by_age_and_count() {
        let mut w = Window::new(10.0, 5);
        for i in 0..20 {
            w.push(f64::from(i), 1.0);
        }
        assert_eq!(w.len(), 5);
        let mut w = Window::new(3.0, 100);
        for i in 0..20 {
            w.push(f64::from(i), 1.0);
        }
        assert_eq!(w.samples().front(), Some(&(16.0, 1.0)));
        assert!(!w.push(19.0, 1.0));
        assert!(!w.push(f64::NAN, 1.0));
        assert!((w.fill() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn linear_fit_recovers_a_line() {
        let w = window_of(|t| 3.0 + 2.0 * t, 10);
        let fit = linear_fit(w.samples()).unwrap();
        assert!((fit.slope - 2.0).abs() < 1e-9);
        assert!((fit.intercept - 3.0).abs() < 1e-9);
        assert!((fit.r2 - 1.0).abs() < 1e-9);
        assert!(linear_fit(&[(1.0, 1.0)]).is_none());
    }

    #[test]
    fn holt_follows_a_linear_series() {
        let mut h = Holt::new(0.5, 0.3);
        assert_eq!(h.level(), None);
        for i in 0..60 {
            h.observe(f64::from(i), 10.0 + 4.0 * f64::from(i));
        }
        assert!((h.trend_per_s() - 4.0).abs() < 1e-6);
        assert!((h.level().unwrap() - 246.0).abs() < 1e-6);
        assert!((h.predict(70.0).unwrap() - 290.0).abs() < 1e-6);
    }

    #[test]
    fn linear_leak_within_ten_percent_after_thirty_seconds() {
        let w = window_of(|t| 1_000.0 + 5.0 * t, 30);
        let f = forecast(&w, 2_000.0);
        let truth = (2_000.0 - 1_150.0) / 5.0;
        let eta = f.exhaustion_in_s.unwrap();
        assert!(within(eta, truth, 0.10), "{eta} vs {truth}");
        assert!((f.trend_per_s - 5.0).abs() < 1e-9);
        assert!(f.confidence > 0.2 && f.confidence <= 1.0);
    }

    #[test]
    fn noisy_leak_within_twenty_percent_after_sixty_seconds() {
        for seed in [1u64, 7, 42, 1234, 99_991] {
            let mut rng = XorShift(seed);
            let mut w = Window::new(120.0, 1_000);
            for i in 0..=60 {
                let t = f64::from(i);
                let clean = 100.0 + 10.0 * t;
                // ±5% noise (one standard deviation ≈ 5% / √3 of the value).
                let noise = clean * 0.05 * rng.gaussish() / 3f64.sqrt();
                w.push(t, clean + noise);
            }
            let f = forecast(&w, 2_000.0);
            let truth = (2_000.0 - 700.0) / 10.0;
            let eta = f.exhaustion_in_s.unwrap();
            assert!(within(eta, truth, 0.20), "seed {seed}: {eta} vs {truth}");
        }
    }

    #[test]
    fn sawtooth_gives_no_forecast() {
        // Ramp up for 30 s, drop back to base, repeat.
        let w = window_of(|t| 500.0 + 20.0 * (t % 30.0), 119);
        assert!(has_cleanup_drop(&w));
        assert_eq!(forecast(&w, 1_500.0).exhaustion_in_s, None);
    }

    #[test]
    fn rising_sawtooth_still_gives_no_forecast() {
        // Each cycle ends a little higher, so the line rises, but cleanups still happen.
        let w = window_of(|t| 500.0 + 2.0 * t + 20.0 * (t % 30.0), 119);
        let f = forecast(&w, 5_000.0);
        assert!(f.trend_per_s > 0.0);
        assert_eq!(f.exhaustion_in_s, None);
    }

    #[test]
    fn flat_series_gives_no_forecast() {
        let w = window_of(|_| 700.0, 60);
        let f = forecast(&w, 1_000.0);
        assert_eq!(f.exhaustion_in_s, None);
        assert!(f.trend_per_s.abs() < 1e-12);
    }

    #[test]
    fn decreasing_series_gives_no_forecast() {
        let w = window_of(|t| 900.0 - 3.0 * t, 60);
        let f = forecast(&w, 1_000.0);
        assert_eq!(f.exhaustion_in_s, None);
        assert!(f.trend_per_s < 0.0);
    }

    #[test]
    fn noise_without_trend_gives_no_forecast() {
        let mut rng = XorShift(3);
        let mut w = Window::new(120.0, 1_000);
        for i in 0..=60 {
            w.push(f64::from(i), 500.0 + 25.0 * rng.gaussish());
        }
        assert_eq!(forecast(&w, 1_000.0).exhaustion_in_s, None);
    }

    #[test]
    fn too_few_samples_give_no_forecast() {
        let mut w = Window::new(60.0, 100);
        assert_eq!(forecast(&w, 1.0).confidence, 0.0);
        w.push(0.0, 0.5);
        let f = forecast(&w, 1.0);
        assert_eq!(f.exhaustion_in_s, None);
        assert_eq!(f.trend_per_s, 0.0);
    }

    /// `f` read every `dt_s` from `from_s` to `to_s` into `w`.
    fn read_into(w: &mut Window, f: impl Fn(f64) -> f64, from_s: f64, to_s: f64, dt_s: f64) {
        let mut t = from_s;
        while t <= to_s + 1e-9 {
            assert!(w.push(t, f(t)));
            t += dt_s;
        }
    }

    const MIB: f64 = 1_048_576.0;

    #[test]
    fn a_fast_leak_read_at_ten_hertz_is_forecast_with_confidence_in_a_second() {
        // 50 MiB/s from 600 MiB towards 1 GiB: one second of readings
        let mut w = Window::new(60.0, 600);
        read_into(&mut w, |t| 600.0 * MIB + 50.0 * MIB * t, 0.0, 1.0, 0.1);
        let f = leak_forecast(&w, 1024.0 * MIB);
        let truth = (1024.0 - 650.0) / 50.0;
        let eta = f.exhaustion_in_s.expect("a forecast");
        assert!(within(eta, truth, 0.05), "{eta} vs {truth}");
        assert!(
            (f.trend_per_s - 50.0 * MIB).abs() < MIB,
            "{}",
            f.trend_per_s
        );
        assert!(f.confidence > 0.5, "{}", f.confidence);
        // the same second of readings does not vouch for a forecast far beyond it
        let far = leak_forecast(&w, 100.0 * 1024.0 * MIB);
        assert!(far.exhaustion_in_s.is_some());
        assert!(far.confidence < 0.01, "{}", far.confidence);
    }

    #[test]
    fn a_leak_that_began_a_moment_ago_is_seen_without_the_flat_minute_before_it() {
        // read every 5 s while flat, then at 10 Hz once it leaks 10 MiB/s
        let mut w = Window::new(60.0, 600);
        read_into(&mut w, |_| 300.0 * MIB, 0.0, 55.0, 5.0);
        let leak = |t: f64| 300.0 * MIB + 10.0 * MIB * (t - 56.0);
        read_into(&mut w, leak, 56.1, 60.0, 0.1);
        assert_eq!(
            forecast(&w, 1024.0 * MIB).exhaustion_in_s,
            None,
            "the old way"
        );
        let f = leak_forecast(&w, 1024.0 * MIB);
        let truth = (1024.0 - 340.0) / 10.0;
        let eta = f.exhaustion_in_s.expect("a forecast");
        assert!(within(eta, truth, 0.1), "{eta} vs {truth}");
        // four seconds seen, 68 s forecast: a fair part of the way
        assert!(
            f.confidence > 0.15 && f.confidence < 0.4,
            "{}",
            f.confidence
        );
    }

    #[test]
    fn a_step_gives_no_leak_forecast() {
        // sparse readings before the step, dense after it
        let mut w = Window::new(60.0, 600);
        read_into(&mut w, |_| 300.0 * MIB, 0.0, 55.0, 5.0);
        for (start, end) in [(56.0, 58.0), (56.0, 60.0), (59.0, 60.0), (59.5, 60.5)] {
            let mut w = w.clone();
            read_into(&mut w, |_| 500.0 * MIB, start, end, 0.1);
            let f = leak_forecast(&w, 1024.0 * MIB);
            assert_eq!(f.exhaustion_in_s, None, "{start}..{end}");
        }
        // dense readings on both sides
        for at in [1.0, 3.0, 5.0, 8.0] {
            let mut w = Window::new(60.0, 600);
            read_into(
                &mut w,
                |t| if t < at { 300.0 } else { 500.0 } * MIB,
                0.0,
                10.0,
                0.1,
            );
            assert_eq!(
                leak_forecast(&w, 1024.0 * MIB).exhaustion_in_s,
                None,
                "{at}"
            );
        }
        // a staircase of small steps is a leak all the same
        let mut w = Window::new(60.0, 600);
        read_into(&mut w, |t| (300.0 + 20.0 * t.floor()) * MIB, 0.0, 10.0, 0.1);
        assert!(leak_forecast(&w, 1024.0 * MIB).exhaustion_in_s.is_some());
    }

    #[test]
    fn sawtooths_and_noise_give_no_leak_forecast() {
        let mut w = Window::new(60.0, 600);
        read_into(
            &mut w,
            |t| (500.0 + 20.0 * (t % 15.0)) * MIB,
            0.0,
            59.0,
            0.1,
        );
        assert_eq!(leak_forecast(&w, 1024.0 * MIB).exhaustion_in_s, None);
        let mut w = Window::new(60.0, 600);
        read_into(
            &mut w,
            |t| (500.0 + t + 20.0 * (t % 15.0)) * MIB,
            0.0,
            59.0,
            0.1,
        );
        assert_eq!(leak_forecast(&w, 4096.0 * MIB).exhaustion_in_s, None);
        for seed in [1u64, 3, 7, 42, 1234, 99_991] {
            let mut rng = XorShift(seed);
            let mut w = Window::new(60.0, 600);
            for i in 0..600 {
                w.push(f64::from(i) / 10.0, (500.0 + 25.0 * rng.gaussish()) * MIB);
            }
            assert_eq!(
                leak_forecast(&w, 1024.0 * MIB).exhaustion_in_s,
                None,
                "seed {seed}"
            );
        }
        let mut w = Window::new(60.0, 600);
        read_into(&mut w, |_| 700.0 * MIB, 0.0, 10.0, 0.1);
        assert_eq!(leak_forecast(&w, 1024.0 * MIB).exhaustion_in_s, None);
        let mut w = Window::new(60.0, 600);
        read_into(&mut w, |t| (700.0 - t) * MIB, 0.0, 10.0, 0.1);
        assert_eq!(leak_forecast(&w, 1024.0 * MIB).exhaustion_in_s, None);
        // too few readings
        let mut w = Window::new(60.0, 600);
        read_into(&mut w, |t| (700.0 + 50.0 * t) * MIB, 0.0, 0.8, 0.1);
        assert_eq!(leak_forecast(&w, 1024.0 * MIB).exhaustion_in_s, None);
    }

    #[test]
    fn already_over_capacity_is_zero_seconds() {
        let w = window_of(|t| 100.0 + t, 30);
        assert_eq!(forecast(&w, 50.0).exhaustion_in_s, Some(0.0));
    }
}
