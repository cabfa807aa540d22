//! The engine's objects: nodes, tasks and their revisions, task instances, node executions.
//! These are domain types; the OPMATE wire shapes (`resultCode`, `encbase64out`, compact dates)
//! are made from them in the HTTP layer.

use serde::{Deserialize, Serialize};

/// The state of one node execution (CONTRACT §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExecStatus {
    /// Stored, not yet accepted by the agent.
    #[serde(rename = "WAIT")]
    Wait,
    /// The agent accepted it and runs it.
    #[serde(rename = "RUN")]
    Run,
    /// It ended (see `resultCd`, `exitCd`).
    #[serde(rename = "END")]
    End,
    /// The task's timeout killed it.
    #[serde(rename = "TIMEOUT")]
    Timeout,
    /// It was cancelled.
    #[serde(rename = "CANCEL")]
    Cancel,
    /// The agent went away while it ran and did not come back in time.
    #[serde(rename = "LOST")]
    Lost,
}

impl ExecStatus {
    pub const ALL: [ExecStatus; 6] = [
        ExecStatus::Wait,
        ExecStatus::Run,
        ExecStatus::End,
        ExecStatus::Timeout,
        ExecStatus::Cancel,
        ExecStatus::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Wait => "WAIT",
            ExecStatus::Run => "RUN",
            ExecStatus::End => "END",
            ExecStatus::Timeout => "TIMEOUT",
            ExecStatus::Cancel => "CANCEL",
            ExecStatus::Lost => "LOST",
        }
    }

    pub fn parse(s: &str) -> Option<ExecStatus> {
        ExecStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// True once nothing more will happen to the execution.
    pub fn is_final(self) -> bool {
        !matches!(self, ExecStatus::Wait | ExecStatus::Run)
    }
}

/// Who started an instance (`runnerGubun`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunnerGubun {
    /// A user (the API, the CLI, a workflow on a user's behalf).
    #[serde(rename = "U")]
    User,
    /// The scheduler.
    #[serde(rename = "S")]
    Scheduler,
    /// A task chain (`nextTaskId`).
    #[serde(rename = "T")]
    Task,
}

impl RunnerGubun {
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerGubun::User => "U",
            RunnerGubun::Scheduler => "S",
            RunnerGubun::Task => "T",
        }
    }

    pub fn parse(s: &str) -> Option<RunnerGubun> {
        match s {
            "U" => Some(RunnerGubun::User),
            "S" => Some(RunnerGubun::Scheduler),
            "T" => Some(RunnerGubun::Task),
            _ => None,
        }
    }
}

/// A registered node (a machine running `haechi agent`).
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub agent_guid: String,
    pub agent_ver: String,
    pub os_name: String,
    pub ip: String,
    pub hostname: String,
    pub owner_user_id: String,
    /// `E` enabled, `D` disabled (gets no work).
    pub status: String,
    /// Last heartbeat, unix ms.
    pub heartbeat_at: Option<i64>,
    /// Since when the node's heartbeats are missing, unix ms; absent while it heartbeats.
    pub missing_since: Option<i64>,
    /// The agent holds a live connection to this server.
    pub connected: bool,
    /// The agent's credential was revoked (it must enrol again).
    pub revoked: bool,
    /// Labels the agent reports: `os`, `arch`, `hostname`, and the agent's own `--label
    /// KEY=VALUE` / `--labels-file` ones. Scripts see them as `@OPM_ATTR.KEY@` (node groups'
    /// attributes override them).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The OS users the agent can run scripts as (every user of the machine when it runs as
    /// root, else its own); absent until an agent that reports them connects.
    pub os_users: Option<Vec<String>>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A task at one revision, with its approval state.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub revision_no: i64,
    pub owner_user_id: String,
    pub script_name: String,
    pub script: String,
    pub os_user: String,
    /// `E`: may be started through the API.
    pub exec_ondemand: String,
    /// `E`: runs on its `schedule`.
    pub exec_scheduler: String,
    /// `E`: may be started as another task's `nextTaskId`.
    pub exec_task: String,
    /// 5-field cron expression.
    pub schedule: Option<String>,
    /// Time zone of `schedule` (IANA name or `±HH:MM`); absent = the server's.
    pub schedule_tz: Option<String>,
    pub next_task_id: String,
    /// 0 = no timeout.
    pub timeout_secs: i64,
    /// Nodes the scheduler runs the task on (the same list as `targets.nodes`).
    pub target_node_ids: Vec<String>,
    /// Default targets: where an instance started without `nodeIdList` runs (and the
    /// scheduler's), resolved when it starts.
    pub targets: crate::groups::TaskTargets,
    /// When the task may start; empty = any time.
    pub run_windows: Vec<crate::windows::RunWindow>,
    /// User groups whose members may start the task (besides the `task.execute` permission
    /// every starter needs); empty = anyone with that permission.
    pub runner_groups: Vec<String>,
    /// Arguments of scheduled runs.
    pub arguments: Vec<String>,
    pub description: String,
    /// `N` none, `Q` requested, `A` approved, `R` rejected.
    pub apprv_status: String,
    /// Who approved or rejected.
    pub apprv_user_id: String,
    /// Who requested approval.
    pub apprv_requested_by: String,
    pub apprv_comment: String,
    pub apprv_at: Option<i64>,
    /// Who made this revision.
    pub revision_created_by: String,
    pub revision_created_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A task instance: one start of a task on a set of nodes.
