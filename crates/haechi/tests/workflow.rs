//! The workflow engine through the real server: definitions and their checks, the DAG
//! scheduler (order, fan-out/fan-in, retries, timeouts, on_failure, parameters), approvals,
//! every control and every 409, and bad input that never yields a 500.
//! Durability (kill -9, two servers) is in `workflow_durable.rs`; task steps with real agents
//! in `workflow_tasks.rs`; MDRM's wire shapes in `mdrm.rs`.

mod common;
mod workflow_support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use workflow_support::*;

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| Server::start_with(wf_opts()))
}

const T: Duration = Duration::from_secs(30);

fn ms(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not a time: {v}"))
}

#[tokio::test]
async fn definitions_are_versioned_grouped_listed_and_deleted() {
    let s = server();
    let admin = admin_token(s).await;
    let name = unique("재해복구_전환");
    let group = unique("DR");
    let yaml = format!(
        "name: {name}\ngroup: {group}\ndescription: 전환 절차\nparams:\n  target: db2\nsteps:\n  - name: 준비\n    type: sleep\n    seconds: 0\n  - name: call\n    type: http\n    method: post\n    url: http://127.0.0.1:9/${{target}}\n    retries: 2\n    retry_delay_secs: 0.5\n"
    );
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/workflows"))
            .bearer_auth(&admin)
            .header("content-type", "application/yaml")
            .body(yaml),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["version"], 1);
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(
        id.parse::<i64>().is_ok(),
        "ids are numbers as strings: {body}"
    );

    let (st, doc) = call(
        client()
            .get(s.url(&format!("/api/v1/workflows/{id}")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200, "{doc}");
    assert_eq!(doc["name"], name);
    assert_eq!(doc["group"], group);
    assert_eq!(doc["description"], "전환 절차");
    assert_eq!(doc["steps"][0]["name"], "준비");
    assert_eq!(doc["steps"][1]["method"], "POST");
    assert_eq!(doc["steps"][1]["retry_delay_secs"], json!(0.5));
    assert_eq!(doc["params"]["target"]["default"], "db2");

    // A new version; the name can be used as the key too.
    let v2 = json!({ "name": name, "group": group, "steps": [{ "name": "only", "type": "sleep", "seconds": 0 }] });
    let (st, body) = call(
        client()
            .put(s.url(&format!("/api/v1/workflows/{}", enc(&name))))
            .bearer_auth(&admin)
            .json(&v2),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, json!({ "id": id, "version": 2 }));
    let (_, doc) = call(
        client()
            .get(s.url(&format!("/api/v1/workflows/{id}?version=1")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(
        doc["steps"].as_array().unwrap().len(),
        2,
        "version 1 is kept: {doc}"
    );
    assert_eq!(doc["current_version"], 2);
    let (_, versions) = call(
        client()
            .get(s.url(&format!("/api/v1/workflows/{id}/versions")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);

    // Listed by group, in MDRM's list too.
    let (_, list) = call(
        client()
            .get(s.url("/api/v1/workflows"))
            .query(&[("group", &group)])
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["workflows"][0]["id"], id);

    // A run keeps the version it started with.
    let exec_id = execute(s, &admin, &id).await;
    let e = wait_for(s, &admin, &exec_id, "COMPLETED", T).await;
    assert_eq!(e["version"], 2);

    // A duplicate live name is a conflict.
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/workflows"))
            .bearer_auth(&admin)
            .json(&v2),
    )
    .await;
    assert_eq!(st, 409, "{body}");

    // Deleted: not listed, not runnable (404 in MDRM's shape), its runs stay readable.
    let (st, _) = call(
        client()
            .delete(s.url(&format!("/api/v1/workflows/{id}")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 204);
    let (_, list) = call(
        client()
            .get(s.url("/services/workflow/list"))
            .bearer_auth(&admin),
    )
    .await;
    assert!(
        !list["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == id),
        "{list}"
    );
    let (st, body) = call(
        client()
            .post(s.url("/services/workflow/execute"))
            .bearer_auth(&admin)
            .form(&[("wf_id", id.as_str())]),
    )
    .await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(body["result"], "fail");
    let e = execution(s, &admin, &exec_id).await;
    assert_eq!(e["status"], "COMPLETED");
    let (st, _) = call(
        client()
            .delete(s.url(&format!("/api/v1/workflows/{id}")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 404);
    // The name is free again.
    create_wf(s, &admin, v2).await;
}

#[tokio::test]
async fn validation_names_each_problem() {
    let s = server();
    let admin = admin_token(s).await;
    let post = |body: Value| {
        let admin = admin.clone();
        async move {
            call(
                client()
                    .post(s.url("/api/v1/workflows"))
                    .bearer_auth(&admin)
                    .json(&body),
            )
            .await
        }
    };
    let sleep = |n: &str| json!({ "name": n, "type": "sleep", "seconds": 1 });
    let cases: Vec<(Value, &str)> = vec![
        (
            def("g", json!([sleep("a"), sleep("a")])),
            "steps[1].name: 'a' is already the name of steps[0]",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "sleep", "seconds": 1, "needs": ["ghost"] }]),
            ),
            "needs 'ghost', which is not a step",
        ),
        (
            def(
                "g",
                json!([
            { "name": "a", "type": "sleep", "seconds": 1, "needs": ["c"] },
            sleep("b"), sleep("c")]),
            ),
            "a → b → c → a",
        ),
        (
            def("g", json!([{ "name": "a", "type": "teleport" }])),
            "unknown step type 'teleport'",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "sleep", "seconds": 1, "sleep_harder": true }]),
            ),
            "steps[0].sleep_harder: step 'a': unknown field",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "task", "task": unique("no-such-task"), "nodes": ["n1"] }]),
            ),
            "does not exist",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "approval", "role": "Nobody In Particular" }]),
            ),
            "role 'Nobody In Particular' does not exist",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "http", "url": "http://h/${missing}" }]),
            ),
            "'${missing}' names no parameter",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "sleep", "seconds": "soon" }]),
            ),
            "steps[0].seconds",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "sleep", "seconds": 1, "retries": -1 }]),
            ),
            "steps[0].retries",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "sleep", "seconds": 1, "timeout_secs": 0 }]),
            ),
            "steps[0].timeout_secs",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "sleep", "seconds": 1, "on_failure": "retry" }]),
            ),
            "on_failure",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "http", "url": "gopher://x" }]),
            ),
            "steps[0].url",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "http", "url": "http://x", "method": "FETCH" }]),
            ),
            "steps[0].method",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "http", "url": "http://x", "expect_status": 700 }]),
            ),
            "expect_status",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "task", "task": "t", "nodes": ["n1"],
            "env_from_vault": { "LD_PRELOAD": { "credentialId": 1, "attribute": "password" } } }]),
            ),
            "steps[0].env_from_vault.LD_PRELOAD",
        ),
        (
            def(
                "g",
                json!([{ "name": "a", "type": "task", "task": "t", "nodes": ["n1"],
            "env_from_vault": { "1BAD": { "credentialId": 1, "attribute": "password" } } }]),
            ),
            "environment variable name",
        ),
        (def("g", json!([])), "at least one step"),
        (def("g", json!("not a list")), "steps"),
        (
            json!({ "group": "g", "steps": [sleep("a")] }),
            "name: is required",
        ),
        (
            json!({ "name": "x", "steps": [sleep("a")] }),
            "group: is required",
        ),
        (
            json!({ "name": "123", "group": "g", "steps": [sleep("a")] }),
            "only digits",
        ),
        (
            json!({ "name": "x", "group": "g", "steps": [sleep("a")], "stepz": [] }),
            "stepz: unknown field",
        ),
        (json!([1, 2]), "must be an object"),
    ];
    for (body, needle) in cases {
        let (st, answer) = post(body.clone()).await;
        assert_eq!(st, 400, "{body} → {answer}");
        let msg = answer["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(needle),
            "expected {needle:?} in {msg:?} for {body}"
        );
    }
    // Malformed bodies and content types.
    let (st, answer) = call(
        client()
            .post(s.url("/api/v1/workflows"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body("{nope"),
    )
    .await;
    assert_eq!(st, 400, "{answer}");
    let (st, answer) = call(
        client()
            .post(s.url("/api/v1/workflows"))
            .bearer_auth(&admin)
            .header("content-type", "application/yaml")
            .body("name: ["),
    )
    .await;
    assert_eq!(st, 400, "{answer}");
    let (st, _) = call(
        client()
            .post(s.url("/api/v1/workflows"))
            .bearer_auth(&admin)
            .header("content-type", "text/csv")
            .body("a,b"),
    )
    .await;
    assert_eq!(st, 415);
    // Nothing was stored by any of it.
    let (_, list) = call(
        client()
            .get(s.url("/api/v1/workflows"))
            .query(&[("group", "g")])
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(list["total"], 0, "{list}");
}

#[tokio::test]
async fn a_plain_list_runs_in_order_and_logs_every_transition() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([
                { "name": "one", "type": "sleep", "seconds": 0.2 },
                { "name": "two", "type": "sleep", "seconds": 0.2 },
                { "name": "three", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let exec_id = execute(s, &op, &id).await;
    let e = wait_for(s, &op, &exec_id, "COMPLETED", T).await;
    let (one, two, three) = (step(&e, "one"), step(&e, "two"), step(&e, "three"));
    for st in [one, two, three] {
        assert_eq!(st["status"], "SUCCEEDED", "{e}");
        assert_eq!(st["attempts"], 1);
    }
    assert!(ms(&two["started_at"]) >= ms(&one["ended_at"]), "{e}");
    assert!(ms(&three["started_at"]) >= ms(&two["ended_at"]), "{e}");
    assert!(ms(&one["ended_at"]) - ms(&one["started_at"]) >= 200);
    let st = status(s, &op, &exec_id).await;
    assert_eq!(
        st,
        json!({ "execution_id": exec_id, "status": "COMPLETED", "current_step": "three", "progress": 100 })
    );
    let log: Vec<String> = events(s, &op, &exec_id)
        .await
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["step"].as_str().unwrap_or("run"),
                e["status"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        log,
        [
            "run:RUNNING",
            "one:RUNNING",
            "one:SUCCEEDED",
            "two:RUNNING",
            "two:SUCCEEDED",
            "three:RUNNING",
            "three:SUCCEEDED",
            "run:COMPLETED"
        ],
    );
}

#[tokio::test]
async fn fan_out_runs_in_parallel_and_fan_in_waits_for_all() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([
                { "name": "start", "type": "sleep", "seconds": 0 },
                { "name": "b1", "type": "sleep", "seconds": 1, "needs": ["start"] },
                { "name": "b2", "type": "sleep", "seconds": 1, "needs": ["start"] },
                { "name": "b3", "type": "sleep", "seconds": 1.5, "needs": ["start"] },
                { "name": "join", "type": "sleep", "seconds": 0, "needs": ["b1", "b2", "b3"] },
            ]),
        ),
    )
    .await;
    let t0 = Instant::now();
    let exec_id = execute(s, &op, &id).await;
    let e = wait_for(s, &op, &exec_id, "COMPLETED", T).await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(3200),
        "parallel branches took {took:?} (sequential would be 3.5 s)"
    );
    let starts: Vec<i64> = ["b1", "b2", "b3"]
        .iter()
        .map(|n| ms(&step(&e, n)["started_at"]))
        .collect();
    let spread = starts.iter().max().unwrap() - starts.iter().min().unwrap();
    assert!(spread < 200, "the branches started {spread} ms apart: {e}");
    let last_branch_end = ["b1", "b2", "b3"]
        .iter()
        .map(|n| ms(&step(&e, n)["ended_at"]))
        .max()
        .unwrap();
    assert!(
        ms(&step(&e, "join")["started_at"]) >= last_branch_end,
        "{e}"
    );
    assert!(ms(&step(&e, "join")["started_at"]) - ms(&step(&e, "b3")["ended_at"]) < 500);
}

