//! quartermaster's engine: one thread owns the [`qm_core::Ledger`] and runs every command in
//! order; each change goes to the store as one batch (group-committed with others), and the
//! caller's answer is sent only once that batch is durable. Timers (lease expiry, queue
//! holds, heartbeat deadlines) tick on the same thread. The HTTP layer talks to [`Engine`].

pub mod audit;
pub mod clock;
mod core;
pub mod events;
pub mod metrics;
mod persist;
pub mod tokens;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use qm_core::{
    AllocId, Labels, LedgerConfig, NodeSpec, PoolSpec, Request, ResourceCatalog, Resources,
};
use qm_proto::{AllocationDoc, FieldProblem, NodeDoc, PoolDoc, Replay, StateDoc};
use qm_store::{AllocationFilter, Store};
use tokio::sync::oneshot;

use crate::core::Core;

/// How to start the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// The local node's name.
    pub node_name: String,
    /// The local node's capacity.
    pub capacity: Resources,
    /// What of it may be handed out.
    pub allocatable: Resources,
    /// The local node's labels.
    pub labels: Labels,
    /// The strategy preset.
    pub strategy: String,
    /// Queue tuning.
    pub ledger: LedgerConfig,
    /// Resource names.
    pub catalog: ResourceCatalog,
    /// How often timers run.
    pub tick: Duration,
    /// How long ended allocations (and idempotency keys) are kept for queries.
    pub retention: Duration,
    /// The monitor (host and agent metrics, history, alerts); None runs without one.
    pub monitor: Option<qm_monitor::MonitorConfig>,
    /// SHA-256 of the bootstrap admin token (the admin token file's content); None accepts
    /// only the tokens in the store.
    pub admin_token_sha256: Option<[u8; 32]>,
    /// What "now" is for leases, heartbeats and expiry ([`clock::system`] but in tests).
    pub clock: Arc<dyn clock::Clock>,
    /// The cluster's log, when the daemon is a member of one: every batch is made durable
    /// there first, and only while this member leads (`qm_store::Replica`).
    pub replica: Option<Arc<dyn qm_store::Replica>>,
}

pub use qm_proto::unix_ms;

/// A `usage` vector from busy cores and used bytes, as the node and agent documents show it;
/// None when neither is known.
pub fn usage_map(cores: Option<f64>, bytes: Option<f64>) -> Option<BTreeMap<String, String>> {
    use qm_core::quantity::{Unit, format};
    let mut usage = BTreeMap::new();
    if let Some(c) = cores {
        let millis = (c.max(0.0) * 1000.0).round() as u64;
        usage.insert("cpu".to_owned(), format(Unit::Millicores, millis));
    }
    if let Some(b) = bytes {
        usage.insert("memory".to_owned(), format(Unit::Bytes, usage_bytes(b)));
    }
    (!usage.is_empty()).then_some(usage)
}

/// Used memory as shown next to capacities: whole MiB above 1 MiB (`456Mi`, not `467144Ki`;
/// usage is a moving reading, not an amount handed out).
pub fn usage_bytes(bytes: f64) -> u64 {
    let b = bytes.max(0.0) as u64;
    if b > 1 << 20 {
        (b + (1 << 19)) >> 20 << 20
    } else {
        b
    }
}

/// Why the engine refused or failed a command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// Nothing of that name or id.
    #[error("{0}")]
    NotFound(String),
    /// Invalid fields.
    #[error("invalid request")]
    Invalid(Vec<FieldProblem>),
    /// The command conflicts with the state (a name taken, a busy node or pool).
    #[error("{0}")]
    Conflict(String),
    /// The request does not fit and may not queue.
    #[error("{detail}")]
    Insufficient {
        detail: String,
        shortfall: BTreeMap<String, String>,
    },
    /// The store failed (a full disk among the causes, [`qm_store::StoreError::is_full`]):
    /// the change is not durable, not acknowledged, and not in memory; writes resume by
    /// themselves once the store takes them again.
    #[error("storage failed: {0}")]
    Store(#[from] qm_store::StoreError),
    /// Something in the daemon itself failed (a task that did not finish, a stored record
    /// that cannot be read, no randomness).
    #[error("{0}")]
    Internal(String),
    /// The engine stopped.
    #[error("the engine is stopped")]
    Stopped,
    /// Pressure closed admission (all of it when critical, best-effort work when warning).
    #[error("{detail}")]
    AdmissionPaused { detail: String, retry_after_s: u64 },
}

