//! Users, the caller, and the caller's tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use haechi_identity::{Permission, UserPatch};
use haechi_types::Error;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::wire::all;
use super::wire::identity::{self as w, NewUser, RoleRef, TokenInfo, User, UserKind};
use crate::error::ApiResult;
use crate::extract::{need, numeric_id, parse_page, Allowed, Caller, Json, Query, SelfOrAdmin};
use crate::AppState;

/// `limit` / `offset` query of list routes.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// Items per page, default 100, at most 1000.
    limit: Option<String>,
    /// Items to skip, default 0.
    offset: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> Result<haechi_store::Paging, Error> {
        parse_page(self.limit.as_deref(), self.offset.as_deref())
    }
}

/// A page of users.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserList {
    users: Vec<User>,
    total: i64,
    limit: i64,
    offset: i64,
}

/// The caller as the server sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    id: i64,
    user_id: String,
    name: String,
    kind: UserKind,
    roles: Vec<RoleRef>,
    permissions: Vec<w::Permission>,
}

/// Who am I: the caller's identity, roles and effective permissions.
#[utoipa::path(get, path = "/api/v1/me", tag = "users", responses((status = 200, body = Me), (status = 401)))]
pub async fn me(caller: Caller) -> axum::Json<Me> {
    let p = &caller.principal;
    axum::Json(Me {
        id: p.id,
        user_id: p.user_id.clone(),
        name: p.name.clone(),
        kind: p.kind.into(),
        roles: all(&p.roles),
        permissions: p.permissions.list().into_iter().map(Into::into).collect(),
    })
}

/// Lists users (`admin.users`).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(PageQuery),
    responses((status = 200, body = UserList), (status = 400), (status = 401), (status = 403)))]
pub async fn list_users(
    State(state): State<AppState>,
    _caller: Allowed<need::AdminUsers>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<UserList>> {
    let page = q.page()?;
    let (users, total) = state.identity.list_users(page.limit, page.offset).await?;
    Ok(axum::Json(UserList {
        users: all(&users),
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// Creates a user (`admin.users`).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = User), (status = 400), (status = 403), (status = 409)))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Json(new): Json<NewUser>,
) -> ApiResult<impl IntoResponse> {
    let user = state.identity.create_user(&caller, new.into()).await?;
    Ok((StatusCode::CREATED, axum::Json(User::from(&user))))
}

/// Reads a user (`admin.users`, or the user themself).
#[utoipa::path(get, path = "/api/v1/users/{user_id}", tag = "users",
    params(("user_id" = String, Path)), responses((status = 200, body = User), (status = 403), (status = 404)))]
pub async fn get_user(
    State(state): State<AppState>,
    SelfOrAdmin { user_id, .. }: SelfOrAdmin,
) -> ApiResult<axum::Json<User>> {
    Ok(axum::Json(User::from(
        &state.identity.get_user(&user_id).await?,
    )))
}

/// Changes any of `name`, `roles`, `allowed_ips`, `disabled`, `password`, `kind`
/// (`admin.users`). A password change or disabling revokes the user's tokens.
#[utoipa::path(patch, path = "/api/v1/users/{user_id}", tag = "users", request_body = w::UserPatch,
    params(("user_id" = String, Path)),
    responses((status = 200, body = User), (status = 400), (status = 403), (status = 404), (status = 409)))]
pub async fn update_user(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(user_id): Path<String>,
    Json(patch): Json<w::UserPatch>,
) -> ApiResult<axum::Json<User>> {
    Ok(axum::Json(User::from(
        &state
            .identity
            .update_user(&caller, &user_id, patch.into())
            .await?,
    )))
}

/// Deletes a user (`admin.users`; not yourself, not the last System Admin).
#[utoipa::path(delete, path = "/api/v1/users/{user_id}", tag = "users", params(("user_id" = String, Path)),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
pub async fn delete_user(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(user_id): Path<String>,
) -> ApiResult<StatusCode> {
    state.identity.delete_user(&caller, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disables a user and revokes their tokens.
#[utoipa::path(post, path = "/api/v1/users/{user_id}/disable", tag = "users", params(("user_id" = String, Path)),
    responses((status = 200, body = User), (status = 403), (status = 404), (status = 409)))]
pub async fn disable_user(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<User>> {
    let patch = UserPatch {
        disabled: Some(true),
        ..Default::default()
    };
    Ok(axum::Json(User::from(
        &state.identity.update_user(&caller, &user_id, patch).await?,
    )))
}

/// Enables a disabled user.
#[utoipa::path(post, path = "/api/v1/users/{user_id}/enable", tag = "users", params(("user_id" = String, Path)),
    responses((status = 200, body = User), (status = 403), (status = 404)))]
pub async fn enable_user(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<User>> {
    let patch = UserPatch {
        disabled: Some(false),
        ..Default::default()
    };
    Ok(axum::Json(User::from(
        &state.identity.update_user(&caller, &user_id, patch).await?,
    )))
}

/// Lifts a failed-login or inactivity lock.
#[utoipa::path(post, path = "/api/v1/users/{user_id}/unlock", tag = "users", params(("user_id" = String, Path)),
    responses((status = 200, body = User), (status = 403), (status = 404)))]
