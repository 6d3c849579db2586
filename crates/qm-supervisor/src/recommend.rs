//! Right-sizing, learned in the daemon: every agent's usage, as the monitor collects it, feeds
//! its own recommender (`qm_recommend`); an OOM kill (of its main process, or any in its group)
//! bumps its memory. A template (a fleet's, or the agents labelled [`TEMPLATE_LABEL`] alike)
//! gets the median of its members' recommendations, so one outlier does not drag it. Under
//! the `learned` strategy, [`TemplateSizer`] sizes each request at admission by its
//! template's recommendation.

#[allow(clippy::wildcard_imports)]
use super::*;

use std::sync::RwLock;

use qm_recommend::{AdmitRules, Admitted, Config, Recommendation, Recommender, Sample, Sizing};

/// The label that names an agent's (or an allocation's) template: agents alike under one
/// name learn together, and the `learned` strategy sizes requests carrying it.
pub const TEMPLATE_LABEL: &str = "qm.dev/template";

/// The label the `learned` strategy puts on a request it sized: from what, and how.
pub const SIZED_LABEL: &str = "qm.dev/sized";

/// Where what was learned is kept across restarts, under the data directory.
const LEARNING_FILE: &str = "recommender.json";

/// How often (in the monitor's time) what was learned is written out.
const SAVE_EVERY_MS: u64 = 60_000;

/// What was learned, as written to [`LEARNING_FILE`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    /// Per agent: its recommender, its OOM kills seen, the start of the run last seen killed.
    agents: BTreeMap<String, (Recommender, u64, Option<String>)>,
    /// Per agent: its fleet and template names.
    groups: BTreeMap<String, (Option<String>, Option<String>)>,
    /// The monitor's collection last learned from (unix ms).
    seen_at_ms: u64,
}

/// Templates' current sizes (`template/NAME`, `fleet/NAME`) with their confidence, as the
/// sizer reads them.
type TemplateSizes = Arc<RwLock<BTreeMap<String, (Sizing, f64)>>>;

/// What the supervisor keeps to learn: one recommender per agent, and where it stands.
#[derive(Debug)]
pub(crate) struct Learning {
    config: Config,
    /// Per agent: its recommender, its OOM kills seen, the start of the run last seen killed.
    agents: BTreeMap<String, (Recommender, u64, Option<String>)>,
    /// Per agent, gone ones too: its fleet and template names, as last seen.
    groups: BTreeMap<String, (Option<String>, Option<String>)>,
    /// The monitor's collection last taken (unix ms).
    seen_at_ms: u64,
    /// The templates' sizes, refreshed with every collection taken.
    sizes: TemplateSizes,
    /// When what was learned was last written out (the monitor's time, unix ms).
    saved_at_ms: u64,
    /// What the cluster's other members learned: per template, their agents'
    /// recommendations.
    peers: BTreeMap<String, Vec<Recommendation>>,
}

impl Learning {
    pub(crate) fn new(config: Config) -> Self {
        Learning {
            config,
            agents: BTreeMap::new(),
            groups: BTreeMap::new(),
            seen_at_ms: 0,
            sizes: TemplateSizes::default(),
            saved_at_ms: 0,
            peers: BTreeMap::new(),
        }
    }

