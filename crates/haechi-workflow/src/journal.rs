//! The journal: the one task that writes executions. Drivers send it transitions; it commits
//! whatever has queued up in one transaction (group commit), so a thousand executions stepping
//! at once cost a few commits per batch rather than one each, while a lone execution's
//! transition is committed at once. Each transition is fenced by the execution's `rev` and
//! owner: if anything else changed the execution since the driver read it (a control, a
//! decision, another server taking it over), that transition is refused as a conflict and the
//! rest of the batch commits without it.
//!
//! A task step's attempt and the OPMATE task instance it starts are stored in the same
//! transaction ([`crate::ports::TaskRunner::start_in_tx`]): after a crash an attempt either has
//! its instance recorded or never started one, so no task is ever started twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use haechi_audit::Event;
use haechi_store::{in_tx, Backend, Store, Tx};
use haechi_types::{time::now_ms, Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::model::{RunStatus, StepStatus};
use crate::ports::{is_refusal, TaskRunner, TaskStart};
use crate::state::StepState;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 256;
/// Journal writers on PostgreSQL.
const PG_SHARDS: usize = 4;

/// A new execution to store.
pub(crate) struct NewExecution {
    pub workflow_id: i64,
    pub version: i64,
    /// JSON object of the resolved parameters.
    pub params: String,
    pub started_by: String,
    pub started_by_pk: i64,
    pub source_ip: String,
    pub family: &'static str,
    pub step_names: Vec<String>,
    /// Per step: left out by `only_steps` (stored `SKIPPED`).
    pub skipped: Vec<bool>,
    /// The workflow's `concurrency`: refused when this many of its runs are active already.
    pub concurrency: Option<u32>,
    pub owner: String,
    pub lease_until: i64,
    /// `YYYYMMDD` in the server's time zone.
    pub day: String,
    /// The audit event of the execute (its target is set to the new id).
    pub audit: Event,
    /// A child execution: the parent execution and its step's index.
    pub parent: Option<(String, i64)>,
    /// The sealed values of its password parameters.
    pub secrets: Vec<(String, crate::ports::SealedSecret)>,
}

/// A stored execution.
pub(crate) struct CreatedExecution {
    pub id: String,
}

/// One line of the transition log.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub step: Option<String>,
    pub status: &'static str,
    pub attempt: i64,
    pub message: String,
    pub task_instance_no: Option<i64>,
}

/// The execution row after a transition.
#[derive(Debug, Clone)]
pub(crate) struct RunUpdate {
    pub status: RunStatus,
    pub active: bool,
    pub current_step: String,
    pub steps_done: i64,
    pub error: Option<String>,
    pub ended_at: Option<i64>,
    /// The definition has password parameters: their sealed values go when the run ends.
    pub has_secrets: bool,
}

/// A change of one execution, written only if its `rev` is still `expect_rev`.
pub(crate) struct Transition {
    pub execution_id: String,
    pub expect_rev: i64,
    pub owner: String,
    pub run: RunUpdate,
    /// Changed steps (index, whole new row).
    pub steps: Vec<(usize, StepState)>,
    pub events: Vec<NewEvent>,
    /// Task steps whose new attempt starts a task instance in this transaction.
    pub task_starts: Vec<(usize, TaskStart)>,
    /// Workflow steps whose new attempt starts a child execution in this transaction (or
    /// why it cannot).
    pub child_starts: Vec<(usize, std::result::Result<NewExecution, String>)>,
}

/// What became of a transition.
pub(crate) enum Applied {
    Committed {
        rev: i64,
        /// Per task start: the instance number, or why it was refused.
        tasks: Vec<(usize, std::result::Result<i64, Error>)>,
        /// Per child start: the child execution's id, or why it was refused.
        children: Vec<(usize, std::result::Result<String, Error>)>,
    },
    /// The execution changed since the driver read it: read it again.
    Conflict,
}

enum Job {
    Create(Box<NewExecution>, oneshot::Sender<Result<CreatedExecution>>),
    Apply(Box<Transition>, oneshot::Sender<Result<Applied>>),
}

/// A job's result, kept until the batch commits.
enum Outcome {
    Created(CreatedExecution),
    Applied(Applied),
}

/// The handle drivers and the engine send work to.
#[derive(Clone)]
pub(crate) struct Journal {
    /// One writer per shard; an execution's transitions always go to the same one, so they
    /// commit in order.
    shards: Arc<[mpsc::UnboundedSender<Job>]>,
    next: Arc<AtomicUsize>,
}

