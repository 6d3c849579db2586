//! Agents follow their node (`qm serve --etcd`). A spawn asked of any member goes to the
//! leader (the relay), whose ledger grants its allocation on some member's node (the pool's
//! strategy and the spec's `node_selector` choose); the leader writes the placement to etcd
//! (`qm_cluster::Placement`), and the member owning that node runs it: each member
//! reconciles what etcd places on its node with what its supervisor runs, as the kubelet does
//! (start what is placed here and not running, stop what runs here and is placed no more),
//! and reports each run under its lease.
//!
//! The leader reconciles the rest, twice a second: a run its member reports ended for good
//! gives its allocation back; a queued placement goes to the node its allocation is granted
//! on; a placement whose node is lost (the member's lease lapsed and the ledger marked the
//! node lost, its allocations `lost`) is placed again on another node when its restart policy
//! restarts it, and removed when not; one whose allocation was preempted or expired is
//! stopped. A member that finds its own lease lapsed stops its agents before it rejoins (no
//! agent runs twice); what is still placed on its node after that it starts again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use qm_api::{Answer, ApiError};
use qm_cluster::{Member, Placement, QUEUED, StopRequest};
use qm_core::AllocId;
use qm_engine::{Engine, Lookup};
use qm_proto::{AgentDoc, AgentSpec, AgentState, AllocationDoc};
use qm_supervisor::{AgentError, Supervisor};

/// How often each side reconciles.
const PERIOD: Duration = Duration::from_millis(500);

/// The cluster's placer: the API's [`qm_api::Placer`] and the loops behind it.
pub(crate) struct EtcdPlacer {
    member: Member,
    engine: Engine,
    /// The admin token's file (members share it): a fleet held by a member that does not lead
    /// asks the leader to place its members with it, read when needed (never kept).
    admin_token_file: std::path::PathBuf,
    /// The HTTP client for the leader (trusting `[cluster] ca_file`).
    http: ureq::Agent,
    /// One placement decided at a time (names are unique cluster-wide).
    deciding: tokio::sync::Mutex<()>,
}

fn etcd_error(e: &qm_cluster::ClusterError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unavailable",
        format!("the cluster's store: {e}"),
    )
}

/// The agent as placed, before (or without) its member's report.
fn placed_doc(p: &Placement, report: Option<&AgentDoc>) -> AgentDoc {
    if let Some(r) = report.filter(|r| r.spec.allocation.as_deref() == Some(&p.allocation)) {
        return r.clone();
    }
    let mut spec = p.spec.clone();
    spec.allocation = Some(p.allocation.clone());
    AgentDoc {
        id: p.name.clone(),
        name: p.name.clone(),
        state: AgentState::Pending,
        allocation: Some(p.allocation.clone()),
        health: "unknown".to_owned(),
        reason: Some(if p.queued() {
            "waiting for admission".to_owned()
        } else {
            format!("placed on node {:?}; its member starts it", p.node)
        }),
        node: (!p.queued()).then(|| p.node.clone()),
        placed: true,
        spec,
        ..AgentDoc::default()
    }
}

fn granted_node(doc: &AllocationDoc) -> Option<String> {
    (doc.state == "granted").then(|| doc.node.clone()).flatten()
}

impl EtcdPlacer {
    /// The placer of `member`, and its loops: the owner's on every member, the leader's
    /// while this member leads. A lost lease stops this member's agents (`agents`).
    pub(crate) fn start(
        member: Member,
        engine: Engine,
        agents: Supervisor,
        admin_token_file: std::path::PathBuf,
        http: ureq::Agent,
    ) -> Arc<Self> {
        let placer = Arc::new(EtcdPlacer {
            member: member.clone(),
            engine,
            admin_token_file,
            http,
            deciding: tokio::sync::Mutex::new(()),
        });
        agents.place_fleets_with(placer.clone());
        // placed runs this member stopped when it lost its lease: started again if still
        // placed here once it has rejoined
        let lease_stopped: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
        {
            let (agents, stopped) = (agents.clone(), lease_stopped.clone());
            member.on_lost(move || {
                let (agents, stopped) = (agents.clone(), stopped.clone());
                async move {
                    for a in agents.list().into_iter().filter(|a| a.state.is_live()) {
                        tracing::warn!(agent = %a.id, "stopping: this member lost its cluster lease");
                        if a.placed
                            && let (Some(alloc), Ok(mut s)) =
                                (a.spec.allocation.clone(), stopped.lock())
                        {
                            s.insert((a.name.clone(), alloc));
                        }
                        let _ = agents.stop(&a.id, Some(Duration::from_secs(1))).await;
                    }
                }
            });
        }
        tokio::spawn(share_learning(member.clone(), agents.clone()));
        tokio::spawn(own(member, agents, lease_stopped));
        tokio::spawn(lead(placer.clone()));
        placer
    }

