//! Users, roles and tokens in the store, and the admin operations on them.

use std::collections::BTreeSet;

use haechi_store::{in_tx, is_unique_violation, read, Backend, Store, Tx};
use haechi_types::{ident, time, time::now_ms, Error, Result};
use ipnet::IpNet;
use rand::Rng;
use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

use crate::permission::{builtin_roles, Permission, PermissionSet, SYSTEM_ADMIN};
use crate::{Actor, Identity, RoleRef};

/// `human` accounts log in to the console and lock after inactivity; `api` accounts (MDRM's
/// `lock_flg = '8'`) are for machines: no console login, never locked for inactivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserKind {
    Human,
    Api,
}

impl UserKind {
    fn as_str(self) -> &'static str {
        match self {
            UserKind::Human => "human",
            UserKind::Api => "api",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "human" => Ok(UserKind::Human),
            "api" => Ok(UserKind::Api),
            other => Err(Error::internal(format_args!(
                "unknown user kind {other:?} in store"
            ))),
        }
    }
}

fn iso<S: Serializer>(ms: &i64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&time::iso_ms(*ms))
}

fn iso_opt<S: Serializer>(ms: &Option<i64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&time::iso_ms(*ms)),
        None => s.serialize_none(),
    }
}

/// A user as the admin API shows it. Never carries the password hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub user_id: String,
    pub name: String,
    pub kind: UserKind,
    pub roles: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub disabled: bool,
    /// Locked after too many failed logins (lifts by itself after `lockout_secs`, or by an admin).
    pub locked: bool,
    pub failed_logins: i64,
    #[serde(serialize_with = "iso_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_login_at: Option<i64>,
    #[serde(serialize_with = "iso")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "iso")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

/// A new user (`POST /api/v1/users`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    pub user_id: String,
    pub name: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    #[serde(default = "default_kind")]
    pub kind: UserKind,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub allowed_ips: Vec<String>,
}

fn default_kind() -> UserKind {
    UserKind::Human
}

/// Changes to a user (`PATCH /api/v1/users/{user_id}`); absent fields stay as they are.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct UserPatch {
    pub name: Option<String>,
    pub roles: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<String>>,
    pub disabled: Option<bool>,
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    pub kind: Option<UserKind>,
}

/// A role as the admin API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Role {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub permissions: Vec<Permission>,
    pub builtin: bool,
    #[serde(serialize_with = "iso")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "iso")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

/// A new role (`POST /api/v1/roles`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewRole {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permissions: Vec<String>,
}

/// Changes to a custom role.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct RolePatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
}

/// One of the caller's tokens (never the token itself).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    /// The login endpoint that issued it.
    pub family: String,
    pub client_ip: String,
    #[serde(serialize_with = "iso")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "iso")]
    #[schema(value_type = String, format = DateTime)]
    pub last_used_at: i64,
    #[serde(serialize_with = "iso")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: i64,
    /// The token this request was made with.
    pub current: bool,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    user_id: String,
    name: String,
    kind: String,
    disabled: bool,
    failed_logins: i64,
    locked_at: Option<i64>,
    allowed_ips: String,
    last_login_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const USER_COLS: &str =
    "id, user_id, name, kind, disabled, failed_logins, locked_at, allowed_ips, \
                         last_login_at, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub(crate) struct LoginRow {
    pub id: i64,
    pub user_id: String,
    pub password_hash: String,
    pub kind: String,
    pub disabled: bool,
    pub failed_logins: i64,
    pub locked_at: Option<i64>,
    pub allowed_ips: String,
    pub last_login_at: Option<i64>,
    pub activity_reset_at: i64,
}

impl LoginRow {
    pub fn kind(&self) -> Result<UserKind> {
        UserKind::parse(&self.kind)
    }

