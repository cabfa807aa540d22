//! Roles in the store (built-in and custom), the permissions they grant, the rules that keep
//! at least one System Admin, and the admin operations on roles.

use haechi_store::{created_or_taken, in_tx, read, Store, Tx};
use haechi_types::{ident, time::now_ms, Error, Result};

use crate::permission::{builtin_roles, Permission, PermissionSet, SYSTEM_ADMIN};
use crate::validation::*;
use crate::{Actor, Caller, Identity, RoleRef};

/// A role as the admin API shows it.
#[derive(Debug, Clone)]
pub struct Role {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub permissions: Vec<Permission>,
    pub builtin: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new role (`POST /api/v1/roles`).
#[derive(Debug)]
pub struct NewRole {
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
}

/// Changes to a custom role.
#[derive(Debug, Default)]
pub struct RolePatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
}

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

pub(crate) async fn role_ids(tx: &mut Tx, names: &[String]) -> Result<Vec<i64>> {
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

pub(crate) async fn set_roles(tx: &mut Tx, user_pk: i64, ids: &[i64]) -> Result<()> {
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

pub(crate) fn stored_permissions(json: &str) -> Result<PermissionSet> {
    let names: Vec<String> = serde_json::from_str(json)?;
    let perms: Vec<Permission> = names.iter().filter_map(|p| Permission::parse(p)).collect();
    Ok(PermissionSet::of(&perms))
}

/// The permissions of a set of roles together.
pub(crate) async fn permissions_of_roles(tx: &mut Tx, ids: &[i64]) -> Result<PermissionSet> {
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
pub(crate) fn refuse_conflict(set: PermissionSet, who: &str) -> Result<()> {
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
pub(crate) async fn other_active_admins(tx: &mut Tx, except: i64) -> Result<i64> {
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

pub(crate) async fn is_admin(tx: &mut Tx, user_pk: i64) -> Result<bool> {
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
pub(crate) async fn check_role_permissions(
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

pub(crate) async fn load_role(store: &Store, key: &str) -> Result<Role> {
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

impl Identity {
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

    pub async fn create_role(&self, caller: &Caller, new: NewRole) -> Result<Role> {
        let actor = &caller.actor;
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
        let id = created_or_taken(r, || {
            Error::conflict(format!(
                "a role named '{}' (or one that differs only in case or width) already exists",
                new.name
            ))
        })?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("role.create")
                .target(new.name.clone())
                .detail(serde_json::json!({ "id": id, "permissions": perms })),
        )
        .await?;
        tx.commit().await?;
        load_role(&self.store, &id.to_string()).await
    }

    pub async fn update_role(&self, caller: &Caller, key: &str, patch: RolePatch) -> Result<Role> {
        let actor = &caller.actor;
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
        created_or_taken(r, || {
            Error::conflict(
                "a role with that name (or one that differs only in case or width) already exists",
            )
        })?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("role.update")
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

    pub async fn delete_role(&self, caller: &Caller, key: &str) -> Result<()> {
        let actor = &caller.actor;
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
                .event("role.delete")
                .target(role.name.clone())
                .detail(serde_json::json!({ "id": role.id })),
        )
        .await?;
        tx.commit().await?;
        self.forget_all().await;
        Ok(())
    }
}
