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

/// `haechi login` as admin (pinning the server's fingerprint) into a session file of its own;
/// the directory holding it lives as long as the returned guard.
fn cli_login_as_admin(s: &Server) -> (tempfile::TempDir, std::path::PathBuf) {
    let fp = s.fingerprint.clone().expect("fingerprint");
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session.json");
    let out = cli_login(s, &fp, &session, &format!("{ADMIN_PASSWORD}\n"));
    assert!(out.status.success(), "login: {}", text(&out));
    (dir, session)
}

/// `haechi login -u admin --password-stdin` against `s`, pinning `fingerprint`, saving the
/// session in `session`, with `stdin` as the password line.
fn cli_login(s: &Server, fingerprint: &str, session: &Path, stdin: &str) -> Output {
    let mut cmd = haechi(&[
        "login",
        "--server",
        &s.base,
        "--fingerprint",
        fingerprint,
        "-u",
        "admin",
        "--password-stdin",
    ]);
    cmd.env("HAECHI_SESSION", session);
    run_with_stdin(cmd, stdin)
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
    // The password is printed last, after the address.
    let logs = s.logs_once_they_contain("=====\n\n", Duration::from_secs(10));
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
    let (dir, session) = cli_login_as_admin(s);
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
    let out = cli_login(s, &bare, &other, &format!("{ADMIN_PASSWORD}\n"));
    assert!(out.status.success(), "{}", text(&out));

    // A wrong password fails and says so.
    let failed = dir.path().join("failed.json");
    let out = cli_login(s, &fp, &failed, "not-the-password\n");
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
    let out = cli_login(s, &wrong, &session, &format!("{ADMIN_PASSWORD}\n"));
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
    let out = cli_login(s, "abc", &session, &format!("{ADMIN_PASSWORD}\n"));
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

/// A first start that cannot bind its port creates nothing: no `admin`, no password printed and
/// lost. The next start prints the password; `haechi admin reset-password` is the way back in
/// when it was lost anyway.
#[tokio::test]
async fn a_first_start_that_cannot_bind_creates_no_admin_and_the_password_can_be_reset() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let no_password = [("HAECHI_ADMIN_PASSWORD", "")];
    match spawn_server(dir.path(), &["--listen", &addr], &no_password) {
        Ok((mut child, url)) => {
            let _ = child.kill();
            panic!("the port is taken, yet the server listens on {url}");
        }
        Err((code, output)) => {
            assert!(code.is_some_and(|c| c != 0), "{code:?}:\n{output}");
            assert!(output.contains("cannot listen on"), "{output}");
            assert!(
                !output.contains("shown once") && !output.contains("bootstrap"),
                "no admin is created before the port is bound:\n{output}"
            );
        }
    }
    drop(taken);

    // The next start binds and creates admin (its password is printed after the address).
    let (mut child, url) = spawn_server(dir.path(), &["--listen", "127.0.0.1:0"], &no_password)
        .unwrap_or_else(|(code, out)| panic!("exit {code:?}:\n{out}"));
    let (st, _) = call(client().get(format!("{url}/api/v1/health"))).await;
    assert_eq!(st, 200);
    drop(child.stdin.take());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");

    // Lost or not: reset it offline, with the server stopped.
    let data = dir.path().join("data");
    let reset = run_with_stdin(
        haechi(&[
            "admin",
            "reset-password",
            "--data-dir",
            data.to_str().unwrap(),
            "--password-stdin",
        ]),
        "Reset-Pass-98765\n",
    );
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let audited = Command::new("sqlite3")
        .arg(data.join("haechi.db"))
        .arg("SELECT action FROM audit_events WHERE user_id = 'local:reset-password' ORDER BY seq")
        .output()
        .expect("sqlite3");
    assert_eq!(
        String::from_utf8_lossy(&audited.stdout),
        "user.update\nuser.unlock\n",
        "the offline reset is audited"
    );
    // A weak password is refused by the same policy as the API's, and nothing changes.
    let weak = run_with_stdin(
        haechi(&[
            "admin",
            "reset-password",
            "--data-dir",
            data.to_str().unwrap(),
            "--password-stdin",
        ]),
        "x\n",
    );
    assert!(!weak.status.success());
    // An empty directory is named, not created.
    let empty = tempfile::tempdir().unwrap();
    let none = haechi(&[
        "admin",
        "reset-password",
        "--data-dir",
        empty.path().join("nothing").to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no store in"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    assert!(!empty.path().join("nothing").exists());

    let (mut child, url) = spawn_server(dir.path(), &["--listen", "127.0.0.1:0"], &no_password)
        .unwrap_or_else(|(code, out)| panic!("exit {code:?}:\n{out}"));
    let (st, v) = call(
        client()
            .post(format!("{url}/api/v1/auth"))
            .json(&serde_json::json!({"user_id": "admin", "pwd": "Reset-Pass-98765"})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    drop(child.stdin.take());
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

/// Without a terminal to prompt on, `login` says how to give the password instead of an OS
/// error number.
#[test]
fn login_without_a_terminal_names_password_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = haechi(&[
        "login",
        "--server",
        "https://127.0.0.1:9",
        "-k",
        "-u",
        "admin",
    ])
    .env("HAECHI_SESSION", dir.path().join("s.json"))
    .stdin(Stdio::null())
    .output()
    .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    // Under a terminal the prompt itself works; only without one is there an error to name.
    if !std::path::Path::new("/dev/tty").exists() || std::fs::File::open("/dev/tty").is_err() {
        assert!(t.contains("--password-stdin"), "{t}");
        assert!(!t.contains("os error"), "{t}");
    }
}

/// What is running and what waits for a decision, from the CLI: tables with local times by
/// default, the server's JSON with `--json`.
#[tokio::test]
async fn cli_lists_executions_and_approvals_as_tables() {
    let s = shared();
    let (_dir, session) = cli_login_as_admin(s);
    let cli = |args: &[&str]| {
        let out = haechi(args)
            .env("HAECHI_SESSION", &session)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let admin = admin_token(s).await;

    // A task waiting for approval, and a run waiting at an approval step.
    let task = unique("cliapp");
    let (st, v) = call(
        client()
            .post(s.url("/api/v1/tasks"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({
                "id": task, "scriptName": "t.sh", "script": "true", "osUser": "root"
            })),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        client()
            .post(s.url(&format!("/api/v1/tasks/{task}/approval")))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "action": "request" })),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let wf = unique("cliwf");
    let (st, v) = call(
        client()
            .post(s.url("/api/v1/workflows"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({
                "name": wf, "group": "cli",
                "steps": [{"name": "sign-off", "type": "approval", "role": "System Admin"}]
            })),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let wf_id = v["id"].as_str().unwrap().to_owned();
    let (st, v) = call(
        client()
            .post(s.url(&format!("/api/v1/workflows/{wf_id}/executions")))
            .bearer_auth(&admin)
            .json(&serde_json::json!({})),
    )
    .await;
    assert!(st == 201 || st == 200, "{st} {v}");
    let exec = v["execution_id"].as_str().unwrap().to_owned();
    // The approval step starts at once; wait until it is RUNNING.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, view) = call(
            client()
                .get(s.url(&format!("/api/v1/executions/{exec}")))
                .bearer_auth(&admin),
        )
        .await;
        if view["steps"][0]["status"] == "RUNNING" {
            break;
        }
        assert!(Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let approvals = cli(&["approvals"]);
    let task_line = approvals
        .lines()
        .find(|l| l.starts_with(&task))
        .unwrap_or_else(|| panic!("{approvals}"));
    assert!(task_line.contains("admin"), "{task_line}");
    let step_line = approvals
        .lines()
        .find(|l| l.starts_with(&exec))
        .unwrap_or_else(|| panic!("{approvals}"));
    assert!(step_line.contains("sign-off"), "{step_line}");
    // A local time, not unix milliseconds.
    assert!(has_local_time(step_line), "{step_line}");

    let list = cli(&["wf", "executions", "--workflow", &wf_id]);
    let mut lines = list.lines();
    assert!(lines.next().unwrap().starts_with("EXECUTION"), "{list}");
    let row = lines.next().unwrap();
    assert!(row.starts_with(&exec) && row.contains("RUNNING"), "{list}");
    let json: Value =
        serde_json::from_str(&cli(&["wf", "executions", "--workflow", &wf_id, "--json"])).unwrap();
    assert_eq!(json["executions"][0]["execution_id"], exec.as_str());

    let status = cli(&["wf", "status", &exec]);
    assert!(
        status.contains("sign-off") && status.contains("approval"),
        "{status}"
    );

    // Decide it; the list says COMPLETED and the approvals no longer show it.
    cli(&["wf", "decide", &exec, "sign-off", "approve"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cli(&["wf", "executions", "--workflow", &wf_id]).contains("COMPLETED") {
        assert!(Instant::now() < deadline, "the run did not complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!cli(&["approvals"]).contains(&exec));
    let followed = cli(&["wf", "status", &exec, "--follow"]);
    assert!(followed.contains("COMPLETED"), "{followed}");
}

/// Whether `line` holds a time written `YYYY-MM-DD HH:mm:ss`.
fn has_local_time(line: &str) -> bool {
    let shape = "dddd-dd-dd dd:dd:dd";
    let b = line.as_bytes();
    (0..b.len().saturating_sub(shape.len() - 1)).any(|i| {
        shape.bytes().enumerate().all(|(j, c)| match c {
            b'd' => b[i + j].is_ascii_digit(),
            c => b[i + j] == c,
        })
    })
}

/// SIGTERM stops a server that was started with `--stop-on-stdin-eof` even while its standard
/// input stays open: the uncancellable read of stdin used to keep the process alive forever
/// after the graceful shutdown had finished.
#[test]
fn sigterm_stops_the_server_with_its_stdin_still_open() {
    let mut s = Server::start();
    let status = s.term(Duration::from_secs(20));
    let status = status.expect("the server was still running 20 s after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", s.logs());
}
