//! Mode and master key routes (`vault.settings`, System Admin).

use axum::extract::State;
use axum::http::StatusCode;
use haechi_types::Error;
use haechi_vault::Mode;

use super::wire::{AppliedOut, KeyIn, ModeIn, ModeOut};
use crate::error::ApiResult;
use crate::extract::{need, Allowed, Json};
use crate::AppState;

/// The vault's mode: `{"name":"Express"|"Manual"}`.
#[utoipa::path(get, path = "/v2/credentialvault/mode", tag = "vault",
    responses((status = 200, body = ModeOut), (status = 401), (status = 403)))]
pub async fn get_mode(
    State(state): State<AppState>,
    _caller: Allowed<need::VaultSettings>,
) -> ApiResult<axum::Json<ModeOut>> {
    Ok(axum::Json(ModeOut {
        name: state.vault.mode().await?.as_str(),
    }))
}

/// Switches the mode (`{"name":"Manual","privatekey":"<master key>"}`): 204. Needs the current
/// master key (400 otherwise, nothing changes). To Manual, the kept key file is deleted; to
/// Express, the key is kept in the data directory again. The same mode is 304.
#[utoipa::path(put, path = "/v2/credentialvault/mode", tag = "vault", request_body = ModeIn,
    responses((status = 204), (status = 304), (status = 400), (status = 401), (status = 403)))]
pub async fn set_mode(
    State(state): State<AppState>,
    caller: Allowed<need::VaultSettings>,
    Json(body): Json<ModeIn>,
) -> ApiResult<StatusCode> {
    let mode = Mode::parse(&body.name).ok_or_else(|| {
        Error::field(
            "name",
            format_args!("must be 'Express' or 'Manual' (got {:?})", body.name),
        )
    })?;
    state
        .vault
        .set_mode(&caller, mode, "privatekey", &body.privatekey)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether this server holds the master key: `{"applied":bool}` (false while sealed).
#[utoipa::path(get, path = "/v2/credentialvault/keys/private", tag = "vault",
    responses((status = 200, body = AppliedOut), (status = 401), (status = 403)))]
pub async fn get_key_status(
    State(state): State<AppState>,
    _caller: Allowed<need::VaultSettings>,
) -> ApiResult<axum::Json<AppliedOut>> {
    Ok(axum::Json(AppliedOut {
        applied: state.vault.applied(),
    }))
}

/// Applies the master key (`{"privateKey":"<master key>"}`) to unseal the vault: 200
/// `{"applied":true}` (also when it already was); a wrong key is 400 and the vault stays sealed.
#[utoipa::path(put, path = "/v2/credentialvault/keys/private", tag = "vault", request_body = KeyIn,
    responses((status = 200, body = AppliedOut), (status = 400), (status = 401), (status = 403)))]
pub async fn apply_key(
    State(state): State<AppState>,
    caller: Allowed<need::VaultSettings>,
    Json(body): Json<KeyIn>,
) -> ApiResult<axum::Json<AppliedOut>> {
    state
        .vault
        .unseal(&caller, "privateKey", &body.private_key)
        .await?;
    Ok(axum::Json(AppliedOut { applied: true }))
}
