//! `topology`: a request's spread constraints (max skew across the domains of a label, as
//! Kubernetes' `topologySpreadConstraints` with `DoNotSchedule`) and its affinity and
//! anti-affinity terms, all over the labels of the allocations already granted. A node's domain
//! under a key is its label of that key (`qm.dev/node`: its name); a node without the key
//! never qualifies for a rule on it. Requests without rules cost nothing; a rule matching one
//! label (or none) reads the ledger's per-node counts of granted labels, one matching several
//! costs a pass over the granted allocations.

use std::collections::HashMap;

use qm_core::{AllocState, Labels, NODE_LABEL, Node, NodeIdx, State, labels_match};

use crate::plugin::{Builtin, CycleState, Filter, Plugin};

/// The filter plugin.
#[derive(Debug, Default)]
pub struct TopologyRules;

impl Plugin for TopologyRules {
    fn name(&self) -> &'static str {
        "topology"
    }
    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::Topology)
    }
    fn filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
}

impl Filter for TopologyRules {
    fn filter(&self, cx: &CycleState<'_>, nodes: &mut Vec<NodeIdx>) {
        retain_allowed(cx, nodes);
    }
}

/// `node`'s domain under `key`.
fn domain<'a>(state: &'a State, idx: NodeIdx, node: &'a Node, key: &str) -> Option<&'a str> {
    if key == NODE_LABEL {
        return Some(state.node_name(idx));
    }
    node.spec().labels.get(key).map(String::as_str)
}

/// The granted allocations whose labels include `wanted`, per domain of `key`: from the
/// ledger's per-node counts of granted labels when `wanted` is one label (or none: every
/// grant), else (or when `exhaustive`) by a pass over the allocations.
fn counts<'a>(
    state: &'a State,
    key: &str,
    wanted: &Labels,
    exhaustive: bool,
) -> HashMap<&'a str, u32> {
    let mut out: HashMap<&str, u32> = HashMap::new();
    let mut add = |idx: NodeIdx, n: u32| {
        if let Some(node) = state.node(idx)
            && let Some(d) = domain(state, idx, node, key)
        {
            *out.entry(d).or_default() += n;
        }
    };
    if !exhaustive && wanted.len() <= 1 {
        match wanted.iter().next() {
            Some((k, v)) => state.granted_labelled(k, v).for_each(|(i, n)| add(i, n)),
            None => state
                .nodes()
                .filter(|(_, n)| n.n_granted() > 0)
                .for_each(|(i, n)| add(i, n.n_granted())),
        }
        return out;
    }
    for a in state.allocations() {
        if a.state() != AllocState::Granted || !labels_match(a.labels(), wanted) {
            continue;
        }
        if let Some(idx) = a.node() {
            add(idx, 1);
        }
    }
    out
}

/// Keeps in `nodes` those the request's rules allow.
pub fn retain_allowed(cx: &CycleState<'_>, nodes: &mut Vec<NodeIdx>) {
    let rules = cx.request.topology();
    if rules.is_empty() || nodes.is_empty() {
        return;
    }
    let st = cx.state;
    let dom = |i: &NodeIdx, key: &str| st.node(*i).and_then(|n| domain(st, *i, n, key));
    let own = cx.request.labels();
    for c in &rules.spread {
        let counts = counts(st, &c.topology_key, &c.match_labels, cx.exhaustive);
        // the fewest in any domain the request could go to (ready, selected)
        let min = st
            .nodes()
            .filter(|(_, n)| n.ready() && n.matches(cx.request.node_selector()))
            .filter_map(|(i, n)| domain(st, i, n, &c.topology_key))
            .map(|d| counts.get(d).copied().unwrap_or(0))
            .min();
        let Some(min) = min else {
            nodes.clear();
            return;
        };
        let itself = u32::from(labels_match(own, &c.match_labels));
        nodes.retain(|i| {
            dom(i, &c.topology_key)
                .is_some_and(|d| counts.get(d).copied().unwrap_or(0) + itself - min <= c.max_skew)
        });
    }
    for t in &rules.affinity {
        let counts = counts(st, &t.topology_key, &t.match_labels, cx.exhaustive);
        // the first of a group that wants to be together goes anywhere
        if counts.is_empty() && labels_match(own, &t.match_labels) {
            nodes.retain(|i| dom(i, &t.topology_key).is_some());
            continue;
        }
        nodes.retain(|i| dom(i, &t.topology_key).is_some_and(|d| counts.contains_key(d)));
    }
    for t in &rules.anti_affinity {
        let counts = counts(st, &t.topology_key, &t.match_labels, cx.exhaustive);
        nodes.retain(|i| dom(i, &t.topology_key).is_none_or(|d| !counts.contains_key(d)));
    }
}

/// Whether the request's rules allow `idx` (for preemption, which picks a node of its own).
pub fn allows(cx: &CycleState<'_>, idx: NodeIdx) -> bool {
    let mut one = vec![idx];
    retain_allowed(cx, &mut one);
    !one.is_empty()
}
