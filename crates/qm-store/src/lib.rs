//! quartermaster's durable state: one embedded SQLite database (`<data_dir>/qm.db`, WAL mode,
//! `synchronous=FULL`) with **group commit**: one writer thread takes every batch queued while
//! the previous transaction was syncing and commits them together, so many concurrent writers
//! share one fsync. A batch is all-or-nothing, batches apply in the order they were queued, and
//! a batch's `done` runs only once it is durable. The store keeps opaque JSON bodies plus the
//! columns queries filter on; it knows nothing of their meaning.

pub mod audit;
mod schema;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, params};

pub use audit::{AuditError, AuditRow, Verified};
pub use writer::WriterStats;

/// A stored allocation: indexed columns and the opaque body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AllocationRow {
    pub id: String,
    /// Creation order; pagination key.
    pub seq: i64,
    pub agent: String,
    pub pool: String,
    pub node: Option<String>,
    pub state: String,
    /// Queued or granted.
    pub live: bool,
    pub ended_at_ms: Option<i64>,
    pub body: String,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// Inserts or replaces an allocation by seq.
    PutAllocation(AllocationRow),
    PutNode {
        name: String,
        body: String,
    },
    DeleteNode {
        name: String,
    },
    PutPool {
        name: String,
        body: String,
    },
    DeletePool {
        name: String,
    },
    PutMeta {
        key: String,
        value: String,
    },
    /// Records the answer to a request made with an idempotency key.
    PutIdempotent {
        key: String,
        body: String,
        at_ms: i64,
    },
    /// Inserts or replaces an agent; `live` while it runs or will run again.
    PutAgent {
        id: String,
        live: bool,
        ended_at_ms: Option<i64>,
        body: String,
    },
    DeleteAgent {
        id: String,
    },
    PutFleet {
        name: String,
        body: String,
    },
    DeleteFleet {
        name: String,
    },
    /// Inserts or replaces an API token's record (never the secret: its hash).
    PutToken {
        id: String,
        body: String,
    },
    DeleteToken {
        id: String,
    },
    /// Appends an entry to the audit log; the writer numbers it and links it into the hash
    /// chain in the same transaction as the batch's other changes.
    Audit {
        at_ms: i64,
        body: String,
    },
    /// Deletes every node, pool and allocation (not agents, fleets, meta or idempotency
    /// keys: processes outlive a state import).
    ClearState,
    /// Deletes ended allocations and agents that ended before `before_ms`, and older
    /// idempotency keys.
    Prune {
        before_ms: i64,
    },
}

/// Changes applied together, all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Batch {
    pub ops: Vec<Op>,
    /// Already in the cluster's log (a replayed entry): applied here only, never passed to
    /// the [`Replica`] again.
    #[serde(default)]
    pub from_log: bool,
}

impl Op {
    /// This member's own, never passed to the cluster's log: its agents and fleets (the
    /// processes it runs; the leader's placements say which it should) and its audit entries.
    /// A member that does not lead still writes these.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            Op::Audit { .. }
                | Op::PutAgent { .. }
                | Op::DeleteAgent { .. }
                | Op::PutFleet { .. }
                | Op::DeleteFleet { .. }
        )
    }
}

impl Batch {
    /// Whether every operation is this member's own ([`Op::is_local`]).
    pub fn is_local(&self) -> bool {
        self.ops.iter().all(Op::is_local)
    }

    /// A batch of `ops`, made here.
    pub fn of(ops: Vec<Op>) -> Self {
        Batch {
            ops,
            from_log: false,
        }
    }

