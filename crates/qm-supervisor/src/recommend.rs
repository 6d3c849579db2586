//! Right-sizing, learned in the daemon: every agent's usage, as the monitor collects it, feeds
//! its own recommender (`qm_recommend`); an OOM kill (of its main process, or any in its group)
//! bumps its memory. A fleet's template gets the median of its members' recommendations, so
//! one outlier does not drag the template.

#[allow(clippy::wildcard_imports)]
use super::*;

use qm_recommend::{Config, Recommender, Sample};

/// What the supervisor keeps to learn: one recommender per agent, and where it stands.
#[derive(Debug)]
pub(crate) struct Learning {
    config: Config,
    /// Per agent: its recommender, its OOM kills seen, the start of the run last seen killed.
    agents: BTreeMap<String, (Recommender, u64, Option<String>)>,
    /// The monitor's collection last taken (unix ms).
    seen_at_ms: u64,
}

impl Learning {
    pub(crate) fn new(config: Config) -> Self {
        Learning {
            config,
            agents: BTreeMap::new(),
            seen_at_ms: 0,
        }
    }
}

/// What a recommendation says of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRecommendation {
    /// `agent/NAME` or `fleet/NAME`.
    pub target: String,
    pub cpu_cores: f64,
    pub memory_bytes: f64,
    pub lower: (f64, f64),
    pub upper: (f64, f64),
    pub samples: u64,
    pub confidence: f64,
    pub updated_at_ms: u64,
    pub reason: String,
}

impl Supervisor {
    /// Feeds the monitor's latest agent collection (once each) to the agents' recommenders.
    pub(crate) fn learn(&self) {
        let Some(latest) = self.engine().monitor().map(qm_monitor::Monitor::latest) else {
            return;
        };
        let Some(at_ms) = latest.at_ms else { return };
        let Ok(mut learning) = self.inner.learning.lock() else {
            return;
        };
        if at_ms <= learning.seen_at_ms {
            return;
        }
        learning.seen_at_ms = at_ms;
        let usage = usage_index(&latest.agent_samples);
        let docs: Vec<AgentDoc> = match self.inner.agents.lock() {
            Ok(a) => a.values().map(|a| a.doc.clone()).collect(),
            Err(_) => return,
        };
        let t_s = at_ms as f64 / 1000.0;
        let config = learning.config.clone();
        for d in docs {
            let entry = learning
                .agents
                .entry(d.name.clone())
                .or_insert_with(|| (Recommender::new(config.clone()), d.oom_kills, None));
            let used = usage.get(d.id.as_str()).copied();
            if d.state == AgentState::Running
                && let Some((Some(cpu), Some(memory))) = used
            {
                entry.0.observe(Sample { t_s, cpu, memory });
            }
            // an OOM kill: of the main process (the run it ended), or in its group
            let limit = d
                .spec
                .limits
                .as_ref()
                .and_then(|l| l.get("memory"))
                .and_then(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .or_else(|| Some(v.to_string()))
                })
                .and_then(|v| qm_core::quantity::parse(qm_core::quantity::Unit::Bytes, &v).ok())
                .map(|b| b as f64);
            let at_kill = limit.or(used.and_then(|u| u.1)).unwrap_or(0.0);
            let killed_run = d.oom_killed.then(|| d.started_at.clone()).flatten();
            if killed_run.is_some() && killed_run != entry.2 {
                entry.2 = killed_run;
                entry.0.oom(t_s, at_kill);
            }
            if d.oom_kills > entry.1 {
                entry.1 = d.oom_kills;
                entry.0.oom(t_s, at_kill);
            } else if d.oom_kills < entry.1 {
                // a new run counts from zero
                entry.1 = d.oom_kills;
            }
        }
    }

    /// The recommendations: every agent with enough history, and every fleet with at least
    /// one member that has; `target` (`agent/NAME` or `fleet/NAME`) picks one.
    pub fn recommendations(&self, target: Option<&str>) -> Vec<TargetRecommendation> {
        let Ok(learning) = self.inner.learning.lock() else {
            return Vec::new();
        };
        let fleets: BTreeMap<String, Option<String>> = match self.inner.agents.lock() {
            Ok(a) => a
                .values()
                .map(|a| (a.doc.name.clone(), a.doc.fleet.clone()))
                .collect(),
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::new();
        let mut by_fleet: BTreeMap<String, Vec<qm_recommend::Recommendation>> = BTreeMap::new();
        for (name, (r, _, _)) in &learning.agents {
            let Some(rec) = r.recommendation() else {
                continue;
            };
            if let Some(Some(f)) = fleets.get(name) {
                by_fleet.entry(f.clone()).or_default().push(rec.clone());
            }
            out.push(TargetRecommendation {
                target: format!("agent/{name}"),
                cpu_cores: rec.sizing.cpu,
                memory_bytes: rec.sizing.memory,
                lower: (rec.lower.cpu, rec.lower.memory),
                upper: (rec.upper.cpu, rec.upper.memory),
                samples: rec.samples,
                confidence: rec.confidence,
                updated_at_ms: learning.seen_at_ms,
                reason: format!(
                    "model {} over {} samples; {} change(s)",
                    rec.model, rec.samples, rec.changes
                ),
            });
        }
        for (fleet, recs) in by_fleet {
            let median = |f: fn(&qm_recommend::Recommendation) -> f64| {
                let mut v: Vec<f64> = recs.iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            out.push(TargetRecommendation {
                target: format!("fleet/{fleet}"),
                cpu_cores: median(|r| r.sizing.cpu),
                memory_bytes: median(|r| r.sizing.memory),
                lower: (median(|r| r.lower.cpu), median(|r| r.lower.memory)),
                upper: (median(|r| r.upper.cpu), median(|r| r.upper.memory)),
                samples: recs.iter().map(|r| r.samples).sum(),
                confidence: median(|r| r.confidence),
                updated_at_ms: learning.seen_at_ms,
                reason: format!("the median of {} member(s)' recommendations", recs.len()),
            });
        }
        out.retain(|r| target.is_none_or(|t| r.target == t));
        out
    }
}
