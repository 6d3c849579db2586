//! The drivers on this host's real cgroups (v1 or hybrid; run as root where
//! /sys/fs/cgroup/memory is writable, skipped with one line otherwise): a group's life from
//! create to remove with a process spawned into it, a real OOM kill, and the kernel holding a
//! busy loop to a 200m CPU cap. Each test works under its own `qm-test-<pid>[-tag]` parent,
//! which its [`Cleanup`] removes, with anything left inside, even on panic.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use qm_cgroup::{CgroupDriver, CgroupError, GroupName, Kind, Limits, SpawnOptions, detect, spawn};
use rustix::process::Pid;

use crate::support::{Cleanup, eventually, host_root, retry};

const MIB: u64 = 1 << 20;

/// A driver on the real mount under `qm-test-<pid><tag>`, with its cleanup guard; `None` (after
/// one printed line) where the host does not allow or have v1 cgroups.
fn host_driver(test: &str, tag: &str) -> Option<(Box<dyn CgroupDriver>, Cleanup, PathBuf, String)> {
    let root = host_root(test)?;
    let parent = format!("qm-test-{}{tag}", std::process::id());
    let cleanup = Cleanup::new(&root, &parent);
    let driver = detect(&root, &parent).expect("a driver for the host");
    if driver.kind() == Kind::V2 {
        eprintln!("skipped {test}: the host is cgroup v2; these tests are for v1 and hybrid");
        return None;
    }
    Some((driver, cleanup, root, parent))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32).expect("a pid")
}

/// Kills the group, reaps `child`, removes the group (retrying while the kernel lets go).
fn finish(driver: &dyn CgroupDriver, name: &GroupName, child: &mut Child) {
    driver.kill(name).expect("kill");
    assert!(driver.procs(name).expect("procs").is_empty());
    child.wait().expect("wait");
    retry(3, || driver.remove(name)).expect("remove");
}