impl Journal {
    /// One writer on SQLite (it has one write connection); on PostgreSQL several, each with a
    /// connection of its own, so commits of different executions overlap.
    pub fn start(store: Store, tasks: Arc<dyn TaskRunner>) -> Journal {
        let n = match store.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => PG_SHARDS,
        };
        let shards: Vec<_> = (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(store.clone(), tasks.clone(), rx));
                tx
            })
            .collect();
        Journal {
            shards: shards.into(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn shard_of(&self, execution_id: &str) -> &mpsc::UnboundedSender<Job> {
        // FNV-1a: stable and cheap; the shard only has to be the same for one execution.
        let h = execution_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    pub async fn create(&self, new: NewExecution) -> Result<CreatedExecution> {
        let (tx, rx) = oneshot::channel();
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        self.shards[shard]
            .send(Job::Create(Box::new(new), tx))
            .map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())?
    }

    pub async fn apply(&self, t: Transition) -> Result<Applied> {
        let (tx, rx) = oneshot::channel();
        self.shard_of(&t.execution_id)
            .send(Job::Apply(Box::new(t), tx))
            .map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())?
    }
}

fn stopping() -> Error {
    Error::unavailable("the workflow engine is stopping")
}

async fn run(store: Store, tasks: Arc<dyn TaskRunner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let jobs = std::mem::take(&mut batch);
        let count = jobs.len();
        commit_batch(&store, tasks.as_ref(), jobs).await;
        metrics::histogram!("haechi_workflow_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("haechi_workflow_commit_batch_size").record(count as f64);
    }
}

/// Commits a batch in one transaction; when that fails, each job in a transaction of its own,
/// so one bad job fails alone.
async fn commit_batch(store: &Store, tasks: &dyn TaskRunner, jobs: Vec<Job>) {
    if jobs.len() > 1 {
        let mut dispatch = Vec::new();
        match try_batch(store, tasks, &jobs, &mut dispatch).await {
            Ok(outcomes) => {
                for d in dispatch {
                    d();
                }
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    reply(job, Ok(outcome));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "a workflow journal batch of {} failed ({e}); retrying each job alone",
                    jobs.len()
                );
            }
        }
    }
    for job in jobs {
        let mut dispatch = Vec::new();
        let one = std::slice::from_ref(&job);
        match try_batch(store, tasks, one, &mut dispatch).await {
            Ok(mut outcomes) => {
                for d in dispatch {
                    d();
                }
                let outcome = outcomes
                    .pop()
                    .ok_or_else(|| Error::internal("journal lost a result"));
                reply(job, outcome);
            }
            Err(e) => reply(job, Err(e)),
        }
    }
}

fn reply(job: Job, outcome: Result<Outcome>) {
    match job {
        Job::Create(_, tx) => {
            let _ = tx.send(outcome.and_then(|o| match o {
                Outcome::Created(c) => Ok(c),
                Outcome::Applied(_) => Err(Error::internal("journal mixed up results")),
            }));
        }
        Job::Apply(_, tx) => {
            let _ = tx.send(outcome.and_then(|o| match o {
                Outcome::Applied(a) => Ok(a),
                Outcome::Created(_) => Err(Error::internal("journal mixed up results")),
            }));
        }
    }
}

fn job_key(job: &Job) -> &str {
    match job {
        Job::Apply(t, _) => &t.execution_id,
        Job::Create(..) => "",
    }
}

