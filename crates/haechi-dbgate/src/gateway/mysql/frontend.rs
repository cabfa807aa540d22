//! The client side: the handshake (TLS offered), the login of the Haechi user, and the command
//! phase, where every command is decided before it reaches the database. The classic protocol
//! is strictly request → response, so a refusal is answered directly with error 1142 and the
//! database never sees the command.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use secrecy::SecretString;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::backend::{self, Backend, Expect};
use super::protocol::{self as p};
use crate::classify::{mysql as classify_mysql, Classification};
use crate::error::{ClientError, ER_ACCESS_DENIED};
use crate::gateway::{BoxIo, Session, StatementRecord, Verdict};
use crate::privilege::{PrivSet, Privilege};
use crate::targets::Kind;
use crate::DbGate;

/// The version the gateway announces (clients adapt to MySQL 8 behaviour).
const SERVER_VERSION: &str = "8.0.99-Haechi-gateway";
/// utf8mb4_general_ci.
const DEFAULT_COLLATION: u8 = 45;
/// Collation ids of the character sets in [`classify_mysql::UNSAFE_CHARSETS`].
const UNSAFE_COLLATIONS: &[u8] = &[1, 84, 13, 88, 28, 87, 95, 96, 12, 91, 97, 98, 248, 249];

const ER_TABLEACCESS_DENIED: u16 = 1142;
const ER_UNKNOWN_COM: u16 = 1047;

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
    let scramble: Vec<u8> = (0..20).map(|_| rand::random::<u8>() % 94 + 33).collect();
    let conn_id: u32 = rand::random::<u32>() & 0x7fff_ffff;
    let mut caps_offered = p::GATEWAY_CAPS;
    if acceptor.is_none() {
        caps_offered &= !p::CLIENT_SSL;
    }
    let mut hello = BytesMut::new();
    hello.put_u8(10);
    hello.put_slice(SERVER_VERSION.as_bytes());
    hello.put_u8(0);
    hello.put_u32_le(conn_id);
    hello.put_slice(&scramble[..8]);
    hello.put_u8(0);
    hello.put_u16_le(caps_offered as u16);
    hello.put_u8(DEFAULT_COLLATION);
    hello.put_u16_le(p::SERVER_STATUS_AUTOCOMMIT);
    hello.put_u16_le((caps_offered >> 16) as u16);
    hello.put_u8(21);
    hello.put_slice(&[0u8; 10]);
    hello.put_slice(&scramble[8..]);
    hello.put_u8(0);
    hello.put_slice(b"caching_sha2_password\0");
    let mut out = BytesMut::new();
    p::put_packet(&mut out, 0, &hello);
    crate::gateway::send(&mut io, &out).await?;

    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut pkt = read_pre_auth(&mut io, &mut buf, deadline).await?;
    let mut encrypted = false;
    if pkt.payload.len() >= 4 {
        let caps = u32::from_le_bytes([
            pkt.payload[0],
            pkt.payload[1],
            pkt.payload[2],
            pkt.payload[3],
        ]);
        if caps & p::CLIENT_SSL != 0 && pkt.payload.len() <= 32 {
            let Some(a) = &acceptor else {
                return refuse_login(
                    &mut io,
                    pkt.seq.wrapping_add(1),
                    "TLS is not available on this gateway",
                )
                .await;
            };
            // Bytes read past the SSLRequest (a ClientHello sent in the same write) are the
            // start of the TLS handshake.
            let early = buf.split().freeze();
            let plain = crate::gateway::Prefixed::new(early, io);
            io = Box::new(crate::gateway::before(deadline, a.accept(plain)).await?);
            encrypted = true;
            pkt = read_pre_auth(&mut io, &mut buf, deadline).await?;
        }
    }
    let Some(resp) = parse_response(&pkt.payload) else {
        return refuse_login(
            &mut io,
            pkt.seq.wrapping_add(1),
            "malformed handshake response",
        )
        .await;
    };
    let mut seq = pkt.seq.wrapping_add(1);
    if !encrypted && !crate::gateway::pg::peer_is_loopback(peer) {
        return refuse_login(
            &mut io,
            seq,
            "the Haechi gateway takes passwords over TLS only: connect with TLS (the mariadb client does by default; mysql: --ssl-mode=REQUIRED)",
        )
        .await;
    }
    if UNSAFE_COLLATIONS.contains(&resp.charset) {
        return refuse_login(
            &mut io,
            seq,
            "this character set is not accepted by the gateway; use utf8mb4",
        )
        .await;
    }
    // Get the password in clear: caching_sha2_password's full authentication over TLS, or
    // mysql_clear_password on a loopback connection without TLS.
    let plugin = if encrypted {
        "caching_sha2_password"
    } else {
        "mysql_clear_password"
    };
    if !encrypted && resp.plugin == plugin {
        let password = strip_nul(&resp.auth);
        return login(io, buf, peer, gate, &main, resp, seq, password).await;
    }
    if resp.plugin != plugin {
        let mut sw = BytesMut::new();
        sw.put_u8(0xFE);
        sw.put_slice(plugin.as_bytes());
        sw.put_u8(0);
        sw.put_slice(&scramble);
        sw.put_u8(0);
        let mut out = BytesMut::new();
        p::put_packet(&mut out, seq, &sw);
        crate::gateway::send(&mut io, &out).await?;
        let r = read_pre_auth(&mut io, &mut buf, deadline).await?;
        seq = r.seq.wrapping_add(1);
        if plugin == "mysql_clear_password" {
            return login(io, buf, peer, gate, &main, resp, seq, strip_nul(&r.payload)).await;
        }
    }
    let mut out = BytesMut::new();
    p::put_packet(&mut out, seq, &[0x01, 0x04]);
    crate::gateway::send(&mut io, &out).await?;
    let r = read_pre_auth(&mut io, &mut buf, deadline).await?;
    seq = r.seq.wrapping_add(1);
    if r.payload.first() == Some(&0x02) && r.payload.len() == 1 {
        return refuse_login(
            &mut io,
            seq,
            "the gateway does not hand out an RSA key: connect with TLS",
        )
        .await;
    }
    login(io, buf, peer, gate, &main, resp, seq, strip_nul(&r.payload)).await
}

