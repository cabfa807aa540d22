//! `GET /opmate/node`.

use axum::extract::State;
use haechi_exec::NodeFilter;
use serde::Deserialize;
use serde_json::{json, Value};

use super::wire::{dt, offset, ok, opt, paging};
use crate::error::ApiResult;
use crate::extract::{need, Allowed, Query};
use crate::AppState;

/// Filters of `GET /opmate/node` (the document misspells `status` as `stauts`; both work).
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct NodeQuery {
    /// Substring of the node id.
    id: Option<String>,
    /// Substring of the agent version.
    agent_ver: Option<String>,
    /// Substring of the IP address.
    ip: Option<String>,
    /// Substring of the OS name.
    os_name: Option<String>,
    /// Substring of the host name.
    hostname: Option<String>,
    /// Exact owner user id.
    owner_user_id: Option<String>,
    /// `E` or `D`.
    status: Option<String>,
    /// `E` or `D` (the document's spelling).
    stauts: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// Lists nodes: `{"nodeList":[...],"currentCnt","totalCnt","resultCode","resultMsg"}`.
#[utoipa::path(get, path = "/opmate/node", tag = "opmate", params(NodeQuery),
    responses((status = 200, description = "`{\"nodeList\":[{\"id\",\"agentGuid\",\"agentVer\",\"osName\",\"ip\",\"hostname\",\"ownerUserId\",\"status\",\"heartbeatDt\",\"crtDt\"}],\"currentCnt\",\"totalCnt\",\"resultCode\",\"resultMsg\"}`"),
              (status = 400), (status = 401), (status = 403)))]
pub async fn list_nodes(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Query(q): Query<NodeQuery>,
) -> ApiResult<axum::Json<Value>> {
    let page = paging(q.limit.as_deref(), q.offset.as_deref())?;
    let status = match (opt(q.status), opt(q.stauts)) {
        (Some(v), _) => super::wire::node_status("status", Some(v))?,
        (None, v) => super::wire::node_status("stauts", v)?,
    };
    let filter = NodeFilter {
        id: opt(q.id),
        agent_ver: opt(q.agent_ver),
        ip: opt(q.ip),
        os_name: opt(q.os_name),
        hostname: opt(q.hostname),
        owner_user_id: opt(q.owner_user_id),
        status,
    };
    let listed = state.exec.list_nodes(&filter, page).await?;
    let off = offset(&state);
    let list: Vec<Value> = listed
        .items
        .iter()
        .map(|n| {
            json!({
                "id": n.id, "agentGuid": n.agent_guid, "agentVer": n.agent_ver, "osName": n.os_name, "ip": n.ip,
                "hostname": n.hostname, "ownerUserId": n.owner_user_id, "status": n.status.as_code(),
                "heartbeatDt": dt(n.heartbeat_at, off), "crtDt": dt(Some(n.created_at), off),
            })
        })
        .collect();
    Ok(ok(
        json!({ "nodeList": list, "currentCnt": list.len(), "totalCnt": listed.total }),
    ))
}
