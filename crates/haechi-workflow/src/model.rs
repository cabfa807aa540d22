//! The engine's objects as callers see them: statuses, workflows, executions, steps and the
//! transition log. The HTTP layer renders these in the MDRM and admin shapes.

use serde::{Deserialize, Serialize};

use crate::definition::Definition;

/// One page of a list: the store's type, which every engine's lists share.
pub use haechi_store::Listed;

/// The state of an execution (MDRM `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    Running,
    Paused,
    Completed,
    Failed,
    Stopped,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Paused => "PAUSED",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Stopped => "STOPPED",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// True once the run has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Stopped
        )
    }
}

/// The state of one step of an execution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StepStatus {
    /// Not started yet.
    #[default]
    Waiting,
    /// An attempt is in flight, or the step waits to retry.
    Running,
    Succeeded,
    /// Failed for good (every attempt failed, or an approval was rejected).
    Failed,
    /// Never started: the run ended first.
    Skipped,
    /// Cut by `stop`, or by another step's failure ending the run.
    Stopped,
}

impl StepStatus {
    pub const ALL: [StepStatus; 6] = [
        StepStatus::Waiting,
        StepStatus::Running,
        StepStatus::Succeeded,
        StepStatus::Failed,
        StepStatus::Skipped,
        StepStatus::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Waiting => "WAITING",
            StepStatus::Running => "RUNNING",
            StepStatus::Succeeded => "SUCCEEDED",
            StepStatus::Failed => "FAILED",
            StepStatus::Skipped => "SKIPPED",
            StepStatus::Stopped => "STOPPED",
        }
    }

    pub fn parse(s: &str) -> Option<StepStatus> {
        StepStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        !matches!(self, StepStatus::Waiting | StepStatus::Running)
    }
}

/// A control action on an execution (MDRM `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Control {
    /// Kill what runs and end `STOPPED`.
    Stop,
    /// Let running steps finish and start no new one.
    Pause,
    /// Go on after a pause.
    Resume,
}

impl Control {
    pub fn parse(s: &str) -> Option<Control> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stop" => Some(Control::Stop),
            "pause" => Some(Control::Pause),
            "resume" => Some(Control::Resume),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Control::Stop => "stop",
            Control::Pause => "pause",
            Control::Resume => "resume",
        }
    }
}

/// An approval decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "approve" => Some(Decision::Approve),
            "reject" => Some(Decision::Reject),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

/// An operator's action on a failed step (CONTRACT §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepAction {
    /// A new attempt (with new `arguments` when given).
    Retry,
    /// The step becomes `SKIPPED`; its dependents go on.
    Skip,
    /// The step becomes `SUCCEEDED`; its dependents go on.
    MarkSucceeded,
}

impl StepAction {
    pub const ALL: [StepAction; 3] = [
        StepAction::Retry,
        StepAction::Skip,
        StepAction::MarkSucceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepAction::Retry => "retry",
            StepAction::Skip => "skip",
            StepAction::MarkSucceeded => "mark_succeeded",
        }
    }

    pub fn parse(s: &str) -> Option<StepAction> {
        StepAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// An action an operator took on a step: what, who, when and why.
#[derive(Debug, Clone)]
pub struct StepActionView {
    pub action: StepAction,
    pub by: String,
    /// Unix ms.
    pub at: i64,
    pub reason: String,
    /// The attempt the action was taken on.
    pub attempt: i64,
    /// A retry's new arguments, when it gave some.
    pub arguments: Option<Vec<String>>,
}

/// A workflow in a list.
#[derive(Debug, Clone)]
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

/// A workflow's id, name and group (what the MDRM list answers).
#[derive(Debug, Clone)]
pub struct WorkflowName {
    /// The MDRM `wf_id`.
    pub id: String,
    pub name: String,
    pub group: String,
}

/// One version of a workflow, with its definition.
#[derive(Debug, Clone)]
pub struct WorkflowDoc {
    pub id: String,
    pub version: i64,
    /// The workflow's newest version (runs started now use it).
    pub current_version: i64,
    /// The workflow was deleted (its runs stay readable).
    pub deleted: bool,
    /// Who holds the edit lock, and since when (absent: nobody).
    pub edit_lock: Option<EditLock>,
    /// The next fires of its schedules (current version only), soonest first.
    pub next_fires: Vec<NextFire>,
    pub created_by: String,
    /// When this version was made, unix ms.
    pub created_at: i64,
    pub definition: Definition,
}

/// A workflow's edit lock.
#[derive(Debug, Clone)]
pub struct EditLock {
    /// The user id holding it.
    pub holder: String,
    /// Unix ms.
    pub since: i64,
    /// When it ends unless its holder uses it again (`workflow.edit_lock_idle_secs` after
    /// their last use), unix ms.
    pub expires: i64,
}

/// A coming fire of a schedule.
#[derive(Debug, Clone)]
pub struct NextFire {
    /// The schedule's index in `schedules`.
    pub schedule: usize,
    pub cron: String,
    /// Unix ms.
    pub at: i64,
    /// ISO 8601 UTC.
    pub at_iso: String,
}

/// A version in a workflow's history.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub version: i64,
    pub name: String,
    pub group: String,
    pub created_by: String,
    pub created_at: i64,
}

