//! Ledger benchmarks, single thread (`cargo bench -p qm-sched --bench ledger`):
//! grant + release pairs per strategy at 64 nodes and 10,000 live allocations, 1,000 nodes and
//! 100,000, and 10,000 nodes and 1,000,000 (also visiting every node, `_scan`, the way decisions
//! were made before the node index); a preempting grant on full clusters of 64 and 10,000
//! nodes; grant + release with a topology rule at 10,000 nodes and 1,000,000 live (a node
//! spread, and five rules over 10,000 matching grants); draining 100,000 queued requests across
//! 100 weighted pools; and, printed before the timings, the memory each live allocation costs
//! the ledger (counted by an instrumented global allocator; also with labelled grants and
//! nodes), restoring 1,000,000 live allocations, and draining 1,000,000 queued requests over
//! 1,000 pools (`QM_BENCH_SKIP_LARGE=1` skips the 1,000,000 ones).

use std::alloc::System;
use std::cell::RefCell;

use divan::Bencher;
use divan::counter::ItemsCount;
use std::time::Instant;

use qm_core::{
    AllocId, Ledger, LedgerConfig, NODE_LABEL, NodeSpec, PoolSpec, Priority, Request, Resources,
    Snapshot, Spread, Term, Timestamp,
};
use qm_sched::Framework;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const N_NODES: usize = 64;
const N_LIVE: usize = 10_000;
const STRATEGIES: [&str; 5] = ["priority", "fair-share", "best-fit", "first-fit", "spread"];
/// The cluster sizes grants are timed at: nodes, and live allocations held while timing.
const SCALES: [(usize, usize); 3] = [(64, 10_000), (1_000, 100_000), (10_000, 1_000_000)];

fn now() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000)
}

fn config() -> LedgerConfig {
    LedgerConfig::default()
}

fn ledger(strategy: &str, n_nodes: usize, cpu: u64, mem: u64) -> Ledger {
    let mut l = qm_sched::ledger(strategy, config()).expect("strategy");
    for i in 0..n_nodes {
        l.register_node(
            now(),
            NodeSpec::new(&format!("node-{i:03}"), Resources::new(cpu, mem)),
        )
        .expect("node");
    }
    l.clear_events();
    l
}

fn request(i: usize, cpu: u64, mem: u64, prio: i64) -> Request {
    let mut r = Request::new(&format!("agent-{i}"), Resources::new(cpu, mem));
    r.priority = Priority::new(prio).expect("priority");
    r
}

/// `n_nodes` nodes of 64 cores and 256 GiB holding `n_live` grants of 250m and 512 MiB, each
/// placed by `strategy` itself. `spread` at 10,000 nodes (whose placements still visit every
/// node) gets the state it would build — grants dealt round-robin over the nodes, in grant
/// order — through a snapshot instead.
fn loaded_snapshot(strategy: &str, n_nodes: usize, n_live: usize) -> Snapshot {
    let round_robin = strategy == "spread" && n_nodes > 1_000;
    let placer = if round_robin { "first-fit" } else { strategy };
    let mut l = ledger(placer, n_nodes, 64_000, 256 * GI);
    for i in 0..n_live {
        l.submit(now(), request(i, 250, 512 * MI, 500))
            .expect("fits");
        l.clear_events();
    }
    let mut snap = l.snapshot();
    if round_robin {
        snap.allocations.sort_by_key(|a| a.grant_seq);
        for (i, a) in snap.allocations.iter_mut().enumerate() {
            a.node = Some(format!("node-{:03}", i % n_nodes));
        }
    }
    snap
}

/// A ledger restored from `snap`, deciding with `strategy` (visiting every node when
/// `exhaustive`, the way every decision was made before the node index).
fn restored(strategy: &str, exhaustive: bool, snap: Snapshot) -> Ledger {
    let fw = Framework::preset(strategy).expect("strategy");
    let fw = if exhaustive { fw.exhaustive() } else { fw };
    Ledger::restore(Box::new(fw), config(), snap).expect("restore")
}