    /// Adds an operation.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }
    /// True when it changes nothing (a barrier: durable once everything before it is).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Filters for listing allocations; each one an exact match when set.
#[derive(Debug, Clone, Default)]
pub struct AllocationFilter {
    pub agent: Option<String>,
    pub pool: Option<String>,
    pub state: Option<String>,
    pub node: Option<String>,
}

/// What the daemon reads at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// `(name, body)` in name order.
    pub nodes: Vec<(String, String)>,
    /// `(name, body)` in name order.
    pub pools: Vec<(String, String)>,
    /// Live allocations, by seq.
    pub live_allocations: Vec<AllocationRow>,
    /// Every agent kept (live and recently ended): `(id, live, body)` in id order.
    pub agents: Vec<(String, bool, String)>,
    /// `(name, body)` in name order.
    pub fleets: Vec<(String, String)>,
    pub meta: BTreeMap<String, String>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused or failed; `what` says what was being done.
    #[error("{what} ({path}): {message}")]
    Sqlite {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// The disk (or the file system's quota) is full: nothing of the batch was written.
    #[error("{what} ({path}): the disk is full: {message}")]
    Full {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// The data dir could not be created.
    #[error("cannot create data dir {path}: {message}")]
    Dir { path: PathBuf, message: String },
    /// The writer thread is gone.
    #[error("the store is closed")]
    Closed,
    /// The cluster's log (the [`Replica`]) refused or failed the batch: nothing of it was
    /// written here either (for example: this member no longer leads).
    #[error("the cluster's log: {message}")]
    Replica { message: String },
}

/// Why the cluster's log did not take a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaError {
    /// Refused or failed (this member does not lead, etcd is unreachable).
    Refused(String),
    /// This store is behind the log (another leader wrote since): nothing was appended; the
    /// writer applies `entries` (the missing changes, in order, with the new position) in a
    /// transaction of their own and fails the group, whose changes were decided on the old
    /// state. The caller re-reads the store and tries again.
    Behind { entries: Vec<Op> },
}

/// Where a group of batches is made durable beyond this machine before it commits here: the
/// cluster's log on etcd (`qm_cluster::EtcdLog`). The writer calls [`append`](Self::append)
/// with the group's operations, in order, inside its transaction and before it commits: an
/// error fails the group and nothing of it is written here; success means the operations are
/// durable there. The member's own operations ([`Op::is_local`]: audit entries, agents,
/// fleets) are not passed on; a group of nothing else commits without the log.
pub trait Replica: Send + Sync + std::fmt::Debug {
    /// Told, once, the store's meta as it opens (where in the log this store stands).
    fn start(&self, meta: &BTreeMap<String, String>) {
        let _ = meta;
    }

    /// Makes `ops` durable in the cluster's log, all or nothing; answers operations to apply
    /// here in the same transaction (the log's position this store now holds).
    fn append(&self, ops: &[Op]) -> Result<Vec<Op>, ReplicaError>;

    /// The most operations one group may take (an etcd request is at most 1.5 MiB).
    fn max_ops(&self) -> usize {
        8192
    }
}

pub(crate) fn sqlite<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |e| {
        let full = matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull))
            || e.to_string().contains("No space left");
        let message = e.to_string();
        if full {
            return StoreError::Full {
                what,
                path: path.to_owned(),
                message,
            };
        }
        StoreError::Sqlite {
            what,
            path: path.to_owned(),
            message,
        }
    }
}

impl StoreError {
    /// Whether the disk is full (the write may succeed once space returns).
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full { .. })
    }
}

/// A batch waiting for the writer, and whom to tell.
pub(crate) type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A handle on the store; clones share it. The writer stops when the last handle goes.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<(Batch, Done)>>>,
    reader: Mutex<Connection>,
    stats: Arc<writer::Counters>,
    writer: Mutex<Option<JoinHandle<()>>>,
    stop_checkpoints: Mutex<Option<mpsc::Sender<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(h) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
        if let Ok(mut stop) = self.stop_checkpoints.lock() {
            stop.take();
        }
        if let Some(h) = self.checkpointer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
    }
}

