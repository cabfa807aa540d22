//! The writer: the one task that changes node executions after they are created. It takes
//! every pending change, commits them in one transaction (a batch), and only then acts on them
//! (acknowledges the agent, answers the caller, sends chained runs, emits events). Batching is
//! what lets a thousand agents report in a few transactions instead of thousands.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use haechi_identity::Actor;
use haechi_protocol::{
    Finished, Outcome, OutputFrame, RunSpec, SecretEnv, Stream, TRUNCATION_MARKER_ROOM,
};
use haechi_store::{in_tx, Tx};
use haechi_types::{time::now_ms, Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::hub::Held;
use crate::model::{ExecStatus, ResultCode};
use crate::{Exec, ExecEvent};

/// Most operations in one batch.
const MAX_OPS: usize = 2000;
/// Most output bytes in one batch.
const MAX_BYTES: usize = 8 * 1024 * 1024;

pub(crate) enum Op {
    Started {
        node_id: String,
        exec_id: i64,
        at: i64,
        /// Released once the operation is applied (the agent's buffer share).
        _held: Held,
    },
    Output {
        node_id: String,
        frame: OutputFrame,
        /// Released once the operation is applied (the agent's buffer share).
        _held: Held,
    },
    Finished {
        node_id: String,
        finished: Finished,
        committed: oneshot::Sender<()>,
        /// Released once the operation is applied (the agent's buffer share).
        _held: Held,
    },
    NodeSeen(NodeSeen),
    /// (node, when heard, its clock skew in ms if it said).
    Heartbeats(Vec<(String, i64, Option<i64>)>),
    /// Nodes silent since before `cutoff` are marked missing.
    MarkMissing {
        cutoff: i64,
    },
    /// Open executions of nodes missing since before `cutoff` end `LOST`.
    MarkLost {
        cutoff: i64,
    },
    /// Running executions the node's agent does not hold end `LOST`.
    Unknown {
        node_id: String,
        exec_ids: Vec<i64>,
    },
    Cancel {
        instance_no: i64,
        node_id: Option<String>,
        actor: Option<Actor>,
        reply: oneshot::Sender<Result<()>>,
    },
    Rerun {
        instance_no: i64,
        node_id: String,
        actor: Actor,
        /// The run's environment read again as `actor` (instances started with one).
        env: Option<Arc<Vec<SecretEnv>>>,
        opts: crate::RerunOptions,
        reply: oneshot::Sender<Result<i64>>,
    },
    Flush(oneshot::Sender<()>),
}

/// What an agent says of its node when it connects.
pub(crate) struct NodeSeen {
    pub node_id: String,
    pub agent_ver: String,
    pub os_name: String,
    pub ip: String,
    pub hostname: String,
    /// JSON object of the node's labels.
    pub labels: String,
    /// JSON array of the OS users the agent can run as, when it says.
    pub os_users: Option<String>,
    pub at: i64,
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Output { frame, .. } => frame.data.len(),
            _ => 64,
        }
    }
}

/// What to do once a batch is committed.
#[derive(Default)]
struct After {
    committed: Vec<oneshot::Sender<()>>,
    cancel_replies: Vec<(oneshot::Sender<Result<()>>, Result<()>)>,
    rerun_replies: Vec<(oneshot::Sender<Result<i64>>, Result<i64>)>,
    runs: Vec<(String, RunSpec)>,
    cancels: Vec<(String, i64)>,
    /// Instances with executions to cancel (announced to the other servers).
    cancelled: Vec<i64>,
    events: Vec<ExecEvent>,
    touched: HashSet<i64>,
}

/// Cached stored output lengths (and whether the execution is still open, and its output
/// truncated) per execution.
#[derive(Clone, Copy)]
struct Lens {
    out: i64,
    err: i64,
    open: bool,
    truncated: bool,
}

