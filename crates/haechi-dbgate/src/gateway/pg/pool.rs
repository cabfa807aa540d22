//! Statement pooling: while a session has sent only session-neutral statements (plain queries
//! that neither change nor read the session's own state, see
//! [`crate::classify::Classification::session_neutral`]), its statements run on a few backend
//! connections it shares with the other sessions of the same account, target and startup
//! parameters on its session thread, pipelined one after another into each connection.
//! PostgreSQL then reads several statements per wake-up instead of one, which is where a
//! gateway in front of it gets its throughput back.
//!
//! Each session still logs in its own backend at login and keeps it in reserve, untouched. At
//! its first statement that is not session-neutral (a `SET`, a transaction, DML, the extended
//! protocol, a refusal, ...) the session waits for its pooled statements to finish and then
//! continues on that reserve for good (it is *pinned*): a fresh connection that has seen only
//! what a fresh connection sees, so the session's semantics are those of a direct one.
//!
//! Responses come back in the order the statements were written, so the reader hands each
//! one to the session at the head of the queue. A session's statements in flight are all on
//! one connection, so its own answers never overtake each other. A connection whose head
//! statement has run for [`STALL`] takes no more statements (a long query holds up only the
//! few queued behind it before it was seen to be long).
//!
//! A cancel request for a pooled session retires its connection (nothing more is written to
//! it) and sends the cancel to it. The statements of other sessions already queued behind may
//! be hit by that cancel instead, should the canceled one end just before it lands: such a
//! statement that failed with "canceling statement due to user request" before any of its
//! answer went out is run again on another connection (it is a plain query, so running it
//! again is the same as running it a moment later). When no connection can take it at once
//! (the others busy, idle-closed or still opening) it waits up to [`RERUN_WAIT`] for one, and
//! only then fails with that cancel.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Notify};

use super::backend;
use super::protocol as p;
use super::shared::{self, Unit};
use super::BackendKey;
use crate::error::BackendError;
use crate::gateway::{Auditor, BoxIo};
use crate::targets::Target;
use crate::DbGateConfig;

/// A connection whose head statement has run this long takes no more statements.
pub const STALL: Duration = Duration::from_millis(20);
/// How long a session's statement waits in all for a pooled connection that can take it
/// before the session pins (it waits only while statements finish or connections open).
const QUEUE_WAIT: Duration = Duration::from_millis(250);
/// How long a statement that another session's cancel hit waits for a connection to run
/// again on (one may have to open) before it fails with that cancel after all.
const RERUN_WAIT: Duration = Duration::from_secs(2);
/// Statements in flight on one connection at most.
const DEPTH: usize = 16;
/// A statement joins a connection that is already busy, rather than an idle one, when those
/// ahead of it there should be answered within this (their number times the pool's usual
/// statement time): fast statements then queue up on few connections, which the database
/// reads several at a wake-up, instead of spreading one by one over many.
const PIPELINE_WAIT: Duration = Duration::from_micros(500);
/// A client that takes no bytes of its answer for this long is cut off (it would hold up the
/// statements of others queued behind its own).
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a statement's answer kept back before any of it goes to the client (see
/// `read_loop`).
const HOLD_BACK: usize = 16 * 1024;

/// What sessions share a pool: the same database login with the same startup parameters, on
/// the same session thread.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    target: i64,
    host: String,
    port: u16,
    socket: Option<String>,
    database: String,
    account: String,
    params: Vec<(String, String)>,
    thread: std::thread::ThreadId,
}

/// Every pool of the gateway.
#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    /// The pool for `account` on `target` with `params` on this thread, made on first use.
    /// `password` (the vault's current one) is what the pool logs in with from now on; the
    /// pool's size, connect timeout and idle time come from `config` when the pool is made.
    pub fn get(
        &self,
        target: &Target,
        account: &str,
        params: &[(String, String)],
        password: &SecretString,
        config: &DbGateConfig,
    ) -> Arc<Pool> {
        let key = PoolKey {
            target: target.id,
            host: target.host.clone(),
            port: target.port,
            socket: target.socket.clone(),
            database: target.database.clone(),
            account: account.to_owned(),
            params: params.to_vec(),
            thread: std::thread::current().id(),
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let pool = map
            .entry(key)
            .or_insert_with(|| Arc::new(Pool::new(target, account, params, password, config)))
            .clone();
        *pool.password.lock().unwrap_or_else(|e| e.into_inner()) = password.clone();
        pool
    }
}

