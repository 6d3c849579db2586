//! Memory and swap from `/proc/meminfo`, the way the kernel means them: `used` is what cannot
//! be had back without swapping (`total - MemAvailable`), and the page cache is shown apart
//! from it rather than counted as used.

use super::{push, ratio};
use crate::metric::Sample;

/// Memory and swap, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Memory {
    /// Usable RAM (`MemTotal`).
    pub total_bytes: u64,
    /// What new work can get without swapping (`MemAvailable`; on kernels before 3.14,
    /// estimated as `MemFree + Buffers + Cached`).
    pub available_bytes: u64,
    /// Whether `available_bytes` is the old-kernel estimate rather than the kernel's figure.
    pub available_estimated: bool,
    /// `total - available`.
    pub used_bytes: u64,
    /// `used / total` (0..1); `None` when the total is zero.
    pub used_ratio: Option<f64>,
    /// Entirely unused RAM (`MemFree`).
    pub free_bytes: u64,
    /// Block device buffers (`Buffers`).
    pub buffers_bytes: Option<u64>,
    /// Page cache and reclaimable kernel slabs (`Cached + SReclaimable`); mostly reclaimable,
    /// but it includes shared memory and tmpfs files, which are not.
    pub cached_bytes: Option<u64>,
    /// Shared memory and tmpfs (`Shmem`).
    pub shmem_bytes: Option<u64>,
    /// Swap space (`SwapTotal`).
    pub swap_total_bytes: Option<u64>,
    /// Unused swap (`SwapFree`).
    pub swap_free_bytes: Option<u64>,
    /// `SwapTotal - SwapFree`.
    pub swap_used_bytes: Option<u64>,
    /// Modified pages waiting to be written back (`Dirty`).
    pub dirty_bytes: Option<u64>,
    /// Pages being written back now (`Writeback`).
    pub writeback_bytes: Option<u64>,
}

/// The `meminfo` keys read, in the order of [`Fields`].
const KEYS: [&str; 11] = [
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "SReclaimable",
    "Shmem",
    "SwapTotal",
    "SwapFree",
    "Dirty",
    "Writeback",
];

impl Memory {
    /// One pass over `/proc/meminfo`; `None` without `MemTotal` and `MemFree`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut v: [Option<u64>; 11] = [None; 11];
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(key) = words.next().and_then(|k| k.strip_suffix(':')) else {
                continue;
            };
            let Some(i) = KEYS.iter().position(|k| *k == key) else {
                continue;
            };
            let kib = words.next().and_then(|n| n.parse::<u64>().ok());
            // every key read here is in kB; a line cut before its unit still counts
            if matches!(words.next(), Some("kB") | None) {
                v[i] = kib.map(|k| k.saturating_mul(1024));
            }
        }
        let [
            total,
            free,
            available,
            buffers,
            cached,
            reclaimable,
            shmem,
            swap_total,
            swap_free,
            dirty,
            writeback,
        ] = v;
        let (total, free) = (total?, free?);
        let (available, estimated) = match available {
            Some(a) => (a, false),
            None => (
                free.saturating_add(buffers.unwrap_or(0))
                    .saturating_add(cached.unwrap_or(0)),
                true,
            ),
        };
        let available = available.min(total);
        let used = total - available;
        Some(Memory {
            total_bytes: total,
            available_bytes: available,
            available_estimated: estimated,
            used_bytes: used,
            used_ratio: ratio(used as f64, total as f64),
            free_bytes: free,
            buffers_bytes: buffers,
            cached_bytes: cached.map(|c| c.saturating_add(reclaimable.unwrap_or(0))),
            shmem_bytes: shmem,
            swap_total_bytes: swap_total,
            swap_free_bytes: swap_free,
            swap_used_bytes: swap_total.zip(swap_free).map(|(t, f)| t.saturating_sub(f)),
            dirty_bytes: dirty,
            writeback_bytes: writeback,
        })
    }

    pub(crate) fn samples(&self, out: &mut Vec<Sample>) {
        let b = |v: u64| Some(v as f64);
        let o = |v: Option<u64>| v.map(|v| v as f64);
        push(out, &TOTAL, &[], b(self.total_bytes));
        push(out, &AVAILABLE, &[], b(self.available_bytes));
        push(out, &USED, &[], b(self.used_bytes));
        push(out, &USED_RATIO, &[], self.used_ratio);
        push(out, &FREE, &[], b(self.free_bytes));
        push(out, &BUFFERS, &[], o(self.buffers_bytes));
        push(out, &CACHED, &[], o(self.cached_bytes));
        push(out, &SHMEM, &[], o(self.shmem_bytes));
        push(out, &DIRTY, &[], o(self.dirty_bytes));
        push(out, &WRITEBACK, &[], o(self.writeback_bytes));
        push(out, &SWAP_TOTAL, &[], o(self.swap_total_bytes));
        push(out, &SWAP_FREE, &[], o(self.swap_free_bytes));
        push(out, &SWAP_USED, &[], o(self.swap_used_bytes));
    }
}

