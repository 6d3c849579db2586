//! Property tests of the ledger's invariants, under every built-in strategy, over random
//! command sequences on random clusters: no node over allocatable, no pool over its limit,
//! every allocation in exactly one state, idempotent releases, refusals that change nothing,
//! preemption only on its grounds and only with the grant it serves, and determinism.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use proptest::prelude::*;
use qm_core::{
    AllocId, AllocState, Event, Ledger, LedgerConfig, NodeSpec, PoolSpec, Priority, Request,
    ResourceId, Resources, Timestamp,
};
use qm_sched::presets;

const GI: u64 = 1 << 30;

#[derive(Debug, Clone)]
struct NodeGen {
    cpu: u64,
    mem: u64,
    gpu: u64,
    zone: u8,
}

#[derive(Debug, Clone)]
struct PoolGen {
    weight: u32,
    guaranteed_cpu: u64,
    limit_cpu: Option<u64>,
}

#[derive(Debug, Clone)]
enum Cmd {
    Submit {
        agent: u8,
        pool: u8,
        cpu: u64,
        mem: u64,
        gpu: u64,
        prio: u16,
        preemptible: bool,
        queue: bool,
        ttl_s: Option<u64>,
        zone: Option<u8>,
    },
    Release(usize),
    Renew(usize, Option<u64>),
    Evict(usize),
    Advance(u64),
    Drain,
    Lose(u8),
    Ready(u8, bool),
    Remove(u8, bool),
    Register(u8, NodeGen),
    Update(u8, NodeGen),
    UpdatePool(u8, PoolGen),
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (1u64..=16, 1u64..=32, 0u64..=2, 0u8..2).prop_map(|(cpu, mem, gpu, zone)| NodeGen {
        cpu: cpu * 1000,
        mem: mem * GI,
        gpu,
        zone,
    })
}

fn pool_gen() -> impl Strategy<Value = PoolGen> {
    (1u32..=4, 0u64..=8, prop::option::of(1u64..=16)).prop_map(|(weight, g, l)| PoolGen {
        weight,
        guaranteed_cpu: g * 1000,
        limit_cpu: l.map(|l| l.max(g) * 1000),
    })
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let submit = (
        0u8..6,
        0u8..3,
        0u64..=40,
        0u64..=16,
        prop::bool::weighted(0.1),
        0u16..=10,
        prop::bool::weighted(0.85),
        any::<bool>(),
        prop::option::weighted(0.2, 1u64..=30),
        prop::option::weighted(0.15, 0u8..2),
    )
        .prop_map(
            |(agent, pool, cpu, mem, gpu, prio, preemptible, queue, ttl_s, zone)| Cmd::Submit {
                agent,
                pool,
                cpu: cpu * 250,
                mem: mem * (GI / 2),
                gpu: u64::from(gpu),
                prio: prio * 100,
                preemptible,
                queue,
                ttl_s,
                zone,
            },
        );
    prop_oneof![
        10 => submit,
        4 => any::<usize>().prop_map(Cmd::Release),
        1 => (any::<usize>(), prop::option::of(1u64..=30)).prop_map(|(i, t)| Cmd::Renew(i, t)),
        1 => any::<usize>().prop_map(Cmd::Evict),
        2 => (1u64..=40).prop_map(Cmd::Advance),
        1 => Just(Cmd::Drain),
        1 => (0u8..6).prop_map(Cmd::Lose),
        1 => (0u8..6, any::<bool>()).prop_map(|(n, r)| Cmd::Ready(n, r)),
        1 => (0u8..6, any::<bool>()).prop_map(|(n, f)| Cmd::Remove(n, f)),
        1 => (0u8..6, node_gen()).prop_map(|(n, g)| Cmd::Register(n, g)),
        1 => (0u8..6, node_gen()).prop_map(|(n, g)| Cmd::Update(n, g)),
        1 => (0u8..3, pool_gen()).prop_map(|(p, g)| Cmd::UpdatePool(p, g)),
    ]
}

