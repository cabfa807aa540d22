//! Audit forwarding (issue 27 item 2): a syslog receiver that is down for a minute and then back
//! gets every event once, in order; a `kill -9` of the server loses none (a repeat after the
//! kill is told apart by its `seq`); the JSON-lines file sink rotates and its files verify
//! against the store; on PostgreSQL, two servers forward through one of them at a time.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

/// One message as the receiver got it.
#[derive(Clone, Debug)]
struct Got {
    conn: u32,
    seq: i64,
    raw: String,
}

/// A syslog receiver (RFC 6587 octet counting) on a fixed port that the test takes down and
/// brings back.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    next_conn: Arc<std::sync::atomic::AtomicU32>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut r = Receiver {
            port,
            got: Arc::default(),
            accept: None,
            conns: Arc::default(),
            next_conn: Arc::default(),
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (got, conns, next) = (self.got.clone(), self.conns.clone(), self.next_conn.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let got = got.clone();
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                conns.lock().unwrap().push(tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                        // Whole frames: `LEN SP MSG`.
                        while let Some(sp) = buf.iter().position(|b| *b == b' ') {
                            let len: usize =
                                std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
                            if buf.len() < sp + 1 + len {
                                break;
                            }
                            let msg =
                                String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap();
                            buf.drain(..sp + 1 + len);
                            let seq = msg
                                .split("seq=\"")
                                .nth(1)
                                .and_then(|r| r.split('"').next())
                                .and_then(|s| s.parse().ok())
                                .expect("every message carries its seq");
                            got.lock().unwrap().push(Got {
                                conn: n,
                                seq,
                                raw: msg,
                            });
                        }
                    }
                }));
            }
        }));
    }

    /// Closes the listener and every connection (what the receiver had not read is lost).
    fn down(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Listens again on the same port.
    async fn up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => return self.serve(l),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.port),
            }
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until the receiver has every event up to `seq`.
    async fn wait_for(&self, seq: i64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let max = self.got().iter().map(|g| g.seq).max().unwrap_or(0);
            if max >= seq {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver has events up to {max}, not {seq}, after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn head(s: &Server) -> i64 {
    s.sql("SELECT seq FROM audit_head WHERE id = 1")
        .parse()
        .unwrap()
}

fn config(dir: &Path, port: u16, file: &Path) -> PathBuf {
    let path = dir.join("haechi.toml");
    std::fs::write(
        &path,
        format!(
            "[audit]\nsinks = [\n  {{ name = \"siem\", kind = \"syslog\", address = \"127.0.0.1:{port}\", retry_max_secs = 2 }},\n  \
             {{ name = \"file\", kind = \"file\", path = \"{}\", max_bytes = 16384, keep = 1000 }},\n]\n",
            file.display()
        ),
    )
    .unwrap();
    path
}

/// Makes `n` audit events (logins).
async fn events(s: &Server, n: usize) {
    for _ in 0..n {
        let r = client()
            .post(s.url("/api/v1/auth"))
            .json(&json!({ "user_id": "admin", "pwd": ADMIN_PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// The file sink's files, oldest first.
fn sink_files(file: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name()?.to_str()?.to_owned();
            let n = name.strip_prefix("audit.jsonl.")?.parse().ok()?;
            Some((n, p))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(file.to_path_buf());
    files
}

fn verify_export(s: &Server, files: &[PathBuf]) -> (i32, String) {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["audit", "verify-export"])
        .args(files)
        .arg("--data-dir")
        .arg(&s.data_dir)
        .env_remove("HAECHI_CONFIG");
    if let Db::Postgres(url) = &s.db {
        cmd.arg("--database-url").arg(url);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_reaches_the_sinks_once_in_order_through_an_outage_and_a_kill() {
    let mut rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logs/audit.jsonl");
    let cfg = config(dir.path(), rx.port, &file);
    let cfg_s = cfg.to_str().unwrap().to_owned();
    let mut s = Server::start_with(Opts::default().arg("--config").arg(&cfg_s));

    // Up: everything so far arrives.
    events(&s, 20).await;
    let h = head(&s);
    rx.wait_for(h, Duration::from_secs(30)).await;
    // Let the forwarder count what it sent as delivered before the receiver goes.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Down for a minute, while events keep being made; requests are not slowed by it.
    rx.down();
    let received_before_down = rx.got().len();
    let down_since = Instant::now();
    let mut slowest = Duration::ZERO;
    while down_since.elapsed() < Duration::from_secs(60) {
        let t = Instant::now();
        events(&s, 5).await;
        slowest = slowest.max(t.elapsed() / 5);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a login took {slowest:?} while the sink was down"
    );
    let h_down = head(&s);
    assert_eq!(
        rx.got().len(),
        received_before_down,
        "nothing arrives while it is down"
    );
    rx.up().await;
    rx.wait_for(h_down, Duration::from_secs(60)).await;

    // Through the outage: once each, in order, none missing.
    let got = rx.got();
    let seqs: Vec<i64> = got.iter().map(|g| g.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "once each, in order"
    );
    assert!(seqs.len() as i64 >= h_down);

    // kill -9 while events stream: none lost; repeats only of what was sent before the kill.
    let load_base = s.base.clone();
    let load = tokio::spawn(async move {
        for _ in 0..200 {
            let r = client()
                .post(format!("{load_base}/api/v1/auth"))
                .json(&json!({ "user_id": "admin", "pwd": ADMIN_PASSWORD }))
                .send()
                .await;
            if r.is_err() {
                return; // the server was killed
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = if pg_admin_url().is_some() {
        // Another server on the same PostgreSQL waits for the forwarder lock meanwhile.
        Some(Server::start_with(
            s.same_state()
                .arg("--config")
                .arg(&cfg_s)
                .arg("--no-local-agent"),
        ))
    } else {
        None
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.kill9();
    let _ = load.await;
    let before_kill: Vec<Got> = rx.got();
    let max_before_kill = before_kill.iter().map(|g| g.seq).max().unwrap_or(0);
    let s = match second {
        Some(b) => b,
        None => Server::start_with(s.same_state().arg("--config").arg(&cfg_s)),
    };
    events(&s, 10).await;
    let h_end = head(&s);
    rx.wait_for(h_end, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let got = rx.got();
    // Every event, by seq; a repeated seq is the same event.
    let mut by_seq: BTreeMap<i64, &Got> = BTreeMap::new();
    let mut repeats = Vec::new();
    for g in &got {
        match by_seq.get(&g.seq) {
            Some(first) => {
                // The same event (the header's PROCID is the sending server's).
                let event = |raw: &str| raw.split('\u{feff}').nth(1).unwrap_or_default().to_owned();
                assert_eq!(
                    event(&first.raw),
                    event(&g.raw),
                    "a repeat of {} is the same event",
                    g.seq
                );
                repeats.push(g.seq);
            }
            None => {
                by_seq.insert(g.seq, g);
            }
        }
    }
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=h_end).collect::<Vec<_>>(),
        "every event from 1 to {h_end} arrived"
    );
    assert!(
        repeats.iter().all(|seq| *seq <= max_before_kill),
        "repeats only of events sent before the kill: {repeats:?} (max before {max_before_kill})"
    );
    // In order on every connection.
    let mut per_conn: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for g in &got {
        per_conn.entry(g.conn).or_default().push(g.seq);
    }
    for (conn, seqs) in &per_conn {
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "connection {conn} is in order: {seqs:?}"
        );
    }
    // Each message carries its event whole: the copy verifies against the store.
    let export = dir.path().join("siem-copy.log");
    std::fs::write(
        &export,
        got.iter()
            .map(|g| format!("{}\n", g.raw))
            .collect::<String>(),
    )
    .unwrap();
    let (code, out) = verify_export(&s, std::slice::from_ref(&export));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("events 1 to {h_end}")) && out.contains("against the store"),
        "{out}"
    );

    // The file sink: rotated, every event once (it resumes after its last line), verifying.
    let files = sink_files(&file);
    assert!(files.len() > 2, "the file rotated: {files:?}");
    let mut lines = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.len() <= 16384, "{} is over max_bytes", f.display());
        lines.extend(text.lines().map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        }));
    }
    assert_eq!(
        lines,
        (1..=h_end).collect::<Vec<_>>(),
        "the file has each event once, in order"
    );
    let (code, out) = verify_export(&s, &files);
    assert_eq!(code, 0, "{out}");

    // An edited copy is caught.
    let edited = dir.path().join("edited.log");
    let text = std::fs::read_to_string(&export).unwrap().replacen(
        "\"action\":\"auth.login\"",
        "\"action\":\"auth.logout\"",
        1,
    );
    std::fs::write(&edited, text).unwrap();
    let (code, out) = verify_export(&s, &[edited]);
    assert!(code != 0 && out.contains("BROKEN"), "{out}");
    s.finish().await;
    rx.down();
}

#[tokio::test]
async fn a_bad_sink_is_refused_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[audit]\nsinks = [ { name = \"siem\", kind = \"syslog\", address = \"no-port\" } ]\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .env_remove("HAECHI_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("audit.sinks[0]") && text.contains("not HOST:PORT"),
        "{text}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}