pub async fn unlock_user(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<User>> {
    Ok(axum::Json(User::from(
        &state.identity.unlock_user(&caller, &user_id).await?,
    )))
}

/// `PUT /api/v1/users/{user_id}/password` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetPassword {
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// Required when changing your own password without `admin.users`.
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<SecretString>,
}

/// Sets a password: an admin for anyone, a user for themself with `current_password`.
/// Revokes every token of the user.
#[utoipa::path(put, path = "/api/v1/users/{user_id}/password", tag = "users", request_body = SetPassword,
    params(("user_id" = String, Path)), responses((status = 204), (status = 400), (status = 403), (status = 404)))]
pub async fn set_password(
    State(state): State<AppState>,
    SelfOrAdmin { caller, user_id }: SelfOrAdmin,
    Json(body): Json<SetPassword>,
) -> ApiResult<StatusCode> {
    if caller.principal.can(Permission::AdminUsers) {
        let patch = UserPatch {
            password: Some(body.password),
            ..Default::default()
        };
        state.identity.update_user(&caller, &user_id, patch).await?;
    } else if caller.principal.user_id == user_id {
        let current = body.current_password.ok_or_else(|| {
            Error::field(
                "current_password",
                "is required to change your own password",
            )
        })?;
        state
            .identity
            .change_own_password(&caller, &user_id, &current, body.password)
            .await?;
    } else {
        caller.require(Permission::AdminUsers)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/users/{user_id}/roles` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetRoles {
    roles: Vec<String>,
}

/// Replaces a user's roles.
#[utoipa::path(put, path = "/api/v1/users/{user_id}/roles", tag = "users", request_body = SetRoles,
    params(("user_id" = String, Path)), responses((status = 200, body = User), (status = 400), (status = 403), (status = 404)))]
pub async fn set_roles(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(user_id): Path<String>,
    Json(body): Json<SetRoles>,
) -> ApiResult<axum::Json<User>> {
    let patch = UserPatch {
        roles: Some(body.roles),
        ..Default::default()
    };
    Ok(axum::Json(User::from(
        &state.identity.update_user(&caller, &user_id, patch).await?,
    )))
}

/// `PUT /api/v1/users/{user_id}/allowed-ips` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetAllowedIps {
    /// CIDRs or addresses; empty = anywhere.
    allowed_ips: Vec<String>,
}

/// Replaces a user's IP allow-list.
#[utoipa::path(put, path = "/api/v1/users/{user_id}/allowed-ips", tag = "users", request_body = SetAllowedIps,
    params(("user_id" = String, Path)), responses((status = 200, body = User), (status = 400), (status = 403), (status = 404)))]
pub async fn set_allowed_ips(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(user_id): Path<String>,
    Json(body): Json<SetAllowedIps>,
) -> ApiResult<axum::Json<User>> {
    let patch = UserPatch {
        allowed_ips: Some(body.allowed_ips),
        ..Default::default()
    };
    Ok(axum::Json(User::from(
        &state.identity.update_user(&caller, &user_id, patch).await?,
    )))
}

/// The caller's live tokens.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenList {
    tokens: Vec<TokenInfo>,
}

/// Lists the caller's own live tokens (never the token values).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = TokenList), (status = 401)))]
pub async fn my_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<TokenList>> {
    Ok(axum::Json(TokenList {
        tokens: all(&state.identity.my_tokens(&caller.principal).await?),
    }))
}

/// Revokes the token this request carries (logout).
#[utoipa::path(delete, path = "/api/v1/tokens/current", tag = "tokens", responses((status = 204), (status = 401)))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    state.identity.logout(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes one of the caller's own tokens.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = i64, Path)),
    responses((status = 204), (status = 401), (status = 404)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = numeric_id("token", &id)?;
    state.identity.revoke_my_token(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists a user's live tokens (`admin.users`; never the token values).
#[utoipa::path(get, path = "/api/v1/users/{user_id}/tokens", tag = "tokens", params(("user_id" = String, Path)),
    responses((status = 200, body = TokenList), (status = 401), (status = 403), (status = 404)))]
pub async fn user_tokens(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<TokenList>> {
    Ok(axum::Json(TokenList {
        tokens: all(&state
            .identity
            .user_tokens(&user_id, caller.principal.token_id)
            .await?),
    }))
}

/// Revokes one of a user's tokens (`admin.users`): that session ends at its next request.
#[utoipa::path(delete, path = "/api/v1/users/{user_id}/tokens/{id}", tag = "tokens",
    params(("user_id" = String, Path), ("id" = i64, Path)),
    responses((status = 204), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn revoke_user_token(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path((user_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = numeric_id("token", &id)?;
    state
        .identity
        .revoke_user_token(&caller, &user_id, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
