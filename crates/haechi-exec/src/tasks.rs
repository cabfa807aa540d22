//! Tasks: definitions with revisions (every edit is a new revision; old ones stay readable),
//! approval `N → Q → A | R` (an edit resets it to `N`), flags, chains, schedules, timeouts.

use haechi_identity::Caller;
use haechi_store::{in_tx, read, Listed, Paging};
use haechi_types::{time::now_ms, Error, Result};

use crate::groups::{check_attributes, TaskTargets};
use crate::model::{exec_flag, stored, ApprovalStatus, Task, TaskFilter};
use crate::nodes::check_id;
use crate::windows::RunWindow;
use crate::Exec;
use haechi_store::{list_page, Arg, Where};

/// A task definition (`POST /api/v1/tasks`, `PUT /api/v1/tasks/{id}`). On `PUT`, an absent
/// field keeps the previous revision's value.
#[derive(Debug, Clone, Default)]
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
    pub schedule_tz: Option<String>,
    /// Task to start when an instance of this one ends with every node `S` (`""` for none).
    pub next_task_id: Option<String>,
    /// Seconds before the agent kills the script (0 = none).
    pub timeout_secs: Option<u64>,
    /// Nodes scheduled runs go to.
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

/// `POST /api/v1/tasks/{id}/approval` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalAction {
    /// The developer asks for approval (`N`/`R` → `Q`).
    Request,
    /// An approver approves (`Q` → `A`).
    Approve,
    /// An approver rejects (`Q` → `R`).
    Reject,
}

#[derive(sqlx::FromRow)]
pub(crate) struct TaskRow {
    pub id: String,
    pub owner_user_id: String,
    pub revision_no: i64,
    pub apprv_status: String,
    pub apprv_user_id: String,
    pub apprv_requested_by: String,
    pub apprv_comment: String,
    pub apprv_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub script_name: String,
    pub script: String,
    pub os_user: String,
    pub exec_ondemand: String,
    pub exec_scheduler: String,
    pub exec_task: String,
    pub schedule: Option<String>,
    pub schedule_tz: Option<String>,
    pub next_task_id: String,
    pub timeout_secs: i64,
    pub target_nodes: String,
    pub arguments: String,
    pub description: String,
    pub revision_created_by: String,
    pub revision_created_at: i64,
    pub target_groups: String,
    pub target_labels: String,
    pub run_windows: String,
    pub runner_groups: String,
}

pub(crate) const TASK_COLUMNS: &str = "t.id, t.owner_user_id, r.revision_no, t.apprv_status, t.apprv_user_id, \
     t.apprv_requested_by, t.apprv_comment, t.apprv_at, t.created_at, t.updated_at, r.script_name, r.script, r.os_user, \
     r.exec_ondemand, r.exec_scheduler, r.exec_task, r.schedule, r.schedule_tz, r.next_task_id, r.timeout_secs, \
     r.target_nodes, r.arguments, r.description, r.created_by AS revision_created_by, r.created_at AS revision_created_at, \
     r.target_groups, r.target_labels, r.run_windows, r.runner_groups";

/// The task and its revisions, joined (append conditions to the `ON` clause or a `WHERE`).
pub(crate) fn task_select() -> String {
    format!("SELECT {TASK_COLUMNS} FROM tasks t JOIN task_revisions r ON r.task_id = t.id")
}

impl TryFrom<TaskRow> for Task {
    type Error = Error;

