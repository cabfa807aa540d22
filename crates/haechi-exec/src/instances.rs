//! Task instances and node executions: starting (API, scheduler, chain), re-running one node,
//! cancelling, settling an instance when its last node ends (and starting its chain), and
//! reading them back with their output.

use haechi_identity::{Actor, Caller, Permission};
use haechi_protocol::{RunSpec, Stream};
use haechi_store::{in_tx, read, Listed, Paging, Tx};
use haechi_types::{time::now_ms, Error, Result};

use crate::model::*;
use crate::nodes::{check_id, check_node_list};
use crate::tasks::check_arguments;
use crate::windows::{OutsideWindow, RunWindow, StartError, WindowState};
use crate::Exec;
use crate::SecretEnv;
use haechi_store::{bind_args, list_page, Arg, Where};

/// Most nodes one instance may run on.
pub const MAX_NODES: usize = 10_000;

/// Reads the vault environment of an instance's runs again for a re-run, as the person who
/// asks for it (the server wires it to the workflow engine, which started such instances).
pub trait RunEnvSource: Send + Sync + 'static {
    /// The variables of the instance started by `origin` (a workflow step's attempt), each
    /// read as `actor` may read it: the vault checks and audits every read. A refusal is an
    /// `Err` (`forbidden`) naming the variable and the credential.
    fn read_again<'a>(
        &'a self,
        actor: &'a Actor,
        origin: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<SecretEnv>>>;

    /// The variables of the instance started by `origin`, read as the user who started the
    /// workflow execution, exactly as its first attempt read them (the vault checks and
    /// audits every read): for a server that sends a run whose values another server read
    /// (that server died, or the agent is connected here).
    fn read_as_starter<'a>(
        &'a self,
        origin: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<SecretEnv>>>;
}

/// A task instance stored inside a caller's transaction ([`Exec::start_instance_in_tx`]),
/// whose runs go to the agents once that transaction has committed.
pub struct StartedInTx {
    pub instance: Instance,
    runs: Vec<(String, RunSpec)>,
}

/// An instance just stored, and the runs to send once it is committed.
pub(crate) struct Created {
    pub instance: Instance,
    pub runs: Vec<(String, RunSpec)>,
}

#[derive(sqlx::FromRow)]
struct InstanceRow {
    instance_no: i64,
    task_id: String,
    revision_no: i64,
    runner_id: String,
    runner_gubun: String,
    origin: Option<String>,
    arguments: String,
    start_at: i64,
    end_at: Option<i64>,
    next_task_id: String,
    next_instance_no: Option<i64>,
    prev_instance_no: Option<i64>,
    targets: Option<String>,
}

const INSTANCE_COLUMNS: &str =
    "instance_no, task_id, revision_no, runner_id, runner_gubun, origin, arguments, start_at, \
                                end_at, next_task_id, next_instance_no, prev_instance_no, targets";

impl From<InstanceRow> for Instance {
    fn from(r: InstanceRow) -> Instance {
        Instance {
            task_instance_no: r.instance_no,
            task_id: r.task_id,
            revision_no: r.revision_no,
            runner_id: r.runner_id,
            runner_gubun: RunnerGubun::parse(&r.runner_gubun).unwrap_or(RunnerGubun::User),
            origin: r.origin,
            arguments: serde_json::from_str(&r.arguments).unwrap_or_default(),
            start_at: r.start_at,
            end_at: r.end_at,
            next_task_id: r.next_task_id,
            next_task_instance_no: r.next_instance_no,
            prev_task_instance_no: r.prev_instance_no,
            targets: r.targets.and_then(|t| serde_json::from_str(&t).ok()),
        }
    }
}

#[derive(sqlx::FromRow)]
struct ExecRow {
    exec_id: i64,
    instance_no: i64,
    task_id: String,
    node_id: String,
    exec_no: i64,
    revision_no: i64,
    status: String,
    result_cd: Option<String>,
    exit_cd: Option<i64>,
    reason: Option<String>,
    runner_id: String,
    runner_gubun: String,
    created_at: i64,
    start_at: Option<i64>,
    end_at: Option<i64>,
    out_len: i64,
    err_len: i64,
    truncated: bool,
    cancel_requested: bool,
}

const EXEC_SELECT: &str = "SELECT e.id AS exec_id, e.instance_no, i.task_id, e.node_id, e.exec_no, \
     COALESCE(e.revision_no, i.revision_no) AS revision_no, e.status, e.result_cd, \
     e.exit_cd, e.reason, e.runner_id, e.runner_gubun, e.created_at, e.start_at, e.end_at, e.out_len, e.err_len, \
     e.truncated, e.cancel_requested FROM node_executions e JOIN task_instances i ON i.instance_no = e.instance_no";

impl TryFrom<ExecRow> for NodeExecution {
    type Error = Error;

    fn try_from(r: ExecRow) -> Result<NodeExecution> {
        let result_cd = match r.result_cd {
            Some(code) => Some(stored(
                "node_executions.result_cd",
                &code,
                ResultCode::from_code,
            )?),
            None => None,
        };
        Ok(NodeExecution {
            exec_id: r.exec_id,
            task_instance_no: r.instance_no,
            task_id: r.task_id,
            node_id: r.node_id,
            exec_no: r.exec_no,
            revision_no: r.revision_no,
            status: ExecStatus::parse(&r.status).unwrap_or(ExecStatus::Lost),
            result_cd,
            exit_cd: r.exit_cd,
            reason: r.reason,
            runner_id: r.runner_id,
            runner_gubun: RunnerGubun::parse(&r.runner_gubun).unwrap_or(RunnerGubun::User),
            created_at: r.created_at,
            start_at: r.start_at,
            end_at: r.end_at,
            out_len: r.out_len,
            err_len: r.err_len,
            truncated: r.truncated,
            cancel_requested: r.cancel_requested,
        })
    }
}

/// What a run needs from the task revision.
#[derive(sqlx::FromRow)]
struct RevisionRow {
    script_name: String,
    script: String,
    os_user: String,
    timeout_secs: i64,
    exec_ondemand: String,
    exec_scheduler: String,
    exec_task: String,
    next_task_id: String,
    apprv_status: String,
    revision_no: i64,
    target_nodes: String,
    target_groups: String,
    target_labels: String,
    run_windows: String,
    runner_groups: String,
}

const REVISION_SELECT: &str = "SELECT r.script_name, r.script, r.os_user, r.timeout_secs, r.exec_ondemand, \
     r.exec_scheduler, r.exec_task, r.next_task_id, t.apprv_status, r.revision_no, r.target_nodes, r.target_groups, \
     r.target_labels, r.run_windows, r.runner_groups FROM tasks t \
     JOIN task_revisions r ON r.task_id = t.id AND r.revision_no = t.revision_no WHERE t.id = $1";

