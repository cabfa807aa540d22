//! Several servers on one PostgreSQL, proven (issue 25): work stored by one server starts at
//! once on an agent connected to another (and its cancel reaches it), a token revoked or a
//! user disabled on one server is refused on another at once, a policy locked on one server
//! refuses the next statement of a session on another server's gateway, `env_from_vault`
//! values survive the handoff, a credential list kept by one server shows a change made on
//! another at once, an agent given several servers fails over with an execution
//! running (output complete, result `S`), a PostgreSQL restart with runs in flight (nothing
//! lost or doubled, 503 and not a hang while it is away), and a schedule fires once with three
//! servers.
//!
//! Every test needs PostgreSQL, also on the SQLite pass of the suite: the machine's (the
//! `HAECHI_TEST_DATABASE_URL` of the PostgreSQL pass, else `HAECHI_CI_PG_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`), in a throwaway database of each test's own; the
//! restart test starts a private PostgreSQL cluster of its own (initdb/pg_ctl of the machine's
//! PostgreSQL), never restarting the shared one. Under `CI=true` a missing PostgreSQL fails
//! the tests.

mod common;
mod exec_support;
mod gateway_support;
mod workflow_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use exec_support::*;
use gateway_support::{free_addr, gateway_port, grant_pg_account, run, PgGrant};
use serde_json::{json, Value};
use workflow_support::*;

const T: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Replaces the database of a PostgreSQL URL.
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

static DBS: AtomicU32 = AtomicU32::new(0);

/// A throwaway database on the machine's PostgreSQL, dropped when the test ends (declare it
/// first, so that it outlives the servers on it).
struct SharedDb {
    admin: String,
    name: String,
    url: String,
}

impl SharedDb {
    /// `None` (the test is skipped, saying so) when PostgreSQL cannot be reached outside CI.
    fn create() -> Option<SharedDb> {
        let admin = pg_admin_url()
            .or_else(|| std::env::var("HAECHI_CI_PG_URL").ok())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let (ok, out) = run(Command::new("psql").args([&admin, "-X", "-qtAc", "SELECT 1"]));
        if !ok {
            assert!(
                !required(),
                "these tests need PostgreSQL (several servers share one); {admin} is not reachable: {out}"
            );
            eprintln!("skipped: PostgreSQL is not reachable at {admin}: {out}");
            return None;
        }
        let run_id = std::env::var("HAECHI_TEST_RUN_ID").unwrap_or_else(|_| "local".into());
        let name = format!(
            "haechi_cl_{}_{}_{}",
            run_id
                .to_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            std::process::id(),
            DBS.fetch_add(1, Ordering::Relaxed)
        );
        let (ok, out) = run(Command::new("psql").args([
            &admin,
            "-X",
            "-qtAc",
            &format!("CREATE DATABASE {name}"),
        ]));
        assert!(ok, "CREATE DATABASE {name}: {out}");
        let url = with_database(&admin, &name);
        Some(SharedDb { admin, name, url })
    }
}

impl Drop for SharedDb {
    fn drop(&mut self) {
        let _ = run(Command::new("psql").args([
            &self.admin,
            "-X",
            "-qtAc",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ]));
    }
}

