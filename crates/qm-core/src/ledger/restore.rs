//! Rebuilding a ledger after a restart from what was persisted: nodes, pools, the live
//! allocations (with their ids, so nothing is renumbered) and the sequence counters. Derived
//! state (allocated sums, victim indexes, queues, lease expiries, strategy reservations) is
//! recomputed, never trusted from disk.

use std::num::NonZeroU64;

use super::state::SlotTaken;
use super::{Ledger, LedgerConfig, Slot, queue_key, victim_key};
use crate::allocation::{AllocState, Allocation, Extra, Labels, Topology};
use crate::ids::{AllocId, Timestamp};
use crate::node::{Node, NodeSpec, PoolSpec};
use crate::policy::Policy;
use crate::priority::{Priority, Qos};
use crate::resources::Resources;

/// A live allocation as persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationRecord {
    pub id: AllocId,
    pub agent: String,
    pub pool: String,
    /// The node's name, for a grant.
    pub node: Option<String>,
    pub resources: Resources,
    pub limits: Option<Resources>,
    pub priority: Priority,
    pub preemptible: bool,
    /// `Queued` or `Granted`.
    pub state: AllocState,
    pub labels: Labels,
    pub node_selector: Labels,
    pub topology: Topology,
    pub ttl_ms: Option<u64>,
    pub created_at: Timestamp,
    pub granted_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub grant_seq: u64,
}

impl AllocationRecord {
    /// The record of a live allocation, naming its pool and node.
    pub fn of(alloc: &Allocation, pool: &str, node: Option<&str>) -> Self {
        Self {
            id: alloc.id,
            agent: alloc.agent.to_string(),
            pool: pool.to_owned(),
            node: node.map(str::to_owned),
            resources: alloc.resources.clone(),
            limits: alloc.limits().cloned(),
            priority: alloc.priority,
            preemptible: alloc.preemptible,
            state: alloc.state,
            labels: alloc.labels().clone(),
            node_selector: alloc.node_selector().clone(),
            topology: alloc.topology().clone(),
            ttl_ms: alloc.ttl_ms(),
            created_at: alloc.created_at,
            granted_at: alloc.granted_at,
            expires_at: alloc.expires_at,
            grant_seq: alloc.grant_seq,
        }
    }
}

/// Everything needed to rebuild a ledger.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The next allocation sequence number: above every id ever issued, ended ones included.
    pub next_seq: u64,
    /// The next grant sequence number.
    pub next_grant: u64,
    /// Nodes, in registration order, each with whether it takes grants.
    pub nodes: Vec<(NodeSpec, bool)>,
    /// Pools (pool `default` is created if absent).
    pub pools: Vec<PoolSpec>,
    /// Live allocations.
    pub allocations: Vec<AllocationRecord>,
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// A node or pool spec is invalid or named twice.
    #[error("{0}")]
    Spec(String),
    /// An allocation names a pool or node that is not there, is not live, or its slot is taken.
    #[error("allocation {id}: {problem}")]
    Allocation { id: AllocId, problem: String },
}

