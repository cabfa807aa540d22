//! The store: one API over SQLite (the embedded default, a file in the data directory) and
//! PostgreSQL (several servers sharing one state).
//!
//! Queries are written once with `$1`-style placeholders, which both backends accept, and run on
//! whichever backend is open through the [`read!`] and [`in_tx!`] macros: the body is compiled
//! once per backend, so each runs natively typed with no runtime translation layer.
//!
//! SQLite is opened with one writer connection and a pool of readers (WAL), so write
//! transactions never fail with `SQLITE_BUSY` and readers never wait for writers.

mod arg;
pub mod inline;
mod lock;
mod migrate;
pub mod packed;
mod page;
mod query;
mod readers;
mod row_de;
mod rowlock;
pub mod signal;
mod snapshot;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use haechi_types::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};

pub use arg::{values, Arg};
pub use inline::Inline;
pub use lock::SessionLock;
pub use migrate::{Migration, MIGRATIONS};
pub use page::{Listed, Paging};
pub use query::{list_page, list_page_inline, Where};
pub use readers::{Readers, SqliteDb};
pub use signal::{Delivery, Signal, Signals, Subscription};
pub use snapshot::{latest_schema_version, Inventory, PgSnapshot};

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where and how to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `postgres://...`; `None` means SQLite at `sqlite_path`.
    pub database_url: Option<String>,
    pub sqlite_path: std::path::PathBuf,
    /// Connections in the PostgreSQL pool, or SQLite reader connections.
    pub max_connections: u32,
    /// How long a request waits for a PostgreSQL connection before it is refused with 503
    /// (the database is down or restarting): short, so that callers get an answer instead of
    /// hanging.
    pub acquire_timeout: Duration,
}

