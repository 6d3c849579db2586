//! `GET /v1/events`: server-sent events of allocations and nodes, live and resumed.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::daemon::{Daemon, temp_dir};

/// Reads SSE events (type, id, data) from `url` until `want` of them arrived or 5 s passed.
pub(crate) fn read_events(
    url: String,
    bearer: String,
    want: usize,
) -> mpsc::Receiver<Vec<(String, String, String)>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        let mut got = Vec::new();
        if let Ok(mut resp) = agent.get(&url).header("authorization", &bearer).call() {
            let reader = BufReader::new(resp.body_mut().as_reader());
            let (mut kind, mut id) = (String::new(), String::new());
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if let Some(v) = line.strip_prefix("event: ") {
                    kind = v.to_owned();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    got.push((kind.clone(), id.clone(), v.to_owned()));
                    if got.len() >= want {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(got);
    });
    rx
}

#[test]
fn events_stream_live_and_resume_after_an_id() {
    let d = Daemon::start(&temp_dir("events"), &["--capacity", "cpu=1,memory=1Gi"]);
    let live = read_events(format!("{}/v1/events", d.base), d.bearer(), 4);
    thread::sleep(Duration::from_millis(300));
    let a = d.post(
        "/v1/allocations",
        r#"{"agent": "watched-1", "resources": {"cpu": 1}}"#,
    );
    let q = d.post(
        "/v1/allocations",
        r#"{"agent": "watched-2", "resources": {"cpu": 1}, "queue": true}"#,
    );
    let a_id = a.body["id"].as_str().expect("id").to_owned();
    d.delete(&format!("/v1/allocations/{a_id}"));
    let got = live.recv_timeout(Duration::from_secs(10)).expect("events");
    let kinds: Vec<&str> = got.iter().map(|(k, _, _)| k.as_str()).collect();
    // the backlog starts with the local node becoming ready
    assert_eq!(
        kinds,
        [
            "node.ready",
            "allocation.granted",
            "allocation.queued",
            "allocation.released"
        ],
        "{got:?}"
    );
    assert!(got[1].2.contains("\"agent\":\"watched-1\""), "{:?}", got[1]);
    assert!(q.status == 202);
    // Resume after the grant: the queue, the release and the queued one's grant follow.
    let after = got[1].1.clone();
    let resumed = read_events(format!("{}/v1/events?since={after}", d.base), d.bearer(), 3)
        .recv_timeout(Duration::from_secs(10))
        .expect("events");
    let kinds: Vec<&str> = resumed.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "allocation.queued",
            "allocation.released",
            "allocation.granted"
        ],
        "{resumed:?}"
    );
    assert!(resumed[2].2.contains("watched-2"));
    let ids: Vec<u64> = resumed
        .iter()
        .map(|(_, id, _)| id.parse().expect("numeric id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // A client still streaming does not hold up a graceful stop.
    let _open = read_events(format!("{}/v1/events", d.base), d.bearer(), 1000);
    thread::sleep(Duration::from_millis(200));
    d.stop();
}
