//! The engine's clock: what "now" is for leases, heartbeats, expiry and the timestamps the
//! ledger records. The daemon runs on [`SystemClock`]; tests drive a [`ManualClock`] so a
//! 30-second lease can expire without waiting 30 seconds. (Only the engine's notion of time
//! comes from here; how often its timers run is still real time.)

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qm_core::Timestamp;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug {
    /// Now, in unix milliseconds.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `ms` unix milliseconds.
    pub fn at(ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(ms)))
    }

    /// A clock standing at the system's time now.
    pub fn from_system() -> Self {
        Self::at(SystemClock.now().as_millis())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let c = ManualClock::at(1_000);
        let shared = c.clone();
        assert_eq!(c.now().as_millis(), 1_000);
        c.advance(Duration::from_secs(30));
        assert_eq!(shared.now().as_millis(), 31_000);
        let sys = SystemClock.now().as_millis();
        assert!(sys > 1_700_000_000_000, "{sys}");
    }
}
