//! The documents of API v1: allocation requests and allocations, nodes, pools, and lists.
//! Requests reject unknown fields; responses print quantities canonically and times in
//! RFC 3339.

use std::collections::BTreeMap;

use qm_core::{
    AllocId, AllocState, Allocation, AllocationRecord, Labels, Node, NodeSpec, Pool, PoolSpec,
    Priority, PriorityClass, Request, ResourceCatalog, Resources, State, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::problem::FieldProblem;
use crate::resources::{WireResources, parse_resources, render_resources};
use crate::time::{format_rfc3339, parse_rfc3339};

/// The longest lease a request may ask for: ten years.
const MAX_TTL_S: f64 = 10.0 * 365.0 * 86_400.0;

fn problem(field: &str, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn ttl_ms(field: &str, ttl_s: f64) -> Result<u64, FieldProblem> {
    if !ttl_s.is_finite() || ttl_s <= 0.0 || ttl_s > MAX_TTL_S {
        return Err(problem(
            field,
            format!("{ttl_s} must be a number of seconds above 0 and at most {MAX_TTL_S}"),
        ));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(((ttl_s * 1000.0).round() as u64).max(1))
}

/// `POST /v1/allocations`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocationRequest {
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$")]
    pub agent: String,
    #[schema(value_type = Object)]
    pub resources: WireResources,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub limits: Option<WireResources>,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default, deserialize_with = "crate::decode::integer")]
    pub priority: Option<i64>,
    #[serde(default)]
    pub priority_class: Option<String>,
    #[serde(default)]
    pub preemptible: Option<bool>,
    #[serde(default)]
    pub ttl_s: Option<f64>,
    #[serde(default)]
    pub queue: Option<bool>,
    #[serde(default)]
    pub node_selector: Option<Labels>,
    #[serde(default)]
    pub labels: Option<Labels>,
    /// Keep the allocations matching each constraint balanced across a label's domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Vec<SpreadWire>>,
    /// Land only in a domain holding an allocation matching each term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Vec<TermWire>>,
    /// Never land in a domain holding an allocation matching any term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<Vec<TermWire>>,
}

/// A spread constraint: after placing, the domain (the nodes sharing one value of the label
/// `topology_key`; `qm.dev/node` is each node alone) holding the most allocations whose
/// labels include `match_labels` holds at most `max_skew` more than the one holding the fewest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpreadWire {
    pub topology_key: String,
    #[schema(minimum = 1, maximum = 1000)]
    pub max_skew: u32,
    pub match_labels: Labels,
}

/// An affinity term: the allocations whose labels include `match_labels`, per domain of
/// `topology_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TermWire {
    pub topology_key: String,
    pub match_labels: Labels,
}

/// The core rules of the wire's three lists.
pub fn topology_of(
    spread: Option<&[SpreadWire]>,
    affinity: Option<&[TermWire]>,
    anti_affinity: Option<&[TermWire]>,
) -> qm_core::Topology {
    let term = |t: &TermWire| qm_core::Term {
        topology_key: t.topology_key.clone(),
        match_labels: t.match_labels.clone(),
    };
    qm_core::Topology {
        spread: spread
            .unwrap_or_default()
            .iter()
            .map(|c| qm_core::Spread {
                topology_key: c.topology_key.clone(),
                max_skew: c.max_skew,
                match_labels: c.match_labels.clone(),
            })
            .collect(),
        affinity: affinity.unwrap_or_default().iter().map(term).collect(),
        anti_affinity: anti_affinity.unwrap_or_default().iter().map(term).collect(),
    }
}

/// The wire's three lists of `t` (None for an empty one).
#[allow(clippy::type_complexity)]
pub fn topology_wire(
    t: &qm_core::Topology,
) -> (
    Option<Vec<SpreadWire>>,
    Option<Vec<TermWire>>,
    Option<Vec<TermWire>>,
) {
    let term = |t: &qm_core::Term| TermWire {
        topology_key: t.topology_key.clone(),
        match_labels: t.match_labels.clone(),
    };
    let spread: Vec<SpreadWire> = t
        .spread
        .iter()
        .map(|c| SpreadWire {
            topology_key: c.topology_key.clone(),
            max_skew: c.max_skew,
            match_labels: c.match_labels.clone(),
        })
        .collect();
    let affinity: Vec<TermWire> = t.affinity.iter().map(term).collect();
    let anti: Vec<TermWire> = t.anti_affinity.iter().map(term).collect();
    (
        (!spread.is_empty()).then_some(spread),
        (!affinity.is_empty()).then_some(affinity),
        (!anti.is_empty()).then_some(anti),
    )
}