pub(crate) async fn run(exec: Arc<Exec>, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut lens: HashMap<i64, Lens> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut ops = vec![first];
        let mut bytes = ops[0].bytes();
        while ops.len() < MAX_OPS && bytes < MAX_BYTES {
            match rx.try_recv() {
                Ok(op) => {
                    bytes += op.bytes();
                    ops.push(op);
                }
                Err(_) => break,
            }
        }
        let count = ops.len();
        let started = std::time::Instant::now();
        match apply(&exec, ops, &mut lens).await {
            Ok(after) => {
                metrics::histogram!("haechi_exec_batch_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("haechi_exec_batch_ops_total").increment(count as u64);
                act(&exec, after);
            }
            Err((e, after)) => {
                lens.clear();
                tracing::error!("execution writer: a batch of {count} changes failed: {e}; agents reconnect and resend");
                fail(&exec, after, e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if lens.len() > 100_000 {
            lens.retain(|_, l| l.open);
        }
    }
}

fn act(exec: &Exec, after: After) {
    for c in after.committed {
        let _ = c.send(());
    }
    for (tx, r) in after.cancel_replies {
        let _ = tx.send(r);
    }
    for (tx, r) in after.rerun_replies {
        let _ = tx.send(r);
    }
    exec.send_runs(after.runs);
    for (node, id) in after.cancels {
        exec.hub.cancel(&node, id);
    }
    exec.announce_cancels(after.cancelled);
    for e in after.events {
        exec.emit(e);
    }
}

/// A failed batch: callers get the error; agents whose reports were in it are disconnected so
/// they reconnect and report again from what the store holds.
fn fail(exec: &Exec, after: After, e: Error) {
    for (tx, _) in after.cancel_replies {
        let _ = tx.send(Err(e.clone()));
    }
    for (tx, _) in after.rerun_replies {
        let _ = tx.send(Err(e.clone()));
    }
    exec.hub
        .close_all("the server could not store the agent's reports; reconnect");
}

async fn apply(
    exec: &Exec,
    ops: Vec<Op>,
    lens: &mut HashMap<i64, Lens>,
) -> Result<After, (Error, After)> {
    let mut after = After::default();
    let mut tx = match exec.store.begin().await {
        Ok(t) => t,
        Err(e) => {
            collect_replies(ops, &mut after);
            return Err((e, after));
        }
    };
    if let Err(e) = take_turn(&mut tx).await {
        collect_replies(ops, &mut after);
        return Err((e, after));
    }
    let mut deltas: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut ops = ops.into_iter();
    while let Some(op) = ops.next() {
        if let Err(e) = apply_one(exec, &mut tx, op, lens, &mut deltas, &mut after).await {
            collect_replies(ops.collect(), &mut after);
            return Err((e, after));
        }
    }
    let result: Result<()> = async {
        for (id, (dout, derr)) in &deltas {
            in_tx!(tx, |c| sqlx::query("UPDATE node_executions SET out_len = out_len + $2, err_len = err_len + $3 WHERE id = $1")
                .bind(id)
                .bind(dout)
                .bind(derr)
                .execute(&mut *c)
                .await
                .map(|_| ()))?;
        }
        let mut touched: Vec<i64> = after.touched.iter().copied().collect();
        touched.sort_unstable();
        for no in touched {
            let (ended, chained) = exec.settle_in_tx(&mut tx, no).await?;
            if ended {
                after.events.push(ExecEvent {
                    instance_no: no,
                    node_id: String::new(),
                    exec_id: 0,
                    status: ExecStatus::End,
                    instance_ended: true,
                });
            }
            if let Some(c) = chained {
                after.runs.extend(c.runs);
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        return Err((e, after));
    }
    if let Err(e) = tx.commit().await {
        return Err((e, after));
    }
    Ok(after)
}

/// The advisory lock the execution writers of all servers on one PostgreSQL take turns on.
const WRITER_TURN_KEY: i64 = 0x6861_6563_6869_7772; // "haechiwr"

/// On PostgreSQL, waits for this batch's turn among every server's execution writer. Batches
/// update executions, instances and nodes (reports, heartbeats, missing and lost marks) in the
/// order their operations arrived, which differs between servers: two batches that each hold
/// rows the other needs deadlock, and PostgreSQL then fails one of them, losing that batch's
/// reports. Taking turns costs little (a batch holds up to `MAX_OPS` operations) and makes that
/// impossible. SQLite has one writer already.
async fn take_turn(tx: &mut Tx) -> Result<()> {
    if let haechi_store::TxConn::Postgres(c) = tx.conn() {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITER_TURN_KEY)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// Moves the reply channels of unapplied operations into `after` so they get the error.
fn collect_replies(ops: Vec<Op>, after: &mut After) {
    for op in ops {
        match op {
            Op::Cancel { reply, .. } => after.cancel_replies.push((reply, Ok(()))),
            Op::Rerun { reply, .. } => after.rerun_replies.push((reply, Ok(0))),
            _ => {}
        }
    }
}

/// The stored lengths of an execution of `node_id` (an agent writes only its own node's output).
async fn lens_of(
    tx: &mut Tx,
    lens: &mut HashMap<i64, Lens>,
    exec_id: i64,
    node_id: &str,
) -> Result<Option<Lens>> {
    if let Some(l) = lens.get(&exec_id) {
        return Ok(Some(*l));
    }
    let row: Option<(i64, i64, String, bool)> = in_tx!(tx, |c| {
        sqlx::query_as(
        "SELECT out_len, err_len, status, truncated FROM node_executions WHERE id = $1 AND node_id = $2"
    )
    .bind(exec_id)
    .bind(node_id)
    .fetch_optional(&mut *c)
    .await
    })?;
    Ok(row.map(|(out, err, status, truncated)| {
        let l = Lens {
            out,
            err,
            open: !ExecStatus::parse(&status).is_some_and(ExecStatus::is_final),
            truncated,
        };
        lens.insert(exec_id, l);
        l
    }))
}

/// Ends one open execution; returns its instance when it changed.
#[allow(clippy::too_many_arguments)]
async fn end_execution(
    tx: &mut Tx,
    exec_id: i64,
    node_id: &str,
    status: ExecStatus,
    result_cd: ResultCode,
    exit_cd: Option<i64>,
    reason: Option<&str>,
    started_at: Option<i64>,
    ended_at: i64,
    truncated: bool,
) -> Result<Option<i64>> {
    let no: Option<i64> = in_tx!(tx, |c| sqlx::query_scalar(
        "UPDATE node_executions SET status = $3, result_cd = $4, exit_cd = $5, reason = $6, \
         start_at = COALESCE(start_at, $7), end_at = $8, truncated = (truncated OR $9) \
         WHERE id = $1 AND node_id = $2 AND status IN ('WAIT', 'RUN') RETURNING instance_no"
    )
    .bind(exec_id)
    .bind(node_id)
    .bind(status.as_str())
    .bind(result_cd.as_code())
    .bind(exit_cd)
    .bind(reason)
    .bind(started_at)
    .bind(ended_at)
    .bind(truncated)
    .fetch_optional(&mut *c)
    .await)?;
    Ok(no)
}

async fn apply_one(
    exec: &Exec,
    tx: &mut Tx,
    op: Op,
    lens: &mut HashMap<i64, Lens>,
    deltas: &mut HashMap<i64, (i64, i64)>,
    after: &mut After,
) -> Result<()> {
    match op {
        Op::Flush(done) => after.committed.push(done),
        Op::Started {
            node_id,
            exec_id,
            at,
            _held: _,
        } => started(tx, after, node_id, exec_id, at).await?,
        Op::Output {
            node_id,
            frame,
            _held: _,
        } => {
            let cap = exec.cfg.agents.output_cap_bytes as i64;
            output(tx, lens, deltas, cap, &node_id, &frame).await?
        }
        Op::Finished {
            node_id,
            finished,
            committed,
            _held: _,
        } => {
            finish(tx, lens, after, node_id, &finished).await?;
            after.committed.push(committed);
        }
        Op::NodeSeen(seen) => node_seen(tx, &seen).await?,
        Op::Heartbeats(beats) => heartbeats(tx, &beats).await?,
        Op::MarkMissing { cutoff } => mark_missing(tx, cutoff).await?,
        Op::MarkLost { cutoff } => mark_lost(tx, lens, after, cutoff).await?,
        Op::Unknown { node_id, exec_ids } => {
            lose_unknown(tx, lens, after, &node_id, &exec_ids).await?
        }
        Op::Cancel {
            instance_no,
            node_id,
            actor,
            reply,
        } => {
            let r = cancel(exec, tx, lens, after, instance_no, node_id, actor).await;
            answer(&mut after.cancel_replies, reply, r, ())?;
        }
        Op::Rerun {
            instance_no,
            node_id,
            actor,
            env,
            opts,
            reply,
        } => {
            let r = exec
                .rerun_in_tx(tx, &actor, instance_no, &node_id, env, opts)
                .await
                .map(|(node, spec)| {
                    let id = spec.exec_id;
                    after.runs.push((node, spec));
                    id
                });
            answer(&mut after.rerun_replies, reply, r, 0)?;
        }
    }
    Ok(())
}

/// Queues a caller's answer for once the batch is committed. An internal error (the store
/// failed) fails the whole batch, and the caller gets it then (see [`fail`]); any other error
/// is this caller's answer alone and the batch goes on.
fn answer<T>(
    replies: &mut Vec<(oneshot::Sender<Result<T>>, Result<T>)>,
    reply: oneshot::Sender<Result<T>>,
    result: Result<T>,
    placeholder: T,
) -> Result<()> {
    match result {
        Err(e) if e.code == haechi_types::Code::Internal => {
            replies.push((reply, Ok(placeholder)));
            Err(e)
        }
        result => {
            replies.push((reply, result));
            Ok(())
        }
    }
}

/// An execution the batch ended: its cached lengths are closed, its instance is settled at
/// the end of the batch, and observers hear of it after the commit.
fn ended(
    lens: &mut HashMap<i64, Lens>,
    after: &mut After,
    instance_no: i64,
    node_id: String,
    exec_id: i64,
    status: ExecStatus,
) {
    if let Some(l) = lens.get_mut(&exec_id) {
        l.open = false;
    }
    after.touched.insert(instance_no);
    after.events.push(ExecEvent {
        instance_no,
        node_id,
        exec_id,
        status,
        instance_ended: false,
    });
}

/// The agent started an execution: `WAIT` becomes `RUN`. An execution that ended meanwhile
/// (cancelled before it started, or lost) is stopped on the agent instead.
async fn started(
    tx: &mut Tx,
    after: &mut After,
    node_id: String,
    exec_id: i64,
    at: i64,
) -> Result<()> {
    let no: Option<i64> = in_tx!(tx, |c| sqlx::query_scalar(
        "UPDATE node_executions SET status = 'RUN', start_at = COALESCE(start_at, $3) \
         WHERE id = $1 AND node_id = $2 AND status = 'WAIT' RETURNING instance_no"
    )
    .bind(exec_id)
    .bind(&node_id)
    .bind(at)
    .fetch_optional(&mut *c)
    .await)?;
    if let Some(no) = no {
        after.events.push(ExecEvent {
            instance_no: no,
            node_id,
            exec_id,
            status: ExecStatus::Run,
            instance_ended: false,
        });
        return Ok(());
    }
    let st: Option<(String, bool)> = in_tx!(tx, |c| sqlx::query_as(
        "SELECT status, cancel_requested FROM node_executions WHERE id = $1 AND node_id = $2"
    )
    .bind(exec_id)
    .bind(&node_id)
    .fetch_optional(&mut *c)
    .await)?;
    if let Some((status, cancel)) = st {
        if cancel || ExecStatus::parse(&status).is_some_and(ExecStatus::is_final) {
            after.cancels.push((node_id, exec_id));
        }
    }
    Ok(())
}

/// Stores a chunk of an open execution's output at the end of what is stored: a chunk already
/// stored (a resend) or of an ended execution is ignored, one past a gap is dropped (the agent
/// resends from what the store holds after a reconnect), and output beyond the cap
/// (`output_cap_bytes` plus room for the marker) is cut and the execution marked truncated.
async fn output(
    tx: &mut Tx,
    lens: &mut HashMap<i64, Lens>,
    deltas: &mut HashMap<i64, (i64, i64)>,
    cap: i64,
    node_id: &str,
    frame: &OutputFrame,
) -> Result<()> {
    let Some(l) = lens_of(tx, lens, frame.exec_id, node_id).await? else {
        return Ok(());
    };
    if !l.open {
        return Ok(());
    }
    let stored = match frame.stream {
        Stream::Out => l.out,
        Stream::Err => l.err,
    };
    let pos = frame.pos as i64;
    let end = pos + frame.data.len() as i64;
    if end <= stored {
        return Ok(());
    }
    if pos > stored {
        tracing::warn!(
            exec_id = frame.exec_id,
            pos,
            stored,
            "output gap; dropping a chunk"
        );
        return Ok(());
    }
    let mut data = &frame.data[(stored - pos) as usize..];
    // The agent keeps the cap; the server keeps it too, so an agent that does not
    // cannot fill the store (issue 26 item 6).
    let room = (cap + TRUNCATION_MARKER_ROOM as i64 - l.out - l.err).max(0);
    if data.len() as i64 > room {
        data = &data[..room as usize];
        if !l.truncated {
            tracing::warn!(
                exec_id = frame.exec_id,
                %node_id,
                "the agent sent output beyond the cap; the rest is dropped"
            );
            mark_truncated(tx, lens, frame.exec_id).await?;
        }
    }
    if data.is_empty() {
        return Ok(());
    }
    in_tx!(tx, |c| sqlx::query(
        "INSERT INTO execution_output (exec_id, stream, pos, data) VALUES ($1, $2, $3, $4)"
    )
    .bind(frame.exec_id)
    .bind(frame.stream.code() as i64)
    .bind(stored)
    .bind(data)
    .execute(&mut *c)
    .await
    .map(|_| ()))?;
    let n = data.len() as i64;
    let d = deltas.entry(frame.exec_id).or_default();
    if let Some(entry) = lens.get_mut(&frame.exec_id) {
        match frame.stream {
            Stream::Out => {
                d.0 += n;
                entry.out += n;
            }
            Stream::Err => {
                d.1 += n;
                entry.err += n;
            }
        }
    }
    Ok(())
}

async fn mark_truncated(tx: &mut Tx, lens: &mut HashMap<i64, Lens>, exec_id: i64) -> Result<()> {
    in_tx!(tx, |c| sqlx::query(
        "UPDATE node_executions SET truncated = $2 WHERE id = $1"
    )
    .bind(exec_id)
    .bind(true)
    .execute(&mut *c)
    .await
    .map(|_| ()))?;
    if let Some(l) = lens.get_mut(&exec_id) {
        l.truncated = true;
    }
    Ok(())
}

/// The agent's report that an execution ended. A report for an execution that already ended
/// (cancelled, lost, or a resend) changes nothing.
async fn finish(
    tx: &mut Tx,
    lens: &mut HashMap<i64, Lens>,
    after: &mut After,
    node_id: String,
    f: &Finished,
) -> Result<()> {
    let (status, result_cd) = match f.outcome {
        Outcome::Exited if f.exit_code == Some(0) => (ExecStatus::End, ResultCode::Success),
        Outcome::Exited | Outcome::Failed => (ExecStatus::End, ResultCode::Failure),
        Outcome::Timeout => (ExecStatus::Timeout, ResultCode::Failure),
        Outcome::Cancelled => (ExecStatus::Cancel, ResultCode::Failure),
        Outcome::Lost => (ExecStatus::Lost, ResultCode::Failure),
    };
    let exit = Some(f.exit_code.map(i64::from).unwrap_or(-1));
    let no = end_execution(
        tx,
        f.exec_id,
        &node_id,
        status,
        result_cd,
        exit,
        f.reason.as_deref(),
        f.started_at_ms,
        f.ended_at_ms,
        f.truncated,
    )
    .await?;
    if let Some(l) = lens.get_mut(&f.exec_id) {
        l.open = false;
    }
    if let Some(no) = no {
        ended(lens, after, no, node_id, f.exec_id, status);
    }
    Ok(())
}

/// What the agent said of its node when it connected.
async fn node_seen(tx: &mut Tx, seen: &NodeSeen) -> Result<()> {
    in_tx!(tx, |c| {
        sqlx::query(
        "UPDATE nodes SET agent_ver = $2, os_name = $3, ip = $4, hostname = $5, heartbeat_at = $6, \
         missing_since = NULL, updated_at = $6, labels = $7, os_users = $8 WHERE id = $1"
    )
    .bind(&seen.node_id)
    .bind(&seen.agent_ver)
    .bind(&seen.os_name)
    .bind(&seen.ip)
    .bind(&seen.hostname)
    .bind(seen.at)
    .bind(&seen.labels)
    .bind(&seen.os_users)
    .execute(&mut *c)
    .await
    .map(|_| ())
    })?;
    Ok(())
}

async fn heartbeats(tx: &mut Tx, beats: &[(String, i64, Option<i64>)]) -> Result<()> {
    for (node, at, skew) in beats {
        in_tx!(tx, |c| sqlx::query(
            "UPDATE nodes SET heartbeat_at = $2, missing_since = NULL, \
             clock_skew_ms = COALESCE($3, clock_skew_ms) WHERE id = $1"
        )
        .bind(node)
        .bind(at)
        .bind(skew)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
    }
    Ok(())
}

async fn mark_missing(tx: &mut Tx, cutoff: i64) -> Result<()> {
    let missing: Vec<String> = in_tx!(tx, |c| sqlx::query_scalar(
        "UPDATE nodes SET missing_since = $2 WHERE missing_since IS NULL \
         AND COALESCE(heartbeat_at, created_at) < $1 RETURNING id"
    )
    .bind(cutoff)
    .bind(now_ms())
    .fetch_all(&mut *c)
    .await)?;
    for n in missing {
        tracing::warn!(node_id = %n, "node missing: no heartbeat");
    }
    Ok(())
}

async fn mark_lost(
    tx: &mut Tx,
    lens: &mut HashMap<i64, Lens>,
    after: &mut After,
    cutoff: i64,
) -> Result<()> {
    let lost: Vec<(i64, i64, String)> = in_tx!(tx, |c| sqlx::query_as(
        "UPDATE node_executions SET status = 'LOST', result_cd = 'F', exit_cd = -1, \
         reason = 'the node stopped heartbeating and did not come back in time', end_at = $2 \
         WHERE status IN ('WAIT', 'RUN') AND node_id IN \
         (SELECT id FROM nodes WHERE missing_since IS NOT NULL AND missing_since < $1) \
         RETURNING id, instance_no, node_id"
    )
    .bind(cutoff)
    .bind(now_ms())
    .fetch_all(&mut *c)
    .await)?;
    for (id, no, node) in lost {
        tracing::warn!(exec_id = id, instance = no, node_id = %node, "execution lost");
        ended(lens, after, no, node, id, ExecStatus::Lost);
    }
    Ok(())
}

/// Running executions the node's agent came back without end `LOST`.
async fn lose_unknown(
    tx: &mut Tx,
    lens: &mut HashMap<i64, Lens>,
    after: &mut After,
    node_id: &str,
    exec_ids: &[i64],
) -> Result<()> {
    let now = now_ms();
    for &id in exec_ids {
        let no = end_execution(
            tx,
            id,
            node_id,
            ExecStatus::Lost,
            ResultCode::Failure,
            Some(-1),
            Some("the agent came back without this execution (its journal was lost)"),
            None,
            now,
            false,
        )
        .await?;
        if let Some(no) = no {
            ended(lens, after, no, node_id.to_owned(), id, ExecStatus::Lost);
        }
    }
    Ok(())
}

/// Cancels an instance's open executions (or one node's); the agents are told after the commit.
async fn cancel(
    exec: &Exec,
    tx: &mut Tx,
    lens: &mut HashMap<i64, Lens>,
    after: &mut After,
    instance_no: i64,
    node_id: Option<String>,
    actor: Option<Actor>,
) -> Result<()> {
    let notify = exec
        .cancel_in_tx(tx, actor.as_ref(), instance_no, node_id.as_deref())
        .await?;
    for (_, id) in &notify {
        lens.remove(id);
    }
    if !notify.is_empty() {
        after.cancelled.push(instance_no);
    }
    after.cancels.extend(notify);
    after.touched.insert(instance_no);
    Ok(())
}

#[cfg(test)]
mod tests {
    use haechi_store::{read, Store, StoreOptions};
    use haechi_types::Code;

    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&StoreOptions::sqlite(dir.path().join("store.db")))
            .await
            .expect("open the store");
        (dir, store)
    }

    /// A node's execution in `status` of a new instance; returns (instance, execution).
    async fn execution(store: &Store, node: &str, status: &str) -> (i64, i64) {
        let mut tx = store.begin().await.expect("begin");
        let no: i64 = in_tx!(tx, |c| sqlx::query_scalar(
            "INSERT INTO task_instances (task_id, revision_no, runner_id, runner_gubun, arguments, start_at) \
             VALUES ('t', 1, 'u', 'U', '[]', 1) RETURNING instance_no"
        )
        .fetch_one(&mut *c)
        .await)
        .expect("instance");
        let id: i64 = in_tx!(tx, |c| sqlx::query_scalar(
            "INSERT INTO node_executions (instance_no, node_id, exec_no, latest, status, runner_id, runner_gubun, created_at) \
             VALUES ($1, $2, 1, TRUE, $3, 'u', 'U', 1) RETURNING id"
        )
        .bind(no)
        .bind(node)
        .bind(status)
        .fetch_one(&mut *c)
        .await)
        .expect("execution");
        tx.commit().await.expect("commit");
        (no, id)
    }

    async fn status_of(store: &Store, exec_id: i64) -> (String, bool) {
        read!(store, |db| sqlx::query_as(
            "SELECT status, truncated FROM node_executions WHERE id = $1"
        )
        .bind(exec_id)
        .fetch_one(db)
        .await)
        .expect("status")
    }

    fn frame(exec_id: i64, pos: u64, data: &[u8]) -> OutputFrame {
        OutputFrame {
            exec_id,
            stream: Stream::Out,
            pos,
            data: data.to_vec(),
        }
    }

    fn finished(exec_id: i64, outcome: Outcome, exit_code: Option<i32>) -> Finished {
        Finished {
            exec_id,
            outcome,
            exit_code,
            reason: None,
            started_at_ms: Some(1),
            ended_at_ms: 2,
            out_len: 0,
            err_len: 0,
            truncated: false,
        }
    }

    #[tokio::test]
    async fn started_runs_a_waiting_execution_and_stops_an_ended_one() {
        let (_dir, store) = store().await;
        let (no, waiting) = execution(&store, "n1", "WAIT").await;
        let (_, cancelled) = execution(&store, "n1", "CANCEL").await;
        let mut tx = store.begin().await.expect("begin");
        let mut after = After::default();
        started(&mut tx, &mut after, "n1".into(), waiting, 5)
            .await
            .expect("started");
        started(&mut tx, &mut after, "n1".into(), cancelled, 5)
            .await
            .expect("started");
        // Another node's agent cannot start this node's execution.
        started(&mut tx, &mut after, "n2".into(), waiting, 5)
            .await
            .expect("started");
        tx.commit().await.expect("commit");
        assert_eq!(status_of(&store, waiting).await.0, "RUN");
        assert_eq!(after.events.len(), 1);
        assert_eq!(after.events[0].instance_no, no);
        assert_eq!(after.events[0].status, ExecStatus::Run);
        assert_eq!(after.cancels, vec![("n1".to_owned(), cancelled)]);
    }

    #[tokio::test]
    async fn output_is_appended_once_and_a_finished_executions_output_is_ignored() {
        let (_dir, store) = store().await;
        let (no, id) = execution(&store, "n1", "RUN").await;
        let mut tx = store.begin().await.expect("begin");
        let (mut lens, mut deltas, mut after) = (HashMap::new(), HashMap::new(), After::default());
        for f in [
            frame(id, 0, b"abc"),
            frame(id, 0, b"abc"), // a resend: already stored
            frame(id, 5, b"zz"),  // past a gap: dropped
            frame(id, 2, b"cde"), // overlaps: only "de" is new
        ] {
            output(&mut tx, &mut lens, &mut deltas, 1000, "n1", &f)
                .await
                .expect("output");
        }
        finish(
            &mut tx,
            &mut lens,
            &mut after,
            "n1".into(),
            &finished(id, Outcome::Exited, Some(0)),
        )
        .await
        .expect("finish");
        output(
            &mut tx,
            &mut lens,
            &mut deltas,
            1000,
            "n1",
            &frame(id, 5, b"late"),
        )
        .await
        .expect("output after the end");
        // The same report again (the agent resends until acknowledged) changes nothing.
        let events = after.events.len();
        finish(
            &mut tx,
            &mut lens,
            &mut after,
            "n1".into(),
            &finished(id, Outcome::Failed, Some(1)),
        )
        .await
        .expect("finish again");
        tx.commit().await.expect("commit");
        assert_eq!(deltas.get(&id), Some(&(5, 0)));
        let stored: Vec<(i64, Vec<u8>)> = read!(store, |db| sqlx::query_as(
            "SELECT pos, data FROM execution_output WHERE exec_id = $1 ORDER BY pos"
        )
        .bind(id)
        .fetch_all(db)
        .await)
        .expect("output");
        assert_eq!(stored, vec![(0, b"abc".to_vec()), (3, b"de".to_vec())]);
        assert_eq!(status_of(&store, id).await.0, "END");
        let result: String = read!(store, |db| sqlx::query_scalar(
            "SELECT result_cd FROM node_executions WHERE id = $1"
        )
        .bind(id)
        .fetch_one(db)
        .await)
        .expect("result");
        assert_eq!(result, "S");
        assert_eq!(events, 1);
        assert_eq!(after.events.len(), 1);
        assert!(after.touched.contains(&no));
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_cut_and_the_execution_marked_truncated() {
        let (_dir, store) = store().await;
        let (_, id) = execution(&store, "n1", "RUN").await;
        let mut tx = store.begin().await.expect("begin");
        let (mut lens, mut deltas) = (HashMap::new(), HashMap::new());
        let room = 10 + TRUNCATION_MARKER_ROOM as usize;
        let big = vec![b'x'; room + 50];
        output(
            &mut tx,
            &mut lens,
            &mut deltas,
            10,
            "n1",
            &frame(id, 0, &big),
        )
        .await
        .expect("output");
        tx.commit().await.expect("commit");
        assert_eq!(deltas.get(&id), Some(&(room as i64, 0)));
        assert!(status_of(&store, id).await.1);
    }

    #[tokio::test]
    async fn a_report_of_an_execution_that_already_ended_changes_nothing() {
        let (_dir, store) = store().await;
        let (_, id) = execution(&store, "n1", "CANCEL").await;
        let mut tx = store.begin().await.expect("begin");
        let (mut lens, mut after) = (HashMap::new(), After::default());
        finish(
            &mut tx,
            &mut lens,
            &mut after,
            "n1".into(),
            &finished(id, Outcome::Exited, Some(0)),
        )
        .await
        .expect("finish");
        lose_unknown(&mut tx, &mut lens, &mut after, "n1", &[id])
            .await
            .expect("unknown");
        tx.commit().await.expect("commit");
        assert_eq!(status_of(&store, id).await.0, "CANCEL");
        assert!(after.events.is_empty());
        assert!(after.touched.is_empty());
    }

    #[tokio::test]
    async fn executions_of_missing_nodes_are_lost_and_those_of_others_kept() {
        let (_dir, store) = store().await;
        let (no, gone) = execution(&store, "gone", "RUN").await;
        let (_, here) = execution(&store, "here", "WAIT").await;
        let mut tx = store.begin().await.expect("begin");
        for (node, missing_since) in [("gone", Some(1_i64)), ("here", None)] {
            in_tx!(tx, |c| sqlx::query(
                "INSERT INTO nodes (id, agent_guid, created_at, updated_at, missing_since) VALUES ($1, $1, 1, 1, $2)"
            )
            .bind(node)
            .bind(missing_since)
            .execute(&mut *c)
            .await
            .map(|_| ()))
            .expect("node");
        }
        let (mut lens, mut after) = (HashMap::new(), After::default());
        mark_lost(&mut tx, &mut lens, &mut after, 100)
            .await
            .expect("mark lost");
        tx.commit().await.expect("commit");
        assert_eq!(status_of(&store, gone).await.0, "LOST");
        assert_eq!(status_of(&store, here).await.0, "WAIT");
        assert_eq!(after.events.len(), 1);
        assert_eq!(after.events[0].exec_id, gone);
        assert!(after.touched.contains(&no));
    }

    /// The operations of a batch apply in the order they arrived: a heartbeat before the
    /// missing-node sweep does not save a node whose heartbeat is old, one after it does.
    #[tokio::test]
    async fn a_batch_applies_its_operations_in_order() {
        let (_dir, store) = store().await;
        let exec = Exec::start(
            store.clone(),
            crate::ExecConfig {
                agents: Default::default(),
                tasks: Default::default(),
                files: Default::default(),
                utc_offset_secs: 0,
            },
        );
        let mut tx = store.begin().await.expect("begin");
        for node in ["first", "second"] {
            in_tx!(tx, |c| sqlx::query(
                "INSERT INTO nodes (id, agent_guid, created_at, updated_at) VALUES ($1, $1, 1, 1)"
            )
            .bind(node)
            .execute(&mut *c)
            .await
            .map(|_| ()))
            .expect("node");
        }
        tx.commit().await.expect("commit");
        let now = now_ms();
        let ops = vec![
            Op::Heartbeats(vec![("first".into(), 2, None)]),
            Op::MarkMissing { cutoff: now },
            Op::Heartbeats(vec![("second".into(), now, None)]),
        ];
        let mut lens = HashMap::new();
        assert!(apply(&exec, ops, &mut lens).await.is_ok());
        let missing: Vec<(String, Option<i64>)> = read!(store, |db| sqlx::query_as(
            "SELECT id, missing_since FROM nodes ORDER BY id"
        )
        .fetch_all(db)
        .await)
        .expect("nodes");
        assert!(
            missing[0].1.is_some(),
            "first: its old heartbeat came before the sweep"
        );
        assert!(
            missing[1].1.is_none(),
            "second: its heartbeat came after the sweep"
        );
        exec.shutdown().await;
    }

    #[test]
    fn an_internal_error_fails_the_batch_and_others_answer_only_their_caller() {
        let mut replies = Vec::new();
        let (tx, _rx) = oneshot::channel();
        assert!(answer(&mut replies, tx, Err(Error::conflict("taken")), ()).is_ok());
        let (tx, _rx) = oneshot::channel();
        let e = answer(&mut replies, tx, Err(Error::internal("disk")), ()).expect_err("fails");
        assert_eq!(e.code, Code::Internal);
        assert!(matches!(&replies[0].1, Err(e) if e.code == Code::Conflict));
        // The failed batch's callers get its error later (`fail`), not this placeholder.
        assert!(replies[1].1.is_ok());
    }
}
