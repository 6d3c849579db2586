//! The hybrid driver: the v1 hierarchies carry the limits and the statistics, and the same
//! group under the cgroup2 mount at `<root>/unified` (which has no controllers) gives PSI,
//! `cgroup.freeze` and `cgroup.kill`. Processes join both.

use std::path::PathBuf;

use crate::{CgroupDriver, CgroupError, Group, GroupName, Kind, Limits, Stats, V1Driver, V2Driver};

/// Groups in v1 hierarchies plus the cgroup2 mount at `unified`.
#[derive(Debug, Clone)]
pub struct HybridDriver {
    v1: V1Driver,
    unified: V2Driver,
}

impl HybridDriver {
    /// Manages the groups under `<root>/<controller>/<parent>` and `<root>/unified/<parent>`.
    pub fn with_root(root: impl Into<PathBuf>, parent: &str) -> Result<Self, CgroupError> {
        let root = root.into();
        Ok(HybridDriver {
            unified: V2Driver::with_root(root.join("unified"), parent)?,
            v1: V1Driver::with_root(root, parent)?,
        })
    }
}

impl CgroupDriver for HybridDriver {
    fn kind(&self) -> Kind {
        Kind::Hybrid
    }

    fn create(&self, name: &GroupName, limits: &Limits) -> Result<Group, CgroupError> {
        self.v1.ensure(name)?;
        self.unified.ensure(name)?;
        self.v1.apply(name, limits)?;
        Ok(Group::describe(self, name))
    }

    fn apply(&self, name: &GroupName, limits: &Limits) -> Result<(), CgroupError> {
        self.v1.apply(name, limits)
    }

    fn add_process(&self, name: &GroupName, pid: u32) -> Result<(), CgroupError> {
        self.v1.add_process(name, pid)?;
        self.unified.add(name, pid)
    }

    /// The processes in the group in either hierarchy.
    fn procs(&self, name: &GroupName) -> Result<Vec<u32>, CgroupError> {
        let mut pids = self.v1.procs(name)?;
        match self.unified.procs_of(name) {
            Ok(more) => pids.extend(more),
            Err(CgroupError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn procs_files(&self, name: &GroupName) -> Vec<PathBuf> {
        let mut all = self.v1.procs_files(name);
        all.extend(self.unified.procs_files(name));
        all
    }

    /// Freezes through `cgroup.freeze`, or the v1 freezer on kernels without it.
    fn freeze(&self, name: &GroupName) -> Result<(), CgroupError> {
        if self.unified.can_freeze(name) {
            self.unified.set_frozen(name, true)
        } else {
            self.v1.freeze(name)
        }
    }

    fn thaw(&self, name: &GroupName) -> Result<(), CgroupError> {
        if self.unified.can_freeze(name) {
            self.unified.set_frozen(name, false)
        } else {
            self.v1.thaw(name)
        }
    }

    /// `cgroup.kill` on the unified group, then SIGKILL to whatever the v1 group still holds.
    fn kill(&self, name: &GroupName) -> Result<(), CgroupError> {
        self.unified.kill_group(name)?;
        self.v1.kill(name)
    }

    /// Removes the group from every hierarchy; the first error is returned.
    fn remove(&self, name: &GroupName) -> Result<(), CgroupError> {
        let v1 = self.v1.remove(name);
        let unified = self.unified.remove_group(name);
        v1.and(unified)
    }

    fn stats(&self, name: &GroupName) -> Result<Stats, CgroupError> {
        self.v1.stats(name)
    }

    fn oom_kills(&self, name: &GroupName) -> Result<u64, CgroupError> {
        self.v1.oom_kills(name)
    }

    fn relative_path(&self, name: &GroupName) -> PathBuf {
        self.v1.relative_path(name)
    }

    fn psi_path(&self, name: &GroupName) -> Option<PathBuf> {
        Some(self.unified.dir(name))
    }

    fn parent_memory_file(&self) -> PathBuf {
        self.v1.parent_memory_file()
    }

    fn parent_pressure_file(&self) -> Option<PathBuf> {
        self.unified.parent_pressure_file()
    }
}
