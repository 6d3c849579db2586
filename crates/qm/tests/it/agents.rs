//! Agents end to end, as root on this host's cgroups (v1 controllers plus the cgroup2 mount):
//! an agent over its memory limit is OOM-killed and reported as such; a 200m cpu limit holds
//! a busy loop near 0.2 cores; an agent survives `kill -9` of the daemon and is re-adopted;
//! failures restart with backoff and a missed heartbeat restarts; `qm exec` confines,
//! propagates the exit code and releases; a fleet replaces a dead member and scales on a
//! pushed metric. Where cgroups cannot be written (not root), the tests that need them print
//! one line and return.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::{Daemon, eventually, temp_dir};

pub(crate) fn can_confine() -> bool {
    let ok = rustix::process::geteuid().is_root()
        && (Path::new("/sys/fs/cgroup/memory").is_dir()
            || Path::new("/sys/fs/cgroup/cgroup.controllers").is_file());
    if !ok {
        println!("skipped: needs root and writable cgroups");
    }
    ok
}

const CONFIG: &str = "[agents]\ncgroup_parent = \"qm-it\"\nbackoff_initial_s = 0.2\nbackoff_max_s = 1\n\
                      [monitor]\ninterval_s = 0.2\nagent_interval_s = 0.2\n";

fn start(tag: &str) -> (Daemon, std::path::PathBuf) {
    let dir = temp_dir(tag);
    let config = dir.join("qm.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let d = Daemon::start(
        &dir.join("data"),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--capacity",
            "cpu=4,memory=4Gi",
        ],
    );
    (d, dir)
}

fn agent(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/v1/agents/{id}")).body
}

fn state_is(d: &Daemon, id: &str, state: &str) -> Option<Value> {
    let a = agent(d, id);
    (a["state"] == state).then_some(a)
}

/// Whether the process `pid` runs (a zombie does not).
pub(crate) fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn an_agent_over_its_memory_limit_is_oom_killed_and_reported() {
    if !can_confine() {
        return;
    }
    let (d, _) = start("oom");
    let a = d.post(
        "/v1/agents",
        &json!({
            "name": "hog",
            "command": ["python3", "-c", "b = bytearray(256 * 1024 * 1024); import time; time.sleep(10)"],
            "resources": { "cpu": "100m", "memory": "64Mi" },
            "limits": { "memory": "64Mi" },
            "restart": "never",
        })
        .to_string(),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["qos"], "burstable");
    assert!(
        a.body["cgroup"]
            .as_str()
            .is_some_and(|c| c.ends_with("qm-it/hog"))
    );
    let ended = eventually("the OOM kill", 20, || state_is(&d, "hog", "failed"));
    assert_eq!(ended["oom_killed"], true, "{ended}");
    assert_eq!(ended["signal"], 9);
    assert!(ended["reason"].as_str().is_some_and(|r| r.contains("OOM")));
    // its allocation is released
    let alloc = ended["allocation"].as_str().expect("allocation");
    assert_eq!(
        d.get(&format!("/v1/allocations/{alloc}")).body["state"],
        "released"
    );
    d.stop();
}

