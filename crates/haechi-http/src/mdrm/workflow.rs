//! MDRM's four workflow endpoints (CONTRACT §2), in MDRM's shapes: `{"result":"success",...}`
//! answers, and every error `{"result":"fail","message"}` (rendered by the envelope layer for
//! the `/services/workflow` prefix).
//!
//! Decisions where the document is silent (docs/workflows.md has them too):
//! - `execute` takes `params` (an object, or in a form a JSON text) for the workflow's
//!   parameters; `sync` accepts `true`/`false` (also `1`/`0`, `y`/`n`, any case).
//! - `execute` with `sync=true` answers when the run ends, or after `workflow.sync_wait_secs`
//!   with the running state; the answer adds `status` and `progress`. The `result` stays
//!   `success` (the request did what it was asked); `status` says how the run ended.
//! - `control` answers `{"result":"success","execution_id","status","message"}`.

use std::time::Duration;

use axum::extract::State;
use haechi_types::Error;
use haechi_workflow::{Control, RunStatus, WorkflowFilter};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::wire::workflow::{self as w, StatusView};
use crate::error::ApiResult;
use crate::extract::{need, Allowed, FormOrJson, Query};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list))
        .routes(routes!(execute))
        .routes(routes!(status))
        .routes(routes!(control))
}

/// A workflow in MDRM's list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MdrmWorkflow {
    /// The `wf_id` to execute it with.
    id: String,
    name: String,
    group: String,
}

/// `GET /services/workflow/list` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MdrmWorkflowList {
    /// `success`.
    result: &'static str,
    workflows: Vec<MdrmWorkflow>,
}

/// Filters of `GET /services/workflow/list` (all optional).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MdrmListQuery {
    /// Only workflows of this group.
    group: Option<String>,
}

/// Most workflows one list answer holds.
const LIST_MAX: i64 = 10_000;

/// Lists the registered workflows (`workflow.view`).
#[utoipa::path(get, path = "/services/workflow/list", tag = "mdrm", params(MdrmListQuery),
    responses((status = 200, body = MdrmWorkflowList),
              (status = 401, description = "`{\"result\":\"fail\",\"message\"}`"), (status = 403)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Allowed<need::WorkflowView>,
    Query(q): Query<MdrmListQuery>,
) -> ApiResult<axum::Json<MdrmWorkflowList>> {
    let filter = WorkflowFilter {
        group: q.group.filter(|g| !g.is_empty()),
        name: None,
    };
    let listed = state
        .workflows
        .list_workflow_names(&filter, LIST_MAX, 0)
        .await?;
    Ok(axum::Json(MdrmWorkflowList {
        result: "success",
        workflows: listed
            .items
            .into_iter()
            .map(|w| MdrmWorkflow {
                id: w.id,
                name: w.name,
                group: w.group,
            })
            .collect(),
    }))
}

/// `POST /services/workflow/execute` body (form or JSON).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct MdrmExecute {
    /// The workflow id (`id` of the list); a number or a string.
    #[serde(deserialize_with = "text")]
    #[schema(value_type = String)]
    wf_id: String,
    /// `true`: answer when the run ends (bounded wait); `false` (default): at once.
    #[serde(default, deserialize_with = "flag")]
    #[schema(value_type = Option<bool>)]
    sync: bool,
    /// The workflow's parameters: an object (JSON) or its JSON text (form).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    params: Option<Value>,
}

/// `execute` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MdrmExecuted {
    /// `success`.
    result: &'static str,
    execution_id: String,
    message: String,
    /// With `sync=true`: the run's status when the answer was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<w::RunStatus>,
    /// With `sync=true`: its progress then.
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<u8>,
}

/// Starts a workflow (`workflow.execute`). Unknown `wf_id` → 404.
#[utoipa::path(post, path = "/services/workflow/execute", tag = "mdrm",
    request_body(content = MdrmExecute, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = MdrmExecuted),
              (status = 400, description = "`{\"result\":\"fail\",\"message\"}`"), (status = 401), (status = 403),
              (status = 404, description = "`{\"result\":\"fail\",\"message\"}`: no such workflow")))]
