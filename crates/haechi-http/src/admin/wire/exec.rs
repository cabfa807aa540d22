//! Nodes, tasks, task instances and their node executions, node groups, the file
//! repository and enrolment tokens as the admin API shows and takes them (camelCase, as
//! OPMATE's own fields are).

use std::collections::BTreeMap;

use haechi_exec as ex;
use serde::{Deserialize, Serialize};

use super::{all, mirror_enum};

mirror_enum! {
    /// The state of one node execution (CONTRACT §3).
    pub enum ExecStatus mirrors ex::ExecStatus {
        #[serde(rename = "WAIT")]
        Wait,
        #[serde(rename = "RUN")]
        Run,
        #[serde(rename = "END")]
        End,
        #[serde(rename = "TIMEOUT")]
        Timeout,
        #[serde(rename = "CANCEL")]
        Cancel,
        #[serde(rename = "LOST")]
        Lost,
    }
}

mirror_enum! {
    /// Who started an instance (`runnerGubun`).
    pub enum RunnerGubun mirrors ex::RunnerGubun {
        #[serde(rename = "U")]
        User,
        #[serde(rename = "S")]
        Scheduler,
        #[serde(rename = "T")]
        Task,
    }
}

mirror_enum! {
    /// `POST /api/v1/tasks/{id}/approval` actions.
    #[serde(rename_all = "lowercase")]
    pub enum ApprovalAction mirrors ex::ApprovalAction { Request, Approve, Reject }
}

/// A registered node (a machine running `haechi agent`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
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
    pub labels: BTreeMap<String, String>,
    /// The OS users the agent can run scripts as (every user of the machine when it runs as
    /// root, else its own); absent until an agent that reports them connects.
    pub os_users: Option<Vec<String>>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&ex::Node> for Node {
    fn from(x: &ex::Node) -> Self {
        Node {
            id: x.id.clone(),
            agent_guid: x.agent_guid.clone(),
            agent_ver: x.agent_ver.clone(),
            os_name: x.os_name.clone(),
            ip: x.ip.clone(),
            hostname: x.hostname.clone(),
            owner_user_id: x.owner_user_id.clone(),
            status: x.status.as_code().to_owned(),
            heartbeat_at: x.heartbeat_at,
            missing_since: x.missing_since,
            connected: x.connected,
            revoked: x.revoked,
            labels: x.labels.clone(),
            os_users: x.os_users.clone(),
            created_at: x.created_at,
            updated_at: x.updated_at,
        }
    }
}

/// A task at one revision, with its approval state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
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
    pub targets: TaskTargets,
    /// When the task may start; empty = any time.
    pub run_windows: Vec<RunWindow>,
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

impl From<&ex::Task> for Task {
    fn from(x: &ex::Task) -> Self {
        Task {
            id: x.id.clone(),
            revision_no: x.revision_no,
            owner_user_id: x.owner_user_id.clone(),
            script_name: x.script_name.clone(),
            script: x.script.clone(),
            os_user: x.os_user.clone(),
            exec_ondemand: ex::exec_flag::as_code(x.exec_ondemand).to_owned(),
            exec_scheduler: ex::exec_flag::as_code(x.exec_scheduler).to_owned(),
            exec_task: ex::exec_flag::as_code(x.exec_task).to_owned(),
            schedule: x.schedule.clone(),
            schedule_tz: x.schedule_tz.clone(),
            next_task_id: x.next_task_id.clone(),
            timeout_secs: x.timeout_secs,
            target_node_ids: x.target_node_ids.clone(),
            targets: (&x.targets).into(),
            run_windows: all(&x.run_windows),
            runner_groups: x.runner_groups.clone(),
            arguments: x.arguments.clone(),
            description: x.description.clone(),
            apprv_status: x.apprv_status.as_code().to_owned(),
            apprv_user_id: x.apprv_user_id.clone(),
            apprv_requested_by: x.apprv_requested_by.clone(),
            apprv_comment: x.apprv_comment.clone(),
            apprv_at: x.apprv_at,
            revision_created_by: x.revision_created_by.clone(),
            revision_created_at: x.revision_created_at,
            created_at: x.created_at,
            updated_at: x.updated_at,
        }
    }
}

