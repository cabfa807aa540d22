//! Workflow executions (CONTRACT §7): read one with every step, list them, control them,
//! decide approval steps, and follow their transition log.

use std::time::Duration;

use axum::extract::{Path, State};
use haechi_types::Error;
use haechi_workflow::{
    Control, Decision, DecisionRequest, ExecutionFilter, ReportView, RunStatus, StepAction,
    StepActionRequest,
};
use serde::{Deserialize, Serialize};

use super::wire::all;
use super::wire::workflow::{EventPage, ExecutionSummary, ExecutionView, StatusView, StepView};
use crate::error::ApiResult;
use crate::extract::{need, parse_page, Allowed, Caller, Json, Query};
use crate::AppState;

/// Longest wait of `GET /api/v1/executions/{id}/events`, seconds.
const MAX_EVENT_WAIT_SECS: u64 = 60;

/// Reads an execution with every step (`workflow.view`).
#[utoipa::path(get, path = "/api/v1/executions/{execution_id}", tag = "executions",
    params(("execution_id" = String, Path, description = "EXEC_YYYYMMDD_NNNN")),
    responses((status = 200, body = ExecutionView), (status = 401), (status = 403), (status = 404)))]
pub async fn get_execution(
    State(state): State<AppState>,
    _caller: Allowed<need::WorkflowView>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ExecutionView>> {
    Ok(axum::Json(ExecutionView::from(
        &state.workflows.execution(&id).await?,
    )))
}

/// Filters of `GET /api/v1/executions`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecutionListQuery {
    /// Executions of this workflow.
    wf_id: Option<String>,
    /// `RUNNING`, `PAUSED`, `COMPLETED`, `FAILED` or `STOPPED`.
    status: Option<String>,
    /// Started by this user id.
    started_by: Option<String>,
    /// Started at or after: ISO 8601 or unix milliseconds.
    from: Option<String>,
    /// Started at or before: ISO 8601 or unix milliseconds.
    to: Option<String>,
    /// Default 100, at most 1000.
    limit: Option<String>,
    /// Default 0.
    offset: Option<String>,
}

/// A page of executions.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExecutionList {
    executions: Vec<ExecutionSummary>,
    /// All matches.
    total: i64,
}

fn instant(field: &str, v: Option<&str>) -> Result<Option<i64>, Error> {
    match v.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .or_else(|| haechi_types::time::parse_iso(s))
            .map(Some)
            .ok_or_else(|| {
                Error::field(
                    field,
                    format_args!(
                        "must be ISO 8601 (2024-05-20T09:00:00Z) or unix milliseconds (got {s:?})"
                    ),
                )
            }),
    }
}

/// Lists executions, newest first (`workflow.view`).
#[utoipa::path(get, path = "/api/v1/executions", tag = "executions", params(ExecutionListQuery),
    responses((status = 200, body = ExecutionList), (status = 400), (status = 401), (status = 403)))]
pub async fn list_executions(
    State(state): State<AppState>,
    _caller: Allowed<need::WorkflowView>,
    Query(q): Query<ExecutionListQuery>,
) -> ApiResult<axum::Json<ExecutionList>> {
    let page = parse_page(q.limit.as_deref(), q.offset.as_deref())?;
    let workflow_id = match q.wf_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(s.parse::<i64>().map_err(|_| {
            Error::field(
                "wf_id",
                format_args!("must be a workflow id, a number (got {s:?})"),
            )
        })?),
    };
    let status = match q.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(RunStatus::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
            Error::field(
                "status",
                format_args!("must be RUNNING, PAUSED, COMPLETED, FAILED or STOPPED (got {s:?})"),
            )
        })?),
    };
    let filter = ExecutionFilter {
        workflow_id,
        status,
        started_by: q.started_by.filter(|s| !s.is_empty()),
        from_ms: instant("from", q.from.as_deref())?,
        to_ms: instant("to", q.to.as_deref())?,
    };
    let listed = state
        .workflows
        .list_executions(&filter, page.limit, page.offset)
        .await?;
    Ok(axum::Json(ExecutionList {
        executions: all(&listed.items),
        total: listed.total,
    }))
}

/// `POST /api/v1/executions/{id}/control` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ControlBody {
    /// `stop`, `pause` or `resume`.
    action: String,
}

