//! The drivers against fake cgroupfs trees: the files they write on create and apply, and
//! what they parse. A fake tree is a plain directory, so a group directory holding the files
//! the driver wrote is not empty: these tests delete those files before `remove`, as the
//! kernel would have them vanish with the directory.

use std::fs;
use std::path::{Path, PathBuf};

use expect_test::{Expect, expect};
use qm_cgroup::{CgroupError, GroupName, Kind, Limits, Stats, detect};

use crate::support::FakeTree;

const MIB: u64 = 1 << 20;

fn name(s: &str) -> GroupName {
    GroupName::new(s).expect("a valid name")
}

fn full_limits() -> Limits {
    Limits {
        cpu_max_millis: Some(200),
        cpu_weight: Some(1024),
        memory_max: Some(64 * MIB),
        memory_high: Some(48 * MIB),
        memory_min: Some(16 * MIB),
        pids_max: Some(50),
    }
}

/// A v2 root as the kernel shows it.
pub(crate) fn v2_tree(controllers: &str) -> FakeTree {
    let t = FakeTree::new("v2");
    t.file("cgroup.controllers", controllers);
    t.file("cgroup.subtree_control", "");
    t.file("cgroup.procs", "1\n");
    t
}

fn check(tree: &FakeTree, rel: &str, expect: Expect) {
    expect.assert_eq(&tree.dump(rel));
}

/// Deletes the plain files of a fake group, as rmdir on cgroupfs would.
fn clear_files(dir: &Path) {
    for entry in fs::read_dir(dir).expect("list the group") {
        let path = entry.expect("an entry").path();
        if path.is_file() {
            fs::remove_file(path).expect("remove a file");
        }
    }
}

