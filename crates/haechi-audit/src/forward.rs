//! Audit forwarding: every event of the log, in order, at least once, to the configured sinks
//! (setting `audit.sinks`): RFC 5424 syslog over TCP or TLS (RFC 5425 framing), or a JSON-lines
//! file rotated by size.
//!
//! Each sink has a durable cursor, the row `audit_sink_cursors(sink, seq)`: the last event the
//! sink is known to have. A background task per server reads the events after it from the store
//! (never from the request path, so a slow or dead sink slows no request), sends them in order,
//! and moves the cursor forward once they are delivered; a sink that is down is retried with
//! backoff from its cursor, so nothing is lost while it is away. A crash between a delivery and
//! the cursor's move sends those events again after the restart: a receiver tells a repeat by
//! its `seq`. Every forwarded event carries `seq`, `hash` and `prev_hash`, so the copy a SIEM
//! keeps can be checked link by link, and against the store (`haechi audit verify-export`).
//!
//! Servers sharing one PostgreSQL store forward through one of them at a time: the forwarder
//! holds a session lock ([`haechi_store::SessionLock`]) while it works, and another server takes
//! over when the holder dies.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use haechi_store::{in_tx, read, Store};
use haechi_types::{time, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::StoredEvent;

/// The session lock key of the forwarder ("HaeAud").
const FORWARD_LOCK: i64 = 0x4861_6541_7564;
/// Events read and sent at a time.
const BATCH: i64 = 500;

/// What kind of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// RFC 5424 messages over TCP (or TLS with `tls = true`), octet-counted (RFC 6587, 5425).
    #[default]
    Syslog,
    /// One JSON object per line in a file, rotated by size.
    File,
}

/// How syslog messages are delimited on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// `LEN SP MESSAGE` (RFC 6587 §3.4.1; the framing RFC 5425 requires over TLS).
    #[default]
    OctetCounting,
    /// One message per line (RFC 6587 §3.4.2, for receivers that only read lines).
    Lf,
}

/// One sink of `audit.sinks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink's name, unique among the sinks: its cursor is kept under it (renaming a sink
    /// starts it again from the first event).
    pub name: String,
    /// `syslog` or `file`.
    pub kind: SinkKind,
    /// syslog: the receiver, HOST:PORT.
    pub address: Option<String>,
    /// syslog: speak TLS to the receiver (RFC 5425), verified against `ca_file`.
    pub tls: bool,
    /// syslog over TLS: the PEM CA certificates the receiver's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// syslog over TLS: the name the receiver's certificate must carry (default: the host of
    /// `address`).
    pub server_name: Option<String>,
    /// syslog: the facility (0-23) in each message's PRI; 13 is "log audit".
    pub facility: u8,
    /// syslog: `octet-counting` or `lf`.
    pub framing: Framing,
    /// file: the file to append to; rotated files are `<path>.1` (newest) to `<path>.<keep>`.
    pub path: Option<PathBuf>,
    /// file: rotate before the file would grow past this many bytes.
    pub max_bytes: u64,
    /// file: rotated files kept.
    pub keep: u32,
    /// Longest wait, in seconds, between two tries of a sink that is down (the wait doubles
    /// from half a second up to this).
    pub retry_max_secs: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            name: String::new(),
            kind: SinkKind::Syslog,
            address: None,
            tls: false,
            ca_file: None,
            server_name: None,
            facility: 13,
            framing: Framing::OctetCounting,
            path: None,
            max_bytes: 100 * 1024 * 1024,
            keep: 10,
            retry_max_secs: 30,
        }
    }
}

