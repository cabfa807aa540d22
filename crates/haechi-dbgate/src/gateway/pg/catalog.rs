//! What a PostgreSQL target's catalog says about names read in attribute notation.
//!
//! `x.name` reads the column `name` of the row `x` when it has one, and otherwise calls the
//! function `name(x)` (and `(expr).name` likewise): `SELECT t.f FROM t` runs `f(t)`. The text
//! alone cannot tell which, so the classifier lists every such name
//! ([`Classification::fields`]) and the session decides it here, failing closed: a name needs
//! no privilege of its own only when the target has a column of that name somewhere and no
//! function of that name that one row argument could call (other than the known harmless
//! built-ins). Any other name (a function's, a name the snapshot does not know, or any name
//! while no current snapshot exists) needs `EXECUTE`.
//!
//! The snapshot is read through the session's own backend connection right after it logs in,
//! shared per target, reused for [`MAX_AGE`], and dropped when a statement that may create or
//! rename a function (anything needing `CREATE`, `ALTER`, `RENAME` or `ALL`) is allowed
//! through this server's gateway on that target. Sessions holding a dropped snapshot fall back
//! to a newer one a later login read, else to `EXECUTE` for every such name until they
//! reconnect.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use super::protocol as p;
use crate::classify::{pg as classify_pg, Classification};
use crate::error::BackendError;
use crate::gateway::BoxIo;
use crate::privilege::{PrivSet, Privilege as P};

/// A snapshot older than this is read again by the next login to its target.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// Column names anywhere in the database, and the names of functions a row argument could
/// call, with which of them need `EXECUTE`. One query, read as text.
const QUERY: &str = "SELECT 'c', '', a.attname::text FROM (SELECT DISTINCT attname FROM pg_catalog.pg_attribute WHERE attnum > 0 AND NOT attisdropped) a \
UNION ALL SELECT 'f', n.nspname::text, f.proname::text FROM (SELECT DISTINCT pronamespace, proname FROM pg_catalog.pg_proc WHERE pronargs >= 1 OR provariadic <> 0) f \
JOIN pg_catalog.pg_namespace n ON n.oid = f.pronamespace";

/// What one target's catalog said at one moment.
#[derive(Debug)]
pub struct Catalog {
    columns: HashSet<String>,
    /// Functions a row argument could call that need a privilege (`EXECUTE` or more).
    functions: HashSet<String>,
    /// The target's catalog generation this snapshot belongs to.
    generation: u64,
    read_at: Instant,
}

impl Catalog {
    /// Whether `name` in attribute notation can only read a column.
    fn only_column(&self, name: &str) -> bool {
        self.columns.contains(name) && !self.functions.contains(name)
    }
}

/// The snapshots of every target, by target name.
#[derive(Default)]
pub struct Catalogs {
    map: Mutex<HashMap<String, Entry>>,
}

#[derive(Default)]
struct Entry {
    generation: u64,
    current: Option<Arc<Catalog>>,
}

impl Catalogs {
    /// The current snapshot of `target`, if one is fresh enough for a new session.
    fn fresh(&self, target: &str) -> Option<Arc<Catalog>> {
        let map = self.map.lock().ok()?;
        map.get(target)?
            .current
            .clone()
            .filter(|c| c.read_at.elapsed() < MAX_AGE)
    }

    /// The current snapshot of `target`, whatever its age (`None` after DDL dropped it).
    fn current(&self, target: &str) -> Option<Arc<Catalog>> {
        self.map.lock().ok()?.get(target)?.current.clone()
    }

