//! Right-sizing from observed usage (no IO). Each target (an agent, a fleet's template) feeds
//! its usage samples to a [`Recommender`], which keeps several models side by side, as
//! Google's Autopilot does: each a pair of decaying histograms ([`Histogram`]) of cpu usage
//! and of memory peaks per window, with its own half-life, percentiles and margin. Every
//! sample scores each model's advice as it stood before the sample (overrun, slack, and its
//! changes, in a decaying sum); the recommendation is the advice of the model that has cost
//! least, republished only when it moves by more than a threshold. An OOM kill bumps memory in
//! every model. [`Config::vpa_like`] is the one-model baseline (Kubernetes' VPA: cpu p90 over
//! a 24 h half-life, memory peaks p95 plus 15%, +20% after an OOM). [`evaluate`] replays a
//! trace through a sizing policy and measures slack, overrun, OOMs and changes; [`traces`]
//! generates agent-like traces with fixed seeds. [`admit`] sizes a request at admission from its
//! template's recommendation (the `learned` strategy).

mod admit;
mod histogram;
pub mod traces;

pub use admit::{AdmitRules, Admitted, admit};
pub use histogram::Histogram;

/// One usage sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds (any origin, increasing).
    pub t_s: f64,
    /// Cores in use.
    pub cpu: f64,
    /// Bytes in use.
    pub memory: f64,
}

/// What to request: cpu cores and memory bytes (memory is the limit too: above it, the OOM
/// killer).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sizing {
    pub cpu: f64,
    pub memory: f64,
}

impl Sizing {
    /// Whether `other` differs from this by more than `threshold` (relative) in either.
    pub fn moved(&self, other: &Sizing, threshold: f64) -> bool {
        let rel = |a: f64, b: f64| (a - b).abs() / a.max(b).max(f64::MIN_POSITIVE);
        rel(self.cpu, other.cpu) > threshold || rel(self.memory, other.memory) > threshold
    }
}

/// One model: how it reads the histograms.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    pub name: String,
    pub half_life_s: f64,
    pub cpu_percentile: f64,
    pub memory_percentile: f64,
    /// Added to the memory percentile (0.15: 15%).
    pub memory_margin: f64,
}

impl ModelSpec {
    fn new(name: &str, half_life_h: f64, cpu_p: f64, mem_p: f64, margin: f64) -> Self {
        ModelSpec {
            name: name.to_owned(),
            half_life_s: half_life_h * 3600.0,
            cpu_percentile: cpu_p,
            memory_percentile: mem_p,
            memory_margin: margin,
        }
    }
}

/// How a recommender learns and chooses.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub models: Vec<ModelSpec>,
    /// Samples before anything is recommended.
    pub min_samples: u64,
    /// Memory's peaks are taken per window of this many seconds.
    pub peak_window_s: f64,
    /// After an OOM kill, memory is at least the usage at the kill times this.
    pub oom_bump: f64,
    /// A recommendation is republished only when it moves by more than this (relative).
    pub change_threshold: f64,
    /// A smaller recommendation waits this long after the last change (a larger one never
    /// waits).
    pub shrink_after_s: f64,
    /// The costs' weights: a sample over the memory advice (an OOM), cpu over its advice
    /// (throttling, per share over), slack (per share unused), and a change of advice.
    pub overrun_weight: f64,
    pub throttle_weight: f64,
    pub slack_weight: f64,
    pub change_weight: f64,
    /// How fast past costs fade.
    pub cost_half_life_s: f64,
}

impl Config {
    /// The baseline: one VPA-like model.
    pub fn vpa_like() -> Self {
        Config {
            models: vec![ModelSpec::new("vpa", 24.0, 0.90, 0.95, 0.15)],
            ..Config::learned()
        }
    }

    /// Several models side by side (the default).
    pub fn learned() -> Self {
        Config {
            models: vec![
                ModelSpec::new("steady", 24.0, 0.90, 0.98, 0.10),
                ModelSpec::new("responsive", 2.0, 0.95, 0.99, 0.10),
                ModelSpec::new("cautious", 12.0, 0.98, 1.0, 0.15),
                ModelSpec::new("lean", 6.0, 0.80, 0.95, 0.05),
                ModelSpec::new("peak", 48.0, 0.99, 1.0, 0.20),
            ],
            min_samples: 30,
            peak_window_s: 300.0,
            oom_bump: 1.2,
            change_threshold: 0.10,
            shrink_after_s: 4.0 * 3600.0,
            overrun_weight: 200.0,
            throttle_weight: 0.5,
            slack_weight: 1.0,
            change_weight: 2.0,
            cost_half_life_s: 6.0 * 3600.0,
        }
    }
}