/// Checks the sinks; the message names the sink and the field.
pub fn validate(sinks: &[SinkConfig]) -> std::result::Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for (i, s) in sinks.iter().enumerate() {
        let at = format!("audit.sinks[{i}]");
        if s.name.trim().is_empty() || s.name.len() > 64 || s.name.chars().any(char::is_control) {
            return Err(format!(
                "{at}.name must be set: a short name (at most 64 characters) that keeps the sink's cursor"
            ));
        }
        if !names.insert(s.name.as_str()) {
            return Err(format!("{at}.name {:?} is used by two sinks", s.name));
        }
        let at = format!("audit.sinks[{i}] ({:?})", s.name);
        if !(1..=3600).contains(&s.retry_max_secs) {
            return Err(format!(
                "{at}: retry_max_secs {} must be 1 to 3600",
                s.retry_max_secs
            ));
        }
        match s.kind {
            SinkKind::Syslog => {
                let Some(addr) = &s.address else {
                    return Err(format!("{at}: a syslog sink needs address = \"HOST:PORT\""));
                };
                if split_host_port(addr).is_none() {
                    return Err(format!("{at}: address {addr:?} is not HOST:PORT"));
                }
                if s.facility > 23 {
                    return Err(format!("{at}: facility {} must be 0 to 23", s.facility));
                }
                if s.tls && s.ca_file.is_none() {
                    return Err(format!(
                        "{at}: tls = true needs ca_file, the PEM CA certificates that sign the receiver's certificate"
                    ));
                }
                if !s.tls && (s.ca_file.is_some() || s.server_name.is_some()) {
                    return Err(format!(
                        "{at}: ca_file and server_name apply only with tls = true"
                    ));
                }
                if s.path.is_some() {
                    return Err(format!("{at}: path is for file sinks (kind = \"file\")"));
                }
            }
            SinkKind::File => {
                if s.path.is_none() {
                    return Err(format!(
                        "{at}: a file sink needs path = \"/var/log/haechi/audit.jsonl\""
                    ));
                }
                if s.address.is_some() || s.tls {
                    return Err(format!("{at}: address and tls are for syslog sinks"));
                }
                if s.max_bytes < 4096 {
                    return Err(format!(
                        "{at}: max_bytes {} must be at least 4096",
                        s.max_bytes
                    ));
                }
                if s.keep == 0 || s.keep > 1000 {
                    return Err(format!("{at}: keep {} must be 1 to 1000", s.keep));
                }
            }
        }
    }
    Ok(())
}

fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// Options of the forwarder.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// HOSTNAME of the syslog messages.
    pub hostname: String,
    /// How often to look for new events when idle.
    pub poll: Duration,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            hostname: "-".into(),
            poll: Duration::from_millis(200),
        }
    }
}

/// The running forwarder (one task per sink). [`Forwarder::shutdown`] stops it.
pub struct Forwarder {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts one task per sink; `None` when there is no sink.
    pub fn start(store: Store, sinks: Vec<SinkConfig>, opts: ForwardOptions) -> Option<Forwarder> {
        if sinks.is_empty() {
            return None;
        }
        let (stop, stopped) = watch::channel(false);
        let opts = Arc::new(opts);
        let tasks = sinks
            .into_iter()
            .map(|cfg| {
                let store = store.clone();
                let opts = opts.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move { run_sink(store, cfg, opts, stopped).await })
            })
            .collect();
        Some(Forwarder { stop, tasks })
    }

    /// Stops forwarding (events not yet sent are sent after the next start, from the cursor).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The cursor of `sink` (0 before its first event).
pub async fn cursor(store: &Store, sink: &str) -> Result<i64> {
    let seq: Option<i64> = read!(store, |db| sqlx::query_scalar(
        "SELECT seq FROM audit_sink_cursors WHERE sink = $1"
    )
    .bind(sink)
    .fetch_optional(db)
    .await)?;
    Ok(seq.unwrap_or(0))
}

/// Every sink's cursor, by name.
pub async fn cursors(store: &Store) -> Result<Vec<(String, i64, i64)>> {
    Ok(read!(store, |db| sqlx::query_as(
        "SELECT sink, seq, updated_at FROM audit_sink_cursors ORDER BY sink"
    )
    .fetch_all(db)
    .await)?)
}