    fn try_from(r: TaskRow) -> Result<Task> {
        let target_node_ids: Vec<String> =
            serde_json::from_str(&r.target_nodes).unwrap_or_default();
        Ok(Task {
            targets: TaskTargets {
                nodes: target_node_ids.clone(),
                node_groups: serde_json::from_str(&r.target_groups).unwrap_or_default(),
                labels: serde_json::from_str(&r.target_labels).unwrap_or_default(),
            },
            run_windows: serde_json::from_str(&r.run_windows).unwrap_or_default(),
            runner_groups: serde_json::from_str(&r.runner_groups).unwrap_or_default(),
            id: r.id,
            revision_no: r.revision_no,
            owner_user_id: r.owner_user_id,
            script_name: r.script_name,
            script: r.script,
            os_user: r.os_user,
            exec_ondemand: stored(
                "task_revisions.exec_ondemand",
                &r.exec_ondemand,
                exec_flag::from_code,
            )?,
            exec_scheduler: stored(
                "task_revisions.exec_scheduler",
                &r.exec_scheduler,
                exec_flag::from_code,
            )?,
            exec_task: stored(
                "task_revisions.exec_task",
                &r.exec_task,
                exec_flag::from_code,
            )?,
            schedule: r.schedule,
            schedule_tz: r.schedule_tz,
            next_task_id: r.next_task_id,
            timeout_secs: r.timeout_secs,
            target_node_ids,
            arguments: serde_json::from_str(&r.arguments).unwrap_or_default(),
            description: r.description,
            apprv_status: stored(
                "tasks.apprv_status",
                &r.apprv_status,
                ApprovalStatus::from_code,
            )?,
            apprv_user_id: r.apprv_user_id,
            apprv_requested_by: r.apprv_requested_by,
            apprv_comment: r.apprv_comment,
            apprv_at: r.apprv_at,
            revision_created_by: r.revision_created_by,
            revision_created_at: r.revision_created_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// An `exec*` switch given as its code (`E`/`D`), or the previous value when absent.
fn flag(field: &str, v: Option<String>, previous: bool) -> Result<bool> {
    match v.as_deref() {
        None => Ok(previous),
        Some(code) => exec_flag::from_code(code).ok_or_else(|| {
            Error::field(field, format_args!("must be \"E\" or \"D\", not {code:?}"))
        }),
    }
}

/// A validated definition, ready to store as a revision.
struct Revision {
    script_name: String,
    script: String,
    os_user: String,
    exec_ondemand: bool,
    exec_scheduler: bool,
    exec_task: bool,
    schedule: Option<String>,
    schedule_tz: Option<String>,
    next_task_id: String,
    timeout_secs: i64,
    target_nodes: Vec<String>,
    arguments: Vec<String>,
    description: String,
    target_groups: Vec<String>,
    target_labels: std::collections::BTreeMap<String, String>,
    run_windows: Vec<RunWindow>,
    runner_groups: Vec<String>,
}

/// A list of names (groups): each an id, none twice, at most `max`.
fn check_names(field: &str, names: &[String], max: usize) -> Result<()> {
    if names.len() > max {
        return Err(Error::field(field, format_args!("at most {max} entries")));
    }
    for (i, n) in names.iter().enumerate() {
        check_id(&format!("{field}[{i}]"), n)?;
        if names[..i].contains(n) {
            return Err(Error::field(field, format_args!("lists '{n}' twice")));
        }
    }
    Ok(())
}

/// A field a revision must have: given now, or kept from the previous revision.
fn required(field: &str, v: Option<String>, prev: Option<&String>) -> Result<String> {
    match (v, prev) {
        (Some(v), _) => Ok(v),
        (None, Some(p)) => Ok(p.clone()),
        (None, None) => Err(Error::field(field, "is required")),
    }
}

/// An optional text field: blank clears it, absent keeps the previous revision's.
fn cleared_or_kept(v: Option<String>, prev: Option<&String>) -> Option<String> {
    match v {
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(s.trim().to_owned()),
        None => prev.cloned(),
    }
}

fn check_script_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 255 {
        return Err(Error::field(
            "scriptName",
            "must be 1 to 255 characters long",
        ));
    }
    haechi_types::ident::check_no_control("scriptName", name)
}

fn check_script(script: &str) -> Result<()> {
    if script.trim().is_empty() {
        return Err(Error::field("script", "must not be empty"));
    }
    if script.len() > 1024 * 1024 {
        return Err(Error::field("script", "must be at most 1 MiB"));
    }
    Ok(())
}

/// An OS user name the agent can pass to the system as it is: no option-like leading `-`.
fn check_os_user(user: &str) -> Result<()> {
    let ok = !user.is_empty()
        && user.len() <= 64
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '$'));
    if ok {
        Ok(())
    } else {
        Err(Error::field(
            "osUser",
            format_args!("{user:?} is not an OS user name"),
        ))
    }
}

/// A revision's default targets: `targets` (whose nodes may instead come in the older
/// `targetNodeIds`, but not differently in both), or, when neither is given, the previous
/// revision's.
fn targets_of(
    targets: Option<TaskTargets>,
    node_ids: Option<Vec<String>>,
    base: Option<&Task>,
) -> Result<TaskTargets> {
    if let (Some(t), Some(n)) = (&targets, &node_ids) {
        if !t.nodes.is_empty() && &t.nodes != n {
            return Err(Error::field(
                "targets.nodes",
                "differs from targetNodeIds: give the nodes in one of the two",
            ));
        }
    }
    let targets = match targets {
        Some(t) => TaskTargets {
            nodes: if t.nodes.is_empty() {
                node_ids.unwrap_or_default()
            } else {
                t.nodes
            },
            node_groups: t.node_groups,
            labels: t.labels,
        },
        None => TaskTargets {
            nodes: node_ids
                .unwrap_or_else(|| base.map(|b| b.target_node_ids.clone()).unwrap_or_default()),
            node_groups: base
                .map(|b| b.targets.node_groups.clone())
                .unwrap_or_default(),
            labels: base.map(|b| b.targets.labels.clone()).unwrap_or_default(),
        },
    };
    check_names("targets.nodeGroups", &targets.node_groups, 1000)?;
    check_attributes("targets.labels", &targets.labels)?;
    Ok(targets)
}

/// The target nodes: valid ids, none twice.
fn check_target_nodes(nodes: &[String]) -> Result<()> {
    for (i, n) in nodes.iter().enumerate() {
        check_id(&format!("targetNodeIds[{i}]"), n)?;
    }
    let mut dedup = nodes.to_vec();
    dedup.sort();
    dedup.dedup();
    if dedup.len() != nodes.len() {
        return Err(Error::field("targetNodeIds", "lists a node twice"));
    }
    Ok(())
}

impl Exec {
    /// Applies `spec` over `base` (the previous revision, or defaults) and validates the result.
    fn revision(&self, task_id: &str, spec: TaskSpec, base: Option<&Task>) -> Result<Revision> {
        let script_name = required("scriptName", spec.script_name, base.map(|b| &b.script_name))?;
        check_script_name(&script_name)?;
        let script = required("script", spec.script, base.map(|b| &b.script))?;
        check_script(&script)?;
        let os_user = required("osUser", spec.os_user, base.map(|b| &b.os_user))?;
        check_os_user(&os_user)?;
        let exec_ondemand = flag(
            "execOndemand",
            spec.exec_ondemand,
            base.is_none_or(|b| b.exec_ondemand),
        )?;
        let exec_scheduler = flag(
            "execScheduler",
            spec.exec_scheduler,
            base.is_some_and(|b| b.exec_scheduler),
        )?;
        let exec_task = flag(
            "execTask",
            spec.exec_task,
            base.is_some_and(|b| b.exec_task),
        )?;
        let schedule = cleared_or_kept(spec.schedule, base.and_then(|b| b.schedule.as_ref()));
        let schedule_tz =
            cleared_or_kept(spec.schedule_tz, base.and_then(|b| b.schedule_tz.as_ref()));
        self.check_schedule(schedule.as_deref(), schedule_tz.as_deref())?;
        let next_task_id = spec
            .next_task_id
            .unwrap_or_else(|| base.map(|b| b.next_task_id.clone()).unwrap_or_default());
        if !next_task_id.is_empty() {
            check_id("nextTaskId", &next_task_id)?;
            if next_task_id == task_id {
                return Err(Error::field("nextTaskId", "a task cannot chain to itself"));
            }
        }
        let timeout_secs = match spec.timeout_secs {
            Some(t) => t,
            None => base
                .map(|b| b.timeout_secs as u64)
                .unwrap_or(self.cfg.tasks.default_timeout_secs),
        };
        if timeout_secs > 30 * 24 * 3600 {
            return Err(Error::field(
                "timeoutSecs",
                "must be at most 2592000 (30 days); 0 means no timeout",
            ));
        }
        let TaskTargets {
            nodes: target_nodes,
            node_groups: target_groups,
            labels: target_labels,
        } = targets_of(spec.targets, spec.target_node_ids, base)?;
        let run_windows = match spec.run_windows {
            Some(w) => crate::windows::validate("runWindows", &w, self.cfg.utc_offset_secs)?,
            None => base.map(|b| b.run_windows.clone()).unwrap_or_default(),
        };
        let runner_groups = spec
            .runner_groups
            .unwrap_or_else(|| base.map(|b| b.runner_groups.clone()).unwrap_or_default());
        check_names("runnerGroups", &runner_groups, 100)?;
        check_target_nodes(&target_nodes)?;
        let arguments = spec
            .arguments
            .unwrap_or_else(|| base.map(|b| b.arguments.clone()).unwrap_or_default());
        check_arguments("arguments", &arguments)?;
        if schedule.is_some()
            && exec_scheduler
            && target_nodes.is_empty()
            && target_groups.is_empty()
            && target_labels.is_empty()
        {
            return Err(Error::field(
                "targets",
                "a scheduled task (execScheduler E) needs the nodes to run on (targets or targetNodeIds)",
            ));
        }
        let description = spec
            .description
            .unwrap_or_else(|| base.map(|b| b.description.clone()).unwrap_or_default());
        Ok(Revision {
            script_name,
            script,
            os_user,
            exec_ondemand,
            exec_scheduler,
            exec_task,
            schedule,
            schedule_tz,
            next_task_id,
            timeout_secs: timeout_secs as i64,
            target_nodes,
            arguments,
            description,
            target_groups,
            target_labels,
            run_windows,
            runner_groups,
        })
    }

