//! The database gateway against the real PostgreSQL (127.0.0.1:5432) and MariaDB
//! (127.0.0.1:3306), through the stock `psql` and `mariadb` clients: login with the Haechi
//! password or a token, verdicts, the bypass corpus (every refused statement changed
//! nothing), lock mid-session, cancel, a million rows with bounded memory, many connections,
//! and a vault password change used from the next login on.

mod common;
mod gateway_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{call, client, enc, login, metrics_text, Server, ADMIN_PASSWORD};
use gateway_support::{my_admin, pg_admin, pg_admin_url, run, start_gateways, POOL_IDLE_SECS};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

/// The test process that created a throwaway object (`hgw<pid>x...`), if the name says.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix("hgw")?.split('x').next()?.parse().ok()
}

/// Removes what earlier runs of this file left behind when they died before their cleanup
/// ran (their objects all start with `hgw<pid>x`). Objects of a run still alive (another test
/// process using the same databases) are left alone.
fn drop_leftovers() {
    let dead = |name: &str| {
        owner_pid(name).is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    for role in pg_admin("SELECT rolname FROM pg_roles WHERE rolname LIKE 'hgw%'").lines() {
        if dead(role) {
            pg_admin(&pg_cleanup_sql(role));
        }
    }
    for db in my_admin(
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'hgw%'",
    )
    .lines()
    {
        if dead(db) {
            my_admin(&format!("DROP DATABASE IF EXISTS {db}"));
        }
    }
    for user in my_admin("SELECT user FROM mysql.user WHERE user LIKE 'hgw%'").lines() {
        if dead(user) {
            my_admin(&format!("DROP USER IF EXISTS '{user}'@'%'"));
        }
    }
}

/// Drops a run's PostgreSQL role and everything it owns in the `test` database.
fn pg_cleanup_sql(role: &str) -> String {
    format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'; \
         DROP SCHEMA IF EXISTS {role} CASCADE; DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}"
    )
}

/// Drops this run's role, schema, database and user (and the server's store database and data
/// directory) once the test process has ended, however it ends: the fixture lives in a static,
/// so nothing of it is dropped at exit. A small shell process waits for this one to go.
fn clean_up_at_exit(run: &str, server: &Server) {
    let mut script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; sleep 1; \
         psql \"$1\" -X -q -c \"$2\"; mariadb -h 127.0.0.1 -P 3306 -u root -e \"$3\"; rm -rf \"$4\"",
        pid = std::process::id()
    );
    let mut args = vec![
        pg_admin_url(),
        pg_cleanup_sql(run),
        format!("DROP DATABASE IF EXISTS {run}; DROP USER IF EXISTS '{run}'@'%'"),
        server.data_dir.to_string_lossy().into_owned(),
    ];
    if let (common::Db::Postgres(url), Some(admin)) = (&server.db, common::pg_admin_url()) {
        let store_db = url
            .rsplit('/')
            .next()
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("");
        if store_db.starts_with("haechi_t_") {
            script.push_str("; psql \"$5\" -X -q -c \"$6\"");
            args.push(admin);
            args.push(format!("DROP DATABASE IF EXISTS {store_db} WITH (FORCE)"));
        }
    }
    // `( … ) &`: the waiting shell is detached and outlives this process; the outer shell
    // returns at once and is waited for.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("( {script} ) >/dev/null 2>&1 </dev/null &"))
        .arg("haechi-gateway-test-cleanup")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start the cleanup process");
    assert!(status.success());
}

struct Fixture {
    server: Server,
    pg_port: u16,
    my_port: u16,
    /// Unique per run: role, schema, database and target names derive from it.
    run: String,
    admin: String,
    db_password: String,
    credential: i64,
    value_id: i64,
}

static FIXTURE: OnceCell<Fixture> = OnceCell::const_new();
/// The tests share one account on each database; one at a time keeps their effects apart.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn fixture() -> &'static Fixture {
    FIXTURE
        .get_or_init(|| async {
            let (server, pg_port, my_port) = start_gateways(2).await;
            let run = common::unique("hgw").to_lowercase();
            assert_eq!(owner_pid(&run), Some(std::process::id()));
            drop_leftovers();
            clean_up_at_exit(&run, &server);
            let db_password = format!("Db-{}", common::unique("pw"));
            // PostgreSQL: a role with a SCRAM password, its own schema with tables t and s.
            pg_admin(&format!(
                "SET password_encryption = 'scram-sha-256'; CREATE ROLE {run} LOGIN PASSWORD '{db_password}'; \
                 CREATE SCHEMA {run} AUTHORIZATION {run}; ALTER ROLE {run} SET search_path = {run}; \
                 CREATE TABLE {run}.t (a int, b int); CREATE TABLE {run}.s (a int); \
                 INSERT INTO {run}.t SELECT g, g FROM generate_series(1, 10) g; INSERT INTO {run}.s VALUES (1); \
                 ALTER TABLE {run}.t OWNER TO {run}; ALTER TABLE {run}.s OWNER TO {run};"
            ));
            // MariaDB: a user with a password and a database with tables t and s.
            my_admin(&format!(
                "CREATE DATABASE {run}; CREATE USER '{run}'@'%' IDENTIFIED BY '{db_password}'; \
                 GRANT ALL ON {run}.* TO '{run}'@'%'; CREATE TABLE {run}.t (a INT, b INT); \
                 CREATE TABLE {run}.s (a INT); INSERT INTO {run}.t VALUES (1,1),(2,2),(3,3); INSERT INTO {run}.s VALUES (1);"
            ));
            let admin = login(&server, "admin", ADMIN_PASSWORD).await;
            let (s, cred) = call(
                client()
                    .post(server.url("/v2/credentialvault/credentials"))
                    .bearer_auth(&admin)
                    .json(&json!({ "name": run, "attributes": [{ "name": "password", "userProvided": false, "masked": true }] })),
            )
            .await;
            assert_eq!(s, 201, "{cred}");
            let credential = cred["id"].as_i64().unwrap();
            let attr = cred["attributes"][0]["id"].as_i64().unwrap();
            let (s, v) = call(
                client()
                    .post(server.url(&format!("/v2/credentialvault/credentials/{credential}/attributevalues")))
                    .bearer_auth(&admin)
                    .json(&json!([{ "credentialAttributeId": attr, "value": db_password }])),
            )
            .await;
            assert_eq!(s, 201, "{v}");
            let value_id = v[0]["id"].as_i64().unwrap();
            for (kind, port, database) in [("postgres", 5432, "test"), ("mysql", 3306, run.as_str())] {
                let name = format!("{run}_{kind}");
                let (s, v) = call(client().post(server.url("/api/v1/db/targets")).bearer_auth(&admin).json(
                    &json!({ "name": name, "kind": kind, "host": "127.0.0.1", "port": port, "database": database }),
                ))
                .await;
                assert_eq!(s, 201, "{v}");
                assert!(v["id"].is_i64());
                let (s, v) = call(
                    client()
                        .post(server.url(&format!("/api/v1/db/targets/{name}/accounts")))
                        .bearer_auth(&admin)
                        .json(&json!({ "account": run, "credentialId": credential, "attribute": "password" })),
                )
                .await;
                assert_eq!(s, 201, "{v}");
                assert!(!v.to_string().contains(&db_password), "the password must not come back");
            }
            Fixture { server, pg_port, my_port, run, admin, db_password, credential, value_id }
        })
        .await
}

/// A Haechi user with a policy on both targets granting `privileges`; returns (user, password, policy indexes).
async fn person(f: &Fixture, privileges: &[&str]) -> (String, String, Vec<i64>) {
    let user = common::unique("gwu").to_lowercase();
    let password = format!("Pw-{}", common::unique("x"));
    let (s, v) = call(
        client()
            .post(f.server.url("/api/v1/users"))
            .bearer_auth(&f.admin)
            .json(&json!({ "user_id": user, "name": "Gateway user", "password": password })),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let mut indexes = Vec::new();
    for port in [5432, 3306] {
        let (s, v) = call(
            client()
                .post(f.server.url("/dbsafer/api/v1/policy/custom/access-policies"))
                .bearer_auth(&f.admin)
                .json(&json!({ "userId": user, "account": f.run, "serverAddress": "127.0.0.1", "serverPort": port,
                               "clientIpBegin": "127.0.0.1", "clientIpEnd": "127.0.0.1", "sqlPrivileges": privileges })),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        let index = v["index"].as_i64().unwrap();
        POLICY_IDS.lock().unwrap().insert(
            (f.run.clone(), index),
            v["policyId"].as_str().unwrap().to_owned(),
        );
        indexes.push(index);
    }
    (user, password, indexes)
}

fn psql_gw(f: &Fixture, user: &str, password: &str, sqls: &[&str]) -> (bool, String) {
    psql_gw_on(f, &format!("{}_postgres", f.run), user, password, sqls)
}

/// [`psql_gw`] to the target named `target`.
fn psql_gw_on(
    f: &Fixture,
    target: &str,
    user: &str,
    password: &str,
    sqls: &[&str],
) -> (bool, String) {
    let conn = format!(
        "host=127.0.0.1 port={} user={user}@{} dbname={target} sslmode=require",
        f.pg_port, f.run
    );
    let mut cmd = Command::new("psql");
    cmd.arg(conn)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=0"])
        .env("PGPASSWORD", password);
    for s in sqls {
        cmd.arg("-c").arg(s);
    }
    run(&mut cmd)
}

fn mariadb_gw(f: &Fixture, user: &str, password: &str, sql: &str, tls: bool) -> (bool, String) {
    mariadb_gw_on(f, &format!("{}_mysql", f.run), user, password, sql, tls)
}

/// [`mariadb_gw`] to the target named `target`.
fn mariadb_gw_on(
    f: &Fixture,
    target: &str,
    user: &str,
    password: &str,
    sql: &str,
    tls: bool,
) -> (bool, String) {
    let mut cmd = Command::new("mariadb");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-P",
        &f.my_port.to_string(),
        "-u",
        &format!("{user}@{}", f.run),
    ])
    .arg(format!("-p{password}"))
    .args(["--comments", "-N", "-B", "--force"]);
    if !tls {
        cmd.arg("--skip-ssl");
    }
    cmd.arg(target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the mariadb client must be installed");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(sql.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What a refused statement could have changed on PostgreSQL: the rows of t and s, every
/// object of the run's schema (name, kind, privileges, comment, columns), its functions, the
/// role's settings and attributes, and the extensions, foreign servers and large objects of
/// the database.
fn pg_state(f: &Fixture) -> String {
    pg_admin(&format!(
        "SELECT concat_ws(',', (SELECT count(*) FROM {r}.t), (SELECT coalesce(sum(a),0) FROM {r}.t), (SELECT coalesce(sum(b),0) FROM {r}.t), \
           (SELECT count(*) FROM {r}.s), \
           (SELECT md5(coalesce(string_agg(c.relname::text || c.relkind::text || coalesce(c.relacl::text, '') || coalesce(obj_description(c.oid), '') \
                   || (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), ';' ORDER BY c.relname), '')) \
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{r}'), \
           (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = '{r}'), \
           (SELECT coalesce(rolconfig::text, '') || rolsuper || rolcreaterole || rolcreatedb FROM pg_roles WHERE rolname = '{r}'), \
           (SELECT count(*) FROM pg_extension), (SELECT count(*) FROM pg_foreign_server), (SELECT count(*) FROM pg_largeobject_metadata))",
        r = f.run
    ))
}

/// The same for MariaDB: rows, tables (names, columns, indexes), routines, triggers, views,
/// grants on the database, and the global setting the corpus tries to change.
fn my_state(f: &Fixture) -> String {
    my_admin(&format!(
        "SELECT CONCAT_WS(',', (SELECT count(*) FROM {r}.t), (SELECT coalesce(sum(a),0) FROM {r}.t), (SELECT coalesce(sum(b),0) FROM {r}.t), \
           (SELECT count(*) FROM {r}.s), \
           (SELECT md5(coalesce(group_concat(table_name, table_type ORDER BY table_name), '')) FROM information_schema.tables WHERE table_schema = '{r}'), \
           (SELECT count(*) FROM information_schema.columns WHERE table_schema = '{r}'), \
           (SELECT count(*) FROM information_schema.statistics WHERE table_schema = '{r}'), \
           (SELECT count(*) FROM information_schema.routines WHERE routine_schema = '{r}'), \
           (SELECT count(*) FROM information_schema.triggers WHERE trigger_schema = '{r}'), \
           (SELECT count(*) FROM mysql.tables_priv WHERE Db = '{r}'), \
           @@GLOBAL.max_connections)",
        r = f.run
    ))
}

#[tokio::test]
async fn psql_and_mariadb_through_the_gateway() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (user, pw, _) = person(f, &["SELECT", "INSERT"]).await;
    let (ok, out) = psql_gw(
        f,
        &user,
        &pw,
        &[
            "SELECT count(*) FROM t",
            "DELETE FROM t",
            "INSERT INTO s VALUES (7)",
            "SELECT count(*) FROM s",
        ],
    );
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"10"), "{out}");
    assert!(
        out.contains("ERROR:  Haechi DB gateway: refused by DBSAFER policy POLICY_"),
        "{out}"
    );
    assert!(out.contains("needs DELETE"), "{out}");
    assert!(
        lines.contains(&"2"),
        "the session stays usable after a refusal: {out}"
    );
    pg_admin(&format!("DELETE FROM {}.s WHERE a = 7", f.run));

    for tls in [true, false] {
        let (_, out) = mariadb_gw(
            f,
            &user,
            &pw,
            "SELECT count(*) FROM t; DELETE FROM t; SELECT 'still here'",
            tls,
        );
        assert!(out.contains("ERROR 1142 (42000)"), "{out}");
        assert!(
            out.contains("refused by DBSAFER policy POLICY_") && out.contains("needs DELETE"),
            "{out}"
        );
        assert!(
            out.contains("still here") && out.lines().next() == Some("3"),
            "{out}"
        );
    }

    // A token works as the password too; a wrong password does not.
    let token = login(&f.server, &user, &pw).await;
    let (ok, out) = psql_gw(f, &user, &token, &["SELECT 42"]);
    assert!(ok && out.contains("42"), "{out}");
    let (ok, out) = psql_gw(f, &user, "wrong", &["SELECT 1"]);
    assert!(!ok && out.contains("wrong user id or password"), "{out}");
    let (_, out) = mariadb_gw(f, &user, "wrong", "SELECT 1", true);
    assert!(out.contains("ERROR 1045"), "{out}");

    // PostgreSQL SQLSTATE 42501 for refusals.
    let (_, out) = psql_gw(f, &user, &pw, &["\\set VERBOSITY verbose", "TRUNCATE t"]);
    assert!(out.contains("42501"), "{out}");

    // Every statement is audited, refusals as denied.
    let (_, _, auditor) = common::user_with_roles(&f.server, &["Auditor"]).await;
    let statement_events = || async {
        let (s, v) = call(
            client()
                .get(f.server.url(&format!(
                    "/api/v1/audit?user={}&action=db.statement&limit=1000",
                    enc(&user)
                )))
                .bearer_auth(&auditor),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        v["events"].as_array().unwrap().clone()
    };
    // Statement events are committed in batches a few ms later.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = statement_events().await;
    while events.len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        events = statement_events().await;
    }
    let denied = events.iter().filter(|e| e["outcome"] == "denied").count();
    assert!(denied >= 3, "{events:?}");
    let detail: Value = events.iter().find(|e| e["outcome"] == "denied").unwrap()["detail"].clone();
    assert!(
        detail["statement"].is_string()
            && detail["missing"].is_string()
            && detail["verdict"] == "refused"
            && detail["privileges"].is_string()
            && detail["rows"] == 0
            && detail["duration_ms"].is_number()
            && ["postgres", "mysql"].contains(&detail["protocol"].as_str().unwrap_or(""))
            && detail["account"] == json!(f.run),
        "{detail}"
    );
    // An allowed statement: its rows, no missing privilege, no error.
    let allowed = events
        .iter()
        .map(|e| &e["detail"])
        .find(|d| d["statement"] == "SELECT count(*) FROM t")
        .unwrap_or_else(|| panic!("no audit event of the SELECT in {events:?}"));
    assert!(
        allowed["verdict"] == "allowed"
            && allowed["privileges"] == "SELECT"
            && allowed["missing"].is_null()
            && allowed["error"].is_null()
            && allowed["rows"].as_u64().is_some_and(|r| r > 0),
        "{allowed}"
    );
    let (code, text) = f.server.audit_verify();
    assert_eq!(code, 0, "{text}");
}

