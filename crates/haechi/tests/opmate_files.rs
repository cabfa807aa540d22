//! The OPMATE file repository (issue 24 item 8): upload, list, download and delete through the
//! API; a running script's `haechi file put|get` through its own agent with the per-run token;
//! the size limit, name checks, encryption at rest and the audit. One server (files of at most
//! 4 KiB, encrypted: the default) and one real agent are shared by the tests of this file.

mod common;
mod exec_support;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use exec_support::*;
use serde_json::{json, Value};
use sha2::Digest;

/// The size limit the tests' server runs with.
const MAX: usize = 4096;

struct Env {
    server: Server,
    agent: Agent,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    shared_env(&ENV, || async {
        let server =
            Server::start_with(exec_opts().env("HAECHI_FILES__MAX_BYTES", &MAX.to_string()));
        let agent = Agent::start(&server, &node_name("files")).await;
        Env { server, agent }
    })
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// Runs `script` once on the shared agent with `args`; returns the node's execution with its
/// output decoded (`outText`, `errText`).
async fn run_script(script: &str, args: &[&str]) -> Value {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let id = unique("files");
    approved_task(s, &t, &id, script, json!({})).await;
    let no = start(s, &t, &id, &[e.agent.node_id.as_str()], args).await;
    wait_end(s, &t, no, Duration::from_secs(60)).await;
    let mut n = node_detail(s, &t, no, &e.agent.node_id, None).await;
    n["outText"] = json!(String::from_utf8_lossy(&b64(&n["encbase64out"])));
    n["errText"] = json!(String::from_utf8_lossy(&b64(&n["encbase64err"])));
    n
}

/// The value of `KEY=value` on a line of `text`.
fn line_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_owned())
}

async fn upload(s: &Server, token: &str, name: &str, content: Vec<u8>) -> (u16, Value) {
    call(
        client()
            .post(s.url("/api/v1/files"))
            .query(&[("name", name), ("description", "from the test")])
            .bearer_auth(token)
            .body(content),
    )
    .await
}

async fn info(s: &Server, token: &str, name: &str) -> (u16, Value) {
    call(
        client()
            .get(s.url(&format!("/api/v1/files/{}/info", enc(name))))
            .bearer_auth(token),
    )
    .await
}