    /// A schedule parses (with seconds only when `tasks.schedule_seconds`), in a zone that exists.
    fn check_schedule(&self, schedule: Option<&str>, tz: Option<&str>) -> Result<()> {
        if let Some(tz) = tz {
            crate::scheduler::zone(tz, self.cfg.utc_offset_secs)
                .map_err(|e| Error::field("scheduleTz", e))?;
        }
        if let Some(s) = schedule {
            crate::scheduler::parse(s, self.cfg.tasks.schedule_seconds)
                .map_err(|e| Error::field("schedule", e))?;
        }
        Ok(())
    }

    async fn insert_revision(
        tx: &mut haechi_store::Tx,
        task_id: &str,
        no: i64,
        r: &Revision,
        by: &str,
        now: i64,
    ) -> Result<()> {
        let targets = serde_json::to_string(&r.target_nodes)?;
        let args = serde_json::to_string(&r.arguments)?;
        in_tx!(tx, |c| {
            sqlx::query(
            "INSERT INTO task_revisions (task_id, revision_no, script_name, script, os_user, exec_ondemand, exec_scheduler, \
             exec_task, schedule, schedule_tz, next_task_id, timeout_secs, target_nodes, arguments, description, created_by, \
             created_at, target_groups, target_labels, run_windows, runner_groups) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
        )
        .bind(task_id)
        .bind(no)
        .bind(&r.script_name)
        .bind(&r.script)
        .bind(&r.os_user)
        .bind(exec_flag::as_code(r.exec_ondemand))
        .bind(exec_flag::as_code(r.exec_scheduler))
        .bind(exec_flag::as_code(r.exec_task))
        .bind(&r.schedule)
        .bind(&r.schedule_tz)
        .bind(&r.next_task_id)
        .bind(r.timeout_secs)
        .bind(&targets)
        .bind(&args)
        .bind(&r.description)
        .bind(by)
        .bind(now)
        .bind(serde_json::to_string(&r.target_groups).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&r.target_labels).unwrap_or_else(|_| "{}".into()))
        .bind(serde_json::to_string(&r.run_windows).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&r.runner_groups).unwrap_or_else(|_| "[]".into()))
        .execute(&mut *c)
        .await
        .map(|_| ())
        })?;
        in_tx!(tx, |c| sqlx::query(
            "DELETE FROM task_targets WHERE task_id = $1"
        )
        .bind(task_id)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        for n in &r.target_nodes {
            in_tx!(tx, |c| sqlx::query(
                "INSERT INTO task_targets (task_id, node_id) VALUES ($1, $2)"
            )
            .bind(task_id)
            .bind(n)
            .execute(&mut *c)
            .await
            .map(|_| ()))?;
        }
        Ok(())
    }

