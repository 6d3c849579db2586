//! RFC 9457 problem details: every 4xx/5xx body, with the stable `code` clients branch on and
//! the extensions the spec names (`errors`, `shortfall`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldProblem {
    /// The field's path (`resources.memory`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldProblem {
    /// A problem with `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldProblem {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// An `application/problem+json` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// This occurrence, in a sentence.
    pub detail: String,
    /// The stable slug clients branch on.
    pub code: String,
    /// Invalid fields, for `validation_failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// What is missing, for `insufficient_resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<BTreeMap<String, String>>,
    /// With `admission_paused`: seconds to wait before asking again (also `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

impl Problem {
    /// A problem with `status`, `code` and `detail`; the title is derived from the code.
    pub fn new(status: u16, code: &str, detail: impl Into<String>) -> Self {
        let title = code.replace('_', " ");
        Self {
            kind: format!("https://quartermaster.dev/problems/{code}"),
            title,
            status,
            detail: detail.into(),
            code: code.to_owned(),
            errors: Vec::new(),
            shortfall: None,
            retry_after_s: None,
        }
    }
}