    fn not_leading(&self) -> ApiError {
        let leader = self.member.leader_url().unwrap_or_else(|| "unknown".into());
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            format!("only the cluster's leader places agents; it answers at {leader}"),
        )
    }

    async fn place_spec(&self, spec: AgentSpec) -> Result<AgentDoc, ApiError> {
        if self.member.view().leading.is_none() {
            return Err(self.not_leading());
        }
        let mut problems = spec.problems("");
        if spec.pid.is_some() || spec.allocation.is_some() {
            problems.push(qm_proto::FieldProblem::new(
                "pid",
                "a placed agent is spawned on its node, never adopted",
            ));
        }
        let request = match spec
            .allocation_request()
            .into_request(self.engine.catalog())
        {
            Ok(r) => Some(r),
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        let Some(request) = request.filter(|_| problems.is_empty()) else {
            return Err(ApiError::invalid(problems));
        };
        let _one = self.deciding.lock().await;
        let placed = self.member.placements().await.map_err(|e| etcd_error(&e))?;
        if let Some(p) = placed.iter().find(|p| p.name == spec.name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "agent {:?} is placed on node {:?}; stop it first",
                    spec.name, p.node
                ),
            ));
        }
        let replay = self.engine.submit(request, false, None).await?;
        let Some(allocation) = replay.id else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the ledger gave no allocation id",
            ));
        };
        let node = serde_json::from_str::<AllocationDoc>(&replay.body)
            .ok()
            .as_ref()
            .and_then(granted_node)
            .unwrap_or_else(|| QUEUED.to_owned());
        let p = Placement {
            name: spec.name.clone(),
            node,
            allocation,
            spec,
            placed_at_ms: qm_proto::unix_ms(),
            moves: 0,
        };
        if let Err(e) = self.member.place(&p).await {
            self.release(&p.allocation).await;
            return Err(etcd_error(&e));
        }
        tracing::info!(agent = %p.name, node = %p.node, allocation = %p.allocation, "placed");
        Ok(placed_doc(&p, None))
    }

    async fn release(&self, allocation: &str) {
        if let Ok(id) = allocation.parse::<AllocId>() {
            let _ = self.engine.release(id).await;
        }
    }

    async fn stop_placed(
        &self,
        name: String,
        grace_s: Option<f64>,
    ) -> Result<Option<AgentDoc>, ApiError> {
        let find = || async {
            let placed = self.member.placements().await.map_err(|e| etcd_error(&e))?;
            Ok::<_, ApiError>(placed.into_iter().find(|p| p.name == name))
        };
        let Some(p) = find().await? else {
            return Ok(None);
        };
        self.member
            .request_stop(
                &name,
                &StopRequest {
                    allocation: p.allocation.clone(),
                    grace_s,
                },
            )
            .await
            .map_err(|e| etcd_error(&e))?;
        // answered once the run has ended (its member reported it, or the leader removed
        // the placement), or after its grace and ten seconds, as it stands then
        let grace = grace_s.or(p.spec.grace_s).unwrap_or(10.0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(grace + 10.0);
        let mut last = placed_doc(&p, None);
        while tokio::time::Instant::now() < deadline {
            let reports = self.member.reports().await.unwrap_or_default();
            if let Some(r) = reports
                .get(&name)
                .filter(|r| r.spec.allocation.as_deref() == Some(&p.allocation))
            {
                last = r.clone();
                if !r.state.is_live() {
                    return Ok(Some(last));
                }
            }
            match find().await? {
                Some(now) if now.allocation == p.allocation => {}
                _ => {
                    if last.state.is_live() {
                        last.state = AgentState::Stopped;
                        last.reason = Some("stopped on request".to_owned());
                    }
                    return Ok(Some(last));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Some(last))
    }

    async fn list_placed(&self) -> Result<Vec<AgentDoc>, ApiError> {
        let placed = self.member.placements().await.map_err(|e| etcd_error(&e))?;
        let reports = self.member.reports().await.map_err(|e| etcd_error(&e))?;
        Ok(placed
            .iter()
            .map(|p| placed_doc(p, reports.get(&p.name)))
            .collect())
    }

    /// One round of the leader's reconciliation; answers whether a placement waits on
    /// something no watch announces (its node's loss, a queued allocation's grant).
    async fn lead_once(&self) -> Result<bool, qm_cluster::ClusterError> {
        let view = self.member.view();
        if view.leading.is_none() {
            return Ok(false);
        }
        let placed = self.member.placements().await?;
        if placed.is_empty() {
            return Ok(false);
        }
        let mut pending = false;
        let reports = self.member.reports().await?;
        let stops = self.member.stop_requests().await?;
        let ready: BTreeMap<String, bool> = self
            .engine
            .nodes()
            .await
            .map(|ns| ns.into_iter().map(|n| (n.name, n.ready)).collect())
            .unwrap_or_default();
        for p in placed {
            let stop = stops.get(&p.name).filter(|s| s.allocation == p.allocation);
            let report = reports
                .get(&p.name)
                .filter(|r| r.spec.allocation.as_deref() == Some(&p.allocation));
            let alloc = match p.allocation.parse::<AllocId>() {
                Ok(id) => match self.engine.get(id).await {
                    Ok(Lookup::Live(d)) => Some(*d),
                    _ => None,
                },
                Err(_) => None,
            };
            if p.queued() {
                match alloc.as_ref().map(|a| (a.state.as_str(), granted_node(a))) {
                    _ if stop.is_some() => self.forget(&p, "stopped while queued").await?,
                    Some((_, Some(node))) => {
                        let to = Placement { node, ..p.clone() };
                        self.member.replace(&p, &to).await?;
                        tracing::info!(agent = %p.name, node = %to.node, "admitted and placed");
                    }
                    Some(("queued" | "pending", None)) => pending = true,
                    _ => self.forget(&p, "its allocation ended while queued").await?,
                }
                continue;
            }
            // ended for good on its member (its restart policy gave up, or it was stopped)
            if report.is_some_and(|r| !r.state.is_live()) {
                self.forget(&p, "its run ended").await?;
                continue;
            }
            let member_alive = view.members.contains_key(&p.node);
            let node_lost = !member_alive && ready.get(&p.node) != Some(&true);
            pending |= !member_alive && !node_lost;
            if node_lost {
                let restarts = p.spec.restart.as_deref() != Some("never");
                if stop.is_some() || !restarts {
                    self.forget(&p, "its node was lost").await?;
                } else {
                    self.place_again(&p).await?;
                }
                continue;
            }
            if stop.is_some() && !member_alive {
                // no member to stop it: its node will be lost, its allocation with it
                continue;
            }
            // preempted, expired or released in the ledger: its member stops it
            let live = alloc.as_ref().is_some_and(|a| a.state == "granted");
            if !live && stop.is_none() && member_alive {
                tracing::warn!(agent = %p.name, "its allocation is no longer granted: stopping it");
                self.member
                    .request_stop(
                        &p.name,
                        &StopRequest {
                            allocation: p.allocation.clone(),
                            grace_s: None,
                        },
                    )
                    .await?;
            }
        }
        Ok(pending)
    }

    /// Releases `p`'s allocation and removes it.
    async fn forget(&self, p: &Placement, why: &str) -> Result<(), qm_cluster::ClusterError> {
        self.release(&p.allocation).await;
        self.member.unplace(p).await?;
        tracing::info!(agent = %p.name, node = %p.node, why, "placement removed");
        Ok(())
    }

    /// Places `p` again (its node was lost): a new allocation, on another node or queued.
    async fn place_again(&self, p: &Placement) -> Result<(), qm_cluster::ClusterError> {
        let request = match p
            .spec
            .allocation_request()
            .into_request(self.engine.catalog())
        {
            Ok(r) => r,
            Err(_) => {
                return self
                    .forget(p, "its request no longer fits the catalog")
                    .await;
            }
        };
        self.release(&p.allocation).await;
        let replay = match self.engine.submit(request, false, None).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(agent = %p.name, error = %e, "cannot place again yet");
                return Ok(());
            }
        };
        let Some(allocation) = replay.id else {
            return Ok(());
        };
        let node = serde_json::from_str::<AllocationDoc>(&replay.body)
            .ok()
            .as_ref()
            .and_then(granted_node)
            .unwrap_or_else(|| QUEUED.to_owned());
        let to = Placement {
            node,
            allocation,
            moves: p.moves + 1,
            placed_at_ms: qm_proto::unix_ms(),
            ..p.clone()
        };
        if let Err(e) = self.member.replace(p, &to).await {
            self.release(&to.allocation).await;
            return Err(e);
        }
        tracing::warn!(agent = %p.name, from = %p.node, to = %to.node, "its node was lost: placed again");
        Ok(())
    }
}

