//! Agents: the supervisor. An agent is admitted through the ledger first (its allocation is
//! granted, or it waits in the queue as `pending`), then spawned in its own session inside
//! its cgroup (limits from its QoS class, `oom_score_adj` as Kubernetes sets it), or adopted
//! when it already runs. Its end is seen through a pidfd; exits and OOM kills are recorded
//! with their cause and restarted per policy with exponential backoff; health checks mark
//! it unhealthy and restart it. Every transition is durable before its event goes out.
//! Agents outlive the daemon: at start, each live agent is re-adopted by pid and start time,
//! or recorded as ended. Fleets (`fleets.rs`) keep N agents from a template.

mod admission;
mod exits;
mod fleets;
mod identity;
mod import;
mod launch;
pub mod logic;
mod probe;
mod recommend;
mod responder;
mod restore;
mod run;
mod tick;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qm_cgroup::CgroupDriver;
use qm_core::AllocId;
use qm_proto::{
    AgentDoc, AgentSpec, AgentState, EventDoc, FieldProblem, LogsDoc, format_rfc3339, from_json,
};
use qm_store::{Batch, Op};
use rustix::process::Signal;
use tokio::sync::mpsc;

use logic::backoff::{BackoffConfig, Decision, ExitKind, RestartPolicy, Restarts};
use logic::health::{HealthState, ProbeResult};
use qm_engine::{Engine, EngineError, Lookup};
use run::Logs;

pub use fleets::{Answer, FLEET_LABEL, FleetError, FleetMembers};
pub use identity::{
    DYNAMIC, DYNAMIC_UIDS, Requester, User, is_root_user, may_adopt, process_uid, resolve_user,
    valid_default_user,
};
pub use recommend::{SIZED_LABEL, TEMPLATE_LABEL, TargetRecommendation};
pub use responder::ResponderConfig;

/// How the supervisor runs.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Logs go under `<data_dir>/logs/<agent>/`.
    pub data_dir: PathBuf,
    /// The cgroup mount, and the group under which agents get theirs.
    pub cgroup_root: PathBuf,
    pub cgroup_parent: String,
    /// Confine agents in cgroups (when the host allows it).
    pub cgroups: bool,
    /// Each log file is kept under this size.
    pub log_max_bytes: u64,
    pub backoff: BackoffConfig,
    /// How often timers (restarts, health checks, logs, fleets) run.
    pub tick: Duration,
    /// What the pressure responder does.
    pub responder: ResponderConfig,
    /// The user spawned agents run as unless their spec names one (when the daemon is root):
    /// `dynamic` (the default) gives each agent a uid of its own from [`DYNAMIC_UIDS`].
    pub user: String,
    /// The daemon's URL as agents reach it (`QM_SERVER` in their environment).
    pub server_url: Option<String>,
    /// How agents' sizes are learned (`[recommender]`).
    pub recommender: qm_recommend::Config,
    /// How the `learned` strategy sizes requests by what was learned (`[recommender]`
    /// `min_confidence`, `max_overcommit`).
    pub admit: qm_recommend::AdmitRules,
}

impl SupervisorConfig {
    /// Defaults under `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        SupervisorConfig {
            data_dir,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "qm".to_owned(),
            cgroups: true,
            log_max_bytes: 10 << 20,
            backoff: BackoffConfig::default(),
            tick: Duration::from_millis(200),
            responder: ResponderConfig::default(),
            user: identity::DYNAMIC.to_owned(),
            server_url: None,
            recommender: qm_recommend::Config::learned(),
            admit: qm_recommend::AdmitRules::default(),
        }
    }
}

use qm_engine::unix_ms as now_ms;

/// Why the supervisor refused.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A process could not be started or adopted.
    #[error("{0}")]
    Spawn(String),
    /// Only an admin may do this (adopt another user's process, run as uid 0).
    #[error("{0}")]
    Forbidden(String),
}

