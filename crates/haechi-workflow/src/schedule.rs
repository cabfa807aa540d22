//! The scheduler: one loop for every kind of schedule — a workflow's `schedules` (runs started
//! with `started_by` = `schedule`) and an OPMATE task's (instances started with
//! `runnerGubun` = `S`). A kind is a [`Kind`]: it lists its schedules ([`Entry`]) and starts
//! what one fire starts inside the scheduler's transaction; adding a kind is one more
//! implementation, the claiming and the misfire rule stay here.
//!
//! Exactly once: each fire is a row of `schedule_runs` (kind, target, schedule key, fire
//! time), inserted in the same transaction as the start it makes. With several servers on one
//! PostgreSQL the second insert of a fire finds the first and does nothing, so a fire starts
//! one run whichever servers see it.
//!
//! Misfires: a server computes the next fire after the last one stored (or after the schedule
//! was saved). When that is already past — the servers were down — several fires may have been
//! missed: only the latest counts, and it runs once (`misfire: run_once`, the default) or is
//! recorded as skipped (`misfire: skip`) when it is older than the grace (two ticks, at least
//! 2 s). Either way the next fire is computed after it, so none runs twice.
//!
//! A refused start (the task is not approved, `execScheduler` is `D`, a node is disabled, the
//! workflow's run lock is full, the schedule's owner lost a right) is a skipped fire, stored
//! with its reason and audited (`schedule.skip`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use haechi_audit::{Event, Family, Origin, Outcome};
use haechi_exec::{CronSpec, RunnerGubun, StartInstance};
use haechi_identity::{Actor, Caller, Permission, Principal};
use haechi_store::{in_tx, read, Tx};
use haechi_types::{time::now_ms, Code, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::definition::{self, Misfire, Schedule};
use crate::driver::Driver;
use crate::model::NextFire;
use crate::{journal, workflows, Engine, Workflows};

/// When an entry fires.
pub(crate) enum When {
    Cron(Box<CronSpec>),
    /// Once, at this unix ms.
    At(i64),
}

impl When {
    fn next_after(&self, after: i64) -> Option<i64> {
        match self {
            When::Cron(c) => c.next_after(after),
            When::At(at) => (*at > after).then_some(*at),
        }
    }
}

/// One schedule of one target.
pub(crate) struct Entry {
    pub target: String,
    /// Identifies the schedule among the target's (its index and text).
    pub sched: String,
    pub when: When,
    pub misfire: Misfire,
    /// When the schedule was saved: no fire before it counts.
    pub since: i64,
    /// What the kind needs to start the fire.
    pub payload: Value,
}

/// What a fire started, and what to do once its transaction has committed.
pub(crate) struct Fired {
    pub started: String,
    pub after_commit: Box<dyn FnOnce() + Send>,
}

/// A kind of target schedules start.
pub(crate) trait Kind: Send + Sync {
    fn name(&self) -> &'static str;

    /// Every schedule of this kind now.
    fn entries<'a>(&'a self, eng: &'a Arc<Engine>) -> BoxFuture<'a, Result<Vec<Entry>>>;

    /// Starts the fire `due` of `entry` inside `tx`. A refusal is an `Err` whose code is not
    /// `Internal` and leaves `tx` usable (every check comes before a write).
    fn fire<'a>(
        &'a self,
        eng: &'a Arc<Engine>,
        tx: &'a mut Tx,
        entry: &'a Entry,
        due: i64,
    ) -> BoxFuture<'a, Result<Fired>>;
}

fn refusal(e: &Error) -> bool {
    e.code != Code::Internal && e.code != Code::Unavailable
}

pub(crate) async fn run(eng: Arc<Engine>) {
    let tick = Duration::from_millis(eng.cfg.schedule_tick_ms);
    let mut shutdown = eng.shutdown.subscribe();
    let kinds: Vec<Box<dyn Kind>> = vec![Box::new(WorkflowKind), Box::new(TaskKind)];
    let mut last: HashMap<(&'static str, String, String), i64> = HashMap::new();
    // The first round prunes at once.
    let mut pruned = tokio::time::Instant::now()
        .checked_sub(PRUNE_EVERY)
        .unwrap_or_else(tokio::time::Instant::now);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = tokio::time::Instant::now();
            if let Err(e) = prune(&eng).await {
                tracing::warn!("scheduler: pruning old fires: {}", e.message);
            }
        }
        for kind in &kinds {
            if let Err(e) = tick_kind(&eng, kind.as_ref(), &mut last).await {
                tracing::warn!(kind = kind.name(), "scheduler: {}", e.message);
            }
        }
    }
}

