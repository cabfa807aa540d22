//! The credential vault in the web console, in a real browser (issue 23 item 1). Two servers
//! (SQLite, or PostgreSQL under `HAECHI_TEST_DATABASE_URL`): one in Express mode where a Vault
//! User builds a locker and a credential through the pages and shares it with a role, and one
//! switched to Manual mode and restarted, so its vault is sealed until the key is typed into
//! the console. This test prepares users, roles and fixtures through the API, then runs
//! `tests/console_py/test_vault.py` (Playwright driving Debian's chromium, axe-core) against
//! them, and afterwards checks that neither the master key nor any value the browser revealed
//! reached a server log or the audit.
//!
//! Under `CI=true` a missing `python3` module or chromium is a failure; elsewhere the test
//! says what is missing and passes without running the browser.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_tools_missing() -> Option<String> {
    let py = Command::new("python3")
        .args(["-c", "import playwright, axe_playwright_python, pytest"])
        .output();
    match py {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Some(format!(
                "python3 modules: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => return Some(format!("python3: {e}")),
    }
    (!std::path::Path::new(CHROMIUM).exists()).then(|| format!("{CHROMIUM} is missing"))
}

async fn new_user(s: &Server, admin: &str, roles: &[&str]) -> Value {
    let user_id = unique("cv");
    let password = format!("pw-{}", unique("p"));
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/users"))
            .bearer_auth(admin)
            .json(
                &json!({ "user_id": user_id, "name": "Vault Console User", "password": password,
                           "roles": roles, "kind": "human" }),
            ),
    )
    .await;
    assert_eq!(st, 201, "create user: {body}");
    json!({ "user": user_id, "password": password, "id": body["id"] })
}

async fn vault(s: &Server, token: &str, method: &str, path: &str, body: Value) -> Value {
    let url = s.url(&format!("/v2/credentialvault{path}"));
    let req = match method {
        "POST" => client().post(url),
        "PUT" => client().put(url),
        _ => client().get(url),
    };
    let (st, out) = call(req.header("X-Authorization", token).json(&body)).await;
    assert!((200..300).contains(&st), "{method} {path}: {st} {out}");
    out
}

