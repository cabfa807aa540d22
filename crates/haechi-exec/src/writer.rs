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
use crate::model::ExecStatus;
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
    NodeSeen {
        node_id: String,
        agent_ver: String,
        os_name: String,
        ip: String,
        hostname: String,
        /// JSON object of the node's labels.
        labels: String,
        /// JSON array of the OS users the agent can run as, when it says.
        os_users: Option<String>,
        at: i64,
    },
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
    result_cd: &str,
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
    .bind(result_cd)
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
        } => {
            let no: Option<i64> = in_tx!(tx, |c| sqlx::query_scalar(
                "UPDATE node_executions SET status = 'RUN', start_at = COALESCE(start_at, $3) \
                 WHERE id = $1 AND node_id = $2 AND status = 'WAIT' RETURNING instance_no"
            )
            .bind(exec_id)
            .bind(&node_id)
            .bind(at)
            .fetch_optional(&mut *c)
            .await)?;
            match no {
                Some(no) => after.events.push(ExecEvent {
                    instance_no: no,
                    node_id: node_id.clone(),
                    exec_id,
                    status: ExecStatus::Run,
                    instance_ended: false,
                }),
                None => {
                    // Already ended (cancelled before it started, or lost): stop it on the agent.
                    let st: Option<(String, bool)> = in_tx!(tx, |c| {
                        sqlx::query_as(
                        "SELECT status, cancel_requested FROM node_executions WHERE id = $1 AND node_id = $2"
                    )
                    .bind(exec_id)
                    .bind(&node_id)
                    .fetch_optional(&mut *c)
                    .await
                    })?;
                    if let Some((status, cancel)) = st {
                        if cancel || ExecStatus::parse(&status).is_some_and(ExecStatus::is_final) {
                            after.cancels.push((node_id, exec_id));
                        }
                    }
                }
            }
        }
        Op::Output {
            node_id,
            frame,
            _held: _,
        } => {
            let Some(l) = lens_of(tx, lens, frame.exec_id, &node_id).await? else {
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
            let room = (exec.cfg.agents.output_cap_bytes as i64 + TRUNCATION_MARKER_ROOM as i64
                - l.out
                - l.err)
                .max(0);
            if data.len() as i64 > room {
                data = &data[..room as usize];
                if !l.truncated {
                    tracing::warn!(
                        exec_id = frame.exec_id,
                        %node_id,
                        "the agent sent output beyond the cap; the rest is dropped"
                    );
                    in_tx!(tx, |c| sqlx::query(
                        "UPDATE node_executions SET truncated = $2 WHERE id = $1"
                    )
                    .bind(frame.exec_id)
                    .bind(true)
                    .execute(&mut *c)
                    .await
                    .map(|_| ()))?;
                    if let Some(l) = lens.get_mut(&frame.exec_id) {
                        l.truncated = true;
                    }
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
            let entry = lens.get_mut(&frame.exec_id).expect("loaded above");
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
        Op::Finished {
            node_id,
            finished: f,
            committed,
            _held: _,
        } => {
            let (status, result_cd) = match f.outcome {
                Outcome::Exited if f.exit_code == Some(0) => (ExecStatus::End, "S"),
                Outcome::Exited | Outcome::Failed => (ExecStatus::End, "F"),
                Outcome::Timeout => (ExecStatus::Timeout, "F"),
                Outcome::Cancelled => (ExecStatus::Cancel, "F"),
                Outcome::Lost => (ExecStatus::Lost, "F"),
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
                after.touched.insert(no);
                after.events.push(ExecEvent {
                    instance_no: no,
                    node_id,
                    exec_id: f.exec_id,
                    status,
                    instance_ended: false,
                });
            }
            after.committed.push(committed);
        }
        Op::NodeSeen {
            node_id,
            agent_ver,
            os_name,
            ip,
            hostname,
            labels,
            os_users,
            at,
        } => {
            in_tx!(tx, |c| {
                sqlx::query(
                "UPDATE nodes SET agent_ver = $2, os_name = $3, ip = $4, hostname = $5, heartbeat_at = $6, \
                 missing_since = NULL, updated_at = $6, labels = $7, os_users = $8 WHERE id = $1"
            )
            .bind(&node_id)
            .bind(&agent_ver)
            .bind(&os_name)
            .bind(&ip)
            .bind(&hostname)
            .bind(at)
            .bind(&labels)
            .bind(&os_users)
            .execute(&mut *c)
            .await
            .map(|_| ())
            })?;
        }
        Op::Heartbeats(beats) => {
            for (node, at, skew) in beats {
                in_tx!(tx, |c| sqlx::query(
                    "UPDATE nodes SET heartbeat_at = $2, missing_since = NULL, \
                     clock_skew_ms = COALESCE($3, clock_skew_ms) WHERE id = $1"
                )
                .bind(&node)
                .bind(at)
                .bind(skew)
                .execute(&mut *c)
                .await
                .map(|_| ()))?;
            }
        }
        Op::MarkMissing { cutoff } => {
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
        }
        Op::MarkLost { cutoff } => {
            let lost: Vec<(i64, i64, String)> = in_tx!(tx, |c| {
                sqlx::query_as(
                "UPDATE node_executions SET status = 'LOST', result_cd = 'F', exit_cd = -1, \
                 reason = 'the node stopped heartbeating and did not come back in time', end_at = $2 \
                 WHERE status IN ('WAIT', 'RUN') AND node_id IN \
                 (SELECT id FROM nodes WHERE missing_since IS NOT NULL AND missing_since < $1) \
                 RETURNING id, instance_no, node_id"
            )
            .bind(cutoff)
            .bind(now_ms())
            .fetch_all(&mut *c)
            .await
            })?;
            for (id, no, node) in lost {
                tracing::warn!(exec_id = id, instance = no, node_id = %node, "execution lost");
                if let Some(l) = lens.get_mut(&id) {
                    l.open = false;
                }
                after.touched.insert(no);
                after.events.push(ExecEvent {
                    instance_no: no,
                    node_id: node,
                    exec_id: id,
                    status: ExecStatus::Lost,
                    instance_ended: false,
                });
            }
        }
        Op::Unknown { node_id, exec_ids } => {
            let now = now_ms();
            for id in exec_ids {
                let no = end_execution(
                    tx,
                    id,
                    &node_id,
                    ExecStatus::Lost,
                    "F",
                    Some(-1),
                    Some("the agent came back without this execution (its journal was lost)"),
                    None,
                    now,
                    false,
                )
                .await?;
                if let Some(no) = no {
                    if let Some(l) = lens.get_mut(&id) {
                        l.open = false;
                    }
                    after.touched.insert(no);
                    after.events.push(ExecEvent {
                        instance_no: no,
                        node_id: node_id.clone(),
                        exec_id: id,
                        status: ExecStatus::Lost,
                        instance_ended: false,
                    });
                }
            }
        }
        Op::Cancel {
            instance_no,
            node_id,
            actor,
            reply,
        } => {
            match exec
                .cancel_in_tx(tx, actor.as_ref(), instance_no, node_id.as_deref())
                .await
            {
                Ok(notify) => {
                    for (_, id) in &notify {
                        lens.remove(id);
                    }
                    if !notify.is_empty() {
                        after.cancelled.push(instance_no);
                    }
                    after.cancels.extend(notify);
                    after.touched.insert(instance_no);
                    after.cancel_replies.push((reply, Ok(())));
                }
                Err(e) if e.code == haechi_types::Code::Internal => {
                    after.cancel_replies.push((reply, Ok(())));
                    return Err(e);
                }
                Err(e) => after.cancel_replies.push((reply, Err(e))),
            }
        }
        Op::Rerun {
            instance_no,
            node_id,
            actor,
            env,
            opts,
            reply,
        } => match exec
            .rerun_in_tx(tx, &actor, instance_no, &node_id, env, opts)
            .await
        {
            Ok((node, spec)) => {
                let id = spec.exec_id;
                after.runs.push((node, spec));
                after.rerun_replies.push((reply, Ok(id)));
            }
            Err(e) if e.code == haechi_types::Code::Internal => {
                after.rerun_replies.push((reply, Ok(0)));
                return Err(e);
            }
            Err(e) => after.rerun_replies.push((reply, Err(e))),
        },
    }
    Ok(())
}
