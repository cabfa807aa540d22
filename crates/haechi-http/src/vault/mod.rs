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

use axum::routing::{delete, post, MethodRouter};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

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

/// The four spellings of `rest` under the vault prefix: as documented first, then with a
/// trailing slash, with `//` after the prefix, and with both.
fn spellings(rest: &str) -> [String; 4] {
    [
        format!("{PREFIX}{rest}"),
        format!("{PREFIX}{rest}/"),
        format!("{PREFIX}/{rest}"),
        format!("{PREFIX}/{rest}/"),
    ]
}

/// Registers a documented group of handlers (one path, from their `#[utoipa::path]`) in the
/// four spellings; only the documented one goes into the OpenAPI document.
fn cv(
    router: OpenApiRouter<AppState>,
    group: UtoipaMethodRouter<AppState>,
) -> OpenApiRouter<AppState> {
    let (_, paths, method_router) = &group;
    let mut documented = paths.paths.keys();
    let path = documented.next().expect("a route group has a path").clone();
    debug_assert!(documented.next().is_none(), "one path per route group");
    let rest = path
        .strip_prefix(PREFIX)
        .expect("a vault path starts with the prefix");
    let [_, others @ ..] = spellings(rest);
    let method_router = method_router.clone();
    others
        .iter()
        .fold(router.routes(group), |router, spelling| {
            router.route(spelling, method_router.clone())
        })
}

/// Registers an undocumented alias (a spelling the product also accepts) in the four spellings.
fn cv_alias(
    router: OpenApiRouter<AppState>,
    rest: &str,
    route: MethodRouter<AppState>,
) -> OpenApiRouter<AppState> {
    spellings(rest).iter().fold(router, |router, spelling| {
        router.route(spelling, route.clone())
    })
}

pub fn routes() -> OpenApiRouter<AppState> {
    let r = OpenApiRouter::default()
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(admin::vault_status))
        .routes(routes!(admin::vault_unseal))
        .routes(routes!(admin::rotate_data_key))
        .routes(routes!(admin::change_master_key));
    let groups: Vec<UtoipaMethodRouter<AppState>> = vec![
        routes!(
            credentials::list_credentials,
            credentials::create_credential
        ),
        routes!(
            credentials::get_credential,
            credentials::update_credential,
            credentials::delete_credential
        ),
        routes!(credentials::transfer_credential),
        routes!(values::list_values, values::create_values),
        routes!(values::update_value, values::delete_value),
        routes!(lockers::list_lockers, lockers::create_locker),
        routes!(lockers::list_lockers_advanced),
        routes!(
            lockers::get_locker,
            lockers::update_locker,
            lockers::delete_locker
        ),
        routes!(lockers::list_consumers, lockers::add_consumer),
        routes!(lockers::remove_consumer),
        routes!(lockers::list_members),
        routes!(lockers::set_member, lockers::remove_member),
        routes!(lockers::list_locker_credentials),
        routes!(
            lockers::add_locker_credential,
            lockers::remove_locker_credential
        ),
        routes!(settings::get_mode, settings::set_mode),
        routes!(settings::get_key_status, settings::apply_key),
    ];
    let r = groups.into_iter().fold(r, cv);
    let r = cv_alias(
        r,
        "/credentials/{id}/attributevalue",
        post(values::create_values),
    );
    cv_alias(
        r,
        "/credentials/{id}/values/{value_id}",
        delete(values::delete_value),
    )
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
