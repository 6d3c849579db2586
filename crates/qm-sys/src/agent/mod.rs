//! Per-agent collectors. An agent is a process tree quartermaster tracks ([`Target`]): with
//! a cgroup it is read from the cgroup's files alone (v2, v1 or hybrid, see
//! [`CgroupLayout`]); without one, from /proc, its root process and the root's descendants.
//! Each cycle gives one [`AgentSnapshot`] per target, with counters turned into rates per
//! agent; [`samples`] flattens them into the `qm_agent_*` series.
//!
//! Cheapness is the point: files are opened relative to directory descriptors, read into one
//! reused buffer and, on the real procfs and cgroupfs, kept open and re-read at offset 0
//! (at most [`CollectOptions::max_kept_files`] of them); descendants come from the
//! `children` files rather than a scan of /proc; open descriptors are counted every
//! [`CollectOptions::open_files_every`] cycles, with one `fstat` of `/proc/<pid>/fd` where
//! the kernel (≥ 6.2) reports the count as its size.

mod cgroup;
pub mod desc;
mod file;
mod parse;
mod procfs;
mod samples;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

pub use cgroup::CgroupLayout;
pub use samples::samples;

use crate::Paths;
use crate::rate::Counter;
use file::{Budget, Root};
use procfs::{FdCount, Tree, Walker};

/// One agent to collect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The agent's name: the `agent` label. Unique among the targets of one collect (a
    /// repeated id is read without state of its own: no rates).
    pub id: String,
    /// The root process.
    pub pid: u32,
    /// The root's start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`);
    /// when given and different, the pid was reused and the agent is gone. When not given,
    /// the start time first seen is held to instead.
    pub start_time: Option<u64>,
    /// The agent's cgroup relative to the cgroup mount (`qm/coder-1`; a leading `/`, as in
    /// `/proc/<pid>/cgroup`, is allowed; `..` is not). When given, only the cgroup's files
    /// are read and `pid` is not looked at; an empty or absent cgroup is a gone agent. On
    /// v1 the same path is used under every controller.
    pub cgroup: Option<PathBuf>,
}

/// Where an agent's figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The agent's cgroup files.
    Cgroup,
    /// The process tree in /proc.
    Proc,
}

/// Stall figures of one PSI line: the share of time stalled, in percent, over 10, 60 and
/// 300 seconds, and the total stalled time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stall {
    /// Percent, last 10 s.
    pub avg10: f64,
    /// Percent, last 60 s.
    pub avg60: f64,
    /// Percent, last 300 s.
    pub avg300: f64,
    /// Microseconds stalled since the cgroup was created.
    pub total_us: u64,
}

/// One resource's pressure: some task stalled, and (where the kernel says) all stalled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Psi {
    /// At least one task stalled.
    pub some: Stall,
    /// All non-idle tasks stalled; absent from `cpu.pressure` on old kernels.
    pub full: Option<Stall>,
}

/// The PSI of an agent's cgroup (v2, or the `unified` mount of a hybrid layout).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pressure {
    /// `cpu.pressure`.
    pub cpu: Option<Psi>,
    /// `memory.pressure`.
    pub memory: Option<Psi>,
    /// `io.pressure`.
    pub io: Option<Psi>,
}

/// One agent at one instant. A gone agent (`alive: false`) has every value `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSnapshot {
    /// The target's id.
    pub id: String,
    /// The root process (or the cgroup) is there.
    pub alive: bool,
    /// Cgroup files or /proc.
    pub source: Source,
    /// Processes in the tree (or directly in the cgroup).
    pub processes: Option<u64>,
    /// Threads in the tree (the cgroup's `pids.current`).
    pub threads: Option<u64>,
    /// CPU time used; never decreases while the agent lives (a process that exits keeps
    /// what it used).
    pub cpu_seconds_total: Option<f64>,
    /// CPU seconds per second since the last collect: 1.0 is one core busy.
    pub cpu_usage_cores: Option<f64>,
    /// `memory.current` / `memory.usage_in_bytes`, or the tree's summed RSS.
    pub memory_bytes: Option<u64>,
    /// Anonymous memory (cgroup only).
    pub memory_anon_bytes: Option<u64>,
    /// Page cache (cgroup only).
    pub memory_file_bytes: Option<u64>,
    /// Bytes read from storage.
    pub io_read_bytes_total: Option<u64>,
    /// Bytes written to storage.
    pub io_written_bytes_total: Option<u64>,
    /// Bytes read per second since the last collect.
    pub io_read_bytes_per_second: Option<f64>,
    /// Bytes written per second since the last collect.
    pub io_write_bytes_per_second: Option<f64>,
    /// Open file descriptors of the tree (/proc only; each process's count is at most
    /// [`CollectOptions::open_files_every`] cycles old).
    pub open_files: Option<u64>,
    /// Processes the OOM killer killed in the cgroup.
    pub oom_kills: Option<u64>,
    /// The cgroup's PSI.
    pub pressure: Option<Pressure>,
}

