//! Real agents running real scripts: exact output and exit codes, binary and large output,
//! the OS user, timeout, cancel, re-run, credentials, and what happens when an agent or the
//! server dies mid-run.

mod common;
mod exec_support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use exec_support::*;
use serde_json::json;

/// One server and two agents shared by the tests of this binary.
struct Env {
    server: Server,
    a: Agent,
    b: Agent,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    shared_env(&ENV, || async {
        let server = Server::start_with(exec_opts());
        let a = Agent::start(&server, &node_name("agent-a")).await;
        let b = Agent::start(&server, &node_name("agent-b")).await;
        Env { server, a, b }
    })
}

#[tokio::test]
async fn exact_stdout_stderr_exit_code_and_argv_on_several_agents() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let id = unique("exact");
    let script = "#!/bin/sh\nprintf 'out:%s|' \"$@\"\nprintf 'argc=%s\\n' \"$#\"\necho \"node=$HAECHI_NODE_ID\" >&2\nexit 7\n";
    approved_task(s, &t, &id, script, json!({})).await;
    let no = start(
        s,
        &t,
        &id,
        &[&e.a.node_id, &e.b.node_id],
        &["a b", "$HOME", "x;y", ""],
    )
    .await;
    let detail = wait_end(s, &t, no, Duration::from_secs(30)).await;
    assert_eq!(detail["nodes"].as_array().unwrap().len(), 2);
    for agent in [&e.a, &e.b] {
        let n = node_detail(s, &t, no, &agent.node_id, None).await;
        assert_eq!(n["status"], "END", "{n}");
        assert_eq!(n["resultCd"], "F");
        assert_eq!(n["exitCd"], 7);
        assert_eq!(n["execNo"], 1);
        assert_eq!(n["runnerGubun"], "U");
        assert_eq!(n["runnerId"], "admin");
        assert_eq!(
            b64(&n["encbase64out"]),
            b"out:a b|out:$HOME|out:x;y|out:|argc=4\n"
        );
        assert_eq!(
            b64(&n["encbase64err"]),
            format!("node={}\n", agent.node_id).as_bytes()
        );
        assert_eq!(n["startDt"].as_str().unwrap().len(), 14);
        assert_eq!(n["endDt"].as_str().unwrap().len(), 14);
    }
}

#[tokio::test]
async fn success_is_s_with_exit_zero() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let id = unique("ok");
    approved_task(s, &t, &id, "echo fine", json!({})).await;
    let no = start(s, &t, &id, &[&e.a.node_id], &[]).await;
    wait_end(s, &t, no, Duration::from_secs(30)).await;
    let n = node_detail(s, &t, no, &e.a.node_id, None).await;
    assert_eq!(
        (
            n["status"].as_str(),
            n["resultCd"].as_str(),
            n["exitCd"].as_i64()
        ),
        (Some("END"), Some("S"), Some(0))
    );
    assert_eq!(b64(&n["encbase64out"]), b"fine\n");
    assert_eq!(b64(&n["encbase64err"]), b"");
}

#[tokio::test]
async fn non_utf8_and_ten_mib_output_arrive_byte_for_byte() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let id = unique("bytes");
    // 256 distinct bytes, then 10 MiB of a pattern on stdout; raw invalid UTF-8 on stderr.
    let script = "#!/bin/bash\nset -e\nfor i in $(seq 0 255); do printf \"\\\\$(printf %o $i)\"; done\n\
                  head -c 10485760 /dev/zero | tr '\\0' 'x'\nprintf '\\xff\\xfe\\x00\\x80end' >&2\n";
    approved_task(s, &t, &id, script, json!({})).await;
    let no = start(s, &t, &id, &[&e.b.node_id], &[]).await;
    wait_end(s, &t, no, Duration::from_secs(60)).await;
    let n = node_detail(s, &t, no, &e.b.node_id, None).await;
    assert_eq!(n["status"], "END", "{}", n["encbase64err"]);
    let out = b64(&n["encbase64out"]);
    let mut expected: Vec<u8> = (0..=255u8).collect();
    expected.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    assert_eq!(out.len(), expected.len());
    assert!(out == expected, "stdout differs");
    assert_eq!(b64(&n["encbase64err"]), b"\xff\xfe\x00\x80end");
}

