//! The cross-server signal bus: typed announcements that something changed in the shared
//! store and that the other servers should act on now rather than at their next poll.
//!
//! On PostgreSQL a signal is a `NOTIFY haechi_signal` with a small JSON payload, received by
//! one `LISTEN` connection per server ([`Store::listen`]). The server that makes a change acts
//! on it itself, directly (as it always did); a signal is for the *other* servers, and a
//! server ignores its own. On SQLite there is one server: publishing does nothing and there
//! is no listener.
//!
//! A signal says *what* changed (an instance, a user, a token), never a value: the receiver
//! reads the store. Nothing secret ever travels in a payload.
//!
//! Signals are an accelerator, never the only path: every receiver keeps its sweep or poll as
//! the safety net. A listener that loses its connection reconnects and then delivers
//! [`Delivery::Resync`], on which every receiver does one full sweep (a notification sent
//! while the listener was away is lost, by PostgreSQL's design).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::{Pools, Store};

/// The PostgreSQL channel.
pub const CHANNEL: &str = "haechi_signal";

/// The `application_name` prefix of every server's listener connection (its origin follows in
/// hex): how a server finds the others listening on the same database
/// ([`Store::listening_servers`]) without a membership table that a killed server would leave
/// stale — PostgreSQL drops a dead server's connection, and with it the entry.
const LISTENER_APP: &str = "haechi-listen-";

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Signal {
    /// Task instance `instance` has node executions waiting (`WAIT`) for their agents: a
    /// start, a chain, a re-run, a schedule fire. A server sends those connected to it.
    Work { instance: i64 },
    /// Task instance `instance` has executions to cancel: a server tells the agents
    /// connected to it that hold them.
    Cancel { instance: i64 },
    /// Token `token` was revoked (logout, revocation, end of a gateway session).
    TokenRevoked { token: i64 },
    /// User `user` changed (disabled, roles, allow-list, password, deleted): their cached
    /// tokens are dropped.
    UserChanged { user: i64 },
    /// Roles changed: every cached token is dropped.
    RolesChanged,
    /// The gateway's policies changed (created, edited, locked, unlocked, deleted).
    Policies,
    /// The vault's mode or keys changed (master key change, data key rotation, mode change).
    VaultKeys,
    /// Server `server` (its origin) has applied the policies up to `version` to its gateway:
    /// the acknowledgement a server changing a policy waits for before it answers.
    PoliciesApplied { version: i64, server: u64 },
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Signal(Signal),
    /// Signals may have been missed (the listener reconnected, or this subscriber lagged):
    /// re-read everything the signals would have told.
    Resync,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    /// The sending process, so that a server does not act twice on its own signals.
    o: u64,
    s: Signal,
}

/// The bus of one server. Shared by every clone of its [`Store`].
pub struct Signals {
    tx: broadcast::Sender<Delivery>,
    origin: u64,
    /// The listener holds a live connection (PostgreSQL); always true on SQLite.
    connected: AtomicBool,
}

impl Signals {
    /// A new bus; the store was just opened, so the database counts as reachable.
    pub(crate) fn new() -> Arc<Signals> {
        Arc::new(Signals {
            tx: broadcast::channel(4096).0,
            origin: rand::random(),
            connected: AtomicBool::new(true),
        })
    }

    /// A receiver of every signal from now on. `RecvError::Lagged` counts as a
    /// [`Delivery::Resync`] (see [`Subscription::recv`]).
    pub fn subscribe(&self) -> Subscription {
        Subscription(self.tx.subscribe())
    }

    /// This server's origin: the id its signals carry, and its listener's name.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    fn deliver(&self, d: Delivery) {
        let _ = self.tx.send(d);
    }

    /// Whether this server's listener holds a live connection to the database (always true
    /// on SQLite). False while PostgreSQL is unreachable.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

/// A subscriber's end of the bus.
pub struct Subscription(broadcast::Receiver<Delivery>);

