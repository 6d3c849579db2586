//! The MCP tools: their catalog (name, description for a model to read, input schema,
//! hints) and their bodies, each a few API v1 calls turned into a short text for the model
//! and the daemon's JSON as structured content. `can_fit` is the one tool with arithmetic of
//! its own: a dry run for the verdict, the nodes' available vectors and the pool's limit for
//! the count.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::http::Method;
use qm_core::quantity::{self, Unit};
use qm_proto::{
    AgentDoc, AlertDoc, AllocationDoc, FleetDoc, NodeDoc, PoolDoc, PressureDoc, Problem,
};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::args::{
    ActiveAlertsArgs, AllocateArgs, CanFitArgs, ListAgentsArgs, ListAllocationsArgs, NoArgs,
    NodeStatusArgs, ReleaseArgs, ScaleFleetArgs, SpawnAgentArgs, StopAgentArgs, Wanted, parse,
};
use super::{ApiCall, Backend, BackendError, input_schema};

/// The name of every tool, in the catalog's order.
pub const TOOL_NAMES: &[&str] = &[
    "node_status",
    "cluster_status",
    "can_fit",
    "allocate",
    "release",
    "list_allocations",
    "pressure",
    "spawn_agent",
    "list_agents",
    "stop_agent",
    "scale_fleet",
    "active_alerts",
];

fn tool<T: rmcp::schemars::JsonSchema + 'static>(
    name: &'static str,
    description: &'static str,
    hints: ToolAnnotations,
) -> Tool {
    Tool::new(name, description, input_schema::<T>()).with_annotations(hints)
}

fn reads() -> ToolAnnotations {
    ToolAnnotations::new().read_only(true).open_world(false)
}

fn writes(destructive: bool, idempotent: bool) -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(false)
        .destructive(destructive)
        .idempotent(idempotent)
        .open_world(false)
}

/// Every tool, in [`TOOL_NAMES`] order.
pub(crate) fn catalog() -> Vec<Tool> {
    vec![
        tool::<NodeStatusArgs>(
            "node_status",
            "Show one node of the quartermaster resource manager (default: the machine the daemon \
             runs on): per resource (cpu in cores, memory in bytes, gpu) its capacity, \
             allocatable (capacity less reserves), allocated (held by granted allocations), \
             available (allocatable less allocated) and measured usage; whether it is ready; \
             its pressure level; and a summary of every pool (allocated, limit, queued). Use it \
             before starting work to see what is free.",
            reads(),
        ),
        tool::<NoArgs>(
            "cluster_status",
            "List every node known to quartermaster with capacity, allocatable, allocated, \
             available and usage, readiness and pressure, plus cluster totals and the pools. Use \
             it to see where capacity is free across machines.",
            reads(),
        ),
        tool::<CanFitArgs>(
            "can_fit",
            "Answer how many copies of a resource request (cpu, memory, gpu, ...) would fit right \
             now, without allocating anything: `count` is how many fit into free capacity on \
             ready nodes within the pool's limit, without preempting anyone; `fits_now` is the \
             scheduler's own dry-run verdict for one request (which may preempt lower-priority \
             work, listed in `would_preempt`). When nothing fits, `shortfall` says what is \
             missing on the closest node. Use it before allocate or spawn_agent to plan.",
            reads(),
        ),
        tool::<AllocateArgs>(
            "allocate",
            "Reserve resources for an agent from quartermaster. Granted at once when it fits \
             (possibly preempting preemptible lower-priority allocations, listed in \
             `preempted`); when it does not fit, fails with the shortfall, or waits in the \
             pool's queue if queue=true. Returns the allocation (its `id` is what release \
             takes). Release it when the work is done; with ttl_s it expires unless renewed.",
            writes(false, false),
        ),
        tool::<ReleaseArgs>(
            "release",
            "Release an allocation by id, returning its resources to the pool (a queued one is \
             cancelled). Releasing one that already ended changes nothing and returns it as it \
             is.",
            writes(true, true),
        ),
        tool::<ListAllocationsArgs>(
            "list_allocations",
            "List allocations, oldest first, optionally only one agent's, pool's, node's or \
             state's (state=granted: those holding resources now; queued: those waiting). Each \
             has its id, agent, pool, node, resources, priority, QoS class and state.",
            reads(),
        ),
        tool::<NoArgs>(
            "pressure",
            "Report resource pressure on the daemon's node: the overall level (ok, warning, \
             critical) and since when; the admission gate (open; best-effort-paused: requests \
             without resources are refused; paused: every request is refused); and per signal \
             (memory, cpu, disk, pids) its level, utilization 0..1, trend per second, forecast \
             seconds to exhaustion and anomaly flag. Check it before starting heavy work.",
            reads(),
        ),
        tool::<SpawnAgentArgs>(
            "spawn_agent",
            "Start a process as a quartermaster agent: the daemon requests an allocation for \
             it (the agent waits in the pool's queue if it does not fit now), starts the \
             command inside its cgroup with the resources as limits, logs its output to files \
             and restarts it per the restart policy. Returns the agent (its id is its name; \
             state starting, running or pending).",
            writes(false, false),
        ),
        tool::<ListAgentsArgs>(
            "list_agents",
            "List the agents quartermaster runs or adopted, optionally only those in one state \
             or fleet: each with its id, pid, state, allocation, restarts, exit code, fleet and \
             measured usage.",
            reads(),
        ),
        tool::<StopAgentArgs>(
            "stop_agent",
            "Stop an agent by id: SIGTERM, then SIGKILL after the grace period; its allocation \
             is released. Waits for the process to exit (at most the grace period and a few \
             seconds) and returns the agent, normally in state stopped.",
            writes(true, true),
        ),
        tool::<ScaleFleetArgs>(
            "scale_fleet",
            "Set how many members a fleet (agents started from one template) keeps running; \
             the daemon starts or stops members to match. A fleet with an autoscaler may \
             change the number again.",
            writes(true, true),
        ),
        tool::<ActiveAlertsArgs>(
            "active_alerts",
            "List alerts that are firing now (and, unless include_pending=false, pending ones \
             whose condition holds but not yet for long enough): rule, severity, summary, the \
             value that tripped it, and since when. An empty list means all is well.",
            reads(),
        ),
    ]
}

