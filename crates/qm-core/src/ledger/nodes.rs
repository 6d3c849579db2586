//! Ledger commands that change the cluster's shape: registering, updating, readying, losing and
//! removing nodes; creating, updating and deleting pools. Each either applies whole or changes
//! nothing and says why.

use super::{Event, Ledger, Slot};
use crate::allocation::{AllocState, ValidationErrors};
use crate::ids::{AllocId, NodeIdx, PoolIdx, Timestamp};
use crate::node::{Node, NodeSpec, Pool, PoolSpec};
use crate::resources::Resources;

/// Why a node command was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// Fields are invalid.
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    /// Registering a name that is taken.
    #[error("node {0:?} already exists")]
    Exists(String),
    /// No node has that name.
    #[error("no node named {0:?}")]
    Unknown(String),
    /// Shrinking allocatable below what is handed out.
    #[error("allocatable: node {name:?} has more than that handed out ({missing:?} over)")]
    BelowAllocated { name: String, missing: Resources },
    /// Removing a node that holds grants, without force.
    #[error("node {name:?} holds {n_granted} live allocations; use force to remove it")]
    Busy { name: String, n_granted: u32 },
}

/// Why a pool command was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Fields are invalid.
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    /// Creating a name that is taken.
    #[error("pool {0:?} already exists")]
    Exists(String),
    /// No pool has that name.
    #[error("no pool named {0:?}")]
    Unknown(String),
    /// Lowering the limit below what the pool holds.
    #[error("limit: pool {name:?} holds more than that ({missing:?} over)")]
    BelowAllocated { name: String, missing: Resources },
    /// Deleting a pool with live allocations.
    #[error("pool {name:?} has {n_live} live allocations")]
    Busy { name: String, n_live: usize },
    /// Deleting pool `default`.
    #[error("pool \"default\" cannot be deleted")]
    Default,
}

impl Ledger {
    /// Adds a ready node; queued requests may land on it at once.
    pub fn register_node(&mut self, now: Timestamp, spec: NodeSpec) -> Result<NodeIdx, NodeError> {
        spec.validate()?;
        if self.state.node_names.contains_key(spec.name.as_str()) {
            return Err(NodeError::Exists(spec.name));
        }
        let idx = NodeIdx::from_index(self.state.nodes.len())
            .ok_or_else(|| NodeError::Exists(spec.name.clone()))?;
        let name: Box<str> = spec.name.as_str().into();
        self.state.node_names.insert(name.clone(), idx);
        self.state.nodes.push(Slot {
            name,
            live: Some(Node::new(spec)),
        });
        self.state.index_labels(idx, true);
        self.set_ready(idx, true);
        self.drain(now);
        Ok(idx)
    }

    /// Changes a node's labels, capacity or allocatable. Refused when allocatable would drop
    /// below what is already handed out there.
    pub fn update_node(&mut self, now: Timestamp, spec: NodeSpec) -> Result<(), NodeError> {
        spec.validate()?;
        let (idx, node) = self
            .state
            .node_by_name(&spec.name)
            .ok_or_else(|| NodeError::Unknown(spec.name.clone()))?;
        if !node.allocated.fits(&spec.allocatable) {
            let missing = spec.allocatable.shortfall_for(&node.allocated);
            return Err(NodeError::BelowAllocated {
                name: spec.name,
                missing,
            });
        }
        if node.ready {
            let old = node.spec.allocatable.clone();
            self.state.total.sub(&old);
            self.state.total.add(&spec.allocatable);
        }
        self.state.index_labels(idx, false);
        if let Some(n) = self.node_mut(idx) {
            n.respec(spec);
        }
        self.state.index_labels(idx, true);
        self.state.reindex(idx);
        self.drain(now);
        Ok(())
    }

    /// Opens (`true`) or closes a node to new grants; its grants stay. A closed node keeps no
    /// hold.
    pub fn set_node_ready(
        &mut self,
        now: Timestamp,
        name: &str,
        ready: bool,
    ) -> Result<(), NodeError> {
        let (idx, _) = self
            .state
            .node_by_name(name)
            .ok_or_else(|| NodeError::Unknown(name.to_owned()))?;
        self.set_ready(idx, ready);
        if ready {
            self.drain(now);
        }
        Ok(())
    }

    /// The node went away (e.g. missed its heartbeat): it takes no grants and every grant on
    /// it becomes `lost`. Returns how many were lost.
    pub fn lose_node(&mut self, now: Timestamp, name: &str) -> Result<usize, NodeError> {
        let (idx, _) = self
            .state
            .node_by_name(name)
            .ok_or_else(|| NodeError::Unknown(name.to_owned()))?;
        self.set_ready(idx, false);
        let n = self.lose_grants(now, idx);
        self.drain(now);
        Ok(n)
    }

