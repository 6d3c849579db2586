//! The monitor: a thread of its own (never the async runtime) that runs the host and agent
//! collectors at an interval, publishes each collection for lock-free readers (an `ArcSwap`),
//! records history and evaluates alert rules, whose transitions become `alert.firing` and
//! `alert.resolved` events. Readers never wait for a collection: they load the last one.

pub mod alerts;
mod fast;
pub mod history;
pub mod pressure;

pub use fast::ManagedFiles;

use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use qm_proto::{AlertDoc, EventDoc, format_rfc3339};
use qm_sys::Paths;
use qm_sys::agent::{AgentCollector, Target};
use qm_sys::host::HostCollector;
use qm_sys::metric::{Desc, Kind, Sample};

use alerts::{Alert, AlertEngine, Rule, Transition};
use history::{History, HistoryConfig, HistoryStats, Query, SeriesData};

/// Where the monitor's events go (`pressure.changed`, `alert.*`): the engine's event hub,
/// which numbers and broadcasts them. The monitor publishes; it never writes state.
pub trait EventSink: Send + Sync {
    /// Publishes `events`, in order.
    fn publish(&self, events: Vec<EventDoc>);
}

/// How the monitor runs.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Time between collections of the host.
    pub interval: Duration,
    /// Time between collections of the tracked agents (a newly tracked agent is read at
    /// once while at most 64 are tracked); rounded to a multiple of `interval`. Reading 1,000 agents' cgroups costs
    /// 20-30 ms of CPU on a v1 host, so the default, 5 s, keeps 1,000 agents near 0.5% of a
    /// core (cAdvisor's housekeeping default is 10 s).
    pub agent_interval: Duration,
    /// Where /proc, /sys and the cgroup mount are.
    pub paths: Paths,
    /// History tiers and bounds.
    pub history: HistoryConfig,
    /// Alert rules.
    pub rules: Vec<Rule>,
    /// Pressure levels' thresholds.
    pub thresholds: qm_pressure::Thresholds,
    /// Memory PSI's share in the memory level.
    pub psi: pressure::PsiThresholds,
    /// Time between two readings of the memory probe (host memory and the managed parent
    /// group) between collections; zero turns the fast path off.
    pub probe_interval: Duration,
    /// The local node's allocatable cpu (cores) and memory (bytes): the managed view of
    /// pressure measures the agents against it.
    pub allocatable: (f64, f64),
    /// The agent forecasts the responder acts on (the fast path collects at once when one
    /// appears under pressure).
    pub leak: pressure::LeakWatch,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: Duration::from_secs(1),
            agent_interval: Duration::from_secs(5),
            paths: Paths::default(),
            history: HistoryConfig::default(),
            rules: alerts::default_rules(),
            thresholds: qm_pressure::Thresholds::default(),
            psi: pressure::PsiThresholds::default(),
            probe_interval: Duration::from_millis(100),
            allocatable: (0.0, 0.0),
            leak: pressure::LeakWatch::default(),
        }
    }
}

/// The last collection.
#[derive(Debug, Default)]
pub struct Latest {
    /// When (unix milliseconds); None before the first collection.
    pub at_ms: Option<u64>,
    /// Host and the daemon's own series.
    pub samples: Vec<Sample>,
    /// The agents' series from their last collection (every `agent_interval`).
    pub agent_samples: Arc<Vec<Sample>>,
    /// What reading the host and agents cost: wall and CPU time of the monitor thread.
    pub collection_wall: Duration,
    pub collection_cpu: Duration,
    /// Agents tracked.
    pub agents: usize,
    /// The node's pressure.
    pub pressure: Option<pressure::PressureReport>,
}

impl Latest {
    /// Every series: the host's and the daemon's, then the agents'.
    pub fn all(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().chain(self.agent_samples.iter())
    }

    /// The value of the agent series `name` for the agent `id`.
    pub fn agent_value(&self, name: &str, id: &str) -> Option<f64> {
        self.agent_samples
            .iter()
            .find(|s| s.desc.name == name && s.labels.iter().any(|(k, v)| *k == "agent" && v == id))
            .map(|s| s.value)
    }

