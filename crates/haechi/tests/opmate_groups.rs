//! OPMATE as its users run it (issue 24): node groups with attributes and the agent's labels,
//! `@OPM_ATTR.KEY@` per node, a task's default targets, re-run safety across revisions, run
//! windows, dry run, runner groups and the CSV export. One server and four real agents are
//! shared by the tests of this file; each test uses its own groups, tasks and users.

mod common;
mod exec_support;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use exec_support::*;
use serde_json::{json, Value};

struct Env {
    server: Server,
    /// Labels `role=was`, `sys=billing`.
    a: Agent,
    /// Label `role=was`.
    b: Agent,
    /// Label `role=db`.
    c: Agent,
    /// In the group `closed` (its run windows are closed now).
    w: Agent,
    /// A group whose run windows never contain the tests' time.
    closed: String,
    /// A node enrolled without an agent, disabled.
    disabled: String,
    /// A node enrolled without an agent, enabled (never connected).
    offline: String,
}

/// The time of day `hours_from_now` hours from now, as `HH:MM` in UTC.
fn utc_hhmm(hours_from_now: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = (now + hours_from_now * 3600).rem_euclid(86_400);
    format!("{:02}:{:02}", t / 3600, (t % 3600) / 60)
}

/// A window of every day, closed now: it opens in 3 hours and closes in 4 (UTC).
fn closed_window() -> Value {
    json!([{ "start": utc_hhmm(3), "end": utc_hhmm(4), "timezone": "UTC" }])
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    shared_env(&ENV, || async {
        let server = Server::start_with(exec_opts());
        let s = &server;
        let a = Agent::start_with_args(
            s,
            &node_name("grp-a"),
            &["--label", "role=was", "--label", "sys=billing"],
        )
        .await;
        let b = Agent::start_with_args(s, &node_name("grp-b"), &["--label", "role=was"]).await;
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("labels");
        std::fs::write(&labels, "# the DB server\nrole=db\n\n").unwrap();
        let c = Agent::start_with_args(
            s,
            &node_name("grp-c"),
            &["--labels-file", labels.to_str().unwrap()],
        )
        .await;
        let w = Agent::start(s, &node_name("grp-w")).await;
        let admin = admin_token(s).await;
        let disabled = node_name("grp-off");
        fake_node(s, &admin, &disabled).await;
        let (st, body) = call(
            client()
                .patch(s.url(&format!("/api/v1/nodes/{disabled}")))
                .bearer_auth(&admin)
                .json(&json!({ "status": "D" })),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        let offline = node_name("grp-idle");
        fake_node(s, &admin, &offline).await;
        let closed = unique("closed");
        let (st, body) = post(
            s,
            &admin,
            "/api/v1/node-groups",
            json!({ "name": closed, "nodes": [w.node_id], "runWindows": closed_window(),
                    "attributes": { "NEED": "from-closed" } }),
        )
        .await;
        assert_eq!(st, 201, "{body}");
        Env {
            server,
            a,
            b,
            c,
            w,
            closed,
            disabled,
            offline,
        }
    })
}

/// Enrols a node through the API (no agent process).
async fn fake_node(s: &Server, admin: &str, id: &str) {
    let token = enrollment_token(s, admin, json!({})).await;
    let (st, body) = enroll_as(s, &token, id).await;
    assert_eq!(st, 201, "{body}");
}

async fn post(s: &Server, t: &str, path: &str, body: Value) -> (u16, Value) {
    call(client().post(s.url(path)).bearer_auth(t).json(&body)).await
}

async fn put(s: &Server, t: &str, path: &str, body: Value) -> (u16, Value) {
    call(client().put(s.url(path)).bearer_auth(t).json(&body)).await
}

async fn get(s: &Server, t: &str, path: &str) -> (u16, Value) {
    call(client().get(s.url(path)).bearer_auth(t)).await
}

/// Starts a task through OPMATE with `body`; returns (status, answer).
async fn opmate_start(s: &Server, t: &str, task: &str, body: Value) -> (u16, Value) {
    call(
        client()
            .post(s.url(&format!("/opmate/task/{task}/instance")))
            .query(&[("auth", t)])
            .json(&body),
    )
    .await
}

fn out_text(n: &Value) -> String {
    String::from_utf8_lossy(&b64(&n["encbase64out"])).into_owned()
}

/// How many instances a task has.
async fn instance_count(s: &Server, t: &str, task: &str) -> i64 {
    let (st, body) = call(
        client()
            .get(s.url(&format!("/opmate/task/{task}/instance")))
            .query(&[("auth", t)]),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    body["totalCnt"].as_i64().unwrap()
}

#[tokio::test]
async fn agent_labels_are_stored_and_shown() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let (st, node) = get(s, &t, &format!("/api/v1/nodes/{}", e.a.node_id)).await;
    assert_eq!(st, 200, "{node}");
    assert_eq!(node["labels"]["role"], "was", "{node}");
    assert_eq!(node["labels"]["sys"], "billing", "{node}");
    assert_eq!(node["labels"]["os"], std::env::consts::OS, "{node}");
    assert_eq!(node["labels"]["arch"], std::env::consts::ARCH, "{node}");
    assert!(
        !node["labels"]["hostname"].as_str().unwrap_or("").is_empty(),
        "{node}"
    );
    assert!(
        node["osUsers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == &json!(current_user())),
        "{node}"
    );
    let (_, c) = get(s, &t, &format!("/api/v1/nodes/{}", e.c.node_id)).await;
    assert_eq!(c["labels"]["role"], "db", "labels file: {c}");
}

#[tokio::test]
async fn node_group_crud_and_bad_input() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let name = unique("crud");
    let bad = [
        (json!({ "nodes": [] }), "name"),
        (
            json!({ "name": name, "nodes": ["no-such-node-x"] }),
            "no-such-node-x",
        ),
        (
            json!({ "name": name, "attributes": { "bad key": "v" } }),
            "bad key",
        ),
        (
            json!({ "name": name, "attributes": { "K": 5 } }),
            "attributes",
        ),
        (
            json!({ "name": name, "runWindows": [{ "start": "25:00", "end": "26:00" }] }),
            "runWindows[0].start",
        ),
        (
            json!({ "name": name, "runWindows": [{ "days": ["FUNDAY"], "start": "01:00", "end": "02:00" }] }),
            "FUNDAY",
        ),
        (
            json!({ "name": name, "runWindows": [{ "start": "01:00", "end": "02:00", "timezone": "Mars/Base" }] }),
            "Mars/Base",
        ),
        (json!({ "name": "a b", "nodes": [] }), "name"),
    ];
    for (body, says) in bad {
        let (st, answer) = post(s, &t, "/api/v1/node-groups", body.clone()).await;
        assert_eq!(st, 400, "{body} → {answer}");
        assert!(answer.to_string().contains(says), "{body} → {answer}");
    }
    let (st, _) = get(s, &t, &format!("/api/v1/node-groups/{name}")).await;
    assert_eq!(st, 404, "a refused create stores nothing");

    let (st, g) = post(
        s,
        &t,
        "/api/v1/node-groups",
        json!({ "name": name, "nodes": [e.a.node_id], "attributes": { "PORT": "8080", "이름": "x" } }),
    )
    .await;
    assert_eq!(st, 400, "non-ASCII keys are refused: {g}");
    let (st, g) = post(
        s,
        &t,
        "/api/v1/node-groups",
        json!({ "name": name, "description": "결제 WAS", "nodes": [e.a.node_id], "attributes": { "PORT": "8080" } }),
    )
    .await;
    assert_eq!(st, 201, "{g}");
    assert_eq!(g["description"], "결제 WAS");
    let (st, dup) = post(s, &t, "/api/v1/node-groups", json!({ "name": name })).await;
    assert_eq!(st, 409, "{dup}");
    let (st, g) = put(
        s,
        &t,
        &format!("/api/v1/node-groups/{name}"),
        json!({ "nodes": [e.a.node_id, e.b.node_id] }),
    )
    .await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(
        g["attributes"]["PORT"], "8080",
        "an absent field keeps its value"
    );
    let mut nodes = vec![e.a.node_id.clone(), e.b.node_id.clone()];
    nodes.sort();
    assert_eq!(g["nodes"], json!(nodes));
    let (st, list) = get(s, &t, "/api/v1/node-groups").await;
    assert_eq!(st, 200);
    assert!(list["nodeGroups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == json!(name)));

    // A task that targets the group keeps it from being deleted.
    let task = unique("crud-task");
    let (st, body) = post(
        s,
        &t,
        "/api/v1/tasks",
        json!({ "id": task, "scriptName": "x.sh", "script": "true", "osUser": current_user(),
                "targets": { "nodeGroups": [name] } }),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(
        client()
            .delete(s.url(&format!("/api/v1/node-groups/{name}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    assert!(body.to_string().contains(&task), "{body}");
    let (st, body) = put(
        s,
        &t,
        &format!("/api/v1/tasks/{task}"),
        json!({ "targets": { "nodes": [e.a.node_id] } }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, _) = call(
        client()
            .delete(s.url(&format!("/api/v1/node-groups/{name}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(st, 204);
    let (st, _) = get(s, &t, &format!("/api/v1/node-groups/{name}")).await;
    assert_eq!(st, 404);
    // A task cannot target a group that does not exist.
    let (st, body) = put(
        s,
        &t,
        &format!("/api/v1/tasks/{task}"),
        json!({ "targets": { "nodeGroups": [name] } }),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    // Audited.
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let (st, audit) = get(s, &auditor, "/api/v1/audit?action=node_group").await;
    assert_eq!(st, 200, "{audit}");
    let text = audit.to_string();
    for action in [
        "node_group.create",
        "node_group.update",
        "node_group.delete",
    ] {
        assert!(text.contains(action), "{action}: {audit}");
    }
    assert!(text.contains(&name), "{audit}");
}

#[tokio::test]
async fn group_attributes_two_groups_on_one_node() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let (low, high) = (unique("low"), unique("high"));
    // Node A is in both; B only in the low-priority group. The higher priority wins on A.
    let (st, body) = post(
        s,
        &t,
        "/api/v1/node-groups",
        json!({ "name": low, "nodes": [e.a.node_id, e.b.node_id], "priority": 0,
                "attributes": { "PORT": "8080", "DIR": "/srv/low dir", "role": "from-group" } }),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = post(
        s,
        &t,
        "/api/v1/node-groups",
        json!({ "name": high, "nodes": [e.a.node_id], "priority": 10,
                "attributes": { "PORT": "9090", "ENV": "운영" } }),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let task = unique("attrs");
    approved_task(
        s,
        &t,
        &task,
        "#!/bin/sh\necho \"port=@OPM_ATTR.PORT@ dir=@OPM_ATTR.DIR@ sys=@OPM_ATTR.sys@ role=@OPM_ATTR.role@ arg=$1\"\n",
        json!({}),
    )
    .await;
    let no = start(s, &t, &task, &[&e.a.node_id, &e.b.node_id], &["x"]).await;
    wait_end(s, &t, no, Duration::from_secs(30)).await;
    let a = node_detail(s, &t, no, &e.a.node_id, None).await;
    assert_eq!(a["resultCd"], "S", "{a}");
    // Groups override the node's own label `role`; `sys` is A's label.
    assert_eq!(
        out_text(&a),
        "port=9090 dir=/srv/low dir sys=billing role=from-group arg=x\n"
    );
    let b = node_detail(s, &t, no, &e.b.node_id, None).await;
    assert_eq!(b["resultCd"], "F", "B has no `sys`: {b}");
    // Equal priority: the name that sorts first wins.
    let base = unique("eq");
    let (g1, g2) = (format!("{base}-a"), format!("{base}-b"));
    for (g, v) in [(&g1, "first"), (&g2, "second")] {
        let (st, body) = post(
            s,
            &t,
            "/api/v1/node-groups",
            json!({ "name": g, "nodes": [e.b.node_id], "attributes": { "TIE": v } }),
        )
        .await;
        assert_eq!(st, 201, "{body}");
    }
    let tie = unique("tie");
    approved_task(s, &t, &tie, "echo @OPM_ATTR.TIE@", json!({})).await;
    let no = start(s, &t, &tie, &[&e.b.node_id], &[]).await;
    wait_end(s, &t, no, Duration::from_secs(30)).await;
    let b = node_detail(s, &t, no, &e.b.node_id, None).await;
    assert_eq!(out_text(&b), "first\n", "{b}");
}

#[tokio::test]
async fn a_missing_attribute_fails_the_node_before_it_runs() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let g = unique("has-key");
    let (st, body) = post(
        s,
        &t,
        "/api/v1/node-groups",
        json!({ "name": g, "nodes": [e.a.node_id], "attributes": { "ONLY_A": "yes" } }),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let marker = tempfile::tempdir().unwrap();
    let task = unique("missing");
    let script = format!(
        "#!/bin/sh\ntouch {}/ran-$$\necho value=@OPM_ATTR.ONLY_A@\n",
        marker.path().display()
    );
    approved_task(s, &t, &task, &script, json!({})).await;
    let no = start(s, &t, &task, &[&e.a.node_id, &e.b.node_id], &[]).await;
    wait_end(s, &t, no, Duration::from_secs(30)).await;
    let a = node_detail(s, &t, no, &e.a.node_id, None).await;
    assert_eq!(a["resultCd"], "S", "{a}");
    assert_eq!(out_text(&a), "value=yes\n");
    let b = node_detail(s, &t, no, &e.b.node_id, None).await;
    assert_eq!(b["status"], "END", "{b}");
    assert_eq!(b["resultCd"], "F", "{b}");
    assert_eq!(b["startDt"], "", "it never started: {b}");
    assert_eq!(out_text(&b), "");
    let (_, detail) = get(s, &t, &format!("/api/v1/task-instances/{no}")).await;
    let nb = detail["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nodeId"] == json!(e.b.node_id))
        .unwrap()
        .clone();
    let reason = nb["reason"].as_str().unwrap();
    assert!(reason.contains("ONLY_A"), "{reason}");
    assert!(reason.contains(&e.b.node_id), "{reason}");
    // Only A's script ran: one marker file.
    let ran = std::fs::read_dir(marker.path()).unwrap().count();
    assert_eq!(ran, 1, "only the node with the attribute ran the script");
}

#[tokio::test]
async fn default_targets_resolve_nodes_groups_and_labels() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let g = unique("tgt");
    let (st, body) = post(
        s,
        &t,
        "/api/v1/node-groups",
        json!({ "name": g, "nodes": [e.b.node_id, e.disabled] }),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let task = unique("targets");
    approved_task(
        s,
        &t,
        &task,
        "echo hi",
        json!({ "targets": { "nodes": [e.a.node_id], "nodeGroups": [g] } }),
    )
    .await;
    let (st, task_body) = get(s, &t, &format!("/api/v1/tasks/{task}")).await;
    assert_eq!(st, 200);
    assert_eq!(task_body["targets"]["nodeGroups"], json!([g]));
    assert_eq!(task_body["targetNodeIds"], json!([e.a.node_id]));

    let (st, body) = opmate_start(s, &t, &task, json!({ "arguments": [] })).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["resultCode"], "0000");
    let mut expect = vec![e.a.node_id.clone(), e.b.node_id.clone()];
    expect.sort();
    assert_eq!(body["nodeIdList"], json!(expect), "{body}");
    assert_eq!(
        body["skippedNodeList"][0]["nodeId"],
        json!(e.disabled),
        "{body}"
    );
    assert!(
        body["skippedNodeList"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{body}"
    );
    let no = body["taskInstanceNo"].as_i64().unwrap();
    let detail = wait_end(s, &t, no, Duration::from_secs(30)).await;
    let targets = &detail["instance"]["targets"];
    assert_eq!(targets["source"], "targets", "{detail}");
    assert_eq!(targets["nodes"], json!(expect), "{detail}");
    assert_eq!(targets["skipped"][0]["nodeId"], json!(e.disabled));
    assert_eq!(detail["nodes"].as_array().unwrap().len(), 2);

    // The group is read at the start: a member added now runs next time.
    let (st, body) = put(
        s,
        &t,
        &format!("/api/v1/node-groups/{g}"),
        json!({ "nodes": [e.b.node_id, e.c.node_id, e.disabled] }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = opmate_start(s, &t, &task, json!({ "nodeIdList": [] })).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["nodeIdList"].as_array().unwrap().len(), 3, "{body}");

    // A label selector alone: every node whose labels hold it.
    let by_label = unique("by-label");
    approved_task(
        s,
        &t,
        &by_label,
        "echo db",
        json!({ "targets": { "labels": { "role": "db" } } }),
    )
    .await;
    let (st, body) = opmate_start(s, &t, &by_label, json!({})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["nodeIdList"], json!([e.c.node_id]), "{body}");
    // Groups narrowed by labels: the billing WAS servers of a group.
    let narrowed = unique("narrow");
    approved_task(
        s,
        &t,
        &narrowed,
        "echo billing",
        json!({ "targets": { "nodes": [e.a.node_id, e.b.node_id, e.c.node_id], "labels": { "sys": "billing" } } }),
    )
    .await;
    let (st, body) = opmate_start(s, &t, &narrowed, json!({})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["nodeIdList"], json!([e.a.node_id]), "{body}");

    // Only disabled nodes: refused, nothing created.
    let dead = unique("dead");
    approved_task(
        s,
        &t,
        &dead,
        "echo x",
        json!({ "targets": { "nodes": [e.disabled] } }),
    )
    .await;
    let (st, body) = opmate_start(s, &t, &dead, json!({})).await;
    assert_eq!(st, 409, "{body}");
    assert_ne!(body["resultCode"], "0000");
    assert!(body.to_string().contains("disabled"), "{body}");
    assert_eq!(instance_count(s, &t, &dead).await, 0);
    // No targets and no node list: 400.
    let none = unique("none");
    approved_task(s, &t, &none, "echo x", json!({})).await;
    let (st, body) = opmate_start(s, &t, &none, json!({})).await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(instance_count(s, &t, &none).await, 0);
}

#[tokio::test]
async fn rerun_refused_after_an_edit_and_approval() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let task = unique("rerun");
    approved_task(s, &t, &task, "echo one", json!({})).await;
    let no = start(s, &t, &task, &[&e.a.node_id], &[]).await;
    wait_end(s, &t, no, Duration::from_secs(30)).await;
    // Same revision: the re-run goes.
    let rerun = |q: &'static str| {
        let t = t.clone();
        let url = s.url(&format!("/opmate/taskinstance/{no}/node/{}", e.a.node_id));
        async move {
            let mut query = vec![("auth", t.clone())];
            if !q.is_empty() {
                query.push(("useLatestRevision", q.to_owned()));
            }
            call(client().put(url).query(&query)).await
        }
    };
    let (st, body) = rerun("").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["execNo"], 2);
    wait_status(s, &t, no, &e.a.node_id, "END", Duration::from_secs(30)).await;

    let (st, body) = put(
        s,
        &t,
        &format!("/api/v1/tasks/{task}"),
        json!({ "script": "echo two" }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    approve(s, &t, &task).await;
    let (st, body) = rerun("").await;
    assert_eq!(st, 409, "{body}");
    assert_ne!(body["resultCode"], "0000");
    let msg = body["resultMsg"].as_str().unwrap_or_default().to_owned();
    assert!(
        msg.contains("revision 2") && msg.contains("revision 1"),
        "names both revisions: {body}"
    );
    assert!(msg.contains("useLatestRevision"), "{body}");
    let n = node_detail(s, &t, no, &e.a.node_id, None).await;
    assert_eq!(n["execNo"], 2, "nothing ran: {n}");
    let (st, body) = rerun("maybe").await;
    assert_eq!(st, 400, "{body}");

    let (st, body) = rerun("Y").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["execNo"], 3);
    let n = wait_status(s, &t, no, &e.a.node_id, "END", Duration::from_secs(30)).await;
    assert_eq!(out_text(&n), "two\n", "{n}");
    let first = node_detail(s, &t, no, &e.a.node_id, Some(1)).await;
    assert_eq!(out_text(&first), "one\n");
    let (_, detail) = get(s, &t, &format!("/api/v1/task-instances/{no}")).await;
    assert_eq!(detail["instance"]["revisionNo"], 1);
    assert_eq!(detail["nodes"][0]["revisionNo"], 2, "{detail}");
    // The admin route: the same rule.
    let (st, body) = call(
        client()
            .post(s.url(&format!(
                "/api/v1/task-instances/{no}/nodes/{}/rerun",
                e.a.node_id
            )))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(st, 409, "{body}");
}

#[tokio::test]
async fn a_start_outside_a_window_is_refused_naming_the_next_window() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let task = unique("window");
    let window = closed_window();
    approved_task(
        s,
        &t,
        &task,
        "echo in-window",
        json!({ "runWindows": window }),
    )
    .await;
    let (st, body) = opmate_start(s, &t, &task, json!({ "nodeIdList": [e.a.node_id] })).await;
    assert_eq!(st, 409, "{body}");
    let msg = body["resultMsg"].as_str().unwrap().to_owned();
    assert!(msg.contains("outside the run windows"), "{msg}");
    // The next opening is in three hours, at HH:MM UTC.
    let opens = window[0]["start"].as_str().unwrap().to_owned();
    assert!(
        msg.contains(&format!("{opens} UTC")),
        "names {opens}: {msg}"
    );
    assert_eq!(instance_count(s, &t, &task).await, 0, "nothing created");

    // A node group's window: node W's group is closed now; A is not in it.
    let free = unique("free");
    approved_task(s, &t, &free, "echo free", json!({})).await;
    let (st, body) = opmate_start(s, &t, &free, json!({ "nodeIdList": [e.w.node_id] })).await;
    assert_eq!(st, 409, "{body}");
    assert!(
        body["resultMsg"].as_str().unwrap().contains(&e.closed),
        "{body}"
    );
    let (st, body) = opmate_start(s, &t, &free, json!({ "nodeIdList": [e.a.node_id] })).await;
    assert_eq!(st, 200, "{body}");

    // An open window (an hour before now to an hour after): it runs.
    let open = unique("open");
    approved_task(
        s,
        &t,
        &open,
        "echo open",
        json!({ "runWindows": [{ "start": utc_hhmm(-1), "end": utc_hhmm(1), "timezone": "UTC" }] }),
    )
    .await;
    let (st, body) = opmate_start(s, &t, &open, json!({ "nodeIdList": [e.a.node_id] })).await;
    assert_eq!(st, 200, "{body}");
    // Bad windows are 400.
    let (st, body) = put(
        s,
        &t,
        &format!("/api/v1/tasks/{open}"),
        json!({ "runWindows": [{ "start": "9", "end": "10:00" }] }),
    )
    .await;
    assert_eq!(st, 400, "{body}");
}

#[tokio::test]
async fn dry_run_on_four_nodes_with_four_reasons() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let g = unique("need");
    let (st, body) = post(
        s,
        &t,
        "/api/v1/node-groups",
        json!({ "name": g, "nodes": [e.a.node_id, e.disabled, e.offline], "attributes": { "NEED": "값-1" } }),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let task = unique("dry");
    approved_task(s, &t, &task, "echo need=@OPM_ATTR.NEED@", json!({})).await;
    // A: runs. B: no NEED. W: its group's window is closed. disabled: disabled.
    let nodes = [&e.a.node_id, &e.b.node_id, &e.w.node_id, &e.disabled];
    let (st, body) = post(
        s,
        &t,
        &format!("/api/v1/tasks/{task}/dry-run"),
        json!({ "nodeIdList": nodes, "arguments": ["x"] }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let by = |id: &str| {
        body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["nodeId"] == json!(id))
            .unwrap_or_else(|| panic!("{id} in {body}"))
            .clone()
    };
    let a = by(&e.a.node_id);
    assert_eq!(a["wouldRun"], true, "{a}");
    assert_eq!(a["reasons"], json!([]));
    assert_eq!(a["script"], "echo need=값-1");
    let b = by(&e.b.node_id);
    assert_eq!(b["wouldRun"], false);
    assert_eq!(b["reasonCodes"], json!(["attribute_missing"]), "{b}");
    assert!(b["reasons"][0].as_str().unwrap().contains("NEED"));
    assert_eq!(b["script"], "echo need=@OPM_ATTR.NEED@");
    let w = by(&e.w.node_id);
    assert_eq!(w["reasonCodes"], json!(["outside_window"]), "{w}");
    assert!(w["reasons"][0]
        .as_str()
        .unwrap()
        .contains("next window opens"));
    assert_eq!(w["script"], "echo need=from-closed");
    let d = by(&e.disabled);
    assert_eq!(d["wouldRun"], false);
    let codes = d["reasonCodes"].as_array().unwrap();
    assert!(codes.contains(&json!("disabled")), "{d}");
    assert!(codes.contains(&json!("not_connected")), "{d}");
    // Not connected alone, and the OS user and approval reasons.
    let (st, body) = post(
        s,
        &t,
        &format!("/api/v1/tasks/{task}/dry-run"),
        json!({ "nodeIdList": [e.offline] }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["nodes"][0]["reasonCodes"], json!(["not_connected"]));
    let other = unique("dry-user");
    let (st, body) = post(
        s,
        &t,
        "/api/v1/tasks",
        json!({ "id": other, "scriptName": "x.sh", "script": "true", "osUser": "no-such-user-x",
                "targets": { "nodes": [e.a.node_id] } }),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = post(s, &t, &format!("/api/v1/tasks/{other}/dry-run"), json!({})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["source"], "targets");
    let codes = body["nodes"][0]["reasonCodes"].as_array().unwrap().clone();
    assert!(codes.contains(&json!("not_approved")), "{body}");
    assert!(codes.contains(&json!("os_user_missing")), "{body}");
    // Nothing ran, nothing was created; the dry run is audited.
    assert_eq!(instance_count(s, &t, &task).await, 0);
    assert_eq!(instance_count(s, &t, &other).await, 0);
    let (st, body) = post(
        s,
        &t,
        &format!("/api/v1/tasks/{task}/dry-run"),
        json!({ "nodeIdList": "A" }),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = post(s, &t, "/api/v1/tasks/no-such-task/dry-run", json!({})).await;
    assert_eq!(st, 404, "{body}");
}

#[tokio::test]
async fn runner_groups_allow_one_group_and_refuse_another() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let (u1, _, t1) = user_with_roles(s, &["Workflow Operator"]).await;
    let (u2, _, t2) = user_with_roles(s, &["Workflow Operator"]).await;
    let (ga, gb) = (unique("runners"), unique("others"));
    for (g, u) in [(&ga, &u1), (&gb, &u2)] {
        let (st, body) = post(
            s,
            &t,
            "/api/v1/user-groups",
            json!({ "name": g, "members": [u] }),
        )
        .await;
        assert_eq!(st, 201, "{body}");
    }
    let (st, body) = post(
        s,
        &t,
        "/api/v1/user-groups",
        json!({ "name": unique("bad"), "members": ["no-such-user-q"] }),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    // A user group is an admin.users matter.
    let (st, _) = post(
        s,
        &t1,
        "/api/v1/user-groups",
        json!({ "name": unique("x") }),
    )
    .await;
    assert_eq!(st, 403);
    let task = unique("runner");
    approved_task(s, &t, &task, "echo runner", json!({ "runnerGroups": [ga] })).await;
    let (st, body) = post(
        s,
        &t,
        "/api/v1/tasks",
        json!({ "id": unique("rg-bad"), "scriptName": "x.sh", "script": "true", "osUser": current_user(),
                "runnerGroups": ["no-such-group"] }),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = opmate_start(s, &t1, &task, json!({ "nodeIdList": [e.a.node_id] })).await;
    assert_eq!(st, 200, "member of {ga}: {body}");
    let no = body["taskInstanceNo"].as_i64().unwrap();
    let (st, body) = opmate_start(s, &t2, &task, json!({ "nodeIdList": [e.a.node_id] })).await;
    assert_eq!(st, 403, "member of {gb} only: {body}");
    assert!(body["resultMsg"].as_str().unwrap().contains(&ga), "{body}");
    assert_eq!(instance_count(s, &t, &task).await, 1);
    // The same rule on a re-run, and in a dry run.
    wait_end(s, &t, no, Duration::from_secs(30)).await;
    let (st, body) = call(
        client()
            .put(s.url(&format!("/opmate/taskinstance/{no}/node/{}", e.a.node_id)))
            .query(&[("auth", &t2)]),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    let (st, body) = post(
        s,
        &t2,
        &format!("/api/v1/tasks/{task}/dry-run"),
        json!({ "nodeIdList": [e.a.node_id] }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["nodes"][0]["reasonCodes"], json!(["not_runner"]));
    // Moving u2 into the runners' group lets them in.
    let (st, body) = put(
        s,
        &t,
        &format!("/api/v1/user-groups/{ga}"),
        json!({ "members": [u1, u2] }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = opmate_start(s, &t2, &task, json!({ "nodeIdList": [e.a.node_id] })).await;
    assert_eq!(st, 200, "{body}");
}

/// Parses RFC 4180 CSV (quoted fields with `""`, CRLF rows).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn csv_export_matches_the_api() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let task = unique("export");
    approved_task(
        s,
        &t,
        &task,
        "#!/bin/sh\nprintf 'a,b \"quoted\"\\nline 2 한글\\n'\necho '=cmd' >&2\nexit 3\n",
        json!({}),
    )
    .await;
    let no = start(s, &t, &task, &[&e.a.node_id, &e.b.node_id], &[]).await;
    wait_end(s, &t, no, Duration::from_secs(30)).await;
    let r = client()
        .get(s.url(&format!("/api/v1/task-instances/{no}/export?format=csv")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = r.text().await.unwrap();
    let rows = parse_csv(&text);
    let header = &rows[0];
    assert_eq!(header[0], "taskId");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (_, api) = call(
        client()
            .get(s.url(&format!("/opmate/taskinstance/{no}/node")))
            .query(&[("auth", t.as_str()), ("stdoutYn", "Y"), ("stderrYn", "Y")]),
    )
    .await;
    let items = api["insNodeList"].as_array().unwrap();
    assert_eq!(rows.len() - 1, items.len(), "{text}");
    for (row, item) in rows[1..].iter().zip(items) {
        for key in [
            "taskId",
            "nodeId",
            "status",
            "resultCd",
            "startDt",
            "endDt",
            "runnerId",
            "runnerGubun",
        ] {
            assert_eq!(row[col(key)], item[key].as_str().unwrap(), "{key}: {text}");
        }
        assert_eq!(
            row[col("taskInstanceNo")],
            item["taskInstanceNo"].to_string()
        );
        assert_eq!(row[col("execNo")], item["execNo"].to_string());
        assert_eq!(row[col("exitCd")], item["exitCd"].to_string());
        assert_eq!(row[col("stdout")], out_text(item));
        assert_eq!(row[col("stdout")], "a,b \"quoted\"\nline 2 한글\n");
        // A formula is made inert in the sheet.
        let err = String::from_utf8_lossy(&b64(&item["encbase64err"])).into_owned();
        assert_eq!(row[col("stderr")], format!("'{err}"));
        assert_eq!(row[col("exitCd")], "3");
    }
    let (st, json_rows) = get(
        s,
        &t,
        &format!("/api/v1/task-instances/{no}/export?format=json"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(json_rows["rows"].as_array().unwrap().len(), items.len());
    assert_eq!(json_rows["rows"][0]["nodeId"], items[0]["nodeId"]);
    let (st, body) = get(
        s,
        &t,
        &format!("/api/v1/task-instances/{no}/export?format=xls"),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    let (st, _) = get(s, &t, "/api/v1/task-instances/999999999/export").await;
    assert_eq!(st, 404);
}
