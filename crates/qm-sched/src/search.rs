//! Searches over the ledger's node index ([`qm_core::NodeTree`]) that answer a decision without
//! visiting every node: the first node (in registration order) that passes, the node with the
//! best score, and the node with the cheapest victims. Each is a depth-first descent that
//! prunes a subtree only when its summary proves no node in it can pass or beat the best found
//! so far, and checks every node it reaches with the strategy's own filters and scores — so
//! the answer is the one a scan of every node gives, ties included (the earliest registered
//! node wins).
//!
//! Cost: a descent visits the paths to the nodes it checks. When free capacity is what rules
//! nodes out, that is O(log n) per answer; the worst case is O(n), where many nodes have
//! enough of each resource apart but not together, or are ruled out by labels or holds the
//! index does not summarize.

use qm_core::{NodeIdx, NodeTree, ResourceId, Summary};

use crate::plugin::{CycleState, MAX_SCORE};
use crate::plugins::TopologyPlan;

/// The standard resources, in the index's order.
const BASE: [ResourceId; 4] = [
    ResourceId::CPU,
    ResourceId::MEMORY,
    ResourceId::EPHEMERAL_STORAGE,
    ResourceId::GPU,
];

/// Slack on score bounds, far above floating-point error on fractions near 1 and far below
/// one score point (1 / [`MAX_SCORE`]).
const SLACK: f64 = 1e-9;

/// A depth-first search's pending subtrees, on the call stack: a descent keeps at most one
/// pending sibling per level plus the subtree in hand, and the node index is at most 33
/// levels deep (node indices are 32-bit), so 64 entries always suffice.
pub(crate) struct Stack<T> {
    items: [T; 64],
    len: usize,
}

impl<T: Copy + Default> Stack<T> {
    pub(crate) fn new() -> Self {
        Self {
            items: [T::default(); 64],
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        debug_assert!(
            self.len < self.items.len(),
            "a search deeper than the node index"
        );
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = item;
            self.len += 1;
        }
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        self.len = self.len.checked_sub(1)?;
        self.items.get(self.len).copied()
    }
}

/// The standard resources the request asks for.
pub(crate) fn wants(cx: &CycleState<'_>) -> [u64; 4] {
    let req = cx.request.resources();
    BASE.map(|r| req.get(r))
}

/// The first node in registration order that may hold `want` and passes `pass`. In every
/// search here, `rules` (the request's topology rules) may rule out whole subtrees.
pub(crate) fn first_fit(
    tree: &NodeTree,
    want: &[u64; 4],
    rules: Option<&TopologyPlan<'_>>,
    pass: &mut dyn FnMut(NodeIdx) -> bool,
) -> Option<NodeIdx> {
    let mut stack = Stack::new();
    stack.push(NodeTree::ROOT);
    while let Some(pos) = stack.pop() {
        if !tree.summary(pos).may_fit(want) || rules.is_some_and(|r| r.rules_out(tree, pos)) {
            continue;
        }
        if tree.is_leaf(pos) {
            if let Some(idx) = tree.node_at(pos)
                && pass(idx)
            {
                return Some(idx);
            }
            continue;
        }
        stack.push(2 * pos + 1);
        stack.push(2 * pos);
    }
    None
}

/// How full a node would be after the grant, bounded over a summary, as `fullness_after` in
/// the score plugins computes it for one node: the mean over the standard resources the request
/// asks for of `min(1, (allocated + want) / allocatable)`.
fn fullness_bound(s: &Summary, want: &[u64; 4], upper: bool) -> f64 {
    let mut sum = 0.0;
    let mut n = 0u32;
    for (r, &w) in want.iter().enumerate() {
        if w == 0 {
            continue;
        }
        n += 1;
        #[allow(clippy::cast_precision_loss)]
        let w = w as f64;
        let f = if upper {
            s.max_used[r] + w * s.max_inv[r]
        } else {
            s.min_used[r] + w * s.min_inv[r]
        };
        sum += f.min(1.0);
    }
    if n == 0 {
        return 0.0;
    }
    let mean = sum / f64::from(n);
    if upper {
        mean + SLACK
    } else {
        (mean - SLACK).max(0.0)
    }
}

