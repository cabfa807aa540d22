//! The web console (issue 21, CONTRACT §8): server-rendered pages under `/console/`, served by
//! the same router on the same port as the APIs. Design notes: docs/console.md.
//!
//! - `session`: login, logout, the session cookie (an identity token), CSRF tokens, language.
//! - `pages`: the dashboard and the lists (runs, workflows, tasks, approvals, nodes).
//! - `run`: the run page, its live updates over Server-Sent Events, controls and decisions.
//! - `instances`: a task instance's node grid, re-run, cancel, and the output window.
//! - `editor`: the workflow definition editor (errors at their line), version diff, restore.
//! - `dag`: the flowchart of a workflow, drawn as SVG on the server.
//! - `vault`, `vault_credential`: the credential vault (lockers, credentials, masked values
//!   with Reveal and Copy, unseal).
//! - `assets`: the script and style sheet, embedded in the binary.
//! - `users`: users, roles, and the user's own account (password, sessions).
//!
//! Every action calls the same engine function as its API twin, after the same permission
//! check; the engine writes the audit event (family `console`).

mod assets;
mod audit;
mod dag;
mod db;
mod editor;
mod i18n;
mod instances;
mod pages;
mod run;
mod session;
mod tasks;
mod users;
mod vault;
mod vault_credential;

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use haechi_identity::Permission;
use haechi_types::{Code, Error};

pub use i18n::Lang;
pub use session::Session;

use crate::AppState;

/// The audit family of what the console does.
pub const FAMILY: haechi_audit::Family = haechi_audit::Family::Console;

/// The console's routes (merged into the one router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(session_routes())
        .merge(run_routes())
        .merge(operation_routes())
        .merge(user_routes())
        .merge(db_routes())
        .merge(vault_routes())
        .route("/console/{*rest}", get(unknown).post(unknown))
        .layer(axum::middleware::from_fn(frame))
}

/// The dashboard, login and logout, language, keep-alive and the embedded assets.
fn session_routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(pages::dashboard))
        .route(
            "/console/login",
            get(session::login_page).post(session::login_submit),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/lang", post(session::set_lang))
        .route("/console/keepalive", post(session::keepalive))
        .route("/console/assets/{name}", get(assets::serve))
}

/// Runs: executions and their live pages, workflows and their editor, task instances.
fn run_routes() -> Router<AppState> {
    Router::new()
        .route("/console/executions", get(pages::executions))
        .route("/console/executions/{id}", get(run::page))
        .route("/console/executions/{id}/live", get(run::live))
        .route("/console/executions/{id}/control", post(run::control))
        .route(
            "/console/executions/{id}/steps/{step}/decision",
            post(run::decide),
        )
        .route("/console/workflows", get(pages::workflows))
        .route("/console/workflows/{id}", get(pages::workflow))
        .route("/console/workflows/{id}/run", post(pages::run_workflow))
        .route("/console/task-instances/{no}", get(instances::page_get))
        .route(
            "/console/task-instances/{no}/nodes/{node}/output",
            get(instances::output),
        )
        .route(
            "/console/task-instances/{no}/nodes/{node}/rerun",
            post(instances::rerun),
        )
        .route(
            "/console/task-instances/{no}/cancel",
            post(instances::cancel),
        )
        .route("/console/workflows/{id}/definition", post(editor::save))
        .route(
            "/console/workflows/{id}/versions/{version}/restore",
            post(editor::restore),
        )
}

/// Nodes, tasks and approvals.
fn operation_routes() -> Router<AppState> {
    Router::new()
        .route("/console/nodes", get(pages::nodes))
        .route("/console/nodes/{id}/status", post(pages::node_status))
        .route(
            "/console/nodes/enrolment-token",
            post(pages::enrolment_token),
        )
        .route("/console/tasks", get(pages::tasks))
        .route("/console/tasks/{id}", get(tasks::page_get))
        .route(
            "/console/tasks/{id}/approval",
            post(tasks::request_approval),
        )
        .route("/console/tasks/{id}/run", post(tasks::run))
        .route("/console/approvals", get(pages::approvals))
        .route("/console/approvals/tasks/{id}", post(pages::decide_task))
}

