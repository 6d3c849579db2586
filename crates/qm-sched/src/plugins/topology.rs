//! `topology`: a request's spread constraints (max skew across the domains of a label, as
//! Kubernetes' `topologySpreadConstraints` with `DoNotSchedule`) and its affinity and
//! anti-affinity terms, all over the labels of the allocations already granted. A node's domain
//! under a key is its label of that key (`qm.dev/node`: its name); a node without the key
//! never qualifies for a rule on it.
//!
//! Requests without rules cost nothing. A request's rules are resolved once per decision into a
//! [`TopologyPlan`] (the framework hands it to every filter call through the [`CycleState`]):
//! per rule, the matching grants per domain and the bound a spread constraint sets, after which
//! each node is judged in one lookup per rule. Resolving a rule matching one label (or none)
//! reads the ledger's per-node counts of granted labels, so it costs the nodes holding matching
//! grants plus the domains of the key (for `qm.dev/node` without a selector, only the former);
//! a rule matching several labels costs a pass over the granted allocations (the per-label
//! counts cannot say how many grants carry all of them).

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

/// The fewest matching grants (`counts`) in any domain of `key` the request could go to (one
/// with a ready node its selector matches); `None` when there is none. The exhaustive answer
/// visits every node; otherwise the domains of the key are visited (each until a node of it
/// qualifies), or, for `qm.dev/node` without a selector, only the nodes holding grants.
fn fewest(cx: &CycleState<'_>, key: &str, counts: &HashMap<&str, u32>) -> Option<u32> {
    let st = cx.state;
    let selector = cx.request.node_selector();
    let eligible = |n: &Node| n.ready() && n.matches(selector);
    let count = |d: &str| counts.get(d).copied().unwrap_or(0);
    if cx.exhaustive {
        return st
            .nodes()
            .filter(|(_, n)| eligible(n))
            .filter_map(|(i, n)| domain(st, i, n, key))
            .map(count)
            .min();
    }
    if key != NODE_LABEL {
        let mut min: Option<u32> = None;
        for (d, nodes) in st.label_domains(key) {
            let c = count(d);
            if min.is_some_and(|m| m <= c) {
                continue;
            }
            if nodes.iter().any(|i| st.node(*i).is_some_and(eligible)) {
                min = Some(c);
                if c == 0 {
                    break;
                }
            }
        }
        return min;
    }
    // Every node is its own domain.
    if selector.is_empty() {
        let n_ready = st.ready_nodes().len();
        let (mut n_counted, mut min) = (0, u32::MAX);
        for (name, c) in counts {
            if st.node_by_name(name).is_some_and(|(_, n)| n.ready()) {
                n_counted += 1;
                min = min.min(*c);
            }
        }
        return match n_ready {
            0 => None,
            _ if n_counted < n_ready => Some(0),
            _ => Some(min),
        };
    }
    let (k, v) = selector.iter().min_by_key(|(k, v)| st.n_labelled(k, v))?;
    let mut min: Option<u32> = None;
    for idx in st.nodes_labelled(k, v) {
        if st.node(idx).is_some_and(eligible) {
            let c = count(st.node_name(idx));
            min = Some(min.map_or(c, |m| m.min(c)));
            if c == 0 {
                break;
            }
        }
    }
    min
}

/// How one rule judges a node's domain.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Spread: the domain's count, plus the request itself when it matches, at most
    /// `max_skew` above the fewest.
    Skew {
        min: u32,
        itself: u32,
        max_skew: u32,
    },
    /// Affinity, first of its group: any domain.
    Anywhere,
    /// Affinity: a domain holding a matching grant.
    Holding,
    /// Anti-affinity: no domain holding a matching grant (or no domain).
    NotHolding,
}

/// One rule, resolved: its key, the matching grants per domain, and its check.
#[derive(Debug)]
struct Rule<'a> {
    key: &'a str,
    counts: HashMap<&'a str, u32>,
    check: Check,
}

impl Rule<'_> {
    /// Whether the rule allows a node in domain `d` (`None`: the node lacks the key).
    fn allows(&self, d: Option<&str>) -> bool {
        match self.check {
            Check::Skew {
                min,
                itself,
                max_skew,
            } => d.is_some_and(|d| {
                let c = self.counts.get(d).copied().unwrap_or(0);
                (c + itself).checked_sub(min).is_some_and(|s| s <= max_skew)
            }),
            Check::Anywhere => d.is_some(),
            Check::Holding => d.is_some_and(|d| self.counts.contains_key(d)),
            Check::NotHolding => d.is_none_or(|d| !self.counts.contains_key(d)),
        }
    }

    /// The domains this rule confines the request to, when they all hold matching grants
    /// (so are few enough to list); `None` when it allows domains holding none.
    fn confines(&self) -> Option<impl Iterator<Item = &str>> {
        match self.check {
            // a domain holding none is allowed only when 0 + itself - min <= max_skew
            Check::Skew { min, itself, .. } if min > itself => {}
            Check::Holding => {}
            _ => return None,
        }
        Some(self.counts.keys().copied().filter(|d| self.allows(Some(d))))
    }
}

