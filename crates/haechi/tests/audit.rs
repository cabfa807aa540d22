//! The audit log (CONTRACT §6, §7): what is recorded and by whom, the filters, who may read
//! it, that secrets never reach it, and that `haechi audit verify` names the first event an
//! attacker with database access edited, deleted, reordered or cut off.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// ISO 8601 with milliseconds, at a whole-hour offset from UTC (`Z` for 0).
fn iso(ms: i64, offset_hours: i64) -> String {
    let t = ms + offset_hours * 3_600_000;
    let (secs, milli) = (t.div_euclid(1000), t.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let zone = if offset_hours == 0 {
        "Z".to_owned()
    } else {
        format!("+{offset_hours:02}:00")
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}{zone}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// A user with `System Admin` whose actions are easy to find by `user=`.
async fn actor(s: &Server) -> (String, String) {
    let (user_id, _, token) = user_with_roles(s, &["System Admin"]).await;
    (user_id, token)
}

/// Audit events as an Auditor: `GET /api/v1/audit?<query>`; panics unless 200.
async fn audit(s: &Server, auditor: &str, query: &str) -> (Vec<Value>, i64) {
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/audit?{query}")))
            .bearer_auth(auditor),
    )
    .await;
    assert_eq!(st, 200, "audit?{query}: {body}");
    (
        body["events"].as_array().unwrap().clone(),
        body["total"].as_i64().unwrap(),
    )
}

fn actions(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

#[test]
fn iso_helper_matches_the_servers_form() {
    assert_eq!(iso(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso(1_716_195_600_123, 0), "2024-05-20T09:00:00.123Z");
    assert_eq!(iso(1_716_195_600_123, 9), "2024-05-20T18:00:00.123+09:00");
    assert_eq!(iso(951_825_600_000, 0), "2000-02-29T12:00:00.000Z");
}

// ---- what is recorded --------------------------------------------------------------------------

#[tokio::test]
async fn logins_are_recorded_with_user_source_ip_and_outcome() {
    let s = shared();
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let (user, password, _) = user_with_roles(s, &[]).await;
    let (st, _) = call(
        client()
            .post(s.url(&format!("/opmate/user/{user}/login")))
            .json(&json!({"password": "wrong-pass-1"})),
    )
    .await;
    assert_eq!(st, 401);

    let (events, total) = audit(s, &auditor, &format!("user={user}&action=auth.login")).await;
    assert_eq!(total, 2, "{events:?}");
    let (failure, success) = (&events[0], &events[1]);
    assert!(
        failure["seq"].as_i64() > success["seq"].as_i64(),
        "newest first"
    );
    assert_eq!(success["user"], user);
    assert_eq!(success["outcome"], "success");
    assert_eq!(success["family"], "mdrm");
    assert_eq!(success["source_ip"], "127.0.0.1");
    assert_eq!(
        failure["user"], user,
        "a failed login names the user id that was tried"
    );
    assert_eq!(failure["outcome"], "failure");
    assert_eq!(failure["family"], "opmate");
    assert_eq!(failure["source_ip"], "127.0.0.1");
    for e in &events {
        assert!(
            e["at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
            "{e}"
        );
        assert!(e["hash"].as_str().is_some_and(|h| h.len() == 64), "{e}");
        assert!(
            !e.to_string().contains(&password) && !e.to_string().contains("wrong-pass-1"),
            "{e}"
        );
    }

    // A user id that does not exist is recorded as tried.
    let ghost = unique("ghost");
    let (st, _) = call(
        client()
            .post(s.url("/v1/authentication"))
            .json(&json!({"username": ghost, "password": "whatever-1"})),
    )
    .await;
    assert_eq!(st, 401);
    let (events, total) = audit(s, &auditor, &format!("user={ghost}")).await;
    assert_eq!(total, 1);
    assert_eq!(events[0]["action"], "auth.login");
    assert_eq!(events[0]["outcome"], "failure");
    assert_eq!(events[0]["family"], "vault");
    assert_eq!(events[0]["source_ip"], "127.0.0.1");
}

#[tokio::test]
async fn changes_are_recorded_with_the_actor() {
    let s = shared();
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let (actor, token) = actor(s).await;
    let target = unique("tgt");
    let (st, _) = call(client().post(s.url("/api/v1/users")).bearer_auth(&token).json(&json!({
        "user_id": target, "name": "Target", "password": "target-password-1", "roles": ["Vault User"]
    })))
    .await;
    assert_eq!(st, 201);
    let (st, _) = call(
        client()
            .patch(s.url(&format!("/api/v1/users/{target}")))
            .bearer_auth(&token)
            .json(&json!({"name": "Renamed"})),
    )
    .await;
    assert_eq!(st, 200);
    let role = unique("AuditedRole");
    let (st, created) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(&token)
            .json(&json!({
                "name": role, "permissions": ["workflow.view"]
            })),
    )
    .await;
    assert_eq!(st, 201);

    let (events, total) = audit(s, &auditor, &format!("user={actor}")).await;
    assert_eq!(
        actions(&events),
        ["role.create", "user.update", "user.create", "auth.login"],
        "{events:?}"
    );
    assert_eq!(total, 4);
    for e in &events {
        assert_eq!(e["user"], actor);
        assert_eq!(e["source_ip"], "127.0.0.1");
        assert_eq!(e["outcome"], "success");
    }
    assert_eq!(events[0]["target"], role);
    assert_eq!(events[0]["family"], "admin");
    assert_eq!(events[0]["detail"]["id"], created["id"]);
    assert_eq!(events[1]["target"], target);
    assert!(
        events[1]["detail"]["changed"]
            .as_array()
            .unwrap()
            .contains(&json!("name")),
        "{}",
        events[1]
    );
    assert_eq!(events[2]["target"], target);
    assert_eq!(events[2]["detail"]["roles"], json!(["Vault User"]));
    assert!(!events[2].to_string().contains("target-password-1"));
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
}

// ---- filters -----------------------------------------------------------------------------------

#[tokio::test]
async fn filters_by_user_action_time_and_page() {
    let s = shared();
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let t0 = now_ms();
    let (actor, token) = actor(s).await; // auth.login
    let target = unique("flt");
    let (st, _) = call(
        client()
            .post(s.url("/api/v1/users"))
            .bearer_auth(&token)
            .json(&json!({
                "user_id": target, "name": "Filtered", "password": "filtered-password"
            })),
    )
    .await; // user.create
    assert_eq!(st, 201);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mid = now_ms();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (st, _) = call(
        client()
            .patch(s.url(&format!("/api/v1/users/{target}")))
            .bearer_auth(&token)
            .json(&json!({"disabled": true})),
    )
    .await;
    assert_eq!(st, 200); // user.update
    let (st, _) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(&token)
            .json(&json!({
                "name": unique("FilterRole"), "permissions": []
            })),
    )
    .await;
    assert_eq!(st, 201); // role.create
    let t_end = now_ms() + 1;
    let u = format!("user={actor}");

    let (events, total) = audit(s, &auditor, &u).await;
    assert_eq!(
        actions(&events),
        ["role.create", "user.update", "user.create", "auth.login"]
    );
    assert_eq!(total, 4);

    // action: exact, or a dotted prefix; nothing else.
    for (action, expected) in [
        ("user", vec!["user.update", "user.create"]),
        ("user.create", vec!["user.create"]),
        ("auth.login", vec!["auth.login"]),
        ("auth", vec!["auth.login"]),
        ("role", vec!["role.create"]),
        ("use", vec![]),
        ("user.cr", vec![]),
        ("user.create.x", vec![]),
        ("%", vec![]),
        ("user_create", vec![]),
    ] {
        let (events, total) = audit(s, &auditor, &format!("{u}&action={}", enc(action))).await;
        assert_eq!(actions(&events), expected, "action={action}");
        assert_eq!(total, expected.len() as i64, "action={action}");
    }
    // user: exact only.
    let (events, _) = audit(
        s,
        &auditor,
        &format!("user={}", enc(&actor[..actor.len() - 1])),
    )
    .await;
    assert!(events.is_empty(), "user is not a prefix match: {events:?}");

    // from / to: inclusive bounds, unix milliseconds or ISO 8601 (any offset).
    let mid_iso = iso(mid, 0);
    let mid_kst = iso(mid, 9);
    for (what, from) in [
        ("ms", mid.to_string()),
        ("iso", mid_iso.clone()),
        ("+09:00", mid_kst.clone()),
    ] {
        let (events, _) = audit(s, &auditor, &format!("{u}&from={}", enc(&from))).await;
        assert_eq!(
            actions(&events),
            ["role.create", "user.update"],
            "from ({what}) {from}"
        );
    }
    for (what, to) in [
        ("ms", mid.to_string()),
        ("iso", mid_iso),
        ("+09:00", mid_kst),
    ] {
        let (events, _) = audit(s, &auditor, &format!("{u}&to={}", enc(&to))).await;
        assert_eq!(
            actions(&events),
            ["user.create", "auth.login"],
            "to ({what}) {to}"
        );
    }
    let (events, _) = audit(s, &auditor, &format!("{u}&from={t0}&to={t_end}")).await;
    assert_eq!(events.len(), 4);
    let (events, total) = audit(s, &auditor, &format!("{u}&from={t_end}&to={t0}")).await;
    assert_eq!(
        (events.len(), total),
        (0, 0),
        "from after to matches nothing"
    );
    let (events, _) = audit(s, &auditor, &format!("{u}&to={}", t0 - 1)).await;
    assert!(events.is_empty());

    // Paging over the filtered list.
    let (all, _) = audit(s, &auditor, &u).await;
    let (page, total) = audit(s, &auditor, &format!("{u}&limit=1")).await;
    assert_eq!((page.len(), total), (1, 4));
    assert_eq!(page[0]["seq"], all[0]["seq"]);
    let (page, _) = audit(s, &auditor, &format!("{u}&limit=2&offset=1")).await;
    assert_eq!(
        page.iter().map(|e| &e["seq"]).collect::<Vec<_>>(),
        [&all[1]["seq"], &all[2]["seq"]]
    );
    let (page, total) = audit(s, &auditor, &format!("{u}&offset=4")).await;
    assert_eq!((page.len(), total), (0, 4));
    let (page, _) = audit(s, &auditor, &format!("{u}&limit=0")).await;
    assert!(page.is_empty());

    // Bad values are 400s naming the parameter.
    for (query, field) in [
        ("from=yesterday", "from"),
        ("to=2024-13-45T00:00:00Z", "to"),
        ("to=12:00", "to"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("offset=x", "offset"),
    ] {
        let (st, body) = call(
            client()
                .get(s.url(&format!("/api/v1/audit?{query}")))
                .bearer_auth(&auditor),
        )
        .await;
        assert_eq!(st, 400, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(field),
            "{query}: {body}"
        );
    }
}

// ---- who may read ------------------------------------------------------------------------------

#[tokio::test]
async fn only_auditors_read_the_audit() {
    let s = shared();
    let admin = admin_token(s).await;
    let (_, _, nobody) = user_with_roles(s, &[]).await;
    let (_, _, vault_user) = user_with_roles(s, &["Vault User", "Locker Admin"]).await;
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    for path in ["/api/v1/audit", "/api/v1/audit/verify"] {
        for (who, token) in [
            ("System Admin", &admin),
            ("no roles", &nobody),
            ("vault", &vault_user),
        ] {
            let (st, body) = call(client().get(s.url(path)).bearer_auth(token)).await;
            assert_eq!(st, 403, "{who} {path}: {body}");
            assert_eq!(body["code"], "forbidden");
            assert!(
                body["message"].as_str().unwrap().contains("audit.read"),
                "{body}"
            );
            assert!(body.get("events").is_none() && body.get("checked").is_none());
        }
        let (st, body) = call(client().get(s.url(path))).await;
        assert_eq!(st, 401, "{path}: {body}");
        let (st, body) = call(client().get(s.url(path)).bearer_auth(&auditor)).await;
        assert_eq!(st, 200, "Auditor {path}: {body}");
    }
}

#[tokio::test]
async fn verify_endpoint_reports_an_intact_chain() {
    let s = shared();
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let (newest, _) = audit(s, &auditor, "limit=1").await;
    let newest = newest[0]["seq"].as_i64().unwrap();
    let (st, body) = call(
        client()
            .get(s.url("/api/v1/audit/verify"))
            .bearer_auth(&auditor),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["broken", "checked"]);
    assert!(
        body["checked"].as_i64().unwrap() >= newest,
        "{body} vs newest {newest}"
    );
    assert_eq!(body["broken"], Value::Null);
}

#[tokio::test]
async fn secrets_never_reach_the_audit_or_the_logs() {
    let s = shared();
    let admin = admin_token(s).await;
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let secret = |n: u8| format!("Zq{n}-distinctive-secret-{}", unique(""));
    let (p1, p2, p3, p4, p5, p6) = (
        secret(1),
        secret(2),
        secret(3),
        secret(4),
        secret(5),
        secret(6),
    );
    let user = unique("sec");
    let (st, _) = call(
        client()
            .post(s.url("/api/v1/users"))
            .bearer_auth(&admin)
            .json(&json!({
                "user_id": user, "name": "Secretive", "password": p1
            })),
    )
    .await;
    assert_eq!(st, 201);
    let mut tokens = vec![login(s, &user, &p1).await];
    let (st, b) = call(
        client()
            .post(s.url(&format!("/opmate/user/{user}/login")))
            .json(&json!({"password": p1})),
    )
    .await;
    assert_eq!(st, 200);
    tokens.push(b["uuid"].as_str().unwrap().to_owned());
    let (st, b) = call(
        client()
            .post(s.url("/v1/authentication"))
            .json(&json!({"username": user, "password": p1})),
    )
    .await;
    assert_eq!(st, 200);
    tokens.push(b["token"].as_str().unwrap().to_owned());
    // Wrong passwords on every login endpoint, and as a form body.
    for req in [
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": user, "pwd": p2})),
        client()
            .post(s.url("/api/v1/auth"))
            .form(&[("user_id", user.as_str()), ("pwd", p2.as_str())]),
        client()
            .post(s.url(&format!("/opmate/user/{user}/login")))
            .json(&json!({"password": p2})),
        client()
            .post(s.url("/v1/authentication"))
            .json(&json!({"username": user, "password": p2})),
        // A password typed into the user id field (a common slip) is not a secret we can know
        // about, but the password field never is logged.
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": unique("nobody"), "pwd": p2})),
    ] {
        let (st, _) = call(req).await;
        assert_eq!(st, 401);
    }
    // Password changes by an admin, and by the user with the current password.
    let user_url = s.url(&format!("/api/v1/users/{user}"));
    let (st, _) = call(
        client()
            .patch(&user_url)
            .bearer_auth(&admin)
            .json(&json!({"password": p3})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = call(
        client()
            .put(format!("{user_url}/password"))
            .bearer_auth(&admin)
            .json(&json!({"password": p4})),
    )
    .await;
    assert_eq!(st, 204);
    let own = login(s, &user, &p4).await;
    let (st, _) = call(
        client()
            .put(format!("{user_url}/password"))
            .bearer_auth(&own)
            .json(&json!({
                "password": p5, "current_password": p6
            })),
    )
    .await;
    assert_eq!(st, 400, "wrong current password");
    let (st, _) = call(
        client()
            .put(format!("{user_url}/password"))
            .bearer_auth(&own)
            .json(&json!({
                "password": p5, "current_password": p4
            })),
    )
    .await;
    assert_eq!(st, 204);
    tokens.push(own);
    tokens.push(login(s, &user, &p5).await);

    let (events, _) = audit(s, &auditor, &format!("user={user}&limit=1000")).await;
    assert!(
        events.len() >= 9,
        "the logins and changes are recorded: {events:?}"
    );
    let (by_admin, _) = audit(s, &auditor, "user=admin&limit=1000").await;
    let (everything, _) = audit(s, &auditor, "limit=1000").await;
    let audit_text = format!("{events:?}{by_admin:?}{everything:?}");
    let logs = s.logs();
    for (what, secret) in [
        ("password", &p1),
        ("wrong password", &p2),
        ("patched password", &p3),
        ("set password", &p4),
        ("own new password", &p5),
        ("wrong current password", &p6),
    ] {
        assert!(!audit_text.contains(secret.as_str()), "{what} in the audit");
        assert!(!logs.contains(secret.as_str()), "{what} in the server log");
    }
    for t in &tokens {
        assert!(!audit_text.contains(t.as_str()), "a token in the audit");
        assert!(!logs.contains(t.as_str()), "a token in the server log");
    }
    assert!(!audit_text.contains("distinctive-secret") && !logs.contains("distinctive-secret"));
}

// ---- tampering (each on a server of its own) ---------------------------------------------------

/// A fresh server with a few events: bootstrap, logins, two user.create, a failed login.
async fn server_with_events() -> Server {
    let s = Server::start();
    let admin = admin_token(&s).await;
    for n in 0..2 {
        let (st, _) = call(
            client()
                .post(s.url("/api/v1/users"))
                .bearer_auth(&admin)
                .json(&json!({
                    "user_id": format!("tamper{n}"), "name": "T", "password": "tamper-password"
                })),
        )
        .await;
        assert_eq!(st, 201);
    }
    let (st, _) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({"user_id": "tamper0", "pwd": "wrong-password"})),
    )
    .await;
    assert_eq!(st, 401);
    login(&s, "tamper1", "tamper-password").await;
    s
}

/// (seq, action, outcome) of every stored event, oldest first, straight from the database.
fn stored(s: &Server) -> Vec<(i64, String, String)> {
    s.sql("SELECT seq, action, outcome FROM audit_events ORDER BY seq")
        .lines()
        .map(|l| {
            let mut f = l.split('|');
            (
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap().to_owned(),
                f.next().unwrap().to_owned(),
            )
        })
        .collect()
}

fn seq_of(events: &[(i64, String, String)], action: &str, outcome: &str) -> i64 {
    events
        .iter()
        .find(|e| e.1 == action && e.2 == outcome)
        .unwrap_or_else(|| panic!("no {action}/{outcome} in {events:?}"))
        .0
}

/// What an attacker with database access does first: remove the append-only protection.
fn remove_protection(s: &Server) {
    match s.db {
        Db::Sqlite(_) => {
            s.sql("DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;")
        }
        Db::Postgres(_) => s.sql("ALTER TABLE audit_events DISABLE TRIGGER USER"),
    };
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The first event number named in `haechi audit verify`'s output.
fn named_seq(out: &str) -> Option<i64> {
    out.match_indices("event ").find_map(|(i, m)| {
        let digits: String = out[i + m.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

fn assert_broken_at(s: &Server, seq: i64) {
    let (code, out) = s.audit_verify();
    assert_eq!(code, 2, "verify must fail with exit code 2: {out}");
    assert_eq!(
        named_seq(&out),
        Some(seq),
        "verify must name event {seq}: {out}"
    );
    assert!(!out.contains("intact"), "{out}");
}

#[tokio::test]
async fn verify_passes_on_an_intact_chain() {
    let s = server_with_events().await;
    let n = stored(&s).len();
    assert!(n >= 6, "{:?}", stored(&s));
    let (code, out) = s.audit_verify();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"), "{out}");
    assert!(
        out.contains(&n.to_string()),
        "says how many events it checked: {out}"
    );
    // Offline, with the server stopped, too.
    let s = s.stop_async().await;
    let (code, out) = s.audit_verify();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"), "{out}");
}

#[tokio::test]
async fn the_append_only_triggers_refuse_edits_and_deletes() {
    let s = server_with_events().await;
    let before = s.sql("SELECT seq, action, outcome, detail, hash FROM audit_events ORDER BY seq");
    for sql in [
        "UPDATE audit_events SET outcome = 'success' WHERE seq = 2",
        "UPDATE audit_events SET detail = '{}'",
        "DELETE FROM audit_events WHERE seq = 2",
        "DELETE FROM audit_events",
    ] {
        let err = s.try_sql(sql).expect_err(sql);
        assert!(
            err.contains("append-only"),
            "{sql} must be refused by the trigger: {err}"
        );
    }
    if let Db::Postgres(_) = s.db {
        let err = s.try_sql("TRUNCATE audit_events").expect_err("TRUNCATE");
        assert!(err.contains("append-only"), "{err}");
    }
    assert_eq!(
        s.sql("SELECT seq, action, outcome, detail, hash FROM audit_events ORDER BY seq"),
        before
    );
    let (code, out) = s.audit_verify();
    assert_eq!(code, 0, "{out}");
    s.finish().await;
}

#[tokio::test]
async fn an_edited_event_is_named() {
    let s = server_with_events().await;
    let events = stored(&s);
    let failed = seq_of(&events, "auth.login", "failure");
    assert!(failed < events.last().unwrap().0, "not the newest");
    remove_protection(&s);
    // Turn the failed login into a successful one.
    s.sql(&format!(
        "UPDATE audit_events SET outcome = 'success' WHERE seq = {failed}"
    ));
    assert_broken_at(&s, failed);

    // The admin API's verify says the same.
    let (_, _, auditor) = user_with_roles(&s, &["Auditor"]).await;
    let (st, body) = call(
        client()
            .get(s.url("/api/v1/audit/verify"))
            .bearer_auth(&auditor),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["broken"]["seq"], failed, "{body}");
    assert!(body["broken"]["reason"].is_string());
    s.finish().await;
}

#[tokio::test]
async fn a_deleted_event_is_named() {
    let s = server_with_events().await;
    let events = stored(&s);
    let middle = seq_of(&events, "user.create", "success");
    assert!(middle > 1 && middle < events.last().unwrap().0);
    remove_protection(&s);
    s.sql(&format!("DELETE FROM audit_events WHERE seq = {middle}"));
    assert_broken_at(&s, middle);
    s.finish().await;
}

#[tokio::test]
async fn reordered_events_are_named() {
    let s = server_with_events().await;
    let events = stored(&s);
    let first = seq_of(&events, "user.create", "success");
    let second = seq_of(&events, "auth.login", "failure");
    assert!(first < second);
    let field =
        |col: &str, seq: i64| s.sql(&format!("SELECT {col} FROM audit_events WHERE seq = {seq}"));
    let (a1, d1, a2, d2) = (
        field("action", first),
        field("detail", first),
        field("action", second),
        field("detail", second),
    );
    assert_ne!((&a1, &d1), (&a2, &d2));
    remove_protection(&s);
    s.sql(&format!(
        "UPDATE audit_events SET action = {}, detail = {} WHERE seq = {first}",
        q(&a2),
        q(&d2)
    ));
    s.sql(&format!(
        "UPDATE audit_events SET action = {}, detail = {} WHERE seq = {second}",
        q(&a1),
        q(&d1)
    ));
    assert_eq!(field("action", first), a2, "the swap happened");
    assert_broken_at(&s, first);
    s.finish().await;
}

#[tokio::test]
async fn deleting_the_newest_events_is_detected() {
    let s = server_with_events().await;
    let events = stored(&s);
    let newest = events.last().unwrap().0;
    remove_protection(&s);
    s.sql(&format!(
        "DELETE FROM audit_events WHERE seq >= {}",
        newest - 1
    ));
    assert_eq!(stored(&s).last().unwrap().0, newest - 2);
    assert_broken_at(&s, newest - 1);
    s.finish().await;
}

/// An event stored after the chain head (written into the table, not appended through the log)
/// is named, although verify judges only what the head had recorded when it started.
#[tokio::test]
async fn an_event_stored_after_the_head_is_named() {
    let s = server_with_events().await;
    let events = stored(&s);
    let newest = events.last().unwrap().0;
    s.sql(&format!(
        "INSERT INTO audit_events (seq, at, user_id, source_ip, family, action, target, outcome, detail, prev_hash, hash) \
         SELECT seq + 1, at, user_id, source_ip, family, action, target, outcome, detail, hash, hash \
         FROM audit_events WHERE seq = {newest}"
    ));
    assert_eq!(stored(&s).last().unwrap().0, newest + 1);
    assert_broken_at(&s, newest + 1);
    s.finish().await;
}
