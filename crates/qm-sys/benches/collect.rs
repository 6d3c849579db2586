//! Collection benchmarks: one cycle of the agent collector over 1,000 real processes tracked
//! as 1,000 agents without a cgroup (the /proc path), over 1,000 cgroups (fake v2 files in a
//! temp dir; real v1/hybrid cgroups holding those processes when running as root), one cycle
//! of the host collector, and one reading of the pressure probe. Before divan's timings, each
//! collector case is also run for two seconds and its wall and CPU time per cycle (this
//! thread's utime + stime) printed to stderr, with the CPU model. Every spawned process is
//! killed and every cgroup removed at the end, on a panic too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use divan::Bencher;
use qm_sys::Paths;
use qm_sys::agent::{AgentCollector, CollectOptions, Target};

const N_AGENTS: usize = 1000;

/// The processes tracked without a cgroup.
static PROC_TARGETS: OnceLock<Vec<Target>> = OnceLock::new();
/// The fake v2 mount and its cgroups.
static FAKE_V2: OnceLock<(Paths, Vec<Target>)> = OnceLock::new();
/// Real v1 (or hybrid) cgroups, one per process; empty when not root.
static REAL_CGROUPS: OnceLock<Vec<Target>> = OnceLock::new();

/// What the benchmark made: killed and removed on drop.
struct Fleet {
    children: Vec<Child>,
    cgroup_dirs: Vec<PathBuf>,
    temp: Option<PathBuf>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        for dir in self.cgroup_dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(temp) = &self.temp {
            let _ = std::fs::remove_dir_all(temp);
        }
    }
}

fn main() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut nofile = getrlimit(Resource::Nofile);
    nofile.current = nofile.maximum;
    let _ = setrlimit(Resource::Nofile, nofile);

    let mut fleet = Fleet {
        children: Vec::new(),
        cgroup_dirs: Vec::new(),
        temp: None,
    };
    let cgroup_files = real_cgroups(&mut fleet);
    spawn_fleet(&mut fleet, &cgroup_files);
    let proc_targets: Vec<Target> = fleet
        .children
        .iter()
        .enumerate()
        .map(|(i, c)| Target {
            id: format!("agent-{i:04}"),
            pid: c.id(),
            start_time: None,
            cgroup: None,
        })
        .collect();
    let real: Vec<Target> = (0..cgroup_files.len())
        .map(|i| Target {
            cgroup: Some(PathBuf::from(cgroup_name(i))),
            ..proc_targets[i].clone()
        })
        .collect();
    fleet.temp = Some(fake_v2());
    let _ = PROC_TARGETS.set(proc_targets);
    let _ = REAL_CGROUPS.set(real);

    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or("model name: ?");
    eprintln!(
        "{model}, {} cpus",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    wait_until_moved();
    report_cpu_per_cycle();
    divan::main();
    drop(fleet);
}

/// The cgroup of agent `i`, relative to the mount.
fn cgroup_name(i: usize) -> String {
    format!("qm-bench-{}/a{i:04}", std::process::id())
}

/// As root with writable v1 controllers: creates one cgroup per agent under each controller
/// (and `unified` on a hybrid host) and returns, per agent, the `cgroup.procs` files to move
/// its process into. Empty otherwise.
fn real_cgroups(fleet: &mut Fleet) -> Vec<Vec<PathBuf>> {
    let root = Path::new("/sys/fs/cgroup");
    let controllers = [
        "memory",
        "cpuacct",
        "cpu,cpuacct",
        "pids",
        "blkio",
        "unified",
    ];
    let found: Vec<PathBuf> = controllers
        .iter()
        .map(|c| root.join(c))
        .filter(|d| d.is_dir())
        .collect();
    let v1 = !root.join("cgroup.controllers").exists();
    if !rustix::process::geteuid().is_root() || !v1 || !root.join("memory").is_dir() {
        eprintln!("real cgroups: skipped (needs root and cgroup v1)");
        return Vec::new();
    }
    let parent = format!("qm-bench-{}", std::process::id());
    let mut per_agent = vec![Vec::new(); N_AGENTS];
    for dir in &found {
        if std::fs::create_dir(dir.join(&parent)).is_err() {
            continue;
        }
        fleet.cgroup_dirs.push(dir.join(&parent));
        for (i, files) in per_agent.iter_mut().enumerate() {
            let d = dir.join(cgroup_name(i));
            if std::fs::create_dir(&d).is_ok() {
                fleet.cgroup_dirs.push(d.clone());
                files.push(d.join("cgroup.procs"));
            }
        }
    }
    eprintln!("real cgroups: {N_AGENTS} under {} controllers", found.len());
    per_agent
}

