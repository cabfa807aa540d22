//! The DB gateway with what `tests/gateway.rs` (the stock `psql` and `mariadb` clients, the
//! machine's trust-configured PostgreSQL) cannot show:
//!
//! - JDBC: PgJDBC and MariaDB Connector/J (Debian's jars, run by `gateway_drivers/Probe.java`)
//!   through the gateway: the extended query protocol with unnamed and named server-side
//!   statements, `COM_STMT_PREPARE`/`EXECUTE`, a refused statement with the protocol's own
//!   permission error, and the session still usable.
//! - The gateway's own logins to PostgreSQL with SCRAM-SHA-256 and MD5: a private PostgreSQL
//!   cluster (initdb in a temporary directory) whose `pg_hba.conf` asks SCRAM of one role and
//!   MD5 of another and the clear password of a third, with the passwords only in the vault;
//!   MD5 and the clear password are sent over plain TCP only to a target that allows it; a
//!   wrong vault password fails the login cleanly and the password appears nowhere.
//! - TLS from the gateway to the database (`"tls": "require"` and `"verify-full"` targets):
//!   that cluster with `hostssl` only, and a private MariaDB server (`mariadb-install-db`)
//!   whose account is `REQUIRE SSL`, both with a certificate from a test CA; `verify-full`
//!   with the right CA works, with another CA or for another name it is refused.

mod common;
mod gateway_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{call, client, login, Server, ADMIN_PASSWORD};
use gateway_support::{free_addr, my_admin, pg_admin, pg_admin_url, run, start_gateways};
use serde_json::{json, Value};

const PG_JAR: &str = "/usr/share/java/postgresql.jar";
const MARIADB_JAR: &str = "/usr/share/java/mariadb-java-client.jar";

/// Whether the tests must run rather than skip when a tool is missing.
fn required() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A server with both gateways, and its admin's token.
async fn gateway_server() -> (Server, String, u16, u16) {
    let (server, pg_port, my_port) = start_gateways(0).await;
    let admin = login(&server, "admin", ADMIN_PASSWORD).await;
    (server, admin, pg_port, my_port)
}

async fn post(s: &Server, token: &str, path: &str, body: Value) -> Value {
    let (st, v) = call(client().post(s.url(path)).bearer_auth(token).json(&body)).await;
    assert_eq!(st, 201, "POST {path}: {v}");
    v
}

/// A vault credential holding `password`; returns (credential id, value id).
async fn vault_password(s: &Server, admin: &str, name: &str, password: &str) -> (i64, i64) {
    let c = post(
        s,
        admin,
        "/v2/credentialvault/credentials",
        json!({ "name": name, "attributes": [{ "name": "password", "userProvided": false, "masked": true }] }),
    )
    .await;
    let id = c["id"].as_i64().unwrap();
    let attr = c["attributes"][0]["id"].as_i64().unwrap();
    let v = post(
        s,
        admin,
        &format!("/v2/credentialvault/credentials/{id}/attributevalues"),
        json!([{ "credentialAttributeId": attr, "value": password }]),
    )
    .await;
    (id, v[0]["id"].as_i64().unwrap())
}

/// A target, an account on it whose password is vault credential `credential`, a Haechi user
/// and a policy granting it `privileges` there; returns (user, password).
#[allow(clippy::too_many_arguments)]
async fn grant(
    s: &Server,
    admin: &str,
    kind: &str,
    target: &str,
    port: u16,
    database: &str,
    account: &str,
    credential: i64,
    privileges: &[&str],
) -> (String, String) {
    grant_at(
        s,
        admin,
        kind,
        "127.0.0.1",
        target,
        port,
        database,
        account,
        credential,
        privileges,
    )
    .await
}

/// [`grant`] on a target whose address is `host` (the policy names the same).
#[allow(clippy::too_many_arguments)]
async fn grant_at(
    s: &Server,
    admin: &str,
    kind: &str,
    host: &str,
    target: &str,
    port: u16,
    database: &str,
    account: &str,
    credential: i64,
    privileges: &[&str],
) -> (String, String) {
    let (st, v) = call(
        client()
            .get(s.url(&format!("/api/v1/db/targets/{target}")))
            .bearer_auth(admin),
    )
    .await;
    if st == 404 {
        post(
            s,
            admin,
            "/api/v1/db/targets",
            json!({ "name": target, "kind": kind, "host": host, "port": port, "database": database }),
        )
        .await;
    } else {
        assert_eq!(st, 200, "{v}");
    }
    // The account once per target (a second policy on it reuses it).
    let (st, v) = call(
        client()
            .post(s.url(&format!("/api/v1/db/targets/{target}/accounts")))
            .bearer_auth(admin)
            .json(
                &json!({ "account": account, "credentialId": credential, "attribute": "password" }),
            ),
    )
    .await;
    assert!(
        st == 201 || (st == 409 && v["message"].as_str().unwrap().contains("already has")),
        "{st} {v}"
    );
    let user = common::unique("gdu").to_lowercase();
    let password = format!("Pw-{}", common::unique("x"));
    post(
        s,
        admin,
        "/api/v1/users",
        json!({ "user_id": user, "name": "Driver user", "password": password }),
    )
    .await;
    post(
        s,
        admin,
        "/dbsafer/api/v1/policy/custom/access-policies",
        json!({ "userId": user, "account": account, "serverAddress": host, "serverPort": port,
                "clientIpBegin": "127.0.0.1", "clientIpEnd": "127.0.0.1", "sqlPrivileges": privileges }),
    )
    .await;
    (user, password)
}

