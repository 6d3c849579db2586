//! The process-tree path: an agent without a cgroup is its root process and the root's
//! descendants, found by walking `/proc/<pid>/task/<tid>/children` down from the root
//! (CONFIG_PROC_CHILDREN), or, where the kernel has no children files, from one scan of
//! `/proc/*/stat` per cycle building a parent map. Per process it reads `stat` (CPU ticks,
//! threads, RSS, start time), `io` (read and written bytes; `None` when not permitted) and
//! optionally the number of open descriptors, and keeps per-pid last values so that the
//! tree's totals only ever grow: a process that exits takes nothing back.

use std::collections::HashMap;
use std::fmt::Write as _;

use rustix::io::Errno;

use super::file::{Root, Slot};
use super::parse::{parse_io, parse_stat, parse_u64};
use super::{CollectOptions, Reading};

/// How descendants are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Descendants {
    /// Not known yet: the first root read tells.
    Unknown,
    ChildrenFiles,
    ParentMap,
}

/// How open descriptors are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FdCount {
    /// `st_size` of `/proc/<pid>/fd` (Linux ≥ 6.2): one `statx`.
    StatSize,
    /// Reading the directory.
    ReadDir,
}

/// One process of a tree, as last seen.
#[derive(Debug, Default)]
struct Process {
    start_time: u64,
    cpu_ticks: u64,
    io: Option<(u64, u64)>,
    seen: u64,
    stat: Slot,
    io_file: Slot,
    /// `io` is not ours to read (another user's process): not retried.
    io_denied: bool,
    children: Slot,
    /// The last count of open descriptors, and `<pid>/fd` kept for the next.
    open_files: Option<u64>,
    fd_dir: Slot,
    /// The threads other than the main one, with their kept `children` files, listed again
    /// when the thread count changes or one of them is gone.
    threads: Vec<(u32, Slot)>,
    threads_listed: Option<u64>,
}

/// One agent's tree between cycles.
#[derive(Debug, Default)]
pub(super) struct Tree {
    processes: HashMap<u32, Process>,
    root_start: Option<u64>,
    cpu_ticks: u64,
    read_bytes: u64,
    written_bytes: u64,
}

/// Reads process trees; one per collector, holding the reused buffers.
#[derive(Debug)]
pub(super) struct Walker {
    pub(super) root: Root,
    pub(super) fd_count: FdCount,
    descendants: Descendants,
    /// `(ppid, pid)` sorted, rebuilt at most once per cycle in `ParentMap` mode.
    parents: Vec<(u32, u32)>,
    parents_cycle: u64,
    cycle: u64,
    buf: Vec<u8>,
    dirbuf: Vec<u8>,
    path: String,
    stack: Vec<u32>,
    tids: Vec<u32>,
    ns_per_tick: u64,
    page_size: u64,
}

impl Walker {
    pub(super) fn new(root: Root, fd_count: FdCount) -> Self {
        let ticks = rustix::param::clock_ticks_per_second().max(1);
        Walker {
            root,
            fd_count,
            descendants: Descendants::Unknown,
            parents: Vec::new(),
            parents_cycle: 0,
            cycle: 0,
            buf: Vec::with_capacity(8192),
            dirbuf: Vec::new(),
            path: String::with_capacity(64),
            stack: Vec::new(),
            tids: Vec::new(),
            ns_per_tick: 1_000_000_000 / ticks,
            page_size: rustix::param::page_size() as u64,
        }
    }

    /// Starts a cycle: per-cycle caches are stale from now on.
    pub(super) fn next_cycle(&mut self) {
        self.cycle += 1;
    }

