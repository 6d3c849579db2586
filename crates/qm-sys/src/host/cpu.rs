//! CPU time from `/proc/stat` (per core and in total, in seconds, and the busy and per-mode
//! shares of the interval since the previous reading), the scheduler's counters and gauges
//! from the same file.
//!
//! Shares come from tick deltas rather than [`Counter`] rates: the kernel's per-core `iowait`
//! can go backwards a little (it is an estimate on tickless kernels), which a counter would
//! take for a reset; a backwards step here counts as zero.

use std::time::Instant;

use super::{push, rate, ratio};
use crate::metric::Sample;
use crate::rate::Counter;

/// Ticks per mode, in `/proc/stat` order: user nice system idle iowait irq softirq steal.
type Ticks = [u64; 8];

const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];
const IDLE: usize = 3;
const IOWAIT: usize = 4;

/// Time spent in each mode since boot, in seconds (summed over cores for the total). `user`
/// and `nice` include time running guests, as the kernel counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// Normal processes in user mode.
    pub user: f64,
    /// Niced processes in user mode.
    pub nice: f64,
    /// The kernel on behalf of processes.
    pub system: f64,
    /// Nothing to do.
    pub idle: f64,
    /// Idle with IO outstanding.
    pub iowait: f64,
    /// Servicing hardware interrupts.
    pub irq: f64,
    /// Servicing softirqs.
    pub softirq: f64,
    /// Stolen by the hypervisor for other guests.
    pub steal: f64,
}

impl CpuTimes {
    fn from_ticks(t: &Ticks, ticks_per_second: f64) -> Self {
        let s = |i: usize| t[i] as f64 / ticks_per_second;
        CpuTimes {
            user: s(0),
            nice: s(1),
            system: s(2),
            idle: s(3),
            iowait: s(4),
            irq: s(5),
            softirq: s(6),
            steal: s(7),
        }
    }

    fn by_mode(&self) -> [f64; 8] {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        ]
    }
}

/// Shares of the interval spent in some modes, each 0..1 of all the time the CPUs had.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModeRatios {
    /// User mode, without nice.
    pub user: f64,
    /// Kernel mode, without irq and softirq.
    pub system: f64,
    /// Idle waiting for IO.
    pub iowait: f64,
    /// Stolen by the hypervisor.
    pub steal: f64,
}

/// One online core.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreCpu {
    /// The kernel's CPU number (`cpu3` is 3).
    pub id: u32,
    /// Time per mode since boot, in seconds.
    pub times: CpuTimes,
    /// Busy share of the interval (0..1); `None` on the first reading.
    pub utilization: Option<f64>,
    /// Per-mode shares of the interval; `None` on the first reading.
    pub ratios: Option<ModeRatios>,
}

/// The CPUs and the scheduler, from `/proc/stat`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cpu {
    /// Online cores (the `cpuN` lines).
    pub n_cores: u32,
    /// Time per mode since boot, summed over all cores, in seconds.
    pub total: CpuTimes,
    /// Each online core.
    pub cores: Vec<CoreCpu>,
    /// Busy share of all cores over the interval: `1 - (idle + iowait) / total` (0..1).
    pub utilization: Option<f64>,
    /// `utilization × n_cores`: how many cores' worth of work ran.
    pub busy_cores: Option<f64>,
    /// Per-mode shares of all cores over the interval.
    pub ratios: Option<ModeRatios>,
    /// Context switches since boot (`ctxt`).
    pub context_switches: Option<u64>,
    /// Interrupts serviced since boot (`intr`, first field).
    pub interrupts: Option<u64>,
    /// Processes and threads created since boot (`processes`).
    pub forks: Option<u64>,
    /// Context switches per second over the interval.
    pub context_switches_per_second: Option<f64>,
    /// Interrupts per second over the interval.
    pub interrupts_per_second: Option<f64>,
    /// Forks per second over the interval.
    pub forks_per_second: Option<f64>,
    /// Threads runnable right now (`procs_running`).
    pub procs_running: Option<u64>,
    /// Threads blocked on IO right now (`procs_blocked`).
    pub procs_blocked: Option<u64>,
    /// Boot time, in seconds since the Unix epoch (`btime`).
    pub boot_time_seconds: Option<u64>,
}

