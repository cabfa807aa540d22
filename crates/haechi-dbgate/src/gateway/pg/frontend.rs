//! The client side: startup (SSL, cancel requests), the password login of the Haechi user,
//! then every message from the client, classified and decided before it reaches the database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use secrecy::SecretString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::backend::{self, Markers, Unit, MARKER_PREFIX};
use super::pool;
use super::protocol::{self as p, Msg};
use super::{BackendKey, CancelTarget};
use crate::classify::{pg as classify_pg, Classification};
use crate::gateway::{before, BoxIo, LoginFailed, Session, Verdict};
use crate::privilege::PrivSet;
use crate::targets::Kind;
use crate::DbGate;

/// Startup parameters passed on to the database; anything else (notably `options`, which can
/// set any setting) is dropped.
const FORWARDED_PARAMS: &[&str] = &[
    "application_name",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
];

pub async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    gate: Arc<DbGate>,
    acceptor: Option<TlsAcceptor>,
    main: tokio::runtime::Handle,
) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + crate::gateway::PRE_AUTH_DEADLINE;
    let mut io: BoxIo = Box::new(tcp);
    let mut encrypted = false;
    let params = loop {
        // Startup packets are read exactly (length, then body), so a TLS ClientHello sent in
        // the same write as the SSLRequest stays in the socket for the TLS handshake.
        let mut pkt = before(deadline, p::read_startup(&mut io)).await?;
        let code = pkt.get_i32();
        match code {
            p::SSL_REQUEST => match &acceptor {
                Some(a) if !encrypted => {
                    crate::gateway::send(&mut io, b"S").await?;
                    io = Box::new(before(deadline, a.accept(io)).await?);
                    encrypted = true;
                }
                _ => crate::gateway::send(&mut io, b"N").await?,
            },
            p::GSSENC_REQUEST => crate::gateway::send(&mut io, b"N").await?,
            p::CANCEL_REQUEST if pkt.len() >= 8 => {
                let key = (pkt.get_i32(), pkt.get_i32());
                match gate.cancels.get(key) {
                    Some(CancelTarget::Backend(b)) => {
                        if let Err(e) = backend::cancel(&b).await {
                            tracing::debug!("pg gateway: cancel failed: {e}");
                        }
                    }
                    Some(CancelTarget::Pooled(c)) => pool::cancel(&c).await,
                    None => {}
                }
                return Ok(());
            }
            c if c >> 16 == 3 => {
                let mut params = Vec::new();
                while let (Some(k), Some(v)) = (p::cstr(&mut pkt), p::cstr(&mut pkt)) {
                    if k.is_empty() {
                        break;
                    }
                    params.push((k, v));
                }
                if c & 0xffff != 0 {
                    // We speak 3.0: tell a newer client so (NegotiateProtocolVersion).
                    let mut b = BytesMut::new();
                    b.put_i32(p::PROTOCOL_3);
                    let unknown: Vec<&(String, String)> = params
                        .iter()
                        .filter(|(k, _)| k.starts_with("_pq_."))
                        .collect();
                    b.put_i32(unknown.len() as i32);
                    for (k, _) in unknown {
                        p::put_cstr(&mut b, k);
                    }
                    let mut out = BytesMut::new();
                    p::put_msg(&mut out, b'v', &b);
                    crate::gateway::send(&mut io, &out).await?;
                }
                break params;
            }
            _ => {
                return fatal(&mut io, "08P01", "unsupported startup request").await;
            }
        }
    };
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(user) = get("user") else {
        return fatal(
            &mut io,
            "28000",
            "no user name given: log in as <haechi user>@<database account>",
        )
        .await;
    };
    let database = get("database").unwrap_or_else(|| user.clone());
    if !encrypted && !super::peer_is_loopback(peer) {
        return fatal(
            &mut io,
            "28000",
            "the Haechi gateway takes passwords over TLS only: connect with sslmode=require",
        )
        .await;
    }
    // Cleartext password over TLS: the gateway must see the password to check it against
    // Haechi's own (Argon2) hash.
    let mut out = BytesMut::new();
    p::auth_request(&mut out, 3, &[]);
    crate::gateway::send(&mut io, &out).await?;
    let mut buf = BytesMut::with_capacity(8192);
    let m = before(
        deadline,
        p::read_msg_capped(&mut io, &mut buf, crate::gateway::PRE_AUTH_MAX_MESSAGE),
    )
    .await?;
    if m.tag != b'p' {
        return fatal(&mut io, "08P01", "expected a password message").await;
    }
    let mut body = m.body.clone();
    let password = SecretString::from(p::cstr(&mut body).unwrap_or_default());
    let (mut session, db_password) = match gate
        .login_with_password(
            &main,
            Kind::Postgres,
            "postgres",
            user.clone(),
            database.clone(),
            password,
            peer,
        )
        .await
    {
        Ok(s) => s,
        Err(LoginFailed::Refused(m)) => return fatal(&mut io, "28P01", &m).await,
        Err(LoginFailed::Vault(m)) => return fatal(&mut io, "08006", &m).await,
    };
    // An administrator may end the session (see `crate::sessions`): then everything below is
    // dropped, and with it both sockets.
    let open = session.open();
    let key: (i32, i32) = (rand::random::<i32>() & 0x7fff_ffff, rand::random());
    let gate_after = gate.clone();
    let work = async move {
        let forwarded: Vec<(String, String)> = params
            .iter()
            .filter(|(k, v)| {
                FORWARDED_PARAMS.contains(&k.to_ascii_lowercase().as_str())
                    || (k.eq_ignore_ascii_case("client_encoding")
                        && matches!(
                            v.to_ascii_uppercase().as_str(),
                            "UTF8" | "UTF-8" | "UNICODE"
                        ))
            })
            .cloned()
            .collect();
        let mut db = match backend::connect(
            &session.target,
            &session.account.account,
            &db_password,
            &forwarded,
            gate.config().backend_connect_timeout,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => {
                let msg = format!(
                    "cannot log in to database target '{}' as '{}': {e}",
                    session.target.name, session.account.account
                );
                return fatal(&mut io, "08006", &msg).await;
            }
        };
        session.catalog = gate
            .pg_catalogs
            .load(&session.target.name, &mut db.io)
            .await;
        // pg_query reads text with standard_conforming_strings on, as every server has since 9.1.
        // A database or role configured otherwise reads backslashes in '...' as escapes, so the
        // classification cannot be trusted: only ALL allows anything then.
        let conforming = db
            .params
            .iter()
            .find(|(k, _)| k == "standard_conforming_strings")
            .is_none_or(|(_, v)| v.eq_ignore_ascii_case("on"));
        if !conforming {
            session.distrust_lexing();
        }
        // Statement pooling (see `pool`); the backend just logged in stays the session's reserve.
        let size = gate.config().pg_pool_size;
        let mut pool = (size > 0 && conforming).then(|| {
            gate.pg_pools.get(
                &session.target,
                &session.account.account,
                &forwarded,
                &db_password,
                gate.config(),
            )
        });
        drop(db_password);
        if let Some(p) = &pool {
            if let Err(e) = p.ensure_open().await {
                tracing::warn!(target = %session.target.name, "pg gateway: no pooled connection, the session runs on its own: {e}");
                pool = None;
            }
        }

        let mut hello = BytesMut::new();
        p::auth_request(&mut hello, 0, &[]);
        for (k, v) in &db.params {
            let mut b = BytesMut::new();
            p::put_cstr(&mut b, k);
            p::put_cstr(&mut b, v);
            p::put_msg(&mut hello, b'S', &b);
        }
        p::backend_key_data(&mut hello, key.0, key.1);
        p::ready_for_query(&mut hello, db.status);
        crate::gateway::send(&mut io, &hello).await?;
        let own = BackendKey {
            host: session.target.host.clone(),
            port: session.target.port,
            socket: session.target.socket.clone(),
            tls: session.target.tls,
            tls_ca_file: session.target.tls_ca_file.clone(),
            pid: db.pid,
            secret: db.secret,
        };
        let (mut client_r, client_w) = tokio::io::split(io);
        let mut leftover = buf;
        let client_w = match pool {
            None => client_w,
            Some(pool) => {
                let client = pool::Client::new(pool, client_w, session.auditor());
                gate.cancels
                    .insert(key, CancelTarget::Pooled(client.clone()));
                let pinned = pooled(&mut client_r, &client, &mut session, &mut leftover).await;
                let writer = match pinned {
                    Ok(true) => client.take_writer().await,
                    _ => None,
                };
                match writer {
                    Some(w) => w,
                    None => {
                        gate.cancels.remove(key);
                        let mut db_io = db.io;
                        let mut bye = BytesMut::new();
                        p::put_msg(&mut bye, b'X', &[]);
                        let _ = crate::gateway::send(&mut db_io, &bye).await;
                        return pinned.map(|_| ());
                    }
                }
            }
        };
        gate.cancels.insert(key, CancelTarget::Backend(own));

        let (db_r, db_w) = tokio::io::split(db.io);
        let (units_tx, units_rx) = mpsc::channel(1024);
        let markers: Markers = Arc::new(Mutex::new(HashMap::new()));
        let auditor = session.auditor();
        let lex = Arc::new(backend::LexWatch::default());
        let from_client = relay(
            client_r,
            db_w,
            &mut session,
            units_tx,
            markers.clone(),
            lex.clone(),
            &mut leftover,
        );
        let from_db = backend::relay(db_r, client_w, units_rx, markers, auditor, lex);
        let result = tokio::select! {
            r = from_client => r,
            r = from_db => r,
        };
        gate.cancels.remove(key);
        result
    };
    let result = tokio::select! {
        r = work => r,
        _ = open.ended() => Ok(()),
    };
    gate_after.cancels.remove(key);
    result
}

