//! The OpenAPI document, generated from the handlers' annotations. The committed copy
//! (`docs/openapi.json`) is checked against this in the test suite.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{admin, mdrm, opmate, vault};

#[derive(OpenApi)]
#[openapi(
    info(title = "Haechi", description = "One server for the MDRM, OPMATE, DBSAFER and Control Room credential vault APIs, and Haechi's own admin API. Every route but the login routes and health takes a token in `Authorization: Bearer <t>`, `Authorization: <t>`, `X-Authorization: <t>` or `?auth=<t>`."),
    paths(
        admin::health, admin::openapi_json, admin::me,
        admin::list_users, admin::create_user, admin::get_user, admin::update_user, admin::delete_user,
        admin::disable_user, admin::enable_user, admin::unlock_user, admin::set_password, admin::set_roles,
        admin::set_allowed_ips, admin::my_tokens, admin::logout, admin::revoke_token,
        admin::list_roles, admin::create_role, admin::get_role, admin::update_role, admin::delete_role,
        admin::list_audit, admin::verify_audit,
        mdrm::login, opmate::login, vault::login, vault::logout,
    ),
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
        (name = "vault", description = "Control Room credential vault-compatible API"),
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

/// The document as pretty JSON with a trailing newline (the committed file's exact form).
pub fn document_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut s = doc
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    s.push('\n');
    s
}
