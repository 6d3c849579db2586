//! `qm bench scaling`: replays load curves (a ramp, a diurnal sine and a step, with a little
//! seeded noise) against a simulated fleet, second by second, and compares the reactive
//! autoscaler (HPA) with the predictive one, both the supervisor's own `Autoscaler`. A replica
//! serves `target` units of load at full target utilisation and is ready only a start-up time
//! after it was asked for; the controller decides every `tick` seconds on the metric (load per
//! ready replica) as last sampled. Prints, per curve and in all, the seconds under target
//! capacity (ready replicas × target < load), the replica-seconds (starting replicas count:
//! they hold their resources), the predictive autoscaler's extra replica-seconds and the
//! scale events, each summed over several runs with consecutive seeds. No daemon, no clock:
//! the same flags give the same figures.

use std::collections::VecDeque;
use std::io::Write;

use qm_supervisor::logic::autoscale::{AutoscaleSpec, Autoscaler, Metric};
use qm_supervisor::logic::predictive::{DEFAULT_ALPHA, DEFAULT_BETA, Predictive};

use crate::client::Failure;

/// The per-replica target of the simulated fleets (cpu: 60 % of requests).
const TARGET: f64 = 0.6;
/// The largest simulated fleet.
const MAX_REPLICAS: u32 = 100;
/// Unix ms of the simulation's first second (any fixed instant would do).
const T0_MS: u64 = 1_700_000_000_000;

/// `qm bench scaling` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ScalingArgs {
    /// Seconds a new replica takes to become ready
    #[arg(long, default_value_t = 60)]
    startup: u64,
    /// How far ahead the predictive autoscaler forecasts, in seconds (default: --startup)
    #[arg(long)]
    horizon: Option<f64>,
    /// Holt's level weight per observation
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    alpha: f64,
    /// Holt's trend weight per observation
    #[arg(long, default_value_t = DEFAULT_BETA)]
    beta: f64,
    /// Seconds between two decisions (the fleet controller's is 1)
    #[arg(long, default_value_t = 1)]
    tick: u64,
    /// Seconds between two readings of the metric (the monitor samples agents every 5)
    #[arg(long, default_value_t = 5)]
    sample: u64,
    /// Noise on the load, as a fraction (0.03: ±3 %)
    #[arg(long, default_value_t = 0.03)]
    noise: f64,
    /// The noise's first seed
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs of each curve, with seeds from --seed on (the figures are their sums)
    #[arg(long, default_value_t = 5)]
    runs: u64,
}

impl Default for ScalingArgs {
    fn default() -> Self {
        Self {
            startup: 60,
            horizon: None,
            alpha: DEFAULT_ALPHA,
            beta: DEFAULT_BETA,
            tick: 1,
            sample: 5,
            noise: 0.03,
            seed: 1,
            runs: 5,
        }
    }
}

/// A load curve: the total load, one value a second.
#[derive(Debug, Clone)]
pub(crate) struct Curve {
    pub(crate) name: &'static str,
    pub(crate) loads: Vec<f64>,
}

/// A deterministic uniform draw in [-1, 1] (xorshift64).
fn draw(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// The suite, in units of load (a replica serves [`TARGET`] at its target): levels are given
/// in replicas' worth, between whole numbers so a steady load is not on a capacity's edge.
pub(crate) fn curves(noise: f64, seed: u64) -> Vec<Curve> {
    use std::f64::consts::PI;
    // 10 min at 2.5 replicas' worth, 30 min up to 20.5 (one replica's worth every 100 s),
    // 5 min there.
    let ramp = (0..2700)
        .map(|s| match s {
            0..600 => 2.5,
            600..2400 => 2.5 + 18.0 * f64::from(s - 600) / 1800.0,
            _ => 20.5,
        })
        .collect();
    // Two compressed days of 2 h each, between 2.5 and 20.5.
    let diurnal = (0..14_400)
        .map(|s| 11.5 - 9.0 * (2.0 * PI * f64::from(s) / 7200.0).cos())
        .collect();
    // 15 min at 4.5, 30 min at 12.5, 15 min at 4.5.
    let step = (0..3600)
        .map(|s| if (900..2700).contains(&s) { 12.5 } else { 4.5 })
        .collect();
    let mut state = seed.max(1);
    [("ramp", ramp), ("diurnal", diurnal), ("step", step)]
        .into_iter()
        .map(|(name, worth): (&'static str, Vec<f64>)| Curve {
            name,
            loads: worth
                .into_iter()
                .map(|w| w * TARGET * (1.0 + noise * draw(&mut state)))
                .collect(),
        })
        .collect()
}

/// How the simulated fleet and its controller behave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sim {
    pub(crate) startup_s: u64,
    pub(crate) tick_s: u64,
    pub(crate) sample_s: u64,
}