impl std::fmt::Debug for EtcdPlacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdPlacer")
            .field("member", &self.member.name())
            .finish_non_exhaustive()
    }
}

impl EtcdPlacer {
    /// A fleet's member, placed: by this member when it leads, else by the leader, asked over
    /// HTTP with the admin token.
    async fn spawn_member(&self, spec: AgentSpec) -> Result<AgentDoc, AgentError> {
        if self.member.view().leading.is_some() {
            return self
                .place_spec(spec)
                .await
                .map_err(|e| AgentError::Spawn(e.0.detail.clone()));
        }
        let Some(leader) = self.member.leader_url() else {
            return Err(AgentError::Spawn("no leader is known yet".to_owned()));
        };
        let token = std::fs::read_to_string(&self.admin_token_file).map_err(|e| {
            AgentError::Spawn(format!(
                "cannot read the admin token file {}: {e}",
                self.admin_token_file.display()
            ))
        })?;
        let (url, bearer, body) = (
            format!("{}/v1/agents", leader.trim_end_matches('/')),
            format!("Bearer {}", token.trim()),
            qm_proto::to_json(&spec),
        );
        let agent = self.http.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let mut resp = agent
                .post(&url)
                .header("authorization", &bearer)
                .header("content-type", "application/json")
                .send(body)?;
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string()?;
            Ok::<_, ureq::Error>((status, text))
        })
        .await
        .map_err(|e| AgentError::Spawn(e.to_string()))?
        .map_err(|e| AgentError::Spawn(format!("the leader at {leader} did not answer: {e}")))?;
        match answer {
            (201 | 202, text) => serde_json::from_str(&text)
                .map_err(|e| AgentError::Spawn(format!("the leader's answer: {e}"))),
            (status, text) => Err(AgentError::Spawn(format!(
                "the leader refused ({status}): {text}"
            ))),
        }
    }

    /// The fleet's live members, placed or waiting.
    async fn fleet_members(&self, fleet: &str) -> Vec<AgentDoc> {
        let Ok(docs) = self.list_placed().await else {
            return Vec::new();
        };
        docs.into_iter()
            .filter(|d| {
                d.state.is_live()
                    && d.spec
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(qm_supervisor::FLEET_LABEL))
                        .is_some_and(|f| f == fleet)
            })
            .collect()
    }

    /// Asks for `name`'s run to stop, without waiting.
    async fn stop_member(&self, name: String) {
        let Ok(placed) = self.member.placements().await else {
            return;
        };
        if let Some(p) = placed.into_iter().find(|p| p.name == name) {
            let stop = StopRequest {
                allocation: p.allocation,
                grace_s: None,
            };
            let _ = self.member.request_stop(&name, &stop).await;
        }
    }
}

