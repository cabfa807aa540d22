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
use haechi_store::{in_tx, read, Store, Tx};
use haechi_types::{time::now_ms, Error, Result};
use serde_json::json;

use crate::definition::{template_refs, Action, Definition, OnFailure, ParamSpec};
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
        let arguments = retry_arguments(&req, &def_step.action, &loaded.def.params)?;

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
        let states = States {
            run: run_status,
            cutting: locked.active,
            step: step_status,
            on_failure: def_step.on_failure,
        };
        if let Some(why) = refusal(id, step, action, &states) {
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

        let a = Applying {
            id,
            step,
            idx,
            action,
            by: &actor.user_id,
            now: now_ms(),
            new_rev: locked.rev + 1,
        };
        let mut events =
            vec![record_on_step(&mut tx, &a, &reason, row.attempts, &arguments).await?];
        // The run.
        let drive_here = match run_status {
            RunStatus::Failed => {
                self.run_again(
                    &mut tx,
                    &a,
                    workflow_id,
                    loaded.def.concurrency,
                    &mut events,
                )
                .await?;
                true
            }
            _ => {
                go_on_if_decided(&mut tx, &a, &loaded.def, step_status, &mut events).await?;
                false
            }
        };
        insert_events(&mut tx, id, a.new_rev, a.now, 0, &events).await?;
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

    /// A `FAILED` run goes again, driven by this server: the steps the failure cut wait
    /// again, and the run is `RUNNING` under this server's lease.
    async fn run_again(
        &self,
        tx: &mut Tx,
        a: &Applying<'_>,
        workflow_id: i64,
        concurrency: Option<u32>,
        events: &mut Vec<NewEvent>,
    ) -> Result<()> {
        let (id, step, verb) = (a.id, a.step, a.verb());
        // Going again counts against the run lock like a new run (`concurrency`):
        // refused while the limit is taken by other runs, and nothing changes.
        crate::journal::run_lock(tx, workflow_id, concurrency, Some(id)).await?;
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
             cut_by_failure = FALSE WHERE execution_id = $1 AND cut_by_failure",
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
        .bind(a.now + self.eng.cfg.lease_secs as i64 * 1000)
        .bind(a.new_rev)
        .bind(a.now)
        .execute(&mut *c)
        .await
        .map(|_| ())
        })?;
        events.push(NewEvent {
            step: None,
            status: RunStatus::Running.as_str(),
            attempt: 0,
            message: format!("running again: step '{step}' was {verb} by {}", a.by),
            task_instance_no: None,
        });
        Ok(())
    }
}

/// One action being applied, as the writes inside its transaction need it.
struct Applying<'a> {
    id: &'a str,
    step: &'a str,
    idx: usize,
    action: StepAction,
    by: &'a str,
    now: i64,
    new_rev: i64,
}

impl Applying<'_> {
    /// The step's status after the action, and how the journal says what was done.
    fn outcome(&self) -> (StepStatus, &'static str) {
        match self.action {
            StepAction::Retry => (StepStatus::Running, "retry"),
            StepAction::Skip => (StepStatus::Skipped, "skipped"),
            StepAction::MarkSucceeded => (StepStatus::Succeeded, "marked as succeeded"),
        }
    }

    fn verb(&self) -> &'static str {
        self.outcome().1
    }
}