/// How long the record of a fire is kept (the latest of each schedule is always kept: the
/// next fire is computed after it).
const KEEP_FIRES_MS: i64 = 30 * 24 * 3600 * 1000;
const PRUNE_EVERY: Duration = Duration::from_secs(600);

async fn prune(eng: &Engine) -> Result<()> {
    let mut tx = eng.store.begin().await?;
    in_tx!(tx, |c| sqlx::query(
        "DELETE FROM schedule_runs WHERE claimed_at < $1 AND fire_at < \
         (SELECT MAX(x.fire_at) FROM schedule_runs x WHERE x.kind = schedule_runs.kind \
          AND x.target = schedule_runs.target AND x.sched = schedule_runs.sched)"
    )
    .bind(now_ms() - KEEP_FIRES_MS)
    .execute(&mut *c)
    .await
    .map(|_| ()))?;
    tx.commit().await
}

async fn tick_kind(
    eng: &Arc<Engine>,
    kind: &dyn Kind,
    last: &mut HashMap<(&'static str, String, String), i64>,
) -> Result<()> {
    let entries = kind.entries(eng).await?;
    let now = now_ms();
    let grace = (eng.cfg.schedule_tick_ms as i64 * 2).max(2000);
    let live: std::collections::HashSet<(String, String)> = entries
        .iter()
        .map(|e| (e.target.clone(), e.sched.clone()))
        .collect();
    last.retain(|(k, t, s), _| *k != kind.name() || live.contains(&(t.clone(), s.clone())));
    for entry in &entries {
        let key = (kind.name(), entry.target.clone(), entry.sched.clone());
        let prev = match last.get(&key) {
            Some(t) => *t,
            None => {
                let t: Option<i64> = read!(eng.store, |db| {
                    sqlx::query_scalar(
                    "SELECT MAX(fire_at) FROM schedule_runs WHERE kind = $1 AND target = $2 AND sched = $3"
                )
                .bind(kind.name())
                .bind(&entry.target)
                .bind(&entry.sched)
                .fetch_one(db)
                .await
                })?;
                let t = t.unwrap_or(0);
                last.insert(key.clone(), t);
                t
            }
        };
        let base = prev.max(entry.since);
        let Some(mut due) = entry.when.next_after(base) else {
            continue;
        };
        if due > now {
            continue;
        }
        // Several fires may have passed while no server ran: only the latest counts.
        for _ in 0..100_000 {
            match entry.when.next_after(due) {
                Some(n) if n <= now => due = n,
                _ => break,
            }
        }
        let missed = due < now - grace;
        fire_one(eng, kind, entry, due, missed).await?;
        last.insert(key, due);
    }
    Ok(())
}

/// Claims fire `due` of `entry` and starts it (or records it skipped), in one transaction.
async fn fire_one(
    eng: &Arc<Engine>,
    kind: &dyn Kind,
    entry: &Entry,
    due: i64,
    missed: bool,
) -> Result<()> {
    let mut tx = eng.store.begin().await?;
    let claimed = in_tx!(tx, |c| {
        sqlx::query(
        "INSERT INTO schedule_runs (kind, target, sched, fire_at, claimed_at, claimed_by, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6, 'claimed') ON CONFLICT DO NOTHING"
    )
    .bind(kind.name())
    .bind(&entry.target)
    .bind(&entry.sched)
    .bind(due)
    .bind(now_ms())
    .bind(&eng.server_id)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    if claimed == 0 {
        // Another server has it.
        return Ok(());
    }
    let fire_iso = haechi_types::time::iso_ms(due);
    let (outcome, started, reason, after) = if missed && entry.misfire == Misfire::Skip {
        let why = format!("the fire of {fire_iso} was missed while no server ran (misfire: skip)");
        (
            "misfire_skipped",
            None,
            Some(why),
            None::<Box<dyn FnOnce() + Send>>,
        )
    } else {
        match kind.fire(eng, &mut tx, entry, due).await {
            Ok(f) => ("started", Some(f.started), None, Some(f.after_commit)),
            Err(e) if refusal(&e) => ("skipped", None, Some(e.message), None),
            Err(e) => return Err(e),
        }
    };
    in_tx!(tx, |c| sqlx::query(
        "UPDATE schedule_runs SET outcome = $5, started = $6, reason = $7 \
         WHERE kind = $1 AND target = $2 AND sched = $3 AND fire_at = $4"
    )
    .bind(kind.name())
    .bind(&entry.target)
    .bind(&entry.sched)
    .bind(due)
    .bind(outcome)
    .bind(&started)
    .bind(&reason)
    .execute(&mut *c)
    .await
    .map(|_| ()))?;
    if let Some(why) = &reason {
        tracing::info!(kind = kind.name(), target = %entry.target, fire = %fire_iso, "schedule fire skipped: {why}");
        haechi_audit::append(
            &mut tx,
            Event::new(family(kind.name()), "schedule.skip")
                .with_origin(&schedule_origin(kind.name(), entry))
                .by("schedule", None)
                .target(format!("{}:{}", kind.name(), entry.target))
                .outcome(Outcome::Failure)
                .detail(json!({
                    "schedule": entry.sched, "fire_at": fire_iso, "reason": why,
                    "misfire": missed,
                })),
        )
        .await?;
    }
    tx.commit().await?;
    if let Some(after) = after {
        after();
    }
    if let Some(s) = &started {
        tracing::info!(kind = kind.name(), target = %entry.target, fire = %fire_iso, started = %s, "schedule fired");
    }
    Ok(())
}

fn family(kind: &str) -> Family {
    match kind {
        "task" => Family::Opmate,
        _ => Family::Mdrm,
    }
}

/// The origin of what a fire of `entry` starts: `<kind>:<target>/<index of the schedule>`.
fn schedule_origin(kind: &str, entry: &Entry) -> Origin {
    let index = entry.sched.split('|').next().unwrap_or_default();
    Origin::Schedule {
        schedule: format!("{kind}:{}/{index}", entry.target),
    }
}

/// On PostgreSQL every execution's creation holds the audit head's lock first (so the run
/// lock's count sees every committed run, across servers), as the journal does.
async fn lock_audit_head(tx: &mut Tx) -> Result<()> {
    tx.lock_row("audit_head", "id", 1_i64).await
}

/// Workflows' `schedules`.
struct WorkflowKind;

#[derive(sqlx::FromRow)]
struct ScheduledWorkflow {
    id: i64,
    schedules: String,
    schedules_by: Option<i64>,
    schedules_at: Option<i64>,
}

impl Kind for WorkflowKind {
    fn name(&self) -> &'static str {
        "workflow"
    }

    fn entries<'a>(&'a self, eng: &'a Arc<Engine>) -> BoxFuture<'a, Result<Vec<Entry>>> {
        Box::pin(async move {
            let rows: Vec<ScheduledWorkflow> = read!(eng.store, |db| sqlx::query_as(
                "SELECT id, schedules, schedules_by, schedules_at FROM workflows \
                 WHERE schedules IS NOT NULL AND deleted_at IS NULL ORDER BY id"
            )
            .fetch_all(db)
            .await)?;
            let mut out = Vec::new();
            for row in rows {
                let Ok(list) = serde_json::from_str::<Vec<Schedule>>(&row.schedules) else {
                    continue;
                };
                for (i, s) in list.into_iter().enumerate() {
                    let Ok(spec) =
                        CronSpec::parse(&s.cron, s.timezone.as_deref(), eng.utc_offset_secs, true)
                    else {
                        continue;
                    };
                    out.push(Entry {
                        target: row.id.to_string(),
                        sched: schedule_key(i, &s),
                        when: When::Cron(Box::new(spec)),
                        misfire: s.misfire,
                        since: row.schedules_at.unwrap_or(0),
                        payload: json!({ "params": s.params, "by": row.schedules_by }),
                    });
                }
            }
            Ok(out)
        })
    }

    fn fire<'a>(
        &'a self,
        eng: &'a Arc<Engine>,
        tx: &'a mut Tx,
        entry: &'a Entry,
        due: i64,
    ) -> BoxFuture<'a, Result<Fired>> {
        Box::pin(async move {
            let row = workflows::find(&eng.store, &entry.target, false).await?;
            let loaded = eng.loaded(row.id, row.version).await?;
            let by = entry.payload["by"]
                .as_i64()
                .ok_or_else(|| Error::conflict("the schedule has no owner"))?;
            let p: Principal = eng.identity.principal_of(by).await.map_err(|e| {
                if e.code == Code::Internal {
                    e
                } else {
                    Error::forbidden(format!(
                        "the schedule's owner cannot be used: {}",
                        e.message
                    ))
                }
            })?;
            if !p.can(Permission::WorkflowExecute) {
                return Err(Error::forbidden(format!(
                    "the schedule's owner '{}' lacks the permission 'workflow.execute'",
                    p.user_id
                )));
            }
            let actor = Actor::system("schedule", schedule_origin("workflow", entry));
            let given: serde_json::Map<String, Value> = entry.payload["params"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let resolved = definition::resolve_params(&loaded.def, &given)?;
            let caller = Caller::acting_as(std::sync::Arc::new(p.clone()), actor.clone());
            crate::executions::check_starter(eng, &caller, &loaded.def).await?;
            let audit = Event::through(&actor.origin, "workflow.execute")
                .by("schedule", None)
                .detail(json!({
                    "wf_id": row.id.to_string(), "name": row.name, "version": row.version,
                    "params": resolved, "schedule": entry.sched,
                    "fire_at": haechi_types::time::iso_ms(due), "owner": p.user_id,
                }));
            let new = journal::NewExecution {
                workflow_id: row.id,
                version: row.version,
                params: serde_json::to_string(&resolved)?,
                started_by: "schedule".to_owned(),
                started_by_pk: p.id,
                source_ip: actor.ip.to_string(),
                family: "mdrm",
                step_names: loaded.def.steps.iter().map(|s| s.name.clone()).collect(),
                skipped: vec![false; loaded.def.steps.len()],
                concurrency: loaded.def.concurrency,
                owner: eng.server_id.clone(),
                lease_until: now_ms() + eng.cfg.lease_secs as i64 * 1000,
                day: crate::executions::today(eng.utc_offset_secs),
                audit,
                parent: None,
                secrets: Vec::new(),
            };
            lock_audit_head(tx).await?;
            let created = journal::create(tx, &new).await?;
            let id = created.id.clone();
            let eng = eng.clone();
            Ok(Fired {
                started: created.id,
                after_commit: Box::new(move || {
                    crate::metrics::started();
                    tokio::spawn(async move {
                        if let Err(e) = Driver::spawn(&eng, &id).await {
                            tracing::warn!(execution = %id, "could not start its driver yet: {}", e.message);
                        }
                    });
                }),
            })
        })
    }
}

fn schedule_key(i: usize, s: &Schedule) -> String {
    format!("{i}|{}|{}", s.cron, s.timezone.as_deref().unwrap_or(""))
}

/// OPMATE tasks' schedules (`PUT /api/v1/tasks/{id}/schedules`).
struct TaskKind;

/// One schedule of a task: a cron expression in a time zone, or one moment (`at`), with the
/// nodes and arguments of the instances it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSchedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// An IANA zone, `UTC` or `±HH:MM`; absent = the server's `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// One fire at this moment (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Nodes to run on; absent = the task's default targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id_list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    /// `run_once` (default) or `skip`.
    #[serde(default, skip_serializing_if = "is_run_once")]
    pub misfire: Misfire,
}