/// One model's histograms and its running cost.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Model {
    spec: ModelSpec,
    cpu: Histogram,
    peaks: Histogram,
    /// The memory window: its start and its peak so far.
    window: Option<(f64, f64)>,
    cost: f64,
    cost_at_s: f64,
    advice: Option<Sizing>,
}

impl Model {
    fn new(spec: ModelSpec) -> Self {
        Model {
            cpu: Histogram::new(0.001, 1.05, 1024.0, spec.half_life_s),
            peaks: Histogram::new(
                1_048_576.0,
                1.05,
                16.0 * 1_099_511_627_776.0,
                spec.half_life_s,
            ),
            spec,
            window: None,
            cost: 0.0,
            cost_at_s: 0.0,
            advice: None,
        }
    }

    fn observe(&mut self, s: &Sample, window_s: f64) {
        self.cpu.add(s.cpu, 1.0, s.t_s);
        match &mut self.window {
            Some((start, peak)) if s.t_s < *start + window_s => *peak = peak.max(s.memory),
            Some((start, peak)) => {
                self.peaks.add(*peak, 1.0, *start);
                self.window = Some((s.t_s, s.memory));
            }
            None => self.window = Some((s.t_s, s.memory)),
        }
    }

    fn sizing(&self) -> Option<Sizing> {
        let cpu = self.cpu.percentile(self.spec.cpu_percentile)?;
        let open = self.window.map_or(0.0, |(_, p)| p);
        let peaks = self
            .peaks
            .percentile(self.spec.memory_percentile)
            .unwrap_or(open);
        Some(Sizing {
            cpu: cpu.max(0.001),
            memory: peaks.max(open) * (1.0 + self.spec.memory_margin),
        })
    }

    /// Adds this sample's cost of the advice it had before seeing it.
    fn score(&mut self, s: &Sample, c: &Config) {
        let Some(a) = self.advice else { return };
        let decay = (-(s.t_s - self.cost_at_s).max(0.0) / c.cost_half_life_s).exp2();
        // an OOM kill, or a near miss (within 5% of the limit) at a tenth of its cost
        let over = if s.memory > a.memory {
            c.overrun_weight
        } else if s.memory > 0.95 * a.memory {
            c.overrun_weight / 10.0
        } else {
            0.0
        };
        let throttle = c.throttle_weight * ((s.cpu - a.cpu).max(0.0) / a.cpu).min(10.0);
        let slack = c.slack_weight
            * (((a.memory - s.memory).max(0.0) / a.memory) + ((a.cpu - s.cpu).max(0.0) / a.cpu))
            / 2.0;
        self.cost = self.cost * decay + over + throttle + slack;
        self.cost_at_s = s.t_s;
    }
}

/// What a recommender says now.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recommendation {
    pub sizing: Sizing,
    /// A floor and a ceiling: below the floor the target is short most of the time; the
    /// ceiling covers its worst seen.
    pub lower: Sizing,
    pub upper: Sizing,
    pub samples: u64,
    /// 0..1: how much history stands behind it.
    pub confidence: f64,
    /// The model whose advice it is.
    pub model: String,
    /// Times it changed since the first.
    pub changes: u64,
}

/// Learns one target's sizing from its samples.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Recommender {
    config: Config,
    models: Vec<Model>,
    samples: u64,
    first_s: Option<f64>,
    last_s: f64,
    published: Option<(Sizing, usize)>,
    changes: u64,
    changed_at_s: f64,
}

impl Recommender {
    pub fn new(config: Config) -> Self {
        let models = config.models.iter().cloned().map(Model::new).collect();
        Recommender {
            config,
            models,
            samples: 0,
            first_s: None,
            last_s: 0.0,
            published: None,
            changes: 0,
            changed_at_s: 0.0,
        }
    }

    /// A recommender read back (as serde stored it), checked: it must have been made with
    /// `config` (a changed configuration starts afresh) and be whole.
    pub fn restored(self, config: &Config) -> Result<Self, String> {
        if self.config != *config {
            return Err("it was learned with other [recommender] settings".to_owned());
        }
        let models_match = self.models.len() == config.models.len()
            && self
                .models
                .iter()
                .zip(&config.models)
                .all(|(m, spec)| m.spec == *spec);
        if !models_match {
            return Err("its models are not its settings' models".to_owned());
        }
        if self.published.is_some_and(|(_, i)| i >= self.models.len()) {
            return Err("its published advice names no model".to_owned());
        }
        if !self.last_s.is_finite() {
            return Err("its last sample's time is not finite".to_owned());
        }
        Ok(self)
    }

