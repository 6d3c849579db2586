//! Metric history: every gauge and rate series the monitor records, kept in bounded in-memory
//! rings at a few downsampling tiers (host series: 1 s for 15 min, 10 s for 6 h, 60 s for 7
//! days; agent series, those with an `agent` label: 1 s for 5 min, 10 s for 1 h, 60 s for
//! 24 h). Pure logic: time is a parameter (unix milliseconds), nothing here reads a clock.
//!
//! Every tier of a series stores the mean of the samples that fell in each of its steps
//! (slot time = `at / step * step`); the finest tier does the same, so two samples in one
//! step average rather than overwrite. Means are computed from raw samples at every tier,
//! not from the finer tier's means. A step without a sample is missing (NaN inside, left out
//! of query answers), never zero. Values are kept as `f32` (about seven significant digits).
//!
//! Memory: rings grow lazily (8 slots, then doubling, never past the tier's points), so a
//! series that lived 10 s costs a few hundred bytes. The bound is, per series, about 300
//! bytes of key, map and ring headers plus 4 bytes per tier point: 8.4 KB for a full agent
//! series (2,100 points), 52.6 KB for a full host series (13,140 points); with at most
//! `max_series` series that caps the whole at `max_series` × (300 B + 4 B × the larger tier
//! set's points). 1,000 agents × 6 series fully filled measure about 52 MB (see the test
//! `memory_bound_for_a_thousand_agents`).

mod config;
mod ring;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use qm_sys::metric::{Kind, Sample};

pub use config::{DEFAULT_AGENT_SERIES, HistoryConfig, MAX_TIER_POINTS, Tier};
use ring::Ring;

/// Unix time in milliseconds.
pub type UnixMs = u64;

/// How often (in recorded time) `record` drops series that have left every tier.
const PRUNE_EVERY_MS: u64 = 60_000;

/// The label that marks a series as an agent's (and gives it the agent tiers).
const AGENT_LABEL: &str = "agent";

/// Separates label pairs in a series key.
const PAIR_SEP: char = '\0';
/// Separates a label's name from its value in a series key.
const KV_SEP: char = '\u{1}';

/// A range query over one metric name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The metric name (`qm_host_memory_used_ratio`).
    pub name: String,
    /// Label equalities; a series matches when it has every one (a missing label never
    /// matches).
    pub matchers: Vec<(String, String)>,
    /// The first time wanted; the step containing it is included.
    pub from: UnixMs,
    /// The last time wanted, inclusive.
    pub to: UnixMs,
    /// The step wanted. `None`: the finest tier that reaches back to `from`. `Some(s)`: the
    /// coarsest tier that reaches back to `from` with a step at most `s`, its points averaged
    /// into steps of `s` rounded up to a multiple of the tier's step; a step finer than
    /// every such tier gets the finest tier's own.
    pub step_ms: Option<u64>,
}

/// One series' points in a query's range.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    /// The metric name.
    pub name: String,
    /// The series' labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// The step of `points`.
    pub step_ms: u64,
    /// (step start, mean), oldest first; steps without data are left out.
    pub points: Vec<(UnixMs, f64)>,
}

/// The newest sample of one series: its labels, time and value.
pub type Latest = (Vec<(String, String)>, UnixMs, f64);

/// Counts for `/status` and the daemon's own metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Series held.
    pub series: usize,
    /// Ring slots in use over every tier of every series (missing steps included).
    pub points_held: usize,
    /// Series evicted to stay under `max_series` (or refused when one collection alone
    /// brought more new series than that).
    pub evicted: u64,
    /// Series dropped because their newest point left every tier.
    pub pruned: u64,
}

/// One series: its newest sample and one ring per tier.
#[derive(Debug)]
struct Series {
    last_at: UnixMs,
    last_value: f64,
    agent: bool,
    rings: Box<[Ring]>,
}

impl Series {
    fn new(agent: bool, n_tiers: usize) -> Self {
        Series {
            last_at: 0,
            last_value: f64::NAN,
            agent,
            rings: (0..n_tiers).map(|_| Ring::new()).collect(),
        }
    }

    fn add(&mut self, at: UnixMs, value: f64, tiers: &[Tier]) {
        for (ring, tier) in self.rings.iter_mut().zip(tiers) {
            ring.add(at / tier.step_ms, value, tier.points);
        }
        if at >= self.last_at {
            self.last_at = at;
            self.last_value = value;
        }
    }

