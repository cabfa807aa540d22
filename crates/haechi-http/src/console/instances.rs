//! A task instance (`/console/task-instances/{no}`): the grid of its nodes by status with exit
//! codes (filtered and paged on the server, so 1,000 nodes cost one page), each node's output,
//! re-run on a node, cancel. The output is read through a bounded window: the page asks for
//! the last part first and earlier parts on demand, so a 50 MiB output never reaches the
//! browser whole.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use haechi_exec::{ExecStatus, NodeExecFilter, Paging};
use haechi_identity::Permission;
use haechi_protocol::Stream;
use haechi_types::Error;

use super::{number, page, page_no, q, see_other, when_opt, Chrome, Lang, Result, Session, St};
use crate::extract::numeric_id;
use crate::AppState;

/// Bytes of output one request returns at most.
pub const WINDOW: i64 = 256 * 1024;
/// Nodes per page of the grid.
const PAGE: i64 = 100;

pub struct NodeRow {
    pub node_id: String,
    pub st: St,
    pub exit: String,
    pub exec_no: i64,
    pub started: String,
    pub ended: String,
    pub reason: String,
    pub link: String,
    pub selected: bool,
    pub running: bool,
}

/// One page of an instance's nodes; `base` is the query the node links start with.
pub async fn node_rows(
    state: &AppState,
    l: Lang,
    no: i64,
    status: Option<ExecStatus>,
    offset: i64,
    limit: i64,
    base: &str,
) -> Result<(Vec<NodeRow>, i64)> {
    let off = state.http.utc_offset_secs;
    let listed = state
        .exec
        .instance_nodes(
            no,
            &NodeExecFilter {
                status,
                ..Default::default()
            },
            Paging { limit, offset },
        )
        .await?;
    let sep = if base.ends_with('?') { "" } else { "&" };
    let rows = listed
        .items
        .iter()
        .map(|e| NodeRow {
            node_id: e.node_id.clone(),
            st: St::of_exec(l, e),
            exit: e.exit_cd.map(|c| c.to_string()).unwrap_or_default(),
            exec_no: e.exec_no,
            started: when_opt(e.start_at, off),
            ended: when_opt(e.end_at, off),
            reason: e.reason.clone().unwrap_or_default(),
            link: format!("{base}{sep}node={}", q(&e.node_id)),
            selected: false,
            running: !e.status.is_final(),
        })
        .collect();
    Ok((rows, listed.total))
}

/// The output viewer of one node execution; the script fills it from [`output`].
#[derive(Template)]
#[template(path = "console/output.html")]
pub struct OutputPanel {
    pub l: Lang,
    pub node: String,
    pub src: String,
}

impl OutputPanel {
    pub fn new(l: Lang, no: i64, node: &str, exec_no: Option<i64>) -> OutputPanel {
        let mut src = format!("/console/task-instances/{no}/nodes/{}/output", q(node));
        if let Some(n) = exec_no {
            src.push_str(&format!("?execNo={n}"));
        }
        OutputPanel {
            l,
            node: node.to_owned(),
            src,
        }
    }
}

struct StatusLink {
    label: &'static str,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "console/instance.html")]
struct InstancePage {
    c: Chrome,
    no: i64,
    task_id: String,
    revision: i64,
    runner: String,
    arguments: String,
    started: String,
    ended: String,
    origin: String,
    filters: Vec<StatusLink>,
    rows: Vec<NodeRow>,
    total: i64,
    page_no: i64,
    pages: i64,
    prev: String,
    next: String,
    can_execute: bool,
    any_running: bool,
    output: String,
    /// The selected node's executions (execNo 1, 2, ...), and the one shown.
    history: Vec<HistoryRow>,
    shown_exec: i64,
}

/// One execution of the selected node (its re-run history).
pub struct HistoryRow {
    pub exec_no: i64,
    pub st: St,
    pub exit: String,
    pub started: String,
    pub ended: String,
    pub runner: String,
    pub reason: String,
    pub link: String,
}

fn status_param(v: Option<&String>) -> Result<Option<ExecStatus>> {
    match v.map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => Ok(Some(
            ExecStatus::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
                Error::field(
                    "status",
                    format_args!("must be WAIT, RUN, END, TIMEOUT, CANCEL or LOST (got {s:?})"),
                )
            })?,
        )),
    }
}

