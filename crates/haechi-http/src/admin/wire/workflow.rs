//! Workflows, their versions and definitions, executions, steps, the transition log and
//! task schedules as the admin and MDRM APIs show them. A definition is parsed by the engine
//! (its input format); the answer shapes here mirror it field for field.

use std::collections::BTreeMap;

use haechi_workflow as wf;
use haechi_workflow::definition as def;
use serde::{Deserialize, Serialize, Serializer};

use super::{all, mirror_enum};

mirror_enum! {
    /// The state of an execution (MDRM `status`).
    #[serde(rename_all = "UPPERCASE")]
    pub enum RunStatus mirrors wf::RunStatus { Running, Paused, Completed, Failed, Stopped }
}

mirror_enum! {
    /// The state of one step of an execution.
    #[serde(rename_all = "UPPERCASE")]
    pub enum StepStatus mirrors wf::StepStatus {
        Waiting, Running, Succeeded, Failed, Skipped, Stopped,
    }
}

mirror_enum! {
    /// An approval decision.
    #[serde(rename_all = "lowercase")]
    pub enum Decision mirrors wf::Decision { Approve, Reject }
}

mirror_enum! {
    /// An operator's action on a failed step (CONTRACT §9).
    #[serde(rename_all = "snake_case")]
    pub enum StepAction mirrors wf::StepAction { Retry, Skip, MarkSucceeded }
}

mirror_enum! {
    /// What happens to the run when a step fails for good.
    #[serde(rename_all = "lowercase")]
    pub enum OnFailure mirrors def::OnFailure { Stop, Continue, Ask }
}

mirror_enum! {
    /// The type of a parameter.
    #[serde(rename_all = "lowercase")]
    pub enum ParamType mirrors def::ParamType { String, Password }
}

mirror_enum! {
    /// What becomes of a fire missed while no server ran.
    #[serde(rename_all = "snake_case")]
    pub enum Misfire mirrors def::Misfire { RunOnce, Skip }
}

impl Default for Misfire {
    fn default() -> Self {
        def::Misfire::default().into()
    }
}

/// A duration in whole milliseconds, written as seconds (`5`, `0.25`), as the definition
/// format writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(u64);

impl From<def::Secs> for Secs {
    fn from(s: def::Secs) -> Self {
        Secs(s.0)
    }
}

impl Serialize for Secs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(1000) {
            s.serialize_u64(self.0 / 1000)
        } else {
            s.serialize_f64(self.0 as f64 / 1000.0)
        }
    }
}

impl utoipa::PartialSchema for Secs {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some("seconds (fractions allowed, millisecond precision)"))
            .into()
    }
}

impl utoipa::ToSchema for Secs {}

/// What a step does.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Runs an OPMATE task on nodes; succeeds when every node ends `S`.
    Task(TaskAction),
    /// Waits.
    Sleep { seconds: Secs },
    /// Calls an HTTP endpoint.
    Http(HttpAction),
    /// Waits for one person holding `role` to approve or reject.
    Approval { role: String },
    /// Unlocks a DBSAFER policy for a time window.
    DbAccess(DbAccessAction),
    /// Runs another workflow as a child execution; succeeds when it ends `COMPLETED`.
    Workflow(WorkflowAction),
}

impl From<&def::Action> for Action {
    fn from(a: &def::Action) -> Self {
        match a {
            def::Action::Task(t) => Action::Task(t.into()),
            def::Action::Sleep { seconds } => Action::Sleep {
                seconds: (*seconds).into(),
            },
            def::Action::Http(h) => Action::Http(h.into()),
            def::Action::Approval { role } => Action::Approval { role: role.clone() },
            def::Action::DbAccess(d) => Action::DbAccess(d.into()),
            def::Action::Workflow(w) => Action::Workflow(w.into()),
        }
    }
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

fn is_stop(f: &OnFailure) -> bool {
    *f == OnFailure::Stop
}

fn is_string_type(t: &ParamType) -> bool {
    *t == ParamType::String
}

fn is_run_once(m: &Misfire) -> bool {
    *m == Misfire::RunOnce
}

/// An action an operator took on a step: what, who, when and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepActionView {
    pub action: StepAction,
    pub by: String,
    /// Unix ms.
    pub at: i64,
    pub reason: String,
    /// The attempt the action was taken on.
    pub attempt: i64,
    /// A retry's new arguments, when it gave some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Vec<String>>,
}

