//! The database side: connecting and logging in as the account, cancel requests, and carrying
//! the database's messages back to the client (rewriting the errors of refusals and noting
//! rows and completion for the audit).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::protocol as p;
use super::scram::{md5_response, Scram};
use super::shared::{marker_in, LexWatch, Markers, Unit};
use super::BackendKey;
use crate::error::BackendError;
use crate::gateway::{Auditor, BoxIo};
use crate::targets::{BackendTls, Target};

/// A logged-in backend connection.
pub struct Backend {
    pub io: BoxIo,
    pub pid: i32,
    pub secret: i32,
    pub params: Vec<(String, String)>,
    pub status: u8,
}

async fn open(target: &Target, timeout: Duration) -> Result<BoxIo, BackendError> {
    let mut io = tokio::time::timeout(timeout, crate::gateway::dial(target))
        .await
        .map_err(|_| BackendError::Timeout {
            step: format!("connecting to {}", target.address()),
        })?
        .map_err(|source| BackendError::Connect {
            address: target.address(),
            source,
        })?;
    match target.tls {
        BackendTls::Disable => Ok(io),
        BackendTls::Require | BackendTls::VerifyFull => {
            let mut req = BytesMut::new();
            req.put_i32(8);
            req.put_i32(p::SSL_REQUEST);
            crate::gateway::send(&mut io, &req).await?;
            let answer = io.read_u8().await?;
            if answer != b'S' {
                return Err(BackendError::TlsNotOffered {
                    address: target.address(),
                });
            }
            crate::gateway::tls::connect(target, io).await
        }
    }
}

/// Connects and logs in as `account` with `password`, passing `params` in the startup packet.
pub async fn connect(
    target: &Target,
    account: &str,
    password: &SecretString,
    params: &[(String, String)],
    timeout: Duration,
) -> Result<Backend, BackendError> {
    let mut io = open(target, timeout).await?;
    let login = async {
        send_startup(&mut io, target, account, params).await?;
        let mut auth = Auth {
            target,
            account,
            password,
            scram: None,
            scram_verified: false,
        };
        read_login(&mut io, &mut auth).await
    };
    let s = tokio::time::timeout(timeout, login)
        .await
        .map_err(|_| BackendError::Timeout {
            step: "logging in to the database".into(),
        })??;
    Ok(Backend {
        io,
        pid: s.pid,
        secret: s.secret,
        params: s.params,
        status: s.status,
    })
}

/// The startup packet: the account, the target's database, and the client's `params`.
async fn send_startup(
    io: &mut BoxIo,
    target: &Target,
    account: &str,
    params: &[(String, String)],
) -> Result<(), BackendError> {
    let mut body = BytesMut::new();
    body.put_i32(p::PROTOCOL_3);
    for (k, v) in [("user", account), ("database", target.database.as_str())]
        .into_iter()
        .chain(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        p::put_cstr(&mut body, k);
        p::put_cstr(&mut body, v);
    }
    body.put_u8(0);
    let mut pkt = BytesMut::new();
    pkt.put_i32(body.len() as i32 + 4);
    pkt.put_slice(&body);
    crate::gateway::send(io, &pkt).await?;
    Ok(())
}

