//! The seam between the ledger and allocation strategies: the ledger asks a [`Policy`] where a
//! request goes and in what order queues are served, then checks and applies the answer itself,
//! so no strategy can break the ledger's invariants. `qm-sched` implements this trait.

use std::fmt;

use crate::allocation::Allocation;
use crate::ids::{AllocId, NodeIdx, PoolIdx};
use crate::ledger::State;

/// A strategy's answer for one request: the node, and the allocations to preempt for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Where the request goes.
    pub node: NodeIdx,
    /// Granted allocations on that node to take back first (empty when it fits as is).
    pub victims: Vec<AllocId>,
    /// On what grounds the victims are taken.
    pub preemption: Preemption,
}

/// The grounds for preempting. The ledger refuses a placement whose victims do not meet them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preemption {
    /// Nothing is taken.
    None,
    /// Victims have strictly lower priority than the request and are preemptible.
    Priority,
    /// The request's pool stays within its guarantee; victims are preemptible grants of other
    /// pools that hold more than their own guarantee (borrowed capacity, taken back).
    Reclaim,
}

impl Preemption {
    /// The name used in reasons and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Priority => "priority",
            Self::Reclaim => "reclaim",
        }
    }
}

/// A queue head's place in line: the smallest rank is served first. Ties cannot happen, as the
/// last word is the request's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueRank(pub [u64; 3]);

/// An allocation strategy, as the ledger sees it.
pub trait Policy: fmt::Debug + Send {
    /// The strategy's name (`priority`, `fair-share`, ...).
    fn name(&self) -> &str;

    /// Where a queue stands in line, given its head request: the ledger serves the pool whose
    /// head has the smallest rank next. Within a pool, requests go by priority, then arrival.
    fn rank(&self, state: &State, pool: PoolIdx, head: &Allocation) -> QueueRank;

    /// Where `request` goes now, or `None` when it fits nowhere. With `preempt` false the
    /// placement must take no victims. Nodes held for another request (see
    /// [`crate::Node::held_for`]) are open only to that request and to higher priorities.
    fn place(&self, state: &State, request: &Allocation, preempt: bool) -> Option<Placement>;

    /// True when the ledger should answer its own questions (what a request is short of) by
    /// visiting every node rather than searching its indexes: the reference a test compares
    /// the indexed answers against. The answers are the same either way.
    fn exhaustive(&self) -> bool {
        false
    }

    /// Told after `alloc` was granted (its node is set).
    fn reserve(&mut self, state: &State, alloc: &Allocation) {
        let _ = (state, alloc);
    }

    /// Told after a granted `alloc` stopped holding its node (released, preempted, lost...).
    /// Called once per grant; never for a request that was not granted.
    fn unreserve(&mut self, state: &State, alloc: &Allocation) {
        let _ = (state, alloc);
    }
}
