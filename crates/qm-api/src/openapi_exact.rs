//! The generated document made exact, at serve time: what the handlers check and the derived
//! schemas cannot say. Names, quantities, label keys and values, seconds and cursors carry
//! the patterns and bounds the server applies; resource maps name the resources of this
//! daemon's catalog (known only when it serves); `{id}` and `{name}` in a path are always
//! parameters; pool creation requires a name and an update takes none; a dry run's answer
//! is described; a heartbeat's body is optional; a predictive autoscaler's horizon and
//! weights carry their bounds. Schemathesis (`tests/it/contract.rs`) checks the result
//! against the running daemon: what the document allows, the server accepts, and what it
//! forbids, the server refuses.

use qm_core::ResourceCatalog;
use qm_core::quantity::Unit;
use serde_json::{Value, json};

/// `valid_name` (agents, pools, fleets): 1..128 of `[A-Za-z0-9._-]`, not `.` or `..`.
const NAME: &str = r"^([A-Za-z0-9_-][A-Za-z0-9._-]{0,127}|\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,126}|\.\.[A-Za-z0-9._-]{1,126})$";
/// Allocation agents, node and token names: 1..128 of `[A-Za-z0-9._:-]`.
const ID_NAME: &str = r"^[A-Za-z0-9._:-]{1,128}$";
/// Label keys and values: no control characters.
const PRINTABLE: &str = r"^[^\u0000-\u001f\u007f-\u009f]*$";
/// The most seconds a lease (`ttl_s`) or a token's life may be.
const MAX_TTL_S: f64 = 10.0 * 365.0 * 86_400.0;

