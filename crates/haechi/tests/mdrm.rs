//! MDRM's workflow API exactly as the seed document shows it: the login, then list, execute,
//! status and control with the document's field names, shapes and curl forms (form-encoded
//! `-d "wf_id=1" -d "sync=false"`), an API account as the document sets up, and the
//! `{"result":"fail","message"}` shape of every error under `/services/workflow/`.

mod common;
mod workflow_support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use workflow_support::*;

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| Server::start_with(wf_opts().env("HAECHI_WORKFLOW__SYNC_WAIT_SECS", "2")))
}

const T: Duration = Duration::from_secs(30);

/// The document's API account: an `api` user, logged in through `POST /api/v1/auth`; the
/// whole `token` value ("Bearer ...") is the Authorization header.
async fn api_account(s: &Server, roles: &[&str]) -> String {
    let admin = admin_token(s).await;
    let user_id = unique("mdrm_api");
    let (st, body) = call(client().post(s.url("/api/v1/users")).bearer_auth(&admin).json(&json!({
        "user_id": user_id, "name": "API 연동 계정", "password": "password-for-api", "kind": "api", "roles": roles,
    }))).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({ "user_id": user_id, "pwd": "password-for-api" })),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["message"], "Success");
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("Bearer "));
    token
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn is_exec_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('_').collect();
    parts.len() == 3
        && parts[0] == "EXEC"
        && parts[1].len() == 8
        && parts[1].bytes().all(|b| b.is_ascii_digit())
        && parts[2].len() >= 4
        && parts[2].bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test]