/// Under CI=true a missing tool fails the test; elsewhere the test is skipped with a note.
fn tool_missing(what: &str) {
    assert!(!required(), "{what} is missing (.ci/run installs it)");
    eprintln!("skipped: {what} is missing");
}

fn probe(jar: &str, kind: &str, url: &str, user: &str, password: &str) -> (bool, String) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway_drivers/Probe.java");
    run(Command::new("java")
        .arg("-cp")
        .arg(jar)
        .arg(src)
        .args([kind, url, user, password]))
}

/// The answers of the probe's seven prepared SELECTs over t = {(i, i) | i in 1..=n}.
fn expected_selects(n: i64) -> Vec<String> {
    (0..7)
        .map(|i: i64| {
            let rows = (n - i).max(0);
            let sum: i64 = ((i + 1)..=n).map(|a| 2 * a).sum();
            format!("select {i} rows={rows} sum={sum}")
        })
        .collect()
}

/// A database account of the same name on the machine's PostgreSQL (its own schema, the
/// account's `search_path`) and MariaDB (its own database), each with a table `t` of 8 rows
/// `(i, i)`, and its password in a vault credential. Dropped on drop.
struct Accounts {
    name: String,
    password: String,
    credential: i64,
}

impl Accounts {
    async fn create(s: &Server, admin: &str) -> Accounts {
        let name = common::unique("hgd").to_lowercase();
        let password = format!("Db-{}", common::unique("pw"));
        let a = Accounts {
            credential: vault_password(s, admin, &name, &password).await.0,
            name,
            password,
        };
        let n = &a.name;
        let pw = &a.password;
        a.pg(&format!(
            "CREATE ROLE {n} LOGIN PASSWORD '{pw}'; CREATE SCHEMA {n} AUTHORIZATION {n}; \
             ALTER ROLE {n} SET search_path = {n}; CREATE TABLE {n}.t (a int, b int); \
             INSERT INTO {n}.t SELECT g, g FROM generate_series(1, 8) g; ALTER TABLE {n}.t OWNER TO {n};"
        ));
        a.my(&format!(
            "CREATE DATABASE {n}; CREATE USER '{n}'@'%' IDENTIFIED BY '{pw}'; \
             GRANT ALL ON {n}.* TO '{n}'@'%'; CREATE TABLE {n}.t (a INT, b INT); \
             INSERT INTO {n}.t VALUES (1,1),(2,2),(3,3),(4,4),(5,5),(6,6),(7,7),(8,8);"
        ));
        a
    }

    /// Runs `sql` as PostgreSQL's superuser; its output.
    fn pg(&self, sql: &str) -> String {
        pg_admin(sql)
    }

    /// Runs `sql` as MariaDB's root; its output.
    fn my(&self, sql: &str) -> String {
        my_admin(sql)
    }

    /// `count(*),sum(a)` of `t` on each database.
    fn rows(&self) -> (String, String) {
        let q = format!("SELECT count(*), sum(a) FROM {}.t", self.name);
        (
            self.pg(&q).replace('|', ","),
            self.my(&q).replace('\t', ","),
        )
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        let n = &self.name;
        let _ = run(Command::new("psql").args([
            &pg_admin_url(),
            "-X",
            "-qtAc",
            &format!("DROP SCHEMA IF EXISTS {n} CASCADE; DROP ROLE IF EXISTS {n}"),
        ]));
        let _ = run(Command::new("mariadb").args([
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "-e",
            &format!("DROP DATABASE IF EXISTS {n}; DROP USER IF EXISTS '{n}'@'%'"),
        ]));
    }
}