#[tokio::test]
async fn retries_back_off_and_then_succeed_or_fail() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let hook = Hook::start();
    hook.script(&[status_reply(500), status_reply(503)]);
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([
                { "name": "call", "type": "http", "method": "POST", "url": hook.url("/flaky"),
                  "retries": 3, "retry_delay_secs": 0.3, "retry_backoff": 2 },
            ]),
        ),
    )
    .await;
    let exec_id = execute(s, &op, &id).await;
    let e = wait_for(s, &op, &exec_id, "COMPLETED", T).await;
    assert_eq!(step(&e, "call")["attempts"], 3, "{e}");
    assert_eq!(step(&e, "call")["result"]["status"], 200);
    let seen = hook.seen();
    assert_eq!(seen.len(), 3);
    let gap1 = seen[1].at - seen[0].at;
    let gap2 = seen[2].at - seen[1].at;
    assert!(
        gap1 >= Duration::from_millis(280),
        "first retry after {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(580),
        "second retry after {gap2:?} (backoff ×2)"
    );
    let keys: Vec<&str> = seen
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            format!("{exec_id}/call/1"),
            format!("{exec_id}/call/2"),
            format!("{exec_id}/call/3")
        ]
    );

    // Failing every time: attempts = retries + 1, then FAILED; the cap bounds the delay.
    let bad = Hook::start();
    bad.set_default(status_reply(500));
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([
                { "name": "call", "type": "http", "url": bad.url("/down"), "retries": 2,
                  "retry_delay_secs": 5, "retry_max_delay_secs": 0.2 },
                { "name": "after", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let exec_id = execute(s, &op, &id).await;
    let e = wait_for(s, &op, &exec_id, "FAILED", T).await;
    assert_eq!(step(&e, "call")["status"], "FAILED");
    assert_eq!(step(&e, "call")["attempts"], 3);
    assert!(
        step(&e, "call")["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{e}"
    );
    assert_eq!(step(&e, "after")["status"], "SKIPPED");
    for action in ["stop", "pause", "resume"] {
        let (st, body) = control(s, &op, &exec_id, action).await;
        assert_eq!(st, 409, "{action} on FAILED: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("FAILED"),
            "{body}"
        );
    }
    assert!(
        e["error"].as_str().unwrap().contains("step 'call' failed"),
        "{e}"
    );
    let seen = bad.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen[2].at - seen[0].at < Duration::from_secs(3),
        "the cap was not applied"
    );
}

#[tokio::test]
async fn timeouts_fail_the_step() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let slow = Hook::start();
    slow.set_default(ok(5000));
    let id = create_wf(s, &admin, def("ops", json!([
        { "name": "nap", "type": "sleep", "seconds": 30, "timeout_secs": 0.5, "on_failure": "continue" },
        { "name": "slow", "type": "http", "url": slow.url("/slow"), "timeout_secs": 0.5 },
    ]))).await;
    let t0 = Instant::now();
    let exec_id = execute(s, &op, &id).await;
    let e = wait_for(s, &op, &exec_id, "FAILED", T).await;
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "timeouts took {:?}",
        t0.elapsed()
    );
    assert!(
        step(&e, "nap")["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{e}"
    );
    assert_eq!(step(&e, "nap")["status"], "FAILED");
    assert!(
        step(&e, "slow")["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{e}"
    );
}

#[tokio::test]
async fn on_failure_continue_goes_on_and_stop_ends_the_run() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let bad = Hook::start();
    bad.set_default(status_reply(404));
    let id = create_wf(s, &admin, def("ops", json!([
        { "name": "optional", "type": "http", "url": bad.url("/x"), "on_failure": "continue" },
        { "name": "next", "type": "sleep", "seconds": 0 },
    ]))).await;
    let exec_id = execute(s, &op, &id).await;
    let e = wait_for(s, &op, &exec_id, "COMPLETED", T).await;
    assert_eq!(step(&e, "optional")["status"], "FAILED");
    assert_eq!(step(&e, "next")["status"], "SUCCEEDED");
    assert_eq!(e["progress"], 100);

    // A failure with on_failure: stop cuts the parallel branch and skips what has not started.
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([
                { "name": "long", "type": "sleep", "seconds": 30, "needs": [] },
                { "name": "broken", "type": "http", "url": bad.url("/y"), "needs": [] },
                { "name": "after", "type": "sleep", "seconds": 0, "needs": ["long", "broken"] },
            ]),
        ),
    )
    .await;
    let exec_id = execute(s, &op, &id).await;
    let e = wait_for(s, &op, &exec_id, "FAILED", T).await;
    assert_eq!(step(&e, "broken")["status"], "FAILED");
    assert_eq!(step(&e, "long")["status"], "STOPPED");
    assert_eq!(step(&e, "after")["status"], "SKIPPED");
    let st = status(s, &op, &exec_id).await;
    assert_eq!(st["status"], "FAILED");
    assert_eq!(st["progress"], 33, "one of three steps ended: {st}");
}

