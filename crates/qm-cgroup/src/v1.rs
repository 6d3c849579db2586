//! The v1 driver: a group is one directory per hierarchy, `<root>/<controller>/<parent>/<name>`.
//! The hierarchies are found by reading the mount's directories once, whether `cpu` and
//! `cpuacct` are mounted apart or together (`cpu,cpuacct`, with `cpu` and `cpuacct` as links to
//! it); the driver joins groups in `memory`, `cpu`, `cpuacct`, `pids`, `freezer` and `blkio`
//! (the last for IO accounting only), and leaves `cpuset` and the others alone.

use std::fs;
use std::path::{Path, PathBuf};

use crate::files;
use crate::limits::{CPU_PERIOD_US, quota_from_millis};
use crate::name::Parent;
use crate::{CgroupDriver, CgroupError, Group, GroupName, Kind, Limits, Stats};

/// The v1 controllers this driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Cpu,
    Cpuacct,
    Pids,
    Freezer,
    Blkio,
}

impl Controller {
    const ALL: [Controller; 6] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Pids,
        Controller::Freezer,
        Controller::Blkio,
    ];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Pids => "pids",
            Controller::Freezer => "freezer",
            Controller::Blkio => "blkio",
        }
    }
}

/// One mounted hierarchy and the controllers it carries.
#[derive(Debug, Clone)]
struct Hierarchy {
    dir: PathBuf,
    real: PathBuf,
    controllers: Vec<Controller>,
}

/// Groups in the v1 hierarchies under a path (`/sys/fs/cgroup`, or a fake tree).
#[derive(Debug, Clone)]
pub struct V1Driver {
    root: PathBuf,
    parent: Parent,
    hierarchies: Vec<Hierarchy>,
}

impl V1Driver {
    /// Finds the controllers mounted under `root` and manages the groups under each
    /// `<root>/<controller>/<parent>`; `Unsupported` without a `memory` hierarchy.
    pub fn with_root(root: impl Into<PathBuf>, parent: &str) -> Result<Self, CgroupError> {
        let root = root.into();
        let parent = Parent::new(parent)?;
        let list = fs::read_dir(&root).map_err(|e| files::error("list", &root, e))?;
        let mut names: Vec<String> = list
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for name in names {
            let controllers: Vec<Controller> = name
                .split(',')
                .filter_map(|part| Controller::ALL.into_iter().find(|c| c.name() == part))
                .collect();
            let dir = root.join(&name);
            if controllers.is_empty() || !dir.is_dir() {
                continue;
            }
            let real = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            match hierarchies.iter_mut().find(|h| h.real == real) {
                Some(h) => h.controllers.extend(controllers),
                None => hierarchies.push(Hierarchy {
                    dir,
                    real,
                    controllers,
                }),
            }
        }
        let driver = V1Driver {
            root,
            parent,
            hierarchies,
        };
        if driver.mount(Controller::Memory).is_none() {
            return Err(CgroupError::Unsupported {
                what: "memory",
                path: driver.root,
            });
        }
        Ok(driver)
    }

    fn mount(&self, controller: Controller) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.contains(&controller))
            .map(|h| h.dir.as_path())
    }

    /// The group's directory in `controller`'s hierarchy, where it is mounted.
    fn dir(&self, controller: Controller, name: &GroupName) -> Option<PathBuf> {
        Some(self.mount(controller)?.join(self.parent.group(name)))
    }

    /// The group's directory in the memory hierarchy, the one its processes are read from.
    fn memory_dir(&self, name: &GroupName) -> PathBuf {
        let base = self.mount(Controller::Memory).unwrap_or(&self.root);
        base.join(self.parent.group(name))
    }

    /// The group's directory in every hierarchy.
    fn dirs(&self, name: &GroupName) -> impl Iterator<Item = PathBuf> {
        let group = self.parent.group(name);
        self.hierarchies.iter().map(move |h| h.dir.join(&group))
    }

    pub(crate) fn ensure(&self, name: &GroupName) -> Result<(), CgroupError> {
        let group = self.parent.group(name);
        for h in &self.hierarchies {
            files::make_dirs(&h.dir, &group)?;
        }
        Ok(())
    }

    fn set_freezer(&self, name: &GroupName, state: &str) -> Result<(), CgroupError> {
        let Some(dir) = self.dir(Controller::Freezer, name) else {
            return Err(CgroupError::Unsupported {
                what: "freezer",
                path: self.memory_dir(name),
            });
        };
        files::require_dir(&dir)?;
        files::write(&dir.join("freezer.state"), state)
    }

    fn read_opt(
        &self,
        c: Controller,
        name: &GroupName,
        file: &str,
    ) -> Result<Option<String>, CgroupError> {
        match self.dir(c, name) {
            Some(dir) => files::read_opt(&dir.join(file)),
            None => Ok(None),
        }
    }
}

impl CgroupDriver for V1Driver {
    fn kind(&self) -> Kind {
        Kind::V1
    }

    fn create(&self, name: &GroupName, limits: &Limits) -> Result<Group, CgroupError> {
        self.ensure(name)?;
        self.apply(name, limits)?;
        Ok(Group::describe(self, name))
    }

