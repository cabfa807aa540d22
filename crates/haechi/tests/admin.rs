//! Haechi's own admin API (CONTRACT §7): users, roles, the caller, permissions, and the rule
//! that bad input is a 4xx naming the field and never changes stored state (CONTRACT §0).

mod common;

use common::*;
use serde_json::{json, Value};

fn user_url(s: &Server, user_id: &str) -> String {
    s.url(&format!("/api/v1/users/{}", enc(user_id)))
}

fn role_url(s: &Server, role: &str) -> String {
    s.url(&format!("/api/v1/roles/{}", enc(role)))
}

/// Creates a user as `token`; panics unless 201. Returns the created record.
async fn create_user(s: &Server, token: &str, body: Value) -> Value {
    let (st, created) = call(
        client()
            .post(s.url("/api/v1/users"))
            .bearer_auth(token)
            .json(&body),
    )
    .await;
    assert_eq!(st, 201, "create {body}: {created}");
    created
}

/// A new user with no roles; returns its user_id and password.
async fn plain_user(s: &Server, admin: &str) -> (String, String) {
    let user_id = unique("plain");
    let password = format!("pw-{}", unique("x"));
    create_user(
        s,
        admin,
        json!({"user_id": user_id, "name": "Plain User", "password": password}),
    )
    .await;
    (user_id, password)
}

async fn fetch_user(s: &Server, admin: &str, user_id: &str) -> (u16, Value) {
    call(client().get(user_url(s, user_id)).bearer_auth(admin)).await
}

/// Whether `user_id` can log in with `password` (MDRM login).
async fn can_login(s: &Server, user_id: &str, password: &str) -> bool {
    let (st, _) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": user_id, "pwd": password})),
    )
    .await;
    st == 200
}

/// How many users carry this (unique) name, straight from the database.
fn users_named(s: &Server, name: &str) -> i64 {
    s.sql(&format!(
        "SELECT COUNT(*) FROM users WHERE name = '{}'",
        name.replace('\'', "''")
    ))
    .parse()
    .unwrap()
}

fn assert_field_error(st: u16, body: &Value, field: &str, what: &str) {
    assert_eq!(st, 400, "{what}: {body}");
    assert_eq!(body["code"], "invalid_request", "{what}: {body}");
    assert_eq!(body["field"], field, "{what}: {body}");
    assert!(
        body["message"].as_str().unwrap().contains(field),
        "{what}: message must name {field}: {body}"
    );
}

// ---- users: create, read, list ---------------------------------------------------------------

