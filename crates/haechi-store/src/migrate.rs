//! Versioned migrations, embedded in the binary, applied at start in order. Each backend has its
//! own SQL for the same version. An applied migration whose text has since changed is an error:
//! migrations are append-only. On PostgreSQL an advisory lock keeps several servers starting at
//! once from migrating twice.

use haechi_types::{Error, Result};
use sha2::{Digest, Sha256};

use crate::{in_tx, Backend, Store};

/// One schema version.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
    /// On SQLite, run with foreign keys off, on a connection of its own (see
    /// [`run_sqlite_foreign_keys_off`]): a migration that rebuilds a table other tables refer to.
    pub sqlite_foreign_keys_off: bool,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        migration!($version, $name, false)
    };
    ($version:literal, $name:literal, foreign_keys_off) => {
        migration!($version, $name, true)
    };
    ($version:literal, $name:literal, $fk_off:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("../migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!("../migrations/postgres/", $name, ".sql")),
            sqlite_foreign_keys_off: $fk_off,
        }
    };
}

/// Every migration, oldest first. Add new ones at the end; never edit an applied one.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_identity_audit"),
    migration!(2, "0002_vault"),
    migration!(3, "0003_exec"),
    migration!(4, "0004_workflow"),
    migration!(5, "0005_dbgate"),
    migration!(6, "0006_task_env"),
    migration!(7, "0007_target_socket"),
    migration!(8, "0008_enrollment_token_node"),
    migration!(9, "0009_name_keys"),
    migration!(10, "0010_runbook"),
    migration!(11, "0011_approved_revisions_owner_names", foreign_keys_off),
    migration!(12, "0012_target_tls_verify"),
    migration!(13, "0013_subflows_secrets_schedules"),
    migration!(14, "0014_opmate_groups"),
    migration!(15, "0015_audit_sinks_clock_skew"),
    migration!(16, "0016_opmate_files"),
    migration!(17, "0017_vault_list_generation"),
    migration!(18, "0018_audit_spools"),
];

const LOCK_KEY: i64 = 0x4861_6563_6869; // "Haechi"

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

pub(crate) async fn run(store: &Store) -> Result<()> {
    run_to(store, i64::MAX).await
}

