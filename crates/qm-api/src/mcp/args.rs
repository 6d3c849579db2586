//! The tools' arguments: one struct per tool, whose doc comments and types become the input
//! schema an MCP client shows its model, and the parsing that names the bad argument
//! (missing, unknown, wrong type, or a quantity that does not parse).

use std::collections::BTreeMap;

use qm_core::quantity::{self, Unit};
use rmcp::model::JsonObject;
use rmcp::schemars::{self, JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::tools::Failure;

/// A quantity: a string with a suffix or a plain number.
fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["string", "number"],
        "description": "A quantity: cpu in cores (\"500m\" is half a core, 2 is two cores); \
                        memory in bytes with a suffix (\"256Mi\", \"2Gi\", \"1G\"); gpu and \
                        other resources as whole counts. Never negative."
    })
}

/// Resources by name mapped to quantities.
fn quantities_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "type": ["string", "number"] },
    })
}

/// No arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoArgs {}

/// Arguments of `node_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeStatusArgs {
    /// The node to show (as `cluster_status` names them); omit for the daemon's own node.
    #[serde(default)]
    pub(crate) node: Option<String>,
}

/// Arguments of `can_fit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CanFitArgs {
    /// CPU of one request, in cores: "500m", "1.5" or 2.
    #[serde(default)]
    #[schemars(schema_with = "quantity_schema")]
    pub(crate) cpu: Option<Value>,
    /// Memory of one request, in bytes with a suffix: "256Mi", "2Gi".
    #[serde(default)]
    #[schemars(schema_with = "quantity_schema")]
    pub(crate) memory: Option<Value>,
    /// GPUs of one request, a whole count.
    #[serde(default)]
    #[schemars(schema_with = "quantity_schema")]
    pub(crate) gpu: Option<Value>,
    /// Other resources of one request by name, e.g. {"ephemeral-storage": "10Gi"}.
    #[serde(default)]
    #[schemars(schema_with = "quantities_schema")]
    pub(crate) extended: Option<BTreeMap<String, Value>>,
    /// The pool the requests would come from (default "default"); its limit caps the count.
    #[serde(default)]
    pub(crate) pool: Option<String>,
    /// Priority 0..1000 (default 500); a higher one may fit by preempting lower ones.
    #[serde(default)]
    pub(crate) priority: Option<i64>,
    /// Instead of priority: background, low, normal, high or critical.
    #[serde(default)]
    pub(crate) priority_class: Option<String>,
    /// Only nodes whose labels include all of these count.
    #[serde(default)]
    pub(crate) node_selector: Option<BTreeMap<String, String>>,
}

/// Arguments of `allocate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllocateArgs {
    /// Who the allocation is for: 1..128 of letters, digits and . _ : -
    pub(crate) agent: String,
    /// CPU to reserve, in cores: "500m", "1.5" or 2.
    #[serde(default)]
    #[schemars(schema_with = "quantity_schema")]
    pub(crate) cpu: Option<Value>,
    /// Memory to reserve, in bytes with a suffix: "256Mi", "2Gi".
    #[serde(default)]
    #[schemars(schema_with = "quantity_schema")]
    pub(crate) memory: Option<Value>,
    /// GPUs to reserve, a whole count.
    #[serde(default)]
    #[schemars(schema_with = "quantity_schema")]
    pub(crate) gpu: Option<Value>,
    /// Other resources by name, e.g. {"ephemeral-storage": "10Gi"}.
    #[serde(default)]
    #[schemars(schema_with = "quantities_schema")]
    pub(crate) extended: Option<BTreeMap<String, Value>>,
    /// Upper bounds above the reservation, by resource name (burstable); equal to the
    /// reservation makes it guaranteed.
    #[serde(default)]
    #[schemars(schema_with = "quantities_schema")]
    pub(crate) limits: Option<BTreeMap<String, Value>>,
    /// The pool to allocate from (default "default").
    #[serde(default)]
    pub(crate) pool: Option<String>,
    /// Priority 0..1000 (default 500); may preempt preemptible allocations of lower priority.
    #[serde(default)]
    pub(crate) priority: Option<i64>,
    /// Instead of priority: background, low, normal, high or critical.
    #[serde(default)]
    pub(crate) priority_class: Option<String>,
    /// Whether a higher priority may preempt this allocation (default true).
    #[serde(default)]
    pub(crate) preemptible: Option<bool>,
    /// A lease in seconds: the allocation expires unless renewed. Omit for no lease.
    #[serde(default)]
    pub(crate) ttl_s: Option<f64>,
    /// Wait in the pool's queue when it does not fit now, instead of failing (default false).
    #[serde(default)]
    pub(crate) queue: Option<bool>,
    /// Only nodes whose labels include all of these.
    #[serde(default)]
    pub(crate) node_selector: Option<BTreeMap<String, String>>,
    /// Labels to keep on the allocation.
    #[serde(default)]
    pub(crate) labels: Option<BTreeMap<String, String>>,
}

