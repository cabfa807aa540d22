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
