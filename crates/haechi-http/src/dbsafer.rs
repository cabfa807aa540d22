//! DBSAFER's access-policy API (CONTRACT §4): paths, fields, filters and codes exactly as the
//! product document shows them, over the gateway engine's policies. Errors render in the
//! Spring-style envelope (`error.rs`, by the `/dbsafer` prefix). Every route needs a token and
//! the `dbpolicy.manage` permission (the `DB Policy Admin` role).
//!
//! Decisions where the document is silent: dates are local times of the server's time zone
//! (`2022-01-01T00:00:00`; an offset or `Z` is accepted too, a bare date means the start of the
//! day for `startDate` and its last second for `endDate`); every field the document marks
//! required is always present with a value of its type, so a strict client can parse it: a
//! field that was never set reads `""` (text and IP addresses), `0` (`serverPort`: no port, so
//! the policy grants nothing), `1970-01-01T00:00:00` (`startDate`: valid since always) and
//! `9999-12-31T23:59:59` (`endDate`: valid for ever); each of these, sent back, means the same;
//! one end of the client IP range alone names a single address;
//! `PUT` changes the fields it carries and keeps the others; lock and unlock need at least one
//! filter; `policyId` is unique.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use haechi_dbgate::{Policy, PolicyFilter, PolicyInput};
use haechi_types::Error;
use serde::{Deserialize, Deserializer, Serialize};
use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::{need, numeric_id, Allowed, Caller, Json, Query};
use crate::AppState;

const BASE: &str = "/dbsafer/api/v1/policy/custom/access-policies";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(lock_policies))
        .routes(routes!(unlock_policies))
        .routes(routes!(get_policy, update_policy, delete_policy))
}

/// A policy as the document shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyOut {
    /// Policy index.
    index: i64,
    /// Policy code (`POLICY_YYYYMMDDNNN` when generated).
    policy_id: String,
    user_id: String,
    account: String,
    client_ip_begin: String,
    client_ip_end: String,
    server_address: String,
    /// `0` when not set.
    server_port: u16,
    /// Instance (database name); `""` for any.
    sid: String,
    /// A subset of the 27 SQL privilege types.
    sql_privileges: Vec<String>,
    policy_type: String,
    reserved1: String,
    reserved2: String,
    reserved3: String,
    /// `YYYY-MM-DDTHH:MM:SS`, server local time; `1970-01-01T00:00:00` when not set.
    start_date: String,
    /// `9999-12-31T23:59:59` when not set.
    end_date: String,
    /// Locked: the policy grants nothing.
    lock: bool,
}

/// The list answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyList {
    results: Vec<PolicyOut>,
}

/// One lock/unlock result.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockResult {
    index: i64,
    result: bool,
    result_message: String,
}

/// The lock/unlock answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LockResults {
    results: Vec<LockResult>,
}

fn null_as_none<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

/// A port given as a number (or a numeric string, as form-minded clients send it).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PortValue {
    Number(i64),
    Text(String),
}

/// Create / update body: every field optional except `userId` on create.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBody {
    #[serde(default, deserialize_with = "null_as_none")]
    policy_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    account: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    client_ip_begin: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    client_ip_end: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    server_address: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    #[schema(value_type = Option<i64>)]
    server_port: Option<PortValue>,
    #[serde(default, deserialize_with = "null_as_none")]
    sid: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    sql_privileges: Option<Vec<String>>,
    #[serde(default, deserialize_with = "null_as_none")]
    policy_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    reserved1: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    reserved2: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    reserved3: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    start_date: Option<String>,
    #[serde(default, deserialize_with = "null_as_none")]
    end_date: Option<String>,
}

/// The document's filters (exact matches, combined with AND).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// Policy code.
    policy_id: Option<String>,
    /// User id.
    user_id: Option<String>,
    /// Server address.
    server_address: Option<String>,
    /// Server port.
    server_port: Option<String>,
    /// Connection account.
    account: Option<String>,
    /// Policy type.
    policy_type: Option<String>,
}

impl PolicyQuery {
    fn filter(self) -> Result<PolicyFilter, Error> {
        let some = |v: Option<String>| v.filter(|s| !s.is_empty());
        let port = match some(self.server_port) {
            None => None,
            Some(p) => Some(p.trim().parse::<i64>().map_err(|_| {
                Error::field(
                    "serverPort",
                    format_args!("must be a port number (got {p:?})"),
                )
            })?),
        };
        Ok(PolicyFilter {
            policy_id: some(self.policy_id),
            user_id: some(self.user_id),
            server_address: some(self.server_address),
            server_port: port,
            account: some(self.account),
            policy_type: some(self.policy_type),
        })
    }
}

