//! The sessions open through this server's gateways: who, as which account, on which target,
//! from where, since when, how many statements, and a way for an administrator to end one.
//!
//! A session is registered when its login succeeds and leaves the registry when it ends
//! (its `Session` is dropped, however the connection ends). Ending one from outside marks it
//! ended (its next statement is refused, as for a locked policy) and wakes the connection's
//! task, which drops both sockets. The registry is per server: with several servers on one
//! store, each lists and ends the sessions it carries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::gateway::Liveness;

/// One open session, shared between the registry and the connection carrying it.
pub struct OpenSession {
    /// Random, 16 hex digits; also in the session's audit events (`detail.session`).
    pub id: String,
    pub user_id: String,
    pub account: String,
    pub target: String,
    pub protocol: &'static str,
    pub client: SocketAddr,
    /// Unix ms of the login.
    pub since: i64,
    statements: AtomicU64,
    ended: AtomicBool,
    wake: tokio::sync::Notify,
    pub(crate) liveness: Arc<Liveness>,
}

impl OpenSession {
    pub(crate) fn count_statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    /// Resolves once an administrator ended the session.
    pub async fn ended(&self) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.ended.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }

    fn view(&self) -> SessionView {
        SessionView {
            id: self.id.clone(),
            user_id: self.user_id.clone(),
            account: self.account.clone(),
            target: self.target.clone(),
            protocol: self.protocol,
            client_ip: crate::policy::canonical(self.client.ip()).to_string(),
            since: self.since,
            statements: self.statements.load(Ordering::Relaxed),
        }
    }
}

/// What the API and the console show of an open session.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: String,
    pub user_id: String,
    pub account: String,
    /// The target's name.
    pub target: String,
    /// `postgres` or `mysql`.
    pub protocol: &'static str,
    pub client_ip: String,
    /// Unix milliseconds of the login.
    pub since: i64,
    /// Statement strings the session has sent (allowed and refused).
    pub statements: u64,
}

/// The registry (one per gateway engine).
#[derive(Default)]
pub(crate) struct Registry {
    open: Mutex<HashMap<String, Arc<OpenSession>>>,
}

/// Keeps a session in the registry while it lives.
pub(crate) struct Registered {
    registry: Weak<Registry>,
    pub(crate) open: Arc<OpenSession>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(r) = self.registry.upgrade() {
            if let Ok(mut m) = r.open.lock() {
                m.remove(&self.open.id);
            }
        }
    }
}

impl Registry {
    pub(crate) fn register(
        self: &Arc<Self>,
        user_id: &str,
        account: &str,
        target: &str,
        protocol: &'static str,
        client: SocketAddr,
        liveness: Arc<Liveness>,
    ) -> Registered {
        let open = Arc::new(OpenSession {
            id: format!("{:016x}", rand::random::<u64>()),
            user_id: user_id.to_owned(),
            account: account.to_owned(),
            target: target.to_owned(),
            protocol,
            client,
            since: haechi_types::time::now_ms(),
            statements: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            liveness,
        });
        if let Ok(mut m) = self.open.lock() {
            m.insert(open.id.clone(), open.clone());
        }
        Registered {
            registry: Arc::downgrade(self),
            open,
        }
    }

    /// Every open session, oldest first.
    pub(crate) fn list(&self) -> Vec<SessionView> {
        let mut out: Vec<SessionView> = match self.open.lock() {
            Ok(m) => m.values().map(|s| s.view()).collect(),
            Err(_) => Vec::new(),
        };
        out.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.id.cmp(&b.id)));
        out
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<OpenSession>> {
        self.open.lock().ok()?.get(id).cloned()
    }

    /// Ends session `id`: refuses its next statement and closes its connection.
    pub(crate) fn end(&self, s: &OpenSession, why: String) {
        s.liveness.end(why);
        s.ended.store(true, Ordering::Release);
        s.wake.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_is_listed_while_it_lives_and_ending_it_wakes_its_task() {
        let reg = Arc::new(Registry::default());
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let r = reg.register("kim", "app", "db1", "postgres", client, Arc::default());
        r.open.count_statement();
        let listed = reg.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].statements, 1);
        assert_eq!(listed[0].client_ip, "127.0.0.1");
        let open = r.open.clone();
        let waiter = tokio::spawn(async move { open.ended().await });
        tokio::task::yield_now().await;
        let s = reg.get(&listed[0].id).unwrap();
        reg.end(&s, "ended by admin".into());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        // Ended before anyone waits: the wait returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), r.open.ended())
            .await
            .unwrap();
        drop(r);
        assert!(reg.list().is_empty());
    }
}