/// The admin API of targets and accounts: every kind of bad input is a 400, 404, 409, 403 or
/// 413 that names what is wrong, and none of them creates or removes anything.
#[tokio::test]
async fn targets_and_accounts_refuse_bad_input_and_change_nothing() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let targets = f.server.url("/api/v1/db/targets");
    let before = target_listing(f).await;
    let name = format!("{}_bad", f.run);
    let good = json!({ "name": name, "kind": "postgres", "host": "127.0.0.1", "port": 5432, "database": "test" });
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let long_dir = format!("/{}", "d".repeat(100));
    let cases = [
        (without("name"), "name"),
        (without("kind"), "kind"),
        (without("host"), "host"),
        (without("port"), "port"),
        (without("database"), "database"),
        (with("name", json!("")), "name"),
        (with("name", json!("a@b")), "name"),
        (with("kind", json!("oracle")), "kind"),
        (with("kind", json!(1)), "kind"),
        (with("host", json!(" ")), "host"),
        (with("host", json!("db host")), "host"),
        (with("port", json!("5432")), "port"),
        (with("port", json!(0)), "port"),
        (with("port", json!(65536)), "port"),
        (with("database", json!("")), "database"),
        (with("tls", json!("verify-ca")), "tls"),
        (with("tls", json!("verify-full")), "tls_ca_file"),
        (
            with("tls_ca_file", json!("/etc/ssl/certs/ca-certificates.crt")),
            "tls_ca_file",
        ),
        (
            with("allow_insecure_password", json!("yes")),
            "allow_insecure_password",
        ),
        (with("socket", json!("var/run/postgresql")), "socket"),
        (with("socket", json!(5)), "socket"),
        (with("socket", json!(long_dir)), "socket"),
        (
            json!({ "name": name, "kind": "postgres", "host": "127.0.0.1", "port": 5432, "database": "test",
                    "tls": "require", "socket": "/var/run/postgresql" }),
            "socket",
        ),
    ];
    for (body, field) in cases {
        let (s, v) = call(client().post(&targets).bearer_auth(&f.admin).json(&body)).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    // Not JSON, and too large.
    let (s, v) = call(
        client()
            .post(&targets)
            .bearer_auth(&f.admin)
            .header("content-type", "application/json")
            .body("{\"name\": "),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = call(
        client()
            .post(&targets)
            .bearer_auth(&f.admin)
            .json(&with("database", json!("x".repeat(2 * 1024 * 1024)))),
    )
    .await;
    assert_eq!(s, 413, "{v}");
    // A name that is taken.
    let taken = with("name", json!(format!("{}_postgres", f.run)));
    let (s, v) = call(client().post(&targets).bearer_auth(&f.admin).json(&taken)).await;
    assert_eq!(s, 409, "{v}");
    // Someone without `DB Policy Admin`.
    let (user, pw, _) = person(f, &["SELECT"]).await;
    let token = login(&f.server, &user, &pw).await;
    let (s, v) = call(client().post(&targets).bearer_auth(&token).json(&good)).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = call(client().get(&targets).bearer_auth(&token)).await;
    assert_eq!(s, 403, "{v}");
    // Unknown targets and accounts.
    for req in [
        client().get(f.server.url(&format!("/api/v1/db/targets/{name}"))),
        client().delete(f.server.url(&format!("/api/v1/db/targets/{name}"))),
        client().get(f.server.url(&format!("/api/v1/db/targets/{name}/accounts"))),
        client()
            .post(f.server.url(&format!("/api/v1/db/targets/{name}/accounts")))
            .json(
                &json!({ "account": f.run, "credentialId": f.credential, "attribute": "password" }),
            ),
        client().delete(f.server.url(&format!(
            "/api/v1/db/targets/{}_postgres/accounts/nobody_{}",
            f.run, f.run
        ))),
    ] {
        let (s, v) = call(req.bearer_auth(&f.admin)).await;
        assert_eq!(s, 404, "{v}");
    }
    // Accounts: bad fields, an unknown credential or attribute, an account registered already.
    let accounts = f
        .server
        .url(&format!("/api/v1/db/targets/{}_postgres/accounts", f.run));
    let account = json!({ "account": format!("{}_other", f.run), "credentialId": f.credential, "attribute": "password" });
    let with = |k: &str, v: Value| {
        let mut b = account.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = account.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    for (body, field) in [
        (without("account"), "account"),
        (without("credentialId"), "credentialId"),
        (without("attribute"), "attribute"),
        (with("account", json!("")), "account"),
        (with("account", json!("a@b")), "account"),
        (with("credentialId", json!(0)), "credentialId"),
        (with("credentialId", json!("1")), "credentialId"),
        (with("attribute", json!(" ")), "attribute"),
    ] {
        let (s, v) = call(client().post(&accounts).bearer_auth(&f.admin).json(&body)).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    let (s, v) = call(
        client()
            .post(&accounts)
            .bearer_auth(&f.admin)
            .json(&with("credentialId", json!(i64::from(i32::MAX)))),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = call(
        client()
            .post(&accounts)
            .bearer_auth(&f.admin)
            .json(&with("attribute", json!("no_such_attribute"))),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "attribute", "{v}");
    let (s, v) = call(
        client()
            .post(&accounts)
            .bearer_auth(&f.admin)
            .json(&with("account", json!(f.run))),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = call(client().post(&accounts).bearer_auth(&token).json(&account)).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        target_listing(f).await,
        before,
        "a refused request changed the targets or accounts"
    );
}

/// Every target, and the accounts of the fixture's PostgreSQL target.
async fn target_listing(f: &Fixture) -> (Value, Value) {
    let (s, v) = call(
        client()
            .get(f.server.url("/api/v1/db/targets"))
            .bearer_auth(&f.admin),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, a) = call(
        client()
            .get(
                f.server
                    .url(&format!("/api/v1/db/targets/{}_postgres/accounts", f.run)),
            )
            .bearer_auth(&f.admin),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    (v, a)
}

/// A target with a `socket` is reached over that Unix socket (the gateway on the database's
/// machine), on both protocols; its address for policies stays host and port.
#[tokio::test]
async fn targets_reached_over_their_unix_sockets() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let pg_dir = pg_admin("SELECT split_part(current_setting('unix_socket_directories'), ',', 1)");
    let my_socket = my_admin("SELECT @@socket");
    assert!(
        pg_dir.starts_with('/'),
        "PostgreSQL has no socket directory: {pg_dir:?}"
    );
    assert!(
        my_socket.starts_with('/'),
        "MariaDB has no socket: {my_socket:?}"
    );
    for (kind, port, database, socket) in [
        ("postgres", 5432, "test".to_owned(), format!("{pg_dir}/")),
        ("mysql", 3306, f.run.clone(), my_socket.clone()),
    ] {
        let name = format!("{}_{kind}sock", f.run);
        let (s, v) = call(client().post(f.server.url("/api/v1/db/targets")).bearer_auth(&f.admin).json(
            &json!({ "name": name, "kind": kind, "host": "127.0.0.1", "port": port, "database": database, "socket": socket }),
        ))
        .await;
        assert_eq!(s, 201, "{v}");
        // Stored without the trailing slash.
        assert_eq!(v["socket"], socket.trim_end_matches('/'), "{v}");
        let (s, v) = call(
            client()
                .get(f.server.url(&format!("/api/v1/db/targets/{name}")))
                .bearer_auth(&f.admin),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["socket"], socket.trim_end_matches('/'), "{v}");
        let (s, v) = call(
            client()
                .post(f.server.url(&format!("/api/v1/db/targets/{name}/accounts")))
                .bearer_auth(&f.admin)
                .json(&json!({ "account": f.run, "credentialId": f.credential, "attribute": "password" })),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    // The person's policies name 127.0.0.1 and the ports: they grant both kinds of target.
    let (user, pw, _) = person(f, &["SELECT"]).await;
    let q = "SELECT inet_client_addr() IS NULL, count(*) FROM t";
    let (ok, out) = psql_gw_on(f, &format!("{}_postgressock", f.run), &user, &pw, &[q]);
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        "t|10",
        "over the socket PostgreSQL sees no client address"
    );
    let (ok, out) = psql_gw(f, &user, &pw, &[q]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "f|10", "over TCP it does");
    let (ok, out) = psql_gw_on(
        f,
        &format!("{}_postgressock", f.run),
        &user,
        &pw,
        &["\\set VERBOSITY verbose", "DELETE FROM t"],
    );
    assert!(out.contains("42501"), "{ok} {out}");
    assert_eq!(pg_admin(&format!("SELECT count(*) FROM {}.t", f.run)), "10");
    // MariaDB names a TCP client host:port, a socket client just its host.
    let q = "SELECT HOST, (SELECT count(*) FROM t) FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID();";
    let (ok, out) = mariadb_gw_on(f, &format!("{}_mysqlsock", f.run), &user, &pw, q, true);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "localhost\t3", "over the socket: {out}");
    let (ok, out) = mariadb_gw(f, &user, &pw, q, true);
    assert!(ok, "{out}");
    assert!(
        out.trim().ends_with("\t3") && out.contains(':'),
        "over TCP: {out}"
    );
    let (ok, out) = mariadb_gw_on(
        f,
        &format!("{}_mysqlsock", f.run),
        &user,
        &pw,
        "DELETE FROM t;",
        true,
    );
    assert!(out.contains("1142"), "{ok} {out}");
    assert_eq!(my_admin(&format!("SELECT count(*) FROM {}.t", f.run)), "3");
    for kind in ["postgres", "mysql"] {
        let (s, v) = call(
            client()
                .delete(
                    f.server
                        .url(&format!("/api/v1/db/targets/{}_{kind}sock", f.run)),
                )
                .bearer_auth(&f.admin),
        )
        .await;
        assert_eq!(s, 204, "{v}");
    }
}

/// A statement can turn `standard_conforming_strings` off behind the classifier's back (a
/// function or a view calling `set_config`); the database would then read a later string with
/// a backslash otherwise than it was classified, and run a `DELETE` hidden in what the
/// classifier took for a string literal. Sent right behind such a statement (pipelined, so
/// the gateway decides it before the first has run), on the simple and the extended protocol,
/// pooled or not: it is refused or read as classified, and `t` keeps its rows.
#[tokio::test]
async fn a_setting_changed_behind_the_classifier_does_not_open_a_bypass() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let r = &f.run;
    pg_admin(&format!(
        "CREATE OR REPLACE FUNCTION {r}.lex_off() RETURNS text LANGUAGE sql \
           AS $$ SELECT set_config('standard_conforming_strings', 'off', false) $$; \
         ALTER FUNCTION {r}.lex_off() OWNER TO {r}; \
         CREATE OR REPLACE VIEW {r}.lex_view AS SELECT set_config('standard_conforming_strings', 'off', false) AS v; \
         ALTER VIEW {r}.lex_view OWNER TO {r};"
    ));
    // With the setting on (as classified): one CTE selecting a string, then `SELECT 1`. With
    // it off: a string, a CTE that deletes every row of t, and a comment.
    let attack = "WITH q AS (SELECT 'x\\'' ), d AS (DELETE FROM t RETURNING 1) SELECT count(*) FROM d -- ')SELECT 1";
    let rows = || pg_admin(&format!("SELECT count(*) FROM {r}.t"));
    assert_eq!(rows(), "10");
    let (user, pw, _) = person(f, &["SELECT", "EXECUTE"]).await;
    let login = format!("{user}@{r}");
    let db = format!("{r}_postgres");
    // A new session, and `messages` written to it in one go (so the gateway has them all
    // before the database has answered the first).
    let pipelined = |messages: &[Vec<u8>]| {
        let bytes = messages.concat();
        let (login, pw, db) = (login.clone(), pw.clone(), db.clone());
        async move {
            let mut s = pg_session(f.pg_port, &login, &pw, &db).await;
            s.write_all(&bytes).await.unwrap();
            s
        }
    };

    // Simple protocol, both queries in one write.
    let mut s = pipelined(&[
        pg_msg(b'Q', &cstrs(&["SELECT lex_off()"])),
        pg_msg(b'Q', &cstrs(&[attack])),
    ])
    .await;
    let first = pg_until_ready(&mut s).await;
    assert_eq!(pg_values(&first), ["off"], "{}", tags(&first));
    let second = pg_until_ready(&mut s).await;
    let (code, message) =
        pg_error(&second).unwrap_or_else(|| panic!("not refused: {}", tags(&second)));
    assert_eq!(code, "42501", "{message}");
    assert!(
        message.contains("changed how this session's SQL is read"),
        "{message}"
    );
    assert_eq!(rows(), "10", "the hidden DELETE ran");
    // From then on only ALL allows, backslash or not.
    let msgs = pg_query(&mut s, "SELECT 1").await;
    assert_eq!(
        pg_error(&msgs).map(|e| e.0).as_deref(),
        Some("42501"),
        "{}",
        tags(&msgs)
    );
    drop(s);

    // Extended protocol, the second statement in the same batch after the first's Execute.
    let mut s = pipelined(&[
        pg_parse("", "SELECT lex_off()"),
        pg_bind_execute("", &[]),
        pg_parse("", attack),
        pg_bind_execute("", &[]),
        pg_msg(b'S', &[]),
    ])
    .await;
    let msgs = pg_until_ready(&mut s).await;
    assert_eq!(pg_values(&msgs), ["off"], "{}", tags(&msgs));
    let (code, message) = pg_error(&msgs).unwrap_or_else(|| panic!("not refused: {}", tags(&msgs)));
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("send Sync before it"), "{message}");
    assert_eq!(rows(), "10", "the hidden DELETE ran");
    drop(s);

    // Extended protocol, two batches in one write.
    let mut s = pipelined(&[
        pg_parse("", "SELECT lex_off()"),
        pg_bind_execute("", &[]),
        pg_msg(b'S', &[]),
        pg_parse("", attack),
        pg_bind_execute("", &[]),
        pg_msg(b'S', &[]),
    ])
    .await;
    let first = pg_until_ready(&mut s).await;
    assert_eq!(pg_values(&first), ["off"], "{}", tags(&first));
    let second = pg_until_ready(&mut s).await;
    let (code, message) =
        pg_error(&second).unwrap_or_else(|| panic!("not refused: {}", tags(&second)));
    assert_eq!(code, "42501", "{message}");
    assert_eq!(rows(), "10", "the hidden DELETE ran");
    drop(s);

    // Pooled: the view's SELECT is session-neutral and runs on a shared connection; the
    // string with a backslash is not pooled, so it runs on the session's own connection,
    // where the setting is on, and is read as it was classified.
    let mut s = pipelined(&[
        pg_msg(b'Q', &cstrs(&["SELECT v FROM lex_view"])),
        pg_msg(b'Q', &cstrs(&[attack])),
    ])
    .await;
    let first = pg_until_ready(&mut s).await;
    assert_eq!(pg_values(&first), ["off"], "{}", tags(&first));
    let second = pg_until_ready(&mut s).await;
    assert_eq!(pg_values(&second), ["1"], "{}", tags(&second));
    assert_eq!(rows(), "10", "the hidden DELETE ran");
    drop(s);
    pg_admin(&format!(
        "DROP VIEW {r}.lex_view; DROP FUNCTION {r}.lex_off();"
    ));
}

/// The MySQL side of the same: a stored routine that sets `NO_BACKSLASH_ESCAPES` (or `SET
/// NAMES`) would make the database read a later string otherwise than the gateway lexed it.
/// The gateway relies on the server restoring the caller's `sql_mode` and character set when
/// a routine ends; this pins that the database it runs in front of does, through the gateway.
#[tokio::test]
async fn a_mysql_routine_that_changes_sql_mode_does_not_open_a_bypass() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let r = &f.run;
    my_admin(&format!(
        "CREATE OR REPLACE PROCEDURE {r}.nbe() SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES'); \
         CREATE OR REPLACE PROCEDURE {r}.names() SET NAMES latin1;"
    ));
    let (user, pw, _) = person(f, &["SELECT", "EXECUTE"]).await;
    // Raw COM_QUERY packets: the mariadb client would split text at `;` by its own reading.
    let mut s = mysql_session(
        f.my_port,
        &format!("{user}@{r}"),
        &pw,
        &format!("{r}_mysql"),
    )
    .await;
    assert_eq!(my_query(&mut s, "CALL nbe()").await, Ok(0));
    assert_eq!(my_query(&mut s, "CALL names()").await, Ok(0));
    // Default mode (as lexed): one SELECT of a string. With NO_BACKSLASH_ESCAPES: a string,
    // then a DELETE of every row of t.
    let attack = "SELECT 'x\\' ; DELETE FROM t; -- ' AS s";
    assert_eq!(my_query(&mut s, attack).await, Ok(1), "read as one string");
    assert_eq!(
        my_admin(&format!("SELECT count(*) FROM {r}.t")),
        "3",
        "the hidden DELETE ran"
    );
    let kept = "SELECT 1 FROM DUAL WHERE @@sql_mode NOT LIKE '%NO_BACKSLASH_ESCAPES%' AND @@character_set_client <> 'latin1'";
    assert_eq!(
        my_query(&mut s, kept).await,
        Ok(1),
        "the routines' settings outlived them"
    );
    my_admin(&format!(
        "DROP PROCEDURE {r}.nbe; DROP PROCEDURE {r}.names;"
    ));
}

#[tokio::test]
async fn bypass_corpus_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (user, pw, _) = person(f, &["SELECT"]).await;
    let before_pg = pg_state(f);
    let mut refused = 0;
    for (sql, needs) in haechi_dbgate::classify::corpus::PG {
        if sql.contains('\0') {
            continue; // a NUL cannot travel in a command-line argument
        }
        let select_only = needs.split_whitespace().all(|n| n == "SELECT");
        let (_, out) = psql_gw(f, &user, &pw, &[sql]);
        if !select_only {
            assert!(out.contains("refused"), "{sql:?} should be refused: {out}");
            refused += 1;
        }
        assert_eq!(pg_state(f), before_pg, "{sql:?} changed the database");
    }
    // MariaDB: each string as one COM_QUERY with multi-statements on (the mariadb client would
    // split it at `;` itself), so a string that is refused in part must be refused whole.
    let before_my = my_state(f);
    for (sql, needs) in haechi_dbgate::classify::corpus::MYSQL {
        let select_only = needs.split_whitespace().all(|n| n == "SELECT");
        // A session each (as psql above), so no string sees what an earlier one prepared.
        let mut session = mysql_session(
            f.my_port,
            &format!("{user}@{}", f.run),
            &pw,
            &format!("{}_mysql", f.run),
        )
        .await;
        let answer = my_query(&mut session, sql).await;
        if !select_only {
            match &answer {
                Err((1142, message)) if message.contains("refused") => {}
                other => panic!("{sql:?} should be refused with 1142, got {other:?}"),
            }
            refused += 1;
        }
        assert_eq!(my_state(f), before_my, "{sql:?} changed the database");
    }
    // The stock client too, for a few of them (it keeps comments with --comments).
    for sql in [
        "SELECT 1 /*! ; DELETE FROM t */",
        "/*!DELETE*/ FROM t",
        "SELECT 1 /*M! ; DELETE FROM t */",
    ] {
        let (_, out) = mariadb_gw(f, &user, &pw, sql, false);
        assert!(out.contains("ERROR 1142"), "{sql:?}: {out}");
        assert_eq!(my_state(f), before_my, "{sql:?} changed the database");
    }
    assert!(
        refused >= 100,
        "only {refused} refused statements were tried"
    );
}

