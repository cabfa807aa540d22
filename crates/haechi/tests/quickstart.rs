//! The README's "Quickstart with curl", run as written (a documentation test).
//!
//! Every `sh` block of that section runs in order in one `bash`, against a real server with its
//! local agent, the real PostgreSQL and MariaDB of the machine, and the stock `curl`, `psql` and
//! `mariadb`. Each command is checked against the answer the README shows under it:
//! - `# 201 {...}`: the HTTP status (the last `curl` of the command) and every JSON key shown;
//! - `# {...}`: every JSON key shown;
//! - other text (`# hello world from vm`, psql's table, an error): a line of the answer starts
//!   with the same three words, the README's example host name `vm` read as this machine's node.
//!
//! What the README cannot say in a shell block is said in HTML comments the page does not show:
//! `<!-- quickstart: restart -->` (restart the server on the same state before the block),
//! `<!-- quickstart: restart-gateways -->` (restart it with its DB gateway listeners instead of
//! running the block, which is that command), `<!-- quickstart: retry 60 -->` (repeat each
//! command of the block that only reads until its check passes, for "half a minute later"). `VAR=value   # the
//! FIELD above` takes FIELD from the previous command's answer. The few fixed values of the
//! page (the address, the admin password, `./haechi-data`, the gateway ports) are replaced by
//! this server's.
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Opts, Server, ADMIN_PASSWORD};
use regex::Regex;

const README: &str = include_str!("../../../README.md");

/// One command of a block and the answer the README shows under it.
#[derive(Debug)]
struct Cmd {
    text: String,
    /// The comment lines right under the command (without `# `), or empty.
    expected: Vec<String>,
}

#[derive(Debug)]
struct Block {
    directive: Option<String>,
    cmds: Vec<Cmd>,
}

/// The `sh` blocks of the section, with the directive written right before each.
fn blocks(readme: &str) -> Vec<Block> {
    let start = readme
        .find("\n## Quickstart with curl")
        .expect("README has a 'Quickstart with curl' section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map(|i| i + 3).unwrap_or(rest.len());
    let section = &rest[..end];
    let mut out = Vec::new();
    let mut directive = None;
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(d) = line
            .trim()
            .strip_prefix("<!-- quickstart:")
            .and_then(|d| d.strip_suffix("-->"))
        {
            directive = Some(d.trim().to_owned());
        } else if line.trim() == "```sh" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            out.push(Block {
                directive: directive.take(),
                cmds: commands(&body),
            });
        }
    }
    out
}

/// Splits a block into commands: a command goes on over `\` line ends, open quotes and
/// here-documents; the comment lines right under it are its expected answer.
fn commands(body: &[&str]) -> Vec<Cmd> {
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let line = body[i];
        if line.trim().is_empty() {
            i += 1;
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(last) = cmds.last_mut() {
                let comment = comment.strip_prefix(' ').unwrap_or(comment);
                last.expected.push(comment.to_owned());
            }
            i += 1;
            continue;
        }
        let mut text = String::new();
        let mut quote: Option<char> = None;
        let mut heredoc: Option<String> = None;
        loop {
            let l = body[i];
            text.push_str(l);
            text.push('\n');
            i += 1;
            if let Some(tag) = &heredoc {
                if l.trim() == tag {
                    heredoc = None;
                }
            } else {
                quote = scan_quotes(l, quote);
                if quote.is_none() {
                    if let Some(tag) = l.split("<<").nth(1) {
                        heredoc = Some(tag.trim().trim_matches('\'').to_owned());
                    }
                }
            }
            let continued = quote.is_some() || heredoc.is_some() || l.trim_end().ends_with('\\');
            if !continued || i >= body.len() {
                break;
            }
        }
        cmds.push(Cmd {
            text,
            expected: Vec::new(),
        });
    }
    cmds
}

/// The quote still open at the end of `line`, given the one open at its start.
fn scan_quotes(line: &str, mut open: Option<char>) -> Option<char> {
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (open, c) {
            (None, '#') => break, // a comment to the end of the line
            (None, '\'' | '"') => open = Some(c),
            (None | Some('"'), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => open = None,
            _ => {}
        }
    }
    open
}

