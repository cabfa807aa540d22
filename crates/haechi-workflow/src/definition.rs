//! Workflow definitions (CONTRACT §7): what a definition may say, parsed from JSON or YAML into
//! [`Definition`], and checked so that every problem is a 400 naming the step and field.
//!
//! Parsing is done by hand over a JSON value rather than with `#[serde(deny_unknown_fields)]`
//! because the common step fields and the per-type fields share one object: serde cannot both
//! flatten them and reject unknown fields, and hand-written checks give messages that name the
//! step (`steps[2].retries: step 'db_stop': must be a whole number from 0 to 100`).
//!
//! The stored form of a version is [`Definition`] serialised as JSON; it is read back with
//! plain serde (it was validated when it was written).
//!
//! Adding a step type is one variant of [`Action`], one arm in [`parse_action`], and one arm in
//! the driver's attempt runner.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use haechi_types::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Most steps in one workflow.
pub const MAX_STEPS: usize = 1000;
/// Longest sleep, step timeout or retry delay: 30 days.
pub const MAX_SECONDS_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most retries of one step.
pub const MAX_RETRIES: u64 = 100;
const MAX_NAME_CHARS: usize = 200;
const MAX_STEP_NAME_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 4000;
const MAX_TEXT_BYTES: usize = 1024 * 1024;
const MAX_URL_BYTES: usize = 8 * 1024;
const MAX_NODES: usize = 10_000;
const MAX_ARGUMENTS: usize = 1000;
const MAX_PARAMS: usize = 200;
const MAX_CONCURRENCY: u64 = 10_000;

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

/// Parses YAML text into a JSON value (YAML is a superset; keys must be strings).
pub fn yaml_to_value(text: &[u8]) -> Result<Value> {
    let text = std::str::from_utf8(text).map_err(|_| {
        Error::new(
            haechi_types::Code::MalformedBody,
            "the YAML body is not valid UTF-8",
        )
    })?;
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        Error::new(
            haechi_types::Code::MalformedBody,
            format!("the body is not valid YAML{at}"),
        )
    })
}

/// Parses and checks a definition (everything but the task and role references, which need
/// the store: see [`Definition::references`]).
pub fn parse(value: &Value) -> Result<Definition> {
    let Some(map) = value.as_object() else {
        return Err(Error::invalid(
            "a workflow definition must be an object with name, group and steps",
        ));
    };
    let mut top = Fields::new(map, String::new());
    let name = top.req_text("name", MAX_NAME_CHARS)?;
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::field(
            "name",
            "must not be only digits (it would read as a workflow id)",
        ));
    }
    let group = top.req_text("group", MAX_NAME_CHARS)?;
    // No invisible characters or compatibility look-alikes (issue 18 item 11).
    for (field, v) in [("name", &name), ("group", &group)] {
        haechi_types::ident::check(field, v, MAX_NAME_CHARS, haechi_types::ident::Spaces::Free)?;
    }
    let description = top
        .free_text("description", MAX_DESCRIPTION_CHARS)?
        .unwrap_or_default();
    let params = parse_params(top.take("params"))?;
    let rto_secs = top.seconds("rto_secs", true)?;
    let concurrency = match top.uint("concurrency", MAX_CONCURRENCY)? {
        Some(0) => {
            return Err(Error::field(
                "concurrency",
                "must be at least 1 (leave it out for no limit)",
            ))
        }
        other => other.map(|n| n as u32),
    };
    let schedules = parse_schedules(top.take("schedules"))?;
    let steps_value = top
        .take("steps")
        .ok_or_else(|| Error::field("steps", "is required: a list of steps"))?;
    top.finish(&[
        "name",
        "group",
        "description",
        "params",
        "rto_secs",
        "concurrency",
        "schedules",
        "steps",
    ])?;
    let Some(list) = steps_value.as_array() else {
        return Err(Error::field("steps", "must be a list of steps"));
    };
    if list.is_empty() {
        return Err(Error::field("steps", "must hold at least one step"));
    }
    if list.len() > MAX_STEPS {
        return Err(Error::field(
            "steps",
            format_args!(
                "holds {} steps; at most {MAX_STEPS} are allowed",
                list.len()
            ),
        ));
    }
    let mut steps = Vec::with_capacity(list.len());
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, v) in list.iter().enumerate() {
        let step = parse_step(i, v)?;
        steps.push(step);
    }
    for (i, s) in steps.iter().enumerate() {
        if let Some(first) = seen.insert(s.name.as_str(), i) {
            return Err(Error::field(
                format!("steps[{i}].name"),
                format_args!(
                    "'{}' is already the name of steps[{first}]; step names must be unique",
                    s.name
                ),
            ));
        }
    }
    let def = Definition {
        name,
        group,
        description,
        params,
        rto_secs,
        concurrency,
        schedules,
        steps,
    };
    check_needs(&def)?;
    check_cycles(&def)?;
    check_param_refs(&def)?;
    check_schedule_params(&def)?;
    Ok(def)
}

fn parse_schedules(v: Option<&Value>) -> Result<Vec<Schedule>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let Some(list) = v.as_array() else {
        return Err(Error::field(
            "schedules",
            "must be a list of {\"cron\", \"timezone\"?, \"params\"?, \"misfire\"?}",
        ));
    };
    if list.len() > MAX_SCHEDULES {
        return Err(Error::field(
            "schedules",
            format_args!("at most {MAX_SCHEDULES} schedules"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = format!("schedules[{i}]");
        let Some(map) = item.as_object() else {
            return Err(Error::field(&at, "must be an object with cron"));
        };
        let mut f = Fields::new(map, at.clone());
        let cron = f.req_text("cron", 200)?;
        let timezone = match f.take("timezone") {
            None | Some(Value::Null) => None,
            Some(_) => Some(f.req_text("timezone", 100)?),
        };
        haechi_exec::CronSpec::parse(&cron, timezone.as_deref(), 0, true)
            .map_err(|(field, m)| Error::field(format!("{at}.{field}"), m))?;
        let params = match f.take("params") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(o)) => {
                let mut p = BTreeMap::new();
                for (k, v) in o {
                    if let Some(t) = scalar_text(&format!("{at}.params.{k}"), v)? {
                        p.insert(k.clone(), t);
                    }
                }
                p
            }
            Some(_) => return Err(f.err("params", "must be an object: name → value")),
        };
        let misfire = match f.take("misfire") {
            None | Some(Value::Null) => Misfire::RunOnce,
            Some(Value::String(s)) if s == "run_once" => Misfire::RunOnce,
            Some(Value::String(s)) if s == "skip" => Misfire::Skip,
            Some(other) => {
                return Err(f.err(
                    "misfire",
                    format_args!("must be \"run_once\" or \"skip\" (got {other})"),
                ))
            }
        };
        f.finish(&["cron", "timezone", "params", "misfire"])?;
        out.push(Schedule {
            cron,
            timezone,
            params,
            misfire,
        });
    }
    Ok(out)
}

