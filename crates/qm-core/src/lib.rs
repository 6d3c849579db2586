//! quartermaster's domain model and its ledger. Quantities and resource vectors, ids,
//! priorities and QoS, nodes and pools, requests and allocations, and the [`Ledger`]: the single
//! source of truth for who holds what, a pure state machine that performs no IO and never reads
//! a clock. Strategies plug in through [`Policy`] (implemented in `qm-sched`).

pub mod allocation;
pub mod ids;
pub mod ledger;
pub mod node;
pub mod policy;
pub mod priority;
pub mod quantity;
pub mod resources;

pub use allocation::{
    AllocState, Allocation, FieldError, Labels, MAX_LABELS, MAX_TOPOLOGY_RULES, Request, Spread,
    Term, Topology, ValidationErrors, labels_match,
};
pub use ids::{AllocId, NodeIdx, PoolIdx, Timestamp};
pub use ledger::{
    AllocationRecord, Decision, Event, GrantedSet, Ledger, LedgerConfig, LiveError, NodeError,
    NodeTree, PoolError, ResizeError, RestoreError, Shortfall, ShortfallReason, Snapshot, State,
    SubmitError, Submitted, Summary,
};
pub use node::{NODE_LABEL, Node, NodeSpec, Pool, PoolSpec};
pub use policy::{Placement, Policy, Preemption, QueueRank};
pub use priority::{Priority, PriorityClass, Qos};
pub use resources::{ResourceCatalog, ResourceError, ResourceId, Resources};