/// What `startDate` and `endDate` read when the policy has no such bound.
const NO_START: &str = "1970-01-01T00:00:00";
const NO_END: &str = "9999-12-31T23:59:59";

pub(crate) fn offset(state: &AppState) -> UtcOffset {
    UtcOffset::from_whole_seconds(state.http.utc_offset_secs).unwrap_or(UtcOffset::UTC)
}

pub(crate) fn local(ms: i64, off: UtcOffset) -> String {
    let t = haechi_types::time::from_ms(ms).to_offset(off);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn to_out(p: Policy, off: UtcOffset) -> PolicyOut {
    let lock = p.locked_at(haechi_types::time::now_ms());
    PolicyOut {
        index: p.index,
        policy_id: p.policy_id,
        user_id: p.user_id,
        account: p.account.unwrap_or_default(),
        client_ip_begin: p.client_ip_begin.map(|a| a.to_string()).unwrap_or_default(),
        client_ip_end: p.client_ip_end.map(|a| a.to_string()).unwrap_or_default(),
        server_address: p.server_address.unwrap_or_default(),
        server_port: p.server_port.unwrap_or(0),
        sid: p.sid.unwrap_or_default(),
        sql_privileges: p.privileges.iter().map(|x| x.as_str().to_owned()).collect(),
        policy_type: p.policy_type.unwrap_or_default(),
        reserved1: p.reserved1.unwrap_or_default(),
        reserved2: p.reserved2.unwrap_or_default(),
        reserved3: p.reserved3.unwrap_or_default(),
        start_date: p
            .start_at
            .map_or_else(|| NO_START.to_owned(), |ms| local(ms, off)),
        end_date: p
            .end_at
            .map_or_else(|| NO_END.to_owned(), |ms| local(ms, off)),
        lock,
    }
}

/// Parses a policy date: `YYYY-MM-DDTHH:MM:SS` (or with a space, fractions, `Z` or an offset)
/// in the server's zone, or a bare date (its first second, or its last for an end date).
pub(crate) fn parse_date(
    field: &str,
    raw: &str,
    off: UtcOffset,
    end_of_day: bool,
) -> Result<i64, Error> {
    let s = raw.trim();
    let bad = || {
        Error::field(
            field,
            format_args!(
                "'{raw}' is not a date-time; use YYYY-MM-DDTHH:MM:SS (e.g. 2022-01-01T00:00:00)"
            ),
        )
    };
    if let Some(ms) = haechi_types::time::parse_iso(s) {
        return Ok(ms);
    }
    let (date_part, time_part) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut d = date_part.split('-');
    let (y, m, day) = (d.next(), d.next(), d.next());
    if d.next().is_some() {
        return Err(bad());
    }
    let num = |v: Option<&str>, len: usize| -> Result<u32, Error> {
        v.filter(|x| x.len() == len && x.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|x| x.parse().ok())
            .ok_or_else(bad)
    };
    let year = num(y, 4)? as i32;
    let month = Month::try_from(num(m, 2)? as u8).map_err(|_| bad())?;
    let date = Date::from_calendar_date(year, month, num(day, 2)? as u8).map_err(|_| bad())?;
    let time = match time_part {
        None if end_of_day => Time::from_hms(23, 59, 59).map_err(|_| bad())?,
        None => Time::MIDNIGHT,
        Some(t) => {
            let t = t.split('.').next().unwrap_or("");
            let mut p = t.split(':');
            let (h, mi, sec) = (p.next(), p.next(), p.next());
            if p.next().is_some() {
                return Err(bad());
            }
            let sec = match sec {
                None => 0,
                s => num(s, 2)?,
            };
            Time::from_hms(num(h, 2)? as u8, num(mi, 2)? as u8, sec as u8).map_err(|_| bad())?
        }
    };
    let at = PrimitiveDateTime::new(date, time).assume_offset(off);
    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn to_input(b: PolicyBody, off: UtcOffset) -> Result<PolicyInput, Error> {
    let port = match b.server_port {
        None => None,
        Some(PortValue::Number(n)) => Some(n),
        Some(PortValue::Text(t)) => Some(t.trim().parse::<i64>().map_err(|_| {
            Error::field(
                "serverPort",
                format_args!("must be a number between 1 and 65535 (got {t:?})"),
            )
        })?),
    };
    Ok(PolicyInput {
        policy_id: b.policy_id,
        user_id: b.user_id,
        account: b.account,
        client_ip_begin: b.client_ip_begin,
        client_ip_end: b.client_ip_end,
        server_address: b.server_address,
        server_port: port,
        sid: b.sid,
        sql_privileges: b.sql_privileges,
        policy_type: b.policy_type,
        reserved1: b.reserved1,
        reserved2: b.reserved2,
        reserved3: b.reserved3,
        start_at: b
            .start_date
            .as_deref()
            .map(|s| parse_date("startDate", s, off, false))
            .transpose()?,
        end_at: b
            .end_date
            .as_deref()
            .map(|s| parse_date("endDate", s, off, true))
            .transpose()?,
    })
}

/// The console's policy form, read exactly as the API reads a body (same parsing, and the
/// engine's same validation after it). Every field of the form is sent: an emptied field
/// clears it. `existing`: the policy being edited (an emptied date then clears its bound).
pub(crate) fn form_input(
    f: &std::collections::HashMap<String, String>,
    privileges: Vec<String>,
    off: UtcOffset,
    existing: Option<&Policy>,
) -> Result<PolicyInput, Error> {
    let get = |k: &str| f.get(k).map(|v| v.trim().to_owned());
    let date = |k: &str, had: bool, none: &str| match get(k) {
        Some(d) if !d.is_empty() => Some(d),
        // Emptied: clear a bound the policy had (the wire's "no bound" value); else keep none.
        _ if had => Some(none.to_owned()),
        _ => None,
    };
    let body = PolicyBody {
        policy_id: get("policyId").filter(|v| !v.is_empty()),
        user_id: get("userId"),
        account: get("account"),
        client_ip_begin: get("clientIpBegin"),
        client_ip_end: get("clientIpEnd"),
        server_address: get("serverAddress"),
        server_port: get("serverPort")
            .map(|p| PortValue::Text(if p.is_empty() { "0".to_owned() } else { p })),
        sid: get("sid"),
        sql_privileges: Some(privileges),
        policy_type: get("policyType"),
        reserved1: get("reserved1"),
        reserved2: get("reserved2"),
        reserved3: get("reserved3"),
        start_date: date(
            "startDate",
            existing.is_some_and(|p| p.start_at.is_some()),
            NO_START,
        ),
        end_date: date(
            "endDate",
            existing.is_some_and(|p| p.end_at.is_some()),
            NO_END,
        ),
    };
    to_input(body, off)
}

/// A policy date as the console's `datetime-local` field shows it (`YYYY-MM-DDTHH:MM:SS`, the
/// server's zone); empty for no bound (or the wire's "no bound" values).
pub(crate) fn form_date(ms: Option<i64>, off: UtcOffset, end: bool) -> String {
    match ms {
        None => String::new(),
        Some(ms) => {
            let s = local(ms, off);
            if (!end && s.as_str() <= NO_START) || (end && s.as_str() >= NO_END) {
                String::new()
            } else {
                s
            }
        }
    }
}

fn index_of(raw: &str) -> Result<i64, Error> {
    numeric_id("access policy", raw)
}

/// Lists policies, filtered.
#[utoipa::path(get, path = "/dbsafer/api/v1/policy/custom/access-policies", tag = "dbsafer", params(PolicyQuery),
    responses((status = 200, body = PolicyList), (status = 400), (status = 401), (status = 403)))]
