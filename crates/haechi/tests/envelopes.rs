//! Every API family renders its errors in its own envelope (CONTRACT §0, §1-§5), including the
//! errors the framework makes (unknown route, wrong method, unreadable body); no error body
//! ever carries internal error text. Also: health and the OpenAPI document.

mod common;

use common::*;
use serde_json::{json, Value};

/// Text that would betray internals (database, panics, Rust types) in a client-facing body.
const INTERNAL_TEXT: [&str; 12] = [
    "sqlx",
    "SQLITE",
    "sqlite3",
    "postgres",
    "panicked",
    "syntax error at",
    "at line",
    "backtrace",
    "serde",
    "thread '",
    "src/",
    "error returned from database",
];

fn assert_clean(what: &str, body: &Value) {
    let text = body.to_string();
    for bad in INTERNAL_TEXT {
        assert!(
            !text.to_lowercase().contains(&bad.to_lowercase()),
            "{what}: internal text {bad:?} in {text}"
        );
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn unknown_routes_are_404_in_each_familys_shape() {
    let s = shared();
    let token = admin_token(s).await;
    for with_token in [false, true] {
        let get = |path: &str| {
            let req = client().get(s.url(path));
            if with_token {
                req.bearer_auth(&token)
            } else {
                req
            }
        };

        let (st, body) = call(get("/api/v1/nope")).await;
        assert_eq!(st, 404, "{body}");
        assert_eq!(keys(&body), ["code", "message"]);
        assert_eq!(body["code"], "not_found");
        assert!(!body["message"].as_str().unwrap().is_empty());
        assert_clean("admin 404", &body);

        let (st, body) = call(get("/opmate/nope")).await;
        assert_eq!(st, 404, "{body}");
        assert_eq!(keys(&body), ["resultCode", "resultMsg"]);
        assert_eq!(body["resultCode"], "4040");
        assert!(body["resultMsg"].is_string());
        assert_clean("opmate 404", &body);

        let (st, body) = call(get("/v2/credentialvault/nope")).await;
        assert_eq!(st, 404, "{body}");
        assert_eq!(keys(&body), ["code", "message"]);
        assert!(body["code"].is_string() && body["message"].is_string());
        assert_ne!(
            body["code"], "not_found",
            "the vault has its own codes: {body}"
        );
        assert_clean("vault 404", &body);

        let (st, body) = call(get("/dbsafer/api/v1/nope")).await;
        assert_eq!(st, 404, "{body}");
        assert_eq!(
            keys(&body),
            ["error", "message", "path", "status", "timestamp"]
        );
        assert_eq!(body["status"], 404);
        assert_eq!(body["error"], "Not Found");
        assert_eq!(body["path"], "/dbsafer/api/v1/nope");
        assert!(body["message"].is_string());
        assert!(
            body["timestamp"].as_str().is_some_and(|t| t.contains('T')),
            "ISO timestamp: {body}"
        );
        assert_clean("dbsafer 404", &body);

        let (st, body) = call(get("/services/workflow/nope")).await;
        assert_eq!(st, 404, "{body}");
        assert_eq!(keys(&body), ["message", "result"]);
        assert_eq!(body["result"], "fail");
        assert_clean("mdrm workflow 404", &body);
    }
    // Outside every prefix: the admin shape.
    let (st, body) = call(client().get(s.url("/no/such/thing"))).await;
    assert_eq!(st, 404);
    assert_eq!(body["code"], "not_found");
}

#[tokio::test]
async fn wrong_methods_are_405_in_each_familys_shape() {
    let s = shared();
    let (st, body) = call(client().delete(s.url("/api/v1/health"))).await;
    assert_eq!(st, 405, "{body}");
    assert_eq!(keys(&body), ["code", "message"]);
    assert_eq!(body["code"], "method_not_allowed");
    assert_clean("admin 405", &body);

    let (st, body) = call(client().get(s.url("/api/v1/auth"))).await;
    assert_eq!(st, 405, "{body}");
    assert_eq!(keys(&body), ["message"]);

    let (st, body) = call(client().get(s.url("/opmate/user/admin/login"))).await;
    assert_eq!(st, 405, "{body}");
    assert_eq!(body["resultCode"], "4050");

    let (st, body) = call(client().get(s.url("/v1/authentication"))).await;
    assert_eq!(st, 405, "{body}");
    assert_eq!(keys(&body), ["code", "message"]);
}

#[tokio::test]
async fn bad_login_bodies_are_400_in_the_login_families_shapes() {
    let s = shared();
    // MDRM: {"message"} only.
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .header("content-type", "application/json")
            .body(r#"{"user_id": "admin", "pwd": "#),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(keys(&body), ["message"]);
    assert!(body["message"].as_str().unwrap().contains("JSON"), "{body}");
    assert_clean("mdrm malformed", &body);
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": "admin"})),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(keys(&body), ["message"]);
    assert!(
        body["message"].as_str().unwrap().contains("pwd"),
        "names the field: {body}"
    );

    // OPMATE: resultCode 4000 naming `password`.
    let (st, body) = call(
        client()
            .post(s.url("/opmate/user/admin/login"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(keys(&body), ["resultCode", "resultMsg"]);
    assert_eq!(body["resultCode"], "4000");
    assert!(
        body["resultMsg"].as_str().unwrap().contains("password"),
        "names the field: {body}"
    );
    assert_clean("opmate missing password", &body);
    let (st, body) = call(
        client()
            .post(s.url("/opmate/user/admin/login"))
            .header("content-type", "application/json")
            .body("{\"password\""),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert_ne!(body["resultCode"], "0000");
    assert!(
        body["resultCode"].as_str().unwrap().starts_with('4'),
        "{body}"
    );
    let (st, body) = call(
        client()
            .post(s.url("/opmate/user/admin/login"))
            .header("content-type", "text/plain")
            .body("password=x"),
    )
    .await;
    assert_eq!(st, 415, "{body}");
    assert_eq!(keys(&body), ["resultCode", "resultMsg"]);

    // Vault: {"code","message"}.
    let (st, body) = call(
        client()
            .post(s.url("/v1/authentication"))
            .json(&json!({"username": "admin"})),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(keys(&body), ["code", "message"]);
    assert!(
        body["message"].as_str().unwrap().contains("password"),
        "{body}"
    );
    assert_clean("vault missing password", &body);
}

#[tokio::test]
async fn error_bodies_never_carry_internal_text() {
    let s = shared();
    let admin = admin_token(s).await;
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let weird = "'; DROP TABLE users;-- \" \\ %00 김";
    let requests: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "user lookup",
            client()
                .get(s.url(&format!("/api/v1/users/{}", enc(weird))))
                .bearer_auth(&admin),
        ),
        (
            "role lookup",
            client()
                .get(s.url(&format!("/api/v1/roles/{}", enc(weird))))
                .bearer_auth(&admin),
        ),
        (
            "huge role id",
            client()
                .get(s.url("/api/v1/roles/99999999999999999999999"))
                .bearer_auth(&admin),
        ),
        (
            "huge token id",
            client()
                .delete(s.url("/api/v1/tokens/99999999999999999999999"))
                .bearer_auth(&admin),
        ),
        (
            "negative token id",
            client()
                .delete(s.url("/api/v1/tokens/-1"))
                .bearer_auth(&admin),
        ),
        (
            "audit bad from",
            client()
                .get(s.url(&format!("/api/v1/audit?from={}", enc(weird))))
                .bearer_auth(&auditor),
        ),
        (
            "audit huge limit",
            client()
                .get(s.url("/api/v1/audit?limit=99999999999999999999999"))
                .bearer_auth(&auditor),
        ),
        (
            "users bad offset",
            client()
                .get(s.url("/api/v1/users?offset=1e99"))
                .bearer_auth(&admin),
        ),
        (
            "login weird user",
            client()
                .post(s.url("/api/v1/auth"))
                .json(&json!({"user_id": weird, "pwd": weird})),
        ),
        (
            "login huge user",
            client()
                .post(s.url("/api/v1/auth"))
                .json(&json!({"user_id": "x".repeat(100_000), "pwd": "x"})),
        ),
        (
            "opmate weird user",
            client()
                .post(s.url(&format!("/opmate/user/{}/login", enc(weird))))
                .json(&json!({"password": weird})),
        ),
        (
            "vault weird user",
            client()
                .post(s.url("/v1/authentication"))
                .json(&json!({"username": weird, "password": weird})),
        ),
        (
            "bad token",
            client()
                .get(s.url("/api/v1/me"))
                .bearer_auth("hct_'; DROP TABLE tokens;-- \" \\"),
        ),
        (
            "long token",
            client()
                .get(s.url("/api/v1/me"))
                .bearer_auth(format!("hct_{}", "a".repeat(5000))),
        ),
        (
            "create user with nulls",
            client()
                .post(s.url("/api/v1/users"))
                .bearer_auth(&admin)
                .json(&json!({"user_id": null, "name": null, "password": null})),
        ),
        (
            "create user with a NUL",
            client()
                .post(s.url("/api/v1/users"))
                .bearer_auth(&admin)
                .json(&json!({"user_id": "nul\u{0}x", "name": "n", "password": "good-password-1"})),
        ),
        (
            "role with a NUL",
            client()
                .post(s.url("/api/v1/roles"))
                .bearer_auth(&admin)
                .json(&json!({"name": "nul\u{0}role", "permissions": []})),
        ),
        (
            "invalid UTF-8",
            client()
                .post(s.url("/api/v1/users"))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']),
        ),
        (
            "dbsafer weird path",
            client().get(s.url(&format!("/dbsafer/api/v1/{}", enc(weird)))),
        ),
        (
            "workflow weird path",
            client().post(s.url(&format!("/services/workflow/{}", enc(weird)))),
        ),
        (
            "vault weird path",
            client().get(s.url(&format!("/v2/credentialvault/{}", enc(weird)))),
        ),
    ];
    for (what, req) in requests {
        let (st, body) = call(req).await;
        assert!(
            (400..500).contains(&st),
            "{what}: expected a 4xx, got {st}: {body}"
        );
        assert!(body.is_object(), "{what}: a JSON error body: {body}");
        assert_clean(what, &body);
    }
    // The server is still fine and the users table is intact.
    let (st, body) = call(
        client()
            .get(s.url("/api/v1/users?limit=1"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["users"][0]["user_id"], "admin");
}

#[tokio::test]
async fn health_answers_without_a_token() {
    let s = shared();
    let (st, body) = call(client().get(s.url("/api/v1/health"))).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "ok");
    let store = match s.db {
        Db::Sqlite(_) => "sqlite",
        Db::Postgres(_) => "postgres",
    };
    assert_eq!(body["store"], store);
    // A bad token does not turn health into a 401.
    let (st, _) = call(
        client()
            .get(s.url("/api/v1/health"))
            .bearer_auth("hct_bogus"),
    )
    .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn openapi_document_lists_every_family() {
    let s = shared();
    let r = client()
        .get(s.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/api/v1/users",
        "/api/v1/users/{user_id}",
        "/api/v1/roles",
        "/api/v1/audit",
        "/api/v1/auth",
        "/opmate/user/{user_id}/login",
        "/v1/authentication",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI paths: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    assert!(paths["/api/v1/users"].get("post").is_some());
}
