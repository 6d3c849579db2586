//! `topology`: a request's spread constraints (max skew across the domains of a label, as
//! Kubernetes' `topologySpreadConstraints` with `DoNotSchedule`) and its affinity and
//! anti-affinity terms, all over the labels of the allocations already granted. A node's domain
//! under a key is its label of that key (`qm.dev/node`: its name); a node without the key
//! never qualifies for a rule on it.
//!
//! Requests without rules cost nothing. A request's rules are resolved once per decision into a
//! [`TopologyPlan`] (the framework hands it to every filter call through the [`CycleState`]):
//! per rule, the matching grants per domain and the bound a spread constraint sets, after which
//! each node is judged in one lookup per rule. A rule matching one label reads the counts the
//! ledger keeps per domain of its key (over `qm.dev/node`, per node, in place); one matching
//! several sums the ledger's counts for each set of labels grants carry that includes them all
//! (per-label counts cannot count a conjunction). The fewest in any domain visits the key's
//! domains (over `qm.dev/node` without a selector, nothing unless every ready node holds a
//! matching grant). The exhaustive reference counts by a pass over the allocations and visits
//! every node, per filter call.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};

use qm_core::{AllocState, Labels, NODE_LABEL, Node, NodeIdx, NodeTree, State, labels_match};

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

/// Matching grants per domain of a rule's key (only domains holding some are listed).
#[derive(Debug)]
enum Counts<'a> {
    /// Per domain name, counted here (the reference, and rules the ledger's counts cannot
    /// answer).
    Counted(HashMap<&'a str, u32>),
    /// Per domain name, as the ledger keeps them for one label over a node label key.
    Kept(Option<&'a BTreeMap<Box<str>, u32>>),
    /// Per node, for `qm.dev/node` (each node its own domain); never the reference's.
    ByNode(Cow<'a, BTreeMap<NodeIdx, u32>>),
}

impl Counts<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Self::Counted(m) => m.is_empty(),
            Self::Kept(m) => m.is_none_or(BTreeMap::is_empty),
            Self::ByNode(m) => m.is_empty(),
        }
    }

    /// The matching grants in domain `d` (by name).
    fn in_domain(&self, d: &str) -> u32 {
        match self {
            Self::Counted(m) => m.get(d).copied(),
            Self::Kept(m) => m.and_then(|m| m.get(d).copied()),
            Self::ByNode(_) => None,
        }
        .unwrap_or(0)
    }

    /// The domains (by name) holding matching grants, with how many.
    fn domains(&self) -> Box<dyn Iterator<Item = (&str, u32)> + '_> {
        match self {
            Self::Counted(m) => Box::new(m.iter().map(|(d, c)| (*d, *c))),
            Self::Kept(m) => Box::new(m.iter().flat_map(|m| m.iter()).map(|(d, c)| (&**d, *c))),
            Self::ByNode(_) => Box::new(std::iter::empty()),
        }
    }

    /// The matching grants in node `idx`'s domain under `key`; `None` when the node is gone
    /// or lacks the key.
    fn of(&self, state: &State, idx: NodeIdx, key: &str) -> Option<u32> {
        let node = state.node(idx)?;
        Some(match self {
            Self::ByNode(m) => m.get(&idx).copied().unwrap_or(0),
            _ => self.in_domain(domain(state, idx, node, key)?),
        })
    }
}

/// The granted allocations whose labels include `wanted`, per domain of `key`: as the ledger
/// keeps them when `wanted` is one label; summed here over the sets of labels grants carry
/// that include `wanted` when it is several, or over the nodes when it is none (every grant);
/// by a pass over the allocations when `exhaustive`.
fn counts<'a>(state: &'a State, key: &str, wanted: &Labels, exhaustive: bool) -> Counts<'a> {
    let by_node = !exhaustive && key == NODE_LABEL;
    if !exhaustive
        && wanted.len() == 1
        && let Some((k, v)) = wanted.iter().next()
    {
        return if by_node {
            Counts::ByNode(match state.granted_labelled_nodes(k, v) {
                Some(m) => Cow::Borrowed(m),
                None => Cow::Owned(BTreeMap::new()),
            })
        } else {
            Counts::Kept(state.granted_labelled_domains(k, v, key))
        };
    }
    let (mut domains, mut nodes) = (HashMap::new(), BTreeMap::new());
    let mut add = |idx: NodeIdx, n: u32| {
        let Some(node) = state.node(idx) else { return };
        if by_node {
            *nodes.entry(idx).or_default() += n;
        } else if let Some(d) = domain(state, idx, node, key) {
            *domains.entry(d).or_default() += n;
        }
    };
    if !exhaustive && wanted.is_empty() {
        state
            .nodes()
            .filter(|(_, n)| n.n_granted() > 0)
            .for_each(|(i, n)| add(i, n.n_granted()));
    } else if !exhaustive {
        // several labels: the sets of labels grants carry that include them all
        for set in state.granted_with_all(wanted) {
            if by_node {
                for (idx, n) in set.per_node() {
                    *nodes.entry(*idx).or_default() += n;
                }
            } else {
                for (d, n) in set.per_domain(key).into_iter().flatten() {
                    *domains.entry(&**d).or_default() += n;
                }
            }
        }
    } else {
        for a in state.allocations() {
            if a.state() != AllocState::Granted || !labels_match(a.labels(), wanted) {
                continue;
            }
            if let Some(idx) = a.node() {
                add(idx, 1);
            }
        }
    }
    if by_node {
        Counts::ByNode(Cow::Owned(nodes))
    } else {
        Counts::Counted(domains)
    }
}

