//! The `haechi` command line (CONTRACT §0, §7): help, the example configuration, the server's
//! certificate and fingerprint, the bootstrap password, `haechi login` with a pinned
//! fingerprint, plain HTTP only where it is safe, and `haechi audit verify`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `haechi <args>` with a clean environment of Haechi variables.
fn haechi(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("HAECHI_CONFIG")
        .env_remove("HAECHI_SERVER")
        .env_remove("HAECHI_ADMIN_PASSWORD")
        .env_remove("RUST_LOG");
    cmd
}

fn run_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn haechi");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn help_lists_the_commands() {
    let out = haechi(&["--help"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for c in ["server", "login", "user", "audit", "config"] {
        assert!(
            commands.contains(&c),
            "`haechi --help` must list {c}:\n{help}"
        );
    }
    let out = haechi(&["server", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--data-dir", "--listen", "--database-url", "--plain-http"] {
        assert!(
            help.contains(flag),
            "`haechi server --help` must list {flag}:\n{help}"
        );
    }
    let out = haechi(&["no-such-command"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn config_example_is_a_loadable_commented_file() {
    let out = haechi(&["config", "example"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let example = String::from_utf8(out.stdout).unwrap();
    assert!(example.contains("listen"), "{example}");
    assert!(example.contains("[identity]"), "{example}");
    assert!(
        example
            .lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            > 10,
        "commented: {example}"
    );
    // The file as printed is a valid configuration.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("haechi.toml");
    std::fs::write(&file, &example).unwrap();
    let out = haechi(&["--config", file.to_str().unwrap(), "config", "show"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the example must load: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("listen"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_certificate_and_its_fingerprint_survive_a_restart() {
    let mut s = Server::start();
    let fp = s
        .fingerprint
        .clone()
        .expect("the server prints its fingerprint");
    assert!(s.logs().contains("fingerprint: "), "{}", s.logs());
    assert_eq!(fp.replace(':', "").len(), 64, "a SHA-256 fingerprint: {fp}");
    assert!(
        fp.replace(':', "").chars().all(|c| c.is_ascii_hexdigit()),
        "{fp}"
    );
    let cert = s.data_dir.join("tls/cert.pem");
    let key = s.data_dir.join("tls/key.pem");
    assert!(std::fs::read_to_string(&cert)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("PRIVATE KEY"));
    #[cfg(unix)]
    {
        assert_eq!(
            mode(&key),
            0o600,
            "the private key is readable by its owner only"
        );
        assert_eq!(mode(&s.data_dir), 0o700, "the data directory is private");
    }
    let cert_before = std::fs::read(&cert).unwrap();
    s.stop();
    let again = Server::start_with(s.same_state());
    assert_eq!(
        again.fingerprint.as_deref(),
        Some(fp.as_str()),
        "same certificate after a restart"
    );
    assert_eq!(std::fs::read(&cert).unwrap(), cert_before);
    assert!(again.base.starts_with("https://"));
}

/// The random bootstrap password printed by a server, if any.
fn printed_password(logs: &str) -> Option<String> {
    logs.split("password (shown once): ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

#[tokio::test]
async fn the_bootstrap_password_is_random_printed_once_and_works() {
    let s = Server::start_with(Opts::default().without_env("HAECHI_ADMIN_PASSWORD"));
    let logs = s.logs();
    let pw =
        printed_password(&logs).unwrap_or_else(|| panic!("no bootstrap password printed:\n{logs}"));
    assert!(pw.len() >= 16, "a strong password: {pw}");
    assert_ne!(pw, ADMIN_PASSWORD);
    assert_eq!(
        logs.matches(pw.as_str()).count(),
        1,
        "printed once, and nowhere else:\n{logs}"
    );
    login(&s, "admin", &pw).await;
    let (st, _) = call(
        client()
            .post(s.url("/api/v1/auth"))
            .json(&serde_json::json!({"user_id": "admin", "pwd": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(st, 401);

    let s = s.stop_async().await;
    let again = Server::start_with(s.same_state().without_env("HAECHI_ADMIN_PASSWORD"));
    let logs = again.logs();
    assert!(
        !logs.contains("shown once") && !logs.contains(&pw),
        "not printed again:\n{logs}"
    );
    login(&again, "admin", &pw).await;
    again.finish().await;
}

#[tokio::test]
async fn cli_login_pins_the_fingerprint_and_keeps_a_private_session() {
    let s = shared();
    let fp = s.fingerprint.clone().expect("fingerprint");
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session.json");

    let mut cmd = haechi(&[
        "login",
        "--server",
        &s.base,
        "--fingerprint",
        &fp,
        "-u",
        "admin",
        "--password-stdin",
    ]);
    cmd.env("HAECHI_SESSION", &session);
    let out = run_with_stdin(cmd, &format!("{ADMIN_PASSWORD}\n"));
    assert!(out.status.success(), "login: {}", text(&out));
    let saved = std::fs::read_to_string(&session).expect("a session file");
    assert!(
        !saved.contains(ADMIN_PASSWORD),
        "the session keeps a token, not the password"
    );
    #[cfg(unix)]
    assert_eq!(mode(&session), 0o600, "the session file is private");

    let out = haechi(&["user", "list"])
        .env("HAECHI_SESSION", &session)
        .output()
        .unwrap();
    assert!(out.status.success(), "user list: {}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON expected ({e}): {}", text(&out)));
    assert!(
        list["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["user_id"] == "admin"),
        "{list}"
    );

    let out = haechi(&["user", "show", "admin"])
        .env("HAECHI_SESSION", &session)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let admin: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(admin["user_id"], "admin");

    // The fingerprint may be written without colons and in lower case.
    let other = dir.path().join("other.json");
    let bare = fp.replace(':', "").to_lowercase();
    let mut cmd = haechi(&[
        "login",
        "--server",
        &s.base,
        "--fingerprint",
        &bare,
        "-u",
        "admin",
        "--password-stdin",
    ]);
    cmd.env("HAECHI_SESSION", &other);
    let out = run_with_stdin(cmd, &format!("{ADMIN_PASSWORD}\n"));
    assert!(out.status.success(), "{}", text(&out));

    // A wrong password fails and says so.
    let failed = dir.path().join("failed.json");
    let mut cmd = haechi(&[
        "login",
        "--server",
        &s.base,
        "--fingerprint",
        &fp,
        "-u",
        "admin",
        "--password-stdin",
    ]);
    cmd.env("HAECHI_SESSION", &failed);
    let out = run_with_stdin(cmd, "not-the-password\n");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("wrong user id or password"),
        "{}",
        text(&out)
    );
    assert!(!failed.exists());

    // Without a session, client commands fail with advice.
    let out = haechi(&["user", "list"])
        .env("HAECHI_SESSION", dir.path().join("none.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("haechi login"), "{}", text(&out));
}

#[test]
fn cli_login_refuses_a_server_with_another_fingerprint() {
    let s = shared();
    let fp = s.fingerprint.clone().expect("fingerprint");
    let first = fp.chars().next().unwrap();
    let wrong = format!("{}{}", if first == '0' { '1' } else { '0' }, &fp[1..]);
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session.json");
    let mut cmd = haechi(&[
        "login",
        "--server",
        &s.base,
        "--fingerprint",
        &wrong,
        "-u",
        "admin",
        "--password-stdin",
    ]);
    cmd.env("HAECHI_SESSION", &session);
    let out = run_with_stdin(cmd, &format!("{ADMIN_PASSWORD}\n"));
    assert!(
        !out.status.success(),
        "a wrong fingerprint must fail: {}",
        text(&out)
    );
    assert!(
        text(&out).to_lowercase().contains("fingerprint"),
        "says why: {}",
        text(&out)
    );
    assert!(!session.exists(), "no session is saved");

    // Not a fingerprint at all.
    let mut cmd = haechi(&[
        "login",
        "--server",
        &s.base,
        "--fingerprint",
        "abc",
        "-u",
        "admin",
        "--password-stdin",
    ]);
    cmd.env("HAECHI_SESSION", &session);
    let out = run_with_stdin(cmd, &format!("{ADMIN_PASSWORD}\n"));
    assert!(!out.status.success());
    assert!(!session.exists());
}

#[tokio::test]
async fn plain_http_is_served_on_loopback() {
    let s = Server::start_with(Opts::default().arg("--plain-http"));
    assert!(s.base.starts_with("http://127.0.0.1:"), "{}", s.base);
    assert_eq!(s.fingerprint, None, "no certificate without TLS");
    let (st, body) = call(client().get(s.url("/api/v1/health"))).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "ok");
    login(&s, "admin", ADMIN_PASSWORD).await;
    s.finish().await;
}

/// Starts `haechi server` on a SQLite data dir in `dir` with extra args/env; returns the child
/// once it printed its address (`Ok`) or exited (`Err` with its exit code and output).
fn spawn_server(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(std::process::Child, String), (Option<i32>, String)> {
    let mut cmd = haechi(&[
        "server",
        "--data-dir",
        dir.join("data").to_str().unwrap(),
        "--stop-on-stdin-eof",
    ]);
    cmd.args(args)
        .env("HAECHI_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("HAECHI_IDENTITY__ARGON2__MEMORY_KIB", "1024");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut output = String::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
                if let Some(url) = line.split("listening on ").nth(1) {
                    return Ok((child, url.trim().to_owned()));
                }
            }
            // Both streams closed: the process has exited.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                return Err((status.code(), output));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server neither started nor exited:\n{output}");
            }
        }
    }
}

#[tokio::test]
async fn plain_http_on_a_public_address_needs_a_second_flag() {
    let dir = tempfile::tempdir().unwrap();
    match spawn_server(dir.path(), &["--listen", "0.0.0.0:0", "--plain-http"], &[]) {
        Ok((mut child, url)) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("plain HTTP on 0.0.0.0 must be refused, but the server listens on {url}");
        }
        Err((code, output)) => {
            assert!(
                code.is_some_and(|c| c != 0),
                "must exit non-zero ({code:?}):\n{output}"
            );
            assert!(
                output.contains("allow_plain_http_on_public_address"),
                "the message names the second flag:\n{output}"
            );
            assert!(!output.contains("panicked"), "{output}");
        }
    }

    // With the second flag it serves.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn_server(
        dir.path(),
        &["--listen", "0.0.0.0:0", "--plain-http"],
        &[("HAECHI_ALLOW_PLAIN_HTTP_ON_PUBLIC_ADDRESS", "true")],
    )
    .unwrap_or_else(|(code, out)| panic!("exit {code:?}:\n{out}"));
    let port = url.rsplit(':').next().unwrap().to_owned();
    assert!(url.starts_with("http://"), "{url}");
    let (st, _) = call(client().get(format!("http://127.0.0.1:{port}/api/v1/health"))).await;
    assert_eq!(st, 200);
    // Stop it while this runtime still serves the client's connection (see Server::stop_async).
    drop(child.stdin.take());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn audit_verify_on_a_fresh_data_dir_says_intact() {
    let mut s = Server::start();
    let (code, out) = s.audit_verify();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"), "{out}");
    s.stop();
    let (code, out) = s.audit_verify();
    assert_eq!(code, 0, "offline too: {out}");
    assert!(out.contains("intact"), "{out}");

    // A directory that holds no store is an error, not an empty intact log.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let out = haechi(&["audit", "verify", "--data-dir", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("intact"), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
    assert!(
        !missing.join("haechi.db").exists(),
        "verify must not create a store"
    );
}
