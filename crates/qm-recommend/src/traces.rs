//! Agent-like usage traces with fixed seeds, for `qm bench sizing` and the tests: a week at
//! one sample a minute of steady agents, a bursty one, a slow leak (restarted every 8 h), a
//! diurnal one, one with a rare heavy phase (a test suite every 8 h), and a fleet of similar
//! coders with one outlier. Each comes with the request
//! its author might have written.

use crate::{Sample, Sizing};

const MI: f64 = 1_048_576.0;
const GI: f64 = 1_073_741_824.0;
const DAY: f64 = 86_400.0;

/// One target's trace.
#[derive(Debug, Clone)]
pub struct Trace {
    pub name: String,
    /// The request as written.
    pub written: Sizing,
    pub samples: Vec<Sample>,
}

/// A small deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal, mean 0, deviation 1 (a sum of uniforms).
    pub fn normal(&mut self) -> f64 {
        (0..6).map(|_| self.uniform()).sum::<f64>() - 3.0
    }
}

fn week(rng: &mut Rng, mut f: impl FnMut(f64, &mut Rng) -> (f64, f64)) -> Vec<Sample> {
    (0..7 * 1440)
        .map(|i| {
            let t = f64::from(i) * 60.0;
            let (cpu, memory) = f(t, rng);
            Sample {
                t_s: t,
                cpu: cpu.max(0.0),
                memory: memory.max(MI),
            }
        })
        .collect()
}

fn trace(name: &str, cpu: f64, memory: f64, samples: Vec<Sample>) -> Trace {
    Trace {
        name: name.to_owned(),
        written: Sizing { cpu, memory },
        samples,
    }
}

/// The suite, from `seed`.
pub fn suite(seed: u64) -> Vec<Trace> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    // steady agents, asked for four times what they use
    out.push(trace(
        "steady-small",
        1.0,
        512.0 * MI,
        week(&mut rng, |_, r| {
            (
                0.25 + 0.02 * r.normal(),
                120.0 * MI * (1.0 + 0.02 * r.normal()),
            )
        }),
    ));
    out.push(trace(
        "steady-large",
        4.0,
        8.0 * GI,
        week(&mut rng, |_, r| {
            (
                1.0 + 0.05 * r.normal(),
                2.0 * GI * (1.0 + 0.02 * r.normal()),
            )
        }),
    ));
    // bursty: ten minutes at 1.2 cores and +200 MiB every 90 minutes
    out.push(trace(
        "bursty",
        1.0,
        1.0 * GI,
        week(&mut rng, |t, r| {
            let burst = (t % 5400.0) < 600.0;
            let cpu = if burst { 1.2 } else { 0.1 } + 0.02 * r.normal();
            let mem = if burst { 600.0 } else { 400.0 } * MI * (1.0 + 0.01 * r.normal());
            (cpu, mem)
        }),
    ));
    // a slow leak: 50 MiB an hour from 200 MiB, restarted every 8 h
    out.push(trace(
        "leak",
        0.5,
        2.0 * GI,
        week(&mut rng, |t, r| {
            let hours = (t % (8.0 * 3600.0)) / 3600.0;
            (0.15 + 0.02 * r.normal(), (200.0 + 50.0 * hours) * MI)
        }),
    ));
    // diurnal: busy by day, quiet by night
    out.push(trace(
        "diurnal",
        2.0,
        2.0 * GI,
        week(&mut rng, |t, r| {
            let day = (2.0 * std::f64::consts::PI * t / DAY).sin().max(0.0);
            (
                0.3 + 0.5 * day + 0.03 * r.normal(),
                (600.0 + 300.0 * day) * MI * (1.0 + 0.01 * r.normal()),
            )
        }),
    ));
    // phases: a coder that runs its test suite every 8 hours, 15 minutes at 1.5 cores and
    // three times its usual memory (rare enough to fall under a p95)
    out.push(trace(
        "phases",
        1.0,
        2.0 * GI,
        week(&mut rng, |t, r| {
            let suite = (t % (8.0 * 3600.0)) < 900.0;
            let cpu = if suite { 1.5 } else { 0.2 } + 0.02 * r.normal();
            let mem = if suite { 1200.0 } else { 400.0 } * MI * (1.0 + 0.01 * r.normal());
            (cpu, mem)
        }),
    ));
    // a fleet of coders asked for 1 core and 2 GiB each; one of them needs 2.5 GiB
    for i in 0..10 {
        let base = 800.0 * MI * (1.0 + 0.05 * rng.normal());
        let mem = if i == 9 { 2.5 * GI } else { base };
        out.push(trace(
            &format!("coder-{i}"),
            1.0,
            2.0 * GI,
            week(&mut rng, |t, r| {
                let work = f64::from(u8::from(((t / 3600.0).floor() as u64).is_multiple_of(3)));
                (
                    0.3 + 0.3 * work + 0.05 * r.normal(),
                    mem * (1.0 + 0.03 * work + 0.01 * r.normal()),
                )
            }),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_suite_is_the_same_for_a_seed_and_differs_across_seeds() {
        let a = super::suite(1);
        let b = super::suite(1);
        let c = super::suite(2);
        assert_eq!(a.len(), 16);
        assert_eq!(a[0].samples, b[0].samples);
        assert_ne!(a[0].samples, c[0].samples);
        assert!(a.iter().all(|t| t.samples.len() == 7 * 1440));
    }
}
