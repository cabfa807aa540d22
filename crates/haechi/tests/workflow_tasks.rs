//! Task steps with real `haechi agent` processes: a step starts an OPMATE task instance that
//! names its execution, arguments arrive as whole argv strings, a failing node fails the step,
//! `stop` kills the task on the agent, a timeout cancels it, and `kill -9` of the server during
//! a task step re-attaches to the instance instead of starting the task again.

mod common;
mod exec_support;
mod workflow_support;

use std::time::{Duration, Instant};

use common::*;
use exec_support::*;
use serde_json::{json, Value};
use workflow_support::*;

const T: Duration = Duration::from_secs(60);

fn exec_count(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn instances_of(s: &Server, token: &str, task: &str) -> Vec<Value> {
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
        .unwrap_or_else(|| panic!("no instance list in {body}"))
}

fn pid_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.split(") ")
                    .nth(1)
                    .is_some_and(|rest| rest.starts_with('Z'))
            })
            .unwrap_or(true)
}

#[tokio::test]
async fn task_steps_run_opmate_tasks_with_whole_string_arguments() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let node = node_name("wfn");
    let _agent = Agent::start(&s, &node).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("args.txt");
    let task = unique("wf-args");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$#\" \"$@\" > {}\necho done\n",
        out.display()
    );
    approved_task(&s, &admin, &task, &script, json!({})).await;
    let fail_task = unique("wf-fail");
    approved_task(
        &s,
        &admin,
        &fail_task,
        "#!/bin/sh\necho broken >&2\nexit 3\n",
        json!({}),
    )
    .await;

    let mut d = def(
        "ops",
        json!([
            { "name": "run", "type": "task", "task": task, "nodes": [node],
              "arguments": ["${target}", "a b", "$(reboot)", "x; rm -rf /"] },
            { "name": "broken", "type": "task", "task": fail_task, "nodes": [node], "retries": 1, "retry_delay_secs": 0.1,
              "on_failure": "continue" },
        ]),
    );
    d["params"] = json!({ "target": "db 2" });
    let id = create_wf(&s, &admin, d).await;
    let exec_id = execute(&s, &admin, &id).await;
    let e = wait_for(&s, &admin, &exec_id, "COMPLETED", T).await;
    let run = step(&e, "run");
    assert_eq!(run["status"], "SUCCEEDED", "{e}");
    let no = run["taskInstanceNo"]
        .as_i64()
        .expect("task steps name their instance");
    let args = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        args, "4\ndb 2\na b\n$(reboot)\nx; rm -rf /\n",
        "argv, never a shell"
    );
    // The instance says who started it: a user (runnerGubun U) through this execution.
    let detail = wait_end(&s, &admin, no, T).await;
    assert_eq!(
        detail["instance"]["origin"],
        format!("{exec_id}/run/1"),
        "{detail}"
    );
    assert_eq!(detail["instance"]["runnerGubun"], "U");
    let broken = step(&e, "broken");
    assert_eq!(broken["status"], "FAILED");
    assert_eq!(broken["attempts"], 2);
    assert!(broken["error"].as_str().unwrap().contains("exit 3"), "{e}");
    // Each attempt started an instance of its own.
    let insts = instances_of(&s, &admin, &fail_task).await;
    assert_eq!(insts.len(), 2, "{insts:?}");

    // `haechi wf run --follow` prints the transitions and the task's output as it comes.
    let talk = unique("wf-talk");
    approved_task(
        &s,
        &admin,
        &talk,
        "#!/bin/sh\necho \"hello from $1\"\necho oops >&2\n",
        json!({}),
    )
    .await;
    let name = unique("wf_follow");
    create_wf(&s, &admin, json!({ "name": name, "group": "ops", "params": { "who": null }, "steps": [
        { "name": "greet", "type": "task", "task": talk, "nodes": [node], "arguments": ["${who}"] },
    ]})).await;
    let session = cli_login(&s, dir.path());
    let (code, out, err) = cli_wf(
        &session,
        &["run", &name, "--param", "who=the agent", "--follow"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("[greet/{node}] hello from the agent")),
        "{out}"
    );
    assert!(err.contains(&format!("[greet/{node}] oops")), "{err}");
    assert!(
        out.contains("step greet SUCCEEDED") && out.contains("COMPLETED"),
        "{out}"
    );
    s.finish().await;
}

