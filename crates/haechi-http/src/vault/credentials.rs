//! Credential routes.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use haechi_vault::CredentialFilter;
use serde::Deserialize;

use super::wire::{parse_bool, CredentialIn, CredentialOut, CredentialUpdateIn, List};
use super::{page, path_id};
use crate::error::ApiResult;
use crate::extract::{need, Allowed, Json, Query};
use crate::AppState;

/// Filters of the credential list.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct CredentialQuery {
    /// `true`: only credentials the caller consumes through a locker; `false`: the others.
    consumed: Option<String>,
    /// One exact name.
    name: Option<String>,
    /// Exact names separated by commas.
    names: Option<String>,
    /// Optional paging (default: the whole list); at most 1000.
    limit: Option<String>,
    offset: Option<String>,
}

/// Lists the credentials the caller owns or reaches through lockers (every credential for a
/// Locker Admin): `{"list":[...]}`, each with `completed`.
#[utoipa::path(get, path = "/v2/credentialvault/credentials", tag = "vault", params(CredentialQuery),
    responses((status = 200, body = List<CredentialOut>), (status = 400), (status = 401), (status = 403)))]
pub async fn list_credentials(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Query(q): Query<CredentialQuery>,
) -> ApiResult<Response> {
    // `name` is one exact name (it may hold a comma); `names` is a comma-separated list. The
    // document's placeholders show the values in quotes; quotes around a name are dropped.
    let unquote = |n: &str| n.trim().trim_matches('"').to_owned();
    let mut names: Vec<String> = q
        .name
        .as_deref()
        .map(unquote)
        .filter(|n| !n.is_empty())
        .into_iter()
        .collect();
    if let Some(raw) = q.names.as_deref() {
        names.extend(raw.split(',').map(unquote).filter(|n| !n.is_empty()));
    }
    let filter = CredentialFilter {
        consumed: parse_bool("consumed", q.consumed.as_deref())?,
        names,
        page: page(q.limit.as_deref(), q.offset.as_deref())?,
    };
    // Bots poll this list: the rendered answer is kept and answered again while nothing it
    // shows changes (`Vault::list_credentials_rendered`).
    let body = state
        .vault
        .list_credentials_rendered(&caller.principal, &filter, |list| {
            let list = List::of(list.into_iter().map(CredentialOut::from).collect());
            Ok(serde_json::to_vec(&list)?.into())
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Creates a credential owned by the caller: 201 with the credential and its attribute ids.
#[utoipa::path(post, path = "/v2/credentialvault/credentials", tag = "vault", request_body = CredentialIn,
    responses((status = 201, body = CredentialOut), (status = 400), (status = 401), (status = 403), (status = 409)))]
pub async fn create_credential(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Json(body): Json<CredentialIn>,
) -> ApiResult<(StatusCode, axum::Json<CredentialOut>)> {
    let c = state.vault.create_credential(&caller, body.into()).await?;
    Ok((StatusCode::CREATED, axum::Json(CredentialOut::from(c))))
}

/// One credential (404 when the caller may not see it).
#[utoipa::path(get, path = "/v2/credentialvault/credentials/{id}", tag = "vault",
    params(("id" = i64, Path, description = "credential id")),
    responses((status = 200, body = CredentialOut), (status = 401), (status = 403), (status = 404)))]
pub async fn get_credential(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<CredentialOut>> {
    let id = path_id("credential", &id)?;
    let c = state.vault.get_credential(&caller.principal, id).await?;
    Ok(axum::Json(CredentialOut::from(c)))
}

/// Partial update with the current `version` (owner or Locker Admin): 409 on a stale
/// version, 304 when nothing changes.
#[utoipa::path(put, path = "/v2/credentialvault/credentials/{id}", tag = "vault", request_body = CredentialUpdateIn,
    params(("id" = i64, Path, description = "credential id")),
    responses((status = 200, body = CredentialOut), (status = 304), (status = 400), (status = 403), (status = 404), (status = 409)))]
pub async fn update_credential(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
    Json(body): Json<CredentialUpdateIn>,
) -> ApiResult<axum::Json<CredentialOut>> {
    let id = path_id("credential", &id)?;
    let patch = body.into_patch(id)?;
    let c = state.vault.update_credential(&caller, id, patch).await?;
    Ok(axum::Json(CredentialOut::from(c)))
}

/// Gives the credential to another user (owner or Locker Admin).
#[utoipa::path(put, path = "/v2/credentialvault/credentials/{id}/owner/{owner_id}", tag = "vault",
    params(("id" = i64, Path, description = "credential id"), ("owner_id" = i64, Path, description = "the new owner's user id")),
    responses((status = 200, body = CredentialOut), (status = 304), (status = 403), (status = 404)))]
pub async fn transfer_credential(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path((id, owner)): Path<(String, String)>,
) -> ApiResult<axum::Json<CredentialOut>> {
    let id = path_id("credential", &id)?;
    let owner = path_id("user", &owner)?;
    let c = state.vault.transfer_credential(&caller, id, owner).await?;
    Ok(axum::Json(CredentialOut::from(c)))
}

/// Deletes the credential with its values (owner or Locker Admin).
#[utoipa::path(delete, path = "/v2/credentialvault/credentials/{id}", tag = "vault",
    params(("id" = i64, Path, description = "credential id")),
    responses((status = 204), (status = 403), (status = 404)))]
pub async fn delete_credential(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = path_id("credential", &id)?;
    state.vault.delete_credential(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