async fn the_documented_flow_list_execute_status_control() {
    let s = server();
    let admin = admin_token(s).await;
    let auth = api_account(s, &["Workflow Operator"]).await;
    let group = unique("운영");
    let name = unique("일일_서비스_기동");
    let wf_id = create_wf(
        s,
        &admin,
        json!({ "name": name, "group": group, "steps": [
            { "name": "DB_Service_Start", "type": "sleep", "seconds": 1 },
            { "name": "App_Start", "type": "sleep", "seconds": 0 },
        ]}),
    )
    .await;

    // 2.1 list
    let r = client()
        .get(s.url("/services/workflow/list"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let list: Value = r.json().await.unwrap();
    assert_eq!(keys(&list), ["result", "workflows"]);
    assert_eq!(list["result"], "success");
    let mine = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == wf_id)
        .unwrap();
    assert_eq!(mine, &json!({ "id": wf_id, "name": name, "group": group }));
    assert!(mine["id"].is_string(), "ids are strings as in the document");

    // 2.2 execute, exactly the document's curl: -d "wf_id=1" -d "sync=false"
    let r = client()
        .post(s.url("/services/workflow/execute"))
        .header("Authorization", &auth)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("wf_id={wf_id}&sync=false"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let started: Value = r.json().await.unwrap();
    assert_eq!(keys(&started), ["execution_id", "message", "result"]);
    assert_eq!(started["result"], "success");
    assert_eq!(started["message"], "Workflow started successfully.");
    let exec_id = started["execution_id"].as_str().unwrap().to_owned();
    assert!(is_exec_id(&exec_id), "{exec_id}");

    // 2.3 status while the first step runs
    let deadline = Instant::now() + T;
    let running = loop {
        let r = client()
            .get(s.url("/services/workflow/status"))
            .query(&[("execution_id", &exec_id)])
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let st: Value = r.json().await.unwrap();
        if st["current_step"] == "DB_Service_Start" {
            break st;
        }
        assert!(Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        keys(&running),
        ["current_step", "execution_id", "progress", "status"]
    );
    assert_eq!(
        running,
        json!({ "execution_id": exec_id, "status": "RUNNING", "current_step": "DB_Service_Start", "progress": 0 })
    );
    assert!(running["progress"].is_u64(), "progress is a number");

    // 2.4 control: pause, resume
    for (action, want) in [("pause", "PAUSED"), ("resume", "RUNNING")] {
        let r = client()
            .post(s.url("/services/workflow/control"))
            .header("Authorization", &auth)
            .form(&[("execution_id", exec_id.as_str()), ("action", action)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["result"], "success", "{body}");
        assert_eq!(body["execution_id"], exec_id);
        assert_eq!(body["status"], want);
    }
    let e = wait_for(s, &admin, &exec_id, "COMPLETED", T).await;
    let st = status(s, &admin, &exec_id).await;
    assert_eq!(
        st,
        json!({ "execution_id": exec_id, "status": "COMPLETED", "current_step": "App_Start", "progress": 100 })
    );
    assert_eq!(e["wf_id"], wf_id);

    // An action that does not fit → 409 in MDRM's fail shape.
    let r = client()
        .post(s.url("/services/workflow/control"))
        .header("Authorization", &auth)
        .form(&[("execution_id", exec_id.as_str()), ("action", "resume")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(keys(&body), ["message", "result"]);
    assert_eq!(body["result"], "fail");
}

#[tokio::test]
async fn execute_takes_json_too_and_every_token_carrier() {
    let s = server();
    let admin = admin_token(s).await;
    let wf_id = create_wf(
        s,
        &admin,
        def(
            "운영",
            json!([{ "name": "a", "type": "sleep", "seconds": 0 }]),
        ),
    )
    .await;
    let bare = admin.clone();
    let c = client();
    let reqs = [
        c.post(s.url("/services/workflow/execute"))
            .bearer_auth(&bare)
            .json(&json!({ "wf_id": wf_id, "sync": false })),
        c.post(s.url("/services/workflow/execute"))
            .header("Authorization", &bare)
            .json(&json!({ "wf_id": wf_id.parse::<i64>().unwrap() })),
        c.post(s.url("/services/workflow/execute"))
            .header("X-Authorization", &bare)
            .form(&[("wf_id", wf_id.as_str())]),
        c.post(s.url("/services/workflow/execute"))
            .query(&[("auth", &bare)])
            .form(&[("wf_id", wf_id.as_str()), ("sync", "FALSE")]),
        c.post(s.url("/services/workflow/execute"))
            .bearer_auth(&bare)
            .header("content-type", "application/json; charset=utf-8")
            .body(format!("{{\"wf_id\":\"{wf_id}\"}}")),
    ];
    let mut ids = Vec::new();
    for r in reqs {
        let (st, body) = call(r).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["result"], "success");
        ids.push(body["execution_id"].as_str().unwrap().to_owned());
    }
    // One per-day sequence: consecutive numbers, zero-padded to 4 digits.
    let nums: Vec<u32> = ids
        .iter()
        .map(|i| i.rsplit('_').next().unwrap().parse().unwrap())
        .collect();
    for w in nums.windows(2) {
        assert!(w[1] > w[0], "{ids:?}");
    }
    assert!(ids.iter().all(|i| i.rsplit('_').next().unwrap().len() >= 4));
}

#[tokio::test]
async fn sync_execute_answers_when_the_run_ends_or_after_the_bound() {
    let s = server();
    let admin = admin_token(s).await;
    let quick = create_wf(
        s,
        &admin,
        def(
            "운영",
            json!([{ "name": "a", "type": "sleep", "seconds": 0.3 }]),
        ),
    )
    .await;
    let t = Instant::now();
    let (st, body) = call(
        client()
            .post(s.url("/services/workflow/execute"))
            .bearer_auth(&admin)
            .form(&[("wf_id", quick.as_str()), ("sync", "true")]),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(body["result"], "success");
    assert_eq!(body["status"], "COMPLETED", "{body}");
    assert_eq!(body["progress"], 100);
    assert!(is_exec_id(body["execution_id"].as_str().unwrap()));

    // Failed runs say so.
    let failing = create_wf(s, &admin, def("운영", json!([{ "name": "a", "type": "http", "url": "http://127.0.0.1:9/", "timeout_secs": 1 }]))).await;
    let (_, body) = call(
        client()
            .post(s.url("/services/workflow/execute"))
            .bearer_auth(&admin)
            .json(&json!({ "wf_id": failing, "sync": true })),
    )
    .await;
    assert_eq!(body["status"], "FAILED", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Workflow failed"),
        "{body}"
    );

    // The wait is bounded (this server: 2 s); then it answers with the running state.
    let slow = create_wf(
        s,
        &admin,
        def(
            "운영",
            json!([{ "name": "long", "type": "sleep", "seconds": 30 }]),
        ),
    )
    .await;
    let t = Instant::now();
    let (st, body) = call(
        client()
            .post(s.url("/services/workflow/execute"))
            .bearer_auth(&admin)
            .form(&[("wf_id", slow.as_str()), ("sync", "true")]),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(body["status"], "RUNNING", "{body}");
    let exec_id = body["execution_id"].as_str().unwrap();
    assert_eq!(control(s, &admin, exec_id, "stop").await.0, 200);
}

#[tokio::test]
async fn errors_have_the_fail_shape_with_the_right_status() {
    let s = server();
    let admin = admin_token(s).await;
    let c = client();
    let check = |st: u16, want: u16, body: &Value| {
        assert_eq!(st, want, "{body}");
        assert_eq!(keys(body), ["message", "result"], "{body}");
        assert_eq!(body["result"], "fail");
        assert!(!body["message"].as_str().unwrap().is_empty());
    };
    let (st, body) = call(
        c.post(s.url("/services/workflow/execute"))
            .bearer_auth(&admin)
            .form(&[("wf_id", "987654321")]),
    )
    .await;
    check(st, 404, &body);
    let (st, body) = call(
        c.post(s.url("/services/workflow/execute"))
            .bearer_auth(&admin)
            .form(&[("sync", "false")]),
    )
    .await;
    check(st, 400, &body);
    assert!(
        body["message"].as_str().unwrap().contains("wf_id"),
        "{body}"
    );
    let (st, body) = call(
        c.get(s.url("/services/workflow/status"))
            .bearer_auth(&admin),
    )
    .await;
    check(st, 400, &body);
    assert!(
        body["message"].as_str().unwrap().contains("execution_id"),
        "{body}"
    );
    let (st, body) = call(
        c.get(s.url("/services/workflow/status"))
            .bearer_auth(&admin)
            .query(&[("execution_id", "EXEC_20240520_0001")]),
    )
    .await;
    check(st, 404, &body);
    let (st, body) = call(
        c.post(s.url("/services/workflow/control"))
            .bearer_auth(&admin)
            .form(&[("execution_id", "EXEC_20240520_0001")]),
    )
    .await;
    check(st, 400, &body);
    let (st, body) = call(
        c.post(s.url("/services/workflow/control"))
            .bearer_auth(&admin)
            .form(&[("execution_id", "EXEC_20240520_0001"), ("action", "stop")]),
    )
    .await;
    check(st, 404, &body);
    let (st, body) = call(
        c.get(s.url("/services/workflow/list"))
            .header("Authorization", "Bearer not-a-token"),
    )
    .await;
    check(st, 401, &body);
    let (st, body) = call(
        c.delete(s.url("/services/workflow/list"))
            .bearer_auth(&admin),
    )
    .await;
    check(st, 405, &body);
    let (st, body) = call(
        c.get(s.url("/services/workflow/nothing"))
            .bearer_auth(&admin),
    )
    .await;
    check(st, 404, &body);
    let (st, body) = call(
        c.post(s.url("/services/workflow/execute"))
            .bearer_auth(&admin)
            .header("content-type", "text/plain")
            .body("wf_id=1"),
    )
    .await;
    check(st, 415, &body);
    // The API account cannot use the web-console-only routes, but the MDRM ones work.
    let auth = api_account(s, &["Workflow Operator"]).await;
    let (st, _) = call(
        c.get(s.url("/services/workflow/list"))
            .header("Authorization", &auth),
    )
    .await;
    assert_eq!(st, 200);
}
