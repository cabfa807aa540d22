//! The audit log, for the `Auditor` role (`audit.read`): a filtered list with keyset paging,
//! a streamed CSV export of the filtered set, and the chain's verification.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use haechi_audit::{Filter, StoredEvent};
use haechi_types::Error;
use serde::{Deserialize, Serialize};

use super::wire::audit::Verification;
use crate::error::ApiResult;
use crate::extract::{need, parse_page, Allowed, Query};
use crate::AppState;

/// Filters of `GET /api/v1/audit` and `GET /api/v1/audit/export`.
#[derive(Deserialize, Default, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Events at or after this instant (ISO 8601, or unix milliseconds).
    pub from: Option<String>,
    /// Events at or before this instant (ISO 8601, or unix milliseconds).
    pub to: Option<String>,
    /// Events by this `user_id`.
    pub user: Option<String>,
    /// Events with this action (`auth.login`), or under this prefix (`user` matches `user.create`).
    pub action: Option<String>,
    /// Events of this API family (`admin`, `mdrm`, `opmate`, `dbsafer`, `vault`, `gateway`, `console`, `system`).
    pub family: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<String>,
    /// Events on this target (`db-target:prod`); a trailing `*` matches every target starting with the rest.
    pub target: Option<String>,
    /// The statements and login of one gateway session (its 16-hex-digit id).
    pub session: Option<String>,
    /// Keyset paging: events older than this `seq` (the `next_before` of the previous page).
    pub before: Option<String>,
    /// Keyset paging: the events just newer than this `seq` (the page before).
    pub after: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
}

/// A page of audit events, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditList {
    events: Vec<AuditEvent>,
    /// Events matching the filters (paging aside).
    total: i64,
    limit: i64,
    offset: i64,
    /// Pass as `before` for the next (older) page; absent on the last page.
    next_before: Option<i64>,
}

/// One audit event.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    seq: i64,
    /// ISO 8601 UTC.
    at: String,
    /// The acting user's `user_id` (for a failed login, the id that was tried).
    user: Option<String>,
    source_ip: Option<String>,
    family: String,
    action: String,
    target: Option<String>,
    /// `success`, `failure` or `denied`.
    outcome: String,
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    hash: String,
}

fn instant(name: &str, v: &Option<String>) -> Result<Option<i64>, Error> {
    let Some(s) = v.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(Some(ms));
    }
    haechi_types::time::parse_iso(s).map(Some).ok_or_else(|| {
        Error::field(
            name,
            format_args!(
                "{s:?} is not an ISO 8601 instant (2024-05-20T09:00:00Z) or unix milliseconds"
            ),
        )
    })
}

fn seq(name: &str, v: &Option<String>) -> Result<Option<i64>, Error> {
    match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                Error::field(
                    name,
                    format_args!(
                        "must be an event's sequence number, a whole number ≥ 0 (got {s:?})"
                    ),
                )
            }),
    }
}

fn text(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The filter a query describes (paging aside: `limit` and `offset` are 0). 400 naming the
/// field for a bad value.
pub fn filter_of(q: &AuditQuery) -> Result<Filter, Error> {
    let outcome = text(&q.outcome);
    if let Some(o) = &outcome {
        if !matches!(o.as_str(), "success" | "failure" | "denied") {
            return Err(Error::field(
                "outcome",
                format_args!("must be success, failure or denied (got {o:?})"),
            ));
        }
    }
    let session = text(&q.session);
    if let Some(s) = &session {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::field(
                "session",
                format_args!("must be a gateway session id, 16 hex digits (got {s:?})"),
            ));
        }
    }
    let from_ms = instant("from", &q.from)?;
    let to_ms = instant("to", &q.to)?;
    // `from` after `to` is an empty range, not an error: it matches nothing (as it always has).
    Ok(Filter {
        from_ms,
        to_ms,
        user: text(&q.user),
        action: text(&q.action),
        family: text(&q.family),
        outcome,
        target: text(&q.target),
        session: session.map(|s| s.to_ascii_lowercase()),
        before: seq("before", &q.before)?,
        after: seq("after", &q.after)?,
        limit: 0,
        offset: 0,
    })
}

fn to_wire(e: StoredEvent) -> AuditEvent {
    AuditEvent {
        seq: e.seq,
        at: haechi_types::time::iso_ms(e.at),
        user: e.user_id,
        source_ip: e.source_ip,
        family: e.family,
        action: e.action,
        target: e.target,
        outcome: e.outcome,
        detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null),
        hash: e.hash,
    }
}