/// Runs the session's statements on its pool while they are session-neutral and allowed.
/// `Ok(true)`: the message at the head of `buf` needs the session's own backend (it is left
/// there, and nothing of the session is in flight on the pool any more once
/// [`pool::Client::take_writer`] returns); `Ok(false)`: the client has gone.
async fn pooled<R: AsyncRead + Unpin>(
    client_r: &mut R,
    client: &Arc<pool::Client>,
    session: &mut Session,
    buf: &mut BytesMut,
) -> std::io::Result<bool> {
    let mut key = Vec::with_capacity(256);
    loop {
        while let Some(len) = p::complete_len(buf)? {
            if client.is_dead() {
                return Ok(false);
            }
            match buf[0] {
                b'Q' => {}
                b'X' => return Ok(false),
                _ => return Ok(true),
            }
            let msg = buf.split_to(len).freeze();
            let mut body = msg.slice(5..);
            let sql = p::cstr(&mut body).unwrap_or_default();
            let mut c = {
                let prepared = |name: &str| session.prepared.get(name).copied();
                classify_pg::classify_cached(&sql, &prepared, &session.gate().pg_classes, &mut key)
            };
            session.resolve_fields(&mut c);
            // Refusals, anything not session-neutral, and text with a backslash (which a
            // pooled connection might read otherwise, see `relay`) go the session's own way
            // (decided again there).
            let submitted =
                if c.session_neutral && !sql.contains('\\') && session.decide(&c).allowed() {
                    session.apply(&c);
                    let unit = Unit {
                        text: sql,
                        needs: c.needs,
                        verdict: Verdict::Allow,
                        started: Instant::now(),
                    };
                    client.submit(msg, unit).await.map_err(|job| job.msg)
                } else {
                    Err(msg)
                };
            if let Err(msg) = submitted {
                let mut back = BytesMut::with_capacity(msg.len() + buf.len());
                back.extend_from_slice(&msg);
                back.extend_from_slice(buf);
                *buf = back;
                return Ok(true);
            }
        }
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(32 * 1024);
        }
        if client_r.read_buf(buf).await? == 0 {
            return Ok(false);
        }
    }
}

