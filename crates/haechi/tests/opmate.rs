//! The seven OPMATE endpoints in the seed document's shapes: every filter (substring where
//! the document says so, both spellings where it misspells), paging edges, `auth=`,
//! `resultCode`/`resultMsg`, and the refusals that create no instance.

mod common;
mod exec_support;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use exec_support::*;
use serde_json::{json, Value};

struct Env {
    server: Server,
    agent: Agent,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    shared_env(&ENV, || async {
        let server = Server::start_with(exec_opts());
        let agent = Agent::start(&server, &node_name("op-agent")).await;
        Env { server, agent }
    })
}

async fn get(s: &Server, token: &str, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let mut q: Vec<(&str, &str)> = vec![("auth", token)];
    q.extend_from_slice(query);
    call(client().get(s.url(path)).query(&q)).await
}

/// Registers a node through the enrolment API with chosen attributes (no agent process).
async fn fake_node(
    s: &Server,
    admin: &str,
    id: &str,
    agent_ver: &str,
    os_name: &str,
    hostname: &str,
) {
    let (_, body) = call(
        client()
            .post(s.url("/api/v1/agents/enrollment-tokens"))
            .bearer_auth(admin)
            .json(&json!({})),
    )
    .await;
    let (st, body) = call(client().post(s.url("/api/v1/agents/enroll")).json(&json!({
        "token": body["token"], "nodeId": id, "agentVer": agent_ver, "osName": os_name, "hostname": hostname,
    })))
    .await;
    assert_eq!(st, 201, "{body}");
}

fn ids(body: &Value, list: &str, key: &str) -> Vec<String> {
    body[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n[key]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| n[key].to_string())
        })
        .collect()
}

