//! Restore at cluster scale (`cargo bench -p qm-engine --bench restore`): an engine on a real
//! SQLite store is given `QM_RESTORE_NODES` nodes (default 10,000) and `QM_RESTORE_LIVE` live
//! grants (default 1,000,000, submitted through the engine by 64 concurrent callers, so
//! group-committed as the daemon's are), shut down, and started again on the same directory.
//! It prints how long the fill took and how long the start took: the store read, the ledger
//! restored with its indexes, and the engine ready to answer. Not a divan bench: one start is
//! the measurement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use qm_core::{NodeSpec, Request, Resources};
use qm_engine::{Engine, EngineConfig};

const GI: u64 = 1 << 30;
const MI: u64 = 1 << 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        node_name: "bench-local".to_owned(),
        capacity: Resources::new(1_000, GI),
        allocatable: Resources::new(1_000, GI),
        labels: qm_core::Labels::new(),
        strategy: "priority".to_owned(),
        ledger: qm_core::LedgerConfig::default(),
        catalog: qm_core::ResourceCatalog::default(),
        tick: Duration::from_millis(200),
        retention: Duration::from_secs(3600),
        monitor: None,
        admin_token_sha256: None,
        clock: qm_engine::clock::system(),
        replica: None,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing to run
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let nodes = env_usize("QM_RESTORE_NODES", 10_000);
    let live = env_usize("QM_RESTORE_LIVE", 1_000_000);
    let dir = std::env::temp_dir().join(format!("qm-restore-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let engine = Engine::start(config(&dir)).expect("engine");
        let fill = Instant::now();
        for i in 0..nodes {
            let spec = NodeSpec::new(&format!("node-{i:05}"), Resources::new(64_000, 256 * GI));
            engine.register_node(spec, None).await.expect("node");
        }
        let engine = Arc::new(engine);
        let callers = 64;
        let mut tasks = Vec::new();
        for c in 0..callers {
            let engine = Arc::clone(&engine);
            tasks.push(tokio::spawn(async move {
                let mut i = c;
                while i < live {
                    let req = Request::new(&format!("agent-{i}"), Resources::new(250, 512 * MI));
                    let replay = engine.submit(req, false, None).await.expect("submit");
                    assert_eq!(replay.status, 201, "{}", replay.body);
                    i += callers;
                }
            }));
        }
        for t in tasks {
            t.await.expect("caller");
        }
        let filled = fill.elapsed();
        let before = engine.metrics().await.expect("metrics");
        Arc::into_inner(engine).expect("one owner").shutdown().await;
        println!(
            "filled {nodes} nodes and {} live grants in {:.1} s ({:.0} grants/s, durable)",
            before.live_granted,
            filled.as_secs_f64(),
            before.live_granted as f64 / filled.as_secs_f64()
        );
        let size: u64 = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        println!("store on disk: {:.0} MiB", size as f64 / MI as f64);

        let start = Instant::now();
        let engine = Engine::start(config(&dir)).expect("engine restarts");
        let after = engine.metrics().await.expect("metrics");
        let took = start.elapsed();
        assert_eq!(
            after.live_granted, before.live_granted,
            "every grant restored"
        );
        assert_eq!(after.nodes.len(), before.nodes.len(), "every node restored");
        println!(
            "restore on start: {} live grants over {} nodes ready in {:.2} s (target: under 5 s)",
            after.live_granted,
            after.nodes.len(),
            took.as_secs_f64()
        );
        engine.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