/// The last reading of `/proc/stat`, for the next one's shares and rates.
#[derive(Debug)]
pub(crate) struct CpuState {
    ticks_per_second: f64,
    prev_total: Option<Ticks>,
    prev_cores: Vec<(u32, Ticks)>,
    cores: Vec<(u32, Ticks)>,
    context_switches: Option<Counter>,
    interrupts: Option<Counter>,
    forks: Option<Counter>,
}

impl CpuState {
    pub(crate) fn new() -> Self {
        CpuState::with_ticks(rustix::param::clock_ticks_per_second())
    }

    fn with_ticks(ticks_per_second: u64) -> Self {
        CpuState {
            // USER_HZ is 100 everywhere Linux runs; 0 would only come from a broken sysconf
            ticks_per_second: if ticks_per_second == 0 {
                100.0
            } else {
                ticks_per_second as f64
            },
            prev_total: None,
            prev_cores: Vec::new(),
            cores: Vec::new(),
            context_switches: None,
            interrupts: None,
            forks: None,
        }
    }

    /// Parses `/proc/stat`; `None` without a well-formed `cpu` line.
    pub(crate) fn update(&mut self, text: &str, now: Instant) -> Option<Cpu> {
        let tps = self.ticks_per_second;
        self.cores.clear();
        let mut total = None;
        let (mut ctxt, mut intr, mut forks) = (None, None, None);
        let (mut running, mut blocked, mut btime) = (None, None, None);
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(key) = words.next() else { continue };
            let first = |mut w: std::str::SplitWhitespace<'_>| w.next()?.parse::<u64>().ok();
            match key {
                "cpu" => total = parse_ticks(words),
                "ctxt" => ctxt = first(words),
                "intr" => intr = first(words),
                "processes" => forks = first(words),
                "procs_running" => running = first(words),
                "procs_blocked" => blocked = first(words),
                "btime" => btime = first(words),
                _ => {
                    if let Some(id) = core_id(key)
                        && let Some(ticks) = parse_ticks(words)
                    {
                        self.cores.push((id, ticks));
                    }
                }
            }
        }
        let context_switches_per_second = rate(&mut self.context_switches, ctxt, now);
        let interrupts_per_second = rate(&mut self.interrupts, intr, now);
        let forks_per_second = rate(&mut self.forks, forks, now);
        let Some(total) = total else {
            self.prev_total = None;
            self.prev_cores.clear();
            return None;
        };

        let all = self
            .prev_total
            .as_ref()
            .and_then(|prev| shares(prev, &total));
        let cores = self
            .cores
            .iter()
            .enumerate()
            .map(|(i, (id, ticks))| {
                // cores come in the same order each time; search only when one went offline
                let prev = (self.prev_cores.get(i).filter(|(p, _)| p == id))
                    .or_else(|| self.prev_cores.iter().find(|(p, _)| p == id));
                let shares = prev.and_then(|(_, prev)| shares(prev, ticks));
                CoreCpu {
                    id: *id,
                    times: CpuTimes::from_ticks(ticks, tps),
                    utilization: shares.map(|s| s.0),
                    ratios: shares.map(|s| s.1),
                }
            })
            .collect::<Vec<_>>();
        let n_cores = u32::try_from(cores.len()).unwrap_or(u32::MAX);
        self.prev_total = Some(total);
        std::mem::swap(&mut self.prev_cores, &mut self.cores);

        let utilization = all.map(|s| s.0);
        Some(Cpu {
            n_cores,
            total: CpuTimes::from_ticks(&total, tps),
            cores,
            utilization,
            busy_cores: utilization.map(|u| u * f64::from(n_cores)),
            ratios: all.map(|s| s.1),
            context_switches: ctxt,
            interrupts: intr,
            forks,
            context_switches_per_second,
            interrupts_per_second,
            forks_per_second,
            procs_running: running,
            procs_blocked: blocked,
            boot_time_seconds: btime,
        })
    }
}