    /// Whether the newest point has left every tier at `at`.
    fn expired(&self, at: UnixMs, tiers: &[Tier]) -> bool {
        tiers
            .iter()
            .all(|t| at / t.step_ms >= (self.last_at / t.step_ms).saturating_add(t.points as u64))
    }
}

/// Metric history: series keyed by name (static, so interned for free) and then by a joined
/// label string (`key\u{1}value\0key\u{1}value`, sorted by label name).
#[derive(Debug)]
pub struct History {
    config: HistoryConfig,
    by_name: BTreeMap<&'static str, BTreeMap<Box<str>, Series>>,
    n_series: usize,
    /// The newest `at` recorded: what "now" means to queries.
    now: UnixMs,
    next_prune: UnixMs,
    evicted: u64,
    pruned: u64,
}

impl History {
    /// An empty history. Callers validate the config first; what would break the history
    /// in an invalid one (a zero step or point count, no tiers) is clamped, never a panic.
    pub fn new(config: HistoryConfig) -> Self {
        History {
            config: config.clamped(),
            by_name: BTreeMap::new(),
            n_series: 0,
            now: 0,
            next_prune: 0,
            evicted: 0,
            pruned: 0,
        }
    }

    /// The config in force.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// Records one collection taken at `at`: gauges and rates with a finite value (counters,
    /// NaN and infinities are skipped). A sample older than its series' newest step is
    /// dropped. Every minute of recorded time, expired series are pruned first.
    pub fn record(&mut self, at: UnixMs, samples: &[Sample]) {
        self.now = self.now.max(at);
        if at >= self.next_prune {
            self.prune(at);
        }
        let mut key = String::new();
        let mut fresh: Vec<(&'static str, Box<str>, &Sample)> = Vec::new();
        let agent_series = &self.config.agent_series;
        for s in samples.iter().filter(|s| kept(s, agent_series)) {
            write_key(&mut key, &s.labels);
            let config = &self.config;
            match self
                .by_name
                .get_mut(s.desc.name)
                .and_then(|m| m.get_mut(key.as_str()))
            {
                Some(series) => series.add(at, s.value, config.tiers(series.agent)),
                None => fresh.push((s.desc.name, Box::from(key.as_str()), s)),
            }
        }
        if fresh.is_empty() {
            return;
        }
        let n_new = {
            let mut keys: Vec<(&str, &str)> = fresh.iter().map(|(n, k, _)| (*n, &**k)).collect();
            keys.sort_unstable();
            keys.dedup();
            keys.len()
        };
        self.make_room(at, n_new);
        for (name, key, s) in fresh {
            let config = &self.config;
            let existing = self
                .by_name
                .get_mut(name)
                .and_then(|m| m.get_mut(key.as_ref()));
            if let Some(series) = existing {
                series.add(at, s.value, config.tiers(series.agent));
                continue;
            }
            if self.n_series >= config.max_series {
                self.evicted += 1;
                continue;
            }
            let agent = s.labels.iter().any(|(k, _)| *k == AGENT_LABEL);
            let tiers = config.tiers(agent);
            let mut series = Series::new(agent, tiers.len());
            series.add(at, s.value, tiers);
            self.by_name.entry(name).or_default().insert(key, series);
            self.n_series += 1;
        }
    }

    /// Evicts the stalest series (oldest last sample; those recorded at `at` come last) so
    /// that `n_new` more fit, after pruning expired ones.
    fn make_room(&mut self, at: UnixMs, n_new: usize) {
        let max = self.config.max_series;
        if self.n_series + n_new <= max {
            return;
        }
        self.prune(at);
        let over = (self.n_series + n_new).saturating_sub(max);
        if over == 0 {
            return;
        }
        let mut candidates: Vec<(UnixMs, &'static str, &str)> = self
            .by_name
            .iter()
            .flat_map(|(name, m)| m.iter().map(|(k, s)| (s.last_at, *name, &**k)))
            .collect();
        let n = over.min(candidates.len());
        if n < candidates.len() {
            candidates.select_nth_unstable(n);
            candidates.truncate(n);
        }
        let victims: Vec<(&'static str, Box<str>)> = candidates
            .into_iter()
            .map(|(_, name, key)| (name, Box::from(key)))
            .collect();
        for (name, key) in victims {
            self.remove(name, &key);
            self.evicted += 1;
        }
    }

    fn remove(&mut self, name: &str, key: &str) {
        if let Some(m) = self.by_name.get_mut(name) {
            if m.remove(key).is_some() {
                self.n_series -= 1;
            }
            if m.is_empty() {
                self.by_name.remove(name);
            }
        }
    }

    /// Drops every series whose newest point has left all its tiers at `at`; returns how many.
    pub fn prune(&mut self, at: UnixMs) -> usize {
        self.next_prune = at.saturating_add(PRUNE_EVERY_MS);
        let config = &self.config;
        let mut removed = 0;
        for m in self.by_name.values_mut() {
            let before = m.len();
            m.retain(|_, s| !s.expired(at, config.tiers(s.agent)));
            removed += before - m.len();
        }
        self.by_name.retain(|_, m| !m.is_empty());
        self.n_series -= removed;
        self.pruned += removed as u64;
        removed
    }

    /// The series of `q.name` matching `q.matchers` with at least one point in range,
    /// ordered by labels.
    pub fn query(&self, q: &Query) -> Vec<SeriesData> {
        let mut out = Vec::new();
        if q.from > q.to {
            return out;
        }
        let Some(m) = self.by_name.get(q.name.as_str()) else {
            return out;
        };
        for (key, series) in m.iter().filter(|(k, _)| matches(k, &q.matchers)) {
            let tiers = self.config.tiers(series.agent);
            let Some((idx, step_ms)) = choose_tier(tiers, self.now, q.from, q.step_ms) else {
                continue;
            };
            let (Some(tier), Some(ring)) = (tiers.get(idx), series.rings.get(idx)) else {
                continue;
            };
            let points = points_in(ring, tier.step_ms, step_ms, q.from, q.to);
            if !points.is_empty() {
                out.push(SeriesData {
                    name: q.name.clone(),
                    labels: owned_labels(key),
                    step_ms,
                    points,
                });
            }
        }
        out
    }

    /// Every metric name held and its number of series, sorted by name.
    pub fn names(&self) -> Vec<(String, usize)> {
        self.by_name
            .iter()
            .map(|(n, m)| ((*n).to_owned(), m.len()))
            .collect()
    }

    /// The label sets of `name`'s series, sorted.
    pub fn series(&self, name: &str) -> Vec<Vec<(String, String)>> {
        self.by_name
            .get(name)
            .map(|m| m.keys().map(|k| owned_labels(k)).collect())
            .unwrap_or_default()
    }

    /// The newest sample of each series of `name` matching `matchers`, ordered by labels.
    pub fn latest(&self, name: &str, matchers: &[(String, String)]) -> Vec<Latest> {
        let Some(m) = self.by_name.get(name) else {
            return Vec::new();
        };
        m.iter()
            .filter(|(k, _)| matches(k, matchers))
            .map(|(k, s)| (owned_labels(k), s.last_at, s.last_value))
            .collect()
    }

    /// An estimate of the heap held: map nodes (counted half full), keys, ring headers and
    /// ring slots (by capacity).
    pub fn memory_bytes(&self) -> usize {
        let mut bytes = btree_bytes::<&'static str, BTreeMap<Box<str>, Series>>(self.by_name.len());
        for m in self.by_name.values() {
            bytes += btree_bytes::<Box<str>, Series>(m.len());
            for (key, s) in m {
                bytes += key.len() + size_of_val::<[Ring]>(&s.rings);
                bytes += s.rings.iter().map(Ring::heap_bytes).sum::<usize>();
            }
        }
        bytes
    }

    /// Series, slots and eviction counts.
    pub fn stats(&self) -> HistoryStats {
        let points_held = self
            .by_name
            .values()
            .flat_map(|m| m.values())
            .flat_map(|s| s.rings.iter())
            .map(Ring::len)
            .sum();
        HistoryStats {
            series: self.n_series,
            points_held,
            evicted: self.evicted,
            pruned: self.pruned,
        }
    }
}

/// Heap of a B-tree map of `n` entries, its nodes counted half full.
fn btree_bytes<K, V>(n: usize) -> usize {
    n * (size_of::<K>() + size_of::<V>()) * 2
}

/// Gauges and rates with finite values; of agent series, only the configured names.
fn kept(s: &Sample, agent_series: &[String]) -> bool {
    matches!(s.desc.kind, Kind::Gauge | Kind::Rate)
        && s.value.is_finite()
        && (agent_series.is_empty()
            || !s.labels.iter().any(|(k, _)| *k == "agent")
            || agent_series.iter().any(|n| n == s.desc.name))
}

/// Writes the label part of a series key: pairs sorted by label name (ties in input order),
/// `name\u{1}value` joined by `\0`. A NUL inside a value becomes U+FFFD.
fn write_key(buf: &mut String, labels: &[(&'static str, String)]) {
    buf.clear();
    let mut prev: Option<(&str, usize)> = None;
    for _ in 0..labels.len() {
        let mut best: Option<(&str, usize)> = None;
        for (i, (k, _)) in labels.iter().enumerate() {
            let cand = (*k, i);
            if prev.is_some_and(|p| cand <= p) {
                continue;
            }
            if best.is_none_or(|b| cand < b) {
                best = Some(cand);
            }
        }
        let Some((k, i)) = best else { break };
        if prev.is_some() {
            buf.push(PAIR_SEP);
        }
        buf.push_str(k);
        buf.push(KV_SEP);
        if let Some((_, v)) = labels.get(i) {
            if v.contains(PAIR_SEP) {
                buf.extend(
                    v.chars()
                        .map(|c| if c == PAIR_SEP { '\u{fffd}' } else { c }),
                );
            } else {
                buf.push_str(v);
            }
        }
        prev = best;
    }
}

/// The label pairs of a series key.
fn label_pairs(key: &str) -> impl Iterator<Item = (&str, &str)> {
    key.split(PAIR_SEP)
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once(KV_SEP).unwrap_or((p, "")))
}

fn owned_labels(key: &str) -> Vec<(String, String)> {
    label_pairs(key)
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn matches(key: &str, matchers: &[(String, String)]) -> bool {
    matchers
        .iter()
        .all(|(mk, mv)| label_pairs(key).any(|(k, v)| k == mk && v == mv))
}

/// Which tier answers a query and at what step (see [`Query::step_ms`]). A tier reaches back
/// to `from` when its oldest possible step at `now` starts at or before it; when none does,
/// the longest answers.
fn choose_tier(
    tiers: &[Tier],
    now: UnixMs,
    from: UnixMs,
    step: Option<u64>,
) -> Option<(usize, u64)> {
    let reaches = |t: &Tier| {
        let oldest = (now / t.step_ms).saturating_sub(t.points as u64 - 1) * t.step_ms;
        from >= oldest
    };
    let idx = match step {
        Some(s) => tiers
            .iter()
            .rposition(|t| reaches(t) && t.step_ms <= s)
            .or_else(|| tiers.iter().position(reaches)),
        None => tiers.iter().position(reaches),
    }
    .or_else(|| {
        tiers
            .iter()
            .enumerate()
            .max_by_key(|(i, t)| (t.span_ms(), *i))
            .map(|(i, _)| i)
    })?;
    let tier_step = tiers.get(idx)?.step_ms;
    let step_ms = match step {
        Some(s) if s > tier_step => s.div_ceil(tier_step).saturating_mul(tier_step),
        _ => tier_step,
    };
    Some((idx, step_ms))
}

/// The ring's points from the step containing `from` to `to`, averaged into `step_ms` steps
/// (a multiple of `tier_step`) stamped at their start.
fn points_in(
    ring: &Ring,
    tier_step: u64,
    step_ms: u64,
    from: UnixMs,
    to: UnixMs,
) -> Vec<(UnixMs, f64)> {
    let first = from / step_ms * step_ms / tier_step;
    let last = to / tier_step;
    let mut out: Vec<(UnixMs, f64)> = Vec::new();
    let mut open: Option<(UnixMs, f64, u32)> = None;
    for (b, v) in ring.range(first, last) {
        let t = b * tier_step / step_ms * step_ms;
        match &mut open {
            Some((ot, sum, n)) if *ot == t => {
                *sum += f64::from(v);
                *n += 1;
            }
            _ => {
                if let Some((ot, sum, n)) = open.take() {
                    out.push((ot, sum / f64::from(n)));
                }
                open = Some((t, f64::from(v), 1));
            }
        }
    }
    if let Some((ot, sum, n)) = open {
        out.push((ot, sum / f64::from(n)));
    }
    out
}
