//! The bypass corpus at unit level: statement strings built to hide what they do (comments,
//! strings, dollar quotes, executable comments, case games, multi-statements, writing CTEs,
//! side-effect functions, EXPLAIN ANALYZE, COPY PROGRAM, SET ROLE, dblink, LOAD DATA,
//! INTO OUTFILE, prepared statements), each with the privileges it must be found to need.
//! `"ALL"` means: only a policy granting ALL lets it through.

#[cfg(test)]
use super::{mysql, pg};
#[cfg(test)]
use crate::privilege::{PrivSet, Privilege};

#[cfg(test)]
fn set(names: &str) -> PrivSet {
    PrivSet::of(
        &names
            .split_whitespace()
            .map(|n| Privilege::parse(n).unwrap_or_else(|| panic!("bad privilege {n}")))
            .collect::<Vec<_>>(),
    )
}

/// (statement, exactly the privileges it needs).
pub const PG: &[(&str, &str)] = &[
    ("SELECT 1", "SELECT"),
    ("select * from t where a = 1", "SELECT"),
    ("SeLeCt * FrOm t", "SELECT"),
    ("/* DELETE FROM t */ SELECT 1", "SELECT"),
    ("SELECT 1 -- ; DELETE FROM t", "SELECT"),
    ("SELECT 1; DELETE FROM t", "SELECT DELETE"),
    ("SELECT 1;DELETE FROM t;", "SELECT DELETE"),
    ("SELECT '; DELETE FROM t; --'", "SELECT"),
    ("SELECT $$; DELETE FROM t; $$", "SELECT"),
    ("SELECT $x$ $$; DROP TABLE t; $$ $x$", "SELECT"),
    ("SELECT E'\\'; DROP TABLE t; --'", "SELECT"),
    ("SELECT 'a\\'; DROP TABLE t; --'", "SELECT DROP"),
    ("SELECT \"; DROP TABLE t\" FROM t", "SELECT"),
    ("/* /* nested */ DROP TABLE t; */ SELECT 1", "SELECT"),
    ("INSERT INTO t VALUES (1)", "INSERT"),
    ("INSERT INTO t SELECT * FROM s", "INSERT SELECT"),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2",
        "INSERT UPDATE",
    ),
    ("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", "INSERT"),
    ("UPDATE t SET a = 1", "UPDATE"),
    ("DELETE FROM t", "DELETE"),
    (
        "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE",
        "MERGE",
    ),
    (
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "SELECT DELETE",
    ),
    (
        "WITH u AS (UPDATE t SET a = 1 RETURNING a) SELECT 1",
        "SELECT UPDATE",
    ),
    (
        "WITH i AS (INSERT INTO t VALUES (1) RETURNING a) SELECT * FROM i",
        "SELECT INSERT",
    ),
    (
        "SELECT * FROM t WHERE a IN (WITH d AS (DELETE FROM s RETURNING a) SELECT a FROM d)",
        "SELECT DELETE",
    ),
    ("SELECT * INTO newt FROM t", "SELECT CREATE INSERT"),
    ("SELECT * FROM t FOR UPDATE", "SELECT LOCK"),
    (
        "SELECT lower(a), count(*), now() FROM t GROUP BY 1",
        "SELECT",
    ),
    ("SELECT pg_catalog.upper('x')", "SELECT"),
    ("SELECT nextval('s')", "SELECT EXECUTE"),
    ("SELECT my_func(1)", "SELECT EXECUTE"),
    ("SELECT public.lower('x')", "SELECT EXECUTE"),
    ("SELECT * FROM t WHERE a = evil()", "SELECT EXECUTE"),
    ("SELECT ARRAY[evil()]", "SELECT EXECUTE"),
    ("SELECT CASE WHEN true THEN evil() END", "SELECT EXECUTE"),
    ("SELECT (SELECT evil())", "SELECT EXECUTE"),
    ("SELECT * FROM evil_srf()", "SELECT EXECUTE"),
    (
        "SELECT count(*) FILTER (WHERE evil()) FROM t",
        "SELECT EXECUTE",
    ),
    ("SELECT 1 ### 2", "SELECT EXECUTE"),
    ("SELECT 1 +++ 2", "SELECT"),
    ("SELECT 1 OPERATOR(myschema.+) 2", "SELECT EXECUTE"),
    ("SELECT pg_advisory_lock(1)", "SELECT EXECUTE"),
    ("SELECT set_config('role', 'postgres', false)", "SELECT ALL"),
    ("SELECT pg_read_file('/etc/passwd')", "SELECT ALL"),
    ("SELECT random(), gen_random_uuid()", "SELECT"),
    (
        "SELECT dblink_exec('host=x', 'DROP TABLE t')",
        "SELECT EXECUTE LINK",
    ),
    (
        "SELECT * FROM dblink('host=x', 'SELECT 1') AS r(a int)",
        "SELECT EXECUTE LINK",
    ),
    ("EXPLAIN SELECT * FROM t", "DESC"),
    ("EXPLAIN DELETE FROM t", "DESC"),
    ("EXPLAIN ANALYZE DELETE FROM t", "DESC DELETE"),
    ("EXPLAIN (ANALYZE) DELETE FROM t", "DESC DELETE"),
    (
        "EXPLAIN (ANALYZE true, BUFFERS) UPDATE t SET a = 1",
        "DESC UPDATE",
    ),
    ("EXPLAIN (ANALYZE false) DELETE FROM t", "DESC"),
    ("EXPLAIN SELECT evil()", "DESC EXECUTE"),
    ("COPY t TO STDOUT", "SELECT"),
    ("COPY t FROM STDIN", "INSERT"),
    (
        "COPY (DELETE FROM t RETURNING *) TO STDOUT",
        "SELECT DELETE",
    ),
    ("COPY t TO PROGRAM 'rm -rf /'", "ALL"),
    ("COPY t FROM PROGRAM 'id'", "ALL"),
    ("COPY t TO '/tmp/x'", "ALL"),
    ("SET ROLE postgres", "ALL"),
    ("SET SESSION AUTHORIZATION postgres", "ALL"),
    ("RESET ROLE", "ALL"),
    ("SET search_path = evil, pg_catalog", "ALL"),
    ("SET standard_conforming_strings = off", "ALL"),
    ("SET client_encoding = 'SJIS'", "ALL"),
    ("SET client_encoding = 'UTF8'", ""),
    ("SET application_name = 'x'", ""),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", ""),
    ("SET enable_seqscan = off", "COMMAND"),
    ("SHOW server_version", "SHOW"),
    ("DO $$ BEGIN DELETE FROM t; END $$", "ALL"),
    ("CALL proc(1)", "EXECUTE"),
    ("BEGIN", "BEGIN"),
    ("START TRANSACTION", "BEGIN"),
    ("COMMIT", "COMMIT"),
    ("ROLLBACK", "ROLLBACK"),
    ("SAVEPOINT a", "BEGIN"),
    ("ROLLBACK TO SAVEPOINT a", "ROLLBACK"),
    ("PREPARE p AS DELETE FROM t", "DELETE"),
    ("PREPARE p AS SELECT 1", "SELECT"),
    ("EXECUTE unknown_stmt", "ALL"),
    ("CREATE TABLE x (a int)", "CREATE"),
    ("CREATE TABLE x AS SELECT * FROM t", "CREATE INSERT SELECT"),
    ("CREATE INDEX ON t (a)", "INDEX"),
    ("CREATE INDEX ON t (evil(a))", "INDEX EXECUTE"),
    ("ALTER TABLE t ADD COLUMN b int", "ALTER"),
    ("ALTER TABLE t RENAME TO u", "RENAME"),
    ("DROP TABLE t", "DROP"),
    ("TRUNCATE t", "TRUNCATE"),
    ("GRANT SELECT ON t TO PUBLIC", "GRANT"),
    ("REVOKE SELECT ON t FROM PUBLIC", "REVOKE"),
    ("COMMENT ON TABLE t IS 'x'", "COMMENT"),
    ("LOCK TABLE t", "LOCK"),
    ("VACUUM t", "COMMAND"),
    ("LOAD 'evil.so'", "ALL"),
    ("CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw", "LINK"),
    ("CREATE EXTENSION dblink", "CREATE"),
    ("DECLARE c CURSOR FOR SELECT * FROM t", "SELECT"),
    ("FETCH 10 FROM c", "SELECT"),
    ("SELECT 1; SET ROLE postgres", "SELECT ALL"),
    ("SELEC 1", "ALL"),
    ("SELECT 'unterminated", "ALL"),
    ("SELECT 1 \u{0}; DROP TABLE t", "ALL"),
];

