//! Ledger unit tests with hand-made policies: a plain first-fit one for the mechanics, and a
//! rogue one whose placements break the rules, to show the ledger refuses them and changes
//! nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::*;
use crate::allocation::Labels;
use crate::node::NodeSpec;

const GI: u64 = 1 << 30;

/// First node that fits; no preemption; priority then arrival.
#[derive(Debug, Default)]
pub(super) struct FirstFit;

impl Policy for FirstFit {
    fn name(&self) -> &str {
        "first-fit-test"
    }
    fn rank(&self, _: &State, _: PoolIdx, head: &Allocation) -> crate::policy::QueueRank {
        crate::policy::QueueRank([0, u64::from(1000 - head.priority.get()), head.id.seq()])
    }
    fn place(&self, st: &State, req: &Allocation, _: bool) -> Option<Placement> {
        let pool = st.pool(req.pool)?;
        if !pool.fits(&req.resources) {
            return None;
        }
        let node = st.ready_nodes().iter().copied().find(|i| {
            st.node(*i).is_some_and(|n| {
                n.fits(&req.resources) && n.matches(req.node_selector()) && st.hold_allows(n, req)
            })
        })?;
        Some(Placement {
            node,
            victims: Vec::new(),
            preemption: Preemption::None,
        })
    }
}

/// Answers whatever placement the test planted.
#[derive(Debug, Clone, Default)]
struct Rogue(Arc<Mutex<Option<Placement>>>);

impl Policy for Rogue {
    fn name(&self) -> &str {
        "rogue"
    }
    fn rank(&self, _: &State, _: PoolIdx, head: &Allocation) -> crate::policy::QueueRank {
        crate::policy::QueueRank([0, 0, head.id.seq()])
    }
    fn place(&self, _: &State, _: &Allocation, _: bool) -> Option<Placement> {
        self.0.lock().ok()?.clone()
    }
}

fn t(s: u64) -> Timestamp {
    Timestamp::from_millis(s * 1000)
}

fn req(agent: &str, cpu: u64, prio: i64) -> Request {
    let mut r = Request::new(agent, Resources::new(cpu, GI));
    r.priority = Priority::new(prio).unwrap();
    r
}

fn granted(l: &mut Ledger, r: Request) -> AllocId {
    let s = l.submit(t(0), r).unwrap();
    assert!(matches!(s.decision, Decision::Granted { .. }), "{s:?}");
    s.id.unwrap()
}

use crate::priority::Priority;

#[test]
fn the_ledger_refuses_placements_that_break_its_rules() {
    let rogue = Rogue::default();
    let mut l = Ledger::new(Box::new(rogue.clone()), LedgerConfig::default());
    let n0 = l
        .register_node(t(0), NodeSpec::new("n0", Resources::new(2000, 8 * GI)))
        .unwrap();
    let n1 = l
        .register_node(t(0), NodeSpec::new("n1", Resources::new(2000, 8 * GI)))
        .unwrap();
    let plant = |node, victims: Vec<AllocId>, preemption| {
        *rogue.0.lock().unwrap() = Some(Placement {
            node,
            victims,
            preemption,
        });
    };
    plant(n0, vec![], Preemption::None);
    let low = granted(&mut l, req("low", 1000, 100));
    let mut fixed = req("fixed", 1000, 100);
    fixed.preemptible = false;
    let fixed = granted(&mut l, fixed);
    plant(n1, vec![], Preemption::None);
    let peer = granted(&mut l, req("peer", 2000, 500));
    let before = format!("{:?}", l.state().allocations().collect::<Vec<_>>());
    l.clear_events();

    let bad: Vec<(&str, NodeIdx, Vec<AllocId>, Preemption)> = vec![
        ("over capacity", n0, vec![], Preemption::None),
        ("victims without grounds", n0, vec![low], Preemption::None),
        ("equal priority", n1, vec![peer], Preemption::Priority),
        (
            "not preemptible",
            n0,
            vec![low, fixed],
            Preemption::Priority,
        ),
        (
            "victim on another node",
            n0,
            vec![peer],
            Preemption::Priority,
        ),
        ("too few victims", n0, vec![low], Preemption::Priority),
        (
            "the same victim twice",
            n0,
            vec![low, low],
            Preemption::Priority,
        ),
        (
            "reclaim from its own pool",
            n0,
            vec![low],
            Preemption::Reclaim,
        ),
        (
            "no such node",
            NodeIdx::from_index(9).unwrap(),
            vec![],
            Preemption::None,
        ),
    ];
    let mut refused = 0;
    for (what, node, victims, preemption) in bad {
        plant(node, victims, preemption);
        let r = l.submit(t(1), req("big", 2000, 500));
        refused += 1;
        assert!(
            matches!(r, Err(SubmitError::Insufficient(_))),
            "{what}: {r:?}"
        );
        assert_eq!(l.state().refused_placements(), refused, "{what}");
        assert!(l.events().is_empty(), "{what}: events {:?}", l.events());
    }
    assert_eq!(
        before,
        format!("{:?}", l.state().allocations().collect::<Vec<_>>())
    );

    // A proper preemption passes, and an unready node is refused.
    l.release(t(2), fixed);
    plant(n0, vec![low], Preemption::Priority);
    let s = l.submit(t(2), req("big", 2000, 500)).unwrap();
    assert_eq!(
        s.decision,
        Decision::Granted {
            node: n0,
            preempted: vec![low]
        }
    );
    l.set_node_ready(t(2), "n1", false).unwrap();
    l.release(t(2), peer);
    plant(n1, vec![], Preemption::None);
    assert!(l.submit(t(2), req("late", 100, 500)).is_err());
}

