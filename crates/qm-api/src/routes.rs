//! The routes of API v1 and their handlers. Writes answer only after the engine reports the
//! change durable.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use qm_core::AllocId;
use qm_engine::{Engine, Lookup};
#[allow(unused_imports, reason = "the OpenAPI annotations name these types")]
use qm_proto::{AllocationDoc, NodeDoc, PoolDoc, Problem, StateDoc};
use qm_proto::{
    AllocationList, AllocationRequest, NodeList, NodeRegistration, PoolList, PoolWrite,
    RenewRequest, decode, to_json,
};
use qm_store::AllocationFilter;
use serde::Deserialize;

use crate::MAX_BODY;
use crate::auth::{Caller, Operation};
use crate::error::ApiError;

type ApiResult = Result<Response, ApiError>;

/// The API v1 router over `engine`, with the agent and fleet routes when `agents` is given,
/// and the MCP server at `/mcp`, whose tools call the other routes in process.
pub fn router(
    engine: Engine,
    agents: Option<qm_supervisor::Supervisor>,
    auth: crate::AuthConfig,
    cluster: Option<crate::Cluster>,
) -> Router {
    let forward = cluster.as_ref().and_then(|c| c.forward.clone());
    let closing = engine.clone();
    let gate = crate::auth::Gate::new(engine.clone(), auth);
    let layer = axum::middleware::from_fn_with_state(gate, crate::auth::gate);
    let api = api_router(engine, agents, cluster);
    // MCP sessions end with the event feeds, when the daemon shuts down.
    let closed = Box::pin(async move {
        let mut live = closing.subscribe(None).live;
        while !matches!(
            live.recv().await,
            Err(tokio::sync::broadcast::error::RecvError::Closed)
        ) {}
    });
    // The tools' calls pass the gate as any request does, with the caller's token, and the
    // relay to the leader as well
    let tools = api.clone().layer(layer.clone());
    let tools = match &forward {
        Some(f) => tools.layer(axum::middleware::from_fn_with_state(
            f.clone(),
            crate::forward::relay,
        )),
        None => tools,
    };
    let mcp = crate::mcp::http_service(tools, Some(closed));
    let router = api.route_service("/mcp", mcp).layer(layer);
    // a member that does not lead relays the ledger's routes to the leader, before its gate
    match forward {
        Some(f) => router.layer(axum::middleware::from_fn_with_state(
            f,
            crate::forward::relay,
        )),
        None => router,
    }
}

fn api_router(
    engine: Engine,
    agents: Option<qm_supervisor::Supervisor>,
    cluster: Option<crate::Cluster>,
) -> Router {
    use crate::agents as a;
    Router::new()
        .merge(crate::ui::routes())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(
                |State(app): State<crate::agents::App>, c: Caller| async move {
                    c.allow(Operation::ReadDocs)?;
                    let doc = crate::openapi::document(app.engine.catalog());
                    Ok::<_, ApiError>(json(StatusCode::OK, doc))
                },
            ),
        )
        .route(
            "/v1/tokens",
            get(crate::security::list_tokens).post(crate::security::create_token),
        )
        .route(
            "/v1/tokens/{id}",
            axum::routing::delete(crate::security::revoke_token),
        )
        .route("/v1/audit", get(crate::security::audit))
        .route("/v1/whoami", get(crate::security::whoami))
        .route("/v1/events", get(crate::events::events))
        .route("/v1/metrics", get(crate::monitoring::snapshot))
        .route("/v1/metrics/series", get(crate::monitoring::series))
        .route("/v1/metrics/query", get(crate::monitoring::query))
        .route("/v1/alerts", get(crate::monitoring::alerts))
        .route("/v1/pressure", get(crate::monitoring::pressure))
        .route(
            "/v1/state",
            get(export_state)
                .post(import_state)
                .layer(DefaultBodyLimit::max(crate::MAX_STATE_BODY)),
        )
        .route("/v1/node", get(local_node))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/nodes", get(nodes).post(register_node))
        .route("/v1/nodes/{name}", axum::routing::delete(delete_node))
        .route("/v1/nodes/{name}/heartbeat", put(heartbeat))
        .route("/v1/pools", get(pools).post(create_pool))
        .route(
            "/v1/pools/{name}",
            get(pool).put(update_pool).delete(delete_pool),
        )
        .route(
            "/v1/allocations",
            get(list_allocations).post(create_allocation),
        )
        .route(
            "/v1/allocations/{id}",
            get(get_allocation).delete(release_allocation),
        )
        .route("/v1/allocations/{id}/renew", post(renew_allocation))
        .route("/v1/agents", get(a::list_agents).post(a::create_agent))
        .route("/v1/agents/{id}", get(a::get_agent).delete(a::stop_agent))
        .route("/v1/agents/{id}/logs", get(a::agent_logs))
        .route("/v1/agents/{id}/heartbeat", post(a::agent_heartbeat))
        .route("/v1/recommendations", get(a::recommendations))
        .route("/v1/fleets", get(a::list_fleets).post(a::create_fleet))
        .route(
            "/v1/fleets/{name}",
            get(a::get_fleet)
                .put(a::update_fleet)
                .delete(a::delete_fleet),
        )
        .route("/v1/fleets/{name}/metric", post(a::push_metric))
        .merge(crate::openapi::swagger_ui())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(a::App {
            engine,
            agents,
            cluster,
        })
}