impl From<&wf::StepActionView> for StepActionView {
    fn from(x: &wf::StepActionView) -> Self {
        StepActionView {
            action: x.action.into(),
            by: x.by.clone(),
            at: x.at,
            reason: x.reason.clone(),
            attempt: x.attempt,
            arguments: x.arguments.clone(),
        }
    }
}

/// A workflow in a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkflowSummary {
    /// The MDRM `wf_id`.
    pub id: String,
    pub name: String,
    pub group: String,
    pub description: String,
    /// The current version.
    pub version: i64,
    pub created_by: String,
    /// Unix ms.
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&wf::WorkflowSummary> for WorkflowSummary {
    fn from(x: &wf::WorkflowSummary) -> Self {
        WorkflowSummary {
            id: x.id.clone(),
            name: x.name.clone(),
            group: x.group.clone(),
            description: x.description.clone(),
            version: x.version,
            created_by: x.created_by.clone(),
            created_at: x.created_at,
            updated_at: x.updated_at,
        }
    }
}

/// One version of a workflow, with its definition.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkflowDoc {
    pub id: String,
    pub version: i64,
    /// The workflow's newest version (runs started now use it).
    pub current_version: i64,
    /// The workflow was deleted (its runs stay readable).
    pub deleted: bool,
    /// Who holds the edit lock, and since when (absent: nobody).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edit_lock: Option<EditLock>,
    /// The next fires of its schedules (current version only), soonest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub next_fires: Vec<NextFire>,
    pub created_by: String,
    /// When this version was made, unix ms.
    pub created_at: i64,
    #[serde(flatten)]
    pub definition: Definition,
}

impl From<&wf::WorkflowDoc> for WorkflowDoc {
    fn from(x: &wf::WorkflowDoc) -> Self {
        WorkflowDoc {
            id: x.id.clone(),
            version: x.version,
            current_version: x.current_version,
            deleted: x.deleted,
            edit_lock: x.edit_lock.as_ref().map(Into::into),
            next_fires: all(&x.next_fires),
            created_by: x.created_by.clone(),
            created_at: x.created_at,
            definition: (&x.definition).into(),
        }
    }
}

/// A workflow's edit lock.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EditLock {
    /// The user id holding it.
    pub holder: String,
    /// Unix ms.
    pub since: i64,
    /// When it ends unless its holder uses it again (`workflow.edit_lock_idle_secs` after
    /// their last use), unix ms.
    pub expires: i64,
}

impl From<&wf::EditLock> for EditLock {
    fn from(x: &wf::EditLock) -> Self {
        EditLock {
            holder: x.holder.clone(),
            since: x.since,
            expires: x.expires,
        }
    }
}

/// A coming fire of a schedule.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NextFire {
    /// The schedule's index in `schedules`.
    pub schedule: usize,
    pub cron: String,
    /// Unix ms.
    pub at: i64,
    /// ISO 8601 UTC.
    pub at_iso: String,
}

impl From<&wf::NextFire> for NextFire {
    fn from(x: &wf::NextFire) -> Self {
        NextFire {
            schedule: x.schedule,
            cron: x.cron.clone(),
            at: x.at,
            at_iso: x.at_iso.clone(),
        }
    }
}

/// A version in a workflow's history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub version: i64,
    pub name: String,
    pub group: String,
    pub created_by: String,
    pub created_at: i64,
}

impl From<&wf::VersionInfo> for VersionInfo {
    fn from(x: &wf::VersionInfo) -> Self {
        VersionInfo {
            version: x.version,
            name: x.name.clone(),
            group: x.group.clone(),
            created_by: x.created_by.clone(),
            created_at: x.created_at,
        }
    }
}

/// What changed between two versions of a workflow.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionDiff {
    pub id: String,
    pub from: i64,
    pub to: i64,
    /// Every field that differs; empty when the two versions define the same workflow.
    pub changes: Vec<Change>,
}

impl From<&wf::VersionDiff> for VersionDiff {
    fn from(x: &wf::VersionDiff) -> Self {
        VersionDiff {
            id: x.id.clone(),
            from: x.from,
            to: x.to,
            changes: all(&x.changes),
        }
    }
}

