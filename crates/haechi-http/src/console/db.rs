//! DB access (issue 23 item 2): DBSAFER policies (`/console/db/policies`: the document's
//! filters, the create/edit form with the 27 privileges in groups, lock/unlock one or by
//! filter), targets and accounts with the sessions open through the gateway
//! (`/console/db/targets`), and the policy simulator (`/console/db/simulate`). Every page and
//! action needs `dbpolicy.manage`, as its API twin, and calls the same engine function.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use haechi_dbgate::{BackendTls, Kind, NewAccount, NewTarget, Policy, PolicyFilter, Privilege};
use haechi_identity::Permission;
use haechi_types::time::now_ms;
use haechi_types::Error;

use super::{opt, q, see_other, when, Chrome, Lang, Result, Session, St};
use crate::dbsafer;
use crate::AppState;

/// The 27 privilege types in groups a policy writer thinks in: (i18n key of the group, its
/// privileges). Every type is in exactly one group (a unit test checks).
pub const PRIVILEGE_GROUPS: &[(&str, &[Privilege])] = &[
    (
        "cdb_priv_read",
        &[Privilege::Select, Privilege::Show, Privilege::Desc],
    ),
    (
        "cdb_priv_dml",
        &[
            Privilege::Insert,
            Privilege::Update,
            Privilege::Delete,
            Privilege::Merge,
            Privilege::Lock,
        ],
    ),
    (
        "cdb_priv_tx",
        &[Privilege::Begin, Privilege::Commit, Privilege::Rollback],
    ),
    (
        "cdb_priv_ddl",
        &[
            Privilege::Create,
            Privilege::Alter,
            Privilege::Drop,
            Privilege::Truncate,
            Privilege::Rename,
            Privilege::Index,
            Privilege::Comment,
            Privilege::Synonym,
        ],
    ),
    (
        "cdb_priv_dcl",
        &[Privilege::Grant, Privilege::Revoke, Privilege::Audit],
    ),
    (
        "cdb_priv_exec",
        &[
            Privilege::Execute,
            Privilege::Command,
            Privilege::Connect,
            Privilege::Link,
        ],
    ),
    ("cdb_priv_all", &[Privilege::All]),
];

/// The document's six filters, in its order: (query/form name, i18n key).
const FILTERS: &[(&str, &str)] = &[
    ("policyId", "cdb_f_policy_id"),
    ("userId", "cdb_f_user_id"),
    ("serverAddress", "cdb_f_server_address"),
    ("serverPort", "cdb_f_server_port"),
    ("account", "cdb_f_account"),
    ("policyType", "cdb_f_policy_type"),
];

pub struct FilterField {
    pub name: &'static str,
    pub label: &'static str,
    pub value: String,
}

pub struct PolicyRow {
    pub index: i64,
    pub policy_id: String,
    pub user_id: String,
    pub account: String,
    pub clients: String,
    pub server: String,
    pub sid: String,
    pub privileges: String,
    pub validity: String,
    pub st: St,
    pub locked: bool,
}

/// A policy's state as a word and an icon.
fn policy_st(l: Lang, p: &Policy, now: i64) -> St {
    let (code, icon, class) = match haechi_dbgate::decision::state_of(p, now) {
        "locked" => ("LOCKED", "🔒", "bad"),
        "not yet valid" => ("NOT_YET_VALID", "○", "wait"),
        "expired" => ("EXPIRED", "⌛", "off"),
        _ => ("IN_FORCE", "✔", "ok"),
    };
    St {
        code,
        word: l.t(match code {
            "LOCKED" => "cdb_pst_locked",
            "NOT_YET_VALID" => "cdb_pst_not_yet",
            "EXPIRED" => "cdb_pst_expired",
            _ => "cdb_pst_in_force",
        }),
        icon,
        class,
    }
}

