//! quartermaster as a Model Context Protocol server (rmcp): one tool set and two resources,
//! written once over a [`Backend`] that answers API v1 requests. The daemon serves it over
//! streamable HTTP at `/mcp` with [`Loopback`], which sends each request through the daemon's
//! own router in process (so validation, error mapping and any auth layer are the routes'
//! own); `qm mcp` serves it on stdio with a backend that speaks HTTP to a running daemon.
//! Tool failures come back as tool errors (`is_error`) carrying the daemon's problem, never
//! as protocol errors.

mod agents;
mod args;
mod catalog;
mod fit;
mod tools;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{self, HeaderValue, Method, Request, header};
use qm_proto::Problem;
use rmcp::handler::server::common::{schema_for_empty_input, schema_for_input};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use tower::ServiceExt as _;

pub use catalog::TOOL_NAMES;

/// One request of API v1 a tool makes.
#[derive(Debug, Clone)]
pub struct ApiCall {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: Method,
    /// The path with its query (`/v1/allocations?state=granted`).
    pub path: String,
    /// The JSON body of a write.
    pub body: Option<Value>,
    /// The `Authorization` header of the MCP request that caused this call, when it came
    /// over HTTP; a backend with credentials of its own ignores it.
    pub authorization: Option<String>,
}

/// Why an API call failed.
#[derive(Debug, Clone)]
pub enum BackendError {
    /// The daemon answered with a problem (4xx or 5xx).
    Refused(Box<Problem>),
    /// The daemon could not be reached, or its answer was not JSON.
    Unreachable(String),
}

/// What a call answers: the status and JSON body of a 2xx answer.
pub type Answer = (u16, Value);

/// The future a [`Backend`] returns.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, BackendError>> + Send + 'a>>;

/// Where the tools send their API v1 requests.
pub trait Backend: Send + Sync + 'static {
    /// Sends `call` and returns the 2xx answer, or why there is none.
    fn call(&self, call: ApiCall) -> CallFuture<'_>;
}

/// The daemon's own router, called in process: the backend of `/mcp`.
#[derive(Debug, Clone)]
pub struct Loopback {
    router: Router,
}

impl Loopback {
    /// A backend that sends each call through `router` (the API v1 routes, without `/mcp`).
    pub fn new(router: Router) -> Self {
        Self { router }
    }
}

/// Bodies of API answers are small; this bounds a runaway one.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

impl Backend for Loopback {
    fn call(&self, call: ApiCall) -> CallFuture<'_> {
        Box::pin(async move {
            let mut req = Request::builder().method(call.method).uri(&call.path);
            if let Some(auth) = call
                .authorization
                .as_deref()
                .and_then(|a| HeaderValue::from_str(a).ok())
            {
                req = req.header(header::AUTHORIZATION, auth);
            }
            let body = match &call.body {
                Some(b) => {
                    req = req.header(header::CONTENT_TYPE, "application/json");
                    Body::from(b.to_string())
                }
                None => Body::empty(),
            };
            let req = req
                .body(body)
                .map_err(|e| BackendError::Unreachable(format!("bad request line: {e}")))?;
            let resp = self
                .router
                .clone()
                .oneshot(req)
                .await
                .map_err(|e| BackendError::Unreachable(e.to_string()))?;
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
                .await
                .map_err(|e| BackendError::Unreachable(format!("cannot read the answer: {e}")))?;
            answer(status, &bytes)
        })
    }
}

/// Turns a status and body into a call's result: a problem for 4xx and 5xx.
fn answer(status: u16, body: &[u8]) -> Result<Answer, BackendError> {
    let value: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) if status >= 400 => {
                let text = String::from_utf8_lossy(body);
                return Err(BackendError::Refused(Box::new(Problem::new(
                    status,
                    "internal",
                    format!("{text} ({e})"),
                ))));
            }
            Err(e) => {
                return Err(BackendError::Unreachable(format!(
                    "the answer is not JSON: {e}"
                )));
            }
        }
    };
    if status >= 400 {
        let problem = serde_json::from_value::<Problem>(value.clone())
            .unwrap_or_else(|_| Problem::new(status, "internal", value.to_string()));
        return Err(BackendError::Refused(Box::new(problem)));
    }
    Ok((status, value))
}

/// The MCP server: quartermaster's tools and resources over `B`.
#[derive(Debug)]
pub struct QmMcp<B> {
    backend: Arc<B>,
}

impl<B> Clone for QmMcp<B> {
    fn clone(&self) -> Self {
        Self {
            backend: Arc::clone(&self.backend),
        }
    }
}

impl<B: Backend> QmMcp<B> {
    /// A server whose tools call `backend`.
    pub fn new(backend: B) -> Self {
        Self {
            backend: Arc::new(backend),
        }
    }

    /// Every tool, with its description and input schema.
    pub fn tools() -> Vec<Tool> {
        catalog::catalog()
    }
}

/// The `Authorization` header of the HTTP request behind `context`, if any.
fn authorization(context: &RequestContext<RoleServer>) -> Option<String> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The URIs of the resources.
pub const NODE_URI: &str = "qm://node";
/// The pressure state.
pub const PRESSURE_URI: &str = "qm://pressure";