/// Backend connections shared by sessions (see the module documentation).
pub struct Pool {
    target: Target,
    account: String,
    params: Vec<(String, String)>,
    /// The account's password as of the newest login into this pool.
    password: Mutex<SecretString>,
    size: usize,
    timeout: Duration,
    /// A connection with nothing to do for this long is closed (the pool opens another when
    /// it is needed).
    idle: Duration,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Connections being opened.
    opening: AtomicUsize,
    /// Notified when a statement finishes or a connection opens.
    freed: Notify,
    epoch: Instant,
    /// How long a statement usually takes at the head of its connection, in microseconds (a
    /// moving average; 0 until one has finished): what [`Pool::pick`] expects a busy
    /// connection's queue to take.
    service_us: AtomicU64,
}

/// One pooled backend connection: the sender to its writer task and what both its tasks share.
pub struct Conn {
    jobs: mpsc::UnboundedSender<Job>,
    shared: Arc<Shared>,
}

struct Shared {
    /// Statements written and not yet answered, oldest first.
    queue: Mutex<VecDeque<Job>>,
    depth: AtomicUsize,
    /// Microseconds since the pool's epoch at which the head statement started; 0 = idle.
    head_since: AtomicU64,
    /// Takes no more statements (a cancel was sent to it, or it is closing).
    retired: AtomicBool,
    /// Its socket failed or closed.
    dead: AtomicBool,
    /// The client a cancel was sent for (0: none).
    cancelled_for: AtomicU64,
    key: BackendKey,
}

/// A pooled session's side: where its answers go and what it has in flight.
pub struct Client {
    id: u64,
    pool: Arc<Pool>,
    writer: tokio::sync::Mutex<Option<WriteHalf<BoxIo>>>,
    auditor: Auditor,
    inflight: AtomicUsize,
    idle: Notify,
    /// The connection its statements in flight are on.
    sticky: Mutex<Weak<Conn>>,
    /// Its socket failed or it stopped taking its answers.
    dead: AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("pool::Client")
            .field("id", &self.id)
            .finish()
    }
}

/// One statement string of a pooled session.
pub struct Job {
    /// The `Query` message as the client sent it.
    pub msg: Bytes,
    pub unit: Box<Unit>,
    client: Arc<Client>,
    /// Some of its answer went to the client already.
    forwarded: bool,
    /// Run again after another session's cancel hit it.
    retried: bool,
}

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

impl Pool {
    /// An empty pool for `account` on `target` with `params`, sized and timed by `config`.
    fn new(
        target: &Target,
        account: &str,
        params: &[(String, String)],
        password: &SecretString,
        config: &DbGateConfig,
    ) -> Pool {
        Pool {
            target: target.clone(),
            account: account.to_owned(),
            params: params.to_vec(),
            password: Mutex::new(password.clone()),
            size: config.pg_pool_size.max(1),
            timeout: config.backend_connect_timeout,
            idle: config.pg_pool_idle,
            conns: Mutex::new(Vec::new()),
            opening: AtomicUsize::new(0),
            freed: Notify::new(),
            epoch: Instant::now(),
            service_us: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// Opens the first connection if there is none (so a session's first statement finds one);
    /// logins that arrive together wait for the one that is opening it.
    pub async fn ensure_open(self: &Arc<Self>) -> Result<(), BackendError> {
        loop {
            if !self.usable().is_empty() {
                return Ok(());
            }
            let opened = self.freed.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self
                .opening
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let r = self.open().await;
                self.opening.fetch_sub(1, Ordering::SeqCst);
                self.freed.notify_waiters();
                return r;
            }
            if tokio::time::timeout(self.timeout, opened).await.is_err() {
                return Err(BackendError::Timeout {
                    step: "opening a pooled connection".into(),
                });
            }
        }
    }

    fn usable(&self) -> Vec<Arc<Conn>> {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|c| c.usable())
            .cloned()
            .collect()
    }

