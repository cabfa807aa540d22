//! Workflow definitions in the store: create, new versions, read, list, delete.
//!
//! A workflow row holds the current version's name and group; `workflow_versions` keeps every
//! version's definition, so a run reads the version it started with however the workflow has
//! changed since. Deleting a workflow hides it (and frees its name); its versions stay, and so
//! its runs stay readable.

use haechi_identity::{Caller, Principal};
use haechi_store::{created_or_taken, in_tx, list_page_inline, read, Paging, Store, Tx, Where};
use haechi_types::{time::now_ms, Code, Error, Result};
use serde_json::{json, Value};

use crate::definition::{self, Action, Definition};
use crate::model::{
    Change, Created, EditLock, Listed, VersionDiff, VersionInfo, WorkflowDoc, WorkflowFilter,
    WorkflowName, WorkflowSummary,
};
use crate::Workflows;

#[derive(sqlx::FromRow, serde::Deserialize)]
pub(crate) struct WorkflowRow {
    pub id: i64,
    pub name: String,
    pub group_name: String,
    pub description: String,
    pub version: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    pub edit_lock_holder: Option<String>,
    pub edit_lock_since: Option<i64>,
    pub edit_lock_touched: Option<i64>,
}

const WORKFLOW_COLUMNS: &str =
    "id, name, group_name, description, version, created_by, created_at, \
     updated_at, deleted_at, edit_lock_holder, edit_lock_since, edit_lock_touched";

