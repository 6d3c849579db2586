//! The counts of granted labels the ledger keeps for topology rules: how many grants carry
//! each label, per node and per domain of every node label key, and the same for each set of
//! two or more labels grants carry together. They change as grants are made and end, and move
//! when a node's labels change; entries that fall to zero are removed.

use std::collections::BTreeMap;

use super::state::Slot;
use crate::allocation::Labels;
use crate::ids::NodeIdx;
use crate::node::Node;

/// Label key → value → per node, how many grants there carry it.
pub(crate) type GrantedLabels = BTreeMap<Box<str>, BTreeMap<Box<str>, BTreeMap<NodeIdx, u32>>>;

/// Node label key → that label's value (a domain) → how many grants on nodes of that domain.
pub(crate) type DomainCounts = BTreeMap<Box<str>, BTreeMap<Box<str>, u32>>;

/// Grant label key → value → the grants carrying it, per domain of every node label key.
pub(crate) type GrantedDomains = BTreeMap<Box<str>, BTreeMap<Box<str>, DomainCounts>>;

/// The grants carrying one set of labels (all of their labels), per node and per domain.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GrantedSet {
    per_node: BTreeMap<NodeIdx, u32>,
    per_domain: DomainCounts,
}

impl GrantedSet {
    /// Per node, how many grants carry exactly this set of labels (none left out: every
    /// node listed holds some).
    pub fn per_node(&self) -> &BTreeMap<NodeIdx, u32> {
        &self.per_node
    }
    /// Per domain of node label `node_key`, how many grants on its nodes carry exactly this
    /// set of labels.
    pub fn per_domain(&self, node_key: &str) -> Option<&BTreeMap<Box<str>, u32>> {
        self.per_domain.get(node_key)
    }
}

/// The counts of granted labels the ledger keeps: per node, and per domain of every label key
/// nodes carry, for each label; and the same for each set of two or more labels grants carry
/// together (so a rule matching several labels sums the sets that include them all). Entries
/// that fall to zero are removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct GrantCounts {
    pub(crate) per_node: GrantedLabels,
    pub(crate) per_domain: GrantedDomains,
    pub(crate) per_set: BTreeMap<Labels, GrantedSet>,
}

/// The spec labels of node `idx`, when present.
pub(crate) fn spec_labels(nodes: &[Slot<Node>], idx: Option<NodeIdx>) -> Option<&Labels> {
    nodes
        .get(idx?.index())
        .and_then(|s| s.live.as_ref())
        .map(|n| &n.spec.labels)
}

/// Adds (or, with `add` false, takes away) `n` grants to the domains `node_labels` name.
fn count_in_domains(counts: &mut DomainCounts, node_labels: &Labels, n: u32, add: bool) {
    for (key, dom) in node_labels {
        if add {
            *counts
                .entry(key.as_str().into())
                .or_default()
                .entry(dom.as_str().into())
                .or_default() += n;
        } else if let Some(doms) = counts.get_mut(key.as_str()) {
            if let Some(c) = doms.get_mut(dom.as_str()) {
                *c = c.saturating_sub(n);
                if *c == 0 {
                    doms.remove(dom.as_str());
                }
            }
            if doms.is_empty() {
                counts.remove(key.as_str());
            }
        }
    }
}

/// Adds (or, with `add` false, takes away) `n` grants carrying label `k` = `v` to the domains
/// `node_labels` name.
fn count_domains(
    per_domain: &mut GrantedDomains,
    k: &str,
    v: &str,
    node_labels: &Labels,
    n: u32,
    add: bool,
) {
    if node_labels.is_empty() || n == 0 {
        return;
    }
    if add {
        let counts = per_domain
            .entry(k.into())
            .or_default()
            .entry(v.into())
            .or_default();
        count_in_domains(counts, node_labels, n, true);
        return;
    }
    let Some(values) = per_domain.get_mut(k) else {
        return;
    };
    if let Some(counts) = values.get_mut(v) {
        count_in_domains(counts, node_labels, n, false);
        if counts.is_empty() {
            values.remove(v);
        }
    }
    if values.is_empty() {
        per_domain.remove(k);
    }
}

/// Counts (or, with `add` false, stops counting) a grant carrying exactly `labels` (two or
/// more) on `node`, whose spec labels are `node_labels`.
fn count_set(
    per_set: &mut BTreeMap<Labels, GrantedSet>,
    node: NodeIdx,
    node_labels: Option<&Labels>,
    labels: &Labels,
    add: bool,
) {
    if add {
        // the set's labels are cloned only the first time a grant carries them
        if !per_set.contains_key(labels) {
            per_set.insert(labels.clone(), GrantedSet::default());
        }
        let Some(set) = per_set.get_mut(labels) else {
            return;
        };
        *set.per_node.entry(node).or_default() += 1;
        if let Some(nl) = node_labels {
            count_in_domains(&mut set.per_domain, nl, 1, true);
        }
        return;
    }
    let Some(set) = per_set.get_mut(labels) else {
        return;
    };
    if let Some(n) = set.per_node.get_mut(&node) {
        *n -= 1;
        if *n == 0 {
            set.per_node.remove(&node);
        }
    }
    if let Some(nl) = node_labels {
        count_in_domains(&mut set.per_domain, nl, 1, false);
    }
    if set.per_node.is_empty() {
        per_set.remove(labels);
    }
}

/// Counts (or, with `add` false, stops counting) a grant's `labels` on its `node`, whose spec
/// labels are `node_labels`; called as a grant is made and as it ends.
pub(crate) fn count_grant_labels(
    counts: &mut GrantCounts,
    node: Option<NodeIdx>,
    node_labels: Option<&Labels>,
    labels: &Labels,
    add: bool,
) {
    let Some(node) = node else { return };
    if labels.len() >= 2 {
        count_set(&mut counts.per_set, node, node_labels, labels, add);
    }
    for (k, v) in labels {
        if let Some(nl) = node_labels {
            count_domains(&mut counts.per_domain, k, v, nl, 1, add);
        }
        if add {
            *counts
                .per_node
                .entry(k.as_str().into())
                .or_default()
                .entry(v.as_str().into())
                .or_default()
                .entry(node)
                .or_default() += 1;
        } else if let Some(values) = counts.per_node.get_mut(k.as_str()) {
            if let Some(per_node) = values.get_mut(v.as_str()) {
                if let Some(n) = per_node.get_mut(&node) {
                    *n -= 1;
                    if *n == 0 {
                        per_node.remove(&node);
                    }
                }
                if per_node.is_empty() {
                    values.remove(v.as_str());
                }
            }
            if values.is_empty() {
                counts.per_node.remove(k.as_str());
            }
        }
    }
}

/// Adds (or, with `add` false, takes away) the grants node `idx` holds to (from) the domains
/// its labels `node_labels` name; called as a node's labels are indexed or unindexed.
pub(crate) fn count_node_grants(
    counts: &mut GrantCounts,
    idx: NodeIdx,
    node_labels: &Labels,
    add: bool,
) {
    for (k, values) in &counts.per_node {
        for (v, per_node) in values {
            if let Some(n) = per_node.get(&idx) {
                count_domains(&mut counts.per_domain, k, v, node_labels, *n, add);
            }
        }
    }
    for set in counts.per_set.values_mut() {
        if let Some(n) = set.per_node.get(&idx) {
            count_in_domains(&mut set.per_domain, node_labels, *n, add);
        }
    }
}
