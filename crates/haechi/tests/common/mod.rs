//! Test harness: starts the real `haechi` binary and talks HTTPS to it.
//!
//! Backend: SQLite in a temporary data directory by default; with `HAECHI_TEST_DATABASE_URL`
//! (a PostgreSQL URL whose user may create databases) every server gets a fresh database of
//! its own, named `haechi_t_<run>_<pid>_<n>` (`<run>` = `HAECHI_TEST_RUN_ID`, so a CI run can
//! drop what it created). Servers stop when the test process ends (their stdin closes).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const ADMIN_PASSWORD: &str = "Admin-Pass-1234";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for objects a test creates (tests share servers).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000;
    format!("{prefix}{}x{n}x{t}", std::process::id())
}

/// The PostgreSQL URL tests should use, if any. Under CI=true a configured but unreachable
/// PostgreSQL fails the test instead of silently falling back to SQLite.
pub fn pg_admin_url() -> Option<String> {
    std::env::var("HAECHI_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .output()
        .expect("psql must be installed to run the PostgreSQL tests");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Replaces the database name of a PostgreSQL URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Where a test server keeps its state.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Options for a server.
#[derive(Default, Clone)]
pub struct Opts {
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// Reuse an existing data dir / database (restart tests).
    pub reuse: Option<(PathBuf, Db)>,
    /// Variables removed from the server's environment (after the harness's own defaults,
    /// so `HAECHI_ADMIN_PASSWORD` can be taken away).
    pub remove_env: Vec<String>,
}

impl Opts {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }
    pub fn without_env(mut self, k: &str) -> Self {
        self.remove_env.push(k.to_owned());
        self
    }
}

pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    pub base: String,
    pub fingerprint: Option<String>,
    pub data_dir: PathBuf,
    pub db: Db,
    output: Arc<Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
    owns_db: bool,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_haechi")
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Server {
        let (tmp, data_dir, db, owns_db) = match opts.reuse.clone() {
            Some((dir, db)) => (None, dir, db, false),
            None => {
                let tmp = tempfile::tempdir().expect("tempdir");
                let dir = tmp.path().join("data");
                let db = match pg_admin_url() {
                    Some(admin) => {
                        let run =
                            std::env::var("HAECHI_TEST_RUN_ID").unwrap_or_else(|_| "local".into());
                        let name = format!(
                            "haechi_t_{}_{}_{}",
                            run.to_lowercase()
                                .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
                            std::process::id(),
                            COUNTER.fetch_add(1, Ordering::Relaxed)
                        );
                        psql(&admin, &format!("CREATE DATABASE {name}"));
                        Db::Postgres(with_database(&admin, &name))
                    }
                    None => Db::Sqlite(dir.join("haechi.db")),
                };
                (Some(tmp), dir, db, true)
            }
        };
        let mut cmd = Command::new(bin());
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--stop-on-stdin-eof")
            .args(&opts.args)
            .env("HAECHI_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("HAECHI_LOG_LEVEL", "info")
            .env_remove("HAECHI_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Cheap Argon2 keeps the suite fast; the cost is measured in bench/.
        cmd.env("HAECHI_IDENTITY__ARGON2__MEMORY_KIB", "1024")
            .env("HAECHI_IDENTITY__ARGON2__ITERATIONS", "1");
        if let Db::Postgres(url) = &db {
            cmd.arg("--database-url").arg(url);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        for k in &opts.remove_env {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().expect("spawn haechi server");
        let stdin = child.stdin.take();
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push_str(&line);
                    output.lock().unwrap().push('\n');
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut base = None;
        let mut fingerprint = None;
        while base.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(fp) = line.split("fingerprint: ").nth(1) {
                        fingerprint = Some(fp.trim().to_owned());
                    }
                    if let Some(url) = line.split("listening on ").nth(1) {
                        base = Some(url.trim().to_owned());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not start; output:\n{}", output.lock().unwrap());
                }
            }
        }
        Server {
            child,
            stdin,
            base: base.unwrap(),
            fingerprint,
            data_dir,
            db,
            output,
            _tmp: tmp,
            owns_db,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server printed so far (stdout and stderr).
    pub fn logs(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The output once it contains `needle`, or after `within` (whatever it holds then).
    pub fn logs_once_they_contain(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let logs = self.logs();
            if logs.contains(needle) || Instant::now() >= deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server cleanly (closes its stdin) and waits for it.
    pub fn stop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// [`Server::stop`] for async tests: stops the server on a blocking thread while the
    /// test's runtime keeps serving the connections its clients left open, so they close at
    /// once instead of holding the server's graceful shutdown for its full 10 s.
    pub async fn stop_async(mut self) -> Server {
        tokio::task::spawn_blocking(move || {
            self.stop();
            self
        })
        .await
        .unwrap()
    }

    /// Stops and drops a server at the end of an async test (see [`Server::stop_async`]).
    pub async fn finish(self) {
        drop(self.stop_async().await);
    }

    /// Sends SIGTERM with the server's stdin still open, and waits up to `within` for it to
    /// exit: its exit status, or `None` if it was still running (it is then killed).
    #[allow(dead_code)]
    pub fn term(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        None
    }

    /// Kills the server with SIGKILL (no clean shutdown).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Options to start another server on the same state.
    pub fn same_state(&self) -> Opts {
        Opts {
            reuse: Some((self.data_dir.clone(), self.db.clone())),
            ..Default::default()
        }
    }

    /// Runs SQL directly against the server's database (tamper tests).
    pub fn sql(&self, sql: &str) -> String {
        match &self.db {
            Db::Postgres(url) => psql(url, sql),
            Db::Sqlite(path) => {
                let out = Command::new("sqlite3")
                    .args(["-cmd", ".timeout 10000"])
                    .arg(path)
                    .arg(sql)
                    .output()
                    .expect("sqlite3 must be installed");
                assert!(
                    out.status.success(),
                    "sqlite3 {sql:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
        }
    }

    /// Runs SQL directly against the server's database; `Err` with the tool's error output
    /// when it fails (to show that a statement is refused).
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = match &self.db {
            Db::Postgres(url) => Command::new("psql")
                .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qtAc", sql])
                .output()
                .expect("psql must be installed to run the PostgreSQL tests"),
            Db::Sqlite(path) => Command::new("sqlite3")
                .args(["-cmd", ".timeout 10000"])
                .arg(path)
                .arg(sql)
                .output()
                .expect("sqlite3 must be installed"),
        };
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Every byte the store holds: the files of the data directory (SQLite and its WAL) or a
    /// `pg_dump` of the database, to search for something that must never be stored.
    pub fn store_bytes(&self) -> Vec<u8> {
        match &self.db {
            Db::Sqlite(_) => {
                let mut all = Vec::new();
                for entry in std::fs::read_dir(&self.data_dir).unwrap() {
                    let p = entry.unwrap().path();
                    if p.is_file() {
                        all.extend(std::fs::read(&p).unwrap());
                    }
                }
                all
            }
            Db::Postgres(url) => {
                let out = Command::new("pg_dump")
                    .args(["--data-only", "--inserts", url])
                    .output()
                    .expect("pg_dump must be installed");
                assert!(
                    out.status.success(),
                    "pg_dump: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                out.stdout
            }
        }
    }

    /// `haechi audit verify` against this server's store: (exit code, output).
    pub fn audit_verify(&self) -> (i32, String) {
        let mut cmd = Command::new(bin());
        cmd.args(["audit", "verify", "--data-dir"])
            .arg(&self.data_dir)
            .env_remove("HAECHI_CONFIG");
        if let Db::Postgres(url) = &self.db {
            cmd.arg("--database-url").arg(url);
        }
        let out = cmd.output().expect("run haechi audit verify");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if self.owns_db {
            if let (Db::Postgres(url), Some(admin)) = (&self.db, pg_admin_url()) {
                if let Some(name) = url
                    .rsplit('/')
                    .next()
                    .map(|s| s.split('?').next().unwrap_or(s))
                {
                    let _ = Command::new("psql")
                        .args([
                            admin.as_str(),
                            "-qtAc",
                            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                        ])
                        .output();
                }
            }
        }
    }
}

/// Percent-encodes one URL path segment or query value (user ids and role names may hold any
/// character).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One server shared by the tests of a test binary.
pub fn shared() -> &'static Server {
    static SHARED: OnceLock<Server> = OnceLock::new();
    SHARED.get_or_init(Server::start)
}

/// An HTTPS client that accepts the server's self-signed certificate (like `curl -k`).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The Prometheus text of `GET /metrics`.
pub async fn metrics_text(s: &Server) -> String {
    client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Logs in through the MDRM endpoint; returns the bare token.
pub async fn login(s: &Server, user: &str, password: &str) -> String {
    let r = client()
        .post(s.url("/api/v1/auth"))
        .json(&json!({ "user_id": user, "pwd": password }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "login {user}: {body}");
    body["token"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned()
}

pub async fn admin_token(s: &Server) -> String {
    login(s, "admin", ADMIN_PASSWORD).await
}

/// Creates a user with the given roles; returns (user_id, password, token).
pub async fn user_with_roles(s: &Server, roles: &[&str]) -> (String, String, String) {
    let admin = admin_token(s).await;
    let user_id = unique("u");
    let password = format!("pw-{}", unique("p"));
    let r = client()
        .post(s.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({ "user_id": user_id, "name": "Test User", "password": password, "roles": roles }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let token = login(s, &user_id, &password).await;
    (user_id, password, token)
}

/// Whether `needle` occurs in `hay`.
pub fn bytes_contain(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every file under `dir`, concatenated (an agent's data directory).
pub fn dir_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                all.extend(dir_bytes(&p));
            } else if let Ok(b) = std::fs::read(&p) {
                all.extend(b);
            }
        }
    }
    all
}

/// Sends a request and returns (status, JSON body or Null).
pub async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}
