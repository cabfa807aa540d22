//! The DBSAFER access-policy API against the real server: the document's examples, every
//! filter, every validation error (Spring-style body, nothing stored), permissions and audit.

mod common;

use common::{call, client, enc, shared, unique, user_with_roles};
use serde_json::{json, Value};

const BASE: &str = "/dbsafer/api/v1/policy/custom/access-policies";

async fn policy_admin() -> String {
    user_with_roles(shared(), &["DB Policy Admin"]).await.2
}

/// The document's create body, with a user id of the test's own.
fn doc_body(user: &str) -> Value {
    json!({
        "userId": user,
        "account": "account001",
        "clientIpBegin": "1.1.1.1",
        "clientIpEnd": "2.2.2.2",
        "serverAddress": "1.1.1.1",
        "serverPort": 3306,
        "sid": "instance001",
        "sqlPrivileges": ["INSERT", "SELECT"],
        "policyType": "SAC",
        "reserved1": "추가 정보(1)",
        "reserved2": "추가 정보(2)",
        "reserved3": "추가 정보(3)",
        "startDate": "2022-01-01T00:00:00",
        "endDate": "2022-12-31T23:59:59"
    })
}

async fn create(token: &str, body: &Value) -> (u16, Value) {
    call(
        client()
            .post(shared().url(BASE))
            .bearer_auth(token)
            .json(body),
    )
    .await
}