impl AgentSnapshot {
    fn gone(id: &str, source: Source) -> Self {
        AgentSnapshot {
            id: id.to_owned(),
            alive: false,
            source,
            processes: None,
            threads: None,
            cpu_seconds_total: None,
            cpu_usage_cores: None,
            memory_bytes: None,
            memory_anon_bytes: None,
            memory_file_bytes: None,
            io_read_bytes_total: None,
            io_written_bytes_total: None,
            io_read_bytes_per_second: None,
            io_write_bytes_per_second: None,
            open_files: None,
            oom_kills: None,
            pressure: None,
        }
    }
}

/// What a collector reads, and how many descriptors it may keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectOptions {
    /// Count the open descriptors of each /proc process on every this many cycles (and on
    /// the cycle it is first seen), reporting its last count in between; 1 counts every
    /// cycle, 0 never (`open_files` is then `None`). Descriptors change slowly, and counting
    /// them every cycle costs about a tenth of a cycle's CPU (on Linux ≥ 6.2 one `fstat` of
    /// the kept `/proc/<pid>/fd`, whose size is the count; on older kernels a directory
    /// read, far more), so the default, 5, spreads it: each cycle counts about a fifth of
    /// the processes.
    pub open_files_every: u32,
    /// At most this many files kept open by this collector between cycles and re-read at
    /// offset 0 (procfs and cgroupfs only; four per process and one per further thread, up
    /// to ten per cgroup); beyond it, files are opened and closed on each read, which costs
    /// two to three times as much. Default: half the soft `RLIMIT_NOFILE`, at most 65,536.
    /// Zero keeps none.
    pub max_kept_files: usize,
    /// Read a cgroup agent's slow-changing files (memory.stat, OOM counters, IO bytes, the
    /// three PSI files: six of its ten files) on every this many cycles, spread over agents,
    /// reporting their last values (and IO rates) in between; 1 reads them every cycle.
    /// Processes, threads, cpu and memory are read every cycle. Default 5.
    pub cgroup_detail_every: u32,
}

impl Default for CollectOptions {
    fn default() -> Self {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(65_536 * 2);
        CollectOptions {
            open_files_every: 5,
            max_kept_files: usize::try_from(soft / 2).unwrap_or(0).min(65_536),
            cgroup_detail_every: 5,
        }
    }
}

/// One cycle's values of one agent, before rates.
#[derive(Debug, Default, Clone)]
struct Reading {
    processes: Option<u64>,
    threads: Option<u64>,
    cpu_ns: Option<u64>,
    memory_bytes: Option<u64>,
    memory_anon_bytes: Option<u64>,
    memory_file_bytes: Option<u64>,
    read_bytes: Option<u64>,
    written_bytes: Option<u64>,
    open_files: Option<u64>,
    oom_kills: Option<u64>,
    pressure: Option<Pressure>,
}

/// What is kept of an agent between cycles.
#[derive(Debug)]
enum Body {
    Proc(Box<Tree>),
    Cgroup(Box<cgroup::Files>),
    /// The root process is gone: reported gone while the same target stays.
    Gone,
}

#[derive(Debug)]
struct AgentState {
    target: (u32, Option<u64>, Option<PathBuf>),
    seen: u64,
    body: Body,
    cpu: Option<Counter>,
    read: Option<Counter>,
    written: Option<Counter>,
    /// A cgroup agent's slow-changing values from the last full read, with its IO rates.
    detail: Option<(Reading, Option<f64>, Option<f64>)>,
}

