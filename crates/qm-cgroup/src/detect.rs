//! Picking a driver for a mount: v2 where the root lists its controllers (the memory controller
//! at least), v1 where a `memory` hierarchy is mounted, hybrid where v1 comes with a cgroup2
//! mount at `unified`.

use std::path::Path;

use crate::{CgroupDriver, DetectError, HybridDriver, V1Driver, V2Driver, files};

/// The driver for the cgroup mount at `root` (`/sys/fs/cgroup`), managing the groups under
/// `parent` (`qm`). Nothing is written until a group is created.
pub fn detect(root: &Path, parent: &str) -> Result<Box<dyn CgroupDriver>, DetectError> {
    if let Some(text) = files::read_opt(&root.join("cgroup.controllers"))? {
        if files::controllers(&text).iter().any(|c| c == "memory") {
            return Ok(Box::new(V2Driver::with_root(root, parent)?));
        }
        return Err(DetectError::Unsupported {
            root: root.to_path_buf(),
        });
    }
    if !root.join("memory").is_dir() {
        return Err(DetectError::Unsupported {
            root: root.to_path_buf(),
        });
    }
    if root.join("unified/cgroup.procs").exists() {
        Ok(Box::new(HybridDriver::with_root(root, parent)?))
    } else {
        Ok(Box::new(V1Driver::with_root(root, parent)?))
    }
}
