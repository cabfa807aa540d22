//! Durability of workflow runs: `kill -9` of the server during each step type and a restart
//! (a sleep waits only what is left, an http call in flight is sent once more with the same
//! Idempotency-Key and never performs its effect twice, an approval still waits, a paused run
//! stays paused, ids keep counting), and two servers on one PostgreSQL (the survivor finishes
//! the run of the one that died).

mod common;
mod workflow_support;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use workflow_support::*;

const T: Duration = Duration::from_secs(40);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Kills `s` with SIGKILL and starts a server on the same state. `s` must stay alive (it owns
/// the data directory and database) until the new server is dropped.
fn restart_after_kill9(s: &mut Server) -> Server {
    s.kill9();
    Server::start_with(s.same_state().arg("--no-local-agent"))
}

#[tokio::test]
async fn a_sleep_resumes_for_only_its_remaining_time_after_kill_9() {
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let id = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([
                { "name": "wait", "type": "sleep", "seconds": 4 },
                { "name": "after", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let first = execute(&s, &admin, &id).await;
    wait_until(&s, &admin, &first, "wait runs", T, |e| {
        step(e, "wait")["status"] == "RUNNING"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut old = s;
    let s = restart_after_kill9(&mut old);
    let back = now_ms();
    let admin = admin_token(&s).await;
    let e = wait_for(&s, &admin, &first, "COMPLETED", T).await;
    let w = step(&e, "wait");
    assert_eq!(w["attempts"], 1, "the sleep was not started again: {e}");
    let (started, ended) = (
        w["started_at"].as_i64().unwrap(),
        w["ended_at"].as_i64().unwrap(),
    );
    // It ends 4 s after it started, or as soon as the server is back if that is later, never
    // 4 s after the restart.
    assert!(ended - started >= 4000, "the sleep was cut short: {e}");
    let due = (started + 4000).max(back);
    assert!(
        ended - due < 1000,
        "the sleep ended {} ms after it was due (started {started}, server back {back})",
        ended - due
    );
    // Ids keep counting after the restart.
    let second = execute(&s, &admin, &id).await;
    let seq = |x: &str| x.rsplit('_').next().unwrap().parse::<u32>().unwrap();
    assert_eq!(&second[..14], &first[..14]);
    assert_eq!(seq(&second), seq(&first) + 1, "{first} then {second}");
    s.finish().await;
}

#[tokio::test]
async fn an_http_call_in_flight_is_sent_again_with_the_same_key_and_its_effect_happens_once() {
    let hook = Hook::start();
    hook.script(&[ok(60_000)]);
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let id = create_wf(&s, &admin, def("dr", json!([
        { "name": "switch traffic", "type": "http", "method": "POST", "url": hook.url("/failover"),
          "body": { "site": "B" }, "timeout_secs": 120 },
        { "name": "verify", "type": "sleep", "seconds": 0 },
    ]))).await;
    let exec_id = execute(&s, &admin, &id).await;
    hook.wait_requests(1, T).await;
    let mut old = s;
    let s = restart_after_kill9(&mut old);
    let admin = admin_token(&s).await;
    let e = wait_for(&s, &admin, &exec_id, "COMPLETED", T).await;
    let seen = hook.seen();
    assert_eq!(
        seen.len(),
        2,
        "one send before the crash, one after: {seen:?}"
    );
    let key = format!("{exec_id}/switch%20traffic/1");
    assert!(
        seen.iter()
            .all(|r| r.header("idempotency-key") == Some(key.as_str())),
        "{seen:?}"
    );
    assert_eq!(
        hook.effects().len(),
        1,
        "the endpoint performed the switch once"
    );
    assert_eq!(step(&e, "switch traffic")["attempts"], 1);
    let log = events(&s, &admin, &exec_id).await;
    assert!(
        log.iter().any(|e| e["message"]
            .as_str()
            .unwrap_or("")
            .contains("same Idempotency-Key")),
        "{log:?}"
    );
    s.finish().await;
}

#[tokio::test]
async fn a_paused_run_stays_paused_and_an_approval_still_waits_after_kill_9() {
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let (_, _, approver) = user_with_roles(&s, &["Task Approver"]).await;
    let paused_wf = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([
                { "name": "one", "type": "sleep", "seconds": 0.5 },
                { "name": "two", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let gate_wf = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([
                { "name": "gate", "type": "approval", "role": "Task Approver" },
                { "name": "done", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let paused = execute(&s, &admin, &paused_wf).await;
    wait_until(&s, &admin, &paused, "one runs", T, |e| {
        step(e, "one")["status"] == "RUNNING"
    })
    .await;
    assert_eq!(control(&s, &admin, &paused, "pause").await.0, 200);
    let gated = execute(&s, &admin, &gate_wf).await;
    wait_until(&s, &admin, &gated, "gate waits", T, |e| {
        step(e, "gate")["status"] == "RUNNING"
    })
    .await;

    let mut old = s;
    let s = restart_after_kill9(&mut old);
    let admin = admin_token(&s).await;
    let approver = login_again(&s, approver).await;
    // The step that ran while paused ends; the run stays paused.
    let e = wait_until(&s, &admin, &paused, "one ends", T, |e| {
        step(e, "one")["status"] == "SUCCEEDED"
    })
    .await;
    assert_eq!(e["status"], "PAUSED");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let e = execution(&s, &admin, &paused).await;
    assert_eq!(e["status"], "PAUSED");
    assert_eq!(step(&e, "two")["status"], "WAITING");
    assert_eq!(control(&s, &admin, &paused, "resume").await.0, 200);
    wait_for(&s, &admin, &paused, "COMPLETED", T).await;
    // The approval still waits, and is decided on the new server.
    let e = execution(&s, &admin, &gated).await;
    assert_eq!(e["status"], "RUNNING");
    assert_eq!(step(&e, "gate")["status"], "RUNNING");
    let (st, body) = call(
        client()
            .post(s.url(&format!("/api/v1/executions/{gated}/steps/gate/decision")))
            .bearer_auth(&approver)
            .json(&json!({ "action": "approve" })),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let e = wait_for(&s, &admin, &gated, "COMPLETED", T).await;
    assert_eq!(step(&e, "gate")["attempts"], 1);
    s.finish().await;
}

/// Tokens survive a restart; this re-checks the token still works (it is stored hashed).
async fn login_again(s: &Server, token: String) -> String {
    let (st, _) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
    assert_eq!(st, 200);
    token
}

#[tokio::test]
async fn a_clean_stop_gives_the_run_back_and_a_restart_takes_it_up() {
    let mut s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let id = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([
                { "name": "wait", "type": "sleep", "seconds": 2 },
            ]),
        ),
    )
    .await;
    let exec_id = execute(&s, &admin, &id).await;
    wait_until(&s, &admin, &exec_id, "wait runs", T, |e| {
        step(e, "wait")["status"] == "RUNNING"
    })
    .await;
    let opts = s.same_state().arg("--no-local-agent");
    s.stop();
    let t = Instant::now();
    let s2 = Server::start_with(opts);
    let admin = admin_token(&s2).await;
    let e = wait_for(&s2, &admin, &exec_id, "COMPLETED", T).await;
    assert_eq!(step(&e, "wait")["attempts"], 1);
    assert!(t.elapsed() < Duration::from_secs(10));
    s2.finish().await;
    drop(s);
}

#[tokio::test]
async fn two_servers_on_one_postgresql_the_survivor_finishes_the_run() {
    if pg_admin_url().is_none() {
        println!("note: two servers cannot share SQLite; this test runs with HAECHI_TEST_DATABASE_URL set");
        return;
    }
    let lease = [("HAECHI_WORKFLOW__LEASE_SECS", "3")];
    let mut opts = wf_opts();
    for (k, v) in lease {
        opts = opts.env(k, v);
    }
    let mut a = Server::start_with(opts.clone());
    let other_dir = tempfile::tempdir().unwrap();
    let mut b_opts = opts;
    b_opts.reuse = Some((other_dir.path().join("data"), a.db.clone()));
    let b = Server::start_with(b_opts);
    let admin_a = admin_token(&a).await;
    let admin_b = admin_token(&b).await;
    let hook = Hook::start();
    let id = create_wf(
        &a,
        &admin_a,
        def(
            "dr",
            json!([
                { "name": "wait", "type": "sleep", "seconds": 2 },
                { "name": "notify", "type": "http", "url": hook.url("/done") },
            ]),
        ),
    )
    .await;
    let exec_id = execute(&a, &admin_a, &id).await;
    // B sees the run (one store) while A drives it.
    wait_until(&b, &admin_b, &exec_id, "wait runs", T, |e| {
        step(e, "wait")["status"] == "RUNNING"
    })
    .await;
    // Controls through B reach A's driver.
    assert_eq!(control(&b, &admin_b, &exec_id, "pause").await.0, 200);
    assert_eq!(control(&b, &admin_b, &exec_id, "resume").await.0, 200);
    let t = Instant::now();
    a.kill9();
    let e = wait_for(&b, &admin_b, &exec_id, "COMPLETED", T).await;
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "takeover took {:?}",
        t.elapsed()
    );
    assert_eq!(step(&e, "wait")["attempts"], 1, "{e}");
    assert_eq!(hook.seen().len(), 1, "the notify step ran once");
    // Ids stay unique across servers.
    let mut ids = std::collections::HashSet::new();
    for _ in 0..5 {
        assert!(ids.insert(execute(&b, &admin_b, &id).await));
    }
    assert!(!ids.contains(&exec_id));
    b.finish().await;
    drop(a);
}
