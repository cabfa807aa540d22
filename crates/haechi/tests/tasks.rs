//! Tasks through the admin API: revisions, approval and who may give it, validation, task
//! chains (only when every node succeeded), and schedules.

mod common;
mod exec_support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use exec_support::*;
use serde_json::{json, Value};

struct Env {
    server: Server,
    a: Agent,
    b: Agent,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    shared_env(&ENV, || async {
        // Self-approval stays off here: the approval rules are under test.
        let mut opts = exec_opts();
        opts.env
            .retain(|(k, _)| k != "HAECHI_TASKS__ALLOW_SELF_APPROVAL");
        let server = Server::start_with(opts);
        let a = Agent::start(&server, &node_name("ta")).await;
        let b = Agent::start(&server, &node_name("tb")).await;
        Env { server, a, b }
    })
}

async fn post(s: &Server, token: &str, path: &str, body: Value) -> (u16, Value) {
    call(client().post(s.url(path)).bearer_auth(token).json(&body)).await
}

async fn get(s: &Server, token: &str, path: &str) -> (u16, Value) {
    call(client().get(s.url(path)).bearer_auth(token)).await
}

/// An approval action; `approve` and `reject` name the task's current revision (what the
/// caller reviewed).
async fn approval(s: &Server, token: &str, id: &str, action: &str) -> (u16, Value) {
    let revision = if action == "request" {
        Value::Null
    } else {
        get(s, token, &format!("/api/v1/tasks/{id}")).await.1["revisionNo"].clone()
    };
    post(
        s,
        token,
        &format!("/api/v1/tasks/{id}/approval"),
        json!({ "action": action, "revisionNo": revision, "comment": "자동 테스트" }),
    )
    .await
}

/// Creates a task as `dev` and has `approver` approve it.
async fn dev_approved(s: &Server, dev: &str, approver: &str, spec: Value) -> Value {
    let (st, body) = post(s, dev, "/api/v1/tasks", spec.clone()).await;
    assert_eq!(st, 201, "{body}");
    let id = spec["id"].as_str().unwrap();
    assert_eq!(approval(s, dev, id, "request").await.0, 200);
    let (st, body) = approval(s, approver, id, "approve").await;
    assert_eq!(st, 200, "{body}");
    body
}

struct People {
    dev: String,
    approver: String,
    operator: String,
}

async fn people(s: &Server) -> People {
    let (_, _, dev) = user_with_roles(s, &["Task Developer"]).await;
    let (_, _, approver) = user_with_roles(s, &["Task Approver"]).await;
    let (_, _, operator) = user_with_roles(s, &["Workflow Operator"]).await;
    People {
        dev,
        approver,
        operator,
    }
}

