//! The ledger: the single source of truth for who holds what. A pure state machine: commands
//! (submit, release, renew, expire, evict, node and pool changes, drain) come in with the time,
//! decisions and [`Event`]s come out. It never reads a clock and does no IO. Where a request
//! goes is asked of a [`Policy`]; the ledger checks every answer against its invariants (no
//! node over allocatable, no pool over its limit, victims only on the stated grounds) before
//! applying it.

mod drain;
mod granted;
mod index;
mod nodes;
mod restore;
mod shortfall;
mod state;

use std::mem;
use std::num::NonZeroU64;

use crate::allocation::{AllocState, Allocation, Request, ValidationErrors};
use crate::ids::{AllocId, NodeIdx, PoolIdx, Timestamp};
use crate::node::{Pool, PoolSpec};
use crate::policy::{Placement, Policy, Preemption};
use crate::resources::Resources;

pub use granted::GrantedSet;
pub use index::{NodeTree, Summary};
pub use nodes::{NodeError, PoolError};
pub use restore::{AllocationRecord, RestoreError, Snapshot};
use shortfall::normalized_size;
pub use state::State;
pub(crate) use state::decode_victim_key;
use state::{Slot, queue_key, victim_key};

/// Tuning of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// How many queued requests one drain pass may skip (because they do not fit) while looking
    /// for smaller ones behind them to backfill. Bounds the cost of a pass over a long queue.
    pub backfill_depth: usize,
    /// A request that has waited this long and is first in line but does not fit gets a node
    /// held for it: lower priorities stop landing there until it fits.
    pub reserve_after_ms: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            backfill_depth: 1000,
            reserve_after_ms: 60_000,
        }
    }
}

/// What happened, in order. Callers persist and publish these.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "events are drained in place, never boxed"
)]
pub enum Event {
    /// A request was granted on a node, after the listed allocations were preempted for it.
    Granted {
        id: AllocId,
        node: NodeIdx,
        preempted: Vec<AllocId>,
    },
    /// A request waits in its pool's queue.
    Queued { id: AllocId },
    /// A node is held for a queued request that waited too long.
    Held { id: AllocId, node: NodeIdx },
    /// An allocation reached a final state; this is its last record.
    Ended(Allocation),
    /// A node takes grants.
    NodeReady { node: NodeIdx },
    /// A node takes no new grants.
    NodeNotReady { node: NodeIdx },
}

/// Why a grant keeps its size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResizeError {
    #[error("allocation {0} is not live")]
    NotLive(AllocId),
    #[error("allocation {0} is queued, not granted")]
    NotGranted(AllocId),
    #[error("limits: a limit is below its request")]
    LimitBelowRequest,
    /// Its node (or pool) lacks this much of the growth.
    #[error("no room for the growth")]
    Short(Resources),
}

/// Why a request cannot be granted now, and what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// Which obstacle is in the way.
    pub reason: ShortfallReason,
    /// What is still missing: on the closest node, or under the pool's limit.
    pub missing: Resources,
    /// The closest node, when the obstacle is capacity.
    pub node: Option<NodeIdx>,
}

/// The obstacle a [`Shortfall`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShortfallReason {
    /// The pool's limit would be exceeded.
    PoolLimit,
    /// No ready node carries the labels the request selects.
    NoEligibleNode,
    /// No eligible node has enough left, even after preempting what may be preempted.
    Capacity,
    /// It would fit, but the node is held for a longer-waiting request of equal or higher
    /// priority.
    NodeHeld,
    /// A node has room, but its spread or affinity rules keep it off every such node.
    Topology,
}

/// How a submitted request was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Granted on `node`, preempting `preempted`.
    Granted {
        node: NodeIdx,
        preempted: Vec<AllocId>,
    },
    /// Queued; `shortfall` says what it waits for.
    Queued { shortfall: Shortfall },
}

/// A request's id and how it was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The new allocation's id (none for a dry run).
    pub id: Option<AllocId>,
    /// Granted or queued.
    pub decision: Decision,
}

/// Why a request was not taken; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Fields are invalid.
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    /// The pool does not exist.
    #[error("pool: no pool named {0:?}")]
    UnknownPool(String),
    /// It does not fit now and the request asked not to queue.
    #[error("insufficient resources: {:?} missing ({:?})", .0.missing, .0.reason)]
    Insufficient(Shortfall),
    /// The ledger holds as many live allocations as it can.
    #[error("the ledger is full: {0} live allocations")]
    Full(usize),
}

