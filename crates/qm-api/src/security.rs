//! The security routes: API tokens (`/v1/tokens`: create, shown once; list; revoke, at once)
//! and the audit log (`/v1/audit`), both for admins only.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use qm_engine::Engine;
use qm_proto::{AuditDoc, AuditList, TokenList, TokenRequest, decode, to_json};
#[allow(unused_imports, reason = "the OpenAPI annotations name these types")]
use qm_proto::{Problem, TokenCreated, TokenDoc};

use crate::auth::{Caller, Operation};
use crate::error::ApiError;
use crate::routes::{body, json};

type ApiResult = Result<Response, ApiError>;

#[utoipa::path(post, path = "/v1/tokens", tag = "security", request_body = TokenRequest,
    responses((status = 201, description = "the token, shown once", body = TokenCreated),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_token(
    State(engine): State<Engine>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    caller.allow(Operation::ManageTokens)?;
    let req: TokenRequest = decode(&body(&headers, raw)?)?;
    let created = engine.tokens().create(&req, false).await?;
    Ok(json(StatusCode::CREATED, to_json(&created)))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "security",
    responses((status = 200, body = TokenList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_tokens(State(engine): State<Engine>, caller: Caller) -> ApiResult {
    caller.allow(Operation::ManageTokens)?;
    let items = engine.tokens().list();
    Ok(json(StatusCode::OK, to_json(&TokenList { items })))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "security", params(("id" = String, Path)),
    responses((status = 200, description = "revoked", body = TokenDoc),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn revoke_token(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.allow(Operation::ManageTokens)?;
    let doc = engine
        .tokens()
        .revoke(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no token {id:?}")))?;
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/whoami", tag = "security",
    responses((status = 200, description = "the caller's identity", body = qm_proto::WhoAmI),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn whoami(caller: Caller) -> ApiResult {
    caller.allow(Operation::ReadDocs)?;
    let p = caller.principal();
    let doc = qm_proto::WhoAmI {
        token_id: p.token_id.clone(),
        name: p.name.clone(),
        role: p.role.as_str().to_owned(),
        agent: p.agent.clone(),
        pool: p.pool.clone(),
        spawn: p.spawn,
        auth: if p.token_id == crate::auth::ANONYMOUS {
            "none"
        } else {
            "tokens"
        }
        .to_owned(),
    };
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/audit", tag = "security",
    params(("since" = Option<i64>, Query, minimum = 0, description = "entries after this sequence number"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "at most this many (default 100, at most 1000)")),
    responses((status = 200, body = AuditList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn audit(
    State(engine): State<Engine>,
    caller: Caller,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult {
    caller.allow(Operation::ReadAudit)?;
    if let Some(k) = q.keys().find(|k| !matches!(k.as_str(), "since" | "limit")) {
        return Err(ApiError::field(
            k,
            "unknown query parameter (known: since, limit)",
        ));
    }
    let since =
        match q.get("since") {
            Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::field("since", format!("{s:?} is not a sequence number"))
            })?,
            None => 0,
        };
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::field("limit", format!("{l:?} is not 1..=1000")))?,
        None => 100,
    };
    let store = engine.store().clone();
    let rows = tokio::task::spawn_blocking(move || store.audit(since, limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let full = rows.len() == limit;
    let items: Vec<AuditDoc> = rows
        .into_iter()
        .map(|r| {
            let mut entry: qm_proto::AuditEntryDoc =
                qm_proto::from_json(&r.body).unwrap_or_default();
            entry.at = qm_proto::format_rfc3339(u64::try_from(r.at_ms).unwrap_or(0));
            AuditDoc {
                seq: r.seq,
                entry,
                prev: r.prev,
                hash: r.hash,
            }
        })
        .collect();
    let next_since = if full {
        items.last().map(|d| d.seq)
    } else {
        None
    };
    Ok(json(
        StatusCode::OK,
        to_json(&AuditList { items, next_since }),
    ))
}
