//! Authentication and the audit of requests. [`gate`] wraps every route but `/healthz`,
//! `/readyz`, the dashboard's static files (`/`, `/ui/`) and `/metrics` when it is public: it finds the bearer token's [`Principal`]
//! (401 `unauthorized` without one), hands it to handlers as [`Caller`], and for a write opens
//! the request's audit entry, which the first durable change carries into its own
//! transaction (a read commits nothing: its entry is made only if it is refused). Refused
//! requests and writes that changed nothing are recorded afterwards, refusals through a token
//! bucket so a flood costs a bounded number of rows. Handlers name the operation they
//! perform; [`policy::decide`] alone decides.

pub mod policy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use qm_engine::Engine;
use qm_engine::audit::{self, Pending};
use qm_engine::tokens::{Principal, Role};
use qm_proto::{ActorDoc, AuditEntryDoc};
use qm_store::Batch;
use sha2::{Digest, Sha256};

pub use policy::{Decision, Operation, Owner};

use crate::error::ApiError;

/// The token id of every caller of a daemon without authentication.
pub const ANONYMOUS: &str = "anonymous";

/// How the daemon authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Bearer tokens (the default).
    Tokens,
    /// Everyone is the admin: loopback demos only, refused elsewhere by `qm serve`.
    None,
}

/// Authentication settings.
#[derive(Debug, Clone, Copy)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// `/metrics` without a token.
    pub public_metrics: bool,
    /// Refused requests recorded per second, on average.
    pub refused_per_s: f64,
    /// ... and in a burst.
    pub refused_burst: f64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Tokens,
            public_metrics: false,
            refused_per_s: 100.0,
            refused_burst: 1000.0,
        }
    }
}

/// The gate's state.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    engine: Engine,
    config: AuthConfig,
    anonymous: Arc<Principal>,
    /// Who reads `/metrics` without a token when it is public: an observer.
    public: Arc<Principal>,
    refused: Arc<Bucket>,
}

impl Gate {
    pub(crate) fn new(engine: Engine, config: AuthConfig) -> Self {
        Self {
            engine,
            refused: Arc::new(Bucket::new(config.refused_per_s, config.refused_burst)),
            config,
            anonymous: Arc::new(Principal::admin(ANONYMOUS, "auth-none")),
            public: Arc::new(Principal {
                role: Role::Observer,
                ..Principal::admin("public", "public-metrics")
            }),
        }
    }
}

/// A token bucket bounding the audit rows of refused requests; what it turns away is
/// counted and reported on the next row it lets through.
#[derive(Debug)]
struct Bucket {
    state: Mutex<(f64, Instant)>,
    rate: f64,
    burst: f64,
    suppressed: AtomicU64,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            state: Mutex::new((burst, Instant::now())),
            rate,
            burst,
            suppressed: AtomicU64::new(0),
        }
    }

    /// Some(rows suppressed before this one) when this row may be written.
    fn admit(&self) -> Option<u64> {
        let Ok(mut s) = self.state.lock() else {
            return None;
        };
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The authenticated caller, for handlers.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Principal>, Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("a bearer token is required"))
    }
}

impl Caller {
    fn refuse(&self, op: Operation, d: Decision) -> Result<(), ApiError> {
        match d {
            Decision::Allow => Ok(()),
            Decision::NotFound => Err(ApiError::not_found("no such resource")),
            Decision::Deny | Decision::NeedOwner => Err(ApiError::forbidden(format!(
                "token {:?} (role {}) may not {}",
                self.0.name,
                self.0.role.as_str(),
                op.describe()
            ))),
        }
    }

    /// Allowed to perform `op`, which concerns no one's resource in particular.
    pub fn allow(&self, op: Operation) -> Result<(), ApiError> {
        self.refuse(op, policy::decide(&self.0, op, Owner::Unknown))
    }

    /// Whether `op`'s decision needs the owner looked up.
    pub fn needs_owner(&self, op: Operation) -> bool {
        policy::decide(&self.0, op, Owner::Unknown) == Decision::NeedOwner
    }

    /// Allowed to perform `op` on agent `agent`'s resource (in `pool`).
    pub fn allow_for(
        &self,
        op: Operation,
        agent: &str,
        pool: Option<&str>,
    ) -> Result<(), ApiError> {
        self.refuse(
            op,
            policy::decide(&self.0, op, Owner::Agent { agent, pool }),
        )
    }

    /// An agent token's view: Some(predicate) over agent names when lists must be scoped.
    pub fn sees(&self, agent: &str) -> bool {
        self.0.role != Role::Agent || policy::owns(&self.0, agent)
    }

    /// Whether agents' `env` values are shown (admins only).
    pub fn sees_secrets(&self) -> bool {
        self.0.role == Role::Admin
    }

    /// The principal.
    pub fn principal(&self) -> &Principal {
        &self.0
    }