    fn generation(&self, target: &str) -> u64 {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(target).map(|e| e.generation))
            .unwrap_or(0)
    }

    fn store(&self, target: &str, catalog: Arc<Catalog>) {
        if let Ok(mut map) = self.map.lock() {
            let e = map.entry(target.to_owned()).or_default();
            if e.generation == catalog.generation {
                e.current = Some(catalog);
            }
        }
    }

    /// Drops `target`'s snapshot: a statement that may have created a function ran.
    pub fn invalidate(&self, target: &str) {
        if let Ok(mut map) = self.map.lock() {
            let e = map.entry(target.to_owned()).or_default();
            e.generation += 1;
            e.current = None;
        }
    }

    /// Whether an allowed statement needing `needs` may have created or renamed a function.
    pub fn invalidates(needs: PrivSet) -> bool {
        [P::Create, P::Alter, P::Rename, P::All]
            .into_iter()
            .any(|p| needs.has(p))
    }

    /// The snapshot a session on `target` should use now: `held` while it is current, else
    /// the newest current one.
    pub fn for_session(&self, target: &str, held: &Option<Arc<Catalog>>) -> Option<Arc<Catalog>> {
        let generation = self.generation(target);
        match held {
            Some(c) if c.generation == generation => Some(c.clone()),
            _ => self.current(target),
        }
    }

    /// The snapshot for a new session on `target`: the shared one while fresh, else read
    /// through `io` (a logged-in, idle backend connection). `None` when it cannot be read
    /// (every attribute-notation name then needs `EXECUTE`).
    pub async fn load(&self, target: &str, io: &mut BoxIo) -> Option<Arc<Catalog>> {
        if let Some(c) = self.fresh(target) {
            return Some(c);
        }
        let generation = self.generation(target);
        match read(io).await {
            Ok((columns, functions)) => {
                let c = Arc::new(Catalog {
                    columns,
                    functions,
                    generation,
                    read_at: Instant::now(),
                });
                self.store(target, c.clone());
                Some(c)
            }
            Err(e) => {
                tracing::warn!(%target, "pg gateway: cannot read the catalog; names in attribute notation need EXECUTE in this session: {e}");
                None
            }
        }
    }
}

/// Adds `EXECUTE` to `c` unless every name it reads in attribute notation is only a column
/// by `catalog` (see the module's text).
pub fn resolve(c: &mut Classification, catalog: Option<&Catalog>) {
    if c.fields.is_empty() {
        return;
    }
    let columns = catalog.is_some_and(|cat| c.fields.iter().all(|f| cat.only_column(f)));
    if !columns {
        c.needs.add(P::Execute);
        c.session_neutral = false;
    }
}

type Sets = (HashSet<String>, HashSet<String>);

/// Runs [`QUERY`] on `io` and reads its rows, up to `ReadyForQuery`.
async fn read(io: &mut BoxIo) -> Result<Sets, BackendError> {
    let mut out = BytesMut::new();
    let mut b = BytesMut::new();
    p::put_cstr(&mut b, QUERY);
    p::put_msg(&mut out, b'Q', &b);
    crate::gateway::send(io, &out).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let (mut columns, mut functions) = (HashSet::new(), HashSet::new());
    let mut failed = None;
    loop {
        let m = p::read_msg(io, &mut buf).await?;
        match m.tag {
            b'D' => {
                let row = texts(m.body.clone())
                    .ok_or_else(|| BackendError::Protocol("a malformed catalog row".into()))?;
                let [kind, schema, name] = row.as_slice() else {
                    return Err(BackendError::Protocol(
                        "a catalog row of the wrong width".into(),
                    ));
                };
                if kind == "c" {
                    columns.insert(name.clone());
                } else {
                    let mut needs = PrivSet::EMPTY;
                    classify_pg::function_needs(&[schema.clone(), name.clone()], &mut needs);
                    if !needs.is_empty() {
                        functions.insert(name.clone());
                    }
                }
            }
            b'E' => {
                let f = p::error_fields(&m.body);
                failed = Some(p::field(&f, b'M').unwrap_or_default().to_owned());
            }
            b'Z' => {
                if !buf.is_empty() {
                    return Err(BackendError::Protocol(
                        "the database sent more than the catalog query's answer".into(),
                    ));
                }
                return match failed {
                    Some(e) => Err(BackendError::Query(e)),
                    None => Ok((columns, functions)),
                };
            }
            _ => {}
        }
    }
}