#[derive(Debug, Clone)]
pub struct Instance {
    pub task_instance_no: i64,
    pub task_id: String,
    /// The task revision it runs.
    pub revision_no: i64,
    pub runner_id: String,
    pub runner_gubun: RunnerGubun,
    /// Free tag set by the starter (a workflow execution names itself here).
    pub origin: Option<String>,
    pub arguments: Vec<String>,
    pub start_at: i64,
    /// Set when every node's latest execution has ended.
    pub end_at: Option<i64>,
    pub next_task_id: String,
    /// The instance this one's success started (task chain).
    pub next_task_instance_no: Option<i64>,
    /// The instance whose success started this one.
    pub prev_task_instance_no: Option<i64>,
    /// How its nodes were chosen when the task's default targets were used: the targets, the
    /// nodes they resolved to at the start, and the target nodes left out with the reason.
    /// Absent when the starter listed the nodes (the node executions are that list).
    pub targets: Option<crate::groups::InstanceTargets>,
}

/// One execution of an instance on one node (`execNo` counts re-runs from 1).
#[derive(Debug, Clone)]
pub struct NodeExecution {
    /// Engine-wide id of this execution.
    pub exec_id: i64,
    pub task_instance_no: i64,
    pub task_id: String,
    pub node_id: String,
    pub exec_no: i64,
    /// The task revision this execution runs (a re-run may run a newer one than its instance).
    pub revision_no: i64,
    pub status: ExecStatus,
    /// `S` (exit 0) or `F`, once ended.
    pub result_cd: Option<String>,
    pub exit_cd: Option<i64>,
    /// Why it failed, timed out, was cancelled or lost.
    pub reason: Option<String>,
    pub runner_id: String,
    pub runner_gubun: RunnerGubun,
    pub created_at: i64,
    pub start_at: Option<i64>,
    pub end_at: Option<i64>,
    /// Bytes of stdout / stderr stored.
    pub out_len: i64,
    pub err_len: i64,
    /// The output reached the cap and was cut (a marker says so).
    pub truncated: bool,
    pub cancel_requested: bool,
}

/// Filters of the node list: substrings, except `owner_user_id` and `status` (exact).
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub id: Option<String>,
    pub agent_ver: Option<String>,
    pub ip: Option<String>,
    pub os_name: Option<String>,
    pub hostname: Option<String>,
    pub owner_user_id: Option<String>,
    pub status: Option<String>,
}

/// Filters of the task list: `id` substring, the rest exact.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub id: Option<String>,
    pub owner_user_id: Option<String>,
    pub apprv_status: Option<String>,
    pub apprv_user_id: Option<String>,
    pub exec_scheduler: Option<String>,
    pub exec_ondemand: Option<String>,
    pub exec_task: Option<String>,
    /// Tasks whose target nodes include this node.
    pub target_node_id: Option<String>,
}

/// Filters of a task's instance list.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    /// Started at or after (unix ms).
    pub start_ge: Option<i64>,
    /// Started at or before (unix ms).
    pub start_le: Option<i64>,
    pub runner_id: Option<String>,
    pub next_task_id: Option<String>,
}

/// Filters of an instance's node list (latest execution of each node).
#[derive(Debug, Clone, Default)]
pub struct NodeExecFilter {
    /// Substring of the node id.
    pub node_id: Option<String>,
    pub status: Option<ExecStatus>,
    /// `S` or `F`.
    pub result_cd: Option<String>,
    pub exit_cd: Option<i64>,
}

/// A request to start a task instance (API, CLI, workflow engine).
#[derive(Debug, Clone)]
pub struct StartInstance {
    pub task_id: String,
    pub node_ids: Vec<String>,
    pub arguments: Vec<String>,
    pub runner_gubun: RunnerGubun,
    /// The user id (U), `scheduler` (S), or the previous instance number (T).
    pub runner_id: String,
    /// A tag naming what started it (a workflow execution and step), for finding it again.
    pub origin: Option<String>,
}

/// Output read from an offset.
#[derive(Debug, Clone, Default)]
pub struct OutputSlice {
    pub data: Vec<u8>,
    /// Offset after `data`.
    pub next: i64,
}