/// A server on the database at `url`, with a data directory of its own.
struct Node {
    server: Server,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Node {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

fn node_on(url: &str, mut opts: Opts) -> Node {
    let dir = tempfile::tempdir().unwrap();
    opts.reuse = Some((dir.path().join("data"), Db::Postgres(url.to_owned())));
    Node {
        server: Server::start_with(opts),
        _dir: dir,
    }
}

/// Options for another server on the store of `first`, given `first`'s vault key (Express
/// mode: every server needs the key to unseal itself).
fn same_vault(first: &Server, opts: Opts) -> Opts {
    let key = std::fs::read_to_string(first.data_dir.join("vault.key"))
        .expect("the first server's Express key file");
    opts.env("HAECHI_VAULT_MASTER_KEY", key.trim())
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test]
async fn work_stored_on_one_server_starts_at_once_on_an_agent_connected_to_another() {
    let Some(db) = SharedDb::create() else { return };
    let a = node_on(&db.url, exec_opts());
    let b = node_on(&db.url, exec_opts());
    let admin = admin_token(&a).await;
    let node = node_name("xs");
    let _agent = Agent::start(&b, &node).await;
    let task = unique("xs");
    approved_task(&a, &admin, &task, "#!/bin/sh\necho started\n", json!({})).await;

    // POST on A → the agent on B reports the script started. The monitor's sweep (every 2 s,
    // for runs waiting 3 s) would take 3 s or more: anything under 2 s went by the signal.
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let t0 = now_ms();
        let no = start(&a, &admin, &task, &[&node], &[]).await;
        wait_end(&a, &admin, no, T).await;
        let started: i64 = a
            .sql(&format!(
                "SELECT start_at FROM node_executions WHERE instance_no = {no}"
            ))
            .parse()
            .unwrap();
        latencies.push(started - t0);
        let n = node_detail(&a, &admin, no, &node, None).await;
        assert_eq!(n["resultCd"], "S", "{n}");
    }
    latencies.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "cross-server start (POST on A → script started on B's agent), 20 runs: p50 {p50} ms, p99 {p99} ms, all {latencies:?}"
    );
    assert!(p50 < 1000, "p50 {p50} ms: {latencies:?}");
    assert!(
        p99 < 2000,
        "a start waited for the sweep, not the signal: {latencies:?}"
    );