fn grant_release(bencher: Bencher, strategy: &str, scale: usize, exhaustive: bool) {
    let (n_nodes, n_live) = SCALES[scale];
    let mut l = restored(
        strategy,
        exhaustive,
        loaded_snapshot(strategy, n_nodes, n_live),
    );
    let mut i = n_live;
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        i += 1;
        let s = l
            .submit(now(), request(i, 250, 512 * MI, 500))
            .expect("fits");
        let id = s.id.expect("granted");
        l.release(now(), id);
        l.clear_events();
    });
}

/// Grant + release at 64 nodes and 10,000 live allocations.
#[divan::bench(args = STRATEGIES)]
fn grant_release_64_nodes(bencher: Bencher, strategy: &str) {
    grant_release(bencher, strategy, 0, false);
}

/// Grant + release at 64 nodes, visiting every node.
#[divan::bench(args = STRATEGIES)]
fn grant_release_64_nodes_scan(bencher: Bencher, strategy: &str) {
    grant_release(bencher, strategy, 0, true);
}

/// Grant + release at 1,000 nodes and 100,000 live allocations.
#[divan::bench(args = STRATEGIES, sample_count = 30)]
fn grant_release_1k_nodes(bencher: Bencher, strategy: &str) {
    grant_release(bencher, strategy, 1, false);
}

/// Grant + release at 10,000 nodes and 1,000,000 live allocations.
#[divan::bench(args = STRATEGIES, sample_count = 20)]
fn grant_release_10k_nodes(bencher: Bencher, strategy: &str) {
    grant_release(bencher, strategy, 2, false);
}

/// The same, every decision visiting every node (the reference the index is checked against).
#[divan::bench(args = STRATEGIES, sample_count = 10)]
fn grant_release_10k_nodes_scan(bencher: Bencher, strategy: &str) {
    grant_release(bencher, strategy, 2, true);
}

/// Grant + release at 1,000 nodes, visiting every node.
#[divan::bench(args = STRATEGIES, sample_count = 20)]
fn grant_release_1k_nodes_scan(bencher: Bencher, strategy: &str) {
    grant_release(bencher, strategy, 1, true);
}

/// Nodes at the scale `nodes` names, each filled to the last slot with priority-100 grants
/// of 250m and 512 MiB (10,000 live over 64 nodes, 1,000,000 over 10,000), and the grants'
/// ids; restored to visit every node when `exhaustive`.
fn full_of_low_priority(nodes: &str, exhaustive: bool) -> (Ledger, Vec<AllocId>) {
    let (n_nodes, n_live) = if nodes == "10000" {
        SCALES[2]
    } else {
        SCALES[0]
    };
    let per_node = (n_live / n_nodes + 1) as u64;
    let mut l = ledger("priority", n_nodes, 250 * per_node, 512 * MI * per_node);
    let mut ids = Vec::new();
    for i in 0..n_live + n_nodes {
        if let Ok(s) = l.submit(now(), request(i, 250, 512 * MI, 100)) {
            ids.extend(s.id);
        }
        l.clear_events();
    }
    if exhaustive {
        l = restored("priority", true, l.snapshot());
    }
    (l, ids)
}

/// Every node full of priority-100 grants; each iteration grants a priority-900 request that
/// must preempt, then puts the cluster back (releases it, grants a low one in the hole). The
/// figure is an upper bound for the preempting grant alone; `restore_only` times the rest.
#[divan::bench(args = ["64", "10000"], sample_count = 30)]
fn preempting_grant(bencher: Bencher, nodes: &str) {
    preempt_cycle(bencher, nodes, false);
}

/// `preempting_grant`, visiting every node.
#[divan::bench(args = ["64", "10000"], sample_count = 10)]
fn preempting_grant_scan(bencher: Bencher, nodes: &str) {
    preempt_cycle(bencher, nodes, true);
}

fn preempt_cycle(bencher: Bencher, nodes: &str, exhaustive: bool) {
    let (mut l, _) = full_of_low_priority(nodes, exhaustive);
    let mut i = 10_000_000;
    bencher.bench_local(|| {
        i += 1;
        let s = l
            .submit(now(), request(i, 250, 512 * MI, 900))
            .expect("preempts");
        l.release(now(), s.id.expect("granted"));
        l.submit(now(), request(i, 250, 512 * MI, 100))
            .expect("refills");
        l.clear_events();
    });
}

