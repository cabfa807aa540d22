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

/// Declares an enum of OPMATE one-letter codes with `as_code` / `from_code`, the two edges
/// (the store's TEXT columns and the OPMATE wire) where the letters live.
macro_rules! one_letter_codes {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The one-letter code the store and the OPMATE wire use.
            pub fn as_code(self) -> &'static str {
                match self {
                    $( $name::$variant => $code, )+
                }
            }

            /// The variant of a one-letter code; `None` for any other text.
            pub fn from_code(code: &str) -> Option<$name> {
                match code {
                    $( $code => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_code())
            }
        }
    };
}

one_letter_codes! {
    /// Whether a node gets work (`status`).
    pub enum NodeStatus {
        /// `E`: gets work.
        Enabled = "E",
        /// `D`: gets no new work.
        Disabled = "D",
    }
}

one_letter_codes! {
    /// Where a task is in its approval (`apprvStatus`): `N → Q → A | R`, an edit goes back to `N`.
    pub enum ApprovalStatus {
        /// `N`: a new revision nobody asked to approve yet.
        New = "N",
        /// `Q`: approval requested, awaiting an approver.
        Requested = "Q",
        /// `A`: approved; the task may run.
        Approved = "A",
        /// `R`: rejected; it may be requested again.
        Rejected = "R",
    }
}

one_letter_codes! {
    /// How a node execution ended (`resultCd`).
    pub enum ResultCode {
        /// `S`: exit code 0.
        Success = "S",
        /// `F`: any other end (non-zero exit, timeout, cancel, lost).
        Failure = "F",
    }
}

/// A task's `exec*` switches (`execOndemand`, `execScheduler`, `execTask`) are `E`/`D` on the
/// wire and in the store, `bool` in the domain.
pub mod exec_flag {
    /// `E` for true, `D` for false.
    pub fn as_code(enabled: bool) -> &'static str {
        if enabled {
            "E"
        } else {
            "D"
        }
    }

    /// `Some(true)` for `E`, `Some(false)` for `D`, `None` for any other text.
    pub fn from_code(code: &str) -> Option<bool> {
        match code {
            "E" => Some(true),
            "D" => Some(false),
            _ => None,
        }
    }
}

/// A code read from the store: one the enum does not know (old or hand-edited data) is an
/// internal error, not a panic and not a guess.
pub(crate) fn stored<T>(
    column: &str,
    code: &str,
    from_code: impl FnOnce(&str) -> Option<T>,
) -> haechi_types::Result<T> {
    from_code(code).ok_or_else(|| {
        haechi_types::Error::internal(format_args!(
            "the store holds {column} = {code:?}, which is not a known code"
        ))
    })
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
    pub status: NodeStatus,
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
    /// May be started through the API (`execOndemand` `E`).
    pub exec_ondemand: bool,
    /// Runs on its `schedule` (`execScheduler` `E`).
    pub exec_scheduler: bool,
    /// May be started as another task's `nextTaskId` (`execTask` `E`).
    pub exec_task: bool,
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
    pub apprv_status: ApprovalStatus,
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
    /// Set once ended.
    pub result_cd: Option<ResultCode>,
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
    pub status: Option<NodeStatus>,
}

/// Filters of the task list: `id` substring, the rest exact.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub id: Option<String>,
    pub owner_user_id: Option<String>,
    pub apprv_status: Option<ApprovalStatus>,
    pub apprv_user_id: Option<String>,
    pub exec_scheduler: Option<bool>,
    pub exec_ondemand: Option<bool>,
    pub exec_task: Option<bool>,
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
    pub result_cd: Option<ResultCode>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_its_variant_and_unknown_codes_are_refused() {
        for x in NodeStatus::ALL {
            assert_eq!(NodeStatus::from_code(x.as_code()), Some(*x));
        }
        for x in ApprovalStatus::ALL {
            assert_eq!(ApprovalStatus::from_code(x.as_code()), Some(*x));
        }
        for x in ResultCode::ALL {
            assert_eq!(ResultCode::from_code(x.as_code()), Some(*x));
        }
        for x in [true, false] {
            assert_eq!(exec_flag::from_code(exec_flag::as_code(x)), Some(x));
        }
        for unknown in ["", "e", "Y", "N ", "X", "EE"] {
            assert_eq!(NodeStatus::from_code(unknown), None);
            assert_eq!(ResultCode::from_code(unknown), None);
            assert_eq!(exec_flag::from_code(unknown), None);
        }
        for unknown in ["", "n", "Y", "X", "AA"] {
            assert_eq!(ApprovalStatus::from_code(unknown), None);
        }
    }

    #[test]
    fn the_codes_are_the_ones_opmate_and_the_store_use() {
        let codes = |all: &[&str]| all.join("");
        assert_eq!(
            codes(
                &NodeStatus::ALL
                    .iter()
                    .map(|x| x.as_code())
                    .collect::<Vec<_>>()
            ),
            "ED"
        );
        assert_eq!(
            codes(
                &ApprovalStatus::ALL
                    .iter()
                    .map(|x| x.as_code())
                    .collect::<Vec<_>>()
            ),
            "NQAR"
        );
        assert_eq!(
            codes(
                &ResultCode::ALL
                    .iter()
                    .map(|x| x.as_code())
                    .collect::<Vec<_>>()
            ),
            "SF"
        );
        assert_eq!(ApprovalStatus::Requested.to_string(), "Q");
    }

    #[test]
    fn an_unknown_code_in_the_store_is_an_internal_error() {
        assert_eq!(
            stored("status", "E", NodeStatus::from_code).expect("known"),
            NodeStatus::Enabled
        );
        let e = stored("apprv_status", "Z", ApprovalStatus::from_code).expect_err("unknown");
        assert_eq!(e.code, haechi_types::Code::Internal);
    }
}
