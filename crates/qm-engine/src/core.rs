//! The engine thread: owns the ledger, runs each command, records the resulting events in one
//! store batch, and answers once that batch is durable. Reads answer from memory at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use qm_core::{
    AllocId, Decision, Event, Ledger, LiveError, NodeError, NodeSpec, PoolError, PoolSpec, Request,
    ResourceCatalog, SubmitError, Timestamp,
};
use qm_proto::{
    AllocationDoc, EventDoc, FieldProblem, NodeDoc, PoolDoc, Replay, STATE_VERSION, StateDoc,
    Stored, StoredNode, render_resources, to_json,
};
use qm_store::{Batch, Op, Store};
use tokio::sync::oneshot;

use crate::events::EventHub;
use crate::metrics::{Counters, NodeAmounts, Outcome, Snapshot};
use crate::persist;
use crate::{EngineConfig, EngineError, Lookup, Msg, StartError};

mod recover;

pub(crate) use recover::StoreHealth;

/// Where a node came from and how it stays alive.
#[derive(Debug, Clone)]
struct NodeMeta {
    kind: String,
    heartbeat_ttl_ms: Option<u64>,
    last_heartbeat: Timestamp,
    /// What a reported node said it uses, with its last heartbeat.
    usage: Option<std::collections::BTreeMap<String, String>>,
}

pub(crate) struct Core {
    ledger: Ledger,
    store: Store,
    catalog: ResourceCatalog,
    local: String,
    nodes: HashMap<String, NodeMeta>,
    watchers: HashMap<AllocId, Vec<oneshot::Sender<()>>>,
    replays: HashMap<String, Replay>,
    counters: Counters,
    hub: Arc<EventHub>,
    /// Events of the change being recorded, published once it is durable.
    pending: Vec<EventDoc>,
    strategy: String,
    ledger_config: qm_core::LedgerConfig,
    local_spec: NodeSpec,
    retention: Duration,
    last_prune: Instant,
    /// The audit entry of the request whose command runs now; its first commit takes it.
    pub(crate) audit: Option<Arc<crate::audit::Pending>>,
    /// What commits report: a failed change (memory to re-read), a full or failing disk.
    health: Arc<StoreHealth>,
    last_probe: Instant,
    /// A probe failed: memory is re-read once one commits (not before: a cluster member
    /// that does not lead would re-read its state every second for nothing).
    resync_on_recovery: bool,
    /// The local node's registration, when the disk was full at start (redone once it is not).
    local_pending: Option<NodeSpec>,
    /// What "now" is.
    clock: Arc<dyn crate::clock::Clock>,
}

fn field(field: &str, message: impl Into<String>) -> EngineError {
    EngineError::Invalid(vec![FieldProblem {
        field: field.to_owned(),
        message: message.into(),
    }])
}

fn store_err(e: qm_store::StoreError) -> EngineError {
    e.into()
}

impl Core {
    pub(crate) fn start(
        config: &EngineConfig,
        store: Store,
        hub: Arc<EventHub>,
    ) -> Result<Self, StartError> {
        let loaded = store.load()?;
        let (snapshot, kinds) =
            persist::snapshot(&loaded, &config.catalog).map_err(StartError::State)?;
        let policy = qm_sched::Framework::preset(&config.strategy)
            .map_err(|e| StartError::Strategy(e.to_string()))?;
        let ledger = Ledger::restore(Box::new(policy), config.ledger.clone(), snapshot)
            .map_err(|e| StartError::State(e.to_string()))?;
        let t = config.clock.now();
        let nodes = kinds
            .into_iter()
            .map(|(name, kind, ttl)| {
                (
                    name,
                    NodeMeta {
                        kind,
                        heartbeat_ttl_ms: ttl,
                        last_heartbeat: t,
                        usage: None,
                    },
                )
            })
            .collect();
        let mut core = Self {
            ledger,
            store,
            catalog: config.catalog.clone(),
            local: config.node_name.clone(),
            nodes,
            watchers: HashMap::new(),
            replays: HashMap::new(),
            counters: Counters::default(),
            hub,
            pending: Vec::new(),
            strategy: config.strategy.clone(),
            ledger_config: config.ledger.clone(),
            local_spec: NodeSpec::new(&config.node_name, config.capacity.clone()),
            retention: config.retention,
            last_prune: Instant::now(),
            audit: None,
            health: Arc::new(StoreHealth::default()),
            last_probe: Instant::now(),
            resync_on_recovery: false,
            local_pending: None,
            clock: Arc::clone(&config.clock),
        };
        let mut spec = NodeSpec::new(&config.node_name, config.capacity.clone());
        spec.allocatable = config.allocatable.clone();
        spec.labels = config.labels.clone();
        spec.labels
            .insert(qm_core::NODE_LABEL.to_owned(), config.node_name.clone());
        spec.validate()
            .map_err(|e| StartError::Node(e.to_string()))?;
        let (expired, granted, batch) = core.register_local(t, spec.clone())?;
        if let Err(e) = core.store.commit_wait(batch) {
            // a disk that cannot take the start's changes: serve what is stored, refuse
            // writes, and register the node once a write goes through again
            if matches!(e, qm_store::StoreError::Replica { .. }) {
                tracing::info!(error = %e, "this member does not lead: its ledger serves what it last read and takes no writes (the leader's does)");
            } else {
                tracing::error!(error = %e, "cannot record the start (the disk is full or failing): serving reads, refusing writes until a write succeeds");
            }
            core.health.failed(&e);
            core.resync();
            core.local_pending = Some(spec);
            return Ok(core);
        }
        let events = std::mem::take(&mut core.pending);
        core.hub.publish(events);
        tracing::info!(
            live = core.ledger.state().n_live(),
            queued = core.ledger.state().n_queued(),
            expired,
            granted,
            strategy = %config.strategy,
            "state loaded"
        );
        Ok(core)
    }

