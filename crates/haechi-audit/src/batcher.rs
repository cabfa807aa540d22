//! Batched appends for high-rate events (vault value reads, statements through the gateway).
//!
//! Producers hand events to [`Batcher::record`]; one writer task appends whatever is queued in
//! one transaction with [`crate::append_many`], so every event still becomes a link of the one
//! hash chain, in the order it was queued. With [`Durability::Strict`] (the default, setting
//! `audit.durability`) `record` returns only once the event's transaction has committed, so an
//! answer sent after it can never outlive a crash without its event: group commit (every
//! producer waiting at the same moment shares one transaction, and the writer never lingers while
//! someone waits) keeps the throughput. With [`Durability::Batched`] it returns as soon as the
//! event is queued and the event commits a few milliseconds later. Strict on SQLite commits on
//! the waiting tasks' own threads instead of a writer's (see [`Group`]). The queue is bounded: when
//! the store cannot keep up, producers wait (back-pressure) rather than events being dropped. A
//! batch that fails to commit is retried until it commits; at shutdown the writer drains the
//! queue before [`Batcher::shutdown`] returns.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use haechi_store::inline::rusqlite::Connection;
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
pub struct Pending {
    /// Told when the event is committed (strict), or that this waiter now leads the group
    /// commit ([`Group`]).
    rx: Option<oneshot::Receiver<Signal>>,
    group: Option<Arc<Group>>,
}

impl Pending {
    fn done() -> Pending {
        Pending {
            rx: None,
            group: None,
        }
    }

    /// Returns once the event is committed ([`Durability::Strict`]), or at once when the
    /// batcher is [`Durability::Batched`]. With a [`Group`], the first waiter to get here while
    /// nobody commits commits every queued event itself, on its own thread.
    pub async fn committed(mut self) -> Result<()> {
        if let Some(group) = self.group.clone() {
            let already = self.rx.as_mut().map(|rx| {
                rx.try_recv()
                    .map_err(|e| e == oneshot::error::TryRecvError::Closed)
            });
            match already {
                None | Some(Ok(Signal::Committed)) => {
                    self.rx = None;
                    return Ok(());
                }
                Some(Ok(Signal::Lead)) => {
                    self.rx = group.lead();
                }
                Some(Err(true)) => {
                    self.rx = None;
                    return Err(shutting_down());
                }
                Some(Err(false)) => {
                    // Let the tasks ready on this thread run first: those finishing now queue
                    // their events, and this commit takes them too (one commit costs about
                    // the same for one event or ten).
                    tokio::task::yield_now().await;
                    if let Some(batch) = group.take_lead() {
                        self.rx = group.lead_with(batch);
                    }
                }
            }
        }
        loop {
            let Some(rx) = self.rx.as_mut() else {
                return Ok(());
            };
            let signal = rx.await;
            self.rx = None;
            match signal {
                Ok(Signal::Committed) => return Ok(()),
                Ok(Signal::Lead) => match &self.group {
                    Some(group) => self.rx = group.lead(),
                    None => return Ok(()),
                },
                Err(_) => return Err(shutting_down()),
            }
        }
    }
}

impl Drop for Pending {
    /// A waiter that goes away (its request was dropped) must not take the group's lead with
    /// it: if it was made the leader, it commits what is queued now; if nobody leads and
    /// events wait, it commits them too.
    fn drop(&mut self) {
        let (Some(mut rx), Some(group)) = (self.rx.take(), self.group.take()) else {
            return;
        };
        // After `close`, no lead can be handed to this waiter any more; one handed before is
        // read here.
        rx.close();
        match rx.try_recv() {
            Ok(Signal::Lead) => drop(group.lead()),
            _ => {
                if let Some(batch) = group.take_lead() {
                    drop(group.lead_with(batch));
                }
            }
        }
    }
}

/// What a waiter is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// Its event is committed.
    Committed,
    /// It commits what is queued now ([`Group`]); its own event is among it.
    Lead,
}

/// An event in the queue, and who waits for its commit.
struct Queued {
    event: Event,
    committed: Option<oneshot::Sender<Signal>>,
}

