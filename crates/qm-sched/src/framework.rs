//! The framework: a strategy built from a [`Profile`] — one plugin instance per name, wired to
//! the extension points the profile lists — that answers the ledger as a [`Policy`].
//! A decision runs the filters over the ready nodes, sums weighted scores over the survivors
//! and picks the best (the earliest registered node on a tie); when none passes and
//! preemption is allowed, the preempt plugins are tried in order.

use std::cell::RefCell;

use qm_core::{Allocation, NodeIdx, Placement, Policy, PoolIdx, Preemption, QueueRank, State};

use crate::plugin::{CycleState, Plugin};
use crate::preset::{Profile, preset};
use crate::registry::{Registry, RegistryError};

#[derive(Debug, Default)]
struct Scratch {
    nodes: Vec<NodeIdx>,
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
        Ok(fw)
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

    fn best_node(&self, cx: &CycleState<'_>) -> Option<NodeIdx> {
        let mut scratch = self.scratch.borrow_mut();
        let Scratch { nodes, total, one } = &mut *scratch;
        nodes.clear();
        nodes.extend_from_slice(cx.state.ready_nodes());
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
        let cx = CycleState {
            state,
            request,
            pool,
        };
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