#[tokio::test]
async fn jdbc_drivers_through_the_gateway() {
    let java = Command::new("java").arg("-version").output().is_ok();
    if !java || !Path::new(PG_JAR).exists() || !Path::new(MARIADB_JAR).exists() {
        tool_missing("java with Debian's libpostgresql-jdbc-java and libmariadb-java");
        return;
    }
    let (s, admin, pg_port, my_port) = gateway_server().await;
    let acc = Accounts::create(&s, &admin).await;
    let run_id = acc.name.clone();
    let privileges = ["SELECT", "BEGIN", "COMMIT", "ROLLBACK"];
    let pg_target = format!("{run_id}_pg");
    let my_target = format!("{run_id}_my");
    let (pg_user, pg_pw) = grant(
        &s,
        &admin,
        "postgres",
        &pg_target,
        5432,
        "test",
        &run_id,
        acc.credential,
        &privileges,
    )
    .await;
    let (my_user, my_pw) = grant(
        &s,
        &admin,
        "mysql",
        &my_target,
        3306,
        &run_id,
        &run_id,
        acc.credential,
        &privileges,
    )
    .await;

    let pg = probe(
        PG_JAR,
        "pg",
        &format!("jdbc:postgresql://127.0.0.1:{pg_port}/{pg_target}?sslmode=require"),
        &format!("{pg_user}@{run_id}"),
        &pg_pw,
    );
    let my = probe(
        MARIADB_JAR,
        "mysql",
        &format!(
            "jdbc:mariadb://127.0.0.1:{my_port}/{my_target}?useServerPrepStmts=true&useSsl=true&trustServerCertificate=true"
        ),
        &format!("{my_user}@{run_id}"),
        &my_pw,
    );
    for ((ok, out), refusal, user) in [
        (
            &pg,
            "refused state=42501 ",
            format!("current_user={run_id}"),
        ),
        (
            &my,
            "refused state=42000 code=1142 ",
            format!("current_user={run_id}@"),
        ),
    ] {
        assert!(ok, "{out}");
        for line in expected_selects(8) {
            assert!(out.contains(&line), "missing '{line}' in:\n{out}");
        }
        let refused = out
            .lines()
            .find(|l| l.starts_with("refused"))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(refused.starts_with(refusal), "{refused}");
        assert!(
            refused.contains("DELETE"),
            "the message names the missing privilege: {refused}"
        );
        assert!(out.contains("after count=8"), "{out}");
        assert!(out.contains(&user), "{out}");
        assert!(out.contains("closed"), "{out}");
        assert!(!out.contains(&acc.password));
    }
    let eight = ("8,36".to_owned(), "8,36".to_owned());
    assert_eq!(acc.rows(), eight, "the refused DELETE changed nothing");
    assert!(
        !s.logs().contains(&acc.password),
        "the database password reached the log"
    );
}

/// Runs the stock client with `stdin` as its input; (success, stdout + stderr).
fn with_stdin(cmd: &mut Command, stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
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

/// PostgreSQL `COPY` in both directions and MySQL `LOAD DATA LOCAL INFILE` and `COM_INIT_DB`
/// through the gateway, each refused without its privilege (changing nothing) and working with it.
#[tokio::test]
async fn copy_load_data_local_and_init_db_follow_the_policy() {
    let (s, admin, pg_port, my_port) = gateway_server().await;
    let acc = Accounts::create(&s, &admin).await;
    let n = acc.name.clone();
    let pg_target = format!("{n}_pg");
    let my_target = format!("{n}_my");
    let mut users = Vec::new();
    for privileges in [
        &["SELECT"][..],
        &["SELECT", "INSERT", "COMMAND", "CONNECT"][..],
    ] {
        let pg = grant(
            &s,
            &admin,
            "postgres",
            &pg_target,
            5432,
            "test",
            &n,
            acc.credential,
            privileges,
        )
        .await;
        let my = grant(
            &s,
            &admin,
            "mysql",
            &my_target,
            3306,
            &n,
            &n,
            acc.credential,
            privileges,
        )
        .await;
        users.push((pg, my));
    }
    let psql = |(user, pw): &(String, String), command: &str, input: &str| {
        with_stdin(
            Command::new("psql")
                .arg(format!(
                    "host=127.0.0.1 port={pg_port} user={user}@{n} dbname={pg_target} sslmode=require"
                ))
                .args(["-X", "-qtA", "-c", command])
                .env("PGPASSWORD", pw),
            input,
        )
    };
    let data = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(data.path(), "100\t100\n200\t200\n").unwrap();
    let mariadb = |(user, pw): &(String, String), sql: &str| {
        with_stdin(
            Command::new("mariadb")
                .args(["-h", "127.0.0.1", "-P", &my_port.to_string()])
                .arg(format!("-u{user}@{n}"))
                .arg(format!("-p{pw}"))
                .args(["--local-infile=1", "-N", "-B", &my_target]),
            sql,
        )
    };
    let load = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE t; SELECT 'loaded';",
        data.path().display()
    );
    let (reader_pg, reader_my) = &users[0];
    let (writer_pg, writer_my) = &users[1];
    let eight = ("8,36".to_owned(), "8,36".to_owned());

    // COPY TO STDOUT needs SELECT only.
    let (ok, out) = psql(reader_pg, "\\copy t TO STDOUT", "");
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 8, "{out}");
    assert!(out.contains("8\t8"), "{out}");
    // COPY FROM STDIN needs INSERT: refused, nothing loaded, and the data is not taken.
    let (ok, out) = psql(reader_pg, "\\copy t FROM pstdin", "100\t100\n200\t200\n");
    assert!(!ok, "{out}");
    assert!(out.contains("needs INSERT"), "{out}");
    // LOAD DATA LOCAL needs INSERT and COMMAND: refused, and the client is never asked for the file.
    let (_, out) = mariadb(reader_my, &load);
    assert!(out.contains("1142"), "{out}");
    assert!(!out.contains("loaded"), "{out}");
    // COM_INIT_DB (`USE`) needs CONNECT.
    let (_, out) = mariadb(reader_my, &format!("USE {n}; SELECT 'switched';"));
    assert!(out.contains("1142") && !out.contains("switched"), "{out}");
    assert_eq!(
        acc.rows(),
        eight,
        "a refused COPY or LOAD DATA changed nothing"
    );

    // With the privileges, both loads work, and USE too.
    let (ok, out) = psql(writer_pg, "\\copy t FROM pstdin", "100\t100\n200\t200\n");
    assert!(ok, "{out}");
    let (ok, out) = mariadb(writer_my, &load);
    assert!(ok && out.contains("loaded"), "{out}");
    let (ok, out) = mariadb(writer_my, &format!("USE {n}; SELECT 'switched';"));
    assert!(ok && out.contains("switched"), "{out}");
    let ten = ("10,336".to_owned(), "10,336".to_owned());
    assert_eq!(acc.rows(), ten);
}