#[tokio::test]
async fn parameters_are_whole_strings_with_defaults() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let hook = Hook::start();
    let mut d = def(
        "ops",
        json!([
            { "name": "call", "type": "http", "method": "PUT", "url": hook.url("/svc/${target}?mode=${mode}"),
              "headers": { "X-Site": "${site}" },
              "body": { "target": "${target}", "note": "$${literal} ${note}", "n": 5 } },
        ]),
    );
    d["params"] = json!({ "target": null, "mode": "fast", "site": { "default": "서울", "description": "site" }, "note": "x; rm -rf / && echo" });
    let id = create_wf(s, &admin, d).await;
    let (st, body) = execute_with(s, &op, &id, json!({ "target": "db2", "mode": 7 })).await;
    assert_eq!(st, 200, "{body}");
    let exec_id = body["execution_id"].as_str().unwrap().to_owned();
    let e = wait_for(s, &op, &exec_id, "COMPLETED", T).await;
    assert_eq!(
        e["params"],
        json!({ "target": "db2", "mode": "7", "site": "서울", "note": "x; rm -rf / && echo" })
    );
    let seen = hook.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].path, "/svc/db2?mode=7");
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        body,
        json!({ "target": "db2", "note": "${literal} x; rm -rf / && echo", "n": 5 })
    );

    // A required parameter missing, or one the workflow does not take: 400, no execution.
    let (st, body) = execute_with(s, &op, &id, json!({})).await;
    assert_eq!(st, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("params.target"),
        "{body}"
    );
    assert_eq!(body["result"], "fail");
    let (st, body) = execute_with(s, &op, &id, json!({ "target": "a", "extra": "b" })).await;
    assert_eq!(st, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("params.extra"),
        "{body}"
    );
    let (st, body) = execute_with(s, &op, &id, json!({ "target": ["a"] })).await;
    assert_eq!(st, 400, "{body}");
    // In a form, params is a JSON text.
    let (st, body) = call(
        client()
            .post(s.url("/services/workflow/execute"))
            .bearer_auth(&op)
            .form(&[("wf_id", id.as_str()), ("params", "{\"target\":\"db3\"}")]),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = call(
        client()
            .post(s.url("/services/workflow/execute"))
            .bearer_auth(&op)
            .form(&[("wf_id", id.as_str()), ("params", "target=db3")]),
    )
    .await;
    assert_eq!(st, 400, "{body}");
}

