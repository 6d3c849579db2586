//! Pressure, as the monitor sees it each cycle: for memory, cpu, disk and pids, the worse of
//! two views — *managed* (what the tracked agents use against the node's allocatable) and
//! *host* (the kernel's own figures) — turned into a level with hysteresis and dwell, a
//! trend and time-to-exhaustion forecast that ignores write-then-clean sawtooths, and a
//! robust anomaly score (`qm-pressure` does the arithmetic). Memory PSI raises the memory
//! level too (`some` avg10 to warning, `full` avg10 to critical, systemd-oomd's figure). Each
//! agent's memory has a trend of its own, and a forecast of when it would exhaust the node,
//! which the responder (`qm_supervisor`'s `responder.rs`) uses to pick a leaker first. An agent's forecast
//! is made on the recent run of its readings that a line fits (`qm_pressure::leak_forecast`),
//! and under memory pressure the fast path feeds it ten readings a second, so a leak that
//! runs from warning to critical in three seconds is forecast in one.

use std::collections::BTreeMap;

use qm_pressure::{
    AnomalyDetector, Forecast, Level, LevelTracker, Thresholds, Window, forecast, leak_forecast,
};
use qm_sys::metric::Sample;

/// Memory PSI levels: `some` avg10 at or above `warning_pct` is at least warning, `full` avg10
/// at or above `critical_pct` is critical (systemd-oomd acts at 60% full).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsiThresholds {
    pub warning_pct: f64,
    pub critical_pct: f64,
}

impl Default for PsiThresholds {
    fn default() -> Self {
        PsiThresholds {
            warning_pct: 20.0,
            critical_pct: 60.0,
        }
    }
}

/// How long an agent's readings are kept for its forecast, and at most how many (a minute at
/// the fast path's ten readings a second; a reading every collection otherwise).
const AGENT_WINDOW_S: f64 = 60.0;
const AGENT_WINDOW_LEN: usize = 600;

/// The agent forecasts the responder acts on at warning (`[pressure] forecast_horizon_s` and
/// `forecast_confidence`): when the fast path sees one appear, it collects at once so the
/// responder can act within a probe interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakWatch {
    /// An agent forecast to use up what the node has left within this many seconds...
    pub horizon_s: f64,
    /// ...with at least this confidence.
    pub confidence: f64,
}

impl Default for LeakWatch {
    fn default() -> Self {
        LeakWatch {
            horizon_s: 60.0,
            confidence: 0.7,
        }
    }
}

impl LeakWatch {
    /// Whether `t` is a leak the responder acts on.
    pub fn acts_on(&self, t: &AgentTrend) -> bool {
        self.horizon_s > 0.0
            && t.confidence >= self.confidence
            && t.exhaustion_in_s.is_some_and(|e| e < self.horizon_s)
    }
}

/// One agent's memory and where it is heading.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentTrend {
    pub id: String,
    pub memory_bytes: f64,
    /// Bytes per second.
    pub trend_per_s: f64,
    /// When this agent alone, at its trend, would use up what the node has left.
    pub exhaustion_in_s: Option<f64>,
    pub confidence: f64,
}

/// What the responder has done, kept with the monitor so `/metrics` and `GET /v1/pressure`
/// show it beside the levels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponderStats {
    /// Evictions under critical memory pressure.
    pub evictions_critical: u64,
    /// Evictions of an agent forecast to exhaust the node, before the reading reached critical.
    pub evictions_forecast: u64,
    /// Times an agent was throttled (memory.high or cpu.max lowered to its usage or request).
    pub throttles: u64,
    /// Agents throttled now.
    pub throttled: Vec<String>,
    /// The last eviction.
    pub last_eviction: Option<Eviction>,
}

/// One eviction.
#[derive(Debug, Clone, PartialEq)]
pub struct Eviction {
    pub agent: String,
    pub at_ms: u64,
    pub reason: String,
    /// From the collection that saw the level to the SIGTERM, in milliseconds (the probe
    /// interval before that collection is not in it; `bench/pressure-vs-earlyoom.sh`
    /// measures from the crossing itself).
    pub response_ms: u64,
}

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
    /// When the current level was entered (unix ms).
    pub since_ms: u64,
    /// Whether this reading itself is at or above the critical threshold (PSI's included),
    /// not only held at critical by hysteresis and dwell: the responder evicts only then.
    pub at_critical: bool,
}

/// The node's pressure: the worst signal's level, since when, and every signal.
#[derive(Debug, Clone, PartialEq)]
pub struct PressureReport {
    pub level: Level,
    pub since_ms: u64,
    pub signals: Vec<SignalReport>,
    /// Agents whose memory has a trend yet, the fastest-growing first.
    pub agents: Vec<AgentTrend>,
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

