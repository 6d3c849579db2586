//! The fast path between two collections: a [`MemoryProbe`] that reads only what memory
//! pressure needs (`MemAvailable` and `MemTotal`, and the managed agents' parent cgroup's
//! usage: one file for all of them), cheap enough to run ten times a second; and
//! [`PsiTrigger`]s, the kernel's PSI triggers (Linux 5.2+), which make a file descriptor
//! readable for `POLLPRI` the moment stalls exceed a threshold within a window, so a stall
//! wakes the caller at once instead of at its next tick. Registering a trigger is the one
//! write this crate makes: it changes nothing on the host and ends when the file is closed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};

use crate::read;

/// One reading of the probe, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryReading {
    /// `MemTotal`, when /proc/meminfo could be read.
    pub host_total: Option<u64>,
    /// `MemTotal - MemAvailable`.
    pub host_used: Option<u64>,
    /// The managed parent cgroup's usage (`memory.current`, or v1 `memory.usage_in_bytes`).
    pub managed: Option<u64>,
}

/// Reads host memory and the managed agents' total memory from files held open and re-read
/// from offset 0 (no open or path walk per reading).
#[derive(Debug)]
pub struct MemoryProbe {
    meminfo: Option<File>,
    managed_path: Option<PathBuf>,
    managed: Option<File>,
    buf: String,
}

fn reread(file: &mut File, buf: &mut String) -> bool {
    buf.clear();
    let ok = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(buf));
    ok.is_ok()
}

impl MemoryProbe {
    /// A probe of `<proc>/meminfo` and, where given, the managed parent group's memory usage
    /// file (which may appear later: the parent is made with the first agent).
    pub fn new(proc: &Path, managed: Option<PathBuf>) -> Self {
        MemoryProbe {
            meminfo: File::open(proc.join("meminfo")).ok(),
            managed_path: managed,
            managed: None,
            buf: String::with_capacity(2048),
        }
    }

    /// One reading; a file that cannot be read is `None` in it.
    pub fn read(&mut self) -> MemoryReading {
        let mut r = MemoryReading::default();
        if let Some(f) = self.meminfo.as_mut()
            && reread(f, &mut self.buf)
        {
            let total = read::keyed(&self.buf, "MemTotal");
            let available = read::keyed(&self.buf, "MemAvailable");
            if let (Some(t), Some(a)) = (total, available) {
                r.host_total = Some(t * 1024);
                r.host_used = Some(t.saturating_sub(a) * 1024);
            }
        }
        r.managed = self.read_managed();
        r
    }

    /// The managed parent group's usage alone (what a collection, which has just read
    /// /proc/meminfo itself, still needs).
    pub fn read_managed(&mut self) -> Option<u64> {
        if self.managed.is_none() {
            self.managed = self.managed_path.as_ref().and_then(|p| File::open(p).ok());
        }
        let f = self.managed.as_mut()?;
        if reread(f, &mut self.buf) {
            self.buf
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
        } else {
            // the group was removed; open it afresh next time
            self.managed = None;
            None
        }
    }
}

/// Reads the memory usage of each agent's cgroup (one file each, held open and re-read from
/// offset 0): what the monitor reads ten times a second while memory is under pressure, so
/// a leak is seen in readings a tenth of a second apart, not a collection apart.
#[derive(Debug, Default)]
pub struct AgentMemoryProbe {
    agents: Vec<(String, PathBuf, Option<File>)>,
    buf: String,
}

impl AgentMemoryProbe {
    /// Reads `files` (agent id, memory usage file) from now on; files already open for the
    /// same agent and path stay open.
    pub fn set(&mut self, files: Vec<(String, PathBuf)>) {
        let same = files.len() == self.agents.len()
            && files
                .iter()
                .zip(&self.agents)
                .all(|((id, p), (i, q, _))| id == i && p == q);
        if same {
            return;
        }
        let mut old = std::mem::take(&mut self.agents);
        self.agents = files
            .into_iter()
            .map(|(id, path)| {
                let kept = old
                    .iter_mut()
                    .find(|(i, p, _)| *i == id && *p == path)
                    .and_then(|(_, _, f)| f.take());
                (id, path, kept)
            })
            .collect();
    }