/// Why a renew or evict was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    /// The id names no live allocation (never issued, or already ended).
    #[error("allocation {0} is not live")]
    NotLive(AllocId),
    /// The allocation is queued, and the command needs a grant.
    #[error("allocation {0} is queued, not granted")]
    NotGranted(AllocId),
    /// Renewing an allocation that has no lease, without giving a ttl.
    #[error("allocation {0} has no lease to renew; give a ttl")]
    NoLease(AllocId),
    /// A ttl of zero.
    #[error("ttl_s: must be positive")]
    ZeroTtl,
}

/// The ledger. See the module documentation.
#[derive(Debug)]
pub struct Ledger {
    state: State,
    policy: Box<dyn Policy>,
    config: LedgerConfig,
    events: Vec<Event>,
}

impl Ledger {
    /// An empty ledger (no nodes; only pool `default`) deciding with `policy`.
    pub fn new(policy: Box<dyn Policy>, config: LedgerConfig) -> Self {
        let mut state = State {
            next_seq: 1,
            next_grant: 1,
            ..State::default()
        };
        state.pools.push(Slot {
            name: "default".into(),
            live: Some(Pool::new(PoolSpec::new("default"))),
        });
        state.pool_names.insert("default".into(), PoolIdx(0));
        Self {
            state,
            policy,
            config,
            events: Vec::new(),
        }
    }

    /// What the ledger holds.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The strategy's name.
    pub fn policy_name(&self) -> &str {
        self.policy.name()
    }

    /// The queue tuning.
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// Events since the last [`Ledger::clear_events`] or [`Ledger::take_events`].
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Takes the pending events.
    pub fn take_events(&mut self) -> Vec<Event> {
        mem::take(&mut self.events)
    }

    /// Drops the pending events, keeping the buffer.
    pub fn clear_events(&mut self) {
        self.events.clear();
    }

    /// Grants `req` now (preempting if the strategy does), queues it if it asks to queue, or
    /// refuses it with what is missing. A refusal changes nothing.
    pub fn submit(&mut self, now: Timestamp, req: Request) -> Result<Submitted, SubmitError> {
        let queue = req.queue;
        let alloc = self.prepare(now, req)?;
        let id = alloc.id;
        match self.decide(&alloc, true) {
            Ok(placement) => {
                self.state.next_seq += 1;
                self.state.allocs.insert(alloc);
                let node = placement.node;
                let preempted = self.apply_grant(now, id, placement);
                if !preempted.is_empty() {
                    // Victims may have freed more than the grant took.
                    self.drain(now);
                }
                Ok(Submitted {
                    id: Some(id),
                    decision: Decision::Granted { node, preempted },
                })
            }
            Err(shortfall) if queue => {
                self.state.next_seq += 1;
                self.enqueue(now, alloc);
                Ok(Submitted {
                    id: Some(id),
                    decision: Decision::Queued { shortfall },
                })
            }
            Err(shortfall) => Err(SubmitError::Insufficient(shortfall)),
        }
    }

    /// What [`Ledger::submit`] would answer, changing nothing.
    pub fn dry_run(&self, now: Timestamp, req: Request) -> Result<Submitted, SubmitError> {
        let queue = req.queue;
        let alloc = self.prepare(now, req)?;
        match self.decide(&alloc, true) {
            Ok(p) => Ok(Submitted {
                id: None,
                decision: Decision::Granted {
                    node: p.node,
                    preempted: p.victims,
                },
            }),
            Err(shortfall) if queue => Ok(Submitted {
                id: None,
                decision: Decision::Queued { shortfall },
            }),
            Err(shortfall) => Err(SubmitError::Insufficient(shortfall)),
        }
    }

    /// Gives an allocation back: a grant becomes `released`, a queued request `cancelled`.
    /// Returns the final state, or `None` when the id is not live (releasing twice is harmless).
    /// Freed capacity goes to the queue at once.
    pub fn release(&mut self, now: Timestamp, id: AllocId) -> Option<AllocState> {
        let state = match self.state.alloc(id)?.state {
            AllocState::Queued => AllocState::Cancelled,
            _ => AllocState::Released,
        };
        self.end(now, id, state, None, None);
        // Freed capacity, or a freed hold, goes to the queue.
        self.drain(now);
        Some(state)
    }

