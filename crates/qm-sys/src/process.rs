//! The daemon's own cost: its process CPU seconds, resident memory and threads (from
//! `/proc/self/stat`), and the CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), which
//! the monitor uses to state what one collection cycle cost.

use std::path::Path;
use std::time::Duration;

use crate::metric::{Desc, Kind, Sample};

/// What a process costs right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// User plus system CPU time since it started, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Start time in seconds since boot.
    pub start_seconds: f64,
}

/// Reads `<proc>/<pid>/stat` (or `self`); `None` when absent or malformed.
pub fn usage(proc: &Path, pid: &str) -> Option<ProcessUsage> {
    let text = crate::read::text(&proc.join(pid).join("stat"))?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcessUsage> {
    // the command name may hold spaces and parentheses: fields start after the last ')'
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): field n is fields[n - 3]
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as u64;
    Some(ProcessUsage {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        threads: field(20)?,
        start_seconds: field(22)? as f64 / ticks,
        rss_bytes: field(24)?.saturating_mul(page),
    })
}

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

static CPU: Desc = Desc {
    name: "qm_process_cpu_seconds_total",
    help: "CPU time the quartermaster daemon has used, user plus system.",
    kind: Kind::Counter,
};
static RSS: Desc = Desc {
    name: "qm_process_resident_memory_bytes",
    help: "Resident memory of the quartermaster daemon.",
    kind: Kind::Gauge,
};
static THREADS: Desc = Desc {
    name: "qm_process_threads",
    help: "Threads of the quartermaster daemon.",
    kind: Kind::Gauge,
};

impl ProcessUsage {
    /// The flat form: the daemon's own series.
    pub fn samples(&self, out: &mut Vec<Sample>) {
        out.push(Sample::new(&CPU, self.cpu_seconds));
        out.push(Sample::new(&RSS, self.rss_bytes as f64));
        out.push(Sample::new(&THREADS, self.threads as f64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_names_and_garbage() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 7 0 1000 \
                    12345678 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let u = parse_stat(line).unwrap();
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        assert_eq!(u.cpu_seconds, 400.0 / ticks);
        assert_eq!(u.threads, 7);
        assert_eq!(u.rss_bytes, 300 * rustix::param::page_size() as u64);
        assert_eq!(parse_stat("42 (x) S 1 2"), None, "truncated");
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_usage_and_thread_time_are_real() {
        let u = usage(Path::new("/proc"), "self").unwrap();
        assert!(u.rss_bytes > 0 && u.threads >= 1);
        let t0 = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1 || thread_cpu_time() > t0);
        assert!(thread_cpu_time() > t0);
    }
}
