//! Where agents run, in etcd: the leader's placements and the members' reports (the kubelet's
//! contract with the scheduler, on etcd's keys).
//!
//! - `<prefix>/agents/<node>/<name>`: a [`Placement`], written only by the leader, fenced by
//!   its leadership. The member owning `<node>` runs what is under its node's prefix, and
//!   only that (one read of one prefix per member). A placement whose allocation waits in the
//!   queue is under the node `~` (no node name has a `~`).
//! - `<prefix>/agent-status/<name>`: the owner's [`AgentDoc`] of the run, under the owner's
//!   lease: when the owner's lease lapses its reports go with it.
//! - `<prefix>/agent-stop/<name>`: a [`StopRequest`] any member writes for a user; the owner
//!   stops the run of that allocation and reports it ended, and the leader releases the
//!   allocation and removes all three keys.
//! - `<prefix>/learned/<member>`: what the member learned of its agents' sizes, per template
//!   (a [`Learned`]), under its lease, so the `learned` strategy sizes by the whole cluster's
//!   agents wherever it decides.

use std::collections::BTreeMap;

use etcd_client::{GetOptions, PutOptions, TxnOp};
use qm_proto::{AgentDoc, AgentSpec};

use crate::{ClusterError, Member};

/// The node segment of a placement still waiting for its allocation.
pub const QUEUED: &str = "~";

/// What one member learned of its agents' sizes: per template (`fleet/NAME`,
/// `template/NAME`), each of its agents' recommendation (`T`: the recommender's own type).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Learned<T> {
    pub member: String,
    pub templates: BTreeMap<String, Vec<T>>,
}

/// An agent the leader placed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    pub name: String,
    /// The node whose member runs it; [`QUEUED`] while its allocation waits.
    pub node: String,
    /// Its allocation in the leader's ledger (on `node`).
    pub allocation: String,
    /// What to run (never adopting; `allocation` unset: the member runs it under this
    /// placement's).
    pub spec: AgentSpec,
    pub placed_at_ms: u64,
    /// How many times it was placed again because its node was lost.
    #[serde(default)]
    pub moves: u32,
}

impl Placement {
    /// Whether its allocation still waits in the queue.
    pub fn queued(&self) -> bool {
        self.node == QUEUED
    }
}

/// A user's request to stop the run of one allocation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StopRequest {
    pub allocation: String,
    /// Seconds between SIGTERM and SIGKILL (the agent's own when absent).
    #[serde(default)]
    pub grace_s: Option<f64>,
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "unreadable cluster key");
            None
        }
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Says when keys under some prefixes changed (etcd watches), so a reconciler reads etcd
/// only then, not on every round. Starts changed (the first round reads), and says changed
/// again whenever a watch had to be made anew (what happened meanwhile went unheard).
pub struct Changes {
    changed: std::sync::atomic::AtomicBool,
    _watches: Vec<crate::Child>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("changed", &self.changed)
            .finish_non_exhaustive()
    }
}