/// How the tools reach API v1 for one MCP request.
pub(crate) struct Api<'a> {
    pub(crate) backend: &'a dyn Backend,
    pub(crate) authorization: Option<String>,
}

impl Api<'_> {
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), Failure> {
        let call = ApiCall {
            method,
            path: path.to_owned(),
            body,
            authorization: self.authorization.clone(),
        };
        self.backend.call(call).await.map_err(Failure::from)
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        let (_, v) = self.send(Method::GET, path, None).await?;
        typed(v)
    }
}

pub(crate) fn typed<T: DeserializeOwned>(v: Value) -> Result<T, Failure> {
    serde_json::from_value(v.clone())
        .map_err(|e| Failure::Unreachable(format!("unexpected answer from the daemon: {e}: {v}")))
}

/// A tool's answer: text for the model, JSON for programs.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) text: String,
    pub(crate) structured: Value,
}

/// Why a tool failed; it becomes a tool error.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An argument is missing, unknown, of the wrong type or out of range.
    Invalid { argument: String, message: String },
    /// The daemon refused, with its problem.
    Refused(Box<Problem>),
    /// The daemon could not be reached or answered nonsense.
    Unreachable(String),
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Refused(p) => Failure::Refused(p),
            BackendError::Unreachable(r) => Failure::Unreachable(r),
        }
    }
}

impl Failure {
    /// One or a few sentences for the model.
    pub(crate) fn text(&self) -> String {
        match self {
            Failure::Invalid { argument, message } => {
                format!("invalid argument `{argument}`: {message}")
            }
            Failure::Refused(p) => {
                let mut s = format!("refused ({} {}): {}", p.status, p.code, p.detail);
                for e in &p.errors {
                    let _ = write!(s, "\n- {}: {}", e.field, e.message);
                }
                if let Some(short) = &p.shortfall {
                    let _ = write!(s, "\nshortfall: {}", show(short));
                }
                if let Some(r) = p.retry_after_s {
                    let _ = write!(s, "\nretry after {r} s");
                }
                s
            }
            Failure::Unreachable(r) => format!("cannot reach the quartermaster daemon: {r}"),
        }
    }