/// Grant + release at 10,000 nodes and 1,000,000 live allocations (priority) of a request
/// labelled `app=web` that spreads `app=web` over nodes (max skew 1), no other grant matching:
/// a topology rule, resolved once and searched through the node index (`true`: resolved per
/// node, visiting every node, the reference).
#[divan::bench(args = [false, true], sample_count = 10)]
fn topology_grant_release_10k_nodes(bencher: Bencher, exhaustive: bool) {
    let (n_nodes, n_live) = SCALES[2];
    let mut l = restored(
        "priority",
        exhaustive,
        loaded_snapshot("priority", n_nodes, n_live),
    );
    let mut i = n_live;
    bencher.bench_local(|| {
        i += 1;
        let mut r = request(i, 250, 512 * MI, 500);
        r.labels.insert("app".to_owned(), "web".to_owned());
        r.topology.spread.push(Spread {
            topology_key: NODE_LABEL.to_owned(),
            max_skew: 1,
            match_labels: r.labels.clone(),
        });
        let s = l.submit(now(), r).expect("fits");
        l.release(now(), s.id.expect("granted"));
        l.clear_events();
    });
}

/// `loaded_snapshot("priority", 10,000, 1,000,000)` with every node labelled `zone` (one of
/// three, round-robin) and every 100th grant labelled `app=web` and `tier` (one of two): 10,000
/// matching grants spread over the ~3,900 nodes the grants fill.
fn labelled_snapshot() -> Snapshot {
    let (n_nodes, n_live) = SCALES[2];
    let mut snap = loaded_snapshot("priority", n_nodes, n_live);
    for (i, (spec, _)) in snap.nodes.iter_mut().enumerate() {
        spec.labels.insert("zone".to_owned(), format!("z{}", i % 3));
    }
    for (i, a) in snap.allocations.iter_mut().enumerate() {
        if i % 100 == 0 {
            a.labels.insert("app".to_owned(), "web".to_owned());
            a.labels
                .insert("tier".to_owned(), format!("t{}", i / 100 % 2));
        }
    }
    snap
}

thread_local! {
    static LABELLED: RefCell<Option<Snapshot>> = const { RefCell::new(None) };
}

/// Grant + release at 10,000 nodes and 1,000,000 live allocations (priority, the nodes
/// labelled by zone, 10,000 grants labelled `app=web` over ~3,900 nodes; `labelled_snapshot`)
/// of an `app=web`, `tier=t0` request with one rule: `rule` names it — spread over nodes or
/// zones (max skew 1), affinity per zone, anti-affinity per node (refused where `app=web`
/// already is: it lands on an empty node), or spread over zones of `app=web, tier=t0` (two
/// labels: a pass over the grants).
#[divan::bench(
    args = ["node-spread", "zone-spread", "zone-affinity", "node-anti-affinity", "two-label-spread"],
    sample_count = 20
)]
fn topology_rules_10k_nodes(bencher: Bencher, rule: &str) {
    let snap = LABELLED.with(|c| c.borrow_mut().get_or_insert_with(labelled_snapshot).clone());
    let mut l = restored("priority", false, snap);
    let mut i = SCALES[2].1;
    bencher.bench_local(|| {
        i += 1;
        let mut r = request(i, 250, 512 * MI, 500);
        r.labels.insert("app".to_owned(), "web".to_owned());
        r.labels.insert("tier".to_owned(), "t0".to_owned());
        let mut web = r.labels.clone();
        web.remove("tier");
        let (key, labels) = match rule {
            "node-spread" | "node-anti-affinity" => (NODE_LABEL, web),
            "two-label-spread" => ("zone", r.labels.clone()),
            _ => ("zone", web),
        };
        let term = Term {
            topology_key: key.to_owned(),
            match_labels: labels.clone(),
        };
        match rule {
            "zone-affinity" => r.topology.affinity.push(term),
            "node-anti-affinity" => r.topology.anti_affinity.push(term),
            _ => r.topology.spread.push(Spread {
                topology_key: key.to_owned(),
                max_skew: 1,
                match_labels: labels,
            }),
        }
        let s = l.submit(now(), r).expect("fits");
        l.release(now(), s.id.expect("granted"));
        l.clear_events();
    });
}

