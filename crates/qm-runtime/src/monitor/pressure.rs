//! Pressure, as the monitor sees it each cycle: for memory, cpu, disk and pids, the worse of
//! two views — *managed* (what the tracked agents use against the node's allocatable) and
//! *host* (the kernel's own figures) — turned into a level with hysteresis and dwell, a
//! trend and time-to-exhaustion forecast that ignores write-then-clean sawtooths, and a
//! robust anomaly score (`qm-pressure` does the arithmetic). The responder that acts on
//! levels (closing admission, throttling, evicting) is not built yet.

use qm_pressure::{AnomalyDetector, Level, LevelTracker, Thresholds, Window, forecast};
use qm_sys::metric::Sample;

/// One signal's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalReport {
    pub name: &'static str,
    pub level: Level,
    /// The worse of the managed and host views, 0..1.
    pub utilization: f64,
    /// What is left, in base units (bytes, cores, threads).
    pub available: f64,
    /// PSI `some` and `full` avg10, in percent, where the kernel has them.
    pub psi_some_avg10: Option<f64>,
    pub psi_full_avg10: Option<f64>,
    /// Base units per second.
    pub trend_per_s: f64,
    pub exhaustion_in_s: Option<f64>,
    pub confidence: f64,
    pub anomaly: bool,
    pub anomaly_score: f64,
}

/// The node's pressure: the worst signal's level, since when, and every signal.
#[derive(Debug, Clone, PartialEq)]
pub struct PressureReport {
    pub level: Level,
    pub since_ms: u64,
    pub signals: Vec<SignalReport>,
}

impl PressureReport {
    /// The level of the signals that gate admission (memory and pids: what cannot be
    /// squeezed; a busy cpu slows agents but does not kill them, disk is reported only).
    pub fn gating_level(&self) -> Level {
        self.gating().map(|s| s.level).max().unwrap_or(Level::Ok)
    }

    /// The signals that gate admission.
    pub fn gating(&self) -> impl Iterator<Item = &SignalReport> {
        self.signals
            .iter()
            .filter(|s| matches!(s.name, "memory" | "pids"))
    }

    /// `open`, `best-effort-paused` (warning) or `paused` (critical).
    pub fn admission(&self) -> &'static str {
        match self.gating_level() {
            Level::Ok => "open",
            Level::Warning => "best-effort-paused",
            Level::Critical => "paused",
        }
    }
}

#[derive(Debug)]
struct SignalState {
    name: &'static str,
    tracker: LevelTracker,
    window: Window,
    anomaly: AnomalyDetector,
}

/// Levels, trends and anomalies across cycles.
#[derive(Debug)]
pub(crate) struct PressureWatch {
    signals: Vec<SignalState>,
    level: Level,
    since_ms: u64,
    /// The node's allocatable cpu (cores) and memory (bytes), for the managed view.
    allocatable: (f64, f64),
}

fn find(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.desc.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
}

fn sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.desc.name == name && s.value.is_finite())
        .map(|s| s.value)
        .sum()
}

fn psi(samples: &[Sample], resource: &str, kind: &str) -> Option<f64> {
    find(
        samples,
        "qm_host_pressure_ratio",
        &[("resource", resource), ("kind", kind), ("window", "10s")],
    )
    .map(|r| r * 100.0)
}

/// (utilization, used, capacity) of the worse view, or None without data.
fn worse(host: Option<(f64, f64)>, managed: Option<(f64, f64)>) -> Option<(f64, f64, f64)> {
    let ratio = |(used, cap): (f64, f64)| (cap > 0.0).then(|| (used / cap, used, cap));
    match (host.and_then(ratio), managed.and_then(ratio)) {
        (Some(h), Some(m)) => Some(if m.0 > h.0 { m } else { h }),
        (h, m) => h.or(m),
    }
}

impl PressureWatch {
    pub(crate) fn new(thresholds: Thresholds, allocatable: (f64, f64)) -> Self {
        let signal = |name| SignalState {
            name,
            tracker: LevelTracker::new(thresholds),
            window: Window::new(120.0, 240),
            anomaly: AnomalyDetector::new(60, 6.0),
        };
        PressureWatch {
            signals: ["memory", "cpu", "disk", "pids"].map(signal).into(),
            level: Level::Ok,
            since_ms: 0,
            allocatable,
        }
    }