    /// What was learned before a restart, from `dir`: every agent's recommender made with
    /// this configuration. A file that is missing starts afresh; one that cannot be read, or
    /// was learned with other settings, too, with a warning.
    pub(crate) fn load(&mut self, dir: &std::path::Path) {
        let path = dir.join(LEARNING_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "what was learned cannot be read: learning afresh");
                return;
            }
        };
        let stored: Stored = match qm_proto::from_json(&text) {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "what was learned is not readable: learning afresh");
                return;
            }
        };
        let mut dropped = 0;
        for (name, (r, kills, run)) in stored.agents {
            match r.restored(&self.config) {
                Ok(r) => {
                    self.agents.insert(name, (r, kills, run));
                }
                Err(_) => dropped += 1,
            }
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "some of what was learned was learned with other [recommender] settings: those agents learn afresh"
            );
        }
        self.groups = stored
            .groups
            .into_iter()
            .filter(|(name, _)| self.agents.contains_key(name))
            .collect();
        self.seen_at_ms = stored.seen_at_ms;
        self.refresh_sizes();
    }

    /// What was learned, as [`LEARNING_FILE`] holds it.
    fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct StoredRef<'a> {
            agents: &'a BTreeMap<String, (Recommender, u64, Option<String>)>,
            groups: &'a BTreeMap<String, (Option<String>, Option<String>)>,
            seen_at_ms: u64,
        }
        qm_proto::to_json(&StoredRef {
            agents: &self.agents,
            groups: &self.groups,
            seen_at_ms: self.seen_at_ms,
        })
    }

    /// Recomputes the templates' sizes the sizer reads.
    fn refresh_sizes(&self) {
        let sizes = self
            .templates()
            .into_iter()
            .map(|(target, recs)| {
                let sizing = Sizing {
                    cpu: median(&recs, |r| r.sizing.cpu),
                    memory: median(&recs, |r| r.sizing.memory),
                };
                (target, (sizing, median(&recs, |r| r.confidence)))
            })
            .collect();
        if let Ok(mut s) = self.sizes.write() {
            *s = sizes;
        }
    }

    /// Each template's members' recommendations, here and on the cluster's other members:
    /// `fleet/NAME` and `template/NAME`.
    fn templates(&self) -> BTreeMap<String, Vec<Recommendation>> {
        let mut out = self.local_templates();
        for (target, recs) in &self.peers {
            out.entry(target.clone())
                .or_default()
                .extend(recs.iter().cloned());
        }
        out
    }

    /// Each template's members' recommendations, of the agents here only.
    fn local_templates(&self) -> BTreeMap<String, Vec<Recommendation>> {
        let mut out: BTreeMap<String, Vec<Recommendation>> = BTreeMap::new();
        for (name, (r, _, _)) in &self.agents {
            let (Some(rec), Some((fleet, template))) = (r.recommendation(), self.groups.get(name))
            else {
                continue;
            };
            if let Some(f) = fleet {
                out.entry(format!("fleet/{f}"))
                    .or_default()
                    .push(rec.clone());
            }
            if let Some(t) = template {
                out.entry(format!("template/{t}")).or_default().push(rec);
            }
        }
        out
    }
}

/// Replaces [`LEARNING_FILE`] under `dir` with `text`, whole or not at all.
fn write_learning(dir: &std::path::Path, text: &str) {
    let path = dir.join(LEARNING_FILE);
    let tmp = dir.join(format!("{LEARNING_FILE}.tmp"));
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "what was learned was not written");
    }
}