pub async fn list_policies(
    State(state): State<AppState>,
    _caller: Allowed<need::DbPolicyManage>,
    Query(q): Query<PolicyQuery>,
) -> ApiResult<axum::Json<PolicyList>> {
    let f = q.filter()?;
    let off = offset(&state);
    Ok(axum::Json(PolicyList {
        results: state
            .dbgate
            .list_policies(&f)
            .into_iter()
            .map(|p| to_out(p, off))
            .collect(),
    }))
}

/// Reads one policy.
#[utoipa::path(get, path = "/dbsafer/api/v1/policy/custom/access-policies/{index}", tag = "dbsafer",
    params(("index" = i64, Path, description = "Policy index")),
    responses((status = 200, body = PolicyOut), (status = 401), (status = 403), (status = 404)))]
pub async fn get_policy(
    State(state): State<AppState>,
    _caller: Allowed<need::DbPolicyManage>,
    Path(index): Path<String>,
) -> ApiResult<axum::Json<PolicyOut>> {
    let p = state.dbgate.get_policy(index_of(&index)?).await?;
    Ok(axum::Json(to_out(p, offset(&state))))
}

/// Creates a policy: 201 with `Location` and the created policy.
#[utoipa::path(post, path = "/dbsafer/api/v1/policy/custom/access-policies", tag = "dbsafer", request_body = PolicyBody,
    responses((status = 201, body = PolicyOut), (status = 400), (status = 401), (status = 403), (status = 409)))]
