//! The API through the real daemon: an allocation's life in every state, each strategy, and a
//! table of bad requests that are refused with problem+json and change nothing.

use serde_json::{Value, json};

use crate::daemon::{Daemon, temp_dir};

fn alloc(agent: &str, cpu: &str, extra: Value) -> String {
    let mut body = json!({ "agent": agent, "resources": { "cpu": cpu, "memory": "256Mi" } });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body.to_string()
}

fn id(a: &crate::daemon::Answer) -> String {
    a.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {:?}", a.body))
        .to_owned()
}

#[test]
fn an_allocation_lives_through_every_state() {
    let d = Daemon::start(&temp_dir("life"), &["--capacity", "cpu=2,memory=4Gi"]);
    assert_eq!(d.get("/healthz").status, 200);
    assert_eq!(d.get("/readyz").status, 200);
    let openapi = d.get("/openapi.json");
    assert_eq!(openapi.status, 200);
    assert!(openapi.body["paths"]["/v1/allocations"]["post"].is_object());
    let (status, docs) = d.get_text("/docs/");
    assert_eq!(status, 200);
    assert!(docs.contains("swagger-ui"), "{docs}");
    let node = d.get("/v1/node");
    assert_eq!(node.body["name"], "test-node");
    assert_eq!(node.body["allocatable"]["cpu"], "2");
    assert_eq!(node.body["kind"], "local");

    // granted, with a lease
    let a = d.post(
        "/v1/allocations",
        &alloc("coder-1", "1", json!({ "ttl_s": 60, "priority": 100 })),
    );
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(
        (a.body["state"].as_str(), a.body["node"].as_str()),
        (Some("granted"), Some("test-node"))
    );
    assert_eq!(a.body["qos"], "burstable");
    let a_id = id(&a);
    assert!(a.body["expires_at"].is_string());
    let renewed = d.post(
        &format!("/v1/allocations/{a_id}/renew"),
        r#"{"ttl_s": 120}"#,
    );
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    assert_ne!(renewed.body["expires_at"], a.body["expires_at"]);

    // a dry run answers and changes nothing
    let dry = d.post(
        "/v1/allocations?dry_run=true",
        &alloc("coder-2", "1", json!({})),
    );
    assert_eq!(
        (dry.status, dry.body["dry_run"].as_bool()),
        (201, Some(true))
    );
    assert_eq!(
        d.get("/v1/allocations").body["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // refused when it does not fit and may not queue
    let big = d.post(
        "/v1/allocations",
        &alloc("big", "2", json!({ "priority": 50 })),
    );
    assert_eq!(
        (big.status, big.body["code"].as_str()),
        (409, Some("insufficient_resources"))
    );
    assert_eq!(big.body["shortfall"]["cpu"], "1");
    assert!(big.content_type.starts_with("application/problem+json"));

    // queued, then granted once capacity frees; long-poll sees it
    let q = d.post(
        "/v1/allocations",
        &alloc("waiter", "2", json!({ "queue": true, "priority": 50 })),
    );
    assert_eq!((q.status, q.body["state"].as_str()), (202, Some("queued")));
    let q_id = id(&q);
    let still = d.get(&format!("/v1/allocations/{q_id}?wait=0.2"));
    assert_eq!(still.body["state"], "queued");

    // preempted by a higher priority
    let hi = d.post(
        "/v1/allocations",
        &alloc("urgent", "2", json!({ "priority": 900 })),
    );
    assert_eq!(hi.status, 201, "{:?}", hi.body);
    let hi_id = id(&hi);
    assert_eq!(hi.body["preempted"], json!([a_id]));
    let victim = d.get(&format!("/v1/allocations/{a_id}"));
    assert_eq!(
        (
            victim.body["state"].as_str(),
            victim.body["preempted_by"].as_str()
        ),
        (Some("preempted"), Some(hi_id.as_str()))
    );

    // released (twice: the same answer), then the queued one is granted
    let r = d.delete(&format!("/v1/allocations/{hi_id}"));
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("released"))
    );
    let again = d.delete(&format!("/v1/allocations/{hi_id}"));
    assert_eq!(
        (again.status, again.body["state"].as_str()),
        (200, Some("released"))
    );
    let granted = d.get(&format!("/v1/allocations/{q_id}?wait=5"));
    assert_eq!(granted.body["state"], "granted");

    // cancelled while queued
    let c = d.post(
        "/v1/allocations",
        &alloc("later", "1", json!({ "queue": true, "priority": 10 })),
    );
    assert_eq!(c.status, 202);
    let cancelled = d.delete(&format!("/v1/allocations/{}", id(&c)));
    assert_eq!(cancelled.body["state"], "cancelled");

    // an idempotent retry creates nothing
    let key = [("Idempotency-Key", "retry-1")];
    let body = alloc("retry", "0.5", json!({ "queue": true }));
    let first = d.send(
        "POST",
        "/v1/allocations",
        "application/json",
        body.as_bytes(),
        &key,
    );
    let second = d.send(
        "POST",
        "/v1/allocations",
        "application/json",
        body.as_bytes(),
        &key,
    );
    assert_eq!((first.status, id(&first)), (second.status, id(&second)));
    let retries = d.get("/v1/allocations?agent=retry");
    assert_eq!(retries.body["items"].as_array().map(Vec::len), Some(1));

    // listing filters and pages
    let page = d.get("/v1/allocations?limit=2");
    assert_eq!(page.body["items"].as_array().map(Vec::len), Some(2));
    let cursor = page.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let rest = d.get(&format!("/v1/allocations?limit=100&cursor={cursor}"));
    let total = d.get("/v1/allocations?limit=100").body["items"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(rest.body["items"].as_array().map_or(0, Vec::len) + 2, total);
    let (status, metrics) = d.get_text("/metrics");
    assert_eq!(status, 200);
    for line in [
        "qm_allocation_decisions_total{result=\"refused\"} 1",
        // urgent took coder-1's place; the retry (priority 500) took the waiter's (50)
        "qm_allocation_preemptions_total 2",
        "qm_node_allocatable_cores{node=\"test-node\",resource=\"cpu\"} 2",
        "qm_pool_queued_requests{pool=\"default\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from\n{metrics}"
        );
    }
    let released = d.get("/v1/allocations?state=released");
    assert!(
        released.body["items"]
            .as_array()
            .is_some_and(|v| v.iter().all(|a| a["state"] == "released"))
    );
    d.stop();
}