/// Arguments of `release`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseArgs {
    /// The allocation's id, as allocate or list_allocations gave it.
    pub(crate) id: String,
}

/// Arguments of `list_allocations`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListAllocationsArgs {
    /// Only this agent's allocations.
    #[serde(default)]
    pub(crate) agent: Option<String>,
    /// Only this pool's.
    #[serde(default)]
    pub(crate) pool: Option<String>,
    /// Only those in this state: queued, granted (holding resources now), released,
    /// preempted, expired, evicted, cancelled or lost. Omit for every state.
    #[serde(default)]
    pub(crate) state: Option<String>,
    /// Only those on this node.
    #[serde(default)]
    pub(crate) node: Option<String>,
    /// At most this many, oldest first (1..1000, default 100).
    #[serde(default)]
    pub(crate) limit: Option<u32>,
}

/// Arguments of `spawn_agent`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpawnAgentArgs {
    /// The agent's name, also its id: 1..128 of letters, digits and . _ -
    pub(crate) name: String,
    /// The program and its arguments, e.g. ["node", "agent.js"]; run without a shell.
    pub(crate) command: Vec<String>,
    /// CPU to reserve, in cores: "500m", "1.5" or 2.
    #[serde(default)]
    #[schemars(schema_with = "quantity_schema")]
    pub(crate) cpu: Option<Value>,
    /// Memory to reserve, in bytes with a suffix: "256Mi", "2Gi".
    #[serde(default)]
    #[schemars(schema_with = "quantity_schema")]
    pub(crate) memory: Option<Value>,
    /// GPUs to reserve, a whole count.
    #[serde(default)]
    #[schemars(schema_with = "quantity_schema")]
    pub(crate) gpu: Option<Value>,
    /// Other resources by name, e.g. {"ephemeral-storage": "10Gi"}.
    #[serde(default)]
    #[schemars(schema_with = "quantities_schema")]
    pub(crate) extended: Option<BTreeMap<String, Value>>,
    /// Hard limits by resource name, enforced by the kernel (memory over its limit is
    /// OOM-killed, cpu is throttled).
    #[serde(default)]
    #[schemars(schema_with = "quantities_schema")]
    pub(crate) limits: Option<BTreeMap<String, Value>>,
    /// The pool to allocate from (default "default").
    #[serde(default)]
    pub(crate) pool: Option<String>,
    /// Priority 0..1000 (default 500).
    #[serde(default)]
    pub(crate) priority: Option<i64>,
    /// Instead of priority: background, low, normal, high or critical.
    #[serde(default)]
    pub(crate) priority_class: Option<String>,
    /// never, on-failure or always (default never).
    #[serde(default)]
    pub(crate) restart: Option<String>,
    /// Environment variables to add.
    #[serde(default)]
    pub(crate) env: Option<BTreeMap<String, String>>,
    /// Working directory (default: the daemon's).
    #[serde(default)]
    pub(crate) cwd: Option<String>,
    /// Labels to keep on the agent.
    #[serde(default)]
    pub(crate) labels: Option<BTreeMap<String, String>>,
}

/// Arguments of `list_agents`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListAgentsArgs {
    /// Only agents in this state: pending, starting, running, exited, failed, evicted or
    /// stopped.
    #[serde(default)]
    pub(crate) state: Option<String>,
    /// Only members of this fleet.
    #[serde(default)]
    pub(crate) fleet: Option<String>,
}

/// Arguments of `stop_agent`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StopAgentArgs {
    /// The agent's id (its name).
    pub(crate) id: String,
    /// Seconds between SIGTERM and SIGKILL, 0..3600 (default: the agent's, 10).
    #[serde(default)]
    pub(crate) grace_s: Option<f64>,
}

/// Arguments of `scale_fleet`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScaleFleetArgs {
    /// The fleet's name.
    pub(crate) name: String,
    /// How many members it should keep running, 0..10000.
    pub(crate) replicas: u32,
}

/// Arguments of `active_alerts`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActiveAlertsArgs {
    /// Include alerts still pending (condition true, not yet for long enough); default true.
    #[serde(default)]
    pub(crate) include_pending: Option<bool>,
}

/// Arguments of `recommend`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecommendArgs {
    /// One target: `agent/NAME`, `fleet/NAME` (a fleet's template) or `template/NAME` (agents
    /// labelled `qm.dev/template: NAME`); all when absent.
    #[serde(default)]
    pub(crate) target: Option<String>,
}