/// One transaction for a batch, in phases so that every transaction takes its locks in one
/// order — executions' rows, then the audit head, then the day's id sequence — as the controls
/// and decisions (execution row, then audit head) and other journal shards do: no deadlock.
async fn try_batch(
    store: &Store,
    tasks: &dyn TaskRunner,
    jobs: &[Job],
    dispatch: &mut Vec<Box<dyn FnOnce() + Send>>,
) -> Result<Vec<Outcome>> {
    let mut tx = store.begin().await?;
    // Phase 1: every transition's execution row (fenced), steps and log lines, in the order of
    // the execution ids (the lease renewal locks the rows in that order too).
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|a, b| job_key(&jobs[*a]).cmp(job_key(&jobs[*b])));
    let mut revs: Vec<Option<i64>> = vec![None; jobs.len()];
    for i in order {
        if let Job::Apply(t, _) = &jobs[i] {
            revs[i] = apply_rows(&mut tx, t).await?;
        }
    }
    let audits = jobs.iter().zip(&revs).any(|(job, rev)| match job {
        Job::Create(..) => true,
        Job::Apply(t, _) => {
            rev.is_some() && (!t.task_starts.is_empty() || !t.child_starts.is_empty())
        }
    });
    if audits {
        tx.lock_row("audit_head", "id", 1_i64).await?;
    }
    // Phase 2: task instances of new attempts; phase 3: new executions.
    let mut outcomes = Vec::with_capacity(jobs.len());
    for (job, rev) in jobs.iter().zip(&revs) {
        outcomes.push(match (job, rev) {
            (Job::Apply(_, _), None) => Some(Outcome::Applied(Applied::Conflict)),
            (Job::Apply(t, _), Some(rev)) => {
                let started = start_tasks(&mut tx, tasks, t, *rev, dispatch).await?;
                let children = start_children(&mut tx, t, *rev).await?;
                Some(Outcome::Applied(Applied::Committed {
                    rev: *rev,
                    tasks: started,
                    children,
                }))
            }
            (Job::Create(..), _) => None,
        });
    }
    for (job, slot) in jobs.iter().zip(outcomes.iter_mut()) {
        if let Job::Create(new, _) = job {
            *slot = Some(Outcome::Created(create(&mut tx, new).await?));
        }
    }
    tx.commit().await?;
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| Error::internal("journal lost a result")))
        .collect()
}