/// The arguments a retry gives a task step (stored as JSON), checked; `None` when none are
/// given. Only a retry of a task step takes them, and they may name only the workflow's
/// parameters.
fn retry_arguments(
    req: &StepActionRequest,
    step_action: &Action,
    params: &BTreeMap<String, ParamSpec>,
) -> Result<Option<String>> {
    let step = req.step.as_str();
    match (&req.arguments, req.action, step_action) {
        (None, _, _) => Ok(None),
        (Some(_), StepAction::Skip | StepAction::MarkSucceeded, _) => Err(Error::field(
            "arguments",
            "only a retry takes new arguments",
        )),
        (Some(_), StepAction::Retry, other) if !matches!(other, Action::Task(_)) => {
            Err(Error::field(
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
                if let Some(r) = refs.iter().find(|r| !params.contains_key(*r)) {
                    return Err(Error::field(
                        &field,
                        format_args!("${{{r}}} names no parameter of the workflow"),
                    ));
                }
            }
            Ok(Some(serde_json::to_string(args)?))
        }
    }
}

/// Where the run and the step stand when an action arrives.
struct States {
    run: RunStatus,
    /// The run is still active: a `FAILED` run that is still cutting what ran.
    cutting: bool,
    step: StepStatus,
    on_failure: OnFailure,
}

/// Why `action` cannot apply to step `step` of execution `id` now (a 409), or `None` when it
/// can.
fn refusal(id: &str, step: &str, action: StepAction, s: &States) -> Option<String> {
    let asks = s.on_failure == OnFailure::Ask;
    match (s.run, s.step, action) {
        (RunStatus::Failed, StepStatus::Failed, _) if s.cutting => Some(format!(
            "execution {id} is FAILED and still cutting what ran; try again in a moment"
        )),
        (RunStatus::Failed, StepStatus::Failed, _) => None,
        (RunStatus::Paused, StepStatus::Failed, _) if asks => None,
        (RunStatus::Paused, StepStatus::Failed, _) => Some(format!(
            "step '{step}' is FAILED with on_failure: {}, so the PAUSED execution {id} does not wait for a decision on it",
            match s.on_failure { OnFailure::Continue => "continue", _ => "stop" }
        )),
        (RunStatus::Paused, StepStatus::Waiting, StepAction::Skip) => None,
        (RunStatus::Failed | RunStatus::Paused, st, _) => Some(format!(
            "step '{step}' is {}; {} applies to a FAILED step{}",
            st.as_str(),
            action.as_str(),
            if action == StepAction::Skip { " (or a WAITING step of a PAUSED execution)" } else { "" }
        )),
        (r, _, _) => Some(format!(
            "execution {id} is {}; step actions apply to a FAILED execution or a PAUSED one waiting for a decision",
            r.as_str()
        )),
    }
}

/// Lists the action on the step and changes the step: a retry waits to retry at once (the
/// driver begins the attempt); skip and mark_succeeded end it. Returns the step's journal
/// event.
async fn record_on_step(
    tx: &mut Tx,
    a: &Applying<'_>,
    reason: &str,
    attempts: i64,
    arguments: &Option<String>,
) -> Result<NewEvent> {
    let (id, idx, now) = (a.id, a.idx, a.now);
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
    .bind(a.action.as_str())
    .bind(a.by)
    .bind(now)
    .bind(reason)
    .bind(attempts)
    .bind(arguments)
    .execute(&mut *c)
    .await
    .map(|_| ())
    })?;
    let (new_status, verb) = a.outcome();
    // Skip and mark_succeeded end the step now: the time it waited for the decision is
    // part of its duration (the RTO report counts it).
    let (retry_at, ended_at) = match a.action {
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
    .bind(arguments)
    .execute(&mut *c)
    .await
    .map(|_| ()))?;
    Ok(NewEvent {
        step: Some(a.step.to_owned()),
        status: new_status.as_str(),
        attempt: attempts,
        message: format!("{verb} by {}: {reason}", a.by),
        task_instance_no: None,
    })
}