async fn list(token: &str, query: &str) -> Vec<Value> {
    let (s, v) = call(
        client()
            .get(shared().url(&format!("{BASE}?{query}")))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["results"].as_array().unwrap().clone()
}

fn assert_spring_error(v: &Value, status: u16, path: &str, mentions: &str) {
    assert_eq!(v["status"], status, "{v}");
    assert!(v["timestamp"].is_string(), "{v}");
    assert!(v["error"].is_string(), "{v}");
    assert_eq!(v["path"], path, "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains(mentions),
        "message {m:?} should mention {mentions:?}"
    );
}

#[tokio::test]
async fn document_examples_round_trip() {
    let t = policy_admin().await;
    let user = unique("user");
    let mut body = doc_body(&user);
    body["policyId"] = json!(unique("POLICY_T"));
    let r = client()
        .post(shared().url(BASE))
        .bearer_auth(&t)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = r.json().await.unwrap();
    let index = created["index"].as_i64().unwrap();
    assert_eq!(location, format!("{BASE}/{index}"));
    for k in [
        "policyId",
        "userId",
        "account",
        "clientIpBegin",
        "clientIpEnd",
        "serverAddress",
        "serverPort",
        "sid",
        "sqlPrivileges",
        "policyType",
        "reserved1",
        "reserved2",
        "reserved3",
        "startDate",
        "endDate",
    ] {
        assert_eq!(created[k], body[k], "field {k}");
    }
    assert_eq!(created["lock"], false);
    assert_eq!(created.as_object().unwrap().len(), 17, "{created}");

    let (s, got) = call(client().get(shared().url(&location)).bearer_auth(&t)).await;
    assert_eq!(s, 200);
    assert_eq!(got, created);

    // The document's list query, every filter at once.
    let q = format!(
        "policyId={}&userId={}&serverAddress=1.1.1.1&serverPort=3306&account=account001&policyType=SAC",
        enc(body["policyId"].as_str().unwrap()),
        enc(&user)
    );
    assert_eq!(list(&t, &q).await, vec![created.clone()]);

    // Update (PUT): the given fields change, the rest stay.
    let (s, updated) = call(
        client()
            .put(shared().url(&location))
            .bearer_auth(&t)
            .json(&json!({ "sqlPrivileges": ["SELECT"], "reserved1": "바뀜" })),
    )
    .await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["sqlPrivileges"], json!(["SELECT"]));
    assert_eq!(updated["reserved1"], "바뀜");
    assert_eq!(updated["account"], "account001");

    // Lock and unlock by the document's filters.
    let (s, v) = call(
        client()
            .put(shared().url(&format!("{BASE}/lock?{q}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({ "results": [{ "index": index, "result": true, "resultMessage": "lock completed." }] })
    );
    let (_, got) = call(client().get(shared().url(&location)).bearer_auth(&t)).await;
    assert_eq!(got["lock"], true);
    let (s, v) = call(
        client()
            .put(shared().url(&format!("{BASE}/unlock?{q}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({ "results": [{ "index": index, "result": true, "resultMessage": "unlock completed." }] })
    );
    let (_, got) = call(client().get(shared().url(&location)).bearer_auth(&t)).await;
    assert_eq!(got["lock"], false);

    // Delete: 204, then 404.
    let (s, _) = call(client().delete(shared().url(&location)).bearer_auth(&t)).await;
    assert_eq!(s, 204);
    let (s, v) = call(client().get(shared().url(&location)).bearer_auth(&t)).await;
    assert_eq!(s, 404);
    assert_spring_error(&v, 404, &location, "not found");
    let (s, _) = call(client().delete(shared().url(&location)).bearer_auth(&t)).await;
    assert_eq!(s, 404);
    let (s, _) = call(
        client()
            .put(shared().url(&location))
            .bearer_auth(&t)
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        client()
            .get(shared().url(&format!("{BASE}/abc")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn policy_id_is_generated_per_day() {
    let t = policy_admin().await;
    let user = unique("gen");
    let (s, a) = create(&t, &json!({ "userId": user })).await;
    assert_eq!(s, 201, "{a}");
    let (_, b) = create(&t, &json!({ "userId": user })).await;
    let (ida, idb) = (
        a["policyId"].as_str().unwrap(),
        b["policyId"].as_str().unwrap(),
    );
    for id in [ida, idb] {
        assert!(id.starts_with("POLICY_") && id.len() >= 18, "{id}");
        assert!(id[7..].bytes().all(|c| c.is_ascii_digit()), "{id}");
    }
    assert_eq!(&ida[..15], &idb[..15], "same day");
    assert!(idb[15..].parse::<u64>().unwrap() > ida[15..].parse::<u64>().unwrap());
    // Fields never set read as typed defaults, never null (see the next test).
    assert_eq!(a["account"], "");
    assert_eq!(a["sqlPrivileges"], json!([]));
    // A duplicate explicit policyId is a conflict.
    let (s, v) = create(&t, &json!({ "userId": user, "policyId": ida })).await;
    assert_eq!(s, 409, "{v}");
}

/// Every field the document marks required comes back with a value of its type even when the
/// policy was created with `userId` alone, and the answer sent back unchanged changes nothing.
#[tokio::test]
async fn fields_never_set_read_as_typed_defaults_that_round_trip() {
    let t = policy_admin().await;
    let user = unique("def");
    let (s, a) = create(&t, &json!({ "userId": user })).await;
    assert_eq!(s, 201, "{a}");
    for field in [
        "account",
        "clientIpBegin",
        "clientIpEnd",
        "serverAddress",
        "sid",
        "policyType",
        "reserved1",
        "reserved2",
        "reserved3",
    ] {
        assert_eq!(a[field], "", "{field} in {a}");
    }
    assert_eq!(a["serverPort"], 0, "{a}");
    assert_eq!(a["startDate"], "1970-01-01T00:00:00", "{a}");
    assert_eq!(a["endDate"], "9999-12-31T23:59:59", "{a}");
    assert_eq!(a["lock"], false);
    let loc = format!("{BASE}/{}", a["index"]);
    let (s, back) = call(client().put(shared().url(&loc)).bearer_auth(&t).json(&a)).await;
    assert_eq!(s, 200, "{back}");
    assert_eq!(back, a, "sent back unchanged, it reads the same");

    // One end of the client range alone is a single address, whichever end it is.
    let (s, one) = create(
        &t,
        &json!({ "userId": user, "clientIpBegin": "10.1.2.3", "serverPort": 5432 }),
    )
    .await;
    assert_eq!(s, 201, "{one}");
    assert_eq!(
        (&one["clientIpBegin"], &one["clientIpEnd"]),
        (&json!("10.1.2.3"), &json!("10.1.2.3"))
    );
    let (s, one) = create(&t, &json!({ "userId": user, "clientIpEnd": "10.1.2.4" })).await;
    assert_eq!(s, 201, "{one}");
    assert_eq!(one["clientIpBegin"], "10.1.2.4");
    // serverPort 0 clears a port.
    let loc = format!("{BASE}/{}", one["index"]);
    let (_, p) = call(
        client()
            .put(shared().url(&loc))
            .bearer_auth(&t)
            .json(&json!({ "serverPort": 3306 })),
    )
    .await;
    assert_eq!(p["serverPort"], 3306);
    let (_, p) = call(
        client()
            .put(shared().url(&loc))
            .bearer_auth(&t)
            .json(&json!({ "serverPort": 0 })),
    )
    .await;
    assert_eq!(p["serverPort"], 0, "{p}");
}

/// `curl -d '{...}'` sends JSON as a form: the body is read as what it is.
#[tokio::test]
async fn a_json_body_sent_as_a_form_is_read_as_json() {
    let t = policy_admin().await;
    let user = unique("ctype");
    let body = json!({ "userId": user, "account": "acc" }).to_string();
    let (s, v) = call(
        client()
            .post(shared().url(BASE))
            .bearer_auth(&t)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["account"], "acc");
    // Something that is neither JSON nor a JSON content type is still refused.
    let (s, v) = call(
        client()
            .post(shared().url(BASE))
            .bearer_auth(&t)
            .header("content-type", "text/plain")
            .body("userId=x"),
    )
    .await;
    assert_eq!(s, 415, "{v}");
}

#[tokio::test]
async fn every_filter_selects() {
    let t = policy_admin().await;
    let user = unique("flt");
    let mut a = doc_body(&user);
    a["policyId"] = json!(unique("PA"));
    let mut b = doc_body(&user);
    b["policyId"] = json!(unique("PB"));
    b["serverAddress"] = json!("10.0.0.9");
    b["serverPort"] = json!(5432);
    b["account"] = json!("other");
    b["policyType"] = json!("XYZ");
    let (_, a) = create(&t, &a).await;
    let (_, b) = create(&t, &b).await;
    let u = format!("userId={}", enc(&user));
    assert_eq!(list(&t, &u).await.len(), 2);
    for (q, want) in [
        (
            format!("policyId={}", enc(a["policyId"].as_str().unwrap())),
            &a,
        ),
        (format!("{u}&serverAddress=10.0.0.9"), &b),
        (format!("{u}&serverPort=3306"), &a),
        (format!("{u}&account=other"), &b),
        (format!("{u}&policyType=SAC"), &a),
    ] {
        assert_eq!(list(&t, &q).await, vec![want.clone()], "{q}");
    }
    assert!(list(&t, &format!("{u}&serverPort=1")).await.is_empty());
    let (s, v) = call(
        client()
            .get(shared().url(&format!("{BASE}?serverPort=abc")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 400);
    assert_spring_error(&v, 400, BASE, "serverPort");
    // Lock by a filter that matches both; unlock needs at least one filter.
    let (s, v) = call(
        client()
            .put(shared().url(&format!("{BASE}/lock?{u}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    let (s, _) = call(
        client()
            .put(shared().url(&format!("{BASE}/unlock")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 400);
    let (_, v) = call(
        client()
            .put(shared().url(&format!("{BASE}/unlock?userId=nobody-{user}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(v, json!({ "results": [] }));
}

#[tokio::test]
async fn every_validation_error_is_a_400_that_changes_nothing() {
    let t = policy_admin().await;
    let user = unique("val");
    let good = doc_body(&user);
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "account": "x" }), "userId"),
        (json!({ "userId": "" }), "userId"),
        (
            json!({ "userId": user, "sqlPrivileges": ["SELECT", "FLY"] }),
            "sqlPrivileges[1]",
        ),
        (
            json!({ "userId": user, "sqlPrivileges": "SELECT" }),
            "sqlPrivileges",
        ),
        (
            json!({ "userId": user, "clientIpBegin": "1.1.1.300", "clientIpEnd": "2.2.2.2" }),
            "clientIpBegin",
        ),
        (
            json!({ "userId": user, "clientIpBegin": "1.1.1.1", "clientIpEnd": "nope" }),
            "clientIpEnd",
        ),
        (
            json!({ "userId": user, "clientIpBegin": "2.2.2.2", "clientIpEnd": "1.1.1.1" }),
            "clientIpBegin",
        ),
        (
            json!({ "userId": user, "clientIpBegin": "1.1.1.1", "clientIpEnd": "::1" }),
            "clientIpEnd",
        ),
        (json!({ "userId": user, "serverPort": -1 }), "serverPort"),
        (json!({ "userId": user, "serverPort": 65536 }), "serverPort"),
        (json!({ "userId": user, "serverPort": "abc" }), "serverPort"),
        (json!({ "userId": user, "serverPort": true }), "serverPort"),
        (
            json!({ "userId": user, "startDate": "2022-12-31T00:00:00", "endDate": "2022-01-01T00:00:00" }),
            "startDate",
        ),
        (
            json!({ "userId": user, "startDate": "not a date" }),
            "startDate",
        ),
        (
            json!({ "userId": user, "endDate": "2022-02-30T00:00:00" }),
            "endDate",
        ),
        (json!({ "userId": 5 }), "userId"),
    ];
    for (body, field) in cases {
        let (s, v) = create(&t, &body).await;
        assert_eq!(s, 400, "{body} → {v}");
        assert_spring_error(&v, 400, BASE, field);
    }
    let r = client()
        .post(shared().url(BASE))
        .bearer_auth(&t)
        .header("content-type", "application/json;charset=UTF-8")
        .body("{\"userId\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        list(&t, &format!("userId={}", enc(&user))).await.is_empty(),
        "nothing stored"
    );
    // An update with a bad field changes nothing either.
    let (_, p) = create(&t, &good).await;
    let loc = format!("{BASE}/{}", p["index"]);
    let (s, _) = call(
        client()
            .put(shared().url(&loc))
            .bearer_auth(&t)
            .json(&json!({ "serverPort": 70000, "sid": "changed" })),
    )
    .await;
    assert_eq!(s, 400);
    let (_, again) = call(client().get(shared().url(&loc)).bearer_auth(&t)).await;
    assert_eq!(again, p);
}

#[tokio::test]
async fn permissions_and_audit() {
    let s = shared();
    let (s1, v) = call(client().get(s.url(BASE))).await;
    assert_eq!(s1, 401);
    assert_spring_error(&v, 401, BASE, "token");
    let (_, _, nobody) = user_with_roles(s, &[]).await;
    let (s2, v) = call(client().get(s.url(BASE)).bearer_auth(&nobody)).await;
    assert_eq!(s2, 403);
    assert_spring_error(&v, 403, BASE, "dbpolicy.manage");
    let (s3, _) = create(&nobody, &json!({ "userId": "x" })).await;
    assert_eq!(s3, 403);

    let (admin_id, _, t) = user_with_roles(s, &["DB Policy Admin"]).await;
    let user = unique("aud");
    let (_, p) = create(&t, &json!({ "userId": user })).await;
    let loc = format!("{BASE}/{}", p["index"]);
    call(
        client()
            .put(s.url(&loc))
            .bearer_auth(&t)
            .json(&json!({ "sid": "x" })),
    )
    .await;
    call(
        client()
            .put(s.url(&format!("{BASE}/lock?userId={}", enc(&user))))
            .bearer_auth(&t),
    )
    .await;
    call(
        client()
            .put(s.url(&format!("{BASE}/unlock?userId={}", enc(&user))))
            .bearer_auth(&t),
    )
    .await;
    call(client().delete(s.url(&loc)).bearer_auth(&t)).await;
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let (st, v) = call(
        client()
            .get(s.url(&format!("/api/v1/audit?user={}&limit=1000", enc(&admin_id))))
            .bearer_auth(&auditor),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let actions: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "dbpolicy.create",
        "dbpolicy.update",
        "dbpolicy.lock",
        "dbpolicy.unlock",
        "dbpolicy.delete",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}