    /// Logs a new connection in and starts its tasks.
    async fn open(self: &Arc<Self>) -> Result<(), BackendError> {
        let password = self
            .password
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let db = backend::connect(
            &self.target,
            &self.account,
            &password,
            &self.params,
            self.timeout,
        )
        .await?;
        drop(password);
        let shared = Arc::new(Shared::new(BackendKey::of(&self.target, db.pid, db.secret)));
        let (tx, rx) = mpsc::unbounded_channel();
        let (db_r, db_w) = tokio::io::split(db.io);
        tokio::spawn(write_loop(
            db_w,
            rx,
            shared.clone(),
            Arc::downgrade(self),
            self.idle,
        ));
        tokio::spawn(read_loop(db_r, shared.clone(), Arc::downgrade(self)));
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(Conn { jobs: tx, shared }));
        self.freed.notify_waiters();
        Ok(())
    }

    /// Opens one more connection in the background when every one is busy and there is room.
    fn grow(self: &Arc<Self>, live: usize) {
        let opening = self.opening.load(Ordering::SeqCst);
        if live + opening >= self.size {
            return;
        }
        self.opening.fetch_add(1, Ordering::SeqCst);
        let pool = self.clone();
        tokio::spawn(async move {
            if let Err(e) = pool.open().await {
                tracing::warn!(target = %pool.target.name, "pg gateway: pooled connection failed: {e}");
            }
            pool.opening.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// The connection for a statement of a session with nothing in flight, among those
    /// neither stalled nor full: a busy one whose queue should be answered within
    /// [`PIPELINE_WAIT`] (the least busy of those), else the least busy. The pool grows when
    /// the statement would otherwise wait behind slower ones.
    fn pick(self: &Arc<Self>) -> Option<Arc<Conn>> {
        self.pick_avoiding(None)
    }

    /// [`Pool::pick`], preferring any other usable connection to `avoid` (where another
    /// session's cancel just hit a statement, which then runs again elsewhere when it can).
    fn pick_avoiding(self: &Arc<Self>, avoid: Option<&Arc<Shared>>) -> Option<Arc<Conn>> {
        let now = self.now_us();
        let stall = STALL.as_micros() as u64;
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.shared.dead.load(Ordering::SeqCst));
        let live = conns.iter().filter(|c| c.usable()).count();
        let joins = self.joins();
        let best = conns
            .iter()
            .filter(|c| c.usable())
            .filter(|c| {
                let since = c.shared.head_since.load(Ordering::SeqCst);
                since == 0 || now.saturating_sub(since) < stall
            })
            .filter(|c| c.shared.depth.load(Ordering::SeqCst) < DEPTH)
            .min_by_key(|c| {
                let avoided = avoid.is_some_and(|a| Arc::ptr_eq(&c.shared, a));
                let depth = c.shared.depth.load(Ordering::SeqCst);
                (avoided, !joins(depth), depth)
            })
            .cloned();
        drop(conns);
        if best.as_ref().is_none_or(|c| {
            let depth = c.shared.depth.load(Ordering::SeqCst);
            depth > 0 && !joins(depth)
        }) {
            self.grow(live);
        }
        best
    }

    /// Whether a statement joins a busy connection with `depth` statements in flight (see
    /// [`PIPELINE_WAIT`]).
    fn joins(&self) -> impl Fn(usize) -> bool {
        let usual = self.service_us.load(Ordering::Relaxed);
        move |depth| {
            depth > 0 && usual > 0 && (depth as u64) * usual <= PIPELINE_WAIT.as_micros() as u64
        }
    }

    /// Counts a statement that took `us` at the head of its connection into
    /// [`Pool::service_us`].
    fn served(&self, us: u64) {
        let old = self.service_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.service_us.store(new.max(1), Ordering::Relaxed);
    }

    fn retire(&self, conn: &Arc<Conn>) {
        conn.shared.retired.store(true, Ordering::SeqCst);
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| !Arc::ptr_eq(c, conn));
    }
}

