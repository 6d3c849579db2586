//! Serving the queue: as capacity frees, queued requests are granted in the order the policy
//! ranks pool heads; a request that does not fit is skipped for smaller ones behind it
//! (backfill, up to `backfill_depth` skips a pass), and the first one skipped that has waited
//! `reserve_after_ms` gets a node held for it so it is never starved.

use std::collections::BTreeSet;
use std::ops::Bound;

use super::{Event, Ledger, normalized_size};
use crate::ids::{AllocId, NodeIdx, Timestamp};
use crate::node::Node;
use crate::policy::{Preemption, QueueRank};
use crate::resources::Resources;

/// One pool's place in a drain pass: its next candidate and where it stands in line.
#[derive(Debug, Clone, Copy)]
struct Head {
    rank: QueueRank,
    key: u64,
    id: AllocId,
}

impl Ledger {
    /// Grants what queued requests fit now; returns how many were granted. Every command that
    /// frees capacity drains on its own; call this to let time pass (holds for waiting requests
    /// are taken during a drain).
    pub fn drain(&mut self, now: Timestamp) -> usize {
        let mut granted = 0;
        while self.state.n_queued > 0 {
            let (n, preempted) = self.drain_pass(now);
            granted += n;
            // Preemption frees capacity a skipped request may fit in: go again.
            if !preempted || n == 0 {
                break;
            }
        }
        granted
    }

    fn drain_pass(&mut self, now: Timestamp) -> (usize, bool) {
        let mut granted = 0;
        let mut preempted = false;
        // Requests holding a node go first: that is what the hold is for.
        let held: Vec<AllocId> = self.state.holds.keys().copied().collect();
        for id in held {
            if let Some(victims) = self.try_grant(now, id, true) {
                granted += 1;
                preempted |= victims;
            }
        }
        let n_pools = self.state.pools.len();
        let mut after: Vec<Option<u64>> = vec![None; n_pools];
        let mut heads: Vec<Option<Head>> = (0..n_pools).map(|p| self.head(p, None)).collect();
        // Pools in line by their head's rank (then pool order, as a scan would break ties).
        let mut line: BTreeSet<(QueueRank, usize)> = heads
            .iter()
            .enumerate()
            .filter_map(|(p, h)| Some((h.as_ref()?.rank, p)))
            .collect();
        let mut max_free: Option<Resources> = None;
        let mut skipped = 0;
        let mut first_miss = true;
        while let Some(&(_, p)) = line.first() {
            let Some(head) = heads.get(p).copied().flatten() else {
                break;
            };
            let Some(cand) = self.state.alloc(head.id) else {
                break;
            };
            // Only the first request that misses may preempt: that bounds a pass's cost, and
            // it is the one first in line.
            let could_fit = first_miss || {
                let free = max_free.get_or_insert_with(|| self.state.max_available());
                cand.resources.fits(free)
            };
            let placement = if could_fit {
                self.place_checked(cand, first_miss)
            } else {
                None
            };
            match placement {
                Some(pl) => {
                    let touched: Vec<usize> = pl
                        .victims
                        .iter()
                        .filter_map(|v| self.state.alloc(*v).map(|a| a.pool.index()))
                        .collect();
                    preempted |= pl.preemption != Preemption::None && !pl.victims.is_empty();
                    self.apply_grant(now, head.id, pl);
                    granted += 1;
                    max_free = None;
                    self.requeue(&mut line, &mut heads, p, after[p]);
                    for q in touched {
                        if q < heads.len() {
                            self.requeue(&mut line, &mut heads, q, after[q]);
                        }
                    }
                }
                None => {
                    if first_miss {
                        first_miss = false;
                        self.maybe_hold(now, head.id);
                    }
                    skipped += 1;
                    after[p] = Some(head.key);
                    self.requeue(&mut line, &mut heads, p, after[p]);
                    if skipped >= self.config.backfill_depth {
                        break;
                    }
                }
            }
        }
        (granted, preempted)
    }

    /// Puts pool `p` back in line with its first queued request after `after`.
    fn requeue(
        &self,
        line: &mut BTreeSet<(QueueRank, usize)>,
        heads: &mut [Option<Head>],
        p: usize,
        after: Option<u64>,
    ) {
        let Some(slot) = heads.get_mut(p) else { return };
        if let Some(old) = slot.take() {
            line.remove(&(old.rank, p));
        }
        *slot = self.head(p, after);
        if let Some(h) = slot {
            line.insert((h.rank, p));
        }
    }

    /// Grants the queued request `id` if it fits now; returns whether it preempted anything.
    fn try_grant(&mut self, now: Timestamp, id: AllocId, preempt: bool) -> Option<bool> {
        let cand = self.state.alloc(id)?;
        let placement = self.place_checked(cand, preempt)?;
        let preempted = !placement.victims.is_empty();
        self.apply_grant(now, id, placement);
        Some(preempted)
    }

    /// Pool `p`'s first queued request after key `after`, with its rank.
    fn head(&self, p: usize, after: Option<u64>) -> Option<Head> {
        let pool = self.state.pools.get(p)?.live.as_ref()?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let (&key, &id) = pool.queue.range((lower, Bound::Unbounded)).next()?;
        let alloc = self.state.alloc(id)?;
        let rank = self.policy.rank(&self.state, alloc.pool, alloc);
        Some(Head { rank, key, id })
    }

    /// Holds a node for `id` if it has waited long enough and holds none yet: the ready,
    /// eligible, unheld node that could ever fit it and is closest to fitting it now (found
    /// through the indexes, or by visiting every node for a policy that asks for it).
    fn maybe_hold(&mut self, now: Timestamp, id: AllocId) {
        let st = &self.state;
        let Some(cand) = st.alloc(id) else { return };
        if st.holds.contains_key(&id)
            || now.millis_since(cand.created_at) < self.config.reserve_after_ms
        {
            return;
        }
        // Ready, unheld, carrying the selector's labels, and large enough to ever fit it.
        let may_hold = |node: &Node| {
            node.ready
                && node.held_for.is_none()
                && node.matches(cand.node_selector())
                && cand.resources.fits(node.allocatable())
        };
        let best = if self.policy.exhaustive() {
            let mut best: Option<(f64, NodeIdx)> = None;
            for idx in &st.ready {
                let Some(node) = st.node(*idx).filter(|n| may_hold(n)) else {
                    continue;
                };
                let missing = node.available().shortfall_for(&cand.resources);
                let size = normalized_size(&missing, node.inv_allocatable());
                if best.is_none_or(|(s, _)| size < s) {
                    best = Some((size, *idx));
                }
            }
            best
        } else {
            self.closest(cand, &may_hold).map(|(s, idx, _)| (s, idx))
        };
        let Some((_, node)) = best else { return };
        self.state.holds.insert(id, node);
        if let Some(n) = self.node_mut(node) {
            n.held_for = Some(id);
        }
        self.events.push(Event::Held { id, node });
    }
}
