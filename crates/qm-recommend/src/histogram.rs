//! A decaying histogram, as Kubernetes' VPA keeps one: exponentially growing buckets (each
//! `ratio` times the one before, from `first`), and weights that halve every `half_life_s`,
//! so recent usage counts more. Instead of decaying every weight at every sample, a sample's
//! weight grows by 2^((t - reference) / half_life); the reference moves (and every weight is
//! scaled down once) before the numbers grow too large.

/// A histogram of non-negative values whose old samples fade. It is stored as its non-zero
/// buckets ([`Stored`]), checked when read back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "Stored", try_from = "Stored")]
pub struct Histogram {
    first: f64,
    ratio: f64,
    weights: Vec<f64>,
    total: f64,
    half_life_s: f64,
    reference_s: f64,
}

/// The most buckets a histogram read back may have.
const MAX_BUCKETS: usize = 100_000;

/// A histogram as stored: its shape and its non-zero buckets.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    first: f64,
    ratio: f64,
    buckets: usize,
    total: f64,
    half_life_s: f64,
    reference_s: f64,
    /// `(bucket, weight)`, buckets ascending.
    weights: Vec<(usize, f64)>,
}

impl From<Histogram> for Stored {
    fn from(h: Histogram) -> Self {
        Stored {
            first: h.first,
            ratio: h.ratio,
            buckets: h.weights.len(),
            total: h.total,
            half_life_s: h.half_life_s,
            reference_s: h.reference_s,
            weights: h
                .weights
                .iter()
                .enumerate()
                .filter(|(_, w)| **w != 0.0)
                .map(|(i, w)| (i, *w))
                .collect(),
        }
    }
}

impl TryFrom<Stored> for Histogram {
    type Error = String;

    fn try_from(s: Stored) -> Result<Self, String> {
        let finite = [s.first, s.ratio, s.total, s.half_life_s, s.reference_s]
            .iter()
            .all(|v| v.is_finite());
        if !finite || s.first <= 0.0 || s.ratio <= 1.0 || s.total < 0.0 || s.half_life_s < 1.0 {
            return Err("a histogram's shape is not finite and positive".to_owned());
        }
        if s.buckets == 0 || s.buckets > MAX_BUCKETS {
            return Err(format!(
                "a histogram has {} buckets (1 to {MAX_BUCKETS})",
                s.buckets
            ));
        }
        let mut weights = vec![0.0; s.buckets];
        for (i, w) in s.weights {
            match weights.get_mut(i) {
                Some(slot) if w.is_finite() && w >= 0.0 => *slot = w,
                _ => return Err(format!("a histogram's bucket {i} is out of range or bad")),
            }
        }
        Ok(Histogram {
            first: s.first,
            ratio: s.ratio,
            weights,
            total: s.total,
            half_life_s: s.half_life_s,
            reference_s: s.reference_s,
        })
    }
}

/// Past this exponent the reference moves forward (2^50 keeps f64 exact enough).
const MAX_EXPONENT: f64 = 50.0;

impl Histogram {
    /// Buckets from `first` growing by `ratio` up to at least `max`; weights halving every
    /// `half_life_s` seconds.
    pub fn new(first: f64, ratio: f64, max: f64, half_life_s: f64) -> Self {
        let mut n = 1;
        let mut top = first;
        while top < max {
            top *= ratio;
            n += 1;
        }
        Histogram {
            first,
            ratio,
            weights: vec![0.0; n],
            total: 0.0,
            half_life_s: half_life_s.max(1.0),
            reference_s: 0.0,
        }
    }

    fn bucket(&self, value: f64) -> usize {
        if value <= self.first {
            return 0;
        }
        let i = ((value / self.first).ln() / self.ratio.ln()).ceil() as usize;
        i.min(self.weights.len() - 1)
    }

    /// The upper bound of bucket `i`.
    fn bound(&self, i: usize) -> f64 {
        self.first * self.ratio.powi(i32::try_from(i).unwrap_or(i32::MAX))
    }