    // A cancel made on A reaches the run held by B's agent.
    let long = unique("xs-long");
    approved_task(
        &a,
        &admin,
        &long,
        "#!/bin/sh\necho running\nsleep 60\n",
        json!({}),
    )
    .await;
    let no = start(&a, &admin, &long, &[&node], &[]).await;
    wait_status(&a, &admin, no, &node, "RUN", T).await;
    let t = Instant::now();
    let (st, body) = call(
        client()
            .post(a.url(&format!("/api/v1/task-instances/{no}/cancel")))
            .bearer_auth(&admin)
            .json(&json!({})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    wait_end(&a, &admin, no, T).await;
    let took = t.elapsed();
    println!(
        "cross-server cancel (POST on A → B's agent killed the script and reported): {took:?}"
    );
    let n = node_detail(&a, &admin, no, &node, None).await;
    assert_eq!(n["status"], "CANCEL", "{n}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    b.server.finish().await;
    a.server.finish().await;
    drop(db);
}

/// `GET /api/v1/me` with `token`: the status.
async fn me(s: &Server, token: &str) -> u16 {
    call(client().get(s.url("/api/v1/me")).bearer_auth(token))
        .await
        .0
}

/// Asks `s` with `token` until it is refused; how long that took.
async fn refused_within(s: &Server, token: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let st = me(s, token).await;
        if st == 401 || st == 403 {
            return t.elapsed();
        }
        assert_eq!(st, 200);
        assert!(t.elapsed() < limit, "still accepted after {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_token_revoked_or_a_user_disabled_on_one_server_is_refused_on_another_at_once() {
    let Some(db) = SharedDb::create() else { return };
    // A cache of 10 minutes: without the signal, B would accept the token for that long.
    let opts = exec_opts().env("HAECHI_IDENTITY__TOKEN_CACHE_SECS", "600");
    let a = node_on(&db.url, opts.clone());
    let b = node_on(&db.url, opts);
    let admin = admin_token(&a).await;

    // Logout on A.
    let (_, _, token) = user_with_roles(&a, &["Auditor"]).await;
    assert_eq!(me(&b, &token).await, 200, "B caches the token");
    let (st, _) = call(
        client()
            .delete(a.url("/api/v1/tokens/current"))
            .bearer_auth(&token),
    )
    .await;
    assert!(st == 200 || st == 204, "{st}");
    let first = me(&b, &token).await;
    let took = refused_within(&b, &token, Duration::from_secs(5)).await;
    println!("logout on A refused on B after {took:?} (first request after the logout: {first})");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Disabling the user on A.
    let (user, _, token) = user_with_roles(&a, &["Auditor"]).await;
    assert_eq!(me(&b, &token).await, 200);
    let (st, body) = call(
        client()
            .post(a.url(&format!("/api/v1/users/{}/disable", enc(&user))))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let took = refused_within(&b, &token, Duration::from_secs(5)).await;
    println!("user disabled on A refused on B after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // One of several tokens revoked on A: the others still work on B.
    let (user, password, token) = user_with_roles(&a, &["Auditor"]).await;
    let other = login(&b, &user, &password).await;
    assert_eq!(me(&b, &token).await, 200);
    let (_, mine) = call(client().get(a.url("/api/v1/tokens")).bearer_auth(&other)).await;
    let list = mine["tokens"]
        .as_array()
        .or_else(|| mine.as_array())
        .cloned()
        .unwrap_or_default();
    let victim = list
        .iter()
        .find(|t| t["current"] != true)
        .and_then(|t| t["id"].as_i64())
        .unwrap_or_else(|| panic!("no other token in {mine}"));
    let (st, body) = call(
        client()
            .delete(a.url(&format!("/api/v1/tokens/{victim}")))
            .bearer_auth(&other),
    )
    .await;
    assert!(st == 200 || st == 204, "{st} {body}");
    let took = refused_within(&b, &token, Duration::from_secs(5)).await;
    println!("token revoked on A refused on B after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(me(&b, &other).await, 200, "the other token still works");
    b.server.finish().await;
    a.server.finish().await;
    drop(db);
}

/// `(id, name)` of each credential `token` lists on `s`, asked twice (the second answer is the
/// one the server kept): both answers agree.
async fn credential_names(s: &Server, token: &str) -> Vec<(i64, String)> {
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (st, v) = call(
            client()
                .get(s.url("/v2/credentialvault/credentials"))
                .header("X-Authorization", token),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        answers.push(
            v["list"]
                .as_array()
                .unwrap_or_else(|| panic!("no list in {v}"))
                .iter()
                .map(|c| {
                    (
                        c["id"].as_i64().unwrap(),
                        c["name"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(answers[0], answers[1]);
    answers.pop().unwrap()
}

#[tokio::test]
async fn a_credential_list_kept_on_one_server_shows_a_change_made_on_another_at_once() {
    let Some(db) = SharedDb::create() else { return };
    let a = node_on(&db.url, exec_opts());
    let b = node_on(&db.url, exec_opts());
    let (_, _, token) = user_with_roles(&a, &["Vault User"]).await;
    assert_eq!(
        credential_names(&b, &token).await,
        vec![],
        "B keeps an empty list"
    );

    let name = unique("cred");
    let (st, c) = call(
        client()
            .post(a.url("/v2/credentialvault/credentials"))
            .header("X-Authorization", &token)
            .json(&json!({"name": name, "attributes": [{"name": "password", "userProvided": false, "masked": true}]})),
    )
    .await;
    assert_eq!(st, 201, "{c}");
    let cid = c["id"].as_i64().unwrap();
    assert_eq!(
        credential_names(&b, &token).await,
        vec![(cid, name)],
        "created on A"
    );

    let renamed = unique("renamed");
    let (st, v) = call(
        client()
            .put(a.url(&format!("/v2/credentialvault/credentials/{cid}")))
            .header("X-Authorization", &token)
            .json(&json!({"version": 0, "name": renamed})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        credential_names(&b, &token).await,
        vec![(cid, renamed)],
        "renamed on A"
    );

    let (st, v) = call(
        client()
            .delete(a.url(&format!("/v2/credentialvault/credentials/{cid}")))
            .header("X-Authorization", &token),
    )
    .await;
    assert_eq!(st, 204, "{v}");
    assert_eq!(credential_names(&b, &token).await, vec![], "deleted on A");
    b.server.finish().await;
    a.server.finish().await;
    drop(db);
}

#[tokio::test]
async fn a_policy_locked_on_one_server_refuses_the_next_statement_on_another_servers_gateway() {
    let Some(db) = SharedDb::create() else { return };
    // The poll of the policy version is the safety net; at 10 minutes it cannot be what
    // makes the lock apply.
    let opts = exec_opts().env("HAECHI_GATEWAY_POLICY_POLL_SECS", "600");
    let a = node_on(&db.url, opts.clone());
    let b = node_on(
        &db.url,
        same_vault(&a, opts.arg("--pg-gateway").arg(&free_addr())),
    );
    let gw = gateway_port(&b, "PostgreSQL gateway on");
    let admin = admin_token(&a).await;

    // A role on the machine's PostgreSQL (in the test's own database), a credential holding
    // its password, a target and account, a user and an unlocked policy.
    let role = unique("clr").to_lowercase();
    let db_password = format!("Db-{}", unique("pw"));
    let (ok, out) = run(Command::new("psql").args([
        &db.admin,
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-qtAc",
        &format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} LOGIN PASSWORD '{db_password}'"),
    ]));
    assert!(ok, "{out}");
    let PgGrant {
        user,
        password,
        target,
    } = grant_pg_account(&a, &admin, &role, &db_password, &db.name, &["SELECT"]).await;

    // A session through B's gateway.
    let conn =
        format!("host=127.0.0.1 port={gw} user={user}@{role} dbname={target} sslmode=require");
    let mut child = Command::new("psql")
        .arg(conn)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=0"])
        .env("PGPASSWORD", &password)
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

    // Locked on A; the session on B's gateway is refused.
    let (st, body) = call(
        client()
            .put(a.url(&format!(
                "/dbsafer/api/v1/policy/custom/access-policies/lock?userId={}&serverPort=5432",
                enc(&user)
            )))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    // A answers the lock only once B's gateway confirmed it: the very next statement on B's
    // gateway is refused, not one a signal later.
    let answer = ask("SELECT 'two';");
    assert!(
        answer.contains("is locked"),
        "the first statement on B's gateway after the lock was answered on A: {answer}"
    );

    // Unlocked on A: the same session goes on.
    let (st, _) = call(
        client()
            .put(a.url(&format!(
                "/dbsafer/api/v1/policy/custom/access-policies/unlock?userId={}&serverPort=5432",
                enc(&user)
            )))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        ask("SELECT 'three';"),
        "three",
        "the first statement on B's gateway after the unlock was answered on A"
    );
    drop(stdin);
    let _ = child.wait();
    b.server.finish().await;
    a.server.finish().await;
    let _ = run(Command::new("psql").args([
        &db.admin,
        "-X",
        "-qtAc",
        &format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE); DROP ROLE IF EXISTS {role}",
            db.name
        ),
    ]));
    drop(db);
}

#[tokio::test]
async fn env_from_vault_values_are_read_again_by_the_server_the_agent_is_connected_to() {
    let Some(db) = SharedDb::create() else { return };
    let a = node_on(&db.url, exec_opts());
    let b = node_on(&db.url, same_vault(&a, exec_opts()));
    let admin = admin_token(&a).await;
    let node = node_name("xv");
    let agent = Agent::start(&b, &node).await;
    let manage = role_with(&a, &admin, &["workflow.manage"]).await;
    let (user_id, _, token) =
        user_with_roles(&a, &["Workflow Operator", "Vault User", &manage]).await;
    let secret = format!("Numbat-{}-pw", unique(""));
    let (st, c) = call(
        client()
            .post(a.url("/v2/credentialvault/credentials"))
            .bearer_auth(&token)
            .json(&json!({ "name": unique("cred"), "description": "db",
                "attributes": [{ "name": "password", "userProvided": false, "masked": true }] })),
    )
    .await;
    assert_eq!(st, 201, "{c}");
    let cid = c["id"].as_i64().unwrap();
    let attr = c["attributes"][0]["id"].as_i64().unwrap();
    let (st, v) = call(
        client()
            .post(a.url(&format!(
                "/v2/credentialvault/credentials/{cid}/attributevalues"
            )))
            .bearer_auth(&token)
            .json(&json!([{ "credentialAttributeId": attr, "value": secret }])),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("got.txt");
    let task = unique("xv");
    approved_task(
        &a,
        &admin,
        &task,
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$DB_PASSWORD\" >> {}\n",
            got.display()
        ),
        json!({}),
    )
    .await;
    let id = create_wf(
        &a,
        &token,
        def(
            "vault",
            json!([{ "name": "use", "type": "task", "task": task, "nodes": [node],
                     "env_from_vault": { "DB_PASSWORD": { "credentialId": cid, "attribute": "password" } } }]),
        ),
    )
    .await;
    // Started through A (its driver reads the value); the agent is on B, which reads it
    // again as the starter before it sends the run.
    let exec_id = execute(&a, &token, &id).await;
    let e = wait_for(&a, &token, &exec_id, "COMPLETED", T).await;
    assert_eq!(step(&e, "use")["attempts"], 1, "{e}");
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        format!("{secret}\n")
    );
    assert!(b.logs().contains("read a run's vault environment again"));
    // B's read is the vault's, audited as the starter's.
    let (_, _, auditor) = user_with_roles(&a, &["Auditor"]).await;
    let (st, body) = call(
        client()
            .get(a.url(&format!(
                "/api/v1/audit?limit=1000&action=credential.value.read&user={user_id}"
            )))
            .bearer_auth(&auditor),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert!(body["events"].as_array().unwrap().len() >= 2, "{body}");
    assert!(!body.to_string().contains(&secret));
    // Never stored, never logged.
    assert!(!bytes_contain(&a.store_bytes(), &secret), "in the store");
    assert!(!a.logs().contains(&secret) && !b.logs().contains(&secret));
    assert!(!bytes_contain(&dir_bytes(&agent.dir), &secret));
    b.server.finish().await;
    a.server.finish().await;
    drop(db);
}

/// A `haechi agent` given several servers.
struct FailoverAgent {
    child: std::process::Child,
    _stdin: std::process::ChildStdin,
    _tmp: tempfile::TempDir,
}

impl Drop for FailoverAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn failover_agent(servers: &[&Server], node_id: &str) -> FailoverAgent {
    let admin = admin_token(servers[0]).await;
    let token = enrollment_token(servers[0], &admin, json!({})).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("agent")
        .arg("--data-dir")
        .arg(tmp.path().join("agent"))
        .arg("--node-id")
        .arg(node_id)
        .arg("--enroll-token")
        .arg(&token)
        .arg("--stop-on-stdin-eof")
        .env_remove("HAECHI_CONFIG")
        .env("HAECHI_LOG_LEVEL", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for s in servers {
        cmd.arg("--server").arg(&s.base);
        cmd.arg("--server-fingerprint")
            .arg(s.fingerprint.as_ref().expect("https server"));
    }
    let mut child = cmd.spawn().expect("spawn haechi agent");
    let stdin = child.stdin.take().unwrap();
    wait_node_connected(servers[0], node_id, T).await;
    FailoverAgent {
        child,
        _stdin: stdin,
        _tmp: tmp,
    }
}

#[tokio::test]
async fn an_agent_fails_over_to_another_server_with_an_execution_running() {
    let Some(db) = SharedDb::create() else { return };
    let mut a = node_on(&db.url, exec_opts());
    let b = node_on(&db.url, exec_opts());
    let admin = admin_token(&b).await;
    let node = node_name("xf");
    let _agent = failover_agent(&[&a, &b], &node).await;
    let task = unique("xf");
    // 40 numbered lines over about 4 s.
    let script = "#!/bin/sh\ni=1\nwhile [ $i -le 40 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.1; done\necho done >&2\n";
    approved_task(&b, &admin, &task, script, json!({})).await;
    let no = start(&b, &admin, &task, &[&node], &[]).await;
    wait_status(&b, &admin, no, &node, "RUN", T).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The server the agent is connected to dies; the agent goes to B with the run going on.
    let t = Instant::now();
    a.kill9();
    wait_node_connected(&b, &node, Duration::from_secs(10)).await;
    println!(
        "agent connected to the other server {:?} after kill -9",
        t.elapsed()
    );
    wait_end(&b, &admin, no, T).await;
    let n = node_detail(&b, &admin, no, &node, None).await;
    assert_eq!(n["status"], "END", "{n}");
    assert_eq!(n["resultCd"], "S", "{n}");
    let out = String::from_utf8(b64(&n["encbase64out"])).unwrap();
    let want: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    assert_eq!(out, want, "the output is complete, once");
    assert_eq!(
        String::from_utf8(b64(&n["encbase64err"])).unwrap(),
        "done\n"
    );
    // Not marked LOST at any point: one execution, execNo 1.
    let execs = b.sql(&format!(
        "SELECT COUNT(*), MAX(exec_no) FROM node_executions WHERE instance_no = {no}"
    ));
    assert_eq!(execs, "1|1");
    // And the agent keeps working on B.
    let no = start(&b, &admin, &task, &[&node], &[]).await;
    wait_end(&b, &admin, no, T).await;
    assert_eq!(
        node_detail(&b, &admin, no, &node, None).await["resultCd"],
        "S"
    );
    b.server.finish().await;
    drop(a);
    drop(db);
}

/// A private PostgreSQL cluster (initdb in a temporary directory), which the test may stop
/// and start; the machine's shared PostgreSQL is never restarted.
struct PrivatePg {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePg {
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

    fn start() -> Option<PrivatePg> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()?;
        let as_postgres = run(Command::new("id").arg("-u")).1.trim() == "0";
        let dir = tempfile::tempdir().unwrap();
        let port = free_addr().rsplit(':').next().unwrap().parse().unwrap();
        let pg = PrivatePg {
            dir,
            bin,
            port,
            as_postgres,
        };
        if as_postgres {
            let (ok, out) = run(Command::new("chown").arg("postgres").arg(pg.dir.path()));
            assert!(ok, "{out}");
        }
        let data = pg.dir.path().join("data");
        let (ok, out) = run(pg.command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]));
        assert!(ok, "initdb: {out}");
        pg.ctl("start");
        Some(pg)
    }

    fn ctl(&self, what: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(self.dir.path().join("data"));
        if what == "stop" {
            cmd.args(["-m", "fast", "-w", "stop"]);
        } else {
            cmd.args(["-o", &opts, "-l"])
                .arg(self.dir.path().join("log"))
                .args(["-w", "start"]);
        }
        let (ok, out) = run(&mut cmd);
        assert!(ok, "pg_ctl {what}: {out}");
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]));
    }
}

/// `GET path` until it answers 200, tolerating the refusals of a database outage.
async fn get_ok(s: &Server, token: &str, path: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = client().get(s.url(path)).bearer_auth(token).send().await;
        if let Ok(r) = r {
            if r.status() == 200 {
                return r.json().await.unwrap();
            }
        }
        assert!(Instant::now() < deadline, "GET {path} never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn servers_ride_out_a_postgresql_restart_with_runs_in_flight() {
    let Some(pg) = PrivatePg::start() else {
        assert!(
            !required(),
            "PostgreSQL's server programs (initdb, pg_ctl) are missing"
        );
        eprintln!("skipped: PostgreSQL's server programs (initdb, pg_ctl) are missing");
        return;
    };
    let (ok, out) = run(Command::new("psql").args([
        &pg.url("postgres"),
        "-X",
        "-qtAc",
        "CREATE DATABASE haechi",
    ]));
    assert!(ok, "{out}");
    let url = pg.url("haechi");
    // The default lease (15 s) outlives the outage; a node silent for the outage is not
    // declared missing or its runs lost (the agents stay connected through it).
    let opts = exec_opts()
        .env("HAECHI_DATABASE_ACQUIRE_TIMEOUT_MS", "1000")
        .env("HAECHI_AGENTS__MISSED_HEARTBEATS", "10")
        .env("HAECHI_AGENTS__LOST_GRACE_SECS", "30");
    let a = node_on(&url, opts.clone());
    let b = node_on(&url, opts);
    let admin_a = admin_token(&a).await;
    let admin_b = admin_token(&b).await;
    let node = node_name("xr");
    let _agent = Agent::start(&b, &node).await;
    let hook = Hook::start();
    let out_dir = tempfile::tempdir().unwrap();
    let task = unique("xr");
    // The task appends its instance number to a file of its own: a run done twice shows.
    let script = format!(
        "#!/bin/sh\nsleep 2\necho \"$HAECHI_TASK_INSTANCE_NO\" >> {}/runs.txt\necho ok\n",
        out_dir.path().display()
    );
    approved_task(&a, &admin_a, &task, &script, json!({})).await;
    let id = create_wf(
        &a,
        &admin_a,
        def(
            "restart",
            json!([
                { "name": "wait", "type": "sleep", "seconds": 1 },
                { "name": "work", "type": "task", "task": task, "nodes": [node] },
                { "name": "notify", "type": "http", "url": hook.url("/done") },
            ]),
        ),
    )
    .await;
    let mut runs = Vec::new();
    for i in 0..6usize {
        let (s, t) = if i.is_multiple_of(2) {
            (&a, &admin_a)
        } else {
            (&b, &admin_b)
        };
        runs.push(execute(s, t, &id).await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // PostgreSQL goes away with the runs in flight.
    pg.ctl("stop");
    let down = Instant::now();
    // Health answers, degraded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, h) = call(client().get(a.url("/api/v1/health"))).await;
        assert_eq!(st, 200, "{h}");
        if h["status"] == "degraded" {
            assert_eq!(h["database"], "unavailable", "{h}");
            break;
        }
        assert!(Instant::now() < deadline, "health never said degraded: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A write is refused with a clear 503, not a hang.
    let t = Instant::now();
    let (st, body) = call(
        client()
            .post(b.url("/services/workflow/execute"))
            .bearer_auth(&admin_b)
            .form(&[("wf_id", id.as_str()), ("sync", "false")]),
    )
    .await;
    let took = t.elapsed();
    println!("a write during the outage: {st} after {took:?}: {body}");
    assert_eq!(st, 503, "{body}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let text = body.to_string();
    assert!(
        text.contains("database") && !text.contains("Connection refused"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.ctl("start");
    println!("PostgreSQL was away {:?}", down.elapsed());

    // Everything comes back by itself: every run completes, each step once.
    let mut instances = Vec::new();
    for exec_id in &runs {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let e = get_ok(
                &a,
                &admin_a,
                &format!("/api/v1/executions/{exec_id}"),
                Duration::from_secs(60),
            )
            .await;
            if e["status"] == "COMPLETED" {
                for s in ["wait", "work", "notify"] {
                    assert_eq!(step(&e, s)["attempts"], 1, "{s} of {exec_id}: {e}");
                }
                instances.push(
                    step(&e, "work")["taskInstanceNo"]
                        .as_i64()
                        .unwrap()
                        .to_string(),
                );
                break;
            }
            assert!(
                !matches!(e["status"].as_str(), Some("FAILED" | "STOPPED")),
                "{e}"
            );
            assert!(Instant::now() < deadline, "{exec_id} did not complete: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let lines = std::fs::read_to_string(out_dir.path().join("runs.txt")).unwrap();
    let mut seen: Vec<&str> = lines.lines().collect();
    seen.sort_unstable();
    let mut want: Vec<&str> = instances.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(seen, want, "each run's task ran once");
    assert_eq!(hook.seen().len(), runs.len(), "each notify happened once");
    let h = get_ok(&b, &admin_b, "/api/v1/health", Duration::from_secs(10)).await;
    assert_eq!(h["status"], "ok", "{h}");
    // And new work goes on.
    let exec_id = execute(&b, &admin_b, &id).await;
    wait_for(&b, &admin_b, &exec_id, "COMPLETED", T).await;
    b.server.finish().await;
    a.server.finish().await;
}

#[tokio::test]
async fn a_schedule_fires_once_with_three_servers() {
    let Some(db) = SharedDb::create() else { return };
    let a = node_on(&db.url, exec_opts());
    let b = node_on(&db.url, exec_opts());
    let c = node_on(&db.url, exec_opts());
    let admin = admin_token(&a).await;
    let node = node_name("xc");
    let _agent = Agent::start(&c, &node).await;
    let out_dir = tempfile::tempdir().unwrap();
    let task = unique("xc");
    approved_task(
        &a,
        &admin,
        &task,
        &format!(
            "#!/bin/sh\ndate +%s%N >> {}/fires.txt\n",
            out_dir.path().display()
        ),
        json!({ "execScheduler": "E", "schedule": "*/2 * * * * *", "scheduleTz": "Asia/Seoul",
                "targetNodeIds": [node] }),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    // Each due time fired once (fires two seconds apart, none missing, none twice), and
    // each fire made one instance whose one execution ran once.
    let counts = a.sql(&format!(
        "SELECT (SELECT COUNT(*) FROM schedule_fires WHERE task_id = '{task}'), \
                (SELECT COUNT(*) FROM task_instances WHERE task_id = '{task}' AND runner_gubun = 'S')"
    ));
    let fires = a.sql(&format!(
        "SELECT fire_at FROM schedule_fires WHERE task_id = '{task}' ORDER BY fire_at"
    ));
    let fires: Vec<i64> = fires.lines().map(|l| l.trim().parse().unwrap()).collect();
    println!(
        "three servers, a schedule every 2 s for 9 s: fires {fires:?}; fires|instances {counts}"
    );
    assert!(fires.len() >= 3, "{fires:?}");
    for w in fires.windows(2) {
        assert_eq!(w[1] - w[0], 2000, "one fire per due time: {fires:?}");
    }
    let (f, i) = counts.split_once('|').unwrap();
    let (f, i): (i64, i64) = (f.parse().unwrap(), i.parse().unwrap());
    assert_eq!(i, f, "one instance per fire: {counts}");
    let doubled = a.sql(&format!(
        "SELECT COUNT(*) FROM node_executions e JOIN task_instances i ON i.instance_no = e.instance_no \
         WHERE i.task_id = '{task}' AND e.exec_no > 1"
    ));
    assert_eq!(doubled, "0");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ran = std::fs::read_to_string(out_dir.path().join("fires.txt")).unwrap_or_default();
    let total: i64 = a
        .sql(&format!(
            "SELECT COUNT(*) FROM task_instances WHERE task_id = '{task}'"
        ))
        .parse()
        .unwrap();
    assert!(ran.lines().count() >= 3, "the fires ran: {ran}");
    assert!(
        ran.lines().count() as i64 <= total,
        "a fire ran more than once: {} runs for {total} instances",
        ran.lines().count()
    );
    c.server.finish().await;
    b.server.finish().await;
    a.server.finish().await;
    drop(db);
}

#[tokio::test]
async fn a_master_key_changed_on_one_server_seals_the_others_at_once() {
    use base64::Engine;
    let Some(db) = SharedDb::create() else { return };
    let a = node_on(&db.url, exec_opts());
    let key = std::fs::read_to_string(a.data_dir.join("vault.key"))
        .expect("A's Express key file")
        .trim()
        .to_owned();
    let b = node_on(&db.url, exec_opts().env("HAECHI_VAULT_MASTER_KEY", &key));
    let admin_a = admin_token(&a).await;
    let admin_b = admin_token(&b).await;
    let applied = |s: &Server, token: &str| {
        call(
            client()
                .get(s.url("/v2/credentialvault/keys/private"))
                .bearer_auth(token),
        )
    };
    assert_eq!(applied(&b, &admin_b).await.1, json!({"applied": true}));
    let mut raw = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut raw).unwrap();
    let new = base64::engine::general_purpose::STANDARD.encode(raw);
    let (st, r) = call(
        client()
            .post(a.url("/api/v1/vault/change-master-key"))
            .bearer_auth(&admin_a)
            .json(&json!({"current_key": key, "new_key": new})),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    // B heard of it and sealed itself, without waiting for a read to fail.
    let t = Instant::now();
    loop {
        if applied(&b, &admin_b).await.1 == json!({"applied": false}) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "B still holds the old key"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("master key changed on A: B sealed after {:?}", t.elapsed());
    assert!(b
        .logs_once_they_contain("seals its vault", Duration::from_secs(5))
        .contains("seals its vault"));
    // The new key applied to B unseals it.
    let (st, body) = call(
        client()
            .put(b.url("/v2/credentialvault/keys/private"))
            .bearer_auth(&admin_b)
            .json(&json!({"privateKey": new})),
    )
    .await;
    assert!(st == 200 || st == 204, "{st} {body}");
    assert_eq!(applied(&b, &admin_b).await.1, json!({"applied": true}));
    assert!(!b.logs().contains(&new) && !a.logs().contains(&new));
    b.server.finish().await;
    a.server.finish().await;
    drop(db);
}
