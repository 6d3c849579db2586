//! Starting a process already inside its group: [`spawn`] runs, between `fork` and `exec`, the
//! few system calls that put the child in its cgroups, set its `oom_score_adj`, give it a
//! session of its own and, when asked, hold it until the parent lets it go ([`hold_pipe`]), so
//! no instruction of the program runs outside the group or before the parent has adopted it.
//! It can also drop the child to another user (no supplementary groups, then the gid, then
//! the uid) and set `no_new_privs`, after it has joined its groups.
//! Everything is opened, formatted and allocated in the parent; the child only makes
//! async-signal-safe system calls (`write`, `open`, `setsid`, `setgroups`, `setresgid`,
//! `setresuid`, `prctl`, `getdents`, `fcntl`, `close`, `read`). This is the only `unsafe` of
//! the workspace.
//!
//! Holding needs one trick. `Command::spawn` returns only once the child has exec'd: it waits
//! for end of file on a close-on-exec channel to the child. A child held before exec would
//! keep `spawn` from returning, and the parent from learning the pid it has to get adopted. So
//! a held child first closes every close-on-exec descriptor it inherited (the program would
//! not have got them anyway), that channel among them; `spawn` returns with the child waiting.
//! The price: once that channel is closed, an `exec` that fails can no longer be reported, and
//! the child dies of SIGABRT (with std's message on its stderr). [`spawn`] therefore checks
//! beforehand that a held program can be found.

use std::env;
use std::ffi::OsStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use rustix::fs::{Mode, OFlags, RawDir};
use rustix::io::{Errno, FdFlags, read, write};
use rustix::pipe::{PipeFlags, pipe_with};

/// What [`spawn`] does in the child before it runs the program.
#[derive(Debug, Default)]
pub struct SpawnOptions {
    /// The `cgroup.procs` files to join (see [`CgroupDriver::procs_files`]), opened before
    /// the fork; the child writes `0` (itself) to each.
    ///
    /// [`CgroupDriver::procs_files`]: crate::CgroupDriver::procs_files
    pub cgroup_procs: Vec<PathBuf>,
    /// Written to the child's `/proc/self/oom_score_adj` (see [`oom_score_adj_for`]; lowering
    /// it below the parent's needs `CAP_SYS_RESOURCE`).
    ///
    /// [`oom_score_adj_for`]: crate::oom_score_adj_for
    pub oom_score_adj: Option<i32>,
    /// `setsid()` in the child, so it leads a new session and process group (do not also set
    /// `Command::process_group`: a group leader cannot start a session).
    pub new_session: bool,
    /// Run the program as this user, with no supplementary groups (set in the child once it
    /// is in its groups, which stay the parent's to change).
    pub identity: Option<Identity>,
    /// Set `PR_SET_NO_NEW_PRIVS`: no setuid bit or file capability raises the program.
    pub no_new_privs: bool,
    /// The read end of a [`hold_pipe`]: the child, once in its groups, blocks reading it until
    /// the parent writes a byte or every write end is closed, then runs the program. [`spawn`]
    /// returns while the child waits.
    pub hold: Option<OwnedFd>,
}

/// A user and group to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// A pipe to hold a child with: `(read end, for SpawnOptions::hold; write end, for the
/// parent)`, both close-on-exec. The parent releases the child by writing a byte, or by
/// closing the write end (a sibling forked meanwhile by another thread may hold a copy of it
/// until that sibling execs).
pub fn hold_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(pipe_with(PipeFlags::CLOEXEC)?)
}

/// Spawns `cmd` as [`SpawnOptions`] say; see the module documentation for what holding
/// implies. An error opening a `cgroup.procs` file names the file, a held program that cannot
/// be found is `NotFound`, and an error in the child before it is held (joining a group,
/// `setsid`) comes back as its errno. The descriptors prepared for the child stay with `cmd`
/// until it is dropped: spawn each `Command` once.
#[allow(unsafe_code)]
pub fn spawn(cmd: &mut Command, opts: &SpawnOptions) -> io::Result<Child> {
    let setup = ChildSetup::prepare(cmd, opts)?;
    let in_child = move || -> io::Result<()> {
        for fd in &setup.procs {
            write_once(fd, b"0")?;
        }
        if let Some(adj) = &setup.oom_score_adj {
            let flags = OFlags::WRONLY | OFlags::CLOEXEC;
            let fd = rustix::fs::open(c"/proc/self/oom_score_adj", flags, Mode::empty())?;
            write_once(&fd, adj)?;
        }
        if setup.new_session {
            rustix::process::setsid()?;
        }
        if let Some(id) = setup.identity {
            // groups first, then the gid, then the uid: each later step gives up the right
            // the earlier ones need
            if setup.root {
                rustix::thread::set_thread_groups(&[])?;
            }
            let gid = rustix::process::Gid::from_raw(id.gid);
            rustix::thread::set_thread_res_gid(gid, gid, gid)?;
            let uid = rustix::process::Uid::from_raw(id.uid);
            rustix::thread::set_thread_res_uid(uid, uid, uid)?;
        }
        if setup.no_new_privs {
            rustix::thread::set_no_new_privs(true)?;
        }
        if let Some(hold) = &setup.hold {
            close_inherited(hold.as_raw_fd())?;
            wait_for_release(hold)?;
        }
        Ok(())
    };
    // SAFETY: `in_child` runs in the forked child before exec. It allocates nothing and takes
    // no lock: it reads data prepared in the parent and makes system calls through rustix,
    // which issues them directly (all async-signal-safe). Its errors are plain errnos, which
    // std reports from `spawn` without allocating.
    unsafe { cmd.pre_exec(in_child) };
    cmd.spawn()
}