    /// Reads one collection; answers the report and the node's level change, if any.
    pub(crate) fn observe(
        &mut self,
        now_ms: u64,
        host: &[Sample],
        agents: &[Sample],
    ) -> (PressureReport, Option<(Level, Level)>) {
        let (cpu_cap, mem_cap) = self.allocatable;
        let managed = !agents.is_empty();
        let views = [
            worse(
                find(host, "qm_host_memory_used_bytes", &[]).zip(find(
                    host,
                    "qm_host_memory_total_bytes",
                    &[],
                )),
                managed.then(|| (sum(agents, "qm_agent_memory_bytes"), mem_cap)),
            ),
            worse(
                find(host, "qm_host_cpu_busy_cores", &[]).zip(find(host, "qm_host_cpus", &[])),
                managed.then(|| (sum(agents, "qm_agent_cpu_usage_cores"), cpu_cap)),
            ),
            host.iter()
                .filter(|s| s.desc.name == "qm_host_filesystem_used_bytes")
                .filter_map(|used| {
                    let size = host.iter().find(|s| {
                        s.desc.name == "qm_host_filesystem_size_bytes" && s.labels == used.labels
                    })?;
                    worse(Some((used.value, size.value)), None)
                })
                .max_by(|a, b| a.0.total_cmp(&b.0)),
            worse(
                find(host, "qm_host_threads", &[]).zip(find(host, "qm_host_threads_max", &[])),
                None,
            ),
        ];
        let psis = [
            (psi(host, "memory", "some"), psi(host, "memory", "full")),
            (psi(host, "cpu", "some"), psi(host, "cpu", "full")),
            (psi(host, "io", "some"), psi(host, "io", "full")),
            (None, None),
        ];
        let t_s = now_ms as f64 / 1000.0;
        let mut reports = Vec::with_capacity(4);
        for ((state, view), (some, full)) in self.signals.iter_mut().zip(views).zip(psis) {
            let Some((utilization, used, capacity)) = view else {
                continue;
            };
            state.tracker.update(now_ms, utilization);
            state.window.push(t_s, used);
            let f = forecast(&state.window, capacity);
            let (anomaly_score, anomaly) = state.anomaly.observe(used);
            reports.push(SignalReport {
                name: state.name,
                level: state.tracker.level(),
                utilization,
                available: (capacity - used).max(0.0),
                psi_some_avg10: some,
                psi_full_avg10: full,
                trend_per_s: f.trend_per_s,
                exhaustion_in_s: f.exhaustion_in_s,
                confidence: f.confidence,
                anomaly,
                anomaly_score,
            });
        }
        let level = reports.iter().map(|r| r.level).max().unwrap_or(Level::Ok);
        let change = (level != self.level).then_some((self.level, level));
        if change.is_some() || self.since_ms == 0 {
            self.since_ms = now_ms;
        }
        self.level = level;
        (
            PressureReport {
                level,
                since_ms: self.since_ms,
                signals: reports,
            },
            change,
        )
    }
}

#[cfg(test)]
mod tests {
    use qm_sys::metric::{Desc, Kind};

    use super::*;

    static USED: Desc = Desc {
        name: "qm_host_memory_used_bytes",
        help: "",
        kind: Kind::Gauge,
    };
    static TOTAL: Desc = Desc {
        name: "qm_host_memory_total_bytes",
        help: "",
        kind: Kind::Gauge,
    };
    static AGENT_MEM: Desc = Desc {
        name: "qm_agent_memory_bytes",
        help: "",
        kind: Kind::Gauge,
    };

    #[test]
    fn the_managed_view_raises_the_level_and_a_leak_is_forecast() {
        let gib = f64::from(1u32 << 30);
        // a 1 GiB world (--capacity memory=1Gi) on a host with plenty free
        let mut w = PressureWatch::new(Thresholds::default(), (2.0, gib));
        let host = [
            Sample::new(&USED, 4.0 * gib),
            Sample::new(&TOTAL, 24.0 * gib),
        ];
        let mut changes = Vec::new();
        let mut last = None;
        for s in 0..60u64 {
            // an agent leaking 10 MiB/s from 300 MiB
            let leak = 300.0 * 1048576.0 + s as f64 * 10.0 * 1048576.0;
            let agents = [Sample::with_label(&AGENT_MEM, "agent", "leaker", leak)];
            let (report, change) = w.observe(s * 1000, &host, &agents);
            changes.extend(change);
            last = Some(report);
        }
        let report = last.unwrap();
        let memory = &report.signals[0];
        assert_eq!(memory.name, "memory");
        // 890 MiB of 1 GiB: above warning's 0.80, below critical's 0.95
        assert_eq!(memory.level, Level::Warning);
        assert_eq!(changes, [(Level::Ok, Level::Warning)]);
        let truth = (1024.0 - 890.0) / 10.0;
        let eta = memory.exhaustion_in_s.unwrap();
        assert!((eta - truth).abs() < truth * 0.1, "{eta} vs {truth}");
        assert!((memory.trend_per_s - 10.0 * 1048576.0).abs() < 1048576.0);
    }
}