    pub fn allowed_ips(&self) -> Result<Vec<IpNet>> {
        parse_allowed_ips(&self.allowed_ips)
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    pub token_id: i64,
    pub user_pk: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub user_id: String,
    pub name: String,
    pub kind: String,
    pub disabled: bool,
    pub allowed_ips: String,
}

pub(crate) fn parse_allowed_ips(json: &str) -> Result<Vec<IpNet>> {
    let list: Vec<String> = serde_json::from_str(json)?;
    list.iter()
        .map(|s| s.parse::<IpNet>().map_err(Error::internal))
        .collect()
}

// ---- validation -------------------------------------------------------------------------------

/// A user id: a name under `haechi_types::ident` (1 to 64 characters, NFKC, no invisible or
/// control characters, no spaces), and no `@` or `/` (the gateway login name is
/// `<user_id>@<account>`; the id is a path segment).
fn validate_user_id(user_id: &str) -> Result<()> {
    ident::check("user_id", user_id, 64, ident::Spaces::Refused)?;
    if let Some(bad) = user_id.chars().find(|c| *c == '@' || *c == '/') {
        return Err(Error::field(
            "user_id",
            format_args!("must not contain {bad:?} (no '@' or '/')"),
        ));
    }
    Ok(())
}

/// A role name: a name under `haechi_types::ident` with single inner spaces, not a number.
fn validate_role_name(name: &str) -> Result<()> {
    ident::check("name", name, 100, ident::Spaces::Inner)?;
    if name.parse::<i64>().is_ok() {
        return Err(Error::field(
            "name",
            "must not be a number (roles are looked up by id or name)",
        ));
    }
    Ok(())
}

fn validate_text(field: &str, value: &str, max: usize, required: bool) -> Result<()> {
    let n = value.chars().count();
    if required && value.trim().is_empty() {
        return Err(Error::field(field, "must not be empty"));
    }
    if n > max {
        return Err(Error::field(
            field,
            format_args!("must be at most {max} characters (got {n})"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::field(field, "must not contain control characters"));
    }
    Ok(())
}

pub(crate) fn validate_password(pw: &SecretString) -> Result<()> {
    use secrecy::ExposeSecret;
    let n = pw.expose_secret().chars().count();
    if n < 8 {
        return Err(Error::field("password", "must be at least 8 characters"));
    }
    if pw.expose_secret().len() > 1024 {
        return Err(Error::field("password", "must be at most 1024 bytes"));
    }
    Ok(())
}

/// Normalises an allow-list: CIDRs or single addresses, canonical text, as JSON.
fn normalize_ips(list: &[String]) -> Result<String> {
    let mut out = Vec::with_capacity(list.len());
    if list.len() > 256 {
        return Err(Error::field("allowed_ips", "at most 256 entries"));
    }
    for (i, s) in list.iter().enumerate() {
        let s = s.trim();
        let net = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                Error::field(
                    format!("allowed_ips[{i}]"),
                    format_args!("{s:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"),
                )
            })?;
        out.push(net.trunc().to_string());
    }
    Ok(serde_json::to_string(&out)?)
}

fn parse_permissions(list: &[String]) -> Result<Vec<Permission>> {
    let mut set = BTreeSet::new();
    for (i, s) in list.iter().enumerate() {
        let p = Permission::parse(s).ok_or_else(|| {
            let known: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
            Error::field(
                format!("permissions[{i}]"),
                format_args!("unknown permission {s:?}; known: {}", known.join(", ")),
            )
        })?;
        set.insert(p.as_str());
    }
    Ok(set.into_iter().filter_map(Permission::parse).collect())
}

pub(crate) fn random_password() -> SecretString {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let s: String = (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    SecretString::from(s)
}

// ---- store access ------------------------------------------------------------------------------

pub(crate) async fn ensure_builtin_roles(store: &Store) -> Result<()> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    for (name, description, perms) in builtin_roles() {
        let json = serde_json::to_string(&perms)?;
        in_tx!(tx, |c| {
            sqlx::query(
            "INSERT INTO roles (name, description, permissions, builtin, created_at, updated_at, name_key) \
             VALUES ($1, $2, $3, TRUE, $4, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET description = excluded.description, \
               permissions = excluded.permissions, builtin = TRUE, name_key = excluded.name_key"
        )
        .bind(name)
        .bind(description)
        .bind(&json)
        .bind(now)
        .bind(ident::fold(name))
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        })?;
    }
    tx.commit().await
}

/// Fills the folded key of user ids and role names stored before keys existed (migration
/// 0008). Two old names that fold alike keep no key (the second is logged): they stay usable,
/// and no new look-alike of either can be made beside the one that has its key.
pub(crate) async fn fill_name_keys(store: &Store) -> Result<()> {
    for (table, col, key) in [
        ("users", "user_id", "id_key"),
        ("roles", "name", "name_key"),
    ] {
        let rows: Vec<(i64, String)> = read!(store, |db| sqlx::query_as(&format!(
            "SELECT id, {col} FROM {table} WHERE {key} IS NULL ORDER BY id"
        ))
        .fetch_all(db)
        .await)?;
        for (id, name) in rows {
            let mut tx = store.begin().await?;
            let r = in_tx!(tx, |c| sqlx::query(&format!(
                "UPDATE {table} SET {key} = $1 WHERE id = $2"
            ))
            .bind(ident::fold(&name))
            .bind(id)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()));
            match r {
                Ok(_) => tx.commit().await?,
                Err(e) if is_unique_violation(&e) => tracing::warn!(
                    "{table}.{col} #{id} {name:?} differs from another only in case or width; \
                     it keeps working, but rename one of them"
                ),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

pub(crate) async fn insert_bootstrap_admin(store: &Store, hash: &str) -> Result<bool> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    let id: Option<i64> = in_tx!(tx, |c| {
        sqlx::query_scalar(
        "INSERT INTO users (user_id, name, kind, password_hash, activity_reset_at, password_changed_at, created_at, updated_at, id_key) \
         VALUES ('admin', 'Administrator', 'human', $1, $2, $2, $2, $2, 'admin') ON CONFLICT DO NOTHING RETURNING id"
    )
    .bind(hash)
    .bind(now)
    .fetch_optional(&mut *c)
    .await
    })?;
    let Some(id) = id else { return Ok(false) };
    in_tx!(tx, |c| sqlx::query(
        "INSERT INTO user_roles (user_id, role_id) SELECT $1, id FROM roles WHERE name = $2"
    )
    .bind(id)
    .bind(SYSTEM_ADMIN)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    haechi_audit::append(
        &mut tx,
        haechi_audit::Event::new("system", "user.bootstrap").target("admin"),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

const LOGIN_COLS: &str = "id, user_id, password_hash, kind, disabled, failed_logins, locked_at, \
                          allowed_ips, last_login_at, activity_reset_at";

pub(crate) async fn find_login_row(store: &Store, user_id: &str) -> Result<Option<LoginRow>> {
    let sql = format!("SELECT {LOGIN_COLS} FROM users WHERE user_id = $1");
    Ok(read!(store, |db| sqlx::query_as(&sql)
        .bind(user_id)
        .fetch_optional(db)
        .await)?)
}

/// The login row of user `id`, held by `tx` until it ends: on PostgreSQL with `FOR UPDATE`;
/// SQLite's write transactions (`BEGIN IMMEDIATE` on the one writer) are serial already.
pub(crate) async fn lock_login_row(
    tx: &mut Tx,
    backend: Backend,
    id: i64,
) -> Result<Option<LoginRow>> {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let sql = format!("SELECT {LOGIN_COLS} FROM users WHERE id = $1{lock}");
    Ok(in_tx!(tx, |c| sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *c)
        .await)?)
}

/// Records a failed login as the `count`th in a row, locking the account when it reaches
/// `max`.
pub(crate) async fn set_failed_logins(
    tx: &mut Tx,
    id: i64,
    count: i64,
    max: u32,
    now: i64,
) -> Result<()> {
    let locked_at = (count >= max as i64).then_some(now);
    in_tx!(tx, |c| sqlx::query(
        "UPDATE users SET failed_logins = $1, locked_at = $2 WHERE id = $3"
    )
    .bind(count)
    .bind(locked_at)
    .bind(id)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub(crate) async fn find_token(store: &Store, hash: &str) -> Result<Option<TokenRow>> {
    Ok(read!(store, |db| {
        sqlx::query_as(
        "SELECT t.id AS token_id, t.user_id AS user_pk, t.last_used_at, t.expires_at, t.revoked_at, \
                u.user_id, u.name, u.kind, u.disabled, u.allowed_ips \
         FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1"
    )
    .bind(hash)
    .fetch_optional(db)
    .await
    })?)
}

pub(crate) async fn roles_of(store: &Store, user_pk: i64) -> Result<Vec<(RoleRef, PermissionSet)>> {
    let rows: Vec<(i64, String, String)> = read!(store, |db| {
        sqlx::query_as(
        "SELECT r.id, r.name, r.permissions FROM roles r JOIN user_roles ur ON ur.role_id = r.id \
         WHERE ur.user_id = $1 ORDER BY r.name"
    )
    .bind(user_pk)
    .fetch_all(db)
    .await
    })?;
    rows.into_iter()
        .map(|(id, name, perms)| {
            let perms: Vec<String> = serde_json::from_str(&perms)?;
            let perms: Vec<Permission> =
                perms.iter().filter_map(|p| Permission::parse(p)).collect();
            Ok((RoleRef { id, name }, PermissionSet::of(&perms)))
        })
        .collect()
}

pub(crate) async fn revoke_token(tx: &mut Tx, user_pk: i64, token_id: i64) -> Result<bool> {
    let done = in_tx!(tx, |c| {
        sqlx::query(
        "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL"
    )
    .bind(now_ms())
    .bind(token_id)
    .bind(user_pk)
    .execute(&mut *c).await.map(|r| r.rows_affected())
    })?;
    Ok(done == 1)
}

async fn revoke_all_tokens(tx: &mut Tx, user_pk: i64) -> Result<()> {
    in_tx!(tx, |c| sqlx::query(
        "UPDATE tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL"
    )
    .bind(now_ms())
    .bind(user_pk)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub(crate) async fn tokens_of(
    store: &Store,
    user_pk: i64,
    current: i64,
    now: i64,
    idle_secs: u64,
) -> Result<Vec<TokenInfo>> {
    let rows: Vec<(i64, String, String, i64, i64, i64)> = read!(store, |db| {
        sqlx::query_as(
        "SELECT id, family, client_ip, created_at, last_used_at, expires_at FROM tokens \
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_used_at > $3 ORDER BY id"
    )
    .bind(user_pk)
    .bind(now)
    .bind(now - idle_secs as i64 * 1000)
    .fetch_all(db)
    .await
    })?;
    Ok(rows
        .into_iter()
        .map(
            |(id, family, client_ip, created_at, last_used_at, expires_at)| TokenInfo {
                id,
                family,
                client_ip,
                created_at,
                last_used_at,
                expires_at,
                current: id == current,
            },
        )
        .collect())
}

async fn user_roles(store: &Store, user_pks: &[i64]) -> Result<Vec<(i64, String)>> {
    if user_pks.is_empty() {
        return Ok(vec![]);
    }
    let list = user_pks
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT ur.user_id, r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
         WHERE ur.user_id IN ({list}) ORDER BY r.name"
    );
    Ok(read!(store, |db| sqlx::query_as(&sql).fetch_all(db).await)?)
}

fn to_user(
    row: UserRow,
    roles: Vec<String>,
    lockout_active: impl Fn(Option<i64>) -> bool,
) -> Result<User> {
    Ok(User {
        id: row.id,
        kind: UserKind::parse(&row.kind)?,
        allowed_ips: serde_json::from_str(&row.allowed_ips)?,
        locked: lockout_active(row.locked_at),
        user_id: row.user_id,
        name: row.name,
        roles,
        disabled: row.disabled,
        failed_logins: row.failed_logins,
        last_login_at: row.last_login_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(crate) async fn get_user(store: &Store, user_id: &str) -> Result<User> {
    let row: Option<UserRow> = read!(store, |db| sqlx::query_as(&format!(
        "SELECT {USER_COLS} FROM users WHERE user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(db)
    .await)?;
    let row = row.ok_or_else(|| Error::not_found(format_args!("user '{user_id}'")))?;
    let roles = user_roles(store, &[row.id])
        .await?
        .into_iter()
        .map(|r| r.1)
        .collect();
    to_user(row, roles, |l| l.is_some())
}

async fn role_ids(tx: &mut Tx, names: &[String]) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let id: Option<i64> = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT id FROM roles WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(&mut *c)
        .await)?;
        let id = id.ok_or_else(|| {
            Error::field(
                format!("roles[{i}]"),
                format_args!("no role named {name:?}"),
            )
        })?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

async fn set_roles(tx: &mut Tx, user_pk: i64, ids: &[i64]) -> Result<()> {
    in_tx!(tx, |c| sqlx::query(
        "DELETE FROM user_roles WHERE user_id = $1"
    )
    .bind(user_pk)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    for id in ids {
        in_tx!(tx, |c| sqlx::query(
            "INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)"
        )
        .bind(user_pk)
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

fn stored_permissions(json: &str) -> Result<PermissionSet> {
    let names: Vec<String> = serde_json::from_str(json)?;
    let perms: Vec<Permission> = names.iter().filter_map(|p| Permission::parse(p)).collect();
    Ok(PermissionSet::of(&perms))
}

/// The permissions of a set of roles together.
async fn permissions_of_roles(tx: &mut Tx, ids: &[i64]) -> Result<PermissionSet> {
    let mut set = PermissionSet::default();
    for id in ids {
        let json: String = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT permissions FROM roles WHERE id = $1"
        )
        .bind(id)
        .fetch_one(&mut *c)
        .await)?;
        set = set.union(stored_permissions(&json)?);
    }
    Ok(set)
}

/// Refuses a change after which `who` would hold two permissions that one account must never
/// hold together (separation of duties).
fn refuse_conflict(set: PermissionSet, who: &str) -> Result<()> {
    match set.conflict() {
        Some((a, b)) => Err(Error::forbidden(format!(
            "separation of duties: {who} would hold both '{}' and '{}', which no account may hold together",
            a.as_str(),
            b.as_str()
        ))),
        None => Ok(()),
    }
}

/// Enabled users holding `System Admin`, other than `except`.
async fn other_active_admins(tx: &mut Tx, except: i64) -> Result<i64> {
    Ok(in_tx!(tx, |c| {
        sqlx::query_scalar(
        "SELECT COUNT(*) FROM users u JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id \
         WHERE r.name = $1 AND u.disabled = FALSE AND u.id <> $2"
    )
    .bind(SYSTEM_ADMIN)
    .bind(except)
    .fetch_one(&mut *c)
    .await
    })?)
}

async fn is_admin(tx: &mut Tx, user_pk: i64) -> Result<bool> {
    let n: i64 = in_tx!(tx, |c| {
        sqlx::query_scalar(
        "SELECT COUNT(*) FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1 AND r.name = $2"
    )
    .bind(user_pk)
    .bind(SYSTEM_ADMIN)
    .fetch_one(&mut *c)
    .await
    })?;
    Ok(n > 0)
}

/// Refuses new permissions `perms` for `role` when the actor holds the role (nobody widens
/// their own rights) or when a holder of the role would then hold a conflicting pair.
async fn check_role_permissions(
    tx: &mut Tx,
    actor: &Actor,
    role: &Role,
    perms: PermissionSet,
) -> Result<()> {
    refuse_conflict(perms, &format!("every holder of role '{}'", role.name))?;
    let holders: Vec<(i64, String)> = in_tx!(tx, |c| sqlx::query_as(
        "SELECT u.id, u.user_id FROM user_roles ur JOIN users u ON u.id = ur.user_id \
         WHERE ur.role_id = $1 ORDER BY u.id"
    )
    .bind(role.id)
    .fetch_all(&mut *c)
    .await)?;
    if holders.iter().any(|(_, id)| *id == actor.user_id) {
        return Err(Error::forbidden(format!(
            "you hold role '{}'; nobody changes the permissions of a role they hold",
            role.name
        )));
    }
    for (pk, user_id) in holders {
        let others: Vec<i64> = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT role_id FROM user_roles WHERE user_id = $1 AND role_id <> $2"
        )
        .bind(pk)
        .bind(role.id)
        .fetch_all(&mut *c)
        .await)?;
        let set = permissions_of_roles(tx, &others).await?.union(perms);
        refuse_conflict(
            set,
            &format!("user '{user_id}' (who holds role '{}')", role.name),
        )?;
    }
    Ok(())
}

async fn user_pk(tx: &mut Tx, user_id: &str) -> Result<i64> {
    let id: Option<i64> = in_tx!(tx, |c| sqlx::query_scalar(
        "SELECT id FROM users WHERE user_id = $1"
    )
    .bind(user_id)
    .fetch_optional(&mut *c)
    .await)?;
    id.ok_or_else(|| Error::not_found(format_args!("user '{user_id}'")))
}

async fn load_role(store: &Store, key: &str) -> Result<Role> {
    let by_id = key.parse::<i64>().ok();
    let row: Option<(i64, String, String, String, bool, i64, i64)> = read!(store, |db| {
        sqlx::query_as(
        "SELECT id, name, description, permissions, builtin, created_at, updated_at FROM roles \
         WHERE id = $1 OR name = $2"
    )
    .bind(by_id)
    .bind(key)
    .fetch_optional(db)
    .await
    })?;
    let (id, name, description, permissions, builtin, created_at, updated_at) =
        row.ok_or_else(|| Error::not_found(format_args!("role '{key}'")))?;
    let permissions: Vec<String> = serde_json::from_str(&permissions)?;
    Ok(Role {
        id,
        name,
        description,
        permissions: permissions
            .iter()
            .filter_map(|p| Permission::parse(p))
            .collect(),
        builtin,
        created_at,
        updated_at,
    })
}

// ---- admin operations ---------------------------------------------------------------------------

impl Identity {
    fn lock_active(&self, locked_at: Option<i64>) -> bool {
        locked_at.is_some_and(|at| {
            self.cfg.lockout_secs == 0 || now_ms() - at < self.cfg.lockout_secs as i64 * 1000
        })
    }

    pub async fn get_user(&self, user_id: &str) -> Result<User> {
        let mut u = get_user(&self.store, user_id).await?;
        if u.locked {
            let locked_at: Option<i64> = read!(self.store, |db| sqlx::query_scalar(
                "SELECT locked_at FROM users WHERE id = $1"
            )
            .bind(u.id)
            .fetch_one(db)
            .await)?;
            u.locked = self.lock_active(locked_at);
        }
        Ok(u)
    }

    /// The principal of user `user_pk` as it stands now (its current roles and permissions),
    /// for work done later on that user's behalf without a token: a workflow execution's
    /// steps act as the user who started it. A disabled or deleted user has no principal
    /// (`unavailable` / `not_found`). The allow-list is left empty: no request address applies.
    pub async fn principal_of(&self, user_pk: i64) -> Result<crate::Principal> {
        let row: Option<UserRow> = read!(self.store, |db| sqlx::query_as(&format!(
            "SELECT {USER_COLS} FROM users WHERE id = $1"
        ))
        .bind(user_pk)
        .fetch_optional(db)
        .await)?;
        let row = row.ok_or_else(|| Error::not_found(format_args!("user #{user_pk}")))?;
        if row.disabled {
            return Err(Error::unavailable(format!(
                "user '{}' is disabled",
                row.user_id
            )));
        }
        let roles = roles_of(&self.store, user_pk).await?;
        let permissions = roles
            .iter()
            .fold(PermissionSet::default(), |acc, r| acc.union(r.1));
        Ok(crate::Principal {
            id: row.id,
            kind: UserKind::parse(&row.kind)?,
            user_id: row.user_id,
            name: row.name,
            roles: roles.into_iter().map(|r| r.0).collect(),
            permissions,
            allowed_ips: Vec::new(),
            token_id: 0,
        })
    }

    /// Users ordered by numeric id, and the total count.
    pub async fn list_users(&self, limit: i64, offset: i64) -> Result<(Vec<User>, i64)> {
        let rows: Vec<UserRow> = read!(self.store, |db| sqlx::query_as(&format!(
            "SELECT {USER_COLS} FROM users ORDER BY id LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(db)
        .await)?;
        let total: i64 = read!(self.store, |db| sqlx::query_scalar(
            "SELECT COUNT(*) FROM users"
        )
        .fetch_one(db)
        .await)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let roles = user_roles(&self.store, &ids).await?;
        let users = rows
            .into_iter()
            .map(|row| {
                let mine = roles
                    .iter()
                    .filter(|r| r.0 == row.id)
                    .map(|r| r.1.clone())
                    .collect();
                to_user(row, mine, |l| self.lock_active(l))
            })
            .collect::<Result<_>>()?;
        Ok((users, total))
    }

    pub async fn create_user(&self, actor: &Actor, new: NewUser) -> Result<User> {
        validate_user_id(&new.user_id)?;
        validate_text("name", &new.name, 200, true)?;
        validate_password(&new.password)?;
        let ips = normalize_ips(&new.allowed_ips)?;
        let hash = self.hasher.hash(&new.password).await?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let role_ids = role_ids(&mut tx, &new.roles).await?;
        refuse_conflict(
            permissions_of_roles(&mut tx, &role_ids).await?,
            &format!("user '{}'", new.user_id),
        )?;
        let inserted = in_tx!(tx, |c| {
            sqlx::query_scalar::<_, i64>(
            "INSERT INTO users (user_id, name, kind, password_hash, allowed_ips, activity_reset_at, password_changed_at, created_at, updated_at, id_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $6, $7) RETURNING id"
        )
        .bind(&new.user_id)
        .bind(&new.name)
        .bind(new.kind.as_str())
        .bind(&hash)
        .bind(&ips)
        .bind(now)
        .bind(ident::fold(&new.user_id))
        .fetch_one(&mut *c)
        .await
        });
        let id = match inserted {
            Ok(id) => id,
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::conflict(format!(
                    "a user with user_id '{}' (or one that differs only in case or width) already exists",
                    new.user_id
                )))
            }
            Err(e) => return Err(e.into()),
        };
        set_roles(&mut tx, id, &role_ids).await?;
        haechi_audit::append(
            &mut tx,
            actor.event("admin", "user.create").target(new.user_id.clone()).detail(serde_json::json!({
                "kind": new.kind, "roles": new.roles, "allowed_ips": serde_json::from_str::<serde_json::Value>(&ips)?,
            })),
        )
        .await?;
        tx.commit().await?;
        self.get_user(&new.user_id).await
    }

    /// Applies a patch. Changing the password or disabling revokes every token of the user;
    /// the last enabled `System Admin` can be neither disabled nor stripped of that role.
    pub async fn update_user(
        &self,
        actor: &Actor,
        user_id: &str,
        patch: UserPatch,
    ) -> Result<User> {
        if let Some(name) = &patch.name {
            validate_text("name", name, 200, true)?;
        }
        if let Some(pw) = &patch.password {
            validate_password(pw)?;
        }
        let ips = patch
            .allowed_ips
            .as_deref()
            .map(normalize_ips)
            .transpose()?;
        let hash = match &patch.password {
            Some(pw) => Some(self.hasher.hash(pw).await?),
            None => None,
        };
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let pk = user_pk(&mut tx, user_id).await?;
        let new_role_ids = match &patch.roles {
            Some(names) => Some(role_ids(&mut tx, names).await?),
            None => None,
        };
        if let Some(ids) = &new_role_ids {
            if actor.user_id == user_id {
                return Err(Error::forbidden(
                    "nobody changes their own roles; another administrator must do it",
                ));
            }
            refuse_conflict(
                permissions_of_roles(&mut tx, ids).await?,
                &format!("user '{user_id}'"),
            )?;
        }
        let was_admin = is_admin(&mut tx, pk).await?;
        if was_admin {
            let admin_role: i64 = in_tx!(tx, |c| sqlx::query_scalar(
                "SELECT id FROM roles WHERE name = $1"
            )
            .bind(SYSTEM_ADMIN)
            .fetch_one(&mut *c)
            .await)?;
            let loses_role = new_role_ids
                .as_ref()
                .is_some_and(|ids| !ids.contains(&admin_role));
            if (loses_role || patch.disabled == Some(true))
                && other_active_admins(&mut tx, pk).await? == 0
            {
                return Err(Error::conflict(format!(
                    "'{user_id}' is the last enabled System Admin; make another user System Admin first"
                )));
            }
        }
        let mut changed: Vec<&str> = Vec::new();
        if let Some(name) = &patch.name {
            in_tx!(tx, |c| sqlx::query(
                "UPDATE users SET name = $1 WHERE id = $2"
            )
            .bind(name)
            .bind(pk)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
            changed.push("name");
        }
        if let Some(kind) = patch.kind {
            in_tx!(tx, |c| sqlx::query(
                "UPDATE users SET kind = $1 WHERE id = $2"
            )
            .bind(kind.as_str())
            .bind(pk)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
            changed.push("kind");
        }
        if let Some(ips) = &ips {
            in_tx!(tx, |c| sqlx::query(
                "UPDATE users SET allowed_ips = $1 WHERE id = $2"
            )
            .bind(ips)
            .bind(pk)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
            changed.push("allowed_ips");
        }
        if let Some(ids) = &new_role_ids {
            set_roles(&mut tx, pk, ids).await?;
            changed.push("roles");
        }
        if let Some(disabled) = patch.disabled {
            in_tx!(tx, |c| sqlx::query(
                "UPDATE users SET disabled = $1 WHERE id = $2"
            )
            .bind(disabled)
            .bind(pk)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
            if disabled {
                revoke_all_tokens(&mut tx, pk).await?;
            }
            changed.push("disabled");
        }
        if let Some(hash) = &hash {
            in_tx!(tx, |c| sqlx::query(
                "UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3"
            )
            .bind(hash)
            .bind(now)
            .bind(pk)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
            revoke_all_tokens(&mut tx, pk).await?;
            changed.push("password");
        }
        in_tx!(tx, |c| sqlx::query(
            "UPDATE users SET updated_at = $1 WHERE id = $2"
        )
        .bind(now)
        .bind(pk)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        let mut detail = serde_json::json!({ "changed": changed });
        if let Some(roles) = &patch.roles {
            detail["roles"] = serde_json::json!(roles);
        }
        if let Some(ips) = &ips {
            detail["allowed_ips"] = serde_json::from_str(ips)?;
        }
        if let Some(d) = patch.disabled {
            detail["disabled"] = serde_json::json!(d);
        }
        haechi_audit::append(
            &mut tx,
            actor
                .event("admin", "user.update")
                .target(user_id)
                .detail(detail),
        )
        .await?;
        tx.commit().await?;
        self.forget_user(pk).await;
        self.get_user(user_id).await
    }

    /// A user changing their own password must prove the current one. A wrong
    /// `current_password` counts toward the failed-login lockout as a wrong login does (under
    /// the same row lock, see [`Identity::login`]) and is audited (`user.password` failure); while
    /// the account is locked the change is refused.
    pub async fn change_own_password(
        &self,
        actor: &Actor,
        user_id: &str,
        current: &SecretString,
        new: SecretString,
    ) -> Result<()> {
        validate_password(&new)?;
        let _slot = self.password_check_turn(user_id).await?;
        let row = find_login_row(&self.store, user_id)
            .await?
            .ok_or_else(|| Error::not_found(format_args!("user '{user_id}'")))?;
        let ok = self
            .hasher
            .verify(current, Some(row.password_hash.clone()))
            .await?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let state = lock_login_row(&mut tx, self.store.backend(), row.id)
            .await?
            .ok_or_else(|| Error::not_found(format_args!("user '{user_id}'")))?;
        let ok = ok && state.password_hash == row.password_hash;
        let locked = self.lock_active(state.locked_at);
        let refused = |reason: &'static str| {
            actor
                .event("admin", "user.password")
                .target(user_id)
                .outcome(haechi_audit::Outcome::Failure)
                .detail(serde_json::json!({ "reason": reason }))
        };
        if locked {
            haechi_audit::append(&mut tx, refused("locked")).await?;
            tx.commit().await?;
            return Err(Error::forbidden(
                "the account is locked after too many failed attempts; an administrator can unlock it",
            ));
        }
        if !ok {
            let before = if state.locked_at.is_some() {
                0
            } else {
                state.failed_logins
            };
            set_failed_logins(&mut tx, row.id, before + 1, self.cfg.max_failed_logins, now).await?;
            haechi_audit::append(&mut tx, refused("wrong current password")).await?;
            tx.commit().await?;
            return Err(Error::field(
                "current_password",
                "is not the current password",
            ));
        }
        drop(tx);
        self.update_user(
            actor,
            user_id,
            UserPatch {
                password: Some(new),
                ..Default::default()
            },
        )
        .await?;
        Ok(())
    }

    pub async fn delete_user(&self, actor: &Actor, user_id: &str) -> Result<()> {
        if actor.user_id == user_id {
            return Err(Error::conflict("you cannot delete your own account"));
        }
        let mut tx = self.store.begin().await?;
        let pk = user_pk(&mut tx, user_id).await?;
        if is_admin(&mut tx, pk).await? && other_active_admins(&mut tx, pk).await? == 0 {
            return Err(Error::conflict(format!(
                "'{user_id}' is the last enabled System Admin"
            )));
        }
        in_tx!(tx, |c| sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(pk)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
        in_tx!(tx, |c| sqlx::query(
            "DELETE FROM user_group_members WHERE user_id = $1"
        )
        .bind(user_id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        haechi_audit::append(&mut tx, actor.event("admin", "user.delete").target(user_id)).await?;
        tx.commit().await?;
        self.forget_user(pk).await;
        Ok(())
    }

    /// Lifts a failed-login or inactivity lock.
    pub async fn unlock_user(&self, actor: &Actor, user_id: &str) -> Result<User> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let pk = user_pk(&mut tx, user_id).await?;
        in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_at = NULL, activity_reset_at = $1, updated_at = $1 WHERE id = $2"
        )
        .bind(now)
        .bind(pk)
        .execute(&mut *c).await.map(|r| r.rows_affected())
        })?;
        haechi_audit::append(&mut tx, actor.event("admin", "user.unlock").target(user_id)).await?;
        tx.commit().await?;
        self.get_user(user_id).await
    }

    /// A user's live tokens (never the token values), for an admin who may end them;
    /// `current` marks the caller's own token.
    pub async fn user_tokens(&self, user_id: &str, current: i64) -> Result<Vec<TokenInfo>> {
        let u = get_user(&self.store, user_id).await?;
        tokens_of(
            &self.store,
            u.id,
            current,
            now_ms(),
            self.cfg.token_idle_secs,
        )
        .await
    }

    /// Revokes one token of a user (an admin ending someone's session); 404 when it is not
    /// a live token of that user.
    pub async fn revoke_user_token(
        &self,
        actor: &Actor,
        user_id: &str,
        token_id: i64,
    ) -> Result<()> {
        let mut tx = self.store.begin().await?;
        let pk = user_pk(&mut tx, user_id).await?;
        if !revoke_token(&mut tx, pk, token_id).await? {
            return Err(Error::not_found(format_args!(
                "live token {token_id} of user '{user_id}'"
            )));
        }
        haechi_audit::append(
            &mut tx,
            actor
                .event("admin", "token.revoke")
                .target(token_id.to_string())
                .detail(serde_json::json!({ "user_id": user_id })),
        )
        .await?;
        tx.commit().await?;
        self.forget_token(token_id).await;
        Ok(())
    }

    pub async fn list_roles(&self) -> Result<Vec<Role>> {
        let names: Vec<String> = read!(self.store, |db| sqlx::query_scalar(
            "SELECT name FROM roles ORDER BY id"
        )
        .fetch_all(db)
        .await)?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            out.push(load_role(&self.store, &n).await?);
        }
        Ok(out)
    }

    /// A role by numeric id or by name.
    pub async fn get_role(&self, key: &str) -> Result<Role> {
        load_role(&self.store, key).await
    }

    pub async fn create_role(&self, actor: &Actor, new: NewRole) -> Result<Role> {
        validate_role_name(&new.name)?;
        validate_text("description", &new.description, 500, false)?;
        let perms = parse_permissions(&new.permissions)?;
        refuse_conflict(
            PermissionSet::of(&perms),
            &format!("every holder of role '{}'", new.name),
        )?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let r = in_tx!(tx, |c| {
            sqlx::query_scalar::<_, i64>(
            "INSERT INTO roles (name, description, permissions, builtin, created_at, updated_at, name_key) \
             VALUES ($1, $2, $3, FALSE, $4, $4, $5) RETURNING id"
        )
        .bind(&new.name)
        .bind(&new.description)
        .bind(serde_json::to_string(&perms)?)
        .bind(now)
        .bind(ident::fold(&new.name))
        .fetch_one(&mut *c)
        .await
        });
        let id = match r {
            Ok(id) => id,
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::conflict(format!(
                    "a role named '{}' (or one that differs only in case or width) already exists",
                    new.name
                )))
            }
            Err(e) => return Err(e.into()),
        };
        haechi_audit::append(
            &mut tx,
            actor
                .event("admin", "role.create")
                .target(new.name.clone())
                .detail(serde_json::json!({ "id": id, "permissions": perms })),
        )
        .await?;
        tx.commit().await?;
        load_role(&self.store, &id.to_string()).await
    }

    pub async fn update_role(&self, actor: &Actor, key: &str, patch: RolePatch) -> Result<Role> {
        let role = load_role(&self.store, key).await?;
        if role.builtin {
            return Err(Error::conflict(format!(
                "'{}' is a built-in role and cannot be changed",
                role.name
            )));
        }
        if let Some(n) = &patch.name {
            validate_role_name(n)?;
        }
        if let Some(d) = &patch.description {
            validate_text("description", d, 500, false)?;
        }
        let perms = patch
            .permissions
            .as_deref()
            .map(parse_permissions)
            .transpose()?;
        let mut tx = self.store.begin().await?;
        if let Some(perms) = &perms {
            check_role_permissions(&mut tx, actor, &role, PermissionSet::of(perms)).await?;
        }
        let r = in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE roles SET name = COALESCE($1, name), description = COALESCE($2, description), \
             permissions = COALESCE($3, permissions), updated_at = $4, name_key = COALESCE($6, name_key) \
             WHERE id = $5"
        )
        .bind(&patch.name)
        .bind(&patch.description)
        .bind(perms.as_ref().map(serde_json::to_string).transpose()?)
        .bind(now_ms())
        .bind(role.id)
        .bind(patch.name.as_deref().map(ident::fold))
        .execute(&mut *c).await.map(|r| r.rows_affected())
        });
        match r {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(Error::conflict(
                "a role with that name (or one that differs only in case or width) already exists",
            )),
            Err(e) => return Err(e.into()),
        }
        haechi_audit::append(
            &mut tx,
            actor
                .event("admin", "role.update")
                .target(role.name.clone())
                .detail(serde_json::json!({
                    "id": role.id, "name": patch.name, "permissions": perms,
                })),
        )
        .await?;
        tx.commit().await?;
        self.forget_all().await;
        load_role(&self.store, &role.id.to_string()).await
    }

    pub async fn delete_role(&self, actor: &Actor, key: &str) -> Result<()> {
        let role = load_role(&self.store, key).await?;
        if role.builtin {
            return Err(Error::conflict(format!(
                "'{}' is a built-in role and cannot be deleted",
                role.name
            )));
        }
        let mut tx = self.store.begin().await?;
        in_tx!(tx, |c| sqlx::query("DELETE FROM roles WHERE id = $1")
            .bind(role.id)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("admin", "role.delete")
                .target(role.name.clone())
                .detail(serde_json::json!({ "id": role.id })),
        )
        .await?;
        tx.commit().await?;
        self.forget_all().await;
        Ok(())
    }
}
