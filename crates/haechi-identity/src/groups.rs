//! User groups: named sets of users. A task names user groups as its runners (issue 24 item
//! 7): only their members may start it. Groups grant no permission by themselves.

use std::collections::{BTreeSet, HashMap};

use haechi_store::{in_tx, read, Tx};
use haechi_types::{ident, time::now_ms, Error, Result};

use crate::{Caller, Identity};

/// A user group.
#[derive(Debug, Clone)]
pub struct UserGroup {
    pub name: String,
    pub description: String,
    /// Member user ids, sorted.
    pub members: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `POST /api/v1/user-groups` and `PUT /api/v1/user-groups/{name}` body; on `PUT` an absent
/// field keeps its value.
#[derive(Debug, Clone, Default)]
pub struct UserGroupSpec {
    /// The group's name (create only; on `PUT` it must match the path when given).
    pub name: Option<String>,
    pub description: Option<String>,
    /// Member user ids (each must exist).
    pub members: Option<Vec<String>>,
}

/// Group names: 1–128 letters (any script), digits, `.`, `_`, `-`.
fn check_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 128 {
        return Err(Error::field(field, "must be 1 to 128 characters long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::field(
            field,
            format_args!("may hold letters, digits, '.', '_' and '-' only (found {c:?})"),
        ));
    }
    ident::check(field, name, 128, ident::Spaces::Refused)
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    name: String,
    description: String,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

impl Identity {
    fn group_fields(
        spec: UserGroupSpec,
        base: Option<&UserGroup>,
    ) -> Result<(String, Vec<String>)> {
        let description = spec
            .description
            .or_else(|| base.map(|b| b.description.clone()))
            .unwrap_or_default();
        if description.chars().count() > 2000 {
            return Err(Error::field(
                "description",
                "must be at most 2000 characters",
            ));
        }
        ident::check_no_control("description", &description)?;
        let members = spec
            .members
            .or_else(|| base.map(|b| b.members.clone()))
            .unwrap_or_default();
        if members.len() > 10_000 {
            return Err(Error::field("members", "at most 10000 members"));
        }
        let mut seen = BTreeSet::new();
        for (i, m) in members.iter().enumerate() {
            if m.is_empty() || m.len() > 256 {
                return Err(Error::field(format!("members[{i}]"), "must be a user id"));
            }
            if !seen.insert(m.as_str()) {
                return Err(Error::field(
                    "members",
                    format_args!("lists user '{m}' twice"),
                ));
            }
        }
        Ok((description, members))
    }