    /// The signal `name`.
    pub fn signal(&self, name: &str) -> Option<&SignalReport> {
        self.signals.iter().find(|s| s.name == name)
    }

    /// The trend of the agent `id`.
    pub fn agent(&self, id: &str) -> Option<&AgentTrend> {
        self.agents.iter().find(|a| a.id == id)
    }
}

#[derive(Debug)]
struct SignalState {
    name: &'static str,
    tracker: LevelTracker,
    /// The host view's readings.
    window: Window,
    /// The managed view's readings (agents against allocatable), apart: one regression over
    /// two series fits neither when the worse view changes.
    managed_window: Window,
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
    psi: PsiThresholds,
    /// Each agent's memory, read when the agents are (and by the fast path under pressure).
    agents: BTreeMap<String, Window>,
}

/// The memory utilization PSI stands for: `critical_enter` while `full` stalls are at the
/// critical share, `warning_enter` while `some` stalls are at the warning share, else 0.
fn psi_equivalent(t: &Thresholds, psi: PsiThresholds, some: Option<f64>, full: Option<f64>) -> f64 {
    if full.is_some_and(|f| f >= psi.critical_pct) {
        t.critical_enter
    } else if some.is_some_and(|s| s >= psi.warning_pct) {
        t.warning_enter
    } else {
        0.0
    }
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

/// The sum of the finite values of the series `name`.
pub(crate) fn sum(samples: &[Sample], name: &str) -> f64 {
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
/// A signal's two views, host and managed, each `(utilization, used, capacity)` where known.
#[derive(Debug, Clone, Copy)]
struct Views {
    host: Option<(f64, f64, f64)>,
    managed: Option<(f64, f64, f64)>,
}

impl Views {
    fn of(host: Option<(f64, f64)>, managed: Option<(f64, f64)>) -> Self {
        let ratio = |(used, cap): (f64, f64)| (cap > 0.0).then(|| (used / cap, used, cap));
        Self {
            host: host.and_then(ratio),
            managed: managed.and_then(ratio),
        }
    }

    /// The view closer to its capacity: what the level and the report follow.
    fn worse(self) -> Option<(f64, f64, f64)> {
        match (self.host, self.managed) {
            (Some(h), Some(m)) => Some(if m.0 > h.0 { m } else { h }),
            (h, m) => h.or(m),
        }
    }
}

impl PressureWatch {
    pub(crate) fn new(thresholds: Thresholds, psi: PsiThresholds, allocatable: (f64, f64)) -> Self {
        let signal = |name| SignalState {
            name,
            tracker: LevelTracker::new(thresholds),
            window: Window::new(120.0, 240),
            managed_window: Window::new(120.0, 240),
            anomaly: AnomalyDetector::new(60, 6.0),
        };
        PressureWatch {
            signals: ["memory", "cpu", "disk", "pids"].map(signal).into(),
            level: Level::Ok,
            since_ms: 0,
            allocatable,
            psi,
            agents: BTreeMap::new(),
        }
    }

    /// The memory signal's level now.
    pub(crate) fn memory_level(&self) -> Level {
        self.signals
            .first()
            .map_or(Level::Ok, |s| s.tracker.level())
    }

    /// The thresholds in use.
    pub(crate) fn thresholds(&self) -> Option<&Thresholds> {
        self.signals.first().map(|s| s.tracker.thresholds())
    }

    /// Memory utilization by the probe's figures: the worse of host and managed.
    pub(crate) fn memory_utilization(&self, r: &qm_sys::probe::MemoryReading) -> Option<f64> {
        let mem_cap = self.allocatable.1;
        let host = r
            .host_used
            .zip(r.host_total)
            .map(|(u, t)| (u as f64, t as f64));
        let managed = r.managed.map(|m| (m as f64, mem_cap));
        Views::of(host, managed).worse().map(|(u, _, _)| u)
    }

    /// Bytes until the probe's figures reach utilization `next`, in the tighter of the host
    /// and managed views.
    pub(crate) fn memory_headroom(&self, r: &qm_sys::probe::MemoryReading, next: f64) -> f64 {
        let room = |used: f64, cap: f64| (cap > 0.0).then(|| (next * cap - used).max(0.0));
        let host = r
            .host_used
            .zip(r.host_total)
            .and_then(|(u, t)| room(u as f64, t as f64));
        let managed = r.managed.and_then(|m| room(m as f64, self.allocatable.1));
        match (host, managed) {
            (Some(h), Some(m)) => h.min(m),
            (h, m) => h.or(m).unwrap_or(0.0),
        }
    }

    /// Reads one collection; answers the report and the node's level change, if any.
    /// `agents_fresh` says the agents were read this cycle; `managed_memory` is the managed
    /// parent group's usage where the probe reads it (else the agents' sum stands for it).
    pub(crate) fn observe(
        &mut self,
        now_ms: u64,
        host: &[Sample],
        agents: &[Sample],
        agents_fresh: bool,
        managed_memory: Option<f64>,
    ) -> (PressureReport, Option<(Level, Level)>) {
        let (cpu_cap, mem_cap) = self.allocatable;
        let managed = !agents.is_empty() || managed_memory.is_some_and(|m| m > 0.0);
        let managed_mem = managed_memory
            .unwrap_or_else(|| sum(agents, "qm_agent_memory_bytes"))
            .max(0.0);
        let views = [
            Views::of(
                find(host, "qm_host_memory_used_bytes", &[]).zip(find(
                    host,
                    "qm_host_memory_total_bytes",
                    &[],
                )),
                managed.then_some((managed_mem, mem_cap)),
            ),
            Views::of(
                find(host, "qm_host_cpu_busy_cores", &[]).zip(find(host, "qm_host_cpus", &[])),
                managed.then(|| (sum(agents, "qm_agent_cpu_usage_cores"), cpu_cap)),
            ),
            Views {
                host: host
                    .iter()
                    .filter(|s| s.desc.name == "qm_host_filesystem_used_bytes")
                    .filter_map(|used| {
                        let size = host.iter().find(|s| {
                            s.desc.name == "qm_host_filesystem_size_bytes"
                                && s.labels == used.labels
                        })?;
                        Views::of(Some((used.value, size.value)), None).host
                    })
                    .max_by(|a, b| a.0.total_cmp(&b.0)),
                managed: None,
            },
            Views::of(
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
        for ((state, views), (some, full)) in self.signals.iter_mut().zip(views).zip(psis) {
            let Some((utilization, used, capacity)) = views.worse() else {
                continue;
            };
            let t = *state.tracker.thresholds();
            let effective = if state.name == "memory" {
                utilization.max(psi_equivalent(&t, self.psi, some, full))
            } else {
                utilization
            };
            state.tracker.update(now_ms, effective);
            // each view's readings in a window of its own; the forecast is the view that runs
            // out first (the managed one when a leak is the agents')
            if let Some((_, u, _)) = views.host {
                state.window.push(t_s, u);
            }
            if let Some((_, u, _)) = views.managed {
                state.managed_window.push(t_s, u);
            }
            let host_f = views.host.map(|(_, _, cap)| forecast(&state.window, cap));
            let managed_f = views
                .managed
                .map(|(_, _, cap)| forecast(&state.managed_window, cap));
            let f = match (host_f, managed_f) {
                (Some(h), Some(m)) => match (h.exhaustion_in_s, m.exhaustion_in_s) {
                    (Some(a), Some(b)) if a < b => h,
                    (Some(_), None) => h,
                    (None, None) if views.host.map(|v| v.0) > views.managed.map(|v| v.0) => h,
                    _ => m,
                },
                (h, m) => h.or(m).unwrap_or(Forecast {
                    trend_per_s: 0.0,
                    exhaustion_in_s: None,
                    confidence: 0.0,
                }),
            };
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
                since_ms: state.tracker.entered_ms().unwrap_or(0),
                at_critical: effective >= t.critical_enter,
            });
        }
        if agents_fresh {
            self.observe_agents(t_s, agents);
        }
        let available = reports
            .iter()
            .find(|r| r.name == "memory")
            .map_or(0.0, |r| r.available);
        let agent_trends = self.agent_trends(available);
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
                agents: agent_trends,
            },
            change,
        )
    }

    fn observe_agents(&mut self, t_s: f64, agents: &[Sample]) {
        let mut seen = Vec::new();
        for s in agents
            .iter()
            .filter(|s| s.desc.name == "qm_agent_memory_bytes" && s.value.is_finite())
        {
            let Some((_, id)) = s.labels.iter().find(|(k, _)| *k == "agent") else {
                continue;
            };
            self.agents
                .entry(id.clone())
                .or_insert_with(|| Window::new(AGENT_WINDOW_S, AGENT_WINDOW_LEN))
                .push(t_s, s.value);
            seen.push(id.as_str());
        }
        seen.sort_unstable();
        self.agents
            .retain(|id, _| seen.binary_search(&id.as_str()).is_ok());
    }

    /// One fast-path reading of the agent `id`'s memory (its group's usage, the figure a
    /// collection reads), `t_s` seconds after the epoch.
    pub(crate) fn observe_agent(&mut self, t_s: f64, id: &str, bytes: f64) {
        if let Some(w) = self.agents.get_mut(id) {
            w.push(t_s, bytes);
        }
    }

    /// The agent `watch` says the responder acts on, if any, with `available` bytes left on
    /// the node (the fastest-growing first).
    pub(crate) fn leaker(&self, available: f64, watch: &LeakWatch) -> Option<String> {
        self.agent_trends(available)
            .into_iter()
            .find(|t| watch.acts_on(t))
            .map(|t| t.id)
    }

    /// Each agent's trend; its exhaustion is when it alone would use up `available` more.
    /// The forecast is judged on the recent run of readings a line fits, and its confidence
    /// on that fit and how far beyond the run it reaches (`qm_pressure::leak_forecast`).
    fn agent_trends(&self, available: f64) -> Vec<AgentTrend> {
        let mut out: Vec<AgentTrend> = self
            .agents
            .iter()
            .filter(|(_, w)| w.len() >= 3)
            .filter_map(|(id, w)| {
                let now = w.samples().back()?.1;
                let f = leak_forecast(w, now + available);
                Some(AgentTrend {
                    id: id.clone(),
                    memory_bytes: now,
                    trend_per_s: f.trend_per_s,
                    exhaustion_in_s: f.exhaustion_in_s,
                    confidence: f.confidence,
                })
            })
            .collect();
        out.sort_by(|a, b| b.trend_per_s.total_cmp(&a.trend_per_s));
        out
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
        let mut w = PressureWatch::new(Thresholds::default(), PsiThresholds::default(), (2.0, gib));
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
            let (report, change) = w.observe(s * 1000, &host, &agents, true, None);
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
        // the agent's own forecast: it alone uses up what is left at its rate
        let leaker = report.agent("leaker").unwrap();
        let eta = leaker.exhaustion_in_s.unwrap();
        assert!((eta - truth).abs() < truth * 0.1, "{eta} vs {truth}");
    }

    /// The monitor's loop in small: a collection every second (the agents read every 5 s
    /// until memory is under pressure, then every collection) and, under pressure, the fast
    /// path's readings ten times a second; answers when the leak watch first acted, with the
    /// managed utilization then, and the watch.
    fn run_world(
        agents: &[(&str, &dyn Fn(f64) -> f64)],
        until_s: f64,
    ) -> (Option<(f64, String, f64)>, PressureWatch) {
        let gib = f64::from(1u32 << 30);
        let mut w = PressureWatch::new(Thresholds::default(), PsiThresholds::default(), (2.0, gib));
        let host = [
            Sample::new(&USED, 2.0 * gib),
            Sample::new(&TOTAL, 24.0 * gib),
        ];
        let watch = LeakWatch::default();
        let mut acted = None;
        for tick in 0..=(until_s * 10.0) as u64 {
            let t = tick as f64 / 10.0;
            let total: f64 = agents.iter().map(|(_, f)| f(t)).sum();
            let under = w.memory_level() > Level::Ok;
            if tick % 10 == 0 {
                let fresh = tick % 50 == 0 || under;
                let samples: Vec<Sample> = agents
                    .iter()
                    .map(|(id, f)| Sample::with_label(&AGENT_MEM, "agent", id, f(t)))
                    .collect();
                w.observe(tick * 100, &host, &samples, fresh, Some(total));
            } else if under {
                for (id, f) in agents {
                    w.observe_agent(t, id, f(t));
                }
            }
            if acted.is_none()
                && let Some(id) = w.leaker(gib - total, &watch)
            {
                acted = Some((t, id, total / gib));
            }
        }
        (acted, w)
    }

    #[test]
    fn under_pressure_a_fast_leak_is_acted_on_at_warning_and_a_step_is_not() {
        let mib = 1048576.0;
        let keeper = |_: f64| 300.0 * mib;
        let stepper = |t: f64| if t < 42.5 { 100.0 } else { 130.0 } * mib;
        // 10 MiB/s, then 50 MiB/s: warning (0.80) to critical (0.95) in 15 s, then in 3 s
        for (rate, start) in [(10.0, 0.0), (50.0, 33.0)] {
            let leaker = move |t: f64| (10.0 + rate * (t - start).max(0.0)) * mib;
            let world: [(&str, &dyn Fn(f64) -> f64); 3] = [
                ("keeper", &keeper),
                ("stepper", &stepper),
                ("leaker", &leaker),
            ];
            let (acted, w) = run_world(&world, 60.0);
            // at warning, before critical (0.95)
            let (at, id, utilization) = acted.expect("the leak acted on");
            assert_eq!(id, "leaker", "{rate} MiB/s");
            assert!(
                (0.80..0.95).contains(&utilization),
                "{rate} MiB/s: acted on at {utilization:.3} of the node, {at} s"
            );
            let trends = w.agent_trends(0.0);
            for steady in ["keeper", "stepper"] {
                let t = trends.iter().find(|t| t.id == steady).unwrap();
                assert_eq!(t.exhaustion_in_s, None, "{t:?}");
            }
        }
    }

    #[test]
    fn a_leak_is_forecast_when_the_managed_view_overtakes_the_host_view() {
        let gib = f64::from(1u32 << 30);
        let mib = 1048576.0;
        // the host is 40% used; the managed world (1 GiB) starts below that and leaks past it,
        // so the worse view changes from the host's to the managed one half-way
        let mut w = PressureWatch::new(Thresholds::default(), PsiThresholds::default(), (2.0, gib));
        let host = [
            Sample::new(&USED, 0.4 * 24.0 * gib),
            Sample::new(&TOTAL, 24.0 * gib),
        ];
        let mut last = None;
        for s in 0..60u64 {
            let leak = 300.0 * mib + s as f64 * 10.0 * mib;
            let agents = [Sample::with_label(&AGENT_MEM, "agent", "leaker", leak)];
            last = Some(w.observe(s * 1000, &host, &agents, true, None).0);
        }
        let report = last.unwrap();
        let memory = &report.signals[0];
        let truth = (1024.0 - 890.0) / 10.0;
        let eta = memory.exhaustion_in_s.expect("the node's forecast");
        assert!((eta - truth).abs() < truth * 0.1, "{eta} vs {truth}");
        assert!(
            (memory.trend_per_s - 10.0 * mib).abs() < mib,
            "{}",
            memory.trend_per_s
        );
        assert!(memory.confidence > 0.4, "{}", memory.confidence);
    }

    #[test]
    fn memory_psi_raises_the_level_and_a_steady_agent_has_no_forecast() {
        static PSI: Desc = Desc {
            name: "qm_host_pressure_ratio",
            help: "",
            kind: Kind::Gauge,
        };
        let gib = f64::from(1u32 << 30);
        let t = Thresholds {
            min_dwell_ms: 0,
            ..Thresholds::default()
        };
        let mut w = PressureWatch::new(t, PsiThresholds::default(), (2.0, gib));
        let host = |some: f64, full: f64| {
            let psi = |kind, v| {
                let mut s = Sample::new(&PSI, v);
                s.labels = vec![
                    ("resource", "memory".to_owned()),
                    ("kind", kind),
                    ("window", "10s".to_owned()),
                ];
                s
            };
            vec![
                Sample::new(&USED, 4.0 * gib),
                Sample::new(&TOTAL, 24.0 * gib),
                psi("some".to_owned(), some),
                psi("full".to_owned(), full),
            ]
        };
        let steady = [Sample::with_label(&AGENT_MEM, "agent", "steady", 0.1 * gib)];
        let (r, _) = w.observe(1000, &host(0.0, 0.0), &steady, true, None);
        assert_eq!(r.level, Level::Ok);
        // 25% of the time some tasks stalled on memory: warning, though little is used
        let (r, change) = w.observe(2000, &host(0.25, 0.05), &steady, true, None);
        assert_eq!(r.signal("memory").unwrap().level, Level::Warning);
        assert_eq!(change, Some((Level::Ok, Level::Warning)));
        assert!(r.signal("memory").unwrap().utilization < 0.2);
        // 70% full stalls: critical
        let (r, _) = w.observe(3000, &host(0.9, 0.7), &steady, true, None);
        assert_eq!(r.signal("memory").unwrap().level, Level::Critical);
        // stalls end: back to ok (no dwell here)
        let (r, _) = w.observe(4000, &host(0.0, 0.0), &steady, true, None);
        assert_eq!(r.level, Level::Ok);
        let a = r.agent("steady").unwrap();
        assert_eq!(a.exhaustion_in_s, None);
        assert!(a.trend_per_s.abs() < 1.0);
        // the probe's managed figure stands for the agents' sum
        let (r, _) = w.observe(5000, &host(0.0, 0.0), &steady, false, Some(0.9 * gib));
        assert_eq!(r.signal("memory").unwrap().level, Level::Warning);
        // an agent that is no longer read loses its trend
        let (r, _) = w.observe(6000, &host(0.0, 0.0), &[], true, Some(0.9 * gib));
        assert!(r.agent("steady").is_none());
    }
}