/// The text values of one `DataRow`.
fn texts(mut body: bytes::Bytes) -> Option<Vec<String>> {
    if body.len() < 2 {
        return None;
    }
    let n = body.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if body.len() < 4 {
            return None;
        }
        let len = body.get_i32();
        if len < 0 {
            row.push(String::new());
            continue;
        }
        let len = len as usize;
        if body.len() < len {
            return None;
        }
        row.push(String::from_utf8_lossy(&body.split_to(len)).into_owned());
    }
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog {
            columns: ["a", "b", "both"].into_iter().map(String::from).collect(),
            functions: ["f", "both"].into_iter().map(String::from).collect(),
            generation: 0,
            read_at: Instant::now(),
        }
    }

    fn needs_execute(sql: &str, cat: Option<&Catalog>) -> bool {
        let mut c = classify_pg::classify(sql, &|_| None);
        resolve(&mut c, cat);
        c.needs.has(P::Execute)
    }

    #[test]
    fn attribute_notation_is_a_column_only_when_the_catalog_says_so() {
        let cat = catalog();
        for sql in [
            "SELECT t.a FROM t",
            "SELECT t.a, u.b FROM t, u WHERE t.a = u.b ORDER BY t.b",
            "SELECT a FROM t",
            "SELECT (t).a FROM t",
            "SELECT * FROM t",
            "SELECT t.* FROM t",
            "UPDATE t SET a = 1 RETURNING t.b",
            "INSERT INTO t (a) VALUES (1)",
        ] {
            assert!(!needs_execute(sql, Some(&cat)), "{sql}");
        }
        for sql in [
            "SELECT t.f FROM t",
            "SELECT t.both FROM t",
            "SELECT t.unknown FROM t",
            "SELECT s.t.f FROM s.t",
            "SELECT (t).f FROM t",
            "SELECT (t.*).f FROM t",
            "SELECT (ROW(1, 2)::t).f",
            "SELECT (CAST(ROW(1, 2) AS t)).f",
            "SELECT 1 FROM t WHERE t.f IS NULL",
            "SELECT 1 FROM t ORDER BY t.f",
            "SELECT a FROM t GROUP BY a HAVING max(t.f) > 0",
            "SELECT t.a + t.f FROM t",
            "SELECT ARRAY[t.f] FROM t",
            "SELECT ROW(t.f) FROM t",
            "SELECT t.f::text FROM t",
            "UPDATE t SET a = 1 RETURNING t.f",
            "UPDATE t SET a = t.f",
            "DELETE FROM t WHERE t.f > 0",
            "INSERT INTO t SELECT u.f FROM u",
            "WITH x AS (SELECT t.f FROM t) SELECT 1",
            "SELECT (SELECT u.f FROM u LIMIT 1)",
            "SELECT 1 FROM t JOIN u ON t.a = u.f",
            "SELECT f FROM t, LATERAL (SELECT t.f) x(f)",
            "ALTER TABLE t ALTER a SET DEFAULT (ROW(1, 2)::t).f",
            "SELECT (t.a).f FROM t",
        ] {
            assert!(needs_execute(sql, Some(&cat)), "{sql}");
            // Without a snapshot every such name needs EXECUTE.
            assert!(needs_execute(sql, None), "{sql}");
        }
        assert!(needs_execute("SELECT t.a FROM t", None));
        assert!(!needs_execute("SELECT a FROM t", None));
    }

    #[test]
    fn assignment_targets_are_not_reads() {
        let c = classify_pg::classify("UPDATE t SET c.f = 1", &|_| None);
        assert!(c.fields.is_empty(), "{:?}", c.fields);
        let c = classify_pg::classify("INSERT INTO t (c.f) VALUES (1)", &|_| None);
        assert!(c.fields.is_empty(), "{:?}", c.fields);
    }

    #[test]
    fn a_dropped_snapshot_is_not_used() {
        let cats = Catalogs::default();
        let c = Arc::new(catalog());
        cats.store("x", c.clone());
        assert!(cats.for_session("x", &Some(c.clone())).is_some());
        cats.invalidate("x");
        assert!(cats.for_session("x", &Some(c)).is_none());
        assert!(Catalogs::invalidates(PrivSet::of(&[P::Create])));
        assert!(!Catalogs::invalidates(PrivSet::of(&[
            P::Select,
            P::Execute
        ])));
    }
}