#[tokio::test]
async fn revisions_and_the_approval_flow() {
    let e = env();
    let s = &e.server;
    let p = people(s).await;
    let id = unique("flow");
    let spec = json!({ "id": id, "scriptName": "v1.sh", "script": "echo v1", "osUser": current_user(),
                       "description": "첫 번째 판", "timeoutSecs": 30 });
    let (st, t) = post(s, &p.dev, "/api/v1/tasks", spec).await;
    assert_eq!(st, 201, "{t}");
    assert_eq!(
        (t["revisionNo"].as_i64(), t["apprvStatus"].as_str()),
        (Some(1), Some("N"))
    );
    assert_eq!(t["description"], "첫 번째 판");
    assert_eq!(
        (
            t["execOndemand"].as_str(),
            t["execScheduler"].as_str(),
            t["execTask"].as_str()
        ),
        (Some("E"), Some("D"), Some("D"))
    );

    // Approving needs a request first; the developer cannot approve; the approver can.
    assert_eq!(approval(s, &p.approver, &id, "approve").await.0, 409);
    assert_eq!(approval(s, &p.dev, &id, "request").await.0, 200);
    assert_eq!(approval(s, &p.dev, &id, "request").await.0, 409);
    assert_eq!(approval(s, &p.dev, &id, "approve").await.0, 403);
    assert_eq!(approval(s, &p.operator, &id, "request").await.0, 403);
    let (st, t) = approval(s, &p.approver, &id, "reject").await;
    assert_eq!(st, 200);
    assert_eq!(t["apprvStatus"], "R");
    assert_eq!(approval(s, &p.dev, &id, "request").await.0, 200);
    let (st, t) = approval(s, &p.approver, &id, "approve").await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["apprvStatus"], "A");
    assert_eq!(t["apprvComment"], "자동 테스트");
    assert_eq!(
        approval(s, &p.dev, &id, "request").await.0,
        409,
        "already approved"
    );
    let (st, _) = post(
        s,
        &p.dev,
        &format!("/api/v1/tasks/{id}/approval"),
        json!({ "action": "bless" }),
    )
    .await;
    assert_eq!(st, 400);

    // An edit makes revision 2 and resets approval; revision 1 stays readable.
    let (st, t) = call(
        client()
            .put(s.url(&format!("/api/v1/tasks/{id}")))
            .bearer_auth(&p.dev)
            .json(&json!({ "script": "echo v2", "scriptName": "v2.sh" })),
    )
    .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        (
            t["revisionNo"].as_i64(),
            t["apprvStatus"].as_str(),
            t["apprvUserId"].as_str()
        ),
        (Some(2), Some("N"), Some(""))
    );
    assert_eq!(t["timeoutSecs"], 30, "absent fields keep their value");
    assert_eq!(t["description"], "첫 번째 판");
    let (st, r1) = call(
        client()
            .get(s.url(&format!("/api/v1/tasks/{id}/revisions/1")))
            .bearer_auth(&p.dev),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        (
            r1["script"].as_str(),
            r1["scriptName"].as_str(),
            r1["revisionNo"].as_i64()
        ),
        (Some("echo v1"), Some("v1.sh"), Some(1))
    );
    let (_, revs) = call(
        client()
            .get(s.url(&format!("/api/v1/tasks/{id}/revisions")))
            .bearer_auth(&p.dev),
    )
    .await;
    assert_eq!(revs["revisions"].as_array().unwrap().len(), 2);
    assert_eq!(
        call(
            client()
                .get(s.url(&format!("/api/v1/tasks/{id}/revisions/3")))
                .bearer_auth(&p.dev)
        )
        .await
        .0,
        404
    );
    let (_, list) = call(
        client()
            .get(s.url("/opmate/task"))
            .query(&[("auth", p.dev.as_str()), ("id", id.as_str())]),
    )
    .await;
    assert_eq!(list["taskList"][0]["revisionNo"], 2);

    // An edited task no longer runs until approved again.
    let (st, body) = call(
        client()
            .post(s.url(&format!("/opmate/task/{id}/instance")))
            .query(&[("auth", &p.operator)])
            .json(&json!({ "nodeIdList": [e.a.node_id] })),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(approval(s, &p.dev, &id, "request").await.0, 200);
    assert_eq!(approval(s, &p.approver, &id, "approve").await.0, 200);
    let no = start(s, &p.operator, &id, &[&e.a.node_id], &[]).await;
    wait_end(s, &p.operator, no, Duration::from_secs(30)).await;
    let n = node_detail(s, &p.operator, no, &e.a.node_id, None).await;
    assert_eq!(b64(&n["encbase64out"]), b"v2\n");

    // Tasks are created by developers only; the audit log has the approval.
    let (st, _) = post(
        s,
        &p.approver,
        "/api/v1/tasks",
        json!({ "id": unique("x"), "scriptName": "a", "script": "a", "osUser": "root" }),
    )
    .await;
    assert_eq!(st, 403);
}

/// An approval action naming `revision` (or none).
async fn decide_at(
    s: &Server,
    token: &str,
    id: &str,
    action: &str,
    revision: Value,
) -> (u16, Value) {
    post(
        s,
        token,
        &format!("/api/v1/tasks/{id}/approval"),
        json!({ "action": action, "revisionNo": revision }),
    )
    .await
}