fn policy_row(l: Lang, off: time::UtcOffset, p: &Policy, now: i64) -> PolicyRow {
    let clients = match (p.client_ip_begin, p.client_ip_end) {
        (Some(b), Some(e)) if b == e => b.to_string(),
        (Some(b), Some(e)) => format!("{b} – {e}"),
        _ => l.t("cdb_any_address").to_owned(),
    };
    let start = dbsafer::form_date(p.start_at, off, false);
    let end = dbsafer::form_date(p.end_at, off, true);
    let validity = match (start.is_empty(), end.is_empty()) {
        (true, true) => l.t("cdb_always").to_owned(),
        _ => format!("{} – {}", start.replace('T', " "), end.replace('T', " ")),
    };
    PolicyRow {
        index: p.index,
        policy_id: p.policy_id.clone(),
        user_id: p.user_id.clone(),
        account: p.account.clone().unwrap_or_default(),
        clients,
        server: match (&p.server_address, p.server_port) {
            (Some(a), Some(port)) => format!("{a}:{port}"),
            (Some(a), None) => a.clone(),
            (None, Some(port)) => format!(":{port}"),
            (None, None) => String::new(),
        },
        sid: p.sid.clone().unwrap_or_default(),
        privileges: p
            .privileges
            .iter()
            .map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        validity,
        st: policy_st(l, p, now),
        locked: p.locked_at(now),
    }
}

#[derive(Template)]
#[template(path = "console/db_policies.html")]
struct PoliciesPage {
    c: Chrome,
    filters: Vec<FilterField>,
    /// Whether any filter is set (lock/unlock by filter needs one).
    any_filter: bool,
    rows: Vec<PolicyRow>,
    notice: String,
}

/// The filter of a query or form (the document's six fields); 400 naming a bad port.
fn filter_of(m: &HashMap<String, String>) -> Result<PolicyFilter> {
    let port = match opt(m, "serverPort") {
        None => None,
        Some(p) => Some(p.parse::<i64>().map_err(|_| {
            Error::field(
                "serverPort",
                format_args!("must be a port number (got {p:?})"),
            )
        })?),
    };
    Ok(PolicyFilter {
        policy_id: opt(m, "policyId"),
        user_id: opt(m, "userId"),
        server_address: opt(m, "serverAddress"),
        server_port: port,
        account: opt(m, "account"),
        policy_type: opt(m, "policyType"),
    })
}

fn filter_query(m: &HashMap<String, String>) -> String {
    FILTERS
        .iter()
        .filter_map(|(k, _)| opt(m, k).map(|v| format!("{k}={}", q(&v))))
        .collect::<Vec<_>>()
        .join("&")
}

/// `GET /console/db/policies` (`dbpolicy.manage`, as the DBSAFER list).
pub async fn policies(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::DbPolicyManage)?;
    let l = s.lang;
    let f = filter_of(&query)?;
    let off = dbsafer::offset(&state);
    let now = now_ms();
    let rows = state
        .dbgate
        .list_policies(&f)
        .iter()
        .map(|p| policy_row(l, off, p, now))
        .collect();
    let notice = match (opt(&query, "done").as_deref(), opt(&query, "n")) {
        (Some("lock"), Some(n)) => format!("{}: {n}", l.t("cdb_locked_n")),
        (Some("unlock"), Some(n)) => format!("{}: {n}", l.t("cdb_unlocked_n")),
        (Some("saved"), _) => l.t("cdb_policy_saved").to_owned(),
        (Some("deleted"), _) => l.t("cdb_policy_deleted").to_owned(),
        _ => String::new(),
    };
    super::page(PoliciesPage {
        c: Chrome::new(
            &state,
            &s,
            "db_policies",
            l.t("cdb_nav_db_policies").to_owned(),
        ),
        filters: FILTERS
            .iter()
            .map(|(name, label)| FilterField {
                name,
                label: l.t(label),
                value: opt(&query, name).unwrap_or_default(),
            })
            .collect(),
        any_filter: !f.is_empty(),
        rows,
        notice,
    })
}

/// `POST /console/db/policies/lock`: every policy matching the form's filters (at least
/// one), as `PUT .../access-policies/lock`.
pub async fn lock_filtered(
    State(state): State<AppState>,
    s: Session,
    body: Bytes,
) -> Result<Response> {
    by_filter(&state, &s, &body, true).await
}

