//! The run page (`/console/executions/{id}`): the flowchart and the list of the same steps,
//! live over Server-Sent Events (pushed when the engine records a transition, not polled),
//! pause / resume / stop, approve / reject with a comment, and each task step's log per node.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use haechi_identity::Permission;
use haechi_types::time::now_ms;
use haechi_types::Error;
use haechi_workflow::definition::Action;
use haechi_workflow::{Control, Decision, DecisionRequest, ExecutionView, RunStatus};

use super::instances::{node_rows, NodeRow, OutputPanel};
use super::{
    comment, dag, page as html_page, q, see_other, span, when, when_opt, Chrome, Lang, Result,
    Session, St,
};
use crate::AppState;

/// How long one wait for a transition lasts before the stream sends a keep-alive and checks
/// the session again.
const LIVE_WAIT: Duration = Duration::from_secs(15);

pub struct DecisionShown {
    pub word: &'static str,
    pub by: String,
    pub at: String,
    pub comment: String,
}

pub struct StepRow {
    pub name: String,
    /// The name in a query string.
    pub q: String,
    pub kind: String,
    pub st: St,
    pub attempts: i64,
    pub started: String,
    pub ended: String,
    pub error: String,
    pub instance: Option<i64>,
    /// A workflow step's child execution (linked).
    pub child: Option<String>,
    pub decision: Option<DecisionShown>,
    /// Waiting for a decision that this user may make.
    pub can_decide: bool,
    pub role: String,
    pub selected: bool,
}

/// The part of the run page that the live stream replaces.
#[derive(Template)]
#[template(path = "console/run_live.html")]
pub struct RunLive {
    pub l: Lang,
    pub csrf: String,
    pub id: String,
    pub st: St,
    pub progress: u8,
    pub current_step: String,
    pub elapsed: String,
    pub ended: String,
    pub error: String,
    pub can_pause: bool,
    pub can_resume: bool,
    pub can_stop: bool,
    pub svg: String,
    pub steps: Vec<StepRow>,
}

async fn render_live(
    state: &AppState,
    l: Lang,
    csrf: &str,
    p: &haechi_identity::Principal,
    view: &ExecutionView,
    selected: Option<&str>,
) -> Result<String> {
    let off = state.http.utc_offset_secs;
    let doc = state
        .workflows
        .get_workflow(&view.wf_id, Some(view.version))
        .await?;
    let def = &doc.definition;
    let status: Vec<Option<St>> = view
        .steps
        .iter()
        .map(|s| Some(St::of(l, s.status.as_str())))
        .collect();
    let svg = dag::svg(def, &status, l.t("graph_desc"), true);
    let running = !view.status.is_final();
    let steps = view
        .steps
        .iter()
        .zip(&def.steps)
        .map(|(s, d)| {
            let role = match &d.action {
                Action::Approval { role } => role.clone(),
                _ => String::new(),
            };
            let awaiting = running
                && !role.is_empty()
                && s.status == haechi_workflow::StepStatus::Running
                && s.decision.is_none();
            StepRow {
                name: s.name.clone(),
                q: q(&s.name),
                kind: s.kind.clone(),
                st: St::of(l, s.status.as_str()),
                attempts: s.attempts,
                started: when_opt(s.started_at, off),
                ended: when_opt(s.ended_at, off),
                error: s.error.clone().unwrap_or_default(),
                instance: s.task_instance_no,
                child: s.child_execution_id.clone(),
                decision: s.decision.as_ref().map(|d| DecisionShown {
                    word: match d.action {
                        Decision::Approve => l.t("Approve"),
                        Decision::Reject => l.t("Reject"),
                    },
                    by: d.by.clone(),
                    at: when(d.at, off),
                    comment: d.comment.clone().unwrap_or_default(),
                }),
                can_decide: awaiting && p.roles.iter().any(|r| r.name == role),
                role,
                selected: selected == Some(s.name.as_str()),
            }
        })
        .collect();
    let control = p.can(Permission::WorkflowControl);
    let end = view.ended_at.unwrap_or_else(now_ms);
    let live = RunLive {
        l,
        csrf: csrf.to_owned(),
        id: view.execution_id.clone(),
        st: St::of(l, view.status.as_str()),
        progress: view.progress,
        current_step: view.current_step.clone(),
        elapsed: span(end - view.created_at),
        ended: when_opt(view.ended_at, off),
        error: view.error.clone().unwrap_or_default(),
        can_pause: control && view.status == RunStatus::Running,
        can_resume: control && view.status == RunStatus::Paused,
        can_stop: control && running,
        svg,
        steps,
    };
    Ok(live.render()?)
}

