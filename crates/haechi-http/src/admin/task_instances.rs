//! Task instances: read, cancel, re-run a node, and follow a node's output from an offset.

use axum::extract::{Path, State};
use base64::Engine;
use haechi_exec::{NodeExecFilter, Paging};
use haechi_protocol::Stream;
use haechi_types::Error;
use serde::{Deserialize, Serialize};

use super::wire::all;
use super::wire::exec::{ExecStatus, Instance, NodeExecution};
use crate::error::ApiResult;
use crate::extract::{need, numeric_id, Allowed, Json, Query};
use crate::AppState;

/// An instance and the latest execution of each of its nodes.
#[derive(Serialize, utoipa::ToSchema)]
pub struct InstanceDetail {
    instance: Instance,
    nodes: Vec<NodeExecution>,
}

pub(crate) async fn detail(
    state: &AppState,
    instance: haechi_exec::Instance,
) -> Result<InstanceDetail, Error> {
    let nodes = state
        .exec
        .instance_nodes(
            instance.task_instance_no,
            &NodeExecFilter::default(),
            Paging {
                limit: 10_000,
                offset: 0,
            },
        )
        .await?
        .items;
    Ok(InstanceDetail {
        instance: Instance::from(&instance),
        nodes: all(&nodes),
    })
}

/// Reads an instance with its nodes.
#[utoipa::path(get, path = "/api/v1/task-instances/{instance_no}", tag = "tasks",
    params(("instance_no" = i64, Path, description = "task instance number")),
    responses((status = 200, body = InstanceDetail), (status = 401), (status = 403), (status = 404)))]
pub async fn get_instance(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path(no): Path<String>,
) -> ApiResult<axum::Json<InstanceDetail>> {
    let no = numeric_id("task instance", &no)?;
    let inst = state.exec.get_instance(no).await?;
    Ok(axum::Json(detail(&state, inst).await?))
}

/// `POST /api/v1/task-instances/{instance_no}/cancel` body.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    /// Cancel only this node (default: every node).
    node_id: Option<String>,
}

/// Cancels an instance or one node of it (`task.execute`): not yet started → `CANCEL` at once;
/// running → the agent kills the process group and it ends `CANCEL`.
#[utoipa::path(post, path = "/api/v1/task-instances/{instance_no}/cancel", tag = "tasks", request_body = CancelRequest,
    params(("instance_no" = i64, Path, description = "task instance number")),
    responses((status = 200, body = InstanceDetail), (status = 401), (status = 403), (status = 404)))]
pub async fn cancel_instance(
    State(state): State<AppState>,
    caller: Allowed<need::TaskExecute>,
    Path(no): Path<String>,
    Json(body): Json<CancelRequest>,
) -> ApiResult<axum::Json<InstanceDetail>> {
    let no = numeric_id("task instance", &no)?;
    state
        .exec
        .cancel(Some(&caller.actor), no, body.node_id.as_deref())
        .await?;
    let inst = state.exec.get_instance(no).await?;
    Ok(axum::Json(detail(&state, inst).await?))
}

/// `?useLatestRevision=true` of a re-run.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RerunQuery {
    /// `true` (or `Y`): when the task has a newer revision than the instance ran, run that
    /// one (without it such a re-run is refused with 409 naming both revisions).
    use_latest_revision: Option<String>,
}