#[tokio::test]
async fn lock_and_expiry_apply_to_open_sessions() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (user, pw, idx) = person(f, &["SELECT"]).await;
    let conn = format!(
        "host=127.0.0.1 port={} user={user}@{} dbname={}_postgres sslmode=require",
        f.pg_port, f.run, f.run
    );
    let mut child = Command::new("psql")
        .arg(conn)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=0"])
        .env("PGPASSWORD", &pw)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut ask = |sql: &str| -> String {
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
        rx.recv_timeout(Duration::from_secs(20))
            .expect("psql answered")
    };
    assert_eq!(ask("SELECT 'one';"), "one");
    let pg_policy = format!("/dbsafer/api/v1/policy/custom/access-policies/{}", idx[0]);
    let (s, _) = call(
        client()
            .put(f.server.url(&format!(
                "/dbsafer/api/v1/policy/custom/access-policies/lock?userId={}&serverPort=5432",
                enc(&user)
            )))
            .bearer_auth(&f.admin),
    )
    .await;
    assert_eq!(s, 200);
    let locked = ask("SELECT 'two';");
    assert!(
        locked.contains("refused") && locked.contains("is locked"),
        "{locked}"
    );
    call(
        client()
            .put(f.server.url(&format!(
                "/dbsafer/api/v1/policy/custom/access-policies/unlock?userId={}&serverPort=5432",
                enc(&user)
            )))
            .bearer_auth(&f.admin),
    )
    .await;
    assert_eq!(ask("SELECT 'three';"), "three");
    // Expired: an end date in the past.
    let (s, v) = call(
        client()
            .put(f.server.url(&pg_policy))
            .bearer_auth(&f.admin)
            .json(&json!({ "startDate": "2020-01-01T00:00:00", "endDate": "2020-12-31T23:59:59" })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let expired = ask("SELECT 'four';");
    assert!(expired.contains("is expired"), "{expired}");
    // Not yet valid.
    call(
        client()
            .put(f.server.url(&pg_policy))
            .bearer_auth(&f.admin)
            .json(&json!({ "startDate": "2999-01-01T00:00:00", "endDate": "2999-12-31T23:59:59" })),
    )
    .await;
    assert!(ask("SELECT 'five';").contains("not yet valid"));
    // An edit that removes SELECT applies too.
    call(client().put(f.server.url(&pg_policy)).bearer_auth(&f.admin).json(&json!({ "startDate": "2020-01-01T00:00:00", "endDate": "2999-12-31T23:59:59", "sqlPrivileges": ["INSERT"] }))).await;
    assert!(ask("SELECT 'six';").contains("needs SELECT"));
    drop(stdin);
    let _ = child.wait();
    // A new login with no policy in force is refused.
    call(
        client()
            .put(f.server.url(&format!(
                "/dbsafer/api/v1/policy/custom/access-policies/lock?userId={}",
                enc(&user)
            )))
            .bearer_auth(&f.admin),
    )
    .await;
    let (ok, out) = psql_gw(f, &user, &pw, &["SELECT 1"]);
    assert!(!ok && out.contains("is locked"), "{out}");
}

#[tokio::test]
async fn cancel_reaches_the_backend() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (user, pw, _) = person(f, &["SELECT", "EXECUTE"]).await;
    let conn = format!(
        "host=127.0.0.1 port={} user={user}@{} dbname={}_postgres sslmode=require",
        f.pg_port, f.run, f.run
    );
    let child = Command::new("psql")
        .arg(conn)
        .args(["-X", "-c", "SELECT pg_sleep(60)"])
        .env("PGPASSWORD", &pw)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let started = Instant::now();
    let sleeping = || {
        pg_admin(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' AND query LIKE '%pg_sleep(60)%' AND state = 'active'",
            f.run
        ))
    };
    while sleeping() != "1" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the query never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // psql sends a CancelRequest on SIGINT.
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("canceling statement due to user request"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Statement pooling (the fixture's server runs with `gateway_pool_size = 2`): sessions whose
/// statements are plain queries share the pool's connections, pipelined, and each gets its own
/// answers in order; an error leaves a pooled session usable; the first statement that is not
/// session-neutral pins the session to its own backend with everything it does from then on;
/// a cancel reaches the pooled statement it is meant for and no other.
#[tokio::test]
async fn pooled_sessions_share_connections_and_pin_when_they_must() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (login, pw, db, marker) = select_person(f, "pool").await;
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let (login, pw, db, marker, port) = (
            login.clone(),
            pw.clone(),
            db.clone(),
            marker.clone(),
            f.pg_port,
        );
        tasks.push(tokio::spawn(async move {
            let mut s = pg_session(port, &login, &pw, &db).await;
            for round in 0..50i64 {
                // Three statements in one write: the client pipelines too.
                let mut batch = Vec::new();
                for j in 0..3 {
                    let v = i * 1_000_000 + round * 10 + j;
                    let sql = format!("SELECT {v} + a - a AS {marker} FROM t WHERE a = 1");
                    batch.extend_from_slice(&pg_msg(b'Q', &cstrs(&[&sql])));
                }
                s.write_all(&batch).await.unwrap();
                for j in 0..3 {
                    let msgs =
                        tokio::time::timeout(Duration::from_secs(30), pg_until_ready(&mut s))
                            .await
                            .expect("an answer");
                    let v = i * 1_000_000 + round * 10 + j;
                    assert_eq!(
                        pg_values(&msgs),
                        vec![v.to_string()],
                        "session {i}: {}",
                        tags(&msgs)
                    );
                }
            }
            s
        }));
    }
    let mut sessions = Vec::new();
    for t in tasks {
        sessions.push(t.await.unwrap());
    }
    // 1,200 statements of eight sessions ran on the pool's connections (at most two), none on
    // the sessions' own backends.
    let ran: i64 = backends(f, "count(*)", &format!("query LIKE '%AS {marker} %'"))
        .parse()
        .unwrap();
    assert!(
        (1..=2).contains(&ran),
        "{ran} backends ran the pooled statements: {}",
        pg_admin(&format!(
            "SELECT string_agg(pid || ' ' || backend_start || ' ' || state || ' ' || query_start || ' ' || left(query, 70), E'\n') FROM pg_stat_activity WHERE usename = '{}'",
            f.run
        ))
    );

    // An error in a pooled statement: the session goes on.
    let msgs = pg_query(&mut sessions[1], "SELECT 1 / 0 AS x").await;
    assert_eq!(
        pg_error(&msgs).map(|e| e.0).as_deref(),
        Some("22012"),
        "{}",
        tags(&msgs)
    );
    assert_eq!(
        pg_values(&pg_query(&mut sessions[1], "SELECT 7 AS x").await),
        ["7"]
    );

    // A refused statement pins too, and is refused as ever.
    let msgs = pg_query(&mut sessions[2], "DELETE FROM t").await;
    assert_eq!(
        pg_error(&msgs).map(|e| e.0).as_deref(),
        Some("42501"),
        "{}",
        tags(&msgs)
    );
    assert_eq!(
        pg_values(&pg_query(&mut sessions[2], "SELECT count(*) FROM t").await),
        ["10"]
    );

    // SET pins the session to its own backend, which keeps the setting from then on.
    let app = format!("pinned_{marker}");
    let msgs = pg_query(&mut sessions[0], &format!("SET application_name = '{app}'")).await;
    assert!(pg_error(&msgs).is_none(), "{msgs:?}");
    assert_eq!(
        pg_values(
            &pg_query(
                &mut sessions[0],
                "SELECT current_setting('application_name')"
            )
            .await
        ),
        vec![app.clone()]
    );
    assert_eq!(
        pg_admin(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
        )),
        "1"
    );
    // The other sessions did not get it.
    assert_ne!(
        pg_values(
            &pg_query(
                &mut sessions[3],
                "SELECT current_setting('application_name')"
            )
            .await
        ),
        vec![app.clone()]
    );

    // The pool's connections end (the database terminates them): the sessions go on.
    backends(
        f,
        "count(pg_terminate_backend(pid))",
        &format!("query LIKE '%AS {marker} %'"),
    );
    wait_backends(
        f,
        &format!("query LIKE '%AS {marker} %'"),
        "0",
        "the backends never ended",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, s) in sessions.iter_mut().enumerate().skip(5) {
        let msgs = pg_query(s, &format!("SELECT {i} AS {marker}")).await;
        assert_eq!(pg_values(&msgs), vec![i.to_string()], "{}", tags(&msgs));
    }

    // A cancel request for a pooled statement.
    let (mut s, key) = pg_login(f.pg_port, &login, &pw, &db).await;
    start_long_query(f, &mut s, &format!("{marker}_c")).await;
    pg_cancel(f.pg_port, &key).await;
    let msgs = tokio::time::timeout(Duration::from_secs(20), pg_until_ready(&mut s))
        .await
        .expect("the cancel ends the statement");
    let (code, message) = pg_error(&msgs).expect("an error");
    assert_eq!(code, "57014", "{message}");
    // The session, and the others, go on.
    assert_eq!(pg_values(&pg_query(&mut s, "SELECT 8 AS x").await), ["8"]);
    assert_eq!(
        pg_values(&pg_query(&mut sessions[4], "SELECT 9 AS x").await),
        ["9"]
    );
}

