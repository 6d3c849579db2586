//! Counters into rates: the per-second rate between two readings taken at monotonic instants,
//! with counter resets (a value lower than the last one: a device re-plugged, a process
//! restarted under the same key) answered as "no rate this time" rather than a huge negative
//! or wrapped number.

use std::time::Instant;

/// The last reading of one counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counter {
    value: u64,
    at: Instant,
}

impl Counter {
    /// The first reading.
    pub fn new(value: u64, at: Instant) -> Self {
        Counter { value, at }
    }

    /// Records a new reading and returns the per-second rate since the last one, or `None`
    /// when the counter went backwards (a reset) or no time passed.
    pub fn update(&mut self, value: u64, at: Instant) -> Option<f64> {
        let prev = *self;
        *self = Counter { value, at };
        let dt = at.checked_duration_since(prev.at)?.as_secs_f64();
        if dt <= 0.0 || value < prev.value {
            return None;
        }
        Some((value - prev.value) as f64 / dt)
    }

    /// The last value read.
    pub fn value(&self) -> u64 {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_is_per_second_and_resets_give_none() {
        let t0 = Instant::now();
        let mut c = Counter::new(100, t0);
        assert_eq!(c.update(300, t0 + Duration::from_secs(2)), Some(100.0));
        assert_eq!(c.update(50, t0 + Duration::from_secs(3)), None, "reset");
        assert_eq!(c.update(150, t0 + Duration::from_secs(4)), Some(100.0));
        assert_eq!(
            c.update(160, t0 + Duration::from_secs(4)),
            None,
            "no time passed"
        );
        assert_eq!(c.value(), 160);
    }
}