/// A `PAUSED` run goes on once no step waits for a decision any more (a `WAITING` step
/// skipped while paused by hand leaves the run paused).
async fn go_on_if_decided(
    tx: &mut Tx,
    a: &Applying<'_>,
    def: &Definition,
    step_status: StepStatus,
    events: &mut Vec<NewEvent>,
) -> Result<()> {
    let id = a.id;
    let failed: Vec<i64> = in_tx!(tx, |c| {
        sqlx::query_scalar(
            "SELECT idx FROM workflow_steps WHERE execution_id = $1 AND status = 'FAILED'",
        )
        .bind(id)
        .fetch_all(&mut *c)
        .await
    })?;
    let still_asking = failed.iter().any(|i| {
        def.steps
            .get(*i as usize)
            .is_some_and(|s| s.on_failure == OnFailure::Ask)
    });
    let resume = step_status == StepStatus::Failed && !still_asking;
    in_tx!(tx, |c| {
        sqlx::query(
            "UPDATE workflow_executions SET status = $2, rev = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(if resume { "RUNNING" } else { "PAUSED" })
        .bind(a.new_rev)
        .bind(a.now)
        .execute(&mut *c)
        .await
        .map(|_| ())
    })?;
    if resume {
        events.push(NewEvent {
            step: None,
            status: RunStatus::Running.as_str(),
            attempt: 0,
            message: format!("going on: step '{}' was {} by {}", a.step, a.verb(), a.by),
            task_instance_no: None,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(run: RunStatus, step: StepStatus, on_failure: OnFailure) -> States {
        States {
            run,
            cutting: false,
            step,
            on_failure,
        }
    }

    #[test]
    fn actions_apply_to_a_failed_step_of_a_failed_run() {
        let s = states(RunStatus::Failed, StepStatus::Failed, OnFailure::Stop);
        for a in [
            StepAction::Retry,
            StepAction::Skip,
            StepAction::MarkSucceeded,
        ] {
            assert_eq!(refusal("e1", "a", a, &s), None);
        }
        let cutting = States { cutting: true, ..s };
        assert!(refusal("e1", "a", StepAction::Retry, &cutting)
            .is_some_and(|w| w.contains("still cutting")));
        let other = states(RunStatus::Failed, StepStatus::Stopped, OnFailure::Stop);
        assert_eq!(
            refusal("e1", "b", StepAction::Retry, &other).as_deref(),
            Some("step 'b' is STOPPED; retry applies to a FAILED step")
        );
    }

    #[test]
    fn a_paused_run_takes_decisions_only_on_steps_that_ask() {
        let asks = states(RunStatus::Paused, StepStatus::Failed, OnFailure::Ask);
        assert_eq!(refusal("e1", "a", StepAction::MarkSucceeded, &asks), None);
        let goes_on = states(RunStatus::Paused, StepStatus::Failed, OnFailure::Continue);
        assert!(refusal("e1", "a", StepAction::Retry, &goes_on)
            .is_some_and(|w| w.contains("on_failure: continue")));
        // A waiting step of a paused run may be skipped, not retried.
        let waiting = states(RunStatus::Paused, StepStatus::Waiting, OnFailure::Stop);
        assert_eq!(refusal("e1", "a", StepAction::Skip, &waiting), None);
        assert!(refusal("e1", "a", StepAction::Retry, &waiting)
            .is_some_and(|w| w.contains("is WAITING")));
    }

    #[test]
    fn a_running_or_ended_run_takes_no_action() {
        for run in [RunStatus::Running, RunStatus::Completed, RunStatus::Stopped] {
            let s = states(run, StepStatus::Failed, OnFailure::Ask);
            let why = refusal("e1", "a", StepAction::Skip, &s).unwrap_or_default();
            assert!(
                why.starts_with(&format!("execution e1 is {}", run.as_str())),
                "{why}"
            );
        }
    }

    fn request(action: StepAction, arguments: Option<Vec<&str>>) -> StepActionRequest {
        StepActionRequest {
            step: "s".to_owned(),
            action,
            reason: "because".to_owned(),
            arguments: arguments.map(|a| a.into_iter().map(str::to_owned).collect()),
        }
    }

    #[test]
    fn only_a_retry_of_a_task_step_takes_arguments() {
        let def = crate::definition::parse(&serde_json::json!({"name": "w", "group": "g",
            "params": {"p": "x"},
            "steps": [{"name": "s", "type": "task", "task": "t", "nodes": ["n"]},
                      {"name": "z", "type": "sleep", "seconds": 1}]}))
        .expect("a valid definition");
        let (task, sleep) = (&def.steps[0].action, &def.steps[1].action);
        let args = |r: &StepActionRequest, a: &Action| retry_arguments(r, a, &def.params);
        assert_eq!(
            args(&request(StepAction::Retry, None), task).ok(),
            Some(None)
        );
        assert_eq!(
            args(&request(StepAction::Retry, Some(vec!["-v", "${p}"])), task).ok(),
            Some(Some(r#"["-v","${p}"]"#.to_owned()))
        );
        let e = args(&request(StepAction::Skip, Some(vec![])), task).unwrap_err();
        assert!(e.message.contains("only a retry"), "{}", e.message);
        let e = args(&request(StepAction::Retry, Some(vec![])), sleep).unwrap_err();
        assert!(e.message.contains("is a sleep step"), "{}", e.message);
        let e = args(&request(StepAction::Retry, Some(vec!["${q}"])), task).unwrap_err();
        assert!(
            e.message.contains("${q} names no parameter"),
            "{}",
            e.message
        );
        let e = args(&request(StepAction::Retry, Some(vec!["a\0b"])), task).unwrap_err();
        assert!(e.message.contains("without NUL"), "{}", e.message);
    }
}