    /// Takes one sample.
    pub fn observe(&mut self, s: Sample) {
        if !(s.cpu.is_finite() && s.memory.is_finite()) || s.cpu < 0.0 || s.memory < 0.0 {
            return;
        }
        let c = &self.config;
        for m in &mut self.models {
            m.score(&s, c);
            m.observe(&s, c.peak_window_s);
            let now = m.sizing();
            if let (Some(old), Some(new)) = (m.advice, now)
                && old.moved(&new, c.change_threshold)
            {
                m.cost += c.change_weight;
            }
            if now.is_some_and(|n| m.advice.is_none_or(|o| o.moved(&n, c.change_threshold))) {
                m.advice = now;
            }
        }
        self.samples += 1;
        self.first_s.get_or_insert(s.t_s);
        self.last_s = s.t_s;
        self.publish();
    }

    /// An OOM kill at `t_s` while using `memory` bytes: every model's memory is bumped.
    pub fn oom(&mut self, t_s: f64, memory: f64) {
        let bump = memory * self.config.oom_bump;
        for m in &mut self.models {
            // a bumped peak weighs as much as a day of windows
            let weight = (86_400.0 / self.config.peak_window_s).max(1.0);
            m.peaks.add(bump, weight, t_s);
            m.window = Some((t_s, bump));
            m.advice = m.sizing();
        }
        self.publish_forced();
    }

    /// The model that has cost least; the one chosen before keeps its place unless another
    /// has cost a fifth less (so advice does not flap between close models).
    fn best(&self) -> Option<usize> {
        let best = self
            .models
            .iter()
            .enumerate()
            .filter(|(_, m)| m.advice.is_some())
            .min_by(|a, b| a.1.cost.total_cmp(&b.1.cost))
            .map(|(i, _)| i)?;
        match self.published {
            Some((_, current))
                if self.models[current].advice.is_some()
                    && self.models[best].cost > 0.8 * self.models[current].cost =>
            {
                Some(current)
            }
            _ => Some(best),
        }
    }

    fn publish(&mut self) {
        if self.samples < self.config.min_samples {
            return;
        }
        let Some(i) = self.best() else { return };
        let Some(advice) = self.models[i].advice else {
            return;
        };
        match self.published {
            None => self.published = Some((advice, i)),
            Some((old, _)) if old.moved(&advice, self.config.change_threshold) => {
                let grows = advice.cpu > old.cpu || advice.memory > old.memory;
                if grows || self.last_s - self.changed_at_s >= self.config.shrink_after_s {
                    // a resource that would shrink too early keeps its size
                    let next =
                        if grows && self.last_s - self.changed_at_s < self.config.shrink_after_s {
                            Sizing {
                                cpu: advice.cpu.max(old.cpu),
                                memory: advice.memory.max(old.memory),
                            }
                        } else {
                            advice
                        };
                    self.published = Some((next, i));
                    self.changes += 1;
                    self.changed_at_s = self.last_s;
                } else {
                    self.published = Some((old, i));
                }
            }
            // never below what an OOM just asked for: only the model moves
            Some((old, _)) => self.published = Some((old, i)),
        }
    }

    fn publish_forced(&mut self) {
        let Some(i) = self.best() else { return };
        let Some(advice) = self.models[i].advice else {
            return;
        };
        if let Some((old, _)) = self.published {
            let grown = Sizing {
                cpu: old.cpu.max(advice.cpu),
                memory: old.memory.max(advice.memory),
            };
            self.published = Some((grown, i));
            self.changes += 1;
            self.changed_at_s = self.last_s;
        } else {
            // an OOM kill is reason enough, however little history there is
            self.published = Some((advice, i));
        }
    }