    /// The uid of the process that opened the connection, when it is local.
    pub fn peer_uid(&self) -> Option<u32> {
        self.1.and_then(qm_sys::peer::loopback_uid)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether a request says it carries a body.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

fn is_write(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Writes recorded even when they succeed without a change: all but liveness signals and
/// the MCP envelope (each tool's own calls are recorded).
fn audited_write(m: &Method, path: &str) -> bool {
    is_write(m) && !path.starts_with("/mcp") && !path.ends_with("/heartbeat")
}

/// The status a committed change of this request answers with, unless the command says.
fn usual_status(m: &Method, path: &str) -> u16 {
    let collection = matches!(
        path,
        "/v1/allocations" | "/v1/pools" | "/v1/nodes" | "/v1/agents" | "/v1/fleets" | "/v1/tokens"
    );
    if *m == Method::POST && collection {
        201
    } else {
        200
    }
}

/// The peer's address, when the listener records it.
fn peer_of(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

fn actor(peer: Option<SocketAddr>, p: Option<&Principal>) -> ActorDoc {
    ActorDoc {
        token_id: p.map(|p| p.token_id.clone()),
        name: p.map(|p| p.name.clone()),
        role: p.map(|p| p.role.as_str().to_owned()),
        // Only who sent a request without a valid token needs looking up.
        peer_uid: if p.is_none() {
            peer.and_then(qm_sys::peer::loopback_uid)
        } else {
            None
        },
        peer: if p.is_none() {
            peer.map(|a| a.to_string())
        } else {
            None
        },
    }
}

/// The authentication middleware (see the module's documentation).
pub(crate) async fn gate(State(g): State<Gate>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let path = path.as_str();
    if path == "/healthz" || path == "/readyz" || crate::ui::public(path) {
        return next.run(req).await;
    }
    if g.config.public_metrics && path == "/metrics" && bearer(req.headers()).is_none() {
        let mut req = req;
        req.extensions_mut()
            .insert(Caller(Arc::clone(&g.public), None));
        return next.run(req).await;
    }
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.to_owned(), |pq| pq.as_str().to_owned());
    let principal = match g.config.mode {
        AuthMode::None => Some(Arc::clone(&g.anonymous)),
        AuthMode::Tokens => bearer(req.headers()).and_then(|t| g.engine.tokens().authenticate(t)),
    };
    let Some(principal) = principal else {
        let given = bearer(req.headers()).is_some();
        // the entry (and the peer's uid, read from /proc) only when the bucket takes it
        record_refused(&g, || AuditEntryDoc {
            actor: actor(peer_of(&req), None),
            method: method.to_string(),
            path: target,
            status: 401,
            ..AuditEntryDoc::default()
        });
        let mut resp = ApiError::unauthorized(if given {
            "the bearer token is unknown, expired or revoked"
        } else {
            "a bearer token is required (Authorization: Bearer <token>)"
        })
        .into_response();
        // its body is never read: the connection cannot carry another request
        if has_body(req.headers()) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return resp;
    };
    let peer = peer_of(&req);
    if !is_write(&method) {
        // a read commits nothing: it needs an entry only if refused, made then
        let mut req = req;
        req.extensions_mut()
            .insert(Caller(Arc::clone(&principal), peer));
        let resp = next.run(req).await;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            record_refused(&g, || AuditEntryDoc {
                actor: actor(peer, Some(&principal)),
                method: method.to_string(),
                path: target,
                status: status.as_u16(),
                ..AuditEntryDoc::default()
            });
        }
        return resp;
    }
    let audit_write = audited_write(&method, path);
    let who = actor(peer, Some(&principal));
    let (mut req, digest) = if audit_write {
        match digest_body(req).await {
            Ok(r) => r,
            Err(resp) => {
                record_refused(&g, || AuditEntryDoc {
                    actor: who,
                    method: method.to_string(),
                    path: target,
                    status: resp.status().as_u16(),
                    ..AuditEntryDoc::default()
                });
                let mut resp = *resp;
                // the rest of its body is unread: the connection cannot carry another request
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
        }
    } else {
        (req, None)
    };
    let entry = AuditEntryDoc {
        actor: who,
        method: method.to_string(),
        path: target,
        status: 0,
        body_sha256: digest,
        ..AuditEntryDoc::default()
    };
    let pending = Pending::new(entry, usual_status(&method, path));
    req.extensions_mut().insert(Caller(principal, peer));
    let resp = audit::scope(Arc::clone(&pending), next.run(req)).await;
    let status = resp.status();
    if !pending.written() {
        let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
        if let Some(mut entry) = pending.entry() {
            entry.status = status.as_u16();
            if refused {
                record_refused(&g, || entry);
            } else if audit_write {
                record(&g.engine, &entry);
            }
        }
    }
    resp
}

/// Reads the body (at most what the route could accept) to take its digest, and puts it
/// back for the handler.
async fn digest_body(req: Request) -> Result<(Request, Option<String>), Box<Response>> {
    let limit = if req.uri().path() == "/v1/state" {
        crate::MAX_STATE_BODY
    } else {
        crate::MAX_BODY
    };
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Box::new(
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("bodies are limited to {limit} bytes"),
            )
            .into_response(),
        )
    })?;
    let digest = (!bytes.is_empty()).then(|| qm_store::audit::hex(&Sha256::digest(&bytes)));
    Ok((Request::from_parts(parts, Body::from(bytes)), digest))
}

/// Records a refusal if the bucket lets it (`entry` is made only then).
fn record_refused(g: &Gate, entry: impl FnOnce() -> AuditEntryDoc) {
    if let Some(suppressed) = g.refused.admit() {
        let mut entry = entry();
        entry.suppressed = suppressed;
        record(&g.engine, &entry);
    }
}

/// Records an entry on its own batch (a request that committed no change).
fn record(engine: &Engine, entry: &AuditEntryDoc) {
    let mut batch = Batch::default();
    batch.push(audit::entry_op(entry));
    engine.store().commit(
        batch,
        Box::new(|r| {
            // once a minute at most: a full disk fails every one of them
            static LAST_WARNED_S: AtomicU64 = AtomicU64::new(0);
            if let Err(e) = r {
                let now = qm_engine::unix_ms() / 1000;
                if now.saturating_sub(LAST_WARNED_S.swap(now, Ordering::Relaxed)) >= 60 {
                    tracing::warn!(%e, "cannot record an audit entry");
                } else {
                    LAST_WARNED_S.store(now, Ordering::Relaxed);
                }
            }
        }),
    );
}