/// Runs the instance again on one node (`task.execute`). Refused (409, naming both
/// revisions) when the task has a newer revision than the instance ran, unless
/// `?useLatestRevision=true`.
#[utoipa::path(post, path = "/api/v1/task-instances/{instance_no}/nodes/{node_id}/rerun", tag = "tasks",
    params(("instance_no" = i64, Path, description = "task instance number"), ("node_id" = String, Path, description = "node id"), RerunQuery),
    responses((status = 200, body = NodeExecution), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn rerun_node(
    State(state): State<AppState>,
    caller: Allowed<need::TaskExecute>,
    Path((no, node)): Path<(String, String)>,
    Query(q): Query<RerunQuery>,
) -> ApiResult<axum::Json<NodeExecution>> {
    let no = numeric_id("task instance", &no)?;
    let opts = haechi_exec::RerunOptions {
        use_latest_revision: crate::opmate::use_latest(q.use_latest_revision.as_deref())?,
    };
    Ok(axum::Json(NodeExecution::from(
        &state.exec.rerun_node_with(&caller, no, &node, opts).await?,
    )))
}

/// `GET /api/v1/task-instances/{instance_no}/export` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `csv` (default) or `json`.
    format: Option<String>,
}

/// The columns of an export, in order: OPMATE's `insNodeList` fields (dates as
/// `YYYYMMDDHHMMSS` in the server's time zone) plus `revisionNo`, `reason`, and the output
/// decoded as UTF-8 (`stdout`, `stderr`; invalid bytes become U+FFFD).
pub const EXPORT_COLUMNS: [&str; 15] = [
    "taskId",
    "taskInstanceNo",
    "nodeId",
    "execNo",
    "revisionNo",
    "status",
    "resultCd",
    "exitCd",
    "startDt",
    "endDt",
    "runnerId",
    "runnerGubun",
    "reason",
    "stdout",
    "stderr",
];

/// An instance's per-node results (the latest execution of each node, by node id) as CSV
/// (`text/csv`, one row per node, the header first) or as JSON (`{"rows":[{column: value}]}`),
/// for reports and spreadsheets. A leading `=`, `+`, `-` or `@` of a text cell is made inert.
#[utoipa::path(get, path = "/api/v1/task-instances/{instance_no}/export", tag = "tasks",
    params(("instance_no" = i64, Path, description = "task instance number"), ExportQuery),
    responses((status = 200, description = "text/csv, or JSON with ?format=json"), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn export_instance(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path(no): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let no = numeric_id("task instance", &no)?;
    let csv = match q.format.as_deref().map(str::trim) {
        None | Some("") | Some("csv") => true,
        Some("json") => false,
        Some(other) => {
            return Err(Error::field(
                "format",
                format_args!("must be csv or json (got {other:?})"),
            )
            .into())
        }
    };
    let inst = state.exec.get_instance(no).await?;
    let off = crate::opmate::wire::offset(&state);
    let dt = |ms| crate::opmate::wire::dt(ms, off);
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut offset = 0;
    loop {
        let page = state
            .exec
            .instance_nodes(
                no,
                &NodeExecFilter::default(),
                Paging {
                    limit: 1000,
                    offset,
                },
            )
            .await?;
        let n = page.items.len() as i64;
        for e in page.items {
            let out = state.exec.read_output(e.exec_id, Stream::Out).await?;
            let err = state.exec.read_output(e.exec_id, Stream::Err).await?;
            rows.push(vec![
                inst.task_id.clone(),
                no.to_string(),
                e.node_id.clone(),
                e.exec_no.to_string(),
                e.revision_no.to_string(),
                e.status.as_str().to_owned(),
                e.result_cd
                    .map(|r| r.as_code())
                    .unwrap_or_default()
                    .to_owned(),
                e.exit_cd.map(|c| c.to_string()).unwrap_or_default(),
                dt(e.start_at),
                dt(e.end_at),
                e.runner_id.clone(),
                e.runner_gubun.as_str().to_owned(),
                e.reason.clone().unwrap_or_default(),
                String::from_utf8_lossy(&out).into_owned(),
                String::from_utf8_lossy(&err).into_owned(),
            ]);
        }
        if n < 1000 {
            break;
        }
        offset += n;
    }
    if !csv {
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = rows
            .into_iter()
            .map(|r| {
                EXPORT_COLUMNS
                    .iter()
                    .zip(r)
                    .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v)))
                    .collect()
            })
            .collect();
        return Ok(axum::Json(serde_json::json!({ "rows": rows })).into_response());
    }
    let mut body = EXPORT_COLUMNS.join(",");
    body.push_str("\r\n");
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| csv_cell(c)).collect();
        body.push_str(&cells.join(","));
        body.push_str("\r\n");
    }
    let disposition = format!(
        "attachment; filename=\"{}-{no}.csv\"",
        inst.task_id.replace(['"', '\\'], "_")
    );
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_owned(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// One CSV cell (RFC 4180 quoting); a leading `=`, `+`, `-`, `@`, tab or CR (a formula to a
/// spreadsheet) made inert with a `'`, except in a plain number (`-1`).
fn csv_cell(s: &str) -> String {
    let numeric = s.parse::<i64>().is_ok();
    let s = match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') if !numeric => format!("'{s}"),
        _ => s.to_owned(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Query of the output route.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// Which execution (default the latest).
    exec_no: Option<String>,
    /// Byte offset in stdout to read from (default 0).
    out_offset: Option<String>,
    /// Byte offset in stderr to read from (default 0).
    err_offset: Option<String>,
    /// Most bytes per stream in this answer (default 1 MiB, at most 8 MiB).
    max_bytes: Option<String>,
}

/// A slice of a node execution's output.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputChunk {
    exec_no: i64,
    status: ExecStatus,
    result_cd: Option<String>,
    exit_cd: Option<i64>,
    /// Base64 of stdout bytes from `outOffset`.
    out: String,
    /// Base64 of stderr bytes from `errOffset`.
    err: String,
    /// Offsets to ask for next.
    out_offset: i64,
    err_offset: i64,
    /// The execution has ended and this answer holds the rest of its output: stop polling.
    completed: bool,
}

fn num(field: &str, v: Option<String>, default: i64) -> Result<i64, Error> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            Error::field(
                field,
                format_args!("must be a whole number ≥ 0 (got {s:?})"),
            )
        }),
    }
}