    /// Registers (or updates and readies) the local node, expires what lapsed and drains the
    /// queues: what the daemon does at start. Answers the counts and the batch recording it.
    fn register_local(
        &mut self,
        t: Timestamp,
        spec: NodeSpec,
    ) -> Result<(usize, usize, Batch), StartError> {
        let name = spec.name.clone();
        let exists = self.ledger.state().node_by_name(&name).is_some();
        let result = if exists {
            self.ledger
                .update_node(t, spec)
                .and_then(|()| self.ledger.set_node_ready(t, &name, true))
        } else {
            self.ledger.register_node(t, spec).map(|_| ())
        };
        match result {
            Ok(()) => {}
            Err(NodeError::BelowAllocated { missing, .. }) => tracing::warn!(
                node = %name,
                missing = ?missing,
                "the local node's new capacity is below what it has handed out; keeping the stored capacity"
            ),
            Err(e) => return Err(StartError::Node(e.to_string())),
        }
        self.nodes.insert(
            name.clone(),
            NodeMeta {
                kind: "local".to_owned(),
                heartbeat_ttl_ms: None,
                last_heartbeat: t,
                usage: None,
            },
        );
        let expired = self.ledger.expire(t);
        let granted = self.ledger.drain(t);
        let mut batch = Batch::default();
        for op in self.changes(&[&name]) {
            batch.ops.push(op);
        }
        Ok((expired, granted, batch))
    }

