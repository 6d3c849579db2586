//! quartermaster's view of the host, read only: the host collectors (`host`: cpu, memory,
//! filesystems, disk and network IO, PSI, pids and file descriptors, GPUs), the per-agent
//! collectors (`agent`: process trees from /proc, or the agent's cgroup files when it has one)
//! and the flat form every consumer reads (`metric`). Every reader is rooted at a path
//! ([`Paths`]), so tests build a fake /proc or cgroupfs in a tempdir. What the kernel lacks is
//! `None`, never an error.

pub mod agent;
pub mod host;
pub mod metric;
pub mod peer;
pub mod probe;
pub mod process;
pub mod rate;
mod read;

use std::path::{Path, PathBuf};

/// Where the kernel's files are: the real host, or a fixture tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// procfs (`/proc`).
    pub proc: PathBuf,
    /// sysfs (`/sys`): block devices, network interfaces.
    pub sys: PathBuf,
    /// The cgroup mount (`/sys/fs/cgroup`); v2, v1 controllers under it, or both.
    pub cgroup: PathBuf,
}

impl Default for Paths {
    /// The running host.
    fn default() -> Self {
        Paths {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            cgroup: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

impl Paths {
    /// A fixture tree: `root/proc`, `root/sys`, `root/sys/fs/cgroup`.
    pub fn with_root(root: &Path) -> Self {
        Paths {
            proc: root.join("proc"),
            sys: root.join("sys"),
            cgroup: root.join("sys/fs/cgroup"),
        }
    }
}
