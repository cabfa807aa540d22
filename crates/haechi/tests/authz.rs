//! The authorization matrix (issue 18): every route of every API family, called as each built-in
//! role, a user with no role and a request without a token, against the one table of
//! `docs/permissions.md`. The page is read here, so the documentation and the server cannot
//! drift: its rows must be exactly the routes of the OpenAPI document, each row's cells must
//! follow from its *Needs* column and the built-in roles, and every live answer must match.
//!
//! Refused callers send malformed bodies and bad queries (a refusal must come before any
//! validation: 401/403, never 400) and, where a valid body is known, a valid one too; none of it
//! may change a row of the store. Allowed callers must never get 401/403 (nor a 5xx).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{json, Value};

const PAGE: &str = include_str!("../../../docs/permissions.md");

/// The callers of the table's columns, in order.
const CALLERS: [&str; 10] = [
    "System Admin",
    "Workflow Operator",
    "Task Developer",
    "Task Approver",
    "DB Policy Admin",
    "Vault User",
    "Locker Admin",
    "Auditor",
    "no role",
    "no token",
];

const ALLOWED: &str = "✓";

#[derive(Debug)]
struct Row {
    method: String,
    path: String,
    needs: String,
    cells: Vec<String>,
    in_openapi: bool,
}

fn rows() -> Vec<Row> {
    let mut in_openapi = true;
    let mut rows = Vec::new();
    for line in PAGE.lines() {
        if line.starts_with("## Routes outside") {
            in_openapi = false;
        }
        if !line.starts_with("| ") || line.starts_with("| Method ") {
            continue;
        }
        let cols: Vec<String> = line
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_owned())
            .collect();
        assert_eq!(cols.len(), 3 + CALLERS.len(), "bad row: {line}");
        rows.push(Row {
            method: cols[0].clone(),
            path: cols[1].trim_matches('`').to_owned(),
            needs: cols[2].clone(),
            cells: cols[3..].to_vec(),
            in_openapi,
        });
    }
    rows
}

/// What a caller holding `perms` (None: no token) gets from a route that needs `needs`.
fn expected(needs: &str, perms: Option<&BTreeSet<String>>) -> &'static str {
    let Some(perms) = perms else {
        return if needs == "public" { ALLOWED } else { "401" };
    };
    match needs {
        "public" | "any" => ALLOWED,
        "agent" => "401",
        _ => {
            let alts = needs.trim_start_matches("self or ");
            if alts.split(" or ").any(|p| perms.contains(p.trim())) {
                ALLOWED
            } else {
                "403"
            }
        }
    }
}

struct Caller {
    user_id: String,
    password: String,
    token: Option<String>,
}

/// The objects the paths name: real ones, so that a refused request that was not refused would
/// change something the snapshot sees.
struct Fixtures {
    victim: String,
    role: String,
    task: String,
    credential: i64,
    locker: i64,
    workflow: String,
    policy: i64,
}

impl Fixtures {
    fn fill(&self, path: &str) -> String {
        let id = if path.contains("/credentials/{id}") {
            self.credential.to_string()
        } else if path.contains("/lockers/{id}") {
            self.locker.to_string()
        } else if path.contains("/workflows/{id}") {
            self.workflow.clone()
        } else {
            "1".to_owned()
        };
        path.replace("{id}", &id)
            .replace("{user_id}", &self.victim)
            .replace("{role}", &enc(&self.role))
            .replace("{task_id}", &self.task)
            .replace("{revision_no}", "1")
            .replace("{version}", "1")
            .replace("{credential_id}", &self.credential.to_string())
            .replace("{owner_id}", "1")
            .replace("{value_id}", "1")
            .replace("{role_id}", "1")
            .replace("{index}", &self.policy.to_string())
            .replace("{instance_no}", "1")
            .replace("{node_id}", "matrix-node")
            .replace("{execution_id}", "EXEC_20260101_0001")
            .replace("{name}", "matrix-name")
            .replace("{account}", "matrix-account")
    }

