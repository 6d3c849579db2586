//! The one place errors become HTTP: status codes, stable `code` slugs and problem+json bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use qm_engine::EngineError;
use qm_proto::{DecodeError, FieldProblem, Problem};

/// An error answer.
#[derive(Debug)]
pub struct ApiError(pub Box<Problem>);

impl ApiError {
    /// A problem with `status`, `code` and `detail`.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self(Box::new(Problem::new(status.as_u16(), code, detail)))
    }

    /// `validation_failed` with the invalid fields.
    pub fn invalid(errors: Vec<FieldProblem>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut p = Problem::new(422, "validation_failed", detail);
        p.errors = errors;
        Self(Box::new(p))
    }

    /// `validation_failed` for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::invalid(vec![FieldProblem {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    /// 401 `unauthorized` (with `WWW-Authenticate: Bearer`).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403 `forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Malformed(m) => Self::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {m}"),
            ),
            DecodeError::Invalid(f) => Self::invalid(vec![f]),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(d) => Self::not_found(d),
            EngineError::Invalid(errors) => Self::invalid(errors),
            EngineError::Conflict(d) => Self::new(StatusCode::CONFLICT, "conflict", d),
            EngineError::Insufficient { detail, shortfall } => {
                let mut p = Problem::new(409, "insufficient_resources", detail);
                p.shortfall = Some(shortfall);
                Self(Box::new(p))
            }
            EngineError::Store(e) if e.is_full() => {
                let mut p = Problem::new(
                    507,
                    "storage_full",
                    format!(
                        "the disk is full: the change was not made ({e}); writes resume once space returns"
                    ),
                );
                p.retry_after_s = Some(5);
                Self(Box::new(p))
            }
            EngineError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                let mut p = Problem::new(
                    503,
                    "storage_unavailable",
                    format!("the change could not be made durable, and was not made: {e}"),
                );
                p.retry_after_s = Some(5);
                Self(Box::new(p))
            }
            EngineError::Internal(d) => {
                tracing::error!(error = %d, "internal failure");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", d)
            }
            EngineError::Stopped => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "internal",
                "the daemon is shutting down",
            ),
            EngineError::AdmissionPaused {
                detail,
                retry_after_s,
            } => {
                let mut p = Problem::new(503, "admission_paused", detail);
                p.retry_after_s = Some(retry_after_s);
                Self(Box::new(p))
            }
        }
    }
}

impl From<qm_supervisor::AgentError> for ApiError {
    fn from(e: qm_supervisor::AgentError) -> Self {
        match e {
            qm_supervisor::AgentError::Engine(e) => e.into(),
            qm_supervisor::AgentError::Spawn(d) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "spawn_failed", d)
            }
            qm_supervisor::AgentError::Forbidden(d) => Self::forbidden(d),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = qm_proto::to_json(&self.0);
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"qm\""),
            );
        }
        if let Some(s) = self.0.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
