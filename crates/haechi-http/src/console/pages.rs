//! The dashboard and the list pages: runs, workflows (with a workflow's page and its run
//! form), tasks, approvals, nodes. Every page checks the permission its API twin checks.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use haechi_exec::{
    ApprovalAction, ApprovalStatus, NewEnrollmentToken, NodeFilter, NodeStatus, Paging, TaskFilter,
};
use haechi_identity::Permission;
use haechi_types::time::now_ms;
use haechi_types::Error;
use haechi_workflow::definition::Action;
use haechi_workflow::{ExecutionFilter, RunStatus, WorkflowFilter};
use serde_json::{Map, Value};

use super::{
    comment, dag, editor, number, opt, page, page_no, q, see_other, span, when, when_opt, Chrome,
    Lang, Result, Session, St,
};
use crate::AppState;

pub struct RunRow {
    pub id: String,
    pub wf_id: String,
    pub workflow: String,
    pub st: St,
    pub step: String,
    pub progress: u8,
    pub started_by: String,
    pub started: String,
    pub elapsed: String,
    /// Elapsed time against the workflow's RTO (dashboard only).
    pub rto: Option<RtoShown>,
}

/// A running run's elapsed time against its workflow's `rto_secs`.
pub struct RtoShown {
    pub target: String,
    pub over: bool,
    /// By how much it is over, or how much is left.
    pub margin: String,
    pub percent: i64,
}

#[derive(Template)]
#[template(path = "console/runs_table.html")]
struct RunsTable<'a> {
    l: Lang,
    rows: &'a [RunRow],
    show_rto: bool,
}

fn runs_table(l: Lang, rows: &[RunRow]) -> Result<String> {
    Ok(RunsTable {
        l,
        rows,
        show_rto: false,
    }
    .render()?)
}

/// Sets each run's RTO view from its workflow version's `rto_secs` (one read per version).
async fn with_rto(
    state: &AppState,
    runs: &[haechi_workflow::ExecutionSummary],
    rows: &mut [RunRow],
) -> Result<()> {
    let mut rto_of: HashMap<(String, i64), Option<i64>> = HashMap::new();
    for (e, row) in runs.iter().zip(rows.iter_mut()) {
        let key = (e.wf_id.clone(), e.version);
        let rto = match rto_of.get(&key) {
            Some(r) => *r,
            None => {
                let r = state
                    .workflows
                    .get_workflow(&e.wf_id, Some(e.version))
                    .await?
                    .definition
                    .rto_secs
                    .map(|r| r.ms() as i64);
                rto_of.insert(key, r);
                r
            }
        };
        if let Some(rto_ms) = rto {
            let elapsed = e.ended_at.unwrap_or_else(now_ms) - e.created_at;
            row.rto = Some(RtoShown {
                target: span(rto_ms),
                over: elapsed > rto_ms,
                margin: span((elapsed - rto_ms).abs()),
                percent: if rto_ms > 0 {
                    elapsed * 100 / rto_ms
                } else {
                    100
                },
            });
        }
    }
    Ok(())
}

fn run_row(l: Lang, off: i32, e: &haechi_workflow::ExecutionSummary) -> RunRow {
    RunRow {
        id: e.execution_id.clone(),
        wf_id: e.wf_id.clone(),
        workflow: e.workflow_name.clone(),
        st: St::of(l, e.status.as_str()),
        step: e.current_step.clone(),
        progress: e.progress,
        started_by: e.started_by.clone(),
        started: when(e.created_at, off),
        elapsed: span(e.ended_at.unwrap_or_else(now_ms) - e.created_at),
        rto: None,
    }
}

/// An approval step waiting for a decision.
pub struct WaitingStep {
    pub execution: String,
    pub workflow: String,
    pub step: String,
    pub role: String,
    pub since: String,
    pub mine: bool,
}

/// Runs that are `RUNNING`, then those `PAUSED`: at most `limit` of each.
async fn active_runs(
    state: &AppState,
    limit: i64,
) -> Result<Vec<haechi_workflow::ExecutionSummary>> {
    let mut out = Vec::new();
    for status in [RunStatus::Running, RunStatus::Paused] {
        let listed = state
            .workflows
            .list_executions(
                &ExecutionFilter {
                    status: Some(status),
                    ..Default::default()
                },
                limit,
                0,
            )
            .await?;
        out.extend(listed.items);
    }
    Ok(out)
}

