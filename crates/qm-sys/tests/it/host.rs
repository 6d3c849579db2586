//! The host collector at its boundary: fixture trees of /proc and /sys in a temporary
//! directory, read twice with modified counters to check values and rates exactly, broken and
//! missing files, the flat sample form, and one pass over the real host.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qm_sys::Paths;
use qm_sys::host::{
    DiskCounters, DiskRates, Fds, Filesystem, FsStat, HostCollector, HostOptions, HostSnapshot,
    LoadAvg, Memory, ModeRatios, NetRates, Pids, StatFs,
};
use qm_sys::metric::{Kind, Sample};

/// A fixture tree under the system's temporary directory, removed on drop.
struct Fixture {
    root: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("qm-sys-host-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("fixture root");
        Fixture { root }
    }

    fn write(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
        let path = self.root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("fixture dir");
        std::fs::write(path, content).expect("fixture file");
        self
    }

    fn dir(&self, path: &str) -> &Self {
        std::fs::create_dir_all(self.root.join(path)).expect("fixture dir");
        self
    }

    fn paths(&self) -> Paths {
        Paths::with_root(&self.root)
    }

    fn collector(&self) -> HostCollector {
        let options = HostOptions {
            statfs: Box::new(FakeStatFs),
            gpus: false,
        };
        HostCollector::with_options(&self.paths(), options)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

const GIB: u64 = 1 << 30;

/// Sizes for the fixture's mount points; anything else fails like a dead mount.
#[derive(Debug)]
struct FakeStatFs;

impl StatFs for FakeStatFs {
    fn stat(&mut self, mount_point: &Path) -> Option<FsStat> {
        let (size, free, avail) = match mount_point.to_str()? {
            "/" => (100 * GIB, 40 * GIB, 35 * GIB),
            "/mnt/scratch space" => (1024 * GIB, 1024 * GIB, 1024 * GIB),
            "/tmp" => (8 * GIB, 6 * GIB, 6 * GIB),
            _ => return None,
        };
        Some(FsStat {
            size_bytes: size,
            free_bytes: free,
            avail_bytes: avail,
            files: 1000,
            files_free: 600,
        })
    }
}

const STAT: &str = "cpu  1000 0 500 8000 500 0 0 0 0 0\n\
    cpu0 500 0 250 4000 250 0 0 0 0 0\n\
    cpu1 500 0 250 4000 250 0 0 0 0 0\n\
    intr 10000 0 0 0\nctxt 20000\nbtime 1700000000\nprocesses 5000\n\
    procs_running 3\nprocs_blocked 1\nsoftirq 1 2 3\n";

/// Two seconds later: 400 ticks in all; cpu0 fully busy, cpu1 half idle.
const STAT_LATER: &str = "cpu  1200 0 600 8060 540 0 0 0 0 0\n\
    cpu0 650 0 300 4000 250 0 0 0 0 0\n\
    cpu1 550 0 300 4060 290 0 0 0 0 0\n\
    intr 10000 0 0 0\nctxt 24000\nbtime 1700000000\nprocesses 5010\n\
    procs_running 5\nprocs_blocked 0\n";

const MEMINFO: &str = "MemTotal:       16777216 kB\nMemFree:         2097152 kB\n\
    MemAvailable:    8388608 kB\nBuffers:          524288 kB\nCached:          4194304 kB\n\
    SwapCached:            0 kB\nShmem:            262144 kB\nSReclaimable:    1048576 kB\n\
    SwapTotal:       4194304 kB\nSwapFree:        3145728 kB\nDirty:              1024 kB\n\
    Writeback:             0 kB\n";

const MOUNTS: &str = "/dev/sda1 / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n\
    sysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
    tmpfs /run tmpfs rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n\
    /dev/nvme0n1p1 /mnt/scratch\\040space xfs rw 0 0\n/dev/sda1 /var/lib/kubelet ext4 rw 0 0\n\
    nfs:/export /mnt/nfs nfs4 rw 0 0\n";

const DISKSTATS: &str = "   8       0 sda 1000 0 2097152 0 500 0 1048576 0 0 1000 0 0 0 0 0 0 0\n\
    8       1 sda1 900 0 2000000 0 400 0 1000000 0 0 900 0 0 0 0 0 0 0\n\
    259      0 nvme0n1 10 0 80 0 10 0 80 0 0 10 0 0 0 0 0 0 0\n\
    259      1 nvme0n1p1 10 0 80 0 10 0 80 0 0 10 0 0 0 0 0 0 0\n\
    253      0 dm-0 10 0 80 0 10 0 80 0 0 10 0 0 0 0 0 0 0\n\
    7       0 loop0 10 0 80 0 10 0 80 0 0 10 0 0 0 0 0 0 0\n";

/// Two seconds later: sda read 1 GiB (2097152 sectors) and wrote 512 MiB, busy half the time.
const DISKSTATS_LATER: &str = "   8       0 sda 3000 0 4194304 0 700 0 2097152 0 0 2000 0 0 0 0 0 0 0\n\
    8       1 sda1 900 0 2000000 0 400 0 1000000 0 0 900 0 0 0 0 0 0 0\n\
    259      0 nvme0n1 10 0 80 0 10 0 80 0 0 10 0 0 0 0 0 0 0\n\
    253      0 dm-0 10 0 80 0 10 0 80 0 0 10 0 0 0 0 0 0 0\n";

const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0\n  \
    eth0: 1000000 1000 0 0 0 0 0 0 500000 500 0 0 0 0 0 0\n";

const NET_DEV_LATER: &str = "Inter-|   Receive\n face |bytes\n    \
    lo:    9999      99    0    0    0     0          0         0     9999      99    0    0    0     0       0          0\n  \
    eth0: 3000000 3000 4 2 0 0 0 0 900000 900 0 0 0 0 0 0\n";

fn full_fixture(name: &str) -> Fixture {
    let f = Fixture::new(name);
    f.write("proc/stat", STAT)
        .write("proc/meminfo", MEMINFO)
        .write("proc/loadavg", "1.50 1.25 0.75 3/420 12345\n")
        .write("proc/self/mounts", MOUNTS)
        .write("proc/diskstats", DISKSTATS)
        .write("proc/net/dev", NET_DEV)
        .write("proc/pressure/cpu", psi(1_000_000, 0, true))
        .write("proc/pressure/memory", psi(500_000, 200_000, false))
        .write(
            "proc/pressure/io",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .write("proc/sys/kernel/pid_max", "4194304\n")
        .write("proc/sys/kernel/threads-max", "1000000\n")
        .write("proc/sys/fs/file-nr", "2048\t0\t1048576\n")
        .dir("sys/class/block/sda")
        .write("sys/class/block/sda1/partition", "1\n")
        .dir("sys/class/block/nvme0n1")
        .write("sys/class/block/nvme0n1p1/partition", "1\n");
    f
}

fn psi(some_total: u64, full_total: u64, cpu: bool) -> String {
    let full = if cpu {
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0".to_owned()
    } else {
        format!("full avg10=0.50 avg60=0.25 avg300=0.10 total={full_total}")
    };
    format!("some avg10=12.50 avg60=10.00 avg300=5.00 total={some_total}\n{full}\n")
}

fn later(f: &Fixture) {
    f.write("proc/stat", STAT_LATER)
        .write("proc/diskstats", DISKSTATS_LATER)
        .write("proc/net/dev", NET_DEV_LATER)
        .write("proc/pressure/cpu", psi(2_000_000, 0, true))
        .write("proc/pressure/memory", psi(700_000, 300_000, false));
}

#[test]
fn first_collection_reads_values_and_has_no_rates() {
    let f = full_fixture("first");
    let s = f.collector().collect(Instant::now());
    let tps = rustix::param::clock_ticks_per_second() as f64;
    assert_eq!(s.interval, None);

    let cpu = s.cpu.as_ref().unwrap();
    assert_eq!(
        (cpu.n_cores, cpu.total.user, cpu.cores[1].times.iowait),
        (2, 1000.0 / tps, 250.0 / tps)
    );
    assert_eq!(
        (cpu.context_switches, cpu.interrupts, cpu.forks),
        (Some(20000), Some(10000), Some(5000))
    );
    assert_eq!((cpu.procs_running, cpu.procs_blocked), (Some(3), Some(1)));
    assert_eq!(cpu.boot_time_seconds, Some(1_700_000_000));
    assert_eq!(
        (cpu.utilization, cpu.ratios, cpu.context_switches_per_second),
        (None, None, None)
    );
    let load = LoadAvg {
        load1: 1.5,
        load5: 1.25,
        load15: 0.75,
        threads_runnable: Some(3),
        threads_total: Some(420),
    };
    assert_eq!(s.load, Some(load));
    let memory = Memory {
        total_bytes: 16 * GIB,
        available_bytes: 8 * GIB,
        available_estimated: false,
        used_bytes: 8 * GIB,
        used_ratio: Some(0.5),
        free_bytes: 2 * GIB,
        buffers_bytes: Some(GIB / 2),
        cached_bytes: Some(5 * GIB),
        shmem_bytes: Some(GIB / 4),
        swap_total_bytes: Some(4 * GIB),
        swap_free_bytes: Some(3 * GIB),
        swap_used_bytes: Some(GIB),
        dirty_bytes: Some(1 << 20),
        writeback_bytes: Some(0),
    };
    assert_eq!(s.memory, Some(memory));

    let root = Filesystem {
        device: "/dev/sda1".to_owned(),
        mount_point: "/".to_owned(),
        fs_type: "ext4".to_owned(),
        size_bytes: 100 * GIB,
        free_bytes: 40 * GIB,
        avail_bytes: 35 * GIB,
        used_bytes: 60 * GIB,
        used_ratio: Some(60.0 / 95.0),
        files: 1000,
        files_free: 600,
    };
    assert_eq!(s.filesystems[0], root);
    let mounts: Vec<_> = s
        .filesystems
        .iter()
        .map(|f| f.mount_point.as_str())
        .collect();
    assert_eq!(
        mounts,
        ["/", "/tmp", "/mnt/scratch space"],
        "one per device, no pseudo fs, no dead nfs"
    );
    assert_eq!(s.filesystems[2].used_ratio, Some(0.0));

    let disks: Vec<_> = s.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        disks,
        ["sda", "nvme0n1", "dm-0"],
        "no partitions, no loop devices"
    );
    let sda = DiskCounters {
        reads_completed: 1000,
        writes_completed: 500,
        read_bytes: GIB,
        written_bytes: GIB / 2,
        io_time_seconds: 1.0,
    };
    assert_eq!((s.disks[0].counters, s.disks[0].rates), (sda, None));

    let names: Vec<_> = s.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["eth0"], "lo is skipped");
    assert_eq!(
        (s.networks[0].counters.receive_bytes, s.networks[0].rates),
        (1_000_000, None)
    );

    let cpu_psi = s.pressure.cpu.unwrap();
    assert_eq!(
        (cpu_psi.some.avg10, cpu_psi.some.total_microseconds),
        (12.5, 1_000_000)
    );
    assert_eq!(cpu_psi.full, None, "system-wide cpu full is all zeros");
    assert_eq!(
        s.pressure.memory.unwrap().full.unwrap().total_microseconds,
        200_000
    );
    assert_eq!(s.pressure.io.unwrap().full, None, "no full line");

    let pids = Pids {
        threads: Some(420),
        pid_max: Some(4_194_304),
        threads_max: Some(1_000_000),
    };
    assert_eq!(s.pids, Some(pids));
    let fds = Fds {
        allocated: 2048,
        max: 1_048_576,
        used_ratio: Some(2048.0 / 1_048_576.0),
    };
    assert_eq!((s.fds, s.gpus), (Some(fds), None));
}

/// The second snapshot of the full fixture, two seconds after the first.
fn second_snapshot(name: &str) -> HostSnapshot {
    let f = full_fixture(name);
    let mut c = f.collector();
    let t0 = Instant::now();
    c.collect(t0);
    later(&f);
    c.collect(t0 + Duration::from_secs(2))
}

#[test]
fn second_collection_has_exact_rates() {
    let s = second_snapshot("rates");
    assert_eq!(s.interval, Some(Duration::from_secs(2)));

    let cpu = s.cpu.unwrap();
    assert_eq!((cpu.utilization, cpu.busy_cores), (Some(0.75), Some(1.5)));
    let ratios = ModeRatios {
        user: 0.5,
        system: 0.25,
        iowait: 0.1,
        steal: 0.0,
    };
    assert_eq!(cpu.ratios, Some(ratios));
    assert_eq!(
        (cpu.cores[0].utilization, cpu.cores[1].utilization),
        (Some(1.0), Some(0.5))
    );
    assert_eq!(cpu.cores[0].ratios.unwrap().user, 0.75);
    assert_eq!(
        (cpu.context_switches_per_second, cpu.forks_per_second),
        (Some(2000.0), Some(5.0))
    );
    assert_eq!(cpu.interrupts_per_second, Some(0.0));

    let sda = DiskRates {
        read_bytes_per_second: 536_870_912.0, // 1 GiB over 2 s
        write_bytes_per_second: 268_435_456.0,
        reads_per_second: 1000.0,
        writes_per_second: 100.0,
        utilization: 0.5,
    };
    assert_eq!(s.disks[0].rates, Some(sda));

    let eth0 = NetRates {
        receive_bytes: 1_000_000.0,
        receive_packets: 1000.0,
        receive_errors: 2.0,
        receive_drops: 1.0,
        transmit_bytes: 200_000.0,
        transmit_packets: 200.0,
        transmit_errors: 0.0,
        transmit_drops: 0.0,
    };
    assert_eq!(s.networks[0].rates, Some(eth0));

    assert_eq!(s.pressure.cpu.unwrap().some.stalled_ratio, Some(0.5));
    let memory = s.pressure.memory.unwrap();
    assert_eq!(
        (
            memory.some.stalled_ratio,
            memory.full.unwrap().stalled_ratio
        ),
        (Some(0.1), Some(0.05))
    );
    assert_eq!(s.pressure.io.unwrap().some.stalled_ratio, Some(0.0));
}

#[test]
fn counter_resets_and_vanished_devices_give_no_rate() {
    let f = full_fixture("reset");
    let mut c = f.collector();
    let t0 = Instant::now();
    c.collect(t0);
    later(&f);
    c.collect(t0 + Duration::from_secs(2));
    // back to the first readings: every counter went down
    f.write("proc/diskstats", DISKSTATS)
        .write("proc/net/dev", NET_DEV)
        .write("proc/stat", STAT)
        .write("proc/pressure/cpu", psi(0, 0, true));
    let s = c.collect(t0 + Duration::from_secs(3));
    assert_eq!(s.disks[0].rates, None);
    assert_eq!(s.networks[0].rates, None);
    assert_eq!(s.cpu.as_ref().unwrap().context_switches_per_second, None);
    assert_eq!(s.pressure.cpu.unwrap().some.stalled_ratio, None);
    // nvme0n1 unchanged: a zero rate, not none
    assert_eq!(s.disks[1].rates.unwrap().read_bytes_per_second, 0.0);
    // an earlier instant than the last collection: no rates, no panic
    let s = c.collect(t0);
    assert_eq!((s.interval, s.disks[1].rates), (None, None));
}

#[test]
fn missing_files_give_none() {
    let f = Fixture::new("missing");
    let mut c = f.collector();
    for _ in 0..2 {
        let s = c.collect(Instant::now());
        assert_eq!(s.cpu, None);
        assert_eq!((s.load, s.memory, s.pids, s.fds), (None, None, None, None));
        assert!(s.filesystems.is_empty() && s.disks.is_empty() && s.networks.is_empty());
        assert_eq!(
            (s.pressure.cpu, s.pressure.memory, s.pressure.io),
            (None, None, None)
        );
        let mut out = Vec::new();
        s.samples(&mut out);
        assert!(out.is_empty());
    }
    assert_eq!(qm_sys::host::cores_and_memory(&f.paths()), (None, None));
    // only pid_max: pids with the rest unknown; mounts from the fallback /proc/mounts
    f.write("proc/sys/kernel/pid_max", "32768\n")
        .write("proc/mounts", "/dev/sda1 / ext4 rw 0 0\n");
    let s = c.collect(Instant::now());
    let pids = s.pids.unwrap();
    assert_eq!(
        (pids.threads, pids.pid_max, pids.threads_max),
        (None, Some(32768), None)
    );
    assert_eq!(s.filesystems.len(), 1);
}

#[test]
fn malformed_files_do_not_panic() {
    let f = Fixture::new("malformed");
    let garbage: &[&[u8]] = &[
        b"",
        b"\n\n\n",
        b"cpu  1 2",
        b"cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\ncpu1 4 5 x\nctxt -1\n",
        b"MemTotal: 1000 kB\nMemFree: 10",
        b"some avg10=1.00 avg60=2.00 avg300=3.00 tot",
        b"8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n  8 1 sd",
        b"eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\neth1: 18446744073709551616 1",
        b"\xff\xfe garbage \x00 bytes \\\\ \\0",
        b"/dev/x /a\\ ext4 rw 0 0\n/dev/y",
        b"18446744073709551615 18446744073709551615 18446744073709551615",
        b"1.5 nan 2 3/ 4",
    ];
    let files = [
        "proc/stat",
        "proc/meminfo",
        "proc/loadavg",
        "proc/self/mounts",
        "proc/diskstats",
        "proc/net/dev",
        "proc/pressure/cpu",
        "proc/pressure/memory",
        "proc/pressure/io",
        "proc/sys/kernel/pid_max",
        "proc/sys/kernel/threads-max",
        "proc/sys/fs/file-nr",
    ];
    let mut c = f.collector();
    let t0 = Instant::now();
    let mut out = Vec::new();
    for (i, content) in garbage.iter().enumerate() {
        for file in files {
            f.write(file, content);
        }
        let s = c.collect(t0 + Duration::from_secs(i as u64));
        s.samples(&mut out);
    }
    assert!(
        out.iter().all(|s| !s.value.is_nan()),
        "no NaN reaches the flat form"
    );
    // the last file-nr (u64::MAX everywhere) is still read
    f.write("proc/sys/fs/file-nr", garbage[10]);
    let fds = c.collect(t0 + Duration::from_secs(99)).fds.unwrap();
    assert_eq!(fds.used_ratio, Some(1.0));
}

/// Every name the fixture emits (all but the GPU ones), sorted.
const NAMES: &str = "\
    qm_host_boot_time_seconds qm_host_context_switches_per_second qm_host_context_switches_total \
    qm_host_cpu_busy_cores qm_host_cpu_core_utilization_ratio qm_host_cpu_mode_ratio \
    qm_host_cpu_seconds_total qm_host_cpu_utilization_ratio qm_host_cpus \
    qm_host_disk_io_time_seconds_total qm_host_disk_read_bytes_per_second \
    qm_host_disk_read_bytes_total qm_host_disk_reads_completed_total \
    qm_host_disk_reads_per_second qm_host_disk_utilization_ratio \
    qm_host_disk_write_bytes_per_second qm_host_disk_writes_completed_total \
    qm_host_disk_writes_per_second qm_host_disk_written_bytes_total qm_host_fds_allocated \
    qm_host_fds_max qm_host_fds_used_ratio qm_host_filesystem_avail_bytes \
    qm_host_filesystem_files qm_host_filesystem_files_free qm_host_filesystem_free_bytes \
    qm_host_filesystem_size_bytes qm_host_filesystem_used_bytes qm_host_filesystem_used_ratio \
    qm_host_forks_per_second qm_host_forks_total qm_host_interrupts_per_second \
    qm_host_interrupts_total qm_host_load1 qm_host_load15 qm_host_load5 \
    qm_host_memory_available_bytes qm_host_memory_buffers_bytes qm_host_memory_cached_bytes \
    qm_host_memory_dirty_bytes qm_host_memory_free_bytes qm_host_memory_shmem_bytes \
    qm_host_memory_total_bytes qm_host_memory_used_bytes qm_host_memory_used_ratio \
    qm_host_memory_writeback_bytes qm_host_network_receive_bytes_per_second \
    qm_host_network_receive_bytes_total qm_host_network_receive_drops_per_second \
    qm_host_network_receive_drops_total qm_host_network_receive_errors_per_second \
    qm_host_network_receive_errors_total qm_host_network_receive_packets_per_second \
    qm_host_network_receive_packets_total qm_host_network_transmit_bytes_per_second \
    qm_host_network_transmit_bytes_total qm_host_network_transmit_drops_per_second \
    qm_host_network_transmit_drops_total qm_host_network_transmit_errors_per_second \
    qm_host_network_transmit_errors_total qm_host_network_transmit_packets_per_second \
    qm_host_network_transmit_packets_total qm_host_pid_max qm_host_pressure_ratio \
    qm_host_pressure_stall_seconds_total qm_host_pressure_stalled_ratio qm_host_procs_blocked \
    qm_host_procs_running qm_host_swap_free_bytes qm_host_swap_total_bytes \
    qm_host_swap_used_bytes qm_host_threads qm_host_threads_max";

/// Some series of the fixture's second snapshot, as `render` writes them.
const SOME_SERIES: &str = "
    Gauge qm_host_cpus{} 2
    Rate qm_host_cpu_utilization_ratio{} 0.75
    Rate qm_host_cpu_busy_cores{} 1.5
    Rate qm_host_cpu_mode_ratio{cpu=total,mode=iowait} 0.1
    Rate qm_host_cpu_mode_ratio{cpu=1,mode=system} 0.25
    Rate qm_host_cpu_core_utilization_ratio{cpu=0} 1
    Counter qm_host_context_switches_total{} 24000
    Rate qm_host_context_switches_per_second{} 2000
    Gauge qm_host_procs_running{} 5
    Gauge qm_host_boot_time_seconds{} 1700000000
    Gauge qm_host_load15{} 0.75
    Gauge qm_host_memory_used_bytes{} 8589934592
    Gauge qm_host_memory_used_ratio{} 0.5
    Gauge qm_host_swap_used_bytes{} 1073741824
    Gauge qm_host_filesystem_avail_bytes{device=/dev/sda1,mountpoint=/,fstype=ext4} 37580963840
    Gauge qm_host_filesystem_files_free{device=/dev/sda1,mountpoint=/,fstype=ext4} 600
    Gauge qm_host_filesystem_size_bytes{device=tmpfs,mountpoint=/tmp,fstype=tmpfs} 8589934592
    Counter qm_host_disk_read_bytes_total{device=sda} 2147483648
    Counter qm_host_disk_io_time_seconds_total{device=sda} 2
    Rate qm_host_disk_read_bytes_per_second{device=sda} 536870912
    Rate qm_host_disk_utilization_ratio{device=sda} 0.5
    Counter qm_host_network_receive_drops_total{interface=eth0} 2
    Rate qm_host_network_receive_bytes_per_second{interface=eth0} 1000000
    Rate qm_host_network_transmit_packets_per_second{interface=eth0} 200
    Gauge qm_host_pressure_ratio{resource=cpu,kind=some,window=10s} 0.125
    Gauge qm_host_pressure_ratio{resource=memory,kind=full,window=300s} 0.001
    Counter qm_host_pressure_stall_seconds_total{resource=memory,kind=full} 0.3
    Rate qm_host_pressure_stalled_ratio{resource=cpu,kind=some} 0.5
    Gauge qm_host_threads{} 420
    Gauge qm_host_pid_max{} 4194304
    Gauge qm_host_fds_used_ratio{} 0.001953125
";

/// `Kind name{key=value,...} value`.
fn render(s: &Sample) -> String {
    let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{:?} {}{{{}}} {}",
        s.desc.kind,
        s.desc.name,
        labels.join(","),
        s.value
    )
}