#[tokio::test]
async fn approvals_are_decided_by_the_role_only() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let (_, _, approver) = user_with_roles(s, &["Task Approver"]).await;
    let (_, _, other) = user_with_roles(s, &["Task Developer"]).await;
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([
                { "name": "gate", "type": "approval", "role": "Task Approver" },
                { "name": "go", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let decide = |tok: &str, exec: &str, step: &str, action: &str| {
        let tok = tok.to_owned();
        let path = format!("/api/v1/executions/{exec}/steps/{}/decision", enc(step));
        let action = action.to_owned();
        async move {
            call(
                client()
                    .post(s.url(&path))
                    .bearer_auth(&tok)
                    .json(&json!({ "action": action, "comment": "확인함" })),
            )
            .await
        }
    };

    let exec_id = execute(s, &op, &id).await;
    wait_until(s, &op, &exec_id, "the gate waits", T, |e| {
        step(e, "gate")["status"] == "RUNNING"
    })
    .await;
    // Not yet startable / unknown / wrong kind.
    let (st, body) = decide(&approver, &exec_id, "go", "approve").await;
    assert_eq!(st, 409, "{body}");
    let (st, _) = decide(&approver, &exec_id, "nope", "approve").await;
    assert_eq!(st, 404);
    let (st, body) = decide(&approver, &exec_id, "gate", "maybe").await;
    assert_eq!(st, 400, "{body}");
    // Refused for others (admin included: the role decides).
    for tok in [&other, &admin, &op] {
        let (st, body) = decide(tok, &exec_id, "gate", "approve").await;
        assert_eq!(st, 403, "{body}");
    }
    let (st, body) = decide(&approver, &exec_id, "gate", "approve").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["decision"]["action"], "approve");
    assert_eq!(body["decision"]["comment"], "확인함");
    let e = wait_for(s, &op, &exec_id, "COMPLETED", T).await;
    assert_eq!(step(&e, "gate")["status"], "SUCCEEDED");
    let (st, _) = decide(&approver, &exec_id, "gate", "approve").await;
    assert_eq!(st, 409, "a finished run takes no decisions");

    // Rejected: the step failed, the run failed.
    let exec_id = execute(s, &op, &id).await;
    wait_until(s, &op, &exec_id, "the gate waits", T, |e| {
        step(e, "gate")["status"] == "RUNNING"
    })
    .await;
    let (st, body) = decide(&approver, &exec_id, "gate", "reject").await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = decide(&approver, &exec_id, "gate", "approve").await;
    assert!(st == 409, "decided twice: {st} {body}");
    let e = wait_for(s, &op, &exec_id, "FAILED", T).await;
    assert_eq!(step(&e, "gate")["status"], "FAILED");
    assert!(
        step(&e, "gate")["error"]
            .as_str()
            .unwrap()
            .contains("rejected by"),
        "{e}"
    );
    assert_eq!(step(&e, "go")["status"], "SKIPPED");

    // An approval with a timeout fails when nobody decides.
    let id = create_wf(s, &admin, def("ops", json!([
        { "name": "gate", "type": "approval", "role": "Task Approver", "timeout_secs": 0.5 },
    ]))).await;
    let exec_id = execute(s, &op, &id).await;
    let e = wait_for(s, &op, &exec_id, "FAILED", T).await;
    assert!(
        step(&e, "gate")["error"]
            .as_str()
            .unwrap()
            .contains("no decision"),
        "{e}"
    );
}

#[tokio::test]
async fn pause_lets_the_running_step_finish_and_resume_goes_on() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([
                { "name": "first", "type": "sleep", "seconds": 1 },
                { "name": "second", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let exec_id = execute(s, &op, &id).await;
    wait_until(s, &op, &exec_id, "first runs", T, |e| {
        step(e, "first")["status"] == "RUNNING"
    })
    .await;
    let (st, body) = control(s, &op, &exec_id, "pause").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["result"], "success");
    assert_eq!(body["status"], "PAUSED");
    let st = status(s, &op, &exec_id).await;
    assert_eq!(st["status"], "PAUSED");
    assert_eq!(st["current_step"], "first", "the running step: {st}");
    // The running step finishes; the next one does not start.
    let e = wait_until(s, &op, &exec_id, "first ends", T, |e| {
        step(e, "first")["status"] == "SUCCEEDED"
    })
    .await;
    assert_eq!(e["status"], "PAUSED");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = execution(s, &op, &exec_id).await;
    assert_eq!(step(&e, "second")["status"], "WAITING", "{e}");
    let st = status(s, &op, &exec_id).await;
    assert_eq!(
        st,
        json!({ "execution_id": exec_id, "status": "PAUSED", "current_step": "first", "progress": 50 })
    );
    // 409s while paused.
    let (st, body) = control(s, &op, &exec_id, "pause").await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["result"], "fail");
    assert!(
        body["message"].as_str().unwrap().contains("PAUSED"),
        "{body}"
    );
    let (st, body) = control(s, &op, &exec_id, "resume").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "RUNNING");
    wait_for(s, &op, &exec_id, "COMPLETED", T).await;
    for action in ["stop", "pause", "resume"] {
        let (st, body) = control(s, &op, &exec_id, action).await;
        assert_eq!(st, 409, "{action} on COMPLETED: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("COMPLETED"),
            "{body}"
        );
    }
    // Paused during the last step: the run completes when it ends.
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([{ "name": "last", "type": "sleep", "seconds": 0.5 }]),
        ),
    )
    .await;
    let exec_id = execute(s, &op, &id).await;
    wait_until(s, &op, &exec_id, "last runs", T, |e| {
        step(e, "last")["status"] == "RUNNING"
    })
    .await;
    assert_eq!(control(s, &op, &exec_id, "pause").await.0, 200);
    let e = wait_for(s, &op, &exec_id, "COMPLETED", T).await;
    assert_eq!(step(&e, "last")["status"], "SUCCEEDED");
}