fn node_spec(i: u8, g: &NodeGen) -> NodeSpec {
    let mut spec = NodeSpec::new(
        &format!("n{i}"),
        Resources::new(g.cpu, g.mem).with(ResourceId::GPU, g.gpu),
    );
    spec.labels
        .insert("zone".to_owned(), format!("z{}", g.zone));
    spec
}

fn pool_spec(i: u8, g: &PoolGen) -> PoolSpec {
    let mut spec = PoolSpec::new(&format!("p{i}"));
    spec.weight = g.weight;
    spec.guaranteed = Resources::new(g.guaranteed_cpu, 0);
    spec.limit = g.limit_cpu.map(|l| Resources::new(l, 0));
    spec
}

/// What the test knows about every id it was given.
#[derive(Default)]
struct Model {
    issued: Vec<AllocId>,
    meta: BTreeMap<AllocId, (Priority, String)>,
    ended: BTreeMap<AllocId, AllocState>,
}

/// Everything observable about the ledger's holdings, to prove a command changed nothing.
fn fingerprint(l: &Ledger) -> String {
    let st = l.state();
    let mut out = String::new();
    for a in st.allocations() {
        let _ = writeln!(out, "{a:?}");
    }
    for (_, n) in st.nodes() {
        let _ = writeln!(
            out,
            "{} {:?} {:?} {}",
            n.name(),
            n.allocated(),
            n.allocatable(),
            n.ready()
        );
    }
    for (_, p) in st.pools() {
        let _ = writeln!(out, "{} {:?} {}", p.name(), p.allocated(), p.n_queued());
    }
    out
}

fn check_invariants(l: &Ledger, model: &Model) {
    let st = l.state();
    assert_eq!(
        st.refused_placements(),
        0,
        "a built-in strategy proposed an invalid placement"
    );
    let mut per_node: BTreeMap<String, Resources> = BTreeMap::new();
    let mut per_pool: BTreeMap<String, Resources> = BTreeMap::new();
    let mut queued_per_pool: BTreeMap<String, usize> = BTreeMap::new();
    let mut live = BTreeSet::new();
    for a in st.allocations() {
        live.insert(a.id());
        let pool = st.pool_name(a.pool()).to_owned();
        match a.state() {
            AllocState::Granted => {
                let node = a.node().expect("a grant has a node");
                assert!(
                    st.node(node).is_some(),
                    "grant {:?} on a removed node",
                    a.id()
                );
                per_node
                    .entry(st.node_name(node).to_owned())
                    .or_default()
                    .add(a.resources());
                per_pool.entry(pool).or_default().add(a.resources());
            }
            AllocState::Queued => {
                assert!(a.node().is_none());
                *queued_per_pool.entry(pool).or_default() += 1;
            }
            other => panic!("a live allocation in final state {other:?}"),
        }
    }
    for (_, n) in st.nodes() {
        let sum = per_node.remove(n.name()).unwrap_or_default();
        assert_eq!(&sum, n.allocated(), "node {} allocated drifted", n.name());
        assert!(
            sum.fits(n.allocatable()),
            "node {} over allocatable: {sum:?}",
            n.name()
        );
    }
    assert!(per_node.is_empty(), "grants on unknown nodes: {per_node:?}");
    for (_, p) in st.pools() {
        let sum = per_pool.remove(p.name()).unwrap_or_default();
        assert_eq!(&sum, p.allocated(), "pool {} allocated drifted", p.name());
        if let Some(limit) = p.limit() {
            assert!(
                Resources::default().fits_under_cap(&sum, limit),
                "pool {} over its limit",
                p.name()
            );
        }
        assert_eq!(queued_per_pool.remove(p.name()).unwrap_or(0), p.n_queued());
    }
    assert_eq!(
        st.n_queued(),
        st.allocations()
            .filter(|a| a.state() == AllocState::Queued)
            .count()
    );
    for (id, node) in st.holds() {
        assert_eq!(
            st.alloc(id).map(|a| a.state()),
            Some(AllocState::Queued),
            "hold for a non-queued request"
        );
        assert_eq!(st.node(node).and_then(|n| n.held_for()), Some(id));
    }
    // Exactly one state: live in the ledger, or ended once.
    let expected: BTreeSet<AllocId> = model
        .issued
        .iter()
        .copied()
        .filter(|id| !model.ended.contains_key(id))
        .collect();
    assert_eq!(
        live, expected,
        "live allocations differ from issued minus ended"
    );
}

