//! Nodes (machines whose capacity the ledger hands out) and pools (tenants' shares): their specs
//! as a client writes them, checked, and the state the ledger keeps for each.

/// The label every node carries with its own name, so a request can ask for one node.
pub const NODE_LABEL: &str = "qm.dev/node";

use std::collections::BTreeMap;

use crate::allocation::{FieldError, Labels, ValidationErrors, check_labels, check_name};
use crate::ids::AllocId;
use crate::resources::Resources;

/// A node as registered: its name, labels, capacity and what of it may be handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Unique name, 1 to 128 of `[A-Za-z0-9._:-]`.
    pub name: String,
    /// Labels that node selectors match.
    pub labels: Labels,
    /// What the machine has.
    pub capacity: Resources,
    /// What may be handed out: capacity minus reserves. Must fit in capacity.
    pub allocatable: Resources,
}

impl NodeSpec {
    /// A node whose whole capacity is allocatable.
    pub fn new(name: &str, capacity: Resources) -> Self {
        Self {
            name: name.to_owned(),
            labels: Labels::new(),
            allocatable: capacity.clone(),
            capacity,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        check_name("name", &self.name, &mut errors);
        check_labels("labels", &self.labels, &mut errors);
        if !self.allocatable.fits(&self.capacity) {
            errors.push(FieldError::new("allocatable", "must not exceed capacity"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// A node and what the ledger has handed out on it.
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) spec: NodeSpec,
    pub(crate) ready: bool,
    pub(crate) allocated: Resources,
    pub(crate) n_granted: u32,
    /// Preemptible grants, lowest priority first, then most recently granted first.
    pub(crate) victims: BTreeMap<u64, AllocId>,
    pub(crate) held_for: Option<AllocId>,
    pub(crate) inv_allocatable: [f64; 4],
}

impl Node {
    pub(crate) fn new(spec: NodeSpec) -> Self {
        let inv_allocatable = inverse(&spec.allocatable);
        Self {
            spec,
            ready: true,
            allocated: Resources::default(),
            n_granted: 0,
            victims: BTreeMap::new(),
            held_for: None,
            inv_allocatable,
        }
    }

    pub(crate) fn respec(&mut self, spec: NodeSpec) {
        self.inv_allocatable = inverse(&spec.allocatable);
        self.spec = spec;
    }

    /// The spec it was registered with.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }
    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
    /// Whether new grants may land on it.
    pub fn ready(&self) -> bool {
        self.ready
    }
    /// What may be handed out.
    pub fn allocatable(&self) -> &Resources {
        &self.spec.allocatable
    }
    /// What is handed out.
    pub fn allocated(&self) -> &Resources {
        &self.allocated
    }
    /// What is left: allocatable minus allocated.
    pub fn available(&self) -> Resources {
        self.spec.allocatable.saturating_sub(&self.allocated)
    }
    /// How many grants it holds.
    pub fn n_granted(&self) -> u32 {
        self.n_granted
    }
    /// The queued request this node is held for (so it is not starved), if any.
    pub fn held_for(&self) -> Option<AllocId> {
        self.held_for
    }
    /// True when `request` fits in what is left.
    #[inline]
    pub fn fits(&self, request: &Resources) -> bool {
        request.fits_beside(&self.allocated, &self.spec.allocatable)
    }
    /// True when the node carries every label of `selector`.
    pub fn matches(&self, selector: &Labels) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.spec.labels.get(k) == Some(v))
    }
    /// The preemptible grants on this node, lowest priority first, then the most recently
    /// granted first: the order victims are taken in.
    pub fn victims(&self) -> impl Iterator<Item = AllocId> + '_ {
        self.victims.values().copied()
    }
    /// Like [`Node::victims`], with each victim's priority and grant order read off the index
    /// (no lookup of the allocation needed).
    pub fn victim_entries(&self) -> impl Iterator<Item = (u16, u64, AllocId)> + '_ {
        self.victims.iter().map(|(k, id)| {
            let (priority, grant_seq) = crate::ledger::decode_victim_key(*k);
            (priority, grant_seq, *id)
        })
    }
    /// `1 / allocatable` for cpu, memory, ephemeral storage and gpu (0 where none), so scoring
    /// multiplies instead of dividing.
    pub fn inv_allocatable(&self) -> &[f64; 4] {
        &self.inv_allocatable
    }
}

