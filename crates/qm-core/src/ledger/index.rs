//! The node index: a segment tree over the node table (registration order), each entry
//! summing up a range of ready nodes — how many, the most of each standard resource any of
//! them has left, the extremes of their used fractions and inverse allocatables, and the
//! cheapest first victim — so strategies find the node they want by descending the tree
//! instead of scanning every node. The ledger rewrites a node's leaf (and the path above it)
//! in the same step that changes the node; nodes that are not ready (or are gone) are empty
//! leaves.
//!
//! Summaries only prune: a strategy still checks every node it lands on exactly, so an answer
//! found through the tree is the one a scan would find.

use crate::ids::NodeIdx;
use crate::node::Node;
use crate::resources::ResourceId;

/// The standard resources the tree summarizes, by index.
const N_STD: usize = 4;
pub(crate) const STANDARD: [ResourceId; N_STD] = [
    ResourceId::CPU,
    ResourceId::MEMORY,
    ResourceId::EPHEMERAL_STORAGE,
    ResourceId::GPU,
];

/// What a range of ready nodes has, at most and at least.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// How many ready nodes the range holds.
    pub n_ready: u32,
    /// The most any of them has left, per standard resource.
    pub max_free: [u64; N_STD],
    /// The largest `allocated * inv_allocatable` among them, per standard resource.
    pub max_used: [f64; N_STD],
    /// The smallest `allocated * inv_allocatable` among them, per standard resource.
    pub min_used: [f64; N_STD],
    /// The largest `1 / allocatable` among them (0 where none), per standard resource.
    pub max_inv: [f64; N_STD],
    /// The smallest `1 / allocatable` among them, per standard resource.
    pub min_inv: [f64; N_STD],
}

impl Summary {
    /// The summary of no node.
    pub const EMPTY: Self = Self {
        n_ready: 0,
        max_free: [0; N_STD],
        max_used: [0.0; N_STD],
        min_used: [f64::INFINITY; N_STD],
        max_inv: [0.0; N_STD],
        min_inv: [f64::INFINITY; N_STD],
    };

    /// The summary of one node (empty unless it is ready).
    fn of(node: Option<&Node>) -> Self {
        let Some(node) = node.filter(|n| n.ready) else {
            return Self::EMPTY;
        };
        let mut out = Self {
            n_ready: 1,
            ..Self::EMPTY
        };
        let inv = node.inv_allocatable;
        for r in 0..N_STD {
            let id = STANDARD[r];
            let (alloc, cap) = (node.allocated.get(id), node.spec.allocatable.get(id));
            out.max_free[r] = cap.saturating_sub(alloc);
            #[allow(clippy::cast_precision_loss)]
            let used = alloc as f64 * inv[r];
            out.max_used[r] = used;
            out.min_used[r] = used;
            out.max_inv[r] = inv[r];
            out.min_inv[r] = inv[r];
        }
        out
    }

    fn merge(a: &Self, b: &Self) -> Self {
        let mut out = Self {
            n_ready: a.n_ready + b.n_ready,
            ..Self::EMPTY
        };
        for r in 0..N_STD {
            out.max_free[r] = a.max_free[r].max(b.max_free[r]);
            out.max_used[r] = a.max_used[r].max(b.max_used[r]);
            out.min_used[r] = a.min_used[r].min(b.min_used[r]);
            out.max_inv[r] = a.max_inv[r].max(b.max_inv[r]);
            out.min_inv[r] = a.min_inv[r].min(b.min_inv[r]);
        }
        out
    }

    /// True when some node of the range might have `want` left of every standard resource.
    #[inline]
    pub fn may_fit(&self, want: &[u64; N_STD]) -> bool {
        self.n_ready > 0 && want.iter().zip(&self.max_free).all(|(w, f)| w <= f)
    }
}

