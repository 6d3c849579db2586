//! What the ledger holds, and the read-only view strategies get of it: nodes, pools, live
//! allocations (kept in a chunked slab addressed by the id's slot), lease expiries and holds.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use super::granted::{GrantCounts, GrantedSet, count_grant_labels, count_node_grants, spec_labels};
use super::index::{NodeTree, STANDARD};
use crate::allocation::{Allocation, Labels};
use crate::ids::{AllocId, MAX_LIVE, NodeIdx, PoolIdx, Timestamp};
use crate::node::{Node, Pool};
use crate::resources::Resources;

const CHUNK: usize = 1024;
const KEY_SHIFT: u32 = 50;
const KEY_LOW: u64 = (1 << KEY_SHIFT) - 1;

/// The order a pool serves its queue in: priority (highest first), then arrival.
pub(crate) fn queue_key(alloc: &Allocation) -> u64 {
    (u64::from(1000 - alloc.priority.get().min(1000)) << KEY_SHIFT) | (alloc.id.seq() & KEY_LOW)
}

/// The order victims are taken in on a node: lowest priority first, then most recently granted.
pub(crate) fn victim_key(alloc: &Allocation) -> u64 {
    (u64::from(alloc.priority.get()) << KEY_SHIFT) | (KEY_LOW - (alloc.grant_seq & KEY_LOW))
}

/// The priority and grant order a victim key was made from.
pub(crate) fn decode_victim_key(key: u64) -> (u16, u64) {
    let priority = u16::try_from(key >> KEY_SHIFT).unwrap_or(u16::MAX);
    (priority, KEY_LOW - (key & KEY_LOW))
}

/// A table entry: the name outlives the node or pool, so ended allocations can still name it.
#[derive(Debug, Clone)]
pub(crate) struct Slot<T> {
    pub(crate) name: Box<str>,
    pub(crate) live: Option<T>,
}

/// A restored allocation's slot is out of range or already holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotTaken;

/// Live allocations in fixed-size chunks: a grant never moves another allocation, and the
/// memory held beyond the live ones is at most one chunk plus vacated slots.
#[derive(Debug, Default)]
pub(crate) struct Slab {
    chunks: Vec<Box<[Option<Allocation>]>>,
    free: Vec<u32>,
    high_water: usize,
    live: usize,
}

impl Slab {
    pub(crate) fn get(&self, id: AllocId) -> Option<&Allocation> {
        let slot = id.slot();
        self.chunks
            .get(slot / CHUNK)?
            .get(slot % CHUNK)?
            .as_ref()
            .filter(|a| a.id == id)
    }

    pub(crate) fn get_mut(&mut self, id: AllocId) -> Option<&mut Allocation> {
        let slot = id.slot();
        self.chunks
            .get_mut(slot / CHUNK)?
            .get_mut(slot % CHUNK)?
            .as_mut()
            .filter(|a| a.id == id)
    }

    /// The slot the next allocation will take, if there is room.
    pub(crate) fn next_slot(&self) -> Option<usize> {
        match self.free.last() {
            Some(s) => Some(*s as usize),
            None if self.high_water < MAX_LIVE => Some(self.high_water),
            None => None,
        }
    }

    /// Stores `alloc` in the slot its id names, which must be [`Slab::next_slot`].
    pub(crate) fn insert(&mut self, alloc: Allocation) {
        let slot = alloc.id.slot();
        if self.free.last().is_some_and(|s| *s as usize == slot) {
            self.free.pop();
        } else {
            debug_assert_eq!(slot, self.high_water);
            self.high_water += 1;
            if slot / CHUNK >= self.chunks.len() {
                self.chunks.push((0..CHUNK).map(|_| None).collect());
            }
        }
        if let Some(place) = self
            .chunks
            .get_mut(slot / CHUNK)
            .and_then(|c| c.get_mut(slot % CHUNK))
        {
            *place = Some(alloc);
            self.live += 1;
        }
    }