pub(crate) fn json(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The body of a write: JSON, at most 64 KiB, else the matching problem.
pub(crate) fn body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let body = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("bodies are limited to {MAX_BODY} bytes"),
            )
        }
        other => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", other.body_text()),
    })?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send application/json, not {:?}",
                if ctype.is_empty() { "nothing" } else { ctype }
            ),
        ));
    }
    Ok(body)
}

/// `op` on allocation `id`, for callers whose right depends on whose it is (an agent token):
/// the allocation is looked up (live, else stored) and a foreign or unknown one is 404.
async fn authorize_allocation(
    engine: &Engine,
    caller: &Caller,
    op: Operation,
    id: AllocId,
) -> Result<(), ApiError> {
    if !caller.needs_owner(op) {
        return caller.allow(op);
    }
    let doc = match engine.get(id).await? {
        Lookup::Live(doc) => Some(*doc),
        Lookup::NotLive => engine.stored(id).await?,
    };
    let doc = doc.ok_or_else(|| ApiError::not_found(format!("no allocation {id}")))?;
    caller
        .allow_for(op, &doc.agent, Some(&doc.pool))
        .map_err(|e| {
            if e.0.status == 404 {
                ApiError::not_found(format!("no allocation {id}"))
            } else {
                e
            }
        })
}

/// A body that may be left out (its default then), else JSON as [`body`] takes it.
fn optional_body<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let raw = raw.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "body too large",
        )
    })?;
    if raw.is_empty() {
        Ok(T::default())
    } else {
        Ok(decode(&body(headers, Ok(raw))?)?)
    }
}

fn alloc_id(id: &str) -> Result<AllocId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no allocation {id:?}")))
}

#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(crate) async fn metrics(
    State(app): State<crate::agents::App>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult {
    let engine = app.engine.clone();
    caller.allow(Operation::ReadCluster)?;
    let snapshot = engine.metrics().await?;
    let fmt = crate::metrics::Format::from_accept(
        headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    let latest = engine.monitor().map(qm_monitor::Monitor::latest);
    let samples = latest.as_deref().map_or(&[][..], |l| &l.samples[..]);
    let agents = latest.as_deref().map_or(&[][..], |l| &l.agent_samples[..]);
    let mut text = crate::metrics::render(&snapshot, samples, agents, fmt);
    if let Some(sup) = &app.agents {
        crate::metrics::append_recommendations(&mut text, fmt, &sup.recommendations(None));
    }
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(fmt.content_type()),
    );
    Ok(resp)
}

