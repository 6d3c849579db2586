//! The cgroup path: an agent with a cgroup is read from its cgroup's files alone, a dozen
//! small reads whatever the number of its processes. The layout under the mount is detected
//! once: v2 (`cgroup.controllers` at the root), v1 (a directory per controller), or hybrid
//! (v1 controllers plus a cgroup2 mount at `unified` that carries only PSI).

use std::path::{Path, PathBuf};

use super::file::{Root, Slot};
use super::parse::{count_numbers, first_u64, keyed, parse_u64, words};
use super::{Pressure, Psi, Reading, Stall};

/// How the cgroup mount is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// No cgroup filesystem found: agents with a cgroup are reported gone.
    Absent,
    /// The unified hierarchy at the mount.
    V2,
    /// One hierarchy per controller (`memory`, `cpuacct`, `pids`, `blkio`), no PSI.
    V1,
    /// v1 controllers plus a cgroup2 mount at `unified`, read for PSI only.
    Hybrid,
}

/// The v1 controller directories found (`cpuacct` may be `cpu,cpuacct`).
#[derive(Debug, Clone, Default)]
pub(super) struct Controllers {
    cpuacct: Option<&'static str>,
    memory: Option<&'static str>,
    pids: Option<&'static str>,
    blkio: Option<&'static str>,
}

impl Controllers {
    /// One controller directory, to tell the filesystem by.
    pub(super) fn any(&self) -> Option<&'static str> {
        self.memory.or(self.cpuacct).or(self.pids).or(self.blkio)
    }
}