/// Approval steps of the `active` runs that wait for a decision.
async fn waiting_steps(
    state: &AppState,
    s: &Session,
    active: &[haechi_workflow::ExecutionSummary],
) -> Result<Vec<WaitingStep>> {
    let mut out = Vec::new();
    if !s.principal().can(Permission::WorkflowView) {
        return Ok(out);
    }
    for e in active {
        let view = state.workflows.execution(&e.execution_id).await?;
        if !view.steps.iter().any(|st| st.kind == "approval") {
            continue;
        }
        let doc = state
            .workflows
            .get_workflow(&view.wf_id, Some(view.version))
            .await?;
        for (st, d) in view.steps.iter().zip(&doc.definition.steps) {
            if let Action::Approval { role } = &d.action {
                if st.status == haechi_workflow::StepStatus::Running && st.decision.is_none() {
                    out.push(WaitingStep {
                        execution: view.execution_id.clone(),
                        workflow: view.workflow_name.clone(),
                        step: st.name.clone(),
                        role: role.clone(),
                        since: when_opt(st.started_at, state.http.utc_offset_secs),
                        mine: s.principal().roles.iter().any(|r| &r.name == role),
                    });
                }
            }
        }
    }
    Ok(out)
}

pub struct NodeLine {
    pub id: String,
    pub hostname: String,
    pub ip: String,
    pub os: String,
    pub agent_ver: String,
    pub enabled: bool,
    pub connected: bool,
    pub heartbeat: String,
    pub age: String,
    pub missing: String,
    pub st: St,
}

fn node_line(l: Lang, off: i32, n: &haechi_exec::Node) -> NodeLine {
    let now = now_ms();
    let st = if n.missing_since.is_some() {
        St::of(l, "LOST")
    } else if n.connected {
        St::of(l, "RUNNING")
    } else {
        St::of(l, "WAITING")
    };
    NodeLine {
        id: n.id.clone(),
        hostname: n.hostname.clone(),
        ip: n.ip.clone(),
        os: n.os_name.clone(),
        agent_ver: n.agent_ver.clone(),
        enabled: n.status == NodeStatus::Enabled,
        connected: n.connected,
        heartbeat: when_opt(n.heartbeat_at, off),
        age: n.heartbeat_at.map(|h| span(now - h)).unwrap_or_default(),
        missing: when_opt(n.missing_since, off),
        st,
    }
}

pub struct TaskLine {
    pub id: String,
    pub revision: i64,
    pub owner: String,
    pub approval: &'static str,
    pub requested_by: String,
    pub updated: String,
    pub description: String,
}

pub(super) fn approval_word(l: Lang, s: ApprovalStatus) -> &'static str {
    match (l, s) {
        (Lang::Ko, ApprovalStatus::New) => "승인 전 (N)",
        (Lang::Ko, ApprovalStatus::Requested) => "승인 요청됨 (Q)",
        (Lang::Ko, ApprovalStatus::Approved) => "승인됨 (A)",
        (Lang::Ko, ApprovalStatus::Rejected) => "반려됨 (R)",
        (Lang::En, ApprovalStatus::New) => "not requested (N)",
        (Lang::En, ApprovalStatus::Requested) => "requested (Q)",
        (Lang::En, ApprovalStatus::Approved) => "approved (A)",
        (Lang::En, ApprovalStatus::Rejected) => "rejected (R)",
    }
}

fn task_line(l: Lang, off: i32, t: &haechi_exec::Task) -> TaskLine {
    TaskLine {
        id: t.id.clone(),
        revision: t.revision_no,
        owner: t.owner_user_id.clone(),
        approval: approval_word(l, t.apprv_status),
        requested_by: t.apprv_requested_by.clone(),
        updated: when(t.updated_at, off),
        description: t.description.clone(),
    }
}

