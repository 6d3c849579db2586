//! Pure logic of pressure detection: levels with hysteresis and dwell, trends and exhaustion
//! forecasts, robust anomaly scores, and the order in which agents are evicted. No IO, no
//! clocks, no threads: time is always a parameter (`u64` milliseconds or `f64` seconds).

mod anomaly;
mod level;
#[cfg(test)]
mod testing;
mod trend;
mod victim;

pub use anomaly::{
    AnomalyDetector, EwmaResidual, MAD_SCALE, SPREAD_FLOOR_ABS, SPREAD_FLOOR_REL, median_mad_score,
};
pub use level::{InvalidThresholds, Level, LevelTracker, Thresholds};
pub use trend::{
    Forecast, Holt, LEAK_EXTRAPOLATION, LEAK_MAX_GAP, LEAK_MIN_READINGS, LEAK_R2, LinearFit,
    MIN_R2, SAWTOOTH_DROP, Window, forecast, has_cleanup_drop, leak_forecast, linear_fit,
};
pub use victim::{Candidate, LEAK_HORIZON_S, Qos, order};