impl Shared {
    /// An idle connection's state.
    fn new(key: BackendKey) -> Shared {
        Shared {
            queue: Mutex::new(VecDeque::new()),
            depth: AtomicUsize::new(0),
            head_since: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            cancelled_for: AtomicU64::new(0),
            key,
        }
    }
}

impl Conn {
    fn usable(&self) -> bool {
        !self.shared.retired.load(Ordering::SeqCst) && !self.shared.dead.load(Ordering::SeqCst)
    }

    fn push(self: &Arc<Self>, job: Job) -> Result<(), Job> {
        if !self.usable() {
            return Err(job);
        }
        let client = job.client.clone();
        self.shared.depth.fetch_add(1, Ordering::SeqCst);
        client.inflight.fetch_add(1, Ordering::SeqCst);
        *client.sticky.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(self);
        match self.jobs.send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(job)) => {
                self.shared.depth.fetch_sub(1, Ordering::SeqCst);
                client.inflight.fetch_sub(1, Ordering::SeqCst);
                Err(job)
            }
        }
    }
}

impl Client {
    /// A pooled session writing its answers to `writer`.
    pub fn new(pool: Arc<Pool>, writer: WriteHalf<BoxIo>, auditor: Auditor) -> Arc<Client> {
        Arc::new(Client {
            id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            pool,
            writer: tokio::sync::Mutex::new(Some(writer)),
            auditor,
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            sticky: Mutex::new(Weak::new()),
            dead: AtomicBool::new(false),
        })
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Waits until none of its statements is in flight.
    pub async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.inflight.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Takes the client's socket back once nothing is in flight (for pinning).
    pub async fn take_writer(&self) -> Option<WriteHalf<BoxIo>> {
        self.drained().await;
        self.writer.lock().await.take()
    }

    /// Runs `msg` (a session-neutral `Query`) on a pooled connection. `Err` gives the job back
    /// when no connection can take it soon: the session should pin then.
    pub async fn submit(self: &Arc<Self>, msg: Bytes, unit: Unit) -> Result<(), Job> {
        let mut job = Job {
            msg,
            unit: Box::new(unit),
            client: self.clone(),
            forwarded: false,
            retried: false,
        };
        let mut waiting_since: Option<Instant> = None;
        loop {
            if self.inflight.load(Ordering::SeqCst) > 0 {
                let sticky = self
                    .sticky
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .upgrade();
                if let Some(conn) = sticky {
                    match conn.push(job) {
                        Ok(()) => return Ok(()),
                        Err(j) => job = j,
                    }
                }
                // Its connection was retired: its own answers there come first.
                self.drained().await;
                continue;
            }
            // Armed before looking, so a statement that finishes meanwhile is not missed.
            let freed = self.pool.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(conn) = self.pool.pick() {
                match conn.push(job) {
                    Ok(()) => return Ok(()),
                    Err(j) => job = j,
                }
                continue;
            }
            // Every connection is full, stalled or still opening: wait while the pool makes
            // progress (a statement finishes, a connection opens); pin when nothing moved for
            // STALL, or after QUEUE_WAIT in all.
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUEUE_WAIT || tokio::time::timeout(STALL, freed).await.is_err() {
                return Err(job);
            }
        }
    }

    /// Writes answer bytes to the client; marks it dead when it cannot take them.
    async fn write(&self, bytes: &[u8]) {
        if self.is_dead() {
            return;
        }
        let mut w = self.writer.lock().await;
        let Some(io) = w.as_mut() else { return };
        match tokio::time::timeout(CLIENT_WRITE_TIMEOUT, crate::gateway::send(io, bytes)).await {
            Ok(Ok(())) => {}
            _ => {
                self.dead.store(true, Ordering::SeqCst);
                *w = None;
            }
        }
    }

    fn finished(&self) {
        if self.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// A cancel request for a pooled session: retires the connection its statement runs on and
/// sends the cancel there. Nothing happens when it has nothing in flight.
pub async fn cancel(client: &Arc<Client>) {
    if client.inflight.load(Ordering::SeqCst) == 0 {
        return;
    }
    let conn = client
        .sticky
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .upgrade();
    let Some(conn) = conn else { return };
    conn.shared.cancelled_for.store(client.id, Ordering::SeqCst);
    client.pool.retire(&conn);
    let key = conn.shared.key.clone();
    drop(conn);
    if let Err(e) = backend::cancel(&key).await {
        tracing::debug!("pg gateway: cancel failed: {e}");
    }
}

/// Writes statements to the database as they come, several in one write when several wait.
async fn write_loop(
    mut db: WriteHalf<BoxIo>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    shared: Arc<Shared>,
    pool: Weak<Pool>,
    idle: Duration,
) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut batch: Vec<Job> = Vec::with_capacity(DEPTH);
    loop {
        let job = match tokio::time::timeout(idle, jobs.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(_) => {
                // Idle: leave the pool; statements pushed meanwhile are still taken below.
                if shared.depth.load(Ordering::SeqCst) == 0 {
                    retire(&shared, &pool);
                }
                continue;
            }
        };
        batch.push(job);
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        out.clear();
        {
            let mut queue = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.is_empty() {
                if let Some(pool) = pool.upgrade() {
                    shared.head_since.store(pool.now_us(), Ordering::SeqCst);
                }
            }
            for job in batch.drain(..) {
                out.extend_from_slice(&job.msg);
                queue.push_back(job);
            }
        }
        // A connection found dead (by its reader) or failing now takes nothing more and
        // answers what it holds with an error, so no session waits for an answer that cannot
        // come (also those sent to it meanwhile).
        if shared.dead.load(Ordering::SeqCst) || crate::gateway::send(&mut db, &out).await.is_err()
        {
            shared.dead.store(true, Ordering::SeqCst);
            jobs.close();
            {
                let mut queue = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
                while let Ok(job) = jobs.try_recv() {
                    queue.push_back(job);
                }
            }
            fail_all(&shared, &pool).await;
            break;
        }
    }
    // Every sender is gone (the connection left the pool) or the socket failed: end the
    // session after what was written (the database answers those first).
    let mut bye = BytesMut::new();
    p::put_msg(&mut bye, b'X', &[]);
    let _ = crate::gateway::send(&mut db, &bye).await;
    let _ = db.shutdown().await;
}

/// Takes a connection out of the pool: it gets no more statements, finishes those it has and
/// closes.
fn retire(shared: &Arc<Shared>, pool: &Weak<Pool>) {
    shared.retired.store(true, Ordering::SeqCst);
    if let Some(pool) = pool.upgrade() {
        pool.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| !Arc::ptr_eq(&c.shared, shared));
    }
}

/// Carries answers back, each to the session whose statement is at the head of the queue.
async fn read_loop(mut db: ReadHalf<BoxIo>, shared: Arc<Shared>, pool: Weak<Pool>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut rows: u64 = 0;
    let mut error: Option<String> = None;
    let mut user_cancel = false;
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match db.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut pos = 0;
        let mut from = 0;
        let mut done: Vec<Done> = Vec::new();
        loop {
            let len = match p::complete_len(&buf[pos..]) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(_) => {
                    fail_all(&shared, &pool).await;
                    return;
                }
            };
            let tag = buf[pos];
            let body = &buf[pos + 5..pos + len];
            match tag {
                b'C' => rows += p::command_rows(body),
                // A pooled statement changed how this connection reads text (a view calling
                // set_config, say): pooled statements hold no backslash, so those queued
                // behind are read as they were classified; nothing more goes to it.
                b'S' if shared::parameter_changes_lexing(body) => retire(&shared, &pool),
                b'E' => {
                    let fields = p::error_fields(body);
                    let field = |k: u8| p::field(&fields, k);
                    // FATAL or PANIC: the database ends this pooled connection (terminated,
                    // shut down, ...). That is not the end of the sessions on it, so their
                    // clients get what came before it and then 08006, not this error.
                    if matches!(field(b'V').or(field(b'S')), Some("FATAL" | "PANIC")) {
                        complete_all(&mut done, &buf, &pool, &shared).await;
                        forward_head(&shared, &buf[from..pos]).await;
                        fail_all(&shared, &pool).await;
                        return;
                    }
                    error = field(b'C').map(str::to_owned);
                    user_cancel = field(b'C') == Some("57014")
                        && field(b'M').is_some_and(|m| m.contains("user request"));
                }
                b'Z' => {
                    let end = pos + len;
                    let job = {
                        let mut queue = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
                        let job = queue.pop_front();
                        let pool = pool.upgrade();
                        let now = pool.as_ref().map_or(0, |p| p.now_us());
                        let since = shared.head_since.load(Ordering::SeqCst);
                        // How long the statement that finished took at the head.
                        if let Some(p) = pool.as_ref().filter(|_| job.is_some() && since > 0) {
                            p.served(now.saturating_sub(since));
                        }
                        let next = if queue.is_empty() { 0 } else { now };
                        shared.head_since.store(next, Ordering::SeqCst);
                        job
                    };
                    if let Some(job) = job {
                        shared.depth.fetch_sub(1, Ordering::SeqCst);
                        let hit = user_cancel && {
                            let c = shared.cancelled_for.load(Ordering::SeqCst);
                            c != 0 && c != job.client.id
                        };
                        done.push(Done {
                            job,
                            answer: from..end,
                            rows,
                            error: error.take(),
                            hit,
                        });
                    }
                    from = end;
                    rows = 0;
                    error = None;
                    user_cancel = false;
                }
                _ => {}
            }
            pos += len;
        }
        complete_all(&mut done, &buf, &pool, &shared).await;
        // The head statement's answer so far (a long result streams through). A beginning of
        // it that holds no row yet (a RowDescription, an error that its ReadyForQuery has not
        // followed yet) is kept back and read again with what comes next: a statement that
        // another session's cancel hits has then sent its client nothing, so it can run again
        // (see `complete`).
        if held_back(&buf[from..pos]) {
            bytes::Buf::advance(&mut buf, from);
        } else {
            forward_head(&shared, &buf[from..pos]).await;
            bytes::Buf::advance(&mut buf, pos);
        }
    }
    fail_all(&shared, &pool).await;
}