/// Moves the cursor forward to `seq` (never back: a late writer cannot undo progress).
async fn advance(store: &Store, sink: &str, seq: i64) -> Result<()> {
    let mut tx = store.begin().await?;
    let now = time::now_ms();
    in_tx!(tx, |c| sqlx::query(
        "INSERT INTO audit_sink_cursors (sink, seq, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at \
         WHERE audit_sink_cursors.seq < excluded.seq"
    )
    .bind(sink)
    .bind(seq)
    .bind(now)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await
}

/// The committed events after `after`, oldest first. Only up to the head: an event is visible
/// with the head that counts it, and the head moves in the appending transaction.
async fn events_after(store: &Store, after: i64, limit: i64) -> Result<Vec<StoredEvent>> {
    Ok(read!(store, |db| {
        sqlx::query_as(
        "SELECT seq, at, user_id, source_ip, family, action, target, outcome, detail, prev_hash, hash \
         FROM audit_events WHERE seq > $1 AND seq <= (SELECT seq FROM audit_head WHERE id = 1) \
         ORDER BY seq LIMIT $2"
    )
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
    })?)
}

async fn sleep_or_stop(d: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped.wait_for(|v| *v) => true,
    }
}

async fn run_sink(
    store: Store,
    cfg: SinkConfig,
    opts: Arc<ForwardOptions>,
    mut stopped: watch::Receiver<bool>,
) {
    let name = cfg.name.clone();
    let max_backoff = Duration::from_secs(cfg.retry_max_secs.max(1));
    let mut sink: Box<dyn Sink> = match cfg.kind {
        SinkKind::Syslog => Box::new(SyslogSink::new(cfg.clone(), opts.hostname.clone())),
        SinkKind::File => Box::new(FileSink::new(cfg.clone())),
    };
    let lock_key = FORWARD_LOCK ^ i64::from(fnv(&name));
    'lead: loop {
        if *stopped.borrow() {
            return;
        }
        // One forwarder per sink among the servers on this store.
        let mut lock = match store.try_session_lock(lock_key).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                if sleep_or_stop(Duration::from_secs(2), &mut stopped).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(sink = %name, "audit forwarding: cannot take the forwarder lock: {e}");
                if sleep_or_stop(Duration::from_secs(2), &mut stopped).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(sink = %name, "audit forwarding to this sink runs on this server");
        let mut backoff = Duration::from_millis(500);
        // `confirmed`: the sink is known to have everything up to it (the cursor);
        // `sent`: written to the sink, not yet confirmed.
        let mut confirmed = match cursor(&store, &name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(sink = %name, "audit forwarding: cannot read the cursor: {e}");
                drop(lock);
                if sleep_or_stop(Duration::from_secs(2), &mut stopped).await {
                    return;
                }
                continue;
            }
        };
        confirmed = confirmed.max(sink.resume_point(confirmed));
        let mut sent = confirmed;
        let mut last_lock_check = tokio::time::Instant::now();
        loop {
            if *stopped.borrow() {
                if sent > confirmed && sink.healthy().await {
                    let _ = advance(&store, &name, sent).await;
                }
                lock.release().await;
                return;
            }
            if last_lock_check.elapsed() > Duration::from_secs(5) {
                if !lock.alive().await {
                    tracing::warn!(sink = %name, "audit forwarding: lost the forwarder lock; taking it again");
                    sink.disconnect();
                    continue 'lead;
                }
                last_lock_check = tokio::time::Instant::now();
            }
            let batch = match events_after(&store, sent, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(sink = %name, "audit forwarding: cannot read events: {e}");
                    // A stop is seen at the top of the loop.
                    sleep_or_stop(Duration::from_secs(1), &mut stopped).await;
                    continue;
                }
            };
            if batch.is_empty() {
                if sent > confirmed {
                    // Give a receiver that is going away the time to say so before counting
                    // what was sent as delivered.
                    if sleep_or_stop(opts.poll, &mut stopped).await {
                        continue; // the stop path confirms what is sent
                    }
                    if sink.healthy().await {
                        if advance(&store, &name, sent).await.is_ok() {
                            confirmed = sent;
                        }
                    } else {
                        tracing::warn!(sink = %name, from = confirmed + 1, "audit forwarding: the sink went away; sending again from its cursor");
                        sink.disconnect();
                        sent = confirmed;
                    }
                    continue;
                }
                sleep_or_stop(opts.poll, &mut stopped).await;
                continue;
            }
            // What was sent before is delivered if the sink is still there now.
            if sent > confirmed {
                if sink.healthy().await {
                    if advance(&store, &name, sent).await.is_ok() {
                        confirmed = sent;
                    }
                } else {
                    tracing::warn!(sink = %name, from = confirmed + 1, "audit forwarding: the sink went away; sending again from its cursor");
                    sink.disconnect();
                    sent = confirmed;
                    continue;
                }
            }
            let last = batch.last().map_or(sent, |e| e.seq);
            match sink.send(&batch).await {
                Ok(()) => {
                    backoff = Duration::from_millis(500);
                    sent = last;
                    if sink.confirms_on_send() && advance(&store, &name, sent).await.is_ok() {
                        confirmed = sent;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        sink = %name,
                        from = confirmed + 1,
                        retry_in_ms = backoff.as_millis() as u64,
                        "audit forwarding: the sink is unavailable: {e}"
                    );
                    sink.disconnect();
                    sent = confirmed;
                    sleep_or_stop(backoff, &mut stopped).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }
}

