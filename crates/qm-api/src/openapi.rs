//! The OpenAPI 3.1 document of API v1, generated from the handlers' annotations and the wire
//! types' schemas, and Swagger UI at `/docs`, served from the binary (no network needed).

use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::{agents, monitoring, routes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "quartermaster API",
        version = "1",
        description = "Resource manager for fleets of AI agents: nodes, pools, allocations, events, state, metrics, alerts, agents and fleets; and the same as MCP tools at /mcp."
    ),
    paths(
        routes::metrics,
        routes::local_node,
        routes::cluster_status,
        routes::nodes,
        routes::register_node,
        routes::delete_node,
        routes::heartbeat,
        routes::pools,
        routes::pool,
        routes::create_pool,
        routes::update_pool,
        routes::delete_pool,
        routes::create_allocation,
        routes::list_allocations,
        routes::get_allocation,
        routes::release_allocation,
        routes::renew_allocation,
        routes::export_state,
        routes::import_state,
        monitoring::snapshot,
        monitoring::series,
        monitoring::query,
        monitoring::alerts,
        monitoring::pressure,
        agents::create_agent,
        agents::list_agents,
        agents::get_agent,
        agents::stop_agent,
        agents::agent_logs,
        agents::agent_heartbeat,
        agents::recommendations,
        agents::list_fleets,
        agents::create_fleet,
        agents::get_fleet,
        agents::update_fleet,
        agents::delete_fleet,
        agents::push_metric,
        crate::mcp::mcp_endpoint,
        crate::security::create_token,
        crate::security::list_tokens,
        crate::security::revoke_token,
        crate::security::audit,
        crate::security::whoami,
        crate::events::events,
    ),
    components(schemas(qm_proto::EventDoc)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// Every operation takes a bearer token: the scheme, the requirement, and the 401 and 403
/// answers on each operation.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        doc.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        let problem = || {
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                ))))
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            let ops = [
                (false, &mut item.get),
                (true, &mut item.put),
                (true, &mut item.post),
                (true, &mut item.delete),
                (true, &mut item.patch),
            ];
            for (write, op) in ops {
                let Some(op) = op else { continue };
                let body = op.request_body.is_some();
                let query = op.parameters.as_ref().is_some_and(|ps| {
                    ps.iter().any(|p| {
                        matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)
                    })
                });
                let path_params = op.parameters.as_ref().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path))
                });
                let mut answers = vec![
                    ("401", "no valid bearer token (unauthorized)"),
                    ("403", "the token's role does not allow this (forbidden)"),
                    (
                        "503",
                        "admission paused by pressure, storage unavailable, or a part of the daemon that is off",
                    ),
                ];
                if body {
                    answers.extend([
                        ("400", "the body is not JSON (malformed_json)"),
                        ("413", "the body is over the limit (payload_too_large)"),
                        (
                            "415",
                            "the body is not application/json (unsupported_media_type)",
                        ),
                        ("422", "invalid fields (validation_failed), each named"),
                    ]);
                }
                if write {
                    answers.push((
                        "507",
                        "the disk is full (storage_full): nothing was changed",
                    ));
                }
                if query {
                    answers.push(("422", "invalid fields (validation_failed), each named"));
                }
                if path_params {
                    answers.push(("404", "no such resource (not_found)"));
                }
                for (status, what) in answers {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(what)
                                    .content("application/problem+json", problem())
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

/// The document as JSON text, made exact for a daemon with `catalog` (see
/// `openapi_exact`); built once.
pub(crate) fn document(catalog: &qm_core::ResourceCatalog) -> String {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| build(catalog)).clone()
}

fn build(catalog: &qm_core::ResourceCatalog) -> String {
    let mut doc = match serde_json::to_value(ApiDoc::openapi()) {
        Ok(v) => v,
        Err(e) => return format!("{{\"error\":{:?}}}", e.to_string()),
    };
    crate::openapi_exact::tighten(&mut doc, catalog);
    doc.to_string()
}

/// Swagger UI at `/docs`, reading the document this binary serves.
pub(crate) fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs").url("/docs/openapi.json", ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_covers_the_routes_and_schemas() {
        let doc: serde_json::Value =
            serde_json::from_str(&super::build(&qm_core::ResourceCatalog::default())).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/v1/allocations",
            "/v1/allocations/{id}",
            "/v1/nodes",
            "/v1/pools/{name}",
            "/v1/state",
            "/mcp",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        let schemas = &doc["components"]["schemas"];
        for s in [
            "AllocationRequest",
            "AllocationDoc",
            "Problem",
            "NodeDoc",
            "PoolDoc",
            "StateDoc",
        ] {
            assert!(schemas[s].is_object(), "{s} missing");
        }
        // made exact: quantities of the catalog's resources, bounded; names with patterns;
        // every path parameter declared; a name to create a pool, none to update one
        let q = &schemas["Quantities"];
        assert_eq!(q["additionalProperties"], false);
        for r in ["cpu", "memory", "gpu"] {
            assert!(q["properties"][r]["oneOf"].is_array(), "{r}: {q}");
        }
        assert_eq!(
            schemas["AllocationRequest"]["properties"]["resources"]["$ref"],
            "#/components/schemas/Quantities"
        );
        assert_eq!(
            schemas["PoolCreate"]["required"],
            serde_json::json!(["name"])
        );
        assert!(schemas["PoolUpdate"]["properties"]["name"].is_null());
        let predictive = &schemas["PredictiveWire"]["properties"];
        assert_eq!(predictive["horizon_s"]["maximum"], 3600, "{predictive}");
        assert_eq!(predictive["beta"]["exclusiveMinimum"], 0, "{predictive}");
        assert!(
            predictive["alpha"]["description"].is_string(),
            "{predictive}"
        );
        for (path, method) in [
            ("/v1/agents/{id}", "get"),
            ("/v1/fleets/{name}", "get"),
            ("/v1/pools/{name}", "put"),
        ] {
            let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|p| p["in"] == "path" && p["required"] == true),
                "{path}"
            );
        }
        let post = &doc["paths"]["/v1/allocations"]["post"]["responses"];
        for status in ["201", "202", "409", "422"] {
            assert!(
                post[status].is_object(),
                "POST /v1/allocations lacks {status}"
            );
        }
    }
}