#[test]
fn v2_create_enables_controllers_and_writes_limits() {
    let t = v2_tree("cpu memory pids io\n");
    let d = detect(t.path(), "qm").unwrap();
    assert_eq!(d.kind(), Kind::V2);
    let a = name("coder-1");
    let group = d.create(&a, &full_limits()).unwrap();
    check(
        &t,
        "",
        expect![[r#"
            cgroup.controllers = cpu memory pids io
            cgroup.procs = 1
            cgroup.subtree_control = +cpu +memory +pids +io
            qm/
            qm/cgroup.subtree_control = +cpu +memory +pids +io
            qm/coder-1/
            qm/coder-1/cpu.max = 20000 100000
            qm/coder-1/cpu.weight = 39
            qm/coder-1/memory.high = 50331648
            qm/coder-1/memory.max = 67108864
            qm/coder-1/memory.min = 16777216
            qm/coder-1/pids.max = 50
        "#]],
    );
    assert_eq!(group.name(), &a);
    assert_eq!(group.relative_path(), Path::new("qm/coder-1"));
    assert_eq!(
        group.procs_files(),
        [t.path().join("qm/coder-1/cgroup.procs")]
    );
    assert_eq!(
        group.psi_path(),
        Some(t.path().join("qm/coder-1").as_path())
    );
    // the pressure probe reads the parent: all agents in one file
    assert_eq!(d.parent_memory_file(), t.path().join("qm/memory.current"));
    assert_eq!(
        d.parent_pressure_file(),
        Some(t.path().join("qm/memory.pressure"))
    );

    // Re-creating reuses the group; `None` limits write "unlimited" and the defaults back.
    d.create(&a, &Limits::default()).unwrap();
    check(
        &t,
        "qm/coder-1",
        expect![[r#"
            qm/coder-1/cpu.max = max 100000
            qm/coder-1/cpu.weight = 100
            qm/coder-1/memory.high = max
            qm/coder-1/memory.max = max
            qm/coder-1/memory.min = 0
            qm/coder-1/pids.max = max
        "#]],
    );

    assert!(
        matches!(d.remove(&a), Err(CgroupError::Busy { .. })),
        "files left"
    );
    clear_files(&t.path().join("qm/coder-1"));
    d.remove(&a).unwrap();
    assert!(!t.path().join("qm/coder-1").exists());
    d.remove(&a).unwrap();
    assert!(matches!(
        d.apply(&a, &Limits::default()),
        Err(CgroupError::NotFound { .. })
    ));
}

#[test]
fn v2_nested_parent_and_kernel_formatted_subtree_control() {
    let t = v2_tree("cpuset cpu io memory hugetlb pids rdma misc\n");
    t.file("cgroup.subtree_control", "cpu memory\n");
    let d = detect(t.path(), "qm.slice/agents").unwrap();
    d.create(&name("a"), &Limits::default()).unwrap();
    assert_eq!(t.read("cgroup.subtree_control"), "+cpu +memory +pids +io");
    assert_eq!(
        t.read("qm.slice/cgroup.subtree_control"),
        "+cpu +memory +pids +io"
    );
    assert_eq!(
        t.read("qm.slice/agents/cgroup.subtree_control"),
        "+cpu +memory +pids +io"
    );
    assert_eq!(d.relative_path(&name("a")), Path::new("qm.slice/agents/a"));
}

#[test]
fn v2_limit_of_a_missing_controller_is_unsupported() {
    let t = v2_tree("memory pids\n");
    let d = detect(t.path(), "qm").unwrap();
    let a = name("a");
    let err = d.create(&a, &full_limits()).unwrap_err();
    assert!(
        matches!(err, CgroupError::Unsupported { what: "cpu", .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("no cpu controller for {}", t.path().join("qm/a").display())
    );
    let no_cpu = Limits {
        cpu_max_millis: None,
        cpu_weight: None,
        ..full_limits()
    };
    d.apply(&a, &no_cpu).unwrap();
    assert!(!t.path().join("qm/a/cpu.max").exists());
    assert_eq!(t.read("qm/a/memory.max"), "67108864");
    assert_eq!(t.read("qm/cgroup.subtree_control"), "+memory +pids");
}

#[test]
fn v2_stats_oom_kills_freeze_and_kill() {
    let t = v2_tree("cpu memory pids io\n");
    let d = detect(t.path(), "qm").unwrap();
    let a = name("a");
    d.create(&a, &Limits::default()).unwrap();
    assert_eq!(d.stats(&a).unwrap(), Stats::default(), "no counters yet");
    assert_eq!(d.oom_kills(&a).unwrap(), 0);
    t.file("qm/a/memory.current", "1234\n");
    t.file(
        "qm/a/memory.events",
        "low 0\nhigh 4\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n",
    );
    t.file(
        "qm/a/cpu.stat",
        "usage_usec 5000\nuser_usec 4000\nsystem_usec 1000\n",
    );
    t.file("qm/a/pids.current", "3\n");
    t.file("qm/a/cgroup.procs", "");
    let stats = Stats {
        memory_bytes: Some(1234),
        oom_kills: Some(2),
        cpu_usage_us: Some(5000),
        pids: Some(3),
    };
    assert_eq!(d.stats(&a).unwrap(), stats);
    assert_eq!(d.oom_kills(&a).unwrap(), 2);
    assert!(d.procs(&a).unwrap().is_empty());

    assert!(matches!(
        d.freeze(&a),
        Err(CgroupError::Unsupported {
            what: "freezer",
            ..
        })
    ));
    t.file("qm/a/cgroup.freeze", "0\n");
    d.freeze(&a).unwrap();
    assert_eq!(t.read("qm/a/cgroup.freeze"), "1");
    d.thaw(&a).unwrap();
    assert_eq!(t.read("qm/a/cgroup.freeze"), "0");

    t.file("qm/a/cgroup.kill", "");
    d.kill(&a).unwrap();
    assert_eq!(t.read("qm/a/cgroup.kill"), "1");
    d.kill(&name("gone")).unwrap();
    let err = d.stats(&name("gone")).unwrap_err();
    assert!(matches!(err, CgroupError::NotFound { .. }), "{err}");
}

/// A v1 mount as a systemd host has it: `cpu,cpuacct` with links, and controllers the driver
/// leaves alone.
pub(crate) fn v1_tree() -> FakeTree {
    let t = FakeTree::new("v1");
    for dir in [
        "memory",
        "cpu,cpuacct",
        "pids",
        "freezer",
        "blkio",
        "cpuset",
        "systemd",
    ] {
        t.file(&format!("{dir}/cgroup.procs"), "1\n");
    }
    for link in ["cpu", "cpuacct"] {
        std::os::unix::fs::symlink("cpu,cpuacct", t.path().join(link)).expect("symlink");
    }
    t
}

#[test]
fn v1_groups_in_every_hierarchy_with_v1_files() {
    let t = v1_tree();
    let d = detect(t.path(), "qm").unwrap();
    assert_eq!(d.kind(), Kind::V1);
    let a = name("a");
    let group = d.create(&a, &full_limits()).unwrap();
    check(
        &t,
        "",
        expect![[r#"
            blkio/
            blkio/cgroup.procs = 1
            blkio/qm/
            blkio/qm/a/
            cpu -> cpu,cpuacct
            cpu,cpuacct/
            cpu,cpuacct/cgroup.procs = 1
            cpu,cpuacct/qm/
            cpu,cpuacct/qm/a/
            cpu,cpuacct/qm/a/cpu.cfs_period_us = 100000
            cpu,cpuacct/qm/a/cpu.cfs_quota_us = 20000
            cpu,cpuacct/qm/a/cpu.shares = 1024
            cpuacct -> cpu,cpuacct
            cpuset/
            cpuset/cgroup.procs = 1
            freezer/
            freezer/cgroup.procs = 1
            freezer/qm/
            freezer/qm/a/
            memory/
            memory/cgroup.procs = 1
            memory/qm/
            memory/qm/a/
            memory/qm/a/memory.limit_in_bytes = 67108864
            memory/qm/a/memory.soft_limit_in_bytes = 50331648
            pids/
            pids/cgroup.procs = 1
            pids/qm/
            pids/qm/a/
            pids/qm/a/pids.max = 50
            systemd/
            systemd/cgroup.procs = 1
        "#]],
    );
    let procs: Vec<PathBuf> = ["blkio", "cpu", "freezer", "memory", "pids"]
        .iter()
        .map(|h| t.path().join(h).join("qm/a/cgroup.procs"))
        .collect();
    assert_eq!(group.procs_files(), procs);
    assert_eq!(group.psi_path(), None);
    assert_eq!(d.parent_pressure_file(), None);
    assert!(
        d.parent_memory_file()
            .ends_with("memory/qm/memory.usage_in_bytes")
    );

    d.apply(&a, &Limits::default()).unwrap();
    assert_eq!(t.read("memory/qm/a/memory.limit_in_bytes"), "-1");
    assert_eq!(t.read("cpu,cpuacct/qm/a/cpu.cfs_quota_us"), "-1");
    assert_eq!(t.read("pids/qm/a/pids.max"), "max");

    t.file("memory/qm/a/memory.usage_in_bytes", "4096\n");
    t.file(
        "memory/qm/a/memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    );
    t.file("cpu,cpuacct/qm/a/cpuacct.usage", "2500000\n");
    t.file("pids/qm/a/pids.current", "2\n");
    let stats = Stats {
        memory_bytes: Some(4096),
        oom_kills: Some(1),
        cpu_usage_us: Some(2500),
        pids: Some(2),
    };
    assert_eq!(d.stats(&a).unwrap(), stats);
    assert_eq!(d.oom_kills(&a).unwrap(), 1);

    d.freeze(&a).unwrap();
    assert_eq!(t.read("freezer/qm/a/freezer.state"), "FROZEN");
    d.thaw(&a).unwrap();
    assert_eq!(t.read("freezer/qm/a/freezer.state"), "THAWED");

    for h in ["memory", "cpu,cpuacct", "pids", "freezer", "blkio"] {
        clear_files(&t.path().join(h).join("qm/a"));
    }
    d.remove(&a).unwrap();
    assert!(!t.path().join("memory/qm/a").exists());
    assert!(t.path().join("memory/qm").exists(), "the parent stays");
}

#[test]
fn v1_separate_cpu_and_cpuacct_mounts() {
    let t = FakeTree::new("v1-split");
    for dir in ["memory", "cpu", "cpuacct"] {
        t.file(&format!("{dir}/cgroup.procs"), "");
    }
    let d = detect(t.path(), "qm").unwrap();
    let a = name("a");
    let limits = Limits {
        pids_max: None,
        ..full_limits()
    };
    d.create(&a, &limits).unwrap();
    assert_eq!(t.read("cpu/qm/a/cpu.cfs_quota_us"), "20000");
    assert!(t.path().join("cpuacct/qm/a").is_dir());
    t.file("cpuacct/qm/a/cpuacct.usage", "7000\n");
    assert_eq!(d.stats(&a).unwrap().cpu_usage_us, Some(7));
    assert_eq!(d.stats(&a).unwrap().pids, None, "no pids hierarchy");
    let err = d.apply(&a, &full_limits()).unwrap_err();
    assert!(
        matches!(err, CgroupError::Unsupported { what: "pids", .. }),
        "{err}"
    );
    let err = d.freeze(&a).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::Unsupported {
                what: "freezer",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn hybrid_adds_the_unified_group() {
    let t = v1_tree();
    t.file("unified/cgroup.controllers", "");
    t.file("unified/cgroup.subtree_control", "");
    t.file("unified/cgroup.procs", "1\n");
    let d = detect(t.path(), "qm").unwrap();
    assert_eq!(d.kind(), Kind::Hybrid);
    let a = name("a");
    let group = d.create(&a, &full_limits()).unwrap();
    assert!(t.path().join("unified/qm/a").is_dir());
    assert!(
        !t.path().join("unified/qm/a/memory.max").exists(),
        "no limits there"
    );
    assert_eq!(t.read("memory/qm/a/memory.limit_in_bytes"), "67108864");
    assert_eq!(
        group.psi_path(),
        Some(t.path().join("unified/qm/a").as_path())
    );
    assert_eq!(group.procs_files().len(), 6);
    assert_eq!(
        group.procs_files()[5],
        t.path().join("unified/qm/a/cgroup.procs")
    );

    d.freeze(&a).unwrap();
    assert_eq!(
        t.read("freezer/qm/a/freezer.state"),
        "FROZEN",
        "no cgroup.freeze: v1"
    );
    t.file("unified/qm/a/cgroup.freeze", "0\n");
    d.freeze(&a).unwrap();
    assert_eq!(t.read("unified/qm/a/cgroup.freeze"), "1");
    t.file("unified/qm/a/cgroup.procs", "");
    t.file("memory/qm/a/cgroup.procs", "");
    assert!(d.procs(&a).unwrap().is_empty());
}
