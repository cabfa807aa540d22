//! SQLite reads run on the calling thread, for the hottest read paths.
//!
//! sqlx runs each SQLite connection on a thread of its own: a query is a hand-off to that
//! thread and its answer a hand-off back, two thread switches a query. On a cached one-row
//! read those switches were most of the time (`bench/README.md`, `reads.sh`: 44 % of the
//! server's samples in the kernel's switching). [`Inline`] keeps read-only connections of its
//! own (the same database file, in WAL mode, so they see every committed write) and runs a
//! query where it is called: a read of a few rows in SQLite's page cache costs tens of
//! microseconds, less than the two switches it replaces. Only bounded reads go through it
//! (one row: a packed list, a lookup); anything that may scan a table stays on
//! [`crate::Readers`], whose threads keep long scans off the async workers.
//!
//! Queries use the same `$n` placeholders as the rest of the store (SQLite reads `$1` as a
//! parameter named `$1`; each is bound to `args[n - 1]`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use haechi_types::{Error, Result};
use rusqlite::{Connection, OpenFlags};

pub use rusqlite;
pub use rusqlite::types::Value;

/// Prepared statements kept per connection (the hot reads are a handful of shapes).
const STATEMENT_CACHE: usize = 64;

/// Read-only SQLite connections lent to the calling thread.
pub struct Inline {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inline").field("path", &self.path).finish()
    }
}

impl Inline {
    /// Opens the first connection at once (so that a store that cannot be read fails at start).
    pub(crate) fn open(path: &Path) -> Result<Inline> {
        let first = connect(path)?;
        Ok(Inline {
            path: path.to_owned(),
            idle: Mutex::new(vec![first]),
        })
    }

    /// The first row of `sql`, as its columns' values in order (`None` when there is none).
    pub fn row(&self, sql: &str, args: &[Value]) -> Result<Option<Vec<Value>>> {
        self.lend(|conn| first_row(conn, sql, args).map_err(read_failed))
    }

    /// Every row of `sql`, each read into `T` by column position (see [`crate::row_de`]): for
    /// a bounded list (a page), with no JSON between SQLite's rows and the row type.
    pub fn rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        args: &[Value],
    ) -> Result<Vec<T>> {
        self.lend(|conn| all_rows(conn, sql, args))
    }

    /// Runs `read` on an idle connection (a new one if none is idle), then keeps it: a
    /// connection whose query failed is still sound (SQLite resets the statement).
    fn lend<R>(&self, read: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let conn = self.take()?;
        let answer = read(&conn);
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
        answer
    }

    /// Closes the connections not lent (a lent one closes when its query ends).
    pub(crate) fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// A read-write connection of its own, for a writer that runs on a thread of its own (the
    /// audit batch writer): the store's settings (WAL, `synchronous = NORMAL`: a commit is in
    /// the operating system's hands when it returns, so it survives the process being killed),
    /// and its writes take SQLite's one write lock like any other writer's.
    pub fn writer(&self) -> Result<Connection> {
        Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| {
            c.busy_timeout(Duration::from_secs(10))?;
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.pragma_update(None, "foreign_keys", true)?;
            c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            Ok(c)
        })
        .map_err(|e| Error::unavailable(format!("cannot open {}: {e}", self.path.display())))
    }

    fn take(&self) -> Result<Connection> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(conn) => Ok(conn),
            None => connect(&self.path),
        }
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| {
        c.busy_timeout(Duration::from_secs(10))?;
        c.pragma_update(None, "query_only", true)?;
        c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(c)
    })
    .map_err(|e| Error::unavailable(format!("cannot open {}: {e}", path.display())))?;
    Ok(conn)
}

/// `sql` prepared (from the connection's cache) with `args` bound to its `$n` placeholders.
fn bound<'c>(
    conn: &'c Connection,
    sql: &str,
    args: &[Value],
) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    let mut stmt = conn.prepare_cached(sql)?;
    for i in 1..=stmt.parameter_count() {
        let n = stmt
            .parameter_name(i)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                rusqlite::Error::InvalidParameterName(format!("parameter {i} is not $n"))
            })?;
        let value = args
            .get(n.wrapping_sub(1))
            .ok_or(rusqlite::Error::InvalidParameterCount(n, args.len()))?;
        stmt.raw_bind_parameter(i, value)?;
    }
    Ok(stmt)
}

