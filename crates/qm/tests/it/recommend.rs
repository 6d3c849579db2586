//! Right-sizing end to end, with real agents in cgroups and the monitor reading them five times
//! a second: an agent that asks for 1 GiB and holds about 100 MiB is recommended 100-200 MiB;
//! an agent OOM-killed at its 64 MiB limit is recommended more than that limit; a fleet gets
//! its members' median; `qm recommend` prints them; a bad target is refused naming the field.

use std::process::Command;

use serde_json::{Value, json};

use crate::daemon::{Daemon, eventually, temp_dir};

const MI: f64 = 1_048_576.0;

pub(crate) fn bytes(v: &Value) -> f64 {
    let s = v.as_str().expect("a quantity");
    let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = n.parse().expect("a number");
    n * match unit {
        "Ki" => 1024.0,
        "Mi" => MI,
        "Gi" => 1024.0 * MI,
        _ => 1.0,
    }
}

/// A daemon whose agents (under `qm-it-<tag>`) are read five times a second and
/// recommended for after five samples.
fn learning_daemon(tag: &str) -> Daemon {
    learning_daemon_with(tag, "", &[])
}

/// The same, with more `[recommender]` settings and more flags.
fn learning_daemon_with(tag: &str, recommender: &str, flags: &[&str]) -> Daemon {
    let dir = temp_dir(tag);
    let config = dir.join("qm.toml");
    std::fs::write(
        &config,
        format!(
            "[agents]\ncgroup_parent = \"qm-it-{tag}\"\n\
             [monitor]\ninterval_s = 0.2\nagent_interval_s = 0.2\n\
             [recommender]\nmin_samples = 5\n{recommender}"
        ),
    )
    .expect("config");
    let mut args = vec![
        "--config",
        config.to_str().expect("utf-8"),
        "--capacity",
        "cpu=4,memory=8Gi",
    ];
    args.extend_from_slice(flags);
    Daemon::start(&dir.join("data"), &args)
}

/// `--strategy learned`: once agents labelled `qm.dev/template: coder` have taught what a
/// coder holds (about 100 MiB of the 1 GiB each asks for), a request labelled so is admitted
/// at that size, within `max_overcommit` of the request, and says so in `qm.dev/sized`; one
/// without the label keeps its size; the template's recommendation is listed. What was
/// learned outlives a restart: with no agent left, the template still sizes requests.
#[test]
fn the_learned_strategy_admits_a_template_at_what_its_agents_use() {
    if !crate::agents::can_confine() {
        return;
    }
    let d = learning_daemon_with(
        "learned",
        "min_confidence = 0\nmax_overcommit = 8\n",
        &["--strategy", "learned"],
    );
    let coder = d.post(
        "/v1/agents",
        &json!({
            "name": "coder-a",
            "labels": { "qm.dev/template": "coder" },
            "command": ["python3", "-c",
                "b = bytearray(100 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nimport time; time.sleep(300)"],
            "resources": { "cpu": "500m", "memory": "1Gi" }
        })
        .to_string(),
    );
    assert_eq!(coder.status, 201, "{:?}", coder.body);
    let learned = eventually("the coder template's recommendation", 30, || {
        let r = d.get("/v1/recommendations?target=template/coder");
        let item = r.body["items"].as_array()?.first()?.clone();
        (bytes(&item["resources"]["memory"]) > 100.0 * MI).then_some(item)
    });
    assert!(
        bytes(&learned["resources"]["memory"]) < 200.0 * MI,
        "{learned}"
    );
    let ask = |agent: &str, labels: Value| {
        d.post(
            "/v1/allocations",
            &json!({
                "agent": agent,
                "resources": { "cpu": "500m", "memory": "1Gi" },
                "labels": labels
            })
            .to_string(),
        )
    };
    let sized = ask("coder-b", json!({ "qm.dev/template": "coder" }));
    assert_eq!(sized.status, 201, "{:?}", sized.body);
    let mem = bytes(&sized.body["resources"]["memory"]);
    // what a coder holds, but never below 1 GiB / max_overcommit (128 MiB)
    assert!((128.0 * MI..=200.0 * MI).contains(&mem), "{:?}", sized.body);
    let why = sized.body["labels"]["qm.dev/sized"].as_str().unwrap_or("");
    assert!(
        why.starts_with("template/coder") && why.contains("memory 1Gi ->"),
        "{:?}",
        sized.body
    );
    let plain = ask("other", json!({}));
    assert_eq!(plain.status, 201, "{:?}", plain.body);
    assert_eq!(plain.body["resources"]["memory"], "1Gi", "{:?}", plain.body);
    assert!(plain.body["labels"].get("qm.dev/sized").is_none());
    for a in [&sized, &plain] {
        let id = a.body["id"].as_str().expect("an id");
        assert_eq!(d.delete(&format!("/v1/allocations/{id}")).status, 200);
    }
    assert_eq!(d.delete("/v1/agents/coder-a").status, 200);
    let before = d.get("/v1/recommendations?target=template/coder").body["items"][0].clone();
    // restarted with no agent: what was learned is still there, and still sizes
    let d = d.restart();
    let r = d.get("/v1/recommendations?target=template/coder");
    let item = r.body["items"][0].clone();
    assert_eq!(item["resources"], before["resources"], "{:?}", r.body);
    assert_eq!(item["samples"], before["samples"], "{:?}", r.body);
    let again = d.post(
        "/v1/allocations",
        &json!({
            "agent": "coder-c",
            "resources": { "cpu": "500m", "memory": "1Gi" },
            "labels": { "qm.dev/template": "coder" }
        })
        .to_string(),
    );
    assert_eq!(again.status, 201, "{:?}", again.body);
    let mem = bytes(&again.body["resources"]["memory"]);
    assert!((128.0 * MI..=200.0 * MI).contains(&mem), "{:?}", again.body);
    d.stop();
}