    /// A body that would do something if the route let the caller in.
    fn valid_body(&self, method: &str, path: &str) -> Option<Value> {
        let body = match (method, path) {
            ("POST", "/api/v1/users") => {
                json!({ "user_id": unique("mx"), "name": "x", "password": "pw-matrix-1234", "roles": ["System Admin"] })
            }
            ("PATCH", "/api/v1/users/{user_id}") => json!({ "disabled": true }),
            ("PUT", "/api/v1/users/{user_id}/roles") => json!({ "roles": ["System Admin"] }),
            ("PUT", "/api/v1/users/{user_id}/password") => json!({ "password": "pw-taken-over-1" }),
            ("PUT", "/api/v1/users/{user_id}/allowed-ips") => {
                json!({ "allowed_ips": ["10.9.9.9"] })
            }
            ("POST", "/api/v1/roles") => {
                json!({ "name": unique("mxrole"), "permissions": ["audit.read"] })
            }
            ("PATCH", "/api/v1/roles/{role}") => json!({ "permissions": ["audit.read"] }),
            ("POST", "/api/v1/tasks") => {
                json!({ "id": unique("mxtask"), "scriptName": "a.sh", "script": "true", "osUser": "nobody" })
            }
            ("PUT", "/api/v1/tasks/{task_id}") => json!({ "script": "echo changed" }),
            ("POST", "/api/v1/tasks/{task_id}/approval") => json!({ "action": "request" }),
            ("POST", "/api/v1/workflows") => {
                json!({ "name": unique("mxwf"), "group": "matrix", "steps": [{ "name": "a", "type": "sleep", "seconds": 0 }] })
            }
            ("PUT", "/api/v1/workflows/{id}") => {
                json!({ "name": "changed", "group": "matrix", "steps": [{ "name": "a", "type": "sleep", "seconds": 0 }] })
            }
            ("POST", "/api/v1/workflows/{id}/executions") => json!({}),
            ("POST", "/services/workflow/execute") => json!({ "wf_id": self.workflow }),
            ("POST", "/api/v1/agents/enrollment-tokens") => json!({}),
            ("POST", "/dbsafer/api/v1/policy/custom/access-policies") => {
                json!({ "userId": "mx", "account": "a", "serverAddress": "10.0.0.1", "serverPort": 5432, "sqlPrivileges": ["SELECT"] })
            }
            ("PUT", "/dbsafer/api/v1/policy/custom/access-policies/{index}") => {
                json!({ "account": "changed" })
            }
            ("POST", "/v2/credentialvault/credentials") => {
                json!({ "name": unique("mxcred"), "attributes": [{ "name": "pw", "userProvided": false, "masked": true }] })
            }
            ("PUT", "/v2/credentialvault/credentials/{id}") => {
                json!({ "name": unique("mxren"), "version": 0 })
            }
            ("POST", "/v2/credentialvault/lockers") => json!({ "name": unique("mxlocker") }),
            ("PUT", "/v2/credentialvault/lockers/{id}") => {
                json!({ "name": unique("mxren"), "version": 0 })
            }
            ("PUT", "/v2/credentialvault/mode") => json!({ "name": "Manual" }),
            ("POST", "/api/v1/db/targets") => {
                json!({ "name": unique("mxdb"), "kind": "postgres", "host": "127.0.0.1", "port": 5432 })
            }
            _ => return None,
        };
        Some(body)
    }
}

/// Every row of the store but those that change by themselves (audit, tokens' last use,
/// heartbeats), as text.
fn snapshot(s: &Server) -> String {
    let listing = match &s.db {
        Db::Sqlite(_) => s.sql("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"),
        Db::Postgres(_) => s.sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
        ),
    };
    let volatile = [
        "audit_events",
        "audit_head",
        "tokens",
        "nodes",
        "sqlite_sequence",
        "haechi_migrations",
    ];
    let mut out = String::new();
    for table in listing.lines().map(str::trim).filter(|t| !t.is_empty()) {
        if volatile.contains(&table) {
            continue;
        }
        out.push_str(&format!("== {table}\n"));
        out.push_str(&s.sql(&format!("SELECT * FROM {table} ORDER BY 1")));
        out.push('\n');
    }
    out
}

