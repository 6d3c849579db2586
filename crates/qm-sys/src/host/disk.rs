//! Block device IO from `/proc/diskstats`: whole devices only, so that a disk's traffic is not
//! counted again in its partitions. Loop, ram, zram and floppy devices are skipped by name; a
//! device is a partition when `<sys>/class/block/<name>/partition` exists, or, without sysfs,
//! when its name looks like one (`sda1`, `nvme0n1p2`, `mmcblk0p1`). Device-mapper and md
//! devices are kept (their IO is also in the disks below them, as in node_exporter).

use std::path::Path;
use std::time::Instant;

use super::{push, rate};
use crate::metric::Sample;
use crate::rate::Counter;

/// Sector size of `/proc/diskstats`, whatever the device's own.
const SECTOR_BYTES: u64 = 512;

/// Totals since boot (or since the device appeared).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskCounters {
    /// Reads completed.
    pub reads_completed: u64,
    /// Writes completed.
    pub writes_completed: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub written_bytes: u64,
    /// Seconds with at least one IO in flight.
    pub io_time_seconds: f64,
}

/// Rates over the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskRates {
    /// Bytes read per second.
    pub read_bytes_per_second: f64,
    /// Bytes written per second.
    pub write_bytes_per_second: f64,
    /// Reads completed per second.
    pub reads_per_second: f64,
    /// Writes completed per second.
    pub writes_per_second: f64,
    /// Share of the interval with IO in flight (0..1); near 1 means busy, not necessarily
    /// saturated, on devices that serve requests in parallel (SSDs, RAID).
    pub utilization: f64,
}

/// One whole block device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Disk {
    /// The kernel's name (`sda`, `nvme0n1`, `dm-0`).
    pub name: String,
    /// Totals.
    pub counters: DiskCounters,
    /// Rates; `None` on the first reading and after a counter reset.
    pub rates: Option<DiskRates>,
}

/// What is known about a device seen before.
#[derive(Debug)]
struct Known {
    name: String,
    whole: bool,
    seen: bool,
    /// reads, writes, read bytes, written bytes, io milliseconds.
    counters: [Option<Counter>; 5],
}

/// Devices seen, with their last readings.
#[derive(Debug, Default)]
pub(crate) struct DiskState {
    known: Vec<Known>,
}

impl DiskState {
    /// Reads `/proc/diskstats` text; `sys_block` is `<sys>/class/block`.
    pub(crate) fn update(&mut self, text: &str, sys_block: &Path, now: Instant) -> Vec<Disk> {
        let mut out = Vec::new();
        for k in &mut self.known {
            k.seen = false;
        }
        for line in text.lines() {
            let Some((name, raw)) = parse_line(line) else {
                continue;
            };
            if skipped_by_name(name) {
                continue;
            }
            let known = match self.known.iter().position(|k| k.name == name) {
                Some(i) => &mut self.known[i],
                None => {
                    self.known.push(Known {
                        name: name.to_owned(),
                        whole: is_whole(sys_block, name),
                        seen: false,
                        counters: [None; 5],
                    });
                    let last = self.known.len() - 1;
                    &mut self.known[last]
                }
            };
            if known.seen {
                continue; // the same name twice in one file
            }
            known.seen = true;
            if !known.whole {
                continue;
            }
            let mut rates = [None; 5];
            for ((slot, r), v) in known.counters.iter_mut().zip(&mut rates).zip(raw) {
                *r = rate(slot, Some(v), now);
            }
            let [
                Some(reads),
                Some(writes),
                Some(read),
                Some(written),
                Some(io_ms),
            ] = rates
            else {
                out.push(disk(name, &raw, None));
                continue;
            };
            let rates = DiskRates {
                read_bytes_per_second: read,
                write_bytes_per_second: written,
                reads_per_second: reads,
                writes_per_second: writes,
                utilization: (io_ms / 1000.0).clamp(0.0, 1.0),
            };
            out.push(disk(name, &raw, Some(rates)));
        }
        self.known.retain(|k| k.seen);
        out
    }
}

fn disk(name: &str, raw: &[u64; 5], rates: Option<DiskRates>) -> Disk {
    Disk {
        name: name.to_owned(),
        counters: DiskCounters {
            reads_completed: raw[0],
            writes_completed: raw[1],
            read_bytes: raw[2],
            written_bytes: raw[3],
            io_time_seconds: raw[4] as f64 / 1000.0,
        },
        rates,
    }
}

/// `major minor name` and at least the 11 fields every kernel since 2.6 writes: the name and
/// reads, writes, bytes read, bytes written and io milliseconds.
fn parse_line(line: &str) -> Option<(&str, [u64; 5])> {
    let mut f = line.split_whitespace();
    let name = f.nth(2)?;
    let mut v = [0u64; 10];
    for slot in &mut v {
        *slot = f.next()?.parse().ok()?;
    }
    // reads, merged, sectors read, ms reading, writes, merged, sectors written, ms writing,
    // in flight, io ms
    let bytes = |sectors: u64| sectors.saturating_mul(SECTOR_BYTES);
    Some((name, [v[0], v[4], bytes(v[2]), bytes(v[6]), v[9]]))
}