/// A task instance: one start of a task on a set of nodes.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
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
    pub targets: Option<InstanceTargets>,
}

impl From<&ex::Instance> for Instance {
    fn from(x: &ex::Instance) -> Self {
        Instance {
            task_instance_no: x.task_instance_no,
            task_id: x.task_id.clone(),
            revision_no: x.revision_no,
            runner_id: x.runner_id.clone(),
            runner_gubun: x.runner_gubun.into(),
            origin: x.origin.clone(),
            arguments: x.arguments.clone(),
            start_at: x.start_at,
            end_at: x.end_at,
            next_task_id: x.next_task_id.clone(),
            next_task_instance_no: x.next_task_instance_no,
            prev_task_instance_no: x.prev_task_instance_no,
            targets: x.targets.as_ref().map(Into::into),
        }
    }
}

/// One execution of an instance on one node (`execNo` counts re-runs from 1).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
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

impl From<&ex::NodeExecution> for NodeExecution {
    fn from(x: &ex::NodeExecution) -> Self {
        NodeExecution {
            exec_id: x.exec_id,
            task_instance_no: x.task_instance_no,
            task_id: x.task_id.clone(),
            node_id: x.node_id.clone(),
            exec_no: x.exec_no,
            revision_no: x.revision_no,
            status: x.status.into(),
            result_cd: x.result_cd.map(|r| r.as_code().to_owned()),
            exit_cd: x.exit_cd,
            reason: x.reason.clone(),
            runner_id: x.runner_id.clone(),
            runner_gubun: x.runner_gubun.into(),
            created_at: x.created_at,
            start_at: x.start_at,
            end_at: x.end_at,
            out_len: x.out_len,
            err_len: x.err_len,
            truncated: x.truncated,
            cancel_requested: x.cancel_requested,
        }
    }
}

/// A task definition (`POST /api/v1/tasks`, `PUT /api/v1/tasks/{id}`). On `PUT`, an absent
/// field keeps the previous revision's value.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// The task id (create only).
    pub id: Option<String>,
    pub script_name: Option<String>,
    /// The script body. A `#!` line picks the interpreter; without one it runs with `/bin/sh`.
    pub script: Option<String>,
    /// The OS user the agent runs the script as.
    pub os_user: Option<String>,
    /// `E` or `D` (default `E`).
    pub exec_ondemand: Option<String>,
    /// `E` or `D` (default `D`).
    pub exec_scheduler: Option<String>,
    /// `E` or `D` (default `D`).
    pub exec_task: Option<String>,
    /// 5-field cron expression (minute hour day-of-month month day-of-week), or `""` for none.
    pub schedule: Option<String>,
    /// Time zone of the schedule: an IANA name (`Asia/Seoul`) or `±HH:MM`; default the server's.
    #[serde(alias = "timezone")]
    pub schedule_tz: Option<String>,
    /// Task to start when an instance of this one ends with every node `S` (`""` for none).
    pub next_task_id: Option<String>,
    /// Seconds before the agent kills the script (0 = none).
    pub timeout_secs: Option<u64>,
    /// Nodes scheduled runs go to.
    #[serde(alias = "nodeIdList")]
    pub target_node_ids: Option<Vec<String>>,
    /// Arguments of scheduled runs.
    pub arguments: Option<Vec<String>>,
    pub description: Option<String>,
    /// Default targets `{"nodes","nodeGroups","labels"}` (replaces all three when given;
    /// `nodes` is the same list as `targetNodeIds`).
    pub targets: Option<TaskTargets>,
    /// When the task may start (`[{"days":["MON"],"start":"22:00","end":"06:00","timezone":"Asia/Seoul"}]`);
    /// `[]` = any time.
    pub run_windows: Option<Vec<RunWindow>>,
    /// User groups whose members may start the task; `[]` = anyone with `task.execute`.
    pub runner_groups: Option<Vec<String>>,
}