#[test]
fn submit_release_and_the_queue_follow_the_contract() {
    let mut l = Ledger::new(Box::new(FirstFit), LedgerConfig::default());
    let n = l
        .register_node(t(0), NodeSpec::new("n", Resources::new(2000, 8 * GI)))
        .unwrap();
    let a = granted(&mut l, req("a", 2000, 500));
    let mut q = req("q", 1000, 500);
    q.queue = true;
    let s = l.submit(t(1), q).unwrap();
    let q = s.id.unwrap();
    let Decision::Queued { shortfall } = s.decision else {
        panic!("{s:?}")
    };
    assert_eq!(
        (shortfall.reason, shortfall.node),
        (ShortfallReason::Capacity, Some(n))
    );
    assert_eq!(shortfall.missing, Resources::new(1000, 0));
    assert_eq!(l.state().alloc(q).unwrap().state(), AllocState::Queued);

    // A dry run answers and changes nothing.
    let dry = l.dry_run(t(1), req("d", 1000, 500)).unwrap_err();
    assert!(matches!(dry, SubmitError::Insufficient(_)));
    assert_eq!(l.state().n_live(), 2);

    // Releasing frees capacity, which goes to the queue at once.
    l.clear_events();
    assert_eq!(l.release(t(2), a), Some(AllocState::Released));
    let kinds: Vec<String> = l
        .events()
        .iter()
        .map(|e| match e {
            Event::Ended(x) => format!("ended {}", x.state().name()),
            Event::Granted { .. } => "granted".to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["ended released", "granted"]);
    let granted_q = l.state().alloc(q).unwrap();
    assert_eq!(granted_q.granted_at(), Some(t(2)));
    assert_eq!(granted_q.created_at(), t(1));
    assert_eq!(l.release(t(3), a), None, "a second release is harmless");
    assert_eq!(l.release(t(3), q), Some(AllocState::Released));
    assert_eq!(
        l.state().node(n).unwrap().allocated(),
        &Resources::default()
    );
}

#[test]
fn bad_commands_name_the_problem_and_change_nothing() {
    let mut l = Ledger::new(Box::new(FirstFit), LedgerConfig::default());
    l.register_node(t(0), NodeSpec::new("n", Resources::new(2000, 8 * GI)))
        .unwrap();
    let mut r = req("a b", 100, 500);
    r.pool = "ghost".to_owned();
    assert_eq!(
        l.submit(t(0), r).unwrap_err().to_string(),
        "agent: \"a b\" must be 1 to 128 characters of A-Z a-z 0-9 . _ : -"
    );
    let mut r = req("a", 100, 500);
    r.pool = "ghost".to_owned();
    assert_eq!(
        l.submit(t(0), r).unwrap_err().to_string(),
        "pool: no pool named \"ghost\""
    );
    let id = granted(&mut l, req("a", 1000, 500));
    let small = NodeSpec::new("n", Resources::new(500, 8 * GI));
    assert!(matches!(
        l.update_node(t(1), small),
        Err(NodeError::BelowAllocated { .. })
    ));
    assert!(matches!(
        l.register_node(t(1), NodeSpec::new("n", Resources::new(1, 1))),
        Err(NodeError::Exists(_))
    ));
    let mut spec = NodeSpec::new("m", Resources::new(1000, GI));
    spec.allocatable = Resources::new(2000, GI);
    assert_eq!(
        l.register_node(t(1), spec).unwrap_err().to_string(),
        "allocatable: must not exceed capacity"
    );
    let mut pool = PoolSpec::new("p");
    pool.weight = 0;
    assert_eq!(
        l.create_pool(pool).unwrap_err().to_string(),
        "weight: 0 is out of range 1..=1000"
    );
    let mut pool = PoolSpec::new("default");
    pool.limit = Some(Resources::new(500, 0));
    assert!(matches!(
        l.update_pool(t(1), pool),
        Err(PoolError::BelowAllocated { .. })
    ));
    assert_eq!(l.delete_pool("default"), Err(PoolError::Default));
    assert_eq!(l.renew(t(1), id, Some(0)), Err(LiveError::ZeroTtl));
    assert_eq!(l.renew(t(1), id, None), Err(LiveError::NoLease(id)));
    assert_eq!(
        l.state().node_by_name("n").unwrap().1.allocated(),
        &Resources::new(1000, GI)
    );
}

#[test]
fn pools_cannot_be_deleted_while_in_use() {
    let mut l = Ledger::new(Box::new(FirstFit), LedgerConfig::default());
    l.register_node(t(0), NodeSpec::new("n", Resources::new(2000, 8 * GI)))
        .unwrap();
    l.create_pool(PoolSpec::new("p")).unwrap();
    let mut r = req("a", 1000, 500);
    r.pool = "p".to_owned();
    let id = granted(&mut l, r);
    assert!(matches!(
        l.delete_pool("p"),
        Err(PoolError::Busy { n_live: 1, .. })
    ));
    l.release(t(1), id);
    l.delete_pool("p").unwrap();
    assert!(l.state().pool_by_name("p").is_none());
    // The ended allocation can still name its pool.
    let ended = l.take_events().into_iter().find_map(|e| match e {
        Event::Ended(a) => Some(a),
        _ => None,
    });
    assert_eq!(l.state().pool_name(ended.unwrap().pool()), "p");
}

#[test]
fn a_queued_request_with_a_lease_holds_its_place_only_while_renewed() {
    let mut l = Ledger::new(Box::new(FirstFit), LedgerConfig::default());
    l.register_node(t(0), NodeSpec::new("n", Resources::new(2000, 8 * GI)))
        .unwrap();
    let full = granted(&mut l, req("full", 2000, 500));
    let leased = |agent: &str| {
        let mut r = req(agent, 1000, 500);
        r.queue = true;
        r.ttl_ms = Some(10_000);
        r
    };
    let kept = l.submit(t(1), leased("kept")).unwrap().id.unwrap();
    let gone = l.submit(t(1), leased("gone")).unwrap().id.unwrap();
    assert_eq!(l.state().alloc(kept).unwrap().expires_at(), Some(t(11)));
    // the waiter of `kept` renews, `gone`'s went away
    assert_eq!(l.renew(t(8), kept, None), Ok(t(18)));
    assert_eq!(l.expire(t(12)), 1);
    assert!(
        l.state().alloc(gone).is_none(),
        "a lapsed queued request leaves the queue"
    );
    assert_eq!(l.state().alloc(kept).unwrap().state(), AllocState::Queued);
    assert_eq!(l.state().n_queued(), 1);
    // granted, its lease runs from the grant; the queue lease is gone from the timers
    l.release(t(13), full);
    let k = l.state().alloc(kept).unwrap();
    assert_eq!(k.state(), AllocState::Granted);
    assert_eq!(k.expires_at(), Some(t(23)));
    assert_eq!(
        l.expire(t(19)),
        0,
        "the old queue lease does not end the grant"
    );
    assert_eq!(l.state().alloc(kept).unwrap().state(), AllocState::Granted);
    assert_eq!(l.expire(t(23)), 1);
    // a queued request without a lease waits as long as it takes
    let blocker = granted(&mut l, req("blocker", 2000, 500));
    let mut patient = req("patient", 1000, 500);
    patient.queue = true;
    let p = l.submit(t(24), patient).unwrap().id.unwrap();
    assert_eq!(l.expire(t(100_000)), 0);
    assert_eq!(l.state().alloc(p).unwrap().state(), AllocState::Queued);
    assert_eq!(l.renew(t(100_000), p, None), Err(LiveError::NoLease(p)));
    let _ = blocker;
}

#[test]
fn a_grant_is_resized_in_place_when_its_node_has_room_and_never_forced() {
    let rogue = Rogue::default();
    let mut l = Ledger::new(Box::new(rogue.clone()), LedgerConfig::default());
    let n0 = l
        .register_node(t(0), NodeSpec::new("n0", Resources::new(2000, 8 * GI)))
        .unwrap();
    *rogue.0.lock().unwrap() = Some(Placement {
        node: n0,
        victims: vec![],
        preemption: Preemption::None,
    });
    let a = granted(&mut l, req("a", 1000, 100));
    let b = granted(&mut l, req("b", 500, 100));
    // smaller: always; the node's books follow
    l.resize(
        a,
        Resources::new(250, GI / 4),
        Some(Resources::new(0, GI / 4)),
    )
    .unwrap();
    let node = |l: &Ledger| l.state().node(n0).unwrap().allocated().clone();
    assert_eq!(node(&l), Resources::new(750, GI + GI / 4));
    let alloc = l.state().alloc(a).unwrap();
    assert_eq!(alloc.resources(), &Resources::new(250, GI / 4));
    assert_eq!(alloc.limits(), Some(&Resources::new(0, GI / 4)));
    // larger, within what is left: fine; beyond it: refused, nothing changed
    l.resize(a, Resources::new(1500, GI), None).unwrap();
    assert_eq!(node(&l), Resources::new(2000, 2 * GI));
    let e = l.resize(b, Resources::new(600, GI), None).unwrap_err();
    assert_eq!(e, ResizeError::Short(Resources::new(100, 0)));
    assert_eq!(node(&l), Resources::new(2000, 2 * GI));
    // a limit under the request, or a queued request, is refused
    assert_eq!(
        l.resize(b, Resources::new(500, GI), Some(Resources::new(0, GI / 2))),
        Err(ResizeError::LimitBelowRequest)
    );
    assert!(matches!(
        l.resize(
            AllocId::new(999_999, 0).unwrap(),
            Resources::new(1, 1),
            None
        ),
        Err(ResizeError::NotLive(_))
    ));
}

#[test]
fn granted_labels_are_counted_per_domain_and_per_set_and_follow_node_labels() {
    let rogue = Rogue::default();
    let mut l = Ledger::new(Box::new(rogue.clone()), LedgerConfig::default());
    let spec = |name: &str, zone: &str| {
        let mut s = NodeSpec::new(name, Resources::new(4000, 8 * GI));
        s.labels.insert("zone".to_owned(), zone.to_owned());
        s
    };
    let n0 = l.register_node(t(0), spec("n0", "a")).unwrap();
    let n1 = l.register_node(t(0), spec("n1", "b")).unwrap();
    let on = |l: &mut Ledger, node, labels: &[(&str, &str)]| {
        *rogue.0.lock().unwrap() = Some(Placement {
            node,
            victims: vec![],
            preemption: Preemption::None,
        });
        let mut r = req("x", 100, 100);
        for (k, v) in labels {
            r.labels.insert((*k).to_owned(), (*v).to_owned());
        }
        granted(l, r)
    };
    on(&mut l, n0, &[("app", "web"), ("tier", "t0")]);
    let y = on(&mut l, n1, &[("app", "web")]);
    on(&mut l, n1, &[("app", "web"), ("tier", "t0")]);
    let by_zone = |l: &Ledger| -> Vec<(String, u32)> {
        let st = l.state();
        st.granted_labelled_domains("app", "web", "zone")
            .into_iter()
            .flatten()
            .map(|(d, n)| (d.to_string(), *n))
            .collect()
    };
    let both_by_zone = |l: &Ledger| -> Vec<(String, u32)> {
        let mut wanted = Labels::new();
        wanted.insert("app".to_owned(), "web".to_owned());
        wanted.insert("tier".to_owned(), "t0".to_owned());
        let mut out = BTreeMap::<String, u32>::new();
        for set in l.state().granted_with_all(&wanted) {
            for (d, n) in set.per_domain("zone").into_iter().flatten() {
                *out.entry(d.to_string()).or_default() += n;
            }
        }
        out.into_iter().collect()
    };
    let pairs = |v: &[(&str, u32)]| -> Vec<(String, u32)> {
        v.iter().map(|(d, n)| ((*d).to_owned(), *n)).collect()
    };
    assert_eq!(by_zone(&l), pairs(&[("a", 1), ("b", 2)]));
    assert_eq!(both_by_zone(&l), pairs(&[("a", 1), ("b", 1)]));
    assert!(l.state().node_index_is_current());
    // n1 moves to zone a: its grants move with it
    l.update_node(t(0), spec("n1", "a")).unwrap();
    assert_eq!(by_zone(&l), pairs(&[("a", 3)]));
    assert_eq!(both_by_zone(&l), pairs(&[("a", 2)]));
    assert!(l.state().node_index_is_current());
    l.release(t(0), y).unwrap();
    assert_eq!(by_zone(&l), pairs(&[("a", 2)]));
    assert!(l.state().node_index_is_current());
}