/// The value of counter `name` on the fixture's server's `/metrics` (0 before its first use).
async fn metric(f: &Fixture, name: &str) -> u64 {
    metrics_text(&f.server)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Sends a simple `Query`.
async fn pg_send(s: &mut tokio::net::TcpStream, sql: &str) {
    s.write_all(&pg_msg(b'Q', &cstrs(&[sql]))).await.unwrap();
}

/// Sends a CancelRequest with the cancel key `key` (BackendKeyData) on a new connection.
async fn pg_cancel(port: u16, key: &[u8; 8]) {
    let mut cancel = 16i32.to_be_bytes().to_vec();
    cancel.extend_from_slice(&80877102i32.to_be_bytes());
    cancel.extend_from_slice(key);
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap()
        .write_all(&cancel)
        .await
        .unwrap();
}

/// The race a pooled cancel can lose, staged both ways. Session A's cancel request is sent to
/// the pooled connection A's statement is on, and hits session B's statement there instead:
///
/// - *A first*: A's statement has ended but the gateway has not yet passed all of its answer
///   on (A's client is slow to read it), and B's, queued behind it, runs;
/// - *B first*: A's statement is queued behind B's, which runs (the beginning of B's answer,
///   its RowDescription and then the cancel's error, is kept back until its ReadyForQuery).
///
/// Either way B's statement has sent its client nothing, so it runs again on the pool's other
/// connection and B gets its right answer, not a cancel it never asked for; A gets its answer.
/// A third session, C, keeps the other connection busy meanwhile (an answer larger than a
/// small receive buffer), so A's and B's statements share one connection: they are sent
/// together, within the 20 ms after which a connection whose head statement has not finished
/// takes no more. C takes its answer before the cancel, so B runs again on C's connection at
/// once; in a third staging C holds it through the cancel (its connection stalled), so no
/// connection can take B then: B waits while the pool opens one, and runs there (neither on
/// A's connection nor on C's). When the staging does not come about (a session pinned because a
/// connection took too long to open, or B's statement ended before the cancel landed, on a
/// slow machine), it is tried again with a fresh pool; the checks after it are strict.
#[tokio::test]
async fn a_cancel_that_hits_another_sessions_pooled_statement_runs_that_one_again() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (login, pw, db, marker) = select_person(f, "rerun").await;
    for (a_first, c_holds) in [(true, false), (false, false), (true, true)] {
        let staging = match (a_first, c_holds) {
            (_, true) => "A first, C holding its connection",
            (true, _) => "A first",
            (false, _) => "B first",
        };
        let mut failed = Vec::new();
        for attempt in 0..3 {
            let app = format!(
                "{marker}_{}{}_{attempt}",
                if a_first { "a" } else { "b" },
                if c_holds { "h" } else { "" }
            );
            match stage_rerun(f, &login, &pw, &db, &app, a_first, c_holds).await {
                Ok(()) => break,
                Err(e) => failed.push(format!("{attempt}: {e}")),
            }
        }
        assert!(
            failed.len() < 3,
            "the race ({staging}) was not staged in three attempts: {failed:#?}"
        );
    }
}