/// Issue 18 item 5: the approver reviewed revision 1; the developer edits the task and asks
/// again; an approval naming revision 1 is refused and changes nothing; the approver is shown
/// revision 2 and its diff to the last approved revision.
#[tokio::test]
async fn an_approval_is_pinned_to_the_revision_reviewed() {
    let s = &env().server;
    let p = people(s).await;
    let id = unique("pin");
    let spec = json!({ "id": id, "scriptName": "pin.sh", "script": "echo one\necho two\n",
                       "osUser": current_user(), "timeoutSecs": 30 });
    assert_eq!(post(s, &p.dev, "/api/v1/tasks", spec).await.0, 201);
    assert_eq!(
        decide_at(s, &p.dev, &id, "request", Value::Null).await.0,
        200
    );
    let (st, review) = get(s, &p.approver, &format!("/api/v1/tasks/{id}/approval")).await;
    assert_eq!(st, 200, "{review}");
    assert_eq!(review["revisionNo"], 1);
    assert_eq!(review["apprvStatus"], "Q");
    assert_eq!(review["approvedRevisionNo"], Value::Null);
    let diff = review["diff"].as_str().unwrap();
    assert!(
        diff.contains("+echo one\n") && diff.contains("+scriptName: pin.sh"),
        "{diff}"
    );

    // The developer changes the script after the approver read revision 1, and asks again.
    let (st, t) = call(
        client()
            .put(s.url(&format!("/api/v1/tasks/{id}")))
            .bearer_auth(&p.dev)
            .json(&json!({ "script": "echo one\nrm -rf /tmp/x\n" })),
    )
    .await;
    assert_eq!((st, t["revisionNo"].as_i64()), (200, Some(2)), "{t}");
    assert_eq!(decide_at(s, &p.dev, &id, "request", json!(2)).await.0, 200);

    // Deciding on what was reviewed (revision 1) is refused and changes nothing; so is a
    // decision that names no revision.
    for action in ["approve", "reject"] {
        let (st, body) = decide_at(s, &p.approver, &id, action, json!(1)).await;
        assert_eq!(st, 409, "{action}: {body}");
        assert!(body.to_string().contains("revision 2"), "{body}");
        let (st, body) = decide_at(s, &p.approver, &id, action, Value::Null).await;
        assert_eq!(st, 400, "{action}: {body}");
        assert!(body.to_string().contains("revisionNo"), "{body}");
    }
    let (_, t) = get(s, &p.approver, &format!("/api/v1/tasks/{id}")).await;
    assert_eq!(
        (t["revisionNo"].as_i64(), t["apprvStatus"].as_str()),
        (Some(2), Some("Q"))
    );

    // Approving the revision shown works; the next edit is reviewed against it.
    let (st, t) = decide_at(s, &p.approver, &id, "approve", json!(2)).await;
    assert_eq!((st, t["apprvStatus"].as_str()), (200, Some("A")), "{t}");
    let (st, _) = call(
        client()
            .put(s.url(&format!("/api/v1/tasks/{id}")))
            .bearer_auth(&p.dev)
            .json(&json!({ "script": "echo one\necho three\n", "timeoutSecs": 60 })),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        decide_at(s, &p.dev, &id, "request", Value::Null).await.0,
        200
    );
    let (_, review) = get(s, &p.approver, &format!("/api/v1/tasks/{id}/approval")).await;
    assert_eq!(
        (
            review["revisionNo"].as_i64(),
            review["approvedRevisionNo"].as_i64()
        ),
        (Some(3), Some(2))
    );
    let diff = review["diff"].as_str().unwrap();
    for line in [
        "-rm -rf /tmp/x\n",
        "+echo three\n",
        "-timeoutSecs: 30\n",
        "+timeoutSecs: 60\n",
        " echo one\n",
    ] {
        assert!(diff.contains(line), "{line:?} missing from\n{diff}");
    }
    assert!(
        diff.starts_with(&format!(
            "--- {id} revision 2 (last approved)\n+++ {id} revision 3\n"
        )),
        "{diff}"
    );
    assert_eq!(
        get(s, &p.approver, "/api/v1/tasks/no-such-task/approval")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn an_approver_may_not_approve_their_own_request() {
    let e = env();
    let s = &e.server;
    let admin = admin_token(s).await;
    let id = unique("self");
    let (st, _) = post(
        s,
        &admin,
        "/api/v1/tasks",
        json!({ "id": id, "scriptName": "s.sh", "script": "true", "osUser": "root" }),
    )
    .await;
    assert_eq!(st, 201);
    assert_eq!(approval(s, &admin, &id, "request").await.0, 200);
    let (st, body) = approval(s, &admin, &id, "approve").await;
    assert_eq!(st, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("another approver"),
        "{body}"
    );
    let (_, _, approver) = user_with_roles(s, &["Task Approver"]).await;
    assert_eq!(approval(s, &approver, &id, "approve").await.0, 200);
}

#[tokio::test]
async fn task_definitions_are_validated() {
    let e = env();
    let s = &e.server;
    let admin = admin_token(s).await;
    let base =
        || json!({ "id": unique("v"), "scriptName": "v.sh", "script": "true", "osUser": "root" });
    let with = |k: &str, v: Value| {
        let mut b = base();
        b[k] = v;
        b
    };
    let cases = vec![
        (with("schedule", json!("* * *")), "schedule"),
        (with("schedule", json!("*/2 * * * * * *")), "schedule"),
        (with("scheduleTz", json!("Mars/Base")), "scheduleTz"),
        (with("execOndemand", json!("Y")), "execOndemand"),
        (with("osUser", json!("bad user")), "osUser"),
        (with("nextTaskId", json!("does-not-exist")), "nextTaskId"),
        (with("timeoutSecs", json!(-1)), "timeoutSecs"),
        (with("id", json!("bad/id")), "id"),
        (
            json!({ "id": unique("v"), "script": "true", "osUser": "root" }),
            "scriptName",
        ),
        (
            json!({ "id": unique("v"), "scriptName": "x", "osUser": "root" }),
            "script",
        ),
        (
            {
                let mut b = base();
                b["execScheduler"] = json!("E");
                b["schedule"] = json!("0 3 * * *");
                b
            },
            "targetNodeIds",
        ),
    ];
    for (body, field) in cases {
        let (st, res) = post(s, &admin, "/api/v1/tasks", body.clone()).await;
        assert_eq!(st, 400, "{body}: {res}");
        assert!(
            res["message"].as_str().unwrap().contains(field),
            "{body}: {res}"
        );
    }
    let ok = with("schedule", json!("30 9 * * 1-5"));
    let (st, body) = post(s, &admin, "/api/v1/tasks", ok.clone()).await;
    assert_eq!(st, 201, "{body}");
    let (st, _) = post(s, &admin, "/api/v1/tasks", ok).await;
    assert_eq!(st, 409, "duplicate id");
    let (st, _) = call(
        client()
            .put(s.url("/api/v1/tasks/no-such"))
            .bearer_auth(&admin)
            .json(&json!({})),
    )
    .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn a_chain_fires_only_when_every_node_succeeded() {
    let e = env();
    let s = &e.server;
    let p = people(s).await;
    let second = unique("second");
    dev_approved(s, &p.dev, &p.approver, json!({
        "id": second, "scriptName": "2.sh", "script": "echo \"second $1\"", "osUser": current_user(), "execTask": "E"
    }))
    .await;
    let first = unique("first");
    let script = "#!/bin/sh\n[ \"$HAECHI_NODE_ID\" = \"$1\" ] && exit 1\necho first\n";
    dev_approved(s, &p.dev, &p.approver, json!({
        "id": first, "scriptName": "1.sh", "script": script, "osUser": current_user(), "nextTaskId": second
    }))
    .await;
    let nodes = [e.a.node_id.as_str(), e.b.node_id.as_str()];

    // Every node S: the chain starts on the same nodes, and the two point at each other.
    let no = start(s, &p.operator, &first, &nodes, &["nobody"]).await;
    wait_end(s, &p.operator, no, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let next_no = loop {
        let (_, list) = call(
            client()
                .get(s.url(&format!("/opmate/task/{first}/instance")))
                .query(&[("auth", &p.operator)]),
        )
        .await;
        let item = list["instanceList"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["taskInstanceNo"] == no)
            .cloned()
            .unwrap();
        assert_eq!(item["nextTaskId"], second);
        if let Some(n) = item["nextTaskInstanceNo"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            break n.parse::<i64>().unwrap();
        }
        assert!(Instant::now() < deadline, "the chain did not start: {item}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let detail = wait_end(s, &p.operator, next_no, Duration::from_secs(30)).await;
    assert_eq!(detail["instance"]["taskId"], second);
    assert_eq!(detail["instance"]["runnerGubun"], "T");
    assert_eq!(detail["instance"]["runnerId"], no.to_string());
    assert_eq!(detail["instance"]["prevTaskInstanceNo"], no);
    let mut chained: Vec<&str> = detail["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["nodeId"].as_str().unwrap())
        .collect();
    chained.sort();
    let mut want = nodes.to_vec();
    want.sort();
    assert_eq!(chained, want);
    let n = node_detail(s, &p.operator, next_no, nodes[0], None).await;
    assert_eq!(
        b64(&n["encbase64out"]),
        b"second nobody\n",
        "the chain gets the same arguments"
    );
    assert_eq!(n["runnerGubun"], "T");
    let (_, list) = call(
        client()
            .get(s.url(&format!("/opmate/task/{second}/instance")))
            .query(&[("auth", p.operator.as_str()), ("runnerId", &no.to_string())]),
    )
    .await;
    assert_eq!(list["totalCnt"], 1);

    // One node F: no chain.
    let no = start(s, &p.operator, &first, &nodes, &[nodes[1]]).await;
    wait_end(s, &p.operator, no, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, inst) = call(
        client()
            .get(s.url(&format!("/api/v1/task-instances/{no}")))
            .bearer_auth(&p.operator),
    )
    .await;
    assert!(inst["instance"]["nextTaskInstanceNo"].is_null(), "{inst}");
    let (_, list) = call(
        client()
            .get(s.url(&format!("/opmate/task/{second}/instance")))
            .query(&[("auth", p.operator.as_str()), ("runnerId", &no.to_string())]),
    )
    .await;
    assert_eq!(list["totalCnt"], 0);

    // A re-run of the failed node that fails again still does not chain.
    let (st, _) = call(
        client()
            .put(s.url(&format!("/opmate/taskinstance/{no}/node/{}", nodes[1])))
            .query(&[("auth", &p.operator)]),
    )
    .await;
    assert_eq!(st, 200);
    wait_end(s, &p.operator, no, Duration::from_secs(30)).await;
    let n = node_detail(s, &p.operator, no, nodes[1], None).await;
    assert_eq!(
        (n["execNo"].as_i64(), n["resultCd"].as_str()),
        (Some(2), Some("F"))
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, inst) = call(
        client()
            .get(s.url(&format!("/api/v1/task-instances/{no}")))
            .bearer_auth(&p.operator),
    )
    .await;
    assert!(inst["instance"]["nextTaskInstanceNo"].is_null(), "{inst}");
}

#[tokio::test]
async fn a_chain_to_a_task_with_exec_task_d_does_not_fire() {
    let e = env();
    let s = &e.server;
    let p = people(s).await;
    let second = unique("closed");
    dev_approved(
        s,
        &p.dev,
        &p.approver,
        json!({ "id": second, "scriptName": "2.sh", "script": "true", "osUser": current_user() }),
    )
    .await;
    let first = unique("opener");
    dev_approved(s, &p.dev, &p.approver, json!({ "id": first, "scriptName": "1.sh", "script": "true", "osUser": current_user(), "nextTaskId": second })).await;
    let no = start(s, &p.operator, &first, &[&e.a.node_id], &[]).await;
    wait_end(s, &p.operator, no, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, inst) = call(
        client()
            .get(s.url(&format!("/api/v1/task-instances/{no}")))
            .bearer_auth(&p.operator),
    )
    .await;
    assert!(inst["instance"]["nextTaskInstanceNo"].is_null(), "{inst}");
}

#[tokio::test]
async fn a_schedule_fires_on_its_nodes_as_the_scheduler() {
    let e = env();
    let s = &e.server;
    let p = people(s).await;
    let id = unique("cron");
    // Seconds are enabled in this test server (tasks.schedule_seconds); production is 5-field.
    dev_approved(
        s,
        &p.dev,
        &p.approver,
        json!({
            "id": id, "scriptName": "c.sh", "script": "echo \"tick $1\"", "osUser": current_user(),
            "execScheduler": "E", "schedule": "*/2 * * * * *", "scheduleTz": "Asia/Seoul",
            "targetNodeIds": [e.b.node_id], "arguments": ["from-cron"]
        }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let item = loop {
        let (_, list) = call(
            client()
                .get(s.url(&format!("/opmate/task/{id}/instance")))
                .query(&[("auth", &p.operator)]),
        )
        .await;
        if let Some(i) = list["instanceList"]
            .as_array()
            .and_then(|l| l.last())
            .cloned()
        {
            break i;
        }
        assert!(Instant::now() < deadline, "the schedule did not fire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(item["runnerGubun"], "S");
    assert_eq!(item["runnerId"], "scheduler");
    let no = item["taskInstanceNo"].as_i64().unwrap();
    wait_end(s, &p.operator, no, Duration::from_secs(30)).await;
    let n = node_detail(s, &p.operator, no, &e.b.node_id, None).await;
    assert_eq!(b64(&n["encbase64out"]), b"tick from-cron\n");
    // Each due time fires once: fire times are unique and two seconds apart.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let fires = s.sql(&format!(
        "SELECT fire_at FROM schedule_fires WHERE task_id = '{id}' ORDER BY fire_at"
    ));
    let fires: Vec<i64> = fires.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(fires.len() >= 2, "{fires:?}");
    for w in fires.windows(2) {
        assert!(
            w[1] - w[0] >= 2000 && (w[1] - w[0]) % 2000 == 0,
            "{fires:?}"
        );
    }
    // Turning the scheduler flag off (a new revision, approved again) stops it.
    let (st, _) = call(
        client()
            .put(s.url(&format!("/api/v1/tasks/{id}")))
            .bearer_auth(&p.dev)
            .json(&json!({ "execScheduler": "D" })),
    )
    .await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let count_after_edit: i64 = s
        .sql(&format!(
            "SELECT COUNT(*) FROM schedule_fires WHERE task_id = '{id}'"
        ))
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let count_later: i64 = s
        .sql(&format!(
            "SELECT COUNT(*) FROM schedule_fires WHERE task_id = '{id}'"
        ))
        .parse()
        .unwrap();
    assert_eq!(count_after_edit, count_later);
}
