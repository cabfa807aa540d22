//! `env_from_vault` on task steps, with a real server and a real `haechi agent`: the task gets
//! the credential's value in its environment, the value is masked in its output (also when
//! written in pieces), it is found nowhere in the store, the server's log, the audit or the
//! agent's journal, each use is audited, a starter who may not use the credential is refused
//! (up front, and when the right is lost before the step starts), and bad definitions are 400s.

mod common;
mod exec_support;
mod workflow_support;

use std::time::Duration;

use common::*;
use exec_support::*;
use serde_json::{json, Value};
use workflow_support::*;

const T: Duration = Duration::from_secs(60);
const VAULT: &str = "/v2/credentialvault";

/// A user who may define and run workflows and use the vault.
async fn starter(s: &Server) -> (String, String, i64) {
    let manage = role_with(s, &admin_token(s).await, &["workflow.manage"]).await;
    let (user_id, _, token) =
        user_with_roles(s, &["Workflow Operator", "Vault User", &manage]).await;
    let (st, me) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
    assert_eq!(st, 200, "{me}");
    let id = me["id"].as_i64().unwrap();
    (user_id, token, id)
}

/// A credential owned by the token's user, with a standard `password` attribute set to
/// `secret`; returns its id.
async fn credential(s: &Server, token: &str, secret: &str) -> i64 {
    let (st, c) = call(
        client()
            .post(s.url(&format!("{VAULT}/credentials")))
            .bearer_auth(token)
            .json(&json!({ "name": unique("cred"), "description": "db",
                "attributes": [{ "name": "password", "userProvided": false, "masked": true }] })),
    )
    .await;
    assert_eq!(st, 201, "{c}");
    let cid = c["id"].as_i64().unwrap();
    let attr = c["attributes"][0]["id"].as_i64().unwrap();
    let (st, v) = call(
        client()
            .post(s.url(&format!("{VAULT}/credentials/{cid}/attributevalues")))
            .bearer_auth(token)
            .json(&json!([{ "credentialAttributeId": attr, "value": secret }])),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    cid
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

fn assert_nowhere(s: &Server, agent: &Agent, secret: &str) {
    assert!(
        !bytes_contain(&s.store_bytes(), secret),
        "the value is in the store"
    );
    assert!(
        !s.logs().contains(secret),
        "the value is in the server's log"
    );
    assert!(
        !bytes_contain(&dir_bytes(&agent.dir), secret),
        "the value is in the agent's data directory"
    );
}

#[tokio::test]
async fn the_task_gets_the_value_masked_in_its_output_and_stored_nowhere() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let node = node_name("wfv");
    let agent = Agent::start(&s, &node).await;
    let (user_id, token, _) = starter(&s).await;
    let secret = format!("Quokka-{}-pw", unique(""));
    let cid = credential(&s, &token, &secret).await;

    // The script proves it got the value (written outside the store), prints it whole on
    // stdout and stderr, and in two pieces written apart (two chunks for the agent).
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("got.txt");
    let task = unique("wf-env");
    let script = format!(
        "#!/bin/sh\nprintf '%s' \"$DB_PASSWORD\" > {got}\necho \"pw=$DB_PASSWORD.\"\necho \"err:$DB_PASSWORD\" >&2\n\
         printf '%s' \"$DB_PASSWORD\" | head -c 5\nsleep 0.3\nprintf '%s\\n' \"$DB_PASSWORD\" | tail -c +6\n\
         echo \"other=$OTHER_ENV\"\n",
        got = got.display()
    );
    approved_task(&s, &admin, &task, &script, json!({})).await;
    let id = create_wf(
        &s,
        &token,
        def(
            "vault",
            json!([{ "name": "use", "type": "task", "task": task, "nodes": [node],
                     "env_from_vault": { "DB_PASSWORD": { "credentialId": cid, "attribute": "password" } } }]),
        ),
    )
    .await;
    let exec_id = execute(&s, &token, &id).await;
    let e = wait_for(&s, &token, &exec_id, "COMPLETED", T).await;
    let no = step(&e, "use")["taskInstanceNo"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        secret,
        "the task got the value"
    );

    let n = node_detail(&s, &admin, no, &node, None).await;
    let out = String::from_utf8(b64(&n["encbase64out"])).unwrap();
    let err = String::from_utf8(b64(&n["encbase64err"])).unwrap();
    assert_eq!(out, "pw=****.\n****\nother=\n", "stdout: {out:?}");
    assert_eq!(err, "err:****\n", "stderr: {err:?}");

    // Each use is audited, with the variable and the credential, never the value.
    let uses = audit(&s, "action=workflow.vault.use").await;
    let mine: Vec<&Value> = uses
        .iter()
        .filter(|ev| ev["detail"]["execution_id"] == exec_id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{uses:?}");
    let d = &mine[0]["detail"];
    assert_eq!(mine[0]["user"], user_id.as_str());
    assert_eq!(mine[0]["outcome"], "success", "{d}");
    assert_eq!(d["env"], "DB_PASSWORD");
    assert_eq!(d["credentialId"], cid);
    assert_eq!(d["attribute"], "password");
    assert_eq!(d["step"], "use");
    assert_eq!(d["taskInstanceNo"], no);
    // The vault audits its own read as well (the execute-time check and the step's read).
    let reads = audit(&s, &format!("action=credential.value.read&user={user_id}")).await;
    assert!(reads.len() >= 2, "{reads:?}");
    let all = audit(&s, "").await;
    assert!(!Value::Array(all).to_string().contains(&secret));

    assert_nowhere(&s, &agent, &secret);
    let (code, text) = s.audit_verify();
    assert_eq!(code, 0, "{text}");
}

#[tokio::test]
async fn a_starter_who_may_not_use_the_credential_is_refused() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let node = node_name("wfv");
    let agent = Agent::start(&s, &node).await;
    let (_, owner_token, _) = starter(&s).await;
    let (other_id, other_token, other_pk) = starter(&s).await;
    let secret = format!("Marmot-{}-pw", unique(""));
    let cid = credential(&s, &owner_token, &secret).await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran.txt");
    let task = unique("wf-env");
    approved_task(
        &s,
        &admin,
        &task,
        &format!("#!/bin/sh\necho \"$DB_PASSWORD\" > {}\n", ran.display()),
        json!({}),
    )
    .await;
    let steps = json!([
        { "name": "wait", "type": "sleep", "seconds": 1.5 },
        { "name": "use", "type": "task", "task": task, "nodes": [node],
          "env_from_vault": { "DB_PASSWORD": { "credentialId": cid, "attribute": "password" } } },
    ]);
    let id = create_wf(&s, &owner_token, def("vault", steps)).await;

    // Up front: someone who may not use it cannot even start the run.
    let (st, body) = call(
        client()
            .post(s.url("/services/workflow/execute"))
            .bearer_auth(&other_token)
            .form(&[("wf_id", id.as_str())]),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["result"], "fail");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains(&other_id) && msg.contains("DB_PASSWORD") && msg.contains(&cid.to_string()),
        "{msg}"
    );
    // A credential that does not exist cannot even be wired into a definition.
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/workflows"))
            .bearer_auth(&owner_token)
            .json(&def(
                "vault",
                json!([{ "name": "use", "type": "task", "task": task, "nodes": [node],
                         "env_from_vault": { "PW": { "credentialId": 987654321, "attribute": "password" } } }]),
            )),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("987654321"),
        "{body}"
    );

    // The owner starts it, then gives the credential away before the task step starts:
    // the step reads the value as the starter at that moment, is refused, and fails.
    let exec_id = execute(&s, &owner_token, &id).await;
    let (st, body) = call(
        client()
            .put(s.url(&format!("{VAULT}/credentials/{cid}/owner/{other_pk}")))
            .bearer_auth(&owner_token),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let e = wait_for(&s, &owner_token, &exec_id, "FAILED", T).await;
    let u = step(&e, "use");
    assert_eq!(u["status"], "FAILED", "{e}");
    let err = u["error"].as_str().unwrap();
    assert!(
        err.contains("env_from_vault.DB_PASSWORD") && err.contains("not started"),
        "{err}"
    );
    assert!(u["taskInstanceNo"].is_null(), "no task started: {u}");
    assert!(!ran.exists(), "the script never ran");
    let uses = audit(&s, "action=workflow.vault.use").await;
    let refused: Vec<&Value> = uses
        .iter()
        .filter(|ev| ev["detail"]["execution_id"] == exec_id.as_str())
        .collect();
    assert_eq!(refused.len(), 1, "{uses:?}");
    assert_eq!(refused[0]["outcome"], "failure");
    assert_nowhere(&s, &agent, &secret);
}