impl AgentState {
    fn new(t: &Target, seen: u64) -> Self {
        AgentState {
            target: (t.pid, t.start_time, t.cgroup.clone()),
            seen,
            body: match t.cgroup {
                Some(_) => Body::Cgroup(Box::default()),
                None => Body::Proc(Box::default()),
            },
            cpu: None,
            read: None,
            written: None,
            detail: None,
        }
    }

    fn is_for(&self, t: &Target) -> bool {
        self.target.0 == t.pid && self.target.1 == t.start_time && self.target.2 == t.cgroup
    }
}

/// Collects agents, keeping per-agent state (counters, kept files) between cycles.
#[derive(Debug)]
pub struct AgentCollector {
    walker: Walker,
    cgroups: cgroup::Reader,
    options: CollectOptions,
    agents: HashMap<String, AgentState>,
    cycle: u64,
    budget: Budget,
    cgroup_mount: PathBuf,
}

const CGROUP_SUPER_MAGIC: i128 = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: i128 = 0x6367_7270;

impl AgentCollector {
    /// A collector for the host (or fixture tree) at `paths`, with default options.
    pub fn new(paths: &Paths) -> Self {
        Self::with_options(paths, CollectOptions::default())
    }

    /// A collector with `options`. Detects the cgroup layout, whether `paths.proc` is a real
    /// procfs (only then are files kept open) and how open descriptors can be counted.
    pub fn with_options(paths: &Paths, options: CollectOptions) -> Self {
        let budget = Budget::new(options.max_kept_files);
        let mut proc = Root::open(&paths.proc, budget.clone());
        let procfs = proc.fs_type(".") == Some(i128::from(rustix::fs::PROC_SUPER_MAGIC));
        proc.keep_files(procfs);
        let fd_count = if procfs && proc.stat_size("self/fd", None).is_ok_and(|n| n > 0) {
            FdCount::StatSize
        } else {
            FdCount::ReadDir
        };
        let mut root = Root::open(&paths.cgroup, budget.clone());
        let (layout, controllers) = cgroup::detect(&root);
        let probe = match layout {
            CgroupLayout::V2 => Some("."),
            _ => controllers.any(),
        };
        let fs = probe.and_then(|p| root.fs_type(p));
        root.keep_files(fs == Some(CGROUP_SUPER_MAGIC) || fs == Some(CGROUP2_SUPER_MAGIC));
        AgentCollector {
            walker: Walker::new(proc, fd_count),
            cgroups: cgroup::Reader::new(root, layout, controllers),
            options,
            agents: HashMap::new(),
            cycle: 0,
            budget,
            cgroup_mount: paths.cgroup.clone(),
        }
    }

    /// The cgroup layout found under `paths.cgroup`.
    pub fn layout(&self) -> CgroupLayout {
        self.cgroups.layout
    }

    /// The file holding the memory usage of each target with a cgroup (`memory.current`, or
    /// v1 `memory.usage_in_bytes`: the figure [`AgentSnapshot::memory_bytes`] reports), for
    /// a probe that reads only that between collections.
    pub fn memory_files(&self, targets: &[Target]) -> Vec<(String, PathBuf)> {
        targets
            .iter()
            .filter_map(|t| {
                let rel = self.cgroups.memory_file(t.cgroup.as_deref()?)?;
                Some((t.id.clone(), self.cgroup_mount.join(rel)))
            })
            .collect()
    }

    /// How many files are kept open now (for tests and the self-metrics).
    pub fn kept_files(&self) -> usize {
        self.budget.kept()
    }

    /// One snapshot per target, in order. `now` is the instant rates are computed against.
    pub fn collect(&mut self, targets: &[Target], now: Instant) -> Vec<AgentSnapshot> {
        let mut out = Vec::with_capacity(targets.len());
        self.collect_into(targets, now, &mut out);
        out
    }

