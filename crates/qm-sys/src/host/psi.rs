//! Pressure stall information from `/proc/pressure/{cpu,memory,io}` (Linux 4.20+): the share
//! of time some or all non-idle tasks were stalled on a resource, as the kernel's 10 s, 60 s
//! and 300 s averages and as a total, from which the share over the last interval follows.
//! System-wide CPU `full` is undefined; kernels since 5.13 write it as zeros, older ones leave
//! the line out: both are `None` here.

use std::path::PathBuf;
use std::time::Instant;

use super::{push, rate};
use crate::metric::Sample;
use crate::rate::Counter;

/// The files under `/proc/pressure`, in [`Pressure`]'s order.
pub(crate) const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

/// One line of a pressure file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiLine {
    /// Stalled share over the last 10 s, in percent (0..100) as the kernel writes it.
    pub avg10: f64,
    /// Over the last 60 s, in percent.
    pub avg60: f64,
    /// Over the last 300 s, in percent.
    pub avg300: f64,
    /// Stalled time since boot, in microseconds.
    pub total_microseconds: u64,
    /// Stalled share of the interval since the previous collection (0..1), from `total`.
    pub stalled_ratio: Option<f64>,
}

/// Pressure on one resource.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Psi {
    /// Some tasks stalled.
    pub some: PsiLine,
    /// All non-idle tasks stalled at once; `None` for CPU (see the module docs) or when the
    /// kernel does not write it.
    pub full: Option<PsiLine>,
}

/// Pressure on each resource; each `None` where the kernel has no PSI (before 4.20, or
/// booted with `psi=0`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    /// CPU.
    pub cpu: Option<Psi>,
    /// Memory.
    pub memory: Option<Psi>,
    /// Block IO.
    pub io: Option<Psi>,
}

/// The last `total` of each resource's `some` and `full`.
#[derive(Debug, Default)]
pub(crate) struct PsiState {
    totals: [[Option<Counter>; 2]; 3],
}

impl PsiState {
    /// Reads the three files (`files` in [`RESOURCES`] order) through `buf`.
    pub(crate) fn update(
        &mut self,
        files: &[PathBuf; 3],
        buf: &mut String,
        now: Instant,
    ) -> Pressure {
        let mut read = [None; 3];
        for (((slot, file), totals), name) in read
            .iter_mut()
            .zip(files)
            .zip(&mut self.totals)
            .zip(RESOURCES)
        {
            let psi = if crate::read::text_into(file, buf) {
                parse(buf, name == "cpu")
            } else {
                None
            };
            *slot = psi.map(|mut psi| {
                psi.some.stalled_ratio =
                    stalled(&mut totals[0], Some(psi.some.total_microseconds), now);
                let full_total = psi.full.map(|f| f.total_microseconds);
                let full_ratio = stalled(&mut totals[1], full_total, now);
                if let Some(full) = &mut psi.full {
                    full.stalled_ratio = full_ratio;
                }
                psi
            });
            if slot.is_none() {
                *totals = [None, None];
            }
        }
        let [cpu, memory, io] = read;
        Pressure { cpu, memory, io }
    }
}

fn stalled(slot: &mut Option<Counter>, total: Option<u64>, now: Instant) -> Option<f64> {
    rate(slot, total, now).map(|us_per_s| (us_per_s / 1e6).clamp(0.0, 1.0))
}

/// `some avg10=.. avg60=.. avg300=.. total=..` and the same for `full`; `None` without a
/// well-formed `some` line.
fn parse(text: &str, cpu: bool) -> Option<Psi> {
    let (mut some, mut full) = (None, None);
    for line in text.lines() {
        match line.split_whitespace().next() {
            Some("some") => some = parse_line(line),
            Some("full") => full = parse_line(line),
            _ => {}
        }
    }
    if cpu && full.is_some_and(|f| f == PsiLine::default()) {
        full = None;
    }
    Some(Psi { some: some?, full })
}

fn parse_line(line: &str) -> Option<PsiLine> {
    let avg = |key| {
        crate::read::field(line, key)?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    Some(PsiLine {
        avg10: avg("avg10")?,
        avg60: avg("avg60")?,
        avg300: avg("avg300")?,
        total_microseconds: crate::read::field(line, "total")?.parse().ok()?,
        stalled_ratio: None,
    })
}

impl Pressure {
    pub(crate) fn samples(&self, out: &mut Vec<Sample>) {
        for (resource, psi) in RESOURCES
            .into_iter()
            .zip([&self.cpu, &self.memory, &self.io])
        {
            let Some(psi) = psi else { continue };
            for (kind, line) in [("some", Some(&psi.some)), ("full", psi.full.as_ref())] {
                let Some(l) = line else { continue };
                for (window, avg) in [("10s", l.avg10), ("60s", l.avg60), ("300s", l.avg300)] {
                    let labels = [("resource", resource), ("kind", kind), ("window", window)];
                    push(out, &RATIO, &labels, Some(avg / 100.0));
                }
                let labels = [("resource", resource), ("kind", kind)];
                push(
                    out,
                    &STALL_SECONDS,
                    &labels,
                    Some(l.total_microseconds as f64 / 1e6),
                );
                push(out, &STALLED_RATIO, &labels, l.stalled_ratio);
            }
        }
    }
}

descs! {
    RATIO Gauge "qm_host_pressure_ratio"
        "Share of time tasks were stalled on a resource, as the kernel's moving average over a window.";
    STALL_SECONDS Counter "qm_host_pressure_stall_seconds_total"
        "Seconds tasks were stalled on a resource since boot.";
    STALLED_RATIO Rate "qm_host_pressure_stalled_ratio"
        "Share of the last interval tasks were stalled on a resource.";
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY: &str = "some avg10=11.18 avg60=4.02 avg300=1.12 total=4598807\n\
        full avg10=11.18 avg60=3.99 avg300=1.04 total=3943310\n";

    #[test]
    fn lines_parse_and_cpu_full_zeros_are_none() {
        let p = parse(MEMORY, false).unwrap();
        assert_eq!(p.some.avg10, 11.18);
        assert_eq!(p.full.unwrap().total_microseconds, 3_943_310);
        let zeros = "some avg10=3.34 avg60=3.18 avg300=3.33 total=18192873\n\
            full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse(zeros, true).unwrap().full, None);
        assert!(
            parse(zeros, false).unwrap().full.is_some(),
            "memory full at zero is real"
        );
        let old = "some avg10=3.34 avg60=3.18 avg300=3.33 total=18192873\n";
        assert_eq!(parse(old, true).unwrap().full, None);
    }

    #[test]
    fn malformed_pressure_files() {
        assert_eq!(parse("", false), None);
        assert_eq!(
            parse("some avg10=1.00 avg60=2.00 avg3", false),
            None,
            "cut in half"
        );
        assert_eq!(parse("some avg10=x avg60=1 avg300=1 total=1", false), None);
        let p = parse(
            "some avg10=1 avg60=1 avg300=1 total=1\nfull avg10=-1 avg60=1 avg300=1 total=1",
            false,
        );
        assert_eq!(p.unwrap().full, None);
    }
}
