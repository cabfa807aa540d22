//! Batched appends for high-rate events (vault value reads, statements through the gateway).
//!
//! Producers hand events to [`Batcher::record`]; one writer appends whatever is queued in one
//! transaction, so every event still becomes a link of the one hash chain, in the order it was
//! queued. With [`Durability::Strict`] (the default, setting `audit.durability`) `record`
//! returns only once the event is durable, so an answer sent after it can never outlive a crash
//! without its event; with [`Durability::Batched`] it returns as soon as the event is queued and
//! the event commits a few milliseconds later (a crash in between loses it).
//!
//! Strict on SQLite (with a spool name, [`BatcherOptions::spool`]) writes the event to an
//! append-only spool beside the database before its answer leaves (`crate::spool`): that is as
//! durable as a commit there (`synchronous = NORMAL`), and the writer commits the event a few
//! milliseconds later like a batched one. `enqueue` appends the record and the first
//! [`Pending::committed`] that finds it unwritten writes all that is appended with one `write`:
//! the events of statements finishing together, enqueued before any is waited for, share it. Strict without a spool (PostgreSQL, an
//! in-memory database, a spool that could not be written) waits for the writer's commit; the
//! writer never lingers while someone waits, so those waiting at the same moment share one
//! transaction. The queue is bounded: when the store cannot keep up, producers wait
//! (back-pressure) rather than events being dropped. A batch that fails to commit is retried
//! until it commits; at shutdown the writer drains the queue before [`Batcher::shutdown`]
//! returns. Readers of the log call [`settle`] first, so what was answered is what they read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use haechi_store::inline::rusqlite::Connection;
use haechi_store::Store;
use haechi_types::{time, Error, Result};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::spool::Spool;
use crate::{Detail, Event};

/// When an answer may leave the server relative to its audit event (CONTRACT §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The event is durable before [`Batcher::record`] returns.
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
    /// `max_batch / 8` are queued (trades a little latency for fewer transactions under load).
    /// Never while a producer waits for its event's commit.
    pub linger: Duration,
    pub durability: Durability,
    /// The name of this batcher's spool (`<database>-audit-<name>.spool`), unique among the
    /// batchers of one database. With it, strict on SQLite spools (see the module), and a
    /// spool left by a crash is appended at start whatever the durability. `None`: no spool.
    pub spool: Option<&'static str>,
}

impl Default for BatcherOptions {
    fn default() -> Self {
        BatcherOptions {
            max_batch: 2048,
            queue: 16_384,
            linger: Duration::from_millis(5),
            durability: Durability::default(),
            spool: None,
        }
    }
}

