//! Control Room credential vault (CONTRACT §5): `/v1/authentication` and every
//! `/v2/credentialvault` route of the 11.3 document, over the vault engine, plus Haechi's own
//! vault administration under `/api/v1/vault` (status, unseal, data key rotation, master key
//! change).
//!
//! `wire` holds the product's JSON shapes; the handlers are thin: check the caller's
//! permission, parse, call the engine, shape the answer. Errors on `/v2/credentialvault` are
//! rendered `{"code","message"}` by the envelope layer.
//!
//! Every route is also served with a trailing slash and with the document's `//` after
//! `credentialvault` (the product, a Spring service, tolerates both and the document's own
//! examples use them).

mod admin;
mod auth;
mod credentials;
mod lockers;
mod settings;
mod values;
pub mod wire;

use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;

pub use admin::*;
pub use auth::*;
pub use credentials::*;
pub use lockers::*;
pub use settings::*;
pub use values::*;

use crate::error::ApiError;
use crate::extract::numeric_id;
use crate::AppState;

const PREFIX: &str = "/v2/credentialvault";

/// Registers `rest` under the vault prefix in its four spellings (trailing slash or not, `//`
/// after the prefix or not).
fn cv(router: Router<AppState>, rest: &str, route: MethodRouter<AppState>) -> Router<AppState> {
    let mut router = router;
    for prefix in [PREFIX.to_owned(), format!("{PREFIX}/")] {
        for suffix in ["", "/"] {
            router = router.route(&format!("{prefix}{rest}{suffix}"), route.clone());
        }
    }
    router
}

pub fn routes() -> Router<AppState> {
    let r = Router::new()
        .route("/v1/authentication", post(auth::login))
        .route("/v1/authentication/logout", post(auth::logout))
        .route("/api/v1/vault/status", get(admin::vault_status))
        .route("/api/v1/vault/unseal", post(admin::vault_unseal))
        .route(
            "/api/v1/vault/rotate-data-key",
            post(admin::rotate_data_key),
        )
        .route(
            "/api/v1/vault/change-master-key",
            post(admin::change_master_key),
        );
    let routes: Vec<(&str, MethodRouter<AppState>)> = vec![
        (
            "/credentials",
            get(credentials::list_credentials).post(credentials::create_credential),
        ),
        (
            "/credentials/{id}",
            get(credentials::get_credential)
                .put(credentials::update_credential)
                .delete(credentials::delete_credential),
        ),
        (
            "/credentials/{id}/owner/{owner_id}",
            put(credentials::transfer_credential),
        ),
        (
            "/credentials/{id}/attributevalues",
            get(values::list_values).post(values::create_values),
        ),
        (
            "/credentials/{id}/attributevalue",
            post(values::create_values),
        ),
        (
            "/credentials/{id}/attributevalues/{value_id}",
            put(values::update_value).delete(values::delete_value),
        ),
        (
            "/credentials/{id}/values/{value_id}",
            delete(values::delete_value),
        ),
        (
            "/lockers",
            get(lockers::list_lockers).post(lockers::create_locker),
        ),
        ("/lockers/advanced", get(lockers::list_lockers_advanced)),
        (
            "/lockers/{id}",
            get(lockers::get_locker)
                .put(lockers::update_locker)
                .delete(lockers::delete_locker),
        ),
        (
            "/lockers/{id}/consumers",
            get(lockers::list_consumers).put(lockers::add_consumer),
        ),
        (
            "/lockers/{id}/consumers/{role_id}",
            delete(lockers::remove_consumer),
        ),
        ("/lockers/{id}/members", get(lockers::list_members)),
        (
            "/lockers/{id}/members/{user_id}",
            put(lockers::set_member).delete(lockers::remove_member),
        ),
        (
            "/lockers/{id}/credentials",
            get(lockers::list_locker_credentials),
        ),
        (
            "/lockers/{id}/credentials/{credential_id}",
            put(lockers::add_locker_credential).delete(lockers::remove_locker_credential),
        ),
        ("/mode", get(settings::get_mode).put(settings::set_mode)),
        (
            "/keys/private",
            get(settings::get_key_status).put(settings::apply_key),
        ),
    ];
    routes
        .into_iter()
        .fold(r, |r, (rest, route)| cv(r, rest, route))
}

/// A numeric path id; anything else is a 404 (no such object).
fn path_id(what: &str, raw: &str) -> Result<i64, ApiError> {
    Ok(numeric_id(what, raw)?)
}

/// `limit`/`offset` when the caller gave either (vault lists are whole by default, as the
/// product's are; CONTRACT §0's bounds apply when paging is asked for).
fn page(limit: Option<&str>, offset: Option<&str>) -> Result<Option<(i64, i64)>, ApiError> {
    if limit.is_none() && offset.is_none() {
        return Ok(None);
    }
    let p = crate::extract::parse_page(limit, offset)?;
    Ok(Some((p.limit, p.offset)))
}
