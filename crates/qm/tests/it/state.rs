//! `GET /v1/state` and `POST /v1/state` (and `qm export` / `qm import`): a daemon's state moves
//! to another whole, ids included; an inconsistent document changes nothing.

use std::process::Command;

use crate::daemon::{Daemon, temp_dir};

#[test]
fn state_moves_between_daemons_and_bad_documents_change_nothing() {
    let a = Daemon::start(&temp_dir("export-a"), &["--capacity", "cpu=4,memory=4Gi"]);
    assert_eq!(
        a.post("/v1/pools", r#"{"name": "research", "weight": 3}"#)
            .status,
        201
    );
    assert_eq!(
        a.post(
            "/v1/nodes",
            r#"{"name": "far", "capacity": {"cpu": 2, "memory": "1Gi"}}"#
        )
        .status,
        201
    );
    let g = a.post("/v1/allocations", r#"{"agent": "g", "pool": "research", "resources": {"cpu": 3}, "ttl_s": 600, "labels": {"team": "x"}}"#);
    let q = a.post(
        "/v1/allocations",
        r#"{"agent": "q", "resources": {"cpu": 4}, "queue": true}"#,
    );
    assert_eq!((g.status, q.status), (201, 202));
    let dir = temp_dir("export-file");
    let file = dir.join("state.json");
    let out = Command::new(env!("CARGO_BIN_EXE_qm"))
        .args(["--server", &a.base, "export", "-f"])
        .arg(&file)
        .output()
        .expect("qm export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.stop();

    let b = Daemon::start(&temp_dir("export-b"), &["--capacity", "cpu=4,memory=4Gi"]);
    let before = b.get("/v1/state").body;
    // Inconsistent: an allocation on a node the document does not have.
    let text = std::fs::read_to_string(&file).expect("read export");
    let mut bad: serde_json::Value = serde_json::from_str(&text).expect("json");
    bad["nodes"]
        .as_array_mut()
        .expect("nodes")
        .retain(|n| n["name"] != "far" && n["name"] != "test-node");
    let r = b.post("/v1/state", &bad.to_string());
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (422, Some("validation_failed")),
        "{:?}",
        r.body
    );
    assert_eq!(
        b.get("/v1/state").body,
        before,
        "a refused import changed the state"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_qm"))
        .args(["--server", &b.base, "import"])
        .arg(&file)
        .output()
        .expect("qm import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gid = g.body["id"].as_str().expect("id");
    let moved = b.get(&format!("/v1/allocations/{gid}"));
    assert_eq!(
        (moved.body["state"].as_str(), moved.body["pool"].as_str()),
        (Some("granted"), Some("research")),
        "{:?}",
        moved.body
    );
    assert_eq!(moved.body["labels"]["team"], "x");
    assert_eq!(moved.body["expires_at"], g.body["expires_at"]);
    assert_eq!(
        b.get(&format!(
            "/v1/allocations/{}",
            q.body["id"].as_str().expect("id")
        ))
        .body["state"],
        "queued"
    );
    assert_eq!(b.get("/v1/pools/research").body["weight"], 3);
    // New ids continue after the imported ones, and the import survives a restart.
    let n = b.post(
        "/v1/allocations",
        r#"{"agent": "new", "resources": {"cpu": "100m"}}"#,
    );
    assert_ne!(n.body["id"], g.body["id"]);
    let dir_b = b.dir_of();
    b.stop();
    let b = Daemon::start(&dir_b, &["--capacity", "cpu=4,memory=4Gi"]);
    assert_eq!(
        b.get(&format!("/v1/allocations/{gid}")).body["state"],
        "granted"
    );
    b.stop();
}