impl AllocationRequest {
    /// The core request, or every invalid field.
    pub fn into_request(self, catalog: &ResourceCatalog) -> Result<Request, Vec<FieldProblem>> {
        let mut errors = Vec::new();
        let resources = parse_resources(catalog, "resources", &self.resources)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let limits = match &self.limits {
            Some(l) => parse_resources(catalog, "limits", l)
                .map_err(|e| errors.push(e))
                .ok(),
            None => None,
        };
        let mut req = Request::new(&self.agent, resources);
        req.limits = limits;
        if let Some(pool) = self.pool {
            req.pool = pool;
        }
        match (self.priority, self.priority_class) {
            (Some(_), Some(_)) => errors.push(problem(
                "priority_class",
                "give priority or priority_class, not both",
            )),
            (Some(p), None) => match Priority::new(p) {
                Ok(p) => req.priority = p,
                Err(e) => errors.push(problem("priority", e.to_string())),
            },
            (None, Some(c)) => match c.parse::<PriorityClass>() {
                Ok(c) => req.priority = c.priority(),
                Err(e) => errors.push(problem("priority_class", e.to_string())),
            },
            (None, None) => {}
        }
        req.preemptible = self.preemptible.unwrap_or(true);
        if let Some(t) = self.ttl_s {
            match ttl_ms("ttl_s", t) {
                Ok(ms) => req.ttl_ms = Some(ms),
                Err(e) => errors.push(e),
            }
        }
        req.queue = self.queue.unwrap_or(false);
        req.node_selector = self.node_selector.unwrap_or_default();
        req.labels = self.labels.unwrap_or_default();
        req.topology = topology_of(
            self.spread.as_deref(),
            self.affinity.as_deref(),
            self.anti_affinity.as_deref(),
        );
        if let Err(e) = req.validate() {
            errors.extend(e.0.into_iter().map(|f| FieldProblem {
                field: f.field,
                message: f.message,
            }));
        }
        if errors.is_empty() {
            Ok(req)
        } else {
            Err(errors)
        }
    }
}

/// `PUT /v1/nodes/{name}/heartbeat`: a reported node's sign of life, with what it uses.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeHeartbeat {
    /// What the node's own workloads use now (shown as the node's `usage`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub usage: Option<WireResources>,
}

/// `POST /v1/allocations/{id}/renew`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    #[serde(default)]
    pub ttl_s: Option<f64>,
}

impl RenewRequest {
    /// The ttl in milliseconds, if given.
    pub fn ttl_ms(&self) -> Result<Option<u64>, FieldProblem> {
        self.ttl_s.map(|t| ttl_ms("ttl_s", t)).transpose()
    }
}

/// An allocation as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AllocationDoc {
    pub id: String,
    pub agent: String,
    pub pool: String,
    pub node: Option<String>,
    pub resources: BTreeMap<String, String>,
    pub limits: Option<BTreeMap<String, String>>,
    pub qos: String,
    pub priority: u16,
    pub preemptible: bool,
    pub state: String,
    pub reason: Option<String>,
    pub preempted_by: Option<String>,
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Vec<SpreadWire>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Vec<TermWire>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<Vec<TermWire>>,
    pub created_at: String,
    pub granted_at: Option<String>,
    pub expires_at: Option<String>,
    pub ended_at: Option<String>,
}

fn time(t: Option<Timestamp>) -> Option<String> {
    t.map(|t| format_rfc3339(t.as_millis()))
}