#[tokio::test]
async fn runs_as_the_task_os_user_or_fails_clearly() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let id = unique("osuser");
    approved_task(
        s,
        &t,
        &id,
        "id -un\necho \"$HOME|$USER|$LOGNAME\"",
        json!({ "osUser": "haechi-test" }),
    )
    .await;
    let no = start(s, &t, &id, &[&e.a.node_id], &[]).await;
    wait_end(s, &t, no, Duration::from_secs(30)).await;
    let n = node_detail(s, &t, no, &e.a.node_id, None).await;
    if running_as_root() {
        assert_eq!(
            n["resultCd"],
            "S",
            "{}",
            String::from_utf8_lossy(&b64(&n["encbase64err"]))
        );
        let out = String::from_utf8(b64(&n["encbase64out"])).unwrap();
        assert!(out.starts_with("haechi-test\n"), "{out}");
        assert!(out.contains("|haechi-test|haechi-test"), "{out}");
    } else {
        assert_eq!(n["resultCd"], "F");
        let err = String::from_utf8_lossy(&b64(&n["encbase64err"])).into_owned();
        assert!(err.contains("cannot run as os user 'haechi-test'"), "{err}");
        assert_eq!(
            b64(&n["encbase64out"]),
            b"",
            "it must not run as someone else"
        );
    }

    let id = unique("nouser");
    approved_task(s, &t, &id, "id -un", json!({ "osUser": "no-such-user-x" })).await;
    let no = start(s, &t, &id, &[&e.a.node_id], &[]).await;
    wait_end(s, &t, no, Duration::from_secs(30)).await;
    let n = node_detail(s, &t, no, &e.a.node_id, None).await;
    assert_eq!(
        (
            n["status"].as_str(),
            n["resultCd"].as_str(),
            n["exitCd"].as_i64()
        ),
        (Some("END"), Some("F"), Some(-1))
    );
    let err = String::from_utf8_lossy(&b64(&n["encbase64err"])).into_owned();
    assert!(
        err.contains("os user 'no-such-user-x' does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let id = unique("timeout");
    let marker = std::env::temp_dir().join(unique("orphan"));
    let script = format!(
        "#!/bin/sh\necho started\n(sleep 4; touch {}) &\nsleep 30\n",
        marker.display()
    );
    approved_task(s, &t, &id, &script, json!({ "timeoutSecs": 1 })).await;
    let no = start(s, &t, &id, &[&e.a.node_id], &[]).await;
    wait_end(s, &t, no, Duration::from_secs(20)).await;
    let n = node_detail(s, &t, no, &e.a.node_id, None).await;
    assert_eq!(n["status"], "TIMEOUT", "{n}");
    assert_eq!(n["resultCd"], "F");
    assert_eq!(b64(&n["encbase64out"]), b"started\n");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !marker.exists(),
        "a background child of the timed-out script survived"
    );
}

