//! Locker routes: lockers, consumers, members, and the credentials in a locker.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use haechi_vault::LockerFilter;
use serde::Deserialize;

use super::wire::{
    parse_bool, ConsumerIn, CredentialOut, IdOut, List, LockerIn, LockerOut, LockerUpdateIn,
    MemberIn, MemberOut,
};
use super::{page, path_id};
use crate::error::ApiResult;
use crate::extract::{need, Allowed, Json, Query};
use crate::AppState;

/// Filters of the locker lists.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct LockerQuery {
    /// `true`: only lockers the caller consumes; `false`: the others.
    consumed: Option<String>,
    /// Optional paging (default: the whole list); at most 1000.
    limit: Option<String>,
    offset: Option<String>,
}

/// Paging only (the credentials in a locker).
#[derive(Deserialize, utoipa::IntoParams)]
pub struct PagingQuery {
    limit: Option<String>,
    offset: Option<String>,
}

async fn lockers(
    state: &AppState,
    caller: &crate::extract::Caller,
    q: &LockerQuery,
    advanced: bool,
) -> ApiResult<List<LockerOut>> {
    let filter = LockerFilter {
        consumed: parse_bool("consumed", q.consumed.as_deref())?,
        page: page(q.limit.as_deref(), q.offset.as_deref())?,
        advanced,
    };
    let list = state.vault.list_lockers(&caller.principal, &filter).await?;
    Ok(List::of(list.iter().map(LockerOut::from).collect()))
}

/// Lockers the caller is a member or consumer of (every locker for a Locker Admin).
#[utoipa::path(get, path = "/v2/credentialvault/lockers", tag = "vault", params(LockerQuery),
    responses((status = 200, body = List<LockerOut>), (status = 400), (status = 401), (status = 403)))]
pub async fn list_lockers(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Query(q): Query<LockerQuery>,
) -> ApiResult<axum::Json<List<LockerOut>>> {
    Ok(axum::Json(lockers(&state, &caller, &q, false).await?))
}

/// The same lockers with `members` and `countOfCredentials`.
#[utoipa::path(get, path = "/v2/credentialvault/lockers/advanced", tag = "vault", params(LockerQuery),
    responses((status = 200, body = List<LockerOut>), (status = 400), (status = 401), (status = 403)))]
pub async fn list_lockers_advanced(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Query(q): Query<LockerQuery>,
) -> ApiResult<axum::Json<List<LockerOut>>> {
    Ok(axum::Json(lockers(&state, &caller, &q, true).await?))
}

/// Creates a locker; the caller becomes its member with `own`, `manage` and `participate`.
#[utoipa::path(post, path = "/v2/credentialvault/lockers", tag = "vault", request_body = LockerIn,
    responses((status = 201, body = LockerOut), (status = 400), (status = 403), (status = 409)))]
pub async fn create_locker(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Json(body): Json<LockerIn>,
) -> ApiResult<(StatusCode, axum::Json<LockerOut>)> {
    let (name, description) = body.into_parts();
    let l = state
        .vault
        .create_locker(&caller, name, description)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(LockerOut::from(&l))))
}

/// One locker (404 unless the caller is a member, a consumer or a Locker Admin).
#[utoipa::path(get, path = "/v2/credentialvault/lockers/{id}", tag = "vault",
    params(("id" = i64, Path, description = "locker id")),
    responses((status = 200, body = LockerOut), (status = 403), (status = 404)))]
pub async fn get_locker(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<LockerOut>> {
    let id = path_id("locker", &id)?;
    Ok(axum::Json(LockerOut::from(
        &state.vault.get_locker(&caller.principal, id).await?,
    )))
}

/// Changes the name or description with the current `version` (`own`, `manage`, Locker Admin).
#[utoipa::path(put, path = "/v2/credentialvault/lockers/{id}", tag = "vault", request_body = LockerUpdateIn,
    params(("id" = i64, Path, description = "locker id")),
    responses((status = 200, body = LockerOut), (status = 304), (status = 400), (status = 403), (status = 404), (status = 409)))]
pub async fn update_locker(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
    Json(body): Json<LockerUpdateIn>,
) -> ApiResult<axum::Json<LockerOut>> {
    let id = path_id("locker", &id)?;
    let patch = body.into_patch(id)?;
    let l = state.vault.update_locker(&caller, id, patch).await?;
    Ok(axum::Json(LockerOut::from(&l)))
}

/// Deletes an empty locker (`own` or Locker Admin); 409 while it holds credentials.
#[utoipa::path(delete, path = "/v2/credentialvault/lockers/{id}", tag = "vault",
    params(("id" = i64, Path, description = "locker id")),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
pub async fn delete_locker(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = path_id("locker", &id)?;
    state.vault.delete_locker(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The roles whose users consume the locker's credentials: `{"list":[{"id":N}]}`.
#[utoipa::path(get, path = "/v2/credentialvault/lockers/{id}/consumers", tag = "vault",
    params(("id" = i64, Path, description = "locker id")),
    responses((status = 200, body = List<IdOut>), (status = 404)))]
