//! The audit log (issue 23 item 4), for `audit.read` only: server-side filters (time range,
//! user, action or prefix, family, outcome, target, gateway session), keyset paging on the
//! event sequence with no ceiling, gateway statements grouped by their session, each event's
//! detail, a streamed CSV export of the filtered set, and the chain's last verification with
//! a button to run one now.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use haechi_audit::{Filter, StoredEvent};
use haechi_identity::Permission;
use serde_json::Value;

use super::{number, opt, page, q, see_other, when, Chrome, Lang, Result, Session, St, FAMILY};
use crate::AppState;

/// The filter fields of the page, in order: (query name, i18n key, input type).
const FIELDS: &[(&str, &str, &str)] = &[
    ("from", "from", "datetime-local"),
    ("to", "to", "datetime-local"),
    ("user", "cdb_user", "text"),
    ("action", "cdb_a_action", "text"),
    ("target", "cdb_target", "text"),
    ("session", "cdb_session", "text"),
];

const FAMILIES: &[&str] = &[
    "admin", "console", "mdrm", "opmate", "dbsafer", "vault", "gateway", "system",
];
const OUTCOMES: &[&str] = &["success", "failure", "denied"];

pub struct FilterField {
    pub name: &'static str,
    pub label: &'static str,
    pub kind: &'static str,
    pub value: String,
    pub hint: &'static str,
}