    /// Walks the tree rooted at `pid`. `None` when the root is gone: no stat, a zombie, or a
    /// start time other than `start_time` (or than the one first seen): the pid was reused.
    pub(super) fn walk(
        &mut self,
        tree: &mut Tree,
        pid: u32,
        start_time: Option<u64>,
        options: &CollectOptions,
    ) -> Option<Reading> {
        let cycle = self.cycle;
        let mut reading = Reading::default();
        let (mut threads, mut rss_pages, mut files, mut io_known, mut files_known) =
            (0, 0, 0, false, false);
        self.stack.clear();
        self.stack.push(pid);
        let mut is_root = true;
        while let Some(pid) = self.stack.pop() {
            let proc = tree.processes.entry(pid).or_default();
            if proc.seen == cycle {
                continue; // already counted: a loop in a racing parent map
            }
            let stat = match self.read(pid, "stat", &mut proc.stat) {
                Ok(()) => parse_stat(&self.buf),
                Err(_) => None,
            };
            let Some(stat) = stat else {
                tree.processes.remove(&pid);
                if is_root {
                    return None;
                }
                continue;
            };
            if is_root {
                let expected = start_time.or(tree.root_start);
                if matches!(stat.state, b'Z' | b'X')
                    || expected.is_some_and(|s| s != stat.start_time)
                {
                    return None;
                }
                tree.root_start = Some(stat.start_time);
            }
            let known = proc.seen != 0 && proc.start_time == stat.start_time;
            if !known {
                // A new process (or a reused pid): everything it did counts as new.
                *proc = Process {
                    start_time: stat.start_time,
                    stat: std::mem::take(&mut proc.stat),
                    ..Process::default()
                };
            }
            proc.seen = cycle;
            // A new process's ticks all count: it was forked since the last cycle (or this
            // is the first walk, whose totals are the tree's so far).
            let cpu = stat.utime.saturating_add(stat.stime);
            tree.cpu_ticks = tree
                .cpu_ticks
                .saturating_add(cpu.saturating_sub(proc.cpu_ticks));
            proc.cpu_ticks = cpu;
            reading.processes = Some(reading.processes.unwrap_or(0) + 1);
            threads += stat.num_threads;
            rss_pages += stat.rss_pages;

            let io = if proc.io_denied {
                None
            } else {
                match self.read(pid, "io", &mut proc.io_file) {
                    Ok(()) => parse_io(&self.buf),
                    Err(e) => {
                        proc.io_denied = matches!(e, Errno::ACCESS | Errno::PERM);
                        None
                    }
                }
            };
            if let Some((r, w)) = io {
                io_known = true;
                // A process seen before without io gets a baseline, not its whole history.
                let (pr, pw) = match proc.io {
                    Some(prev) => prev,
                    None if known => (r, w),
                    None => (0, 0),
                };
                tree.read_bytes = tree.read_bytes.saturating_add(r.saturating_sub(pr));
                tree.written_bytes = tree.written_bytes.saturating_add(w.saturating_sub(pw));
            }
            proc.io = io;

            let every = u64::from(options.open_files_every);
            if every > 0 {
                // Spread over cycles by pid, and counted at once for a new process.
                if proc.open_files.is_none() || (cycle + u64::from(pid)).is_multiple_of(every) {
                    proc.open_files = self.open_files(pid, &mut proc.fd_dir);
                }
                if let Some(n) = proc.open_files {
                    files += n;
                    files_known = true;
                }
            }
            self.push_children(pid, stat.num_threads, proc);
            is_root = false;
        }
        tree.processes.retain(|_, p| p.seen == cycle);
        reading.threads = Some(threads);
        reading.memory_bytes = Some(rss_pages.saturating_mul(self.page_size));
        reading.cpu_ns = Some(tree.cpu_ticks.saturating_mul(self.ns_per_tick));
        if io_known {
            reading.read_bytes = Some(tree.read_bytes);
            reading.written_bytes = Some(tree.written_bytes);
        }
        reading.open_files = files_known.then_some(files);
        Some(reading)
    }

    /// Reads `<pid>/<file>` through `slot`.
    fn read(&mut self, pid: u32, file: &str, slot: &mut Slot) -> Result<(), Errno> {
        if self.root.reread(slot, &mut self.buf) {
            return Ok(());
        }
        self.path.clear();
        let _ = write!(self.path, "{pid}/{file}");
        self.root
            .read(self.path.as_str(), Some(slot), &mut self.buf)
    }

    fn open_files(&mut self, pid: u32, slot: &mut Slot) -> Option<u64> {
        if let Some(n) = self.root.restat_size(slot) {
            return Some(n);
        }
        self.path.clear();
        let _ = write!(self.path, "{pid}/fd");
        match self.fd_count {
            FdCount::StatSize => self.root.stat_size(self.path.as_str(), Some(slot)).ok(),
            FdCount::ReadDir => {
                let mut n = 0;
                let counted =
                    self.root
                        .for_each_entry(self.path.as_str(), &mut self.dirbuf, |_| n += 1);
                counted.ok().map(|()| n)
            }
        }
    }

