//! Translation between OPMATE's wire forms and the engine's: dates, flags, paging, envelopes.

use haechi_exec::NodeStatus;
use haechi_types::{Error, Result};
use serde_json::{json, Map, Value};
use time::UtcOffset;

use crate::extract::parse_page;
use crate::AppState;

/// The server's time zone, for OPMATE's `YYYYMMDDHHMMSS` dates.
pub fn offset(state: &AppState) -> UtcOffset {
    UtcOffset::from_whole_seconds(state.http.utc_offset_secs).unwrap_or(UtcOffset::UTC)
}

/// A date as OPMATE prints it, `""` when absent.
pub fn dt(ms: Option<i64>, off: UtcOffset) -> String {
    ms.map(|m| haechi_types::time::compact(m, off))
        .unwrap_or_default()
}

/// A date filter: `YYYYMMDDHHMMSS` in the server's time zone, or ISO 8601 / RFC 3339.
pub fn parse_dt(field: &str, raw: &str, off: UtcOffset) -> Result<i64> {
    let s = raw.trim();
    if s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit()) {
        let n = |a: usize, b: usize| s[a..b].parse::<u32>().unwrap_or(0);
        let parsed = time::Month::try_from(n(4, 6) as u8)
            .ok()
            .and_then(|m| time::Date::from_calendar_date(n(0, 4) as i32, m, n(6, 8) as u8).ok())
            .and_then(|d| {
                d.with_hms(n(8, 10) as u8, n(10, 12) as u8, n(12, 14) as u8)
                    .ok()
            })
            .map(|t| t.assume_offset(off));
        if let Some(t) = parsed {
            return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
        }
    } else if let Some(ms) = haechi_types::time::parse_iso(s) {
        return Ok(ms);
    }
    Err(Error::field(
        field,
        format_args!("{raw:?} is not a date: use YYYYMMDDHHMMSS (server time zone) or ISO 8601"),
    ))
}

/// An `E`/`D` filter read with `from_code`; absent or empty = no filter.
fn e_or_d<T>(
    field: &str,
    v: Option<String>,
    from_code: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(code) => from_code(code)
            .map(Some)
            .ok_or_else(|| Error::field(field, format_args!("must be E or D (got {code:?})"))),
    }
}

/// An `exec*` flag filter (`E`/`D`).
pub fn flag(field: &str, v: Option<String>) -> Result<Option<bool>> {
    e_or_d(field, v, haechi_exec::exec_flag::from_code)
}

/// A node `status` filter (`E`/`D`).
pub fn node_status(field: &str, v: Option<String>) -> Result<Option<NodeStatus>> {
    e_or_d(field, v, NodeStatus::from_code)
}

/// Paging from OPMATE's `limit`/`offset` (CONTRACT §0).
pub fn paging(limit: Option<&str>, offset: Option<&str>) -> Result<haechi_exec::Paging> {
    parse_page(limit, offset)
}

/// A success envelope with the given fields.
pub fn ok(fields: Value) -> axum::Json<Value> {
    let mut map = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    map.insert("resultCode".into(), json!("0000"));
    map.insert("resultMsg".into(), json!("Success"));
    axum::Json(Value::Object(map))
}

/// An empty query value counts as absent.
pub fn opt(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}
