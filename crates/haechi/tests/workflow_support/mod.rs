//! Helpers of the workflow tests: creating workflows, running them through MDRM, waiting on
//! them, and a small HTTP endpoint on 127.0.0.1 that counts what http steps send it.
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// Server options for workflow tests: no local agent (task tests start their own agents).
pub fn wf_opts() -> Opts {
    Opts::default().arg("--no-local-agent")
}

/// Creates a workflow; returns its id.
pub async fn create_wf(s: &Server, token: &str, def: Value) -> String {
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/workflows"))
            .bearer_auth(token)
            .json(&def),
    )
    .await;
    assert_eq!(st, 201, "create workflow: {body}");
    assert_eq!(body["version"], 1, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A definition with a unique name.
pub fn def(group: &str, steps: Value) -> Value {
    json!({ "name": unique("wf"), "group": group, "steps": steps })
}

/// Runs a workflow through MDRM (form body, as in the seed's curl example); returns the id.
pub async fn execute(s: &Server, token: &str, wf_id: &str) -> String {
    let (st, body) = call(
        client()
            .post(s.url("/services/workflow/execute"))
            .bearer_auth(token)
            .form(&[("wf_id", wf_id), ("sync", "false")]),
    )
    .await;
    assert_eq!(st, 200, "execute: {body}");
    assert_eq!(body["result"], "success", "{body}");
    body["execution_id"].as_str().unwrap().to_owned()
}

/// Runs a workflow with parameters (JSON body).
pub async fn execute_with(s: &Server, token: &str, wf_id: &str, params: Value) -> (u16, Value) {
    call(
        client()
            .post(s.url("/services/workflow/execute"))
            .bearer_auth(token)
            .json(&json!({ "wf_id": wf_id, "params": params })),
    )
    .await
}

/// `GET /services/workflow/status`.
pub async fn status(s: &Server, token: &str, exec_id: &str) -> Value {
    let (st, body) = call(
        client()
            .get(s.url("/services/workflow/status"))
            .bearer_auth(token)
            .query(&[("execution_id", exec_id)]),
    )
    .await;
    assert_eq!(st, 200, "status: {body}");
    body
}

/// `GET /api/v1/executions/{id}`.
pub async fn execution(s: &Server, token: &str, exec_id: &str) -> Value {
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/executions/{exec_id}")))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(st, 200, "execution: {body}");
    body
}

/// `POST /services/workflow/control`.
pub async fn control(s: &Server, token: &str, exec_id: &str, action: &str) -> (u16, Value) {
    call(
        client()
            .post(s.url("/services/workflow/control"))
            .bearer_auth(token)
            .form(&[("execution_id", exec_id), ("action", action)]),
    )
    .await
}

/// Waits until the execution's MDRM status is `want`; returns the execution view.
pub async fn wait_for(
    s: &Server,
    token: &str,
    exec_id: &str,
    want: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let e = execution(s, token, exec_id).await;
        if e["status"] == want {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{exec_id} did not reach {want} within {within:?}: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `pred` holds on the execution view.
pub async fn wait_until(
    s: &Server,
    token: &str,
    exec_id: &str,
    what: &str,
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let e = execution(s, token, exec_id).await;
        if pred(&e) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{exec_id}: {what} did not happen within {within:?}: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The named step of an execution view.
pub fn step<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {e}"))
}

/// The whole transition log of an execution.
pub async fn events(s: &Server, token: &str, exec_id: &str) -> Vec<Value> {
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/executions/{exec_id}/events")))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

/// One request an http step sent.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the hook answers one request: status and delay.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
}

struct HookState {
    seen: Vec<Seen>,
    script: VecDeque<Reply>,
    default: Reply,
}

/// An HTTP endpoint on 127.0.0.1 that records every request and answers by a script.
#[derive(Clone)]
pub struct Hook {
    pub addr: SocketAddr,
    state: Arc<Mutex<HookState>>,
    accepted: Arc<AtomicUsize>,
}

impl Hook {
    /// Starts the endpoint on its own thread (it outlives the test's runtime calls).
    pub fn start() -> Hook {
        Hook::start_on("127.0.0.1")
    }

    /// Starts the endpoint on another loopback address (`127.0.0.2`, ...).
    pub fn start_on(ip: &str) -> Hook {
        let std_listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(HookState {
            seen: Vec::new(),
            script: VecDeque::new(),
            default: Reply {
                status: 200,
                delay: Duration::ZERO,
            },
        }));
        let st = state.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                while let Ok((sock, _)) = listener.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(sock, st.clone()));
                }
            });
        });
        Hook {
            addr,
            state,
            accepted,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests with these replies, in order, then with the default.
    pub fn script(&self, replies: &[Reply]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(replies.iter().copied());
    }

    pub fn set_default(&self, r: Reply) {
        self.state.lock().unwrap().default = r;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Distinct `Idempotency-Key`s received: the effects an idempotent endpoint performed.
    pub fn effects(&self) -> HashSet<String> {
        self.seen()
            .iter()
            .filter_map(|s| s.header("idempotency-key").map(str::to_owned))
            .collect()
    }

    pub async fn wait_requests(&self, n: usize, within: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the hook got {} of {n} requests",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(mut sock: tokio::net::TcpStream, state: Arc<Mutex<HookState>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let reply = {
        let mut st = state.lock().unwrap();
        st.seen.push(Seen {
            method,
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
        });
        st.script.pop_front().unwrap_or(st.default)
    };
    tokio::time::sleep(reply.delay).await;
    let text = format!("{{\"status\":{}}}", reply.status);
    let out = format!(
        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        reply.status,
        text.len()
    );
    let _ = sock.write_all(out.as_bytes()).await;
    let _ = sock.shutdown().await;
}

pub fn ok(delay_ms: u64) -> Reply {
    Reply {
        status: 200,
        delay: Duration::from_millis(delay_ms),
    }
}

pub fn status_reply(status: u16) -> Reply {
    Reply {
        status,
        delay: Duration::ZERO,
    }
}

/// An admin token and an operator's token (the role MDRM's API account usually has).
pub async fn tokens(s: &Server) -> (String, String) {
    let admin = admin_token(s).await;
    let (_, _, operator) = user_with_roles(s, &["Workflow Operator"]).await;
    (admin, operator)
}

/// A role with these permissions; returns its name.
pub async fn role_with(s: &Server, admin: &str, permissions: &[&str]) -> String {
    let name = unique("role");
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(admin)
            .json(&json!({ "name": name, "permissions": permissions })),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    name
}

/// Logs the CLI in as admin; returns the session file (inside `dir`).
pub fn cli_login(s: &Server, dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let session = dir.join("session.json");
    let mut child = std::process::Command::new(bin())
        .args([
            "login",
            "--server",
            &s.base,
            "--user",
            "admin",
            "--password-stdin",
            "--insecure",
        ])
        .env("HAECHI_SESSION", &session)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    session
}

/// Runs `haechi wf ARGS` with the session; returns (exit code, stdout, stderr).
pub async fn cli_wf(session: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let session = session.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin())
            .arg("wf")
            .args(&args)
            .env("HAECHI_SESSION", &session)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An endpoint on `ip` that answers every request 200 with a body that never ends (chunked,
/// 64 KiB chunks, until the client goes away).
pub fn endless_body(ip: &str) -> SocketAddr {
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut sock in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut head = [0u8; 4096];
                let _ = sock.read(&mut head);
                let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                let mut out =
                    sock.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                while out.is_ok() {
                    out = sock.write_all(chunk.as_bytes());
                }
            });
        }
    });
    addr
}
