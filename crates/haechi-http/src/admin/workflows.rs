//! Workflow definitions (CONTRACT §7): create (JSON, or YAML with `Content-Type:
//! application/yaml`), new versions, read, versions, list, delete; and starting one.

use std::time::Duration;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use haechi_types::{Code, Error};
use haechi_workflow::definition::yaml_to_value;
use haechi_workflow::WorkflowFilter;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::wire::all;
use super::wire::workflow::{
    Created, EditLock, ExecutionView, VersionDiff, VersionInfo, WorkflowDoc, WorkflowSummary,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::{need, parse_json, parse_page, Allowed, Json, Query};
use crate::AppState;

/// A definition body: JSON, or YAML (`application/yaml`, `application/x-yaml`, `text/yaml`).
pub struct DefinitionBody(pub Value);

impl FromRequest<AppState> for DefinitionBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (ctype, bytes) = crate::extract::body_bytes(req, state).await?;
        let ctype = ctype.map(|c| c.split(';').next().unwrap_or("").trim().to_owned());
        let value = match ctype.as_deref() {
            Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => yaml_to_value(&bytes)?,
            Some(c) if c == "application/json" || c.ends_with("+json") => parse_json::<Value>(&bytes)?,
            None => parse_json::<Value>(&bytes)?,
            Some(other) => {
                return Err(Error::new(
                    Code::UnsupportedMediaType,
                    format!("send the definition as JSON (application/json) or YAML (application/yaml), not '{other}'"),
                )
                .into())
            }
        };
        Ok(DefinitionBody(value))
    }
}

/// Creates a workflow (`workflow.manage`): `{"id","version":1}`. A definition with a problem
/// is a 400 that names the step and field.
#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows", request_body(content = super::wire::workflow::Definition,
        description = "JSON, or YAML with Content-Type: application/yaml"),
    responses((status = 201, body = Created), (status = 400), (status = 401), (status = 403), (status = 409), (status = 415)))]
pub async fn create_workflow(
    State(state): State<AppState>,
    caller: Allowed<need::WorkflowManage>,
    DefinitionBody(def): DefinitionBody,
) -> ApiResult<impl IntoResponse> {
    let created = state.workflows.create_workflow(&caller, &def).await?;
    Ok((StatusCode::CREATED, axum::Json(Created::from(&created))))
}

