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
    assert!(
        body["message"].as_str().unwrap().contains("locked"),
        "{body}"
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
    assert!(
        body["message"].as_str().unwrap().contains("inactivity"),
        "{body}"
    );
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
    assert!(
        body["message"].as_str().unwrap().contains("disabled"),
        "{body}"
    );
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
    assert_eq!(st, 403, "{body}");
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
