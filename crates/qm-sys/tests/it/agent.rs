//! The per-agent collectors against fixture trees (a fake /proc of processes with `children`
//! files, v2, v1 and hybrid cgroup mounts) and against this host: a real process tree, a busy
//! child, and, when running as root with writable v1 cgroups, a real cgroup.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use qm_sys::Paths;
use qm_sys::agent::{
    AgentCollector, AgentSnapshot, CgroupLayout, CollectOptions, Source, Target, samples,
};
use qm_sys::probe::AgentMemoryProbe;

/// A fixture root in the temp dir, removed on drop.
struct Fixture {
    root: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("qm-agent-it-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("fixture root");
        Fixture { root }
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("fixture dir");
        std::fs::write(path, content).expect("fixture file");
    }

    fn remove(&self, rel: &str) {
        std::fs::remove_dir_all(self.root.join(rel)).expect("fixture removal");
    }

    fn paths(&self) -> Paths {
        Paths::with_root(&self.root)
    }

    /// A fake process: `stat`, `io`, the main thread's `children` and `fds` descriptors.
    fn process(&self, p: &Proc, children: &[u32]) {
        let Proc {
            pid,
            ppid,
            cpu: (ut, st),
            threads,
            start,
            rss,
            io: (r, w),
            fds,
        } = *p;
        let stat = format!(
            "{pid} (a (b) c) S {ppid} {pid} {pid} 0 -1 4194560 10 0 0 0 {ut} {st} 0 0 20 0 \
             {threads} 0 {start} 1000000 {rss} 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1\n"
        );
        self.write(&format!("proc/{pid}/stat"), &stat);
        let io = format!(
            "rchar: 1\nwchar: 1\nsyscr: 1\nsyscw: 1\n\
             read_bytes: {r}\nwrite_bytes: {w}\ncancelled_write_bytes: 0\n"
        );
        self.write(&format!("proc/{pid}/io"), &io);
        let kids: String = children.iter().map(|c| format!("{c} ")).collect();
        self.write(&format!("proc/{pid}/task/{pid}/children"), &kids);
        for fd in 0..fds {
            self.write(&format!("proc/{pid}/fd/{fd}"), "");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[derive(Clone, Copy)]
struct Proc {
    pid: u32,
    ppid: u32,
    cpu: (u64, u64),
    threads: u64,
    start: u64,
    rss: u64,
    io: (u64, u64),
    fds: u32,
}

fn proc(pid: u32, ppid: u32, cpu: u64, io: u64) -> Proc {
    Proc {
        pid,
        ppid,
        cpu: (cpu, 0),
        threads: 1,
        start: 1000 + u64::from(pid),
        rss: 10,
        io: (io, 2 * io),
        fds: 3,
    }
}

fn target(id: &str, pid: u32) -> Target {
    Target {
        id: id.to_owned(),
        pid,
        start_time: None,
        cgroup: None,
    }
}

fn cg_target(id: &str, cgroup: &str) -> Target {
    Target {
        id: id.to_owned(),
        pid: 1,
        start_time: None,
        cgroup: Some(PathBuf::from(cgroup)),
    }
}

fn ticks() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

/// root 100 → 101 → 103, root 100 → 102.
fn tree(f: &Fixture, cpu: [u64; 4], io: [u64; 4]) {
    f.process(&proc(100, 1, cpu[0], io[0]), &[101, 102]);
    f.process(&proc(101, 100, cpu[1], io[1]), &[103]);
    f.process(&proc(102, 100, cpu[2], io[2]), &[]);
    f.process(&proc(103, 101, cpu[3], io[3]), &[]);
}

#[test]
fn proc_tree_gives_exact_rates_over_two_collects() {
    let f = Fixture::new("tree");
    tree(&f, [100, 10, 20, 30], [1000, 0, 0, 0]);
    let mut c = AgentCollector::new(&f.paths());
    assert_eq!(c.layout(), CgroupLayout::Absent);
    let t0 = Instant::now();
    let s = c.collect(&[target("coder", 100)], t0).remove(0);
    assert!(s.alive);
    assert_eq!(s.source, Source::Proc);
    assert_eq!(
        (s.processes, s.threads, s.open_files),
        (Some(4), Some(4), Some(12))
    );
    assert_eq!(s.memory_bytes, Some(40 * rustix::param::page_size() as u64));
    assert!(close(s.cpu_seconds_total, 160.0 / ticks()));
    assert_eq!(
        (s.io_read_bytes_total, s.io_written_bytes_total),
        (Some(1000), Some(2000))
    );
    assert_eq!(
        (s.cpu_usage_cores, s.io_read_bytes_per_second),
        (None, None),
        "first reading"
    );

    tree(&f, [150, 60, 20, 130], [3000, 1000, 0, 0]);
    let s = c
        .collect(&[target("coder", 100)], t0 + Duration::from_secs(2))
        .remove(0);
    assert!(close(s.cpu_seconds_total, 360.0 / ticks()));
    assert!(close(s.cpu_usage_cores, 200.0 / ticks() / 2.0));
    assert!(close(s.io_read_bytes_per_second, 1500.0));
    assert!(close(s.io_write_bytes_per_second, 3000.0));
    assert_eq!(s.pressure, None);
}

#[test]
fn open_files_are_counted_every_nth_cycle() {
    let f = Fixture::new("fds");
    f.process(&proc(700, 1, 1, 0), &[]);
    let t = [target("a", 700)];
    let never = CollectOptions {
        open_files_every: 0,
        ..CollectOptions::default()
    };
    let mut c = AgentCollector::with_options(&f.paths(), never);
    assert_eq!(c.collect(&t, Instant::now())[0].open_files, None);
    let every3 = CollectOptions {
        open_files_every: 3,
        ..CollectOptions::default()
    };
    let mut c = AgentCollector::with_options(&f.paths(), every3);
    assert_eq!(
        c.collect(&t, Instant::now())[0].open_files,
        Some(3),
        "counted when new"
    );
    // One more descriptor each cycle: counted every cycle, three distinct counts.
    let mut counts = Vec::new();
    for fd in 3..6 {
        f.write(&format!("proc/700/fd/{fd}"), "");
        counts.push(c.collect(&t, Instant::now())[0].open_files);
    }
    counts.dedup();
    assert!(
        counts.len() <= 2,
        "counted once in three cycles: {counts:?}"
    );
    let later: Vec<_> = (0..3)
        .map(|_| c.collect(&t, Instant::now())[0].open_files)
        .collect();
    assert_eq!(later.last(), Some(&Some(6)), "{later:?}");
}

#[test]
fn a_vanished_child_takes_nothing_back() {
    let f = Fixture::new("vanish");
    tree(&f, [100, 10, 20, 5000], [0, 0, 0, 9000]);
    let mut c = AgentCollector::new(&f.paths());
    let t0 = Instant::now();
    c.collect(&[target("a", 100)], t0);
    // 103 exits (its parent no longer lists it); 100 uses 100 more ticks.
    f.remove("proc/103");
    f.process(&proc(101, 100, 10, 0), &[]);
    f.process(&proc(100, 1, 200, 0), &[101, 102]);
    let s = c
        .collect(&[target("a", 100)], t0 + Duration::from_secs(1))
        .remove(0);
    assert_eq!(s.processes, Some(3));
    assert!(close(s.cpu_usage_cores, 100.0 / ticks()));
    assert!(close(s.io_read_bytes_per_second, 0.0));
    assert!(
        close(s.cpu_seconds_total, 5230.0 / ticks()),
        "never decreases"
    );
    // A new child counts in full: it was forked since the last cycle.
    f.process(&proc(104, 100, 50, 0), &[]);
    f.process(&proc(100, 1, 200, 0), &[101, 102, 104]);
    let s = c
        .collect(&[target("a", 100)], t0 + Duration::from_secs(2))
        .remove(0);
    assert_eq!(s.processes, Some(4));
    assert!(close(s.cpu_usage_cores, 50.0 / ticks()));
}

#[test]
fn a_reused_pid_is_gone_and_stays_gone() {
    let f = Fixture::new("reuse");
    f.process(&proc(200, 1, 10, 0), &[]);
    let mut c = AgentCollector::new(&f.paths());
    let t0 = Instant::now();
    let told = Target {
        start_time: Some(999),
        ..target("told", 200)
    };
    let seen = target("seen", 200);
    let s = c.collect(&[told.clone(), seen.clone()], t0);
    assert!(!s[0].alive, "start time given and different");
    assert_eq!(
        s[0],
        AgentSnapshot {
            alive: false,
            ..s[0].clone()
        }
    );
    assert_eq!((s[0].processes, s[0].cpu_seconds_total), (None, None));
    assert!(s[1].alive);
    // The pid is reused: a new start time.
    f.process(
        &Proc {
            start: 5555,
            ..proc(200, 1, 1, 0)
        },
        &[],
    );
    for i in 1..3 {
        let s = c.collect(&[told.clone(), seen.clone()], t0 + Duration::from_secs(i));
        assert!(!s[1].alive, "first start time held to, cycle {i}");
    }
    // A target with the new start time is a new agent.
    let s = c.collect(
        &[Target {
            start_time: Some(5555),
            ..seen
        }],
        t0 + Duration::from_secs(4),
    );
    assert!(s[0].alive);
    f.remove("proc/200");
    let s = c.collect(&[target("x", 200)], t0 + Duration::from_secs(5));
    assert!(!s[0].alive);
}

#[test]
fn children_of_every_thread_are_found() {
    let f = Fixture::new("threads");
    f.process(
        &Proc {
            threads: 3,
            ..proc(500, 1, 10, 0)
        },
        &[510],
    );
    f.write("proc/500/task/501/children", "511 ");
    f.write("proc/500/task/502/children", "");
    for pid in [510, 511, 512] {
        f.process(&proc(pid, 500, 1, 0), &[]);
    }
    let mut c = AgentCollector::new(&f.paths());
    let t0 = Instant::now();
    let s = c.collect(&[target("a", 500)], t0).remove(0);
    assert_eq!((s.processes, s.threads), (Some(3), Some(5)));
    // Thread 502 forks 512; then 501 exits with the count unchanged (a new thread 503).
    f.write("proc/500/task/502/children", "512 ");
    let s = c
        .collect(&[target("a", 500)], t0 + Duration::from_secs(1))
        .remove(0);
    assert_eq!(s.processes, Some(4));
    f.remove("proc/500/task/501");
    f.write("proc/500/task/503/children", "511 ");
    let s = c
        .collect(&[target("a", 500)], t0 + Duration::from_secs(2))
        .remove(0);
    assert_eq!(
        s.processes,
        Some(3),
        "501 is gone: its children are missed this cycle"
    );
    let s = c
        .collect(&[target("a", 500)], t0 + Duration::from_secs(3))
        .remove(0);
    assert_eq!(
        s.processes,
        Some(4),
        "and found on the threads listed again"
    );
}

#[test]
fn a_repeated_id_gets_no_rates_and_leaves_the_first_alone() {
    let f = Fixture::new("dup");
    f.process(&proc(600, 1, 10, 0), &[]);
    f.process(&proc(601, 1, 10, 0), &[]);
    let mut c = AgentCollector::new(&f.paths());
    let t = [target("a", 600), target("a", 601)];
    let t0 = Instant::now();
    c.collect(&t, t0);
    let s = c.collect(&t, t0 + Duration::from_secs(1));
    assert!(s[0].cpu_usage_cores.is_some());
    assert!(s[1].alive && s[1].cpu_usage_cores.is_none());
}

#[test]
fn without_children_files_a_parent_map_is_built() {
    let f = Fixture::new("parents");
    tree(&f, [1, 2, 3, 4], [0; 4]);
    for pid in [100, 101, 102, 103] {
        std::fs::remove_file(f.root.join(format!("proc/{pid}/task/{pid}/children"))).unwrap();
    }
    f.process(&proc(300, 1, 1, 0), &[]); // not in the tree
    std::fs::remove_file(f.root.join("proc/300/task/300/children")).unwrap();
    let mut c = AgentCollector::new(&f.paths());
    let s = c.collect(&[target("a", 100), target("b", 101)], Instant::now());
    assert_eq!((s[0].processes, s[1].processes), (Some(4), Some(2)));
}

#[test]
fn malformed_files_do_not_panic() {
    let f = Fixture::new("garbage");
    tree(&f, [1, 2, 3, 4], [0; 4]);
    f.write("proc/101/stat", "101 (x) S 100 garbage");
    f.write("proc/102/io", "");
    f.write("proc/100/task/100/children", "101 102 x -5 99999999999 ");
    let mut c = AgentCollector::new(&f.paths());
    let s = c.collect(&[target("a", 100)], Instant::now()).remove(0);
    assert!(s.alive);
    assert_eq!(
        s.processes,
        Some(2),
        "101 unreadable, its child unreachable; 102 counted"
    );
    f.write("proc/100/stat", "");
    assert!(!c.collect(&[target("a", 100)], Instant::now())[0].alive);

    f.write("sys/fs/cgroup/cgroup.controllers", "cpu memory io pids\n");
    for file in [
        "cgroup.procs",
        "cpu.stat",
        "memory.current",
        "memory.stat",
        "memory.events",
        "io.stat",
        "pids.current",
        "cpu.pressure",
        "memory.pressure",
        "io.pressure",
    ] {
        f.write(
            &format!("sys/fs/cgroup/bad/{file}"),
            "1\nx y z\n=\nsome avg10=nan\n",
        );
    }
    let mut c = AgentCollector::new(&f.paths());
    let s = c
        .collect(&[cg_target("bad", "bad")], Instant::now())
        .remove(0);
    assert!(s.alive);
    assert_eq!(
        (s.processes, s.memory_bytes, s.cpu_seconds_total, s.pressure),
        (Some(1), Some(1), None, None)
    );
}

const PSI: &str = "some avg10=1.00 avg60=2.00 avg300=3.00 total=100\n\
                   full avg10=0.50 avg60=0.00 avg300=0.00 total=50\n";

fn v2_cgroup(f: &Fixture, rel: &str, usage_usec: u64, rbytes: u64) {
    let d = format!("sys/fs/cgroup/{rel}");
    f.write(&format!("{d}/cgroup.procs"), "10\n11\n");
    f.write(
        &format!("{d}/cpu.stat"),
        &format!("usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n"),
    );
    f.write(&format!("{d}/memory.current"), "4096000\n");
    f.write(
        &format!("{d}/memory.stat"),
        "anon 1000\nfile 2000\nkernel 5\n",
    );
    f.write(
        &format!("{d}/memory.events"),
        "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n",
    );
    f.write(
        &format!("{d}/io.stat"),
        &format!("8:0 rbytes={rbytes} wbytes=10 rios=1 wios=1\n8:16 rbytes=1 wbytes=1\n"),
    );
    f.write(&format!("{d}/pids.current"), "5\n");
    for r in ["cpu", "memory", "io"] {
        f.write(&format!("{d}/{r}.pressure"), PSI);
    }
}

#[test]
fn v2_cgroups_are_read_from_their_files() {
    let f = Fixture::new("v2");
    f.write("sys/fs/cgroup/cgroup.controllers", "cpu memory io pids\n");
    v2_cgroup(&f, "qm/coder-1", 1_000_000, 0);
    let mut c = AgentCollector::with_options(
        &f.paths(),
        CollectOptions {
            cgroup_detail_every: 1,
            ..CollectOptions::default()
        },
    );
    assert_eq!(c.layout(), CgroupLayout::V2);
    let t = [
        cg_target("coder-1", "/qm/coder-1"),
        cg_target("none", "qm/absent"),
        cg_target("outside", "qm/../qm/coder-1"),
    ];
    let t0 = Instant::now();
    let s = c.collect(&t, t0);
    assert!(!s[1].alive);
    assert_eq!(s[1].source, Source::Cgroup);
    assert!(!s[2].alive, "no `..` in cgroup paths");
    let s = &s[0];
    assert_eq!(
        (s.source, s.processes, s.threads),
        (Source::Cgroup, Some(2), Some(5))
    );
    assert_eq!(
        (s.memory_bytes, s.memory_anon_bytes, s.memory_file_bytes),
        (Some(4_096_000), Some(1000), Some(2000))
    );
    assert_eq!((s.oom_kills, s.open_files), (Some(1), None));
    assert_eq!(
        (s.io_read_bytes_total, s.io_written_bytes_total),
        (Some(1), Some(11))
    );
    assert!(close(s.cpu_seconds_total, 1.0));
    let p = s.pressure.unwrap();
    assert_eq!(p.memory.unwrap().some.avg60, 2.0);
    assert_eq!(p.io.unwrap().full.unwrap().total_us, 50);

    v2_cgroup(&f, "qm/coder-1", 1_500_000, 4000);
    let s = c.collect(&t, t0 + Duration::from_millis(500)).remove(0);
    assert!(close(s.cpu_usage_cores, 1.0));
    assert!(close(s.io_read_bytes_per_second, 8000.0));
    assert!(close(s.io_write_bytes_per_second, 0.0));

    // A counter reset (the cgroup recreated) gives no rate, never a negative one.
    v2_cgroup(&f, "qm/coder-1", 10, 0);
    let s = c.collect(&t, t0 + Duration::from_secs(1)).remove(0);
    assert_eq!(
        (s.cpu_usage_cores, s.io_read_bytes_per_second),
        (None, None)
    );

    // An emptied cgroup is a gone agent.
    f.write("sys/fs/cgroup/qm/coder-1/cgroup.procs", "");
    f.write("sys/fs/cgroup/qm/coder-1/pids.current", "0\n");
    assert!(!c.collect(&t, t0 + Duration::from_secs(2))[0].alive);

    let mut out = Vec::new();
    v2_cgroup(&f, "qm/coder-1", 10, 0);
    samples(&c.collect(&t, t0 + Duration::from_secs(3)), &mut out);
    let mut names: Vec<_> = out.iter().map(|s| s.desc.name).collect();
    names.dedup();
    assert_eq!(
        names,
        [
            "qm_agent_up",
            "qm_agent_cpu_seconds_total",
            "qm_agent_memory_bytes",
            "qm_agent_memory_anon_bytes",
            "qm_agent_memory_file_bytes",
            "qm_agent_io_read_bytes_total",
            "qm_agent_io_written_bytes_total",
            "qm_agent_processes",
            "qm_agent_threads",
            "qm_agent_oom_kills_total",
            "qm_agent_pressure_ratio",
            "qm_agent_up",
        ]
    );
    assert_eq!(
        out.iter()
            .filter(|s| s.desc.name == "qm_agent_pressure_ratio")
            .count(),
        18
    );
}

fn v1_cgroup(f: &Fixture, cpuacct: &str, rel: &str, usage_ns: u64, read: u64) {
    let d = "sys/fs/cgroup";
    f.write(&format!("{d}/memory/{rel}/cgroup.procs"), "10\n");
    f.write(&format!("{d}/memory/{rel}/memory.usage_in_bytes"), "8192\n");
    f.write(
        &format!("{d}/memory/{rel}/memory.stat"),
        "cache 1\nrss 2\ntotal_cache 300\ntotal_rss 400\n",
    );
    f.write(
        &format!("{d}/memory/{rel}/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
    );
    f.write(
        &format!("{d}/{cpuacct}/{rel}/cpuacct.usage"),
        &format!("{usage_ns}\n"),
    );
    f.write(&format!("{d}/pids/{rel}/pids.current"), "3\n");
    f.write(
        &format!("{d}/blkio/{rel}/blkio.throttle.io_service_bytes"),
        &format!(
            "8:0 Read {read}\n8:0 Write 7\n8:0 Sync 0\n8:0 Total {}\nTotal {}\n",
            read + 7,
            read + 7
        ),
    );
}

#[test]
fn v1_cgroups_are_read_from_their_controllers() {
    let f = Fixture::new("v1");
    v1_cgroup(&f, "cpu,cpuacct", "qm/a", 2_000_000_000, 100);
    let mut c = AgentCollector::with_options(
        &f.paths(),
        CollectOptions {
            cgroup_detail_every: 1,
            ..CollectOptions::default()
        },
    );
    assert_eq!(c.layout(), CgroupLayout::V1);
    let t = [cg_target("a", "qm/a")];
    let t0 = Instant::now();
    let s = c.collect(&t, t0).remove(0);
    assert_eq!(
        (s.processes, s.threads, s.memory_bytes),
        (Some(1), Some(3), Some(8192))
    );
    assert_eq!(
        (s.memory_anon_bytes, s.memory_file_bytes, s.oom_kills),
        (Some(400), Some(300), Some(4))
    );
    assert_eq!(
        (s.io_read_bytes_total, s.io_written_bytes_total),
        (Some(100), Some(7))
    );
    assert!(close(s.cpu_seconds_total, 2.0));
    assert_eq!(s.pressure, None, "v1 has no PSI");
    v1_cgroup(&f, "cpu,cpuacct", "qm/a", 2_500_000_000, 300);
    let s = c.collect(&t, t0 + Duration::from_secs(2)).remove(0);
    assert!(close(s.cpu_usage_cores, 0.25));
    assert!(close(s.io_read_bytes_per_second, 100.0));
}

/// The probe between collections reads each agent's memory from the same file the
/// collector reports, on v2 and v1, and follows changes.
#[test]
fn the_agent_memory_probe_reads_what_the_collector_reports() {
    let f = Fixture::new("memprobe-v2");
    f.write("sys/fs/cgroup/cgroup.controllers", "cpu memory io pids\n");
    v2_cgroup(&f, "qm/coder-1", 1, 0);
    let v2 = AgentCollector::new(&f.paths());
    let t = [
        cg_target("coder-1", "/qm/coder-1"),
        target("by-pid", 100),
        cg_target("outside", "qm/../etc"),
    ];
    let files = v2.memory_files(&t);
    assert_eq!(
        files,
        vec![(
            "coder-1".to_owned(),
            f.root.join("sys/fs/cgroup/qm/coder-1/memory.current")
        )],
        "only cgroup targets, never outside the mount"
    );
    let mut probe = AgentMemoryProbe::default();
    probe.set(files.clone());
    let read = |p: &mut AgentMemoryProbe| {
        let mut out = Vec::new();
        p.read(|id, v| out.push((id.to_owned(), v)));
        out
    };
    assert_eq!(read(&mut probe), [("coder-1".to_owned(), 4_096_000)]);
    f.write("sys/fs/cgroup/qm/coder-1/memory.current", "5000000\n");
    assert_eq!(read(&mut probe), [("coder-1".to_owned(), 5_000_000)]);
    // a group that is not there (yet, or any more) is skipped
    probe.set(vec![(
        "gone".to_owned(),
        f.root.join("sys/fs/cgroup/qm/gone/memory.current"),
    )]);
    assert_eq!(read(&mut probe), []);
    assert_eq!(probe.len(), 1);
    probe.set(files);
    assert_eq!(read(&mut probe), [("coder-1".to_owned(), 5_000_000)]);

    let f = Fixture::new("memprobe-v1");
    v1_cgroup(&f, "cpu,cpuacct", "qm/a", 1, 0);
    let mut v1 = AgentCollector::new(&f.paths());
    let t = [cg_target("a", "qm/a")];
    probe.set(v1.memory_files(&t));
    let collected = v1.collect(&t, Instant::now()).remove(0).memory_bytes;
    assert_eq!(read(&mut probe), [("a".to_owned(), 8192)]);
    assert_eq!(collected, Some(8192));
}

#[test]
fn hybrid_cgroups_take_psi_from_unified() {
    let f = Fixture::new("hybrid");
    v1_cgroup(&f, "cpuacct", "qm/a", 1, 0);
    f.write("sys/fs/cgroup/unified/cgroup.procs", "1\n");
    f.write(
        "sys/fs/cgroup/unified/qm/a/cpu.pressure",
        "some avg10=9.00 avg60=0.00 avg300=0.00 total=7\n",
    );
    let mut c = AgentCollector::new(&f.paths());
    assert_eq!(c.layout(), CgroupLayout::Hybrid);
    let s = c
        .collect(&[cg_target("a", "qm/a")], Instant::now())
        .remove(0);
    let p = s.pressure.unwrap();
    assert_eq!(p.cpu.unwrap().some.avg10, 9.0);
    assert_eq!(p.cpu.unwrap().full, None);
    assert_eq!((p.memory, p.io), (None, None));
    assert!(close(s.cpu_seconds_total, 1e-9));
}

#[test]
fn agents_no_longer_targeted_are_forgotten() {
    let f = Fixture::new("forget");
    f.process(&proc(400, 1, 10, 0), &[]);
    f.process(&proc(401, 1, 10, 0), &[]);
    let mut c = AgentCollector::new(&f.paths());
    let (a, b) = (target("a", 400), target("b", 401));
    let t0 = Instant::now();
    c.collect(&[a.clone(), b.clone()], t0);
    c.collect(std::slice::from_ref(&a), t0 + Duration::from_secs(1));
    let s = c.collect(&[a, b], t0 + Duration::from_secs(2));
    assert!(s[0].cpu_usage_cores.is_some());
    assert!(s[1].cpu_usage_cores.is_none(), "b starts over");
}

/// Children spawned in their own process group, killed with it on drop.
struct Kids(Vec<Child>);

impl Kids {
    fn spawn(&mut self, script: &str) -> u32 {
        use std::os::unix::process::CommandExt;
        let child = Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        self.0.push(child);
        pid
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child pid");
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = child.wait();
        }
    }
}

/// Collects `t` until `ok` holds, for at most 5 s.
fn until(c: &mut AgentCollector, t: &Target, ok: impl Fn(&AgentSnapshot) -> bool) -> AgentSnapshot {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = c.collect(std::slice::from_ref(t), Instant::now()).remove(0);
        if ok(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn real_process_trees_on_this_host() {
    if !Path::new("/proc/self/stat").exists() {
        println!("skipped real_process_trees_on_this_host: no /proc");
        return;
    }
    let mut kids = Kids(Vec::new());
    let tree = target("tree", kids.spawn("sleep 30 & sleep 30 & wait"));
    let busy = target("busy", kids.spawn("while :; do :; done"));
    let mut c = AgentCollector::new(&Paths::default());
    let s = until(&mut c, &tree, |s| s.processes >= Some(3));
    assert!(s.alive);
    assert_eq!(s.processes, Some(3));
    assert!(s.threads >= Some(3));
    assert!(s.memory_bytes > Some(0));
    assert!(s.open_files > Some(0));
    assert!(c.kept_files() > 0, "procfs files are kept open");

    c.collect(std::slice::from_ref(&busy), Instant::now());
    std::thread::sleep(Duration::from_millis(500));
    let s = c
        .collect(std::slice::from_ref(&busy), Instant::now())
        .remove(0);
    let cores = s.cpu_usage_cores.unwrap();
    assert!(
        cores > 0.05 && cores < 1.1,
        "a busy loop used {cores} cores"
    );
    assert!(s.cpu_seconds_total > Some(0.0));

    // A reused pid: the same pid with another start time.
    let wrong = Target {
        start_time: Some(1),
        ..tree.clone()
    };
    assert!(!c.collect(&[wrong], Instant::now())[0].alive);
    drop(kids);
    assert!(!c.collect(&[tree], Instant::now())[0].alive);
    c.collect(&[], Instant::now());
    assert_eq!(c.kept_files(), 0, "forgotten agents close their files");
}

#[test]
fn a_real_v1_cgroup_on_this_host() {
    let root = Path::new("/sys/fs/cgroup");
    let cpuacct = ["cpuacct", "cpu,cpuacct"]
        .into_iter()
        .find(|d| root.join(d).is_dir());
    if !rustix::process::geteuid().is_root() || !root.join("memory").is_dir() || cpuacct.is_none() {
        println!(
            "skipped a_real_v1_cgroup_on_this_host: needs root and cgroup v1 (memory, cpuacct)"
        );
        return;
    }
    let name = format!("qm-test-{}", std::process::id());
    let mut dirs = Vec::new();
    for ctrl in [
        Some("memory"),
        cpuacct,
        Some("pids"),
        Some("blkio"),
        Some("unified"),
    ]
    .into_iter()
    .flatten()
    {
        let d = root.join(ctrl).join(&name);
        if root.join(ctrl).is_dir() && std::fs::create_dir(&d).is_ok() {
            dirs.push(d);
        }
    }
    if !dirs.iter().any(|d| d.starts_with(root.join("memory"))) {
        println!("skipped a_real_v1_cgroup_on_this_host: cannot create {name} under memory");
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        return;
    }
    let procs: Vec<String> = dirs
        .iter()
        .map(|d| d.join("cgroup.procs").display().to_string())
        .collect();
    let script = format!(
        "for f in {}; do echo $$ > $f; done; exec sleep 30",
        procs.join(" ")
    );
    let mut kids = Kids(Vec::new());
    kids.spawn(&script);
    let t = cg_target("cg", &name);
    let mut c = AgentCollector::new(&Paths::default());
    let s = until(&mut c, &t, |s| s.alive && s.memory_bytes > Some(0));
    let layout = c.layout();
    drop(kids);
    for d in dirs.iter().rev() {
        for _ in 0..50 {
            if std::fs::remove_dir(d).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(matches!(layout, CgroupLayout::V1 | CgroupLayout::Hybrid));
    assert!(s.alive, "{s:?}");
    assert_eq!(s.source, Source::Cgroup);
    assert_eq!(s.processes, Some(1));
    assert!(s.memory_bytes > Some(0), "{s:?}");
    assert!(s.cpu_seconds_total.is_some());
    if layout == CgroupLayout::Hybrid && dirs.iter().any(|d| d.starts_with(root.join("unified"))) {
        assert!(s.pressure.is_some_and(|p| p.cpu.is_some()), "{s:?}");
    }
    assert!(dirs.iter().all(|d| !d.exists()), "cgroups removed");
}