/// What the writer (thread or task) is given.
enum Job {
    /// An event to append with the next batch.
    Event(Queued),
    /// Copy the write-ahead log back into the database ([`Group::checkpoint`]).
    Checkpoint,
    /// A group commit that could not be made where it was led ([`Group::lead`]): the writer
    /// commits it (waiting for the lock, retrying), tells `then`, and carries on leading.
    Lead {
        batch: Vec<Queued>,
        then: oneshot::Sender<Signal>,
    },
}

/// A batched audit appender. One per engine that needs it; cheap to share behind an `Arc`.
pub struct Batcher {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<Writer>>,
    durability: Durability,
    /// Strict durability on SQLite: group commit on the waiting tasks' own threads.
    group: Option<Arc<Group>>,
}

/// Where the writer runs: a thread of its own with its own connection on SQLite (see
/// `crate::blocking`), a task on PostgreSQL (whose round trips are network ones anyway).
enum Writer {
    Task(JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

/// Group commit without a hand-off, for [`Durability::Strict`] on SQLite.
///
/// Through a writer thread every strict answer cost two wake-ups more than a batched one (the
/// writer's, then the waiter's), and on two busy CPUs a wake-up is tens to hundreds of
/// microseconds: the strict gateway ran at half the batched one (bench/README.md). Here the
/// first waiter that finds nobody committing *leads*: it takes every queued event and commits
/// them on its own thread, with a connection of its own and no wait for SQLite's lock (the
/// commit itself is tens of microseconds: WAL, `synchronous = NORMAL`). Events queued while it
/// commits wait; when it is done it hands the lead to one of their waiters (who would have been
/// woken anyway), so each commit holds everything that arrived during the one before. A commit
/// that cannot be made at once (another writer holds the lock, an error) goes to the writer
/// thread, which waits and retries on its own thread and then carries on leading.
///
/// The connection never checkpoints the write-ahead log itself: a checkpoint inside a commit
/// held every waiter for milliseconds (p99 of the vault's value reads 6–7 ms; with a larger
/// log between checkpoints, 26 ms), and one run from another thread beside the commits never
/// caught up with them, so the log never started over (1.9 GB in one benchmark). Every
/// [`CHECKPOINT_EVERY`] commits the writer thread copies the log back in two steps: most of it
/// beside the commits, in up to [`PASSES`] passes while each leaves less, with the database
/// file synced after them, then the little written meanwhile (at most [`FINISH_UNDER`] frames;
/// more left means readers held it back, and it tries again later) while it holds the lead
/// (handed to it like to a waiter), so the log is wholly copied and the next commit starts it
/// over.
struct Group {
    conn: Mutex<Connection>,
    /// The database file, held open for the checkpoint's `fsync` (`None`: an in-memory
    /// database, or it could not be opened; then SQLite's own pass in the lead syncs it).
    db_file: Option<std::fs::File>,
    state: Mutex<GroupState>,
    /// The writer thread's queue; taken at shutdown, so the thread can end.
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    commits: AtomicU32,
    /// Tells the writer thread it holds the lead for its checkpoint.
    handed: Condvar,
}

/// Group commits between two checkpoints (see [`Group`]): a few thousand pages of log.
const CHECKPOINT_EVERY: u32 = 512;

/// The most frames of log the writer thread copies while it holds the lead (see [`Group`]).
/// The pass in the lead syncs the log written since the pass before, and (being the one that
/// copies the whole log) the database: every strict answer queued meanwhile waits for both
/// `fsync`s (1–2 ms each on an idle disk, 4–12 ms on a busy one; bench/README.md).
const FINISH_UNDER: i64 = 64;

/// Passes beside the commits, at most, before the writer thread takes the lead (see [`Group`]).
const PASSES: usize = 6;

/// Frames of log past which the writer thread takes the lead to copy it however much is left.
const LOG_LIMIT: i64 = 16_384;

/// Where the writer thread's checkpoint is.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Checkpoint {
    #[default]
    None,
    /// It waits for the lead: the next leader hands it over instead of to a waiter.
    Wanted,
    /// It holds the lead.
    Held,
}

#[derive(Default)]
struct GroupState {
    queue: Vec<Queued>,
    /// Someone commits (a waiter, or the writer thread): nobody else takes the queue.
    leading: bool,
    /// The batcher is shutting down: nothing more is queued.
    closed: bool,
    checkpoint: Checkpoint,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Group {
    /// Takes the lead and the queue when nobody leads and something is queued.
    fn take_lead(&self) -> Option<Vec<Queued>> {
        let mut st = lock(&self.state);
        if st.leading || st.queue.is_empty() {
            return None;
        }
        st.leading = true;
        Some(std::mem::take(&mut st.queue))
    }

    /// Leads after being handed the lead (it is held already): commits what is queued. As
    /// [`Group::lead_with`].
    fn lead(self: &Arc<Self>) -> Option<oneshot::Receiver<Signal>> {
        let batch = std::mem::take(&mut lock(&self.state).queue);
        self.lead_with(batch)
    }

    /// Commits `batch` here (the lead is held), tells its waiters, and hands the lead on.
    /// `Some` when the commit went to the writer thread: it answers there.
    fn lead_with(self: &Arc<Self>, mut batch: Vec<Queued>) -> Option<oneshot::Receiver<Signal>> {
        loop {
            if !batch.is_empty() {
                let attempt = {
                    let mut conn = lock(&self.conn);
                    let events: Vec<&Event> = batch.iter().map(|q| &q.event).collect();
                    crate::blocking::append(&mut conn, &events)
                };
                if let Err(e) = attempt {
                    tracing::debug!("audit group commit handed to the writer thread: {e}");
                    let (then, rx) = oneshot::channel();
                    let writer = lock(&self.writer).clone();
                    let sent = match writer {
                        Some(w) => w.try_send(Job::Lead { batch, then }).map_err(|e| match e {
                            mpsc::error::TrySendError::Full(job)
                            | mpsc::error::TrySendError::Closed(job) => job,
                        }),
                        None => Err(Job::Lead { batch, then }),
                    };
                    match sent {
                        Ok(()) => return Some(rx),
                        Err(Job::Lead { batch: b, .. }) => {
                            // The writer cannot take it: wait and retry here, as it would.
                            batch = b;
                            commit_blocking(&mut lock(&self.conn), &mut batch);
                        }
                        Err(_) => unreachable!("a Lead job was sent"),
                    }
                }
                metrics::histogram!("haechi_audit_commit_events", "by" => "waiter")
                    .record(batch.len() as f64);
                committed(&mut batch);
                if self.commits.fetch_add(1, Ordering::Relaxed) % CHECKPOINT_EVERY
                    == CHECKPOINT_EVERY - 1
                {
                    if let Some(w) = lock(&self.writer).as_ref() {
                        let _ = w.try_send(Job::Checkpoint);
                    }
                }
            }
            match self.hand_on() {
                None => return None,
                Some(next) => batch = next,
            }
        }
    }

    /// After a commit: lets go of the lead when nothing is queued, or hands it to a waiter
    /// of the queue; `Some` (the queue) when none of them is left to take it.
    fn hand_on(&self) -> Option<Vec<Queued>> {
        let mut st = lock(&self.state);
        if st.checkpoint == Checkpoint::Wanted {
            st.checkpoint = Checkpoint::Held;
            self.handed.notify_one();
            return None;
        }
        if st.queue.is_empty() {
            st.leading = false;
            return None;
        }
        for q in st.queue.iter_mut() {
            if let Some(tx) = q.committed.take() {
                if tx.send(Signal::Lead).is_ok() {
                    return None;
                }
            }
        }
        Some(std::mem::take(&mut st.queue))
    }

    /// The writer thread's checkpoint (see [`Group`]); then it leads on like any leader.
    fn checkpoint(&self, conn: &mut Connection) {
        // Frames in the log, and left to copy, after a passive checkpoint (`None`: it failed).
        let passive =
            |conn: &Connection| match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(1)? - r.get::<_, i64>(2)?,
                ))
            }) {
                Ok(frames) => Some(frames),
                Err(e) => {
                    tracing::warn!("audit writer: checkpoint failed: {e}");
                    None
                }
            };
        // Beside the commits while each pass leaves less; readers of old snapshots can keep
        // frames from being copied, and then holding the lead would only make the commits
        // wait (the log starts over another time), unless it has grown past LOG_LIMIT.
        let mut frames: Option<(i64, i64)> = None;
        for _ in 0..PASSES {
            let before = frames.map(|(_, left)| left);
            frames = passive(conn);
            match (frames, before) {
                (None, _) => break,
                (Some((_, left)), _) if left <= FINISH_UNDER => break,
                (Some((_, left)), Some(before)) if left >= before => break,
                _ => {}
            }
        }
        match frames {
            Some((_, left)) if left <= FINISH_UNDER => {}
            Some((log, _)) if log > LOG_LIMIT => {}
            _ => return,
        }
        // SQLite syncs the database only in the pass that copies the whole log, so that one
        // would sync every page the passes above copied: sync them here, beside the commits
        // (an `fsync` of any descriptor of the file writes its pages), then copy (and sync the
        // log of) what was committed meanwhile, so the pass in the lead syncs only its own few.
        if let Some(file) = &self.db_file {
            match file.sync_all() {
                Ok(()) => drop(passive(conn)),
                Err(e) => tracing::debug!(
                    "audit writer: database file not synced before the checkpoint's end: {e}"
                ),
            }
        }
        {
            let mut st = lock(&self.state);
            if st.leading {
                st.checkpoint = Checkpoint::Wanted;
                let (got, _) = self
                    .handed
                    .wait_timeout_while(st, Duration::from_millis(20), |st| {
                        st.checkpoint != Checkpoint::Held
                    })
                    .unwrap_or_else(|e| e.into_inner());
                st = got;
                if st.checkpoint != Checkpoint::Held {
                    // Not handed over soon (the lead may be in this thread's own queue, a
                    // commit that could not be made where it was led): next time.
                    st.checkpoint = Checkpoint::None;
                    return;
                }
            } else {
                st.leading = true;
            }
            st.checkpoint = Checkpoint::None;
        }
        passive(conn);
        while let Some(mut next) = self.hand_on() {
            commit_blocking(conn, &mut next);
            committed(&mut next);
        }
    }

    /// Whether nothing is queued or being committed.
    fn idle(&self) -> bool {
        let st = lock(&self.state);
        !st.leading && st.queue.is_empty()
    }
}

