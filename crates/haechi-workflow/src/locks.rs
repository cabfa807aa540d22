//! A workflow's edit lock (CONTRACT §9): one editor at a time. `POST .../lock` takes it (or
//! renews it for its holder); while someone holds it, another user's edit (`PUT`, a restore, a
//! delete) answers 423 naming the holder and since when; `DELETE .../lock` releases it (the
//! holder), or breaks it (someone with `admin.settings`; audited with the holder it took).
//! The lock lives in the workflow's row and is read in the same transaction as the edit it
//! guards, so two servers on one PostgreSQL agree on it.

use haechi_identity::{Actor, Permission, Principal};
use haechi_store::{in_tx, Backend, Tx};
use haechi_types::{time::now_ms, Error, Result};
use serde_json::json;

use crate::model::EditLock;
use crate::workflows::find;
use crate::Workflows;

/// Reads (and on PostgreSQL locks) the row's lock holder; `None` when the workflow is gone.
async fn holder(tx: &mut Tx, id: i64) -> Result<Option<(Option<String>, Option<i64>)>> {
    let sql = match tx.backend() {
        Backend::Postgres => {
            "SELECT edit_lock_holder, edit_lock_since FROM workflows WHERE id = $1 AND deleted_at IS NULL FOR UPDATE"
        }
        Backend::Sqlite => {
            "SELECT edit_lock_holder, edit_lock_since FROM workflows WHERE id = $1 AND deleted_at IS NULL"
        }
    };
    Ok(in_tx!(tx, |c| sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(&mut *c)
        .await)?)
}

fn held_by(key: &str, who: &str, since: Option<i64>) -> Error {
    Error::locked(format!(
        "workflow '{key}' is being edited by '{who}' (edit lock held since {}); ask them to release it, or an administrator to break it",
        since.map(haechi_types::time::iso_ms).unwrap_or_default()
    ))
}

/// Inside an edit's transaction: refuses (423) when another user holds the edit lock.
pub(crate) async fn check_edit(tx: &mut Tx, id: i64, key: &str, user: &str) -> Result<()> {
    if let Some((Some(who), since)) = holder(tx, id).await? {
        if who != user {
            return Err(held_by(key, &who, since));
        }
    }
    Ok(())
}

impl Workflows {
    /// Takes (or renews, for its holder) the edit lock of a workflow.
    pub async fn lock_workflow(&self, p: &Principal, actor: &Actor, key: &str) -> Result<EditLock> {
        let row = find(&self.eng.store, key, false).await?;
        let mut tx = self.eng.store.begin().await?;
        let (who, since) = holder(&mut tx, row.id)
            .await?
            .ok_or_else(|| Error::not_found(format_args!("workflow '{key}'")))?;
        if let Some(who) = &who {
            if *who != p.user_id {
                return Err(held_by(key, who, since));
            }
        }
        let since = match (&who, since) {
            (Some(_), Some(s)) => s,
            _ => now_ms(),
        };
        in_tx!(tx, |c| sqlx::query(
            "UPDATE workflows SET edit_lock_holder = $2, edit_lock_since = $3 WHERE id = $1"
        )
        .bind(row.id)
        .bind(&p.user_id)
        .bind(since)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        if who.is_none() {
            haechi_audit::append(
                &mut tx,
                actor
                    .event("admin", "workflow.lock")
                    .target(row.id.to_string())
                    .detail(json!({ "name": row.name })),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(EditLock {
            holder: p.user_id.clone(),
            since,
        })
    }

    /// Releases the edit lock (its holder), or breaks it (`admin.settings`).
    pub async fn unlock_workflow(&self, p: &Principal, actor: &Actor, key: &str) -> Result<()> {
        let row = find(&self.eng.store, key, false).await?;
        let mut tx = self.eng.store.begin().await?;
        let (who, since) = holder(&mut tx, row.id)
            .await?
            .ok_or_else(|| Error::not_found(format_args!("workflow '{key}'")))?;
        let Some(who) = who else {
            return Err(Error::conflict(format!(
                "workflow '{key}' is not locked for editing"
            )));
        };
        let broken = who != p.user_id;
        if broken && !p.can(Permission::AdminSettings) {
            return Err(held_by(key, &who, since));
        }
        in_tx!(tx, |c| sqlx::query(
            "UPDATE workflows SET edit_lock_holder = NULL, edit_lock_since = NULL WHERE id = $1"
        )
        .bind(row.id)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        let action = if broken {
            "workflow.lock.break"
        } else {
            "workflow.unlock"
        };
        haechi_audit::append(
            &mut tx,
            actor
                .event("admin", action)
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
