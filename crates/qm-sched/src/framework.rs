//! The framework: a strategy built from a [`Profile`] — one plugin instance per name, wired to
//! the extension points the profile lists — that answers the ledger as a [`Policy`].
//! A decision runs the filters over the ready nodes, sums weighted scores over the survivors
//! and picks the best (the earliest registered node on a tie); when none passes and
//! preemption is allowed, the preempt plugins are tried in order.

use std::cell::RefCell;

use qm_core::{
    Allocation, NodeIdx, Placement, Policy, PoolIdx, Preemption, QueueRank, State, Summary,
};

use crate::plugin::{Builtin, CycleState, Plugin};
use crate::plugins::{AgentSpread, TopologyPlan};
use crate::preset::{Profile, preset};
use crate::registry::{Registry, RegistryError};
use crate::search;

/// How a decision can be answered from the ledger's node index, by the profile's plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    /// Some plugin is not one the index summarizes: every node is asked.
    Scan,
    /// Built-in filters (with `fits`), no score: the first node that passes.
    FirstFit,
    /// Built-in filters (with `fits`), `most-allocated` alone: the best-scored node.
    MostAllocated,
    /// Built-in filters (with `fits`), `least-allocated` and `agent-spread` (plugin positions
    /// and weights): the best-scored node, once the most any passing node holds of the
    /// request's family is known.
    Spread {
        least: (usize, i64),
        spread: (usize, i64),
    },
}

#[derive(Debug, Default)]
struct Scratch {
    nodes: Vec<NodeIdx>,
    /// The one node a search asks the filters about.
    one_node: Vec<NodeIdx>,
    total: Vec<i64>,
    one: Vec<i64>,
}

/// A strategy assembled from plugins.
#[derive(Debug)]
pub struct Framework {
    name: String,
    plugins: Vec<Box<dyn Plugin>>,
    queue_order: usize,
    filters: Vec<usize>,
    scores: Vec<(usize, i64)>,
    preempt: Vec<usize>,
    reserve: Vec<usize>,
    search: Search,
    /// The filters include the built-in `node-selector`.
    selects: bool,
    /// The filters include the built-in `topology`.
    topology: bool,
    exhaustive: bool,
    scratch: RefCell<Scratch>,
}

impl Framework {
    /// Builds the strategy `profile` describes from `registry`'s plugins.
    pub fn new(registry: &Registry, profile: &Profile) -> Result<Self, RegistryError> {
        let mut fw = Self {
            name: profile.name.clone(),
            plugins: Vec::new(),
            queue_order: 0,
            filters: Vec::new(),
            scores: Vec::new(),
            preempt: Vec::new(),
            reserve: Vec::new(),
            search: Search::Scan,
            selects: false,
            topology: false,
            exhaustive: false,
            scratch: RefCell::default(),
        };
        fw.queue_order = fw.instance(registry, &profile.queue_order, "queue-order", |p| {
            p.queue_order().is_some()
        })?;
        for name in &profile.filters {
            let i = fw.instance(registry, name, "filter", |p| p.filter().is_some())?;
            push_once(&mut fw.filters, i, name, "filter")?;
        }
        for (name, weight) in &profile.scores {
            if !(1..=100).contains(weight) {
                return Err(RegistryError::BadWeight {
                    name: name.clone(),
                    weight: *weight,
                });
            }
            let i = fw.instance(registry, name, "score", |p| p.score().is_some())?;
            if fw.scores.iter().any(|(j, _)| *j == i) {
                return Err(RegistryError::Repeated {
                    name: name.clone(),
                    point: "score",
                });
            }
            fw.scores.push((i, i64::from(*weight)));
        }
        for name in &profile.preempt {
            let i = fw.instance(registry, name, "preempt", |p| p.preempt().is_some())?;
            push_once(&mut fw.preempt, i, name, "preempt")?;
        }
        for name in &profile.reserve {
            let i = fw.instance(registry, name, "reserve", |p| p.reserve().is_some())?;
            push_once(&mut fw.reserve, i, name, "reserve")?;
        }
        fw.search = fw.search_kind();
        fw.selects = fw
            .filters
            .iter()
            .any(|i| fw.plugins.get(*i).and_then(|p| p.builtin()) == Some(Builtin::NodeSelector));
        fw.topology = fw
            .filters
            .iter()
            .any(|i| fw.plugins.get(*i).and_then(|p| p.builtin()) == Some(Builtin::Topology));
        Ok(fw)
    }

