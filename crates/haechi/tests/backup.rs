//! `haechi backup` / `haechi restore` (issue 27 item 1): a backup taken under a write load holds
//! everything acknowledged before it started; restored into a fresh directory (and, on
//! PostgreSQL, a fresh database), a server answers the reads, every credential value decrypts
//! (Express) or unseals with the key (Manual), the audit chain verifies and the counts match
//! the manifest. Bad input is refused with a clear message and changes nothing.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const MASTER_KEY: &str = "YmFja3VwLXRlc3QtbWFzdGVyLWtleS0zMi1ieXRlcyE=";
const PASSPHRASE: &str = "correct horse battery staple 한글";

fn haechi(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .env_remove("HAECHI_CONFIG")
        .env_remove("HAECHI_VAULT_MASTER_KEY")
        .env_remove("HAECHI_DATABASE_URL")
        .output()
        .expect("run haechi");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `haechi backup` of a server's store into `out`, with `extra` arguments.
fn backup(s: &Server, out: &Path, extra: &[&str]) -> (i32, String) {
    BackupOf {
        data_dir: s.data_dir.clone(),
        db: s.db.clone(),
    }
    .run(out, extra)
}

/// A fresh place to restore into: a data directory and, on PostgreSQL, an empty database
/// (dropped when the guard goes).
struct Target {
    dir: PathBuf,
    db: Db,
    _tmp: tempfile::TempDir,
    _guard: Option<DropDb>,
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

fn target() -> Target {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("restored");
    let (db, guard) = match pg_admin_url() {
        Some(admin) => {
            let name = unique("haechi_t_restore_").to_lowercase();
            let out = Command::new("psql")
                .args([admin.as_str(), "-qtAc", &format!("CREATE DATABASE {name}")])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let base = admin.rsplit_once('/').unwrap().0;
            (Db::Postgres(format!("{base}/{name}")), Some(DropDb(name)))
        }
        None => (Db::Sqlite(dir.join("haechi.db")), None),
    };
    Target {
        dir,
        db,
        _tmp: tmp,
        _guard: guard,
    }
}

fn restore(archive: &Path, t: &Target, passphrase: Option<&Path>) -> (i32, String) {
    let mut args = vec![
        "restore".to_owned(),
        "--from".into(),
        archive.display().to_string(),
        "--data-dir".into(),
        t.dir.display().to_string(),
    ];
    if let Db::Postgres(url) = &t.db {
        args.extend(["--database-url".into(), url.clone()]);
    }
    if let Some(p) = passphrase {
        args.extend(["--passphrase-file".into(), p.display().to_string()]);
    }
    haechi(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The archive's manifest.
fn manifest(archive: &Path) -> Value {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut first = tar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(first.path().unwrap().to_str().unwrap(), "manifest.json");
    let mut text = String::new();
    first.read_to_string(&mut text).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Runs SQL on a store that no server has open (a restored one).
fn sql_on(db: &Db, sql: &str) -> String {
    let out = match db {
        Db::Postgres(url) => Command::new("psql")
            .args([url.as_str(), "-qtAc", sql])
            .output()
            .unwrap(),
        Db::Sqlite(path) => Command::new("sqlite3").arg(path).arg(sql).output().unwrap(),
    };
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn vault_call(
    s: &Server,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = client()
        .request(method, s.url(&format!("/v2/credentialvault{path}")))
        .header("X-Authorization", token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    call(r).await
}

/// Creates a credential with one attribute holding `value`; returns its id.
async fn credential_with_value(s: &Server, token: &str, value: &str) -> Option<i64> {
    let (st, c) = vault_call(
        s,
        token,
        reqwest::Method::POST,
        "/credentials",
        Some(json!({"name": unique("bk"), "description": "backup test",
                    "attributes": [{"name": "pw", "userProvided": false, "masked": true}]})),
    )
    .await;
    if st != 201 {
        return None;
    }
    let id = c["id"].as_i64()?;
    let attr = c["attributes"][0]["id"].as_i64()?;
    let (st, _) = vault_call(
        s,
        token,
        reqwest::Method::POST,
        &format!("/credentials/{id}/attributevalues"),
        Some(json!([{"credentialAttributeId": attr, "value": value}])),
    )
    .await;
    (st == 201).then_some(id)
}

async fn value_of(s: &Server, token: &str, id: i64) -> (u16, Value) {
    vault_call(
        s,
        token,
        reqwest::Method::GET,
        &format!("/credentials/{id}/attributevalues"),
        None,
    )
    .await
}

/// What the load acknowledged, with the moment of each answer.
#[derive(Default)]
struct Acked {
    users: Vec<(Instant, String)>,
    values: Vec<(Instant, i64, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_everything_acknowledged_before_it() {
    // Express mode with the key the server generated and keeps in its data directory.
    let s = Server::start();
    let vault_key = std::fs::read_to_string(s.data_dir.join("vault.key")).unwrap();
    let token = admin_token(&s).await;
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // The write load: users and credentials with values, one after another, each remembered
    // once acknowledged.
    let mut load = Vec::new();
    for worker in 0..2 {
        let (acked, stop, token, base) =
            (acked.clone(), stop.clone(), token.clone(), s.base.clone());
        load.push(tokio::spawn(async move {
            let s = LoadTarget(base);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                if worker == 0 {
                    let user = unique("load");
                    let (st, _) = call(
                        client()
                            .post(s.url("/api/v1/users"))
                            .bearer_auth(&token)
                            .json(&json!({"user_id": user, "name": "부하 사용자", "password": "Load-Pass-12345", "roles": []})),
                    )
                    .await;
                    if st == 201 {
                        acked.lock().unwrap().users.push((Instant::now(), user));
                    }
                } else {
                    let value = format!("값-{n}-{}", unique("v"));
                    if let Some(id) = s.credential(&token, &value).await {
                        acked.lock().unwrap().values.push((Instant::now(), id, value));
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("nightly.tar");
    let pass = dir.path().join("passphrase");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let started = Instant::now();
    let (code, out) = {
        let (data_dir, db, archive, pass) = (
            s.data_dir.clone(),
            s.db.clone(),
            archive.clone(),
            pass.clone(),
        );
        tokio::task::spawn_blocking(move || {
            BackupOf { data_dir, db }.run(
                &archive,
                &[
                    "--include-vault-key",
                    "--passphrase-file",
                    pass.to_str().unwrap(),
                ],
            )
        })
        .await
        .unwrap()
    };
    // The load goes on a little after the backup, then stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("backup written to"), "{out}");
    assert!(
        !out.contains(vault_key.trim()),
        "the key is never printed: {out}"
    );

    let m = manifest(&archive);
    assert_eq!(m["format"], "haechi-backup");
    assert_eq!(
        m["backend"],
        if pg_admin_url().is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    );
    assert_eq!(
        m["schema_version"].as_i64().unwrap(),
        haechi_store::MIGRATIONS.last().unwrap().version,
        "{m}"
    );
    let secrets: Vec<&str> = m["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        secrets.contains(&"vault.key") && secrets.contains(&"tls/key.pem"),
        "{m}"
    );
    // The archive never holds a secret in clear: not the key, not a value, not the TLS key.
    let bytes = std::fs::read(&archive).unwrap();
    assert!(!bytes_contain(&bytes, vault_key.trim()));
    assert!(!bytes_contain(&bytes, "PRIVATE KEY"));
    let (values_before, users_before) = {
        let a = acked.lock().unwrap();
        (
            a.values
                .iter()
                .filter(|(t, _, _)| *t < started)
                .map(|(_, i, v)| (*i, v.clone()))
                .collect::<Vec<_>>(),
            a.users
                .iter()
                .filter(|(t, _)| *t < started)
                .map(|(_, u)| u.clone())
                .collect::<Vec<_>>(),
        )
    };
    assert!(
        values_before.len() >= 3 && users_before.len() >= 3,
        "the load ran: {} values, {} users",
        values_before.len(),
        users_before.len()
    );
    for (id, value) in &values_before {
        assert!(
            !bytes_contain(&bytes, value),
            "value {id} is in clear in the archive"
        );
    }

    // Restore into a fresh place.
    let t = target();
    let (code, out) = restore(&archive, &t, Some(&pass));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit chain intact"), "{out}");
    // Counts match the manifest (read before any server touches the restored store).
    for (table, n) in m["counts"].as_object().unwrap() {
        assert_eq!(
            sql_on(&t.db, &format!("SELECT COUNT(*) FROM {table}")),
            n.to_string(),
            "rows of {table}"
        );
    }
    assert_eq!(
        sql_on(&t.db, "SELECT seq FROM audit_head"),
        m["audit_head_seq"].to_string()
    );
    assert_eq!(
        std::fs::read_to_string(t.dir.join("vault.key")).unwrap(),
        vault_key
    );
    assert!(t.dir.join("tls/key.pem").exists());
    assert!(
        t.dir.join("agent/credential.json").exists(),
        "the local agent's credential"
    );

    // A server on the restored state (without the key in its environment: the restored key file).
    let r = Server::start_with(Opts {
        reuse: Some((t.dir.clone(), t.db.clone())),
        ..Default::default()
    });
    assert_eq!(
        r.fingerprint, s.fingerprint,
        "the same certificate, so agents' pins hold"
    );
    let rt = admin_token(&r).await;
    for user in &users_before {
        let (st, u) = call(
            client()
                .get(r.url(&format!("/api/v1/users/{}", enc(user))))
                .bearer_auth(&rt),
        )
        .await;
        assert_eq!(
            st, 200,
            "user {user} acknowledged before the backup is missing: {u}"
        );
    }
    for (id, value) in &values_before {
        let (st, v) = value_of(&r, &rt, *id).await;
        assert_eq!(st, 200, "credential {id}: {v}");
        assert_eq!(v["list"][0]["value"], json!(value), "credential {id}");
    }
    // Everything in the backup reads the same on both servers.
    let (_, old_list) = call(
        client()
            .get(s.url("/api/v1/users?limit=1000"))
            .bearer_auth(&token),
    )
    .await;
    let (_, new_list) = call(
        client()
            .get(r.url("/api/v1/users?limit=1000"))
            .bearer_auth(&rt),
    )
    .await;
    let ids = |v: &Value| -> std::collections::BTreeSet<String> {
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let restored_ids = ids(&new_list);
    assert!(
        restored_ids.is_subset(&ids(&old_list)),
        "nothing appears that the old server did not have"
    );
    assert_eq!(
        restored_ids.len() as i64,
        m["counts"]["users"].as_i64().unwrap()
    );
    let (code, out) = r.audit_verify();
    assert_eq!(code, 0, "{out}");
    r.finish().await;
    s.finish().await;
}

/// A server's store, by data directory and database, for a backup run off the test's runtime.
struct BackupOf {
    data_dir: PathBuf,
    db: Db,
}

impl BackupOf {
    fn run(&self, out: &Path, extra: &[&str]) -> (i32, String) {
        let mut args = vec![
            "backup".to_owned(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let Db::Postgres(url) = &self.db {
            args.extend(["--database-url".into(), url.clone()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        haechi(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// The load's view of the server (its base URL).
struct LoadTarget(String);

impl LoadTarget {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    async fn credential(&self, token: &str, value: &str) -> Option<i64> {
        let (st, c) = call(
            client()
                .post(self.url("/v2/credentialvault/credentials"))
                .header("X-Authorization", token)
                .json(&json!({"name": unique("bk"), "description": "backup test",
                              "attributes": [{"name": "pw", "userProvided": false, "masked": true}]})),
        )
        .await;
        if st != 201 {
            return None;
        }
        let id = c["id"].as_i64()?;
        let attr = c["attributes"][0]["id"].as_i64()?;
        let (st, _) = call(
            client()
                .post(self.url(&format!(
                    "/v2/credentialvault/credentials/{id}/attributevalues"
                )))
                .header("X-Authorization", token)
                .json(&json!([{"credentialAttributeId": attr, "value": value}])),
        )
        .await;
        (st == 201).then_some(id)
    }
}

#[tokio::test]
async fn a_manual_vault_restores_sealed_and_unseals_with_its_key() {
    let s = Server::start_with(Opts::default().env("HAECHI_VAULT_MASTER_KEY", MASTER_KEY));
    let token = admin_token(&s).await;
    let id = credential_with_value(&s, &token, "수동-모드-비밀")
        .await
        .expect("credential");
    let (st, b) = vault_call(
        &s,
        &token,
        reqwest::Method::PUT,
        "/mode",
        Some(json!({"name": "Manual", "privatekey": MASTER_KEY})),
    )
    .await;
    assert!(st == 200 || st == 204, "{st} {b}");

    // No passphrase: no secret goes in, and the backup says so.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("manual.tar");
    let (code, out) = backup(&s, &archive, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("vault master key is not in the archive"),
        "{out}"
    );
    assert!(out.contains("TLS certificate and key"), "{out}");
    let m = manifest(&archive);
    assert_eq!(m["vault_mode"], "Manual");
    assert_eq!(m["secrets"], json!([]));

    let t = target();
    let (code, out) = restore(&archive, &t, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Manual mode"), "{out}");
    let r = Server::start_with(Opts {
        reuse: Some((t.dir.clone(), t.db.clone())),
        ..Default::default()
    });
    let rt = admin_token(&r).await;
    let (st, e) = value_of(&r, &rt, id).await;
    assert_eq!(st, 503, "sealed until the key is applied: {e}");
    let (st, e) = vault_call(
        &r,
        &rt,
        reqwest::Method::PUT,
        "/keys/private",
        Some(json!({"privateKey": MASTER_KEY})),
    )
    .await;
    assert!(st == 200 || st == 204, "{st} {e}");
    let (st, v) = value_of(&r, &rt, id).await;
    assert_eq!(
        (st, &v["list"][0]["value"]),
        (200, &json!("수동-모드-비밀")),
        "{v}"
    );
    let (code, out) = r.audit_verify();
    assert_eq!(code, 0, "{out}");
    r.finish().await;
    s.finish().await;
}

/// Rewrites an archive member by member through `edit` (name, bytes) → bytes.
fn rewrite(archive: &Path, out: &Path, mut edit: impl FnMut(&str, Vec<u8>) -> Vec<u8>) {
    let mut src = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut dst = tar::Builder::new(std::fs::File::create(out).unwrap());
    for e in src.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        let bytes = edit(&name, bytes);
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        dst.append_data(&mut h, &name, bytes.as_slice()).unwrap();
    }
    dst.finish().unwrap();
}

#[tokio::test]
async fn bad_backups_and_bad_targets_are_refused_and_change_nothing() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, PASSPHRASE).unwrap();
    let archive = dir.path().join("ok.tar");
    let (code, out) = backup(
        &s,
        &archive,
        &[
            "--with-vault-key",
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");

    // Backup: never over an existing file; the vault key only with a passphrase; a short one.
    let (code, out) = backup(&s, &archive, &[]);
    assert!(code != 0 && out.contains("exists"), "{out}");
    let other = dir.path().join("other.tar");
    let (code, out) = backup(&s, &other, &["--include-vault-key"]);
    assert!(code != 0 && out.contains("--passphrase-file"), "{out}");
    let short = dir.path().join("short");
    std::fs::write(&short, "abc").unwrap();
    let (code, out) = backup(&s, &other, &["--passphrase-file", short.to_str().unwrap()]);
    assert!(code != 0 && out.contains("shorter than 12"), "{out}");
    assert!(!other.exists());

    // Restore: into a directory that holds something.
    let t = target();
    std::fs::create_dir_all(&t.dir).unwrap();
    std::fs::write(t.dir.join("keep.txt"), "mine").unwrap();
    let (code, out) = restore(&archive, &t, Some(&pass));
    assert!(
        code != 0 && out.contains("not empty") && out.contains("keep.txt"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(&t.dir).unwrap().count(),
        1,
        "nothing was added"
    );
    std::fs::remove_file(t.dir.join("keep.txt")).unwrap();

    // A wrong passphrase, a missing one.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase at all").unwrap();
    let (code, out) = restore(&archive, &t, Some(&wrong));
    assert!(
        code != 0 && out.contains("passphrase does not open"),
        "{out}"
    );
    let (code, out) = restore(&archive, &t, None);
    assert!(code != 0 && out.contains("give --passphrase-file"), "{out}");
    assert_eq!(
        std::fs::read_dir(&t.dir).unwrap().count(),
        0,
        "nothing was written"
    );

    // A newer schema.
    let newer = dir.path().join("newer.tar");
    rewrite(&archive, &newer, |name, bytes| {
        if name != "manifest.json" {
            return bytes;
        }
        let mut m: Value = serde_json::from_slice(&bytes).unwrap();
        m["schema_version"] = json!(m["schema_version"].as_i64().unwrap() + 1000);
        m["haechi_version"] = json!("9.9.9");
        serde_json::to_vec(&m).unwrap()
    });
    let (code, out) = restore(&newer, &t, Some(&pass));
    assert!(
        code != 0 && out.contains("newer than this Haechi knows") && out.contains("9.9.9"),
        "{out}"
    );

    // A member altered after the backup.
    let altered = dir.path().join("altered.tar");
    rewrite(&archive, &altered, |name, mut bytes| {
        if name.starts_with("store/") {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
        }
        bytes
    });
    let (code, out) = restore(&altered, &t, Some(&pass));
    assert!(
        code != 0 && out.contains("does not match its SHA-256"),
        "{out}"
    );

    // Not an archive at all.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"hello").unwrap();
    let (code, out) = restore(&junk, &t, None);
    assert!(code != 0 && out.contains("not a Haechi backup"), "{out}");
    assert_eq!(
        std::fs::read_dir(&t.dir).unwrap().count(),
        0,
        "nothing was written"
    );
    if let Db::Postgres(url) = &t.db {
        let out = Command::new("psql")
            .args([
                url.as_str(),
                "-qtAc",
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "the database stayed empty"
        );
    }

    // And the good archive restores into the same, still empty, place (with the brief's
    // spellings of the options: --in, --data).
    let mut args = vec![
        "restore".to_owned(),
        "--in".into(),
        archive.display().to_string(),
        "--data".into(),
        t.dir.display().to_string(),
        "--passphrase-file".into(),
        pass.display().to_string(),
    ];
    if let Db::Postgres(url) = &t.db {
        args.extend(["--database-url".into(), url.clone()]);
    }
    let (code, out) = haechi(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{out}");
    assert!(t.dir.join("haechi.db").exists() || matches!(t.db, Db::Postgres(_)));
    s.finish().await;
}