    /// Stores `alloc` in the slot its id names, whatever the slot (restoring after a restart).
    /// Slots skipped over become free. Refused when the slot is taken or out of range.
    pub(crate) fn insert_restored(&mut self, alloc: Allocation) -> Result<(), SlotTaken> {
        let slot = alloc.id.slot();
        if slot >= MAX_LIVE {
            return Err(SlotTaken);
        }
        while self.high_water <= slot {
            if self.high_water / CHUNK >= self.chunks.len() {
                self.chunks.push((0..CHUNK).map(|_| None).collect());
            }
            if let Ok(s) = u32::try_from(self.high_water) {
                self.free.push(s);
            }
            self.high_water += 1;
        }
        let Some(place) = self
            .chunks
            .get_mut(slot / CHUNK)
            .and_then(|c| c.get_mut(slot % CHUNK))
        else {
            return Err(SlotTaken);
        };
        if place.is_some() {
            return Err(SlotTaken);
        }
        *place = Some(alloc);
        self.live += 1;
        self.free.retain(|s| *s as usize != slot);
        Ok(())
    }

    pub(crate) fn remove(&mut self, id: AllocId) -> Option<Allocation> {
        let slot = id.slot();
        let place = self.chunks.get_mut(slot / CHUNK)?.get_mut(slot % CHUNK)?;
        if place.as_ref().is_none_or(|a| a.id != id) {
            return None;
        }
        self.live -= 1;
        self.free.push(u32::try_from(slot).ok()?);
        place.take()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Allocation> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .filter_map(Option::as_ref)
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }
}

/// Everything the ledger knows. Strategies read it; only the ledger changes it.
#[derive(Debug, Default)]
pub struct State {
    pub(crate) nodes: Vec<Slot<Node>>,
    pub(crate) node_names: BTreeMap<Box<str>, NodeIdx>,
    pub(crate) ready: Vec<NodeIdx>,
    pub(crate) pools: Vec<Slot<Pool>>,
    pub(crate) pool_names: BTreeMap<Box<str>, PoolIdx>,
    pub(crate) allocs: Slab,
    pub(crate) expiry: BTreeSet<(Timestamp, AllocId)>,
    pub(crate) holds: BTreeMap<AllocId, NodeIdx>,
    pub(crate) total: Resources,
    pub(crate) next_seq: u64,
    pub(crate) next_grant: u64,
    pub(crate) n_queued: usize,
    pub(crate) refused_placements: Cell<u64>,
    pub(crate) tree: NodeTree,
    /// Label key → value → the present nodes carrying it (an inverted index for selectors).
    pub(crate) labelled: BTreeMap<Box<str>, BTreeMap<Box<str>, BTreeSet<NodeIdx>>>,
    /// How many grants carry each label, per node and per domain of node labels (for
    /// topology rules).
    pub(crate) granted_labels: GrantCounts,
}

