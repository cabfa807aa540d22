//! The three login endpoints in their families' shapes, the four token carriers, and the
//! login attacks of issue 2 (generic failures, lockout, inactivity, allow-lists, expiry,
//! revocation).

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn mdrm_login_shape_and_failure() {
    let s = shared();
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": "admin", "pwd": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["message"], "Success");
    assert!(
        body["token"].as_str().unwrap().starts_with("Bearer hct_"),
        "{body}"
    );

    let (st, body) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": "admin", "pwd": "wrong-password"})),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(body, json!({"message": "wrong user id or password"}));
}

#[tokio::test]
async fn opmate_login_shape_and_failure() {
    let s = shared();
    let (st, body) = call(
        client()
            .post(s.url("/opmate/user/admin/login"))
            .json(&json!({"password": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["resultCode"], "0000");
    assert_eq!(body["resultMsg"], "Success");
    assert!(body["uuid"].as_str().unwrap().starts_with("hct_"));

    let (st, body) = call(
        client()
            .post(s.url("/opmate/user/admin/login"))
            .json(&json!({"password": "nope-nope"})),
    )
    .await;
    assert_eq!(st, 401);
    assert_ne!(body["resultCode"], "0000");
    assert_eq!(body["resultMsg"], "wrong user id or password");
}

#[tokio::test]
async fn vault_login_shape_logout_and_usename_alias() {
    let s = shared();
    let (st, body) = call(
        client()
            .post(s.url("/v1/authentication"))
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(body["user"]["id"].is_i64());
    assert_eq!(body["user"]["username"], "admin");
    assert!(body["user"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "System Admin"));

    // The product's own example spells the field "usename".
    let (st, _) = call(
        client()
            .post(s.url("/v1/authentication"))
            .json(&json!({"usename": "admin", "password": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(st, 200);

    let (st, _) = call(
        client()
            .post(s.url("/v1/authentication/logout"))
            .header("X-Authorization", &token),
    )
    .await;
    assert_eq!(st, 204);
    let (st, body) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
    assert_eq!(st, 401, "a logged-out token must not work: {body}");

    let (st, body) = call(
        client()
            .post(s.url("/v1/authentication"))
            .json(&json!({"username": "admin", "password": "bad-bad-bad"})),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(body["code"], "auth.failed");
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn unknown_user_and_wrong_password_look_the_same() {
    let s = shared();
    let unknown = unique("ghost");
    let (st1, b1) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": unknown, "pwd": "whatever-1"})),
    )
    .await;
    let (st2, b2) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": "admin", "pwd": "whatever-1"})),
    )
    .await;
    assert_eq!((st1, &b1), (st2, &b2));
    let (st3, b3) = call(
        client()
            .post(s.url(&format!("/opmate/user/{unknown}/login")))
            .json(&json!({"password": "x12345678"})),
    )
    .await;
    assert_eq!(st3, 401);
    assert_eq!(b3["resultMsg"], "wrong user id or password");
}

#[tokio::test]
async fn every_token_carrier_works_on_every_family() {
    let s = shared();
    let token = admin_token(s).await;
    let url = s.url("/api/v1/me");
    for req in [
        client()
            .get(&url)
            .header("Authorization", format!("Bearer {token}")),
        client().get(&url).header("Authorization", &token),
        client().get(&url).header("X-Authorization", &token),
        client().get(format!("{url}?auth={token}")),
    ] {
        let (st, body) = call(req).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["user_id"], "admin");
    }
    // A token from the OPMATE login works on the admin and vault families too.
    let (_, b) = call(
        client()
            .post(s.url("/opmate/user/admin/login"))
            .json(&json!({"password": ADMIN_PASSWORD})),
    )
    .await;
    let uuid = b["uuid"].as_str().unwrap();
    let (st, _) = call(client().get(format!("{url}?auth={uuid}"))).await;
    assert_eq!(st, 200);
    let (st, _) = call(
        client()
            .post(s.url("/v1/authentication/logout"))
            .header("Authorization", uuid),
    )
    .await;
    assert_eq!(st, 204);
}

#[tokio::test]
async fn missing_and_bad_tokens_are_401_in_each_envelope() {
    let s = shared();
    let (st, body) = call(client().get(s.url("/api/v1/me"))).await;
    assert_eq!(st, 401);
    assert_eq!(body["code"], "unauthenticated");
    let (st, body) = call(
        client()
            .get(s.url("/api/v1/me"))
            .bearer_auth("hct_not-a-real-token"),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(body["code"], "unauthenticated");
    let (st, body) = call(client().post(s.url("/v1/authentication/logout"))).await;
    assert_eq!(st, 401);
    assert_eq!(body["code"], "auth.required");
}

#[tokio::test]
async fn lockout_after_failed_logins_and_admin_unlock() {
    let s = shared();
    let (user, password, _) = user_with_roles(s, &[]).await;
    for _ in 0..5 {
        let (st, _) = call(
            client()
                .post(s.url("/api/v1/auth"))
                .json(&json!({"user_id": user, "pwd": "wrong-pw-1"})),
        )
        .await;
        assert_eq!(st, 401);
    }
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": user, "pwd": password})),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(
        body,
        json!({"message": "wrong user id or password"}),
        "a locked account answers like a wrong password"
    );
    let admin = admin_token(s).await;
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/users/{user}")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["locked"], true);
    let (st, body) = call(
        client()
            .post(s.url(&format!("/api/v1/users/{user}/unlock")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["locked"], false);
    login(s, &user, &password).await;
}

#[tokio::test]
async fn inactivity_locks_humans_but_not_api_accounts() {
    let s = shared();
    let admin = admin_token(s).await;
    let mut ids = vec![];
    for kind in ["human", "api"] {
        let id = unique(kind);
        let (st, body) = call(
            client()
                .post(s.url("/api/v1/users"))
                .bearer_auth(&admin)
                .json(&json!({
                    "user_id": id, "name": "sleepy", "password": "sleepy-password", "kind": kind
                })),
        )
        .await;
        assert_eq!(st, 201, "{body}");
        assert_eq!(body["kind"], kind);
        ids.push(id);
    }
    let long_ago = haechi_now_ms() - 91 * 86_400_000;
    for id in &ids {
        s.sql(&format!(
            "UPDATE users SET last_login_at = {long_ago}, activity_reset_at = {long_ago} WHERE user_id = '{id}'"
        ));
    }
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": ids[0], "pwd": "sleepy-password"})),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(body, json!({"message": "wrong user id or password"}));
    login(s, &ids[1], "sleepy-password").await;
    // An admin unlock restarts the inactivity clock.
    let (st, _) = call(
        client()
            .post(s.url(&format!("/api/v1/users/{}/unlock", ids[0])))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200);
    login(s, &ids[0], "sleepy-password").await;
}

fn haechi_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn disabling_and_password_change_revoke_tokens() {
    let s = shared();
    let admin = admin_token(s).await;
    let (user, password, token) = user_with_roles(s, &[]).await;
    let (st, _) = call(
        client()
            .put(s.url(&format!("/api/v1/users/{user}/password")))
            .bearer_auth(&admin)
            .json(&json!({"password": "a-new-password"})),
    )
    .await;
    assert_eq!(st, 204);
    let (st, _) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
    assert_eq!(st, 401, "password change must revoke tokens");
    let (st, _) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": user, "pwd": password})),
    )
    .await;
    assert_eq!(st, 401, "old password must not work");
    let token = login(s, &user, "a-new-password").await;

    let (st, body) = call(
        client()
            .post(s.url(&format!("/api/v1/users/{user}/disable")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["disabled"], true);
    let (st, _) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
    assert_eq!(st, 401, "disabling must revoke tokens");
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": user, "pwd": "a-new-password"})),
    )
    .await;
    assert_eq!(st, 401, "{body}");
    assert_eq!(body, json!({"message": "wrong user id or password"}));
}

#[tokio::test]
async fn ip_allow_list_applies_to_login_and_requests() {
    let s = shared();
    let admin = admin_token(s).await;
    let id = unique("ip");
    let (st, body) = call(client().post(s.url("/api/v1/users")).bearer_auth(&admin).json(&json!({
        "user_id": id, "name": "ip test", "password": "ip-password-1", "allowed_ips": ["10.0.0.0/8"]
    }))).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": id, "pwd": "ip-password-1"})),
    )
    .await;
    assert_eq!(
        st, 401,
        "a login from outside the allow-list fails like a wrong password"
    );
    assert_eq!(body, json!({"message": "wrong user id or password"}));
    let (st, body) = call(
        client()
            .put(s.url(&format!("/api/v1/users/{id}/allowed-ips")))
            .bearer_auth(&admin)
            .json(&json!({"allowed_ips": ["127.0.0.1", "::1"]})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["allowed_ips"], json!(["127.0.0.1/32", "::1/128"]));
    let token = login(s, &id, "ip-password-1").await;
    let (st, _) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
    assert_eq!(st, 200);
    // Narrowing the list applies to the next request of an existing token.
    let (st, _) = call(
        client()
            .put(s.url(&format!("/api/v1/users/{id}/allowed-ips")))
            .bearer_auth(&admin)
            .json(&json!({"allowed_ips": ["192.0.2.0/24"]})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, body) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["code"], "ip_not_allowed");
}

#[tokio::test]
async fn tokens_expire_when_idle_and_absolutely() {
    let s = Server::start_with(
        Opts::default()
            .env("HAECHI_IDENTITY__TOKEN_IDLE_SECS", "2")
            .env("HAECHI_IDENTITY__TOKEN_MAX_SECS", "4")
            .env("HAECHI_IDENTITY__TOKEN_CACHE_SECS", "1"),
    );
    let idle = admin_token(&s).await;
    let busy = admin_token(&s).await;
    let start = std::time::Instant::now();
    // `busy` is used every 500 ms, so it never idles; it still dies at its absolute lifetime.
    while start.elapsed() < std::time::Duration::from_millis(3200) {
        let (st, _) = call(client().get(s.url("/api/v1/me")).bearer_auth(&busy)).await;
        assert_eq!(st, 200, "busy token died early at {:?}", start.elapsed());
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let (st, body) = call(client().get(s.url("/api/v1/me")).bearer_auth(&idle)).await;
    assert_eq!(st, 401, "idle token must expire: {body}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (st, _) = call(client().get(s.url("/api/v1/me")).bearer_auth(&busy)).await;
    assert_eq!(st, 401, "token must expire at its absolute lifetime");
    s.finish().await;
}

#[tokio::test]
async fn my_tokens_lists_without_values_and_revokes() {
    let s = shared();
    let (_, _, token) = user_with_roles(s, &[]).await;
    let (st, body) = call(client().get(s.url("/api/v1/tokens")).bearer_auth(&token)).await;
    assert_eq!(st, 200);
    let tokens = body["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["current"], true);
    assert!(
        !body.to_string().contains(&token),
        "token values must never be listed"
    );
    let id = tokens[0]["id"].as_i64().unwrap();
    let (st, _) = call(
        client()
            .delete(s.url("/api/v1/tokens/999999999"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        client()
            .delete(s.url(&format!("/api/v1/tokens/{id}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(st, 204);
    let (st, _) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn login_failures_are_counted_in_metrics() {
    let s = shared();
    let _ = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": "nobody-here", "pwd": "x1234567"})),
    )
    .await;
    let text = metrics_text(s).await;
    assert!(
        text.contains("haechi_login_failures_total{family=\"mdrm\"}"),
        "{text}"
    );
    assert!(text.contains("haechi_http_requests_total"));
    assert!(text.contains("route=\"/api/v1/auth\""));
}

/// The login answer of each family for (user, password): (status, body).
async fn login_answers(s: &Server, user: &str, password: &str) -> Vec<(u16, serde_json::Value)> {
    vec![
        call(
            client()
                .post(s.url("/api/v1/auth"))
                .json(&json!({"user_id": user, "pwd": password})),
        )
        .await,
        call(
            client()
                .post(s.url(&format!("/opmate/user/{}/login", enc(user))))
                .json(&json!({"password": password})),
        )
        .await,
        call(
            client()
                .post(s.url("/v1/authentication"))
                .json(&json!({"username": user, "password": password})),
        )
        .await,
    ]
}

/// The `detail.reason` of the audit events an Auditor finds with `query`.
async fn audit_reasons(s: &Server, auditor: &str, query: &str) -> Vec<String> {
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/audit?{query}")))
            .bearer_auth(auditor),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"]["reason"].as_str().map(str::to_owned))
        .collect()
}

/// `n` wrong MDRM logins for `user` sent at once: their statuses.
async fn parallel_wrong_logins(s: &Server, user: &str, n: usize) -> Vec<(u16, serde_json::Value)> {
    let guesses = (0..n).map(|i| {
        let c = client();
        let url = s.url("/api/v1/auth");
        let user = user.to_owned();
        async move {
            call(
                c.post(url)
                    .json(&json!({"user_id": user, "pwd": format!("wrong-{i}-guess")})),
            )
            .await
        }
    });
    futures::future::join_all(guesses).await
}

/// The user's record as an admin sees it.
async fn user_record(s: &Server, user: &str) -> serde_json::Value {
    let admin = admin_token(s).await;
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/users/{user}")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    body
}

/// Issue 26 item 3: guesses sent at once each decide against the lock as it stands when their
/// password check ends, so no more than `max_failed_logins` count and the right password is
/// refused afterwards.
#[tokio::test]
async fn parallel_guesses_cannot_pass_the_lockout() {
    let s = Server::start_with(Opts::default().env("HAECHI_IDENTITY__MAX_CONCURRENT_LOGINS", "64"));
    let (user, password, _) = user_with_roles(&s, &[]).await;
    for (st, body) in parallel_wrong_logins(&s, &user, 40).await {
        assert_eq!(st, 401, "{body}");
        assert_eq!(body, json!({"message": "wrong user id or password"}));
    }
    let record = user_record(&s, &user).await;
    assert_eq!(record["locked"], true, "{record}");
    assert_eq!(
        record["failed_logins"], 5,
        "only 5 failures may count: {record}"
    );
    for (st, body) in login_answers(&s, &user, &password).await {
        assert_eq!(st, 401, "the right password after the lock: {body}");
    }
    assert_eq!(user_record(&s, &user).await["failed_logins"], 5);
    s.finish().await;
}

/// Issue 26 item 3: at most `max_concurrent_logins` (4) logins per user id wait at once; the
/// rest are refused at once with 503 and are not counted.
#[tokio::test]
async fn queued_logins_per_account_are_bounded() {
    // 2 checked at once and 4 waiting: of 40 logins at once, most are refused without a check.
    let s = &Server::start_with(
        Opts::default()
            .env("HAECHI_IDENTITY__MAX_CONCURRENT_LOGINS", "2")
            .env("HAECHI_IDENTITY__MAX_QUEUED_LOGINS", "4"),
    );
    let (user, _, _) = user_with_roles(s, &[]).await;
    let statuses: Vec<u16> = parallel_wrong_logins(s, &user, 40)
        .await
        .into_iter()
        .map(|(st, _)| st)
        .collect();
    assert!(
        statuses.iter().all(|st| *st == 401 || *st == 503),
        "{statuses:?}"
    );
    let refused = statuses.iter().filter(|st| **st == 503).count();
    assert!(
        refused > 0,
        "40 logins at once must exceed the bound: {statuses:?}"
    );
    let record = user_record(s, &user).await;
    assert!(record["failed_logins"].as_i64().unwrap() <= 5, "{record}");
}

/// Issue 18 item 9: when the account cannot log in (locked, disabled, inactive, address
/// outside its allow-list), the right password gets the same answer as a wrong one, in every
/// family; the audit keeps the true reason.
#[tokio::test]
async fn a_refused_account_answers_the_same_whatever_the_password() {
    let s = shared();
    let admin = admin_token(s).await;
    let wrong = "not-the-password-1";

    let (locked, locked_pw, _) = user_with_roles(s, &[]).await;
    for _ in 0..5 {
        call(
            client()
                .post(s.url("/api/v1/auth"))
                .json(&json!({"user_id": locked, "pwd": wrong})),
        )
        .await;
    }
    let (disabled, disabled_pw, _) = user_with_roles(s, &[]).await;
    let (st, _) = call(
        client()
            .post(s.url(&format!("/api/v1/users/{disabled}/disable")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200);
    let (fenced, fenced_pw, _) = user_with_roles(s, &[]).await;
    let (st, _) = call(
        client()
            .put(s.url(&format!("/api/v1/users/{fenced}/allowed-ips")))
            .bearer_auth(&admin)
            .json(&json!({"allowed_ips": ["192.0.2.0/24"]})),
    )
    .await;
    assert_eq!(st, 200);
    let (sleepy, sleepy_pw, _) = user_with_roles(s, &[]).await;
    let long_ago = haechi_now_ms() - 91 * 86_400_000;
    s.sql(&format!(
        "UPDATE users SET last_login_at = {long_ago}, activity_reset_at = {long_ago} WHERE user_id = '{sleepy}'"
    ));

    let cases = [
        (&locked, &locked_pw, "locked"),
        (&disabled, &disabled_pw, "disabled"),
        (&fenced, &fenced_pw, "ip not allowed"),
        (&sleepy, &sleepy_pw, "inactive"),
    ];
    for (user, password, _) in cases {
        let right = login_answers(s, user, password).await;
        let wrong = login_answers(s, user, wrong).await;
        assert_eq!(
            right, wrong,
            "{user}: the answer must not tell the password was right"
        );
        for (st, _) in &right {
            assert_eq!(*st, 401, "{user}: {right:?}");
        }
    }
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    for (user, _, reason) in cases {
        let reasons = audit_reasons(s, &auditor, &format!("user={user}&action=auth.login")).await;
        assert!(reasons.iter().any(|r| r == reason), "{user}: {reasons:?}");
    }
}

/// Issue 26 item 12: the first admin's password from `HAECHI_ADMIN_PASSWORD` meets the password
/// policy: a short one stops the first start with a clear message, and no admin is created.
#[tokio::test]
async fn a_weak_bootstrap_password_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let pg_name = format!("haechi_t_boot_{}", std::process::id());
    let mut cmd = std::process::Command::new(bin());
    cmd.args([
        "server",
        "--stop-on-stdin-eof",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(&dir)
    .env("HAECHI_ADMIN_PASSWORD", "short")
    .env_remove("HAECHI_CONFIG")
    .stdin(std::process::Stdio::null());
    if let Db::Postgres(url) = &shared().db {
        shared().sql(&format!("CREATE DATABASE {pg_name}"));
        let base = url.rsplit_once('/').unwrap().0;
        cmd.arg("--database-url").arg(format!("{base}/{pg_name}"));
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if matches!(shared().db, Db::Postgres(_)) {
        shared().sql(&format!("DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"));
    }
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("HAECHI_ADMIN_PASSWORD") && text.contains("at least 8 characters"),
        "{text}"
    );
    assert!(
        !text.contains("short"),
        "the password must not be echoed: {text}"
    );
}

/// Issue 26 item 12: a wrong `current_password` when changing one's own password counts toward
/// the lockout and is audited; once locked, the change is refused and so is the login.
#[tokio::test]
async fn wrong_current_passwords_count_toward_the_lockout() {
    let s = shared();
    let (user, password, token) = user_with_roles(s, &[]).await;
    let url = s.url(&format!("/api/v1/users/{user}/password"));
    for _ in 0..5 {
        let (st, body) = call(
            client()
                .put(&url)
                .bearer_auth(&token)
                .json(&json!({"password": "new-password-1", "current_password": "wrong-guess-1"})),
        )
        .await;
        assert_eq!(st, 400, "{body}");
    }
    let record = user_record(s, &user).await;
    assert_eq!(record["failed_logins"], 5, "{record}");
    assert_eq!(record["locked"], true, "{record}");
    let (st, body) = call(
        client()
            .put(&url)
            .bearer_auth(&token)
            .json(&json!({"password": "new-password-1", "current_password": password})),
    )
    .await;
    assert_eq!(st, 403, "a locked account changes no password: {body}");
    for (st, _) in login_answers(s, &user, &password).await {
        assert_eq!(st, 401);
    }
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let reasons = audit_reasons(s, &auditor, &format!("action=user.password&user={user}")).await;
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "wrong current password")
            .count(),
        5,
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "locked"), "{reasons:?}");
}
