//! `audit.durability = strict` (the default): a vault value read is answered only once its
//! `credential.value.read` event is committed, so `kill -9` during bursts of reads never leaves
//! an answered read without its event (CONTRACT §6). Runs on both store backends.

mod common;
mod gateway_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A credential with one value, owned by a fresh Vault User; returns (user_id, token, id).
async fn credential_with_a_value(s: &Server) -> (String, String, i64) {
    let (user_id, _, token) = user_with_roles(s, &["Vault User"]).await;
    let (st, c) = call(
        client()
            .post(s.url("/v2/credentialvault/credentials"))
            .header("X-Authorization", &token)
            .json(&json!({
                "name": unique("dur"),
                "attributes": [{"name": "password", "userProvided": false, "masked": true}]
            })),
    )
    .await;
    assert_eq!(st, 201, "{c}");
    let id = c["id"].as_i64().unwrap();
    let attr = c["attributes"][0]["id"].as_i64().unwrap();
    let (st, v) = call(
        client()
            .post(s.url(&format!(
                "/v2/credentialvault/credentials/{id}/attributevalues"
            )))
            .header("X-Authorization", &token)
            .json(&json!([{ "credentialAttributeId": attr, "value": "durable-secret" }])),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    (user_id, token, id)
}

/// The `credential.value.read` events stored for `user_id`, read straight from the store.
fn value_reads_stored(s: &Server, user_id: &str) -> u64 {
    s.sql(&format!(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'credential.value.read' \
         AND user_id = '{user_id}'"
    ))
    .parse()
    .unwrap()
}

/// Reads the value from `readers` tasks until the server dies; returns the reads answered 200.
async fn read_until_killed(s: &mut Server, token: &str, id: i64, readers: usize) -> u64 {
    let answered = Arc::new(AtomicU64::new(0));
    let url = s.url(&format!(
        "/v2/credentialvault/credentials/{id}/attributevalues"
    ));
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let (url, token, answered) = (url.clone(), token.to_owned(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                match c.get(&url).header("X-Authorization", &token).send().await {
                    Ok(r) if r.status() == 200 => {
                        // Count only reads whose value arrived whole.
                        if let Ok(v) = r.json::<Value>().await {
                            if v["list"][0]["value"] == "durable-secret" {
                                answered.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    Ok(r) => return Some(r.status().as_u16()),
                    Err(_) => return None, // the server is gone
                }
            }
            None
        }));
    }
    // Let the bursts run, then kill the server in the middle of them.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let logs = s.logs();
    s.kill9();
    for t in tasks {
        if let Some(status) = t.await.unwrap() {
            panic!("a read answered {status}:\n{logs}");
        }
    }
    answered.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_vault_reads_keep_their_events_across_kill_9() {
    let mut s = Server::start();
    let (user_id, token, id) = credential_with_a_value(&s).await;
    let mut answered = 0;
    let mut killed = Vec::new();
    for round in 0..3 {
        let n = read_until_killed(&mut s, &token, id, 8).await;
        assert!(n > 0, "round {round}: no read was answered before the kill");
        answered += n;
        let next = Server::start_with(s.same_state());
        let events = value_reads_stored(&next, &user_id);
        assert!(
            events >= answered,
            "round {round}: {answered} reads were answered but only {events} events are stored \
             ({} events in all, {} reads of anyone's)",
            next.sql("SELECT COUNT(*) FROM audit_events"),
            next.sql("SELECT COUNT(*) FROM audit_events WHERE action = 'credential.value.read'"),
        );
        // The first server owns the temporary data directory: keep every one until the end.
        killed.push(std::mem::replace(&mut s, next));
    }
    // Every kill left a whole chain.
    let (code, out) = s.audit_verify();
    assert_eq!(code, 0, "{out}");
    s.finish().await;
    drop(killed);
}

/// In `batched` mode reads still work and are audited (the window a crash can lose is the
/// documented trade-off; it is not asserted here).
#[tokio::test]
async fn batched_mode_still_audits_every_read() {
    let s = Server::start_with(Opts::default().env("HAECHI_AUDIT__DURABILITY", "batched"));
    let (user_id, token, id) = credential_with_a_value(&s).await;
    for _ in 0..5 {
        let (st, v) = call(
            client()
                .get(s.url(&format!(
                    "/v2/credentialvault/credentials/{id}/attributevalues"
                )))
                .header("X-Authorization", &token),
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = value_reads_stored(&s, &user_id);
        if n == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} of 5 reads audited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An unknown mode is refused at start, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args(["server", "--data-dir"])
        .arg(dir.path().join("d"))
        .env("HAECHI_AUDIT__DURABILITY", "sometimes")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(text.contains("durability"), "{text}");
    s.finish().await;
}

/// The gateway under `strict`: a statement is finished for its client (PostgreSQL's
/// ReadyForQuery, MySQL's final OK/EOF) only once its `db.statement` event is committed, so
/// `kill -9` during bursts of statements from several `psql` sessions never leaves a statement
/// whose answer a client received without its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_gateway_statements_keep_their_events_across_kill_9() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let pg_addr = gateway_support::free_addr();
    let mut s = {
        let pg_addr = pg_addr.clone();
        tokio::task::spawn_blocking(move || {
            Server::start_with(Opts::default().arg("--pg-gateway").arg(&pg_addr))
        })
        .await
        .unwrap()
    };
    let port = gateway_support::gateway_port(&s, "PostgreSQL gateway on");
    let admin = login(&s, "admin", ADMIN_PASSWORD).await;
    // The machine's PostgreSQL (trust authentication) as its superuser, through a target whose
    // account's password is a vault value.
    let target = unique("durgw").to_lowercase();
    let (st, cred) = call(
        client()
            .post(s.url("/v2/credentialvault/credentials"))
            .bearer_auth(&admin)
            .json(&json!({ "name": target,
                           "attributes": [{"name": "password", "userProvided": false, "masked": true}] })),
    )
    .await;
    assert_eq!(st, 201, "{cred}");
    let cred_id = cred["id"].as_i64().unwrap();
    let attr = cred["attributes"][0]["id"].as_i64().unwrap();
    let (st, v) = call(
        client()
            .post(s.url(&format!(
                "/v2/credentialvault/credentials/{cred_id}/attributevalues"
            )))
            .bearer_auth(&admin)
            .json(&json!([{ "credentialAttributeId": attr, "value": "unused-with-trust" }])),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(client().post(s.url("/api/v1/db/targets")).bearer_auth(&admin).json(
        &json!({ "name": target, "kind": "postgres", "host": "127.0.0.1", "port": 5432, "database": "test" }),
    ))
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        client()
            .post(s.url(&format!("/api/v1/db/targets/{target}/accounts")))
            .bearer_auth(&admin)
            .json(
                &json!({ "account": "postgres", "credentialId": cred_id, "attribute": "password" }),
            ),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (user, password, _) = user_with_roles(&s, &[]).await;
    let (st, v) = call(
        client()
            .post(s.url("/dbsafer/api/v1/policy/custom/access-policies"))
            .bearer_auth(&admin)
            .json(&json!({ "userId": user, "account": "postgres", "serverAddress": "127.0.0.1",
                           "serverPort": 5432, "clientIpBegin": "127.0.0.1", "clientIpEnd": "127.0.0.1",
                           "sqlPrivileges": ["SELECT"] })),
    )
    .await;
    assert_eq!(st, 201, "{v}");

    // Four psql sessions, each sending one numbered SELECT after another on its stdin and
    // printing each answer on a line of its own; a line read back is an answered statement.
    let answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for n in 0..4 {
        let mut child = Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={port} user={user}@postgres dbname={target} sslmode=require"
            ))
            .args(["-X", "-A", "-t", "-q"])
            .env("PGPASSWORD", &password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql must be installed");
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for i in 0..1_000_000 {
                if writeln!(stdin, "SELECT 'mk-{n}-{i}';").is_err() {
                    break;
                }
            }
        });
        let answered = answered.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("mk-") {
                    answered.lock().unwrap().push(line);
                }
            }
        }));
        children.push(child);
    }
    // Once every session has answers coming, kill the server in the middle of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = answered.lock().unwrap().clone();
        if (0..4).all(|n| seen.iter().any(|l| l.starts_with(&format!("mk-{n}-")))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the psql sessions got no answers:\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.kill9();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    for r in readers {
        r.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 4, "{answered:?}");

    let next = Server::start_with(s.same_state());
    let stored = next.sql(&format!(
        "SELECT detail FROM audit_events WHERE action = 'db.statement' AND user_id = '{user}'"
    ));
    let marks = regex::Regex::new(r"mk-\d+-\d+").unwrap();
    let stored: std::collections::HashSet<&str> =
        marks.find_iter(&stored).map(|m| m.as_str()).collect();
    let missing: Vec<&String> = answered
        .iter()
        .filter(|a| !stored.contains(a.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered statements have no event: {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(10)]
    );
    let (code, out) = next.audit_verify();
    assert_eq!(code, 0, "{out}");
    next.finish().await;
    drop(s);
}
