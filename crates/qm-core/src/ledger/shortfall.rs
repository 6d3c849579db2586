//! Why a request cannot be granted now: its pool's limit, no eligible node, a hold on the node
//! it would fit, or what is missing on the closest node — the ready node, carrying the
//! selector's labels, whose missing resources are the smallest sum of fractions of its
//! allocatable (the earliest registered on a tie). The closest node is found through the node
//! index (a descent bounding each subtree's missing amount by its most free capacity), or, for
//! a policy that asks for it, by visiting every node; both give the same answer.

use super::Ledger;
use super::index::{STANDARD, Summary};
use crate::allocation::Allocation;
use crate::ids::NodeIdx;
use crate::ledger::{NodeTree, Shortfall, ShortfallReason};
use crate::node::Node;
use crate::resources::Resources;

/// The node closest to fitting a request: its missing size, index and missing resources.
type Closest = Option<(f64, NodeIdx, Resources)>;

impl Ledger {
    /// What keeps `cand` out: its pool's limit, no eligible node, capacity on the closest
    /// node, or a hold on the node it would fit.
    pub(super) fn shortfall(&self, cand: &Allocation) -> Shortfall {
        let st = &self.state;
        let req = &cand.resources;
        if let Some(pool) = st.pool(cand.pool)
            && let Some(limit) = &pool.spec.limit
            && !req.fits_under_cap(&pool.allocated, limit)
        {
            let missing = req.over_cap(&pool.allocated, limit);
            return Shortfall {
                reason: ShortfallReason::PoolLimit,
                missing,
                node: None,
            };
        }
        let closest = if self.policy.exhaustive() {
            self.closest_scanned(cand)
        } else {
            self.closest_searched(cand)
        };
        let best = match closest {
            Ok(best) => best,
            Err(held) => return held,
        };
        match best {
            Some((_, node, missing)) if missing.is_empty() && !cand.topology().is_empty() => {
                Shortfall {
                    reason: ShortfallReason::Topology,
                    missing,
                    node: Some(node),
                }
            }
            Some((_, node, missing)) => Shortfall {
                reason: ShortfallReason::Capacity,
                missing,
                node: Some(node),
            },
            None => Shortfall {
                reason: ShortfallReason::NoEligibleNode,
                missing: req.clone(),
                node: None,
            },
        }
    }

    /// The closest node, visiting every ready node in registration order; `Err` with the
    /// answer when the first node the request fits on is held for another request.
    fn closest_scanned(&self, cand: &Allocation) -> Result<Closest, Shortfall> {
        let st = &self.state;
        let mut best: Closest = None;
        for idx in &st.ready {
            let Some(node) = st.node(*idx) else { continue };
            if !node.matches(cand.node_selector()) {
                continue;
            }
            let missing = node.available().shortfall_for(&cand.resources);
            if missing.is_empty() && !st.hold_allows(node, cand) {
                return Err(held(*idx, missing));
            }
            let size = normalized_size(&missing, node.inv_allocatable());
            if best.as_ref().is_none_or(|(s, _, _)| size < *s) {
                best = Some((size, *idx, missing));
            }
        }
        Ok(best)
    }

    /// `closest_scanned`, through the indexes: a held node is one of the few nodes holds
    /// name, and the closest node comes from [`Ledger::closest`].
    fn closest_searched(&self, cand: &Allocation) -> Result<Closest, Shortfall> {
        let st = &self.state;
        let ready_match = |node: &Node| node.ready && node.matches(cand.node_selector());
        // The scan stops at the first node (in registration order) the request fits on but
        // may not use: only a held node can be one.
        let first_held = st
            .holds
            .values()
            .filter(|idx| {
                st.node(**idx).is_some_and(|n| {
                    ready_match(n) && n.fits(&cand.resources) && !st.hold_allows(n, cand)
                })
            })
            .min();
        if let Some(idx) = first_held {
            let missing = st
                .node(*idx)
                .map(|n| n.available().shortfall_for(&cand.resources))
                .unwrap_or_default();
            return Err(held(*idx, missing));
        }
        Ok(self.closest(cand, &ready_match))
    }