#[tokio::test]
async fn bad_env_from_vault_definitions_are_400_naming_the_problem() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let task = unique("wf-env");
    approved_task(&s, &admin, &task, "#!/bin/sh\ntrue\n", json!({})).await;
    let ok_ref = json!({ "credentialId": 1, "attribute": "password" });
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({ "1X": ok_ref }),
            "env_from_vault.1X",
            "not a valid environment variable name",
        ),
        (
            json!({ "A-B": ok_ref }),
            "env_from_vault.A-B",
            "not a valid environment variable name",
        ),
        (
            json!({ "LD_PRELOAD": ok_ref }),
            "env_from_vault.LD_PRELOAD",
            "choose another name",
        ),
        (
            json!({ "PATH": ok_ref }),
            "env_from_vault.PATH",
            "choose another name",
        ),
        (
            json!({ "BASH_ENV": ok_ref }),
            "env_from_vault.BASH_ENV",
            "choose another name",
        ),
        (
            json!({ "HAECHI_X": ok_ref }),
            "env_from_vault.HAECHI_X",
            "choose another name",
        ),
        (
            json!({ "PW": { "attribute": "password" } }),
            "credentialId",
            "is required",
        ),
        (
            json!({ "PW": { "credentialId": "abc", "attribute": "password" } }),
            "credentialId",
            "numeric id",
        ),
        (
            json!({ "PW": { "credentialId": 0, "attribute": "password" } }),
            "credentialId",
            "numeric id",
        ),
        (
            json!({ "PW": { "credentialId": 1 } }),
            "attribute",
            "is required",
        ),
        (
            json!({ "PW": { "credentialId": 1, "attribute": 5 } }),
            "attribute",
            "",
        ),
        (
            json!({ "PW": { "credentialId": 1, "attribute": "p", "value": "x" } }),
            "value",
            "",
        ),
        (json!({ "PW": "password" }), "env_from_vault.PW", ""),
        (json!(["PW"]), "env_from_vault", "must be an object"),
    ];
    for (env, field, mentions) in cases {
        let d = def(
            "vault",
            json!([{ "name": "use", "type": "task", "task": task, "nodes": ["n1"], "env_from_vault": env }]),
        );
        let (st, body) = call(
            client()
                .post(s.url("/api/v1/workflows"))
                .bearer_auth(&admin)
                .json(&d),
        )
        .await;
        assert_eq!(st, 400, "{env}: {body}");
        let f = body["field"].as_str().unwrap_or_default();
        let m = body["message"].as_str().unwrap_or_default();
        assert!(
            f.contains(field),
            "{env}: field {f:?} should name {field}: {body}"
        );
        assert!(m.contains(mentions), "{env}: {body}");
        assert!(m.contains("step 'use'"), "{env}: {body}");
    }
}

