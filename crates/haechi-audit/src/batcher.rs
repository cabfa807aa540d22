//! Batched appends for high-rate events (vault value reads, statements through the gateway).
//!
//! Producers hand events to [`Batcher::record`]; one writer task appends whatever is queued in
//! one transaction with [`crate::append_many`], so every event still becomes a link of the one
//! hash chain, in the order it was queued. With [`Durability::Strict`] (the default, setting
//! `audit.durability`) `record` returns only once the event's transaction has committed, so an
//! answer sent after it can never outlive a crash without its event: group commit (every
//! producer waiting at the same moment shares one transaction, and the writer never lingers while
//! someone waits) keeps the throughput. With [`Durability::Batched`] it returns as soon as the
//! event is queued and the event commits a few milliseconds later. The queue is bounded: when
//! the store cannot keep up, producers wait (back-pressure) rather than events being dropped. A
//! batch that fails to commit is retried until it commits; at shutdown the writer drains the
//! queue before [`Batcher::shutdown`] returns.

use std::sync::Mutex;
use std::time::Duration;

use haechi_store::Store;
use haechi_types::{Error, Result};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::Event;

/// When an answer may leave the server relative to its audit event (CONTRACT §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The event is committed before [`Batcher::record`] returns.
    #[default]
    Strict,
    /// The event is queued when [`Batcher::record`] returns and committed a few ms later: a
    /// crash in between loses it.
    Batched,
}

/// Sizing of a [`Batcher`].
#[derive(Debug, Clone, Copy)]
pub struct BatcherOptions {
    /// Events appended in one transaction at most.
    pub max_batch: usize,
    /// Events waiting for the writer at most; producers wait for room beyond that.
    pub queue: usize,
    /// How long the writer waits for more events after the first of a batch when fewer than
    /// `max_batch` are queued (trades a little latency for fewer transactions under load).
    /// Never while a producer waits for its event ([`Durability::Strict`]).
    pub linger: Duration,
    pub durability: Durability,
}

impl Default for BatcherOptions {
    fn default() -> Self {
        BatcherOptions {
            max_batch: 2048,
            queue: 16_384,
            linger: Duration::from_millis(5),
            durability: Durability::default(),
        }
    }
}

fn shutting_down() -> Error {
    Error::unavailable("the server is shutting down")
}

/// An event queued by [`Batcher::enqueue`].
#[must_use = "under strict durability the event is durable only once `committed` returns"]
pub struct Pending(Option<oneshot::Receiver<()>>);

impl Pending {
    /// Returns once the event is committed ([`Durability::Strict`]), or at once when the
    /// batcher is [`Durability::Batched`].
    pub async fn committed(self) -> Result<()> {
        match self.0 {
            Some(rx) => rx.await.map_err(|_| shutting_down()),
            None => Ok(()),
        }
    }
}

/// An event in the queue, and who waits for its commit.
struct Queued {
    event: Event,
    committed: Option<oneshot::Sender<()>>,
}

/// A batched audit appender. One per engine that needs it; cheap to share behind an `Arc`.
pub struct Batcher {
    sender: Mutex<Option<mpsc::Sender<Queued>>>,
    writer: Mutex<Option<Writer>>,
    durability: Durability,
}

