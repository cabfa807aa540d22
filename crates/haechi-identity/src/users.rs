//! Users in the store and the admin operations on them.

use haechi_store::inline::Value;
use haechi_store::{created_or_taken, in_tx, is_unique_violation, packed, read, Store, Tx};
use haechi_types::{ident, time::now_ms, Error, Result};
use ipnet::IpNet;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::permission::{Permission, PermissionSet, SYSTEM_ADMIN};
use crate::roles::*;
use crate::tokens::*;
use crate::validation::*;
use crate::{Caller, Identity};

/// `human` accounts log in to the console and lock after inactivity; `api` accounts (MDRM's
/// `lock_flg = '8'`) are for machines: no console login, never locked for inactivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// A user as the admin API shows it. Never carries the password hash.
#[derive(Debug, Clone)]
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
    pub last_login_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new user (`POST /api/v1/users`).
#[derive(Debug)]
pub struct NewUser {
    pub user_id: String,
    pub name: String,
    pub password: SecretString,
    pub kind: UserKind,
    pub roles: Vec<String>,
    pub allowed_ips: Vec<String>,
}

/// Changes to a user (`PATCH /api/v1/users/{user_id}`); absent fields stay as they are.
#[derive(Debug, Default)]
pub struct UserPatch {
    pub name: Option<String>,
    pub roles: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<String>>,
    pub disabled: Option<bool>,
    pub password: Option<SecretString>,
    pub kind: Option<UserKind>,
}