/// Audit events, newest first, filtered (`audit.read`: the Auditor). Page with `before` (the
/// answer's `next_before`) for any depth at the same cost; `offset` still works.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 400), (status = 401), (status = 403)))]
pub async fn list_audit(
    State(state): State<AppState>,
    _caller: Allowed<need::AuditRead>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<axum::Json<AuditList>> {
    let page = parse_page(q.limit.as_deref(), q.offset.as_deref())?;
    let filter = Filter {
        limit: page.limit,
        offset: page.offset,
        ..filter_of(&q)?
    };
    let (events, total) = haechi_audit::query(&state.store, &filter).await?;
    let next_before = (events.len() as i64 == page.limit && page.limit > 0)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(axum::Json(AuditList {
        events: events.into_iter().map(to_wire).collect(),
        total,
        limit: page.limit,
        offset: page.offset,
        next_before,
    }))
}

/// The CSV columns of an export, in order.
pub const CSV_HEADER: &str = "seq,at,user,source_ip,family,action,target,outcome,detail,hash\r\n";

/// Events per store read while streaming an export.
const EXPORT_PAGE: i64 = 1000;

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break. A field a
/// spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) gets a
/// leading `'`, OWASP's advice against CSV injection: an export is opened by people.
pub fn csv_field(out: &mut String, v: &str) {
    let guarded = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if guarded || v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if guarded {
            out.push('\'');
        }
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

/// One event as a CSV line.
pub fn csv_line(out: &mut String, e: &StoredEvent) {
    let at = haechi_types::time::iso_ms(e.at);
    let seq = e.seq.to_string();
    let fields: [&str; 10] = [
        &seq,
        &at,
        e.user_id.as_deref().unwrap_or(""),
        e.source_ip.as_deref().unwrap_or(""),
        &e.family,
        &e.action,
        e.target.as_deref().unwrap_or(""),
        &e.outcome,
        &e.detail,
        &e.hash,
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push_str("\r\n");
}

/// Every event matching `filter`, newest first, as a streamed CSV body: read from the store a
/// page at a time by sequence number (keyset), so memory stays flat whatever the size. The
/// events are those up to the newest one when the export starts.
pub fn csv_stream(state: &AppState, filter: Filter) -> Body {
    let store = state.store.clone();
    let first = futures::stream::once(async {
        Ok::<Bytes, Error>(Bytes::from_static(CSV_HEADER.as_bytes()))
    });
    let rest = futures::stream::unfold((store, filter, false), |(store, mut f, done)| async move {
        if done {
            return None;
        }
        f.limit = EXPORT_PAGE;
        f.offset = 0;
        f.after = None;
        match haechi_audit::page(&store, &f).await {
            Ok(events) => {
                let last = events.len() < EXPORT_PAGE as usize;
                if events.is_empty() {
                    return None;
                }
                let mut out = String::with_capacity(events.len() * 256);
                for e in &events {
                    csv_line(&mut out, e);
                }
                f.before = events.last().map(|e| e.seq);
                Some((Ok(Bytes::from(out)), (store, f, last)))
            }
            // The status line is gone by now: the stream ends in an error, which the
            // client sees as a cut-off download rather than a complete file.
            Err(e) => Some((Err(e), (store, f, true))),
        }
    });
    use futures::StreamExt;
    Body::from_stream(first.chain(rest))
}

/// A CSV answer with a download name.
pub fn csv_response(body: Body, name: &str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    res
}

/// Every event matching the filters (those of `GET /api/v1/audit`; paging fields other than
/// `before` are ignored) as CSV, newest first, streamed. The export is itself audited
/// (`audit.export`, with its filters).
#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", params(AuditQuery),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400), (status = 401), (status = 403)))]
pub async fn export_audit(
    State(state): State<AppState>,
    caller: Allowed<need::AuditRead>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    let filter = filter_of(&q)?;
    let seq = record_export(&state, &caller.actor, &filter).await?;
    // The export's own event is newer than everything it holds.
    let filter = Filter {
        before: Some(filter.before.map_or(seq, |b| b.min(seq))),
        ..filter
    };
    Ok(csv_response(csv_stream(&state, filter), "haechi-audit.csv"))
}

/// Records an export of the audit log (before it starts); the event's sequence number.
pub async fn record_export(
    state: &AppState,
    actor: &haechi_identity::Actor,
    f: &Filter,
) -> Result<i64, Error> {
    haechi_audit::record(
        &state.store,
        actor
            .event("audit.export")
            .target("audit-log")
            .detail(serde_json::json!({
                "from": f.from_ms.map(haechi_types::time::iso_ms),
                "to": f.to_ms.map(haechi_types::time::iso_ms),
                "user": f.user, "action": f.action, "family": f.family,
                "outcome": f.outcome, "target": f.target, "session": f.session,
                "before": f.before,
            })),
    )
    .await
}

/// Verifies the whole hash chain now (`audit.read`); the check is recorded as an event
/// (`audit.verify`), so the console can say when the chain was last checked and by whom.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = Verification), (status = 403)))]
pub async fn verify_audit(
    State(state): State<AppState>,
    caller: Allowed<need::AuditRead>,
) -> ApiResult<axum::Json<Verification>> {
    let actor = caller.actor.clone();
    let verification = haechi_audit::verify_and_record(
        &state.store,
        haechi_audit::Family::Admin,
        Some((&actor.user_id, actor.ip.to_string())),
    )
    .await?;
    Ok(axum::Json(Verification::from(&verification)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let mut out = String::new();
        for v in [
            "plain",
            "a,b",
            "say \"hi\"",
            "two\nlines",
            "=SUM(A1)",
            "-1",
            "@x",
        ] {
            csv_field(&mut out, v);
            out.push('|');
        }
        assert_eq!(
            out,
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|\"'=SUM(A1)\"|\"'-1\"|\"'@x\"|"
        );
    }
}