/// Users, roles and the user's own account.
fn user_routes() -> Router<AppState> {
    Router::new()
        .route("/console/users", get(users::list).post(users::create))
        .route(
            "/console/users/{user_id}",
            get(users::show).post(users::update),
        )
        .route("/console/users/{user_id}/state", post(users::set_state))
        .route(
            "/console/users/{user_id}/password",
            post(users::set_password),
        )
        .route(
            "/console/users/{user_id}/tokens/{id}/revoke",
            post(users::revoke_token),
        )
        .route("/console/roles", get(users::roles).post(users::create_role))
        .route("/console/roles/{role}", post(users::update_role))
        .route("/console/account", get(users::account))
        .route("/console/account/password", post(users::change_password))
        .route(
            "/console/account/tokens/{id}/revoke",
            post(users::revoke_own_token),
        )
}

/// DB access (issue 23 item 2) and the audit log (item 4).
fn db_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/console/db/policies",
            get(db::policies).post(db::save_policy),
        )
        .route("/console/db/policies/new", get(db::new_policy))
        .route("/console/db/policies/lock", post(db::lock_filtered))
        .route("/console/db/policies/unlock", post(db::unlock_filtered))
        .route(
            "/console/db/policies/{index}",
            get(db::edit_policy).post(db::save_policy),
        )
        .route(
            "/console/db/policies/{index}/delete",
            post(db::delete_policy),
        )
        .route("/console/db/policies/{index}/{action}", post(db::lock_one))
        .route(
            "/console/db/targets",
            get(db::targets).post(db::create_target),
        )
        .route("/console/db/targets/{name}/delete", post(db::delete_target))
        .route(
            "/console/db/targets/{name}/accounts",
            post(db::create_account),
        )
        .route(
            "/console/db/targets/{name}/accounts/{account}/delete",
            post(db::delete_account),
        )
        .route("/console/db/sessions/{id}/end", post(db::end_session))
        .route(
            "/console/db/simulate",
            get(db::simulate_form).post(db::simulate),
        )
        .route("/console/audit", get(audit::list))
        .route("/console/audit/export.csv", get(audit::export))
        .route("/console/audit/verify", post(audit::verify))
        .route("/console/audit/{seq}", get(audit::event))
}

/// The credential vault: lockers, credentials and their values, unseal.
fn vault_routes() -> Router<AppState> {
    Router::new()
        .route("/console/vault", get(vault::index))
        .route("/console/vault/unseal", post(vault::unseal))
        .route("/console/vault/mode", post(vault::set_mode))
        .route("/console/vault/lockers", post(vault::create_locker))
        .route(
            "/console/vault/lockers/{id}",
            get(vault::locker).post(vault::update_locker),
        )
        .route(
            "/console/vault/lockers/{id}/delete",
            post(vault::delete_locker),
        )
        .route(
            "/console/vault/lockers/{id}/members",
            post(vault::set_member),
        )
        .route(
            "/console/vault/lockers/{id}/members/{user}/remove",
            post(vault::remove_member),
        )
        .route(
            "/console/vault/lockers/{id}/consumers",
            post(vault::add_consumer),
        )
        .route(
            "/console/vault/lockers/{id}/consumers/{role}/remove",
            post(vault::remove_consumer),
        )
        .route(
            "/console/vault/lockers/{id}/credentials",
            post(vault::add_credential),
        )
        .route(
            "/console/vault/lockers/{id}/credentials/{cid}/remove",
            post(vault::remove_credential),
        )
        .route("/console/vault/credentials", post(vault_credential::create))
        .route(
            "/console/vault/credentials/{id}",
            get(vault_credential::page_get).post(vault_credential::update),
        )
        .route(
            "/console/vault/credentials/{id}/owner",
            post(vault_credential::transfer),
        )
        .route(
            "/console/vault/credentials/{id}/locker",
            post(vault_credential::put_in_locker),
        )
        .route(
            "/console/vault/credentials/{id}/delete",
            post(vault_credential::delete),
        )
        .route(
            "/console/vault/credentials/{id}/values",
            post(vault_credential::create_value),
        )
        .route(
            "/console/vault/credentials/{id}/values/{vid}",
            post(vault_credential::update_value),
        )
        .route(
            "/console/vault/credentials/{id}/values/{vid}/delete",
            post(vault_credential::delete_value),
        )
        .route(
            "/console/vault/credentials/{id}/values/{vid}/reveal",
            post(vault_credential::reveal),
        )
}