/// Tasks waiting for approval (at most 200).
async fn requested_tasks(state: &AppState) -> Result<Vec<haechi_exec::Task>> {
    Ok(state
        .exec
        .list_tasks(
            &TaskFilter {
                apprv_status: Some(ApprovalStatus::Requested),
                ..Default::default()
            },
            Paging {
                limit: 200,
                offset: 0,
            },
        )
        .await?
        .items)
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct Dashboard {
    c: Chrome,
    running: Vec<RunRow>,
    running_html: String,
    waiting: Vec<WaitingStep>,
    tasks: Vec<TaskLine>,
    missing: Vec<NodeLine>,
    can_workflows: bool,
    can_nodes: bool,
}

/// `GET /console/`.
pub async fn dashboard(State(state): State<AppState>, s: Session) -> Result<Response> {
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let p = s.principal();
    // One read of the active runs serves both the list and the approval steps waiting in them.
    let active = if p.can(Permission::WorkflowView) {
        active_runs(&state, 200).await?
    } else {
        Vec::new()
    };
    let (mut shown, mut running, mut listed) = ([0usize; 2], Vec::new(), Vec::new());
    for e in &active {
        let n = &mut shown[usize::from(e.status == RunStatus::Paused)];
        if *n < 100 {
            *n += 1;
            running.push(run_row(l, off, e));
            listed.push(e.clone());
        }
    }
    with_rto(&state, &listed, &mut running).await?;
    let waiting = waiting_steps(&state, &s, &active)
        .await?
        .into_iter()
        .filter(|w| w.mine)
        .collect();
    let mut tasks = Vec::new();
    if p.can(Permission::TaskApprove) {
        tasks = requested_tasks(&state)
            .await?
            .iter()
            .filter(|t| t.apprv_requested_by != p.user_id)
            .map(|t| task_line(l, off, t))
            .collect();
    }
    let mut missing = Vec::new();
    if p.can(Permission::NodeView) {
        missing = state
            .exec
            .missing_nodes(200)
            .await?
            .iter()
            .map(|n| node_line(l, off, n))
            .collect();
    }
    page(Dashboard {
        c: Chrome::new(&state, &s, "dashboard", l.t("nav_dashboard").to_owned()),
        running_html: RunsTable {
            l,
            rows: &running,
            show_rto: true,
        }
        .render()?,
        running,
        waiting,
        tasks,
        missing,
        can_workflows: p.can(Permission::WorkflowView),
        can_nodes: p.can(Permission::NodeView),
    })
}

struct Choice {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "console/executions.html")]
struct Executions {
    c: Chrome,
    rows_html: String,
    total: i64,
    statuses: Vec<Choice>,
    wf_id: String,
    started_by: String,
    from: String,
    to: String,
    page_no: i64,
    pages: i64,
    prev: String,
    next: String,
}

/// A date (`YYYY-MM-DD`) in the server's zone → unix ms at its start, or at its end.
fn day_ms(field: &str, v: &str, off: i32, end: bool) -> Result<i64> {
    let bad = || Error::field(field, format_args!("must be a date YYYY-MM-DD (got {v:?})"));
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(v, &fmt).map_err(|_| bad())?;
    let offset = time::UtcOffset::from_whole_seconds(off).unwrap_or(time::UtcOffset::UTC);
    let t = d.midnight().assume_offset(offset);
    let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
    Ok(if end { ms + 86_400_000 - 1 } else { ms })
}

const RUNS_PAGE: i64 = 50;