/// A user's row; also read by column position (SQLite's inline read).
#[derive(sqlx::FromRow, Deserialize)]
pub(crate) struct UserRow {
    id: i64,
    user_id: String,
    name: String,
    kind: String,
    #[serde(deserialize_with = "haechi_store::packed::int_bool")]
    disabled: bool,
    failed_logins: i64,
    locked_at: Option<i64>,
    allowed_ips: String,
    last_login_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

pub(crate) const USER_COLS: &str =
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
        haechi_audit::Event::new(haechi_audit::Family::System, "user.bootstrap").target("admin"),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) const LOGIN_COLS: &str =
    "id, user_id, password_hash, kind, disabled, failed_logins, locked_at, \
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
pub(crate) async fn lock_login_row(tx: &mut Tx, id: i64) -> Result<Option<LoginRow>> {
    let sql = format!(
        "SELECT {LOGIN_COLS} FROM users WHERE id = $1{}",
        tx.for_update()
    );
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

pub(crate) async fn user_roles(store: &Store, user_pks: &[i64]) -> Result<Vec<(i64, String)>> {
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

pub(crate) fn to_user(
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
    get_user_with(store, user_id, |l| l.is_some()).await
}

/// A user and its role names in one query (a row per role, ordered by name; one row with no
/// role for a user without any): the read behind `GET /users/{id}` and every answer that
/// returns a user.
async fn get_user_with(
    store: &Store,
    user_id: &str,
    lockout_active: impl Fn(Option<i64>) -> bool,
) -> Result<User> {
    if let Some(inline) = store.inline() {
        // One row on the calling thread: the user's columns and its role names packed.
        let sql = format!(
            "SELECT {USER_COLS}, \
               (SELECT json_group_array(r.name ORDER BY r.name) FROM user_roles ur \
                  JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = users.id) \
             FROM users WHERE user_id = $1"
        );
        let (user, roles): (UserRow, String) = inline
            .rows(&sql, &[Value::Text(user_id.to_owned())])?
            .pop()
            .ok_or_else(|| Error::not_found(format_args!("user '{user_id}'")))?;
        return to_user(user, packed::unpack(&roles)?, lockout_active);
    }
    #[derive(sqlx::FromRow)]
    struct WithRole {
        #[sqlx(flatten)]
        user: UserRow,
        role: Option<String>,
    }
    let rows: Vec<WithRole> = read!(store, |db| sqlx::query_as(&format!(
        "SELECT {USER_COLS}, role FROM users LEFT JOIN \
           (SELECT ur.user_id AS role_user, r.name AS role FROM user_roles ur \
              JOIN roles r ON r.id = ur.role_id) roles_of ON roles_of.role_user = users.id \
         WHERE users.user_id = $1 ORDER BY role"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await)?;
    let mut rows = rows.into_iter();
    let first = rows
        .next()
        .ok_or_else(|| Error::not_found(format_args!("user '{user_id}'")))?;
    let roles = first
        .role
        .into_iter()
        .chain(rows.filter_map(|r| r.role))
        .collect();
    to_user(first.user, roles, lockout_active)
}

pub(crate) async fn user_pk(tx: &mut Tx, user_id: &str) -> Result<i64> {
    let id: Option<i64> = in_tx!(tx, |c| sqlx::query_scalar(
        "SELECT id FROM users WHERE user_id = $1"
    )
    .bind(user_id)
    .fetch_optional(&mut *c)
    .await)?;
    id.ok_or_else(|| Error::not_found(format_args!("user '{user_id}'")))
}

/// Refuses a change that would leave no enabled `System Admin`: `user_pk` losing the role
/// (`new_role_ids` without it) or being disabled while no other enabled admin exists.
async fn keep_an_admin(
    tx: &mut Tx,
    pk: i64,
    user_id: &str,
    new_role_ids: Option<&[i64]>,
    disabled: Option<bool>,
) -> Result<()> {
    if !is_admin(tx, pk).await? {
        return Ok(());
    }
    let admin_role: i64 = in_tx!(tx, |c| sqlx::query_scalar(
        "SELECT id FROM roles WHERE name = $1"
    )
    .bind(SYSTEM_ADMIN)
    .fetch_one(&mut *c)
    .await)?;
    let loses_role = new_role_ids.is_some_and(|ids| !ids.contains(&admin_role));
    if (loses_role || disabled == Some(true)) && other_active_admins(tx, pk).await? == 0 {
        return Err(Error::conflict(format!(
            "'{user_id}' is the last enabled System Admin; make another user System Admin first"
        )));
    }
    Ok(())
}

/// Writes each field of a checked patch (`ips` normalized, `new_role_ids` resolved, `hash`
/// the new password's); disabling or a new password revokes every token of the user.
/// Returns the names of the fields changed.
async fn apply_user_patch(
    tx: &mut Tx,
    pk: i64,
    patch: &UserPatch,
    ips: Option<&str>,
    new_role_ids: Option<&[i64]>,
    hash: Option<&str>,
    now: i64,
) -> Result<Vec<&'static str>> {
    let mut changed: Vec<&'static str> = Vec::new();
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
    if let Some(ips) = ips {
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
    if let Some(ids) = new_role_ids {
        set_roles(tx, pk, ids).await?;
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
            revoke_all_tokens(tx, pk).await?;
        }
        changed.push("disabled");
    }
    if let Some(hash) = hash {
        in_tx!(tx, |c| sqlx::query(
            "UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3"
        )
        .bind(hash)
        .bind(now)
        .bind(pk)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        revoke_all_tokens(tx, pk).await?;
        changed.push("password");
    }
    Ok(changed)
}

impl Identity {
    fn lock_active(&self, locked_at: Option<i64>) -> bool {
        locked_at.is_some_and(|at| {
            self.cfg.lockout_secs == 0 || now_ms() - at < self.cfg.lockout_secs as i64 * 1000
        })
    }

    pub async fn get_user(&self, user_id: &str) -> Result<User> {
        get_user_with(&self.store, user_id, |l| self.lock_active(l)).await
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

    pub async fn create_user(&self, caller: &Caller, new: NewUser) -> Result<User> {
        let actor = &caller.actor;
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
        let id = created_or_taken(inserted, || {
            Error::conflict(format!(
                "a user with user_id '{}' (or one that differs only in case or width) already exists",
                new.user_id
            ))
        })?;
        set_roles(&mut tx, id, &role_ids).await?;
        haechi_audit::append(
            &mut tx,
            actor.event("user.create").target(new.user_id.clone()).detail(serde_json::json!({
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
        caller: &Caller,
        user_id: &str,
        patch: UserPatch,
    ) -> Result<User> {
        let actor = &caller.actor;
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
        keep_an_admin(
            &mut tx,
            pk,
            user_id,
            new_role_ids.as_deref(),
            patch.disabled,
        )
        .await?;
        let changed = apply_user_patch(
            &mut tx,
            pk,
            &patch,
            ips.as_deref(),
            new_role_ids.as_deref(),
            hash.as_deref(),
            now,
        )
        .await?;
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
            actor.event("user.update").target(user_id).detail(detail),
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
        caller: &Caller,
        user_id: &str,
        current: &SecretString,
        new: SecretString,
    ) -> Result<()> {
        let actor = &caller.actor;
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
        let state = lock_login_row(&mut tx, row.id)
            .await?
            .ok_or_else(|| Error::not_found(format_args!("user '{user_id}'")))?;
        let ok = ok && state.password_hash == row.password_hash;
        let locked = self.lock_active(state.locked_at);
        let refused = |reason: &'static str| {
            actor
                .event("user.password")
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
            caller,
            user_id,
            UserPatch {
                password: Some(new),
                ..Default::default()
            },
        )
        .await?;
        Ok(())
    }

    pub async fn delete_user(&self, caller: &Caller, user_id: &str) -> Result<()> {
        let actor = &caller.actor;
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
        haechi_audit::append(&mut tx, actor.event("user.delete").target(user_id)).await?;
        tx.commit().await?;
        self.forget_user(pk).await;
        Ok(())
    }

    /// Lifts a failed-login or inactivity lock.
    pub async fn unlock_user(&self, caller: &Caller, user_id: &str) -> Result<User> {
        caller.require(Permission::AdminUsers)?;
        let actor = &caller.actor;
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
        haechi_audit::append(&mut tx, actor.event("user.unlock").target(user_id)).await?;
        tx.commit().await?;
        self.get_user(user_id).await
    }
}