/// Detects the layout under `root`.
pub(super) fn detect(root: &Root) -> (CgroupLayout, Controllers) {
    if root.exists("cgroup.controllers") {
        return (CgroupLayout::V2, Controllers::default());
    }
    let find = |names: &[&'static str]| names.iter().copied().find(|n| root.exists(*n));
    let c = Controllers {
        cpuacct: find(&["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]),
        memory: find(&["memory"]),
        pids: find(&["pids"]),
        blkio: find(&["blkio"]),
    };
    let layout = if c.any().is_none() {
        CgroupLayout::Absent
    } else if root.exists("unified/cgroup.procs") {
        CgroupLayout::Hybrid
    } else {
        CgroupLayout::V1
    };
    (layout, c)
}

/// The files read, each with its kept descriptor.
#[derive(Debug, Clone, Copy)]
enum File {
    Procs,
    Cpu,
    Memory,
    MemoryStat,
    Oom,
    Io,
    Pids,
    CpuPressure,
    MemoryPressure,
    IoPressure,
}

const N_FILES: usize = 10;

/// One agent's cgroup between cycles: its kept descriptors.
#[derive(Debug, Default)]
pub(super) struct Files {
    slots: [Slot; N_FILES],
}

/// Reads cgroups; one per collector.
#[derive(Debug)]
pub(super) struct Reader {
    pub(super) root: Root,
    pub(super) layout: CgroupLayout,
    controllers: Controllers,
    buf: Vec<u8>,
    path: PathBuf,
}

impl Reader {
    pub(super) fn new(root: Root, layout: CgroupLayout, controllers: Controllers) -> Self {
        Reader {
            root,
            layout,
            controllers,
            buf: Vec::with_capacity(8192),
            path: PathBuf::with_capacity(128),
        }
    }

    /// The controller directory of `file` (empty for v2), or `None` where the layout lacks it.
    fn dir(&self, file: File) -> Option<&'static str> {
        let c = &self.controllers;
        match (self.layout, file) {
            (CgroupLayout::Absent, _) => None,
            (CgroupLayout::V2, _) => Some(""),
            (_, File::Procs) => c.memory.or(c.cpuacct).or(c.pids),
            (_, File::Cpu) => c.cpuacct,
            (_, File::Memory | File::MemoryStat | File::Oom) => c.memory,
            (_, File::Io) => c.blkio,
            (_, File::Pids) => c.pids,
            (CgroupLayout::Hybrid, _) => Some("unified"),
            (CgroupLayout::V1, _) => None,
        }
    }

    fn name(&self, file: File) -> &'static str {
        let v2 = self.layout == CgroupLayout::V2;
        match file {
            File::Procs => "cgroup.procs",
            File::Cpu if v2 => "cpu.stat",
            File::Cpu => "cpuacct.usage",
            File::Memory if v2 => "memory.current",
            File::Memory => "memory.usage_in_bytes",
            File::MemoryStat => "memory.stat",
            File::Oom if v2 => "memory.events",
            File::Oom => "memory.oom_control",
            File::Io if v2 => "io.stat",
            File::Io => "blkio.throttle.io_service_bytes",
            File::Pids => "pids.current",
            File::CpuPressure => "cpu.pressure",
            File::MemoryPressure => "memory.pressure",
            File::IoPressure => "io.pressure",
        }
    }

    /// The memory usage file of the cgroup `rel`, relative to the mount (`None` where the
    /// layout has no memory controller or `rel` climbs out with `..`).
    pub(super) fn memory_file(&self, rel: &Path) -> Option<PathBuf> {
        if rel
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return None;
        }
        let mut path = PathBuf::from(self.dir(File::Memory)?);
        path.push(rel.strip_prefix("/").unwrap_or(rel));
        path.push(self.name(File::Memory));
        Some(path)
    }

    /// Reads `file` of the cgroup `rel` into the buffer; false when absent.
    fn read(&mut self, rel: &Path, files: &mut Files, file: File) -> bool {
        let slot = &mut files.slots[file as usize];
        if self.root.reread(slot, &mut self.buf) {
            return true;
        }
        let Some(dir) = self.dir(file) else {
            return false;
        };
        self.path.as_mut_os_string().clear();
        self.path.push(dir);
        self.path.push(rel.strip_prefix("/").unwrap_or(rel));
        self.path.push(self.name(file));
        self.root
            .read(self.path.as_path(), Some(slot), &mut self.buf)
            .is_ok()
    }

    /// One cgroup's values. `None` when the cgroup is gone or holds no process (or its path
    /// climbs out of the mount with `..`).
    /// Without `detail`, the slow-changing files (memory.stat, OOM, IO, PSI) are skipped.
    pub(super) fn read_cgroup(
        &mut self,
        rel: &Path,
        files: &mut Files,
        detail: bool,
    ) -> Option<Reading> {
        let outside = rel
            .components()
            .any(|c| c == std::path::Component::ParentDir);
        if outside {
            return None;
        }
        let v2 = self.layout == CgroupLayout::V2;
        let mut r = Reading::default();
        if self.read(rel, files, File::Pids) {
            r.threads = first_u64(&self.buf);
        }
        // cgroup.procs is the dearest file (the kernel builds a sorted pid list, on v1
        // especially): with pids.current to tell a live group, it is a detail
        if detail || r.threads.is_none() {
            if !self.read(rel, files, File::Procs) {
                return None;
            }
            r.processes = Some(count_numbers(&self.buf));
        }
        if r.processes.unwrap_or(0) == 0 && r.threads.unwrap_or(0) == 0 {
            return None;
        }
        if self.read(rel, files, File::Cpu) {
            r.cpu_ns = if v2 {
                keyed(&self.buf, b"usage_usec").map(|us| us.saturating_mul(1000))
            } else {
                first_u64(&self.buf)
            };
        }
        if self.read(rel, files, File::Memory) {
            r.memory_bytes = first_u64(&self.buf);
        }
        if !detail {
            return Some(r);
        }
        if self.read(rel, files, File::MemoryStat) {
            let (anon, file) = if v2 {
                (&b"anon"[..], &b"file"[..])
            } else {
                (&b"total_rss"[..], &b"total_cache"[..])
            };
            r.memory_anon_bytes = keyed(&self.buf, anon);
            r.memory_file_bytes = keyed(&self.buf, file);
        }
        if self.read(rel, files, File::Oom) {
            r.oom_kills = keyed(&self.buf, b"oom_kill");
        }
        if self.read(rel, files, File::Io) {
            let io = if v2 {
                io_stat(&self.buf)
            } else {
                blkio_bytes(&self.buf)
            };
            (r.read_bytes, r.written_bytes) = (Some(io.0), Some(io.1));
        }
        let mut pressure = Pressure::default();
        let psi = [
            (File::CpuPressure, &mut pressure.cpu),
            (File::MemoryPressure, &mut pressure.memory),
            (File::IoPressure, &mut pressure.io),
        ];
        for (file, slot) in psi {
            if self.read(rel, files, file) {
                *slot = parse_psi(&self.buf);
            }
        }
        if pressure.cpu.or(pressure.memory).or(pressure.io).is_some() {
            r.pressure = Some(pressure);
        }
        Some(r)
    }
}