impl RevisionRow {
    /// Only an approved task starts, and only in the ways its flags allow
    /// (`execOndemand`, `execScheduler`, `execTask`).
    fn check_startable(&self, task_id: &str, gubun: RunnerGubun) -> Result<()> {
        let apprv_status = self.apprv_status()?;
        if apprv_status != ApprovalStatus::Approved {
            return Err(Error::conflict(format!(
                "task '{task_id}' is not approved (apprvStatus {apprv_status}); only an approved task runs"
            )));
        }
        let (code, name, column, how) = match gubun {
            RunnerGubun::User => (
                &self.exec_ondemand,
                "execOndemand",
                "task_revisions.exec_ondemand",
                "started on demand",
            ),
            RunnerGubun::Scheduler => (
                &self.exec_scheduler,
                "execScheduler",
                "task_revisions.exec_scheduler",
                "started by its schedule",
            ),
            RunnerGubun::Task => (
                &self.exec_task,
                "execTask",
                "task_revisions.exec_task",
                "started by another task's chain",
            ),
        };
        if !stored(column, code, exec_flag::from_code)? {
            return Err(Error::conflict(format!(
                "task '{task_id}' has {name} = {code}: it may not be {how}"
            )));
        }
        Ok(())
    }

    fn apprv_status(&self) -> Result<ApprovalStatus> {
        stored(
            "tasks.apprv_status",
            &self.apprv_status,
            ApprovalStatus::from_code,
        )
    }
}

/// The request's own fields, checked before anything is read: ids, at most [`MAX_NODES`]
/// distinct nodes, the arguments, the origin's length.
fn check_start_request(req: &StartInstance) -> Result<()> {
    check_id("taskId", &req.task_id)?;
    if req.node_ids.len() > MAX_NODES {
        return Err(Error::field(
            "nodeIdList",
            format_args!("at most {MAX_NODES} nodes per instance"),
        ));
    }
    check_node_list(&req.node_ids)?;
    check_arguments("arguments", &req.arguments)?;
    if let Some(o) = &req.origin {
        if o.len() > 512 {
            return Err(Error::field("origin", "must be at most 512 bytes"));
        }
    }
    Ok(())
}

/// A WAIT execution, joined with what its `Run` needs.
#[derive(sqlx::FromRow)]
struct PendingRow {
    exec_id: i64,
    node_id: String,
    exec_no: i64,
    instance_no: i64,
    task_id: String,
    revision_no: i64,
    arguments: String,
    script_name: String,
    script: String,
    os_user: String,
    timeout_secs: i64,
    /// JSON array of the names of the run's vault environment variables, if it has any.
    env_names: Option<String>,
    /// JSON object of the attributes the script names (`@OPM_ATTR.KEY@`), if it names any.
    attrs: Option<String>,
    /// The workflow step attempt that started the instance, if one did.
    origin: Option<String>,
    /// Who asked for this execution (a re-run's user).
    runner_id: String,
}

const PENDING_SELECT: &str =
    "SELECT e.id AS exec_id, e.node_id, e.exec_no, e.instance_no, i.task_id, r.revision_no, \
     i.arguments, r.script_name, r.script, r.os_user, r.timeout_secs, i.env_names, e.attrs, i.origin, e.runner_id FROM node_executions e \
     JOIN task_instances i ON i.instance_no = e.instance_no \
     JOIN task_revisions r ON r.task_id = i.task_id AND r.revision_no = COALESCE(e.revision_no, i.revision_no)";

/// How a per-node re-run treats a task edited since the instance ran.
#[derive(Debug, Clone, Copy, Default)]
pub struct RerunOptions {
    /// Run the task's current revision when it is newer than the instance's (without it such
    /// a re-run is refused with a 409 naming both revisions).
    pub use_latest_revision: bool,
}

/// The attributes of the keys a script names, for each node, or the reason a node cannot run.
type NodeScriptAttrs =
    std::collections::HashMap<String, std::result::Result<Option<String>, String>>;

impl Exec {
    fn run_spec(&self, p: PendingRow) -> (String, RunSpec) {
        let script = match p.attrs.as_deref() {
            Some(a) => {
                let attrs: std::collections::BTreeMap<String, String> =
                    serde_json::from_str(a).unwrap_or_default();
                crate::groups::substitute_attrs(&p.script, &attrs)
            }
            None => p.script,
        };
        let needs_env = p.env_names.as_deref().is_some_and(|n| n != "[]");
        // A re-run (execNo > 1) gets only what was read for it, as the person who asked for
        // it; never the values read for the instance's starter.
        let held = if p.exec_no > 1 {
            self.rerun_env(p.exec_id)
        } else {
            self.run_env(p.instance_no)
        };
        let (env, env_unavailable) = if needs_env {
            match held {
                Some(env) => (env.as_ref().clone(), None),
                None => (
                    Vec::new(),
                    Some(format!(
                        "this run needs environment variables from the vault ({}), whose values the server \
                         holds only in memory while the instance runs; they are gone (the server restarted, \
                         another server started the instance, or the instance already ended), so the script \
                         was not started. A new attempt of the workflow step reads them again.",
                        p.env_names.as_deref().unwrap_or_default()
                    )),
                ),
            }
        } else {
            (Vec::new(), None)
        };
        (
            p.node_id.clone(),
            RunSpec {
                exec_id: p.exec_id,
                node_id: p.node_id,
                task_id: p.task_id,
                revision_no: p.revision_no,
                instance_no: p.instance_no,
                exec_no: p.exec_no,
                script_name: p.script_name,
                script,
                args: serde_json::from_str(&p.arguments).unwrap_or_default(),
                os_user: p.os_user,
                timeout_secs: p.timeout_secs.max(0) as u64,
                output_cap: self.cfg.agents.output_cap_bytes,
                env,
                env_unavailable,
            },
        )
    }

