//! Operators' actions on a failed step (CONTRACT §9): retry it (perhaps with corrected
//! arguments), skip it, or mark it as succeeded, each with a reason, audited and listed on the
//! step.
//!
//! An action is stored like a control: in one transaction that records it, changes the step
//! (and the run) and bumps the execution's `rev`, so it is applied exactly once whatever
//! happens to the server before or after it. A retry does not start the attempt itself: it
//! leaves the step waiting to retry at once (`retry_at` = now), and the driver begins the new
//! attempt through the journal as it begins any retry. After a `kill -9` right after the
//! action, the server that takes the run up finds the step due to retry and starts that one
//! attempt; once the attempt is committed it is followed, never started again.
//!
//! A run that had ended `FAILED` becomes `RUNNING` again and this server drives it (its lease
//! is taken in the same transaction); the steps that had been stopped or skipped because of
//! the failure are `WAITING` again. In a run `PAUSED` by `on_failure: ask`, deciding the last
//! step that waits for a decision sets it going again.

use std::collections::BTreeMap;

use haechi_identity::Caller;
use haechi_store::{in_tx, read, Store};
use haechi_types::{time::now_ms, Error, Result};
use serde_json::json;

use crate::definition::{template_refs, Action, OnFailure};
use crate::driver::Driver;
use crate::executions::{announce, lock_run, not_found};
use crate::journal::{insert_events, NewEvent};
use crate::model::{RunStatus, StepAction, StepActionView, StepStatus};
use crate::Workflows;

/// Longest reason, characters.
const MAX_REASON: usize = 2000;
/// Most arguments a retry may give.
const MAX_ARGUMENTS: usize = 100;
/// Longest argument, bytes.
const MAX_ARGUMENT_BYTES: usize = 4096;

/// An operator's action on a step.
#[derive(Debug, Clone)]
pub struct StepActionRequest {
    pub step: String,
    pub action: StepAction,
    pub reason: String,
    /// Retry only: the task step's arguments for this and later attempts.
    pub arguments: Option<Vec<String>>,
}

#[derive(sqlx::FromRow)]
struct ActionRow {
    idx: i64,
    action: String,
    by_user: String,
    at: i64,
    reason: String,
    attempt: i64,
    arguments: Option<String>,
}

/// Every action taken on the execution's steps, by step index, oldest first.
pub(crate) async fn load_actions(
    store: &Store,
    id: &str,
) -> Result<BTreeMap<usize, Vec<StepActionView>>> {
    let rows: Vec<ActionRow> = read!(store, |db| {
        sqlx::query_as(
        "SELECT idx, action, by_user, at, reason, attempt, arguments FROM workflow_step_actions \
         WHERE execution_id = $1 ORDER BY idx, n"
    )
    .bind(id)
    .fetch_all(db)
    .await
    })?;
    let mut out: BTreeMap<usize, Vec<StepActionView>> = BTreeMap::new();
    for r in rows {
        let Some(action) = StepAction::parse(&r.action) else {
            continue;
        };
        out.entry(r.idx as usize).or_default().push(StepActionView {
            action,
            by: r.by_user,
            at: r.at,
            reason: r.reason,
            attempt: r.attempt,
            arguments: r
                .arguments
                .as_deref()
                .and_then(|a| serde_json::from_str(a).ok()),
        });
    }
    Ok(out)
}

fn check_reason(reason: &str) -> Result<String> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Error::field(
            "reason",
            "is required: say why the step is retried, skipped or marked as succeeded",
        ));
    }
    if reason.chars().count() > MAX_REASON {
        return Err(Error::field(
            "reason",
            format_args!("must be at most {MAX_REASON} characters"),
        ));
    }
    if reason
        .chars()
        .any(|ch| ch.is_control() && !matches!(ch, '\n' | '\r' | '\t'))
    {
        return Err(Error::field(
            "reason",
            "must not contain control characters",
        ));
    }
    Ok(reason.to_owned())
}

#[derive(sqlx::FromRow)]
struct StepRowLite {
    status: String,
    attempts: i64,
}

