//! The dashboard in a real browser (headless chromium over the DevTools protocol): without a
//! token it shows a sign-in and no data; with one (`?token=`, kept for the tab, dropped from
//! the address) it shows the node, pressure, a chart with points, and an agent spawned while
//! the page is open appears without a reload; stopping it from the page asks first; nothing
//! logs an error. A screenshot is kept under the target dir.

use std::path::PathBuf;

use serde_json::json;

use crate::browser::Browser;
use crate::daemon::{Daemon, temp_dir};

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("the screenshots' dir");
    dir
}

#[test]
fn the_dashboard_shows_a_live_node_and_agents_to_a_token_and_nothing_without_one() {
    let Some(mut b) = Browser::start("dashboard") else {
        return;
    };
    let dir = temp_dir("dashboard");
    let config = dir.join("qm.toml");
    std::fs::write(
        &config,
        "[agents]\ncgroup_parent = \"qm-it-dashboard\"\n[monitor]\ninterval_s = 0.5\n",
    )
    .expect("config");
    let d = Daemon::start(
        &dir.join("data"),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--capacity",
            "cpu=4,memory=4Gi",
        ],
    );
    // `/` sends a browser to the dashboard; without a token it asks for one and shows nothing
    b.open(&format!("{}/", d.base));
    assert_eq!(b.eval("location.pathname"), "/ui/");
    b.wait_for(
        "the sign-in",
        10,
        "!document.getElementById('login').hidden",
    );
    assert_eq!(b.eval("document.getElementById('app').hidden"), true);
    assert_eq!(
        b.eval("document.getElementById('node-rows').children.length"),
        0
    );
    assert_eq!(
        b.eval("document.body.innerText.includes('test-node')"),
        false
    );
    // a wrong token is refused, saying so
    b.eval(
        "document.getElementById('token').value = 'qm_wrong'; \
         document.getElementById('login-form').requestSubmit()",
    );
    b.wait_for(
        "the refusal",
        10,
        "document.getElementById('login-error').textContent",
    );
    // the browser logs the refused request itself; nothing else may be logged
    assert!(
        b.errors.iter().all(|e| e.contains("401")),
        "the page logged errors: {:?}",
        b.errors
    );
    b.errors.clear();
    // with the token: the node, its resources, pressure, a chart with points
    let t0 = std::time::Instant::now();
    b.open(&format!("{}/ui/?token={}", d.base, d.token));
    b.wait_for(
        "the node's resources",
        10,
        "document.getElementById('node-rows').children.length >= 2",
    );
    let useful_ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(
        b.eval("document.getElementById('node-name').textContent"),
        "test-node"
    );
    b.wait_for(
        "the cluster line",
        10,
        "document.getElementById('cluster').textContent.includes('a cluster of one (sqlite)')",
    );
    assert_eq!(
        b.eval("location.search"),
        "",
        "the token leaves the address"
    );
    assert_eq!(b.eval("sessionStorage.getItem('qm-token') !== null"), true);
    b.wait_for(
        "pressure signals",
        10,
        "document.querySelectorAll('#signals .signal').length >= 3",
    );
    b.wait_for(
        "the event stream",
        10,
        "document.getElementById('live').textContent.includes('live')",
    );
    let points = b.wait_for(
        "a chart with points",
        15,
        "Number(document.getElementById('chart').dataset.points || 0) > 0 && \
         Number(document.getElementById('chart').dataset.points)",
    );
    // an agent spawned now appears without a reload, within the event's refresh
    let spawned = d.post(
        "/v1/agents",
        &json!({ "name": "dash-1", "command": ["sleep", "300"],
                 "resources": { "cpu": "100m", "memory": "32Mi" } })
        .to_string(),
    );
    assert_eq!(spawned.status, 201, "{:?}", spawned.body);
    b.wait_for(
        "the agent's row",
        5,
        "[...document.querySelectorAll('#agent-rows tr')].some(r => \
           r.dataset.agent === 'dash-1' && r.innerText.includes('running'))",
    );
    b.wait_for(
        "its event",
        5,
        "document.getElementById('events').innerText.includes('agent.started')",
    );
    b.screenshot(&shots().join("dashboard.png"));
    // stopping it from the page asks first; cancelled, nothing happens
    b.eval("document.querySelector('[data-stop=\"dash-1\"]').click()");
    b.wait_for(
        "the confirmation",
        5,
        "document.getElementById('confirm').open",
    );
    b.eval("document.getElementById('confirm').close('no')");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(d.get("/v1/agents/dash-1").body["state"], "running");
    b.eval("document.querySelector('[data-stop=\"dash-1\"]').click()");
    b.wait_for(
        "the confirmation",
        5,
        "document.getElementById('confirm').open",
    );
    b.eval("document.getElementById('confirm').close('yes')");
    crate::daemon::eventually("the agent stopped from the page", 20, || {
        (d.get("/v1/agents/dash-1").body["state"] == "stopped").then_some(())
    });
    // an observer sees the same data but no buttons that act
    let observer = d.post(
        "/v1/tokens",
        &json!({ "name": "viewer", "role": "observer" }).to_string(),
    );
    assert_eq!(observer.status, 201, "{:?}", observer.body);
    let token = observer.body["token"].as_str().expect("a token").to_owned();
    b.eval("sessionStorage.clear()");
    b.open(&format!("{}/ui/?token={token}", d.base));
    b.wait_for(
        "the agents, as an observer",
        10,
        "[...document.querySelectorAll('#agent-rows tr')].some(r => r.dataset.agent === 'dash-1')",
    );
    assert_eq!(
        b.eval("document.querySelectorAll('button[data-stop], button[data-release]').length"),
        0
    );
    assert!(
        b.errors.is_empty(),
        "the page logged errors: {:?}",
        b.errors
    );
    eprintln!(
        "dashboard: useful in {useful_ms:.0} ms (node rows shown after load), {points} chart points, \
         assets {} bytes",
        qm_api::ui_assets_bytes()
    );
    d.stop();
}