/// A schedule's parameters must be the workflow's, fill every required one, and never hold a
/// password (it would sit in the definition in clear).
fn check_schedule_params(def: &Definition) -> Result<()> {
    for (i, s) in def.schedules.iter().enumerate() {
        for name in s.params.keys() {
            match def.params.get(name) {
                None => {
                    return Err(Error::field(
                        format!("schedules[{i}].params.{name}"),
                        "is not a parameter of this workflow",
                    ))
                }
                Some(p) if p.is_password() => {
                    return Err(Error::field(
                        format!("schedules[{i}].params.{name}"),
                        "is a password parameter: a schedule cannot hold its value (it would be stored in the definition in clear)",
                    ))
                }
                _ => {}
            }
        }
        for (name, p) in &def.params {
            if p.is_required() && !s.params.contains_key(name) {
                return Err(Error::field(
                    format!("schedules[{i}].params.{name}"),
                    format_args!(
                        "is required by the workflow{}; a scheduled run has nobody to give it",
                        if p.is_password() { " (a password)" } else { "" }
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn parse_params(v: Option<&Value>) -> Result<BTreeMap<String, ParamSpec>> {
    let mut out = BTreeMap::new();
    let Some(v) = v else { return Ok(out) };
    if v.is_null() {
        return Ok(out);
    }
    let Some(map) = v.as_object() else {
        return Err(Error::field(
            "params",
            "must be an object: parameter name → default value (a string), null (required), \
             or {default, description}",
        ));
    };
    if map.len() > MAX_PARAMS {
        return Err(Error::field(
            "params",
            format_args!("at most {MAX_PARAMS} parameters"),
        ));
    }
    for (name, spec) in map {
        check_param_name(&format!("params.{name}"), name)?;
        let field = format!("params.{name}");
        let spec = match spec {
            Value::Null => ParamSpec {
                kind: ParamType::String,
                default: None,
                required: None,
                description: String::new(),
            },
            Value::Object(o) => {
                let mut f = Fields::new(o, field.clone());
                let kind = match f.take("type") {
                    None | Some(Value::Null) => ParamType::String,
                    Some(Value::String(t)) if t == "string" => ParamType::String,
                    Some(Value::String(t)) if t == "password" => ParamType::Password,
                    Some(other) => {
                        return Err(f.err(
                            "type",
                            format_args!("must be \"string\" or \"password\" (got {other})"),
                        ))
                    }
                };
                let default = f
                    .take("default")
                    .map(|d| scalar_text(&format!("{field}.default"), d))
                    .transpose()?
                    .flatten();
                if kind == ParamType::Password && default.is_some() {
                    return Err(f.err(
                        "default",
                        "a password parameter cannot have a default: it would be stored in the definition in clear; give the value at execute time",
                    ));
                }
                let required = match f.take("required") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => return Err(f.err("required", "must be true or false")),
                };
                let description = f
                    .free_text("description", MAX_DESCRIPTION_CHARS)?
                    .unwrap_or_default();
                f.finish(&["type", "default", "required", "description"])?;
                ParamSpec {
                    kind,
                    default,
                    required,
                    description,
                }
            }
            other => ParamSpec {
                kind: ParamType::String,
                default: scalar_text(&field, other)?,
                required: None,
                description: String::new(),
            },
        };
        out.insert(name.clone(), spec);
    }
    Ok(out)
}

/// A parameter value: strings as they are, numbers and booleans as their text; `None` for null.
pub fn scalar_text(field: &str, v: &Value) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            if s.len() > MAX_TEXT_BYTES {
                return Err(Error::field(field, "is longer than 1 MiB"));
            }
            Ok(Some(s.clone()))
        }
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(Error::field(
            field,
            "must be a string (or a number or boolean, used as text)",
        )),
    }
}

fn check_param_name(field: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name.len() <= 100;
    if ok {
        Ok(())
    } else {
        Err(Error::field(
            field,
            format_args!(
                "'{name}' is not a valid parameter name: use letters, digits, '_', '-' and '.', \
                 starting with a letter or '_' (at most 100)"
            ),
        ))
    }
}

fn parse_step(i: usize, v: &Value) -> Result<Step> {
    let at = format!("steps[{i}]");
    let Some(map) = v.as_object() else {
        return Err(Error::field(&at, "must be an object with name and type"));
    };
    let mut f = Fields::new(map, at.clone());
    let name = f.req_text("name", MAX_STEP_NAME_CHARS)?;
    f.step = Some(name.clone());
    let kind_text = f.req_text("type", 50)?;
    let Some(kind) = StepKind::ALL.into_iter().find(|k| k.as_str() == kind_text) else {
        return Err(f.err(
            "type",
            format_args!(
                "unknown step type '{kind_text}'; the types are {}",
                StepKind::ALL.map(StepKind::as_str).join(", ")
            ),
        ));
    };
    let needs = match f.take("needs") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(items)) => {
            let mut out: Vec<String> = Vec::with_capacity(items.len());
            for (j, item) in items.iter().enumerate() {
                let Some(s) = item.as_str() else {
                    return Err(f.err(&format!("needs[{j}]"), "must be a step name (a string)"));
                };
                if out.iter().any(|o| o == s) {
                    return Err(f.err("needs", format_args!("names '{s}' twice")));
                }
                out.push(s.to_owned());
            }
            Some(out)
        }
        Some(_) => return Err(f.err("needs", "must be a list of step names")),
    };
    let timeout_secs = f.seconds("timeout_secs", true)?;
    let retries = f.uint("retries", MAX_RETRIES)?.unwrap_or(0) as u32;
    let retry_delay_secs = f.seconds("retry_delay_secs", false)?;
    let retry_backoff = match f.take("retry_backoff") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(x) if (1.0..=10.0).contains(&x) => Some(x),
            _ => return Err(f.err("retry_backoff", "must be a number from 1 to 10")),
        },
    };
    let retry_max_delay_secs = f.seconds("retry_max_delay_secs", false)?;
    let on_failure = match f.take("on_failure") {
        None | Some(Value::Null) => OnFailure::Stop,
        Some(Value::String(s)) if s == "stop" => OnFailure::Stop,
        Some(Value::String(s)) if s == "continue" => OnFailure::Continue,
        Some(Value::String(s)) if s == "ask" => OnFailure::Ask,
        Some(other) => {
            return Err(f.err(
                "on_failure",
                format_args!("must be \"stop\", \"continue\" or \"ask\" (got {other})"),
            ))
        }
    };
    let rto_secs = f.seconds("rto_secs", true)?;
    let condition = match f.take("if") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => {
            crate::expr::check(e).map_err(|m| f.err("if", m))?;
            Some(e.clone())
        }
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(other) => {
            return Err(f.err(
                "if",
                format_args!("must be an expression (a string), got {}", kind_of(other)),
            ))
        }
    };
    let action = parse_action(kind, &mut f)?;
    let mut allowed = vec![
        "name",
        "type",
        "needs",
        "timeout_secs",
        "retries",
        "retry_delay_secs",
        "retry_backoff",
        "retry_max_delay_secs",
        "on_failure",
        "rto_secs",
        "if",
    ];
    allowed.extend_from_slice(action_fields(kind));
    f.finish(&allowed)?;
    Ok(Step {
        name,
        action,
        needs,
        timeout_secs,
        retries,
        retry_delay_secs,
        retry_backoff,
        retry_max_delay_secs,
        on_failure,
        rto_secs,
        condition,
    })
}

