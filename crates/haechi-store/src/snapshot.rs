//! Consistent snapshots of a live store, for `haechi backup`, and what a snapshot holds (schema
//! version, row counts, the audit chain's head), for its manifest and for `haechi doctor`.
//!
//! SQLite: `VACUUM INTO` writes a new database file from one read transaction, so it is a
//! consistent copy of everything committed when it began, taken while the server keeps writing
//! (WAL readers never block the writer). PostgreSQL: a `REPEATABLE READ` transaction exports
//! its snapshot (`pg_export_snapshot`); `pg_dump --snapshot` dumps exactly that state, and the
//! manifest's counts are read in the same snapshot.

use std::collections::BTreeMap;
use std::path::Path;

use haechi_types::{Error, Result};
use sqlx::{Connection, PgConnection};

use crate::{read, Backend, Pools, Store, MIGRATIONS};

/// The newest schema version this binary knows.
pub fn latest_schema_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// What a store (or a snapshot of one) holds, in summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// The newest migration applied (0 for an empty store).
    pub schema_version: i64,
    /// Rows per table (every table of the schema).
    pub counts: BTreeMap<String, i64>,
    /// The audit chain's head: sequence number and hash.
    pub audit_head: (i64, String),
    /// The vault's mode (`Express` / `Manual`), when the vault was initialized.
    pub vault_mode: Option<String>,
}

const SQLITE_TABLES: &str =
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name";
const PG_TABLES: &str =
    "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename";

/// Quotes an identifier read from the catalog (names are the schema's own; quoting keeps any
/// character harmless).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Store {
    /// Writes a consistent copy of a SQLite store to `dest` (which must not exist) while the
    /// store stays in use. An error on PostgreSQL (use [`PgSnapshot`]).
    pub async fn snapshot_sqlite_into(&self, dest: &Path) -> Result<()> {
        let Pools::Sqlite { reader, .. } = &self.pools else {
            return Err(Error::invalid(
                "VACUUM INTO snapshots are for SQLite stores; PostgreSQL is dumped with pg_dump",
            ));
        };
        let dest = dest
            .to_str()
            .ok_or_else(|| Error::invalid(format!("{} is not a UTF-8 path", dest.display())))?;
        sqlx::query("VACUUM INTO $1")
            .bind(dest)
            .execute(&**reader)
            .await?;
        Ok(())
    }

    /// The newest migration applied to this store (0 when it has none yet).
    pub async fn schema_version(&self) -> Result<i64> {
        let exists = self.has_table("haechi_migrations").await?;
        if !exists {
            return Ok(0);
        }
        let v: Option<i64> = read!(self, |db| sqlx::query_scalar(
            "SELECT MAX(version) FROM haechi_migrations"
        )
        .fetch_one(db)
        .await)?;
        Ok(v.unwrap_or(0))
    }

    /// Whether the schema has a table of this name.
    pub async fn has_table(&self, name: &str) -> Result<bool> {
        let n: i64 = match self.backend() {
            Backend::Sqlite => read!(self, |db| sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
            )
            .bind(name)
            .fetch_one(db)
            .await)?,
            Backend::Postgres => read!(self, |db| {
                sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1"
            )
            .bind(name)
            .fetch_one(db)
            .await
            })?,
        };
        Ok(n > 0)
    }

    /// The store's inventory, read table by table (not one snapshot: for a consistent one, read
    /// it from a SQLite snapshot file or a [`PgSnapshot`]).
    pub async fn inventory(&self) -> Result<Inventory> {
        let tables: Vec<String> = match self.backend() {
            Backend::Sqlite => read!(self, |db| sqlx::query_scalar(SQLITE_TABLES)
                .fetch_all(db)
                .await)?,
            Backend::Postgres => {
                read!(self, |db| sqlx::query_scalar(PG_TABLES).fetch_all(db).await)?
            }
        };
        let mut counts = BTreeMap::new();
        for t in &tables {
            let sql = format!("SELECT COUNT(*) FROM {}", quote_ident(t));
            let n: i64 = read!(self, |db| sqlx::query_scalar(&sql).fetch_one(db).await)?;
            counts.insert(t.clone(), n);
        }
        let schema_version = self.schema_version().await?;
        let audit_head = if tables.iter().any(|t| t == "audit_head") {
            read!(self, |db| sqlx::query_as(
                "SELECT seq, hash FROM audit_head WHERE id = 1"
            )
            .fetch_optional(db)
            .await)?
            .unwrap_or((0, String::new()))
        } else {
            (0, String::new())
        };
        let vault_mode = if tables.iter().any(|t| t == "vault_state") {
            read!(self, |db| sqlx::query_scalar(
                "SELECT mode FROM vault_state WHERE id = 1"
            )
            .fetch_optional(db)
            .await)?
        } else {
            None
        };
        Ok(Inventory {
            schema_version,
            counts,
            audit_head,
            vault_mode,
        })
    }
}

