//! The client side: startup (SSL, cancel requests), the password login of the Haechi user,
//! then every message from the client, classified and decided before it reaches the database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use secrecy::SecretString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::backend;
use super::pool;
use super::protocol::{self as p, Msg};
use super::shared::{LexWatch, Markers, Unit, MARKER_PREFIX};
use super::{BackendKey, CancelTarget};
use crate::classify::{pg as classify_pg, Classification};
use crate::gateway::{before, BoxIo, Session, Verdict};
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

/// One client connection: its startup, the login of its person, then its session.
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
    let Some(startup) = startup(&mut io, &gate, acceptor.as_ref(), deadline).await? else {
        return Ok(());
    };
    let Some((session, db_password, buf)) =
        login(&mut io, peer, &gate, &main, &startup, deadline).await?
    else {
        return Ok(());
    };
    // An administrator may end the session (see `crate::sessions`): then everything below is
    // dropped, and with it both sockets.
    let open = session.open();
    let key: (i32, i32) = (rand::random::<i32>() & 0x7fff_ffff, rand::random());
    let work = run(
        io,
        buf,
        session,
        db_password,
        &startup.params,
        gate.clone(),
        key,
    );
    let result = tokio::select! {
        r = work => r,
        _ = open.ended() => Ok(()),
    };
    gate.cancels.remove(key);
    result
}

/// What a client's startup asked for.
struct Startup {
    params: Vec<(String, String)>,
    /// The client switched to TLS.
    encrypted: bool,
}

/// Reads the client's startup requests (SSL, GSS, cancel) up to its startup packet. `None`:
/// the connection has nothing more to do (a cancel request, or an error was sent).
async fn startup(
    io: &mut BoxIo,
    gate: &DbGate,
    acceptor: Option<&TlsAcceptor>,
    deadline: tokio::time::Instant,
) -> std::io::Result<Option<Startup>> {
    let mut encrypted = false;
    loop {
        // Startup packets are read exactly (length, then body), so a TLS ClientHello sent in
        // the same write as the SSLRequest stays in the socket for the TLS handshake.
        let mut pkt = before(deadline, p::read_startup(io)).await?;
        let code = pkt.get_i32();
        match code {
            p::SSL_REQUEST => match acceptor {
                Some(a) if !encrypted => {
                    crate::gateway::send(io, b"S").await?;
                    let plain = std::mem::replace(io, Box::new(std::io::Cursor::new(Vec::new())));
                    *io = Box::new(before(deadline, a.accept(plain)).await?);
                    encrypted = true;
                }
                _ => crate::gateway::send(io, b"N").await?,
            },
            p::GSSENC_REQUEST => crate::gateway::send(io, b"N").await?,
            p::CANCEL_REQUEST if pkt.len() >= 8 => {
                cancel((pkt.get_i32(), pkt.get_i32()), gate).await;
                return Ok(None);
            }
            c if c >> 16 == 3 => {
                let params = startup_params(&mut pkt);
                if c & 0xffff != 0 {
                    negotiate_version(io, &params).await?;
                }
                return Ok(Some(Startup { params, encrypted }));
            }
            _ => {
                fatal(io, "08P01", "unsupported startup request").await?;
                return Ok(None);
            }
        }
    }
}

/// Passes a cancel request on to where the session with that key runs its statement.
async fn cancel(key: (i32, i32), gate: &DbGate) {
    match gate.cancels.get(key) {
        Some(CancelTarget::Backend(b)) => {
            if let Err(e) = backend::cancel(&b).await {
                tracing::debug!("pg gateway: cancel failed: {e}");
            }
        }
        Some(CancelTarget::Pooled(c)) => pool::cancel(&c).await,
        None => {}
    }
}

/// The name/value pairs of a startup packet.
fn startup_params(pkt: &mut bytes::Bytes) -> Vec<(String, String)> {
    let mut params = Vec::new();
    while let (Some(k), Some(v)) = (p::cstr(pkt), p::cstr(pkt)) {
        if k.is_empty() {
            break;
        }
        params.push((k, v));
    }
    params
}

