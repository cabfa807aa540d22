//! PostgreSQL v3 wire framing and the few messages the gateway writes itself.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest message accepted from either side (PostgreSQL's own limit is 1 GiB; COPY data
/// and statements stay far below this).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub const SSL_REQUEST: i32 = 80877103;
pub const GSSENC_REQUEST: i32 = 80877104;
pub const CANCEL_REQUEST: i32 = 80877102;
pub const PROTOCOL_3: i32 = 196608;

/// A typed message: its tag and body (without the length).
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Bytes,
}

/// Takes one complete typed message off `buf`, if there is one.
pub fn frame(buf: &mut BytesMut) -> std::io::Result<Option<Msg>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len as usize > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("invalid message length {len}"),
        ));
    }
    let total = 1 + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut m = buf.split_to(total);
    let tag = m[0];
    m.advance(5);
    Ok(Some(Msg {
        tag,
        body: m.freeze(),
    }))
}

/// Length of the complete typed message at the start of `buf`, if it is all there.
pub fn complete_len(buf: &[u8]) -> std::io::Result<Option<usize>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len as usize > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("invalid message length {len}"),
        ));
    }
    let total = 1 + len as usize;
    Ok((buf.len() >= total).then_some(total))
}

/// Reads an untyped startup-phase packet (length, then body).
pub async fn read_startup<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Bytes> {
    let len = r.read_i32().await?;
    if !(8..=10_000).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid startup packet length",
        ));
    }
    let mut body = vec![0u8; len as usize - 4];
    r.read_exact(&mut body).await?;
    Ok(Bytes::from(body))
}

/// Reads one typed message.
pub async fn read_msg<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> std::io::Result<Msg> {
    read_msg_capped(r, buf, MAX_MESSAGE).await
}

/// [`read_msg`], refusing a message whose length is announced longer than `cap`.
pub async fn read_msg_capped<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    cap: usize,
) -> std::io::Result<Msg> {
    loop {
        if buf.len() >= 5
            && i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as i64 > cap as i64
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a message longer than allowed before login",
            ));
        }
        if let Some(m) = frame(buf)? {
            return Ok(m);
        }
        if r.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A NUL-terminated string at the front of `b`; advances past it.
pub fn cstr(b: &mut Bytes) -> Option<String> {
    let end = b.iter().position(|c| *c == 0)?;
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    b.advance(end + 1);
    Some(s)
}

pub fn put_msg(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

pub fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// An ErrorResponse (`severity` ERROR or FATAL).
pub fn error_response(out: &mut BytesMut, severity: &str, code: &str, message: &str) {
    let mut body = BytesMut::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.put_u8(field);
        put_cstr(&mut body, value);
    }
    body.put_u8(0);
    put_msg(out, b'E', &body);
}

/// Fields of an ErrorResponse / NoticeResponse body.
/// The value of one field (`b'C'` code, `b'M'` message, ...) of [`error_fields`]' result.
pub fn field(fields: &[(u8, String)], key: u8) -> Option<&str> {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let code = body[i];
        let start = i + 1;
        let end = body[start..]
            .iter()
            .position(|c| *c == 0)
            .map(|p| start + p)
            .unwrap_or(body.len());
        out.push((
            code,
            String::from_utf8_lossy(&body[start..end]).into_owned(),
        ));
        i = end + 1;
    }
    out
}

pub fn auth_request(out: &mut BytesMut, code: i32, extra: &[u8]) {
    let mut body = BytesMut::with_capacity(4 + extra.len());
    body.put_i32(code);
    body.put_slice(extra);
    put_msg(out, b'R', &body);
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    put_msg(out, b'Z', &[status]);
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    let mut body = BytesMut::with_capacity(8);
    body.put_i32(pid);
    body.put_i32(secret);
    put_msg(out, b'K', &body);
}

/// The row count of a CommandComplete tag (`SELECT 5`, `INSERT 0 1`, `UPDATE 3`).
pub fn command_rows(body: &[u8]) -> u64 {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    tag.rsplit(|c| *c == b' ')
        .next()
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_tags() {
        let mut out = BytesMut::new();
        put_msg(&mut out, b'Q', b"SELECT 1\0");
        ready_for_query(&mut out, b'I');
        let mut buf = out.clone();
        let m = frame(&mut buf).unwrap().unwrap();
        assert_eq!((m.tag, &m.body[..]), (b'Q', &b"SELECT 1\0"[..]));
        let m = frame(&mut buf).unwrap().unwrap();
        assert_eq!((m.tag, &m.body[..]), (b'Z', &b"I"[..]));
        assert!(frame(&mut buf).unwrap().is_none());
        assert_eq!(command_rows(b"INSERT 0 7\0"), 7);
        assert_eq!(command_rows(b"SELECT 1000000\0"), 1_000_000);
        assert_eq!(command_rows(b"BEGIN\0"), 0);
        let mut e = BytesMut::new();
        error_response(&mut e, "ERROR", "42501", "no");
        let m = frame(&mut e).unwrap().unwrap();
        let f = error_fields(&m.body);
        assert!(f.contains(&(b'C', "42501".to_owned())));
    }
}
