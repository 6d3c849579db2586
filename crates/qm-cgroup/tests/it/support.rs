//! What the tests share: fake cgroupfs trees in a tempdir ([`FakeTree`]), the check for a host
//! whose real cgroups the tests may use ([`host_root`]), and the guard that removes every group
//! a real test made, killing what is left in them, even when the test panics ([`Cleanup`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::fs::Access;
use rustix::process::{Pid, Signal};

/// A fake cgroup mount in a tempdir, removed on drop.
pub(crate) struct FakeTree {
    root: PathBuf,
}

impl FakeTree {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("qm-cgroup-it-{}-{n}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("make the tree");
        FakeTree { root }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.root
    }

    /// Writes `rel` (making its directories), as the kernel would have it.
    pub(crate) fn file(&self, rel: &str, content: &str) {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().expect("a parent")).expect("make dirs");
        fs::write(path, content).expect("write a file");
    }

    pub(crate) fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel)).expect("read a file")
    }

    /// Every directory (`dir/`) and file (`file = content`) under `rel`, sorted; links are
    /// listed as `link -> target` and not followed.
    pub(crate) fn dump(&self, rel: &str) -> String {
        let mut lines = Vec::new();
        walk(&self.root, &self.root.join(rel), &mut lines);
        lines.sort();
        lines.join("\n") + "\n"
    }
}

fn walk(root: &Path, dir: &Path, lines: &mut Vec<String>) {
    for entry in fs::read_dir(dir).expect("list a dir") {
        let path = entry.expect("an entry").path();
        let rel = path
            .strip_prefix(root)
            .expect("under the root")
            .display()
            .to_string();
        let meta = fs::symlink_metadata(&path).expect("stat");
        if meta.is_symlink() {
            lines.push(format!(
                "{rel} -> {}",
                fs::read_link(&path).expect("read a link").display()
            ));
        } else if meta.is_dir() {
            lines.push(format!("{rel}/"));
            walk(root, &path, lines);
        } else {
            let content = fs::read_to_string(&path).expect("read a file");
            lines.push(format!("{rel} = {}", content.trim_end()));
        }
    }
}

impl Drop for FakeTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The real cgroup mount, when this process may make groups there; otherwise prints one line
/// saying why `test` is skipped.
pub(crate) fn host_root(test: &str) -> Option<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup");
    let why = if !rustix::process::geteuid().is_root() {
        "not root"
    } else if rustix::fs::access(root.join("memory"), Access::WRITE_OK).is_err() {
        "/sys/fs/cgroup/memory (cgroup v1) is not writable here"
    } else {
        return Some(root);
    };
    eprintln!("skipped {test}: {why}");
    None
}

/// Removes `<root>/<hierarchy>/<parent>` from every hierarchy on drop, groups below it first,
/// thawing and killing whatever is still inside.
pub(crate) struct Cleanup {
    root: PathBuf,
    parent: String,
}

impl Cleanup {
    pub(crate) fn new(root: &Path, parent: &str) -> Self {
        Cleanup {
            root: root.to_path_buf(),
            parent: parent.to_owned(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let dir = entry.path().join(&self.parent);
            if dir.is_dir() {
                purge(&dir);
            }
        }
    }
}

fn purge(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                purge(&entry.path());
            }
        }
    }
    let _ = fs::write(dir.join("freezer.state"), "THAWED");
    let _ = fs::write(dir.join("cgroup.freeze"), "0");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("cleanup: could not remove {}", dir.display());
}

/// Retries `f` while it fails, for up to `secs` seconds (the kernel empties a group a moment
/// after its last process dies); the last result.
pub(crate) fn retry<T, E>(secs: u64, mut f: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            other => return other,
        }
    }
}

/// Polls `cond` for up to `secs` seconds.
pub(crate) fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    retry(secs, || if cond() { Ok(()) } else { Err(()) }).is_ok()
}
