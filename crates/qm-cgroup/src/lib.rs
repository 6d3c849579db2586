//! quartermaster's hand on the host: it puts each agent in a cgroup of its own and enforces
//! that agent's limits there. One [`CgroupDriver`] trait with three drivers, each rooted at a
//! path given to it (the real mount, or a fake tree in a tempdir): [`V2Driver`] (the unified
//! hierarchy), [`V1Driver`] (a directory per controller) and [`HybridDriver`] (v1 for limits
//! and statistics, the cgroup2 mount at `unified` for PSI, freezing and killing); [`detect`]
//! picks one. [`spawn`] starts a process already inside a group. Policy (which agent gets
//! what) lives elsewhere: [`limits_for`] and [`oom_score_adj_for`] only translate a QoS class
//! and its numbers into kernel settings the way Kubernetes does.
//!
//! This is the one crate of the workspace that may use `unsafe` (denied here, allowed on two
//! functions of `spawn.rs`): `CommandExt::pre_exec`, and closing inherited descriptors in a
//! held child.

mod detect;
mod files;
mod hybrid;
mod limits;
mod name;
mod spawn;
mod v1;
mod v2;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use detect::detect;
pub use hybrid::HybridDriver;
pub use limits::{
    CPU_PERIOD_US, Limits, Maximums, Qos, Requests, UnknownQos, limits_for,
    oom_score_adj_burstable, oom_score_adj_for, quota_from_millis, shares_from_millis,
    weight_from_shares,
};
pub use name::GroupName;
pub use spawn::{Identity, SpawnOptions, hold_pipe, spawn};
pub use v1::V1Driver;
pub use v2::V2Driver;

/// Manages the groups under one parent (e.g. `qm`): one group per agent, named by the agent's
/// id. Every method is a few small reads or writes of the group's files; none blocks for long
/// except [`kill`](Self::kill), which waits (bounded) for the group to empty.
pub trait CgroupDriver: Send + Sync + fmt::Debug {
    /// The layout this driver manages.
    fn kind(&self) -> Kind;

    /// Creates the group (and the parent, enabling its controllers where the layout needs it)
    /// and applies `limits`. An existing group is reused and its limits re-applied.
    fn create(&self, name: &GroupName, limits: &Limits) -> Result<Group, CgroupError>;

    /// Writes `limits` to the group. `None` writes "unlimited", so re-applying removes a limit.
    fn apply(&self, name: &GroupName, limits: &Limits) -> Result<(), CgroupError>;

    /// Moves the process `pid` (with all its threads) into the group, in every hierarchy.
    fn add_process(&self, name: &GroupName, pid: u32) -> Result<(), CgroupError>;

    /// The processes in the group (not in groups below it).
    fn procs(&self, name: &GroupName) -> Result<Vec<u32>, CgroupError>;

    /// The `cgroup.procs` files a new process writes itself into to join the group, one per
    /// hierarchy (for [`SpawnOptions::cgroup_procs`]).
    fn procs_files(&self, name: &GroupName) -> Vec<PathBuf>;

    /// Stops every process in the group; returns once the kernel has been asked (freezing
    /// completes asynchronously).
    fn freeze(&self, name: &GroupName) -> Result<(), CgroupError>;

    /// Lets a frozen group run again.
    fn thaw(&self, name: &GroupName) -> Result<(), CgroupError>;

    /// Kills every process in the group (`cgroup.kill` where the kernel has it, else SIGKILL to
    /// each process until none is left) and waits, a few seconds at most, until the group is
    /// empty; [`CgroupError::Busy`] when it is not by then. A missing group is not an error.
    fn kill(&self, name: &GroupName) -> Result<(), CgroupError>;

    /// Removes the group, which must be empty ([`CgroupError::Busy`] when it still holds
    /// processes). A group that does not exist is not an error. The kernel empties a group a
    /// moment after its last process exits, so a caller removing right after a kill retries.
    fn remove(&self, name: &GroupName) -> Result<(), CgroupError>;

    /// The group's usage counters; a counter the kernel does not keep here is `None`.
    fn stats(&self, name: &GroupName) -> Result<Stats, CgroupError>;

    /// How many times the kernel's OOM killer killed a process in the group (0 where the
    /// kernel does not count).
    fn oom_kills(&self, name: &GroupName) -> Result<u64, CgroupError>;

