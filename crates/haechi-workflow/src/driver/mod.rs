//! The driver of one execution: the only thing that moves it forward, on the one server that
//! holds its lease.
//!
//! It keeps a copy of the execution's state and repeats: work out what follows from the state
//! and what happened (an attempt ended, a retry or an approval deadline came, a control or a
//! decision was stored) — a [`Plan`] —, commit it through the journal, and only then act on it
//! (start attempts, cut them, cancel task instances). Nothing is done before the transition
//! that records it is committed. A commit refused as a conflict means the store changed
//! underneath (a control, a decision, a takeover): the driver reads it again and plans anew.
//!
//! It is driven by events, never by polling: attempt futures ending, messages (a poke after a
//! control or decision, the lease lost), and one timer for the nearest retry or approval
//! deadline.
//!
//! Planning reads nothing but the state, the definition and the time: it is `plan.rs`, unit
//! tested there without a store.

mod plan;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use haechi_exec::SecretEnv;
use haechi_identity::{Actor, Permission};
use haechi_types::{time::now_ms, Result};
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinError, JoinSet};

use crate::definition::{host_is_fixed, substitute, substitute_json, Action};
use crate::journal::{Applied, NewEvent, RunUpdate, Transition};
use crate::model::{RunStatus, StepStatus};
use crate::ports::{TaskStart, VaultUse};
use crate::state::{load_run, RunState};
use crate::steps::{instant_of, run_attempt, AttemptResult, AttemptSpec};
use crate::{Engine, Loaded};
use plan::{actor_of, open_windows, values, Planner};

/// What a driver is told.
#[derive(Debug)]
pub(crate) enum Msg {
    /// The execution changed in the store (control, decision): read it again.
    Poke,
    /// Another server holds the execution now: stop at once, change nothing.
    LeaseLost,
}

/// How the engine reaches a running driver.
pub(crate) struct DriverHandle {
    pub tx: mpsc::UnboundedSender<Msg>,
    /// The `rev` the driver last committed or read (the lease renewer compares it).
    pub rev: Arc<AtomicI64>,
    pub status: watch::Receiver<(RunStatus, i64)>,
}

/// An attempt that ended, not yet committed.
struct Outcome {
    idx: usize,
    attempt: i64,
    result: AttemptResult,
}

/// What to do once a plan is committed.
#[derive(Default)]
struct Effects {
    /// Attempts to start (`true`: taken up again after a restart).
    spawn: Vec<(usize, bool)>,
    /// Local attempt futures to drop.
    abort: Vec<usize>,
    /// Task instances to cancel.
    cancel: Vec<i64>,
    /// Step latencies to record: (type, succeeded, seconds).
    latencies: Vec<(&'static str, bool, f64)>,
    /// A child execution was cut: the run stays active until it is stopped.
    stop_children: bool,
}

/// One transition worked out from the state and what happened.
struct Plan {
    next: RunState,
    events: Vec<NewEvent>,
    task_starts: Vec<(usize, TaskStart)>,
    /// Workflow steps whose new attempt starts a child execution.
    child_starts: Vec<usize>,
    effects: Effects,
    /// How many pending outcomes the plan took into account.
    consumed: usize,
}

pub(crate) struct Driver {
    eng: Arc<Engine>,
    def: Arc<Loaded>,
    state: RunState,
    futures: JoinSet<(usize, i64, AttemptResult)>,
    running: HashMap<usize, (i64, AbortHandle)>,
    outcomes: Vec<Outcome>,
    rx: mpsc::UnboundedReceiver<Msg>,
    rev: Arc<AtomicI64>,
    status: watch::Sender<(RunStatus, i64)>,
    reload: bool,
}

enum Flow {
    Continue,
    /// The run ended and needs nothing more, or the lease is gone.
    Done,
}

impl Driver {
    /// Starts driving an execution this server has just claimed (or created).
    ///
    /// Boxed (as [`Driver::run`]) so that a driver may start another one (a workflow step's
    /// child) without the compiler needing this future's type to check its own.
    pub(crate) fn spawn<'a>(
        eng: &'a Arc<Engine>,
        id: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(Self::spawn_inner(eng, id))
    }

