//! The database side: logging in as the account (mysql_native_password, caching_sha2_password
//! fast or full authentication over TLS), reading the session's `sql_mode`, and carrying a
//! command's whole response back to the client, packet by packet.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};

use super::protocol::{self as p, Packet};
use crate::classify::mysql::Flavor;
use crate::error::BackendError;
use crate::gateway::BoxIo;
use crate::targets::{BackendTls, Target};

/// A logged-in connection.
pub struct Backend {
    pub io: BoxIo,
    pub buf: BytesMut,
    /// What is being written to the client or the database (kept to reuse its memory).
    pub out: BytesMut,
    pub flavor: Flavor,
    pub status: u16,
}

/// `mysql_native_password`: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
pub fn native_scramble(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1: [u8; 20] = Sha1::digest(password).into();
    let h2: [u8; 20] = Sha1::digest(h1).into();
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(h2);
    let h3: [u8; 20] = h.finalize().into();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// `caching_sha2_password`: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble).
pub fn sha2_scramble(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1: [u8; 32] = Sha256::digest(password).into();
    let h2: [u8; 32] = Sha256::digest(h1).into();
    let mut h = Sha256::new();
    h.update(h2);
    h.update(scramble);
    let h3: [u8; 32] = h.finalize().into();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

fn auth_response(
    plugin: &str,
    password: &SecretString,
    scramble: &[u8],
) -> Result<Vec<u8>, BackendError> {
    let pw = password.expose_secret().as_bytes();
    match plugin {
        "mysql_native_password" => Ok(native_scramble(pw, scramble)),
        "caching_sha2_password" => Ok(sha2_scramble(pw, scramble)),
        other => Err(BackendError::UnsupportedAuth {
            method: format!("plugin '{other}'"),
        }),
    }
}

/// Connects and logs in as `account`. `caps` are the capabilities the client negotiated with
/// the gateway (the database gets the same, so results pass through unchanged); `charset`
/// the client's collation id.
pub async fn connect(
    target: &Target,
    account: &str,
    password: &SecretString,
    caps: u32,
    charset: u8,
    timeout: Duration,
) -> Result<Backend, BackendError> {
    let fut = async {
        let mut io =
            crate::gateway::dial(target)
                .await
                .map_err(|source| BackendError::Connect {
                    address: target.address(),
                    source,
                })?;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let hello = p::read_packet(&mut io, &mut buf).await?;
        let h = parse_handshake(&hello.payload)?;
        let mut caps = (caps & p::GATEWAY_CAPS & h.caps)
            | p::CLIENT_PROTOCOL_41
            | p::CLIENT_PLUGIN_AUTH
            | p::CLIENT_SECURE_CONNECTION;
        caps &= !p::CLIENT_SSL;
        if target.database.is_empty() {
            caps &= !p::CLIENT_CONNECT_WITH_DB;
        } else {
            caps |= p::CLIENT_CONNECT_WITH_DB;
        }
        let mut seq = hello.seq.wrapping_add(1);
        let mut encrypted = false;
        if target.tls != BackendTls::Disable {
            if h.caps & p::CLIENT_SSL == 0 {
                return Err(BackendError::TlsNotOffered {
                    address: target.address(),
                });
            }
            let mut req = BytesMut::new();
            req.put_u32_le(caps | p::CLIENT_SSL);
            req.put_u32_le(p::MAX_PAYLOAD as u32);
            req.put_u8(charset);
            req.put_slice(&[0u8; 23]);
            let mut out = BytesMut::new();
            p::put_packet(&mut out, seq, &req);
            crate::gateway::send(&mut io, &out).await?;
            seq = seq.wrapping_add(1);
            io = crate::gateway::tls::connect(target, io).await?;
            caps |= p::CLIENT_SSL;
            encrypted = true;
        }
        let resp = auth_response(&h.plugin, password, &h.scramble)?;
        let body = handshake_response(caps, charset, account, &target.database, &h.plugin, &resp);
        let mut out = BytesMut::new();
        p::put_packet(&mut out, seq, &body);
        crate::gateway::send(&mut io, &out).await?;
        let auth = Auth {
            target,
            password,
            encrypted,
            plugin: h.plugin.clone(),
        };
        let status = auth.finish(&mut io, &mut buf).await?;
        let mut backend = Backend {
            io,
            buf,
            out: BytesMut::with_capacity(16 * 1024),
            flavor: Flavor::from_server_version(&h.version),
            status,
        };
        let mode = backend.query_one("SELECT @@SESSION.sql_mode").await?;
        backend.flavor = backend.flavor.with_sql_mode(&mode);
        Ok(backend)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| BackendError::Timeout {
            step: "logging in to the database".into(),
        })?
}

/// The client's HandshakeResponse41: capabilities, account, auth response, database, plugin
/// and the connection attributes.
fn handshake_response(
    caps: u32,
    charset: u8,
    account: &str,
    database: &str,
    plugin: &str,
    resp: &[u8],
) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u32_le(caps);
    body.put_u32_le(p::MAX_PAYLOAD as u32);
    body.put_u8(charset);
    body.put_slice(&[0u8; 23]);
    body.put_slice(account.as_bytes());
    body.put_u8(0);
    p::put_lenenc_int(&mut body, resp.len() as u64);
    body.put_slice(resp);
    if caps & p::CLIENT_CONNECT_WITH_DB != 0 {
        body.put_slice(database.as_bytes());
        body.put_u8(0);
    }
    body.put_slice(plugin.as_bytes());
    body.put_u8(0);
    if caps & p::CLIENT_CONNECT_ATTRS != 0 {
        let mut attrs = BytesMut::new();
        for (k, v) in [
            ("_client_name", "haechi-gateway"),
            ("program_name", "haechi"),
        ] {
            p::put_lenenc_int(&mut attrs, k.len() as u64);
            attrs.put_slice(k.as_bytes());
            p::put_lenenc_int(&mut attrs, v.len() as u64);
            attrs.put_slice(v.as_bytes());
        }
        p::put_lenenc_int(&mut body, attrs.len() as u64);
        body.put_slice(&attrs);
    }
    body
}

/// The gateway's side of the login after its handshake response.
struct Auth<'a> {
    target: &'a Target,
    password: &'a SecretString,
    /// The connection to the database is TLS.
    encrypted: bool,
    /// The authentication plugin in use (the database may switch it).
    plugin: String,
}

