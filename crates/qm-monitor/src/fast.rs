//! The monitor's fast path between two collections: every `probe_interval` (100 ms by
//! default) it reads host memory and the managed agents' parent cgroup (two files held open,
//! a few microseconds; less often while there is room: the wait is paced by the headroom to
//! the next threshold), and it waits on PSI triggers (`/proc/pressure/memory` and the parent
//! group's `memory.pressure`, where the kernel accepts them) so a stall wakes it at once. When
//! memory rises past the level the pressure watch holds, or a trigger fires, the wait ends
//! early and the monitor collects at once: a crossing reaches the responder within one probe
//! interval instead of one collection interval. Under memory pressure it also reads each
//! agent's group every probe interval (one file each) into the agents' forecasts, and
//! collects at once when one becomes a leak the responder acts on: a leak that runs from
//! warning to critical in three seconds is evicted on its forecast, at warning.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use qm_sys::probe::{AgentMemoryProbe, MemoryProbe, MemoryReading, PsiTrigger};

use super::Shared;
use super::pressure::{LeakWatch, PressureWatch};
use qm_pressure::Level;

/// A stall of this much per [`TRIGGER_WINDOW`] fires a trigger (the kernel documentation's
/// example; an unprivileged caller gets the same share of 2 s).
const TRIGGER_STALL: Duration = Duration::from_millis(150);
const TRIGGER_WINDOW: Duration = Duration::from_secs(1);
/// The fastest memory growth the probe's pacing assumes: with this much headroom to the next
/// threshold, the next reading is headroom / rate away (earlyoom paces itself the same way),
/// between the probe interval and [`MAX_SLICE`].
const ASSUMED_GROWTH_BYTES_PER_S: f64 = 4.0 * 1024.0 * 1024.0 * 1024.0;
/// The longest wait between two readings.
const MAX_SLICE: Duration = Duration::from_secs(1);

/// How often a trigger that could not be registered yet (the parent group is made with the
/// first agent) is tried again.
const TRIGGER_RETRY: Duration = Duration::from_secs(10);

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The monitor is stopping.
    Stop,
    /// The next collection is due.
    Due,
    /// Memory crossed a threshold or a PSI trigger fired: collect now.
    Urgent,
}

/// The managed agents' parent group files, set by the supervisor once it has a cgroup driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFiles {
    /// The parent's memory usage (`memory.current` or `memory.usage_in_bytes`).
    pub memory: PathBuf,
    /// The parent's `memory.pressure`, where the layout has PSI.
    pub pressure: Option<PathBuf>,
}

#[derive(Debug)]
pub(crate) struct FastPath {
    interval: Duration,
    proc: PathBuf,
    probe: MemoryProbe,
    managed: Option<ManagedFiles>,
    triggers: Vec<PsiTrigger>,
    /// Pressure files to register a trigger on, and when to try next.
    wanted: Vec<PathBuf>,
    retry_at: Instant,
    /// The parent group's usage and the agents' summed memory at the last agent collection:
    /// the probe's estimate of the managed memory is that sum plus the parent's growth since.
    /// (The parent's own figure is not used as is: it keeps the page cache of agents that
    /// ended, and in tests more than one daemon shares it.)
    base: Option<(u64, f64)>,
    /// The wait before the next reading, paced by the headroom.
    slice: Duration,
    /// Each agent's group, read under memory pressure.
    agents: AgentMemoryProbe,
    /// The leaks the responder acts on, and the agent the last urgent wake was for (one
    /// wake per leaker: the collections that follow carry its forecast).
    leak: LeakWatch,
    woke_for: Option<String>,
    /// Probes, agent readings and urgent wakes since start.
    pub(crate) probes: u64,
    pub(crate) agent_reads: u64,
    pub(crate) urgent: u64,
}

impl FastPath {
    pub(crate) fn new(interval: Duration, proc: PathBuf, leak: LeakWatch) -> Self {
        FastPath {
            interval,
            probe: MemoryProbe::new(&proc, None),
            wanted: vec![proc.join("pressure/memory")],
            proc,
            managed: None,
            triggers: Vec::new(),
            retry_at: Instant::now(),
            base: None,
            slice: interval,
            agents: AgentMemoryProbe::default(),
            leak,
            woke_for: None,
            probes: 0,
            agent_reads: 0,
            urgent: 0,
        }
    }

    /// The agents' memory files (id, path), read under memory pressure.
    pub(crate) fn set_agents(&mut self, files: Vec<(String, PathBuf)>) {
        self.agents.set(files);
    }

    /// Points the probe at the managed parent group (once the supervisor knows it).
    pub(crate) fn set_managed(&mut self, files: ManagedFiles) {
        if self.managed.as_ref() == Some(&files) {
            return;
        }
        self.probe = MemoryProbe::new(&self.proc, Some(files.memory.clone()));
        if let Some(p) = &files.pressure {
            self.triggers.retain(|t| t.path() != p);
            self.wanted.push(p.clone());
            self.retry_at = Instant::now();
        }
        self.managed = Some(files);
    }

