//! `qm top` end to end: in a real terminal (tmux, 80x24) against a live daemon it shows the
//! node's pressure and an agent, sorts and filters by key, stops the selected agent after a
//! `y`, and `q` quits with status 0, the terminal given back (the view is gone from the pane).

use std::process::Command;

use serde_json::json;

use crate::daemon::{Daemon, eventually};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn qm_top_in_tmux_shows_sorts_filters_stops_and_quits() {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("QM_TUI").as_deref() != Ok("required"),
            "QM_TUI=required but tmux is not installed"
        );
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let d = Daemon::with_agents("top", "cpu=4,memory=4Gi", &[]);
    for name in ["top-a", "top-b"] {
        let a = d.post(
            "/v1/agents",
            &json!({ "name": name, "command": ["sleep", "300"],
                     "resources": { "cpu": "100m", "memory": "32Mi" } })
            .to_string(),
        );
        assert_eq!(a.status, 201, "{:?}", a.body);
    }
    let session = format!("qm-top-{}", std::process::id());
    let status = crate::daemon::temp_dir("top").join("status");
    let cmd = format!(
        "{} --server {} --token {} top; echo exit=$? > {}",
        env!("CARGO_BIN_EXE_qm"),
        d.base,
        d.token,
        status.display()
    );
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
    tmux(&["set-option", "-t", &session, "remain-on-exit", "on"]);
    let pane = || tmux(&["capture-pane", "-p", "-t", &session]);
    let keys = |k: &[&str]| {
        let mut args = vec!["send-keys", "-t", session.as_str()];
        args.extend_from_slice(k);
        tmux(&args);
    };
    let first = eventually("qm top's first screen", 20, || {
        let p = pane();
        (p.contains("qm top · test-node") && p.contains("top-a") && p.contains("top-b"))
            .then_some(p)
    });
    assert!(first.contains("pressure"), "{first}");
    assert!(first.contains("agents 2 of 2 · by cpu"), "{first}");
    keys(&["n"]);
    eventually("sorted by name", 10, || {
        pane().contains("by name").then_some(())
    });
    keys(&["/", "t", "o", "p", "-", "b", "Enter"]);
    let filtered = eventually("filtered", 10, || {
        let p = pane();
        (p.contains("agents 1 of 2") && !p.contains("top-a")).then_some(p)
    });
    assert!(filtered.contains("top-b"), "{filtered}");
    keys(&["x"]);
    eventually("the confirmation", 10, || {
        pane().contains("Stop top-b? y / n").then_some(())
    });
    keys(&["y"]);
    eventually("top-b stopped", 20, || {
        (d.get("/v1/agents/top-b").body["state"] == "stopped").then_some(())
    });
    assert_eq!(d.get("/v1/agents/top-a").body["state"], "running");
    keys(&["q"]);
    let code = eventually("qm top's exit", 10, || {
        std::fs::read_to_string(&status).ok()
    });
    assert_eq!(code.trim(), "exit=0");
    let after = pane();
    assert!(
        !after.contains("qm top ·"),
        "the view left on screen:\n{after}"
    );
    tmux(&["kill-session", "-t", &session]);
    let stopped = d.delete("/v1/agents/top-a");
    assert_eq!(stopped.status, 200, "{:?}", stopped.body);
    d.stop();
}