impl Ledger {
    /// Rebuilds a ledger from `snapshot`, deciding with `policy` from now on. Grants are kept as
    /// they were even where a node's allocatable is now smaller; nothing is drained (call
    /// [`Ledger::expire`] and [`Ledger::drain`] after).
    pub fn restore(
        policy: Box<dyn Policy>,
        config: LedgerConfig,
        snapshot: Snapshot,
    ) -> Result<Self, RestoreError> {
        let mut l = Self::new(policy, config);
        for spec in snapshot.pools {
            if spec.name == "default" {
                spec.validate()
                    .map_err(|e| RestoreError::Spec(format!("pool default: {e}")))?;
                if let Some(p) = l.pool_mut(crate::ids::PoolIdx(0)) {
                    p.spec = spec;
                }
            } else {
                let name = spec.name.clone();
                l.create_pool(spec)
                    .map_err(|e| RestoreError::Spec(format!("pool {name}: {e}")))?;
            }
        }
        for (spec, ready) in snapshot.nodes {
            spec.validate()
                .map_err(|e| RestoreError::Spec(format!("node {}: {e}", spec.name)))?;
            let idx = crate::ids::NodeIdx::from_index(l.state.nodes.len())
                .ok_or_else(|| RestoreError::Spec("too many nodes".to_owned()))?;
            let name: Box<str> = spec.name.as_str().into();
            if l.state.node_names.insert(name.clone(), idx).is_some() {
                return Err(RestoreError::Spec(format!("node {name} is named twice")));
            }
            l.state.nodes.push(Slot {
                name,
                live: Some(Node::new(spec)),
            });
            if let Some(n) = l.node_mut(idx) {
                n.ready = false;
            }
            l.state.index_labels(idx, true);
            if ready {
                l.set_ready(idx, true);
            }
        }
        let mut max_seq = 0;
        let mut max_grant = 0;
        for rec in snapshot.allocations {
            let id = rec.id;
            let bad = |problem: &str| RestoreError::Allocation {
                id,
                problem: problem.to_owned(),
            };
            let (pool, _) = l
                .state
                .pool_by_name(&rec.pool)
                .ok_or_else(|| bad("unknown pool"))?;
            let node = match (&rec.state, &rec.node) {
                (AllocState::Granted, Some(n)) => Some(
                    l.state
                        .node_by_name(n)
                        .ok_or_else(|| bad("unknown node"))?
                        .0,
                ),
                (AllocState::Queued, None) => None,
                _ => return Err(bad("not a live allocation")),
            };
            max_seq = max_seq.max(id.seq());
            max_grant = max_grant.max(rec.grant_seq);
            let plain = rec.limits.is_none()
                && rec.labels.is_empty()
                && rec.node_selector.is_empty()
                && rec.topology.is_empty();
            let qos = Qos::derive(&rec.resources, rec.limits.as_ref());
            let alloc = Allocation {
                id,
                agent: rec.agent.into_boxed_str(),
                resources: rec.resources,
                extra: (!plain).then(|| {
                    Box::new(Extra {
                        limits: rec.limits,
                        labels: rec.labels,
                        node_selector: rec.node_selector,
                        topology: rec.topology,
                    })
                }),
                ending: None,
                ttl_ms: rec.ttl_ms.and_then(NonZeroU64::new),
                created_at: rec.created_at,
                granted_at: rec.granted_at,
                expires_at: rec.expires_at,
                ended_at: None,
                grant_seq: rec.grant_seq,
                pool,
                node,
                priority: rec.priority,
                qos,
                preemptible: rec.preemptible,
                state: rec.state,
            };
            l.index_restored(alloc)
                .map_err(|_| bad("its slot is taken"))?;
        }
        l.state.rebuild_index();
        l.state.next_seq = snapshot.next_seq.max(max_seq + 1).max(1);
        l.state.next_grant = snapshot.next_grant.max(max_grant + 1).max(1);
        l.events.clear();
        Ok(l)
    }

    /// Puts a restored allocation in the slab and every index.
    fn index_restored(&mut self, alloc: Allocation) -> Result<(), SlotTaken> {
        let id = alloc.id;
        let (pool, node, state) = (alloc.pool, alloc.node, alloc.state);
        let (qkey, vkey) = (queue_key(&alloc), victim_key(&alloc));
        let (res, preemptible, expires) =
            (alloc.resources.clone(), alloc.preemptible, alloc.expires_at);
        self.state.allocs.insert_restored(alloc)?;
        if state == AllocState::Queued {
            self.state.n_queued += 1;
            if let Some(p) = self.pool_mut(pool) {
                p.queue.insert(qkey, id);
            }
            if let Some(at) = expires {
                self.state.expiry.insert((at, id));
            }
            return Ok(());
        }
        if let Some(n) = node.and_then(|n| self.node_mut(n)) {
            n.allocated.add(&res);
            n.n_granted += 1;
            if preemptible {
                n.victims.insert(vkey, id);
            }
        }
        if let Some(p) = self.pool_mut(pool) {
            p.allocated.add(&res);
            p.n_granted += 1;
        }
        if let Some(at) = expires {
            self.state.expiry.insert((at, id));
        }
        if let Some(alloc) = self.state.allocs.get(id) {
            let counts = &mut self.state.granted_labels;
            let node_labels = super::granted::spec_labels(&self.state.nodes, alloc.node);
            super::granted::count_grant_labels(
                counts,
                alloc.node,
                node_labels,
                alloc.labels(),
                true,
            );
            self.policy.reserve(&self.state, alloc);
        }
        Ok(())
    }