/// The median of one quantity over a template's members' recommendations (not empty).
fn median(recs: &[Recommendation], f: fn(&Recommendation) -> f64) -> f64 {
    let mut v: Vec<f64> = recs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Sizes requests at admission by their template's recommendation (the `learned` strategy):
/// [`TEMPLATE_LABEL`] names the template, or else the fleet label. A request sized carries
/// [`SIZED_LABEL`] saying from what and how.
#[derive(Debug)]
pub(crate) struct TemplateSizer {
    sizes: TemplateSizes,
    rules: AdmitRules,
}

impl qm_engine::Sizer for TemplateSizer {
    fn size(&self, req: &qm_core::Request) -> Option<qm_core::Request> {
        let target = match (req.labels.get(TEMPLATE_LABEL), req.labels.get(FLEET_LABEL)) {
            (Some(t), _) => format!("template/{t}"),
            (None, Some(f)) => format!("fleet/{f}"),
            (None, None) => return None,
        };
        let (recommended, confidence) = *self.sizes.read().ok()?.get(&target)?;
        let sizing = |r: &qm_core::Resources| Sizing {
            cpu: r.cpu() as f64 / 1000.0,
            memory: r.memory() as f64,
        };
        let written = sizing(&req.resources);
        let limits = req.limits.as_ref().map(sizing);
        let Admitted::Sized(s) =
            qm_recommend::admit(written, limits, recommended, confidence, self.rules)
        else {
            return None;
        };
        let mut out = req.clone();
        // whole millicores and MiB, rounded up
        let cpu = (s.cpu * 1000.0).ceil() as u64;
        let memory = ((s.memory / 1_048_576.0).ceil() as u64).saturating_mul(1_048_576);
        let memory = if req.resources.memory() == 0 {
            0
        } else {
            memory
        };
        out.resources.set(qm_core::ResourceId::CPU, cpu);
        out.resources.set(qm_core::ResourceId::MEMORY, memory);
        if out.resources == req.resources {
            return None;
        }
        if out.labels.len() < qm_core::MAX_LABELS {
            use qm_core::quantity::{Unit, format};
            out.labels.insert(
                SIZED_LABEL.to_owned(),
                format!(
                    "{target} (confidence {confidence:.2}): cpu {} -> {}, memory {} -> {}",
                    format(Unit::Millicores, req.resources.cpu()),
                    format(Unit::Millicores, cpu),
                    format(Unit::Bytes, req.resources.memory()),
                    format(Unit::Bytes, memory),
                ),
            );
        }
        Some(out)
    }
}

/// What a recommendation says of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRecommendation {
    /// `agent/NAME`, `fleet/NAME` or `template/NAME`.
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
        // an agent that is gone still speaks for its template with what it taught
        for d in &docs {
            let template = d
                .spec
                .labels
                .as_ref()
                .and_then(|l| l.get(TEMPLATE_LABEL))
                .cloned();
            learning
                .groups
                .insert(d.name.clone(), (d.fleet.clone(), template));
        }
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
        learning.refresh_sizes();
        if at_ms >= learning.saved_at_ms + SAVE_EVERY_MS {
            let text = learning.to_json();
            learning.saved_at_ms = at_ms;
            let dir = self.inner.config.data_dir.clone();
            tokio::task::spawn_blocking(move || write_learning(&dir, &text));
        }
    }

    /// What this member learned, per template (`fleet/NAME`, `template/NAME`): its agents'
    /// recommendations, for the cluster's other members.
    pub fn local_templates(&self) -> BTreeMap<String, Vec<Recommendation>> {
        self.inner
            .learning
            .lock()
            .map(|l| l.local_templates())
            .unwrap_or_default()
    }

    /// What the cluster's other members learned, per template: it joins this member's own in
    /// the templates' recommendations and in the `learned` strategy's sizing.
    pub fn set_peer_templates(&self, peers: BTreeMap<String, Vec<Recommendation>>) {
        if let Ok(mut l) = self.inner.learning.lock()
            && l.peers != peers
        {
            l.peers = peers;
            l.refresh_sizes();
        }
    }

    /// Writes what was learned out now (at shutdown), so a restart goes on from it.
    pub fn save_learning(&self) {
        let text = match self.inner.learning.lock() {
            Ok(l) if !l.agents.is_empty() => Some(l.to_json()),
            _ => None,
        };
        if let Some(text) = text {
            write_learning(&self.inner.config.data_dir, &text);
        }
    }

    /// Gives the engine a sizer when its strategy sizes requests by usage (`learned`).
    pub(crate) fn size_admissions(&self, rules: AdmitRules) {
        if !self.engine().sizes_by_usage() {
            return;
        }
        let Ok(learning) = self.inner.learning.lock() else {
            return;
        };
        self.engine().set_sizer(Arc::new(TemplateSizer {
            sizes: Arc::clone(&learning.sizes),
            rules,
        }));
    }

    /// The recommendations: every agent with enough history, and every template (a fleet's,
    /// or agents labelled [`TEMPLATE_LABEL`]) with at least one member that has; `target`
    /// (`agent/NAME`, `fleet/NAME` or `template/NAME`) picks one.
    pub fn recommendations(&self, target: Option<&str>) -> Vec<TargetRecommendation> {
        let Ok(learning) = self.inner.learning.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, (r, _, _)) in &learning.agents {
            let Some(rec) = r.recommendation() else {
                continue;
            };
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
        for (template, recs) in learning.templates() {
            let elsewhere = learning.peers.get(&template).map_or(0, Vec::len);
            let median = |f: fn(&Recommendation) -> f64| median(&recs, f);
            out.push(TargetRecommendation {
                target: template,
                cpu_cores: median(|r| r.sizing.cpu),
                memory_bytes: median(|r| r.sizing.memory),
                lower: (median(|r| r.lower.cpu), median(|r| r.lower.memory)),
                upper: (median(|r| r.upper.cpu), median(|r| r.upper.memory)),
                samples: recs.iter().map(|r| r.samples).sum(),
                confidence: median(|r| r.confidence),
                updated_at_ms: learning.seen_at_ms,
                reason: if elsewhere == 0 {
                    format!("the median of {} member(s)' recommendations", recs.len())
                } else {
                    format!(
                        "the median of {} member(s)' recommendations, {elsewhere} of them on other nodes",
                        recs.len()
                    )
                },
            });
        }
        out.retain(|r| target.is_none_or(|t| r.target == t));
        out
    }
}