/// FNV-1a of a sink's name (its lock key).
fn fnv(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A destination of events.
trait Sink: Send {
    /// Sends `events` in order (connecting first when needed).
    fn send<'a>(
        &'a mut self,
        events: &'a [StoredEvent],
    ) -> futures::future::BoxFuture<'a, std::io::Result<()>>;
    /// Whether the sink is still there (for a stream: the receiver has not closed it).
    fn healthy(&mut self) -> futures::future::BoxFuture<'_, bool>;
    /// Forgets the connection (the next send connects again).
    fn disconnect(&mut self);
    /// Whether a successful send is a delivery (a synced file), so the cursor can move at once.
    fn confirms_on_send(&self) -> bool;
    /// Where the sink itself says it has events up to (a file's last line), if it knows.
    fn resume_point(&mut self, cursor: i64) -> i64 {
        cursor
    }
}

// ---------------------------------------------------------------- syslog

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct SyslogSink {
    cfg: SinkConfig,
    hostname: String,
    pid: u32,
    conn: Option<Box<dyn Stream>>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl SyslogSink {
    fn new(cfg: SinkConfig, hostname: String) -> SyslogSink {
        SyslogSink {
            cfg,
            hostname,
            pid: std::process::id(),
            conn: None,
            tls: None,
        }
    }

    async fn connect(&mut self) -> std::io::Result<Box<dyn Stream>> {
        let addr = self.cfg.address.clone().unwrap_or_default();
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&addr))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                )
            })??;
        let _ = tcp.set_nodelay(true);
        if !self.cfg.tls {
            return Ok(Box::new(tcp));
        }
        let config = match &self.tls {
            Some(c) => c.clone(),
            None => {
                let c = tls_config(self.cfg.ca_file.as_deref().unwrap_or(Path::new("")))?;
                self.tls = Some(c.clone());
                c
            }
        };
        let host = match &self.cfg.server_name {
            Some(n) => n.clone(),
            None => split_host_port(&addr).map(|(h, _)| h).unwrap_or_default(),
        };
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host:?} is not a server name"),
            )
        })?;
        let tls = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
        Ok(Box::new(tls))
    }
}

fn tls_config(ca_file: &Path) -> std::io::Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(ca_file).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read ca_file {}: {e}", ca_file.display()),
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert?).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("ca_file {}: {e}", ca_file.display()),
            )
        })?;
    }
    if roots.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("ca_file {} holds no PEM certificate", ca_file.display()),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The RFC 5424 severity of an outcome: success → informational (6), failure → notice (5),
/// denied → warning (4).
fn severity(outcome: &str) -> u8 {
    match outcome {
        "success" => 6,
        "failure" => 5,
        _ => 4,
    }
}