/// `GET /console/executions` (`workflow.view`): the run history with filters.
pub async fn executions(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::WorkflowView)?;
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let status = match opt(&query, "status") {
        None => None,
        Some(v) => Some(RunStatus::parse(&v.to_ascii_uppercase()).ok_or_else(|| {
            Error::field(
                "status",
                format_args!("must be RUNNING, PAUSED, COMPLETED, FAILED or STOPPED (got {v:?})"),
            )
        })?),
    };
    let wf_id = opt(&query, "wf_id");
    let workflow_id = match &wf_id {
        None => None,
        Some(v) => Some(v.parse::<i64>().map_err(|_| {
            Error::field(
                "wf_id",
                format_args!("must be a workflow id, a number (got {v:?})"),
            )
        })?),
    };
    let from = opt(&query, "from");
    let to = opt(&query, "to");
    let filter = ExecutionFilter {
        workflow_id,
        status,
        started_by: opt(&query, "started_by"),
        from_ms: from
            .as_deref()
            .map(|v| day_ms("from", v, off, false))
            .transpose()?,
        to_ms: to
            .as_deref()
            .map(|v| day_ms("to", v, off, true))
            .transpose()?,
    };
    let page_no = page_no(&query)?;
    let listed = state
        .workflows
        .list_executions(&filter, RUNS_PAGE, (page_no - 1) * RUNS_PAGE)
        .await?;
    let pages = ((listed.total + RUNS_PAGE - 1) / RUNS_PAGE).max(1);
    let keep = |p: i64| {
        let mut parts = vec![format!("page={p}")];
        for k in ["wf_id", "status", "started_by", "from", "to"] {
            if let Some(v) = opt(&query, k) {
                parts.push(format!("{k}={}", q(&v)));
            }
        }
        format!("?{}", parts.join("&"))
    };
    let mut statuses = vec![Choice {
        value: "",
        label: l.t("all"),
        selected: status.is_none(),
    }];
    statuses.extend(RunStatus::ALL.iter().map(|st| Choice {
        value: st.as_str(),
        label: St::of(l, st.as_str()).word,
        selected: status == Some(*st),
    }));
    page(Executions {
        c: Chrome::new(&state, &s, "executions", l.t("nav_executions").to_owned()),
        rows_html: runs_table(
            l,
            &listed
                .items
                .iter()
                .map(|e| run_row(l, off, e))
                .collect::<Vec<_>>(),
        )?,
        total: listed.total,
        statuses,
        wf_id: wf_id.unwrap_or_default(),
        started_by: opt(&query, "started_by").unwrap_or_default(),
        from: from.unwrap_or_default(),
        to: to.unwrap_or_default(),
        page_no,
        pages,
        prev: if page_no > 1 {
            keep(page_no - 1)
        } else {
            String::new()
        },
        next: if page_no < pages {
            keep(page_no + 1)
        } else {
            String::new()
        },
    })
}

pub struct WfLine {
    pub id: String,
    pub name: String,
    pub description: String,
    pub version: i64,
    pub updated: String,
    pub created_by: String,
}

#[derive(Template)]
#[template(path = "console/workflows.html")]
struct Workflows {
    c: Chrome,
    groups: Vec<(String, Vec<WfLine>)>,
    group: String,
    name: String,
    total: i64,
}

/// `GET /console/workflows` (`workflow.view`): workflows by group.
pub async fn workflows(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::WorkflowView)?;
    let off = state.http.utc_offset_secs;
    let filter = WorkflowFilter {
        group: opt(&query, "group"),
        name: opt(&query, "name"),
    };
    let listed = state.workflows.list_workflows(&filter, 1000, 0).await?;
    let mut groups: BTreeMap<String, Vec<WfLine>> = BTreeMap::new();
    for w in &listed.items {
        groups.entry(w.group.clone()).or_default().push(WfLine {
            id: w.id.clone(),
            name: w.name.clone(),
            description: w.description.clone(),
            version: w.version,
            updated: when(w.updated_at, off),
            created_by: w.created_by.clone(),
        });
    }
    page(Workflows {
        c: Chrome::new(
            &state,
            &s,
            "workflows",
            s.lang.t("nav_workflows").to_owned(),
        ),
        groups: groups.into_iter().collect(),
        group: filter.group.unwrap_or_default(),
        name: filter.name.unwrap_or_default(),
        total: listed.total,
    })
}

pub struct ParamField {
    pub name: String,
    pub id: String,
    pub default: String,
    pub description: String,
    pub required: bool,
}

pub struct VersionLine {
    pub version: i64,
    pub by: String,
    pub at: String,
    pub current: bool,
}

/// A diff between two versions of a workflow, as YAML lines.
pub struct VersionDiffView {
    pub from: i64,
    pub to: i64,
    pub lines: Vec<DiffLine>,
}

#[derive(Template)]
#[template(path = "console/workflow.html")]
struct WorkflowPage {
    c: Chrome,
    id: String,
    group: String,
    description: String,
    version: i64,
    current_version: i64,
    svg: String,
    definition: String,
    versions: Vec<VersionLine>,
    params: Vec<ParamField>,
    can_run: bool,
    can_manage: bool,
    runs_html: String,
    editor: Option<editor::Editor>,
    diff: Option<VersionDiffView>,
    notice: String,
    rto: String,
}

