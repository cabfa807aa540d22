//! Planning: what follows from an execution's state, the attempts that ended and the time.
//! Pure (no I/O): the driver commits the [`Plan`] and then acts on it.

use std::collections::{BTreeMap, HashMap};

use haechi_identity::{Actor, Origin};
use serde_json::json;
use tokio::task::AbortHandle;

use super::{captured, run_event, step_event, Effects, Outcome, Plan};
use crate::definition::{substitute, Action, OnFailure, Step};
use crate::model::{RunStatus, StepStatus};
use crate::ports::TaskStart;
use crate::state::RunState;
use crate::steps::AttemptResult;
use crate::Loaded;

/// What planning reads.
pub(super) struct Planner<'a> {
    pub def: &'a Loaded,
    pub state: &'a RunState,
    /// Attempts that ended, not yet committed.
    pub outcomes: &'a [Outcome],
    /// Attempt futures under way on this server: step index → (attempt, handle).
    pub running: &'a HashMap<usize, (i64, AbortHandle)>,
    /// The longest retry delay when a step sets none, ms.
    pub retry_cap_ms: u64,
}

impl Planner<'_> {
    /// Works out the next state: the attempts that ended and the approvals decided are
    /// settled, attempts orphaned by a stopped server are taken up, then either the run fails
    /// (a step failed with `on_failure: stop`) or it goes on (due retries, a pause for a
    /// decision, the steps now ready, the end).
    pub fn plan(&self, now: i64) -> Plan {
        let defs = &self.def.def.steps;
        let mut p = Plan {
            next: self.state.clone(),
            events: Vec::new(),
            task_starts: Vec::new(),
            child_starts: Vec::new(),
            effects: Effects::default(),
            consumed: self.outcomes.len(),
        };

        // Attempts that ended.
        for o in self.outcomes {
            let s = &p.next.steps[o.idx];
            if s.in_flight() && s.attempts == o.attempt {
                self.settle(&mut p, o.idx, o.result.clone(), now);
            }
        }
        self.settle_approvals(&mut p, now);
        self.take_up(&mut p, now);

        let failed = (0..defs.len()).find(|i| {
            p.next.steps[*i].status == StepStatus::Failed && defs[*i].on_failure == OnFailure::Stop
        });
        match failed {
            Some(f) => self.fail_run(&mut p, f, now),
            None => self.go_on(&mut p, now),
        }
        progress(&mut p.next);

        for (idx, (attempt, _)) in self.running {
            let s = &p.next.steps[*idx];
            let current = s.in_flight() && s.attempts == *attempt;
            if !current && !p.effects.abort.contains(idx) {
                p.effects.abort.push(*idx);
            }
        }
        p
    }

    /// Approvals: a stored decision, or the deadline passed.
    fn settle_approvals(&self, p: &mut Plan, now: i64) {
        for (idx, step) in self.def.def.steps.iter().enumerate() {
            if !matches!(step.action, Action::Approval { .. }) || !p.next.steps[idx].in_flight() {
                continue;
            }
            let s = &p.next.steps[idx];
            let by = s.decided_by.clone().unwrap_or_default();
            let comment = s
                .decision_comment
                .as_deref()
                .filter(|c| !c.is_empty())
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            let result = match s.decision.as_deref() {
                Some("approve") => Some(AttemptResult {
                    ok: true,
                    error: None,
                    result: Some(json!({ "decision": "approve", "by": by }).to_string()),
                }),
                Some("reject") => Some(AttemptResult {
                    ok: false,
                    error: Some(format!("rejected by {by}{comment}")),
                    result: Some(json!({ "decision": "reject", "by": by }).to_string()),
                }),
                _ => match (step.timeout_secs, s.attempt_started_at) {
                    (Some(t), Some(at)) if now >= at + t.ms() as i64 => Some(AttemptResult::fail(
                        format!("no decision within {t} (timed out)"),
                    )),
                    _ => None,
                },
            };
            if let Some(r) = result {
                self.settle(p, idx, r, now);
            }
        }
    }

    /// Attempts under way with no future here: the server stopped during them, or another
    /// server drove them until it died. Take them up again.
    fn take_up(&self, p: &mut Plan, now: i64) {
        for (idx, step) in self.def.def.steps.iter().enumerate() {
            let s = &p.next.steps[idx];
            if !s.in_flight() || self.running.contains_key(&idx) {
                continue;
            }
            match &step.action {
                Action::Approval { .. } => {}
                // Unlocking again is harmless: the window still ends where the first attempt
                // put it (its start plus the duration).
                Action::Sleep { .. } | Action::DbAccess(_) => p.effects.spawn.push((idx, true)),
                Action::Task(_) => match s.task_instance_no {
                    Some(_) => p.effects.spawn.push((idx, true)),
                    None => {
                        let why = s
                            .error
                            .clone()
                            .unwrap_or_else(|| "the task instance could not be started".to_owned());
                        self.settle(p, idx, AttemptResult::fail(why), now);
                    }
                },
                Action::Workflow(_) => match s.child_execution_id {
                    Some(_) => p.effects.spawn.push((idx, true)),
                    None => {
                        let why = s.error.clone().unwrap_or_else(|| {
                            "the child execution could not be started".to_owned()
                        });
                        self.settle(p, idx, AttemptResult::fail(why), now);
                    }
                },
                Action::Http(_) => {
                    if s.resumes == 0 {
                        let s = &mut p.next.steps[idx];
                        s.resumes += 1;
                        let (name, attempt) = (s.name.clone(), s.attempts);
                        p.events.push(step_event(
                            &name,
                            StepStatus::Running,
                            attempt,
                            "the server stopped during this call: sending it again with the same Idempotency-Key",
                        ));
                        p.effects.spawn.push((idx, true));
                    } else {
                        self.settle(
                            p,
                            idx,
                            AttemptResult::fail(
                                "the server stopped during this call twice; its outcome is unknown",
                            ),
                            now,
                        );
                    }
                }
            }
        }
    }

    /// No step failed for good with `on_failure: stop`: due retries begin, a step failed with
    /// `on_failure: ask` pauses the run, ready steps start, and the run completes once every
    /// step has ended.
    fn go_on(&self, p: &mut Plan, now: i64) {
        let defs = &self.def.def.steps;
        // Retries that are due.
        for idx in 0..defs.len() {
            let s = &p.next.steps[idx];
            if s.status == StepStatus::Running && s.retry_at.is_some_and(|r| r <= now) {
                self.begin_attempt(p, idx, now);
            }
        }
        // A step that failed with `on_failure: ask` pauses the run until an operator
        // decides it (retry, skip, mark as succeeded).
        if p.next.status == RunStatus::Running {
            if let Some(f) = (0..defs.len()).find(|i| {
                p.next.steps[*i].status == StepStatus::Failed
                    && defs[*i].on_failure == OnFailure::Ask
            }) {
                p.next.status = RunStatus::Paused;
                p.events.push(run_event(
                    RunStatus::Paused,
                    format!(
                        "step '{}' failed (on_failure: ask): waiting for an operator to retry, skip or mark it as succeeded",
                        defs[f].name
                    ),
                ));
            }
        }
        // Steps whose needs are met (not while paused), unless their condition is false.
        if p.next.status == RunStatus::Running {
            self.start_ready(p, now);
        }
        let all_done = p.next.steps.iter().zip(defs).all(|(s, d)| match s.status {
            StepStatus::Succeeded | StepStatus::Skipped => true,
            StepStatus::Failed => d.on_failure == OnFailure::Continue,
            _ => false,
        });
        if all_done {
            p.next.status = RunStatus::Completed;
            p.next.ended_at = Some(now);
            p.next.active = false;
            p.events.push(run_event(
                RunStatus::Completed,
                "every step has ended".to_owned(),
            ));
        }
    }

    /// Each waiting step whose needs are met begins its first attempt, is skipped (its `if`
    /// is false) or fails (its `if` cannot be evaluated).
    fn start_ready(&self, p: &mut Plan, now: i64) {
        for (idx, def) in self.def.def.steps.iter().enumerate() {
            if p.next.steps[idx].status != StepStatus::Waiting || !self.ready(&p.next, idx) {
                continue;
            }
            match self.condition(&p.next, idx) {
                None | Some(Ok(true)) => self.begin_attempt(p, idx, now),
                Some(Ok(false)) => {
                    let s = &mut p.next.steps[idx];
                    s.status = StepStatus::Skipped;
                    let message = format!(
                        "the condition is false: {}",
                        def.condition.as_deref().unwrap_or_default()
                    );
                    p.events
                        .push(step_event(&def.name, StepStatus::Skipped, 0, &message));
                }
                Some(Err(why)) => {
                    let s = &mut p.next.steps[idx];
                    s.status = StepStatus::Failed;
                    s.started_at = Some(now);
                    s.ended_at = Some(now);
                    s.error = Some(format!("if: {why}"));
                    p.events.push(step_event(
                        &def.name,
                        StepStatus::Failed,
                        0,
                        &format!("if: {why}"),
                    ));
                }
            }
        }
    }

    fn actor(&self) -> Actor {
        actor_of(self.state)
    }

    fn values<'s>(&self, state: &'s RunState) -> std::borrow::Cow<'s, BTreeMap<String, String>> {
        values(self.def, state)
    }

    fn open_windows(&self, state: &RunState, now: i64) -> Vec<(usize, Option<i64>, String, i64)> {
        open_windows(self.def, state, now)
    }

    /// The step's `if`, evaluated over the run's parameters, captured variables and the
    /// steps' statuses; `None` without one.
    fn condition(&self, next: &RunState, idx: usize) -> Option<std::result::Result<bool, String>> {
        let cond = self.def.def.steps[idx].condition.as_deref()?;
        let statuses = next
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.status.as_str().to_owned()))
            .collect();
        Some(crate::expr::eval(
            cond,
            &next.params,
            &captured(next),
            &statuses,
        ))
    }

    /// All of the step's needs succeeded, were skipped (`only_steps`, a false `if`, an
    /// operator's skip) or failed with `on_failure: continue`.
    fn ready(&self, next: &RunState, idx: usize) -> bool {
        let defs = &self.def.def.steps;
        self.def.graph.needs[idx]
            .iter()
            .all(|d| match next.steps[*d].status {
                StepStatus::Succeeded | StepStatus::Skipped => true,
                StepStatus::Failed => defs[*d].on_failure == OnFailure::Continue,
                _ => false,
            })
    }

    /// Records how an attempt ended: success, a retry later, or failure for good.
    fn settle(&self, p: &mut Plan, idx: usize, r: AttemptResult, now: i64) {
        let step = &self.def.def.steps[idx];
        let s = &mut p.next.steps[idx];
        let took = s
            .attempt_started_at
            .map(|a| (now - a).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        p.effects
            .latencies
            .push((step.action.kind().as_str(), r.ok, took));
        if r.result.is_some() {
            s.result = r.result;
        }
        if r.ok {
            s.status = StepStatus::Succeeded;
            s.ended_at = Some(now);
            s.error = None;
            let name = s.name.clone();
            let attempt = s.attempts;
            p.events
                .push(step_event(&name, StepStatus::Succeeded, attempt, ""));
            return;
        }
        let error = r.error.unwrap_or_else(|| "failed".to_owned());
        s.error = Some(error.clone());
        if s.attempts <= i64::from(step.retries) {
            let delay = self.retry_delay(step, s.attempts);
            s.retry_at = Some(now + delay as i64);
            let message = format!(
                "attempt {} failed: {error}; retry {} of {} in {}",
                s.attempts,
                s.attempts,
                step.retries,
                crate::definition::Secs(delay)
            );
            let (name, attempt) = (s.name.clone(), s.attempts);
            p.events
                .push(step_event(&name, StepStatus::Running, attempt, &message));
        } else {
            s.status = StepStatus::Failed;
            s.ended_at = Some(now);
            let message = if step.on_failure == OnFailure::Continue {
                format!("{error} (on_failure: continue, the run goes on)")
            } else {
                error
            };
            let (name, attempt) = (s.name.clone(), s.attempts);
            p.events
                .push(step_event(&name, StepStatus::Failed, attempt, &message));
        }
    }

    /// The wait before the try after failed attempt `attempt`: `retry_delay_secs` (default
    /// 1 s) times `retry_backoff` (default 2) per earlier retry, at most the cap.
    fn retry_delay(&self, step: &Step, attempt: i64) -> u64 {
        let base = step.retry_delay_secs.map(|s| s.ms()).unwrap_or(1000) as f64;
        let factor = step.retry_backoff.unwrap_or(2.0);
        let cap = step
            .retry_max_delay_secs
            .map(|s| s.ms())
            .unwrap_or(self.retry_cap_ms) as f64;
        let exp = (attempt - 1).clamp(0, 60) as i32;
        (base * factor.powi(exp)).min(cap).max(0.0) as u64
    }

    /// Starts the step's next attempt.
    fn begin_attempt(&self, p: &mut Plan, idx: usize, now: i64) {
        let step = &self.def.def.steps[idx];
        let values = match step.action {
            Action::Task(_) => Some(self.values(&p.next).into_owned()),
            _ => None,
        };
        let s = &mut p.next.steps[idx];
        if s.attempts == 0 {
            s.started_at = Some(now);
        }
        s.attempts += 1;
        s.status = StepStatus::Running;
        s.attempt_started_at = Some(now);
        s.retry_at = None;
        s.resumes = 0;
        s.ended_at = None;
        s.task_instance_no = None;
        s.child_execution_id = None;
        s.decision = None;
        s.decided_by = None;
        s.decided_at = None;
        s.decision_comment = None;
        let attempt = s.attempts;
        let message = match &step.action {
            Action::Approval { role } => {
                format!("waiting for a decision by a holder of role '{role}'")
            }
            _ if attempt > 1 => format!("attempt {attempt}"),
            _ => String::new(),
        };
        p.events.push(step_event(
            &step.name,
            StepStatus::Running,
            attempt,
            &message,
        ));
        match &step.action {
            Action::Task(t) => {
                let params = values.as_ref().unwrap_or(&self.state.params);
                // An operator's retry may have given the arguments anew.
                let written = s
                    .arguments
                    .as_deref()
                    .and_then(|a| serde_json::from_str::<Vec<String>>(a).ok())
                    .unwrap_or_else(|| t.arguments.clone());
                p.task_starts.push((
                    idx,
                    TaskStart {
                        task_id: t.task.clone(),
                        nodes: t.nodes.clone(),
                        arguments: written.iter().map(|a| substitute(a, params)).collect(),
                        origin: format!("{}/{}/{attempt}", self.state.id, step.name),
                        actor: self.actor(),
                        vault_uses: Vec::new(),
                        env: Vec::new(),
                        env_refused: None,
                    },
                ));
            }
            Action::Sleep { .. } | Action::Http(_) | Action::DbAccess(_) => {
                p.effects.spawn.push((idx, false))
            }
            Action::Workflow(_) => p.child_starts.push(idx),
            Action::Approval { .. } => {}
        }
    }

    /// A step failed with `on_failure: stop`: the run ends `FAILED`; what is under way is
    /// stopped and what has not started is skipped.
    fn fail_run(&self, p: &mut Plan, failed: usize, now: i64) {
        for (idx, s) in p.next.steps.iter_mut().enumerate() {
            match s.status {
                StepStatus::Running => {
                    if s.retry_at.is_none() {
                        if let Some(no) = s.task_instance_no {
                            p.effects.cancel.push(no);
                        }
                    }
                    if s.child_execution_id.is_some() {
                        p.effects.stop_children = true;
                    }
                    s.status = StepStatus::Stopped;
                    s.retry_at = None;
                    s.ended_at = Some(now);
                    s.cut_by_failure = true;
                    if self.running.contains_key(&idx) {
                        p.effects.abort.push(idx);
                    }
                    p.events.push(step_event(
                        &s.name,
                        StepStatus::Stopped,
                        s.attempts,
                        "stopped: another step failed",
                    ));
                }
                StepStatus::Waiting => {
                    s.status = StepStatus::Skipped;
                    s.cut_by_failure = true;
                    p.events
                        .push(step_event(&s.name, StepStatus::Skipped, 0, ""));
                }
                _ => {}
            }
        }
        let f = &p.next.steps[failed];
        let error = format!(
            "step '{}' failed: {}",
            f.name,
            f.error.as_deref().unwrap_or("failed")
        );
        p.next.status = RunStatus::Failed;
        p.next.ended_at = Some(now);
        p.next.error = Some(error.clone());
        p.next.active = !p.effects.cancel.is_empty()
            || p.effects.stop_children
            || !self.open_windows(&p.next, now).is_empty();
        p.events.push(run_event(RunStatus::Failed, error));
    }
}

