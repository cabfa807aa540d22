//! Row locks for a transaction that reads rows and then changes them.
//!
//! On PostgreSQL several servers may write at once, so such a transaction locks the rows it
//! read (`FOR UPDATE`, or `FOR SHARE` to keep them from changing) until it ends. SQLite needs
//! nothing: every write transaction starts with `BEGIN IMMEDIATE` on the one writer connection,
//! so they already run one at a time. The queries stay written once; only these suffixes differ.

use haechi_types::Result;
use sqlx::{Encode, Postgres, Type};

use crate::{Backend, Tx};

impl Backend {
    /// ` FOR UPDATE` on PostgreSQL, nothing on SQLite: the end of a `SELECT` whose rows the
    /// transaction goes on to change.
    pub fn for_update(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// ` FOR UPDATE OF <alias>` on PostgreSQL, nothing on SQLite: locks only the rows of
    /// `alias` in a join.
    pub fn for_update_of(self, alias: &str) -> String {
        match self {
            Backend::Postgres => format!(" FOR UPDATE OF {alias}"),
            Backend::Sqlite => String::new(),
        }
    }

    /// ` FOR SHARE` on PostgreSQL, nothing on SQLite: the rows read may not change until the
    /// transaction ends, and other readers still may read them.
    pub fn for_share(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR SHARE",
            Backend::Sqlite => "",
        }
    }
}

impl Tx {
    /// [`Backend::for_update`] of this transaction's backend.
    pub fn for_update(&self) -> &'static str {
        self.backend().for_update()
    }

    /// Locks the row of `table` whose `key_column` is `key` until the transaction ends
    /// (PostgreSQL; nothing to do on SQLite), so that transactions that change the row one
    /// after another each see the previous one's result. A missing row is not an error.
    pub async fn lock_row<K>(&mut self, table: &str, key_column: &str, key: K) -> Result<()>
    where
        K: for<'q> Encode<'q, Postgres> + Type<Postgres> + Send,
    {
        if let Tx::Postgres(t) = self {
            let sql = lock_row_sql(table, key_column);
            sqlx::query(&sql).bind(key).execute(&mut **t).await?;
        }
        Ok(())
    }
}

fn lock_row_sql(table: &str, key_column: &str) -> String {
    format!("SELECT 1 FROM {table} WHERE {key_column} = $1 FOR UPDATE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_locks_and_sqlite_adds_nothing() {
        assert_eq!(Backend::Postgres.for_update(), " FOR UPDATE");
        assert_eq!(Backend::Postgres.for_share(), " FOR SHARE");
        assert_eq!(Backend::Postgres.for_update_of("c"), " FOR UPDATE OF c");
        assert_eq!(Backend::Sqlite.for_update(), "");
        assert_eq!(Backend::Sqlite.for_share(), "");
        assert_eq!(Backend::Sqlite.for_update_of("c"), "");
        assert_eq!(
            lock_row_sql("tasks", "id"),
            "SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE"
        );
    }

    #[tokio::test]
    async fn lock_row_runs_nothing_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::Store::open_sqlite(&dir.path().join("s.db"), 1)
            .await
            .expect("open");
        let mut tx = store.begin().await.expect("begin");
        assert_eq!(tx.for_update(), "");
        // No such table: on SQLite no statement is sent, so this cannot fail.
        tx.lock_row("no_such_table", "id", 1_i64)
            .await
            .expect("nothing to lock on SQLite");
        tx.commit().await.expect("commit");
    }
}