/// pg_query reads `'...'` as standard-conforming; a database role that turned
/// `standard_conforming_strings` off reads backslashes as escapes, so the gateway cannot trust
/// its classification of that session: only `ALL` allows a statement there.
#[tokio::test]
async fn a_role_reading_backslash_escapes_needs_all() {
    let (s, admin, pg_port, _) = gateway_server().await;
    let acc = Accounts::create(&s, &admin).await;
    let n = acc.name.clone();
    acc.pg(&format!(
        "ALTER ROLE {n} SET standard_conforming_strings = off"
    ));
    let target = format!("{n}_pg");
    let (user, pw) = grant(
        &s,
        &admin,
        "postgres",
        &target,
        5432,
        "test",
        &n,
        acc.credential,
        &["SELECT", "DELETE"],
    )
    .await;
    let (ok, out) = run(Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={pg_port} user={user}@{n} dbname={target} sslmode=require"
        ))
        .args([
            "-X",
            "-qtA",
            "-c",
            "SELECT 1",
            "-c",
            r"SELECT 'a\'; DELETE FROM t; --'",
        ])
        .env("PGPASSWORD", &pw));
    assert!(!ok, "{out}");
    assert!(out.contains("only a policy granting ALL"), "{out}");
    assert!(!out.lines().any(|l| l.trim() == "1"), "{out}");
    assert_eq!(
        acc.rows(),
        ("8,36".to_owned(), "8,36".to_owned()),
        "nothing ran"
    );
}

/// A private PostgreSQL cluster on a free port: SCRAM-SHA-256 for every role over TCP but
/// `md5role`, which gets MD5, and `pwrole`, which gets the clear password; trust over its
/// Unix socket (for set-up). Stopped on drop.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// None when PostgreSQL's server programs are not on this machine.
    fn start() -> Option<Cluster> {
        Cluster::start_with(
            "local all all trust\nhost all md5role 127.0.0.1/32 md5\nhost all pwrole 127.0.0.1/32 password\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
            false,
        )
    }

    /// A cluster with `pg_hba.conf` `hba`, and TLS (a self-signed certificate) when `ssl`.
    fn start_with(hba: &str, ssl: bool) -> Option<Cluster> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()?;
        // initdb refuses to run as root: as root, run the server programs as `postgres`.
        let as_postgres = run(Command::new("id").arg("-u")).1.trim() == "0";
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        if as_postgres {
            let (ok, out) = run(Command::new("chown").arg("postgres").arg(c.dir.path()));
            assert!(ok, "{out}");
        }
        let data = c.dir.path().join("data");
        let (ok, out) = run(c.command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]));
        assert!(ok, "initdb: {out}");
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        c.port = free_addr().rsplit(':').next().unwrap().parse().unwrap();
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            c.port,
            c.dir.path().display()
        );
        if ssl {
            test_certs(&data);
            if as_postgres {
                let (ok, out) = run(Command::new("chown")
                    .arg("postgres")
                    .arg(data.join("server.crt"))
                    .arg(data.join("server.key")));
                assert!(ok, "{out}");
            }
            opts.push_str(" -c ssl=on");
        }
        let (ok, out) = run(c
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(c.dir.path().join("log"))
            .args(["-w", "start"]));
        assert!(ok, "pg_ctl start: {out}");
        Some(c)
    }

    fn sql(&self, sql: &str) -> String {
        let (ok, out) = run(Command::new("psql")
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-qtAc", sql]));
        assert!(ok, "{sql}: {out}");
        out.trim().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]));
    }
}