/// One staging of [`a_cancel_that_hits_another_sessions_pooled_statement_runs_that_one_again`]
/// with sessions whose `application_name` is `app` (a pool of their own); `c_holds`: C takes
/// its answer only after B's. `Err`: the staging did not come about (nothing was checked); the
/// checks after it panic.
async fn stage_rerun(
    f: &'static Fixture,
    login: &str,
    pw: &str,
    db: &str,
    app: &str,
    a_first: bool,
    c_holds: bool,
) -> Result<(), String> {
    // ~5.5 MB: more than the gateway can hand to a client that reads nothing through a 4 KiB
    // receive buffer (~3 MB), less than that plus what the database can hand the gateway.
    let big =
        |label: &str| format!("SELECT repeat('x', 1000) AS {label} FROM generate_series(1, 5500)");
    // Long enough (a second or two) to be still running when the cancel lands.
    let count = 20_000_000;
    let reruns = metric(f, "haechi_gateway_pool_reruns_total").await;
    let (a_l, b_l, c_l) = (format!("{app}_a"), format!("{app}_b"), format!("{app}_c"));
    let session =
        |slow: bool| pg_login_with(f.pg_port, login, pw, db, Some(app), slow.then_some(4096));
    let mine = format!("application_name = '{app}'");
    let activity = || {
        pg_admin(&format!(
            "SELECT string_agg(pid || ' ' || state || ' ' || left(query, 60), E'\\n') FROM pg_stat_activity WHERE {mine}"
        ))
    };
    // The first session's login opens the pool's first connection, after its own backend.
    let (mut c, _) = session(true).await;
    let first = backends(
        f,
        "pid",
        &format!("{mine} ORDER BY backend_start DESC LIMIT 1"),
    );
    let (mut a, a_key) = session(true).await;
    let (mut b, _) = session(false).await;
    let (mut w1, _) = session(false).await;
    let (mut w2, _) = session(false).await;
    // Each session's own backend (its reserve), which pooled statements do not run on.
    let reserves = backends(
        f,
        "string_agg(pid::text, ',')",
        &format!("{mine} AND pid <> {first}"),
    );
    let pooled = format!("{mine} AND pid NOT IN ({reserves})");
    // Two pooled connections: two statements at once open the second.
    let warm = format!("SELECT count(*) AS {app}_w FROM generate_series(1, 200000)");
    pg_send(&mut w1, &warm).await;
    pg_send(&mut w2, &warm).await;
    pg_until_ready(&mut w1).await;
    pg_until_ready(&mut w2).await;
    let started = Instant::now();
    while backends(f, "count(*)", &pooled) != "2" && started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if backends(f, "count(*)", &pooled) != "2" {
        return Err(format!(
            "the pool did not open two connections (sessions' own: {reserves}): {}",
            activity()
        ));
    }
    // C holds one connection; then A and B go to the other.
    pg_send(&mut c, &big(&c_l)).await;
    let c_on = format!("{pooled} AND query LIKE '%AS {c_l} %'");
    wait_backends(f, &c_on, "1", "C's statement never ran").await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    let b_sql = format!("SELECT count(*) AS {b_l} FROM generate_series(1, {count})");
    if a_first {
        pg_send(&mut a, &big(&a_l)).await;
        pg_send(&mut b, &b_sql).await;
    } else {
        pg_send(&mut b, &b_sql).await;
        pg_send(&mut a, &big(&a_l)).await;
    }
    let b_running = format!("{pooled} AND query LIKE '%AS {b_l} %' AND state = 'active'");
    let started = Instant::now();
    while backends(f, "count(*)", &b_running) != "1" && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A session that pinned instead would have run its statement on its own backend by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b_pid = backends(f, "string_agg(pid::text, ',')", &b_running);
    let c_pid = backends(f, "string_agg(pid::text, ',')", &c_on);
    let a_elsewhere = backends(
        f,
        "count(*)",
        &format!(
            "{mine} AND query LIKE '%AS {a_l} %' AND pid <> {}",
            if b_pid.is_empty() { "0" } else { &b_pid }
        ),
    );
    if b_pid.is_empty() || b_pid == c_pid || a_elsewhere != "0" {
        return Err(format!(
            "A and B did not share a pooled connection: {}",
            activity()
        ));
    }
    // C takes its answer: its connection is free again (unless C holds it until B's answer).
    if !c_holds {
        let msgs = pg_until_ready(&mut tokio::io::BufReader::with_capacity(1 << 16, &mut c)).await;
        assert_eq!(pg_values(&msgs).len(), 5500, "{}", tags(&msgs));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Where B's statement runs from now on, seen as it runs: a connection that has finished
    // may close soon after (the cancel retires A's; an idle one leaves after the fixture's
    // idle time), so looking afterwards could miss it.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        let on = format!("{mine} AND query LIKE '%AS {b_l} %' AND state = 'active'");
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while watching.load(Ordering::SeqCst) {
                let pids = backends(f, "string_agg(pid::text, ',')", &on);
                seen.extend(pids.split(',').filter(|p| !p.is_empty()).map(str::to_owned));
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        })
    };
    // A's cancel, while B's statement runs on A's connection.
    pg_cancel(f.pg_port, &a_key).await;
    wait_backends(
        f,
        &format!("pid = {b_pid} AND query LIKE '%AS {b_l} %' AND state = 'active'"),
        "0",
        "the cancel did not reach B's statement",
    )
    .await;
    let a_msgs = tokio::time::timeout(
        Duration::from_secs(30),
        pg_until_ready(&mut tokio::io::BufReader::with_capacity(1 << 16, &mut a)),
    )
    .await
    .expect("A's answer");
    let msgs = tokio::time::timeout(Duration::from_secs(60), pg_until_ready(&mut b))
        .await
        .expect("B's answer");
    watching.store(false, Ordering::SeqCst);
    let b_ran_on = watcher.join().expect("the watcher");
    if metric(f, "haechi_gateway_pool_reruns_total").await == reruns && pg_error(&msgs).is_none() {
        // B's statement ended before the cancel landed (a slow machine): the cancel hit
        // nothing, or A's statement when it ran after B's.
        return Err(format!(
            "the cancel landed after B's statement ended (A: {:?})",
            pg_error(&a_msgs)
        ));
    }
    // A gets its whole answer; B gets its count, from its second run on C's connection.
    assert_eq!(pg_error(&a_msgs), None, "A's statement");
    assert_eq!(pg_values(&a_msgs).len(), 5500, "{}", tags(&a_msgs));
    assert_eq!(
        pg_error(&msgs),
        None,
        "B got another session's cancel ({}{}): {}",
        if a_first { "A first" } else { "B first" },
        if c_holds {
            ", C holding its connection"
        } else {
            ""
        },
        tags(&msgs)
    );
    assert_eq!(pg_values(&msgs), [count.to_string()]);
    assert!(
        b_ran_on.iter().any(|pid| *pid != b_pid),
        "B ran again on another connection than {b_pid} (seen on {b_ran_on:?}): {}",
        activity()
    );
    if c_holds {
        // Neither A's connection (the cancel retired it) nor C's (stalled) could take B: it
        // waited for the one the pool opened. Then C takes its answer.
        assert!(
            b_ran_on.iter().any(|pid| *pid != b_pid && *pid != c_pid),
            "B ran again on a connection opened for it, not {b_pid} or C's {c_pid} (seen on \
             {b_ran_on:?}): {}",
            activity()
        );
        let msgs = pg_until_ready(&mut tokio::io::BufReader::with_capacity(1 << 16, &mut c)).await;
        assert_eq!(pg_values(&msgs).len(), 5500, "{}", tags(&msgs));
    }
    assert_eq!(
        metric(f, "haechi_gateway_pool_reruns_total").await,
        reruns + 1
    );
    // Everyone goes on.
    for s in [&mut a, &mut b, &mut c] {
        assert_eq!(pg_values(&pg_query(s, "SELECT 5 AS x").await), ["5"]);
    }
    Ok(())
}

/// A pooled connection with nothing to do for `gateway_pool_idle_secs` (3 s on the fixture's
/// server) is closed; the session that used it stays open and its next statement runs on a
/// connection the pool opens for it.
#[tokio::test]
async fn idle_pooled_connections_close_and_the_pool_opens_another() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (login, pw, db, marker) = select_person(f, "idle").await;
    let pooled = |tag: &str| backends(f, "count(*)", &format!("query LIKE '%AS {marker}_{tag}%'"));
    let mut s = pg_session(f.pg_port, &login, &pw, &db).await;
    let msgs = pg_query(&mut s, &format!("SELECT 1 AS {marker}_a")).await;
    assert_eq!(pg_values(&msgs), ["1"], "{}", tags(&msgs));
    assert_eq!(
        pooled("a"),
        "1",
        "the statement ran on one pooled connection"
    );
    // Nothing more to do: the connection closes after the idle time, not before.
    let started = Instant::now();
    while pooled("a") != "0" {
        assert!(
            started.elapsed() < Duration::from_secs(POOL_IDLE_SECS + 15),
            "the idle pooled connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(POOL_IDLE_SECS - 1),
        "closed after {:?}, before it was idle for {POOL_IDLE_SECS} s",
        started.elapsed()
    );
    // The session is still there and its next statement gets a new pooled connection.
    let msgs = pg_query(&mut s, &format!("SELECT 2 AS {marker}_b")).await;
    assert_eq!(pg_values(&msgs), ["2"], "{}", tags(&msgs));
    assert_eq!(pooled("b"), "1");
    assert_eq!(pooled("a"), "0");
}

/// The database ends a pooled connection while a statement runs on it: that statement fails
/// with 08006 (not the database's FATAL, which would tell the client its own session ends), the
/// session stays open and its next statement runs on another pooled connection.
#[tokio::test]
async fn a_pooled_backend_that_dies_mid_statement_fails_only_that_statement() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (login, pw, db, marker) = select_person(f, "dies").await;
    let mut s = pg_session(f.pg_port, &login, &pw, &db).await;
    start_long_query(f, &mut s, &format!("{marker}_k")).await;
    assert_eq!(
        backends(
            f,
            "count(pg_terminate_backend(pid))",
            &format!("query LIKE '%AS {marker}_k %' AND state = 'active'"),
        ),
        "1"
    );
    let msgs = tokio::time::timeout(Duration::from_secs(20), pg_until_ready(&mut s))
        .await
        .expect("the statement ends when its connection does");
    let (code, message) = pg_error(&msgs).expect("an error");
    assert_eq!(code, "08006", "{message} ({})", tags(&msgs));
    assert!(
        msgs.iter()
            .filter(|(t, _)| *t == b'E')
            .all(|(_, body)| !String::from_utf8_lossy(body).contains("FATAL")),
        "the client was sent a FATAL error of the pooled connection: {msgs:?}"
    );
    // The session goes on, on another pooled connection.
    let msgs = pg_query(&mut s, &format!("SELECT 5 AS {marker}_n")).await;
    assert_eq!(pg_values(&msgs), ["5"], "{}", tags(&msgs));
}

/// A person with `SELECT` on the fixture's PostgreSQL account: their gateway login, password,
/// the database to name, and a fresh lowercase marker (`<tag>...`) for telling statements apart.
async fn select_person(f: &Fixture, tag: &str) -> (String, String, String, String) {
    let (user, pw, _) = person(f, &["SELECT"]).await;
    (
        format!("{user}@{}", f.run),
        pw,
        format!("{}_postgres", f.run),
        common::unique(tag).to_lowercase(),
    )
}

/// Sends a query on `s` that runs for minutes (`... AS <label>`), and waits until it runs.
async fn start_long_query(f: &Fixture, s: &mut tokio::net::TcpStream, label: &str) {
    let long = format!("SELECT count(*) AS {label} FROM generate_series(1, 3000000000)");
    pg_send(s, &long).await;
    let active = format!("query LIKE '%AS {label} %' AND state = 'active'");
    wait_backends(f, &active, "1", "the query never started").await;
}

/// `SELECT <what>` over the backends of the fixture's account that match `condition`.
fn backends(f: &Fixture, what: &str, condition: &str) -> String {
    pg_admin(&format!(
        "SELECT {what} FROM pg_stat_activity WHERE usename = '{}' AND {condition}",
        f.run
    ))
}

/// Waits (20 s at most) until `want` backends of the fixture's account match `condition`.
async fn wait_backends(f: &Fixture, condition: &str, want: &str, never: &str) {
    let started = Instant::now();
    while backends(f, "count(*)", condition) != want {
        assert!(started.elapsed() < Duration::from_secs(20), "{never}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resident set of the server process, in KiB (VmRSS / VmHWM from /proc).
fn server_memory(f: &Fixture, field: &str) -> u64 {
    let dir = f.server.data_dir.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("server") && cmdline.contains(&dir) {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap();
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("server process not found");
}

#[tokio::test]
async fn a_million_rows_stream_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (user, pw, _) = person(f, &["SELECT"]).await;
    let before = server_memory(f, "VmRSS:");
    let conn = format!(
        "host=127.0.0.1 port={} user={user}@{} dbname={}_postgres sslmode=require",
        f.pg_port, f.run, f.run
    );
    // psql's output goes to a file, so this test can watch the clock: a gateway that stops
    // forwarding fails here with the database's view of the session, not by hanging CI.
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let err_file = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("psql")
        .arg(conn)
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g",
        ])
        .env("PGPASSWORD", &pw)
        .stdout(out_file.reopen().unwrap())
        .stderr(err_file.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let activity = pg_admin(&format!(
                "SELECT state, wait_event, left(query, 60) FROM pg_stat_activity WHERE usename = '{}'",
                f.run
            ));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "psql did not finish streaming within 180 s; the database's sessions: {activity}; \
                 psql wrote {} bytes",
                std::fs::metadata(out_file.path()).map_or(0, |m| m.len())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(err_file.path()).unwrap_or_default()
    );
    let stdout = std::fs::read(out_file.path()).unwrap();
    let rows = stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(rows, 1_000_000);
    let peak = server_memory(f, "VmHWM:");
    // About 110 MB went through; the gateway holds a few buffers of it at a time.
    assert!(
        peak < before + 64 * 1024,
        "peak {peak} KiB vs {before} KiB before"
    );
    println!("gateway RSS before {before} KiB, peak while streaming 1,000,000 rows {peak} KiB");
}

/// A minimal MySQL client: loopback without TLS, mysql_clear_password, one query.
async fn mysql_session(port: u16, user: &str, password: &str, db: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut hdr = [0u8; 4];
    s.read_exact(&mut hdr).await.unwrap();
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]) as usize;
    let mut hello = vec![0u8; len];
    s.read_exact(&mut hello).await.unwrap();
    // PROTOCOL_41, SECURE_CONNECTION, CONNECT_WITH_DB, PLUGIN_AUTH, PLUGIN_AUTH_LENENC,
    // MULTI_STATEMENTS, MULTI_RESULTS.
    let caps: u32 = 0x0000_0200
        | 0x0000_8000
        | 0x0000_0008
        | 0x0008_0000
        | 0x0020_0000
        | 0x0001_0000
        | 0x0002_0000;
    let mut body = Vec::new();
    body.extend_from_slice(&caps.to_le_bytes());
    body.extend_from_slice(&16_777_215u32.to_le_bytes());
    body.push(45);
    body.extend_from_slice(&[0u8; 23]);
    body.extend_from_slice(user.as_bytes());
    body.push(0);
    let mut auth = password.as_bytes().to_vec();
    auth.push(0);
    body.push(auth.len() as u8);
    body.extend_from_slice(&auth);
    body.extend_from_slice(db.as_bytes());
    body.push(0);
    body.extend_from_slice(b"mysql_clear_password\0");
    let mut pkt = (body.len() as u32).to_le_bytes()[..3].to_vec();
    pkt.push(1);
    pkt.extend_from_slice(&body);
    s.write_all(&pkt).await.unwrap();
    s.read_exact(&mut hdr).await.unwrap();
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]) as usize;
    let mut ok = vec![0u8; len];
    s.read_exact(&mut ok).await.unwrap();
    assert_eq!(ok[0], 0, "login: {}", String::from_utf8_lossy(&ok));
    s
}