    /// The value of the unlabelled series `name`.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.desc.name == name && s.labels.is_empty())
            .map(|s| s.value)
    }
}

/// Why the monitor did not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A rule or the history configuration is invalid; the message names the field.
    #[error("{0}")]
    Config(String),
    /// The thread could not be spawned.
    #[error("cannot start the monitor thread: {0}")]
    Thread(String),
}

/// A handle on the running monitor; cheap to clone.
#[derive(Debug, Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    latest: ArcSwap<Latest>,
    history: RwLock<History>,
    alerts: RwLock<Vec<Alert>>,
    targets: Mutex<Vec<Target>>,
    stopping: Mutex<bool>,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set by the supervisor: the managed parent group's files, taken by the thread.
    managed: Mutex<Option<ManagedFiles>>,
    /// Woken after each collection that finds memory or pids under pressure, or a level
    /// change: the responder waits on it.
    pressure_wake: Arc<tokio::sync::Notify>,
    responder: Mutex<pressure::ResponderStats>,
}

static COLLECTION_SECONDS: Desc = Desc {
    name: "qm_monitor_collection_seconds",
    help: "Wall time of the last collection of host and agent metrics.",
    kind: Kind::Gauge,
};
static COLLECTION_CPU_SECONDS: Desc = Desc {
    name: "qm_monitor_collection_cpu_seconds",
    help: "CPU time the last collection of host and agent metrics cost the monitor thread.",
    kind: Kind::Gauge,
};
static COLLECTIONS: Desc = Desc {
    name: "qm_monitor_collections_total",
    help: "Collections of host and agent metrics since the daemon started.",
    kind: Kind::Counter,
};
static TRACKED: Desc = Desc {
    name: "qm_monitor_tracked_agents",
    help: "Agents whose process trees or cgroups the monitor reads.",
    kind: Kind::Gauge,
};
static PROBES: Desc = Desc {
    name: "qm_monitor_probes_total",
    help: "Readings of the memory probe (host memory and the managed agents' parent group), in and between collections.",
    kind: Kind::Counter,
};
static AGENT_PROBES: Desc = Desc {
    name: "qm_monitor_agent_probes_total",
    help: "Readings of an agent's memory by the probe between collections (under memory pressure, every probe interval).",
    kind: Kind::Counter,
};
static URGENT: Desc = Desc {
    name: "qm_monitor_urgent_collections_total",
    help: "Collections made early because memory crossed a threshold or a PSI trigger fired.",
    kind: Kind::Counter,
};
static TRIGGERS: Desc = Desc {
    name: "qm_monitor_psi_triggers",
    help: "PSI triggers the monitor waits on.",
    kind: Kind::Gauge,
};
static HISTORY_SERIES: Desc = Desc {
    name: "qm_history_series",
    help: "Series held in the in-memory history.",
    kind: Kind::Gauge,
};
static HISTORY_BYTES: Desc = Desc {
    name: "qm_history_memory_bytes",
    help: "Heap memory the in-memory history holds.",
    kind: Kind::Gauge,
};

impl Monitor {
    /// Validates the configuration and starts the monitor thread; alert transitions are
    /// published on `hub`.
    pub fn start(config: MonitorConfig, hub: Arc<dyn EventSink>) -> Result<Self, MonitorError> {
        let problems = config.history.validate();
        if let Some(first) = problems.first() {
            return Err(MonitorError::Config(format!("history: {first}")));
        }
        let engine = AlertEngine::new(config.rules.clone())
            .map_err(|e| MonitorError::Config(format!("alert rules: {e}")))?;
        let shared = Arc::new(Shared {
            latest: ArcSwap::from_pointee(Latest::default()),
            history: RwLock::new(History::new(config.history.clone())),
            alerts: RwLock::new(Vec::new()),
            targets: Mutex::new(Vec::new()),
            stopping: Mutex::new(false),
            wake: Condvar::new(),
            thread: Mutex::new(None),
            managed: Mutex::new(None),
            pressure_wake: Arc::new(tokio::sync::Notify::new()),
            responder: Mutex::new(pressure::ResponderStats::default()),
        });
        let loop_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("qm-monitor".to_owned())
            .spawn(move || run(&loop_shared, &config, engine, hub.as_ref()))
            .map_err(|e| MonitorError::Thread(e.to_string()))?;
        if let Ok(mut t) = shared.thread.lock() {
            *t = Some(handle);
        }
        Ok(Monitor { shared })
    }