#[tokio::test]
async fn the_gateway_logs_in_to_postgresql_with_scram_and_md5() {
    let Some(cluster) = Cluster::start() else {
        tool_missing("PostgreSQL's server programs (initdb, pg_ctl)");
        return;
    };
    let scram_pw = format!("Scram-{}", common::unique("pw"));
    let md5_pw = format!("Md5-{}", common::unique("pw"));
    cluster.sql(&format!(
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE scramrole LOGIN PASSWORD '{scram_pw}'; \
         CREATE ROLE pwrole LOGIN PASSWORD '{md5_pw}'; \
         SET password_encryption = 'md5'; CREATE ROLE md5role LOGIN PASSWORD '{md5_pw}';"
    ));
    // The cluster really asks for the passwords: a wrong one is refused, directly.
    let direct = |role: &str, pw: &str| {
        run(Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={} user={role} dbname=postgres",
                cluster.port
            ))
            .args(["-X", "-qtAc", "SELECT current_user"])
            .env("PGPASSWORD", pw))
    };
    assert!(direct("scramrole", &scram_pw).0);
    assert!(!direct("scramrole", "wrong").0);
    assert!(!direct("md5role", "wrong").0);
    assert!(cluster
        .sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'md5role'")
        .starts_with("md5"));

    let (s, admin, pg_port, _) = gateway_server().await;
    let target = common::unique("scram").to_lowercase();
    let (scram_cred, scram_value) =
        vault_password(&s, &admin, &format!("{target}-s"), &scram_pw).await;
    let (md5_cred, _) = vault_password(&s, &admin, &format!("{target}-m"), &md5_pw).await;
    // The same cluster as a target that allows sending the password without verified TLS.
    let insecure = format!("{target}-insecure");
    post(
        &s,
        &admin,
        "/api/v1/db/targets",
        json!({ "name": insecure, "kind": "postgres", "host": "127.0.0.1", "port": cluster.port,
                "database": "postgres", "allow_insecure_password": true }),
    )
    .await;
    let scram_user = grant(
        &s,
        &admin,
        "postgres",
        &target,
        cluster.port,
        "postgres",
        "scramrole",
        scram_cred,
        &["SELECT"],
    )
    .await;
    let through = |user: &str, account: &str, pw: &str| {
        run(Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={pg_port} user={user}@{account} dbname={target} sslmode=require"
            ))
            .args(["-X", "-qtAc", "SELECT current_user"])
            .env("PGPASSWORD", pw))
    };
    let (ok, out) = through(&scram_user.0, "scramrole", &scram_user.1);
    assert!(ok, "scramrole: {out}");
    assert_eq!(out.trim(), "scramrole");
    // MD5 and the clear password go to a server whose certificate was not verified only when
    // the target allows it (issue 26 item 7): refused through `target`, used through `insecure`.
    for (account, form) in [("md5role", "MD5"), ("pwrole", "clear")] {
        for (via, allowed) in [(&target, false), (&insecure, true)] {
            let (user, pw) = grant(
                &s,
                &admin,
                "postgres",
                via,
                cluster.port,
                "postgres",
                account,
                md5_cred,
                &["SELECT"],
            )
            .await;
            let (ok, out) = run(Command::new("psql")
                .arg(format!(
                    "host=127.0.0.1 port={pg_port} user={user}@{account} dbname={via} sslmode=require"
                ))
                .args(["-X", "-qtAc", "SELECT current_user"])
                .env("PGPASSWORD", &pw));
            if allowed {
                assert!(ok, "{account} through {via}: {out}");
                assert_eq!(out.trim(), account);
            } else {
                assert!(!ok, "{account} over plain TCP: {out}");
                assert!(
                    out.contains(&format!("in {form} form")) && out.contains("verify-full"),
                    "{out}"
                );
            }
        }
    }
    // A wrong password in the vault: the login fails with the gateway's message, no secret in it.
    let (st, v) = call(
        client()
            .put(s.url(&format!(
                "/v2/credentialvault/credentials/{scram_cred}/attributevalues/{scram_value}"
            )))
            .bearer_auth(&admin)
            .json(&json!([{ "value": "not-the-password", "version": 0 }])),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (ok, out) = through(&scram_user.0, "scramrole", &scram_user.1);
    assert!(!ok, "{out}");
    assert!(out.contains("cannot log in to database target"), "{out}");
    // The passwords are nowhere but encrypted in the vault: not in the message, the server's
    // log, or the store (the SQLite files or a PostgreSQL dump, audit included).
    let store = s.store_bytes();
    for secret in [scram_pw.as_str(), md5_pw.as_str(), "not-the-password"] {
        assert!(!out.contains(secret), "{out}");
        assert!(!s.logs().contains(secret), "a password reached the log");
        assert!(
            !common::bytes_contain(&store, secret),
            "a password is in the store in plaintext"
        );
    }
}