/// A packet of the login, within its deadline and size cap.
async fn read_pre_auth(
    io: &mut BoxIo,
    buf: &mut BytesMut,
    deadline: tokio::time::Instant,
) -> std::io::Result<p::Packet> {
    crate::gateway::before(
        deadline,
        p::read_packet_capped(io, buf, crate::gateway::PRE_AUTH_MAX_MESSAGE),
    )
    .await
}

fn strip_nul(b: &[u8]) -> Vec<u8> {
    b.strip_suffix(&[0]).unwrap_or(b).to_vec()
}

struct Response {
    caps: u32,
    auth: Vec<u8>,
    charset: u8,
    user: String,
    database: String,
    plugin: String,
}

fn parse_response(pl: &[u8]) -> Option<Response> {
    if pl.len() < 32 {
        return None;
    }
    let caps = u32::from_le_bytes([pl[0], pl[1], pl[2], pl[3]]);
    if caps & p::CLIENT_PROTOCOL_41 == 0 {
        return None;
    }
    let charset = pl[8];
    let mut b = &pl[32..];
    let user = String::from_utf8_lossy(p::nul_str(&mut b)?).into_owned();
    let auth = if caps & p::CLIENT_PLUGIN_AUTH_LENENC != 0 {
        p::lenenc_bytes(&mut b)?.to_vec()
    } else if caps & p::CLIENT_SECURE_CONNECTION != 0 {
        let n = *b.first()? as usize;
        let v = b.get(1..1 + n)?.to_vec();
        b = b.get(1 + n..)?;
        v
    } else {
        p::nul_str(&mut b)?.to_vec()
    };
    let mut database = String::new();
    if caps & p::CLIENT_CONNECT_WITH_DB != 0 && !b.is_empty() {
        database = String::from_utf8_lossy(p::nul_str(&mut b).unwrap_or(b)).into_owned();
    }
    let mut plugin = String::new();
    if caps & p::CLIENT_PLUGIN_AUTH != 0 && !b.is_empty() {
        plugin = String::from_utf8_lossy(p::nul_str(&mut b).unwrap_or(b)).into_owned();
    }
    Some(Response {
        caps,
        auth,
        charset,
        user,
        database,
        plugin,
    })
}