#[test]
fn a_group_from_create_to_remove() {
    let Some((driver, _cleanup, root, parent)) = host_driver("a_group_from_create_to_remove", "")
    else {
        return;
    };
    let hybrid = root.join("unified/cgroup.procs").exists();
    assert_eq!(driver.kind(), if hybrid { Kind::Hybrid } else { Kind::V1 });
    let a = GroupName::new("a").unwrap();
    let limits = Limits {
        memory_max: Some(64 * MIB),
        pids_max: Some(50),
        cpu_max_millis: Some(200),
        ..Limits::default()
    };
    let group = driver.create(&a, &limits).unwrap();
    let rel = Path::new(&parent).join("a");
    assert_eq!(group.relative_path(), rel);
    assert_eq!(
        read(root.join("memory").join(&rel).join("memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(
        read(root.join("cpu").join(&rel).join("cpu.cfs_quota_us")),
        "20000"
    );
    assert_eq!(
        read(root.join("cpu").join(&rel).join("cpu.cfs_period_us")),
        "100000"
    );
    assert_eq!(read(root.join("pids").join(&rel).join("pids.max")), "50");
    assert_eq!(group.psi_path().is_some(), hybrid);
    if let Some(psi) = group.psi_path() {
        assert!(psi.join("memory.pressure").exists(), "{}", psi.display());
    }

    let opts = SpawnOptions {
        cgroup_procs: group.procs_files().to_vec(),
        oom_score_adj: Some(500),
        new_session: true,
        hold: None,
        ..SpawnOptions::default()
    };
    let mut child = spawn(Command::new("sh").args(["-c", "sleep 30"]), &opts).unwrap();
    let pid = pid_of(&child);
    let cgroups = read(format!("/proc/{}/cgroup", child.id()));
    let member = format!(":/{}", rel.display());
    for controller in ["memory", "cpu", "pids", "freezer"] {
        let line = cgroups.lines().find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == controller))
        });
        assert!(
            line.is_some_and(|l| l.ends_with(&member)),
            "{controller}: {cgroups}"
        );
    }
    if hybrid {
        assert!(
            cgroups.lines().any(|l| l == format!("0:{member}")),
            "{cgroups}"
        );
    }
    assert_eq!(read(format!("/proc/{}/oom_score_adj", child.id())), "500");
    assert_eq!(rustix::process::getsid(Some(pid)).unwrap(), pid);
    assert!(driver.procs(&a).unwrap().contains(&child.id()));
    let stats = driver.stats(&a).unwrap();
    assert!(
        stats.pids >= Some(1) && stats.memory_bytes.is_some(),
        "{stats:?}"
    );
    // the parent's usage is every group's together: the pressure probe's one read
    let parent_usage: u64 = read(driver.parent_memory_file()).parse().unwrap();
    assert!(
        parent_usage >= stats.memory_bytes.unwrap_or(0) && parent_usage > 0,
        "{parent_usage} {stats:?}"
    );
    assert_eq!(
        driver.parent_pressure_file().is_some_and(|p| p.exists()),
        hybrid
    );
    // throttling: memory.high is v1's soft limit; lifting it writes "unlimited" back
    let throttled = Limits {
        memory_high: Some(32 * MIB),
        ..limits
    };
    driver.apply(&a, &throttled).unwrap();
    let soft = root
        .join("memory")
        .join(&rel)
        .join("memory.soft_limit_in_bytes");
    assert_eq!(read(&soft), (32 * MIB).to_string());
    driver.apply(&a, &limits).unwrap();
    assert!(read(&soft).parse::<u64>().unwrap() > 1 << 60);

    // Freezing completes asynchronously: wait for the kernel to report it.
    let frozen = |yes: bool| {
        if hybrid {
            let events = root.join("unified").join(&rel).join("cgroup.events");
            let want = if yes { "frozen 1" } else { "frozen 0" };
            eventually(5, || read(&events).lines().any(|l| l == want))
        } else {
            let state = root.join("freezer").join(&rel).join("freezer.state");
            eventually(5, || read(&state) == if yes { "FROZEN" } else { "THAWED" })
        }
    };
    driver.freeze(&a).unwrap();
    assert!(frozen(true), "not frozen");
    driver.thaw(&a).unwrap();
    assert!(frozen(false), "not thawed");

    assert!(
        matches!(driver.remove(&a), Err(CgroupError::Busy { .. })),
        "a process inside"
    );
    driver.kill(&a).unwrap();
    assert!(driver.procs(&a).unwrap().is_empty());
    assert_eq!(child.wait().unwrap().signal(), Some(9));

    // Re-creating the group re-applies the limits; `None` lifts them.
    driver.create(&a, &Limits::default()).unwrap();
    let unlimited = read(root.join("memory").join(&rel).join("memory.limit_in_bytes"));
    assert!(unlimited.parse::<u64>().unwrap() > 1 << 60, "{unlimited}");
    assert_eq!(
        read(root.join("cpu").join(&rel).join("cpu.cfs_quota_us")),
        "-1"
    );
    assert_eq!(read(root.join("pids").join(&rel).join("pids.max")), "max");

    retry(3, || driver.remove(&a)).unwrap();
    assert!(!root.join("memory").join(&rel).exists());
    if hybrid {
        assert!(!root.join("unified").join(&rel).exists());
    }
    driver.remove(&a).unwrap();
}

/// The interpreter behind `python3` (a pyenv shim would otherwise be the process spawned).
fn python() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let exe = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !exe.is_empty()).then_some(exe)
}