/// CPU seconds a process has used, from /proc.
fn cpu_seconds(pid: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

#[test]
fn a_cpu_limit_holds_a_busy_loop() {
    if !can_confine() {
        return;
    }
    let (d, _) = start("cpu");
    let a = d.post(
        "/v1/agents",
        &json!({
            "name": "spin",
            "command": ["sh", "-c", "while :; do :; done"],
            "resources": { "cpu": "200m", "memory": "32Mi" },
            "limits": { "cpu": "200m", "memory": "32Mi" },
        })
        .to_string(),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["qos"], "guaranteed");
    let pid = a.body["pid"].as_u64().expect("pid");
    std::thread::sleep(Duration::from_millis(500));
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let cores = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
    // the cap is the point; the lower bound only says the loop ran (the machine may be busy)
    assert!((0.02..0.3).contains(&cores), "{cores} cores");
    // the monitor reads the agent from its cgroup
    let usage = eventually("the agent's usage", 10, || {
        agent(&d, "spin")["usage"]["cpu"]
            .as_str()
            .map(str::to_owned)
    });
    assert!(!usage.is_empty());
    let stopped = d.delete("/v1/agents/spin?grace_s=1");
    assert_eq!(stopped.status, 200);
    eventually("stopped", 10, || state_is(&d, "spin", "stopped"));
    assert!(!alive(pid));
    d.stop();
}

#[test]
fn agents_outlive_the_daemon_and_are_re_adopted() {
    let (d, dir) = start("survive");
    let a = d.post(
        "/v1/agents",
        &json!({
            "name": "sleeper",
            "command": ["sleep", "300"],
            "resources": { "cpu": "100m", "memory": "16Mi" },
        })
        .to_string(),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let pid = a.body["pid"].as_u64().expect("pid");
    let short = d.post(
        "/v1/agents",
        &json!({
            "name": "short",
            "command": ["sleep", "1"],
            "resources": { "cpu": "100m" },
            "restart": "never",
        })
        .to_string(),
    );
    assert_eq!(short.status, 201);
    d.kill9();
    assert!(alive(pid), "the agent survived the daemon");
    std::thread::sleep(Duration::from_millis(1500));
    let d = Daemon::start(
        &dir.join("data"),
        &[
            "--config",
            dir.join("qm.toml").to_str().expect("utf-8"),
            "--capacity",
            "cpu=4,memory=4Gi",
        ],
    );
    let back = agent(&d, "sleeper");
    assert_eq!(back["state"], "running", "{back}");
    assert_eq!(back["pid"].as_u64(), Some(pid));
    // what ended while the daemon was down is recorded as ended
    let ended = eventually("short to be recorded", 10, || {
        let a = agent(&d, "short");
        (a["state"] != "running").then_some(a)
    });
    assert!(
        ended["reason"]
            .as_str()
            .is_some_and(|r| r.contains("down") || r.contains("ended")),
        "{ended}"
    );
    // the state document lists agents; importing it back leaves them running
    let state = d.get("/v1/state").body;
    assert!(
        state["agents"].as_array().is_some_and(|a| a
            .iter()
            .any(|a| a["name"] == "sleeper" && a["pid"].as_u64() == Some(pid))),
        "{state}"
    );
    assert_eq!(d.post("/v1/state", &state.to_string()).status, 200);
    assert_eq!(agent(&d, "sleeper")["state"], "running");
    // supervision resumed: stopping works and the process goes
    assert_eq!(d.delete("/v1/agents/sleeper?grace_s=1").status, 200);
    eventually("stopped", 10, || state_is(&d, "sleeper", "stopped"));
    assert!(!alive(pid));
    d.stop();
}

#[test]
fn failures_restart_with_backoff_and_missed_heartbeats_restart() {
    let (d, _) = start("restart");
    let a = d.post(
        "/v1/agents",
        &json!({
            "name": "crasher",
            "command": ["sh", "-c", "echo started; sleep 0.1; exit 3"],
            "resources": { "cpu": "100m" },
            "restart": "on-failure",
        })
        .to_string(),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let looping = eventually("three restarts", 20, || {
        let a = agent(&d, "crasher");
        (a["restarts"].as_u64() >= Some(3)).then_some(a)
    });
    assert_eq!(looping["exit_code"].as_i64().unwrap_or(3), 3);
    // the count survives a restart of the daemon and goes on from there
    let before = agent(&d, "crasher")["restarts"].as_u64().unwrap_or(0);
    let d = d.restart();
    assert!(agent(&d, "crasher")["restarts"].as_u64() >= Some(before));
    eventually("a restart counted after the daemon's", 20, || {
        let a = agent(&d, "crasher");
        let now = a["restarts"].as_u64().unwrap_or(0);
        assert!(now >= before, "the count fell from {before} to {now}");
        (now > before).then_some(a)
    });
    let logs = d.get("/v1/agents/crasher/logs?tail=2").body;
    assert_eq!(logs["stdout"][1], "started", "{logs}");
    assert_eq!(d.delete("/v1/agents/crasher").status, 200);
    eventually("stopped", 10, || state_is(&d, "crasher", "stopped"));
    // a heartbeat check that is never fed: unhealthy, then restarted
    let h = d.post(
        "/v1/agents",
        &json!({
            "name": "silent",
            "command": ["sleep", "300"],
            "resources": { "cpu": "100m" },
            "health": { "heartbeat_s": 0.3, "failure_threshold": 1 },
        })
        .to_string(),
    );
    assert_eq!(h.status, 201, "{}", h.body);
    let first = h.body["pid"].as_u64().expect("pid");
    let restarted = eventually("a restart for the missed heartbeat", 20, || {
        let a = agent(&d, "silent");
        (a["restarts"].as_u64() >= Some(1) && a["state"] == "running").then_some(a)
    });
    assert_ne!(restarted["pid"].as_u64(), Some(first));
    assert!(!alive(first));
    // fed, it stays healthy
    for _ in 0..10 {
        assert_eq!(d.post("/v1/agents/silent/heartbeat", "{}").status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(agent(&d, "silent")["health"], "healthy");
    d.delete("/v1/agents/silent?grace_s=0");
    d.stop();
}

#[test]
fn qm_exec_confines_propagates_the_exit_code_and_releases() {
    if !can_confine() {
        return;
    }
    let (d, dir) = start("exec");
    let seen = dir.join("cgroup.txt");
    let o = Command::new(env!("CARGO_BIN_EXE_qm"))
        .args([
            "--server", &d.base, "exec", "--cpu", "100m", "--memory", "64Mi", "--name", "wrapped",
            "--",
        ])
        .args([
            "sh",
            "-c",
            &format!("cat /proc/self/cgroup > {}; exit 7", seen.display()),
        ])
        .output()
        .expect("qm exec");
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let cgroups = std::fs::read_to_string(&seen).expect("the child ran");
    assert!(
        cgroups
            .lines()
            .any(|l| l.contains(":memory:") && l.ends_with("/qm-it/wrapped")),
        "{cgroups}"
    );
    let allocs = d.get("/v1/allocations?agent=wrapped").body;
    assert_eq!(allocs["items"][0]["state"], "released", "{allocs}");
    // SIGTERM to the wrapper reaches the command, whose exit code comes back
    let mut wrapper = Command::new(env!("CARGO_BIN_EXE_qm"))
        .args([
            "--server", &d.base, "exec", "--cpu", "100m", "--name", "trapper", "--",
        ])
        .args(["sh", "-c", "trap 'exit 42' TERM; sleep 30 & wait"])
        .spawn()
        .expect("qm exec");
    eventually("the command to run", 10, || {
        state_is(&d, "trapper", "running")
    });
    std::thread::sleep(Duration::from_millis(200));
    let _ = Command::new("kill")
        .args(["-TERM", &wrapper.id().to_string()])
        .status();
    let status = wrapper.wait().expect("wait");
    assert_eq!(status.code(), Some(42));
    // a command that cannot run
    let o = Command::new(env!("CARGO_BIN_EXE_qm"))
        .args([
            "--server",
            &d.base,
            "exec",
            "--cpu",
            "100m",
            "--",
            "/no/such/program",
        ])
        .output()
        .expect("qm exec");
    assert_ne!(o.status.code(), Some(0));
    d.stop();
}

#[test]
fn a_fleet_replaces_a_dead_member_and_scales_on_a_pushed_metric() {
    let (d, _) = start("fleet");
    let f = d.post(
        "/v1/fleets",
        &json!({
            "name": "coders",
            "replicas": 2,
            "template": {
                "name": "x",
                "command": ["sleep", "300"],
                "resources": { "cpu": "100m", "memory": "16Mi" },
                "restart": "never",
            },
            "autoscale": { "min": 1, "max": 4, "metric": "custom", "target": 1.0, "scale_down_stabilization_s": 0 },
        })
        .to_string(),
    );
    assert_eq!(f.status, 201, "{}", f.body);
    let members = |d: &Daemon| -> Vec<Value> {
        d.get("/v1/agents").body["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|a| a["fleet"] == "coders" && a["state"] == "running")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let two = eventually("two members", 10, || {
        let m = members(&d);
        (m.len() == 2).then_some(m)
    });
    // a member dies: it is replaced by a new one
    let victim = two[0]["pid"].as_u64().expect("pid");
    let victim_id = two[0]["id"].as_str().expect("id").to_owned();
    let _ = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    eventually("a replacement", 10, || {
        let m = members(&d);
        (m.len() == 2 && m.iter().all(|a| a["id"] != victim_id.as_str())).then_some(())
    });
    // a pushed metric of twice the target doubles the fleet
    assert_eq!(
        d.post("/v1/fleets/coders/metric", "{\"value\": 2.0}")
            .status,
        200
    );
    eventually("four members", 10, || {
        (members(&d).len() == 4).then_some(())
    });
    assert_eq!(d.get("/v1/fleets/coders").body["replicas"], 4);
    // and a low one shrinks it to the minimum
    assert_eq!(
        d.post("/v1/fleets/coders/metric", "{\"value\": 0.1}")
            .status,
        200
    );
    eventually("one member", 10, || (members(&d).len() == 1).then_some(()));
    let bad = d.post("/v1/fleets/coders/metric", "{\"value\": -1}");
    assert_eq!(bad.status, 422);
    assert_eq!(d.delete("/v1/fleets/coders").status, 200);
    eventually("no members", 10, || members(&d).is_empty().then_some(()));
    d.stop();
}

#[test]
fn bad_agent_requests_name_the_field_and_change_nothing() {
    let (d, _) = start("bad-agents");
    for (body, field) in [
        (json!({"name": "a b", "command": ["true"]}), "name"),
        (json!({"name": "a"}), "command"),
        (json!({"name": "a", "command": ["true"], "pid": 1}), "pid"),
        (
            json!({"name": "a", "command": ["true"], "restart": "sometimes"}),
            "restart",
        ),
        (
            json!({"name": "a", "command": ["true"], "resources": {"memory": "-1Gi"}}),
            "resources.memory",
        ),
        (
            json!({"name": "a", "command": ["true"], "colour": 1}),
            "colour",
        ),
        (json!({"name": "a", "pid": 999_999_999}), "pid"),
        (
            json!({"name": "a", "command": ["true"], "health": {"http": "ftp://x"}}),
            "health.http",
        ),
        (
            json!({"name": "a", "command": ["true"],
                   "health": {"http": "http://127.0.0.1:1/", "period_s": 1, "timeout_s": 5}}),
            "health.timeout_s",
        ),
    ] {
        let a = d.post("/v1/agents", &body.to_string());
        assert_eq!(a.status, 422, "{body}: {}", a.body);
        let named = a.body["errors"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["field"].as_str().is_some_and(|f| f.contains(field)))
        }) || a.body["detail"].as_str().is_some_and(|d| d.contains(field));
        assert!(named, "{body}: {}", a.body);
    }
    assert_eq!(d.get("/v1/agents").body["items"], json!([]));
    assert_eq!(d.get("/v1/agents/nobody").status, 404);
    assert_eq!(d.delete("/v1/agents/nobody").status, 404);
    let too_big = d.post(
        "/v1/agents",
        &json!({"name": "big", "command": ["true"], "resources": {"cpu": "64"}, "queue": false})
            .to_string(),
    );
    assert_eq!(too_big.status, 409, "{}", too_big.body);
    d.stop();
}

/// Kills what is left in a test's cgroup parent and removes its groups, even when the test
/// panics (agents outlive their daemon by design).
struct Groups(String);

impl Drop for Groups {
    fn drop(&mut self) {
        let hierarchies: Vec<std::path::PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(&self.0))
            .filter(|p| p.is_dir())
            .collect();
        for h in &hierarchies {
            for g in std::fs::read_dir(h).into_iter().flatten().flatten() {
                let procs =
                    std::fs::read_to_string(g.path().join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        for h in &hierarchies {
            for g in std::fs::read_dir(h).into_iter().flatten().flatten() {
                if g.path().is_dir() {
                    let _ = std::fs::remove_dir(g.path());
                }
            }
            let _ = std::fs::remove_dir(h);
        }
    }
}

/// A daemon in a 1 GiB world (`--capacity memory=1Gi`) with fast collection, its agents under
/// a cgroup parent of its own, for the pressure scenarios; `extra` is added to `[pressure]`.
/// Bind as `let (_groups, d)`: the daemon is dropped first, then the groups are cleared.
fn pressure_daemon(tag: &str, dwell_s: f64, extra: &str) -> (Groups, Daemon) {
    pressure_daemon_every(tag, 0.2, 0.2, dwell_s, extra)
}

/// [`pressure_daemon`] collecting the host every `interval_s` and the agents every
/// `agent_interval_s`.
fn pressure_daemon_every(
    tag: &str,
    interval_s: f64,
    agent_interval_s: f64,
    dwell_s: f64,
    extra: &str,
) -> (Groups, Daemon) {
    let parent = format!("qm-it-{tag}-{}", std::process::id());
    let dir = temp_dir(tag);
    let config = dir.join("qm.toml");
    std::fs::write(
        &config,
        format!(
            "[agents]\ncgroup_parent = \"{parent}\"\n[monitor]\ninterval_s = {interval_s}\n\
             agent_interval_s = {agent_interval_s}\n\
             [alerts]\ndefault_rules = false\n[pressure]\nmin_dwell_s = {dwell_s}\n{extra}"
        ),
    )
    .expect("config");
    let groups = Groups(parent);
    let d = Daemon::start(
        &dir.join("data"),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--capacity",
            "cpu=4,memory=1Gi",
        ],
    );
    (groups, d)
}

/// An agent that holds `mib` MiB (touched) and sleeps.
fn holder(d: &Daemon, name: &str, mib: u32, request: &str, priority: i64) {
    let r = d.post(
        "/v1/agents",
        &json!({
            "name": name,
            "command": ["python3", "-c", format!("b = b'x' * ({mib} * 1024 * 1024); import time; time.sleep(600)")],
            "resources": { "cpu": "100m", "memory": request },
            "priority": priority,
        })
        .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

/// A low-priority agent that grows 10 MiB every 0.1 s, up to 1.2 GiB.
fn leaker(d: &Daemon, name: &str) {
    leaker_at(d, name, 0, 100);
}

/// A low-priority agent that takes `start_mib` at once, then grows `mib_per_s` (a tenth of it
/// every 0.1 s) up to 1.2 GiB.
fn leaker_at(d: &Daemon, name: &str, start_mib: u32, mib_per_s: u32) {
    let step = mib_per_s * 1024 * 1024 / 10;
    let r = d.post(
        "/v1/agents",
        &json!({
            "name": name,
            "command": ["python3", "-c", format!(
                "import time\nl = [b'x' * ({start_mib} * 1024 * 1024)]\n\
                 while len(l) * {step} < 1200 * 1024 * 1024:\n    l.append(b'x' * {step})\n    \
                 time.sleep(0.1)\ntime.sleep(600)")],
            "resources": { "cpu": "100m", "memory": "64Mi" },
            "priority": 100,
            "restart": "never",
        })
        .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

/// The leaker was stopped by SIGTERM from the responder, not by the kernel's OOM killer; its
/// allocation ended evicted; the important agent runs on; admission reopens.
fn check_eviction(d: &Daemon, evicted: &Value, leaker: &str, keeper: &str) {
    let reason = evicted["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("memory pressure"), "{evicted}");
    assert_eq!(evicted["oom_killed"], false, "{evicted}");
    assert_eq!(
        evicted["signal"], 15,
        "SIGTERM, within the grace: {evicted}"
    );
    assert_eq!(agent(d, keeper)["state"], "running");
    assert_eq!(agent(d, keeper)["oom_killed"], false);
    let alloc = evicted["allocation"].as_str().expect("allocation");
    let a = d.get(&format!("/v1/allocations/{alloc}")).body;
    assert_eq!(a["state"], "evicted", "{a}");
    let p = d.get("/v1/pressure").body;
    assert_eq!(p["responder"]["last_eviction"]["agent"], leaker, "{p}");
    // pressure eases and admission reopens
    eventually("admission to reopen", 20, || {
        (d.post("/v1/allocations", r#"{"agent":"later","resources":{}}"#)
            .status
            == 201)
            .then_some(())
    });
}

/// A leak of `mib_per_s` from `start_mib` beside an important agent, collected at the
/// defaults (the host every second, the agents every 5 s): the fast path's readings under
/// pressure forecast it, and it is evicted at warning, before critical.
fn leak_evicted_at_warning(tag: &str, start_mib: u32, mib_per_s: u32) {
    if !can_confine() {
        return;
    }
    let (_groups, d) = pressure_daemon_every(tag, 1.0, 5.0, 0.5, "");
    holder(&d, "keeper-f", 300, "400Mi", 900);
    std::thread::sleep(Duration::from_secs(2));
    leaker_at(&d, "leaker-f", start_mib, mib_per_s);
    // the leak is forecast: /v1/pressure shows the leaker heading for exhaustion
    let mut forecast = None;
    let evicted = eventually("the leaker's eviction", 40, || {
        if forecast.is_none() {
            let p = d.get("/v1/pressure").body;
            forecast = p["agents"].as_array().and_then(|a| {
                a.iter()
                    .find(|a| a["agent"] == "leaker-f" && a["exhaustion_in_s"].is_number())
                    .cloned()
            });
        }
        state_is(&d, "leaker-f", "evicted")
    });
    let forecast = forecast.expect("a forecast for the leaker before its eviction");
    assert!(
        forecast["trend_per_s"].as_f64().unwrap_or(0.0) > 0.7 * f64::from(mib_per_s) * 1048576.0,
        "{forecast}"
    );
    let reason = evicted["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("forecast to exhaust"), "{evicted}");
    assert!(
        reason.contains("under warning memory pressure"),
        "{evicted}"
    );
    check_eviction(&d, &evicted, "leaker-f", "keeper-f");
    let p = d.get("/v1/pressure").body;
    let r = &p["responder"];
    assert_eq!(
        (
            r["evictions_forecast"].as_u64(),
            r["evictions_critical"].as_u64()
        ),
        (Some(1), Some(0)),
        "one eviction, on the forecast, before critical: {p}"
    );
    let (_, m) = d.get_text("/metrics");
    assert!(
        m.lines()
            .any(|l| l.starts_with("qm_monitor_agent_probes_total ") && !l.ends_with(" 0")),
        "the agents were read between collections"
    );
    assert_eq!(d.delete("/v1/agents/keeper-f?grace_s=1").status, 200);
    eventually("keeper stopped", 10, || state_is(&d, "keeper-f", "stopped"));
    d.stop();
}

#[test]
fn a_leak_of_10_mib_per_s_is_forecast_and_evicted_at_warning() {
    leak_evicted_at_warning("leak10", 400, 10);
}

#[test]
fn a_leak_of_50_mib_per_s_is_forecast_and_evicted_at_warning() {
    // warning to critical in about 3 s
    leak_evicted_at_warning("leak50", 300, 50);
}

#[test]
fn at_critical_the_victim_goes_at_once_and_the_others_above_request_are_throttled() {
    if !can_confine() {
        return;
    }
    // no forecast evictions: the leak runs into critical; a long dwell keeps it there a while
    let (_groups, d) = pressure_daemon("throttle", 3.0, "forecast_horizon_s = 0\n");
    holder(&d, "keeper-t", 300, "400Mi", 900);
    holder(&d, "bursty-t", 100, "32Mi", 800);
    std::thread::sleep(Duration::from_secs(2));
    let cgroup = agent(&d, "bursty-t")["cgroup"]
        .as_str()
        .expect("a cgroup")
        .to_owned();
    let soft = Path::new("/sys/fs/cgroup/memory")
        .join(&cgroup)
        .join("memory.soft_limit_in_bytes");
    let soft_limit = || {
        std::fs::read_to_string(&soft)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    assert!(soft_limit() > 1 << 60, "bursty starts unthrottled");
    leaker(&d, "leaker-t");
    let mut throttled = None;
    let evicted = eventually("the leaker's eviction", 40, || {
        if throttled.is_none() && soft_limit() < 1 << 60 {
            throttled = Some(soft_limit());
        }
        state_is(&d, "leaker-t", "evicted")
    });
    assert!(
        evicted["reason"]
            .as_str()
            .is_some_and(|r| r.contains("critical memory pressure")),
        "{evicted}"
    );
    // bursty (100 MiB against a 32 MiB request) is held at its usage while critical lasts
    let held = eventually("bursty throttled", 10, || {
        throttled.or_else(|| (soft_limit() < 1 << 60).then(soft_limit))
    });
    assert!(
        (90 << 20..200 << 20).contains(&held),
        "memory.high (v1: the soft limit) at bursty's usage, got {held}"
    );
    let p = d.get("/v1/pressure").body;
    assert!(
        p["responder"]["throttles"].as_u64().unwrap_or(0) >= 1,
        "{p}"
    );
    assert_eq!(p["responder"]["evictions_critical"], 1, "{p}");
    // the keeper is at its request: neither evicted nor throttled
    assert!(
        !p["responder"]["throttled"]
            .as_array()
            .is_some_and(|t| t.iter().any(|a| a == "keeper-t")),
        "{p}"
    );
    check_eviction(&d, &evicted, "leaker-t", "keeper-t");
    assert_eq!(agent(&d, "bursty-t")["state"], "running");
    // pressure gone: bursty's own limits are back
    eventually("the throttle lifted", 20, || {
        (soft_limit() > 1 << 60).then_some(())
    });
    // and both steps were published
    let events =
        crate::events::read_events(format!("{}/v1/events?since=0", d.base), d.bearer(), 10_000)
            .recv()
            .expect("events");
    let of = |kind: &str| {
        events
            .iter()
            .any(|(k, _, data)| k == kind && data.contains("\"bursty-t\""))
    };
    assert!(
        of("agent.throttled") && of("agent.unthrottled"),
        "{events:?}"
    );
    for a in ["keeper-t", "bursty-t"] {
        assert_eq!(d.delete(&format!("/v1/agents/{a}?grace_s=1")).status, 200);
    }
    d.stop();
}

#[test]
fn twenty_creates_of_one_name_make_one_agent() {
    if !can_confine() {
        return;
    }
    let d = Daemon::with_agents("one-name", "cpu=4,memory=4Gi", &[]);
    let marker = format!("{}.{}", 29, std::process::id());
    let body = format!(
        r#"{{"name":"twin","command":["sleep","{marker}"],"resources":{{"cpu":"10m","memory":"8Mi"}}}}"#
    );
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| s.spawn(|| d.post("/v1/agents", &body).status))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let created = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    let running = Command::new("pgrep")
        .args(["-fc", &format!("^sleep {marker}$")])
        .output()
        .expect("pgrep");
    let live = d.get("/v1/allocations?agent=twin&state=granted");
    // stop what was started before judging, so a failure leaves no process behind
    let _ = d.delete("/v1/agents/twin?grace_s=1");
    let _ = Command::new("pkill")
        .args(["-f", &format!("^sleep {marker}$")])
        .status();
    assert_eq!((created, refused), (1, 19), "{statuses:?}");
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), "1");
    assert_eq!(
        live.body["items"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        live.body
    );
    d.stop();
}

#[test]
fn an_agent_started_here_is_charged_to_this_node_never_a_reported_one() {
    if !can_confine() {
        return;
    }
    let d = Daemon::with_agents("local-node", "cpu=1,memory=1Gi", &["--strategy", "spread"]);
    // a far emptier node elsewhere, which spread would prefer
    let big = d.post(
        "/v1/nodes",
        r#"{"name":"elsewhere","capacity":{"cpu":"64","memory":"256Gi"}}"#,
    );
    assert_eq!(big.status, 201, "{:?}", big.body);
    assert_eq!(big.body["labels"]["qm.dev/node"], "elsewhere");
    let here = d.post(
        "/v1/agents",
        r#"{"name":"here","command":["sleep","30"],"resources":{"cpu":"500m","memory":"64Mi"}}"#,
    );
    let too_big = d.post(
        "/v1/agents",
        r#"{"name":"too-big","command":["sleep","30"],"resources":{"cpu":"2","memory":"64Mi"}}"#,
    );
    let placed = |name: &str| {
        let a = agent(&d, name);
        let alloc = a["allocation"].as_str().unwrap_or("").to_owned();
        d.get(&format!("/v1/allocations/{alloc}")).body
    };
    let here_alloc = placed("here");
    let big_alloc = placed("too-big");
    let _ = d.delete("/v1/agents/here?grace_s=1");
    let _ = d.delete("/v1/agents/too-big?grace_s=1");
    assert_eq!(here.status, 201, "{:?}", here.body);
    assert_eq!(here_alloc["node"], "test-node", "{here_alloc}");
    // what does not fit here waits for this node rather than going elsewhere
    assert_eq!(too_big.status, 202, "{:?}", too_big.body);
    assert_eq!(big_alloc["state"], "queued", "{big_alloc}");
    d.stop();
}

#[test]
fn a_new_agent_never_shares_a_cgroup_with_a_stranger() {
    if !can_confine() {
        return;
    }
    let dir = temp_dir("stranger");
    let config = dir.join("qm.toml");
    std::fs::write(&config, "[agents]\ncgroup_parent = \"qm-it-stranger\"\n").expect("config");
    let flags = [
        "--config",
        config.to_str().expect("utf-8"),
        "--capacity",
        "cpu=4,memory=4Gi",
    ];
    let first = Daemon::start(&dir.join("a"), &flags);
    let a = first.post(
        "/v1/agents",
        r#"{"name":"steady","command":["sleep","60"],"resources":{"cpu":"10m","memory":"16Mi"}}"#,
    );
    assert_eq!(a.status, 201, "{:?}", a.body);
    let pid = a.body["pid"].as_u64().expect("pid");
    // the daemon dies and a new one starts with no memory of it (another data dir)
    first.kill9();
    let second = Daemon::start(&dir.join("b"), &flags);
    let b = second.post(
        "/v1/agents",
        r#"{"name":"steady","command":["sleep","60"],"resources":{"cpu":"10m","memory":"16Mi"}}"#,
    );
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    assert_eq!(b.status, 409, "{:?}", b.body);
    let detail = b.body["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("qm-it-stranger/steady") && detail.contains(&pid.to_string()),
        "{detail}"
    );
    assert_eq!(
        second.get("/v1/agents/steady").status,
        404,
        "nothing left behind"
    );
    // once the stranger is gone, the name is free again
    let c = eventually("the group to empty", 10, || {
        let c = second.post(
            "/v1/agents",
            r#"{"name":"steady","command":["sleep","60"],"resources":{"cpu":"10m","memory":"16Mi"}}"#,
        );
        (c.status == 201).then_some(c)
    });
    let c_pid = c.body["pid"].as_u64().expect("pid");
    assert_eq!(second.delete("/v1/agents/steady?grace_s=1").status, 200);
    eventually("the agent stopped", 10, || {
        (second.get("/v1/agents/steady").body["state"] == "stopped").then_some(())
    });
    let _ = Command::new("kill")
        .args(["-9", &c_pid.to_string()])
        .status();
    second.stop();
}

/// Waits until none of `d`'s agents runs or is about to.
fn all_stopped(d: &Daemon, what: &str) {
    eventually(what, 15, || {
        let list = d.get("/v1/agents").body;
        list["items"]
            .as_array()?
            .iter()
            .all(|m| {
                !matches!(
                    m["state"].as_str(),
                    Some("running" | "pending" | "starting")
                )
            })
            .then_some(())
    });
}

#[test]
fn a_state_import_starts_agents_and_fleets_as_apply_would() {
    if !can_confine() {
        return;
    }
    let dir = temp_dir("import-agents");
    let daemon = |tag: &str| {
        let config = dir.join(format!("{tag}.toml"));
        std::fs::write(
            &config,
            format!("[agents]\ncgroup_parent = \"qm-it-import-{tag}\"\n"),
        )
        .expect("config");
        Daemon::start(
            &dir.join(tag),
            &[
                "--config",
                config.to_str().expect("utf-8"),
                "--capacity",
                "cpu=4,memory=4Gi",
            ],
        )
    };
    let a = daemon("a");
    let w = a.post(
        "/v1/agents",
        r#"{"name":"worker","command":["sleep","60"],"env":{"K":"v"},"resources":{"cpu":"100m","memory":"32Mi"}}"#,
    );
    assert_eq!(w.status, 201, "{:?}", w.body);
    let f = a.post(
        "/v1/fleets",
        r#"{"name":"crew","replicas":1,"template":{"name":"crew","command":["sleep","60"],"resources":{"cpu":"100m","memory":"32Mi"}}}"#,
    );
    assert_eq!(f.status, 201, "{:?}", f.body);
    eventually("the crew's member running", 10, || {
        let list = a.get("/v1/agents").body;
        let n = list["items"]
            .as_array()?
            .iter()
            .filter(|m| m["fleet"] == "crew" && m["state"] == "running")
            .count();
        (n == 1).then_some(())
    });
    let exported = a.get("/v1/state").body;
    // the first host lets them go
    assert_eq!(a.delete("/v1/fleets/crew").status, 200);
    assert_eq!(a.delete("/v1/agents/worker?grace_s=1").status, 200);
    all_stopped(&a, "the first host's agents stopped");
    a.stop();
    let b = daemon("b");
    let imported = b.post("/v1/state", &exported.to_string());
    assert_eq!(imported.status, 200, "{:?}", imported.body);
    let report = &imported.body["imported"];
    assert_eq!(report["started"], serde_json::json!(["worker"]), "{report}");
    assert_eq!(report["fleets"], serde_json::json!(["crew"]), "{report}");
    let left = report["left"].as_array().expect("left");
    assert!(
        left.iter()
            .any(|l| l["reason"].as_str().unwrap_or("").contains("fleet")),
        "{report}"
    );
    let worker = eventually("the worker running on the second host", 10, || {
        let w = agent(&b, "worker");
        (w["state"] == "running").then_some(w)
    });
    assert_eq!(worker["spec"]["env"]["K"], "v");
    assert_eq!(
        worker["allocation"], w.body["allocation"],
        "its imported allocation is its own again"
    );
    eventually("the crew's member on the second host", 10, || {
        let list = b.get("/v1/agents").body;
        list["items"]
            .as_array()?
            .iter()
            .any(|m| m["fleet"] == "crew" && m["state"] == "running")
            .then_some(())
    });
    assert_eq!(b.delete("/v1/fleets/crew").status, 200);
    assert_eq!(b.delete("/v1/agents/worker?grace_s=1").status, 200);
    all_stopped(&b, "the second host's agents stopped");
    b.stop();
}

#[test]
fn an_oom_kill_of_a_child_is_reported_on_its_agent() {
    if !can_confine() {
        return;
    }
    let d = Daemon::with_agents("oom-child", "cpu=4,memory=4Gi", &[]);
    let a = d.post(
        "/v1/agents",
        &json!({
            "name": "parent",
            "command": ["sh", "-c", "python3 -c 'b = bytearray(256 * 1024 * 1024)'; echo survived; exec sleep 60"],
            "resources": { "cpu": "100m", "memory": "64Mi" },
            "limits": { "memory": "64Mi" },
            "restart": "never",
        })
        .to_string(),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let reported = eventually("the child's OOM kill on the agent", 20, || {
        let a = agent(&d, "parent");
        (a["oom_kills"].as_u64() >= Some(1)).then_some(a)
    });
    // (the backlog since 0 holds the event, published before the count was readable)
    let events =
        crate::events::read_events(format!("{}/v1/events?since=0", d.base), d.bearer(), 10_000);
    let _ = d.delete("/v1/agents/parent?grace_s=1");
    // the agent itself runs on: its main process was not the one killed
    assert_eq!(reported["state"], "running", "{reported}");
    assert_eq!(reported["oom_killed"], false, "{reported}");
    let seen = events
        .recv_timeout(Duration::from_secs(8))
        .unwrap_or_default();
    assert!(
        seen.iter()
            .any(|(kind, _, data)| kind == "agent.oom_killed" && data.contains("parent")),
        "{seen:?}"
    );
    d.stop();
}

#[test]
fn a_predictive_autoscaler_is_validated_and_kept_across_a_restart() {
    let (d, _) = start("predictive");
    let fleet = |predictive: Value| {
        json!({
            "name": "ahead",
            "replicas": 1,
            "template": {
                "name": "x",
                "command": ["sleep", "300"],
                "resources": { "cpu": "100m", "memory": "16Mi" },
            },
            "autoscale": { "min": 1, "max": 3, "metric": "custom", "target": 1.0,
                           "predictive": predictive },
        })
        .to_string()
    };
    let bad = d.post(
        "/v1/fleets",
        &fleet(json!({ "horizon_s": 0, "alpha": 2, "beta": 0.1 })),
    );
    assert_eq!(bad.status, 422, "{}", bad.body);
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        fields,
        [
            "autoscale.predictive.horizon_s",
            "autoscale.predictive.alpha"
        ],
        "{}",
        bad.body
    );
    let unknown = d.post("/v1/fleets", &fleet(json!({ "horizon_s": 60, "gamma": 1 })));
    assert_eq!(unknown.status, 422, "{}", unknown.body);
    let good = d.post(
        "/v1/fleets",
        &fleet(json!({ "horizon_s": 60, "beta": 0.05 })),
    );
    assert_eq!(good.status, 201, "{}", good.body);
    let predictive = json!({ "horizon_s": 60.0, "beta": 0.05 });
    assert_eq!(good.body["autoscale"]["predictive"], predictive);
    let d = d.kill9_restart();
    let back = d.get("/v1/fleets/ahead");
    assert_eq!(
        back.body["autoscale"]["predictive"], predictive,
        "{}",
        back.body
    );
    assert_eq!(d.delete("/v1/fleets/ahead").status, 200);
    d.stop();
}
