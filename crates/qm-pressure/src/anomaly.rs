//! Robust anomaly scores: the median / MAD score of a value against a window of recent values
//! ([`median_mad_score`], driven by [`AnomalyDetector`]) and an EWMA-residual score
//! ([`EwmaResidual`]). Both floor their spread so that a flat series scores 0, never infinity.

use std::collections::VecDeque;

/// Scales the median absolute deviation to a standard deviation for normal data.
pub const MAD_SCALE: f64 = 1.4826;
/// Floor on the spread, relative to the magnitude of the centre.
pub const SPREAD_FLOOR_REL: f64 = 1e-3;
/// Floor on the spread for values near zero.
pub const SPREAD_FLOOR_ABS: f64 = 1e-9;

fn spread_floor(centre: f64) -> f64 {
    (centre.abs() * SPREAD_FLOOR_REL).max(SPREAD_FLOOR_ABS)
}

fn median_of(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// `|value − median| / (1.4826 × MAD)` against `window` (the MAD floored, see
/// [`SPREAD_FLOOR_REL`]); 0 for an empty window or a non-finite value.
pub fn median_mad_score(window: &[f64], value: f64) -> f64 {
    let mut sorted: Vec<f64> = window.iter().copied().filter(|v| v.is_finite()).collect();
    let Some(median) = median_of(&mut sorted) else {
        return 0.0;
    };
    if !value.is_finite() {
        return 0.0;
    }
    let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - median).abs()).collect();
    let mad = median_of(&mut deviations).unwrap_or(0.0);
    let spread = (MAD_SCALE * mad).max(spread_floor(median));
    (value - median).abs() / spread
}

/// Scores each value against the `window_len` values before it by median / MAD and flags
/// scores above a threshold.
#[derive(Debug, Clone)]
pub struct AnomalyDetector {
    window_len: usize,
    threshold: f64,
    recent: VecDeque<f64>,
}

impl AnomalyDetector {
    /// Fewest past values before anything is scored.
    pub const MIN_HISTORY: usize = 3;

    /// A detector over the last `window_len` values (at least [`Self::MIN_HISTORY`]) flagging
    /// scores above `threshold` (3.5 is the usual choice).
    pub fn new(window_len: usize, threshold: f64) -> Self {
        let window_len = window_len.max(Self::MIN_HISTORY);
        AnomalyDetector {
            window_len,
            threshold,
            recent: VecDeque::with_capacity(window_len),
        }
    }

    /// Scores `value` against the window, then adds it; returns `(score, is_anomaly)`. Scores
    /// are 0 until [`Self::MIN_HISTORY`] values have been seen; non-finite values score 0 and
    /// are not kept.
    pub fn observe(&mut self, value: f64) -> (f64, bool) {
        if !value.is_finite() {
            return (0.0, false);
        }
        let score = if self.recent.len() >= Self::MIN_HISTORY {
            median_mad_score(self.recent.make_contiguous(), value)
        } else {
            0.0
        };
        self.recent.push_back(value);
        while self.recent.len() > self.window_len {
            self.recent.pop_front();
        }
        (score, score > self.threshold)
    }

    /// The threshold in use.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }
}

/// Scores each value by its distance from an exponentially weighted mean, in units of the
/// exponentially weighted standard deviation of past residuals.
#[derive(Debug, Clone)]
pub struct EwmaResidual {
    alpha: f64,
    state: Option<(f64, f64)>,
}

impl EwmaResidual {
    /// Smoothing with weight `alpha` for the newest value, clamped into (0, 1].
    pub fn new(alpha: f64) -> Self {
        EwmaResidual {
            alpha: if alpha.is_finite() {
                alpha.clamp(1e-6, 1.0)
            } else {
                1.0
            },
            state: None,
        }
    }

    /// Scores `value` against the current mean and spread, then updates both. The first value
    /// (and any non-finite one) scores 0.
    pub fn observe(&mut self, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let Some((mean, var)) = self.state else {
            self.state = Some((value, 0.0));
            return 0.0;
        };
        let residual = value - mean;
        let spread = var.sqrt().max(spread_floor(mean));
        let score = residual.abs() / spread;
        let a = self.alpha;
        self.state = Some((
            mean + a * residual,
            (1.0 - a) * (var + a * residual * residual),
        ));
        score
    }

    /// The current mean, once a value has been seen.
    pub fn mean(&self) -> Option<f64> {
        self.state.map(|(mean, _)| mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::XorShift;

    #[test]
    fn median_mad_score_basics() {
        assert_eq!(median_mad_score(&[], 5.0), 0.0);
        assert_eq!(median_mad_score(&[1.0, 2.0, 3.0], f64::NAN), 0.0);
        // median 3, deviations [2,1,0,1,2] → MAD 1.
        let s = median_mad_score(&[1.0, 2.0, 3.0, 4.0, 5.0], 3.0 + MAD_SCALE * 4.0);
        assert!((s - 4.0).abs() < 1e-9);
    }

    #[test]
    fn flat_series_scores_zero() {
        let mut d = AnomalyDetector::new(20, 3.5);
        for _ in 0..100 {
            assert_eq!(d.observe(42.0), (0.0, false));
        }
        let mut e = EwmaResidual::new(0.2);
        for _ in 0..100 {
            assert_eq!(e.observe(42.0), 0.0);
        }
    }

    #[test]
    fn step_change_is_flagged_at_the_step() {
        // A stricter threshold than 3.5: a 20-value MAD is itself noisy, and the step is 50σ.
        let mut d = AnomalyDetector::new(20, 6.0);
        let mut rng = XorShift(5);
        let flagged: Vec<usize> = (0..60)
            .filter(|&i| {
                let base = if i < 40 { 100.0 } else { 150.0 };
                d.observe(base + rng.gaussish()).1
            })
            .collect();
        assert_eq!(flagged.first(), Some(&40));
        // The new level becomes normal once it fills half the window.
        assert!(
            flagged.iter().all(|&i| (40..51).contains(&i)),
            "{flagged:?}"
        );
    }

    #[test]
    fn step_from_a_flat_series_is_flagged() {
        let mut d = AnomalyDetector::new(10, 3.5);
        for _ in 0..10 {
            d.observe(1.0);
        }
        assert!(d.observe(1.5).1);
    }

    #[test]
    fn noisy_stationary_series_rarely_flags() {
        let mut d = AnomalyDetector::new(50, 3.5);
        let mut e = EwmaResidual::new(0.05);
        let mut rng = XorShift(11);
        let (mut mad_flags, mut ewma_flags) = (0, 0);
        let n = 5_000;
        for _ in 0..n {
            let v = 200.0 + 10.0 * rng.gaussish();
            mad_flags += usize::from(d.observe(v).1);
            ewma_flags += usize::from(e.observe(v) > 3.5);
        }
        assert!(mad_flags * 50 < n, "{mad_flags} median/mad flags");
        assert!(ewma_flags * 50 < n, "{ewma_flags} ewma flags");
    }

    #[test]
    fn ewma_residual_flags_a_spike() {
        let mut e = EwmaResidual::new(0.1);
        let mut rng = XorShift(9);
        for _ in 0..200 {
            e.observe(50.0 + rng.gaussish());
        }
        assert!(e.observe(70.0) > 5.0);
        assert!(e.mean().is_some());
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut d = AnomalyDetector::new(5, 3.5);
        assert_eq!(d.observe(f64::NAN), (0.0, false));
        assert_eq!(d.threshold(), 3.5);
    }
}