pub async fn create_policy(
    State(state): State<AppState>,
    caller: Allowed<need::DbPolicyManage>,
    Json(body): Json<PolicyBody>,
) -> ApiResult<Response> {
    let off = offset(&state);
    let input = to_input(body, off)?;
    let p = state.dbgate.create_policy(&caller, input).await?;
    let location = format!("{BASE}/{}", p.index);
    let mut res = (StatusCode::CREATED, axum::Json(to_out(p, off))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// Changes a policy: the fields given; the others stay.
#[utoipa::path(put, path = "/dbsafer/api/v1/policy/custom/access-policies/{index}", tag = "dbsafer", request_body = PolicyBody,
    params(("index" = i64, Path, description = "Policy index")),
    responses((status = 200, body = PolicyOut), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn update_policy(
    State(state): State<AppState>,
    caller: Allowed<need::DbPolicyManage>,
    Path(index): Path<String>,
    Json(body): Json<PolicyBody>,
) -> ApiResult<axum::Json<PolicyOut>> {
    let index = index_of(&index)?;
    let off = offset(&state);
    let input = to_input(body, off)?;
    let p = state.dbgate.update_policy(&caller, index, input).await?;
    Ok(axum::Json(to_out(p, off)))
}

/// Deletes a policy: 204.
#[utoipa::path(delete, path = "/dbsafer/api/v1/policy/custom/access-policies/{index}", tag = "dbsafer",
    params(("index" = i64, Path, description = "Policy index")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub async fn delete_policy(
    State(state): State<AppState>,
    caller: Allowed<need::DbPolicyManage>,
    Path(index): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .dbgate
        .delete_policy(&caller, index_of(&index)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_locked(
    state: AppState,
    caller: Caller,
    q: PolicyQuery,
    lock: bool,
) -> ApiResult<axum::Json<LockResults>> {
    let f = q.filter()?;
    let indexes = state.dbgate.set_locked(&caller, &f, lock).await?;
    let message = if lock {
        "lock completed."
    } else {
        "unlock completed."
    };
    Ok(axum::Json(LockResults {
        results: indexes
            .into_iter()
            .map(|index| LockResult {
                index,
                result: true,
                result_message: message.to_owned(),
            })
            .collect(),
    }))
}

/// Locks every policy matching the filters (at least one).
#[utoipa::path(put, path = "/dbsafer/api/v1/policy/custom/access-policies/lock", tag = "dbsafer", params(PolicyQuery),
    responses((status = 200, body = LockResults), (status = 400), (status = 401), (status = 403)))]
pub async fn lock_policies(
    State(state): State<AppState>,
    caller: Allowed<need::DbPolicyManage>,
    Query(q): Query<PolicyQuery>,
) -> ApiResult<axum::Json<LockResults>> {
    set_locked(state, caller.caller, q, true).await
}

/// Unlocks every policy matching the filters (at least one).
#[utoipa::path(put, path = "/dbsafer/api/v1/policy/custom/access-policies/unlock", tag = "dbsafer", params(PolicyQuery),
    responses((status = 200, body = LockResults), (status = 400), (status = 401), (status = 403)))]
pub async fn unlock_policies(
    State(state): State<AppState>,
    caller: Allowed<need::DbPolicyManage>,
    Query(q): Query<PolicyQuery>,
) -> ApiResult<axum::Json<LockResults>> {
    set_locked(state, caller.caller, q, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_in_the_server_zone() {
        let kst = UtcOffset::from_hms(9, 0, 0).unwrap();
        let ms = parse_date("startDate", "2022-01-01T00:00:00", kst, false).unwrap();
        assert_eq!(local(ms, kst), "2022-01-01T00:00:00");
        assert_eq!(local(ms, UtcOffset::UTC), "2021-12-31T15:00:00");
        let end = parse_date("endDate", "2022-12-31", kst, true).unwrap();
        assert_eq!(local(end, kst), "2022-12-31T23:59:59");
        assert!(parse_date("startDate", "2022-13-01T00:00:00", kst, false).is_err());
        assert!(parse_date("startDate", "yesterday", kst, false).is_err());
        let z = parse_date("startDate", "2022-01-01T00:00:00Z", kst, false).unwrap();
        assert_eq!(local(z, UtcOffset::UTC), "2022-01-01T00:00:00");
    }
}