/// The segment tree. Position 1 is the root; position `p` has children `2p` and `2p + 1`;
/// the leaves are positions `width..2 * width`, the node at table index `i` at `width + i`.
/// Capacity summaries and first victims are kept apart: a grant changes its node's first
/// victim all the way up, while its capacity summary usually stops changing a few levels up.
#[derive(Debug, Clone)]
pub struct NodeTree {
    width: usize,
    sums: Vec<Summary>,
    /// The smallest victim key (see `victim_key`) of any ready node's first victim: the
    /// lowest priority, then the most recent grant; `u64::MAX` when none has one.
    victims: Vec<u64>,
}

impl Default for NodeTree {
    fn default() -> Self {
        Self {
            width: 1,
            sums: vec![Summary::EMPTY; 2],
            victims: vec![u64::MAX; 2],
        }
    }
}

/// A node's first victim key, `u64::MAX` when it is not ready or has none.
fn first_victim(node: Option<&Node>) -> u64 {
    node.filter(|n| n.ready)
        .and_then(|n| n.victims.keys().next().copied())
        .unwrap_or(u64::MAX)
}

impl NodeTree {
    /// The root's position.
    pub const ROOT: usize = 1;

    /// The summary at `pos` (empty outside the tree).
    #[inline]
    pub fn summary(&self, pos: usize) -> &Summary {
        self.sums.get(pos).unwrap_or(&Summary::EMPTY)
    }

    /// How many leaves the tree has (a power of two, at least the number of nodes).
    pub fn width(&self) -> usize {
        self.width
    }

    /// The priority and grant order of the cheapest first victim under `pos`: every set of
    /// victims taken on one of its nodes has a highest priority at least this one, and, at
    /// that priority, an oldest grant no younger than this one. `None` without victims.
    #[inline]
    pub fn first_victim(&self, pos: usize) -> Option<(u16, u64)> {
        let key = self.victims.get(pos).copied().unwrap_or(u64::MAX);
        (key != u64::MAX).then(|| crate::ledger::decode_victim_key(key))
    }

    /// The positions of the children of `pos` (left, right).
    #[inline]
    pub fn children(pos: usize) -> (usize, usize) {
        (2 * pos, 2 * pos + 1)
    }

    /// The children of `pos` with their bounds, in the order a best-first depth-first search
    /// pushes them on its stack: the one to search next comes last. That is the right child
    /// when `prefer_right(right, left)`, else the left one (so registration order wins a
    /// tie); a child without a bound (nothing under it can qualify) is left out.
    #[inline]
    pub fn children_to_push<B: Copy>(
        pos: usize,
        left: Option<B>,
        right: Option<B>,
        prefer_right: impl FnOnce(B, B) -> bool,
    ) -> impl Iterator<Item = (usize, B)> {
        let (l, r) = Self::children(pos);
        let right_first = match (left, right) {
            (Some(lb), Some(rb)) => prefer_right(rb, lb),
            _ => false,
        };
        let order = if right_first {
            [(l, left), (r, right)]
        } else {
            [(r, right), (l, left)]
        };
        order
            .into_iter()
            .filter_map(|(p, bound)| bound.map(|b| (p, b)))
    }

    /// True when `pos` is a leaf.
    #[inline]
    pub fn is_leaf(&self, pos: usize) -> bool {
        pos >= self.width
    }

    /// The node at leaf `pos`.
    #[inline]
    pub fn node_at(&self, pos: usize) -> Option<NodeIdx> {
        pos.checked_sub(self.width).and_then(NodeIdx::from_index)
    }

    /// The table index of the first node under `pos` (registration order), so a search that
    /// visits subtrees out of order can still break ties by registration.
    #[inline]
    pub fn first_index(&self, pos: usize) -> usize {
        let mut p = pos.max(1);
        while p < self.width {
            p *= 2;
        }
        p - self.width
    }

    /// How many leaves lie under `pos` (a power of two).
    #[inline]
    pub fn span(&self, pos: usize) -> usize {
        let level = usize::BITS - 1 - pos.max(1).leading_zeros();
        self.width >> level
    }

