//! The agent and fleet routes: spawn or adopt (`POST /v1/agents`), list, get, stop (`DELETE`,
//! SIGTERM then SIGKILL after `grace_s`), logs and heartbeats; fleets with their replicas,
//! template and autoscaler, and the custom metric they scale on. Writes answer once durable.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use qm_engine::Engine;
use qm_proto::FleetDoc;
#[allow(unused_imports, reason = "the OpenAPI annotations name these types")]
use qm_proto::{AgentDoc, AgentState, Problem};
use qm_proto::{AgentList, AgentSpec, FleetList, FleetSpec, MetricPush, decode, to_json};
use qm_supervisor::Supervisor;

use crate::auth::{Caller, Operation};
use crate::error::ApiError;
use crate::routes::{body, json};

/// What the router's handlers share: the engine, the supervisor when agents are on, and the
/// cluster's view when the daemon is a member of one.
#[derive(Clone)]
pub struct App {
    pub engine: Engine,
    pub agents: Option<Supervisor>,
    pub cluster: Option<crate::Cluster>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("engine", &self.engine)
            .field("agents", &self.agents)
            .field("cluster", &self.cluster.is_some())
            .finish()
    }
}

impl FromRef<App> for Engine {
    fn from_ref(app: &App) -> Engine {
        app.engine.clone()
    }
}

type ApiResult = Result<Response, ApiError>;

fn supervisor(app: &App) -> Result<&Supervisor, ApiError> {
    app.agents.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "agents_off",
            "this daemon runs without its supervisor",
        )
    })
}

/// The cluster's placer, when the daemon is a member of one on etcd.
fn placer(app: &App) -> Option<&dyn crate::Placer> {
    app.cluster.as_ref()?.placer.as_deref()
}

/// This member's agents and, in a cluster, those placed on other members (as their owners
/// report them).
async fn every_agent(app: &App) -> Result<Vec<AgentDoc>, ApiError> {
    let mut items = supervisor(app)?.list();
    if let Some(p) = placer(app) {
        let here: std::collections::BTreeSet<String> =
            items.iter().map(|d| d.name.clone()).collect();
        items.extend(
            p.list()
                .await?
                .into_iter()
                .filter(|d| !here.contains(&d.name)),
        );
        items.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(items)
}

fn not_found(what: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("no {what} {name:?}"))
}

#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = AgentSpec,
    responses((status = 201, body = AgentDoc), (status = 202, description = "waiting for admission", body = AgentDoc),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "in a cluster: the leader cannot be reached, or an adoption asked of a member that does not lead", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_agent(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut spec: AgentSpec = decode(&body(&headers, raw)?)?;
    let sup = supervisor(&app)?;
    if spec.pid.is_some() {
        caller.allow(Operation::AdoptProcess)?;
    } else if caller.needs_owner(Operation::SpawnAgent) {
        // An orchestrator's sub-agent: in its pool, as its user, charged to it.
        let p = caller.principal();
        if spec.pool.is_none() {
            spec.pool.clone_from(&p.pool);
        }
        caller.allow_for(Operation::SpawnAgent, &spec.name, spec.pool.as_deref())?;
        // charged to a new allocation of its own, never to one it names (another's)
        if spec.allocation.is_some() {
            return Err(ApiError::forbidden(
                "allocation: an agent token's sub-agents get allocations of their own",
            ));
        }
        if let Ok(r) = spec.allocation_request().into_request(app.engine.catalog()) {
            within_cap(priority_cap(&app, &caller), r.priority)?;
        }
        let parent = p.agent.as_deref().and_then(|me| sup.get(me));
        match (&spec.user, parent.and_then(|d| d.spec.user)) {
            (None, inherited) => spec.user = inherited,
            (Some(asked), inherited) if Some(asked) != inherited.as_ref() => {
                return Err(ApiError::forbidden(format!(
                    "user: a sub-agent runs as its orchestrator's user, not {asked:?}"
                )));
            }
            _ => {}
        }
    } else {
        caller.allow(Operation::SpawnAgent)?;
    }
    let root = spec
        .user
        .as_deref()
        .is_some_and(qm_supervisor::is_root_user);
    if root {
        caller.allow(Operation::RunAsRoot)?;
    }
    let by = qm_supervisor::Requester {
        admin: caller.principal().role == qm_engine::tokens::Role::Admin,
        uid: caller.peer_uid(),
    };
    // in a cluster, a spawn goes where the leader places it; an adoption (or `qm exec`'s
    // agent) is charged to this host through the ledger, which only the leader writes
    let mut doc = match placer(&app) {
        Some(p) if spec.pid.is_none() && spec.allocation.is_none() => p.place(spec).await?,
        Some(p) if !p.leads() => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_leader",
                "pid: in a cluster, a process is adopted (and `qm exec` runs) on the leader's \
                 host only, for now; spawn it instead (any member places it)",
            ));
        }
        _ => sup.create(spec, None, by).await?,
    };
    if !caller.sees_secrets() {
        doc.spec.redact();
    }
    let status = if doc.state == AgentState::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok(json(status, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = AgentList)))]