/// Reads the database's side of the login up to its first `ReadyForQuery`, answering its
/// authentication requests.
async fn read_login(io: &mut BoxIo, auth: &mut Auth<'_>) -> Result<LoginState, BackendError> {
    let mut buf = BytesMut::with_capacity(8192);
    let mut out = LoginState {
        pid: 0,
        secret: 0,
        params: Vec::new(),
        status: b'I',
    };
    loop {
        let m = p::read_msg(io, &mut buf).await?;
        match m.tag {
            b'R' => {
                if let Some(reply) = auth.answer(&m.body)? {
                    crate::gateway::send(io, &reply).await?;
                }
            }
            b'E' => {
                let f = p::error_fields(&m.body);
                let detail = p::field(&f, b'M').unwrap_or_default().to_owned();
                return Err(BackendError::LoginRefused { detail });
            }
            b'S' => {
                let mut b = m.body.clone();
                if let (Some(k), Some(v)) = (p::cstr(&mut b), p::cstr(&mut b)) {
                    out.params.push((k, v));
                }
            }
            b'K' => {
                if m.body.len() >= 8 {
                    out.pid = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
                    out.secret = i32::from_be_bytes([m.body[4], m.body[5], m.body[6], m.body[7]]);
                }
            }
            b'Z' => {
                out.status = m.body.first().copied().unwrap_or(b'I');
                if !buf.is_empty() {
                    return Err(BackendError::Protocol(
                        "the database sent data before the first query".into(),
                    ));
                }
                return Ok(out);
            }
            b'N' | b'v' => {}
            other => {
                return Err(BackendError::Protocol(format!(
                    "unexpected message '{}' during login",
                    other as char
                )))
            }
        }
    }
}

/// The gateway's side of one login's authentication exchange.
struct Auth<'a> {
    target: &'a Target,
    account: &'a str,
    password: &'a SecretString,
    scram: Option<Scram>,
    /// Set once the server proved it knows the password (SCRAM's server signature).
    scram_verified: bool,
}

impl Auth<'_> {
    /// The answer to an `Authentication*` message (`None`: nothing to answer).
    fn answer(&mut self, body: &[u8]) -> Result<Option<BytesMut>, BackendError> {
        let code = i32::from_be_bytes(
            body.get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| BackendError::Protocol("bad authentication message".into()))?,
        );
        let rest = &body[4..];
        let mut reply = BytesMut::new();
        match code {
            // A server that began SCRAM must finish it: AuthenticationOk before its signature
            // was checked could come from anyone in the middle.
            0 if self.scram.is_some() && !self.scram_verified => {
                return Err(BackendError::Scram(
                    "the database accepted the login before proving it knows the password (SCRAM not completed)".into(),
                ));
            }
            0 => return Ok(None),
            // The password itself (clear) or a hash anyone who has it can replay to this
            // server (MD5) goes only to a server whose certificate we checked, unless the
            // target allows it.
            3 | 5 if !self.target.may_send_password() => {
                return Err(BackendError::InsecurePassword {
                    form: if code == 3 { "clear" } else { "MD5" },
                    otherwise: "or allow_insecure_password",
                });
            }
            3 => {
                let mut b = BytesMut::new();
                p::put_cstr(&mut b, self.password.expose_secret());
                p::put_msg(&mut reply, b'p', &b);
            }
            5 => {
                let r = md5_response(self.account, self.password.expose_secret().as_bytes(), rest);
                let mut b = BytesMut::new();
                p::put_cstr(&mut b, &r);
                p::put_msg(&mut reply, b'p', &b);
            }
            10 => {
                let mechs: Vec<&[u8]> = rest.split(|c| *c == 0).collect();
                if !mechs.contains(&&b"SCRAM-SHA-256"[..]) {
                    return Err(BackendError::UnsupportedAuth {
                        method: format!(
                            "SASL ({})",
                            String::from_utf8_lossy(rest).replace('\0', " ").trim()
                        ),
                    });
                }
                let s = Scram::new();
                let first = s.client_first();
                let mut b = BytesMut::new();
                p::put_cstr(&mut b, "SCRAM-SHA-256");
                b.put_i32(first.len() as i32);
                b.put_slice(first.as_bytes());
                p::put_msg(&mut reply, b'p', &b);
                self.scram = Some(s);
            }
            11 => {
                let s = self.scram.as_mut().ok_or_else(out_of_order)?;
                let fin = s.client_final(
                    &String::from_utf8_lossy(rest),
                    self.password.expose_secret().as_bytes(),
                )?;
                p::put_msg(&mut reply, b'p', fin.as_bytes());
            }
            12 => {
                let s = self.scram.as_ref().ok_or_else(out_of_order)?;
                s.verify_server(&String::from_utf8_lossy(rest))?;
                self.scram_verified = true;
                return Ok(None);
            }
            other => {
                return Err(BackendError::UnsupportedAuth {
                    method: format!("code {other}"),
                })
            }
        }
        Ok(Some(reply))
    }
}