#[tokio::test]
async fn cancel_stops_a_running_execution() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let id = unique("cancel");
    approved_task(s, &t, &id, "echo running; sleep 60", json!({})).await;
    let no = start(s, &t, &id, &[&e.b.node_id], &[]).await;
    wait_status(s, &t, no, &e.b.node_id, "RUN", Duration::from_secs(20)).await;
    let (st, body) = call(
        client()
            .post(s.url(&format!("/api/v1/task-instances/{no}/cancel")))
            .bearer_auth(&t)
            .json(&json!({})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let started = std::time::Instant::now();
    wait_end(s, &t, no, Duration::from_secs(15)).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let n = node_detail(s, &t, no, &e.b.node_id, None).await;
    assert_eq!(n["status"], "CANCEL", "{n}");
    assert_eq!(n["resultCd"], "F");
}

#[tokio::test]
async fn rerun_makes_exec_no_2_and_keeps_1_readable() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let id = unique("rerun");
    // The flag lives in a directory of its own: the agents' data directories are under the
    // temporary directory, so their sandbox keeps scripts from creating files directly in it.
    let flag_dir = tempfile::tempdir().unwrap();
    let flag = flag_dir.path().join("flag");
    // Fails the first time, succeeds once the flag file exists.
    let script = format!(
        "#!/bin/sh\nif [ -e {f} ]; then echo second; exit 0; fi\ntouch {f}\necho first; exit 2\n",
        f = flag.display()
    );
    approved_task(s, &t, &id, &script, json!({})).await;
    let no = start(s, &t, &id, &[&e.a.node_id, &e.b.node_id], &[]).await;
    wait_end(s, &t, no, Duration::from_secs(30)).await;

    // Re-running a node that is not part of the instance, or an unknown instance: 404.
    let (st, body) = call(
        client()
            .put(s.url(&format!("/opmate/taskinstance/{no}/node/nope")))
            .query(&[("auth", &t)]),
    )
    .await;
    assert_eq!(st, 404, "{body}");
    assert_ne!(body["resultCode"], "0000");
    let (st, _) = call(
        client()
            .put(s.url(&format!("/opmate/taskinstance/999999/node/{}", e.a.node_id)))
            .query(&[("auth", &t)]),
    )
    .await;
    assert_eq!(st, 404);

    let other_first = node_detail(s, &t, no, &e.a.node_id, None).await;
    let rerun_node = if b64(&other_first["encbase64out"]) == b"first\n" {
        &e.a.node_id
    } else {
        &e.b.node_id
    };
    let (st, body) = call(
        client()
            .put(s.url(&format!("/opmate/taskinstance/{no}/node/{rerun_node}")))
            .query(&[("auth", &t)]),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["resultCode"], "0000");
    assert_eq!(body["execNo"], 2);
    wait_status(s, &t, no, rerun_node, "END", Duration::from_secs(30)).await;
    let latest = node_detail(s, &t, no, rerun_node, None).await;
    assert_eq!(latest["execNo"], 2);
    assert_eq!(b64(&latest["encbase64out"]), b"second\n");
    assert_eq!(latest["resultCd"], "S");
    let first = node_detail(s, &t, no, rerun_node, Some(1)).await;
    assert_eq!(first["execNo"], 1);
    assert_eq!(b64(&first["encbase64out"]), b"first\n");
    assert_eq!(first["exitCd"], 2);
    let (st, _) = call(
        client()
            .get(s.url(&format!("/opmate/taskinstance/{no}/node/{rerun_node}")))
            .query(&[("auth", t.as_str()), ("execNo", "3")]),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        client()
            .get(s.url(&format!("/opmate/taskinstance/{no}/node/{rerun_node}")))
            .query(&[("auth", t.as_str()), ("execNo", "zero")]),
    )
    .await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn follow_route_returns_output_from_an_offset_until_completed() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let id = unique("follow");
    approved_task(
        s,
        &t,
        &id,
        "for i in 1 2 3; do echo line$i; sleep 0.3; done; echo oops >&2",
        json!({}),
    )
    .await;
    let no = start(s, &t, &id, &[&e.a.node_id], &[]).await;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut oo, mut eo) = (0i64, 0i64);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (st, c) = call(
            client()
                .get(s.url(&format!(
                    "/api/v1/task-instances/{no}/nodes/{}/output",
                    e.a.node_id
                )))
                .bearer_auth(&t)
                .query(&[("outOffset", oo.to_string()), ("errOffset", eo.to_string())]),
        )
        .await;
        assert_eq!(st, 200, "{c}");
        out.extend(b64(&c["out"]));
        err.extend(b64(&c["err"]));
        oo = c["outOffset"].as_i64().unwrap();
        eo = c["errOffset"].as_i64().unwrap();
        if c["completed"] == true {
            assert_eq!(c["status"], "END");
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(out, b"line1\nline2\nline3\n");
    assert_eq!(err, b"oops\n");
    assert_eq!(oo, 18);
}