/// v2 `io.stat`: `(rbytes, wbytes)` summed over devices.
pub(super) fn io_stat(b: &[u8]) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for w in words(b) {
        if let Some(v) = w.strip_prefix(b"rbytes=").and_then(parse_u64) {
            read = read.saturating_add(v);
        } else if let Some(v) = w.strip_prefix(b"wbytes=").and_then(parse_u64) {
            written = written.saturating_add(v);
        }
    }
    (read, written)
}

/// v1 `blkio.throttle.io_service_bytes`: `(Read, Write)` summed over `maj:min Op bytes`
/// lines (the closing `Total` line is not a device's).
pub(super) fn blkio_bytes(b: &[u8]) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for line in b.split(|&c| c == b'\n') {
        let mut w = words(line);
        let (Some(_dev), Some(op), Some(v)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let Some(v) = parse_u64(v) else { continue };
        match op {
            b"Read" => read = read.saturating_add(v),
            b"Write" => written = written.saturating_add(v),
            _ => {}
        }
    }
    (read, written)
}

/// A PSI file: the `some` line, and the `full` line where there is one.
pub(super) fn parse_psi(b: &[u8]) -> Option<Psi> {
    let mut some = None;
    let mut full = None;
    for line in b.split(|&c| c == b'\n') {
        let mut w = words(line);
        let slot = match w.next() {
            Some(b"some") => &mut some,
            Some(b"full") => &mut full,
            _ => continue,
        };
        *slot = parse_stall(w);
    }
    Some(Psi { some: some?, full })
}

fn parse_stall<'a>(words: impl Iterator<Item = &'a [u8]>) -> Option<Stall> {
    let (mut avg10, mut avg60, mut avg300, mut total_us) = (None, None, None, None);
    for w in words {
        let mut kv = w.splitn(2, |&c| c == b'=');
        let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
            continue;
        };
        let avg = || {
            std::str::from_utf8(v)
                .ok()?
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
        };
        match k {
            b"avg10" => avg10 = avg(),
            b"avg60" => avg60 = avg(),
            b"avg300" => avg300 = avg(),
            b"total" => total_us = parse_u64(v),
            _ => {}
        }
    }
    Some(Stall {
        avg10: avg10?,
        avg60: avg60?,
        avg300: avg300?,
        total_us: total_us?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_lines() {
        let t = b"some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\n\
                  full avg10=0.50 avg60=0.00 avg300=0.00 total=678\n";
        let p = parse_psi(t).unwrap();
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.total_us, 12345);
        assert_eq!(p.full.unwrap().avg10, 0.5);
        let some_only = parse_psi(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n").unwrap();
        assert_eq!(some_only.full, None);
        assert_eq!(parse_psi(b""), None);
        assert_eq!(parse_psi(b"some avg10=x avg60=0 avg300=0 total=1"), None);
        assert_eq!(parse_psi(b"some avg10=1.0 avg60=0.0"), None, "truncated");
    }

    #[test]
    fn io_files() {
        let v2 = b"8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n\
                   8:16 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(io_stat(v2), (101, 202));
        assert_eq!(io_stat(b""), (0, 0));
        assert_eq!(io_stat(b"8:0 rbytes=x wbytes=5"), (0, 5));
        let v1 = b"8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 1\n8:0 Total 12288\n\
                   8:16 Read 1\n8:16 Write garbage\nTotal 12289\n";
        assert_eq!(blkio_bytes(v1), (4097, 8192));
        assert_eq!(blkio_bytes(b"Total 0\n"), (0, 0));
    }
}
