//! Executions: starting them, reading them, and the two kinds of change that come from outside
//! the driver (controls and approval decisions). Those are stored in a transaction of their
//! own that bumps the execution's `rev`, then the driver is told: it reads the execution again
//! and acts (a commit it had in hand fails its `rev` fence, so nothing it planned before the
//! change is written).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use haechi_audit::Outcome;
use haechi_identity::{Actor, Caller, Permission};
use haechi_store::{in_tx, read, Backend, Tx};
use haechi_types::{time::now_ms, Error, Result};
use serde_json::{json, Map, Value};
use time::{OffsetDateTime, UtcOffset};

use crate::actions::load_actions;
use crate::definition::{self, Action, Definition};
use crate::driver::Driver;
use crate::journal::{insert_events, NewEvent, NewExecution};
use crate::lease;
use crate::model::*;
use crate::state::{load_run, RunState, StepState};
use crate::{workflows, Engine, Workflows};

/// Longest approval comment, characters.
const MAX_COMMENT: usize = 2000;
/// How often an execution driven by another server is read while waiting for it.
const REMOTE_POLL: Duration = Duration::from_millis(250);

#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: String,
    workflow_id: i64,
    version: i64,
    status: String,
    current_step: String,
    steps_total: i64,
    steps_done: i64,
    started_by: String,
    created_at: i64,
    ended_at: Option<i64>,
    workflow_name: String,
}