/// The fewest matching grants (`counts`) in any domain of `key` the request could go to (one
/// with a ready node its selector matches); `None` when there is none. The reference visits
/// every node; otherwise the domains of the key are visited (each until a node of it
/// qualifies), or, for `qm.dev/node`, the selector's nodes until one holds none, or without a
/// selector only the nodes holding grants.
fn fewest(cx: &CycleState<'_>, key: &str, counts: &Counts<'_>) -> Option<u32> {
    let st = cx.state;
    let selector = cx.request.node_selector();
    let eligible = |n: &Node| n.ready() && n.matches(selector);
    match counts {
        Counts::Counted(_) | Counts::Kept(_) if cx.exhaustive || key == NODE_LABEL => st
            .nodes()
            .filter(|(_, n)| eligible(n))
            .filter_map(|(i, n)| domain(st, i, n, key))
            .map(|d| counts.in_domain(d))
            .min(),
        Counts::Counted(_) | Counts::Kept(_) => {
            let mut min: Option<u32> = None;
            for (d, nodes) in st.label_domains(key) {
                let c = counts.in_domain(d);
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
            min
        }
        Counts::ByNode(m) if selector.is_empty() => {
            let n_ready = st.ready_nodes().len();
            if n_ready == 0 {
                return None;
            }
            if m.len() < n_ready {
                // some ready node holds none
                return Some(0);
            }
            let mut n_counted = 0;
            let mut min = u32::MAX;
            for (idx, c) in m.iter() {
                if st.node(*idx).is_some_and(Node::ready) {
                    n_counted += 1;
                    min = min.min(*c);
                }
            }
            Some(if n_counted < n_ready { 0 } else { min })
        }
        Counts::ByNode(m) => {
            let (k, v) = selector.iter().min_by_key(|(k, v)| st.n_labelled(k, v))?;
            let mut min: Option<u32> = None;
            for idx in st.nodes_labelled(k, v) {
                if st.node(idx).is_some_and(eligible) {
                    let c = m.get(&idx).copied().unwrap_or(0);
                    min = Some(min.map_or(c, |m| m.min(c)));
                    if c == 0 {
                        break;
                    }
                }
            }
            min
        }
    }
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
    counts: Counts<'a>,
    check: Check,
}

impl Rule<'_> {
    /// Whether the rule allows a node whose domain holds `count` matching grants (`None`: the
    /// node is gone or lacks the key).
    fn allows(&self, count: Option<u32>) -> bool {
        match self.check {
            Check::Skew {
                min,
                itself,
                max_skew,
            } => {
                count.is_some_and(|c| (c + itself).checked_sub(min).is_some_and(|s| s <= max_skew))
            }
            Check::Anywhere => count.is_some(),
            Check::Holding => count.is_some_and(|c| c > 0),
            Check::NotHolding => count.is_none_or(|c| c == 0),
        }
    }

    /// Whether a domain holding no matching grant is allowed; when not, every allowed domain
    /// is one `counts` lists.
    fn allows_empty(&self) -> bool {
        self.allows(Some(0))
    }

    /// The present nodes in the listed domains whose count `keep` says yes to.
    fn nodes_where<'s>(
        &'s self,
        state: &'s State,
        keep: impl Fn(u32) -> bool + 's,
    ) -> Box<dyn Iterator<Item = NodeIdx> + 's> {
        if let Counts::ByNode(m) = &self.counts {
            return Box::new(m.iter().filter(move |(_, c)| keep(**c)).map(|(i, _)| *i));
        }
        Box::new(
            self.counts
                .domains()
                .filter(move |(_, c)| keep(*c))
                .flat_map(move |(d, _)| -> Box<dyn Iterator<Item = NodeIdx>> {
                    if self.key == NODE_LABEL {
                        Box::new(state.node_by_name(d).map(|(i, _)| i).into_iter())
                    } else {
                        Box::new(state.nodes_labelled(self.key, d))
                    }
                }),
        )
    }

    /// How many present nodes the listed domains whose count `keep` says yes to hold.
    fn n_nodes_where(&self, state: &State, keep: impl Fn(u32) -> bool) -> usize {
        match &self.counts {
            Counts::ByNode(m) => m.values().filter(|c| keep(**c)).count(),
            counts if self.key == NODE_LABEL => counts.domains().filter(|(_, c)| keep(*c)).count(),
            counts => counts
                .domains()
                .filter(|(_, c)| keep(*c))
                .map(|(d, _)| state.n_labelled(self.key, d))
                .sum(),
        }
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
    state: &'a State,
    /// At most how many nodes a per-node rule (`qm.dev/node`) rules out: the nodes holding
    /// grants it matches, when it allows nodes holding none (0: no such rule).
    excludable: usize,
    /// Table indices of the ready nodes those rules rule out, sorted (made when a search first
    /// asks): a search skips a subtree all of whose ready nodes are among them.
    excluded: OnceCell<Vec<usize>>,
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
            state: st,
            excludable: 0,
            excluded: OnceCell::new(),
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
        if !cx.exhaustive {
            plan.excludable = plan.per_node_exclusions().map(|(_, m)| m.len()).sum();
        }
        plan
    }

    /// The per-node rules that allow nodes holding no matching grant, with their counts.
    fn per_node_exclusions(&self) -> impl Iterator<Item = (&Rule<'a>, &BTreeMap<NodeIdx, u32>)> {
        self.rules.iter().filter_map(|r| match &r.counts {
            Counts::ByNode(m) if r.allows_empty() => Some((r, &**m)),
            _ => None,
        })
    }

    /// The ready nodes the per-node rules rule out, sorted by table index.
    fn excluded(&self) -> &[usize] {
        self.excluded.get_or_init(|| {
            let mut out = Vec::with_capacity(self.excludable);
            let mut n_rules = 0;
            for (r, m) in self.per_node_exclusions() {
                n_rules += 1;
                for (idx, c) in m {
                    if !r.allows(Some(*c)) && self.state.node(*idx).is_some_and(Node::ready) {
                        out.push(idx.index());
                    }
                }
            }
            if n_rules > 1 {
                out.sort_unstable();
                out.dedup();
            }
            out
        })
    }

    /// True when the rules rule out every ready node under position `pos` of the node index,
    /// so a search need not go there. Leaves, and subtrees with more ready nodes than the
    /// rules could rule out, are answered without listing those nodes.
    #[inline]
    pub fn rules_out(&self, tree: &NodeTree, pos: usize) -> bool {
        if self.blocked {
            return true;
        }
        let n_ready = tree.summary(pos).n_ready as usize;
        if self.excludable < n_ready.max(1) || tree.is_leaf(pos) {
            return false;
        }
        let excluded = self.excluded();
        let first = tree.first_index(pos);
        let end = first + tree.span(pos);
        let from = excluded.partition_point(|i| *i < first);
        let to = excluded.partition_point(|i| *i < end);
        to - from >= n_ready
    }

    /// Whether the rules allow node `idx`.
    pub fn allows(&self, state: &State, idx: NodeIdx) -> bool {
        !self.blocked
            && self
                .rules
                .iter()
                .all(|r| r.allows(r.counts.of(state, idx, r.key)))
    }

    /// The ready nodes some rule confines the request to, in registration order, when a rule
    /// allows only domains holding matching grants and they hold at most `at_most` nodes (the
    /// rule that gives the fewest); every node the rules allow is among them.
    pub fn confined(&self, state: &State, at_most: usize) -> Option<Vec<NodeIdx>> {
        if self.blocked {
            return Some(Vec::new());
        }
        let (rule, _) = self
            .rules
            .iter()
            .filter(|r| !r.allows_empty())
            .map(|r| (r, r.n_nodes_where(state, |c| r.allows(Some(c)))))
            .filter(|(_, n)| *n <= at_most)
            .min_by_key(|(_, n)| *n)?;
        let mut out: Vec<NodeIdx> = rule
            .nodes_where(state, |c| rule.allows(Some(c)))
            .filter(|i| state.node(*i).is_some_and(Node::ready))
            .collect();
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
    if cx.request.topology().is_empty() {
        return true;
    }
    match cx.topology {
        Some(plan) => plan.allows(cx.state, idx),
        None => TopologyPlan::new(cx).allows(cx.state, idx),
    }
}