    /// The problem as JSON.
    pub(crate) fn structured(&self) -> Value {
        match self {
            Failure::Invalid { argument, message } => json!({
                "code": "invalid_argument", "argument": argument, "detail": message,
            }),
            Failure::Refused(p) => serde_json::to_value(p).unwrap_or(Value::Null),
            Failure::Unreachable(r) => json!({ "code": "unreachable", "detail": r }),
        }
    }
}

/// Runs tool `name` (one of [`TOOL_NAMES`]).
pub(crate) async fn run(api: &Api<'_>, name: &str, args: JsonObject) -> Result<Reply, Failure> {
    match name {
        "node_status" => node_status(api, parse(args)?).await,
        "cluster_status" => cluster_status(api, parse(args)?).await,
        "can_fit" => super::fit::can_fit(api, parse(args)?).await,
        "allocate" => allocate(api, parse(args)?).await,
        "release" => release(api, parse(args)?).await,
        "list_allocations" => list_allocations(api, parse(args)?).await,
        "pressure" => pressure(api, parse(args)?).await,
        "spawn_agent" => spawn_agent(api, parse(args)?).await,
        "list_agents" => list_agents(api, parse(args)?).await,
        "stop_agent" => stop_agent(api, parse(args)?).await,
        "scale_fleet" => scale_fleet(api, parse(args)?).await,
        "active_alerts" => active_alerts(api, parse(args)?).await,
        other => Err(Failure::Invalid {
            argument: "name".to_owned(),
            message: format!("no tool named {other:?}"),
        }),
    }
}

/// `cpu=1 memory=2Gi`, or `nothing`.
pub(crate) fn show(r: &BTreeMap<String, String>) -> String {
    if r.is_empty() {
        return "nothing".to_owned();
    }
    r.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn node_line(out: &mut String, n: &NodeDoc) {
    let _ = writeln!(
        out,
        "node {} ({}, {}, pressure {})",
        n.name,
        n.kind,
        if n.ready { "ready" } else { "NOT ready" },
        n.pressure
    );
    let names: std::collections::BTreeSet<&String> =
        n.capacity.keys().chain(n.allocated.keys()).collect();
    for r in names {
        let get = |m: &BTreeMap<String, String>| m.get(r).cloned().unwrap_or_else(|| "0".into());
        let _ = write!(
            out,
            "  {r}: capacity {}, allocatable {}, allocated {}, available {}",
            get(&n.capacity),
            get(&n.allocatable),
            get(&n.allocated),
            get(&n.available),
        );
        if let Some(u) = n.usage.as_ref().and_then(|u| u.get(r)) {
            let _ = write!(out, ", usage {u}");
        }
        out.push('\n');
    }
}

fn pools_lines(out: &mut String, pools: &[PoolDoc]) {
    for p in pools {
        let _ = write!(
            out,
            "pool {}: allocated {}, queued {}",
            p.name,
            show(&p.allocated),
            p.queued
        );
        if let Some(l) = &p.limit {
            let _ = write!(out, ", limit {}", show(l));
        }
        out.push('\n');
    }
}

async fn node_status(api: &Api<'_>, a: NodeStatusArgs) -> Result<Reply, Failure> {
    let node: NodeDoc = match &a.node {
        None => api.get("/v1/node").await?,
        Some(name) => {
            let nodes: Vec<NodeDoc> = api.get::<qm_proto::NodeList>("/v1/nodes").await?.items;
            let known: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
            nodes
                .into_iter()
                .find(|n| &n.name == name)
                .ok_or_else(|| Failure::Invalid {
                    argument: "node".to_owned(),
                    message: format!("no node {name:?} (nodes: {})", known.join(", ")),
                })?
        }
    };
    let pools: Vec<PoolDoc> = api.get::<qm_proto::PoolList>("/v1/pools").await?.items;
    let mut text = String::new();
    node_line(&mut text, &node);
    pools_lines(&mut text, &pools);
    Ok(Reply {
        text,
        structured: json!({ "node": node, "pools": pools }),
    })
}

/// Sums quantity maps per resource.
fn total<'a>(maps: impl Iterator<Item = &'a BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let mut sum: BTreeMap<String, u64> = BTreeMap::new();
    for m in maps {
        for (k, v) in m {
            let n = quantity::parse(Unit::for_resource(k), v).unwrap_or(0);
            let e = sum.entry(k.clone()).or_default();
            *e = e.saturating_add(n);
        }
    }
    sum.into_iter()
        .map(|(k, v)| {
            let text = quantity::format(Unit::for_resource(&k), v);
            (k, text)
        })
        .collect()
}