impl Subscription {
    /// The next delivery; `None` once the bus is gone. A subscriber that fell behind gets a
    /// [`Delivery::Resync`] in place of what it missed.
    pub async fn recv(&mut self) -> Option<Delivery> {
        match self.0.recv().await {
            Ok(d) => Some(d),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Delivery::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Store {
    /// This server's signal bus.
    pub fn signals(&self) -> &Arc<Signals> {
        &self.signals
    }

    /// Announces `signal` to every other server on the store (PostgreSQL; nothing on SQLite,
    /// which has one server). Call it after the change is committed; this server has acted on
    /// the change already. A failure to notify is logged, not returned: the receivers' sweeps
    /// and polls still pick the change up.
    pub async fn publish(&self, signal: Signal) {
        if let Pools::Postgres(pool) = &self.pools {
            let payload = match serde_json::to_string(&Payload {
                o: self.signals.origin,
                s: signal,
            }) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("signal not sent: {e}");
                    return;
                }
            };
            let sent = tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&payload)
                    .execute(pool),
            )
            .await;
            match sent {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(
                    "cross-server signal not sent ({e}); the other servers pick the change up at their next sweep"
                ),
                Err(_) => tracing::warn!(
                    "cross-server signal not sent (timed out); the other servers pick the change up at their next sweep"
                ),
            }
        }
    }

    /// The origins of the other servers listening for signals on this database now (their
    /// listener connections are open); empty on SQLite, which has one server.
    pub async fn listening_servers(&self) -> crate::Result<Vec<u64>> {
        let Pools::Postgres(pool) = &self.pools else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT application_name FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE $1",
        )
        .bind(format!("{LISTENER_APP}%"))
        .fetch_all(pool)
        .await?;
        Ok(names
            .iter()
            .filter_map(|n| u64::from_str_radix(n.strip_prefix(LISTENER_APP)?, 16).ok())
            .filter(|o| *o != self.signals.origin)
            .collect())
    }

    /// [`Store::publish`] from code that cannot wait (it runs on a task of its own).
    pub fn publish_detached(&self, signal: Signal) {
        let store = self.clone();
        tokio::spawn(async move { store.publish(signal).await });
    }

    /// On PostgreSQL: starts the listener that turns other servers' notifications into
    /// deliveries, until `stop` turns true. It reconnects by itself when its connection is
    /// lost (a database restart or failover) and then delivers [`Delivery::Resync`]. `None`
    /// on SQLite (one server; signals are in-process).
    pub fn listen(&self, mut stop: watch::Receiver<bool>) -> Option<tokio::task::JoinHandle<()>> {
        let Pools::Postgres(pool) = &self.pools else {
            return None;
        };
        let pool = pool.clone();
        let signals = self.signals.clone();
        Some(tokio::spawn(async move {
            let mut first = true;
            let mut warned = false;
            loop {
                if *stop.borrow() {
                    return;
                }
                let connected = async {
                    let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    // A lost connection is ours to notice: recv would reconnect silently and
                    // lose what was sent meanwhile without telling.
                    l.ignore_pool_close_event(true);
                    l.eager_reconnect(false);
                    l.listen(CHANNEL).await?;
                    sqlx::query("SELECT set_config('application_name', $1, false)")
                        .bind(format!("{LISTENER_APP}{:x}", signals.origin))
                        .execute(&mut l)
                        .await?;
                    Ok::<_, sqlx::Error>(l)
                };
                let mut listener =
                    match tokio::time::timeout(Duration::from_secs(5), connected).await {
                        Ok(Ok(l)) => l,
                        Ok(Err(e)) => {
                            signals.connected.store(false, Ordering::Release);
                            if !warned {
                                tracing::warn!("signal listener: cannot connect ({e}); retrying");
                                warned = true;
                            }
                            tokio::select! {
                                _ = stop.changed() => return,
                                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                            }
                        }
                        Err(_) => {
                            signals.connected.store(false, Ordering::Release);
                            continue;
                        }
                    };
                signals.connected.store(true, Ordering::Release);
                if !first {
                    tracing::info!("signal listener: connected again; every engine sweeps once");
                    signals.deliver(Delivery::Resync);
                }
                first = false;
                warned = false;
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        n = listener.try_recv() => match n {
                            Ok(Some(n)) => match serde_json::from_str::<Payload>(n.payload()) {
                                Ok(p) if p.o == signals.origin => {}
                                Ok(p) => signals.deliver(Delivery::Signal(p.s)),
                                Err(e) => tracing::warn!("signal listener: ignoring a payload: {e}"),
                            },
                            Ok(None) | Err(_) => {
                                tracing::warn!("signal listener: connection lost; reconnecting");
                                break;
                            }
                        }
                    }
                }
                signals.connected.store(false, Ordering::Release);
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_small_and_round_trip() {
        for s in [
            Signal::Work { instance: 42 },
            Signal::Cancel { instance: 7 },
            Signal::TokenRevoked { token: 9 },
            Signal::UserChanged { user: 3 },
            Signal::RolesChanged,
            Signal::Policies,
            Signal::VaultKeys,
            Signal::PoliciesApplied {
                version: i64::MAX,
                server: u64::MAX,
            },
        ] {
            let text = serde_json::to_string(&Payload { o: 1, s: s.clone() }).unwrap();
            // NOTIFY takes at most 8000 bytes; a payload names an id, never a list.
            assert!(text.len() < 100, "{text}");
            let back: Payload = serde_json::from_str(&text).unwrap();
            assert_eq!(back.s, s);
        }
    }

    #[tokio::test]
    async fn sqlite_has_one_server_and_nothing_to_listen_to() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::StoreOptions::sqlite(dir.path().join("s.db")))
            .await
            .unwrap();
        assert!(store.signals().connected());
        assert!(store.listen(watch::channel(false).1).is_none());
        let mut sub = store.signals().subscribe();
        store.publish(Signal::Work { instance: 5 }).await;
        store.signals().deliver(Delivery::Resync);
        // Nothing published on SQLite reaches the bus: the next delivery is the resync.
        assert_eq!(sub.recv().await, Some(Delivery::Resync));
    }
}