#[tokio::test]
async fn stop_cuts_what_runs_and_every_control_that_does_not_fit_is_a_409() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([
                { "name": "long", "type": "sleep", "seconds": 60 },
                { "name": "never", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let exec_id = execute(s, &op, &id).await;
    wait_until(s, &op, &exec_id, "long runs", T, |e| {
        step(e, "long")["status"] == "RUNNING"
    })
    .await;
    let (st, body) = control(s, &op, &exec_id, "resume").await;
    assert_eq!(st, 409, "resume a RUNNING run: {body}");
    let t0 = Instant::now();
    let (st, body) = control(s, &op, &exec_id, "stop").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "STOPPED");
    let e = execution(s, &op, &exec_id).await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(e["status"], "STOPPED");
    assert_eq!(step(&e, "long")["status"], "STOPPED");
    assert_eq!(step(&e, "never")["status"], "SKIPPED");
    let st = status(s, &op, &exec_id).await;
    assert_eq!(st["current_step"], "long");
    for action in ["stop", "pause", "resume"] {
        let (st, body) = control(s, &op, &exec_id, action).await;
        assert_eq!(st, 409, "{action} on STOPPED: {body}");
    }
    // Stop a paused run.
    let exec_id = execute(s, &op, &id).await;
    wait_until(s, &op, &exec_id, "long runs", T, |e| {
        step(e, "long")["status"] == "RUNNING"
    })
    .await;
    assert_eq!(control(s, &op, &exec_id, "pause").await.0, 200);
    let (st, body) = control(s, &op, &exec_id, "stop").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(status(s, &op, &exec_id).await["status"], "STOPPED");
    // The run's driver lets go of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = execution(s, &op, &exec_id).await;
    assert_eq!(step(&e, "long")["status"], "STOPPED");
    // Bad actions and ids.
    let (st, body) = control(s, &op, &exec_id, "explode").await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["result"], "fail");
    let (st, body) = control(s, &op, "EXEC_19990101_0001", "stop").await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(body["result"], "fail");
}