    fn apply(&self, name: &GroupName, limits: &Limits) -> Result<(), CgroupError> {
        files::require_dir(&self.memory_dir(name))?;
        let put = |c: Controller, file: &str, limit: bool, value: String| match self.dir(c, name) {
            Some(dir) => files::write(&dir.join(file), &value),
            None if limit => Err(CgroupError::Unsupported {
                what: c.name(),
                path: self.memory_dir(name),
            }),
            None => Ok(()),
        };
        let unlimited = |v: Option<u64>| v.map_or_else(|| "-1".to_owned(), |v| v.to_string());
        let quota = limits.cpu_max_millis.map(quota_from_millis);
        if quota.is_some() {
            put(
                Controller::Cpu,
                "cpu.cfs_period_us",
                true,
                CPU_PERIOD_US.to_string(),
            )?;
        }
        put(
            Controller::Cpu,
            "cpu.cfs_quota_us",
            quota.is_some(),
            unlimited(quota),
        )?;
        let shares = limits.cpu_weight.unwrap_or(1024).to_string();
        put(
            Controller::Cpu,
            "cpu.shares",
            limits.cpu_weight.is_some(),
            shares,
        )?;
        let (max, high) = (limits.memory_max, limits.memory_high);
        put(
            Controller::Memory,
            "memory.limit_in_bytes",
            max.is_some(),
            unlimited(max),
        )?;
        put(
            Controller::Memory,
            "memory.soft_limit_in_bytes",
            high.is_some(),
            unlimited(high),
        )?;
        let pids = limits
            .pids_max
            .map_or_else(|| "max".to_owned(), |v| v.to_string());
        put(
            Controller::Pids,
            "pids.max",
            limits.pids_max.is_some(),
            pids,
        )
    }

    fn add_process(&self, name: &GroupName, pid: u32) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        self.dirs(name)
            .try_for_each(|dir| files::write(&dir.join("cgroup.procs"), &pid))
    }

    fn procs(&self, name: &GroupName) -> Result<Vec<u32>, CgroupError> {
        Ok(files::pids(&files::read(
            &self.memory_dir(name).join("cgroup.procs"),
        )?))
    }

    fn procs_files(&self, name: &GroupName) -> Vec<PathBuf> {
        self.dirs(name).map(|d| d.join("cgroup.procs")).collect()
    }

    fn freeze(&self, name: &GroupName) -> Result<(), CgroupError> {
        self.set_freezer(name, "FROZEN")
    }

    fn thaw(&self, name: &GroupName) -> Result<(), CgroupError> {
        self.set_freezer(name, "THAWED")
    }

    /// Freezes the group (so nothing forks meanwhile), signals every process, thaws it (a
    /// frozen v1 task dies only once thawed), then signals what is left until it is empty.
    fn kill(&self, name: &GroupName) -> Result<(), CgroupError> {
        let dir = self.memory_dir(name);
        if !dir.is_dir() {
            return Ok(());
        }
        let freezer = self.dir(Controller::Freezer, name).filter(|d| d.is_dir());
        if freezer.is_some() {
            self.set_freezer(name, "FROZEN")?;
        }
        let first = self.procs(name);
        if let Ok(pids) = &first {
            files::kill_pids(pids);
        }
        if freezer.is_some() {
            self.set_freezer(name, "THAWED")?;
        }
        first?;
        files::kill_until_empty(&dir, true, || self.procs(name))
    }

    /// Removes the group from every hierarchy, trying them all; the first error is returned.
    fn remove(&self, name: &GroupName) -> Result<(), CgroupError> {
        let mut result = Ok(());
        for dir in self.dirs(name) {
            let removed = files::remove_dir(&dir);
            if result.is_ok() {
                result = removed;
            }
        }
        result
    }

    fn stats(&self, name: &GroupName) -> Result<Stats, CgroupError> {
        files::require_dir(&self.memory_dir(name))?;
        let usage = self.read_opt(Controller::Memory, name, "memory.usage_in_bytes")?;
        let oom = self.read_opt(Controller::Memory, name, "memory.oom_control")?;
        let cpu = self.read_opt(Controller::Cpuacct, name, "cpuacct.usage")?;
        let pids = self.read_opt(Controller::Pids, name, "pids.current")?;
        Ok(Stats {
            memory_bytes: usage.as_deref().and_then(files::first_u64),
            oom_kills: oom.and_then(|t| files::keyed(&t, "oom_kill")),
            cpu_usage_us: cpu
                .as_deref()
                .and_then(files::first_u64)
                .map(|ns| ns / 1000),
            pids: pids.as_deref().and_then(files::first_u64),
        })
    }

    fn oom_kills(&self, name: &GroupName) -> Result<u64, CgroupError> {
        files::require_dir(&self.memory_dir(name))?;
        let oom = self.read_opt(Controller::Memory, name, "memory.oom_control")?;
        Ok(oom.and_then(|t| files::keyed(&t, "oom_kill")).unwrap_or(0))
    }

    fn relative_path(&self, name: &GroupName) -> PathBuf {
        self.parent.group(name)
    }

    fn psi_path(&self, _name: &GroupName) -> Option<PathBuf> {
        None
    }

    fn parent_memory_file(&self) -> PathBuf {
        let base = self.mount(Controller::Memory).unwrap_or(&self.root);
        base.join(self.parent.path()).join("memory.usage_in_bytes")
    }

    fn parent_pressure_file(&self) -> Option<PathBuf> {
        None
    }
}
