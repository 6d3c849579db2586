//! The indexed ledger decides exactly as the exhaustive one: every built-in strategy runs the
//! same random command sequence on the same random cluster twice, once searching the ledger's
//! node index and once visiting every node (`Framework::exhaustive`), and every answer and
//! every event must be the same. The node index must also match a rebuild after each command
//! and after a restore.

use proptest::prelude::*;
use qm_core::{
    AllocId, Labels, Ledger, LedgerConfig, NODE_LABEL, NodeSpec, PoolSpec, Priority, Request,
    ResourceId, Resources, Spread, Term, Timestamp, Topology,
};
use qm_sched::{Framework, presets};

const GI: u64 = 1 << 30;

#[derive(Debug, Clone)]
struct NodeGen {
    cpu: u64,
    mem: u64,
    gpu: u64,
    zone: u8,
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
        zone: Option<u8>,
        app: Option<u8>,
        rule: Option<u8>,
    },
    Release(usize),
    Evict(usize),
    Resize(usize, u64),
    Advance(u64),
    Drain,
    Lose(u8),
    Ready(u8, bool),
    Remove(u8, bool),
    Register(u8, NodeGen),
    Update(u8, NodeGen),
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (1u64..=16, 1u64..=32, 0u64..=2, 0u8..3).prop_map(|(cpu, mem, gpu, zone)| NodeGen {
        cpu: cpu * 1000,
        mem: mem * GI,
        gpu,
        zone,
    })
}

