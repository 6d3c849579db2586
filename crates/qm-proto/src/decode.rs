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

/// An optional integer that may be written as a JSON number with no fraction (`163.0` is the
/// integer 163, as JSON Schema counts it); a fraction, or a number out of `i64`'s range, is
/// refused. For `#[serde(deserialize_with = "crate::decode::integer")]`.
pub(crate) fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::Deserialize;
    use serde::de::Error;
    let v = Option::<serde_json::Number>::deserialize(d)?;
    let Some(n) = v else { return Ok(None) };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => {
            Ok(Some(f as i64))
        }
        _ => Err(D::Error::custom(format!("{n} is not an integer in range"))),
    }
}

#[cfg(test)]
mod tests {
    use crate::{AllocationRequest, PoolWrite};

    #[test]
    fn integers_may_be_written_with_a_zero_fraction_but_not_with_another() {
        let pool: PoolWrite = crate::from_json(r#"{"name":"p","weight":163.0}"#).unwrap();
        assert_eq!(pool.weight, Some(163));
        let req: AllocationRequest =
            crate::from_json(r#"{"agent":"a","resources":{},"priority":700}"#).unwrap();
        assert_eq!(req.priority, Some(700));
        for bad in ["163.5", "1e30", "\"7\""] {
            let body = format!(r#"{{"weight":{bad}}}"#);
            match super::decode::<PoolWrite>(body.as_bytes()) {
                Err(super::DecodeError::Invalid(p)) => assert_eq!(p.field, "weight", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let none: PoolWrite = crate::from_json(r#"{"weight":null}"#).unwrap();
        assert_eq!(none.weight, None);
    }
}
