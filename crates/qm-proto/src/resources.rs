//! Resource vectors on the wire: `{ "cpu": "500m", "memory": 268435456 }` in, canonical strings
//! out. Quantities may be strings or JSON numbers (taken by their literal text).

use std::collections::BTreeMap;

use qm_core::quantity::Unit;
use qm_core::{ResourceCatalog, Resources, quantity};
use serde_json::Value;

use crate::problem::FieldProblem;

/// A resource vector as a client writes it.
pub type WireResources = BTreeMap<String, Value>;

/// The most of one resource a request, node or pool may name, in base units: a million cores,
/// an exbibyte, a billion of anything counted. More is an absurd quantity, refused.
pub fn max_quantity(unit: Unit) -> u64 {
    match unit {
        Unit::Millicores => 1_000_000_000,
        Unit::Bytes => 1 << 60,
        Unit::Count => 1_000_000_000,
    }
}

/// Parses a wire vector; errors name the field (`resources.memory`).
pub fn parse_resources(
    catalog: &ResourceCatalog,
    field: &str,
    wire: &WireResources,
) -> Result<Resources, FieldProblem> {
    let mut out = Resources::default();
    for (name, value) in wire {
        let path = format!("{field}.{name}");
        let Some(id) = catalog.lookup(name) else {
            return Err(FieldProblem {
                field: path,
                message: format!("unknown resource {name:?}"),
            });
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(FieldProblem {
                    field: path,
                    message: "must be a quantity: a string such as \"500m\" or a number".to_owned(),
                });
            }
        };
        let amount = quantity::parse(id.unit(), &text).map_err(|e| FieldProblem {
            field: path.clone(),
            message: e.to_string(),
        })?;
        let max = max_quantity(id.unit());
        if amount > max {
            return Err(FieldProblem {
                field: path,
                message: format!(
                    "{text:?} is more than any node has (at most {})",
                    quantity::format(id.unit(), max)
                ),
            });
        }
        out.set(id, amount);
    }
    Ok(out)
}

/// A vector in canonical strings, zero amounts left out.
pub fn render_resources(catalog: &ResourceCatalog, r: &Resources) -> BTreeMap<String, String> {
    r.iter()
        .map(|(id, v)| (catalog.name(id).to_owned(), quantity::format(id.unit(), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: &str) -> WireResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn accepts_strings_and_numbers_and_prints_canonically() {
        let c = ResourceCatalog::default();
        let r = parse_resources(
            &c,
            "resources",
            &wire(r#"{"cpu": 0.25, "memory": "1Gi", "gpu": 2}"#),
        )
        .unwrap();
        let out = render_resources(&c, &r);
        assert_eq!(out["cpu"], "250m");
        assert_eq!(out["memory"], "1Gi");
        assert_eq!(out["gpu"], "2");
    }

    #[test]
    fn errors_name_the_field() {
        let c = ResourceCatalog::default();
        let cases = [
            (
                r#"{"memory": "-1Gi"}"#,
                "resources.memory",
                "\"-1Gi\" is negative",
            ),
            (
                r#"{"disk": 1}"#,
                "resources.disk",
                "unknown resource \"disk\"",
            ),
            (r#"{"cpu": true}"#, "resources.cpu", "must be a quantity"),
            (r#"{"cpu": "0.0001"}"#, "resources.cpu", "finer than 1m"),
            (r#"{"memory": 1e30}"#, "resources.memory", "too large"),
            (
                r#"{"memory": "2Ei"}"#,
                "resources.memory",
                "more than any node has (at most 1Ei)",
            ),
            (r#"{"cpu": 1000001}"#, "resources.cpu", "at most 1000000"),
            (r#"{"gpu": "2G"}"#, "resources.gpu", "at most 1000000000"),
        ];
        // the most is allowed
        let max = parse_resources(
            &c,
            "r",
            &wire(r#"{"cpu": 1000000, "memory": "1Ei", "gpu": 1000000000}"#),
        );
        assert!(max.is_ok(), "{max:?}");
        for (json, field, message) in cases {
            let e = parse_resources(&c, "resources", &wire(json)).unwrap_err();
            assert_eq!(e.field, field, "{json}");
            assert!(e.message.contains(message), "{json}: {}", e.message);
        }
    }
}
