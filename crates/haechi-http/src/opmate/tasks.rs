//! `GET /opmate/task`.

use axum::extract::State;
use haechi_exec::{exec_flag, ApprovalStatus, TaskFilter};
use haechi_types::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use super::wire::{flag, ok, opt, paging};
use crate::error::ApiResult;
use crate::extract::{need, Allowed, Query};
use crate::AppState;

/// Filters of `GET /opmate/task`. The document spells the approval filters `apprStatus` /
/// `apprUserId` and the result fields `apprvStatus` / `apprvUserId`; both spellings work here.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// Substring of the task id.
    id: Option<String>,
    owner_user_id: Option<String>,
    /// `N`, `Q`, `A` or `R`.
    appr_status: Option<String>,
    /// `N`, `Q`, `A` or `R` (the result field's spelling).
    apprv_status: Option<String>,
    appr_user_id: Option<String>,
    apprv_user_id: Option<String>,
    /// `E` or `D`.
    exec_scheduler: Option<String>,
    /// `E` or `D`.
    exec_ondemand: Option<String>,
    /// `E` or `D`.
    exec_task: Option<String>,
    /// Tasks whose target nodes include this node.
    target_node_id: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// Lists tasks at their current revision.
#[utoipa::path(get, path = "/opmate/task", tag = "opmate", params(TaskQuery),
    responses((status = 200, description = "`{\"taskList\":[{\"id\",\"revisionNo\",\"ownerUserId\",\"scriptName\",\"osUser\",\"execScheduler\",\"execOndemand\",\"execTask\",\"nextTaskId\",\"apprvStatus\",\"apprvUserId\"}],\"currentCnt\",\"totalCnt\",\"resultCode\",\"resultMsg\"}`"),
              (status = 400), (status = 401), (status = 403)))]
pub async fn list_tasks(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Query(q): Query<TaskQuery>,
) -> ApiResult<axum::Json<Value>> {
    let page = paging(q.limit.as_deref(), q.offset.as_deref())?;
    let apprv_status = match opt(q.appr_status).or(opt(q.apprv_status)) {
        None => None,
        Some(s) => Some(ApprovalStatus::from_code(&s).ok_or_else(|| {
            Error::field(
                "apprStatus",
                format_args!("must be N, Q, A or R (got {s:?})"),
            )
        })?),
    };
    let filter = TaskFilter {
        id: opt(q.id),
        owner_user_id: opt(q.owner_user_id),
        apprv_status,
        apprv_user_id: opt(q.appr_user_id).or(opt(q.apprv_user_id)),
        exec_scheduler: flag("execScheduler", q.exec_scheduler)?,
        exec_ondemand: flag("execOndemand", q.exec_ondemand)?,
        exec_task: flag("execTask", q.exec_task)?,
        target_node_id: opt(q.target_node_id),
    };
    let listed = state.exec.list_tasks(&filter, page).await?;
    let list: Vec<Value> = listed
        .items
        .iter()
        .map(|t| {
            json!({
                "id": t.id, "revisionNo": t.revision_no, "ownerUserId": t.owner_user_id, "scriptName": t.script_name,
                "osUser": t.os_user, "execScheduler": exec_flag::as_code(t.exec_scheduler),
                "execOndemand": exec_flag::as_code(t.exec_ondemand), "execTask": exec_flag::as_code(t.exec_task),
                "nextTaskId": t.next_task_id, "apprvStatus": t.apprv_status.as_code(),
                "apprvUserId": t.apprv_user_id,
            })
        })
        .collect();
    Ok(ok(
        json!({ "taskList": list, "currentCnt": list.len(), "totalCnt": listed.total }),
    ))
}