async fn cluster_status(api: &Api<'_>, _: NoArgs) -> Result<Reply, Failure> {
    let nodes: Vec<NodeDoc> = api.get::<qm_proto::NodeList>("/v1/nodes").await?.items;
    let pools: Vec<PoolDoc> = api.get::<qm_proto::PoolList>("/v1/pools").await?.items;
    let ready = nodes.iter().filter(|n| n.ready);
    let totals = json!({
        "nodes": nodes.len(),
        "ready": nodes.iter().filter(|n| n.ready).count(),
        "allocatable": total(ready.clone().map(|n| &n.allocatable)),
        "allocated": total(nodes.iter().map(|n| &n.allocated)),
        "available": total(ready.map(|n| &n.available)),
    });
    let mut text = format!(
        "{} nodes ({} ready); available on ready nodes: {}\n",
        nodes.len(),
        totals["ready"],
        show(&total(
            nodes.iter().filter(|n| n.ready).map(|n| &n.available)
        )),
    );
    for n in &nodes {
        node_line(&mut text, n);
    }
    pools_lines(&mut text, &pools);
    Ok(Reply {
        text,
        structured: json!({ "nodes": nodes, "pools": pools, "totals": totals }),
    })
}

fn alloc_line(a: &AllocationDoc) -> String {
    format!(
        "{} {} agent={} pool={} node={} {} priority={} qos={}{}",
        a.id,
        a.state,
        a.agent,
        a.pool,
        a.node.as_deref().unwrap_or("-"),
        show(&a.resources),
        a.priority,
        a.qos,
        a.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
    )
}

/// The request body shared by `allocate` and `can_fit`'s dry run.
pub(crate) fn request_body(
    agent: &str,
    wanted: &Wanted,
    pool: Option<&String>,
    priority: Option<i64>,
    priority_class: Option<&String>,
    node_selector: Option<&BTreeMap<String, String>>,
) -> serde_json::Map<String, Value> {
    let mut body = serde_json::Map::new();
    body.insert("agent".into(), json!(agent));
    body.insert("resources".into(), Value::Object(wanted.wire.clone()));
    if let Some(p) = pool {
        body.insert("pool".into(), json!(p));
    }
    if let Some(p) = priority {
        body.insert("priority".into(), json!(p));
    }
    if let Some(c) = priority_class {
        body.insert("priority_class".into(), json!(c));
    }
    if let Some(s) = node_selector {
        body.insert("node_selector".into(), json!(s));
    }
    body
}

async fn allocate(api: &Api<'_>, a: AllocateArgs) -> Result<Reply, Failure> {
    let wanted = Wanted::of(
        a.cpu.as_ref(),
        a.memory.as_ref(),
        a.gpu.as_ref(),
        a.extended.as_ref(),
    )?;
    let mut body = request_body(
        &a.agent,
        &wanted,
        a.pool.as_ref(),
        a.priority,
        a.priority_class.as_ref(),
        a.node_selector.as_ref(),
    );
    if let Some(l) = &a.limits {
        body.insert(
            "limits".into(),
            Value::Object(Wanted::map("limits", l)?.wire),
        );
    }
    if let Some(p) = a.preemptible {
        body.insert("preemptible".into(), json!(p));
    }
    if let Some(t) = a.ttl_s {
        body.insert("ttl_s".into(), json!(t));
    }
    if let Some(q) = a.queue {
        body.insert("queue".into(), json!(q));
    }
    if let Some(l) = &a.labels {
        body.insert("labels".into(), json!(l));
    }
    let (status, v) = api
        .send(Method::POST, "/v1/allocations", Some(Value::Object(body)))
        .await?;
    let preempted: Vec<String> = v["preempted"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let doc: AllocationDoc = typed(v)?;
    let mut text = match status {
        202 => format!(
            "queued allocation {} for {} in pool {}: it waits until {} fits; release it to \
             give up",
            doc.id,
            doc.agent,
            doc.pool,
            show(&doc.resources)
        ),
        _ => format!(
            "granted allocation {} for {} on node {}: {} (qos {}); release it when done",
            doc.id,
            doc.agent,
            doc.node.as_deref().unwrap_or("-"),
            show(&doc.resources),
            doc.qos
        ),
    };
    if !preempted.is_empty() {
        let _ = write!(text, "\npreempted: {}", preempted.join(", "));
    }
    Ok(Reply {
        text,
        structured: json!({
            "granted": status == 201,
            "allocation": doc,
            "preempted": preempted,
        }),
    })
}

async fn release(api: &Api<'_>, a: ReleaseArgs) -> Result<Reply, Failure> {
    let (_, v) = api
        .send(
            Method::DELETE,
            &format!("/v1/allocations/{}", encode(&a.id)),
            None,
        )
        .await?;
    let doc: AllocationDoc = typed(v)?;
    Ok(Reply {
        text: format!("allocation {} is now {}", doc.id, doc.state),
        structured: json!({ "allocation": doc }),
    })
}

async fn list_allocations(api: &Api<'_>, a: ListAllocationsArgs) -> Result<Reply, Failure> {
    let mut q = vec![format!("limit={}", a.limit.unwrap_or(100))];
    for (k, v) in [
        ("agent", &a.agent),
        ("pool", &a.pool),
        ("state", &a.state),
        ("node", &a.node),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", encode(v)));
        }
    }
    let items = api
        .get::<qm_proto::AllocationList>(&format!("/v1/allocations?{}", q.join("&")))
        .await?
        .items;
    let mut text = format!("{} allocations\n", items.len());
    for d in &items {
        text.push_str(&alloc_line(d));
        text.push('\n');
    }
    Ok(Reply {
        text,
        structured: json!({ "items": items }),
    })
}