    /// Stores a new instance and its node executions (all `WAIT`) inside `tx`. Every check
    /// comes before the first write, so a refused start leaves `tx` untouched.
    ///
    /// With no `node_ids`, the task's default targets are resolved now (disabled target nodes
    /// are left out and recorded on the instance). Outside a run window of the task or of a
    /// node's group the start is refused with [`StartError::OutsideWindow`]. A node whose
    /// script names an attribute it does not have ends `F` at once, naming the key, and is
    /// never sent to its agent; the other nodes run.
    pub(crate) async fn create_instance_in_tx(
        &self,
        tx: &mut Tx,
        req: &StartInstance,
        prev: Option<i64>,
        actor: Option<&Actor>,
    ) -> std::result::Result<Created, StartError> {
        check_start_request(req)?;
        let rev: Option<RevisionRow> = in_tx!(tx, |c| {
            sqlx::query_as(REVISION_SELECT)
                .bind(&req.task_id)
                .fetch_optional(&mut *c)
                .await
        })?;
        let task_id = &req.task_id;
        let rev = rev.ok_or_else(|| Error::not_found(format_args!("task '{task_id}'")))?;
        rev.check_startable(task_id, req.runner_gubun)?;
        if req.runner_gubun == RunnerGubun::User {
            if let Some(a) = actor {
                Self::check_runner_in_tx(tx, task_id, &rev.runner_groups, &a.user_id).await?;
            }
        }
        let (node_ids, targets) = if req.node_ids.is_empty() {
            let (nodes, report) = Self::resolve_default_targets_in_tx(tx, task_id, &rev).await?;
            (nodes, Some(report))
        } else {
            // The node executions are the list: nothing more to record (a fan-out to many
            // nodes stays one row per node).
            Self::check_nodes_runnable(tx, &req.node_ids).await?;
            (req.node_ids.clone(), None)
        };
        let now = now_ms();
        let task_windows: Vec<RunWindow> =
            serde_json::from_str(&rev.run_windows).unwrap_or_default();
        self.check_windows_in_tx(tx, task_id, &task_windows, &node_ids, now)
            .await?;
        let attrs = self.script_attrs_in_tx(tx, &rev.script, &node_ids).await?;

        let args = serde_json::to_string(&req.arguments)?;
        let targets_json = targets.as_ref().map(serde_json::to_string).transpose()?;
        let no: i64 = in_tx!(tx, |c| {
            sqlx::query_scalar(
            "INSERT INTO task_instances (task_id, revision_no, runner_id, runner_gubun, origin, arguments, start_at, \
             next_task_id, prev_instance_no, targets) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING instance_no"
        )
        .bind(task_id)
        .bind(rev.revision_no)
        .bind(&req.runner_id)
        .bind(req.runner_gubun.as_str())
        .bind(&req.origin)
        .bind(&args)
        .bind(now)
        .bind(&rev.next_task_id)
        .bind(prev)
        .bind(&targets_json)
        .fetch_one(&mut *c)
        .await
        })?;
        let (ids, failed_nodes) =
            Self::insert_node_executions_in_tx(tx, no, req, &node_ids, &attrs, now).await?;
        let all_failed = ids.is_empty();
        if all_failed {
            in_tx!(tx, |c| sqlx::query(
                "UPDATE task_instances SET end_at = $2 WHERE instance_no = $1"
            )
            .bind(no)
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|_| ()))?;
        }
        let event = match actor {
            Some(a) => a.event("task.instance.create"),
            None => haechi_audit::Event::new(haechi_audit::Family::System, "task.instance.create"),
        };
        haechi_audit::append(
            tx,
            event
                .target(format!("{task_id}#{no}"))
                .detail(serde_json::json!({
                    "taskId": task_id, "taskInstanceNo": no, "revisionNo": rev.revision_no,
                    "runnerGubun": req.runner_gubun.as_str(), "runnerId": req.runner_id,
                    "nodes": node_ids.len(), "origin": req.origin, "targetsSource": targets.as_ref().map_or("request", |t| t.source.as_str()),
                    "skippedNodes": targets.as_ref().map(|t| &t.skipped), "attributeFailures": failed_nodes,
                })),
        )
        .await?;
        let runs = ids
            .into_iter()
            .map(|(exec_id, node_id)| {
                let attrs = match attrs.get(&node_id) {
                    Some(Ok(a)) => a.clone(),
                    _ => None,
                };
                self.run_spec(PendingRow {
                    exec_id,
                    node_id,
                    exec_no: 1,
                    instance_no: no,
                    task_id: task_id.clone(),
                    revision_no: rev.revision_no,
                    arguments: args.clone(),
                    script_name: rev.script_name.clone(),
                    script: rev.script.clone(),
                    os_user: rev.os_user.clone(),
                    timeout_secs: rev.timeout_secs,
                    env_names: None,
                    attrs,
                    origin: req.origin.clone(),
                    runner_id: req.runner_id.clone(),
                })
            })
            .collect();
        let instance = Instance {
            task_instance_no: no,
            task_id: task_id.clone(),
            revision_no: rev.revision_no,
            runner_id: req.runner_id.clone(),
            runner_gubun: req.runner_gubun,
            origin: req.origin.clone(),
            arguments: req.arguments.clone(),
            start_at: now,
            end_at: all_failed.then_some(now),
            next_task_id: rev.next_task_id,
            next_task_instance_no: None,
            prev_task_instance_no: prev,
            targets,
        };
        Ok(Created { instance, runs })
    }

    /// The nodes a start without a node list runs on: the task's default targets resolved
    /// now, with the report of how (disabled target nodes are left out and named).
    async fn resolve_default_targets_in_tx(
        tx: &mut Tx,
        task_id: &str,
        rev: &RevisionRow,
    ) -> Result<(Vec<String>, crate::groups::InstanceTargets)> {
        let targets = crate::groups::TaskTargets {
            nodes: serde_json::from_str(&rev.target_nodes).unwrap_or_default(),
            node_groups: serde_json::from_str(&rev.target_groups).unwrap_or_default(),
            labels: serde_json::from_str(&rev.target_labels).unwrap_or_default(),
        };
        if targets.is_empty() {
            return Err(Error::field(
                "nodeIdList",
                format_args!(
                    "must name at least one node: task '{task_id}' has no default targets \
                     (set its targets to run it without a node list)"
                ),
            ));
        }
        let (nodes, skipped) = Self::resolve_targets_in_tx(tx, task_id, &targets).await?;
        if nodes.is_empty() {
            let why = if skipped.is_empty() {
                "they match no node".to_owned()
            } else {
                skipped
                    .iter()
                    .map(|s| format!("'{}': {}", s.node_id, s.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            return Err(Error::conflict(format!(
                "task '{task_id}': no node of its targets can run it now ({why})"
            )));
        }
        if nodes.len() > MAX_NODES {
            return Err(Error::conflict(format!(
                "task '{task_id}': its targets resolve to {} nodes, more than {MAX_NODES} per instance",
                nodes.len()
            )));
        }
        let report = crate::groups::InstanceTargets {
            source: "targets".into(),
            targets: Some(targets),
            nodes: nodes.clone(),
            skipped,
        };
        Ok((nodes, report))
    }

    /// Stores one `WAIT` execution per node of instance `no` (or, for a node whose script
    /// names an attribute it lacks, one already ended `F` with the reason); returns the
    /// executions to send, and how many nodes failed that way.
    async fn insert_node_executions_in_tx(
        tx: &mut Tx,
        no: i64,
        req: &StartInstance,
        node_ids: &[String],
        attrs: &NodeScriptAttrs,
        now: i64,
    ) -> Result<(Vec<(i64, String)>, usize)> {
        let mut ids: Vec<(i64, String)> = Vec::with_capacity(node_ids.len());
        let mut failed_nodes = 0usize;
        for chunk in node_ids.chunks(100) {
            let mut w = Where::default();
            let pno = w.arg(Arg::Int(no));
            let pnow = w.arg(Arg::Int(now));
            let prid = w.arg(Arg::Text(req.runner_id.clone()));
            let pg = w.arg(Arg::Text(req.runner_gubun.as_str().to_owned()));
            let rows: Vec<String> = chunk
                .iter()
                .map(|n| {
                    let pn = w.arg(Arg::Text(n.clone()));
                    match attrs.get(n) {
                        Some(Err(reason)) => {
                            failed_nodes += 1;
                            let pr = w.arg(Arg::Text(reason.clone()));
                            format!(
                                "({pno}, {pn}, 1, TRUE, 'END', {prid}, {pg}, {pnow}, 'F', -1, {pr}, {pnow}, NULL)"
                            )
                        }
                        Some(Ok(Some(a))) => {
                            let pa = w.arg(Arg::Text(a.clone()));
                            format!(
                                "({pno}, {pn}, 1, TRUE, 'WAIT', {prid}, {pg}, {pnow}, NULL, NULL, NULL, NULL, {pa})"
                            )
                        }
                        _ => format!(
                            "({pno}, {pn}, 1, TRUE, 'WAIT', {prid}, {pg}, {pnow}, NULL, NULL, NULL, NULL, NULL)"
                        ),
                    }
                })
                .collect();
            let sql = format!(
                "INSERT INTO node_executions (instance_no, node_id, exec_no, latest, status, runner_id, runner_gubun, \
                 created_at, result_cd, exit_cd, reason, end_at, attrs) VALUES {} RETURNING id, node_id, status",
                rows.join(", ")
            );
            let got: Vec<(i64, String, String)> =
                in_tx!(tx, |c| bind_args!(sqlx::query_as(&sql), w.args)
                    .fetch_all(&mut *c)
                    .await)?;
            ids.extend(
                got.into_iter()
                    .filter(|(_, _, st)| st == "WAIT")
                    .map(|(id, node, _)| (id, node)),
            );
        }
        Ok((ids, failed_nodes))
    }

    /// A task with runner groups starts only for a member of one of them.
    pub(crate) async fn check_runner_in_tx(
        tx: &mut Tx,
        task_id: &str,
        runner_groups_json: &str,
        user_id: &str,
    ) -> Result<()> {
        let groups: Vec<String> = serde_json::from_str(runner_groups_json).unwrap_or_default();
        if groups.is_empty() {
            return Ok(());
        }
        let mine: Vec<String> = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT group_name FROM user_group_members WHERE user_id = $1"
        )
        .bind(user_id)
        .fetch_all(&mut *c)
        .await)?;
        if groups.iter().any(|g| mine.contains(g)) {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "task '{task_id}' may be started only by members of its runner groups ({}); '{user_id}' is in none of them",
            groups.join(", ")
        )))
    }

    /// Refuses a start at `at` outside the task's run windows or those of a group of one of
    /// `nodes`, naming the next opening.
    pub(crate) async fn check_windows_in_tx(
        &self,
        tx: &mut Tx,
        task_id: &str,
        task_windows: &[RunWindow],
        nodes: &[String],
        at: i64,
    ) -> std::result::Result<(), StartError> {
        if let Some(w) =
            self.window_refusal(task_id, &format!("task '{task_id}'"), task_windows, at)
        {
            return Err(StartError::OutsideWindow(w));
        }
        for (node, group, windows) in Self::group_windows_in_tx(tx, nodes).await? {
            let scope = format!("node group '{group}' (of node '{node}')");
            if let Some(w) = self.window_refusal(task_id, &scope, &windows, at) {
                return Err(StartError::OutsideWindow(w));
            }
        }
        Ok(())
    }

    /// `Some` when `at` is outside `windows` (none: always inside).
    pub(crate) fn window_refusal(
        &self,
        task_id: &str,
        scope: &str,
        windows: &[RunWindow],
        at: i64,
    ) -> Option<OutsideWindow> {
        let off = self.cfg.utc_offset_secs;
        match crate::windows::check(&crate::windows::parse(windows, off), at) {
            WindowState::Open => None,
            WindowState::Closed { next_open } => {
                let next = match next_open {
                    Some(ms) => format!(
                        "the next window opens at {}",
                        crate::windows::describe_opening(ms, windows, off)
                    ),
                    None => "no window opens in the next two weeks".to_owned(),
                };
                Some(OutsideWindow {
                    task_id: task_id.to_owned(),
                    scope: scope.to_owned(),
                    next_open,
                    message: format!(
                        "task '{task_id}' may not start now: it is outside the run windows of {scope}; {next}"
                    ),
                })
            }
        }
    }

    /// For a script that names attributes: each node's attributes as JSON (only the keys
    /// named), or why the node cannot run (a missing key). `Ok(None)` for every node of a
    /// script that names none.
    pub(crate) async fn script_attrs_in_tx(
        &self,
        tx: &mut Tx,
        script: &str,
        nodes: &[String],
    ) -> Result<NodeScriptAttrs> {
        let keys = crate::groups::script_attr_keys(script);
        let mut out = NodeScriptAttrs::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let all = Self::node_attrs_in_tx(tx, nodes).await?;
        let none = crate::groups::NodeAttrs::default();
        for n in nodes {
            let a = all.get(n).unwrap_or(&none);
            let v = match a.pick(&keys) {
                Ok(m) => Ok(Some(serde_json::to_string(&m)?)),
                Err(missing) => Err(a.missing_message(n, &missing)),
            };
            out.insert(n.clone(), v);
        }
        Ok(out)
    }

    /// Starts a task on nodes: checks it may run there (task exists, approved, the flag of the
    /// runner kind is `E`, every node exists and is enabled), stores the instance and its node
    /// executions, then sends them to the agents. A refused start stores nothing.
    pub async fn start_instance(
        &self,
        actor: Option<&Actor>,
        req: StartInstance,
    ) -> Result<Instance> {
        let mut tx = self.store.begin().await?;
        let created = self
            .create_instance_in_tx(&mut tx, &req, None, actor)
            .await?;
        tx.commit().await?;
        self.send_runs(created.runs);
        Ok(created.instance)
    }

    /// [`Exec::start_instance_in_tx`] with the refusal typed: a start outside a run window is
    /// [`StartError::OutsideWindow`] (a scheduler skips and audits such a fire), anything else
    /// [`StartError::Refused`]. A refusal leaves `tx` untouched.
    pub async fn try_start_instance_in_tx(
        &self,
        tx: &mut Tx,
        actor: Option<&Actor>,
        req: &StartInstance,
    ) -> std::result::Result<StartedInTx, StartError> {
        let created = self.create_instance_in_tx(tx, req, None, actor).await?;
        Ok(StartedInTx {
            instance: created.instance,
            runs: created.runs,
        })
    }

    /// [`Exec::start_instance`] inside the caller's transaction, for the workflow engine: it
    /// stores a step's attempt and the task instance it starts in one commit, so that a crash
    /// can never leave an attempt whose instance is unknown (and started again). Every check
    /// comes before the first write: a refused start (an error other than `Internal`) leaves
    /// `tx` untouched. Send the runs with [`Exec::dispatch_started`] once `tx` has committed.
    pub async fn start_instance_in_tx(
        &self,
        tx: &mut Tx,
        actor: Option<&Actor>,
        req: &StartInstance,
    ) -> Result<StartedInTx> {
        Ok(self.try_start_instance_in_tx(tx, actor, req).await?)
    }

    /// [`Exec::start_instance_in_tx`] for runs that get environment variables (a workflow task
    /// step's vault values). The instance records the variables' names, never their values;
    /// the values stay in this server's memory until the instance ends and go with every `Run`
    /// of it this server sends (also a re-send after an agent reconnects). A `Run` of it sent
    /// when the values are gone (after a restart, or by another server) tells the agent not to
    /// start the script ([`RunSpec::env_unavailable`]).
    pub async fn start_instance_in_tx_with_env(
        &self,
        tx: &mut Tx,
        actor: Option<&Actor>,
        req: &StartInstance,
        env: Vec<SecretEnv>,
    ) -> Result<StartedInTx> {
        if env.is_empty() {
            return self.start_instance_in_tx(tx, actor, req).await;
        }
        for e in &env {
            let valid = e
                .name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && e.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(Error::field(
                    "env",
                    format_args!("'{}' is not a valid variable name", e.name),
                ));
            }
        }
        let mut created = self
            .create_instance_in_tx(tx, req, None, actor)
            .await
            .map_err(Error::from)?;
        let no = created.instance.task_instance_no;
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        let names = serde_json::to_string(&names)?;
        in_tx!(tx, |c| sqlx::query(
            "UPDATE task_instances SET env_names = $2 WHERE instance_no = $1"
        )
        .bind(no)
        .bind(&names)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        for (_, run) in &mut created.runs {
            run.env = env.clone();
        }
        self.run_envs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(no, std::sync::Arc::new(env));
        Ok(StartedInTx {
            instance: created.instance,
            runs: created.runs,
        })
    }

    fn run_env(&self, no: i64) -> Option<std::sync::Arc<Vec<SecretEnv>>> {
        self.run_envs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&no)
            .cloned()
    }

    fn rerun_env(&self, exec_id: i64) -> Option<std::sync::Arc<Vec<SecretEnv>>> {
        self.rerun_envs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&exec_id)
            .map(|(_, env)| env.clone())
    }

    /// Drops the in-memory environment of instance `no` and of its re-runs (it ended, or its
    /// start was not committed).
    pub fn forget_run_env(&self, no: i64) {
        self.run_envs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&no);
        self.rerun_envs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (instance, _)| *instance != no);
    }

    /// Sets where re-runs read their environment again (once; later calls are ignored).
    pub fn set_env_source(&self, source: std::sync::Arc<dyn RunEnvSource>) {
        let _ = self.env_source.set(source);
    }

    /// For a re-run of instance `no`: its environment read again as `actor`, when its runs
    /// get one; `None` when they do not (or the instance does not exist: the re-run says so).
    async fn env_for_rerun(
        &self,
        actor: &Actor,
        no: i64,
    ) -> Result<Option<std::sync::Arc<Vec<SecretEnv>>>> {
        let row: Option<(Option<String>, Option<String>)> = read!(self.store, |db| {
            sqlx::query_as("SELECT env_names, origin FROM task_instances WHERE instance_no = $1")
                .bind(no)
                .fetch_optional(db)
                .await
        })?;
        let Some((Some(names), origin)) = row else {
            return Ok(None);
        };
        if names == "[]" {
            return Ok(None);
        }
        let (Some(source), Some(origin)) = (self.env_source.get(), origin) else {
            return Err(Error::conflict(format!(
                "task instance {no} runs with environment variables from the vault ({names}), \
                 which this server cannot read again for a re-run; retry the workflow step instead"
            )));
        };
        Ok(Some(std::sync::Arc::new(
            source.read_again(actor, &origin).await?,
        )))
    }

    /// Sends the runs of an instance stored by [`Exec::start_instance_in_tx`] to the agents.
    /// Call it only after that transaction has committed.
    pub fn dispatch_started(&self, started: StartedInTx) {
        self.send_runs(started.runs);
    }

    /// Runs instance `no` again on one node as its next `execNo` (the earlier ones stay
    /// readable). The node's latest execution must have ended.
    ///
    /// A run that gets environment variables from the vault (a workflow task step's
    /// `env_from_vault`) gets them read again as `actor`, each read checked and audited by the
    /// vault, before anything is stored: someone who may not use a value cannot re-run it.
    pub async fn rerun_node(
        &self,
        caller: &Caller,
        no: i64,
        node_id: &str,
    ) -> Result<NodeExecution> {
        self.rerun_node_with(caller, no, node_id, RerunOptions::default())
            .await
    }

    /// [`Exec::rerun_node`] with options. A task edited since the instance ran (its current
    /// revision is newer than the instance's) is refused with a 409 naming both revisions,
    /// unless `opts.use_latest_revision` asks for the current revision explicitly.
    pub async fn rerun_node_with(
        &self,
        caller: &Caller,
        no: i64,
        node_id: &str,
        opts: RerunOptions,
    ) -> Result<NodeExecution> {
        caller.require(Permission::TaskExecute)?;
        let env = self.env_for_rerun(&caller.actor, no).await?;
        let actor = caller.actor.clone();
        let node = node_id.to_owned();
        let exec_id = self
            .write(|reply| crate::writer::Op::Rerun {
                instance_no: no,
                node_id: node,
                actor,
                env,
                opts,
                reply,
            })
            .await?;
        self.execution_by_id(exec_id).await
    }

    /// Inside the writer's transaction: the re-run itself. Returns the new execution's run.
    pub(crate) async fn rerun_in_tx(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        no: i64,
        node_id: &str,
        env: Option<std::sync::Arc<Vec<SecretEnv>>>,
        opts: RerunOptions,
    ) -> Result<(String, RunSpec)> {
        tx.lock_row("task_instances", "instance_no", no).await?;
        let inst: Option<(String, i64)> = in_tx!(tx, |c| sqlx::query_as(
            "SELECT task_id, revision_no FROM task_instances WHERE instance_no = $1"
        )
        .bind(no)
        .fetch_optional(&mut *c)
        .await)?;
        let (task_id, instance_rev) =
            inst.ok_or_else(|| Error::not_found(format_args!("task instance {no}")))?;
        let last: Option<(i64, i64, String)> = in_tx!(tx, |c| {
            sqlx::query_as(
            "SELECT id, exec_no, status FROM node_executions WHERE instance_no = $1 AND node_id = $2 AND latest"
        )
        .bind(no)
        .bind(node_id)
        .fetch_optional(&mut *c)
        .await
        })?;
        let (last_id, last_no, status) = last.ok_or_else(|| {
            Error::not_found(format_args!("node '{node_id}' in task instance {no}"))
        })?;
        if !ExecStatus::parse(&status).is_some_and(ExecStatus::is_final) {
            return Err(Error::conflict(format!(
                "node '{node_id}' of task instance {no} is still {status} (execNo {last_no}); wait for it or cancel it first"
            )));
        }
        let rev: Option<RevisionRow> = in_tx!(tx, |c| sqlx::query_as(REVISION_SELECT)
            .bind(&task_id)
            .fetch_optional(&mut *c)
            .await)?;
        let rev = rev.ok_or_else(|| Error::not_found(format_args!("task '{task_id}'")))?;
        // The OPMATE manual's rule: a re-run runs what the instance ran; once the task has a
        // newer revision that is no longer the task as it is, so say so rather than run either.
        if rev.revision_no != instance_rev && !opts.use_latest_revision {
            return Err(Error::conflict(format!(
                "task '{task_id}' is at revision {} now, but task instance {no} ran revision {instance_rev}: \
                 a per-node re-run would not run what the instance ran. Re-run with useLatestRevision=Y to \
                 run revision {} on node '{node_id}', or start a new instance",
                rev.revision_no, rev.revision_no
            )));
        }
        let apprv_status = rev.apprv_status()?;
        if apprv_status != ApprovalStatus::Approved {
            return Err(Error::conflict(format!(
                "task '{task_id}' is not approved now (apprvStatus {apprv_status}); only an approved task runs"
            )));
        }
        Self::check_runner_in_tx(tx, &task_id, &rev.runner_groups, &actor.user_id).await?;
        let node_list = [node_id.to_owned()];
        Self::check_nodes_runnable(tx, &node_list).await?;
        let windows: Vec<RunWindow> = serde_json::from_str(&rev.run_windows).unwrap_or_default();
        self.check_windows_in_tx(tx, &task_id, &windows, &node_list, now_ms())
            .await
            .map_err(Error::from)?;
        let attrs = match self
            .script_attrs_in_tx(tx, &rev.script, &node_list)
            .await?
            .remove(node_id)
        {
            Some(Err(reason)) => return Err(Error::conflict(reason)),
            Some(Ok(a)) => a,
            None => None,
        };
        let run_rev = (rev.revision_no != instance_rev).then_some(rev.revision_no);
        let now = now_ms();
        in_tx!(tx, |c| sqlx::query(
            "UPDATE node_executions SET latest = FALSE WHERE id = $1"
        )
        .bind(last_id)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        let exec_id: i64 = in_tx!(tx, |c| {
            sqlx::query_scalar(
            "INSERT INTO node_executions (instance_no, node_id, exec_no, latest, status, runner_id, runner_gubun, created_at, \
             attrs, revision_no) VALUES ($1, $2, $3, TRUE, 'WAIT', $4, 'U', $5, $6, $7) RETURNING id"
        )
        .bind(no)
        .bind(node_id)
        .bind(last_no + 1)
        .bind(&actor.user_id)
        .bind(now)
        .bind(&attrs)
        .bind(run_rev)
        .fetch_one(&mut *c)
        .await
        })?;
        in_tx!(tx, |c| sqlx::query(
            "UPDATE task_instances SET end_at = NULL WHERE instance_no = $1"
        )
        .bind(no)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        haechi_audit::append(
            tx,
            actor
                .event("task.instance.rerun")
                .target(format!("{task_id}#{no}"))
                .detail(serde_json::json!({
                    "nodeId": node_id, "execNo": last_no + 1, "revisionNo": rev.revision_no,
                    "instanceRevisionNo": instance_rev,
                })),
        )
        .await?;
        let sql = format!("{PENDING_SELECT} WHERE e.id = $1");
        let row: PendingRow = in_tx!(tx, |c| sqlx::query_as(&sql)
            .bind(exec_id)
            .fetch_one(&mut *c)
            .await)?;
        if let Some(env) = env {
            self.rerun_envs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(exec_id, (no, env));
        }
        Ok(self.run_spec(row))
    }

    /// Cancels instance `no` (or one node of it): executions not yet started end `CANCEL` at
    /// once; running ones are killed by their agent and end `CANCEL` when it reports.
    pub async fn cancel(
        &self,
        actor: Option<&Actor>,
        no: i64,
        node_id: Option<&str>,
    ) -> Result<Vec<NodeExecution>> {
        let actor = actor.cloned();
        let node = node_id.map(str::to_owned);
        self.write(|reply| crate::writer::Op::Cancel {
            instance_no: no,
            node_id: node,
            actor,
            reply,
        })
        .await?;
        let filter = NodeExecFilter {
            node_id: None,
            ..Default::default()
        };
        let all = self
            .instance_nodes(
                no,
                &filter,
                Paging {
                    limit: MAX_NODES as i64,
                    offset: 0,
                },
            )
            .await?;
        Ok(all
            .items
            .into_iter()
            .filter(|e| node_id.is_none_or(|n| n == e.node_id))
            .collect())
    }

    /// Inside the writer's transaction: marks what to cancel. Returns (node, exec id) of every
    /// execution an agent may hold, to send it a `Cancel`.
    pub(crate) async fn cancel_in_tx(
        &self,
        tx: &mut Tx,
        actor: Option<&Actor>,
        no: i64,
        node_id: Option<&str>,
    ) -> Result<Vec<(String, i64)>> {
        tx.lock_row("task_instances", "instance_no", no).await?;
        let task: Option<String> = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT task_id FROM task_instances WHERE instance_no = $1"
        )
        .bind(no)
        .fetch_optional(&mut *c)
        .await)?;
        let task_id = task.ok_or_else(|| Error::not_found(format_args!("task instance {no}")))?;
        let rows: Vec<(i64, String, String)> = in_tx!(tx, |c| sqlx::query_as(
            "SELECT id, node_id, status FROM node_executions WHERE instance_no = $1 AND latest"
        )
        .bind(no)
        .fetch_all(&mut *c)
        .await)?;
        if let Some(n) = node_id {
            if !rows.iter().any(|r| r.1 == n) {
                return Err(Error::not_found(format_args!(
                    "node '{n}' in task instance {no}"
                )));
            }
        }
        let now = now_ms();
        let mut notify = Vec::new();
        for (id, node, status) in rows {
            if node_id.is_some_and(|n| n != node) {
                continue;
            }
            match status.as_str() {
                "WAIT" => {
                    in_tx!(tx, |c| {
                        sqlx::query(
                        "UPDATE node_executions SET status = 'CANCEL', result_cd = 'F', exit_cd = -1, \
                         reason = 'cancelled before it started', end_at = $2, cancel_requested = TRUE \
                         WHERE id = $1 AND status = 'WAIT'"
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut *c)
                    .await
                    .map(|_| ())
                    })?;
                    notify.push((node, id));
                }
                "RUN" => {
                    in_tx!(tx, |c| sqlx::query(
                        "UPDATE node_executions SET cancel_requested = TRUE WHERE id = $1"
                    )
                    .bind(id)
                    .execute(&mut *c)
                    .await
                    .map(|_| ()))?;
                    notify.push((node, id));
                }
                _ => {}
            }
        }
        let event = match actor {
            Some(a) => a.event("task.instance.cancel"),
            None => haechi_audit::Event::new(haechi_audit::Family::System, "task.instance.cancel"),
        };
        haechi_audit::append(
            tx,
            event
                .target(format!("{task_id}#{no}"))
                .detail(serde_json::json!({ "nodeId": node_id, "executions": notify.len() })),
        )
        .await?;
        Ok(notify)
    }

    /// Inside the writer's transaction: if every node's latest execution of instance `no` has
    /// ended, records the end; if they all ended `S` and the task chains to an `execTask = E`
    /// task, starts that on the same nodes. Returns (ended now, the chained instance).
    pub(crate) async fn settle_in_tx(
        &self,
        tx: &mut Tx,
        no: i64,
    ) -> Result<(bool, Option<Created>)> {
        tx.lock_row("task_instances", "instance_no", no).await?;
        let (total, active, ok): (i64, Option<i64>, Option<i64>) = in_tx!(tx, |c| {
            sqlx::query_as(
            "SELECT COUNT(*), SUM(CASE WHEN status IN ('WAIT', 'RUN') THEN 1 ELSE 0 END), \
             SUM(CASE WHEN result_cd = 'S' THEN 1 ELSE 0 END) FROM node_executions WHERE instance_no = $1 AND latest"
        )
        .bind(no)
        .fetch_one(&mut *c)
        .await
        })?;
        if total == 0 || active.unwrap_or(0) > 0 {
            return Ok((false, None));
        }
        let ended = in_tx!(tx, |c| sqlx::query(
            "UPDATE task_instances SET end_at = $2 WHERE instance_no = $1 AND end_at IS NULL"
        )
        .bind(no)
        .bind(now_ms())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        if ended > 0 {
            self.forget_run_env(no);
        }
        if ended == 0 || ok.unwrap_or(0) != total {
            return Ok((ended > 0, None));
        }
        let row: Option<(String, Option<i64>, String, String)> = in_tx!(tx, |c| {
            sqlx::query_as(
            "SELECT next_task_id, next_instance_no, arguments, task_id FROM task_instances WHERE instance_no = $1"
        )
        .bind(no)
        .fetch_optional(&mut *c)
        .await
        })?;
        let Some((next_task_id, next_no, arguments, task_id)) = row else {
            return Ok((true, None));
        };
        if next_task_id.is_empty() || next_no.is_some() {
            return Ok((true, None));
        }
        let nodes: Vec<String> = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT node_id FROM node_executions WHERE instance_no = $1 AND latest ORDER BY id"
        )
        .bind(no)
        .fetch_all(&mut *c)
        .await)?;
        let req = StartInstance {
            task_id: next_task_id.clone(),
            node_ids: nodes,
            arguments: serde_json::from_str(&arguments).unwrap_or_default(),
            runner_gubun: RunnerGubun::Task,
            runner_id: no.to_string(),
            origin: None,
        };
        match self.create_instance_in_tx(tx, &req, Some(no), None).await {
            Ok(created) => {
                in_tx!(tx, |c| sqlx::query(
                    "UPDATE task_instances SET next_instance_no = $2 WHERE instance_no = $1"
                )
                .bind(no)
                .bind(created.instance.task_instance_no)
                .execute(&mut *c)
                .await
                .map(|_| ()))?;
                Ok((true, Some(created)))
            }
            Err(e) if e.code() != haechi_types::Code::Internal => {
                let e = e.into_error();
                tracing::warn!(instance = no, next = %next_task_id, "task chain not started: {}", e.message);
                haechi_audit::append(
                    tx,
                    haechi_audit::Event::new(haechi_audit::Family::System, "task.chain.skip")
                        .target(format!("{task_id}#{no}"))
                        .outcome(haechi_audit::Outcome::Failure)
                        .detail(
                            serde_json::json!({ "nextTaskId": next_task_id, "reason": e.message }),
                        ),
                )
                .await?;
                Ok((true, None))
            }
            Err(e) => Err(e.into_error()),
        }
    }

    /// The `Run`s of every `WAIT` execution of a node (sent when its agent connects).
    pub(crate) async fn pending_runs(&self, node_id: &str) -> Result<Vec<(String, RunSpec)>> {
        let sql =
            format!("{PENDING_SELECT} WHERE e.status = 'WAIT' AND e.node_id = $1 ORDER BY e.id");
        let rows: Vec<PendingRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(node_id)
            .fetch_all(db)
            .await)?;
        Ok(self.run_specs(rows).await)
    }

    /// The `Run`s of instance `no`'s `WAIT` executions on nodes whose agents are connected
    /// here (another server stored them: [`haechi_store::Signal::Work`]).
    pub(crate) async fn waiting_runs_here(&self, no: i64) -> Result<Vec<(String, RunSpec)>> {
        let sql = format!(
            "{PENDING_SELECT} WHERE e.status = 'WAIT' AND e.instance_no = $1 ORDER BY e.id"
        );
        let rows: Vec<PendingRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(no)
            .fetch_all(db)
            .await)?;
        let rows = rows
            .into_iter()
            .filter(|r| self.hub.is_connected(&r.node_id))
            .collect();
        Ok(self.run_specs(rows).await)
    }

    /// Runs from stored rows. A run that needs vault values this server does not hold (they
    /// were read by another server, which died or whose agent is connected here, or by this
    /// server before a restart) gets them read again here: a first attempt as the workflow
    /// execution's starter, a re-run as the person who asked for it, each read checked and
    /// audited by the vault. The values are kept in memory only, as the first server kept
    /// them. When they cannot be read, the run tells the agent not to start the script.
    async fn run_specs(&self, rows: Vec<PendingRow>) -> Vec<(String, RunSpec)> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let needs_env = row.env_names.as_deref().is_some_and(|n| n != "[]");
            let held = if row.exec_no > 1 {
                self.rerun_env(row.exec_id).is_some()
            } else {
                self.run_env(row.instance_no).is_some()
            };
            let mut refused = None;
            if needs_env && !held {
                if let Err(e) = self.reread_env(&row).await {
                    refused = Some(e);
                }
            }
            let (node, mut spec) = self.run_spec(row);
            if let (Some(why), Some(text)) = (refused, spec.env_unavailable.as_mut()) {
                text.push_str(&format!(" Reading them again on this server failed: {why}"));
            }
            out.push((node, spec));
        }
        out
    }

    /// Reads a run's vault values again on this server (see [`Exec::run_specs`]) and keeps
    /// them where [`Exec::run_spec`] finds them.
    async fn reread_env(&self, row: &PendingRow) -> std::result::Result<(), String> {
        let (Some(source), Some(origin)) = (self.env_source.get(), row.origin.as_deref()) else {
            return Err("this server has no workflow engine to read them with".to_owned());
        };
        let env = if row.exec_no > 1 {
            let actor = Actor {
                user_id: row.runner_id.clone(),
                ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                origin: haechi_identity::Origin::Workflow {
                    execution: origin.split_once('/').map_or(origin, |(e, _)| e).to_owned(),
                },
            };
            source.read_again(&actor, origin).await
        } else {
            source.read_as_starter(origin).await
        }
        .map_err(|e| e.message)?;
        let env = std::sync::Arc::new(env);
        if row.exec_no > 1 {
            self.rerun_envs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(row.exec_id, (row.instance_no, env));
        } else {
            self.run_envs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(row.instance_no, env);
        }
        tracing::info!(
            instance = row.instance_no,
            exec_id = row.exec_id,
            "read a run's vault environment again on this server"
        );
        Ok(())
    }

    /// The `Run`s of the given `WAIT` executions.
    pub(crate) async fn runs_by_ids(&self, ids: &[i64]) -> Result<Vec<(String, RunSpec)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let mut w = Where::default();
            let marks: Vec<String> = chunk.iter().map(|id| w.arg(Arg::Int(*id))).collect();
            let sql = format!(
                "{PENDING_SELECT} WHERE e.status = 'WAIT' AND e.id IN ({})",
                marks.join(", ")
            );
            let rows: Vec<PendingRow> =
                read!(self.store, |db| bind_args!(sqlx::query_as(&sql), w.args)
                    .fetch_all(db)
                    .await)?;
            out.extend(self.run_specs(rows).await);
        }
        Ok(out)
    }

    pub async fn get_instance(&self, no: i64) -> Result<Instance> {
        let sql = format!("SELECT {INSTANCE_COLUMNS} FROM task_instances WHERE instance_no = $1");
        let row: Option<InstanceRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(no)
            .fetch_optional(db)
            .await)?;
        row.map(Instance::from)
            .ok_or_else(|| Error::not_found(format_args!("task instance {no}")))
    }

    /// Instances started with this `origin`, oldest first (a workflow finds its own again).
    pub async fn instances_by_origin(&self, origin: &str) -> Result<Vec<Instance>> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM task_instances WHERE origin = $1 ORDER BY instance_no"
        );
        let rows: Vec<InstanceRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(origin)
            .fetch_all(db)
            .await)?;
        Ok(rows.into_iter().map(Instance::from).collect())
    }

    /// A task's instances, newest first.
    pub async fn list_instances(
        &self,
        task_id: &str,
        filter: &InstanceFilter,
        page: Paging,
    ) -> Result<Listed<Instance>> {
        self.get_task(task_id).await?;
        let mut w = Where::default();
        w.eq_text("task_id", &Some(task_id.to_owned()));
        w.cmp_int("start_at", ">=", filter.start_ge);
        w.cmp_int("start_at", "<=", filter.start_le);
        w.eq_text("runner_id", &filter.runner_id);
        w.eq_text("next_task_id", &filter.next_task_id);
        let select = format!("SELECT {INSTANCE_COLUMNS} FROM task_instances");
        let rows: Listed<InstanceRow> = list_page(
            &self.store,
            &select,
            "SELECT COUNT(*) FROM task_instances",
            &w,
            "instance_no DESC",
            page,
        )
        .await?;
        Ok(rows.map(Instance::from))
    }

    /// The latest execution of each node of an instance, ordered by node id.
    pub async fn instance_nodes(
        &self,
        no: i64,
        filter: &NodeExecFilter,
        page: Paging,
    ) -> Result<Listed<NodeExecution>> {
        self.get_instance(no).await?;
        let mut w = Where::default();
        w.eq_int("e.instance_no", Some(no));
        w.raw("e.latest".into());
        w.contains("e.node_id", &filter.node_id);
        w.eq_text("e.status", &filter.status.map(|s| s.as_str().to_owned()));
        w.eq_text(
            "e.result_cd",
            &filter.result_cd.map(|r| r.as_code().to_owned()),
        );
        w.eq_int("e.exit_cd", filter.exit_cd);
        let rows: Listed<ExecRow> = list_page(
            &self.store,
            EXEC_SELECT,
            "SELECT COUNT(*) FROM node_executions e",
            &w,
            "e.node_id",
            page,
        )
        .await?;
        rows.try_map(NodeExecution::try_from)
    }

    /// One node's execution of an instance: `exec_no`, or the latest.
    pub async fn node_execution(
        &self,
        no: i64,
        node_id: &str,
        exec_no: Option<i64>,
    ) -> Result<NodeExecution> {
        let row: Option<ExecRow> = match exec_no {
            Some(n) => {
                let sql = format!(
                    "{EXEC_SELECT} WHERE e.instance_no = $1 AND e.node_id = $2 AND e.exec_no = $3"
                );
                read!(self.store, |db| sqlx::query_as(&sql)
                    .bind(no)
                    .bind(node_id)
                    .bind(n)
                    .fetch_optional(db)
                    .await)?
            }
            None => {
                let sql = format!(
                    "{EXEC_SELECT} WHERE e.instance_no = $1 AND e.node_id = $2 AND e.latest"
                );
                read!(self.store, |db| sqlx::query_as(&sql)
                    .bind(no)
                    .bind(node_id)
                    .fetch_optional(db)
                    .await)?
            }
        };
        if let Some(r) = row {
            return r.try_into();
        }
        self.get_instance(no).await?;
        Err(match exec_no {
            Some(n) => Error::not_found(format_args!(
                "execNo {n} of node '{node_id}' in task instance {no}"
            )),
            None => Error::not_found(format_args!("node '{node_id}' in task instance {no}")),
        })
    }

    /// Every execution of one node of an instance (`execNo` 1, 2, ...): its re-run history.
    /// 404 when the node is not in the instance.
    pub async fn node_execution_history(
        &self,
        no: i64,
        node_id: &str,
    ) -> Result<Vec<NodeExecution>> {
        let sql =
            format!("{EXEC_SELECT} WHERE e.instance_no = $1 AND e.node_id = $2 ORDER BY e.exec_no");
        let rows: Vec<ExecRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(no)
            .bind(node_id)
            .fetch_all(db)
            .await)?;
        if rows.is_empty() {
            self.get_instance(no).await?;
            return Err(Error::not_found(format_args!(
                "node '{node_id}' in task instance {no}"
            )));
        }
        rows.into_iter().map(NodeExecution::try_from).collect()
    }

    pub(crate) async fn execution_by_id(&self, exec_id: i64) -> Result<NodeExecution> {
        let sql = format!("{EXEC_SELECT} WHERE e.id = $1");
        let row: Option<ExecRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(exec_id)
            .fetch_optional(db)
            .await)?;
        row.map(NodeExecution::try_from)
            .ok_or_else(|| Error::not_found(format_args!("execution {exec_id}")))?
    }

    /// The whole stored output of one stream of an execution.
    pub async fn read_output(&self, exec_id: i64, stream: Stream) -> Result<Vec<u8>> {
        Ok(self
            .read_output_from(exec_id, stream, 0, i64::MAX)
            .await?
            .data)
    }

    /// Output of one stream from byte `from`, at most about `max` bytes (whole stored chunks).
    pub async fn read_output_from(
        &self,
        exec_id: i64,
        stream: Stream,
        from: i64,
        max: i64,
    ) -> Result<OutputSlice> {
        let from = from.max(0);
        let rows: Vec<(i64, Vec<u8>)> = read!(self.store, |db| {
            sqlx::query_as(
            "SELECT pos, data FROM execution_output WHERE exec_id = $1 AND stream = $2 AND pos + LENGTH(data) > $3 ORDER BY pos"
        )
        .bind(exec_id)
        .bind(stream.code() as i64)
        .bind(from)
        .fetch_all(db)
        .await
        })?;
        let mut out = Vec::new();
        let mut next = from;
        for (pos, data) in rows {
            if pos > next {
                break;
            }
            let skip = (next - pos) as usize;
            if skip >= data.len() {
                continue;
            }
            out.extend_from_slice(&data[skip..]);
            next = pos + data.len() as i64;
            if out.len() as i64 >= max {
                break;
            }
        }
        Ok(OutputSlice { data: out, next })
    }
}