/// Whether `bytes` (whole messages of one statement's answer, before its ReadyForQuery) is
/// kept back: at most `HOLD_BACK` bytes of RowDescription, ErrorResponse and NoticeResponse
/// messages, none of which changes what the read loop counts when it is read again.
fn held_back(mut bytes: &[u8]) -> bool {
    if bytes.is_empty() || bytes.len() > HOLD_BACK {
        return false;
    }
    while let Ok(Some(len)) = p::complete_len(bytes) {
        if !matches!(bytes[0], b'T' | b'E' | b'N') {
            return false;
        }
        bytes = &bytes[len..];
    }
    bytes.is_empty()
}

/// Hands part of the head statement's answer to its session.
async fn forward_head(shared: &Shared, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let client = {
        let mut queue = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.front_mut().map(|j| {
            j.forwarded = true;
            j.client.clone()
        })
    };
    if let Some(c) = client {
        c.write(bytes).await;
    }
}

/// The connection is gone: every statement still queued on it fails with 08006, and the
/// sessions carry on (on another connection) with their next statement.
async fn fail_all(shared: &Shared, pool: &Weak<Pool>) {
    shared.dead.store(true, Ordering::SeqCst);
    shared.retired.store(true, Ordering::SeqCst);
    let jobs: Vec<Job> = shared
        .queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for job in jobs {
        let mut out = BytesMut::new();
        p::error_response(
            &mut out,
            "ERROR",
            "08006",
            "Haechi DB gateway: the connection to the database was lost while the statement ran",
        );
        p::ready_for_query(&mut out, b'I');
        complete(job, &out, 0, Some("08006".into()), pool).await;
    }
    if let Some(pool) = pool.upgrade() {
        pool.freed.notify_waiters();
    }
}