    /// Like [`collect`](Self::collect), into `out` (cleared first). Agents no longer among
    /// `targets` are forgotten, their kept files closed.
    pub fn collect_into(&mut self, targets: &[Target], now: Instant, out: &mut Vec<AgentSnapshot>) {
        out.clear();
        out.reserve(targets.len());
        self.cycle += 1;
        self.walker.next_cycle();
        let cycle = self.cycle;
        let mut readers = Readers {
            walker: &mut self.walker,
            cgroups: &mut self.cgroups,
            options: &self.options,
        };
        for t in targets {
            let known = self.agents.get(t.id.as_str());
            if known.is_some_and(|a| a.seen == cycle) {
                // A repeated id: read with state of its own, thrown away.
                out.push(readers.read(&mut AgentState::new(t, cycle), t, now, cycle));
                continue;
            }
            if !known.is_some_and(|a| a.is_for(t)) {
                self.agents.insert(t.id.clone(), AgentState::new(t, cycle));
            }
            let snapshot = match self.agents.get_mut(t.id.as_str()) {
                Some(state) => {
                    state.seen = cycle;
                    readers.read(state, t, now, cycle)
                }
                None => AgentSnapshot::gone(&t.id, Source::Proc), // just inserted
            };
            out.push(snapshot);
        }
        self.agents.retain(|_, a| a.seen == cycle);
    }
}

/// The collector's readers, borrowed apart from its agents.
struct Readers<'a> {
    walker: &'a mut Walker,
    cgroups: &'a mut cgroup::Reader,
    options: &'a CollectOptions,
}

impl Readers<'_> {
    fn read(
        &mut self,
        state: &mut AgentState,
        t: &Target,
        now: Instant,
        cycle: u64,
    ) -> AgentSnapshot {
        let every = u64::from(self.options.cgroup_detail_every.max(1));
        let spread = u64::from(t.pid) + t.id.len() as u64;
        let detail = state.detail.is_none() || (cycle + spread).is_multiple_of(every);
        let (source, reading) = match (&mut state.body, &t.cgroup) {
            (Body::Cgroup(files), Some(rel)) => {
                (Source::Cgroup, self.cgroups.read_cgroup(rel, files, detail))
            }
            (Body::Proc(tree), _) => {
                let r = self.walker.walk(tree, t.pid, t.start_time, self.options);
                (Source::Proc, r)
            }
            (_, Some(_)) => (Source::Cgroup, None),
            (_, None) => (Source::Proc, None),
        };
        let Some(r) = reading else {
            // Gone: drop the state (kept files, counters). A /proc agent stays gone while
            // its target stays (a reused pid must not come back to life); a cgroup is read
            // afresh next cycle.
            *state = AgentState::new(t, state.seen);
            if source == Source::Proc {
                state.body = Body::Gone;
            }
            return AgentSnapshot::gone(&t.id, source);
        };
        let mut r = r;
        let (read_rate, write_rate) = if source == Source::Cgroup && !detail {
            // between full reads: the last slow-changing values and IO rates
            let (last, read_rate, write_rate) = state.detail.clone().unwrap_or_default();
            r.processes = r.processes.or(last.processes);
            r.memory_anon_bytes = last.memory_anon_bytes;
            r.memory_file_bytes = last.memory_file_bytes;
            r.read_bytes = last.read_bytes;
            r.written_bytes = last.written_bytes;
            r.oom_kills = last.oom_kills;
            r.pressure = last.pressure;
            (read_rate, write_rate)
        } else {
            let rates = (
                rate(&mut state.read, r.read_bytes, now),
                rate(&mut state.written, r.written_bytes, now),
            );
            if source == Source::Cgroup {
                state.detail = Some((r.clone(), rates.0, rates.1));
            }
            rates
        };
        AgentSnapshot {
            id: t.id.clone(),
            alive: true,
            source,
            processes: r.processes,
            threads: r.threads,
            cpu_seconds_total: r.cpu_ns.map(|ns| ns as f64 / 1e9),
            cpu_usage_cores: rate(&mut state.cpu, r.cpu_ns, now).map(|ns| ns / 1e9),
            memory_bytes: r.memory_bytes,
            memory_anon_bytes: r.memory_anon_bytes,
            memory_file_bytes: r.memory_file_bytes,
            io_read_bytes_total: r.read_bytes,
            io_written_bytes_total: r.written_bytes,
            io_read_bytes_per_second: read_rate,
            io_write_bytes_per_second: write_rate,
            open_files: r.open_files,
            oom_kills: r.oom_kills,
            pressure: r.pressure,
        }
    }
}

/// The per-second rate of `value` since the last reading; `None` on the first reading, a
/// reset, or a missing value (which keeps the last reading).
fn rate(counter: &mut Option<Counter>, value: Option<u64>, now: Instant) -> Option<f64> {
    let value = value?;
    match counter {
        Some(c) => c.update(value, now),
        None => {
            *counter = Some(Counter::new(value, now));
            None
        }
    }
}
