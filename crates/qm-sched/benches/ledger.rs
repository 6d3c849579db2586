//! Ledger benchmarks, single thread (`cargo bench -p qm-sched --bench ledger`):
//! grant + release pairs with 10,000 live allocations over 64 nodes (per strategy); a
//! preempting grant with 10,000 live allocations; draining 100,000 queued requests across 100
//! weighted pools; and, printed before the timings, the memory each live allocation costs the
//! ledger, counted by an instrumented global allocator.

use std::alloc::System;
use std::cell::RefCell;

use divan::Bencher;
use divan::counter::ItemsCount;
use qm_core::{
    AllocId, Ledger, LedgerConfig, NodeSpec, PoolSpec, Priority, Request, Resources, Timestamp,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const N_NODES: usize = 64;
const N_LIVE: usize = 10_000;
const STRATEGIES: [&str; 5] = ["priority", "fair-share", "best-fit", "first-fit", "spread"];

fn now() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000)
}

fn ledger(strategy: &str, n_nodes: usize, cpu: u64, mem: u64) -> Ledger {
    let mut l = qm_sched::ledger(strategy, LedgerConfig::default()).expect("strategy");
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

/// 64 nodes of 64 cores and 256 GiB holding 10,000 grants of 250m and 512 MiB.
fn loaded(strategy: &str) -> Ledger {
    let mut l = ledger(strategy, N_NODES, 64_000, 256 * GI);
    for i in 0..N_LIVE {
        l.submit(now(), request(i, 250, 512 * MI, 500))
            .expect("fits");
    }
    l.clear_events();
    l
}

#[divan::bench(args = STRATEGIES)]
fn grant_release_pair(bencher: Bencher, strategy: &str) {
    let mut l = loaded(strategy);
    let mut i = N_LIVE;
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

/// 64 nodes, each filled to the last slot with priority-100 grants of 250m and 512 MiB
/// (10,000 live in all), and the grants' ids.
fn full_of_low_priority() -> (Ledger, Vec<AllocId>) {
    let per_node = (N_LIVE / N_NODES + 1) as u64;
    let mut l = ledger("priority", N_NODES, 250 * per_node, 512 * MI * per_node);
    let mut ids = Vec::new();
    for i in 0..N_LIVE + N_NODES {
        if let Ok(s) = l.submit(now(), request(i, 250, 512 * MI, 100)) {
            ids.extend(s.id);
        }
    }
    l.clear_events();
    (l, ids)
}

/// Every node full of priority-100 grants; each iteration grants a priority-900 request that
/// must preempt, then puts the cluster back (releases it, grants a low one in the hole). The
/// figure is an upper bound for the preempting grant alone; `restore_only` times the rest.
#[divan::bench]
fn preempting_grant(bencher: Bencher) {
    let (mut l, _) = full_of_low_priority();
    let mut i = 1_000_000;
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

/// The restore half of `preempting_grant` (a release and a plain grant on a full cluster).
#[divan::bench]
fn restore_only(bencher: Bencher) {
    let (mut l, mut ids) = full_of_low_priority();
    let mut i = 1_000_000;
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
/// (agent names like `agent-12345` included), divided by `n`.
fn bytes_per_allocation(strategy: &str, n: usize) -> f64 {
    let mut l = ledger(strategy, N_NODES, 1_000_000, 4096 * GI);
    let mut reqs: Vec<Request> = (0..n).map(|i| request(i, 100, 64 * MI, 500)).collect();
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

fn main() {
    for n in [N_LIVE, 100_000] {
        for strategy in ["priority", "spread"] {
            println!(
                "memory per live allocation ({strategy}, {n} live over {N_NODES} nodes): {:.0} bytes",
                bytes_per_allocation(strategy, n)
            );
        }
    }
    divan::main();
}
