//! Filesystem sizes behind the [`StatFs`] trait, so fixture tests fake them. The real one,
//! [`Statvfs`], calls statvfs(2) on a worker thread and waits a bounded time: a mount that
//! hangs (a dead NFS server) is skipped, and stays skipped without waiting again until its
//! call finally returns, instead of stalling every later collection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Sizes of one filesystem, as statvfs(2) tells them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStat {
    /// Size in bytes.
    pub size_bytes: u64,
    /// Free bytes, including those reserved for root.
    pub free_bytes: u64,
    /// Free bytes an unprivileged user can have.
    pub avail_bytes: u64,
    /// Inodes.
    pub files: u64,
    /// Free inodes.
    pub files_free: u64,
}

/// Where filesystem sizes come from.
pub trait StatFs: Send + fmt::Debug {
    /// The sizes of the filesystem mounted at `mount_point`; `None` when the call fails or
    /// does not answer in time.
    fn stat(&mut self, mount_point: &Path) -> Option<FsStat>;
}

/// statvfs(2) with a timeout.
#[derive(Debug)]
pub struct Statvfs {
    timeout: Duration,
    call: fn(&Path) -> Option<FsStat>,
    worker: Option<Worker>,
    /// Mount points with a call outstanding; the worker removes each once its call returns.
    pending: Arc<Mutex<Vec<PathBuf>>>,
}

#[derive(Debug)]
struct Worker {
    requests: Sender<PathBuf>,
    answers: Receiver<Option<FsStat>>,
}

impl Default for Statvfs {
    /// Waits at most one second per mount.
    fn default() -> Self {
        Statvfs::new(Duration::from_secs(1))
    }
}

impl Statvfs {
    /// statvfs(2), waiting at most `timeout` for each mount.
    pub fn new(timeout: Duration) -> Self {
        Statvfs::with_call(timeout, statvfs)
    }

    fn with_call(timeout: Duration, call: fn(&Path) -> Option<FsStat>) -> Self {
        Statvfs {
            timeout,
            call,
            worker: None,
            pending: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn spawn(&self) -> Option<Worker> {
        let (requests, inbox) = mpsc::channel::<PathBuf>();
        let (outbox, answers) = mpsc::channel();
        let (call, pending) = (self.call, Arc::clone(&self.pending));
        std::thread::Builder::new()
            .name("qm-statvfs".to_owned())
            .spawn(move || {
                // ends when the collector drops or abandons this worker
                while let Ok(path) = inbox.recv() {
                    let answer = call(&path);
                    lock(&pending).retain(|p| *p != path);
                    if outbox.send(answer).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Worker { requests, answers })
    }
}

impl StatFs for Statvfs {
    fn stat(&mut self, mount_point: &Path) -> Option<FsStat> {
        if lock(&self.pending).iter().any(|p| p == mount_point) {
            return None;
        }
        if self.worker.is_none() {
            self.worker = self.spawn();
        }
        let Some(worker) = &self.worker else {
            // no thread to be had: call inline rather than report nothing
            return (self.call)(mount_point);
        };
        lock(&self.pending).push(mount_point.to_path_buf());
        if worker.requests.send(mount_point.to_path_buf()).is_err() {
            lock(&self.pending).retain(|p| p != mount_point);
            self.worker = None;
            return None;
        }
        match worker.answers.recv_timeout(self.timeout) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                // the stuck thread is left to finish on its own; the next mount gets a new one
                self.worker = None;
                None
            }
        }
    }
}

fn lock(pending: &Mutex<Vec<PathBuf>>) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The real call; sizes are in fragments (`f_frsize`), or blocks on filesystems that leave
/// the fragment size zero.
fn statvfs(path: &Path) -> Option<FsStat> {
    let s = rustix::fs::statvfs(path).ok()?;
    let unit = if s.f_frsize > 0 {
        s.f_frsize
    } else {
        s.f_bsize
    };
    Some(FsStat {
        size_bytes: s.f_blocks.saturating_mul(unit),
        free_bytes: s.f_bfree.saturating_mul(unit),
        avail_bytes: s.f_bavail.saturating_mul(unit),
        files: s.f_files,
        files_free: s.f_ffree,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use super::*;

    static RELEASED: AtomicBool = AtomicBool::new(false);

    /// Hangs on `/slow` until the test releases it.
    fn hanging(path: &Path) -> Option<FsStat> {
        while path == Path::new("/slow") && !RELEASED.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Some(FsStat {
            size_bytes: 1,
            ..FsStat::default()
        })
    }

    #[test]
    fn real_statvfs_sees_the_root_and_not_a_missing_path() {
        let mut s = Statvfs::default();
        assert!(s.stat(Path::new("/")).is_some_and(|st| st.size_bytes > 0));
        assert_eq!(s.stat(Path::new("/nonexistent/qm-sys")), None);
    }

    #[test]
    fn a_hanging_mount_is_skipped_until_it_answers() {
        let mut s = Statvfs::with_call(Duration::from_millis(20), hanging);
        assert_eq!(s.stat(Path::new("/slow")), None, "timed out");
        assert_eq!(s.stat(Path::new("/slow")), None, "still pending: skipped");
        assert!(
            s.stat(Path::new("/fast")).is_some(),
            "a new worker serves the others"
        );
        RELEASED.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.stat(Path::new("/slow")).is_none() {
            assert!(Instant::now() < deadline, "the hung call never came back");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