pub struct Choice {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

pub struct EventRow {
    pub seq: i64,
    pub at: String,
    pub user: String,
    pub ip: String,
    pub family: String,
    pub action: String,
    pub target: String,
    pub st: St,
    pub summary: String,
}

/// The statements of one gateway session on this page.
pub struct SessionGroup {
    pub session: String,
    pub user: String,
    pub account: String,
    pub target: String,
    pub count: usize,
    pub refused: usize,
    pub first: String,
    pub last: String,
    pub statements: Vec<EventRow>,
}

/// A line of the list: an event, or the statements of one session.
pub struct Item {
    pub event: Option<EventRow>,
    pub group: Option<SessionGroup>,
}

pub struct Verified {
    pub at: String,
    pub by: String,
    pub checked: i64,
    pub ok: bool,
    pub broken: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    c: Chrome,
    fields: Vec<FilterField>,
    families: Vec<Choice>,
    outcomes: Vec<Choice>,
    grouped: bool,
    items: Vec<Item>,
    shown: usize,
    newer: String,
    older: String,
    export: String,
    ungroup: String,
    verified: Option<Verified>,
    notice: String,
}

fn outcome_st(l: Lang, outcome: &str) -> St {
    let (code, icon, class, key) = match outcome {
        "success" => ("success", "✔", "ok", "cdb_o_success"),
        "failure" => ("failure", "✖", "bad", "cdb_o_failure"),
        "denied" => ("denied", "⛔", "bad", "cdb_o_denied"),
        _ => ("?", "•", "off", "cdb_o_failure"),
    };
    St {
        code,
        word: l.t(key),
        icon,
        class,
    }
}

fn detail_of(e: &StoredEvent) -> Value {
    serde_json::from_str(&e.detail).unwrap_or(Value::Null)
}

fn text_of(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A one-line summary of an event's detail.
fn summary(l: Lang, e: &StoredEvent, d: &Value) -> String {
    match e.action.as_str() {
        "db.statement" => {
            let verdict = text_of(d, "verdict");
            let mut s = format!(
                "[{}] {}",
                if verdict == "allowed" {
                    l.t("cdb_v_allowed")
                } else {
                    l.t("cdb_v_refused")
                },
                text_of(d, "statement")
            );
            let missing = text_of(d, "missing");
            if !missing.is_empty() {
                s.push_str(&format!(" — {}: {missing}", l.t("cdb_sim_missing")));
            }
            s.push_str(&format!(
                " ({} {}, {} ms)",
                text_of(d, "rows"),
                l.t("cdb_rows"),
                d.get("duration_ms")
                    .and_then(Value::as_f64)
                    .map(|m| format!("{m:.1}"))
                    .unwrap_or_default()
            ));
            s
        }
        _ => {
            let s = if d.as_object().is_some_and(|o| o.is_empty()) {
                String::new()
            } else {
                d.to_string()
            };
            let mut cut: String = s.chars().take(200).collect();
            if cut.len() < s.len() {
                cut.push('…');
            }
            cut
        }
    }
}

fn row(l: Lang, off: i32, e: &StoredEvent, d: &Value) -> EventRow {
    EventRow {
        seq: e.seq,
        at: when(e.at, off),
        user: e.user_id.clone().unwrap_or_default(),
        ip: e.source_ip.clone().unwrap_or_default(),
        family: e.family.clone(),
        action: e.action.clone(),
        target: e.target.clone().unwrap_or_default(),
        st: outcome_st(l, &e.outcome),
        summary: summary(l, e, d),
    }
}

/// The page's events as lines: each gateway session's statements gathered into one group at
/// the place of its newest statement on the page (when `grouped`).
fn items(l: Lang, off: i32, events: &[StoredEvent], grouped: bool) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    let mut group_at: HashMap<String, usize> = HashMap::new();
    for e in events {
        let d = detail_of(e);
        let session = text_of(&d, "session");
        if grouped && e.action == "db.statement" && !session.is_empty() {
            let r = row(l, off, e, &d);
            let refused = text_of(&d, "verdict") != "allowed";
            match group_at.get(&session) {
                Some(&i) => {
                    if let Some(g) = out[i].group.as_mut() {
                        g.count += 1;
                        g.refused += usize::from(refused);
                        g.first = r.at.clone();
                        g.statements.push(r);
                    }
                }
                None => {
                    group_at.insert(session.clone(), out.len());
                    out.push(Item {
                        event: None,
                        group: Some(SessionGroup {
                            session,
                            user: r.user.clone(),
                            account: text_of(&d, "account"),
                            target: r.target.clone(),
                            count: 1,
                            refused: usize::from(refused),
                            first: r.at.clone(),
                            last: r.at.clone(),
                            statements: vec![r],
                        }),
                    });
                }
            }
        } else {
            out.push(Item {
                event: Some(row(l, off, e, &d)),
                group: None,
            });
        }
    }
    out
}

/// The audit filter of the page's query (the same checks as the API); 400 naming the field.
fn filter_of(state: &AppState, query: &HashMap<String, String>) -> Result<Filter> {
    let off = crate::dbsafer::offset(state);
    let instant = |k: &str, end: bool| -> Result<Option<String>> {
        match opt(query, k) {
            None => Ok(None),
            // A datetime-local value is in the server's zone; the API's ISO and ms forms too.
            Some(v)
                if v.contains('T')
                    && !v.ends_with('Z')
                    && !v.get(10..).unwrap_or("").contains(['+', '-']) =>
            {
                Ok(Some(
                    crate::dbsafer::parse_date(k, &v, off, end)
                        .map_err(super::Fail)?
                        .to_string(),
                ))
            }
            Some(v) => Ok(Some(v)),
        }
    };
    let api = crate::admin::AuditQuery {
        from: instant("from", false)?,
        to: instant("to", true)?,
        user: opt(query, "user"),
        action: opt(query, "action"),
        family: opt(query, "family"),
        outcome: opt(query, "outcome"),
        target: opt(query, "target"),
        session: opt(query, "session"),
        before: opt(query, "before"),
        after: opt(query, "after"),
        limit: None,
        offset: None,
    };
    Ok(crate::admin::filter_of(&api)?)
}

/// The query string of the filters alone (no paging).
fn filter_query(query: &HashMap<String, String>) -> String {
    let mut keys: Vec<&str> = FIELDS.iter().map(|(k, ..)| *k).collect();
    keys.extend(["family", "outcome"]);
    keys.iter()
        .filter_map(|k| opt(query, k).map(|v| format!("{k}={}", q(&v))))
        .collect::<Vec<_>>()
        .join("&")
}

fn with(base: &str, extra: &str) -> String {
    match (base.is_empty(), extra.is_empty()) {
        (true, _) => extra.to_owned(),
        (false, true) => base.to_owned(),
        (false, false) => format!("{base}&{extra}"),
    }
}

/// `GET /console/audit` (`audit.read`, as `GET /api/v1/audit`).
pub async fn list(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::AuditRead)?;
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let limit = number(&query, "limit", 1)?.unwrap_or(100).min(1000);
    let filter = Filter {
        limit,
        offset: 0,
        ..filter_of(&state, &query)?
    };
    let events = haechi_audit::page(&state.store, &filter).await?;
    let grouped = opt(&query, "group").as_deref() != Some("0");
    let base = filter_query(&query);
    let keep = |extra: String| {
        let mut p = with(&base, &extra);
        if !grouped {
            p = with(&p, "group=0");
        }
        if limit != 100 {
            p = with(&p, &format!("limit={limit}"));
        }
        format!("/console/audit?{p}")
    };
    let full = events.len() as i64 == limit;
    let at_top = filter.before.is_none() && (filter.after.is_none() || !full);
    let newer = match events.first() {
        Some(e) if !at_top => keep(format!("after={}", e.seq)),
        None if filter.before.is_some() => {
            keep(format!("after={}", filter.before.unwrap_or(0) - 1))
        }
        _ => String::new(),
    };
    let older = match events.last() {
        Some(e) if full || filter.after.is_some() => keep(format!("before={}", e.seq)),
        _ => String::new(),
    };
    let verified = haechi_audit::last_verification(&state.store)
        .await?
        .map(|e| {
            let d = detail_of(&e);
            Verified {
                at: when(e.at, off),
                by: e.user_id.clone().unwrap_or_else(|| "system".to_owned()),
                checked: d.get("checked").and_then(Value::as_i64).unwrap_or(0),
                ok: e.outcome == "success",
                broken: match d.get("brokenSeq").and_then(Value::as_i64) {
                    Some(seq) => format!("#{seq}: {}", text_of(&d, "reason")),
                    None => String::new(),
                },
            }
        });
    let pick = |name: &str, list: &[&'static str], prefix: &str| -> Vec<Choice> {
        let current = opt(&query, name).unwrap_or_default();
        std::iter::once(Choice {
            value: "",
            label: l.t("cdb_any"),
            selected: current.is_empty(),
        })
        .chain(list.iter().map(|v| Choice {
            value: v,
            label: if prefix.is_empty() {
                v
            } else {
                l.t(match *v {
                    "success" => "cdb_o_success",
                    "failure" => "cdb_o_failure",
                    _ => "cdb_o_denied",
                })
            },
            selected: current == *v,
        }))
        .collect()
    };
    page(AuditPage {
        c: Chrome::new(&state, &s, "audit", l.t("cdb_nav_audit").to_owned()),
        fields: FIELDS
            .iter()
            .map(|(name, label, kind)| FilterField {
                name,
                label: l.t(label),
                kind,
                value: opt(&query, name).unwrap_or_default(),
                hint: match *name {
                    "action" => l.t("cdb_h_action"),
                    "target" => l.t("cdb_h_target"),
                    _ => "",
                },
            })
            .collect(),
        families: pick("family", FAMILIES, ""),
        outcomes: pick("outcome", OUTCOMES, "o_"),
        grouped,
        shown: events.len(),
        items: items(l, off, &events, grouped),
        newer,
        older,
        export: format!("/console/audit/export.csv?{base}"),
        ungroup: format!(
            "/console/audit?{}",
            with(&base, if grouped { "group=0" } else { "" })
        ),
        verified,
        notice: if opt(&query, "verified").is_some() {
            l.t("cdb_verified_now").to_owned()
        } else {
            String::new()
        },
    })
}