impl Batcher {
    /// Starts the writer: on SQLite a thread of its own, on PostgreSQL a task on the current
    /// Tokio runtime. Strict on SQLite also commits on the waiters' threads ([`Group`]).
    pub fn start(store: Store, opts: BatcherOptions) -> Batcher {
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let inline = store.inline();
        let thread_conn = match inline.map(|i| i.writer()) {
            Some(Ok(conn)) => Some(conn),
            Some(Err(e)) => {
                tracing::warn!("audit writer connection not opened ({e}): appending from a task");
                None
            }
            None => None,
        };
        // HAECHI_AUDIT_GROUP_COMMIT=writer: strict commits on the writer thread only (to compare
        // the two in one build; bench/README.md).
        let on_waiters = std::env::var("HAECHI_AUDIT_GROUP_COMMIT").map_or(true, |v| v != "writer");
        let group_conn = match (inline, opts.durability, &thread_conn) {
            (Some(inline), Durability::Strict, Some(_)) if on_waiters => {
                match inline.writer().and_then(|c| {
                    c.busy_timeout(Duration::ZERO)
                        .and_then(|()| c.pragma_update(None, "wal_autocheckpoint", 0))
                        .map_err(|e| Error::unavailable(format!("audit group connection: {e}")))?;
                    Ok(c)
                }) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!("audit group commit not set up ({e}): the writer commits");
                        None
                    }
                }
            }
            _ => None,
        };
        let group = group_conn.map(|conn| {
            let db_file = conn.path().filter(|p| !p.is_empty()).and_then(|path| {
                std::fs::File::open(path)
                    .inspect_err(|e| {
                        tracing::debug!(
                            "audit writer: database file not opened for its checkpoints: {e}"
                        )
                    })
                    .ok()
            });
            Arc::new(Group {
                db_file,
                conn: Mutex::new(conn),
                state: Mutex::new(GroupState::default()),
                writer: Mutex::new(Some(tx.clone())),
                commits: AtomicU32::new(0),
                handed: Condvar::new(),
            })
        });
        let writer = match thread_conn {
            Some(conn) => {
                let thread_group = group.clone();
                match std::thread::Builder::new()
                    .name("haechi-audit-writer".into())
                    .spawn(move || write_thread(conn, rx, opts, thread_group))
                {
                    Ok(handle) => Writer::Thread(handle),
                    Err(e) => {
                        tracing::warn!(
                            "audit writer thread not started ({e}): appending from a task"
                        );
                        // The receiver went with the closure that could not run.
                        let (tx, rx) = mpsc::channel(opts.queue.max(1));
                        return Batcher {
                            sender: Mutex::new(Some(tx)),
                            writer: Mutex::new(Some(Writer::Task(tokio::spawn(write_loop(
                                store, rx, opts,
                            ))))),
                            durability: opts.durability,
                            group: None,
                        };
                    }
                }
            }
            None => Writer::Task(tokio::spawn(write_loop(store, rx, opts))),
        };
        Batcher {
            sender: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            durability: opts.durability,
            group,
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
        if let Some(group) = &self.group {
            let (done, rx) = oneshot::channel();
            let mut st = lock(&group.state);
            if st.closed {
                return Err(shutting_down());
            }
            st.queue.push(Queued {
                event,
                committed: Some(done),
            });
            return Ok(Pending {
                rx: Some(rx),
                group: Some(group.clone()),
            });
        }
        let sender = lock(&self.sender).clone().ok_or_else(shutting_down)?;
        let (done, pending) = match self.durability {
            Durability::Batched => (None, Pending::done()),
            Durability::Strict => {
                let (done, rx) = oneshot::channel();
                (
                    Some(done),
                    Pending {
                        rx: Some(rx),
                        group: None,
                    },
                )
            }
        };
        sender
            .send(Job::Event(Queued {
                event,
                committed: done,
            }))
            .await
            .map_err(|_| shutting_down())?;
        Ok(pending)
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Stops taking events and waits until every queued one is committed.
    pub async fn shutdown(&self) {
        if let Some(group) = &self.group {
            lock(&group.state).closed = true;
            // Commit what waiters queued and have not committed yet; wait for a commit in
            // flight (a waiter's, or the writer thread's) to end. A lead handed to a waiter
            // that never comes back to take it is not waited for long: its events are taken
            // here.
            let since = std::time::Instant::now();
            loop {
                if let Some(batch) = group.take_lead() {
                    drop(group.lead_with(batch));
                }
                if group.idle() {
                    break;
                }
                if since.elapsed() > Duration::from_secs(2) {
                    let mut batch = std::mem::take(&mut lock(&group.state).queue);
                    commit_blocking(&mut lock(&group.conn), &mut batch);
                    committed(&mut batch);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            lock(&group.writer).take();
        }
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

async fn write_loop(store: Store, mut rx: mpsc::Receiver<Job>, opts: BatcherOptions) {
    let mut batch: Vec<Queued> = Vec::with_capacity(opts.max_batch);
    let mut thens = Vec::new();
    // Where the chain ended after this writer's last commit (see `crate::append_after`).
    let mut head: Option<crate::Head> = None;
    while let Some(first) = rx.recv().await {
        take(first, &mut batch, &mut thens);
        drain(&mut rx, &mut batch, &mut thens, opts.max_batch);
        if thens.is_empty() && lingers(&batch, &opts) {
            tokio::time::sleep(opts.linger).await;
            drain(&mut rx, &mut batch, &mut thens, opts.max_batch);
        }
        if !batch.is_empty() {
            commit_with_retry(&store, &mut batch, &mut head).await;
        }
        for then in thens.drain(..) {
            let _ = then.send(Signal::Committed);
        }
    }
}

/// [`write_loop`] on a thread of its own with its own SQLite connection: the same batches,
/// lingering and retries, with the transaction run here instead of through sqlx's thread. It
/// also takes the group commits that could not be made where they were led (carrying on
/// leading after them).
fn write_thread(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    opts: BatcherOptions,
    group: Option<Arc<Group>>,
) {
    let mut batch: Vec<Queued> = Vec::with_capacity(opts.max_batch);
    let mut thens = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut checkpoint = take(first, &mut batch, &mut thens);
        checkpoint |= drain(&mut rx, &mut batch, &mut thens, opts.max_batch);
        if thens.is_empty() && lingers(&batch, &opts) {
            std::thread::sleep(opts.linger);
            checkpoint |= drain(&mut rx, &mut batch, &mut thens, opts.max_batch);
        }
        commit_blocking(&mut conn, &mut batch);
        committed(&mut batch);
        let led = !thens.is_empty();
        for then in thens.drain(..) {
            let _ = then.send(Signal::Committed);
        }
        if let (true, Some(group)) = (led, &group) {
            while let Some(mut next) = group.hand_on() {
                commit_blocking(&mut conn, &mut next);
                committed(&mut next);
            }
        }
        if let (true, Some(group)) = (checkpoint, &group) {
            group.checkpoint(&mut conn);
        }
    }
}

/// Commits `batch` on `conn`, waiting for SQLite's lock and retrying with back-off until it
/// commits: an audit event is never dropped silently.
fn commit_blocking(conn: &mut Connection, batch: &mut [Queued]) {
    if batch.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(50);
    loop {
        let events: Vec<&Event> = batch.iter().map(|q| &q.event).collect();
        match crate::blocking::append(conn, &events) {
            Ok(_) => {
                metrics::histogram!("haechi_audit_commit_events", "by" => "writer")
                    .record(batch.len() as f64);
                return;
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

/// Sorts one job into the batch and the waiters of led commits; `true` for a checkpoint.
fn take(job: Job, batch: &mut Vec<Queued>, thens: &mut Vec<oneshot::Sender<Signal>>) -> bool {
    match job {
        Job::Event(q) => batch.push(q),
        Job::Lead { batch: led, then } => {
            batch.extend(led);
            thens.push(then);
        }
        // Only a group asks for one; the writer thread runs it (`write_thread`).
        Job::Checkpoint => return true,
    }
    false
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
            let _ = done.send(Signal::Committed);
        }
    }
}

fn drain(
    rx: &mut mpsc::Receiver<Job>,
    batch: &mut Vec<Queued>,
    thens: &mut Vec<oneshot::Sender<Signal>>,
    max: usize,
) -> bool {
    let mut checkpoint = false;
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => checkpoint |= take(job, batch, thens),
            Err(_) => break,
        }
    }
    checkpoint
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
                metrics::histogram!("haechi_audit_commit_events", "by" => "writer")
                    .record(batch.len() as f64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::store;
    use crate::{Family, Filter};

    fn strict() -> BatcherOptions {
        BatcherOptions::default()
    }

    async fn events_of(store: &Store, action: &str) -> i64 {
        let f = Filter {
            action: Some(action.into()),
            ..Filter::default()
        };
        crate::count(store, &f).await.unwrap()
    }

    /// Strict on SQLite commits on the waiters' threads: many concurrent producers, every
    /// event committed once, in one unbroken chain, fewer commits than events.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_commits_every_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Arc::new(Batcher::start(store.clone(), strict()));
        assert!(b.group.is_some(), "strict on SQLite commits as a group");
        let mut tasks = Vec::new();
        for t in 0..8 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..150 {
                    b.record(
                        Event::new(Family::Admin, "group.test")
                            .detail(serde_json::json!({ "task": t, "i": i })),
                    )
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(events_of(&store, "group.test").await, 1200);
        let v = crate::verify(&store).await.unwrap();
        assert!(v.broken.is_none(), "{:?}", v.broken);
        assert_eq!(v.checked, 1200);
        let commits = b.group.as_ref().unwrap().commits.load(Ordering::Relaxed);
        assert!(commits > 0 && commits <= 1200, "{commits} commits");
        b.shutdown().await;
        assert!(b.record(Event::new(Family::Admin, "late")).await.is_err());
    }

    /// Under commits that never stop, the write-ahead log still starts over: the writer
    /// thread's checkpoints take the lead (without them it grew by ~20 KB a commit here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_starts_over_under_continuous_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Arc::new(Batcher::start(store.clone(), strict()));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..2500 {
                    b.record(Event::new(Family::Admin, "wal.test"))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let commits = b.group.as_ref().unwrap().commits.load(Ordering::Relaxed);
        assert!(commits > 3 * CHECKPOINT_EVERY, "{commits} commits");
        let wal = std::fs::metadata(dir.path().join("audit.db-wal"))
            .unwrap()
            .len();
        // Every commit rewrites four or five pages: without a restart the log would hold them all.
        let never_restarted = u64::from(commits) * 4 * 4096;
        assert!(
            wal < never_restarted / 2,
            "write-ahead log {wal} bytes after {commits} commits"
        );
        assert_eq!(events_of(&store, "wal.test").await, 10_000);
        assert!(crate::verify(&store).await.unwrap().broken.is_none());
        b.shutdown().await;
    }

    /// An event whose waiter goes away before waiting is still committed (the dropped waiter
    /// commits it when nobody else does); one queued behind it commits with it.
    #[tokio::test]
    async fn dropped_waiter_still_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Batcher::start(store.clone(), strict());
        let first = b
            .enqueue(Event::new(Family::Admin, "dropped"))
            .await
            .unwrap();
        let second = b.enqueue(Event::new(Family::Admin, "kept")).await.unwrap();
        drop(first);
        assert_eq!(events_of(&store, "dropped").await, 1);
        second.committed().await.unwrap();
        assert_eq!(events_of(&store, "kept").await, 1);
        b.shutdown().await;
    }

    /// While another writer holds SQLite's write lock, the group commit goes to the writer
    /// thread, which waits for the lock; the answer comes once the event is committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_waits_for_another_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Arc::new(Batcher::start(store.clone(), strict()));
        let mut other = store.inline().unwrap().writer().unwrap();
        let tx = other
            .transaction_with_behavior(
                haechi_store::inline::rusqlite::TransactionBehavior::Immediate,
            )
            .unwrap();
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.record(Event::new(Family::Admin, "behind.lock")).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiting.is_finished(),
            "answered while the lock was held elsewhere"
        );
        tx.commit().unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(events_of(&store, "behind.lock").await, 1);
        // And the group leads again after the writer thread led.
        b.record(Event::new(Family::Admin, "after.lock"))
            .await
            .unwrap();
        assert_eq!(events_of(&store, "after.lock").await, 1);
        b.shutdown().await;
    }

    /// Shutdown commits what is queued and not yet waited for, and its waiter is told.
    #[tokio::test]
    async fn shutdown_commits_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Batcher::start(store.clone(), strict());
        let p = b
            .enqueue(Event::new(Family::Admin, "queued"))
            .await
            .unwrap();
        b.shutdown().await;
        p.committed().await.unwrap();
        assert_eq!(events_of(&store, "queued").await, 1);
    }

    /// Batched mode on SQLite keeps the writer thread and no group.
    #[tokio::test]
    async fn batched_uses_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Batcher::start(
            store.clone(),
            BatcherOptions {
                durability: Durability::Batched,
                ..BatcherOptions::default()
            },
        );
        assert!(b.group.is_none());
        for _ in 0..10 {
            b.record(Event::new(Family::Admin, "batched"))
                .await
                .unwrap();
        }
        b.shutdown().await;
        assert_eq!(events_of(&store, "batched").await, 10);
    }
}