#[tokio::test]
async fn bad_input_is_never_a_500() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([{ "name": "a", "type": "sleep", "seconds": 0 }]),
        ),
    )
    .await;
    let long = "x".repeat(10_000);
    let weird = [
        "",
        " ",
        "0",
        "-1",
        "9999999999999999999999",
        "EXEC_",
        "%00",
        "'; DROP TABLE workflows; --",
        "전환",
        long.as_str(),
    ];
    let c = client();
    for w in weird {
        for (path, form) in [
            (
                "/services/workflow/execute",
                vec![("wf_id", w), ("sync", "false")],
            ),
            (
                "/services/workflow/execute",
                vec![("wf_id", id.as_str()), ("sync", w)],
            ),
            (
                "/services/workflow/execute",
                vec![("wf_id", id.as_str()), ("params", w)],
            ),
            (
                "/services/workflow/control",
                vec![("execution_id", w), ("action", "stop")],
            ),
            (
                "/services/workflow/control",
                vec![("execution_id", "EXEC_20240101_0001"), ("action", w)],
            ),
        ] {
            let (st, body) = call(c.post(s.url(path)).bearer_auth(&op).form(&form)).await;
            assert!(
                st < 500 && st != 200 || (path.ends_with("execute") && st == 200),
                "{path} {form:?} → {st} {body}"
            );
            if st != 200 {
                assert_eq!(body["result"], "fail", "{body}");
            }
        }
        let (st, body) = call(
            c.get(s.url("/services/workflow/status"))
                .bearer_auth(&op)
                .query(&[("execution_id", w)]),
        )
        .await;
        assert!((400..500).contains(&st), "status {w:?} → {st} {body}");
        for path in [
            format!("/api/v1/executions/{}", enc(w)),
            format!("/api/v1/workflows/{}", enc(w)),
            format!("/api/v1/executions?status={}", enc(w)),
            format!("/api/v1/executions?wf_id={}", enc(w)),
            format!("/api/v1/executions?from={}", enc(w)),
            format!("/api/v1/executions?limit={}", enc(w)),
            format!("/api/v1/workflows?offset={}", enc(w)),
            format!("/api/v1/workflows/{id}?version={}", enc(w)),
        ] {
            let (st, body) = call(c.get(s.url(&path)).bearer_auth(&admin)).await;
            assert!(st < 500, "{path} → {st} {body}");
        }
        let (st, body) = call(
            c.post(s.url(&format!(
                "/api/v1/executions/EXEC_20240101_0001/steps/{}/decision",
                enc(w)
            )))
            .bearer_auth(&admin)
            .json(&json!({ "action": w })),
        )
        .await;
        assert!((400..500).contains(&st), "decision {w:?} → {st} {body}");
    }
    // Wrong types in JSON bodies.
    for body in [
        json!({ "wf_id": [1] }),
        json!({ "wf_id": null }),
        json!({}),
        json!({ "wf_id": id, "sync": "perhaps" }),
        json!({ "wf_id": id, "sync": 7 }),
        json!({ "wf_id": id, "params": 5 }),
        json!({ "wf_id": { "a": 1 } }),
    ] {
        let (st, answer) = call(
            c.post(s.url("/services/workflow/execute"))
                .bearer_auth(&op)
                .json(&body),
        )
        .await;
        assert_eq!(st, 400, "{body} → {answer}");
        assert_eq!(answer["result"], "fail");
    }
    let (st, answer) = call(
        c.post(s.url("/services/workflow/execute"))
            .bearer_auth(&op)
            .header("content-type", "application/json")
            .body("{\"wf_id\":"),
    )
    .await;
    assert_eq!(st, 400, "{answer}");
    assert_eq!(answer["result"], "fail");
    let (st, answer) = call(
        c.post(s.url("/services/workflow/control"))
            .bearer_auth(&op)
            .json(&json!({ "execution_id": 5 })),
    )
    .await;
    assert_eq!(st, 400, "{answer}");
}

