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
mod ui;

pub use agents::App;
pub use auth::{AuthConfig, AuthMode, Caller};
pub use error::ApiError;
pub use routes::router;
pub use ui::assets_bytes as ui_assets_bytes;

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The largest state document `POST /v1/state` accepts.
pub const MAX_STATE_BODY: usize = 256 * 1024 * 1024;

pub use forward::{Forward, Relay, relay_agent};
pub use qm_engine::Engine;

/// How the daemon sees its cluster (`GET /v1/cluster`): a member's view of etcd, or, for a
/// daemon on its own, itself.
pub type ClusterView = std::sync::Arc<dyn Fn() -> qm_proto::ClusterDoc + Send + Sync>;

/// A future the [`Placer`] answers with.
pub type Answer<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where a cluster's agents go: the leader places each spawn on a member's node, and that
/// member runs it. The agent routes ask this for what is not this member's own.
pub trait Placer: Send + Sync {
    /// Places a spawn (its caller checked who asks); the agent as placed. Only the leader
    /// places: a member that does not lead answers 503 naming the leader.
    fn place(&self, spec: qm_proto::AgentSpec) -> Answer<'_, Result<qm_proto::AgentDoc, ApiError>>;

    /// Stops the placed agent `name` (its owner stops the run, the leader releases its
    /// allocation); None when no agent of that name is placed.
    fn stop(
        &self,
        name: String,
        grace_s: Option<f64>,
    ) -> Answer<'_, Result<Option<qm_proto::AgentDoc>, ApiError>>;

    /// Every placed agent, as its owner last reported it (or as placed, before it did).
    fn list(&self) -> Answer<'_, Result<Vec<qm_proto::AgentDoc>, ApiError>>;

    /// Whether this member leads (only the leader's ledger takes writes).
    fn leads(&self) -> bool;
}

/// What the routes know of the daemon's cluster.
#[derive(Clone)]
pub struct Cluster {
    /// `GET /v1/cluster`.
    pub view: ClusterView,
    /// Where the ledger's routes go while this member does not lead, and how.
    pub forward: Option<std::sync::Arc<Relay>>,
    /// Where spawns go, in a cluster on etcd.
    pub placer: Option<std::sync::Arc<dyn Placer>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("forward", &self.forward.is_some())
            .field("placer", &self.placer.is_some())
            .finish_non_exhaustive()
    }
}