/// The JSON keys (`"key":`) a shown answer names.
fn keys(text: &str) -> Vec<String> {
    let re = Regex::new(r#""([A-Za-z_][A-Za-z0-9_]*)":"#).unwrap();
    re.captures_iter(text).map(|c| c[1].to_owned()).collect()
}

/// Checks an answer against what the README shows; `Err` says what differs.
fn check(expected: &[String], output: &str, node: &str) -> Result<(), String> {
    let Some(first) = expected.first() else {
        return Ok(());
    };
    let status_re = Regex::new(r"^(\d{3})\b\s*(.*)$").unwrap();
    let statuses: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix("@@HTTP "))
        .collect();
    let body: String = output
        .lines()
        .filter(|l| !l.starts_with("@@HTTP "))
        .collect::<Vec<_>>()
        .join("\n");
    let mut shown = first.as_str();
    if let Some(c) = status_re.captures(first) {
        let want = c.get(1).unwrap().as_str();
        match statuses.last() {
            Some(got) if *got == want => {}
            got => return Err(format!("status: the README shows {want}, got {got:?}")),
        }
        shown = c.get(2).unwrap().as_str();
    }
    // The shown answer, with its continuation lines (`#   ...` under a JSON line).
    let mut answer = shown.to_owned();
    for l in &expected[1..] {
        if l.starts_with("  ") && !l.trim_start().starts_with('(') {
            answer.push_str(l);
        } else {
            break;
        }
    }
    let answer = answer.trim();
    if answer.starts_with('{') || answer.starts_with('[') {
        let missing: Vec<String> = keys(answer)
            .into_iter()
            .filter(|k| !body.contains(&format!("\"{k}\":")))
            .collect();
        if !missing.is_empty() {
            return Err(format!("keys {missing:?} missing from the answer"));
        }
        // States (`"status":"COMPLETED"`, `"apprvStatus":"A"`) are part of what the page
        // promises; ids, times and names are not.
        let state = Regex::new(r#""[A-Za-z_]+":"[A-Z][A-Z_]*""#).unwrap();
        let absent = state
            .find_iter(answer)
            .map(|m| m.as_str().to_owned())
            .find(|m| !body.contains(m.as_str()));
        if let Some(m) = absent {
            return Err(format!("{m} missing from the answer"));
        }
    } else if !answer.is_empty() && !answer.starts_with('(') {
        let want = answer.replace(" vm", &format!(" {node}"));
        // A line of the answer starts as the shown one does (mariadb echoes the refused
        // statement above its error line).
        let words: Vec<&str> = want.split_whitespace().take(3).collect();
        let found = body
            .lines()
            .any(|l| l.split_whitespace().take(words.len()).collect::<Vec<_>>() == words);
        if !found {
            return Err(format!("no line of the answer starts as {want:?} does"));
        }
    }
    Ok(())
}

/// Throwaway objects the README creates on the machine's database servers, dropped before and
/// after so a run never depends on (or leaves) the last one.
fn drop_db_objects() {
    let _ = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
        .arg("DROP DATABASE IF EXISTS orders WITH (FORCE)")
        .args(["-c", "DROP ROLE IF EXISTS app_ro"])
        .output();
    let _ = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "-e"])
        .arg("DROP DATABASE IF EXISTS orders; DROP USER IF EXISTS 'app_ro'@'%'")
        .output();
}

/// A command that only reads (no `-X`, no body), so repeating it until the answer is the one
/// shown changes nothing.
fn reads_only(text: &str) -> bool {
    !text.contains(" -X ") && !text.contains(" -d") && !text.contains("--data")
}

/// This process's user id, from `id -u`.
fn current_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(u32::MAX)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bash that runs the commands one at a time and reports each one's output.
struct Shell {
    child: std::process::Child,
    out: std::sync::mpsc::Receiver<String>,
    n: usize,
}

impl Shell {
    fn start(env: &[(&str, String)]) -> Shell {
        let mut cmd = Command::new("bash");
        cmd.arg("--noprofile")
            .arg("--norc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("bash");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Shell {
            child,
            out: rx,
            n: 0,
        }
    }

    /// Runs `text`; its output (stdout, with `@@HTTP <status>` after each curl).
    fn run(&mut self, text: &str) -> String {
        self.n += 1;
        let mark = format!("@@END {}", self.n);
        let stdin = self.child.stdin.as_mut().unwrap();
        // Error messages (psql's, mariadb's) are part of what the page shows.
        writeln!(stdin, "{{\n{text}\n}} 2>&1\necho; echo '{mark}'").unwrap();
        stdin.flush().unwrap();
        let mut out = String::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .out
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no end of {text:?} within 120 s; output {out:?}"));
            if line == mark {
                return out;
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
}

#[test]
fn readme_quickstart_runs_as_written() {
    if std::env::var("CI").as_deref() != Ok("true") {
        for tool in ["curl", "psql", "mariadb"] {
            if Command::new(tool).arg("--version").output().is_err() {
                eprintln!("skipped: {tool} is not installed (under CI=true this fails)");
                return;
            }
        }
    }
    // The OPMATE example runs its task as `nobody`, which needs a server running as root (as
    // .ci/run does); the README says so.
    if current_uid() != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the README's quickstart needs root (its task runs as nobody)"
        );
        eprintln!("skipped: not root (the README's task runs as nobody)");
        return;
    }
    let blocks = blocks(README);
    assert!(blocks.len() >= 15, "found only {} blocks", blocks.len());
    drop_db_objects();

