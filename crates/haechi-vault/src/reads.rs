//! Audit of value reads, with group commit.
//!
//! Every value read is an audit event, and a value leaves the server only after its event is
//! committed: the request waits for it. Reads are the vault's hot path and each event is a
//! write, so events from concurrent reads are appended by one task in a shared transaction
//! (one commit for all the events waiting at that moment) instead of one transaction each. The
//! events stay in the one hash chain ([`haechi_audit::append_many`], in order); a batch that
//! fails fails every read in it, so no value is returned without its event. At shutdown the
//! task drains what is queued before the store closes.
//!
//! Unlike [`haechi_audit::Batcher`], which returns once an event is queued, a read here waits
//! for the commit: a value never leaves the server before the record of its reading is durable.

use std::sync::Mutex;

use haechi_audit::Event;
use haechi_store::Store;
use haechi_types::{Error, Result};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Events appended in one transaction at most.
const MAX_BATCH: usize = 256;
/// Reads waiting for the writer at most; further reads wait for room (back-pressure).
const QUEUE: usize = 4096;
/// Scheduler rounds the writer gives concurrent reads to join a batch, at most.
const GATHER_ROUNDS: usize = 32;
/// Rounds in a row with no new read after which the batch is committed.
const IDLE_ROUNDS: usize = 2;

struct Job {
    event: Event,
    done: oneshot::Sender<Result<()>>,
}

pub(crate) struct ReadAudit {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl ReadAudit {
    pub fn start(store: Store) -> ReadAudit {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write_loop(store, rx));
        ReadAudit {
            sender: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        }
    }

    /// Appends `event` and returns once it is committed.
    pub async fn record(&self, event: Event) -> Result<()> {
        let sender = self
            .sender
            .lock()
            .map_err(|_| Error::internal("read audit lock poisoned"))?
            .clone()
            .ok_or_else(|| Error::unavailable("the server is shutting down"))?;
        let (done, wait) = oneshot::channel();
        sender
            .send(Job { event, done })
            .await
            .map_err(|_| Error::unavailable("the server is shutting down"))?;
        wait.await.map_err(|_| {
            Error::internal("the audit writer stopped before recording a value read")
        })?
    }

    /// Stops taking events and waits until every queued one is committed.
    pub async fn shutdown(&self) {
        let sender = self.sender.lock().ok().and_then(|mut s| s.take());
        drop(sender);
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = writer {
            if let Err(e) = w.await {
                tracing::error!("the vault's read-audit writer ended abnormally: {e}");
            }
        }
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        gather(&mut rx, &mut batch).await;
        let events: Vec<Event> = batch.iter().map(|j| j.event.clone()).collect();
        metrics::histogram!("haechi_vault_read_audit_batch_size").record(events.len() as f64);
        let outcome = append_all(&store, events).await;
        if let Err(e) = &outcome {
            tracing::error!(
                events = batch.len(),
                "could not record value reads in the audit log: {e}"
            );
        }
        for job in batch.drain(..) {
            let _ = job.done.send(outcome.clone());
        }
    }
}

/// Takes what is queued and, while reads keep arriving, lets the other tasks run a little so
/// the reads in flight join this commit instead of each paying for one of their own. With one
/// reader at a time nothing arrives during the first rounds and the commit starts at once.
async fn gather(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    let mut idle_rounds = 0;
    for _ in 0..GATHER_ROUNDS {
        let before = batch.len();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if batch.len() >= MAX_BATCH {
            return;
        }
        if batch.len() == before {
            idle_rounds += 1;
            if idle_rounds > IDLE_ROUNDS {
                return;
            }
        } else {
            idle_rounds = 0;
        }
        tokio::task::yield_now().await;
    }
}

async fn append_all(store: &Store, events: Vec<Event>) -> Result<()> {
    let mut tx = store.begin().await?;
    haechi_audit::append_many(&mut tx, events).await?;
    tx.commit().await
}