    /// The node groups and user groups a revision names exist.
    async fn check_groups_exist(tx: &mut haechi_store::Tx, r: &Revision) -> Result<()> {
        for g in &r.target_groups {
            let found: Option<String> = in_tx!(tx, |c| sqlx::query_scalar(
                "SELECT name FROM node_groups WHERE name = $1"
            )
            .bind(g)
            .fetch_optional(&mut *c)
            .await)?;
            if found.is_none() {
                return Err(Error::field(
                    "targets.nodeGroups",
                    format_args!(
                        "node group '{g}' does not exist (GET /api/v1/node-groups lists them)"
                    ),
                ));
            }
        }
        for g in &r.runner_groups {
            let found: Option<String> = in_tx!(tx, |c| sqlx::query_scalar(
                "SELECT name FROM user_groups WHERE name = $1"
            )
            .bind(g)
            .fetch_optional(&mut *c)
            .await)?;
            if found.is_none() {
                return Err(Error::field(
                    "runnerGroups",
                    format_args!(
                        "user group '{g}' does not exist (GET /api/v1/user-groups lists them)"
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn check_next_task_exists(tx: &mut haechi_store::Tx, next: &str) -> Result<()> {
        if next.is_empty() {
            return Ok(());
        }
        let found: Option<String> = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT id FROM tasks WHERE id = $1"
        )
        .bind(next)
        .fetch_optional(&mut *c)
        .await)?;
        if found.is_none() {
            return Err(Error::field(
                "nextTaskId",
                format_args!("task '{next}' does not exist"),
            ));
        }
        Ok(())
    }

    /// Creates a task at revision 1, approval `N`, owned by `actor`.
    pub async fn create_task(&self, caller: &Caller, spec: TaskSpec) -> Result<Task> {
        let actor = &caller.actor;
        let id = spec
            .id
            .clone()
            .ok_or_else(|| Error::field("id", "is required"))?;
        check_id("id", &id)?;
        let rev = self.revision(&id, spec, None)?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        Self::check_next_task_exists(&mut tx, &rev.next_task_id).await?;
        Self::check_groups_exist(&mut tx, &rev).await?;
        let inserted = in_tx!(tx, |c| {
            sqlx::query(
            "INSERT INTO tasks (id, owner_user_id, revision_no, apprv_status, created_at, updated_at) \
             VALUES ($1, $2, 1, 'N', $3, $3) ON CONFLICT (id) DO NOTHING"
        )
        .bind(&id)
        .bind(&actor.user_id)
        .bind(now)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        })?;
        if inserted == 0 {
            return Err(Error::conflict(format!(
                "task '{id}' already exists; change it with PUT /api/v1/tasks/{id}"
            )));
        }
        Self::insert_revision(&mut tx, &id, 1, &rev, &actor.user_id, now).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("task.create")
                .target(id.clone())
                .detail(serde_json::json!({ "revisionNo": 1 })),
        )
        .await?;
        tx.commit().await?;
        self.get_task(&id).await
    }

    /// Makes a new revision of a task; its approval goes back to `N`.
    pub async fn update_task(&self, caller: &Caller, id: &str, spec: TaskSpec) -> Result<Task> {
        let actor = &caller.actor;
        if let Some(body_id) = &spec.id {
            if body_id != id {
                return Err(Error::field(
                    "id",
                    format_args!("the body names task '{body_id}' but the path names '{id}'"),
                ));
            }
        }
        let current = self.get_task(id).await?;
        let rev = self.revision(id, spec, Some(&current))?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        // Concurrent edits and approvals of one task serialize on its row.
        tx.lock_row("tasks", "id", id).await?;
        let latest: Option<i64> = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT revision_no FROM tasks WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(&mut *c)
        .await)?;
        let latest = latest.ok_or_else(|| Error::not_found(format_args!("task '{id}'")))?;
        Self::check_next_task_exists(&mut tx, &rev.next_task_id).await?;
        Self::check_groups_exist(&mut tx, &rev).await?;
        let no = latest + 1;
        Self::insert_revision(&mut tx, id, no, &rev, &actor.user_id, now).await?;
        in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE tasks SET revision_no = $2, apprv_status = 'N', apprv_user_id = '', apprv_requested_by = '', \
             apprv_comment = '', apprv_at = NULL, updated_at = $3 WHERE id = $1"
        )
        .bind(id)
        .bind(no)
        .bind(now)
        .execute(&mut *c)
        .await
        .map(|_| ())
        })?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("task.update")
                .target(id)
                .detail(serde_json::json!({ "revisionNo": no })),
        )
        .await?;
        tx.commit().await?;
        self.get_task(id).await
    }

    /// The task at its current revision.
    pub async fn get_task(&self, id: &str) -> Result<Task> {
        let sql = format!(
            "{} AND r.revision_no = t.revision_no WHERE t.id = $1",
            task_select()
        );
        let row: Option<TaskRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(db)
            .await)?;
        row.map(Task::try_from)
            .ok_or_else(|| Error::not_found(format_args!("task '{id}'")))?
    }

    /// The task as it was at revision `no` (approval fields are the task's current ones).
    pub async fn get_task_revision(&self, id: &str, no: i64) -> Result<Task> {
        let sql = format!("{} AND r.revision_no = $2 WHERE t.id = $1", task_select());
        let row: Option<TaskRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(id)
            .bind(no)
            .fetch_optional(db)
            .await)?;
        match row {
            Some(r) => r.try_into(),
            None => {
                self.get_task(id).await?;
                Err(Error::not_found(format_args!(
                    "revision {no} of task '{id}'"
                )))
            }
        }
    }

    /// The newest revision of task `id` that an approver approved, if any (each revision keeps
    /// its approval since migration 0011).
    pub async fn last_approved_revision(&self, id: &str) -> Result<Option<i64>> {
        let newest: Option<i64> = read!(self.store, |db| {
            sqlx::query_scalar(
            "SELECT MAX(revision_no) FROM task_revisions WHERE task_id = $1 AND approved_at IS NOT NULL"
        )
        .bind(id)
        .fetch_one(db)
        .await
        })?;
        Ok(newest)
    }

    /// Every revision of a task, newest first.
    pub async fn list_task_revisions(&self, id: &str) -> Result<Vec<Task>> {
        let sql = format!(
            "{} WHERE t.id = $1 ORDER BY r.revision_no DESC",
            task_select()
        );
        let rows: Vec<TaskRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(id)
            .fetch_all(db)
            .await)?;
        if rows.is_empty() {
            return Err(Error::not_found(format_args!("task '{id}'")));
        }
        rows.into_iter().map(Task::try_from).collect()
    }

    /// Tasks at their current revision matching `filter`, one page, ordered by id.
    pub async fn list_tasks(&self, filter: &TaskFilter, page: Paging) -> Result<Listed<Task>> {
        let mut w = Where::default();
        w.raw("r.revision_no = t.revision_no".into());
        w.contains("t.id", &filter.id);
        w.eq_text("t.owner_user_id", &filter.owner_user_id);
        let flag = |f: Option<bool>| f.map(|f| exec_flag::as_code(f).to_owned());
        w.eq_text(
            "t.apprv_status",
            &filter.apprv_status.map(|s| s.as_code().to_owned()),
        );
        w.eq_text("t.apprv_user_id", &filter.apprv_user_id);
        w.eq_text("r.exec_scheduler", &flag(filter.exec_scheduler));
        w.eq_text("r.exec_ondemand", &flag(filter.exec_ondemand));
        w.eq_text("r.exec_task", &flag(filter.exec_task));
        if let Some(n) = &filter.target_node_id {
            let p = w.arg(Arg::Text(n.clone()));
            w.raw(format!(
                "EXISTS (SELECT 1 FROM task_targets x WHERE x.task_id = t.id AND x.node_id = {p})"
            ));
        }
        let from = "FROM tasks t JOIN task_revisions r ON r.task_id = t.id";
        let select = format!("SELECT {TASK_COLUMNS} {from}");
        let count = format!("SELECT COUNT(*) {from}");
        let rows: Listed<TaskRow> =
            list_page(&self.store, &select, &count, &w, "t.id", page).await?;
        rows.try_map(Task::try_from)
    }

    /// Moves a task through approval. The HTTP layer checks the permission of the action
    /// (`task.develop` to request, `task.approve` to decide); this checks the state and that an
    /// approver does not approve their own request (unless `tasks.allow_self_approval`).
    pub async fn task_approval(
        &self,
        caller: &Caller,
        id: &str,
        action: ApprovalAction,
        reviewed: Option<i64>,
        comment: Option<String>,
    ) -> Result<Task> {
        let actor = &caller.actor;
        let comment = comment.unwrap_or_default();
        if reviewed.is_none() && action != ApprovalAction::Request {
            return Err(Error::field(
                "revisionNo",
                format_args!(
                    "is required to approve or reject: name the revision you reviewed \
                     (GET /api/v1/tasks/{id}/approval shows it and its diff)"
                ),
            ));
        }
        if comment.chars().count() > 2000 {
            return Err(Error::field("comment", "must be at most 2000 characters"));
        }
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        // Concurrent edits and approvals of one task serialize on its row.
        tx.lock_row("tasks", "id", id).await?;
        let row: Option<(String, String, i64)> = in_tx!(tx, |c| sqlx::query_as(
            "SELECT apprv_status, apprv_requested_by, revision_no FROM tasks WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(&mut *c)
        .await)?;
        let (status, requested_by, revision_no) =
            row.ok_or_else(|| Error::not_found(format_args!("task '{id}'")))?;
        let status = stored("tasks.apprv_status", &status, ApprovalStatus::from_code)?;
        // An approval is pinned to the revision its approver reviewed (issue 18 item 5): a task
        // edited since then is a new revision the approver has not seen.
        if let Some(r) = reviewed.filter(|r| *r != revision_no) {
            return Err(Error::conflict(format!(
                "task '{id}' is at revision {revision_no}, not revision {r}: it changed after you \
                 reviewed it; review revision {revision_no} (and its diff) and decide again"
            )));
        }
        let (new_status, audit_action) = match (action, status) {
            (ApprovalAction::Request, ApprovalStatus::New | ApprovalStatus::Rejected) => {
                (ApprovalStatus::Requested, "task.approval.request")
            }
            (ApprovalAction::Request, ApprovalStatus::Requested) => {
                return Err(Error::conflict(format!(
                    "task '{id}' already awaits approval"
                )))
            }
            (ApprovalAction::Request, ApprovalStatus::Approved) => {
                return Err(Error::conflict(format!(
                    "task '{id}' is already approved; edit it to make a new revision first"
                )))
            }
            (ApprovalAction::Approve | ApprovalAction::Reject, ApprovalStatus::Requested) => {
                if action == ApprovalAction::Approve
                    && requested_by == actor.user_id
                    && !self.cfg.tasks.allow_self_approval
                {
                    return Err(Error::forbidden(format!(
                        "you requested the approval of task '{id}'; another approver must approve it \
                         (tasks.allow_self_approval lets a requester approve their own request)"
                    )));
                }
                if action == ApprovalAction::Approve {
                    (ApprovalStatus::Approved, "task.approval.approve")
                } else {
                    (ApprovalStatus::Rejected, "task.approval.reject")
                }
            }
            (_, s) => {
                return Err(Error::conflict(format!(
                    "task '{id}' is not awaiting approval (apprvStatus {s}); request approval first"
                )))
            }
        };
        if action == ApprovalAction::Request {
            in_tx!(tx, |c| {
                sqlx::query(
                "UPDATE tasks SET apprv_status = 'Q', apprv_requested_by = $2, apprv_user_id = '', apprv_comment = $3, \
                 apprv_at = NULL, updated_at = $4 WHERE id = $1"
            )
            .bind(id)
            .bind(&actor.user_id)
            .bind(&comment)
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|_| ())
            })?;
        } else {
            in_tx!(tx, |c| {
                sqlx::query(
                "UPDATE tasks SET apprv_status = $2, apprv_user_id = $3, apprv_comment = $4, apprv_at = $5, updated_at = $5 \
                 WHERE id = $1"
            )
            .bind(id)
            .bind(new_status.as_code())
            .bind(&actor.user_id)
            .bind(&comment)
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|_| ())
            })?;
            if action == ApprovalAction::Approve {
                in_tx!(tx, |c| {
                    sqlx::query(
                        "UPDATE task_revisions SET approved_by = $3, approved_at = $4 \
                         WHERE task_id = $1 AND revision_no = $2",
                    )
                    .bind(id)
                    .bind(revision_no)
                    .bind(&actor.user_id)
                    .bind(now)
                    .execute(&mut *c)
                    .await
                    .map(|_| ())
                })?;
            }
        }
        haechi_audit::append(
            &mut tx,
            actor
                .event(audit_action)
                .target(id)
                .detail(serde_json::json!({ "revisionNo": revision_no, "comment": comment })),
        )
        .await?;
        tx.commit().await?;
        self.get_task(id).await
    }
}