/// A statement whose ReadyForQuery the read loop saw in the chunk it is reading: its answer is
/// `buf[answer]`.
struct Done {
    job: Job,
    answer: std::ops::Range<usize>,
    rows: u64,
    error: Option<String>,
    hit: bool,
}

/// Completes the statements that finished in one chunk: their events are queued together (one
/// commit under `audit.durability = strict`) and committed before any of their answers is
/// handed to its session, in order.
async fn complete_all(done: &mut Vec<Done>, buf: &[u8], pool: &Weak<Pool>, from: &Arc<Shared>) {
    if done.is_empty() {
        return;
    }
    let mut ready = Vec::with_capacity(done.len());
    for d in done.drain(..) {
        let job = d.job;
        // A statement another session's cancel hit runs again (it completes later).
        let job = match pool.upgrade().filter(|_| rerunnable(&job, d.hit)) {
            Some(p) => match rerun_on(job, &p, from) {
                Ok(()) => continue,
                Err(job) => {
                    tokio::spawn(rerun_when_free(
                        job,
                        Bytes::copy_from_slice(&buf[d.answer]),
                        d.rows,
                        d.error,
                        pool.clone(),
                        from.clone(),
                    ));
                    continue;
                }
            },
            None => job,
        };
        let queued = job
            .client
            .auditor
            .enqueue(job.unit.record(d.rows, d.error.as_deref()))
            .await;
        ready.push((job, d.answer, queued));
    }
    let mut answers = Vec::with_capacity(ready.len());
    for (job, answer, queued) in ready {
        queued.committed().await;
        answers.push((job, answer));
    }
    for (job, answer) in answers {
        hand_over(job, &buf[answer], pool).await;
    }
}

