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
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("../migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!("../migrations/postgres/", $name, ".sql")),
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
    migration!(11, "0011_runbook"),
];

const LOCK_KEY: i64 = 0x4861_6563_6869; // "Haechi"

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

pub(crate) async fn run(store: &Store) -> Result<()> {
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

    for m in MIGRATIONS {
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
}