/// `POST /console/db/policies/unlock`, as `PUT .../access-policies/unlock`.
pub async fn unlock_filtered(
    State(state): State<AppState>,
    s: Session,
    body: Bytes,
) -> Result<Response> {
    by_filter(&state, &s, &body, false).await
}

async fn by_filter(state: &AppState, s: &Session, body: &Bytes, lock: bool) -> Result<Response> {
    let form = s.form(body)?;
    s.require(Permission::DbPolicyManage)?;
    let f = filter_of(&form)?;
    let changed = state.dbgate.set_locked(&s.caller, &f, lock).await?;
    let back = filter_query(&form);
    Ok(see_other(&format!(
        "/console/db/policies?{back}{}done={}&n={}",
        if back.is_empty() { "" } else { "&" },
        if lock { "lock" } else { "unlock" },
        changed.len()
    )))
}

/// `POST /console/db/policies/{index}/lock|unlock`: one policy (by its unique policy id, as
/// the API's filter does).
pub async fn lock_one(
    State(state): State<AppState>,
    s: Session,
    Path((index, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::DbPolicyManage)?;
    let lock = match action.as_str() {
        "lock" => true,
        "unlock" => false,
        _ => return Err(Error::not_found("no such console page").into()),
    };
    let p = state.dbgate.get_policy(index_of(&index)?).await?;
    let f = PolicyFilter {
        policy_id: Some(p.policy_id.clone()),
        ..Default::default()
    };
    let changed = state.dbgate.set_locked(&s.caller, &f, lock).await?;
    let back = filter_query(&form);
    Ok(see_other(&format!(
        "/console/db/policies?{back}{}done={action}&n={}",
        if back.is_empty() { "" } else { "&" },
        changed.len()
    )))
}

fn index_of(raw: &str) -> Result<i64> {
    Ok(crate::extract::numeric_id("access policy", raw)?)
}

pub struct FormField {
    pub name: &'static str,
    pub label: &'static str,
    pub kind: &'static str,
    pub value: String,
    pub error: String,
    pub hint: &'static str,
    pub required: bool,
}

pub struct PrivItem {
    pub name: &'static str,
    pub checked: bool,
}

pub struct PrivGroup {
    pub label: &'static str,
    pub items: Vec<PrivItem>,
}

#[derive(Template)]
#[template(path = "console/db_policy_form.html")]
struct PolicyFormPage {
    c: Chrome,
    /// `None` for a new policy.
    index: Option<i64>,
    fields: Vec<FormField>,
    groups: Vec<PrivGroup>,
    priv_error: String,
    /// A message of an error not tied to one field.
    error: String,
    locked: bool,
    st: Option<St>,
}

/// (name, i18n key, input type, hint key, required on create)
const FORM_FIELDS: &[(&str, &str, &str, &str, bool)] = &[
    (
        "policyId",
        "cdb_f_policy_id",
        "text",
        "cdb_h_policy_id",
        false,
    ),
    ("userId", "cdb_f_user_id", "text", "cdb_h_user_id", true),
    ("account", "cdb_f_account", "text", "cdb_h_account", false),
    (
        "clientIpBegin",
        "cdb_f_client_ip_begin",
        "text",
        "cdb_h_client_ip",
        false,
    ),
    (
        "clientIpEnd",
        "cdb_f_client_ip_end",
        "text",
        "cdb_h_client_ip_end",
        false,
    ),
    (
        "serverAddress",
        "cdb_f_server_address",
        "text",
        "cdb_h_server_address",
        false,
    ),
    (
        "serverPort",
        "cdb_f_server_port",
        "number",
        "cdb_h_server_port",
        false,
    ),
    ("sid", "cdb_f_sid", "text", "cdb_h_sid", false),
    (
        "policyType",
        "cdb_f_policy_type",
        "text",
        "cdb_h_policy_type",
        false,
    ),
    (
        "startDate",
        "cdb_f_start_date",
        "datetime-local",
        "cdb_h_dates",
        false,
    ),
    (
        "endDate",
        "cdb_f_end_date",
        "datetime-local",
        "cdb_h_dates",
        false,
    ),
];

fn form_values(p: &Policy, off: time::UtcOffset) -> HashMap<String, String> {
    let mut v = HashMap::new();
    let mut put = |k: &str, s: String| {
        v.insert(k.to_owned(), s);
    };
    put("policyId", p.policy_id.clone());
    put("userId", p.user_id.clone());
    put("account", p.account.clone().unwrap_or_default());
    put(
        "clientIpBegin",
        p.client_ip_begin.map(|a| a.to_string()).unwrap_or_default(),
    );
    put(
        "clientIpEnd",
        p.client_ip_end.map(|a| a.to_string()).unwrap_or_default(),
    );
    put(
        "serverAddress",
        p.server_address.clone().unwrap_or_default(),
    );
    put(
        "serverPort",
        p.server_port.map(|x| x.to_string()).unwrap_or_default(),
    );
    put("sid", p.sid.clone().unwrap_or_default());
    put("policyType", p.policy_type.clone().unwrap_or_default());
    put("startDate", dbsafer::form_date(p.start_at, off, false));
    put("endDate", dbsafer::form_date(p.end_at, off, true));
    v
}

#[allow(clippy::too_many_arguments)]
fn form_page(
    state: &AppState,
    s: &Session,
    existing: Option<&Policy>,
    values: &HashMap<String, String>,
    privileges: &[String],
    err: Option<&Error>,
) -> Result<Response> {
    let l = s.lang;
    let field_of = |e: &Error| {
        e.field
            .as_deref()
            .map(|f| f.split('[').next().unwrap_or(f).to_owned())
    };
    let err_field = err.and_then(field_of);
    // At its field, the message without the field's name in front (the label says it).
    let message_for = |name: &str| match (err, &err_field) {
        (Some(e), Some(f)) if f == name => {
            let full = e.field.as_deref().unwrap_or(name);
            e.message
                .strip_prefix(&format!("{full}: "))
                .unwrap_or(&e.message)
                .to_owned()
        }
        _ => String::new(),
    };
    let known = |f: &str| f == "sqlPrivileges" || FORM_FIELDS.iter().any(|(n, ..)| *n == f);
    let error = match (err, &err_field) {
        (Some(_), Some(f)) if known(f) => String::new(),
        (Some(e), _) => e.message.clone(),
        _ => String::new(),
    };
    let fields = FORM_FIELDS
        .iter()
        .map(|(name, label, kind, hint, required)| FormField {
            name,
            label: l.t(label),
            kind,
            value: values.get(*name).cloned().unwrap_or_default(),
            error: message_for(name),
            hint: l.t(hint),
            required: *required,
        })
        .collect();
    let groups = PRIVILEGE_GROUPS
        .iter()
        .map(|(key, privs)| PrivGroup {
            label: l.t(key),
            items: privs
                .iter()
                .map(|p| PrivItem {
                    name: p.as_str(),
                    checked: privileges
                        .iter()
                        .any(|x| x.eq_ignore_ascii_case(p.as_str())),
                })
                .collect(),
        })
        .collect();
    let now = now_ms();
    let title = match existing {
        Some(p) => format!("{} {}", l.t("cdb_policy"), p.policy_id),
        None => l.t("cdb_new_policy").to_owned(),
    };
    let page = PolicyFormPage {
        c: Chrome::new(state, s, "db_policies", title),
        index: existing.map(|p| p.index),
        fields,
        groups,
        priv_error: message_for("sqlPrivileges"),
        error,
        locked: existing.is_some_and(|p| p.locked_at(now)),
        st: existing.map(|p| policy_st(l, p, now)),
    };
    let html = page.render()?;
    let status = match err {
        Some(e) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        None => StatusCode::OK,
    };
    Ok((status, axum::response::Html(html)).into_response())
}

/// `GET /console/db/policies/new`.
pub async fn new_policy(State(state): State<AppState>, s: Session) -> Result<Response> {
    s.require(Permission::DbPolicyManage)?;
    form_page(&state, &s, None, &HashMap::new(), &[], None)
}

/// `GET /console/db/policies/{index}`.
pub async fn edit_policy(
    State(state): State<AppState>,
    s: Session,
    Path(index): Path<String>,
) -> Result<Response> {
    s.require(Permission::DbPolicyManage)?;
    let p = state.dbgate.get_policy(index_of(&index)?).await?;
    let privs: Vec<String> = p.privileges.iter().map(|x| x.as_str().to_owned()).collect();
    form_page(
        &state,
        &s,
        Some(&p),
        &form_values(&p, dbsafer::offset(&state)),
        &privs,
        None,
    )
}

/// Every value of field `name` in a form body (checkbox groups send one per ticked box).
fn all_values(body: &Bytes, name: &str) -> Vec<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .collect()
}