/// `GET /`: the console.
pub async fn root() -> Redirect {
    Redirect::to("/console/")
}

async fn unknown() -> Fail {
    Fail(Error::not_found("no such console page"))
}

/// A failed console request: rendered as an HTML page in the user's language by [`frame`].
#[derive(Debug)]
pub struct Fail(pub Error);

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail(e)
    }
}

impl From<askama::Error> for Fail {
    fn from(e: askama::Error) -> Self {
        Fail(Error::internal(format_args!("console template: {e}")))
    }
}

#[derive(Clone)]
struct Failed(Arc<Error>);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = status.into_response();
        res.extensions_mut().insert(Failed(Arc::new(self.0)));
        res
    }
}

pub type Result<T> = std::result::Result<T, Fail>;

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    l: Lang,
    status: u16,
    message: &'a str,
}

/// The console's outer layer: security headers on every answer, and every error (a handler's
/// [`Fail`], or the framework's own 4xx) as a page in the user's language.
async fn frame(req: Request, next: Next) -> Response {
    let lang = Lang::of_headers(req.headers());
    let mut res = next.run(req).await;
    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        let is_html = res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
        let failed = res.extensions_mut().remove::<Failed>();
        if failed.is_some() || !is_html {
            let e = failed.map(|f| (*f.0).clone()).unwrap_or_else(|| {
                Error::new(
                    if status == StatusCode::NOT_FOUND {
                        Code::NotFound
                    } else {
                        Code::InvalidRequest
                    },
                    format!("{status}"),
                )
            });
            let message = match e.code {
                Code::Forbidden | Code::IpNotAllowed if e.message == session::CSRF_FAILED => {
                    lang.t("csrf_failed").to_owned()
                }
                Code::Forbidden | Code::IpNotAllowed => {
                    format!("{} ({})", lang.t("forbidden"), e.message)
                }
                _ => e.message.clone(),
            };
            let page = ErrorPage {
                l: lang,
                status: status.as_u16(),
                message: &message,
            };
            let body = page.render().unwrap_or_else(|_| message.clone());
            let mut out = (status, Html(body)).into_response();
            out.headers_mut().extend(
                res.headers()
                    .iter()
                    .filter(|(k, _)| *k == header::SET_COOKIE)
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            res = out;
        }
    }
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A rendered page.
pub fn page<T: Template>(t: T) -> Result<Response> {
    Ok(Html(t.render()?).into_response())
}

/// 303 to `to` (after a POST).
pub fn see_other(to: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A status as the console shows it: an icon, the word in the user's language, and the code
/// (never colour alone; the class only adds colour).
#[derive(Debug, Clone)]
pub struct St {
    pub code: &'static str,
    pub word: &'static str,
    pub icon: &'static str,
    pub class: &'static str,
}

impl St {
    pub fn of(l: Lang, code: &'static str) -> St {
        let (ko, icon, class) = match code {
            "RUNNING" => ("실행 중", "▶", "run"),
            "RUN" => ("실행 중", "▶", "run"),
            "PAUSED" => ("일시정지", "⏸", "wait"),
            "COMPLETED" => ("완료", "✔", "ok"),
            "SUCCEEDED" => ("성공", "✔", "ok"),
            "END" => ("종료", "✔", "ok"),
            "FAILED" => ("실패", "✖", "bad"),
            "TIMEOUT" => ("시간 초과", "⌛", "bad"),
            "LOST" => ("유실", "⚠", "bad"),
            "STOPPED" => ("중지됨", "■", "off"),
            "CANCEL" => ("취소됨", "■", "off"),
            "SKIPPED" => ("건너뜀", "↷", "off"),
            "WAITING" => ("대기", "○", "wait"),
            "WAIT" => ("대기", "○", "wait"),
            _ => (code, "•", "off"),
        };
        St {
            code,
            word: match l {
                Lang::Ko => ko,
                Lang::En => code,
            },
            icon,
            class,
        }
    }

    /// A node execution's status, with `F` (a non-zero exit) shown as failed.
    pub fn of_exec(l: Lang, e: &haechi_exec::NodeExecution) -> St {
        if e.status == haechi_exec::ExecStatus::End
            && e.result_cd == Some(haechi_exec::ResultCode::Failure)
        {
            let mut s = St::of(l, "END");
            s.icon = "✖";
            s.class = "bad";
            return s;
        }
        St::of(l, e.status.as_str())
    }
}

/// `YYYY-MM-DD HH:mm:ss` and the zone, in the server's zone.
pub fn when(ms: i64, offset_secs: i32) -> String {
    let offset = time::UtcOffset::from_whole_seconds(offset_secs).unwrap_or(time::UtcOffset::UTC);
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) else {
        return ms.to_string();
    };
    let t = t.to_offset(offset);
    let zone = if offset_secs == 0 {
        "UTC".to_owned()
    } else {
        let (h, m, _) = offset.as_hms();
        format!(
            "UTC{}{:02}:{:02}",
            if offset_secs < 0 { '-' } else { '+' },
            h.abs(),
            m.abs()
        )
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {zone}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub fn when_opt(ms: Option<i64>, offset_secs: i32) -> String {
    ms.map(|m| when(m, offset_secs)).unwrap_or_default()
}

/// A duration as `1h 02m 03s`.
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 {
        format!("{}h {:02}m {:02}s", s / 3600, s / 60 % 60, s % 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// `s` percent-encoded for a query string or a path segment.
pub fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A query field, trimmed; `None` when absent or empty.
pub fn opt(query: &HashMap<String, String>, k: &str) -> Option<String> {
    query
        .get(k)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A whole-number query field of at least `min`; `None` when absent or empty, 400 naming it
/// when it is something else.
pub fn number(query: &HashMap<String, String>, k: &str, min: i64) -> Result<Option<i64>> {
    match opt(query, k) {
        None => Ok(None),
        Some(v) => Ok(Some(
            v.parse::<i64>().ok().filter(|n| *n >= min).ok_or_else(|| {
                Error::field(
                    k,
                    format_args!("must be a whole number ≥ {min} (got {v:?})"),
                )
            })?,
        )),
    }
}

/// The `page` query field (from 1).
pub fn page_no(query: &HashMap<String, String>) -> Result<i64> {
    Ok(number(query, "page", 1)?.unwrap_or(1).min(1_000_000))
}

/// The `comment` field of a form, trimmed; `None` when empty.
pub fn comment(form: &HashMap<String, String>) -> Option<String> {
    form.get("comment")
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
}

/// What every page's frame needs: language, user, CSRF token, which menu item is current, and
/// which menu items the user may open.
pub struct Chrome {
    pub l: Lang,
    pub user: String,
    pub csrf: String,
    pub nav: &'static str,
    pub title: String,
    /// Seconds of inactivity after which the session ends (the page warns before).
    pub idle_secs: u64,
    pub sealed: bool,
    pub can_workflows: bool,
    pub can_tasks: bool,
    pub can_nodes: bool,
    pub can_users: bool,
    /// console-db: DB access pages (`dbpolicy.manage`) and the audit log (`audit.read`).
    pub can_db: bool,
    pub can_audit: bool,
    /// The vault pages (`vault.use`, or `vault.settings` for its state).
    pub can_vault: bool,
}

impl Chrome {
    pub fn new(state: &AppState, s: &Session, nav: &'static str, title: String) -> Chrome {
        let p = &s.caller.principal;
        Chrome {
            l: s.lang,
            user: p.user_id.clone(),
            csrf: s.csrf.clone(),
            nav,
            title,
            idle_secs: state.identity.config().token_idle_secs,
            sealed: !state.vault.applied(),
            can_workflows: p.can(Permission::WorkflowView),
            can_tasks: p.can(Permission::NodeView),
            can_nodes: p.can(Permission::NodeView),
            can_users: p.can(Permission::AdminUsers),
            can_db: p.can(Permission::DbPolicyManage),
            can_audit: p.can(Permission::AuditRead),
            can_vault: p.can(Permission::VaultUse) || p.can(Permission::VaultSettings),
        }
    }
}
