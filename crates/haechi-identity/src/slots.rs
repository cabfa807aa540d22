//! A bound on the logins for one user id that check a password at once, and on those that
//! wait for their turn.
//!
//! A connection pool that opens fifty database connections through the gateway at once logs the
//! same user in fifty times: those logins wait for their turn rather than fail. A flood of
//! guesses for one account is held to `max_concurrent` Argon2 checks at a time, and past
//! `max_queued` waiting ones is refused at once (503) without a check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haechi_types::{Error, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a login waits for its turn before it is refused.
const WAIT: Duration = Duration::from_secs(30);

/// One user id's gate: permits for the checks, and how many logins hold or wait for one.
struct Gate {
    permits: Arc<Semaphore>,
    entered: usize,
}

/// The logins in progress per user id (as typed, folded: an unknown id is bounded the same
/// way, so the bound tells nothing about whether the user exists).
#[derive(Default)]
pub(crate) struct LoginSlots {
    gates: Arc<Mutex<HashMap<String, Gate>>>,
}

/// One login's turn; dropping it frees its place.
pub(crate) struct Slot {
    gates: Arc<Mutex<HashMap<String, Gate>>>,
    key: String,
    _permit: OwnedSemaphorePermit,
}

fn busy() -> Error {
    Error::unavailable("too many logins for this user id are in progress; try again in a moment")
}

impl LoginSlots {
    /// Waits for one of `max_concurrent` turns for `key`; refuses (503) when `max_queued`
    /// logins already wait, or when the turn does not come within 30 s.
    pub(crate) async fn enter(
        &self,
        key: &str,
        max_concurrent: u32,
        max_queued: u32,
    ) -> Result<Slot> {
        let max_concurrent = max_concurrent.max(1) as usize;
        let permits = {
            let mut gates = self.gates.lock().map_err(Error::internal)?;
            let gate = gates.entry(key.to_owned()).or_insert_with(|| Gate {
                permits: Arc::new(Semaphore::new(max_concurrent)),
                entered: 0,
            });
            if gate.entered >= max_concurrent + max_queued as usize {
                return Err(busy());
            }
            gate.entered += 1;
            gate.permits.clone()
        };
        let leave = |gates: &Mutex<HashMap<String, Gate>>| {
            if let Ok(mut gates) = gates.lock() {
                if let Some(g) = gates.get_mut(key) {
                    g.entered -= 1;
                    if g.entered == 0 {
                        gates.remove(key);
                    }
                }
            }
        };
        match tokio::time::timeout(WAIT, permits.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot {
                gates: self.gates.clone(),
                key: key.to_owned(),
                _permit: permit,
            }),
            _ => {
                leave(&self.gates);
                Err(busy())
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut gates) = self.gates.lock() {
            if let Some(g) = gates.get_mut(&self.key) {
                g.entered -= 1;
                if g.entered == 0 {
                    gates.remove(&self.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounds_checks_and_waiters_per_key_and_frees_on_drop() {
        let slots = LoginSlots::default();
        let a1 = slots.enter("a", 1, 1).await.unwrap();
        // The second waits for the first's turn; the third finds the queue full.
        let waiting = {
            let slots = &slots;
            async move { slots.enter("a", 1, 1).await }
        };
        tokio::pin!(waiting);
        assert!(futures_poll_pending(&mut waiting).await);
        let err = slots.enter("a", 1, 1).await.err().unwrap();
        assert_eq!(err.code.status(), 503);
        let _b = slots.enter("b", 1, 1).await.unwrap();
        drop(a1);
        let a2 = waiting.await.unwrap();
        drop(a2);
        assert!(!slots.gates.lock().unwrap().contains_key("a"));
    }

    /// Polls `f` once; whether it is still pending.
    async fn futures_poll_pending<F: std::future::Future + Unpin>(f: &mut F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .is_err()
    }
}