/// `POST /console/db/policies` (create) and `POST /console/db/policies/{index}` (update): the
/// API's parsing and the engine's validation; an error is shown at its field, with what the
/// user typed kept, and nothing is stored.
pub async fn save_policy(
    State(state): State<AppState>,
    s: Session,
    index: Option<Path<String>>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::DbPolicyManage)?;
    let privileges = all_values(&body, "sqlPrivileges");
    let off = dbsafer::offset(&state);
    let existing = match &index {
        Some(Path(i)) => Some(state.dbgate.get_policy(index_of(i)?).await?),
        None => None,
    };
    let result = match dbsafer::form_input(&form, privileges.clone(), off, existing.as_ref()) {
        Err(e) => Err(e),
        Ok(input) => match &existing {
            Some(p) => state.dbgate.update_policy(&s.caller, p.index, input).await,
            None => state.dbgate.create_policy(&s.caller, input).await,
        },
    };
    match result {
        Ok(p) => Ok(see_other(&format!(
            "/console/db/policies?policyId={}&done=saved",
            q(&p.policy_id)
        ))),
        Err(e) if e.status() < 500 && e.status() != 403 && e.status() != 404 => {
            form_page(&state, &s, existing.as_ref(), &form, &privileges, Some(&e))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /console/db/policies/{index}/delete`.
pub async fn delete_policy(
    State(state): State<AppState>,
    s: Session,
    Path(index): Path<String>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    s.require(Permission::DbPolicyManage)?;
    state
        .dbgate
        .delete_policy(&s.caller, index_of(&index)?)
        .await?;
    Ok(see_other("/console/db/policies?done=deleted"))
}

// ----- targets, accounts, open sessions -----

pub struct TargetRow {
    pub name: String,
    pub kind: &'static str,
    pub address: String,
    pub database: String,
    pub tls: &'static str,
    pub created: String,
    pub accounts: Vec<AccountRow>,
}

pub struct AccountRow {
    pub account: String,
    pub credential: String,
    pub attribute: String,
    pub registered_by: String,
}

pub struct CredentialChoice {
    pub value: String,
    pub label: String,
}

pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub account: String,
    pub target: String,
    pub protocol: &'static str,
    pub client_ip: String,
    pub since: String,
    pub elapsed: String,
    pub statements: u64,
}

#[derive(Template)]
#[template(path = "console/db_targets.html")]
struct TargetsPage {
    c: Chrome,
    targets: Vec<TargetRow>,
    credentials: Vec<CredentialChoice>,
    sessions: Vec<SessionRow>,
    notice: String,
    error: String,
}

/// Vault credential attributes the user may read (their own credentials, and those of
/// lockers they consume): the choices for an account's password. Only names; no value is
/// read to list them.
async fn readable_credentials(state: &AppState, s: &Session) -> Result<Vec<CredentialChoice>> {
    let p = s.principal();
    let mut creds = state
        .vault
        .list_credentials(
            p,
            &haechi_vault::CredentialFilter {
                consumed: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let own = state
        .vault
        .list_credentials(p, &haechi_vault::CredentialFilter::default())
        .await?;
    for c in own {
        if c.owner_id == p.id && !creds.iter().any(|x| x.id == c.id) {
            creds.push(c);
        }
    }
    creds.sort_by_key(|c| c.id);
    let mut out = Vec::new();
    for c in creds {
        for a in &c.attributes {
            out.push(CredentialChoice {
                value: format!("{}:{}", c.id, a.name),
                label: format!("{} (#{}) › {}", c.name, c.id, a.name),
            });
        }
    }
    Ok(out)
}

async fn targets_page(
    state: &AppState,
    s: &Session,
    notice: String,
    err: Option<Error>,
) -> Result<Response> {
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let mut targets = Vec::new();
    for t in state.dbgate.list_targets().await? {
        let accounts = state
            .dbgate
            .list_accounts(&t.name)
            .await?
            .into_iter()
            .map(|a| AccountRow {
                account: a.account,
                credential: format!("#{}", a.credential_id),
                attribute: a.attribute,
                registered_by: a.registered_by,
            })
            .collect();
        targets.push(TargetRow {
            address: t.address(),
            name: t.name,
            kind: t.kind.as_str(),
            database: t.database,
            tls: t.tls.as_str(),
            created: when(t.created_at, off),
            accounts,
        });
    }
    let now = now_ms();
    let sessions = state
        .dbgate
        .open_sessions()
        .into_iter()
        .map(|v| SessionRow {
            since: when(v.since, off),
            elapsed: super::span(now - v.since),
            id: v.id,
            user_id: v.user_id,
            account: v.account,
            target: v.target,
            protocol: v.protocol,
            client_ip: v.client_ip,
            statements: v.statements,
        })
        .collect();
    let status = err
        .as_ref()
        .and_then(|e| StatusCode::from_u16(e.status()).ok())
        .unwrap_or(StatusCode::OK);
    let page = TargetsPage {
        c: Chrome::new(state, s, "db_targets", l.t("cdb_nav_db_targets").to_owned()),
        targets,
        credentials: readable_credentials(state, s).await?,
        sessions,
        notice,
        error: err.map(|e| e.message).unwrap_or_default(),
    };
    Ok((status, axum::response::Html(page.render()?)).into_response())
}

/// `GET /console/db/targets` (`dbpolicy.manage`, as `GET /api/v1/db/targets`).
pub async fn targets(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::DbPolicyManage)?;
    let l = s.lang;
    let notice = match opt(&query, "done").as_deref() {
        Some("target") => l.t("cdb_target_saved").to_owned(),
        Some("target_deleted") => l.t("cdb_target_deleted").to_owned(),
        Some("account") => l.t("cdb_account_saved").to_owned(),
        Some("account_deleted") => l.t("cdb_account_deleted").to_owned(),
        Some("ended") => l.t("cdb_session_ended").to_owned(),
        _ => String::new(),
    };
    targets_page(&state, &s, notice, None).await
}

/// Runs `op`; a 4xx other than 403 re-renders the targets page with the error (nothing was
/// stored), anything else is the error page.
async fn or_show<T>(
    state: &AppState,
    s: &Session,
    r: std::result::Result<T, Error>,
    done: &str,
) -> Result<Response> {
    match r {
        Ok(_) => Ok(see_other(&format!("/console/db/targets?done={done}"))),
        Err(e) if e.status() < 500 && e.status() != 403 => {
            targets_page(state, s, String::new(), Some(e)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /console/db/targets` (as `POST /api/v1/db/targets`).
pub async fn create_target(
    State(state): State<AppState>,
    s: Session,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::DbPolicyManage)?;
    let get = |k: &str| form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let new = (|| {
        let kind = match get("kind").as_str() {
            "postgres" => Kind::Postgres,
            "mysql" => Kind::Mysql,
            k => {
                return Err(Error::field(
                    "kind",
                    format_args!("must be postgres or mysql (got {k:?})"),
                ))
            }
        };
        let port = get("port");
        let port = port.parse::<i64>().map_err(|_| {
            Error::field(
                "port",
                format_args!("must be a number between 1 and 65535 (got {port:?})"),
            )
        })?;
        let tls = match get("tls").as_str() {
            "" | "disable" => BackendTls::Disable,
            "require" => BackendTls::Require,
            "verify-full" => BackendTls::VerifyFull,
            t => {
                return Err(Error::field(
                    "tls",
                    format_args!("must be disable, require or verify-full (got {t:?})"),
                ))
            }
        };
        Ok(NewTarget {
            name: get("name"),
            kind,
            host: get("host"),
            port,
            database: get("database"),
            tls,
            tls_ca_file: Some(get("tls_ca_file")).filter(|v| !v.is_empty()),
            allow_insecure_password: false,
            socket: None,
        })
    })();
    let r = match new {
        Ok(new) => state.dbgate.create_target(&s.caller, new).await,
        Err(e) => Err(e),
    };
    or_show(&state, &s, r, "target").await
}

/// `POST /console/db/targets/{name}/delete` (as `DELETE /api/v1/db/targets/{name}`).
pub async fn delete_target(
    State(state): State<AppState>,
    s: Session,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    s.require(Permission::DbPolicyManage)?;
    let r = state.dbgate.delete_target(&s.caller, &name).await;
    or_show(&state, &s, r, "target_deleted").await
}

/// `POST /console/db/targets/{name}/accounts` (as the API): the password is the value of the
/// chosen vault credential attribute, which the engine reads once (as the vault audits) to
/// check the user may; the page never holds it.
pub async fn create_account(
    State(state): State<AppState>,
    s: Session,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::DbPolicyManage)?;
    let account = form
        .get("account")
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    let choice = form.get("credential").map(String::as_str).unwrap_or("");
    let parsed = choice
        .split_once(':')
        .and_then(|(id, attr)| Some((id.parse::<i64>().ok()?, attr.to_owned())))
        .ok_or_else(|| {
            Error::field(
                "credential",
                "choose the vault credential attribute that holds the password",
            )
        });
    let r = match parsed {
        Ok((credential_id, attribute)) => {
            state
                .dbgate
                .create_account(
                    &s.caller,
                    &name,
                    NewAccount {
                        account,
                        credential_id,
                        attribute,
                    },
                )
                .await
        }
        Err(e) => Err(e),
    };
    or_show(&state, &s, r, "account").await
}

