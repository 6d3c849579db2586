//! The CLI against a real daemon: client commands and their exit codes (0 done, 1 refused,
//! 2 invalid input, 3 unreachable), and `qm serve` refusing broken config files.

use std::process::{Command, Output};

use crate::daemon::{Daemon, temp_dir};

fn qm(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qm"))
        .arg("--server")
        .arg(server)
        .args(args)
        .output()
        .expect("run qm")
}

fn text(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn client_commands_and_exit_codes() {
    let d = Daemon::start(&temp_dir("cli"), &["--capacity", "cpu=2,memory=2Gi"]);
    let (code, out, err) = text(&qm(
        &d.base,
        &[
            "alloc", "request", "--agent", "coder-1", "--cpu", "500m", "--memory", "256Mi",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    assert!(!id.is_empty());
    let (code, out, _) = text(&qm(&d.base, &["-o", "json", "alloc", "get", &id]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (v["state"].as_str(), v["agent"].as_str()),
        (Some("granted"), Some("coder-1"))
    );
    let (code, out, _) = text(&qm(&d.base, &["alloc", "ls"]));
    assert_eq!(code, 0);
    assert!(out.contains("coder-1") && out.starts_with("ID"), "{out}");
    let (code, out, _) = text(&qm(&d.base, &["status"]));
    assert_eq!(code, 0);
    assert!(out.contains("test-node"), "{out}");
    // usage next to capacity and allocations: the memory row has what is allocated and what
    // the host uses (the monitor's first collection happens at start)
    let memory: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("memory "))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(memory.get(3), Some(&"256Mi"), "{out}");
    assert!(memory.get(5).is_some_and(|u| *u != "-"), "{out}");
    // refused: does not fit
    let (code, _, err) = text(&qm(
        &d.base,
        &["alloc", "request", "--agent", "big", "--cpu", "8"],
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("insufficient resources"), "{err}");
    // invalid input
    let (code, _, err) = text(&qm(
        &d.base,
        &["alloc", "request", "--agent", "bad", "--cpu=-1"],
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("resources.cpu"), "{err}");
    // released
    let (code, out, _) = text(&qm(&d.base, &["alloc", "release", &id]));
    assert_eq!(code, 0);
    assert!(out.contains("released"), "{out}");
    let (code, out, _) = text(&qm(
        &d.base,
        &[
            "pools",
            "create",
            "research",
            "--weight",
            "2",
            "--limit-cpu",
            "1",
        ],
    ));
    assert_eq!(code, 0);
    assert!(out.contains("research"), "{out}");
    let (code, out, _) = text(&qm(&d.base, &["nodes"]));
    assert_eq!(code, 0);
    assert!(out.contains("test-node"), "{out}");
    // the load generator: every request it counts was granted, none failed
    let (code, out, err) = text(&qm(
        &d.base,
        &["bench", "-c", "4", "-d", "1", "--release", "--cpu", "10m"],
    ));
    assert_eq!(code, 0, "{err}");
    let n: u64 = out
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    assert!(
        n > 10 && out.contains("; 0 errors") && out.contains("p99"),
        "{out}"
    );
    let granted = d.get("/v1/allocations?state=granted&limit=1000").body["items"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(granted, 0, "--release gave every allocation back");
    d.stop();
    // unreachable
    let (code, _, err) = text(&qm("http://127.0.0.1:9", &["status"]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the daemon"), "{err}");
}

#[test]
fn serve_refuses_broken_configs_naming_the_key() {
    let dir = temp_dir("config");
    let cases = [
        ("colour = \"red\"\n", "colour"),
        ("[queue]\nbackfill_depth = -3\n", "backfill_depth"),
        ("strategy = \"magic\"\n", "strategy"),
        ("capacity = \"cpu=lots\"\n", "capacity.cpu"),
        ("listen = \"nowhere\"\n", "listen"),
        ("[reserve]\nmemory = \"-1Gi\"\n", "reserve.memory"),
        ("this is not toml", "config"),
        ("[monitor]\ninterval_s = 0\n", "monitor.interval_s"),
        ("[monitor]\nspeed = 1\n", "speed"),
        (
            "[history]\nhost_tiers = [[0, 10]]\n",
            "history.host_tiers[0]",
        ),
        ("[history]\nhost_tiers = [[10, 10], [5, 10]]\n", "history"),
        (
            "[[alerts.rules]]\nname = \"x\"\nseries = \"qm_host_load1\"\nop = \"~\"\nthreshold = 1\n",
            "alerts.rules[0].op",
        ),
        (
            "[[alerts.rules]]\nname = \"x\"\nseries = \"qm_host_load1\"\nop = \">\"\nthreshold = 1\nclear = 2\n",
            "alerts.rules[0].clear",
        ),
        (
            "[[alerts.rules]]\nname = \"x\"\nseries = \"s\"\nop = \">\"\nthreshold = 1\nseverity = \"dire\"\n",
            "alerts.rules[0].severity",
        ),
        (
            "[[alerts.webhooks]]\nurl = \"ftp://x\"\n",
            "alerts.webhooks[0].url",
        ),
        ("[alerts]\nexec = []\n", "alerts.exec"),
        ("[cluster]\netcd = [\"tcp://h:2379\"]\n", "cluster.etcd"),
        ("[cluster]\netcd = []\n", "cluster.etcd"),
        (
            "[cluster]\netcd = [\"http://h:2379\"]\nprefix = \"qm\"\n",
            "cluster.prefix",
        ),
        (
            "[cluster]\netcd = [\"http://h:2379\"]\nlease_ttl_s = 1\n",
            "cluster.lease_ttl_s",
        ),
        ("[cluster]\nleader = true\n", "leader"),
        (
            "[cluster]\netcd = [\"http://h:2379\"]\nca_file = \"/nonexistent/ca.pem\"\n",
            "cluster.ca_file",
        ),
        (
            "[recommender]\nmin_samples = 0\n",
            "recommender.min_samples",
        ),
        ("[recommender]\noom_bump = 0.5\n", "recommender.oom_bump"),
        (
            "[recommender]\ncpu_percentile = 2\n",
            "recommender.cpu_percentile",
        ),
        (
            "[recommender]\nmax_overcommit = 0.5\n",
            "recommender.max_overcommit",
        ),
        (
            "[recommender]\nmin_confidence = -1\n",
            "recommender.min_confidence",
        ),
        ("[recommender]\nmax_overcomit = 2\n", "max_overcomit"),
        (
            "labels = { \"qm.dev/node\" = \"x\" }\n",
            "labels.qm.dev/node",
        ),
    ];
    for (body, key) in cases {
        let path = dir.join("qm.toml");
        std::fs::write(&path, body).expect("write config");
        let o = Command::new(env!("CARGO_BIN_EXE_qm"))
            .args(["serve", "--data-dir"])
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run qm serve");
        let (code, _, err) = text(&o);
        assert_ne!(code, 0, "{body:?} was accepted");
        assert!(err.contains(key), "{body:?}: {err}");
    }
    // A good file works, and flags override it.
    std::fs::write(
        dir.join("good.toml"),
        "strategy = \"spread\"\ncapacity = \"cpu=1,memory=1Gi\"\n[queue]\nreserve_after_s = 30\n",
    )
    .expect("write");
    let d = Daemon::start(
        &dir.join("data2"),
        &[
            "--config",
            dir.join("good.toml").to_str().expect("utf-8"),
            "--capacity",
            "cpu=3,memory=1Gi",
        ],
    );
    assert_eq!(d.get("/v1/node").body["allocatable"]["cpu"], "3");
    d.stop();
}