fn action_fields(kind: StepKind) -> &'static [&'static str] {
    match kind {
        StepKind::Task => &[
            "task",
            "nodes",
            "arguments",
            "env_from_vault",
            "capture",
            "env",
        ],
        StepKind::Workflow => &["workflow", "params"],
        StepKind::Sleep => &["seconds"],
        StepKind::Http => &[
            "method",
            "url",
            "headers",
            "body",
            "expect_status",
            "host_from_params",
        ],
        StepKind::Approval => &["role"],
        StepKind::DbAccess => &["policy", "duration", "minutes"],
    }
}

const HTTP_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

fn parse_action(kind: StepKind, f: &mut Fields<'_>) -> Result<Action> {
    Ok(match kind {
        StepKind::Sleep => Action::Sleep {
            seconds: f
                .seconds("seconds", false)?
                .ok_or_else(|| f.err("seconds", "is required for a sleep step"))?,
        },
        StepKind::Approval => Action::Approval {
            role: f.req_text("role", 200)?,
        },
        StepKind::DbAccess => {
            let policy = match f.take("policy") {
                Some(Value::Number(n)) if n.as_i64().is_some_and(|x| x > 0) => n.to_string(),
                _ => f.req_text("policy", 200)?,
            };
            if policy.contains("${") {
                return Err(f.err(
                    "policy",
                    "must name the policy itself (its policyId or index); parameters are not substituted here",
                ));
            }
            let duration = match (f.take("duration"), f.take("minutes")) {
                (Some(_), Some(_)) => {
                    return Err(f.err("minutes", "give either duration or minutes, not both"))
                }
                (Some(d), None) => parse_duration(d).map_err(|m| f.err("duration", m))?,
                (None, Some(m)) => match m.as_f64().filter(|x| x.is_finite()) {
                    Some(x) => Secs((x * 60_000.0).round().max(0.0) as u64),
                    None => return Err(f.err("minutes", "must be a number of minutes")),
                },
                (None, None) => {
                    return Err(f.err(
                        "duration",
                        "is required for a db_access step: how long the policy stays unlocked (\"90s\", \"15m\", \"1h\", or minutes: N)",
                    ))
                }
            };
            if !(DB_ACCESS_MIN_MS..=DB_ACCESS_MAX_MS).contains(&duration.ms()) {
                let key = if f.map.contains_key("minutes") {
                    "minutes"
                } else {
                    "duration"
                };
                return Err(f.err(
                    key,
                    format_args!("must be from 1 second to 24 hours (got {duration})"),
                ));
            }
            Action::DbAccess(DbAccessAction { policy, duration })
        }
        StepKind::Task => {
            let task = f.req_text("task", 200)?;
            let nodes = f
                .str_list("nodes", MAX_NODES, 200)?
                .ok_or_else(|| f.err("nodes", "is required: the node ids to run the task on"))?;
            if nodes.is_empty() {
                return Err(f.err("nodes", "must name at least one node"));
            }
            for (j, n) in nodes.iter().enumerate() {
                if nodes[..j].contains(n) {
                    return Err(f.err("nodes", format_args!("names node '{n}' twice")));
                }
            }
            let arguments = f
                .str_list("arguments", MAX_ARGUMENTS, 64 * 1024)?
                .unwrap_or_default();
            for (j, a) in arguments.iter().enumerate() {
                if a.contains('\0') {
                    return Err(f.err(&format!("arguments[{j}]"), "must not contain a NUL byte"));
                }
                check_template(f, &format!("arguments[{j}]"), a)?;
            }
            let env_from_vault = parse_env_from_vault(f)?;
            let capture = parse_capture(f)?;
            let env = parse_env(f)?;
            for name in env.keys() {
                if env_from_vault.contains_key(name) {
                    return Err(f.err(
                        &format!("env.{name}"),
                        "is also set by env_from_vault; name each variable once",
                    ));
                }
            }
            Action::Task(TaskAction {
                task,
                nodes,
                arguments,
                env_from_vault,
                capture,
                env,
            })
        }
        StepKind::Workflow => {
            let workflow = match f.take("workflow") {
                Some(Value::Number(n)) if n.as_i64().is_some_and(|x| x > 0) => n.to_string(),
                _ => f.req_text("workflow", MAX_NAME_CHARS)?,
            };
            if workflow.contains("${") {
                return Err(f.err(
                    "workflow",
                    "must name the workflow itself (its id or name); parameters are not substituted here",
                ));
            }
            let params = match f.take("params") {
                None | Some(Value::Null) => BTreeMap::new(),
                Some(Value::Object(o)) => {
                    if o.len() > MAX_PARAMS {
                        return Err(
                            f.err("params", format_args!("at most {MAX_PARAMS} parameters"))
                        );
                    }
                    let mut out = BTreeMap::new();
                    for (k, v) in o {
                        let field = format!("params.{k}");
                        let Some(t) = scalar_text(&f.path(&field), v)? else {
                            continue;
                        };
                        check_template(f, &field, &t)?;
                        out.insert(k.clone(), t);
                    }
                    out
                }
                Some(_) => return Err(f.err(
                    "params",
                    "must be an object: the child workflow's parameter → value (${name} allowed)",
                )),
            };
            Action::Workflow(WorkflowAction { workflow, params })
        }
        StepKind::Http => {
            let method = match f.take("method") {
                None | Some(Value::Null) => "GET".to_owned(),
                Some(Value::String(m)) => {
                    let up = m.to_ascii_uppercase();
                    if !HTTP_METHODS.contains(&up.as_str()) {
                        return Err(f.err(
                            "method",
                            format_args!("'{m}' is not one of {}", HTTP_METHODS.join(", ")),
                        ));
                    }
                    up
                }
                Some(_) => return Err(f.err("method", "must be a string such as \"POST\"")),
            };
            let url = f.req_text("url", MAX_URL_BYTES)?;
            check_template(f, "url", &url)?;
            if !url.contains("${") {
                check_url(&url).map_err(|m| f.err("url", m))?;
            } else if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(f.err("url", "must start with http:// or https://"));
            }
            let host_from_params = match f.take("host_from_params") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(f.err("host_from_params", "must be true or false")),
            };
            if !host_from_params && !host_is_fixed(&url) {
                return Err(f.err(
                    "url",
                    "lets a parameter choose the scheme, host or port: write them out before \
                     the first ${...} (parameters may fill the path, query and fragment), or \
                     set host_from_params: true to let the parameter choose where to connect \
                     (the egress rules still apply)",
                ));
            }
            let headers = match f.take("headers") {
                None | Some(Value::Null) => BTreeMap::new(),
                Some(Value::Object(h)) => {
                    let mut out = BTreeMap::new();
                    for (k, v) in h {
                        let field = format!("headers.{k}");
                        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                            return Err(f.err(&field, "is not a valid header name"));
                        }
                        if k.eq_ignore_ascii_case("idempotency-key") {
                            return Err(f.err(
                                &field,
                                "is set by Haechi itself (<execution_id>/<step>/<attempt>)",
                            ));
                        }
                        let Some(v) = v.as_str() else {
                            return Err(f.err(&field, "must be a string"));
                        };
                        if v.chars().any(|c| c.is_control() && c != '\t') {
                            return Err(f.err(&field, "must not contain control characters"));
                        }
                        check_template(f, &field, v)?;
                        out.insert(k.clone(), v.to_owned());
                    }
                    out
                }
                Some(_) => return Err(f.err("headers", "must be an object of header: value")),
            };
            let body = match f.take("body") {
                None | Some(Value::Null) => None,
                Some(b) => {
                    if serde_json::to_vec(b).map(|v| v.len()).unwrap_or(0) > MAX_TEXT_BYTES {
                        return Err(f.err("body", "is larger than 1 MiB"));
                    }
                    let mut problem = None;
                    visit_strings(b, &mut |s| {
                        if problem.is_none() {
                            if let Err(e) = check_template(f, "body", s) {
                                problem = Some(e);
                            }
                        }
                    });
                    if let Some(e) = problem {
                        return Err(e);
                    }
                    Some(b.clone())
                }
            };
            let expect_status = match f.take("expect_status") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    let items: Vec<&Value> = match v {
                        Value::Array(a) => a.iter().collect(),
                        other => vec![other],
                    };
                    if items.is_empty() {
                        return Err(f.err("expect_status", "must name at least one status"));
                    }
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        match item.as_u64() {
                            Some(s) if (100..=599).contains(&s) => out.push(s as u16),
                            _ => {
                                return Err(f.err(
                                    "expect_status",
                                    "must be an HTTP status from 100 to 599, or a list of them",
                                ))
                            }
                        }
                    }
                    Some(out)
                }
            };
            Action::Http(HttpAction {
                method,
                url,
                headers,
                body,
                expect_status,
                host_from_params,
            })
        }
    })
}

