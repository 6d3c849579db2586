//! The host collectors: one [`HostCollector`] reads /proc (CPU time, load, memory, mounts, disk
//! and network counters, PSI, pid and file-descriptor limits), statvfs(2) for filesystem sizes
//! and, with the `nvml` feature, NVIDIA GPUs, into one typed [`HostSnapshot`] per call. It
//! keeps the previous counter readings, so every snapshot after the first carries rates. What
//! the kernel lacks or writes malformed is `None` or skipped, never an error for the snapshot.

/// `descs! { STATIC Kind "name" "help"; ... }`: one `static Desc` per metric name.
macro_rules! descs {
    ($($id:ident $kind:ident $name:literal $help:literal;)*) => {
        $(
            static $id: crate::metric::Desc = crate::metric::Desc {
                name: $name,
                help: $help,
                kind: crate::metric::Kind::$kind,
            };
        )*
    };
}

mod cpu;
mod disk;
mod fs;
mod gpu;
mod limits;
mod load;
mod memory;
mod net;
mod psi;
mod statfs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Paths;
use crate::metric::{Desc, Sample};
use crate::rate::Counter;

pub use cpu::{CoreCpu, Cpu, CpuTimes, ModeRatios};
pub use disk::{Disk, DiskCounters, DiskRates};
pub use fs::Filesystem;
pub use gpu::Gpu;
pub use limits::{Fds, Pids};
pub use load::LoadAvg;
pub use memory::Memory;
pub use net::{NetCounters, NetInterface, NetRates};
pub use psi::{Pressure, Psi, PsiLine};
pub use statfs::{FsStat, StatFs, Statvfs};

/// How a [`HostCollector`] reaches what is not a file under [`Paths`].
#[derive(Debug)]
pub struct HostOptions {
    /// Filesystem sizes: [`Statvfs`] on a real host, a fake in fixture tests.
    pub statfs: Box<dyn StatFs>,
    /// Whether to load NVML and read GPUs (only with the `nvml` feature; off in fixture tests).
    pub gpus: bool,
}

impl Default for HostOptions {
    /// statvfs(2) with a one-second timeout, and GPUs.
    fn default() -> Self {
        HostOptions {
            statfs: Box::new(Statvfs::default()),
            gpus: true,
        }
    }
}

/// One reading of the host. Rates and ratios over the interval are `None` in the first
/// snapshot, and wherever a counter went backwards (a reset) since the previous one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSnapshot {
    /// Time since the previous collection; `None` for the first.
    pub interval: Option<Duration>,
    /// CPU time, utilisation and scheduler counters (`/proc/stat`).
    pub cpu: Option<Cpu>,
    /// Load averages and runnable/total threads (`/proc/loadavg`).
    pub load: Option<LoadAvg>,
    /// Memory and swap (`/proc/meminfo`).
    pub memory: Option<Memory>,
    /// Real filesystems, one per device (mounts plus statvfs); see [`Filesystem`] for which.
    pub filesystems: Vec<Filesystem>,
    /// Whole block devices (`/proc/diskstats`): no partitions, loop, ram or zram devices.
    pub disks: Vec<Disk>,
    /// Network interfaces except `lo` (`/proc/net/dev`).
    pub networks: Vec<NetInterface>,
    /// Pressure stall information (`/proc/pressure/*`).
    pub pressure: Pressure,
    /// Threads in use and the kernel's pid and thread limits.
    pub pids: Option<Pids>,
    /// Open file handles and the system-wide maximum (`/proc/sys/fs/file-nr`).
    pub fds: Option<Fds>,
    /// NVIDIA GPUs; `None` without the `nvml` feature, without the library or without a GPU.
    pub gpus: Option<Vec<Gpu>>,
}

