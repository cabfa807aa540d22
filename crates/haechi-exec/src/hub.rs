//! The agent hub: the live sessions of the agents connected to this server, what is sent to
//! them, and the server's side of the agent protocol (`haechi_protocol`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haechi_protocol::{AgentMsg, OutputFrame, Resume, RunSpec, ServerMsg, PROTOCOL_VERSION};
use haechi_store::read;
use haechi_types::time::now_ms;
use haechi_types::Result;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::writer::Op;
use crate::Exec;

/// How long an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// A `Run` or `Cancel` is not sent again to the same agent sooner than this.
const RESEND_AFTER: Duration = Duration::from_secs(5);
/// Longest reason of a result the server keeps, in bytes (a longer one is cut).
const MAX_REASON: usize = 4096;
/// Least share of the buffers a message holds, however short (bounds the messages waiting).
const MIN_HELD: usize = 1024;

/// The buffer shares one agent message holds until it is stored (dropped with its writer
/// operation): its connection's and the server's.
pub(crate) struct Held {
    _conn: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

/// A frame from an agent's WebSocket.
#[derive(Debug)]
pub enum AgentFrame {
    Text(String),
    Binary(Vec<u8>),
}

impl AgentFrame {
    fn len(&self) -> usize {
        match self {
            AgentFrame::Text(t) => t.len(),
            AgentFrame::Binary(b) => b.len(),
        }
    }
}

/// A frame to an agent's WebSocket.
#[derive(Debug)]
pub enum ServerFrame {
    Text(String),
    /// Close the connection, with a reason.
    Close(String),
}

/// Frames waiting to be written to one agent. An agent that does not read what it is sent
/// is disconnected once this many are waiting (runs and cancels are not waited for: they are
/// sent again by the monitor's sweep).
pub const OUTBOUND_FRAMES: usize = 1024;

/// The sending side of one agent's outbound queue: bounded, with a close that never waits
/// behind queued frames.
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::Sender<ServerFrame>,
    close: Arc<watch::Sender<Option<String>>>,
}

/// The receiving side, read by the socket's writer.
pub struct OutboundRx {
    rx: mpsc::Receiver<ServerFrame>,
    close: watch::Receiver<Option<String>>,
}

/// A new outbound queue of [`OUTBOUND_FRAMES`] frames.
pub fn outbound() -> (Outbound, OutboundRx) {
    let (tx, rx) = mpsc::channel(OUTBOUND_FRAMES);
    let (ctx, crx) = watch::channel(None);
    (
        Outbound {
            tx,
            close: Arc::new(ctx),
        },
        OutboundRx { rx, close: crx },
    )
}