/// The node table of the chosen task step: what the live stream re-sends as its nodes change.
pub struct StepNodes {
    pub step: String,
    pub instance: i64,
    pub nodes: Vec<NodeRow>,
    pub total: i64,
}

#[derive(Template)]
#[template(path = "console/step_nodes.html")]
pub struct StepNodesPart {
    pub l: Lang,
    pub g: Option<StepNodes>,
    /// Whether the user may see nodes at all (`node.view`).
    pub may_see_nodes: bool,
}

/// The task step whose nodes the page shows: the one asked for, else the latest task step
/// that has a task instance.
fn chosen_step(view: &ExecutionView, asked: Option<&str>) -> Option<(String, Option<i64>)> {
    match asked {
        Some(name) => view
            .steps
            .iter()
            .find(|st| st.name == name)
            .map(|st| (st.name.clone(), st.task_instance_no)),
        None => view
            .steps
            .iter()
            .rev()
            .find(|st| st.task_instance_no.is_some())
            .map(|st| (st.name.clone(), st.task_instance_no)),
    }
}

/// The node table of step `name`'s task instance `no` (the first 200 nodes; the instance page
/// has them all), with `node` marked.
async fn step_nodes(
    state: &AppState,
    l: Lang,
    name: &str,
    no: i64,
    node: Option<&str>,
) -> Result<StepNodes> {
    let (mut nodes, total) =
        node_rows(state, l, no, None, 0, 200, &format!("?step={}", q(name))).await?;
    for n in &mut nodes {
        n.selected = node == Some(n.node_id.as_str());
    }
    Ok(StepNodes {
        step: name.to_owned(),
        instance: no,
        nodes,
        total,
    })
}

#[derive(Template)]
#[template(path = "console/run.html")]
struct RunPage {
    c: Chrome,
    id: String,
    wf_id: String,
    workflow_name: String,
    version: i64,
    started_by: String,
    created: String,
    /// A child execution's parent (linked).
    parent: Option<String>,
    params: Vec<(String, String)>,
    live_html: String,
    live_src: String,
    nodes_html: String,
    output: String,
}

/// `GET /console/executions/{id}` (`workflow.view`, as `GET /api/v1/executions/{id}`).
pub async fn page_handler(
    state: &AppState,
    s: &Session,
    id: &str,
    query: &HashMap<String, String>,
) -> Result<Response> {
    s.require(Permission::WorkflowView)?;
    let view = state.workflows.execution(id).await?;
    let p = s.principal();
    let asked = query.get("step").map(String::as_str);
    let chosen = chosen_step(&view, asked);
    let selected = chosen.as_ref().map(|(n, _)| n.clone());
    let live_html = render_live(state, s.lang, &s.csrf, p, &view, selected.as_deref()).await?;
    let may_see_nodes = p.can(Permission::NodeView);
    let mut g = None;
    let mut output = String::new();
    if let (true, Some((name, Some(no)))) = (may_see_nodes, &chosen) {
        let node = query.get("node").map(String::as_str);
        let part = step_nodes(state, s.lang, name, *no, node).await?;
        let shown = node
            .map(str::to_owned)
            .or_else(|| part.nodes.first().map(|n| n.node_id.clone()));
        if let Some(n) = shown {
            output = OutputPanel::new(s.lang, *no, &n, None).render()?;
        }
        g = Some(part);
    }
    let nodes_html = StepNodesPart {
        l: s.lang,
        g,
        may_see_nodes,
    }
    .render()?;
    let mut live_src = format!("/console/executions/{}/live", q(&view.execution_id));
    let mut sep = '?';
    for k in ["step", "node"] {
        if let Some(v) = query.get(k) {
            live_src.push_str(&format!("{sep}{k}={}", q(v)));
            sep = '&';
        }
    }
    let title = format!("{} · {}", view.workflow_name, view.execution_id);
    html_page(RunPage {
        c: Chrome::new(state, s, "executions", title),
        id: view.execution_id.clone(),
        wf_id: view.wf_id.clone(),
        workflow_name: view.workflow_name.clone(),
        version: view.version,
        started_by: view.started_by.clone(),
        created: when(view.created_at, state.http.utc_offset_secs),
        parent: view.parent_execution_id.clone(),
        params: view.params.clone().into_iter().collect(),
        live_html,
        live_src,
        nodes_html,
        output,
    })
}