fn first_row(conn: &Connection, sql: &str, args: &[Value]) -> rusqlite::Result<Option<Vec<Value>>> {
    let mut stmt = bound(conn, sql, args)?;
    let columns = stmt.column_count();
    let mut rows = stmt.raw_query();
    match rows.next()? {
        Some(row) => (0..columns)
            .map(|c| row.get::<_, Value>(c))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map(Some),
        None => Ok(None),
    }
}

fn all_rows<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    args: &[Value],
) -> Result<Vec<T>> {
    let mut stmt = bound(conn, sql, args).map_err(read_failed)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(read_failed)? {
        out.push(crate::row_de::from_row(row).map_err(|e| {
            Error::internal(format!(
                "a row from the store did not read into its type: {e}"
            ))
        })?);
    }
    Ok(out)
}

fn read_failed(e: rusqlite::Error) -> Error {
    Error::internal(format!("store read failed: {e}"))
}

/// Reads one column of a row from [`Inline::row`].
pub trait FromValue: Sized {
    fn from_value(v: Value) -> Result<Self>;
}

impl FromValue for i64 {
    fn from_value(v: Value) -> Result<i64> {
        match v {
            Value::Integer(i) => Ok(i),
            other => Err(mismatch("an integer", &other)),
        }
    }
}

