//! The PostgreSQL gateway: `frontend` speaks to clients (SSL negotiation, password login of
//! the Haechi user, the simple and extended query protocols, COPY, cancel requests), `backend`
//! logs in to the real database as the account (SCRAM-SHA-256 / MD5 / cleartext with the
//! vault password, TLS when the target asks for it) and carries results back.
//!
//! Refusals ride the database's own error path: a refused statement is replaced, in place, by
//! a message that fails in the database (`Bind`/`EXECUTE` of a statement name that does not
//! exist), and that error is rewritten into SQLSTATE 42501 naming the policy and the missing
//! privilege. So responses stay in order, the database discards the rest of an extended-
//! protocol batch up to `Sync` and rolls back its implicit transaction exactly as for any
//! error, and nothing of a refused string runs.

mod backend;
pub mod catalog;
mod frontend;
pub mod pool;
pub mod protocol;
mod scram;
mod shared;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::DbGate;

/// A backend connection's address and cancel key.
#[derive(Debug, Clone)]
pub struct BackendKey {
    pub host: String,
    pub port: u16,
    /// The target's Unix socket directory, when it is reached by one.
    pub socket: Option<String>,
    pub tls: crate::targets::BackendTls,
    pub tls_ca_file: Option<String>,
    pub pid: i32,
    pub secret: i32,
}

impl BackendKey {
    /// The key of a connection to `target` whose backend gave `pid` and `secret`.
    pub fn of(target: &crate::targets::Target, pid: i32, secret: i32) -> BackendKey {
        BackendKey {
            host: target.host.clone(),
            port: target.port,
            socket: target.socket.clone(),
            tls: target.tls,
            tls_ca_file: target.tls_ca_file.clone(),
            pid,
            secret,
        }
    }
}

/// Where a cancel request for one session goes.
#[derive(Debug, Clone)]
pub enum CancelTarget {
    /// The session's own backend.
    Backend(BackendKey),
    /// A pooled session: whichever connection runs its statement (see [`pool::cancel`]).
    Pooled(Arc<pool::Client>),
}

/// Accepts PostgreSQL clients on `listener` until `shutdown` resolves. `tls` is the server
/// configuration offered to clients that ask for SSL (none: SSL is declined).
pub async fn serve(
    listener: TcpListener,
    gate: Arc<DbGate>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let acceptor = tls.map(|cfg| {
        let mut cfg = (*cfg).clone();
        // Clients may announce `postgresql` (direct SSL); the HTTPS ALPN list does not apply.
        cfg.alpn_protocols = vec![b"postgresql".to_vec()];
        TlsAcceptor::from(Arc::new(cfg))
    });
    // Logins run here, on the server's runtime; sessions on the gateway's own threads.
    let main = tokio::runtime::Handle::current();
    haechi_types::net::accept_until(&listener, "pg gateway", shutdown, |tcp, peer| {
        let session_gate = gate.clone();
        let acceptor = acceptor.clone();
        let main = main.clone();
        crate::gateway::spawn_session(&gate, tcp, move |tcp| async move {
            if let Err(e) = frontend::handle(tcp, peer, session_gate, acceptor, main).await {
                tracing::debug!(%peer, "pg gateway session ended: {e}");
            }
        });
    })
    .await;
}

pub(crate) fn peer_is_loopback(peer: SocketAddr) -> bool {
    crate::policy::canonical(peer.ip()).is_loopback()
}
