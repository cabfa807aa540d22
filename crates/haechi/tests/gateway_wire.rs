//! The gateways' login phase on the wire, before any database is involved: a TLS ClientHello
//! sent in the same write as the request to start TLS, clients that send nothing or too much
//! before they log in.

mod common;
mod gateway_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use gateway_support::start_gateways;

/// What the login deadline (`PRE_AUTH_DEADLINE`, 10 s) allows, with room for a busy machine.
const CUT_WITHIN: Duration = Duration::from_secs(16);

/// A TLS client that trusts the server's own certificate.
fn tls_client(s: &Server) -> rustls::ClientConnection {
    let pem = std::fs::read(s.data_dir.join("tls").join("cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap()
}

/// `first` followed, in the same write, by the ClientHello of `tls`.
fn with_client_hello(first: &[u8], tls: &mut rustls::ClientConnection) -> Vec<u8> {
    let mut out = first.to_vec();
    tls.write_tls(&mut out).unwrap();
    assert!(out.len() > first.len() + 100, "no ClientHello");
    out
}

/// A PostgreSQL SSLRequest.
fn ssl_request() -> Vec<u8> {
    let mut b = 8i32.to_be_bytes().to_vec();
    b.extend_from_slice(&80877103i32.to_be_bytes());
    b
}

/// A PostgreSQL startup message for a user and target that do not exist.
fn pg_startup() -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for v in ["user", "nobody@none", "database", "none"] {
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    startup
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// One MySQL packet: (sequence, payload).
fn my_packet<R: Read>(r: &mut R) -> (u8, Vec<u8>) {
    let mut h = [0u8; 4];
    r.read_exact(&mut h).unwrap();
    let mut p = vec![0u8; u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize];
    r.read_exact(&mut p).unwrap();
    (h[3], p)
}

fn my_put(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x80000;

/// The fixed head of a MySQL handshake response (caps, max packet, charset, filler).
fn my_response_head(caps: u32) -> Vec<u8> {
    let mut b = caps.to_le_bytes().to_vec();
    b.extend_from_slice(&(16u32 << 20).to_le_bytes());
    b.push(45);
    b.extend_from_slice(&[0u8; 23]);
    b
}

/// Whether the server closes `s` (EOF or reset) within `within`, reading whatever it sends.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed() <= within,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return started.elapsed() <= within,
        }
    }
}

/// The SSLRequest and the ClientHello in one write, five times on each gateway: the TLS
/// handshake completes and the login goes on over it (PostgreSQL asks for the password; MySQL
/// asks for caching_sha2_password's full authentication).
#[tokio::test]
async fn a_client_hello_in_the_same_write_as_the_tls_request_is_read() {
    let (server, pg_port, my_port) = start_gateways(0).await;
    let server = Arc::new(server);
    let s = server.clone();
    tokio::task::spawn_blocking(move || {
        for _ in 0..5 {
            // PostgreSQL: SSLRequest + ClientHello, then the startup message over TLS.
            let mut tcp = connect(pg_port);
            let mut tls = tls_client(&s);
            tcp.write_all(&with_client_hello(&ssl_request(), &mut tls))
                .unwrap();
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"S");
            let mut stream = rustls::StreamOwned::new(tls, tcp);
            stream.write_all(&pg_startup()).unwrap();
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).unwrap();
            assert_eq!(head[0], b'R', "{head:?}");
            assert_eq!(
                &head[5..9],
                &3i32.to_be_bytes(),
                "a cleartext password request"
            );

            // MySQL: the server's greeting, then SSLRequest + ClientHello.
            let mut tcp = connect(my_port);
            let (_, greeting) = my_packet(&mut tcp);
            assert_eq!(greeting[0], 10);
            let caps =
                CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
            let mut tls = tls_client(&s);
            tcp.write_all(&with_client_hello(
                &my_put(1, &my_response_head(caps)),
                &mut tls,
            ))
            .unwrap();
            let mut stream = rustls::StreamOwned::new(tls, tcp);
            let mut resp = my_response_head(caps);
            resp.extend_from_slice(b"nobody@none\0");
            resp.push(0);
            resp.extend_from_slice(b"caching_sha2_password\0");
            stream.write_all(&my_put(2, &resp)).unwrap();
            let (_, more) = my_packet(&mut stream);
            assert_eq!(more, [0x01, 0x04], "full authentication over TLS");
        }
    })
    .await
    .unwrap();
}

/// A client that sends nothing (before or inside TLS) is cut at the login deadline; one that
/// announces a message larger than a login needs is cut at once.
#[tokio::test]
async fn slow_and_oversized_logins_are_cut() {
    let (_server, pg_port, my_port) = start_gateways(0).await;
    let silent = tokio::task::spawn_blocking(move || {
        // Nothing at all, on both.
        let mut pg = connect(pg_port);
        let mut my = connect(my_port);
        let _ = my_packet(&mut my);
        // PostgreSQL: SSLRequest answered, then no ClientHello.
        let mut pg_tls = connect(pg_port);
        pg_tls.write_all(&ssl_request()).unwrap();
        let mut answer = [0u8; 1];
        pg_tls.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"S");
        let started = Instant::now();
        for (what, s) in [("pg", &mut pg), ("mysql", &mut my), ("pg tls", &mut pg_tls)] {
            let left = CUT_WITHIN
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(1));
            assert!(
                closed_within(s, left),
                "{what}: a silent client was not cut"
            );
        }
        assert!(
            started.elapsed() >= Duration::from_secs(5),
            "cut before the deadline: {:?}",
            started.elapsed()
        );
    });
    let huge = tokio::task::spawn_blocking(move || {
        // PostgreSQL: a password message announced at 64 MiB.
        let mut pg = connect(pg_port);
        pg.write_all(&pg_startup()).unwrap();
        let mut head = [0u8; 9];
        pg.read_exact(&mut head).unwrap();
        assert_eq!(head[0], b'R');
        let mut password = vec![b'p'];
        password.extend_from_slice(&(64i32 << 20).to_be_bytes());
        password.extend_from_slice(&[b'x'; 1024]);
        pg.write_all(&password).unwrap();
        assert!(
            closed_within(&mut pg, Duration::from_secs(3)),
            "pg: a 64 MiB password was waited for"
        );
        // MySQL: a handshake response announced at 16 MiB.
        let mut my = connect(my_port);
        let _ = my_packet(&mut my);
        let mut big = vec![0xff, 0xff, 0xff, 1];
        big.extend_from_slice(&[0u8; 1024]);
        my.write_all(&big).unwrap();
        assert!(
            closed_within(&mut my, Duration::from_secs(3)),
            "mysql: a 16 MiB handshake response was waited for"
        );
    });
    huge.await.unwrap();
    silent.await.unwrap();
}