/// Closes, in the child, every close-on-exec descriptor but `keep`: std's channel that tells
/// the parent the exec happened, copies of the hold pipe's write end, the `cgroup.procs`
/// files. The program would not have inherited any of them.
#[allow(unsafe_code)]
fn close_inherited(keep: RawFd) -> io::Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = rustix::fs::open(c"/proc/self/fd", flags, Mode::empty())?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    let mut entries = RawDir::new(&dir, &mut buf);
    while let Some(entry) = entries.next() {
        let Some(fd) = parse_fd(entry?.file_name().to_bytes()) else {
            continue;
        };
        if fd == keep || fd == dir.as_raw_fd() {
            continue;
        }
        // SAFETY: `fd` was just listed as open, and the child is single-threaded, so nothing
        // closes it while this borrow, which ends with the call, lives.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if rustix::io::fcntl_getfd(borrowed).is_ok_and(|f| f.contains(FdFlags::CLOEXEC)) {
            // SAFETY: the descriptor is close-on-exec, so the program never sees it, and
            // nothing in the child uses it after this point: the `cgroup.procs` files were
            // written, and std's exec channel is written only if exec fails, which then finds
            // it closed (see the module documentation). The child runs no destructor before
            // exec or `_exit`, so no owner closes it a second time.
            unsafe { rustix::io::close(fd) };
        }
    }
    Ok(())
}

fn parse_fd(name: &[u8]) -> Option<RawFd> {
    if name.is_empty() || name.len() > 9 {
        return None;
    }
    let mut fd: RawFd = 0;
    for &b in name {
        if !b.is_ascii_digit() {
            return None;
        }
        fd = fd * 10 + RawFd::from(b - b'0');
    }
    Some(fd)
}

/// What the child needs, made in the parent.
#[derive(Debug)]
struct ChildSetup {
    procs: Vec<OwnedFd>,
    oom_score_adj: Option<Vec<u8>>,
    new_session: bool,
    identity: Option<Identity>,
    /// The parent runs as root (only root may drop supplementary groups).
    root: bool,
    no_new_privs: bool,
    hold: Option<OwnedFd>,
}

impl ChildSetup {
    fn prepare(cmd: &Command, opts: &SpawnOptions) -> io::Result<Self> {
        if opts.hold.is_some() {
            find_program(cmd)?;
        }
        let procs = opts
            .cgroup_procs
            .iter()
            .map(|path| {
                rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()).map_err(
                    |e| {
                        let e = io::Error::from(e);
                        io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
                    },
                )
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(ChildSetup {
            procs,
            oom_score_adj: opts.oom_score_adj.map(|adj| adj.to_string().into_bytes()),
            new_session: opts.new_session,
            identity: opts.identity,
            root: rustix::process::geteuid().is_root(),
            no_new_privs: opts.no_new_privs,
            hold: opts.hold.as_ref().map(OwnedFd::try_clone).transpose()?,
        })
    }
}

/// Checks that `cmd`'s program names an executable file, found the way `execvp` will find it
/// (in the `PATH` given to `cmd`, else this process's); programs relative to a directory other
/// than the current one are left to exec.
fn find_program(cmd: &Command) -> io::Result<()> {
    let program = Path::new(cmd.get_program());
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.as_os_str().as_bytes().contains(&b'/') {
        (program.is_relative() && cmd.get_current_dir().is_some()) || executable(program)
    } else {
        let given = cmd
            .get_envs()
            .find(|(k, _)| *k == OsStr::new("PATH"))
            .map(|(_, v)| v);
        let path = match given {
            Some(v) => v.map(OsStr::to_os_string),
            None => env::var_os("PATH"),
        };
        let path = path.unwrap_or_else(|| "/bin:/usr/bin".into());
        env::split_paths(&path).any(|dir| executable(&dir.join(program)))
    };
    if found {
        Ok(())
    } else {
        let what = format!("program not found: {}", program.display());
        Err(io::Error::new(io::ErrorKind::NotFound, what))
    }
}

/// One `write`, retried on EINTR; a short write is an error (cgroupfs takes a value whole).
fn write_once(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    loop {
        match write(fd, bytes) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(_) => return Err(Errno::IO.into()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Blocks until a byte arrives or the pipe's write ends are all closed.
fn wait_for_release(hold: &OwnedFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    loop {
        match read(hold, &mut byte) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_names() {
        assert_eq!(parse_fd(b"0"), Some(0));
        assert_eq!(parse_fd(b"251"), Some(251));
        assert_eq!(parse_fd(b"."), None);
        assert_eq!(parse_fd(b".."), None);
        assert_eq!(parse_fd(b""), None);
        assert_eq!(parse_fd(b"9999999999"), None);
    }

    #[test]
    fn held_programs_are_looked_up() {
        assert!(find_program(&Command::new("sh")).is_ok());
        assert!(find_program(&Command::new("/bin/sh")).is_ok());
        let missing = find_program(&Command::new("qm-no-such-program")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert_eq!(missing.to_string(), "program not found: qm-no-such-program");
        let mut no_path = Command::new("sh");
        no_path.env("PATH", "/nonexistent");
        assert!(find_program(&no_path).is_err());
    }
}
