//! Durability through restarts: every acknowledged write survives `kill -9` during concurrent
//! writes, and a lease that lapses while the daemon is down is expired at start.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::daemon::{Daemon, temp_dir};

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = temp_dir("kill9");
    let d = Daemon::start(&dir, &["--capacity", "cpu=1000,memory=1000Gi"]);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let base = d.base.clone();
    let bearer = d.bearer();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let acked = Arc::clone(&acked);
            let base = base.clone();
            let bearer = bearer.clone();
            thread::spawn(move || {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .new_agent();
                for i in 0..10_000 {
                    let body = format!(
                        r#"{{"agent": "w{w}-{i}", "resources": {{"cpu": "10m", "memory": "1Mi"}}}}"#
                    );
                    let Ok(mut resp) = agent
                        .post(&format!("{base}/v1/allocations"))
                        .header("content-type", "application/json")
                        .header("authorization", &bearer)
                        .send(body.as_bytes())
                    else {
                        return;
                    };
                    if resp.status().as_u16() != 201 {
                        return;
                    }
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if let Some(id) = v["id"].as_str() {
                        acked.lock().expect("lock").push(id.to_owned());
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(1500));
    d.kill9();
    for w in writers {
        let _ = w.join();
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 50,
        "too few writes acknowledged before the kill: {}",
        acked.len()
    );
    let d = Daemon::start(&dir, &["--capacity", "cpu=1000,memory=1000Gi"]);
    for id in &acked {
        let a = d.get(&format!("/v1/allocations/{id}"));
        assert_eq!(
            (a.status, a.body["state"].as_str()),
            (200, Some("granted")),
            "acknowledged {id} lost: {:?}",
            a.body
        );
    }
    let node = d.get("/v1/node").body;
    let live = d.get("/v1/allocations?state=granted&limit=1000").body;
    assert!(live["items"].as_array().is_some_and(|v| !v.is_empty()));
    assert!(node["allocated"]["cpu"].is_string());
    d.stop();
}

#[test]
fn a_lease_that_lapses_while_down_is_expired_at_start() {
    let dir = temp_dir("lease");
    let d = Daemon::start(&dir, &["--capacity", "cpu=2,memory=2Gi"]);
    let a = d.post(
        "/v1/allocations",
        r#"{"agent": "short", "resources": {"cpu": 1}, "ttl_s": 1}"#,
    );
    let b = d.post(
        "/v1/allocations",
        r#"{"agent": "long", "resources": {"cpu": 1}, "ttl_s": 3600}"#,
    );
    let w = d.post(
        "/v1/allocations",
        r#"{"agent": "waiting", "resources": {"cpu": 1}, "queue": true}"#,
    );
    assert_eq!((a.status, b.status, w.status), (201, 201, 202));
    d.stop();
    thread::sleep(Duration::from_millis(1300));
    let d = Daemon::start(&dir, &["--capacity", "cpu=2,memory=2Gi"]);
    let id = |x: &crate::daemon::Answer| x.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        d.get(&format!("/v1/allocations/{}", id(&a))).body["state"],
        "expired"
    );
    assert_eq!(
        d.get(&format!("/v1/allocations/{}", id(&b))).body["state"],
        "granted"
    );
    // The freed capacity went to the queue at start.
    assert_eq!(
        d.get(&format!("/v1/allocations/{}", id(&w))).body["state"],
        "granted"
    );
    d.kill9();
}