#[tokio::test]
async fn node_list_filters_and_paging() {
    let e = env();
    let s = &e.server;
    let admin = admin_token(s).await;
    let tag = unique("nf").to_lowercase();
    fake_node(
        s,
        &admin,
        &format!("{tag}-web1"),
        "9.1.0-alpha",
        "Rocky Linux 9",
        &format!("{tag}-WebHost"),
    )
    .await;
    fake_node(
        s,
        &admin,
        &format!("{tag}-web2"),
        "9.2.0",
        "Ubuntu 22.04",
        &format!("{tag}-webhost2"),
    )
    .await;
    fake_node(
        s,
        &admin,
        &format!("{tag}-db1"),
        "9.2.0",
        "Rocky Linux 8",
        &format!("{tag}-dbhost"),
    )
    .await;
    let (st, body) = call(
        client()
            .patch(s.url(&format!("/api/v1/nodes/{tag}-db1")))
            .bearer_auth(&admin)
            .json(&json!({"status": "D"})),
    )
    .await;
    assert_eq!(st, 200, "{body}");

    let (st, body) = get(s, &admin, "/opmate/node", &[("id", &tag)]).await;
    assert_eq!(st, 200);
    assert_eq!(body["resultCode"], "0000");
    assert_eq!(body["resultMsg"], "Success");
    assert_eq!(body["totalCnt"], 3);
    assert_eq!(body["currentCnt"], 3);
    let n = &body["nodeList"][0];
    for key in [
        "id",
        "agentGuid",
        "agentVer",
        "osName",
        "ip",
        "hostname",
        "ownerUserId",
        "status",
        "heartbeatDt",
        "crtDt",
    ] {
        assert!(n.get(key).is_some(), "{key} missing from {n}");
    }
    assert_eq!(n["crtDt"].as_str().unwrap().len(), 14);
    assert_eq!(n["ownerUserId"], "admin");

    let check = |q: Vec<(&'static str, String)>, want: Vec<&'static str>| {
        let admin = admin.clone();
        let tag = tag.clone();
        async move {
            let mut query: Vec<(&str, &str)> = vec![("id", tag.as_str())];
            query.extend(q.iter().map(|(k, v)| (*k, v.as_str())));
            let (st, body) = get(s, &admin, "/opmate/node", &query).await;
            assert_eq!(st, 200, "{body}");
            let mut got = ids(&body, "nodeList", "id");
            got.sort();
            let mut want: Vec<String> = want.iter().map(|w| format!("{tag}-{w}")).collect();
            want.sort();
            assert_eq!(got, want, "filter {q:?}");
            assert_eq!(body["totalCnt"], want.len());
        }
    };
    check(vec![("agentVer", "9.2".into())], vec!["web2", "db1"]).await;
    check(vec![("agentVer", "ALPHA".into())], vec!["web1"]).await;
    check(vec![("osName", "rocky".into())], vec!["web1", "db1"]).await;
    check(vec![("hostname", "webhost".into())], vec!["web1", "web2"]).await;
    check(vec![("ip", "127.0.0".into())], vec!["web1", "web2", "db1"]).await;
    check(vec![("ip", "10.99.".into())], vec![]).await;
    check(
        vec![("ownerUserId", "admin".into())],
        vec!["web1", "web2", "db1"],
    )
    .await;
    check(vec![("ownerUserId", "adm".into())], vec![]).await;
    check(vec![("status", "D".into())], vec!["db1"]).await;
    check(vec![("stauts", "E".into())], vec!["web1", "web2"]).await;
    check(
        vec![("osName", "rocky".into()), ("stauts", "E".into())],
        vec!["web1"],
    )
    .await;
    // LIKE wildcards in a filter are literal characters.
    check(vec![("hostname", "%".into())], vec![]).await;
    check(vec![("hostname", "_".into())], vec![]).await;

    // Paging: ordered by id; currentCnt is the page, totalCnt all matches.
    let (_, body) = get(
        s,
        &admin,
        "/opmate/node",
        &[("id", &tag), ("limit", "2"), ("offset", "0")],
    )
    .await;
    assert_eq!(
        (body["currentCnt"].as_i64(), body["totalCnt"].as_i64()),
        (Some(2), Some(3))
    );
    assert_eq!(
        ids(&body, "nodeList", "id"),
        vec![format!("{tag}-db1"), format!("{tag}-web1")]
    );
    let (_, body) = get(
        s,
        &admin,
        "/opmate/node",
        &[("id", &tag), ("limit", "2"), ("offset", "2")],
    )
    .await;
    assert_eq!(ids(&body, "nodeList", "id"), vec![format!("{tag}-web2")]);
    let (_, body) = get(s, &admin, "/opmate/node", &[("id", &tag), ("offset", "3")]).await;
    assert_eq!(
        (body["currentCnt"].as_i64(), body["totalCnt"].as_i64()),
        (Some(0), Some(3))
    );
    let (_, body) = get(s, &admin, "/opmate/node", &[("id", &tag), ("limit", "0")]).await;
    assert_eq!(
        (body["currentCnt"].as_i64(), body["totalCnt"].as_i64()),
        (Some(0), Some(3))
    );
    for (k, v) in [
        ("limit", "-1"),
        ("limit", "abc"),
        ("limit", "1001"),
        ("offset", "-5"),
        ("status", "X"),
        ("stauts", "enabled"),
    ] {
        let (st, body) = get(s, &admin, "/opmate/node", &[(k, v)]).await;
        assert_eq!(st, 400, "{k}={v}: {body}");
        assert_ne!(body["resultCode"], "0000");
        assert!(body["resultMsg"].as_str().unwrap().contains(k), "{body}");
    }
    let (_, body) = get(s, &admin, "/opmate/node", &[("limit", "1000")]).await;
    assert_eq!(body["resultCode"], "0000");
}

#[tokio::test]
async fn auth_is_required_and_any_carrier_works() {
    let e = env();
    let s = &e.server;
    let (st, body) = call(client().get(s.url("/opmate/node"))).await;
    assert_eq!(st, 401);
    assert_ne!(body["resultCode"], "0000");
    assert!(body["resultMsg"].is_string());
    let t = admin_token(s).await;
    let (st, _) = call(
        client()
            .get(s.url("/opmate/task"))
            .header("X-Authorization", &t),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = call(client().get(s.url("/opmate/task")).bearer_auth(&t)).await;
    assert_eq!(st, 200);
    // A user without node.view gets 403.
    let (_, _, vault_only) = user_with_roles(s, &["Vault User"]).await;
    let (st, body) = get(s, &vault_only, "/opmate/node", &[]).await;
    assert_eq!(st, 403, "{body}");
    let (st, _) = call(
        client()
            .post(s.url("/opmate/task/x/instance"))
            .query(&[("auth", &vault_only)])
            .json(&json!({"nodeIdList": ["a"]})),
    )
    .await;
    assert_eq!(st, 403);
}

#[tokio::test]
async fn task_list_filters_both_spellings_and_target_node() {
    let e = env();
    let s = &e.server;
    let admin = admin_token(s).await;
    let tag = unique("tf");
    let (dev, _, dev_token) = user_with_roles(s, &["Task Developer"]).await;
    let node = e.agent.node_id.clone();
    // t1: approved, scheduler E, targets the node; t2: requested, by the developer; t3: N, ondemand D, execTask E.
    approved_task(
        s,
        &admin,
        &format!("{tag}-t1"),
        "true",
        json!({
            "execScheduler": "E", "schedule": "0 3 * * *", "targetNodeIds": [node], "nextTaskId": ""
        }),
    )
    .await;
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/tasks"))
            .bearer_auth(&dev_token)
            .json(&json!({
                "id": format!("{tag}-t2"), "scriptName": "t2.sh", "script": "true", "osUser": "root"
            })),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let (st, _) = call(
        client()
            .post(s.url(&format!("/api/v1/tasks/{tag}-t2/approval")))
            .bearer_auth(&dev_token)
            .json(&json!({"action": "request"})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, body) = call(client().post(s.url("/api/v1/tasks")).bearer_auth(&admin).json(&json!({
        "id": format!("{tag}-t3"), "scriptName": "t3.sh", "script": "true", "osUser": "root",
        "execOndemand": "D", "execTask": "E", "nextTaskId": format!("{tag}-t1")
    })))
    .await;
    assert_eq!(st, 201, "{body}");

    let (st, body) = get(s, &admin, "/opmate/task", &[("id", &tag)]).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["totalCnt"], 3);
    let t = body["taskList"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == format!("{tag}-t1"))
        .unwrap();
    for key in [
        "id",
        "revisionNo",
        "ownerUserId",
        "scriptName",
        "osUser",
        "execScheduler",
        "execOndemand",
        "execTask",
        "nextTaskId",
        "apprvStatus",
        "apprvUserId",
    ] {
        assert!(t.get(key).is_some(), "{key} missing from {t}");
    }
    assert_eq!(t["revisionNo"], 1);
    assert_eq!(t["apprvStatus"], "A");
    assert_eq!(t["apprvUserId"], "admin");

    let check = |q: Vec<(&'static str, String)>, want: Vec<&'static str>| {
        let admin = admin.clone();
        let tag = tag.clone();
        async move {
            let mut query: Vec<(&str, &str)> = vec![("id", tag.as_str())];
            query.extend(q.iter().map(|(k, v)| (*k, v.as_str())));
            let (st, body) = get(s, &admin, "/opmate/task", &query).await;
            assert_eq!(st, 200, "{body}");
            let mut got = ids(&body, "taskList", "id");
            got.sort();
            let want: Vec<String> = want.iter().map(|w| format!("{tag}-{w}")).collect();
            assert_eq!(got, want, "filter {q:?}");
        }
    };
    check(vec![("apprStatus", "A".into())], vec!["t1"]).await;
    check(vec![("apprvStatus", "Q".into())], vec!["t2"]).await;
    check(vec![("apprStatus", "N".into())], vec!["t3"]).await;
    check(vec![("apprUserId", "admin".into())], vec!["t1"]).await;
    check(vec![("apprvUserId", "admin".into())], vec!["t1"]).await;
    check(vec![("ownerUserId", dev.clone())], vec!["t2"]).await;
    check(vec![("execScheduler", "E".into())], vec!["t1"]).await;
    check(vec![("execOndemand", "D".into())], vec!["t3"]).await;
    check(vec![("execOndemand", "E".into())], vec!["t1", "t2"]).await;
    check(vec![("execTask", "E".into())], vec!["t3"]).await;
    check(vec![("targetNodeId", node.clone())], vec!["t1"]).await;
    check(vec![("targetNodeId", "nowhere".into())], vec![]).await;
    let (_, body) = get(
        s,
        &admin,
        "/opmate/task",
        &[("id", &tag), ("limit", "1"), ("offset", "1")],
    )
    .await;
    assert_eq!(ids(&body, "taskList", "id"), vec![format!("{tag}-t2")]);
    assert_eq!(
        (body["currentCnt"].as_i64(), body["totalCnt"].as_i64()),
        (Some(1), Some(3))
    );
    for (k, v) in [("apprStatus", "Z"), ("execTask", "yes"), ("limit", "x")] {
        let (st, _) = get(s, &admin, "/opmate/task", &[(k, v)]).await;
        assert_eq!(st, 400, "{k}={v}");
    }
}

/// Instances of the given tasks (other tests share the server and start their own).
fn count_instances(s: &Server, tasks: &[&str]) -> i64 {
    let list = tasks
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(",");
    s.sql(&format!(
        "SELECT COUNT(*) FROM task_instances WHERE task_id IN ({list})"
    ))
    .parse()
    .unwrap()
}

#[tokio::test]
async fn refused_starts_are_4xx_with_the_reason_and_create_nothing() {
    let e = env();
    let s = &e.server;
    let admin = admin_token(s).await;
    let node = e.agent.node_id.clone();
    let good = unique("good");
    approved_task(s, &admin, &good, "true", json!({})).await;
    let unapproved = unique("unapproved");
    let (st, _) = call(
        client()
            .post(s.url("/api/v1/tasks"))
            .bearer_auth(&admin)
            .json(&json!({
                "id": unapproved, "scriptName": "u.sh", "script": "true", "osUser": "root"
            })),
    )
    .await;
    assert_eq!(st, 201);
    let no_ondemand = unique("noondemand");
    approved_task(
        s,
        &admin,
        &no_ondemand,
        "true",
        json!({ "execOndemand": "D" }),
    )
    .await;
    let disabled = unique("disabled");
    fake_node(s, &admin, &disabled, "1", "x", "x").await;
    let (st, _) = call(
        client()
            .patch(s.url(&format!("/api/v1/nodes/{disabled}")))
            .bearer_auth(&admin)
            .json(&json!({"status": "D"})),
    )
    .await;
    assert_eq!(st, 200);

    let ours = [
        good.as_str(),
        unapproved.as_str(),
        no_ondemand.as_str(),
        "no-such-task",
    ];
    let before = count_instances(s, &ours);
    let post = |task: String, nodes: Value| {
        let admin = admin.clone();
        async move {
            call(
                client()
                    .post(s.url(&format!("/opmate/task/{task}/instance")))
                    .query(&[("auth", &admin)])
                    .json(&json!({
                        "nodeIdList": nodes, "arguments": []
                    })),
            )
            .await
        }
    };
    let cases: Vec<(String, Value, u16, &str)> = vec![
        (
            good.clone(),
            json!([node, "no-such-node"]),
            400,
            "no-such-node",
        ),
        (good.clone(), json!([node, disabled]), 409, "disabled"),
        (unapproved.clone(), json!([node]), 409, "not approved"),
        (no_ondemand.clone(), json!([node]), 409, "execOndemand"),
        ("no-such-task".into(), json!([node]), 404, "no-such-task"),
        (good.clone(), json!([]), 400, "nodeIdList"),
        (good.clone(), json!([node, node]), 400, "twice"),
        (good.clone(), json!("not-a-list"), 400, "nodeIdList"),
    ];
    for (task, nodes, status, reason) in cases {
        let (st, body) = post(task.clone(), nodes.clone()).await;
        assert_eq!(st, status, "{task} {nodes}: {body}");
        assert_ne!(body["resultCode"], "0000");
        let msg = body["resultMsg"].as_str().unwrap();
        assert!(msg.contains(reason), "{task} {nodes}: {msg}");
    }
    assert_eq!(
        count_instances(s, &ours),
        before,
        "a refused start stored an instance"
    );
    let (st, body) = post(good.clone(), json!([node])).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(count_instances(s, &ours), before + 1);
}

#[tokio::test]
async fn instance_list_filters_dates_runner_and_paging() {
    let e = env();
    let s = &e.server;
    let admin = admin_token(s).await;
    let node = e.agent.node_id.clone();
    let next = unique("next");
    approved_task(s, &admin, &next, "true", json!({ "execTask": "D" })).await;
    let task = unique("listed");
    approved_task(s, &admin, &task, "true", json!({ "nextTaskId": next })).await;
    let (_, _, op) = user_with_roles(s, &["Workflow Operator"]).await;
    let mut nos = Vec::new();
    for i in 0..3 {
        let who = if i == 2 { &op } else { &admin };
        nos.push(start(s, who, &task, &[&node], &[]).await);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    for no in &nos {
        wait_end(s, &admin, *no, Duration::from_secs(30)).await;
    }
    let path = format!("/opmate/task/{task}/instance");
    let (st, body) = get(s, &admin, &path, &[]).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["totalCnt"], 3);
    let list = body["instanceList"].as_array().unwrap();
    assert_eq!(list[0]["taskInstanceNo"], nos[2], "newest first");
    for key in [
        "taskInstanceNo",
        "taskId",
        "startDt",
        "endDt",
        "runnerId",
        "runnerGubun",
        "nextTaskInstanceNo",
        "nextTaskId",
    ] {
        assert!(list[0].get(key).is_some(), "{key} missing");
    }
    assert_eq!(list[0]["nextTaskId"], next);
    assert_eq!(
        list[0]["nextTaskInstanceNo"], "",
        "the next task has execTask D: no chain"
    );
    assert_eq!(list[0]["runnerGubun"], "U");

    let (_, body) = get(s, &admin, &path, &[("runnerId", "admin")]).await;
    assert_eq!(body["totalCnt"], 2);
    let (_, body) = get(s, &admin, &path, &[("nextTaskId", &next)]).await;
    assert_eq!(body["totalCnt"], 3);
    let (_, body) = get(s, &admin, &path, &[("nextTaskId", "other")]).await;
    assert_eq!(body["totalCnt"], 0);

    // Dates: compact (server time zone) and ISO, inclusive bounds.
    let second = list[1]["startDt"].as_str().unwrap().to_owned();
    let (_, body) = get(s, &admin, &path, &[("startDtGe", &second)]).await;
    assert!(body["totalCnt"].as_i64().unwrap() >= 2, "{body}");
    let (_, body) = get(s, &admin, &path, &[("startDtLe", "20000101000000")]).await;
    assert_eq!(body["totalCnt"], 0);
    let (_, body) = get(
        s,
        &admin,
        &path,
        &[
            ("startDtGe", "2000-01-01T00:00:00Z"),
            ("startDtLe", "2999-01-01T00:00:00+09:00"),
        ],
    )
    .await;
    assert_eq!(body["totalCnt"], 3);
    let (_, body) = get(s, &admin, &path, &[("startDtGe", "29990101000000")]).await;
    assert_eq!(body["totalCnt"], 0);
    let (_, body) = get(s, &admin, &path, &[("limit", "2"), ("offset", "2")]).await;
    assert_eq!(
        (body["currentCnt"].as_i64(), body["totalCnt"].as_i64()),
        (Some(1), Some(3))
    );
    assert_eq!(body["instanceList"][0]["taskInstanceNo"], nos[0]);
    for (k, v) in [
        ("startDtGe", "yesterday"),
        ("startDtLe", "20241301000000"),
        ("limit", "-2"),
    ] {
        let (st, body) = get(s, &admin, &path, &[(k, v)]).await;
        assert_eq!(st, 400, "{k}={v}: {body}");
    }
    let (st, _) = get(s, &admin, "/opmate/task/no-such-task/instance", &[]).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn instance_node_list_filters_outputs_and_paging() {
    let e = env();
    let s = &e.server;
    let admin = admin_token(s).await;
    let a = e.agent.node_id.clone();
    let tag = unique("inl").to_lowercase();
    // A second real agent so the instance has two nodes with different results.
    let b = Agent::start(s, &format!("{tag}-other")).await;
    let task = unique("two");
    let script = "#!/bin/sh\necho \"out $HAECHI_NODE_ID\"\necho \"err $HAECHI_NODE_ID\" >&2\n[ \"$HAECHI_NODE_ID\" = \"$1\" ] && exit 3\nexit 0\n";
    approved_task(s, &admin, &task, script, json!({})).await;
    let no = start(s, &admin, &task, &[&a, &b.node_id], &[&b.node_id]).await;
    wait_end(s, &admin, no, Duration::from_secs(30)).await;
    let path = format!("/opmate/taskinstance/{no}/node");

    let (st, body) = get(s, &admin, &path, &[]).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        (body["currentCnt"].as_i64(), body["totalCnt"].as_i64()),
        (Some(2), Some(2))
    );
    for item in body["insNodeList"].as_array().unwrap() {
        assert_eq!(item["encbase64out"], "", "outputs only with stdoutYn=Y");
        assert_eq!(item["encbase64err"], "");
        for key in [
            "taskId",
            "taskInstanceNo",
            "nodeId",
            "execNo",
            "status",
            "startDt",
            "endDt",
            "runnerId",
            "runnerGubun",
            "resultCd",
            "exitCd",
        ] {
            assert!(item.get(key).is_some(), "{key} missing");
        }
    }
    let (_, body) = get(s, &admin, &path, &[("stdoutYn", "Y"), ("nodeId", &tag)]).await;
    assert_eq!(body["totalCnt"], 1);
    let item = &body["insNodeList"][0];
    assert_eq!(
        b64(&item["encbase64out"]),
        format!("out {}\n", b.node_id).as_bytes()
    );
    assert_eq!(item["encbase64err"], "");
    let (_, body) = get(s, &admin, &path, &[("stderrYn", "Y"), ("nodeId", &tag)]).await;
    assert_eq!(body["insNodeList"][0]["encbase64out"], "");
    assert_eq!(
        b64(&body["insNodeList"][0]["encbase64err"]),
        format!("err {}\n", b.node_id).as_bytes()
    );

    let (_, body) = get(s, &admin, &path, &[("result", "F")]).await;
    assert_eq!(ids(&body, "insNodeList", "nodeId"), vec![b.node_id.clone()]);
    let (_, body) = get(s, &admin, &path, &[("result", "S")]).await;
    assert_eq!(ids(&body, "insNodeList", "nodeId"), vec![a.clone()]);
    let (_, body) = get(s, &admin, &path, &[("exitCd", "3")]).await;
    assert_eq!(ids(&body, "insNodeList", "nodeId"), vec![b.node_id.clone()]);
    let (_, body) = get(s, &admin, &path, &[("execStatus", "END")]).await;
    assert_eq!(body["totalCnt"], 2);
    let (_, body) = get(s, &admin, &path, &[("execStatus", "RUN")]).await;
    assert_eq!(body["totalCnt"], 0);
    let (_, body) = get(s, &admin, &path, &[("limit", "1"), ("offset", "1")]).await;
    assert_eq!(
        (body["currentCnt"].as_i64(), body["totalCnt"].as_i64()),
        (Some(1), Some(2))
    );
    for (k, v) in [
        ("stdoutYn", "maybe"),
        ("execStatus", "DONE"),
        ("result", "X"),
        ("exitCd", "three"),
        ("offset", "-1"),
    ] {
        let (st, body) = get(s, &admin, &path, &[(k, v)]).await;
        assert_eq!(st, 400, "{k}={v}: {body}");
    }
    let (st, _) = get(s, &admin, "/opmate/taskinstance/99999999/node", &[]).await;
    assert_eq!(st, 404);
    let (st, _) = get(s, &admin, "/opmate/taskinstance/abc/node", &[]).await;
    assert_eq!(st, 404);
}

/// `curl -d '{...}'` sends JSON with a form content type: login and instance creation read
/// the body as the JSON it is.
#[tokio::test]
async fn json_bodies_sent_with_a_form_content_type_are_read_as_json() {
    let e = env();
    let s = &e.server;
    let form = "application/x-www-form-urlencoded";
    let (st, v) = call(
        client()
            .post(s.url("/opmate/user/admin/login"))
            .header("content-type", form)
            .body(json!({ "password": ADMIN_PASSWORD }).to_string()),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["resultCode"], "0000");
    let token = v["uuid"].as_str().unwrap().to_owned();

    let task = unique("jsonform");
    approved_task(s, &token, &task, "echo hi", json!({})).await;
    let (st, v) = call(
        client()
            .post(s.url(&format!("/opmate/task/{task}/instance")))
            .query(&[("auth", token.as_str())])
            .header("content-type", form)
            .body(json!({ "nodeIdList": [e.agent.node_id] }).to_string()),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["resultCode"], "0000", "{v}");
    let no = v["taskInstanceNo"].as_i64().expect("taskInstanceNo");
    wait_end(s, &token, no, Duration::from_secs(30)).await;
    let n = node_detail(s, &token, no, &e.agent.node_id, None).await;
    assert_eq!(b64(&n["encbase64out"]), b"hi\n", "{n}");
}