/// Writes the certificates of the TLS tests into `dir`: `server.crt` and `server.key` for the
/// name `localhost` only (not `127.0.0.1`), issued by the CA of `ca.crt`; `wrong-ca.crt` is
/// another CA of the same name (only its key differs).
fn test_certs(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca = || {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "Haechi test CA");
        (p.self_signed(&key).unwrap(), key)
    };
    let (ca_cert, ca_key) = ca();
    let (wrong_ca, _) = ca();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("wrong-ca.crt"), wrong_ca.pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// A target named `name` on 127.0.0.1:`port` with backend TLS `tls`.
async fn tls_target(
    s: &Server,
    admin: &str,
    kind: &str,
    name: &str,
    port: u16,
    db: &str,
    tls: &str,
) {
    post(
        s,
        admin,
        "/api/v1/db/targets",
        json!({ "name": name, "kind": kind, "host": "127.0.0.1", "port": port, "database": db, "tls": tls }),
    )
    .await;
}

/// A `verify-full` target named `name` on `host`:`port` whose certificate must chain to the
/// CA file `ca`.
#[allow(clippy::too_many_arguments)]
async fn verified_target(
    s: &Server,
    admin: &str,
    kind: &str,
    name: &str,
    host: &str,
    port: u16,
    db: &str,
    ca: &Path,
) {
    post(
        s,
        admin,
        "/api/v1/db/targets",
        json!({ "name": name, "kind": kind, "host": host, "port": port, "database": db,
                "tls": "verify-full", "tls_ca_file": ca }),
    )
    .await;
}

/// `verify-full` targets on one database, each reached by a user granted `SELECT` on it.
struct VerifyFull<'a> {
    s: &'a Server,
    admin: &'a str,
    kind: &'a str,
    /// Prefix of the targets' names.
    name: &'a str,
    port: u16,
    db: &'a str,
    account: &'a str,
    credential: i64,
    /// Where `test_certs` wrote the CA files.
    ca_dir: &'a Path,
}

impl VerifyFull<'_> {
    /// Checks the validation of such targets, then for each case (name suffix, host, CA file,
    /// refused) makes the target and logs in through the gateway with `login` (whether the
    /// session works and is TLS, and the client's output): refused ones fail with the
    /// certificate error.
    async fn check(
        &self,
        cases: &[(&str, &str, &str, bool)],
        login: impl Fn(&(String, String), &str) -> (bool, String),
    ) {
        let ca = self.ca_dir.join("ca.crt");
        verify_full_is_validated(self.s, self.admin, self.kind, self.port, &ca).await;
        for (suffix, host, ca, refused) in cases {
            let target = format!("{}-{suffix}", self.name);
            verified_target(
                self.s,
                self.admin,
                self.kind,
                &target,
                host,
                self.port,
                self.db,
                &self.ca_dir.join(ca),
            )
            .await;
            let user = grant_at(
                self.s,
                self.admin,
                self.kind,
                host,
                &target,
                self.port,
                self.db,
                self.account,
                self.credential,
                &["SELECT"],
            )
            .await;
            let (ok, out) = login(&user, &target);
            if *refused {
                assert!(!ok, "{target}: {out}");
                assert!(
                    out.contains("cannot log in to database target") && out.contains("certificate"),
                    "{target}: {out}"
                );
            } else {
                assert!(ok, "{target}: {out}");
            }
        }
    }
}