/// As the score plugins round a fraction to a score.
#[allow(clippy::cast_possible_truncation)]
fn to_score(fraction: f64) -> i64 {
    (fraction.clamp(0.0, 1.0) * MAX_SCORE as f64 + 0.5) as i64
}

/// The largest score `least-allocated` can give any node under a summary.
pub(crate) fn least_allocated_bound(s: &Summary, want: &[u64; 4]) -> i64 {
    to_score(1.0 - fullness_bound(s, want, false))
}

/// The largest score `most-allocated` can give any node under a summary.
pub(crate) fn most_allocated_bound(s: &Summary, want: &[u64; 4]) -> i64 {
    to_score(fullness_bound(s, want, true))
}

/// The most `count` gives any node that may hold `want` and passes `pass`; `None` when no
/// node passes. `range` gives the fewest and most `count` under a subtree (its first node
/// and its number of leaves).
pub(crate) fn most_counted(
    tree: &NodeTree,
    want: &[u64; 4],
    range: &dyn Fn(usize, usize) -> (u32, u32),
    rules: Option<&TopologyPlan<'_>>,
    pass: &mut dyn FnMut(NodeIdx) -> bool,
) -> Option<u32> {
    let most = |pos: usize| range(tree.first_index(pos), tree.span(pos)).1;
    let mut found: Option<u32> = None;
    let mut stack: Stack<(usize, u32)> = Stack::new();
    stack.push((NodeTree::ROOT, most(NodeTree::ROOT)));
    while let Some((pos, m)) = stack.pop() {
        if found.is_some_and(|f| m <= f)
            || !tree.summary(pos).may_fit(want)
            || rules.is_some_and(|r| r.rules_out(tree, pos))
        {
            continue;
        }
        if tree.is_leaf(pos) {
            if let Some(idx) = tree.node_at(pos)
                && pass(idx)
            {
                found = Some(found.map_or(m, |f| f.max(m)));
            }
            continue;
        }
        let (l, r) = NodeTree::children(pos);
        // the child holding more first
        for child in NodeTree::children_to_push(pos, Some(most(l)), Some(most(r)), |r, l| r > l) {
            stack.push(child);
        }
    }
    found
}

/// The node with the highest score among those that may hold `want` and pass `score` (which
/// answers `None` for a node that does not pass), the earliest registered on a tie. `bound`
/// must give, for a subtree (its position and summary), at least the score of every node
/// under it.
pub(crate) fn best_scored(
    tree: &NodeTree,
    want: &[u64; 4],
    bound: &dyn Fn(usize, &Summary) -> i64,
    rules: Option<&TopologyPlan<'_>>,
    score: &mut dyn FnMut(NodeIdx) -> Option<i64>,
) -> Option<NodeIdx> {
    let mut best: Option<(i64, usize, NodeIdx)> = None;
    let beats = |best: &Option<(i64, usize, NodeIdx)>, value: i64, first: usize| {
        best.is_none_or(|(b, at, _)| value > b || (value == b && first < at))
    };
    // (position, its bound); a child with the higher bound is searched first.
    let mut stack: Stack<(usize, i64)> = Stack::new();
    let root = tree.summary(NodeTree::ROOT);
    if !root.may_fit(want) {
        return None;
    }
    stack.push((NodeTree::ROOT, bound(NodeTree::ROOT, root)));
    while let Some((pos, b)) = stack.pop() {
        if !beats(&best, b, tree.first_index(pos)) || rules.is_some_and(|r| r.rules_out(tree, pos))
        {
            continue;
        }
        if tree.is_leaf(pos) {
            let Some(idx) = tree.node_at(pos) else {
                continue;
            };
            if let Some(value) = score(idx)
                && beats(&best, value, idx.index())
            {
                best = Some((value, idx.index(), idx));
            }
            continue;
        }
        let (l, r) = NodeTree::children(pos);
        let (sl, sr) = (tree.summary(l), tree.summary(r));
        let bl = sl.may_fit(want).then(|| bound(l, sl));
        let br = sr.may_fit(want).then(|| bound(r, sr));
        // the left child first unless the right one bounds higher
        for child in NodeTree::children_to_push(pos, bl, br, |r, l| r > l) {
            stack.push(child);
        }
    }
    best.map(|(_, _, idx)| idx)
}