    async fn spawn_inner(eng: &Arc<Engine>, id: &str) -> Result<()> {
        let Some(state) = load_run(&eng.store, id).await? else {
            return Ok(());
        };
        let def = eng.loaded(state.workflow_id, state.version).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let rev = Arc::new(AtomicI64::new(state.rev));
        let (status_tx, status_rx) = watch::channel((state.status, state.rev));
        {
            let mut drivers = eng.drivers.lock().unwrap_or_else(|p| p.into_inner());
            if drivers.contains_key(id) {
                return Ok(());
            }
            drivers.insert(
                id.to_owned(),
                DriverHandle {
                    tx,
                    rev: rev.clone(),
                    status: status_rx,
                },
            );
        }
        crate::metrics::driven(1.0);
        let driver = Driver {
            eng: eng.clone(),
            def,
            state,
            futures: JoinSet::new(),
            running: HashMap::new(),
            outcomes: Vec::new(),
            rx,
            rev,
            status: status_tx,
            reload: false,
        };
        let eng = eng.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            driver.run().await;
            eng.drivers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            crate::metrics::driven(-1.0);
        });
        Ok(())
    }

    fn run(self) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(self.run_inner())
    }

    async fn run_inner(mut self) {
        let mut shutdown = self.eng.shutdown.subscribe();
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.advance().await {
                Ok(Flow::Done) => break,
                Ok(Flow::Continue) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(execution = %self.state.id, "workflow driver: {}; trying again", e.message);
                    self.reload = true;
                    let backoff = Duration::from_millis(100u64 << failures.min(6));
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    continue;
                }
            }
            let wake = self.next_wake();
            tokio::select! {
                _ = shutdown.changed() => break,
                msg = self.rx.recv() => match msg {
                    Some(Msg::Poke) => self.reload = true,
                    Some(Msg::LeaseLost) | None => {
                        tracing::info!(execution = %self.state.id, "another server drives this execution now");
                        break;
                    }
                },
                Some(joined) = self.futures.join_next(), if !self.futures.is_empty() => self.collect(joined),
                _ = sleep_until_ms(wake), if wake.is_some() => {}
            }
            while let Some(joined) = self.futures.try_join_next() {
                self.collect(joined);
            }
            while let Ok(msg) = self.rx.try_recv() {
                match msg {
                    Msg::Poke => self.reload = true,
                    Msg::LeaseLost => {
                        self.futures.abort_all();
                        return;
                    }
                }
            }
        }
        // Dropping the futures cuts sleeps and http calls; task instances go on on their agents
        // and are re-attached by whichever server drives the execution next.
        self.futures.abort_all();
    }

    fn collect(&mut self, joined: std::result::Result<(usize, i64, AttemptResult), JoinError>) {
        match joined {
            Ok((idx, attempt, result)) => {
                if self.running.get(&idx).is_some_and(|(a, _)| *a == attempt) {
                    self.running.remove(&idx);
                }
                self.outcomes.push(Outcome {
                    idx,
                    attempt,
                    result,
                });
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::error!(execution = %self.state.id, "a step attempt panicked: {e}"),
        }
    }

    /// The nearest retry or approval deadline, unix ms.
    fn next_wake(&self) -> Option<i64> {
        if self.state.status.is_final() {
            return None;
        }
        let mut wake: Option<i64> = None;
        for (s, step) in self.state.steps.iter().zip(&self.def.def.steps) {
            let at = if s.status == StepStatus::Running && s.retry_at.is_some() {
                s.retry_at
            } else if s.in_flight() && matches!(step.action, Action::Approval { .. }) {
                step.timeout_secs
                    .and_then(|t| s.attempt_started_at.map(|a| a + t.ms() as i64))
            } else {
                None
            };
            if let Some(at) = at {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        wake
    }

    /// Reads the execution again; `false` when this server no longer holds it.
    async fn reload(&mut self) -> Result<bool> {
        self.reload = false;
        match load_run(&self.eng.store, &self.state.id).await? {
            Some(s) if s.owner.as_deref() == Some(self.eng.server_id.as_str()) => {
                // A run that ended through a control was counted where the control was made.
                self.state = s;
                self.rev.store(self.state.rev, Ordering::Relaxed);
                self.status
                    .send_replace((self.state.status, self.state.rev));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Commits what follows from the state and what happened, then acts on it.
    async fn advance(&mut self) -> Result<Flow> {
        if self.reload && !self.reload().await? {
            return Ok(Flow::Done);
        }
        loop {
            if self.state.status.is_final() {
                return self.finish().await;
            }
            let plan = self.plan(now_ms());
            if plan.next == self.state && plan.events.is_empty() {
                let Plan {
                    effects, consumed, ..
                } = plan;
                self.outcomes.drain(..consumed);
                self.act(effects, Vec::new());
                return Ok(Flow::Continue);
            }
            let mut transition = self.transition(&plan);
            self.read_env(&mut transition).await;
            self.prepare_children(&plan, &mut transition).await;
            match self.eng.journal.apply(transition).await? {
                Applied::Conflict => {
                    if !self.reload().await? {
                        return Ok(Flow::Done);
                    }
                }
                Applied::Committed {
                    rev,
                    tasks,
                    children,
                } => {
                    let Plan {
                        mut next,
                        effects,
                        consumed,
                        ..
                    } = plan;
                    self.outcomes.drain(..consumed);
                    next.rev = rev;
                    let mut started = Vec::new();
                    for (idx, r) in tasks {
                        match r {
                            Ok(no) => {
                                next.steps[idx].task_instance_no = Some(no);
                                started.push(idx);
                            }
                            Err(e) => {
                                next.steps[idx].error = Some(e.message.clone());
                                self.outcomes.push(Outcome {
                                    idx,
                                    attempt: next.steps[idx].attempts,
                                    result: AttemptResult::fail(e.message),
                                });
                            }
                        }
                    }
                    let mut new_children = Vec::new();
                    for (idx, r) in children {
                        match r {
                            Ok(child) => {
                                next.steps[idx].child_execution_id = Some(child.clone());
                                new_children.push(child);
                                started.push(idx);
                            }
                            Err(e) => {
                                next.steps[idx].error = Some(e.message.clone());
                                self.outcomes.push(Outcome {
                                    idx,
                                    attempt: next.steps[idx].attempts,
                                    result: AttemptResult::fail(e.message),
                                });
                            }
                        }
                    }
                    for child in new_children {
                        let eng = self.eng.clone();
                        tokio::spawn(async move {
                            if let Err(e) = Driver::spawn(&eng, &child).await {
                                tracing::warn!(execution = %child, "could not start the child's driver yet: {}", e.message);
                            }
                        });
                    }
                    let was = self.state.status;
                    self.state = next;
                    self.rev.store(rev, Ordering::Relaxed);
                    self.status
                        .send_replace((self.state.status, self.state.rev));
                    if was != self.state.status && self.state.status.is_final() {
                        crate::metrics::ended(self.state.status);
                    }
                    self.act(effects, started);
                }
            }
        }
    }

    /// The run has ended: cut whatever still runs, cancel its task instances, and mark the
    /// execution as needing no driver.
    async fn finish(&mut self) -> Result<Flow> {
        if !self.state.active {
            return Ok(Flow::Done);
        }
        self.futures.abort_all();
        self.running.clear();
        self.outcomes.clear();
        let actor = self.actor();
        for s in &self.state.steps {
            if let (Some(no), StepStatus::Stopped | StepStatus::Running) =
                (s.task_instance_no, s.status)
            {
                if let Err(e) = self.eng.tasks.cancel(no, Some(&actor)).await {
                    tracing::warn!(execution = %self.state.id, instance = no, "cancelling a task instance failed: {}", e.message);
                }
            }
        }
        // Until every window is locked the execution stays active, so a server that takes it
        // up after a crash locks them.
        self.lock_windows().await?;
        self.stop_children().await?;
        loop {
            let now = now_ms();
            let mut next = self.state.clone();
            next.active = false;
            let mut events = Vec::new();
            for s in next.steps.iter_mut() {
                match s.status {
                    StepStatus::Running => {
                        s.status = StepStatus::Stopped;
                        s.retry_at = None;
                        s.ended_at = Some(now);
                        events.push(step_event(
                            &s.name,
                            StepStatus::Stopped,
                            s.attempts,
                            "the run ended",
                        ));
                    }
                    StepStatus::Waiting => {
                        s.status = StepStatus::Skipped;
                        events.push(step_event(&s.name, StepStatus::Skipped, 0, "the run ended"));
                    }
                    _ => {}
                }
            }
            let plan = Plan {
                next,
                events,
                task_starts: Vec::new(),
                child_starts: Vec::new(),
                effects: Effects::default(),
                consumed: 0,
            };
            let t = self.transition(&plan);
            match self.eng.journal.apply(t).await? {
                Applied::Committed { rev, .. } => {
                    self.state = plan.next;
                    self.state.rev = rev;
                    self.rev.store(rev, Ordering::Relaxed);
                    return Ok(Flow::Done);
                }
                Applied::Conflict => {
                    if !self.reload().await? {
                        return Ok(Flow::Done);
                    }
                    if !self.state.active {
                        return Ok(Flow::Done);
                    }
                }
            }
        }
    }

    /// Checks, at the moment each task step's attempt starts, that the user who started the
    /// execution may run tasks (`task.execute`: the step runs as them), then reads the vault
    /// values of its `env_from_vault` as them. A refusal makes the attempt fail with the
    /// reason (the journal records it; no task starts).
    async fn read_env(&self, t: &mut Transition) {
        if t.task_starts.is_empty() {
            return;
        }
        let may_run = match self
            .eng
            .identity
            .principal_of(self.state.started_by_pk)
            .await
        {
            Ok(p) if p.can(Permission::TaskExecute) => Ok(()),
            Ok(_) => Err("lacks the permission 'task.execute'".to_owned()),
            Err(e) => Err(format!("cannot be checked: {}", e.message)),
        };
        for (idx, start) in &mut t.task_starts {
            let Action::Task(task) = &self.def.def.steps[*idx].action else {
                continue;
            };
            if let Err(why) = &may_run {
                start.env_refused = Some(format!(
                    "step '{}' runs task '{}' on {} as '{}', who {why}",
                    self.def.def.steps[*idx].name,
                    task.task,
                    task.nodes.join(", "),
                    self.state.started_by
                ));
                continue;
            }
            if !task.env.is_empty() {
                if let Err(why) = self.step_env(task, start).await {
                    start.env.clear();
                    start.env_refused =
                        Some(format!("step '{}': {why}", self.def.def.steps[*idx].name));
                    continue;
                }
            }
            if task.env_from_vault.is_empty() {
                continue;
            }
            let Some(secrets) = &self.eng.secrets else {
                start.env_refused =
                    Some("env_from_vault is not available on this server (no vault)".to_owned());
                continue;
            };
            for (name, r) in &task.env_from_vault {
                start.vault_uses.push(VaultUse {
                    name: name.clone(),
                    credential_id: r.credential_id,
                    attribute: r.attribute.clone(),
                });
                if start.env_refused.is_some() {
                    continue;
                }
                match secrets
                    .read(
                        self.state.started_by_pk,
                        &start.actor,
                        r.credential_id,
                        &r.attribute,
                    )
                    .await
                {
                    Ok(v) => start.env.push(SecretEnv {
                        name: name.clone(),
                        value: v.expose_secret().to_owned(),
                    }),
                    Err(e) => {
                        start.env.clear();
                        start.env_refused = Some(format!(
                            "env_from_vault.{name}: {} may not use attribute '{}' of credential {}: {}",
                            self.state.started_by, r.attribute, r.credential_id, e.message
                        ));
                    }
                }
            }
        }
    }

    /// Prepares the child execution of each workflow step's new attempt (stored by the
    /// journal in the attempt's transaction), or says why it cannot start: the workflow does
    /// not exist, its parameters do not fit, it is already running in this chain of runs, or
    /// the starter may not run its steps.
    async fn prepare_children(&self, plan: &Plan, t: &mut Transition) {
        for &idx in &plan.child_starts {
            let r = self.prepare_child(&plan.next, idx).await;
            t.child_starts.push((idx, r));
        }
    }

    async fn prepare_child(
        &self,
        next: &RunState,
        idx: usize,
    ) -> std::result::Result<crate::journal::NewExecution, String> {
        let step = &self.def.def.steps[idx];
        let Action::Workflow(w) = &step.action else {
            return Err("not a workflow step".to_owned());
        };
        let eng = &self.eng;
        let missing = || {
            format!(
                "step '{}' runs workflow '{}', which does not exist",
                step.name, w.workflow
            )
        };
        let id = crate::workflows::resolve_ref(&eng.store, &w.workflow)
            .await
            .map_err(|e| e.message)?
            .ok_or_else(missing)?;
        let row = crate::workflows::find(&eng.store, &id.to_string(), false)
            .await
            .map_err(|_| missing())?;
        // A cycle the definitions no longer show (a rename since): never run a workflow
        // inside itself.
        let mut ancestor = Some((
            self.state.workflow_id,
            self.state.parent_execution_id.clone(),
        ));
        let mut depth = 0;
        while let Some((wf, parent)) = ancestor {
            if wf == row.id {
                return Err(format!(
                    "workflow '{}' is already running in this chain of executions (a cycle); it is not started again",
                    row.name
                ));
            }
            depth += 1;
            if depth > 50 {
                return Err("more than 50 nested workflow executions".to_owned());
            }
            ancestor = match parent {
                Some(pid) => crate::state::load_run(&eng.store, &pid)
                    .await
                    .map_err(|e| e.message)?
                    .map(|r| (r.workflow_id, r.parent_execution_id)),
                None => None,
            };
        }
        let loaded = eng
            .loaded(row.id, row.version)
            .await
            .map_err(|e| e.message)?;
        let values = self.values(next);
        let given: serde_json::Map<String, serde_json::Value> = w
            .params
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(substitute(v, &values))))
            .collect();
        let resolved = crate::definition::resolve_params(&loaded.def, &given)
            .map_err(|e| format!("workflow '{}': {}", row.name, e.message))?;
        let principal = eng
            .identity
            .principal_of(self.state.started_by_pk)
            .await
            .map_err(|e| e.message)?;
        let actor = self.actor();
        let caller = haechi_identity::Caller::acting_as(
            std::sync::Arc::new(principal.clone()),
            actor.clone(),
        );
        crate::executions::check_starter(eng, &caller, &loaded.def)
            .await
            .map_err(|e| e.message)?;
        let audit = actor.event("workflow.execute").detail(json!({
            "wf_id": row.id.to_string(), "name": row.name, "version": row.version,
            "params": resolved, "parent_execution_id": self.state.id, "parent_step": step.name,
        }));
        Ok(crate::journal::NewExecution {
            workflow_id: row.id,
            version: row.version,
            params: serde_json::to_string(&resolved).map_err(|e| e.to_string())?,
            started_by: self.state.started_by.clone(),
            started_by_pk: self.state.started_by_pk,
            source_ip: self.state.source_ip.clone(),
            family: "mdrm",
            step_names: loaded.def.steps.iter().map(|s| s.name.clone()).collect(),
            skipped: vec![false; loaded.def.steps.len()],
            concurrency: loaded.def.concurrency,
            owner: eng.server_id.clone(),
            lease_until: now_ms() + eng.cfg.lease_secs as i64 * 1000,
            day: crate::executions::today(eng.utc_offset_secs),
            audit,
            parent: Some((self.state.id.clone(), idx as i64)),
            secrets: Vec::new(),
        })
    }

    /// The run has ended: its child executions still going are stopped too.
    async fn stop_children(&self) -> Result<()> {
        let actor = self.actor();
        for s in &self.state.steps {
            let Some(child) = &s.child_execution_id else {
                continue;
            };
            if !matches!(s.status, StepStatus::Stopped | StepStatus::Running) {
                continue;
            }
            match crate::executions::control_run(
                &self.eng,
                &actor,
                child,
                crate::model::Control::Stop,
            )
            .await
            {
                Ok(_) => {}
                Err(e) if e.code == haechi_types::Code::Conflict => {}
                Err(e) if e.code == haechi_types::Code::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A task step's `env`, its templates filled from the run's values with the password
    /// parameters opened (they are never stored in clear; the agent masks every `env` value
    /// in the output).
    async fn step_env(
        &self,
        task: &crate::definition::TaskAction,
        start: &mut TaskStart,
    ) -> std::result::Result<(), String> {
        let mut values = self.values(&self.state).into_owned();
        let secrets: Vec<&str> = self
            .def
            .def
            .password_params()
            .filter(|n| values.get(*n).is_some_and(|v| v == crate::definition::MASK))
            .collect();
        let opened = crate::executions::open_passwords(&self.eng, &self.state.id, &secrets).await?;
        for name in &secrets {
            match opened.get(*name) {
                Some(v) => {
                    values.insert((*name).to_owned(), v.clone());
                }
                None => {
                    return Err(format!(
                        "the value of password parameter '{name}' is gone (it is deleted when the run ends; start a new run)"
                    ))
                }
            }
        }
        for (name, template) in &task.env {
            start.env.push(SecretEnv {
                name: name.clone(),
                value: substitute(template, &values),
            });
        }
        Ok(())
    }

    /// The `db_access` windows this run opened that may still be open (see [`open_windows`]).
    fn open_windows(&self, state: &RunState, now: i64) -> Vec<(usize, Option<i64>, String, i64)> {
        open_windows(&self.def, state, now)
    }

    /// The run ended `FAILED` or `STOPPED`: locks again every policy a `db_access` step of it
    /// unlocked whose window has not ended yet (the end of a window needs nothing: the policy
    /// counts as locked from then on by itself).
    async fn lock_windows(&self) -> Result<()> {
        if !matches!(self.state.status, RunStatus::Failed | RunStatus::Stopped) {
            return Ok(());
        }
        let windows = self.open_windows(&self.state, now_ms());
        if windows.is_empty() {
            return Ok(());
        }
        let Some(gate) = &self.eng.policies else {
            return Ok(());
        };
        let actor = self.actor();
        for (idx, index, policy, until) in windows {
            let index = match index {
                Some(i) => i,
                None => match gate.find(&policy).await? {
                    Some(i) => i,
                    None => continue,
                },
            };
            gate.lock(&actor, index).await?;
            let step = &self.def.def.steps[idx].name;
            haechi_audit::record(
                &self.eng.store,
                actor
                    .event("workflow.db_access.lock")
                    .target(self.state.id.clone())
                    .detail(json!({
                        "step": step, "policy": policy, "index": index,
                        "window_until": haechi_types::time::iso_ms(until),
                        "reason": format!("the run ended {}", self.state.status.as_str()),
                    })),
            )
            .await?;
            tracing::info!(execution = %self.state.id, %step, %policy, "db_access window locked: the run ended {}", self.state.status.as_str());
        }
        Ok(())
    }

    /// The execution's steps act as the user who started it (see [`actor_of`]).
    fn actor(&self) -> Actor {
        actor_of(&self.state)
    }

    fn transition(&self, plan: &Plan) -> Transition {
        let n = &plan.next;
        Transition {
            execution_id: n.id.clone(),
            expect_rev: self.state.rev,
            owner: self.eng.server_id.clone(),
            run: RunUpdate {
                status: n.status,
                active: n.active,
                current_step: n.current_step.clone(),
                steps_done: n.steps_done,
                error: n.error.clone(),
                ended_at: n.ended_at,
                has_secrets: self.def.def.password_params().next().is_some(),
            },
            steps: n
                .steps
                .iter()
                .enumerate()
                .filter(|(i, s)| self.state.steps.get(*i) != Some(s))
                .map(|(i, s)| (i, s.clone()))
                .collect(),
            events: plan.events.clone(),
            task_starts: plan.task_starts.clone(),
            child_starts: Vec::new(),
        }
    }

    /// Works out the next state from the current one, the pending outcomes and the time.
    fn plan(&self, now: i64) -> Plan {
        Planner {
            def: &self.def,
            state: &self.state,
            outcomes: &self.outcomes,
            running: &self.running,
            retry_cap_ms: self.eng.cfg.retry_max_delay_secs * 1000,
        }
        .plan(now)
    }

    /// What `${NAME}` reads (see [`values`]).
    fn values<'s>(&self, state: &'s RunState) -> std::borrow::Cow<'s, BTreeMap<String, String>> {
        values(&self.def, state)
    }

    /// Acts on a committed plan.
    fn act(&mut self, effects: Effects, started_tasks: Vec<usize>) {
        for (kind, ok, secs) in effects.latencies {
            crate::metrics::step(kind, ok, secs);
        }
        for idx in effects.abort {
            if let Some((_, h)) = self.running.remove(&idx) {
                h.abort();
            }
        }
        if !effects.cancel.is_empty() {
            let tasks = self.eng.tasks.clone();
            let actor = self.actor();
            let id = self.state.id.clone();
            tokio::spawn(async move {
                for no in effects.cancel {
                    if let Err(e) = tasks.cancel(no, Some(&actor)).await {
                        tracing::warn!(execution = %id, instance = no, "cancelling a task instance failed: {}", e.message);
                    }
                }
            });
        }
        for (idx, resumed) in effects.spawn {
            self.spawn_attempt(idx, resumed);
        }
        for idx in started_tasks {
            self.spawn_attempt(idx, false);
        }
    }

    fn spawn_attempt(&mut self, idx: usize, resumed: bool) {
        let step = &self.def.def.steps[idx];
        let s = &self.state.steps[idx];
        if let Action::Workflow(_) = &step.action {
            let attempt = s.attempts;
            let Some(child) = s.child_execution_id.clone() else {
                return;
            };
            let timeout_at = step
                .timeout_secs
                .map(|t| s.attempt_started_at.unwrap_or_else(now_ms) + t.ms() as i64);
            let eng = self.eng.clone();
            let actor = self.actor();
            let handle = self.futures.spawn(async move {
                let r = wait_child(eng, &child, timeout_at, actor).await;
                (idx, attempt, r)
            });
            if let Some((_, old)) = self.running.insert(idx, (attempt, handle)) {
                old.abort();
            }
            return;
        }
        let values = self.values(&self.state);
        let params = values.as_ref();
        let mut refused = None;
        let action = match &step.action {
            Action::Http(h) => {
                // Definitions saved before the rule existed are held to it here.
                if !h.host_from_params && !host_is_fixed(&h.url) {
                    refused = Some(
                        "the url lets a parameter choose the host, which this definition does \
                         not allow (host_from_params); nothing was sent"
                            .to_owned(),
                    );
                }
                let mut h = h.clone();
                h.url = substitute(&h.url, params);
                for v in h.headers.values_mut() {
                    *v = substitute(v, params);
                }
                h.body = h.body.as_ref().map(|b| substitute_json(b, params));
                Action::Http(h)
            }
            other => other.clone(),
        };
        let spec = AttemptSpec {
            execution_id: self.state.id.clone(),
            step: step.name.clone(),
            attempt: s.attempts,
            action,
            attempt_started_at: s.attempt_started_at.unwrap_or_else(now_ms),
            timeout_ms: step.timeout_secs.map(|t| t.ms()),
            task_instance_no: s.task_instance_no,
            resumed,
            actor: self.actor(),
            user_pk: self.state.started_by_pk,
            refused,
        };
        let attempt = s.attempts;
        let ctx = self.eng.attempts.clone();
        let handle = self.futures.spawn(async move {
            let r = run_attempt(ctx, spec).await;
            (idx, attempt, r)
        });
        if let Some((_, old)) = self.running.insert(idx, (attempt, handle)) {
            old.abort();
        }
    }
}

/// The variables task steps captured, from their stored results (a later capture of the same
/// name wins).
pub(crate) fn captured(state: &RunState) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in &state.steps {
        if s.status != StepStatus::Succeeded {
            continue;
        }
        let Some(r) = s.result.as_deref().filter(|r| r.contains("\"captured\"")) else {
            continue;
        };
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(r) {
            if let Some(serde_json::Value::Object(c)) = m.get("captured") {
                for (k, v) in c {
                    if let Some(v) = v.as_str() {
                        out.insert(k.clone(), v.to_owned());
                    }
                }
            }
        }
    }
    out
}

fn step_event(name: &str, status: StepStatus, attempt: i64, message: &str) -> NewEvent {
    NewEvent {
        step: Some(name.to_owned()),
        status: status.as_str(),
        attempt,
        message: message.to_owned(),
        task_instance_no: None,
    }
}

fn run_event(status: RunStatus, message: String) -> NewEvent {
    NewEvent {
        step: None,
        status: status.as_str(),
        attempt: 0,
        message,
        task_instance_no: None,
    }
}

fn sleep_until_ms(at: Option<i64>) -> tokio::time::Sleep {
    tokio::time::sleep_until(instant_of(at.unwrap_or_else(now_ms)))
}

/// Waits for a workflow step's child execution to end: `COMPLETED` is success, `FAILED` or
/// `STOPPED` failure (naming the child and why). Past the step's timeout the child is stopped
/// and the attempt fails.
async fn wait_child(
    eng: Arc<Engine>,
    child: &str,
    timeout_at: Option<i64>,
    actor: Actor,
) -> AttemptResult {
    loop {
        let row: std::result::Result<Option<(String, Option<String>)>, haechi_types::Error> =
            haechi_store::read!(eng.store, |db| sqlx::query_as(
                "SELECT status, error FROM workflow_executions WHERE id = $1"
            )
            .bind(child)
            .fetch_optional(db)
            .await)
            .map_err(haechi_types::Error::from);
        match row {
            Ok(Some((status, error))) => match RunStatus::parse(&status) {
                Some(RunStatus::Completed) => {
                    return AttemptResult {
                        ok: true,
                        error: None,
                        result: Some(
                            json!({ "child_execution_id": child, "status": status }).to_string(),
                        ),
                    }
                }
                Some(st @ (RunStatus::Failed | RunStatus::Stopped)) => {
                    let why = error.map(|e| format!(": {e}")).unwrap_or_default();
                    return AttemptResult {
                        ok: false,
                        error: Some(format!(
                            "child execution {child} ended {}{why}",
                            st.as_str()
                        )),
                        result: Some(
                            json!({ "child_execution_id": child, "status": status }).to_string(),
                        ),
                    };
                }
                _ => {}
            },
            Ok(None) => {
                return AttemptResult::fail(format!("child execution {child} does not exist"))
            }
            Err(e) => tracing::warn!(%child, "reading the child execution: {}", e.message),
        }
        if let Some(t) = timeout_at {
            if now_ms() >= t {
                if let Err(e) =
                    crate::executions::control_run(&eng, &actor, child, crate::model::Control::Stop)
                        .await
                {
                    if e.code != haechi_types::Code::Conflict {
                        tracing::warn!(%child, "could not stop the child after the step's timeout: {}", e.message);
                    }
                }
                return AttemptResult::fail(format!(
                    "timed out: child execution {child} did not end in time (it was stopped)"
                ));
            }
        }
        let cap = |d: Duration| {
            let at = tokio::time::Instant::now() + d;
            timeout_at.map(instant_of).map_or(at, |t| t.min(at))
        };
        match eng.status_watch(child) {
            Some(mut rx) => {
                let _ = tokio::time::timeout_at(
                    cap(Duration::from_secs(5)),
                    rx.wait_for(|(st, _)| st.is_final()),
                )
                .await;
            }
            None => tokio::time::sleep_until(cap(Duration::from_millis(250))).await,
        }
    }
}