/// Makes a new version of a workflow (`workflow.manage`); runs already started keep theirs.
#[utoipa::path(put, path = "/api/v1/workflows/{id}", tag = "workflows", request_body = super::wire::workflow::Definition,
    params(("id" = String, Path, description = "workflow id, or the name of a live workflow")),
    responses((status = 200, body = Created), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn update_workflow(
    State(state): State<AppState>,
    caller: Allowed<need::WorkflowManage>,
    Path(id): Path<String>,
    DefinitionBody(def): DefinitionBody,
) -> ApiResult<axum::Json<Created>> {
    Ok(axum::Json(Created::from(
        &state.workflows.update_workflow(&caller, &id, &def).await?,
    )))
}

/// Deletes a workflow (`workflow.manage`): it can no longer be run; its runs stay readable.
#[utoipa::path(delete, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "workflow id, or the name of a live workflow")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub async fn delete_workflow(
    State(state): State<AppState>,
    caller: Allowed<need::WorkflowManage>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.workflows.delete_workflow(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/workflows/{id}` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkflowQuery {
    /// A version; absent = the current one.
    version: Option<String>,
}

/// Reads a workflow's definition (`workflow.view`).
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "workflow id, or the name of a live workflow"), WorkflowQuery),
    responses((status = 200, body = WorkflowDoc), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn get_workflow(
    State(state): State<AppState>,
    _caller: Allowed<need::WorkflowView>,
    Path(id): Path<String>,
    Query(q): Query<WorkflowQuery>,
) -> ApiResult<axum::Json<WorkflowDoc>> {
    let version = match q.version.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            Error::field(
                "version",
                format_args!("must be a version number ≥ 1 (got {v:?})"),
            )
        })?),
    };
    Ok(axum::Json(WorkflowDoc::from(
        &state.workflows.get_workflow(&id, version).await?,
    )))
}

/// A workflow's versions.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VersionList {
    versions: Vec<VersionInfo>,
}

/// Lists a workflow's versions, oldest first (`workflow.view`).
#[utoipa::path(get, path = "/api/v1/workflows/{id}/versions", tag = "workflows",
    params(("id" = String, Path, description = "workflow id, or the name of a live workflow")),
    responses((status = 200, body = VersionList), (status = 401), (status = 403), (status = 404)))]
pub async fn list_versions(
    State(state): State<AppState>,
    _caller: Allowed<need::WorkflowView>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<VersionList>> {
    Ok(axum::Json(VersionList {
        versions: all(&state.workflows.workflow_versions(&id).await?),
    }))
}

fn version_number(v: &str) -> Result<i64, Error> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            Error::field(
                "version",
                format_args!("must be a version number ≥ 1 (got {v:?})"),
            )
        })
}

/// Reads one version of a workflow (`workflow.view`).
#[utoipa::path(get, path = "/api/v1/workflows/{id}/versions/{version}", tag = "workflows",
    params(("id" = String, Path, description = "workflow id, or the name of a live workflow"),
        ("version" = i64, Path, description = "version number")),
    responses((status = 200, body = WorkflowDoc), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn get_version(
    State(state): State<AppState>,
    _caller: Allowed<need::WorkflowView>,
    Path((id, version)): Path<(String, String)>,
) -> ApiResult<axum::Json<WorkflowDoc>> {
    let version = version_number(&version)?;
    Ok(axum::Json(WorkflowDoc::from(
        &state.workflows.get_workflow(&id, Some(version)).await?,
    )))
}

/// Makes an old version the newest again, as a new version (`workflow.manage`); checked as
/// any edit. Answers 201 with the new version's number.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/versions/{version}/restore", tag = "workflows",
    params(("id" = String, Path, description = "workflow id, or the name of a live workflow"),
        ("version" = i64, Path, description = "the version to restore")),
    responses((status = 201, body = Created), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn restore_version(
    State(state): State<AppState>,
    caller: Allowed<need::WorkflowManage>,
    Path((id, version)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let version = version_number(&version)?;
    let created = state
        .workflows
        .restore_version(&caller, &id, version)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(Created::from(&created))))
}

/// Takes the edit lock of a workflow, or renews it for its holder (`workflow.manage`). While
/// someone holds it, another user's edit answers 423 naming the holder.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/lock", tag = "workflows",
    params(("id" = String, Path, description = "workflow id, or the name of a live workflow")),
    responses((status = 200, body = EditLock), (status = 401), (status = 403), (status = 404), (status = 423)))]
pub async fn lock_workflow(
    State(state): State<AppState>,
    caller: Allowed<need::WorkflowManage>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<EditLock>> {
    Ok(axum::Json(EditLock::from(
        &state.workflows.lock_workflow(&caller, &id).await?,
    )))
}

/// Releases the edit lock (its holder), or breaks another user's (`admin.settings`; audited).
#[utoipa::path(delete, path = "/api/v1/workflows/{id}/lock", tag = "workflows",
    params(("id" = String, Path, description = "workflow id, or the name of a live workflow")),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409), (status = 423)))]
pub async fn unlock_workflow(
    State(state): State<AppState>,
    caller: Allowed<need::WorkflowManage>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.workflows.unlock_workflow(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/workflows/{id}/versions/{version}/diff` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The version to compare with (default: the current one).
    to: Option<String>,
}

/// What changed from one version to another (`workflow.view`).
#[utoipa::path(get, path = "/api/v1/workflows/{id}/versions/{version}/diff", tag = "workflows",
    params(("id" = String, Path, description = "workflow id, or the name of a live workflow"),
        ("version" = i64, Path, description = "the older version"), DiffQuery),
    responses((status = 200, body = VersionDiff), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn diff_versions(
    State(state): State<AppState>,
    _caller: Allowed<need::WorkflowView>,
    Path((id, version)): Path<(String, String)>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<axum::Json<VersionDiff>> {
    let from = version_number(&version)?;
    let to = match q.to.as_deref().map(str::trim) {
        None | Some("") => state.workflows.get_workflow(&id, None).await?.version,
        Some(v) => version_number(v).map_err(|_| {
            Error::field(
                "to",
                format_args!("must be a version number ≥ 1 (got {v:?})"),
            )
        })?,
    };
    Ok(axum::Json(VersionDiff::from(
        &state.workflows.diff_versions(&id, from, to).await?,
    )))
}

/// Filters of `GET /api/v1/workflows`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkflowListQuery {
    /// Exact group.
    group: Option<String>,
    /// Exact name.
    name: Option<String>,
    /// Default 100, at most 1000.
    limit: Option<String>,
    /// Default 0.
    offset: Option<String>,
}

/// A page of workflows.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkflowList {
    workflows: Vec<WorkflowSummary>,
    /// All matches.
    total: i64,
}

/// Lists live workflows by id (`workflow.view`).
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", params(WorkflowListQuery),
    responses((status = 200, body = WorkflowList), (status = 400), (status = 401), (status = 403)))]