pub async fn list_consumers(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<List<IdOut>>> {
    let id = path_id("locker", &id)?;
    let roles = state.vault.list_consumers(&caller.principal, id).await?;
    Ok(axum::Json(List::of(
        roles.into_iter().map(|id| IdOut { id }).collect(),
    )))
}

/// Adds a consumer role (`{"id":roleId}`): 204; 304 if it already is one; 400 for no such role.
#[utoipa::path(put, path = "/v2/credentialvault/lockers/{id}/consumers", tag = "vault", request_body = ConsumerIn,
    params(("id" = i64, Path, description = "locker id")),
    responses((status = 204), (status = 304), (status = 400), (status = 403), (status = 404)))]
pub async fn add_consumer(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
    Json(body): Json<ConsumerIn>,
) -> ApiResult<StatusCode> {
    let id = path_id("locker", &id)?;
    state.vault.add_consumer(&caller, id, body.id.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a consumer role.
#[utoipa::path(delete, path = "/v2/credentialvault/lockers/{id}/consumers/{role_id}", tag = "vault",
    params(("id" = i64, Path, description = "locker id"), ("role_id" = i64, Path, description = "role id")),
    responses((status = 204), (status = 403), (status = 404)))]
pub async fn remove_consumer(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path((id, role)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = path_id("locker", &id)?;
    let role = path_id("role", &role)?;
    state.vault.remove_consumer(&caller, id, role).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The members and their permissions: `{"list":[{"id","permissions"}]}`.
#[utoipa::path(get, path = "/v2/credentialvault/lockers/{id}/members", tag = "vault",
    params(("id" = i64, Path, description = "locker id")),
    responses((status = 200, body = List<MemberOut>), (status = 404)))]
pub async fn list_members(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<List<MemberOut>>> {
    let id = path_id("locker", &id)?;
    let members = state.vault.list_members(&caller.principal, id).await?;
    Ok(axum::Json(List::of(
        members.iter().map(MemberOut::from).collect(),
    )))
}

/// Adds a member or sets their permissions (`{"permissions":[...]}`): 204; 304 when unchanged;
/// 409 when it would leave the locker without an `own` member.
#[utoipa::path(put, path = "/v2/credentialvault/lockers/{id}/members/{user_id}", tag = "vault", request_body = MemberIn,
    params(("id" = i64, Path, description = "locker id"), ("user_id" = i64, Path, description = "user id")),
    responses((status = 204), (status = 304), (status = 400), (status = 403), (status = 404), (status = 409)))]
pub async fn set_member(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path((id, user)): Path<(String, String)>,
    Json(body): Json<MemberIn>,
) -> ApiResult<StatusCode> {
    let id = path_id("locker", &id)?;
    let user = path_id("user", &user)?;
    let perms = body.perms()?;
    state.vault.set_member(&caller, id, user, perms).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a member (409 for the last `own` member).
#[utoipa::path(delete, path = "/v2/credentialvault/lockers/{id}/members/{user_id}", tag = "vault",
    params(("id" = i64, Path, description = "locker id"), ("user_id" = i64, Path, description = "user id")),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
pub async fn remove_member(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = path_id("locker", &id)?;
    let user = path_id("user", &user)?;
    state.vault.remove_member(&caller, id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Puts one of the caller's credentials into the locker (a member's own credential, or any for
/// a Locker Admin): 200 with the credential.
#[utoipa::path(put, path = "/v2/credentialvault/lockers/{id}/credentials/{credential_id}", tag = "vault",
    params(("id" = i64, Path, description = "locker id"), ("credential_id" = i64, Path, description = "credential id")),
    responses((status = 200, body = CredentialOut), (status = 304), (status = 403), (status = 404), (status = 409)))]
pub async fn add_locker_credential(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path((id, credential)): Path<(String, String)>,
) -> ApiResult<axum::Json<CredentialOut>> {
    let id = path_id("locker", &id)?;
    let credential = path_id("credential", &credential)?;
    let c = state
        .vault
        .add_credential_to_locker(&caller, id, credential)
        .await?;
    Ok(axum::Json(CredentialOut::from(c)))
}

/// The credentials in the locker the caller may see (a `participate`-only member: their own).
#[utoipa::path(get, path = "/v2/credentialvault/lockers/{id}/credentials", tag = "vault", params(PagingQuery,
        ("id" = i64, Path, description = "locker id")),
    responses((status = 200, body = List<CredentialOut>), (status = 404)))]
pub async fn list_locker_credentials(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
    Query(q): Query<PagingQuery>,
) -> ApiResult<axum::Json<List<CredentialOut>>> {
    let id = path_id("locker", &id)?;
    let page = page(q.limit.as_deref(), q.offset.as_deref())?;
    let list = state
        .vault
        .list_locker_credentials(&caller.principal, id, page)
        .await?;
    Ok(axum::Json(List::of(
        list.into_iter().map(CredentialOut::from).collect(),
    )))
}

/// Takes a credential out of the locker.
#[utoipa::path(delete, path = "/v2/credentialvault/lockers/{id}/credentials/{credential_id}", tag = "vault",
    params(("id" = i64, Path, description = "locker id"), ("credential_id" = i64, Path, description = "credential id")),
    responses((status = 204), (status = 403), (status = 404)))]
pub async fn remove_locker_credential(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path((id, credential)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = path_id("locker", &id)?;
    let credential = path_id("credential", &credential)?;
    state
        .vault
        .remove_credential_from_locker(&caller, id, credential)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
