//! One tier of one series: a ring of `f32` values at aligned steps, grown lazily up to the
//! tier's point count, plus the running sum and count of the open (newest) step so that its
//! slot always holds the mean of the samples seen so far. Missing steps are NaN.

/// Slots allocated on a ring's first sample; growth then doubles up to the tier's points.
const FIRST_SLOTS: usize = 8;

/// A ring of step means. Step `b` (time / step) lives at a slot only while it is among the
/// newest `points` steps; older ones are overwritten.
#[derive(Debug)]
pub(super) struct Ring {
    /// Oldest to newest, starting at `head` once the ring has wrapped.
    values: Vec<f32>,
    /// The oldest slot once `values.len() == points`; 0 while growing.
    head: u32,
    /// Samples in the open step.
    open_count: u32,
    /// The step number (time / step) of the newest slot; meaningless while empty.
    newest: u64,
    /// Sum of the samples in the open step.
    open_sum: f64,
}

impl Ring {
    pub(super) const fn new() -> Self {
        Ring {
            values: Vec::new(),
            head: 0,
            open_count: 0,
            newest: 0,
            open_sum: 0.0,
        }
    }

    /// Adds a sample that fell in step `step_no`. A sample older than the newest step is
    /// dropped (returns false); one in the newest step joins its mean.
    pub(super) fn add(&mut self, step_no: u64, value: f64, points: usize) -> bool {
        if !self.values.is_empty() {
            if step_no < self.newest {
                return false;
            }
            if step_no == self.newest {
                self.open_sum += value;
                self.open_count = self.open_count.saturating_add(1);
                let mean = self.open_sum / f64::from(self.open_count);
                if let Some(slot) = self.slot_mut(self.newest) {
                    *slot = mean as f32;
                }
                return true;
            }
            let gap = step_no - self.newest;
            if gap >= points as u64 {
                self.values.clear();
                self.head = 0;
            } else {
                for _ in 1..gap {
                    self.push(f32::NAN, points);
                }
            }
        }
        self.newest = step_no;
        self.open_sum = value;
        self.open_count = 1;
        self.push(value as f32, points);
        true
    }

    fn push(&mut self, value: f32, points: usize) {
        let len = self.values.len();
        if len < points {
            if len == self.values.capacity() {
                let target = (len * 2).max(FIRST_SLOTS).min(points);
                self.values.reserve_exact(target - len);
            }
            self.values.push(value);
        } else if let Some(slot) = self.values.get_mut(self.head as usize) {
            *slot = value;
            self.head = ((self.head as usize + 1) % points) as u32;
        }
    }

    /// The oldest step held (only meaningful when not empty).
    fn oldest(&self) -> u64 {
        (self.newest + 1).saturating_sub(self.values.len() as u64)
    }

    fn index(&self, step_no: u64) -> Option<usize> {
        let len = self.values.len();
        if len == 0 || step_no > self.newest || step_no < self.oldest() {
            return None;
        }
        let offset = (step_no - self.oldest()) as usize;
        Some((self.head as usize + offset) % len)
    }

    fn slot_mut(&mut self, step_no: u64) -> Option<&mut f32> {
        let i = self.index(step_no)?;
        self.values.get_mut(i)
    }

    /// The values held for steps `first..=last`, oldest first, missing steps left out.
    pub(super) fn range(&self, first: u64, last: u64) -> impl Iterator<Item = (u64, f32)> + '_ {
        let (lo, hi) = if self.values.is_empty() {
            (1, 0)
        } else {
            (first.max(self.oldest()), last.min(self.newest))
        };
        (lo..=hi).filter_map(move |b| {
            let v = *self.values.get(self.index(b)?)?;
            (!v.is_nan()).then_some((b, v))
        })
    }

    /// Slots in use, missing steps included.
    pub(super) fn len(&self) -> usize {
        self.values.len()
    }

    /// Heap bytes held by the slots.
    pub(super) fn heap_bytes(&self) -> usize {
        self.values.capacity() * size_of::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(r: &Ring) -> Vec<(u64, f32)> {
        r.range(0, u64::MAX).collect()
    }

    #[test]
    fn grows_lazily_and_wraps() {
        let mut r = Ring::new();
        assert_eq!(r.heap_bytes(), 0);
        for b in 0..3 {
            r.add(b, b as f64, 20);
        }
        assert_eq!(r.heap_bytes(), FIRST_SLOTS * 4);
        for b in 3..25 {
            r.add(b, b as f64, 20);
        }
        assert_eq!(r.len(), 20);
        assert_eq!(r.heap_bytes(), 20 * 4, "never more than points");
        let v = held(&r);
        assert_eq!(v.first(), Some(&(5, 5.0)));
        assert_eq!(v.last(), Some(&(24, 24.0)));
        assert_eq!(v.len(), 20);
    }

    #[test]
    fn same_step_averages_and_late_samples_are_dropped() {
        let mut r = Ring::new();
        assert!(r.add(7, 1.0, 4));
        assert!(r.add(7, 2.0, 4));
        assert!(r.add(7, 6.0, 4));
        assert_eq!(held(&r), vec![(7, 3.0)]);
        assert!(r.add(8, 1.0, 4));
        assert!(!r.add(7, 100.0, 4));
        assert_eq!(held(&r), vec![(7, 3.0), (8, 1.0)]);
    }

    #[test]
    fn gaps_are_missing_and_long_gaps_reset() {
        let mut r = Ring::new();
        r.add(0, 1.0, 4);
        r.add(3, 2.0, 4);
        assert_eq!(r.len(), 4);
        assert_eq!(held(&r), vec![(0, 1.0), (3, 2.0)]);
        r.add(20, 5.0, 4);
        assert_eq!(r.len(), 1);
        assert_eq!(held(&r), vec![(20, 5.0)]);
        assert_eq!(r.range(0, 19).count(), 0);
    }
}