/// One agent.
#[derive(Debug)]
struct Agent {
    doc: AgentDoc,
    /// The process we spawned (for its exit status); None when adopted or re-adopted.
    child: Option<std::process::Child>,
    /// Bumped on every spawn: an exit notice of an older run is ignored.
    generation: u64,
    restarts: Restarts,
    policy: RestartPolicy,
    health_spec: Option<logic::health::HealthSpec>,
    health: Option<HealthState>,
    probing: bool,
    started_ms: u64,
    /// OOM kills the cgroup had counted when this run started.
    oom_before: u64,
    /// Set when asked to stop: the state it ends in, and why.
    stopping: Option<(AgentState, String)>,
    restart_at: Option<u64>,
    grace: Duration,
    /// Limits, OOM score and QoS from the agent's request (known at admission).
    confinement: Option<Confinement>,
    /// A cgroup made while the admission was decided, used by the first launch.
    group: Option<qm_cgroup::Group>,
    /// When it was last resized in place (vertical scaling).
    resized_ms: Option<u64>,
}

/// How an agent is confined: its cgroup limits, `oom_score_adj` and QoS class name.
type Confinement = (qm_cgroup::Limits, Option<i32>, String);

impl Agent {
    fn live(&self) -> bool {
        self.doc.state.is_live()
    }
}

enum Notice {
    Exit { id: String, generation: u64 },
    Probe { id: String, result: ProbeResult },
}

/// Every agent's (cpu cores, memory bytes) in the monitor's agent samples, by agent id: one
/// pass over the samples, not a search per agent.
fn usage_index(
    samples: &[qm_sys::metric::Sample],
) -> std::collections::HashMap<&str, (Option<f64>, Option<f64>)> {
    let mut usage: std::collections::HashMap<&str, (Option<f64>, Option<f64>)> =
        std::collections::HashMap::new();
    for s in samples {
        let cpu = s.desc.name == "qm_agent_cpu_usage_cores";
        if !cpu && s.desc.name != "qm_agent_memory_bytes" {
            continue;
        }
        let Some((_, id)) = s.labels.iter().find(|(k, _)| *k == "agent") else {
            continue;
        };
        let e = usage.entry(id.as_str()).or_default();
        if cpu {
            e.0.get_or_insert(s.value);
        } else {
            e.1.get_or_insert(s.value);
        }
    }
    usage
}

/// A handle on the supervisor; cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    config: SupervisorConfig,
    driver: Option<Box<dyn CgroupDriver>>,
    agents: Mutex<BTreeMap<String, Agent>>,
    fleets: Mutex<BTreeMap<String, fleets::Fleet>>,
    /// Where fleets' members run when not here: the cluster's placement.
    placed_fleets: std::sync::OnceLock<Arc<dyn FleetMembers>>,
    /// What is learned of the agents' sizes.
    learning: Mutex<recommend::Learning>,
    notices: mpsc::UnboundedSender<Notice>,
    node_memory: u64,
    generations: std::sync::atomic::AtomicU64,
    last_rotation: std::sync::atomic::AtomicU64,
    responder: Mutex<responder::ResponderState>,
    /// Dynamic uids handed to agents being created, not yet in `agents`.
    uids_pending: Mutex<std::collections::BTreeSet<u32>>,
    /// Names of agents being created (admission in flight), claimed by one request each.
    creating: Mutex<std::collections::BTreeSet<String>>,
}

/// A name claimed for an agent being created; let go when the create is done, either way.
struct NameClaim {
    supervisor: Supervisor,
    name: String,
}

/// What a launch decided under the lock, for the part that runs off it.
struct RunPlan {
    /// The cgroup made while the ledger decided, if any.
    group: Option<qm_cgroup::Group>,
    generation: u64,
    restarted: bool,
    spec: AgentSpec,
    limits: qm_cgroup::Limits,
    adj: Option<i32>,
    token: Option<String>,
}

