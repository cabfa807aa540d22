//! Helpers of the execution-engine tests: real `haechi agent` processes with their own data
//! directories and node ids, approved tasks, and waiting on task instances.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;

/// Server options for these tests: fast heartbeats and LOST detection, seconds in schedules,
/// self-approval (most tests approve their own tasks), no local agent (tests start their own).
pub fn exec_opts() -> Opts {
    Opts::default()
        .arg("--no-local-agent")
        .env("HAECHI_AGENTS__HEARTBEAT_SECS", "1")
        .env("HAECHI_AGENTS__MISSED_HEARTBEATS", "2")
        .env("HAECHI_AGENTS__LOST_GRACE_SECS", "2")
        .env("HAECHI_TASKS__SCHEDULE_SECONDS", "true")
        .env("HAECHI_TASKS__ALLOW_SELF_APPROVAL", "true")
}

/// A test binary's shared environment (a server and its agents), made once on a runtime of its
/// own so that it outlives the runtime of the test that happens to ask first.
pub fn shared_env<T, F, Fut>(cell: &'static std::sync::OnceLock<T>, make: F) -> &'static T
where
    T: Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    cell.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(make())
        })
        .join()
        .unwrap()
    })
}

/// A running `haechi agent`.
pub struct Agent {
    pub node_id: String,
    pub dir: PathBuf,
    server: String,
    fingerprint: Option<String>,
    child: Option<Child>,
    stdin: Option<std::process::ChildStdin>,
    /// More command-line arguments of `haechi agent` (`--label role=was`).
    extra: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Agent {
    /// Enrols and starts an agent for `node_id`, and waits until the server sees it connected.
    pub async fn start(s: &Server, node_id: &str) -> Agent {
        Agent::start_at(s, node_id, &s.base).await
    }

    /// Like [`Agent::start`], dialling `url` (a relay in front of the server).
    pub async fn start_at(s: &Server, node_id: &str, url: &str) -> Agent {
        Agent::start_full(s, node_id, url, &[]).await
    }

    /// Like [`Agent::start`], with more arguments of `haechi agent` (`["--label", "k=v"]`).
    pub async fn start_with_args(s: &Server, node_id: &str, extra: &[&str]) -> Agent {
        Agent::start_full(s, node_id, &s.base, extra).await
    }

    async fn start_full(s: &Server, node_id: &str, url: &str, extra: &[&str]) -> Agent {
        let admin = admin_token(s).await;
        let token = enrollment_token(s, &admin, json!({})).await;
        let tmp = tempfile::tempdir().unwrap();
        let mut a = Agent {
            node_id: node_id.to_owned(),
            dir: tmp.path().join("agent"),
            server: url.to_owned(),
            fingerprint: s.fingerprint.clone(),
            child: None,
            stdin: None,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            _tmp: tmp,
        };
        a.spawn(Some(&token));
        a.wait_connected(s).await;
        a
    }

    fn spawn(&mut self, token: Option<&str>) {
        let mut cmd = Command::new(bin());
        cmd.arg("agent")
            .arg("--server")
            .arg(&self.server)
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--node-id")
            .arg(&self.node_id)
            .env_remove("HAECHI_CONFIG")
            .env("HAECHI_LOG_LEVEL", "warn")
            .arg("--stop-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        match &self.fingerprint {
            Some(fp) => cmd.arg("--server-fingerprint").arg(fp),
            None => cmd.arg("--insecure-skip-verify"),
        };
        if let Some(t) = token {
            cmd.arg("--enroll-token").arg(t);
        }
        cmd.args(&self.extra);
        let mut child = cmd.spawn().expect("spawn haechi agent");
        self.stdin = child.stdin.take();
        self.child = Some(child);
    }

    /// Waits until the server reports the node connected.
    pub async fn wait_connected(&self, s: &Server) {
        wait_node_connected(s, &self.node_id, Duration::from_secs(30)).await;
    }

    /// Kills the agent process with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the agent again on its data directory (with its stored credential, no token),
    /// against `s` (which may be a restarted server on another port).
    pub fn restart(&mut self, s: &Server) {
        self.kill9();
        self.server = s.base.clone();
        self.fingerprint = s.fingerprint.clone();
        self.spawn(None);
    }

    /// Whether the process has exited, and how.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until the server reports `node_id` connected.
pub async fn wait_node_connected(s: &Server, node_id: &str, within: Duration) {
    let admin = admin_token(s).await;
    let deadline = Instant::now() + within;
    loop {
        let (st, body) = call(
            client()
                .get(s.url(&format!("/api/v1/nodes/{node_id}")))
                .bearer_auth(&admin),
        )
        .await;
        if st == 200 && body["connected"] == true {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node_id} did not connect: {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Server options like [`exec_opts`], with the server's own local agent as node `node_id`.
pub fn local_agent_opts(node_id: &str) -> Opts {
    Opts::default()
        .env("HAECHI_AGENTS__LOCAL_NODE_ID", node_id)
        .env("HAECHI_AGENTS__HEARTBEAT_SECS", "1")
        .env("HAECHI_TASKS__ALLOW_SELF_APPROVAL", "true")
}

/// Runs `script` as `os_user` on `node` with `args` and waits for the end; returns the node's
/// execution (with `out` and `err` decoded into `outText`/`errText`).
pub async fn run_once(s: &Server, node: &str, os_user: &str, script: &str, args: &[&str]) -> Value {
    let t = admin_token(s).await;
    let id = unique("once");
    approved_task(s, &t, &id, script, json!({ "osUser": os_user })).await;
    let no = start(s, &t, &id, &[node], args).await;
    wait_end(s, &t, no, Duration::from_secs(30)).await;
    let mut n = node_detail(s, &t, no, node, None).await;
    n["outText"] = json!(String::from_utf8_lossy(&b64(&n["encbase64out"])));
    n["errText"] = json!(String::from_utf8_lossy(&b64(&n["encbase64err"])));
    n
}

/// Makes an enrolment token with the body `extra` (`{}` for the defaults).
pub async fn enrollment_token(s: &Server, t: &str, extra: Value) -> String {
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/agents/enrollment-tokens"))
            .bearer_auth(t)
            .json(&extra),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// Enrols `node` with `token` through the API (as an agent would).
pub async fn enroll_as(s: &Server, token: &str, node: &str) -> (u16, Value) {
    call(
        client()
            .post(s.url("/api/v1/agents/enroll"))
            .json(&json!({ "token": token, "nodeId": node, "hostname": "h" })),
    )
    .await
}

/// A TCP relay in front of a server, so agents keep one address while the server behind it
/// is restarted on another port.
pub struct Relay {
    pub url: String,
    target: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Relay {
    pub async fn start(target: &Server) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let target_addr = std::sync::Arc::new(std::sync::Mutex::new(authority(&target.base)));
        let t = target_addr.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = t.lock().unwrap().clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay {
            url,
            target: target_addr,
        }
    }

    pub fn point_at(&self, s: &Server) {
        *self.target.lock().unwrap() = authority(&s.base);
    }
}

fn authority(base: &str) -> String {
    base.split("://")
        .nth(1)
        .unwrap_or(base)
        .trim_end_matches('/')
        .to_owned()
}

/// A unique node id.
pub fn node_name(prefix: &str) -> String {
    unique(prefix)
}

/// Creates a task (merging `extra` into a default definition) and gets it approved.
pub async fn approved_task(s: &Server, token: &str, id: &str, script: &str, extra: Value) -> Value {
    let mut spec = json!({ "id": id, "scriptName": format!("{id}.sh"), "script": script, "osUser": current_user() });
    if let (Some(m), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/tasks"))
            .bearer_auth(token)
            .json(&spec),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    approve(s, token, id).await
}

/// Requests and approves a task (the server allows self-approval in these tests).
pub async fn approve(s: &Server, token: &str, id: &str) -> Value {
    let mut revision = Value::Null;
    for action in ["request", "approve"] {
        let (st, body) = call(
            client()
                .post(s.url(&format!("/api/v1/tasks/{id}/approval")))
                .bearer_auth(token)
                .json(&json!({ "action": action, "revisionNo": revision })),
        )
        .await;
        assert_eq!(st, 200, "{action} {id}: {body}");
        if action == "approve" {
            return body;
        }
        revision = body["revisionNo"].clone();
    }
    unreachable!()
}

/// The OS user the tests run as.
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn running_as_root() -> bool {
    current_user() == "root"
}

/// Starts an instance through OPMATE; returns its number.
pub async fn start(s: &Server, token: &str, task: &str, nodes: &[&str], args: &[&str]) -> i64 {
    let (st, body) = call(
        client()
            .post(s.url(&format!("/opmate/task/{task}/instance")))
            .query(&[("auth", token)])
            .json(&json!({ "nodeIdList": nodes, "arguments": args })),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["resultCode"], "0000", "{body}");
    body["taskInstanceNo"].as_i64().unwrap()
}

/// Waits until the instance has ended; returns its admin detail.
pub async fn wait_end(s: &Server, token: &str, no: i64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (st, body) = call(
            client()
                .get(s.url(&format!("/api/v1/task-instances/{no}")))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        if !body["instance"]["endAt"].is_null() {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "instance {no} did not end: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a node's latest execution has this status.
pub async fn wait_status(
    s: &Server,
    token: &str,
    no: i64,
    node: &str,
    status: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let e = node_detail(s, token, no, node, None).await;
        if e["status"] == status {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} of {no} never reached {status}: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /opmate/taskinstance/{no}/node/{node}` → the one `insNodeList` item.
pub async fn node_detail(
    s: &Server,
    token: &str,
    no: i64,
    node: &str,
    exec_no: Option<i64>,
) -> Value {
    let mut req = client()
        .get(s.url(&format!("/opmate/taskinstance/{no}/node/{node}")))
        .query(&[("auth", token)]);
    if let Some(n) = exec_no {
        req = req.query(&[("execNo", n.to_string())]);
    }
    let (st, body) = call(req).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["resultCode"], "0000");
    body["insNodeList"][0].clone()
}

pub fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or(""))
        .unwrap()
}