async fn fatal<W: AsyncWrite + Unpin>(
    io: &mut W,
    code: &str,
    message: &str,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    p::error_response(&mut out, "FATAL", code, message);
    crate::gateway::send(io, &out).await?;
    Ok(())
}

/// A statement prepared with `Parse`.
struct Prepared {
    text: Arc<str>,
    needs: PrivSet,
}

/// The client side's state between messages.
struct Flow<'a> {
    session: &'a mut Session,
    statements: HashMap<String, Prepared>,
    /// Portal → statement name.
    portals: HashMap<String, String>,
    /// Discarding messages up to `Sync` after a refusal.
    skipping: bool,
    /// The unit being built from extended-protocol messages.
    unit: Option<Unit>,
    markers: Markers,
    next_marker: u64,
    marker_base: String,
    /// The classification cache key of the current statement (kept to reuse its memory).
    key: Vec<u8>,
    /// How the database reads text, as its side reports it.
    lex: Arc<backend::LexWatch>,
    /// Units sent to the database (each ends in one `ReadyForQuery`).
    sent: u64,
    /// An `Execute` went to the database in the batch not yet ended by `Sync`.
    batch_executed: bool,
}

impl Flow<'_> {
    fn unit(&mut self) -> &mut Unit {
        self.unit.get_or_insert_with(|| Unit {
            text: String::new(),
            needs: PrivSet::EMPTY,
            verdict: Verdict::Allow,
            started: Instant::now(),
        })
    }

    fn marker(&mut self, message: String) -> String {
        self.next_marker += 1;
        let name = format!("{}{}", self.marker_base, self.next_marker);
        if let Ok(mut m) = self.markers.lock() {
            m.insert(name.clone(), message);
        }
        name
    }

    /// Classifies `sql` as the database will read it. Any statement can turn
    /// `standard_conforming_strings` off or change the client encoding behind the classifier's
    /// back (a function, trigger or view calling `set_config`); the database then reports it
    /// (see [`backend::LexWatch`]) and from then on only `ALL` allows. Text read the same either
    /// way (without a backslash) needs nothing more; text with one waits in `relay` until what
    /// was sent before it has finished, and within a batch after an `Execute`, where it cannot
    /// wait for `Sync`, it needs `ALL`.
    fn classify(&mut self, sql: &str) -> Classification {
        if self.lex.changed() {
            self.session.distrust_lexing();
        }
        let session = &*self.session;
        let prepared = |name: &str| session.prepared.get(name).copied();
        let mut c =
            classify_pg::classify_cached(sql, &prepared, &session.gate().pg_classes, &mut self.key);
        self.session.resolve_fields(&mut c);
        if self.batch_executed && sql.contains('\\') {
            c.needs.add(crate::Privilege::All);
            c.unclassifiable.get_or_insert_with(|| {
                "it holds a backslash and follows an Execute in the same batch, which may change how the database reads text; send Sync before it".to_owned()
            });
        }
        c
    }

    /// Whether message `m` carries text to classify that must wait until every unit sent
    /// before it has finished (see [`Flow::classify`]).
    fn must_wait(&self, m: &Msg) -> bool {
        let text = match m.tag {
            b'Q' => !self.batch_executed,
            b'P' => !self.skipping && !self.batch_executed,
            _ => false,
        };
        text && self.lex.done() < self.sent && m.body.contains(&b'\\')
    }
}