impl Exec {
    /// What an approver reviews: the task's current revision and its unified diff (script and
    /// every field) to the last revision that was approved, or to nothing for a first approval.
    pub async fn approval_review(&self, id: &str) -> Result<ApprovalReview> {
        let current = self.get_task(id).await?;
        let approved: Option<i64> = read!(self.store, |db| sqlx::query_scalar(
            "SELECT MAX(revision_no) FROM task_revisions \
             WHERE task_id = $1 AND revision_no < $2 AND approved_at IS NOT NULL"
        )
        .bind(id)
        .bind(current.revision_no)
        .fetch_one(db)
        .await)?;
        let before = match approved {
            Some(no) => review_text(&self.get_task_revision(id, no).await?),
            None => String::new(),
        };
        let old_header = match approved {
            Some(no) => format!("{id} revision {no} (last approved)"),
            None => format!("{id} (never approved)"),
        };
        let new_header = format!("{id} revision {}", current.revision_no);
        let diff = similar::TextDiff::from_lines(&before, &review_text(&current))
            .unified_diff()
            .context_radius(3)
            .header(&old_header, &new_header)
            .to_string();
        Ok(ApprovalReview {
            task_id: current.id.clone(),
            revision_no: current.revision_no,
            apprv_status: current.apprv_status,
            apprv_requested_by: current.apprv_requested_by.clone(),
            approved_revision_no: approved,
            diff,
        })
    }
}

