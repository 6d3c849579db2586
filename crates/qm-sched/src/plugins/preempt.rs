//! Preempt plugins. `priority-preemption` takes strictly lower priority grants on one node, as
//! Kubernetes does: the node whose victims have the lowest highest priority, then the fewest
//! victims, then the most recently granted. `reclaim` takes back capacity other pools borrowed
//! beyond their guarantee, for a pool that is still within its own.

use std::cmp::Reverse;

use qm_core::{AllocId, Allocation, NodeIdx, NodeTree, Placement, PoolIdx, Preemption, Resources};

use crate::plugin::{CycleState, Plugin, Preempt};
use crate::search::Stack;

/// A node's victim set, with what the choice between nodes compares.
#[derive(Debug)]
struct Candidate {
    node: NodeIdx,
    victims: Vec<AllocId>,
    max_priority: u16,
    /// The oldest victim's grant order: larger means every victim is younger.
    oldest_grant: u64,
}

/// How candidates compare: the highest victim priority, the number of victims, and the oldest
/// victim's grant order reversed; the smallest wins.
type Key = (u16, usize, Reverse<u64>);

impl Candidate {
    /// Lowest highest-priority first, then fewest victims, then youngest victims.
    fn key(&self) -> Key {
        (
            self.max_priority,
            self.victims.len(),
            Reverse(self.oldest_grant),
        )
    }
}

/// True when taking `victim` reduces some still-missing amount.
fn helps(missing: &Resources, victim: &Resources) -> bool {
    missing.iter().any(|(r, _)| victim.get(r) > 0)
}

/// What the pool still lacks under its limit for the request (empty without a limit).
fn pool_missing(cx: &CycleState<'_>) -> Resources {
    cx.pool.limit().map_or_else(Resources::default, |limit| {
        cx.request.resources().over_cap(cx.pool.allocated(), limit)
    })
}

/// Picks victims on one node greedily in the node's victim order (lowest priority, youngest
/// first), then lets off every victim (most important first) the request turns out not to
/// need. Answers only a set that beats `bound` (or equals it, when `ties_win`: this node was
/// registered before the bound's), giving up as soon as the set's highest priority passes the
/// bound's; the answer for a node does not depend on the bound otherwise, so nodes may be
/// visited in any order. `taken` is scratch space.
fn victims_on<'a>(
    cx: &CycleState<'a>,
    node: NodeIdx,
    pool_need: &Resources,
    bound: Option<&Candidate>,
    ties_win: bool,
    may_take: &mut dyn FnMut(&Allocation) -> bool,
    taken: &mut Vec<&'a Allocation>,
) -> Option<Candidate> {
    let st = cx.state;
    let n = st.node(node)?;
    let req = cx.request;
    let node_need = n.available().shortfall_for(req.resources());
    let (mut need_n, mut need_p) = (node_need.clone(), pool_need.clone());
    taken.clear();
    for (prio, _, id) in n.victim_entries() {
        if need_n.is_empty() && need_p.is_empty() {
            break;
        }
        let Some(a) = st.alloc(id) else { continue };
        let same_pool = a.pool() == req.pool();
        let useful = helps(&need_n, a.resources()) || (same_pool && helps(&need_p, a.resources()));
        if !useful || !may_take(a) {
            continue;
        }
        // The last victim taken is never let off (the ones before it did not suffice), so
        // taking this one makes the set's highest priority at least `prio`: past the bound's,
        // this node cannot beat it.
        if bound.is_some_and(|b| prio > b.max_priority) {
            return None;
        }
        need_n.sub(a.resources());
        if same_pool {
            need_p.sub(a.resources());
        }
        taken.push(a);
    }
    if !(need_n.is_empty() && need_p.is_empty()) {
        return None;
    }
    // Let off what is not needed, most important (and oldest) first.
    let mut freed_n = Resources::default();
    let mut freed_p = Resources::default();
    for a in taken.iter() {
        freed_n.add(a.resources());
        if a.pool() == req.pool() {
            freed_p.add(a.resources());
        }
    }
    let mut i = taken.len();
    while i > 0 && taken.len() > 1 {
        i -= 1;
        let a = taken[i];
        let rest_n = freed_n.saturating_sub(a.resources());
        let rest_p = if a.pool() == req.pool() {
            freed_p.saturating_sub(a.resources())
        } else {
            freed_p.clone()
        };
        if node_need.fits(&rest_n) && pool_need.fits(&rest_p) {
            taken.remove(i);
            freed_n = rest_n;
            freed_p = rest_p;
        }
    }
    let max_priority = taken.iter().map(|a| a.priority().get()).max()?;
    let oldest_grant = taken.iter().map(|a| a.grant_seq()).min()?;
    let key = (max_priority, taken.len(), Reverse(oldest_grant));
    if let Some(b) = bound
        && (key > b.key() || (key == b.key() && !ties_win))
    {
        return None;
    }
    Some(Candidate {
        node,
        max_priority,
        oldest_grant,
        victims: taken.iter().map(|a| a.id()).collect(),
    })
}

