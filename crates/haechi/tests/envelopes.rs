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

// ---- input that must be refused (issue 18 item 11) --------------------------------------------

/// Look-alike user ids and role names are refused (400) or collide with the name they imitate
/// (409), and nothing is created.
#[tokio::test]
async fn look_alike_user_ids_and_role_names_are_refused() {
    let s = shared();
    let admin = admin_token(s).await;
    let base = unique("look");
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/users"))
            .bearer_auth(&admin)
            .json(&json!({"user_id": base, "name": "Base", "password": "look-password-1"})),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let fullwidth: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                char::from_u32(c as u32 + 0xFEE0).unwrap()
            } else {
                c
            }
        })
        .collect();
    for (id, status) in [
        (base.to_uppercase(), 409),
        ("ADMIN".to_owned(), 409),
        (fullwidth, 400),
        (format!("ad\u{200B}{base}"), 400),
        (format!("{base}\u{202E}"), 400),
        (format!("{base}\u{0}"), 400),
        (format!("\u{FEFF}{base}"), 400),
    ] {
        let (st, body) = call(
            client()
                .post(s.url("/api/v1/users"))
                .bearer_auth(&admin)
                .json(&json!({"user_id": id, "name": "Look", "password": "look-password-1"})),
        )
        .await;
        assert_eq!(st, status, "{id:?}: {body}");
        let (st, _) = call(
            client()
                .get(s.url(&format!("/api/v1/users/{}", enc(&id))))
                .bearer_auth(&admin),
        )
        .await;
        let expected = if id.contains('\0') { 400 } else { 404 };
        assert_eq!(st, expected, "{id:?} must not exist");
    }
    let role = unique("Look Role ");
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(&admin)
            .json(&json!({"name": role, "permissions": ["node.view"]})),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    for (name, status) in [
        (role.to_lowercase(), 409),
        ("system admin".to_owned(), 409),
        (format!("{role}\u{200D}"), 400),
        ("Look\u{3000}Role".to_owned(), 400),
        (format!(" {role}x"), 400),
    ] {
        let (st, body) = call(
            client()
                .post(s.url("/api/v1/roles"))
                .bearer_auth(&admin)
                .json(&json!({"name": name, "permissions": ["node.view"]})),
        )
        .await;
        assert_eq!(st, status, "{name:?}: {body}");
    }
    // A rename is held to the same rule.
    let (st, body) = call(
        client()
            .patch(s.url(&format!("/api/v1/roles/{}", enc(&role))))
            .bearer_auth(&admin)
            .json(&json!({"name": "AUDITOR"})),
    )
    .await;
    assert_eq!(st, 409, "{body}");
}