/// The text of a revision an approver compares: every field that changes what runs, then the
/// script, one line each.
fn review_text(t: &Task) -> String {
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    let mut out = format!(
        "scriptName: {}\nosUser: {}\nexecOndemand: {}\nexecScheduler: {}\nexecTask: {}\n\
         schedule: {}\nscheduleTz: {}\nnextTaskId: {}\ntimeoutSecs: {}\ntargetNodeIds: {}\n\
         targets.nodeGroups: {}\ntargets.labels: {}\nrunWindows: {}\nrunnerGroups: {}\n\
         arguments: {}\ndescription: {}\nscript:\n",
        t.script_name,
        t.os_user,
        exec_flag::as_code(t.exec_ondemand),
        exec_flag::as_code(t.exec_scheduler),
        exec_flag::as_code(t.exec_task),
        t.schedule.as_deref().unwrap_or(""),
        t.schedule_tz.as_deref().unwrap_or(""),
        t.next_task_id,
        t.timeout_secs,
        json(&t.target_node_ids),
        json(&t.targets.node_groups),
        serde_json::to_string(&t.targets.labels).unwrap_or_default(),
        serde_json::to_string(&t.run_windows).unwrap_or_default(),
        json(&t.runner_groups),
        json(&t.arguments),
        t.description.replace('\n', "\\n"),
    );
    out.push_str(&t.script);
    if !t.script.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `GET /api/v1/tasks/{task_id}/approval`: the revision under review and what changed since
/// the last approved one.
#[derive(Debug, Clone)]
pub struct ApprovalReview {
    pub task_id: String,
    /// The revision an approval or rejection must name.
    pub revision_no: i64,
    pub apprv_status: ApprovalStatus,
    pub apprv_requested_by: String,
    /// The last revision before this one that was approved; absent when none was.
    pub approved_revision_no: Option<i64>,
    /// Unified diff from the last approved revision (or from nothing) to this one.
    pub diff: String,
}

/// Arguments: at most 256, each at most 64 KiB, no NUL bytes (they go to argv).
pub(crate) fn check_arguments(field: &str, args: &[String]) -> Result<()> {
    if args.len() > 256 {
        return Err(Error::field(field, "at most 256 arguments"));
    }
    for (i, a) in args.iter().enumerate() {
        if a.contains('\0') {
            return Err(Error::field(
                format!("{field}[{i}]"),
                "must not contain a NUL character",
            ));
        }
        if a.len() > 64 * 1024 {
            return Err(Error::field(
                format!("{field}[{i}]"),
                "must be at most 64 KiB",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_field_clears_and_an_absent_one_keeps_the_previous() {
        let prev = "0 * * * *".to_owned();
        assert_eq!(cleared_or_kept(Some("  ".into()), Some(&prev)), None);
        assert_eq!(
            cleared_or_kept(Some(" 5 * * * * ".into()), Some(&prev)),
            Some("5 * * * *".into())
        );
        assert_eq!(cleared_or_kept(None, Some(&prev)), Some(prev.clone()));
        assert!(required("script", None, None).is_err());
        assert_eq!(required("script", None, Some(&prev)).ok(), Some(prev));
    }

    #[test]
    fn target_nodes_come_from_targets_or_target_node_ids_but_not_differently_from_both() {
        let t = |nodes: &[&str]| TaskTargets {
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        };
        let ids = |nodes: &[&str]| Some(nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        let got = targets_of(Some(t(&[])), ids(&["a"]), None).expect("ids");
        assert_eq!(got.nodes, vec!["a".to_owned()]);
        let got = targets_of(Some(t(&["b"])), ids(&["b"]), None).expect("same in both");
        assert_eq!(got.nodes, vec!["b".to_owned()]);
        let e = targets_of(Some(t(&["b"])), ids(&["a"]), None).expect_err("differ");
        assert_eq!(e.field.as_deref(), Some("targets.nodes"));
        assert!(targets_of(None, None, None).expect("none").is_empty());
    }

    #[test]
    fn an_os_user_cannot_look_like_an_option() {
        assert!(check_os_user("deploy_1$").is_ok());
        assert!(check_os_user("-r").is_err());
        assert!(check_os_user("a b").is_err());
        assert!(check_target_nodes(&["a".into(), "a".into()]).is_err());
    }
}