/// A PostgreSQL snapshot held open: a `REPEATABLE READ READ ONLY` transaction on its own
/// connection whose snapshot is exported for `pg_dump --snapshot`. It lives until dropped.
pub struct PgSnapshot {
    conn: PgConnection,
    id: String,
}

impl PgSnapshot {
    /// Opens a connection to `url`, starts the transaction and exports its snapshot.
    pub async fn open(url: &str) -> Result<PgSnapshot> {
        let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(|e| {
            Error::invalid(format!("database URL: {}", crate::redact_url_error(&e)))
        })?;
        let mut conn = PgConnection::connect_with(&options.application_name("haechi-backup"))
            .await
            .map_err(|e| {
                Error::unavailable(format!(
                    "cannot connect to PostgreSQL: {}",
                    crate::redact_url_error(&e)
                ))
            })?;
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut conn)
            .await?;
        let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut conn)
            .await?;
        Ok(PgSnapshot { conn, id })
    }

    /// The exported snapshot's id, for `pg_dump --snapshot=ID`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The inventory as of the snapshot.
    pub async fn inventory(&mut self) -> Result<Inventory> {
        let c = &mut self.conn;
        let tables: Vec<String> = sqlx::query_scalar(PG_TABLES).fetch_all(&mut *c).await?;
        let mut counts = BTreeMap::new();
        for t in &tables {
            let sql = format!("SELECT COUNT(*) FROM {}", quote_ident(t));
            let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut *c).await?;
            counts.insert(t.clone(), n);
        }
        let has = |name: &str| tables.iter().any(|t| t == name);
        let schema_version = if has("haechi_migrations") {
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM haechi_migrations")
                .fetch_one(&mut *c)
                .await?
                .unwrap_or(0)
        } else {
            0
        };
        let audit_head = if has("audit_head") {
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_optional(&mut *c)
                .await?
                .unwrap_or((0, String::new()))
        } else {
            (0, String::new())
        };
        let vault_mode = if has("vault_state") {
            sqlx::query_scalar("SELECT mode FROM vault_state WHERE id = 1")
                .fetch_optional(&mut *c)
                .await?
        } else {
            None
        };
        Ok(Inventory {
            schema_version,
            counts,
            audit_head,
            vault_mode,
        })
    }

    /// Ends the transaction (the snapshot is no longer importable afterwards).
    pub async fn close(mut self) {
        let _ = sqlx::raw_sql("COMMIT").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

impl Store {
    /// Whether `table` has a column `column` (a check that works before and after a migration
    /// that adds it).
    pub async fn has_column(&self, table: &str, column: &str) -> Result<bool> {
        let n: i64 = match self.backend() {
            Backend::Sqlite => read!(self, |db| sqlx::query_scalar(
                "SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2"
            )
            .bind(table)
            .bind(column)
            .fetch_one(db)
            .await)?,
            Backend::Postgres => read!(self, |db| sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
            )
            .bind(table)
            .bind(column)
            .fetch_one(db)
            .await)?,
        };
        Ok(n > 0)
    }
}