/// 1,000 `sleep`s, each moved into its cgroups first when there are some.
fn spawn_fleet(fleet: &mut Fleet, cgroup_files: &[Vec<PathBuf>]) {
    for i in 0..N_AGENTS {
        let mut cmd = match cgroup_files.get(i) {
            Some(files) => {
                let moves: Vec<String> = files
                    .iter()
                    .map(|f| format!("echo $$ > {};", f.display()))
                    .collect();
                let mut c = Command::new("sh");
                c.args(["-c", &format!("{} exec sleep 600", moves.join(" "))]);
                c
            }
            None => {
                let mut c = Command::new("sleep");
                c.arg("600");
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a fleet process");
        fleet.children.push(child);
    }
}

/// Waits until every real cgroup holds its process.
fn wait_until_moved() {
    let targets = REAL_CGROUPS.get().expect("real cgroups");
    if targets.is_empty() {
        return;
    }
    let mut c = AgentCollector::new(&Paths::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let alive = c
            .collect(targets, Instant::now())
            .iter()
            .filter(|s| s.alive)
            .count();
        if alive == targets.len() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("real cgroups: not every process moved in 30 s");
}

/// A fake v2 mount in the temp dir with one cgroup per agent, each with every file read.
fn fake_v2() -> PathBuf {
    let root = std::env::temp_dir().join(format!("qm-bench-v2-{}", std::process::id()));
    let paths = Paths::with_root(&root);
    std::fs::create_dir_all(&paths.cgroup).expect("fake cgroup mount");
    std::fs::write(
        paths.cgroup.join("cgroup.controllers"),
        "cpu io memory pids\n",
    )
    .expect("cgroup.controllers");
    let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
               full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
    let memory_stat: String = (0..40).map(|i| format!("stat_{i} {i}\n")).collect();
    let files = [
        ("cgroup.procs", "1234\n1235\n".to_owned()),
        (
            "cpu.stat",
            "usage_usec 100\nuser_usec 60\nsystem_usec 40\n".to_owned(),
        ),
        ("memory.current", "1048576\n".to_owned()),
        (
            "memory.stat",
            format!("anon 1000\nfile 2000\n{memory_stat}"),
        ),
        (
            "memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n".to_owned(),
        ),
        (
            "io.stat",
            "8:0 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n".to_owned(),
        ),
        ("pids.current", "2\n".to_owned()),
        ("cpu.pressure", psi.to_owned()),
        ("memory.pressure", psi.to_owned()),
        ("io.pressure", psi.to_owned()),
    ];
    let mut targets = Vec::new();
    for i in 0..N_AGENTS {
        let rel = format!("qm/a{i:04}");
        let dir = paths.cgroup.join(&rel);
        std::fs::create_dir_all(&dir).expect("fake cgroup");
        for (name, content) in &files {
            std::fs::write(dir.join(name), content).expect("fake cgroup file");
        }
        targets.push(Target {
            id: format!("agent-{i:04}"),
            pid: 1,
            start_time: None,
            cgroup: Some(PathBuf::from(rel)),
        });
    }
    let _ = FAKE_V2.set((paths, targets));
    root
}

/// This thread's CPU time (utime + stime, in clock ticks).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// Runs `cycle` for two seconds after a warm-up one and prints wall and CPU per cycle.
fn per_cycle(name: &str, mut cycle: impl FnMut()) {
    cycle();
    let (wall0, cpu0) = (Instant::now(), thread_cpu());
    let mut n = 0u32;
    while wall0.elapsed() < Duration::from_secs(2) {
        cycle();
        n += 1;
    }
    let wall = wall0.elapsed() / n;
    let cpu = (thread_cpu() - cpu0) / n;
    eprintln!(
        "{name}: {:.2} ms wall, {:.2} ms CPU per cycle ({n} cycles)",
        wall.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3
    );
}

/// Wall and CPU per cycle of a fresh collector with `options` over `targets`; the collector
/// (and the files it keeps) is dropped before the next case.
fn measure(name: &str, paths: &Paths, options: CollectOptions, targets: &[Target]) {
    let mut c = AgentCollector::with_options(paths, options);
    let name = format!("{name} ({:?} layout)", c.layout());
    per_cycle(&name, || drop(c.collect(targets, Instant::now())));
    let alive = c
        .collect(targets, Instant::now())
        .iter()
        .filter(|s| s.alive)
        .count();
    eprintln!("  {alive} alive, {} files kept open", c.kept_files());
}

fn report_cpu_per_cycle() {
    let host = Paths::default();
    let procs = PROC_TARGETS.get().expect("proc targets");
    let default = CollectOptions::default;
    let no_kept = || CollectOptions {
        max_kept_files: 0,
        ..default()
    };
    let open_files = |every| CollectOptions {
        open_files_every: every,
        ..default()
    };
    let name = "agents, /proc, 1000 processes";
    measure(name, &host, default(), procs);
    measure(
        &format!("{name}, open files every cycle"),
        &host,
        open_files(1),
        procs,
    );
    measure(
        &format!("{name}, open files never"),
        &host,
        open_files(0),
        procs,
    );
    measure(&format!("{name}, no kept files"), &host, no_kept(), procs);
    let (paths, fake) = FAKE_V2.get().expect("fake v2");
    measure(
        "agents, fake v2 cgroups (tempdir), 1000",
        paths,
        default(),
        fake,
    );
    let real = REAL_CGROUPS.get().expect("real cgroups");
    if !real.is_empty() {
        measure("agents, real cgroups, 1000", &host, default(), real);
        measure(
            "agents, real cgroups, 1000, no kept files",
            &host,
            no_kept(),
            real,
        );
    }
    let mut h = qm_sys::host::HostCollector::new(&host);
    per_cycle("host", || drop(h.collect(Instant::now())));
}

fn bench_agents(bencher: Bencher, paths: &Paths, targets: &[Target], options: CollectOptions) {
    if targets.is_empty() {
        return;
    }
    let mut c = AgentCollector::with_options(paths, options);
    c.collect(targets, Instant::now());
    bencher.bench_local(|| c.collect(targets, Instant::now()));
}

#[divan::bench(sample_count = 30)]
fn agents_proc_1000(bencher: Bencher) {
    let t = PROC_TARGETS.get().expect("proc targets");
    bench_agents(bencher, &Paths::default(), t, CollectOptions::default());
}

#[divan::bench(sample_count = 30)]
fn agents_proc_1000_no_open_files(bencher: Bencher) {
    let t = PROC_TARGETS.get().expect("proc targets");
    let options = CollectOptions {
        open_files_every: 0,
        ..CollectOptions::default()
    };
    bench_agents(bencher, &Paths::default(), t, options);
}

#[divan::bench(sample_count = 30)]
fn agents_proc_1000_no_kept_files(bencher: Bencher) {
    let t = PROC_TARGETS.get().expect("proc targets");
    let options = CollectOptions {
        max_kept_files: 0,
        ..CollectOptions::default()
    };
    bench_agents(bencher, &Paths::default(), t, options);
}

#[divan::bench(sample_count = 30)]
fn agents_fake_v2_cgroups_1000(bencher: Bencher) {
    let (paths, t) = FAKE_V2.get().expect("fake v2");
    bench_agents(bencher, paths, t, CollectOptions::default());
}

#[divan::bench(sample_count = 30)]
fn agents_real_cgroups_1000(bencher: Bencher) {
    let t = REAL_CGROUPS.get().expect("real cgroups");
    bench_agents(bencher, &Paths::default(), t, CollectOptions::default());
}

#[divan::bench(sample_count = 30)]
fn host(bencher: Bencher) {
    let mut h = qm_sys::host::HostCollector::new(&Paths::default());
    h.collect(Instant::now());
    bencher.bench_local(|| h.collect(Instant::now()));
}

/// One reading of the pressure probe between collections: /proc/meminfo and a parent cgroup's
/// memory usage (the real v1 root group's when there is one), both held open.
#[divan::bench(sample_count = 100)]
fn memory_probe(bencher: Bencher) {
    let managed = [
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        "/sys/fs/cgroup/memory.current",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    let mut probe = qm_sys::probe::MemoryProbe::new(Path::new("/proc"), managed);
    probe.read();
    bencher.bench_local(|| probe.read());
}
