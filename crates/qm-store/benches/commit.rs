//! Durable commits per second through group commit (`cargo bench -p qm-store`): each of 1, 16
//! or 64 threads commits one single-row batch and waits until it is durable, in a loop.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use divan::Bencher;
use divan::counter::ItemsCount;
use qm_store::{AllocationRow, Batch, Op, Store};

static SEQ: AtomicI64 = AtomicI64::new(1);

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qm-store-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Store::open(&dir).expect("open the store")
    })
}

fn one() -> Batch {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    Batch {
        ops: vec![Op::PutAllocation(AllocationRow {
            id: format!("a{seq}"),
            seq,
            agent: "bench".to_owned(),
            pool: "default".to_owned(),
            node: Some("n".to_owned()),
            state: "granted".to_owned(),
            live: true,
            ended_at_ms: None,
            body: "{\"agent\":\"bench\",\"resources\":{\"cpu\":\"100m\"}}".to_owned(),
        })],
        from_log: false,
    }
}

#[divan::bench(threads = [1, 16, 64], sample_count = 20, sample_size = 20)]
fn durable_commit(bencher: Bencher) {
    let store = Arc::new(store().clone());
    bencher
        .counter(ItemsCount::new(1usize))
        .bench(|| store.commit_wait(one()).expect("commit"));
}

fn main() {
    divan::main();
    let s = store().stats();
    #[allow(clippy::cast_precision_loss)]
    let per_tx = s.batches as f64 / s.transactions.max(1) as f64;
    println!(
        "group commit: {} batches in {} transactions ({per_tx:.1} batches per fsync)",
        s.batches, s.transactions
    );
}
