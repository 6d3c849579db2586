//! Agents: the supervisor. An agent is admitted through the ledger first (its allocation is
//! granted, or it waits in the queue as `pending`), then spawned in its own session inside
//! its cgroup (limits from its QoS class, `oom_score_adj` as Kubernetes sets it), or adopted
//! when it already runs. Its end is seen through a pidfd; exits and OOM kills are recorded
//! with their cause and restarted per policy with exponential backoff; health checks mark
//! it unhealthy and restart it. Every transition is durable before its event goes out.
//! Agents outlive the daemon: at start, each live agent is re-adopted by pid and start time,
//! or recorded as ended. Fleets (`fleets.rs`) keep N agents from a template.

mod fleets;
mod identity;
mod import;
pub mod logic;
mod probe;
mod responder;
mod run;

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

use crate::{Engine, EngineError, Lookup};
use logic::backoff::{BackoffConfig, Decision, ExitKind, RestartPolicy, Restarts};
use logic::health::{HealthState, ProbeResult};
use run::Logs;

pub use fleets::FleetError;
pub use identity::{
    DYNAMIC, DYNAMIC_UIDS, Requester, User, is_root_user, may_adopt, process_uid, resolve_user,
    valid_default_user,
};
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
        }
    }
}

use crate::unix_ms as now_ms;

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
        let (tx, rx) = mpsc::unbounded_channel();
        let sup = Supervisor {
            inner: Arc::new(Inner {
                engine,
                config,
                driver,
                agents: Mutex::new(BTreeMap::new()),
                fleets: Mutex::new(BTreeMap::new()),
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
            m.set_managed(crate::monitor::ManagedFiles {
                memory: d.parent_memory_file(),
                pressure: d.parent_pressure_file(),
            });
        }
        sup.restore().await?;
        let me = sup.clone();
        tokio::spawn(async move { me.run(rx).await });
        Ok(sup)
    }

    fn engine(&self) -> &Engine {
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
        for d in &mut docs {
            if d.state == AgentState::Running {
                d.usage = self.usage(&d.id);
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
        crate::usage_map(
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

    /// Validates `spec` (every field named), admits it through the ledger and spawns or
    /// adopts it; answers the agent once durable. `fleet` marks a fleet's member.
    pub async fn create(
        &self,
        spec: AgentSpec,
        fleet: Option<String>,
        by: Requester,
    ) -> Result<AgentDoc, AgentError> {
        let mut problems = spec.problems("");
        if let Some(pid) = spec.pid {
            match may_adopt(pid, by) {
                Ok(()) if run::start_ticks(pid).is_none() => problems.push(FieldProblem::new(
                    "pid",
                    format!("no running process {pid}"),
                )),
                Ok(()) => {}
                Err((true, why)) => return Err(AgentError::Forbidden(format!("pid: {why}"))),
                Err((false, why)) => problems.push(FieldProblem::new("pid", why)),
            }
        }
        if let Some(u) = &spec.user {
            match resolve_user(u) {
                Ok(user) if user.uid == 0 && !by.admin => {
                    return Err(AgentError::Forbidden(format!(
                        "user: only an admin may run an agent as uid 0 ({u:?})"
                    )));
                }
                Ok(_) => {}
                Err(why) => problems.push(FieldProblem::new("user", why)),
            }
        }
        if let Some(cwd) = &spec.cwd
            && !std::path::Path::new(cwd).is_dir()
        {
            problems.push(FieldProblem::new(
                "cwd",
                format!("{cwd:?} is not a directory"),
            ));
        }
        let health = match &spec.health {
            Some(h) => match probe::spec_of(h) {
                Ok(s) => Some(s),
                Err(p) => {
                    problems.extend(p);
                    None
                }
            },
            None => None,
        };
        let request = spec
            .allocation_request()
            .into_request(self.engine().catalog());
        let request = match request {
            // a process started (or adopted) here is charged to this host, never another node
            Ok(mut r) => {
                r.node_selector.insert(
                    qm_core::NODE_LABEL.to_owned(),
                    self.engine().node_name().to_owned(),
                );
                Some(r)
            }
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        if !problems.is_empty() {
            return Err(EngineError::Invalid(problems).into());
        }
        // an agent of its own uid, so no other agent can read its token or signal it
        let mut spec = spec;
        let _uid = if spec.pid.is_none()
            && spec.user.is_none()
            && self.inner.config.user == identity::DYNAMIC
            && rustix::process::geteuid().is_root()
        {
            let held = self.allocate_uid()?;
            spec.user = Some(held.uid.to_string());
            Some(held)
        } else {
            None
        };
        // one name, one agent: the name is claimed here, before anything is made for it, and
        // a concurrent create of the same name is refused until this one is done
        {
            let agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            if agents.get(&spec.name).is_some_and(Agent::live) {
                return Err(EngineError::Conflict(format!(
                    "agent {:?} exists and is live; stop it first",
                    spec.name
                ))
                .into());
            }
            let mut creating = self
                .inner
                .creating
                .lock()
                .map_err(|_| EngineError::Stopped)?;
            if !creating.insert(spec.name.clone()) {
                return Err(EngineError::Conflict(format!(
                    "agent {:?} is being created by another request",
                    spec.name
                ))
                .into());
            }
        }
        let _claim = NameClaim {
            supervisor: self.clone(),
            name: spec.name.clone(),
        };
        // under an existing allocation (qm exec) the allocation's own resources confine it,
        // read at launch
        let confinement = request
            .as_ref()
            .filter(|_| spec.allocation.is_none())
            .map(|r| self.confinement_of(r));
        // never share a group with a stranger: processes of an earlier agent of this name (it
        // outlived a daemon that lost track of it) would live under this agent's limits
        let strangers = self
            .cg(&spec.name, |d, g| d.procs(g).unwrap_or_default())
            .unwrap_or_default();
        if !strangers.is_empty() {
            let group = self
                .cg(&spec.name, |d, g| d.relative_path(g))
                .unwrap_or_default();
            return Err(EngineError::Conflict(format!(
                "cgroup {} still holds processes {strangers:?} of an earlier agent named {:?}; \
                 stop them, or choose another name",
                group.display(),
                spec.name
            ))
            .into());
        }
        // the cgroup is made while the ledger decides (a spawn's admission is mostly its
        // fsync); removed again if the request is refused
        let precreate = match (&confinement, spec.pid, &spec.allocation) {
            (Some((limits, _, _)), None, None) if self.inner.driver.is_some() => {
                let me = self.clone();
                let (name, limits) = (spec.name.clone(), *limits);
                Some(tokio::task::spawn_blocking(move || {
                    me.cg(&name, |d, g| d.create(g, &limits).ok()).flatten()
                }))
            }
            _ => None,
        };
        let admission = self.admit(&spec, request).await;
        let group = match precreate {
            Some(h) => h.await.ok().flatten(),
            None => None,
        };
        let (alloc_id, granted) = match admission {
            Ok(a) => a,
            Err(e) => {
                if group.is_some() {
                    self.remove_group(&spec.name);
                }
                return Err(e);
            }
        };
        let policy = match spec.restart.as_deref() {
            Some(r) => r.parse().unwrap_or(RestartPolicy::OnFailure),
            None if spec.pid.is_some() => RestartPolicy::Never,
            None => RestartPolicy::OnFailure,
        };
        let grace = Duration::from_secs_f64(spec.grace_s.unwrap_or(10.0));
        let doc = AgentDoc {
            id: spec.name.clone(),
            name: spec.name.clone(),
            state: AgentState::Pending,
            adopted: spec.pid.is_some(),
            allocation: Some(alloc_id.clone()),
            health: "unknown".to_owned(),
            reason: (!granted).then(|| "waiting for admission".to_owned()),
            fleet,
            spec,
            ..AgentDoc::default()
        };
        let agent = Agent {
            doc,
            child: None,
            generation: 0,
            restarts: Restarts::new(self.inner.config.backoff.clone(), policy),
            policy,
            health_spec: health,
            health: None,
            probing: false,
            started_ms: 0,
            oom_before: 0,
            stopping: None,
            restart_at: None,
            grace,
            confinement,
            group,
        };
        let id = agent.doc.id.clone();
        if let Ok(mut agents) = self.inner.agents.lock() {
            agents.insert(id.clone(), agent);
        }
        if granted {
            self.launch(&id).await?;
        } else {
            let doc = self.get(&id).ok_or(EngineError::Stopped)?;
            self.persist(vec![doc]).await?;
        }
        let doc = self.get(&id).ok_or(EngineError::Stopped)?;
        if doc.state == AgentState::Failed {
            // nothing runs: give the capacity and the cgroup back
            self.release(&doc).await;
            if doc.cgroup.is_some() {
                self.remove_group(&id);
            }
            return Err(AgentError::Spawn(doc.reason.unwrap_or_default()));
        }
        Ok(doc)
    }

    /// Admission: an existing granted allocation (`qm exec`), or a new request; answers the
    /// allocation's id and whether it is granted now.
    async fn admit(
        &self,
        spec: &AgentSpec,
        request: Option<qm_core::Request>,
    ) -> Result<(String, bool), AgentError> {
        match &spec.allocation {
            Some(id) => {
                let parsed: AllocId = id.parse().map_err(|_| {
                    EngineError::Invalid(vec![FieldProblem::new(
                        "allocation",
                        format!("{id:?} is not an allocation id"),
                    )])
                })?;
                match self.engine().get(parsed).await? {
                    Lookup::Live(doc)
                        if doc.state == "granted"
                            && doc.node.as_deref() != Some(self.engine().node_name()) =>
                    {
                        Err(EngineError::Conflict(format!(
                            "allocation {id} is on node {:?}, not on this host ({:?}): a process \
                             here cannot be charged to it",
                            doc.node.as_deref().unwrap_or("none"),
                            self.engine().node_name()
                        ))
                        .into())
                    }
                    Lookup::Live(doc) if doc.state == "granted" => Ok((id.clone(), true)),
                    _ => {
                        Err(EngineError::Conflict(format!("allocation {id} is not granted")).into())
                    }
                }
            }
            None => {
                let Some(request) = request else {
                    return Err(EngineError::Invalid(Vec::new()).into());
                };
                let replay = self.engine().submit(request, false, None).await?;
                let Some(id) = replay.id else {
                    return Err(AgentError::Spawn("the ledger gave no allocation id".into()));
                };
                Ok((id, replay.status == 201))
            }
        }
    }

    /// The cgroup limits, OOM score and QoS of a request.
    fn confinement_of(&self, req: &qm_core::Request) -> Confinement {
        let qos = qm_core::Qos::derive(&req.resources, req.limits.as_ref());
        let cg_qos = match qos {
            qm_core::Qos::Guaranteed => qm_cgroup::Qos::Guaranteed,
            qm_core::Qos::Burstable => qm_cgroup::Qos::Burstable,
            qm_core::Qos::BestEffort => qm_cgroup::Qos::BestEffort,
        };
        let nonzero = |v: u64| (v > 0).then_some(v);
        let limits = qm_cgroup::limits_for(
            cg_qos,
            qm_cgroup::Requests {
                cpu_millis: req.resources.cpu(),
                memory_bytes: req.resources.memory(),
            },
            qm_cgroup::Maximums {
                cpu_millis: req.limits.as_ref().and_then(|l| nonzero(l.cpu())),
                memory_bytes: req.limits.as_ref().and_then(|l| nonzero(l.memory())),
            },
        );
        let adj =
            qm_cgroup::oom_score_adj_for(cg_qos, req.resources.memory(), self.inner.node_memory);
        (limits, Some(adj), qos.name().to_owned())
    }

    /// The cgroup limits and OOM score of the agent's allocation.
    async fn confinement(&self, alloc: &str) -> (qm_cgroup::Limits, Option<i32>, String) {
        let doc = match alloc.parse::<AllocId>() {
            Ok(id) => match self.engine().get(id).await {
                Ok(Lookup::Live(doc)) => Some(*doc),
                _ => None,
            },
            Err(_) => None,
        };
        let Some(doc) = doc else {
            return (qm_cgroup::Limits::default(), None, "best-effort".into());
        };
        let q = |m: &BTreeMap<String, String>, r: &str, unit| {
            m.get(r)
                .and_then(|v| qm_core::quantity::parse(unit, v).ok())
        };
        use qm_core::quantity::Unit;
        let req_cpu = q(&doc.resources, "cpu", Unit::Millicores).unwrap_or(0);
        let req_mem = q(&doc.resources, "memory", Unit::Bytes).unwrap_or(0);
        let lim = doc.limits.clone().unwrap_or_default();
        let qos: qm_cgroup::Qos = doc.qos.parse().unwrap_or(qm_cgroup::Qos::Burstable);
        let limits = qm_cgroup::limits_for(
            qos,
            qm_cgroup::Requests {
                cpu_millis: req_cpu,
                memory_bytes: req_mem,
            },
            qm_cgroup::Maximums {
                cpu_millis: q(&lim, "cpu", Unit::Millicores),
                memory_bytes: q(&lim, "memory", Unit::Bytes),
            },
        );
        let adj = match doc.qos.as_str() {
            "guaranteed" => -997,
            "best-effort" => 1000,
            _ => qm_cgroup::oom_score_adj_burstable(req_mem, self.inner.node_memory),
        };
        (limits, Some(adj), doc.qos)
    }

    /// Spawns (or adopts) the agent `id` now that its allocation is granted, and persists.
    async fn launch(&self, id: &str) -> Result<(), AgentError> {
        let Some(current) = self.get(id) else {
            return Ok(());
        };
        let Some(alloc) = current.allocation.clone() else {
            return Ok(());
        };
        let prepared = self
            .inner
            .agents
            .lock()
            .ok()
            .and_then(|a| a.get(id).and_then(|a| a.confinement.clone()));
        let (limits, adj, qos) = match prepared {
            Some(c) => c,
            None => self.confinement(&alloc).await,
        };
        // 1. claim the run under the lock (nothing slow there): the agent reads `starting`,
        // so a second launch (the grant's event after `create` launched it) finds it taken
        let claimed: Option<RunPlan> = {
            let mut agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            let Some(a) = agents.get_mut(id) else {
                return Ok(());
            };
            let busy = a.doc.state == AgentState::Starting;
            if busy
                || !matches!(a.doc.state, AgentState::Pending | AgentState::Backoff)
                || a.stopping.is_some()
            {
                if !busy {
                    return Ok(());
                }
                None
            } else {
                a.confinement = Some((limits, adj, qos.clone()));
                a.doc.qos = Some(qos);
                // generations are unique across agents, so a timer of an earlier agent of the same
                // name never matches a new one
                a.generation = self
                    .inner
                    .generations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                a.doc.state = AgentState::Starting;
                Some(RunPlan {
                    group: a.group.take(),
                    generation: a.generation,
                    restarted: a.started_ms != 0,
                    spec: a.doc.spec.clone(),
                    limits,
                    adj,
                    token: None,
                })
            }
        };
        let Some(mut plan) = claimed else {
            // another launch has it: its caller (say, the create) answers once it is done
            self.until_started(id).await;
            return Ok(());
        };
        // a spawned agent's identity: its own token, minted (durably) for this run by the one
        // launch that claimed it (the previous run's revoked)
        if plan.spec.pid.is_none() {
            plan.token = self.mint_token(&current).await;
        }
        // 2. the slow part (the cgroup, /proc, the fork) off the lock and the async workers
        let (generation, restarted) = (plan.generation, plan.restarted);
        let me = self.clone();
        let owned = id.to_owned();
        let mut run = tokio::task::spawn_blocking(move || me.start_run(&owned, plan))
            .await
            .unwrap_or_else(|e| StartedRun::failed(format!("the start did not finish: {e}")));
        // 3. record it, unless the agent was stopped (or replaced) meanwhile
        let recorded: Option<Option<&'static str>> = {
            let mut agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            let current = agents.get_mut(id).filter(|a| {
                a.generation == generation
                    && a.doc.state == AgentState::Starting
                    && a.stopping.is_none()
            });
            if let Some(a) = current {
                a.doc.cgroup.clone_from(&run.cgroup);
                a.oom_before = run.oom_before;
                a.child = run.child.take();
                let now = now_ms();
                let event = match run.pid.clone() {
                    Ok(pid) => {
                        a.doc.pid = Some(pid);
                        a.doc.start_ticks = run::start_ticks(pid);
                        a.doc.state = AgentState::Running;
                        a.doc.reason = None;
                        a.doc.exit_code = None;
                        a.doc.signal = None;
                        a.doc.oom_killed = false;
                        a.doc.oom_kills = 0;
                        a.doc.started_at = Some(format_rfc3339(now));
                        a.doc.ended_at = None;
                        a.doc.next_restart_at = None;
                        a.started_ms = now;
                        a.restart_at = None;
                        a.health = a.health_spec.clone().map(HealthState::new);
                        if let Some(h) = &mut a.health {
                            h.started(now);
                        }
                        self.watch(id, pid, a.doc.start_ticks, a.generation);
                        self.track(a);
                        Some(if restarted {
                            "agent.restarted"
                        } else {
                            "agent.started"
                        })
                    }
                    Err(reason) => {
                        a.doc.state = AgentState::Failed;
                        a.doc.reason = Some(reason);
                        a.doc.ended_at = Some(format_rfc3339(now));
                        None
                    }
                };
                Some(event)
            } else {
                None
            }
        };
        let Some(event) = recorded else {
            // stopped while starting: what was just started goes too, and its token
            self.abandon(run).await;
            self.engine().tokens().revoke_managed(id).await;
            return Ok(());
        };
        let doc = self.get(id).ok_or(EngineError::Stopped)?;
        self.persist(vec![doc.clone()]).await?;
        if let Some(kind) = event {
            self.publish(kind, &doc, None);
        }
        Ok(())
    }

    /// Waits (a few seconds at most) while another launch of `id` is in flight.
    async fn until_started(&self, id: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline
            && self
                .get(id)
                .is_some_and(|d| d.state == AgentState::Starting)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Kills what a launch started for an agent stopped meanwhile.
    async fn abandon(&self, mut run: StartedRun) {
        if let Some(mut child) = run.child.take() {
            if let Ok(pid) = run.pid {
                run::signal_group(pid, Signal::KILL);
            }
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    /// Makes the run [`RunPlan`] describes: the cgroup (unless made already), then the
    /// adopted process moved in, or the program spawned inside it. Blocking: the caller runs
    /// it off the async workers, and never under the agents' lock.
    fn start_run(&self, id: &str, plan: RunPlan) -> StartedRun {
        let made = match plan.group {
            Some(g) => Some(Ok(g)),
            None => self.cg(id, |d, g| d.create(g, &plan.limits)),
        };
        let (cgroup, procs) = match made {
            Some(Ok(group)) => (
                Some(group.relative_path().to_string_lossy().into_owned()),
                group.procs_files().to_vec(),
            ),
            Some(Err(error)) => {
                tracing::warn!(%error, agent = id, "no cgroup for the agent");
                (None, Vec::new())
            }
            None => (None, Vec::new()),
        };
        let oom_before = self.oom_kills(id);
        let (child, pid) = match plan.spec.pid {
            Some(pid) if !plan.restarted => {
                // adopt: the process and its descendants join the cgroup where permitted
                if cgroup.is_some() {
                    for p in std::iter::once(pid).chain(run::descendants(pid)) {
                        if let Some(Err(error)) = self.cg(id, |d, g| d.add_process(g, p)) {
                            tracing::warn!(%error, agent = id, pid = p, "cannot move into the cgroup");
                        }
                    }
                }
                (None, Ok(pid))
            }
            Some(_) => (
                None,
                Err("an adopted process cannot be restarted".to_owned()),
            ),
            None => {
                let argv = plan.spec.command.clone().unwrap_or_default();
                let mut env = plan.spec.env.clone().unwrap_or_default();
                env.insert("QM_AGENT".to_owned(), id.to_owned());
                if let Some(url) = &self.inner.config.server_url {
                    env.insert("QM_SERVER".to_owned(), url.clone());
                }
                if let Some(t) = &plan.token {
                    env.insert("QM_TOKEN".to_owned(), t.clone());
                }
                let identity = self.identity_of(&plan.spec);
                let launch = run::Launch {
                    argv: &argv,
                    env: &env,
                    cwd: plan.spec.cwd.as_deref(),
                    cgroup_procs: procs,
                    oom_score_adj: plan.adj,
                    identity: identity.as_ref().ok().copied().flatten(),
                };
                let spawned = match identity {
                    Ok(_) => run::spawn(&launch, &self.logs(id)),
                    Err(why) => Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        why,
                    )),
                };
                match spawned {
                    Ok(child) => {
                        let pid = child.id();
                        (Some(child), Ok(pid))
                    }
                    Err(e) => (None, Err(format!("cannot start {:?}: {e}", argv.first()))),
                }
            }
        };
        StartedRun {
            cgroup,
            oom_before,
            child,
            pid,
        }
    }

    /// A fresh agent token for `doc`'s run (the previous run's revoked), or None when the
    /// store cannot record one (the agent then runs without).
    async fn mint_token(&self, doc: &AgentDoc) -> Option<String> {
        let tokens = self.engine().tokens();
        tokens.revoke_managed(&doc.name).await;
        let req = qm_proto::TokenRequest {
            name: format!("agent:{}", doc.name),
            role: "agent".to_owned(),
            agent: Some(doc.name.clone()),
            pool: doc.spec.pool.clone(),
            spawn: doc.spec.spawn,
            ttl_s: None,
        };
        match tokens.create(&req, true).await {
            Ok(created) => Some(created.token),
            Err(error) => {
                tracing::warn!(%error, agent = %doc.name, "cannot mint the agent's token");
                None
            }
        }
    }

    /// A free dynamic uid (none of a live agent's, none `/etc/passwd` names), held until the
    /// returned guard drops (by then the agent is in the table, or was refused).
    fn allocate_uid(&self) -> Result<identity::HeldUid, AgentError> {
        let mut pending = self
            .inner
            .uids_pending
            .lock()
            .map_err(|_| EngineError::Stopped)?;
        let used: std::collections::BTreeSet<u32> = {
            let agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            agents
                .values()
                .filter(|a| a.live())
                .filter_map(|a| a.doc.spec.user.as_deref()?.parse().ok())
                .collect()
        };
        let uid = identity::free_uid(&used, &pending).ok_or_else(|| {
            EngineError::Conflict(format!(
                "every dynamic uid ({}..={}) is taken by a live agent",
                identity::DYNAMIC_UIDS.start(),
                identity::DYNAMIC_UIDS.end()
            ))
        })?;
        pending.insert(uid);
        Ok(identity::HeldUid {
            uid,
            supervisor: self.clone(),
        })
    }

    fn release_uid(&self, uid: u32) {
        if let Ok(mut p) = self.inner.uids_pending.lock() {
            p.remove(&uid);
        }
    }

    /// The user a spawned agent runs as: its spec's, else the configured default, when the
    /// daemon is root; otherwise the daemon's own (and a spec naming another is an error).
    fn identity_of(&self, spec: &AgentSpec) -> Result<Option<qm_cgroup::Identity>, String> {
        let root = rustix::process::geteuid().is_root();
        let asked = spec.user.as_deref();
        // an agent made before dynamic uids, or adopted, falls back to nobody
        let default = match self.inner.config.user.as_str() {
            identity::DYNAMIC => "nobody",
            other => other,
        };
        if !root {
            let me = rustix::process::geteuid().as_raw();
            return match asked.map(resolve_user).transpose()? {
                Some(u) if u.uid != me => Err(format!(
                    "user: the daemon runs as uid {me} and cannot start agents as uid {}",
                    u.uid
                )),
                _ => Ok(None),
            };
        }
        let user = resolve_user(asked.unwrap_or(default))?;
        Ok(Some(qm_cgroup::Identity {
            uid: user.uid,
            gid: user.gid,
        }))
    }

    fn track(&self, a: &Agent) {
        if let (Some(m), Some(pid)) = (self.engine().monitor(), a.doc.pid) {
            m.track(qm_sys::agent::Target {
                id: a.doc.id.clone(),
                pid,
                start_time: a.doc.start_ticks,
                cgroup: a.doc.cgroup.as_ref().map(PathBuf::from),
            });
        }
    }

    fn untrack(&self, id: &str) {
        if let Some(m) = self.engine().monitor() {
            m.untrack(id);
        }
    }

    /// Watches `pid` end; the supervisor hears of it with `generation`.
    fn watch(&self, id: &str, pid: u32, ticks: Option<u64>, generation: u64) {
        let tx = self.inner.notices.clone();
        let id = id.to_owned();
        match run::pidfd(pid, ticks) {
            Some(fd) => {
                tokio::spawn(async move {
                    run::ended(fd).await;
                    let _ = tx.send(Notice::Exit { id, generation });
                });
            }
            None => {
                let _ = tx.send(Notice::Exit { id, generation });
            }
        }
    }

    /// Stops an agent: SIGTERM to its process group (and cgroup), SIGKILL after its grace
    /// period (or `grace`); it ends `stopped`, its allocation released. A pending agent's
    /// request is cancelled.
    pub async fn stop(&self, id: &str, grace: Option<Duration>) -> Result<AgentDoc, AgentError> {
        self.stop_as(
            id,
            grace,
            AgentState::Stopped,
            "stopped on request".to_owned(),
        )
        .await
    }

    async fn stop_as(
        &self,
        id: &str,
        grace: Option<Duration>,
        state: AgentState,
        reason: String,
    ) -> Result<AgentDoc, AgentError> {
        let pending = {
            let mut agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            let a = agents
                .get_mut(id)
                .ok_or_else(|| EngineError::NotFound(format!("no agent {id:?}")))?;
            if !a.live() {
                return Ok(a.doc.clone());
            }
            a.stopping = Some((state, reason.clone()));
            match (a.doc.state, a.doc.pid) {
                (AgentState::Running, Some(pid)) => {
                    run::signal_group(pid, Signal::TERM);
                    if let Some(Ok(pids)) = self.cg(id, |d, g| d.procs(g)) {
                        run::signal_each(&pids, Signal::TERM);
                    }
                    let grace = grace.unwrap_or(a.grace);
                    let me = self.clone();
                    let id = id.to_owned();
                    let generation = a.generation;
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        me.kill_if_running(&id, generation);
                    });
                    false
                }
                _ => true,
            }
        };
        if pending {
            self.finish(id, state, Some(reason), None).await?;
        }
        self.get(id)
            .ok_or_else(|| EngineError::NotFound(format!("no agent {id:?}")).into())
    }

    fn kill_if_running(&self, id: &str, generation: u64) {
        let pid = self.inner.agents.lock().ok().and_then(|agents| {
            agents
                .get(id)
                .filter(|a| a.generation == generation && a.doc.state == AgentState::Running)
                .and_then(|a| a.doc.pid)
        });
        if let Some(pid) = pid {
            run::signal_group(pid, Signal::KILL);
            // cgroup.kill waits for the group to empty: never under the agents' lock, and
            // off the async workers
            let me = self.clone();
            let id = id.to_owned();
            tokio::task::spawn_blocking(move || {
                let _ = me.cg(&id, |d, g| d.kill(g));
            });
        }
    }

    /// Ends the agent in `state`: releases its allocation, removes its cgroup, persists and
    /// publishes.
    async fn finish(
        &self,
        id: &str,
        state: AgentState,
        reason: Option<String>,
        event: Option<&str>,
    ) -> Result<(), AgentError> {
        let doc = {
            let mut agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            let Some(a) = agents.get_mut(id) else {
                return Ok(());
            };
            a.doc.state = state;
            if reason.is_some() {
                a.doc.reason = reason.clone();
            }
            a.doc.ended_at = Some(format_rfc3339(now_ms()));
            a.doc.next_restart_at = None;
            a.restart_at = None;
            a.child = None;
            // a group made for a launch that never came (stopped while pending)
            (a.doc.clone(), a.group.take().is_some())
        };
        let (doc, unused_group) = doc;
        self.untrack(id);
        match (
            state,
            doc.allocation
                .as_deref()
                .and_then(|a| a.parse::<AllocId>().ok()),
        ) {
            // under pressure the allocation ends `evicted` too
            (AgentState::Evicted, Some(alloc))
                if reason.as_deref().is_some_and(|r| r.contains("pressure")) =>
            {
                let _ = self
                    .engine()
                    .evict(alloc, reason.clone().unwrap_or_default())
                    .await;
            }
            _ => self.release(&doc).await,
        }
        if doc.cgroup.is_some() || unused_group {
            self.remove_group(id);
        }
        self.persist(vec![doc.clone()]).await?;
        if let Some(kind) = event {
            self.publish(kind, &doc, reason);
        }
        Ok(())
    }

    async fn release(&self, doc: &AgentDoc) {
        if doc.spec.allocation.is_some() {
            // qm exec holds that allocation itself
            return;
        }
        if let Some(id) = doc
            .allocation
            .as_deref()
            .and_then(|a| a.parse::<AllocId>().ok())
        {
            let _ = self.engine().release(id).await;
        }
    }

    /// A process ended: find out how, then restart, back off or end.
    async fn on_exit(&self, id: &str, generation: u64) -> Result<(), AgentError> {
        let (stopping, kind, doc) = {
            let mut agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            let Some(a) = agents.get_mut(id) else {
                return Ok(());
            };
            if a.generation != generation || a.doc.state != AgentState::Running {
                return Ok(());
            }
            let (code, signal) = match a.child.as_mut().map(std::process::Child::wait) {
                Some(Ok(status)) => {
                    use std::os::unix::process::ExitStatusExt;
                    (status.code(), status.signal())
                }
                _ => (None, None),
            };
            a.child = None;
            let ooms = self.oom_kills(id);
            a.doc.exit_code = code;
            a.doc.signal = signal;
            a.doc.oom_killed = ooms > a.oom_before && signal == Some(9);
            a.doc.pid = None;
            let now = now_ms();
            a.doc.ended_at = Some(format_rfc3339(now));
            let cause = if a.doc.oom_killed {
                "killed by the kernel's OOM killer (memory limit)".to_owned()
            } else if let Some(s) = signal {
                format!("killed by signal {s}")
            } else if let Some(c) = code {
                format!("exited with code {c}")
            } else {
                "ended (exit status unknown: not our child)".to_owned()
            };
            a.doc.reason = Some(cause);
            let kind = if a.stopping.is_some() {
                ExitKind::Stopped
            } else if code == Some(0) {
                ExitKind::Success
            } else {
                ExitKind::Failure
            };
            let decision = a.restarts.on_exit(now, kind, a.started_ms);
            a.doc.restarts = a.restarts.restarts();
            a.doc.crash_loop = a.restarts.crash_looping();
            let stopping = a.stopping.take();
            match decision {
                Decision::Restart { at, .. } if stopping.is_none() && a.doc.spec.pid.is_none() => {
                    a.doc.state = AgentState::Backoff;
                    a.restart_at = Some(at);
                    a.doc.next_restart_at = Some(format_rfc3339(at));
                }
                _ => {}
            }
            (stopping, kind, a.doc.clone())
        };
        self.untrack(id);
        if doc.state == AgentState::Backoff {
            self.persist(vec![doc.clone()]).await?;
            self.publish("agent.exited", &doc, doc.reason.clone());
            return Ok(());
        }
        match stopping {
            Some((state, why)) => {
                let event = if state == AgentState::Evicted {
                    "agent.evicted"
                } else {
                    "agent.exited"
                };
                self.finish(id, state, Some(why), Some(event)).await
            }
            None => {
                let state = if kind == ExitKind::Success {
                    AgentState::Exited
                } else {
                    AgentState::Failed
                };
                self.finish(id, state, doc.reason.clone(), Some("agent.exited"))
                    .await
            }
        }
    }

    /// Timers: restarts that are due, health probes, log sizes, fleets.
    async fn on_tick(&self) {
        let now = now_ms();
        let mut due = Vec::new();
        let mut probes = Vec::new();
        // log sizes are checked every 5 s, not every tick: two stats per agent add up
        let last = self
            .inner
            .last_rotation
            .load(std::sync::atomic::Ordering::Relaxed);
        let rotate = now >= last + 5_000;
        if rotate {
            self.inner
                .last_rotation
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
        if let Ok(mut agents) = self.inner.agents.lock() {
            for a in agents.values_mut() {
                if a.doc.state == AgentState::Backoff && a.restart_at.is_some_and(|t| t <= now) {
                    due.push(a.doc.id.clone());
                }
                if a.doc.state == AgentState::Running {
                    if rotate {
                        self.logs(&a.doc.id).rotate(self.inner.config.log_max_bytes);
                    }
                    if let Some(h) = &mut a.health {
                        if let Some(t) = h.check(now) {
                            probes.push((a.doc.id.clone(), None, Some(t)));
                        } else if !a.probing && h.due(now) {
                            h.probe_started(now);
                            a.probing = true;
                            probes.push((a.doc.id.clone(), Some(h.spec().clone()), None));
                        }
                    }
                }
            }
        }
        for id in due {
            if let Err(error) = self.launch(&id).await {
                tracing::warn!(%error, agent = %id, "restart failed");
            }
        }
        if rotate {
            self.check_oom_kills().await;
        }
        for (id, spec, transition) in probes {
            match (spec, transition) {
                (Some(spec), _) => {
                    let tx = self.inner.notices.clone();
                    tokio::spawn(async move {
                        let result = probe::run(&spec).await;
                        let _ = tx.send(Notice::Probe { id, result });
                    });
                }
                (None, Some(t)) => self.on_health(&id, t).await,
                (None, None) => {}
            }
        }
        self.respond().await;
        self.reconcile_fleets().await;
    }

    /// Reports OOM kills in running agents' groups (a child killed while the agent runs on),
    /// read off the lock: each new one is counted on the agent and published.
    async fn check_oom_kills(&self) {
        let running: Vec<(String, u64)> = match self.inner.agents.lock() {
            Ok(agents) => agents
                .values()
                .filter(|a| a.doc.state == AgentState::Running && a.doc.cgroup.is_some())
                .map(|a| (a.doc.id.clone(), a.generation))
                .collect(),
            Err(_) => return,
        };
        if running.is_empty() {
            return;
        }
        let me = self.clone();
        let counts = tokio::task::spawn_blocking(move || {
            running
                .into_iter()
                .map(|(id, g)| {
                    let n = me.oom_kills(&id);
                    (id, g, n)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut changed = Vec::new();
        if let Ok(mut agents) = self.inner.agents.lock() {
            for (id, generation, n) in counts {
                let Some(a) = agents.get_mut(&id) else {
                    continue;
                };
                let seen = a.oom_before.saturating_add(a.doc.oom_kills);
                if a.generation == generation && n > seen {
                    a.doc.oom_kills = n.saturating_sub(a.oom_before);
                    changed.push(a.doc.clone());
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        if let Err(error) = self.persist(changed.clone()).await {
            tracing::warn!(%error, "cannot record OOM kills");
            return;
        }
        for doc in &changed {
            tracing::warn!(agent = %doc.id, oom_kills = doc.oom_kills, "a process of the agent was OOM-killed");
            self.publish(
                "agent.oom_killed",
                doc,
                Some(format!(
                    "{} OOM kill(s) in its group during this run",
                    doc.oom_kills
                )),
            );
        }
    }

    async fn on_probe(&self, id: &str, result: ProbeResult) {
        let transition = {
            let Ok(mut agents) = self.inner.agents.lock() else {
                return;
            };
            let Some(a) = agents.get_mut(id) else {
                return;
            };
            a.probing = false;
            if a.doc.state != AgentState::Running {
                return;
            }
            a.health.as_mut().and_then(|h| h.record(now_ms(), result))
        };
        if let Some(t) = transition {
            self.on_health(id, t).await;
        }
    }

    async fn on_health(&self, id: &str, t: logic::health::Transition) {
        use logic::health::Transition;
        let (doc, restart) = {
            let Ok(mut agents) = self.inner.agents.lock() else {
                return;
            };
            let Some(a) = agents.get_mut(id) else {
                return;
            };
            match &t {
                Transition::BecameUnhealthy { reason, .. } => {
                    a.doc.health = "unhealthy".to_owned();
                    a.doc.reason = Some(format!("unhealthy: {reason}"));
                }
                Transition::BecameHealthy => a.doc.health = "healthy".to_owned(),
            }
            let restart = matches!(t, Transition::BecameUnhealthy { .. })
                && a.policy != RestartPolicy::Never
                && a.doc.spec.pid.is_none();
            (a.doc.clone(), restart)
        };
        let _ = self.persist(vec![doc.clone()]).await;
        if matches!(t, logic::health::Transition::BecameUnhealthy { .. }) {
            self.publish("agent.unhealthy", &doc, doc.reason.clone());
        }
        if restart && let Some(pid) = doc.pid {
            // the exit that follows is a failure: restarted per policy with backoff
            run::signal_group(pid, Signal::KILL);
            let me = self.clone();
            let id = id.to_owned();
            tokio::task::spawn_blocking(move || {
                let _ = me.cg(&id, |d, g| d.kill(g));
            });
        }
    }

    /// An allocation event: a pending agent's grant, or a running agent's allocation ended
    /// by someone else (preempted, evicted, expired, lost).
    async fn on_event(&self, e: &EventDoc) {
        let Some(alloc) = &e.allocation else {
            return;
        };
        let found = self.inner.agents.lock().ok().and_then(|agents| {
            agents
                .values()
                .find(|a| a.live() && a.doc.allocation.as_ref() == Some(alloc))
                .map(|a| (a.doc.id.clone(), a.doc.state))
        });
        let Some((id, state)) = found else {
            return;
        };
        match e.kind.as_str() {
            "allocation.granted" if state == AgentState::Pending => {
                if let Err(error) = self.launch(&id).await {
                    tracing::warn!(%error, agent = %id, "launch failed");
                }
            }
            "allocation.preempted"
            | "allocation.evicted"
            | "allocation.expired"
            | "allocation.lost" => {
                let why = format!(
                    "its allocation was {}{}",
                    e.kind.trim_start_matches("allocation."),
                    e.reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
                let _ = self.stop_as(&id, None, AgentState::Evicted, why).await;
            }
            _ => {}
        }
    }

    async fn run(self, mut notices: mpsc::UnboundedReceiver<Notice>) {
        let mut events = self.engine().subscribe(None).live;
        let mut tick = tokio::time::interval(self.inner.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pressure = self.engine().monitor().map_or_else(
            || Arc::new(tokio::sync::Notify::new()),
            |m| m.pressure_wake(),
        );
        loop {
            tokio::select! {
                // pressure first: an eviction must not wait behind a burst of notices
                biased;
                () = pressure.notified() => self.respond().await,
                n = notices.recv() => match n {
                    Some(Notice::Exit { id, generation }) => {
                        if let Err(error) = self.on_exit(&id, generation).await {
                            tracing::warn!(%error, agent = %id, "recording an exit failed");
                        }
                    }
                    Some(Notice::Probe { id, result }) => self.on_probe(&id, result).await,
                    None => return,
                },
                e = events.recv() => match e {
                    Ok(e) => self.on_event(&e).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    /// At start: every stored agent back in memory; live ones re-adopted by pid and start
    /// time, or recorded as ended (and restarted per policy); pending ones launched if their
    /// allocation was granted meanwhile.
    async fn restore(&self) -> Result<(), AgentError> {
        let store = self.engine().store().clone();
        let loaded = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| EngineError::Internal(format!("a store read did not finish: {e}")))?
            .map_err(EngineError::from)?;
        let mut to_launch = Vec::new();
        let mut ended = Vec::new();
        for (id, _, body) in &loaded.agents {
            let Ok(doc) = from_json::<AgentDoc>(body) else {
                tracing::warn!(agent = %id, "unreadable stored agent skipped");
                continue;
            };
            let policy = match doc.spec.restart.as_deref() {
                Some(r) => r.parse().unwrap_or(RestartPolicy::OnFailure),
                None if doc.spec.pid.is_some() => RestartPolicy::Never,
                None => RestartPolicy::OnFailure,
            };
            let health_spec = doc
                .spec
                .health
                .as_ref()
                .and_then(|h| probe::spec_of(h).ok());
            let mut a = Agent {
                grace: Duration::from_secs_f64(doc.spec.grace_s.unwrap_or(10.0)),
                child: None,
                generation: self
                    .inner
                    .generations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                // the count goes on where the last daemon left it
                restarts: Restarts::resume(
                    self.inner.config.backoff.clone(),
                    policy,
                    doc.restarts,
                    doc.crash_loop,
                ),
                policy,
                health_spec,
                health: None,
                probing: false,
                started_ms: doc
                    .started_at
                    .as_deref()
                    .and_then(qm_proto::parse_rfc3339)
                    .unwrap_or(0),
                oom_before: self.oom_kills(id),
                stopping: None,
                restart_at: None,
                confinement: None,
                group: None,
                doc,
            };
            match a.doc.state {
                AgentState::Running | AgentState::Starting => match a.doc.pid {
                    Some(pid) if run::pidfd(pid, a.doc.start_ticks).is_some() => {
                        self.watch(id, pid, a.doc.start_ticks, a.generation);
                        self.track(&a);
                        a.health = a.health_spec.clone().map(HealthState::new);
                        if let Some(h) = &mut a.health {
                            h.started(now_ms());
                        }
                    }
                    _ => ended.push(id.clone()),
                },
                AgentState::Backoff => {
                    a.restart_at = Some(now_ms());
                }
                AgentState::Pending => to_launch.push(id.clone()),
                _ => {}
            }
            if let Ok(mut agents) = self.inner.agents.lock() {
                agents.insert(id.clone(), a);
            }
        }
        for id in ended {
            // ended while the daemon was down: recorded, then handled like any exit
            if let Ok(mut agents) = self.inner.agents.lock()
                && let Some(a) = agents.get_mut(&id)
            {
                a.doc.reason = Some("ended while the daemon was down".to_owned());
            }
            let generation = self
                .inner
                .agents
                .lock()
                .ok()
                .and_then(|a| a.get(&id).map(|a| a.generation))
                .unwrap_or(0);
            let _ = self.inner.notices.send(Notice::Exit {
                id: id.clone(),
                generation,
            });
        }
        for id in to_launch {
            let granted = match self
                .get(&id)
                .and_then(|d| d.allocation)
                .and_then(|a| a.parse::<AllocId>().ok())
            {
                Some(a) => {
                    matches!(self.engine().get(a).await, Ok(Lookup::Live(d)) if d.state == "granted")
                }
                None => false,
            };
            // a launch that cannot be recorded (a full disk) does not keep the daemon down
            if granted && let Err(error) = self.launch(&id).await {
                tracing::warn!(%error, agent = %id, "cannot launch a pending agent at start");
            }
        }
        self.restore_fleets(&loaded.fleets);
        Ok(())
    }
}