/// `GET /console/workflows/{id}` (`workflow.view`): definition, flowchart, versions (with a
/// diff between two: `?diff_from=&diff_to=`), run form, and the editor for `workflow.manage`.
pub async fn workflow(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::WorkflowView)?;
    let version = number(&query, "version", 1)?;
    let diff = match (
        number(&query, "diff_from", 1)?,
        number(&query, "diff_to", 1)?,
    ) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    let l = s.lang;
    let mut notice = String::new();
    if let Some(v) = number(&query, "saved", 1)? {
        notice = format!("{} {v}", l.t("saved_as_version"));
    } else if let (Some(v), Some(from)) =
        (number(&query, "restored", 1)?, number(&query, "from", 1)?)
    {
        notice = format!(
            "{} {from} → {} {v}",
            l.t("restored_version"),
            l.t("version")
        );
    }
    workflow_view(&state, &s, &id, version, None, diff, notice).await
}

/// The workflow page; `editor` holds a failed save (shown with its error, status 400).
pub async fn workflow_page(
    state: &AppState,
    s: &Session,
    id: &str,
    version: Option<i64>,
    editor: Option<editor::Editor>,
    diff: Option<(i64, i64)>,
) -> Result<Response> {
    workflow_view(state, s, id, version, editor, diff, String::new()).await
}

async fn workflow_view(
    state: &AppState,
    s: &Session,
    id: &str,
    version: Option<i64>,
    editor: Option<editor::Editor>,
    diff: Option<(i64, i64)>,
    notice: String,
) -> Result<Response> {
    s.require(Permission::WorkflowView)?;
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let doc = state.workflows.get_workflow(id, version).await?;
    let def = &doc.definition;
    let versions = state
        .workflows
        .workflow_versions(&doc.id)
        .await?
        .into_iter()
        .map(|v| VersionLine {
            current: v.version == doc.current_version,
            version: v.version,
            by: v.created_by,
            at: when(v.created_at, off),
        })
        .collect();
    let diff = match diff {
        Some((a, b)) => {
            let from = state.workflows.get_workflow(&doc.id, Some(a)).await?;
            let to = state.workflows.get_workflow(&doc.id, Some(b)).await?;
            Some(VersionDiffView {
                from: a,
                to: b,
                lines: editor::text_diff(
                    &editor::definition_yaml(&from.definition),
                    &editor::definition_yaml(&to.definition),
                ),
            })
        }
        None => None,
    };
    let runs: Vec<RunRow> = match doc.id.parse::<i64>() {
        Ok(wid) => state
            .workflows
            .list_executions(
                &ExecutionFilter {
                    workflow_id: Some(wid),
                    ..Default::default()
                },
                20,
                0,
            )
            .await?
            .items
            .iter()
            .map(|e| run_row(l, off, e))
            .collect(),
        Err(_) => Vec::new(),
    };
    let can_manage = s.principal().can(Permission::WorkflowManage) && !doc.deleted;
    let failed = editor.is_some();
    let editor = match editor {
        Some(e) => Some(e),
        None if can_manage => Some(editor::Editor::of(def)),
        None => None,
    };
    let mut res = page(WorkflowPage {
        c: Chrome::new(state, s, "workflows", def.name.clone()),
        id: doc.id.clone(),
        group: def.group.clone(),
        description: def.description.clone(),
        version: doc.version,
        current_version: doc.current_version,
        svg: dag::svg(def, &[], l.t("graph_desc"), false),
        definition: serde_json::to_string_pretty(def).unwrap_or_default(),
        versions,
        params: def
            .params
            .iter()
            .enumerate()
            .map(|(i, (k, p))| ParamField {
                name: k.clone(),
                id: format!("param-{i}"),
                default: p.default.clone().unwrap_or_default(),
                description: p.description.clone(),
                required: p.default.is_none(),
            })
            .collect(),
        can_run: s.principal().can(Permission::WorkflowExecute) && !doc.deleted,
        can_manage,
        runs_html: runs_table(l, &runs)?,
        editor,
        diff,
        notice,
        rto: def
            .rto_secs
            .map(|r| span(r.ms() as i64))
            .unwrap_or_default(),
    })?;
    if failed {
        *res.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(res)
}

/// `POST /console/workflows/{id}/run` (`workflow.execute`, as the API): starts the workflow
/// with the form's `param.<name>` fields (an empty field takes the declared default).
pub async fn run_workflow(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::WorkflowExecute)?;
    let mut params = Map::new();
    for (k, v) in &form {
        if let Some(name) = k.strip_prefix("param.") {
            if !v.is_empty() {
                params.insert(name.to_owned(), Value::String(v.clone()));
            }
        }
    }
    let exec_id = state.workflows.execute(&s.caller, &id, &params).await?;
    Ok(see_other(&format!("/console/executions/{}", q(&exec_id))))
}

