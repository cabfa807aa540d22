//! SQLite's read connections, lent without sqlx's pool.
//!
//! sqlx's pool, when a connection comes back after each query, spawns a task that pings it (a
//! round trip to the connection's own thread) before it may be lent again: on a cached one-row
//! read that was a second hand-off for every query, and a task. A SQLite connection is a file
//! handle in this process and cannot go stale the way a network connection can, so [`Readers`]
//! keeps its connections in a plain stack and lends them with a semaphore: a query costs its one
//! round trip. The most recently returned connection is lent first, so a quiet server keeps
//! using the few connections whose statement and page caches are warm.

use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteQueryResult, SqliteRow, SqliteStatement,
    SqliteTypeInfo,
};
use sqlx::{ConnectOptions, Connection, Describe, Either, Execute, Executor};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Read-only SQLite connections, at most `max` open, opened when first needed.
pub struct Readers {
    options: SqliteConnectOptions,
    idle: Mutex<Vec<SqliteConnection>>,
    permits: Semaphore,
    acquire_timeout: Duration,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

/// A lent connection; it goes back on the stack when dropped (also when the query using it was
/// cancelled: the connection's thread drops the rest of that answer and runs the next one).
struct Lease<'a> {
    conn: Option<SqliteConnection>,
    readers: &'a Readers,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let (Some(conn), Ok(mut idle)) = (self.conn.take(), self.readers.idle.lock()) {
            idle.push(conn);
        }
    }
}

impl Lease<'_> {
    fn conn(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)
    }
}

impl Readers {
    /// Opens the first connection at once (so that a store that cannot be read fails at start).
    pub(crate) async fn open(
        options: SqliteConnectOptions,
        max: u32,
        acquire_timeout: Duration,
    ) -> Result<Readers, sqlx::Error> {
        let first = options.connect().await?;
        Ok(Readers {
            options,
            idle: Mutex::new(vec![first]),
            permits: Semaphore::new(max.max(1) as usize),
            acquire_timeout,
        })
    }

    async fn acquire(&self) -> Result<Lease<'_>, sqlx::Error> {
        let permit = tokio::time::timeout(self.acquire_timeout, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => self.options.connect().await?,
        };
        Ok(Lease {
            conn: Some(conn),
            readers: self,
            _permit: permit,
        })
    }

    /// Lends no more connections and closes those not lent.
    pub(crate) async fn close(&self) {
        self.permits.close();
        let idle = match self.idle.lock() {
            Ok(mut idle) => std::mem::take(&mut *idle),
            Err(_) => Vec::new(),
        };
        for conn in idle {
            let _ = conn.close().await;
        }
    }
}

impl<'c> Executor<'c> for &'c Readers {
    type Database = Sqlite;

    /// The answer is read whole before it is streamed (nothing in Haechi streams from the read
    /// connections; every list is bounded).
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        futures::stream::once(async move {
            let mut lease = self.acquire().await?;
            lease
                .conn()?
                .fetch_many(query)
                .try_collect::<Vec<_>>()
                .await
        })
        .map_ok(|steps| futures::stream::iter(steps.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        Box::pin(async move {
            let mut lease = self.acquire().await?;
            lease.conn()?.fetch_optional(query).await
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [SqliteTypeInfo],
    ) -> BoxFuture<'e, Result<SqliteStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut lease = self.acquire().await?;
            lease.conn()?.prepare_with(sql, parameters).await
        })
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Sqlite>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut lease = self.acquire().await?;
            lease.conn()?.describe(sql).await
        })
    }
}

/// Where a SQLite query of [`crate::read!`] runs: the read connections, or the writer's pool
/// (queries outside a transaction on [`crate::Store::writer`]).
#[derive(Clone, Copy, Debug)]
pub enum SqliteDb<'a> {
    Readers(&'a Readers),
    Pool(&'a sqlx::SqlitePool),
}

impl<'c> Executor<'c> for SqliteDb<'c> {
    type Database = Sqlite;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        match self {
            SqliteDb::Readers(r) => r.fetch_many(query),
            SqliteDb::Pool(p) => p.fetch_many(query),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        match self {
            SqliteDb::Readers(r) => r.fetch_optional(query),
            SqliteDb::Pool(p) => p.fetch_optional(query),
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [SqliteTypeInfo],
    ) -> BoxFuture<'e, Result<SqliteStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            SqliteDb::Readers(r) => r.prepare_with(sql, parameters),
            SqliteDb::Pool(p) => p.prepare_with(sql, parameters),
        }
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Sqlite>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            SqliteDb::Readers(r) => r.describe(sql),
            SqliteDb::Pool(p) => p.describe(sql),
        }
    }
}