#[cfg(test)]
mod tests {
    use haechi_types::Code;

    use super::*;

    fn request(node_ids: &[&str]) -> StartInstance {
        StartInstance {
            task_id: "t1".into(),
            node_ids: node_ids.iter().map(|n| n.to_string()).collect(),
            arguments: Vec::new(),
            runner_gubun: RunnerGubun::User,
            runner_id: "u".into(),
            origin: None,
        }
    }

    fn revision(apprv_status: &str, ondemand: &str, scheduler: &str, task: &str) -> RevisionRow {
        RevisionRow {
            script_name: "s".into(),
            script: "true".into(),
            os_user: "root".into(),
            timeout_secs: 0,
            exec_ondemand: ondemand.into(),
            exec_scheduler: scheduler.into(),
            exec_task: task.into(),
            next_task_id: String::new(),
            apprv_status: apprv_status.into(),
            revision_no: 1,
            target_nodes: "[]".into(),
            target_groups: "[]".into(),
            target_labels: "{}".into(),
            run_windows: "[]".into(),
            runner_groups: "[]".into(),
        }
    }

    #[test]
    fn a_start_request_is_checked_before_anything_is_read() {
        assert!(check_start_request(&request(&["n1", "n2"])).is_ok());
        let e = check_start_request(&request(&["n1", "n1"])).expect_err("twice");
        assert_eq!(e.field.as_deref(), Some("nodeIdList"));
        let many: Vec<String> = (0..=MAX_NODES).map(|i| format!("n{i}")).collect();
        let mut r = request(&[]);
        r.node_ids = many;
        assert!(check_start_request(&r).is_err());
        let mut r = request(&["n1"]);
        r.origin = Some("x".repeat(513));
        let e = check_start_request(&r).expect_err("origin");
        assert_eq!(e.field.as_deref(), Some("origin"));
    }

    #[test]
    fn only_an_approved_task_starts_and_only_in_the_ways_its_flags_allow() {
        let e = revision("Q", "E", "E", "E")
            .check_startable("t1", RunnerGubun::User)
            .expect_err("not approved");
        assert_eq!(e.code, Code::Conflict);
        assert!(e.message.contains("is not approved (apprvStatus Q)"));
        let rev = revision("A", "E", "D", "D");
        assert!(rev.check_startable("t1", RunnerGubun::User).is_ok());
        let e = rev
            .check_startable("t1", RunnerGubun::Scheduler)
            .expect_err("scheduler off");
        assert_eq!(
            e.message,
            "task 't1' has execScheduler = D: it may not be started by its schedule"
        );
        assert!(rev.check_startable("t1", RunnerGubun::Task).is_err());
    }
}