/// Stops, pauses or resumes an execution (`workflow.control`); 409 when the action does not
/// fit its state.
#[utoipa::path(post, path = "/api/v1/executions/{execution_id}/control", tag = "executions", request_body = ControlBody,
    params(("execution_id" = String, Path, description = "EXEC_YYYYMMDD_NNNN")),
    responses((status = 200, body = StatusView), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn control_execution(
    State(state): State<AppState>,
    caller: Allowed<need::WorkflowControl>,
    Path(id): Path<String>,
    Json(body): Json<ControlBody>,
) -> ApiResult<axum::Json<StatusView>> {
    let action = Control::parse(&body.action).ok_or_else(|| {
        Error::field(
            "action",
            format_args!("must be stop, pause or resume (got {:?})", body.action),
        )
    })?;
    Ok(axum::Json(StatusView::from(
        &state.workflows.control(&caller, &id, action).await?,
    )))
}

/// `POST /api/v1/executions/{id}/steps/{name}/decision` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct DecisionBody {
    /// `approve` or `reject`.
    action: String,
    comment: Option<String>,
}

/// Decides an approval step: only a holder of the step's role may (403 otherwise); the step
/// must be waiting for its decision (409 otherwise). A rejected step has failed.
#[utoipa::path(post, path = "/api/v1/executions/{execution_id}/steps/{name}/decision", tag = "executions",
    request_body = DecisionBody,
    params(("execution_id" = String, Path, description = "EXEC_YYYYMMDD_NNNN"), ("name" = String, Path, description = "step name")),
    responses((status = 200, body = StepView), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn decide_step(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, step)): Path<(String, String)>,
    Json(body): Json<DecisionBody>,
) -> ApiResult<axum::Json<StepView>> {
    let decision = Decision::parse(body.action.trim()).ok_or_else(|| {
        Error::field(
            "action",
            format_args!("must be approve or reject (got {:?})", body.action),
        )
    })?;
    let req = DecisionRequest {
        step,
        decision,
        comment: body.comment,
    };
    Ok(axum::Json(StepView::from(
        &state.workflows.decide(&caller, &id, req).await?,
    )))
}

/// `POST /api/v1/executions/{id}/steps/{name}/actions` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct StepActionBody {
    /// `retry`, `skip` or `mark_succeeded`.
    action: String,
    /// Why (required; audited and shown on the step).
    #[serde(default)]
    reason: Option<String>,
    /// `retry` of a task step only: the arguments of the new attempt (and later ones).
    #[serde(default)]
    arguments: Option<Vec<String>>,
}

/// Retries, skips or marks as succeeded a failed step (`workflow.control`, CONTRACT §9): a
/// `FAILED` run goes back to `RUNNING`, a run paused by `on_failure: ask` goes on. A missing
/// reason → 400; a step or run that does not fit → 409 naming its state.
#[utoipa::path(post, path = "/api/v1/executions/{execution_id}/steps/{name}/actions", tag = "executions",
    request_body = StepActionBody,
    params(("execution_id" = String, Path, description = "EXEC_YYYYMMDD_NNNN"), ("name" = String, Path, description = "step name")),
    responses((status = 200, body = StepView), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn step_action(
    State(state): State<AppState>,
    caller: Allowed<need::WorkflowControl>,
    Path((id, step)): Path<(String, String)>,
    Json(body): Json<StepActionBody>,
) -> ApiResult<axum::Json<StepView>> {
    let action = StepAction::parse(body.action.trim()).ok_or_else(|| {
        Error::field(
            "action",
            format_args!(
                "must be retry, skip or mark_succeeded (got {:?})",
                body.action
            ),
        )
    })?;
    let req = StepActionRequest {
        step,
        action,
        reason: body.reason.unwrap_or_default(),
        arguments: body.arguments,
    };
    Ok(axum::Json(StepView::from(
        &state.workflows.step_action(&caller, &id, req).await?,
    )))
}

/// `GET /api/v1/executions/{id}/events` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The `next` of the previous page (default 0: from the start).
    after: Option<String>,
    /// Wait up to this many seconds (at most 60) for something new while the run goes on.
    wait_secs: Option<String>,
}