impl Store {
    /// Opens or creates `<dir>/qm.db` and starts the writer.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, None)
    }

    /// Like [`open`](Self::open), every group of batches first made durable in `replica`.
    pub fn open_replicated(dir: &Path, replica: Arc<dyn Replica>) -> Result<Self, StoreError> {
        Self::open_with(dir, Some(replica))
    }

    fn open_with(dir: &Path, replica: Option<Arc<dyn Replica>>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir {
            path: dir.to_owned(),
            message: e.to_string(),
        })?;
        let path = dir.join("qm.db");
        let write = schema::open(&path)?;
        // The writer restarts the WAL once it is ~4 MiB; the checkpointer thread has copied
        // most of it back by then, so the writer's share is small.
        write
            .pragma_update(None, "wal_autocheckpoint", 1000)
            .map_err(sqlite("setting the checkpoint interval", &path))?;
        schema::migrate(&write, &path)?;
        let reader = schema::open(&path)?;
        if let Some(r) = &replica {
            let meta = {
                let mut st = reader
                    .prepare("SELECT key, value FROM meta")
                    .map_err(sqlite("reading meta", &path))?;
                st.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                    .and_then(Iterator::collect::<rusqlite::Result<BTreeMap<String, String>>>)
                    .map_err(sqlite("reading meta", &path))?
            };
            r.start(&meta);
        }
        let stats = Arc::new(writer::Counters::default());
        let (tx, rx) = mpsc::channel();
        let handle = writer::spawn(write, path.clone(), rx, Arc::clone(&stats), replica)?;
        let (stop_tx, stop_rx) = mpsc::channel();
        let checkpointer = writer::spawn_checkpointer(
            schema::open(&path)?,
            std::time::Duration::from_millis(500),
            stop_rx,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                tx: Mutex::new(Some(tx)),
                reader: Mutex::new(reader),
                stats,
                writer: Mutex::new(Some(handle)),
                stop_checkpoints: Mutex::new(Some(stop_tx)),
                checkpointer: Mutex::new(Some(checkpointer)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Queues `batch`; `done` runs on the writer thread once it is durable, or with the error.
    pub fn commit(&self, batch: Batch, done: Done) {
        let sent = match self.inner.tx.lock() {
            Ok(tx) => match tx.as_ref() {
                Some(tx) => tx.send((batch, done)).map_err(|e| e.0.1),
                None => Err(done),
            },
            Err(_) => Err(done),
        };
        if let Err(done) = sent {
            done(Err(StoreError::Closed));
        }
    }

    /// Commits `batch` and waits until it is durable.
    pub fn commit_wait(&self, batch: Batch) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        self.commit(
            batch,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
        what: &'static str,
    ) -> Result<T, StoreError> {
        let conn = self.inner.reader.lock().map_err(|_| StoreError::Closed)?;
        f(&conn).map_err(sqlite(what, &self.inner.path))
    }

    /// Everything the daemon needs at start.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        self.read(
            |c| {
                let pairs = |sql: &str| -> rusqlite::Result<Vec<(String, String)>> {
                    let mut st = c.prepare(sql)?;
                    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
                };
                let nodes = pairs("SELECT name, body FROM nodes ORDER BY name")?;
                let pools = pairs("SELECT name, body FROM pools ORDER BY name")?;
                let meta = pairs("SELECT key, value FROM meta")?.into_iter().collect();
                let mut st = c.prepare(&format!("{SELECT_ALLOC} WHERE live = 1 ORDER BY seq"))?;
                let live_allocations = st.query_map([], row)?.collect::<rusqlite::Result<_>>()?;
                let mut st = c.prepare("SELECT id, live, body FROM agents ORDER BY id")?;
                let agents = st
                    .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let fleets = pairs("SELECT name, body FROM fleets ORDER BY name")?;
                Ok(Loaded {
                    nodes,
                    pools,
                    live_allocations,
                    agents,
                    fleets,
                    meta,
                })
            },
            "loading the state",
        )
    }

    /// One allocation by its seq (the table's key).
    pub fn allocation(&self, seq: i64) -> Result<Option<AllocationRow>, StoreError> {
        self.read(
            |c| {
                c.query_row(&format!("{SELECT_ALLOC} WHERE seq = ?1"), [seq], row)
                    .optional()
            },
            "reading an allocation",
        )
    }

    /// Allocations matching `filter`, by seq, after `after_seq`, at most `limit`.
    pub fn allocations(
        &self,
        filter: &AllocationFilter,
        after_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AllocationRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(
            |c| {
                let sql = format!(
                    "{SELECT_ALLOC} WHERE seq > ?1 AND (?2 IS NULL OR agent = ?2) AND (?3 IS NULL OR pool = ?3) \
                     AND (?4 IS NULL OR state = ?4) AND (?5 IS NULL OR node = ?5) ORDER BY seq LIMIT ?6"
                );
                let mut st = c.prepare_cached(&sql)?;
                st.query_map(
                    params![after_seq.unwrap_or(i64::MIN), filter.agent, filter.pool, filter.state, filter.node, limit],
                    row,
                )?
                .collect()
            },
            "listing allocations",
        )
    }

    /// The stored answer for an idempotency key.
    pub fn idempotent(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read(
            |c| {
                c.query_row("SELECT body FROM idempotency WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()
            },
            "reading an idempotency key",
        )
    }

    /// API token records: `(id, body)` in id order.
    pub fn tokens(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(
            |c| {
                let mut st = c.prepare("SELECT id, body FROM tokens ORDER BY id")?;
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
            },
            "reading the tokens",
        )
    }

    /// Audit entries after `after_seq` (0: from the start), oldest first, at most `limit`.
    pub fn audit(&self, after_seq: i64, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(
            |c| audit::list(c, after_seq, limit),
            "reading the audit log",
        )
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> WriterStats {
        let s = &self.inner.stats;
        WriterStats {
            transactions: s.transactions.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            ops: s.ops.load(Ordering::Relaxed),
        }
    }

    /// Flushes what is queued and stops the writer (if this is the last handle).
    pub fn close(self) -> Result<(), StoreError> {
        self.commit_wait(Batch::default())
    }
}

const SELECT_ALLOC: &str =
    "SELECT id, seq, agent, pool, node, state, live, ended_at_ms, body FROM allocations";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AllocationRow> {
    Ok(AllocationRow {
        id: r.get(0)?,
        seq: r.get(1)?,
        agent: r.get(2)?,
        pool: r.get(3)?,
        node: r.get(4)?,
        state: r.get(5)?,
        live: r.get::<_, i64>(6)? != 0,
        ended_at_ms: r.get(7)?,
        body: r.get(8)?,
    })
}

pub(crate) use AtomicU64 as Counter;

#[cfg(test)]
mod tests;
