//! Wire types of the security routes: API tokens (`/v1/tokens`: create, list, revoke) and
//! the audit log (`/v1/audit`). A token's secret appears once, in [`TokenCreated`]; no other
//! type carries it.

use serde::{Deserialize, Serialize};

use crate::FieldProblem;

/// The roles a token can have.
pub const ROLES: [&str; 4] = ["admin", "operator", "agent", "observer"];

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// 1..128 of [A-Za-z0-9._:-]: who holds it, for people reading lists and the audit log.
    pub name: String,
    /// `admin`, `operator`, `agent` or `observer`.
    pub role: String,
    /// The agent an `agent` token is bound to (required for that role, refused for others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The pool an `agent` token is held to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// An `agent` token may spawn sub-agents `<agent>.<suffix>` in its pool.
    #[serde(default)]
    pub spawn: bool,
    /// Seconds until it expires (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<f64>,
}

impl TokenRequest {
    /// Every bad field, named.
    pub fn validate(&self) -> Vec<FieldProblem> {
        let mut errors = Vec::new();
        let name_ok = |n: &str| {
            (1..=128).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        };
        if !name_ok(&self.name) {
            errors.push(FieldProblem::new(
                "name",
                format!("{:?} is not 1..128 of [A-Za-z0-9._:-]", self.name),
            ));
        }
        if !ROLES.contains(&self.role.as_str()) {
            errors.push(FieldProblem::new(
                "role",
                format!("{:?} is not one of {}", self.role, ROLES.join(", ")),
            ));
        }
        let agent_role = self.role == "agent";
        match &self.agent {
            None if agent_role => {
                errors.push(FieldProblem::new("agent", "required for role agent"));
            }
            Some(a) if !agent_role => errors.push(FieldProblem::new(
                "agent",
                format!("{a:?}: only an agent token is bound to an agent"),
            )),
            Some(a) if !crate::valid_name(a) => errors.push(FieldProblem::new(
                "agent",
                format!("{a:?} is not 1..128 of [A-Za-z0-9._-]"),
            )),
            _ => {}
        }
        if let Some(p) = &self.pool {
            if !agent_role {
                errors.push(FieldProblem::new(
                    "pool",
                    format!("{p:?}: only an agent token is held to a pool"),
                ));
            } else if !crate::valid_name(p) {
                errors.push(FieldProblem::new(
                    "pool",
                    format!("{p:?} is not 1..128 of [A-Za-z0-9._-]"),
                ));
            }
        }
        if self.spawn && !agent_role {
            errors.push(FieldProblem::new(
                "spawn",
                "only an agent token takes spawn (the other roles' rights are fixed)",
            ));
        }
        if let Some(t) = self.ttl_s
            && !(t.is_finite() && t > 0.0 && t <= 10.0 * 365.0 * 86_400.0)
        {
            errors.push(FieldProblem::new(
                "ttl_s",
                format!("{t} is not a number of seconds in (0, 315360000]"),
            ));
        }
        errors
    }
}

/// A token as lists show it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenDoc {
    pub id: String,
    pub name: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default)]
    pub spawn: bool,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Minted by the daemon for a spawned agent (revoked when it ends).
    #[serde(default)]
    pub managed: bool,
}

/// `201` to `POST /v1/tokens`: the record and, once, the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub doc: TokenDoc,
    /// The bearer token. It is shown here only; the daemon keeps its hash.
    pub token: String,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenDoc>,
}

/// Who made a request, as the audit log records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActorDoc {
    /// The token's id (`bootstrap` for the admin token file), absent without a valid token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The local peer's uid, when the connection came over loopback and the kernel says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_uid: Option<u32>,
    /// The peer's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// One audit entry, as stored (the chain covers this JSON) and served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntryDoc {
    /// When (the stored entry leaves it out: its time is the row's, which the chain covers).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub at: String,
    pub actor: ActorDoc,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// SHA-256 (hex) of the request body, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
    /// Refused requests left out of the log since the entry before (flood bound).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `GET /v1/audit` items: the entry with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditDoc {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: AuditEntryDoc,
    pub prev: String,
    pub hash: String,
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditDoc>,
    /// Pass as `since` for the entries after these; null at the end.
    pub next_since: Option<i64>,
}

/// A token's stored record: its hash, never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    #[serde(flatten)]
    pub doc: TokenDoc,
    /// SHA-256 of the whole token (hex).
    pub sha256: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
}

/// `GET /v1/whoami`: the caller's identity, as the daemon sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub token_id: String,
    pub name: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default)]
    pub spawn: bool,
    /// `tokens`, or `none` when the daemon runs without authentication (`--auth none`).
    pub auth: String,
}