fn out_of_order() -> BackendError {
    BackendError::Scram("out of order".into())
}
struct LoginState {
    pid: i32,
    secret: i32,
    params: Vec<(String, String)>,
    status: u8,
}

/// Sends a cancel request for a session to its database.
pub async fn cancel(t: &BackendKey) -> Result<(), BackendError> {
    let target = Target {
        id: 0,
        name: String::new(),
        kind: crate::targets::Kind::Postgres,
        host: t.host.clone(),
        port: t.port,
        socket: t.socket.clone(),
        database: String::new(),
        tls: t.tls,
        tls_ca_file: t.tls_ca_file.clone(),
        allow_insecure_password: false,
        created_by: String::new(),
        created_at: 0,
    };
    let mut io = open(&target, Duration::from_secs(5)).await?;
    let mut pkt = BytesMut::new();
    pkt.put_i32(16);
    pkt.put_i32(p::CANCEL_REQUEST);
    pkt.put_i32(t.pid);
    pkt.put_i32(t.secret);
    crate::gateway::send(&mut io, &pkt).await?;
    let _ = io.shutdown().await;
    Ok(())
}

/// A statement string the database has finished (its ReadyForQuery was read), waiting to be
/// audited once the bytes read with it are on their way to the client.
struct Finished {
    unit: Unit,
    rows: u64,
    error: Option<String>,
}