/// One difference: a field's path (`description`, `params.site`, `steps.switch.url`; a step
/// added or removed whole is `steps.NAME`) and its values (absent: not there).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Change {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub from: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub to: Option<serde_json::Value>,
}

impl From<&wf::Change> for Change {
    fn from(x: &wf::Change) -> Self {
        Change {
            path: x.path.clone(),
            from: x.from.clone(),
            to: x.to.clone(),
        }
    }
}

/// Just created (or changed): the id and the version made.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub id: String,
    pub version: i64,
}

impl From<&wf::Created> for Created {
    fn from(x: &wf::Created) -> Self {
        Created {
            id: x.id.clone(),
            version: x.version,
        }
    }
}

/// The MDRM status of an execution.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatusView {
    pub execution_id: String,
    pub status: RunStatus,
    /// The running step; `""` before the first; while paused between steps and after the end,
    /// the last step that ran.
    pub current_step: String,
    /// Finished steps / steps, 0–100.
    pub progress: u8,
}

impl From<&wf::StatusView> for StatusView {
    fn from(x: &wf::StatusView) -> Self {
        StatusView {
            execution_id: x.execution_id.clone(),
            status: x.status.into(),
            current_step: x.current_step.clone(),
            progress: x.progress,
        }
    }
}

/// One step of an execution.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepView {
    pub name: String,
    /// `task`, `sleep`, `http` or `approval`.
    #[serde(rename = "type")]
    pub kind: String,
    pub status: StepStatus,
    /// Tries so far (the first and every retry).
    pub attempts: i64,
    /// Unix ms of the first attempt's start.
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// When the step waits to retry: the next try's time, unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<i64>,
    /// The OPMATE task instance of the latest attempt (task steps).
    #[serde(rename = "taskInstanceNo", skip_serializing_if = "Option::is_none")]
    pub task_instance_no: Option<i64>,
    /// Why the latest attempt failed, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the step produced (http: the status and the start of the body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Approval steps: the decision, who made it and their comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionView>,
    /// Operators' actions on the step (retry, skip, mark_succeeded), oldest first.
    pub actions: Vec<StepActionView>,
    /// Workflow steps: the child execution of the latest attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_execution_id: Option<String>,
}

impl From<&wf::StepView> for StepView {
    fn from(x: &wf::StepView) -> Self {
        StepView {
            name: x.name.clone(),
            kind: x.kind.clone(),
            status: x.status.into(),
            attempts: x.attempts,
            started_at: x.started_at,
            ended_at: x.ended_at,
            retry_at: x.retry_at,
            task_instance_no: x.task_instance_no,
            error: x.error.clone(),
            result: x.result.clone(),
            decision: x.decision.as_ref().map(Into::into),
            actions: all(&x.actions),
            child_execution_id: x.child_execution_id.clone(),
        }
    }
}

/// A decision on an approval step.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DecisionView {
    pub action: Decision,
    pub by: String,
    pub at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl From<&wf::DecisionView> for DecisionView {
    fn from(x: &wf::DecisionView) -> Self {
        DecisionView {
            action: x.action.into(),
            by: x.by.clone(),
            at: x.at,
            comment: x.comment.clone(),
        }
    }
}

/// An execution with every step.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExecutionView {
    pub execution_id: String,
    pub wf_id: String,
    pub workflow_name: String,
    pub version: i64,
    pub status: RunStatus,
    pub current_step: String,
    pub progress: u8,
    pub params: BTreeMap<String, String>,
    pub started_by: String,
    pub created_at: i64,
    pub ended_at: Option<i64>,
    /// A child execution: the execution whose workflow step started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_execution_id: Option<String>,
    /// Why the run failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub steps: Vec<StepView>,
}

impl From<&wf::ExecutionView> for ExecutionView {
    fn from(x: &wf::ExecutionView) -> Self {
        ExecutionView {
            execution_id: x.execution_id.clone(),
            wf_id: x.wf_id.clone(),
            workflow_name: x.workflow_name.clone(),
            version: x.version,
            status: x.status.into(),
            current_step: x.current_step.clone(),
            progress: x.progress,
            params: x.params.clone(),
            started_by: x.started_by.clone(),
            created_at: x.created_at,
            ended_at: x.ended_at,
            parent_execution_id: x.parent_execution_id.clone(),
            error: x.error.clone(),
            steps: all(&x.steps),
        }
    }
}

