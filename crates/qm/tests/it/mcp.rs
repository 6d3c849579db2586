//! The MCP server end to end, through rmcp's own client: over streamable HTTP at the daemon's
//! `/mcp`, and over stdio through `qm mcp` started as a child process. Both list the thirteen
//! tools with their input schemas, and every tool has real effects on a live daemon
//! (allocations, `can_fit` counts, a `sleep` agent started and stopped, a fleet scaled); both
//! resources read; bad arguments and refusals come back as tool errors that name the argument
//! or carry the shortfall. Agents run without cgroups here.

use std::path::Path;

use rmcp::model::{CallToolRequestParams, ClientConfig, ReadResourceRequestParams};
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::agents::alive;
use crate::daemon::{Daemon, eventually, temp_dir};

const CONFIG: &str =
    "[agents]\ncgroups = false\n[monitor]\ninterval_s = 0.2\nagent_interval_s = 0.2\n";

fn start(dir: &Path) -> Daemon {
    let config = dir.join("qm.toml");
    std::fs::write(&config, CONFIG).expect("config");
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

/// An MCP client session and the runtime it runs on.
struct Session {
    rt: tokio::runtime::Runtime,
    client: Option<RunningService<RoleClient, ClientConfig>>,
}

/// A tool's answer as JSON: `content`, `structuredContent`, `isError`.
struct Called(Value);

impl Called {
    fn text(&self) -> String {
        self.0["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn is_error(&self) -> bool {
        self.0["isError"] == true
    }

    fn data(&self) -> &Value {
        &self.0["structuredContent"]
    }
}

impl Session {
    /// A session over streamable HTTP with `token`, or the error initializing it.
    fn try_http(base: &str, token: Option<&str>) -> Result<Self, String> {
        let rt = runtime();
        let client = rt.block_on(async {
            let mut config = rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"));
            if let Some(t) = token {
                config = config.auth_header(t);
            }
            let transport = StreamableHttpClientTransport::from_config(config);
            ClientConfig::default().serve(transport).await
        });
        let client = client.map_err(|e| e.to_string())?;
        Ok(Self {
            rt,
            client: Some(client),
        })
    }

    fn http(base: &str, token: &str) -> Self {
        Self::try_http(base, Some(token)).expect("initialize over HTTP")
    }

    fn stdio(base: &str, token: &str) -> Self {
        let rt = runtime();
        let client = rt.block_on(async {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_qm"));
            cmd.args(["--server", base, "mcp"])
                .env("QM_LOG", "error")
                .env("QM_TOKEN", token);
            let transport = TokioChildProcess::new(cmd).expect("start qm mcp");
            ClientConfig::default()
                .serve(transport)
                .await
                .expect("initialize over stdio")
        });
        Self {
            rt,
            client: Some(client),
        }
    }

    fn client(&self) -> &RunningService<RoleClient, ClientConfig> {
        self.client.as_ref().expect("open")
    }

    fn call(&self, tool: &str, args: Value) -> Called {
        let Value::Object(args) = args else {
            panic!("arguments must be an object")
        };
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
        let result = self
            .rt
            .block_on(self.client().call_tool(params))
            .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"));
        Called(serde_json::to_value(&result).expect("json"))
    }

    /// Calls a tool that must succeed and returns its structured content.
    fn ok(&self, tool: &str, args: Value) -> Value {
        let c = self.call(tool, args);
        assert!(!c.is_error(), "{tool} failed: {}", c.text());
        assert!(!c.text().is_empty(), "{tool}: no text");
        c.data().clone()
    }

    /// Calls a tool that must fail and returns its text and structured problem.
    fn fails(&self, tool: &str, args: Value) -> (String, Value) {
        let c = self.call(tool, args);
        assert!(c.is_error(), "{tool} should have failed: {}", c.text());
        (c.text(), c.data().clone())
    }

    fn read(&self, uri: &str) -> Result<Value, String> {
        let r = self
            .rt
            .block_on(
                self.client()
                    .read_resource(ReadResourceRequestParams::new(uri)),
            )
            .map_err(|e| e.to_string())?;
        let r = serde_json::to_value(&r).expect("json");
        assert_eq!(r["contents"][0]["uri"], uri, "{r}");
        assert_eq!(r["contents"][0]["mimeType"], "application/json", "{r}");
        serde_json::from_str(r["contents"][0]["text"].as_str().unwrap_or_default())
            .map_err(|e| e.to_string())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.cancel());
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn schemas(s: &Session) {
    let tools =
        s.rt.block_on(s.client().list_all_tools())
            .expect("tools/list");
    let tools: Vec<Value> = tools
        .iter()
        .map(|t| serde_json::to_value(t).expect("json"))
        .collect();
    let mut names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort_unstable();
    let mut want = qm_api::mcp::TOOL_NAMES.to_vec();
    want.sort_unstable();
    assert_eq!(names, want);
    let tool = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .expect("listed")
    };
    for t in &tools {
        assert!(
            t["description"].as_str().is_some_and(|d| d.len() > 60),
            "{t}"
        );
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
    }
    let alloc = &tool("allocate")["inputSchema"];
    assert_eq!(alloc["required"], json!(["agent"]), "{alloc}");
    assert_eq!(alloc["properties"]["agent"]["type"], "string");
    assert_eq!(
        alloc["properties"]["cpu"]["type"],
        json!(["string", "number"])
    );
    assert_eq!(alloc["additionalProperties"], false);
    let spawn = &tool("spawn_agent")["inputSchema"];
    assert_eq!(spawn["required"], json!(["name", "command"]), "{spawn}");
    assert_eq!(spawn["properties"]["command"]["type"], "array");
    let scale = &tool("scale_fleet")["inputSchema"];
    assert_eq!(scale["required"], json!(["name", "replicas"]), "{scale}");
    assert_eq!(scale["properties"]["replicas"]["type"], "integer");
    assert_eq!(scale["properties"]["replicas"]["minimum"], 0);
    assert!(
        tool("can_fit")["inputSchema"]["required"].is_null(),
        "can_fit needs no argument"
    );
    assert_eq!(tool("release")["annotations"]["destructiveHint"], true);
    assert_eq!(tool("node_status")["annotations"]["readOnlyHint"], true);
}

fn allocations(s: &Session) {
    let node = s.ok("node_status", json!({}));
    assert_eq!(node["node"]["name"], "test-node");
    assert_eq!(node["node"]["capacity"]["cpu"], "4");
    assert!(node["pools"].as_array().is_some_and(|p| !p.is_empty()));
    let cluster = s.ok("cluster_status", json!({}));
    assert_eq!(cluster["nodes"].as_array().map(Vec::len), Some(1));
    assert_eq!(cluster["totals"]["available"]["cpu"], "4");
    assert_eq!(cluster["cluster"]["store"], "sqlite");
    assert_eq!(cluster["cluster"]["leader"], "test-node");

    let fit = s.ok("can_fit", json!({ "cpu": 1 }));
    assert_eq!(fit["count"], 4, "{fit}");
    assert_eq!(fit["fits_now"], true);
    let fit = s.ok("can_fit", json!({}));
    assert!(fit["count"].is_null(), "best-effort is not counted: {fit}");
    assert_eq!(fit["fits_now"], true);
    let granted = s.ok(
        "allocate",
        json!({ "agent": "mcp-1", "cpu": "1", "memory": "256Mi" }),
    );
    assert_eq!(granted["granted"], true, "{granted}");
    let id = granted["allocation"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    assert_eq!(granted["allocation"]["state"], "granted");
    let fit = s.ok("can_fit", json!({ "cpu": "1000m" }));
    assert_eq!(fit["count"], 3, "{fit}");
    let fit = s.ok("can_fit", json!({ "cpu": 1, "memory": "2Gi" }));
    assert_eq!(fit["count"], 1, "memory binds: 3.75Gi free: {fit}");
    assert_eq!(fit["per_node"][0]["limited_by"], "memory");

    let listed = s.ok(
        "list_allocations",
        json!({ "agent": "mcp-1", "state": "granted" }),
    );
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()]);

    // over capacity: a tool error with the shortfall
    let (text, problem) = s.fails("allocate", json!({ "agent": "big", "cpu": 8 }));
    assert_eq!(problem["code"], "insufficient_resources", "{problem}");
    assert_eq!(problem["shortfall"]["cpu"], "5", "{problem}");
    assert!(text.contains("shortfall: cpu=5"), "{text}");
    let fit = s.ok("can_fit", json!({ "cpu": 8 }));
    assert_eq!(fit["count"], 0, "{fit}");
    assert_eq!(fit["fits_now"], false);
    assert_eq!(fit["shortfall"]["cpu"], "5", "{fit}");

    let released = s.ok("release", json!({ "id": id }));
    assert_eq!(released["allocation"]["state"], "released");
    let listed = s.ok(
        "list_allocations",
        json!({ "agent": "mcp-1", "state": "granted" }),
    );
    assert_eq!(listed["items"], json!([]));
    let listed = s.ok("list_allocations", json!({ "agent": "mcp-1" }));
    assert_eq!(listed["items"][0]["state"], "released");
    assert_eq!(s.ok("can_fit", json!({ "cpu": 1 }))["count"], 4);
    let (_, problem) = s.fails("release", json!({ "id": "no-such-id" }));
    assert_eq!(problem["code"], "not_found", "{problem}");
}

fn bad_arguments(s: &Session) {
    let cases = [
        ("allocate", json!({ "cpu": 1 }), "`agent`"),
        (
            "allocate",
            json!({ "agent": "a", "memory": "lots" }),
            "`memory`",
        ),
        ("allocate", json!({ "agent": "a", "cpu": -1 }), "`cpu`"),
        ("allocate", json!({ "agent": "a", "cpu": true }), "`cpu`"),
        ("allocate", json!({ "agent": "a", "cpus": 1 }), "`cpus`"),
        (
            "allocate",
            json!({ "agent": "a", "priority": "high" }),
            "`priority`",
        ),
        ("can_fit", json!({ "memory": "-1Gi" }), "`memory`"),
        (
            "can_fit",
            json!({ "extended": { "gpu-ish": "x" } }),
            "`extended.gpu-ish`",
        ),
        (
            "scale_fleet",
            json!({ "name": "f", "replicas": -2 }),
            "`replicas`",
        ),
        ("scale_fleet", json!({ "name": "f" }), "`replicas`"),
        ("list_allocations", json!({ "limit": "ten" }), "`limit`"),
        (
            "spawn_agent",
            json!({ "name": "x", "command": [] }),
            "`command`",
        ),
        ("stop_agent", json!({}), "`id`"),
    ];
    for (tool, args, named) in cases {
        let (text, problem) = s.fails(tool, args.clone());
        assert!(text.contains(named), "{tool} {args}: {text}");
        assert_eq!(problem["code"], "invalid_argument", "{problem}");
    }
    // what only the daemon knows it reports, field named
    let (text, problem) = s.fails("allocate", json!({ "agent": "a", "priority": 5000 }));
    assert_eq!(problem["code"], "validation_failed", "{problem}");
    assert!(text.contains("priority"), "{text}");
    let (text, _) = s.fails(
        "allocate",
        json!({ "agent": "a", "pool": "nope", "cpu": 1 }),
    );
    assert!(text.contains("pool"), "{text}");
    // an unknown tool is a protocol error, not a crash
    let params = CallToolRequestParams::new("launch_rockets");
    assert!(s.rt.block_on(s.client().call_tool(params)).is_err());
}

fn agents_and_fleets(s: &Session, d: &Daemon, tag: &str) {
    let name = format!("sleeper-{tag}");
    let spawned = s.ok(
        "spawn_agent",
        json!({ "name": name, "command": ["sleep", "60"], "cpu": "100m", "memory": "32Mi" }),
    );
    assert_eq!(spawned["agent"]["id"], name.as_str(), "{spawned}");
    let pid = eventually("the agent running", 10, || {
        let listed = s.ok("list_agents", json!({ "state": "running" }));
        listed["items"]
            .as_array()?
            .iter()
            .find(|a| a["id"] == name.as_str())
            .and_then(|a| a["pid"].as_u64())
    });
    assert!(alive(pid), "sleep {pid} runs");
    let stopped = s.ok("stop_agent", json!({ "id": name, "grace_s": 1 }));
    assert_eq!(stopped["agent"]["state"], "stopped", "{stopped}");
    eventually("the sleep gone", 10, || (!alive(pid)).then_some(()));
    let (_, problem) = s.fails("stop_agent", json!({ "id": "nobody" }));
    assert_eq!(problem["code"], "not_found", "{problem}");

    let fleet = format!("crew-{tag}");
    let created = d.post(
        "/v1/fleets",
        &json!({
            "name": fleet,
            "replicas": 1,
            "template": { "name": "member", "command": ["sleep", "60"], "resources": { "cpu": "100m", "memory": "32Mi" } },
        })
        .to_string(),
    );
    assert!(created.status < 300, "{:?}", created.body);
    let running = |n: usize| {
        eventually(&format!("{n} fleet members running"), 10, || {
            let listed = s.ok("list_agents", json!({ "fleet": fleet, "state": "running" }));
            (listed["items"].as_array()?.len() == n).then_some(())
        });
    };
    running(1);
    let scaled = s.ok("scale_fleet", json!({ "name": fleet, "replicas": 2 }));
    assert_eq!(scaled["fleet"]["replicas"], 2, "{scaled}");
    assert_eq!(scaled["previous_replicas"], 1);
    running(2);
    assert_eq!(d.get(&format!("/v1/fleets/{fleet}")).body["replicas"], 2);
    s.ok("scale_fleet", json!({ "name": fleet, "replicas": 0 }));
    running(0);
    let (_, problem) = s.fails("scale_fleet", json!({ "name": "no-fleet", "replicas": 1 }));
    assert_eq!(problem["code"], "not_found", "{problem}");
}

fn monitoring(s: &Session) {
    let p = eventually("pressure known", 10, || {
        let c = s.call("pressure", json!({}));
        (!c.is_error()).then(|| c.data().clone())
    });
    assert!(
        ["ok", "warning", "critical"].contains(&p["level"].as_str().unwrap_or_default()),
        "{p}"
    );
    assert!(p["admission"].is_string(), "{p}");
    assert!(p["signals"]["memory"]["level"].is_string(), "{p}");
    let alerts = s.ok("active_alerts", json!({}));
    assert!(alerts["items"].is_array(), "{alerts}");
    let recs = s.ok("recommend", json!({ "target": "fleet/coders" }));
    assert!(recs["items"].is_array(), "{recs}");
    let (bad, _) = s.fails("recommend", json!({ "target": "coders" }));
    assert!(bad.contains("target"), "{bad}");

    let listed =
        s.rt.block_on(s.client().list_all_resources())
            .expect("resources/list");
    let mut uris: Vec<String> = listed.iter().map(|r| r.uri.clone()).collect();
    uris.sort();
    assert_eq!(uris, ["qm://node", "qm://pressure"]);
    let node = s.read("qm://node").expect("node");
    assert_eq!(node["name"], "test-node");
    assert_eq!(node["allocatable"]["memory"], "4Gi");
    let pressure = eventually("the pressure resource", 10, || s.read("qm://pressure").ok());
    assert!(pressure["level"].is_string(), "{pressure}");
    assert!(s.read("qm://nothing").is_err());
}

fn exercise(s: &Session, d: &Daemon, tag: &str) {
    schemas(s);
    allocations(s);
    bad_arguments(s);
    agents_and_fleets(s, d, tag);
    monitoring(s);
}

#[test]
fn mcp_over_streamable_http_at_the_daemon() {
    let dir = temp_dir("mcp-http");
    let d = start(&dir);
    let s = Session::http(&d.base, &d.token);
    exercise(&s, &d, "http");
    // an open session does not hold up a graceful shutdown
    d.stop();
    drop(s);
}

#[test]
fn mcp_over_stdio_through_qm_mcp() {
    let dir = temp_dir("mcp-stdio");
    let d = start(&dir);
    let s = Session::stdio(&d.base, &d.token);
    exercise(&s, &d, "stdio");
    drop(s);
    d.stop();
}

#[test]
fn qm_mcp_reports_an_unreachable_daemon_as_a_tool_error() {
    let s = Session::stdio("http://127.0.0.1:9", "qm_none_0");
    let (text, problem) = s.fails("node_status", json!({}));
    assert!(text.contains("cannot reach"), "{text}");
    assert_eq!(problem["code"], "unreachable");
    assert!(s.read("qm://node").is_err());
}

#[test]
fn mcp_needs_a_token_and_its_tools_act_with_the_callers_rights() {
    let dir = temp_dir("mcp-auth");
    let d = start(&dir);
    let refused = Session::try_http(&d.base, None);
    assert!(refused.is_err(), "an MCP session opened without a token");
    let bad = Session::try_http(&d.base, Some("qm_0000_0000"));
    assert!(bad.is_err(), "an MCP session opened with a made-up token");
    // an agent token: may allocate for itself, not for another agent
    let made = d.post(
        "/v1/tokens",
        r#"{"name":"coder","role":"agent","agent":"mcp-coder"}"#,
    );
    assert_eq!(made.status, 201, "{:?}", made.body);
    let token = made.body["token"].as_str().expect("token").to_owned();
    let s = Session::http(&d.base, &token);
    let own = s.ok(
        "allocate",
        json!({"agent": "mcp-coder", "cpu": "10m", "memory": "1Mi"}),
    );
    assert_eq!(own["allocation"]["state"], "granted", "{own}");
    let (text, problem) = s.fails(
        "allocate",
        json!({"agent": "someone-else", "cpu": "10m", "memory": "1Mi"}),
    );
    assert_eq!(problem["code"], "forbidden", "{text}");
    // its list holds its own allocation only
    d.post(
        "/v1/allocations",
        r#"{"agent":"neighbour","resources":{"cpu":"10m","memory":"1Mi"}}"#,
    );
    let listed = s.ok("list_allocations", json!({}));
    let text = listed.to_string();
    assert!(
        text.contains("mcp-coder") && !text.contains("neighbour"),
        "{text}"
    );
    drop(s);
    d.stop();
}