/// PRINTUSASCII (33-126), at most `max` characters, `-` when empty (RFC 5424 header fields).
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn sd_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One event as an RFC 5424 message: the header, structured data `[haechi@32473 ...]` with the
/// event's `seq`, `hash` and `prev_hash`, and the whole event as JSON (UTF-8, with the BOM the
/// RFC asks for) as the message.
pub fn syslog_message(e: &StoredEvent, facility: u8, hostname: &str, pid: u32) -> String {
    let pri = u16::from(facility) * 8 + u16::from(severity(&e.outcome));
    let json = serde_json::to_string(e).unwrap_or_default();
    format!(
        "<{pri}>1 {ts} {host} haechi {pid} {msgid} [haechi@32473 seq=\"{seq}\" hash=\"{hash}\" prev=\"{prev}\" family=\"{family}\" outcome=\"{outcome}\"] \u{feff}{json}",
        ts = time::iso_ms(e.at),
        host = header_field(hostname, 255),
        msgid = header_field(&e.action, 32),
        seq = e.seq,
        hash = sd_value(&e.hash),
        prev = sd_value(&e.prev_hash),
        family = sd_value(&e.family),
        outcome = sd_value(&e.outcome),
    )
}

impl Sink for SyslogSink {
    fn send<'a>(
        &'a mut self,
        events: &'a [StoredEvent],
    ) -> futures::future::BoxFuture<'a, std::io::Result<()>> {
        async move {
            // A connection the receiver has closed is replaced before anything is written on it.
            if self.conn.is_some() && !self.healthy().await {
                self.conn = None;
            }
            if self.conn.is_none() {
                self.conn = Some(self.connect().await?);
            }
            let mut buf = Vec::with_capacity(events.len() * 512);
            for e in events {
                let msg = syslog_message(e, self.cfg.facility, &self.hostname, self.pid);
                match self.cfg.framing {
                    Framing::OctetCounting => {
                        let _ = write!(buf, "{} ", msg.len());
                        buf.extend_from_slice(msg.as_bytes());
                    }
                    Framing::Lf => {
                        buf.extend_from_slice(msg.as_bytes());
                        buf.push(b'\n');
                    }
                }
            }
            let conn = self.conn.as_mut().expect("connected above");
            tokio::time::timeout(Duration::from_secs(30), async {
                conn.write_all(&buf).await?;
                conn.flush().await
            })
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the receiver stopped reading")
            })?
        }
        .boxed()
    }

    fn healthy(&mut self) -> futures::future::BoxFuture<'_, bool> {
        async move {
            let Some(conn) = self.conn.as_mut() else {
                return false;
            };
            // A receiver that closed its end (or reset it) shows as end-of-file or an error
            // on a read that completes at once; nothing to read means it is still there.
            let mut buf = [0u8; 512];
            loop {
                match conn.read(&mut buf).now_or_never() {
                    None => return true,
                    Some(Ok(0)) | Some(Err(_)) => return false,
                    Some(Ok(_)) => continue, // a receiver may send something; ignore it
                }
            }
        }
        .boxed()
    }

    fn disconnect(&mut self) {
        self.conn = None;
    }

    fn confirms_on_send(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------- file

struct FileSink {
    cfg: SinkConfig,
    file: Option<std::fs::File>,
    size: u64,
}

impl FileSink {
    fn new(cfg: SinkConfig) -> FileSink {
        FileSink {
            cfg,
            file: None,
            size: 0,
        }
    }

    fn path(&self) -> PathBuf {
        self.cfg.path.clone().unwrap_or_default()
    }

    fn open(&mut self) -> std::io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let path = self.path();
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o640);
        }
        let f = options.open(&path)?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    /// `path` → `path.1` → ... → `path.<keep>` (the oldest is dropped).
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        let path = self.path();
        let numbered = |n: u32| {
            let mut p = path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let _ = std::fs::remove_file(numbered(self.cfg.keep));
        for n in (1..self.cfg.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))?;
            }
        }
        std::fs::rename(&path, numbered(1))?;
        self.size = 0;
        self.open()
    }

    fn write_events(&mut self, events: &[StoredEvent]) -> std::io::Result<()> {
        self.open()?;
        let mut pending = Vec::new();
        for e in events {
            let mut line = serde_json::to_vec(e)?;
            line.push(b'\n');
            let len = line.len() as u64;
            // What the file holds plus what waits to be written: a file is rotated before it
            // would pass max_bytes, unless it is empty (one line longer than max_bytes).
            let filled = self.size + pending.len() as u64;
            if filled > 0 && filled + len > self.cfg.max_bytes {
                self.flush_pending(&mut pending)?;
                self.rotate()?;
            }
            pending.extend_from_slice(&line);
        }
        self.flush_pending(&mut pending)
    }

    fn flush_pending(&mut self, pending: &mut Vec<u8>) -> std::io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let f = self.file.as_mut().expect("opened");
        f.write_all(pending)?;
        f.sync_data()?;
        self.size += pending.len() as u64;
        pending.clear();
        Ok(())
    }

    /// Cuts the file after its last newline (a crash may have left half a line).
    fn drop_partial_line(&self) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path())
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if len == 0 {
            return Ok(());
        }
        let start = len.saturating_sub(1 << 20);
        f.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)?;
        if tail.last() == Some(&b'\n') {
            return Ok(());
        }
        let keep = match tail.iter().rposition(|b| *b == b'\n') {
            Some(i) => start + i as u64 + 1,
            None if start == 0 => 0,
            None => return Ok(()), // a line over 1 MiB: leave it
        };
        f.set_len(keep)?;
        f.sync_all()
    }

    /// The `seq` of the file's last complete line.
    fn last_seq_in_file(&self) -> Option<i64> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(self.path()).ok()?;
        let len = f.metadata().ok()?.len();
        let start = len.saturating_sub(1 << 20);
        f.seek(SeekFrom::Start(start)).ok()?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail).ok()?;
        let text = String::from_utf8_lossy(&tail);
        let text = text.trim_end_matches('\n');
        let last = text.rsplit('\n').next()?;
        #[derive(Deserialize)]
        struct Seq {
            seq: i64,
        }
        serde_json::from_str::<Seq>(last).ok().map(|s| s.seq)
    }
}

