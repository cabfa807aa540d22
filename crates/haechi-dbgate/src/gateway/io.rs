//! Bytes to and from clients and databases: the stream type, sending with a flush, the
//! deadline and size cap of a client's login, and dialing a target.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::targets::Target;

/// A byte stream to a client or a database: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// Writes all of `bytes` and flushes them. A TLS stream may accept bytes into its own buffer
/// while the socket is full and send them only when written to again or flushed; a relay that
/// then waits to read would leave the end of a result in that buffer for good.
pub(crate) async fn send<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    w.write_all(bytes).await?;
    w.flush().await
}

/// Time a client has, from its connection, to finish TLS and hand over its login (startup,
/// password): a client that sends nothing, or sends slowly, is dropped then.
pub const PRE_AUTH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest message taken from a client before its login succeeded (a startup packet, a
/// password, a MySQL handshake response with its attributes).
pub const PRE_AUTH_MAX_MESSAGE: usize = 64 * 1024;

/// Runs `step` of a client's login, failing with `TimedOut` once `deadline` has passed.
pub(crate) async fn before<T>(
    deadline: tokio::time::Instant,
    step: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout_at(deadline, step).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not finish its login in time",
        )),
    }
}

/// A stream whose first reads return bytes already read off it (a TLS ClientHello that came
/// in one read with the request to start TLS), then the stream's own.
pub(crate) struct Prefixed<T> {
    prefix: bytes::Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(prefix: bytes::Bytes, inner: T) -> Prefixed<T> {
        Prefixed { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if !me.prefix.is_empty() {
            let n = me.prefix.len().min(buf.remaining());
            buf.put_slice(&me.prefix.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Connects to where `target`'s database listens: its Unix socket when it has one, else TCP
/// `host:port` (without Nagle's delay: every message is a whole request or answer).
pub(crate) async fn dial(target: &Target) -> std::io::Result<BoxIo> {
    match target.socket_file() {
        Some(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        None => {
            let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp))
        }
    }
}
