//! A task (`/console/tasks/{id}`): its script at any revision, the revisions and a diff between
//! two of them, its approval state; request approval (`task.develop`) and run on chosen nodes
//! with arguments (`task.execute`), as the API does.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use haechi_exec::{ApprovalAction, ApprovalStatus, RunnerGubun, StartInstance};
use haechi_identity::Permission;
use haechi_types::Error;

use super::pages::{diff, DiffLine};
use super::{comment, number, page, q, see_other, when, when_opt, Chrome, Result, Session};
use crate::AppState;

pub struct RevLine {
    pub no: i64,
    pub by: String,
    pub at: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "console/task.html")]
struct TaskPage {
    c: Chrome,
    q: String,
    revision: i64,
    shown: i64,
    owner: String,
    os_user: String,
    description: String,
    approval: String,
    requested_by: String,
    approver: String,
    approval_comment: String,
    approval_at: String,
    script: String,
    revisions: Vec<RevLine>,
    diff_from: i64,
    diff_to: i64,
    diff: Vec<DiffLine>,
    can_request: bool,
    can_run: bool,
    target_nodes: String,
}

/// `GET /console/tasks/{id}` (`node.view`, as the API's task read).
pub async fn page_get(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::NodeView)?;
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let task = state.exec.get_task(&id).await?;
    let shown = number(&query, "rev", 1)?.unwrap_or(task.revision_no);
    let at = if shown == task.revision_no {
        task.clone()
    } else {
        state.exec.get_task_revision(&id, shown).await?
    };
    let revisions = state.exec.list_task_revisions(&id).await?;
    let diff_to = number(&query, "to", 1)?.unwrap_or(task.revision_no);
    let diff_from = number(&query, "from", 1)?.unwrap_or((diff_to - 1).max(1));
    let script_of = |no: i64| {
        revisions
            .iter()
            .find(|r| r.revision_no == no)
            .map(|r| r.script.clone())
            .ok_or_else(|| Error::not_found(format_args!("revision {no} of task '{id}'")))
    };
    let d = diff(&script_of(diff_from)?, &script_of(diff_to)?);
    let p = s.principal();
    page(TaskPage {
        c: Chrome::new(&state, &s, "tasks", format!("{} {}", l.t("task"), task.id)),
        q: q(&task.id),
        revision: task.revision_no,
        shown,
        owner: task.owner_user_id.clone(),
        os_user: at.os_user.clone(),
        description: at.description.clone(),
        approval: super::pages::approval_word(l, task.apprv_status).to_owned(),
        requested_by: task.apprv_requested_by.clone(),
        approver: task.apprv_user_id.clone(),
        approval_comment: task.apprv_comment.clone(),
        approval_at: when_opt(task.apprv_at, off),
        script: at.script.clone(),
        revisions: revisions
            .iter()
            .map(|r| RevLine {
                no: r.revision_no,
                by: r.revision_created_by.clone(),
                at: when(r.revision_created_at, off),
                current: r.revision_no == shown,
            })
            .collect(),
        diff_from,
        diff_to,
        diff: d,
        can_request: p.can(Permission::TaskDevelop)
            && matches!(
                task.apprv_status,
                ApprovalStatus::New | ApprovalStatus::Rejected
            ),
        can_run: p.can(Permission::TaskExecute) && task.apprv_status == ApprovalStatus::Approved,
        target_nodes: task.target_node_ids.join(" "),
    })
}

/// `POST /console/tasks/{id}/approval` (`task.develop`): request approval.
pub async fn request_approval(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::TaskDevelop)?;
    let comment = comment(&form);
    state
        .exec
        .task_approval(&s.caller, &id, ApprovalAction::Request, None, comment)
        .await?;
    Ok(see_other(&format!("/console/tasks/{}", q(&id))))
}

/// `POST /console/tasks/{id}/run` (`task.execute`, as `POST /api/v1/tasks/{id}/instances`):
/// `nodes` separated by spaces, commas or lines; `arguments` one per line, each a whole
/// argument.
pub async fn run(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::TaskExecute)?;
    let node_ids: Vec<String> = form
        .get("nodes")
        .map(String::as_str)
        .unwrap_or("")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if node_ids.is_empty() {
        return Err(Error::field("nodes", "must name at least one node").into());
    }
    let arguments: Vec<String> = form
        .get("arguments")
        .map(String::as_str)
        .unwrap_or("")
        .lines()
        .map(|a| a.trim_end_matches('\r').to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    let inst = state
        .exec
        .start_instance(
            Some(&s.caller.actor),
            StartInstance {
                task_id: id,
                node_ids,
                arguments,
                runner_gubun: RunnerGubun::User,
                runner_id: s.principal().user_id.clone(),
                origin: None,
            },
        )
        .await?;
    Ok(see_other(&format!(
        "/console/task-instances/{}",
        inst.task_instance_no
    )))
}