async fn audit_events(s: &Server, query: &str) -> Vec<Value> {
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/audit?{query}")))
            .bearer_auth(&auditor),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_file_put_by_one_task_is_got_by_a_later_one_and_its_token_dies_with_its_run() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let name = unique("shared") + ".bin";
    let haechi = bin();

    // The first task makes 3000 random bytes, puts them, and shows what it put and its token.
    let put = run_script(
        &format!(
            "#!/bin/sh\nset -e\nhead -c 3000 /dev/urandom > \"$TMPDIR/data\"\n\
             echo \"DATA=$(base64 -w0 \"$TMPDIR/data\")\"\n\
             {haechi} file put \"$1\" \"$TMPDIR/data\"\n\
             echo \"TOKEN=$HAECHI_FILE_TOKEN\"\n"
        ),
        &[&name],
    )
    .await;
    assert_eq!(put["status"], "END", "{put}");
    let out = put["outText"].as_str().unwrap();
    assert_eq!(put["exitCd"], 0, "{put}");
    let data = base64_decode(&line_value(out, "DATA").expect("the data"));
    assert_eq!(data.len(), 3000);
    let token = line_value(out, "TOKEN").expect("the token");
    assert!(token.starts_with("hft_"), "{token}");

    // The repository holds it, with its SHA-256, encrypted, put by that execution.
    let (st, i) = info(s, &t, &name).await;
    assert_eq!(st, 200, "{i}");
    assert_eq!(i["sha256"], sha256_hex(&data), "{i}");
    assert_eq!(i["size"], 3000);
    assert_eq!(i["encrypted"], true);
    assert_eq!(i["version"], 1);
    let put_events = audit_events(s, &format!("action=file.put&target={}", enc(&name))).await;
    assert_eq!(put_events.len(), 1, "{put_events:?}");
    let origin = &put_events[0]["detail"]["origin"];
    assert_eq!(origin["nodeId"], e.agent.node_id.as_str(), "{origin}");
    assert!(origin["execId"].as_i64().is_some(), "{origin}");
    assert!(
        !put_events[0].to_string().contains(&token),
        "the audit never holds the token"
    );

    // A later task gets it: the same bytes and SHA-256.
    let got = run_script(
        &format!(
            "#!/bin/sh\nset -e\n{haechi} file get \"$1\" -o \"$TMPDIR/got\"\n\
             echo \"GOT=$(base64 -w0 \"$TMPDIR/got\")\"\n\
             echo \"SHA=$(sha256sum \"$TMPDIR/got\" | cut -d' ' -f1)\"\n"
        ),
        &[&name],
    )
    .await;
    assert_eq!(got["exitCd"], 0, "{got}");
    let out = got["outText"].as_str().unwrap();
    assert_eq!(base64_decode(&line_value(out, "GOT").unwrap()), data);
    assert_eq!(line_value(out, "SHA").unwrap(), sha256_hex(&data));
    assert_eq!(
        audit_events(s, &format!("action=file.get&target={}", enc(&name)))
            .await
            .len(),
        1
    );

    // The first run's token, used after that run ended, is refused (for a get and a put), and
    // nothing changes.
    let other = unique("never") + ".txt";
    let stale = run_script(
        &format!(
            "#!/bin/sh\nexport HAECHI_FILE_TOKEN=\"$1\"\n\
             {haechi} file get \"$2\" -o \"$TMPDIR/x\"; echo \"GET_RC=$?\"\n\
             echo hello > \"$TMPDIR/y\"\n\
             {haechi} file put \"$3\" \"$TMPDIR/y\"; echo \"PUT_RC=$?\"\n\
             {haechi} file put --replace \"$2\" \"$TMPDIR/y\"; echo \"REPLACE_RC=$?\"\n"
        ),
        &[&token, &name, &other],
    )
    .await;
    let out = stale["outText"].as_str().unwrap();
    let err = stale["errText"].as_str().unwrap();
    assert_eq!(line_value(out, "GET_RC").unwrap(), "1", "{stale}");
    assert_eq!(line_value(out, "PUT_RC").unwrap(), "1", "{stale}");
    assert_eq!(line_value(out, "REPLACE_RC").unwrap(), "1", "{stale}");
    assert!(err.contains("has ended"), "{err}");
    assert!(err.contains("401"), "{err}");
    assert_eq!(info(s, &t, &other).await.0, 404);
    let (_, after) = info(s, &t, &name).await;
    assert_eq!(after["version"], 1, "{after}");
    assert_eq!(after["sha256"], sha256_hex(&data));
    let refused = audit_events(s, "action=file&outcome=denied").await;
    assert!(
        refused.iter().any(|ev| ev["target"] == other.as_str()),
        "{refused:?}"
    );

    // A token that is not the one its agent reported is refused as well.
    let forged = run_script(
        &format!(
            "#!/bin/sh\nexport HAECHI_FILE_TOKEN=\"${{HAECHI_FILE_TOKEN%?}}-\"\n\
             {haechi} file get \"$1\" -o \"$TMPDIR/x\"; echo \"RC=$?\"\n"
        ),
        &[&name],
    )
    .await;
    assert_eq!(
        line_value(forged["outText"].as_str().unwrap(), "RC").unwrap(),
        "1",
        "{forged}"
    );
    assert!(
        forged["errText"].as_str().unwrap().contains("not valid"),
        "{forged}"
    );
}