    /// This strategy, deciding by visiting every node instead of searching the ledger's node
    /// index: the reference the indexed searches are tested against (same decisions, slower).
    #[must_use]
    pub fn exhaustive(mut self) -> Self {
        self.exhaustive = true;
        self
    }

    /// Which search of the node index gives exactly this profile's answers.
    fn search_kind(&self) -> Search {
        let kind = |i: &usize| self.plugins.get(*i).and_then(|p| p.builtin());
        let filters: Option<Vec<Builtin>> = self.filters.iter().map(kind).collect();
        let Some(filters) = filters else {
            return Search::Scan;
        };
        let known = filters.iter().all(|f| {
            matches!(
                f,
                Builtin::NodeSelector | Builtin::NodeHold | Builtin::Fits | Builtin::Topology
            )
        });
        if !known || !filters.contains(&Builtin::Fits) {
            return Search::Scan;
        }
        let scores: Option<Vec<Builtin>> = self.scores.iter().map(|(i, _)| kind(i)).collect();
        match (scores.as_deref(), self.scores.as_slice()) {
            (Some([]), _) => Search::FirstFit,
            (Some([Builtin::MostAllocated]), _) => Search::MostAllocated,
            (Some([Builtin::LeastAllocated, Builtin::AgentSpread]), &[least, spread])
            | (Some([Builtin::AgentSpread, Builtin::LeastAllocated]), &[spread, least]) => {
                Search::Spread { least, spread }
            }
            _ => Search::Scan,
        }
    }

    /// True when `idx` passes every filter (each asked about this one node).
    fn passes(&self, cx: &CycleState<'_>, one: &mut Vec<NodeIdx>, idx: NodeIdx) -> bool {
        one.clear();
        one.push(idx);
        for f in self
            .filters
            .iter()
            .filter_map(|i| self.plugins.get(*i)?.filter())
        {
            f.filter(cx, one);
            if one.is_empty() {
                return false;
            }
        }
        true
    }

    /// The best node found by searching the node index, when the profile and the request
    /// allow it (`None` inside: nothing passes); `None` outside when a scan must decide.
    fn searched_node(&self, cx: &CycleState<'_>) -> Option<Option<NodeIdx>> {
        if self.exhaustive || self.search == Search::Scan {
            return None;
        }
        let tree = cx.state.node_tree();
        let want = search::wants(cx);
        let mut scratch = self.scratch.borrow_mut();
        let one = &mut scratch.one_node;
        Some(match self.search {
            Search::MostAllocated if want.iter().any(|w| *w > 0) => {
                let (i, _) = *self.scores.first()?;
                let s = self.plugins.get(i)?.score()?;
                let mut out = [0i64];
                search::best_scored(
                    tree,
                    &want,
                    &|_, sum| search::most_allocated_bound(sum, &want),
                    cx.topology,
                    &mut |idx| {
                        if !self.passes(cx, one, idx) {
                            return None;
                        }
                        s.score(cx, &[idx], &mut out);
                        Some(out[0])
                    },
                )
            }
            Search::Spread { least, spread } => {
                return self.spread_node(cx, &want, least, spread, one);
            }
            // Without a standard resource asked for, every node scores the same: the first.
            _ => search::first_fit(tree, &want, cx.topology, &mut |idx| {
                self.passes(cx, one, idx)
            }),
        })
    }

    /// The built-in strategy called `name`, from the built-in registry.
    pub fn preset(name: &str) -> Result<Self, RegistryError> {
        Self::new(&Registry::builtin(), &Profile::from(preset(name)?))
    }