    /// Rewrites the leaf of node `idx` from `node` and every summary above it.
    pub(crate) fn update(&mut self, idx: NodeIdx, node: Option<&Node>) {
        let i = idx.index();
        if i >= self.width {
            // Grow to the next power of two; the caller rebuilds (see `State::reindex`).
            return;
        }
        let mut pos = self.width + i;
        let key = first_victim(node);
        if self.victims[pos] != key {
            self.victims[pos] = key;
            while pos > 1 {
                pos /= 2;
                let merged = self.victims[2 * pos].min(self.victims[2 * pos + 1]);
                if self.victims[pos] == merged {
                    break;
                }
                self.victims[pos] = merged;
            }
        }
        let mut pos = self.width + i;
        let leaf = Summary::of(node);
        if self.sums[pos] == leaf {
            return;
        }
        self.sums[pos] = leaf;
        while pos > 1 {
            pos /= 2;
            let merged = Summary::merge(&self.sums[2 * pos], &self.sums[2 * pos + 1]);
            if self.sums[pos] == merged {
                return;
            }
            self.sums[pos] = merged;
        }
    }

    /// True when node `idx` has a leaf.
    pub(crate) fn covers(&self, idx: NodeIdx) -> bool {
        idx.index() < self.width
    }

    /// A tree over `nodes` (the node table), built in one pass.
    pub(crate) fn build<'a>(n: usize, nodes: impl Iterator<Item = Option<&'a Node>>) -> Self {
        let width = n.max(1).next_power_of_two();
        let mut sums = vec![Summary::EMPTY; 2 * width];
        let mut victims = vec![u64::MAX; 2 * width];
        for (i, node) in nodes.enumerate().take(width) {
            sums[width + i] = Summary::of(node);
            victims[width + i] = first_victim(node);
        }
        for pos in (1..width).rev() {
            sums[pos] = Summary::merge(&sums[2 * pos], &sums[2 * pos + 1]);
            victims[pos] = victims[2 * pos].min(victims[2 * pos + 1]);
        }
        Self {
            width,
            sums,
            victims,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeSpec;
    use crate::resources::Resources;

    fn node(cpu: u64, used: u64, ready: bool) -> Node {
        let mut n = Node::new(NodeSpec::new("n", Resources::new(cpu, 1 << 30)));
        n.allocated = Resources::new(used, 0);
        n.ready = ready;
        n
    }

    #[test]
    fn summaries_follow_their_nodes() {
        let nodes = [
            node(4000, 1000, true),
            node(8000, 0, false),
            node(2000, 500, true),
        ];
        let mut tree = NodeTree::build(3, nodes.iter().map(Some));
        assert_eq!(tree.width(), 4);
        let root = tree.summary(NodeTree::ROOT);
        assert_eq!(root.n_ready, 2, "a node that is not ready is an empty leaf");
        assert_eq!(root.max_free[0], 3000);
        assert!((root.max_used[0] - 0.25).abs() < 1e-12);
        assert!(root.may_fit(&[3000, 0, 0, 0]) && !root.may_fit(&[3001, 0, 0, 0]));
        assert_eq!((tree.first_index(3), tree.span(3)), (2, 2));
        assert_eq!(tree.node_at(6).map(NodeIdx::index), Some(2));

        let idx = NodeIdx::from_index(1).expect("index");
        tree.update(idx, Some(&node(8000, 0, true)));
        let root = tree.summary(NodeTree::ROOT);
        assert_eq!((root.n_ready, root.max_free[0]), (3, 8000));
        let fresh = NodeTree::build(
            3,
            [
                node(4000, 1000, true),
                node(8000, 0, true),
                node(2000, 500, true),
            ]
            .iter()
            .map(Some),
        );
        assert!((1..8).all(|p| fresh.summary(p) == tree.summary(p)));
        tree.update(idx, None);
        assert_eq!(
            tree.summary(NodeTree::ROOT).n_ready,
            2,
            "a removed node leaves"
        );
    }
}