/// Waits until step `name` of the execution has started a task instance; returns it.
async fn instance_started(s: &Server, token: &str, exec_id: &str, name: &str) -> i64 {
    let deadline = std::time::Instant::now() + T;
    loop {
        let e = execution(s, token, exec_id).await;
        if let Some(no) = step(&e, name)["taskInstanceNo"].as_i64() {
            return no;
        }
        assert!(std::time::Instant::now() < deadline, "no instance: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A workflow (saved by `token`) whose one task step `use` on `node` appends its
/// `DB_PASSWORD`, the `password` of credential `cid`, to `got`; `extra` adds step fields.
async fn appending_workflow(
    s: &Server,
    admin: &str,
    token: &str,
    cid: i64,
    node: &str,
    got: &std::path::Path,
    extra: Value,
) -> String {
    let task = unique("wf-env");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$DB_PASSWORD\" >> {}\n",
        got.display()
    );
    approved_task(s, admin, &task, &script, json!({})).await;
    let mut step = json!({ "name": "use", "type": "task", "task": task, "nodes": [node],
        "env_from_vault": { "DB_PASSWORD": { "credentialId": cid, "attribute": "password" } } });
    step.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    create_wf(s, token, def("vault", json!([step]))).await
}

#[tokio::test]
async fn the_value_goes_with_a_run_sent_later_and_is_read_again_after_a_restart() {
    let mut s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let node = node_name("wfv");
    let mut agent = Agent::start(&s, &node).await;
    let (_, token, _) = starter(&s).await;
    let secret = format!("Wombat-{}-pw", unique(""));
    let cid = credential(&s, &token, &secret).await;
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("got.txt");
    let extra = json!({ "retries": 1, "retry_delay_secs": 0.1 });
    let id = appending_workflow(&s, &admin, &token, cid, &node, &got, extra).await;

    // The agent is away when the step starts: the run is sent when it connects, with the
    // value (held in the server's memory).
    agent.kill9();
    let exec_id = execute(&s, &token, &id).await;
    instance_started(&s, &token, &exec_id, "use").await;
    agent.restart(&s);
    let e = wait_for(&s, &token, &exec_id, "COMPLETED", T).await;
    assert_eq!(step(&e, "use")["attempts"], 1, "{e}");
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        format!("{secret}\n")
    );

    // The server restarts while the run waits for the agent: the value went with the
    // server's memory, so the restarted server reads it again as the execution's starter
    // (checked and audited by the vault) and the same attempt runs (issue 25 item 4).
    agent.kill9();
    let exec_id = execute(&s, &token, &id).await;
    let first = instance_started(&s, &token, &exec_id, "use").await;
    s.kill9();
    let mut opts = exec_opts();
    opts.reuse = s.same_state().reuse;
    let s2 = Server::start_with(opts);
    agent.restart(&s2);
    let admin = admin_token(&s2).await;
    let e = wait_for(&s2, &admin, &exec_id, "COMPLETED", T).await;
    let u = step(&e, "use");
    assert_eq!(u["attempts"], 1, "{e}");
    assert_eq!(u["taskInstanceNo"].as_i64(), Some(first), "{e}");
    let n = node_detail(&s2, &admin, first, &node, None).await;
    assert_eq!(n["resultCd"], "S", "{n}");
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        format!("{secret}\n{secret}\n"),
        "the attempt sent after the restart ran the script with the value read again"
    );
    assert!(
        s2.logs().contains("read a run's vault environment again"),
        "the restarted server read the values again"
    );
    assert_nowhere(&s2, &agent, &secret);
    s2.finish().await;
    drop(s);
}