#[tokio::test]
async fn five_hundred_concurrent_connections() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (user, pw, _) = person(f, &["SELECT"]).await;
    let old = my_admin("SELECT @@GLOBAL.max_connections");
    my_admin("SET GLOBAL max_connections = 700");
    let rss_before = server_memory(f, "VmRSS:");
    // Opened 50 at a time (the database accepts logins at its own pace), all 500 held open.
    let mut sessions = Vec::new();
    for _ in 0..10 {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (u, p, db) = (
                format!("{user}@{}", f.run),
                pw.clone(),
                format!("{}_mysql", f.run),
            );
            let port = f.my_port;
            tasks.push(tokio::spawn(async move {
                mysql_session(port, &u, &p, &db).await
            }));
        }
        for t in tasks {
            sessions.push(t.await.unwrap());
        }
    }
    assert_eq!(sessions.len(), 500);
    let rss_idle = server_memory(f, "VmRSS:");
    // Every one of them works.
    for s in sessions.iter_mut() {
        let q = b"\x03SELECT 1";
        let mut pkt = (q.len() as u32).to_le_bytes()[..3].to_vec();
        pkt.push(0);
        pkt.extend_from_slice(q);
        s.write_all(&pkt).await.unwrap();
    }
    for s in sessions.iter_mut() {
        let mut hdr = [0u8; 4];
        s.read_exact(&mut hdr).await.unwrap();
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]) as usize;
        let mut first = vec![0u8; len];
        s.read_exact(&mut first).await.unwrap();
        assert_eq!(first, [1], "a one-column result set");
    }
    drop(sessions);
    // Wait for the database side of those sessions to close before lowering the limit again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while my_admin(&format!(
        "SELECT count(*) FROM information_schema.processlist WHERE user = '{}'",
        f.run
    )) != "0"
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    my_admin(&format!("SET GLOBAL max_connections = {old}"));
    println!(
        "gateway RSS {rss_before} KiB before, {rss_idle} KiB with 500 idle client connections"
    );
}

/// (PostgreSQL here trusts 127.0.0.1, so only MariaDB checks the password the gateway sends.)
#[tokio::test]
async fn a_password_changed_in_the_vault_is_used_from_the_next_login() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (user, pw, _) = person(f, &["SELECT"]).await;
    let (_, before) = mariadb_gw(f, &user, &pw, "SELECT 'before'", true);
    let new_pw = format!("{}-2", f.db_password);
    my_admin(&format!(
        "ALTER USER '{}'@'%' IDENTIFIED BY '{new_pw}'",
        f.run
    ));
    let (_, stale) = mariadb_gw(f, &user, &pw, "SELECT 1", true);
    let set_value = |value: String, version: i64| {
        let url = f.server.url(&format!(
            "/v2/credentialvault/credentials/{}/attributevalues/{}",
            f.credential, f.value_id
        ));
        let admin = f.admin.clone();
        async move {
            call(
                client()
                    .put(url)
                    .bearer_auth(&admin)
                    .json(&json!([{ "value": value, "version": version }])),
            )
            .await
        }
    };
    let (s1, v1) = set_value(new_pw.clone(), 0).await;
    let (_, after) = mariadb_gw(f, &user, &pw, "SELECT 'after'", true);
    // Restore for the other tests before judging.
    my_admin(&format!(
        "ALTER USER '{}'@'%' IDENTIFIED BY '{}'",
        f.run, f.db_password
    ));
    let (s2, v2) = set_value(f.db_password.clone(), 1).await;
    assert!(before.contains("before"), "{before}");
    assert!(
        stale.contains("cannot log in to database target"),
        "{stale}"
    );
    assert_eq!(s1, 200, "{v1}");
    assert!(after.contains("after"), "{after}");
    assert_eq!(s2, 200, "{v2}");
}

async fn my_packet(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut hdr = [0u8; 4];
    s.read_exact(&mut hdr).await.unwrap();
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    payload
}

async fn my_command(s: &mut tokio::net::TcpStream, payload: &[u8]) {
    let mut pkt = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    pkt.push(0);
    pkt.extend_from_slice(payload);
    s.write_all(&pkt).await.unwrap();
}

/// A length-encoded integer at the front of `b`.
fn lenenc(b: &mut &[u8]) -> u64 {
    let (n, used) = match b[0] {
        0xfc => (u16::from_le_bytes([b[1], b[2]]) as u64, 3),
        0xfd => (u32::from_le_bytes([b[1], b[2], b[3], 0]) as u64, 4),
        0xfe => (u64::from_le_bytes(b[1..9].try_into().unwrap()), 9),
        n => (n as u64, 1),
    };
    *b = &b[used..];
    n
}

/// Reads one command's whole response (every result set): the rows, or the error.
async fn my_response(s: &mut tokio::net::TcpStream) -> Result<usize, (u16, String)> {
    let mut rows = 0;
    loop {
        let first = my_packet(s).await;
        let more = match first[0] {
            0x00 => {
                let mut b = &first[1..];
                lenenc(&mut b);
                lenenc(&mut b);
                u16::from_le_bytes([b[0], b[1]]) & 8 != 0
            }
            0xff => {
                let code = u16::from_le_bytes([first[1], first[2]]);
                return Err((code, String::from_utf8_lossy(&first[9..]).into_owned()));
            }
            _ => {
                let mut b = &first[..];
                for _ in 0..lenenc(&mut b) {
                    my_packet(s).await;
                }
                my_packet(s).await; // EOF after the column definitions
                loop {
                    let row = my_packet(s).await;
                    if row[0] == 0xff {
                        let code = u16::from_le_bytes([row[1], row[2]]);
                        return Err((code, String::from_utf8_lossy(&row[9..]).into_owned()));
                    }
                    if row[0] == 0xfe && row.len() < 9 {
                        break u16::from_le_bytes([row[3], row[4]]) & 8 != 0;
                    }
                    rows += 1;
                }
            }
        };
        if !more {
            return Ok(rows);
        }
    }
}

async fn my_query(s: &mut tokio::net::TcpStream, sql: &str) -> Result<usize, (u16, String)> {
    let mut payload = vec![0x03];
    payload.extend_from_slice(sql.as_bytes());
    my_command(s, &payload).await;
    my_response(s).await
}

/// A minimal PostgreSQL client: loopback without TLS, cleartext password.
async fn pg_session(port: u16, user: &str, password: &str, db: &str) -> tokio::net::TcpStream {
    pg_login(port, user, password, db).await.0
}

/// A logged-in session and its cancel key (BackendKeyData).
async fn pg_login(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> (tokio::net::TcpStream, [u8; 8]) {
    pg_login_with(port, user, password, db, None, None).await
}

/// [`pg_login`] with an `application_name` in the startup message (sessions with another one
/// share no pooled connection with the others) and a receive buffer of `recv_buffer` bytes.
async fn pg_login_with(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    application_name: Option<&str>,
    recv_buffer: Option<u32>,
) -> (tokio::net::TcpStream, [u8; 8]) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut s = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let mut body = 196608i32.to_be_bytes().to_vec();
    let mut params = vec!["user", user, "database", db];
    if let Some(app) = application_name {
        params.extend(["application_name", app]);
    }
    for v in params {
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut pkt = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    pkt.extend_from_slice(&body);
    s.write_all(&pkt).await.unwrap();
    let (tag, auth) = pg_read(&mut s).await;
    assert_eq!((tag, &auth[..4]), (b'R', &3i32.to_be_bytes()[..]));
    let mut pw = password.as_bytes().to_vec();
    pw.push(0);
    s.write_all(&pg_msg(b'p', &pw)).await.unwrap();
    let hello = pg_until_ready(&mut s).await;
    let key = hello
        .iter()
        .find(|(t, _)| *t == b'K')
        .map(|(_, b)| <[u8; 8]>::try_from(&b[..8]).unwrap());
    (
        s,
        key.unwrap_or_else(|| panic!("no BackendKeyData: {hello:?}")),
    )
}

/// The first column of every DataRow.
fn pg_values(msgs: &[(u8, Vec<u8>)]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, b)| {
            let len = i32::from_be_bytes([b[2], b[3], b[4], b[5]]) as usize;
            String::from_utf8_lossy(&b[6..6 + len]).into_owned()
        })
        .collect()
}

async fn pg_query(s: &mut tokio::net::TcpStream, sql: &str) -> Vec<(u8, Vec<u8>)> {
    pg_send(s, sql).await;
    tokio::time::timeout(Duration::from_secs(30), pg_until_ready(s))
        .await
        .unwrap_or_else(|_| panic!("no answer to {sql}"))
}

fn pg_msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstrs(parts: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend_from_slice(p.as_bytes());
        b.push(0);
    }
    b
}

/// Parse (no parameter types), Bind (text parameters), Execute, for a statement name.
fn pg_parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = cstrs(&[name, sql]);
    b.extend_from_slice(&0i16.to_be_bytes());
    pg_msg(b'P', &b)
}

fn pg_bind_execute(name: &str, params: &[&str]) -> Vec<u8> {
    let mut b = cstrs(&["", name]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    let mut out = pg_msg(b'B', &b);
    let mut e = cstrs(&[""]);
    e.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&pg_msg(b'E', &e));
    out
}

async fn pg_read<R: tokio::io::AsyncRead + Unpin>(s: &mut R) -> (u8, Vec<u8>) {
    let tag = s.read_u8().await.unwrap();
    let len = s.read_i32().await.unwrap() as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.unwrap();
    (tag, body)
}

/// Messages up to and including ReadyForQuery.
async fn pg_until_ready<R: tokio::io::AsyncRead + Unpin>(s: &mut R) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let m = pg_read(s).await;
        let done = m.0 == b'Z';
        out.push(m);
        if done {
            return out;
        }
    }
}

fn tags(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter().map(|(t, _)| *t as char).collect()
}

/// The SQLSTATE and message of the first ErrorResponse.
fn pg_error(msgs: &[(u8, Vec<u8>)]) -> Option<(String, String)> {
    let (_, body) = msgs.iter().find(|(t, _)| *t == b'E')?;
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let v = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'C' => code = v,
            b'M' => message = v,
            _ => {}
        }
    }
    Some((code, message))
}