/// Whether a statement that finished failing with another session's cancel runs again: it
/// sent its client nothing, has not run again already, and is its session's only statement in
/// flight.
fn rerunnable(job: &Job, hit_by_cancel: bool) -> bool {
    hit_by_cancel
        && !job.forwarded
        && !job.retried
        && job.client.inflight.load(Ordering::SeqCst) == 1
}

/// Runs `job` again on a connection of `pool` other than `from` (the one the cancel retired).
/// `Err` gives it back when none can take it now.
fn rerun_on(mut job: Job, pool: &Arc<Pool>, from: &Arc<Shared>) -> Result<(), Job> {
    let Some(conn) = pool.pick_avoiding(Some(from)) else {
        return Err(job);
    };
    let client = job.client.clone();
    job.retried = true;
    // Its place moves to the new connection (inflight is counted again there).
    client.inflight.fetch_sub(1, Ordering::SeqCst);
    match conn.push(job) {
        Ok(()) => {
            metrics::counter!("haechi_gateway_pool_reruns_total").increment(1);
            Ok(())
        }
        Err(job) => {
            client.inflight.fetch_add(1, Ordering::SeqCst);
            Err(job)
        }
    }
}

/// [`rerun_on`] once a connection can take `job` (the cancel retired the one it ran on, and
/// the others may be busy, retired or still opening): it waits while the pool makes progress,
/// [`RERUN_WAIT`] at most, and then completes with the answer it had (`answer`, the cancel's
/// error).
async fn rerun_when_free(
    mut job: Job,
    answer: Bytes,
    rows: u64,
    error: Option<String>,
    pool: Weak<Pool>,
    from: Arc<Shared>,
) {
    let started = Instant::now();
    while let Some(p) = pool.upgrade() {
        // Armed before looking, so a connection that opens meanwhile is not missed.
        let freed = p.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        match rerun_on(job, &p, &from) {
            Ok(()) => return,
            Err(j) => job = j,
        }
        let left = RERUN_WAIT.saturating_sub(started.elapsed());
        if left.is_zero() || tokio::time::timeout(left, freed).await.is_err() {
            break;
        }
    }
    complete(job, &answer, rows, error, &pool).await;
}

/// Hands one finished statement's answer to its session, audits it, and frees its place.
async fn complete(job: Job, answer: &[u8], rows: u64, error: Option<String>, pool: &Weak<Pool>) {
    // The event before the answer (committed first under `audit.durability = strict`).
    job.client
        .auditor
        .audit(job.unit.record(rows, error.as_deref()))
        .await;
    hand_over(job, answer, pool).await;
}