impl Workflows {
    /// Retries, skips or marks as succeeded a step (the caller checked `workflow.control`).
    /// Allowed on a `FAILED` step of a `FAILED` run or of a `PAUSED` run waiting for a
    /// decision (`on_failure: ask`); `skip` also on a `WAITING` step of a `PAUSED` run.
    /// Anything else is a 409 naming the state; a missing reason a 400.
    pub async fn step_action(
        &self,
        caller: &Caller,
        id: &str,
        req: StepActionRequest,
    ) -> Result<crate::model::StepView> {
        let actor = &caller.actor;
        let reason = check_reason(&req.reason)?;
        let step = req.step.as_str();
        let action = req.action;
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
        let def_step = &loaded.def.steps[idx];
        let arguments = match (&req.arguments, action, &def_step.action) {
            (None, _, _) => None,
            (Some(_), StepAction::Skip | StepAction::MarkSucceeded, _) => {
                return Err(Error::field(
                    "arguments",
                    "only a retry takes new arguments",
                ))
            }
            (Some(_), StepAction::Retry, other) if !matches!(other, Action::Task(_)) => {
                return Err(Error::field(
                    "arguments",
                    format_args!(
                        "step '{step}' is a {} step; only task steps take arguments",
                        other.kind().as_str()
                    ),
                ))
            }
            (Some(args), StepAction::Retry, _) => {
                if args.len() > MAX_ARGUMENTS {
                    return Err(Error::field(
                        "arguments",
                        format_args!("at most {MAX_ARGUMENTS} arguments"),
                    ));
                }
                for (j, a) in args.iter().enumerate() {
                    let field = format!("arguments[{j}]");
                    if a.len() > MAX_ARGUMENT_BYTES || a.contains('\0') {
                        return Err(Error::field(
                            &field,
                            format_args!("must be at most {MAX_ARGUMENT_BYTES} bytes, without NUL"),
                        ));
                    }
                    let refs = template_refs(a).map_err(|e| Error::field(&field, e))?;
                    if let Some(r) = refs.iter().find(|r| !loaded.def.params.contains_key(*r)) {
                        return Err(Error::field(
                            &field,
                            format_args!("${{{r}}} names no parameter of the workflow"),
                        ));
                    }
                }
                Some(serde_json::to_string(args)?)
            }
        };

        let mut tx = self.eng.store.begin().await?;
        let locked = lock_run(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        let run_status = RunStatus::parse(&locked.status).unwrap_or(RunStatus::Failed);
        let row: Option<StepRowLite> = in_tx!(tx, |c| sqlx::query_as(
            "SELECT status, attempts FROM workflow_steps WHERE execution_id = $1 AND idx = $2"
        )
        .bind(id)
        .bind(idx as i64)
        .fetch_optional(&mut *c)
        .await)?;
        let row = row.ok_or_else(|| not_found(id))?;
        let step_status = StepStatus::parse(&row.status).unwrap_or(StepStatus::Failed);
        let asks = def_step.on_failure == OnFailure::Ask;
        let why = match (run_status, step_status, action) {
            (RunStatus::Failed, StepStatus::Failed, _) if locked.active => Some(format!(
                "execution {id} is FAILED and still cutting what ran; try again in a moment"
            )),
            (RunStatus::Failed, StepStatus::Failed, _) => None,
            (RunStatus::Paused, StepStatus::Failed, _) if asks => None,
            (RunStatus::Paused, StepStatus::Failed, _) => Some(format!(
                "step '{step}' is FAILED with on_failure: {}, so the PAUSED execution {id} does not wait for a decision on it",
                match def_step.on_failure { OnFailure::Continue => "continue", _ => "stop" }
            )),
            (RunStatus::Paused, StepStatus::Waiting, StepAction::Skip) => None,
            (RunStatus::Failed | RunStatus::Paused, s, _) => Some(format!(
                "step '{step}' is {}; {} applies to a FAILED step{}",
                s.as_str(),
                action.as_str(),
                if action == StepAction::Skip { " (or a WAITING step of a PAUSED execution)" } else { "" }
            )),
            (r, _, _) => Some(format!(
                "execution {id} is {}; step actions apply to a FAILED execution or a PAUSED one waiting for a decision",
                r.as_str()
            )),
        };
        if let Some(why) = why {
            drop(tx);
            haechi_audit::record(
                &self.eng.store,
                actor
                    .event("workflow.step.action")
                    .target(format!("{id}/{step}"))
                    .outcome(haechi_audit::Outcome::Failure)
                    .detail(json!({ "action": action.as_str(), "reason": reason, "refused": why })),
            )
            .await?;
            return Err(Error::conflict(why));
        }

        let now = now_ms();
        let new_rev = locked.rev + 1;
        let n: i64 = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM workflow_step_actions WHERE execution_id = $1 AND idx = $2"
        )
        .bind(id)
        .bind(idx as i64)
        .fetch_one(&mut *c)
        .await)?;
        in_tx!(tx, |c| {
            sqlx::query(
            "INSERT INTO workflow_step_actions (execution_id, idx, n, action, by_user, at, reason, attempt, arguments) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )
        .bind(id)
        .bind(idx as i64)
        .bind(n + 1)
        .bind(action.as_str())
        .bind(&actor.user_id)
        .bind(now)
        .bind(&reason)
        .bind(row.attempts)
        .bind(&arguments)
        .execute(&mut *c)
        .await
        .map(|_| ())
        })?;

        // The step: a retry waits to retry at once (the driver begins the attempt); skip and
        // mark_succeeded end it.
        let (new_status, verb) = match action {
            StepAction::Retry => (StepStatus::Running, "retry"),
            StepAction::Skip => (StepStatus::Skipped, "skipped"),
            StepAction::MarkSucceeded => (StepStatus::Succeeded, "marked as succeeded"),
        };
        // Skip and mark_succeeded end the step now: the time it waited for the decision is
        // part of its duration (the RTO report counts it).
        let (retry_at, ended_at) = match action {
            StepAction::Retry => (Some(now), None),
            _ => (None, Some(now)),
        };
        in_tx!(tx, |c| sqlx::query(
            "UPDATE workflow_steps SET status = $3, retry_at = $4, ended_at = $5, \
             arguments = COALESCE($6, arguments), cut_by_failure = FALSE \
             WHERE execution_id = $1 AND idx = $2"
        )
        .bind(id)
        .bind(idx as i64)
        .bind(new_status.as_str())
        .bind(retry_at)
        .bind(ended_at)
        .bind(&arguments)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        let mut events = vec![NewEvent {
            step: Some(step.to_owned()),
            status: new_status.as_str(),
            attempt: row.attempts,
            message: format!("{verb} by {}: {reason}", actor.user_id),
            task_instance_no: None,
        }];

        // The run.
        let mut drive_here = false;
        match run_status {
            RunStatus::Failed => {
                // Going again counts against the run lock like a new run (`concurrency`):
                // refused while the limit is taken by other runs, and nothing changes.
                crate::journal::run_lock(&mut tx, workflow_id, loaded.def.concurrency, Some(id))
                    .await?;
                let cut: Vec<String> = in_tx!(tx, |c| {
                    sqlx::query_scalar(
                    "SELECT name FROM workflow_steps WHERE execution_id = $1 AND cut_by_failure ORDER BY idx"
                )
                .bind(id)
                .fetch_all(&mut *c)
                .await
                })?;
                in_tx!(tx, |c| {
                    sqlx::query(
                    "UPDATE workflow_steps SET status = 'WAITING', retry_at = NULL, ended_at = NULL, \
                     cut_by_failure = FALSE WHERE execution_id = $1 AND cut_by_failure"
                )
                .bind(id)
                .execute(&mut *c)
                .await
                .map(|_| ())
                })?;
                for name in cut {
                    events.push(NewEvent {
                        step: Some(name),
                        status: StepStatus::Waiting.as_str(),
                        attempt: 0,
                        message: format!("waiting again: step '{step}' was {verb}"),
                        task_instance_no: None,
                    });
                }
                in_tx!(tx, |c| {
                    sqlx::query(
                    "UPDATE workflow_executions SET status = 'RUNNING', active = TRUE, error = NULL, \
                     ended_at = NULL, owner = $2, lease_until = $3, rev = $4, updated_at = $5 WHERE id = $1"
                )
                .bind(id)
                .bind(&self.eng.server_id)
                .bind(now + self.eng.cfg.lease_secs as i64 * 1000)
                .bind(new_rev)
                .bind(now)
                .execute(&mut *c)
                .await
                .map(|_| ())
                })?;
                events.push(NewEvent {
                    step: None,
                    status: RunStatus::Running.as_str(),
                    attempt: 0,
                    message: format!(
                        "running again: step '{step}' was {verb} by {}",
                        actor.user_id
                    ),
                    task_instance_no: None,
                });
                drive_here = true;
            }
            _ => {
                // PAUSED: going again once no step waits for a decision any more (a WAITING
                // step skipped while paused by hand leaves the run paused).
                let failed: Vec<i64> = in_tx!(tx, |c| {
                    sqlx::query_scalar(
                    "SELECT idx FROM workflow_steps WHERE execution_id = $1 AND status = 'FAILED'"
                )
                .bind(id)
                .fetch_all(&mut *c)
                .await
                })?;
                let still_asking = failed.iter().any(|i| {
                    loaded
                        .def
                        .steps
                        .get(*i as usize)
                        .is_some_and(|s| s.on_failure == OnFailure::Ask)
                });
                let resume = step_status == StepStatus::Failed && !still_asking;
                in_tx!(tx, |c| {
                    sqlx::query(
                    "UPDATE workflow_executions SET status = $2, rev = $3, updated_at = $4 WHERE id = $1"
                )
                .bind(id)
                .bind(if resume { "RUNNING" } else { "PAUSED" })
                .bind(new_rev)
                .bind(now)
                .execute(&mut *c)
                .await
                .map(|_| ())
                })?;
                if resume {
                    events.push(NewEvent {
                        step: None,
                        status: RunStatus::Running.as_str(),
                        attempt: 0,
                        message: format!("going on: step '{step}' was {verb} by {}", actor.user_id),
                        task_instance_no: None,
                    });
                }
            }
        }
        insert_events(&mut tx, id, new_rev, now, 0, &events).await?;
        let mut detail = json!({
            "action": action.as_str(), "reason": reason, "attempt": row.attempts,
            "run_status": run_status.as_str(), "step_status": step_status.as_str(),
        });
        if let Some(args) = &req.arguments {
            detail["arguments"] = json!(args);
        }
        haechi_audit::append(
            &mut tx,
            actor
                .event("workflow.step.action")
                .target(format!("{id}/{step}"))
                .detail(detail),
        )
        .await?;
        announce(&mut tx, id).await?;
        tx.commit().await?;
        crate::metrics::step_action(action.as_str());
        if drive_here {
            if let Err(e) = Driver::spawn(&self.eng, id).await {
                // The lease keeper starts it at its next round.
                tracing::warn!(execution = %id, "could not start its driver yet: {}", e.message);
            }
        }
        self.eng.poke(id);
        let view = self.execution(id).await?;
        view.steps.into_iter().nth(idx).ok_or_else(|| not_found(id))
    }
}