#[test]
fn pools_and_reported_nodes() {
    let d = Daemon::start(
        &temp_dir("pools"),
        &["--capacity", "cpu=1,memory=1Gi", "--strategy", "fair-share"],
    );
    let p = d.post(
        "/v1/pools",
        r#"{"name": "research", "weight": 2, "guaranteed": {"cpu": "500m"}, "limit": {"cpu": 4}}"#,
    );
    assert_eq!(p.status, 201, "{:?}", p.body);
    assert_eq!(p.body["limit"]["cpu"], "4");
    assert_eq!(
        d.post("/v1/pools", r#"{"name": "research"}"#).body["code"],
        "conflict"
    );
    let n = d.post("/v1/nodes", r#"{"name": "gpu-box", "capacity": {"cpu": 8, "memory": "32Gi", "gpu": 2}, "labels": {"gpu": "a100"}}"#);
    assert_eq!((n.status, n.body["kind"].as_str()), (201, Some("reported")));
    let a = d.post("/v1/allocations", r#"{"agent": "trainer", "pool": "research", "resources": {"cpu": 2, "gpu": 1}, "node_selector": {"gpu": "a100"}}"#);
    assert_eq!(
        (a.status, a.body["node"].as_str()),
        (201, Some("gpu-box")),
        "{:?}",
        a.body
    );
    let busy = d.delete("/v1/nodes/gpu-box");
    assert_eq!(busy.status, 409);
    let busy_pool = d.delete("/v1/pools/research");
    assert_eq!(busy_pool.status, 409);
    let forced = d.delete("/v1/nodes/gpu-box?force=true");
    assert_eq!(forced.status, 200);
    let lost = d.get(&format!("/v1/allocations/{}", id(&a)));
    assert_eq!(lost.body["state"], "lost");
    assert_eq!(d.delete("/v1/pools/research").status, 200);
    assert_eq!(d.get("/v1/pools/research").status, 404);
    d.stop();
}

#[test]
fn every_strategy_serves() {
    for strategy in ["priority", "fair-share", "best-fit", "first-fit", "spread"] {
        let d = Daemon::start(
            &temp_dir(strategy),
            &["--capacity", "cpu=2,memory=2Gi", "--strategy", strategy],
        );
        let a = d.post("/v1/allocations", &alloc("a", "1", json!({})));
        assert_eq!(a.status, 201, "{strategy}: {:?}", a.body);
        let b = d.post(
            "/v1/allocations",
            &alloc("b", "2", json!({ "queue": true })),
        );
        assert_eq!(b.status, 202, "{strategy}: {:?}", b.body);
        d.delete(&format!("/v1/allocations/{}", id(&a)));
        assert_eq!(
            d.get(&format!("/v1/allocations/{}?wait=5", id(&b))).body["state"],
            "granted",
            "{strategy}"
        );
        d.stop();
    }
}

#[test]
fn bad_requests_get_problems_and_change_nothing() {
    let d = Daemon::start(&temp_dir("bad"), &["--capacity", "cpu=2,memory=2Gi"]);
    let ok = r#"{"agent": "a", "resources": {"cpu": "1"}}"#;
    assert_eq!(d.post("/v1/allocations", ok).status, 201);
    let big = format!(
        r#"{{"agent": "a", "resources": {{"cpu": "1"}}, "labels": {{"x": "{}"}}}}"#,
        "y".repeat(70_000)
    );
    // (what, body, content type, status, code, field named)
    type Case = (
        &'static str,
        Vec<u8>,
        &'static str,
        u16,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "not json",
            b"{agent".to_vec(),
            "application/json",
            400,
            "malformed_json",
            "",
        ),
        (
            "not an object",
            b"[1, 2]".to_vec(),
            "application/json",
            422,
            "validation_failed",
            "body",
        ),
        (
            "invalid utf-8",
            b"{\"agent\": \"\xff\xfe\", \"resources\": {}}".to_vec(),
            "application/json",
            400,
            "malformed_json",
            "",
        ),
        (
            "wrong content type",
            ok.as_bytes().to_vec(),
            "text/plain",
            415,
            "unsupported_media_type",
            "",
        ),
        (
            "no content type",
            ok.as_bytes().to_vec(),
            "",
            415,
            "unsupported_media_type",
            "",
        ),
        (
            "oversized",
            big.into_bytes(),
            "application/json",
            413,
            "payload_too_large",
            "",
        ),
        (
            "negative",
            br#"{"agent": "a", "resources": {"memory": "-1Gi"}}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "resources.memory",
        ),
        (
            "too precise",
            br#"{"agent": "a", "resources": {"cpu": "0.0001"}}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "resources.cpu",
        ),
        (
            "overflowing",
            br#"{"agent": "a", "resources": {"memory": "99999999Ei"}}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "resources.memory",
        ),
        (
            "not finite",
            br#"{"agent": "a", "resources": {"cpu": "NaN"}}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "resources.cpu",
        ),
        (
            "number overflow",
            br#"{"agent": "a", "resources": {"cpu": 1e400}}"#.to_vec(),
            "application/json",
            400,
            "malformed_json",
            "",
        ),
        (
            "unknown resource",
            br#"{"agent": "a", "resources": {"disk": 1}}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "resources.disk",
        ),
        (
            "unknown field",
            br#"{"agent": "a", "resources": {}, "colour": "red"}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "colour",
        ),
        (
            "missing field",
            br#"{"resources": {}}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "agent",
        ),
        (
            "priority range",
            br#"{"agent": "a", "resources": {}, "priority": 1001}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "priority",
        ),
        (
            "priority type",
            br#"{"agent": "a", "resources": {}, "priority": "high"}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "priority",
        ),
        (
            "bad class",
            br#"{"agent": "a", "resources": {}, "priority_class": "urgent"}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "priority_class",
        ),
        (
            "bad name",
            br#"{"agent": "a b", "resources": {}}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "agent",
        ),
        (
            "unknown pool",
            br#"{"agent": "a", "pool": "nope", "resources": {}}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "pool",
        ),
        (
            "bad ttl",
            br#"{"agent": "a", "resources": {}, "ttl_s": -5}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "ttl_s",
        ),
        (
            "limit below request",
            br#"{"agent": "a", "resources": {"cpu": 1}, "limits": {"cpu": "500m"}}"#.to_vec(),
            "application/json",
            422,
            "validation_failed",
            "limits.cpu",
        ),
    ];
    let before = d.get("/v1/allocations").body;
    let node_before = d.get("/v1/node").body;
    for (what, body, ctype, status, code, field) in cases {
        let a = d.send("POST", "/v1/allocations", ctype, &body, &[]);
        assert_eq!(a.status, status, "{what}: {:?}", a.body);
        assert_eq!(a.body["code"], code, "{what}: {:?}", a.body);
        assert!(
            a.content_type.starts_with("application/problem+json"),
            "{what}: {}",
            a.content_type
        );
        assert!(
            a.body["detail"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}"
        );
        if !field.is_empty() {
            let fields: Vec<&str> = a.body["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["field"].as_str())
                .collect();
            assert!(
                fields.contains(&field),
                "{what}: fields {fields:?} in {:?}",
                a.body
            );
        }
    }
    assert_eq!(d.get("/v1/allocations/zzz").status, 404);
    assert_eq!(d.get("/v1/allocations/ffffff").status, 404);
    assert_eq!(d.get("/v1/nope").body["code"], "not_found");
    assert_eq!(d.get("/v1/allocations?limit=0").status, 422);
    assert_eq!(
        d.get("/v1/allocations").body,
        before,
        "bad requests changed the allocations"
    );
    assert_eq!(
        d.get("/v1/node").body,
        node_before,
        "bad requests changed the node"
    );
    d.stop();
}

#[test]
fn a_reported_node_that_misses_its_heartbeat_loses_its_grants() {
    let d = Daemon::start(&temp_dir("heartbeat"), &["--capacity", "cpu=1,memory=1Gi"]);
    let n = d.post("/v1/nodes", r#"{"name": "edge", "capacity": {"cpu": 4, "memory": "4Gi"}, "labels": {"site": "edge"}, "heartbeat_ttl_s": 1}"#);
    assert_eq!(n.status, 201, "{:?}", n.body);
    let a = d.post(
        "/v1/allocations",
        r#"{"agent": "remote", "resources": {"cpu": 2}, "node_selector": {"site": "edge"}}"#,
    );
    assert_eq!((a.status, a.body["node"].as_str()), (201, Some("edge")));
    // Heartbeats keep it alive past its ttl.
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(
            d.send("PUT", "/v1/nodes/edge/heartbeat", "", b"", &[])
                .status,
            200
        );
    }
    assert_eq!(
        d.get(&format!("/v1/allocations/{}", id(&a))).body["state"],
        "granted"
    );
    std::thread::sleep(std::time::Duration::from_millis(1800));
    let lost = d.get(&format!("/v1/allocations/{}", id(&a)));
    assert_eq!(
        (lost.body["state"].as_str(), lost.body["reason"].as_str()),
        (Some("lost"), Some("node edge lost"))
    );
    let nodes = d.get("/v1/nodes").body;
    let edge = nodes["items"]
        .as_array()
        .and_then(|v| v.iter().find(|n| n["name"] == "edge"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(edge["ready"], false);
    // A heartbeat brings it back.
    assert_eq!(
        d.send("PUT", "/v1/nodes/edge/heartbeat", "", b"", &[]).body["ready"],
        true
    );
    let again = d.post(
        "/v1/allocations",
        r#"{"agent": "remote", "resources": {"cpu": 2}, "node_selector": {"site": "edge"}}"#,
    );
    assert_eq!(again.status, 201);
    // a heartbeat says what the node uses: shown as its usage, in canonical quantities
    let beat = d.send(
        "PUT",
        "/v1/nodes/edge/heartbeat",
        "application/json",
        br#"{"usage": {"cpu": "1500m", "memory": 1073741824}}"#,
        &[],
    );
    assert_eq!(beat.status, 200, "{:?}", beat.body);
    assert_eq!(beat.body["usage"], json!({"cpu": "1500m", "memory": "1Gi"}));
    let listed = d.get("/v1/nodes").body["items"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "edge").cloned())
        .unwrap_or_default();
    assert_eq!(listed["usage"]["cpu"], "1500m");
    let bad = d.send(
        "PUT",
        "/v1/nodes/edge/heartbeat",
        "application/json",
        br#"{"usage": {"cpu": "-1"}}"#,
        &[],
    );
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert_eq!(
        bad.body["errors"][0]["field"], "usage.cpu",
        "{:?}",
        bad.body
    );
    d.stop();
}

#[test]
fn a_queued_request_on_a_lease_waits_only_while_its_waiter_renews() {
    let d = Daemon::start(
        &temp_dir("queue-lease"),
        &["--capacity", "cpu=1,memory=1Gi"],
    );
    let full = d.post("/v1/allocations", &alloc("full", "1", json!({})));
    assert_eq!(full.status, 201);
    let waiter = |agent: &str| alloc(agent, "500m", json!({"queue": true, "ttl_s": 1.5}));
    let kept = d.post("/v1/allocations", &waiter("kept"));
    let gone = d.post("/v1/allocations", &waiter("gone"));
    assert_eq!((kept.status, gone.status), (202, 202));
    let (kept, gone) = (id(&kept), id(&gone));
    // only `kept` is renewed (as `qm exec` does while it waits)
    for _ in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let r = d.post(&format!("/v1/allocations/{kept}/renew"), "{}");
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    assert_eq!(
        d.get(&format!("/v1/allocations/{gone}")).body["state"],
        "expired"
    );
    assert_eq!(
        d.get(&format!("/v1/allocations/{kept}")).body["state"],
        "queued"
    );
    // freed capacity goes to the one still waited for
    assert_eq!(
        d.delete(&format!("/v1/allocations/{}", id(&full))).status,
        200
    );
    assert_eq!(
        d.get(&format!("/v1/allocations/{kept}")).body["state"],
        "granted"
    );
    d.stop();
}
