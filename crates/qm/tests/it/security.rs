//! The trust model end to end against the real daemon: every route but health needs a token,
//! an unprivileged local user gets nothing (the `nobody` exploit), an agent token is held to
//! its own resources, spawned agents run as a uid of their own with their own token and cannot
//! lift their limits or read their neighbours' tokens, init and the daemon are never adopted, revoked and expired tokens fail at
//! once, no token is kept in plaintext, and the audit chain verifies until a row is edited.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::daemon::{Daemon, eventually, temp_dir};

fn qm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qm"))
        .args(args)
        .env_remove("QM_TOKEN")
        .output()
        .expect("run qm")
}

fn token(d: &Daemon, body: &str) -> (String, String) {
    let made = d.post("/v1/tokens", body);
    assert_eq!(made.status, 201, "{:?}", made.body);
    (
        made.body["id"].as_str().expect("id").to_owned(),
        made.body["token"].as_str().expect("token").to_owned(),
    )
}

fn root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn every_route_in_the_openapi_document_needs_a_token() {
    let d = Daemon::start(&temp_dir("authn"), &["--capacity", "cpu=2,memory=1Gi"]);
    let doc = d.get("/openapi.json");
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let m = method.to_uppercase();
            let body = (m == "POST" || m == "PUT").then_some("{}");
            let a = d.call_as(None, &m, &concrete, body);
            assert_eq!(
                a.status, 401,
                "{m} {path} answered {} without a token",
                a.status
            );
            assert_eq!(a.body["code"], "unauthorized", "{m} {path}");
            let bad = d.call_as(Some("qm_0123_made-up"), &m, &concrete, body);
            assert_eq!(bad.status, 401, "{m} {path} with a made-up token");
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} operations in the document");
    for path in [
        "/docs/",
        "/openapi.json",
        "/metrics",
        "/v1/events",
        "/no-such-route",
    ] {
        assert_eq!(d.call_as(None, "GET", path, None).status, 401, "{path}");
    }
    // the challenge names the scheme
    let resp = ureq::get(&format!("{}/v1/node", d.base))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .expect("answer");
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"qm\"")
    );
    for open in ["/healthz", "/readyz"] {
        assert_eq!(d.call_as(None, "GET", open, None).status, 200, "{open}");
    }
    d.stop();
}

#[test]
fn an_unprivileged_local_user_gets_nothing() {
    if !root() || Command::new("setpriv").arg("--version").output().is_err() {
        println!("skipped: needs root and setpriv to act as nobody");
        return;
    }
    let dir = temp_dir("nobody");
    let d = Daemon::start(&dir, &["--capacity", "cpu=2,memory=1Gi"]);
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .args(args)
            .env_remove("QM_TOKEN")
            .output()
            .expect("setpriv")
    };
    // the exploit: one curl that made the daemon run `id` as root
    let o = as_nobody(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"name":"pwn","command":["id"],"resources":{}}"#,
        &format!("{}/v1/agents", d.base),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "401");
    // the admin token is the daemon user's alone, so the CLI as nobody cannot find it
    let file = dir.join("admin.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("admin.token").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let o = as_nobody(&["cat", file.to_str().expect("utf-8")]);
    assert!(!o.status.success());
    let qm_bin = env!("CARGO_BIN_EXE_qm");
    if as_nobody(&[qm_bin, "--version"]).status.success() {
        let o = as_nobody(&[qm_bin, "--server", &d.base, "agents", "ls"]);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("QM_TOKEN"),
            "{o:?}"
        );
    }
    assert_eq!(d.get("/v1/agents").body["items"], Value::Array(Vec::new()));
    // the refusal is audited, naming the local user
    // (a refusal is recorded just after its answer)
    let refused = eventually("the refusal in the audit log", 5, || {
        let audit = d.get("/v1/audit?limit=1000");
        audit.body["items"]
            .as_array()?
            .iter()
            .find(|e| e["status"] == 401 && e["path"] == "/v1/agents")
            .cloned()
    });
    assert_eq!(refused["actor"]["peer_uid"], 65534, "{refused:?}");
    d.stop();
}

