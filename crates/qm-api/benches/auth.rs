//! What authentication and authorization add to a request: the token registry's lookup (an
//! API token and the bootstrap admin token: a SHA-256 and a constant-time comparison), the
//! policy's decision, and a whole read (`GET /v1/node`) through the router with the gate
//! authenticating a token against the same router with `--auth none` (the gate still runs,
//! nothing is looked up). The engine is real, on a temporary data dir.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use qm_api::auth::{Operation, Owner, policy};
use qm_api::{AuthConfig, AuthMode};
use qm_engine::tokens::{Principal, Role};
use qm_engine::{Engine, EngineConfig};
use tower::ServiceExt;

struct World {
    rt: tokio::runtime::Runtime,
    engine: Engine,
    api_token: String,
    admin_token: String,
    with_auth: axum::Router,
    without_auth: axum::Router,
}

static WORLD: OnceLock<World> = OnceLock::new();

fn world() -> &'static World {
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qm-bench-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let admin_token = format!("qm_bootstrap_{}", "ab".repeat(32));
        let config = EngineConfig {
            data_dir: dir,
            node_name: "bench".to_owned(),
            capacity: qm_core::Resources::new(64_000, 256 << 30),
            allocatable: qm_core::Resources::new(64_000, 256 << 30),
            labels: qm_core::Labels::new(),
            strategy: "priority".to_owned(),
            ledger: qm_core::LedgerConfig::default(),
            catalog: qm_core::ResourceCatalog::default(),
            tick: Duration::from_millis(250),
            retention: Duration::from_secs(3600),
            monitor: None,
            admin_token_sha256: Some(qm_engine::tokens::digest(&admin_token)),
            clock: qm_engine::clock::system(),
            replica: None,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let engine = rt.block_on(async { Engine::start(config).expect("engine") });
        let api_token = rt
            .block_on(engine.tokens().create(
                &qm_proto::TokenRequest {
                    name: "bench".to_owned(),
                    role: "operator".to_owned(),
                    ..qm_proto::TokenRequest::default()
                },
                false,
            ))
            .expect("token")
            .token;
        // a registry of some size, as a daemon with many agents has
        for i in 0..1000 {
            let _ = rt.block_on(engine.tokens().create(
                &qm_proto::TokenRequest {
                    name: format!("agent-{i}"),
                    role: "agent".to_owned(),
                    agent: Some(format!("agent-{i}")),
                    ..qm_proto::TokenRequest::default()
                },
                true,
            ));
        }
        let _guard = rt.enter();
        let with_auth = qm_api::router(engine.clone(), None, AuthConfig::default(), None);
        let without_auth = qm_api::router(
            engine.clone(),
            None,
            AuthConfig {
                mode: AuthMode::None,
                ..AuthConfig::default()
            },
            None,
        );
        World {
            rt,
            engine,
            api_token,
            admin_token,
            with_auth,
            without_auth,
        }
    })
}

fn main() {
    divan::main();
}

#[divan::bench]
fn authenticate_api_token(b: divan::Bencher) {
    let w = world();
    b.bench(|| {
        w.engine
            .tokens()
            .authenticate(divan::black_box(&w.api_token))
    });
}

#[divan::bench]
fn authenticate_admin_token(b: divan::Bencher) {
    let w = world();
    b.bench(|| {
        w.engine
            .tokens()
            .authenticate(divan::black_box(&w.admin_token))
    });
}

#[divan::bench]
fn decide(b: divan::Bencher) {
    let p = Principal {
        token_id: "t".to_owned(),
        name: "t".to_owned(),
        role: Role::Agent,
        agent: Some("orch".to_owned()),
        pool: Some("swarm".to_owned()),
        spawn: true,
    };
    let owner = Owner::Agent {
        agent: "orch.w1",
        pool: Some("swarm"),
    };
    b.bench(|| policy::decide(divan::black_box(&p), Operation::ReleaseAllocation, owner));
}

fn get_node(router: &axum::Router, token: Option<&str>) -> u16 {
    let w = world();
    let mut req = Request::get("/v1/node");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Body::empty()).expect("request");
    w.rt.block_on(router.clone().oneshot(req))
        .expect("answer")
        .status()
        .as_u16()
}

#[divan::bench]
fn get_node_with_a_token(b: divan::Bencher) {
    let w = world();
    assert_eq!(get_node(&w.with_auth, Some(&w.api_token)), 200);
    b.bench(|| get_node(&w.with_auth, Some(&w.api_token)));
}

#[divan::bench]
fn get_node_without_auth(b: divan::Bencher) {
    let w = world();
    assert_eq!(get_node(&w.without_auth, None), 200);
    b.bench(|| get_node(&w.without_auth, None));
}