/// The run's progress: how many steps ended, and the step that started running last.
fn progress(next: &mut RunState) {
    next.steps_done = next
        .steps
        .iter()
        .filter(|s| matches!(s.status, StepStatus::Succeeded | StepStatus::Failed))
        .count() as i64;
    if let Some((_, s)) = next
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status == StepStatus::Running)
        .max_by_key(|(i, s)| (s.attempt_started_at.or(s.started_at), *i))
    {
        next.current_step = s.name.clone();
    }
}

/// What `${NAME}` reads: the parameters and, when the definition captures any, the
/// variables captured so far.
pub(super) fn values<'s>(
    loaded: &Loaded,
    state: &'s RunState,
) -> std::borrow::Cow<'s, BTreeMap<String, String>> {
    if !loaded.captures {
        return std::borrow::Cow::Borrowed(&state.params);
    }
    let mut all = state.params.clone();
    all.extend(captured(state));
    std::borrow::Cow::Owned(all)
}

/// The execution's steps act as the user who started it, from where they started it,
/// with this execution as their origin.
pub(super) fn actor_of(state: &RunState) -> Actor {
    Actor {
        user_id: state.started_by.clone(),
        ip: state
            .source_ip
            .parse()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        origin: Origin::Workflow {
            execution: state.id.clone(),
        },
    }
}