pub const MYSQL: &[(&str, &str)] = &[
    ("SELECT 1", "SELECT"),
    ("select @@version_comment limit 1", "SELECT"),
    ("sElEcT * fRoM t", "SELECT"),
    ("SELECT 1 /* ; DELETE FROM t */", "SELECT"),
    ("SELECT 1 /*! ; DELETE FROM t */", "SELECT DELETE"),
    ("SELECT 1 /*!50000 ; DELETE FROM t */", "SELECT DELETE"),
    ("SELECT 1 /*!999999 ; DELETE FROM t */", "SELECT"),
    ("SELECT 1 /*M! ; DELETE FROM t */", "SELECT DELETE"),
    ("SELECT 1 /*M!100100 ; DELETE FROM t */", "SELECT DELETE"),
    ("/*!DELETE*/ FROM t", "DELETE"),
    ("SELECT 1 /*!50000 , '*/ ; DELETE FROM t; -- ' */", "SELECT"),
    ("SELECT 1 -- ; DELETE FROM t", "SELECT"),
    ("SELECT 1 --; DELETE FROM t", "ALL"),
    ("SELECT 1 # ; DELETE FROM t", "SELECT"),
    ("SELECT '; DELETE FROM t; -- '", "SELECT"),
    ("SELECT \"; DELETE FROM t; -- \"", "SELECT"),
    ("SELECT 'a\\'; DELETE FROM t; -- '", "SELECT"),
    ("SELECT 'a''; DELETE FROM t; -- '", "SELECT"),
    ("SELECT `; DELETE FROM t` FROM s", "SELECT"),
    ("SELECT 1; DELETE FROM t", "SELECT DELETE"),
    ("SELECT 1;DELETE FROM t;", "SELECT DELETE"),
    ("INSERT INTO t VALUES (1)", "INSERT"),
    ("INSERT INTO t SELECT * FROM s", "INSERT SELECT"),
    (
        "INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = 2",
        "INSERT UPDATE",
    ),
    ("REPLACE INTO t VALUES (1)", "INSERT DELETE"),
    ("UPDATE t SET a = 1", "UPDATE"),
    ("DELETE FROM t", "DELETE"),
    ("SELECT * FROM t FOR UPDATE", "SELECT LOCK"),
    ("SELECT * FROM t INTO OUTFILE '/tmp/x'", "ALL"),
    ("SELECT * INTO OUTFILE '/tmp/x' FROM t", "ALL"),
    ("SELECT LOAD_FILE('/etc/passwd')", "SELECT ALL"),
    ("SELECT SLEEP(1)", "SELECT EXECUTE"),
    ("SELECT GET_LOCK('a', 1)", "SELECT EXECUTE"),
    ("SELECT my_udf(1)", "SELECT EXECUTE"),
    ("SELECT db.f(1)", "SELECT EXECUTE"),
    ("SELECT LOWER(a), COUNT(*), NOW() FROM t", "SELECT"),
    ("SELECT JSON_EXTRACT(a, '$.x') FROM t", "SELECT"),
    ("SELECT NEXTVAL(s)", "SELECT EXECUTE"),
    ("CALL p()", "EXECUTE"),
    ("EXPLAIN SELECT * FROM t", "DESC"),
    ("EXPLAIN DELETE FROM t", "DESC"),
    ("EXPLAIN ANALYZE DELETE FROM t", "DESC DELETE"),
    ("DESCRIBE t", "DESC"),
    ("DESC t", "DESC"),
    ("SHOW TABLES", "SHOW"),
    ("SHOW DATABASES", "SHOW"),
    ("USE db", "CONNECT"),
    ("BEGIN", "BEGIN"),
    ("START TRANSACTION", "BEGIN"),
    ("COMMIT", "COMMIT"),
    ("ROLLBACK", "ROLLBACK"),
    ("SET autocommit = 0", ""),
    ("SET NAMES utf8mb4", ""),
    ("SET NAMES gbk", "ALL"),
    ("SET @x = 1", ""),
    ("SET @x = SLEEP(1)", "EXECUTE"),
    ("SET sql_mode = 'NO_BACKSLASH_ESCAPES'", "ALL"),
    ("SET @@session.sql_mode = 'ANSI_QUOTES'", "ALL"),
    ("SET GLOBAL max_connections = 1", "COMMAND"),
    ("SET foreign_key_checks = 0", "COMMAND"),
    ("SET ROLE admin", "ALL"),
    (
        "LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t",
        "INSERT COMMAND",
    ),
    (
        "LOAD DATA INFILE '/var/lib/mysql-files/x' INTO TABLE t",
        "ALL",
    ),
    (
        "load data local infile 'x' into table t; DELETE FROM t",
        "ALL",
    ),
    ("PREPARE s FROM 'DELETE FROM t'", "DELETE"),
    ("PREPARE s FROM 'SELECT 1'", "SELECT"),
    ("PREPARE s FROM @q", "ALL"),
    ("EXECUTE s", "ALL"),
    ("CREATE TABLE x (a INT)", "CREATE"),
    ("CREATE TABLE x AS SELECT * FROM t", "CREATE INSERT SELECT"),
    ("CREATE INDEX i ON t (a)", "INDEX"),
    ("ALTER TABLE t ADD COLUMN b INT", "ALTER"),
    ("ALTER TABLE t RENAME TO u", "RENAME"),
    ("RENAME TABLE t TO u", "RENAME"),
    ("DROP TABLE t", "DROP"),
    ("TRUNCATE TABLE t", "TRUNCATE"),
    ("GRANT SELECT ON t TO 'u'@'%'", "GRANT"),
    ("REVOKE SELECT ON t FROM 'u'@'%'", "REVOKE"),
    ("LOCK TABLES t READ", "LOCK"),
    ("UNLOCK TABLES", "LOCK"),
    ("KILL 12", "COMMAND"),
    ("HANDLER t OPEN", "ALL"),
    ("DO SLEEP(1)", "ALL"),
    ("SELEC 1", "ALL"),
    ("SELECT 'unterminated", "ALL"),
    ("SELECT 1 /*! DELETE FROM t", "ALL"),
];

