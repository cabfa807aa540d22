//! `haechi doctor` (issue 27 item 4): each check prints OK/WARN/FAIL and what to do; the exit
//! code is non-zero when a check fails. One server, its state bent and put back check by check.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn doctor(s: &Server, config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("doctor")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(&s.data_dir)
        .env_remove("HAECHI_CONFIG")
        .env_remove("HAECHI_VAULT_MASTER_KEY");
    if let Db::Postgres(url) = &s.db {
        cmd.arg("--database-url").arg(url);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run haechi doctor");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The line of check `name` (its level word first).
fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.get(6..)
                .is_some_and(|rest| rest.starts_with(&format!("{name} ")))
        })
        .unwrap_or_else(|| panic!("no {name} line in:\n{out}"))
}

fn listen_of(s: &Server) -> String {
    s.base.trim_start_matches("https://").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_says_ok_then_names_each_problem_and_what_to_do() {
    let mut s = Server::start_with(Opts::default().env("HAECHI_AGENTS__HEARTBEAT_SECS", "1"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haechi.toml");
    std::fs::write(&cfg, format!("listen = \"{}\"\n", listen_of(&s))).unwrap();

    // The local agent reports its clock with its heartbeats.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.sql("SELECT COUNT(*) FROM nodes WHERE clock_skew_ms IS NOT NULL") == "0" {
        assert!(
            Instant::now() < deadline,
            "no heartbeat carried the agent's clock"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (code, out) = doctor(&s, &cfg, &[]);
    assert_eq!(code, 0, "{out}");
    for (check, says) in [
        ("store", "is reachable"),
        ("migrations", "current"),
        ("vault", "Express mode; the key from"),
        ("certificate", "days left"),
        ("server", "answers 200"),
        ("agents", "largest clock skew"),
        ("audit log", "the head matches"),
        ("data directory", ""),
    ] {
        let l = line(&out, check);
        assert!(l.starts_with("OK"), "{check}: {l}\n{out}");
        assert!(l.contains(says), "{check}: {l}");
    }
    // The machine's own disk may be fuller than the checks like: OK or WARN, never FAIL here.
    let disk = line(&out, "disk space");
    assert!(
        (disk.starts_with("OK") || disk.starts_with("WARN")) && disk.contains("free of"),
        "{disk}"
    );
    assert!(out.contains("0 FAIL"), "{out}");

    // A key that is not the vault's: FAIL, and what to do.
    let (code, out) = doctor(
        &s,
        &cfg,
        &[(
            "HAECHI_VAULT_MASTER_KEY",
            "b3RoZXIta2V5LW9mLTMyLWJ5dGVzLWZvci10ZXN0ISE=",
        )],
    );
    assert_eq!(code, 1, "{out}");
    let l = line(&out, "vault");
    assert!(
        l.starts_with("FAIL") && l.contains("not this vault's"),
        "{out}"
    );
    assert!(
        out.contains("→ give the key this store was made with"),
        "{out}"
    );

    // The server stops: the doctor says so, and what to do; the store is checked all the same.
    // (Stopped, the agent's heartbeats no longer overwrite what the checks below plant.)
    s.stop();
    let (code, out) = doctor(&s, &cfg, &[]);
    assert_eq!(code, 0, "{out}");
    let l = line(&out, "server");
    assert!(
        l.starts_with("WARN") && l.contains("nothing answers"),
        "{out}"
    );
    assert!(out.contains("→ start it (systemctl start haechi)"), "{out}");
    assert!(line(&out, "agents").starts_with("OK"), "{out}");

    // An agent's clock far off the server's.
    let node = s.sql("SELECT id FROM nodes WHERE clock_skew_ms IS NOT NULL LIMIT 1");
    s.sql(&format!(
        "UPDATE nodes SET clock_skew_ms = 45000, heartbeat_at = {} WHERE id = '{node}'",
        now_ms()
    ));
    let (code, out) = doctor(&s, &cfg, &[]);
    assert_eq!(code, 1, "{out}");
    let l = line(&out, "agents");
    assert!(
        l.starts_with("FAIL") && l.contains(&node) && l.contains("+45.0 s"),
        "{out}"
    );
    assert!(out.contains("→ run NTP"), "{out}");
    s.sql(&format!(
        "UPDATE nodes SET clock_skew_ms = 2500 WHERE id = '{node}'"
    ));
    let (code, out) = doctor(&s, &cfg, &[]);
    assert_eq!(code, 0, "a WARN alone does not fail: {out}");
    assert!(line(&out, "agents").starts_with("WARN"), "{out}");
    s.sql(&format!(
        "UPDATE nodes SET clock_skew_ms = 0 WHERE id = '{node}'"
    ));

    // A store of a newer schema than this binary knows.
    s.sql("INSERT INTO haechi_migrations (version, name, checksum, applied_at) VALUES (9999, '9999_future', 'x', 0)");
    let (code, out) = doctor(&s, &cfg, &[]);
    s.sql("DELETE FROM haechi_migrations WHERE version = 9999");
    assert_eq!(code, 1, "{out}");
    let l = line(&out, "migrations");
    assert!(
        l.starts_with("FAIL") && l.contains("schema 9999 is newer"),
        "{out}"
    );

    // An expired certificate.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("old.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("old.key"), key.serialize_pem()).unwrap();
    let expired = dir.path().join("expired.toml");
    std::fs::write(
        &expired,
        format!(
            "listen = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            listen_of(&s),
            dir.path().join("old.pem").display(),
            dir.path().join("old.key").display()
        ),
    )
    .unwrap();
    let (code, out) = doctor(&s, &expired, &[]);
    assert_eq!(code, 1, "{out}");
    let l = line(&out, "certificate");
    assert!(
        l.starts_with("FAIL") && l.contains("EXPIRED 2021-01-01"),
        "{out}"
    );
    assert!(out.contains("→ renew the certificate"), "{out}");

    // No store where it is looked for.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["doctor", "--offline", "--data-dir"])
        .arg(empty.path())
        .env_remove("HAECHI_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        line(&text, "store").starts_with("FAIL") && text.contains("no store at"),
        "{text}"
    );

    drop(s);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `haechi agent install` writes the unit and keeps the enrolment token out of it (in a 0600
/// environment file); it refuses to replace them without --force, and says what is wrong.
#[test]
fn agent_install_writes_the_unit_with_the_token_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    let env = dir.path().join("etc/agent.env");
    let fp = "AB:".repeat(31) + "AB";
    let run = |extra: &[&str]| {
        let out = Command::new(bin())
            .args([
                "agent",
                "install",
                "--server",
                "https://haechi.example:8443",
            ])
            .arg("--unit-dir")
            .arg(&units)
            .arg("--env-file")
            .arg(&env)
            .args(extra)
            .env_remove("HAECHI_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = run(&[
        "--enroll-token",
        "hce_secret_token",
        "--server-fingerprint",
        &fp,
        "--node-id",
        "db 01",
    ]);
    assert_eq!(code, 0, "{out}");
    let unit = std::fs::read_to_string(units.join("haechi-agent.service")).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart=/usr/bin/haechi agent --server https://haechi.example:8443 --data-dir /var/lib/haechi-agent --server-fingerprint {fp} --node-id \"db 01\""
        )),
        "{unit}"
    );
    assert!(
        unit.contains("StateDirectory=haechi-agent") && unit.contains("WantedBy=multi-user.target")
    );
    assert!(
        !unit.contains("hce_secret_token"),
        "the token is not in the unit"
    );
    let env_text = std::fs::read_to_string(&env).unwrap();
    assert!(env_text.contains("HAECHI_ENROLL_TOKEN=hce_secret_token"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Not over an existing unit without --force; trust must be said; a bad fingerprint is named.
    let (code, out) = run(&["--enroll-token", "other", "--server-fingerprint", &fp]);
    assert!(code != 0 && out.contains("--force"), "{out}");
    assert!(
        std::fs::read_to_string(&env)
            .unwrap()
            .contains("hce_secret_token"),
        "unchanged"
    );
    let (code, out) = run(&["--force", "--enroll-token", "other"]);
    assert!(code != 0 && out.contains("--server-fingerprint"), "{out}");
    let (code, out) = run(&["--force", "--server-fingerprint", "nope"]);
    assert!(
        code != 0 && out.contains("not a SHA-256 fingerprint"),
        "{out}"
    );
    let (code, out) = run(&[
        "--force",
        "--enroll-token",
        "two words",
        "--server-fingerprint",
        &fp,
    ]);
    assert!(code != 0 && out.contains("one word"), "{out}");
    assert!(
        std::fs::read_to_string(&env)
            .unwrap()
            .contains("hce_secret_token"),
        "unchanged"
    );
}