/// Applies the migrations up to version `last` (tests build older schemas with it).
async fn run_to(store: &Store, last: i64) -> Result<()> {
    let mut tx = store.begin().await?;
    let backend = tx.backend();
    if backend == Backend::Postgres {
        in_tx!(tx, |c| sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
    }
    in_tx!(tx, |c| sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS haechi_migrations (\
           version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, \
           applied_at BIGINT NOT NULL)"
    )
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    let applied: Vec<(i64, String, String)> = in_tx!(tx, |c| sqlx::query_as(
        "SELECT version, name, checksum FROM haechi_migrations ORDER BY version"
    )
    .fetch_all(&mut *c)
    .await)?;

    for m in MIGRATIONS.iter().filter(|m| m.version <= last) {
        let sql = match backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        let sum = checksum(sql);
        if let Some((_, _, old)) = applied.iter().find(|(v, _, _)| *v == m.version) {
            if *old != sum {
                return Err(Error::internal(format_args!(
                    "migration {} ({}) was changed after it was applied",
                    m.version, m.name
                )));
            }
            continue;
        }
        tracing::info!(version = m.version, name = m.name, "applying migration");
        if let (true, crate::Pools::Sqlite { writer, .. }) =
            (m.sqlite_foreign_keys_off, &store.pools)
        {
            // The writer pool has one connection: give it back, run the migration on it with
            // foreign keys off, and take a new transaction for the migrations after it.
            tx.commit().await?;
            run_sqlite_foreign_keys_off(writer, m, &sum).await?;
            tx = store.begin().await?;
            continue;
        }
        in_tx!(tx, |c| sqlx::raw_sql(sql)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
        in_tx!(tx, |c| {
            sqlx::query(
            "INSERT INTO haechi_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(m.version)
        .bind(m.name)
        .bind(&sum)
        .bind(haechi_types::time::now_ms())
        .execute(&mut *c).await.map(|r| r.rows_affected())
        })?;
    }
    if let Some((v, name, _)) = applied
        .iter()
        .find(|(v, _, _)| !MIGRATIONS.iter().any(|m| m.version == *v))
    {
        return Err(Error::internal(format_args!(
            "the store has migration {v} ({name}) that this binary does not know: it is older than the store"
        )));
    }
    tx.commit().await
}

/// Runs a SQLite migration that rebuilds a table with foreign keys off, the way SQLite's
/// documentation prescribes for schema changes `ALTER TABLE` cannot make: inside a migration
/// transaction `PRAGMA foreign_keys = OFF` has no effect, and dropping the old table would then
/// cascade into every table that refers to it. Here the pragma is set on the connection before
/// the transaction, the migration and its `haechi_migrations` row commit together only if
/// `PRAGMA foreign_key_check` finds no dangling reference, and foreign keys are back on before
/// the connection returns to the pool.
async fn run_sqlite_foreign_keys_off(
    pool: &sqlx::SqlitePool,
    m: &Migration,
    sum: &str,
) -> Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await?;
    let outcome = apply_sqlite_foreign_keys_off(&mut conn, m, sum).await;
    if outcome.is_err() {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    }
    let on = sqlx::raw_sql("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await;
    if on.is_err() {
        // Never hand back a connection without foreign keys.
        conn.detach();
    }
    outcome?;
    on?;
    Ok(())
}

async fn apply_sqlite_foreign_keys_off(
    conn: &mut sqlx::SqliteConnection,
    m: &Migration,
    sum: &str,
) -> Result<()> {
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    sqlx::raw_sql(m.sqlite).execute(&mut *conn).await?;
    sqlx::query(
        "INSERT INTO haechi_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(m.version)
    .bind(m.name)
    .bind(sum)
    .bind(haechi_types::time::now_ms())
    .execute(&mut *conn)
    .await?;
    let dangling = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await?;
    if !dangling.is_empty() {
        return Err(Error::internal(format_args!(
            "migration {} ({}) would leave {} rows referring to missing rows",
            m.version,
            m.name,
            dangling.len()
        )));
    }
    sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn versions_are_listed_oldest_first_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version,
                i as i64 + 1,
                "migration {} is out of place",
                m.name
            );
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{} does not carry its version {}",
                m.name,
                m.version
            );
        }
    }

    /// The SQLite rebuild of `vault_credentials` and `vault_lockers` (0011) keeps every row, id
    /// and reference, AUTOINCREMENT's high-water mark and the foreign keys of the tables that
    /// refer to them, and leaves foreign keys on.
    #[tokio::test]
    async fn a_foreign_keys_off_migration_keeps_rows_references_and_ids() {
        use crate::{in_tx, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("s.db"), 1)
            .await
            .unwrap();
        super::run_to(&store, 9).await.unwrap();
        let exec = |sql: &'static str| {
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                in_tx!(tx, |c| sqlx::raw_sql(sql)
                    .execute(&mut *c)
                    .await
                    .map(|_| ()))?;
                tx.commit().await
            }
        };
        exec(
            "INSERT INTO vault_lockers (id, name, created_by, created_at, updated_by, updated_at) VALUES (5, 'L', 1, 0, 1, 0); \
             INSERT INTO vault_credentials (id, name, owner_id, locker_id, created_by, created_at, updated_by, updated_at) \
               VALUES (7, 'db', 1, 5, 1, 0, 1, 0), (9, 'gone', 1, NULL, 1, 0, 1, 0); \
             INSERT INTO vault_attributes (id, credential_id, name, user_provided, masked, created_by, created_at, updated_by, updated_at) \
               VALUES (3, 7, 'pw', 0, 1, 1, 0, 1, 0); \
             DELETE FROM vault_credentials WHERE id = 9;",
        )
        .await
        .unwrap();
        super::run(&store).await.unwrap();
        let one = |sql: &'static str| {
            let store = store.clone();
            async move {
                let mut tx = store.begin().await.unwrap();
                let v: i64 =
                    in_tx!(tx, |c| sqlx::query_scalar(sql).fetch_one(&mut *c).await).unwrap();
                tx.commit().await.unwrap();
                v
            }
        };
        assert_eq!(
            one("SELECT locker_id FROM vault_credentials WHERE id = 7 AND name = 'db'").await,
            5
        );
        assert_eq!(
            one("SELECT credential_id FROM vault_attributes WHERE id = 3").await,
            7
        );
        assert_eq!(one("PRAGMA foreign_keys").await, 1);
        assert_eq!(
            one("SELECT MAX(version) FROM haechi_migrations").await,
            MIGRATIONS.last().unwrap().version
        );
        // Ids of deleted rows are not handed out again.
        exec("INSERT INTO vault_credentials (name, owner_id, created_by, created_at, updated_by, updated_at) VALUES ('next', 1, 1, 0, 1, 0)")
            .await
            .unwrap();
        assert_eq!(
            one("SELECT id FROM vault_credentials WHERE name = 'next'").await,
            10
        );
        // Names are unique per owner now, and references are still enforced and cascade.
        exec("INSERT INTO vault_credentials (name, owner_id, created_by, created_at, updated_by, updated_at) VALUES ('db', 2, 2, 0, 2, 0)")
            .await
            .unwrap();
        assert!(exec("INSERT INTO vault_credentials (name, owner_id, created_by, created_at, updated_by, updated_at) VALUES ('db', 1, 1, 0, 1, 0)")
            .await
            .is_err());
        assert!(exec("INSERT INTO vault_attributes (credential_id, name, user_provided, masked, created_by, created_at, updated_by, updated_at) VALUES (999, 'x', 0, 1, 1, 0, 1, 0)")
            .await
            .is_err());
        assert!(exec("INSERT INTO vault_credentials (name, owner_id, locker_id, created_by, created_at, updated_by, updated_at) VALUES ('y', 1, 999, 1, 0, 1, 0)")
            .await
            .is_err());
        exec("DELETE FROM vault_credentials WHERE id = 7")
            .await
            .unwrap();
        assert_eq!(one("SELECT COUNT(*) FROM vault_attributes").await, 0);
    }
}