#[tokio::test]
async fn cli_task_run_follow_prints_output_and_exits_with_the_worst_code() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let id = unique("cli");
    let script = "#!/bin/sh\necho \"hello from $HAECHI_NODE_ID\"\n[ \"$HAECHI_NODE_ID\" = \"$1\" ] && exit 4\nexit 0\n";
    approved_task(s, &t, &id, script, json!({})).await;
    let tmp = tempfile::tempdir().unwrap();
    let session = tmp.path().join("session.json");
    let haechi = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(args)
            .env("HAECHI_SESSION", &session)
            .env_remove("HAECHI_CONFIG");
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().unwrap()
    };
    let fp = s.fingerprint.clone().unwrap();
    let login = haechi(
        &[
            "login",
            "--server",
            &s.base,
            "-u",
            "admin",
            "--password-stdin",
            "--fingerprint",
            &fp,
        ],
        Some(ADMIN_PASSWORD),
    );
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );

    let nodes = format!("{},{}", e.a.node_id, e.b.node_id);
    let run = haechi(
        &[
            "task",
            "run",
            &id,
            "--nodes",
            &nodes,
            "--arg",
            &e.b.node_id,
            "--follow",
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert_eq!(
        run.status.code(),
        Some(4),
        "{stdout} {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains(&format!("[{}] hello from {}", e.a.node_id, e.a.node_id)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("[{}] hello from {}", e.b.node_id, e.b.node_id)),
        "{stdout}"
    );

    let run = haechi(
        &[
            "task",
            "run",
            &id,
            "--nodes",
            &e.a.node_id,
            "--arg",
            "nobody",
            "--follow",
        ],
        None,
    );
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        format!("hello from {}\n", e.a.node_id)
    );
}

