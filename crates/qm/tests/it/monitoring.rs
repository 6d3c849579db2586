//! The monitor end to end: real host metrics in JSON, history, `/metrics` (Prometheus and
//! OpenMetrics), the local node's usage and the CLI's CSV export; and alerts driven through a
//! fixture /proc (the daemon's `[monitor] root`), delivered to a webhook that fails once (so
//! the retry is exercised) and to an exec hook.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{Daemon, eventually, temp_dir};

fn mem_total_bytes() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    kib * 1024.0
}

fn sample(snapshot: &Value, name: &str) -> Option<f64> {
    snapshot["samples"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn host_metrics_history_usage_and_exports() {
    let dir = temp_dir("monitor");
    std::fs::write(dir.join("qm.toml"), "[monitor]\ninterval_s = 0.2\n").expect("config");
    let config = dir.join("qm.toml");
    let d = Daemon::start(
        &dir.join("data"),
        &["--config", config.to_str().expect("utf-8")],
    );
    // the JSON snapshot: real values
    let snap = eventually("two collections", 20, || {
        let s = d.get("/v1/metrics").body;
        sample(&s, "qm_host_cpu_utilization_ratio").map(|_| s)
    });
    assert_eq!(
        sample(&snap, "qm_host_memory_total_bytes"),
        Some(mem_total_bytes())
    );
    let util = sample(&snap, "qm_host_cpu_utilization_ratio").expect("cpu");
    assert!((0.0..=1.0).contains(&util), "{util}");
    assert!(sample(&snap, "qm_process_resident_memory_bytes").is_some_and(|v| v > 0.0));
    assert!(snap["collection_cpu_ms"].as_f64().is_some());
    let only_memory = d.get("/v1/metrics?name=qm_host_memory_").body;
    assert!(
        only_memory["samples"]
            .as_array()
            .is_some_and(|a| !a.is_empty()
                && a.iter().all(|s| s["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("qm_host_memory_"))))
    );
    // the local node's usage
    let node = d.get("/v1/node").body;
    assert!(node["usage"]["memory"].is_string(), "{node}");
    assert!(node["usage"]["cpu"].is_string(), "{node}");
    // pressure: each signal, the worse of the managed and host views
    let p = d.get("/v1/pressure");
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(["ok", "warning", "critical"].contains(&p.body["level"].as_str().unwrap_or("")));
    assert!(
        ["open", "best-effort-paused", "paused"]
            .contains(&p.body["admission"].as_str().unwrap_or("")),
        "{}",
        p.body
    );
    let mem = &p.body["signals"]["memory"];
    assert!(
        mem["utilization"]
            .as_f64()
            .is_some_and(|u| (0.0..=1.0).contains(&u)),
        "{mem}"
    );
    assert!(mem["available"].as_f64().is_some_and(|a| a > 0.0));
    assert!(p.body["signals"]["cpu"]["level"].is_string());
    assert_eq!(d.get("/v1/node").body["pressure"], p.body["level"]);
    // history
    let series = d.get("/v1/metrics/series").body;
    assert!(
        series["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["name"] == "qm_host_memory_used_bytes")),
        "{series}"
    );
    assert!(series["memory_bytes"].as_u64().is_some_and(|b| b > 0));
    let q = eventually("three points of history", 20, || {
        let q = d
            .get("/v1/metrics/query?name=qm_host_memory_used_bytes&since_s=60")
            .body;
        let n = q["items"][0]["points"].as_array().map_or(0, Vec::len);
        (n >= 3).then_some(q)
    });
    assert_eq!(q["items"][0]["step_s"], 1.0);
    // bad queries name the parameter and change nothing
    for (path, field) in [
        ("/v1/metrics/query", "name"),
        ("/v1/metrics/query?name=x&since_s=-5", "since_s"),
        ("/v1/metrics/query?name=x&from=yesterday", "from"),
        ("/v1/metrics/query?name=x&match=nolabel", "match"),
        ("/v1/metrics/query?name=x&colour=red", "colour"),
        ("/v1/alerts?state=angry", "state"),
    ] {
        let a = d.get(path);
        assert_eq!(a.status, 422, "{path}");
        assert_eq!(a.body["errors"][0]["field"], field, "{path}: {}", a.body);
    }
    // /metrics: host, agent-free, self series; OpenMetrics on request
    let (_, text) = d.get_text("/metrics");
    for family in [
        "# TYPE qm_host_memory_used_bytes gauge",
        "# TYPE qm_host_cpu_seconds_total counter",
        "# TYPE qm_process_cpu_seconds_total counter",
        "# TYPE qm_monitor_collection_seconds gauge",
    ] {
        assert!(text.contains(family), "{family} missing");
    }
    assert!(!text.contains("_per_second"), "rates are not exported");
    let open = Command::new("curl")
        .args([
            "-s",
            "-i",
            "-H",
            "Accept: application/openmetrics-text; version=1.0.0",
            "-H",
            &format!("Authorization: {}", d.bearer()),
        ])
        .arg(format!("{}/metrics", d.base))
        .output();
    if let Some(o) = open.ok().filter(|o| o.status.success()) {
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("application/openmetrics-text"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
        assert!(text.contains("# TYPE qm_allocation_decisions counter\n"));
        assert!(text.contains("qm_allocation_decisions_total{result=\"granted\"} 0\n"));
    } else {
        println!("skipped the OpenMetrics check: curl is not installed");
    }
    // qm metrics export: CSV
    let csv = dir.join("mem.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_qm"))
        .args(["--server", &d.base, "metrics", "export"])
        .args(["--name", "qm_host_memory_used_bytes", "--since", "60", "-f"])
        .arg(&csv)
        .output()
        .expect("qm metrics export");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(&csv).expect("csv written");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("time,name,value"));
    let row: Vec<&str> = lines.next().expect("a row").split(',').collect();
    assert_eq!(row[1], "qm_host_memory_used_bytes");
    assert!(row[2].parse::<f64>().is_ok_and(|v| v > 0.0), "{csv}");
    d.stop();
}

/// A minimal proc tree the host collector reads: memory with `used_ratio` as given.
fn write_meminfo(root: &Path, used_ratio: f64) {
    let total_kib = 1_048_576u64;
    let available = (total_kib as f64 * (1.0 - used_ratio)) as u64;
    let proc = root.join("proc");
    std::fs::create_dir_all(&proc).expect("proc");
    let tmp = proc.join("meminfo.tmp");
    std::fs::write(
        &tmp,
        format!(
            "MemTotal: {total_kib} kB\nMemFree: {available} kB\nMemAvailable: {available} kB\n\
             Buffers: 0 kB\nCached: 0 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
        ),
    )
    .expect("meminfo");
    std::fs::rename(tmp, proc.join("meminfo")).expect("rename");
}

/// An HTTP server that answers 500 to the first POST and 204 to the rest, sending each body.
fn webhook_receiver() -> (String, mpsc::Receiver<(u16, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let status = if n == 0 { 500 } else { 204 };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = tx.send((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
        }
    });
    (url, rx)
}

#[test]
fn alerts_fire_and_resolve_with_webhook_retries_and_exec_hook() {
    let dir = temp_dir("alerts");
    let root = dir.join("root");
    write_meminfo(&root, 0.95);
    let (url, deliveries) = webhook_receiver();
    let hook_out = dir.join("hook.jsonl");
    let config = format!(
        "[monitor]\ninterval_s = 0.1\nroot = {root:?}\n\
         [alerts]\ndefault_rules = false\nexec = [\"sh\", \"-c\", \"cat >> {hook}; echo >> {hook}\"]\n\
         [[alerts.webhooks]]\nurl = {url:?}\nbackoff_s = 0.1\n\
         [[alerts.rules]]\nname = \"memory-high\"\nseries = \"qm_host_memory_used_ratio\"\n\
         op = \">\"\nthreshold = 0.9\nclear = 0.8\nfor_s = 0.3\nseverity = \"critical\"\n\
         labels = {{ team = \"infra\" }}\nsummary = \"memory is nearly full\"\n",
        hook = hook_out.display()
    );
    std::fs::write(dir.join("qm.toml"), config).expect("config");
    let d = Daemon::start(
        &dir.join("data"),
        &[
            "--config",
            dir.join("qm.toml").to_str().expect("utf-8"),
            "--capacity",
            "cpu=1,memory=1Gi",
        ],
    );
    let firing = eventually("the alert to fire", 20, || {
        let a = d.get("/v1/alerts?state=firing").body;
        a["items"].as_array().and_then(|i| i.first().cloned())
    });
    assert_eq!(firing["rule"], "memory-high");
    assert_eq!(firing["severity"], "critical");
    assert_eq!(firing["labels"]["team"], "infra");
    assert!((firing["value"].as_f64().expect("value") - 0.95).abs() < 1e-3);
    // the webhook refused the first attempt; the retry delivered it
    let (s1, first) = deliveries
        .recv_timeout(Duration::from_secs(10))
        .expect("attempt 1");
    let (s2, again) = deliveries
        .recv_timeout(Duration::from_secs(10))
        .expect("attempt 2");
    assert_eq!((s1, s2), (500, 204));
    assert_eq!(first, again);
    assert_eq!(first["type"], "alert.firing");
    assert_eq!(first["alert"]["rule"], "memory-high");
    // in the clear band (0.8 < 0.85 < 0.9) it keeps firing; below clear it resolves
    write_meminfo(&root, 0.85);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.get("/v1/alerts?state=firing").body["items"][0]["rule"],
        "memory-high"
    );
    write_meminfo(&root, 0.5);
    let (_, resolved) = deliveries
        .recv_timeout(Duration::from_secs(10))
        .expect("resolved");
    assert_eq!(resolved["type"], "alert.resolved");
    assert_eq!(
        resolved["alert"]["fingerprint"],
        first["alert"]["fingerprint"]
    );
    assert!(
        deliveries.recv_timeout(Duration::from_millis(500)).is_err(),
        "one notification per transition"
    );
    let all = d.get("/v1/alerts").body;
    assert_eq!(all["items"][0]["state"], "resolved", "{all}");
    // the exec hook saw both transitions, in order
    let hooked = eventually("the hook to run twice", 20, || {
        let text = std::fs::read_to_string(&hook_out).unwrap_or_default();
        let kinds: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| v["type"].as_str().unwrap_or_default().to_owned())
            .collect();
        (kinds.len() == 2).then_some(kinds)
    });
    assert_eq!(hooked, ["alert.firing", "alert.resolved"]);
    d.stop();
}

#[test]
fn pressure_closes_and_reopens_admission() {
    let dir = temp_dir("gate");
    let root = dir.join("root");
    write_meminfo(&root, 0.5);
    let config = format!(
        "[monitor]\ninterval_s = 0.1\nroot = {root:?}\n[alerts]\ndefault_rules = false\n\
         [pressure]\nmin_dwell_s = 0.2\n"
    );
    std::fs::write(dir.join("qm.toml"), config).expect("config");
    let d = Daemon::start(
        &dir.join("data"),
        &[
            "--config",
            dir.join("qm.toml").to_str().expect("utf-8"),
            "--capacity",
            "cpu=4,memory=4Gi",
        ],
    );
    let ask = |body: &str| d.post("/v1/allocations", body);
    let burstable = r#"{"agent":"a","resources":{"cpu":"100m"}}"#;
    let best_effort = r#"{"agent":"b","resources":{}}"#;
    eventually("ok pressure", 20, || {
        (d.get("/v1/pressure").body["level"] == "ok").then_some(())
    });
    assert_eq!(ask(burstable).status, 201);
    // warning (85% used): best-effort work waits, the rest is admitted
    write_meminfo(&root, 0.85);
    eventually("warning", 20, || {
        (d.get("/v1/pressure").body["level"] == "warning").then_some(())
    });
    assert_eq!(
        d.get("/v1/pressure").body["admission"],
        "best-effort-paused"
    );
    let paused = ask(best_effort);
    assert_eq!(paused.status, 503, "{}", paused.body);
    assert_eq!(paused.body["code"], "admission_paused");
    assert_eq!(paused.body["retry_after_s"], 5);
    assert_eq!(ask(burstable).status, 201);
    // critical (97%): nothing is admitted, and nothing changed
    write_meminfo(&root, 0.97);
    eventually("critical", 20, || {
        (d.get("/v1/pressure").body["level"] == "critical").then_some(())
    });
    assert_eq!(d.get("/v1/pressure").body["admission"], "paused");
    let before = d.get("/v1/allocations").body["items"]
        .as_array()
        .map_or(0, Vec::len);
    let paused = ask(burstable);
    assert_eq!(paused.status, 503);
    assert!(
        paused.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("memory")),
        "{}",
        paused.body
    );
    let after = d.get("/v1/allocations").body["items"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(before, after);
    // eased: admission reopens after the dwell
    write_meminfo(&root, 0.3);
    eventually("ok again", 20, || {
        (d.get("/v1/pressure").body["level"] == "ok").then_some(())
    });
    assert_eq!(ask(best_effort).status, 201);
    d.stop();
}