    /// Extends a grant's lease to `now + ttl` (the given ttl, else the one it was granted with).
    pub fn renew(
        &mut self,
        now: Timestamp,
        id: AllocId,
        ttl_ms: Option<u64>,
    ) -> Result<Timestamp, LiveError> {
        if ttl_ms == Some(0) {
            return Err(LiveError::ZeroTtl);
        }
        let alloc = self
            .state
            .allocs
            .get_mut(id)
            .ok_or(LiveError::NotLive(id))?;
        // a queued request renews the lease on its place in the queue
        let ttl = ttl_ms.or(alloc.ttl_ms()).ok_or(LiveError::NoLease(id))?;
        let expires = now.plus_millis(ttl);
        let old = alloc.expires_at.replace(expires);
        alloc.ttl_ms = NonZeroU64::new(ttl);
        if let Some(old) = old {
            self.state.expiry.remove(&(old, id));
        }
        self.state.expiry.insert((expires, id));
        Ok(expires)
    }

    /// Changes a grant's size in place (vertical scaling without a restart): `resources`
    /// and `limits` replace its own when its node and pool have room for the growth (a
    /// smaller size always fits). Refused, changing nothing, otherwise; never forced.
    pub fn resize(
        &mut self,
        id: AllocId,
        resources: Resources,
        limits: Option<Resources>,
    ) -> Result<(), ResizeError> {
        let alloc = self.state.allocs.get(id).ok_or(ResizeError::NotLive(id))?;
        if alloc.state != AllocState::Granted {
            return Err(ResizeError::NotGranted(id));
        }
        if let Some(l) = &limits {
            for (rid, req) in resources.iter() {
                let lim = l.get(rid);
                if lim != 0 && lim < req {
                    return Err(ResizeError::LimitBelowRequest);
                }
            }
        }
        let (old, node_idx, pool_idx) = (alloc.resources.clone(), alloc.node, alloc.pool);
        let Some(node_idx) = node_idx else {
            return Err(ResizeError::NotGranted(id));
        };
        let growth = resources.saturating_sub(&old);
        if let Some(node) = self.state.node(node_idx) {
            let short = node.available().shortfall_for(&growth);
            if !short.is_empty() {
                return Err(ResizeError::Short(short));
            }
        }
        if let Some(pool) = self.state.pool(pool_idx)
            && let Some(cap) = &pool.spec.limit
            && !growth.fits_under_cap(&pool.allocated, cap)
        {
            return Err(ResizeError::Short(growth.over_cap(&pool.allocated, cap)));
        }
        if let Some(a) = self.state.allocs.get(id) {
            self.policy.unreserve(&self.state, a);
        }
        if let Some(n) = self.node_mut(node_idx) {
            n.allocated.sub(&old);
            n.allocated.add(&resources);
        }
        self.state.reindex(node_idx);
        if let Some(p) = self.pool_mut(pool_idx) {
            p.allocated.sub(&old);
            p.allocated.add(&resources);
        }
        if let Some(a) = self.state.allocs.get_mut(id) {
            a.qos = crate::priority::Qos::derive(&resources, limits.as_ref());
            match (&mut a.extra, limits) {
                (Some(e), l) => e.limits = l,
                (None, Some(l)) => {
                    a.extra = Some(Box::new(crate::allocation::Extra {
                        limits: Some(l),
                        labels: crate::Labels::new(),
                        node_selector: crate::Labels::new(),
                        topology: crate::allocation::Topology::default(),
                    }));
                }
                (None, None) => {}
            }
            a.resources = resources;
        }
        if let Some(a) = self.state.allocs.get(id) {
            self.policy.reserve(&self.state, a);
        }
        Ok(())
    }

    /// Takes a grant back to relieve pressure; `reason` is recorded on it.
    pub fn evict(&mut self, now: Timestamp, id: AllocId, reason: &str) -> Result<(), LiveError> {
        match self.state.alloc(id).map(|a| a.state) {
            None => Err(LiveError::NotLive(id)),
            Some(AllocState::Queued) => Err(LiveError::NotGranted(id)),
            Some(_) => {
                self.end(now, id, AllocState::Evicted, Some(reason.into()), None);
                self.drain(now);
                Ok(())
            }
        }
    }

