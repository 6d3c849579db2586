//! Score plugins: pack (most allocated, the best-fit score), spread (least allocated), and
//! spread an agent family's allocations over nodes (which keeps per-node counts through the
//! reserve extension point).

use std::any::Any;
use std::collections::HashMap;

use qm_core::{Allocation, NodeIdx, ResourceId, State};

use crate::plugin::{Builtin, CycleState, MAX_SCORE, Plugin, Reserve, Score};

const BASE: [ResourceId; 4] = [
    ResourceId::CPU,
    ResourceId::MEMORY,
    ResourceId::EPHEMERAL_STORAGE,
    ResourceId::GPU,
];

/// The standard resources a request asks for, with the amounts: what fullness is taken over.
fn wanted(cx: &CycleState<'_>) -> ([(usize, u64); 4], usize) {
    let req = cx.request.resources();
    let mut out = [(0, 0); 4];
    let mut n = 0;
    for r in BASE {
        let want = req.get(r);
        if want > 0 {
            out[n] = (r.index(), want);
            n += 1;
        }
    }
    (out, n)
}

/// The mean fraction of allocatable the node would have handed out after the grant, over the
/// standard resources the request asks for (0 when it asks for none).
#[inline]
fn fullness_after(cx: &CycleState<'_>, idx: NodeIdx, wants: &[(usize, u64)]) -> f64 {
    let Some(node) = cx.state.node(idx) else {
        return 0.0;
    };
    if wants.is_empty() {
        return 0.0;
    }
    let inv = node.inv_allocatable();
    let allocated = node.allocated();
    let mut sum = 0.0;
    for &(r, want) in wants {
        let inv = inv.get(r).copied().unwrap_or(0.0);
        #[allow(clippy::cast_precision_loss)]
        let used = allocated.get(BASE[r]).saturating_add(want) as f64;
        sum += (used * inv).min(1.0);
    }
    #[allow(clippy::cast_precision_loss)]
    let n = wants.len() as f64;
    sum / n
}

#[allow(clippy::cast_possible_truncation)]
#[inline]
fn to_score(fraction: f64) -> i64 {
    // Non-negative, so adding a half and truncating rounds (without a libm call).
    (fraction.clamp(0.0, 1.0) * MAX_SCORE as f64 + 0.5) as i64
}

/// `most-allocated`: prefers the fullest node the request fits on (best fit: packs work onto
/// few nodes and keeps whole nodes free for large requests).
#[derive(Debug, Default)]
pub struct MostAllocated;

impl Plugin for MostAllocated {
    fn name(&self) -> &'static str {
        "most-allocated"
    }
    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::MostAllocated)
    }
    fn score(&self) -> Option<&dyn Score> {
        Some(self)
    }
}

impl Score for MostAllocated {
    fn score(&self, cx: &CycleState<'_>, nodes: &[NodeIdx], out: &mut [i64]) {
        let (wants, n) = wanted(cx);
        for (idx, s) in nodes.iter().zip(out) {
            *s = to_score(fullness_after(cx, *idx, &wants[..n]));
        }
    }
}

/// `least-allocated`: prefers the emptiest node (spreads load and blast radius).
#[derive(Debug, Default)]
pub struct LeastAllocated;

impl Plugin for LeastAllocated {
    fn name(&self) -> &'static str {
        "least-allocated"
    }
    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::LeastAllocated)
    }
    fn score(&self) -> Option<&dyn Score> {
        Some(self)
    }
}

impl Score for LeastAllocated {
    fn score(&self, cx: &CycleState<'_>, nodes: &[NodeIdx], out: &mut [i64]) {
        let (wants, n) = wanted(cx);
        for (idx, s) in nodes.iter().zip(out) {
            *s = to_score(1.0 - fullness_after(cx, *idx, &wants[..n]));
        }
    }
}

/// An agent's family: its name less a trailing `-N` or `.N` (`coder-17` → `coder`), so a
/// fleet's replicas count together.
pub fn family(agent: &str) -> &str {
    let trimmed = agent.trim_end_matches(|c: char| c.is_ascii_digit());
    match trimmed.strip_suffix(['-', '.']) {
        Some(stem) if trimmed.len() < agent.len() && !stem.is_empty() => stem,
        _ => agent,
    }
}

/// `agent-spread`: prefers nodes holding fewer grants of the request's agent family, so one
/// node's loss takes few replicas of a fleet. Keeps its counts through reserve/unreserve.
#[derive(Debug, Default)]
pub struct AgentSpread {
    /// Per family, grants per node index.
    counts: HashMap<Box<str>, FamilyCounts>,
}