impl From<TaskSpec> for ex::TaskSpec {
    fn from(x: TaskSpec) -> Self {
        ex::TaskSpec {
            id: x.id,
            script_name: x.script_name,
            script: x.script,
            os_user: x.os_user,
            exec_ondemand: x.exec_ondemand,
            exec_scheduler: x.exec_scheduler,
            exec_task: x.exec_task,
            schedule: x.schedule,
            schedule_tz: x.schedule_tz,
            next_task_id: x.next_task_id,
            timeout_secs: x.timeout_secs,
            target_node_ids: x.target_node_ids,
            arguments: x.arguments,
            description: x.description,
            targets: x.targets.map(Into::into),
            run_windows: x
                .run_windows
                .map(|w| w.into_iter().map(Into::into).collect()),
            runner_groups: x.runner_groups,
        }
    }
}

/// `GET /api/v1/tasks/{task_id}/approval`: the revision under review and what changed since
/// the last approved one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalReview {
    pub task_id: String,
    /// The revision an approval or rejection must name.
    pub revision_no: i64,
    /// `N`, `Q`, `A` or `R`.
    pub apprv_status: String,
    pub apprv_requested_by: String,
    /// The last revision before this one that was approved; absent when none was.
    pub approved_revision_no: Option<i64>,
    /// Unified diff from the last approved revision (or from nothing) to this one.
    pub diff: String,
}

impl From<&ex::ApprovalReview> for ApprovalReview {
    fn from(x: &ex::ApprovalReview) -> Self {
        ApprovalReview {
            task_id: x.task_id.clone(),
            revision_no: x.revision_no,
            apprv_status: x.apprv_status.as_code().to_owned(),
            apprv_requested_by: x.apprv_requested_by.clone(),
            approved_revision_no: x.approved_revision_no,
            diff: x.diff.clone(),
        }
    }
}

/// A file of the repository, without its content.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub name: String,
    pub description: String,
    /// Bytes of content.
    pub size: i64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Sealed with the vault's data key (`true`) or stored as given.
    pub encrypted: bool,
    /// 1 for the first upload, one more for each replace.
    pub version: i64,
    pub created_by: String,
    pub created_at: i64,
    /// Who (a user id, or `exec:<id>` for a running script) stored this version.
    pub updated_by: String,
    pub updated_at: i64,
}

impl From<&ex::FileInfo> for FileInfo {
    fn from(x: &ex::FileInfo) -> Self {
        FileInfo {
            name: x.name.clone(),
            description: x.description.clone(),
            size: x.size,
            sha256: x.sha256.clone(),
            encrypted: x.encrypted,
            version: x.version,
            created_by: x.created_by.clone(),
            created_at: x.created_at,
            updated_by: x.updated_by.clone(),
            updated_at: x.updated_at,
        }
    }
}

/// `POST /api/v1/tasks/{task_id}/dry-run` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRunRequest {
    /// The nodes to check; absent or empty: the task's default targets, resolved now.
    #[serde(default)]
    pub node_id_list: Option<Vec<String>>,
    /// The arguments a start would pass (checked as a start checks them).
    #[serde(default)]
    pub arguments: Option<Vec<String>>,
}

impl From<DryRunRequest> for ex::DryRunRequest {
    fn from(x: DryRunRequest) -> Self {
        ex::DryRunRequest {
            node_id_list: x.node_id_list,
            arguments: x.arguments,
        }
    }
}

