//! The tools' plumbing (how they call API v1, what they answer, how they fail, the dispatch
//! by name) and the node, allocation, pressure and alert tools, each a few API v1 calls turned
//! into a short text for the model and the daemon's JSON as structured content. The agent
//! tools are in `agents.rs`, `can_fit` in `fit.rs`, the descriptions in `catalog.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::http::Method;
use qm_core::quantity::{self, Unit};
use qm_proto::{AlertDoc, AllocationDoc, NodeDoc, PoolDoc, PressureDoc, Problem};
use rmcp::model::JsonObject;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::args::{
    ActiveAlertsArgs, AllocateArgs, ListAllocationsArgs, NoArgs, NodeStatusArgs, ReleaseArgs,
    Wanted, parse,
};
use super::{ApiCall, Backend, BackendError};

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

impl Reply {
    /// A list: "N <what>" then one line per item, and `{"items": [...]}`.
    pub(crate) fn list<T: serde::Serialize>(
        what: &str,
        items: &[T],
        line: impl Fn(&T) -> String,
    ) -> Self {
        let mut text = format!("{} {what}\n", items.len());
        for d in items {
            text.push_str(&line(d));
            text.push('\n');
        }
        Reply {
            text,
            structured: json!({ "items": items }),
        }
    }
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
        "spawn_agent" => super::agents::spawn_agent(api, parse(args)?).await,
        "list_agents" => super::agents::list_agents(api, parse(args)?).await,
        "stop_agent" => super::agents::stop_agent(api, parse(args)?).await,
        "scale_fleet" => super::agents::scale_fleet(api, parse(args)?).await,
        "active_alerts" => active_alerts(api, parse(args)?).await,
        "recommend" => super::agents::recommend(api, parse(args)?).await,
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
    let cluster: qm_proto::ClusterDoc = api.get("/v1/cluster").await?;
    let ready = nodes.iter().filter(|n| n.ready);
    let totals = json!({
        "nodes": nodes.len(),
        "ready": nodes.iter().filter(|n| n.ready).count(),
        "allocatable": total(ready.clone().map(|n| &n.allocatable)),
        "allocated": total(nodes.iter().map(|n| &n.allocated)),
        "available": total(ready.map(|n| &n.available)),
    });
    let mut text = format!(
        "cluster on {}: leader {}, members {}\n",
        cluster.store,
        cluster.leader.as_deref().unwrap_or("(none elected)"),
        cluster
            .members
            .iter()
            .map(|m| format!("{}{}", m.name, if m.ready { "" } else { " (not ready)" }))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        text,
        "{} nodes ({} ready); available on ready nodes: {}",
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
        structured: json!({ "cluster": cluster, "nodes": nodes, "pools": pools, "totals": totals }),
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
    Ok(Reply::list("allocations", &items, alloc_line))
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