/// The extended query protocol (what JDBC and other drivers speak) and multi-statement strings
/// on both databases: a refused statement anywhere in a batch or a string means none of it
/// runs, named prepared statements are decided again on each execution (a lock applies to
/// them at once), FunctionCall is refused, and the session stays usable throughout.
#[tokio::test]
async fn extended_protocol_and_multi_statements_are_all_or_nothing() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (user, pw, idx) = person(f, &["SELECT", "INSERT"]).await;
    let before = (pg_state(f), my_state(f));
    let mut pg = pg_session(
        f.pg_port,
        &format!("{user}@{}", f.run),
        &pw,
        &format!("{}_postgres", f.run),
    )
    .await;

    // One batch up to Sync: an allowed INSERT, then a refused DELETE. The database rolls back
    // the batch's implicit transaction, so the INSERT does not stay either.
    let mut batch = pg_parse("", "INSERT INTO s VALUES (8)");
    batch.extend(pg_bind_execute("", &[]));
    batch.extend(pg_parse("", "DELETE FROM t"));
    batch.extend(pg_bind_execute("", &[]));
    batch.extend(pg_msg(b'S', &[]));
    pg.write_all(&batch).await.unwrap();
    let answer = pg_until_ready(&mut pg).await;
    let (code, message) = pg_error(&answer).expect("an error");
    assert_eq!(code, "42501", "{message}");
    assert!(
        message.contains("refused by DBSAFER policy POLICY_") && message.contains("needs DELETE"),
        "{message}"
    );
    assert_eq!(tags(&answer), "12CEZ", "{answer:?}");
    assert_eq!(
        pg_state(f),
        before.0,
        "the refused batch changed the database"
    );

    // A simple-query string with a refused statement: nothing of it runs.
    pg.write_all(&pg_msg(
        b'Q',
        &cstrs(&["INSERT INTO s VALUES (9); DELETE FROM t"]),
    ))
    .await
    .unwrap();
    let answer = pg_until_ready(&mut pg).await;
    assert_eq!(pg_error(&answer).unwrap().0, "42501");
    assert_eq!(
        pg_state(f),
        before.0,
        "the refused string changed the database"
    );

    // A named statement, prepared once, executed with parameters, then after a lock.
    let mut prep = pg_parse("q1", "SELECT count(*) FROM t WHERE a > $1");
    prep.extend(pg_msg(b'S', &[]));
    pg.write_all(&prep).await.unwrap();
    assert_eq!(tags(&pg_until_ready(&mut pg).await), "1Z");
    let mut run = pg_bind_execute("q1", &["5"]);
    run.extend(pg_msg(b'S', &[]));
    pg.write_all(&run).await.unwrap();
    let answer = pg_until_ready(&mut pg).await;
    assert_eq!(tags(&answer), "2DCZ", "{answer:?}");
    assert_eq!(answer[1].1[6..], *b"5", "count(*) of a > 5 is 5");
    let lock = |what: &str| {
        let url = f.server.url(&format!(
            "/dbsafer/api/v1/policy/custom/access-policies/{what}?policyId={}",
            enc(&policy_id(f, idx[0]))
        ));
        let admin = f.admin.clone();
        async move { call(client().put(url).bearer_auth(&admin)).await.0 }
    };
    assert_eq!(lock("lock").await, 200);
    pg.write_all(&run).await.unwrap();
    let answer = pg_until_ready(&mut pg).await;
    let (code, message) = pg_error(&answer).expect("refused while locked");
    assert!(
        code == "42501" && message.contains("is locked"),
        "{message}"
    );
    assert_eq!(lock("unlock").await, 200);
    pg.write_all(&run).await.unwrap();
    assert_eq!(tags(&pg_until_ready(&mut pg).await), "2DCZ");

    // FunctionCall (a function by OID, around SQL) is refused; the session goes on.
    let mut call_body = 1i32.to_be_bytes().to_vec();
    call_body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    pg.write_all(&pg_msg(b'F', &call_body)).await.unwrap();
    let answer = pg_until_ready(&mut pg).await;
    let (code, message) = pg_error(&answer).expect("FunctionCall refused");
    assert!(
        code == "42501" && message.contains("FunctionCall"),
        "{message}"
    );
    pg.write_all(&pg_msg(b'Q', &cstrs(&["SELECT count(*) FROM s"])))
        .await
        .unwrap();
    let answer = pg_until_ready(&mut pg).await;
    assert_eq!(tags(&answer), "TDCZ", "{answer:?}");
    pg.write_all(&pg_msg(b'X', &[])).await.unwrap();

    // MariaDB: a multi-statement COM_QUERY with a refused part runs none of it; a refused
    // COM_STMT_PREPARE; a prepared statement decided again at each COM_STMT_EXECUTE.
    let mut my = mysql_session(
        f.my_port,
        &format!("{user}@{}", f.run),
        &pw,
        &format!("{}_mysql", f.run),
    )
    .await;
    let refused = my_query(&mut my, "INSERT INTO s VALUES (9); DELETE FROM t").await;
    assert!(
        matches!(&refused, Err((1142, m)) if m.contains("needs DELETE")),
        "{refused:?}"
    );
    assert_eq!(
        my_state(f),
        before.1,
        "the refused string changed the database"
    );
    assert_eq!(my_query(&mut my, "SELECT 1; SELECT a FROM t").await, Ok(4));
    my_command(&mut my, b"\x16DELETE FROM t WHERE a = ?").await;
    let refused = my_response(&mut my).await;
    assert!(matches!(&refused, Err((1142, _))), "{refused:?}");
    my_command(&mut my, b"\x16SELECT a FROM t WHERE a > ?").await;
    let ok = my_packet(&mut my).await;
    assert_eq!(ok[0], 0, "COM_STMT_PREPARE: {ok:?}");
    let stmt = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    let (cols, params) = (
        u16::from_le_bytes([ok[5], ok[6]]),
        u16::from_le_bytes([ok[7], ok[8]]),
    );
    for n in [params, cols] {
        for _ in 0..n {
            my_packet(&mut my).await;
        }
        if n > 0 {
            my_packet(&mut my).await; // EOF
        }
    }
    // COM_STMT_EXECUTE, no cursor, one iteration, one LONGLONG parameter = 1.
    let mut exec = vec![0x17];
    exec.extend_from_slice(&stmt.to_le_bytes());
    exec.push(0);
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.extend_from_slice(&[0x00, 0x01, 0x08, 0x00]);
    exec.extend_from_slice(&1i64.to_le_bytes());
    my_command(&mut my, &exec).await;
    assert_eq!(my_response(&mut my).await, Ok(2));
    let my_policy = policy_id(f, idx[1]);
    let url = f.server.url(&format!(
        "/dbsafer/api/v1/policy/custom/access-policies/lock?policyId={}",
        enc(&my_policy)
    ));
    assert_eq!(call(client().put(url).bearer_auth(&f.admin)).await.0, 200);
    my_command(&mut my, &exec).await;
    let refused = my_response(&mut my).await;
    assert!(
        matches!(&refused, Err((1142, m)) if m.contains("is locked")),
        "{refused:?}"
    );
    assert_eq!(my_state(f), before.1);

    // A role the database reads '...' for with backslash escapes (standard_conforming_strings
    // off) reads text otherwise than the classifier: only ALL allows anything then.
    pg_admin(&format!(
        "ALTER ROLE {} SET standard_conforming_strings = off",
        f.run
    ));
    let (_, out) = psql_gw(f, &user, &pw, &["SELECT 1"]);
    pg_admin(&format!(
        "ALTER ROLE {} RESET standard_conforming_strings",
        f.run
    ));
    assert!(
        out.contains("refused") && out.contains("how this session's SQL is read"),
        "{out}"
    );
    let (ok, out) = psql_gw(f, &user, &pw, &["SELECT 1"]);
    assert!(ok && out.trim() == "1", "{out}");
}

fn policy_id(f: &Fixture, index: i64) -> String {
    POLICY_IDS
        .lock()
        .unwrap()
        .get(&(f.run.clone(), index))
        .cloned()
        .unwrap_or_else(|| panic!("policy {index} was not made by person()"))
}

/// Policy ids by (run, index), noted by `person`.
static POLICY_IDS: std::sync::Mutex<std::collections::BTreeMap<(String, i64), String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// COM_SET_OPTION switches multi-statements off and on; either way every statement of a string
/// is classified and a refused one stops the whole string. COM_CHANGE_USER (logging in as
/// another database user on the same connection) is refused and the connection closed.
#[tokio::test]
async fn mysql_set_option_and_change_user_are_handled_safely() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (user, pw, _) = person(f, &["SELECT"]).await;
    let before = my_state(f);
    let mut my = mysql_session(
        f.my_port,
        &format!("{user}@{}", f.run),
        &pw,
        &format!("{}_mysql", f.run),
    )
    .await;
    // MYSQL_OPTION_MULTI_STATEMENTS_OFF: the database answers with EOF (or OK).
    my_command(&mut my, &[0x1b, 1, 0]).await;
    let answer = my_packet(&mut my).await;
    assert!(matches!(answer[0], 0x00 | 0xfe), "{answer:?}");
    let refused = my_query(&mut my, "SELECT 1; DELETE FROM t").await;
    let (code, message) = refused.expect_err("DELETE is not granted");
    assert_eq!(code, 1142, "{message}");
    assert!(message.contains("DELETE"), "{message}");
    // Multi-statements off: the database itself refuses a two-statement string.
    assert!(my_query(&mut my, "SELECT 1; SELECT 2").await.is_err());
    assert_eq!(my_query(&mut my, "SELECT a FROM t").await, Ok(3));
    // MYSQL_OPTION_MULTI_STATEMENTS_ON.
    my_command(&mut my, &[0x1b, 0, 0]).await;
    let answer = my_packet(&mut my).await;
    assert!(matches!(answer[0], 0x00 | 0xfe), "{answer:?}");
    assert_eq!(my_query(&mut my, "SELECT 1; SELECT a FROM t").await, Ok(4));
    let (code, _) = my_query(&mut my, "SELECT 1; UPDATE t SET a = 0")
        .await
        .expect_err("UPDATE is not granted");
    assert_eq!(code, 1142);
    // An unknown option is the database's to refuse; the session stays usable.
    my_command(&mut my, &[0x1b, 9, 0]).await;
    assert_eq!(my_packet(&mut my).await[0], 0xff);
    assert_eq!(my_query(&mut my, "SELECT a FROM t").await, Ok(3));

    // COM_CHANGE_USER to the database's root: refused, and the connection ends.
    let mut change = vec![0x11];
    change.extend_from_slice(b"root\0");
    change.push(0);
    change.extend_from_slice(b"mysql\0");
    change.extend_from_slice(&45u16.to_le_bytes());
    change.extend_from_slice(b"mysql_native_password\0");
    my_command(&mut my, &change).await;
    let answer = my_packet(&mut my).await;
    assert_eq!(answer[0], 0xff, "{answer:?}");
    assert_eq!(u16::from_le_bytes([answer[1], answer[2]]), 1045);
    let message = String::from_utf8_lossy(&answer[9..]).into_owned();
    assert!(message.contains("reconnect"), "{message}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), my.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection stays open: {read:?} {rest:?}"
    );
    assert_eq!(my_state(f), before, "nothing changed");
    // The gateway closed the database side too: no session of the account is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = my_admin(&format!(
            "SELECT count(*) FROM information_schema.processlist WHERE user = '{}' AND command <> 'Killed'",
            f.run
        ));
        if left == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "{left} database sessions left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `x.name` calls the function `name(x)` when the row has no such column (PostgreSQL's
/// attribute notation): functions with side effects reached that way, in every position an
/// expression can stand, are refused to a policy without EXECUTE and change nothing, through
/// both protocols; plain `t.col` reads stay allowed; and a function created through the
/// gateway is known to open sessions at once (they refuse rather than run it).
#[tokio::test]
async fn functions_in_attribute_notation_need_execute() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let r = &f.run;
    // Functions of t's and s's row types, of a composite type and of any element, each
    // writing a row into s; a column `c` only t has, so `s.c` is no column of s.
    let body = format!("INSERT INTO {r}.s VALUES (99) RETURNING 1");
    pg_admin(&format!(
        "SET search_path = {r}; CREATE TYPE {r}.pair AS (x int, y int); \
         CREATE FUNCTION {r}.f(t) RETURNS int LANGUAGE sql AS $${body}$$; \
         CREATE FUNCTION {r}.f(s) RETURNS int LANGUAGE sql AS $${body}$$; \
         CREATE FUNCTION {r}.g(pair) RETURNS int LANGUAGE sql AS $${body}$$; \
         CREATE FUNCTION {r}.h(anyelement) RETURNS int LANGUAGE sql AS $${body}$$; \
         ALTER FUNCTION {r}.f(t) OWNER TO {r}; ALTER FUNCTION {r}.f(s) OWNER TO {r}; \
         ALTER FUNCTION {r}.g(pair) OWNER TO {r}; ALTER FUNCTION {r}.h(anyelement) OWNER TO {r}; \
         ALTER TYPE {r}.pair OWNER TO {r}"
    ));
    // Without the gateway, the notation does run them (the corpus below is real).
    let ran = pg_admin(&format!("BEGIN; SET LOCAL search_path = {r}; SELECT t.f FROM t LIMIT 1; SELECT count(*) FROM s WHERE a = 99; ROLLBACK"));
    assert_eq!(ran.lines().collect::<Vec<_>>(), ["1", "1"], "{ran}");
    let (user, pw, _) = person(f, &["SELECT", "INSERT", "UPDATE", "DELETE", "ALTER"]).await;
    let before = pg_state(f);
    let corpus = [
        "SELECT t.f FROM t",
        "SELECT s.f FROM s",
        "SELECT (t).f FROM t",
        "SELECT (t.*).f FROM t",
        "SELECT t.h FROM t",
        "SELECT (ROW(1, 2)::t).f",
        "SELECT (CAST(ROW(1, 2) AS t)).f",
        "SELECT ((1, 2)::pair).g",
        "SELECT ROW(t.f, 1) FROM t",
        "SELECT ARRAY[t.f] FROM t",
        "SELECT t.f::text FROM t",
        "SELECT t.a + t.f FROM t",
        "SELECT CASE WHEN t.f > 0 THEN 1 END FROM t",
        "SELECT coalesce(t.f, 0) FROM t",
        "SELECT 1 FROM t WHERE t.f = 1",
        "SELECT a FROM t ORDER BY t.f",
        "SELECT count(*) FROM t GROUP BY t.f",
        "SELECT 1 FROM t JOIN s ON s.f = t.a",
        "SELECT (SELECT x.f FROM t x LIMIT 1)",
        "WITH w AS (SELECT t.f FROM t) SELECT * FROM w",
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM s WHERE s.f > 0)",
        "SELECT 1 FROM t, LATERAL (SELECT t.f) x",
        "UPDATE t SET b = t.f WHERE a = 1",
        "UPDATE t SET b = b WHERE a = 1 RETURNING t.f",
        "DELETE FROM t WHERE t.f = 0",
        "INSERT INTO s SELECT t.f FROM t",
        "INSERT INTO s VALUES (1) RETURNING s.f",
        "INSERT INTO s VALUES ((ROW(1, 2)::t).f)",
        "ALTER TABLE s ADD COLUMN z int DEFAULT (ROW(1, 2)::t).f",
        "ALTER TABLE s ALTER a SET DEFAULT (ROW(1, 2)::t).f",
    ];
    for sql in corpus {
        let (_, out) = psql_gw(f, &user, &pw, &[sql]);
        assert!(
            out.contains("refused") && out.contains("needs EXECUTE"),
            "{sql:?} should be refused: {out}"
        );
        assert_eq!(pg_state(f), before, "{sql:?} changed the database");
    }
    // The extended protocol (Parse), on one raw session.
    let mut pg = pg_session(
        f.pg_port,
        &format!("{user}@{r}"),
        &pw,
        &format!("{r}_postgres"),
    )
    .await;
    for sql in corpus {
        let mut batch = pg_parse("", sql);
        batch.extend(pg_bind_execute("", &[]));
        batch.extend(pg_msg(b'S', &[]));
        pg.write_all(&batch).await.unwrap();
        let answer = pg_until_ready(&mut pg).await;
        let (code, message) = pg_error(&answer).unwrap_or_default();
        assert_eq!(code, "42501", "{sql:?}: {answer:?}");
        assert!(message.contains("needs EXECUTE"), "{sql:?}: {message}");
    }
    assert_eq!(
        pg_state(f),
        before,
        "the extended protocol changed the database"
    );
    // Columns read in the same notation stay allowed.
    let (ok, out) = psql_gw(
        f,
        &user,
        &pw,
        &[
            "SELECT t.a FROM t ORDER BY t.a LIMIT 1",
            "SELECT t.b, s.a FROM t JOIN s ON s.a = t.a WHERE t.a = 1",
            "SELECT (t).b FROM t WHERE t.a = 2",
            "SELECT c.relname FROM pg_class c WHERE c.relname = 'pg_class'",
        ],
    );
    assert!(ok && !out.contains("ERROR"), "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["1", "1|1", "2", "pg_class"],
        "{out}"
    );
    let answer = pg_query(&mut pg, "SELECT t.a FROM t WHERE t.a = 3").await;
    assert_eq!(pg_values(&answer), ["3"], "{answer:?}");

    // A function created through the gateway: the open session refuses `s.b` from then on
    // (before, `b` was only t's column, so `s.b` was the database's own error).
    let answer = pg_query(&mut pg, "SELECT s.b FROM s").await;
    assert_eq!(
        pg_error(&answer).unwrap_or_default().0,
        "42703",
        "{answer:?}"
    );
    let (creator, cpw, _) = person(f, &["SELECT", "CREATE"]).await;
    let (ok, out) = psql_gw(
        f,
        &creator,
        &cpw,
        &[&format!(
            "CREATE FUNCTION b(s) RETURNS int LANGUAGE sql AS $${body}$$"
        )],
    );
    assert!(ok && out.contains("CREATE FUNCTION"), "{out}");
    let before = pg_state(f);
    let answer = pg_query(&mut pg, "SELECT s.b FROM s").await;
    let (code, message) = pg_error(&answer).unwrap_or_default();
    assert_eq!(code, "42501", "{answer:?}");
    assert!(message.contains("needs EXECUTE"), "{message}");
    // A new session reads the catalog again: columns allowed, the new function refused.
    let (_, out) = psql_gw(
        f,
        &user,
        &pw,
        &["SELECT t.a FROM t WHERE t.a = 4", "SELECT s.b FROM s"],
    );
    assert!(
        out.starts_with("4\n") && out.contains("needs EXECUTE"),
        "{out}"
    );
    assert_eq!(
        pg_state(f),
        before,
        "a function created through the gateway ran"
    );
    pg_admin(&format!(
        "SET search_path = {r}; DROP FUNCTION f(t), f(s), g(pair), h(anyelement), b(s); DROP TYPE pair"
    ));
}