    async fn write_group_members(tx: &mut Tx, name: &str, members: &[String]) -> Result<()> {
        for m in members {
            let found: Option<String> = in_tx!(tx, |c| sqlx::query_scalar(
                "SELECT user_id FROM users WHERE user_id = $1"
            )
            .bind(m)
            .fetch_optional(&mut *c)
            .await)?;
            if found.is_none() {
                return Err(Error::field(
                    "members",
                    format_args!("user '{m}' does not exist"),
                ));
            }
        }
        in_tx!(tx, |c| sqlx::query(
            "DELETE FROM user_group_members WHERE group_name = $1"
        )
        .bind(name)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        for m in members {
            in_tx!(tx, |c| sqlx::query(
                "INSERT INTO user_group_members (group_name, user_id) VALUES ($1, $2)"
            )
            .bind(name)
            .bind(m)
            .execute(&mut *c)
            .await
            .map(|_| ()))?;
        }
        Ok(())
    }

    /// Creates a user group.
    pub async fn create_user_group(
        &self,
        caller: &Caller,
        spec: UserGroupSpec,
    ) -> Result<UserGroup> {
        let actor = &caller.actor;
        let name = spec
            .name
            .clone()
            .ok_or_else(|| Error::field("name", "is required"))?;
        check_name("name", &name)?;
        let (description, members) = Self::group_fields(spec, None)?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let inserted = in_tx!(tx, |c| sqlx::query(
            "INSERT INTO user_groups (name, description, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO NOTHING"
        )
        .bind(&name)
        .bind(&description)
        .bind(&actor.user_id)
        .bind(now)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        if inserted == 0 {
            return Err(Error::conflict(format!(
                "user group '{name}' already exists; change it with PUT /api/v1/user-groups/{name}"
            )));
        }
        Self::write_group_members(&mut tx, &name, &members).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("user_group.create")
                .target(name.clone())
                .detail(serde_json::json!({ "members": members })),
        )
        .await?;
        tx.commit().await?;
        self.get_user_group(&name).await
    }

    /// Changes a user group (absent fields keep their value).
    pub async fn update_user_group(
        &self,
        caller: &Caller,
        name: &str,
        spec: UserGroupSpec,
    ) -> Result<UserGroup> {
        let actor = &caller.actor;
        if let Some(n) = spec.name.as_deref().filter(|n| *n != name) {
            return Err(Error::field(
                "name",
                format_args!("the body names group '{n}' but the path names '{name}'; a group cannot be renamed"),
            ));
        }
        let current = self.get_user_group(name).await?;
        let (description, members) = Self::group_fields(spec, Some(&current))?;
        let mut tx = self.store.begin().await?;
        let updated = in_tx!(tx, |c| sqlx::query(
            "UPDATE user_groups SET description = $2, updated_at = $3 WHERE name = $1"
        )
        .bind(name)
        .bind(&description)
        .bind(now_ms())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        if updated == 0 {
            return Err(Error::not_found(format_args!("user group '{name}'")));
        }
        Self::write_group_members(&mut tx, name, &members).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("user_group.update")
                .target(name)
                .detail(serde_json::json!({ "members": members })),
        )
        .await?;
        tx.commit().await?;
        self.get_user_group(name).await
    }

    /// Deletes a user group (tasks that name it as a runner group keep the name: nobody is
    /// its member any more, so they refuse every runner until they are edited).
    pub async fn delete_user_group(&self, caller: &Caller, name: &str) -> Result<()> {
        let actor = &caller.actor;
        let mut tx = self.store.begin().await?;
        in_tx!(tx, |c| sqlx::query(
            "DELETE FROM user_group_members WHERE group_name = $1"
        )
        .bind(name)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        let deleted = in_tx!(tx, |c| sqlx::query(
            "DELETE FROM user_groups WHERE name = $1"
        )
        .bind(name)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        if deleted == 0 {
            return Err(Error::not_found(format_args!("user group '{name}'")));
        }
        haechi_audit::append(&mut tx, actor.event("user_group.delete").target(name)).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_user_group(&self, name: &str) -> Result<UserGroup> {
        let row: Option<GroupRow> = read!(self.store, |db| {
            sqlx::query_as(
            "SELECT name, description, created_by, created_at, updated_at FROM user_groups WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(db)
        .await
        })?;
        let r = row.ok_or_else(|| Error::not_found(format_args!("user group '{name}'")))?;
        let members: Vec<String> = read!(self.store, |db| sqlx::query_scalar(
            "SELECT user_id FROM user_group_members WHERE group_name = $1 ORDER BY user_id"
        )
        .bind(name)
        .fetch_all(db)
        .await)?;
        Ok(UserGroup {
            name: r.name,
            description: r.description,
            members,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }

    /// Every user group, by name.
    pub async fn list_user_groups(&self) -> Result<Vec<UserGroup>> {
        let rows: Vec<GroupRow> = read!(self.store, |db| {
            sqlx::query_as(
            "SELECT name, description, created_by, created_at, updated_at FROM user_groups ORDER BY name"
        )
        .fetch_all(db)
        .await
        })?;
        let members: Vec<(String, String)> = read!(self.store, |db| sqlx::query_as(
            "SELECT group_name, user_id FROM user_group_members ORDER BY group_name, user_id"
        )
        .fetch_all(db)
        .await)?;
        let mut by_group: HashMap<String, Vec<String>> = HashMap::new();
        for (g, u) in members {
            by_group.entry(g).or_default().push(u);
        }
        Ok(rows
            .into_iter()
            .map(|r| UserGroup {
                members: by_group.remove(&r.name).unwrap_or_default(),
                name: r.name,
                description: r.description,
                created_by: r.created_by,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
            .collect())
    }
}