pub async fn page(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    page_handler(&state, &s, &id, &query).await
}

struct Live {
    state: AppState,
    s: Session,
    id: String,
    after: i64,
    first: bool,
    opened_at: i64,
    /// 0 running, 1 the final state was sent (send `end` next), 2 done.
    phase: u8,
    /// The step the page asked for (else the latest task step, as the page chooses).
    step: Option<String>,
    /// The node the page marks in the table.
    node: Option<String>,
    /// The task step whose nodes are followed, and its task instance.
    following: Option<(String, i64)>,
    /// The node table last sent (sent again only when it changed).
    nodes_sent: String,
    /// Whether the followed instance still has nodes that have not ended.
    nodes_active: bool,
    /// Events ready to go out before the next wait.
    queue: std::collections::VecDeque<Event>,
}

/// How often the node table of a running task step is checked (node states are not workflow
/// transitions, so they do not wake the stream).
const NODES_POLL: Duration = Duration::from_millis(400);

/// SSE lines end at CR or LF; a CR inside text is kept as its character reference.
fn html_event(name: &str, html: &str) -> Event {
    Event::default()
        .event(name)
        .data(html.replace('\r', "&#13;"))
}

impl Live {
    /// Queues a `nodes` event when the followed step's node table changed.
    async fn check_nodes(&mut self) {
        let Some((name, no)) = self.following.clone() else {
            self.nodes_active = false;
            return;
        };
        let node = self.node.clone();
        let Ok(part) = step_nodes(&self.state, self.s.lang, &name, no, node.as_deref()).await
        else {
            return;
        };
        self.nodes_active = part.nodes.iter().any(|n| n.running);
        let html = StepNodesPart {
            l: self.s.lang,
            g: Some(part),
            may_see_nodes: true,
        }
        .render()
        .unwrap_or_default();
        if html != self.nodes_sent {
            self.queue.push_back(html_event("nodes", &html));
            self.nodes_sent = html;
        }
    }
}