fn cmd(n_nodes: u8) -> impl Strategy<Value = Cmd> {
    let submit = (
        (
            0u8..12,
            0u8..3,
            0u64..=24,
            0u64..=12,
            prop::bool::weighted(0.1),
        ),
        (
            0u16..=10,
            prop::bool::weighted(0.85),
            any::<bool>(),
            prop::option::weighted(0.15, 0u8..3),
        ),
        (
            prop::option::weighted(0.4, 0u8..2),
            prop::option::weighted(0.3, 0u8..10),
        ),
    )
        .prop_map(
            |((agent, pool, cpu, mem, gpu), (prio, preemptible, queue, zone), (app, rule))| {
                Cmd::Submit {
                    agent,
                    pool,
                    cpu: cpu * 250,
                    mem: mem * (GI / 2),
                    gpu: u64::from(gpu),
                    prio: prio * 100,
                    preemptible,
                    queue,
                    zone,
                    app,
                    rule,
                }
            },
        );
    let n = n_nodes + 2;
    prop_oneof![
        14 => submit,
        5 => any::<usize>().prop_map(Cmd::Release),
        1 => any::<usize>().prop_map(Cmd::Evict),
        1 => (any::<usize>(), 1u64..=8).prop_map(|(i, c)| Cmd::Resize(i, c * 250)),
        1 => (1u64..=40).prop_map(Cmd::Advance),
        1 => Just(Cmd::Drain),
        1 => (0..n).prop_map(Cmd::Lose),
        1 => (0..n, any::<bool>()).prop_map(|(i, r)| Cmd::Ready(i, r)),
        1 => (0..n, any::<bool>()).prop_map(|(i, f)| Cmd::Remove(i, f)),
        1 => (0..n, node_gen()).prop_map(|(i, g)| Cmd::Register(i, g)),
        1 => (0..n, node_gen()).prop_map(|(i, g)| Cmd::Update(i, g)),
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

fn ledger(strategy: &str, exhaustive: bool) -> Ledger {
    let fw = Framework::preset(strategy).expect("strategy");
    let fw = if exhaustive { fw.exhaustive() } else { fw };
    let config = LedgerConfig {
        backfill_depth: 8,
        reserve_after_ms: 20_000,
    };
    Ledger::new(Box::new(fw), config)
}

/// Runs one command; returns its answer.
fn apply(l: &mut Ledger, now: &mut Timestamp, issued: &mut Vec<AllocId>, cmd: &Cmd) -> String {
    let pick =
        |issued: &[AllocId], i: usize| (!issued.is_empty()).then(|| issued[i % issued.len()]);
    match cmd {
        Cmd::Submit {
            agent,
            pool,
            cpu,
            mem,
            gpu,
            prio,
            preemptible,
            queue,
            zone,
            app,
            rule,
        } => {
            let res = Resources::new(*cpu, *mem).with(ResourceId::GPU, *gpu);
            let stem = ["agent", "coder", "critic"][usize::from(*agent % 3)];
            let mut req = Request::new(&format!("{stem}-{agent}"), res);
            req.pool = if *pool == 0 {
                "default".to_owned()
            } else {
                format!("p{}", pool - 1)
            };
            req.priority = Priority::new(i64::from(*prio)).expect("prio");
            req.preemptible = *preemptible;
            req.queue = *queue;
            if let Some(z) = zone {
                req.node_selector.insert("zone".to_owned(), format!("z{z}"));
            }
            if let Some(a) = app {
                req.labels.insert("app".to_owned(), format!("a{a}"));
                req.labels
                    .insert("tier".to_owned(), format!("t{}", agent % 2));
            }
            if let Some(rule) = rule {
                req.topology = topology(*rule, app.unwrap_or(0), *agent);
            }
            let r = l.submit(*now, req);
            if let Ok(s) = &r {
                issued.extend(s.id);
            }
            format!("{r:?}")
        }
        Cmd::Release(i) => format!("{:?}", pick(issued, *i).map(|id| l.release(*now, id))),
        Cmd::Evict(i) => format!("{:?}", pick(issued, *i).map(|id| l.evict(*now, id, "test"))),
        Cmd::Resize(i, cpu) => format!(
            "{:?}",
            pick(issued, *i).map(|id| l.resize(id, Resources::new(*cpu, GI), None))
        ),
        Cmd::Advance(s) => {
            *now = now.plus_millis(s * 1000);
            format!("{}", l.expire(*now))
        }
        Cmd::Drain => format!("{}", l.drain(*now)),
        Cmd::Lose(n) => format!("{:?}", l.lose_node(*now, &format!("n{n}"))),
        Cmd::Ready(n, r) => format!("{:?}", l.set_node_ready(*now, &format!("n{n}"), *r)),
        Cmd::Remove(n, f) => format!("{:?}", l.remove_node(*now, &format!("n{n}"), *f)),
        Cmd::Register(n, g) => format!("{:?}", l.register_node(*now, node_spec(*n, g))),
        Cmd::Update(n, g) => format!("{:?}", l.update_node(*now, node_spec(*n, g))),
    }
}

/// Topology rules over the `app` (and `tier`) labels: spread over zones, spread over both
/// labels (which the ledger's label counts cannot answer), anti-affinity per node, affinity
/// per zone, affinity per node (which confines a request to the few nodes holding its group),
/// spread over nodes, spread over zones of a request outside its own group (whose allowed
/// zones, once every zone holds the group, are those holding the fewest), affinity and
/// anti-affinity over both labels, none.
fn topology(rule: u8, app: u8, agent: u8) -> Topology {
    let other = format!("a{}", (app + 1) % 2);
    let app = |tier: bool| {
        let mut l = Labels::new();
        l.insert("app".to_owned(), format!("a{app}"));
        if tier {
            l.insert("tier".to_owned(), format!("t{}", agent % 2));
        }
        l
    };
    let term = |key: &str, tier: bool| Term {
        topology_key: key.to_owned(),
        match_labels: app(tier),
    };
    let spread = |tier: bool| Spread {
        topology_key: "zone".to_owned(),
        max_skew: 1,
        match_labels: app(tier),
    };
    let mut t = Topology::default();
    match rule {
        0 => t.spread.push(spread(false)),
        1 => t.spread.push(spread(true)),
        2 => t.anti_affinity.push(term(NODE_LABEL, false)),
        3 => t.affinity.push(term("zone", false)),
        4 => t.affinity.push(term(NODE_LABEL, false)),
        5 => t.spread.push(Spread {
            topology_key: NODE_LABEL.to_owned(),
            ..spread(false)
        }),
        6 => {
            let mut c = spread(false);
            c.match_labels.insert("app".to_owned(), other);
            t.spread.push(c);
        }
        7 => t.affinity.push(term("zone", true)),
        8 => t.anti_affinity.push(term("zone", true)),
        _ => {}
    }
    t
}

fn scenario() -> impl Strategy<Value = (usize, Vec<NodeGen>, Vec<Cmd>)> {
    (
        0..presets().len(),
        prop::collection::vec(node_gen(), 1..=40),
    )
        .prop_flat_map(|(s, nodes)| {
            let n = u8::try_from(nodes.len()).expect("few nodes");
            (Just(s), Just(nodes), prop::collection::vec(cmd(n), 1..=120))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn the_indexed_ledger_decides_as_the_exhaustive_one((s, nodes, cmds) in scenario()) {
        let strategy = presets()[s].name;
        let mut fast = ledger(strategy, false);
        let mut slow = ledger(strategy, true);
        let now = Timestamp::from_millis(1_000);
        for l in [&mut fast, &mut slow] {
            for p in 0..2u8 {
                let mut spec = PoolSpec::new(&format!("p{p}"));
                spec.weight = 1 + u32::from(p);
                spec.guaranteed = Resources::new(4000, 0);
                l.create_pool(spec).expect("pool");
            }
            for (i, g) in nodes.iter().enumerate() {
                l.register_node(now, node_spec(u8::try_from(i).expect("few"), g)).expect("node");
            }
        }
        prop_assert_eq!(fast.take_events(), slow.take_events());
        let (mut now_fast, mut now_slow) = (now, now);
        let (mut ids_fast, mut ids_slow) = (Vec::new(), Vec::new());
        for (step, cmd) in cmds.iter().enumerate() {
            let a = apply(&mut fast, &mut now_fast, &mut ids_fast, cmd);
            let b = apply(&mut slow, &mut now_slow, &mut ids_slow, cmd);
            prop_assert_eq!(&a, &b, "step {} {:?}", step, cmd);
            prop_assert_eq!(fast.take_events(), slow.take_events(), "step {} {:?}", step, cmd);
            prop_assert!(fast.state().node_index_is_current(), "step {} {:?}", step, cmd);
            prop_assert_eq!(fast.state().refused_placements(), 0);
        }
        // A ledger restored from a snapshot rebuilds its indexes to the same.
        let fw = Framework::preset(strategy).expect("strategy");
        let restored = Ledger::restore(Box::new(fw), LedgerConfig::default(), fast.snapshot())
            .expect("restore");
        prop_assert!(restored.state().node_index_is_current());
    }
}
