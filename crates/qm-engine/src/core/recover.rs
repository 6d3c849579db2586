//! When the disk refuses a write. A change whose batch fails was already applied to the
//! ledger in memory, so the engine re-reads its state from the store (after a barrier, so
//! every batch queued before has settled) and memory is exactly what is durable again, caches
//! included. While the disk stays full (or failing), writes are refused before they touch
//! anything (507 `storage_full`, or 503), timers change nothing, and a small probe write every
//! second finds out when space has returned; then writes resume by themselves, and a start
//! that could not record itself finishes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use qm_core::Ledger;
use qm_store::{Batch, Op, StoreError};

use super::{Core, NodeMeta};
use crate::{EngineError, persist};

/// How often a degraded engine tries a probe write.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// What commits report, shared with the store writer's callbacks.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    /// A change failed to commit: memory may hold what the disk does not.
    diverged: AtomicBool,
    /// The failure that degraded the store (a full disk, or another): writes are refused
    /// with it until a probe commits.
    last: Mutex<Option<StoreError>>,
}

impl StoreHealth {
    /// Records a failed change.
    pub(crate) fn failed(&self, e: &StoreError) {
        self.diverged.store(true, Ordering::Release);
        if let Ok(mut last) = self.last.lock() {
            *last = Some(e.clone());
        }
    }

    /// Whether memory must be re-read (and clears it).
    pub(crate) fn take_diverged(&self) -> bool {
        self.diverged.swap(false, Ordering::AcqRel)
    }

    /// Whether writes are refused.
    pub(crate) fn degraded(&self) -> bool {
        self.last.lock().map_or(true, |l| l.is_some())
    }

    fn recovered(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = None;
        }
    }

    /// The refusal of a write while degraded: the failure that degraded the store.
    pub(crate) fn refusal(&self) -> Option<EngineError> {
        self.last
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .map(EngineError::Store)
    }
}

impl Core {
    /// Refuses a write while the disk does not take them: nothing is changed.
    pub(crate) fn refuse_write(&self) -> Option<EngineError> {
        self.health.refusal()
    }

    /// Re-reads the ledger from the store: after every batch queued so far has settled,
    /// memory becomes exactly what is durable. Idempotency answers cached in memory are
    /// dropped (the store has the durable ones).
    pub(super) fn resync(&mut self) {
        let _ = self.store.commit_wait(Batch::default());
        // failures up to here are covered by this re-read
        self.health.diverged.store(false, Ordering::Release);
        let rebuilt = self
            .store
            .load()
            .map_err(|e| e.to_string())
            .and_then(|loaded| persist::snapshot(&loaded, &self.catalog))
            .and_then(|(snapshot, kinds)| {
                let policy =
                    qm_sched::Framework::preset(&self.strategy).map_err(|e| e.to_string())?;
                Ledger::restore(Box::new(policy), self.ledger_config.clone(), snapshot)
                    .map(|l| (l, kinds))
                    .map_err(|e| e.to_string())
            });
        match rebuilt {
            Ok((ledger, kinds)) => {
                self.ledger = ledger;
                let t = self.clock.now();
                let old = std::mem::take(&mut self.nodes);
                for (name, kind, ttl) in kinds {
                    let last = old.get(&name).map_or(t, |m| m.last_heartbeat);
                    let usage = old.get(&name).and_then(|m| m.usage.clone());
                    let kind = if name == self.local {
                        "local".to_owned()
                    } else {
                        kind
                    };
                    self.nodes.insert(
                        name,
                        NodeMeta {
                            kind,
                            heartbeat_ttl_ms: ttl,
                            last_heartbeat: last,
                            usage,
                        },
                    );
                }
                self.replays.clear();
                self.pending.clear();
                let _ = self.ledger.take_events();
                tracing::warn!(
                    live = self.ledger.state().n_live(),
                    "a write failed: state re-read from the store"
                );
            }
            Err(error) => {
                // memory may be ahead of the disk: keep refusing writes until it is re-read
                tracing::error!(%error, "cannot re-read the state after a failed write");
                self.health.diverged.store(true, Ordering::Release);
                if let Ok(mut last) = self.health.last.lock()
                    && last.is_none()
                {
                    *last = Some(StoreError::Closed);
                }
            }
        }
    }

    /// While degraded, tries a small write every second; once one commits, writes resume
    /// (and a start that could not record itself is recorded).
    pub(super) fn probe(&mut self) {
        if self.last_probe.elapsed() < PROBE_EVERY {
            return;
        }
        self.last_probe = Instant::now();
        let at = self.clock.now().as_millis().to_string();
        let probed = self.store.commit_wait(Batch::of(vec![Op::PutMeta {
            key: "store_probe".to_owned(),
            value: at,
        }]));
        if let Err(e) = probed {
            // what failed may have changed the store (a cluster member caught up with the
            // cluster's log): memory is re-read once a probe commits, not now (the probe
            // changed nothing in memory)
            self.health.failed(&e);
            self.health.take_diverged();
            self.resync_on_recovery = true;
            return;
        }
        let resync = self.health.take_diverged() | std::mem::take(&mut self.resync_on_recovery);
        if resync && !self.resync_ok() {
            return;
        }
        self.health.recovered();
        tracing::info!("the store takes writes again");
        if let Some(spec) = self.local_pending.take() {
            let t = self.clock.now();
            match self.register_local(t, spec.clone()) {
                Ok((_, _, batch)) => {
                    if let Err(e) = self.store.commit_wait(batch) {
                        self.health.failed(&e);
                        self.local_pending = Some(spec);
                        return;
                    }
                    let events = std::mem::take(&mut self.pending);
                    self.hub.publish(events);
                    tracing::info!(node = %self.local, "the local node is recorded");
                }
                Err(error) => tracing::error!(%error, "cannot register the local node"),
            }
        }
    }

    /// [`Core::resync`], answering whether memory is durable state again.
    fn resync_ok(&mut self) -> bool {
        self.resync();
        !self.health.diverged.load(Ordering::Acquire)
    }
}