/// The run lock (`concurrency` of a workflow): a conflict naming the oldest active run when
/// `limit` runs of workflow `workflow_id` are `RUNNING` or `PAUSED` already, not counting
/// `except` (a run being set going again by an operator's decision).
pub(crate) async fn run_lock(
    tx: &mut Tx,
    workflow_id: i64,
    limit: Option<u32>,
    except: Option<&str>,
) -> Result<()> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let running: Vec<(String, String)> = in_tx!(tx, |c| sqlx::query_as(
        "SELECT id, status FROM workflow_executions WHERE workflow_id = $1 \
         AND status IN ('RUNNING', 'PAUSED') AND id <> $2 ORDER BY created_at, id"
    )
    .bind(workflow_id)
    .bind(except.unwrap_or(""))
    .fetch_all(&mut *c)
    .await)?;
    if running.len() as u64 >= u64::from(limit) {
        let (id, status) = &running[0];
        return Err(Error::conflict(format!(
            "workflow {workflow_id} allows {limit} run{} at a time (concurrency: {limit}): execution {id} is {status}",
            if limit == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

pub(crate) async fn create(tx: &mut Tx, new: &NewExecution) -> Result<CreatedExecution> {
    // The run lock. Every create holds the audit head's lock by now (PostgreSQL), so creates
    // across servers are serialized and this count sees every committed run.
    run_lock(tx, new.workflow_id, new.concurrency, None).await?;
    let seq: i64 = in_tx!(tx, |c| sqlx::query_scalar(
        "INSERT INTO workflow_exec_seq (day, last) VALUES ($1, 1) \
         ON CONFLICT (day) DO UPDATE SET last = workflow_exec_seq.last + 1 RETURNING last"
    )
    .bind(&new.day)
    .fetch_one(&mut *c)
    .await)?;
    let id = format!("EXEC_{}_{:04}", new.day, seq);
    let now = now_ms();
    in_tx!(tx, |c| {
        sqlx::query(
        "INSERT INTO workflow_executions (id, workflow_id, version, status, active, rev, params, started_by, \
         started_by_pk, source_ip, family, current_step, steps_total, steps_done, owner, lease_until, created_at, \
         updated_at, parent_execution_id, parent_step) \
         VALUES ($1, $2, $3, 'RUNNING', TRUE, 1, $4, $5, $6, $7, $8, '', $9, 0, $10, $11, $12, $12, $13, $14)"
    )
    .bind(&id)
    .bind(new.workflow_id)
    .bind(new.version)
    .bind(&new.params)
    .bind(&new.started_by)
    .bind(new.started_by_pk)
    .bind(&new.source_ip)
    .bind(new.family)
    .bind(new.step_names.len() as i64)
    .bind(&new.owner)
    .bind(new.lease_until)
    .bind(now)
    .bind(new.parent.as_ref().map(|p| p.0.clone()))
    .bind(new.parent.as_ref().map(|p| p.1))
    .execute(&mut *c)
    .await
    .map(|_| ())
    })?;
    for (name, sealed) in &new.secrets {
        in_tx!(tx, |c| sqlx::query(
            "INSERT INTO workflow_secret_params (execution_id, name, key_id, nonce, ciphertext) \
             VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(&id)
        .bind(name)
        .bind(sealed.key_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
    }
    let status = |i: usize| {
        if new.skipped.get(i).copied().unwrap_or(false) {
            StepStatus::Skipped.as_str()
        } else {
            StepStatus::Waiting.as_str()
        }
    };
    for (chunk_no, chunk) in new.step_names.chunks(200).enumerate() {
        let rows: Vec<String> = (0..chunk.len())
            .map(|k| format!("($1, ${}, ${}, ${})", 3 * k + 2, 3 * k + 3, 3 * k + 4))
            .collect();
        let sql = format!(
            "INSERT INTO workflow_steps (execution_id, idx, name, status) VALUES {}",
            rows.join(", ")
        );
        in_tx!(tx, |c| {
            let mut q = sqlx::query(&sql).bind(&id);
            for (k, name) in chunk.iter().enumerate() {
                let i = chunk_no * 200 + k;
                q = q.bind(i as i64).bind(name).bind(status(i));
            }
            q.execute(&mut *c).await.map(|_| ())
        })?;
    }
    let message = match &new.parent {
        Some((parent, _)) => format!(
            "started by {} (version {}) as a child of execution {parent}",
            new.started_by, new.version
        ),
        None => format!("started by {} (version {})", new.started_by, new.version),
    };
    let mut events = vec![NewEvent {
        step: None,
        status: RunStatus::Running.as_str(),
        attempt: 0,
        message,
        task_instance_no: None,
    }];
    for (i, name) in new.step_names.iter().enumerate() {
        if new.skipped.get(i).copied().unwrap_or(false) {
            events.push(NewEvent {
                step: Some(name.clone()),
                status: StepStatus::Skipped.as_str(),
                attempt: 0,
                message: "not in only_steps".to_owned(),
                task_instance_no: None,
            });
        }
    }
    insert_events(tx, &id, 1, now, 0, &events).await?;
    haechi_audit::append(tx, new.audit.clone().target(id.clone())).await?;
    Ok(CreatedExecution { id })
}

/// Phase 1 of a transition: the execution row, fenced by `rev` and owner (`None`: a conflict,
/// nothing written), the changed steps and the log lines.
async fn apply_rows(tx: &mut Tx, t: &Transition) -> Result<Option<i64>> {
    let now = now_ms();
    let r = &t.run;
    let updated = in_tx!(tx, |c| {
        sqlx::query(
        "UPDATE workflow_executions SET rev = rev + 1, status = $3, active = $4, current_step = $5, \
         steps_done = $6, error = $7, ended_at = $8, updated_at = $9 \
         WHERE id = $1 AND rev = $2 AND owner = $10"
    )
    .bind(&t.execution_id)
    .bind(t.expect_rev)
    .bind(r.status.as_str())
    .bind(r.active)
    .bind(&r.current_step)
    .bind(r.steps_done)
    .bind(&r.error)
    .bind(r.ended_at)
    .bind(now)
    .bind(&t.owner)
    .execute(&mut *c)
    .await
    .map(|x| x.rows_affected())
    })?;
    if updated == 0 {
        return Ok(None);
    }
    let rev = t.expect_rev + 1;
    for (idx, s) in &t.steps {
        write_step(tx, &t.execution_id, *idx, s).await?;
    }
    if r.status.is_final() && r.has_secrets {
        delete_secrets(tx, &t.execution_id).await?;
    }
    insert_events(tx, &t.execution_id, rev, now, 0, &t.events).await?;
    Ok(Some(rev))
}

/// One `workflow.vault.use` event per `env_from_vault` variable of a task start, in the
/// transaction that starts the task: which execution, step, attempt, variable, credential and
/// attribute, and the instance that received it; or, refused, why. Never the value.
async fn audit_vault_uses(
    tx: &mut Tx,
    t: &Transition,
    step: &str,
    attempt: i64,
    req: &TaskStart,
    started: std::result::Result<i64, String>,
) -> Result<()> {
    for u in &req.vault_uses {
        let mut event = req
            .actor
            .event("workflow.vault.use")
            .target(format!("credential:{}", u.credential_id));
        let mut detail = serde_json::json!({
            "execution_id": t.execution_id, "step": step, "attempt": attempt, "env": u.name,
            "credentialId": u.credential_id, "attribute": u.attribute,
        });
        match &started {
            Ok(no) => detail["taskInstanceNo"] = (*no).into(),
            Err(why) => {
                event = event.outcome(haechi_audit::Outcome::Failure);
                detail["reason"] = why.clone().into();
            }
        }
        haechi_audit::append(tx, event.detail(detail)).await?;
    }
    Ok(())
}

/// Phase 2 of a transition: the task instance of each task step's new attempt, stored with the
/// attempt. A refused start (task not approved, node disabled…) is recorded on the step and
/// returned; the attempt then fails with that reason.
async fn start_tasks(
    tx: &mut Tx,
    tasks: &dyn TaskRunner,
    t: &Transition,
    rev: i64,
    dispatch: &mut Vec<Box<dyn FnOnce() + Send>>,
) -> Result<Vec<(usize, std::result::Result<i64, Error>)>> {
    let mut results = Vec::with_capacity(t.task_starts.len());
    let mut events = Vec::new();
    for (idx, req) in &t.task_starts {
        let step = t.steps.iter().find(|(i, _)| i == idx).map(|(_, s)| s);
        let attempt = step.map_or(0, |s| s.attempts);
        let step_name = step.map(|s| s.name.clone()).unwrap_or_default();
        let started = match &req.env_refused {
            Some(why) => Err(Error::forbidden(why.clone())),
            None => tasks.start_in_tx(tx, req.clone()).await,
        };
        if !req.vault_uses.is_empty() && !matches!(&started, Err(e) if !is_refusal(e)) {
            let outcome = match &started {
                Ok(s) => Ok(s.instance_no),
                Err(e) => Err(e.message.clone()),
            };
            audit_vault_uses(tx, t, &step_name, attempt, req, outcome).await?;
        }
        match started {
            Ok(started) => {
                in_tx!(tx, |c| {
                    sqlx::query(
                    "UPDATE workflow_steps SET task_instance_no = $3 WHERE execution_id = $1 AND idx = $2"
                )
                .bind(&t.execution_id)
                .bind(*idx as i64)
                .bind(started.instance_no)
                .execute(&mut *c)
                .await
                .map(|_| ())
                })?;
                events.push(NewEvent {
                    step: step.map(|s| s.name.clone()),
                    status: StepStatus::Running.as_str(),
                    attempt,
                    message: format!("task instance {} started", started.instance_no),
                    task_instance_no: Some(started.instance_no),
                });
                dispatch.push(started.dispatch);
                results.push((*idx, Ok(started.instance_no)));
            }
            Err(e) if is_refusal(&e) => {
                let message = if req.env_refused.is_some() {
                    format!("the task was not started: {}", e.message)
                } else {
                    format!("the task could not be started: {}", e.message)
                };
                in_tx!(tx, |c| sqlx::query(
                    "UPDATE workflow_steps SET error = $3 WHERE execution_id = $1 AND idx = $2"
                )
                .bind(&t.execution_id)
                .bind(*idx as i64)
                .bind(&message)
                .execute(&mut *c)
                .await
                .map(|_| ()))?;
                results.push((*idx, Err(Error::new(e.code, message))));
            }
            Err(e) => return Err(e),
        }
    }
    if !events.is_empty() {
        insert_events(tx, &t.execution_id, rev, now_ms(), t.events.len(), &events).await?;
    }
    Ok(results)
}

/// The run has ended: the sealed values of its password parameters go, ciphertext and all.
pub(crate) async fn delete_secrets(tx: &mut Tx, execution_id: &str) -> Result<()> {
    in_tx!(tx, |c| sqlx::query(
        "DELETE FROM workflow_secret_params WHERE execution_id = $1"
    )
    .bind(execution_id)
    .execute(&mut *c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Phase 2 of a transition, for workflow steps: the child execution of each new attempt,
/// stored with the attempt (so an attempt never has two). A refusal (the workflow is
/// missing, its parameters do not fit, its run lock is full) is recorded on the step and
/// returned; the attempt then fails with that reason.
async fn start_children(
    tx: &mut Tx,
    t: &Transition,
    rev: i64,
) -> Result<Vec<(usize, std::result::Result<String, Error>)>> {
    let mut results = Vec::with_capacity(t.child_starts.len());
    let mut events = Vec::new();
    for (idx, child) in &t.child_starts {
        let step = t.steps.iter().find(|(i, _)| i == idx).map(|(_, s)| s);
        let attempt = step.map_or(0, |s| s.attempts);
        let created = match child {
            Ok(new) => create(tx, new).await,
            Err(why) => Err(Error::conflict(why.clone())),
        };
        match created {
            Ok(c) => {
                in_tx!(tx, |conn| {
                    sqlx::query(
                    "UPDATE workflow_steps SET child_execution_id = $3 WHERE execution_id = $1 AND idx = $2"
                )
                .bind(&t.execution_id)
                .bind(*idx as i64)
                .bind(&c.id)
                .execute(&mut *conn)
                .await
                .map(|_| ())
                })?;
                events.push(NewEvent {
                    step: step.map(|s| s.name.clone()),
                    status: StepStatus::Running.as_str(),
                    attempt,
                    message: format!("child execution {} started", c.id),
                    task_instance_no: None,
                });
                results.push((*idx, Ok(c.id)));
            }
            Err(e) if is_refusal(&e) => {
                let message = format!("the child workflow was not started: {}", e.message);
                in_tx!(tx, |conn| sqlx::query(
                    "UPDATE workflow_steps SET error = $3 WHERE execution_id = $1 AND idx = $2"
                )
                .bind(&t.execution_id)
                .bind(*idx as i64)
                .bind(&message)
                .execute(&mut *conn)
                .await
                .map(|_| ()))?;
                results.push((*idx, Err(Error::new(e.code, message))));
            }
            Err(e) => return Err(e),
        }
    }
    if !events.is_empty() {
        let first = t.events.len() + t.task_starts.len();
        insert_events(tx, &t.execution_id, rev, now_ms(), first, &events).await?;
    }
    Ok(results)
}

/// Writes a step's whole row.
pub(crate) async fn write_step(
    tx: &mut Tx,
    execution_id: &str,
    idx: usize,
    s: &StepState,
) -> Result<()> {
    in_tx!(tx, |c| {
        sqlx::query(
        "UPDATE workflow_steps SET status = $3, attempts = $4, started_at = $5, ended_at = $6, attempt_started_at = $7, \
         retry_at = $8, resumes = $9, task_instance_no = $10, decision = $11, decided_by = $12, decided_at = $13, \
         decision_comment = $14, error = $15, result = $16, arguments = $17, cut_by_failure = $18, \
         child_execution_id = $19 WHERE execution_id = $1 AND idx = $2"
    )
    .bind(execution_id)
    .bind(idx as i64)
    .bind(s.status.as_str())
    .bind(s.attempts)
    .bind(s.started_at)
    .bind(s.ended_at)
    .bind(s.attempt_started_at)
    .bind(s.retry_at)
    .bind(s.resumes)
    .bind(s.task_instance_no)
    .bind(&s.decision)
    .bind(&s.decided_by)
    .bind(s.decided_at)
    .bind(&s.decision_comment)
    .bind(&s.error)
    .bind(&s.result)
    .bind(&s.arguments)
    .bind(s.cut_by_failure)
    .bind(&s.child_execution_id)
    .execute(&mut *c)
    .await
    .map(|_| ())
    })?;
    Ok(())
}

/// Appends log lines under one `rev`.
pub(crate) async fn insert_events(
    tx: &mut Tx,
    execution_id: &str,
    rev: i64,
    at: i64,
    first_idx: usize,
    events: &[NewEvent],
) -> Result<()> {
    for (chunk_no, chunk) in events.chunks(100).enumerate() {
        let rows: Vec<String> = (0..chunk.len())
            .map(|k| {
                let b = 4 + k * 6;
                format!(
                    "($1, $2, ${b}, $3, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO workflow_events (execution_id, rev, idx, at, step, status, attempt, message, task_instance_no) \
             VALUES {}",
            rows.join(", ")
        );
        in_tx!(tx, |c| {
            let mut q = sqlx::query(&sql).bind(execution_id).bind(rev).bind(at);
            for (k, e) in chunk.iter().enumerate() {
                q = q
                    .bind((first_idx + chunk_no * 100 + k) as i64)
                    .bind(&e.step)
                    .bind(e.status)
                    .bind(e.attempt)
                    .bind(&e.message)
                    .bind(e.task_instance_no);
            }
            q.execute(&mut *c).await.map(|_| ())
        })?;
    }
    Ok(())
}