    /// Adds `value` seen at `t_s` with `weight`.
    pub fn add(&mut self, value: f64, weight: f64, t_s: f64) {
        if !(value.is_finite() && weight.is_finite()) || value < 0.0 || weight <= 0.0 {
            return;
        }
        if self.total == 0.0 {
            self.reference_s = t_s;
        }
        let mut exponent = (t_s - self.reference_s) / self.half_life_s;
        if exponent > MAX_EXPONENT {
            // move the reference to now: every weight shrinks by the same factor
            let shrink = (-exponent).exp2();
            for w in &mut self.weights {
                *w *= shrink;
            }
            self.total *= shrink;
            self.reference_s = t_s;
            exponent = 0.0;
        }
        let w = weight * exponent.exp2();
        let b = self.bucket(value);
        self.weights[b] += w;
        self.total += w;
    }

    /// The smallest bucket bound under which a share `p` (0..=1) of the weight lies; None when
    /// empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.total <= 0.0 {
            return None;
        }
        let want = p.clamp(0.0, 1.0) * self.total;
        let mut seen = 0.0;
        for (i, w) in self.weights.iter().enumerate() {
            seen += w;
            if seen >= want && *w > 0.0 {
                return Some(self.bound(i));
            }
        }
        let last = self.weights.iter().rposition(|w| *w > 0.0)?;
        Some(self.bound(last))
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.total <= 0.0
    }

    /// The weight a sample added now would have, relative to the decayed total: how much
    /// history there is, in samples at full weight (a measure for confidence).
    pub fn effective_samples(&self, now_s: f64) -> f64 {
        if self.total <= 0.0 {
            return 0.0;
        }
        self.total / ((now_s - self.reference_s) / self.half_life_s).exp2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_fall_on_bucket_bounds_just_above_the_values() {
        let mut h = Histogram::new(0.01, 1.05, 100.0, 86_400.0);
        for i in 1..=100 {
            h.add(f64::from(i) / 100.0, 1.0, 0.0);
        }
        let p50 = h.percentile(0.5).expect("p50");
        let p90 = h.percentile(0.9).expect("p90");
        assert!((0.5..=0.53).contains(&p50), "{p50}");
        assert!((0.9..=0.95).contains(&p90), "{p90}");
        assert!(h.percentile(1.0).expect("max") >= 1.0);
        assert_eq!(Histogram::new(0.01, 1.05, 1.0, 60.0).percentile(0.5), None);
    }

    #[test]
    fn old_samples_fade_by_their_half_life() {
        let mut h = Histogram::new(0.01, 1.05, 100.0, 3600.0);
        // a day of high usage, then a day of low: the low now dominates the median
        for m in 0..1440 {
            h.add(2.0, 1.0, f64::from(m) * 60.0);
        }
        for m in 1440..2880 {
            h.add(0.2, 1.0, f64::from(m) * 60.0);
        }
        let p50 = h.percentile(0.5).expect("p50");
        assert!(p50 < 0.25, "{p50}");
        // with a long half-life the high day still weighs half
        let mut slow = Histogram::new(0.01, 1.05, 100.0, 30.0 * 86_400.0);
        for m in 0..2880 {
            slow.add(if m < 1440 { 2.0 } else { 0.2 }, 1.0, f64::from(m) * 60.0);
        }
        assert!(slow.percentile(0.6).expect("p60") > 1.0);
    }

    #[test]
    fn weights_stay_finite_over_months() {
        let mut h = Histogram::new(0.01, 1.05, 100.0, 600.0);
        for m in 0..(90 * 1440) {
            h.add(0.5, 1.0, f64::from(m) * 60.0);
        }
        let p = h.percentile(0.9).expect("p90");
        assert!((0.5..0.53).contains(&p), "{p}");
        assert!(h.effective_samples(90.0 * 86_400.0).is_finite());
    }
}
