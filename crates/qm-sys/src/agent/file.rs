//! Reading kernel files cheaply: every file is opened relative to a directory descriptor
//! (procfs, the cgroup mount), read with `pread` into one reused buffer, and, on a real procfs
//! or cgroupfs, may be kept open between cycles and re-read at offset 0 (the kernel
//! regenerates seq files on a read at offset 0), which turns open + read + close into one
//! system call. Kept descriptors are counted against one budget; a process or cgroup that is
//! gone makes its kept descriptors fail (`ESRCH`, `ENODEV`), and they are then closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::buffer::spare_capacity;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, RawDir};
use rustix::io::Errno;
use rustix::path::Arg;

/// The most kept descriptors, shared by every root of one collector.
#[derive(Debug, Clone)]
pub(super) struct Budget {
    kept: Arc<AtomicUsize>,
    max: usize,
}

impl Budget {
    pub(super) fn new(max: usize) -> Self {
        Budget {
            kept: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// How many descriptors are kept now.
    pub(super) fn kept(&self) -> usize {
        self.kept.load(Ordering::Relaxed)
    }

    fn take(&self, fd: OwnedFd) -> Option<Kept> {
        if self.kept.load(Ordering::Relaxed) >= self.max {
            return None;
        }
        self.kept.fetch_add(1, Ordering::Relaxed);
        Some(Kept {
            fd,
            kept: Arc::clone(&self.kept),
        })
    }
}

/// A descriptor kept open between cycles; closing it gives its place back.
#[derive(Debug)]
struct Kept {
    fd: OwnedFd,
    kept: Arc<AtomicUsize>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.kept.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where one file's descriptor is kept, if it is.
#[derive(Debug, Default)]
pub(super) struct Slot(Option<Kept>);

/// A directory files are read under.
#[derive(Debug)]
pub(super) struct Root {
    fd: Option<OwnedFd>,
    keep: bool,
    budget: Budget,
}

impl Root {
    /// Opens `path`; files under it are kept open between cycles only once
    /// [`Root::keep_files`] allows it. A directory that cannot be opened gives a root where
    /// every read fails with `ENOENT`.
    pub(super) fn open(path: &std::path::Path, budget: Budget) -> Self {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty()).ok();
        Root {
            fd,
            keep: false,
            budget,
        }
    }

    /// Lets reads keep their descriptors (only on procfs and cgroupfs, whose files are
    /// regenerated on every read at offset 0 and fail once their process or cgroup is gone).
    pub(super) fn keep_files(&mut self, keep: bool) {
        self.keep = keep && self.budget.max > 0;
    }

    /// The filesystem magic of `rel` under this root (`statfs.f_type`).
    pub(super) fn fs_type<P: Arg>(&self, rel: P) -> Option<i128> {
        let dir = self.fd.as_ref()?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir, rel, flags, Mode::empty()).ok()?;
        Some(i128::from(rustix::fs::fstatfs(&fd).ok()?.f_type))
    }

    /// Whether `rel` exists under this root.
    pub(super) fn exists<P: Arg>(&self, rel: P) -> bool {
        self.stat_size(rel, None).is_ok()
    }

    /// Re-reads the file kept in `slot` into `buf` (replacing its content). False when
    /// nothing is kept there or the read failed (the process or cgroup is gone, or the
    /// descriptor went stale); a failed descriptor is closed.
    pub(super) fn reread(&self, slot: &mut Slot, buf: &mut Vec<u8>) -> bool {
        let Some(kept) = &slot.0 else {
            return false;
        };
        if pread_all(&kept.fd, buf).is_ok() {
            return true;
        }
        slot.0 = None;
        false
    }

    /// Opens the file `rel` and reads it into `buf` (replacing its content), keeping the
    /// descriptor in `slot` when this root keeps files and the budget allows.
    pub(super) fn read<P: Arg>(
        &self,
        rel: P,
        slot: Option<&mut Slot>,
        buf: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let dir = self.fd.as_ref().ok_or(Errno::NOENT)?;
        let fd = rustix::fs::openat(dir, rel, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        pread_all(&fd, buf)?;
        self.keep(fd, slot);
        Ok(())
    }

    fn keep(&self, fd: OwnedFd, slot: Option<&mut Slot>) {
        if let Some(slot) = slot.filter(|_| self.keep) {
            slot.0 = self.budget.take(fd);
        }
    }

    /// `st_size` of the file kept in `slot` (see [`stat_size`](Self::stat_size)); `None`
    /// when nothing is kept or it failed (then closed).
    pub(super) fn restat_size(&self, slot: &mut Slot) -> Option<u64> {
        let kept = slot.0.as_ref()?;
        match rustix::fs::fstat(&kept.fd) {
            Ok(st) => Some(u64::try_from(st.st_size).unwrap_or(0)),
            Err(_) => {
                slot.0 = None;
                None
            }
        }
    }

    /// `st_size` of `rel` (on procfs ≥ 6.2, the number of open descriptors of
    /// `<pid>/fd`), keeping an `O_PATH` descriptor in `slot` when allowed, so that the next
    /// time is one `fstat`.
    pub(super) fn stat_size<P: Arg>(&self, rel: P, slot: Option<&mut Slot>) -> Result<u64, Errno> {
        let dir = self.fd.as_ref().ok_or(Errno::NOENT)?;
        let st = match slot.filter(|_| self.keep) {
            Some(slot) => {
                let flags = OFlags::PATH | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(dir, rel, flags, Mode::empty())?;
                let st = rustix::fs::fstat(&fd)?;
                self.keep(fd, Some(slot));
                st
            }
            None => rustix::fs::statat(dir, rel, AtFlags::empty())?,
        };
        Ok(u64::try_from(st.st_size).unwrap_or(0))
    }

    /// Calls `f` with the name of every entry of the directory `rel` but `.` and `..`;
    /// `dirbuf` is the reused buffer for `getdents`.
    pub(super) fn for_each_entry<P: Arg>(
        &self,
        rel: P,
        dirbuf: &mut Vec<u8>,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), Errno> {
        let dir = self.fd.as_ref().ok_or(Errno::NOENT)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir, rel, flags, Mode::empty())?;
        dirbuf.clear();
        if dirbuf.capacity() < 16 * 1024 {
            dirbuf.reserve(16 * 1024);
        }
        let mut entries = RawDir::new(fd.as_fd(), dirbuf.spare_capacity_mut());
        while let Some(entry) = entries.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                f(name);
            }
        }
        Ok(())
    }
}