impl From<WorkflowRow> for WorkflowSummary {
    fn from(r: WorkflowRow) -> Self {
        WorkflowSummary {
            id: r.id.to_string(),
            name: r.name,
            group: r.group_name,
            description: r.description,
            version: r.version,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A version's stored definition.
pub(crate) async fn load_version(
    store: &Store,
    workflow_id: i64,
    version: i64,
) -> Result<Definition> {
    let text: Option<String> = read!(store, |db| sqlx::query_scalar(
        "SELECT definition FROM workflow_versions WHERE workflow_id = $1 AND version = $2"
    )
    .bind(workflow_id)
    .bind(version)
    .fetch_optional(db)
    .await)?;
    let text = text.ok_or_else(|| {
        Error::not_found(format_args!("version {version} of workflow {workflow_id}"))
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// Finds a workflow by id (deleted ones too when `deleted_ok`) or, for a key that is not a
/// number, by the name of a live one.
pub(crate) async fn find(store: &Store, key: &str, deleted_ok: bool) -> Result<WorkflowRow> {
    let key = key.trim();
    let row: Option<WorkflowRow> = match key.parse::<i64>() {
        Ok(id) => {
            let sql = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1");
            read!(store, |db| sqlx::query_as(&sql)
                .bind(id)
                .fetch_optional(db)
                .await)?
        }
        Err(_) => {
            let sql = format!(
                "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE name = $1 AND deleted_at IS NULL"
            );
            read!(store, |db| sqlx::query_as(&sql)
                .bind(key)
                .fetch_optional(db)
                .await)?
        }
    };
    match row {
        Some(r) if deleted_ok || r.deleted_at.is_none() => Ok(r),
        _ => Err(Error::not_found(format_args!("workflow '{key}'"))),
    }
}

async fn lock_workflow(tx: &mut Tx, id: i64) -> Result<Option<(i64, Option<i64>)>> {
    let sql = format!(
        "SELECT version, deleted_at FROM workflows WHERE id = $1{}",
        tx.for_update()
    );
    Ok(in_tx!(tx, |c| sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *c)
        .await)?)
}

fn name_taken(name: &str) -> Error {
    Error::conflict(format!(
        "a workflow named '{name}' exists already; choose another name or change that workflow with PUT"
    ))
}

impl Workflows {
    /// Parses and checks a definition, including its references to tasks and roles, and
    /// that its author may use every credential its `env_from_vault` names: whoever runs
    /// the workflow lends the step their own access, so an author who could not read a value
    /// must not be able to wire it into a script that others will run.
    async fn checked(
        &self,
        author: &Principal,
        value: &Value,
        self_id: Option<i64>,
    ) -> Result<Definition> {
        let def = definition::parse(value)?;
        self.check_workflow_cycle(self_id, &def).await?;
        for (i, step) in def.steps.iter().enumerate() {
            match &step.action {
                Action::Task(t) if !t.env_from_vault.is_empty() && self.eng.secrets.is_none() => {
                    return Err(def.step_error(
                        i,
                        "env_from_vault",
                        "is not available on this server: it runs without the credential vault",
                    ));
                }
                Action::DbAccess(d) => {
                    let Some(gate) = &self.eng.policies else {
                        return Err(def.step_error(
                            i,
                            "type",
                            "db_access steps are not available on this server: it runs without the DB gateway",
                        ));
                    };
                    if gate.find(&d.policy).await?.is_none() {
                        return Err(def.step_error(
                            i,
                            "policy",
                            format_args!(
                                "policy '{}' does not exist (see GET /dbsafer/api/v1/policy/custom/access-policies)",
                                d.policy
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
        let (tasks, roles) = def.references();
        for (i, task) in tasks {
            if !self.eng.tasks.task_exists(task).await? {
                return Err(def.step_error(
                    i,
                    "task",
                    format_args!(
                        "task '{task}' does not exist (create it with POST /api/v1/tasks)"
                    ),
                ));
            }
        }
        for (i, role) in roles {
            match self.eng.identity.get_role(role).await {
                Ok(_) => {}
                Err(e) if e.code == Code::NotFound => {
                    return Err(def.step_error(
                        i,
                        "role",
                        format_args!("role '{role}' does not exist (see GET /api/v1/roles)"),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        self.check_author_vault_use(author, &def).await?;
        Ok(def)
    }

    /// Refuses a definition whose `workflow` steps, with the other workflows' current
    /// versions, would make a workflow run itself (A → A, A → B → A, ...), naming the cycle.
    /// A reference to a workflow that does not exist is allowed (the step fails when it runs).
    async fn check_workflow_cycle(&self, self_id: Option<i64>, def: &Definition) -> Result<()> {
        let refs = def.workflow_refs();
        if refs.is_empty() {
            return Ok(());
        }
        let store = &self.eng.store;
        // The new definition's node: its id, or 0 for a workflow not created yet.
        let me = self_id.unwrap_or(0);
        let resolve = |key: &str| {
            let key = key.trim().to_owned();
            let own_name = key == def.name;
            async move {
                if own_name {
                    return Ok::<_, Error>(Some(me));
                }
                let r = resolve_ref(store, &key).await?;
                Ok(r)
            }
        };
        let mut names: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
        names.insert(me, def.name.clone());
        // Depth-first from each of this definition's steps; a path back to `me` is a cycle.
        for (i, key) in refs {
            let Some(first) = resolve(key).await? else {
                continue;
            };
            let mut stack: Vec<(i64, Vec<i64>)> = vec![(first, vec![me, first])];
            let mut seen = std::collections::HashSet::new();
            while let Some((node, path)) = stack.pop() {
                if node == me {
                    let mut shown = Vec::with_capacity(path.len());
                    for id in &path {
                        let name = match names.get(id) {
                            Some(n) => n.clone(),
                            None => find(store, &id.to_string(), true)
                                .await
                                .map(|r| r.name)
                                .unwrap_or_else(|_| id.to_string()),
                        };
                        shown.push(format!("'{name}'"));
                    }
                    return Err(def.step_error(
                        i,
                        "workflow",
                        format_args!(
                            "the workflows would run each other in a cycle: {}",
                            shown.join(" → ")
                        ),
                    ));
                }
                if !seen.insert(node) {
                    continue;
                }
                let Ok(row) = find(store, &node.to_string(), false).await else {
                    continue;
                };
                names.insert(node, row.name.clone());
                let child = load_version(store, row.id, row.version).await?;
                for (_, k) in child.workflow_refs() {
                    let next = if k.trim() == def.name && self_id.is_none() {
                        Some(me)
                    } else {
                        resolve_ref(store, k.trim()).await?
                    };
                    if let Some(n) = next {
                        let mut p = path.clone();
                        p.push(n);
                        stack.push((n, p));
                    }
                }
            }
        }
        Ok(())
    }

    async fn check_author_vault_use(&self, author: &Principal, def: &Definition) -> Result<()> {
        let Some(secrets) = &self.eng.secrets else {
            return Ok(());
        };
        for step in &def.steps {
            let Action::Task(t) = &step.action else {
                continue;
            };
            for (name, r) in &t.env_from_vault {
                match secrets.check(author.id, r.credential_id, &r.attribute).await {
                    Ok(()) => {}
                    Err(e) if !crate::ports::is_refusal(&e) => return Err(e),
                    Err(e) => {
                        return Err(Error::forbidden(format!(
                            "step '{}', env_from_vault.{name}: user '{}' may not use attribute '{}' of credential {}, so may not wire it into a workflow: {}",
                            step.name, author.user_id, r.attribute, r.credential_id, e.message
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates a workflow from a definition (a JSON value; YAML is converted by the caller
    /// with [`definition::yaml_to_value`]): version 1.
    pub async fn create_workflow(&self, caller: &Caller, value: &Value) -> Result<Created> {
        let (author, actor) = (&*caller.principal, &caller.actor);
        let def = self.checked(author, value, None).await?;
        let text = serde_json::to_string(&def)?;
        let now = now_ms();
        let mut tx = self.eng.store.begin().await?;
        let inserted: std::result::Result<i64, sqlx::Error> = in_tx!(tx, |c| {
            sqlx::query_scalar(
            "INSERT INTO workflows (name, group_name, description, version, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, $4, $5, $5) RETURNING id"
        )
        .bind(&def.name)
        .bind(&def.group)
        .bind(&def.description)
        .bind(&actor.user_id)
        .bind(now)
        .fetch_one(&mut *c)
        .await
        });
        let id = created_or_taken(inserted, || name_taken(&def.name))?;
        insert_version(&mut tx, id, 1, &def, &text, &actor.user_id, now).await?;
        set_schedules(&mut tx, id, &def, author.id, now).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("workflow.create")
                .target(id.to_string())
                .detail(json!({ "name": def.name, "group": def.group, "version": 1, "steps": def.steps.len() })),
        )
        .await?;
        tx.commit().await?;
        Ok(Created {
            id: id.to_string(),
            version: 1,
        })
    }

    /// Makes a new version of a workflow; runs already started keep theirs.
    pub async fn update_workflow(
        &self,
        caller: &Caller,
        key: &str,
        value: &Value,
    ) -> Result<Created> {
        let (author, actor) = (&*caller.principal, &caller.actor);
        let row = find(&self.eng.store, key, false).await?;
        let def = self.checked(author, value, Some(row.id)).await?;
        let text = serde_json::to_string(&def)?;
        let now = now_ms();
        let mut tx = self.eng.store.begin().await?;
        let Some((current, None)) = lock_workflow(&mut tx, row.id).await? else {
            return Err(Error::not_found(format_args!("workflow '{key}'")));
        };
        crate::locks::check_edit(
            &mut tx,
            row.id,
            key,
            actor,
            self.eng.cfg.edit_lock_idle_secs,
        )
        .await?;
        let version = current + 1;
        let updated: std::result::Result<u64, sqlx::Error> = in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE workflows SET name = $2, group_name = $3, description = $4, version = $5, updated_at = $6 WHERE id = $1"
        )
        .bind(row.id)
        .bind(&def.name)
        .bind(&def.group)
        .bind(&def.description)
        .bind(version)
        .bind(now)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        });
        created_or_taken(updated, || name_taken(&def.name))?;
        insert_version(&mut tx, row.id, version, &def, &text, &actor.user_id, now).await?;
        set_schedules(&mut tx, row.id, &def, author.id, now).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("workflow.update")
                .target(row.id.to_string())
                .detail(json!({ "name": def.name, "group": def.group, "version": version, "steps": def.steps.len() })),
        )
        .await?;
        tx.commit().await?;
        Ok(Created {
            id: row.id.to_string(),
            version,
        })
    }

    /// Deletes a workflow: it leaves the lists and cannot be run; its runs stay readable.
    pub async fn delete_workflow(&self, caller: &Caller, key: &str) -> Result<()> {
        let actor = &caller.actor;
        let row = find(&self.eng.store, key, false).await?;
        let mut tx = self.eng.store.begin().await?;
        crate::locks::check_edit(
            &mut tx,
            row.id,
            key,
            actor,
            self.eng.cfg.edit_lock_idle_secs,
        )
        .await?;
        let n = in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE workflows SET deleted_at = $2, updated_at = $2 WHERE id = $1 AND deleted_at IS NULL"
        )
        .bind(row.id)
        .bind(now_ms())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        })?;
        if n == 0 {
            return Err(Error::not_found(format_args!("workflow '{key}'")));
        }
        haechi_audit::append(
            &mut tx,
            actor
                .event("workflow.delete")
                .target(row.id.to_string())
                .detail(json!({ "name": row.name, "version": row.version })),
        )
        .await?;
        tx.commit().await
    }

    /// A workflow's definition: the current version, or `version`. Deleted workflows are
    /// readable by id (their runs name them).
    pub async fn get_workflow(&self, key: &str, version: Option<i64>) -> Result<WorkflowDoc> {
        let row = find(&self.eng.store, key, true).await?;
        let v = version.unwrap_or(row.version);
        let found: Option<(String, String, i64)> = read!(self.eng.store, |db| {
            sqlx::query_as(
            "SELECT definition, created_by, created_at FROM workflow_versions WHERE workflow_id = $1 AND version = $2"
        )
        .bind(row.id)
        .bind(v)
        .fetch_optional(db)
        .await
        })?;
        let (text, created_by, created_at) = found
            .ok_or_else(|| Error::not_found(format_args!("version {v} of workflow '{key}'")))?;
        Ok(WorkflowDoc {
            id: row.id.to_string(),
            version: v,
            current_version: row.version,
            deleted: row.deleted_at.is_some(),
            edit_lock: match (row.edit_lock_holder, row.edit_lock_since) {
                (Some(holder), Some(since)) => Some(EditLock {
                    holder,
                    since,
                    expires: crate::locks::expires_at(
                        Some(since),
                        row.edit_lock_touched,
                        self.eng.cfg.edit_lock_idle_secs,
                    ),
                }),
                _ => None,
            },
            next_fires: if v == row.version && row.deleted_at.is_none() {
                next_fires(
                    &definition_of(&text)?,
                    self.eng.utc_offset_secs,
                    now_ms(),
                    5,
                )
            } else {
                Vec::new()
            },
            created_by,
            created_at,
            definition: definition_of(&text)?,
        })
    }

    /// Makes version `version`'s definition the workflow's newest version again (a new
    /// version, checked as any edit, so version numbers only grow); returns it.
    pub async fn restore_version(
        &self,
        caller: &Caller,
        key: &str,
        version: i64,
    ) -> Result<Created> {
        let actor = &caller.actor;
        let old = self.get_workflow(key, Some(version)).await?;
        if old.deleted {
            return Err(Error::not_found(format_args!("workflow '{key}'")));
        }
        let value = serde_json::to_value(&old.definition)?;
        let created = self.update_workflow(caller, key, &value).await?;
        haechi_audit::record(
            &self.eng.store,
            actor
                .event("workflow.restore")
                .target(created.id.clone())
                .detail(json!({ "from_version": version, "version": created.version })),
        )
        .await?;
        Ok(created)
    }

    /// What changed from version `from` to version `to`: each field that differs, by path
    /// (steps by name: `steps.switch.url`), with both values; steps added or removed whole.
    pub async fn diff_versions(&self, key: &str, from: i64, to: i64) -> Result<VersionDiff> {
        let a = self.get_workflow(key, Some(from)).await?;
        let b = self.get_workflow(key, Some(to)).await?;
        let mut changes = Vec::new();
        diff_values(
            "",
            &serde_json::to_value(&a.definition)?,
            &serde_json::to_value(&b.definition)?,
            &mut changes,
        );
        Ok(VersionDiff {
            id: a.id,
            from,
            to,
            changes,
        })
    }

    /// Every version of a workflow, oldest first.
    pub async fn workflow_versions(&self, key: &str) -> Result<Vec<VersionInfo>> {
        let row = find(&self.eng.store, key, true).await?;
        let rows: Vec<(i64, String, String, String, i64)> = read!(self.eng.store, |db| {
            sqlx::query_as(
            "SELECT version, name, group_name, created_by, created_at FROM workflow_versions WHERE workflow_id = $1 \
             ORDER BY version"
        )
        .bind(row.id)
        .fetch_all(db)
        .await
        })?;
        Ok(rows
            .into_iter()
            .map(
                |(version, name, group, created_by, created_at)| VersionInfo {
                    version,
                    name,
                    group,
                    created_by,
                    created_at,
                },
            )
            .collect())
    }

    /// Live workflows, by id.
    pub async fn list_workflows(
        &self,
        f: &WorkflowFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Listed<WorkflowSummary>> {
        Ok(self
            .workflow_page::<WorkflowRow>(WORKFLOW_COLUMNS, f, limit, offset)
            .await?
            .map(WorkflowSummary::from))
    }

    /// Live workflows' ids, names and groups, by id (the MDRM list answers only these): the
    /// other columns are not read.
    pub async fn list_workflow_names(
        &self,
        f: &WorkflowFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Listed<WorkflowName>> {
        #[derive(sqlx::FromRow, serde::Deserialize)]
        struct NameRow {
            id: i64,
            name: String,
            group_name: String,
        }
        Ok(self
            .workflow_page::<NameRow>("id, name, group_name", f, limit, offset)
            .await?
            .map(|r| WorkflowName {
                id: r.id.to_string(),
                name: r.name,
                group: r.group_name,
            }))
    }

    /// A page of live workflows as `R` (read from `columns_sql`), by id, and the total
    /// ([`haechi_store::list_page_inline`]: on SQLite on the calling thread).
    async fn workflow_page<R>(
        &self,
        columns_sql: &str,
        f: &WorkflowFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Listed<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + serde::de::DeserializeOwned
            + Send
            + Unpin,
    {
        let mut w = Where::default();
        w.raw("deleted_at IS NULL".into());
        w.eq_text("group_name", &f.group);
        w.eq_text("name", &f.name);
        list_page_inline(
            &self.eng.store,
            columns_sql,
            "workflows",
            &w,
            "id",
            Paging { limit, offset },
        )
        .await
    }
}

fn definition_of(text: &str) -> Result<Definition> {
    Ok(serde_json::from_str(text)?)
}

/// The next `per_schedule` fires of each schedule after `after_ms`, soonest first.
pub(crate) fn next_fires(
    def: &Definition,
    utc_offset_secs: i32,
    after_ms: i64,
    per_schedule: usize,
) -> Vec<crate::model::NextFire> {
    let mut out = Vec::new();
    for (i, s) in def.schedules.iter().enumerate() {
        let Ok(spec) =
            haechi_exec::CronSpec::parse(&s.cron, s.timezone.as_deref(), utc_offset_secs, true)
        else {
            continue;
        };
        let mut t = after_ms;
        for _ in 0..per_schedule {
            let Some(next) = spec.next_after(t) else {
                break;
            };
            out.push(crate::model::NextFire {
                schedule: i,
                cron: s.cron.clone(),
                at: next,
                at_iso: haechi_types::time::iso_ms(next),
            });
            t = next;
        }
    }
    out.sort_by_key(|f| (f.at, f.schedule));
    out
}

/// Keeps the current version's schedules on the workflow's row (the scheduler reads them
/// there), with who saved them: scheduled runs start with that user's rights.
async fn set_schedules(
    tx: &mut Tx,
    id: i64,
    def: &Definition,
    author_pk: i64,
    now: i64,
) -> Result<()> {
    let text = if def.schedules.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&def.schedules)?)
    };
    in_tx!(tx, |c| sqlx::query(
        "UPDATE workflows SET schedules = $2, schedules_by = $3, schedules_at = $4 WHERE id = $1"
    )
    .bind(id)
    .bind(&text)
    .bind(text.as_ref().map(|_| author_pk))
    .bind(text.as_ref().map(|_| now))
    .execute(&mut *c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Which workflow a `workflow` step's reference names now: an id, or the name of a live
/// workflow (`None`: none).
pub(crate) async fn resolve_ref(store: &Store, key: &str) -> Result<Option<i64>> {
    match find(store, key, false).await {
        Ok(r) => Ok(Some(r.id)),
        Err(e) if e.code == Code::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

async fn insert_version(
    tx: &mut Tx,
    id: i64,
    version: i64,
    def: &Definition,
    text: &str,
    by: &str,
    now: i64,
) -> Result<()> {
    in_tx!(tx, |c| {
        sqlx::query(
        "INSERT INTO workflow_versions (workflow_id, version, name, group_name, description, definition, created_by, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    )
    .bind(id)
    .bind(version)
    .bind(&def.name)
    .bind(&def.group)
    .bind(&def.description)
    .bind(text)
    .bind(by)
    .bind(now)
    .execute(&mut *c)
    .await
    .map(|_| ())
    })?;
    Ok(())
}

/// Steps compared by name, so a step moved in the list is not "changed everywhere".
fn keyed_steps(v: &Value) -> Option<Vec<(String, &Value)>> {
    v.as_array()?
        .iter()
        .map(|s| Some((s.get("name")?.as_str()?.to_owned(), s)))
        .collect()
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn diff_values(path: &str, a: &Value, b: &Value, out: &mut Vec<Change>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = join(path, k);
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff_values(&p, va, vb, out),
                    (va, vb) => out.push(Change {
                        path: p,
                        from: va.cloned(),
                        to: vb.cloned(),
                    }),
                }
            }
        }
        (Value::Array(_), Value::Array(_)) if path == "steps" => {
            match (keyed_steps(a), keyed_steps(b)) {
                (Some(xa), Some(xb)) => {
                    for (name, sa) in &xa {
                        let p = join(path, name);
                        match xb.iter().find(|(n, _)| n == name) {
                            Some((_, sb)) => diff_values(&p, sa, sb, out),
                            None => out.push(Change {
                                path: p,
                                from: Some((*sa).clone()),
                                to: None,
                            }),
                        }
                    }
                    for (name, sb) in &xb {
                        if !xa.iter().any(|(n, _)| n == name) {
                            out.push(Change {
                                path: join(path, name),
                                from: None,
                                to: Some((*sb).clone()),
                            });
                        }
                    }
                    let order = |l: &Vec<(String, &Value)>| -> Vec<String> {
                        l.iter().map(|(n, _)| n.clone()).collect()
                    };
                    let (oa, ob) = (order(&xa), order(&xb));
                    let common_a: Vec<&String> = oa.iter().filter(|n| ob.contains(n)).collect();
                    let common_b: Vec<&String> = ob.iter().filter(|n| oa.contains(n)).collect();
                    if common_a != common_b {
                        out.push(Change {
                            path: "steps (order)".to_owned(),
                            from: Some(json!(oa)),
                            to: Some(json!(ob)),
                        });
                    }
                }
                _ => out.push(Change {
                    path: path.to_owned(),
                    from: Some(a.clone()),
                    to: Some(b.clone()),
                }),
            }
        }
        _ => out.push(Change {
            path: path.to_owned(),
            from: Some(a.clone()),
            to: Some(b.clone()),
        }),
    }
}