pub async fn list_workflows(
    State(state): State<AppState>,
    _caller: Allowed<need::WorkflowView>,
    Query(q): Query<WorkflowListQuery>,
) -> ApiResult<axum::Json<WorkflowList>> {
    let page = parse_page(q.limit.as_deref(), q.offset.as_deref())?;
    let filter = WorkflowFilter {
        group: q.group.filter(|s| !s.is_empty()),
        name: q.name.filter(|s| !s.is_empty()),
    };
    let listed = state
        .workflows
        .list_workflows(&filter, page.limit, page.offset)
        .await?;
    Ok(axum::Json(WorkflowList {
        workflows: all(&listed.items),
        total: listed.total,
    }))
}

/// `POST /api/v1/workflows/{id}/executions` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct StartExecution {
    /// The workflow's parameters.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    params: Option<Value>,
    /// Wait up to this many seconds for the run to end before answering (at most the
    /// server's `workflow.sync_wait_secs`); default 0.
    #[serde(default)]
    wait_secs: Option<u64>,
    /// Run only these steps: the others are `SKIPPED` from the start and count as met for
    /// `needs`.
    #[serde(default)]
    only_steps: Option<Vec<String>>,
}

/// Starts a workflow (`workflow.execute`); answers 201 with the execution.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/executions", tag = "workflows", request_body = StartExecution,
    params(("id" = String, Path, description = "workflow id, or the name of a live workflow")),
    responses((status = 201, body = ExecutionView), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn start_execution(
    State(state): State<AppState>,
    caller: Allowed<need::WorkflowExecute>,
    Path(id): Path<String>,
    Json(body): Json<StartExecution>,
) -> ApiResult<impl IntoResponse> {
    let params = crate::mdrm::params_of(body.params)?;
    let opts = haechi_workflow::ExecuteOptions {
        only_steps: body.only_steps,
    };
    let exec_id = state
        .workflows
        .execute_with(&caller, &id, &params, &opts)
        .await?;
    let wait = body
        .wait_secs
        .unwrap_or(0)
        .min(state.workflows.config().sync_wait_secs);
    if wait > 0 {
        state
            .workflows
            .wait_end(&exec_id, Duration::from_secs(wait))
            .await?;
    }
    let view = state.workflows.execution(&exec_id).await?;
    Ok((StatusCode::CREATED, axum::Json(ExecutionView::from(&view))))
}