pub(crate) async fn list_agents(State(app): State<App>, caller: Caller) -> ApiResult {
    caller.allow(Operation::List)?;
    let mut items = every_agent(&app).await?;
    items.retain(|d| caller.sees(&d.name));
    if !caller.sees_secrets() {
        for d in &mut items {
            d.spec.redact();
        }
    }
    Ok(json(StatusCode::OK, to_json(&AgentList { items })))
}

#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", responses((status = 200, body = AgentDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_agent(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    owned(&caller, Operation::ReadAgent, &id)?;
    let local = supervisor(&app)?.get(&id);
    let mut doc = match (local, placer(&app)) {
        (Some(d), _) => d,
        (None, Some(_)) => every_agent(&app)
            .await?
            .into_iter()
            .find(|d| d.name == id)
            .ok_or_else(|| not_found("agent", &id))?,
        (None, None) => return Err(not_found("agent", &id)),
    };
    if !caller.sees_secrets() {
        doc.spec.redact();
    }
    Ok(json(StatusCode::OK, to_json(&doc)))
}

/// The highest priority an agent token may ask for: its agent's own (from its record, the
/// default class `normal` when it has none). None for the other roles.
pub(crate) fn priority_cap(app: &App, caller: &Caller) -> Option<qm_core::Priority> {
    let me = caller.principal().agent.as_deref()?;
    let own = app
        .agents
        .as_ref()
        .and_then(|sup| sup.get(me))
        .and_then(|d| {
            d.spec
                .allocation_request()
                .into_request(app.engine.catalog())
                .ok()
        })
        .map_or_else(qm_core::Priority::default, |r| r.priority);
    Some(own)
}

/// Refuses a priority above `cap`: an agent may not preempt its neighbours by asking for more
/// than its own.
pub(crate) fn within_cap(
    cap: Option<qm_core::Priority>,
    asked: qm_core::Priority,
) -> Result<(), ApiError> {
    match cap {
        Some(cap) if asked > cap => Err(ApiError::forbidden(format!(
            "priority: an agent token may ask for at most its own priority ({cap}), not {asked}"
        ))),
        _ => Ok(()),
    }
}

/// A fleet whose members would run as uid 0 is an admin's to make.
fn root_template(caller: &Caller, spec: &FleetSpec) -> Result<(), ApiError> {
    if spec
        .template
        .user
        .as_deref()
        .is_some_and(qm_supervisor::is_root_user)
    {
        caller.allow(Operation::RunAsRoot)?;
    }
    Ok(())
}

/// A fleet as `caller` may see it.
fn fleet_shown(caller: &Caller, mut doc: FleetDoc) -> FleetDoc {
    if !caller.sees_secrets() {
        doc.template.redact();
    }
    doc
}