/// What changed between two versions of a workflow.
#[derive(Debug, Clone)]
pub struct VersionDiff {
    pub id: String,
    pub from: i64,
    pub to: i64,
    /// Every field that differs; empty when the two versions define the same workflow.
    pub changes: Vec<Change>,
}

/// One difference: a field's path (`description`, `params.site`, `steps.switch.url`; a step
/// added or removed whole is `steps.NAME`) and its values (absent: not there).
#[derive(Debug, Clone)]
pub struct Change {
    pub path: String,
    pub from: Option<serde_json::Value>,
    pub to: Option<serde_json::Value>,
}

/// Just created (or changed): the id and the version made.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub version: i64,
}

/// The MDRM status of an execution.
#[derive(Debug, Clone)]
pub struct StatusView {
    pub execution_id: String,
    pub status: RunStatus,
    /// The running step; `""` before the first; while paused between steps and after the end,
    /// the last step that ran.
    pub current_step: String,
    /// Finished steps / steps, 0–100.
    pub progress: u8,
}

/// One step of an execution.
#[derive(Debug, Clone)]
pub struct StepView {
    pub name: String,
    /// `task`, `sleep`, `http` or `approval`.
    pub kind: String,
    pub status: StepStatus,
    /// Tries so far (the first and every retry).
    pub attempts: i64,
    /// Unix ms of the first attempt's start.
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// When the step waits to retry: the next try's time, unix ms.
    pub retry_at: Option<i64>,
    /// The OPMATE task instance of the latest attempt (task steps).
    pub task_instance_no: Option<i64>,
    /// Why the latest attempt failed, in words.
    pub error: Option<String>,
    /// What the step produced (http: the status and the start of the body).
    pub result: Option<serde_json::Value>,
    /// Approval steps: the decision, who made it and their comment.
    pub decision: Option<DecisionView>,
    /// Operators' actions on the step (retry, skip, mark_succeeded), oldest first.
    pub actions: Vec<StepActionView>,
    /// Workflow steps: the child execution of the latest attempt.
    pub child_execution_id: Option<String>,
}

/// A decision on an approval step.
#[derive(Debug, Clone)]
pub struct DecisionView {
    pub action: Decision,
    pub by: String,
    pub at: i64,
    pub comment: Option<String>,
}

/// An execution with every step.
#[derive(Debug, Clone)]
pub struct ExecutionView {
    pub execution_id: String,
    pub wf_id: String,
    pub workflow_name: String,
    pub version: i64,
    pub status: RunStatus,
    pub current_step: String,
    pub progress: u8,
    pub params: std::collections::BTreeMap<String, String>,
    pub started_by: String,
    pub created_at: i64,
    pub ended_at: Option<i64>,
    /// A child execution: the execution whose workflow step started it.
    pub parent_execution_id: Option<String>,
    /// Why the run failed, when it did.
    pub error: Option<String>,
    pub steps: Vec<StepView>,
}

/// The RTO report of an execution: each step's target against its real duration.
#[derive(Debug, Clone)]
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

/// One step of the RTO report.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub name: String,
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

/// An execution in a list.
#[derive(Debug, Clone)]
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

/// One entry of an execution's transition log.
#[derive(Debug, Clone)]
pub struct EventView {
    /// Increases with every transition of the execution (pass it back as `after`).
    pub seq: i64,
    pub at: i64,
    /// The step, or absent for the run itself.
    pub step: Option<String>,
    /// The new status (a run or step status).
    pub status: String,
    pub attempt: i64,
    pub message: String,
    /// The task instance of a task step's attempt.
    pub task_instance_no: Option<i64>,
}

/// A page of the execution log.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub execution_id: String,
    pub status: RunStatus,
    pub events: Vec<EventView>,
    /// Pass as `after` to get what follows.
    pub next: i64,
}

/// Filters of the execution list.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub workflow_id: Option<i64>,
    pub status: Option<RunStatus>,
    pub started_by: Option<String>,
    /// Created at or after, unix ms.
    pub from_ms: Option<i64>,
    /// Created at or before, unix ms.
    pub to_ms: Option<i64>,
}

/// Filters of the workflow list.
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    pub group: Option<String>,
    /// Exact name.
    pub name: Option<String>,
}

/// Progress in percent: finished steps (succeeded or failed) over all steps.
pub fn progress(done: i64, total: i64) -> u8 {
    if total <= 0 {
        return 0;
    }
    ((done.clamp(0, total) * 100) / total) as u8
}