#[tokio::test]
async fn agent_reconnects_with_its_own_credential_and_a_token_is_single_use() {
    let s = Server::start_with(exec_opts());
    let t = admin_token(&s).await;
    let mut a = Agent::start(&s, &node_name("cred")).await;
    let cred = std::fs::read_to_string(a.dir.join("credential.json")).unwrap();
    assert!(cred.contains("hca_"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(a.dir.join("credential.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // The server keeps only a hash of the secret.
    let secret: serde_json::Value = serde_json::from_str(&cred).unwrap();
    let stored = s.sql(&format!(
        "SELECT secret_hash FROM nodes WHERE id = '{}'",
        a.node_id
    ));
    assert!(!stored.is_empty() && !stored.contains(secret["secret"].as_str().unwrap()));

    a.restart(&s);
    a.wait_connected(&s).await;

    // A one-use token enrols one agent only.
    let (_, body) = call(
        client()
            .post(s.url("/api/v1/agents/enrollment-tokens"))
            .bearer_auth(&t)
            .json(&json!({"uses": 1})),
    )
    .await;
    let token = body["token"].as_str().unwrap();
    let enroll = |node: String| {
        client()
            .post(s.url("/api/v1/agents/enroll"))
            .json(&json!({ "token": token, "nodeId": node, "hostname": "h" }))
    };
    let (st, body) = call(enroll(node_name("one"))).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(enroll(node_name("two"))).await;
    assert_eq!(st, 401, "{body}");
    // An expired token, and nonsense, are refused too.
    let (st, _) = call(
        client()
            .post(s.url("/api/v1/agents/enroll"))
            .json(&json!({ "token": "hce_nope", "nodeId": "x" })),
    )
    .await;
    assert_eq!(st, 401);
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/agents/enrollment-tokens"))
            .bearer_auth(&t)
            .json(&json!({"ttl_secs": 0})),
    )
    .await;
    assert_eq!(st, 400, "{body}");

    // Revoking the credential drops the connection and the agent cannot come back.
    let (st, body) = call(
        client()
            .post(s.url(&format!("/api/v1/nodes/{}/revoke", a.node_id)))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["revoked"], true);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = a.try_exit() {
            assert!(!status.success());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a revoked agent kept running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_agent_killed_mid_run_ends_its_executions_lost() {
    let s = Server::start_with(exec_opts());
    let t = admin_token(&s).await;
    let mut a = Agent::start(&s, &node_name("doomed")).await;
    let id = unique("lost");
    approved_task(&s, &t, &id, "echo before; sleep 60", json!({})).await;
    let no = start(&s, &t, &id, &[&a.node_id], &[]).await;
    wait_status(&s, &t, no, &a.node_id, "RUN", Duration::from_secs(20)).await;
    a.kill9();
    // Heartbeat 1 s, missing after 2 missed, LOST after a further 2 s.
    let n = wait_status(&s, &t, no, &a.node_id, "LOST", Duration::from_secs(20)).await;
    assert_eq!(n["resultCd"], "F");
    wait_end(&s, &t, no, Duration::from_secs(5)).await;
    let admin = admin_token(&s).await;
    let (_, node) = call(
        client()
            .get(s.url(&format!("/api/v1/nodes/{}", a.node_id)))
            .bearer_auth(&admin),
    )
    .await;
    assert!(!node["missingSince"].is_null(), "{node}");
}

#[tokio::test]
async fn a_server_killed_mid_run_reconciles_with_its_agents() {
    let mut s = Server::start_with(exec_opts().env("HAECHI_AGENTS__LOST_GRACE_SECS", "60"));
    let t = admin_token(&s).await;
    let relay = Relay::start(&s).await;
    let a = Agent::start_at(&s, &node_name("patient"), &relay.url).await;
    let id = unique("keep");
    approved_task(
        &s,
        &t,
        &id,
        "echo one; sleep 4; echo two; exit 5",
        json!({}),
    )
    .await;
    let no = start(&s, &t, &id, &[&a.node_id], &[]).await;
    wait_status(&s, &t, no, &a.node_id, "RUN", Duration::from_secs(20)).await;
    s.kill9();
    // The agent keeps its child while the server is gone, reconnects to the restarted server
    // (same state) by itself, and reports the run with all its output.
    let mut opts = exec_opts().env("HAECHI_AGENTS__LOST_GRACE_SECS", "60");
    opts.reuse = s.same_state().reuse;
    let s2 = Server::start_with(opts);
    relay.point_at(&s2);
    let t2 = admin_token(&s2).await;
    wait_end(&s2, &t2, no, Duration::from_secs(60)).await;
    let n = node_detail(&s2, &t2, no, &a.node_id, None).await;
    assert_eq!(n["status"], "END", "{n}");
    assert_eq!(n["exitCd"], 5);
    assert_eq!(b64(&n["encbase64out"]), b"one\ntwo\n");
}

#[tokio::test]
async fn server_and_agent_both_restarted_mid_run_end_lost_never_run_forever() {
    let mut s = Server::start_with(exec_opts().env("HAECHI_AGENTS__LOST_GRACE_SECS", "60"));
    let t = admin_token(&s).await;
    let mut a = Agent::start(&s, &node_name("phoenix")).await;
    let id = unique("reborn");
    approved_task(&s, &t, &id, "echo one; sleep 30", json!({})).await;
    let no = start(&s, &t, &id, &[&a.node_id], &[]).await;
    wait_status(&s, &t, no, &a.node_id, "RUN", Duration::from_secs(20)).await;
    s.kill9();
    a.kill9();
    let mut opts = exec_opts().env("HAECHI_AGENTS__LOST_GRACE_SECS", "60");
    opts.reuse = s.same_state().reuse;
    let s2 = Server::start_with(opts);
    // The agent starts again from its journal (no token needed) against the new server.
    a.restart(&s2);
    let t2 = admin_token(&s2).await;
    wait_end(&s2, &t2, no, Duration::from_secs(30)).await;
    let n = node_detail(&s2, &t2, no, &a.node_id, None).await;
    assert_eq!(n["status"], "LOST", "{n}");
    assert_eq!(
        b64(&n["encbase64out"]),
        b"one\n",
        "output sent before the crash is kept"
    );
}

#[tokio::test]
async fn output_over_the_cap_is_truncated_with_a_marker() {
    let s = Server::start_with(exec_opts().env("HAECHI_AGENTS__OUTPUT_CAP_BYTES", "4096"));
    let t = admin_token(&s).await;
    let a = Agent::start(&s, &node_name("capped")).await;
    let id = unique("cap");
    approved_task(
        &s,
        &t,
        &id,
        "head -c 100000 /dev/zero | tr '\\0' 'y'; echo tail >&2",
        json!({}),
    )
    .await;
    let no = start(&s, &t, &id, &[&a.node_id], &[]).await;
    wait_end(&s, &t, no, Duration::from_secs(30)).await;
    let n = node_detail(&s, &t, no, &a.node_id, None).await;
    let out = b64(&n["encbase64out"]);
    assert!(out.starts_with(&[b'y'; 4096]));
    let text = String::from_utf8_lossy(&out[4096..]).into_owned();
    assert!(text.contains("output truncated"), "{text}");
    let (_, d) = call(
        client()
            .get(s.url(&format!("/api/v1/task-instances/{no}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(d["nodes"][0]["truncated"], true);
}

/// The script of the sandbox tests: tries to read each argument, directly and through its
/// parent's (the agent's) `/proc/<pid>/root`, and says what happened.
const TRY_READ: &str = "#!/bin/sh\nfor a in \"$@\"; do for f in \"$a\" \"/proc/$PPID/root$a\"; do\n  if err=$(cat \"$f\" 2>&1 >/dev/null); then echo \"READ $f\"; else echo \"DENIED $f: $err\"; fi\ndone; done\n";

fn assert_all_denied(n: &serde_json::Value, paths: &[&std::path::Path]) {
    let out = n["outText"].as_str().unwrap();
    assert!(
        !out.contains("READ "),
        "a script read a protected file:\n{out}\n{}",
        n["errText"]
    );
    for p in paths {
        let line = format!("DENIED {}: ", p.display());
        assert!(
            out.contains(&line),
            "no denial for {}:\n{out}\n{}",
            p.display(),
            n["errText"]
        );
        let via_proc = format!("/root{}: ", p.display());
        assert!(
            out.lines()
                .any(|l| l.starts_with("DENIED /proc/") && l.contains(&via_proc)),
            "no denial through /proc for {}:\n{out}",
            p.display()
        );
    }
    assert!(out.contains("Permission denied"), "{out}");
}

#[tokio::test]
async fn scripts_cannot_read_the_server_keys_the_store_or_an_agent_credential() {
    assert!(
        running_as_root(),
        "these tests run as root (the agents switch users)"
    );
    // A local agent allowed to run as root: only the sandbox stands between a script and the
    // server's data directory.
    let node = unique("local");
    let s = Server::start_with(
        local_agent_opts(&node).env("HAECHI_AGENTS__LOCAL_ALLOW_PRIVILEGED_OS_USERS", "true"),
    );
    wait_node_connected(&s, &node, Duration::from_secs(30)).await;
    let key = s.data_dir.join("vault.key");
    let cred = s.data_dir.join("agent/credential.json");
    assert!(
        key.is_file() && cred.is_file(),
        "the files the test needs exist"
    );
    let mut targets = vec![key.clone(), cred.clone()];
    if let Db::Sqlite(store) = &s.db {
        targets.push(store.clone());
    }
    let mut args: Vec<String> = targets.iter().map(|p| p.display().to_string()).collect();
    args.push("/etc/hostname".into()); // a control: everything else stays readable
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let n = run_once(&s, &node, "root", TRY_READ, &argv).await;
    let out = n["outText"].as_str().unwrap();
    assert!(
        out.contains("READ /etc/hostname\n"),
        "{out}\n{}",
        n["errText"]
    );
    let out_without_control = serde_json::json!({
        "outText": out.lines().filter(|l| !l.ends_with("/etc/hostname")).collect::<Vec<_>>().join("\n"),
        "errText": n["errText"].clone(),
    });
    let paths: Vec<&std::path::Path> = targets.iter().map(|p| p.as_path()).collect();
    assert_all_denied(&out_without_control, &paths);

    s.finish().await;

    // A separate agent's script cannot read that agent's credential or journal.
    let e = env();
    let cred = e.a.dir.join("credential.json");
    let jobs = e.a.dir.join("jobs");
    let n = run_once(
        &e.server,
        &e.a.node_id,
        &current_user(),
        TRY_READ,
        &[&cred.display().to_string(), &jobs.display().to_string()],
    )
    .await;
    assert_all_denied(&n, &[cred.as_path()]);
}

#[tokio::test]
async fn the_local_agent_refuses_root_and_the_server_user_unless_configured() {
    let node = unique("local");
    let key = "k8Jz0m1yXh3jVw2bq9Yc6pQfT4rLs7uN5eAiGoDvWbM=";
    let s = Server::start_with(local_agent_opts(&node).env("HAECHI_VAULT_MASTER_KEY", key));
    wait_node_connected(&s, &node, Duration::from_secs(30)).await;
    let n = run_once(&s, &node, &current_user(), "echo ran", &[]).await;
    assert_eq!(n["resultCd"], "F", "{n}");
    assert_eq!(n["outText"], "", "it must not have run");
    let err = n["errText"].as_str().unwrap();
    assert!(
        err.contains("refusing to run as os user")
            && err.contains("local_allow_privileged_os_users"),
        "{err}"
    );
    let n = run_once(&s, &node, "root", "echo ran", &[]).await;
    assert_eq!(
        (n["resultCd"].as_str(), n["outText"].as_str()),
        (Some("F"), Some("")),
        "{n}"
    );

    // An unprivileged user runs, and finds neither the master key nor the server's environment.
    let script = "#!/bin/sh\nid -un\nenv | grep -c HAECHI_VAULT || true\ncat /proc/$PPID/environ >/dev/null 2>&1 && echo ENVIRON-READ; true\n";
    let n = run_once(&s, &node, "haechi-test", script, &[]).await;
    assert_eq!(n["resultCd"], "S", "{n}");
    assert_eq!(n["outText"], "haechi-test\n0\n", "{n}");
    assert!(!s.logs().contains(key));
    s.finish().await;
}

/// Whether process `pid` still runs (a zombie waiting for its reaper does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn background_children_end_with_the_script_which_runs_with_limits_and_umask() {
    let e = env();
    let script = "#!/bin/sh\nsleep 300 &\necho \"bg=$!\"\necho \"umask=$(umask)\"\necho \"nofile=$(ulimit -n)\"\necho \"core=$(ulimit -c)\"\nexit 0\n";
    let n = run_once(&e.server, &e.a.node_id, &current_user(), script, &[]).await;
    assert_eq!(n["resultCd"], "S", "{n}");
    let out = n["outText"].as_str().unwrap();
    assert!(out.contains("umask=0077\n"), "{out}");
    assert!(out.contains("nofile=8192\n"), "{out}");
    assert!(out.contains("core=0\n"), "{out}");
    let pid: i32 = out
        .lines()
        .find_map(|l| l.strip_prefix("bg="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // The result is reported once the group is gone: the background sleep is not left behind.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the background child {pid} outlived its script"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_agent_removes_the_run_files_of_runs_killed_with_it_at_its_next_start() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let mut a = Agent::start(s, &node_name("leftover")).await;
    let id = unique("leftover");
    approved_task(
        s,
        &t,
        &id,
        "#!/bin/sh\necho \"$0\"\necho \"$$\"\nexec sleep 120\n",
        json!({}),
    )
    .await;
    let no = start(s, &t, &id, &[&a.node_id], &[]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (script, pid) = loop {
        let n = node_detail(s, &t, no, &a.node_id, None).await;
        let out = String::from_utf8(b64(&n["encbase64out"])).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        if lines.len() >= 2 {
            break (
                std::path::PathBuf::from(lines[0]),
                lines[1].parse::<i32>().unwrap(),
            );
        }
        assert!(std::time::Instant::now() < deadline, "no output: {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let run_dir = script.parent().unwrap().to_path_buf();
    assert!(script.is_file(), "{}", script.display());
    a.kill9();
    // The script outlives the killed agent (its own process group); its files stay behind.
    assert!(run_dir.is_dir());
    a.restart(s);
    a.wait_connected(s).await;
    assert!(
        !run_dir.exists(),
        "{} was left behind after the agent started again",
        run_dir.display()
    );
    let n = wait_status(s, &t, no, &a.node_id, "LOST", Duration::from_secs(30)).await;
    assert_eq!(n["resultCd"], "F");
    // The orphaned script (now `sleep`, by `exec`) is ended by its own pid, once checked.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if pid > 1 && cmdline.starts_with(b"sleep\x00120") {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
}

#[tokio::test]
async fn a_single_use_token_enrols_exactly_one_of_many_parallel_agents() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    for round in 0..3 {
        let token = enrollment_token(s, &t, json!({ "uses": 1 })).await;
        let attempts = (0..12).map(|i| {
            let token = token.clone();
            let node = node_name(&format!("race{round}x{i}"));
            async move { enroll_as(s, &token, &node).await }
        });
        let results = futures::future::join_all(attempts).await;
        let ok = results.iter().filter(|(st, _)| *st == 201).count();
        assert_eq!(ok, 1, "round {round}: {results:?}");
        assert!(
            results.iter().all(|(st, _)| *st == 201 || *st == 401),
            "{results:?}"
        );
    }
    // A three-use token: exactly three.
    let token = enrollment_token(s, &t, json!({ "uses": 3 })).await;
    let attempts = (0..10).map(|i| {
        let token = token.clone();
        let node = node_name(&format!("race3x{i}"));
        async move { enroll_as(s, &token, &node).await }
    });
    let results = futures::future::join_all(attempts).await;
    assert_eq!(
        results.iter().filter(|(st, _)| *st == 201).count(),
        3,
        "{results:?}"
    );
}

#[tokio::test]
async fn a_revoked_node_is_enrolled_again_only_with_a_token_made_for_it() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let node = node_name("reenrol");
    let token = enrollment_token(s, &t, json!({})).await;
    let (st, body) = enroll_as(s, &token, &node).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(
        client()
            .post(s.url(&format!("/api/v1/nodes/{node}/revoke")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(st, 200, "{body}");

    // Any token: refused, and the refusal does not use it up.
    let any = enrollment_token(s, &t, json!({ "uses": 1 })).await;
    let (st, body) = enroll_as(s, &any, &node).await;
    assert_eq!(st, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("node_id"),
        "{body}"
    );
    let (st, body) = enroll_as(s, &any, &node_name("fresh")).await;
    assert_eq!(st, 201, "the refused attempt took the token's use: {body}");

    // A token made for another node: refused for this one.
    let other = enrollment_token(s, &t, json!({ "node_id": node_name("other") })).await;
    let (st, body) = enroll_as(s, &other, &node).await;
    assert_eq!(st, 403, "{body}");

    // A token made for it: enrolled again.
    let bound = enrollment_token(s, &t, json!({ "node_id": node })).await;
    let (st, body) = enroll_as(s, &bound, &node).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/agents/enrollment-tokens"))
            .bearer_auth(&t)
            .json(&json!({ "node_id": "bad id" })),
    )
    .await;
    assert_eq!(st, 400, "{body}");
}

#[tokio::test]
async fn new_nodes_can_be_made_to_start_disabled() {
    let s = Server::start_with(exec_opts().env("HAECHI_AGENTS__NEW_NODES_DISABLED", "true"));
    let t = admin_token(&s).await;
    let token = enrollment_token(&s, &t, json!({})).await;
    let node = node_name("vetted");
    let (st, body) = enroll_as(&s, &token, &node).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/nodes/{node}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!((st, body["status"].as_str()), (200, Some("D")), "{body}");
    s.finish().await;
}

/// After a server restart the agent is back within about a second of the server answering
/// again, however often it restarts: the backoff starts over after a welcomed connection and
/// stays near one second while the server is most likely restarting (issue: the gap used to
/// grow with each outage to tens of seconds).
#[tokio::test]
async fn an_agent_is_back_within_two_seconds_after_the_fifth_server_restart() {
    let mut s = Server::start_with(exec_opts());
    let relay = Relay::start(&s).await;
    let a = Agent::start_at(&s, &node_name("bouncy"), &relay.url).await;
    let mut old = Vec::new();
    for round in 1..=5 {
        s.kill9();
        // Down long enough that an exponential backoff would be at 4 s and more.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let mut opts = exec_opts();
        opts.reuse = s.same_state().reuse;
        let next = Server::start_with(opts);
        relay.point_at(&next);
        let up = Instant::now();
        wait_node_connected(&next, &a.node_id, Duration::from_secs(30)).await;
        let back = up.elapsed();
        if round == 5 {
            assert!(
                back < Duration::from_secs(2),
                "round {round}: the agent came back {back:?} after the server answered"
            );
        }
        old.push(std::mem::replace(&mut s, next));
    }
    drop(old);
}