    /// The recommendation, once there are `min_samples`.
    pub fn recommendation(&self) -> Option<Recommendation> {
        let (sizing, i) = self.published?;
        let m = &self.models[i];
        let pct = |h: &Histogram, p: f64| h.percentile(p);
        let open = m.window.map_or(0.0, |(_, p)| p);
        let lower = Sizing {
            cpu: pct(&m.cpu, 0.5).unwrap_or(sizing.cpu),
            memory: pct(&m.peaks, 0.5).unwrap_or(open).max(0.0),
        };
        let upper = Sizing {
            cpu: pct(&m.cpu, 1.0).unwrap_or(sizing.cpu) * 1.3,
            memory: pct(&m.peaks, 1.0).unwrap_or(open).max(open) * 1.3,
        };
        let span_h = (self.last_s - self.first_s.unwrap_or(self.last_s)) / 3600.0;
        let confidence = ((span_h / 24.0).min(1.0)
            * (self.samples as f64 / (4 * self.config.min_samples) as f64).min(1.0))
        .clamp(0.0, 1.0);
        Some(Recommendation {
            sizing,
            lower,
            upper,
            samples: self.samples,
            confidence,
            model: m.spec.name.clone(),
            changes: self.changes,
        })
    }
}

/// How a replay sizes its target.
#[derive(Debug, Clone)]
pub enum Policy {
    /// The request as written, never changed.
    Written,
    /// A recommender's advice once it has one (the request as written until then).
    Learned(Config),
}

/// What a replay measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    pub samples: u64,
    /// Sums of allocated and used memory (byte-samples) and cpu (core-samples).
    pub memory_allocated: f64,
    pub memory_used: f64,
    pub cpu_allocated: f64,
    pub cpu_used: f64,
    /// Samples whose memory use was above the allocation: each an OOM kill.
    pub ooms: u64,
    /// Samples whose cpu use was above the allocation (throttled).
    pub throttled: u64,
    pub changes: u64,
}

impl Outcome {
    /// Unused memory as a share of what was allocated.
    pub fn memory_slack(&self) -> f64 {
        if self.memory_allocated <= 0.0 {
            return 0.0;
        }
        ((self.memory_allocated - self.memory_used) / self.memory_allocated).max(0.0)
    }

    pub fn cpu_slack(&self) -> f64 {
        if self.cpu_allocated <= 0.0 {
            return 0.0;
        }
        ((self.cpu_allocated - self.cpu_used) / self.cpu_allocated).max(0.0)
    }

    /// OOM kills as a share of samples.
    pub fn overrun(&self) -> f64 {
        if self.samples == 0 {
            return 0.0;
        }
        self.ooms as f64 / self.samples as f64
    }

    /// Adds `other` in.
    pub fn add(&mut self, other: &Outcome) {
        self.samples += other.samples;
        self.memory_allocated += other.memory_allocated;
        self.memory_used += other.memory_used;
        self.cpu_allocated += other.cpu_allocated;
        self.cpu_used += other.cpu_used;
        self.ooms += other.ooms;
        self.throttled += other.throttled;
        self.changes += other.changes;
    }
}