    /// Everything needed to rebuild this ledger with [`Ledger::restore`].
    pub fn snapshot(&self) -> Snapshot {
        let st = &self.state;
        Snapshot {
            next_seq: st.next_seq,
            next_grant: st.next_grant,
            nodes: st.nodes().map(|(_, n)| (n.spec.clone(), n.ready)).collect(),
            pools: st.pools().map(|(_, p)| p.spec.clone()).collect(),
            allocations: st
                .allocations()
                .map(|a| {
                    let node = a.node.map(|n| st.node_name(n));
                    AllocationRecord::of(a, st.pool_name(a.pool), node)
                })
                .collect(),
        }
    }

    /// The next allocation and grant sequence numbers (persist them with every change).
    pub fn counters(&self) -> (u64, u64) {
        (self.state.next_seq, self.state.next_grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::Request;
    use crate::ledger::tests::FirstFit;

    #[test]
    fn a_restored_ledger_is_the_same_ledger() {
        let t = Timestamp::from_millis(1000);
        let mut l = Ledger::new(Box::new(FirstFit), LedgerConfig::default());
        l.register_node(t, NodeSpec::new("a", Resources::new(2000, 1 << 30)))
            .unwrap();
        l.register_node(t, NodeSpec::new("b", Resources::new(1000, 1 << 30)))
            .unwrap();
        l.create_pool(PoolSpec::new("p")).unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut r = Request::new(&format!("x-{i}"), Resources::new(700, 1 << 20));
            r.queue = true;
            r.ttl_ms = (i % 2 == 0).then_some(5000);
            r.labels.insert("k".into(), "v".into());
            ids.push(l.submit(t, r).unwrap().id.unwrap());
        }
        l.release(t, ids[1]);
        l.clear_events();
        let snap = l.snapshot();
        let mut back =
            Ledger::restore(Box::new(FirstFit), LedgerConfig::default(), snap.clone()).unwrap();
        assert_eq!(format!("{:?}", back.snapshot()), format!("{snap:?}"));
        for (_, n) in l.state().nodes() {
            let (_, m) = back.state().node_by_name(n.name()).unwrap();
            assert_eq!(
                (n.allocated(), n.n_granted()),
                (m.allocated(), m.n_granted())
            );
        }
        // Both go on identically, ids included.
        let later = Timestamp::from_millis(7000);
        assert_eq!(l.expire(later), back.expire(later));
        let r = Request::new("y", Resources::new(100, 1));
        assert_eq!(l.submit(later, r.clone()), back.submit(later, r));
        assert_eq!(
            format!("{:?}", l.take_events()),
            format!("{:?}", back.take_events())
        );
    }

    #[test]
    fn inconsistent_snapshots_are_refused() {
        let t = Timestamp::from_millis(1);
        let mut l = Ledger::new(Box::new(FirstFit), LedgerConfig::default());
        l.register_node(t, NodeSpec::new("a", Resources::new(2000, 1 << 30)))
            .unwrap();
        let id = l
            .submit(t, Request::new("x", Resources::new(1, 1)))
            .unwrap()
            .id
            .unwrap();
        let mut snap = l.snapshot();
        snap.nodes.clear();
        let err = Ledger::restore(Box::new(FirstFit), LedgerConfig::default(), snap).unwrap_err();
        assert_eq!(
            err,
            RestoreError::Allocation {
                id,
                problem: "unknown node".into()
            }
        );
        let mut snap = l.snapshot();
        let twin = snap.allocations[0].clone();
        snap.allocations.push(twin);
        assert!(Ledger::restore(Box::new(FirstFit), LedgerConfig::default(), snap).is_err());
    }
}