/// `PUT /opmate/taskinstance/{no}/node/{node}` as `token`.
async fn rerun(s: &Server, token: &str, no: i64, node: &str) -> (u16, Value) {
    call(
        client()
            .put(s.url(&format!("/opmate/taskinstance/{no}/node/{node}")))
            .bearer_auth(token),
    )
    .await
}

#[tokio::test]
async fn a_rerun_reads_the_values_again_as_the_person_asking() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let node = node_name("wfv");
    let agent = Agent::start(&s, &node).await;
    let (owner_id, owner_token, _) = starter(&s).await;
    let (other_id, other_token, other_pk) = starter(&s).await;
    let secret = format!("Numbat-{}-pw", unique(""));
    let cid = credential(&s, &owner_token, &secret).await;
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("got.txt");
    let id = appending_workflow(&s, &admin, &owner_token, cid, &node, &got, json!({})).await;
    let exec_id = execute(&s, &owner_token, &id).await;
    let e = wait_for(&s, &owner_token, &exec_id, "COMPLETED", T).await;
    let no = step(&e, "use")["taskInstanceNo"].as_i64().unwrap();
    let reads = |user: String| {
        let s = &s;
        async move {
            audit(s, &format!("action=credential.value.read&user={user}"))
                .await
                .iter()
                .filter(|ev| ev["outcome"] == "success")
                .count()
        }
    };

    // Someone who may not use the credential (a Workflow Operator, who may re-run tasks) is
    // refused; nothing runs.
    let (st, body) = rerun(&s, &other_token, no, &node).await;
    assert_eq!(st, 403, "{body}");
    let msg = body["resultMsg"].as_str().unwrap();
    assert!(
        msg.contains("DB_PASSWORD") && msg.contains(&cid.to_string()) && msg.contains(&other_id),
        "{msg}"
    );
    assert_eq!(node_detail(&s, &admin, no, &node, None).await["execNo"], 1);

    // The owner's re-run reads the value again as the owner (an audited vault read).
    let before = reads(owner_id.clone()).await;
    let (st, body) = rerun(&s, &owner_token, no, &node).await;
    assert_eq!(st, 200, "{body}");
    wait_status(&s, &admin, no, &node, "END", T).await;
    assert_eq!(reads(owner_id.clone()).await, before + 1);

    // The credential changes hands: now the other user's re-run gets it, read as them, and
    // the former owner's is refused.
    let (st, body) = call(
        client()
            .put(s.url(&format!("{VAULT}/credentials/{cid}/owner/{other_pk}")))
            .bearer_auth(&owner_token),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = rerun(&s, &owner_token, no, &node).await;
    assert_eq!(st, 403, "{body}");
    let before = reads(other_id.clone()).await;
    let (st, body) = rerun(&s, &other_token, no, &node).await;
    assert_eq!(st, 200, "{body}");
    let n = wait_status(&s, &admin, no, &node, "END", T).await;
    assert_eq!(n["execNo"], 3, "{n}");
    assert_eq!(reads(other_id.clone()).await, before + 1);
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        format!("{secret}\n{secret}\n{secret}\n"),
        "the step's run and the two allowed re-runs got the value; the refused ones ran nothing"
    );
    assert_nowhere(&s, &agent, &secret);
}