#[tokio::test]
async fn a_script_put_over_the_limit_is_refused_and_nothing_is_stored() {
    let e = env();
    let s = &e.server;
    let t = admin_token(s).await;
    let name = unique("big") + ".bin";
    let run = run_script(
        &format!(
            "#!/bin/sh\nhead -c {} /dev/zero > \"$TMPDIR/big\"\n{} file put \"$1\" \"$TMPDIR/big\"; echo \"RC=$?\"\n",
            MAX + 1,
            bin()
        ),
        &[&name],
    )
    .await;
    assert_eq!(
        line_value(run["outText"].as_str().unwrap(), "RC").unwrap(),
        "1",
        "{run}"
    );
    assert!(run["errText"].as_str().unwrap().contains("413"), "{run}");
    assert_eq!(info(s, &t, &name).await.0, 404);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413_and_nothing_is_stored() {
    let s = &env().server;
    let t = admin_token(s).await;
    let name = unique("toolarge");
    let (st, body) = upload(s, &t, &name, vec![7u8; MAX + 1]).await;
    assert_eq!(st, 413, "{body}");
    assert!(
        body.to_string().contains(&format!("{MAX} bytes")),
        "the message names the limit: {body}"
    );
    assert_eq!(info(s, &t, &name).await.0, 404);
    let (st, list) = call(client().get(s.url("/api/v1/files")).bearer_auth(&t)).await;
    assert_eq!(st, 200);
    assert!(!list.to_string().contains(&name), "{list}");
    // Exactly the limit is fine.
    let (st, body) = upload(s, &t, &name, vec![7u8; MAX]).await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["size"], MAX);
}

#[tokio::test]
async fn bad_names_are_400_and_a_taken_name_is_409() {
    let s = &env().server;
    let t = admin_token(s).await;
    let long = "n".repeat(129);
    for bad in [
        "a/b",
        "..",
        "x..y",
        "../etc",
        "",
        "a b",
        "파일",
        long.as_str(),
    ] {
        let (st, body) = upload(s, &t, bad, b"x".to_vec()).await;
        assert_eq!(st, 400, "{bad:?}: {body}");
        assert!(body.to_string().contains("name"), "{bad:?}: {body}");
    }
    let (st, list) = call(client().get(s.url("/api/v1/files")).bearer_auth(&t)).await;
    assert_eq!(st, 200);
    for f in list["files"].as_array().unwrap() {
        let n = f["name"].as_str().unwrap();
        assert!(!n.contains('/') && !n.contains(".."), "{n}");
    }

    let name = unique("dup");
    assert_eq!(upload(s, &t, &name, b"one".to_vec()).await.0, 201);
    let (st, body) = upload(s, &t, &name, b"two".to_vec()).await;
    assert_eq!(st, 409, "{body}");
    let (_, i) = info(s, &t, &name).await;
    assert_eq!(i["sha256"], sha256_hex(b"one"));
    // Asked for, a replace makes version 2.
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/files"))
            .query(&[("name", name.as_str()), ("replace", "true")])
            .bearer_auth(&t)
            .body(b"two".to_vec()),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["sha256"], sha256_hex(b"two"));
}