/// What the part off the lock made.
struct StartedRun {
    cgroup: Option<String>,
    oom_before: u64,
    child: Option<std::process::Child>,
    pid: Result<u32, String>,
}

impl StartedRun {
    fn failed(reason: String) -> Self {
        Self {
            cgroup: None,
            oom_before: 0,
            child: None,
            pid: Err(reason),
        }
    }
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        if let Ok(mut c) = self.supervisor.inner.creating.lock() {
            c.remove(&self.name);
        }
    }
}

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notice")
    }
}

impl Supervisor {
    /// Loads the stored agents and fleets, re-adopts the agents still running, records those
    /// that ended while the daemon was down, and starts supervising. Call from within the
    /// tokio runtime.
    pub async fn start(engine: Engine, config: SupervisorConfig) -> Result<Self, AgentError> {
        let learned = config.recommender.clone();
        let admit = config.admit;
        let driver = if config.cgroups {
            match qm_cgroup::detect(&config.cgroup_root, &config.cgroup_parent) {
                Ok(d) => Some(d),
                Err(error) => {
                    tracing::warn!(%error, "agents run without cgroups");
                    None
                }
            }
        } else {
            None
        };
        let node_memory = engine
            .local_node()
            .await
            .ok()
            .and_then(|n| n.capacity.get("memory").cloned())
            .and_then(|m| qm_core::quantity::parse(qm_core::quantity::Unit::Bytes, &m).ok())
            .unwrap_or(0);
        let mut learning = recommend::Learning::new(learned);
        learning.load(&config.data_dir);
        let (tx, rx) = mpsc::unbounded_channel();
        let sup = Supervisor {
            inner: Arc::new(Inner {
                engine,
                config,
                driver,
                agents: Mutex::new(BTreeMap::new()),
                fleets: Mutex::new(BTreeMap::new()),
                placed_fleets: std::sync::OnceLock::new(),
                learning: Mutex::new(learning),
                notices: tx,
                node_memory,
                generations: std::sync::atomic::AtomicU64::new(1_000_000),
                last_rotation: std::sync::atomic::AtomicU64::new(0),
                responder: Mutex::new(responder::ResponderState::default()),
                uids_pending: Mutex::new(std::collections::BTreeSet::new()),
                creating: Mutex::new(std::collections::BTreeSet::new()),
            }),
        };
        if let (Some(d), Some(m)) = (&sup.inner.driver, sup.engine().monitor()) {
            m.set_managed(qm_monitor::ManagedFiles {
                memory: d.parent_memory_file(),
                pressure: d.parent_pressure_file(),
            });
        }
        sup.size_admissions(admit);
        sup.restore().await?;
        let me = sup.clone();
        tokio::spawn(async move { me.run(rx).await });
        Ok(sup)
    }

    /// The engine it admits agents through.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Runs `f` on the agent's cgroup, when agents have cgroups and the name is a group name.
    fn cg<T>(
        &self,
        id: &str,
        f: impl FnOnce(&dyn CgroupDriver, &qm_cgroup::GroupName) -> T,
    ) -> Option<T> {
        let d = self.inner.driver.as_deref()?;
        let g = qm_cgroup::GroupName::new(id).ok()?;
        Some(f(d, &g))
    }

    fn oom_kills(&self, id: &str) -> u64 {
        self.cg(id, |d, g| d.oom_kills(g).unwrap_or(0)).unwrap_or(0)
    }