/// A task step's `env`: `{"NAME": "template"}`.
fn parse_env(f: &mut Fields<'_>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(v) = f.take("env").filter(|v| !v.is_null()) else {
        return Ok(out);
    };
    let Some(map) = v.as_object() else {
        return Err(f.err(
            "env",
            "must be an object: NAME → value (\"${param}\" to pass a parameter)",
        ));
    };
    if map.len() > MAX_ENV_FROM_VAULT {
        return Err(f.err(
            "env",
            format_args!("names at most {MAX_ENV_FROM_VAULT} variables"),
        ));
    }
    for (name, t) in map {
        let field = format!("env.{name}");
        check_env_name(f, &field, name)?;
        let Some(t) = t.as_str() else {
            return Err(f.err(
                &field,
                "must be a string (\"${param}\" to pass a parameter)",
            ));
        };
        if t.len() > 64 * 1024 || t.contains('\0') {
            return Err(f.err(&field, "must be at most 64 KiB, without NUL bytes"));
        }
        check_template(f, &field, t)?;
        out.insert(name.clone(), t.to_owned());
    }
    Ok(out)
}

fn check_env_name(f: &Fields<'_>, field: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 100;
    if !valid {
        return Err(f.err(
            field,
            "is not a valid environment variable name (letters, digits and '_', not starting with a digit)",
        ));
    }
    if reserved_env_name(name) {
        return Err(f.err(
            field,
            "is set by the agent itself or changes how programs run (PATH, LD_*, BASH_ENV…); choose another name",
        ));
    }
    Ok(())
}

/// Most `capture` variables of one step.
const MAX_CAPTURES: usize = 50;
/// Longest `capture` regex, bytes.
const MAX_CAPTURE_REGEX: usize = 1000;

/// A task step's `capture`: `{"NAME": "regex with one group"}`.
fn parse_capture(f: &mut Fields<'_>) -> Result<BTreeMap<String, String>> {
    let Some(v) = f.take("capture") else {
        return Ok(BTreeMap::new());
    };
    let Some(map) = v.as_object() else {
        if v.is_null() {
            return Ok(BTreeMap::new());
        }
        return Err(f.err(
            "capture",
            "must be an object: variable name → a regex with one group",
        ));
    };
    if map.len() > MAX_CAPTURES {
        return Err(f.err("capture", format_args!("at most {MAX_CAPTURES} variables")));
    }
    let mut out = BTreeMap::new();
    for (name, re) in map {
        let field = format!("capture.{name}");
        check_param_name(&f.path(&field), name)?;
        let Some(re) = re.as_str() else {
            return Err(f.err(&field, "must be a regex (a string)"));
        };
        if re.len() > MAX_CAPTURE_REGEX {
            return Err(f.err(
                &field,
                format_args!("must be at most {MAX_CAPTURE_REGEX} bytes"),
            ));
        }
        let compiled = regex::RegexBuilder::new(re)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| f.err(&field, format_args!("is not a valid regex: {e}")))?;
        if compiled.captures_len() != 2 {
            return Err(f.err(
                &field,
                format_args!(
                    "must have exactly one group (the value to capture); it has {}",
                    compiled.captures_len() - 1
                ),
            ));
        }
        out.insert(name.clone(), re.to_owned());
    }
    Ok(out)
}

const MAX_ENV_FROM_VAULT: usize = 50;

fn parse_env_from_vault(f: &mut Fields<'_>) -> Result<BTreeMap<String, VaultRef>> {
    let mut out = BTreeMap::new();
    let Some(v) = f.take("env_from_vault") else {
        return Ok(out);
    };
    if v.is_null() {
        return Ok(out);
    }
    let Some(map) = v.as_object() else {
        return Err(f.err(
            "env_from_vault",
            "must be an object: NAME → {\"credentialId\": N, \"attribute\": \"password\"}",
        ));
    };
    if map.len() > MAX_ENV_FROM_VAULT {
        return Err(f.err(
            "env_from_vault",
            format_args!("names at most {MAX_ENV_FROM_VAULT} variables"),
        ));
    }
    for (name, r) in map {
        let field = format!("env_from_vault.{name}");
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= 100;
        if !valid {
            return Err(f.err(
                &field,
                "is not a valid environment variable name (letters, digits and '_', not starting with a digit)",
            ));
        }
        if reserved_env_name(name) {
            return Err(f.err(
                &field,
                "is set by the agent itself or changes how programs run (PATH, LD_*, BASH_ENV…); choose another name",
            ));
        }
        let Some(o) = r.as_object() else {
            return Err(f.err(
                &field,
                "must be {\"credentialId\": N, \"attribute\": \"name\"}",
            ));
        };
        let mut g = Fields::new(o, format!("{}.{field}", f.at));
        g.step = f.step.clone();
        let credential_id = match g.take("credentialId") {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|x| x > 0) => n.as_i64().unwrap_or(0),
            Some(Value::String(s)) if s.parse::<i64>().is_ok_and(|x| x > 0) => {
                s.parse().unwrap_or(0)
            }
            _ => {
                return Err(g.err(
                    "credentialId",
                    "is required: the numeric id of a vault credential",
                ))
            }
        };
        let attribute = g.req_text("attribute", 200)?;
        g.finish(&["credentialId", "attribute"])?;
        out.insert(
            name.clone(),
            VaultRef {
                credential_id,
                attribute,
            },
        );
    }
    Ok(out)
}