    /// PSI triggers registered now.
    pub(crate) fn triggers(&self) -> usize {
        self.triggers.len()
    }

    /// The managed estimate for the parent group's usage `parent` (see `base`).
    fn estimate(&self, parent: Option<u64>) -> Option<u64> {
        let (base_parent, sum) = self.base?;
        Some((sum + parent? as f64 - base_parent as f64).max(0.0) as u64)
    }

    /// One probe reading between collections, its managed figure the estimate.
    fn read(&mut self) -> MemoryReading {
        self.probes += 1;
        let mut r = self.probe.read();
        r.managed = self.estimate(r.managed);
        r
    }

    /// The managed memory for a collection, which has read /proc/meminfo itself: the parent
    /// group read once. `agents_sum`, the agents' summed memory when they were read this
    /// cycle, becomes the estimate's base. None without a managed parent group.
    pub(crate) fn managed_now(&mut self, agents_sum: Option<f64>) -> Option<f64> {
        self.managed.as_ref()?;
        self.probes += 1;
        let parent = self.probe.read_managed();
        if let Some(sum) = agents_sum {
            self.base = parent.map(|p| (p, sum));
        }
        self.estimate(parent).map(|m| m as f64)
    }

    fn register_wanted(&mut self) {
        if self.wanted.is_empty() || Instant::now() < self.retry_at {
            return;
        }
        let mut still = Vec::new();
        for path in std::mem::take(&mut self.wanted) {
            match PsiTrigger::register(&path, TRIGGER_STALL, TRIGGER_WINDOW) {
                Ok(t) => {
                    tracing::debug!(path = %path.display(), spec = ?t.spec(), "psi trigger");
                    self.triggers.push(t);
                }
                Err(qm_sys::probe::TriggerError::Refused { path, source }) => {
                    // the kernel will not take it: stop asking
                    tracing::debug!(path = %path.display(), %source, "no psi trigger");
                }
                Err(qm_sys::probe::TriggerError::Open { path, .. }) => still.push(path),
            }
        }
        self.wanted = still;
        self.retry_at = Instant::now() + TRIGGER_RETRY;
    }

    /// Waits until `deadline`, probing every interval; ends early when memory rises past the
    /// watch's level or a trigger fires. With a zero interval it only waits.
    pub(crate) fn wait(
        &mut self,
        shared: &Shared,
        deadline: Instant,
        watch: &mut PressureWatch,
    ) -> Wake {
        if self.interval.is_zero() {
            return if super::Monitor::wait(shared, deadline) {
                Wake::Stop
            } else {
                Wake::Due
            };
        }
        self.register_wanted();
        loop {
            if shared.stopping.lock().map_or(true, |s| *s) {
                return Wake::Stop;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wake::Due;
            }
            let slice = self.slice.min(deadline - now);
            let fired = qm_sys::probe::wait(&self.triggers, slice);
            if !fired.is_empty() {
                self.urgent += 1;
                // a trigger stays armed; one whose group went away reports an error every
                // time, so it is dropped and registered again later
                for i in fired.into_iter().rev() {
                    if !self.triggers[i].path().exists() {
                        let t = self.triggers.remove(i);
                        self.wanted.push(t.path().to_owned());
                    }
                }
                return Wake::Urgent;
            }
            let reading = self.read();
            self.slice = self.interval;
            if self.read_agents(watch, &reading) {
                self.urgent += 1;
                return Wake::Urgent;
            }
            if let (Some(u), Some(t)) = (watch.memory_utilization(&reading), watch.thresholds()) {
                let next = match watch.memory_level() {
                    Level::Ok => t.warning_enter,
                    Level::Warning => t.critical_enter,
                    Level::Critical => continue,
                };
                if u >= next {
                    self.urgent += 1;
                    return Wake::Urgent;
                }
                if next == t.critical_enter && !self.agents.is_empty() {
                    // under pressure the agents are read every interval
                    continue;
                }
                let headroom = watch.memory_headroom(&reading, next);
                self.slice = Duration::from_secs_f64(headroom / ASSUMED_GROWTH_BYTES_PER_S)
                    .clamp(self.interval, MAX_SLICE.max(self.interval));
            }
        }
    }

    /// Under memory pressure, reads every agent's group into its forecast; true when an
    /// agent has just become a leak the responder acts on.
    fn read_agents(&mut self, watch: &mut PressureWatch, reading: &MemoryReading) -> bool {
        if watch.memory_level() == Level::Ok || self.agents.is_empty() {
            self.woke_for = None;
            return false;
        }
        let t_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut reads = 0;
        self.agents.read(|id, bytes| {
            reads += 1;
            watch.observe_agent(t_s, id, bytes as f64);
        });
        self.agent_reads += reads;
        let available = watch.memory_headroom(reading, 1.0);
        match watch.leaker(available, &self.leak) {
            Some(id) if self.woke_for.as_deref() != Some(id.as_str()) => {
                tracing::debug!(agent = %id, "leak forecast between collections");
                self.woke_for = Some(id);
                true
            }
            _ => false,
        }
    }
}