/// What a read of an allocation found.
#[derive(Debug)]
pub enum Lookup {
    /// Live, from memory.
    Live(Box<AllocationDoc>),
    /// Not live: everything before this call is durable, so the store answers.
    NotLive,
}

type Job = Box<dyn FnOnce(&mut Core) + Send>;

enum Msg {
    Job(Job),
    Stop(oneshot::Sender<()>),
}

/// A handle on the running engine; cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: std::sync::Mutex<mpsc::Sender<Msg>>,
    store: Store,
    catalog: ResourceCatalog,
    hub: Arc<events::EventHub>,
    monitor: Option<qm_monitor::Monitor>,
    tokens: tokens::Tokens,
    /// The local node's name.
    node_name: String,
    /// Whether the strategy sizes requests by observed usage (`learned`).
    sizes_by_usage: bool,
    /// What sizes them, once the supervisor has said.
    sizer: std::sync::OnceLock<Arc<dyn Sizer>>,
}

/// Sizes requests at admission from what their template was seen to use. Under a strategy
/// that [sizes by usage](qm_sched::Preset::sizes_by_usage) (`learned`), the engine asks it of
/// every request, dry runs included, before the ledger decides.
pub trait Sizer: Send + Sync + std::fmt::Debug {
    /// The request to admit in place of `req`; None keeps `req` as written.
    fn size(&self, req: &Request) -> Option<Request>;
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Job(_) => "Job",
            Msg::Stop(_) => "Stop",
        })
    }
}

