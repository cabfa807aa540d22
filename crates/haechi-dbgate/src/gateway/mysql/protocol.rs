//! MySQL / MariaDB client-server protocol: packets, length-encoded values, and the packets
//! the gateway writes itself.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const CLIENT_LONG_PASSWORD: u32 = 1;
pub const CLIENT_FOUND_ROWS: u32 = 2;
pub const CLIENT_LONG_FLAG: u32 = 4;
pub const CLIENT_CONNECT_WITH_DB: u32 = 8;
pub const CLIENT_LOCAL_FILES: u32 = 128;
pub const CLIENT_PROTOCOL_41: u32 = 512;
pub const CLIENT_INTERACTIVE: u32 = 1024;
pub const CLIENT_SSL: u32 = 2048;
pub const CLIENT_TRANSACTIONS: u32 = 8192;
pub const CLIENT_SECURE_CONNECTION: u32 = 32768;
pub const CLIENT_MULTI_STATEMENTS: u32 = 1 << 16;
pub const CLIENT_MULTI_RESULTS: u32 = 1 << 17;
pub const CLIENT_PS_MULTI_RESULTS: u32 = 1 << 18;
pub const CLIENT_PLUGIN_AUTH: u32 = 1 << 19;
pub const CLIENT_CONNECT_ATTRS: u32 = 1 << 20;
pub const CLIENT_PLUGIN_AUTH_LENENC: u32 = 1 << 21;

/// What the gateway offers clients. Flags that change the shape of result packets
/// (DEPRECATE_EOF, SESSION_TRACK, QUERY_ATTRIBUTES, compression) are left out, so results pass
/// through unchanged whatever the database supports.
pub const GATEWAY_CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_LOCAL_FILES
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_SSL
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC;

pub const SERVER_STATUS_AUTOCOMMIT: u16 = 2;
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 8;

/// The largest payload of one packet; longer payloads continue in the next packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// A packet: sequence id and payload.
#[derive(Debug, Clone)]
pub struct Packet {
    pub seq: u8,
    pub payload: Bytes,
}

/// Takes one complete packet off `buf`.
pub fn frame(buf: &mut BytesMut) -> Option<Packet> {
    let len = complete_len(buf)?;
    let mut p = buf.split_to(len);
    let seq = p[3];
    p.advance(4);
    Some(Packet {
        seq,
        payload: p.freeze(),
    })
}

/// Length (with header) of the complete packet at the start of `buf`.
pub fn complete_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], 0]) as usize;
    (buf.len() >= 4 + len).then_some(4 + len)
}

pub async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<Packet> {
    read_packet_capped(r, buf, usize::MAX).await
}

/// [`read_packet`], refusing a packet whose payload is announced longer than `cap`.
pub async fn read_packet_capped<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    cap: usize,
) -> std::io::Result<Packet> {
    loop {
        if buf.len() >= 4 && u32::from_le_bytes([buf[0], buf[1], buf[2], 0]) as usize > cap {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a packet longer than allowed before login",
            ));
        }
        if let Some(p) = frame(buf) {
            return Ok(p);
        }
        if r.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

pub fn put_packet(out: &mut BytesMut, seq: u8, payload: &[u8]) {
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        out.put_uint_le(n as u64, 3);
        out.put_u8(seq);
        out.put_slice(&rest[..n]);
        rest = &rest[n..];
        seq = seq.wrapping_add(1);
        if n < MAX_PAYLOAD {
            break;
        }
    }
}

pub fn err_packet(out: &mut BytesMut, seq: u8, code: u16, state: &str, message: &str) {
    let mut p = BytesMut::with_capacity(9 + message.len());
    p.put_u8(0xFF);
    p.put_u16_le(code);
    p.put_u8(b'#');
    p.put_slice(state.as_bytes());
    p.put_slice(message.as_bytes());
    put_packet(out, seq, &p);
}

pub fn ok_packet(out: &mut BytesMut, seq: u8, status: u16) {
    let p = [0x00, 0, 0, (status & 0xff) as u8, (status >> 8) as u8, 0, 0];
    put_packet(out, seq, &p);
}