    /// The last collection (never blocks on the collector).
    pub fn latest(&self) -> Arc<Latest> {
        self.shared.latest.load_full()
    }

    /// Points of the series matching `q`.
    pub fn query(&self, q: &Query) -> Vec<SeriesData> {
        self.shared
            .history
            .read()
            .map(|h| h.query(q))
            .unwrap_or_default()
    }

    /// The series names history holds (with how many label sets each), its statistics and its
    /// heap size.
    pub fn series(&self) -> (Vec<(String, usize)>, HistoryStats, usize) {
        match self.shared.history.read() {
            Ok(h) => (h.names(), h.stats(), h.memory_bytes()),
            Err(_) => (Vec::new(), HistoryStats::default(), 0),
        }
    }

    /// Pending and firing alerts, then the recently resolved ones.
    pub fn alerts(&self) -> Vec<Alert> {
        self.shared
            .alerts
            .read()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Reads the managed agents' memory from their parent group between collections (and
    /// registers a PSI trigger on its `memory.pressure`).
    pub fn set_managed(&self, files: ManagedFiles) {
        if let Ok(mut m) = self.shared.managed.lock() {
            *m = Some(files);
        }
    }

    /// Notified after a collection that finds memory or pids under pressure or a level
    /// change (a stored permit when nobody waits).
    pub fn pressure_wake(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.shared.pressure_wake)
    }

