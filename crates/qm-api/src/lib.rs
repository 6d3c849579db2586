//! quartermaster's HTTP API v1 (axum): routes for health, nodes, pools and allocations as
//! `shared/spec/api-v1.md` describes them, and the MCP server (`/mcp`, [`mcp`]). Bodies are decoded by `qm-proto`, commands run on
//! the [`Engine`], and every error becomes `application/problem+json` in one place
//! ([`ApiError`]).

mod agents;
pub mod auth;
mod error;
mod events;
mod forward;
pub mod mcp;
pub mod metrics;
mod monitoring;
mod openapi;
mod openapi_exact;
mod routes;
mod security;

pub use agents::App;
pub use auth::{AuthConfig, AuthMode, Caller};
pub use error::ApiError;
pub use routes::router;

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The largest state document `POST /v1/state` accepts.
pub const MAX_STATE_BODY: usize = 256 * 1024 * 1024;

pub use forward::Forward;
pub use qm_engine::Engine;

/// How the daemon sees its cluster (`GET /v1/cluster`): a member's view of etcd, or, for a
/// daemon on its own, itself.
pub type ClusterView = std::sync::Arc<dyn Fn() -> qm_proto::ClusterDoc + Send + Sync>;