impl Outbound {
    /// Queues a frame the agent must get; a full queue (the agent does not read) closes the
    /// connection instead. False when the frame was not queued.
    fn send(&self, msg: &ServerMsg) -> bool {
        match self.tx.try_send(text(msg)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(
                    "the agent does not read what the server sends; the server closed the connection",
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a frame that is sent again later when it does not fit now (runs, cancels).
    fn offer(&self, msg: &ServerMsg) -> bool {
        self.tx.try_send(text(msg)).is_ok()
    }

    /// Closes the connection with `reason` (ahead of any queued frame).
    pub fn close(&self, reason: &str) {
        self.close.send_replace(Some(reason.to_owned()));
    }
}

/// Resolves once the connection is to be closed: lets the socket's owner end a connection
/// whose writer is stuck on an agent that does not read.
pub struct Closing(watch::Receiver<Option<String>>);

impl Closing {
    pub async fn wait(mut self) {
        if self.0.wait_for(Option::is_some).await.is_err() {
            // Every sender is gone: the session ends by its socket, not by a close.
            std::future::pending::<()>().await;
        }
    }
}

impl OutboundRx {
    /// See [`Closing`].
    pub fn closing(&self) -> Closing {
        Closing(self.close.clone())
    }

    /// The next frame to write; a [`ServerFrame::Close`] once the connection is to be closed;
    /// `None` when every sender is gone.
    pub async fn next(&mut self) -> Option<ServerFrame> {
        if let Some(r) = self.close.borrow_and_update().clone() {
            return Some(ServerFrame::Close(r));
        }
        tokio::select! {
            biased;
            changed = self.close.changed() => match changed {
                Ok(()) => self.close.borrow_and_update().clone().map(ServerFrame::Close),
                Err(_) => self.rx.recv().await,
            },
            f = self.rx.recv() => f,
        }
    }
}

struct Session {
    conn: u64,
    tx: Outbound,
}

#[derive(Default)]
pub(crate) struct Hub {
    sessions: Mutex<HashMap<String, Session>>,
    next_conn: AtomicU64,
    /// When each execution's `Run`/`Cancel` was last sent, to pace re-sends.
    sent: Mutex<HashMap<i64, Instant>>,
}

fn text(msg: &ServerMsg) -> ServerFrame {
    ServerFrame::Text(serde_json::to_string(msg).unwrap_or_default())
}

impl Hub {
    pub fn is_connected(&self, node_id: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(node_id)
    }

    pub fn connected_count(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn connected_nodes(&self) -> Vec<String> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn register(&self, node_id: &str, tx: Outbound) -> u64 {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let old = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id.to_owned(), Session { conn, tx });
        if let Some(old) = old {
            old.tx
                .close("another connection of this agent replaced this one");
        }
        conn
    }

    fn unregister(&self, node_id: &str, conn: u64) {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if s.get(node_id).is_some_and(|x| x.conn == conn) {
            s.remove(node_id);
        }
    }

    /// Sends to a node's agent if it is connected here.
    pub fn send(&self, node_id: &str, msg: &ServerMsg) -> bool {
        let s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match s.get(node_id) {
            Some(sess) => sess.tx.offer(msg),
            None => false,
        }
    }

    fn mark_sent(&self, exec_id: i64) {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(exec_id, Instant::now());
    }

    fn recently_sent(&self, exec_id: i64) -> bool {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&exec_id)
            .is_some_and(|t| t.elapsed() < RESEND_AFTER)
    }

    /// Forgets pacing entries of executions that no longer need sending.
    pub fn prune_sent(&self, keep: &std::collections::HashSet<i64>) {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| keep.contains(id));
    }

    /// Sends runs to the agents connected here; the others get theirs when they connect.
    pub fn dispatch(&self, runs: Vec<(String, RunSpec)>) {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for (node, spec) in runs {
            if let Some(sess) = sessions.get(&node) {
                let id = spec.exec_id;
                if sess.tx.offer(&ServerMsg::Run(spec)) {
                    sent.insert(id, now);
                }
            }
        }
    }

    /// Re-sends runs not sent recently (a run is idempotent on the agent).
    pub fn redispatch(&self, runs: Vec<(String, RunSpec)>) {
        let fresh: Vec<_> = runs
            .into_iter()
            .filter(|(_, s)| !self.recently_sent(s.exec_id))
            .collect();
        self.dispatch(fresh);
    }

    pub fn cancel(&self, node_id: &str, exec_id: i64) {
        if self.send(node_id, &ServerMsg::Cancel { exec_id }) {
            self.mark_sent(exec_id);
        }
    }

    pub fn cancel_paced(&self, node_id: &str, exec_id: i64) {
        if !self.recently_sent(exec_id) {
            self.cancel(node_id, exec_id);
        }
    }

    pub fn close(&self, node_id: &str, reason: &str) {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node_id)
        {
            s.tx.close(reason);
        }
    }

    pub fn close_all(&self, reason: &str) {
        let all: Vec<Session> = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in all {
            s.tx.close(reason);
        }
    }
}

impl Exec {
    /// Bytes of messages one agent connection may hold received but not stored.
    fn conn_window(&self) -> usize {
        self.cfg.agents.max_message_bytes as usize * 4
    }

    /// Largest message the server reads from an agent (`agents.max_message_bytes`).
    pub fn max_agent_message_bytes(&self) -> usize {
        self.cfg.agents.max_message_bytes as usize
    }

