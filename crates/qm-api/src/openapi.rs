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
        agents::list_fleets,
        agents::create_fleet,
        agents::get_fleet,
        agents::update_fleet,
        agents::delete_fleet,
        agents::push_metric,
        crate::mcp::mcp_endpoint,
    ),
    components(schemas(qm_proto::EventDoc))
)]
struct ApiDoc;

/// The document as JSON text.
pub(crate) fn document() -> String {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

/// Swagger UI at `/docs`, reading the document this binary serves.
pub(crate) fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs").url("/docs/openapi.json", ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_covers_the_routes_and_schemas() {
        let doc: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
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
        let post = &doc["paths"]["/v1/allocations"]["post"]["responses"];
        for status in ["201", "202", "409", "422"] {
            assert!(
                post[status].is_object(),
                "POST /v1/allocations lacks {status}"
            );
        }
    }
}