fn is_run_once(m: &Misfire) -> bool {
    *m == Misfire::RunOnce
}

/// A task's schedules and their next fires.
#[derive(Debug, Clone)]
pub struct TaskScheduleView {
    pub task_id: String,
    pub schedules: Vec<TaskSchedule>,
    /// Soonest first; `schedule` is the index in `schedules`.
    pub next_fires: Vec<NextFire>,
    pub updated_at: Option<i64>,
}

impl TaskSchedule {
    fn when(&self, utc_offset_secs: i32) -> Option<When> {
        match (&self.cron, &self.at) {
            (Some(c), _) => CronSpec::parse(c, self.timezone.as_deref(), utc_offset_secs, true)
                .ok()
                .map(|c| When::Cron(Box::new(c))),
            (None, Some(a)) => haechi_types::time::parse_iso(a).map(When::At),
            _ => None,
        }
    }

    fn key(&self, i: usize) -> String {
        match (&self.cron, &self.at) {
            (Some(c), _) => format!("{i}|{c}|{}", self.timezone.as_deref().unwrap_or("")),
            (None, Some(a)) => format!("{i}|at {a}"),
            _ => format!("{i}|"),
        }
    }
}

/// Most schedules of one task.
const MAX_TASK_SCHEDULES: usize = 20;