/// One node of a dry run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRunNode {
    pub node_id: String,
    /// A start now would run the script on this node.
    pub would_run: bool,
    /// Why not, in words (empty when it would run).
    pub reasons: Vec<String>,
    /// The same reasons as stable codes: `unknown_node`, `disabled`, `not_connected`,
    /// `os_user_missing`, `outside_window`, `not_approved`, `ondemand_disabled`,
    /// `not_runner`, `attribute_missing`.
    pub reason_codes: Vec<String>,
    /// The script as it would run there: every `@OPM_ATTR.KEY@` the node has replaced.
    pub script: String,
    /// The attributes the script names, with their values on this node.
    pub attributes: BTreeMap<String, String>,
}

impl From<&ex::DryRunNode> for DryRunNode {
    fn from(x: &ex::DryRunNode) -> Self {
        DryRunNode {
            node_id: x.node_id.clone(),
            would_run: x.would_run,
            reasons: x.reasons.clone(),
            reason_codes: x.reason_codes.clone(),
            script: x.script.clone(),
            attributes: x.attributes.clone(),
        }
    }
}

/// `POST /api/v1/tasks/{task_id}/dry-run` answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    pub task_id: String,
    pub revision_no: i64,
    /// `request` (the caller listed the nodes) or `targets` (the task's default targets).
    pub source: String,
    /// The arguments a start would pass.
    pub arguments: Vec<String>,
    pub nodes: Vec<DryRunNode>,
}

impl From<&ex::DryRun> for DryRun {
    fn from(x: &ex::DryRun) -> Self {
        DryRun {
            task_id: x.task_id.clone(),
            revision_no: x.revision_no,
            source: x.source.clone(),
            arguments: x.arguments.clone(),
            nodes: all(&x.nodes),
        }
    }
}

/// A node group.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroup {
    pub name: String,
    pub description: String,
    /// Member node ids, sorted.
    pub nodes: Vec<String>,
    /// `KEY` → `VALUE`, given to scripts as `@OPM_ATTR.KEY@`.
    pub attributes: BTreeMap<String, String>,
    /// When two groups of one node set the same key, the higher priority wins (then the name
    /// that sorts first). Default 0.
    pub priority: i64,
    /// When the group's nodes may run tasks; empty = any time.
    pub run_windows: Vec<RunWindow>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&ex::NodeGroup> for NodeGroup {
    fn from(x: &ex::NodeGroup) -> Self {
        NodeGroup {
            name: x.name.clone(),
            description: x.description.clone(),
            nodes: x.nodes.clone(),
            attributes: x.attributes.clone(),
            priority: x.priority,
            run_windows: all(&x.run_windows),
            created_by: x.created_by.clone(),
            created_at: x.created_at,
            updated_at: x.updated_at,
        }
    }
}

/// `POST /api/v1/node-groups` and `PUT /api/v1/node-groups/{name}` body. On `PUT`, an absent
/// field keeps its value.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupSpec {
    /// The group's name (create only; on `PUT` it must match the path when given).
    pub name: Option<String>,
    pub description: Option<String>,
    /// Member node ids (each must exist).
    pub nodes: Option<Vec<String>>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub priority: Option<i64>,
    pub run_windows: Option<Vec<RunWindow>>,
}

impl From<NodeGroupSpec> for ex::NodeGroupSpec {
    fn from(x: NodeGroupSpec) -> Self {
        ex::NodeGroupSpec {
            name: x.name,
            description: x.description,
            nodes: x.nodes,
            attributes: x.attributes,
            priority: x.priority,
            run_windows: x
                .run_windows
                .map(|w| w.into_iter().map(Into::into).collect()),
        }
    }
}

/// A task's default targets: `nodes` and the members of `nodeGroups` (their union), narrowed
/// to the nodes whose labels hold every `labels` pair; with no nodes and no groups, every node
/// whose labels hold them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskTargets {
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub node_groups: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl From<TaskTargets> for ex::TaskTargets {
    fn from(x: TaskTargets) -> Self {
        ex::TaskTargets {
            nodes: x.nodes,
            node_groups: x.node_groups,
            labels: x.labels,
        }
    }
}