    /// The plugin instance for `name` (made on first use), checked to implement `point`.
    fn instance(
        &mut self,
        registry: &Registry,
        name: &str,
        point: &'static str,
        implements: fn(&mut dyn Plugin) -> bool,
    ) -> Result<usize, RegistryError> {
        let i = match self.plugins.iter().position(|p| p.name() == name) {
            Some(i) => i,
            None => {
                let factory = registry.get(name).ok_or_else(|| registry.unknown(name))?;
                self.plugins.push(factory());
                self.plugins.len() - 1
            }
        };
        let ok = self
            .plugins
            .get_mut(i)
            .is_some_and(|p| implements(p.as_mut()));
        if ok {
            Ok(i)
        } else {
            Err(RegistryError::WrongPoint {
                name: name.to_owned(),
                point,
            })
        }
    }

    /// `searched_node` for `least-allocated` plus `agent-spread`: first the most grants of the
    /// request's family any passing node holds (what `agent-spread` scores against), then the
    /// best node, bounding each subtree's spread score by the fewest grants it holds.
    fn spread_node(
        &self,
        cx: &CycleState<'_>,
        want: &[u64; 4],
        (least, w_least): (usize, i64),
        (spread, w_spread): (usize, i64),
        one: &mut Vec<NodeIdx>,
    ) -> Option<Option<NodeIdx>> {
        let tree = cx.state.node_tree();
        let least = self.plugins.get(least)?.score()?;
        let spread = self
            .plugins
            .get(spread)?
            .as_any()?
            .downcast_ref::<AgentSpread>()?;
        let counts = spread.family_counts(cx);
        let range = |start: usize, len: usize| counts.map_or((0, 0), |c| c.range(start, len));
        let most = if counts.is_some() {
            let pass = &mut |idx| self.passes(cx, one, idx);
            match search::most_counted(tree, want, &range, cx.topology, pass) {
                Some(m) => m,
                None => return Some(None),
            }
        } else {
            0
        };
        let bound = |pos: usize, sum: &Summary| {
            let fewest = range(tree.first_index(pos), tree.span(pos)).0.min(most);
            w_least * search::least_allocated_bound(sum, want)
                + w_spread * AgentSpread::score_of(fewest, most)
        };
        let mut out = [0i64];
        Some(search::best_scored(
            tree,
            want,
            &bound,
            cx.topology,
            &mut |idx| {
                if !self.passes(cx, one, idx) {
                    return None;
                }
                least.score(cx, &[idx], &mut out);
                let count = counts.map_or(0, |c| c.get(idx));
                Some(w_least * out[0] + w_spread * AgentSpread::score_of(count, most))
            },
        ))
    }

    /// How many nodes are few enough to score one by one rather than search for.
    fn few(cx: &CycleState<'_>) -> usize {
        (cx.state.ready_nodes().len() / 16).max(8)
    }

