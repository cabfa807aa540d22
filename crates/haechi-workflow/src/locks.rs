//! A workflow's edit lock (CONTRACT §9): one editor at a time. `POST .../lock` takes it (or
//! renews it for its holder); while someone holds it, another user's edit (`PUT`, a restore, a
//! delete) answers 423 naming the holder and since when; `DELETE .../lock` releases it (the
//! holder), or breaks it (someone with `admin.settings`; audited with the holder it took).
//! The lock expires when its holder has not used it (taken, renewed, edited) for
//! `workflow.edit_lock_idle_secs` (30 min by default): the next user to lock or edit takes it
//! over, and the takeover is audited (`workflow.lock.expire`) naming the holder it ended.
//! The lock lives in the workflow's row and is read in the same transaction as the edit it
//! guards, so two servers on one PostgreSQL agree on it.

use haechi_identity::{Actor, Caller, Permission};
use haechi_store::{in_tx, Tx};
use haechi_types::{time::now_ms, Error, Result};
use serde_json::json;

use crate::model::EditLock;
use crate::workflows::find;
use crate::Workflows;

type Holder = (Option<String>, Option<i64>, Option<i64>);

/// Reads (and on PostgreSQL locks) the row's lock holder, since when, and its last use;
/// `None` when the workflow is gone.
async fn holder(tx: &mut Tx, id: i64) -> Result<Option<Holder>> {
    let sql = format!(
        "SELECT edit_lock_holder, edit_lock_since, edit_lock_touched FROM workflows \
         WHERE id = $1 AND deleted_at IS NULL{}",
        tx.for_update()
    );
    Ok(in_tx!(tx, |c| sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *c)
        .await)?)
}

/// When a lock last used at `touched` (or taken at `since`) expires, unix ms.
pub(crate) fn expires_at(since: Option<i64>, touched: Option<i64>, idle_secs: u64) -> i64 {
    touched.or(since).unwrap_or(0) + idle_secs as i64 * 1000
}

fn held_by(key: &str, who: &str, since: Option<i64>, expires: i64) -> Error {
    Error::locked(format!(
        "workflow '{key}' is being edited by '{who}' (edit lock held since {}, expires {} unless they use it); ask them to release it, or an administrator to break it",
        since.map(haechi_types::time::iso_ms).unwrap_or_default(),
        haechi_types::time::iso_ms(expires),
    ))
}

/// An expired lock is ended here (audited), inside the transaction of whoever comes next.
async fn expire(
    tx: &mut Tx,
    id: i64,
    who: &str,
    since: Option<i64>,
    expired: i64,
    actor: &Actor,
) -> Result<()> {
    in_tx!(tx, |c| {
        sqlx::query(
        "UPDATE workflows SET edit_lock_holder = NULL, edit_lock_since = NULL, edit_lock_touched = NULL WHERE id = $1"
    )
    .bind(id)
    .execute(&mut *c)
    .await
    .map(|_| ())
    })?;
    haechi_audit::append(
        tx,
        actor
            .event("workflow.lock.expire")
            .target(id.to_string())
            .detail(json!({
                "holder": who,
                "since": since.map(haechi_types::time::iso_ms),
                "expired": haechi_types::time::iso_ms(expired),
                "taken_by": actor.user_id,
            })),
    )
    .await
    .map(|_| ())
}

/// Inside an edit's transaction: refuses (423) when another user holds the edit lock (an
/// expired one is ended); the holder's edit renews it.
pub(crate) async fn check_edit(
    tx: &mut Tx,
    id: i64,
    key: &str,
    actor: &Actor,
    idle_secs: u64,
) -> Result<()> {
    if let Some((Some(who), since, touched)) = holder(tx, id).await? {
        let expires = expires_at(since, touched, idle_secs);
        if who == actor.user_id {
            in_tx!(tx, |c| sqlx::query(
                "UPDATE workflows SET edit_lock_touched = $2 WHERE id = $1"
            )
            .bind(id)
            .bind(now_ms())
            .execute(&mut *c)
            .await
            .map(|_| ()))?;
        } else if expires <= now_ms() {
            expire(tx, id, &who, since, expires, actor).await?;
        } else {
            return Err(held_by(key, &who, since, expires));
        }
    }
    Ok(())
}

impl Workflows {
    /// Takes (or renews, for its holder) the edit lock of a workflow.
    pub async fn lock_workflow(&self, caller: &Caller, key: &str) -> Result<EditLock> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let row = find(&self.eng.store, key, false).await?;
        let idle = self.eng.cfg.edit_lock_idle_secs;
        let mut tx = self.eng.store.begin().await?;
        let (mut who, mut since, touched) = holder(&mut tx, row.id)
            .await?
            .ok_or_else(|| Error::not_found(format_args!("workflow '{key}'")))?;
        if let Some(w) = &who {
            let expires = expires_at(since, touched, idle);
            if *w != p.user_id {
                if expires > now_ms() {
                    return Err(held_by(key, w, since, expires));
                }
                expire(&mut tx, row.id, w, since, expires, actor).await?;
                who = None;
                since = None;
            }
        }
        let now = now_ms();
        let since = match (&who, since) {
            (Some(_), Some(s)) => s,
            _ => now,
        };
        in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE workflows SET edit_lock_holder = $2, edit_lock_since = $3, edit_lock_touched = $4 WHERE id = $1"
        )
        .bind(row.id)
        .bind(&p.user_id)
        .bind(since)
        .bind(now)
        .execute(&mut *c)
        .await
        .map(|_| ())
        })?;
        if who.is_none() {
            haechi_audit::append(
                &mut tx,
                actor
                    .event("workflow.lock")
                    .target(row.id.to_string())
                    .detail(json!({ "name": row.name })),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(EditLock {
            holder: p.user_id.clone(),
            since,
            expires: expires_at(Some(since), Some(now), idle),
        })
    }

    /// Releases the edit lock (its holder), or breaks it (`admin.settings`).
    pub async fn unlock_workflow(&self, caller: &Caller, key: &str) -> Result<()> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let row = find(&self.eng.store, key, false).await?;
        let mut tx = self.eng.store.begin().await?;
        let (who, since, touched) = holder(&mut tx, row.id)
            .await?
            .ok_or_else(|| Error::not_found(format_args!("workflow '{key}'")))?;
        let expires = expires_at(since, touched, self.eng.cfg.edit_lock_idle_secs);
        let Some(who) = who else {
            return Err(Error::conflict(format!(
                "workflow '{key}' is not locked for editing"
            )));
        };
        let broken = who != p.user_id;
        if broken && !p.can(Permission::AdminSettings) {
            return Err(held_by(key, &who, since, expires));
        }
        in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE workflows SET edit_lock_holder = NULL, edit_lock_since = NULL, edit_lock_touched = NULL WHERE id = $1"
        )
        .bind(row.id)
        .execute(&mut *c)
        .await
        .map(|_| ())
        })?;
        let action = if broken {
            "workflow.lock.break"
        } else {
            "workflow.unlock"
        };
        haechi_audit::append(
            &mut tx,
            actor
                .event(action)
                .target(row.id.to_string())
                .detail(json!({
                    "name": row.name, "holder": who,
                    "since": since.map(haechi_types::time::iso_ms),
                })),
        )
        .await?;
        tx.commit().await
    }
}