/// The RTO report of an execution: each step's target against its real duration.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReportView {
    pub execution_id: String,
    pub wf_id: String,
    pub workflow_name: String,
    pub version: i64,
    pub status: RunStatus,
    pub started_by: String,
    /// Unix ms.
    pub created_at: i64,
    pub ended_at: Option<i64>,
    /// The workflow's recovery time objective, seconds (absent: none set).
    pub rto_secs: Option<f64>,
    /// From the start to the end (or to now while the run goes on), seconds.
    pub duration_secs: f64,
    /// `duration_secs <= rto_secs`; absent without a target.
    pub within_rto: Option<bool>,
    pub steps: Vec<StepReport>,
}

impl From<&wf::ReportView> for ReportView {
    fn from(x: &wf::ReportView) -> Self {
        ReportView {
            execution_id: x.execution_id.clone(),
            wf_id: x.wf_id.clone(),
            workflow_name: x.workflow_name.clone(),
            version: x.version,
            status: x.status.into(),
            started_by: x.started_by.clone(),
            created_at: x.created_at,
            ended_at: x.ended_at,
            rto_secs: x.rto_secs,
            duration_secs: x.duration_secs,
            within_rto: x.within_rto,
            steps: all(&x.steps),
        }
    }
}

/// One step of the RTO report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepReport {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: StepStatus,
    pub rto_secs: Option<f64>,
    /// Unix ms of the first attempt's start and of the end.
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// From the first attempt's start to the end (or to now while it runs), seconds; absent
    /// when it never started.
    pub duration_secs: Option<f64>,
    pub attempts: i64,
    /// `duration_secs <= rto_secs`; absent without a target or a duration.
    pub within_rto: Option<bool>,
    /// Who decided what on the step.
    pub actions: Vec<StepActionView>,
}

impl From<&wf::StepReport> for StepReport {
    fn from(x: &wf::StepReport) -> Self {
        StepReport {
            name: x.name.clone(),
            kind: x.kind.clone(),
            status: x.status.into(),
            rto_secs: x.rto_secs,
            started_at: x.started_at,
            ended_at: x.ended_at,
            duration_secs: x.duration_secs,
            attempts: x.attempts,
            within_rto: x.within_rto,
            actions: all(&x.actions),
        }
    }
}

/// An execution in a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExecutionSummary {
    pub execution_id: String,
    pub wf_id: String,
    pub workflow_name: String,
    pub version: i64,
    pub status: RunStatus,
    pub current_step: String,
    pub progress: u8,
    pub started_by: String,
    pub created_at: i64,
    pub ended_at: Option<i64>,
}

impl From<&wf::ExecutionSummary> for ExecutionSummary {
    fn from(x: &wf::ExecutionSummary) -> Self {
        ExecutionSummary {
            execution_id: x.execution_id.clone(),
            wf_id: x.wf_id.clone(),
            workflow_name: x.workflow_name.clone(),
            version: x.version,
            status: x.status.into(),
            current_step: x.current_step.clone(),
            progress: x.progress,
            started_by: x.started_by.clone(),
            created_at: x.created_at,
            ended_at: x.ended_at,
        }
    }
}

/// One entry of an execution's transition log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// Increases with every transition of the execution (pass it back as `after`).
    pub seq: i64,
    pub at: i64,
    /// The step, or absent for the run itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The new status (a run or step status).
    pub status: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub attempt: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The task instance of a task step's attempt.
    #[serde(rename = "taskInstanceNo", skip_serializing_if = "Option::is_none")]
    pub task_instance_no: Option<i64>,
}

impl From<&wf::EventView> for EventView {
    fn from(x: &wf::EventView) -> Self {
        EventView {
            seq: x.seq,
            at: x.at,
            step: x.step.clone(),
            status: x.status.clone(),
            attempt: x.attempt,
            message: x.message.clone(),
            task_instance_no: x.task_instance_no,
        }
    }
}