    /// Ends every grant whose lease ran out by `now`; returns how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let mut n = 0;
        while let Some(&(at, id)) = self.state.expiry.first() {
            if at > now {
                break;
            }
            self.end(
                now,
                id,
                AllocState::Expired,
                Some("lease expired".into()),
                None,
            );
            n += 1;
        }
        if n > 0 {
            self.drain(now);
        }
        n
    }

    fn prepare(&self, now: Timestamp, req: Request) -> Result<Allocation, SubmitError> {
        req.validate()?;
        let (pool, _) = self
            .state
            .pool_by_name(&req.pool)
            .ok_or_else(|| SubmitError::UnknownPool(req.pool.clone()))?;
        let slot = self
            .state
            .allocs
            .next_slot()
            .ok_or(SubmitError::Full(self.state.n_live()))?;
        let id = AllocId::new(self.state.next_seq, slot)
            .ok_or(SubmitError::Full(self.state.n_live()))?;
        Ok(Allocation::from_request(id, pool, req, now))
    }

    /// Asks the policy where `cand` goes and checks the answer.
    fn decide(&self, cand: &Allocation, preempt: bool) -> Result<Placement, Shortfall> {
        self.place_checked(cand, preempt)
            .ok_or_else(|| self.shortfall(cand))
    }

    /// Like [`Ledger::decide`], without working out what is missing when nothing fits (the
    /// queue's drain only needs to know whether a request goes now).
    fn place_checked(&self, cand: &Allocation, preempt: bool) -> Option<Placement> {
        self.policy
            .place(&self.state, cand, preempt)
            .filter(|p| self.check(cand, p, preempt))
    }

    /// True when applying `p` keeps every invariant.
    fn check(&self, cand: &Allocation, p: &Placement, preempt: bool) -> bool {
        let ok = self.check_inner(cand, p, preempt);
        if !ok {
            // A strategy bug; counted so tests and operators can see it.
            let refused = &self.state.refused_placements;
            refused.set(refused.get() + 1);
        }
        ok
    }

    fn check_inner(&self, cand: &Allocation, p: &Placement, preempt: bool) -> bool {
        let st = &self.state;
        let Some(node) = st.node(p.node) else {
            return false;
        };
        if !node.ready || !node.matches(cand.node_selector()) || !st.hold_allows(node, cand) {
            return false;
        }
        let Some(pool) = st.pool(cand.pool) else {
            return false;
        };
        if p.victims.is_empty() {
            return node.fits(&cand.resources) && pool.fits(&cand.resources);
        }
        if !preempt || p.preemption == Preemption::None {
            return false;
        }
        if p.preemption == Preemption::Reclaim && !pool.within_guarantee(&cand.resources) {
            return false;
        }
        let mut node_used = node.allocated.clone();
        let mut pool_used = pool.allocated.clone();
        for (i, v) in p.victims.iter().enumerate() {
            if p.victims[..i].contains(v) {
                return false;
            }
            let Some(a) = st.alloc(*v) else { return false };
            let grounds = match p.preemption {
                Preemption::Priority => a.priority < cand.priority,
                Preemption::Reclaim => {
                    a.pool != cand.pool && st.pool(a.pool).is_some_and(Pool::is_borrowing)
                }
                Preemption::None => false,
            };
            if a.state != AllocState::Granted
                || a.node != Some(p.node)
                || !a.preemptible
                || !grounds
            {
                return false;
            }
            node_used.sub(&a.resources);
            if a.pool == cand.pool {
                pool_used.sub(&a.resources);
            }
        }
        cand.resources
            .fits_beside(&node_used, &node.spec.allocatable)
            && pool
                .spec
                .limit
                .as_ref()
                .is_none_or(|l| cand.resources.fits_under_cap(&pool_used, l))
    }

    /// Queues `alloc`; one with a lease holds its place only while the lease is renewed (a
    /// waiter that went away does not keep a queued request, to be granted to no one).
    fn enqueue(&mut self, now: Timestamp, mut alloc: Allocation) {
        let id = alloc.id;
        let key = queue_key(&alloc);
        if let Some(pool) = self.pool_mut(alloc.pool) {
            pool.queue.insert(key, id);
        }
        alloc.expires_at = alloc.ttl_ms().map(|t| now.plus_millis(t));
        if let Some(at) = alloc.expires_at {
            self.state.expiry.insert((at, id));
        }
        self.state.allocs.insert(alloc);
        self.state.n_queued += 1;
        self.events.push(Event::Queued { id });
    }

    /// Applies a checked placement to the live allocation `id`; returns the preempted ids.
    fn apply_grant(&mut self, now: Timestamp, id: AllocId, placement: Placement) -> Vec<AllocId> {
        let Placement {
            node,
            victims,
            preemption,
        } = placement;
        for v in &victims {
            let reason = format!("{} preemption by {id}", preemption.name());
            self.end(
                now,
                *v,
                AllocState::Preempted,
                Some(reason.into()),
                Some(id),
            );
        }
        let grant_seq = self.state.next_grant;
        self.state.next_grant += 1;
        let Some(alloc) = self.state.allocs.get_mut(id) else {
            return victims;
        };
        alloc.state = AllocState::Granted;
        alloc.node = Some(node);
        alloc.granted_at = Some(now);
        // the queue lease (if any) gives way to the grant's, which runs from now
        if let Some(queued_until) = alloc.expires_at {
            self.state.expiry.remove(&(queued_until, id));
        }
        alloc.expires_at = alloc.ttl_ms().map(|t| now.plus_millis(t));
        alloc.grant_seq = grant_seq;
        let (pool_idx, qkey, vkey) = (alloc.pool, queue_key(alloc), victim_key(alloc));
        let (preemptible, expires, res) =
            (alloc.preemptible, alloc.expires_at, alloc.resources.clone());
        // A request granted from the queue leaves it (a fresh submit was never in it).
        let was_queued = self
            .pool_mut(pool_idx)
            .is_some_and(|p| p.queue.remove(&qkey).is_some());
        if was_queued {
            self.state.n_queued -= 1;
            self.unhold(id);
        }
        if let Some(n) = self.node_mut(node) {
            n.allocated.add(&res);
            n.n_granted += 1;
            if preemptible {
                n.victims.insert(vkey, id);
            }
        }
        self.state.reindex(node);
        if let Some(pool) = self.pool_mut(pool_idx) {
            pool.allocated.add(&res);
            pool.n_granted += 1;
        }
        if let Some(at) = expires {
            self.state.expiry.insert((at, id));
        }
        if let Some(alloc) = self.state.allocs.get(id) {
            let counts = &mut self.state.granted_labels;
            let node_labels = granted::spec_labels(&self.state.nodes, alloc.node);
            granted::count_grant_labels(counts, alloc.node, node_labels, alloc.labels(), true);
            self.policy.reserve(&self.state, alloc);
        }
        self.events.push(Event::Granted {
            id,
            node,
            preempted: victims.clone(),
        });
        victims
    }

    /// Moves a live allocation to a final state and out of the ledger.
    fn end(
        &mut self,
        now: Timestamp,
        id: AllocId,
        to: AllocState,
        reason: Option<Box<str>>,
        by: Option<AllocId>,
    ) {
        let Some(mut alloc) = self.state.allocs.remove(id) else {
            return;
        };
        match alloc.state {
            AllocState::Granted => {
                let (res, vkey) = (&alloc.resources, victim_key(&alloc));
                if let Some(idx) = alloc.node {
                    if let Some(n) = self.node_mut(idx) {
                        n.allocated.sub(res);
                        n.n_granted -= 1;
                        n.victims.remove(&vkey);
                    }
                    self.state.reindex(idx);
                }
                if let Some(pool) = self.pool_mut(alloc.pool) {
                    pool.allocated.sub(res);
                    pool.n_granted -= 1;
                }
                if let Some(at) = alloc.expires_at {
                    self.state.expiry.remove(&(at, id));
                }
                let counts = &mut self.state.granted_labels;
                let node_labels = granted::spec_labels(&self.state.nodes, alloc.node);
                granted::count_grant_labels(counts, alloc.node, node_labels, alloc.labels(), false);
                self.policy.unreserve(&self.state, &alloc);
            }
            _ => {
                self.state.n_queued -= 1;
                if let Some(at) = alloc.expires_at {
                    self.state.expiry.remove(&(at, id));
                }
                let qkey = queue_key(&alloc);
                if let Some(pool) = self.pool_mut(alloc.pool) {
                    pool.queue.remove(&qkey);
                }
                self.unhold(id);
            }
        }
        alloc.finish(to, now, reason, by);
        self.events.push(Event::Ended(alloc));
    }

    fn unhold(&mut self, id: AllocId) {
        if let Some(node) = self.state.holds.remove(&id)
            && let Some(n) = self.node_mut(node)
        {
            n.held_for = None;
        }
    }

    fn node_mut(&mut self, idx: NodeIdx) -> Option<&mut crate::node::Node> {
        self.state
            .nodes
            .get_mut(idx.index())
            .and_then(|s| s.live.as_mut())
    }

    fn pool_mut(&mut self, idx: PoolIdx) -> Option<&mut Pool> {
        self.state
            .pools
            .get_mut(idx.index())
            .and_then(|s| s.live.as_mut())
    }
}

#[cfg(test)]
mod tests;
