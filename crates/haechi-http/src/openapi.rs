//! The OpenAPI document's base: info, tags, security and its modifiers. The paths come from the
//! handlers' `#[utoipa::path]` annotations, collected by the families' routers as they register
//! them (`crate::api_routes`); the committed copy (`docs/openapi.json`) is checked against the
//! result in the test suite.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Haechi", description = "One server for the MDRM, OPMATE, DBSAFER and Control Room credential vault APIs, and Haechi's own admin API. Every route but the login routes and health takes a token in `Authorization: Bearer <t>`, `Authorization: <t>`, `X-Authorization: <t>` or `?auth=<t>`."),
    modifiers(&Security),
    security(("bearer" = []), ("x_authorization" = [])),
    tags(
        (name = "admin", description = "Health and the API document"),
        (name = "users", description = "Users of Haechi's one identity"),
        (name = "roles", description = "Roles and permissions"),
        (name = "tokens", description = "The caller's own tokens"),
        (name = "audit", description = "The hash-chained audit log (Auditor)"),
        (name = "mdrm", description = "MDRM-compatible API"),
        (name = "opmate", description = "OPMATE-compatible API"),
        (name = "workflows", description = "Workflow definitions: versioned, grouped, JSON or YAML (docs/workflows.md)"),
        (name = "executions", description = "Workflow executions: steps, control, approval decisions, the transition log"),
        (name = "agents", description = "Agent enrolment and the agents' WebSocket"),
        (name = "nodes", description = "Nodes (machines running haechi agent)"),
        (name = "files", description = "The OPMATE file repository: files scripts get and put through their agent"),
        (name = "tasks", description = "Tasks, revisions, approval, task instances and their output"),
        (name = "vault", description = "Control Room credential vault-compatible API"),
        (name = "dbsafer", description = "DBSAFER-compatible access-policy API (DB Policy Admin)"),
        (name = "db", description = "Database targets and accounts behind the gateway (DB Policy Admin)"),
        (name = "vault-admin", description = "Vault administration: status, unseal, data key rotation, master key change"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "x_authorization",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Authorization"))),
        );
    }
}

/// `doc` as pretty JSON with a trailing newline (the committed file's exact form), with the
/// server's version.
pub fn to_json(mut doc: utoipa::openapi::OpenApi) -> String {
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut s = doc
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    s.push('\n');
    s
}
