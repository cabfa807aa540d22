//! Dry run (issue 24 item 6): for each node a start would reach, whether it would run now and
//! every reason it would not, and the script as it would run there (attributes substituted).
//! Nothing is stored but the audit event; nothing is sent to an agent.

use std::collections::{BTreeSet, HashMap};

use haechi_identity::Caller;
use haechi_store::{in_tx, Tx};
use haechi_types::{time::now_ms, Error, Result};

use crate::groups::{substitute_attrs, TaskTargets};
use crate::model::{exec_flag, stored, ApprovalStatus, NodeStatus, Task};
use crate::nodes::{check_id, check_node_list};
use crate::tasks::check_arguments;
use crate::windows::RunWindow;
use crate::Exec;

/// `POST /api/v1/tasks/{task_id}/dry-run` body.
#[derive(Debug, Clone, Default)]
pub struct DryRunRequest {
    /// The nodes to check; absent or empty: the task's default targets, resolved now.
    pub node_id_list: Option<Vec<String>>,
    /// The arguments a start would pass (checked as a start checks them).
    pub arguments: Option<Vec<String>>,
}

/// One node of a dry run.
#[derive(Debug, Clone)]
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
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// `POST /api/v1/tasks/{task_id}/dry-run` answer.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub task_id: String,
    pub revision_no: i64,
    /// `request` (the caller listed the nodes) or `targets` (the task's default targets).
    pub source: String,
    /// The arguments a start would pass.
    pub arguments: Vec<String>,
    pub nodes: Vec<DryRunNode>,
}

struct Reasons {
    text: Vec<String>,
    codes: Vec<String>,
}

impl Reasons {
    fn add(&mut self, code: &str, text: String) {
        self.codes.push(code.to_owned());
        self.text.push(text);
    }
}

/// What a dry run knows of the nodes it looks at.
struct NodeFacts {
    /// Status and the OS users its agent reported, of each node that exists.
    known: HashMap<String, (NodeStatus, Option<Vec<String>>)>,
    attrs: HashMap<String, crate::groups::NodeAttrs>,
    /// (node, group, the group's run windows).
    group_windows: Vec<(String, String, Vec<RunWindow>)>,
    /// The attribute keys the task's script names.
    keys: BTreeSet<String>,
}

impl Exec {
    /// Answers, for each node, whether `actor` starting the task now would run it there, and
    /// why not. Audited as `task.dry_run`.
    pub async fn dry_run(
        &self,
        caller: &Caller,
        task_id: &str,
        req: DryRunRequest,
    ) -> Result<DryRun> {
        let actor = &caller.actor;
        check_id("taskId", task_id)?;
        let arguments = req.arguments.unwrap_or_default();
        check_arguments("arguments", &arguments)?;
        let listed = req.node_id_list.unwrap_or_default();
        if listed.len() > crate::instances::MAX_NODES {
            return Err(Error::field(
                "nodeIdList",
                format_args!("at most {} nodes", crate::instances::MAX_NODES),
            ));
        }
        check_node_list(&listed)?;
        let task = self.get_task(task_id).await?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let common = self.task_reasons(&mut tx, caller, &task, now).await?;

        // The nodes, and those of the targets left out.
        let (source, nodes, skipped) = if listed.is_empty() {
            let targets: &TaskTargets = &task.targets;
            if targets.is_empty() {
                return Err(Error::field(
                    "nodeIdList",
                    format_args!(
                        "must name at least one node: task '{task_id}' has no default targets"
                    ),
                ));
            }
            let (nodes, skipped) = Self::resolve_targets_in_tx(&mut tx, task_id, targets).await?;
            ("targets", nodes, skipped)
        } else {
            ("request", listed, Vec::new())
        };
        let mut all: Vec<String> = nodes;
        all.extend(skipped.iter().map(|s| s.node_id.clone()));
        all.sort();

        let facts = NodeFacts {
            known: Self::known_nodes_in_tx(&mut tx, &all).await?,
            attrs: Self::node_attrs_in_tx(&mut tx, &all).await?,
            group_windows: Self::group_windows_in_tx(&mut tx, &all).await?,
            keys: crate::groups::script_attr_keys(&task.script),
        };
        let out: Vec<DryRunNode> = all
            .iter()
            .map(|node| self.dry_run_node(&task, &common, &facts, node, now))
            .collect();
        let would_run = out.iter().filter(|n| n.would_run).count();
        haechi_audit::append(
            &mut tx,
            actor
                .event("task.dry_run")
                .target(task_id)
                .detail(serde_json::json!({
                    "revisionNo": task.revision_no, "source": source, "nodes": out.len(),
                    "wouldRun": would_run,
                })),
        )
        .await?;
        tx.commit().await?;
        Ok(DryRun {
            task_id: task_id.to_owned(),
            revision_no: task.revision_no,
            source: source.to_owned(),
            arguments,
            nodes: out,
        })
    }

