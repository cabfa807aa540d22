//! Roles and their permissions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;

use super::wire::all;
use super::wire::identity::{NewRole, Role, RolePatch};
use crate::error::ApiResult;
use crate::extract::{need, Allowed, Caller, Json};
use crate::AppState;

/// All roles.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RoleList {
    roles: Vec<Role>,
}

/// Lists roles, built-in and custom (any authenticated user: role ids are what vault lockers
/// name as consumers).
#[utoipa::path(get, path = "/api/v1/roles", tag = "roles", responses((status = 200, body = RoleList), (status = 401)))]
pub async fn list_roles(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<axum::Json<RoleList>> {
    Ok(axum::Json(RoleList {
        roles: all(&state.identity.list_roles().await?),
    }))
}

/// Creates a custom role (`admin.users`).
#[utoipa::path(post, path = "/api/v1/roles", tag = "roles", request_body = NewRole,
    responses((status = 201, body = Role), (status = 400), (status = 403), (status = 409)))]
pub async fn create_role(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Json(new): Json<NewRole>,
) -> ApiResult<impl IntoResponse> {
    let role = state.identity.create_role(&caller, new.into()).await?;
    Ok((StatusCode::CREATED, axum::Json(Role::from(&role))))
}

/// Reads a role by numeric id or name.
#[utoipa::path(get, path = "/api/v1/roles/{role}", tag = "roles", params(("role" = String, Path, description = "id or name")),
    responses((status = 200, body = Role), (status = 404)))]
pub async fn get_role(
    State(state): State<AppState>,
    _caller: Caller,
    Path(role): Path<String>,
) -> ApiResult<axum::Json<Role>> {
    Ok(axum::Json(Role::from(
        &state.identity.get_role(&role).await?,
    )))
}

/// Changes a custom role (built-in roles are fixed).
#[utoipa::path(patch, path = "/api/v1/roles/{role}", tag = "roles", request_body = RolePatch,
    params(("role" = String, Path, description = "id or name")),
    responses((status = 200, body = Role), (status = 400), (status = 403), (status = 404), (status = 409)))]
pub async fn update_role(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(role): Path<String>,
    Json(patch): Json<RolePatch>,
) -> ApiResult<axum::Json<Role>> {
    Ok(axum::Json(Role::from(
        &state
            .identity
            .update_role(&caller, &role, patch.into())
            .await?,
    )))
}

/// Deletes a custom role.
#[utoipa::path(delete, path = "/api/v1/roles/{role}", tag = "roles", params(("role" = String, Path, description = "id or name")),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
pub async fn delete_role(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(role): Path<String>,
) -> ApiResult<StatusCode> {
    state.identity.delete_role(&caller, &role).await?;
    Ok(StatusCode::NO_CONTENT)
}
