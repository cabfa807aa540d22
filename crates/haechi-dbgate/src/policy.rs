//! DBSAFER access policies: the model, validation, and the store operations. The HTTP layer
//! maps these onto the product's JSON; this module knows nothing of it.

use std::net::IpAddr;

use haechi_store::{created_or_taken, in_tx, read, Store, Tx};
use haechi_types::{Error, Result};

use crate::privilege::{PrivSet, Privilege};

/// Longest accepted text of the identifying fields (policy id, user id, account, address, sid,
/// policy type).
pub const MAX_NAME: usize = 128;
/// Longest accepted text of a `reservedN` field.
pub const MAX_RESERVED: usize = 1000;

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The document's `index`.
    pub index: i64,
    pub policy_id: String,
    pub user_id: String,
    pub account: Option<String>,
    pub client_ip_begin: Option<IpAddr>,
    pub client_ip_end: Option<IpAddr>,
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
    pub sid: Option<String>,
    /// In the order given, without duplicates.
    pub privileges: Vec<Privilege>,
    pub policy_type: Option<String>,
    pub reserved1: Option<String>,
    pub reserved2: Option<String>,
    pub reserved3: Option<String>,
    /// Validity window, unix ms (inclusive); `None` = unbounded.
    pub start_at: Option<i64>,
    pub end_at: Option<i64>,
    /// Locked by an administrator (or by the end of a time-boxed unlock).
    pub locked: bool,
    /// End of a time-boxed unlock: from this instant the policy counts as locked.
    pub relock_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Policy {
    /// Locked now, by an administrator or because a time-boxed unlock has ended.
    pub fn locked_at(&self, now_ms: i64) -> bool {
        self.locked || self.relock_at.is_some_and(|t| now_ms >= t)
    }

    /// Grants something at `now_ms`: unlocked and inside its validity window.
    pub fn effective(&self, now_ms: i64) -> bool {
        !self.locked_at(now_ms)
            && self.start_at.is_none_or(|s| now_ms >= s)
            && self.end_at.is_none_or(|e| now_ms <= e)
    }

    pub fn privset(&self) -> PrivSet {
        PrivSet::of(&self.privileges)
    }

    /// Whether `ip` is inside the client range (no range = any address).
    pub fn admits_client(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.client_ip_begin, self.client_ip_end) {
            (Some(b), Some(e)) => ip_key(ip).is_some_and(|k| {
                ip_key(b).is_some_and(|bk| bk.0 == k.0 && bk.1 <= k.1)
                    && ip_key(e).is_some_and(|ek| ek.0 == k.0 && k.1 <= ek.1)
            }),
            (Some(b), None) => b == ip,
            (None, Some(e)) => e == ip,
            (None, None) => true,
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// (family, numeric value) so ranges compare within one address family only.
fn ip_key(ip: IpAddr) -> Option<(u8, u128)> {
    match canonical(ip) {
        IpAddr::V4(v4) => Some((4, u32::from(v4) as u128)),
        IpAddr::V6(v6) => Some((6, u128::from(v6))),
    }
}

/// The fields of a create or an update. On create `user_id` is required and absent fields are
/// empty; on update absent fields keep their stored values.
#[derive(Debug, Clone, Default)]
pub struct PolicyInput {
    pub policy_id: Option<String>,
    pub user_id: Option<String>,
    pub account: Option<String>,
    /// Raw text, validated here so the error names the field.
    pub client_ip_begin: Option<String>,
    pub client_ip_end: Option<String>,
    pub server_address: Option<String>,
    pub server_port: Option<i64>,
    pub sid: Option<String>,
    /// Raw names, validated here against the 27 types.
    pub sql_privileges: Option<Vec<String>>,
    pub policy_type: Option<String>,
    pub reserved1: Option<String>,
    pub reserved2: Option<String>,
    pub reserved3: Option<String>,
    pub start_at: Option<i64>,
    pub end_at: Option<i64>,
}

/// The document's list and lock/unlock filters; all optional, combined with AND, exact match.
#[derive(Debug, Clone, Default)]
pub struct PolicyFilter {
    pub policy_id: Option<String>,
    pub user_id: Option<String>,
    pub server_address: Option<String>,
    pub server_port: Option<i64>,
    pub account: Option<String>,
    pub policy_type: Option<String>,
}

impl PolicyFilter {
    pub fn is_empty(&self) -> bool {
        self.policy_id.is_none()
            && self.user_id.is_none()
            && self.server_address.is_none()
            && self.server_port.is_none()
            && self.account.is_none()
            && self.policy_type.is_none()
    }

    fn matches(&self, p: &Policy) -> bool {
        fn eq(f: &Option<String>, v: &Option<String>) -> bool {
            f.as_ref().is_none_or(|f| v.as_deref() == Some(f.as_str()))
        }
        self.policy_id.as_ref().is_none_or(|f| *f == p.policy_id)
            && self.user_id.as_ref().is_none_or(|f| *f == p.user_id)
            && eq(&self.server_address, &p.server_address)
            && self
                .server_port
                .is_none_or(|f| p.server_port.map(i64::from) == Some(f))
            && eq(&self.account, &p.account)
            && eq(&self.policy_type, &p.policy_type)
    }
}

fn text(field: &str, v: Option<String>, max: usize) -> Result<Option<String>> {
    match v {
        None => Ok(None),
        Some(s) => {
            let n = s.chars().count();
            if n > max {
                return Err(Error::field(
                    field,
                    format_args!("must be at most {max} characters (got {n})"),
                ));
            }
            if s.chars().any(char::is_control) {
                return Err(Error::field(field, "must not contain control characters"));
            }
            Ok(Some(s))
        }
    }
}

fn ip(field: &str, v: Option<String>) -> Result<Option<IpAddr>> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<IpAddr>()
            .map(|a| Some(canonical(a)))
            .map_err(|_| {
                Error::field(
                    field,
                    format_args!("'{s}' is not an IP address (use e.g. 10.0.0.1 or 2001:db8::1)"),
                )
            }),
    }
}