    /// The label of the request's selector the fewest nodes carry, when the profile's
    /// filters are the built-ins (with `node-selector`) and those nodes are few enough to
    /// score one by one rather than search for. The filters see those nodes instead of every
    /// ready node: the ones they keep are the same, as each built-in filter judges a node on
    /// its own.
    fn few_labelled<'a>(&self, cx: &CycleState<'a>) -> Option<(&'a str, &'a str)> {
        if self.exhaustive || self.search == Search::Scan || !self.selects {
            return None;
        }
        let st = cx.state;
        let (k, v, n) = cx
            .request
            .node_selector()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str(), st.n_labelled(k, v)))
            .min_by_key(|(_, _, n)| *n)?;
        (n <= Self::few(cx)).then_some((k, v))
    }

    /// The ready nodes the request's topology rules confine it to, when the profile's filters
    /// are the built-ins (with `topology`) and a rule allows only domains holding matching
    /// grants whose nodes are few enough to score one by one. Every node the filters would
    /// keep is among them.
    fn topology_confined(&self, cx: &CycleState<'_>) -> Option<Vec<NodeIdx>> {
        if self.exhaustive || self.search == Search::Scan || !self.topology {
            return None;
        }
        cx.topology?.confined(cx.state, Self::few(cx))
    }

    fn best_node(&self, cx: &CycleState<'_>) -> Option<NodeIdx> {
        let few = self.few_labelled(cx);
        let confined = match few {
            None => self.topology_confined(cx),
            Some(_) => None,
        };
        if few.is_none()
            && confined.is_none()
            && let Some(found) = self.searched_node(cx)
        {
            return found;
        }
        let mut scratch = self.scratch.borrow_mut();
        let Scratch {
            nodes, total, one, ..
        } = &mut *scratch;
        nodes.clear();
        match (few, confined) {
            (Some((k, v)), _) => nodes.extend(
                cx.state
                    .nodes_labelled(k, v)
                    .filter(|i| cx.state.node(*i).is_some_and(|n| n.ready())),
            ),
            (None, Some(confined)) => nodes.extend(confined),
            (None, None) => nodes.extend_from_slice(cx.state.ready_nodes()),
        }
        if nodes.is_empty() {
            return None;
        }
        for f in self
            .filters
            .iter()
            .filter_map(|i| self.plugins.get(*i)?.filter())
        {
            f.filter(cx, nodes);
            if nodes.is_empty() {
                return None;
            }
        }
        if self.scores.is_empty() {
            return nodes.first().copied();
        }
        total.clear();
        total.resize(nodes.len(), 0);
        for (i, weight) in &self.scores {
            let Some(s) = self.plugins.get(*i).and_then(|p| p.score()) else {
                continue;
            };
            one.clear();
            one.resize(nodes.len(), 0);
            s.score(cx, nodes, one);
            for (t, v) in total.iter_mut().zip(one.iter()) {
                *t += v * weight;
            }
        }
        let mut best = 0;
        for (i, t) in total.iter().enumerate() {
            if *t > total[best] {
                best = i;
            }
        }
        nodes.get(best).copied()
    }
}

fn push_once(
    list: &mut Vec<usize>,
    i: usize,
    name: &str,
    point: &'static str,
) -> Result<(), RegistryError> {
    if list.contains(&i) {
        return Err(RegistryError::Repeated {
            name: name.to_owned(),
            point,
        });
    }
    list.push(i);
    Ok(())
}

impl Policy for Framework {
    fn name(&self) -> &str {
        &self.name
    }

    fn rank(&self, state: &State, pool: PoolIdx, head: &Allocation) -> QueueRank {
        match self
            .plugins
            .get(self.queue_order)
            .and_then(|p| p.queue_order())
        {
            Some(q) => q.rank(state, pool, head),
            None => QueueRank([0, 0, head.id().seq()]),
        }
    }

    fn place(&self, state: &State, request: &Allocation, preempt: bool) -> Option<Placement> {
        let pool = state.pool(request.pool())?;
        let mut cx = CycleState {
            state,
            request,
            pool,
            exhaustive: self.exhaustive,
            topology: None,
        };
        // Resolved once for the whole decision, unless the reference resolves them per call.
        let plan =
            (!self.exhaustive && !request.topology().is_empty()).then(|| TopologyPlan::new(&cx));
        cx.topology = plan.as_ref();
        if pool.fits(request.resources())
            && let Some(node) = self.best_node(&cx)
        {
            return Some(Placement {
                node,
                victims: Vec::new(),
                preemption: Preemption::None,
            });
        }
        if !preempt {
            return None;
        }
        self.preempt
            .iter()
            .filter_map(|i| self.plugins.get(*i)?.preempt())
            .find_map(|p| p.preempt(&cx))
    }

    fn exhaustive(&self) -> bool {
        self.exhaustive
    }

    fn reserve(&mut self, state: &State, alloc: &Allocation) {
        for i in &self.reserve {
            if let Some(r) = self.plugins.get_mut(*i).and_then(|p| p.reserve()) {
                r.reserve(state, alloc);
            }
        }
    }

    fn unreserve(&mut self, state: &State, alloc: &Allocation) {
        for i in &self.reserve {
            if let Some(r) = self.plugins.get_mut(*i).and_then(|p| p.reserve()) {
                r.unreserve(state, alloc);
            }
        }
    }
}