    /// Removes an agent's cgroup once the kernel has let its last process go (retried in
    /// the background for a few seconds).
    fn remove_group(&self, id: &str) {
        let me = self.clone();
        let id = id.to_owned();
        // rmdir, and cgroup.kill's wait for the group to empty, block: off the async workers
        tokio::task::spawn_blocking(move || {
            for _ in 0..50 {
                match me.cg(&id, |d, g| d.remove(g)) {
                    Some(Err(_)) => {
                        let _ = me.cg(&id, |d, g| d.kill(g));
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    _ => return,
                }
            }
            tracing::warn!(agent = %id, "its cgroup could not be removed");
        });
    }

    fn logs(&self, name: &str) -> Logs {
        Logs::new(&self.inner.config.data_dir.join("logs"), name)
    }

    /// Makes `docs` durable (the agents' current documents).
    async fn persist(&self, docs: Vec<AgentDoc>) -> Result<(), AgentError> {
        if docs.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        let mut ended_names = Vec::new();
        for d in docs {
            let live = d.state.is_live();
            if !live {
                ended_names.push(d.name.clone());
            }
            let ended = d
                .ended_at
                .as_deref()
                .and_then(qm_proto::parse_rfc3339)
                .map(|t| i64::try_from(t).unwrap_or(i64::MAX));
            batch.push(Op::PutAgent {
                id: d.id.clone(),
                live,
                ended_at_ms: if live { None } else { ended.or(Some(0)) },
                body: qm_proto::to_json(&d),
            });
        }
        self.commit(batch).await?;
        // an agent that ended holds no token any more
        for name in ended_names {
            self.engine().tokens().revoke_managed(&name).await;
        }
        Ok(())
    }

    fn publish(&self, kind: &str, doc: &AgentDoc, reason: Option<String>) {
        self.engine().publish(vec![EventDoc {
            kind: kind.to_owned(),
            at: format_rfc3339(now_ms()),
            agent: Some(doc.name.clone()),
            allocation: doc.allocation.clone(),
            reason,
            ..EventDoc::default()
        }]);
    }

    /// Every agent, by id.
    pub fn list(&self) -> Vec<AgentDoc> {
        let agents = self
            .inner
            .agents
            .lock()
            .map(|a| a.values().map(|a| a.doc.clone()).collect::<Vec<_>>());
        let mut docs = agents.unwrap_or_default();
        // one pass over the latest samples for every agent (not a search per agent)
        let Some(latest) = self.engine().monitor().map(qm_monitor::Monitor::latest) else {
            return docs;
        };
        let usage = usage_index(&latest.agent_samples);
        for d in &mut docs {
            if d.state == AgentState::Running
                && let Some((cpu, mem)) = usage.get(d.id.as_str())
            {
                d.usage = qm_engine::usage_map(*cpu, *mem);
            }
        }
        docs
    }

    /// One agent.
    pub fn get(&self, id: &str) -> Option<AgentDoc> {
        let mut doc = self.inner.agents.lock().ok()?.get(id)?.doc.clone();
        if doc.state == AgentState::Running {
            doc.usage = self.usage(id);
        }
        Some(doc)
    }

    fn usage(&self, id: &str) -> Option<BTreeMap<String, String>> {
        let latest = self.engine().monitor()?.latest();
        qm_engine::usage_map(
            latest.agent_value("qm_agent_cpu_usage_cores", id),
            latest.agent_value("qm_agent_memory_bytes", id),
        )
    }

    /// The last `tail` lines of an agent's stdout and stderr.
    pub fn logs_of(&self, id: &str, tail: usize) -> Option<LogsDoc> {
        self.inner.agents.lock().ok()?.get(id)?;
        let logs = self.logs(id);
        Some(LogsDoc {
            stdout: logs.tail("stdout", tail),
            stderr: logs.tail("stderr", tail),
        })
    }

    /// Records a heartbeat; false when there is no such live agent.
    pub fn heartbeat(&self, id: &str) -> bool {
        let Ok(mut agents) = self.inner.agents.lock() else {
            return false;
        };
        match agents.get_mut(id) {
            Some(a) if a.live() => {
                let beat = a.health.as_mut().and_then(|h| h.heartbeat(now_ms()));
                if let Some(logic::health::Transition::BecameHealthy) = beat {
                    a.doc.health = "healthy".to_owned();
                }
                true
            }
            _ => false,
        }
    }
}