impl Sink for FileSink {
    fn send<'a>(
        &'a mut self,
        events: &'a [StoredEvent],
    ) -> futures::future::BoxFuture<'a, std::io::Result<()>> {
        // Small synchronous writes and one fsync per batch, on the forwarder's own task:
        // block_in_place keeps the runtime's other tasks running meanwhile.
        let result = tokio::task::block_in_place(|| self.write_events(events));
        if result.is_err() {
            self.file = None;
        }
        async move { result }.boxed()
    }

    fn healthy(&mut self) -> futures::future::BoxFuture<'_, bool> {
        async { true }.boxed()
    }

    fn disconnect(&mut self) {
        self.file = None;
    }

    fn confirms_on_send(&self) -> bool {
        true
    }

    /// After a crash between a write and the cursor's move, the file already holds the events
    /// up to its last line: start after it, so the file gets no repeats. A last line cut short
    /// by the crash is removed first.
    fn resume_point(&mut self, cursor: i64) -> i64 {
        if let Err(e) = self.drop_partial_line() {
            tracing::warn!(sink = %self.cfg.name, "audit forwarding: cannot check the end of {}: {e}", self.path().display());
        }
        self.last_seq_in_file().map_or(cursor, |s| s.max(cursor))
    }
}

// ---------------------------------------------------------------- checking an export

/// The result of checking a forwarded copy of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportCheck {
    /// Distinct events checked.
    pub checked: i64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// Events that appeared again with the same content (repeats after a crash).
    pub repeats: i64,
    /// The first problem: (seq, what is wrong).
    pub broken: Option<(i64, String)>,
}

/// Reads an event from one line of an export: a JSON-lines file's line, or a syslog message
/// as sent by the forwarder (with or without its octet count); `None` for lines that hold no
/// Haechi event.
pub fn parse_export_line(line: &str) -> Option<std::result::Result<StoredEvent, String>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let json = if line.trim_start().starts_with('{') {
        line.trim_start()
    } else {
        let at = line.find("[haechi@")?;
        let rest = &line[at..];
        let brace = rest.find('{')?;
        &rest[brace..]
    };
    Some(serde_json::from_str(json).map_err(|e| format!("not a Haechi event: {e}")))
}

