//! `spawn` without cgroups, so without privilege: the hold pipe keeps the child from running
//! until the parent writes a byte or closes its end; the child leads its own session and has
//! the `oom_score_adj` asked for; a `cgroup.procs` file that cannot be opened fails the spawn
//! with its path.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::process::{Child, Command};
use std::thread;
use std::time::Duration;

use qm_cgroup::{SpawnOptions, hold_pipe, spawn};
use rustix::process::Pid;

use crate::support::{FakeTree, eventually};

/// Waits for `child` for up to `secs` seconds, killing it (and failing) when it is still there.
fn wait_for(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    if eventually(secs, || child.try_wait().expect("try_wait").is_some()) {
        return child.wait().expect("wait");
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    panic!("the child did not finish in {secs} s");
}

fn held_child(dir: &FakeTree) -> (Child, std::os::fd::OwnedFd, std::path::PathBuf) {
    let file = dir.path().join("started");
    let (read, write) = hold_pipe().expect("a pipe");
    let opts = SpawnOptions {
        hold: Some(read),
        ..SpawnOptions::default()
    };
    let script = format!("echo started > '{}'", file.display());
    // `spawn` returns while the child waits, so the parent can have it adopted by pid.
    let child = spawn(Command::new("sh").args(["-c", &script]), &opts).expect("spawn");
    drop(opts);
    assert!(Path::new(&format!("/proc/{}", child.id())).exists());
    thread::sleep(Duration::from_millis(300));
    assert!(!file.exists(), "the child ran before it was released");
    (child, write, file)
}

#[test]
fn hold_until_a_byte_is_written() {
    let dir = FakeTree::new("hold-byte");
    let (mut child, write, file) = held_child(&dir);
    assert_eq!(rustix::io::write(&write, b"x").unwrap(), 1);
    assert!(wait_for(&mut child, 10).success());
    assert_eq!(fs::read_to_string(file).unwrap(), "started\n");
}

#[test]
fn hold_until_the_write_end_is_closed() {
    let dir = FakeTree::new("hold-close");
    let (mut child, write, file) = held_child(&dir);
    drop(write);
    assert!(wait_for(&mut child, 10).success());
    assert_eq!(fs::read_to_string(file).unwrap(), "started\n");
}

#[test]
fn session_and_oom_score_adj() {
    let opts = SpawnOptions {
        oom_score_adj: Some(700),
        new_session: true,
        ..SpawnOptions::default()
    };
    let mut child = spawn(Command::new("sleep").arg("10"), &opts).unwrap();
    let pid = child.id();
    let adj = fs::read_to_string(format!("/proc/{pid}/oom_score_adj"));
    let sid = rustix::process::getsid(Pid::from_raw(pid as i32));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(adj.unwrap().trim(), "700");
    assert_eq!(sid.unwrap(), Pid::from_raw(pid as i32).unwrap());
}

#[test]
fn a_held_program_that_cannot_be_found_fails_the_spawn() {
    let (read, _write) = hold_pipe().unwrap();
    let opts = SpawnOptions {
        hold: Some(read),
        ..SpawnOptions::default()
    };
    let err = spawn(&mut Command::new("qm-no-such-program"), &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn a_procs_file_that_cannot_be_opened_names_itself() {
    let dir = FakeTree::new("no-procs");
    let missing = dir.path().join("qm/a/cgroup.procs");
    let opts = SpawnOptions {
        cgroup_procs: vec![missing.clone()],
        ..SpawnOptions::default()
    };
    let err = spawn(&mut Command::new("true"), &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_child_runs_as_the_user_asked_with_no_groups_and_no_new_privileges() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: switching users needs root");
        return;
    }
    let opts = SpawnOptions {
        identity: Some(qm_cgroup::Identity {
            uid: 65534,
            gid: 65534,
        }),
        no_new_privs: true,
        ..SpawnOptions::default()
    };
    let out = spawn(
        Command::new("sh")
            .args([
                "-c",
                "id -u; id -g; id -G; grep NoNewPrivs /proc/self/status",
            ])
            .stdout(std::process::Stdio::piped()),
        &opts,
    )
    .unwrap()
    .wait_with_output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["65534", "65534", "65534", "NoNewPrivs:\t1"],
        "{text}"
    );
}
