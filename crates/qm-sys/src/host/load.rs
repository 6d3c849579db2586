//! Load averages and thread counts from `/proc/loadavg`.

use crate::metric::Sample;

/// Load averages and thread counts, from `/proc/loadavg`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    /// Runnable and uninterruptible threads, averaged over 1 minute.
    pub load1: f64,
    /// Averaged over 5 minutes.
    pub load5: f64,
    /// Averaged over 15 minutes.
    pub load15: f64,
    /// Threads runnable right now (the part before `/`).
    pub threads_runnable: Option<u64>,
    /// Threads (kernel scheduling entities: every thread of every process) that exist.
    pub threads_total: Option<u64>,
}

impl LoadAvg {
    /// `0.54 0.52 0.24 1/83 9120`; `None` unless the three averages parse.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let mut avg = || {
            words
                .next()?
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        let (load1, load5, load15) = (avg()?, avg()?, avg()?);
        let threads = words.next().and_then(|w| w.split_once('/'));
        let count = |s: &str| s.parse::<u64>().ok();
        Some(LoadAvg {
            load1,
            load5,
            load15,
            threads_runnable: threads.and_then(|(r, _)| count(r)),
            threads_total: threads.and_then(|(_, t)| count(t)),
        })
    }

    pub(crate) fn samples(&self, out: &mut Vec<Sample>) {
        out.push(Sample::new(&LOAD1, self.load1));
        out.push(Sample::new(&LOAD5, self.load5));
        out.push(Sample::new(&LOAD15, self.load15));
    }
}

descs! {
    LOAD1 Gauge "qm_host_load1"
        "Load average over 1 minute.";
    LOAD5 Gauge "qm_host_load5"
        "Load average over 5 minutes.";
    LOAD15 Gauge "qm_host_load15"
        "Load average over 15 minutes.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_parses_and_tolerates_truncation() {
        let l = LoadAvg::parse("0.54 0.52 0.24 1/83 9120\n").unwrap();
        assert_eq!((l.load1, l.load5, l.load15), (0.54, 0.52, 0.24));
        assert_eq!((l.threads_runnable, l.threads_total), (Some(1), Some(83)));
        let l = LoadAvg::parse("1 2 3 4/").unwrap();
        assert_eq!((l.threads_runnable, l.threads_total), (Some(4), None));
        assert_eq!(LoadAvg::parse("0.54 0.52"), None);
        assert_eq!(LoadAvg::parse("0.54 NaN 1"), None);
        assert_eq!(LoadAvg::parse(""), None);
    }
}