impl From<&ex::TaskTargets> for TaskTargets {
    fn from(x: &ex::TaskTargets) -> Self {
        TaskTargets {
            nodes: x.nodes.clone(),
            node_groups: x.node_groups.clone(),
            labels: x.labels.clone(),
        }
    }
}

/// A node left out of a start, and why (disabled, unknown).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedNode {
    pub node_id: String,
    pub reason: String,
}

impl From<&ex::SkippedNode> for SkippedNode {
    fn from(x: &ex::SkippedNode) -> Self {
        SkippedNode {
            node_id: x.node_id.clone(),
            reason: x.reason.clone(),
        }
    }
}

/// How an instance's nodes were chosen from its task's default targets.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTargets {
    /// `targets` (the task's default targets, resolved when the instance started).
    pub source: String,
    /// The task's targets as they were resolved (source `targets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TaskTargets>,
    /// The nodes it runs on.
    pub nodes: Vec<String>,
    /// Target nodes it does not run on, and why.
    #[serde(default)]
    pub skipped: Vec<SkippedNode>,
}

impl From<&ex::InstanceTargets> for InstanceTargets {
    fn from(x: &ex::InstanceTargets) -> Self {
        InstanceTargets {
            source: x.source.clone(),
            targets: x.targets.as_ref().map(Into::into),
            nodes: x.nodes.clone(),
            skipped: all(&x.skipped),
        }
    }
}

/// One window: on `days` (all days when empty), from `start` to `end` (`HH:MM`, 24 h) in
/// `timezone` (IANA name or `±HH:MM`; default the server's). An `end` at or before `start`
/// crosses midnight: the window opens on a listed day and closes on the next day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunWindow {
    /// `MON` … `SUN` (case-insensitive); empty = every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// Opening time, `HH:MM`.
    pub start: String,
    /// Closing time, `HH:MM` (exclusive).
    pub end: String,
    /// IANA time zone (`Asia/Seoul`) or `±HH:MM`; absent = the server's time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl From<RunWindow> for ex::RunWindow {
    fn from(x: RunWindow) -> Self {
        ex::RunWindow {
            days: x.days,
            start: x.start,
            end: x.end,
            timezone: x.timezone,
        }
    }
}

impl From<&ex::RunWindow> for RunWindow {
    fn from(x: &ex::RunWindow) -> Self {
        RunWindow {
            days: x.days.clone(),
            start: x.start.clone(),
            end: x.end.clone(),
            timezone: x.timezone.clone(),
        }
    }
}

/// `POST /api/v1/agents/enrollment-tokens` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// Lifetime in seconds (default `agents.enrollment_token_ttl_secs`; at most 30 days).
    pub ttl_secs: Option<u64>,
    /// How many agents may enrol with it (default 1, at most 100000).
    pub uses: Option<u64>,
    /// The one node id this token enrols. Only such a token enrols an id that exists already
    /// (a revoked node enrolled again); a token without it enrols new node ids only.
    pub node_id: Option<String>,
}

impl From<NewEnrollmentToken> for ex::NewEnrollmentToken {
    fn from(x: NewEnrollmentToken) -> Self {
        ex::NewEnrollmentToken {
            ttl_secs: x.ttl_secs,
            uses: x.uses,
            node_id: x.node_id,
        }
    }
}

/// A new enrolment token (shown once; the server keeps its hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnrollmentToken {
    pub token: String,
    pub expires_at: i64,
    pub uses: u64,
    /// The node id it is bound to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

impl From<&ex::EnrollmentToken> for EnrollmentToken {
    fn from(x: &ex::EnrollmentToken) -> Self {
        EnrollmentToken {
            token: x.token.clone(),
            expires_at: x.expires_at,
            uses: x.uses,
            node_id: x.node_id.clone(),
        }
    }
}