/// Tightens `doc` (the document as JSON) for a daemon with `catalog`.
pub(crate) fn tighten(doc: &mut Value, catalog: &ResourceCatalog) {
    path_parameters(doc);
    let schemas = &mut doc["components"]["schemas"];
    schemas["Quantities"] = quantities(catalog);
    schemas["Labels"] = json!({
        "type": "object",
        "description": "At most 64 labels: keys 1 to 253 characters, values at most 256, no control characters.",
        "maxProperties": qm_core::MAX_LABELS,
        "propertyNames": { "minLength": 1, "maxLength": 253, "pattern": PRINTABLE },
        "additionalProperties": { "type": "string", "maxLength": 256, "pattern": PRINTABLE },
    });
    schemas["DryRun"] = json!({
        "type": "object",
        "description": "What a request would get (`?dry_run=true`): nothing was changed.",
        "required": ["agent", "pool", "state", "priority", "resources", "preempted", "dry_run"],
        "properties": {
            "agent": { "type": "string" },
            "pool": { "type": "string" },
            "node": { "type": ["string", "null"] },
            "state": { "type": "string" },
            "priority": { "type": "integer" },
            "resources": { "type": "object", "additionalProperties": { "type": "string" } },
            "preempted": { "type": "array", "items": { "type": "string" } },
            "dry_run": { "const": true },
        },
    });
    let quantities = |nullable: bool| reference("Quantities", nullable);
    let labels = |nullable: bool| reference("Labels", nullable);
    let ttl = |nullable: bool| {
        let mut s = json!({ "type": "number", "exclusiveMinimum": 0, "maximum": MAX_TTL_S });
        if nullable {
            s["type"] = json!(["number", "null"]);
        }
        s
    };
    let pattern = |p: &str, nullable: bool| json!({ "type": if nullable { json!(["string", "null"]) } else { json!("string") }, "pattern": p });
    let set = |schemas: &mut Value, schema: &str, prop: &str, v: Value| {
        if let Some(props) = schemas[schema]["properties"].as_object_mut() {
            let keep = props.get(prop).and_then(|p| p.get("description")).cloned();
            let mut v = v;
            if let (Some(d), Some(o)) = (keep, v.as_object_mut()) {
                o.insert("description".to_owned(), d);
            }
            props.insert(prop.to_owned(), v);
        }
    };
    // allocations
    set(
        schemas,
        "AllocationRequest",
        "agent",
        pattern(ID_NAME, false),
    );
    set(schemas, "AllocationRequest", "pool", pattern(NAME, true));
    set(schemas, "AllocationRequest", "resources", quantities(false));
    set(schemas, "AllocationRequest", "limits", quantities(true));
    set(schemas, "AllocationRequest", "labels", labels(true));
    set(schemas, "AllocationRequest", "node_selector", labels(true));
    set(schemas, "AllocationRequest", "ttl_s", ttl(true));
    set(
        schemas,
        "AllocationRequest",
        "priority",
        json!({ "type": ["integer", "null"], "minimum": 0, "maximum": 1000 }),
    );
    set(
        schemas,
        "AllocationRequest",
        "priority_class",
        json!({ "type": ["string", "null"], "enum": ["background", "low", "normal", "high", "critical", null] }),
    );
    // a number or a class, not both
    schemas["AllocationRequest"]["not"] = json!({
        "required": ["priority", "priority_class"],
        "properties": { "priority": { "type": "integer" }, "priority_class": { "type": "string" } },
    });
    // spread and affinity rules: a label key, at least one label, at most 8 rules a kind
    for rule in ["SpreadWire", "TermWire"] {
        set(
            schemas,
            rule,
            "topology_key",
            json!({ "type": "string", "minLength": 1, "maxLength": 253, "pattern": PRINTABLE }),
        );
        set(
            schemas,
            rule,
            "match_labels",
            json!({ "allOf": [reference("Labels", false), { "minProperties": 1 }] }),
        );
    }
    for owner in ["AllocationRequest", "AgentSpec"] {
        for (prop, item) in [
            ("spread", "SpreadWire"),
            ("affinity", "TermWire"),
            ("anti_affinity", "TermWire"),
        ] {
            set(
                schemas,
                owner,
                prop,
                json!({
                    "type": ["array", "null"],
                    "maxItems": qm_core::MAX_TOPOLOGY_RULES,
                    "items": reference(item, false),
                }),
            );
        }
        set(schemas, owner, "node_selector", labels(true));
    }
    set(schemas, "RenewRequest", "ttl_s", ttl(true));
    // fleets: a predictive autoscaler's horizon and weights
    set(
        schemas,
        "PredictiveWire",
        "horizon_s",
        json!({ "type": "number", "minimum": 1, "maximum": 3600 }),
    );
    for weight in ["alpha", "beta"] {
        set(
            schemas,
            "PredictiveWire",
            weight,
            json!({ "type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1 }),
        );
    }
    // nodes
    set(schemas, "NodeRegistration", "capacity", quantities(false));
    set(schemas, "NodeRegistration", "allocatable", quantities(true));
    set(schemas, "NodeRegistration", "labels", labels(true));
    set(schemas, "NodeRegistration", "heartbeat_ttl_s", ttl(true));
    set(schemas, "NodeHeartbeat", "usage", quantities(true));
    // pools: a name to create, none (or the path's) to update
    set(schemas, "PoolWrite", "guaranteed", quantities(true));
    set(schemas, "PoolWrite", "limit", quantities(true));
    let mut create = schemas["PoolWrite"].clone();
    create["required"] = json!(["name"]);
    create["properties"]["name"] = pattern(NAME, false);
    create["description"] = json!("`POST /v1/pools`.");
    let mut update = schemas["PoolWrite"].clone();
    if let Some(p) = update["properties"].as_object_mut() {
        p.remove("name");
    }
    update["description"] = json!("`PUT /v1/pools/{name}`: the pool is named by the path.");
    schemas["PoolCreate"] = create;
    schemas["PoolUpdate"] = update;
    // tokens: an agent token is bound to an agent, and only it takes a pool or spawn
    set(schemas, "TokenRequest", "name", pattern(ID_NAME, false));
    set(
        schemas,
        "TokenRequest",
        "role",
        json!({ "type": "string", "enum": ["admin", "operator", "agent", "observer"] }),
    );
    set(schemas, "TokenRequest", "agent", pattern(NAME, true));
    set(schemas, "TokenRequest", "pool", pattern(NAME, true));
    set(schemas, "TokenRequest", "ttl_s", ttl(true));
    schemas["TokenRequest"]["if"] = json!({ "properties": { "role": { "const": "agent" } } });
    schemas["TokenRequest"]["then"] = json!({
        "required": ["agent"],
        "properties": { "agent": { "type": "string" } },
    });
    schemas["TokenRequest"]["else"] = json!({
        "properties": { "agent": { "type": "null" }, "pool": { "type": "null" }, "spawn": { "const": false } },
    });
    operations(doc);
}

/// A reference to the component `name`, or null where `nullable`.
fn reference(name: &str, nullable: bool) -> Value {
    let r = json!({ "$ref": format!("#/components/schemas/{name}") });
    if nullable {
        json!({ "oneOf": [{ "type": "null" }, r] })
    } else {
        r
    }
}

/// A resource map of this catalog: each resource a quantity in its unit, within what the
/// server represents (u64 base units), nothing else.
fn quantities(catalog: &ResourceCatalog) -> Value {
    let mut props = serde_json::Map::new();
    for id in catalog.ids() {
        // every text the pattern allows is at most `qm_proto::max_quantity`, as is the
        // integer bound (cpu integers are cores)
        let (text, max) = match id.unit() {
            Unit::Millicores => (
                r"^([0-9]{1,6}(\.[0-9]{1,3})?|[0-9]{1,9}m)$",
                qm_proto::max_quantity(Unit::Millicores) / 1000,
            ),
            Unit::Bytes => (
                r"^([0-9]{1,18}|[0-9]{1,15}(k|Ki)|[0-9]{1,12}(M|Mi)|[0-9]{1,9}(G|Gi)|[0-9]{1,6}(T|Ti)|[0-9]{1,3}(P|Pi))$",
                qm_proto::max_quantity(Unit::Bytes),
            ),
            Unit::Count => (r"^[0-9]{1,9}$", qm_proto::max_quantity(Unit::Count)),
        };
        props.insert(
            catalog.name(id).to_owned(),
            json!({ "oneOf": [
                { "type": "string", "pattern": text },
                { "type": "integer", "minimum": 0, "maximum": max },
            ] }),
        );
    }
    json!({
        "type": "object",
        "description": "Quantities by resource name: cpu in cores (`\"500m\"`, `\"1.5\"`), memory and storage in bytes (`\"256Mi\"`), the rest as counts.",
        "properties": props,
        "additionalProperties": false,
    })
}

/// Every `{x}` in a path is a required path parameter of each of its operations.
fn path_parameters(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let names: Vec<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(n, _)| n))
            .collect();
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(params) = op
                .as_object_mut()
                .map(|o| o.entry("parameters").or_insert_with(|| json!([])))
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for name in &names {
                // pools, fleets and agents by name; nodes by a name that may hold a `:`
                let schema = if path.starts_with("/v1/nodes/") {
                    json!({ "type": "string", "pattern": ID_NAME })
                } else if ["/v1/pools/", "/v1/fleets/", "/v1/agents/"]
                    .iter()
                    .any(|p| path.starts_with(p))
                {
                    json!({ "type": "string", "pattern": NAME })
                } else {
                    json!({ "type": "string" })
                };
                params.retain(|p| !(p["name"] == *name && p["in"] == "path"));
                params.push(json!({
                    "name": name, "in": "path", "required": true, "schema": schema,
                }));
            }
        }
    }
}

