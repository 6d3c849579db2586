//! Who an agent is and what it may be: the user a spawned agent runs as (a name or uid from
//! `/etc/passwd`, default `[agents] user`), and the processes that may never be adopted: pid
//! 1, kernel threads, the daemon and its ancestors, and another user's processes unless an
//! admin asks.

use std::path::Path;

/// `[agents] user` for a uid of its own per agent (systemd's `DynamicUser` range).
pub const DYNAMIC: &str = "dynamic";

/// The uids dynamic agents get, as systemd hands out to `DynamicUser` services.
pub const DYNAMIC_UIDS: std::ops::RangeInclusive<u32> = 61184..=65519;

/// The lowest uid of the dynamic range that no live agent holds, none being created holds,
/// and `/etc/passwd` does not name.
pub(crate) fn free_uid(
    used: &std::collections::BTreeSet<u32>,
    pending: &std::collections::BTreeSet<u32>,
) -> Option<u32> {
    let named: std::collections::BTreeSet<u32> = passwd_in(Path::new("/"))
        .into_iter()
        .map(|(_, uid, _)| uid)
        .collect();
    DYNAMIC_UIDS
        .into_iter()
        .find(|u| !used.contains(u) && !pending.contains(u) && !named.contains(u))
}

/// A dynamic uid held for an agent being created; let go when dropped.
#[derive(Debug)]
pub(crate) struct HeldUid {
    pub(crate) uid: u32,
    pub(crate) supervisor: super::Supervisor,
}

impl Drop for HeldUid {
    fn drop(&mut self) {
        self.supervisor.release_uid(self.uid);
    }
}

/// Who asked for an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    /// An admin's token (may run agents as uid 0, adopt anyone's processes).
    pub admin: bool,
    /// The requesting connection's uid, when it came over loopback and the kernel says.
    pub uid: Option<u32>,
}

impl Requester {
    /// The daemon itself (fleets starting their members).
    pub fn daemon() -> Self {
        Self {
            admin: true,
            uid: None,
        }
    }
}

/// A user to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// `/etc/passwd` under `root`: `(name, uid, gid)` of each entry it can read.
fn passwd_in(root: &Path) -> Vec<(String, u32, u32)> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.to_owned();
            let uid = f.nth(1)?.parse::<u32>().ok()?;
            let gid = f.next()?.parse::<u32>().ok()?;
            Some((name, uid, gid))
        })
        .collect()
}

/// `user` (a name, or a uid) as `/etc/passwd` under `root` knows it; a uid it does not list
/// runs with the same gid.
pub(crate) fn resolve_user_in(root: &Path, user: &str) -> Result<User, String> {
    let entries = passwd_in(root);
    if let Ok(uid) = user.parse::<u32>() {
        let gid = entries
            .iter()
            .find(|(_, u, _)| *u == uid)
            .map_or(uid, |(_, _, g)| *g);
        return Ok(User { uid, gid });
    }
    entries
        .iter()
        .find(|(n, _, _)| n == user)
        .map(|&(_, uid, gid)| User { uid, gid })
        .ok_or_else(|| format!("{user:?} is not a user of this host"))
}

/// [`resolve_user_in`] on this host.
pub fn resolve_user(user: &str) -> Result<User, String> {
    resolve_user_in(Path::new("/"), user)
}

/// Whether `user` may be `[agents] user`: a user of this host, or `dynamic`.
pub fn valid_default_user(user: &str) -> Result<(), String> {
    if user == DYNAMIC {
        return Ok(());
    }
    resolve_user(user).map(|_| ())
}

/// Whether `user` means uid 0.
pub fn is_root_user(user: &str) -> bool {
    resolve_user(user).is_ok_and(|u| u.uid == 0)
}