/// A duration: a number of seconds, or a string of a number and a unit (`90s`, `15m`, `1.5h`;
/// a bare number in a string is seconds).
fn parse_duration(v: &Value) -> std::result::Result<Secs, String> {
    let bad = || format!("must be a duration such as \"90s\", \"15m\" or \"1h\" (got {v})");
    let (num, unit_ms) = match v {
        Value::Number(n) => (n.as_f64().ok_or_else(bad)?, 1000.0),
        Value::String(s) => {
            let t = s.trim();
            let (n, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
                Some((i, _)) => (&t[..i], &t[i..]),
                None => (t, "s"),
            };
            let unit_ms = match unit {
                "ms" => 1.0,
                "s" | "sec" | "secs" => 1000.0,
                "m" | "min" | "mins" => 60_000.0,
                "h" => 3_600_000.0,
                _ => return Err(bad()),
            };
            (n.trim().parse::<f64>().map_err(|_| bad())?, unit_ms)
        }
        _ => return Err(bad()),
    };
    if !num.is_finite() || num < 0.0 {
        return Err(bad());
    }
    Ok(Secs((num * unit_ms).round() as u64))
}

/// Names the agent sets itself, or that change how programs load or behave (an injected
/// library, a shell start-up file): an `env_from_vault` name may not be one of them.
fn reserved_env_name(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "IFS",
        "ENV",
        "BASH_ENV",
        "CDPATH",
        "PS4",
        "SHELLOPTS",
        "BASHOPTS",
        "GLOBIGNORE",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "PERL5LIB",
        "PERL5OPT",
        "PERLLIB",
        "RUBYLIB",
        "RUBYOPT",
        "NODE_OPTIONS",
        "NODE_PATH",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "LANG",
        "TZ",
        "TMPDIR",
    ];
    let up = name.to_ascii_uppercase();
    EXACT.contains(&up.as_str())
        || up.starts_with("HAECHI_")
        || up.starts_with("LD_")
        || up.starts_with("LC_")
        || up.starts_with("BASH_FUNC_")
        || up.starts_with("DYLD_")
}

/// Checks an absolute http(s) URL.
pub fn check_url(url: &str) -> std::result::Result<reqwest::Url, String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        Ok(_) => Err(format!(
            "'{url}' must be an http:// or https:// URL with a host"
        )),
        Err(e) => Err(format!("'{url}' is not a valid URL ({e})")),
    }
}

/// Does a URL template write its scheme, host and port out in full before anything is
/// substituted, so that no parameter can change where the step connects? (Any `$` counts as
/// the start of a substitution here.)
pub fn host_is_fixed(url: &str) -> bool {
    let literal = url.find('$').map_or(url, |i| &url[..i]);
    if literal.len() == url.len() {
        return true;
    }
    let Some(start) = literal.find("://").map(|i| i + 3) else {
        return false;
    };
    // The authority ends at the first of these; what follows cannot change the host.
    let Some(end) = literal[start..]
        .find(['/', '?', '#', '\\'])
        .map(|i| start + i)
    else {
        return false;
    };
    end > start && check_url(&format!("{}/", &literal[..end])).is_ok()
}

fn visit_strings(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| visit_strings(x, f)),
        Value::Object(o) => o.values().for_each(|x| visit_strings(x, f)),
        _ => {}
    }
}

fn check_template(f: &Fields<'_>, field: &str, text: &str) -> Result<()> {
    template_refs(text).map(|_| ()).map_err(|m| f.err(field, m))
}

/// The parameter names a template refers to. `${name}` is a reference; `$${` is a literal `${`.
pub fn template_refs(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            rest = tail;
            continue;
        }
        if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(
                    "has '${' without a closing '}' (write $${ for a literal ${)".to_owned(),
                );
            };
            let name = &tail[..end];
            if check_param_name("", name).is_err() {
                return Err(format!("'${{{name}}}' does not name a parameter"));
            }
            out.push(name.to_owned());
            rest = &tail[end + 1..];
        } else {
            rest = after;
        }
    }
    Ok(out)
}