#[tokio::test]
async fn an_author_wires_in_only_credentials_they_may_use() {
    let s = Server::start_with(exec_opts());
    let admin = admin_token(&s).await;
    let (_, owner_token, _) = starter(&s).await;
    let (author_id, author_token, _) = starter(&s).await;
    let cid = credential(&s, &owner_token, &format!("Dingo-{}-pw", unique(""))).await;
    let task = unique("wf-env");
    approved_task(&s, &admin, &task, "#!/bin/sh\ntrue\n", json!({})).await;
    let d = def(
        "vault",
        json!([{ "name": "use", "type": "task", "task": task, "nodes": ["n1"],
                 "env_from_vault": { "DB_PASSWORD": { "credentialId": cid, "attribute": "password" } } }]),
    );
    let refused = |body: &Value, user: &str| {
        let m = body["message"].as_str().unwrap_or_default();
        assert!(
            m.contains("step 'use'")
                && m.contains("env_from_vault.DB_PASSWORD")
                && m.contains(&format!("credential {cid}"))
                && m.contains(user),
            "{body}"
        );
    };

    // Someone who may define workflows but not use the credential cannot wire it in; nor can
    // a System Admin, who administers but does not consume it.
    for (token, user) in [(&author_token, author_id.as_str()), (&admin, "admin")] {
        let (st, body) = call(
            client()
                .post(s.url("/api/v1/workflows"))
                .bearer_auth(token)
                .json(&d),
        )
        .await;
        assert_eq!(st, 403, "{body}");
        refused(&body, user);
    }

    // The owner can; a later editor who may not use it cannot save a new version of it (even
    // unchanged), and the workflow stays at version 1.
    let id = create_wf(&s, &owner_token, d.clone()).await;
    let (st, body) = call(
        client()
            .put(s.url(&format!("/api/v1/workflows/{id}")))
            .bearer_auth(&author_token)
            .json(&d),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    refused(&body, &author_id);
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/workflows/{id}")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    // The owner's own edit goes through.
    let (st, body) = call(
        client()
            .put(s.url(&format!("/api/v1/workflows/{id}")))
            .bearer_auth(&owner_token)
            .json(&d),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["version"], 2, "{body}");
}