/// The execution's transition log (`workflow.view`): every step and run status change in
/// order. With `wait_secs`, a long poll (what `haechi wf run --follow` uses).
#[utoipa::path(get, path = "/api/v1/executions/{execution_id}/events", tag = "executions",
    params(("execution_id" = String, Path, description = "EXEC_YYYYMMDD_NNNN"), EventsQuery),
    responses((status = 200, body = EventPage), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn execution_events(
    State(state): State<AppState>,
    _caller: Allowed<need::WorkflowView>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<axum::Json<EventPage>> {
    let number = |field: &str, v: Option<&str>| -> Result<u64, Error> {
        match v.map(str::trim) {
            None | Some("") => Ok(0),
            Some(s) => s.parse::<u64>().map_err(|_| {
                Error::field(
                    field,
                    format_args!("must be a whole number ≥ 0 (got {s:?})"),
                )
            }),
        }
    };
    let after = number("after", q.after.as_deref())?.min(i64::MAX as u64) as i64;
    let wait = number("wait_secs", q.wait_secs.as_deref())?.min(MAX_EVENT_WAIT_SECS);
    Ok(axum::Json(EventPage::from(
        &state
            .workflows
            .events(&id, after, Duration::from_secs(wait))
            .await?,
    )))
}

/// `GET /api/v1/executions/{id}/report` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// The RTO report of an execution (`workflow.view`): per step its `rto_secs`, real
/// `duration_secs`, `attempts` and the operators' `actions`, and the whole run against the
/// workflow's `rto_secs`. `?format=csv` gives the same as CSV (one row per step, then the run).
#[utoipa::path(get, path = "/api/v1/executions/{execution_id}/report", tag = "executions",
    params(("execution_id" = String, Path, description = "EXEC_YYYYMMDD_NNNN"), ReportQuery),
    responses((status = 200, body = super::wire::workflow::ReportView, description = "JSON, or text/csv with ?format=csv"),
        (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn execution_report(
    State(state): State<AppState>,
    _caller: Allowed<need::WorkflowView>,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let csv = match q.format.as_deref().map(str::trim) {
        None | Some("") | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(Error::field(
                "format",
                format_args!("must be json or csv (got {other:?})"),
            )
            .into())
        }
    };
    let report = state.workflows.report(&id).await?;
    if !csv {
        return Ok(axum::Json(super::wire::workflow::ReportView::from(&report)).into_response());
    }
    let disposition = format!(
        "attachment; filename=\"{}-report.csv\"",
        report.execution_id
    );
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_owned(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        report_csv(&report),
    )
        .into_response())
}

/// One CSV field: quoted when it must be, and a leading `=`, `+`, `-`, `@` (a formula to a
/// spreadsheet) made inert with a `'`.
fn csv_field(s: &str) -> String {
    let s = match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_owned(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn opt_num(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_default()
}

fn opt_bool(v: Option<bool>) -> String {
    v.map(|b| b.to_string()).unwrap_or_default()
}

fn report_csv(r: &ReportView) -> String {
    let mut out = String::from(
        "step,type,status,rto_secs,duration_secs,attempts,within_rto,started_at,ended_at,actions\r\n",
    );
    let iso = |ms: Option<i64>| ms.map(haechi_types::time::iso_ms).unwrap_or_default();
    for s in &r.steps {
        let actions: Vec<String> = s
            .actions
            .iter()
            .map(|a| {
                format!(
                    "{} by {} at {} (attempt {}): {}",
                    a.action.as_str(),
                    a.by,
                    haechi_types::time::iso_ms(a.at),
                    a.attempt,
                    a.reason
                )
            })
            .collect();
        let row = [
            csv_field(&s.name),
            csv_field(&s.kind),
            s.status.as_str().to_owned(),
            opt_num(s.rto_secs),
            opt_num(s.duration_secs),
            s.attempts.to_string(),
            opt_bool(s.within_rto),
            iso(s.started_at),
            iso(s.ended_at),
            csv_field(&actions.join("; ")),
        ];
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    let total = [
        "(run)".to_owned(),
        "workflow".to_owned(),
        r.status.as_str().to_owned(),
        opt_num(r.rto_secs),
        opt_num(Some(r.duration_secs)),
        String::new(),
        opt_bool(r.within_rto),
        iso(Some(r.created_at)),
        iso(r.ended_at),
        String::new(),
    ];
    out.push_str(&total.join(","));
    out.push_str("\r\n");
    out
}