/// Why the engine did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or read.
    #[error("store: {0}")]
    Store(#[from] qm_store::StoreError),
    /// The strategy name is unknown.
    #[error("strategy: {0}")]
    Strategy(String),
    /// The stored state is inconsistent.
    #[error("stored state: {0}")]
    State(String),
    /// The local node's spec is invalid.
    #[error("local node: {0}")]
    Node(String),
    /// The monitor's configuration is invalid or its thread did not start.
    #[error("monitor: {0}")]
    Monitor(#[from] qm_monitor::MonitorError),
}

impl Engine {
    /// Opens the store, restores the ledger, registers the local node, expires what lapsed
    /// while down, drains the queues, persists the result, and starts the engine thread.
    pub fn start(config: EngineConfig) -> Result<Self, StartError> {
        let store = match &config.replica {
            Some(r) => Store::open_replicated(&config.data_dir, Arc::clone(r))?,
            None => Store::open(&config.data_dir)?,
        };
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        let hub = Arc::new(events::EventHub::new(micros));
        let core = Core::start(&config, store.clone(), Arc::clone(&hub))?;
        let allocatable = (
            config.allocatable.cpu() as f64 / 1000.0,
            config.allocatable.memory() as f64,
        );
        let monitor = config
            .monitor
            .clone()
            .map(|m| {
                qm_monitor::Monitor::start(
                    qm_monitor::MonitorConfig { allocatable, ..m },
                    Arc::clone(&hub) as Arc<dyn qm_monitor::EventSink>,
                )
            })
            .transpose()?;
        let tokens = tokens::Tokens::load(store.clone(), config.admin_token_sha256)?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let tick = config.tick;
        thread::Builder::new()
            .name("qm-engine".to_owned())
            .spawn(move || core.run(&rx, tick))
            .map_err(|e| StartError::State(format!("cannot start the engine thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx: std::sync::Mutex::new(tx),
                store,
                catalog: config.catalog,
                hub,
                monitor,
                tokens,
                node_name: config.node_name.clone(),
                sizes_by_usage: qm_sched::preset(&config.strategy).is_ok_and(|p| p.sizes_by_usage),
                sizer: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Whether the strategy sizes requests by observed usage (`learned`): then the
    /// supervisor gives the engine its [`Sizer`].
    pub fn sizes_by_usage(&self) -> bool {
        self.inner.sizes_by_usage
    }

    /// Sets what sizes requests at admission (once; later calls are ignored). Only a strategy
    /// that [sizes by usage](Self::sizes_by_usage) asks it.
    pub fn set_sizer(&self, sizer: Arc<dyn Sizer>) {
        let _ = self.inner.sizer.set(sizer);
    }

    /// The local node's name (agents started here are placed on it).
    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// The API tokens.
    pub fn tokens(&self) -> &tokens::Tokens {
        &self.inner.tokens
    }

    /// The resource names requests may use.
    pub fn catalog(&self) -> &ResourceCatalog {
        &self.inner.catalog
    }

    /// Subscribes to events after `since` (see [`events::EventHub::subscribe`]).
    pub fn subscribe(&self, since: Option<u64>) -> events::Subscription {
        self.inner.hub.subscribe(since)
    }

    /// Numbers and publishes events that are durable already (agents, alerts, fleets).
    pub fn publish(&self, events: Vec<qm_proto::EventDoc>) {
        self.inner.hub.publish(events);
    }

    /// Ends every live event feed.
    pub fn close_events(&self) {
        self.inner.hub.close();
    }

    /// The monitor, when the daemon runs one.
    pub fn monitor(&self) -> Option<&qm_monitor::Monitor> {
        self.inner.monitor.as_ref()
    }

    /// The store, for reads of ended allocations.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, oneshot::Sender<R>) + Send + 'static,
    ) -> Result<R, EngineError> {
        let (tx, rx) = oneshot::channel();
        let audit = audit::current();
        let job: Job = Box::new(move |core| {
            core.audit = audit;
            f(core, tx);
            core.audit = None;
        });
        self.inner
            .tx
            .lock()
            .map_err(|_| EngineError::Stopped)?
            .send(Msg::Job(job))
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Submits a request (or answers what would happen, with `dry_run`). With an idempotency
    /// key, a repeat gets the first answer and creates nothing.
    pub async fn submit(
        &self,
        req: Request,
        dry_run: bool,
        key: Option<String>,
    ) -> Result<Replay, EngineError> {
        self.admission(&req)?;
        let req = match self.inner.sizer.get() {
            Some(sizer) if self.inner.sizes_by_usage => sizer.size(&req).unwrap_or(req),
            _ => req,
        };
        self.call(move |core, tx| core.submit(req, dry_run, key, tx))
            .await?
    }

    /// An allocation: live from memory; otherwise [`Lookup::NotLive`] once everything before
    /// is durable.
    pub async fn get(&self, id: AllocId) -> Result<Lookup, EngineError> {
        self.call(move |core, tx| core.get(id, tx)).await
    }

    /// Waits up to `wait` for a queued allocation to leave the queue.
    pub async fn wait_for(&self, id: AllocId, wait: Duration) -> Result<(), EngineError> {
        let rx = self.call(move |core, tx| core.watch(id, tx)).await?;
        if let Some(rx) = rx {
            let _ = tokio::time::timeout(wait, rx).await;
        }
        Ok(())
    }

    /// Releases (or cancels) a live allocation; `Ok(None)` when it is not live (the caller
    /// then answers from the store).
    pub async fn release(&self, id: AllocId) -> Result<Option<AllocationDoc>, EngineError> {
        self.call(move |core, tx| core.release(id, tx)).await?
    }

    /// Ends a granted allocation as `evicted` with `reason` (pressure); `Ok(None)` when it
    /// is not live.
    pub async fn evict(
        &self,
        id: AllocId,
        reason: String,
    ) -> Result<Option<AllocationDoc>, EngineError> {
        self.call(move |core, tx| core.evict(id, &reason, tx))
            .await?
    }

    /// Changes a grant's size in place (its node and pool must have room for the growth;
    /// never forced), durably.
    pub async fn resize(
        &self,
        id: AllocId,
        resources: qm_core::Resources,
        limits: Option<qm_core::Resources>,
    ) -> Result<AllocationDoc, EngineError> {
        self.call(move |core, tx| core.resize(id, resources, limits, tx))
            .await?
    }

    /// Renews a grant's lease.
    pub async fn renew(
        &self,
        id: AllocId,
        ttl_ms: Option<u64>,
    ) -> Result<AllocationDoc, EngineError> {
        self.call(move |core, tx| core.renew(id, ttl_ms, tx))
            .await?
    }

    /// Allocations from the store (after everything before is durable).
    pub async fn list(
        &self,
        filter: AllocationFilter,
        after_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AllocationDoc>, EngineError> {
        self.call(|core, tx| core.barrier(tx)).await??;
        let store = self.inner.store.clone();
        let rows =
            tokio::task::spawn_blocking(move || store.allocations(&filter, after_seq, limit))
                .await
                .map_err(|e| EngineError::Internal(format!("a store read did not finish: {e}")))?
                .map_err(EngineError::from)?;
        rows.iter().map(|r| persist::doc_of_row(&r.body)).collect()
    }

    /// One allocation from the store, live or ended.
    pub async fn stored(&self, id: AllocId) -> Result<Option<AllocationDoc>, EngineError> {
        let store = self.inner.store.clone();
        let seq = i64::try_from(id.seq()).unwrap_or(i64::MAX);
        let row = tokio::task::spawn_blocking(move || store.allocation(seq))
            .await
            .map_err(|e| EngineError::Internal(format!("a store read did not finish: {e}")))?
            .map_err(EngineError::from)?;
        // The seq is the key; the slot half of the id must match too.
        row.filter(|r| r.id == id.to_string())
            .map(|r| persist::doc_of_row(&r.body))
            .transpose()
    }

    /// The whole state.
    pub async fn export(&self) -> Result<StateDoc, EngineError> {
        self.call(|core, tx| {
            let _ = tx.send(core.export());
        })
        .await
    }

    /// Replaces the whole state atomically, or changes nothing; answers the new state.
    pub async fn import(&self, doc: StateDoc) -> Result<StateDoc, EngineError> {
        self.call(move |core, tx| core.import(&doc, tx)).await?
    }

    /// The allocator's metrics, now.
    pub async fn metrics(&self) -> Result<metrics::Snapshot, EngineError> {
        self.call(|core, tx| {
            let _ = tx.send(core.metrics());
        })
        .await
    }

    /// Every node.
    pub async fn nodes(&self) -> Result<Vec<NodeDoc>, EngineError> {
        self.call(|core, tx| {
            let _ = tx.send(core.nodes());
        })
        .await
    }

    /// The local node's name.
    pub async fn local_node(&self) -> Result<NodeDoc, EngineError> {
        let mut doc = self
            .call(|core, tx| {
                let _ = tx.send(core.local_node());
            })
            .await??;
        doc.usage = self.local_usage();
        if let Some(p) = self.monitor().and_then(|m| m.latest().pressure.clone()) {
            doc.pressure = p.level.to_string();
        }
        Ok(doc)
    }

    /// The pressure gate: critical memory or pids pressure pauses all admission, warning
    /// pauses best-effort work (empty requests): the first steps of the node's responder.
    fn admission(&self, req: &Request) -> Result<(), EngineError> {
        let Some(report) = self.monitor().and_then(|m| m.latest().pressure.clone()) else {
            return Ok(());
        };
        let best_effort =
            qm_core::Qos::derive(&req.resources, req.limits.as_ref()) == qm_core::Qos::BestEffort;
        let level = report.gating_level();
        let closed = match level {
            qm_pressure::Level::Critical => true,
            qm_pressure::Level::Warning => best_effort,
            qm_pressure::Level::Ok => false,
        };
        if !closed {
            return Ok(());
        }
        let worst: Vec<String> = report
            .gating()
            .filter(|s| s.level == level)
            .map(|s| format!("{} at {:.0}%", s.name, s.utilization * 100.0))
            .collect();
        Err(EngineError::AdmissionPaused {
            detail: format!(
                "admission is paused: {level} pressure ({}){}",
                worst.join(", "),
                if best_effort && level == qm_pressure::Level::Warning {
                    "; best-effort work waits until it eases"
                } else {
                    ""
                }
            ),
            retry_after_s: 5,
        })
    }

    /// What the local node uses now, from the monitor's last collection: busy cores and used
    /// memory (MemTotal less MemAvailable).
    fn local_usage(&self) -> Option<BTreeMap<String, String>> {
        let latest = self.monitor()?.latest();
        usage_map(
            latest.value("qm_host_cpu_busy_cores"),
            latest.value("qm_host_memory_used_bytes"),
        )
    }

    /// Registers a reported node.
    pub async fn register_node(
        &self,
        spec: NodeSpec,
        ttl_ms: Option<u64>,
    ) -> Result<NodeDoc, EngineError> {
        self.call(move |core, tx| core.register_node(spec, ttl_ms, tx))
            .await?
    }

    /// Holds node `name` to a heartbeat within `ttl_ms`, as a cluster member's node (see
    /// `qm serve --etcd`); false when there is no such node (or it is this one).
    pub async fn watch_member(&self, name: String, ttl_ms: u64) -> Result<bool, EngineError> {
        self.call(move |core, tx| {
            let _ = tx.send(core.watch_member(&name, ttl_ms));
        })
        .await
    }

    /// Removes a node; refused while it holds grants unless `force`.
    pub async fn delete_node(&self, name: String, force: bool) -> Result<NodeDoc, EngineError> {
        self.call(move |core, tx| core.delete_node(&name, force, tx))
            .await?
    }

    /// A reported node's heartbeat.
    /// A reported node's heartbeat, with what it says it uses.
    pub async fn heartbeat(
        &self,
        name: String,
        usage: Option<qm_core::Resources>,
    ) -> Result<NodeDoc, EngineError> {
        self.call(move |core, tx| core.heartbeat(&name, usage, tx))
            .await?
    }

    /// Every pool.
    pub async fn pools(&self) -> Result<Vec<PoolDoc>, EngineError> {
        self.call(|core, tx| {
            let _ = tx.send(core.pools());
        })
        .await
    }

    /// Creates (`create`) or updates a pool.
    pub async fn put_pool(&self, spec: PoolSpec, create: bool) -> Result<PoolDoc, EngineError> {
        self.call(move |core, tx| core.put_pool(spec, create, tx))
            .await?
    }

    /// Deletes a pool.
    pub async fn delete_pool(&self, name: String) -> Result<PoolDoc, EngineError> {
        self.call(move |core, tx| core.delete_pool(&name, tx))
            .await?
    }

    /// Flushes and stops the engine thread; later calls answer [`EngineError::Stopped`].
    pub async fn shutdown(&self) {
        if let Some(m) = self.monitor() {
            let m = m.clone();
            let _ = tokio::task::spawn_blocking(move || m.stop()).await;
        }
        let (tx, rx) = oneshot::channel();
        let sent = self
            .inner
            .tx
            .lock()
            .map(|s| s.send(Msg::Stop(tx)).is_ok())
            .unwrap_or(false);
        if sent {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::usage_bytes;

    #[test]
    fn usage_rounds_to_whole_mebibytes_above_one() {
        assert_eq!(usage_bytes(467_144.0 * 1024.0), 456 << 20);
        assert_eq!(usage_bytes(1000.0), 1000);
        assert_eq!(usage_bytes(-5.0), 0);
        assert_eq!(usage_bytes(f64::NAN), 0);
    }
}