impl qm_supervisor::FleetMembers for EtcdPlacer {
    fn list(&self, fleet: &str) -> qm_supervisor::Answer<'_, Vec<AgentDoc>> {
        let fleet = fleet.to_owned();
        Box::pin(async move { self.fleet_members(&fleet).await })
    }

    fn spawn(&self, spec: AgentSpec) -> qm_supervisor::Answer<'_, Result<AgentDoc, AgentError>> {
        Box::pin(self.spawn_member(spec))
    }

    fn stop(&self, name: String) -> qm_supervisor::Answer<'_, ()> {
        Box::pin(self.stop_member(name))
    }
}

impl qm_api::Placer for EtcdPlacer {
    fn place(&self, spec: AgentSpec) -> Answer<'_, Result<AgentDoc, ApiError>> {
        Box::pin(self.place_spec(spec))
    }

    fn stop(
        &self,
        name: String,
        grace_s: Option<f64>,
    ) -> Answer<'_, Result<Option<AgentDoc>, ApiError>> {
        Box::pin(self.stop_placed(name, grace_s))
    }

    fn list(&self) -> Answer<'_, Result<Vec<AgentDoc>, ApiError>> {
        Box::pin(self.list_placed())
    }

    fn leads(&self) -> bool {
        self.member.view().leading.is_some()
    }
}