    /// Waits until a message of `len` bytes fits in its connection's window and in the
    /// server's inbound buffer.
    /// (`None` only if a semaphore were closed, which none is.)
    async fn hold(&self, window: &Arc<Semaphore>, len: usize) -> Option<Held> {
        let n = len.clamp(MIN_HELD, self.conn_window()) as u32;
        let conn = window.clone().acquire_many_owned(n).await.ok()?;
        let all = self.inbound.clone().acquire_many_owned(n).await.ok()?;
        Some(Held {
            _conn: conn,
            _all: all,
        })
    }

    /// Agents connected to this server.
    pub fn connected_agents(&self) -> usize {
        self.hub.connected_count()
    }

    /// Serves one agent connection (already authenticated as `node_id`) until it ends:
    /// `Hello` → `Welcome` (with what the server holds of the executions the agent lists) →
    /// pending runs → the agent's reports, each committed before it is acknowledged.
    pub async fn serve_agent(
        self: &Arc<Self>,
        node_id: String,
        mut inbound: mpsc::Receiver<AgentFrame>,
        outbound: Outbound,
    ) {
        let Some(jobs) = self.accept_hello(&node_id, &mut inbound, &outbound).await else {
            return;
        };
        let Some(conn) = self.welcome(&node_id, &jobs, &outbound).await else {
            return;
        };
        let window = Arc::new(Semaphore::new(self.conn_window()));
        while let Some(frame) = inbound.recv().await {
            // Every message holds its share of the buffers until it is stored: when the
            // writer falls behind, this loop, then the socket's reader, then the agent wait.
            let Some(held) = self.hold(&window, frame.len()).await else {
                break;
            };
            match frame {
                AgentFrame::Binary(b) => match OutputFrame::decode(&b) {
                    Some(f) => {
                        let _ = self.writer.send(Op::Output {
                            node_id: node_id.clone(),
                            frame: f,
                            _held: held,
                        });
                    }
                    None => tracing::warn!(%node_id, "ignoring a malformed output frame"),
                },
                AgentFrame::Text(t) => match serde_json::from_str::<AgentMsg>(&t) {
                    Ok(msg) => self.on_message(&node_id, &outbound, msg, held).await,
                    Err(e) => {
                        // The parser's message quotes what the agent sent: the text log format
                        // escapes it, so an agent cannot forge log lines (issue 26 item 15).
                        tracing::warn!(%node_id, "ignoring a message the server does not understand: {e}")
                    }
                },
            }
        }
        self.hub.unregister(&node_id, conn);
        metrics::gauge!("haechi_agents_connected").set(self.hub.connected_count() as f64);
        tracing::debug!(%node_id, conn, "agent disconnected");
    }