fn resources() -> Vec<Resource> {
    vec![
        Resource::new(NODE_URI, "node")
            .with_title("The local node")
            .with_description(
                "The daemon's own node as JSON: capacity, allocatable, allocated, available \
                 and measured usage per resource, readiness and pressure level (GET /v1/node).",
            )
            .with_mime_type("application/json"),
        Resource::new(PRESSURE_URI, "pressure")
            .with_title("Resource pressure")
            .with_description(
                "The pressure state as JSON: the overall level (ok, warning, critical), the \
                 admission gate (open, best-effort-paused, paused) and per-signal levels, \
                 utilization, trends, exhaustion forecasts and anomaly scores for memory, cpu, \
                 disk and pids (GET /v1/pressure).",
            )
            .with_mime_type("application/json"),
    ]
}

impl<B: Backend> ServerHandler for QmMcp<B> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new(
            "quartermaster",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "quartermaster (qm) hands out cpu, memory and gpus on this machine or cluster to AI \
             agents. Check can_fit or node_status before starting heavy work, allocate (or \
             spawn_agent) before using resources and release when done; watch pressure and \
             active_alerts. Quantities: cpu in cores (\"500m\" = half a core), memory in bytes \
             with suffixes (\"256Mi\", \"2Gi\").",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(catalog::catalog()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        catalog::catalog().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !TOOL_NAMES.contains(&request.name.as_ref()) {
            return Err(ErrorData::invalid_params(
                format!(
                    "no tool named {:?} (tools: {})",
                    request.name,
                    TOOL_NAMES.join(", ")
                ),
                None,
            ));
        }
        let api = tools::Api {
            backend: &*self.backend,
            authorization: authorization(&context),
        };
        let args = request.arguments.unwrap_or_default();
        let result = match tools::run(&api, &request.name, args).await {
            Ok(reply) => {
                let mut r = CallToolResult::success(vec![ContentBlock::text(reply.text)]);
                r.structured_content = Some(reply.structured);
                r
            }
            Err(failure) => {
                let mut r = CallToolResult::error(vec![ContentBlock::text(failure.text())]);
                r.structured_content = Some(failure.structured());
                r
            }
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let path = match request.uri.as_str() {
            NODE_URI => "/v1/node",
            PRESSURE_URI => "/v1/pressure",
            other => {
                return Err(ErrorData::resource_not_found(
                    format!("no resource {other:?} (resources: {NODE_URI}, {PRESSURE_URI})"),
                    None,
                ));
            }
        };
        let call = ApiCall {
            method: Method::GET,
            path: path.to_owned(),
            body: None,
            authorization: authorization(&context),
        };
        match self.backend.call(call).await {
            Ok((_, value)) => {
                let text = serde_json::to_string_pretty(&value).unwrap_or_default();
                Ok(ReadResourceResult::new(vec![
                    ResourceContents::text(text, request.uri.clone())
                        .with_mime_type("application/json"),
                ])
                .into())
            }
            Err(e) => Err(ErrorData::internal_error(
                tools::Failure::from(e).text(),
                None,
            )),
        }
    }
}

/// The input schema of `T` as MCP wants it (an object, no top-level title).
fn input_schema<T: rmcp::schemars::JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_input::<T>().unwrap_or_else(|_| schema_for_empty_input())
}

/// `/mcp` in the OpenAPI document; rmcp's [`StreamableHttpService`] serves it.
#[utoipa::path(post, path = "/mcp", tag = "mcp",
    description = "Model Context Protocol over streamable HTTP (JSON-RPC 2.0): the tools node_status, cluster_status, can_fit, allocate, release, list_allocations, pressure, spawn_agent, list_agents, stop_agent, scale_fleet, active_alerts and recommend, and the resources qm://node and qm://pressure. POST sends a message (the answer is JSON or an event stream), GET opens the session's event stream, DELETE ends the session (header Mcp-Session-Id). Only loopback Host headers are accepted.",
    request_body(content = Object, content_type = "application/json", description = "a JSON-RPC request, notification or response"),
    responses(
        (status = 200, description = "the JSON-RPC answer, as application/json or text/event-stream"),
        (status = 202, description = "a notification or response was accepted"),
        (status = 403, description = "the Host header is not a loopback name"),
        (status = 404, description = "no such session"),
    ))]
#[allow(dead_code, reason = "documents the route; the OpenAPI derive names it")]
pub(crate) fn mcp_endpoint() {}

/// `/mcp`: the tool set over streamable HTTP, its calls sent through `api` in process.
/// Sessions end when `closed` resolves (the daemon shutting down), so that open streams do
/// not hold the server up.
pub fn http_service(
    api: Router,
    closed: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
) -> StreamableHttpService<QmMcp<Loopback>, LocalSessionManager> {
    let server = QmMcp::new(Loopback::new(api));
    let config = StreamableHttpServerConfig::default();
    if let Some(closed) = closed {
        let token = config.cancellation_token.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                closed.await;
                token.cancel();
            });
        }
    }
    StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