async fn refuse_login(io: &mut BoxIo, seq: u8, message: &str) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    p::err_packet(&mut out, seq, ER_ACCESS_DENIED, "28000", message);
    crate::gateway::send(io, &out).await?;
    Ok(())
}

/// Sends `e` as the ERR packet that ends the login.
async fn client_error(io: &mut BoxIo, seq: u8, e: &ClientError) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    p::err_packet(&mut out, seq, e.mysql_code, e.mysql_sqlstate(), &e.message);
    crate::gateway::send(io, &out).await
}

#[allow(clippy::too_many_arguments)]
async fn login(
    mut io: BoxIo,
    mut buf: BytesMut,
    peer: SocketAddr,
    gate: Arc<DbGate>,
    main: &tokio::runtime::Handle,
    resp: Response,
    seq: u8,
    password: Vec<u8>,
) -> std::io::Result<()> {
    let password = SecretString::from(String::from_utf8_lossy(&password).into_owned());
    let (mut session, db_password) = match gate
        .login_with_password(
            main,
            Kind::Mysql,
            "mysql",
            resp.user.clone(),
            resp.database.clone(),
            password,
            peer,
        )
        .await
    {
        Ok(s) => s,
        Err(e) => return client_error(&mut io, seq, &e.for_client()).await,
    };
    let charset = if resp.charset == 0 {
        DEFAULT_COLLATION
    } else {
        resp.charset
    };
    let mut db = match backend::connect(
        &session.target,
        &session.account.account,
        &db_password,
        resp.caps,
        charset,
        gate.config().backend_connect_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            let c = e.for_client(&session.target.name, &session.account.account);
            return client_error(&mut io, seq, &c).await;
        }
    };
    drop(db_password);
    gate.note_mysql_flavor(&session.target.name, db.flavor);
    let mut out = BytesMut::new();
    p::ok_packet(&mut out, seq, db.status);
    crate::gateway::send(&mut io, &out).await?;
    // An administrator may end the session (see `crate::sessions`): the commands loop is then
    // dropped, and both sockets with it.
    let open = session.open();
    tokio::select! {
        r = commands(&mut io, &mut buf, &mut db, &mut session) => r,
        _ = open.ended() => Ok(()),
    }
}

/// A statement prepared with COM_STMT_PREPARE.
struct Stmt {
    text: Arc<str>,
    needs: PrivSet,
}

/// The command phase of one logged-in connection.
struct Commands<'a> {
    client: &'a mut BoxIo,
    buf: &'a mut BytesMut,
    db: &'a mut Backend,
    session: &'a mut Session,
    stmts: HashMap<u32, Stmt>,
    auditor: crate::gateway::Auditor,
}

/// What to do after a command was looked at.
enum Next {
    /// Decide the statement (text for the audit, classification, response shape).
    Decide(String, Classification, Expect),
    /// The command was handled; read the next.
    Done,
    /// The connection ends.
    Quit,
}