/// `GET /console/executions/{id}/live[?step=NAME]`: an event stream; each `live` event is the
/// new HTML of the run's live part, sent as soon as the engine records a transition; each
/// `nodes` event the new node table of the task step the page shows (checked every 400 ms
/// while its nodes run, for users with `node.view`). `end` when the run has ended (or the
/// session has).
pub async fn live(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::WorkflowView)?;
    state.workflows.status(&id).await?;
    let start = Live {
        state,
        s,
        id,
        after: 0,
        first: true,
        opened_at: now_ms(),
        phase: 0,
        step: query.get("step").cloned(),
        node: query.get("node").cloned(),
        following: None,
        nodes_sent: String::new(),
        nodes_active: false,
        queue: Default::default(),
    };
    let stream = futures::stream::unfold(start, |mut ctx| async move {
        loop {
            if let Some(ev) = ctx.queue.pop_front() {
                return Some((Ok::<_, Infallible>(ev), ctx));
            }
            match ctx.phase {
                2 => return None,
                1 => {
                    ctx.phase = 2;
                    return Some((Ok(Event::default().event("end").data("end")), ctx));
                }
                _ => {}
            }
            // The stream is no use of the session: it ends when the session would idle out
            // (the page's own timer warns first), and at once when the token is revoked
            // (logout, password change, user disabled).
            let idle_ms = ctx.state.identity.config().token_idle_secs as i64 * 1000;
            let valid = now_ms() - ctx.opened_at < idle_ms
                && ctx
                    .state
                    .identity
                    .session_alive(&ctx.s.token, ctx.s.caller.ip())
                    .await
                    .is_ok();
            if !valid {
                ctx.phase = 2;
                return Some((Ok(Event::default().event("end").data("session")), ctx));
            }
            let wait = if ctx.first {
                Duration::ZERO
            } else if ctx.nodes_active {
                NODES_POLL
            } else {
                LIVE_WAIT
            };
            let events = match ctx.state.workflows.events(&ctx.id, ctx.after, wait).await {
                Ok(p) => p,
                Err(_) => {
                    ctx.phase = 2;
                    return Some((Ok(Event::default().event("end").data("gone")), ctx));
                }
            };
            let fresh = ctx.first || !events.events.is_empty() || events.status.is_final();
            let first = ctx.first;
            ctx.first = false;
            ctx.after = events.next;
            let may_see_nodes = ctx.s.principal().can(Permission::NodeView);
            if fresh {
                let view = match ctx.state.workflows.execution(&ctx.id).await {
                    Ok(v) => v,
                    Err(_) => {
                        ctx.phase = 2;
                        return Some((Ok(Event::default().event("end").data("gone")), ctx));
                    }
                };
                let chosen = chosen_step(&view, ctx.step.as_deref());
                ctx.following = match chosen {
                    Some((name, Some(no))) if may_see_nodes => Some((name, no)),
                    _ => None,
                };
                let html = render_live(
                    &ctx.state,
                    ctx.s.lang,
                    &ctx.s.csrf,
                    ctx.s.principal(),
                    &view,
                    ctx.following.as_ref().map(|(n, _)| n.as_str()),
                )
                .await
                .ok();
                let Some(h) = html else {
                    ctx.phase = 2;
                    return Some((Ok(Event::default().event("end").data("gone")), ctx));
                };
                if view.status.is_final() {
                    ctx.phase = 1;
                }
                if first {
                    // The page was rendered with the node table as of now: remember it
                    // (dropping the event), so that only changes are sent.
                    ctx.check_nodes().await;
                    ctx.queue.clear();
                    ctx.queue.push_back(html_event("live", &h));
                    continue;
                }
                ctx.queue.push_back(html_event("live", &h));
            }
            ctx.check_nodes().await;
            if ctx.queue.is_empty() && !fresh && !ctx.nodes_active {
                return Some((Ok(Event::default().comment("waiting")), ctx));
            }
        }
    });
    let mut res = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    res.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

fn back_to(id: &str) -> String {
    format!("/console/executions/{}", q(id))
}

/// `POST /console/executions/{id}/control` (`workflow.control`, as the API's control).
pub async fn control(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::WorkflowControl)?;
    let action = form
        .get("action")
        .and_then(|a| Control::parse(a))
        .ok_or_else(|| Error::field("action", "must be stop, pause or resume"))?;
    state.workflows.control(&s.caller, &id, action).await?;
    Ok(see_other(&back_to(&id)))
}

/// `POST /console/executions/{id}/steps/{step}/decision`: approve or reject an approval step
/// (a holder of its role only, as the API).
pub async fn decide(
    State(state): State<AppState>,
    s: Session,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    let decision = form
        .get("decision")
        .and_then(|d| Decision::parse(d))
        .ok_or_else(|| Error::field("decision", "must be approve or reject"))?;
    let comment = comment(&form);
    state
        .workflows
        .decide(
            &s.caller,
            &id,
            DecisionRequest {
                step,
                decision,
                comment,
            },
        )
        .await?;
    Ok(see_other(&back_to(&id)))
}