/// We speak 3.0: tells a newer client so (NegotiateProtocolVersion), with the protocol
/// options (`_pq_.*`) it asked for, none of which we know.
async fn negotiate_version(io: &mut BoxIo, params: &[(String, String)]) -> std::io::Result<()> {
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
    crate::gateway::send(io, &out).await
}

/// Takes the person's password and logs them in. `None`: refused (the client was told why).
/// Returns the session, the account's password, and what was read past the password.
async fn login(
    io: &mut BoxIo,
    peer: SocketAddr,
    gate: &Arc<DbGate>,
    main: &tokio::runtime::Handle,
    startup: &Startup,
    deadline: tokio::time::Instant,
) -> std::io::Result<Option<(Session, SecretString, BytesMut)>> {
    let get = |k: &str| {
        startup
            .params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let Some(user) = get("user") else {
        fatal(
            io,
            "28000",
            "no user name given: log in as <haechi user>@<database account>",
        )
        .await?;
        return Ok(None);
    };
    let database = get("database").unwrap_or_else(|| user.clone());
    if !startup.encrypted && !super::peer_is_loopback(peer) {
        fatal(
            io,
            "28000",
            "the Haechi gateway takes passwords over TLS only: connect with sslmode=require",
        )
        .await?;
        return Ok(None);
    }
    // Cleartext password over TLS: the gateway must see the password to check it against
    // Haechi's own (Argon2) hash.
    let mut out = BytesMut::new();
    p::auth_request(&mut out, 3, &[]);
    crate::gateway::send(io, &out).await?;
    let mut buf = BytesMut::with_capacity(8192);
    let m = before(
        deadline,
        p::read_msg_capped(io, &mut buf, crate::gateway::PRE_AUTH_MAX_MESSAGE),
    )
    .await?;
    if m.tag != b'p' {
        fatal(io, "08P01", "expected a password message").await?;
        return Ok(None);
    }
    let mut body = m.body.clone();
    let password = SecretString::from(p::cstr(&mut body).unwrap_or_default());
    let logged_in = gate
        .login_with_password(
            main,
            Kind::Postgres,
            "postgres",
            user,
            database,
            password,
            peer,
        )
        .await;
    match logged_in {
        Ok((session, db_password)) => Ok(Some((session, db_password, buf))),
        Err(e) => {
            let c = e.for_client();
            fatal(io, c.sqlstate, &c.message).await?;
            Ok(None)
        }
    }
}

/// The startup parameters passed on to the database.
fn forwarded_params(params: &[(String, String)]) -> Vec<(String, String)> {
    params
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
        .collect()
}

/// A logged-in person's session: the database login as the account, then statements through
/// the pool while they can go there, then through the session's own backend.
async fn run(
    mut io: BoxIo,
    buf: BytesMut,
    mut session: Session,
    db_password: SecretString,
    params: &[(String, String)],
    gate: Arc<DbGate>,
    key: (i32, i32),
) -> std::io::Result<()> {
    let forwarded = forwarded_params(params);
    let connected = backend::connect(
        &session.target,
        &session.account.account,
        &db_password,
        &forwarded,
        gate.config().backend_connect_timeout,
    )
    .await;
    let mut db = match connected {
        Ok(b) => b,
        Err(e) => {
            let c = e.for_client(&session.target.name, &session.account.account);
            return fatal(&mut io, c.sqlstate, &c.message).await;
        }
    };
    let conforming = read_database_state(&gate, &mut session, &mut db).await;
    let pool = session_pool(&gate, &session, &forwarded, &db_password, conforming).await;
    drop(db_password);
    crate::gateway::send(&mut io, &hello(&db, key)).await?;
    let own = BackendKey::of(&session.target, db.pid, db.secret);
    let (mut client_r, client_w) = tokio::io::split(io);
    let mut leftover = buf;
    let client_w = match pool {
        None => client_w,
        Some(pool) => {
            let phase = on_pool(
                &gate,
                key,
                pool,
                client_w,
                &mut client_r,
                &mut session,
                &mut leftover,
            );
            match phase.await {
                Ok(Some(w)) => w,
                other => {
                    let mut bye = BytesMut::new();
                    p::put_msg(&mut bye, b'X', &[]);
                    let _ = crate::gateway::send(&mut db.io, &bye).await;
                    return other.map(|_| ());
                }
            }
        }
    };
    gate.cancels.insert(key, CancelTarget::Backend(own));
    let (db_r, db_w) = tokio::io::split(db.io);
    let (units_tx, units_rx) = mpsc::channel(1024);
    let markers: Markers = Arc::new(Mutex::new(HashMap::new()));
    let auditor = session.auditor();
    let lex = Arc::new(LexWatch::default());
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
    tokio::select! {
        r = from_client => r,
        r = from_db => r,
    }
}

/// Reads what decides how the session's statements are classified: the target's catalog
/// snapshot, and whether the database reads text with standard-conforming strings (returned;
/// when it does not, only `ALL` allows anything).
async fn read_database_state(
    gate: &DbGate,
    session: &mut Session,
    db: &mut backend::Backend,
) -> bool {
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
    conforming
}

/// The statement pool the session starts on (see `pool`), when pooling is on, the database
/// reads text as the classifier does, and a pooled connection can be opened; the backend the
/// session just logged in stays its reserve.
async fn session_pool(
    gate: &DbGate,
    session: &Session,
    forwarded: &[(String, String)],
    db_password: &SecretString,
    conforming: bool,
) -> Option<Arc<pool::Pool>> {
    if gate.config().pg_pool_size == 0 || !conforming {
        return None;
    }
    let pool = gate.pg_pools.get(
        &session.target,
        &session.account.account,
        forwarded,
        db_password,
        gate.config(),
    );
    match pool.ensure_open().await {
        Ok(()) => Some(pool),
        Err(e) => {
            tracing::warn!(target = %session.target.name, "pg gateway: no pooled connection, the session runs on its own: {e}");
            None
        }
    }
}

/// What the client gets once logged in: AuthenticationOk, the database's parameters, the
/// gateway's cancel key for the session and ReadyForQuery.
fn hello(db: &backend::Backend, key: (i32, i32)) -> BytesMut {
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
    hello
}

/// Runs the session on `pool` (see [`pooled`]). `Some`: the client's writer back, for the
/// session's own backend from now on; `None`: the session is over.
async fn on_pool<R: AsyncRead + Unpin>(
    gate: &DbGate,
    key: (i32, i32),
    pool: Arc<pool::Pool>,
    client_w: WriteHalf<BoxIo>,
    client_r: &mut R,
    session: &mut Session,
    leftover: &mut BytesMut,
) -> std::io::Result<Option<WriteHalf<BoxIo>>> {
    let client = pool::Client::new(pool, client_w, session.auditor());
    gate.cancels
        .insert(key, CancelTarget::Pooled(client.clone()));
    let pinned = pooled(client_r, &client, session, leftover).await;
    let writer = match pinned {
        Ok(true) => client.take_writer().await,
        _ => None,
    };
    if writer.is_none() {
        gate.cancels.remove(key);
    }
    match writer {
        Some(w) => Ok(Some(w)),
        None => pinned.map(|_| None),
    }
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
    lex: Arc<LexWatch>,
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
    /// (see [`LexWatch`]) and from then on only `ALL` allows. Text read the same either
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
    lex: Arc<LexWatch>,
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
    // After a refusal in a batch, the database would discard these up to Sync: so do we.
    if flow.skipping && matches!(m.tag, b'P' | b'B' | b'E' | b'C' | b'D' | b'H') {
        return Ok(false);
    }
    match m.tag {
        b'Q' => on_query(flow, &m, out, units).await?,
        b'P' => on_parse(flow, &m, out),
        b'B' => on_bind(flow, &m, out),
        b'E' => on_execute(flow, &m, out),
        b'C' => on_close(flow, &m, out),
        b'S' => on_sync(flow, &m, out, units).await?,
        b'F' => on_function_call(flow, out, units).await?,
        b'X' => {
            p::put_msg(out, b'X', &m.body);
            return Ok(true);
        }
        // Describe, Flush, COPY data from the client, and anything else, go through as they are.
        _ => p::put_msg(out, m.tag, &m.body),
    }
    Ok(false)
}

/// Query: the statement string is decided whole; a refused one is replaced by the marker.
async fn on_query(
    flow: &mut Flow<'_>,
    m: &Msg,
    out: &mut BytesMut,
    units: &mpsc::Sender<Unit>,
) -> std::io::Result<()> {
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
        Verdict::Refuse { message, .. } => marker_query(flow, out, message),
    }
    Ok(())
}