/// Replaces each `${name}` in `text` by its value (`$${` stays a literal `${`). Every name
/// was checked to have a value when the execution started.
pub fn substitute(text: &str, params: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
            continue;
        }
        if let Some(tail) = after.strip_prefix('{') {
            if let Some(end) = tail.find('}') {
                let name = &tail[..end];
                match params.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push_str("${");
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &tail[end + 1..];
                continue;
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// [`substitute`] inside every string of a JSON value (keys are left alone).
pub fn substitute_json(v: &Value, params: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(substitute(s, params)),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute_json(x, params)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute_json(x, params)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn check_needs(def: &Definition) -> Result<()> {
    let names: HashMap<&str, usize> = def
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for (i, s) in def.steps.iter().enumerate() {
        for (j, n) in s.needs.iter().flatten().enumerate() {
            if !names.contains_key(n.as_str()) {
                return Err(def.step_error(
                    i,
                    &format!("needs[{j}]"),
                    format_args!("needs '{n}', which is not a step of this workflow"),
                ));
            }
            if *n == s.name {
                return Err(def.step_error(
                    i,
                    &format!("needs[{j}]"),
                    "a step cannot need itself (a cycle)",
                ));
            }
        }
    }
    Ok(())
}

/// Finds a cycle and names it: `steps form a cycle: a → b → c → a`.
fn check_cycles(def: &Definition) -> Result<()> {
    let graph = def.graph();
    let n = def.steps.len();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; n];
    for start in 0..n {
        if state[start] != 0 {
            continue;
        }
        // Iterative DFS: (node, next edge index).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
            if let Some(&next) = graph.needs[node].get(*edge) {
                *edge += 1;
                match state[next] {
                    0 => {
                        state[next] = 1;
                        stack.push((next, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(s, _)| *s == next).unwrap_or(0);
                        // The stack runs from a step to a step it needs; show the order they run.
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(s, _)| *s).collect();
                        cycle.reverse();
                        // Start at the step defined first, so the message is stable.
                        let first = (0..cycle.len()).min_by_key(|k| cycle[*k]).unwrap_or(0);
                        cycle.rotate_left(first);
                        let mut names: Vec<&str> =
                            cycle.iter().map(|s| def.steps[*s].name.as_str()).collect();
                        names.push(names[0]);
                        return Err(Error::field(
                            "steps",
                            format_args!(
                                "the steps form a cycle through 'needs': {}",
                                names.join(" → ")
                            ),
                        ));
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

fn check_param_refs(def: &Definition) -> Result<()> {
    // Variables a task step captures fill `${NAME}` like parameters (in steps that run after
    // it; before, they are empty).
    let mut captured: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (i, s) in def.steps.iter().enumerate() {
        if let Action::Task(t) = &s.action {
            for name in t.capture.keys() {
                if def.params.contains_key(name) {
                    return Err(def.step_error(
                        i,
                        &format!("capture.{name}"),
                        format_args!("'{name}' is already a parameter of the workflow"),
                    ));
                }
                captured.insert(name.as_str());
            }
        }
    }
    for (i, s) in def.steps.iter().enumerate() {
        let mut fields: Vec<(String, &str)> = Vec::new();
        let mut body_strings: Vec<String> = Vec::new();
        // Where a password parameter may go: only a task step's `env` (never stored).
        let mut secret_ok: Vec<String> = Vec::new();
        match &s.action {
            Action::Task(t) => {
                for (j, a) in t.arguments.iter().enumerate() {
                    fields.push((format!("arguments[{j}]"), a));
                }
                for (k, v) in &t.env {
                    fields.push((format!("env.{k}"), v));
                    secret_ok.push(format!("env.{k}"));
                }
            }
            Action::Workflow(w) => {
                for (k, v) in &w.params {
                    fields.push((format!("params.{k}"), v));
                }
            }
            Action::Http(h) => {
                fields.push(("url".to_owned(), &h.url));
                for (k, v) in &h.headers {
                    fields.push((format!("headers.{k}"), v));
                }
                if let Some(b) = &h.body {
                    visit_strings(b, &mut |x| body_strings.push(x.to_owned()));
                }
            }
            _ => {}
        }
        let body = body_strings.iter().map(|b| ("body".to_owned(), b.as_str()));
        for (field, text) in fields.into_iter().chain(body) {
            for name in template_refs(text).unwrap_or_default() {
                if def.params.get(&name).is_some_and(ParamSpec::is_password)
                    && !secret_ok.contains(&field)
                {
                    return Err(def.step_error(
                        i,
                        &field,
                        format_args!(
                            "'${{{name}}}' is a password parameter: it may only reach a task \
                             through a task step's env (arguments, URLs, bodies and child \
                             workflows' params are stored and shown in clear)"
                        ),
                    ));
                }
                if !def.params.contains_key(&name) && !captured.contains(name.as_str()) {
                    let declared = if def.params.is_empty() {
                        "the workflow declares no params".to_owned()
                    } else {
                        format!(
                            "declared: {}",
                            def.params.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    };
                    return Err(def.step_error(
                        i,
                        &field,
                        format_args!(
                            "'${{{name}}}' names no parameter, so neither a default nor an \
                             execute-time value can fill it; declare it under 'params' ({declared})"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The values of an execution's parameters: each given value, else the default; a declared
/// parameter with neither, or a value for an undeclared one, is a 400.
pub fn resolve_params(
    def: &Definition,
    given: &Map<String, Value>,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, v) in given {
        if !def.params.contains_key(name) {
            let declared = if def.params.is_empty() {
                "it takes none".to_owned()
            } else {
                format!(
                    "its parameters are {}",
                    def.params.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(Error::field(
                format!("params.{name}"),
                format_args!("is not a parameter of workflow '{}' ({declared})", def.name),
            ));
        }
        if let Some(text) = scalar_text(&format!("params.{name}"), v)? {
            out.insert(name.clone(), text);
        }
    }
    for (name, spec) in &def.params {
        if out.contains_key(name) {
            continue;
        }
        match &spec.default {
            Some(d) => {
                out.insert(name.clone(), d.clone());
            }
            None if !spec.is_required() => {
                out.insert(name.clone(), String::new());
            }
            None => {
                return Err(Error::field(
                    format!("params.{name}"),
                    format_args!(
                        "is required by workflow '{}' ({})",
                        def.name,
                        if spec.is_password() {
                            "a password parameter, given at execute time"
                        } else {
                            "it has no default"
                        }
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// Typed access to the fields of one object, remembering which were read so the rest can be
/// reported as unknown.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    at: String,
    step: Option<String>,
}

impl<'a> Fields<'a> {
    fn new(map: &'a Map<String, Value>, at: String) -> Self {
        Fields {
            map,
            at,
            step: None,
        }
    }

    fn path(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    fn err(&self, key: &str, message: impl fmt::Display) -> Error {
        match &self.step {
            Some(s) => Error::field(self.path(key), format_args!("step '{s}': {message}")),
            None => Error::field(self.path(key), message),
        }
    }

    fn take(&mut self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// A required one-line text: not blank, no control characters, at most `max` characters.
    fn req_text(&mut self, key: &str, max: usize) -> Result<String> {
        match self.take(key) {
            None | Some(Value::Null) => Err(self.err(key, "is required")),
            Some(Value::String(s)) => {
                if s.trim().is_empty() {
                    return Err(self.err(key, "must not be blank"));
                }
                if s.chars().count() > max {
                    return Err(self.err(key, format_args!("must be at most {max} characters")));
                }
                if s.chars().any(char::is_control) {
                    return Err(self.err(key, "must not contain control characters"));
                }
                Ok(s.clone())
            }
            Some(other) => Err(self.err(
                key,
                format_args!("must be a string (got {})", kind_of(other)),
            )),
        }
    }

    /// Optional free text (line breaks and tabs allowed).
    fn free_text(&mut self, key: &str, max: usize) -> Result<Option<String>> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                if s.chars().count() > max {
                    return Err(self.err(key, format_args!("must be at most {max} characters")));
                }
                if s.chars()
                    .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
                {
                    return Err(self.err(key, "must not contain control characters"));
                }
                Ok(Some(s.clone()))
            }
            Some(other) => Err(self.err(
                key,
                format_args!("must be a string (got {})", kind_of(other)),
            )),
        }
    }

    fn uint(&mut self, key: &str, max: u64) -> Result<Option<u64>> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => Err(self.err(
                    key,
                    format_args!("must be a whole number from 0 to {max} (got {v})"),
                )),
            },
        }
    }

    /// Seconds as a number (fractions to the millisecond); `positive` refuses 0.
    fn seconds(&mut self, key: &str, positive: bool) -> Result<Option<Secs>> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let max = MAX_SECONDS_MS / 1000;
                let bad = || {
                    self.err(
                        key,
                        format_args!(
                            "must be a number of seconds {} {max} (got {v})",
                            if positive {
                                "above 0 and at most"
                            } else {
                                "from 0 to"
                            }
                        ),
                    )
                };
                let x = v.as_f64().filter(|x| x.is_finite()).ok_or_else(bad)?;
                let ms = (x * 1000.0).round();
                if ms < 0.0 || ms > MAX_SECONDS_MS as f64 || (positive && ms < 1.0) {
                    return Err(bad());
                }
                Ok(Some(Secs(ms as u64)))
            }
        }
    }

    fn str_list(
        &mut self,
        key: &str,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Option<Vec<String>>> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => {
                if items.len() > max_items {
                    return Err(self.err(key, format_args!("at most {max_items} items")));
                }
                let mut out = Vec::with_capacity(items.len());
                for (j, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if s.len() <= max_bytes => out.push(s.clone()),
                        Value::String(_) => {
                            return Err(self.err(
                                &format!("{key}[{j}]"),
                                format_args!("is longer than {max_bytes} bytes"),
                            ))
                        }
                        other => {
                            return Err(self.err(
                                &format!("{key}[{j}]"),
                                format_args!("must be a string (got {})", kind_of(other)),
                            ))
                        }
                    }
                }
                Ok(Some(out))
            }
            Some(other) => Err(self.err(
                key,
                format_args!("must be a list of strings (got {})", kind_of(other)),
            )),
        }
    }

    /// Reports the first field not in `allowed`.
    fn finish(self, allowed: &[&str]) -> Result<()> {
        if let Some(k) = self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(self.err(
                k,
                format_args!("unknown field; the fields here are {}", allowed.join(", ")),
            ));
        }
        Ok(())
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        parse(&v).unwrap_err().message
    }

    #[test]
    fn password_params_round_trip_and_stay_out_of_stored_text() {
        let v = json!({"name": "n", "group": "g",
            "params": {"pw": {"type": "password"}, "opt": {"type": "password", "required": false},
                       "site": {"type": "string", "default": "a"}},
            "steps": [{"name": "t", "type": "task", "task": "x", "nodes": ["n1"],
                       "arguments": ["${site}"], "env": {"PGPASSWORD": "${pw}"}}]});
        let d = parse(&v).unwrap();
        assert_eq!(d.password_params().collect::<Vec<_>>(), ["opt", "pw"]);
        assert!(d.params["pw"].is_required() && !d.params["opt"].is_required());
        // The stored form parses back to the same definition (restores go through it).
        let again = parse(&serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(again, d);
        let given = json!({"pw": "s"});
        let r = resolve_params(&d, given.as_object().unwrap()).unwrap();
        assert_eq!(r["opt"], "");
        let e = resolve_params(&d, &Map::new()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("params.pw"));
        for (field, step) in [
            ("arguments[0]", json!({"arguments": ["${pw}"]})),
            ("env.LD_PRELOAD", json!({"env": {"LD_PRELOAD": "x"}})),
        ] {
            let mut bad = v.clone();
            for (k, x) in step.as_object().unwrap() {
                bad["steps"][0][k] = x.clone();
            }
            assert!(
                err(bad).starts_with(&format!("steps[0].{field}")),
                "{field}"
            );
        }
    }

    #[test]
    fn workflow_steps_and_schedules_are_checked() {
        let v = json!({"name": "n", "group": "g", "params": {"site": null},
            "schedules": [{"cron": "*/2 * * * * *", "timezone": "Asia/Seoul", "params": {"site": "a"}}],
            "steps": [{"name": "w", "type": "workflow", "workflow": 7, "params": {"who": "${site}"}}]});
        let d = parse(&v).unwrap();
        assert_eq!(d.workflow_refs(), vec![(0, "7")]);
        assert_eq!(parse(&serde_json::to_value(&d).unwrap()).unwrap(), d);
        let mut bad = v.clone();
        bad["steps"][0]["params"] = json!({"who": "${nope}"});
        assert!(err(bad).starts_with("steps[0].params.who"));
        let mut bad = v.clone();
        bad["schedules"][0]["cron"] = json!("61 * * * *");
        assert!(err(bad).starts_with("schedules[0].cron"));
        let mut bad = v.clone();
        bad["schedules"][0]["timezone"] = json!("Nowhere/Else");
        assert!(err(bad).starts_with("schedules[0].timezone"));
        let mut bad = v;
        bad["schedules"][0]["params"] = json!({});
        assert!(err(bad).starts_with("schedules[0].params.site"));
    }

    fn db_step(extra: Value) -> Value {
        let mut step = json!({"name": "open", "type": "db_access", "policy": "P1"});
        for (k, v) in extra.as_object().unwrap() {
            step[k] = v.clone();
        }
        json!({"name": "w", "group": "g", "steps": [step]})
    }

    #[test]
    fn db_access_durations() {
        for (given, ms) in [
            (json!({"duration": "90s"}), 90_000),
            (json!({"duration": "15m"}), 900_000),
            (json!({"duration": "1.5h"}), 5_400_000),
            (json!({"duration": "1500ms"}), 1_500),
            (json!({"duration": 30}), 30_000),
            (json!({"duration": " 2 m "}), 120_000),
            (json!({"minutes": 2.5}), 150_000),
        ] {
            let def = parse(&db_step(given.clone())).unwrap();
            let Action::DbAccess(d) = &def.steps[0].action else {
                panic!("{given}")
            };
            assert_eq!(d.duration, Secs(ms), "{given}");
            // Stored and read back unchanged.
            let text = serde_json::to_string(&def).unwrap();
            let back: Definition = serde_json::from_str(&text).unwrap();
            assert_eq!(back, def);
        }
        for (given, says) in [
            (json!({}), "is required"),
            (json!({"duration": "0s"}), "from 1 second to 24 hours"),
            (json!({"duration": "999ms"}), "from 1 second to 24 hours"),
            (json!({"duration": "24.1h"}), "from 1 second to 24 hours"),
            (json!({"duration": "1d"}), "must be a duration"),
            (json!({"duration": "-1m"}), "must be a duration"),
            (json!({"duration": [1]}), "must be a duration"),
            (json!({"minutes": 1, "duration": "1m"}), "not both"),
        ] {
            let m = err(db_step(given.clone()));
            assert!(m.contains(says), "{given}: {m}");
        }
    }

    #[test]
    fn env_names_that_change_how_programs_run_are_refused() {
        for name in [
            "LD_PRELOAD",
            "ld_library_path",
            "PATH",
            "BASH_ENV",
            "PYTHONPATH",
            "HAECHI_X",
            "LC_ALL",
            "IFS",
        ] {
            assert!(reserved_env_name(name), "{name}");
        }
        for name in ["PGPASSWORD", "DB_PASSWORD", "API_TOKEN", "MYPATH"] {
            assert!(!reserved_env_name(name), "{name}");
        }
    }

    #[test]
    fn parameters_choose_the_host_only_when_the_definition_says_so() {
        for fixed in [
            "https://api.example/x",
            "https://api.example/${p}",
            "https://api.example:8443/v1?q=${p}",
            "http://10.0.0.1#${p}",
            "https://api.example\\${p}",
        ] {
            assert!(host_is_fixed(fixed), "{fixed}");
        }
        for open in [
            "${url}",
            "https://${host}/x",
            "https://api.example${p}/x",
            "https://api.example:${port}/x",
            "http${s}://api.example/x",
            "https://user:${pw}@api.example/x",
        ] {
            assert!(!host_is_fixed(open), "{open}");
        }
        let wf = |url: &str, extra: Value| {
            let mut step = json!({"name": "a", "type": "http", "url": url});
            step.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse(&json!({"name": "w", "group": "g", "params": {"host": "h"}, "steps": [step]}))
        };
        let e = wf("https://${host}/x", json!({})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[0].url"), "{e:?}");
        assert!(e.message.contains("host_from_params"), "{}", e.message);
        let def = wf("https://${host}/x", json!({"host_from_params": true})).unwrap();
        match &def.steps[0].action {
            Action::Http(h) => assert!(h.host_from_params),
            other => panic!("{other:?}"),
        }
        assert!(wf("https://h/${host}", json!({"host_from_params": "yes"})).is_err());
    }

    #[test]
    fn plain_list_runs_in_order() {
        let def = parse(&json!({"name": "w", "group": "g", "steps": [
            {"name": "a", "type": "sleep", "seconds": 0},
            {"name": "b", "type": "sleep", "seconds": 0.5},
            {"name": "c", "type": "sleep", "seconds": 1, "needs": []},
        ]}))
        .unwrap();
        let g = def.graph();
        assert_eq!(g.needs, vec![vec![], vec![0], vec![]]);
        assert_eq!(def.steps[1].action, Action::Sleep { seconds: Secs(500) });
    }

    #[test]
    fn round_trips_through_json() {
        let def = parse(&json!({"name": "w", "group": "g", "params": {"p": "x", "q": null},
            "steps": [
            {"name": "a", "type": "http", "url": "https://x.example/${p}", "body": {"k": "${q}"},
             "retries": 2, "retry_delay_secs": 0.5, "on_failure": "continue"},
            {"name": "b", "type": "task", "task": "t", "nodes": ["n1"], "arguments": ["${p}", "a b"]},
            {"name": "c", "type": "approval", "role": "Task Approver", "timeout_secs": 60},
        ]}))
        .unwrap();
        let text = serde_json::to_string(&def).unwrap();
        let back: Definition = serde_json::from_str(&text).unwrap();
        assert_eq!(back, def);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["steps"][0]["retry_delay_secs"], json!(0.5));
        assert_eq!(v["steps"][2]["timeout_secs"], json!(60));
        assert!(v["steps"][1].get("retries").is_none());
    }

    #[test]
    fn names_each_problem() {
        let base = |steps: Value| json!({"name": "w", "group": "g", "steps": steps});
        assert!(err(base(json!([{"name": "a", "type": "sleep", "seconds": 1}, {"name": "a", "type": "sleep", "seconds": 1}])))
            .contains("steps[1].name: 'a' is already the name of steps[0]"));
        assert!(err(base(
            json!([{"name": "a", "type": "sleep", "seconds": 1, "needs": ["zz"]}])
        ))
        .contains("needs 'zz', which is not a step"));
        let cycle = err(base(json!([
            {"name": "a", "type": "sleep", "seconds": 1, "needs": ["c"]},
            {"name": "b", "type": "sleep", "seconds": 1},
            {"name": "c", "type": "sleep", "seconds": 1}])));
        assert!(
            cycle.contains("cycle") && cycle.contains("a → b → c → a"),
            "{cycle}"
        );
        assert!(
            err(base(json!([{"name": "a", "type": "nap", "seconds": 1}])))
                .contains("unknown step type 'nap'")
        );
        assert!(err(base(
            json!([{"name": "a", "type": "sleep", "seconds": 1, "secnds": 2}])
        ))
        .contains("steps[0].secnds: step 'a': unknown field"));
        assert!(err(base(
            json!([{"name": "a", "type": "http", "url": "https://h/${nope}"}])
        ))
        .contains("'${nope}' names no parameter"));
        assert!(
            err(base(json!([{"name": "a", "type": "sleep", "seconds": -1}])))
                .contains("steps[0].seconds")
        );
        assert!(err(base(
            json!([{"name": "a", "type": "sleep", "seconds": 1, "retries": 1.5}])
        ))
        .contains("retries"));
        assert!(err(base(
            json!([{"name": "a", "type": "sleep", "seconds": 1, "on_failure": "explode"}])
        ))
        .contains("on_failure"));
        assert!(err(base(json!([]))).contains("at least one step"));
        assert!(err(json!({"group": "g", "steps": []})).contains("name: is required"));
        assert!(err(json!({"name": "12", "group": "g", "steps": []})).contains("only digits"));
        assert!(err(base(
            json!([{"name": "a", "type": "http", "url": "ftp://x"}])
        ))
        .contains("http"));
        assert!(err(base(
            json!([{"name": "a", "type": "task", "task": "t", "nodes": []}])
        ))
        .contains("at least one node"));
    }

    #[test]
    fn substitutes_whole_strings() {
        let mut p = BTreeMap::new();
        p.insert("a".to_owned(), "x; rm -rf /".to_owned());
        assert_eq!(substitute("pre-${a}-post", &p), "pre-x; rm -rf /-post");
        assert_eq!(substitute("$${a} $5 ${a}", &p), "${a} $5 x; rm -rf /");
        assert_eq!(template_refs("${a}${b}").unwrap(), vec!["a", "b"]);
        assert!(template_refs("${a").is_err());
        assert!(template_refs("${ a }").is_err());
    }

    #[test]
    fn params_resolve() {
        let def = parse(
            &json!({"name": "w", "group": "g", "params": {"a": "1", "b": null, "c": {"default": 3}},
            "steps": [{"name": "s", "type": "sleep", "seconds": 0}]}),
        )
        .unwrap();
        let given = json!({"b": "B"});
        let p = resolve_params(&def, given.as_object().unwrap()).unwrap();
        assert_eq!(p["a"], "1");
        assert_eq!(p["b"], "B");
        assert_eq!(p["c"], "3");
        let missing = resolve_params(&def, &Map::new()).unwrap_err();
        assert!(missing.message.contains("params.b"));
        let unknown =
            resolve_params(&def, json!({"b": "x", "z": 1}).as_object().unwrap()).unwrap_err();
        assert!(unknown.message.contains("params.z"));
    }

    #[test]
    fn yaml_is_accepted() {
        let v = yaml_to_value(
            b"name: w\ngroup: DR\nsteps:\n  - name: a\n    type: sleep\n    seconds: 1\n",
        )
        .unwrap();
        let def = parse(&v).unwrap();
        assert_eq!(def.group, "DR");
        assert!(yaml_to_value(b"name: [").is_err());
    }
}