/// A process's cpu seconds so far (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The dashboard's costs, measured (not asserted): run with
/// `QM_BIN=target/release/qm cargo test -p qm --test it measure_dashboard -- --ignored
/// --nocapture` (after `cargo build --release -p qm`). The page with
/// 1,000 agents and a 24 h chart of 86,400 points (its scripting time per render), and the
/// daemon's cpu (with 1,000 real agents, or `QM_MEASURE_AGENTS`) while the page is open
/// against the same daemon idle, and `qm top`'s cpu.
#[test]
#[ignore = "a measurement: run it by name"]
fn measure_dashboard_and_top_costs() {
    let Some(mut b) = Browser::start("dashboard-measure") else {
        return;
    };
    let d = Daemon::with_agents("dashboard-measure", "cpu=64,memory=64Gi", &[]);
    // as many real agents as `QM_MEASURE_AGENTS` says (default 1,000)
    let n: usize = std::env::var("QM_MEASURE_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for i in 0..n {
        let a = d.post(
            "/v1/agents",
            &json!({ "name": format!("m-{i}"), "command": ["sleep", "600"],
                     "resources": { "cpu": "10m", "memory": "8Mi" } })
            .to_string(),
        );
        assert_eq!(a.status, 201, "{:?}", a.body);
    }
    let pid = d.child.id();
    let window = 30.0;
    // the daemon idle (monitoring on, no client)
    let c0 = cpu_seconds(pid);
    std::thread::sleep(std::time::Duration::from_secs_f64(window));
    let idle = (cpu_seconds(pid) - c0) / window;
    // the page open
    b.open(&format!("{}/ui/?token={}", d.base, d.token));
    b.wait_for(
        "the agents",
        10,
        &format!("document.querySelectorAll('#agent-rows tr').length >= {n}"),
    );
    let c1 = cpu_seconds(pid);
    std::thread::sleep(std::time::Duration::from_secs_f64(window));
    let open = (cpu_seconds(pid) - c1) / window;
    let paint = b.eval(
        "(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null",
    );
    // 1,000 agents rendered, sorted and filtered in the page
    let agents_ms = b.eval(
        "(() => { const base = state.agents[0]; \
           state.agents = Array.from({ length: 1000 }, (_, i) => Object.assign({}, base, \
             { name: 'agent-' + i, restarts: i % 7, usage: { cpu: (i * 7 % 900) + 'm', memory: (i % 300) + 'Mi' } })); \
           const t = performance.now(); for (let k = 0; k < 10; k++) { state.sort = { key: k % 2 ? 'cpu' : 'memory', asc: false }; renderAgents(); } \
           return [(performance.now() - t) / 10, document.querySelectorAll('#agent-rows tr').length]; })()",
    );
    let (agents_ms, rows) = (agents_ms[0].as_f64().unwrap_or(0.0), agents_ms[1].clone());
    // a 24 h chart at one point a second
    let chart_ms = b.eval(
        "(() => { const now = Date.now() / 1000; \
           const points = Array.from({ length: 86400 }, (_, i) => [now - 86400 + i, 0.5 + 0.4 * Math.sin(i / 3000)]); \
           chartData = { items: [{ name: 'synthetic', labels: {}, points }], since: 86400 }; \
           const t = performance.now(); for (let k = 0; k < 10; k++) drawChart(); \
           return (performance.now() - t) / 10; })()",
    );
    eprintln!(
        "dashboard: assets {} bytes; first contentful paint {paint} ms; 1,000 agents rendered \
         and sorted in {agents_ms:.1} ms ({rows} rows); a 24 h chart of 86,400 points drawn in \
         {chart_ms:.1} ms; with {n} agents, daemon cpu {:.2}% of a core idle, {:.2}% with the \
         page open (+{:.2}%)",
        qm_api::ui_assets_bytes(),
        idle * 100.0,
        open * 100.0,
        (open - idle) * 100.0
    );
    drop(b);
    // qm top's own cpu, refreshing every second
    #[cfg(feature = "tui")]
    {
        let session = format!("qm-top-measure-{}", std::process::id());
        let bin = std::env::var("QM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_qm").to_owned());
        let cmd = format!("{bin} --server {} --token {} top", d.base, d.token);
        let tmux = |args: &[&str]| {
            std::process::Command::new("tmux")
                .args(args)
                .output()
                .expect("tmux")
        };
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "80",
            "-y",
            "24",
            &cmd,
        ]);
        std::thread::sleep(std::time::Duration::from_secs(2));
        let shell = String::from_utf8_lossy(
            &tmux(&["list-panes", "-t", &session, "-F", "#{pane_pid}"]).stdout,
        )
        .trim()
        .to_owned();
        let pgrep = std::process::Command::new("pgrep")
            .args(["-f", &format!("{} top", d.token)])
            .output()
            .expect("pgrep");
        let top_pid: u32 = String::from_utf8_lossy(&pgrep.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .find(|p: &u32| p.to_string() != shell)
            .expect("qm top's pid");
        let t0 = cpu_seconds(top_pid);
        std::thread::sleep(std::time::Duration::from_secs_f64(window));
        let top = (cpu_seconds(top_pid) - t0) / window;
        tmux(&["kill-session", "-t", &session]);
        eprintln!("qm top: {:.2}% of a core", top * 100.0);
    }
    for i in 0..n {
        d.delete(&format!("/v1/agents/m-{i}"));
    }
    d.stop();
}
