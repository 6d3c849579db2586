//! The v2 driver: groups under `<root>/<parent>/<name>/` in the unified hierarchy. Creating a
//! group enables `cpu memory pids io` (those the kernel offers) in the `cgroup.subtree_control`
//! of the root and of each directory down to the parent, so the group gets their files. The
//! hybrid driver reuses it, without limits, for the controller-less cgroup2 mount at `unified`.

use std::path::{Path, PathBuf};

use crate::files;
use crate::limits::{CPU_PERIOD_US, quota_from_millis, weight_from_shares};
use crate::name::Parent;
use crate::{CgroupDriver, CgroupError, Group, GroupName, Kind, Limits, Stats};

/// The controllers a group's limits and statistics need.
const WANTED: [&str; 4] = ["cpu", "memory", "pids", "io"];

/// Groups in a cgroup2 hierarchy rooted at a path (`/sys/fs/cgroup`, or a fake tree).
#[derive(Debug, Clone)]
pub struct V2Driver {
    root: PathBuf,
    parent: Parent,
}

impl V2Driver {
    /// Manages the groups under `<root>/<parent>`; touches nothing until a group is created.
    pub fn with_root(root: impl Into<PathBuf>, parent: &str) -> Result<Self, CgroupError> {
        Ok(V2Driver {
            root: root.into(),
            parent: Parent::new(parent)?,
        })
    }

    /// The group's directory.
    pub(crate) fn dir(&self, name: &GroupName) -> PathBuf {
        self.root.join(self.parent.group(name))
    }

    /// Makes the parent (enabling controllers down to it) and the group's directory.
    pub(crate) fn ensure(&self, name: &GroupName) -> Result<(), CgroupError> {
        let mut dir = self.root.clone();
        let mut available = files::controllers(&files::read(&dir.join("cgroup.controllers"))?);
        for part in self.parent.path().iter() {
            available = enable(&dir, &available)?;
            dir.push(part);
            files::make_dir(&dir)?;
        }
        enable(&dir, &available)?;
        files::make_dir(&self.dir(name))
    }

    /// The controllers the group has: what its parent enabled for its children.
    fn group_controllers(&self) -> Result<Vec<String>, CgroupError> {
        let control = self
            .root
            .join(self.parent.path())
            .join("cgroup.subtree_control");
        Ok(files::controllers(&files::read(&control)?))
    }

    pub(crate) fn procs_of(&self, name: &GroupName) -> Result<Vec<u32>, CgroupError> {
        Ok(files::pids(&files::read(
            &self.dir(name).join("cgroup.procs"),
        )?))
    }

    pub(crate) fn add(&self, name: &GroupName, pid: u32) -> Result<(), CgroupError> {
        files::write(&self.dir(name).join("cgroup.procs"), &pid.to_string())
    }

    /// `cgroup.freeze`; `Unsupported` where the kernel lacks it (before 5.2).
    pub(crate) fn set_frozen(&self, name: &GroupName, frozen: bool) -> Result<(), CgroupError> {
        let dir = self.dir(name);
        files::require_dir(&dir)?;
        let file = dir.join("cgroup.freeze");
        if !file.exists() {
            return Err(CgroupError::Unsupported {
                what: "freezer",
                path: dir,
            });
        }
        files::write(&file, if frozen { "1" } else { "0" })
    }

    /// Whether the kernel can freeze the group through `cgroup.freeze`.
    pub(crate) fn can_freeze(&self, name: &GroupName) -> bool {
        self.dir(name).join("cgroup.freeze").exists()
    }

    pub(crate) fn kill_group(&self, name: &GroupName) -> Result<(), CgroupError> {
        let dir = self.dir(name);
        if !dir.is_dir() {
            return Ok(());
        }
        let kill = dir.join("cgroup.kill");
        let atomic = kill.exists();
        if atomic {
            match files::write(&kill, "1") {
                Err(CgroupError::NotFound { .. }) => return Ok(()),
                other => other?,
            }
        }
        files::kill_until_empty(&dir, !atomic, || self.procs_of(name))
    }

    pub(crate) fn remove_group(&self, name: &GroupName) -> Result<(), CgroupError> {
        files::remove_dir(&self.dir(name))
    }
}

/// Enables in `dir`'s `cgroup.subtree_control` the wanted controllers among `available` (what
/// `dir` itself has); returns what its children get.
fn enable(dir: &Path, available: &[String]) -> Result<Vec<String>, CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let mut enabled = match files::read_opt(&control)? {
        Some(text) => files::controllers(&text),
        None => Vec::new(),
    };
    let missing: Vec<&str> = WANTED
        .into_iter()
        .filter(|w| available.iter().any(|a| a == w) && !enabled.iter().any(|e| e == w))
        .collect();
    if !missing.is_empty() {
        // Naming the enabled ones again is a no-op for the kernel, and keeps a fake tree's
        // file a true record of what is enabled.
        enabled.extend(missing.into_iter().map(str::to_owned));
        let line: Vec<String> = enabled.iter().map(|c| format!("+{c}")).collect();
        files::write(&control, &line.join(" "))?;
    }
    Ok(enabled)
}

