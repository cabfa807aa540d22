//! The audit log, for the `Auditor` role (`audit.read`).

use axum::extract::State;
use haechi_audit::{Filter, StoredEvent, Verification};
use haechi_types::Error;
use serde::{Deserialize, Serialize};

use crate::error::ApiResult;
use crate::extract::{need, Allowed, Page, Query};
use crate::AppState;

/// Filters of `GET /api/v1/audit`.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Events at or after this instant (ISO 8601, or unix milliseconds).
    from: Option<String>,
    /// Events at or before this instant (ISO 8601, or unix milliseconds).
    to: Option<String>,
    /// Events by this `user_id`.
    user: Option<String>,
    /// Events with this action (`auth.login`), or under this prefix (`user` matches `user.create`).
    action: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// A page of audit events, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditList {
    events: Vec<AuditEvent>,
    total: i64,
    limit: i64,
    offset: i64,
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
    let Some(s) = v.as_deref().filter(|s| !s.is_empty()) else {
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

/// Audit events, newest first, filtered by time, user and action (`audit.read`: the Auditor).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 400), (status = 401), (status = 403)))]
pub async fn list_audit(
    State(state): State<AppState>,
    _caller: Allowed<need::AuditRead>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<axum::Json<AuditList>> {
    let page = Page::parse(q.limit.as_deref(), q.offset.as_deref())?;
    let filter = Filter {
        from_ms: instant("from", &q.from)?,
        to_ms: instant("to", &q.to)?,
        user: q.user.filter(|s| !s.is_empty()),
        action: q.action.filter(|s| !s.is_empty()),
        limit: page.limit,
        offset: page.offset,
    };
    let (events, total) = haechi_audit::query(&state.store, &filter).await?;
    Ok(axum::Json(AuditList {
        events: events.into_iter().map(to_wire).collect(),
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// Verifies the whole hash chain now (`audit.read`).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = Verification), (status = 403)))]
pub async fn verify_audit(
    State(state): State<AppState>,
    _caller: Allowed<need::AuditRead>,
) -> ApiResult<axum::Json<Verification>> {
    Ok(axum::Json(haechi_audit::verify(&state.store).await?))
}
