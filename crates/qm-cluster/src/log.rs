//! The cluster's log on etcd: what the leader's store commits, made durable in etcd first. Each
//! group of batches its writer commits is one entry, `<prefix>/log/<seq, 20 digits>`, the
//! operations as JSON, written in one etcd transaction that also checks the leadership key is
//! still the one this member was elected with and that the entry is new: a deposed or paused
//! leader's write fails, and its store writes nothing (`qm_store::Replica`). A group is one
//! etcd write, so the cluster's write rate is etcd's transaction rate times the group size.
//!
//! Each append writes the entry after the one its store holds (the position kept in the
//! store's meta, `cluster_log_seq`, which every append moves). When that entry exists already
//! (another leader wrote since), nothing is appended: the store takes the entries it lacks and
//! the group fails (`ReplicaError::Behind`), so the engine re-reads the state and decides
//! again on what every earlier leader acknowledged. [`EtcdLog::replay`] does the same catch-up
//! ahead of time.

use std::sync::Mutex;

use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, TxnOp};
use qm_store::{Batch, Op, Replica, ReplicaError, Store};

use crate::{ClusterError, Member};

/// The store's meta key holding the last log entry it holds.
pub const LOG_SEQ_META: &str = "cluster_log_seq";

/// The log, written through a [`Member`]'s leadership.
#[derive(Debug)]
pub struct EtcdLog {
    member: Member,
    rt: tokio::runtime::Handle,
    /// The last entry the store holds.
    held: Mutex<u64>,
}

fn parse_seq(key: &[u8], prefix: &str) -> Option<u64> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix(prefix)?
        .parse()
        .ok()
}

impl EtcdLog {
    /// The log of `member`'s cluster; `rt` runs its etcd calls (the store's writer thread is
    /// not on the runtime).
    pub fn new(member: Member, rt: tokio::runtime::Handle) -> Self {
        EtcdLog {
            member,
            rt,
            held: Mutex::new(0),
        }
    }

    fn prefix(&self) -> String {
        self.member.key("log/")
    }

    /// The last entry's number (0 for an empty log).
    pub async fn last(&self) -> Result<u64, ClusterError> {
        let prefix = self.prefix();
        let resp = self
            .member
            .inner
            .client
            .clone()
            .get(
                prefix.clone(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(1)
                        .with_keys_only(),
                ),
            )
            .await?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| parse_seq(kv.key(), &prefix))
            .unwrap_or(0))
    }

    /// Every entry after `after`, in order.
    pub async fn read_after(&self, after: u64) -> Result<Vec<(u64, Vec<Op>)>, ClusterError> {
        let prefix = self.prefix();
        let from = format!("{prefix}{:020}", after + 1);
        let resp = self
            .member
            .inner
            .client
            .clone()
            .get(
                from,
                Some(
                    GetOptions::new()
                        .with_range(format!("{prefix}~"))
                        .with_sort(SortTarget::Key, SortOrder::Ascend),
                ),
            )
            .await?;
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let Some(seq) = parse_seq(kv.key(), &prefix) else {
                continue;
            };
            let ops: Vec<Op> = serde_json::from_slice(kv.value())
                .map_err(|e| ClusterError::Config(format!("log entry {seq}: {e}")))?;
            out.push((seq, ops));
        }
        Ok(out)
    }

    /// Applies to `store` (an unreplicated one) every entry it does not hold yet; answers how
    /// many.
    pub async fn replay(&self, store: &Store) -> Result<usize, ClusterError> {
        let held = store
            .load()
            .map_err(|e| ClusterError::Config(format!("the local store: {e}")))?
            .meta
            .get(LOG_SEQ_META)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let entries = self.read_after(held).await?;
        let n = entries.len();
        for (seq, mut ops) in entries {
            self.hold(seq);
            // another member's agents are never this one's (older entries may hold them)
            ops.retain(|op| !op.is_local());
            ops.push(Op::PutMeta {
                key: LOG_SEQ_META.to_owned(),
                value: seq.to_string(),
            });
            let store = store.clone();
            let entry = Batch {
                ops,
                from_log: true,
            };
            tokio::task::spawn_blocking(move || store.commit_wait(entry))
                .await
                .map_err(|e| ClusterError::Config(e.to_string()))?
                .map_err(|e| ClusterError::Config(format!("the local store: {e}")))?;
        }
        Ok(n)
    }

    fn held(&self) -> u64 {
        self.held.lock().map_or(0, |h| *h)
    }

    fn hold(&self, seq: u64) {
        if let Ok(mut h) = self.held.lock() {
            *h = (*h).max(seq);
        }
    }

    /// Appends `ops` as the entry after the one held: the new position; or what the store
    /// lacks when that entry exists.
    async fn append_async(&self, ops: &[Op]) -> Result<u64, ReplicaError> {
        let refused = |e: ClusterError| ReplicaError::Refused(e.to_string());
        let Some(rev) = self.member.view().leading else {
            return Err(refused(ClusterError::NotLeader));
        };
        let held = self.held();
        let seq = held + 1;
        let key = format!("{}{seq:020}", self.prefix());
        let value = serde_json::to_vec(ops)
            .map_err(|e| ReplicaError::Refused(format!("encoding the entry: {e}")))?;
        let fresh = Compare::create_revision(key.clone(), CompareOp::Equal, 0);
        match self
            .member
            .fenced_when(rev, vec![fresh], vec![TxnOp::put(key, value, None)])
            .await
        {
            Ok(()) => Ok(seq),
            Err(ClusterError::NotLeader) => {
                // deposed, or behind: which?
                let last = self.last().await.map_err(refused)?;
                if last <= held {
                    return Err(refused(ClusterError::NotLeader));
                }
                let mut entries = Vec::new();
                let mut at = held;
                for (s, ops) in self.read_after(held).await.map_err(refused)? {
                    entries.extend(ops.into_iter().filter(|op| !op.is_local()));
                    at = s;
                }
                entries.push(Op::PutMeta {
                    key: LOG_SEQ_META.to_owned(),
                    value: at.to_string(),
                });
                self.hold(at);
                Err(ReplicaError::Behind { entries })
            }
            Err(e) => Err(refused(e)),
        }
    }
}

impl Replica for EtcdLog {
    fn start(&self, meta: &std::collections::BTreeMap<String, String>) {
        if let Some(seq) = meta.get(LOG_SEQ_META).and_then(|v| v.parse().ok()) {
            self.hold(seq);
        }
    }

    /// A thousand operations (about 300 KiB of JSON for allocations) keep an entry well
    /// under etcd's 1.5 MiB request limit.
    fn max_ops(&self) -> usize {
        1000
    }

    fn append(&self, ops: &[Op]) -> Result<Vec<Op>, ReplicaError> {
        let seq = self.rt.block_on(self.append_async(ops))?;
        self.hold(seq);
        Ok(vec![Op::PutMeta {
            key: LOG_SEQ_META.to_owned(),
            value: seq.to_string(),
        }])
    }
}