impl HostSnapshot {
    /// Appends the flat form of the snapshot to `out` (see [`crate::metric`]).
    pub fn samples(&self, out: &mut Vec<Sample>) {
        if let Some(cpu) = &self.cpu {
            cpu.samples(out);
        }
        if let Some(load) = &self.load {
            load.samples(out);
        }
        if let Some(memory) = &self.memory {
            memory.samples(out);
        }
        for filesystem in &self.filesystems {
            filesystem.samples(out);
        }
        for disk in &self.disks {
            disk.samples(out);
        }
        for interface in &self.networks {
            interface.samples(out);
        }
        self.pressure.samples(out);
        if let Some(pids) = &self.pids {
            pids.samples(out);
        }
        if let Some(fds) = &self.fds {
            fds.samples(out);
        }
        for gpu in self.gpus.iter().flatten() {
            gpu.samples(out);
        }
    }
}

/// The host's files, joined once.
#[derive(Debug)]
struct Files {
    stat: PathBuf,
    loadavg: PathBuf,
    meminfo: PathBuf,
    self_mounts: PathBuf,
    mounts: PathBuf,
    diskstats: PathBuf,
    sys_block: PathBuf,
    net_dev: PathBuf,
    pressure: [PathBuf; 3],
    pid_max: PathBuf,
    threads_max: PathBuf,
    file_nr: PathBuf,
}

impl Files {
    fn new(paths: &Paths) -> Self {
        let proc = &paths.proc;
        Files {
            stat: proc.join("stat"),
            loadavg: proc.join("loadavg"),
            meminfo: proc.join("meminfo"),
            self_mounts: proc.join("self/mounts"),
            mounts: proc.join("mounts"),
            diskstats: proc.join("diskstats"),
            sys_block: paths.sys.join("class/block"),
            net_dev: proc.join("net/dev"),
            pressure: psi::RESOURCES.map(|r| proc.join("pressure").join(r)),
            pid_max: proc.join("sys/kernel/pid_max"),
            threads_max: proc.join("sys/kernel/threads-max"),
            file_nr: proc.join("sys/fs/file-nr"),
        }
    }
}

/// Reads the host once per [`collect`](HostCollector::collect), keeping the previous counter
/// readings for rates and its read buffers between calls.
#[derive(Debug)]
pub struct HostCollector {
    files: Files,
    text: String,
    bytes: Vec<u8>,
    last: Option<Instant>,
    cpu: cpu::CpuState,
    disks: disk::DiskState,
    networks: net::NetState,
    pressure: psi::PsiState,
    mounts: fs::MountState,
    statfs: Box<dyn StatFs>,
    gpus: gpu::GpuReader,
}

impl HostCollector {
    /// A collector of the host at `paths`, with statvfs(2) and (with the feature) NVML.
    pub fn new(paths: &Paths) -> Self {
        HostCollector::with_options(paths, HostOptions::default())
    }

    /// A collector with its own statvfs (a fake in tests) and GPU choice. NVML, when asked
    /// for, is loaded here once.
    pub fn with_options(paths: &Paths, options: HostOptions) -> Self {
        HostCollector {
            files: Files::new(paths),
            text: String::with_capacity(16 * 1024),
            bytes: Vec::with_capacity(4 * 1024),
            last: None,
            cpu: cpu::CpuState::new(),
            disks: disk::DiskState::default(),
            networks: net::NetState::default(),
            pressure: psi::PsiState::default(),
            mounts: fs::MountState::default(),
            statfs: options.statfs,
            gpus: gpu::GpuReader::new(options.gpus),
        }
    }

