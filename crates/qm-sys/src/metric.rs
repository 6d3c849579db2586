//! The flat form of a snapshot: a list of samples, each a described series (name, help, kind)
//! with labels and a value. The daemon stores the gauges and rates in history, evaluates alert
//! rules over them and renders gauges and counters to Prometheus; nobody downstream needs to
//! know the typed snapshots. Names follow Prometheus habits and end in a unit.

/// What a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down (bytes used, a ratio). Exported and kept in history.
    Gauge,
    /// A monotonic total since boot or process start (`_total`). Exported; not kept in
    /// history (its rate is).
    Counter,
    /// A per-second rate or a utilisation ratio derived from two counter readings. Kept in
    /// history and JSON; not exported (Prometheus derives rates itself).
    Rate,
}

/// A series' description: one static per metric name.
#[derive(Debug, PartialEq, Eq)]
pub struct Desc {
    /// `qm_host_memory_used_bytes`.
    pub name: &'static str,
    /// One sentence for `# HELP`.
    pub help: &'static str,
    /// Gauge, counter or rate.
    pub kind: Kind,
}

/// One value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Which series.
    pub desc: &'static Desc,
    /// Label pairs, in a fixed order per desc (e.g. `[("device", "sda")]`).
    pub labels: Vec<(&'static str, String)>,
    /// The value, in the unit the name ends with.
    pub value: f64,
}

impl Sample {
    /// A sample without labels.
    pub fn new(desc: &'static Desc, value: f64) -> Self {
        Sample {
            desc,
            labels: Vec::new(),
            value,
        }
    }

    /// A sample with one label.
    pub fn with_label(desc: &'static Desc, key: &'static str, value: &str, v: f64) -> Self {
        Sample {
            desc,
            labels: vec![(key, value.to_owned())],
            value: v,
        }
    }
}
