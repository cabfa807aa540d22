//! An execution's state as the driver holds it, and how it is read from the store.
//!
//! The store is the truth: a driver holds a copy, changes it only through a transition that
//! the journal commits (fenced by the execution's `rev`), and reads it again whenever a commit
//! finds that something else (a control, a decision, another server) changed it first.

use std::collections::BTreeMap;

use haechi_store::{read, Store};
use haechi_types::{Error, Result};

use crate::model::{RunStatus, StepStatus};

/// An execution's row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunState {
    pub id: String,
    pub workflow_id: i64,
    pub version: i64,
    pub status: RunStatus,
    /// The execution needs a driver (running, paused, or ended with work still to cut).
    pub active: bool,
    pub rev: i64,
    pub params: BTreeMap<String, String>,
    pub started_by: String,
    pub started_by_pk: i64,
    pub source_ip: String,
    pub current_step: String,
    pub steps_done: i64,
    pub error: Option<String>,
    pub owner: Option<String>,
    pub created_at: i64,
    pub ended_at: Option<i64>,
    /// A child execution: its parent and the parent's step (index).
    pub parent_execution_id: Option<String>,
    pub parent_step: Option<i64>,
    pub steps: Vec<StepState>,
}

/// A step's row.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct StepState {
    pub name: String,
    pub status: StepStatus,
    pub attempts: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// Start of the latest attempt (its sleep end and timeout are counted from here).
    pub attempt_started_at: Option<i64>,
    /// Set while the step waits to retry.
    pub retry_at: Option<i64>,
    /// Times the latest attempt was resumed after a server stopped during it.
    pub resumes: i64,
    pub task_instance_no: Option<i64>,
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub decision_comment: Option<String>,
    pub error: Option<String>,
    /// JSON text.
    pub result: Option<String>,
    /// A task step's arguments as an operator's retry gave them (JSON array); `None` = the
    /// definition's.
    pub arguments: Option<String>,
    /// Stopped or skipped because another step failed and ended the run (an operator's
    /// action that sets the run going again makes it `WAITING` again).
    pub cut_by_failure: bool,
    /// Workflow steps: the child execution of the latest attempt (created in the attempt's
    /// transaction).
    pub child_execution_id: Option<String>,
}

impl StepState {
    /// An attempt is under way (not waiting to retry).
    pub fn in_flight(&self) -> bool {
        self.status == StepStatus::Running && self.retry_at.is_none() && self.attempts > 0
    }
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    workflow_id: i64,
    version: i64,
    status: String,
    active: bool,
    rev: i64,
    params: String,
    started_by: String,
    started_by_pk: i64,
    source_ip: String,
    current_step: String,
    steps_done: i64,
    error: Option<String>,
    owner: Option<String>,
    created_at: i64,
    ended_at: Option<i64>,
    parent_execution_id: Option<String>,
    parent_step: Option<i64>,
}

pub(crate) const RUN_COLUMNS: &str =
    "id, workflow_id, version, status, active, rev, params, started_by, started_by_pk, \
     source_ip, current_step, steps_done, error, owner, created_at, ended_at, \
     parent_execution_id, parent_step";

#[derive(sqlx::FromRow)]
pub(crate) struct StepRow {
    pub name: String,
    pub status: String,
    pub attempts: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub attempt_started_at: Option<i64>,
    pub retry_at: Option<i64>,
    pub resumes: i64,
    pub task_instance_no: Option<i64>,
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub decision_comment: Option<String>,
    pub error: Option<String>,
    pub result: Option<String>,
    pub arguments: Option<String>,
    pub cut_by_failure: bool,
    pub child_execution_id: Option<String>,
}

pub(crate) const STEP_COLUMNS: &str =
    "name, status, attempts, started_at, ended_at, attempt_started_at, retry_at, \
     resumes, task_instance_no, decision, decided_by, decided_at, decision_comment, error, result, \
     arguments, cut_by_failure, child_execution_id";

impl From<StepRow> for StepState {
    fn from(r: StepRow) -> StepState {
        StepState {
            name: r.name,
            status: StepStatus::parse(&r.status).unwrap_or(StepStatus::Failed),
            attempts: r.attempts,
            started_at: r.started_at,
            ended_at: r.ended_at,
            attempt_started_at: r.attempt_started_at,
            retry_at: r.retry_at,
            resumes: r.resumes,
            task_instance_no: r.task_instance_no,
            decision: r.decision,
            decided_by: r.decided_by,
            decided_at: r.decided_at,
            decision_comment: r.decision_comment,
            error: r.error,
            result: r.result,
            arguments: r.arguments,
            cut_by_failure: r.cut_by_failure,
            child_execution_id: r.child_execution_id,
        }
    }
}

/// Reads an execution and its steps; `None` when there is no such execution.
pub(crate) async fn load_run(store: &Store, id: &str) -> Result<Option<RunState>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM workflow_executions WHERE id = $1");
    let row: Option<RunRow> = read!(store, |db| sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(db)
        .await)?;
    let Some(row) = row else { return Ok(None) };
    let steps = load_steps(store, id).await?;
    Ok(Some(run_from(row, steps)?))
}

pub(crate) async fn load_steps(store: &Store, id: &str) -> Result<Vec<StepState>> {
    let sql =
        format!("SELECT {STEP_COLUMNS} FROM workflow_steps WHERE execution_id = $1 ORDER BY idx");
    let rows: Vec<StepRow> = read!(store, |db| sqlx::query_as(&sql)
        .bind(id)
        .fetch_all(db)
        .await)?;
    Ok(rows.into_iter().map(StepState::from).collect())
}

fn run_from(row: RunRow, steps: Vec<StepState>) -> Result<RunState> {
    let status = RunStatus::parse(&row.status).ok_or_else(|| {
        Error::internal(format_args!(
            "execution {} has status {}",
            row.id, row.status
        ))
    })?;
    let params: BTreeMap<String, String> = serde_json::from_str(&row.params)?;
    Ok(RunState {
        id: row.id,
        workflow_id: row.workflow_id,
        version: row.version,
        status,
        active: row.active,
        rev: row.rev,
        params,
        started_by: row.started_by,
        started_by_pk: row.started_by_pk,
        source_ip: row.source_ip,
        current_step: row.current_step,
        steps_done: row.steps_done,
        error: row.error,
        owner: row.owner,
        created_at: row.created_at,
        ended_at: row.ended_at,
        parent_execution_id: row.parent_execution_id,
        parent_step: row.parent_step,
        steps,
    })
}