/// The operation `method` of `path`, if the document has it.
fn op<'a>(paths: &'a mut Value, path: &str, method: &str) -> Option<&'a mut Value> {
    paths.get_mut(path)?.get_mut(method)
}

/// Per-operation details: query parameters' formats and bounds, the pool bodies, the dry
/// run's answer, the heartbeat's optional body.
fn operations(doc: &mut Value) {
    let paths = &mut doc["paths"];
    // (`get_mut` and `pointer_mut`, never indexing: indexing a missing key inserts a null)
    let query = |paths: &mut Value, path: &str, method: &str, name: &str, schema: Value| {
        if let Some(params) = op(paths, path, method)
            .and_then(|o| o.get_mut("parameters"))
            .and_then(Value::as_array_mut)
        {
            for p in params
                .iter_mut()
                .filter(|p| p["name"] == name && p["in"] == "query")
            {
                p["schema"] = schema.clone();
            }
        }
    };
    query(
        paths,
        "/v1/allocations",
        "get",
        "cursor",
        json!({ "type": "string", "pattern": "^[0-9]{1,18}$" }),
    );
    query(
        paths,
        "/v1/allocations/{id}",
        "get",
        "wait",
        json!({ "type": "number", "minimum": 0, "maximum": 300 }),
    );
    for t in ["from", "to"] {
        query(
            paths,
            "/v1/metrics/query",
            "get",
            t,
            json!({ "type": "string", "format": "date-time" }),
        );
    }
    for t in ["since_s", "step_s"] {
        query(
            paths,
            "/v1/metrics/query",
            "get",
            t,
            json!({ "type": "number", "exclusiveMinimum": 0, "maximum": 2_592_000 }),
        );
    }
    query(
        paths,
        "/v1/agents/{id}/logs",
        "get",
        "tail",
        json!({ "type": "integer", "minimum": 0, "maximum": 10_000 }),
    );
    query(
        paths,
        "/v1/recommendations",
        "get",
        "target",
        json!({ "type": "string", "pattern": r"^(agent|fleet)/([A-Za-z0-9_-][A-Za-z0-9._-]{0,127}|\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,126}|\.\.[A-Za-z0-9._-]{1,126})$" }),
    );
    let body = |paths: &mut Value, path: &str, method: &str, schema: &str| {
        if let Some(s) = op(paths, path, method)
            .and_then(|o| o.pointer_mut("/requestBody/content/application~1json/schema"))
        {
            *s = reference(schema, false);
        }
    };
    body(paths, "/v1/pools", "post", "PoolCreate");
    body(paths, "/v1/pools/{name}", "put", "PoolUpdate");
    if let Some(required) = op(paths, "/v1/nodes/{name}/heartbeat", "put")
        .and_then(|o| o.pointer_mut("/requestBody/required"))
    {
        *required = json!(false);
    }
    for status in ["201", "202"] {
        let at =
            format!("/~1v1~1allocations/post/responses/{status}/content/application~1json/schema");
        if let Some(schema) = paths.pointer_mut(&at) {
            *schema = json!({ "oneOf": [schema.take(), reference("DryRun", false)] });
        }
    }
}
