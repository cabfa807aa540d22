//! Task instances: start, per-node re-run, the instance list, per-node detail and list.

use axum::extract::{Path, State};
use base64::Engine;
use haechi_exec::{
    ExecStatus, InstanceFilter, NodeExecFilter, NodeExecution, ResultCode, RunnerGubun,
    StartInstance,
};
use haechi_protocol::Stream;
use haechi_types::Error;
use serde::Deserialize;
use serde_json::{json, Value};
use time::UtcOffset;

use super::wire::{dt, offset, ok, opt, paging, parse_dt};
use crate::error::ApiResult;
use crate::extract::{need, numeric_id, Allowed, Json, Query};
use crate::AppState;

/// `POST /opmate/task/{task_id}/instance` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewInstance {
    /// Nodes to run on, all at once. Absent or empty: the task's default `targets` (nodes,
    /// node groups, labels), resolved now; disabled target nodes are left out and listed in
    /// `skippedNodeList`.
    #[serde(default)]
    node_id_list: Option<Vec<String>>,
    /// Passed to the script as argv.
    #[serde(default)]
    arguments: Vec<String>,
}

/// Starts a task on nodes: `{"taskInstanceNo":N,"resultCode":"0000","resultMsg":"Success"}`.
/// An unknown node (400), a disabled node, an unapproved task, `execOndemand = D` or a start
/// outside the run windows of the task or of a node's group (409, naming the next opening)
/// create nothing; so does a caller outside the task's `runnerGroups` (403). Without
/// `nodeIdList` the task's `targets` are resolved now, and the answer adds `nodeIdList` (where
/// it runs) and `skippedNodeList` (`[{"nodeId","reason"}]`, target nodes left out).
#[utoipa::path(post, path = "/opmate/task/{task_id}/instance", tag = "opmate", request_body = NewInstance,
    params(("task_id" = String, Path, description = "task id")),
    responses((status = 200, description = "`{\"taskInstanceNo\",\"resultCode\",\"resultMsg\"}` (+ `nodeIdList`, `skippedNodeList` when the task's targets were used)"),
              (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn create_instance(
    State(state): State<AppState>,
    caller: Allowed<need::TaskExecute>,
    Path(task_id): Path<String>,
    Json(body): Json<NewInstance>,
) -> ApiResult<axum::Json<Value>> {
    let req = StartInstance {
        task_id,
        node_ids: body.node_id_list.unwrap_or_default(),
        arguments: body.arguments,
        runner_gubun: RunnerGubun::User,
        runner_id: caller.principal.user_id.clone(),
        origin: None,
    };
    let inst = state.exec.start_instance(Some(&caller.actor), req).await?;
    match inst.targets.filter(|t| t.source == "targets") {
        Some(t) => Ok(ok(json!({
            "taskInstanceNo": inst.task_instance_no,
            "nodeIdList": t.nodes,
            "skippedNodeList": t.skipped,
        }))),
        None => Ok(ok(json!({ "taskInstanceNo": inst.task_instance_no }))),
    }
}

/// `?useLatestRevision=Y` of a per-node re-run.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RerunQuery {
    /// `Y`: when the task has a newer revision than the instance ran, run that newer revision
    /// on the node (without it, such a re-run is refused with 409 naming both revisions).
    use_latest_revision: Option<String>,
}

pub(crate) fn use_latest(v: Option<&str>) -> Result<bool, Error> {
    match v.map(str::trim) {
        None | Some("") | Some("N") | Some("n") | Some("false") => Ok(false),
        Some("Y") | Some("y") | Some("true") => Ok(true),
        Some(other) => Err(Error::field(
            "useLatestRevision",
            format_args!("must be Y or N (got {other:?})"),
        )),
    }
}

/// Runs the instance again on one node as `execNo` + 1.
///
/// When the task has been edited since the instance ran (its `revisionNo` is newer than the
/// instance's), the re-run is refused with 409 naming both revisions, unless the caller asks
/// for the new revision with `?useLatestRevision=Y`.
#[utoipa::path(put, path = "/opmate/taskinstance/{instance_no}/node/{node_id}", tag = "opmate",
    params(("instance_no" = i64, Path, description = "task instance number"), ("node_id" = String, Path, description = "node id"), RerunQuery),
    responses((status = 200, description = "`{\"resultCode\",\"resultMsg\",\"execNo\"}`"),
              (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn rerun_node(
    State(state): State<AppState>,
    caller: Allowed<need::TaskExecute>,
    Path((instance_no, node_id)): Path<(String, String)>,
    Query(q): Query<RerunQuery>,
) -> ApiResult<axum::Json<Value>> {
    let no = numeric_id("task instance", &instance_no)?;
    let opts = haechi_exec::RerunOptions {
        use_latest_revision: use_latest(q.use_latest_revision.as_deref())?,
    };
    let e = state
        .exec
        .rerun_node_with(&caller, no, &node_id, opts)
        .await?;
    Ok(ok(json!({ "execNo": e.exec_no })))
}

/// Filters of `GET /opmate/task/{task_id}/instance`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct InstanceQuery {
    /// Started at or after: `YYYYMMDDHHMMSS` (server time zone) or ISO 8601.
    start_dt_ge: Option<String>,
    /// Started at or before: `YYYYMMDDHHMMSS` (server time zone) or ISO 8601.
    start_dt_le: Option<String>,
    runner_id: Option<String>,
    next_task_id: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// A task's instances, newest first.
#[utoipa::path(get, path = "/opmate/task/{task_id}/instance", tag = "opmate", params(("task_id" = String, Path, description = "task id"), InstanceQuery),
    responses((status = 200, description = "`{\"instanceList\":[{\"taskInstanceNo\",\"taskId\",\"startDt\",\"endDt\",\"runnerId\",\"runnerGubun\",\"nextTaskInstanceNo\",\"nextTaskId\"}],\"currentCnt\",\"totalCnt\",\"resultCode\",\"resultMsg\"}`"),
              (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn list_instances(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path(task_id): Path<String>,
    Query(q): Query<InstanceQuery>,
) -> ApiResult<axum::Json<Value>> {
    let page = paging(q.limit.as_deref(), q.offset.as_deref())?;
    let off = offset(&state);
    let filter = InstanceFilter {
        start_ge: opt(q.start_dt_ge)
            .map(|s| parse_dt("startDtGe", &s, off))
            .transpose()?,
        start_le: opt(q.start_dt_le)
            .map(|s| parse_dt("startDtLe", &s, off))
            .transpose()?,
        runner_id: opt(q.runner_id),
        next_task_id: opt(q.next_task_id),
    };
    let listed = state.exec.list_instances(&task_id, &filter, page).await?;
    let list: Vec<Value> = listed
        .items
        .iter()
        .map(|i| {
            json!({
                "taskInstanceNo": i.task_instance_no, "taskId": i.task_id, "startDt": dt(Some(i.start_at), off),
                "endDt": dt(i.end_at, off), "runnerId": i.runner_id, "runnerGubun": i.runner_gubun.as_str(),
                "nextTaskInstanceNo": i.next_task_instance_no.map(|n| n.to_string()).unwrap_or_default(),
                "nextTaskId": i.next_task_id,
            })
        })
        .collect();
    Ok(ok(
        json!({ "instanceList": list, "currentCnt": list.len(), "totalCnt": listed.total }),
    ))
}

/// One node execution in OPMATE's `insNodeList` shape.
async fn ins_node(
    state: &AppState,
    e: &NodeExecution,
    off: UtcOffset,
    out: bool,
    err: bool,
) -> ApiResult<Value> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let out = if out {
        b64.encode(state.exec.read_output(e.exec_id, Stream::Out).await?)
    } else {
        String::new()
    };
    let err = if err {
        b64.encode(state.exec.read_output(e.exec_id, Stream::Err).await?)
    } else {
        String::new()
    };
    Ok(json!({
        "taskId": e.task_id, "taskInstanceNo": e.task_instance_no, "nodeId": e.node_id, "execNo": e.exec_no,
        "status": e.status.as_str(), "startDt": dt(e.start_at, off), "endDt": dt(e.end_at, off),
        "runnerId": e.runner_id, "runnerGubun": e.runner_gubun.as_str(),
        "resultCd": e.result_cd.map(|r| r.as_code()).unwrap_or_default(), "exitCd": e.exit_cd,
        "encbase64out": out, "encbase64err": err,
    }))
}

/// `?execNo=` of the per-node detail.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ExecNoQuery {
    /// Which execution (1 = the first); the latest when absent.
    exec_no: Option<String>,
}

/// One node's execution of an instance, with its output.
#[utoipa::path(get, path = "/opmate/taskinstance/{instance_no}/node/{node_id}", tag = "opmate",
    params(("instance_no" = i64, Path, description = "task instance number"), ("node_id" = String, Path, description = "node id"), ExecNoQuery),
    responses((status = 200, description = "`{\"insNodeList\":[{\"taskId\",\"taskInstanceNo\",\"nodeId\",\"execNo\",\"status\",\"startDt\",\"endDt\",\"runnerId\",\"runnerGubun\",\"resultCd\",\"exitCd\",\"encbase64out\",\"encbase64err\"}],\"resultCode\",\"resultMsg\"}`"),
              (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn get_instance_node(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path((instance_no, node_id)): Path<(String, String)>,
    Query(q): Query<ExecNoQuery>,
) -> ApiResult<axum::Json<Value>> {
    let no = numeric_id("task instance", &instance_no)?;
    let exec_no = match opt(q.exec_no) {
        None => None,
        Some(s) => Some(s.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            Error::field(
                "execNo",
                format_args!("must be a whole number ≥ 1 (got {s:?})"),
            )
        })?),
    };
    let e = state.exec.node_execution(no, &node_id, exec_no).await?;
    let item = ins_node(&state, &e, offset(&state), true, true).await?;
    Ok(ok(json!({ "insNodeList": [item] })))
}

/// Filters of `GET /opmate/taskinstance/{instance_no}/node`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct InstanceNodesQuery {
    /// `Y` to include `encbase64out`.
    stdout_yn: Option<String>,
    /// `Y` to include `encbase64err`.
    stderr_yn: Option<String>,
    /// Substring of the node id.
    node_id: Option<String>,
    /// `WAIT`, `RUN`, `END`, `TIMEOUT`, `CANCEL` or `LOST`.
    exec_status: Option<String>,
    /// `S` or `F`.
    result: Option<String>,
    exit_cd: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

fn yn(field: &str, v: Option<String>) -> Result<bool, Error> {
    match v.as_deref() {
        None | Some("") | Some("N") | Some("n") => Ok(false),
        Some("Y") | Some("y") => Ok(true),
        Some(other) => Err(Error::field(
            field,
            format_args!("must be Y or N (got {other:?})"),
        )),
    }
}

/// The latest execution of each node of an instance; outputs only with `stdoutYn`/`stderrYn=Y`.
#[utoipa::path(get, path = "/opmate/taskinstance/{instance_no}/node", tag = "opmate",
    params(("instance_no" = i64, Path, description = "task instance number"), InstanceNodesQuery),
    responses((status = 200, description = "`{\"insNodeList\":[...],\"currentCnt\",\"totalCnt\",\"resultCode\",\"resultMsg\"}`"),
              (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn list_instance_nodes(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path(instance_no): Path<String>,
    Query(q): Query<InstanceNodesQuery>,
) -> ApiResult<axum::Json<Value>> {
    let no = numeric_id("task instance", &instance_no)?;
    let page = paging(q.limit.as_deref(), q.offset.as_deref())?;
    let with_out = yn("stdoutYn", q.stdout_yn)?;
    let with_err = yn("stderrYn", q.stderr_yn)?;
    let status = match opt(q.exec_status) {
        None => None,
        Some(s) => Some(ExecStatus::parse(&s).ok_or_else(|| {
            Error::field(
                "execStatus",
                format_args!("must be WAIT, RUN, END, TIMEOUT, CANCEL or LOST (got {s:?})"),
            )
        })?),
    };
    let result_cd =
        match opt(q.result) {
            None => None,
            Some(r) => Some(ResultCode::from_code(&r).ok_or_else(|| {
                Error::field("result", format_args!("must be S or F (got {r:?})"))
            })?),
        };
    let exit_cd = match opt(q.exit_cd) {
        None => None,
        Some(s) => Some(s.parse::<i64>().map_err(|_| {
            Error::field("exitCd", format_args!("must be a whole number (got {s:?})"))
        })?),
    };
    let filter = NodeExecFilter {
        node_id: opt(q.node_id),
        status,
        result_cd,
        exit_cd,
    };
    let listed = state.exec.instance_nodes(no, &filter, page).await?;
    let off = offset(&state);
    let mut list = Vec::with_capacity(listed.items.len());
    for e in &listed.items {
        list.push(ins_node(&state, e, off, with_out, with_err).await?);
    }
    Ok(ok(
        json!({ "insNodeList": list, "currentCnt": list.len(), "totalCnt": listed.total }),
    ))
}
