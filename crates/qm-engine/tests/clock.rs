//! The engine on a clock the test drives: leases expire, and renewals count, by the engine's
//! clock, not the wall clock (a real SQLite store in a temp dir).

use std::sync::Arc;
use std::time::Duration;

use qm_core::AllocId;
use qm_engine::clock::ManualClock;
use qm_engine::{Engine, EngineConfig, Lookup};
use qm_proto::{AllocationDoc, AllocationRequest, from_json};

fn engine(tag: &str, clock: &ManualClock) -> (Engine, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("qm-clock-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = EngineConfig {
        data_dir: dir.clone(),
        node_name: "n1".to_owned(),
        capacity: qm_core::Resources::new(4_000, 8 << 30),
        allocatable: qm_core::Resources::new(4_000, 8 << 30),
        labels: qm_core::Labels::new(),
        strategy: "priority".to_owned(),
        ledger: qm_core::LedgerConfig::default(),
        catalog: qm_core::ResourceCatalog::default(),
        tick: Duration::from_millis(10),
        retention: Duration::from_secs(3600),
        monitor: None,
        admin_token_sha256: None,
        clock: Arc::new(clock.clone()),
        replica: None,
    };
    (Engine::start(config).expect("engine"), dir)
}

async fn live(engine: &Engine, id: AllocId) -> Option<AllocationDoc> {
    match engine.get(id).await.expect("get") {
        Lookup::Live(doc) => Some(*doc),
        Lookup::NotLive => None,
    }
}

/// Lets the engine's timer run a few times (it runs every 10 ms of real time).
async fn ticks() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_expires_by_the_engine_clock_and_a_renewal_restarts_it() {
    let clock = ManualClock::from_system();
    let (engine, dir) = engine("lease", &clock);
    let req: AllocationRequest =
        from_json(r#"{"agent":"a","resources":{"cpu":"500m"},"ttl_s":30}"#).expect("request");
    let req = req.into_request(engine.catalog()).expect("valid");
    let replay = engine.submit(req, false, None).await.expect("submit");
    assert_eq!(replay.status, 201, "{}", replay.body);
    let id: AllocId = replay.id.expect("an id").parse().expect("an allocation id");

    // 29 s on the engine's clock (a blink on the wall's): still granted
    clock.advance(Duration::from_secs(29));
    ticks().await;
    let doc = live(&engine, id).await.expect("still live");
    assert_eq!(doc.state, "granted");
    // renewed then: the lease runs 30 s from the engine's now
    let renewed = engine.renew(id, None).await.expect("renew");
    assert_ne!(renewed.expires_at, doc.expires_at);
    clock.advance(Duration::from_secs(29));
    ticks().await;
    assert!(live(&engine, id).await.is_some(), "renewed 29 s ago");
    clock.advance(Duration::from_secs(2));
    ticks().await;
    assert!(live(&engine, id).await.is_none(), "expired");
    let ended = engine.stored(id).await.expect("stored").expect("kept");
    assert_eq!(ended.state, "expired", "{ended:?}");
    // its capacity is free again
    let node = engine.local_node().await.expect("node");
    assert!(!node.allocated.contains_key("cpu"), "{node:?}");
    assert_eq!(node.available.get("cpu").map(String::as_str), Some("4"));
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
