//! Node groups (issue 24 item 1): named sets of nodes with attributes (`KEY=VALUE`), a
//! priority and run windows; the attributes a node's script sees (`@OPM_ATTR.KEY@`); and the
//! resolution of a task's default targets (nodes, node groups, a label selector).
//!
//! Which value wins when several sources set one key on a node (documented in
//! `docs/opmate.md`): the node's own labels (reported by its agent) are the base; its groups
//! override them, applied from the lowest `priority` to the highest, so the highest priority
//! wins; between groups of equal priority, the name that sorts first wins.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use haechi_identity::Caller;
use haechi_store::{in_tx, read, Tx};
use haechi_types::{time::now_ms, Error, Result};
use serde::{Deserialize, Serialize};

use crate::model::{stored, NodeStatus};
use crate::nodes::check_id;
use crate::windows::RunWindow;
use crate::Exec;
use haechi_store::{bind_args, Arg, Where};

/// Most attributes per group, labels per node.
pub const MAX_ATTRIBUTES: usize = 256;
/// Longest attribute value, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// A node group.
#[derive(Debug, Clone)]
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

/// `POST /api/v1/node-groups` and `PUT /api/v1/node-groups/{name}` body. On `PUT`, an absent
/// field keeps its value.
#[derive(Debug, Clone, Default)]
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

/// A task's default targets: `nodes` and the members of `nodeGroups` (their union), narrowed
/// to the nodes whose labels hold every `labels` pair; with no nodes and no groups, every node
/// whose labels hold them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskTargets {
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub node_groups: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl TaskTargets {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.node_groups.is_empty() && self.labels.is_empty()
    }
}

/// A node left out of a start, and why (disabled, unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedNode {
    pub node_id: String,
    pub reason: String,
}

/// How an instance's nodes were chosen from its task's default targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// Attribute keys and label keys: 1–64 characters of letters, digits, `_`, `.`, `-`.
pub(crate) fn check_key(field: &str, k: &str) -> Result<()> {
    let ok = !k.is_empty()
        && k.len() <= 64
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::field(
            field,
            format_args!("key {k:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'"),
        ))
    }
}

/// Checks a map of attributes (or labels).
pub(crate) fn check_attributes(field: &str, m: &BTreeMap<String, String>) -> Result<()> {
    if m.len() > MAX_ATTRIBUTES {
        return Err(Error::field(
            field,
            format_args!("at most {MAX_ATTRIBUTES} entries"),
        ));
    }
    for (k, v) in m {
        check_key(field, k)?;
        if v.len() > MAX_VALUE_BYTES {
            return Err(Error::field(
                format!("{field}.{k}"),
                format_args!("must be at most {MAX_VALUE_BYTES} bytes"),
            ));
        }
        if v.contains('\0') {
            return Err(Error::field(
                format!("{field}.{k}"),
                "must not contain a NUL character",
            ));
        }
    }
    Ok(())
}

const PREFIX: &str = "@OPM_ATTR.";

/// The attribute keys a script names (`@OPM_ATTR.KEY@`).
pub fn script_attr_keys(script: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut rest = script;
    while let Some(i) = rest.find(PREFIX) {
        let after = &rest[i + PREFIX.len()..];
        let key_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .unwrap_or(after.len());
        if key_len > 0 && after[key_len..].starts_with('@') {
            keys.insert(after[..key_len].to_owned());
            rest = &after[key_len + 1..];
        } else {
            rest = after;
        }
    }
    keys
}

