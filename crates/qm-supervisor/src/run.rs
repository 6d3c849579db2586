//! The process side of supervision: spawning an agent into its cgroup with its log files,
//! watching a process end through a pidfd (children and adopted processes alike, no polling),
//! signalling a process group, reading a process's start time (so a reused pid is never taken
//! for the agent), and the agent's log files (size-capped with copy-and-truncate, so an agent
//! that outlives the daemon keeps writing to the same file).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rustix::process::{Pid, Signal};
use tokio::io::unix::AsyncFd;

/// A process's start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`), or
/// `None` when it does not exist or is a zombie.
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state): field 22 is the 20th from here
    fields.nth(18)?.parse().ok()
}

/// The pids of `pid`'s descendants (from the `children` files), not `pid` itself.
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            for c in text.split_whitespace().filter_map(|c| c.parse().ok()) {
                if !out.contains(&c) && out.len() < 100_000 {
                    out.push(c);
                    todo.push(c);
                }
            }
        }
    }
    out
}

/// Sends `signal` to the process group led by `pid` (agents run in their own session), and
/// to `pid` itself should it have left the group.
pub(crate) fn signal_group(pid: u32, signal: Signal) {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let _ = rustix::process::kill_process_group(p, signal);
    let _ = rustix::process::kill_process(p, signal);
}

/// Sends `signal` to each of `pids`.
pub(crate) fn signal_each(pids: &[u32], signal: Signal) {
    for pid in pids {
        if let Some(p) = i32::try_from(*pid).ok().and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(p, signal);
        }
    }
}

/// Resolves when the process behind `pidfd` has ended.
pub(crate) async fn ended(pidfd: OwnedFd) {
    // deprecated because a borrowed fd could be closed under the reactor; this one is an
    // OwnedFd the AsyncFd owns, so that cannot happen
    #[allow(deprecated)]
    let registered = AsyncFd::with_interest(pidfd, tokio::io::Interest::READABLE);
    match registered {
        Ok(fd) => {
            let _ = fd.readable().await;
        }
        Err(_) => {
            // no reactor registration: poll the pid instead
            std::future::pending::<()>().await;
        }
    }
}

/// A pidfd for `pid`, checked to be the process that started at `ticks` (opened first, then
/// checked, so the fd cannot refer to a later process with the same pid).
pub(crate) fn pidfd(pid: u32, ticks: Option<u64>) -> Option<OwnedFd> {
    let p = i32::try_from(pid).ok().and_then(Pid::from_raw)?;
    let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()?;
    match (start_ticks(pid), ticks) {
        (Some(now), Some(then)) if now == then => Some(fd),
        (Some(_), None) => Some(fd),
        _ => None,
    }
}

/// An agent's log files: `<root>/<agent>.stdout.log` and `.stderr.log` (one flat directory,
/// so a spawn creates two files and no directory).
#[derive(Debug, Clone)]
pub(crate) struct Logs {
    dir: PathBuf,
    name: String,
}

impl Logs {
    pub(crate) fn new(root: &Path, name: &str) -> Self {
        Logs {
            dir: root.to_owned(),
            name: name.to_owned(),
        }
    }

    fn file(&self, stream: &str) -> PathBuf {
        self.dir.join(format!("{}.{stream}.log", self.name))
    }

    /// Opens `stdout.log` and `stderr.log` for appending.
    pub(crate) fn open(&self) -> io::Result<(File, File)> {
        std::fs::create_dir_all(&self.dir)?;
        let open = |s: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.file(s))
        };
        Ok((open("stdout")?, open("stderr")?))
    }

    /// Keeps each log under `max_bytes`: a file over it is copied to `<stream>.log.1`
    /// (replacing the older copy) and truncated; the agent's O_APPEND writes go on at the new
    /// end. Lines written between the copy and the truncation are lost (as with logrotate's
    /// copytruncate).
    pub(crate) fn rotate(&self, max_bytes: u64) {
        for stream in ["stdout", "stderr"] {
            let path = self.file(stream);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.len() <= max_bytes {
                continue;
            }
            let old = self.dir.join(format!("{}.{stream}.log.1", self.name));
            if std::fs::copy(&path, &old).is_ok()
                && let Ok(f) = OpenOptions::new().write(true).open(&path)
            {
                let _ = f.set_len(0);
            }
        }
    }

    /// The last `n` lines of a stream (reading at most the last 4 MiB).
    pub(crate) fn tail(&self, stream: &str, n: usize) -> Vec<String> {
        let Ok(mut f) = File::open(self.file(stream)) else {
            return Vec::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        let from = len.saturating_sub(4 << 20);
        if f.seek(SeekFrom::Start(from)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| (*l).to_owned())
            .collect()
    }
}

/// What to run.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub(crate) argv: &'a [String],
    pub(crate) env: &'a std::collections::BTreeMap<String, String>,
    pub(crate) cwd: Option<&'a str>,
    pub(crate) cgroup_procs: Vec<PathBuf>,
    pub(crate) oom_score_adj: Option<i32>,
    /// The user to run as (None: the daemon's).
    pub(crate) identity: Option<qm_cgroup::Identity>,
}

/// Spawns `launch` in its own session, its output appended to `logs`, inside its cgroup.
pub(crate) fn spawn(launch: &Launch<'_>, logs: &Logs) -> io::Result<Child> {
    let (program, args) = launch
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    // a Command keeps its pre_exec hooks: the retry needs a fresh one
    let command = || -> io::Result<Command> {
        let (out, err) = logs.open()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        cmd.envs(launch.env);
        if let Some(cwd) = launch.cwd {
            cmd.current_dir(cwd);
        }
        Ok(cmd)
    };
    let mut opts = qm_cgroup::SpawnOptions {
        cgroup_procs: launch.cgroup_procs.clone(),
        oom_score_adj: launch.oom_score_adj,
        new_session: true,
        identity: launch.identity,
        no_new_privs: true,
        hold: None,
    };
    match qm_cgroup::spawn(&mut command()?, &opts) {
        // lowering oom_score_adj needs CAP_SYS_RESOURCE in the initial user namespace; in a
        // container it is refused: run the agent at the daemon's own score instead
        Err(e)
            if e.kind() == io::ErrorKind::PermissionDenied
                && launch.oom_score_adj.is_some_and(|a| a < 0) =>
        {
            tracing::warn!(adj = ?launch.oom_score_adj, "cannot lower the agent's oom_score_adj here; leaving it as the daemon's");
            opts.oom_score_adj = None;
            qm_cgroup::spawn(&mut command()?, &opts)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_of_self_and_of_nothing() {
        assert!(start_ticks(std::process::id()).is_some());
        assert_eq!(start_ticks(u32::MAX - 7), None);
    }

    #[test]
    fn logs_rotate_by_copy_and_truncate_and_tail() {
        let root = std::env::temp_dir().join(format!("qm-logs-{}", std::process::id()));
        let logs = Logs::new(&root, "a");
        let (mut out, _) = logs.open().unwrap();
        use std::io::Write;
        for i in 0..100 {
            writeln!(out, "line {i}").unwrap();
        }
        assert_eq!(logs.tail("stdout", 2), ["line 98", "line 99"]);
        logs.rotate(100);
        assert!(logs.tail("stdout", 5).is_empty());
        writeln!(out, "after").unwrap();
        assert_eq!(
            logs.tail("stdout", 5),
            ["after"],
            "the writer appends at the new end"
        );
        let old = std::fs::read_to_string(root.join("a.stdout.log.1")).unwrap();
        assert!(old.ends_with("line 99\n"));
        let _ = std::fs::remove_dir_all(root);
    }
}