#[test]
fn agents_are_recommended_what_they_use_and_more_after_an_oom_kill() {
    if !crate::agents::can_confine() {
        return;
    }
    let d = learning_daemon("recommend");
    let holder = d.post(
        "/v1/agents",
        &json!({
            "name": "holder",
            "command": ["python3", "-c",
                "b = bytearray(100 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nimport time; time.sleep(300)"],
            "resources": { "cpu": "500m", "memory": "1Gi" }
        })
        .to_string(),
    );
    assert_eq!(holder.status, 201, "{:?}", holder.body);
    // grows 8 MiB every 0.2 s until its 64 MiB limit kills it
    let leaker = d.post(
        "/v1/agents",
        &json!({
            "name": "oom",
            "command": ["python3", "-c",
                "import time\nh = []\nwhile True:\n    h.append(bytearray(8 * 1024 * 1024))\n    h[-1][::4096] = b'x' * len(h[-1][::4096])\n    time.sleep(0.2)"],
            "resources": { "cpu": "100m", "memory": "32Mi" },
            "limits": { "memory": "64Mi" },
            "restart": "never"
        })
        .to_string(),
    );
    assert_eq!(leaker.status, 201, "{:?}", leaker.body);
    let holder_rec = eventually("the holder's recommendation", 30, || {
        let r = d.get("/v1/recommendations?target=agent/holder");
        let item = r.body["items"].as_array()?.first()?.clone();
        // past its allocation: the recommendation follows what it holds
        (bytes(&item["resources"]["memory"]) > 100.0 * MI).then_some(item)
    });
    let mem = bytes(&holder_rec["resources"]["memory"]);
    assert!((100.0 * MI..200.0 * MI).contains(&mem), "{holder_rec}");
    assert!(
        holder_rec["samples"].as_u64().unwrap_or(0) >= 5,
        "{holder_rec}"
    );
    assert_eq!(
        holder_rec["limits"]["memory"],
        holder_rec["resources"]["memory"]
    );
    eventually("the leaker killed", 30, || {
        let a = d.get("/v1/agents/oom").body;
        (a["oom_killed"] == true).then_some(())
    });
    // the kill bumps it past the limit by [recommender] oom_bump (1.2)
    let oom_rec = eventually(
        "the leaker's recommendation, bumped past its limit",
        20,
        || {
            let r = d.get("/v1/recommendations?target=agent/oom");
            let item = r.body["items"].as_array()?.first()?.clone();
            (bytes(&item["resources"]["memory"]) >= 64.0 * MI * 1.2 * 0.99).then_some(item)
        },
    );
    assert!(
        bytes(&oom_rec["resources"]["memory"]) < 256.0 * MI,
        "{oom_rec}"
    );
    // a fleet's template: its members' median
    let fleet = d.post(
        "/v1/fleets",
        &json!({
            "name": "fr", "replicas": 3,
            "template": {
                "name": "fr",
                "command": ["python3", "-c",
                    "b = bytearray(50 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nimport time; time.sleep(300)"],
                "resources": { "cpu": "100m", "memory": "512Mi" }
            }
        })
        .to_string(),
    );
    assert_eq!(fleet.status, 201, "{:?}", fleet.body);
    let fleet_rec = eventually("the fleet's recommendation", 30, || {
        let r = d.get("/v1/recommendations?target=fleet/fr");
        let item = r.body["items"].as_array()?.first()?.clone();
        (item["reason"].as_str()?.contains("median of 3")
            && bytes(&item["resources"]["memory"]) > 50.0 * MI)
            .then_some(item)
    });
    assert!(
        bytes(&fleet_rec["resources"]["memory"]) < 120.0 * MI,
        "{fleet_rec}"
    );
    assert_eq!(d.delete("/v1/fleets/fr").status, 200);
    // as series for Prometheus
    let (status, text) = d.get_text("/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("qm_recommendation_memory_bytes{target=\"agent/holder\"}")
            && text.contains("# TYPE qm_recommendation_cpu_cores gauge"),
        "{text}"
    );
    // all of them, and from the shell
    let all = d.get("/v1/recommendations").body;
    assert!(
        all["items"].as_array().is_some_and(|l| l.len() >= 2),
        "{all}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_qm"))
        .args(["--server", &d.base, "--token", &d.token, "recommend"])
        .output()
        .expect("qm recommend");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("agent/holder") && text.contains("agent/oom"),
        "{text}"
    );
    // a bad target names the field; an unknown one is simply not there
    let bad = d.get("/v1/recommendations?target=holder");
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert!(bad.body.to_string().contains("target"), "{:?}", bad.body);
    let none = d.get("/v1/recommendations?target=agent/nobody");
    assert_eq!(none.body["items"], json!([]));
    assert_eq!(d.delete("/v1/agents/holder").status, 200);
    d.stop();
}

