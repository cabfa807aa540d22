//! The definition model: what a parsed and checked definition holds, and its stored (JSON)
//! form.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use haechi_types::Error;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A duration in whole milliseconds, written as seconds (`5`, `0.25`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Secs(pub u64);

impl Secs {
    pub fn ms(self) -> u64 {
        self.0
    }

    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}s", self.0 as f64 / 1000.0)
        }
    }
}

impl Serialize for Secs {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(1000) {
            s.serialize_u64(self.0 / 1000)
        } else {
            s.serialize_f64(self.0 as f64 / 1000.0)
        }
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Ok(Secs((v * 1000.0).round() as u64))
    }
}

/// What happens to the run when a step fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The run ends `FAILED`: steps still in flight are stopped, none not started starts.
    #[default]
    Stop,
    /// The step is `FAILED` but the run goes on as if it had succeeded.
    Continue,
    /// The run pauses (`PAUSED`) with the step `FAILED`, waiting for an operator's action on
    /// it (retry, skip or mark as succeeded).
    Ask,
}

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    #[default]
    String,
    /// A secret: given at execute time only, stored sealed with the vault's keys, shown as
    /// `****` everywhere, reaching tasks only through a task step's `env` (masked in their
    /// output), and deleted when the run ends.
    Password,
}

/// What every API shows instead of a password parameter's value.
pub const MASK: &str = "****";

/// A parameter the workflow takes at execute time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

fn is_string_type(t: &ParamType) -> bool {
    *t == ParamType::String
}

impl ParamSpec {
    pub fn is_password(&self) -> bool {
        self.kind == ParamType::Password
    }

    /// An execute must give the value.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }
}

/// When a workflow starts by itself: a cron expression (5 fields, or 6 with seconds first) in a
/// time zone, with the run's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// What becomes of a fire missed while no server ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    #[default]
    RunOnce,
    Skip,
}

fn is_run_once(m: &Misfire) -> bool {
    *m == Misfire::RunOnce
}

/// Most schedules of one workflow.
pub const MAX_SCHEDULES: usize = 20;

/// A whole definition: one version of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// One step. `needs` is kept as written (absent = the step before it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_stop(f: &OnFailure) -> bool {
    *f == OnFailure::Stop
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// A `workflow` step: runs workflow `workflow` (its id, or the name of a live workflow) with
/// `params` (`${name}` filled from this run's values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowAction {
    pub workflow: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl Action {
    pub fn kind(&self) -> StepKind {
        match self {
            Action::Task(_) => StepKind::Task,
            Action::Sleep { .. } => StepKind::Sleep,
            Action::Http(_) => StepKind::Http,
            Action::Approval { .. } => StepKind::Approval,
            Action::DbAccess(_) => StepKind::DbAccess,
            Action::Workflow(_) => StepKind::Workflow,
        }
    }
}

/// The step types, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    Task,
    Sleep,
    Http,
    Approval,
    DbAccess,
    Workflow,
}

impl StepKind {
    pub const ALL: [StepKind; 6] = [
        StepKind::Task,
        StepKind::Sleep,
        StepKind::Http,
        StepKind::Approval,
        StepKind::DbAccess,
        StepKind::Workflow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Task => "task",
            StepKind::Sleep => "sleep",
            StepKind::Http => "http",
            StepKind::Approval => "approval",
            StepKind::DbAccess => "db_access",
            StepKind::Workflow => "workflow",
        }
    }
}

/// A `task` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// A `db_access` step: unlocks DBSAFER policy `policy` for `duration`. The step succeeds once
/// the policy is unlocked; the window stays open for the steps after it and closes by itself at
/// its end (the end is stored with the policy), or earlier when the run ends `FAILED` or
/// `STOPPED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbAccessAction {
    /// The policy's `policyId` (or its numeric `index`).
    pub policy: String,
    /// How long the window lasts.
    pub duration: Secs,
}

/// Shortest and longest `db_access` window.
pub const DB_ACCESS_MIN_MS: u64 = 1000;
pub const DB_ACCESS_MAX_MS: u64 = 24 * 3600 * 1000;

/// One credential attribute in the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultRef {
    pub credential_id: i64,
    pub attribute: String,
}

/// An `http` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpAction {
    pub method: String,
    pub url: String,
    /// Request headers (`${param}` allowed in values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A string is sent as is; any other JSON value is sent as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Accepted statuses; absent = any 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<Vec<u16>>,
    /// A parameter may choose the URL's scheme, host or port (a `${...}` before the end of
    /// its host). Without it, parameters may fill only the path, query and fragment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_from_params: bool,
}

/// Names a definition refers to, with the index of the step naming each.
pub type StepRefs<'a> = Vec<(usize, &'a str)>;

/// The dependency graph of a definition, resolved.
#[derive(Debug, Clone)]
pub struct Graph {
    /// For each step (by index), the steps it waits for.
    pub needs: Vec<Vec<usize>>,
    /// Step index by name.
    pub index: HashMap<String, usize>,
}

impl Definition {
    /// The resolved graph. The definition was validated, so every name resolves.
    pub fn graph(&self) -> Graph {
        let index: HashMap<String, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let needs = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| match &s.needs {
                Some(names) => names.iter().filter_map(|n| index.get(n).copied()).collect(),
                None if i == 0 => Vec::new(),
                None => vec![i - 1],
            })
            .collect();
        Graph { needs, index }
    }

    /// The names of the password parameters.
    pub fn password_params(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .filter(|(_, p)| p.is_password())
            .map(|(n, _)| n.as_str())
    }

    /// The workflows its `workflow` steps run, with the index of the step naming each.
    pub fn workflow_refs(&self) -> StepRefs<'_> {
        self.steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.action {
                Action::Workflow(w) => Some((i, w.workflow.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Every task id and approval role the definition names, with the step naming it (for the
    /// checks against the task list and the roles).
    pub fn references(&self) -> (StepRefs<'_>, StepRefs<'_>) {
        let mut tasks = Vec::new();
        let mut roles = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            match &s.action {
                Action::Task(t) => tasks.push((i, t.task.as_str())),
                Action::Approval { role } => roles.push((i, role.as_str())),
                _ => {}
            }
        }
        (tasks, roles)
    }

    /// The error to report about a task or role reference of step `i`.
    pub fn step_error(&self, i: usize, field: &str, message: impl fmt::Display) -> Error {
        Error::field(
            format!("steps[{i}].{field}"),
            format_args!("step '{}': {message}", self.steps[i].name),
        )
    }
}