/// The statement events of `user` as an auditor reads them, once at least `want` are there
/// (statement events are committed in batches a few ms later).
async fn statement_events_of(f: &Fixture, user: &str, want: usize) -> Vec<Value> {
    let (_, _, auditor) = common::user_with_roles(&f.server, &["Auditor"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = call(
            client()
                .get(f.server.url(&format!(
                    "/api/v1/audit?user={}&action=db.statement&limit=1000",
                    enc(user)
                )))
                .bearer_auth(&auditor),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let events = v["events"].as_array().unwrap().clone();
        if events.len() >= want || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Passwords typed in SQL, in every form either database takes one, are masked in the
/// audit whether the statement was allowed or refused; the rest of the text stays readable.
#[tokio::test]
async fn passwords_typed_in_sql_are_masked_in_the_audit() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (user, pw, _) = person(f, &["SELECT"]).await;
    let pg_sqls = [
        "ALTER ROLE nobody_here PASSWORD 'Sekrit-pg-1'",
        "CREATE ROLE nobody_here LOGIN ENCRYPTED PASSWORD 'Sekrit-pg-2' VALID UNTIL '2030-01-01'",
        "CREATE USER nobody_here WITH PASSWORD $$Sekrit-pg-3$$",
        "CREATE USER MAPPING FOR CURRENT_USER SERVER nowhere OPTIONS (user 'u', password 'Sekrit-pg-4')",
        "ALTER USER MAPPING FOR CURRENT_USER SERVER nowhere OPTIONS (SET password 'Sekrit-pg-5')",
        "SELECT dblink_connect('c', 'host=127.0.0.9 user=u password=Sekrit-pg-6')",
        "CREATE SUBSCRIPTION nosub CONNECTION 'postgresql://u:Sekrit-pg-7@127.0.0.9/d' PUBLICATION p",
        // Allowed: a connection string in a plain query.
        "SELECT length('host=127.0.0.9 password=Sekrit-pg-8') AS n",
    ];
    for sql in pg_sqls {
        psql_gw(f, &user, &pw, &[sql]);
    }
    let my_sqls = [
        "CREATE USER 'nobody_here'@'%' IDENTIFIED BY 'Sekrit-my-1'",
        "ALTER USER 'nobody_here'@'%' IDENTIFIED WITH mysql_native_password BY 'Sekrit-my-2'",
        "SET PASSWORD = PASSWORD('Sekrit-my-3')",
        "SET PASSWORD FOR 'nobody_here'@'%' = 'Sekrit-my-4'",
        "GRANT SELECT ON *.* TO 'nobody_here'@'%' IDENTIFIED BY 'Sekrit-my-5'",
        "CHANGE MASTER TO MASTER_USER = 'r', MASTER_PASSWORD = 'Sekrit-my-6'",
        "CREATE SERVER nosrv FOREIGN DATA WRAPPER mysql OPTIONS (USER 'r', PASSWORD 'Sekrit-my-7')",
        "CREATE USER nobody_here IDENTIFIED VIA ed25519 USING PASSWORD('Sekrit-my-8')",
    ];
    for sql in my_sqls {
        mariadb_gw(f, &user, &pw, sql, false);
    }
    let events = statement_events_of(f, &user, pg_sqls.len() + my_sqls.len()).await;
    let statements: Vec<&str> = events
        .iter()
        .filter_map(|e| e["detail"]["statement"].as_str())
        .collect();
    let all = serde_json::to_string(&events).unwrap();
    assert!(
        !all.contains("Sekrit"),
        "a password reached the audit: {statements:#?}"
    );
    for want in [
        "ALTER ROLE nobody_here PASSWORD '***'",
        "CREATE ROLE nobody_here LOGIN ENCRYPTED PASSWORD '***' VALID UNTIL '2030-01-01'",
        "OPTIONS (user 'u', password '***')",
        "'host=127.0.0.9 user=u password=***'",
        "'postgresql://u:***@127.0.0.9/d'",
        "SELECT length('host=127.0.0.9 password=***') AS n",
        "CREATE USER 'nobody_here'@'%' IDENTIFIED BY '***'",
        "IDENTIFIED WITH mysql_native_password BY '***'",
        "SET PASSWORD = PASSWORD('***')",
        "SET PASSWORD FOR 'nobody_here'@'%' = '***'",
        "MASTER_PASSWORD = '***'",
    ] {
        assert!(
            statements.iter().any(|s| s.contains(want)),
            "no {want:?} in {statements:#?}"
        );
    }
    assert!(
        events.iter().any(|e| e["detail"]["verdict"] == "allowed")
            && events.iter().any(|e| e["detail"]["verdict"] == "refused"),
        "{statements:#?}"
    );
}

/// `haechi_gateway_logins_total{protocol,outcome}` for one protocol and outcome.
async fn logins_metric(f: &Fixture, protocol: &str, outcome: &str) -> u64 {
    let (p, o) = (
        format!("protocol=\"{protocol}\""),
        format!("outcome=\"{outcome}\""),
    );
    metrics_text(&f.server)
        .await
        .lines()
        .filter(|l| {
            l.starts_with("haechi_gateway_logins_total{") && l.contains(&p) && l.contains(&o)
        })
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<u64>().ok())
        .sum()
}

/// A gateway login checks the password before it looks at the target or account: someone
/// without the password gets the same answer for a target that does not exist as for one
/// that does; every login is counted by its outcome.
#[tokio::test]
async fn gateway_logins_check_the_password_first_and_are_counted() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let (user, pw, _) = person(f, &["SELECT"]).await;
    let pg_target = format!("{}_postgres", f.run);
    let my_target = format!("{}_mysql", f.run);
    let before = [
        logins_metric(f, "postgres", "failed").await,
        logins_metric(f, "postgres", "unknown_target").await,
        logins_metric(f, "mysql", "failed").await,
        logins_metric(f, "mysql", "unknown_target").await,
        logins_metric(f, "postgres", "success").await,
    ];
    // Wrong password: on a real target, on one that does not exist, with an unknown account.
    let (_, real) = psql_gw_on(f, &pg_target, &user, "wrong", &["SELECT 1"]);
    let (_, unknown) = psql_gw_on(f, "no_such_target", &user, "wrong", &["SELECT 1"]);
    let strip = |s: &str| s.replace("no_such_target", "").replace(&pg_target, "");
    assert!(real.contains("wrong user id or password"), "{real}");
    assert_eq!(strip(&real), strip(&unknown));
    let (_, real) = mariadb_gw_on(f, &my_target, &user, "wrong", "SELECT 1", false);
    let (_, unknown) = mariadb_gw_on(f, "no_such_target", &user, "wrong", "SELECT 1", false);
    assert!(
        real.contains("ERROR 1045") && real.contains("wrong user id or password"),
        "{real}"
    );
    let strip = |s: &str| s.replace("no_such_target", "").replace(&my_target, "");
    assert_eq!(strip(&real), strip(&unknown));
    // With the right password, the unknown target is named.
    let (ok, out) = psql_gw_on(f, "no_such_target", &user, &pw, &["SELECT 1"]);
    assert!(
        !ok && out.contains("there is no postgres database target named 'no_such_target'"),
        "{out}"
    );
    let (_, out) = mariadb_gw_on(f, "no_such_target", &user, &pw, "SELECT 1", false);
    assert!(
        out.contains("there is no mysql database target named 'no_such_target'"),
        "{out}"
    );
    let (ok, out) = psql_gw(f, &user, &pw, &["SELECT 1"]);
    assert!(ok, "{out}");
    let after = [
        logins_metric(f, "postgres", "failed").await,
        logins_metric(f, "postgres", "unknown_target").await,
        logins_metric(f, "mysql", "failed").await,
        logins_metric(f, "mysql", "unknown_target").await,
        logins_metric(f, "postgres", "success").await,
    ];
    // psql tries once more without TLS after a failed TLS login only with sslmode=prefer; the
    // tests use require, so each failed login above is one login.
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2],
            after[3] - before[3],
            after[4] - before[4]
        ],
        [2, 1, 2, 1, 1],
        "{before:?} -> {after:?}"
    );
}

/// An open session on either gateway stops working once its person may no longer log in: the
/// user is disabled, their password is changed, or their allow-list stops holding the
/// client's address. Each cause ends the next statements with a refusal naming it.
#[tokio::test]
async fn open_sessions_end_with_their_persons_rights() {
    let _serial = SERIAL.lock().await;
    let f = fixture().await;
    let causes = [
        (json!({ "disabled": true }), "the account is disabled"),
        (
            json!({ "password": format!("Pw-{}", common::unique("new")) }),
            "the login was revoked",
        ),
        (
            json!({ "allowed_ips": ["10.0.0.0/8"] }),
            "may no longer connect from this address",
        ),
    ];
    for (change, why) in causes {
        let (user, pw, _) = person(f, &["SELECT"]).await;
        let login = format!("{user}@{}", f.run);
        let mut pg = pg_session(f.pg_port, &login, &pw, &format!("{}_postgres", f.run)).await;
        let mut my = mysql_session(f.my_port, &login, &pw, &format!("{}_mysql", f.run)).await;
        assert_eq!(pg_values(&pg_query(&mut pg, "SELECT 1").await), ["1"]);
        assert!(my_query(&mut my, "SELECT 1").await.is_ok());
        let (s, v) = call(
            client()
                .patch(f.server.url(&format!("/api/v1/users/{}", enc(&user))))
                .bearer_auth(&f.admin)
                .json(&change),
        )
        .await;
        assert_eq!(s, 200, "{change}: {v}");
        // Checked every 2 s: refused within a few seconds, on both.
        let deadline = Instant::now() + Duration::from_secs(10);
        let pg_refused = loop {
            let answer = pg_query(&mut pg, "SELECT 1").await;
            if let Some((code, message)) = pg_error(&answer) {
                break (code, message);
            }
            assert!(
                Instant::now() < deadline,
                "{change}: the PostgreSQL session goes on"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(pg_refused.0, "42501", "{pg_refused:?}");
        assert!(
            pg_refused.1.contains(why) && pg_refused.1.contains("log in again"),
            "{change}: {pg_refused:?}"
        );
        let my_refused = loop {
            match my_query(&mut my, "SELECT 1").await {
                Err(e) => break e,
                Ok(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "{change}: the MySQL session goes on"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        assert_eq!(my_refused.0, 1142, "{my_refused:?}");
        assert!(my_refused.1.contains(why), "{change}: {my_refused:?}");
    }
}
