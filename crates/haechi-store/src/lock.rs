//! Session locks: one holder at a time among the servers sharing a PostgreSQL store.
//!
//! On PostgreSQL a [`SessionLock`] is a session-level advisory lock held on a connection of its
//! own, taken out of the pool: it lasts as long as that connection, so a holder that dies (even
//! by `kill -9`) releases it when PostgreSQL notices the connection is gone, and another server
//! takes it over. On SQLite one process owns the store, so the lock is always granted.

use haechi_types::Result;
use sqlx::pool::PoolConnection;
use sqlx::Postgres;

use crate::{Pools, Store};

/// A held session lock (see the module documentation). Dropping it releases it.
pub struct SessionLock {
    conn: Option<PoolConnection<Postgres>>,
    key: i64,
}

impl Store {
    /// Takes the session lock `key` if nobody holds it (`None` when another session does).
    pub async fn try_session_lock(&self, key: i64) -> Result<Option<SessionLock>> {
        let Pools::Postgres(pool) = &self.pools else {
            return Ok(Some(SessionLock { conn: None, key }));
        };
        let mut conn = pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        if !got {
            return Ok(None);
        }
        Ok(Some(SessionLock {
            conn: Some(conn),
            key,
        }))
    }
}

impl SessionLock {
    /// Whether the lock is still held: its connection still answers (a lost connection has
    /// lost the lock, and another server may hold it now).
    pub async fn alive(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(conn) => sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&mut **conn)
                .await
                .is_ok(),
        }
    }

    /// Releases the lock and gives its connection back.
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let ok = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.key)
                .execute(&mut *conn)
                .await
                .is_ok();
            if !ok {
                // Never hand back a connection that may still hold the lock.
                conn.close_on_drop();
            }
        }
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        // Dropped without `release`: close the connection, which ends the lock with it.
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}