async fn pressure(api: &Api<'_>, _: NoArgs) -> Result<Reply, Failure> {
    let (_, v) = api.send(Method::GET, "/v1/pressure", None).await?;
    let doc: PressureDoc = typed(v.clone())?;
    let mut text = format!(
        "pressure {} since {}; admission {}\n",
        doc.level, doc.since, doc.admission
    );
    for (name, s) in &doc.signals {
        let _ = write!(
            text,
            "{name}: {} at {:.0}% utilization",
            s.level,
            s.utilization * 100.0
        );
        if let Some(t) = s.exhaustion_in_s {
            let _ = write!(text, ", exhausted in about {t:.0} s at this trend");
        }
        if s.anomaly {
            let _ = write!(text, ", anomalous (score {:.1})", s.anomaly_score);
        }
        text.push('\n');
    }
    Ok(Reply {
        text,
        structured: v,
    })
}

fn agent_line(a: &AgentDoc) -> String {
    let mut s = format!("{} {}", a.id, a.state);
    if let Some(pid) = a.pid {
        let _ = write!(s, " pid={pid}");
    }
    if let Some(al) = &a.allocation {
        let _ = write!(s, " allocation={al}");
    }
    if let Some(f) = &a.fleet {
        let _ = write!(s, " fleet={f}");
    }
    if a.restarts > 0 {
        let _ = write!(s, " restarts={}", a.restarts);
    }
    if let Some(c) = a.exit_code {
        let _ = write!(s, " exit_code={c}");
    }
    if let Some(r) = &a.reason {
        let _ = write!(s, " ({r})");
    }
    s
}

async fn spawn_agent(api: &Api<'_>, a: SpawnAgentArgs) -> Result<Reply, Failure> {
    if a.command.is_empty() {
        return Err(Failure::Invalid {
            argument: "command".to_owned(),
            message: "give the program and its arguments, e.g. [\"sleep\", \"60\"]".to_owned(),
        });
    }
    let wanted = Wanted::of(
        a.cpu.as_ref(),
        a.memory.as_ref(),
        a.gpu.as_ref(),
        a.extended.as_ref(),
    )?;
    let mut body = serde_json::Map::new();
    body.insert("name".into(), json!(a.name));
    body.insert("command".into(), json!(a.command));
    body.insert("resources".into(), Value::Object(wanted.wire));
    if let Some(l) = &a.limits {
        body.insert(
            "limits".into(),
            Value::Object(Wanted::map("limits", l)?.wire),
        );
    }
    for (k, v) in [
        ("pool", a.pool.map(Value::from)),
        ("priority", a.priority.map(Value::from)),
        ("priority_class", a.priority_class.map(Value::from)),
        ("restart", a.restart.map(Value::from)),
        ("cwd", a.cwd.map(Value::from)),
        ("env", a.env.map(|e| json!(e))),
        ("labels", a.labels.map(|l| json!(l))),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    }
    let (_, v) = api
        .send(Method::POST, "/v1/agents", Some(Value::Object(body)))
        .await?;
    let doc: AgentDoc = typed(v)?;
    let text = if doc.state == "pending" {
        format!(
            "agent {} is pending: it waits in the pool's queue for its allocation",
            doc.id
        )
    } else {
        format!("agent {}", agent_line(&doc))
    };
    Ok(Reply {
        text,
        structured: json!({ "agent": doc }),
    })
}