impl Changes {
    /// Whether anything changed since the last call.
    pub fn take(&self) -> bool {
        self.changed
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

impl Member {
    /// Watches the keys under each of `rests` (`<prefix>/<rest>`).
    pub fn watch_changes(&self, rests: &[&str]) -> std::sync::Arc<Changes> {
        std::sync::Arc::new_cyclic(|weak: &std::sync::Weak<Changes>| {
            let watches = rests
                .iter()
                .map(|rest| {
                    let (me, key, weak) = (self.clone(), self.key(rest), weak.clone());
                    crate::Child(tokio::spawn(async move { me.watch_one(key, weak).await }))
                })
                .collect();
            Changes {
                changed: std::sync::atomic::AtomicBool::new(true),
                _watches: watches,
            }
        })
    }

    async fn watch_one(&self, prefix: String, changes: std::sync::Weak<Changes>) {
        let flag = |changes: &std::sync::Weak<Changes>| match changes.upgrade() {
            Some(c) => {
                c.changed.store(true, std::sync::atomic::Ordering::Release);
                true
            }
            None => false,
        };
        loop {
            let mut client = self.inner.client.clone();
            let watch = client
                .watch(
                    prefix.clone(),
                    Some(etcd_client::WatchOptions::new().with_prefix()),
                )
                .await;
            if let Ok(mut stream) = watch {
                while let Ok(Some(resp)) = stream.message().await {
                    if resp.canceled() {
                        break;
                    }
                    if !resp.events().is_empty() && !flag(&changes) {
                        return;
                    }
                }
            }
            if !flag(&changes) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    fn placement_key(&self, node: &str, name: &str) -> String {
        self.key(&format!("agents/{node}/{name}"))
    }

    fn status_key(&self, name: &str) -> String {
        self.key(&format!("agent-status/{name}"))
    }

    fn stop_key(&self, name: &str) -> String {
        self.key(&format!("agent-stop/{name}"))
    }

    async fn read_prefix<T: serde::de::DeserializeOwned>(
        &self,
        prefix: String,
    ) -> Result<Vec<T>, ClusterError> {
        let resp = self
            .inner
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| decode(kv.key(), kv.value()))
            .collect())
    }

    /// Writes `value` at `key` under this member's lease (gone with the lease).
    async fn put_leased(&self, key: String, value: Vec<u8>) -> Result<(), ClusterError> {
        let Some(lease) = self.view().lease else {
            return Err(ClusterError::Config(
                "this member holds no lease now".into(),
            ));
        };
        self.inner
            .client
            .clone()
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await?;
        Ok(())
    }

    /// Publishes what this member learned (under its lease: gone with it).
    pub async fn publish_learned<T: serde::Serialize>(
        &self,
        learned: &Learned<T>,
    ) -> Result<(), ClusterError> {
        let key = self.key(&format!("learned/{}", self.name()));
        self.put_leased(key, encode(learned)).await
    }

    /// What every other member published it learned.
    pub async fn learned_by_others<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Vec<Learned<T>>, ClusterError> {
        let all: Vec<Learned<T>> = self.read_prefix(self.key("learned/")).await?;
        Ok(all
            .into_iter()
            .filter(|l| l.member != self.name())
            .collect())
    }

    /// Every placement in the cluster.
    pub async fn placements(&self) -> Result<Vec<Placement>, ClusterError> {
        self.read_prefix(self.key("agents/")).await
    }

    /// The placements on `node` (what its member should run).
    pub async fn placements_on(&self, node: &str) -> Result<Vec<Placement>, ClusterError> {
        self.read_prefix(self.key(&format!("agents/{node}/"))).await
    }

    /// Writes a new placement (the leader only).
    pub async fn place(&self, p: &Placement) -> Result<(), ClusterError> {
        let key = self.placement_key(&p.node, &p.name);
        self.fenced(vec![TxnOp::put(key, encode(p), None)]).await
    }

    /// Moves `from` to `to` in one transaction (the leader only): the old node's member no
    /// longer finds it, the new one's does; the old run's report goes.
    pub async fn replace(&self, from: &Placement, to: &Placement) -> Result<(), ClusterError> {
        let mut ops = vec![TxnOp::put(
            self.placement_key(&to.node, &to.name),
            encode(to),
            None,
        )];
        if from.node != to.node {
            ops.push(TxnOp::delete(
                self.placement_key(&from.node, &from.name),
                None,
            ));
        }
        if from.allocation != to.allocation {
            ops.push(TxnOp::delete(self.status_key(&from.name), None));
        }
        self.fenced(ops).await
    }

    /// Removes a placement, its report and its stop request (the leader only).
    pub async fn unplace(&self, p: &Placement) -> Result<(), ClusterError> {
        self.fenced(vec![
            TxnOp::delete(self.placement_key(&p.node, &p.name), None),
            TxnOp::delete(self.status_key(&p.name), None),
            TxnOp::delete(self.stop_key(&p.name), None),
        ])
        .await
    }

    /// Reports this member's run of a placed agent, under its lease (gone with the lease).
    pub async fn report(&self, doc: &AgentDoc) -> Result<(), ClusterError> {
        self.put_leased(self.status_key(&doc.name), encode(doc))
            .await
    }

    /// The members' reports, by agent name.
    pub async fn reports(&self) -> Result<BTreeMap<String, AgentDoc>, ClusterError> {
        let docs: Vec<AgentDoc> = self.read_prefix(self.key("agent-status/")).await?;
        Ok(docs.into_iter().map(|d| (d.name.clone(), d)).collect())
    }

    /// Asks the owner of `name`'s run under `allocation` to stop it (any member may).
    pub async fn request_stop(&self, name: &str, stop: &StopRequest) -> Result<(), ClusterError> {
        self.inner
            .client
            .clone()
            .put(self.stop_key(name), encode(stop), None)
            .await?;
        Ok(())
    }

    /// The stop requests, by agent name.
    pub async fn stop_requests(&self) -> Result<BTreeMap<String, StopRequest>, ClusterError> {
        let resp = self
            .inner
            .client
            .clone()
            .get(
                self.key("agent-stop/"),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        let prefix = self.key("agent-stop/");
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let name = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&prefix)?;
                Some((name.to_owned(), decode(kv.key(), kv.value())?))
            })
            .collect())
    }
}
