//! Tasks: create, edit (a new revision), read, revisions, approval, and starting one.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use haechi_exec::{ApprovalStatus, RunnerGubun, StartInstance, TaskFilter};
use haechi_identity::Permission;
use serde::{Deserialize, Serialize};

use super::wire::all;
use super::wire::exec::{ApprovalAction, ApprovalReview, DryRun, DryRunRequest, Task, TaskSpec};
use super::wire::workflow::TaskScheduleView;
use crate::error::ApiResult;
use crate::extract::{need, numeric_id, parse_page, Allowed, Json, Query};
use crate::AppState;

/// Creates a task at revision 1, approval `N` (`task.develop`).
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", request_body = TaskSpec,
    responses((status = 201, body = Task), (status = 400), (status = 401), (status = 403), (status = 409)))]
pub async fn create_task(
    State(state): State<AppState>,
    caller: Allowed<need::TaskDevelop>,
    Json(spec): Json<TaskSpec>,
) -> ApiResult<impl IntoResponse> {
    let task = state.exec.create_task(&caller, spec.into()).await?;
    Ok((StatusCode::CREATED, axum::Json(Task::from(&task))))
}

/// Edits a task: a new revision (absent fields keep their value); approval goes back to `N`.
#[utoipa::path(put, path = "/api/v1/tasks/{task_id}", tag = "tasks", request_body = TaskSpec,
    params(("task_id" = String, Path, description = "task id")),
    responses((status = 200, body = Task), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn update_task(
    State(state): State<AppState>,
    caller: Allowed<need::TaskDevelop>,
    Path(id): Path<String>,
    Json(spec): Json<TaskSpec>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(Task::from(
        &state.exec.update_task(&caller, &id, spec.into()).await?,
    )))
}

/// Reads a task at its current revision.
#[utoipa::path(get, path = "/api/v1/tasks/{task_id}", tag = "tasks", params(("task_id" = String, Path, description = "task id")),
    responses((status = 200, body = Task), (status = 401), (status = 403), (status = 404)))]
pub async fn get_task(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(Task::from(&state.exec.get_task(&id).await?)))
}

/// Filters of `GET /api/v1/tasks`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskListQuery {
    /// Substring of the id.
    id: Option<String>,
    owner_user_id: Option<String>,
    /// `N`, `Q`, `A` or `R`.
    apprv_status: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// A page of tasks.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskList {
    tasks: Vec<Task>,
    total: i64,
}

/// Lists tasks at their current revision.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(TaskListQuery),
    responses((status = 200, body = TaskList), (status = 400), (status = 401), (status = 403)))]
pub async fn list_tasks(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Query(q): Query<TaskListQuery>,
) -> ApiResult<axum::Json<TaskList>> {
    let p = parse_page(q.limit.as_deref(), q.offset.as_deref())?;
    let e = |v: Option<String>| v.filter(|s| !s.is_empty());
    let apprv_status = match e(q.apprv_status) {
        None => None,
        Some(code) => match ApprovalStatus::from_code(&code) {
            Some(s) => Some(s),
            // This filter has never refused a value: one that is no approval status matches
            // no task.
            None => {
                return Ok(axum::Json(TaskList {
                    tasks: Vec::new(),
                    total: 0,
                }))
            }
        },
    };
    let filter = TaskFilter {
        id: e(q.id),
        owner_user_id: e(q.owner_user_id),
        apprv_status,
        ..Default::default()
    };
    let listed = state.exec.list_tasks(&filter, p).await?;
    Ok(axum::Json(TaskList {
        tasks: all(&listed.items),
        total: listed.total,
    }))
}

/// Every revision of a task.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RevisionList {
    /// Newest first.
    revisions: Vec<Task>,
}

/// Lists a task's revisions, newest first.
#[utoipa::path(get, path = "/api/v1/tasks/{task_id}/revisions", tag = "tasks", params(("task_id" = String, Path, description = "task id")),
    responses((status = 200, body = RevisionList), (status = 401), (status = 403), (status = 404)))]
pub async fn list_revisions(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<RevisionList>> {
    Ok(axum::Json(RevisionList {
        revisions: all(&state.exec.list_task_revisions(&id).await?),
    }))
}

/// Reads a task as it was at one revision.
#[utoipa::path(get, path = "/api/v1/tasks/{task_id}/revisions/{revision_no}", tag = "tasks",
    params(("task_id" = String, Path, description = "task id"), ("revision_no" = i64, Path, description = "revision number")),
    responses((status = 200, body = Task), (status = 401), (status = 403), (status = 404)))]
pub async fn get_revision(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path((id, no)): Path<(String, String)>,
) -> ApiResult<axum::Json<Task>> {
    let no = numeric_id("revision", &no)?;
    Ok(axum::Json(Task::from(
        &state.exec.get_task_revision(&id, no).await?,
    )))
}

/// The revision under review and its unified diff (script and fields) to the last approved
/// revision: what an approver reads before deciding, and the `revisionNo` the decision names.
#[utoipa::path(get, path = "/api/v1/tasks/{task_id}/approval", tag = "tasks",
    params(("task_id" = String, Path, description = "task id")),
    responses((status = 200, body = ApprovalReview), (status = 401), (status = 403), (status = 404)))]
pub async fn get_approval(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ApprovalReview>> {
    Ok(axum::Json(ApprovalReview::from(
        &state.exec.approval_review(&id).await?,
    )))
}

/// `POST /api/v1/tasks/{task_id}/approval` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ApprovalRequest {
    action: ApprovalAction,
    /// The revision the caller reviewed: required to approve or reject (409 when the task is
    /// at another revision now); optional with `request`.
    #[serde(rename = "revisionNo", alias = "revision_no")]
    revision_no: Option<i64>,
    comment: Option<String>,
}