/// Checks one command's events against the model and records them.
fn absorb(events: &[Event], model: &mut Model, l: &Ledger) {
    let mut preempted_by_event: BTreeMap<AllocId, AllocId> = BTreeMap::new();
    let mut preempted_listed: BTreeMap<AllocId, AllocId> = BTreeMap::new();
    for e in events {
        match e {
            Event::Ended(a) => {
                assert!(!a.state().is_live());
                assert!(model.meta.contains_key(&a.id()), "ended an id never issued");
                let prev = model.ended.insert(a.id(), a.state());
                assert!(prev.is_none(), "{:?} ended twice", a.id());
                assert!(
                    l.state().alloc(a.id()).is_none(),
                    "ended allocation still live"
                );
                if a.state() == AllocState::Preempted {
                    let by = a
                        .preempted_by()
                        .expect("a preempted allocation names its preemptor");
                    preempted_by_event.insert(a.id(), by);
                    let (by_prio, by_pool) = &model.meta[&by];
                    let reason = a.reason().unwrap_or_default();
                    if reason.starts_with("priority") {
                        assert!(
                            a.priority() < *by_prio,
                            "preempted equal or higher priority"
                        );
                    } else {
                        assert!(reason.starts_with("reclaim"), "unknown grounds {reason}");
                        assert_ne!(
                            l.state().pool_name(a.pool()),
                            by_pool,
                            "reclaimed from its own pool"
                        );
                    }
                    assert!(a.preemptible(), "preempted a non-preemptible allocation");
                }
            }
            Event::Granted { id, preempted, .. } => {
                for v in preempted {
                    preempted_listed.insert(*v, *id);
                }
            }
            _ => {}
        }
    }
    assert_eq!(
        preempted_by_event, preempted_listed,
        "every preemption serves a grant, and only then"
    );
}

fn pick(model: &Model, i: usize) -> Option<AllocId> {
    (!model.issued.is_empty()).then(|| model.issued[i % model.issued.len()])
}

