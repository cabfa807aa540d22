//! Runbooks as DR teams run them (issue 22, CONTRACT §9): an operator's retry / skip /
//! mark_succeeded of a failed task, http and approval step, in a `FAILED` run and under
//! `on_failure: ask`, each surviving `kill -9` of the server between the failure and the
//! decision and again right after it (the decision is applied once, the step runs once more,
//! never twice); `only_steps`.

mod common;
mod exec_support;
mod workflow_support;

use std::time::{Duration, Instant};

use common::*;
use exec_support::*;
use serde_json::{json, Value};
use workflow_support::*;

const T: Duration = Duration::from_secs(60);

/// `POST /api/v1/executions/{id}/steps/{name}/actions`.
async fn act(s: &Server, token: &str, exec_id: &str, step: &str, body: Value) -> (u16, Value) {
    call(
        client()
            .post(s.url(&format!(
                "/api/v1/executions/{exec_id}/steps/{step}/actions"
            )))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

/// Kills `s` with SIGKILL and starts a server on the same state with `opts`' settings.
fn restart_after_kill9(s: &mut Server, opts: Opts) -> Server {
    s.kill9();
    let mut o = opts;
    o.reuse = s.same_state().reuse;
    Server::start_with(o)
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn audit_of(s: &Server, action: &str) -> Vec<Value> {
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let (st, audit) = call(
        client()
            .get(s.url("/api/v1/audit"))
            .bearer_auth(&auditor)
            .query(&[("action", action), ("limit", "1000")]),
    )
    .await;
    assert_eq!(st, 200, "{audit}");
    audit["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_failed_task_step_is_retried_with_corrected_arguments_once_across_kill_9() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let relay = Relay::start(&s).await;
    let node = node_name("rbk");
    let _agent = Agent::start_at(&s, &node, &relay.url).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran.log");
    let task = unique("rb-exit");
    let script = format!("#!/bin/sh\necho \"$1\" >> {}\nexit \"$1\"\n", log.display());
    approved_task(&s, &admin, &task, &script, json!({})).await;
    let mut d = def(
        "dr",
        json!([
            { "name": "fix", "type": "task", "task": task, "nodes": [node], "arguments": ["${code}"] },
            { "name": "after", "type": "sleep", "seconds": 0 },
        ]),
    );
    d["params"] = json!({ "code": "3" });
    let id = create_wf(&s, &admin, d).await;
    let exec_id = execute(&s, &admin, &id).await;
    let e = wait_for(&s, &admin, &exec_id, "FAILED", T).await;
    assert_eq!(step(&e, "fix")["status"], "FAILED", "{e}");
    assert_eq!(step(&e, "after")["status"], "SKIPPED", "{e}");
    assert_eq!(step(&e, "fix")["actions"], json!([]), "{e}");
    assert_eq!(lines(&log), ["3"]);

    // kill -9 between the failure and the decision.
    let mut old = s;
    let s = restart_after_kill9(&mut old, exec_opts());
    relay.point_at(&s);
    let admin = admin_token(&s).await;
    assert_eq!(status(&s, &admin, &exec_id).await["status"], "FAILED");

    // Bad requests change nothing.
    for (body, field) in [
        (json!({ "action": "retry" }), "reason"),
        (json!({ "action": "retry", "reason": "  " }), "reason"),
        (json!({ "action": "rerun", "reason": "x" }), "action"),
        (
            json!({ "action": "skip", "reason": "x", "arguments": ["0"] }),
            "arguments",
        ),
        (
            json!({ "action": "retry", "reason": "x", "arguments": ["${nope}"] }),
            "arguments[0]",
        ),
    ] {
        let (st, body) = act(&s, &admin, &exec_id, "fix", body).await;
        assert_eq!(st, 400, "{body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
    // A step that did not fail, an unknown step, an operator without workflow.control.
    let (st, body) = act(
        &s,
        &admin,
        &exec_id,
        "after",
        json!({ "action": "retry", "reason": "x" }),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    assert!(body.to_string().contains("SKIPPED"), "{body}");
    let (st, _) = act(
        &s,
        &admin,
        &exec_id,
        "nope",
        json!({ "action": "retry", "reason": "x" }),
    )
    .await;
    assert_eq!(st, 404);
    let viewer = role_with(&s, &admin, &["workflow.view"]).await;
    let (_, _, viewer) = user_with_roles(&s, &[&viewer]).await;
    let (st, _) = act(
        &s,
        &viewer,
        &exec_id,
        "fix",
        json!({ "action": "retry", "reason": "x" }),
    )
    .await;
    assert_eq!(st, 403);
    let e = execution(&s, &admin, &exec_id).await;
    assert_eq!(e["status"], "FAILED", "{e}");
    assert_eq!(step(&e, "fix")["attempts"], 1);
    assert_eq!(step(&e, "fix")["actions"], json!([]));

    // The retry with corrected arguments, then kill -9 right after it.
    let (st, body) = act(
        &s,
        &admin,
        &exec_id,
        "fix",
        json!({ "action": "retry", "reason": "exit code was wrong (CHG-7)", "arguments": ["0"] }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["actions"][0]["action"], "retry", "{body}");
    let mut old2 = s;
    let s = restart_after_kill9(&mut old2, exec_opts());
    relay.point_at(&s);
    let admin = admin_token(&s).await;
    let e = wait_for(&s, &admin, &exec_id, "COMPLETED", T).await;
    let fix = step(&e, "fix");
    assert_eq!(fix["status"], "SUCCEEDED", "{e}");
    assert_eq!(fix["attempts"], 2, "one more attempt: {e}");
    assert_eq!(
        lines(&log),
        ["3", "0"],
        "the task ran once more, never twice"
    );
    let a = &fix["actions"][0];
    assert_eq!(a["by"], "admin");
    assert_eq!(a["reason"], "exit code was wrong (CHG-7)");
    assert_eq!(a["arguments"], json!(["0"]));
    assert_eq!(a["attempt"], 1);
    assert!(a["at"].as_i64().unwrap() > 0);
    assert_eq!(fix["actions"].as_array().unwrap().len(), 1, "applied once");
    assert_eq!(
        step(&e, "after")["status"],
        "SUCCEEDED",
        "the skipped step ran"
    );
    assert_eq!(status(&s, &admin, &exec_id).await["status"], "COMPLETED");
    // A completed run takes no action.
    let (st, body) = act(
        &s,
        &admin,
        &exec_id,
        "fix",
        json!({ "action": "retry", "reason": "x" }),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    assert!(body.to_string().contains("COMPLETED"), "{body}");
    // Audited with the reason, the refused ones too.
    let audit = audit_of(&s, "workflow.step.action").await;
    let target = format!("{exec_id}/fix");
    assert!(
        audit.iter().any(|e| e["target"] == target
            && e["outcome"] == "success"
            && e["detail"]["reason"] == "exit code was wrong (CHG-7)"
            && e["detail"]["arguments"] == json!(["0"])),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e["target"] == format!("{exec_id}/after") && e["outcome"] == "failure"),
        "{audit:?}"
    );
    s.finish().await;
    drop(old2);
    drop(old);
}

#[tokio::test]
async fn on_failure_ask_pauses_the_run_until_an_operator_decides_the_http_step() {
    let hook = Hook::start();
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let (_, operator) = tokens(&s).await;
    let id = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([
                { "name": "switch", "type": "http", "method": "POST", "url": hook.url("/switch"),
                  "expect_status": 200, "on_failure": "ask" },
                { "name": "verify", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;

    // retry: the call is sent once more and the run goes on.
    hook.script(&[status_reply(500)]);
    let a = execute(&s, &operator, &id).await;
    let e = wait_for(&s, &admin, &a, "PAUSED", T).await;
    assert_eq!(step(&e, "switch")["status"], "FAILED", "{e}");
    assert_eq!(step(&e, "verify")["status"], "WAITING", "{e}");
    assert_eq!(status(&s, &operator, &a).await["status"], "PAUSED");
    let (st, body) = control(&s, &operator, &a, "resume").await;
    assert_eq!(st, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("switch"),
        "{body}"
    );
    let (st, body) = act(
        &s,
        &operator,
        &a,
        "switch",
        json!({ "action": "retry", "reason": "x", "arguments": ["1"] }),
    )
    .await;
    assert_eq!(st, 400, "an http step takes no arguments: {body}");
    assert_eq!(hook.seen().len(), 1);
    let posted = Instant::now();
    let (st, body) = act(
        &s,
        &operator,
        &a,
        "switch",
        json!({ "action": "retry", "reason": "LB was restarting" }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let seen = hook.wait_requests(2, T).await;
    let latency = seen[1].at.saturating_duration_since(posted);
    eprintln!("FIGURE decision POST -> retried http step's request: {latency:?}");
    let e = wait_for(&s, &admin, &a, "COMPLETED", T).await;
    assert_eq!(step(&e, "switch")["attempts"], 2, "{e}");
    assert_eq!(step(&e, "switch")["status"], "SUCCEEDED");
    assert_eq!(step(&e, "verify")["status"], "SUCCEEDED");
    assert_eq!(
        seen[1].header("idempotency-key"),
        Some(format!("{a}/switch/2").as_str()),
        "a retry is a new attempt with a new key"
    );
    let log = events(&s, &admin, &a).await;
    assert!(
        log.iter().any(|e| e["status"] == "PAUSED"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .contains("on_failure: ask")),
        "{log:?}"
    );

    // skip: the step is SKIPPED and its dependents go on.
    let before = hook.seen().len();
    hook.script(&[status_reply(500)]);
    let b = execute(&s, &operator, &id).await;
    wait_for(&s, &admin, &b, "PAUSED", T).await;
    let (st, body) = act(
        &s,
        &operator,
        &b,
        "switch",
        json!({ "action": "skip", "reason": "switched by hand" }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "SKIPPED");
    let e = wait_for(&s, &admin, &b, "COMPLETED", T).await;
    assert_eq!(step(&e, "switch")["status"], "SKIPPED", "{e}");
    assert_eq!(
        step(&e, "switch")["actions"][0]["reason"],
        "switched by hand"
    );
    assert_eq!(step(&e, "verify")["status"], "SUCCEEDED");
    assert_eq!(hook.seen().len(), before + 1, "the switch was sent once");

    // mark_succeeded, with kill -9 between the failure and the decision and right after it:
    // the decision is applied once and the call is not sent again.
    let before = hook.seen().len();
    hook.script(&[status_reply(500)]);
    let c = execute(&s, &operator, &id).await;
    wait_for(&s, &admin, &c, "PAUSED", T).await;
    let mut old = s;
    let s = restart_after_kill9(&mut old, wf_opts());
    let admin = admin_token(&s).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = execution(&s, &admin, &c).await;
    assert_eq!(e["status"], "PAUSED", "still waiting for the decision: {e}");
    assert_eq!(step(&e, "switch")["attempts"], 1);
    let (st, body) = act(
        &s,
        &admin,
        &c,
        "switch",
        json!({ "action": "mark_succeeded", "reason": "checked the LB by hand" }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let mut old2 = s;
    let s = restart_after_kill9(&mut old2, wf_opts());
    let admin = admin_token(&s).await;
    let e = wait_for(&s, &admin, &c, "COMPLETED", T).await;
    let sw = step(&e, "switch");
    assert_eq!(sw["status"], "SUCCEEDED", "{e}");
    assert_eq!(sw["attempts"], 1, "{e}");
    assert_eq!(sw["actions"].as_array().unwrap().len(), 1, "{e}");
    assert_eq!(sw["actions"][0]["action"], "mark_succeeded");
    assert_eq!(
        hook.seen().len(),
        before + 1,
        "the failed call once: marking it succeeded sent nothing"
    );
    s.finish().await;
    drop(old2);
    drop(old);
}

#[tokio::test]
async fn approval_steps_take_actions_in_a_failed_run_and_a_retry_asks_again() {
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let (_, _, approver) = user_with_roles(&s, &["Task Approver"]).await;
    let id = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([
                { "name": "gate", "type": "approval", "role": "Task Approver" },
                { "name": "one", "type": "sleep", "seconds": 0 },
                { "name": "two", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let decide = |exec: String, action: &'static str| {
        let url = s.url(&format!("/api/v1/executions/{exec}/steps/gate/decision"));
        let approver = approver.clone();
        async move {
            call(
                client()
                    .post(url)
                    .bearer_auth(&approver)
                    .json(&json!({ "action": action })),
            )
            .await
        }
    };

    // retry of a rejected approval asks again; approved, the run completes.
    let a = execute(&s, &admin, &id).await;
    wait_until(&s, &admin, &a, "the gate waits", T, |e| {
        step(e, "gate")["status"] == "RUNNING"
    })
    .await;
    let (st, body) = decide(a.clone(), "reject").await;
    assert_eq!(st, 200, "{body}");
    let e = wait_for(&s, &admin, &a, "FAILED", T).await;
    assert_eq!(step(&e, "one")["status"], "SKIPPED");
    // kill -9 between the failure and the decision.
    let mut old = s;
    let s = restart_after_kill9(&mut old, wf_opts());
    let admin = admin_token(&s).await;
    let (st, body) = act(
        &s,
        &admin,
        &a,
        "gate",
        json!({ "action": "retry", "reason": "wrong ticket attached" }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let e = wait_until(&s, &admin, &a, "the gate asks again", T, |e| {
        step(e, "gate")["attempts"] == 2 && step(e, "gate")["status"] == "RUNNING"
    })
    .await;
    assert_eq!(e["status"], "RUNNING");
    assert!(step(&e, "gate").get("decision").is_none(), "{e}");
    assert_eq!(
        step(&e, "one")["status"],
        "WAITING",
        "skipped because of the failure: waiting again"
    );
    let url = s.url(&format!("/api/v1/executions/{a}/steps/gate/decision"));
    let (st, body) = call(
        client()
            .post(url)
            .bearer_auth(&approver)
            .json(&json!({ "action": "approve" })),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let e = wait_for(&s, &admin, &a, "COMPLETED", T).await;
    assert_eq!(step(&e, "two")["status"], "SUCCEEDED", "{e}");

    // mark_succeeded of a rejected approval.
    let b = execute(&s, &admin, &id).await;
    wait_until(&s, &admin, &b, "the gate waits", T, |e| {
        step(e, "gate")["status"] == "RUNNING"
    })
    .await;
    let url = s.url(&format!("/api/v1/executions/{b}/steps/gate/decision"));
    let (st, _) = call(
        client()
            .post(url)
            .bearer_auth(&approver)
            .json(&json!({ "action": "reject" })),
    )
    .await;
    assert_eq!(st, 200);
    wait_for(&s, &admin, &b, "FAILED", T).await;
    let (st, body) = act(
        &s,
        &admin,
        &b,
        "gate",
        json!({ "action": "mark_succeeded", "reason": "approved on the phone by the DBA lead" }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "SUCCEEDED");
    let e = wait_for(&s, &admin, &b, "COMPLETED", T).await;
    assert_eq!(step(&e, "gate")["attempts"], 1);
    assert_eq!(step(&e, "two")["status"], "SUCCEEDED");

    // skip of a WAITING step of a PAUSED run; the run stays paused until resumed.
    let c = execute(&s, &admin, &id).await;
    wait_until(&s, &admin, &c, "the gate waits", T, |e| {
        step(e, "gate")["status"] == "RUNNING"
    })
    .await;
    let (st, body) = act(
        &s,
        &admin,
        &c,
        "one",
        json!({ "action": "skip", "reason": "x" }),
    )
    .await;
    assert_eq!(st, 409, "a RUNNING run: {body}");
    assert!(body.to_string().contains("RUNNING"), "{body}");
    let (st, _) = control(&s, &admin, &c, "pause").await;
    assert_eq!(st, 200);
    let (st, body) = act(
        &s,
        &admin,
        &c,
        "one",
        json!({ "action": "skip", "reason": "not needed in this drill" }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = act(
        &s,
        &admin,
        &c,
        "gate",
        json!({ "action": "skip", "reason": "x" }),
    )
    .await;
    assert_eq!(st, 409, "a RUNNING step: {body}");
    assert_eq!(execution(&s, &admin, &c).await["status"], "PAUSED");
    let url = s.url(&format!("/api/v1/executions/{c}/steps/gate/decision"));
    let (st, _) = call(
        client()
            .post(url)
            .bearer_auth(&approver)
            .json(&json!({ "action": "approve" })),
    )
    .await;
    assert_eq!(st, 200);
    let (st, body) = control(&s, &admin, &c, "resume").await;
    assert_eq!(st, 200, "{body}");
    let e = wait_for(&s, &admin, &c, "COMPLETED", T).await;
    assert_eq!(step(&e, "one")["status"], "SKIPPED", "{e}");
    assert_eq!(step(&e, "two")["status"], "SUCCEEDED", "{e}");
    s.finish().await;
    drop(old);
}

#[tokio::test]
async fn only_steps_runs_the_chosen_steps_and_counts_the_rest_as_met() {
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let id = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([
                { "name": "a", "type": "sleep", "seconds": 0 },
                { "name": "b", "type": "sleep", "seconds": 0 },
                { "name": "c", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let start = |body: Value| {
        let url = s.url(&format!("/api/v1/workflows/{id}/executions"));
        let admin = admin.clone();
        async move { call(client().post(url).bearer_auth(&admin).json(&body)).await }
    };
    let count = || async {
        let (_, l) = call(
            client()
                .get(s.url("/api/v1/executions"))
                .bearer_auth(&admin)
                .query(&[("wf_id", id.as_str())]),
        )
        .await;
        l["total"].as_i64().unwrap()
    };
    for (body, field) in [
        (json!({ "only_steps": ["zz"] }), "only_steps[0]"),
        (json!({ "only_steps": [] }), "only_steps"),
    ] {
        let (st, b) = start(body).await;
        assert_eq!(st, 400, "{b}");
        assert!(b.to_string().contains(field), "{b}");
    }
    let (st, b) = start(json!({ "only_steps": "c" })).await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(count().await, 0, "nothing was started");
    let (st, b) = start(json!({ "only_steps": ["c"], "wait_secs": 20 })).await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["status"], "COMPLETED", "{b}");
    assert_eq!(step(&b, "a")["status"], "SKIPPED");
    assert_eq!(step(&b, "b")["status"], "SKIPPED");
    assert_eq!(step(&b, "c")["status"], "SUCCEEDED");
    assert_eq!(step(&b, "a")["attempts"], 0);
    s.finish().await;
}

#[tokio::test]
async fn conditions_and_captured_values_choose_the_steps() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let node = node_name("rbc");
    let _agent = Agent::start(&s, &node).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("args.txt");
    let probe = unique("rb-probe");
    approved_task(
        &s,
        &admin,
        &probe,
        "#!/bin/sh\necho 'replication lag=12 s'\necho 'role=primary'\n",
        json!({}),
    )
    .await;
    let echo = unique("rb-echo");
    approved_task(
        &s,
        &admin,
        &echo,
        &format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\n", out.display()),
        json!({}),
    )
    .await;

    // Bad expressions and captures are refused when the definition is saved, with the place.
    let bad = |steps: Value| {
        let url = s.url("/api/v1/workflows");
        let admin = admin.clone();
        async move {
            let mut d = def("dr", steps);
            d["params"] = json!({ "site": "A" });
            call(client().post(url).bearer_auth(&admin).json(&d)).await
        }
    };
    for (steps, needle) in [
        (
            json!([{ "name": "a", "type": "sleep", "seconds": 0, "if": "params.site == " }]),
            "line 1, column",
        ),
        (
            json!([{ "name": "a", "type": "sleep", "seconds": 0, "if": "(params.site == 'B'" }]),
            "line 1, column",
        ),
        (
            json!([{ "name": "a", "type": "sleep", "seconds": 0, "if": "env.HOME == 'x'" }]),
            "'env'",
        ),
        (
            json!([{ "name": "a", "type": "sleep", "seconds": 0, "if": 3 }]),
            "steps[0].if",
        ),
        (
            json!([{ "name": "a", "type": "task", "task": probe, "nodes": [node], "capture": { "x": "(" } }]),
            "capture.x",
        ),
        (
            json!([{ "name": "a", "type": "task", "task": probe, "nodes": [node], "capture": { "x": "lag=\\d+" } }]),
            "exactly one group",
        ),
        (
            json!([{ "name": "a", "type": "task", "task": probe, "nodes": [node], "capture": { "site": "lag=(\\d+)" } }]),
            "already a parameter",
        ),
        (
            json!([{ "name": "a", "type": "sleep", "seconds": 0, "capture": { "x": "(.)" } }]),
            "capture",
        ),
    ] {
        let (st, body) = bad(steps).await;
        assert_eq!(st, 400, "{needle}: {body}");
        assert!(body.to_string().contains(needle), "{needle}: {body}");
    }

    let mut d = def(
        "dr",
        json!([
            { "name": "probe", "type": "task", "task": probe, "nodes": [node],
              "capture": { "lag": "lag=(\\d+)", "role": "role=(\\w+)" } },
            { "name": "when primary", "type": "sleep", "seconds": 0,
              "if": "vars.role == 'primary' && params.site == 'B' && int(vars.lag) > 10" },
            { "name": "when_replica", "type": "sleep", "seconds": 0, "needs": ["probe"],
              "if": "vars.role == 'replica'" },
            { "name": "after", "type": "sleep", "seconds": 0, "needs": ["when primary", "when_replica"],
              "if": "steps['when primary'].status == 'SUCCEEDED' && steps.when_replica.status == 'SKIPPED' && contains(params.site, 'B')" },
            { "name": "echo", "type": "task", "task": echo, "nodes": [node], "needs": ["after"],
              "arguments": ["lag ${lag}", "${role}"] },
        ]),
    );
    d["params"] = json!({ "site": "B" });
    let id = create_wf(&s, &admin, d).await;
    let exec_id = execute(&s, &admin, &id).await;
    let e = wait_for(&s, &admin, &exec_id, "COMPLETED", T).await;
    assert_eq!(
        step(&e, "probe")["result"]["captured"],
        json!({ "lag": "12", "role": "primary" }),
        "{e}"
    );
    assert_eq!(step(&e, "when primary")["status"], "SUCCEEDED", "{e}");
    assert_eq!(step(&e, "when_replica")["status"], "SKIPPED", "{e}");
    assert_eq!(step(&e, "after")["status"], "SUCCEEDED", "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "lag 12\nprimary\n");
    let log = events(&s, &admin, &exec_id).await;
    assert!(
        log.iter().any(|e| e["step"] == "when_replica"
            && e["status"] == "SKIPPED"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .contains("condition is false")),
        "{log:?}"
    );
    // Another site: the condition is false and the dependents go on.
    let (st, body) = execute_with(&s, &admin, &id, json!({ "site": "A" })).await;
    assert_eq!(st, 200, "{body}");
    let other = body["execution_id"].as_str().unwrap().to_owned();
    let e = wait_for(&s, &admin, &other, "COMPLETED", T).await;
    assert_eq!(step(&e, "when primary")["status"], "SKIPPED", "{e}");
    assert_eq!(step(&e, "after")["status"], "SKIPPED", "{e}");
    assert_eq!(step(&e, "echo")["status"], "SUCCEEDED", "{e}");

    // A capture that matches nothing fails the step, naming the variable.
    let id = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([{ "name": "probe", "type": "task", "task": probe, "nodes": [node],
                     "capture": { "gtid": "gtid=(\\S+)" } }]),
        ),
    )
    .await;
    let exec_id = execute(&s, &admin, &id).await;
    let e = wait_for(&s, &admin, &exec_id, "FAILED", T).await;
    let err = step(&e, "probe")["error"].as_str().unwrap().to_owned();
    assert!(
        err.contains("capture 'gtid'") && err.contains(&node),
        "{err}"
    );
    s.finish().await;
}

#[tokio::test]
async fn the_rto_report_compares_each_step_with_its_target_from_the_real_timestamps() {
    let hook = Hook::start();
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let mut d = def(
        "dr",
        json!([
            { "name": "a", "type": "sleep", "seconds": 0.3, "rto_secs": 5 },
            { "name": "b", "type": "http", "url": hook.url("/check"), "on_failure": "ask", "rto_secs": 0.1 },
            { "name": "c", "type": "sleep", "seconds": 0.2 },
        ]),
    );
    d["rto_secs"] = json!(600);
    let id = create_wf(&s, &admin, d).await;
    hook.script(&[status_reply(503)]);
    let exec_id = execute(&s, &admin, &id).await;
    wait_for(&s, &admin, &exec_id, "PAUSED", T).await;
    // The operator looks into it for a while: that time counts against b's target.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The operator's CLI: the action, then the execution with its actions, as tables.
    let dir = tempfile::tempdir().unwrap();
    let session = cli_login(&s, dir.path());
    let (code, out, err) = cli_wf(
        &session,
        &[
            "step",
            "mark-succeeded",
            &exec_id,
            "b",
            "--reason",
            "checked the pool by hand",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("operator actions:"), "{out}");
    assert!(
        out.contains("mark_succeeded") && out.contains("checked the pool by hand"),
        "{out}"
    );
    let (code, _, err) = cli_wf(
        &session,
        &["step", "skip", &exec_id, "b", "--reason", "again"],
    )
    .await;
    assert_ne!(code, Some(0), "b is no longer failed");
    assert!(err.contains("FAILED"), "the refusal says what fits: {err}");
    let e = wait_for(&s, &admin, &exec_id, "COMPLETED", T).await;

    let (st, r) = call(
        client()
            .get(s.url(&format!("/api/v1/executions/{exec_id}/report")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    for name in ["a", "b", "c"] {
        let v = step(&e, name);
        let rs = step(&r, name);
        let real =
            (v["ended_at"].as_i64().unwrap() - v["started_at"].as_i64().unwrap()) as f64 / 1000.0;
        assert!(
            (rs["duration_secs"].as_f64().unwrap() - real).abs() < 1e-9,
            "{name}: {rs} vs {v}"
        );
        assert_eq!(rs["attempts"], v["attempts"]);
    }
    assert!(step(&r, "a")["duration_secs"].as_f64().unwrap() >= 0.3);
    assert_eq!(step(&r, "a")["rto_secs"], 5.0);
    assert_eq!(step(&r, "a")["within_rto"], true);
    assert_eq!(step(&r, "b")["within_rto"], false, "{r}");
    assert!(step(&r, "c")["rto_secs"].is_null());
    assert!(step(&r, "c")["within_rto"].is_null());
    assert_eq!(
        step(&r, "b")["actions"][0]["reason"],
        "checked the pool by hand"
    );
    let total =
        (e["ended_at"].as_i64().unwrap() - e["created_at"].as_i64().unwrap()) as f64 / 1000.0;
    assert!(
        (r["duration_secs"].as_f64().unwrap() - total).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(r["rto_secs"], 600.0);
    assert_eq!(r["within_rto"], true);

    let resp = client()
        .get(s.url(&format!("/api/v1/executions/{exec_id}/report?format=csv")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = resp.text().await.unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "step,type,status,rto_secs,duration_secs,attempts,within_rto,started_at,ended_at,actions"
    );
    assert_eq!(rows.len(), 5, "{csv}");
    assert!(rows[2].starts_with("b,http,SUCCEEDED,0.100,"), "{csv}");
    assert!(
        rows[2].contains(",false,") && rows[2].contains("mark_succeeded by admin"),
        "{csv}"
    );
    assert!(
        rows[4].starts_with("(run),workflow,COMPLETED,600.000,"),
        "{csv}"
    );
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/executions/{exec_id}/report?format=xml")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    let (code, out, err) = cli_wf(&session, &["report", &exec_id]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("RTO") && out.contains("MISSED") && out.contains("(whole run)"),
        "{out}"
    );
    s.finish().await;
}

#[tokio::test]
async fn versions_are_listed_read_compared_and_version_1_restored_after_version_3() {
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let name = unique("rb_versions");
    let v = |n: u32, extra: Value| {
        let mut steps = vec![json!({ "name": "wait", "type": "sleep", "seconds": n })];
        if !extra.is_null() {
            steps.push(extra);
        }
        json!({ "name": name, "group": "dr", "description": format!("v{n}"), "steps": steps })
    };
    let id = create_wf(&s, &admin, v(1, Value::Null)).await;
    let put = |body: Value| {
        let url = s.url(&format!("/api/v1/workflows/{id}"));
        let admin = admin.clone();
        async move { call(client().put(url).bearer_auth(&admin).json(&body)).await }
    };
    let (st, b) = put(v(
        2,
        json!({ "name": "extra", "type": "sleep", "seconds": 0 }),
    ))
    .await;
    assert_eq!((st, b["version"].clone()), (200, json!(2)), "{b}");
    let (st, b) = put(v(3, Value::Null)).await;
    assert_eq!((st, b["version"].clone()), (200, json!(3)), "{b}");

    let get = |path: String| {
        let url = s.url(&path);
        let admin = admin.clone();
        async move { call(client().get(url).bearer_auth(&admin)).await }
    };
    let (st, list) = get(format!("/api/v1/workflows/{id}/versions")).await;
    assert_eq!(st, 200);
    assert_eq!(list["versions"].as_array().unwrap().len(), 3, "{list}");
    let (st, one) = get(format!("/api/v1/workflows/{id}/versions/1")).await;
    assert_eq!(st, 200, "{one}");
    assert_eq!(one["version"], 1);
    assert_eq!(one["description"], "v1");
    let (st, _) = get(format!("/api/v1/workflows/{id}/versions/9")).await;
    assert_eq!(st, 404);
    let (st, _) = get(format!("/api/v1/workflows/{id}/versions/zero")).await;
    assert_eq!(st, 400);

    let (st, d) = get(format!("/api/v1/workflows/{id}/versions/1/diff?to=2")).await;
    assert_eq!(st, 200, "{d}");
    let changes = d["changes"].as_array().unwrap();
    let at = |p: &str| changes.iter().find(|c| c["path"] == p).cloned();
    assert_eq!(at("description").unwrap()["to"], "v2", "{d}");
    assert_eq!(at("steps.wait.seconds").unwrap()["from"], 1.0, "{d}");
    let added = at("steps.extra").unwrap();
    assert!(
        added.get("from").is_none() && added["to"]["type"] == "sleep",
        "{d}"
    );

    let (st, r) = call(
        client()
            .post(s.url(&format!("/api/v1/workflows/{id}/versions/1/restore")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["version"], 4);
    let (_, cur) = get(format!("/api/v1/workflows/{id}")).await;
    assert_eq!(cur["version"], 4);
    assert_eq!(cur["description"], "v1");
    assert_eq!(cur["steps"], one["steps"]);
    let (_, d) = get(format!("/api/v1/workflows/{id}/versions/1/diff")).await;
    assert_eq!(d["to"], 4);
    assert_eq!(d["changes"], json!([]), "version 4 is version 1: {d}");
    // A viewer may read but not restore.
    let viewer = role_with(&s, &admin, &["workflow.view"]).await;
    let (_, _, viewer) = user_with_roles(&s, &[&viewer]).await;
    let (st, _) = call(
        client()
            .post(s.url(&format!("/api/v1/workflows/{id}/versions/2/restore")))
            .bearer_auth(&viewer),
    )
    .await;
    assert_eq!(st, 403);
    let (_, list) = get(format!("/api/v1/workflows/{id}/versions")).await;
    assert_eq!(
        list["versions"].as_array().unwrap().len(),
        4,
        "nothing changed"
    );
    s.finish().await;
}

#[tokio::test]
async fn the_edit_lock_and_the_run_lock_hold_across_servers() {
    let s1 = Server::start_with(wf_opts());
    // On PostgreSQL a second server shares the store; on SQLite the one server plays both.
    let s2 = pg_admin_url().map(|_| Server::start_with(s1.same_state().arg("--no-local-agent")));
    let other = s2.as_ref().unwrap_or(&s1);
    let admin = admin_token(&s1).await;
    let editor = role_with(
        &s1,
        &admin,
        &["workflow.view", "workflow.manage", "workflow.execute"],
    )
    .await;
    let (alice, _, alice_t) = user_with_roles(&s1, &[&editor]).await;
    let (_, _, bob_t) = user_with_roles(&s1, &[&editor]).await;
    let mut d = def(
        "dr",
        json!([{ "name": "wait", "type": "sleep", "seconds": 30 }]),
    );
    d["concurrency"] = json!(1);
    let id = create_wf(&s1, &alice_t, d.clone()).await;
    let wf = |s: &Server, p: &str| s.url(&format!("/api/v1/workflows/{id}{p}"));

    // The edit lock.
    let (st, l) = call(client().post(wf(&s1, "/lock")).bearer_auth(&alice_t)).await;
    assert_eq!(st, 200, "{l}");
    assert_eq!(l["holder"], alice);
    let since = l["since"].as_i64().unwrap();
    let (_, doc) = call(client().get(wf(other, "")).bearer_auth(&bob_t)).await;
    assert_eq!(doc["edit_lock"]["holder"], alice, "{doc}");
    assert_eq!(doc["edit_lock"]["since"], since, "{doc}");
    // It expires 30 minutes (the default) after its holder last used it.
    let expires = doc["edit_lock"]["expires"].as_i64().unwrap();
    assert!(
        (expires - since - 1_800_000).abs() < 5_000,
        "expires 30 min after taking: {doc}"
    );
    let mut v2 = d.clone();
    v2["description"] = json!("bob's change");
    let (st, body) = call(client().put(wf(other, "")).bearer_auth(&bob_t).json(&v2)).await;
    assert_eq!(st, 423, "{body}");
    assert!(body["message"].as_str().unwrap().contains(&alice), "{body}");
    for (req, what) in [
        (
            client().post(wf(other, "/lock")).bearer_auth(&bob_t),
            "lock",
        ),
        (
            client()
                .post(wf(other, "/versions/1/restore"))
                .bearer_auth(&bob_t),
            "restore",
        ),
        (
            client().delete(wf(other, "/lock")).bearer_auth(&bob_t),
            "release",
        ),
        (client().delete(wf(other, "")).bearer_auth(&bob_t), "delete"),
    ] {
        let (st, body) = call(req).await;
        assert_eq!(st, 423, "{what}: {body}");
    }
    let (_, doc) = call(client().get(wf(&s1, "")).bearer_auth(&bob_t)).await;
    assert_eq!(doc["version"], 1, "nothing changed");
    // The holder edits; the lock stays, renewing keeps its start.
    let mut v3 = d.clone();
    v3["description"] = json!("alice's change");
    let (st, body) = call(client().put(wf(&s1, "")).bearer_auth(&alice_t).json(&v3)).await;
    assert_eq!(st, 200, "{body}");
    let (_, l) = call(client().post(wf(&s1, "/lock")).bearer_auth(&alice_t)).await;
    assert_eq!(l["since"], since);
    // An administrator breaks it (audited with the holder); then bob may edit.
    let (st, body) = call(client().delete(wf(other, "/lock")).bearer_auth(&admin)).await;
    assert_eq!(st, 204, "{body}");
    let (st, body) = call(client().put(wf(other, "")).bearer_auth(&bob_t).json(&v2)).await;
    assert_eq!(st, 200, "{body}");
    let (st, _) = call(client().delete(wf(&s1, "/lock")).bearer_auth(&alice_t)).await;
    assert_eq!(st, 409, "not locked any more");
    let audit = audit_of(&s1, "workflow.lock").await;
    assert!(
        audit.iter().any(|e| e["action"] == "workflow.lock.break"
            && e["user"] == "admin"
            && e["detail"]["holder"] == alice),
        "{audit:?}"
    );

    // The run lock: concurrency 1, across the servers.
    let first = execute(&s1, &alice_t, &id).await;
    let (st, body) = call(
        client()
            .post(other.url("/services/workflow/execute"))
            .bearer_auth(&bob_t)
            .form(&[("wf_id", id.as_str())]),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["result"], "fail", "{body}");
    assert!(body["message"].as_str().unwrap().contains(&first), "{body}");
    let (_, list) = call(
        client()
            .get(s1.url("/api/v1/executions"))
            .bearer_auth(&admin)
            .query(&[("wf_id", id.as_str())]),
    )
    .await;
    assert_eq!(list["total"], 1, "nothing else started: {list}");
    let (st, _) = control(&s1, &admin, &first, "stop").await;
    assert_eq!(st, 200);
    let (st, body) = call(
        client()
            .post(other.url("/services/workflow/execute"))
            .bearer_auth(&bob_t)
            .form(&[("wf_id", id.as_str())]),
    )
    .await;
    assert_eq!(st, 200, "a run may start once the other ended: {body}");
    let second = body["execution_id"].as_str().unwrap().to_owned();
    control(other, &admin, &second, "stop").await;
    if let Some(s2) = s2 {
        s2.finish().await;
    }
    s1.finish().await;
}

/// A decision that sets a `FAILED` run going again counts against the run lock: with
/// `concurrency: 1` and another run active, a retry answers 409 naming that run and changes
/// nothing; once it has ended, the same retry goes through.
#[tokio::test]
async fn a_retry_that_revives_a_failed_run_respects_the_run_lock() {
    let hook = Hook::start();
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let mut d = def(
        "dr",
        json!([
            { "name": "switch", "type": "http", "method": "POST", "url": hook.url("/switch"),
              "expect_status": 200 },
            { "name": "settle", "type": "sleep", "seconds": 30 },
        ]),
    );
    d["concurrency"] = json!(1);
    let id = create_wf(&s, &admin, d).await;

    hook.script(&[status_reply(500)]);
    let failed = execute(&s, &admin, &id).await;
    wait_for(&s, &admin, &failed, "FAILED", T).await;
    let running = execute(&s, &admin, &id).await;
    let deadline = Instant::now() + T;
    while hook.seen().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second run never called the hook"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let retry = json!({ "action": "retry", "reason": "the switch is back" });
    let (st, body) = act(&s, &admin, &failed, "switch", retry.clone()).await;
    assert_eq!(st, 409, "{body}");
    assert!(
        body.to_string().contains(&running),
        "names the active run: {body}"
    );
    let e = wait_for(&s, &admin, &failed, "FAILED", T).await;
    assert_eq!(step(&e, "switch")["status"], "FAILED", "{e}");
    assert_eq!(step(&e, "switch")["attempts"], 1, "{e}");
    assert!(step(&e, "switch")["actions"]
        .as_array()
        .is_none_or(|a| a.is_empty()));
    assert_eq!(hook.seen().len(), 2, "nothing was sent again");

    let (st, body) = control(&s, &admin, &running, "stop").await;
    assert_eq!(st, 200, "{body}");
    wait_for(&s, &admin, &running, "STOPPED", T).await;
    let (st, body) = act(&s, &admin, &failed, "switch", retry).await;
    assert_eq!(st, 200, "{body}");
    let deadline = Instant::now() + T;
    while hook.seen().len() < 3 {
        assert!(Instant::now() < deadline, "the retry never called the hook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    control(&s, &admin, &failed, "stop").await;
    s.finish().await;
}

/// `GET /api/v1/executions?wf_id=`: the executions of a workflow.
async fn executions_of(s: &Server, token: &str, wf_id: &str) -> Vec<Value> {
    let (st, list) = call(
        client()
            .get(s.url("/api/v1/executions"))
            .bearer_auth(token)
            .query(&[("wf_id", wf_id), ("limit", "1000")]),
    )
    .await;
    assert_eq!(st, 200, "{list}");
    list["executions"].as_array().cloned().unwrap_or_default()
}

/// Waits until step `name` of the execution has a child execution; returns its id.
async fn child_of(s: &Server, token: &str, exec_id: &str, name: &str) -> String {
    let deadline = Instant::now() + T;
    loop {
        let e = execution(s, token, exec_id).await;
        if let Some(c) = step(&e, name)["child_execution_id"].as_str() {
            return c.to_owned();
        }
        assert!(Instant::now() < deadline, "no child started: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 22 item 4: a `workflow` step runs a child execution with parameters, succeeds when
/// it completes and fails when it fails; the child names its parent and the parent's step its
/// child; stop, pause and resume of the parent reach the child; a child of a missing workflow
/// fails the step naming it; a cycle (A → A, A → B → A) is refused when it is defined, naming
/// it, and nothing is stored.
#[tokio::test]
async fn a_sub_workflow_runs_as_a_child_that_follows_its_parent() {
    let hook = Hook::start();
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;

    let mut child = def(
        "dr",
        json!([
            { "name": "call", "type": "http", "method": "POST",
              "url": hook.url("/child/${who}"), "expect_status": 200 },
            { "name": "settle", "type": "sleep", "seconds": 0 },
        ]),
    );
    child["params"] = json!({ "who": null });
    let child_id = create_wf(&s, &admin, child.clone()).await;
    let mut parent = def(
        "dr",
        json!([
            { "name": "prepare", "type": "sleep", "seconds": 0 },
            { "name": "failover", "type": "workflow", "workflow": child_id,
              "params": { "who": "${site}" } },
            { "name": "after", "type": "sleep", "seconds": 0 },
        ]),
    );
    parent["params"] = json!({ "site": "seoul" });
    let parent_id = create_wf(&s, &admin, parent).await;

    // Completes: the child ran with the parent's value, and each side names the other.
    hook.set_default(status_reply(200));
    let run = execute(&s, &admin, &parent_id).await;
    let e = wait_for(&s, &admin, &run, "COMPLETED", T).await;
    let c = step(&e, "failover")["child_execution_id"]
        .as_str()
        .expect("the parent's step names its child")
        .to_owned();
    assert_eq!(step(&e, "failover")["type"], "workflow", "{e}");
    assert_eq!(step(&e, "failover")["status"], "SUCCEEDED", "{e}");
    assert_eq!(step(&e, "after")["status"], "SUCCEEDED", "{e}");
    let ce = execution(&s, &admin, &c).await;
    assert_eq!(ce["parent_execution_id"], run, "{ce}");
    assert_eq!(ce["wf_id"], child_id, "{ce}");
    assert_eq!(ce["status"], "COMPLETED", "{ce}");
    assert_eq!(ce["params"]["who"], "seoul", "{ce}");
    assert!(e.get("parent_execution_id").is_none(), "{e}");
    assert_eq!(
        hook.seen()
            .iter()
            .filter(|r| r.path == "/child/seoul")
            .count(),
        1
    );
    assert_eq!(executions_of(&s, &admin, &child_id).await.len(), 1);

    // Fails: the child's failure fails the step, naming the child.
    hook.set_default(status_reply(500));
    let run = execute(&s, &admin, &parent_id).await;
    let e = wait_for(&s, &admin, &run, "FAILED", T).await;
    let c = step(&e, "failover")["child_execution_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(step(&e, "failover")["status"], "FAILED", "{e}");
    let why = step(&e, "failover")["error"].as_str().unwrap_or_default();
    assert!(why.contains(&c) && why.contains("FAILED"), "{e}");
    assert_eq!(step(&e, "after")["status"], "SKIPPED", "{e}");
    assert_eq!(execution(&s, &admin, &c).await["status"], "FAILED");

    // Stop, pause and resume reach the child.
    let mut slow = def(
        "dr",
        json!([{ "name": "wait", "type": "sleep", "seconds": 60 }]),
    );
    slow["name"] = json!(unique("slow-child"));
    let slow_id = create_wf(&s, &admin, slow).await;
    let holder = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([
                { "name": "run-slow", "type": "workflow", "workflow": slow_id },
                { "name": "after", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let run = execute(&s, &admin, &holder).await;
    let c = child_of(&s, &admin, &run, "run-slow").await;
    wait_for(&s, &admin, &c, "RUNNING", T).await;
    let (st, body) = control(&s, &admin, &run, "pause").await;
    assert_eq!(st, 200, "{body}");
    wait_for(&s, &admin, &c, "PAUSED", T).await;
    let (st, body) = control(&s, &admin, &run, "resume").await;
    assert_eq!(st, 200, "{body}");
    wait_for(&s, &admin, &c, "RUNNING", T).await;
    let (st, body) = control(&s, &admin, &run, "stop").await;
    assert_eq!(st, 200, "{body}");
    wait_for(&s, &admin, &run, "STOPPED", T).await;
    let ce = wait_for(&s, &admin, &c, "STOPPED", T).await;
    assert_eq!(step(&ce, "wait")["status"], "STOPPED", "{ce}");
    let e = execution(&s, &admin, &run).await;
    assert_eq!(step(&e, "run-slow")["status"], "STOPPED", "{e}");
    assert_eq!(step(&e, "after")["status"], "SKIPPED", "{e}");
    // The child's own controls are audited as the parent's were.
    let controls = audit_of(&s, "workflow.control").await;
    assert!(
        controls
            .iter()
            .any(|ev| ev["target"] == c.as_str() && ev["detail"]["to"] == "STOPPED"),
        "{controls:?}"
    );

    // A child of a missing workflow fails the step, naming it.
    let missing = unique("no-such-wf");
    let orphan = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([{ "name": "call-missing", "type": "workflow", "workflow": missing }]),
        ),
    )
    .await;
    let run = execute(&s, &admin, &orphan).await;
    let e = wait_for(&s, &admin, &run, "FAILED", T).await;
    let why = step(&e, "call-missing")["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains(&missing) && why.contains("does not exist"),
        "{e}"
    );
    assert!(
        step(&e, "call-missing")["child_execution_id"].is_null(),
        "{e}"
    );

    // Cycles are refused when they are defined, naming them; nothing is stored.
    let mut selfish = def(
        "dr",
        json!([{ "name": "again", "type": "workflow", "workflow": "PLACEHOLDER" }]),
    );
    let name = selfish["name"].as_str().unwrap().to_owned();
    selfish["steps"][0]["workflow"] = json!(name);
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/workflows"))
            .bearer_auth(&admin)
            .json(&selfish),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("cycle") && msg.contains(&format!("'{name}' → '{name}'")),
        "{body}"
    );
    let (_, found) = call(
        client()
            .get(s.url("/api/v1/workflows"))
            .bearer_auth(&admin)
            .query(&[("name", name.as_str())]),
    )
    .await;
    assert_eq!(found["total"], 0, "nothing stored: {found}");
    // A → B, then B → A.
    let b_def = def(
        "dr",
        json!([{ "name": "b", "type": "sleep", "seconds": 0 }]),
    );
    let b_name = b_def["name"].as_str().unwrap().to_owned();
    let b = create_wf(&s, &admin, b_def.clone()).await;
    let a_def = def(
        "dr",
        json!([{ "name": "to-b", "type": "workflow", "workflow": b }]),
    );
    let a_name = a_def["name"].as_str().unwrap().to_owned();
    let a = create_wf(&s, &admin, a_def).await;
    let mut b2 = b_def.clone();
    b2["steps"] = json!([{ "name": "to-a", "type": "workflow", "workflow": a_name }]);
    let (st, body) = call(
        client()
            .put(s.url(&format!("/api/v1/workflows/{b}")))
            .bearer_auth(&admin)
            .json(&b2),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("'{b_name}' → '{a_name}' → '{b_name}'")),
        "{body}"
    );
    assert_eq!(body["field"], "steps[0].workflow", "{body}");
    let (_, doc) = call(
        client()
            .get(s.url(&format!("/api/v1/workflows/{b}")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(doc["version"], 1, "nothing stored: {doc}");
    let _ = a;
    s.finish().await;
}

/// The child is created in the same transaction as the attempt that starts it: a `kill -9`
/// of the server while the child runs leaves one child, which the restarted server drives to
/// its end, and the parent's step then succeeds — no second child for the attempt.
#[tokio::test]
async fn a_sub_workflow_survives_kill_9_with_one_child() {
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let child_id = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([{ "name": "work", "type": "sleep", "seconds": 3 }]),
        ),
    )
    .await;
    let parent_id = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([
                { "name": "run-child", "type": "workflow", "workflow": child_id },
                { "name": "after", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let run = execute(&s, &admin, &parent_id).await;
    let c = child_of(&s, &admin, &run, "run-child").await;
    wait_for(&s, &admin, &c, "RUNNING", T).await;
    let mut old = s;
    let s = restart_after_kill9(&mut old, wf_opts());
    let admin = admin_token(&s).await;
    let e = wait_for(&s, &admin, &run, "COMPLETED", T).await;
    assert_eq!(step(&e, "run-child")["child_execution_id"], c, "{e}");
    assert_eq!(step(&e, "run-child")["attempts"], 1, "{e}");
    assert_eq!(execution(&s, &admin, &c).await["status"], "COMPLETED");
    let children = executions_of(&s, &admin, &child_id).await;
    assert_eq!(children.len(), 1, "one child for the attempt: {children:?}");
    s.finish().await;
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Issue 22 item 5: a `password` parameter is given at execute time, reaches the task through
/// the step's `env`, is `****` in every answer, the audit and the task's output, is stored only
/// sealed with the vault's keys while the run lasts and not at all once it ends (the SQLite
/// files or a `pg_dump`), never in the log; a sealed vault refuses the run; definitions that
/// would leak it are refused.
#[tokio::test]
async fn a_password_parameter_is_sealed_masked_and_gone_when_the_run_ends() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let node = node_name("pwp");
    let agent = Agent::start(&s, &node).await;
    let secret = format!("Wombat-{}-pw", unique(""));
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("got.txt");
    let task = unique("wf-pw");
    let script = format!(
        "#!/bin/sh\nprintf '%s' \"$DB_PASS\" > {got}\necho \"site=$1 pw=$DB_PASS.\"\necho \"err:$DB_PASS\" >&2\n",
        got = got.display()
    );
    approved_task(&s, &admin, &task, &script, json!({})).await;
    let steps = json!([
        { "name": "use", "type": "task", "task": task, "nodes": [node],
          "arguments": ["${site}"], "env": { "DB_PASS": "${db_pass}" } },
        { "name": "hold", "type": "approval", "role": "System Admin" },
    ]);
    let mut d = def("dr", steps.clone());
    d["params"] = json!({ "db_pass": { "type": "password" }, "site": "seoul" });

    // Definitions that would store or show it in clear are refused, naming the field.
    for (params, steps, field) in [
        (
            json!({ "db_pass": { "type": "password", "default": "x" } }),
            json!([{ "name": "s", "type": "sleep", "seconds": 0 }]),
            "params.db_pass.default",
        ),
        (
            json!({ "db_pass": { "type": "secret" } }),
            json!([{ "name": "s", "type": "sleep", "seconds": 0 }]),
            "params.db_pass.type",
        ),
        (
            json!({ "db_pass": { "type": "password" } }),
            json!([{ "name": "use", "type": "task", "task": task, "nodes": [node],
                     "arguments": ["${db_pass}"] }]),
            "steps[0].arguments[0]",
        ),
        (
            json!({ "db_pass": { "type": "password" } }),
            json!([{ "name": "use", "type": "task", "task": task, "nodes": [node],
                     "env": { "PATH": "${db_pass}" } }]),
            "steps[0].env.PATH",
        ),
    ] {
        let mut bad = def("dr", steps);
        bad["params"] = params;
        let (st, body) = call(
            client()
                .post(s.url("/api/v1/workflows"))
                .bearer_auth(&admin)
                .json(&bad),
        )
        .await;
        assert_eq!(st, 400, "{field}: {body}");
        assert_eq!(body["field"], field, "{body}");
    }
    let id = create_wf(&s, &admin, d).await;
    let (st, body) = execute_with(&s, &admin, &id, json!({})).await;
    assert_eq!(st, 400, "the password is required: {body}");
    assert!(body.to_string().contains("params.db_pass"), "{body}");

    let (st, body) = execute_with(&s, &admin, &id, json!({ "db_pass": secret })).await;
    assert_eq!(st, 200, "{body}");
    let run = body["execution_id"].as_str().unwrap().to_owned();
    let e = wait_until(&s, &admin, &run, "the approval waits", T, |e| {
        step(e, "hold")["status"] == "RUNNING"
    })
    .await;
    assert_eq!(step(&e, "use")["status"], "SUCCEEDED", "{e}");
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        secret,
        "the task got the value"
    );
    assert_eq!(e["params"]["db_pass"], "****", "{e}");
    assert_eq!(e["params"]["site"], "seoul", "{e}");
    // Stored sealed while the run lasts: a row, but never the value.
    assert_eq!(
        s.sql(&format!(
            "SELECT COUNT(*) FROM workflow_secret_params WHERE execution_id = '{run}'"
        )),
        "1"
    );
    assert!(
        !contains(&s.store_bytes(), &secret),
        "the value is in the store"
    );
    let no = step(&e, "use")["taskInstanceNo"].as_i64().unwrap();
    let n = node_detail(&s, &admin, no, &node, None).await;
    let out = String::from_utf8(b64(&n["encbase64out"])).unwrap();
    let err = String::from_utf8(b64(&n["encbase64err"])).unwrap();
    assert_eq!(out, "site=seoul pw=****.\n", "stdout: {out:?}");
    assert_eq!(err, "err:****\n", "stderr: {err:?}");

    // The run ends: the ciphertext goes too.
    let (st, body) = call(
        client()
            .post(s.url(&format!("/api/v1/executions/{run}/steps/hold/decision")))
            .bearer_auth(&admin)
            .json(&json!({ "action": "approve" })),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    wait_for(&s, &admin, &run, "COMPLETED", T).await;
    assert_eq!(
        s.sql(&format!(
            "SELECT COUNT(*) FROM workflow_secret_params WHERE execution_id = '{run}'"
        )),
        "0"
    );

    // Every answer shows `****`, never the value.
    let (_, _, auditor) = user_with_roles(&s, &["Auditor"]).await;
    let mut answers = Vec::new();
    for path in [
        format!("/api/v1/executions/{run}"),
        format!("/api/v1/executions/{run}/report"),
        format!("/api/v1/executions/{run}/report?format=csv"),
        format!("/api/v1/executions/{run}/events"),
        format!("/services/workflow/status?execution_id={run}"),
        format!("/api/v1/task-instances/{no}"),
        "/api/v1/audit?limit=1000".to_owned(),
    ] {
        let token = if path.starts_with("/api/v1/audit") {
            &auditor
        } else {
            &admin
        };
        let r = client()
            .get(s.url(&path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        answers.push((path, r.text().await.unwrap()));
    }
    for (path, text) in &answers {
        assert!(!text.contains(&secret), "{path} shows the value: {text}");
    }
    let execute_events = audit_of(&s, "workflow.execute").await;
    let ev = execute_events
        .iter()
        .find(|ev| ev["target"] == run.as_str())
        .expect("the execute is audited");
    assert_eq!(ev["detail"]["params"]["db_pass"], "****", "{ev}");
    // Console: the run page shows `****`.
    let page = client()
        .get(s.url(&format!("/console/executions/{run}")))
        .header("Cookie", format!("__Host-haechi_session={admin}"))
        .header("Accept-Language", "en")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("****") && !page.contains(&secret));
    assert!(
        !contains(&s.store_bytes(), &secret),
        "the value is in the store"
    );
    assert!(!s.logs().contains(&secret), "the value is in the log");

    // A sealed vault refuses a run with a password, and starts nothing.
    drop(agent);
    let mut old = s;
    old.stop();
    let zero_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let s = Server::start_with(
        old.same_state()
            .arg("--no-local-agent")
            .env("HAECHI_VAULT_MASTER_KEY", zero_key),
    );
    let admin = admin_token(&s).await;
    let before = executions_of(&s, &admin, &id).await.len();
    let (st, body) = execute_with(&s, &admin, &id, json!({ "db_pass": secret })).await;
    assert_eq!(st, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("db_pass"),
        "{body}"
    );
    assert_eq!(executions_of(&s, &admin, &id).await.len(), before);
    assert!(!s.logs().contains(&secret), "the value is in the log");
    s.finish().await;
}

/// The edit lock expires when its holder leaves it idle (`workflow.edit_lock_idle_secs`): the
/// next user's edit takes it over, audited with the holder it ended; the holder's use renews
/// it.
#[tokio::test]
async fn an_idle_edit_lock_expires_and_the_next_user_takes_it() {
    let s = Server::start_with(wf_opts().env("HAECHI_WORKFLOW__EDIT_LOCK_IDLE_SECS", "2"));
    let admin = admin_token(&s).await;
    let editor = role_with(&s, &admin, &["workflow.view", "workflow.manage"]).await;
    let (alice, _, alice_t) = user_with_roles(&s, &[&editor]).await;
    let (bob, _, bob_t) = user_with_roles(&s, &[&editor]).await;
    let d = def(
        "dr",
        json!([{ "name": "s", "type": "sleep", "seconds": 0 }]),
    );
    let id = create_wf(&s, &alice_t, d.clone()).await;
    let url = |p: &str| s.url(&format!("/api/v1/workflows/{id}{p}"));
    let (st, l) = call(client().post(url("/lock")).bearer_auth(&alice_t)).await;
    assert_eq!(st, 200, "{l}");
    let (since, expires) = (l["since"].as_i64().unwrap(), l["expires"].as_i64().unwrap());
    assert!((expires - since - 2_000).abs() < 500, "{l}");
    let mut v2 = d.clone();
    v2["description"] = json!("bob's");
    let (st, body) = call(client().put(url("")).bearer_auth(&bob_t).json(&v2)).await;
    assert_eq!(st, 423, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("expires"),
        "{body}"
    );
    // Alice's edit renews it.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (st, body) = call(client().put(url("")).bearer_auth(&alice_t).json(&d)).await;
    assert_eq!(st, 200, "{body}");
    let (_, doc) = call(client().get(url("")).bearer_auth(&bob_t)).await;
    assert!(
        doc["edit_lock"]["expires"].as_i64().unwrap() > expires,
        "{doc}"
    );
    assert_eq!(doc["edit_lock"]["since"], since, "{doc}");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (st, body) = call(client().put(url("")).bearer_auth(&bob_t).json(&v2)).await;
    assert_eq!(st, 423, "renewed by the edit: {body}");
    // Idle past its expiry: bob's edit goes through and the lock is gone.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (st, body) = call(client().put(url("")).bearer_auth(&bob_t).json(&v2)).await;
    assert_eq!(st, 200, "{body}");
    let (_, doc) = call(client().get(url("")).bearer_auth(&bob_t)).await;
    assert!(doc.get("edit_lock").is_none(), "{doc}");
    assert_eq!(doc["description"], "bob's");
    // And bob may take it; alice then gets 423 naming bob.
    let (st, l) = call(client().post(url("/lock")).bearer_auth(&bob_t)).await;
    assert_eq!(st, 200, "{l}");
    assert_eq!(l["holder"], bob);
    let (st, body) = call(client().put(url("")).bearer_auth(&alice_t).json(&d)).await;
    assert_eq!(st, 423, "{body}");
    assert!(body["message"].as_str().unwrap().contains(&bob), "{body}");
    let expired = audit_of(&s, "workflow.lock.expire").await;
    assert!(
        expired.iter().any(|e| e["user"] == bob.as_str()
            && e["detail"]["holder"] == alice.as_str()
            && e["target"] == id.as_str()),
        "{expired:?}"
    );
    s.finish().await;
}