#[utoipa::path(get, path = "/v1/state", tag = "state", responses((status = 200, body = StateDoc)))]
pub(crate) async fn export_state(
    State(app): State<crate::agents::App>,
    caller: Caller,
) -> ApiResult {
    caller.allow(Operation::ExportState)?;
    let mut doc = app.engine.export().await?;
    if let Some(sup) = &app.agents {
        doc.agents = sup.list();
        doc.fleets = sup.fleets();
    }
    if !caller.sees_secrets() {
        for a in &mut doc.agents {
            a.spec.redact();
        }
        for f in &mut doc.fleets {
            f.template.redact();
        }
    }
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(post, path = "/v1/state", tag = "state", request_body = StateDoc, responses((status = 200, body = StateDoc), (status = 422, description = "invalid fields", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn import_state(
    State(app): State<crate::agents::App>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    caller.allow(Operation::ImportState)?;
    let doc: qm_proto::StateDoc = decode(&body(&headers, raw)?)?;
    let (agents, fleets) = (doc.agents.clone(), doc.fleets.clone());
    let mut now = app.engine.import(doc).await?;
    // then the agents and fleets, as `qm apply` would bring them
    if let Some(sup) = &app.agents
        && !(agents.is_empty() && fleets.is_empty())
    {
        now.imported = Some(sup.import(&agents, &fleets).await);
    }
    Ok(json(StatusCode::OK, to_json(&now)))
}

#[utoipa::path(get, path = "/v1/node", tag = "nodes", responses((status = 200, body = NodeDoc)))]
pub(crate) async fn local_node(State(engine): State<Engine>, caller: Caller) -> ApiResult {
    caller.allow(Operation::ReadNode)?;
    let doc = engine.local_node().await?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/cluster", tag = "nodes", responses((status = 200, body = qm_proto::ClusterDoc)))]
pub(crate) async fn cluster_status(
    State(app): State<crate::agents::App>,
    caller: Caller,
) -> ApiResult {
    caller.allow(Operation::ReadNode)?;
    let doc = match &app.cluster {
        Some(c) => (c.view)(),
        // a daemon on its own is a cluster of one
        None => qm_proto::ClusterDoc::alone(app.engine.node_name(), ""),
    };
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", responses((status = 200, body = NodeList)))]
pub(crate) async fn nodes(State(engine): State<Engine>, caller: Caller) -> ApiResult {
    caller.allow(Operation::ReadNode)?;
    let items = engine.nodes().await?;
    Ok(json(StatusCode::OK, to_json(&NodeList { items })))
}

#[utoipa::path(post, path = "/v1/nodes", tag = "nodes", request_body = NodeRegistration, responses((status = 201, body = NodeDoc), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid fields", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn register_node(
    State(engine): State<Engine>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    caller.allow(Operation::WriteCluster)?;
    let reg: NodeRegistration = decode(&body(&headers, raw)?)?;
    let (spec, ttl) = reg.into_spec(engine.catalog()).map_err(ApiError::invalid)?;
    let doc = engine.register_node(spec, ttl).await?;
    Ok(json(StatusCode::CREATED, to_json(&doc)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ForceQuery {
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/v1/nodes/{name}", tag = "nodes", params(("name" = String, Path), ("force" = Option<bool>, Query)), responses((status = 200, body = NodeDoc), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_node(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
    q: Result<Query<ForceQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    caller.allow(Operation::WriteCluster)?;
    let Query(q) = q.map_err(|e| ApiError::field("force", e.body_text()))?;
    let doc = engine.delete_node(name, q.force).await?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(put, path = "/v1/nodes/{name}/heartbeat", tag = "nodes", params(("name" = String, Path)), request_body = qm_proto::NodeHeartbeat, responses((status = 200, body = NodeDoc), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid fields", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn heartbeat(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    caller.allow(Operation::WriteCluster)?;
    let beat: qm_proto::NodeHeartbeat = optional_body(&headers, raw)?;
    let usage = beat
        .usage
        .as_ref()
        .map(|u| qm_proto::parse_resources(engine.catalog(), "usage", u))
        .transpose()
        .map_err(|e| ApiError::invalid(vec![e]))?;
    let doc = engine.heartbeat(name, usage).await?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/pools", tag = "pools", responses((status = 200, body = PoolList)))]
pub(crate) async fn pools(State(engine): State<Engine>, caller: Caller) -> ApiResult {
    caller.allow(Operation::ReadNode)?;
    let items = engine.pools().await?;
    Ok(json(StatusCode::OK, to_json(&PoolList { items })))
}

#[utoipa::path(get, path = "/v1/pools/{name}", tag = "pools", params(("name" = String, Path)), responses((status = 200, body = PoolDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn pool(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow(Operation::ReadNode)?;
    let doc = engine
        .pools()
        .await?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no pool named {name:?}")))?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(post, path = "/v1/pools", tag = "pools", request_body = PoolWrite, responses((status = 201, body = PoolDoc), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid fields", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_pool(
    State(engine): State<Engine>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    caller.allow(Operation::WriteCluster)?;
    let mut write: PoolWrite = decode(&body(&headers, raw)?)?;
    let name = write
        .name
        .take()
        .ok_or_else(|| ApiError::field("name", "required"))?;
    let spec = write
        .into_spec(&name, engine.catalog())
        .map_err(ApiError::invalid)?;
    let doc = engine.put_pool(spec, true).await?;
    Ok(json(StatusCode::CREATED, to_json(&doc)))
}

#[utoipa::path(put, path = "/v1/pools/{name}", tag = "pools", params(("name" = String, Path)), request_body = PoolWrite, responses((status = 200, body = PoolDoc), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid fields", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn update_pool(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    caller.allow(Operation::WriteCluster)?;
    let mut write: PoolWrite = decode(&body(&headers, raw)?)?;
    if let Some(n) = write.name.take()
        && n != name
    {
        return Err(ApiError::field(
            "name",
            format!("{n:?} differs from the path's {name:?}"),
        ));
    }
    let spec = write
        .into_spec(&name, engine.catalog())
        .map_err(ApiError::invalid)?;
    let doc = engine.put_pool(spec, false).await?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(delete, path = "/v1/pools/{name}", tag = "pools", params(("name" = String, Path)), responses((status = 200, body = PoolDoc), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_pool(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow(Operation::WriteCluster)?;
    let doc = engine.delete_pool(name).await?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateQuery {
    #[serde(default)]
    dry_run: bool,
}

#[utoipa::path(post, path = "/v1/allocations", tag = "allocations", request_body = AllocationRequest, params(("dry_run" = Option<bool>, Query), ("Idempotency-Key" = Option<String>, Header)), responses((status = 201, description = "granted", body = AllocationDoc), (status = 202, description = "queued", body = AllocationDoc), (status = 409, description = "insufficient resources", body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid fields", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_allocation(
    State(app): State<crate::agents::App>,
    caller: Caller,
    q: Result<Query<CreateQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::field("dry_run", e.body_text()))?;
    let mut req: AllocationRequest = decode(&body(&headers, raw)?)?;
    if q.dry_run {
        // A dry run changes nothing: whoever may read the node may ask what would fit.
        caller.allow(Operation::ReadNode)?;
    } else if caller.needs_owner(Operation::CreateAllocation) {
        // An agent held to a pool asks in that pool unless it names one.
        if req.pool.is_none() {
            req.pool.clone_from(&caller.principal().pool);
        }
        caller.allow_for(Operation::CreateAllocation, &req.agent, req.pool.as_deref())?;
    } else {
        caller.allow(Operation::CreateAllocation)?;
    }
    let engine = &app.engine;
    let req = req
        .into_request(engine.catalog())
        .map_err(ApiError::invalid)?;
    if !q.dry_run {
        crate::agents::within_cap(crate::agents::priority_cap(&app, &caller), req.priority)?;
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            // a key is the caller's: another token's request with the same key is its own
            Ok(k) if !k.is_empty() && k.len() <= 256 => {
                Some(format!("{}/{k}", caller.principal().token_id))
            }
            _ => {
                return Err(ApiError::field(
                    "Idempotency-Key",
                    "must be 1 to 256 visible ASCII characters",
                ));
            }
        },
    };
    let replay = engine.submit(req, q.dry_run, key).await?;
    let status = StatusCode::from_u16(replay.status).unwrap_or(StatusCode::CREATED);
    let location = replay.id.as_ref().map(|id| format!("/v1/allocations/{id}"));
    let mut resp = json(status, replay.body);
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    agent: Option<String>,
    pool: Option<String>,
    state: Option<String>,
    node: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/allocations", tag = "allocations", params(("agent" = Option<String>, Query), ("pool" = Option<String>, Query), ("state" = Option<String>, Query), ("node" = Option<String>, Query), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000), ("cursor" = Option<String>, Query)), responses((status = 200, body = AllocationList)))]
pub(crate) async fn list_allocations(
    State(engine): State<Engine>,
    caller: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    caller.allow(Operation::List)?;
    let Query(mut q) = q.map_err(|e| ApiError::field("query", e.body_text()))?;
    // An agent token lists its own (and, with spawn, its sub-agents'): an exact filter when
    // that is all it may see, else the page filtered.
    let p = caller.principal();
    if let Some(me) = &p.agent {
        match &q.agent {
            Some(a) if !caller.sees(a) => {
                return Ok(json(
                    StatusCode::OK,
                    to_json(&AllocationList {
                        items: Vec::new(),
                        next_cursor: None,
                    }),
                ));
            }
            Some(_) => {}
            None if !p.spawn => q.agent = Some(me.clone()),
            None => {}
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("{limit} is out of range 1..=1000"),
        ));
    }
    let after = match &q.cursor {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::field("cursor", format!("{c:?} is not a cursor from this API"))
        })?),
    };
    let filter = AllocationFilter {
        agent: q.agent,
        pool: q.pool,
        state: q.state,
        node: q.node,
    };
    let mut items = engine.list(filter, after, limit).await?;
    let full = items.len() == limit;
    let last = items.last().map(|d| d.id.clone());
    items.retain(|d| caller.sees(&d.agent));
    let next_cursor = full
        .then(|| {
            last.as_deref()
                .and_then(|id| id.parse::<AllocId>().ok())
                .map(|id| id.seq().to_string())
        })
        .flatten();
    Ok(json(
        StatusCode::OK,
        to_json(&AllocationList { items, next_cursor }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    wait: Option<f64>,
}

#[utoipa::path(get, path = "/v1/allocations/{id}", tag = "allocations", params(("id" = String, Path), ("wait" = Option<f64>, Query, description = "long-poll up to this many seconds while queued")), responses((status = 200, body = AllocationDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_allocation(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::field("wait", e.body_text()))?;
    let id = alloc_id(&id)?;
    authorize_allocation(&engine, &caller, Operation::ReadAllocation, id).await?;
    if let Some(w) = q.wait {
        if !w.is_finite() || !(0.0..=300.0).contains(&w) {
            return Err(ApiError::field(
                "wait",
                format!("{w} must be 0 to 300 seconds"),
            ));
        }
        engine.wait_for(id, Duration::from_secs_f64(w)).await?;
    }
    match engine.get(id).await? {
        Lookup::Live(doc) => Ok(json(StatusCode::OK, to_json(&doc))),
        Lookup::NotLive => {
            let doc = engine
                .stored(id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no allocation {id}")))?;
            Ok(json(StatusCode::OK, to_json(&doc)))
        }
    }
}

#[utoipa::path(delete, path = "/v1/allocations/{id}", tag = "allocations", params(("id" = String, Path)), responses((status = 200, body = AllocationDoc), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn release_allocation(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = alloc_id(&id)?;
    authorize_allocation(&engine, &caller, Operation::ReleaseAllocation, id).await?;
    let doc = match engine.release(id).await? {
        Some(doc) => doc,
        None => engine
            .stored(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no allocation {id}")))?,
    };
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(post, path = "/v1/allocations/{id}/renew", tag = "allocations", params(("id" = String, Path)), request_body = RenewRequest, responses((status = 200, body = AllocationDoc), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn renew_allocation(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = alloc_id(&id)?;
    authorize_allocation(&engine, &caller, Operation::RenewAllocation, id).await?;
    let req: RenewRequest = optional_body(&headers, raw)?;
    let ttl = req.ttl_ms().map_err(|e| ApiError::invalid(vec![e]))?;
    let doc = engine.renew(id, ttl).await?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}