impl SummaryRow {
    fn view(self) -> ExecutionSummary {
        ExecutionSummary {
            execution_id: self.id,
            wf_id: self.workflow_id.to_string(),
            workflow_name: self.workflow_name,
            version: self.version,
            status: RunStatus::parse(&self.status).unwrap_or(RunStatus::Failed),
            current_step: self.current_step,
            progress: progress(self.steps_done, self.steps_total),
            started_by: self.started_by,
            created_at: self.created_at,
            ended_at: self.ended_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct DecisionRow {
    status: String,
    attempts: i64,
    retry_at: Option<i64>,
    decision: Option<String>,
    decided_by: Option<String>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    rev: i64,
    at: i64,
    step: Option<String>,
    status: String,
    attempt: i64,
    message: String,
    task_instance_no: Option<i64>,
}

/// A decision on an approval step.
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    pub step: String,
    pub decision: Decision,
    pub comment: Option<String>,
}

const SUMMARY_SELECT: &str = "SELECT e.id, e.workflow_id, e.version, e.status, e.current_step, e.steps_total, \
     e.steps_done, e.started_by, e.created_at, e.ended_at, v.name AS workflow_name FROM workflow_executions e \
     JOIN workflow_versions v ON v.workflow_id = e.workflow_id AND v.version = e.version";

/// Longest parameter value kept in an audit event, characters.
const AUDIT_VALUE_CHARS: usize = 200;

/// A parameter value as the audit log keeps it (long values are cut).
fn audit_text(v: &str) -> String {
    if v.chars().count() <= AUDIT_VALUE_CHARS {
        return v.to_owned();
    }
    let cut: String = v.chars().take(AUDIT_VALUE_CHARS).collect();
    format!("{cut}…")
}

/// `YYYYMMDD` in the server's time zone.
pub(crate) fn today(utc_offset_secs: i32) -> String {
    let offset = UtcOffset::from_whole_seconds(utc_offset_secs).unwrap_or(UtcOffset::UTC);
    let t = OffsetDateTime::now_utc().to_offset(offset);
    format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
}

pub(crate) fn not_found(id: &str) -> Error {
    Error::not_found(format_args!("execution '{id}'"))
}

/// Locks an execution's row until the transaction ends (PostgreSQL; SQLite has one writer).
/// An execution's row as a control or decision sees it.
#[derive(sqlx::FromRow)]
pub(crate) struct Locked {
    pub status: String,
    pub active: bool,
    pub rev: i64,
    current_step: String,
    steps_done: i64,
    steps_total: i64,
}

/// Reads an execution's row and locks it until the transaction ends (PostgreSQL; SQLite has
/// one writer).
pub(crate) async fn lock_run(tx: &mut Tx, id: &str) -> Result<Option<Locked>> {
    let sql = format!(
        "SELECT status, active, rev, current_step, steps_done, steps_total FROM workflow_executions \
         WHERE id = $1{}",
        tx.for_update()
    );
    Ok(in_tx!(tx, |c| sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *c)
        .await)?)
}

async fn bump(tx: &mut Tx, id: &str, rev: i64) -> Result<()> {
    in_tx!(tx, |c| sqlx::query(
        "UPDATE workflow_executions SET rev = $2, updated_at = $3 WHERE id = $1"
    )
    .bind(id)
    .bind(rev)
    .bind(now_ms())
    .execute(&mut *c)
    .await
    .map(|_| ()))?;
    Ok(())
}

pub(crate) async fn announce(tx: &mut Tx, id: &str) -> Result<()> {
    if tx.backend() == Backend::Postgres {
        in_tx!(tx, |c| sqlx::query(lease::notify_sql())
            .bind(lease::CHANNEL)
            .bind(id)
            .execute(&mut *c)
            .await
            .map(|_| ()))?;
    }
    Ok(())
}

/// What an execute may ask besides the parameters.
#[derive(Debug, Clone, Default)]
pub struct ExecuteOptions {
    /// Run only these steps: the others are `SKIPPED` from the start and count as met.
    pub only_steps: Option<Vec<String>>,
}

/// Which steps `only_steps` leaves out (`true`: skipped); an unknown name → 400.
fn skipped_steps(def: &Definition, only: Option<&[String]>) -> Result<Vec<bool>> {
    let Some(only) = only else {
        return Ok(vec![false; def.steps.len()]);
    };
    if only.is_empty() {
        return Err(Error::field(
            "only_steps",
            "must name at least one step (leave it out to run every step)",
        ));
    }
    for (j, name) in only.iter().enumerate() {
        if !def.steps.iter().any(|s| s.name == *name) {
            return Err(Error::field(
                format!("only_steps[{j}]"),
                format_args!("the workflow has no step '{name}'"),
            ));
        }
    }
    Ok(def.steps.iter().map(|s| !only.contains(&s.name)).collect())
}

/// What the steps will do as the starter, checked before anything is stored (each step
/// checks again when it starts, as the starter may lose a right in between): a
/// `db_access` step needs `dbpolicy.manage`; a task step needs `task.execute`, as if
/// the starter ran the task themselves; an `env_from_vault` variable needs the
/// starter to be able to use the credential's value (read through the vault, which
/// audits the read, and dropped).
pub(crate) async fn check_starter(eng: &Engine, caller: &Caller, def: &Definition) -> Result<()> {
    let (p, actor) = (&*caller.principal, &caller.actor);
    for step in &def.steps {
        if let Action::Task(t) = &step.action {
            if !p.can(Permission::TaskExecute) {
                return Err(Error::forbidden(format!(
                    "step '{}' runs task '{}' on {}: user '{}' lacks the permission 'task.execute' to run it",
                    step.name,
                    t.task,
                    t.nodes.join(", "),
                    p.user_id
                )));
            }
        }
        match &step.action {
            Action::DbAccess(d) if !p.can(Permission::DbPolicyManage) => {
                return Err(Error::forbidden(format!(
                    "step '{}' unlocks DB policy '{}': user '{}' lacks the permission 'dbpolicy.manage' to run it",
                    step.name, d.policy, p.user_id
                )));
            }
            Action::Task(t) if !t.env_from_vault.is_empty() => {
                let Some(secrets) = &eng.secrets else {
                    return Err(Error::invalid(format!(
                        "step '{}': env_from_vault is not available on this server",
                        step.name
                    )));
                };
                for (name, r) in &t.env_from_vault {
                    if let Err(e) = secrets
                        .read(p.id, actor, r.credential_id, &r.attribute)
                        .await
                    {
                        if e.code == haechi_types::Code::Internal {
                            return Err(e);
                        }
                        return Err(Error::forbidden(format!(
                            "step '{}', env_from_vault.{name}: user '{}' may not use attribute '{}' of credential {}: {}",
                            step.name, p.user_id, r.attribute, r.credential_id, e.message
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Seals the values of the password parameters with the vault's keys and puts `****` in
/// their place; a sealed vault (503) or a server without the vault refuses the run.
pub(crate) async fn seal_passwords(
    eng: &Engine,
    def: &Definition,
    resolved: &mut BTreeMap<String, String>,
) -> Result<Vec<(String, crate::ports::SealedSecret)>> {
    let mut out = Vec::new();
    for name in def.password_params() {
        let Some(value) = resolved.get_mut(name) else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        let Some(sealer) = &eng.sealer else {
            return Err(Error::unavailable(format!(
                "params.{name} is a password parameter, which needs the credential vault; this server runs without it"
            )));
        };
        let sealed = sealer
            .seal(&secret_context(name), value)
            .await
            .map_err(|e| match e.code {
                haechi_types::Code::Internal => e,
                _ => Error::new(
                    e.code,
                    format!(
                        "params.{name} is a password parameter, stored only sealed with the vault's keys: {}; nothing was started",
                        e.message
                    ),
                ),
            })?;
        *value = definition::MASK.to_owned();
        out.push((name.to_owned(), sealed));
    }
    Ok(out)
}

/// What a password parameter's ciphertext is bound to.
pub(crate) fn secret_context(name: &str) -> String {
    format!("workflow-param:{name}")
}

/// The values of an execution's password parameters, opened; an error says why they cannot
/// be (gone with the end of the run, vault sealed, data key rotated).
pub(crate) async fn open_passwords(
    eng: &Engine,
    execution_id: &str,
    names: &[&str],
) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    if names.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(String, i64, Vec<u8>, Vec<u8>)> = read!(eng.store, |db| {
        sqlx::query_as(
        "SELECT name, key_id, nonce, ciphertext FROM workflow_secret_params WHERE execution_id = $1"
    )
    .bind(execution_id)
    .fetch_all(db)
    .await
    })
    .map_err(|e| Error::from(e).message)?;
    let Some(sealer) = &eng.sealer else {
        return Err(
            "password parameters need the credential vault; this server runs without it".into(),
        );
    };
    for name in names {
        let Some((_, key_id, nonce, ciphertext)) = rows.iter().find(|r| r.0 == *name) else {
            continue;
        };
        let sealed = crate::ports::SealedSecret {
            key_id: *key_id,
            nonce: nonce.clone(),
            ciphertext: ciphertext.clone(),
        };
        match sealer.open(&secret_context(name), &sealed).await {
            Ok(v) => {
                out.insert(
                    (*name).to_owned(),
                    secrecy::ExposeSecret::expose_secret(&v).to_owned(),
                );
            }
            Err(e) => {
                return Err(format!(
                    "password parameter '{name}' cannot be opened: {}",
                    e.message
                ))
            }
        }
    }
    Ok(out)
}

/// Stops, pauses or resumes an execution. An action that does not fit its state is a 409
/// (recorded in the audit log as a failure).
pub(crate) fn control_run<'a>(
    eng: &'a Arc<Engine>,
    actor: &'a Actor,
    id: &'a str,
    action: Control,
) -> futures::future::BoxFuture<'a, Result<StatusView>> {
    Box::pin(async move {
        let mut tx = eng.store.begin().await?;
        let locked = lock_run(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        let rev = locked.rev;
        let from = RunStatus::parse(&locked.status).unwrap_or(RunStatus::Failed);
        let asking = match (action, from) {
            (Control::Resume, RunStatus::Paused) => asking_step(eng, &mut tx, id).await?,
            _ => None,
        };
        let to = match control_target(id, action, from, asking.as_deref()) {
            Ok(to) => to,
            Err(why) => {
                drop(tx);
                haechi_audit::record(
                    &eng.store,
                    actor
                        .event("workflow.control")
                        .target(id.to_owned())
                        .outcome(Outcome::Failure)
                        .detail(json!({ "action": action.as_str(), "status": from.as_str(), "reason": why })),
                )
                .await?;
                return Err(Error::conflict(why));
            }
        };
        let now = now_ms();
        let new_rev = rev + 1;
        in_tx!(tx, |c| sqlx::query(
            "UPDATE workflow_executions SET status = $2, rev = $3, updated_at = $4, \
         ended_at = CASE WHEN $2 = 'STOPPED' THEN $4 ELSE ended_at END WHERE id = $1"
        )
        .bind(id)
        .bind(to.as_str())
        .bind(new_rev)
        .bind(now)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        let mut events = Vec::new();
        if to == RunStatus::Stopped {
            events = stop_steps(&mut tx, id, now, &actor.user_id).await?;
        }
        events.push(NewEvent {
            step: None,
            status: to.as_str(),
            attempt: 0,
            message: format!("{} by {}", action.as_str(), actor.user_id),
            task_instance_no: None,
        });
        insert_events(&mut tx, id, new_rev, now, 0, &events).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("workflow.control")
                .target(id.to_owned())
                .detail(
                    json!({ "action": action.as_str(), "from": from.as_str(), "to": to.as_str() }),
                ),
        )
        .await?;
        if to == RunStatus::Stopped {
            crate::journal::delete_secrets(&mut tx, id).await?;
        }
        announce(&mut tx, id).await?;
        tx.commit().await?;
        if to == RunStatus::Stopped {
            crate::metrics::ended(RunStatus::Stopped);
        }
        eng.poke(id);
        control_children(eng, actor, id, action).await?;
        // The state the control left, not a later one (the run may go on at once).
        Ok(StatusView {
            execution_id: id.to_owned(),
            status: to,
            current_step: locked.current_step,
            progress: progress(locked.steps_done, locked.steps_total),
        })
    })
}

/// A decision's comment: at most [`MAX_COMMENT`] characters, line breaks and tabs allowed.
fn check_comment(comment: Option<&str>) -> Result<()> {
    let Some(c) = comment else { return Ok(()) };
    if c.chars().count() > MAX_COMMENT {
        return Err(Error::field(
            "comment",
            format_args!("must be at most {MAX_COMMENT} characters"),
        ));
    }
    if c.chars()
        .any(|ch| ch.is_control() && !matches!(ch, '\n' | '\r' | '\t'))
    {
        return Err(Error::field(
            "comment",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Why approval step `step` cannot take a decision now (a 409), or `None` when it waits for
/// one: it must be running its attempt (not waiting for its needs or to ask again) and not
/// decided yet.
fn decision_refusal(step: &str, row: &DecisionRow) -> Option<String> {
    match (row.status.as_str(), row.retry_at, &row.decision) {
        ("WAITING", _, _) => Some(format!(
            "step '{step}' has not started yet: it waits for the steps it needs"
        )),
        ("RUNNING", Some(_), _) => Some(format!(
            "step '{step}' waits to ask again (retry); decide when it does"
        )),
        ("RUNNING", None, Some(d)) => Some(format!(
            "step '{step}' was already decided ({d} by {})",
            row.decided_by.as_deref().unwrap_or_default()
        )),
        ("RUNNING", None, None) => None,
        (s, _, _) => Some(format!("step '{step}' has already ended ({s})")),
    }
}

/// The journal's line for a decision.
fn decision_message(decision: Decision, by: &str, comment: Option<&str>) -> String {
    let verb = match decision {
        Decision::Approve => "approved",
        Decision::Reject => "rejected",
    };
    match comment.filter(|c| !c.is_empty()) {
        Some(c) => format!("{verb} by {by}: {c}"),
        None => format!("{verb} by {by}"),
    }
}

/// The state `action` takes an execution in state `from` to, or why it does not fit (a 409).
/// `asking` is the step a `PAUSED` run waits for a decision on, if any.
fn control_target(
    id: &str,
    action: Control,
    from: RunStatus,
    asking: Option<&str>,
) -> std::result::Result<RunStatus, String> {
    match (action, from) {
        (Control::Stop, RunStatus::Running | RunStatus::Paused) => Ok(RunStatus::Stopped),
        (Control::Pause, RunStatus::Running) => Ok(RunStatus::Paused),
        (Control::Resume, RunStatus::Paused) => match asking {
            None => Ok(RunStatus::Running),
            Some(step) => Err(format!(
                "execution {id} waits for a decision on failed step '{step}' (on_failure: ask): \
                 retry, skip or mark it as succeeded first; resume alone does not decide it"
            )),
        },
        (_, s) if s.is_final() => Err(format!(
            "execution {id} has already ended ({}); only a RUNNING or PAUSED execution can be controlled",
            s.as_str()
        )),
        (Control::Pause, RunStatus::Paused) => Err(format!("execution {id} is already PAUSED")),
        (Control::Resume, RunStatus::Running) => Err(format!(
            "execution {id} is RUNNING, not PAUSED: there is nothing to resume"
        )),
        _ => Err(format!(
            "'{}' does not fit execution {id} in state {}",
            action.as_str(),
            from.as_str()
        )),
    }
}

/// A stop: the running steps are `STOPPED` and the waiting ones `SKIPPED`; returns their
/// journal events.
async fn stop_steps(tx: &mut Tx, id: &str, now: i64, by: &str) -> Result<Vec<NewEvent>> {
    let mut events = Vec::new();
    let open: Vec<(String, String, i64)> = in_tx!(tx, |c| sqlx::query_as(
        "SELECT name, status, attempts FROM workflow_steps WHERE execution_id = $1 \
     AND status IN ('RUNNING', 'WAITING') ORDER BY idx"
    )
    .bind(id)
    .fetch_all(&mut *c)
    .await)?;
    in_tx!(tx, |c| sqlx::query(
        "UPDATE workflow_steps SET status = 'STOPPED', ended_at = $2, retry_at = NULL \
     WHERE execution_id = $1 AND status = 'RUNNING'"
    )
    .bind(id)
    .bind(now)
    .execute(&mut *c)
    .await
    .map(|_| ()))?;
    in_tx!(tx, |c| {
        sqlx::query(
    "UPDATE workflow_steps SET status = 'SKIPPED' WHERE execution_id = $1 AND status = 'WAITING'"
    )
    .bind(id)
    .execute(&mut *c)
    .await
    .map(|_| ())
    })?;
    for (name, status, attempts) in open {
        let (new, message) = if status == "RUNNING" {
            (StepStatus::Stopped, format!("stopped by {by}"))
        } else {
            (StepStatus::Skipped, String::new())
        };
        events.push(NewEvent {
            step: Some(name),
            status: new.as_str(),
            attempt: if new == StepStatus::Stopped {
                attempts
            } else {
                0
            },
            message,
            task_instance_no: None,
        });
    }
    Ok(events)
}

/// Passes a control on to the run's children that are `RUNNING` or `PAUSED`.
async fn control_children(
    eng: &Arc<Engine>,
    actor: &Actor,
    id: &str,
    action: Control,
) -> Result<()> {
    // The action reaches the children (a child that does not fit it, such as one already
    // paused or ended, is left as it is).
    let children: Vec<String> = read!(eng.store, |db| sqlx::query_scalar(
        "SELECT id FROM workflow_executions WHERE parent_execution_id = $1 \
     AND status IN ('RUNNING', 'PAUSED') ORDER BY id"
    )
    .bind(id)
    .fetch_all(db)
    .await)?;
    for child in children {
        match control_run(eng, actor, &child, action).await {
            Ok(_) => {}
            Err(e) if e.code == haechi_types::Code::Conflict => {}
            Err(e) => {
                tracing::warn!(execution = %id, %child, "could not {} the child execution: {}", action.as_str(), e.message)
            }
        }
    }
    Ok(())
}

/// The first `FAILED` step of a `PAUSED` run that waits for an operator's decision
/// (`on_failure: ask`).
async fn asking_step(eng: &Engine, tx: &mut Tx, id: &str) -> Result<Option<String>> {
    let head: Option<(i64, i64)> = in_tx!(tx, |c| sqlx::query_as(
        "SELECT workflow_id, version FROM workflow_executions WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await)?;
    let Some((workflow_id, version)) = head else {
        return Ok(None);
    };
    let failed: Vec<i64> = in_tx!(tx, |c| {
        sqlx::query_scalar(
        "SELECT idx FROM workflow_steps WHERE execution_id = $1 AND status = 'FAILED' ORDER BY idx"
    )
    .bind(id)
    .fetch_all(&mut *c)
    .await
    })?;
    if failed.is_empty() {
        return Ok(None);
    }
    let loaded = eng.loaded(workflow_id, version).await?;
    Ok(failed.into_iter().find_map(|i| {
        loaded
            .def
            .steps
            .get(i as usize)
            .filter(|s| s.on_failure == definition::OnFailure::Ask)
            .map(|s| s.name.clone())
    }))
}

impl Workflows {
    /// Starts workflow `key` (its id, or the name of a live workflow) at its current version
    /// with `params`; returns the new execution id. The caller checked the permission.
    pub async fn execute(
        &self,
        caller: &Caller,
        key: &str,
        params: &Map<String, Value>,
    ) -> Result<String> {
        self.execute_with(caller, key, params, &ExecuteOptions::default())
            .await
    }

    /// [`Workflows::execute`] with options (`only_steps`).
    pub async fn execute_with(
        &self,
        caller: &Caller,
        key: &str,
        params: &Map<String, Value>,
        opts: &ExecuteOptions,
    ) -> Result<String> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let family = caller.actor.origin.family();
        let wf = workflows::find(&self.eng.store, key, false).await?;
        let loaded = self.eng.loaded(wf.id, wf.version).await?;
        let mut resolved = definition::resolve_params(&loaded.def, params)?;
        let skipped = skipped_steps(&loaded.def, opts.only_steps.as_deref())?;
        check_starter(&self.eng, caller, &loaded.def).await?;
        let secrets = seal_passwords(&self.eng, &loaded.def, &mut resolved).await?;
        let shown: BTreeMap<&str, String> = resolved
            .iter()
            .map(|(k, v)| (k.as_str(), audit_text(v)))
            .collect();
        let mut detail = json!({
            "wf_id": wf.id.to_string(), "name": wf.name, "version": wf.version, "params": shown,
        });
        if let Some(only) = &opts.only_steps {
            detail["only_steps"] = json!(only);
        }
        let audit = actor.event("workflow.execute").detail(detail);
        let created = self
            .eng
            .journal
            .create(NewExecution {
                workflow_id: wf.id,
                version: wf.version,
                params: serde_json::to_string(&resolved)?,
                started_by: p.user_id.clone(),
                started_by_pk: p.id,
                source_ip: actor.ip.to_string(),
                family: family.as_str(),
                step_names: loaded.def.steps.iter().map(|s| s.name.clone()).collect(),
                skipped,
                concurrency: loaded.def.concurrency,
                owner: self.eng.server_id.clone(),
                lease_until: now_ms() + self.eng.cfg.lease_secs as i64 * 1000,
                day: today(self.eng.utc_offset_secs),
                audit,
                parent: None,
                secrets,
            })
            .await?;
        crate::metrics::started();
        if let Err(e) = Driver::spawn(&self.eng, &created.id).await {
            // The lease keeper starts the missing driver at its next round.
            tracing::warn!(execution = %created.id, "could not start its driver yet: {}", e.message);
        }
        Ok(created.id)
    }

    /// The MDRM status of an execution.
    pub async fn status(&self, id: &str) -> Result<StatusView> {
        let row: Option<(String, String, i64, i64)> = read!(self.eng.store, |db| {
            sqlx::query_as(
            "SELECT status, current_step, steps_done, steps_total FROM workflow_executions WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(db)
        .await
        })?;
        let (status, current_step, done, total) = row.ok_or_else(|| not_found(id))?;
        Ok(StatusView {
            execution_id: id.to_owned(),
            status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
            current_step,
            progress: progress(done, total),
        })
    }

    /// Waits until the execution ends or `timeout` passes; returns its status then.
    pub async fn wait_end(&self, id: &str, timeout: Duration) -> Result<StatusView> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let st = self.status(id).await?;
            if st.status.is_final() || tokio::time::Instant::now() >= deadline {
                return Ok(st);
            }
            let step_deadline = deadline.min(tokio::time::Instant::now() + Duration::from_secs(5));
            match self.eng.status_watch(id) {
                Some(mut rx) => {
                    let _ =
                        tokio::time::timeout_at(step_deadline, rx.wait_for(|(s, _)| s.is_final()))
                            .await;
                }
                None => {
                    tokio::time::sleep_until(
                        step_deadline.min(tokio::time::Instant::now() + REMOTE_POLL),
                    )
                    .await
                }
            }
        }
    }

    /// Stops, pauses or resumes an execution. An action that does not fit its state is a 409
    /// (recorded in the audit log as a failure). The action reaches the execution's active
    /// child executions (workflow steps) too.
    pub async fn control(&self, caller: &Caller, id: &str, action: Control) -> Result<StatusView> {
        let actor = &caller.actor;
        control_run(&self.eng, actor, id, action).await
    }

    /// Decides an approval step. Only a holder of the step's role may; the step must be
    /// waiting for its decision.
    pub async fn decide(
        &self,
        caller: &Caller,
        id: &str,
        req: DecisionRequest,
    ) -> Result<StepView> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let DecisionRequest {
            step,
            decision,
            comment,
        } = req;
        let step = step.as_str();
        check_comment(comment.as_deref())?;
        let head: Option<(i64, i64)> = read!(self.eng.store, |db| sqlx::query_as(
            "SELECT workflow_id, version FROM workflow_executions WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(db)
        .await)?;
        let (workflow_id, version) = head.ok_or_else(|| not_found(id))?;
        let loaded = self.eng.loaded(workflow_id, version).await?;
        let idx =
            *loaded.graph.index.get(step).ok_or_else(|| {
                Error::not_found(format_args!("step '{step}' in execution '{id}'"))
            })?;
        let Action::Approval { role } = &loaded.def.steps[idx].action else {
            return Err(Error::conflict(format!(
                "step '{step}' is a {} step; only approval steps take a decision",
                loaded.def.steps[idx].action.kind().as_str()
            )));
        };
        if !p.roles.iter().any(|r| r.name == *role) {
            return Err(Error::forbidden(format!(
                "step '{step}' must be decided by a holder of role '{role}', which user '{}' does not hold",
                p.user_id
            )));
        }
        let mut tx = self.eng.store.begin().await?;
        let Locked { status, rev, .. } =
            lock_run(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        let run_status = RunStatus::parse(&status).unwrap_or(RunStatus::Failed);
        if run_status.is_final() {
            return Err(Error::conflict(format!(
                "execution {id} has already ended ({status}); its steps take no decisions"
            )));
        }
        let row: Option<DecisionRow> = in_tx!(tx, |c| {
            sqlx::query_as(
            "SELECT status, attempts, retry_at, decision, decided_by FROM workflow_steps WHERE execution_id = $1 AND idx = $2"
        )
        .bind(id)
        .bind(idx as i64)
        .fetch_optional(&mut *c)
        .await
        })?;
        let row = row.ok_or_else(|| not_found(id))?;
        if let Some(why) = decision_refusal(step, &row) {
            return Err(Error::conflict(why));
        }
        let now = now_ms();
        in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE workflow_steps SET decision = $3, decided_by = $4, decided_at = $5, decision_comment = $6 \
             WHERE execution_id = $1 AND idx = $2 AND decision IS NULL"
        )
        .bind(id)
        .bind(idx as i64)
        .bind(decision.as_str())
        .bind(&p.user_id)
        .bind(now)
        .bind(&comment)
        .execute(&mut *c)
        .await
        .map(|_| ())
        })?;
        let new_rev = rev + 1;
        bump(&mut tx, id, new_rev).await?;
        let message = decision_message(decision, &p.user_id, comment.as_deref());
        insert_events(
            &mut tx,
            id,
            new_rev,
            now,
            0,
            &[NewEvent {
                step: Some(step.to_owned()),
                status: StepStatus::Running.as_str(),
                attempt: row.attempts,
                message,
                task_instance_no: None,
            }],
        )
        .await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("workflow.decision")
                .target(format!("{id}/{step}"))
                .detail(json!({ "action": decision.as_str(), "role": role, "comment": comment })),
        )
        .await?;
        announce(&mut tx, id).await?;
        tx.commit().await?;
        self.eng.poke(id);
        let run = load_run(&self.eng.store, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let mut actions = load_actions(&self.eng.store, id).await?;
        Ok(step_view(
            &loaded.def.steps[idx].action,
            &run.steps[idx],
            actions.remove(&idx).unwrap_or_default(),
        ))
    }

    /// An execution with every step.
    pub async fn execution(&self, id: &str) -> Result<ExecutionView> {
        let run = load_run(&self.eng.store, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let loaded = self.eng.loaded(run.workflow_id, run.version).await?;
        let actions = load_actions(&self.eng.store, id).await?;
        Ok(execution_view(&run, &loaded.def, actions))
    }

    /// The RTO report of an execution: per step its target, real duration, attempts and the
    /// operators' actions, and the whole run against the workflow's target.
    pub async fn report(&self, id: &str) -> Result<ReportView> {
        let run = load_run(&self.eng.store, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let loaded = self.eng.loaded(run.workflow_id, run.version).await?;
        let mut actions = load_actions(&self.eng.store, id).await?;
        let now = now_ms();
        let secs = |ms: i64| ms.max(0) as f64 / 1000.0;
        let within = |d: Option<f64>, rto: Option<f64>| match (d, rto) {
            (Some(d), Some(r)) => Some(d <= r),
            _ => None,
        };
        let steps = loaded
            .def
            .steps
            .iter()
            .zip(&run.steps)
            .enumerate()
            .map(|(i, (d, s))| {
                let rto = d.rto_secs.map(|r| secs(r.ms() as i64));
                let duration = s.started_at.map(|a| secs(s.ended_at.unwrap_or(now) - a));
                StepReport {
                    name: s.name.clone(),
                    kind: d.action.kind().as_str().to_owned(),
                    status: s.status,
                    rto_secs: rto,
                    started_at: s.started_at,
                    ended_at: s.ended_at,
                    duration_secs: duration,
                    attempts: s.attempts,
                    within_rto: within(duration, rto),
                    actions: actions.remove(&i).unwrap_or_default(),
                }
            })
            .collect();
        let rto = loaded.def.rto_secs.map(|r| secs(r.ms() as i64));
        let duration = secs(run.ended_at.unwrap_or(now) - run.created_at);
        Ok(ReportView {
            execution_id: run.id.clone(),
            wf_id: run.workflow_id.to_string(),
            workflow_name: loaded.def.name.clone(),
            version: run.version,
            status: run.status,
            started_by: run.started_by.clone(),
            created_at: run.created_at,
            ended_at: run.ended_at,
            rto_secs: rto,
            duration_secs: duration,
            within_rto: within(Some(duration), rto),
            steps,
        })
    }

    /// Executions, newest first.
    pub async fn list_executions(
        &self,
        f: &ExecutionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Listed<ExecutionSummary>> {
        let cond = "($1 IS NULL OR e.workflow_id = $1) AND ($2 IS NULL OR e.status = $2) \
                    AND ($3 IS NULL OR e.started_by = $3) AND ($4 IS NULL OR e.created_at >= $4) \
                    AND ($5 IS NULL OR e.created_at <= $5)";
        let status = f.status.map(|s| s.as_str());
        let sql = format!("{SUMMARY_SELECT} WHERE {cond} ORDER BY e.created_at DESC, e.id DESC LIMIT $6 OFFSET $7");
        let rows: Vec<SummaryRow> = read!(self.eng.store, |db| sqlx::query_as(&sql)
            .bind(f.workflow_id)
            .bind(status)
            .bind(&f.started_by)
            .bind(f.from_ms)
            .bind(f.to_ms)
            .bind(limit)
            .bind(offset)
            .fetch_all(db)
            .await)?;
        let count = format!("SELECT COUNT(*) FROM workflow_executions e WHERE {cond}");
        let total: i64 = read!(self.eng.store, |db| sqlx::query_scalar(&count)
            .bind(f.workflow_id)
            .bind(status)
            .bind(&f.started_by)
            .bind(f.from_ms)
            .bind(f.to_ms)
            .fetch_one(db)
            .await)?;
        Ok(Listed {
            items: rows.into_iter().map(SummaryRow::view).collect(),
            total,
        })
    }

    /// The transition log after `after` (a `seq` from an earlier page). With `wait`, waits
    /// up to that long for something new while the run has not ended.
    pub async fn events(&self, id: &str, after: i64, wait: Duration) -> Result<EventPage> {
        const PAGE: i64 = 2000;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let status = self.status(id).await?.status;
            let rows: Vec<EventRow> = read!(self.eng.store, |db| {
                sqlx::query_as(
                    "SELECT rev, at, step, status, attempt, message, task_instance_no FROM workflow_events \
                     WHERE execution_id = $1 AND rev > $2 ORDER BY rev, idx LIMIT $3"
                )
                .bind(id)
                .bind(after)
                .bind(PAGE)
                .fetch_all(db)
                .await
            })?;
            if !rows.is_empty() || status.is_final() || tokio::time::Instant::now() >= deadline {
                let mut rows = rows;
                // Never split one transition's lines across pages.
                if rows.len() as i64 == PAGE {
                    let last = rows[rows.len() - 1].rev;
                    if rows[0].rev != last {
                        rows.retain(|r| r.rev != last);
                    }
                }
                let next = rows.last().map_or(after, |r| r.rev);
                let events = rows
                    .into_iter()
                    .map(|r| EventView {
                        seq: r.rev,
                        at: r.at,
                        step: r.step,
                        status: r.status,
                        attempt: r.attempt,
                        message: r.message,
                        task_instance_no: r.task_instance_no,
                    })
                    .collect();
                return Ok(EventPage {
                    execution_id: id.to_owned(),
                    status,
                    events,
                    next,
                });
            }
            let step_deadline = deadline.min(tokio::time::Instant::now() + Duration::from_secs(5));
            match self.eng.status_watch(id) {
                Some(mut rx) => {
                    rx.borrow_and_update();
                    let _ = tokio::time::timeout_at(step_deadline, rx.changed()).await;
                }
                None => {
                    tokio::time::sleep_until(
                        step_deadline.min(tokio::time::Instant::now() + REMOTE_POLL),
                    )
                    .await
                }
            }
        }
    }
}

fn step_view(action: &Action, s: &StepState, actions: Vec<StepActionView>) -> StepView {
    StepView {
        name: s.name.clone(),
        kind: action.kind().as_str().to_owned(),
        status: s.status,
        attempts: s.attempts,
        started_at: s.started_at,
        ended_at: s.ended_at,
        retry_at: s.retry_at,
        task_instance_no: s.task_instance_no,
        error: s.error.clone(),
        result: s
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok()),
        decision: match (&s.decision, &s.decided_by, s.decided_at) {
            (Some(d), Some(by), Some(at)) => Decision::parse(d).map(|action| DecisionView {
                action,
                by: by.clone(),
                at,
                comment: s.decision_comment.clone(),
            }),
            _ => None,
        },
        actions,
        child_execution_id: s.child_execution_id.clone(),
    }
}

fn execution_view(
    run: &RunState,
    def: &crate::Definition,
    mut actions: BTreeMap<usize, Vec<StepActionView>>,
) -> ExecutionView {
    ExecutionView {
        execution_id: run.id.clone(),
        wf_id: run.workflow_id.to_string(),
        workflow_name: def.name.clone(),
        version: run.version,
        status: run.status,
        current_step: run.current_step.clone(),
        progress: progress(run.steps_done, run.steps.len() as i64),
        params: run.params.clone(),
        started_by: run.started_by.clone(),
        created_at: run.created_at,
        ended_at: run.ended_at,
        parent_execution_id: run.parent_execution_id.clone(),
        error: run.error.clone(),
        steps: def
            .steps
            .iter()
            .zip(&run.steps)
            .enumerate()
            .map(|(i, (d, s))| step_view(&d.action, s, actions.remove(&i).unwrap_or_default()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_fit_only_some_states() {
        let to = |a, from| control_target("e1", a, from, None);
        assert_eq!(
            to(Control::Stop, RunStatus::Running),
            Ok(RunStatus::Stopped)
        );
        assert_eq!(to(Control::Stop, RunStatus::Paused), Ok(RunStatus::Stopped));
        assert_eq!(
            to(Control::Pause, RunStatus::Running),
            Ok(RunStatus::Paused)
        );
        assert_eq!(
            to(Control::Resume, RunStatus::Paused),
            Ok(RunStatus::Running)
        );
        assert_eq!(
            to(Control::Pause, RunStatus::Paused),
            Err("execution e1 is already PAUSED".to_owned())
        );
        assert!(
            to(Control::Resume, RunStatus::Running).is_err_and(|e| e.contains("nothing to resume"))
        );
        for from in [RunStatus::Completed, RunStatus::Failed, RunStatus::Stopped] {
            for a in [Control::Stop, Control::Pause, Control::Resume] {
                let e = to(a, from).unwrap_err();
                assert!(e.contains("has already ended"), "{e}");
                assert!(e.contains(from.as_str()), "{e}");
            }
        }
    }

    #[test]
    fn resume_does_not_decide_a_step_that_asks() {
        let e = control_target("e1", Control::Resume, RunStatus::Paused, Some("db")).unwrap_err();
        assert!(e.contains("failed step 'db' (on_failure: ask)"), "{e}");
        // Stopping is always possible.
        assert_eq!(
            control_target("e1", Control::Stop, RunStatus::Paused, Some("db")),
            Ok(RunStatus::Stopped)
        );
    }

    fn row(status: &str, retry_at: Option<i64>, decision: Option<&str>) -> DecisionRow {
        DecisionRow {
            status: status.to_owned(),
            attempts: 1,
            retry_at,
            decision: decision.map(str::to_owned),
            decided_by: decision.map(|_| "bob".to_owned()),
        }
    }

    #[test]
    fn an_approval_takes_one_decision_while_it_asks() {
        assert_eq!(decision_refusal("ok", &row("RUNNING", None, None)), None);
        let why = |r| decision_refusal("ok", &r).unwrap_or_default();
        assert!(why(row("WAITING", None, None)).contains("has not started yet"));
        assert!(why(row("RUNNING", Some(5), None)).contains("waits to ask again"));
        assert_eq!(
            why(row("RUNNING", None, Some("approve"))),
            "step 'ok' was already decided (approve by bob)"
        );
        assert_eq!(
            why(row("FAILED", None, Some("reject"))),
            "step 'ok' has already ended (FAILED)"
        );
        assert!(why(row("SUCCEEDED", None, None)).contains("has already ended (SUCCEEDED)"));
    }

    #[test]
    fn decisions_and_their_comments() {
        assert_eq!(
            decision_message(Decision::Approve, "bob", Some("go")),
            "approved by bob: go"
        );
        assert_eq!(
            decision_message(Decision::Reject, "bob", Some("")),
            "rejected by bob"
        );
        assert!(check_comment(None).is_ok());
        assert!(check_comment(Some("line one\nline two\tok")).is_ok());
        assert!(check_comment(Some("bell\u{7}")).is_err());
        assert!(check_comment(Some(&"x".repeat(MAX_COMMENT + 1))).is_err());
    }
}