/// `script` with every `@OPM_ATTR.KEY@` whose key `attrs` holds replaced by its value.
pub fn substitute_attrs(script: &str, attrs: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(i) = rest.find(PREFIX) {
        out.push_str(&rest[..i]);
        let after = &rest[i + PREFIX.len()..];
        let key_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .unwrap_or(after.len());
        match attrs.get(&after[..key_len]) {
            Some(v) if key_len > 0 && after[key_len..].starts_with('@') => {
                out.push_str(v);
                rest = &after[key_len + 1..];
            }
            _ => {
                out.push_str(PREFIX);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One node's attributes: the value of each key and where it came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeAttrs {
    pub values: BTreeMap<String, String>,
    /// `label` or `group:NAME`.
    pub sources: BTreeMap<String, String>,
    pub groups: Vec<String>,
}

impl NodeAttrs {
    /// The attributes `keys` names, or the first key missing.
    pub fn pick(
        &self,
        keys: &BTreeSet<String>,
    ) -> std::result::Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for k in keys {
            match self.values.get(k) {
                Some(v) => {
                    out.insert(k.clone(), v.clone());
                }
                None => return Err(k.clone()),
            }
        }
        Ok(out)
    }

    pub fn missing_message(&self, node: &str, key: &str) -> String {
        let groups = if self.groups.is_empty() {
            "it is in no node group".to_owned()
        } else {
            format!("its groups: {}", self.groups.join(", "))
        };
        format!(
            "attribute {key} (@OPM_ATTR.{key}@) is not set for node '{node}' ({groups}; nor is it one of the node's labels); the script was not started"
        )
    }
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    name: String,
    description: String,
    attributes: String,
    priority: i64,
    run_windows: String,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

fn marks(w: &mut Where, ids: &[String]) -> String {
    ids.iter()
        .map(|id| w.arg(Arg::Text(id.clone())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A group definition checked and ready to store: description, nodes, attributes, priority,
/// run windows.
type GroupFields = (
    String,
    Vec<String>,
    BTreeMap<String, String>,
    i64,
    Vec<RunWindow>,
);

impl Exec {
    fn group_spec(&self, spec: NodeGroupSpec, base: Option<&NodeGroup>) -> Result<GroupFields> {
        let description = spec
            .description
            .or_else(|| base.map(|b| b.description.clone()))
            .unwrap_or_default();
        if description.chars().count() > 2000 {
            return Err(Error::field(
                "description",
                "must be at most 2000 characters",
            ));
        }
        haechi_types::ident::check_no_control("description", &description)?;
        let nodes = spec
            .nodes
            .or_else(|| base.map(|b| b.nodes.clone()))
            .unwrap_or_default();
        if nodes.len() > crate::instances::MAX_NODES {
            return Err(Error::field(
                "nodes",
                format_args!("at most {} nodes", crate::instances::MAX_NODES),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, n) in nodes.iter().enumerate() {
            check_id(&format!("nodes[{i}]"), n)?;
            if !seen.insert(n.as_str()) {
                return Err(Error::field(
                    "nodes",
                    format_args!("lists node '{n}' twice"),
                ));
            }
        }
        let attributes = spec
            .attributes
            .or_else(|| base.map(|b| b.attributes.clone()))
            .unwrap_or_default();
        check_attributes("attributes", &attributes)?;
        let priority = spec.priority.or(base.map(|b| b.priority)).unwrap_or(0);
        if !(-1_000_000..=1_000_000).contains(&priority) {
            return Err(Error::field(
                "priority",
                "must be between -1000000 and 1000000",
            ));
        }
        let windows = match spec.run_windows {
            Some(w) => crate::windows::validate("runWindows", &w, self.cfg.utc_offset_secs)?,
            None => base.map(|b| b.run_windows.clone()).unwrap_or_default(),
        };
        Ok((description, nodes, attributes, priority, windows))
    }

    async fn check_nodes_exist(tx: &mut Tx, field: &str, nodes: &[String]) -> Result<()> {
        let mut found = BTreeSet::new();
        for chunk in nodes.chunks(500) {
            let mut w = Where::default();
            let m = marks(&mut w, chunk);
            let sql = format!("SELECT id FROM nodes WHERE id IN ({m})");
            let rows: Vec<String> = in_tx!(tx, |c| bind_args!(sqlx::query_scalar(&sql), w.args)
                .fetch_all(&mut *c)
                .await)?;
            found.extend(rows);
        }
        if let Some(n) = nodes.iter().find(|n| !found.contains(*n)) {
            return Err(Error::field(
                field,
                format_args!("node '{n}' does not exist (GET /api/v1/nodes lists the nodes)"),
            ));
        }
        Ok(())
    }

    async fn write_members(tx: &mut Tx, name: &str, nodes: &[String]) -> Result<()> {
        in_tx!(tx, |c| sqlx::query(
            "DELETE FROM node_group_members WHERE group_name = $1"
        )
        .bind(name)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        for chunk in nodes.chunks(200) {
            let mut w = Where::default();
            let pname = w.arg(Arg::Text(name.to_owned()));
            let rows: Vec<String> = chunk
                .iter()
                .map(|n| {
                    let p = w.arg(Arg::Text(n.clone()));
                    format!("({pname}, {p})")
                })
                .collect();
            let sql = format!(
                "INSERT INTO node_group_members (group_name, node_id) VALUES {}",
                rows.join(", ")
            );
            in_tx!(tx, |c| bind_args!(sqlx::query(&sql), w.args)
                .execute(&mut *c)
                .await
                .map(|_| ()))?;
        }
        Ok(())
    }

    /// Creates a node group.
    pub async fn create_node_group(
        &self,
        caller: &Caller,
        spec: NodeGroupSpec,
    ) -> Result<NodeGroup> {
        let actor = &caller.actor;
        let name = spec
            .name
            .clone()
            .ok_or_else(|| Error::field("name", "is required"))?;
        check_id("name", &name)?;
        let (description, nodes, attributes, priority, windows) = self.group_spec(spec, None)?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        Self::check_nodes_exist(&mut tx, "nodes", &nodes).await?;
        let inserted = in_tx!(tx, |c| {
            sqlx::query(
                "INSERT INTO node_groups (name, description, attributes, priority, run_windows, created_by, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&name)
            .bind(&description)
            .bind(serde_json::to_string(&attributes).unwrap_or_default())
            .bind(priority)
            .bind(serde_json::to_string(&windows).unwrap_or_default())
            .bind(&actor.user_id)
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
        })?;
        if inserted == 0 {
            return Err(Error::conflict(format!(
                "node group '{name}' already exists; change it with PUT /api/v1/node-groups/{name}"
            )));
        }
        Self::write_members(&mut tx, &name, &nodes).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("node_group.create")
                .target(name.clone())
                .detail(serde_json::json!({
                    "nodes": nodes.len(), "attributeKeys": attributes.keys().collect::<Vec<_>>(),
                    "priority": priority, "runWindows": windows.len(),
                })),
        )
        .await?;
        tx.commit().await?;
        self.get_node_group(&name).await
    }

    /// Changes a node group (absent fields keep their value).
    pub async fn update_node_group(
        &self,
        caller: &Caller,
        name: &str,
        spec: NodeGroupSpec,
    ) -> Result<NodeGroup> {
        let actor = &caller.actor;
        if let Some(n) = spec.name.as_deref().filter(|n| *n != name) {
            return Err(Error::field(
                "name",
                format_args!("the body names group '{n}' but the path names '{name}'; a group cannot be renamed"),
            ));
        }
        let current = self.get_node_group(name).await?;
        let (description, nodes, attributes, priority, windows) =
            self.group_spec(spec, Some(&current))?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        Self::check_nodes_exist(&mut tx, "nodes", &nodes).await?;
        let updated = in_tx!(tx, |c| {
            sqlx::query(
                "UPDATE node_groups SET description = $2, attributes = $3, priority = $4, run_windows = $5, \
                 updated_at = $6 WHERE name = $1",
            )
            .bind(name)
            .bind(&description)
            .bind(serde_json::to_string(&attributes).unwrap_or_default())
            .bind(priority)
            .bind(serde_json::to_string(&windows).unwrap_or_default())
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
        })?;
        if updated == 0 {
            return Err(Error::not_found(format_args!("node group '{name}'")));
        }
        Self::write_members(&mut tx, name, &nodes).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("node_group.update")
                .target(name)
                .detail(serde_json::json!({
                    "nodes": nodes.len(), "attributeKeys": attributes.keys().collect::<Vec<_>>(),
                    "priority": priority, "runWindows": windows.len(),
                })),
        )
        .await?;
        tx.commit().await?;
        self.get_node_group(name).await
    }

    /// Deletes a node group. Tasks that target it are refused (409 naming them).
    pub async fn delete_node_group(&self, caller: &Caller, name: &str) -> Result<()> {
        let actor = &caller.actor;
        let mut tx = self.store.begin().await?;
        let rows: Vec<(String, String)> = in_tx!(tx, |c| {
            sqlx::query_as(
                "SELECT t.id, r.target_groups FROM tasks t JOIN task_revisions r ON r.task_id = t.id \
                 AND r.revision_no = t.revision_no WHERE r.target_groups <> '[]' ORDER BY t.id",
            )
            .fetch_all(&mut *c)
            .await
        })?;
        let targeting: Vec<String> = rows
            .into_iter()
            .filter(|(_, g)| {
                serde_json::from_str::<Vec<String>>(g)
                    .unwrap_or_default()
                    .iter()
                    .any(|g| g == name)
            })
            .map(|(id, _)| id)
            .collect();
        if !targeting.is_empty() {
            return Err(Error::conflict(format!(
                "node group '{name}' is a target of task(s) {}; change their targets first",
                targeting.join(", ")
            )));
        }
        let deleted = in_tx!(tx, |c| sqlx::query(
            "DELETE FROM node_groups WHERE name = $1"
        )
        .bind(name)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        if deleted == 0 {
            return Err(Error::not_found(format_args!("node group '{name}'")));
        }
        in_tx!(tx, |c| sqlx::query(
            "DELETE FROM node_group_members WHERE group_name = $1"
        )
        .bind(name)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        haechi_audit::append(&mut tx, actor.event("node_group.delete").target(name)).await?;
        tx.commit().await?;
        Ok(())
    }

    fn group_from_row(r: GroupRow, nodes: Vec<String>) -> NodeGroup {
        NodeGroup {
            name: r.name,
            description: r.description,
            nodes,
            attributes: serde_json::from_str(&r.attributes).unwrap_or_default(),
            priority: r.priority,
            run_windows: serde_json::from_str(&r.run_windows).unwrap_or_default(),
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }

    pub async fn get_node_group(&self, name: &str) -> Result<NodeGroup> {
        let row: Option<GroupRow> = read!(self.store, |db| {
            sqlx::query_as(
            "SELECT name, description, attributes, priority, run_windows, created_by, created_at, updated_at \
             FROM node_groups WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(db)
        .await
        })?;
        let row = row.ok_or_else(|| Error::not_found(format_args!("node group '{name}'")))?;
        let nodes: Vec<String> = read!(self.store, |db| sqlx::query_scalar(
            "SELECT node_id FROM node_group_members WHERE group_name = $1 ORDER BY node_id"
        )
        .bind(name)
        .fetch_all(db)
        .await)?;
        Ok(Self::group_from_row(row, nodes))
    }

    /// Every node group, by name.
    pub async fn list_node_groups(&self) -> Result<Vec<NodeGroup>> {
        let rows: Vec<GroupRow> = read!(self.store, |db| {
            sqlx::query_as(
            "SELECT name, description, attributes, priority, run_windows, created_by, created_at, updated_at \
             FROM node_groups ORDER BY name"
        )
        .fetch_all(db)
        .await
        })?;
        let members: Vec<(String, String)> = read!(self.store, |db| sqlx::query_as(
            "SELECT group_name, node_id FROM node_group_members ORDER BY group_name, node_id"
        )
        .fetch_all(db)
        .await)?;
        let mut by_group: HashMap<String, Vec<String>> = HashMap::new();
        for (g, n) in members {
            by_group.entry(g).or_default().push(n);
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                let nodes = by_group.remove(&r.name).unwrap_or_default();
                Self::group_from_row(r, nodes)
            })
            .collect())
    }

    /// The attributes of each of `nodes`: labels, then groups by the precedence rule.
    pub(crate) async fn node_attrs_in_tx(
        tx: &mut Tx,
        nodes: &[String],
    ) -> Result<HashMap<String, NodeAttrs>> {
        let mut out: HashMap<String, NodeAttrs> = HashMap::new();
        for chunk in nodes.chunks(500) {
            let mut w = Where::default();
            let m = marks(&mut w, chunk);
            let sql = format!("SELECT id, labels FROM nodes WHERE id IN ({m})");
            let rows: Vec<(String, String)> =
                in_tx!(tx, |c| bind_args!(sqlx::query_as(&sql), w.args)
                    .fetch_all(&mut *c)
                    .await)?;
            for (id, labels) in rows {
                let labels: BTreeMap<String, String> =
                    serde_json::from_str(&labels).unwrap_or_default();
                let a = out.entry(id).or_default();
                for (k, v) in labels {
                    a.sources.insert(k.clone(), "label".into());
                    a.values.insert(k, v);
                }
            }
            let mut w = Where::default();
            let m = marks(&mut w, chunk);
            // Lowest priority first, and between equal priorities the last name first, so
            // that each later group overrides: the highest priority, then the first name, wins.
            let sql = format!(
                "SELECT m.node_id, g.name, g.attributes FROM node_group_members m \
                 JOIN node_groups g ON g.name = m.group_name WHERE m.node_id IN ({m}) \
                 ORDER BY g.priority ASC, g.name DESC"
            );
            let rows: Vec<(String, String, String)> =
                in_tx!(tx, |c| bind_args!(sqlx::query_as(&sql), w.args)
                    .fetch_all(&mut *c)
                    .await)?;
            for (node, group, attrs) in rows {
                let attrs: BTreeMap<String, String> =
                    serde_json::from_str(&attrs).unwrap_or_default();
                let a = out.entry(node).or_default();
                a.groups.push(group.clone());
                for (k, v) in attrs {
                    a.sources.insert(k.clone(), format!("group:{group}"));
                    a.values.insert(k, v);
                }
            }
        }
        for a in out.values_mut() {
            a.groups.sort();
        }
        Ok(out)
    }

    /// The run windows of the groups of `nodes` that have some: (node, group, windows).
    pub(crate) async fn group_windows_in_tx(
        tx: &mut Tx,
        nodes: &[String],
    ) -> Result<Vec<(String, String, Vec<RunWindow>)>> {
        let mut out = Vec::new();
        for chunk in nodes.chunks(500) {
            let mut w = Where::default();
            let m = marks(&mut w, chunk);
            let sql = format!(
                "SELECT m.node_id, g.name, g.run_windows FROM node_group_members m \
                 JOIN node_groups g ON g.name = m.group_name WHERE m.node_id IN ({m}) \
                 AND g.run_windows <> '[]' ORDER BY m.node_id, g.name"
            );
            let rows: Vec<(String, String, String)> =
                in_tx!(tx, |c| bind_args!(sqlx::query_as(&sql), w.args)
                    .fetch_all(&mut *c)
                    .await)?;
            for (node, group, windows) in rows {
                let windows: Vec<RunWindow> = serde_json::from_str(&windows).unwrap_or_default();
                if !windows.is_empty() {
                    out.push((node, group, windows));
                }
            }
        }
        Ok(out)
    }

    /// Resolves a task's default targets now: the nodes to run on (enabled ones, by id) and
    /// the target nodes left out with the reason.
    pub(crate) async fn resolve_targets_in_tx(
        tx: &mut Tx,
        task_id: &str,
        targets: &TaskTargets,
    ) -> Result<(Vec<String>, Vec<SkippedNode>)> {
        let mut chosen: BTreeSet<String> = targets.nodes.iter().cloned().collect();
        for g in &targets.node_groups {
            let exists: Option<String> = in_tx!(tx, |c| sqlx::query_scalar(
                "SELECT name FROM node_groups WHERE name = $1"
            )
            .bind(g)
            .fetch_optional(&mut *c)
            .await)?;
            if exists.is_none() {
                return Err(Error::conflict(format!(
                    "task '{task_id}' targets node group '{g}', which does not exist any more; fix the task's targets"
                )));
            }
            let members: Vec<String> = in_tx!(tx, |c| sqlx::query_scalar(
                "SELECT node_id FROM node_group_members WHERE group_name = $1"
            )
            .bind(g)
            .fetch_all(&mut *c)
            .await)?;
            chosen.extend(members);
        }
        let only_labels = targets.nodes.is_empty() && targets.node_groups.is_empty();
        let mut status: HashMap<String, (String, BTreeMap<String, String>)> = HashMap::new();
        if only_labels {
            let rows: Vec<(String, String, String)> = in_tx!(tx, |c| sqlx::query_as(
                "SELECT id, status, labels FROM nodes ORDER BY id"
            )
            .fetch_all(&mut *c)
            .await)?;
            for (id, st, labels) in rows {
                status.insert(id, (st, serde_json::from_str(&labels).unwrap_or_default()));
            }
        } else {
            let ids: Vec<String> = chosen.iter().cloned().collect();
            for chunk in ids.chunks(500) {
                let mut w = Where::default();
                let m = marks(&mut w, chunk);
                let sql = format!("SELECT id, status, labels FROM nodes WHERE id IN ({m})");
                let rows: Vec<(String, String, String)> =
                    in_tx!(tx, |c| bind_args!(sqlx::query_as(&sql), w.args)
                        .fetch_all(&mut *c)
                        .await)?;
                for (id, st, labels) in rows {
                    status.insert(id, (st, serde_json::from_str(&labels).unwrap_or_default()));
                }
            }
        }
        let matches = |labels: &BTreeMap<String, String>| {
            targets
                .labels
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|x| x == v))
        };
        if only_labels {
            chosen = status
                .iter()
                .filter(|(_, (_, labels))| matches(labels))
                .map(|(id, _)| id.clone())
                .collect();
        }
        let mut nodes = Vec::new();
        let mut skipped = Vec::new();
        for id in chosen {
            match status.get(&id) {
                None => skipped.push(SkippedNode {
                    node_id: id,
                    reason: "the node does not exist".into(),
                }),
                Some((_, labels)) if !only_labels && !matches(labels) => {}
                Some((st, _)) => match stored("nodes.status", st, NodeStatus::from_code)? {
                    NodeStatus::Disabled => skipped.push(SkippedNode {
                        node_id: id,
                        reason: "the node is disabled (status D)".into(),
                    }),
                    NodeStatus::Enabled => nodes.push(id),
                },
            }
        }
        Ok((nodes, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_substitution() {
        let s = "port=@OPM_ATTR.PORT@ dir=@OPM_ATTR.app.dir@ mail=a@OPM_ATTR.x y@ @OPM_ATTR.@";
        let keys = script_attr_keys(s);
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            vec!["PORT".to_owned(), "app.dir".to_owned()]
        );
        let mut m = BTreeMap::new();
        m.insert("PORT".to_owned(), "8080".to_owned());
        m.insert("app.dir".to_owned(), "/srv/app".to_owned());
        assert_eq!(
            substitute_attrs(s, &m),
            "port=8080 dir=/srv/app mail=a@OPM_ATTR.x y@ @OPM_ATTR.@"
        );
    }
}
