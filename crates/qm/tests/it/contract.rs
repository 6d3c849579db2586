//! The contract, checked by a tool that reads only the document: Schemathesis (all checks, a
//! fixed seed) against a live daemon's `/openapi.json`. What the document allows, the daemon
//! accepts; what it forbids, the daemon refuses; every answer has a documented status and
//! matches its schema. Settings (and the few cross-field rules JSON Schema cannot state) are
//! in `schemathesis.toml` beside this file.
//!
//! Never fuzzed: routes that start, adopt or stop processes (creating or stopping agents,
//! fleets and their metrics, importing state, MCP, whose tools do the same) and the endless
//! event stream. The daemon runs its agents under a cgroup parent of its own all the same.
//!
//! Schemathesis comes from pip (`.ci/run` installs it and sets `QM_CONTRACT=required`);
//! elsewhere the test says it was skipped when `st` is missing.

use std::process::Command;

use crate::daemon::Daemon;

/// Operations never fuzzed (by operationId).
const NOT_FUZZED: &str = "^(mcp_endpoint|create_agent|stop_agent|create_fleet|update_fleet|delete_fleet|push_metric|import_state|events)$";

fn schemathesis() -> Option<String> {
    for st in ["st", "schemathesis"] {
        let found = Command::new(st)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return Some(st.to_owned());
        }
    }
    None
}

#[test]
fn the_openapi_document_holds_under_schemathesis() {
    let Some(st) = schemathesis() else {
        assert!(
            std::env::var("QM_CONTRACT").as_deref() != Ok("required"),
            "QM_CONTRACT=required but schemathesis (st) is not installed"
        );
        eprintln!("skipped: schemathesis (st) is not installed (pip install schemathesis)");
        return;
    };
    let d = Daemon::with_agents("contract", "cpu=4,memory=8Gi", &[]);
    let (status, doc) = d.get_text("/openapi.json");
    assert_eq!(status, 200, "{doc}");
    let dir = d.dir_of();
    let file = dir.join("openapi.json");
    std::fs::write(&file, &doc).expect("the document");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/schemathesis.toml");
    let out = Command::new(&st)
        .args(["--config-file", config, "run"])
        .arg(&file)
        .args(["--url", &d.base])
        .args(["-H", &format!("Authorization: {}", d.bearer())])
        .args(["--checks", "all", "--seed", "1", "--max-examples", "30"])
        .args(["--request-timeout", "5", "--workers", "1"])
        .args(["--exclude-operation-id-regex", NOT_FUZZED])
        .arg("--no-color")
        .current_dir(&dir)
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found what the document and the daemon disagree on:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
    // the fuzzing started nothing
    let agents = d.get("/v1/agents").body;
    assert_eq!(agents["items"], serde_json::json!([]), "{agents}");
    d.stop();
}
