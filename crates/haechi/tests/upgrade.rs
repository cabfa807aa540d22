//! Upgrades (issue 27 item 4): the store of the previous schema, kept as a fixture
//! (`tests/fixtures/upgrade/schema-12`, made by `make.sh` with the binary of that schema),
//! upgrades in place when a server of this version starts on it, on SQLite and on
//! PostgreSQL, and everything in it reads back: users, roles, the vault's values (Express, with
//! the fixture's key), tasks, workflows, DBSAFER policies, and the audit chain.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::json;

/// The fixture's vault master key and admin password (see make.sh).
const KEY: &str = "Zml4dHVyZS1tYXN0ZXIta2V5LTMyLWJ5dGVzLSEhISE=";
const ADMIN: &str = "Fixture-Admin-Pass-1";
const SCHEMA: i64 = 12;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade/schema-12")
}

struct DropDb(String);

impl Drop for DropDb {
    fn drop(&mut self) {
        if let Some(admin) = pg_admin_url() {
            let _ = Command::new("psql")
                .args([
                    admin.as_str(),
                    "-qtAc",
                    &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0),
                ])
                .output();
        }
    }
}

fn doctor(data_dir: &std::path::Path, db: &Db) -> (i32, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["doctor", "--offline", "--data-dir"])
        .arg(data_dir)
        .env("HAECHI_VAULT_MASTER_KEY", KEY)
        .env_remove("HAECHI_CONFIG");
    if let Db::Postgres(url) = db {
        cmd.arg("--database-url").arg(url);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn the_previous_schema_upgrades_in_place_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let (db, _guard) = match pg_admin_url() {
        Some(admin) => {
            let name = unique("haechi_t_upgrade_").to_lowercase();
            let run = |args: &[&str]| {
                let out = Command::new("psql").args(args).output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(&[admin.as_str(), "-qtAc", &format!("CREATE DATABASE {name}")]);
            let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
            let dump = fixture().join("postgres.sql");
            run(&[
                url.as_str(),
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-f",
                dump.to_str().unwrap(),
            ]);
            (Db::Postgres(url), Some(DropDb(name)))
        }
        None => {
            let path = data.join("haechi.db");
            std::fs::copy(fixture().join("haechi.db"), &path).unwrap();
            (Db::Sqlite(path), None)
        }
    };

    // Before: the doctor sees the older schema and says what to do; it is a warning.
    let (code, out) = doctor(&data, &db);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("WARN")
            && l.contains(&format!("schema {SCHEMA}; this Haechi brings"))),
        "{out}"
    );
    assert!(out.contains("take a backup (haechi backup)"), "{out}");

    let s = Server::start_with(
        Opts {
            reuse: Some((data.clone(), db.clone())),
            ..Default::default()
        }
        .env("HAECHI_VAULT_MASTER_KEY", KEY),
    );
    assert!(
        s.sql("SELECT MAX(version) FROM haechi_migrations")
            .parse::<i64>()
            .unwrap()
            > SCHEMA,
        "the schema was upgraded"
    );
    let token = login(&s, "admin", ADMIN).await;
    let get = |path: &str| {
        let (url, token) = (s.url(path), token.clone());
        async move { call(client().get(url).bearer_auth(token)).await }
    };

    // Identity.
    let (st, u) = get("/api/v1/users/fx-operator").await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["name"], "운영자 Fixture");
    assert_eq!(u["roles"], json!(["Workflow Operator"]));
    assert_eq!(u["allowed_ips"], json!(["10.0.0.0/8", "127.0.0.1/32"]));
    assert_eq!(get("/api/v1/users/fx-bot").await.1["kind"], "api");
    let (_, roles) = get("/api/v1/roles").await;
    assert!(roles.to_string().contains("FX Reader"), "{roles}");
    // A fixture user logs in with the password set under the old version.
    login(&s, "fx-approver", "Fx-Approver-Pass-1").await;

    // The vault: the value decrypts with the fixture's key.
    let (st, creds) = call(
        client()
            .get(s.url("/v2/credentialvault/credentials"))
            .header("X-Authorization", &token),
    )
    .await;
    assert_eq!(st, 200, "{creds}");
    let cred = creds["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "fx-db")
        .unwrap_or_else(|| panic!("fx-db is missing: {creds}"))
        .clone();
    let (st, v) = call(
        client()
            .get(s.url(&format!(
                "/v2/credentialvault/credentials/{}/attributevalues",
                cred["id"]
            )))
            .header("X-Authorization", &token),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["list"][0]["value"], "s3cr3t-픽스처-value");

    // Tasks, workflows, DBSAFER policies.
    let (st, t) = get("/api/v1/tasks/fx-task").await;
    assert_eq!((st, &t["apprvStatus"]), (200, &json!("Q")), "{t}");
    let (_, wfs) = get("/api/v1/workflows").await;
    assert!(wfs.to_string().contains("fx-wf"), "{wfs}");
    let (st, p) = get("/dbsafer/api/v1/policy/custom/access-policies?userId=fx-operator").await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["results"].as_array().map(Vec::len), Some(1), "{p}");

    // The chain verifies across the upgrade, with the new events after the old ones.
    let (code, out) = s.audit_verify();
    assert_eq!(code, 0, "{out}");
    // What the new schema added works on the upgraded store.
    assert_eq!(s.sql("SELECT COUNT(*) FROM audit_sink_cursors"), "0");
    s.finish().await;

    let (code, out) = doctor(&data, &db);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("OK") && l.contains("current")),
        "{out}"
    );
}