impl State {
    /// A node by index (none once removed).
    #[inline]
    pub fn node(&self, idx: NodeIdx) -> Option<&Node> {
        self.nodes.get(idx.index()).and_then(|s| s.live.as_ref())
    }
    /// A node by name.
    pub fn node_by_name(&self, name: &str) -> Option<(NodeIdx, &Node)> {
        let idx = *self.node_names.get(name)?;
        Some((idx, self.node(idx)?))
    }
    /// The name a node index had, even after the node was removed.
    pub fn node_name(&self, idx: NodeIdx) -> &str {
        self.nodes.get(idx.index()).map_or("", |s| &s.name)
    }
    /// Every present node, in registration order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeIdx, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((NodeIdx::from_index(i)?, s.live.as_ref()?)))
    }
    /// The nodes new grants may land on, in registration order.
    pub fn ready_nodes(&self) -> &[NodeIdx] {
        &self.ready
    }
    /// A pool by index (none once deleted).
    #[inline]
    pub fn pool(&self, idx: PoolIdx) -> Option<&Pool> {
        self.pools.get(idx.index()).and_then(|s| s.live.as_ref())
    }
    /// A pool by name.
    pub fn pool_by_name(&self, name: &str) -> Option<(PoolIdx, &Pool)> {
        let idx = *self.pool_names.get(name)?;
        Some((idx, self.pool(idx)?))
    }
    /// The name a pool index had, even after the pool was deleted.
    pub fn pool_name(&self, idx: PoolIdx) -> &str {
        self.pools.get(idx.index()).map_or("", |s| &s.name)
    }
    /// Every pool, in creation order.
    pub fn pools(&self) -> impl Iterator<Item = (PoolIdx, &Pool)> {
        self.pools
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((PoolIdx(u32::try_from(i).ok()?), s.live.as_ref()?)))
    }
    /// A live (queued or granted) allocation.
    #[inline]
    pub fn alloc(&self, id: AllocId) -> Option<&Allocation> {
        self.allocs.get(id)
    }
    /// Every live allocation.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.allocs.iter()
    }
    /// How many allocations are live.
    pub fn n_live(&self) -> usize {
        self.allocs.len()
    }
    /// How many requests wait.
    pub fn n_queued(&self) -> usize {
        self.n_queued
    }
    /// Queued requests holding a node so they are not starved, with the node.
    pub fn holds(&self) -> impl Iterator<Item = (AllocId, NodeIdx)> + '_ {
        self.holds.iter().map(|(a, n)| (*a, *n))
    }
    /// What the ready nodes may hand out, together: the denominator of dominant shares.
    pub fn total_allocatable(&self) -> &Resources {
        &self.total
    }
    /// Placements a strategy proposed that broke the ledger's rules and were refused
    /// (zero with the built-in strategies; a strategy bug otherwise).
    pub fn refused_placements(&self) -> u64 {
        self.refused_placements.get()
    }
    /// True when `request` may use `node` with respect to holds: the node is not held, or is
    /// held for this very request, or for a lower priority one.
    #[inline]
    pub fn hold_allows(&self, node: &Node, request: &Allocation) -> bool {
        match node.held_for {
            None => true,
            Some(h) if h == request.id => true,
            Some(h) => self
                .alloc(h)
                .is_none_or(|holder| holder.priority < request.priority),
        }
    }
    /// The node index: ready nodes' free capacity, fullness and first victims, summed over
    /// ranges of the node table, for strategies that search instead of scanning.
    pub fn node_tree(&self) -> &NodeTree {
        &self.tree
    }
    /// The present nodes carrying label `key` = `value`, in registration order (ready or not).
    pub fn nodes_labelled(&self, key: &str, value: &str) -> impl Iterator<Item = NodeIdx> + '_ {
        self.labelled
            .get(key)
            .and_then(|values| values.get(value))
            .into_iter()
            .flatten()
            .copied()
    }
    /// How many present nodes carry label `key` = `value`.
    pub fn n_labelled(&self, key: &str, value: &str) -> usize {
        self.labelled
            .get(key)
            .and_then(|values| values.get(value))
            .map_or(0, BTreeSet::len)
    }
    /// Every value of label `key` present nodes carry, with those nodes (ready or not), in
    /// value order: the domains of a topology key.
    pub fn label_domains(&self, key: &str) -> impl Iterator<Item = (&str, &BTreeSet<NodeIdx>)> {
        self.labelled
            .get(key)
            .into_iter()
            .flatten()
            .map(|(v, set)| (&**v, set))
    }
    /// Per node, how many granted allocations carry label `key` = `value` (nodes holding none
    /// left out), in registration order.
    pub fn granted_labelled(
        &self,
        key: &str,
        value: &str,
    ) -> impl Iterator<Item = (NodeIdx, u32)> + '_ {
        self.granted_labels
            .per_node
            .get(key)
            .and_then(|values| values.get(value))
            .into_iter()
            .flatten()
            .map(|(idx, n)| (*idx, *n))
    }
    /// Per node, how many granted allocations carry label `key` = `value` (nodes holding none
    /// left out), as the ledger keeps them.
    pub fn granted_labelled_nodes(
        &self,
        key: &str,
        value: &str,
    ) -> Option<&BTreeMap<NodeIdx, u32>> {
        self.granted_labels.per_node.get(key)?.get(value)
    }
    /// Per domain of node label `node_key` (each value present nodes carry), how many granted
    /// allocations on nodes of that domain carry label `key` = `value` (domains holding none
    /// left out); `None` when no grant carries it on a node with `node_key`.
    pub fn granted_labelled_domains(
        &self,
        key: &str,
        value: &str,
        node_key: &str,
    ) -> Option<&BTreeMap<Box<str>, u32>> {
        self.granted_labels
            .per_domain
            .get(key)?
            .get(value)?
            .get(node_key)
    }
    /// The grants carrying every label of `wanted` (two or more), by the set of labels they
    /// carry: one entry per such set, each with its counts per node and per domain.
    pub fn granted_with_all<'s, 'w>(
        &'s self,
        wanted: &'w Labels,
    ) -> impl Iterator<Item = &'s GrantedSet> + use<'s, 'w> {
        self.granted_labels
            .per_set
            .iter()
            .filter(move |(set, _)| crate::allocation::labels_match(set, wanted))
            .map(|(_, counts)| counts)
    }
    /// Adds (or, with `add` false, removes) node `idx`'s labels to the label index, and the
    /// grants it holds to the per-domain counts of granted labels; called when a node comes,
    /// before and after its spec changes, and before it goes.
    pub(crate) fn index_labels(&mut self, idx: NodeIdx, add: bool) {
        let Some(node) = self.nodes.get(idx.index()).and_then(|s| s.live.as_ref()) else {
            return;
        };
        if node.n_granted > 0 {
            count_node_grants(&mut self.granted_labels, idx, &node.spec.labels, add);
        }
        for (k, v) in &node.spec.labels {
            if add {
                self.labelled
                    .entry(k.as_str().into())
                    .or_default()
                    .entry(v.as_str().into())
                    .or_default()
                    .insert(idx);
            } else if let Some(values) = self.labelled.get_mut(k.as_str()) {
                if let Some(set) = values.get_mut(v.as_str()) {
                    set.remove(&idx);
                    if set.is_empty() {
                        values.remove(v.as_str());
                    }
                }
                if values.is_empty() {
                    self.labelled.remove(k.as_str());
                }
            }
        }
    }
    /// Brings node `idx`'s entry in the node index up to date; called in the same step as
    /// every change to a node's readiness, allocatable, allocated sum or victims.
    pub(crate) fn reindex(&mut self, idx: NodeIdx) {
        if self.tree.covers(idx) {
            let node = self.nodes.get(idx.index()).and_then(|s| s.live.as_ref());
            self.tree.update(idx, node);
        } else {
            self.rebuild_index();
        }
    }
    /// True when the node index says what a rebuild from the node table would (a check for
    /// tests: the index must change in the same step as the nodes it describes).
    pub fn node_index_is_current(&self) -> bool {
        let fresh = NodeTree::build(self.nodes.len(), self.nodes.iter().map(|s| s.live.as_ref()));
        let mut labelled = BTreeMap::<&str, BTreeMap<&str, BTreeSet<NodeIdx>>>::new();
        for (idx, node) in self.nodes() {
            for (k, v) in &node.spec.labels {
                labelled
                    .entry(k)
                    .or_default()
                    .entry(v)
                    .or_default()
                    .insert(idx);
            }
        }
        let same_labels = labelled.len() == self.labelled.len()
            && labelled.iter().all(|(k, values)| {
                self.labelled.get(*k).is_some_and(|mine| {
                    mine.len() == values.len()
                        && values.iter().all(|(v, set)| mine.get(*v) == Some(set))
                })
            });
        let mut granted = GrantCounts::default();
        for a in self.allocations() {
            if a.state == crate::allocation::AllocState::Granted {
                let node_labels = spec_labels(&self.nodes, a.node);
                count_grant_labels(&mut granted, a.node, node_labels, a.labels(), true);
            }
        }
        let same_grants = granted == self.granted_labels;
        same_labels
            && same_grants
            && (1..2 * fresh.width()).all(|p| {
                fresh.summary(p) == self.tree.summary(p)
                    && fresh.first_victim(p) == self.tree.first_victim(p)
            })
    }
    /// Rebuilds the node index from scratch (after a restore, or to grow it).
    pub(crate) fn rebuild_index(&mut self) {
        self.tree = NodeTree::build(self.nodes.len(), self.nodes.iter().map(|s| s.live.as_ref()));
    }
    /// The largest amount of each resource any ready node has left (a quick necessary test).
    pub(crate) fn max_available(&self) -> Resources {
        if self.total.iter().all(|(r, _)| r.index() < STANDARD.len()) {
            // No ready node offers an extended resource: the index has the answer.
            let free = self.tree.summary(NodeTree::ROOT).max_free;
            let mut out = Resources::default();
            for (r, v) in STANDARD.iter().zip(free) {
                out.set(*r, v);
            }
            return out;
        }
        let mut out = Resources::default();
        for idx in &self.ready {
            if let Some(node) = self.node(*idx) {
                out.max_with(&node.available());
            }
        }
        out
    }
}
