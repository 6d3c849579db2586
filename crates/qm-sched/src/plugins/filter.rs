//! Filter plugins: label selectors, holds for starving requests, and resource fit.

use qm_core::NodeIdx;

use crate::plugin::{Builtin, CycleState, Filter, Plugin};

/// `node-selector`: only nodes carrying every label the request selects.
#[derive(Debug, Default)]
pub struct NodeSelector;

impl Plugin for NodeSelector {
    fn name(&self) -> &'static str {
        "node-selector"
    }
    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::NodeSelector)
    }
    fn filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
}

impl Filter for NodeSelector {
    fn filter(&self, cx: &CycleState<'_>, nodes: &mut Vec<NodeIdx>) {
        let selector = cx.request.node_selector();
        if !selector.is_empty() {
            nodes.retain(|i| cx.state.node(*i).is_some_and(|n| n.matches(selector)));
        }
    }
}

/// `node-hold`: a node held for a starving request is open only to it and higher priorities.
#[derive(Debug, Default)]
pub struct NodeHold;

impl Plugin for NodeHold {
    fn name(&self) -> &'static str {
        "node-hold"
    }
    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::NodeHold)
    }
    fn filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
}

impl Filter for NodeHold {
    fn filter(&self, cx: &CycleState<'_>, nodes: &mut Vec<NodeIdx>) {
        if cx.state.holds().next().is_some() {
            nodes.retain(|i| {
                cx.state
                    .node(*i)
                    .is_some_and(|n| cx.state.hold_allows(n, cx.request))
            });
        }
    }
}

/// `fits`: only nodes with enough left for the whole request.
#[derive(Debug, Default)]
pub struct Fits;

impl Plugin for Fits {
    fn name(&self) -> &'static str {
        "fits"
    }
    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::Fits)
    }
    fn filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
}

impl Filter for Fits {
    fn filter(&self, cx: &CycleState<'_>, nodes: &mut Vec<NodeIdx>) {
        let req = cx.request.resources();
        nodes.retain(|i| cx.state.node(*i).is_some_and(|n| n.fits(req)));
    }
}