#[tokio::test]
async fn create_user_is_201_with_numeric_id_and_get_returns_the_same() {
    let s = shared();
    let admin = admin_token(s).await;
    let user_id = unique("new");
    let created = create_user(
        s,
        &admin,
        json!({
            "user_id": user_id, "name": "New Person", "password": "new-person-pw", "kind": "api",
            "roles": ["Vault User", "Auditor"], "allowed_ips": ["10.1.2.3", "192.168.0.0/16"],
            "unknown_field": "ignored",
        }),
    )
    .await;
    assert!(created["id"].as_i64().is_some_and(|id| id > 0), "{created}");
    assert_eq!(created["user_id"], user_id);
    assert_eq!(created["name"], "New Person");
    assert_eq!(created["kind"], "api");
    let mut roles: Vec<&str> = created["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, ["Auditor", "Vault User"]);
    assert_eq!(
        created["allowed_ips"],
        json!(["10.1.2.3/32", "192.168.0.0/16"])
    );
    assert_eq!(created["disabled"], false);
    assert_eq!(created["locked"], false);
    let text = created.to_string();
    assert!(
        !text.contains("new-person-pw") && !text.contains("password"),
        "no password in a user: {created}"
    );

    let (st, got) = fetch_user(s, &admin, &user_id).await;
    assert_eq!(st, 200);
    assert_eq!(got, created, "GET must return what POST returned");

    // Kind defaults to human.
    let other = unique("dflt");
    let created = create_user(
        s,
        &admin,
        json!({"user_id": other, "name": "D", "password": "default-kind-pw"}),
    )
    .await;
    assert_eq!(created["kind"], "human");
    assert_eq!(created["roles"], json!([]));
    assert_eq!(created["allowed_ips"], json!([]));
}

#[tokio::test]
async fn list_users_pages_with_total() {
    let s = shared();
    let admin = admin_token(s).await;
    let mut mine = vec![];
    for _ in 0..3 {
        mine.push(plain_user(s, &admin).await.0);
    }
    let (st, all) = call(
        client()
            .get(s.url("/api/v1/users?limit=1000"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200, "{all}");
    let users = all["users"].as_array().unwrap();
    let total = all["total"].as_i64().unwrap();
    assert!(total >= 4 && total >= users.len() as i64, "{all}");
    for id in &mine {
        assert!(
            users.iter().any(|u| u["user_id"] == *id),
            "{id} missing from the list"
        );
    }
    let ids: Vec<i64> = users.iter().map(|u| u["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "users are ordered by id: {ids:?}"
    );

    // The default page is 100.
    let (st, page) = call(client().get(s.url("/api/v1/users")).bearer_auth(&admin)).await;
    assert_eq!(st, 200);
    assert_eq!(page["limit"], 100);
    assert_eq!(page["offset"], 0);
    assert!(page["users"].as_array().unwrap().len() <= 100);

    // admin is the first user; offset moves along the same order.
    let (_, first) = call(
        client()
            .get(s.url("/api/v1/users?limit=1"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(first["users"].as_array().unwrap().len(), 1);
    assert_eq!(first["users"][0]["user_id"], "admin");
    assert!(first["total"].as_i64().unwrap() >= total);
    let (_, two) = call(
        client()
            .get(s.url("/api/v1/users?limit=2&offset=0"))
            .bearer_auth(&admin),
    )
    .await;
    let (_, second) = call(
        client()
            .get(s.url("/api/v1/users?limit=1&offset=1"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(two["users"].as_array().unwrap().len(), 2);
    assert_eq!(
        second["users"][0]["id"], two["users"][1]["id"],
        "{second} vs {two}"
    );

    // Past the end: empty page, total still counted.
    let (st, past) = call(
        client()
            .get(s.url("/api/v1/users?offset=100000"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(past["users"], json!([]));
    assert!(past["total"].as_i64().unwrap() >= total);
}

#[tokio::test]
async fn list_users_paging_edge_cases() {
    let s = shared();
    let admin = admin_token(s).await;
    let (st, body) = call(
        client()
            .get(s.url("/api/v1/users?limit=0"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["users"], json!([]));
    assert!(body["total"].as_i64().unwrap() >= 1);
    let (st, body) = call(
        client()
            .get(s.url("/api/v1/users?limit=1000"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["limit"], 1000);

    for (query, param) in [
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-5", "offset"),
        ("offset=abc", "offset"),
        ("limit=10&offset=-1", "offset"),
    ] {
        let (st, body) = call(
            client()
                .get(s.url(&format!("/api/v1/users?{query}")))
                .bearer_auth(&admin),
        )
        .await;
        assert_field_error(st, &body, param, query);
    }
}

// ---- users: change, delete ------------------------------------------------------------------

#[tokio::test]
async fn patch_changes_each_field() {
    let s = shared();
    let admin = admin_token(s).await;
    let (id, password) = plain_user(s, &admin).await;
    let patch = |body: Value| {
        let url = user_url(s, &id);
        let admin = admin.clone();
        async move {
            let (st, got) = call(client().patch(url).bearer_auth(&admin).json(&body)).await;
            assert_eq!(st, 200, "PATCH {body}: {got}");
            got
        }
    };

    let got = patch(json!({"name": "Renamed Person"})).await;
    assert_eq!(got["name"], "Renamed Person");
    assert_eq!(fetch_user(s, &admin, &id).await.1["name"], "Renamed Person");

    let got = patch(json!({"roles": ["Vault User", "Task Approver"]})).await;
    let mut roles: Vec<String> = got["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    roles.sort();
    assert_eq!(roles, ["Task Approver", "Vault User"]);
    assert_eq!(fetch_user(s, &admin, &id).await.1["roles"], got["roles"]);
    assert_eq!(patch(json!({"roles": []})).await["roles"], json!([]));

    let got = patch(json!({"allowed_ips": ["127.0.0.1", "10.0.0.0/8"]})).await;
    assert_eq!(got["allowed_ips"], json!(["127.0.0.1/32", "10.0.0.0/8"]));
    assert_eq!(
        fetch_user(s, &admin, &id).await.1["allowed_ips"],
        got["allowed_ips"]
    );
    assert!(can_login(s, &id, &password).await, "127.0.0.1 is allowed");
    assert_eq!(
        patch(json!({"allowed_ips": []})).await["allowed_ips"],
        json!([])
    );

    let got = patch(json!({"disabled": true})).await;
    assert_eq!(got["disabled"], true);
    assert!(
        !can_login(s, &id, &password).await,
        "a disabled user cannot log in"
    );
    let got = patch(json!({"disabled": false})).await;
    assert_eq!(got["disabled"], false);
    assert!(can_login(s, &id, &password).await);

    patch(json!({"password": "patched-password-1"})).await;
    assert!(
        !can_login(s, &id, &password).await,
        "the old password must stop working"
    );
    assert!(can_login(s, &id, "patched-password-1").await);

    let got = patch(json!({"kind": "api"})).await;
    assert_eq!(got["kind"], "api");
    assert_eq!(fetch_user(s, &admin, &id).await.1["kind"], "api");
    assert_eq!(patch(json!({"kind": "human"})).await["kind"], "human");

    // An empty patch changes nothing.
    let before = fetch_user(s, &admin, &id).await.1;
    let got = patch(json!({})).await;
    assert_eq!(got["name"], before["name"]);
    assert_eq!(got["roles"], before["roles"]);
}

#[tokio::test]
async fn delete_user_is_204_then_404() {
    let s = shared();
    let admin = admin_token(s).await;
    let (id, password) = plain_user(s, &admin).await;
    let token = login(s, &id, &password).await;
    let (st, body) = call(client().delete(user_url(s, &id)).bearer_auth(&admin)).await;
    assert_eq!(st, 204, "{body}");
    assert_eq!(body, Value::Null);
    let (st, body) = fetch_user(s, &admin, &id).await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(body["code"], "not_found");
    let (st, _) = call(client().delete(user_url(s, &id)).bearer_auth(&admin)).await;
    assert_eq!(st, 404);
    assert!(!can_login(s, &id, &password).await);
    let (st, _) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
    assert_eq!(st, 401, "a deleted user's token must stop working");
}

#[tokio::test]
async fn unknown_user_is_404_on_every_user_route() {
    let s = shared();
    let admin = admin_token(s).await;
    let ghost = unique("ghost");
    let url = user_url(s, &ghost);
    for (what, req) in [
        ("GET", client().get(&url)),
        ("PATCH", client().patch(&url).json(&json!({"name": "x"}))),
        ("DELETE", client().delete(&url)),
        ("unlock", client().post(format!("{url}/unlock"))),
        ("disable", client().post(format!("{url}/disable"))),
        ("enable", client().post(format!("{url}/enable"))),
        (
            "password",
            client()
                .put(format!("{url}/password"))
                .json(&json!({"password": "long-enough-pw"})),
        ),
        (
            "roles",
            client()
                .put(format!("{url}/roles"))
                .json(&json!({"roles": []})),
        ),
        (
            "allowed-ips",
            client()
                .put(format!("{url}/allowed-ips"))
                .json(&json!({"allowed_ips": []})),
        ),
    ] {
        let (st, body) = call(req.bearer_auth(&admin)).await;
        assert_eq!(st, 404, "{what}: {body}");
        assert_eq!(body["code"], "not_found", "{what}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(&ghost),
            "{what}: {body}"
        );
    }
    let (st, _) = fetch_user(s, &admin, &ghost).await;
    assert_eq!(st, 404, "nothing was created on the way");
}

#[tokio::test]
async fn duplicate_user_id_is_409_and_keeps_the_original() {
    let s = shared();
    let admin = admin_token(s).await;
    let (id, password) = plain_user(s, &admin).await;
    let before = fetch_user(s, &admin, &id).await.1;
    let (st, body) = call(client().post(s.url("/api/v1/users")).bearer_auth(&admin).json(&json!({
        "user_id": id, "name": "Impostor", "password": "impostor-password", "roles": ["System Admin"]
    })))
    .await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["code"], "conflict");
    assert!(body["message"].as_str().unwrap().contains(&id), "{body}");
    assert_eq!(fetch_user(s, &admin, &id).await.1, before);
    assert!(can_login(s, &id, &password).await);
    assert!(!can_login(s, &id, "impostor-password").await);
    assert_eq!(users_named(s, "Impostor"), 0);
}

// ---- bad input ---------------------------------------------------------------------------------

#[tokio::test]
async fn bad_new_users_are_400_naming_the_field_and_create_nothing() {
    let s = shared();
    let admin = admin_token(s).await;
    let ok_pw = "good-password-1";
    // (case, body builder given (user_id, marker name), expected field)
    type Case = (&'static str, fn(&str, &str) -> Value, &'static str);
    let cases: Vec<Case> = vec![
        (
            "missing user_id",
            |_, n| json!({"name": n, "password": "good-password-1"}),
            "user_id",
        ),
        (
            "missing password",
            |u, n| json!({"user_id": u, "name": n}),
            "password",
        ),
        (
            "missing name",
            |u, _| json!({"user_id": u, "password": "good-password-1"}),
            "name",
        ),
        (
            "roles as a string",
            |u, n| json!({"user_id": u, "name": n, "password": "good-password-1", "roles": "Auditor"}),
            "roles",
        ),
        (
            "kind as a number",
            |u, n| json!({"user_id": u, "name": n, "password": "good-password-1", "kind": 5}),
            "kind",
        ),
        (
            "allowed_ips of numbers",
            |u, n| json!({"user_id": u, "name": n, "password": "good-password-1", "allowed_ips": [1]}),
            "allowed_ips[0]",
        ),
        (
            "user_id as a number",
            |_, n| json!({"user_id": 42, "name": n, "password": "good-password-1"}),
            "user_id",
        ),
        (
            "password as a number",
            |u, n| json!({"user_id": u, "name": n, "password": 12345678}),
            "password",
        ),
        (
            "unknown role",
            |u, n| json!({"user_id": u, "name": n, "password": "good-password-1", "roles": ["No Such Role"]}),
            "roles[0]",
        ),
        (
            "unknown second role",
            |u, n| json!({"user_id": u, "name": n, "password": "good-password-1", "roles": ["Auditor", "Nope"]}),
            "roles[1]",
        ),
        (
            "unknown kind",
            |u, n| json!({"user_id": u, "name": n, "password": "good-password-1", "kind": "robot"}),
            "kind",
        ),
        (
            "bad CIDR",
            |u, n| json!({"user_id": u, "name": n, "password": "good-password-1", "allowed_ips": ["10.0.0.0/33"]}),
            "allowed_ips[0]",
        ),
        (
            "bad address",
            |u, n| json!({"user_id": u, "name": n, "password": "good-password-1", "allowed_ips": ["10.0.0.300"]}),
            "allowed_ips[0]",
        ),
        (
            "second entry bad",
            |u, n| json!({"user_id": u, "name": n, "password": "good-password-1", "allowed_ips": ["10.0.0.0/8", "nope"]}),
            "allowed_ips[1]",
        ),
        (
            "short password",
            |u, n| json!({"user_id": u, "name": n, "password": "short"}),
            "password",
        ),
        (
            "empty password",
            |u, n| json!({"user_id": u, "name": n, "password": ""}),
            "password",
        ),
        (
            "user_id with @",
            |u, n| json!({"user_id": format!("{u}@corp"), "name": n, "password": "good-password-1"}),
            "user_id",
        ),
        (
            "user_id with a space",
            |u, n| json!({"user_id": format!("{u} x"), "name": n, "password": "good-password-1"}),
            "user_id",
        ),
        (
            "user_id with /",
            |u, n| json!({"user_id": format!("{u}/x"), "name": n, "password": "good-password-1"}),
            "user_id",
        ),
        (
            "user_id with a tab",
            |u, n| json!({"user_id": format!("{u}\tx"), "name": n, "password": "good-password-1"}),
            "user_id",
        ),
        (
            "empty user_id",
            |_, n| json!({"user_id": "", "name": n, "password": "good-password-1"}),
            "user_id",
        ),
        (
            "65-char user_id",
            |_, n| json!({"user_id": "a".repeat(65), "name": n, "password": "good-password-1"}),
            "user_id",
        ),
        (
            "empty name",
            |u, _| json!({"user_id": u, "name": "", "password": "good-password-1"}),
            "name",
        ),
    ];
    for (what, body, field) in cases {
        let user_id = unique("bad");
        let marker = unique("marker");
        let body = body(&user_id, &marker);
        let (st, resp) = call(
            client()
                .post(s.url("/api/v1/users"))
                .bearer_auth(&admin)
                .json(&body),
        )
        .await;
        assert_field_error(st, &resp, field, what);
        assert_eq!(
            fetch_user(s, &admin, &user_id).await.0,
            404,
            "{what}: the user must not exist"
        );
        assert_eq!(users_named(s, &marker), 0, "{what}: nothing may be stored");
    }

    // A name with a control character (the name itself is the bad part).
    let user_id = unique("ctl");
    let (st, resp) = call(
        client()
            .post(s.url("/api/v1/users"))
            .bearer_auth(&admin)
            .json(&json!({
                "user_id": user_id, "name": "bell\u{7}name", "password": ok_pw
            })),
    )
    .await;
    assert_field_error(st, &resp, "name", "control char in name");
    assert_eq!(fetch_user(s, &admin, &user_id).await.0, 404);

    // The limit itself: 64 characters is fine.
    let mut long_id = unique("l");
    while long_id.chars().count() < 64 {
        long_id.push('a');
    }
    create_user(
        s,
        &admin,
        json!({"user_id": long_id, "name": "Long", "password": ok_pw}),
    )
    .await;
    assert_eq!(fetch_user(s, &admin, &long_id).await.0, 200);
}

#[tokio::test]
async fn bad_bodies_are_rejected_by_kind_and_create_nothing() {
    let s = shared();
    let admin = admin_token(s).await;
    let users = s.url("/api/v1/users");

    // Malformed JSON.
    let id = unique("mal");
    let (st, body) = call(
        client()
            .post(&users)
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"user_id":"{id}","name":"x","password":"good-password-1""#
            )),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["code"], "malformed_body");
    assert!(body["message"].as_str().unwrap().contains("JSON"), "{body}");
    assert_eq!(fetch_user(s, &admin, &id).await.0, 404);

    // JSON with a charset parameter is accepted.
    let id = unique("cs");
    let (st, body) = call(
        client()
            .post(&users)
            .bearer_auth(&admin)
            .header("content-type", "application/json; charset=utf-8")
            .body(
                json!({"user_id": id, "name": "Charset", "password": "good-password-1"})
                    .to_string(),
            ),
    )
    .await;
    assert_eq!(st, 201, "{body}");

    // A valid JSON document sent as text/plain.
    let id = unique("txt");
    let (st, body) = call(
        client()
            .post(&users)
            .bearer_auth(&admin)
            .header("content-type", "text/plain")
            .body(json!({"user_id": id, "name": "x", "password": "good-password-1"}).to_string()),
    )
    .await;
    assert_eq!(st, 415, "{body}");
    assert_eq!(body["code"], "unsupported_media_type");
    assert_eq!(fetch_user(s, &admin, &id).await.0, 404);

    // 2 MiB (the default limit is 1 MiB).
    let id = unique("big");
    let big =
        json!({"user_id": id, "name": "x".repeat(2 * 1024 * 1024), "password": "good-password-1"});
    let (st, body) = call(client().post(&users).bearer_auth(&admin).json(&big)).await;
    assert_eq!(st, 413, "{body}");
    assert_eq!(body["code"], "payload_too_large");
    assert_eq!(fetch_user(s, &admin, &id).await.0, 404);

    // No body at all.
    let (st, body) = call(client().post(&users).bearer_auth(&admin)).await;
    assert_eq!(st, 400, "{body}");
    assert!(
        body["message"].is_string() && body["code"].is_string(),
        "{body}"
    );
    let (st, body) = call(
        client()
            .post(&users)
            .bearer_auth(&admin)
            .header("content-type", "application/json"),
    )
    .await;
    assert_eq!(st, 400, "{body}");

    // A JSON value that is not an object.
    let (st, body) = call(
        client()
            .post(&users)
            .bearer_auth(&admin)
            .json(&json!(["admin"])),
    )
    .await;
    assert_eq!(st, 400, "{body}");
}

#[tokio::test]
async fn bad_patches_are_400_and_change_nothing() {
    let s = shared();
    let admin = admin_token(s).await;
    let (id, password) = plain_user(s, &admin).await;
    let before = fetch_user(s, &admin, &id).await.1;
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            "control char in name",
            json!({"name": "a\u{1b}b"}),
            Some("name"),
        ),
        ("empty name", json!({"name": "  "}), Some("name")),
        ("name as a number", json!({"name": 7}), Some("name")),
        (
            "unknown role",
            json!({"roles": ["No Such Role"]}),
            Some("roles[0]"),
        ),
        (
            "roles as a string",
            json!({"roles": "Auditor"}),
            Some("roles"),
        ),
        (
            "bad CIDR",
            json!({"allowed_ips": ["300.1.1.1/8"]}),
            Some("allowed_ips[0]"),
        ),
        (
            "allowed_ips of numbers",
            json!({"allowed_ips": [1]}),
            Some("allowed_ips[0]"),
        ),
        (
            "disabled as a string",
            json!({"disabled": "yes"}),
            Some("disabled"),
        ),
        (
            "short password",
            json!({"password": "short"}),
            Some("password"),
        ),
        ("unknown kind", json!({"kind": "robot"}), Some("kind")),
        ("kind as a number", json!({"kind": 5}), Some("kind")),
        // A good change next to a bad one: the whole patch is refused.
        (
            "good name, bad role",
            json!({"name": "Should Not Stick", "roles": ["Nope"]}),
            Some("roles[0]"),
        ),
        (
            "good roles, bad ips",
            json!({"roles": ["Auditor"], "allowed_ips": ["bad"]}),
            Some("allowed_ips[0]"),
        ),
        (
            "good password, bad role",
            json!({"password": "should-not-stick", "roles": ["Nope"]}),
            Some("roles[0]"),
        ),
        (
            "disable, bad name",
            json!({"disabled": true, "name": "x\u{0}"}),
            Some("name"),
        ),
    ];
    for (what, body, field) in cases {
        let (st, resp) = call(
            client()
                .patch(user_url(s, &id))
                .bearer_auth(&admin)
                .json(&body),
        )
        .await;
        match field {
            Some(f) => assert_field_error(st, &resp, f, what),
            None => assert_eq!(st, 400, "{what}: {resp}"),
        }
        assert_eq!(
            fetch_user(s, &admin, &id).await.1,
            before,
            "{what}: the user must be unchanged"
        );
    }
    let (st, resp) = call(
        client()
            .patch(user_url(s, &id))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body("{\"name\":"),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(resp["code"], "malformed_body");
    assert_eq!(fetch_user(s, &admin, &id).await.1, before);
    assert!(
        can_login(s, &id, &password).await,
        "the password must be unchanged"
    );
    assert!(!can_login(s, &id, "should-not-stick").await);
}

#[tokio::test]
async fn sql_metacharacters_and_korean_round_trip_intact() {
    let s = shared();
    let admin = admin_token(s).await;
    let role_name = format!("감사 \"역할\" \\ 'r' {}", unique(""));
    let description = "설명: it's \"quoted\", back\\slash\\, 100% _like_; DROP TABLE roles;--";
    let (st, role) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(&admin)
            .json(&json!({
                "name": role_name, "description": description, "permissions": ["vault.use"]
            })),
    )
    .await;
    assert_eq!(st, 201, "{role}");
    assert_eq!(role["name"], role_name);
    assert_eq!(role["description"], description);
    let (st, by_name) = call(client().get(role_url(s, &role_name)).bearer_auth(&admin)).await;
    assert_eq!(st, 200, "{by_name}");
    assert_eq!(by_name, role);

    let user_id = format!("김'\";--x{}", unique(""));
    let name = "김철수'; DROP TABLE users;--";
    let password = "비밀'번호\"; --\\ 1";
    let created = create_user(
        s,
        &admin,
        json!({"user_id": user_id, "name": name, "password": password, "roles": [role_name], "allowed_ips": ["127.0.0.1"]}),
    )
    .await;
    assert_eq!(created["user_id"], user_id);
    assert_eq!(created["name"], name);
    assert_eq!(created["roles"], json!([role_name]));
    assert_eq!(created["allowed_ips"], json!(["127.0.0.1/32"]));
    let (st, got) = fetch_user(s, &admin, &user_id).await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(got, created);

    // The name is stored as given, not escaped or cut.
    assert_eq!(users_named(s, name), 1);

    // The password round-trips too: the user logs in with it and sees itself.
    let token = login(s, &user_id, password).await;
    let (st, me) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
    assert_eq!(st, 200, "{me}");
    assert_eq!(me["user_id"], user_id);
    assert_eq!(me["name"], name);
    assert_eq!(me["roles"][0]["name"], role_name);

    // PATCH with more of the same.
    let new_name = "이영희 \"O'Brien\" \\ %_ -- /* */";
    let (st, got) = call(
        client()
            .patch(user_url(s, &user_id))
            .bearer_auth(&admin)
            .json(&json!({"name": new_name})),
    )
    .await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(fetch_user(s, &admin, &user_id).await.1["name"], new_name);

    // The tables are still there and the list shows the user exactly.
    let (st, list) = call(
        client()
            .get(s.url("/api/v1/users?limit=1000"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200);
    let listed = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == user_id)
        .cloned();
    assert_eq!(listed.expect("listed")["name"], new_name);
    let (st, roles) = call(client().get(s.url("/api/v1/roles")).bearer_auth(&admin)).await;
    assert_eq!(st, 200);
    assert!(roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == role_name && r["description"] == description));
}

// ---- permissions ------------------------------------------------------------------------------

#[tokio::test]
async fn users_without_admin_rights_get_403_and_change_nothing() {
    let s = shared();
    let admin = admin_token(s).await;
    let (victim, victim_pw) = plain_user(s, &admin).await;
    let victim_before = fetch_user(s, &admin, &victim).await.1;
    let custom = unique("cr");
    let (st, _) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(&admin)
            .json(&json!({
                "name": custom, "permissions": ["vault.use"]
            })),
    )
    .await;
    assert_eq!(st, 201);
    for roles in [vec![], vec!["Auditor"]] {
        let (caller, _, token) = user_with_roles(s, &roles).await;
        let new_id = unique("nope");
        let new_role = unique("nrole");
        for (what, req) in [
            ("list users", client().get(s.url("/api/v1/users"))),
            (
                "create user",
                client()
                    .post(s.url("/api/v1/users"))
                    .json(&json!({"user_id": new_id, "name": "N", "password": "good-password-1"})),
            ),
            (
                "patch user",
                client()
                    .patch(user_url(s, &victim))
                    .json(&json!({"name": "Pwned", "roles": ["System Admin"]})),
            ),
            (
                "patch self to admin",
                client()
                    .patch(user_url(s, &caller))
                    .json(&json!({"roles": ["System Admin"]})),
            ),
            ("delete user", client().delete(user_url(s, &victim))),
            (
                "disable user",
                client().post(format!("{}/disable", user_url(s, &victim))),
            ),
            (
                "unlock user",
                client().post(format!("{}/unlock", user_url(s, &victim))),
            ),
            (
                "set roles",
                client()
                    .put(format!("{}/roles", user_url(s, &caller)))
                    .json(&json!({"roles": ["System Admin"]})),
            ),
            (
                "create role",
                client()
                    .post(s.url("/api/v1/roles"))
                    .json(&json!({"name": new_role, "permissions": ["admin.users"]})),
            ),
            (
                "patch role",
                client()
                    .patch(role_url(s, &custom))
                    .json(&json!({"permissions": ["admin.users"]})),
            ),
            ("delete role", client().delete(role_url(s, &custom))),
        ] {
            let (st, body) = call(req.bearer_auth(&token)).await;
            assert_eq!(st, 403, "{roles:?} {what}: {body}");
            assert_eq!(body["code"], "forbidden", "{roles:?} {what}: {body}");
            assert!(
                body["message"].as_str().unwrap().contains("admin.users"),
                "{body}"
            );
        }
        assert_eq!(
            fetch_user(s, &admin, &new_id).await.0,
            404,
            "no user created"
        );
        assert_eq!(
            call(client().get(role_url(s, &new_role)).bearer_auth(&admin))
                .await
                .0,
            404,
            "no role created"
        );
        assert_eq!(
            fetch_user(s, &admin, &victim).await.1,
            victim_before,
            "victim unchanged"
        );
        let (_, me) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
        assert!(
            !me["permissions"]
                .as_array()
                .unwrap()
                .contains(&json!("admin.users")),
            "no escalation: {me}"
        );
        let (_, role) = call(client().get(role_url(s, &custom)).bearer_auth(&admin)).await;
        assert_eq!(role["permissions"], json!(["vault.use"]));
    }
    assert!(can_login(s, &victim, &victim_pw).await);
}

#[tokio::test]
async fn a_user_reads_their_own_record_but_no_one_elses() {
    let s = shared();
    let admin = admin_token(s).await;
    let (me, _, token) = user_with_roles(s, &["Vault User"]).await;
    let (other, _) = plain_user(s, &admin).await;
    let (st, body) = call(client().get(user_url(s, &me)).bearer_auth(&token)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["user_id"], me);
    assert_eq!(body["roles"], json!(["Vault User"]));
    for target in [other.as_str(), "admin", &unique("ghost")] {
        let (st, body) = call(client().get(user_url(s, target)).bearer_auth(&token)).await;
        assert_eq!(st, 403, "{target}: {body}");
        assert_eq!(body["code"], "forbidden");
        assert!(
            !body.to_string().contains("Plain User"),
            "no data of another user: {body}"
        );
    }
}

#[tokio::test]
async fn me_shows_identity_roles_and_permissions() {
    let s = shared();
    let admin = admin_token(s).await;
    let (user_id, _, token) = user_with_roles(s, &["Auditor", "Vault User"]).await;
    let (st, me) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
    assert_eq!(st, 200, "{me}");
    let record = fetch_user(s, &admin, &user_id).await.1;
    assert_eq!(me["id"], record["id"]);
    assert!(me["id"].is_i64());
    assert_eq!(me["user_id"], user_id);
    let (_, roles) = call(client().get(s.url("/api/v1/roles")).bearer_auth(&token)).await;
    let id_of = |name: &str| {
        roles["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["id"]
            .clone()
    };
    let mut mine: Vec<(String, Value)> = me["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(
                r.as_object().unwrap().len(),
                2,
                "a role is {{id, name}}: {r}"
            );
            (r["name"].as_str().unwrap().to_owned(), r["id"].clone())
        })
        .collect();
    mine.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        mine,
        vec![
            ("Auditor".to_owned(), id_of("Auditor")),
            ("Vault User".to_owned(), id_of("Vault User"))
        ]
    );
    let mut perms: Vec<&str> = me["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    perms.sort();
    assert_eq!(perms, ["audit.read", "vault.use"]);

    let (_, me) = call(client().get(s.url("/api/v1/me")).bearer_auth(&admin)).await;
    assert_eq!(me["user_id"], "admin");
    let perms = me["permissions"].as_array().unwrap();
    assert!(perms.contains(&json!("admin.users")));
    assert!(
        !perms.contains(&json!("audit.read")),
        "System Admin does not read the audit: {me}"
    );
    assert_eq!(me["roles"][0]["name"], "System Admin");

    let (st, body) = call(client().get(s.url("/api/v1/me"))).await;
    assert_eq!(st, 401, "{body}");
}

// ---- roles ------------------------------------------------------------------------------------

const BUILTIN: [&str; 8] = [
    "System Admin",
    "Workflow Operator",
    "Task Developer",
    "Task Approver",
    "DB Policy Admin",
    "Vault User",
    "Locker Admin",
    "Auditor",
];

#[tokio::test]
async fn roles_list_the_built_in_roles_with_numeric_ids() {
    let s = shared();
    // Any authenticated user may list roles (vault lockers name consumers by role id).
    let (_, _, token) = user_with_roles(s, &[]).await;
    let (st, body) = call(client().get(s.url("/api/v1/roles")).bearer_auth(&token)).await;
    assert_eq!(st, 200, "{body}");
    let roles = body["roles"].as_array().unwrap();
    for name in BUILTIN {
        let r = roles
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {body}"));
        assert!(r["id"].as_i64().is_some_and(|id| id > 0), "{r}");
        assert_eq!(r["builtin"], true, "{r}");
        assert!(r["permissions"].is_array());
    }
    let auditor = roles.iter().find(|r| r["name"] == "Auditor").unwrap();
    assert_eq!(auditor["permissions"], json!(["audit.read"]));
    let ids: std::collections::HashSet<i64> =
        roles.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), roles.len(), "role ids are unique");
    let (st, _) = call(client().get(s.url("/api/v1/roles"))).await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn custom_role_lifecycle() {
    let s = shared();
    let admin = admin_token(s).await;
    let name = unique("Role ");
    let (st, role) = call(client().post(s.url("/api/v1/roles")).bearer_auth(&admin).json(&json!({
        "name": name, "description": "reads workflows", "permissions": ["workflow.view", "node.view", "workflow.view"]
    })))
    .await;
    assert_eq!(st, 201, "{role}");
    let id = role["id"].as_i64().expect("numeric id");
    assert_eq!(role["name"], name);
    assert_eq!(role["builtin"], false);
    let mut perms: Vec<&str> = role["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    perms.sort();
    assert_eq!(perms, ["node.view", "workflow.view"]);

    let (st, by_id) = call(
        client()
            .get(role_url(s, &id.to_string()))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200);
    let (st, by_name) = call(client().get(role_url(s, &name)).bearer_auth(&admin)).await;
    assert_eq!(st, 200);
    assert_eq!(by_id, role);
    assert_eq!(by_name, role);
    let (_, list) = call(client().get(s.url("/api/v1/roles")).bearer_auth(&admin)).await;
    assert!(list["roles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == id));

    let (st, body) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(&admin)
            .json(&json!({
                "name": name, "permissions": ["audit.read"]
            })),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["code"], "conflict");
    assert_eq!(
        call(client().get(role_url(s, &name)).bearer_auth(&admin))
            .await
            .1,
        role,
        "duplicate changed nothing"
    );

    let (st, patched) = call(
        client()
            .patch(role_url(s, &name))
            .bearer_auth(&admin)
            .json(&json!({
                "description": "new words", "permissions": ["vault.use"]
            })),
    )
    .await;
    assert_eq!(st, 200, "{patched}");
    assert_eq!(patched["description"], "new words");
    assert_eq!(patched["permissions"], json!(["vault.use"]));
    assert_eq!(patched["id"], id);

    let (st, body) = call(client().delete(role_url(s, &name)).bearer_auth(&admin)).await;
    assert_eq!(st, 204, "{body}");
    for key in [id.to_string(), name.clone()] {
        let (st, body) = call(client().get(role_url(s, &key)).bearer_auth(&admin)).await;
        assert_eq!(st, 404, "{key}: {body}");
        assert_eq!(body["code"], "not_found");
    }
    let (st, _) = call(client().delete(role_url(s, &name)).bearer_auth(&admin)).await;
    assert_eq!(st, 404);
    let (st, _) = call(client().get(role_url(s, "999999999")).bearer_auth(&admin)).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn bad_roles_are_400_naming_the_field_and_create_nothing() {
    let s = shared();
    let admin = admin_token(s).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown permission",
            json!({"permissions": ["audit.destroy"]}),
            "permissions[0]",
        ),
        (
            "second permission unknown",
            json!({"permissions": ["audit.read", "nope"]}),
            "permissions[1]",
        ),
        ("permissions missing", json!({}), "permissions"),
        (
            "permissions as a string",
            json!({"permissions": "audit.read"}),
            "permissions",
        ),
        (
            "description with a control char",
            json!({"permissions": [], "description": "a\u{7}"}),
            "description",
        ),
    ];
    for (what, mut body, field) in cases {
        let name = unique("badrole");
        body["name"] = json!(name);
        let (st, resp) = call(
            client()
                .post(s.url("/api/v1/roles"))
                .bearer_auth(&admin)
                .json(&body),
        )
        .await;
        assert_field_error(st, &resp, field, what);
        if what.starts_with("unknown") {
            assert!(
                resp["message"].as_str().unwrap().contains("audit.read"),
                "lists the known ones: {resp}"
            );
        }
        assert_eq!(
            call(client().get(role_url(s, &name)).bearer_auth(&admin))
                .await
                .0,
            404,
            "{what}"
        );
    }
    for (what, name) in [
        ("numeric name", "12345"),
        ("negative numeric name", "-7"),
        ("empty name", ""),
    ] {
        let (st, resp) = call(
            client()
                .post(s.url("/api/v1/roles"))
                .bearer_auth(&admin)
                .json(&json!({
                    "name": name, "permissions": ["audit.read"]
                })),
        )
        .await;
        assert_field_error(st, &resp, "name", what);
    }
    let (_, list) = call(client().get(s.url("/api/v1/roles")).bearer_auth(&admin)).await;
    assert!(!list["roles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "12345" || r["name"] == ""));
    let (st, resp) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(&admin)
            .json(&json!({"permissions": []})),
    )
    .await;
    assert_field_error(st, &resp, "name", "missing name");
}

#[tokio::test]
async fn built_in_roles_cannot_be_changed_or_deleted() {
    let s = shared();
    let admin = admin_token(s).await;
    let (_, list) = call(client().get(s.url("/api/v1/roles")).bearer_auth(&admin)).await;
    let before = list["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "Auditor")
        .unwrap()
        .clone();
    let id = before["id"].as_i64().unwrap().to_string();
    for key in ["Auditor", id.as_str()] {
        let (st, body) = call(
            client()
                .patch(role_url(s, key))
                .bearer_auth(&admin)
                .json(&json!({
                    "permissions": ["admin.users"], "name": "Renamed"
                })),
        )
        .await;
        assert_eq!(st, 409, "{key}: {body}");
        assert_eq!(body["code"], "conflict");
        let (st, body) = call(client().delete(role_url(s, key)).bearer_auth(&admin)).await;
        assert_eq!(st, 409, "{key}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("built-in"),
            "{body}"
        );
    }
    let (st, after) = call(client().get(role_url(s, "Auditor")).bearer_auth(&admin)).await;
    assert_eq!(st, 200);
    assert_eq!(after, before);
    for key in ["System Admin", "Vault User"] {
        let (st, _) = call(client().delete(role_url(s, key)).bearer_auth(&admin)).await;
        assert_eq!(st, 409, "{key}");
    }
}

#[tokio::test]
async fn a_roles_permissions_apply_to_its_users() {
    let s = shared();
    let admin = admin_token(s).await;
    let role = unique("Readers ");
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(&admin)
            .json(&json!({
                "name": role, "permissions": ["audit.read"]
            })),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let audit = s.url("/api/v1/audit?limit=1");

    let (reader, _, reader_token) = user_with_roles(s, &[&role]).await;
    let (st, body) = call(client().get(&audit).bearer_auth(&reader_token)).await;
    assert_eq!(st, 200, "the custom role grants audit.read: {body}");
    assert!(body["events"].is_array());

    // Granting the role to an existing user applies to the token they already hold.
    let (other, _, other_token) = user_with_roles(s, &[]).await;
    assert_eq!(
        call(client().get(&audit).bearer_auth(&other_token)).await.0,
        403
    );
    let (st, _) = call(
        client()
            .patch(user_url(s, &other))
            .bearer_auth(&admin)
            .json(&json!({"roles": [role]})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        call(client().get(&audit).bearer_auth(&other_token)).await.0,
        200,
        "new role applies at once"
    );

    // Changing the role's permissions applies to its users at once.
    let (st, _) = call(
        client()
            .patch(role_url(s, &role))
            .bearer_auth(&admin)
            .json(&json!({"permissions": ["vault.use"]})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, body) = call(client().get(&audit).bearer_auth(&reader_token)).await;
    assert_eq!(st, 403, "permission taken away from the role: {body}");

    // Deleting the role takes it off its users.
    let (st, _) = call(client().delete(role_url(s, &role)).bearer_auth(&admin)).await;
    assert_eq!(st, 204);
    assert_eq!(fetch_user(s, &admin, &reader).await.1["roles"], json!([]));
    let (_, me) = call(client().get(s.url("/api/v1/me")).bearer_auth(&reader_token)).await;
    assert_eq!(me["roles"], json!([]), "{me}");
}

// ---- self-protection and passwords ----------------------------------------------------------

#[tokio::test]
async fn the_last_enabled_system_admin_is_protected() {
    // Its own server: this test needs to know exactly who is System Admin.
    let s = Server::start();
    let admin = admin_token(&s).await;
    let me = user_url(&s, "admin");

    // A disabled System Admin does not count.
    let dormant = unique("dormant");
    create_user(&s, &admin, json!({"user_id": dormant, "name": "D", "password": "dormant-pw-1", "roles": ["System Admin"]})).await;
    let (st, _) = call(
        client()
            .patch(user_url(&s, &dormant))
            .bearer_auth(&admin)
            .json(&json!({"disabled": true})),
    )
    .await;
    assert_eq!(st, 200, "another enabled admin (admin) remains");

    let before = fetch_user(&s, &admin, "admin").await.1;
    for (what, req) in [
        (
            "disable self",
            client().patch(&me).json(&json!({"disabled": true})),
        ),
        (
            "disable self (route)",
            client().post(format!("{me}/disable")),
        ),
        ("delete self", client().delete(&me)),
    ] {
        let (st, body) = call(req.bearer_auth(&admin)).await;
        assert_eq!(st, 409, "{what}: {body}");
        assert_eq!(body["code"], "conflict", "{what}");
        assert!(body["message"].is_string());
    }
    // Nobody changes their own roles (issue 18 item 6), the last admin included.
    for (what, req) in [
        (
            "drop own System Admin",
            client().patch(&me).json(&json!({"roles": ["Auditor"]})),
        ),
        (
            "drop all own roles",
            client().patch(&me).json(&json!({"roles": []})),
        ),
        (
            "drop own System Admin (route)",
            client()
                .put(format!("{me}/roles"))
                .json(&json!({"roles": []})),
        ),
    ] {
        let (st, body) = call(req.bearer_auth(&admin)).await;
        assert_eq!(st, 403, "{what}: {body}");
        assert_eq!(body["code"], "forbidden", "{what}");
        assert!(body["message"].is_string());
    }
    assert_eq!(
        fetch_user(&s, &admin, "admin").await.1,
        before,
        "admin unchanged"
    );
    assert_eq!(
        call(client().get(s.url("/api/v1/users")).bearer_auth(&admin))
            .await
            .0,
        200,
        "admin still works"
    );

    // With a second enabled System Admin, admin may be stepped down (by the other admin), but
    // still not delete itself.
    let second = unique("second");
    create_user(&s, &admin, json!({"user_id": second, "name": "S", "password": "second-pw-1", "roles": ["System Admin"]})).await;
    let (st, body) = call(client().delete(&me).bearer_auth(&admin)).await;
    assert_eq!(st, 409, "nobody deletes their own account: {body}");
    let second_token = login(&s, &second, "second-pw-1").await;
    let (st, body) = call(
        client()
            .patch(&me)
            .bearer_auth(&second_token)
            .json(&json!({"roles": ["Auditor"]})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = call(
        client()
            .patch(user_url(&s, &second))
            .bearer_auth(&second_token)
            .json(&json!({"disabled": true})),
    )
    .await;
    assert_eq!(
        st, 409,
        "second is now the last enabled System Admin: {body}"
    );
    let (st, body) = call(
        client()
            .delete(user_url(&s, &second))
            .bearer_auth(&second_token),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    // Re-enabling the dormant admin lifts the protection.
    let (st, _) = call(
        client()
            .patch(user_url(&s, &dormant))
            .bearer_auth(&second_token)
            .json(&json!({"disabled": false})),
    )
    .await;
    assert_eq!(st, 200);
    let dormant_token = login(&s, &dormant, "dormant-pw-1").await;
    let (st, body) = call(
        client()
            .patch(user_url(&s, &second))
            .bearer_auth(&dormant_token)
            .json(&json!({"roles": []})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    s.finish().await;
}

#[tokio::test]
async fn changing_your_own_password_needs_the_current_one() {
    let s = shared();
    let admin = admin_token(s).await;
    let (me, old, token) = user_with_roles(s, &["Vault User"]).await;
    let url = format!("{}/password", user_url(s, &me));

    let (st, body) = call(
        client()
            .put(&url)
            .bearer_auth(&token)
            .json(&json!({"password": "brand-new-pw-1"})),
    )
    .await;
    assert_field_error(st, &body, "current_password", "no current password");
    let (st, body) = call(client().put(&url).bearer_auth(&token).json(&json!({
        "password": "brand-new-pw-1", "current_password": "not-my-password"
    })))
    .await;
    assert_field_error(st, &body, "current_password", "wrong current password");
    let (st, body) = call(
        client()
            .put(&url)
            .bearer_auth(&token)
            .json(&json!({"password": "short", "current_password": old})),
    )
    .await;
    assert_field_error(st, &body, "password", "short new password");
    assert!(can_login(s, &me, &old).await, "nothing changed yet");
    assert!(!can_login(s, &me, "brand-new-pw-1").await);

    let (st, body) = call(client().put(&url).bearer_auth(&token).json(&json!({
        "password": "brand-new-pw-1", "current_password": old
    })))
    .await;
    assert_eq!(st, 204, "{body}");
    assert!(!can_login(s, &me, &old).await);
    assert!(can_login(s, &me, "brand-new-pw-1").await);

    // Nobody without admin.users changes someone else's password, even knowing it.
    let (other, other_pw) = plain_user(s, &admin).await;
    let token = login(s, &me, "brand-new-pw-1").await;
    let (st, body) = call(
        client()
            .put(format!("{}/password", user_url(s, &other)))
            .bearer_auth(&token)
            .json(&json!({
                "password": "hijacked-pw-1", "current_password": other_pw
            })),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    assert!(can_login(s, &other, &other_pw).await);
    assert!(!can_login(s, &other, "hijacked-pw-1").await);
}

// ---- separation of duties (issue 18 item 6) ---------------------------------------------------

/// Nobody changes their own roles, no account may hold both `admin.users` and `audit.read`
/// (whatever roles carry them), and nobody changes the permissions of a role they hold.
#[tokio::test]
async fn separation_of_duties_cannot_be_granted_to_oneself() {
    let s = shared();
    let admin = admin_token(s).await;
    // A System Admin of our own, so the shared `admin` is never changed.
    let boss = unique("boss");
    create_user(s, &admin, json!({"user_id": boss, "name": "B", "password": "boss-password-1", "roles": ["System Admin"]})).await;
    let boss_token = login(s, &boss, "boss-password-1").await;
    let me = user_url(s, &boss);
    let before = fetch_user(s, &admin, &boss).await.1;

    let refused = |what: &'static str, (st, body): (u16, Value)| {
        assert_eq!(st, 403, "{what}: {body}");
        assert_eq!(body["code"], "forbidden", "{what}: {body}");
    };
    refused(
        "add Auditor to oneself",
        call(
            client()
                .patch(&me)
                .bearer_auth(&boss_token)
                .json(&json!({"roles": ["System Admin", "Auditor"]})),
        )
        .await,
    );
    refused(
        "add Auditor to oneself (route)",
        call(
            client()
                .put(format!("{me}/roles"))
                .bearer_auth(&boss_token)
                .json(&json!({"roles": ["System Admin", "Auditor"]})),
        )
        .await,
    );
    refused(
        "add a harmless role to oneself",
        call(
            client()
                .patch(&me)
                .bearer_auth(&boss_token)
                .json(&json!({"roles": ["System Admin", "Vault User"]})),
        )
        .await,
    );
    // A custom role that carries audit.read counts as well as `Auditor`.
    let readers = unique("Readers ");
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(&admin)
            .json(&json!({"name": readers, "permissions": ["audit.read", "node.view"]})),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    // Another admin may not make boss an admin who reads the audit either.
    refused(
        "give a System Admin the Auditor role",
        call(
            client()
                .put(format!("{me}/roles"))
                .bearer_auth(&admin)
                .json(&json!({"roles": ["System Admin", "Auditor"]})),
        )
        .await,
    );
    refused(
        "give a System Admin a role holding audit.read",
        call(
            client()
                .patch(&me)
                .bearer_auth(&admin)
                .json(&json!({"roles": ["System Admin", readers]})),
        )
        .await,
    );
    assert_eq!(
        fetch_user(s, &admin, &boss).await.1,
        before,
        "boss unchanged"
    );
    let (st, _) = call(
        client()
            .get(s.url("/api/v1/audit?limit=1"))
            .bearer_auth(&boss_token),
    )
    .await;
    assert_eq!(st, 403, "boss still cannot read the audit");

    // Neither at creation, nor in one role.
    let both = unique("both");
    refused(
        "create a user who holds both",
        call(client().post(s.url("/api/v1/users")).bearer_auth(&admin).json(&json!({"user_id": both, "name": "x", "password": "both-password-1", "roles": ["System Admin", "Auditor"]}))).await,
    );
    assert_eq!(fetch_user(s, &admin, &both).await.0, 404);
    refused(
        "create a role holding both",
        call(
            client()
                .post(s.url("/api/v1/roles"))
                .bearer_auth(&admin)
                .json(
                    &json!({"name": unique("Both "), "permissions": ["admin.users", "audit.read"]}),
                ),
        )
        .await,
    );

    // Editing a role: not one you hold, and not so that a holder would hold both.
    let helpers = unique("Helpers ");
    let (st, body) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(&admin)
            .json(&json!({"name": helpers, "permissions": ["vault.use"]})),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(
        client()
            .put(format!("{me}/roles"))
            .bearer_auth(&admin)
            .json(&json!({"roles": ["System Admin", helpers]})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let boss_token = login(s, &boss, "boss-password-1").await;
    refused(
        "add audit.read to a role one holds",
        call(
            client()
                .patch(role_url(s, &helpers))
                .bearer_auth(&boss_token)
                .json(&json!({"permissions": ["vault.use", "audit.read"]})),
        )
        .await,
    );
    refused(
        "add node.view to a role one holds",
        call(
            client()
                .patch(role_url(s, &helpers))
                .bearer_auth(&boss_token)
                .json(&json!({"permissions": ["vault.use", "node.view"]})),
        )
        .await,
    );
    refused(
        "add audit.read to a role a System Admin holds",
        call(
            client()
                .patch(role_url(s, &helpers))
                .bearer_auth(&admin)
                .json(&json!({"permissions": ["vault.use", "audit.read"]})),
        )
        .await,
    );
    let (st, role) = call(client().get(role_url(s, &helpers)).bearer_auth(&admin)).await;
    assert_eq!(st, 200);
    assert_eq!(role["permissions"], json!(["vault.use"]), "{role}");

    // What stays allowed: another admin grants the Auditor role to someone who manages nobody.
    let (plain, _) = plain_user(s, &admin).await;
    let (st, body) = call(
        client()
            .put(format!("{}/roles", user_url(s, &plain)))
            .bearer_auth(&boss_token)
            .json(&json!({"roles": ["Auditor"]})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
}

// ---- state files (issue 18 item 12) ---------------------------------------------------------

/// Every file of the data directory that holds state or keys is 0600 (the public certificate
/// aside), also when the operator made the directory 0755 and the umask is 022.
#[tokio::test]
async fn state_files_are_private_whatever_the_directory_mode() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pg_name = format!("haechi_t_modes_{}", std::process::id());
    let db = match &shared().db {
        Db::Sqlite(_) => Db::Sqlite(dir.join("haechi.db")),
        Db::Postgres(url) => {
            shared().sql(&format!("CREATE DATABASE {pg_name}"));
            let base = url.rsplit_once('/').unwrap().0;
            Db::Postgres(format!("{base}/{pg_name}"))
        }
    };
    let s = Server::start_with(Opts {
        reuse: Some((dir.clone(), db.clone())),
        ..Default::default()
    });
    // Some writes, so SQLite's WAL and shared-memory files exist.
    let admin = admin_token(&s).await;
    plain_user(&s, &admin).await;
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
        .collect();
    if matches!(db, Db::Sqlite(_)) {
        for needed in ["haechi.db", "haechi.db-wal", "haechi.db-shm"] {
            assert!(names.iter().any(|n| n == needed), "{needed} in {names:?}");
        }
    }
    assert!(names.iter().any(|n| n == "tls/key.pem"), "{names:?}");
    for (p, name) in files.iter().zip(&names) {
        if name == "tls/cert.pem" {
            continue;
        }
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{name} is {mode:o}");
    }
    s.finish().await;
    if matches!(db, Db::Postgres(_)) {
        shared().sql(&format!("DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"));
    }
}

// ---- a user's live tokens, seen and revoked by an admin ------------------------------------

#[tokio::test]
async fn an_admin_lists_and_revokes_one_token_of_a_user() {
    let s = shared();
    let admin = admin_token(s).await;
    let (user_id, password) = plain_user(s, &admin).await;
    let first = login(s, &user_id, &password).await;
    let second = login(s, &user_id, &password).await;
    let url = format!("{}/tokens", user_url(s, &user_id));
    let me = move |t: &str| {
        let t = t.to_owned();
        async move {
            call(client().get(s.url("/api/v1/me")).bearer_auth(t))
                .await
                .0
        }
    };
    let (st, body) = call(client().get(&url).bearer_auth(&admin)).await;
    assert_eq!(st, 200, "{body}");
    let tokens = body["tokens"].as_array().unwrap().clone();
    assert_eq!(tokens.len(), 2, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains(&first) && !text.contains(&second),
        "token values are never listed: {body}"
    );
    assert!(tokens.iter().all(|t| t["current"] == false), "{body}");

    // Unknown ids, another user's token, an unknown user: refused, nothing revoked.
    // A token id that is not a number names no token (as `DELETE /api/v1/tokens/{id}`).
    let (st, body) = call(client().delete(format!("{url}/abc")).bearer_auth(&admin)).await;
    assert_eq!(st, 404, "{body}");
    let (st, _) = call(
        client()
            .delete(format!("{url}/999999999"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 404);
    let (_, mine) = call(client().get(s.url("/api/v1/tokens")).bearer_auth(&admin)).await;
    let admin_token_id = mine["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["current"] == true)
        .unwrap()["id"]
        .clone();
    let (st, _) = call(
        client()
            .delete(format!("{url}/{admin_token_id}"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 404, "an admin's own token is not the user's");
    let (st, _) = call(
        client()
            .delete(format!("{}/tokens/1", user_url(s, "no-such-user-x")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(me(&first).await, 200);
    assert_eq!(me(&second).await, 200);
    assert_eq!(me(&admin).await, 200);

    // The user cannot list their own tokens here (that is /api/v1/tokens).
    let (st, _) = call(client().get(&url).bearer_auth(&first)).await;
    assert_eq!(st, 403);

    // Revoke the first: it is refused from then on, the second still works.
    let id = tokens[0]["id"].as_i64().unwrap();
    let (st, body) = call(client().delete(format!("{url}/{id}")).bearer_auth(&admin)).await;
    assert_eq!(st, 204, "{body}");
    assert_eq!(me(&first).await, 401);
    assert_eq!(me(&second).await, 200);
    let (_, body) = call(client().get(&url).bearer_auth(&admin)).await;
    assert_eq!(body["tokens"].as_array().unwrap().len(), 1, "{body}");
    let (st, _) = call(client().delete(format!("{url}/{id}")).bearer_auth(&admin)).await;
    assert_eq!(st, 404, "a revoked token is not live");
    let audited: i64 = s
        .sql(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'token.revoke' AND target = '{id}' AND user_id = 'admin'"
        ))
        .parse()
        .unwrap();
    assert_eq!(audited, 1);
}