    /// Waits for the agent's `Hello`, checks its protocol version and records what it says of
    /// its node; returns the executions in its journal. `None`: the connection was closed.
    async fn accept_hello(
        &self,
        node_id: &str,
        inbound: &mut mpsc::Receiver<AgentFrame>,
        outbound: &Outbound,
    ) -> Option<Vec<i64>> {
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.recv()).await {
            Ok(Some(AgentFrame::Text(t))) => serde_json::from_str::<AgentMsg>(&t).ok(),
            _ => None,
        };
        let Some(AgentMsg::Hello {
            protocol,
            agent_ver,
            os_name,
            ip,
            hostname,
            jobs,
            labels,
            os_users,
        }) = hello
        else {
            outbound.close("expected a hello");
            return None;
        };
        if protocol != PROTOCOL_VERSION {
            outbound.close(&format!(
                "this server speaks agent protocol {PROTOCOL_VERSION}, the agent {protocol}: upgrade the agent"
            ));
            return None;
        }
        let clip = |s: String| s.chars().take(256).collect::<String>();
        let (agent_ver, os_name, ip, hostname) =
            (clip(agent_ver), clip(os_name), clip(ip), clip(hostname));
        // What the agent says of itself is its own text: the log format escapes it.
        tracing::info!(%node_id, %hostname, %agent_ver, %os_name, %ip, jobs = jobs.len(), "agent connected");
        let (labels, os_users) = well_formed_labels_and_users(labels, os_users);
        let _ = self.writer.send(Op::NodeSeen(crate::writer::NodeSeen {
            node_id: node_id.to_owned(),
            agent_ver,
            os_name,
            ip,
            hostname,
            labels,
            os_users,
            at: now_ms(),
        }));
        Some(jobs)
    }

    /// Tells the agent which of its executions to resume and which to forget, registers the
    /// session and sends the runs waiting for the node; returns the session's number.
    /// `None`: the store could not be read and the connection was closed.
    async fn welcome(&self, node_id: &str, jobs: &[i64], outbound: &Outbound) -> Option<u64> {
        let (resume, ack) = match self.reconcile(node_id, jobs).await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(%node_id, "cannot reconcile the agent's executions: {e}");
                outbound.close("the server cannot read its store; reconnect later");
                return None;
            }
        };
        let conn = self.hub.register(node_id, outbound.clone());
        metrics::gauge!("haechi_agents_connected").set(self.hub.connected_count() as f64);
        let welcome = ServerMsg::Welcome {
            node_id: node_id.to_owned(),
            heartbeat_secs: self.cfg.agents.heartbeat_secs,
            max_message_bytes: Some(self.cfg.agents.max_message_bytes),
            resume,
            ack,
        };
        outbound.send(&welcome);
        match self.pending_runs(node_id).await {
            Ok(runs) => {
                let held: std::collections::HashSet<i64> = jobs.iter().copied().collect();
                let runs: Vec<_> = runs
                    .into_iter()
                    .filter(|(_, s)| !held.contains(&s.exec_id))
                    .collect();
                self.hub.dispatch(runs);
            }
            Err(e) => tracing::error!(%node_id, "cannot read pending runs: {e}"),
        }
        self.note_heartbeat(node_id, None);
        Some(conn)
    }

    /// One message of a welcomed agent. `held` is its share of the buffers, released once
    /// what it asks is stored or answered.
    async fn on_message(
        self: &Arc<Self>,
        node_id: &str,
        outbound: &Outbound,
        msg: AgentMsg,
        held: Held,
    ) {
        match msg {
            AgentMsg::Heartbeat { at_ms } => {
                self.note_heartbeat(node_id, at_ms.map(|at| at - now_ms()));
                outbound.send(&ServerMsg::HeartbeatAck);
            }
            AgentMsg::Started {
                exec_id,
                at_ms,
                file_token_sha256,
            } => {
                // Kept before the next message is read: the script's first file
                // request, which can only follow this on the connection, finds it.
                if let Some(h) = file_token_sha256 {
                    self.note_file_token(node_id, exec_id, &h).await;
                }
                let _ = self.writer.send(Op::Started {
                    node_id: node_id.to_owned(),
                    exec_id,
                    at: at_ms,
                    _held: held,
                });
            }
            AgentMsg::Finished(f) => self.on_finished(node_id, outbound, f, held),
            AgentMsg::FileGet {
                req,
                exec_id,
                token,
                name,
            } => {
                let (exec, out, node) = (self.clone(), outbound.clone(), node_id.to_owned());
                tokio::spawn(async move {
                    let reply = exec
                        .relay_file_get(&node, req, exec_id, &token, &name)
                        .await;
                    out.send(&ServerMsg::FileReply(reply));
                    drop(held);
                });
            }
            AgentMsg::FilePut {
                req,
                exec_id,
                token,
                name,
                description,
                replace,
                content,
            } => {
                let (exec, out, node) = (self.clone(), outbound.clone(), node_id.to_owned());
                tokio::spawn(async move {
                    let new = crate::NewFile {
                        name,
                        description,
                        replace,
                    };
                    let reply = exec
                        .relay_file_put(&node, req, exec_id, &token, new, &content)
                        .await;
                    drop(held);
                    out.send(&ServerMsg::FileReply(reply));
                });
            }
            AgentMsg::Hello { .. } => tracing::warn!(%node_id, "ignoring a second hello"),
        }
    }

    /// An execution's end: stored by the writer, then acknowledged (the agent forgets it) and
    /// its file token revoked.
    fn on_finished(
        self: &Arc<Self>,
        node_id: &str,
        outbound: &Outbound,
        mut f: haechi_protocol::Finished,
        held: Held,
    ) {
        let exec_id = f.exec_id;
        if let Some(r) = f.reason.as_mut() {
            let mut end = r.len().min(MAX_REASON);
            while !r.is_char_boundary(end) {
                end -= 1;
            }
            r.truncate(end);
        }
        let (tx, rx) = oneshot::channel();
        let _ = self.writer.send(Op::Finished {
            node_id: node_id.to_owned(),
            finished: f,
            committed: tx,
            _held: held,
        });
        let out = outbound.clone();
        let exec = self.clone();
        tokio::spawn(async move {
            if rx.await.is_ok() {
                out.send(&ServerMsg::Ack { exec_id });
                exec.revoke_file_token(exec_id).await;
            }
        });
    }

    /// Notes that `node_id` was heard from now; `skew_ms` is its clock minus ours, when its
    /// heartbeat said what its clock read.
    pub(crate) fn note_heartbeat(&self, node_id: &str, skew_ms: Option<i64>) {
        let mut beats = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        let skew = skew_ms.or_else(|| beats.get(node_id).and_then(|(_, s)| *s));
        beats.insert(node_id.to_owned(), (now_ms(), skew));
    }

    /// Compares what the agent holds with the store: executions still open resume from the
    /// output the store holds; ended or unknown ones are acknowledged (the agent forgets them);
    /// executions the store has running on this node that the agent does not hold are lost.
    async fn reconcile(&self, node_id: &str, jobs: &[i64]) -> Result<(Vec<Resume>, Vec<i64>)> {
        let open: Vec<(i64, String, i64, i64)> = read!(self.store, |db| {
            sqlx::query_as(
            "SELECT id, status, out_len, err_len FROM node_executions WHERE node_id = $1 AND status IN ('WAIT', 'RUN')"
        )
        .bind(node_id)
        .fetch_all(db)
        .await
        })?;
        let open: HashMap<i64, (String, i64, i64)> = open
            .into_iter()
            .map(|(id, s, o, e)| (id, (s, o, e)))
            .collect();
        let mut resume = Vec::new();
        let mut ack = Vec::new();
        for id in jobs {
            match open.get(id) {
                Some((_, out, err)) => resume.push(Resume {
                    exec_id: *id,
                    out: *out as u64,
                    err: *err as u64,
                }),
                None => ack.push(*id),
            }
        }
        let held: std::collections::HashSet<i64> = jobs.iter().copied().collect();
        let unknown: Vec<i64> = open
            .iter()
            .filter(|(id, (s, _, _))| s == "RUN" && !held.contains(id))
            .map(|(id, _)| *id)
            .collect();
        if !unknown.is_empty() {
            let _ = self.writer.send(Op::Unknown {
                node_id: node_id.to_owned(),
                exec_ids: unknown,
            });
        }
        Ok((resume, ack))
    }
}

/// The labels and OS users an agent reported, as stored: they are the agent's own words, so
/// only well-formed ones are kept (JSON object of labels; JSON array of users, when it said).
fn well_formed_labels_and_users(
    labels: std::collections::BTreeMap<String, String>,
    os_users: Option<Vec<String>>,
) -> (String, Option<String>) {
    let labels: std::collections::BTreeMap<String, String> = labels
        .into_iter()
        .filter(|(k, v)| {
            crate::groups::check_key("labels", k).is_ok()
                && v.len() <= crate::groups::MAX_VALUE_BYTES
                && !v.contains('\0')
        })
        .take(crate::groups::MAX_ATTRIBUTES)
        .collect();
    let os_users = os_users.map(|u| {
        u.into_iter()
            .filter(|n| !n.is_empty() && n.len() <= 64)
            .take(10_000)
            .collect::<Vec<_>>()
    });
    (
        serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into()),
        os_users.map(|u| serde_json::to_string(&u).unwrap_or_else(|_| "[]".into())),
    )
}