/// Runs the commands, checking invariants after each; returns the transcript.
fn run(strategy: &str, nodes: &[NodeGen], pools: &[PoolGen], cmds: &[Cmd]) -> String {
    let config = LedgerConfig {
        backfill_depth: 8,
        reserve_after_ms: 20_000,
    };
    let mut l = qm_sched::ledger(strategy, config).expect("strategy");
    let mut model = Model::default();
    let mut now = Timestamp::from_millis(1_000);
    let mut transcript = String::new();
    for (i, g) in pools.iter().enumerate() {
        l.create_pool(pool_spec(u8::try_from(i).expect("few pools"), g))
            .expect("pool");
    }
    for (i, g) in nodes.iter().enumerate() {
        l.register_node(now, node_spec(u8::try_from(i).expect("few nodes"), g))
            .expect("node");
    }
    l.clear_events();
    for cmd in cmds {
        let before = fingerprint(&l);
        let outcome = match cmd {
            Cmd::Submit {
                agent,
                pool,
                cpu,
                mem,
                gpu,
                prio,
                preemptible,
                queue,
                ttl_s,
                zone,
            } => {
                let res = Resources::new(*cpu, *mem).with(ResourceId::GPU, *gpu);
                let mut req = Request::new(&format!("agent-{agent}"), res);
                req.pool = if *pool == 0 {
                    "default".to_owned()
                } else {
                    format!("p{}", pool - 1)
                };
                req.priority = Priority::new(i64::from(*prio)).expect("prio");
                req.preemptible = *preemptible;
                req.queue = *queue;
                req.ttl_ms = ttl_s.map(|s| s * 1000);
                if let Some(z) = zone {
                    req.node_selector.insert("zone".to_owned(), format!("z{z}"));
                }
                let (prio, pool) = (req.priority, req.pool.clone());
                let r = l.submit(now, req);
                match &r {
                    Ok(s) => {
                        let id = s.id.expect("id");
                        model.issued.push(id);
                        model.meta.insert(id, (prio, pool));
                    }
                    Err(_) => {
                        assert!(l.events().is_empty(), "a refused submit emitted events");
                        assert_eq!(before, fingerprint(&l), "a refused submit changed state");
                    }
                }
                format!("{r:?}")
            }
            Cmd::Release(i) => match pick(&model, *i) {
                Some(id) => {
                    let was_ended = model.ended.contains_key(&id);
                    let r = l.release(now, id);
                    if was_ended {
                        assert_eq!(r, None, "releasing an ended allocation");
                        assert!(l.events().is_empty());
                        assert_eq!(before, fingerprint(&l), "a repeated release changed state");
                    } else {
                        assert!(r.is_some());
                    }
                    format!("{r:?}")
                }
                None => "nothing".to_owned(),
            },
            Cmd::Renew(i, ttl) => match pick(&model, *i) {
                Some(id) => format!("{:?}", l.renew(now, id, ttl.map(|t| t * 1000))),
                None => "nothing".to_owned(),
            },
            Cmd::Evict(i) => match pick(&model, *i) {
                Some(id) => format!("{:?}", l.evict(now, id, "test")),
                None => "nothing".to_owned(),
            },
            Cmd::Advance(s) => {
                now = now.plus_millis(s * 1000);
                format!("{}", l.expire(now))
            }
            Cmd::Drain => format!("{}", l.drain(now)),
            Cmd::Lose(n) => format!("{:?}", l.lose_node(now, &format!("n{n}"))),
            Cmd::Ready(n, r) => format!("{:?}", l.set_node_ready(now, &format!("n{n}"), *r)),
            Cmd::Remove(n, f) => format!("{:?}", l.remove_node(now, &format!("n{n}"), *f)),
            Cmd::Register(n, g) => format!("{:?}", l.register_node(now, node_spec(*n, g))),
            Cmd::Update(n, g) => {
                let r = l.update_node(now, node_spec(*n, g));
                if r.is_err() {
                    assert_eq!(
                        before,
                        fingerprint(&l),
                        "a refused node update changed state"
                    );
                }
                format!("{r:?}")
            }
            Cmd::UpdatePool(p, g) => {
                let r = l.update_pool(
                    now,
                    pool_spec(*p % u8::try_from(pools.len().max(1)).unwrap_or(1), g),
                );
                format!("{r:?}")
            }
        };
        let events = l.take_events();
        absorb(&events, &mut model, &l);
        check_invariants(&l, &model);
        let _ = writeln!(transcript, "{cmd:?} => {outcome}\n  {events:?}");
    }
    transcript
}

fn scenario() -> impl Strategy<Value = (usize, Vec<NodeGen>, Vec<PoolGen>, Vec<Cmd>)> {
    (
        0..presets().len(),
        prop::collection::vec(node_gen(), 1..=5),
        prop::collection::vec(pool_gen(), 0..=3),
        prop::collection::vec(cmd(), 1..=80),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_keeps_its_invariants((s, nodes, pools, cmds) in scenario()) {
        let strategy = presets()[s].name;
        let first = run(strategy, &nodes, &pools, &cmds);
        // The same commands always give the same result.
        let second = run(strategy, &nodes, &pools, &cmds);
        prop_assert_eq!(first, second);
    }
}