#[tokio::test]
async fn permissions_follow_the_roles() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let (_, _, dev) = user_with_roles(s, &["Task Developer"]).await;
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([{ "name": "a", "type": "sleep", "seconds": 5 }]),
        ),
    )
    .await;
    let c = client();
    // The operator lists, runs, reads and controls…
    let (st, _) = call(c.get(s.url("/services/workflow/list")).bearer_auth(&op)).await;
    assert_eq!(st, 200);
    let exec_id = execute(s, &op, &id).await;
    status(s, &op, &exec_id).await;
    assert_eq!(control(s, &op, &exec_id, "stop").await.0, 200);
    // …but does not define workflows.
    let (st, body) = call(
        c.post(s.url("/api/v1/workflows"))
            .bearer_auth(&op)
            .json(&def(
                "g",
                json!([{ "name": "a", "type": "sleep", "seconds": 0 }]),
            )),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    // A role without the workflow permissions gets 403 on each MDRM endpoint, in MDRM's shape.
    for req in [
        c.get(s.url("/services/workflow/list")).bearer_auth(&dev),
        c.post(s.url("/services/workflow/execute"))
            .bearer_auth(&dev)
            .form(&[("wf_id", id.as_str())]),
        c.get(s.url("/services/workflow/status"))
            .bearer_auth(&dev)
            .query(&[("execution_id", exec_id.as_str())]),
        c.post(s.url("/services/workflow/control"))
            .bearer_auth(&dev)
            .form(&[("execution_id", exec_id.as_str()), ("action", "pause")]),
        c.get(s.url(&format!("/api/v1/executions/{exec_id}")))
            .bearer_auth(&dev),
        c.get(s.url("/api/v1/executions")).bearer_auth(&dev),
    ] {
        let (st, body) = call(req).await;
        assert_eq!(st, 403, "{body}");
        if body.get("result").is_some() {
            assert_eq!(body["result"], "fail");
        }
    }
    // No token: 401 in MDRM's shape.
    let (st, body) = call(c.get(s.url("/services/workflow/list"))).await;
    assert_eq!(st, 401);
    assert_eq!(body["result"], "fail");
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn executions_are_listed_with_filters_audited_and_measured() {
    let s = server();
    let (admin, op) = tokens(s).await;
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let (approver_id, _, approver) = user_with_roles(s, &["Task Approver"]).await;
    let id = create_wf(
        s,
        &admin,
        def(
            "ops",
            json!([
                { "name": "gate", "type": "approval", "role": "Task Approver" },
            ]),
        ),
    )
    .await;
    let a = execute(s, &op, &id).await;
    wait_until(s, &op, &a, "gate", T, |e| {
        step(e, "gate")["status"] == "RUNNING"
    })
    .await;
    let (st, _) = call(
        client()
            .post(s.url(&format!("/api/v1/executions/{a}/steps/gate/decision")))
            .bearer_auth(&approver)
            .json(&json!({ "action": "approve" })),
    )
    .await;
    assert_eq!(st, 200);
    wait_for(s, &op, &a, "COMPLETED", T).await;
    let b = execute(s, &op, &id).await;
    assert_eq!(control(s, &op, &b, "stop").await.0, 200);
    assert_eq!(control(s, &op, &b, "stop").await.0, 409);

    let (st, list) = call(
        client()
            .get(s.url("/api/v1/executions"))
            .bearer_auth(&op)
            .query(&[("wf_id", id.as_str())]),
    )
    .await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["total"], 2);
    assert_eq!(list["executions"][0]["execution_id"], b, "newest first");
    let (_, list) = call(
        client()
            .get(s.url("/api/v1/executions"))
            .bearer_auth(&op)
            .query(&[("wf_id", id.as_str()), ("status", "completed")]),
    )
    .await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["executions"][0]["execution_id"], a);
    let (_, list) = call(
        client()
            .get(s.url("/api/v1/executions"))
            .bearer_auth(&op)
            .query(&[("wf_id", id.as_str()), ("limit", "1"), ("offset", "1")]),
    )
    .await;
    assert_eq!(list["executions"].as_array().unwrap().len(), 1);
    assert_eq!(list["executions"][0]["execution_id"], a);

    // Audit: execute, control (also the refused one), decision.
    let (st, audit) = call(
        client()
            .get(s.url("/api/v1/audit"))
            .bearer_auth(&auditor)
            .query(&[("action", "workflow"), ("limit", "1000")]),
    )
    .await;
    assert_eq!(st, 200, "{audit}");
    let events = audit["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"))
        .clone();
    let has = |action: &str, target: &str, outcome: &str| {
        events.iter().any(|e| {
            e["action"] == action
                && e["target"].as_str().unwrap_or("").starts_with(target)
                && e["outcome"] == outcome
        })
    };
    assert!(has("workflow.execute", &a, "success"), "{audit}");
    assert!(has("workflow.execute", &b, "success"));
    assert!(has("workflow.control", &b, "success"));
    assert!(has("workflow.control", &b, "failure"));
    assert!(has("workflow.decision", &format!("{a}/gate"), "success"));
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "workflow.decision" && e["user"] == approver_id),
        "decisions name the decider"
    );
    assert!(has("workflow.create", &id, "success"));

    // Prometheus metrics.
    let text = metrics_text(s).await;
    for m in [
        "haechi_workflow_executions_started_total",
        "haechi_workflow_executions_ended_total",
        "haechi_workflow_step_duration_seconds",
    ] {
        assert!(text.contains(m), "{m} missing from /metrics");
    }
    assert!(text.contains("status=\"COMPLETED\""));
}