async fn list_agents(api: &Api<'_>, a: ListAgentsArgs) -> Result<Reply, Failure> {
    let items: Vec<AgentDoc> = api
        .get::<qm_proto::AgentList>("/v1/agents")
        .await?
        .items
        .into_iter()
        .filter(|d| a.state.as_ref().is_none_or(|s| &d.state == s))
        .filter(|d| a.fleet.is_none() || d.fleet == a.fleet)
        .collect();
    let mut text = format!("{} agents\n", items.len());
    for d in &items {
        text.push_str(&agent_line(d));
        text.push('\n');
    }
    Ok(Reply {
        text,
        structured: json!({ "items": items }),
    })
}

async fn stop_agent(api: &Api<'_>, a: StopAgentArgs) -> Result<Reply, Failure> {
    let mut path = format!("/v1/agents/{}", encode(&a.id));
    if let Some(g) = a.grace_s {
        let _ = write!(path, "?grace_s={g}");
    }
    let (_, v) = api.send(Method::DELETE, &path, None).await?;
    let mut doc: AgentDoc = typed(v)?;
    // The daemon answers once the signal is sent; wait for the exit, past the grace period
    // (when SIGKILL follows) by a little.
    let grace = a
        .grace_s
        .filter(|g| g.is_finite())
        .unwrap_or(10.0)
        .clamp(0.0, 60.0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs_f64(grace + 5.0);
    while doc.state == "running" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        doc = api.get(&format!("/v1/agents/{}", encode(&a.id))).await?;
    }
    Ok(Reply {
        text: format!("agent {}", agent_line(&doc)),
        structured: json!({ "agent": doc }),
    })
}

async fn scale_fleet(api: &Api<'_>, a: ScaleFleetArgs) -> Result<Reply, Failure> {
    let path = format!("/v1/fleets/{}", encode(&a.name));
    let fleet: FleetDoc = api.get(&path).await?;
    let before = fleet.replicas;
    let spec = json!({
        "name": fleet.name,
        "template": fleet.template,
        "replicas": a.replicas,
        "autoscale": fleet.autoscale,
    });
    let (_, v) = api.send(Method::PUT, &path, Some(spec)).await?;
    let doc: FleetDoc = typed(v)?;
    let mut text = format!(
        "fleet {}: replicas {} -> {} ({} members, {} ready)",
        doc.name,
        before,
        doc.replicas,
        doc.members.len(),
        doc.ready
    );
    if doc.autoscale.is_some() {
        text.push_str("\nit has an autoscaler, which may change the replicas again");
    }
    Ok(Reply {
        text,
        structured: json!({ "fleet": doc, "previous_replicas": before }),
    })
}

async fn active_alerts(api: &Api<'_>, a: ActiveAlertsArgs) -> Result<Reply, Failure> {
    let pending = a.include_pending.unwrap_or(true);
    let items: Vec<AlertDoc> = api
        .get::<qm_proto::AlertList>("/v1/alerts")
        .await?
        .items
        .into_iter()
        .filter(|d| d.state == "firing" || (pending && d.state == "pending"))
        .collect();
    let mut text = if items.is_empty() {
        "no active alerts\n".to_owned()
    } else {
        format!("{} active alerts\n", items.len())
    };
    for d in &items {
        let _ = writeln!(
            text,
            "{} {} {} (value {}, since {}){}",
            d.state,
            d.severity,
            d.rule,
            d.value,
            d.fired_at.as_deref().unwrap_or(&d.pending_since),
            d.summary
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        );
    }
    Ok(Reply {
        text,
        structured: json!({ "items": items }),
    })
}
