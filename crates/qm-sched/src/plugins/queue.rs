//! Queue-order plugins: strict priority then arrival, and weighted dominant resource fairness
//! (Ghodsi et al., NSDI 2011) across pools.

use qm_core::{Allocation, PoolIdx, QueueRank, State};

use crate::plugin::{Plugin, QueueOrder};

/// `priority-fifo`: the highest priority head first, then the oldest.
#[derive(Debug, Default)]
pub struct PriorityFifo;

impl Plugin for PriorityFifo {
    fn name(&self) -> &'static str {
        "priority-fifo"
    }
    fn queue_order(&self) -> Option<&dyn QueueOrder> {
        Some(self)
    }
}

impl QueueOrder for PriorityFifo {
    fn rank(&self, _: &State, _: PoolIdx, head: &Allocation) -> QueueRank {
        QueueRank([
            0,
            u64::from(1000 - head.priority().get().min(1000)),
            head.id().seq(),
        ])
    }
}

/// `drf`: the pool with the smallest weighted dominant share first (its allocation's largest
/// fraction of the ready cluster, divided by its weight); ties by priority, then arrival.
#[derive(Debug, Default)]
pub struct DominantShare;

impl Plugin for DominantShare {
    fn name(&self) -> &'static str {
        "drf"
    }
    fn queue_order(&self) -> Option<&dyn QueueOrder> {
        Some(self)
    }
}

impl QueueOrder for DominantShare {
    fn rank(&self, state: &State, pool: PoolIdx, head: &Allocation) -> QueueRank {
        let share = state.pool(pool).map_or(0.0, |p| {
            p.allocated().dominant_share(state.total_allocatable()) / f64::from(p.weight().max(1))
        });
        // Non-negative floats order like their bit patterns.
        QueueRank([
            share.max(0.0).to_bits(),
            u64::from(1000 - head.priority().get().min(1000)),
            head.id().seq(),
        ])
    }
}
