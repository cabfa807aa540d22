//! Node groups (`node.view` to read, `node.manage` to change) and user groups (`admin.users`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;

use super::wire::all;
use super::wire::exec::{NodeGroup, NodeGroupSpec};
use super::wire::identity::{UserGroup, UserGroupSpec};
use crate::error::ApiResult;
use crate::extract::{need, Allowed, Json};
use crate::AppState;

/// Every node group.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NodeGroupList {
    #[serde(rename = "nodeGroups")]
    node_groups: Vec<NodeGroup>,
}

/// Lists node groups with their nodes, attributes, priority and run windows.
#[utoipa::path(get, path = "/api/v1/node-groups", tag = "nodes",
    responses((status = 200, body = NodeGroupList), (status = 401), (status = 403)))]
pub async fn list_node_groups(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
) -> ApiResult<axum::Json<NodeGroupList>> {
    Ok(axum::Json(NodeGroupList {
        node_groups: all(&state.exec.list_node_groups().await?),
    }))
}

/// Creates a node group `{"name","nodes":[ids],"attributes":{"KEY":"VALUE"},"priority"?,"runWindows"?}`.
/// Scripts of tasks run on its nodes read the attributes as `@OPM_ATTR.KEY@`.
#[utoipa::path(post, path = "/api/v1/node-groups", tag = "nodes", request_body = NodeGroupSpec,
    responses((status = 201, body = NodeGroup), (status = 400), (status = 401), (status = 403), (status = 409)))]
pub async fn create_node_group(
    State(state): State<AppState>,
    caller: Allowed<need::NodeManage>,
    Json(spec): Json<NodeGroupSpec>,
) -> ApiResult<impl IntoResponse> {
    let g = state.exec.create_node_group(&caller, spec.into()).await?;
    Ok((StatusCode::CREATED, axum::Json(NodeGroup::from(&g))))
}

/// Reads a node group.
#[utoipa::path(get, path = "/api/v1/node-groups/{name}", tag = "nodes",
    params(("name" = String, Path, description = "group name")),
    responses((status = 200, body = NodeGroup), (status = 401), (status = 403), (status = 404)))]
pub async fn get_node_group(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<NodeGroup>> {
    Ok(axum::Json(NodeGroup::from(
        &state.exec.get_node_group(&name).await?,
    )))
}

/// Changes a node group (absent fields keep their value; `nodes` replaces the members).
#[utoipa::path(put, path = "/api/v1/node-groups/{name}", tag = "nodes", request_body = NodeGroupSpec,
    params(("name" = String, Path, description = "group name")),
    responses((status = 200, body = NodeGroup), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn update_node_group(
    State(state): State<AppState>,
    caller: Allowed<need::NodeManage>,
    Path(name): Path<String>,
    Json(spec): Json<NodeGroupSpec>,
) -> ApiResult<axum::Json<NodeGroup>> {
    Ok(axum::Json(NodeGroup::from(
        &state
            .exec
            .update_node_group(&caller, &name, spec.into())
            .await?,
    )))
}

/// Deletes a node group; refused (409) while a task targets it.
#[utoipa::path(delete, path = "/api/v1/node-groups/{name}", tag = "nodes",
    params(("name" = String, Path, description = "group name")),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn delete_node_group(
    State(state): State<AppState>,
    caller: Allowed<need::NodeManage>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.exec.delete_node_group(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every user group.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserGroupList {
    #[serde(rename = "userGroups")]
    user_groups: Vec<UserGroup>,
}

/// Lists user groups with their members.
#[utoipa::path(get, path = "/api/v1/user-groups", tag = "users",
    responses((status = 200, body = UserGroupList), (status = 401), (status = 403)))]
pub async fn list_user_groups(
    State(state): State<AppState>,
    _caller: Allowed<need::AdminUsers>,
) -> ApiResult<axum::Json<UserGroupList>> {
    Ok(axum::Json(UserGroupList {
        user_groups: all(&state.identity.list_user_groups().await?),
    }))
}

/// Creates a user group `{"name","description"?,"members":[user ids]}`. A task's
/// `runnerGroups` names user groups whose members may start it.
#[utoipa::path(post, path = "/api/v1/user-groups", tag = "users", request_body = UserGroupSpec,
    responses((status = 201, body = UserGroup), (status = 400), (status = 401), (status = 403), (status = 409)))]
pub async fn create_user_group(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Json(spec): Json<UserGroupSpec>,
) -> ApiResult<impl IntoResponse> {
    let g = state
        .identity
        .create_user_group(&caller, spec.into())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(UserGroup::from(&g))))
}

/// Reads a user group.
#[utoipa::path(get, path = "/api/v1/user-groups/{name}", tag = "users",
    params(("name" = String, Path, description = "group name")),
    responses((status = 200, body = UserGroup), (status = 401), (status = 403), (status = 404)))]
pub async fn get_user_group(
    State(state): State<AppState>,
    _caller: Allowed<need::AdminUsers>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<UserGroup>> {
    Ok(axum::Json(UserGroup::from(
        &state.identity.get_user_group(&name).await?,
    )))
}

/// Changes a user group (absent fields keep their value; `members` replaces the members).
#[utoipa::path(put, path = "/api/v1/user-groups/{name}", tag = "users", request_body = UserGroupSpec,
    params(("name" = String, Path, description = "group name")),
    responses((status = 200, body = UserGroup), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn update_user_group(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(name): Path<String>,
    Json(spec): Json<UserGroupSpec>,
) -> ApiResult<axum::Json<UserGroup>> {
    Ok(axum::Json(UserGroup::from(
        &state
            .identity
            .update_user_group(&caller, &name, spec.into())
            .await?,
    )))
}

/// Deletes a user group.
#[utoipa::path(delete, path = "/api/v1/user-groups/{name}", tag = "users",
    params(("name" = String, Path, description = "group name")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub async fn delete_user_group(
    State(state): State<AppState>,
    caller: Allowed<need::AdminUsers>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.identity.delete_user_group(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