fn shutting_down() -> Error {
    Error::unavailable("the server is shutting down")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An event queued by [`Batcher::enqueue`].
#[must_use = "under strict durability the event is durable only once `committed` returns"]
pub struct Pending(Waiting);

enum Waiting {
    /// Durable already (or batched: nothing to wait for).
    Nothing,
    /// Told when the event is committed (strict without a spool).
    Commit(oneshot::Receiver<()>),
    /// Appended to the spool as record `n`, written by the first `committed` that finds it
    /// unwritten (so the events of statements finishing together take one `write`); the
    /// queue, to wait for the commit should that write fail.
    Spool {
        spool: Arc<Mutex<SpoolState>>,
        n: u64,
        queue: mpsc::Sender<Job>,
    },
}

impl Pending {
    fn done() -> Pending {
        Pending(Waiting::Nothing)
    }

    /// Returns once the event is durable ([`Durability::Strict`]: written to the spool, or
    /// committed), at once when the batcher is [`Durability::Batched`].
    pub async fn committed(self) -> Result<()> {
        match self.0 {
            Waiting::Nothing => Ok(()),
            Waiting::Commit(rx) => rx.await.map_err(|_| shutting_down()),
            Waiting::Spool { spool, n, queue } => {
                if lock(&spool).flush_through(n) {
                    return Ok(());
                }
                // Not written (the spool broke): it was queued before this settle, so it is
                // committed when the settle is answered.
                let (tx, rx) = oneshot::channel();
                queue
                    .send(Job::Settle(tx))
                    .await
                    .map_err(|_| shutting_down())?;
                rx.await.map_err(|_| shutting_down())
            }
        }
    }
}

/// An event in the queue, and who waits for its commit.
struct Queued {
    event: Event,
    committed: Option<oneshot::Sender<()>>,
    /// Its number in the spool, when it was spooled.
    spooled: Option<u64>,
}

/// What the writer (thread or task) is given.
enum Job {
    /// An event to append with the next batch.
    Event(Queued),
    /// Commit what is queued before this, then answer ([`settle`]).
    Settle(oneshot::Sender<()>),
}

/// A batched audit appender. One per engine that needs it; cheap to share behind an `Arc`.
pub struct Batcher {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<Writer>>,
    durability: Durability,
    /// Strict on SQLite: the spool every event is written to before `enqueue` returns.
    spool: Option<Arc<Mutex<SpoolState>>>,
}

/// The spool and whether it still takes events.
struct SpoolState {
    spool: Spool,
    /// A write failed: strict answers wait for the commit instead, until the next start.
    broken: bool,
}

/// Appended records past this many bytes are written at once, whoever waits for them.
const UNWRITTEN_MAX: usize = 64 * 1024;

impl SpoolState {
    /// Writes what is appended when record `n` is not written yet; whether `n` is in the file.
    fn flush_through(&mut self, n: u64) -> bool {
        if self.spool.written() >= n {
            return true;
        }
        if !self.broken {
            self.flush();
        }
        self.spool.written() >= n
    }

    /// Writes what is appended; a failure breaks the spool (see [`Spool::flush`]).
    fn flush(&mut self) {
        if let Err(e) = self.spool.flush() {
            self.broken = true;
            tracing::error!(
                "audit spool {} not written ({e}): strict answers wait for the store's commit \
                 until the next start",
                self.spool.path().display()
            );
        }
    }
}

/// Where the writer runs: a thread of its own with its own connection on SQLite (see
/// `crate::blocking`), a task on PostgreSQL (whose round trips are network ones anyway).
enum Writer {
    Task(JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

/// The queues of the batchers with a spool, for [`settle`].
static SPOOLED: Mutex<Vec<mpsc::WeakSender<Job>>> = Mutex::new(Vec::new());

/// Waits until every event spooled so far (by any batcher of this process) is committed to its
/// store: the log's readers ([`crate::page`], [`crate::count`], [`crate::verify`], ...) call it
/// first, so an event whose answer has left is one they read (within [`SETTLE_WAIT`]). Cheap
/// when nothing spools; otherwise a round trip to each writer, which may be lingering (the
/// gateway's up to 20 ms).
pub async fn settle() {
    let senders: Vec<mpsc::Sender<Job>> = {
        let mut spooled = lock(&SPOOLED);
        spooled.retain(|w| w.strong_count() > 0);
        spooled
            .iter()
            .filter_map(mpsc::WeakSender::upgrade)
            .collect()
    };
    let all = async {
        for sender in senders {
            let (tx, rx) = oneshot::channel();
            if sender.send(Job::Settle(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
    };
    if tokio::time::timeout(SETTLE_WAIT, all).await.is_err() {
        tracing::warn!(
            "the audit log is read without the events spooled in the last {SETTLE_WAIT:?}: \
             the writer has not committed them (it retries until the store takes them)"
        );
    }
}

/// How long [`settle`] waits at most: a store that refuses writes (a full disk) keeps the
/// writer retrying, and the log's readers then read what is committed rather than hang.
const SETTLE_WAIT: Duration = Duration::from_secs(5);

impl Batcher {
    /// Starts the writer: on SQLite a thread of its own (after appending what its spool holds
    /// from before), on PostgreSQL a task on the current Tokio runtime.
    pub fn start(store: Store, opts: BatcherOptions) -> Batcher {
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let mut thread_conn = match store.inline().map(|i| i.writer()) {
            Some(Ok(conn)) => Some(conn),
            Some(Err(e)) => {
                tracing::warn!("audit writer connection not opened ({e}): appending from a task");
                None
            }
            None => None,
        };
        let spool = match (&mut thread_conn, opts.spool) {
            (Some(conn), Some(name)) => match Spool::open(conn, name) {
                Ok(Some(spool)) if opts.durability == Durability::Strict => Some(spool),
                Ok(_) => None,
                Err(e) => {
                    tracing::error!(
                        "audit spool {name} not opened ({e}): strict answers wait for the \
                         store's commit"
                    );
                    None
                }
            },
            _ => None,
        };
        let spool = spool.map(|spool| {
            Arc::new(Mutex::new(SpoolState {
                spool,
                broken: false,
            }))
        });
        if spool.is_some() {
            lock(&SPOOLED).push(tx.downgrade());
        }
        let writer = match thread_conn {
            Some(conn) => {
                let thread_spool = spool.clone();
                let name = opts.spool.unwrap_or_default();
                match std::thread::Builder::new()
                    .name("haechi-audit-writer".into())
                    .spawn(move || write_thread(conn, rx, opts, name, thread_spool))
                {
                    Ok(handle) => Writer::Thread(handle),
                    Err(e) => {
                        // The receiver went with the closure that could not run: without a
                        // writer thread nothing would commit what is spooled, so no spool.
                        tracing::warn!(
                            "audit writer thread not started ({e}): appending from a task"
                        );
                        let (tx, rx) = mpsc::channel(opts.queue.max(1));
                        return Batcher {
                            sender: Mutex::new(Some(tx)),
                            writer: Mutex::new(Some(Writer::Task(tokio::spawn(write_loop(
                                store, rx, opts,
                            ))))),
                            durability: opts.durability,
                            spool: None,
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
            spool,
        }
    }

    /// Queues `event` (waiting while the queue is full) and, under [`Durability::Strict`],
    /// waits until it is durable. Fails once shutdown has begun.
    pub async fn record(&self, event: Event) -> Result<()> {
        self.enqueue(event).await?.committed().await
    }

    /// Queues `event` (waiting while the queue is full); the answer says when it is durable as
    /// [`Batcher::record`] would have. Under strict with a spool it is durable already.
    pub async fn enqueue(&self, mut event: Event) -> Result<Pending> {
        let sender = lock(&self.sender).clone().ok_or_else(shutting_down)?;
        if self.durability == Durability::Batched {
            sender
                .send(Job::Event(Queued {
                    event,
                    committed: None,
                    spooled: None,
                }))
                .await
                .map_err(|_| shutting_down())?;
            return Ok(Pending::done());
        }
        let permit = sender.reserve().await.map_err(|_| shutting_down())?;
        if let Some(spool) = &self.spool {
            // The detail as it will be stored (the origin folded in), written once here and
            // kept for the commit.
            let detail = event.detail.to_json_with(event.origin.as_deref())?;
            let mut st = lock(spool);
            if st.spool.unwritten() > UNWRITTEN_MAX {
                st.flush();
            }
            if !st.broken {
                match st.spool.append(&event, &detail, time::now_ms()) {
                    Ok(n) => {
                        event.detail = Detail::Json(detail);
                        event.origin = None;
                        // Sent while the spool is held: the queue's order is the spool's.
                        permit.send(Job::Event(Queued {
                            event,
                            committed: None,
                            spooled: Some(n),
                        }));
                        return Ok(Pending(Waiting::Spool {
                            spool: spool.clone(),
                            n,
                            queue: sender,
                        }));
                    }
                    Err(e) => {
                        // This event only (a field too large to spool): it waits for its commit.
                        tracing::warn!("audit event not spooled ({e}): waiting for its commit");
                    }
                }
            }
        }
        let (done, rx) = oneshot::channel();
        permit.send(Job::Event(Queued {
            event,
            committed: Some(done),
            spooled: None,
        }));
        Ok(Pending(Waiting::Commit(rx)))
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Whether strict answers are spooled (see the module).
    #[cfg(test)]
    fn spools(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !lock(s).broken)
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

async fn write_loop(store: Store, mut rx: mpsc::Receiver<Job>, opts: BatcherOptions) {
    let mut batch: Vec<Queued> = Vec::with_capacity(opts.max_batch);
    let mut settles = Vec::new();
    // Where the chain ended after this writer's last commit (see `crate::append_after`).
    let mut head: Option<crate::Head> = None;
    while let Some(first) = rx.recv().await {
        take(first, &mut batch, &mut settles);
        drain(&mut rx, &mut batch, &mut settles, opts.max_batch);
        if settles.is_empty() && lingers(&batch, &opts) {
            tokio::time::sleep(opts.linger).await;
            drain(&mut rx, &mut batch, &mut settles, opts.max_batch);
        }
        if !batch.is_empty() {
            commit_with_retry(&store, &mut batch, &mut head).await;
        }
        for settled in settles.drain(..) {
            let _ = settled.send(());
        }
    }
}

/// [`write_loop`] on a thread of its own with its own SQLite connection: the same batches,
/// lingering and retries, with the transaction run here instead of through sqlx's thread, and
/// the spool's applied number moved with the events of it.
fn write_thread(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    opts: BatcherOptions,
    name: &'static str,
    spool: Option<Arc<Mutex<SpoolState>>>,
) {
    let mut batch: Vec<Queued> = Vec::with_capacity(opts.max_batch);
    let mut settles = Vec::new();
    // The highest spool number committed (at the start: all the spool holds).
    let mut applied_so_far = spool.as_ref().map_or(0, |s| lock(s).spool.last());
    while let Some(first) = rx.blocking_recv() {
        take(first, &mut batch, &mut settles);
        drain(&mut rx, &mut batch, &mut settles, opts.max_batch);
        if settles.is_empty() && lingers(&batch, &opts) {
            std::thread::sleep(opts.linger);
            drain(&mut rx, &mut batch, &mut settles, opts.max_batch);
        }
        let applied = batch.iter().filter_map(|q| q.spooled).max();
        commit_blocking(&mut conn, &mut batch, applied.map(|n| (name, n)));
        committed(&mut batch);
        if let (Some(applied), Some(spool)) = (applied, &spool) {
            applied_so_far = applied;
            remove_segments(lock(spool).spool.release(applied));
        }
        for settled in settles.drain(..) {
            let _ = settled.send(());
        }
    }
    // A clean stop: nothing of the spool is left for the next start to read.
    if let Some(spool) = &spool {
        remove_segments(lock(spool).spool.finish(applied_so_far));
    }
}

fn remove_segments(paths: Vec<std::path::PathBuf>) {
    for path in paths {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("audit spool segment {} not removed: {e}", path.display());
        }
    }
}

/// Commits `batch` on `conn` (with the spool's applied number when it holds spooled events),
/// waiting for SQLite's lock and retrying with back-off until it commits: an audit event is
/// never dropped silently.
fn commit_blocking(conn: &mut Connection, batch: &mut [Queued], spooled: Option<(&str, u64)>) {
    if batch.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(50);
    loop {
        let events: Vec<&Event> = batch.iter().map(|q| &q.event).collect();
        match crate::blocking::append_spooled(conn, &events, None, spooled) {
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

/// Sorts one job into the batch or the settles waiting for it.
fn take(job: Job, batch: &mut Vec<Queued>, settles: &mut Vec<oneshot::Sender<()>>) {
    match job {
        Job::Event(q) => batch.push(q),
        Job::Settle(tx) => settles.push(tx),
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

fn drain(
    rx: &mut mpsc::Receiver<Job>,
    batch: &mut Vec<Queued>,
    settles: &mut Vec<oneshot::Sender<()>>,
    max: usize,
) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => take(job, batch, settles),
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

    /// The spool segments of the test batcher in `dir`, and their bytes in all.
    fn spooled(dir: &std::path::Path) -> (usize, u64) {
        let mut n = 0;
        let mut bytes = 0;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("audit.db-audit-test.spool.")
            {
                n += 1;
                bytes += e.metadata().unwrap().len();
            }
        }
        (n, bytes)
    }

    fn strict() -> BatcherOptions {
        BatcherOptions {
            spool: Some("test"),
            ..BatcherOptions::default()
        }
    }

    /// Events of `action` in the store now, read directly (no settle first).
    fn committed_now(store: &Store, action: &str) -> i64 {
        let direct = store.inline().unwrap().writer().unwrap();
        direct
            .query_row(
                "SELECT COUNT(*) FROM audit_events WHERE action = ?1",
                [action],
                |r| r.get(0),
            )
            .unwrap()
    }

    async fn events_of(store: &Store, action: &str) -> i64 {
        let f = Filter {
            action: Some(action.into()),
            ..Filter::default()
        };
        crate::count(store, &f).await.unwrap()
    }

    /// Strict on SQLite spools: many concurrent producers, every event committed once, in one
    /// unbroken chain, and a reader that comes right after an answer reads its event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn strict_spools_and_commits_every_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Arc::new(Batcher::start(store.clone(), strict()));
        assert!(b.spools(), "strict on SQLite spools");
        assert_eq!(spooled(dir.path()), (1, 0), "one empty segment");
        {
            use std::os::unix::fs::PermissionsExt;
            let segment = dir.path().join("audit.db-audit-test.spool.1");
            let mode = std::fs::metadata(segment).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the owner's only");
        }
        b.record(Event::new(Family::Admin, "first")).await.unwrap();
        assert_eq!(events_of(&store, "first").await, 1, "read right after");
        let mut tasks = Vec::new();
        for t in 0..8 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..150 {
                    b.record(
                        Event::new(Family::Admin, "spool.test")
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
        assert_eq!(events_of(&store, "spool.test").await, 1200);
        let v = crate::verify(&store).await.unwrap();
        assert!(v.broken.is_none(), "{:?}", v.broken);
        assert_eq!(v.checked, 1201);
        b.shutdown().await;
        assert_eq!(
            spooled(dir.path()),
            (0, 0),
            "a clean stop leaves nothing for the next start to read"
        );
        assert!(b.record(Event::new(Family::Admin, "late")).await.is_err());
    }

    /// What a killed server left in its spool is appended at the next start, with the times
    /// the events were answered at, once: the records already committed are not appended again.
    #[tokio::test]
    async fn a_spool_left_by_a_crash_is_appended_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let inline = store.inline().unwrap();
        {
            let mut conn = inline.writer().unwrap();
            let mut spool = Spool::open(&mut conn, "test").unwrap().unwrap();
            let events: Vec<Event> = (0..5)
                .map(|i| {
                    Event::new(Family::Gateway, "crashed")
                        .detail(serde_json::json!({ "i": i }))
                        .with_origin(&crate::Origin::Workflow {
                            execution: "EXEC_1".into(),
                        })
                })
                .collect();
            for (i, e) in events.iter().enumerate() {
                let detail = e.detail.to_json_with(e.origin.as_deref()).unwrap();
                spool.write(e, &detail, 1_000 + i as i64).unwrap();
            }
            // The writer committed the first two (and said so) before the kill.
            let first: Vec<&Event> = events[..2].iter().collect();
            crate::blocking::append_spooled(&mut conn, &first, None, Some(("test", 2))).unwrap();
        }
        let b = Batcher::start(store.clone(), strict());
        let f = Filter {
            action: Some("crashed".into()),
            limit: 100,
            ..Filter::default()
        };
        let stored = crate::page(&store, &f).await.unwrap();
        assert_eq!(stored.len(), 5, "the two committed and the three spooled");
        let mut recovered: Vec<i64> = stored
            .iter()
            .map(|e| e.at)
            .filter(|at| *at < 2_000)
            .collect();
        recovered.sort_unstable();
        assert_eq!(recovered, [1_002, 1_003, 1_004], "spooled times kept");
        assert!(stored.iter().all(|e| e.detail.contains("workflow:EXEC_1")));
        assert!(crate::verify(&store).await.unwrap().broken.is_none());
        assert_eq!(spooled(dir.path()), (1, 0), "recovered segments removed");
        b.record(Event::new(Family::Gateway, "after"))
            .await
            .unwrap();
        b.shutdown().await;
        // Numbers go on after the recovered ones; nothing is appended twice at the next start.
        let b = Batcher::start(store.clone(), strict());
        assert_eq!(events_of(&store, "crashed").await, 5);
        assert_eq!(events_of(&store, "after").await, 1);
        b.shutdown().await;
    }

    /// A batched server started on a strict one's spool still appends it, once.
    #[tokio::test]
    async fn a_spool_is_recovered_whatever_the_durability() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let write = |action: &str| {
            let mut conn = store.inline().unwrap().writer().unwrap();
            let mut spool = Spool::open(&mut conn, "test").unwrap().unwrap();
            let e = Event::new(Family::Vault, action);
            spool.write(&e, "{}", 7).unwrap();
        };
        write("left.once");
        let b = Batcher::start(
            store.clone(),
            BatcherOptions {
                durability: Durability::Batched,
                ..strict()
            },
        );
        assert!(!b.spools());
        assert_eq!(events_of(&store, "left.once").await, 1);
        b.shutdown().await;
        write("left.again");
        for _ in 0..2 {
            Batcher::start(store.clone(), strict()).shutdown().await;
        }
        assert_eq!(events_of(&store, "left.once").await, 1);
        assert_eq!(events_of(&store, "left.again").await, 1);
    }

    /// Under events that never stop, the spool stays small: full segments are closed and
    /// removed once the writer has committed them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_segments_are_removed_under_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Batcher::start(store.clone(), strict());
        let pad = "x".repeat(1000);
        let mut largest = 0;
        for i in 0..12_000 {
            b.record(
                Event::new(Family::Admin, "grow").detail(serde_json::json!({ "i": i, "pad": pad })),
            )
            .await
            .unwrap();
            if i % 100 == 0 {
                largest = largest.max(spooled(dir.path()).1);
            }
        }
        // About 13 MB went through the spool; it never held more than a few segments.
        let written = 12_000 * 1_000;
        assert!(largest < written / 2, "{largest} bytes spooled at once");
        settle().await;
        b.shutdown().await;
        let (segments, _) = spooled(dir.path());
        assert!(segments <= 2, "{segments} segments left");
        assert_eq!(events_of(&store, "grow").await, 12_000);
        assert!(crate::verify(&store).await.unwrap().broken.is_none());
    }

    /// A spool that cannot be written: strict answers wait for the commit instead.
    #[tokio::test]
    async fn a_broken_spool_falls_back_to_waiting_for_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Batcher::start(store.clone(), strict());
        lock(b.spool.as_ref().unwrap()).broken = true;
        assert!(!b.spools());
        let p = b
            .enqueue(Event::new(Family::Admin, "waited"))
            .await
            .unwrap();
        assert!(
            matches!(p.0, Waiting::Commit(_)),
            "nothing made it durable yet"
        );
        p.committed().await.unwrap();
        assert_eq!(
            committed_now(&store, "waited"),
            1,
            "committed when the wait ended"
        );
        b.shutdown().await;
    }

    /// Without a spool (as on PostgreSQL), strict waits for the commit.
    #[tokio::test]
    async fn strict_without_a_spool_waits_for_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Batcher::start(store.clone(), BatcherOptions::default());
        assert!(!b.spools());
        let p = b
            .enqueue(Event::new(Family::Admin, "no.spool"))
            .await
            .unwrap();
        assert!(matches!(p.0, Waiting::Commit(_)));
        p.committed().await.unwrap();
        b.shutdown().await;
        assert_eq!(events_of(&store, "no.spool").await, 1);
    }

    /// Events queued together (statements finishing in one read) are written to the spool
    /// with one `write`, by the first wait; a write that fails then (a full disk) breaks the
    /// spool, and the waits for what it held end with their commit instead.
    #[tokio::test]
    async fn events_queued_together_take_one_write_and_a_failed_one_waits_for_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Batcher::start(store.clone(), strict());
        let before = spooled(dir.path()).1;
        let first = b
            .enqueue(Event::new(Family::Gateway, "together"))
            .await
            .unwrap();
        let second = b
            .enqueue(Event::new(Family::Gateway, "together"))
            .await
            .unwrap();
        assert_eq!(spooled(dir.path()).1, before, "appended, not written yet");
        first.committed().await.unwrap();
        let after = spooled(dir.path()).1;
        assert!(after > before, "written by the first wait");
        second.committed().await.unwrap();
        assert_eq!(spooled(dir.path()).1, after, "the first wait wrote both");

        lock(b.spool.as_ref().unwrap()).spool.fail_writes();
        let full = b
            .enqueue(Event::new(Family::Gateway, "disk.full"))
            .await
            .unwrap();
        full.committed().await.unwrap();
        assert!(!b.spools(), "a failed write breaks the spool");
        assert_eq!(
            committed_now(&store, "disk.full"),
            1,
            "committed when the wait ended"
        );
        let next = b
            .enqueue(Event::new(Family::Gateway, "after.full"))
            .await
            .unwrap();
        assert!(matches!(next.0, Waiting::Commit(_)));
        next.committed().await.unwrap();
        b.shutdown().await;
        assert_eq!(events_of(&store, "together").await, 2);
        assert_eq!(events_of(&store, "after.full").await, 1);
    }

    /// Shutdown commits what is queued and not yet waited for, and its waiter is told.
    #[tokio::test]
    async fn shutdown_commits_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Batcher::start(store.clone(), BatcherOptions::default());
        let p = b
            .enqueue(Event::new(Family::Admin, "queued"))
            .await
            .unwrap();
        b.shutdown().await;
        p.committed().await.unwrap();
        assert_eq!(events_of(&store, "queued").await, 1);
    }

    /// Batched mode on SQLite keeps the writer thread and no spool.
    #[tokio::test]
    async fn batched_does_not_spool() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let b = Batcher::start(
            store.clone(),
            BatcherOptions {
                durability: Durability::Batched,
                ..strict()
            },
        );
        assert!(b.spool.is_none());
        for _ in 0..10 {
            b.record(Event::new(Family::Admin, "batched"))
                .await
                .unwrap();
        }
        b.shutdown().await;
        assert_eq!(events_of(&store, "batched").await, 10);
    }
}