fn inverse(r: &Resources) -> [f64; 4] {
    let mut out = [0.0; 4];
    for (id, v) in r.iter() {
        if let Some(slot) = out.get_mut(id.index()) {
            #[allow(clippy::cast_precision_loss)]
            let v = v as f64;
            *slot = 1.0 / v;
        }
    }
    out
}

/// A pool as a client writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Unique name.
    pub name: String,
    /// Its weight in fair sharing, 1..=1000.
    pub weight: u32,
    /// Capacity it is owed: under `fair-share`, others' borrowing is reclaimed to give it this.
    pub guaranteed: Resources,
    /// The most it may hold, borrowing included; none for no limit.
    pub limit: Option<Resources>,
}

impl PoolSpec {
    /// A pool of weight 1 with no guarantee and no limit.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            weight: 1,
            guaranteed: Resources::default(),
            limit: None,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        check_name("name", &self.name, &mut errors);
        if !(1..=1000).contains(&self.weight) {
            errors.push(FieldError::new(
                "weight",
                format!("{} is out of range 1..=1000", self.weight),
            ));
        }
        if let Some(limit) = &self.limit
            && !self.guaranteed.fits_under_cap(&Resources::default(), limit)
        {
            errors.push(FieldError::new("guaranteed", "must not exceed limit"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// A pool and what it holds and waits for.
#[derive(Debug, Clone)]
pub struct Pool {
    pub(crate) spec: PoolSpec,
    pub(crate) allocated: Resources,
    pub(crate) n_granted: u32,
    /// Queued requests in the order the pool serves them: priority, then arrival.
    pub(crate) queue: BTreeMap<u64, AllocId>,
}

impl Pool {
    pub(crate) fn new(spec: PoolSpec) -> Self {
        Self {
            spec,
            allocated: Resources::default(),
            n_granted: 0,
            queue: BTreeMap::new(),
        }
    }
    /// The spec.
    pub fn spec(&self) -> &PoolSpec {
        &self.spec
    }
    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
    /// Its fair-share weight.
    pub fn weight(&self) -> u32 {
        self.spec.weight
    }
    /// Its guarantee.
    pub fn guaranteed(&self) -> &Resources {
        &self.spec.guaranteed
    }
    /// Its limit.
    pub fn limit(&self) -> Option<&Resources> {
        self.spec.limit.as_ref()
    }
    /// What it holds.
    pub fn allocated(&self) -> &Resources {
        &self.allocated
    }
    /// How many grants it holds.
    pub fn n_granted(&self) -> u32 {
        self.n_granted
    }
    /// How many of its requests wait.
    pub fn n_queued(&self) -> usize {
        self.queue.len()
    }
    /// The queued requests in the order this pool serves them.
    pub fn queued(&self) -> impl Iterator<Item = AllocId> + '_ {
        self.queue.values().copied()
    }
    /// True when it holds more than its guarantee of a resource the guarantee names, or holds
    /// anything without a guarantee: it is using capacity borrowed from others.
    pub fn is_borrowing(&self) -> bool {
        !self.allocated.within_guarantee(&self.spec.guaranteed)
    }
    /// True when granting `request` keeps it within its guarantee.
    pub fn within_guarantee(&self, request: &Resources) -> bool {
        self.allocated
            .saturating_add(request)
            .within_guarantee(&self.spec.guaranteed)
    }
    /// True when `request` fits under its limit (on the resources the limit names).
    #[inline]
    pub fn fits(&self, request: &Resources) -> bool {
        self.spec
            .limit
            .as_ref()
            .is_none_or(|l| request.fits_under_cap(&self.allocated, l))
    }
}