/// A page of the execution log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub execution_id: String,
    pub status: RunStatus,
    pub events: Vec<EventView>,
    /// Pass as `after` to get what follows.
    pub next: i64,
}

impl From<&wf::EventPage> for EventPage {
    fn from(x: &wf::EventPage) -> Self {
        EventPage {
            execution_id: x.execution_id.clone(),
            status: x.status.into(),
            events: all(&x.events),
            next: x.next,
        }
    }
}

/// A parameter the workflow takes at execute time.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParamSpec {
    /// `string` (the default) or `password`.
    #[serde(rename = "type", default, skip_serializing_if = "is_string_type")]
    pub kind: ParamType,
    /// Used when the execute request gives no value; absent = the value is required (unless
    /// `required` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Whether an execute must give a value; absent = required unless there is a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl From<&def::ParamSpec> for ParamSpec {
    fn from(x: &def::ParamSpec) -> Self {
        ParamSpec {
            kind: x.kind.into(),
            default: x.default.clone(),
            required: x.required,
            description: x.description.clone(),
        }
    }
}

/// When a workflow starts by itself: a cron expression (5 fields, or 6 with seconds first) in a
/// time zone, with the run's parameters.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Schedule {
    pub cron: String,
    /// An IANA zone (`Asia/Seoul`), `UTC` or `±HH:MM`; absent = the server's `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Parameters of the runs it starts (as an execute's `params`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// A fire missed while no server ran: `run_once` (default; the latest missed fire runs
    /// once at the next start) or `skip`.
    #[serde(default, skip_serializing_if = "is_run_once")]
    pub misfire: Misfire,
}

impl From<&def::Schedule> for Schedule {
    fn from(x: &def::Schedule) -> Self {
        Schedule {
            cron: x.cron.clone(),
            timezone: x.timezone.clone(),
            params: x.params.clone(),
            misfire: x.misfire.into(),
        }
    }
}

/// A whole definition: one version of a workflow.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Definition {
    pub name: String,
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, ParamSpec>,
    /// The recovery time objective of a whole run (the report compares the run against it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_secs: Option<Secs>,
    /// Most runs at a time (running or paused); absent = unlimited. An execute beyond it is
    /// refused naming the running execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// When the workflow starts by itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Schedule>,
    pub steps: Vec<Step>,
}

impl From<&def::Definition> for Definition {
    fn from(x: &def::Definition) -> Self {
        Definition {
            name: x.name.clone(),
            group: x.group.clone(),
            description: x.description.clone(),
            params: x
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
            rto_secs: x.rto_secs.map(Into::into),
            concurrency: x.concurrency,
            schedules: all(&x.schedules),
            steps: all(&x.steps),
        }
    }
}

/// One step. `needs` is kept as written (absent = the step before it).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Step {
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<String>>,
    /// Bound on one attempt; absent = none (http steps: the server's `http_timeout_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<Secs>,
    /// Extra tries after a failure (`attempts` counts them all).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Wait before the first retry; each later one waits `retry_backoff` times longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_secs: Option<Secs>,
    /// Factor between two retry delays (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<f64>,
    /// Longest wait between two tries (default: the server's `retry_max_delay_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_max_delay_secs: Option<Secs>,
    #[serde(default, skip_serializing_if = "is_stop")]
    pub on_failure: OnFailure,
    /// The step's recovery time objective (the report compares its duration against it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_secs: Option<Secs>,
    /// A condition (CEL over `params`, `vars` and `steps`); false → the step is `SKIPPED`.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

impl From<&def::Step> for Step {
    fn from(x: &def::Step) -> Self {
        Step {
            name: x.name.clone(),
            action: (&x.action).into(),
            needs: x.needs.clone(),
            timeout_secs: x.timeout_secs.map(Into::into),
            retries: x.retries,
            retry_delay_secs: x.retry_delay_secs.map(Into::into),
            retry_backoff: x.retry_backoff,
            retry_max_delay_secs: x.retry_max_delay_secs.map(Into::into),
            on_failure: x.on_failure.into(),
            rto_secs: x.rto_secs.map(Into::into),
            condition: x.condition.clone(),
        }
    }
}