impl Auth<'_> {
    /// Answers the database until it accepts (its OK's status flags) or refuses the login.
    async fn finish(mut self, io: &mut BoxIo, buf: &mut BytesMut) -> Result<u16, BackendError> {
        loop {
            let pkt = p::read_packet(io, buf).await?;
            let seq = pkt.seq.wrapping_add(1);
            let pl = &pkt.payload;
            let reply = match pl.first() {
                Some(0x00) => return Ok(p::ok_info(pl).1),
                Some(0xFF) => {
                    let msg = String::from_utf8_lossy(pl.get(9..).unwrap_or_default()).into_owned();
                    return Err(BackendError::LoginRefused { detail: msg });
                }
                // AuthSwitchRequest: another plugin, another scramble.
                Some(0xFE) => {
                    let mut b = &pl[1..];
                    self.plugin = String::from_utf8_lossy(p::nul_str(&mut b).unwrap_or_default())
                        .into_owned();
                    let scramble = b.strip_suffix(&[0]).unwrap_or(b);
                    Some(auth_response(&self.plugin, self.password, scramble)?)
                }
                Some(0x01) if self.plugin == "caching_sha2_password" => {
                    self.sha2_more(pl.get(1))?
                }
                _ => {
                    return Err(BackendError::Protocol(
                        "unexpected packet during the database login".into(),
                    ))
                }
            };
            if let Some(mut reply) = reply {
                let mut out = BytesMut::new();
                p::put_packet(&mut out, seq, &reply);
                zeroize::Zeroize::zeroize(&mut reply);
                crate::gateway::send(io, &out).await?;
            }
        }
    }

    /// caching_sha2_password's AuthMoreData: fast authentication succeeded (nothing to send),
    /// or the database wants the password itself.
    fn sha2_more(&self, what: Option<&u8>) -> Result<Option<Vec<u8>>, BackendError> {
        match what {
            Some(0x03) => Ok(None),
            // The password itself goes only over TLS whose certificate was checked, unless
            // the target allows it (then over any TLS).
            Some(0x04) if self.encrypted && self.target.may_send_password() => {
                let mut pw = self.password.expose_secret().as_bytes().to_vec();
                pw.push(0);
                Ok(Some(pw))
            }
            _ => Err(BackendError::InsecurePassword {
                form: "clear (caching_sha2_password full authentication)",
                otherwise: "or tls \"require\" and allow_insecure_password",
            }),
        }
    }
}