/// Checks a forwarded copy, in the order given: every event's hash matches its content, each
/// links to the one before, no `seq` is missing between the first and the last, and a repeated
/// `seq` is the same event. `store_hash` (the store's hash of an event, when checking against
/// the store) is asked for the event before the first (to check the first link) and for every
/// event.
pub fn check_export<I, F>(events: I, mut store_hash: F) -> ExportCheck
where
    I: IntoIterator<Item = StoredEvent>,
    F: FnMut(i64) -> Option<Option<String>>,
{
    let mut out = ExportCheck::default();
    let mut prev: Option<StoredEvent> = None;
    for e in events {
        if let Some(p) = &prev {
            if e.seq <= p.seq {
                // A repeat (after a crash the forwarder sends from its cursor again).
                out.repeats += 1;
                continue;
            }
            if e.seq != p.seq + 1 {
                out.broken = Some((
                    p.seq + 1,
                    format!(
                        "events {} to {} are missing from the export",
                        p.seq + 1,
                        e.seq - 1
                    ),
                ));
                return out;
            }
            if e.prev_hash != p.hash {
                out.broken = Some((
                    e.seq,
                    format!("event {} does not link to event {}", e.seq, p.seq),
                ));
                return out;
            }
        } else {
            out.first_seq = Some(e.seq);
            let expected_prev = if e.seq == 1 {
                Some(crate::GENESIS.to_owned())
            } else {
                store_hash(e.seq - 1).flatten()
            };
            if let Some(expected) = expected_prev {
                if e.prev_hash != expected {
                    out.broken = Some((
                        e.seq,
                        format!(
                            "event {} does not link to the event before it in the store",
                            e.seq
                        ),
                    ));
                    return out;
                }
            }
        }
        if crate::event_hash(&e) != e.hash {
            out.broken = Some((
                e.seq,
                format!(
                    "event {} was modified: its content does not match its hash",
                    e.seq
                ),
            ));
            return out;
        }
        match store_hash(e.seq) {
            Some(Some(h)) if h != e.hash => {
                out.broken = Some((
                    e.seq,
                    format!("event {} differs from the store's event {}", e.seq, e.seq),
                ));
                return out;
            }
            Some(None) => {
                out.broken = Some((e.seq, format!("event {} is not in the store", e.seq)));
                return out;
            }
            _ => {}
        }
        out.checked += 1;
        out.last_seq = Some(e.seq);
        prev = Some(e);
    }
    out
}

