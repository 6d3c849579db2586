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
#[allow(unused_imports, reason = "the OpenAPI annotations name these types")]
use qm_proto::{AgentDoc, FleetDoc, Problem};
use qm_proto::{AgentList, AgentSpec, FleetList, FleetSpec, MetricPush, decode, to_json};
use qm_runtime::Engine;
use qm_runtime::agents::Supervisor;

use crate::error::ApiError;
use crate::routes::{body, json};

/// What the router's handlers share: the engine, and the supervisor when agents are on.
#[derive(Debug, Clone)]
pub struct App {
    pub engine: Engine,
    pub agents: Option<Supervisor>,
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

fn not_found(what: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("no {what} {name:?}"))
}

#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = AgentSpec,
    responses((status = 201, body = AgentDoc), (status = 202, description = "waiting for admission", body = AgentDoc),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_agent(
    State(app): State<App>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let spec: AgentSpec = decode(&body(&headers, raw)?)?;
    let doc = supervisor(&app)?.create(spec, None).await?;
    let status = if doc.state == "pending" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok(json(status, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = AgentList)))]
pub(crate) async fn list_agents(State(app): State<App>) -> ApiResult {
    let items = supervisor(&app)?.list();
    Ok(json(StatusCode::OK, to_json(&AgentList { items })))
}

#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", responses((status = 200, body = AgentDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_agent(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let doc = supervisor(&app)?
        .get(&id)
        .ok_or_else(|| not_found("agent", &id))?;
    Ok(json(StatusCode::OK, to_json(&doc)))
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
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult {
    if let Some(k) = q.keys().find(|k| k.as_str() != "grace_s") {
        return Err(ApiError::field(
            k,
            "unknown query parameter (known: grace_s)",
        ));
    }
    let doc = supervisor(&app)?.stop(&id, grace(&q)?).await?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/agents/{id}/logs", tag = "agents",
    params(("tail" = Option<usize>, Query, description = "lines from the end (default 100, at most 10000)")),
    responses((status = 200, body = qm_proto::LogsDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn agent_logs(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult {
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
pub(crate) async fn agent_heartbeat(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    if supervisor(&app)?.heartbeat(&id) {
        Ok(json(StatusCode::OK, "{}".to_owned()))
    } else {
        Err(not_found("live agent", &id))
    }
}

#[utoipa::path(get, path = "/v1/fleets", tag = "fleets", responses((status = 200, body = FleetList)))]
pub(crate) async fn list_fleets(State(app): State<App>) -> ApiResult {
    let items = supervisor(&app)?.fleets();
    Ok(json(StatusCode::OK, to_json(&FleetList { items })))
}

#[utoipa::path(post, path = "/v1/fleets", tag = "fleets", request_body = FleetSpec,
    responses((status = 201, body = FleetDoc), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_fleet(
    State(app): State<App>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let spec: FleetSpec = decode(&body(&headers, raw)?)?;
    let doc = supervisor(&app)?.put_fleet(spec, true).await?;
    Ok(json(StatusCode::CREATED, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/fleets/{name}", tag = "fleets", responses((status = 200, body = FleetDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_fleet(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let doc = supervisor(&app)?
        .fleet(&name)
        .ok_or_else(|| not_found("fleet", &name))?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(put, path = "/v1/fleets/{name}", tag = "fleets", request_body = FleetSpec,
    responses((status = 200, body = FleetDoc), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn update_fleet(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let spec: FleetSpec = decode(&body(&headers, raw)?)?;
    if spec.name != name {
        return Err(ApiError::field(
            "name",
            format!("{:?} differs from the path's {name:?}", spec.name),
        ));
    }
    let doc = supervisor(&app)?.put_fleet(spec, false).await?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(delete, path = "/v1/fleets/{name}", tag = "fleets", responses((status = 200, body = FleetDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_fleet(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let doc = supervisor(&app)?.delete_fleet(&name).await?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(post, path = "/v1/fleets/{name}/metric", tag = "fleets", request_body = MetricPush,
    responses((status = 200, body = FleetDoc), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn push_metric(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let push: MetricPush = decode(&body(&headers, raw)?)?;
    let doc = supervisor(&app)?.push_metric(&name, push.value)?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}