/// Parses `{"schedules": [...]}` (or a bare list), every problem a 400 naming the field.
fn parse_task_schedules(v: &Value) -> Result<Vec<TaskSchedule>> {
    let list = schedule_list(v)?;
    if list.len() > MAX_TASK_SCHEDULES {
        return Err(Error::field(
            "schedules",
            format_args!("at most {MAX_TASK_SCHEDULES} schedules"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, item)| parse_task_schedule(&format!("schedules[{i}]"), item))
        .collect()
}

/// The list of a `{"schedules": [...]}` body, or a bare list.
fn schedule_list(v: &Value) -> Result<&Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| *k != "schedules") {
                return Err(Error::field(
                    k.clone(),
                    "is not a field here (send {\"schedules\": [...]})",
                ));
            }
            match o.get("schedules") {
                Some(Value::Array(a)) => Ok(a),
                Some(Value::Null) | None => Err(Error::field(
                    "schedules",
                    "is required: a list (empty to remove every schedule)",
                )),
                Some(_) => Err(Error::field("schedules", "must be a list")),
            }
        }
        _ => Err(Error::invalid("the body must be {\"schedules\": [...]}")),
    }
}

/// One task schedule, at `at` in the body.
fn parse_task_schedule(at: &str, item: &Value) -> Result<TaskSchedule> {
    let Some(o) = item.as_object() else {
        return Err(Error::field(
            at,
            "must be an object with cron (and timezone) or at",
        ));
    };
    for k in o.keys() {
        if ![
            "cron",
            "timezone",
            "at",
            "nodeIdList",
            "arguments",
            "misfire",
        ]
        .contains(&k.as_str())
        {
            return Err(Error::field(
                format!("{at}.{k}"),
                "is not a schedule field (cron, timezone, at, nodeIdList, arguments, misfire)",
            ));
        }
    }
    let text = |k: &str| -> Result<Option<String>> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => Ok(Some(s.clone())),
            Some(_) => Err(Error::field(
                format!("{at}.{k}"),
                "must be a non-blank string of at most 200 characters",
            )),
        }
    };
    let cron = text("cron")?;
    let timezone = text("timezone")?;
    let when_at = text("at")?;
    check_when(at, cron.as_deref(), timezone.as_deref(), when_at.as_deref())?;
    let list_of = |k: &str| -> Result<Option<Vec<String>>> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) if a.len() <= 10_000 => a
                .iter()
                .enumerate()
                .map(|(j, x)| match x {
                    Value::String(s) if !s.contains('\0') && s.len() <= 64 * 1024 => Ok(s.clone()),
                    _ => Err(Error::field(format!("{at}.{k}[{j}]"), "must be a string")),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(Error::field(
                format!("{at}.{k}"),
                "must be a list of strings",
            )),
        }
    };
    let node_id_list = list_of("nodeIdList")?;
    if node_id_list.as_ref().is_some_and(|n| n.is_empty()) {
        return Err(Error::field(
            format!("{at}.nodeIdList"),
            "must name at least one node (leave it out for the task's default targets)",
        ));
    }
    let arguments = list_of("arguments")?.unwrap_or_default();
    let misfire = match o.get("misfire") {
        None | Some(Value::Null) => Misfire::RunOnce,
        Some(Value::String(s)) if s == "run_once" => Misfire::RunOnce,
        Some(Value::String(s)) if s == "skip" => Misfire::Skip,
        Some(_) => {
            return Err(Error::field(
                format!("{at}.misfire"),
                "must be \"run_once\" or \"skip\"",
            ))
        }
    };
    Ok(TaskSchedule {
        cron,
        timezone,
        at: when_at,
        node_id_list,
        arguments,
        misfire,
    })
}