/// `verify-full` targets: a CA file is required, must exist and hold a certificate, and is
/// taken by no other mode (400, and no target is made).
async fn verify_full_is_validated(s: &Server, admin: &str, kind: &str, port: u16, ca: &Path) {
    let name = common::unique("badtls").to_lowercase();
    let base =
        json!({ "name": name, "kind": kind, "host": "localhost", "port": port, "database": "d" });
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    for (body, field) in [
        (with(json!({ "tls": "verify-full" })), "tls_ca_file"),
        (
            with(json!({ "tls": "verify-full", "tls_ca_file": "/nonexistent/ca.pem" })),
            "tls_ca_file",
        ),
        (
            with(json!({ "tls": "verify-full", "tls_ca_file": "relative/ca.pem" })),
            "tls_ca_file",
        ),
        (
            with(json!({ "tls": "require", "tls_ca_file": ca })),
            "tls_ca_file",
        ),
    ] {
        let (st, v) = call(
            client()
                .post(s.url("/api/v1/db/targets"))
                .bearer_auth(admin)
                .json(&body),
        )
        .await;
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["field"], field, "{v}");
    }
    let (st, _) = call(
        client()
            .get(s.url(&format!("/api/v1/db/targets/{name}")))
            .bearer_auth(admin),
    )
    .await;
    assert_eq!(st, 404);
}

