//! Nodes: list, read, enable/disable, revoke the agent's credential.

use axum::extract::{Path, State};
use haechi_exec::{NodeFilter, NodeStatus};
use serde::{Deserialize, Serialize};

use super::wire::all;
use super::wire::exec::Node;
use crate::error::ApiResult;
use crate::extract::{need, parse_page, Allowed, Json, Query};
use crate::AppState;

/// Filters of `GET /api/v1/nodes` (substrings, except `owner_user_id` and `status`).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NodeListQuery {
    id: Option<String>,
    agent_ver: Option<String>,
    ip: Option<String>,
    os_name: Option<String>,
    hostname: Option<String>,
    owner_user_id: Option<String>,
    /// `E` or `D`.
    status: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// A page of nodes.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NodeList {
    nodes: Vec<Node>,
    total: i64,
}

/// Lists nodes (`node.view`).
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes", params(NodeListQuery),
    responses((status = 200, body = NodeList), (status = 400), (status = 401), (status = 403)))]
pub async fn list_nodes(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Query(q): Query<NodeListQuery>,
) -> ApiResult<axum::Json<NodeList>> {
    let p = parse_page(q.limit.as_deref(), q.offset.as_deref())?;
    let e = |v: Option<String>| v.filter(|s| !s.is_empty());
    let filter = NodeFilter {
        id: e(q.id),
        agent_ver: e(q.agent_ver),
        ip: e(q.ip),
        os_name: e(q.os_name),
        hostname: e(q.hostname),
        owner_user_id: e(q.owner_user_id),
        status: crate::opmate::node_status_filter("status", q.status)?,
    };
    let listed = state.exec.list_nodes(&filter, p).await?;
    Ok(axum::Json(NodeList {
        nodes: all(&listed.items),
        total: listed.total,
    }))
}

/// Reads one node.
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}", tag = "nodes", params(("node_id" = String, Path, description = "node id")),
    responses((status = 200, body = Node), (status = 401), (status = 403), (status = 404)))]
pub async fn get_node(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Node>> {
    Ok(axum::Json(Node::from(&state.exec.get_node(&id).await?)))
}

/// `PATCH /api/v1/nodes/{node_id}` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct NodePatch {
    /// `E` (enabled) or `D` (disabled: gets no new work).
    status: String,
}

/// Enables or disables a node (`node.manage`).
#[utoipa::path(patch, path = "/api/v1/nodes/{node_id}", tag = "nodes", request_body = NodePatch,
    params(("node_id" = String, Path, description = "node id")),
    responses((status = 200, body = Node), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn update_node(
    State(state): State<AppState>,
    caller: Allowed<need::NodeManage>,
    Path(id): Path<String>,
    Json(body): Json<NodePatch>,
) -> ApiResult<axum::Json<Node>> {
    Ok(axum::Json(Node::from(
        &state
            .exec
            .set_node_status(&caller, &id, NodeStatus::from_request(&body.status)?)
            .await?,
    )))
}

/// Revokes the node's agent credential and drops its connection (`node.manage`); the agent
/// must enrol again with a new token.
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/revoke", tag = "nodes", params(("node_id" = String, Path, description = "node id")),
    responses((status = 200, body = Node), (status = 401), (status = 403), (status = 404)))]
pub async fn revoke_node(
    State(state): State<AppState>,
    caller: Allowed<need::NodeManage>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Node>> {
    Ok(axum::Json(Node::from(
        &state.exec.revoke_agent(&caller, &id).await?,
    )))
}
