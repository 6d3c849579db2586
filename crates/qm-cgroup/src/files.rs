//! The file operations the drivers are built from: read a cgroup file, write a value in one
//! `write(2)`, make and remove group directories, parse what the kernel writes, and the
//! signal-until-empty loop of a kill. Errors carry the path and the kernel's meaning (`ENOENT`
//! → not found, `EACCES`/`EPERM` → permission denied, `EBUSY` → busy).
//!
//! Writing a file that does not exist creates it, so a fake tree in a tempdir records what
//! was written; cgroupfs refuses to create files, and that is reported as not found.

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::CgroupError;

/// How long [`kill_until_empty`] waits for a group to empty.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Wraps an IO error with its path and meaning.
pub(crate) fn error(op: &'static str, path: &Path, source: io::Error) -> CgroupError {
    let path = path.to_path_buf();
    match source.kind() {
        ErrorKind::NotFound => CgroupError::NotFound { path },
        ErrorKind::PermissionDenied => CgroupError::PermissionDenied { path },
        ErrorKind::ResourceBusy | ErrorKind::DirectoryNotEmpty => CgroupError::Busy { path },
        _ if source.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            CgroupError::PermissionDenied { path }
        }
        _ => CgroupError::Io { op, path, source },
    }
}

/// The whole file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| error("read", path, e))
}

/// The whole file, or `None` when it does not exist.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(error("read", path, e)),
    }
}

/// Writes `value` with a single `write(2)`, as cgroupfs wants.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let open = |create| {
        OpenOptions::new()
            .write(true)
            .create(create)
            .truncate(true)
            .open(path)
    };
    let mut file = match open(false) {
        Ok(f) => f,
        // A fake tree: create the file. cgroupfs answers EACCES, which means it is not there.
        Err(e) if e.kind() == ErrorKind::NotFound => {
            open(true).map_err(|_| error("write", path, e))?
        }
        Err(e) => return Err(error("write", path, e)),
    };
    match file.write(value.as_bytes()) {
        Ok(n) if n == value.len() => Ok(()),
        Ok(_) => Err(error("write", path, ErrorKind::WriteZero.into())),
        Err(e) => Err(error("write", path, e)),
    }
}

/// Makes the directory; one that exists already is fine.
pub(crate) fn make_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(error("create", path, e)),
    }
}

/// Makes `relative` under `base`, one component at a time.
pub(crate) fn make_dirs(base: &Path, relative: &Path) -> Result<PathBuf, CgroupError> {
    let mut dir = base.to_path_buf();
    for part in relative.iter() {
        dir.push(part);
        make_dir(&dir)?;
    }
    Ok(dir)
}

/// Removes the (empty) directory; one that does not exist is fine.
pub(crate) fn remove_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(error("remove", path, e)),
    }
}

/// Fails with `NotFound` unless the group directory exists.
pub(crate) fn require_dir(dir: &Path) -> Result<(), CgroupError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(CgroupError::NotFound {
            path: dir.to_path_buf(),
        })
    }
}

/// The process ids of a `cgroup.procs` file.
pub(crate) fn pids(text: &str) -> Vec<u32> {
    text.split_ascii_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The first number of a one-value file (`memory.current`, `cpuacct.usage`).
pub(crate) fn first_u64(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// The value of `key` in a flat-keyed file (`oom_kill 3`, `usage_usec 120`).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut w = line.split_ascii_whitespace();
        (w.next() == Some(key)).then(|| w.next()?.parse().ok())?
    })
}

/// The controller names of `cgroup.controllers` or `cgroup.subtree_control` (a fake tree may
/// hold what was written to it, `+cpu +memory`).
pub(crate) fn controllers(text: &str) -> Vec<String> {
    text.split_ascii_whitespace()
        .map(|w| w.trim_start_matches('+').to_owned())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Sends SIGKILL to `pids`; processes already gone are skipped.
pub(crate) fn kill_pids(pids: &[u32]) {
    for &pid in pids {
        let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            continue;
        };
        // ESRCH (exited meanwhile) is the point; EPERM is reported by the group not emptying.
        let _ = kill_process(pid, Signal::KILL);
    }
}

/// Polls `procs` until the group is empty, sending SIGKILL to what is left each round when
/// `signal`; `Busy` on `path` after a few seconds.
pub(crate) fn kill_until_empty(
    path: &Path,
    signal: bool,
    mut procs: impl FnMut() -> Result<Vec<u32>, CgroupError>,
) -> Result<(), CgroupError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let left = match procs() {
            Ok(left) => left,
            Err(CgroupError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() > KILL_TIMEOUT {
            return Err(CgroupError::Busy {
                path: path.to_path_buf(),
            });
        }
        if signal {
            kill_pids(&left);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_text_is_parsed() {
        assert_eq!(pids("12\n345\n\n"), vec![12, 345]);
        assert_eq!(pids(""), Vec::<u32>::new());
        assert_eq!(first_u64("4096\n"), Some(4096));
        assert_eq!(first_u64("max\n"), None);
        let events = "low 0\nhigh 2\nmax 5\noom 1\noom_kill 3\noom_group_kill 0\n";
        assert_eq!(keyed(events, "oom_kill"), Some(3));
        assert_eq!(keyed(events, "oom"), Some(1));
        assert_eq!(keyed(events, "missing"), None);
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(keyed(v1, "oom_kill"), Some(7));
        assert_eq!(
            controllers("cpu io memory pids\n"),
            ["cpu", "io", "memory", "pids"]
        );
        assert_eq!(controllers("+cpu +memory"), ["cpu", "memory"]);
        assert!(controllers("\n").is_empty());
    }

    #[test]
    fn errors_keep_the_path_and_meaning() {
        let p = Path::new("/x/memory.max");
        let e = |k: ErrorKind| error("write", p, k.into());
        assert!(matches!(
            e(ErrorKind::NotFound),
            CgroupError::NotFound { .. }
        ));
        assert!(matches!(
            e(ErrorKind::ResourceBusy),
            CgroupError::Busy { .. }
        ));
        assert!(matches!(
            error("write", p, io::Error::from_raw_os_error(1)),
            CgroupError::PermissionDenied { .. }
        ));
        let other = error("write", p, io::Error::from_raw_os_error(22));
        assert!(
            other
                .to_string()
                .starts_with("cannot write /x/memory.max: "),
            "{other}"
        );
    }
}
