//! The audit entry of the request being served. The HTTP layer opens a [`Pending`] entry for
//! each request and runs the handler inside [`scope`]; the first store batch that a write
//! commits for that request takes the entry ([`attach`], or the engine's own commit), so the
//! record and the change are one transaction. A request that commits nothing (a refusal, a
//! dry run) is recorded on its own by the HTTP layer afterwards ([`Pending::written`] says
//! which happened).

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use qm_proto::AuditEntryDoc;
use qm_store::{Batch, Op};

use crate::unix_ms;

/// The entry of one request, until a batch takes it.
#[derive(Debug)]
pub struct Pending {
    entry: Mutex<AuditEntryDoc>,
    status: AtomicU16,
    /// A batch in flight holds it.
    claimed: AtomicBool,
    /// A committed batch holds it.
    written: AtomicBool,
}

tokio::task_local! {
    static CURRENT: Arc<Pending>;
}

impl Pending {
    /// An entry for `entry`'s request; `status` is the answer a committed change gives unless
    /// the command says otherwise ([`Pending::answer`]).
    pub fn new(entry: AuditEntryDoc, status: u16) -> Arc<Self> {
        Arc::new(Self {
            entry: Mutex::new(entry),
            status: AtomicU16::new(status),
            claimed: AtomicBool::new(false),
            written: AtomicBool::new(false),
        })
    }

    /// True once a committed batch holds the entry.
    pub fn written(&self) -> bool {
        self.written.load(Ordering::Acquire)
    }

    /// The entry, for the HTTP layer to record on its own when no batch committed it.
    pub fn entry(&self) -> Option<AuditEntryDoc> {
        self.entry.lock().ok().map(|e| e.clone())
    }

    /// The store operation recording the entry, for the first batch that asks.
    fn op(&self) -> Option<Op> {
        if self.claimed.swap(true, Ordering::AcqRel) {
            return None;
        }
        let mut entry = self.entry.lock().ok()?.clone();
        entry.status = self.status.load(Ordering::Relaxed);
        Some(entry_op(&entry))
    }

    /// The status the change answers with, when it is not the route's usual one.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// The batch that took the entry committed (`ok`) or failed (another may take it).
    pub(crate) fn committed(&self, ok: bool) {
        if ok {
            self.written.store(true, Ordering::Release);
        } else if !self.written() {
            self.claimed.store(false, Ordering::Release);
        }
    }
}

/// The store operation that appends `entry`, stamped now (the time is the row's, not the
/// body's).
pub fn entry_op(entry: &AuditEntryDoc) -> Op {
    Op::Audit {
        at_ms: i64::try_from(unix_ms()).unwrap_or(i64::MAX),
        body: qm_proto::to_json(entry),
    }
}

/// Runs `f` with `pending` as the request's audit entry.
pub async fn scope<F: Future>(pending: Arc<Pending>, f: F) -> F::Output {
    CURRENT.scope(pending, f).await
}

/// The current request's entry, if any (to carry onto the engine thread).
pub fn current() -> Option<Arc<Pending>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Adds the current request's entry to `batch` if no batch has taken it yet.
pub fn attach(batch: &mut Batch) {
    if let Some(p) = current() {
        attach_from(&p, batch);
    }
}

/// Adds `pending`'s entry to `batch` if no batch has taken it yet; returns whether it did.
pub(crate) fn attach_from(pending: &Pending, batch: &mut Batch) -> bool {
    match pending.op() {
        Some(op) => {
            batch.push(op);
            true
        }
        None => false,
    }
}

/// A callback for a batch's `done` (with whether it committed), for the current request's
/// entry.
pub fn on_commit() -> impl FnOnce(bool) + Send + 'static {
    let p = current();
    move |ok| {
        if let Some(p) = p {
            p.committed(ok);
        }
    }
}