/// A body that is JSON but not an object where an object is expected is 400 in every family,
/// and changes nothing; a NUL in a task's scriptName and a path as a DBSAFER serverAddress are
/// refused.
#[tokio::test]
async fn non_object_bodies_and_bad_names_are_refused() {
    let s = shared();
    let admin = admin_token(s).await;
    const POLICIES: &str = "/dbsafer/api/v1/policy/custom/access-policies";
    let policy = json!({
        "policyId": unique("P_LOOK"), "userId": unique("u"), "account": "app",
        "clientIpBegin": "1.1.1.1", "clientIpEnd": "2.2.2.2", "serverAddress": "127.0.0.1",
        "serverPort": 5432, "sid": "db1", "sqlPrivileges": ["SELECT"], "policyType": "SAC",
        "startDate": "2022-01-01T00:00:00", "endDate": "2099-12-31T23:59:59"
    });
    let (st, body) = call(
        client()
            .post(s.url(POLICIES))
            .bearer_auth(&admin)
            .json(&policy),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let location = format!("{POLICIES}/{}", body["index"].as_i64().unwrap());
    let (st, before) = call(client().get(s.url(&location)).bearer_auth(&admin)).await;
    assert_eq!(st, 200, "{before}");
    for bad in [
        json!([]),
        json!([{"serverPort": 1}]),
        json!("x"),
        json!(5),
        json!(null),
    ] {
        let (st, body) = call(
            client()
                .put(s.url(&location))
                .bearer_auth(&admin)
                .json(&bad),
        )
        .await;
        assert_eq!(st, 400, "PUT {bad}: {body}");
        assert_eq!(body["status"], 400, "DBSAFER's shape: {body}");
    }
    let (_, after) = call(client().get(s.url(&location)).bearer_auth(&admin)).await;
    assert_eq!(before, after, "nothing changed");
    // A NUL in a path or query is 400 in every family (PostgreSQL refuses it in text).
    for path in [
        "/api/v1/users/a%00b",
        "/api/v1/audit?user=a%00b",
        "/opmate/task/a%00b",
        "/v2/credentialvault/lockers/1%00",
        "/dbsafer/api/v1/policy/custom/access-policies?policyId=%00",
    ] {
        let (st, body) = call(client().get(s.url(path)).bearer_auth(&admin)).await;
        assert_eq!(st, 400, "{path}: {body}");
    }
    for (route, family) in [
        ("/api/v1/users", "admin"),
        ("/api/v1/auth", "mdrm"),
        ("/v1/authentication", "vault"),
        ("/opmate/user/admin/login", "opmate"),
    ] {
        let (st, body) = call(
            client()
                .post(s.url(route))
                .bearer_auth(&admin)
                .json(&json!([])),
        )
        .await;
        assert_eq!(st, 400, "{family} {route}: {body}");
    }

    for address in ["../../../../etc/passwd", "/tmp/x", "db host", "http://db"] {
        let mut p = policy.clone();
        p["policyId"] = json!(unique("P_ADDR"));
        p["serverAddress"] = json!(address);
        let (st, body) = call(client().post(s.url(POLICIES)).bearer_auth(&admin).json(&p)).await;
        assert_eq!(st, 400, "{address:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("serverAddress"),
            "{body}"
        );
    }

    let id = unique("look-task");
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/tasks"))
            .bearer_auth(&admin)
            .json(&json!({
                "id": id, "scriptName": "run\u{0}.sh", "script": "true", "osUser": "root"
            })),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    for bad in [format!("ｔ{id}"), format!("{id}\u{200B}")] {
        let (st, body) = call(
            client()
                .post(s.url("/api/v1/tasks"))
                .bearer_auth(&admin)
                .json(&json!({
                    "id": bad, "scriptName": "run.sh", "script": "true", "osUser": "root"
                })),
        )
        .await;
        assert_eq!(st, 400, "{bad:?}: {body}");
    }
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/tasks"))
            .bearer_auth(&admin)
            .json(&json!({
                "id": id, "scriptName": "run.sh", "script": "true", "osUser": "root"
            })),
    )
    .await;
    assert_eq!(st, 201, "a clean task still goes in: {body}");
}

// ---- slow clients (issue 26 item 4, the HTTP half) ---------------------------------------------

/// Reads until the server closes the connection; how long that took, or `None` after `limit`.
async fn closed_within(
    sock: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> Option<std::time::Duration> {
    use tokio::io::AsyncReadExt;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|_| start.elapsed())
}

/// A client that sends half a request header, or goes quiet after a request, is disconnected
/// after `http_header_timeout_secs`; past `http_max_connections` a connection is closed at once.
#[tokio::test]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let s = Server::start_with(
        Opts::default()
            .arg("--plain-http")
            .env("HAECHI_HTTP_HEADER_TIMEOUT_SECS", "2")
            .env("HAECHI_HTTP_MAX_CONNECTIONS", "3")
            .env("HAECHI_AGENTS__LOCAL_AGENT", "false"),
    );
    let addr = s.base.trim_start_matches("http://").to_owned();

    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut quiet = tokio::net::TcpStream::connect(&addr).await.unwrap();
    quiet
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The cap: three are open, a fourth is closed at once.
    let mut fourth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let t = closed_within(&mut fourth, Duration::from_secs(1)).await;
    assert!(
        t.is_some(),
        "a connection past the cap must be closed at once"
    );

    for (what, sock) in [
        ("half a header", &mut half),
        ("idle after a request", &mut quiet),
        ("silent", &mut third),
    ] {
        let t = closed_within(sock, Duration::from_secs(8))
            .await
            .unwrap_or_else(|| panic!("{what}: still open after 8 s"));
        assert!(t < Duration::from_secs(5), "{what}: closed after {t:?}");
    }
    // Slots are free again.
    let (st, _) = call(client().get(s.url("/api/v1/health"))).await;
    assert_eq!(st, 200);
    s.finish().await;
}

// ---- /metrics and HSTS (issue 26 item 15) ------------------------------------------------------