#[derive(Template)]
#[template(path = "console/audit_event.html")]
struct EventPage {
    c: Chrome,
    e: EventRow,
    detail: String,
    session: String,
    hash: String,
    prev_hash: String,
}

/// `GET /console/audit/{seq}`: one event in full.
pub async fn event(
    State(state): State<AppState>,
    s: Session,
    Path(seq): Path<String>,
) -> Result<Response> {
    s.require(Permission::AuditRead)?;
    let l = s.lang;
    let seq = crate::extract::numeric_id("audit event", &seq)?;
    let e = haechi_audit::get(&state.store, seq).await?;
    let d = detail_of(&e);
    let detail = serde_json::to_string_pretty(&d).unwrap_or_else(|_| e.detail.clone());
    page(EventPage {
        c: Chrome::new(
            &state,
            &s,
            "audit",
            format!("{} #{}", l.t("cdb_audit_event"), e.seq),
        ),
        session: if e.family == "gateway" {
            text_of(&d, "session")
        } else {
            String::new()
        },
        e: row(l, state.http.utc_offset_secs, &e, &d),
        detail,
        hash: e.hash.clone(),
        prev_hash: e.prev_hash.clone(),
    })
}

/// `GET /console/audit/export.csv`: every event matching the filters, streamed as CSV (as
/// `GET /api/v1/audit/export`, and audited as it is).
pub async fn export(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::AuditRead)?;
    let filter = filter_of(&state, &query)?;
    let seq = crate::admin::record_export(&state, &s.caller.actor, &filter).await?;
    let filter = Filter {
        before: Some(filter.before.map_or(seq, |b| b.min(seq))),
        after: None,
        ..filter
    };
    Ok(crate::admin::csv_response(
        crate::admin::csv_stream(&state, filter),
        "haechi-audit.csv",
    ))
}

/// `POST /console/audit/verify`: checks the chain now (recorded as `audit.verify`).
pub async fn verify(State(state): State<AppState>, s: Session, body: Bytes) -> Result<Response> {
    s.form(&body)?;
    s.require(Permission::AuditRead)?;
    let actor = s.caller.actor.clone();
    haechi_audit::verify_and_record(
        &state.store,
        FAMILY,
        Some((&actor.user_id, actor.ip.to_string())),
    )
    .await?;
    Ok(see_other("/console/audit?verified=1"))
}