    /// What the pressure responder has done.
    pub fn responder(&self) -> pressure::ResponderStats {
        self.shared
            .responder
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Records what the pressure responder did.
    pub fn update_responder(&self, f: impl FnOnce(&mut pressure::ResponderStats)) {
        if let Ok(mut r) = self.shared.responder.lock() {
            f(&mut r);
        }
    }

    /// Starts reading `target` (replacing a target with the same id).
    pub fn track(&self, target: Target) {
        if let Ok(mut t) = self.shared.targets.lock() {
            t.retain(|x| x.id != target.id);
            t.push(target);
        }
    }

    /// Stops reading the target `id`.
    pub fn untrack(&self, id: &str) {
        if let Ok(mut t) = self.shared.targets.lock() {
            t.retain(|x| x.id != id);
        }
    }

    /// Stops the thread and waits for it.
    pub fn stop(&self) {
        if let Ok(mut s) = self.shared.stopping.lock() {
            *s = true;
        }
        self.shared.wake.notify_all();
        let handle = self.shared.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Sleeps until `deadline` or until stopped; true when stopped.
    fn wait(shared: &Shared, deadline: Instant) -> bool {
        let Ok(mut stopping) = shared.stopping.lock() else {
            return true;
        };
        loop {
            if *stopping {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match shared.wake.wait_timeout(stopping, deadline - now) {
                Ok((guard, _)) => stopping = guard,
                Err(_) => return true,
            }
        }
    }
}

fn run(shared: &Shared, config: &MonitorConfig, mut engine: AlertEngine, hub: &dyn EventSink) {
    let mut host = HostCollector::new(&config.paths);
    let mut agents = AgentCollector::new(&config.paths);
    let mut collections = 0u64;
    let mut capacity = 256;
    let mut next = Instant::now();
    // agents are read every `agent_interval`; in between their last samples stand
    let mut agent_samples: Arc<Vec<Sample>> = Arc::new(Vec::new());
    let mut watch = pressure::PressureWatch::new(config.thresholds, config.psi, config.allocatable);
    let mut fast = fast::FastPath::new(
        config.probe_interval,
        config.paths.proc.clone(),
        config.leak,
    );
    let mut urgent = false;
    let agent_rules = engine
        .rules()
        .iter()
        .any(|r| r.series.starts_with("qm_agent_"));
    let mut agent_due: Option<Instant> = None;
    let mut last_ids: Vec<String> = Vec::new();
    loop {
        let cpu0 = qm_sys::process::thread_cpu_time();
        let now = Instant::now();
        let at_ms = qm_proto::unix_ms();
        let targets = shared.targets.lock().map(|t| t.clone()).unwrap_or_default();
        let mut samples = Vec::with_capacity(capacity);
        host.collect(now).samples(&mut samples);
        // a new agent is read at once while that is cheap; in a burst of spawns into a big
        // fleet, at the next agent tick
        let changed = targets.len() <= 64
            && (targets.len() != last_ids.len()
                || targets.iter().zip(&last_ids).any(|(t, id)| &t.id != id));
        if let Some(files) = shared.managed.lock().ok().and_then(|mut m| m.take()) {
            fast.set_managed(files);
        }
        // under memory pressure the agents are read every cycle: the responder chooses on
        // fresh figures
        let fresh = agent_due.is_none_or(|t| now >= t)
            || changed
            || urgent
            || watch.memory_level() > qm_pressure::Level::Ok;
        if fresh {
            let mut collected = Vec::with_capacity(agent_samples.len());
            qm_sys::agent::samples(&agents.collect(&targets, now), &mut collected);
            agent_samples = Arc::new(collected);
            fast.set_agents(agents.memory_files(&targets));
            agent_due =
                Some(now + config.agent_interval.max(config.interval) - config.interval / 2);
            last_ids = targets.iter().map(|t| t.id.clone()).collect();
        }
        if let Some(me) = qm_sys::process::usage(&config.paths.proc, "self") {
            me.samples(&mut samples);
        }
        let managed =
            fast.managed_now(fresh.then(|| pressure::sum(&agent_samples, "qm_agent_memory_bytes")));
        let (report, change) = watch.observe(at_ms, &samples, &agent_samples, fresh, managed);
        let stats = shared
            .responder
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        pressure_samples(&report, &stats, &mut samples);
        if let Some((from, to)) = change {
            let worst = report
                .signals
                .iter()
                .filter(|s| s.level == to)
                .map(|s| format!("{} {:.0}%", s.name, s.utilization * 100.0))
                .collect::<Vec<_>>()
                .join(", ");
            hub.publish(vec![EventDoc {
                kind: "pressure.changed".to_owned(),
                at: format_rfc3339(at_ms),
                reason: Some(format!("{from} -> {to}: {worst}")),
                ..EventDoc::default()
            }]);
        }
        let wall = now.elapsed();
        let cpu = qm_sys::process::thread_cpu_time().saturating_sub(cpu0);
        collections += 1;
        samples.push(Sample::new(&COLLECTION_SECONDS, wall.as_secs_f64()));
        samples.push(Sample::new(&COLLECTION_CPU_SECONDS, cpu.as_secs_f64()));
        samples.push(Sample::new(&COLLECTIONS, collections as f64));
        samples.push(Sample::new(&TRACKED, targets.len() as f64));
        samples.push(Sample::new(&PROBES, fast.probes as f64));
        samples.push(Sample::new(&AGENT_PROBES, fast.agent_reads as f64));
        samples.push(Sample::new(&URGENT, fast.urgent as f64));
        samples.push(Sample::new(&TRIGGERS, fast.triggers() as f64));
        if let Ok(mut h) = shared.history.write() {
            h.record(at_ms, &samples);
            if fresh {
                h.record(at_ms, &agent_samples);
            }
            samples.push(Sample::new(&HISTORY_SERIES, h.stats().series as f64));
            samples.push(Sample::new(&HISTORY_BYTES, h.memory_bytes() as f64));
        }
        // agent series are judged when read; host series every cycle
        let transitions = if agent_rules && fresh {
            let all: Vec<Sample> = samples
                .iter()
                .chain(agent_samples.iter())
                .cloned()
                .collect();
            engine.evaluate(at_ms, &all)
        } else if agent_rules {
            Vec::new()
        } else {
            engine.evaluate(at_ms, &samples)
        };
        if let Ok(mut a) = shared.alerts.write() {
            *a = engine.alerts();
        }
        if !transitions.is_empty() {
            hub.publish(transitions.iter().map(|t| alert_event(t, at_ms)).collect());
        }
        capacity = samples.len();
        let wake = report.gating_level() > qm_pressure::Level::Ok || change.is_some();
        shared.latest.store(Arc::new(Latest {
            at_ms: Some(at_ms),
            samples,
            agent_samples: Arc::clone(&agent_samples),
            pressure: Some(report),
            collection_wall: wall,
            collection_cpu: cpu,
            agents: targets.len(),
        }));
        if wake {
            shared.pressure_wake.notify_one();
        }
        if !urgent {
            next += config.interval;
        }
        let now = Instant::now();
        if next < now {
            // a collection overran (or the machine slept): skip the missed ticks
            next = now + config.interval;
        }
        match fast.wait(shared, next, &mut watch) {
            fast::Wake::Stop => return,
            fast::Wake::Due => urgent = false,
            fast::Wake::Urgent => urgent = true,
        }
    }
}

static PRESSURE_LEVEL: Desc = Desc {
    name: "qm_pressure_level",
    help: "Pressure level per signal: 0 ok, 1 warning, 2 critical.",
    kind: Kind::Gauge,
};
static PRESSURE_UTILIZATION: Desc = Desc {
    name: "qm_pressure_utilization_ratio",
    help: "Utilization per pressure signal, the worse of the managed and host views.",
    kind: Kind::Gauge,
};
static PRESSURE_EXHAUSTION: Desc = Desc {
    name: "qm_pressure_exhaustion_seconds",
    help: "Forecast time until a signal's capacity is exhausted, where a trend says so.",
    kind: Kind::Gauge,
};

static PRESSURE_AGENT_EXHAUSTION: Desc = Desc {
    name: "qm_pressure_agent_exhaustion_seconds",
    help: "Forecast time until an agent, at its memory trend, uses up what the node has left.",
    kind: Kind::Gauge,
};
static PRESSURE_EVICTIONS: Desc = Desc {
    name: "qm_pressure_evictions_total",
    help: "Agents evicted by the pressure responder, by trigger (critical level, or a forecast at warning).",
    kind: Kind::Counter,
};
static PRESSURE_THROTTLES: Desc = Desc {
    name: "qm_pressure_throttles_total",
    help: "Times the pressure responder lowered an agent's memory.high or cpu.max.",
    kind: Kind::Counter,
};
static PRESSURE_THROTTLED: Desc = Desc {
    name: "qm_pressure_throttled_agents",
    help: "Agents the pressure responder holds throttled now.",
    kind: Kind::Gauge,
};
static PRESSURE_RESPONSE: Desc = Desc {
    name: "qm_pressure_response_seconds",
    help: "Time from the collection that prompted the last eviction to its SIGTERM.",
    kind: Kind::Gauge,
};

fn pressure_samples(
    report: &pressure::PressureReport,
    stats: &pressure::ResponderStats,
    out: &mut Vec<Sample>,
) {
    for a in &report.agents {
        if let Some(e) = a.exhaustion_in_s {
            out.push(Sample::with_label(
                &PRESSURE_AGENT_EXHAUSTION,
                "agent",
                &a.id,
                e,
            ));
        }
    }
    for (trigger, n) in [
        ("critical", stats.evictions_critical),
        ("forecast", stats.evictions_forecast),
    ] {
        out.push(Sample::with_label(
            &PRESSURE_EVICTIONS,
            "trigger",
            trigger,
            n as f64,
        ));
    }
    out.push(Sample::new(&PRESSURE_THROTTLES, stats.throttles as f64));
    out.push(Sample::new(
        &PRESSURE_THROTTLED,
        stats.throttled.len() as f64,
    ));
    if let Some(e) = &stats.last_eviction {
        out.push(Sample::new(
            &PRESSURE_RESPONSE,
            e.response_ms as f64 / 1000.0,
        ));
    }
    for s in &report.signals {
        let level = match s.level {
            qm_pressure::Level::Ok => 0.0,
            qm_pressure::Level::Warning => 1.0,
            qm_pressure::Level::Critical => 2.0,
        };
        out.push(Sample::with_label(&PRESSURE_LEVEL, "signal", s.name, level));
        out.push(Sample::with_label(
            &PRESSURE_UTILIZATION,
            "signal",
            s.name,
            s.utilization,
        ));
        if let Some(e) = s.exhaustion_in_s {
            out.push(Sample::with_label(
                &PRESSURE_EXHAUSTION,
                "signal",
                s.name,
                e,
            ));
        }
    }
}

/// The `alert.firing` / `alert.resolved` event of a transition.
fn alert_event(t: &Transition, at_ms: u64) -> EventDoc {
    let (kind, alert) = match t {
        Transition::Firing(a) => ("alert.firing", a),
        Transition::Resolved(a) => ("alert.resolved", a),
    };
    EventDoc {
        kind: kind.to_owned(),
        at: format_rfc3339(at_ms),
        agent: alert.labels.get("agent").cloned(),
        alert: Some(alert_doc(alert)),
        ..EventDoc::default()
    }
}

/// The wire form of an alert.
pub fn alert_doc(a: &Alert) -> AlertDoc {
    AlertDoc {
        rule: a.rule.clone(),
        state: a.state.to_string(),
        severity: a.severity.to_string(),
        labels: a.labels.clone(),
        expr: a.expr.clone(),
        value: a.value,
        summary: a.summary.clone(),
        note: a.note.clone(),
        fingerprint: a.fingerprint.clone(),
        pending_since: format_rfc3339(a.pending_since),
        fired_at: a.fired_at.map(format_rfc3339),
        resolved_at: a.resolved_at.map(format_rfc3339),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn value(m: &Monitor, name: &str, agent: &str) -> Option<f64> {
        m.latest()
            .all()
            .find(|s| {
                s.desc.name == name && s.labels.iter().any(|(k, v)| *k == "agent" && v == agent)
            })
            .map(|s| s.value)
    }

    /// A sink whose events the test reads, in order.
    struct Feed(Mutex<std::sync::mpsc::Sender<EventDoc>>);

    impl EventSink for Feed {
        fn publish(&self, events: Vec<EventDoc>) {
            let tx = self.0.lock().unwrap();
            for e in events {
                let _ = tx.send(e);
            }
        }
    }

    fn feed() -> (Arc<dyn EventSink>, std::sync::mpsc::Receiver<EventDoc>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (Arc::new(Feed(Mutex::new(tx))), rx)
    }

    fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn tracked_agents_are_read_published_and_alerted_on_until_they_end() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let (hub, feed) = feed();
        let rule = Rule {
            name: "agent-up".into(),
            series: "qm_agent_up".into(),
            matchers: [("agent".to_owned(), "sleeper".to_owned())].into(),
            op: ">=".parse().unwrap(),
            threshold: 1.0,
            clear: None,
            for_ms: 0,
            severity: "info".parse().unwrap(),
            labels: Default::default(),
            summary: None,
        };
        let config = MonitorConfig {
            interval: Duration::from_millis(50),
            agent_interval: Duration::from_millis(50),
            rules: vec![rule],
            ..MonitorConfig::default()
        };
        let m = Monitor::start(config, Arc::clone(&hub)).unwrap();
        m.track(Target {
            id: "sleeper".into(),
            pid: child.id(),
            start_time: None,
            cgroup: None,
        });
        let rss = eventually("the agent's memory", || {
            value(&m, "qm_agent_memory_bytes", "sleeper")
        });
        assert!(rss > 0.0);
        assert_eq!(value(&m, "qm_agent_up", "sleeper"), Some(1.0));
        assert_eq!(m.latest().agents, 1);
        // the rule fired on the agent's series and the event says which agent
        let fired = eventually("alert.firing", || feed.try_recv().ok());
        assert_eq!(fired.kind, "alert.firing");
        assert_eq!(fired.agent.as_deref(), Some("sleeper"));
        // history holds the agent's series under the agent tiers
        let (names, _, _) = m.series();
        assert!(names.iter().any(|(n, _)| n == "qm_agent_memory_bytes"));
        // the process ends: the agent reads as down, and untracked its series go
        child.kill().unwrap();
        child.wait().unwrap();
        eventually("the agent to read as down", || {
            (value(&m, "qm_agent_up", "sleeper") == Some(0.0)).then_some(())
        });
        m.untrack("sleeper");
        eventually("the agent's series to leave the snapshot", || {
            value(&m, "qm_agent_up", "sleeper").is_none().then_some(())
        });
        let resolved = eventually("alert.resolved", || feed.try_recv().ok());
        assert_eq!(resolved.kind, "alert.resolved");
        m.stop();
        let at = m.latest().at_ms;
        thread::sleep(Duration::from_millis(150));
        assert_eq!(m.latest().at_ms, at, "no collection after stop");
    }

    #[test]
    fn a_memory_crossing_is_collected_at_once_not_at_the_next_tick() {
        let root = std::env::temp_dir().join(format!("qm-monitor-fast-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("proc")).unwrap();
        let meminfo = |available_kb: u64| {
            std::fs::write(
                root.join("proc/meminfo"),
                format!(
                    "MemTotal: 1000000 kB\nMemFree: {available_kb} kB\nMemAvailable: {available_kb} kB\n"
                ),
            )
            .unwrap();
        };
        meminfo(900_000);
        let (hub, feed) = feed();
        // collections a minute apart: only the probe can see the crossing in time
        let config = MonitorConfig {
            interval: Duration::from_secs(60),
            agent_interval: Duration::from_secs(60),
            probe_interval: Duration::from_millis(20),
            paths: Paths::with_root(&root),
            rules: Vec::new(),
            ..MonitorConfig::default()
        };
        let m = Monitor::start(config, Arc::clone(&hub)).unwrap();
        let wake = m.pressure_wake();
        let level = |m: &Monitor| {
            m.latest()
                .pressure
                .as_ref()
                .and_then(|p| p.signal("memory").map(|s| s.level))
        };
        eventually("the first collection", || {
            (level(&m) == Some(qm_pressure::Level::Ok)).then_some(())
        });
        meminfo(20_000);
        eventually("critical, long before the next tick", || {
            (level(&m) == Some(qm_pressure::Level::Critical)).then_some(())
        });
        assert!(m.latest().value("qm_monitor_urgent_collections_total") >= Some(1.0));
        let changed = eventually("pressure.changed", || feed.try_recv().ok());
        assert_eq!(changed.kind, "pressure.changed");
        assert!(
            changed
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("ok -> critical")),
            "{changed:?}"
        );
        // the responder's wake holds a permit for it
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), wake.notified())
                .await
                .expect("the responder is woken");
        });
        m.stop();
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn invalid_configuration_is_refused_naming_the_field() {
        let (hub, _feed) = feed();
        let mut config = MonitorConfig::default();
        config.history.host_tiers.clear();
        let e = Monitor::start(config, Arc::clone(&hub)).unwrap_err();
        assert!(e.to_string().contains("host_tiers"), "{e}");
        let mut config = MonitorConfig::default();
        config.rules.push(config.rules[0].clone());
        let e = Monitor::start(config, hub).unwrap_err();
        assert!(e.to_string().contains("rules"), "{e}");
    }
}