/// Where the writer runs: a thread of its own with its own connection on SQLite (see
/// `crate::blocking`), a task on PostgreSQL (whose round trips are network ones anyway).
enum Writer {
    Task(JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

impl Batcher {
    /// Starts the writer: on SQLite a thread of its own, on PostgreSQL a task on the current
    /// Tokio runtime.
    pub fn start(store: Store, opts: BatcherOptions) -> Batcher {
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let writer = match store.inline().map(|i| i.writer()) {
            Some(Ok(conn)) => {
                let (thread_tx, thread_rx) = mpsc::channel(opts.queue.max(1));
                match std::thread::Builder::new()
                    .name("haechi-audit-writer".into())
                    .spawn(move || write_thread(conn, thread_rx, opts))
                {
                    Ok(handle) => {
                        return Batcher {
                            sender: Mutex::new(Some(thread_tx)),
                            writer: Mutex::new(Some(Writer::Thread(handle))),
                            durability: opts.durability,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            "audit writer thread not started ({e}): appending from a task"
                        );
                        Writer::Task(tokio::spawn(write_loop(store, rx, opts)))
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!("audit writer connection not opened ({e}): appending from a task");
                Writer::Task(tokio::spawn(write_loop(store, rx, opts)))
            }
            None => Writer::Task(tokio::spawn(write_loop(store, rx, opts))),
        };
        Batcher {
            sender: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            durability: opts.durability,
        }
    }

    /// Queues `event` (waiting while the queue is full) and, under [`Durability::Strict`],
    /// waits until it is committed. Fails once shutdown has begun.
    pub async fn record(&self, event: Event) -> Result<()> {
        self.enqueue(event).await?.committed().await
    }

    /// Queues `event` (waiting while the queue is full) without waiting for its commit: the
    /// answer says when it is durable as [`Batcher::record`] would have. Several events
    /// queued before any is waited for share one transaction.
    pub async fn enqueue(&self, event: Event) -> Result<Pending> {
        let sender = self
            .sender
            .lock()
            .map_err(|_| Error::internal("audit batcher lock poisoned"))?
            .clone()
            .ok_or_else(shutting_down)?;
        let (done, committed) = match self.durability {
            Durability::Batched => (None, None),
            Durability::Strict => {
                let (done, committed) = oneshot::channel();
                (Some(done), Some(committed))
            }
        };
        sender
            .send(Queued {
                event,
                committed: done,
            })
            .await
            .map_err(|_| shutting_down())?;
        Ok(Pending(committed))
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Stops taking events and waits until every queued one is committed.
    pub async fn shutdown(&self) {
        let sender = self.sender.lock().ok().and_then(|mut s| s.take());
        drop(sender);
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        let ended = match writer {
            Some(Writer::Task(task)) => task.await.map_err(|e| e.to_string()),
            Some(Writer::Thread(thread)) => tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| e.to_string())
                .and_then(|joined| {
                    joined.map_err(|_| "the audit writer thread panicked".to_owned())
                }),
            None => Ok(()),
        };
        if let Err(e) = ended {
            tracing::error!("the audit batch writer ended abnormally: {e}");
        }
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<Queued>, opts: BatcherOptions) {
    let mut batch: Vec<Queued> = Vec::with_capacity(opts.max_batch);
    // Where the chain ended after this writer's last commit (see `crate::append_after`).
    let mut head: Option<crate::Head> = None;
    while let Some(first) = rx.recv().await {
        batch.push(first);
        drain(&mut rx, &mut batch, opts.max_batch);
        if lingers(&batch, &opts) {
            tokio::time::sleep(opts.linger).await;
            drain(&mut rx, &mut batch, opts.max_batch);
        }
        commit_with_retry(&store, &mut batch, &mut head).await;
    }
}

/// [`write_loop`] on a thread of its own with its own SQLite connection: the same batches,
/// lingering and retries, with the transaction run here instead of through sqlx's thread.
fn write_thread(
    mut conn: haechi_store::inline::rusqlite::Connection,
    mut rx: mpsc::Receiver<Queued>,
    opts: BatcherOptions,
) {
    let mut batch: Vec<Queued> = Vec::with_capacity(opts.max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        drain(&mut rx, &mut batch, opts.max_batch);
        if lingers(&batch, &opts) {
            std::thread::sleep(opts.linger);
            drain(&mut rx, &mut batch, opts.max_batch);
        }
        let mut delay = Duration::from_millis(50);
        loop {
            let events: Vec<&Event> = batch.iter().map(|q| &q.event).collect();
            match crate::blocking::append(&mut conn, &events) {
                Ok(_) => {
                    committed(&mut batch);
                    break;
                }
                Err(e) => {
                    tracing::error!(
                        events = batch.len(),
                        "could not append audit events (retrying in {delay:?}): {e}"
                    );
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Little queued and nobody waiting: let more gather without being woken for each one
/// (nobody polls the receiver meanwhile, so producers' sends do not wake the writer). Under
/// load the queue already holds a batch and there is no wait; a producer waiting for its
/// commit is never kept waiting longer than the commit in flight.
fn lingers(batch: &[Queued], opts: &BatcherOptions) -> bool {
    let someone_waits = batch.iter().any(|q| q.committed.is_some());
    !someone_waits && !opts.linger.is_zero() && batch.len() < opts.max_batch / 8
}

/// Tells those waiting for the events of a committed `batch`, and empties it.
fn committed(batch: &mut Vec<Queued>) {
    for q in batch.drain(..) {
        if let Some(done) = q.committed {
            let _ = done.send(());
        }
    }
}

fn drain(rx: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(e) => batch.push(e),
            Err(_) => break,
        }
    }
}

/// Commits `batch`, retrying with back-off until it commits: an audit event is never dropped
/// silently. While this waits, the queue fills and producers wait too. Once committed, those
/// waiting for their events are told.
async fn commit_with_retry(store: &Store, batch: &mut Vec<Queued>, head: &mut Option<crate::Head>) {
    let mut delay = Duration::from_millis(50);
    loop {
        match append_batch(store, batch, head.as_ref()).await {
            Ok(new_head) => {
                *head = Some(new_head);
                committed(batch);
                return;
            }
            Err(e) => {
                *head = None;
                tracing::error!(
                    events = batch.len(),
                    "could not append audit events (retrying in {delay:?}): {e}"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn append_batch(
    store: &Store,
    batch: &[Queued],
    head: Option<&crate::Head>,
) -> Result<crate::Head> {
    let events: Vec<&Event> = batch.iter().map(|q| &q.event).collect();
    let mut tx = store.begin().await?;
    let new_head = crate::append_after(&mut tx, &events, head).await?;
    tx.commit().await?;
    Ok(new_head)
}