#[test]
fn a_real_oom_kill() {
    let Some((driver, _cleanup, root, parent)) = host_driver("a_real_oom_kill", "-oom") else {
        return;
    };
    let name = GroupName::new("oom").unwrap();
    let limits = Limits {
        memory_max: Some(64 * MIB),
        ..Limits::default()
    };
    let group = driver.create(&name, &limits).unwrap();
    // No swapping out of the limit: the allocation has to hit it.
    let memory = root.join("memory").join(&parent).join("oom");
    let _ = fs::write(memory.join("memory.swappiness"), "0");
    if memory.join("memory.memsw.limit_in_bytes").exists() {
        fs::write(
            memory.join("memory.memsw.limit_in_bytes"),
            (64 * MIB).to_string(),
        )
        .unwrap();
    }
    let opts = SpawnOptions {
        cgroup_procs: group.procs_files().to_vec(),
        ..SpawnOptions::default()
    };
    let mut cmd = match python() {
        Some(python) => {
            let mut cmd = Command::new(python);
            let script = "b = bytearray(256 * 1024 * 1024); import time; time.sleep(5)";
            cmd.args(["-c", script]);
            cmd
        }
        None => {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "exec tail /dev/zero"]);
            cmd
        }
    };
    let mut child = spawn(&mut cmd, &opts).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "not killed in 30 s");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(driver.oom_kills(&name).unwrap() >= 1);
    assert!(driver.stats(&name).unwrap().oom_kills >= Some(1));
    finish(driver.as_ref(), &name, &mut child);
}

#[test]
fn a_busy_loop_held_to_200m() {
    let Some((driver, _cleanup, _root, _parent)) = host_driver("a_busy_loop_held_to_200m", "-cpu")
    else {
        return;
    };
    let name = GroupName::new("busy").unwrap();
    let limits = Limits {
        cpu_max_millis: Some(200),
        ..Limits::default()
    };
    let group = driver.create(&name, &limits).unwrap();
    let opts = SpawnOptions {
        cgroup_procs: group.procs_files().to_vec(),
        ..SpawnOptions::default()
    };
    let mut child = spawn(
        Command::new("sh").args(["-c", "while :; do :; done"]),
        &opts,
    )
    .unwrap();
    thread::sleep(Duration::from_millis(300));
    let used = || driver.stats(&name).unwrap().cpu_usage_us.unwrap();
    let (start, t0) = (used(), Instant::now());
    thread::sleep(Duration::from_millis(1500));
    let (end, elapsed) = (used(), t0.elapsed());
    let cores = (end - start) as f64 / elapsed.as_micros() as f64;
    finish(driver.as_ref(), &name, &mut child);
    assert!(
        (0.02..=0.3).contains(&cores),
        "{cores:.3} cores used under a 200m cap"
    );
}

/// `qm exec`'s way: the child is in its group, and its pid known, before it runs a thing.
#[test]
fn a_held_child_is_in_its_group_before_it_runs() {
    let Some((driver, _cleanup, _root, parent)) =
        host_driver("a_held_child_is_in_its_group_before_it_runs", "-held")
    else {
        return;
    };
    let name = GroupName::new("held").unwrap();
    let group = driver.create(&name, &Limits::default()).unwrap();
    let out = std::env::temp_dir().join(format!("{parent}-cgroup.txt"));
    let _ = fs::remove_file(&out);
    let (read_end, write_end) = qm_cgroup::hold_pipe().unwrap();
    let opts = SpawnOptions {
        cgroup_procs: group.procs_files().to_vec(),
        hold: Some(read_end),
        ..SpawnOptions::default()
    };
    let script = format!("cat /proc/self/cgroup > '{}'", out.display());
    let mut child = spawn(Command::new("sh").args(["-c", &script]), &opts).unwrap();
    assert_eq!(driver.procs(&name).unwrap(), [child.id()]);
    thread::sleep(Duration::from_millis(200));
    assert!(!out.exists(), "ran before it was released");
    assert_eq!(rustix::io::write(&write_end, b"g").unwrap(), 1);
    assert!(child.wait().unwrap().success());
    let seen = fs::read_to_string(&out).unwrap();
    let _ = fs::remove_file(&out);
    assert!(seen.contains(&format!(":/{parent}/held\n")), "{seen}");
    retry(3, || driver.remove(&name)).unwrap();
}