/// `GET /console/task-instances/{no}` (`node.view`, as the API's instance read).
pub async fn page_get(
    State(state): State<AppState>,
    s: Session,
    Path(no): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::NodeView)?;
    let no = numeric_id("task instance", &no)?;
    let inst = state.exec.get_instance(no).await?;
    let status = status_param(query.get("status"))?;
    let page_no = page_no(&query)?;
    let l = s.lang;
    let status_q = status.map(|s| s.as_str()).unwrap_or("");
    let base = format!("?status={status_q}&page={page_no}");
    let (mut rows, total) =
        node_rows(&state, l, no, status, (page_no - 1) * PAGE, PAGE, &base).await?;
    let node = query.get("node").cloned().filter(|n| !n.is_empty());
    for r in &mut rows {
        r.selected = node.as_deref() == Some(r.node_id.as_str());
    }
    let exec_no = number(&query, "execNo", 1)?;
    let off = state.http.utc_offset_secs;
    let (output, history, shown_exec) = match &node {
        Some(n) => {
            // 404 for a node that is not in the instance (or an execNo it does not have).
            let shown = state.exec.node_execution(no, n, exec_no).await?;
            let history = state
                .exec
                .node_execution_history(no, n)
                .await?
                .iter()
                .map(|e| HistoryRow {
                    exec_no: e.exec_no,
                    st: St::of_exec(l, e),
                    exit: e.exit_cd.map(|c| c.to_string()).unwrap_or_default(),
                    started: when_opt(e.start_at, off),
                    ended: when_opt(e.end_at, off),
                    runner: e.runner_id.clone(),
                    reason: e.reason.clone().unwrap_or_default(),
                    link: format!(
                        "?status={status_q}&page={page_no}&node={}&execNo={}",
                        q(n),
                        e.exec_no
                    ),
                })
                .collect();
            (
                OutputPanel::new(l, no, n, exec_no).render()?,
                history,
                shown.exec_no,
            )
        }
        None => (String::new(), Vec::new(), 0),
    };
    let mut filters = vec![StatusLink {
        label: l.t("all"),
        href: "?".to_owned(),
        current: status.is_none(),
    }];
    for st in ExecStatus::ALL {
        filters.push(StatusLink {
            label: St::of(l, st.as_str()).word,
            href: format!("?status={}", st.as_str()),
            current: status == Some(st),
        });
    }
    let pages = ((total + PAGE - 1) / PAGE).max(1);
    let link = |p: i64| format!("?status={status_q}&page={p}");
    let any_running = inst.end_at.is_none();
    page(InstancePage {
        c: Chrome::new(
            &state,
            &s,
            "tasks",
            format!("{} #{no}", l.t("task_instance")),
        ),
        no,
        task_id: inst.task_id.clone(),
        revision: inst.revision_no,
        runner: inst.runner_id.clone(),
        arguments: inst.arguments.join(" "),
        started: when_opt(Some(inst.start_at), off),
        ended: when_opt(inst.end_at, off),
        origin: inst.origin.clone().unwrap_or_default(),
        filters,
        rows,
        total,
        page_no,
        pages,
        prev: if page_no > 1 {
            link(page_no - 1)
        } else {
            String::new()
        },
        next: if page_no < pages {
            link(page_no + 1)
        } else {
            String::new()
        },
        can_execute: s.principal().can(Permission::TaskExecute),
        any_running,
        output,
        history,
        shown_exec,
    })
}

/// Cuts `data` (read from byte `start`) to whole UTF-8 characters: drops a partial character
/// at either end and returns the new start and end offsets with the text. Bytes that are not
/// UTF-8 inside are shown as U+FFFD.
pub fn whole_chars(data: &[u8], start: i64, at_start_of_output: bool) -> (i64, i64, String) {
    let mut from = 0usize;
    if !at_start_of_output {
        // Continuation bytes (10xxxxxx) belong to a character that began before.
        while from < data.len() && from < 3 && (data[from] & 0xC0) == 0x80 {
            from += 1;
        }
    }
    let mut to = data.len();
    // A lead byte near the end whose character is incomplete.
    for back in 1..=3.min(to - from) {
        let b = data[to - back];
        if b & 0xC0 == 0xC0 {
            let need = if b >= 0xF0 {
                4
            } else if b >= 0xE0 {
                3
            } else {
                2
            };
            if back < need {
                to -= back;
            }
            break;
        }
        if b & 0x80 == 0 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&data[from..to]).into_owned();
    (start + from as i64, start + to as i64, text)
}