    pub(crate) fn run(mut self, rx: &mpsc::Receiver<Msg>, tick: Duration) {
        let mut last_tick = Instant::now();
        loop {
            match rx.recv_timeout(tick) {
                Ok(Msg::Job(job)) => {
                    // an answer to a failed write went out before its caller could retry:
                    // memory is re-read before the next command, so a retry sees the disk
                    if self.health.take_diverged() {
                        self.resync();
                    }
                    job(&mut self);
                }
                Ok(Msg::Stop(done)) => {
                    let _ = self.store.commit_wait(Batch::default());
                    let _ = done.send(());
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if last_tick.elapsed() >= tick {
                last_tick = Instant::now();
                self.tick();
            }
            // a change that did not commit left memory ahead of the disk: re-read it
            if self.health.take_diverged() {
                self.resync();
            }
        }
    }

    /// Lease expiry, holds for waiting requests, heartbeat deadlines; while the disk refuses
    /// writes, only a probe for when it takes them again.
    fn tick(&mut self) {
        if self.health.degraded() {
            self.probe();
            return;
        }
        let t = self.clock.now();
        if self.last_prune.elapsed() >= Duration::from_secs(600) {
            self.last_prune = Instant::now();
            let keep_ms = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
            let before_ms = i64::try_from(t.as_millis().saturating_sub(keep_ms)).unwrap_or(0);
            self.store.commit(
                Batch::of(vec![Op::Prune { before_ms }]),
                Box::new(|r| {
                    if let Err(e) = r {
                        tracing::warn!(%e, "cannot prune ended allocations");
                    }
                }),
            );
        }
        let late: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, m)| {
                m.heartbeat_ttl_ms
                    .is_some_and(|ttl| t.millis_since(m.last_heartbeat) > ttl)
            })
            .filter(|(name, _)| {
                self.ledger
                    .state()
                    .node_by_name(name)
                    .is_some_and(|(_, n)| n.ready())
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &late {
            if let Ok(n) = self.ledger.lose_node(t, name) {
                tracing::warn!(node = %name, lost = n, "node missed its heartbeat");
            }
        }
        self.ledger.expire(t);
        if self.ledger.state().n_queued() > 0 {
            self.ledger.drain(t);
        }
        if !self.ledger.events().is_empty() {
            let names: Vec<&str> = late.iter().map(String::as_str).collect();
            let ops = self.changes(&names);
            let events = std::mem::take(&mut self.pending);
            let hub = Arc::clone(&self.hub);
            let health = Arc::clone(&self.health);
            self.store.commit(
                Batch::of(ops),
                Box::new(move |r| match r {
                    Ok(()) => hub.publish(events),
                    Err(e) => {
                        tracing::error!(%e, "cannot persist timer changes");
                        health.failed(&e);
                    }
                }),
            );
        }
    }

    /// Takes the ledger's events: notifies watchers and returns the store operations
    /// recording them, plus the current records of the nodes `also` names.
    fn changes(&mut self, also: &[&str]) -> Vec<Op> {
        self.changes_for(also, None).0
    }

    /// [`Core::changes`], also giving the latest document of allocation `want` if an event
    /// touched it.
    fn changes_for(
        &mut self,
        also: &[&str],
        want: Option<AllocId>,
    ) -> (Vec<Op>, Option<AllocationDoc>) {
        let events = self.ledger.take_events();
        let t = self.clock.now();
        let st = self.ledger.state();
        self.pending
            .extend(events.iter().filter_map(|e| EventDoc::of(e, st, t)));
        for e in &events {
            let id = match e {
                Event::Granted { id, .. } => Some(*id),
                Event::Ended(a) => Some(a.id()),
                _ => None,
            };
            if let Some(ws) = id.and_then(|id| self.watchers.remove(&id)) {
                for w in ws {
                    let _ = w.send(());
                }
            }
        }
        let node_op = |name: &str| self.node_op(name);
        let mut found = None;
        let mut ops = persist::ops_for(
            &events,
            &self.ledger,
            &self.catalog,
            &node_op,
            want,
            &mut found,
        );
        for name in also {
            if let Some(op) = self.node_op(name) {
                ops.push(op);
            }
        }
        (ops, found)
    }

    fn node_doc(&self, name: &str) -> Option<NodeDoc> {
        let (_, node) = self.ledger.state().node_by_name(name)?;
        let meta = self.nodes.get(name);
        let kind = meta.map_or("reported", |m| m.kind.as_str());
        let mut doc = NodeDoc::of(node, kind, &self.catalog);
        if let Some(usage) = meta.and_then(|m| m.usage.clone()) {
            doc.usage = Some(usage);
        }
        Some(doc)
    }

    fn node_op(&self, name: &str) -> Option<Op> {
        let doc = self.node_doc(name)?;
        let ttl = self.nodes.get(name).and_then(|m| m.heartbeat_ttl_ms);
        Some(Op::PutNode {
            name: name.to_owned(),
            body: to_json(&StoredNode {
                doc,
                heartbeat_ttl_ms: ttl,
            }),
        })
    }

    fn pool_op(&self, name: &str) -> Option<Op> {
        let st = self.ledger.state();
        let (_, pool) = st.pool_by_name(name)?;
        let doc = PoolDoc::of(pool, st.total_allocatable(), &self.catalog);
        Some(Op::PutPool {
            name: name.to_owned(),
            body: to_json(&doc),
        })
    }

    /// Commits `ops` and, once durable, sends `reply` (or the store's error) on `tx`.
    fn commit<R: Send + 'static>(
        &mut self,
        ops: Vec<Op>,
        reply: R,
        tx: oneshot::Sender<Result<R, EngineError>>,
    ) {
        let events = std::mem::take(&mut self.pending);
        let hub = Arc::clone(&self.hub);
        let health = Arc::clone(&self.health);
        let mut batch = Batch::of(ops);
        // A change carries its request's audit entry; a barrier (no change) does not.
        let audit = match &self.audit {
            Some(p) if !batch.is_empty() && crate::audit::attach_from(p, &mut batch) => {
                Some(Arc::clone(p))
            }
            _ => None,
        };
        self.store.commit(
            batch,
            Box::new(move |r| {
                if let Some(p) = audit {
                    p.committed(r.is_ok());
                }
                if let Err(e) = &r {
                    health.failed(e);
                }
                if r.is_ok() && !events.is_empty() {
                    hub.publish(events);
                }
                let _ = tx.send(r.map(|()| reply).map_err(store_err));
            }),
        );
    }

    /// A live allocation's document.
    fn doc(&self, id: AllocId) -> Option<AllocationDoc> {
        let st = self.ledger.state();
        st.alloc(id)
            .map(|a| AllocationDoc::of(a, st, &self.catalog))
    }

    pub(crate) fn submit(
        &mut self,
        req: Request,
        dry_run: bool,
        key: Option<String>,
        tx: oneshot::Sender<Result<Replay, EngineError>>,
    ) {
        if let Some(k) = &key {
            let found = match self.replays.get(k) {
                Some(r) => Some(r.clone()),
                None => match self.store.idempotent(k) {
                    Ok(body) => body.and_then(|b| qm_proto::from_json::<Replay>(&b).ok()),
                    Err(e) => {
                        let _ = tx.send(Err(store_err(e)));
                        return;
                    }
                },
            };
            if let Some(r) = found {
                let _ = tx.send(Ok(r));
                return;
            }
        }
        let t = self.clock.now();
        if dry_run {
            let _ = tx.send(self.dry_run(t, req));
            return;
        }
        if let Some(e) = self.refuse_write() {
            let _ = tx.send(Err(e));
            return;
        }
        let started = Instant::now();
        let result = self.ledger.submit(t, req);
        let took = started.elapsed();
        let submitted = match result {
            Ok(s) => s,
            Err(e) => {
                let outcome = if matches!(e, SubmitError::Insufficient(_)) {
                    Outcome::Refused
                } else {
                    Outcome::Invalid
                };
                self.counters.decided(outcome, took, 0);
                let _ = tx.send(Err(self.submit_error(e)));
                return;
            }
        };
        match &submitted.decision {
            Decision::Granted { preempted, .. } => {
                self.counters
                    .decided(Outcome::Granted, took, preempted.len())
            }
            Decision::Queued { .. } => self.counters.decided(Outcome::Queued, took, 0),
        }
        let Some(id) = submitted.id else { return };
        let (mut ops, doc) = self.changes_for(&[], Some(id));
        let Some(doc) = doc else { return };
        let (status, preempted) = match &submitted.decision {
            Decision::Granted { preempted, .. } => {
                (201, preempted.iter().map(ToString::to_string).collect())
            }
            Decision::Queued { .. } => (202, Vec::new()),
        };
        if let Some(p) = &self.audit {
            p.answer(status);
        }
        let replay = Replay {
            status,
            id: Some(doc.id.clone()),
            body: qm_proto::allocation_reply(&doc, &preempted),
        };
        if let Some(k) = key {
            let at_ms = i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
            ops.push(Op::PutIdempotent {
                key: k.clone(),
                body: to_json(&replay),
                at_ms,
            });
            // The store keeps every key; memory keeps the recent ones.
            if self.replays.len() >= 100_000 {
                self.replays.clear();
            }
            self.replays.insert(k, replay.clone());
        }
        self.commit(ops, replay, tx);
    }

    fn dry_run(&self, t: Timestamp, req: Request) -> Result<Replay, EngineError> {
        let st = self.ledger.state();
        match self.ledger.dry_run(t, req.clone()) {
            Ok(s) => {
                let (status, state, node, preempted) = match &s.decision {
                    Decision::Granted { node, preempted } => (
                        201,
                        "granted",
                        Some(st.node_name(*node).to_owned()),
                        preempted.iter().map(ToString::to_string).collect(),
                    ),
                    Decision::Queued { .. } => (202, "queued", None, Vec::new()),
                };
                let body = qm_proto::dry_run_reply(&req, state, node, &preempted, &self.catalog);
                Ok(Replay {
                    status,
                    id: None,
                    body,
                })
            }
            Err(e) => Err(self.submit_error(e)),
        }
    }

    fn submit_error(&self, e: SubmitError) -> EngineError {
        match e {
            SubmitError::Invalid(v) => EngineError::Invalid(
                v.0.into_iter()
                    .map(|f| FieldProblem {
                        field: f.field,
                        message: f.message,
                    })
                    .collect(),
            ),
            SubmitError::UnknownPool(p) => field("pool", format!("no pool named {p:?}")),
            SubmitError::Insufficient(s) => {
                let st = self.ledger.state();
                let missing = render_resources(&self.catalog, &s.missing);
                let what = match s.reason {
                    qm_core::ShortfallReason::PoolLimit => {
                        "the pool's limit would be exceeded".to_owned()
                    }
                    qm_core::ShortfallReason::NoEligibleNode => {
                        "no ready node matches the request".to_owned()
                    }
                    qm_core::ShortfallReason::NodeHeld => format!(
                        "node {} is held for a request that has waited longer",
                        s.node.map_or("?", |n| st.node_name(n))
                    ),
                    qm_core::ShortfallReason::Topology => {
                        "nodes have room, but its spread or affinity rules allow none of them"
                            .to_owned()
                    }
                    qm_core::ShortfallReason::Capacity => format!(
                        "no node has room; the closest, {}, lacks {}",
                        s.node.map_or("?", |n| st.node_name(n)),
                        missing
                            .iter()
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                EngineError::Insufficient {
                    detail: format!("insufficient resources: {what}"),
                    shortfall: missing,
                }
            }
            SubmitError::Full(n) => {
                EngineError::Conflict(format!("the ledger is full ({n} live allocations)"))
            }
        }
    }

    pub(crate) fn get(&mut self, id: AllocId, tx: oneshot::Sender<Lookup>) {
        if let Some(doc) = self.doc(id) {
            let _ = tx.send(Lookup::Live(Box::new(doc)));
            return;
        }
        self.store.commit(
            Batch::default(),
            Box::new(move |_| {
                let _ = tx.send(Lookup::NotLive);
            }),
        );
    }

    pub(crate) fn watch(
        &mut self,
        id: AllocId,
        tx: oneshot::Sender<Option<oneshot::Receiver<()>>>,
    ) {
        let queued = self
            .ledger
            .state()
            .alloc(id)
            .is_some_and(|a| a.state() == qm_core::AllocState::Queued);
        if !queued {
            let _ = tx.send(None);
            return;
        }
        let (wtx, wrx) = oneshot::channel();
        self.watchers.entry(id).or_default().push(wtx);
        let _ = tx.send(Some(wrx));
    }

    pub(crate) fn barrier(&mut self, tx: oneshot::Sender<Result<(), EngineError>>) {
        self.commit(Vec::new(), (), tx);
    }

    pub(crate) fn release(
        &mut self,
        id: AllocId,
        tx: oneshot::Sender<Result<Option<AllocationDoc>, EngineError>>,
    ) {
        if let Some(e) = self.refuse_write() {
            let _ = tx.send(Err(e));
            return;
        }
        let t = self.clock.now();
        if self.ledger.release(t, id).is_none() {
            // Not live: answer once earlier writes are durable, so the store has its end.
            self.commit(Vec::new(), None, tx);
            return;
        }
        let (ops, doc) = self.changes_for(&[], Some(id));
        self.commit(ops, doc, tx);
    }

    pub(crate) fn evict(
        &mut self,
        id: AllocId,
        reason: &str,
        tx: oneshot::Sender<Result<Option<AllocationDoc>, EngineError>>,
    ) {
        if let Some(e) = self.refuse_write() {
            let _ = tx.send(Err(e));
            return;
        }
        let t = self.clock.now();
        if self.ledger.evict(t, id, reason).is_err() {
            // not live (or only queued): nothing to evict
            self.commit(Vec::new(), None, tx);
            return;
        }
        let (ops, doc) = self.changes_for(&[], Some(id));
        self.commit(ops, doc, tx);
    }

    pub(crate) fn renew(
        &mut self,
        id: AllocId,
        ttl_ms: Option<u64>,
        tx: oneshot::Sender<Result<AllocationDoc, EngineError>>,
    ) {
        if let Some(e) = self.refuse_write() {
            let _ = tx.send(Err(e));
            return;
        }
        let t = self.clock.now();
        match self.ledger.renew(t, id, ttl_ms) {
            Ok(_) => {
                let Some(alloc) = self.ledger.state().alloc(id) else {
                    return;
                };
                let (row, doc) = persist::row(alloc, &self.ledger, &self.catalog);
                let mut ops = self.changes(&[]);
                ops.push(Op::PutAllocation(row));
                self.commit(ops, doc, tx);
            }
            Err(LiveError::NotLive(_)) => {
                let _ = tx.send(Err(EngineError::NotFound(format!(
                    "allocation {id} is not live"
                ))));
            }
            Err(LiveError::NotGranted(_)) => {
                let _ = tx.send(Err(EngineError::Conflict(format!(
                    "allocation {id} is queued; only grants have leases"
                ))));
            }
            Err(LiveError::NoLease(_)) => {
                // the request is well formed; the allocation's state refuses it
                let _ = tx.send(Err(EngineError::Conflict(format!(
                    "allocation {id} has no lease; give ttl_s to start one"
                ))));
            }
            Err(LiveError::ZeroTtl) => {
                let _ = tx.send(Err(field("ttl_s", "must be positive")));
            }
        }
    }

    /// Resizes a grant in place (`Ledger::resize`), durably.
    pub(crate) fn resize(
        &mut self,
        id: AllocId,
        resources: qm_core::Resources,
        limits: Option<qm_core::Resources>,
        tx: oneshot::Sender<Result<AllocationDoc, EngineError>>,
    ) {
        if let Some(e) = self.refuse_write() {
            let _ = tx.send(Err(e));
            return;
        }
        match self.ledger.resize(id, resources, limits) {
            Ok(()) => {
                let Some(alloc) = self.ledger.state().alloc(id) else {
                    return;
                };
                let (row, doc) = persist::row(alloc, &self.ledger, &self.catalog);
                let mut ops = self.changes(&[]);
                ops.push(Op::PutAllocation(row));
                if let Some(n) = doc.node.as_deref().and_then(|n| self.node_op(n)) {
                    ops.push(n);
                }
                self.commit(ops, doc, tx);
            }
            Err(qm_core::ResizeError::NotLive(_)) => {
                let _ = tx.send(Err(EngineError::NotFound(format!(
                    "allocation {id} is not live"
                ))));
            }
            Err(qm_core::ResizeError::NotGranted(_)) => {
                let _ = tx.send(Err(EngineError::Conflict(format!(
                    "allocation {id} is queued; only grants are resized"
                ))));
            }
            Err(qm_core::ResizeError::LimitBelowRequest) => {
                let _ = tx.send(Err(field("limits", "a limit is below its request")));
            }
            Err(qm_core::ResizeError::Short(missing)) => {
                let missing = render_resources(&self.catalog, &missing);
                let _ = tx.send(Err(EngineError::Conflict(format!(
                    "allocation {id} cannot grow: its node or pool lacks {}",
                    missing
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))));
            }
        }
    }

    pub(crate) fn metrics(&self) -> Snapshot {
        let st = self.ledger.state();
        let nodes = st
            .nodes()
            .map(|(_, n)| NodeAmounts {
                node: n.name().to_owned(),
                ready: n.ready(),
                resources: self
                    .catalog
                    .ids()
                    .map(|r| {
                        (
                            self.catalog.name(r).to_owned(),
                            n.allocatable().get(r),
                            n.allocated().get(r),
                        )
                    })
                    .filter(|(_, a, b)| *a > 0 || *b > 0)
                    .collect(),
            })
            .collect();
        let pools = st
            .pools()
            .map(|(_, p)| {
                (
                    p.name().to_owned(),
                    p.n_queued(),
                    p.allocated().dominant_share(st.total_allocatable()),
                )
            })
            .collect();
        let ws = self.store.stats();
        Snapshot {
            counters: self.counters.clone(),
            nodes,
            pools,
            live_granted: st.n_live() - st.n_queued(),
            live_queued: st.n_queued(),
            store_transactions: ws.transactions,
            store_batches: ws.batches,
        }
    }

    /// The whole state as a document.
    pub(crate) fn export(&self) -> StateDoc {
        let st = self.ledger.state();
        let (next_seq, next_grant) = self.ledger.counters();
        StateDoc {
            version: STATE_VERSION,
            next_seq,
            next_grant,
            nodes: st
                .nodes()
                .filter_map(|(_, n)| {
                    let doc = self.node_doc(n.name())?;
                    let ttl = self.nodes.get(n.name()).and_then(|m| m.heartbeat_ttl_ms);
                    Some(StoredNode {
                        doc,
                        heartbeat_ttl_ms: ttl,
                    })
                })
                .collect(),
            pools: self.pools(),
            allocations: st
                .allocations()
                .map(|a| Stored::of(a, st, &self.catalog))
                .collect(),
            agents: Vec::new(),
            fleets: Vec::new(),
            imported: None,
        }
    }

    /// Replaces the whole state with `doc` after checking all of it, or changes nothing.
    pub(crate) fn import(
        &mut self,
        doc: &StateDoc,
        tx: oneshot::Sender<Result<StateDoc, EngineError>>,
    ) {
        if let Some(e) = self.refuse_write() {
            let _ = tx.send(Err(e));
            return;
        }
        let invalid = |m: String| {
            EngineError::Invalid(vec![FieldProblem {
                field: "state".to_owned(),
                message: m,
            }])
        };
        let built = persist::snapshot_of(doc, &self.catalog).and_then(|(snap, kinds)| {
            let policy = qm_sched::Framework::preset(&self.strategy).map_err(|e| e.to_string())?;
            let ledger = Ledger::restore(Box::new(policy), self.ledger_config.clone(), snap)
                .map_err(|e| e.to_string())?;
            Ok((ledger, kinds))
        });
        let (mut ledger, kinds) = match built {
            Ok(b) => b,
            Err(m) => {
                let _ = tx.send(Err(invalid(m)));
                return;
            }
        };
        let t = self.clock.now();
        if ledger.state().node_by_name(&self.local).is_none()
            && let Err(e) = ledger.register_node(t, self.local_spec.clone())
        {
            let _ = tx.send(Err(invalid(format!("the local node cannot be kept: {e}"))));
            return;
        }
        ledger.expire(t);
        ledger.drain(t);
        ledger.clear_events();
        self.ledger = ledger;
        self.nodes = kinds
            .into_iter()
            .map(|(name, kind, ttl)| {
                (
                    name,
                    NodeMeta {
                        kind,
                        heartbeat_ttl_ms: ttl,
                        last_heartbeat: t,
                        usage: None,
                    },
                )
            })
            .collect();
        self.nodes.insert(
            self.local.clone(),
            NodeMeta {
                kind: "local".to_owned(),
                heartbeat_ttl_ms: None,
                last_heartbeat: t,
                usage: None,
            },
        );
        for (_, ws) in self.watchers.drain() {
            drop(ws);
        }
        self.replays.clear();
        let mut ops = vec![Op::ClearState];
        let st = self.ledger.state();
        let names: Vec<String> = st.nodes().map(|(_, n)| n.name().to_owned()).collect();
        ops.extend(names.iter().filter_map(|n| self.node_op(n)));
        let pools: Vec<String> = st.pools().map(|(_, p)| p.name().to_owned()).collect();
        ops.extend(pools.iter().filter_map(|p| self.pool_op(p)));
        ops.extend(
            st.allocations()
                .map(|a| Op::PutAllocation(persist::row(a, &self.ledger, &self.catalog).0)),
        );
        let (next_seq, next_grant) = self.ledger.counters();
        ops.push(Op::PutMeta {
            key: "next_seq".to_owned(),
            value: next_seq.to_string(),
        });
        ops.push(Op::PutMeta {
            key: "next_grant".to_owned(),
            value: next_grant.to_string(),
        });
        let exported = self.export();
        self.commit(ops, exported, tx);
    }

    pub(crate) fn nodes(&self) -> Vec<NodeDoc> {
        self.ledger
            .state()
            .nodes()
            .filter_map(|(_, n)| self.node_doc(n.name()))
            .collect()
    }

    /// Holds node `name` to a heartbeat within `ttl_ms` from now on, as a cluster member's
    /// node (kind `member`): the leader's view of the members heartbeats the live ones, and a
    /// node whose member left misses it and is lost. Answers whether there is such a node.
    pub(crate) fn watch_member(&mut self, name: &str, ttl_ms: u64) -> bool {
        if name == self.local {
            return false;
        }
        // the last heartbeat stands (a restore or re-read keeps it, or starts it at now): a
        // node watched again after a re-read is not given a fresh grace
        let Some(meta) = self.nodes.get_mut(name) else {
            return false;
        };
        meta.heartbeat_ttl_ms = Some(ttl_ms);
        meta.kind = "member".to_owned();
        true
    }

    pub(crate) fn local_node(&self) -> Result<NodeDoc, EngineError> {
        if let Some(doc) = self.node_doc(&self.local) {
            return Ok(doc);
        }
        // not recorded yet (the disk refused the start, or a cluster member that does not
        // lead): the node as configured, not ready, nothing allocated here
        let spec = self
            .local_pending
            .as_ref()
            .ok_or_else(|| EngineError::NotFound("the local node is gone".to_owned()))?;
        let render = |r| qm_proto::render_resources(&self.catalog, r);
        Ok(NodeDoc {
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            capacity: render(&spec.capacity),
            allocatable: render(&spec.allocatable),
            allocated: std::collections::BTreeMap::new(),
            available: render(&spec.allocatable),
            usage: None,
            ready: false,
            pressure: "ok".to_owned(),
            kind: "local".to_owned(),
        })
    }

    pub(crate) fn register_node(
        &mut self,
        spec: NodeSpec,
        ttl_ms: Option<u64>,
        tx: oneshot::Sender<Result<NodeDoc, EngineError>>,
    ) {
        if let Some(e) = self.refuse_write() {
            let _ = tx.send(Err(e));
            return;
        }
        let t = self.clock.now();
        let name = spec.name.clone();
        match self.ledger.register_node(t, spec) {
            Ok(_) => {
                self.nodes.insert(
                    name.clone(),
                    NodeMeta {
                        kind: "reported".to_owned(),
                        heartbeat_ttl_ms: ttl_ms,
                        last_heartbeat: t,
                        usage: None,
                    },
                );
                let ops = self.changes(&[&name]);
                match self.node_doc(&name) {
                    Some(doc) => self.commit(ops, doc, tx),
                    None => {
                        let _ = tx.send(Err(EngineError::NotFound(name)));
                    }
                }
            }
            Err(NodeError::Exists(n)) => {
                let _ = tx.send(Err(EngineError::Conflict(format!(
                    "node {n:?} already exists"
                ))));
            }
            Err(e) => {
                let _ = tx.send(Err(node_error(e)));
            }
        }
    }

    pub(crate) fn delete_node(
        &mut self,
        name: &str,
        force: bool,
        tx: oneshot::Sender<Result<NodeDoc, EngineError>>,
    ) {
        if let Some(e) = self.refuse_write() {
            let _ = tx.send(Err(e));
            return;
        }
        if name == self.local {
            let _ = tx.send(Err(EngineError::Conflict(
                "the local node cannot be removed".to_owned(),
            )));
            return;
        }
        let Some(doc) = self.node_doc(name) else {
            let _ = tx.send(Err(EngineError::NotFound(format!(
                "no node named {name:?}"
            ))));
            return;
        };
        match self.ledger.remove_node(self.clock.now(), name, force) {
            Ok(_) => {
                self.nodes.remove(name);
                let mut ops = self.changes(&[]);
                ops.retain(|op| !matches!(op, Op::PutNode { name: n, .. } if n == name));
                ops.push(Op::DeleteNode {
                    name: name.to_owned(),
                });
                self.commit(ops, doc, tx);
            }
            Err(e) => {
                let _ = tx.send(Err(node_error(e)));
            }
        }
    }

    pub(crate) fn heartbeat(
        &mut self,
        name: &str,
        usage: Option<qm_core::Resources>,
        tx: oneshot::Sender<Result<NodeDoc, EngineError>>,
    ) {
        let t = self.clock.now();
        let ready = self
            .ledger
            .state()
            .node_by_name(name)
            .is_some_and(|(_, n)| n.ready());
        // a node coming back is a change to record; a sign of life alone is not
        if !ready && let Some(e) = self.refuse_write() {
            let _ = tx.send(Err(e));
            return;
        }
        let catalog = self.catalog.clone();
        let Some(meta) = self.nodes.get_mut(name) else {
            let _ = tx.send(Err(EngineError::NotFound(format!(
                "no node named {name:?}"
            ))));
            return;
        };
        meta.last_heartbeat = t;
        if let Some(u) = &usage {
            meta.usage = Some(qm_proto::render_resources(&catalog, u));
        }
        if !ready {
            let _ = self.ledger.set_node_ready(t, name, true);
        }
        let ops = self.changes(&[]);
        match self.node_doc(name) {
            Some(doc) => self.commit(ops, doc, tx),
            None => {
                let _ = tx.send(Err(EngineError::NotFound(format!(
                    "no node named {name:?}"
                ))));
            }
        }
    }

    pub(crate) fn pools(&self) -> Vec<PoolDoc> {
        let st = self.ledger.state();
        st.pools()
            .map(|(_, p)| PoolDoc::of(p, st.total_allocatable(), &self.catalog))
            .collect()
    }

    pub(crate) fn put_pool(
        &mut self,
        spec: PoolSpec,
        create: bool,
        tx: oneshot::Sender<Result<PoolDoc, EngineError>>,
    ) {
        if let Some(e) = self.refuse_write() {
            let _ = tx.send(Err(e));
            return;
        }
        let name = spec.name.clone();
        let result = if create {
            self.ledger.create_pool(spec).map(|_| ())
        } else {
            self.ledger.update_pool(self.clock.now(), spec)
        };
        match result {
            Ok(()) => {
                let mut ops = self.changes(&[]);
                ops.extend(self.pool_op(&name));
                let st = self.ledger.state();
                match st.pool_by_name(&name) {
                    Some((_, p)) => {
                        let doc = PoolDoc::of(p, st.total_allocatable(), &self.catalog);
                        self.commit(ops, doc, tx);
                    }
                    None => {
                        let _ = tx.send(Err(EngineError::NotFound(name)));
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(pool_error(e)));
            }
        }
    }

    pub(crate) fn delete_pool(
        &mut self,
        name: &str,
        tx: oneshot::Sender<Result<PoolDoc, EngineError>>,
    ) {
        if let Some(e) = self.refuse_write() {
            let _ = tx.send(Err(e));
            return;
        }
        let st = self.ledger.state();
        let Some((_, p)) = st.pool_by_name(name) else {
            let _ = tx.send(Err(EngineError::NotFound(format!(
                "no pool named {name:?}"
            ))));
            return;
        };
        let doc = PoolDoc::of(p, st.total_allocatable(), &self.catalog);
        match self.ledger.delete_pool(name) {
            Ok(()) => self.commit(
                vec![Op::DeletePool {
                    name: name.to_owned(),
                }],
                doc,
                tx,
            ),
            Err(e) => {
                let _ = tx.send(Err(pool_error(e)));
            }
        }
    }
}

fn node_error(e: NodeError) -> EngineError {
    match e {
        NodeError::Invalid(v) => EngineError::Invalid(
            v.0.into_iter()
                .map(|f| FieldProblem {
                    field: f.field,
                    message: f.message,
                })
                .collect(),
        ),
        NodeError::Unknown(n) => EngineError::NotFound(format!("no node named {n:?}")),
        other => EngineError::Conflict(other.to_string()),
    }
}

fn pool_error(e: PoolError) -> EngineError {
    match e {
        PoolError::Invalid(v) => EngineError::Invalid(
            v.0.into_iter()
                .map(|f| FieldProblem {
                    field: f.field,
                    message: f.message,
                })
                .collect(),
        ),
        PoolError::Unknown(n) => EngineError::NotFound(format!("no pool named {n:?}")),
        other => EngineError::Conflict(other.to_string()),
    }
}