/// The `db_access` windows this run opened that may still be open: (step, policy index
/// if known, policy, window end).
pub(super) fn open_windows(
    loaded: &Loaded,
    state: &RunState,
    now: i64,
) -> Vec<(usize, Option<i64>, String, i64)> {
    let mut out = Vec::new();
    for (idx, (s, step)) in state.steps.iter().zip(&loaded.def.steps).enumerate() {
        let Action::DbAccess(d) = &step.action else {
            continue;
        };
        let Some(started) = s.attempt_started_at else {
            continue;
        };
        let until = started + d.duration.ms() as i64;
        let known = s
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
            .and_then(|v| Some((v.get("index")?.as_i64()?, v.get("until")?.as_i64()?)));
        match (s.status, known) {
            (StepStatus::Succeeded, Some((index, until))) if until > now => {
                out.push((idx, Some(index), d.policy.clone(), until))
            }
            // The unlock may have happened while the run ended around it.
            (StepStatus::Running | StepStatus::Stopped, _) if until > now => {
                out.push((idx, None, d.policy.clone(), until))
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::state::StepState;

    const NOW: i64 = 1_000_000;

    fn loaded(steps: Value) -> Loaded {
        let def = crate::definition::parse(&json!({"name": "w", "group": "g", "steps": steps}))
            .expect("a valid definition");
        let graph = def.graph();
        Loaded {
            def,
            graph,
            captures: false,
        }
    }

    /// A run of `def` with every step `WAITING`.
    fn run(def: &Loaded) -> RunState {
        RunState {
            id: "e1".to_owned(),
            workflow_id: 1,
            version: 1,
            status: RunStatus::Running,
            active: true,
            rev: 1,
            params: BTreeMap::new(),
            started_by: "alice".to_owned(),
            started_by_pk: 1,
            source_ip: "127.0.0.1".to_owned(),
            current_step: String::new(),
            steps_done: 0,
            error: None,
            owner: Some("s1".to_owned()),
            created_at: 0,
            ended_at: None,
            parent_execution_id: None,
            parent_step: None,
            steps: def
                .def
                .steps
                .iter()
                .map(|s| StepState {
                    name: s.name.clone(),
                    ..StepState::default()
                })
                .collect(),
        }
    }

    fn plan_with(def: &Loaded, state: &RunState, outcomes: &[Outcome]) -> Plan {
        let running = HashMap::new();
        Planner {
            def,
            state,
            outcomes,
            running: &running,
            retry_cap_ms: 60_000,
        }
        .plan(NOW)
    }

    fn plan(def: &Loaded, state: &RunState) -> Plan {
        plan_with(def, state, &[])
    }

    fn statuses(p: &Plan) -> Vec<StepStatus> {
        p.next.steps.iter().map(|s| s.status).collect()
    }

    fn sleep(name: &str, extra: Value) -> Value {
        let mut v = json!({"name": name, "type": "sleep", "seconds": 1});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    }

    fn ended(state: &mut RunState, idx: usize, status: StepStatus) {
        let s = &mut state.steps[idx];
        s.status = status;
        s.attempts = 1;
        s.started_at = Some(NOW - 10);
        s.ended_at = Some(NOW - 5);
    }

    fn in_flight(state: &mut RunState, idx: usize) {
        let s = &mut state.steps[idx];
        s.status = StepStatus::Running;
        s.attempts = 1;
        s.started_at = Some(NOW - 10);
        s.attempt_started_at = Some(NOW - 10);
    }

    #[test]
    fn steps_without_needs_run_in_order_one_after_another() {
        let def = loaded(json!([sleep("a", json!({})), sleep("b", json!({}))]));
        let p = plan(&def, &run(&def));
        assert_eq!(statuses(&p), [StepStatus::Running, StepStatus::Waiting]);
        assert_eq!(p.effects.spawn, [(0, false)]);
        assert_eq!(p.next.steps[0].attempts, 1);
        assert_eq!(p.next.steps[0].attempt_started_at, Some(NOW));
        assert_eq!(p.next.current_step, "a");
    }

    #[test]
    fn steps_that_need_nothing_start_together_and_a_join_waits_for_all() {
        let def = loaded(json!([
            sleep("a", json!({"needs": []})),
            sleep("b", json!({"needs": []})),
            sleep("c", json!({"needs": ["a", "b"]})),
        ]));
        let mut state = run(&def);
        let p = plan(&def, &state);
        assert_eq!(
            statuses(&p),
            [
                StepStatus::Running,
                StepStatus::Running,
                StepStatus::Waiting
            ]
        );
        ended(&mut state, 0, StepStatus::Succeeded);
        in_flight(&mut state, 1);
        let p = plan(&def, &state);
        assert_eq!(p.next.steps[2].status, StepStatus::Waiting, "b still runs");
        ended(&mut state, 1, StepStatus::Skipped);
        let p = plan(&def, &state);
        assert_eq!(p.next.steps[2].status, StepStatus::Running);
        assert_eq!(
            p.next.steps_done, 1,
            "a skipped step is not counted as done"
        );
    }

    #[test]
    fn a_false_condition_skips_the_step_and_what_needs_it_goes_on() {
        let def = loaded(json!([
            sleep("a", json!({"if": "params.x == 'yes'"})),
            sleep("b", json!({})),
        ]));
        let mut state = run(&def);
        state.params.insert("x".to_owned(), "no".to_owned());
        let p = plan(&def, &state);
        assert_eq!(statuses(&p), [StepStatus::Skipped, StepStatus::Running]);
        assert!(p.events.iter().any(|e| e.step.as_deref() == Some("a")
            && e.message.starts_with("the condition is false: params.x")));
    }

    #[test]
    fn a_condition_that_cannot_be_evaluated_fails_the_step_and_the_run() {
        let def = loaded(json!([sleep("a", json!({"if": "vars.nope == 'x'"}))]));
        let p = plan(&def, &run(&def));
        assert_eq!(p.next.steps[0].status, StepStatus::Failed);
        assert!(p.next.steps[0]
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("if: ")));
        // The run ends at the next turn, as for any step failed with `on_failure: stop`.
        assert_eq!(p.next.status, RunStatus::Running);
        assert_eq!(plan(&def, &p.next).next.status, RunStatus::Failed);
    }

    #[test]
    fn a_failure_with_on_failure_stop_ends_the_run_and_cuts_the_rest() {
        let def = loaded(json!([
            sleep("a", json!({"needs": []})),
            sleep("b", json!({"needs": []})),
            sleep("c", json!({"needs": ["a", "b"]})),
        ]));
        let mut state = run(&def);
        in_flight(&mut state, 0);
        in_flight(&mut state, 1);
        state.steps[1].task_instance_no = Some(7);
        let failed = [Outcome {
            idx: 0,
            attempt: 1,
            result: AttemptResult::fail("boom"),
        }];
        let p = plan_with(&def, &state, &failed);
        assert_eq!(
            statuses(&p),
            [StepStatus::Failed, StepStatus::Stopped, StepStatus::Skipped]
        );
        assert_eq!(p.next.status, RunStatus::Failed);
        assert_eq!(p.next.error.as_deref(), Some("step 'a' failed: boom"));
        assert!(p.next.steps[1].cut_by_failure && p.next.steps[2].cut_by_failure);
        assert_eq!(p.effects.cancel, [7]);
        assert!(p.next.active, "the task instance still has to be cancelled");
        assert_eq!(p.consumed, 1);
    }

    #[test]
    fn a_failure_with_on_failure_continue_lets_the_run_complete() {
        let def = loaded(json!([
            sleep("a", json!({"on_failure": "continue"})),
            sleep("b", json!({})),
        ]));
        let mut state = run(&def);
        ended(&mut state, 0, StepStatus::Failed);
        let p = plan(&def, &state);
        assert_eq!(p.next.steps[1].status, StepStatus::Running);
        ended(&mut state, 1, StepStatus::Succeeded);
        let p = plan(&def, &state);
        assert_eq!(p.next.status, RunStatus::Completed);
        assert!(!p.next.active);
        assert_eq!(p.next.ended_at, Some(NOW));
    }

    #[test]
    fn a_failure_with_on_failure_ask_pauses_the_run_and_starts_nothing() {
        let def = loaded(json!([
            sleep("a", json!({"on_failure": "ask", "needs": []})),
            sleep("b", json!({"needs": []})),
        ]));
        let mut state = run(&def);
        ended(&mut state, 0, StepStatus::Failed);
        let p = plan(&def, &state);
        assert_eq!(p.next.status, RunStatus::Paused);
        assert_eq!(p.next.steps[1].status, StepStatus::Waiting);
        assert!(p
            .events
            .iter()
            .any(|e| e.step.is_none() && e.message.contains("on_failure: ask")));
    }

    #[test]
    fn a_failed_attempt_with_retries_left_waits_and_then_begins_again() {
        let def = loaded(json!([sleep(
            "a",
            json!({"retries": 2, "retry_delay_secs": 2, "retry_backoff": 3})
        )]));
        let mut state = run(&def);
        in_flight(&mut state, 0);
        let failed = [Outcome {
            idx: 0,
            attempt: 1,
            result: AttemptResult::fail("boom"),
        }];
        let p = plan_with(&def, &state, &failed);
        let s = &p.next.steps[0];
        assert_eq!(s.status, StepStatus::Running);
        assert_eq!(s.retry_at, Some(NOW + 2000));
        assert!(p.effects.spawn.is_empty());

        // The second failure waits three times as long; the retry, once due, is attempt 3.
        let mut state = p.next.clone();
        state.steps[0].retry_at = None;
        state.steps[0].attempts = 2;
        let failed = [Outcome {
            idx: 0,
            attempt: 2,
            result: AttemptResult::fail("boom"),
        }];
        let p = plan_with(&def, &state, &failed);
        assert_eq!(p.next.steps[0].retry_at, Some(NOW + 6000));
        let mut state = p.next.clone();
        state.steps[0].retry_at = Some(NOW);
        let p = plan(&def, &state);
        assert_eq!(p.next.steps[0].attempts, 3);
        assert_eq!(p.next.steps[0].retry_at, None);
        assert_eq!(p.effects.spawn, [(0, false)]);
    }

    #[test]
    fn an_outcome_of_an_older_attempt_is_ignored() {
        let def = loaded(json!([sleep("a", json!({}))]));
        let mut state = run(&def);
        in_flight(&mut state, 0);
        state.steps[0].attempts = 2;
        let stale = [Outcome {
            idx: 0,
            attempt: 1,
            result: AttemptResult::fail("old"),
        }];
        let p = plan_with(&def, &state, &stale);
        assert_eq!(p.next.steps[0].status, StepStatus::Running);
        // Under way with no future here: taken up again.
        assert_eq!(p.effects.spawn, [(0, true)]);
    }

    #[test]
    fn approvals_settle_on_a_decision_or_the_deadline() {
        let def = loaded(json!([{"name": "ok", "type": "approval", "role": "r",
            "timeout_secs": 60}]));
        let mut state = run(&def);
        in_flight(&mut state, 0);
        assert_eq!(plan(&def, &state).next.steps[0].status, StepStatus::Running);

        let mut rejected = state.clone();
        rejected.steps[0].decision = Some("reject".to_owned());
        rejected.steps[0].decided_by = Some("bob".to_owned());
        rejected.steps[0].decision_comment = Some("not now".to_owned());
        let p = plan(&def, &rejected);
        assert_eq!(p.next.steps[0].status, StepStatus::Failed);
        assert_eq!(
            p.next.steps[0].error.as_deref(),
            Some("rejected by bob: not now")
        );

        let mut late = state.clone();
        late.steps[0].attempt_started_at = Some(NOW - 60_000);
        let p = plan(&def, &late);
        assert_eq!(p.next.steps[0].status, StepStatus::Failed);

        state.steps[0].decision = Some("approve".to_owned());
        let p = plan(&def, &state);
        assert_eq!(p.next.status, RunStatus::Completed);
    }

    #[test]
    fn an_http_call_cut_by_a_stopped_server_is_sent_again_once() {
        let def = loaded(json!([{"name": "h", "type": "http", "url": "https://example.com/"}]));
        let mut state = run(&def);
        in_flight(&mut state, 0);
        let p = plan(&def, &state);
        assert_eq!(p.effects.spawn, [(0, true)]);
        assert_eq!(p.next.steps[0].resumes, 1);
        let p = plan(&def, &p.next);
        assert_eq!(p.next.steps[0].status, StepStatus::Failed);
        assert_eq!(p.next.status, RunStatus::Failed);
    }
}