impl StoreOptions {
    /// SQLite at `path`, with two reader connections: a store of its own for a test or a tool.
    pub fn sqlite(path: impl Into<std::path::PathBuf>) -> StoreOptions {
        StoreOptions {
            database_url: None,
            sqlite_path: path.into(),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
enum Pools {
    Sqlite {
        writer: SqlitePool,
        reader: std::sync::Arc<Readers>,
        inline: std::sync::Arc<Inline>,
    },
    Postgres(PgPool),
}

/// A handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pools: Pools,
    signals: std::sync::Arc<Signals>,
}

/// A pool to run queries on, for the [`read!`] macro.
#[derive(Clone, Copy)]
pub enum Db<'a> {
    Sqlite(SqliteDb<'a>),
    Postgres(&'a PgPool),
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls it back.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// The connection of a transaction, for the [`in_tx!`] macro.
pub enum TxConn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

/// Runs `$body` with `$c` bound to the reader pool of whichever backend is open.
#[macro_export]
macro_rules! read {
    ($store:expr, |$c:ident| $body:expr) => {
        match $store.db() {
            $crate::Db::Sqlite($c) => $body,
            $crate::Db::Postgres($c) => $body,
        }
    };
}

/// Runs `$body` with `$c` bound to the transaction's connection (`&mut` connection: use
/// `&mut *$c` for each query).
#[macro_export]
macro_rules! in_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx.conn() {
            $crate::TxConn::Sqlite($c) => $body,
            $crate::TxConn::Postgres($c) => $body,
        }
    };
}

impl Store {
    /// Opens (creating when needed) the store and applies pending migrations.
    pub async fn open(opts: &StoreOptions) -> Result<Store> {
        let store = match &opts.database_url {
            Some(url) => {
                Self::open_postgres(url, opts.max_connections, opts.acquire_timeout).await?
            }
            None => Self::open_sqlite(&opts.sqlite_path, opts.max_connections).await?,
        };
        migrate::run(&store).await?;
        Ok(store)
    }

    /// Opens the store without migrating (for offline checks such as `audit verify`).
    pub async fn open_existing(opts: &StoreOptions) -> Result<Store> {
        match &opts.database_url {
            Some(url) => Self::open_postgres(url, 2, opts.acquire_timeout).await,
            None => {
                if !opts.sqlite_path.exists() {
                    return Err(Error::not_found(format_args!(
                        "store file {}",
                        opts.sqlite_path.display()
                    )));
                }
                Self::open_sqlite(&opts.sqlite_path, 2).await
            }
        }
    }

    async fn open_postgres(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Store> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid(format!("database URL: {}", redact_url_error(&e))))?
            .application_name("haechi");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(acquire_timeout.max(Duration::from_millis(100)))
            .connect_with(options)
            .await
            .map_err(|e| {
                Error::unavailable(format!(
                    "cannot connect to PostgreSQL: {}",
                    redact_url_error(&e)
                ))
            })?;
        Ok(Store {
            pools: Pools::Postgres(pool),
            signals: Signals::new(),
        })
    }

    async fn open_sqlite(path: &Path, readers: u32) -> Result<Store> {
        private_files(path)
            .map_err(|e| Error::unavailable(format!("cannot open {}: {e}", path.display())))?;
        let base = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        // A SQLite connection is a file handle in this process: it cannot go stale the way a
        // network connection can, so the check before each acquire (a round trip to the
        // connection's worker thread) is skipped; it was a fifth of a cached read's time. The
        // readers skip sqlx's pool altogether (see `readers`).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.clone().create_if_missing(true))
            .await
            .map_err(|e| Error::unavailable(format!("cannot open {}: {e}", path.display())))?;
        let reader = Readers::open(base.read_only(true), readers, Duration::from_secs(30))
            .await
            .map_err(|e| Error::unavailable(format!("cannot open {}: {e}", path.display())))?;
        let reader = std::sync::Arc::new(reader);
        let inline = std::sync::Arc::new(Inline::open(path)?);
        Ok(Store {
            pools: Pools::Sqlite {
                writer,
                reader,
                inline,
            },
            signals: Signals::new(),
        })
    }

    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    /// SQLite's reads on the calling thread, for bounded hot reads (see [`Inline`]); `None`
    /// on PostgreSQL.
    pub fn inline(&self) -> Option<&Inline> {
        match &self.pools {
            Pools::Sqlite { inline, .. } => Some(inline),
            Pools::Postgres(_) => None,
        }
    }

    /// The one row of an aggregate read on SQLite's calling thread (see [`Inline`]): for the
    /// SQLite arm of a read whose PostgreSQL arm runs plain queries.
    pub fn read_inline(&self, sql: &str, args: &[inline::Value]) -> Result<Vec<inline::Value>> {
        self.inline_reads()?
            .row(sql, args)?
            .ok_or_else(|| Error::internal("an aggregate read answered no row"))
    }

    /// Every row of a bounded read on SQLite's calling thread (see [`Inline::rows`]), each read
    /// into `T` by column position: for the SQLite arm of a list whose PostgreSQL arm runs the
    /// same query through sqlx.
    pub fn rows_inline<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        args: &[inline::Value],
    ) -> Result<Vec<T>> {
        self.inline_reads()?.rows(sql, args)
    }

    fn inline_reads(&self) -> Result<&Inline> {
        self.inline()
            .ok_or_else(|| Error::internal("inline reads are SQLite's"))
    }

    /// The pool to read from.
    pub fn db(&self) -> Db<'_> {
        match &self.pools {
            Pools::Sqlite { reader, .. } => Db::Sqlite(SqliteDb::Readers(reader)),
            Pools::Postgres(p) => Db::Postgres(p),
        }
    }

    /// The pool that writes outside a transaction (single statements).
    pub fn writer(&self) -> Db<'_> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => Db::Sqlite(SqliteDb::Pool(writer)),
            Pools::Postgres(p) => Db::Postgres(p),
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match &self.pools {
            // IMMEDIATE takes the write lock at BEGIN, where the busy timeout applies; a deferred
            // transaction that reads first fails at once (SQLITE_BUSY) if another process wrote
            // in between (the sqlite3 tool on a live store, say).
            Pools::Sqlite { writer, .. } => Tx::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?),
            Pools::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// Closes every connection (used before a clean exit).
    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite {
                writer,
                reader,
                inline,
            } => {
                inline.close();
                reader.close().await;
                writer.close().await;
            }
            Pools::Postgres(p) => p.close().await,
        }
    }
}