    /// How many agents are read.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether no agent is read.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Reads every agent's usage, calling `each(id, bytes)` for those that could be read (a
    /// group that went away is skipped and its file opened afresh next time).
    pub fn read(&mut self, mut each: impl FnMut(&str, u64)) {
        for (id, path, file) in &mut self.agents {
            if file.is_none() {
                *file = File::open(&*path).ok();
            }
            let Some(f) = file.as_mut() else {
                continue;
            };
            if !reread(f, &mut self.buf) {
                *file = None;
                continue;
            }
            if let Some(v) = self
                .buf
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
            {
                each(id, v);
            }
        }
    }
}

/// Why a trigger could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The file could not be opened (no PSI, or no such group).
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// The kernel refused every form tried (PSI triggers need Linux 5.2; unprivileged
    /// callers need a window that is a multiple of 2 s).
    #[error("{path} refused a trigger: {source}")]
    Refused { path: PathBuf, source: io::Error },
}

/// A registered PSI trigger: `some` stalls of at least `stall` within `window`.
#[derive(Debug)]
pub struct PsiTrigger {
    file: File,
    path: PathBuf,
    stall: Duration,
    window: Duration,
}

impl PsiTrigger {
    /// Registers a trigger on the pressure file `path` (`/proc/pressure/memory`, a cgroup's
    /// `memory.pressure`) for `stall` of `some` stall per `window`. Where the kernel refuses
    /// that (an unprivileged caller may only use windows that are multiples of 2 s), the
    /// same share of a 2 s window is tried.
    pub fn register(path: &Path, stall: Duration, window: Duration) -> Result<Self, TriggerError> {
        let share = stall.as_secs_f64() / window.as_secs_f64().max(1e-3);
        let two = Duration::from_secs(2);
        let forms = [(stall, window), (two.mul_f64(share.clamp(0.0, 1.0)), two)];
        let mut last = None;
        for (stall, window) in forms {
            let mut file = File::options()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|source| TriggerError::Open {
                    path: path.to_owned(),
                    source,
                })?;
            let spec = format!("some {} {}\0", stall.as_micros(), window.as_micros());
            match file.write_all(spec.as_bytes()) {
                Ok(_) => {
                    return Ok(PsiTrigger {
                        file,
                        path: path.to_owned(),
                        stall,
                        window,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(TriggerError::Refused {
            path: path.to_owned(),
            source: last.unwrap_or_else(|| io::Error::other("no form tried")),
        })
    }

    /// The pressure file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stall and window the kernel accepted.
    pub fn spec(&self) -> (Duration, Duration) {
        (self.stall, self.window)
    }
}

/// Waits up to `timeout` for any of `triggers` to fire; answers which fired (by index). With
/// no triggers it sleeps for `timeout`. A trigger whose file reports an error (its cgroup was
/// removed) counts as fired, so the caller can drop it.
pub fn wait(triggers: &[PsiTrigger], timeout: Duration) -> Vec<usize> {
    if triggers.is_empty() {
        std::thread::sleep(timeout);
        return Vec::new();
    }
    let mut fds: Vec<PollFd<'_>> = triggers
        .iter()
        .map(|t| PollFd::from_borrowed_fd(t.file.as_fd(), PollFlags::PRI))
        .collect();
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(0) | Err(_) => Vec::new(),
        Ok(_) => fds
            .iter()
            .enumerate()
            .filter(|(_, fd)| !fd.revents().is_empty())
            .map(|(i, _)| i)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("qm-probe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_probe_reads_host_memory_and_the_managed_group_and_sees_changes() {
        let dir = temp("read");
        std::fs::write(
            dir.join("meminfo"),
            "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n",
        )
        .unwrap();
        let group = dir.join("memory.current");
        let mut p = MemoryProbe::new(&dir, Some(group.clone()));
        // the parent group is made with the first agent
        let r = p.read();
        assert_eq!(r.host_total, Some(1_024_000));
        assert_eq!(r.host_used, Some(750 * 1024));
        assert_eq!(r.managed, None);
        std::fs::write(&group, "4096\n").unwrap();
        assert_eq!(p.read().managed, Some(4096));
        // re-read in place: the same open file sees the new content
        std::fs::write(
            dir.join("meminfo"),
            "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 50 kB\n",
        )
        .unwrap();
        std::fs::write(&group, "8192\n").unwrap();
        let r = p.read();
        assert_eq!(r.host_used, Some(950 * 1024));
        assert_eq!(r.managed, Some(8192));
    }

    #[test]
    fn the_real_host_has_memory() {
        let mut p = MemoryProbe::new(Path::new("/proc"), None);
        let r = p.read();
        let (used, total) = (r.host_used.unwrap(), r.host_total.unwrap());
        assert!(total > 0 && used <= total, "{used} of {total}");
    }

    #[test]
    fn a_plain_file_refuses_a_trigger_and_says_which() {
        let dir = temp("refuse");
        let path = dir.join("memory.pressure");
        let e = PsiTrigger::register(&path, Duration::from_millis(100), Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(e, TriggerError::Open { .. }), "{e}");
        assert!(e.to_string().contains("memory.pressure"), "{e}");
    }

    /// A v1 memory group with a 32 MiB limit and its unified twin (this host's hybrid
    /// layout), removed on drop with anything left in them.
    struct StallGroups {
        memory: PathBuf,
        unified: PathBuf,
    }

    impl Drop for StallGroups {
        fn drop(&mut self) {
            for dir in [&self.memory, &self.unified] {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
            for dir in [&self.memory, &self.unified] {
                for _ in 0..50 {
                    if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    #[test]
    fn a_real_memory_stall_fires_the_trigger() {
        let root = Path::new("/sys/fs/cgroup");
        let name = format!("qm-stall-{}", std::process::id());
        let groups = StallGroups {
            memory: root.join("memory").join(&name),
            unified: root.join("unified").join(&name),
        };
        let made = std::fs::create_dir(&groups.memory).is_ok()
            && std::fs::create_dir(&groups.unified).is_ok()
            && std::fs::write(groups.memory.join("memory.limit_in_bytes"), "33554432").is_ok();
        if !made || !groups.unified.join("memory.pressure").exists() {
            eprintln!("skipped: needs root and the hybrid layout (v1 memory, unified PSI)");
            return;
        }
        let t = PsiTrigger::register(
            &groups.unified.join("memory.pressure"),
            Duration::from_millis(150),
            Duration::from_secs(1),
        )
        .unwrap();
        // a process in the group writes 128 MiB of page cache against its 32 MiB limit, then
        // reads it back at random: every read refaults, and the group stalls on memory
        let file = std::env::temp_dir().join(format!("{name}.bin"));
        let script = format!(
            "echo $$ > {m}/cgroup.procs && echo $$ > {u}/cgroup.procs && \
             dd if=/dev/zero of={f} bs=1M count=128 status=none && \
             exec python3 -c 'import mmap, random\nf = open(\"{f}\", \"rb\")\n\
             m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\nn = len(m) // 4096\n\
             while True: m[random.randrange(n) * 4096]'",
            m = groups.memory.display(),
            u = groups.unified.display(),
            f = file.display()
        );
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let mut fired = false;
        while !fired && t0.elapsed() < Duration::from_secs(30) {
            fired = wait(std::slice::from_ref(&t), Duration::from_millis(500)) == [0];
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the thrashing process ended early: {status}");
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        drop(groups);
        let _ = std::fs::remove_file(&file);
        assert!(fired, "no trigger in 30 s of thrashing");
    }

    #[test]
    fn a_real_trigger_registers_and_times_out_quietly() {
        // the kernel's own files: the unified mount's root group, else /proc/pressure
        let candidates = [
            Path::new("/sys/fs/cgroup/unified/memory.pressure"),
            Path::new("/sys/fs/cgroup/memory.pressure"),
            Path::new("/proc/pressure/memory"),
        ];
        let Some(t) = candidates.iter().find_map(|p| {
            PsiTrigger::register(p, Duration::from_millis(150), Duration::from_secs(1)).ok()
        }) else {
            eprintln!("no PSI trigger can be registered here");
            return;
        };
        let (stall, window) = t.spec();
        assert!(stall < window, "{stall:?} {window:?}");
        // nothing stalls on an idle host for 150 ms per second: the wait times out
        let t0 = Instant::now();
        if wait(std::slice::from_ref(&t), Duration::from_millis(50)).is_empty() {
            assert!(t0.elapsed() >= Duration::from_millis(40));
        }
    }
}
