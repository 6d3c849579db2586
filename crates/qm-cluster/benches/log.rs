//! Durable allocations through the cluster's log: a leader's store writing every batch (one
//! allocation, as the engine writes a grant) through `EtcdLog` to a real single-node etcd on
//! this machine, from many clients at once; group commit makes each etcd transaction carry
//! many batches. Prints batches/s, latency percentiles and batches per etcd entry, and, for
//! reference, etcd's own rate of sequential single writes.
//!
//!   cargo bench -p qm-cluster --bench log [-- CLIENTS SECONDS]      (defaults 64 and 5)
//!
//! Needs `etcd` on the PATH (Debian: etcd-server).

use std::sync::Arc;
use std::time::{Duration, Instant};

use qm_cluster::testing::Etcd;
use qm_cluster::{EtcdLog, LOG_SEQ_META, Member, MemberConfig};
use qm_store::{AllocationRow, Batch, Op, Replica, Store};

fn alloc(seq: i64) -> Op {
    Op::PutAllocation(AllocationRow {
        id: format!("a{seq}"),
        seq,
        agent: format!("agent-{}", seq % 1000),
        pool: "default".to_owned(),
        node: Some("n1".to_owned()),
        state: "granted".to_owned(),
        live: true,
        ended_at_ms: None,
        body: format!(
            "{{\"id\":\"a{seq}\",\"agent\":\"agent-{}\",\"pool\":\"default\",\"node\":\"n1\",\
             \"resources\":{{\"cpu\":\"250m\",\"memory\":\"512Mi\"}},\"priority\":500,\
             \"state\":\"granted\",\"created_at\":\"2026-12-06T21:00:00.000Z\"}}",
            seq % 1000
        ),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let clients: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(etcd) = Etcd::start("bench-log") else {
        eprintln!("etcd is not installed: nothing measured");
        return;
    };
    let member = rt
        .block_on(Member::join(MemberConfig::new(
            vec![etcd.url.clone()],
            "bench",
            "http://bench",
        )))
        .expect("join");
    let deadline = Instant::now() + Duration::from_secs(20);
    while member.view().leading.is_none() {
        assert!(Instant::now() < deadline, "not elected");
        std::thread::sleep(Duration::from_millis(20));
    }
    // etcd alone: sequential single puts
    let seq_puts = rt.block_on(async {
        let mut c = etcd_client::Client::connect([etcd.url.as_str()], None)
            .await
            .expect("client");
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < Duration::from_secs(2) {
            c.put(format!("/bench/seq/{n}"), "x", None)
                .await
                .expect("put");
            n += 1;
        }
        n as f64 / t0.elapsed().as_secs_f64()
    });
    let dir = std::env::temp_dir().join(format!("qm-bench-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log: Arc<dyn Replica> = Arc::new(EtcdLog::new(member.clone(), rt.handle().clone()));
    let store = Store::open_replicated(&dir, log).expect("store");
    let next = Arc::new(std::sync::atomic::AtomicI64::new(1));
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (store, next) = (store.clone(), Arc::clone(&next));
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while Instant::now() < stop {
                    let seq = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let t = Instant::now();
                    store
                        .commit_wait(Batch::of(vec![alloc(seq)]))
                        .expect("a durable batch");
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client"))
        .collect();
    let wall = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let entries: f64 = store
        .load()
        .expect("load")
        .meta
        .get(LOG_SEQ_META)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let n = lat.len() as f64;
    println!("durable allocations through the etcd log ({clients} clients, {seconds} s):");
    println!(
        "  {:.0} allocations/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        n / wall,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    println!(
        "  {entries:.0} etcd entries: {:.1} allocations per transaction",
        n / entries.max(1.0)
    );
    println!("etcd alone, sequential single puts: {seq_puts:.0}/s");
    rt.block_on(member.leave());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
