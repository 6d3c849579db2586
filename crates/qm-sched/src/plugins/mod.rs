//! The built-in plugins.

mod filter;
mod preempt;
mod queue;
mod score;
mod topology;

pub use filter::{Fits, NodeHold, NodeSelector};
pub use preempt::{PriorityPreemption, Reclaim};
pub use queue::{DominantShare, PriorityFifo};
pub use score::{AgentSpread, FamilyCounts, LeastAllocated, MostAllocated, family};
pub use topology::{TopologyPlan, TopologyRules, allows as topology_allows, retain_allowed};