    let first = Server::start_with(Opts::default());
    let data_dir = first.data_dir.clone();
    let haechi_dir = std::path::Path::new(common::bin())
        .parent()
        .unwrap()
        .to_owned();
    let mut current = Some(first);
    let mut servers = Vec::new(); // the first owns the data directory: kept until the end
    let (pg_port, my_port) = (free_port(), free_port());
    let path = format!(
        "{}:{}",
        haechi_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut sh = Shell::start(&[("PATH", path)]);
    // Every curl also prints its status, so the check can read it.
    sh.run(r#"curl() { command curl -sS -w '\n@@HTTP %{http_code}\n' "$@"; }"#);

    let node_re = Regex::new(r#""id":"([^"]+)""#).unwrap();
    let var_re = Regex::new(r#"^([A-Z]+)=(\S+)\s+# the "?([A-Za-z_]+)"? above"#).unwrap();
    let mut node = String::new();
    let mut previous = String::new();
    let mut checked = 0;
    for block in &blocks {
        match block.directive.as_deref() {
            Some("restart") | Some("restart-gateways") => {
                let gateways = block.directive.as_deref() == Some("restart-gateways");
                let mut old = current.take().unwrap();
                old.stop();
                let mut opts = old.same_state();
                if gateways {
                    opts = opts
                        .arg("--pg-gateway")
                        .arg(&format!("127.0.0.1:{pg_port}"))
                        .arg("--mysql-gateway")
                        .arg(&format!("127.0.0.1:{my_port}"));
                }
                let next = Server::start_with(opts);
                sh.run(&format!("H={}", next.base));
                servers.push(old);
                current = Some(next);
                if gateways {
                    continue; // the block is the restart command itself
                }
            }
            _ => {}
        }
        let server = current.as_ref().unwrap();
        let retry: Option<u64> = block
            .directive
            .as_deref()
            .and_then(|d| d.strip_prefix("retry "))
            .map(|s| s.trim().parse().unwrap());
        for cmd in &block.cmds {
            let verify = match &server.db {
                common::Db::Postgres(url) => {
                    format!("--data-dir ./haechi-data --database-url {url}")
                }
                common::Db::Sqlite(_) => "--data-dir ./haechi-data".to_owned(),
            };
            let mut text = cmd
                .text
                .replace("--data-dir ./haechi-data", &verify)
                .replace("https://127.0.0.1:8443", &server.base)
                .replace("'<the admin password>'", &format!("'{ADMIN_PASSWORD}'"))
                .replace("./haechi-data", &data_dir.display().to_string())
                .replace("haechi-data/", &format!("{}/", data_dir.display()))
                .replace("port=6432", &format!("port={pg_port}"))
                .replace("-P 3307", &format!("-P {my_port}"));
            if let Some(c) = var_re.captures(text.clone().trim()) {
                let field = &c[3];
                let re = Regex::new(&format!(r#""{field}":"?([^",}}]+)"#)).unwrap();
                let value = re.captures(&previous).unwrap_or_else(|| {
                    panic!("no {field} in the answer before {text:?}: {previous}")
                })[1]
                    .to_owned();
                text = format!("{}={value}", &c[1]);
                if &c[1] == "NODE" {
                    node = value;
                }
            } else if node.is_empty() {
                if let Some(c) = node_re.captures(&previous) {
                    node = c[1].to_owned();
                }
            }
            let deadline = Instant::now() + Duration::from_secs(retry.unwrap_or(0));
            loop {
                let out = sh.run(&text);
                match check(&cmd.expected, &out, &node) {
                    Ok(()) => {
                        if !cmd.expected.is_empty() {
                            checked += 1;
                        }
                        previous = out;
                        break;
                    }
                    Err(_) if reads_only(&text) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(e) => panic!(
                        "README command\n{}\nanswered\n{out}\nbut {e}; the README shows\n{}\nserver log:\n{}",
                        cmd.text,
                        cmd.expected.join("\n"),
                        server.logs()
                    ),
                }
            }
        }
    }
    drop(sh.child.stdin.take());
    let _ = sh.child.wait();
    drop_db_objects();
    assert!(checked >= 40, "only {checked} answers were checked");
    drop(current);
    drop(servers);
}