#[test]
fn an_agent_token_is_held_to_its_own() {
    let d = Daemon::start(&temp_dir("scope"), &["--capacity", "cpu=4,memory=4Gi"]);
    let (_, a1) = token(&d, r#"{"name":"a1","role":"agent","agent":"a1"}"#);
    let small = |agent: &str| {
        format!(r#"{{"agent":"{agent}","resources":{{"cpu":"10m","memory":"1Mi"}}}}"#)
    };
    let own = d.call_as(Some(&a1), "POST", "/v1/allocations", Some(&small("a1")));
    assert_eq!(own.status, 201, "{:?}", own.body);
    // no preempting the neighbours: at most its own priority (normal, without a record)
    let greedy = r#"{"agent":"a1","priority":900,"resources":{"cpu":"10m","memory":"1Mi"}}"#;
    let a = d.call_as(Some(&a1), "POST", "/v1/allocations", Some(greedy));
    assert_eq!(a.status, 403, "{:?}", a.body);
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("priority"),
        "{:?}",
        a.body
    );
    let other = d.call_as(Some(&a1), "POST", "/v1/allocations", Some(&small("a2")));
    assert_eq!(other.status, 403, "{:?}", other.body);
    assert_eq!(other.body["code"], "forbidden");
    let theirs = d.post("/v1/allocations", &small("a2"));
    assert_eq!(theirs.status, 201);
    let id = theirs.body["id"].as_str().expect("id");
    for (m, path, body) in [
        ("GET", format!("/v1/allocations/{id}"), None),
        ("DELETE", format!("/v1/allocations/{id}"), None),
        ("POST", format!("/v1/allocations/{id}/renew"), Some("{}")),
        ("GET", "/v1/agents/a2".to_owned(), None),
        ("DELETE", "/v1/agents/a2".to_owned(), None),
    ] {
        let a = d.call_as(Some(&a1), m, &path, body);
        assert_eq!(a.status, 404, "{m} {path}: {:?}", a.body);
    }
    assert_eq!(
        d.get(&format!("/v1/allocations/{id}")).body["state"],
        "granted"
    );
    // an idempotency key is the caller's own: the same key from another token is a new request
    let with_key = |token: &str, body: &str| -> Value {
        let mut resp = ureq::post(&format!("{}/v1/allocations", d.base))
            .config()
            .http_status_as_error(false)
            .build()
            .header("authorization", &format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "shared-key")
            .send(body.as_bytes())
            .expect("answer");
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or(Value::Null)
    };
    let first = with_key(&d.token, &small("a2"));
    let mine = with_key(&a1, &small("a1"));
    assert_eq!(first["agent"], "a2", "{first}");
    assert_eq!(mine["agent"], "a1", "{mine}");
    let listed = d.call_as(Some(&a1), "GET", "/v1/allocations", None);
    let agents: Vec<&str> = listed.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|a| a["agent"].as_str())
        .collect();
    assert_eq!(agents, ["a1", "a1"], "its two, none of a2's");
    let filtered = d.call_as(Some(&a1), "GET", "/v1/allocations?agent=a2", None);
    assert_eq!(filtered.body["items"], Value::Array(Vec::new()));
    for (m, path, body) in [
        ("POST", "/v1/pools", Some(r#"{"name":"p"}"#)),
        ("GET", "/v1/tokens", None),
        ("GET", "/v1/audit", None),
        ("GET", "/v1/state", None),
        ("GET", "/v1/events", None),
        ("GET", "/v1/metrics", None),
        (
            "POST",
            "/v1/agents",
            Some(r#"{"name":"a1.w","command":["true"],"resources":{}}"#),
        ),
        (
            "POST",
            "/v1/agents",
            Some(r#"{"name":"x","pid":1,"resources":{}}"#),
        ),
    ] {
        let a = d.call_as(Some(&a1), m, path, body);
        assert_eq!(a.status, 403, "{m} {path}: {:?}", a.body);
    }
    // what every agent may read
    for path in ["/v1/node", "/v1/nodes", "/v1/pools"] {
        assert_eq!(
            d.call_as(Some(&a1), "GET", path, None).status,
            200,
            "{path}"
        );
    }
    let fit = d.call_as(
        Some(&a1),
        "POST",
        "/v1/allocations?dry_run=true",
        Some(&small("anyone")),
    );
    assert_eq!(fit.status, 201, "{:?}", fit.body);
    // an observer reads and changes nothing
    let (_, obs) = token(&d, r#"{"name":"watcher","role":"observer"}"#);
    assert_eq!(
        d.call_as(Some(&obs), "GET", "/v1/allocations", None).status,
        200
    );
    assert_eq!(
        d.call_as(Some(&obs), "DELETE", &format!("/v1/allocations/{id}"), None)
            .status,
        403
    );
    // an operator runs the cluster but holds no keys
    let (_, op) = token(&d, r#"{"name":"ops","role":"operator"}"#);
    assert_eq!(
        d.call_as(Some(&op), "POST", "/v1/pools", Some(r#"{"name":"p"}"#))
            .status,
        201
    );
    assert_eq!(
        d.call_as(
            Some(&op),
            "POST",
            "/v1/tokens",
            Some(r#"{"name":"x","role":"admin"}"#)
        )
        .status,
        403
    );
    d.stop();
}

#[test]
fn revoked_and_expired_tokens_fail_at_once() {
    let d = Daemon::start(&temp_dir("revoke"), &["--capacity", "cpu=2,memory=1Gi"]);
    let (id, t) = token(&d, r#"{"name":"short","role":"observer"}"#);
    assert_eq!(d.call_as(Some(&t), "GET", "/v1/node", None).status, 200);
    let listed = d.get("/v1/tokens");
    let text = listed.body.to_string();
    assert!(text.contains(&id) && !text.contains(&t), "{text}");
    assert_eq!(d.delete(&format!("/v1/tokens/{id}")).status, 200);
    assert_eq!(d.call_as(Some(&t), "GET", "/v1/node", None).status, 401);
    assert_eq!(d.delete(&format!("/v1/tokens/{id}")).status, 404);
    let (_, brief) = token(&d, r#"{"name":"brief","role":"observer","ttl_s":1.5}"#);
    assert_eq!(d.call_as(Some(&brief), "GET", "/v1/node", None).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1800));
    assert_eq!(d.call_as(Some(&brief), "GET", "/v1/node", None).status, 401);
    // bad requests name the field
    let bad = d.post("/v1/tokens", r#"{"name":"x","role":"root"}"#);
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["errors"][0]["field"], "role");
    let bad = d.post("/v1/tokens", r#"{"name":"x","role":"agent"}"#);
    assert_eq!(bad.body["errors"][0]["field"], "agent");
    // a revocation survives a restart
    let dir = d.dir_of();
    d.stop();
    let d = Daemon::start(&dir, &["--capacity", "cpu=2,memory=1Gi"]);
    assert_eq!(d.call_as(Some(&t), "GET", "/v1/node", None).status, 401);
    d.stop();
}

#[test]
fn the_cli_finds_the_admin_token_and_manages_tokens() {
    let d = Daemon::start(&temp_dir("cli-tokens"), &["--capacity", "cpu=2,memory=1Gi"]);
    let o = qm(&["--server", &d.base, "status"]);
    assert!(o.status.success(), "{o:?}");
    let o = qm(&[
        "--server", &d.base, "tokens", "create", "ci", "--role", "observer",
    ]);
    assert!(o.status.success(), "{o:?}");
    let secret = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(secret.starts_with("qm_"), "{secret}");
    let o = qm(&["--server", &d.base, "--token", &secret, "pools", "ls"]);
    assert!(o.status.success(), "{o:?}");
    let o = qm(&["--server", &d.base, "-o", "json", "tokens", "ls"]);
    let list: Value = serde_json::from_slice(&o.stdout).expect("json");
    let id = list["items"][0]["id"].as_str().expect("id").to_owned();
    let o = qm(&["--server", &d.base, "tokens", "revoke", &id]);
    assert!(o.status.success(), "{o:?}");
    let o = qm(&["--server", &d.base, "--token", &secret, "pools", "ls"]);
    assert!(!o.status.success());
    d.stop();
}

fn agents_host() -> bool {
    let ok = root()
        && (Path::new("/sys/fs/cgroup/memory").is_dir()
            || Path::new("/sys/fs/cgroup/cgroup.controllers").is_file());
    if !ok {
        println!("skipped: needs root and writable cgroups");
    }
    ok
}

fn agent_daemon(tag: &str) -> Daemon {
    Daemon::with_agents(tag, "cpu=4,memory=4Gi", &[])
}

const PROBE: &str = r#"
id -u; id -G; grep NoNewPrivs /proc/self/status
code() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $QM_TOKEN" "$@"; }
echo "self:$(code "$QM_SERVER/v1/agents/$QM_AGENT")"
echo "other:$(code "$QM_SERVER/v1/agents/bystander")"
echo "spawn:$(code -X POST -H 'content-type: application/json' -d '{"name":"x","command":["id"],"resources":{}}' "$QM_SERVER/v1/agents")"
cg=$(grep -E '^[0-9]+:memory:' /proc/self/cgroup | cut -d: -f3)
if [ -n "$cg" ]; then f=/sys/fs/cgroup/memory$cg/memory.limit_in_bytes; p=/sys/fs/cgroup/memory/cgroup.procs;
else cg=$(grep -E '^0::' /proc/self/cgroup | cut -d: -f3); f=/sys/fs/cgroup$cg/memory.max; p=/sys/fs/cgroup/cgroup.procs; fi
if (echo 1099511627776 > "$f") 2>/dev/null; then echo limit:written; else echo limit:denied; fi
if (echo $$ > "$p") 2>/dev/null; then echo escape:moved; else echo escape:denied; fi
if cat /proc/$BYSTANDER/environ >/dev/null 2>&1; then echo environ:read; else echo environ:denied; fi
if kill -0 $BYSTANDER 2>/dev/null; then echo signal:sent; else echo signal:denied; fi
echo "token:$QM_TOKEN"
exec sleep 60
"#;

#[test]
fn a_spawned_agent_runs_as_a_user_of_its_own_with_a_token_for_itself_alone() {
    if !agents_host() {
        return;
    }
    let d = agent_daemon("sec-spawn");
    let bystander = d.post(
        "/v1/agents",
        r#"{"name":"bystander","command":["sleep","60"],"resources":{"cpu":"10m","memory":"16Mi"}}"#,
    );
    assert_eq!(bystander.status, 201, "{:?}", bystander.body);
    let bystander_pid = bystander.body["pid"].as_u64().expect("pid");
    let bystander_uid = bystander.body["spec"]["user"]
        .as_str()
        .and_then(|u| u.parse::<u32>().ok())
        .expect("a dynamic uid");
    let spec = serde_json::json!({
        "name": "prober",
        "command": ["sh", "-c", PROBE],
        "env": {"SECRET_KEY": "hunter2", "BYSTANDER": bystander_pid.to_string()},
        "resources": {"cpu": "10m", "memory": "32Mi"},
    });
    let made = d.post("/v1/agents", &spec.to_string());
    assert_eq!(made.status, 201, "{:?}", made.body);
    let logs = eventually("the probe's report", 20, || {
        let l = d.get("/v1/agents/prober/logs?tail=50").body;
        let lines: Vec<String> = l["stdout"]
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        lines
            .iter()
            .any(|l| l.starts_with("token:"))
            .then_some(lines)
    });
    let text = logs.join("\n");
    // a uid of its own, from the dynamic range, with its own group and no other
    let uid: u32 = logs[0].parse().expect("uid");
    assert!(
        (61184..=65519).contains(&uid) && uid != bystander_uid,
        "{text}"
    );
    assert_eq!(logs[1], logs[0], "{text}");
    assert_eq!(logs[2], "NoNewPrivs:\t1", "{text}");
    for want in [
        "self:200",
        "other:404",
        "spawn:403",
        "limit:denied",
        "escape:denied",
        "environ:denied",
        "signal:denied",
    ] {
        assert!(logs.iter().any(|l| l == want), "{want} missing:\n{text}");
    }
    let agent_token = logs
        .iter()
        .find_map(|l| l.strip_prefix("token:"))
        .expect("token")
        .to_owned();
    assert!(agent_token.starts_with("qm_"), "{text}");
    // nobody but the admin sees the agent's env values
    let (_, op) = token(&d, r#"{"name":"ops","role":"operator"}"#);
    let seen = d.call_as(Some(&op), "GET", "/v1/agents/prober", None);
    assert_eq!(seen.body["spec"]["env"]["SECRET_KEY"], "<redacted>");
    assert_eq!(
        d.get("/v1/agents/prober").body["spec"]["env"]["SECRET_KEY"],
        "hunter2"
    );
    // no token is kept in plaintext anywhere under the data dir, but the admin token file
    let (_, api_token) = token(&d, r#"{"name":"kept","role":"observer"}"#);
    let data = d.dir_of();
    let mut files = vec![data.clone()];
    let mut scanned = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(
                std::fs::read_dir(&p)
                    .expect("dir")
                    .flatten()
                    .map(|e| e.path()),
            );
            continue;
        }
        if p.ends_with("admin.token") || p.to_string_lossy().contains("/logs/") {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for secret in [&agent_token, &api_token, &d.token] {
            assert!(
                !text.contains(secret.as_str()),
                "a token in plaintext in {}",
                p.display()
            );
        }
        scanned += 1;
    }
    assert!(scanned >= 2, "scanned {scanned} files");
    // the agent's token ends with it
    assert_eq!(
        d.call_as(Some(&agent_token), "GET", "/v1/agents/prober", None)
            .status,
        200
    );
    assert_eq!(d.delete("/v1/agents/prober?grace_s=1").status, 200);
    assert_eq!(d.delete("/v1/agents/bystander?grace_s=1").status, 200);
    eventually("the agent's token revoked", 10, || {
        (d.call_as(Some(&agent_token), "GET", "/v1/agents/prober", None)
            .status
            == 401)
            .then_some(())
    });
    // uid 0 is an admin's alone
    let root_spec = r#"{"name":"r","command":["true"],"user":"root","resources":{}}"#;
    assert_eq!(
        d.call_as(Some(&op), "POST", "/v1/agents", Some(root_spec))
            .status,
        403
    );
    d.stop();
}

#[test]
fn an_orchestrator_spawns_its_swarm_and_nothing_else() {
    if !agents_host() {
        return;
    }
    let d = agent_daemon("sec-swarm");
    let (_, orch) = token(
        &d,
        r#"{"name":"orch","role":"agent","agent":"orch","spawn":true}"#,
    );
    let sub = |name: &str, extra: &str| {
        format!(
            r#"{{"name":"{name}","command":["sleep","30"],"resources":{{"cpu":"10m","memory":"8Mi"}}{extra}}}"#
        )
    };
    let w1 = d.call_as(Some(&orch), "POST", "/v1/agents", Some(&sub("orch.w1", "")));
    assert_eq!(w1.status, 201, "{:?}", w1.body);
    for (name, extra) in [
        ("other", ""),
        ("orch", ""),
        ("orchestra", ""),
        ("orch.w2", r#","user":"root""#),
        ("orch.w3", r#","priority_class":"critical""#),
        ("orch.w4", r#","allocation":"1000000""#),
    ] {
        let a = d.call_as(Some(&orch), "POST", "/v1/agents", Some(&sub(name, extra)));
        assert_eq!(a.status, 403, "{name}: {:?}", a.body);
    }
    let seen = d.call_as(Some(&orch), "GET", "/v1/agents", None);
    let names: Vec<&str> = seen.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["orch.w1"]);
    assert_eq!(
        d.call_as(Some(&orch), "DELETE", "/v1/agents/orch.w1?grace_s=1", None)
            .status,
        200
    );
    d.stop();
}

#[test]
fn init_the_daemon_and_strangers_processes_are_never_adopted() {
    if !agents_host() {
        return;
    }
    let d = agent_daemon("sec-adopt");
    let daemon_pid = d.child.id();
    for pid in [1, 2, daemon_pid] {
        let a = d.post(
            "/v1/agents",
            &format!(r#"{{"name":"x{pid}","pid":{pid},"resources":{{}}}}"#),
        );
        assert_eq!(a.status, 422, "pid {pid}: {:?}", a.body);
        assert_eq!(a.body["errors"][0]["field"], "pid", "{:?}", a.body);
    }
    // a process of another user: not an operator's to take
    let mut stranger = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "sleep",
            "30",
        ])
        .spawn()
        .expect("setpriv");
    let (_, op) = token(&d, r#"{"name":"ops","role":"operator"}"#);
    let body = format!(
        r#"{{"name":"stranger","pid":{},"resources":{{}}}}"#,
        stranger.id()
    );
    eventually("the stranger runs as nobody", 5, || {
        std::fs::read_to_string(format!("/proc/{}/status", stranger.id()))
            .ok()
            .filter(|s| s.contains("65534"))
    });
    let a = d.call_as(Some(&op), "POST", "/v1/agents", Some(&body));
    assert_eq!(a.status, 403, "{:?}", a.body);
    assert!(
        a.body["detail"].as_str().unwrap_or("").starts_with("pid"),
        "{:?}",
        a.body
    );
    assert_eq!(d.get("/v1/agents/stranger").status, 404);
    let _ = stranger.kill();
    let _ = stranger.wait();
    d.stop();
}

#[test]
fn the_audit_chain_verifies_until_a_row_is_edited() {
    let d = Daemon::start(&temp_dir("audit"), &["--capacity", "cpu=2,memory=1Gi"]);
    let granted = d.post(
        "/v1/allocations",
        r#"{"agent":"a","resources":{"cpu":"100m","memory":"1Mi"}}"#,
    );
    assert_eq!(granted.status, 201);
    let id = granted.body["id"].as_str().expect("id").to_owned();
    assert_eq!(d.delete(&format!("/v1/allocations/{id}")).status, 200);
    assert_eq!(
        d.post("/v1/pools", r#"{"name":"p","weight":-1}"#).status,
        422
    );
    assert_eq!(
        d.call_as(None, "DELETE", "/v1/pools/default", None).status,
        401
    );
    // (a refusal is recorded just after its answer)
    let items = eventually("the refusal in the audit log", 5, || {
        let log = d.get("/v1/audit");
        let items = log.body["items"].as_array()?.clone();
        items.iter().any(|e| e["status"] == 401).then_some(items)
    });
    let rows: Vec<(String, String, u64)> = items
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap_or("").to_owned(),
                e["path"].as_str().unwrap_or("").to_owned(),
                e["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let want = [
        ("POST", "/v1/allocations".to_owned(), 201),
        ("DELETE", format!("/v1/allocations/{id}"), 200),
        ("POST", "/v1/pools".to_owned(), 422),
        ("DELETE", "/v1/pools/default".to_owned(), 401),
    ];
    for (m, p, s) in &want {
        assert!(
            rows.iter()
                .any(|(rm, rp, rs)| rm == m && rp == p && rs == s),
            "{m} {p} {s} not in {rows:?}"
        );
    }
    let first = &items[0];
    assert_eq!(first["actor"]["token_id"], "bootstrap");
    assert_eq!(first["body_sha256"].as_str().map(str::len), Some(64));
    for w in items.windows(2) {
        assert_eq!(w[1]["prev"], w[0]["hash"]);
    }
    let o = qm(&["--server", &d.base, "audit", "ls"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        table.lines().any(|l| l.contains("admin-token-file")
            && l.contains("/v1/allocations")
            && l.ends_with("201")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("(no token)") && l.ends_with("401")),
        "{table}"
    );
    let dir = d.dir_of();
    d.stop();
    let verify = || {
        qm(&[
            "audit",
            "verify",
            "--data-dir",
            dir.to_str().expect("utf-8"),
        ])
    };
    let o = verify();
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("verified"),
        "{o:?}"
    );
    let edited = Command::new("sqlite3")
        .arg(dir.join("qm.db"))
        .arg("UPDATE audit SET body = replace(body, '\"status\":201', '\"status\":200') WHERE seq = 1")
        .status();
    if !edited.is_ok_and(|s| s.success()) {
        println!("skipped the tampering half: sqlite3 is not installed");
        return;
    }
    let o = verify();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("audit entry 1 does not verify"), "{said}");
}

#[test]
fn auth_none_is_for_loopback_only() {
    let dir = temp_dir("auth-none");
    let o = qm(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--insecure",
        "--auth",
        "none",
        "--data-dir",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("loopback"),
        "{o:?}"
    );
    let d = Daemon::start(&dir, &["--auth", "none", "--capacity", "cpu=1,memory=1Gi"]);
    assert_eq!(d.call_as(None, "GET", "/v1/node", None).status, 200);
    let o = qm(&["--server", &d.base, "status"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("auth        OFF"),
        "{o:?}"
    );
    d.stop();
}

#[test]
fn a_flood_of_refused_requests_costs_a_bounded_number_of_audit_rows() {
    let dir = temp_dir("flood");
    let config = dir.join("qm.toml");
    std::fs::write(
        &config,
        "[auth]\naudit_refused_per_s = 1\naudit_refused_burst = 20\npublic_metrics = true\n",
    )
    .expect("config");
    let d = Daemon::start(
        &dir.join("data"),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--capacity",
            "cpu=1,memory=1Gi",
        ],
    );
    // public metrics: Prometheus scrapes without a token, nothing else is open
    assert_eq!(d.call_as(None, "GET", "/metrics", None).status, 200);
    assert_eq!(d.call_as(None, "GET", "/v1/node", None).status, 401);
    let started = std::time::Instant::now();
    for _ in 0..300 {
        assert_eq!(
            d.call_as(None, "DELETE", "/v1/pools/default", None).status,
            401
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = || {
        d.get("/v1/audit?limit=1000").body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|e| e["status"] == 401)
            .count()
    };
    let recorded = eventually("the refusals recorded", 5, || {
        let n = count();
        (n >= 20).then_some(n)
    });
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bound = 20 + elapsed.ceil() as usize + 1;
    assert!(
        recorded <= bound,
        "{recorded} rows for 301 refusals (bound {bound})"
    );
    // once the bucket refills, the next refusal says how many went unrecorded: every refusal
    // is either a row or counted on one
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(d.call_as(None, "GET", "/v1/pools", None).status, 401);
    let accounted = eventually("the summary entry", 5, || {
        let items = d.get("/v1/audit?limit=1000").body["items"].clone();
        let refused: Vec<Value> = items
            .as_array()?
            .iter()
            .filter(|e| e["status"] == 401)
            .cloned()
            .collect();
        refused.iter().any(|e| e["path"] == "/v1/pools").then(|| {
            refused
                .iter()
                .map(|e| 1 + e["suppressed"].as_u64().unwrap_or(0))
                .sum::<u64>()
        })
    });
    assert_eq!(accounted, 302, "1 + 300 + 1 refusals");
    d.stop();
}