/// Every node full; each iteration submits a request that cannot preempt and queues (the
/// answer says what it is short of on the closest node), then cancels it.
#[divan::bench(args = ["64", "10000"], sample_count = 30)]
fn queued_submit(bencher: Bencher, nodes: &str) {
    queue_cycle(bencher, nodes, false);
}

/// `queued_submit`, visiting every node.
#[divan::bench(args = ["64", "10000"], sample_count = 10)]
fn queued_submit_scan(bencher: Bencher, nodes: &str) {
    queue_cycle(bencher, nodes, true);
}

fn queue_cycle(bencher: Bencher, nodes: &str, exhaustive: bool) {
    let (mut l, _) = full_of_low_priority(nodes, exhaustive);
    let mut i = 10_000_000;
    bencher.bench_local(|| {
        i += 1;
        let mut r = request(i, 250, 512 * MI, 100);
        r.queue = true;
        let s = l.submit(now(), r).expect("queued");
        l.release(now(), s.id.expect("queued"));
        l.clear_events();
    });
}

/// The restore half of `preempting_grant` (a release and a plain grant on a full cluster).
#[divan::bench(args = ["64", "10000"], sample_count = 30)]
fn restore_only(bencher: Bencher, nodes: &str) {
    let (mut l, mut ids) = full_of_low_priority(nodes, false);
    let mut i = 10_000_000;
    let mut k = 0;
    bencher.bench_local(|| {
        i += 1;
        k = (k + 1) % ids.len();
        l.release(now(), ids[k]);
        ids[k] = l
            .submit(now(), request(i, 250, 512 * MI, 100))
            .expect("refills")
            .id
            .expect("id");
        l.clear_events();
    });
}

/// 100,000 requests queued across 100 pools of weights 1 to 4 while no node is ready; the
/// timed part readies 64 nodes, which drains the whole queue.
#[divan::bench(args = ["fair-share", "priority"], sample_count = 5, sample_size = 1)]
fn drain_100k_over_100_pools(bencher: Bencher, strategy: &str) {
    bencher
        .counter(ItemsCount::new(100_000usize))
        .with_inputs(|| {
            let mut l = ledger(strategy, N_NODES, 64_000, 4096 * GI);
            for i in 0..N_NODES {
                l.set_node_ready(now(), &format!("node-{i:03}"), false)
                    .expect("node");
            }
            for p in 0..100u32 {
                let mut spec = PoolSpec::new(&format!("pool-{p}"));
                spec.weight = 1 + p % 4;
                l.create_pool(spec).expect("pool");
            }
            for i in 0..100_000 {
                let mut r = request(i, 10, 16 * MI, 500);
                r.pool = format!("pool-{}", i % 100);
                r.queue = true;
                l.submit(now(), r).expect("queued");
            }
            l.clear_events();
            RefCell::new(l)
        })
        .bench_local_values(|l| {
            {
                let mut ledger = l.borrow_mut();
                for i in 0..N_NODES {
                    ledger
                        .set_node_ready(now(), &format!("node-{i:03}"), true)
                        .expect("node");
                }
                assert_eq!(ledger.state().n_queued(), 0, "the queue drained");
            }
            l
        });
}

/// Bytes the ledger holds per live allocation: net heap growth while granting `n` requests
/// over `n_nodes` nodes (agent names like `agent-12345` included), divided by `n`.
fn bytes_per_allocation(strategy: &str, n_nodes: usize, n: usize) -> f64 {
    bytes_per_allocation_of(strategy, n_nodes, n, false)
}