#[derive(Template)]
#[template(path = "console/nodes.html")]
struct Nodes {
    c: Chrome,
    rows: Vec<NodeLine>,
    total: i64,
    id_filter: String,
    can_manage: bool,
    enrol: Option<(String, String, String)>,
    page_no: i64,
    pages: i64,
    prev: String,
    next: String,
}

const NODES_PAGE: i64 = 100;

async fn nodes_page(
    state: &AppState,
    s: &Session,
    query: &HashMap<String, String>,
    enrol: Option<(String, String, String)>,
) -> Result<Response> {
    s.require(Permission::NodeView)?;
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let id_filter = opt(query, "id");
    let page_no = page_no(query)?;
    let listed = state
        .exec
        .list_nodes(
            &NodeFilter {
                id: id_filter.clone(),
                ..Default::default()
            },
            Paging {
                limit: NODES_PAGE,
                offset: (page_no - 1) * NODES_PAGE,
            },
        )
        .await?;
    let pages = ((listed.total + NODES_PAGE - 1) / NODES_PAGE).max(1);
    let idq = id_filter.as_deref().map(q).unwrap_or_default();
    page(Nodes {
        c: Chrome::new(state, s, "nodes", l.t("nav_nodes").to_owned()),
        rows: listed.items.iter().map(|n| node_line(l, off, n)).collect(),
        total: listed.total,
        id_filter: id_filter.unwrap_or_default(),
        can_manage: s.principal().can(Permission::NodeManage),
        enrol,
        page_no,
        pages,
        prev: if page_no > 1 {
            format!("?id={idq}&page={}", page_no - 1)
        } else {
            String::new()
        },
        next: if page_no < pages {
            format!("?id={idq}&page={}", page_no + 1)
        } else {
            String::new()
        },
    })
}

/// `GET /console/nodes` (`node.view`).
pub async fn nodes(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    nodes_page(&state, &s, &query, None).await
}

/// `POST /console/nodes/{id}/status` (`node.manage`): enable or disable.
pub async fn node_status(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::NodeManage)?;
    let status = form.get("status").map(String::as_str).unwrap_or("");
    let status = NodeStatus::from_request(status)?;
    state.exec.set_node_status(&s.caller, &id, status).await?;
    Ok(see_other("/console/nodes"))
}

/// `POST /console/nodes/enrolment-token` (`node.manage`): a new enrolment token, shown once
/// with the command to run on the new machine.
pub async fn enrolment_token(
    State(state): State<AppState>,
    s: Session,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::NodeManage)?;
    let node_id = form
        .get("node_id")
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    let token = state
        .exec
        .create_enrollment_token(
            &s.caller,
            NewEnrollmentToken {
                ttl_secs: None,
                uses: None,
                node_id: node_id.clone(),
            },
        )
        .await?;
    // The address the browser used: HTTP/2 names it in the URI, HTTP/1.1 in `Host`.
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("HOST:PORT");
    let mut command = format!(
        "haechi agent --server https://{host} --enroll-token {} --data-dir /var/lib/haechi-agent",
        token.token
    );
    if let Some(n) = &node_id {
        command.push_str(&format!(" --node-id {n}"));
    }
    if let Some(fp) = &state.http.tls_fingerprint {
        command.push_str(&format!(" --server-fingerprint {fp}"));
    }
    let expires = when(token.expires_at, state.http.utc_offset_secs);
    nodes_page(
        &state,
        &s,
        &HashMap::new(),
        Some((token.token, command, expires)),
    )
    .await
}

#[derive(Template)]
#[template(path = "console/tasks.html")]
struct Tasks {
    c: Chrome,
    rows: Vec<TaskLine>,
    total: i64,
    id_filter: String,
}

/// `GET /console/tasks` (`node.view`, as the API's task list).
pub async fn tasks(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::NodeView)?;
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let id_filter = opt(&query, "id");
    let listed = state
        .exec
        .list_tasks(
            &TaskFilter {
                id: id_filter.clone(),
                ..Default::default()
            },
            Paging {
                limit: 200,
                offset: 0,
            },
        )
        .await?;
    page(Tasks {
        c: Chrome::new(&state, &s, "tasks", l.t("nav_tasks").to_owned()),
        rows: listed.items.iter().map(|t| task_line(l, off, t)).collect(),
        total: listed.total,
        id_filter: id_filter.unwrap_or_default(),
    })
}