/// `vertical.mode = auto`: a fleet member that asked for 1 GiB and holds about 40 MiB is
/// resized in place: its allocation and its cgroup's memory limit come down, its process is
/// the same (no restart), and `fleet.resized` says so.
#[test]
fn a_fleet_in_auto_is_resized_in_place_without_a_restart() {
    if !crate::agents::can_confine() {
        return;
    }
    let d = learning_daemon("vertical");
    let fleet = d.post(
        "/v1/fleets",
        &json!({
            "name": "va", "replicas": 1,
            "vertical": { "mode": "auto", "min_interval_s": 1 },
            "template": {
                "name": "va",
                "command": ["python3", "-c",
                    "b = bytearray(40 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nimport time; time.sleep(300)"],
                "resources": { "cpu": "500m", "memory": "1Gi" },
                "limits": { "memory": "1Gi" }
            }
        })
        .to_string(),
    );
    assert_eq!(fleet.status, 201, "{:?}", fleet.body);
    let (pid, alloc) = eventually("the member running", 20, || {
        let a = d.get("/v1/agents/va-0").body;
        (a["state"] == "running").then(|| {
            (
                a["pid"].as_u64().expect("a pid"),
                a["allocation"].as_str().expect("an allocation").to_owned(),
            )
        })
    });
    let resized = eventually("the member resized in place", 30, || {
        let a = d.get(&format!("/v1/allocations/{alloc}")).body;
        let mem = bytes(&a["resources"]["memory"]);
        (mem < 200.0 * MI).then_some(a)
    });
    assert!(
        bytes(&resized["resources"]["memory"]) > 40.0 * MI,
        "{resized}"
    );
    let agent = d.get("/v1/agents/va-0").body;
    assert_eq!(agent["pid"], pid, "the same process: {agent}");
    assert_eq!(agent["restarts"], 0, "{agent}");
    assert_eq!(agent["state"], "running", "{agent}");
    assert_eq!(
        agent["spec"]["resources"]["memory"], resized["resources"]["memory"],
        "{agent}"
    );
    // the cgroup's limit came down with it (v1 memory controller, or cgroup2)
    let cgroup = agent["cgroup"].as_str().expect("a cgroup").to_owned();
    let limit = ["memory.limit_in_bytes", "memory.max"]
        .iter()
        .find_map(|f| {
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory/{cgroup}/{f}"))
                .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/{cgroup}/{f}")))
                .ok()
        })
        .expect("a memory limit file");
    let limit: f64 = limit.trim().parse().expect("a number");
    assert!(limit < 200.0 * MI && limit > 40.0 * MI, "limit {limit}");
    let seen =
        crate::events::read_events(format!("{}/v1/events?since=0", d.base), d.bearer(), 1000)
            .recv_timeout(std::time::Duration::from_secs(15))
            .expect("the events");
    assert!(
        seen.iter()
            .any(|(kind, _, data)| kind == "fleet.resized" && data.contains("va-0")),
        "{seen:?}"
    );
    assert_eq!(d.delete("/v1/fleets/va").status, 200);
    d.stop();
}
