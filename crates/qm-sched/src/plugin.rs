//! The extension points, one trait each, in the shape of the Kubernetes scheduling framework:
//! queue order, filter, score, preempt (post-filter) and reserve/unreserve. A plugin is one
//! object that implements any of them and says which through [`Plugin`]; plugins read the
//! decision's [`CycleState`] and never change the ledger.

use std::fmt;

use qm_core::{Allocation, Node, NodeIdx, Placement, Pool, PoolIdx, QueueRank, State};

/// The largest score a score plugin gives one node.
pub const MAX_SCORE: i64 = 1000;

/// Per-decision, read-only context: the ledger's state, the request, and its pool.
#[derive(Debug, Clone, Copy)]
pub struct CycleState<'a> {
    /// Everything the ledger holds.
    pub state: &'a State,
    /// The request being placed.
    pub request: &'a Allocation,
    /// The request's pool.
    pub pool: &'a Pool,
    /// Visit every node instead of searching the ledger's node index: the reference the
    /// indexed searches are checked against (the answer is the same either way).
    pub exhaustive: bool,
    /// The request's topology rules, resolved once for this decision (`None`: each filter
    /// call resolves them itself, as the exhaustive reference does).
    pub topology: Option<&'a crate::plugins::TopologyPlan<'a>>,
}

impl CycleState<'_> {
    /// True when the request may land on `node` regardless of resources: ready, labels match
    /// the selector, no hold keeps it out, and its spread and affinity rules allow it.
    #[inline]
    pub fn eligible(&self, node: &Node) -> bool {
        node.ready()
            && node.matches(self.request.node_selector())
            && self.state.hold_allows(node, self.request)
            && (self.request.topology().is_empty()
                || self
                    .state
                    .node_by_name(node.name())
                    .is_some_and(|(i, _)| crate::plugins::topology_allows(self, i)))
    }
}

/// Which built-in plugin an instance is, for the framework's fast paths: a profile made only
/// of plugins whose answers the ledger's node index can give exactly is answered by a search
/// of the index instead of a scan of every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `node-selector`.
    NodeSelector,
    /// `node-hold`.
    NodeHold,
    /// `fits`.
    Fits,
    /// `topology`.
    Topology,
    /// `most-allocated`.
    MostAllocated,
    /// `least-allocated`.
    LeastAllocated,
    /// `agent-spread`.
    AgentSpread,
}

/// A plugin, and the extension points it implements.
pub trait Plugin: fmt::Debug + Send {
    /// The name presets refer to it by.
    fn name(&self) -> &'static str;
    /// Which built-in plugin this is; `None` (the default) for any other, which the framework
    /// then always asks node by node.
    fn builtin(&self) -> Option<Builtin> {
        None
    }
    /// The plugin as `Any`, for the framework to read a built-in plugin's own index (the
    /// built-ins that keep one answer; `None` by default).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
    /// Its queue-order side.
    fn queue_order(&self) -> Option<&dyn QueueOrder> {
        None
    }
    /// Its filter side.
    fn filter(&self) -> Option<&dyn Filter> {
        None
    }
    /// Its score side.
    fn score(&self) -> Option<&dyn Score> {
        None
    }
    /// Its preempt side.
    fn preempt(&self) -> Option<&dyn Preempt> {
        None
    }
    /// Its reserve side.
    fn reserve(&mut self) -> Option<&mut dyn Reserve> {
        None
    }
}

/// Decides which pool's queue head is served next: the smallest rank goes first.
pub trait QueueOrder {
    /// The rank of `head`, first in pool `pool`'s queue.
    fn rank(&self, state: &State, pool: PoolIdx, head: &Allocation) -> QueueRank;
}

/// Drops nodes the request cannot go to.
pub trait Filter {
    /// Keeps in `nodes` only those that pass.
    fn filter(&self, cx: &CycleState<'_>, nodes: &mut Vec<NodeIdx>);
}

/// Ranks the nodes that passed every filter.
pub trait Score {
    /// Writes a score in `0..=MAX_SCORE` for each of `nodes` into `out` (same length).
    fn score(&self, cx: &CycleState<'_>, nodes: &[NodeIdx], out: &mut [i64]);
}

/// Runs when no node passes: finds a node and the allocations to take back there.
pub trait Preempt {
    /// A placement with victims, or none when this plugin finds no way.
    fn preempt(&self, cx: &CycleState<'_>) -> Option<Placement>;
}

/// Keeps plugin state in step with grants.
pub trait Reserve {
    /// After `alloc` was granted.
    fn reserve(&mut self, state: &State, alloc: &Allocation);
    /// After a granted `alloc` ended. Must be idempotent.
    fn unreserve(&mut self, state: &State, alloc: &Allocation);
}
