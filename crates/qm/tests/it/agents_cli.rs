//! The agent and fleet commands against a real daemon: `qm apply -f` creates a pool, an agent
//! and a fleet, re-applying reports what is unchanged or updated, `qm fleets scale` stops a
//! member, `qm agents logs` and `qm agents stop` work on a live agent, and a file with an
//! unknown field is refused with exit code 2, naming the field. Agents run without cgroups here:
//! these tests are about the CLI, not about enforcement.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::daemon::{Daemon, eventually, temp_dir};

fn qm(server: &str, args: &[&str]) -> (i32, String, String) {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_qm"))
        .arg("--server")
        .arg(server)
        .args(args)
        .output()
        .expect("run qm");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The ids of the agents `qm agents ls -o json` shows in one of `states`, sorted.
fn agents_in(server: &str, states: &[&str]) -> Vec<String> {
    let (code, out, err) = qm(server, &["-o", "json", "agents", "ls"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let mut ids: Vec<String> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["state"].as_str().is_some_and(|s| states.contains(&s)))
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

fn running(server: &str) -> Vec<String> {
    agents_in(server, &["running"])
}

const FILE: &str = r#"
[[pools]]
name = "research"
weight = 2

[[agents]]
name = "solo"
pool = "research"
command = ["sh", "-c", "echo solo says hello; exec sleep 30"]
resources = { cpu = "100m", memory = "32Mi" }

[[fleets]]
name = "coders"
replicas = 2
[fleets.template]
command = ["sleep", "30"]
resources = { cpu = 0.1, memory = "32Mi" }
"#;

fn start(dir: &Path) -> Daemon {
    let config = dir.join("qm.toml");
    std::fs::write(&config, "[agents]\ncgroups = false\n").expect("config");
    Daemon::start(
        &dir.join("data"),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--capacity",
            "cpu=4,memory=4Gi",
        ],
    )
}

#[test]
fn apply_creates_scales_stops_and_reapplies() {
    let dir = temp_dir("agents-cli");
    let d = start(&dir);
    let file = dir.join("apply.toml");
    std::fs::write(&file, FILE).expect("apply file");
    let file = file.to_str().expect("utf-8");

    let (code, out, err) = qm(&d.base, &["apply", "-f", file]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "pool research: created\nagent solo: created\nfleet coders: created\n"
    );
    let ids = eventually("3 running agents", 10, || {
        let ids = running(&d.base);
        (ids.len() == 3).then_some(ids)
    });
    assert_eq!(ids, ["coders-0", "coders-1", "solo"]);
    let (code, out, _) = qm(&d.base, &["agents", "ls"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ID ") && out.contains("solo"), "{out}");

    // the same file again: nothing to do but the pool's settings
    let (code, out, err) = qm(&d.base, &["apply", "-f", file]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "pool research: updated\nagent solo: unchanged (running)\nfleet coders: unchanged\n"
    );

    // scale down to one member
    let (code, out, err) = qm(&d.base, &["fleets", "scale", "coders", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("coders"), "{out}");
    eventually("one fleet member left running", 10, || {
        (running(&d.base).len() == 2).then_some(())
    });
    let (code, out, _) = qm(&d.base, &["-o", "json", "fleets", "get", "coders"]);
    assert_eq!(code, 0);
    let fleet: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(fleet["replicas"], 1, "{fleet}");

    // logs and stop
    let out = eventually("solo's first line", 10, || {
        let (code, out, _) = qm(&d.base, &["agents", "logs", "solo", "--tail", "10"]);
        (code == 0 && out.contains("solo says hello")).then_some(out)
    });
    assert_eq!(out, "solo says hello\n");
    let (code, out, err) = qm(
        &d.base,
        &["-o", "json", "agents", "stop", "solo", "--grace", "1"],
    );
    assert_eq!(code, 0, "{err}");
    let solo: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(solo["state"], "stopped", "{solo}");
    let (code, out, _) = qm(&d.base, &["agents", "get", "solo"]);
    assert_eq!(code, 0);
    assert!(out.contains("stopped"), "{out}");

    // re-applying brings back what was stopped and scaled away
    let (code, out, err) = qm(&d.base, &["apply", "-f", file]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "pool research: updated\nagent solo: created\nfleet coders: updated\n"
    );
    eventually("3 running agents again", 10, || {
        (running(&d.base).len() == 3).then_some(())
    });

    // unknown ids are refused
    let (code, _, err) = qm(&d.base, &["agents", "get", "nobody"]);
    assert_eq!(code, 1, "{err}");

    // clean up: the fleet's members and the agent end with it
    let (code, _, err) = qm(&d.base, &["fleets", "delete", "coders"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = qm(&d.base, &["agents", "stop", "solo", "--grace", "1"]);
    assert_eq!(code, 0, "{err}");
    let live = ["pending", "starting", "running", "backoff"];
    eventually("no agent live", 15, || {
        agents_in(&d.base, &live).is_empty().then_some(())
    });
    d.stop();
}

#[test]
fn a_bad_apply_file_names_the_field_and_exits_2() {
    let dir = temp_dir("agents-cli-bad");
    let d = start(&dir);
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[[agents]]\nname = \"painter\"\ncommand = [\"sleep\", \"30\"]\ncolour = 1\n",
    )
    .expect("file");
    let (code, out, err) = qm(&d.base, &["apply", "-f", file.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("colour"), "{err}");
    assert_eq!(
        running(&d.base),
        Vec::<String>::new(),
        "nothing was applied"
    );
    // the daemon's own validation: a negative quantity is a 422, exit 2, named
    std::fs::write(
        &file,
        "[[agents]]\nname = \"neg\"\ncommand = [\"sleep\", \"30\"]\nresources = { cpu = \"-1\" }\n",
    )
    .expect("file");
    let (code, out, err) = qm(&d.base, &["apply", "-f", file.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("agent neg: ") && err.contains("resources.cpu"),
        "{err}"
    );
    // an unknown top-level key
    std::fs::write(&file, "[[robots]]\nname = \"r2\"\n").expect("file");
    let (code, _, err) = qm(&d.base, &["apply", "-f", file.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`robots`"), "{err}");
    d.stop();
}