/// A target with `"tls": "require"` reaches PostgreSQL over TLS (the cluster takes TCP logins
/// over TLS only); the same database as a target without TLS cannot be logged in to.
#[tokio::test]
async fn the_gateway_uses_tls_to_postgresql_when_the_target_requires_it() {
    let hba = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n";
    let Some(cluster) = Cluster::start_with(hba, true) else {
        tool_missing("PostgreSQL's server programs (initdb, pg_ctl)");
        return;
    };
    let pw = format!("Tls-{}", common::unique("pw"));
    cluster.sql(&format!("CREATE ROLE tlsrole LOGIN PASSWORD '{pw}'"));
    let (s, admin, pg_port, _) = gateway_server().await;
    let name = common::unique("pgtls").to_lowercase();
    let (cred, _) = vault_password(&s, &admin, &name, &pw).await;
    let (tls, plain) = (format!("{name}-tls"), format!("{name}-plain"));
    tls_target(
        &s,
        &admin,
        "postgres",
        &tls,
        cluster.port,
        "postgres",
        "require",
    )
    .await;
    tls_target(
        &s,
        &admin,
        "postgres",
        &plain,
        cluster.port,
        "postgres",
        "disable",
    )
    .await;
    let mut users = Vec::new();
    for target in [&tls, &plain] {
        users.push(
            grant(
                &s,
                &admin,
                "postgres",
                target,
                cluster.port,
                "postgres",
                "tlsrole",
                cred,
                &["SELECT"],
            )
            .await,
        );
    }
    let through = |(user, pw): &(String, String), target: &str| {
        run(Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={pg_port} user={user}@tlsrole dbname={target} sslmode=require"
            ))
            .args([
                "-X",
                "-qtAc",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ])
            .env("PGPASSWORD", pw))
    };
    let (ok, out) = through(&users[0], &tls);
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        "t",
        "the gateway's session to the database is TLS"
    );
    let (ok, out) = through(&users[1], &plain);
    assert!(!ok, "{out}");
    assert!(out.contains("cannot log in to database target"), "{out}");
    assert!(out.contains("the database refused the login"), "{out}");
    // The database's own words (pg_hba's "no encryption") go to the server's log under the
    // reference the client is given, never to the client.
    assert!(!out.contains("no encryption"), "{out}");
    let reference = out
        .split("(reference ")
        .nth(1)
        .and_then(|r| r.get(..8))
        .unwrap_or_else(|| panic!("no reference in: {out}"))
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s
        .logs()
        .lines()
        .any(|l| l.contains(&reference) && l.contains("no encryption"))
    {
        assert!(
            Instant::now() < deadline,
            "reference {reference} with the database's text not in the log:\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!out.contains(&pw) && !s.logs().contains(&pw));

    // verify-full (issue 26 item 7): the certificate must chain to the target's CA file and
    // name the target's host (the cluster's names `localhost` only).
    let logins = VerifyFull {
        s: &s,
        admin: &admin,
        kind: "postgres",
        name: &name,
        port: cluster.port,
        db: "postgres",
        account: "tlsrole",
        credential: cred,
        ca_dir: &cluster.dir.path().join("data"),
    };
    logins
        .check(
            &[
                ("vf", "localhost", "ca.crt", false),
                ("wrongca", "localhost", "wrong-ca.crt", true),
                ("wrongname", "127.0.0.1", "ca.crt", true),
            ],
            |user, target| {
                let (ok, out) = through(user, target);
                (ok && out.trim() == "t", out)
            },
        )
        .await;
    assert!(!s.logs().contains(&pw));
}

/// A private MariaDB server (`mariadb-install-db` in a temporary directory) with TLS; killed on
/// drop.
struct PrivateMariadb {
    dir: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
}

impl PrivateMariadb {
    /// None when MariaDB's server programs are not on this machine.
    fn start() -> Option<PrivateMariadb> {
        let install = Path::new("/usr/bin/mariadb-install-db");
        let server = Path::new("/usr/sbin/mariadbd");
        if !install.exists() || !server.exists() {
            return None;
        }
        let as_root = run(Command::new("id").arg("-u")).1.trim() == "0";
        let dir = tempfile::tempdir().unwrap();
        test_certs(dir.path());
        if as_root {
            let (ok, out) = run(Command::new("chown").arg("-R").arg("mysql").arg(dir.path()));
            assert!(ok, "{out}");
        }
        let data = dir.path().join("data");
        let user = if as_root { "mysql" } else { "" };
        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if as_root {
            cmd.arg(format!("--user={user}"));
        }
        let (ok, out) = run(&mut cmd);
        assert!(ok, "mariadb-install-db: {out}");
        let port: u16 = free_addr().rsplit(':').next().unwrap().parse().unwrap();
        let mut cmd = Command::new(server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--log-error={}", dir.path().join("log").display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--innodb-buffer-pool-size=16M"])
            .arg(format!(
                "--ssl-cert={}",
                dir.path().join("server.crt").display()
            ))
            .arg(format!(
                "--ssl-key={}",
                dir.path().join("server.key").display()
            ));
        if as_root {
            cmd.arg(format!("--user={user}"));
        }
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let m = PrivateMariadb { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !m.try_sql("SELECT 1").0 {
            assert!(
                Instant::now() < deadline,
                "the private MariaDB did not start: {}",
                std::fs::read_to_string(m.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(m)
    }

    fn try_sql(&self, sql: &str) -> (bool, String) {
        run(Command::new("mariadb")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-u", "root", "-N", "-B", "-e", sql]))
    }

    fn sql(&self, sql: &str) -> String {
        let (ok, out) = self.try_sql(sql);
        assert!(ok, "{sql}: {out}");
        out.trim().to_owned()
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same for MariaDB: an account that must use TLS (`REQUIRE SSL`) is reached through a
/// target with `"tls": "require"`, and not through one without.
#[tokio::test]
async fn the_gateway_uses_tls_to_mariadb_when_the_target_requires_it() {
    let Some(m) = PrivateMariadb::start() else {
        tool_missing("MariaDB's server programs (mariadb-install-db, mariadbd)");
        return;
    };
    assert_eq!(m.sql("SELECT @@have_ssl"), "YES");
    let pw = format!("Tls-{}", common::unique("pw"));
    m.sql(&format!(
        "CREATE DATABASE tlsdb; CREATE USER 'tlsacct'@'%' IDENTIFIED BY '{pw}' REQUIRE SSL; \
         GRANT ALL ON tlsdb.* TO 'tlsacct'@'%';"
    ));
    let (s, admin, _, my_port) = gateway_server().await;
    let name = common::unique("mytls").to_lowercase();
    let (cred, _) = vault_password(&s, &admin, &name, &pw).await;
    let (tls, plain) = (format!("{name}-tls"), format!("{name}-plain"));
    tls_target(&s, &admin, "mysql", &tls, m.port, "tlsdb", "require").await;
    tls_target(&s, &admin, "mysql", &plain, m.port, "tlsdb", "disable").await;
    let mut users = Vec::new();
    for target in [&tls, &plain] {
        users.push(
            grant(
                &s,
                &admin,
                "mysql",
                target,
                m.port,
                "tlsdb",
                "tlsacct",
                cred,
                &["SELECT"],
            )
            .await,
        );
    }
    let through = |(user, pw): &(String, String), target: &str| {
        run(Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", &my_port.to_string()])
            .arg(format!("-u{user}@tlsacct"))
            .arg(format!("-p{pw}"))
            .args(["-N", "-B", target, "-e"])
            .arg("SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'"))
    };
    let (ok, out) = through(&users[0], &tls);
    assert!(ok, "{out}");
    assert!(
        !out.trim().is_empty(),
        "the gateway's session to the database is TLS"
    );
    let (ok, out) = through(&users[1], &plain);
    assert!(!ok, "{out}");
    assert!(out.contains("cannot log in to database target"), "{out}");
    assert!(!out.contains(&pw) && !s.logs().contains(&pw));

    // verify-full (issue 26 item 7): the right CA works, a wrong CA is refused.
    let logins = VerifyFull {
        s: &s,
        admin: &admin,
        kind: "mysql",
        name: &name,
        port: m.port,
        db: "tlsdb",
        account: "tlsacct",
        credential: cred,
        ca_dir: m.dir.path(),
    };
    logins
        .check(
            &[
                ("vf", "localhost", "ca.crt", false),
                ("wrongca", "localhost", "wrong-ca.crt", true),
            ],
            |user, target| {
                let (ok, out) = through(user, target);
                (ok && !out.trim().is_empty(), out)
            },
        )
        .await;
}