#[test]
fn samples_have_the_agreed_names_labels_and_kinds() {
    let s = second_snapshot("samples");
    let mut out = Vec::new();
    s.samples(&mut out);
    let rendered: Vec<String> = out.iter().map(render).collect();
    for line in SOME_SERIES.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            rendered.iter().any(|r| r == line),
            "no {line} in {rendered:#?}"
        );
    }
    let tps = rustix::param::clock_ticks_per_second() as f64;
    let user = format!(
        "Counter qm_host_cpu_seconds_total{{cpu=0,mode=user}} {}",
        650.0 / tps
    );
    assert!(rendered.contains(&user), "{user}");
    assert!(
        !rendered
            .iter()
            .any(|r| r.contains("resource=cpu,kind=full"))
    );

    // one desc, one kind and one label set per name; no series twice
    let mut by_name: BTreeMap<&str, (Kind, Vec<&str>)> = BTreeMap::new();
    let mut series = BTreeSet::new();
    for s in &out {
        let name = s.desc.name;
        let keys: Vec<&str> = s.labels.iter().map(|(k, _)| *k).collect();
        let (kind, first_keys) = by_name.entry(name).or_insert((s.desc.kind, keys.clone()));
        assert_eq!((*kind, &*first_keys), (s.desc.kind, &keys), "{name}");
        assert!(series.insert((name, s.labels.clone())), "{name} twice");
        assert!(s.value.is_finite() && s.desc.help.ends_with('.'), "{name}");
        assert_eq!(
            s.desc.kind == Kind::Counter,
            name.ends_with("_total"),
            "{name}"
        );
    }
    let names: Vec<&str> = by_name.keys().copied().collect();
    assert_eq!(names, NAMES.split_whitespace().collect::<Vec<_>>());
}