struct Handshake {
    version: String,
    caps: u32,
    scramble: Vec<u8>,
    plugin: String,
}

fn parse_handshake(pl: &[u8]) -> Result<Handshake, BackendError> {
    let bad = || BackendError::Protocol("the database sent a malformed handshake".into());
    if pl.first() == Some(&0xFF) {
        let msg = String::from_utf8_lossy(pl.get(3..).unwrap_or_default()).into_owned();
        return Err(BackendError::LoginRefused { detail: msg });
    }
    if pl.first() != Some(&10) {
        return Err(bad());
    }
    let mut b = &pl[1..];
    let version = String::from_utf8_lossy(p::nul_str(&mut b).ok_or_else(bad)?).into_owned();
    if b.len() < 4 + 8 + 1 + 2 {
        return Err(bad());
    }
    b = &b[4..];
    let mut scramble = b[..8].to_vec();
    b = &b[9..];
    let lower = u16::from_le_bytes([b[0], b[1]]) as u32;
    b = &b[2..];
    let mut caps = lower;
    let mut plugin = "mysql_native_password".to_owned();
    if b.len() >= 16 {
        let upper = u16::from_le_bytes([b[3], b[4]]) as u32;
        caps |= upper << 16;
        let auth_len = b[5] as usize;
        b = &b[16..];
        let part2 = auth_len.saturating_sub(8).max(13).min(b.len());
        let s2 = &b[..part2];
        scramble.extend_from_slice(s2.strip_suffix(&[0]).unwrap_or(s2));
        b = &b[part2..];
        if caps & p::CLIENT_PLUGIN_AUTH != 0 {
            if let Some(name) = p::nul_str(&mut b).or(Some(b)) {
                if !name.is_empty() {
                    plugin = String::from_utf8_lossy(name).into_owned();
                }
            }
        }
    }
    Ok(Handshake {
        version,
        caps,
        scramble,
        plugin,
    })
}

impl Backend {
    /// Runs a query of the gateway's own and returns the first column of its first row.
    async fn query_one(&mut self, sql: &str) -> Result<String, BackendError> {
        let mut q = BytesMut::new();
        q.put_u8(0x03);
        q.put_slice(sql.as_bytes());
        let mut out = BytesMut::new();
        p::put_packet(&mut out, 0, &q);
        crate::gateway::send(&mut self.io, &out).await?;
        let first = p::read_packet(&mut self.io, &mut self.buf).await?;
        if first.payload.first() == Some(&0xFF) {
            return Err(BackendError::Query(p::err_message(&first.payload)));
        }
        let mut b = &first.payload[..];
        let cols = p::lenenc_int(&mut b).unwrap_or(0);
        for _ in 0..cols {
            p::read_packet(&mut self.io, &mut self.buf).await?;
        }
        let _ = p::read_packet(&mut self.io, &mut self.buf).await?; // EOF
        let mut value: Option<String> = None;
        loop {
            let pkt = p::read_packet(&mut self.io, &mut self.buf).await?;
            if pkt.payload.first() == Some(&0xFF) {
                return Err(BackendError::Query(p::err_message(&pkt.payload)));
            }
            if p::is_eof(&pkt.payload) {
                break;
            }
            if value.is_none() {
                let mut r = &pkt.payload[..];
                value = p::lenenc_bytes(&mut r).map(|v| String::from_utf8_lossy(v).into_owned());
            }
        }
        Ok(value.unwrap_or_default())
    }
}

/// What a command's response said, for the audit.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: u64,
    pub error: Option<u16>,
    /// `COM_STMT_PREPARE`: the statement id the database assigned.
    pub stmt_id: Option<u32>,
    /// The database asked for a local file and it was refused.
    pub infile_refused: bool,
}

/// Which response shape to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// OK, ERR, or result sets (COM_QUERY, COM_STMT_EXECUTE, ...).
    Results,
    /// COM_STMT_PREPARE's answer.
    Prepare,
    /// Column definitions up to EOF (COM_FIELD_LIST).
    Fields,
    /// A single packet (COM_STATISTICS, COM_PING).
    Single,
}