/// A schedule fires either by `cron` (in `timezone`) or once `at` an RFC 3339 moment.
fn check_when(
    at: &str,
    cron: Option<&str>,
    timezone: Option<&str>,
    when_at: Option<&str>,
) -> Result<()> {
    match (cron, when_at) {
        (Some(_), Some(_)) => {
            return Err(Error::field(
                format!("{at}.at"),
                "give either cron or at, not both",
            ))
        }
        (None, None) => {
            return Err(Error::field(
                format!("{at}.cron"),
                "is required (or at: one moment, RFC 3339)",
            ))
        }
        (Some(c), None) => {
            CronSpec::parse(c, timezone, 0, true)
                .map_err(|(field, m)| Error::field(format!("{at}.{field}"), m))?;
        }
        (None, Some(a)) => {
            if timezone.is_some() {
                return Err(Error::field(
                    format!("{at}.timezone"),
                    "goes with cron; an 'at' moment carries its own offset",
                ));
            }
            if haechi_types::time::parse_iso(a).is_none() {
                return Err(Error::field(
                    format!("{at}.at"),
                    format_args!(
                        "'{a}' is not an RFC 3339 moment (such as 2026-12-24T09:00:00+09:00)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn task_next_fires(list: &[TaskSchedule], utc_offset_secs: i32, now: i64) -> Vec<NextFire> {
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let Some(when) = s.when(utc_offset_secs) else {
            continue;
        };
        let mut t = now;
        for _ in 0..5 {
            let Some(n) = when.next_after(t) else { break };
            out.push(NextFire {
                schedule: i,
                cron: s
                    .cron
                    .clone()
                    .or_else(|| s.at.clone().map(|a| format!("at {a}")))
                    .unwrap_or_default(),
                at: n,
                at_iso: haechi_types::time::iso_ms(n),
            });
            t = n;
        }
    }
    out.sort_by_key(|f| (f.at, f.schedule));
    out
}

impl Kind for TaskKind {
    fn name(&self) -> &'static str {
        "task"
    }

    fn entries<'a>(&'a self, eng: &'a Arc<Engine>) -> BoxFuture<'a, Result<Vec<Entry>>> {
        Box::pin(async move {
            if eng.exec.is_none() {
                return Ok(Vec::new());
            }
            let rows: Vec<(String, String, i64)> = read!(eng.store, |db| sqlx::query_as(
                "SELECT task_id, schedules, updated_at FROM task_schedules ORDER BY task_id"
            )
            .fetch_all(db)
            .await)?;
            let mut out = Vec::new();
            for (task_id, text, updated_at) in rows {
                let Ok(list) = serde_json::from_str::<Vec<TaskSchedule>>(&text) else {
                    continue;
                };
                for (i, s) in list.iter().enumerate() {
                    let Some(when) = s.when(eng.utc_offset_secs) else {
                        continue;
                    };
                    out.push(Entry {
                        target: task_id.clone(),
                        sched: s.key(i),
                        when,
                        misfire: s.misfire,
                        since: updated_at,
                        payload: serde_json::to_value(s)?,
                    });
                }
            }
            Ok(out)
        })
    }

    fn fire<'a>(
        &'a self,
        eng: &'a Arc<Engine>,
        tx: &'a mut Tx,
        entry: &'a Entry,
        due: i64,
    ) -> BoxFuture<'a, Result<Fired>> {
        Box::pin(async move {
            let exec = eng
                .exec
                .clone()
                .ok_or_else(|| Error::conflict("task schedules need the execution engine"))?;
            let s: TaskSchedule = serde_json::from_value(entry.payload.clone())?;
            // The same engine function `POST /opmate/task/{id}/instance` calls: every check of
            // an on-demand start (approval, flags, nodes) applies, with `execScheduler` in
            // place of `execOndemand`.
            let req = StartInstance {
                task_id: entry.target.clone(),
                node_ids: s.node_id_list.clone().unwrap_or_default(),
                arguments: s.arguments.clone(),
                runner_gubun: RunnerGubun::Scheduler,
                runner_id: "scheduler".into(),
                origin: Some(format!("schedule:{}:{due}", entry.sched)),
            };
            let started = exec.start_instance_in_tx(tx, None, &req).await?;
            let no = started.instance.task_instance_no;
            Ok(Fired {
                started: format!("taskInstanceNo {no}"),
                after_commit: Box::new(move || exec.dispatch_started(started)),
            })
        })
    }
}

impl Workflows {
    /// Sets a task's schedules (an empty list removes them). The task must exist; every
    /// problem of the list is a 400 naming the field, and nothing is stored.
    pub async fn set_task_schedules(
        &self,
        caller: &Caller,
        task_id: &str,
        body: &Value,
    ) -> Result<TaskScheduleView> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let list = parse_task_schedules(body)?;
        if !self.eng.tasks.task_exists(task_id).await? {
            return Err(Error::not_found(format_args!("task '{task_id}'")));
        }
        let now = now_ms();
        let text = serde_json::to_string(&list)?;
        let mut tx = self.eng.store.begin().await?;
        if list.is_empty() {
            in_tx!(tx, |c| sqlx::query(
                "DELETE FROM task_schedules WHERE task_id = $1"
            )
            .bind(task_id)
            .execute(&mut *c)
            .await
            .map(|_| ()))?;
        } else {
            in_tx!(tx, |c| {
                sqlx::query(
                "INSERT INTO task_schedules (task_id, schedules, updated_by, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (task_id) DO UPDATE SET schedules = $2, updated_by = $3, updated_at = $4"
            )
            .bind(task_id)
            .bind(&text)
            .bind(p.id)
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|_| ())
            })?;
        }
        haechi_audit::append(
            &mut tx,
            actor
                .event("task.schedules.set")
                .target(task_id.to_owned())
                .detail(json!({ "schedules": list })),
        )
        .await?;
        tx.commit().await?;
        Ok(TaskScheduleView {
            task_id: task_id.to_owned(),
            next_fires: task_next_fires(&list, self.eng.utc_offset_secs, now),
            schedules: list,
            updated_at: Some(now),
        })
    }

    /// A task's schedules and their next fires.
    pub async fn task_schedules(&self, task_id: &str) -> Result<TaskScheduleView> {
        if !self.eng.tasks.task_exists(task_id).await? {
            return Err(Error::not_found(format_args!("task '{task_id}'")));
        }
        let row: Option<(String, i64)> = read!(self.eng.store, |db| sqlx::query_as(
            "SELECT schedules, updated_at FROM task_schedules WHERE task_id = $1"
        )
        .bind(task_id)
        .fetch_optional(db)
        .await)?;
        let (list, updated_at) = match row {
            Some((t, at)) => (serde_json::from_str::<Vec<TaskSchedule>>(&t)?, Some(at)),
            None => (Vec::new(), None),
        };
        Ok(TaskScheduleView {
            task_id: task_id.to_owned(),
            next_fires: task_next_fires(&list, self.eng.utc_offset_secs, now_ms()),
            schedules: list,
            updated_at,
        })
    }

    /// The fires of a workflow's schedules so far, newest first (what each started, or why
    /// it was skipped).
    pub async fn schedule_history(
        &self,
        kind: &str,
        target: &str,
        limit: i64,
    ) -> Result<Vec<FireRecord>> {
        let rows: Vec<FireRow> = read!(self.eng.store, |db| sqlx::query_as(
            "SELECT sched, fire_at, outcome, started, reason FROM schedule_runs \
                 WHERE kind = $1 AND target = $2 ORDER BY fire_at DESC LIMIT $3"
        )
        .bind(kind)
        .bind(target)
        .bind(limit)
        .fetch_all(db)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(schedule, fire_at, outcome, started, reason)| FireRecord {
                schedule,
                fire_at,
                outcome,
                started,
                reason,
            })
            .collect())
    }
}

/// A `schedule_runs` row: schedule, fire time, outcome, what it started, why it was skipped.
type FireRow = (String, i64, String, Option<String>, Option<String>);

/// One fire of a schedule.
#[derive(Debug, Clone, Serialize)]
pub struct FireRecord {
    pub schedule: String,
    /// Unix ms.
    pub fire_at: i64,
    /// `started`, `skipped` or `misfire_skipped`.
    pub outcome: String,
    /// What it started (an execution id, or a task instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