/// Replays `samples` of a target that asked for `written`, sized by `policy`. Memory used
/// counts only up to the allocation (an OOM kill ends the run: the target restarts).
pub fn evaluate(samples: &[Sample], written: Sizing, policy: &Policy) -> Outcome {
    let mut out = Outcome::default();
    let mut rec = match policy {
        Policy::Written => None,
        Policy::Learned(c) => Some(Recommender::new(c.clone())),
    };
    for s in samples {
        let alloc = rec
            .as_ref()
            .and_then(Recommender::recommendation)
            .map_or(written, |r| r.sizing);
        out.samples += 1;
        out.memory_allocated += alloc.memory;
        out.memory_used += s.memory.min(alloc.memory);
        out.cpu_allocated += alloc.cpu;
        out.cpu_used += s.cpu.min(alloc.cpu);
        if s.cpu > alloc.cpu {
            out.throttled += 1;
        }
        // the sample is seen first, then the kill it ended in
        if let Some(r) = &mut rec {
            r.observe(*s);
        }
        if s.memory > alloc.memory {
            out.ooms += 1;
            if let Some(r) = &mut rec {
                r.oom(s.t_s, s.memory);
            }
        }
    }
    out.changes = rec
        .as_ref()
        .and_then(Recommender::recommendation)
        .map_or(0, |r| r.changes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: f64 = 1_048_576.0;

    fn steady(n: usize, cpu: f64, mem: f64) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                t_s: i as f64 * 60.0,
                cpu,
                memory: mem,
            })
            .collect()
    }

    #[test]
    fn a_steady_agent_converges_near_its_usage() {
        let mut r = Recommender::new(Config::learned());
        for s in steady(3 * 1440, 0.2, 100.0 * MI) {
            r.observe(s);
        }
        let rec = r.recommendation().expect("a recommendation");
        assert!((0.2..0.25).contains(&rec.sizing.cpu), "{rec:?}");
        assert!(
            (100.0 * MI..130.0 * MI).contains(&rec.sizing.memory),
            "{rec:?}"
        );
        assert!(rec.confidence > 0.99, "{rec:?}");
        assert!(rec.changes <= 1, "{rec:?}");
        assert!(rec.lower.memory <= rec.sizing.memory && rec.sizing.memory <= rec.upper.memory);
    }

    #[test]
    fn nothing_is_recommended_before_min_samples() {
        let mut r = Recommender::new(Config::learned());
        for s in steady(29, 0.2, 100.0 * MI) {
            r.observe(s);
        }
        assert!(r.recommendation().is_none());
    }

    #[test]
    fn an_oom_kill_raises_memory_above_the_usage_at_the_kill() {
        let mut r = Recommender::new(Config::learned());
        for s in steady(200, 0.1, 100.0 * MI) {
            r.observe(s);
        }
        let before = r.recommendation().expect("rec").sizing.memory;
        r.oom(200.0 * 60.0, 300.0 * MI);
        let after = r.recommendation().expect("rec").sizing.memory;
        assert!(after >= 300.0 * MI * 1.2 * 0.99, "{before} -> {after}");
    }

    #[test]
    fn a_leak_is_not_learned_as_normal_it_keeps_the_ceiling_ahead() {
        // 50 MiB an hour, restarted (by its OOM kills) when it outgrows the advice
        let trace = traces::suite(7)
            .into_iter()
            .find(|t| t.name == "leak")
            .expect("a leak trace");
        let out = evaluate(
            &trace.samples,
            trace.written,
            &Policy::Learned(Config::learned()),
        );
        assert!(out.overrun() < 0.01, "{out:?}");
    }

    #[test]
    fn the_learned_policy_beats_the_request_as_written_and_the_vpa_baseline() {
        let mut learned = Outcome::default();
        let mut vpa = Outcome::default();
        let mut written = Outcome::default();
        for t in traces::suite(1) {
            learned.add(&evaluate(
                &t.samples,
                t.written,
                &Policy::Learned(Config::learned()),
            ));
            vpa.add(&evaluate(
                &t.samples,
                t.written,
                &Policy::Learned(Config::vpa_like()),
            ));
            written.add(&evaluate(&t.samples, t.written, &Policy::Written));
        }
        assert!(
            learned.memory_slack() < written.memory_slack(),
            "{learned:?} {written:?}"
        );
        assert!(learned.ooms < vpa.ooms, "{learned:?} {vpa:?}");
        assert!(
            learned.memory_slack() < vpa.memory_slack(),
            "{learned:?} {vpa:?}"
        );
    }

    #[test]
    fn a_recommender_stored_and_read_back_recommends_the_same_and_goes_on_learning() {
        let mut r = Recommender::new(Config::learned());
        for s in steady(100, 0.2, 300.0 * MI) {
            r.observe(s);
        }
        let text = serde_json::to_string(&r).expect("stored");
        assert!(text.len() < 20_000, "{} bytes", text.len());
        let mut back: Recommender = serde_json::from_str(&text).expect("read back");
        back = back
            .restored(&Config::learned())
            .expect("the same settings");
        assert_eq!(back.recommendation(), r.recommendation());
        let more = Sample {
            t_s: 100.0 * 60.0,
            cpu: 0.2,
            memory: 300.0 * MI,
        };
        r.observe(more);
        back.observe(more);
        assert_eq!(back.recommendation(), r.recommendation());
        // other settings start afresh; a broken histogram is refused, not trusted
        let err = serde_json::from_str::<Recommender>(&text)
            .expect("read back")
            .restored(&Config::vpa_like())
            .unwrap_err();
        assert!(err.contains("other [recommender] settings"), "{err}");
        let broken = text.replacen("\"buckets\":", "\"buckets\":0,\"x\":", 1);
        assert!(serde_json::from_str::<Recommender>(&broken).is_err());
    }

    #[test]
    fn a_rare_heavy_phase_costs_one_model_oom_kills_and_the_choice_of_models_none() {
        // 15 minutes at three times the usual memory every 8 h: under VPA's p95 of peaks
        let trace = traces::suite(1)
            .into_iter()
            .find(|t| t.name == "phases")
            .expect("a phases trace");
        let run = |c: Config| evaluate(&trace.samples, trace.written, &Policy::Learned(c));
        let learned = run(Config::learned());
        let vpa = run(Config::vpa_like());
        assert_eq!(learned.ooms, 0, "{learned:?}");
        assert!(vpa.ooms > 0, "{vpa:?}");
    }
}