/// Sends a Query that fails in the database with a marker standing for `message`.
fn marker_query(flow: &mut Flow<'_>, out: &mut BytesMut, message: String) {
    let marker = flow.marker(message);
    let mut b = BytesMut::new();
    p::put_cstr(&mut b, &format!("EXECUTE {marker}"));
    p::put_msg(out, b'Q', &b);
}

/// Parse: decided when prepared (and again at each Execute).
fn on_parse(flow: &mut Flow<'_>, m: &Msg, out: &mut BytesMut) {
    let mut body = m.body.clone();
    let name = p::cstr(&mut body).unwrap_or_default();
    let sql = p::cstr(&mut body).unwrap_or_default();
    let c = flow.classify(&sql);
    match flow.session.decide(&c) {
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

/// Bind: notes which statement the portal runs.
fn on_bind(flow: &mut Flow<'_>, m: &Msg, out: &mut BytesMut) {
    let mut body = m.body.clone();
    let portal = p::cstr(&mut body).unwrap_or_default();
    let stmt = p::cstr(&mut body).unwrap_or_default();
    flow.portals.insert(portal, stmt);
    p::put_msg(out, b'B', &m.body);
}

/// Execute: the portal's statement, decided again against the policies as they are now.
fn on_execute(flow: &mut Flow<'_>, m: &Msg, out: &mut BytesMut) {
    let mut body = m.body.clone();
    let portal = p::cstr(&mut body).unwrap_or_default();
    let prepared = flow
        .portals
        .get(&portal)
        .and_then(|s| flow.statements.get(s))
        .map(|s| (s.text.clone(), s.needs));
    let Some((text, needs)) = prepared else {
        // Unknown portal: the database reports it.
        p::put_msg(out, b'E', &m.body);
        return;
    };
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

/// Close: forgets the statement or portal.
fn on_close(flow: &mut Flow<'_>, m: &Msg, out: &mut BytesMut) {
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

/// Sync: ends the batch, and the unit of work the database side audits.
async fn on_sync(
    flow: &mut Flow<'_>,
    m: &Msg,
    out: &mut BytesMut,
    units: &mpsc::Sender<Unit>,
) -> std::io::Result<()> {
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
    Ok(())
}

/// FunctionCall calls a function by OID, bypassing SQL: always refused.
async fn on_function_call(
    flow: &mut Flow<'_>,
    out: &mut BytesMut,
    units: &mpsc::Sender<Unit>,
) -> std::io::Result<()> {
    let message = "Haechi DB gateway: refused: the FunctionCall protocol message is not allowed through the gateway; call the function from SQL".to_owned();
    let all = PrivSet::of(&[crate::Privilege::All]);
    let verdict = Verdict::Refuse {
        message: message.clone(),
        missing: all,
    };
    let unit = Unit {
        text: "<FunctionCall>".into(),
        needs: all,
        verdict,
        started: Instant::now(),
    };
    units.send(unit).await.map_err(|_| send_err())?;
    flow.sent += 1;
    marker_query(flow, out, message);
    Ok(())
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
