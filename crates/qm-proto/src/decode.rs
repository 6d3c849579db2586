//! Decoding request bodies: malformed JSON is told apart from JSON of the wrong shape, and a
//! shape error names the field (through `serde_path_to_error`).

use serde::de::DeserializeOwned;

use crate::problem::FieldProblem;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (or not UTF-8).
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// JSON, but not what the route takes: a wrong type, an unknown or missing field.
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(FieldProblem),
}

/// Decodes `body`, which must be a JSON object, into `T`.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            return Err(DecodeError::Invalid(FieldProblem {
                field: "body".to_owned(),
                message: "must be a JSON object".to_owned(),
            }));
        }
        _ => {}
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(classify(&path, &inner));
        }
    };
    // Anything after the value but whitespace is malformed too.
    de.end()
        .map_err(|e| DecodeError::Malformed(strip_position(&e.to_string())))?;
    Ok(value)
}

fn classify(path: &str, e: &serde_json::Error) -> DecodeError {
    match e.classify() {
        serde_json::error::Category::Data => {
            let message = strip_position(&e.to_string());
            let field = if path == "." || path.is_empty() {
                "body".to_owned()
            } else {
                path.to_owned()
            };
            // An unknown or missing field is named in the message; make it the field.
            let field = match named_field(&message) {
                Some(f) if field == "body" => f,
                Some(f) if !field.ends_with(&f) => format!("{field}.{f}"),
                _ => field,
            };
            DecodeError::Invalid(FieldProblem { field, message })
        }
        _ => DecodeError::Malformed(strip_position(&e.to_string())),
    }
}

fn named_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    rest.split('`').next().map(str::to_owned)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