/// Carries one command's whole response from the database to the client. A LOCAL INFILE
/// request is passed to the client only when `allow_infile`; otherwise the gateway answers it
/// with an empty file, so nothing is read from the client's disk.
pub async fn relay_response<C: AsyncRead + AsyncWrite + Unpin>(
    db: &mut Backend,
    client: &mut C,
    client_buf: &mut BytesMut,
    expect: Expect,
    allow_infile: bool,
) -> std::io::Result<Outcome> {
    let o = relay_response_held(db, client, client_buf, expect, allow_infile).await?;
    flush_held(db, client).await?;
    Ok(o)
}

/// As [`relay_response`], but the response's last packet (the one that tells the client the
/// command is done), with whatever is queued before it, stays in `db.out` until
/// [`flush_held`]: the statement's audit event goes in between.
pub async fn relay_response_held<C: AsyncRead + AsyncWrite + Unpin>(
    db: &mut Backend,
    client: &mut C,
    client_buf: &mut BytesMut,
    expect: Expect,
    allow_infile: bool,
) -> std::io::Result<Outcome> {
    let mut out = std::mem::take(&mut db.out);
    out.clear();
    let mut r = Relay { db, client, out };
    let mut o = Outcome::default();
    let relayed = match expect {
        Expect::Single => {
            let pk = r.next().await?;
            if pk.payload.first() == Some(&0xFF) {
                o.error = Some(p::err_code(&pk.payload));
            }
            Ok(())
        }
        Expect::Fields => r.fields(&mut o).await,
        Expect::Prepare => r.prepare(&mut o).await,
        Expect::Results => r.results(client_buf, allow_infile, &mut o).await,
    };
    relayed?;
    r.db.out = r.out;
    Ok(o)
}