pub async fn execute(
    State(state): State<AppState>,
    caller: Allowed<need::WorkflowExecute>,
    FormOrJson(body): FormOrJson<MdrmExecute>,
) -> ApiResult<axum::Json<MdrmExecuted>> {
    let params = params_of(body.params)?;
    let wf_id = body.wf_id.trim();
    if wf_id.is_empty() {
        return Err(Error::field(
            "wf_id",
            "is required: the id of a workflow from /services/workflow/list",
        )
        .into());
    }
    let id = state.workflows.execute(&caller, wf_id, &params).await?;
    if !body.sync {
        return Ok(axum::Json(MdrmExecuted {
            result: "success",
            execution_id: id,
            message: "Workflow started successfully.".to_owned(),
            status: None,
            progress: None,
        }));
    }
    let wait = Duration::from_secs(state.workflows.config().sync_wait_secs);
    let st = state.workflows.wait_end(&id, wait).await?;
    let message = match st.status {
        RunStatus::Completed => "Workflow completed.".to_owned(),
        RunStatus::Failed => {
            let why = state.workflows.execution(&id).await?.error.unwrap_or_default();
            format!("Workflow failed: {why}")
        }
        RunStatus::Stopped => "Workflow stopped.".to_owned(),
        RunStatus::Running | RunStatus::Paused => format!(
            "Workflow started successfully; it is still {} after {} s (follow it with /services/workflow/status).",
            st.status.as_str(),
            wait.as_secs()
        ),
    };
    Ok(axum::Json(MdrmExecuted {
        result: "success",
        execution_id: id,
        message,
        status: Some(st.status.into()),
        progress: Some(st.progress),
    }))
}

/// The `params` of an execute request: an object, or (from a form) its JSON text.
pub fn params_of(v: Option<Value>) -> Result<Map<String, Value>, Error> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(Error::field(
                "params",
                "must be a JSON object of parameter values, such as {\"target\":\"db2\"}",
            )),
        },
        Some(_) => Err(Error::field(
            "params",
            "must be an object of parameter values, such as {\"target\":\"db2\"}",
        )),
    }
}

/// `GET /services/workflow/status` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MdrmStatusQuery {
    /// The id `execute` returned.
    execution_id: Option<String>,
}

/// The status of an execution (`workflow.view`): `{"execution_id","status","current_step","progress"}`.
#[utoipa::path(get, path = "/services/workflow/status", tag = "mdrm", params(MdrmStatusQuery),
    responses((status = 200, body = StatusView),
              (status = 400, description = "`{\"result\":\"fail\",\"message\"}`"), (status = 401), (status = 403),
              (status = 404, description = "`{\"result\":\"fail\",\"message\"}`: no such execution")))]
pub async fn status(
    State(state): State<AppState>,
    _caller: Allowed<need::WorkflowView>,
    Query(q): Query<MdrmStatusQuery>,
) -> ApiResult<axum::Json<StatusView>> {
    let id = q
        .execution_id
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::field("execution_id", "is required: the id execute returned"))?;
    Ok(axum::Json(StatusView::from(
        &state.workflows.status(&id).await?,
    )))
}

/// `POST /services/workflow/control` body (form or JSON).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct MdrmControl {
    execution_id: String,
    /// `stop` (kill what runs, end STOPPED), `pause` (let running steps finish, start no
    /// new one) or `resume`.
    action: String,
}

/// `control` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MdrmControlled {
    /// `success`.
    result: &'static str,
    execution_id: String,
    status: w::RunStatus,
    message: String,
}

/// Stops, pauses or resumes an execution (`workflow.control`). An action that does not fit the
/// execution's state → 409.
#[utoipa::path(post, path = "/services/workflow/control", tag = "mdrm",
    request_body(content = MdrmControl, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = MdrmControlled),
              (status = 400, description = "`{\"result\":\"fail\",\"message\"}`"), (status = 401), (status = 403),
              (status = 404), (status = 409, description = "`{\"result\":\"fail\",\"message\"}`: the action does not fit")))]
pub async fn control(
    State(state): State<AppState>,
    caller: Allowed<need::WorkflowControl>,
    FormOrJson(body): FormOrJson<MdrmControl>,
) -> ApiResult<axum::Json<MdrmControlled>> {
    let action = Control::parse(&body.action).ok_or_else(|| {
        Error::field(
            "action",
            format_args!("must be stop, pause or resume (got {:?})", body.action),
        )
    })?;
    let id = body.execution_id.trim();
    if id.is_empty() {
        return Err(Error::field("execution_id", "is required").into());
    }
    let st = state.workflows.control(&caller, id, action).await?;
    let message = match action {
        Control::Stop => "Workflow stopped.",
        Control::Pause => "Workflow paused: running steps finish, no new step starts.",
        Control::Resume => "Workflow resumed.",
    };
    Ok(axum::Json(MdrmControlled {
        result: "success",
        execution_id: st.execution_id,
        status: st.status.into(),
        message: message.to_owned(),
    }))
}

/// A string field that may also come as a JSON number.
pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V)
}

/// A boolean that may come as `true`/`false`, `1`/`0`, `y`/`n` or `yes`/`no` text (a form).
pub(crate) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(E::custom(format_args!("must be true or false (got {v})"))),
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "y" | "yes" => Ok(true),
                "false" | "0" | "n" | "no" | "" => Ok(false),
                _ => Err(E::custom(format_args!("must be true or false (got {v:?})"))),
            }
        }
    }
    d.deserialize_any(V)
}