#[tokio::test]
async fn the_cli_follows_a_run_and_fails_with_it() {
    let s = server();
    let admin = admin_token(s).await;
    let name = unique("cli_wf");
    let mut d = json!({ "name": name, "group": "cli", "params": { "who": null }, "steps": [
        { "name": "hello", "type": "sleep", "seconds": 0.1 },
        { "name": "call", "type": "http", "url": "http://127.0.0.1:9/${who}", "timeout_secs": 2 },
    ]});
    create_wf(s, &admin, d.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let session = cli_login(s, dir.path());
    // Port 9 (discard) refuses: the http step fails, the run fails, the exit code says so.
    let (code, out, err) = cli_wf(&session, &["run", &name, "--param", "who=me", "--follow"]).await;
    assert_eq!(code, Some(2), "{out}{err}");
    for needle in [
        "step hello RUNNING",
        "step hello SUCCEEDED",
        "step call RUNNING",
        "step call FAILED",
        "run FAILED",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    // A run that completes exits 0.
    d["steps"] = json!([{ "name": "only", "type": "sleep", "seconds": 0 }]);
    let (st, _) = call(
        client()
            .put(s.url(&format!("/api/v1/workflows/{}", enc(&name))))
            .bearer_auth(&admin)
            .json(&d),
    )
    .await;
    assert_eq!(st, 200);
    let (code, out, err) = cli_wf(&session, &["run", &name, "--param", "who=me", "--follow"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("COMPLETED"), "{out}");
    // A bad --param is refused before anything runs.
    let (code, _, err) = cli_wf(&session, &["run", &name, "--param", "noequals"]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("NAME=VALUE"), "{err}");
    // The other subcommands.
    let (code, out, _) = cli_wf(&session, &["show", &name]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("\"only\""), "{out}");
    let (code, out, _) = cli_wf(&session, &["list", "--group", "cli"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains(&name), "{out}");
}

/// Runs a one-workflow list of http steps (each `on_failure: continue`) on `s` and returns the
/// ended execution view.
async fn run_http_steps(s: &Server, steps: Value) -> Value {
    let (admin, op) = tokens(s).await;
    let id = create_wf(s, &admin, def("egress", steps)).await;
    let exec_id = execute(s, &op, &id).await;
    wait_until(s, &op, &exec_id, "the run ends", T, |e| {
        e["status"] == "COMPLETED" || e["status"] == "FAILED"
    })
    .await
}

fn step_error(e: &Value, name: &str) -> String {
    step(e, name)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn http_steps_obey_the_egress_rules_and_read_a_capped_body() {
    // Everything on loopback: 127.0.0.2 is denied, and so are the addresses `localhost`
    // resolves to, so a name is refused after resolution.
    let s = Server::start_with(
        wf_opts()
            .env("HAECHI_WORKFLOW__HTTP_DENY", "127.0.0.2, 127.0.0.1, ::1")
            .env("HAECHI_WORKFLOW__HTTP_BODY_MAX_BYTES", "2048"),
    );
    let denied = Hook::start_on("127.0.0.2");
    let endless = endless_body("127.0.0.3");
    let port = denied.addr.port();
    let e = run_http_steps(
        &s,
        json!([
            { "name": "literal", "type": "http", "url": denied.url("/x"), "on_failure": "continue" },
            { "name": "named", "type": "http", "method": "PUT", "needs": [],
              "url": format!("http://localhost:{port}/x"), "on_failure": "continue" },
            { "name": "link_local", "type": "http", "needs": [],
              "url": "http://[fe80::1]:9/x", "on_failure": "continue" },
            { "name": "big", "type": "http", "needs": [], "timeout_secs": 20,
              "url": format!("http://{endless}/big"), "on_failure": "continue" },
        ]),
    )
    .await;
    let literal = step_error(&e, "literal");
    assert!(
        literal.contains("127.0.0.2 is denied by rule '127.0.0.2' of workflow.http_deny"),
        "{e}"
    );
    let named = step_error(&e, "named");
    assert!(
        named.starts_with("egress refused: localhost (") && named.contains("workflow.http_deny"),
        "{e}"
    );
    assert!(
        step_error(&e, "link_local").contains("rule 'fe80::/10' of the built-in deny list"),
        "{e}"
    );
    // The body is read up to the cap only, and the step still succeeds.
    let big = step(&e, "big");
    assert_eq!(big["status"], "SUCCEEDED", "{e}");
    assert_eq!(big["result"]["truncated"], true, "{e}");
    assert_eq!(big["result"]["body"].as_str().unwrap().len(), 2048, "{e}");
    assert_eq!(denied.connections(), 0, "a denied address saw a connection");

    // A parameter may not choose the host unless the definition says so; when it may, the
    // rules still apply to where it points.
    let (admin, op) = tokens(&s).await;
    let mut d = def(
        "egress",
        json!([{ "name": "call", "type": "http", "url": "http://${host}/x" }]),
    );
    d["params"] = json!({ "host": null });
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/workflows"))
            .bearer_auth(&admin)
            .json(&d),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["field"], "steps[0].url", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("host_from_params"),
        "{body}"
    );
    d["steps"][0]["host_from_params"] = json!(true);
    let id = create_wf(&s, &admin, d).await;
    let (st, body) = execute_with(&s, &op, &id, json!({ "host": denied.addr.to_string() })).await;
    assert_eq!(st, 200, "{body}");
    let exec_id = body["execution_id"].as_str().unwrap();
    let e = wait_for(&s, &op, exec_id, "FAILED", T).await;
    assert!(step_error(&e, "call").contains("workflow.http_deny"), "{e}");
    assert_eq!(denied.connections(), 0, "a denied address saw a connection");
    s.finish().await;

    // With an allow list, only what it names is reachable.
    let s = Server::start_with(wf_opts().env("HAECHI_WORKFLOW__HTTP_ALLOW", "127.0.0.3/32"));
    let allowed = Hook::start_on("127.0.0.3");
    let outside = Hook::start_on("127.0.0.4");
    let e = run_http_steps(
        &s,
        json!([
            { "name": "in", "type": "http", "url": allowed.url("/in"), "on_failure": "continue" },
            { "name": "out", "type": "http", "needs": [], "url": outside.url("/out"), "on_failure": "continue" },
        ]),
    )
    .await;
    assert_eq!(step(&e, "in")["status"], "SUCCEEDED", "{e}");
    assert_eq!(allowed.seen().len(), 1);
    assert!(
        step_error(&e, "out").contains("127.0.0.4 is not in workflow.http_allow"),
        "{e}"
    );
    assert_eq!(
        outside.connections(),
        0,
        "an address outside the allow list saw a connection"
    );
    s.finish().await;
}