fn append_text(unit: &mut Unit, text: &str) {
    if !unit.text.is_empty() {
        unit.text.push_str("; ");
    }
    if unit.text.len() < 64 * 1024 {
        unit.text.push_str(text);
    }
}

/// A `Bind` to the marker statement: fails in the database with the marker in its message.
fn marker_bind(out: &mut BytesMut, marker: &str) {
    let mut b = BytesMut::new();
    p::put_cstr(&mut b, "");
    p::put_cstr(&mut b, marker);
    b.put_i16(0);
    b.put_i16(0);
    b.put_i16(0);
    p::put_msg(out, b'B', &b);
}

async fn relay<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut client: R,
    mut db: W,
    session: &mut Session,
    units: mpsc::Sender<Unit>,
    markers: Markers,
    lex: Arc<backend::LexWatch>,
    buf: &mut BytesMut,
) -> std::io::Result<()> {
    let marker_base = format!("{MARKER_PREFIX}{:016x}_", rand::random::<u64>());
    let mut flow = Flow {
        session,
        statements: HashMap::new(),
        portals: HashMap::new(),
        skipping: false,
        unit: None,
        markers,
        next_marker: 0,
        marker_base,
        key: Vec::with_capacity(256),
        lex,
        sent: 0,
        batch_executed: false,
    };
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        while let Some(m) = p::frame(buf)? {
            if flow.must_wait(&m) {
                if !out.is_empty() {
                    crate::gateway::send(&mut db, &out).await?;
                    out.clear();
                }
                let lex = flow.lex.clone();
                if lex.finished(flow.sent).await {
                    flow.session.distrust_lexing();
                }
            }
            let done = on_message(&mut flow, m, &mut out, &units).await?;
            if done {
                crate::gateway::send(&mut db, &out).await?;
                return Ok(());
            }
        }
        if !out.is_empty() {
            crate::gateway::send(&mut db, &out).await?;
            out.clear();
        }
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(32 * 1024);
        }
        if client.read_buf(buf).await? == 0 {
            return Ok(());
        }
    }
}

