//! The MySQL / MariaDB gateway: `frontend` speaks to clients (handshake with TLS, the
//! password login of the Haechi user, the command phase), `backend` logs in to the real
//! database as the account with the vault password and carries responses back.

mod backend;
mod frontend;
pub mod protocol;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::DbGate;

/// Accepts MySQL / MariaDB clients on `listener` until `shutdown` resolves. `tls` is offered to
/// clients (none: no TLS; then only loopback clients may log in).
pub async fn serve(
    listener: TcpListener,
    gate: Arc<DbGate>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let acceptor = tls.map(|cfg| {
        let mut cfg = (*cfg).clone();
        cfg.alpn_protocols.clear();
        TlsAcceptor::from(Arc::new(cfg))
    });
    // Logins run here, on the server's runtime; sessions on the gateway's own threads.
    let main = tokio::runtime::Handle::current();
    haechi_types::net::accept_until(&listener, "mysql gateway", shutdown, |tcp, peer| {
        let session_gate = gate.clone();
        let acceptor = acceptor.clone();
        let main = main.clone();
        crate::gateway::spawn_session(&gate, tcp, move |tcp| async move {
            if let Err(e) = frontend::handle(tcp, peer, session_gate, acceptor, main).await {
                tracing::debug!(%peer, "mysql gateway session ended: {e}");
            }
        });
    })
    .await;
}