    /// Removes a node. Refused while it holds grants unless `force`, which makes them `lost`.
    pub fn remove_node(
        &mut self,
        now: Timestamp,
        name: &str,
        force: bool,
    ) -> Result<usize, NodeError> {
        let (idx, node) = self
            .state
            .node_by_name(name)
            .ok_or_else(|| NodeError::Unknown(name.to_owned()))?;
        if node.n_granted > 0 && !force {
            return Err(NodeError::Busy {
                name: name.to_owned(),
                n_granted: node.n_granted,
            });
        }
        self.set_ready(idx, false);
        let n = self.lose_grants(now, idx);
        self.state.node_names.remove(name);
        self.state.index_labels(idx, false);
        if let Some(slot) = self.state.nodes.get_mut(idx.index()) {
            slot.live = None;
        }
        self.state.reindex(idx);
        self.drain(now);
        Ok(n)
    }

    fn lose_grants(&mut self, now: Timestamp, idx: NodeIdx) -> usize {
        let ids: Vec<AllocId> = self
            .state
            .allocations()
            .filter(|a| a.node == Some(idx) && a.state == AllocState::Granted)
            .map(|a| a.id)
            .collect();
        for id in &ids {
            let reason = format!("node {} lost", self.state.node_name(idx));
            self.end(now, *id, AllocState::Lost, Some(reason.into()), None);
        }
        ids.len()
    }

    pub(super) fn set_ready(&mut self, idx: NodeIdx, ready: bool) {
        let Some(node) = self.state.node(idx) else {
            return;
        };
        if node.ready == ready && (ready == self.state.ready.contains(&idx)) {
            return;
        }
        let allocatable = node.spec.allocatable.clone();
        let held = node.held_for;
        if ready {
            let pos = self.state.ready.partition_point(|i| *i < idx);
            self.state.ready.insert(pos, idx);
            self.state.total.add(&allocatable);
            self.events.push(Event::NodeReady { node: idx });
        } else {
            self.state.ready.retain(|i| *i != idx);
            self.state.total.sub(&allocatable);
            if let Some(h) = held {
                self.unhold(h);
            }
            self.events.push(Event::NodeNotReady { node: idx });
        }
        if let Some(n) = self.node_mut(idx) {
            n.ready = ready;
        }
        self.state.reindex(idx);
    }

    /// Creates a pool.
    pub fn create_pool(&mut self, spec: PoolSpec) -> Result<PoolIdx, PoolError> {
        spec.validate()?;
        if self.state.pool_names.contains_key(spec.name.as_str()) {
            return Err(PoolError::Exists(spec.name));
        }
        let idx = PoolIdx(
            u32::try_from(self.state.pools.len())
                .map_err(|_| PoolError::Exists(spec.name.clone()))?,
        );
        let name: Box<str> = spec.name.as_str().into();
        self.state.pool_names.insert(name.clone(), idx);
        self.state.pools.push(Slot {
            name,
            live: Some(Pool::new(spec)),
        });
        Ok(idx)
    }

    /// Changes a pool's weight, guarantee or limit. Refused when the limit would drop below
    /// what the pool holds.
    pub fn update_pool(&mut self, now: Timestamp, spec: PoolSpec) -> Result<(), PoolError> {
        spec.validate()?;
        let (idx, pool) = self
            .state
            .pool_by_name(&spec.name)
            .ok_or_else(|| PoolError::Unknown(spec.name.clone()))?;
        if let Some(limit) = &spec.limit
            && !pool.allocated.fits(limit)
        {
            let missing = limit.shortfall_for(&pool.allocated);
            return Err(PoolError::BelowAllocated {
                name: spec.name,
                missing,
            });
        }
        if let Some(p) = self.pool_mut(idx) {
            p.spec = spec;
        }
        self.drain(now);
        Ok(())
    }

    /// Deletes a pool that holds and waits for nothing. Pool `default` stays.
    pub fn delete_pool(&mut self, name: &str) -> Result<(), PoolError> {
        if name == "default" {
            return Err(PoolError::Default);
        }
        let (idx, pool) = self
            .state
            .pool_by_name(name)
            .ok_or_else(|| PoolError::Unknown(name.to_owned()))?;
        let n_live = pool.n_granted as usize + pool.n_queued();
        if n_live > 0 {
            return Err(PoolError::Busy {
                name: name.to_owned(),
                n_live,
            });
        }
        self.state.pool_names.remove(name);
        if let Some(slot) = self.state.pools.get_mut(idx.index()) {
            slot.live = None;
        }
        Ok(())
    }
}