/// What one autoscaler did on one curve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Seconds with ready replicas × target below the load.
    pub(crate) under_s: u64,
    /// Replicas (ready or starting) summed over the seconds.
    pub(crate) replica_s: u64,
    /// Changes of the wanted count.
    pub(crate) events: u64,
}

impl Outcome {
    fn add(&mut self, o: &Outcome) {
        self.under_s += o.under_s;
        self.replica_s += o.replica_s;
        self.events += o.events;
    }
}

/// Replays `loads` against a fleet scaled by `spec`, starting with the replicas the first
/// load asks for, all ready.
pub(crate) fn simulate(loads: &[f64], spec: AutoscaleSpec, sim: Sim) -> Outcome {
    let mut autoscaler = Autoscaler::new(spec);
    let first = loads.first().copied().unwrap_or(0.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mut wanted = ((first / spec.target).ceil() as u32).clamp(spec.min, spec.max);
    let mut ready = wanted;
    // When each starting replica becomes ready (seconds), oldest first.
    let mut starting: VecDeque<u64> = VecDeque::new();
    let mut reading: Option<(f64, u32)> = None;
    let mut outcome = Outcome::default();
    for (s, &load) in (0u64..).zip(loads) {
        while starting.front().is_some_and(|&at| at <= s) {
            starting.pop_front();
            ready += 1;
        }
        if s % sim.sample_s.max(1) == 0 {
            reading = (ready > 0).then(|| (load / f64::from(ready), ready));
        }
        if s % sim.tick_s.max(1) == 0 {
            let (metric, measured) = reading.unzip();
            let d = autoscaler.recommend_measured(
                T0_MS + s * 1000,
                wanted,
                measured.unwrap_or(0),
                metric,
            );
            if d.changed {
                outcome.events += 1;
                wanted = d.replicas;
            }
            let live = ready + u32::try_from(starting.len()).unwrap_or(u32::MAX);
            for _ in live..wanted {
                starting.push_back(s + sim.startup_s);
            }
            // Fewer wanted: the newest (still starting) go first.
            for _ in wanted..live {
                if starting.pop_back().is_none() {
                    ready = ready.saturating_sub(1);
                }
            }
        }
        if f64::from(ready) * spec.target < load {
            outcome.under_s += 1;
        }
        outcome.replica_s += u64::from(ready) + starting.len() as u64;
    }
    outcome
}

/// The reactive spec (HPA's defaults) and the predictive one (the same, ahead of a forecast).
pub(crate) fn specs(args: &ScalingArgs) -> (AutoscaleSpec, AutoscaleSpec) {
    let reactive = AutoscaleSpec::new(1, MAX_REPLICAS, Metric::Cpu, TARGET);
    let predictive = AutoscaleSpec {
        predictive: Some(Predictive {
            horizon_s: args.horizon.unwrap_or(args.startup as f64),
            alpha: args.alpha,
            beta: args.beta,
        }),
        ..reactive
    };
    (reactive, predictive)
}

fn usage(message: String) -> Failure {
    Failure { code: 2, message }
}

/// `+4.2%`.
fn extra(reactive: u64, predictive: u64) -> f64 {
    (predictive as f64 - reactive as f64) / (reactive.max(1) as f64) * 100.0
}

pub(crate) fn scaling(args: &ScalingArgs, out: &mut impl Write) -> Result<(), Failure> {
    let (reactive, predictive) = specs(args);
    let problems = predictive.validate();
    if let Some((field, message)) = problems.first() {
        let flag = match field.as_str() {
            "predictive.horizon_s" => "--horizon",
            "predictive.alpha" => "--alpha",
            _ => "--beta",
        };
        return Err(usage(format!("{flag}: {message}")));
    }
    if !(args.noise.is_finite() && (0.0..1.0).contains(&args.noise)) {
        return Err(usage(format!(
            "--noise: {} must be at least 0 and below 1",
            args.noise
        )));
    }
    let sim = Sim {
        startup_s: args.startup,
        tick_s: args.tick.max(1),
        sample_s: args.sample.max(1),
    };
    let p = predictive.predictive.unwrap_or(Predictive::new(1.0));
    writeln!(
        out,
        "start-up {} s, decisions every {} s, metric sampled every {} s, noise ±{}%, {} runs \
         from seed {}; predictive: horizon {} s, alpha {}, beta {}",
        sim.startup_s,
        sim.tick_s,
        sim.sample_s,
        args.noise * 100.0,
        args.runs.max(1),
        args.seed,
        p.horizon_s,
        p.alpha,
        p.beta
    )?;
    writeln!(
        out,
        "{:<8} {:>7} | {:>28} | {:>28} | {:>8}",
        "curve", "seconds", "reactive under/replica-s/ev", "predictive under/replica-s/ev", "extra"
    )?;
    let row = |o: &Outcome| format!("{:>6} s {:>9} {:>6}", o.under_s, o.replica_s, o.events);
    let (mut all_r, mut all_p, mut seconds) = (Outcome::default(), Outcome::default(), 0);
    let mut verdicts = Vec::new();
    // per curve: (name, seconds, reactive, predictive), summed over the runs
    let mut sums: Vec<(&str, usize, Outcome, Outcome)> = Vec::new();
    for run in 0..args.runs.max(1) {
        for (i, c) in curves(args.noise, args.seed.wrapping_add(run))
            .into_iter()
            .enumerate()
        {
            if sums.len() <= i {
                sums.push((c.name, 0, Outcome::default(), Outcome::default()));
            }
            let sum = &mut sums[i];
            sum.1 += c.loads.len();
            sum.2.add(&simulate(&c.loads, reactive, sim));
            sum.3.add(&simulate(&c.loads, predictive, sim));
        }
    }
    for (name, n_seconds, r, q) in sums {
        all_r.add(&r);
        all_p.add(&q);
        seconds += n_seconds;
        let more = extra(r.replica_s, q.replica_s);
        writeln!(
            out,
            "{:<8} {:>7} | {:>28} | {:>28} | {:>+7.1}%",
            name,
            n_seconds,
            row(&r),
            row(&q),
            more
        )?;
        if name == "ramp" {
            let met = q.under_s < r.under_s && more <= 10.0;
            verdicts.push(format!(
                "ramp: predictive under target capacity {} s against reactive {} s, {:+.1}% \
                 replica-seconds (target: fewer seconds, at most +10%): {}",
                q.under_s,
                r.under_s,
                more,
                if met { "met" } else { "NOT met" }
            ));
        }
    }
    writeln!(
        out,
        "{:<8} {:>7} | {:>28} | {:>28} | {:>+7.1}%",
        "all",
        seconds,
        row(&all_r),
        row(&all_p),
        extra(all_r.replica_s, all_p.replica_s)
    )?;
    writeln!(out)?;
    for v in verdicts {
        writeln!(out, "{v}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> Sim {
        Sim {
            startup_s: 60,
            tick_s: 1,
            sample_s: 5,
        }
    }

    #[test]
    fn on_a_ramp_predictive_is_under_capacity_for_fewer_seconds() {
        let args = ScalingArgs::default();
        let (reactive, predictive) = specs(&args);
        let ramp = &curves(args.noise, args.seed)[0];
        assert_eq!(ramp.name, "ramp");
        let r = simulate(&ramp.loads, reactive, sim());
        let p = simulate(&ramp.loads, predictive, sim());
        assert!(p.under_s < r.under_s, "{p:?} {r:?}");
        assert!(extra(r.replica_s, p.replica_s) <= 10.0, "{p:?} {r:?}");
    }

    #[test]
    fn a_steady_load_is_scaled_alike() {
        let (reactive, predictive) = specs(&ScalingArgs::default());
        let steady = vec![4.5 * TARGET; 1800];
        let r = simulate(&steady, reactive, sim());
        assert_eq!(r, simulate(&steady, predictive, sim()));
        assert_eq!(
            r,
            Outcome {
                under_s: 0,
                replica_s: 5 * 1800,
                events: 0
            }
        );
    }

    #[test]
    fn a_replica_serves_only_once_started() {
        let (reactive, _) = specs(&ScalingArgs::default());
        // 1 replica's worth, then 3: 2 more wanted at once, ready 60 s later.
        let loads: Vec<f64> = (0..300)
            .map(|s| if s < 100 { 0.9 * TARGET } else { 2.9 * TARGET })
            .collect();
        let o = simulate(&loads, reactive, sim());
        // Seen at the sample at 100 s, ready at 160 s.
        assert_eq!(o.under_s, 60);
        assert_eq!(o.events, 1);
        assert_eq!(o.replica_s, 100 + 3 * 200);
    }

    #[test]
    fn bad_flags_are_refused_by_name() {
        let mut out = Vec::new();
        let args = ScalingArgs {
            horizon: Some(0.0),
            ..ScalingArgs::default()
        };
        let e = scaling(&args, &mut out).unwrap_err();
        assert!(e.message.starts_with("--horizon: "), "{}", e.message);
        let args = ScalingArgs {
            beta: 2.0,
            ..ScalingArgs::default()
        };
        let e = scaling(&args, &mut out).unwrap_err();
        assert!(e.message.starts_with("--beta: "), "{}", e.message);
    }
}