impl FromValue for String {
    fn from_value(v: Value) -> Result<String> {
        match v {
            Value::Text(s) => Ok(s),
            other => Err(mismatch("text", &other)),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> Result<Option<T>> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

fn mismatch(want: &str, got: &Value) -> Error {
    Error::internal(format!(
        "a store read answered {:?} where {want} was expected",
        got.data_type()
    ))
}

/// Takes the columns of a row in order: `let (a, b): (String, i64) = columns(row)?`.
pub fn columns<T: FromColumns>(row: Vec<Value>) -> Result<T> {
    T::from_columns(row)
}

/// A tuple read from a row's columns in order.
pub trait FromColumns: Sized {
    fn from_columns(row: Vec<Value>) -> Result<Self>;
}

macro_rules! tuple_from_columns {
    ($($t:ident),+) => {
        impl<$($t: FromValue),+> FromColumns for ($($t,)+) {
            fn from_columns(row: Vec<Value>) -> Result<Self> {
                let mut it = row.into_iter();
                Ok(($(
                    $t::from_value(it.next().ok_or_else(|| {
                        Error::internal("a store read answered fewer columns than expected")
                    })?)?,
                )+))
            }
        }
    };
}

tuple_from_columns!(A);
tuple_from_columns!(A, B);
tuple_from_columns!(A, B, C);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_dollar_placeholders_by_number_and_sees_committed_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = crate::Store::open(&crate::StoreOptions::sqlite(path.clone()))
            .await
            .unwrap();
        let inline = store.inline().expect("SQLite has inline reads");
        // Placeholders out of order and repeated; a NULL and text back.
        let row = inline
            .row(
                "SELECT $2 || '-' || $1, $1 + 0, NULL, $2",
                &[Value::Integer(7), Value::Text("a".into())],
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            row,
            vec![
                Value::Text("a-7".into()),
                Value::Integer(7),
                Value::Null,
                Value::Text("a".into())
            ]
        );
        let (s, n, none): (String, i64, Option<String>) = columns(row).unwrap();
        assert_eq!((s.as_str(), n, none), ("a-7", 7, None));
        // A missing argument is an error, not a panic or a NULL.
        assert!(inline.row("SELECT $3", &[Value::Integer(1)]).is_err());
        // A write committed through the writer is visible at once.
        let mut tx = store.begin().await.unwrap();
        crate::in_tx!(tx, |c| sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(&mut *c)
            .await
            .map(|_| ()))
        .unwrap();
        crate::in_tx!(tx, |c| sqlx::query("INSERT INTO t VALUES (41)")
            .execute(&mut *c)
            .await
            .map(|_| ()))
        .unwrap();
        tx.commit().await.unwrap();
        let (v,): (i64,) =
            columns(inline.row("SELECT v + 1 FROM t", &[]).unwrap().unwrap()).unwrap();
        assert_eq!(v, 42);
        assert_eq!(
            inline
                .row("SELECT v FROM t WHERE v = $1", &[Value::Integer(0)])
                .unwrap(),
            None
        );
        // Read-only: a write is refused.
        assert!(inline.row("DELETE FROM t", &[]).is_err());
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Stamp {
        by: i64,
        at: Option<i64>,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    enum State {
        #[serde(rename = "on")]
        On,
        #[serde(rename = "off")]
        Off,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Row {
        id: i64,
        name: String,
        note: Option<String>,
        flag: bool,
        state: State,
        stamp: Stamp,
        score: f64,
    }

    /// Rows read into a row type by column position: a nested struct takes the columns after
    /// the outer fields before it, NULL is `None`, integers are booleans, a status name is an
    /// enum; text escapes nothing. A query and a type that disagree are errors, not guesses.
    #[tokio::test]
    async fn rows_read_by_column_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(&crate::StoreOptions::sqlite(dir.path().join("t.db")))
            .await
            .unwrap();
        let mut tx = store.begin().await.unwrap();
        for sql in [
            "CREATE TABLE r (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT, flag BOOLEAN NOT NULL, \
             state TEXT NOT NULL, by_ INTEGER NOT NULL, at INTEGER, score REAL NOT NULL)",
            "INSERT INTO r VALUES (2, 'two \"q\" \\ 한', NULL, 1, 'off', 7, NULL, 0.5), \
                                  (1, 'one', '', 0, 'on', 8, 1700000000000, 2)",
        ] {
            crate::in_tx!(tx, |c| sqlx::query(sql).execute(&mut *c).await.map(|_| ())).unwrap();
        }
        tx.commit().await.unwrap();
        let inline = store.inline().unwrap();
        let sql =
            "SELECT id, name, note, flag, state, by_, at, score FROM r WHERE id >= $1 ORDER BY id";
        let rows: Vec<Row> = inline.rows(sql, &[Value::Integer(0)]).unwrap();
        assert_eq!(
            rows,
            vec![
                Row {
                    id: 1,
                    name: "one".into(),
                    note: Some(String::new()),
                    flag: false,
                    state: State::On,
                    stamp: Stamp {
                        by: 8,
                        at: Some(1_700_000_000_000)
                    },
                    score: 2.0,
                },
                Row {
                    id: 2,
                    name: "two \"q\" \\ 한".into(),
                    note: None,
                    flag: true,
                    state: State::Off,
                    stamp: Stamp { by: 7, at: None },
                    score: 0.5,
                },
            ]
        );
        assert!(inline
            .rows::<Row>(sql, &[Value::Integer(3)])
            .unwrap()
            .is_empty());
        // A tuple of a struct and a column after it.
        let pair: Vec<(Stamp, String)> = inline
            .rows("SELECT by_, at, name FROM r WHERE id = 2", &[])
            .unwrap();
        assert_eq!(
            pair,
            vec![(Stamp { by: 7, at: None }, "two \"q\" \\ 한".into())]
        );
        // One column too many, one too few, a type that does not fit, a status no variant has.
        for bad in [
            "SELECT id, name, note, flag, state, by_, at, score, 1 FROM r",
            "SELECT id, name, note, flag, state, by_, at FROM r",
            "SELECT name, name, note, flag, state, by_, at, score FROM r",
            "SELECT id, name, note, flag, 'maybe', by_, at, score FROM r",
        ] {
            let e = inline.rows::<Row>(bad, &[]).unwrap_err();
            assert_eq!(e.status(), 500, "{bad}: {e}");
            // The cause (for the server log) names the mismatch.
            let c = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
            let mut stmt = c.prepare(bad).unwrap();
            let mut rows = stmt.raw_query();
            let cause = crate::row_de::from_row::<Row>(rows.next().unwrap().unwrap()).unwrap_err();
            assert!(
                ["columns", "invalid type", "unknown variant"]
                    .iter()
                    .any(|w| cause.to_string().contains(w)),
                "{bad}: {cause}"
            );
        }
    }
}
