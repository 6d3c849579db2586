//! quartermaster's allocation framework. Strategies are built from plugins at extension points
//! in the Kubernetes scheduling-framework style (queue order, filter, score, preempt,
//! reserve/unreserve), found by name in an explicit [`Registry`], and assembled by [`Framework`]
//! from a [`Profile`]: the built-in presets are `priority` (the default), `fair-share`,
//! `best-fit`, `first-fit`, `spread` and `learned` (priority's line-up, with requests sized by
//! observed usage at admission). A framework is the [`qm_core::Policy`] the ledger asks.

mod framework;
mod plugin;
pub mod plugins;
mod preset;
mod registry;
mod search;

pub use framework::Framework;
pub use plugin::{
    Builtin, CycleState, Filter, MAX_SCORE, Plugin, Preempt, QueueOrder, Reserve, Score,
};
pub use preset::{Preset, Profile, preset, presets};
pub use registry::{Factory, Registry, RegistryError};

use qm_core::{Ledger, LedgerConfig};

/// A ledger deciding with the built-in strategy `name`.
pub fn ledger(name: &str, config: LedgerConfig) -> Result<Ledger, RegistryError> {
    Ok(Ledger::new(Box::new(Framework::preset(name)?), config))
}
