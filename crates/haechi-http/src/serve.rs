//! The accept loop: HTTPS (rustls) or, when explicitly configured, plain HTTP; HTTP/1.1 and
//! HTTP/2 with upgrades (WebSockets) on the same port. Each connection's peer address is put
//! into the request so the client IP is the TCP peer, not a header.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::extract::PeerAddr;

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadlines and the connection cap of the HTTP server (settings `http_header_timeout_secs`,
/// `http2_keepalive_secs`, `http_max_connections`).
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// A client must send a request's whole header within this time after the connection
    /// opens or its previous request ended; an HTTP/1 connection left idle that long is closed.
    pub header_timeout: Duration,
    /// HTTP/2: a ping after this long without frames; no answer within it closes the connection.
    pub http2_keepalive: Duration,
    /// Connections (HTTP and the agents' WebSockets) open at once; one more is closed at accept.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_timeout: Duration::from_secs(30),
            http2_keepalive: Duration::from_secs(60),
            max_connections: 16_384,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting and gives
/// open connections up to 10 s to finish their requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls_config::ServerConfig>>,
    router: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let router = match acceptor {
        Some(_) => router.layer(axum::middleware::map_response(hsts)),
        None => router,
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut refused_logged = tokio::time::Instant::now() - Duration::from_secs(60);
    haechi_types::net::accept_until(&listener, "https", shutdown, |tcp, peer| {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            if refused_logged.elapsed() >= Duration::from_secs(10) {
                refused_logged = tokio::time::Instant::now();
                tracing::warn!(
                    max = limits.max_connections,
                    "connection refused: http_max_connections are open"
                );
            }
            return;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let watcher = graceful.watcher();
        match &acceptor {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, router, limits, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            None => {
                tokio::spawn(async move {
                    let _slot = slot;
                    serve_connection(tcp, peer, router, limits, watcher).await
                });
            }
        }
    })
    .await;
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("closing connections still open after 10 s"),
    }
    Ok(())
}

/// HTTPS answers tell browsers to use HTTPS only for this host for a year (HSTS; not for
/// subdomains, which may be other services).
async fn hsts(mut res: axum::response::Response) -> axum::response::Response {
    res.headers_mut()
        .entry(axum::http::header::STRICT_TRANSPORT_SECURITY)
        .or_insert(axum::http::HeaderValue::from_static("max-age=31536000"));
    res
}

async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    router: Router,
    limits: ServeLimits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        req
    });
    let service = TowerToHyperService::new(service);
    let io = FirstByteDeadline::new(io, limits.header_timeout);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive)
        .keep_alive_timeout(limits.http2_keepalive);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// A connection that must send its first byte within a deadline. hyper's header timeout
/// starts only once the protocol is known, and telling HTTP/1 from HTTP/2 waits for the
/// client's first bytes: without this a client that connects and says nothing would hold its
/// connection (and a slot of `http_max_connections`) for ever.
struct FirstByteDeadline<IO> {
    io: IO,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> FirstByteDeadline<IO> {
    fn new(io: IO, limit: Duration) -> Self {
        FirstByteDeadline {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.deadline = None,
            Poll::Pending => {
                if let Some(d) = self.deadline.as_mut() {
                    if std::future::Future::poll(d.as_mut(), cx).is_ready() {
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the client sent nothing before the header timeout",
                        )));
                    }
                }
            }
            _ => {}
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Re-exported so callers need not depend on rustls directly.
pub mod rustls_config {
    pub use tokio_rustls::rustls::ServerConfig;
}