impl AllocationDoc {
    /// The document of `alloc`; `st` names its pool and node.
    pub fn of(alloc: &Allocation, st: &State, catalog: &ResourceCatalog) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let ttl_s = alloc.ttl_ms().map(|ms| ms as f64 / 1000.0);
        let (spread, affinity, anti_affinity) = topology_wire(alloc.topology());
        Self {
            id: alloc.id().to_string(),
            agent: alloc.agent().to_owned(),
            pool: st.pool_name(alloc.pool()).to_owned(),
            node: alloc.node().map(|n| st.node_name(n).to_owned()),
            resources: render_resources(catalog, alloc.resources()),
            limits: alloc.limits().map(|l| render_resources(catalog, l)),
            qos: alloc.qos().name().to_owned(),
            priority: alloc.priority().get(),
            preemptible: alloc.preemptible(),
            state: alloc.state().name().to_owned(),
            reason: alloc.reason().map(str::to_owned),
            preempted_by: alloc.preempted_by().map(|p| p.to_string()),
            labels: alloc.labels().clone(),
            node_selector: alloc.node_selector().clone(),
            ttl_s,
            spread,
            affinity,
            anti_affinity,
            created_at: format_rfc3339(alloc.created_at().as_millis()),
            granted_at: time(alloc.granted_at()),
            expires_at: time(alloc.expires_at()),
            ended_at: time(alloc.ended_at()),
        }
    }

    /// True for `queued` and `granted`.
    pub fn is_live(&self) -> bool {
        matches!(self.state.as_str(), "queued" | "granted")
    }
}

/// An allocation as persisted: its document and what restoring it needs beyond that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stored {
    #[serde(flatten)]
    pub doc: AllocationDoc,
    pub grant_seq: u64,
}

impl Stored {
    /// The persisted form of `alloc`.
    pub fn of(alloc: &Allocation, st: &State, catalog: &ResourceCatalog) -> Self {
        Self {
            doc: AllocationDoc::of(alloc, st, catalog),
            grant_seq: alloc.grant_seq(),
        }
    }

    /// The record the ledger restores from; errors say what is inconsistent.
    pub fn to_record(&self, catalog: &ResourceCatalog) -> Result<AllocationRecord, String> {
        let d = &self.doc;
        let id: AllocId = d.id.parse().map_err(|e| format!("{e}"))?;
        let parse = |field: &str, m: &BTreeMap<String, String>| {
            let wire: WireResources = m
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            parse_resources(catalog, field, &wire)
                .map_err(|e| format!("{}: {}", e.field, e.message))
        };
        let at = |field: &str, t: &Option<String>| -> Result<Option<Timestamp>, String> {
            t.as_ref()
                .map(|s| {
                    parse_rfc3339(s)
                        .map(Timestamp::from_millis)
                        .ok_or_else(|| format!("{field}: bad time {s:?}"))
                })
                .transpose()
        };
        let state = match d.state.as_str() {
            "queued" => AllocState::Queued,
            "granted" => AllocState::Granted,
            other => return Err(format!("state {other:?} is not live")),
        };
        Ok(AllocationRecord {
            id,
            agent: d.agent.clone(),
            pool: d.pool.clone(),
            node: d.node.clone(),
            resources: parse("resources", &d.resources)?,
            limits: d.limits.as_ref().map(|l| parse("limits", l)).transpose()?,
            priority: Priority::new(i64::from(d.priority)).map_err(|e| e.to_string())?,
            preemptible: d.preemptible,
            state,
            labels: d.labels.clone(),
            node_selector: d.node_selector.clone(),
            topology: topology_of(
                d.spread.as_deref(),
                d.affinity.as_deref(),
                d.anti_affinity.as_deref(),
            ),
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            ttl_ms: d.ttl_s.map(|s| (s * 1000.0).round() as u64),
            created_at: at("created_at", &Some(d.created_at.clone()))?
                .unwrap_or(Timestamp::from_millis(0)),
            granted_at: at("granted_at", &d.granted_at)?,
            expires_at: at("expires_at", &d.expires_at)?,
            grant_seq: self.grant_seq,
        })
    }
}

/// `GET /v1/allocations`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AllocationList {
    pub items: Vec<AllocationDoc>,
    pub next_cursor: Option<String>,
}