/// The spellings a route is served under (the vault's four, one otherwise).
fn spellings(path: &str) -> Vec<String> {
    match path.strip_prefix("/v2/credentialvault") {
        Some(rest) => vec![
            path.to_owned(),
            format!("{path}/"),
            format!("/v2/credentialvault/{rest}"),
            format!("/v2/credentialvault/{rest}/"),
        ],
        None => vec![path.to_owned()],
    }
}

async fn send(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let url = if method == "GET" {
        s.url(&format!("{path}?limit=-1"))
    } else {
        s.url(path)
    };
    let mut req = client().request(m, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if method != "GET" {
        req = req.header("content-type", "application/json");
        req = match body {
            Some(b) => req.body(b.to_string()),
            None => req.body("{\"unterminated\": "),
        };
    }
    call(req).await
}

fn class(status: u16) -> &'static str {
    match status {
        401 => "401",
        403 => "403",
        _ => ALLOWED,
    }
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_permissions_page_says() {
    let s = Server::start_with(Opts::default().arg("--no-local-agent"));
    let admin = admin_token(&s).await;
    let rows = rows();
    let mut failures: Vec<String> = Vec::new();

    // The page's rows are the routes of the OpenAPI document, no more, no less.
    let (_, doc) = call(client().get(s.url("/api/v1/openapi.json"))).await;
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&m.as_str()) {
                documented.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    let tabled: BTreeSet<(String, String)> = rows
        .iter()
        .filter(|r| r.in_openapi)
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    for missing in documented.difference(&tabled) {
        failures.push(format!(
            "route {} {} has no row in docs/permissions.md",
            missing.0, missing.1
        ));
    }
    for extra in tabled.difference(&documented) {
        failures.push(format!(
            "docs/permissions.md has a row for {} {}, which is not a route of the OpenAPI document",
            extra.0, extra.1
        ));
    }
    for r in rows.iter().filter(|r| !r.in_openapi) {
        assert!(
            !documented.contains(&(r.method.clone(), r.path.clone())),
            "{} {} belongs in the first table",
            r.method,
            r.path
        );
    }

    // Each row's cells follow from its Needs and the built-in roles as the server defines them.
    let (st, roles) = call(client().get(s.url("/api/v1/roles")).bearer_auth(&admin)).await;
    assert_eq!(st, 200, "{roles}");
    let mut perms_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in roles["roles"].as_array().unwrap() {
        let perms = r["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        perms_of.insert(r["name"].as_str().unwrap().to_owned(), perms);
    }
    perms_of.insert("no role".into(), BTreeSet::new());
    for r in &rows {
        let want: Vec<&str> = CALLERS
            .iter()
            .map(|c| {
                let perms = (*c != "no token").then(|| {
                    perms_of
                        .get(*c)
                        .unwrap_or_else(|| panic!("built-in role {c} is missing"))
                });
                expected(&r.needs, perms)
            })
            .collect();
        if want != r.cells {
            failures.push(format!(
                "docs/permissions.md row {} {} (needs {}) should read | {} |",
                r.method,
                r.path,
                r.needs,
                want.join(" | ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The callers and the objects the paths name.
    let mut callers = Vec::new();
    for c in CALLERS {
        callers.push(match c {
            "no token" => Caller {
                user_id: String::new(),
                password: String::new(),
                token: None,
            },
            "no role" => {
                let (user_id, password, token) = user_with_roles(&s, &[]).await;
                Caller {
                    user_id,
                    password,
                    token: Some(token),
                }
            }
            role => {
                let (user_id, password, token) = user_with_roles(&s, &[role]).await;
                Caller {
                    user_id,
                    password,
                    token: Some(token),
                }
            }
        });
    }
    let fx = fixtures(&s, &admin).await;

    // Refused callers: refused before anything else is read, and nothing changes.
    let before = snapshot(&s);
    let mut refused = 0;
    for r in &rows {
        let valid = fx.valid_body(&r.method, &r.path);
        for (i, caller) in callers.iter().enumerate() {
            let want = r.cells[i].as_str();
            if want == ALLOWED {
                continue;
            }
            for path in spellings(&fx.fill(&r.path)) {
                let bodies: Vec<Option<&Value>> = match &valid {
                    Some(v) => vec![None, Some(v)],
                    None => vec![None],
                };
                for body in bodies {
                    let (st, answer) =
                        send(&s, &r.method, &path, caller.token.as_deref(), body).await;
                    refused += 1;
                    if class(st) != want {
                        failures.push(format!(
                            "{} {path} as {}: {st} {answer}, the table says {want}",
                            r.method, CALLERS[i]
                        ));
                    }
                }
            }
        }
    }
    let after = snapshot(&s);
    if before != after {
        let changed: Vec<String> = diff_lines(&before, &after);
        failures.push(format!(
            "refused requests changed the store:\n{}",
            changed.join("\n")
        ));
    }

    // Allowed callers get in (whatever the request deserves then: 2xx, 400, 404, 409...).
    let mut allowed = 0;
    for r in &rows {
        for (i, caller) in callers.iter().enumerate() {
            if r.cells[i] != ALLOWED {
                continue;
            }
            // Logging out ends the token: use one of its own.
            let logout = matches!(
                r.path.as_str(),
                "/api/v1/tokens/current" | "/v1/authentication/logout"
            );
            let token = match (&caller.token, logout) {
                (Some(_), true) => Some(login(&s, &caller.user_id, &caller.password).await),
                (t, _) => t.clone(),
            };
            for path in spellings(&fx.fill(&r.path)) {
                let (st, answer) = send(&s, &r.method, &path, token.as_deref(), None).await;
                allowed += 1;
                if class(st) != ALLOWED || st >= 500 {
                    failures.push(format!(
                        "{} {path} as {}: {st} {answer}, the table says it is allowed",
                        r.method, CALLERS[i]
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        refused > 1000 && allowed > 300,
        "{refused} refused, {allowed} allowed"
    );
    println!(
        "{} routes, {refused} refused and {allowed} allowed requests as the table says",
        rows.len()
    );
}

/// The lines of `b` that are not in `a` and the other way round.
fn diff_lines(a: &str, b: &str) -> Vec<String> {
    let a_set: BTreeSet<&str> = a.lines().collect();
    let b_set: BTreeSet<&str> = b.lines().collect();
    a_set
        .difference(&b_set)
        .map(|l| format!("- {l}"))
        .chain(b_set.difference(&a_set).map(|l| format!("+ {l}")))
        .collect()
}

async fn fixtures(s: &Server, admin: &str) -> Fixtures {
    let post =
        |path: &str, body: Value| call(client().post(s.url(path)).bearer_auth(admin).json(&body));
    let (victim, _, _) = user_with_roles(s, &["Vault User"]).await;
    let role = unique("matrix-role");
    let (st, b) = post(
        "/api/v1/roles",
        json!({ "name": role, "permissions": ["node.view"] }),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let task = unique("matrix-task");
    let (st, b) = post(
        "/api/v1/tasks",
        json!({ "id": task, "scriptName": "m.sh", "script": "true", "osUser": "nobody" }),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let (st, cred) = post(
        "/v2/credentialvault/credentials",
        json!({ "name": unique("matrix-cred"), "attributes": [{ "name": "pw", "userProvided": false, "masked": true }] }),
    )
    .await;
    assert_eq!(st, 201, "{cred}");
    let (st, locker) = post(
        "/v2/credentialvault/lockers",
        json!({ "name": unique("matrix-locker") }),
    )
    .await;
    assert_eq!(st, 201, "{locker}");
    let (st, wf) = post(
        "/api/v1/workflows",
        json!({ "name": unique("matrix-wf"), "group": "matrix", "steps": [{ "name": "a", "type": "sleep", "seconds": 0 }] }),
    )
    .await;
    assert_eq!(st, 201, "{wf}");
    let (st, policy) = post(
        "/dbsafer/api/v1/policy/custom/access-policies",
        json!({ "userId": victim, "account": "a", "serverAddress": "10.0.0.1", "serverPort": 5432, "sqlPrivileges": ["SELECT"] }),
    )
    .await;
    assert!(st == 200 || st == 201, "{st} {policy}");
    Fixtures {
        victim,
        role,
        task,
        credential: cred["id"].as_i64().unwrap(),
        locker: locker["id"].as_i64().unwrap(),
        workflow: wf["id"].as_str().unwrap().to_owned(),
        policy: policy["index"].as_i64().unwrap(),
    }
}