    /// Pushes the children of `pid` onto the walk's stack.
    fn push_children(&mut self, pid: u32, num_threads: u64, proc: &mut Process) {
        if self.descendants != Descendants::ParentMap {
            let slot = &mut proc.children;
            let read = if self.root.reread(slot, &mut self.buf) {
                Ok(())
            } else {
                self.path.clear();
                let _ = write!(self.path, "{pid}/task/{pid}/children");
                self.root
                    .read(self.path.as_str(), Some(slot), &mut self.buf)
            };
            match read {
                Ok(()) => {
                    self.descendants = Descendants::ChildrenFiles;
                    push_pids(&self.buf, &mut self.stack);
                    if num_threads > 1 {
                        self.push_thread_children(pid, num_threads, proc);
                    }
                    return;
                }
                Err(Errno::NOENT) if self.descendants == Descendants::Unknown => {
                    // No children file for a process that is still there: the kernel
                    // lacks them.
                    self.path.clear();
                    let _ = write!(self.path, "{pid}/stat");
                    if self.root.exists(self.path.as_str()) {
                        self.descendants = Descendants::ParentMap;
                    } else {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        self.build_parents();
        let from = self.parents.partition_point(|&(pp, _)| pp < pid);
        let kids = self.parents[from..]
            .iter()
            .take_while(|&&(pp, _)| pp == pid);
        self.stack.extend(kids.map(|&(_, p)| p));
    }

    /// The children of the threads other than the main one (a thread's children are its
    /// own, not the process's).
    fn push_thread_children(&mut self, pid: u32, num_threads: u64, proc: &mut Process) {
        if proc.threads_listed != Some(num_threads) {
            proc.threads_listed = None;
            self.path.clear();
            let _ = write!(self.path, "{pid}/task");
            self.tids.clear();
            let tids = &mut self.tids;
            let listed = self
                .root
                .for_each_entry(self.path.as_str(), &mut self.dirbuf, |name| {
                    if let Some(tid) = parse_u64(name).and_then(|t| u32::try_from(t).ok()) {
                        tids.push(tid);
                    }
                });
            if listed.is_err() {
                return;
            }
            // Keep the descriptors of the threads still there.
            let mut old = std::mem::take(&mut proc.threads);
            old.sort_unstable_by_key(|&(tid, _)| tid);
            for &tid in self.tids.iter().filter(|&&tid| tid != pid) {
                let slot = match old.binary_search_by_key(&tid, |&(t, _)| t) {
                    Ok(i) => std::mem::take(&mut old[i].1),
                    Err(_) => Slot::default(),
                };
                proc.threads.push((tid, slot));
            }
            proc.threads_listed = Some(num_threads);
        }
        for (tid, slot) in &mut proc.threads {
            let read = self.root.reread(slot, &mut self.buf) || {
                self.path.clear();
                let _ = write!(self.path, "{pid}/task/{tid}/children");
                let read = self
                    .root
                    .read(self.path.as_str(), Some(slot), &mut self.buf);
                read.is_ok()
            };
            if read {
                push_pids(&self.buf, &mut self.stack);
            } else {
                proc.threads_listed = None; // a thread is gone: list them again next time
            }
        }
    }

    /// One scan of `/proc/*/stat` per cycle: `(ppid, pid)` for every process.
    fn build_parents(&mut self) {
        if self.parents_cycle == self.cycle {
            return;
        }
        self.parents_cycle = self.cycle;
        self.parents.clear();
        self.tids.clear();
        let pids = &mut self.tids;
        let _ = self.root.for_each_entry(".", &mut self.dirbuf, |name| {
            if let Some(pid) = parse_u64(name).and_then(|p| u32::try_from(p).ok()) {
                pids.push(pid);
            }
        });
        for i in 0..self.tids.len() {
            let pid = self.tids[i];
            self.path.clear();
            let _ = write!(self.path, "{pid}/stat");
            if self
                .root
                .read(self.path.as_str(), None, &mut self.buf)
                .is_ok()
                && let Some(stat) = parse_stat(&self.buf)
            {
                self.parents.push((stat.ppid, pid));
            }
        }
        self.parents.sort_unstable();
    }
}

/// Pushes the pids of a `children` file (`"12 34 "`).
fn push_pids(b: &[u8], stack: &mut Vec<u32>) {
    let pids = b.split(|c| c.is_ascii_whitespace()).filter_map(parse_u64);
    stack.extend(pids.filter_map(|p| u32::try_from(p).ok()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_files_give_pids() {
        let mut stack = Vec::new();
        push_pids(b"12 34 x 56\n", &mut stack);
        assert_eq!(stack, [12, 34, 56]);
        push_pids(b"", &mut stack);
        assert_eq!(stack.len(), 3);
    }
}