/// The owner (real uid) of process `pid`.
pub fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The parent of `pid`, and whether it is a kernel thread (`PF_KTHREAD`).
fn stat(pid: u32) -> Option<(u32, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // rest starts at field 3 (state); ppid is field 4, flags field 9
    let ppid = fields.nth(1)?.parse().ok()?;
    let flags: u64 = fields.nth(4)?.parse().ok()?;
    const PF_KTHREAD: u64 = 0x0020_0000;
    Some((ppid, flags & PF_KTHREAD != 0))
}

/// The daemon's pid and every ancestor's.
fn lineage() -> Vec<u32> {
    let mut out = vec![std::process::id()];
    while let Some(&p) = out.last() {
        match stat(p) {
            Some((ppid, _)) if ppid > 0 && !out.contains(&ppid) => out.push(ppid),
            _ => break,
        }
    }
    out
}

/// Why process `pid` may not be adopted by `by`: `Err((forbidden, reason))`, forbidden when
/// only an admin could (403), else never (422).
pub fn may_adopt(pid: u32, by: Requester) -> Result<(), (bool, String)> {
    if pid <= 1 {
        return Err((false, format!("{pid} is the init process")));
    }
    let Some((_, kthread)) = stat(pid) else {
        return Err((false, format!("no running process {pid}")));
    };
    if kthread || pid == 2 {
        return Err((false, format!("{pid} is a kernel thread")));
    }
    if lineage().contains(&pid) {
        return Err((
            false,
            format!("{pid} is the daemon or one of its ancestors"),
        ));
    }
    if by.admin {
        return Ok(());
    }
    let owner = process_uid(pid);
    match (owner, by.uid) {
        (Some(o), Some(me)) if o == me => Ok(()),
        (Some(o), Some(me)) => Err((
            true,
            format!(
                "process {pid} belongs to uid {o}, not to the caller (uid {me}); only an admin may adopt it"
            ),
        )),
        _ => Err((
            true,
            format!(
                "process {pid}: the caller's uid is unknown (not a loopback connection); only an admin may adopt it"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_uids_skip_the_taken_and_the_named() {
        let first = *DYNAMIC_UIDS.start();
        let none = std::collections::BTreeSet::new();
        let taken: std::collections::BTreeSet<u32> = [first, first + 1].into();
        let pending: std::collections::BTreeSet<u32> = [first + 2].into();
        let got = free_uid(&taken, &pending).expect("a free uid");
        assert!(got >= first + 3 && DYNAMIC_UIDS.contains(&got), "{got}");
        assert!(free_uid(&none, &none).is_some_and(|u| DYNAMIC_UIDS.contains(&u)));
        let all: std::collections::BTreeSet<u32> = DYNAMIC_UIDS.collect();
        assert_eq!(free_uid(&all, &none), None);
    }

    #[test]
    fn users_by_name_and_uid() {
        let dir = std::env::temp_dir().join(format!("qm-users-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).expect("dir");
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n",
        )
        .expect("passwd");
        assert_eq!(
            resolve_user_in(&dir, "nobody"),
            Ok(User {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(resolve_user_in(&dir, "0"), Ok(User { uid: 0, gid: 0 }));
        assert_eq!(
            resolve_user_in(&dir, "4242"),
            Ok(User {
                uid: 4242,
                gid: 4242
            })
        );
        assert!(resolve_user_in(&dir, "mallory").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn init_kernel_threads_and_the_daemon_are_never_adopted() {
        let admin = Requester::daemon();
        assert!(matches!(may_adopt(1, admin), Err((false, _))));
        assert!(matches!(may_adopt(2, admin), Err((false, _))));
        assert!(matches!(
            may_adopt(std::process::id(), admin),
            Err((false, _))
        ));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        assert_eq!(may_adopt(child.id(), admin), Ok(()));
        let me = process_uid(std::process::id());
        let stranger = Requester {
            admin: false,
            uid: me.map(|u| u + 1),
        };
        assert!(matches!(may_adopt(child.id(), stranger), Err((true, _))));
        let owner = Requester {
            admin: false,
            uid: me,
        };
        assert_eq!(may_adopt(child.id(), owner), Ok(()));
        let _ = child.kill();
        let _ = child.wait();
    }
}