/// Runs `victims_on` over every eligible node and keeps the best candidate (the earliest
/// registered on a tie). Only victims of a priority below `below` may be taken, when given.
/// Unless the decision is exhaustive, nodes are reached through the ledger's node index, the
/// subtree with the cheaper first victim first, skipping every subtree whose cheapest first
/// victim (a bound on any candidate there) cannot beat the best candidate so far.
fn best_node(
    cx: &CycleState<'_>,
    pool_need: &Resources,
    below: Option<u16>,
    may_take: &mut dyn FnMut(&Allocation) -> bool,
    reset: &mut dyn FnMut(),
) -> Option<Candidate> {
    let mut best: Option<Candidate> = None;
    let mut taken = Vec::new();
    let mut visit = |idx: NodeIdx, best: &mut Option<Candidate>| {
        let Some(node) = cx.state.node(idx) else {
            return;
        };
        if !cx.eligible(node) || !cx.request.resources().fits(node.allocatable()) {
            return;
        }
        reset();
        let ties_win = best.as_ref().is_some_and(|b| idx < b.node);
        if let Some(c) = victims_on(
            cx,
            idx,
            pool_need,
            best.as_ref(),
            ties_win,
            may_take,
            &mut taken,
        ) {
            *best = Some(c);
        }
    };
    if cx.exhaustive {
        for &idx in cx.state.ready_nodes() {
            visit(idx, &mut best);
        }
        return best;
    }
    let tree = cx.state.node_tree();
    // The least key any candidate under a subtree can have: (priority, 1 victim, grant).
    let floor = |pos: usize| {
        let (priority, grant) = tree.first_victim(pos)?;
        if below.is_some_and(|b| priority >= b) {
            return None;
        }
        Some((priority, 1, Reverse(grant)))
    };
    let mut stack: Stack<(usize, Key)> = Stack::new();
    if let Some(f) = floor(NodeTree::ROOT) {
        stack.push((NodeTree::ROOT, f));
    }
    while let Some((pos, f)) = stack.pop() {
        if cx.topology.is_some_and(|t| t.rules_out(tree, pos)) {
            continue;
        }
        if let Some(b) = &best {
            let first = tree.first_index(pos);
            if f > b.key() || (f == b.key() && first > b.node.index()) {
                continue;
            }
        }
        if tree.is_leaf(pos) {
            if let Some(idx) = tree.node_at(pos) {
                visit(idx, &mut best);
            }
            continue;
        }
        let (l, r) = NodeTree::children(pos);
        // the left child first unless the right one's floor is lower
        for child in NodeTree::children_to_push(pos, floor(l), floor(r), |r, l| r < l) {
            stack.push(child);
        }
    }
    best
}

/// `priority-preemption`: see the module documentation.
#[derive(Debug, Default)]
pub struct PriorityPreemption;

impl Plugin for PriorityPreemption {
    fn name(&self) -> &'static str {
        "priority-preemption"
    }
    fn preempt(&self) -> Option<&dyn Preempt> {
        Some(self)
    }
}

impl Preempt for PriorityPreemption {
    fn preempt(&self, cx: &CycleState<'_>) -> Option<Placement> {
        let prio = cx.request.priority();
        let pool_need = pool_missing(cx);
        let mut lower = |a: &Allocation| a.priority() < prio;
        let best = best_node(cx, &pool_need, Some(prio.get()), &mut lower, &mut || {})?;
        Some(Placement {
            node: best.node,
            victims: best.victims,
            preemption: Preemption::Priority,
        })
    }
}

/// `reclaim`: for a request that keeps its pool within its guarantee, preempts grants of
/// other pools that hold more than their own guarantee, lowest priority first, never taking a
/// pool below its guarantee.
#[derive(Debug, Default)]
pub struct Reclaim;

impl Plugin for Reclaim {
    fn name(&self) -> &'static str {
        "reclaim"
    }
    fn preempt(&self) -> Option<&dyn Preempt> {
        Some(self)
    }
}

impl Preempt for Reclaim {
    fn preempt(&self, cx: &CycleState<'_>) -> Option<Placement> {
        let req = cx.request.resources();
        if !pool_missing(cx).is_empty() || !cx.pool.within_guarantee(req) {
            return None;
        }
        // What each lending pool would still hold after the victims taken so far on this node.
        let held: std::cell::RefCell<Vec<(PoolIdx, Resources)>> = std::cell::RefCell::default();
        let mut borrowed = |a: &Allocation| {
            if a.pool() == cx.request.pool() {
                return false;
            }
            let Some(pool) = cx.state.pool(a.pool()) else {
                return false;
            };
            let mut held = held.borrow_mut();
            let pos = match held.iter().position(|(p, _)| *p == a.pool()) {
                Some(i) => i,
                None => {
                    held.push((a.pool(), pool.allocated().clone()));
                    held.len() - 1
                }
            };
            let Some((_, left)) = held.get_mut(pos) else {
                return false;
            };
            // Only a pool holding more than its guarantee lends; it stops lending once
            // the victims taken so far bring it back within.
            let borrowing = !left.within_guarantee(pool.guaranteed());
            if borrowing {
                left.sub(a.resources());
            }
            borrowing
        };
        let mut reset = || held.borrow_mut().clear();
        let best = best_node(cx, &Resources::default(), None, &mut borrowed, &mut reset)?;
        Some(Placement {
            node: best.node,
            victims: best.victims,
            preemption: Preemption::Reclaim,
        })
    }
}