/// `op` on agent `id`'s resources: an agent token's own (or its sub-agents'), else 404.
fn owned(caller: &Caller, op: Operation, id: &str) -> Result<(), ApiError> {
    if caller.needs_owner(op) {
        caller.allow_for(op, id, None).map_err(|e| {
            if e.0.status == 404 {
                not_found("agent", id)
            } else {
                e
            }
        })
    } else {
        caller.allow(op)
    }
}

fn grace(q: &BTreeMap<String, String>) -> Result<Option<Duration>, ApiError> {
    q.get("grace_s")
        .map(|g| match g.parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
            _ => Err(ApiError::field(
                "grace_s",
                format!("{g:?} is not a number of seconds in [0, 3600]"),
            )),
        })
        .transpose()
}

#[utoipa::path(delete, path = "/v1/agents/{id}", tag = "agents",
    params(("grace_s" = Option<f64>, Query, description = "seconds between SIGTERM and SIGKILL (default: the agent's, 10)")),
    responses((status = 200, body = AgentDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn stop_agent(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult {
    owned(&caller, Operation::StopAgent, &id)?;
    if let Some(k) = q.keys().find(|k| k.as_str() != "grace_s") {
        return Err(ApiError::field(
            k,
            "unknown query parameter (known: grace_s)",
        ));
    }
    let grace = grace(&q)?;
    let sup = supervisor(&app)?;
    // a placed agent is stopped through the cluster (its owner stops it, wherever it runs);
    // stopped here only, its member would start it again
    let placed = match placer(&app) {
        Some(p) if sup.get(&id).is_none_or(|d| d.placed) => {
            p.stop(id.clone(), grace.map(|g| g.as_secs_f64())).await?
        }
        _ => None,
    };
    let mut doc = match placed {
        Some(d) => d,
        None => sup.stop(&id, grace).await?,
    };
    if !caller.sees_secrets() {
        doc.spec.redact();
    }
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/agents/{id}/logs", tag = "agents",
    params(("tail" = Option<usize>, Query, description = "lines from the end (default 100, at most 10000)")),
    responses((status = 200, body = qm_proto::LogsDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn agent_logs(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult {
    owned(&caller, Operation::ReadAgent, &id)?;
    if let Some(k) = q.keys().find(|k| k.as_str() != "tail") {
        return Err(ApiError::field(k, "unknown query parameter (known: tail)"));
    }
    let tail = match q.get("tail") {
        Some(t) => match t.parse::<usize>() {
            Ok(n) if n <= 10_000 => n,
            _ => return Err(ApiError::field("tail", format!("{t:?} is not 0..=10000"))),
        },
        None => 100,
    };
    let sup = supervisor(&app)?.clone();
    let id2 = id.clone();
    let logs = tokio::task::spawn_blocking(move || sup.logs_of(&id2, tail))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| not_found("agent", &id))?;
    Ok(json(StatusCode::OK, to_json(&logs)))
}

#[utoipa::path(post, path = "/v1/agents/{id}/heartbeat", tag = "agents", responses((status = 200, description = "recorded"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn agent_heartbeat(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    owned(&caller, Operation::AgentHeartbeat, &id)?;
    if supervisor(&app)?.heartbeat(&id) {
        Ok(json(StatusCode::OK, "{}".to_owned()))
    } else {
        Err(not_found("live agent", &id))
    }
}

#[utoipa::path(get, path = "/v1/fleets", tag = "fleets", responses((status = 200, body = FleetList)))]
pub(crate) async fn list_fleets(State(app): State<App>, caller: Caller) -> ApiResult {
    caller.allow(Operation::ReadCluster)?;
    let mut items = supervisor(&app)?.fleets();
    if !caller.sees_secrets() {
        for f in &mut items {
            f.template.redact();
        }
    }
    Ok(json(StatusCode::OK, to_json(&FleetList { items })))
}

#[utoipa::path(post, path = "/v1/fleets", tag = "fleets", request_body = FleetSpec,
    responses((status = 201, body = FleetDoc), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_fleet(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    caller.allow(Operation::WriteCluster)?;
    let spec: FleetSpec = decode(&body(&headers, raw)?)?;
    root_template(&caller, &spec)?;
    let doc = supervisor(&app)?.put_fleet(spec, true).await?;
    let doc = fleet_shown(&caller, doc);
    Ok(json(StatusCode::CREATED, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/fleets/{name}", tag = "fleets", responses((status = 200, body = FleetDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_fleet(
    State(app): State<App>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow(Operation::ReadCluster)?;
    let mut doc = supervisor(&app)?
        .fleet(&name)
        .ok_or_else(|| not_found("fleet", &name))?;
    if !caller.sees_secrets() {
        doc.template.redact();
    }
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(put, path = "/v1/fleets/{name}", tag = "fleets", request_body = FleetSpec,
    responses((status = 200, body = FleetDoc), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn update_fleet(
    State(app): State<App>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    caller.allow(Operation::WriteCluster)?;
    let spec: FleetSpec = decode(&body(&headers, raw)?)?;
    root_template(&caller, &spec)?;
    if spec.name != name {
        return Err(ApiError::field(
            "name",
            format!("{:?} differs from the path's {name:?}", spec.name),
        ));
    }
    let doc = supervisor(&app)?.put_fleet(spec, false).await?;
    let doc = fleet_shown(&caller, doc);
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(delete, path = "/v1/fleets/{name}", tag = "fleets", responses((status = 200, body = FleetDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_fleet(
    State(app): State<App>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow(Operation::WriteCluster)?;
    let doc = supervisor(&app)?.delete_fleet(&name).await?;
    let doc = fleet_shown(&caller, doc);
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(post, path = "/v1/fleets/{name}/metric", tag = "fleets", request_body = MetricPush,
    responses((status = 200, body = FleetDoc), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn push_metric(
    State(app): State<App>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    caller.allow(Operation::WriteCluster)?;
    let push: MetricPush = decode(&body(&headers, raw)?)?;
    let doc = supervisor(&app)?.push_metric(&name, push.value)?;
    let doc = fleet_shown(&caller, doc);
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/recommendations", tag = "agents",
    params(("target" = Option<String>, Query, description = "one target: agent/NAME, fleet/NAME or template/NAME")),
    responses((status = 200, body = qm_proto::RecommendationList),
        (status = 422, description = "an unknown query parameter, or a target that is not agent/NAME, fleet/NAME or template/NAME", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "this daemon runs without its supervisor", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn recommendations(
    State(app): State<App>,
    caller: Caller,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult {
    caller.allow(Operation::List)?;
    if let Some(k) = q.keys().find(|k| k.as_str() != "target") {
        return Err(ApiError::field(
            k,
            "unknown query parameter (known: target)",
        ));
    }
    let target = q.get("target").map(String::as_str);
    if let Some(t) = target {
        let ok = t.split_once('/').is_some_and(|(kind, name)| {
            matches!(kind, "agent" | "fleet" | "template") && qm_proto::valid_name(name)
        });
        if !ok {
            return Err(ApiError::field(
                "target",
                format!("{t:?} is not agent/NAME, fleet/NAME or template/NAME"),
            ));
        }
    }
    let sized = |cpu: f64, mem: f64| qm_engine::usage_map(Some(cpu), Some(mem)).unwrap_or_default();
    let items: Vec<qm_proto::RecommendationDoc> = supervisor(&app)?
        .recommendations(target)
        .into_iter()
        .filter(|r| caller.sees(r.target.split_once('/').map_or("", |(_, n)| n)))
        .map(|r| {
            let resources = sized(r.cpu_cores, r.memory_bytes);
            let limits = resources
                .iter()
                .filter(|(k, _)| k.as_str() == "memory")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            qm_proto::RecommendationDoc {
                target: r.target,
                resources,
                limits,
                lower: sized(r.lower.0, r.lower.1),
                upper: sized(r.upper.0, r.upper.1),
                samples: r.samples,
                confidence: r.confidence,
                updated_at: qm_proto::format_rfc3339(r.updated_at_ms),
                reason: r.reason,
            }
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        to_json(&qm_proto::RecommendationList { items }),
    ))
}