/// One response on its way from the database to the client.
struct Relay<'a, C> {
    db: &'a mut Backend,
    client: &'a mut C,
    /// Packets queued for the client.
    out: BytesMut,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Relay<'_, C> {
    /// Reads one packet from the database and queues it for the client, flushing what is
    /// queued first when the database has nothing ready.
    async fn next(&mut self) -> std::io::Result<Packet> {
        loop {
            if let Some(pk) = p::frame(&mut self.db.buf) {
                // Flushed before a packet is queued, never after: the last packet stays
                // queued when the response ends.
                if self.out.len() >= 64 * 1024 {
                    crate::gateway::send(self.client, &self.out).await?;
                    self.out.clear();
                }
                self.out.put_uint_le(pk.payload.len() as u64, 3);
                self.out.put_u8(pk.seq);
                self.out.put_slice(&pk.payload);
                return Ok(pk);
            }
            if !self.out.is_empty() {
                crate::gateway::send(self.client, &self.out).await?;
                self.out.clear();
            }
            if self.db.buf.capacity() - self.db.buf.len() < 16 * 1024 {
                self.db.buf.reserve(64 * 1024);
            }
            if tokio::io::AsyncReadExt::read_buf(&mut self.db.io, &mut self.db.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Column definitions up to EOF (COM_FIELD_LIST), or an error.
    async fn fields(&mut self, o: &mut Outcome) -> std::io::Result<()> {
        loop {
            let pk = self.next().await?;
            if pk.payload.first() == Some(&0xFF) {
                o.error = Some(p::err_code(&pk.payload));
                return Ok(());
            }
            if p::is_eof(&pk.payload) {
                return Ok(());
            }
        }
    }

    /// COM_STMT_PREPARE's answer: the statement id, then its parameter and column definitions.
    async fn prepare(&mut self, o: &mut Outcome) -> std::io::Result<()> {
        let pk = self.next().await?;
        if pk.payload.first() == Some(&0xFF) {
            o.error = Some(p::err_code(&pk.payload));
        } else if pk.payload.len() >= 9 {
            let pl = &pk.payload;
            o.stmt_id = Some(u32::from_le_bytes([pl[1], pl[2], pl[3], pl[4]]));
            let cols = u16::from_le_bytes([pl[5], pl[6]]);
            let params = u16::from_le_bytes([pl[7], pl[8]]);
            for n in [params, cols] {
                if n > 0 {
                    for _ in 0..n {
                        self.next().await?;
                    }
                    self.next().await?; // EOF
                }
            }
        }
        Ok(())
    }

    /// OK, ERR or result sets, as long as the database says more results follow.
    async fn results(
        &mut self,
        client_buf: &mut BytesMut,
        allow_infile: bool,
        o: &mut Outcome,
    ) -> std::io::Result<()> {
        loop {
            let pk = self.next().await?;
            let status = match pk.payload.first() {
                Some(0x00) => {
                    let (rows, status) = p::ok_info(&pk.payload);
                    o.rows += rows;
                    status
                }
                Some(0xFF) => {
                    o.error = Some(p::err_code(&pk.payload));
                    return Ok(());
                }
                Some(0xFB) => {
                    self.local_infile(&pk, client_buf, allow_infile, o).await?;
                    continue;
                }
                _ => self.result_set(&pk, o).await?,
            };
            if o.error.is_some() || status & p::SERVER_MORE_RESULTS_EXISTS == 0 {
                return Ok(());
            }
        }
    }

    /// A result set after its column count `pk`: definitions, EOF, rows, EOF. Returns the
    /// final EOF's status flags (`0` after an error).
    async fn result_set(&mut self, pk: &Packet, o: &mut Outcome) -> std::io::Result<u16> {
        let mut b = &pk.payload[..];
        let cols = p::lenenc_int(&mut b).unwrap_or(0);
        for _ in 0..cols {
            self.next().await?;
        }
        self.next().await?; // EOF after the definitions
        loop {
            let row = self.next().await?;
            if row.payload.first() == Some(&0xFF) {
                o.error = Some(p::err_code(&row.payload));
                return Ok(0);
            }
            if p::is_eof(&row.payload) {
                return Ok(p::eof_status(&row.payload));
            }
            o.rows += 1;
            // Packets of a payload longer than 16 MiB continue in the next packets.
            let mut last = row.payload.len();
            while last == p::MAX_PAYLOAD {
                last = self.next().await?.payload.len();
            }
        }
    }

    /// A LOCAL INFILE request `pk` (already queued for the client): refused with an empty
    /// file unless `allow_infile`, else the client's file packets go to the database.
    async fn local_infile(
        &mut self,
        pk: &Packet,
        client_buf: &mut BytesMut,
        allow_infile: bool,
        o: &mut Outcome,
    ) -> std::io::Result<()> {
        if !allow_infile {
            // Take the request back from what is queued for the client.
            let queued = 4 + pk.payload.len();
            self.out.truncate(self.out.len() - queued);
            let mut empty = BytesMut::new();
            p::put_packet(&mut empty, pk.seq.wrapping_add(1), &[]);
            crate::gateway::send(&mut self.db.io, &empty).await?;
            o.infile_refused = true;
            return Ok(());
        }
        crate::gateway::send(self.client, &self.out).await?;
        self.out.clear();
        // Client → database: file packets up to an empty one.
        loop {
            let fp = read_client_packet(self.client, client_buf).await?;
            let mut raw = BytesMut::new();
            raw.put_uint_le(fp.payload.len() as u64, 3);
            raw.put_u8(fp.seq);
            raw.put_slice(&fp.payload);
            crate::gateway::send(&mut self.db.io, &raw).await?;
            if fp.payload.is_empty() {
                return Ok(());
            }
        }
    }
}

/// Sends what [`relay_response_held`] kept back.
pub async fn flush_held<C: AsyncWrite + Unpin>(
    db: &mut Backend,
    client: &mut C,
) -> std::io::Result<()> {
    if !db.out.is_empty() {
        crate::gateway::send(client, &db.out).await?;
    }
    db.out.clear();
    Ok(())
}

async fn read_client_packet<C: AsyncRead + Unpin>(
    client: &mut C,
    buf: &mut BytesMut,
) -> std::io::Result<Packet> {
    p::read_packet(client, buf).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_scramble_matches_the_reference() {
        // The server checks SHA1(scramble + stored) XOR response == SHA1(pw).
        let pw = b"secret";
        let scramble = b"abcdefghijklmnopqrst";
        let resp = native_scramble(pw, scramble);
        let stored: [u8; 20] = Sha1::digest(Sha1::digest(pw)).into();
        let mut h = Sha1::new();
        h.update(scramble);
        h.update(stored);
        let x: [u8; 20] = h.finalize().into();
        let h1: Vec<u8> = resp.iter().zip(x.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(Sha1::digest(&h1).as_slice(), stored.as_slice());
        assert!(native_scramble(b"", scramble).is_empty());
        assert_eq!(sha2_scramble(pw, scramble).len(), 32);
    }
}