/// `bytes_per_allocation`, or, when `labelled`, with the nodes labelled by zone (one of
/// three) and the grants `app` (one of ten) and `tier` (one of two): what labels cost, the
/// ledger's counts of granted labels (per node, per domain, per set of labels) included.
fn bytes_per_allocation_of(strategy: &str, n_nodes: usize, n: usize, labelled: bool) -> f64 {
    let mut l = qm_sched::ledger(strategy, config()).expect("strategy");
    for i in 0..n_nodes {
        let mut spec = NodeSpec::new(
            &format!("node-{i:03}"),
            Resources::new(1_000_000, 4096 * GI),
        );
        if labelled {
            spec.labels.insert("zone".to_owned(), format!("z{}", i % 3));
        }
        l.register_node(now(), spec).expect("node");
    }
    l.clear_events();
    let mut reqs: Vec<Request> = (0..n)
        .map(|i| {
            let mut r = request(i, 100, 64 * MI, 500);
            if labelled {
                r.labels.insert("app".to_owned(), format!("a{}", i % 10));
                r.labels.insert("tier".to_owned(), format!("t{}", i % 2));
            }
            r
        })
        .collect();
    let region = Region::new(GLOBAL);
    for r in reqs.drain(..) {
        l.submit(now(), r).expect("fits");
        // A daemon takes each command's events as it goes; the buffer stays one command long.
        l.clear_events();
    }
    let stats = region.change();
    let net = (stats.bytes_allocated as isize + stats.bytes_reallocated
        - stats.bytes_deallocated as isize)
        .max(0) as usize;
    // The requests' own agent strings were allocated before the region and moved in: count them.
    let names: usize = (0..n).map(|i| format!("agent-{i}").len()).sum();
    drop((l, reqs));
    (net + names) as f64 / n as f64
}

/// Restores 1,000,000 live allocations over 10,000 nodes from a snapshot, as the daemon does on
/// start (the store's read aside); returns the seconds it took.
fn restore_seconds(strategy: &str) -> f64 {
    let (n_nodes, n_live) = SCALES[2];
    let snap = loaded_snapshot("priority", n_nodes, n_live);
    let start = Instant::now();
    let l = restored(strategy, false, snap);
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(l.state().n_live(), n_live);
    secs
}

/// Queues 1,000,000 requests over 1,000 weighted pools while none of 1,000 nodes is ready,
/// then readies them; returns the seconds the readying (which drains the queue) took.
fn drain_seconds(strategy: &str) -> f64 {
    let n_nodes = 1_000;
    let mut l = ledger(strategy, n_nodes, 64_000, 4096 * GI);
    for i in 0..n_nodes {
        l.set_node_ready(now(), &format!("node-{i:03}"), false)
            .expect("node");
    }
    for p in 0..1_000u32 {
        let mut spec = PoolSpec::new(&format!("pool-{p}"));
        spec.weight = 1 + p % 4;
        l.create_pool(spec).expect("pool");
    }
    for i in 0..1_000_000 {
        let mut r = request(i, 10, 16 * MI, 500);
        r.pool = format!("pool-{}", i % 1_000);
        r.queue = true;
        l.submit(now(), r).expect("queued");
        l.clear_events();
    }
    let start = Instant::now();
    for i in 0..n_nodes {
        l.set_node_ready(now(), &format!("node-{i:03}"), true)
            .expect("node");
        l.clear_events();
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(l.state().n_queued(), 0, "the queue drained");
    secs
}

fn main() {
    let big = std::env::var_os("QM_BENCH_SKIP_LARGE").is_none();
    for (n_nodes, n) in [(N_NODES, N_LIVE), (N_NODES, 100_000), (10_000, 1_000_000)] {
        for strategy in ["priority", "spread"] {
            if (n_nodes > N_NODES && strategy == "spread") || (n > 100_000 && !big) {
                continue;
            }
            println!(
                "memory per live allocation ({strategy}, {n} live over {n_nodes} nodes): {:.0} bytes",
                bytes_per_allocation(strategy, n_nodes, n)
            );
        }
    }
    println!(
        "memory per live allocation (priority, {N_LIVE} live over {N_NODES} nodes, grants with \
         2 labels, nodes with 1): {:.0} bytes",
        bytes_per_allocation_of("priority", N_NODES, N_LIVE, true)
    );
    if big {
        for strategy in ["priority", "spread"] {
            println!(
                "restore of 1,000,000 live allocations over 10,000 nodes ({strategy}): {:.2} s",
                restore_seconds(strategy)
            );
        }
        for strategy in ["fair-share", "priority"] {
            println!(
                "drain of 1,000,000 queued requests over 1,000 pools, 1,000 nodes ({strategy}): {:.2} s",
                drain_seconds(strategy)
            );
        }
    }
    divan::main();
}