/// `POST /console/db/targets/{name}/accounts/{account}/delete`.
pub async fn delete_account(
    State(state): State<AppState>,
    s: Session,
    Path((name, account)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    s.require(Permission::DbPolicyManage)?;
    let r = state
        .dbgate
        .delete_account(&s.caller, &name, &account)
        .await;
    or_show(&state, &s, r, "account_deleted").await
}

/// `POST /console/db/sessions/{id}/end` (as `DELETE /api/v1/db/sessions/{id}`).
pub async fn end_session(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    s.require(Permission::DbPolicyManage)?;
    state.dbgate.end_session(&s.caller, &id).await?;
    Ok(see_other("/console/db/targets?done=ended"))
}

// ----- the simulator -----

pub struct GrantRow {
    pub privilege: String,
    pub policy: String,
    pub index: Option<i64>,
}

pub struct MatchRow {
    pub index: i64,
    pub policy_id: String,
    pub st: St,
    pub privileges: String,
}

pub struct SimResult {
    pub allowed: bool,
    pub login_allowed: bool,
    pub message: String,
    pub needs: String,
    pub missing: String,
    pub statements: usize,
    pub unclassifiable: String,
    pub attribute_names: String,
    pub catalog_snapshot: bool,
    pub dialect: &'static str,
    pub grants: Vec<GrantRow>,
    pub policies: Vec<MatchRow>,
}

pub struct TargetChoice {
    pub name: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "console/db_simulate.html")]