/// Checks and normalises the privilege names: each must be one of the 27 types.
pub fn parse_privileges(names: &[String]) -> Result<Vec<Privilege>> {
    let mut out: Vec<Privilege> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let p = Privilege::parse(name).ok_or_else(|| {
            Error::field(
                format!("sqlPrivileges[{i}]"),
                format_args!(
                    "'{name}' is not a SQL privilege type; allowed: {}",
                    Privilege::ALL_TYPES
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Applies `input` over `base` (a blank policy on create) and validates the result.
pub(crate) fn merge(base: &Policy, input: PolicyInput, creating: bool) -> Result<Policy> {
    let mut p = base.clone();
    if creating && input.user_id.as_deref().is_none_or(|u| u.trim().is_empty()) {
        return Err(Error::field("userId", "is required"));
    }
    if let Some(id) = text("policyId", input.policy_id, MAX_NAME)? {
        if id.trim().is_empty() {
            return Err(Error::field("policyId", "must not be blank"));
        }
        p.policy_id = id;
    }
    if let Some(u) = text("userId", input.user_id, MAX_NAME)? {
        if u.trim().is_empty() {
            return Err(Error::field("userId", "must not be blank"));
        }
        p.user_id = u;
    }
    if let Some(a) = text("account", input.account, MAX_NAME)? {
        p.account = Some(a);
    }
    if input.client_ip_begin.is_some() {
        p.client_ip_begin = ip("clientIpBegin", input.client_ip_begin)?;
    }
    if input.client_ip_end.is_some() {
        p.client_ip_end = ip("clientIpEnd", input.client_ip_end)?;
    }
    if let Some(a) = text("serverAddress", input.server_address, MAX_NAME)? {
        let a = a.trim();
        // "" is what a policy without an address reads as (DBSAFER's wire): sent back, it
        // clears the address (a policy without one grants nothing).
        if a.is_empty() {
            p.server_address = None;
        } else {
            haechi_types::ident::check_host("serverAddress", a)?;
            p.server_address = Some(a.to_owned());
        }
    }
    if let Some(port) = input.server_port {
        // 0 is what a policy without a port reads as (DBSAFER's wire): sent back, it clears.
        if !(0..=65535).contains(&port) {
            return Err(Error::field(
                "serverPort",
                format_args!("must be between 1 and 65535, or 0 for none (got {port})"),
            ));
        }
        p.server_port = u16::try_from(port).ok().filter(|p| *p != 0);
    }
    if let Some(s) = text("sid", input.sid, MAX_NAME)? {
        p.sid = Some(s);
    }
    if let Some(names) = input.sql_privileges {
        p.privileges = parse_privileges(&names)?;
    }
    if let Some(t) = text("policyType", input.policy_type, MAX_NAME)? {
        p.policy_type = Some(t);
    }
    if let Some(r) = text("reserved1", input.reserved1, MAX_RESERVED)? {
        p.reserved1 = Some(r);
    }
    if let Some(r) = text("reserved2", input.reserved2, MAX_RESERVED)? {
        p.reserved2 = Some(r);
    }
    if let Some(r) = text("reserved3", input.reserved3, MAX_RESERVED)? {
        p.reserved3 = Some(r);
    }
    if input.start_at.is_some() {
        p.start_at = input.start_at;
    }
    if input.end_at.is_some() {
        p.end_at = input.end_at;
    }
    // One end of the client range alone names a single address (clients that restrict a
    // policy to one machine send only clientIpBegin).
    match (p.client_ip_begin, p.client_ip_end) {
        (Some(b), None) => p.client_ip_end = Some(b),
        (None, Some(e)) => p.client_ip_begin = Some(e),
        _ => {}
    }
    check_ranges(&p)?;
    Ok(p)
}

fn check_ranges(p: &Policy) -> Result<()> {
    // `merge` has made a range of one end alone, so either both ends are set or neither.
    if let (Some(b), Some(e)) = (p.client_ip_begin, p.client_ip_end) {
        match (ip_key(b), ip_key(e)) {
            (Some(bk), Some(ek)) if bk.0 != ek.0 => {
                return Err(Error::field(
                    "clientIpEnd",
                    format_args!("{e} is not in the same address family as clientIpBegin {b}"),
                ))
            }
            (Some(bk), Some(ek)) if bk.1 > ek.1 => {
                return Err(Error::field(
                    "clientIpBegin",
                    format_args!("{b} is after clientIpEnd {e}: the range must run from the lower address to the higher"),
                ))
            }
            _ => {}
        }
    }
    if let (Some(s), Some(e)) = (p.start_at, p.end_at) {
        if s > e {
            return Err(Error::field(
                "startDate",
                "is after endDate: the validity period must start before it ends",
            ));
        }
    }
    Ok(())
}

pub(crate) fn blank(now: i64) -> Policy {
    Policy {
        index: 0,
        policy_id: String::new(),
        user_id: String::new(),
        account: None,
        client_ip_begin: None,
        client_ip_end: None,
        server_address: None,
        server_port: None,
        sid: None,
        privileges: Vec::new(),
        policy_type: None,
        reserved1: None,
        reserved2: None,
        reserved3: None,
        start_at: None,
        end_at: None,
        locked: false,
        relock_at: None,
        created_at: now,
        updated_at: now,
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    policy_id: String,
    user_id: String,
    account: Option<String>,
    client_ip_begin: Option<String>,
    client_ip_end: Option<String>,
    server_address: Option<String>,
    server_port: Option<i64>,
    sid: Option<String>,
    sql_privileges: String,
    policy_type: Option<String>,
    reserved1: Option<String>,
    reserved2: Option<String>,
    reserved3: Option<String>,
    start_at: Option<i64>,
    end_at: Option<i64>,
    locked: bool,
    relock_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const COLS: &str = "id, policy_id, user_id, account, client_ip_begin, client_ip_end, server_address, \
    server_port, sid, sql_privileges, policy_type, reserved1, reserved2, reserved3, start_at, end_at, \
    locked, relock_at, created_at, updated_at";

impl Row {
    fn into_policy(self) -> Result<Policy> {
        let names: Vec<String> = serde_json::from_str(&self.sql_privileges)?;
        Ok(Policy {
            index: self.id,
            policy_id: self.policy_id,
            user_id: self.user_id,
            account: self.account,
            client_ip_begin: self.client_ip_begin.and_then(|s| s.parse().ok()),
            client_ip_end: self.client_ip_end.and_then(|s| s.parse().ok()),
            server_address: self.server_address,
            server_port: self.server_port.and_then(|p| u16::try_from(p).ok()),
            sid: self.sid,
            privileges: names.iter().filter_map(|n| Privilege::parse(n)).collect(),
            policy_type: self.policy_type,
            reserved1: self.reserved1,
            reserved2: self.reserved2,
            reserved3: self.reserved3,
            start_at: self.start_at,
            end_at: self.end_at,
            locked: self.locked,
            relock_at: self.relock_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn privileges_json(p: &Policy) -> String {
    serde_json::Value::from(p.privileges.iter().map(|p| p.as_str()).collect::<Vec<_>>()).to_string()
}

/// Every policy, by index.
pub(crate) async fn load_all(store: &Store) -> Result<Vec<Policy>> {
    let sql = format!("SELECT {COLS} FROM db_policies ORDER BY id");
    let rows: Vec<Row> = read!(store, |db| sqlx::query_as(&sql).fetch_all(db).await)?;
    rows.into_iter().map(Row::into_policy).collect()
}

pub(crate) async fn get_tx(tx: &mut Tx, index: i64) -> Result<Policy> {
    let sql = format!("SELECT {COLS} FROM db_policies WHERE id = $1");
    let row: Option<Row> = in_tx!(tx, |c| sqlx::query_as(&sql)
        .bind(index)
        .fetch_optional(&mut *c)
        .await)?;
    row.ok_or_else(|| not_found(index))?.into_policy()
}

pub(crate) fn not_found(index: i64) -> Error {
    Error::not_found(format_args!("access policy {index}"))
}

/// Filtered list (exact matches), by index.
pub(crate) fn filter<'a>(
    all: &'a [Policy],
    f: &'a PolicyFilter,
) -> impl Iterator<Item = &'a Policy> {
    all.iter().filter(move |p| f.matches(p))
}

/// `POLICY_YYYYMMDDNNN`: the next number of the day (three digits, more past 999).
async fn next_policy_id(tx: &mut Tx, day: &str) -> Result<String> {
    let prefix = format!("POLICY_{day}");
    let pattern = format!("{}%", haechi_store::like_escape(&prefix));
    let ids: Vec<String> = in_tx!(tx, |c| sqlx::query_scalar(
        "SELECT policy_id FROM db_policies WHERE policy_id LIKE $1 ESCAPE '\\'"
    )
    .bind(&pattern)
    .fetch_all(&mut *c)
    .await)?;
    let next = ids
        .iter()
        .filter_map(|id| id.strip_prefix(&prefix))
        .filter(|rest| rest.len() >= 3 && rest.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|rest| rest.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    Ok(format!("{prefix}{next:03}"))
}

pub(crate) async fn insert(tx: &mut Tx, mut p: Policy, day: &str) -> Result<Policy> {
    let generated = p.policy_id.is_empty();
    if generated {
        p.policy_id = next_policy_id(tx, day).await?;
    }
    let r = in_tx!(tx, |c| {
        sqlx::query_scalar::<_, i64>(
        "INSERT INTO db_policies (policy_id, user_id, account, client_ip_begin, client_ip_end, server_address, \
         server_port, sid, sql_privileges, policy_type, reserved1, reserved2, reserved3, start_at, end_at, \
         locked, relock_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18) RETURNING id"
    )
    .bind(&p.policy_id)
    .bind(&p.user_id)
    .bind(&p.account)
    .bind(p.client_ip_begin.map(|a| a.to_string()))
    .bind(p.client_ip_end.map(|a| a.to_string()))
    .bind(&p.server_address)
    .bind(p.server_port.map(i64::from))
    .bind(&p.sid)
    .bind(privileges_json(&p))
    .bind(&p.policy_type)
    .bind(&p.reserved1)
    .bind(&p.reserved2)
    .bind(&p.reserved3)
    .bind(p.start_at)
    .bind(p.end_at)
    .bind(p.locked)
    .bind(p.relock_at)
    .bind(p.created_at)
    .fetch_one(&mut *c)
    .await
    });
    p.index = created_or_taken(r, || {
        Error::conflict(format!(
            "policyId '{}' is already used by another policy; choose another or leave it out to have one generated",
            p.policy_id
        ))
    })?;
    Ok(p)
}

pub(crate) async fn update(tx: &mut Tx, p: &Policy) -> Result<()> {
    let r = in_tx!(tx, |c| {
        sqlx::query(
        "UPDATE db_policies SET policy_id = $1, user_id = $2, account = $3, client_ip_begin = $4, client_ip_end = $5, \
         server_address = $6, server_port = $7, sid = $8, sql_privileges = $9, policy_type = $10, reserved1 = $11, \
         reserved2 = $12, reserved3 = $13, start_at = $14, end_at = $15, locked = $16, relock_at = $17, updated_at = $18 \
         WHERE id = $19"
    )
    .bind(&p.policy_id)
    .bind(&p.user_id)
    .bind(&p.account)
    .bind(p.client_ip_begin.map(|a| a.to_string()))
    .bind(p.client_ip_end.map(|a| a.to_string()))
    .bind(&p.server_address)
    .bind(p.server_port.map(i64::from))
    .bind(&p.sid)
    .bind(privileges_json(p))
    .bind(&p.policy_type)
    .bind(&p.reserved1)
    .bind(&p.reserved2)
    .bind(&p.reserved3)
    .bind(p.start_at)
    .bind(p.end_at)
    .bind(p.locked)
    .bind(p.relock_at)
    .bind(p.updated_at)
    .bind(p.index)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    });
    created_or_taken(r, || {
        Error::conflict(format!(
            "policyId '{}' is already used by another policy",
            p.policy_id
        ))
    })?;
    Ok(())
}

pub(crate) async fn delete(tx: &mut Tx, index: i64) -> Result<()> {
    let n = in_tx!(tx, |c| sqlx::query("DELETE FROM db_policies WHERE id = $1")
        .bind(index)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(not_found(index));
    }
    Ok(())
}

/// Bumps the shared version (in the change's transaction) and returns the new value.
pub(crate) async fn bump_version(tx: &mut Tx) -> Result<i64> {
    Ok(in_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "UPDATE db_policy_version SET version = version + 1 WHERE id = 1 RETURNING version"
    )
    .fetch_one(&mut *c)
    .await)?)
}

pub(crate) async fn stored_version(store: &Store) -> Result<i64> {
    Ok(read!(store, |db| sqlx::query_scalar::<_, i64>(
        "SELECT version FROM db_policy_version WHERE id = 1"
    )
    .fetch_one(db)
    .await)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> PolicyInput {
        PolicyInput {
            user_id: Some("user001".into()),
            ..Default::default()
        }
    }

    #[test]
    fn user_id_is_required_on_create() {
        let e = merge(&blank(0), PolicyInput::default(), true).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("userId"));
        assert!(merge(&blank(0), PolicyInput::default(), false).is_ok());
    }

    #[test]
    fn ip_range_rules() {
        let mut i = input();
        i.client_ip_begin = Some("2.2.2.2".into());
        i.client_ip_end = Some("1.1.1.1".into());
        assert_eq!(
            merge(&blank(0), i, true).unwrap_err().field.as_deref(),
            Some("clientIpBegin")
        );
        let mut i = input();
        i.client_ip_begin = Some("1.1.1.256".into());
        i.client_ip_end = Some("2.2.2.2".into());
        assert_eq!(
            merge(&blank(0), i, true).unwrap_err().field.as_deref(),
            Some("clientIpBegin")
        );
        let mut i = input();
        i.client_ip_begin = Some("1.1.1.1".into());
        i.client_ip_end = Some("::1".into());
        assert!(merge(&blank(0), i, true).is_err());
        let mut i = input();
        i.client_ip_begin = Some("1.1.1.1".into());
        i.client_ip_end = Some("2.2.2.2".into());
        let p = merge(&blank(0), i, true).unwrap();
        assert!(p.admits_client("1.2.3.4".parse().unwrap()));
        assert!(p.admits_client("::ffff:1.2.3.4".parse().unwrap()));
        assert!(!p.admits_client("2.2.2.3".parse().unwrap()));
        assert!(!p.admits_client("::1".parse().unwrap()));
    }

    #[test]
    fn port_dates_and_privileges() {
        for port in [65536, -1] {
            let mut i = input();
            i.server_port = Some(port);
            assert_eq!(
                merge(&blank(0), i, true).unwrap_err().field.as_deref(),
                Some("serverPort")
            );
        }
        // 0 is how a policy without a port reads on the wire: sent back, it clears the port.
        let mut i = input();
        i.server_port = Some(5432);
        let with_port = merge(&blank(0), i, true).unwrap();
        let clear = PolicyInput {
            server_port: Some(0),
            ..Default::default()
        };
        assert_eq!(merge(&with_port, clear, false).unwrap().server_port, None);
        let mut i = input();
        i.start_at = Some(10);
        i.end_at = Some(9);
        assert_eq!(
            merge(&blank(0), i, true).unwrap_err().field.as_deref(),
            Some("startDate")
        );
        let mut i = input();
        i.sql_privileges = Some(vec!["SELECT".into(), "select".into(), "NOPE".into()]);
        assert_eq!(
            merge(&blank(0), i, true).unwrap_err().field.as_deref(),
            Some("sqlPrivileges[2]")
        );
        let mut i = input();
        i.sql_privileges = Some(vec!["insert".into(), "SELECT".into(), "INSERT".into()]);
        let p = merge(&blank(0), i, true).unwrap();
        assert_eq!(p.privileges, vec![Privilege::Insert, Privilege::Select]);
    }

    #[test]
    fn effective_window_and_lock() {
        let mut p = merge(&blank(0), input(), true).unwrap();
        assert!(p.effective(5));
        p.start_at = Some(10);
        p.end_at = Some(20);
        assert!(!p.effective(9) && p.effective(10) && p.effective(20) && !p.effective(21));
        p.locked = true;
        assert!(!p.effective(15));
        p.locked = false;
        p.relock_at = Some(12);
        assert!(p.effective(11) && !p.effective(12));
    }

    #[test]
    fn a_half_open_client_range_admits_one_address() {
        let mut p = blank(0);
        assert!(
            p.admits_client("203.0.113.9".parse().unwrap()),
            "no range: any address"
        );
        p.client_ip_begin = Some("10.0.0.5".parse().unwrap());
        assert!(p.admits_client("10.0.0.5".parse().unwrap()));
        assert!(p.admits_client("::ffff:10.0.0.5".parse().unwrap()));
        assert!(!p.admits_client("10.0.0.6".parse().unwrap()));
        p.client_ip_begin = None;
        p.client_ip_end = Some("10.0.0.7".parse().unwrap());
        assert!(p.admits_client("10.0.0.7".parse().unwrap()));
        assert!(!p.admits_client("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn ipv6_ranges_compare_within_their_family() {
        let mut i = input();
        i.client_ip_begin = Some("2001:db8::1".into());
        i.client_ip_end = Some("2001:db8::ff".into());
        let p = merge(&blank(0), i, true).unwrap();
        assert!(p.admits_client("2001:db8::80".parse().unwrap()));
        assert!(!p.admits_client("2001:db8::100".parse().unwrap()));
        assert!(!p.admits_client("10.0.0.1".parse().unwrap()));
        assert_eq!(
            canonical("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            canonical("2001:db8::1".parse().unwrap()),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn filters_match_exactly_and_combine_with_and() {
        let mut i = input();
        i.account = Some("app".into());
        i.server_address = Some("db1".into());
        i.server_port = Some(5432);
        i.policy_type = Some("ops".into());
        let p = merge(&blank(0), i, true).unwrap();
        assert!(PolicyFilter::default().is_empty());
        assert!(PolicyFilter::default().matches(&p));
        let f = PolicyFilter {
            user_id: Some("user001".into()),
            server_port: Some(5432),
            account: Some("app".into()),
            ..Default::default()
        };
        assert!(!f.is_empty() && f.matches(&p));
        let wrong_port = PolicyFilter {
            server_port: Some(5433),
            ..f.clone()
        };
        assert!(!wrong_port.matches(&p));
        let prefix_only = PolicyFilter {
            server_address: Some("db".into()),
            ..Default::default()
        };
        assert!(!prefix_only.matches(&p), "no substring match");
        let wrong_type = PolicyFilter {
            policy_type: Some("dev".into()),
            ..Default::default()
        };
        assert!(!wrong_type.matches(&p));
    }

    #[test]
    fn an_update_keeps_what_it_does_not_name() {
        let mut i = input();
        i.account = Some("app".into());
        i.sql_privileges = Some(vec!["SELECT".into()]);
        let p = merge(&blank(0), i, true).unwrap();
        let change = PolicyInput {
            sql_privileges: Some(vec!["UPDATE".into()]),
            ..Default::default()
        };
        let q = merge(&p, change, false).unwrap();
        assert_eq!(q.account.as_deref(), Some("app"));
        assert_eq!(q.user_id, "user001");
        assert_eq!(q.privileges, vec![Privilege::Update]);
    }
}