/// Reads a length-encoded integer.
pub fn lenenc_int(b: &mut &[u8]) -> Option<u64> {
    let first = *b.first()?;
    let (v, n) = match first {
        0..=0xFA => (first as u64, 1),
        0xFC if b.len() >= 3 => (u16::from_le_bytes([b[1], b[2]]) as u64, 3),
        0xFD if b.len() >= 4 => (u32::from_le_bytes([b[1], b[2], b[3], 0]) as u64, 4),
        0xFE if b.len() >= 9 => (u64::from_le_bytes(b[1..9].try_into().ok()?), 9),
        _ => return None,
    };
    *b = &b[n..];
    Some(v)
}

pub fn lenenc_bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = lenenc_int(b)? as usize;
    if b.len() < n {
        return None;
    }
    let (v, rest) = b.split_at(n);
    *b = rest;
    Some(v)
}

pub fn put_lenenc_int(out: &mut BytesMut, v: u64) {
    match v {
        0..=0xFA => out.put_u8(v as u8),
        0xFB..=0xFFFF => {
            out.put_u8(0xFC);
            out.put_u16_le(v as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(0xFD);
            out.put_uint_le(v, 3);
        }
        _ => {
            out.put_u8(0xFE);
            out.put_u64_le(v);
        }
    }
}

pub fn nul_str<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = b.iter().position(|c| *c == 0)?;
    let v = &b[..end];
    *b = &b[end + 1..];
    Some(v)
}

/// Is this payload an EOF packet (0xFE and short)?
pub fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xFE) && p.len() < 9
}

/// Status flags of an EOF packet.
pub fn eof_status(p: &[u8]) -> u16 {
    if p.len() >= 5 {
        u16::from_le_bytes([p[3], p[4]])
    } else {
        0
    }
}

/// (affected rows, status flags) of an OK packet.
pub fn ok_info(p: &[u8]) -> (u64, u16) {
    let mut b = &p[1..];
    let rows = lenenc_int(&mut b).unwrap_or(0);
    let _ = lenenc_int(&mut b);
    let status = if b.len() >= 2 {
        u16::from_le_bytes([b[0], b[1]])
    } else {
        0
    };
    (rows, status)
}

/// Error code of an ERR packet.
pub fn err_code(p: &[u8]) -> u16 {
    if p.len() >= 3 {
        u16::from_le_bytes([p[1], p[2]])
    } else {
        0
    }
}

/// The message text of an ERR packet (after its code and its `#` SQLSTATE, when present).
pub fn err_message(p: &[u8]) -> String {
    let rest = p.get(3..).unwrap_or_default();
    let rest = match rest.first() {
        Some(b'#') => rest.get(6..).unwrap_or_default(),
        _ => rest,
    };
    String::from_utf8_lossy(rest).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_and_lenenc() {
        let mut out = BytesMut::new();
        put_packet(&mut out, 3, b"\x03SELECT 1");
        let p = frame(&mut out).unwrap();
        assert_eq!(p.seq, 3);
        assert_eq!(&p.payload[..], b"\x03SELECT 1");
        for v in [0u64, 250, 251, 65535, 65536, 16_777_216, u64::MAX] {
            let mut b = BytesMut::new();
            put_lenenc_int(&mut b, v);
            let mut s = &b[..];
            assert_eq!(lenenc_int(&mut s), Some(v));
            assert!(s.is_empty());
        }
        let mut e = BytesMut::new();
        err_packet(&mut e, 1, 1142, "42000", "no");
        let p = frame(&mut e).unwrap();
        assert_eq!(err_code(&p.payload), 1142);
        assert!(is_eof(&[0xFE, 0, 0, 2, 0]));
        assert_eq!(eof_status(&[0xFE, 0, 0, 8, 0]), 8);
        assert_eq!(ok_info(&[0, 5, 0, 2, 0, 0, 0]), (5, 2));
    }

    #[test]
    fn err_message_skips_code_and_sqlstate() {
        let mut out = BytesMut::new();
        err_packet(&mut out, 1, 1045, "28000", "Access denied");
        assert_eq!(err_message(&out[4..]), "Access denied");
        assert_eq!(err_code(&out[4..]), 1045);
        assert_eq!(err_message(&[0xFF, 0x15, 0x04, b'n', b'o']), "no");
        assert_eq!(err_message(&[0xFF]), "");
    }
}
