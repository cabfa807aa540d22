//! Schedules (issue 22 item 8, issue 24 item 4): a workflow's `schedules` start runs with
//! `started_by` = `schedule`, each fire exactly once with two servers on one PostgreSQL (on
//! SQLite one server plays both), a fire missed while the server was down run once or skipped
//! (never twice), next fires shown, bad input refused naming the field with nothing stored;
//! and OPMATE task schedules fired by the same scheduler (refusals skipped and audited).

mod common;
mod exec_support;
mod workflow_support;

use std::time::{Duration, Instant};

use common::*;
use exec_support::*;
use serde_json::{json, Value};
use workflow_support::*;

const T: Duration = Duration::from_secs(60);

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

async fn get_wf(s: &Server, token: &str, id: &str) -> Value {
    let (st, doc) = call(
        client()
            .get(s.url(&format!("/api/v1/workflows/{id}")))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(st, 200, "{doc}");
    doc
}

async fn put_wf(s: &Server, token: &str, id: &str, def: &Value) -> (u16, Value) {
    call(
        client()
            .put(s.url(&format!("/api/v1/workflows/{id}")))
            .bearer_auth(token)
            .json(def),
    )
    .await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn a_schedule_fires_each_time_exactly_once_across_two_servers() {
    let s1 = Server::start_with(wf_opts());
    let s2 = pg_admin_url().map(|_| Server::start_with(s1.same_state().arg("--no-local-agent")));
    let other = s2.as_ref().unwrap_or(&s1);
    let admin = admin_token(&s1).await;
    let mut d = def(
        "dr",
        json!([{ "name": "check", "type": "sleep", "seconds": 0 }]),
    );
    d["params"] = json!({ "site": null });
    d["schedules"] = json!([{ "cron": "*/2 * * * * *", "timezone": "Asia/Seoul", "params": { "site": "busan" } }]);
    let id = create_wf(&s1, &admin, d.clone()).await;

    // The next fires, every two seconds from now.
    let doc = get_wf(other, &admin, &id).await;
    let fires: Vec<i64> = doc["next_fires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["at"].as_i64().unwrap())
        .collect();
    assert_eq!(fires.len(), 5, "{doc}");
    assert!(fires[0] > now_ms() - 1000 && fires[0] % 2000 == 0, "{doc}");
    assert!(fires.windows(2).all(|w| w[1] - w[0] == 2000), "{doc}");
    assert_eq!(doc["schedules"][0]["timezone"], "Asia/Seoul", "{doc}");

    // Let it fire a few times with both servers running, then take the schedule away.
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    let mut off = d.clone();
    off.as_object_mut().unwrap().remove("schedules");
    let (st, body) = put_wf(&s1, &admin, &id, &off).await;
    assert_eq!(st, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        get_wf(&s1, &admin, &id).await.get("next_fires").is_none(),
        "no schedule, no next fires"
    );

    let runs = executions_of(&s1, &admin, &id).await;
    assert!(runs.len() >= 3, "it fired every two seconds: {runs:?}");
    for r in &runs {
        assert_eq!(r["started_by"], "schedule", "{r}");
        let e = wait_for(
            &s1,
            &admin,
            r["execution_id"].as_str().unwrap(),
            "COMPLETED",
            T,
        )
        .await;
        assert_eq!(e["params"]["site"], "busan", "{e}");
    }
    // One run per fire: as many runs as claimed fires, each fire time once.
    let fired = s1.sql(&format!(
        "SELECT COUNT(*) || ' ' || COUNT(DISTINCT fire_at) FROM schedule_runs \
         WHERE kind = 'workflow' AND target = '{id}' AND outcome = 'started'"
    ));
    assert_eq!(fired, format!("{n} {n}", n = runs.len()), "{runs:?}");
    let mut starts: Vec<i64> = runs
        .iter()
        .map(|r| r["created_at"].as_i64().unwrap())
        .collect();
    starts.sort();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] >= 1000),
        "two runs for one fire: {starts:?}"
    );
    // The audit names the schedule as the starter.
    let (_, _, auditor) = user_with_roles(&s1, &["Auditor"]).await;
    let (_, audit) = call(
        client()
            .get(s1.url("/api/v1/audit"))
            .bearer_auth(&auditor)
            .query(&[
                ("action", "workflow.execute"),
                ("user", "schedule"),
                ("limit", "1000"),
            ]),
    )
    .await;
    let mine = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"]["wf_id"] == id.as_str())
        .count();
    assert_eq!(mine, runs.len(), "{audit}");
    if let Some(s2) = s2 {
        s2.finish().await;
    }
    s1.finish().await;
}