async fn commands(
    client: &mut BoxIo,
    buf: &mut BytesMut,
    db: &mut Backend,
    session: &mut Session,
) -> std::io::Result<()> {
    let auditor = session.auditor();
    let mut c = Commands {
        client,
        buf,
        db,
        session,
        stmts: HashMap::new(),
        auditor,
    };
    loop {
        let pkt = match p::read_packet(c.client, c.buf).await {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if pkt.payload.len() >= p::MAX_PAYLOAD {
            let mut out = BytesMut::new();
            p::err_packet(
                &mut out,
                1,
                1153,
                "08S01",
                "commands of 16 MiB or more are not accepted by the gateway",
            );
            crate::gateway::send(c.client, &out).await?;
            return Ok(());
        }
        let Some(&cmd) = pkt.payload.first() else {
            return Ok(());
        };
        let started = Instant::now();
        match c.command(&pkt, cmd, started).await? {
            Next::Decide(text, class, expect) => {
                c.decided(&pkt, &text, &class, expect, started).await?
            }
            Next::Done => {}
            Next::Quit => return Ok(()),
        }
    }
}

impl Commands<'_> {
    /// Looks at one command: what needs a decision is returned; the rest is handled here.
    async fn command(
        &mut self,
        pkt: &p::Packet,
        cmd: u8,
        started: Instant,
    ) -> std::io::Result<Next> {
        let pl = &pkt.payload;
        let show = |text: &str, expect| {
            let c = Classification::needs(PrivSet::of(&[Privilege::Show]), 1);
            Next::Decide(text.into(), c, expect)
        };
        Ok(match cmd {
            // COM_QUIT
            0x01 => {
                forward(self.db, pl, pkt.seq).await?;
                Next::Quit
            }
            0x03 => {
                let sql = String::from_utf8_lossy(&pl[1..]).into_owned();
                let c = self.classify(&pl[1..]);
                Next::Decide(sql, c, Expect::Results)
            }
            0x02 => {
                let schema = String::from_utf8_lossy(&pl[1..]).into_owned();
                Next::Decide(
                    format!("USE `{schema}`"),
                    Classification::needs(PrivSet::of(&[Privilege::Connect]), 1),
                    Expect::Results,
                )
            }
            0x04 => show("<COM_FIELD_LIST>", Expect::Fields),
            0x09 => show("<COM_STATISTICS>", Expect::Single),
            0x0a => show("<COM_PROCESS_INFO>", Expect::Results),
            0x0c => Next::Decide(
                "<COM_PROCESS_KILL>".into(),
                Classification::needs(PrivSet::of(&[Privilege::Command]), 1),
                Expect::Results,
            ),
            // COM_PING, COM_SET_OPTION, COM_STMT_RESET: one packet back.
            0x0e | 0x1b | 0x1a => self.pass(pkt, Some(Expect::Single)).await?,
            // COM_RESET_CONNECTION: forgets the prepared statements too.
            0x1f => {
                self.pass(pkt, Some(Expect::Single)).await?;
                self.stmts.clear();
                self.session.prepared.clear();
                Next::Done
            }
            0x16 => self.prepare(pkt, started).await?,
            0x17 | 0x1c => self.execute(pkt, cmd).await?,
            // COM_STMT_SEND_LONG_DATA: no response.
            0x18 => self.pass(pkt, None).await?,
            // COM_STMT_CLOSE: no response.
            0x19 => {
                if let Some(b) = pl.get(1..5) {
                    self.stmts
                        .remove(&u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
                self.pass(pkt, None).await?
            }
            0x11 => {
                // COM_CHANGE_USER would log in as someone else on the same connection: the
                // person must reconnect through the gateway instead.
                let mut out = BytesMut::new();
                p::err_packet(
                    &mut out,
                    pkt.seq.wrapping_add(1),
                    ER_ACCESS_DENIED,
                    "28000",
                    "Haechi DB gateway: changing the user on an open connection is not allowed; reconnect",
                );
                crate::gateway::send(self.client, &out).await?;
                Next::Quit
            }
            other => {
                let mut out = BytesMut::new();
                p::err_packet(
                    &mut out,
                    pkt.seq.wrapping_add(1),
                    ER_UNKNOWN_COM,
                    "08S01",
                    &format!(
                        "Haechi DB gateway: command 0x{other:02x} is not allowed through the gateway"
                    ),
                );
                crate::gateway::send(self.client, &out).await?;
                Next::Done
            }
        })
    }

    /// Classifies statement text as the database's flavor reads it.
    fn classify(&self, text: &[u8]) -> Classification {
        let prepared = |n: &str| self.session.prepared.get(n).copied();
        match std::str::from_utf8(text) {
            Ok(s) => classify_mysql::classify(s, self.db.flavor, &prepared),
            Err(_) => Classification::unclassifiable("the statement is not valid UTF-8"),
        }
    }

    /// Passes a command that needs no decision on, with its response when it has one.
    async fn pass(&mut self, pkt: &p::Packet, response: Option<Expect>) -> std::io::Result<Next> {
        forward(self.db, &pkt.payload, pkt.seq).await?;
        if let Some(expect) = response {
            backend::relay_response(self.db, self.client, self.buf, expect, false).await?;
        }
        Ok(Next::Done)
    }

    /// COM_STMT_PREPARE: decided when prepared (and again at each execution).
    async fn prepare(&mut self, pkt: &p::Packet, started: Instant) -> std::io::Result<Next> {
        let pl = &pkt.payload;
        let sql = String::from_utf8_lossy(&pl[1..]).into_owned();
        let c = self.classify(&pl[1..]);
        let verdict = self.session.decide(&c);
        if let Verdict::Refuse { message, .. } = &verdict {
            audit(&self.auditor, &sql, c.needs, &verdict, 0, started, None).await;
            refuse(self.client, message).await?;
            return Ok(Next::Done);
        }
        forward(self.db, pl, pkt.seq).await?;
        let o =
            backend::relay_response(self.db, self.client, self.buf, Expect::Prepare, false).await?;
        if let Some(id) = o.stmt_id {
            self.stmts.insert(
                id,
                Stmt {
                    text: Arc::from(sql.as_str()),
                    needs: c.needs,
                },
            );
        }
        Ok(Next::Done)
    }

    /// COM_STMT_EXECUTE / COM_STMT_FETCH: the prepared statement, decided again.
    async fn execute(&mut self, pkt: &p::Packet, cmd: u8) -> std::io::Result<Next> {
        let id = pkt
            .payload
            .get(1..5)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let Some(stmt) = id.and_then(|id| self.stmts.get(&id)) else {
            // Unknown statement: the database answers with its own error.
            return self.pass(pkt, Some(Expect::Results)).await;
        };
        let expect = if cmd == 0x1c {
            Expect::Fields
        } else {
            Expect::Results
        };
        Ok(Next::Decide(
            stmt.text.to_string(),
            Classification::needs(stmt.needs, 1),
            expect,
        ))
    }

    /// Refuses or runs a decided command. Each statement's event goes before the packet that
    /// ends its answer (committed first under `audit.durability = strict`; only queued when
    /// batched).
    async fn decided(
        &mut self,
        pkt: &p::Packet,
        text: &str,
        class: &Classification,
        expect: Expect,
        started: Instant,
    ) -> std::io::Result<()> {
        let verdict = self.session.decide(class);
        if let Verdict::Refuse { message, .. } = &verdict {
            audit(&self.auditor, text, class.needs, &verdict, 0, started, None).await;
            return refuse(self.client, message).await;
        }
        self.session.apply(class);
        forward(self.db, &pkt.payload, pkt.seq).await?;
        let o = backend::relay_response_held(
            self.db,
            self.client,
            self.buf,
            expect,
            class.flags.local_infile,
        )
        .await?;
        let code = o.error.map(|c| c.to_string());
        audit(
            &self.auditor,
            text,
            class.needs,
            &verdict,
            o.rows,
            started,
            code.as_deref(),
        )
        .await;
        backend::flush_held(self.db, self.client).await
    }
}

async fn forward(db: &mut Backend, payload: &[u8], seq: u8) -> std::io::Result<()> {
    let mut out = std::mem::take(&mut db.out);
    out.clear();
    p::put_packet(&mut out, seq, payload);
    let written = crate::gateway::send(&mut db.io, &out).await;
    out.clear();
    db.out = out;
    written
}

async fn refuse(client: &mut BoxIo, message: &str) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    p::err_packet(&mut out, 1, ER_TABLEACCESS_DENIED, "42000", message);
    crate::gateway::send(client, &out).await
}

async fn audit(
    auditor: &crate::gateway::Auditor,
    text: &str,
    needs: PrivSet,
    verdict: &Verdict,
    rows: u64,
    started: Instant,
    error: Option<&str>,
) {
    auditor
        .audit(StatementRecord {
            text,
            needs,
            verdict,
            rows,
            started,
            error,
        })
        .await;
}
