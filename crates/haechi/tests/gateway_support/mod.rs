//! What the gateway test files share: running the stock clients, the superuser sessions on the
//! machine's PostgreSQL and MariaDB, and finding a gateway's port in the server's log.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::Server;

/// The machine's PostgreSQL as its superuser (`HAECHI_CI_PG_URL` overrides).
pub fn pg_admin_url() -> String {
    std::env::var("HAECHI_CI_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Runs `cmd`; whether it succeeded, and its stdout followed by its stderr.
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `sql` as PostgreSQL's superuser; its output.
pub fn pg_admin(sql: &str) -> String {
    let (ok, out) = run(Command::new("psql").args([
        &pg_admin_url(),
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-qtAc",
        sql,
    ]));
    assert!(ok, "psql {sql}: {out}");
    out.trim().to_owned()
}

/// Runs `sql` as MariaDB's root; its output.
pub fn my_admin(sql: &str) -> String {
    let (ok, out) = run(Command::new("mariadb").args([
        "-h",
        "127.0.0.1",
        "-P",
        "3306",
        "-u",
        "root",
        "-N",
        "-B",
        "-e",
        sql,
    ]));
    assert!(ok, "mariadb {sql}: {out}");
    out.trim().to_owned()
}

/// The port of the gateway whose start line (`PostgreSQL gateway on ADDR`, `MySQL gateway on
/// ADDR`) contains `what`.
pub fn gateway_port(s: &Server, what: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(line) = s.logs().lines().find(|l| l.contains(what)) {
            return line.rsplit(':').next().unwrap().trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no '{what}' in:\n{}", s.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free address on the loopback interface.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// `gateway_pool_idle_secs` of the servers [`start_gateways`] starts.
pub const POOL_IDLE_SECS: u64 = 3;

/// A server with both gateways on free ports; the server, its PostgreSQL gateway's port and its
/// MySQL gateway's port. `pool_size` is the PostgreSQL statement pool (`gateway_pool_size`; 0: off).
pub async fn start_gateways(pool_size: usize) -> (Server, u16, u16) {
    let (pg, my) = (free_addr(), free_addr());
    let server = tokio::task::spawn_blocking(move || {
        Server::start_with(
            crate::common::Opts::default()
                .env("HAECHI_GATEWAY_POOL_SIZE", &pool_size.to_string())
                // Pooled connections close soon when idle, so a test sees them close.
                .env("HAECHI_GATEWAY_POOL_IDLE_SECS", &POOL_IDLE_SECS.to_string())
                // One session thread, as on two CPUs: the sessions of a test share one pool.
                .env("HAECHI_GATEWAY_THREADS", "1")
                .arg("--pg-gateway")
                .arg(&pg)
                .arg("--mysql-gateway")
                .arg(&my),
        )
    })
    .await
    .unwrap();
    let pg_port = gateway_port(&server, "PostgreSQL gateway on");
    let my_port = gateway_port(&server, "MySQL gateway on");
    (server, pg_port, my_port)
}

/// What [`grant_pg_account`] registered: the person who may use the account, and where.
pub struct PgGrant {
    /// The Haechi user and their password.
    pub user: String,
    pub password: String,
    /// The database target's name (the `dbname` a client gives the gateway).
    pub target: String,
}

/// Registers, on `s` as `admin`, PostgreSQL account `account` (password `account_password`,
/// kept as a vault credential) of `database` on the machine's PostgreSQL as a target named
/// `<account>_pg`, and a new user whom a DBSAFER policy grants `privileges` on it from
/// 127.0.0.1.
pub async fn grant_pg_account(
    s: &Server,
    admin: &str,
    account: &str,
    account_password: &str,
    database: &str,
    privileges: &[&str],
) -> PgGrant {
    use crate::common::{call, client, unique};
    use serde_json::json;
    let (st, cred) = call(
        client()
            .post(s.url("/v2/credentialvault/credentials"))
            .bearer_auth(admin)
            .json(&json!({ "name": account, "attributes": [{ "name": "password", "userProvided": false, "masked": true }] })),
    )
    .await;
    assert_eq!(st, 201, "{cred}");
    let credential = cred["id"].as_i64().unwrap();
    let attr = cred["attributes"][0]["id"].as_i64().unwrap();
    let (st, v) = call(
        client()
            .post(s.url(&format!(
                "/v2/credentialvault/credentials/{credential}/attributevalues"
            )))
            .bearer_auth(admin)
            .json(&json!([{ "credentialAttributeId": attr, "value": account_password }])),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let target = format!("{account}_pg");
    let (st, v) = call(client().post(s.url("/api/v1/db/targets")).bearer_auth(admin).json(
        &json!({ "name": target, "kind": "postgres", "host": "127.0.0.1", "port": 5432, "database": database }),
    ))
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        client()
            .post(s.url(&format!("/api/v1/db/targets/{target}/accounts")))
            .bearer_auth(admin)
            .json(
                &json!({ "account": account, "credentialId": credential, "attribute": "password" }),
            ),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let user = unique("clu").to_lowercase();
    let password = format!("Pw-{}", unique("x"));
    let (st, v) = call(
        client()
            .post(s.url("/api/v1/users"))
            .bearer_auth(admin)
            .json(&json!({ "user_id": user, "name": "Gateway user", "password": password })),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        client()
            .post(s.url("/dbsafer/api/v1/policy/custom/access-policies"))
            .bearer_auth(admin)
            .json(&json!({ "userId": user, "account": account, "serverAddress": "127.0.0.1", "serverPort": 5432,
                           "clientIpBegin": "127.0.0.1", "clientIpEnd": "127.0.0.1", "sqlPrivileges": privileges })),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    PgGrant {
        user,
        password,
        target,
    }
}
