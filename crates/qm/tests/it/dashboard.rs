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