/// Makes the SQLite file and its `-wal` / `-shm` companions readable by their owner only,
/// whatever the mode of the directory they are in or the process's umask: the file is created
/// here 0600 before SQLite opens it (SQLite gives the companions the mode of the database
/// file), and files left by an older version with wider modes are narrowed to 0600.
fn private_files(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let mut companions = [
            path.as_os_str().to_owned(),
            path.as_os_str().to_owned(),
            path.as_os_str().to_owned(),
        ];
        companions[1].push("-wal");
        companions[2].push("-shm");
        for file in companions {
            let file = Path::new(&file);
            match std::fs::symlink_metadata(file) {
                Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

impl<'a> Db<'a> {
    /// Lets [`read!`] take a `Db` as well as a `Store`.
    pub fn db(self) -> Db<'a> {
        self
    }
}

impl Tx {
    pub fn conn(&mut self) -> TxConn<'_> {
        match self {
            Tx::Sqlite(t) => TxConn::Sqlite(&mut *t),
            Tx::Postgres(t) => TxConn::Postgres(&mut *t),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// True when `e` is a unique-constraint violation (both backends).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// The result of a write that a unique constraint guards (a name, a key): a unique violation
/// becomes `taken()`, the 409 Conflict that says which name is taken and what to do instead;
/// every other error passes through. The constraint decides, not a read before the write, so
/// two servers creating the same name at once get one success and one conflict.
pub fn created_or_taken<T>(
    result: std::result::Result<T, sqlx::Error>,
    taken: impl FnOnce() -> Error,
) -> Result<T> {
    result.map_err(|e| {
        if is_unique_violation(&e) {
            taken()
        } else {
            e.into()
        }
    })
}

/// True when `e` is a foreign-key violation (both backends).
pub fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// Connection errors can echo the URL; keep any password out of messages.
fn redact_url_error(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    match (text.find("://"), text.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &text[..scheme], &text[at..])
        }
        _ => text,
    }
}

/// Escapes `%`, `_` and `\` so user input can be used inside a `LIKE ... ESCAPE '\'` pattern.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use haechi_types::{Code, Error};

    use crate::{created_or_taken, Store};

    /// A second row with a taken name is the caller's conflict; other failures stay what they
    /// are.
    #[tokio::test]
    async fn a_unique_violation_becomes_the_conflict_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_sqlite(&dir.path().join("s.db"), 1)
            .await
            .expect("open");
        let mut tx = store.begin().await.expect("begin");
        let insert = "INSERT INTO named (name) VALUES ($1)";
        in_tx!(tx, |c| sqlx::query("CREATE TABLE named (name TEXT UNIQUE)")
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))
        .expect("create");
        let taken = || Error::conflict("'a' is taken");
        let first = in_tx!(tx, |c| sqlx::query(insert)
            .bind("a")
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()));
        assert!(created_or_taken(first, taken).is_ok());
        let second = in_tx!(tx, |c| sqlx::query(insert)
            .bind("a")
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()));
        let e = created_or_taken(second, taken).expect_err("taken");
        assert_eq!(e.code, Code::Conflict);
        assert_eq!(e.message, "'a' is taken");
        let other = in_tx!(tx, |c| sqlx::query("INSERT INTO missing VALUES (1)")
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()));
        let e = created_or_taken(other, taken).expect_err("no such table");
        assert_ne!(e.code, Code::Conflict);
    }
}