    /// Reasons of the task itself, the same on every node: approval, the on-demand flag,
    /// the caller's runner groups, the task's run windows.
    async fn task_reasons(
        &self,
        tx: &mut Tx,
        caller: &Caller,
        task: &Task,
        now: i64,
    ) -> Result<Reasons> {
        let task_id = task.id.as_str();
        let mut common = Reasons {
            text: Vec::new(),
            codes: Vec::new(),
        };
        if task.apprv_status != ApprovalStatus::Approved {
            common.add(
                "not_approved",
                format!(
                    "task '{task_id}' is not approved (apprvStatus {}); only an approved task runs",
                    task.apprv_status
                ),
            );
        }
        if !task.exec_ondemand {
            common.add(
                "ondemand_disabled",
                format!(
                    "task '{task_id}' has execOndemand = {}: it may not be started on demand",
                    exec_flag::as_code(task.exec_ondemand)
                ),
            );
        }
        let runner_groups = serde_json::to_string(&task.runner_groups)?;
        if let Err(e) =
            Self::check_runner_in_tx(tx, task_id, &runner_groups, &caller.actor.user_id).await
        {
            if e.code != haechi_types::Code::Forbidden {
                return Err(e);
            }
            common.add("not_runner", e.message);
        }
        if let Some(w) = self.window_refusal(
            task_id,
            &format!("task '{task_id}'"),
            &task.run_windows,
            now,
        ) {
            common.add("outside_window", w.message);
        }
        Ok(common)
    }

    /// Status and reported OS users of each of `nodes` that exists.
    async fn known_nodes_in_tx(
        tx: &mut Tx,
        nodes: &[String],
    ) -> Result<HashMap<String, (NodeStatus, Option<Vec<String>>)>> {
        let mut known = HashMap::new();
        for chunk in nodes.chunks(500) {
            let mut w = haechi_store::Where::default();
            let marks: Vec<String> = chunk
                .iter()
                .map(|id| w.arg(haechi_store::Arg::Text(id.clone())))
                .collect();
            let sql = format!(
                "SELECT id, status, os_users FROM nodes WHERE id IN ({})",
                marks.join(", ")
            );
            let rows: Vec<(String, String, Option<String>)> =
                in_tx!(tx, |c| haechi_store::bind_args!(
                    sqlx::query_as(&sql),
                    w.args
                )
                .fetch_all(&mut *c)
                .await)?;
            for (id, status, users) in rows {
                let users: Option<Vec<String>> = users.and_then(|u| serde_json::from_str(&u).ok());
                let status = stored("nodes.status", &status, NodeStatus::from_code)?;
                known.insert(id, (status, users));
            }
        }
        Ok(known)
    }

    /// One node's answer: the task's reasons, then the node's own (unknown, disabled, no agent,
    /// OS user, its groups' windows, missing attributes), and the script as it would run there.
    fn dry_run_node(
        &self,
        task: &Task,
        common: &Reasons,
        facts: &NodeFacts,
        node: &str,
        now: i64,
    ) -> DryRunNode {
        let mut r = Reasons {
            text: common.text.clone(),
            codes: common.codes.clone(),
        };
        match facts.known.get(node) {
            None => r.add("unknown_node", format!("node '{node}' does not exist")),
            Some((status, users)) => {
                if *status == NodeStatus::Disabled {
                    r.add(
                        "disabled",
                        format!("node '{node}' is disabled (status D) and gets no work"),
                    );
                }
                if !self.hub.is_connected(node) {
                    r.add(
                        "not_connected",
                        format!(
                            "node '{node}' has no agent connected now: the run would wait until its agent connects"
                        ),
                    );
                }
                if let Some(users) = users {
                    if !users.contains(&task.os_user) {
                        r.add(
                            "os_user_missing",
                            format!(
                                "osUser '{}' is not a user the agent on node '{node}' can run scripts as (it reports: {})",
                                task.os_user,
                                summarize(users)
                            ),
                        );
                    }
                }
            }
        }
        for (n, group, windows) in &facts.group_windows {
            if n != node {
                continue;
            }
            let scope = format!("node group '{group}' (of node '{node}')");
            if let Some(w) = self.window_refusal(&task.id, &scope, windows as &[RunWindow], now) {
                r.add("outside_window", w.message);
            }
        }
        let none = crate::groups::NodeAttrs::default();
        let a = facts.attrs.get(node).unwrap_or(&none);
        let mut picked = std::collections::BTreeMap::new();
        for k in &facts.keys {
            match a.values.get(k) {
                Some(v) => {
                    picked.insert(k.clone(), v.clone());
                }
                None => r.add("attribute_missing", a.missing_message(node, k)),
            }
        }
        DryRunNode {
            node_id: node.to_owned(),
            would_run: r.codes.is_empty(),
            script: substitute_attrs(&task.script, &picked),
            attributes: picked,
            reasons: r.text,
            reason_codes: r.codes,
        }
    }
}

fn summarize(users: &[String]) -> String {
    if users.len() <= 5 {
        users.join(", ")
    } else {
        format!("{}, … {} users", users[..5].join(", "), users.len())
    }
}