/// The leader's loop: reconciles the placements while this member leads; it reads etcd
/// when a placement, report or stop request changed (watched), when the members changed,
/// while a placement waits for its node to be found lost, and every 5 s regardless.
async fn lead(placer: Arc<EtcdPlacer>) {
    let changes = placer
        .member
        .watch_changes(&["agents/", "agent-status/", "agent-stop/"]);
    let mut last: Option<(BTreeSet<String>, tokio::time::Instant)> = None;
    let mut pending = false;
    loop {
        tokio::time::sleep(PERIOD).await;
        let view = placer.member.view();
        if view.leading.is_none() {
            last = None;
            continue;
        }
        let members: BTreeSet<String> = view.members.keys().cloned().collect();
        let due = match &last {
            None => true,
            Some((m, at)) => *m != members || at.elapsed() >= Duration::from_secs(5),
        };
        if !(changes.take() || due || pending) {
            continue;
        }
        last = Some((members, tokio::time::Instant::now()));
        match placer.lead_once().await {
            Ok(p) => pending = p,
            Err(e) => {
                pending = true;
                tracing::debug!(error = %e, "placements: a round failed");
            }
        }
    }
}

/// What a member last reported of a run (reported again only when it changes, or the lease
/// it was reported under is gone).
type Reported = BTreeMap<String, (i64, AgentDoc)>;

/// Every member's loop: runs what is placed on its node, stops what is placed here no more,
/// and reports its runs.
/// How often a member publishes what it learned of its agents' sizes and reads the others'.
const SHARE_LEARNING_EVERY: Duration = Duration::from_secs(5);

/// Shares what each member learned of its agents' sizes, so that templates (and the `learned`
/// strategy, wherever the leader decides) count every member's agents: this member's
/// templates go to `<prefix>/learned/<member>` under its lease when they change (or its lease
/// does), and the other members' are read in when a watch says some changed.
async fn share_learning(member: Member, agents: Supervisor) {
    type Learned = qm_cluster::Learned<qm_recommend::Recommendation>;
    let changes = member.watch_changes(&["learned/"]);
    // what was last published, and under which lease (a new lease lost the key)
    let mut published: Option<(Learned, Option<i64>)> = None;
    let mut stale = true;
    loop {
        tokio::time::sleep(SHARE_LEARNING_EVERY).await;
        let mine = Learned {
            member: member.name().to_owned(),
            templates: agents.local_templates(),
        };
        let lease = member.view().lease;
        let due = published
            .as_ref()
            .is_none_or(|(p, l)| *p != mine || *l != lease);
        if due && !mine.templates.is_empty() {
            match member.publish_learned(&mine).await {
                Ok(()) => published = Some((mine, lease)),
                Err(e) => tracing::debug!(error = %e, "learned sizes: cannot publish"),
            }
        }
        // the others' are read only when some changed (or the last read failed)
        if !(changes.take() || stale) {
            continue;
        }
        match member
            .learned_by_others::<qm_recommend::Recommendation>()
            .await
        {
            Ok(others) => {
                stale = false;
                let mut peers: BTreeMap<String, Vec<_>> = BTreeMap::new();
                for l in others {
                    for (target, recs) in l.templates {
                        peers.entry(target).or_default().extend(recs);
                    }
                }
                agents.set_peer_templates(peers);
            }
            Err(e) => {
                stale = true;
                tracing::debug!(error = %e, "learned sizes: cannot read the others'");
            }
        }
    }
}

async fn own(
    member: Member,
    agents: Supervisor,
    lease_stopped: Arc<Mutex<BTreeSet<(String, String)>>>,
) {
    let node = agents.engine().node_name().to_owned();
    let changes = member.watch_changes(&[&format!("agents/{node}/"), "agent-stop/"]);
    let mut reported = Reported::new();
    let mut wanted: Option<(Wanted, tokio::time::Instant)> = None;
    loop {
        tokio::time::sleep(PERIOD).await;
        // etcd is read when what it places here (or a stop) changed, and every 10 s
        let stale = wanted
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() >= Duration::from_secs(10));
        if changes.take() || stale {
            let read = async {
                Ok::<_, qm_cluster::ClusterError>((
                    member.placements_on(&node).await?,
                    member.stop_requests().await?,
                ))
            };
            match read.await {
                Ok(w) => wanted = Some((w, tokio::time::Instant::now())),
                Err(e) => {
                    tracing::debug!(error = %e, "placed agents: cannot read etcd");
                    wanted = None;
                    continue;
                }
            }
        }
        let Some((w, _)) = &wanted else { continue };
        if let Err(e) = own_once(&member, &agents, &lease_stopped, &mut reported, w).await {
            tracing::debug!(error = %e, "placed agents: a round failed");
        }
    }
}