    /// The group's path relative to the mount (and to each v1 controller's directory), e.g.
    /// `qm/coder-1`: what the monitor's cgroup reader takes.
    fn relative_path(&self, name: &GroupName) -> PathBuf;

    /// The directory holding the group's PSI files (`cpu.pressure`, `memory.pressure`,
    /// `io.pressure`), where the layout has them.
    fn psi_path(&self, name: &GroupName) -> Option<PathBuf>;

    /// The parent's memory usage file (v2 `memory.current`, v1 `memory.usage_in_bytes`,
    /// hierarchical): every managed agent's memory in one read, for the pressure probe. It
    /// appears with the first group.
    fn parent_memory_file(&self) -> PathBuf;

    /// The parent's `memory.pressure` (PSI for all the agents together), where the layout has
    /// PSI.
    fn parent_pressure_file(&self) -> Option<PathBuf>;
}

/// How the cgroup mount is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The unified hierarchy (cgroup2) at the mount, with its controllers.
    V2,
    /// One hierarchy per controller (cgroup v1), no PSI, no `cgroup.kill`.
    V1,
    /// v1 controllers plus a cgroup2 mount at `unified` without controllers, used for PSI,
    /// freezing and killing.
    Hybrid,
}

/// One group's usage counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Memory charged to the group (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    pub memory_bytes: Option<u64>,
    /// OOM kills in the group (v2 `memory.events`, v1 `memory.oom_control`).
    pub oom_kills: Option<u64>,
    /// CPU time used, in microseconds (v2 `cpu.stat` `usage_usec`, v1 `cpuacct.usage`).
    pub cpu_usage_us: Option<u64>,
    /// Tasks (threads) in the group (`pids.current`).
    pub pids: Option<u64>,
}

/// A group as [`CgroupDriver::create`] left it: where it is, and how to join it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    name: GroupName,
    relative_path: PathBuf,
    procs_files: Vec<PathBuf>,
    psi_path: Option<PathBuf>,
}

impl Group {
    fn describe(driver: &dyn CgroupDriver, name: &GroupName) -> Self {
        Group {
            name: name.clone(),
            relative_path: driver.relative_path(name),
            procs_files: driver.procs_files(name),
            psi_path: driver.psi_path(name),
        }
    }

    /// The group's name (the agent's id).
    pub fn name(&self) -> &GroupName {
        &self.name
    }

    /// See [`CgroupDriver::relative_path`].
    pub fn relative_path(&self) -> &Path {
        &self.relative_path
    }

    /// See [`CgroupDriver::procs_files`].
    pub fn procs_files(&self) -> &[PathBuf] {
        &self.procs_files
    }

    /// See [`CgroupDriver::psi_path`].
    pub fn psi_path(&self) -> Option<&Path> {
        self.psi_path.as_deref()
    }
}

/// What went wrong managing a group; every variant that touched a file names it.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A group or parent name outside `[A-Za-z0-9._-]{1,128}` (or `.`, or containing `..`).
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The group (or one of its files) does not exist.
    #[error("{} does not exist", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// The kernel refused (`EACCES`, `EPERM`): not root, or the hierarchy is not delegated.
    #[error("permission denied on {}", path.display())]
    PermissionDenied {
        /// The path refused.
        path: PathBuf,
    },
    /// The kernel said `EBUSY`: a group still holding processes or groups cannot be removed, a
    /// v1 memory limit cannot go below the usage, or processes outlived a kill.
    #[error("{} is busy", path.display())]
    Busy {
        /// The group directory or file.
        path: PathBuf,
    },
    /// A limit was asked of a controller that this hierarchy lacks (or a freezer that it lacks).
    #[error("no {what} controller for {}", path.display())]
    Unsupported {
        /// The controller.
        what: &'static str,
        /// The group directory.
        path: PathBuf,
    },
    /// Any other failure of a file operation.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// The operation (`read`, `write`, `create`, `remove`, `list`).
        op: &'static str,
        /// The path operated on.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Why no driver could be made for a mount.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Neither a cgroup2 mount with the memory controller nor v1 controllers under `root`.
    #[error("no usable cgroup hierarchy under {}", root.display())]
    Unsupported {
        /// The mount looked at.
        root: PathBuf,
    },
    /// The parent name is invalid, or the mount could not be read.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}