/// `POST /v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeRegistration {
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$")]
    pub name: String,
    #[schema(value_type = Object)]
    pub capacity: WireResources,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub allocatable: Option<WireResources>,
    #[serde(default)]
    pub labels: Option<Labels>,
    #[serde(default)]
    pub heartbeat_ttl_s: Option<f64>,
}

impl NodeRegistration {
    /// The node spec and heartbeat ttl (ms), or every invalid field.
    pub fn into_spec(
        self,
        catalog: &ResourceCatalog,
    ) -> Result<(NodeSpec, Option<u64>), Vec<FieldProblem>> {
        let mut errors = Vec::new();
        let capacity = parse_resources(catalog, "capacity", &self.capacity)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let mut spec = NodeSpec::new(&self.name, capacity);
        if let Some(a) = &self.allocatable {
            match parse_resources(catalog, "allocatable", a) {
                Ok(a) => spec.allocatable = a,
                Err(e) => errors.push(e),
            }
        }
        spec.labels = self.labels.unwrap_or_default();
        spec.labels
            .entry(qm_core::NODE_LABEL.to_owned())
            .or_insert_with(|| self.name.clone());
        let ttl = match self
            .heartbeat_ttl_s
            .map(|t| ttl_ms("heartbeat_ttl_s", t))
            .transpose()
        {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        if let Err(e) = spec.validate() {
            errors.extend(e.0.into_iter().map(|f| FieldProblem {
                field: f.field,
                message: f.message,
            }));
        }
        if errors.is_empty() {
            Ok((spec, ttl))
        } else {
            Err(errors)
        }
    }
}

/// A node as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeDoc {
    pub name: String,
    pub labels: Labels,
    pub capacity: BTreeMap<String, String>,
    pub allocatable: BTreeMap<String, String>,
    pub allocated: BTreeMap<String, String>,
    pub available: BTreeMap<String, String>,
    pub usage: Option<BTreeMap<String, String>>,
    pub ready: bool,
    pub pressure: String,
    pub kind: String,
}

impl NodeDoc {
    /// The document of `node`; `kind` is `local`, `reported` or `member`.
    pub fn of(node: &Node, kind: &str, catalog: &ResourceCatalog) -> Self {
        Self {
            name: node.name().to_owned(),
            labels: node.spec().labels.clone(),
            capacity: render_resources(catalog, &node.spec().capacity),
            allocatable: render_resources(catalog, node.allocatable()),
            allocated: render_resources(catalog, node.allocated()),
            available: render_resources(catalog, &node.available()),
            usage: None,
            ready: node.ready(),
            pressure: "ok".to_owned(),
            kind: kind.to_owned(),
        }
    }
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeList {
    pub items: Vec<NodeDoc>,
}

/// `POST /v1/pools` and `PUT /v1/pools/{name}`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolWrite {
    /// Required to create a pool (`POST`); when given to `PUT`, the path's name.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]+$")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "crate::decode::integer")]
    #[schema(minimum = 1, maximum = 1000)]
    pub weight: Option<i64>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub guaranteed: Option<WireResources>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub limit: Option<WireResources>,
}

impl PoolWrite {
    /// The pool spec named `name`, or every invalid field.
    pub fn into_spec(
        self,
        name: &str,
        catalog: &ResourceCatalog,
    ) -> Result<PoolSpec, Vec<FieldProblem>> {
        let mut errors = Vec::new();
        let mut spec = PoolSpec::new(name);
        if let Some(w) = self.weight {
            match u32::try_from(w) {
                Ok(w) => spec.weight = w,
                Err(_) => errors.push(problem("weight", format!("{w} is out of range 1..=1000"))),
            }
        }
        if let Some(g) = &self.guaranteed {
            match parse_resources(catalog, "guaranteed", g) {
                Ok(g) => spec.guaranteed = g,
                Err(e) => errors.push(e),
            }
        }
        if let Some(l) = &self.limit {
            match parse_resources(catalog, "limit", l) {
                Ok(l) => spec.limit = Some(l),
                Err(e) => errors.push(e),
            }
        }
        if let Err(e) = spec.validate() {
            errors.extend(e.0.into_iter().map(|f| FieldProblem {
                field: f.field,
                message: f.message,
            }));
        }
        if errors.is_empty() {
            Ok(spec)
        } else {
            Err(errors)
        }
    }
}