/// What etcd places on this member's node, and the stop requests.
type Wanted = (Vec<Placement>, BTreeMap<String, StopRequest>);

async fn own_once(
    member: &Member,
    agents: &Supervisor,
    lease_stopped: &Mutex<BTreeSet<(String, String)>>,
    reported: &mut Reported,
    (mine, stops): &Wanted,
) -> Result<(), qm_cluster::ClusterError> {
    let Some(lease) = member.view().lease else {
        return Ok(());
    };
    let here: BTreeMap<String, AgentDoc> = agents
        .list()
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    for p in mine {
        let stop = stops.get(&p.name).filter(|s| s.allocation == p.allocation);
        let ours = here
            .get(&p.name)
            .filter(|d| d.placed && d.spec.allocation.as_deref() == Some(&p.allocation));
        match (ours, here.get(&p.name)) {
            (Some(d), _) if d.state.is_live() => {
                if let Some(s) = stop {
                    let grace = s.grace_s.map(Duration::from_secs_f64);
                    let (agents, name) = (agents.clone(), p.name.clone());
                    tokio::spawn(async move { agents.stop(&name, grace).await });
                }
            }
            (Some(_), _) => {
                let again = lease_stopped
                    .lock()
                    .map(|mut s| s.remove(&(p.name.clone(), p.allocation.clone())))
                    .unwrap_or(false);
                if again && stop.is_none() {
                    start(agents, member, p).await;
                }
            }
            // a live agent of that name that is not this placement's run: an older
            // placement's (stopped below) or this member's own (left alone)
            (None, Some(d)) if d.state.is_live() => {}
            (None, _) => {
                if stop.is_none() {
                    start(agents, member, p).await;
                }
            }
        }
    }
    // runs placed here no more (moved while this member was away, or stopped)
    let placed_here: BTreeSet<(&str, &str)> = mine
        .iter()
        .map(|p| (p.name.as_str(), p.allocation.as_str()))
        .collect();
    for d in here.values().filter(|d| d.placed && d.state.is_live()) {
        let key = (d.name.as_str(), d.spec.allocation.as_deref().unwrap_or(""));
        if !placed_here.contains(&key) {
            tracing::warn!(agent = %d.name, "placed here no more: stopping it");
            let (agents, name) = (agents.clone(), d.name.clone());
            tokio::spawn(async move { agents.stop(&name, None).await });
        }
    }
    // reports: what changed, under this lease
    for d in agents.list().into_iter().filter(|d| d.placed) {
        if !placed_here.contains(&(d.name.as_str(), d.spec.allocation.as_deref().unwrap_or(""))) {
            continue;
        }
        let same = reported
            .get(&d.name)
            .is_some_and(|(l, r)| *l == lease && same_run(r, &d));
        if !same {
            member.report(&d).await?;
            reported.insert(d.name.clone(), (lease, d));
        }
    }
    reported.retain(|name, _| mine.iter().any(|p| &p.name == name));
    Ok(())
}

/// Whether a report still says what `now` would.
fn same_run(a: &AgentDoc, now: &AgentDoc) -> bool {
    (
        a.state,
        a.pid,
        a.restarts,
        &a.health,
        &a.reason,
        &a.spec.allocation,
    ) == (
        now.state,
        now.pid,
        now.restarts,
        &now.health,
        &now.reason,
        &now.spec.allocation,
    )
}

/// Starts `p` here; a start that fails is reported (the leader then gives the allocation
/// back and the user sees why).
async fn start(agents: &Supervisor, member: &Member, p: &Placement) {
    match agents
        .run_placed(p.spec.clone(), p.allocation.clone())
        .await
    {
        Ok(d) => tracing::info!(agent = %d.name, state = %d.state, "started as placed"),
        Err(e) => {
            tracing::warn!(agent = %p.name, error = %e, "cannot start a placed agent");
            let mut doc = placed_doc(p, None);
            doc.state = AgentState::Failed;
            doc.reason = Some(format!("its member could not start it: {e}"));
            doc.node = Some(p.node.clone());
            let _ = member.report(&doc).await;
        }
    }
}