/// Approval: `request` (`task.develop`: `N`/`R` → `Q`), `approve` or `reject` (`task.approve`:
/// `Q` → `A`/`R`; nobody approves their own request unless `tasks.allow_self_approval`). An
/// approval or rejection names the `revisionNo` reviewed and is refused (409) when the task has
/// another revision now.
#[utoipa::path(post, path = "/api/v1/tasks/{task_id}/approval", tag = "tasks", request_body = ApprovalRequest,
    params(("task_id" = String, Path, description = "task id")),
    responses((status = 200, body = Task), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn approval(
    State(state): State<AppState>,
    caller: Allowed<need::TaskDevelopOrApprove>,
    Path(id): Path<String>,
    Json(body): Json<ApprovalRequest>,
) -> ApiResult<axum::Json<Task>> {
    match body.action {
        ApprovalAction::Request => caller.require(Permission::TaskDevelop)?,
        ApprovalAction::Approve | ApprovalAction::Reject => {
            caller.require(Permission::TaskApprove)?
        }
    }
    Ok(axum::Json(Task::from(
        &state
            .exec
            .task_approval(
                &caller,
                &id,
                body.action.into(),
                body.revision_no,
                body.comment,
            )
            .await?,
    )))
}

/// `POST /api/v1/tasks/{task_id}/instances` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunTask {
    /// Nodes to run on; absent or empty: the task's default `targets`, resolved now (the
    /// instance's `targets` records what they resolved to and which nodes were left out).
    #[serde(alias = "nodes", default)]
    node_id_list: Vec<String>,
    #[serde(default)]
    arguments: Vec<String>,
}

/// Starts a task on nodes (`task.execute`), like OPMATE's `POST /opmate/task/{id}/instance`.
#[utoipa::path(post, path = "/api/v1/tasks/{task_id}/instances", tag = "tasks", request_body = RunTask,
    params(("task_id" = String, Path, description = "task id")),
    responses((status = 201, body = super::task_instances::InstanceDetail), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn run_task(
    State(state): State<AppState>,
    caller: Allowed<need::TaskExecute>,
    Path(id): Path<String>,
    Json(body): Json<RunTask>,
) -> ApiResult<impl IntoResponse> {
    let req = StartInstance {
        task_id: id,
        node_ids: body.node_id_list,
        arguments: body.arguments,
        runner_gubun: RunnerGubun::User,
        runner_id: caller.principal.user_id.clone(),
        origin: None,
    };
    let inst = state.exec.start_instance(Some(&caller.actor), req).await?;
    let detail = super::task_instances::detail(&state, inst).await?;
    Ok((StatusCode::CREATED, axum::Json(detail)))
}

/// A task's schedules (`{"cron","timezone"?}` or `{"at"}`, with `nodeIdList`?, `arguments`?,
/// `misfire`?) and their next fires.
#[utoipa::path(get, path = "/api/v1/tasks/{task_id}/schedules", tag = "tasks",
    params(("task_id" = String, Path, description = "task id")),
    responses((status = 200, body = TaskScheduleView), (status = 401), (status = 403), (status = 404)))]
pub async fn get_task_schedules(
    State(state): State<AppState>,
    _caller: Allowed<need::NodeView>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TaskScheduleView>> {
    Ok(axum::Json(TaskScheduleView::from(
        &state.workflows.task_schedules(&id).await?,
    )))
}

/// The body of `PUT /api/v1/tasks/{task_id}/schedules`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct TaskSchedulesBody {
    /// Replaces every schedule of the task (empty: none).
    #[allow(dead_code)]
    schedules: Vec<super::wire::workflow::TaskSchedule>,
}

/// Replaces a task's schedules (`task.execute`: a schedule starts runs of the task, as
/// `runnerGubun` `S`; a fire the task refuses — not approved, `execScheduler` `D`, a node
/// disabled — is skipped and audited with the reason). A bad cron, time zone or moment is a
/// 400 naming the field; nothing is stored.
#[utoipa::path(put, path = "/api/v1/tasks/{task_id}/schedules", tag = "tasks",
    params(("task_id" = String, Path, description = "task id")),
    request_body = TaskSchedulesBody,
    responses((status = 200, body = TaskScheduleView), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn set_task_schedules(
    State(state): State<AppState>,
    caller: Allowed<need::TaskExecute>,
    Path(id): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<axum::Json<TaskScheduleView>> {
    let view = state
        .workflows
        .set_task_schedules(&caller, &id, &body)
        .await?;
    Ok(axum::Json(TaskScheduleView::from(&view)))
}

/// Dry run (`task.execute`): for each node a start would reach now (`nodeIdList`, or the
/// task's targets), whether it would run and every reason it would not (`unknown_node`,
/// `disabled`, `not_connected`, `os_user_missing`, `outside_window`, `not_approved`,
/// `ondemand_disabled`, `not_runner`, `attribute_missing`), and the script as it would run
/// there with its `@OPM_ATTR.KEY@` substituted. Nothing runs; the dry run is audited.
#[utoipa::path(post, path = "/api/v1/tasks/{task_id}/dry-run", tag = "tasks", request_body = DryRunRequest,
    params(("task_id" = String, Path, description = "task id")),
    responses((status = 200, body = DryRun), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn dry_run(
    State(state): State<AppState>,
    caller: Allowed<need::TaskExecute>,
    Path(id): Path<String>,
    Json(body): Json<DryRunRequest>,
) -> ApiResult<axum::Json<DryRun>> {
    Ok(axum::Json(DryRun::from(
        &state.exec.dry_run(&caller, &id, body.into()).await?,
    )))
}