impl CgroupDriver for V2Driver {
    fn kind(&self) -> Kind {
        Kind::V2
    }

    fn create(&self, name: &GroupName, limits: &Limits) -> Result<Group, CgroupError> {
        self.ensure(name)?;
        self.apply(name, limits)?;
        Ok(Group::describe(self, name))
    }

    fn apply(&self, name: &GroupName, limits: &Limits) -> Result<(), CgroupError> {
        let dir = self.dir(name);
        files::require_dir(&dir)?;
        let have = self.group_controllers()?;
        let put = |controller: &'static str, file: &str, limit: bool, value: String| {
            if have.iter().any(|c| c == controller) {
                files::write(&dir.join(file), &value)
            } else if limit {
                Err(CgroupError::Unsupported {
                    what: controller,
                    path: dir.clone(),
                })
            } else {
                Ok(())
            }
        };
        let max = |v: Option<u64>| v.map_or_else(|| "max".to_owned(), |v| v.to_string());
        let quota = limits.cpu_max_millis.map(quota_from_millis);
        put(
            "cpu",
            "cpu.max",
            quota.is_some(),
            format!("{} {CPU_PERIOD_US}", max(quota)),
        )?;
        let weight = limits.cpu_weight.map_or(100, weight_from_shares);
        put(
            "cpu",
            "cpu.weight",
            limits.cpu_weight.is_some(),
            weight.to_string(),
        )?;
        put(
            "memory",
            "memory.max",
            limits.memory_max.is_some(),
            max(limits.memory_max),
        )?;
        put(
            "memory",
            "memory.high",
            limits.memory_high.is_some(),
            max(limits.memory_high),
        )?;
        let min = limits.memory_min.unwrap_or(0).to_string();
        put("memory", "memory.min", limits.memory_min.is_some(), min)?;
        put(
            "pids",
            "pids.max",
            limits.pids_max.is_some(),
            max(limits.pids_max),
        )
    }

    fn add_process(&self, name: &GroupName, pid: u32) -> Result<(), CgroupError> {
        self.add(name, pid)
    }

    fn procs(&self, name: &GroupName) -> Result<Vec<u32>, CgroupError> {
        self.procs_of(name)
    }

    fn procs_files(&self, name: &GroupName) -> Vec<PathBuf> {
        vec![self.dir(name).join("cgroup.procs")]
    }

    fn freeze(&self, name: &GroupName) -> Result<(), CgroupError> {
        self.set_frozen(name, true)
    }

    fn thaw(&self, name: &GroupName) -> Result<(), CgroupError> {
        self.set_frozen(name, false)
    }

    fn kill(&self, name: &GroupName) -> Result<(), CgroupError> {
        self.kill_group(name)
    }

    fn remove(&self, name: &GroupName) -> Result<(), CgroupError> {
        self.remove_group(name)
    }

    fn stats(&self, name: &GroupName) -> Result<Stats, CgroupError> {
        let dir = self.dir(name);
        files::require_dir(&dir)?;
        let read = |file: &str| files::read_opt(&dir.join(file));
        Ok(Stats {
            memory_bytes: read("memory.current")?
                .as_deref()
                .and_then(files::first_u64),
            oom_kills: read("memory.events")?.and_then(|t| files::keyed(&t, "oom_kill")),
            cpu_usage_us: read("cpu.stat")?.and_then(|t| files::keyed(&t, "usage_usec")),
            pids: read("pids.current")?.as_deref().and_then(files::first_u64),
        })
    }

    fn oom_kills(&self, name: &GroupName) -> Result<u64, CgroupError> {
        let dir = self.dir(name);
        files::require_dir(&dir)?;
        let events = files::read_opt(&dir.join("memory.events"))?;
        Ok(events
            .and_then(|t| files::keyed(&t, "oom_kill"))
            .unwrap_or(0))
    }

    fn relative_path(&self, name: &GroupName) -> PathBuf {
        self.parent.group(name)
    }

    fn psi_path(&self, name: &GroupName) -> Option<PathBuf> {
        Some(self.dir(name))
    }

    fn parent_memory_file(&self) -> PathBuf {
        self.root.join(self.parent.path()).join("memory.current")
    }

    fn parent_pressure_file(&self) -> Option<PathBuf> {
        Some(self.root.join(self.parent.path()).join("memory.pressure"))
    }
}