/// One family's grants per node, in a segment tree laid out as the ledger's node index
/// (position 1 the root, leaves from `width` in node-table order) holding the fewest and the
/// most grants over each range, so a search can bound the score of a whole subtree.
#[derive(Debug, Default)]
pub struct FamilyCounts {
    width: usize,
    /// (fewest, most) per position.
    tree: Vec<(u32, u32)>,
}

impl FamilyCounts {
    /// The family's grants on node `idx`.
    pub fn get(&self, idx: NodeIdx) -> u32 {
        if idx.index() >= self.width {
            return 0;
        }
        self.tree
            .get(self.width + idx.index())
            .map_or(0, |(c, _)| *c)
    }

    /// The fewest and the most grants on any node of the aligned range of `len` nodes from
    /// `start` (a subtree of the node index; nodes past the end of this tree hold none).
    pub fn range(&self, start: usize, len: usize) -> (u32, u32) {
        if start >= self.width || len == 0 {
            return (0, 0);
        }
        let root = self.tree.get(1).copied().unwrap_or((0, 0));
        if len > self.width {
            return (0, root.1);
        }
        self.tree
            .get(self.width / len + start / len)
            .copied()
            .unwrap_or((0, 0))
    }

    fn add(&mut self, idx: NodeIdx, up: bool) {
        let i = idx.index();
        if i >= self.width {
            let width = (i + 1).next_power_of_two();
            let mut tree = vec![(0, 0); 2 * width];
            for j in 0..self.width {
                tree[width + j] = self.tree[self.width + j];
            }
            for pos in (1..width).rev() {
                tree[pos] = merge(tree[2 * pos], tree[2 * pos + 1]);
            }
            *self = Self { width, tree };
        }
        let mut pos = self.width + i;
        let c = self.tree[pos].0;
        let c = if up { c + 1 } else { c.saturating_sub(1) };
        self.tree[pos] = (c, c);
        while pos > 1 {
            pos /= 2;
            self.tree[pos] = merge(self.tree[2 * pos], self.tree[2 * pos + 1]);
        }
    }

    fn is_empty(&self) -> bool {
        self.tree.get(1).is_none_or(|(_, most)| *most == 0)
    }
}

fn merge(a: (u32, u32), b: (u32, u32)) -> (u32, u32) {
    (a.0.min(b.0), a.1.max(b.1))
}

impl AgentSpread {
    /// The grants per node of the request's family; `None` when it holds none anywhere.
    pub fn family_counts(&self, cx: &CycleState<'_>) -> Option<&FamilyCounts> {
        self.counts.get(family(cx.request.agent()))
    }

    /// The score of a node holding `count` grants of the family when the nodes that passed
    /// the filters hold at most `most` (0 for none).
    pub fn score_of(count: u32, most: u32) -> i64 {
        if most == 0 {
            MAX_SCORE
        } else {
            let (count, most) = (i64::from(count), i64::from(most));
            MAX_SCORE * (most - count) / most
        }
    }
}

impl Plugin for AgentSpread {
    fn name(&self) -> &'static str {
        "agent-spread"
    }
    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::AgentSpread)
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn score(&self) -> Option<&dyn Score> {
        Some(self)
    }
    fn reserve(&mut self) -> Option<&mut dyn Reserve> {
        Some(self)
    }
}

impl Score for AgentSpread {
    fn score(&self, cx: &CycleState<'_>, nodes: &[NodeIdx], out: &mut [i64]) {
        let Some(per_node) = self.family_counts(cx) else {
            out.fill(MAX_SCORE);
            return;
        };
        let most = nodes.iter().map(|i| per_node.get(*i)).max().unwrap_or(0);
        for (idx, s) in nodes.iter().zip(out) {
            *s = Self::score_of(per_node.get(*idx), most);
        }
    }
}

impl Reserve for AgentSpread {
    fn reserve(&mut self, _: &State, alloc: &Allocation) {
        let Some(node) = alloc.node() else { return };
        let fam = family(alloc.agent());
        let per_node = match self.counts.get_mut(fam) {
            Some(v) => v,
            None => self.counts.entry(fam.into()).or_default(),
        };
        per_node.add(node, true);
    }

    fn unreserve(&mut self, _: &State, alloc: &Allocation) {
        let (Some(node), fam) = (alloc.node(), family(alloc.agent())) else {
            return;
        };
        let Some(per_node) = self.counts.get_mut(fam) else {
            return;
        };
        per_node.add(node, false);
        if per_node.is_empty() {
            self.counts.remove(fam);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_drop_a_trailing_number() {
        assert_eq!(family("coder-17"), "coder");
        assert_eq!(family("coder.3"), "coder");
        assert_eq!(family("coder"), "coder");
        assert_eq!(family("17"), "17");
        assert_eq!(family("-17"), "-17");
        assert_eq!(family("gpt4"), "gpt4");
    }
}