/// The store's hash of event `seq` (`None` when there is no such event).
pub async fn stored_hash(store: &Store, seq: i64) -> Result<Option<String>> {
    Ok(read!(store, |db| sqlx::query_scalar(
        "SELECT hash FROM audit_events WHERE seq = $1"
    )
    .bind(seq)
    .fetch_optional(db)
    .await)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<StoredEvent> {
        let mut prev = crate::GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = StoredEvent {
                    seq,
                    at: 1_700_000_000_000 + seq,
                    user_id: Some("admin".into()),
                    source_ip: None,
                    family: "admin".into(),
                    action: "user.create".into(),
                    target: Some(format!("user:{seq}")),
                    outcome: "success".into(),
                    detail: "{\"k\":\"v]\\\"\"}".into(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = crate::event_hash(&e);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn a_syslog_message_carries_the_event_and_reads_back() {
        let e = &chain(1)[0];
        let m = syslog_message(e, 13, "host one", 42);
        assert!(m.starts_with("<110>1 "), "{m}");
        assert!(
            m.contains(" host_one haechi 42 user.create [haechi@32473 seq=\"1\" hash=\""),
            "{m}"
        );
        let back = parse_export_line(&format!("{} {m}", m.len()))
            .unwrap()
            .unwrap();
        assert_eq!(&back.hash, &e.hash);
        assert_eq!(crate::event_hash(&back), e.hash);
    }

    #[test]
    fn an_export_is_checked_link_by_link() {
        let events = chain(5);
        let ok = check_export(events.clone(), |_| None);
        assert_eq!((ok.checked, ok.broken.clone()), (5, None));
        // Repeats after a crash are told apart by seq.
        let mut repeated = events.clone();
        repeated.insert(3, events[1].clone());
        repeated.insert(4, events[2].clone());
        let r = check_export(repeated, |_| None);
        assert_eq!((r.checked, r.repeats, r.broken), (5, 2, None));
        // A gap, an edit.
        let mut gap = events.clone();
        gap.remove(2);
        assert_eq!(check_export(gap, |_| None).broken.unwrap().0, 3);
        let mut edited = events.clone();
        edited[3].target = Some("user:x".into());
        assert_eq!(check_export(edited, |_| None).broken.unwrap().0, 4);
        // Against a store that holds other hashes.
        let other = check_export(events, |seq| Some(Some(format!("h{seq}"))));
        assert_eq!(other.broken.unwrap().0, 1);
    }

    #[test]
    fn sinks_are_checked() {
        let syslog = SinkConfig {
            name: "siem".into(),
            address: Some("127.0.0.1:514".into()),
            ..Default::default()
        };
        assert!(validate(std::slice::from_ref(&syslog)).is_ok());
        assert!(validate(&[syslog.clone(), syslog.clone()])
            .unwrap_err()
            .contains("two sinks"));
        let tls = SinkConfig {
            tls: true,
            ..syslog.clone()
        };
        assert!(validate(&[tls]).unwrap_err().contains("ca_file"));
        let file = SinkConfig {
            name: "f".into(),
            kind: SinkKind::File,
            ..Default::default()
        };
        assert!(validate(&[file]).unwrap_err().contains("path"));
    }

    /// A TLS receiver with a certificate for `localhost`; returns its port, its CA (PEM) and
    /// what it receives.
    async fn tls_receiver() -> (u16, String, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let _ = tx.send(buf[..n].to_vec());
                    }
                });
            }
        });
        (port, cert.pem(), rx)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_syslog_sink_speaks_tls_to_the_receiver_its_ca_vouches_for() {
        let (port, ca, mut rx) = tls_receiver().await;
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        let cfg = SinkConfig {
            name: "siem".into(),
            address: Some(format!("127.0.0.1:{port}")),
            tls: true,
            ca_file: Some(ca_file.clone()),
            server_name: Some("localhost".into()),
            ..Default::default()
        };
        assert!(validate(std::slice::from_ref(&cfg)).is_ok());
        let mut sink = SyslogSink::new(cfg.clone(), "host".into());
        let events = chain(3);
        sink.send(&events).await.unwrap();
        let mut got = Vec::new();
        while got.iter().filter(|b| **b == b'<').count() < 3 {
            got.extend(
                tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let text = String::from_utf8(got).unwrap();
        for e in &events {
            assert!(
                text.contains(&format!("seq=\"{}\" hash=\"{}\"", e.seq, e.hash)),
                "{text}"
            );
        }
        assert!(sink.healthy().await);

        // A receiver whose certificate that CA did not sign is refused.
        let (other, _, _) = tls_receiver().await;
        let mut sink = SyslogSink::new(
            SinkConfig {
                address: Some(format!("127.0.0.1:{other}")),
                ..cfg
            },
            "host".into(),
        );
        assert!(sink.send(&events).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_file_sink_rotates_and_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut sink = FileSink::new(SinkConfig {
            name: "f".into(),
            kind: SinkKind::File,
            path: Some(path.clone()),
            max_bytes: 4096,
            keep: 50,
            ..Default::default()
        });
        let events = chain(60);
        // Small batches, then one batch of several files' worth.
        for part in events[..21].chunks(7) {
            sink.send(part).await.unwrap();
        }
        sink.send(&events[21..]).await.unwrap();
        assert_eq!(sink.resume_point(0), 60);
        // Half a line left by a crash is cut on the next start.
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"{\"seq\":61,\"at\"").unwrap();
        }
        let mut again = FileSink::new(sink.cfg.clone());
        assert_eq!(again.resume_point(0), 60);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
        let mut files: Vec<PathBuf> = (1..=50)
            .rev()
            .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
            .filter(|p| p.exists())
            .collect();
        assert!(files.len() >= 2, "rotated: {files:?}");
        files.push(path.clone());
        let mut all = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(
                text.len() as u64 <= 4096,
                "{} is {} bytes",
                f.display(),
                text.len()
            );
            for line in text.lines() {
                all.push(parse_export_line(line).unwrap().unwrap());
            }
        }
        let check = check_export(all, |_| None);
        assert_eq!((check.checked, check.broken), (60, None));
    }
}