struct SimulatePage {
    c: Chrome,
    user_id: String,
    client_ip: String,
    targets: Vec<TargetChoice>,
    account: String,
    sql: String,
    result: Option<SimResult>,
    error: String,
    error_field: String,
}

async fn simulate_page(
    state: &AppState,
    s: &Session,
    form: &HashMap<String, String>,
    result: Option<SimResult>,
    err: Option<Error>,
) -> Result<Response> {
    let l = s.lang;
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let target = get("target");
    let targets = state
        .dbgate
        .list_targets()
        .await?
        .into_iter()
        .map(|t| TargetChoice {
            selected: t.name == target,
            name: t.name,
        })
        .collect();
    let status = err
        .as_ref()
        .and_then(|e| StatusCode::from_u16(e.status()).ok())
        .unwrap_or(StatusCode::OK);
    let client_ip = match form.get("clientIp") {
        Some(ip) => ip.clone(),
        None => s.caller.ip().to_string(),
    };
    let page = SimulatePage {
        c: Chrome::new(
            state,
            s,
            "db_simulate",
            l.t("cdb_nav_db_simulate").to_owned(),
        ),
        user_id: get("userId"),
        client_ip,
        targets,
        account: get("account"),
        sql: get("sql"),
        result,
        error_field: err
            .as_ref()
            .and_then(|e| e.field.clone())
            .unwrap_or_default(),
        error: err.map(|e| e.message).unwrap_or_default(),
    };
    Ok((status, axum::response::Html(page.render()?)).into_response())
}