/// Every audit event of a server, as text (read by an Auditor).
async fn audit_text(s: &Server, admin: &str) -> String {
    let auditor = new_user(s, admin, &["Auditor"]).await;
    let token = login(
        s,
        auditor["user"].as_str().unwrap(),
        auditor["password"].as_str().unwrap(),
    )
    .await;
    let mut all = String::new();
    let mut offset = 0;
    loop {
        let (st, body) = call(
            client()
                .get(s.url(&format!("/api/v1/audit?limit=1000&offset={offset}")))
                .bearer_auth(&token),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        let events = body["events"].as_array().unwrap();
        all.push_str(&body["events"].to_string());
        if events.len() < 1000 {
            return all;
        }
        offset += 1000;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vault_console_in_a_real_browser() {
    if let Some(missing) = browser_tools_missing() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the browser tests cannot run: {missing} (.ci/run installs them)");
        }
        eprintln!("SKIPPED: the browser tests need {missing}");
        return;
    }

    // Server A: Express mode.
    let s = Server::start();
    let admin = admin_token(&s).await;
    let role_name = unique("vault-readers-");
    let (st, role) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(&admin)
            .json(&json!({ "name": role_name, "permissions": ["vault.use"] })),
    )
    .await;
    assert_eq!(st, 201, "create role: {role}");
    let owner = new_user(&s, &admin, &["Vault User"]).await;
    let consumer = new_user(&s, &admin, &[role_name.as_str()]).await;
    let stranger = new_user(&s, &admin, &["Vault User"]).await;
    let auditor = new_user(&s, &admin, &["Auditor"]).await;

    // HTML in a locker's and a credential's name (and an attribute's), made through the API.
    let xss = "<img src=x onerror=alert(1)>";
    let owner_token = login(
        &s,
        owner["user"].as_str().unwrap(),
        owner["password"].as_str().unwrap(),
    )
    .await;
    let xss_locker = vault(
        &s,
        &owner_token,
        "POST",
        "/lockers",
        json!({ "name": xss, "description": xss }),
    )
    .await;
    let xss_cred = vault(
        &s,
        &owner_token,
        "POST",
        "/credentials",
        json!({ "name": xss, "description": xss,
                "attributes": [{ "name": xss, "userProvided": false, "masked": true }] }),
    )
    .await;
    vault(
        &s,
        &owner_token,
        "PUT",
        &format!(
            "/lockers/{}/credentials/{}",
            xss_locker["id"], xss_cred["id"]
        ),
        json!({}),
    )
    .await;

    // What the browser will type as values: unique, so a log or page search is exact.
    let secret = format!("S3cret-{}", unique("v"));
    let secret2 = format!("Changed-{}", unique("v"));
    let own_token_value = format!("Mine-{}", unique("v"));

    // Server B: switched to Manual mode with the key it generated, then restarted: sealed.
    let b0 = Server::start();
    let key = std::fs::read_to_string(b0.data_dir.join("vault.key"))
        .expect("the Express key file")
        .trim()
        .to_owned();
    let b_admin = admin_token(&b0).await;
    let keeper = new_user(&b0, &b_admin, &["Vault User"]).await;
    let keeper_token = login(
        &b0,
        keeper["user"].as_str().unwrap(),
        keeper["password"].as_str().unwrap(),
    )
    .await;
    let sealed_value = format!("Sealed-{}", unique("v"));
    let kept = vault(
        &b0,
        &keeper_token,
        "POST",
        "/credentials",
        json!({ "name": "db-admin", "attributes": [{ "name": "password", "userProvided": false, "masked": true }] }),
    )
    .await;
    vault(
        &b0,
        &keeper_token,
        "POST",
        &format!("/credentials/{}/attributevalues", kept["id"]),
        json!([{ "credentialAttributeId": kept["attributes"][0]["id"], "value": sealed_value }]),
    )
    .await;
    let (st, body) = call(
        client()
            .put(b0.url("/v2/credentialvault/mode"))
            .header("X-Authorization", &b_admin)
            .json(&json!({ "name": "Manual", "privatekey": key })),
    )
    .await;
    assert_eq!(st, 204, "to Manual: {body}");
    let b_opts = b0.same_state();
    let b0 = b0.stop_async().await;
    let b = Server::start_with(b_opts);
    let (st, body) = call(
        client()
            .get(b.url("/v2/credentialvault/keys/private"))
            .header("X-Authorization", admin_token(&b).await),
    )
    .await;
    assert_eq!((st, &body), (200, &json!({ "applied": false })), "sealed");

    let fixtures = json!({
        "url": s.base,
        "admin": { "user": "admin", "password": ADMIN_PASSWORD },
        "owner": owner,
        "consumer": consumer,
        "stranger": stranger,
        "auditor": auditor,
        "role": { "id": role["id"], "name": role_name },
        "xss": xss,
        "xss_locker": xss_locker["id"],
        "xss_cred": xss_cred["id"],
        "secret": secret,
        "secret2": secret2,
        "own_value": own_token_value,
        "sealed": {
            "url": b.base,
            "admin": { "user": "admin", "password": ADMIN_PASSWORD },
            "keeper": keeper,
            "credential": kept["id"],
            "value": sealed_value,
            "key": key,
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let fx = dir.path().join("fixtures.json");
    std::fs::write(&fx, serde_json::to_vec_pretty(&fixtures).unwrap()).unwrap();
    let test_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/console_py/test_vault.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                "-m",
                "pytest",
                "-q",
                "-x",
                "-p",
                "no:cacheprovider",
                test_file,
            ])
            .env("HAECHI_CONSOLE_FIXTURES", &fx)
            .env("HAECHI_CHROMIUM", CHROMIUM)
            .env("HAECHI_BIN", bin())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "browser tests failed:\n{text}");

    // Nothing secret in the servers' logs or audit: not the master key (typed into B's unseal
    // form, and a wrong one before it), not a value typed, revealed or copied in the browser.
    let secrets = [
        secret.as_str(),
        secret2.as_str(),
        own_token_value.as_str(),
        sealed_value.as_str(),
        key.as_str(),
    ];
    let logs = format!("{}\n{}\n{}", s.logs(), b0.logs(), b.logs());
    let audit = format!(
        "{}\n{}",
        audit_text(&s, &admin).await,
        audit_text(&b, &admin_token(&b).await).await
    );
    for (i, v) in secrets.iter().enumerate() {
        assert!(!logs.contains(v), "secret #{i} is in a server log");
        assert!(!audit.contains(v), "secret #{i} is in the audit");
    }
    assert!(
        !logs.contains(owner["password"].as_str().unwrap()),
        "a password is in the server log"
    );
    // The audit has the reads the browser made (the Python tests count them exactly).
    assert!(audit.contains("console.reveal") && audit.contains("console.copy"));
    // B runs on A0's data directory and database: stop it before they go.
    b.finish().await;
    drop(b0);
    s.finish().await;
}
