//! System-wide limits an agent fleet can run into: threads against `kernel.pid_max` and
//! `kernel.threads-max` (every thread takes a pid), and open file handles against `fs.file-max`
//! (`/proc/sys/fs/file-nr`).
//!
//! Thread count is the `total` of `/proc/loadavg`'s `running/total` field: the kernel's count
//! of scheduling entities, which is every thread of every process. Counting processes instead
//! would mean listing every numeric directory of /proc each second, so it is not reported.

use std::path::Path;

use super::{LoadAvg, push, ratio};
use crate::metric::Sample;

/// Threads and the limits on them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pids {
    /// Threads that exist (all processes' threads; from `/proc/loadavg`).
    pub threads: Option<u64>,
    /// The highest pid plus one (`kernel.pid_max`): the most threads that can exist at once.
    pub pid_max: Option<u64>,
    /// The kernel's system-wide thread limit (`kernel.threads-max`).
    pub threads_max: Option<u64>,
}

impl Pids {
    /// `None` when none of the three is readable.
    pub(crate) fn read(load: Option<&LoadAvg>, pid_max: &Path, threads_max: &Path) -> Option<Self> {
        let pids = Pids {
            threads: load.and_then(|l| l.threads_total),
            pid_max: crate::read::number(pid_max),
            threads_max: crate::read::number(threads_max),
        };
        (pids != Pids::default()).then_some(pids)
    }

    pub(crate) fn samples(&self, out: &mut Vec<Sample>) {
        let f = |v: Option<u64>| v.map(|v| v as f64);
        push(out, &THREADS, &[], f(self.threads));
        push(out, &PID_MAX, &[], f(self.pid_max));
        push(out, &THREADS_MAX, &[], f(self.threads_max));
    }
}

/// File handles, system-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fds {
    /// Allocated file handles.
    pub allocated: u64,
    /// The system-wide maximum (`fs.file-max`).
    pub max: u64,
    /// `allocated / max` (0..1); `None` when the maximum is zero.
    pub used_ratio: Option<f64>,
}

impl Fds {
    /// `allocated unused max`, as in `/proc/sys/fs/file-nr` (`unused` is always 0 since 2.6).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let allocated: u64 = words.next()?.parse().ok()?;
        let _unused = words.next()?;
        let max: u64 = words.next()?.parse().ok()?;
        Some(Fds {
            allocated,
            max,
            used_ratio: ratio(allocated as f64, max as f64),
        })
    }

    pub(crate) fn samples(&self, out: &mut Vec<Sample>) {
        push(out, &FDS_ALLOCATED, &[], Some(self.allocated as f64));
        push(out, &FDS_MAX, &[], Some(self.max as f64));
        push(out, &FDS_USED_RATIO, &[], self.used_ratio);
    }
}

descs! {
    THREADS Gauge "qm_host_threads"
        "Threads of all processes that exist.";
    PID_MAX Gauge "qm_host_pid_max"
        "The kernel's pid limit (kernel.pid_max); every thread takes a pid.";
    THREADS_MAX Gauge "qm_host_threads_max"
        "The kernel's system-wide thread limit (kernel.threads-max).";
    FDS_ALLOCATED Gauge "qm_host_fds_allocated"
        "Allocated file handles, system-wide.";
    FDS_MAX Gauge "qm_host_fds_max"
        "The system-wide file handle limit (fs.file-max).";
    FDS_USED_RATIO Gauge "qm_host_fds_used_ratio"
        "Share of the file handle limit in use.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_nr_parses_and_garbage_is_none() {
        let f = Fds::parse("376\t0\t2466183\n").unwrap();
        assert_eq!((f.allocated, f.max), (376, 2_466_183));
        assert_eq!(Fds::parse("1 0 4").unwrap().used_ratio, Some(0.25));
        assert_eq!(Fds::parse("1 0 0").unwrap().used_ratio, None);
        assert_eq!(
            Fds::parse("1 0 9223372036854775807").unwrap().max,
            i64::MAX as u64
        );
        assert_eq!(Fds::parse("376 0"), None, "cut in half");
        assert_eq!(Fds::parse("x 0 5"), None);
        assert_eq!(Fds::parse(""), None);
    }

    #[test]
    fn pids_from_loadavg_and_sysctls() {
        let missing = Path::new("/nonexistent/qm-sys/pid_max");
        assert_eq!(Pids::read(None, missing, missing), None);
        let load = LoadAvg::parse("0 0 0 2/83 9").unwrap();
        let p = Pids::read(Some(&load), missing, missing).unwrap();
        assert_eq!((p.threads, p.pid_max), (Some(83), None));
    }
}