#[tokio::test]
async fn stop_kills_the_task_on_the_agent_and_a_timeout_cancels_it() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let node = node_name("wfk");
    let _agent = Agent::start(&s, &node).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let task = unique("wf-long");
    let script = format!(
        "#!/bin/sh\necho $$ > {}\nexec sleep 120\n",
        pidfile.display()
    );
    approved_task(&s, &admin, &task, &script, json!({})).await;
    let id = create_wf(
        &s,
        &admin,
        def(
            "ops",
            json!([
                { "name": "long", "type": "task", "task": task, "nodes": [node] },
                { "name": "never", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let exec_id = execute(&s, &admin, &id).await;
    let deadline = Instant::now() + T;
    let pid: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "the task never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(pid_alive(pid));
    let (st, body) = control(&s, &admin, &exec_id, "stop").await;
    assert_eq!(st, 200, "{body}");
    let e = execution(&s, &admin, &exec_id).await;
    assert_eq!(e["status"], "STOPPED");
    let no = step(&e, "long")["taskInstanceNo"].as_i64().unwrap();
    let n = wait_status(&s, &admin, no, &node, "CANCEL", T).await;
    assert_eq!(n["status"], "CANCEL");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the task process {pid} is still alive after stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A step timeout cancels the instance too.
    std::fs::remove_file(&pidfile).unwrap();
    let id = create_wf(&s, &admin, def("ops", json!([
        { "name": "long", "type": "task", "task": task, "nodes": [node], "timeout_secs": 1 },
    ]))).await;
    let exec_id = execute(&s, &admin, &id).await;
    let e = wait_for(&s, &admin, &exec_id, "FAILED", T).await;
    assert!(
        step(&e, "long")["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{e}"
    );
    let no = step(&e, "long")["taskInstanceNo"].as_i64().unwrap();
    wait_status(&s, &admin, no, &node, "CANCEL", T).await;
    s.finish().await;
}

#[tokio::test]
async fn kill_9_during_a_task_step_re_attaches_and_never_runs_the_task_twice() {
    let mut s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let relay = Relay::start(&s).await;
    let node = node_name("wfr");
    let _agent = Agent::start_at(&s, &node, &relay.url).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran.log");
    let task = unique("wf-once");
    let script = format!("#!/bin/sh\necho ran >> {}\nsleep 3\n", log.display());
    approved_task(&s, &admin, &task, &script, json!({})).await;
    let id = create_wf(
        &s,
        &admin,
        def(
            "dr",
            json!([
                { "name": "failover", "type": "task", "task": task, "nodes": [node] },
                { "name": "after", "type": "sleep", "seconds": 0 },
            ]),
        ),
    )
    .await;
    let exec_id = execute(&s, &admin, &id).await;
    let deadline = Instant::now() + T;
    while exec_count(&log) == 0 {
        assert!(Instant::now() < deadline, "the task never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.kill9();
    let mut opts = exec_opts();
    opts.reuse = s.same_state().reuse;
    let s2 = Server::start_with(opts);
    relay.point_at(&s2);
    let admin = admin_token(&s2).await;
    let e = wait_for(&s2, &admin, &exec_id, "COMPLETED", T).await;
    assert_eq!(step(&e, "failover")["attempts"], 1, "{e}");
    assert_eq!(exec_count(&log), 1, "the task ran once");
    assert_eq!(
        instances_of(&s2, &admin, &task).await.len(),
        1,
        "one task instance"
    );
    s2.finish().await;
    drop(s);
}

#[tokio::test]
async fn a_task_step_runs_only_for_a_starter_who_may_run_the_task() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let node = node_name("wfp");
    let _agent = Agent::start(&s, &node).await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran.txt");
    let task = unique("wf-perm");
    approved_task(
        &s,
        &admin,
        &task,
        &format!("#!/bin/sh\necho ran >> {}\n", ran.display()),
        json!({}),
    )
    .await;
    let workflows_only = role_with(&s, &admin, &["workflow.view", "workflow.execute"]).await;
    let with_tasks = role_with(
        &s,
        &admin,
        &["workflow.view", "workflow.execute", "task.execute"],
    )
    .await;
    let id = create_wf(
        &s,
        &admin,
        def(
            "perm",
            json!([
                { "name": "wait", "type": "sleep", "seconds": 1.5 },
                { "name": "run", "type": "task", "task": task, "nodes": [node] },
            ]),
        ),
    )
    .await;

    // Without task.execute the run is refused up front, naming the step, the task and the
    // missing right.
    let (_, _, runner) = user_with_roles(&s, &[&workflows_only]).await;
    let (st, body) = call(
        client()
            .post(s.url("/services/workflow/execute"))
            .bearer_auth(&runner)
            .form(&[("wf_id", id.as_str())]),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["result"], "fail");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("step 'run'") && msg.contains(&task) && msg.contains("task.execute"),
        "{msg}"
    );

    // A starter who loses the right before the task step starts: the step fails naming it
    // and no task instance starts.
    let (starter_id, _, starter) = user_with_roles(&s, &[&with_tasks]).await;
    let exec_id = execute(&s, &starter, &id).await;
    let (st, body) = call(
        client()
            .patch(s.url(&format!("/api/v1/users/{}", enc(&starter_id))))
            .bearer_auth(&admin)
            .json(&json!({ "roles": [workflows_only] })),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let e = wait_for(&s, &admin, &exec_id, "FAILED", T).await;
    let run = step(&e, "run");
    assert_eq!(run["status"], "FAILED", "{e}");
    let err = run["error"].as_str().unwrap();
    assert!(
        err.contains("task.execute") && err.contains(&task) && err.contains(&starter_id),
        "{err}"
    );
    assert!(run["taskInstanceNo"].is_null(), "no task started: {run}");
    assert!(instances_of(&s, &admin, &task).await.is_empty());
    assert!(!ran.exists(), "the script never ran");
}