fn skipped_by_name(name: &str) -> bool {
    ["loop", "ram", "zram", "fd"].iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// A whole device by sysfs when it knows the device, else by the name.
fn is_whole(sys_block: &Path, name: &str) -> bool {
    // sysfs spells `cciss/c0d0` as `cciss!c0d0`
    let dir = sys_block.join(name.replace('/', "!"));
    if dir.is_dir() {
        return !dir.join("partition").exists();
    }
    !looks_like_partition(name)
}

/// `sda1`, `vdb2`, `xvda1`, `hdc3`; `nvme0n1p2`, `mmcblk0p1`, `md0p1` (a `p<N>` after a digit).
fn looks_like_partition(name: &str) -> bool {
    let bytes = name.as_bytes();
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() == bytes.len() {
        return false; // no trailing number
    }
    if let Some(before) = stem.strip_suffix('p')
        && before.ends_with(|c: char| c.is_ascii_digit())
    {
        return true;
    }
    ["sd", "hd", "vd", "xvd"].iter().any(|prefix| {
        stem.strip_prefix(prefix).is_some_and(|letters| {
            !letters.is_empty() && letters.bytes().all(|b| b.is_ascii_lowercase())
        })
    })
}

impl Disk {
    pub(crate) fn samples(&self, out: &mut Vec<Sample>) {
        let labels = [("device", self.name.as_str())];
        let c = &self.counters;
        push(out, &READ_BYTES, &labels, Some(c.read_bytes as f64));
        push(out, &WRITTEN_BYTES, &labels, Some(c.written_bytes as f64));
        push(out, &READS, &labels, Some(c.reads_completed as f64));
        push(out, &WRITES, &labels, Some(c.writes_completed as f64));
        push(out, &IO_TIME, &labels, Some(c.io_time_seconds));
        if let Some(r) = &self.rates {
            push(out, &READ_RATE, &labels, Some(r.read_bytes_per_second));
            push(out, &WRITE_RATE, &labels, Some(r.write_bytes_per_second));
            push(out, &READS_RATE, &labels, Some(r.reads_per_second));
            push(out, &WRITES_RATE, &labels, Some(r.writes_per_second));
            push(out, &UTILIZATION, &labels, Some(r.utilization));
        }
    }
}

descs! {
    READ_BYTES Counter "qm_host_disk_read_bytes_total"
        "Bytes read from the device.";
    WRITTEN_BYTES Counter "qm_host_disk_written_bytes_total"
        "Bytes written to the device.";
    READS Counter "qm_host_disk_reads_completed_total"
        "Reads completed.";
    WRITES Counter "qm_host_disk_writes_completed_total"
        "Writes completed.";
    IO_TIME Counter "qm_host_disk_io_time_seconds_total"
        "Seconds with at least one IO in flight.";
    READ_RATE Rate "qm_host_disk_read_bytes_per_second"
        "Bytes read per second over the last interval.";
    WRITE_RATE Rate "qm_host_disk_write_bytes_per_second"
        "Bytes written per second over the last interval.";
    READS_RATE Rate "qm_host_disk_reads_per_second"
        "Reads completed per second over the last interval.";
    WRITES_RATE Rate "qm_host_disk_writes_per_second"
        "Writes completed per second over the last interval.";
    UTILIZATION Rate "qm_host_disk_utilization_ratio"
        "Share of the last interval with IO in flight.";
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NO_SYS: &str = "/nonexistent/qm-sys/class/block";

    #[test]
    fn counters_rates_and_resets() {
        let t0 = Instant::now();
        let mut s = DiskState::default();
        let a = "   8       0 sda 100 0 2000 0 50 0 1000 0 0 500 0 0 0 0 0 0 0\n\
                    8       1 sda1 100 0 2000 0 50 0 1000 0 0 500 0 0 0 0 0 0 0\n\
                    7       0 loop0 9 0 9 0 9 0 9 0 0 9 0\n";
        let d = s.update(a, Path::new(NO_SYS), t0);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].counters.read_bytes, 2000 * 512);
        assert_eq!(d[0].counters.io_time_seconds, 0.5);
        assert_eq!(d[0].rates, None);
        let b = a.replacen(
            "sda 100 0 2000 0 50 0 1000 0 0 500",
            "sda 300 0 4000 0 50 0 1000 0 0 3500",
            1,
        );
        let d = s.update(&b, Path::new(NO_SYS), t0 + Duration::from_secs(2));
        let r = d[0].rates.unwrap();
        assert_eq!(
            (r.reads_per_second, r.read_bytes_per_second),
            (100.0, 512_000.0)
        );
        assert_eq!(r.utilization, 1.0, "clamped from 1.5");
        let d = s.update(a, Path::new(NO_SYS), t0 + Duration::from_secs(3));
        assert_eq!(d[0].rates, None, "counter reset");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let mut s = DiskState::default();
        let t = "8 0 sda 1 2 3\n8 16 sdb 1 0 x 0 1 0 1 0 0 1 0\n\n8 32 sdc 1 0 1 0 1 0 1 0 0 1";
        let d = s.update(t, Path::new(NO_SYS), Instant::now());
        assert_eq!(
            d.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["sdc"]
        );
        assert!(s.update("", Path::new(NO_SYS), Instant::now()).is_empty());
        assert!(s.known.is_empty(), "gone devices are forgotten");
    }

    #[test]
    fn partitions_by_name_without_sysfs() {
        for p in [
            "sda1",
            "vdb2",
            "xvda1",
            "hdc3",
            "nvme0n1p2",
            "mmcblk0p1",
            "md0p1",
        ] {
            assert!(looks_like_partition(p), "{p}");
        }
        for w in [
            "sda", "nvme0n1", "mmcblk0", "dm-0", "md127", "vdb", "sr0", "sdaa",
        ] {
            assert!(!looks_like_partition(w), "{w}");
        }
        assert!(skipped_by_name("loop12") && skipped_by_name("zram0") && skipped_by_name("ram1"));
        assert!(!skipped_by_name("loopy") && !skipped_by_name("fda"));
    }
}