/// A `workflow` step: runs workflow `workflow` (its id, or the name of a live workflow) with
/// `params` (`${name}` filled from this run's values).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkflowAction {
    pub workflow: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl From<&def::WorkflowAction> for WorkflowAction {
    fn from(x: &def::WorkflowAction) -> Self {
        WorkflowAction {
            workflow: x.workflow.clone(),
            params: x.params.clone(),
        }
    }
}

/// A `task` step.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskAction {
    /// The OPMATE task id.
    pub task: String,
    /// Node ids to run on, all at once.
    pub nodes: Vec<String>,
    /// argv of the script; `${param}` is replaced inside each string, never split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    /// Environment variables whose values come from the credential vault.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_from_vault: BTreeMap<String, VaultRef>,
    /// Variables taken from the stdout of the step's first node: name → a regex with one
    /// group; the match becomes `vars.NAME` and `${NAME}` in later steps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capture: BTreeMap<String, String>,
    /// Environment variables of the script: name → a template (`${param}`). Every value is
    /// treated as a secret (never stored, masked in the output): this is how a `password`
    /// parameter reaches a task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl From<&def::TaskAction> for TaskAction {
    fn from(x: &def::TaskAction) -> Self {
        TaskAction {
            task: x.task.clone(),
            nodes: x.nodes.clone(),
            arguments: x.arguments.clone(),
            env_from_vault: x
                .env_from_vault
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
            capture: x.capture.clone(),
            env: x.env.clone(),
        }
    }
}

/// A `db_access` step: unlocks DBSAFER policy `policy` for `duration`. The step succeeds once
/// the policy is unlocked; the window stays open for the steps after it and closes by itself at
/// its end (the end is stored with the policy), or earlier when the run ends `FAILED` or
/// `STOPPED`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DbAccessAction {
    /// The policy's `policyId` (or its numeric `index`).
    pub policy: String,
    /// How long the window lasts.
    pub duration: Secs,
}

impl From<&def::DbAccessAction> for DbAccessAction {
    fn from(x: &def::DbAccessAction) -> Self {
        DbAccessAction {
            policy: x.policy.clone(),
            duration: x.duration.into(),
        }
    }
}

/// One credential attribute in the vault.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultRef {
    pub credential_id: i64,
    pub attribute: String,
}

impl From<&def::VaultRef> for VaultRef {
    fn from(x: &def::VaultRef) -> Self {
        VaultRef {
            credential_id: x.credential_id,
            attribute: x.attribute.clone(),
        }
    }
}

/// An `http` step.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HttpAction {
    pub method: String,
    pub url: String,
    /// Request headers (`${param}` allowed in values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A string is sent as is; any other JSON value is sent as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Accepted statuses; absent = any 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<Vec<u16>>,
    /// A parameter may choose the URL's scheme, host or port (a `${...}` before the end of
    /// its host). Without it, parameters may fill only the path, query and fragment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_from_params: bool,
}

impl From<&def::HttpAction> for HttpAction {
    fn from(x: &def::HttpAction) -> Self {
        HttpAction {
            method: x.method.clone(),
            url: x.url.clone(),
            headers: x.headers.clone(),
            body: x.body.clone(),
            expect_status: x.expect_status.clone(),
            host_from_params: x.host_from_params,
        }
    }
}

/// One schedule of a task: a cron expression in a time zone, or one moment (`at`), with the
/// nodes and arguments of the instances it starts.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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

impl From<&wf::TaskSchedule> for TaskSchedule {
    fn from(x: &wf::TaskSchedule) -> Self {
        TaskSchedule {
            cron: x.cron.clone(),
            timezone: x.timezone.clone(),
            at: x.at.clone(),
            node_id_list: x.node_id_list.clone(),
            arguments: x.arguments.clone(),
            misfire: x.misfire.into(),
        }
    }
}

/// A task's schedules and their next fires.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskScheduleView {
    pub task_id: String,
    pub schedules: Vec<TaskSchedule>,
    /// Soonest first; `schedule` is the index in `schedules`.
    pub next_fires: Vec<NextFire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

impl From<&wf::TaskScheduleView> for TaskScheduleView {
    fn from(x: &wf::TaskScheduleView) -> Self {
        TaskScheduleView {
            task_id: x.task_id.clone(),
            schedules: all(&x.schedules),
            next_fires: all(&x.next_fires),
            updated_at: x.updated_at,
        }
    }
}