    /// The node closest to fitting `cand` among the ready nodes `accept` lets through (which
    /// must only let through nodes carrying the request's selector), the earliest registered on
    /// a tie: through the label index for a selector, else by descending the node index, the
    /// subtree with the smaller floor on its missing size first.
    pub(super) fn closest(&self, cand: &Allocation, accept: &dyn Fn(&Node) -> bool) -> Closest {
        let st = &self.state;
        let measure = |idx: NodeIdx| {
            let node = st.node(idx).filter(|n| n.ready && accept(n))?;
            let missing = node.available().shortfall_for(&cand.resources);
            Some((
                normalized_size(&missing, node.inv_allocatable()),
                idx,
                missing,
            ))
        };
        let better = |best: &Closest, size: f64, first: usize| {
            best.as_ref()
                .is_none_or(|(s, at, _)| size < *s || (size == *s && first < at.index()))
        };
        let mut best: Closest = None;
        if let Some((k, v)) = cand
            .node_selector()
            .iter()
            .min_by_key(|(k, v)| st.n_labelled(k, v))
        {
            for idx in st.nodes_labelled(k, v) {
                if let Some((size, idx, missing)) = measure(idx)
                    && better(&best, size, idx.index())
                {
                    best = Some((size, idx, missing));
                }
            }
            return best;
        }
        let tree = st.node_tree();
        let want = STANDARD.map(|r| cand.resources.get(r));
        let floor = |s: &Summary| missing_floor(s, &want);
        let mut stack: Vec<(usize, f64)> = Vec::with_capacity(64);
        let root = tree.summary(NodeTree::ROOT);
        if root.n_ready > 0 {
            stack.push((NodeTree::ROOT, floor(root)));
        }
        while let Some((pos, f)) = stack.pop() {
            if !better(&best, f, tree.first_index(pos)) {
                continue;
            }
            if tree.is_leaf(pos) {
                if let Some((size, idx, missing)) = tree.node_at(pos).and_then(measure)
                    && better(&best, size, idx.index())
                {
                    best = Some((size, idx, missing));
                }
                continue;
            }
            let (l, r) = NodeTree::children(pos);
            let (sl, sr) = (tree.summary(l), tree.summary(r));
            let fl = (sl.n_ready > 0).then(|| floor(sl));
            let fr = (sr.n_ready > 0).then(|| floor(sr));
            // the left child first unless the right one's floor is lower
            stack.extend(NodeTree::children_to_push(pos, fl, fr, |r, l| r < l));
        }
        best
    }
}

fn held(idx: NodeIdx, missing: Resources) -> Shortfall {
    Shortfall {
        reason: ShortfallReason::NodeHeld,
        missing,
        node: Some(idx),
    }
}

/// At most the missing size of any node under a summary: each standard resource's amount
/// beyond the most free any node there has, at the smallest inverse allocatable. Computed
/// term by term as [`normalized_size`] is (each term and each partial sum no larger), so it
/// never exceeds a node's size even in floating point.
fn missing_floor(s: &Summary, want: &[u64; 4]) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    want.iter()
        .zip(&s.max_free)
        .zip(&s.min_inv)
        .map(|((w, f), inv)| w.saturating_sub(*f) as f64 * inv.min(f64::MAX))
        .sum()
}

/// The size of `missing` as a sum of fractions of a node's allocatable (extended resources
/// count whole), to compare how close nodes come to fitting a request.
pub(crate) fn normalized_size(missing: &Resources, inv_allocatable: &[f64; 4]) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    missing
        .iter()
        .map(|(r, v)| v as f64 * inv_allocatable.get(r.index()).copied().unwrap_or(1.0))
        .sum()
}