/// A node execution's output from byte offsets, with `completed` once it has ended and all of
/// it was returned (Rundeck's log-follow model). Poll with the returned offsets.
#[utoipa::path(get, path = "/api/v1/task-instances/{instance_no}/nodes/{node_id}/output", tag = "tasks",
    params(("instance_no" = i64, Path, description = "task instance number"), ("node_id" = String, Path, description = "node id"), OutputQuery),
    responses((status = 200, body = OutputChunk), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn output(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path((no, node)): Path<(String, String)>,
    Query(q): Query<OutputQuery>,
) -> ApiResult<axum::Json<OutputChunk>> {
    let no = numeric_id("task instance", &no)?;
    let exec_no = match q.exec_no.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| Error::field("execNo", "must be a whole number ≥ 1"))?,
        ),
    };
    let out_from = num("outOffset", q.out_offset, 0)?;
    let err_from = num("errOffset", q.err_offset, 0)?;
    let max = num("maxBytes", q.max_bytes, 1024 * 1024)?.clamp(1, 8 * 1024 * 1024);
    // Read the state first: if it is final now, the output read after it is complete.
    let e = state.exec.node_execution(no, &node, exec_no).await?;
    let out = state
        .exec
        .read_output_from(e.exec_id, Stream::Out, out_from, max)
        .await?;
    let err = state
        .exec
        .read_output_from(e.exec_id, Stream::Err, err_from, max)
        .await?;
    let completed = e.status.is_final() && out.next >= e.out_len && err.next >= e.err_len;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(axum::Json(OutputChunk {
        exec_no: e.exec_no,
        status: e.status.into(),
        result_cd: e.result_cd.map(|r| r.as_code().to_owned()),
        exit_cd: e.exit_cd,
        out: b64.encode(&out.data),
        err: b64.encode(&err.data),
        out_offset: out.next,
        err_offset: err.next,
        completed,
    }))
}