fn send_err() -> std::io::Error {
    std::io::Error::other("the database side of the session has ended")
}

/// Handles one client message; `Ok(true)` when the client said goodbye.
async fn on_message(
    flow: &mut Flow<'_>,
    m: Msg,
    out: &mut BytesMut,
    units: &mpsc::Sender<Unit>,
) -> std::io::Result<bool> {
    match m.tag {
        b'Q' => {
            let mut body = m.body.clone();
            let sql = p::cstr(&mut body).unwrap_or_default();
            let c = flow.classify(&sql);
            let verdict = flow.session.decide(&c);
            let unit = Unit {
                text: sql,
                needs: c.needs,
                verdict: verdict.clone(),
                started: Instant::now(),
            };
            units.send(unit).await.map_err(|_| send_err())?;
            flow.sent += 1;
            match verdict {
                Verdict::Allow => {
                    flow.session.apply(&c);
                    p::put_msg(out, b'Q', &m.body);
                }
                Verdict::Refuse { message, .. } => {
                    let marker = flow.marker(message);
                    let mut b = BytesMut::new();
                    p::put_cstr(&mut b, &format!("EXECUTE {marker}"));
                    p::put_msg(out, b'Q', &b);
                }
            }
        }
        b'P' => {
            if flow.skipping {
                return Ok(false);
            }
            let mut body = m.body.clone();
            let name = p::cstr(&mut body).unwrap_or_default();
            let sql = p::cstr(&mut body).unwrap_or_default();
            let c = flow.classify(&sql);
            let verdict = flow.session.decide(&c);
            match verdict {
                Verdict::Allow => {
                    flow.session.apply(&c);
                    flow.statements.insert(
                        name,
                        Prepared {
                            text: Arc::from(sql.as_str()),
                            needs: c.needs,
                        },
                    );
                    p::put_msg(out, b'P', &m.body);
                }
                Verdict::Refuse { message, missing } => {
                    refuse_in_batch(flow, out, &sql, c.needs, message, missing);
                }
            }
        }
        b'B' => {
            if flow.skipping {
                return Ok(false);
            }
            let mut body = m.body.clone();
            let portal = p::cstr(&mut body).unwrap_or_default();
            let stmt = p::cstr(&mut body).unwrap_or_default();
            flow.portals.insert(portal, stmt);
            p::put_msg(out, b'B', &m.body);
        }
        b'E' => {
            if flow.skipping {
                return Ok(false);
            }
            let mut body = m.body.clone();
            let portal = p::cstr(&mut body).unwrap_or_default();
            let prepared = flow
                .portals
                .get(&portal)
                .and_then(|s| flow.statements.get(s))
                .map(|s| (s.text.clone(), s.needs));
            match prepared {
                Some((text, needs)) => {
                    // The policy may have changed since Parse: decide again (a bit-set check).
                    let c = Classification::needs(needs, 1);
                    match flow.session.decide(&c) {
                        Verdict::Allow => {
                            flow.batch_executed = true;
                            let u = flow.unit();
                            u.needs = u.needs.union(needs);
                            append_text(u, &text);
                            p::put_msg(out, b'E', &m.body);
                        }
                        Verdict::Refuse { message, missing } => {
                            refuse_in_batch(flow, out, &text, needs, message, missing);
                        }
                    }
                }
                // Unknown portal: the database reports it.
                None => p::put_msg(out, b'E', &m.body),
            }
        }
        b'C' => {
            if flow.skipping {
                return Ok(false);
            }
            let mut body = m.body.clone();
            let kind = body.first().copied();
            if !body.is_empty() {
                body.advance(1);
            }
            let name = p::cstr(&mut body).unwrap_or_default();
            match kind {
                Some(b'S') => {
                    flow.statements.remove(&name);
                }
                Some(b'P') => {
                    flow.portals.remove(&name);
                }
                _ => {}
            }
            p::put_msg(out, b'C', &m.body);
        }
        b'D' | b'H' => {
            if !flow.skipping {
                p::put_msg(out, m.tag, &m.body);
            }
        }
        b'S' => {
            flow.skipping = false;
            flow.batch_executed = false;
            flow.sent += 1;
            let unit = flow.unit.take().unwrap_or_else(|| Unit {
                text: String::new(),
                needs: PrivSet::EMPTY,
                verdict: Verdict::Allow,
                started: Instant::now(),
            });
            units.send(unit).await.map_err(|_| send_err())?;
            p::put_msg(out, b'S', &m.body);
        }
        b'F' => {
            // FunctionCall: calls a function by OID, bypassing SQL. Refused.
            let message = "Haechi DB gateway: refused: the FunctionCall protocol message is not allowed through the gateway; call the function from SQL".to_owned();
            let verdict = Verdict::Refuse {
                message: message.clone(),
                missing: PrivSet::of(&[crate::Privilege::All]),
            };
            units
                .send(Unit {
                    text: "<FunctionCall>".into(),
                    needs: PrivSet::of(&[crate::Privilege::All]),
                    verdict,
                    started: Instant::now(),
                })
                .await
                .map_err(|_| send_err())?;
            flow.sent += 1;
            let marker = flow.marker(message);
            let mut b = BytesMut::new();
            p::put_cstr(&mut b, &format!("EXECUTE {marker}"));
            p::put_msg(out, b'Q', &b);
        }
        b'X' => {
            p::put_msg(out, b'X', &m.body);
            return Ok(true);
        }
        // COPY data from the client, and anything else, goes through as it is.
        _ => p::put_msg(out, m.tag, &m.body),
    }
    Ok(false)
}

/// Replaces a refused extended-protocol message with the failing marker `Bind` and discards
/// the rest of the batch up to `Sync` (as the database itself does after an error).
fn refuse_in_batch(
    flow: &mut Flow<'_>,
    out: &mut BytesMut,
    text: &str,
    needs: PrivSet,
    message: String,
    missing: PrivSet,
) {
    let marker = flow.marker(message.clone());
    marker_bind(out, &marker);
    flow.skipping = true;
    let u = flow.unit();
    u.needs = u.needs.union(needs);
    append_text(u, text);
    u.verdict = Verdict::Refuse { message, missing };
}