/// A request's topology rules resolved against the ledger for one decision: per rule, the
/// matching grants per domain and, for a spread constraint, the fewest in any domain the request
/// could go to. Judging a node then costs one lookup per rule.
#[derive(Debug)]
pub struct TopologyPlan<'a> {
    rules: Vec<Rule<'a>>,
    /// A spread constraint has no domain the request could go to: no node passes.
    blocked: bool,
}

impl<'a> TopologyPlan<'a> {
    /// Resolves `cx.request`'s rules (visiting every node and allocation when
    /// `cx.exhaustive`, the reference).
    pub fn new(cx: &CycleState<'a>) -> Self {
        let st = cx.state;
        let topology = cx.request.topology();
        let own = cx.request.labels();
        let mut plan = Self {
            rules: Vec::new(),
            blocked: false,
        };
        for c in &topology.spread {
            let counts = counts(st, &c.topology_key, &c.match_labels, cx.exhaustive);
            let Some(min) = fewest(cx, &c.topology_key, &counts) else {
                plan.blocked = true;
                return plan;
            };
            let itself = u32::from(labels_match(own, &c.match_labels));
            plan.rules.push(Rule {
                key: &c.topology_key,
                counts,
                check: Check::Skew {
                    min,
                    itself,
                    max_skew: c.max_skew,
                },
            });
        }
        for t in &topology.affinity {
            let counts = counts(st, &t.topology_key, &t.match_labels, cx.exhaustive);
            // the first of a group that wants to be together goes anywhere
            let check = if counts.is_empty() && labels_match(own, &t.match_labels) {
                Check::Anywhere
            } else {
                Check::Holding
            };
            plan.rules.push(Rule {
                key: &t.topology_key,
                counts,
                check,
            });
        }
        for t in &topology.anti_affinity {
            let counts = counts(st, &t.topology_key, &t.match_labels, cx.exhaustive);
            plan.rules.push(Rule {
                key: &t.topology_key,
                counts,
                check: Check::NotHolding,
            });
        }
        plan
    }

    /// Whether the rules allow node `idx`.
    pub fn allows(&self, state: &State, idx: NodeIdx) -> bool {
        if self.blocked {
            return false;
        }
        let node = state.node(idx);
        self.rules
            .iter()
            .all(|r| r.allows(node.and_then(|n| domain(state, idx, n, r.key))))
    }

    /// The ready nodes some rule confines the request to, in registration order, when a rule
    /// allows only domains holding matching grants and they hold fewer than `at_most` nodes
    /// (the rule that gives the fewest); every node the rules allow is among them.
    pub fn confined(&self, state: &State, at_most: usize) -> Option<Vec<NodeIdx>> {
        if self.blocked {
            return Some(Vec::new());
        }
        let size = |r: &Rule<'_>| -> Option<usize> {
            let domains = r.confines()?;
            Some(if r.key == NODE_LABEL {
                domains.count()
            } else {
                domains.map(|d| state.n_labelled(r.key, d)).sum()
            })
        };
        let (rule, _) = self
            .rules
            .iter()
            .filter_map(|r| Some((r, size(r)?)))
            .filter(|(_, n)| *n <= at_most)
            .min_by_key(|(_, n)| *n)?;
        let mut out = Vec::new();
        for d in rule.confines()? {
            if rule.key == NODE_LABEL {
                out.extend(state.node_by_name(d).map(|(i, _)| i));
            } else {
                out.extend(state.nodes_labelled(rule.key, d));
            }
        }
        out.retain(|i| state.node(*i).is_some_and(Node::ready));
        out.sort_unstable();
        out.dedup();
        Some(out)
    }
}

/// Keeps in `nodes` those the request's rules allow (resolving them here unless the decision
/// carries them resolved).
pub fn retain_allowed(cx: &CycleState<'_>, nodes: &mut Vec<NodeIdx>) {
    if cx.request.topology().is_empty() || nodes.is_empty() {
        return;
    }
    let st = cx.state;
    match cx.topology {
        Some(plan) => nodes.retain(|i| plan.allows(st, *i)),
        None => {
            let plan = TopologyPlan::new(cx);
            nodes.retain(|i| plan.allows(st, *i));
        }
    }
}

/// Whether the request's rules allow `idx` (for preemption, which picks a node of its own).
pub fn allows(cx: &CycleState<'_>, idx: NodeIdx) -> bool {
    let mut one = vec![idx];
    retain_allowed(cx, &mut one);
    !one.is_empty()
}