/// `cpu12` → 12; `cpu` and other keys → `None`.
fn core_id(key: &str) -> Option<u32> {
    let digits = key.strip_prefix("cpu")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The mode columns of a `cpu` line: at least user, nice, system and idle (old kernels stop
/// there), missing later columns are zero; a garbage number drops the line.
fn parse_ticks<'a>(words: impl Iterator<Item = &'a str>) -> Option<Ticks> {
    let mut ticks = [0; 8];
    let mut n = 0;
    for (slot, word) in ticks.iter_mut().zip(words) {
        *slot = word.parse().ok()?;
        n += 1;
    }
    (n >= 4).then_some(ticks)
}

/// Busy share and per-mode shares between two readings; `None` when no tick passed.
fn shares(prev: &Ticks, cur: &Ticks) -> Option<(f64, ModeRatios)> {
    let mut delta = [0.0; 8];
    for ((d, p), c) in delta.iter_mut().zip(prev).zip(cur) {
        *d = c.saturating_sub(*p) as f64;
    }
    let all: f64 = delta.iter().sum();
    let share = |i: usize| ratio(delta[i], all);
    let idle = ratio(delta[IDLE] + delta[IOWAIT], all)?;
    Some((
        (1.0 - idle).clamp(0.0, 1.0),
        ModeRatios {
            user: share(0)?,
            system: share(2)?,
            iowait: share(IOWAIT)?,
            steal: share(7)?,
        },
    ))
}

/// The number of `cpuN` lines, `None` when there are none.
pub(crate) fn count_cores(text: &str) -> Option<u32> {
    let n = text
        .lines()
        .filter(|l| l.split_whitespace().next().and_then(core_id).is_some())
        .count();
    u32::try_from(n).ok().filter(|&n| n > 0)
}

impl Cpu {
    pub(crate) fn samples(&self, out: &mut Vec<Sample>) {
        out.push(Sample::new(&CPUS, f64::from(self.n_cores)));
        push(out, &UTILIZATION, &[], self.utilization);
        push(out, &BUSY_CORES, &[], self.busy_cores);
        if let Some(r) = &self.ratios {
            mode_ratios(out, "total", r);
        }
        for core in &self.cores {
            let id = core.id.to_string();
            for (mode, seconds) in MODES.iter().zip(core.times.by_mode()) {
                out.push(super::sample(
                    &SECONDS,
                    &[("cpu", &id), ("mode", mode)],
                    seconds,
                ));
            }
            push(out, &CORE_UTILIZATION, &[("cpu", &id)], core.utilization);
            if let Some(r) = &core.ratios {
                mode_ratios(out, &id, r);
            }
        }
        let as_f64 = |v: Option<u64>| v.map(|v| v as f64);
        push(out, &CONTEXT_SWITCHES, &[], as_f64(self.context_switches));
        push(out, &INTERRUPTS, &[], as_f64(self.interrupts));
        push(out, &FORKS, &[], as_f64(self.forks));
        push(
            out,
            &CONTEXT_SWITCHES_RATE,
            &[],
            self.context_switches_per_second,
        );
        push(out, &INTERRUPTS_RATE, &[], self.interrupts_per_second);
        push(out, &FORKS_RATE, &[], self.forks_per_second);
        push(out, &PROCS_RUNNING, &[], as_f64(self.procs_running));
        push(out, &PROCS_BLOCKED, &[], as_f64(self.procs_blocked));
        push(out, &BOOT_TIME, &[], as_f64(self.boot_time_seconds));
    }
}

fn mode_ratios(out: &mut Vec<Sample>, cpu: &str, r: &ModeRatios) {
    for (mode, v) in [
        ("user", r.user),
        ("system", r.system),
        ("iowait", r.iowait),
        ("steal", r.steal),
    ] {
        out.push(super::sample(
            &MODE_RATIO,
            &[("cpu", cpu), ("mode", mode)],
            v,
        ));
    }
}

descs! {
    SECONDS Counter "qm_host_cpu_seconds_total"
        "Seconds each core spent in each mode since boot.";
    CPUS Gauge "qm_host_cpus"
        "Online CPU cores.";
    UTILIZATION Rate "qm_host_cpu_utilization_ratio"
        "Busy share of all cores over the last interval.";
    BUSY_CORES Rate "qm_host_cpu_busy_cores"
        "Cores' worth of work that ran over the last interval.";
    CORE_UTILIZATION Rate "qm_host_cpu_core_utilization_ratio"
        "Busy share of one core over the last interval.";
    MODE_RATIO Rate "qm_host_cpu_mode_ratio"
        "Share of the last interval a core, or all of them, spent in a mode.";
    CONTEXT_SWITCHES Counter "qm_host_context_switches_total"
        "Context switches since boot.";
    INTERRUPTS Counter "qm_host_interrupts_total"
        "Interrupts serviced since boot.";
    FORKS Counter "qm_host_forks_total"
        "Processes and threads created since boot.";
    CONTEXT_SWITCHES_RATE Rate "qm_host_context_switches_per_second"
        "Context switches per second over the last interval.";
    INTERRUPTS_RATE Rate "qm_host_interrupts_per_second"
        "Interrupts per second over the last interval.";
    FORKS_RATE Rate "qm_host_forks_per_second"
        "Processes and threads created per second over the last interval.";
    PROCS_RUNNING Gauge "qm_host_procs_running"
        "Threads runnable right now.";
    PROCS_BLOCKED Gauge "qm_host_procs_blocked"
        "Threads blocked waiting for IO right now.";
    BOOT_TIME Gauge "qm_host_boot_time_seconds"
        "Boot time in seconds since the Unix epoch.";
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const STAT: &str = "cpu  400 0 200 1200 100 0 0 100 0 0\n\
        cpu0 200 0 100 600 50 0 0 50 0 0\n\
        cpu1 200 0 100 600 50 0 0 50 0 0\n\
        intr 1000 1 2 3\nctxt 5000\nbtime 1700000000\nprocesses 300\n\
        procs_running 2\nprocs_blocked 1\n";

    #[test]
    fn first_reading_has_counters_and_no_shares() {
        let mut s = CpuState::with_ticks(100);
        let cpu = s.update(STAT, Instant::now()).unwrap();
        assert_eq!(cpu.n_cores, 2);
        assert_eq!(cpu.total.user, 4.0);
        assert_eq!(cpu.total.steal, 1.0);
        assert_eq!(cpu.cores[1].times.idle, 6.0);
        assert_eq!(
            (cpu.context_switches, cpu.interrupts, cpu.forks),
            (Some(5000), Some(1000), Some(300))
        );
        assert_eq!((cpu.procs_running, cpu.procs_blocked), (Some(2), Some(1)));
        assert_eq!(cpu.boot_time_seconds, Some(1_700_000_000));
        assert_eq!(
            (cpu.utilization, cpu.ratios, cpu.cores[0].utilization),
            (None, None, None)
        );
    }

    #[test]
    fn shares_come_from_tick_deltas() {
        let t0 = Instant::now();
        let mut s = CpuState::with_ticks(100);
        s.update(STAT, t0);
        // +100 user, +100 idle on cpu0 only; iowait on cpu1 went backwards by 10
        let next = STAT
            .replace("cpu  400 0 200 1200", "cpu  500 0 200 1300")
            .replace("cpu0 200 0 100 600", "cpu0 300 0 100 700")
            .replace("cpu1 200 0 100 600 50", "cpu1 200 0 100 600 40")
            .replace("ctxt 5000", "ctxt 7000");
        let cpu = s.update(&next, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(cpu.utilization, Some(0.5));
        assert_eq!(cpu.busy_cores, Some(1.0));
        assert_eq!(cpu.ratios.unwrap().user, 0.5);
        assert_eq!(cpu.cores[0].utilization, Some(0.5));
        assert_eq!(cpu.cores[1].utilization, None, "no tick passed on cpu1");
        assert_eq!(cpu.context_switches_per_second, Some(1000.0));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let mut s = CpuState::with_ticks(100);
        let t =
            "cpu  1 2 3 4\ncpu0 1 2 x 4 5\ncpu1 1 2\ncpuX 1 2 3 4\nctxt\nprocesses -3\nbtime 12";
        let cpu = s.update(t, Instant::now()).unwrap();
        assert_eq!(cpu.n_cores, 0);
        assert_eq!(cpu.total.idle, 0.04);
        assert_eq!(
            (cpu.context_switches, cpu.forks, cpu.boot_time_seconds),
            (None, None, Some(12))
        );
        assert_eq!(s.update("", Instant::now()), None);
        assert_eq!(s.update("cpu  1 2 3", Instant::now()), None, "cut in half");
        assert_eq!(s.update("\u{0}garbage\n\n", Instant::now()), None);
    }

    #[test]
    fn cores_are_counted_from_cpu_lines() {
        assert_eq!(count_cores(STAT), Some(2));
        assert_eq!(count_cores("cpu 1 2 3 4\n"), None);
        assert_eq!(count_cores(""), None);
    }
}
