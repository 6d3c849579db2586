//! Strategy presets: each is data — which plugins run at which extension point, in what order,
//! with what weights — and a [`Profile`] is its owned, editable form (a config file may set
//! the plugins one by one).

use crate::registry::RegistryError;

/// A named, built-in strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The name given to `--strategy`.
    pub name: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// The queue-order plugin.
    pub queue_order: &'static str,
    /// Filter plugins, in order.
    pub filters: &'static [&'static str],
    /// Score plugins with their weights.
    pub scores: &'static [(&'static str, u32)],
    /// Preempt plugins, tried in order.
    pub preempt: &'static [&'static str],
    /// Reserve plugins.
    pub reserve: &'static [&'static str],
    /// Whether admission sizes each request by what its template was seen to use (the daemon
    /// does it before the ledger decides; see `qm_engine::Sizer`).
    pub sizes_by_usage: bool,
}

const FILTERS: &[&str] = &["node-selector", "node-hold", "fits", "topology"];

static PRESETS: [Preset; 6] = [
    Preset {
        name: "priority",
        summary: "priority order, preemption of strictly lower priorities, best-fit placement (default)",
        queue_order: "priority-fifo",
        filters: FILTERS,
        scores: &[("most-allocated", 1)],
        preempt: &["priority-preemption"],
        reserve: &[],
        sizes_by_usage: false,
    },
    Preset {
        name: "fair-share",
        summary: "weighted DRF across pools; guarantees honoured, borrowed capacity reclaimed",
        queue_order: "drf",
        filters: FILTERS,
        scores: &[("most-allocated", 1)],
        preempt: &["reclaim", "priority-preemption"],
        reserve: &[],
        sizes_by_usage: false,
    },
    Preset {
        name: "best-fit",
        summary: "priority order, no preemption, the fullest node that fits",
        queue_order: "priority-fifo",
        filters: FILTERS,
        scores: &[("most-allocated", 1)],
        preempt: &[],
        reserve: &[],
        sizes_by_usage: false,
    },
    Preset {
        name: "first-fit",
        summary: "priority order, no preemption, the first node (in registration order) that fits",
        queue_order: "priority-fifo",
        filters: FILTERS,
        scores: &[],
        preempt: &[],
        reserve: &[],
        sizes_by_usage: false,
    },
    Preset {
        name: "spread",
        summary: "priority order, no preemption, the emptiest node, an agent family's replicas apart",
        queue_order: "priority-fifo",
        filters: FILTERS,
        scores: &[("least-allocated", 1), ("agent-spread", 2)],
        preempt: &[],
        reserve: &["agent-spread"],
        sizes_by_usage: false,
    },
    Preset {
        name: "learned",
        summary: "priority's placement and preemption, each request sized by its template's observed usage",
        queue_order: "priority-fifo",
        filters: FILTERS,
        scores: &[("most-allocated", 1)],
        preempt: &["priority-preemption"],
        reserve: &[],
        sizes_by_usage: true,
    },
];

/// The built-in strategies, the default (`priority`) first.
pub fn presets() -> &'static [Preset] {
    &PRESETS
}

/// The built-in strategy called `name`.
pub fn preset(name: &str) -> Result<&'static Preset, RegistryError> {
    PRESETS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| RegistryError::UnknownStrategy {
            name: name.to_owned(),
            known: PRESETS
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A strategy's plugin line-up, owned so it can come from a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The strategy's name.
    pub name: String,
    /// The queue-order plugin.
    pub queue_order: String,
    /// Filter plugins, in order.
    pub filters: Vec<String>,
    /// Score plugins with weights (1..=100).
    pub scores: Vec<(String, u32)>,
    /// Preempt plugins, tried in order.
    pub preempt: Vec<String>,
    /// Reserve plugins.
    pub reserve: Vec<String>,
}

impl From<&Preset> for Profile {
    fn from(p: &Preset) -> Self {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Self {
            name: p.name.to_owned(),
            queue_order: p.queue_order.to_owned(),
            filters: owned(p.filters),
            scores: p
                .scores
                .iter()
                .map(|(n, w)| ((*n).to_owned(), *w))
                .collect(),
            preempt: owned(p.preempt),
            reserve: owned(p.reserve),
        }
    }
}