    /// Reads everything once; `now` is the monotonic instant of the reading, against which
    /// the next call's rates are computed.
    pub fn collect(&mut self, now: Instant) -> HostSnapshot {
        let f = &self.files;
        let interval = self.last.and_then(|last| now.checked_duration_since(last));
        self.last = Some(now);

        let cpu = text(&f.stat, &mut self.text).and_then(|t| self.cpu.update(t, now));
        let load = text(&f.loadavg, &mut self.text).and_then(LoadAvg::parse);
        let memory = text(&f.meminfo, &mut self.text).and_then(Memory::parse);
        let filesystems = if crate::read::bytes_into(&f.self_mounts, &mut self.bytes)
            || crate::read::bytes_into(&f.mounts, &mut self.bytes)
        {
            self.mounts.filesystems(&self.bytes, self.statfs.as_mut())
        } else {
            Vec::new()
        };
        let disks = text(&f.diskstats, &mut self.text)
            .map(|t| self.disks.update(t, &f.sys_block, now))
            .unwrap_or_default();
        let networks = text(&f.net_dev, &mut self.text)
            .map(|t| self.networks.update(t, now))
            .unwrap_or_default();
        let pressure = self.pressure.update(&f.pressure, &mut self.text, now);
        let pids = Pids::read(load.as_ref(), &f.pid_max, &f.threads_max);
        let fds = text(&f.file_nr, &mut self.text).and_then(Fds::parse);
        let gpus = self.gpus.read(now);

        HostSnapshot {
            interval,
            cpu,
            load,
            memory,
            filesystems,
            disks,
            networks,
            pressure,
            pids,
            fds,
            gpus,
        }
    }
}

/// The host's capacity for `qm serve`: online cores (the `cpuN` lines of `/proc/stat`) and
/// total memory in bytes (`MemTotal`), each `None` when unreadable.
pub fn cores_and_memory(paths: &Paths) -> (Option<u32>, Option<u64>) {
    let cores = crate::read::text(&paths.proc.join("stat")).and_then(|t| cpu::count_cores(&t));
    let memory = crate::read::text(&paths.proc.join("meminfo"))
        .and_then(|t| crate::read::keyed(&t, "MemTotal"))
        .map(|kib| kib.saturating_mul(1024));
    (cores, memory)
}

/// The file's text, read into `buf`; `None` when it is missing or unreadable.
fn text<'a>(path: &Path, buf: &'a mut String) -> Option<&'a str> {
    crate::read::text_into(path, buf).then_some(buf.as_str())
}

/// Feeds `value` (when read) into the counter in `slot` and returns its per-second rate; the
/// first reading, a reset or a missing value give `None`.
fn rate(slot: &mut Option<Counter>, value: Option<u64>, now: Instant) -> Option<f64> {
    let Some(value) = value else {
        *slot = None;
        return None;
    };
    match slot {
        Some(counter) => counter.update(value, now),
        None => {
            *slot = Some(Counter::new(value, now));
            None
        }
    }
}

/// `part / whole`, `None` when `whole` is zero.
fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole)
}

/// A sample with labels in the given order.
fn sample(desc: &'static Desc, labels: &[(&'static str, &str)], value: f64) -> Sample {
    Sample {
        desc,
        labels: labels.iter().map(|&(k, v)| (k, v.to_owned())).collect(),
        value,
    }
}

/// Pushes a sample when the value is known.
fn push(
    out: &mut Vec<Sample>,
    desc: &'static Desc,
    labels: &[(&'static str, &str)],
    value: Option<f64>,
) {
    if let Some(value) = value {
        out.push(sample(desc, labels, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collector_can_move_to_its_own_thread() {
        fn send<T: Send>() {}
        send::<HostCollector>();
        send::<HostSnapshot>();
    }

    #[test]
    fn rates_start_on_the_second_reading_and_forget_missing_values() {
        let t0 = Instant::now();
        let mut slot = None;
        assert_eq!(rate(&mut slot, Some(10), t0), None);
        assert_eq!(
            rate(&mut slot, Some(30), t0 + Duration::from_secs(2)),
            Some(10.0)
        );
        assert_eq!(rate(&mut slot, None, t0 + Duration::from_secs(3)), None);
        assert_eq!(slot, None);
        assert_eq!((ratio(1.0, 4.0), ratio(1.0, 0.0)), (Some(0.25), None));
    }
}