descs! {
    TOTAL Gauge "qm_host_memory_total_bytes"
        "Usable RAM.";
    AVAILABLE Gauge "qm_host_memory_available_bytes"
        "Memory new work can get without swapping.";
    USED Gauge "qm_host_memory_used_bytes"
        "Memory in use: total minus available.";
    USED_RATIO Gauge "qm_host_memory_used_ratio"
        "Share of memory in use (used over total).";
    FREE Gauge "qm_host_memory_free_bytes"
        "Entirely unused RAM.";
    BUFFERS Gauge "qm_host_memory_buffers_bytes"
        "Block device buffers.";
    CACHED Gauge "qm_host_memory_cached_bytes"
        "Page cache and reclaimable kernel slabs.";
    SHMEM Gauge "qm_host_memory_shmem_bytes"
        "Shared memory and tmpfs files.";
    DIRTY Gauge "qm_host_memory_dirty_bytes"
        "Modified pages waiting to be written back.";
    WRITEBACK Gauge "qm_host_memory_writeback_bytes"
        "Pages being written back now.";
    SWAP_TOTAL Gauge "qm_host_swap_total_bytes"
        "Swap space.";
    SWAP_FREE Gauge "qm_host_swap_free_bytes"
        "Unused swap space.";
    SWAP_USED Gauge "qm_host_swap_used_bytes"
        "Swap space in use.";
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        1000 kB\nMemFree:          100 kB\n\
        MemAvailable:     600 kB\nBuffers:           50 kB\nCached:           300 kB\n\
        SwapCached:         0 kB\nShmem:             20 kB\nSReclaimable:      40 kB\n\
        SwapTotal:        200 kB\nSwapFree:         150 kB\nDirty:              4 kB\n\
        Writeback:          0 kB\nHugePages_Total:       0\n";

    #[test]
    fn memory_is_read_the_way_the_kernel_means_it() {
        let m = Memory::parse(MEMINFO).unwrap();
        assert_eq!(m.total_bytes, 1_024_000);
        assert_eq!(m.available_bytes, 600 * 1024);
        assert!(!m.available_estimated);
        assert_eq!(m.used_bytes, 400 * 1024);
        assert_eq!(m.used_ratio, Some(0.4));
        assert_eq!(m.cached_bytes, Some(340 * 1024));
        assert_eq!(m.swap_used_bytes, Some(50 * 1024));
        assert_eq!((m.dirty_bytes, m.writeback_bytes), (Some(4096), Some(0)));
    }

    #[test]
    fn old_kernels_without_memavailable_get_an_estimate() {
        let m = Memory::parse(&MEMINFO.replace("MemAvailable:     600 kB\n", "")).unwrap();
        assert!(m.available_estimated);
        assert_eq!(m.available_bytes, 450 * 1024);
    }

    #[test]
    fn malformed_and_truncated_meminfo() {
        assert_eq!(Memory::parse(""), None);
        assert_eq!(
            Memory::parse("MemTotal: 1000 kB\nMemFr"),
            None,
            "cut in half"
        );
        assert_eq!(Memory::parse("MemTotal: x kB\nMemFree: 1 kB"), None);
        let m =
            Memory::parse("MemTotal: 100 kB\nMemFree: 10\nCached: 7 MB\nDirty: 3 kB\n").unwrap();
        assert_eq!(m.cached_bytes, None, "unexpected unit");
        assert_eq!(m.dirty_bytes, Some(3072));
        assert_eq!(m.swap_total_bytes, None);
        // available above total (a garbage file) is clamped, never an underflow
        let m = Memory::parse("MemTotal: 1 kB\nMemFree: 1 kB\nMemAvailable: 9 kB").unwrap();
        assert_eq!(m.used_bytes, 0);
        let m = Memory::parse("MemTotal: 0 kB\nMemFree: 0 kB").unwrap();
        assert_eq!(m.used_ratio, None);
    }
}