#[test]
fn cores_and_memory_of_a_fixture() {
    let f = full_fixture("capacity");
    assert_eq!(
        qm_sys::host::cores_and_memory(&f.paths()),
        (Some(2), Some(16 * GIB))
    );
}

/// A `/proc/meminfo` value in bytes, read straight from the file.
fn meminfo_bytes(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    Some(kib.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
}

#[test]
fn the_real_host() {
    if !Path::new("/proc/stat").exists() || !Path::new("/proc/meminfo").exists() {
        println!("skipped the_real_host: no /proc here");
        return;
    }
    let mut c = HostCollector::new(&Paths::default());
    let before = meminfo_bytes("MemAvailable").unwrap();
    let s = c.collect(Instant::now());
    let after = meminfo_bytes("MemAvailable").unwrap();

    let total = meminfo_bytes("MemTotal").unwrap();
    let m = s.memory.unwrap();
    assert_eq!(m.total_bytes, total);
    // other processes allocate and free between the reads: allow 64 MiB either side
    let slack = 64 << 20;
    let (low, high) = (
        before.min(after).saturating_sub(slack),
        before.max(after) + slack,
    );
    assert!(
        (low..=high).contains(&m.available_bytes),
        "{low} <= {} <= {high}",
        m.available_bytes
    );

    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu_lines = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(s.cpu.as_ref().unwrap().n_cores as usize, cpu_lines);
    assert_eq!(
        qm_sys::host::cores_and_memory(&Paths::default()),
        (Some(cpu_lines as u32), Some(total))
    );

    std::thread::sleep(Duration::from_millis(200));
    let s = c.collect(Instant::now());
    let utilization = s.cpu.as_ref().unwrap().utilization.unwrap();
    assert!((0.0..=1.0).contains(&utilization), "{utilization}");
    let root = s.filesystems.iter().find(|f| f.mount_point == "/");
    assert!(
        root.is_some_and(|r| r.size_bytes > 0),
        "{:?}",
        s.filesystems
    );
    if Path::new("/proc/pressure/memory").exists() {
        assert!(s.pressure.memory.is_some());
    }
    if !Path::new("/dev/nvidia0").exists() {
        assert_eq!(s.gpus, None, "no GPU on this host");
    }
    let mut out = Vec::new();
    s.samples(&mut out);
    assert!(
        out.iter()
            .any(|s| s.desc.name == "qm_host_cpu_utilization_ratio")
    );
}