/// Reads a whole file from offset 0 into `buf`.
///
/// A read that returns fewer bytes than asked, and fewer than 2 KiB, is taken as the end of
/// the file, saving the final empty read: regular files only read short at the end, and
/// the kernel's seq files (all of /proc and cgroupfs we read) only read short mid-file when
/// the next record does not fit the rest of their page-sized buffer, which leaves more than
/// 2 KiB read for records of a line each.
fn pread_all(fd: &OwnedFd, buf: &mut Vec<u8>) -> Result<(), Errno> {
    buf.clear();
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        let asked = buf.capacity() - buf.len();
        let offset = buf.len() as u64;
        let n = rustix::io::pread(fd, spare_capacity(buf), offset)?;
        if n == 0 || (n < asked && n < 2048) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("qm-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_whole_files_and_keeps_within_budget() {
        let dir = tempdir("budget");
        let big: String = (0..5000).map(|i| format!("{i}\n")).collect();
        std::fs::write(dir.join("big"), &big).unwrap();
        std::fs::write(dir.join("small"), "1 2 3").unwrap();
        let budget = Budget::new(1);
        let mut root = Root::open(&dir, budget.clone());
        root.keep_files(true);
        let (mut a, mut b, mut buf) = (Slot::default(), Slot::default(), Vec::new());
        assert!(!root.reread(&mut a, &mut buf), "nothing kept yet");
        root.read("big", Some(&mut a), &mut buf).unwrap();
        assert_eq!(buf, big.as_bytes());
        root.read("small", Some(&mut b), &mut buf).unwrap();
        assert_eq!(buf, b"1 2 3");
        assert_eq!(budget.kept(), 1, "the second file is not kept");
        assert!(!root.reread(&mut b, &mut buf));
        std::fs::write(dir.join("big"), "changed").unwrap();
        assert!(root.reread(&mut a, &mut buf));
        assert_eq!(buf, b"changed", "a kept file is re-read from offset 0");
        assert_eq!(root.restat_size(&mut a), Some(7));
        drop(a);
        assert_eq!(budget.kept(), 0);
        assert_eq!(root.read("absent", None, &mut buf), Err(Errno::NOENT));
        let mut names = Vec::new();
        root.for_each_entry(".", &mut Vec::new(), |n| names.push(n.to_vec()))
            .unwrap();
        names.sort();
        assert_eq!(names, [b"big".to_vec(), b"small".to_vec()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
