//! Tokens in the store: lookup, listing and revocation (minting is part of the login, in
//! the crate root).

use haechi_store::{in_tx, read, Store, Tx};
use haechi_types::{time::now_ms, Error, Result};

use crate::users::{get_user, user_pk};
use crate::{Caller, Identity};

/// One of the caller's tokens (never the token itself).
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub id: i64,
    /// The login endpoint that issued it.
    pub family: String,
    pub client_ip: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
    /// The token this request was made with.
    pub current: bool,
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

pub(crate) async fn revoke_all_tokens(tx: &mut Tx, user_pk: i64) -> Result<()> {
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

impl Identity {
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
        caller: &Caller,
        user_id: &str,
        token_id: i64,
    ) -> Result<()> {
        let actor = &caller.actor;
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
                .event("token.revoke")
                .target(token_id.to_string())
                .detail(serde_json::json!({ "user_id": user_id })),
        )
        .await?;
        tx.commit().await?;
        self.forget_token(token_id).await;
        Ok(())
    }
}