/// `GET /console/task-instances/{no}/nodes/{node}/output?stream=out|err&from=N|before=N&execNo=`
/// (`node.view`): at most [`WINDOW`] bytes as text. Without `from` or `before`, the last
/// window; `before=N` the window that ends at N (loading earlier parts); `from=N` what follows
/// N (following).
pub async fn output(
    State(state): State<AppState>,
    s: Session,
    Path((no, node)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::NodeView)?;
    let no = numeric_id("task instance", &no)?;
    let num = |k: &str| number(&query, k, 0);
    let exec_no = number(&query, "execNo", 1)?;
    let stream = match query.get("stream").map(String::as_str) {
        None | Some("out") => Stream::Out,
        Some("err") => Stream::Err,
        Some(other) => {
            return Err(
                Error::field("stream", format_args!("must be out or err (got {other:?})")).into(),
            )
        }
    };
    let e = state.exec.node_execution(no, &node, exec_no).await?;
    let len = match stream {
        Stream::Out => e.out_len,
        Stream::Err => e.err_len,
    };
    let (from, upto) = match (num("from")?, num("before")?) {
        (Some(f), _) => (f.min(len), None),
        (None, Some(b)) => {
            let b = b.min(len);
            ((b - WINDOW).max(0), Some(b))
        }
        (None, None) => ((len - WINDOW).max(0), None),
    };
    let slice = state
        .exec
        .read_output_from(e.exec_id, stream, from, WINDOW)
        .await?;
    let mut data = slice.data;
    let cap = match upto {
        Some(b) => (b - from).max(0) as usize,
        None => WINDOW as usize,
    };
    data.truncate(cap);
    let (start, next, text) = whole_chars(&data, from, from == 0);
    let done = e.status.is_final() && next >= len;
    let body = serde_json::json!({
        "start": start,
        "next": next,
        "len": len,
        "text": text,
        "done": done,
        "status": e.status.as_str(),
        "execNo": e.exec_no,
        "exitCd": e.exit_cd,
        "truncated": e.truncated,
    });
    Ok(axum::Json(body).into_response())
}

/// `POST /console/task-instances/{no}/nodes/{node}/rerun` (`task.execute`, as the API).
pub async fn rerun(
    State(state): State<AppState>,
    s: Session,
    Path((no, node)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    s.require(Permission::TaskExecute)?;
    let no = numeric_id("task instance", &no)?;
    state.exec.rerun_node(&s.caller, no, &node).await?;
    Ok(see_other(&format!(
        "/console/task-instances/{no}?node={}",
        q(&node)
    )))
}

/// `POST /console/task-instances/{no}/cancel` (`task.execute`, as the API): the whole
/// instance, or the node named by the field `node`.
pub async fn cancel(
    State(state): State<AppState>,
    s: Session,
    Path(no): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::TaskExecute)?;
    let no = numeric_id("task instance", &no)?;
    let node = form.get("node").map(|n| n.trim()).filter(|n| !n.is_empty());
    state.exec.cancel(Some(&s.caller.actor), no, node).await?;
    Ok(see_other(&format!("/console/task-instances/{no}")))
}

#[cfg(test)]
mod tests {
    use super::whole_chars;

    #[test]
    fn windows_cut_at_whole_characters() {
        let text = "가나다".as_bytes(); // 3 bytes each
                                        // A window that starts inside 가 and ends inside 다.
        let (start, end, t) = whole_chars(&text[1..8], 1, false);
        assert_eq!((start, end, t.as_str()), (3, 6, "나"));
        let (start, end, t) = whole_chars(text, 0, true);
        assert_eq!((start, end, t.as_str()), (0, 9, "가나다"));
        let (_, _, t) = whole_chars(b"a\xffb", 0, true);
        assert_eq!(t, "a\u{fffd}b");
    }
}
