//! `db_access` workflow steps against the real server: a step unlocks a DBSAFER policy for a
//! window that closes by itself (also across `kill -9` and a restart), a stopped run or a run
//! that fails locks it again at once, the starter needs `dbpolicy.manage`, and bad input is a
//! 400 naming the problem. Each unlock and lock is audited.

mod common;
mod workflow_support;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use workflow_support::*;

const T: Duration = Duration::from_secs(60);
const BASE: &str = "/dbsafer/api/v1/policy/custom/access-policies";

/// A user who may run workflows and manage DB policies.
async fn starter(s: &Server) -> (String, String) {
    let (user_id, _, token) = user_with_roles(s, &["Workflow Operator", "DB Policy Admin"]).await;
    (user_id, token)
}

/// A new, locked policy; returns (policyId, index).
async fn locked_policy(s: &Server, token: &str) -> (String, i64) {
    let policy_id = unique("POL").to_uppercase();
    let (st, p) = call(
        client()
            .post(s.url(BASE))
            .bearer_auth(token)
            .json(&json!({ "userId": unique("dbu"), "policyId": policy_id, "account": "app",
                           "serverAddress": "127.0.0.1", "serverPort": 5432, "sqlPrivileges": ["SELECT"] })),
    )
    .await;
    assert_eq!(st, 201, "{p}");
    let index = p["index"].as_i64().unwrap();
    let (st, r) = call(
        client()
            .put(s.url(&format!("{BASE}/lock?policyId={policy_id}")))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert!(locked(s, token, index).await);
    (policy_id, index)
}

async fn locked(s: &Server, token: &str, index: i64) -> bool {
    let (st, p) = call(
        client()
            .get(s.url(&format!("{BASE}/{index}")))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(st, 200, "{p}");
    p["lock"]
        .as_bool()
        .unwrap_or_else(|| panic!("no lock in {p}"))
}

async fn wait_locked(s: &Server, token: &str, index: i64, want: bool, within: Duration) {
    let deadline = Instant::now() + within;
    while locked(s, token, index).await != want {
        assert!(
            Instant::now() < deadline,
            "policy {index} did not become {}",
            if want { "locked" } else { "unlocked" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn audit(s: &Server, query: &str) -> Vec<Value> {
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/audit?limit=1000&{query}")))
            .bearer_auth(&auditor),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

async fn create(s: &Server, token: &str, steps: Value) -> (u16, Value) {
    call(
        client()
            .post(s.url("/api/v1/workflows"))
            .bearer_auth(token)
            .json(&def("db", steps)),
    )
    .await
}

#[tokio::test]
async fn the_window_opens_and_closes_by_itself() {
    let s = Server::start_with(wf_opts());
    let (user_id, token) = starter(&s).await;
    let (policy_id, index) = locked_policy(&s, &token).await;
    let id = create_wf(
        &s,
        &admin_token(&s).await,
        def(
            "db",
            json!([
                { "name": "open", "type": "db_access", "policy": policy_id, "duration": "2s" },
                { "name": "work", "type": "sleep", "seconds": 0.2 },
            ]),
        ),
    )
    .await;
    let started = Instant::now();
    let exec_id = execute(&s, &token, &id).await;
    let e = wait_for(&s, &token, &exec_id, "COMPLETED", T).await;
    let open = step(&e, "open");
    assert_eq!(open["type"], "db_access", "{e}");
    assert_eq!(open["status"], "SUCCEEDED", "{e}");
    assert_eq!(open["result"]["index"], index, "{e}");
    assert!(open["result"]["until"].as_i64().is_some(), "{e}");
    if started.elapsed() < Duration::from_millis(1500) {
        assert!(
            !locked(&s, &token, index).await,
            "unlocked during the window"
        );
    }
    // The window ends by itself (the end is stored with the policy).
    wait_locked(&s, &token, index, true, Duration::from_secs(10)).await;
    assert!(started.elapsed() >= Duration::from_millis(1900));

    let unlocks = audit(&s, "action=dbpolicy.unlock").await;
    let mine: Vec<&Value> = unlocks
        .iter()
        .filter(|ev| ev["detail"]["index"] == index)
        .collect();
    assert_eq!(mine.len(), 1, "{unlocks:?}");
    assert_eq!(mine[0]["user"], user_id.as_str());
    assert!(mine[0]["detail"]["until"].is_string(), "{:?}", mine[0]);
    // The server persists the window's end with an event of its own (a poll, about a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let locks = audit(&s, "action=dbpolicy.lock").await;
        if locks.iter().any(|ev| {
            ev["detail"]["index"] == index && ev["detail"]["reason"] == "time-boxed unlock ended"
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "{locks:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_stopped_or_failed_run_locks_it_again() {
    let s = Server::start_with(wf_opts());
    let (_, token) = starter(&s).await;

    // Stopped while the window is open.
    let (policy_id, index) = locked_policy(&s, &token).await;
    let id = create_wf(
        &s,
        &admin_token(&s).await,
        def(
            "db",
            json!([
                { "name": "open", "type": "db_access", "policy": policy_id, "duration": "10m" },
                { "name": "work", "type": "sleep", "seconds": 60 },
            ]),
        ),
    )
    .await;
    let exec_id = execute(&s, &token, &id).await;
    wait_until(&s, &token, &exec_id, "work started", T, |e| {
        step(e, "work")["status"] == "RUNNING"
    })
    .await;
    assert!(!locked(&s, &token, index).await);
    let (st, body) = control(&s, &token, &exec_id, "stop").await;
    assert_eq!(st, 200, "{body}");
    wait_locked(&s, &token, index, true, Duration::from_secs(10)).await;
    let ours = audit(&s, "action=workflow.db_access.lock").await;
    let ev = ours
        .iter()
        .find(|ev| ev["target"] == exec_id.as_str())
        .unwrap_or_else(|| panic!("{ours:?}"));
    assert_eq!(ev["detail"]["index"], index);
    assert_eq!(ev["detail"]["reason"], "the run ended STOPPED");

    // A later step fails the run (its policy given by index, its window in minutes).
    let (_, index2) = locked_policy(&s, &token).await;
    let id = create_wf(
        &s,
        &admin_token(&s).await,
        def(
            "db",
            json!([
                { "name": "open", "type": "db_access", "policy": index2.to_string(), "minutes": 10 },
                { "name": "work", "type": "http", "url": "http://127.0.0.1:1/", "timeout_secs": 2 },
            ]),
        ),
    )
    .await;
    let exec_id = execute(&s, &token, &id).await;
    let e = wait_for(&s, &token, &exec_id, "FAILED", T).await;
    assert_eq!(step(&e, "open")["status"], "SUCCEEDED", "{e}");
    wait_locked(&s, &token, index2, true, Duration::from_secs(10)).await;

    // A run that completes leaves its window to run to its end.
    let (policy3, index3) = locked_policy(&s, &token).await;
    let id = create_wf(
        &s,
        &admin_token(&s).await,
        def(
            "db",
            json!([{ "name": "open", "type": "db_access", "policy": policy3, "duration": "10m" }]),
        ),
    )
    .await;
    let exec_id = execute(&s, &token, &id).await;
    wait_for(&s, &token, &exec_id, "COMPLETED", T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!locked(&s, &token, index3).await);
}

#[tokio::test]
async fn windows_hold_across_kill_9_and_a_restart() {
    let mut s = Server::start_with(wf_opts());
    let (_, token) = starter(&s).await;
    let (short, short_index) = locked_policy(&s, &token).await;
    let (long, long_index) = locked_policy(&s, &token).await;
    let id = create_wf(
        &s,
        &admin_token(&s).await,
        def(
            "db",
            json!([
                { "name": "short", "type": "db_access", "policy": short, "duration": "3s" },
                { "name": "long", "type": "db_access", "policy": long, "duration": "1h" },
                { "name": "work", "type": "sleep", "seconds": 120 },
            ]),
        ),
    )
    .await;
    let exec_id = execute(&s, &token, &id).await;
    wait_until(&s, &token, &exec_id, "work started", T, |e| {
        step(e, "work")["status"] == "RUNNING"
    })
    .await;
    let at = Instant::now();
    s.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut opts = wf_opts();
    opts.reuse = s.same_state().reuse;
    let s2 = Server::start_with(opts);
    let admin = admin_token(&s2).await;
    let (_, token) = starter(&s2).await;
    // The short window ended while no server ran or soon after: the policy is locked.
    wait_locked(&s2, &token, short_index, true, Duration::from_secs(15)).await;
    assert!(at.elapsed() >= Duration::from_secs(1));
    assert!(!locked(&s2, &token, long_index).await);
    // The run goes on; stopping it locks the long window.
    let e = execution(&s2, &admin, &exec_id).await;
    assert_eq!(e["status"], "RUNNING", "{e}");
    let (st, body) = control(&s2, &admin, &exec_id, "stop").await;
    assert_eq!(st, 200, "{body}");
    wait_locked(&s2, &token, long_index, true, Duration::from_secs(10)).await;
    s2.finish().await;
    drop(s);
}

#[tokio::test]
async fn permissions_and_bad_input() {
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let (_, token) = starter(&s).await;
    let (policy_id, index) = locked_policy(&s, &token).await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({ "policy": "NO_SUCH_POLICY", "duration": "5m" }),
            "steps[0].policy",
            "does not exist",
        ),
        (
            json!({ "policy": "999999999", "duration": "5m" }),
            "steps[0].policy",
            "does not exist",
        ),
        (json!({ "policy": policy_id }), "duration", "is required"),
        (
            json!({ "policy": policy_id, "duration": "0s" }),
            "duration",
            "from 1 second to 24 hours",
        ),
        (
            json!({ "policy": policy_id, "duration": "25h" }),
            "duration",
            "from 1 second to 24 hours",
        ),
        (
            json!({ "policy": policy_id, "duration": "soon" }),
            "duration",
            "must be a duration",
        ),
        (
            json!({ "policy": policy_id, "duration": "5 weeks" }),
            "duration",
            "must be a duration",
        ),
        (
            json!({ "policy": policy_id, "duration": -5 }),
            "duration",
            "must be a duration",
        ),
        (
            json!({ "policy": policy_id, "duration": true }),
            "duration",
            "must be a duration",
        ),
        (
            json!({ "policy": policy_id, "minutes": 0 }),
            "minutes",
            "from 1 second to 24 hours",
        ),
        (
            json!({ "policy": policy_id, "minutes": "x" }),
            "minutes",
            "number of minutes",
        ),
        (
            json!({ "policy": policy_id, "minutes": 5, "duration": "5m" }),
            "minutes",
            "not both",
        ),
        (json!({ "duration": "5m" }), "policy", "is required"),
        (
            json!({ "policy": "${p}", "duration": "5m" }),
            "policy",
            "not substituted",
        ),
        (
            json!({ "policy": policy_id, "duration": "5m", "until": 1 }),
            "until",
            "",
        ),
    ];
    for (fields, field, mentions) in cases {
        let mut step = json!({ "name": "open", "type": "db_access" });
        for (k, v) in fields.as_object().unwrap() {
            step[k] = v.clone();
        }
        let (st, body) = create(&s, &admin, json!([step])).await;
        assert_eq!(st, 400, "{fields}: {body}");
        let f = body["field"].as_str().unwrap_or_default();
        let m = body["message"].as_str().unwrap_or_default();
        assert!(
            f.contains(field),
            "{fields}: field {f:?} should name {field}: {body}"
        );
        assert!(m.contains(mentions), "{fields}: {body}");
    }
    // Durations in the accepted forms.
    for d in [
        json!("90s"),
        json!("1.5m"),
        json!("1h"),
        json!(30),
        json!("500ms"),
    ] {
        let (st, body) = create(
            &s,
            &admin,
            json!([{ "name": "open", "type": "db_access", "policy": policy_id, "duration": d }]),
        )
        .await;
        if d == json!("500ms") {
            assert_eq!(st, 400, "{d}: {body}");
        } else {
            assert_eq!(st, 201, "{d}: {body}");
        }
    }

    // Running one needs dbpolicy.manage: a Workflow Operator without it is refused up front.
    let id = create_wf(
        &s,
        &admin_token(&s).await,
        def(
            "db",
            json!([{ "name": "open", "type": "db_access", "policy": policy_id, "duration": "1m" }]),
        ),
    )
    .await;
    let (_, _, operator) = user_with_roles(&s, &["Workflow Operator"]).await;
    let (st, body) = call(
        client()
            .post(s.url("/services/workflow/execute"))
            .bearer_auth(&operator)
            .form(&[("wf_id", id.as_str())]),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["result"], "fail");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("dbpolicy.manage"),
        "{body}"
    );
    assert!(locked(&s, &token, index).await, "nothing was unlocked");
}

/// The unlock a `db_access` step makes is the workflow's doing, not a DBSAFER API call: its
/// audit event has the workflow engine's family (`mdrm`) and names the execution as its origin
/// (`detail.origin` = `workflow:<execution id>`), while the lock made through the DBSAFER API
/// stays a `dbsafer` event without an origin.
#[tokio::test]
async fn a_steps_unlock_is_audited_with_the_execution_as_origin() {
    let s = Server::start_with(wf_opts());
    let (user_id, token) = starter(&s).await;
    let (policy_id, index) = locked_policy(&s, &token).await;
    let id = create_wf(
        &s,
        &admin_token(&s).await,
        def(
            "db",
            json!([{ "name": "open", "type": "db_access", "policy": policy_id, "duration": "10m" }]),
        ),
    )
    .await;
    let exec_id = execute(&s, &token, &id).await;
    wait_for(&s, &token, &exec_id, "COMPLETED", T).await;

    let unlocks = audit(&s, "action=dbpolicy.unlock").await;
    let mine: Vec<&Value> = unlocks
        .iter()
        .filter(|ev| ev["detail"]["index"] == index)
        .collect();
    assert_eq!(mine.len(), 1, "{unlocks:?}");
    let ev = mine[0];
    assert_eq!(ev["family"], "mdrm", "{ev}");
    assert_eq!(
        ev["detail"]["origin"],
        format!("workflow:{exec_id}").as_str(),
        "{ev}"
    );
    assert_eq!(ev["user"], user_id.as_str(), "{ev}");
    assert_eq!(
        ev["target"],
        format!("dbpolicy:{index}:{policy_id}").as_str(),
        "{ev}"
    );

    // Filtering on the DBSAFER family finds the API's lock of this policy but not the step's
    // unlock.
    let dbsafer = audit(
        &s,
        &format!("family=dbsafer&target=dbpolicy:{index}:{policy_id}"),
    )
    .await;
    assert!(
        dbsafer.iter().any(|ev| ev["action"] == "dbpolicy.lock"
            && ev["user"] == user_id.as_str()
            && ev["detail"].get("origin").is_none()),
        "{dbsafer:?}"
    );
    assert!(
        dbsafer.iter().all(|ev| ev["action"] != "dbpolicy.unlock"),
        "{dbsafer:?}"
    );
    // The chain, with the origin inside the detail, verifies.
    let (_, _, auditor) = user_with_roles(&s, &["Auditor"]).await;
    let (st, v) = call(
        client()
            .get(s.url("/api/v1/audit/verify"))
            .bearer_auth(&auditor),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(v["broken"].is_null(), "{v}");
}
