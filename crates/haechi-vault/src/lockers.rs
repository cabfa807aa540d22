//! Lockers: their members (`own`, `manage`, `participate`), consumers (roles) and credentials.

use std::collections::HashMap;

use haechi_identity::{Caller, Permission, Principal};
use haechi_store::{created_or_taken, in_tx, read, Tx, Where};
use haechi_types::{time::now_ms, Error, Result};
use serde_json::json;

use crate::access::{self, LockerAccess};
use crate::credentials::{not_modified, user_exists_tx, version_conflict};
use crate::model::{
    Credential, CredentialFilter, Locker, LockerFilter, LockerPatch, Member, Perms, Stamp,
};
use crate::sql::{self, bind_args, Arg, LockerRow, MemberRow, LOCKER_COLS};
use crate::{check_description, check_name, Vault};

fn locker_target(id: i64) -> String {
    format!("locker:{id}")
}

/// Marks a locker changed (members and consumers are part of the locker).
async fn touch_locker(tx: &mut Tx, locker: i64, by: i64) -> Result<()> {
    in_tx!(tx, |c| {
        sqlx::query(
        "UPDATE vault_lockers SET updated_by = $1, updated_at = $2, version = version + 1 WHERE id = $3"
    )
    .bind(by)
    .bind(now_ms())
    .bind(locker)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

async fn member_tx(tx: &mut Tx, locker: i64, user: i64) -> Result<Option<Perms>> {
    let row: Option<MemberRow> = in_tx!(tx, |c| {
        sqlx::query_as(
        "SELECT locker_id, user_id, can_own, can_manage, can_participate FROM vault_locker_members \
         WHERE locker_id = $1 AND user_id = $2"
    )
    .bind(locker)
    .bind(user)
    .fetch_optional(&mut *c)
    .await
    })?;
    Ok(row.map(|r| r.perms()))
}

async fn other_owners_tx(tx: &mut Tx, locker: i64, user: i64) -> Result<i64> {
    Ok(in_tx!(tx, |c| {
        sqlx::query_scalar(
        "SELECT COUNT(*) FROM vault_locker_members WHERE locker_id = $1 AND user_id <> $2 AND can_own"
    )
    .bind(locker)
    .bind(user)
    .fetch_one(&mut *c)
    .await
    })?)
}

fn last_owner(locker: i64) -> Error {
    Error::conflict(format!(
        "locker {locker} must keep at least one member with the 'own' permission; give 'own' to someone else first"
    ))
}

impl Vault {
    /// Creates a locker; the caller becomes its member with `own`, `manage` and `participate`.
    pub async fn create_locker(
        &self,
        caller: &Caller,
        name: String,
        description: Option<String>,
    ) -> Result<Locker> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        check_name("name", &name)?;
        if let Some(d) = &description {
            check_description("description", d)?;
        }
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let inserted = in_tx!(tx, |c| {
            sqlx::query_scalar::<_, i64>(
            "INSERT INTO vault_lockers (name, description, created_by, created_at, updated_by, updated_at, version) \
             VALUES ($1, $2, $3, $4, $3, $4, 0) RETURNING id"
        )
        .bind(&name)
        .bind(&description)
        .bind(p.id)
        .bind(now)
        .fetch_one(&mut *c)
        .await
        });
        // Names are unique per creator (issue 18 item 10): only lockers the caller made can
        // collide, so the answer tells nothing about anyone else's.
        let id = created_or_taken(inserted, || {
            Error::conflict(format!(
                "you already made a locker named '{name}'; choose another name"
            ))
        })?;
        set_member_row(&mut tx, id, p.id, Perms::ALL).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("locker.create")
                .target(locker_target(id))
                .detail(json!({ "name": name })),
        )
        .await?;
        tx.commit().await?;
        Ok(Locker {
            id,
            name,
            description,
            stamp: Stamp::new(p.id, now),
            members: None,
            count_of_credentials: None,
        })
    }

    /// The lockers the caller is a member or consumer of (all for a Locker Admin); with
    /// `advanced`, each with its members and credential count.
    pub async fn list_lockers(&self, p: &Principal, f: &LockerFilter) -> Result<Vec<Locker>> {
        let mut w = Where::default();
        let uid = w.arg(Arg::Int(p.id));
        let admin = w.arg(Arg::Bool(p.can(Permission::VaultLockerAdmin)));
        w.raw(sql::locker_visible(&uid, &admin));
        match f.consumed {
            Some(true) => w.raw(sql::is_consumer("l.id", &uid)),
            Some(false) => w.raw(format!("NOT {}", sql::is_consumer("l.id", &uid))),
            None => {}
        }
        let (limit, offset) = f.page.unwrap_or((i64::MAX, 0));
        let limit = w.arg(Arg::Int(limit));
        let offset = w.arg(Arg::Int(offset));
        let ids = format!(
            "SELECT l.id FROM vault_lockers l{} ORDER BY l.id LIMIT {limit} OFFSET {offset}",
            w.sql()
        );
        let args = w.args;
        let sql = format!(
            "SELECT {LOCKER_COLS}, (SELECT COUNT(*) FROM vault_credentials c WHERE c.locker_id = l.id) AS count \
             FROM vault_lockers l WHERE l.id IN ({ids}) ORDER BY l.id"
        );
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            locker: LockerRow,
            count: i64,
        }
        let rows: Vec<Row> = read!(self.store, |db| bind_args!(sqlx::query_as(&sql), args)
            .fetch_all(db)
            .await)?;
        let mut members: HashMap<i64, Vec<Member>> = HashMap::new();
        if f.advanced {
            let sql = format!(
                "SELECT locker_id, user_id, can_own, can_manage, can_participate FROM vault_locker_members \
                 WHERE locker_id IN ({ids}) ORDER BY locker_id, user_id"
            );
            let rows: Vec<MemberRow> =
                read!(self.store, |db| bind_args!(sqlx::query_as(&sql), args)
                    .fetch_all(db)
                    .await)?;
            for m in rows {
                members.entry(m.locker_id).or_default().push(Member {
                    user_id: m.user_id,
                    perms: m.perms(),
                });
            }
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                let id = r.locker.id;
                let mut l = r.locker.into_locker();
                if f.advanced {
                    l.members = Some(members.remove(&id).unwrap_or_default());
                    l.count_of_credentials = Some(r.count);
                }
                l
            })
            .collect())
    }

    pub async fn get_locker(&self, p: &Principal, id: i64) -> Result<Locker> {
        Ok(access::locker(&self.store, p, id)
            .await?
            .require_visible()?
            .row
            .into_locker())
    }

    /// Changes a locker's name or description (`own`, `manage`, Locker Admin).
    pub async fn update_locker(
        &self,
        caller: &Caller,
        id: i64,
        patch: LockerPatch,
    ) -> Result<Locker> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        if let Some(n) = &patch.name {
            check_name("name", n)?;
        }
        if let Some(d) = &patch.description {
            check_description("description", d)?;
        }
        let mut tx = self.store.begin().await?;
        let acc = access::locker_tx(&mut tx, p, id).await?.require_visible()?;
        acc.require_manage()?;
        let row = &acc.row;
        if patch.version != row.stamp.version {
            return Err(version_conflict(
                &format!("locker {id}"),
                patch.version,
                row.stamp.version,
            ));
        }
        let name = patch.name.filter(|n| *n != row.name);
        let description = patch
            .description
            .filter(|d| Some(d) != row.description.as_ref());
        if name.is_none() && description.is_none() {
            return Err(not_modified(&format!("locker {id}")));
        }
        let now = now_ms();
        let updated = in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE vault_lockers SET name = $1, description = $2, updated_by = $3, updated_at = $4, version = version + 1 \
             WHERE id = $5 AND version = $6"
        )
        .bind(name.as_ref().unwrap_or(&row.name))
        .bind(description.as_ref().or(row.description.as_ref()))
        .bind(p.id)
        .bind(now)
        .bind(id)
        .bind(patch.version)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        });
        let updated = created_or_taken(updated, || {
            Error::conflict(format!(
                "the creator of locker {id} already made a locker named '{}'; choose another name",
                name.as_deref().unwrap_or_default()
            ))
        })?;
        if updated != 1 {
            return Err(version_conflict(
                &format!("locker {id}"),
                patch.version,
                patch.version + 1,
            ));
        }
        haechi_audit::append(
            &mut tx,
            actor.event("locker.update").target(locker_target(id)).detail(json!({
                "name": name, "description_changed": description.is_some(), "version": patch.version + 1,
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(Locker {
            id,
            name: name.unwrap_or_else(|| row.name.clone()),
            description: description.or_else(|| row.description.clone()),
            stamp: Stamp {
                updated_by: p.id,
                updated_at: now,
                version: patch.version + 1,
                ..row.stamp
            },
            members: None,
            count_of_credentials: None,
        })
    }

    /// Deletes an empty locker (`own` or Locker Admin); one that holds credentials is 409.
    pub async fn delete_locker(&self, caller: &Caller, id: i64) -> Result<()> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let mut tx = self.store.begin().await?;
        let acc = access::locker_tx(&mut tx, p, id).await?.require_visible()?;
        acc.require_own("deleting the locker")?;
        let held: i64 = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM vault_credentials WHERE locker_id = $1"
        )
        .bind(id)
        .fetch_one(&mut *c)
        .await)?;
        if held > 0 {
            return Err(Error::conflict(format!(
                "locker {id} holds {held} credential(s): remove them from it first (DELETE .../lockers/{id}/credentials/{{credentialId}})"
            )));
        }
        in_tx!(tx, |c| sqlx::query(
            "DELETE FROM vault_lockers WHERE id = $1"
        )
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("locker.delete")
                .target(locker_target(id))
                .detail(json!({ "name": acc.row.name })),
        )
        .await?;
        tx.commit().await
    }

    /// The role ids that consume a locker's credentials.
    pub async fn list_consumers(&self, p: &Principal, id: i64) -> Result<Vec<i64>> {
        access::locker(&self.store, p, id)
            .await?
            .require_visible()?;
        Ok(read!(self.store, |db| sqlx::query_scalar(
            "SELECT role_id FROM vault_locker_consumers WHERE locker_id = $1 ORDER BY role_id"
        )
        .bind(id)
        .fetch_all(db)
        .await)?)
    }

    /// Makes a role a consumer of a locker (`own`, `manage`, Locker Admin). The role must
    /// exist; one already a consumer is 304. A role the caller holds only an `own` member may
    /// add (403 otherwise), so that managing a locker never turns into reading its values.
    pub async fn add_consumer(&self, caller: &Caller, id: i64, role: i64) -> Result<()> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let mut tx = self.store.begin().await?;
        let acc = access::locker_tx(&mut tx, p, id).await?.require_visible()?;
        acc.require_manage()?;
        let role_name: Option<String> = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT name FROM roles WHERE id = $1"
        )
        .bind(role)
        .fetch_optional(&mut *c)
        .await)?;
        let Some(role_name) = role_name else {
            return Err(Error::field(
                "id",
                format_args!("there is no role with id {role} (GET /api/v1/roles lists them)"),
            ));
        };
        // Administering a locker never becomes reading it (CONTRACT §6): a Locker Admin or a
        // `manage` member may not make a role they hold a consumer; only an `own` member may.
        if p.has_role_id(role) && !acc.member.own {
            return Err(Error::forbidden(format!(
                "you hold role '{role_name}': making it a consumer of locker {id} would let you \
                 read the locker's values, and administering a locker ('manage', Locker Admin) \
                 never grants that; a member with 'own' in the locker may add it"
            )));
        }
        let inserted = in_tx!(tx, |c| {
            sqlx::query(
            "INSERT INTO vault_locker_consumers (locker_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        )
        .bind(id)
        .bind(role)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        })?;
        if inserted == 0 {
            return Err(not_modified(&format!(
                "role {role} already consumes locker {id}"
            )));
        }
        touch_locker(&mut tx, id, p.id).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("locker.consumer.add")
                .target(locker_target(id))
                .detail(json!({ "role": role, "role_name": role_name })),
        )
        .await?;
        tx.commit().await
    }

    pub async fn remove_consumer(&self, caller: &Caller, id: i64, role: i64) -> Result<()> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let mut tx = self.store.begin().await?;
        let acc = access::locker_tx(&mut tx, p, id).await?.require_visible()?;
        acc.require_manage()?;
        let deleted = in_tx!(tx, |c| sqlx::query(
            "DELETE FROM vault_locker_consumers WHERE locker_id = $1 AND role_id = $2"
        )
        .bind(id)
        .bind(role)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        if deleted == 0 {
            return Err(Error::not_found(format_args!(
                "role {role} among the consumers of locker {id}"
            )));
        }
        touch_locker(&mut tx, id, p.id).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("locker.consumer.remove")
                .target(locker_target(id))
                .detail(json!({ "role": role })),
        )
        .await?;
        tx.commit().await
    }

    pub async fn list_members(&self, p: &Principal, id: i64) -> Result<Vec<Member>> {
        access::locker(&self.store, p, id)
            .await?
            .require_visible()?;
        let rows: Vec<MemberRow> = read!(self.store, |db| {
            sqlx::query_as(
            "SELECT locker_id, user_id, can_own, can_manage, can_participate FROM vault_locker_members \
             WHERE locker_id = $1 ORDER BY user_id"
        )
        .bind(id)
        .fetch_all(db)
        .await
        })?;
        Ok(rows
            .into_iter()
            .map(|m| Member {
                user_id: m.user_id,
                perms: m.perms(),
            })
            .collect())
    }

    /// Adds a member or changes their permissions (`own`, `manage`, Locker Admin). Granting or
    /// changing `own` takes `own` (or Locker Admin); the last owner cannot lose it. The same
    /// permissions again are 304.
    pub async fn set_member(
        &self,
        caller: &Caller,
        id: i64,
        user: i64,
        perms: Perms,
    ) -> Result<()> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        if !perms.any() {
            return Err(Error::field(
                "permissions",
                "name at least one of 'own', 'manage', 'participate' (to remove a member, DELETE it)",
            ));
        }
        let mut tx = self.store.begin().await?;
        let acc = access::locker_tx(&mut tx, p, id).await?.require_visible()?;
        acc.require_manage()?;
        if !user_exists_tx(&mut tx, user).await? {
            return Err(Error::not_found(format_args!("user {user}")));
        }
        let current = member_tx(&mut tx, id, user).await?;
        let touches_own = perms.own || current.is_some_and(|c| c.own);
        if touches_own && !acc.owns() {
            return Err(Error::forbidden(format!(
                "granting or changing the 'own' permission in locker {id} needs 'own' in it (or Locker Admin)"
            )));
        }
        // A Locker Admin who made themselves `own` could then make their own role a
        // consumer: administering a locker never becomes reading it.
        if user == p.id && perms.own && !current.is_some_and(|c| c.own) {
            return Err(Error::forbidden(format!(
                "you may not grant yourself 'own' in locker {id}: an owner decides who reads its \
                 values, and administering lockers never grants that; another owner must"
            )));
        }
        if current == Some(perms) {
            return Err(not_modified(&format!(
                "user {user} already has these permissions in locker {id}"
            )));
        }
        if current.is_some_and(|c| c.own)
            && !perms.own
            && other_owners_tx(&mut tx, id, user).await? == 0
        {
            return Err(last_owner(id));
        }
        set_member_row(&mut tx, id, user, perms).await?;
        touch_locker(&mut tx, id, p.id).await?;
        haechi_audit::append(
            &mut tx,
            actor.event("locker.member.set").target(locker_target(id)).detail(json!({
                "user": user, "permissions": perms.names(), "previous": current.map(Perms::names),
            })),
        )
        .await?;
        tx.commit().await
    }

    /// Removes a member (`own`, `manage`, Locker Admin; anyone may leave). Removing an owner
    /// takes `own`; the last owner cannot be removed.
    pub async fn remove_member(&self, caller: &Caller, id: i64, user: i64) -> Result<()> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let mut tx = self.store.begin().await?;
        let acc: LockerAccess = access::locker_tx(&mut tx, p, id).await?.require_visible()?;
        let Some(current) = member_tx(&mut tx, id, user).await? else {
            return Err(Error::not_found(format_args!(
                "user {user} among the members of locker {id}"
            )));
        };
        if user != p.id {
            acc.require_manage()?;
            if current.own {
                acc.require_own("removing an owner")?;
            }
        }
        if current.own && other_owners_tx(&mut tx, id, user).await? == 0 {
            return Err(last_owner(id));
        }
        in_tx!(tx, |c| sqlx::query(
            "DELETE FROM vault_locker_members WHERE locker_id = $1 AND user_id = $2"
        )
        .bind(id)
        .bind(user)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        touch_locker(&mut tx, id, p.id).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("locker.member.remove")
                .target(locker_target(id))
                .detail(json!({ "user": user, "permissions": current.names() })),
        )
        .await?;
        tx.commit().await
    }

    /// Puts a credential into a locker: its owner, being a member of the locker (any
    /// permission), or a Locker Admin. Already there is 304; in another locker is 409.
    pub async fn add_credential_to_locker(
        &self,
        caller: &Caller,
        id: i64,
        credential: i64,
    ) -> Result<Credential> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let mut tx = self.store.begin().await?;
        let locker = access::locker_tx(&mut tx, p, id).await?.require_visible()?;
        let cred = access::credential_tx(&mut tx, p, credential)
            .await?
            .require_visible()?;
        if !(locker.admin || (cred.owner() && locker.member.any())) {
            return Err(Error::forbidden(format!(
                "only the owner of credential {credential}, as a member of locker {id}, may put it there (or a Locker Admin)"
            )));
        }
        match cred.row.locker_id {
            Some(l) if l == id => {
                return Err(not_modified(&format!(
                    "credential {credential} is already in locker {id}"
                )))
            }
            Some(l) => {
                return Err(Error::conflict(format!(
                    "credential {credential} is in locker {l}: remove it from there first"
                )))
            }
            None => {}
        }
        move_credential(&mut tx, credential, Some(id), p.id).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("locker.credential.add")
                .target(locker_target(id))
                .detail(json!({ "credential": credential, "name": cred.row.name })),
        )
        .await?;
        tx.commit().await?;
        self.get_credential(p, credential).await
    }

    /// The credentials in a locker that the caller may see (a `participate`-only member sees
    /// only their own).
    pub async fn list_locker_credentials(
        &self,
        p: &Principal,
        id: i64,
        page: Option<(i64, i64)>,
    ) -> Result<Vec<Credential>> {
        access::locker(&self.store, p, id)
            .await?
            .require_visible()?;
        self.query_credentials(
            p,
            &CredentialFilter {
                page,
                ..Default::default()
            },
            Some(id),
        )
        .await
    }

    /// Takes a credential out of a locker: `own`/`manage` members, Locker Admin, or the
    /// credential's owner as a member.
    pub async fn remove_credential_from_locker(
        &self,
        caller: &Caller,
        id: i64,
        credential: i64,
    ) -> Result<()> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let mut tx = self.store.begin().await?;
        let locker = access::locker_tx(&mut tx, p, id).await?.require_visible()?;
        let cred = access::credential_tx(&mut tx, p, credential).await?;
        if cred.row.locker_id != Some(id) || !cred.visible() {
            return Err(Error::not_found(format_args!(
                "credential {credential} in locker {id}"
            )));
        }
        if !(locker.manages() || (cred.owner() && locker.member.any())) {
            return Err(Error::forbidden(format!(
                "removing credential {credential} from locker {id} needs 'own' or 'manage' there, or being its owner and a member"
            )));
        }
        move_credential(&mut tx, credential, None, p.id).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("locker.credential.remove")
                .target(locker_target(id))
                .detail(json!({ "credential": credential, "name": cred.row.name })),
        )
        .await?;
        tx.commit().await
    }
}

async fn set_member_row(tx: &mut Tx, locker: i64, user: i64, perms: Perms) -> Result<()> {
    in_tx!(tx, |c| {
        sqlx::query(
        "INSERT INTO vault_locker_members (locker_id, user_id, can_own, can_manage, can_participate) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (locker_id, user_id) DO UPDATE SET can_own = $3, can_manage = $4, can_participate = $5"
    )
    .bind(locker)
    .bind(user)
    .bind(perms.own)
    .bind(perms.manage)
    .bind(perms.participate)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

async fn move_credential(tx: &mut Tx, credential: i64, locker: Option<i64>, by: i64) -> Result<()> {
    in_tx!(tx, |c| {
        sqlx::query(
        "UPDATE vault_credentials SET locker_id = $1, updated_by = $2, updated_at = $3, version = version + 1 WHERE id = $4"
    )
    .bind(locker)
    .bind(by)
    .bind(now_ms())
    .bind(credential)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}