/// Parses a tool's arguments, naming the argument at fault.
pub(crate) fn parse<T: DeserializeOwned>(args: JsonObject) -> Result<T, Failure> {
    serde_path_to_error::deserialize::<_, T>(Value::Object(args)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let argument = if path.is_empty() || path == "." {
            // serde names missing and unknown fields in backquotes
            message
                .split('`')
                .nth(1)
                .map_or_else(|| "arguments".to_owned(), str::to_owned)
        } else {
            path
        };
        Failure::Invalid { argument, message }
    })
}

/// Requested resources: what the API is sent, and the amounts in base units.
#[derive(Debug, Default)]
pub(crate) struct Wanted {
    /// Name → canonical input text, as API v1 takes it.
    pub(crate) wire: Map<String, Value>,
    /// Name → amount in base units (millicores, bytes, counts).
    pub(crate) amounts: BTreeMap<String, u64>,
}

impl Wanted {
    /// `cpu`, `memory`, `gpu` and `extended`, each checked.
    pub(crate) fn of(
        cpu: Option<&Value>,
        memory: Option<&Value>,
        gpu: Option<&Value>,
        extended: Option<&BTreeMap<String, Value>>,
    ) -> Result<Self, Failure> {
        let mut out = Wanted::default();
        for (name, v) in [("cpu", cpu), ("memory", memory), ("gpu", gpu)] {
            if let Some(v) = v {
                out.add(name, name, v)?;
            }
        }
        for (name, v) in extended.into_iter().flatten() {
            out.add(name, &format!("extended.{name}"), v)?;
        }
        Ok(out)
    }

    /// A map of quantities (`limits`), each checked, named `field.<resource>`.
    pub(crate) fn map(field: &str, map: &BTreeMap<String, Value>) -> Result<Self, Failure> {
        let mut out = Wanted::default();
        for (name, v) in map {
            out.add(name, &format!("{field}.{name}"), v)?;
        }
        Ok(out)
    }

    fn add(&mut self, name: &str, argument: &str, v: &Value) -> Result<(), Failure> {
        let amount = parse_quantity(name, argument, v)?;
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.wire.insert(name.to_owned(), Value::String(text));
        self.amounts.insert(name.to_owned(), amount);
        Ok(())
    }
}

/// One quantity of resource `name` in base units; the error names `argument`.
pub(crate) fn parse_quantity(name: &str, argument: &str, v: &Value) -> Result<u64, Failure> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(Failure::Invalid {
                argument: argument.to_owned(),
                message: format!(
                    "{other} is not a quantity: give a string such as \"500m\" or \"2Gi\", or a number"
                ),
            });
        }
    };
    quantity::parse(Unit::for_resource(name), &text).map_err(|e| Failure::Invalid {
        argument: argument.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            _ => JsonObject::new(),
        }
    }

    fn argument(f: Failure) -> String {
        match f {
            Failure::Invalid { argument, .. } => argument,
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        let e = parse::<AllocateArgs>(args(serde_json::json!({"cpu": 1}))).unwrap_err();
        assert_eq!(argument(e), "agent");
        let e =
            parse::<AllocateArgs>(args(serde_json::json!({"agent": "a", "cpus": 1}))).unwrap_err();
        assert_eq!(argument(e), "cpus");
        let e = parse::<AllocateArgs>(args(serde_json::json!({"agent": "a", "priority": "x"})))
            .unwrap_err();
        assert_eq!(argument(e), "priority");
        let e = parse::<ScaleFleetArgs>(args(serde_json::json!({"name": "f", "replicas": -1})))
            .unwrap_err();
        assert_eq!(argument(e), "replicas");
    }

    #[test]
    fn quantities_are_checked_and_named() {
        let lots = Value::String("lots".into());
        let e = Wanted::of(None, Some(&lots), None, None).unwrap_err();
        assert_eq!(argument(e), "memory");
        let neg = serde_json::json!(-1);
        let e = Wanted::of(Some(&neg), None, None, None).unwrap_err();
        assert_eq!(argument(e), "cpu");
        let w = Wanted::of(
            Some(&serde_json::json!("500m")),
            Some(&serde_json::json!("1Gi")),
            None,
            None,
        )
        .unwrap();
        assert_eq!(w.amounts["cpu"], 500);
        assert_eq!(w.amounts["memory"], 1 << 30);
    }

    #[test]
    fn schemas_name_required_arguments_and_types() {
        let s = super::super::input_schema::<AllocateArgs>();
        assert_eq!(s["required"], serde_json::json!(["agent"]));
        assert_eq!(
            s["properties"]["cpu"]["type"],
            serde_json::json!(["string", "number"])
        );
        assert_eq!(
            s["properties"]["priority"]["type"],
            serde_json::json!(["integer", "null"])
        );
        assert_eq!(s["additionalProperties"], false);
    }
}