/// A cron that fires once a minute, at the second `secs` seconds from now.
fn cron_in(secs: i64) -> (String, i64) {
    let at = (now_ms() / 1000 + secs) * 1000;
    (format!("{} * * * * *", (at / 1000) % 60), at)
}

#[tokio::test]
async fn a_fire_missed_while_the_server_was_down_runs_once_or_is_skipped() {
    let mut s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let (cron, due) = cron_in(12);
    let mut once = def(
        "dr",
        json!([{ "name": "check", "type": "sleep", "seconds": 0 }]),
    );
    once["schedules"] = json!([{ "cron": cron, "timezone": "UTC" }]);
    let once_id = create_wf(&s, &admin, once).await;
    let mut skip = def(
        "dr",
        json!([{ "name": "check", "type": "sleep", "seconds": 0 }]),
    );
    skip["schedules"] = json!([{ "cron": cron, "timezone": "UTC", "misfire": "skip" }]);
    let skip_id = create_wf(&s, &admin, skip).await;
    assert_eq!(
        get_wf(&s, &admin, &once_id).await["next_fires"][0]["at"],
        due
    );

    // Down across the fire, and up again well after it.
    s.stop();
    assert!(
        now_ms() < due - 500,
        "the server took too long to stop: the fire was not missed"
    );
    while now_ms() < due + 3_500 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut s = Server::start_with(s.same_state().arg("--no-local-agent"));
    let admin = admin_token(&s).await;
    let deadline = Instant::now() + T;
    loop {
        let done = s.sql(&format!(
            "SELECT COUNT(*) FROM schedule_runs WHERE kind = 'workflow' AND target IN ('{once_id}', '{skip_id}')"
        ));
        if done == "2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the missed fires were not handled: {done}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = executions_of(&s, &admin, &once_id).await;
    assert_eq!(
        runs.len(),
        1,
        "run_once: the missed fire ran once: {runs:?}"
    );
    assert_eq!(runs[0]["started_by"], "schedule");
    assert!(executions_of(&s, &admin, &skip_id).await.is_empty());
    assert_eq!(
        s.sql(&format!(
            "SELECT outcome FROM schedule_runs WHERE kind = 'workflow' AND target = '{skip_id}'"
        )),
        "misfire_skipped"
    );
    let (_, _, auditor) = user_with_roles(&s, &["Auditor"]).await;
    let (_, audit) = call(
        client()
            .get(s.url("/api/v1/audit"))
            .bearer_auth(&auditor)
            .query(&[("action", "schedule.skip"), ("limit", "1000")]),
    )
    .await;
    assert!(
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["target"] == format!("workflow:{skip_id}")
                && e["detail"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("misfire: skip")),
        "{audit}"
    );

    // The scheduler's pruning of old fires (each start) works on this store.
    assert!(!s.logs().contains("pruning old fires"), "{}", s.logs());

    // Another restart at once: nothing fires twice.
    s.stop();
    let s = Server::start_with(s.same_state().arg("--no-local-agent"));
    let admin = admin_token(&s).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(executions_of(&s, &admin, &once_id).await.len(), 1);
    assert!(executions_of(&s, &admin, &skip_id).await.is_empty());
    s.finish().await;
}

#[tokio::test]
async fn bad_schedules_are_refused_naming_the_field_and_nothing_is_stored() {
    let s = Server::start_with(wf_opts());
    let admin = admin_token(&s).await;
    let mut good = def(
        "dr",
        json!([{ "name": "check", "type": "sleep", "seconds": 0 }]),
    );
    good["params"] = json!({ "site": null, "pw": { "type": "password", "required": false } });
    good["schedules"] = json!([{ "cron": "0 3 * * *", "params": { "site": "a" } }]);
    let id = create_wf(&s, &admin, good.clone()).await;
    for (schedules, field) in [
        (
            json!([{ "cron": "61 * * * *", "params": { "site": "a" } }]),
            "schedules[0].cron",
        ),
        (
            json!([{ "cron": "* * *", "params": { "site": "a" } }]),
            "schedules[0].cron",
        ),
        (
            json!([{ "cron": "0 3 * * *", "timezone": "Mars/Olympus", "params": { "site": "a" } }]),
            "schedules[0].timezone",
        ),
        (
            json!([{ "cron": "0 3 * * *", "misfire": "twice", "params": { "site": "a" } }]),
            "schedules[0].misfire",
        ),
        (json!([{ "cron": "0 3 * * *" }]), "schedules[0].params.site"),
        (
            json!([{ "cron": "0 3 * * *", "params": { "site": "a", "nope": "b" } }]),
            "schedules[0].params.nope",
        ),
        (
            json!([{ "cron": "0 3 * * *", "params": { "site": "a", "pw": "b" } }]),
            "schedules[0].params.pw",
        ),
        (
            json!([{ "cron": "0 3 * * *", "every": "day", "params": { "site": "a" } }]),
            "schedules[0].every",
        ),
        (json!("0 3 * * *"), "schedules"),
    ] {
        let mut bad = good.clone();
        bad["schedules"] = schedules;
        let (st, body) = put_wf(&s, &admin, &id, &bad).await;
        assert_eq!(st, 400, "{field}: {body}");
        assert_eq!(body["field"], field, "{body}");
    }
    let doc = get_wf(&s, &admin, &id).await;
    assert_eq!(doc["version"], 1, "nothing stored: {doc}");
    assert_eq!(doc["schedules"], good["schedules"], "{doc}");
    assert_eq!(doc["next_fires"].as_array().unwrap().len(), 5, "{doc}");

    // `haechi wf schedules ID`: the schedules and their next fires, as tables.
    let dir = tempfile::tempdir().unwrap();
    let session = cli_login(&s, dir.path());
    let (code, out, err) = cli_wf(&session, &["schedules", &id]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("CRON") && out.contains("NEXT FIRE"), "{out}");
    assert!(out.contains("0 3 * * *") && out.contains("site=a"), "{out}");
    assert_eq!(
        out.matches("0 3 * * *").count(),
        6,
        "the schedule and 5 fires: {out}"
    );
    s.finish().await;
}

async fn task_schedules(s: &Server, token: &str, task: &str, body: Value) -> (u16, Value) {
    call(
        client()
            .put(s.url(&format!("/api/v1/tasks/{task}/schedules")))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

async fn scheduler_instances(s: &Server, token: &str, task: &str) -> Vec<Value> {
    let (st, body) = call(
        client()
            .get(s.url(&format!("/opmate/task/{task}/instance")))
            .query(&[("auth", token)]),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    body["instanceList"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["runnerGubun"] == "S")
        .collect()
}

#[tokio::test]
async fn task_schedules_fire_through_the_same_scheduler_and_refusals_are_audited() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let node = node_name("tsch");
    let _agent = Agent::start(&s, &node).await;
    let task = unique("t-sched");
    approved_task(
        &s,
        &admin,
        &task,
        "#!/bin/sh\necho \"tick $1\"\n",
        json!({ "execScheduler": "E" }),
    )
    .await;

    // Bad input: a 400 naming the field, nothing stored.
    for (body, field) in [
        (
            json!({ "schedules": [{ "cron": "61 * * * *" }] }),
            "schedules[0].cron",
        ),
        (
            json!({ "schedules": [{ "cron": "* * * * *", "timezone": "Mars/Olympus" }] }),
            "schedules[0].timezone",
        ),
        (
            json!({ "schedules": [{ "at": "tomorrow" }] }),
            "schedules[0].at",
        ),
        (
            json!({ "schedules": [{ "cron": "* * * * *", "at": "2030-01-01T00:00:00Z" }] }),
            "schedules[0].at",
        ),
        (json!({ "schedules": [{}] }), "schedules[0].cron"),
        (
            json!({ "schedules": [{ "cron": "* * * * *", "nodeIdList": [] }] }),
            "schedules[0].nodeIdList",
        ),
        (
            json!({ "schedules": [{ "cron": "* * * * *", "nodes": ["x"] }] }),
            "schedules[0].nodes",
        ),
    ] {
        let (st, r) = task_schedules(&s, &admin, &task, body).await;
        assert_eq!(st, 400, "{field}: {r}");
        assert_eq!(r["field"], field, "{r}");
    }
    let (st, r) = task_schedules(&s, &admin, "no-such-task", json!({ "schedules": [] })).await;
    assert_eq!(st, 404, "{r}");
    let (st, view) = call(
        client()
            .get(s.url(&format!("/api/v1/tasks/{task}/schedules")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200, "{view}");
    assert_eq!(view["schedules"], json!([]), "{view}");

    // Every two seconds on the node, with arguments.
    let (st, view) = task_schedules(
        &s,
        &admin,
        &task,
        json!({ "schedules": [{ "cron": "*/2 * * * * *", "timezone": "Asia/Seoul",
                                "nodeIdList": [node], "arguments": ["nightly"] }] }),
    )
    .await;
    assert_eq!(st, 200, "{view}");
    let next = view["nextFires"].as_array().unwrap();
    assert_eq!(next.len(), 5, "{view}");
    assert!(next[0]["at"].as_i64().unwrap() % 2000 == 0, "{view}");
    let deadline = Instant::now() + T;
    let runs = loop {
        let runs = scheduler_instances(&s, &admin, &task).await;
        if runs.len() >= 2 {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule did not fire: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let no = runs[0]["taskInstanceNo"].as_i64().unwrap();
    wait_end(&s, &admin, no, T).await;
    let n = node_detail(&s, &admin, no, &node, None).await;
    assert_eq!(
        String::from_utf8(b64(&n["encbase64out"])).unwrap(),
        "tick nightly\n"
    );
    let (st, _) = task_schedules(&s, &admin, &task, json!({ "schedules": [] })).await;
    assert_eq!(st, 200);

    // A task that may not run by schedule: each fire is skipped, stored and audited with why.
    let denied = unique("t-nosched");
    approved_task(
        &s,
        &admin,
        &denied,
        "#!/bin/sh\necho no\n",
        json!({ "execScheduler": "D" }),
    )
    .await;
    let (st, _) = task_schedules(
        &s,
        &admin,
        &denied,
        json!({ "schedules": [{ "cron": "*/2 * * * * *", "nodeIdList": [node] }] }),
    )
    .await;
    assert_eq!(st, 200);
    let (_, _, auditor) = user_with_roles(&s, &["Auditor"]).await;
    let deadline = Instant::now() + T;
    let skipped = loop {
        let (_, audit) = call(
            client()
                .get(s.url("/api/v1/audit"))
                .bearer_auth(&auditor)
                .query(&[("action", "schedule.skip"), ("limit", "1000")]),
        )
        .await;
        let mine: Vec<Value> = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["target"] == format!("task:{denied}"))
            .cloned()
            .collect();
        if !mine.is_empty() {
            break mine;
        }
        assert!(
            Instant::now() < deadline,
            "no skipped fire audited: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(skipped[0]["outcome"], "failure", "{skipped:?}");
    assert!(
        !skipped[0]["detail"]["reason"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{skipped:?}"
    );
    assert!(scheduler_instances(&s, &admin, &denied).await.is_empty());
    let (st, _) = task_schedules(&s, &admin, &denied, json!({ "schedules": [] })).await;
    assert_eq!(st, 200);
    s.finish().await;
}