/// By default `/metrics` answers a loopback client without a token, and any other client only
/// with a token of a user holding `admin.settings`; `metrics_access = "token"` asks everyone.
/// HTTPS answers carry HSTS.
#[tokio::test]
async fn metrics_need_a_token_off_loopback_and_https_answers_carry_hsts() {
    // 127.0.0.1 is a trusted proxy here, so X-Forwarded-For can play a client elsewhere.
    let s = Server::start_with(Opts::default().env("HAECHI_TRUSTED_PROXIES", "[\"127.0.0.1\"]"));
    let admin = admin_token(&s).await;
    let (_, _, nobody) = user_with_roles(&s, &[]).await;
    let far = "192.0.2.7";
    let metrics = s.url("/metrics");
    let r = client().get(&metrics).send().await.unwrap();
    assert_eq!(r.status(), 200, "loopback without a token");
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000",
        "HTTPS answers carry HSTS"
    );
    let (st, body) = call(client().get(&metrics).header("X-Forwarded-For", far)).await;
    assert_eq!(st, 401, "{body}");
    let (st, body) = call(
        client()
            .get(&metrics)
            .header("X-Forwarded-For", far)
            .bearer_auth(&nobody),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    let (st, body) = call(
        client()
            .get(&metrics)
            .header("X-Forwarded-For", far)
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200);
    assert!(body
        .as_str()
        .unwrap()
        .contains("haechi_http_requests_total"));
    // Error answers carry HSTS too.
    let r = client().get(s.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("strict-transport-security"));
    s.finish().await;

    let s = Server::start_with(Opts::default().env("HAECHI_METRICS_ACCESS", "token"));
    let (st, _) = call(client().get(s.url("/metrics"))).await;
    assert_eq!(st, 401, "token: loopback needs one too");
    let admin = admin_token(&s).await;
    let (st, _) = call(client().get(s.url("/metrics")).bearer_auth(&admin)).await;
    assert_eq!(st, 200);
    s.finish().await;

    // Plain HTTP (loopback only) carries no HSTS.
    let s = Server::start_with(Opts::default().arg("--plain-http"));
    let r = client().get(s.url("/api/v1/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("strict-transport-security"));
    s.finish().await;
}

/// Every answer carries the request's id (`X-Request-Id`): the client's own when it is a short
/// run of visible ASCII, else a fresh one; and a log line written while the request is handled
/// names that id, so an answer can be found in the server log.
#[tokio::test]
async fn every_answer_names_its_request_id_and_the_log_carries_it() {
    let s = shared();
    let id_of = |r: &reqwest::Response| {
        r.headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let c = client();
    let r = c
        .get(s.url("/api/v1/health"))
        .header("X-Request-Id", "proxy-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&r), "proxy-7f3a");
    // Errors, in each family's envelope, carry it too.
    for path in [
        "/api/v1/nope",
        "/opmate/nope",
        "/v2/credentialvault/nope",
        "/console/nope",
    ] {
        let r = c
            .get(s.url(path))
            .header("X-Request-Id", "err-42")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
        assert_eq!(id_of(&r), "err-42", "{path}");
    }
    // No id, or one that is too long or has spaces: a fresh 16-hex-digit id, different each time.
    let mut seen = std::collections::HashSet::new();
    for bad in [None, Some("x".repeat(65)), Some("two words".to_owned())] {
        let mut req = c.get(s.url("/api/v1/health"));
        if let Some(v) = &bad {
            req = req.header("X-Request-Id", v.as_str());
        }
        let id = id_of(&req.send().await.unwrap());
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{bad:?} -> {id:?}"
        );
        assert!(seen.insert(id), "ids repeat");
    }
    // A warning logged while handling a request (a wrong vault master key) names the request.
    let token = admin_token(s).await;
    let r = c
        .put(s.url("/v2/credentialvault/keys/private"))
        .bearer_auth(&token)
        .header("X-Request-Id", "wrongkey-91c2")
        .json(&json!({"privateKey": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(id_of(&r), "wrongkey-91c2");
    let logs = s.logs_once_they_contain("wrongkey-91c2", std::time::Duration::from_secs(5));
    let line = logs
        .lines()
        .find(|l| l.contains("wrong vault master key"))
        .unwrap_or_else(|| panic!("no wrong-key line in:\n{logs}"));
    assert!(line.contains("wrongkey-91c2"), "{line}");
}