/// One line of a diff: `' '`, `'-'` or `'+'` and the text.
pub struct DiffLine {
    pub op: char,
    pub class: &'static str,
    pub text: String,
}

/// A line diff of `a` → `b` (longest common subsequence; fine for scripts of a few thousand
/// lines, larger inputs are compared as a whole replacement).
pub fn diff(a: &str, b: &str) -> Vec<DiffLine> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let line = |op: char, text: &str| DiffLine {
        op,
        class: match op {
            '-' => "del",
            '+' => "ins",
            _ => "same",
        },
        text: text.to_owned(),
    };
    if a.len() * b.len() > 4_000_000 {
        return a
            .iter()
            .map(|t| line('-', t))
            .chain(b.iter().map(|t| line('+', t)))
            .collect();
    }
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(line(' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(line('-', a[i]));
            i += 1;
        } else {
            out.push(line('+', b[j]));
            j += 1;
        }
    }
    out
}

pub struct TaskApprovalRow {
    pub line: TaskLine,
    pub q: String,
    pub requested_at: String,
    pub base: String,
    pub diff: Vec<DiffLine>,
    pub own: bool,
}

#[derive(Template)]
#[template(path = "console/approvals.html")]
struct Approvals {
    c: Chrome,
    waiting: Vec<WaitingStep>,
    tasks: Vec<TaskApprovalRow>,
    can_approve_tasks: bool,
}

/// `GET /console/approvals`: approval steps of running workflows, and tasks waiting for
/// approval with the diff to their last approved revision.
pub async fn approvals(State(state): State<AppState>, s: Session) -> Result<Response> {
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let p = s.principal();
    let active = if p.can(Permission::WorkflowView) {
        active_runs(&state, 200).await?
    } else {
        Vec::new()
    };
    let waiting = waiting_steps(&state, &s, &active).await?;
    let mut tasks = Vec::new();
    let can_approve_tasks = p.can(Permission::TaskApprove);
    if can_approve_tasks || p.can(Permission::NodeView) {
        for t in &requested_tasks(&state).await? {
            let approved = match state.exec.last_approved_revision(&t.id).await? {
                Some(no) if no != t.revision_no => {
                    Some(state.exec.get_task_revision(&t.id, no).await?)
                }
                _ => None,
            };
            let (base, old) = match &approved {
                Some(r) => (
                    format!("{} {}", l.t("revision"), r.revision_no),
                    r.script.as_str(),
                ),
                None => (l.t("none").to_owned(), ""),
            };
            tasks.push(TaskApprovalRow {
                line: task_line(l, off, t),
                q: q(&t.id),
                requested_at: when(t.updated_at, off),
                base,
                diff: diff(old, &t.script),
                own: t.apprv_requested_by == p.user_id,
            });
        }
    }
    page(Approvals {
        c: Chrome::new(&state, &s, "approvals", l.t("approvals").to_owned()),
        waiting,
        tasks,
        can_approve_tasks,
    })
}

/// `POST /console/approvals/tasks/{id}` (`task.approve`, as the API; the engine refuses an
/// approver who requested it).
pub async fn decide_task(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    let action = match form.get("decision").map(String::as_str) {
        Some("approve") => ApprovalAction::Approve,
        Some("reject") => ApprovalAction::Reject,
        _ => return Err(Error::field("decision", "must be approve or reject").into()),
    };
    s.require(Permission::TaskApprove)?;
    // The revision the approver was shown: a task changed since is refused (409), never
    // approved unseen (issue 18, item 5).
    let reviewed = form
        .get("revision")
        .and_then(|r| r.trim().parse::<i64>().ok())
        .ok_or_else(|| Error::field("revision", "must name the revision reviewed"))?;
    let comment = comment(&form);
    state
        .exec
        .task_approval(&s.caller, &id, action, Some(reviewed), comment)
        .await?;
    Ok(see_other("/console/approvals"))
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn diff_marks_removed_and_added_lines() {
        let d: Vec<String> = diff("a\nb\nc", "a\nx\nc\nd")
            .iter()
            .map(|l| format!("{}{}", l.op, l.text))
            .collect();
        assert_eq!(d, vec![" a", "-b", "+x", " c", "+d"]);
    }
}