#[tokio::test]
async fn the_stored_row_is_not_plaintext_and_a_download_is_audited() {
    let s = &env().server;
    let t = admin_token(s).await;
    let name = unique("secret") + ".txt";
    let marker = format!("PLAINTEXT-MARKER-{}", unique("m"));
    let content = format!("{marker}\n{marker}\n").into_bytes();
    let (st, up) = upload(s, &t, &name, content.clone()).await;
    assert_eq!(st, 201, "{up}");
    assert_eq!(up["encrypted"], true);

    let hex_content = match s.db {
        Db::Postgres(_) => s.sql(&format!(
            "SELECT encryption || ' ' || encode(content, 'hex') FROM opmate_files WHERE name = '{name}'"
        )),
        Db::Sqlite(_) => s.sql(&format!(
            "SELECT encryption || ' ' || hex(content) FROM opmate_files WHERE name = '{name}'"
        )),
    };
    let (encryption, stored) = hex_content.split_once(' ').unwrap();
    assert_eq!(encryption, "vault");
    assert!(
        !stored
            .to_ascii_lowercase()
            .contains(&hex::encode(marker.as_bytes())),
        "the content is stored in clear"
    );
    assert!(!bytes_contain(&s.store_bytes(), &marker));

    // The download gives the bytes back with their SHA-256 and is audited (without content).
    let r = client()
        .get(s.url(&format!("/api/v1/files/{name}")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-haechi-sha256"].to_str().unwrap(),
        sha256_hex(&content)
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), content.as_slice());
    let events = audit_events(s, &format!("action=file.download&target={}", enc(&name))).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"], "admin");
    assert_eq!(events[0]["detail"]["sha256"], sha256_hex(&content));
    assert!(!events[0].to_string().contains(&marker));
    assert_eq!(
        audit_events(s, &format!("action=file.upload&target={}", enc(&name)))
            .await
            .len(),
        1
    );

    // Delete: audited, then gone.
    let (st, _) = call(
        client()
            .delete(s.url(&format!("/api/v1/files/{name}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(st, 204);
    assert_eq!(info(s, &t, &name).await.0, 404);
    let (st, _) = call(
        client()
            .get(s.url(&format!("/api/v1/files/{name}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(
        audit_events(s, &format!("action=file.delete&target={}", enc(&name)))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_user_without_task_permissions_cannot_touch_files() {
    let s = &env().server;
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let (st, _) = call(client().get(s.url("/api/v1/files")).bearer_auth(&auditor)).await;
    assert_eq!(st, 403);
    let name = unique("nope");
    let (st, _) = upload(s, &auditor, &name, b"x".to_vec()).await;
    assert_eq!(st, 403);
    let t = admin_token(s).await;
    assert_eq!(info(s, &t, &name).await.0, 404);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// A vault data-key rotation keeps encrypted files readable: the key they were sealed with is
/// kept for opening them (never for new seals) until the last file sealed with it is gone.
#[tokio::test]
async fn an_encrypted_file_stays_readable_across_a_data_key_rotation() {
    // A server of its own: a rotation on the shared one would race the other tests' uploads.
    let s = Server::start();
    let t = admin_token(&s).await;
    let content = b"kept across the rotation\n".to_vec();
    let (st, up) = upload(&s, &t, "rotated.txt", content.clone()).await;
    assert_eq!(st, 201, "{up}");
    assert_eq!(up["encrypted"], true, "{up}");
    let rotate = || async {
        call(
            client()
                .post(s.url("/api/v1/vault/rotate-data-key"))
                .bearer_auth(&t),
        )
        .await
    };
    let (st, r) = rotate().await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["retired_keys"], 0, "the file's key is kept: {r}");
    assert_eq!(s.sql("SELECT COUNT(*) FROM vault_data_keys"), "2");
    let get = |name: &'static str| {
        let url = s.url(&format!("/api/v1/files/{name}"));
        let t = t.clone();
        async move {
            let r = client().get(url).bearer_auth(&t).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap().to_vec())
        }
    };
    let (st, body) = get("rotated.txt").await;
    assert_eq!(st, 200);
    assert_eq!(body, content, "the file reads back after the rotation");
    // A file stored after the rotation uses the new key; both read back.
    let (st, up) = upload(&s, &t, "after.txt", b"new key\n".to_vec()).await;
    assert_eq!(st, 201, "{up}");
    assert_eq!(get("after.txt").await.1, b"new key\n".to_vec());
    // Once the old file is gone, the next rotation retires its key.
    let (st, _) = call(
        client()
            .delete(s.url("/api/v1/files/rotated.txt"))
            .bearer_auth(&t),
    )
    .await;
    assert!(st == 200 || st == 204, "{st}");
    let (st, r) = rotate().await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["retired_keys"], 1, "{r}");
    assert_eq!(s.sql("SELECT COUNT(*) FROM vault_data_keys"), "2");
    assert_eq!(get("after.txt").await.1, b"new key\n".to_vec());
    s.finish().await;
}