/// A pool as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolDoc {
    pub name: String,
    pub weight: u32,
    pub guaranteed: BTreeMap<String, String>,
    pub limit: Option<BTreeMap<String, String>>,
    pub allocated: BTreeMap<String, String>,
    pub queued: usize,
    pub dominant_share: f64,
}

impl PoolDoc {
    /// The document of `pool`; `total` is the ready cluster's allocatable.
    pub fn of(pool: &Pool, total: &Resources, catalog: &ResourceCatalog) -> Self {
        Self {
            name: pool.name().to_owned(),
            weight: pool.weight(),
            guaranteed: render_resources(catalog, pool.guaranteed()),
            limit: pool.limit().map(|l| render_resources(catalog, l)),
            allocated: render_resources(catalog, pool.allocated()),
            queued: pool.n_queued(),
            dominant_share: pool.allocated().dominant_share(total),
        }
    }

    /// The spec this document describes.
    pub fn to_spec(&self, catalog: &ResourceCatalog) -> Result<PoolSpec, String> {
        let write = PoolWrite {
            name: None,
            weight: Some(i64::from(self.weight)),
            guaranteed: Some(strings(&self.guaranteed)),
            limit: self.limit.as_ref().map(strings),
        };
        write
            .into_spec(&self.name, catalog)
            .map_err(|e| format!("{e:?}"))
    }
}

fn strings(m: &BTreeMap<String, String>) -> WireResources {
    m.iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}

/// `GET /v1/pools`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolList {
    pub items: Vec<PoolDoc>,
}

/// A node as persisted: its document and how it is kept alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredNode {
    #[serde(flatten)]
    pub doc: NodeDoc,
    /// A reported node is lost when no heartbeat comes within this many milliseconds.
    pub heartbeat_ttl_ms: Option<u64>,
}

impl StoredNode {
    /// The spec this node was registered with.
    pub fn to_spec(&self, catalog: &ResourceCatalog) -> Result<NodeSpec, String> {
        let reg = NodeRegistration {
            name: self.doc.name.clone(),
            capacity: strings(&self.doc.capacity),
            allocatable: Some(strings(&self.doc.allocatable)),
            labels: Some(self.doc.labels.clone()),
            heartbeat_ttl_s: None,
        };
        reg.into_spec(catalog)
            .map(|(spec, _)| spec)
            .map_err(|e| format!("{e:?}"))
    }
}

/// An answer to a request for an allocation, kept to replay it for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replay {
    /// The HTTP status first answered.
    pub status: u16,
    /// The allocation's id (none for a dry run).
    pub id: Option<String>,
    /// The JSON body first answered.
    pub body: String,
}

/// Serializes a wire document (infallible for this crate's types).
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

/// Deserializes a stored document.
pub fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Any document as a JSON value (for replies that embed it).
pub fn to_value<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// The body of a `201`/`202` answer: the allocation and what it preempted.
pub fn allocation_reply(doc: &AllocationDoc, preempted: &[String]) -> String {
    #[derive(Serialize)]
    struct Reply<'a> {
        #[serde(flatten)]
        doc: &'a AllocationDoc,
        preempted: &'a [String],
    }
    to_json(&Reply { doc, preempted })
}

/// The body of a dry run's answer: the request as an allocation would show it, no id.
pub fn dry_run_reply(
    req: &Request,
    state: &str,
    node: Option<String>,
    preempted: &[String],
    catalog: &ResourceCatalog,
) -> String {
    let body = serde_json::json!({
        "agent": req.agent,
        "pool": req.pool,
        "node": node,
        "state": state,
        "priority": req.priority.get(),
        "resources": render_resources(catalog, &req.resources),
        "preempted": preempted,
        "dry_run": true,
    });
    body.to_string()
}

/// One entry of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventDoc {
    /// Increases with every event; `?since=` resumes after it.
    pub id: u64,
    /// `allocation.granted`, `node.not_ready`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `alert.firing` and `alert.resolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<crate::AlertDoc>,
}