/// `GET /console/db/simulate`: the empty form.
pub async fn simulate_form(State(state): State<AppState>, s: Session) -> Result<Response> {
    s.require(Permission::DbPolicyManage)?;
    simulate_page(&state, &s, &HashMap::new(), None, None).await
}

/// `POST /console/db/simulate` (as `POST /api/v1/db/simulate`): a POST so the statement text
/// never lands in a URL (access logs, history).
pub async fn simulate(State(state): State<AppState>, s: Session, body: Bytes) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::DbPolicyManage)?;
    let l = s.lang;
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let input = crate::admin::db::SimulateBody {
        user_id: get("userId"),
        client_ip: get("clientIp"),
        target: get("target"),
        account: get("account"),
        sql: get("sql"),
    }
    .input();
    let r = match input {
        Ok(i) => state.dbgate.simulate(i).await,
        Err(e) => Err(e),
    };
    match r {
        Ok(sim) => {
            let now = now_ms();
            let listed = state.dbgate.list_policies(&PolicyFilter {
                user_id: Some(get("userId").trim().to_owned()),
                ..Default::default()
            });
            let policies = sim
                .policies
                .iter()
                .map(|m| MatchRow {
                    index: m.index,
                    policy_id: m.policy_id.clone(),
                    st: listed
                        .iter()
                        .find(|p| p.index == m.index)
                        .map(|p| policy_st(l, p, now))
                        .unwrap_or(St {
                            code: m.state,
                            word: m.state,
                            icon: "•",
                            class: "off",
                        }),
                    privileges: m.sql_privileges.join(", "),
                })
                .collect();
            let result = SimResult {
                allowed: sim.allowed,
                login_allowed: sim.login_allowed,
                message: sim.message.unwrap_or_default(),
                needs: sim.needs.join(", "),
                missing: sim.missing.join(", "),
                statements: sim.statements,
                unclassifiable: sim.unclassifiable.unwrap_or_default(),
                attribute_names: sim.attribute_names.join(", "),
                catalog_snapshot: sim.catalog_snapshot,
                dialect: sim.dialect,
                grants: sim
                    .granted_by
                    .into_iter()
                    .map(|g| GrantRow {
                        privilege: g.privilege,
                        policy: g.policy_id.unwrap_or_default(),
                        index: g.policy_index,
                    })
                    .collect(),
                policies,
            };
            simulate_page(&state, &s, &form, Some(result), None).await
        }
        Err(e) if e.status() < 500 && e.status() != 403 => {
            simulate_page(&state, &s, &form, None, Some(e)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_privilege_type_is_in_exactly_one_group() {
        let mut seen = Vec::new();
        for (_, privs) in PRIVILEGE_GROUPS {
            for p in *privs {
                assert!(!seen.contains(p), "{p} is in two groups");
                seen.push(*p);
            }
        }
        assert_eq!(seen.len(), Privilege::ALL_TYPES.len());
    }
}