#[test]
fn postgres_corpus() {
    let none = |_: &str| None;
    let mut failures = Vec::new();
    for (sql, want) in PG {
        let got = pg::classify(sql, &none);
        if got.needs != set(want) {
            failures.push(format!(
                "{sql:?}: want [{want}], got [{}] ({:?})",
                got.needs.names(),
                got.unclassifiable
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn mysql_corpus() {
    let none = |_: &str| None;
    let mut failures = Vec::new();
    for (sql, want) in MYSQL {
        let got = mysql::classify(sql, mysql::Flavor::default(), &none);
        if got.needs != set(want) {
            failures.push(format!(
                "{sql:?}: want [{want}], got [{}] ({:?})",
                got.needs.names(),
                got.unclassifiable
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn corpus_is_large_enough() {
    assert!(PG.len() + MYSQL.len() >= 100);
}

#[test]
fn prepared_statements_carry_their_needs() {
    let c = pg::classify("PREPARE p AS DELETE FROM t", &|_| None);
    assert_eq!(c.prepared, vec![("p".to_owned(), set("DELETE"))]);
    let known = |n: &str| (n == "p").then(|| set("DELETE"));
    assert_eq!(pg::classify("EXECUTE p", &known).needs, set("DELETE"));
    let c = mysql::classify(
        "PREPARE s FROM 'UPDATE t SET a=1'",
        mysql::Flavor::default(),
        &|_| None,
    );
    assert_eq!(c.prepared, vec![("s".to_owned(), set("UPDATE"))]);
    let known = |n: &str| (n == "s").then(|| set("UPDATE"));
    assert_eq!(
        mysql::classify("EXECUTE s", mysql::Flavor::default(), &known).needs,
        set("UPDATE")
    );
}

#[test]
fn the_classification_cache_changes_no_verdict() {
    let none = |_: &str| None;
    let cache = super::cache::Cache::default();
    let mut key = Vec::new();
    // Twice each (the second from the cache when cacheable), and with other constants.
    for _ in 0..2 {
        for (sql, want) in PG {
            let got = pg::classify_cached(sql, &none, &cache, &mut key);
            assert_eq!(got.needs, set(want), "{sql:?}");
            let other = sql.replace('1', "7").replace("'x'", "'y'");
            let direct = pg::classify(&other, &none);
            let cached = pg::classify_cached(&other, &none, &cache, &mut key);
            assert_eq!(cached.needs, direct.needs, "{other:?}");
            assert_eq!(cached.statements, direct.statements, "{other:?}");
        }
    }
    assert!(!cache.is_empty());
    // Constants that decide the classification are never served from the cache.
    pg::classify_cached("SET client_encoding = 'UTF8'", &none, &cache, &mut key);
    let sjis = pg::classify_cached("SET client_encoding = 'SJIS'", &none, &cache, &mut key);
    assert_eq!(sjis.needs, set("ALL"));
    pg::classify_cached(
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        &none,
        &cache,
        &mut key,
    );
    let analyze = pg::classify_cached(
        "EXPLAIN (ANALYZE true) DELETE FROM t",
        &none,
        &cache,
        &mut key,
    );
    assert_eq!(analyze.needs, set("DESC DELETE"));
    // SQL-level PREPARE / EXECUTE depend on the session.
    let known = |n: &str| (n == "p").then(|| set("DELETE"));
    assert_eq!(
        pg::classify_cached("EXECUTE p", &known, &cache, &mut key).needs,
        set("DELETE")
    );
    assert_eq!(
        pg::classify_cached("EXECUTE p", &none, &cache, &mut key).needs,
        set("ALL")
    );
}