/// Writes a completed statement's answer to its session and frees its place.
async fn hand_over(job: Job, answer: &[u8], pool: &Weak<Pool>) {
    let client = job.client.clone();
    client.write(answer).await;
    drop(job);
    client.finished();
    if let Some(pool) = pool.upgrade() {
        pool.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of `size` with `depths.len()` connections that have those statements in flight
    /// (their heads started just now); no connection is ever opened.
    fn pool_with(size: usize, depths: &[usize]) -> (Arc<Pool>, Vec<Arc<Conn>>) {
        let target = Target {
            id: 1,
            name: "t".into(),
            kind: crate::targets::Kind::Postgres,
            host: "127.0.0.1".into(),
            // Nothing listens there: a connection the pool tries to open fails at once.
            port: 1,
            database: "d".into(),
            tls: Default::default(),
            tls_ca_file: None,
            allow_insecure_password: false,
            socket: None,
            created_by: "admin".into(),
            created_at: 0,
        };
        let config = DbGateConfig {
            pg_pool_size: size,
            ..Default::default()
        };
        let pool = Arc::new(Pool::new(
            &target,
            "a",
            &[],
            &SecretString::from("x"),
            &config,
        ));
        let conns: Vec<Arc<Conn>> = depths
            .iter()
            .map(|&depth| {
                let shared = Shared::new(BackendKey::of(&target, 1, 1));
                shared.depth.store(depth, Ordering::SeqCst);
                if depth > 0 {
                    shared.head_since.store(pool.now_us(), Ordering::SeqCst);
                }
                let (jobs, _) = mpsc::unbounded_channel();
                Arc::new(Conn {
                    jobs,
                    shared: Arc::new(shared),
                })
            })
            .collect();
        *pool.conns.lock().unwrap() = conns.clone();
        (pool, conns)
    }

    fn picked(pool: &Arc<Pool>, conns: &[Arc<Conn>]) -> usize {
        let c = pool.pick().expect("a connection");
        conns.iter().position(|x| Arc::ptr_eq(x, &c)).unwrap()
    }

    #[test]
    fn fast_statements_queue_on_a_busy_connection_and_slow_ones_spread() {
        // Nothing measured yet: the idle connection.
        let (pool, conns) = pool_with(2, &[3, 0]);
        assert_eq!(picked(&pool, &conns), 1);
        // Statements of 40 us: three ahead (120 us) is within PIPELINE_WAIT, so the busy one.
        pool.served(40);
        assert_eq!(pool.service_us.load(Ordering::Relaxed), 40);
        assert_eq!(picked(&pool, &conns), 0);
        // Of two busy ones within it, the less busy.
        let (pool, conns) = pool_with(2, &[3, 2]);
        pool.served(40);
        assert_eq!(picked(&pool, &conns), 1);
        // Statements of 2 ms: the idle connection, not a wait behind the busy one's.
        let (pool, conns) = pool_with(2, &[1, 0]);
        pool.served(2_000);
        assert_eq!(picked(&pool, &conns), 1);
        // Fifteen fast ones ahead (600 us) are too many to join.
        let (pool, conns) = pool_with(2, &[15, 0]);
        pool.served(40);
        assert_eq!(picked(&pool, &conns), 1);
        // The average moves by an eighth of each new time.
        pool.served(120);
        assert_eq!(pool.service_us.load(Ordering::Relaxed), 50);
    }

    #[tokio::test]
    async fn the_pool_grows_only_when_a_statement_would_wait_behind_slow_ones() {
        // One busy connection with fast statements: the statement joins it, nothing opens.
        let (pool, conns) = pool_with(2, &[2]);
        pool.served(40);
        assert_eq!(picked(&pool, &conns), 0);
        assert_eq!(pool.opening.load(Ordering::SeqCst), 0);
        // With slow ones it still goes there (nothing else can take it now), and a second
        // connection starts opening (to a target that is not there: it fails in the
        // background, which is all this test needs to see).
        pool.service_us.store(5_000, Ordering::Relaxed);
        assert_eq!(picked(&pool, &conns), 0);
        assert_eq!(pool.opening.load(Ordering::SeqCst), 1);
    }
}