impl EventDoc {
    /// The document of a ledger event (id 0: the hub numbers it), or none for events
    /// clients do not see.
    pub fn of(event: &qm_core::Event, st: &State, at: Timestamp) -> Option<Self> {
        let blank = |kind: &str| Self {
            id: 0,
            kind: kind.to_owned(),
            at: format_rfc3339(at.as_millis()),
            allocation: None,
            agent: None,
            pool: None,
            node: None,
            preempted: None,
            preempted_by: None,
            reason: None,
            alert: None,
        };
        let about = |kind: &str, a: &Allocation| Self {
            allocation: Some(a.id().to_string()),
            agent: Some(a.agent().to_owned()),
            pool: Some(st.pool_name(a.pool()).to_owned()),
            node: a.node().map(|n| st.node_name(n).to_owned()),
            reason: a.reason().map(str::to_owned),
            preempted_by: a.preempted_by().map(|p| p.to_string()),
            ..blank(kind)
        };
        match event {
            qm_core::Event::Granted { id, preempted, .. } => st.alloc(*id).map(|a| Self {
                preempted: (!preempted.is_empty())
                    .then(|| preempted.iter().map(ToString::to_string).collect()),
                ..about("allocation.granted", a)
            }),
            qm_core::Event::Queued { id } => st.alloc(*id).map(|a| about("allocation.queued", a)),
            qm_core::Event::Ended(a) => Some(about(&format!("allocation.{}", a.state().name()), a)),
            qm_core::Event::NodeReady { node } => Some(Self {
                node: Some(st.node_name(*node).to_owned()),
                ..blank("node.ready")
            }),
            qm_core::Event::NodeNotReady { node } => Some(Self {
                node: Some(st.node_name(*node).to_owned()),
                ..blank("node.not_ready")
            }),
            qm_core::Event::Held { .. } => None,
        }
    }
}

/// `GET /v1/state` and `POST /v1/state`: the whole state, versioned. Allocations are the live
/// ones; the history of ended ones is not part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateDoc {
    /// The document format; 1.
    pub version: u32,
    /// The next allocation sequence number (ids are never reused).
    pub next_seq: u64,
    /// The next grant sequence number.
    pub next_grant: u64,
    pub nodes: Vec<StoredNode>,
    pub pools: Vec<PoolDoc>,
    pub allocations: Vec<Stored>,
    /// The agents, as `GET /v1/agents` shows them. An import starts the live ones that do
    /// not run here yet (as `qm apply` would) and says which it left and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<crate::AgentDoc>,
    /// The fleets: an import creates or updates them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fleets: Vec<crate::FleetDoc>,
    /// In the answer to `POST /v1/state`: what the import did with agents and fleets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportReport>,
}

/// What `POST /v1/state` did with the document's agents and fleets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportReport {
    /// Agents started here.
    pub started: Vec<String>,
    /// Fleets created or updated (they start their own members).
    pub fleets: Vec<String>,
    /// Agents not started, with why.
    pub left: Vec<LeftAgent>,
}

/// An agent an import did not start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeftAgent {
    pub name: String,
    pub reason: String,
}

/// The version of [`StateDoc`] this build reads and writes.
pub const STATE_VERSION: u32 = 1;

/// `GET /v1/cluster`: the members, which leads, and where the state lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterDoc {
    /// The leader's name; null while none is elected.
    pub leader: Option<String>,
    pub members: Vec<ClusterMemberDoc>,
    /// `etcd`, or `sqlite` for a daemon on its own.
    pub store: String,
}

impl ClusterDoc {
    /// A daemon on its own: a cluster of one, `name` at `url`, on SQLite.
    pub fn alone(name: &str, url: &str) -> Self {
        ClusterDoc {
            leader: Some(name.to_owned()),
            members: vec![ClusterMemberDoc {
                name: name.to_owned(),
                url: url.to_owned(),
                ready: true,
                leader: true,
                lease_expires_at: None,
            }],
            store: "sqlite".to_owned(),
        }
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterMemberDoc {
    pub name: String,
    /// Where its API answers.
    pub url: String,
    /// Its lease is live.
    pub ready: bool,
    pub leader: bool,
    /// When its lease lapses unless renewed (null on its own).
    pub lease_expires_at: Option<String>,
}