/// Carries the database's messages to the client until either side closes.
pub async fn relay<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut db: R,
    mut client: W,
    mut units: mpsc::Receiver<Unit>,
    markers: Markers,
    auditor: Auditor,
    lex: Arc<LexWatch>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut pending: VecDeque<Unit> = VecDeque::new();
    let mut finished: Vec<Finished> = Vec::new();
    let mut rows: u64 = 0;
    let mut error: Option<String> = None;
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        if db.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut pos = 0;
        let mut flushed = 0;
        while let Some(len) = p::complete_len(&buf[pos..])? {
            let tag = buf[pos];
            let body = &buf[pos + 5..pos + len];
            match tag {
                b'C' => rows += p::command_rows(body),
                b'E' => {
                    let fields = p::error_fields(body);
                    let message = p::field(&fields, b'M');
                    let refusal = message
                        .and_then(|m| marker_in(m))
                        .and_then(|name| markers.lock().ok().and_then(|mut map| map.remove(name)));
                    match refusal {
                        Some(text) => {
                            crate::gateway::send(&mut client, &buf[flushed..pos]).await?;
                            let mut e = BytesMut::new();
                            p::error_response(&mut e, "ERROR", "42501", &text);
                            crate::gateway::send(&mut client, &e).await?;
                            flushed = pos + len;
                            error = Some("42501".into());
                        }
                        None => {
                            error = p::field(&fields, b'C').map(str::to_owned);
                        }
                    }
                }
                b'S' => {
                    lex.parameter(body);
                }
                b'Z' => {
                    lex.unit_finished();
                    while let Ok(u) = units.try_recv() {
                        pending.push_back(u);
                    }
                    // A batch that executed nothing (Parse/Describe/Sync) is not a statement run.
                    if let Some(unit) = pending
                        .pop_front()
                        .filter(|u| !(u.text.is_empty() && u.verdict.allowed()))
                    {
                        finished.push(Finished {
                            unit,
                            rows,
                            error: error.take(),
                        });
                    }
                    rows = 0;
                    error = None;
                }
                _ => {}
            }
            pos += len;
        }
        // A statement is finished for the client when its ReadyForQuery arrives, and that
        // is in these bytes: its event goes first. Under `audit.durability = strict` that
        // waits for the event's commit (shared with every statement finishing meanwhile), so
        // no client sees a statement done whose record a crash could lose; batched, it only
        // queues the event.
        let mut queued = Vec::with_capacity(finished.len());
        for f in finished.drain(..) {
            queued.push(
                auditor
                    .enqueue(f.unit.record(f.rows, f.error.as_deref()))
                    .await,
            );
        }
        for q in queued {
            q.committed().await;
        }
        crate::gateway::send(&mut client, &buf[flushed..pos]).await?;
        bytes::Buf::advance(&mut buf, pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::Kind;
    use tokio::io::AsyncWriteExt;

    fn target(port: u16) -> Target {
        Target {
            id: 1,
            name: "t".into(),
            kind: Kind::Postgres,
            host: "127.0.0.1".into(),
            port,
            database: "d".into(),
            tls: BackendTls::Disable,
            tls_ca_file: None,
            allow_insecure_password: false,
            socket: None,
            created_by: "x".into(),
            created_at: 0,
        }
    }

    /// A fake server's first step: accepts a connection and reads its startup packet.
    async fn accept_startup(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
        let (mut s, _) = listener.accept().await.unwrap();
        let len = s.read_i32().await.unwrap();
        let mut startup = vec![0u8; len as usize - 4];
        s.read_exact(&mut startup).await.unwrap();
        s
    }

    /// A server that asks for the clear password, then one that asks for MD5, over plain TCP:
    /// the gateway sends neither and fails the login; with `allow_insecure_password` it
    /// answers (issue 26 item 7).
    #[tokio::test]
    async fn no_clear_or_md5_password_without_verified_tls_unless_allowed() {
        for (code, allowed) in [(3, false), (5, false), (3, true), (5, true)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                let mut s = accept_startup(&listener).await;
                let mut out = BytesMut::new();
                let mut b = BytesMut::new();
                b.put_i32(code);
                if code == 5 {
                    b.put_slice(b"salt");
                }
                p::put_msg(&mut out, b'R', &b);
                s.write_all(&out).await.unwrap();
                // What the client sends next, if anything, before it hangs up.
                let mut buf = BytesMut::new();
                p::read_msg(&mut s, &mut buf).await.ok().map(|m| m.tag)
            });
            let mut t = target(port);
            t.allow_insecure_password = allowed;
            let r = connect(
                &t,
                "acct",
                &SecretString::from("pw".to_owned()),
                &[],
                Duration::from_secs(2),
            )
            .await;
            let answered = server.await.unwrap();
            if allowed {
                assert_eq!(
                    answered,
                    Some(b'p'),
                    "code {code}: the password was answered"
                );
            } else {
                assert_eq!(answered, None, "code {code}: nothing was sent");
                let e = r.err().expect("the login fails");
                assert!(matches!(e, BackendError::InsecurePassword { .. }), "{e}");
                assert!(e.to_string().contains("verify-full"), "{e}");
            }
        }
    }

    /// A server that starts SCRAM, takes the client's first message, and then says
    /// AuthenticationOk without the server-final message: the login must fail.
    #[tokio::test]
    async fn a_scram_login_must_be_completed_by_the_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut s = accept_startup(&listener).await;
            let mut out = BytesMut::new();
            let mut b = BytesMut::new();
            b.put_i32(10);
            b.put_slice(b"SCRAM-SHA-256\0\0");
            p::put_msg(&mut out, b'R', &b);
            s.write_all(&out).await.unwrap();
            let mut buf = BytesMut::new();
            let first = p::read_msg(&mut s, &mut buf).await.unwrap();
            assert_eq!(first.tag, b'p');
            let mut out = BytesMut::new();
            p::put_msg(&mut out, b'R', &0i32.to_be_bytes());
            p::put_msg(&mut out, b'Z', b"I");
            s.write_all(&out).await.unwrap();
            let _ = s.read_u8().await;
        });
        let r = connect(
            &target(port),
            "acct",
            &SecretString::from("pw".to_owned()),
            &[],
            Duration::from_secs(5),
        )
        .await;
        match r {
            Ok(_) => panic!("a login without the SCRAM server signature was accepted"),
            Err(e) => assert!(
                matches!(&e, BackendError::Scram(m) if m.contains("SCRAM not completed")),
                "{e}"
            ),
        }
        server.abort();
    }
}
