//! The one accept loop of Haechi's listeners (the HTTP server and the database gateways).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Accepts connections on `listener` until `shutdown` resolves, handing each one to `on_conn`
/// (which spawns whatever serves it, or drops it). A failed accept (out of file descriptors,
/// say) is logged naming `what` and retried after 50 ms, so a persistent failure does not spin.
pub async fn accept_until<F>(
    listener: &TcpListener,
    what: &str,
    shutdown: impl Future<Output = ()>,
    mut on_conn: F,
) where
    F: FnMut(TcpStream, SocketAddr),
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => on_conn(tcp, peer),
                Err(e) => {
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut shutdown => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hands_every_connection_over_and_stops_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            accept_until(
                &listener,
                "test",
                async {
                    let _ = stop_rx.await;
                },
                move |tcp, peer| {
                    assert_eq!(tcp.peer_addr().unwrap(), peer);
                    seen_tx.send(peer).unwrap();
                },
            )
            .await;
            listener
        });
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut peers = Vec::new();
        for _ in 0..3 {
            peers.push(seen_rx.recv().await.unwrap());
        }
        let mut local: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        peers.sort();
        local.sort();
        assert_eq!(peers, local);
        stop_tx.send(()).unwrap();
        // The loop returns (and gives the listener back) once shutdown resolves.
        let listener = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop stops on shutdown")
            .unwrap();
        assert_eq!(listener.local_addr().unwrap(), addr);
    }
}
