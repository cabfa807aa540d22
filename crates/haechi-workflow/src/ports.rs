//! What the engine needs from the other engines, as narrow traits: running OPMATE tasks
//! ([`TaskRunner`], implemented over `haechi-exec` by [`ExecTasks`]), reading vault values for
//! `env_from_vault` ([`SecretSource`]) and unlocking DBSAFER policies for `db_access` steps
//! ([`PolicyGate`]); the last two are implemented where the engines are wired (the `haechi`
//! binary), so this crate depends on neither the vault nor the gateway. The driver only ever
//! sees these traits, so its logic is the same whatever is behind them.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use haechi_exec::{
    Exec, NodeExecFilter, Paging, ResultCode, RunEnvSource, RunnerGubun, SecretEnv, StartInstance,
};
use haechi_identity::Actor;
use haechi_store::{read, Tx};
use haechi_types::{Code, Error, Result};
use secrecy::{ExposeSecret, SecretString};

use crate::definition::Action;
use crate::Engine;

/// A task instance to start for one attempt of a task step.
#[derive(Debug, Clone)]
pub struct TaskStart {
    pub task_id: String,
    pub nodes: Vec<String>,
    pub arguments: Vec<String>,
    /// `<execution_id>/<step>/<attempt>`: the instance names the attempt that started it.
    pub origin: String,
    /// Who started the execution (the instance's runner and audit actor).
    pub actor: Actor,
    /// The step's `env_from_vault` variables, in name order.
    pub vault_uses: Vec<VaultUse>,
    /// Their values, read for this attempt just before it starts (never stored; `Debug`
    /// redacts them).
    pub env: Vec<SecretEnv>,
    /// Why the values could not be read: the attempt fails with this reason, no task starts.
    pub env_refused: Option<String>,
}

/// One `env_from_vault` variable of a task step.
#[derive(Debug, Clone)]
pub struct VaultUse {
    pub name: String,
    pub credential_id: i64,
    pub attribute: String,
}

/// Reads vault values for task steps' `env_from_vault`.
pub trait SecretSource: Send + Sync + 'static {
    /// The value of attribute `attribute` (its name) of credential `credential`, read as user
    /// `user_pk` (who started the execution) may read it; the vault checks access and audits
    /// the read. A refusal is an `Err` whose message says why.
    fn read<'a>(
        &'a self,
        user_pk: i64,
        actor: &'a Actor,
        credential: i64,
        attribute: &'a str,
    ) -> BoxFuture<'a, Result<SecretString>>;

    /// Whether user `user_pk` may use attribute `attribute` of credential `credential`, by the
    /// rule of [`SecretSource::read`], without reading the value: checked for whoever saves a
    /// definition that names it. A refusal is an `Err` whose message says why.
    fn check<'a>(
        &'a self,
        user_pk: i64,
        credential: i64,
        attribute: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
}

/// A secret sealed with the vault's keys: the data key's id, the nonce and the ciphertext.
#[derive(Clone)]
pub struct SealedSecret {
    pub key_id: i64,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Seals and opens the values of password parameters with the vault's keys.
pub trait SecretSealer: Send + Sync + 'static {
    /// Seals `plaintext` bound to `context`; a sealed vault is a 503 saying so.
    fn seal<'a>(
        &'a self,
        context: &'a str,
        plaintext: &'a str,
    ) -> BoxFuture<'a, Result<SealedSecret>>;

    /// Opens what [`SecretSealer::seal`] sealed for the same `context`.
    fn open<'a>(
        &'a self,
        context: &'a str,
        sealed: &'a SealedSecret,
    ) -> BoxFuture<'a, Result<SecretString>>;
}

/// Unlocks and locks DBSAFER policies for `db_access` steps.
pub trait PolicyGate: Send + Sync + 'static {
    /// The index of the policy named by `policy` (its `policyId`, or its index as a number);
    /// `None` when there is none.
    fn find<'a>(&'a self, policy: &'a str) -> BoxFuture<'a, Result<Option<i64>>>;

    /// Unlocks policy `index` until `until_ms` (unix ms; it counts as locked again from then,
    /// across restarts), as user `user_pk`, who must be allowed to manage policies.
    fn unlock_until<'a>(
        &'a self,
        user_pk: i64,
        actor: &'a Actor,
        index: i64,
        until_ms: i64,
    ) -> BoxFuture<'a, Result<()>>;

    /// Locks policy `index` now.
    fn lock<'a>(&'a self, actor: &'a Actor, index: i64) -> BoxFuture<'a, Result<()>>;
}

/// A task instance stored in the caller's transaction; `dispatch` sends its work to the agents
/// and must run only after that transaction has committed.
pub struct Started {
    pub instance_no: i64,
    pub dispatch: Box<dyn FnOnce() + Send>,
}

/// How a task instance ended.
#[derive(Debug, Clone)]
pub struct TaskEnd {
    /// Every node ended `S`.
    pub ok: bool,
    /// In words: which nodes failed and how.
    pub summary: String,
}

/// Runs OPMATE tasks for task steps.
pub trait TaskRunner: Send + Sync + 'static {
    /// Whether a task with this id exists (definition checks).
    fn task_exists<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Stores a task instance inside `tx`. Every check (task approved, on-demand allowed,
    /// nodes exist and are enabled) comes before any write, so a refusal — an `Err` whose code
    /// is not `Internal` — leaves `tx` usable.
    fn start_in_tx<'a>(&'a self, tx: &'a mut Tx, req: TaskStart) -> BoxFuture<'a, Result<Started>>;

    /// Waits until instance `no` has ended (however long that takes).
    fn wait<'a>(&'a self, no: i64) -> BoxFuture<'a, Result<TaskEnd>>;

    /// Cancels instance `no` unless it has ended: its running node executions are killed.
    fn cancel<'a>(&'a self, no: i64, actor: Option<&'a Actor>) -> BoxFuture<'a, Result<()>>;

    /// The start (at most `max` bytes) of the stdout of node `node`'s run of instance `no`
    /// (a task step's `capture`).
    fn node_stdout<'a>(
        &'a self,
        no: i64,
        node: &'a str,
        max: i64,
    ) -> BoxFuture<'a, Result<Vec<u8>>>;
}

/// [`TaskRunner`] over the execution engine.
pub struct ExecTasks(pub Arc<Exec>);

impl TaskRunner for ExecTasks {
    fn task_exists<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match self.0.get_task(task_id).await {
                Ok(_) => Ok(true),
                Err(e) if e.code == Code::NotFound || e.code == Code::InvalidRequest => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn start_in_tx<'a>(&'a self, tx: &'a mut Tx, req: TaskStart) -> BoxFuture<'a, Result<Started>> {
        Box::pin(async move {
            let has_env = !req.env.is_empty();
            let start = StartInstance {
                task_id: req.task_id,
                node_ids: req.nodes,
                arguments: req.arguments,
                runner_gubun: RunnerGubun::User,
                runner_id: req.actor.user_id.clone(),
                origin: Some(req.origin),
            };
            let started = self
                .0
                .start_instance_in_tx_with_env(tx, Some(&req.actor), &start, req.env.clone())
                .await?;
            let instance_no = started.instance.task_instance_no;
            let exec = self.0.clone();
            let guard = EnvGuard {
                exec: exec.clone(),
                instance_no,
                armed: has_env,
            };
            Ok(Started {
                instance_no,
                dispatch: Box::new(move || {
                    guard.disarm();
                    exec.dispatch_started(started)
                }),
            })
        })
    }

    fn wait<'a>(&'a self, no: i64) -> BoxFuture<'a, Result<TaskEnd>> {
        Box::pin(async move {
            // The database going away (a restart, a failover) does not end the step: the
            // instance goes on without it, and is followed again once it is back.
            loop {
                match self.wait_once(no).await {
                    Err(e) if e.code == Code::Unavailable => {
                        tracing::warn!(
                            instance = no,
                            "following a task instance: {}; trying again",
                            e.message
                        );
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    ended => return ended,
                }
            }
        })
    }

    fn node_stdout<'a>(
        &'a self,
        no: i64,
        node: &'a str,
        max: i64,
    ) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let filter = NodeExecFilter {
                node_id: Some(node.to_owned()),
                ..Default::default()
            };
            let nodes = self
                .0
                .instance_nodes(
                    no,
                    &filter,
                    Paging {
                        limit: 10_000,
                        offset: 0,
                    },
                )
                .await?;
            // The filter matches a substring: take the node itself, its latest run.
            let Some(e) = nodes
                .items
                .iter()
                .filter(|e| e.node_id == node)
                .max_by_key(|e| e.exec_no)
            else {
                return Ok(Vec::new());
            };
            let mut data = self
                .0
                .read_output_from(e.exec_id, haechi_exec::Stream::Out, 0, max)
                .await?
                .data;
            data.truncate(max.max(0) as usize);
            Ok(data)
        })
    }

    fn cancel<'a>(&'a self, no: i64, actor: Option<&'a Actor>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let inst = self.0.get_instance(no).await?;
            if inst.end_at.is_some() {
                return Ok(());
            }
            self.0.cancel(actor, no, None).await.map(|_| ())
        })
    }
}

impl ExecTasks {
    /// Waits for instance `no` to end and sums up how its nodes ended.
    async fn wait_once(&self, no: i64) -> Result<TaskEnd> {
        loop {
            let inst = self.0.wait_instance(no, Duration::from_secs(3600)).await?;
            if inst.end_at.is_some() {
                break;
            }
        }
        let nodes = self
            .0
            .instance_nodes(
                no,
                &NodeExecFilter::default(),
                Paging {
                    limit: 10_000,
                    offset: 0,
                },
            )
            .await?;
        let failed: Vec<String> = nodes
            .items
            .iter()
            .filter(|e| e.result_cd != Some(ResultCode::Success))
            .map(|e| {
                let mut s = format!("{} {}", e.node_id, e.status.as_str());
                if let Some(code) = e.exit_cd {
                    s.push_str(&format!(" (exit {code})"));
                }
                if let Some(r) = &e.reason {
                    s.push_str(&format!(": {r}"));
                }
                s
            })
            .collect();
        let total = nodes.items.len();
        Ok(if failed.is_empty() && total > 0 {
            TaskEnd {
                ok: true,
                summary: format!("task instance {no}: {total} of {total} nodes ended S"),
            }
        } else {
            TaskEnd {
                ok: false,
                summary: format!(
                    "task instance {no}: {} of {total} nodes did not end S: {}",
                    failed.len(),
                    failed.join("; ")
                ),
            }
        })
    }
}

/// Drops the in-memory environment of an instance whose transaction never committed (its
/// `dispatch` was dropped without being called), so vault values do not outlive it.
struct EnvGuard {
    exec: Arc<Exec>,
    instance_no: i64,
    armed: bool,
}

impl EnvGuard {
    /// The transaction committed: the environment stays for the instance's runs.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        if self.armed {
            self.exec.forget_run_env(self.instance_no);
        }
    }
}

/// True when a start refusal is the task's or the nodes' state (the attempt fails with the
/// reason) rather than a failure of the store.
pub fn is_refusal(e: &Error) -> bool {
    e.code != Code::Internal && e.code != Code::Unavailable
}

/// [`RunEnvSource`] for the instances task steps start: a re-run of one of their nodes
/// (`PUT /opmate/taskinstance/{no}/node/{node}`) gets the step's `env_from_vault` read again,
/// as the person asking for it, through the vault's own check and audit.
pub(crate) struct StepEnv(pub Weak<Engine>);

impl RunEnvSource for StepEnv {
    fn read_again<'a>(
        &'a self,
        actor: &'a Actor,
        origin: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SecretEnv>>> {
        Box::pin(async move {
            let eng = self
                .0
                .upgrade()
                .ok_or_else(|| Error::unavailable("the workflow engine is stopping"))?;
            // `<execution_id>/<step>/<attempt>`; a step name may hold a '/'.
            let unknown = || {
                Error::conflict(format!(
                    "the run's environment comes from workflow step attempt '{origin}', which \
                     no longer exists; retry the workflow step instead"
                ))
            };
            let (execution_id, rest) = origin.split_once('/').ok_or_else(unknown)?;
            let (step_name, _) = rest.rsplit_once('/').ok_or_else(unknown)?;
            let row: Option<(i64, i64)> = read!(eng.store, |db| sqlx::query_as(
                "SELECT workflow_id, version FROM workflow_executions WHERE id = $1"
            )
            .bind(execution_id)
            .fetch_optional(db)
            .await)?;
            let (workflow_id, version) = row.ok_or_else(unknown)?;
            let loaded = eng.loaded(workflow_id, version).await?;
            let step = loaded.def.steps.iter().find(|s| s.name == step_name);
            let Some(Action::Task(task)) = step.map(|s| &s.action) else {
                return Err(unknown());
            };
            if !task.env.is_empty() {
                return Err(Error::conflict(format!(
                    "the run's environment comes from the env of workflow step '{step_name}' \
                     (it may hold password parameters, which are not kept for re-runs); retry \
                     the workflow step instead"
                )));
            }
            let secrets = eng.secrets.as_ref().ok_or_else(|| {
                Error::conflict("env_from_vault is not available on this server (no vault)")
            })?;
            let user = eng.identity.get_user(&actor.user_id).await?;
            let mut env = Vec::with_capacity(task.env_from_vault.len());
            for (name, r) in &task.env_from_vault {
                match secrets
                    .read(user.id, actor, r.credential_id, &r.attribute)
                    .await
                {
                    Ok(v) => env.push(SecretEnv {
                        name: name.clone(),
                        value: v.expose_secret().to_owned(),
                    }),
                    Err(e) if !is_refusal(&e) => return Err(e),
                    Err(e) => {
                        return Err(Error::forbidden(format!(
                            "this run gets env_from_vault.{name} (attribute '{}' of credential \
                             {}) of workflow step '{step_name}': it is read again as \
                             '{}', who may not use it: {}",
                            r.attribute, r.credential_id, actor.user_id, e.message
                        )))
                    }
                }
            }
            Ok(env)
        })
    }

    fn read_as_starter<'a>(&'a self, origin: &'a str) -> BoxFuture<'a, Result<Vec<SecretEnv>>> {
        Box::pin(async move {
            let eng = self
                .0
                .upgrade()
                .ok_or_else(|| Error::unavailable("the workflow engine is stopping"))?;
            let execution_id = origin.split_once('/').map(|(e, _)| e).unwrap_or(origin);
            let row: Option<(String, String)> = read!(eng.store, |db| sqlx::query_as(
                "SELECT started_by, source_ip FROM workflow_executions WHERE id = $1"
            )
            .bind(execution_id)
            .fetch_optional(db)
            .await)?;
            let (user_id, ip) = row.ok_or_else(|| {
                Error::conflict(format!(
                    "the run's environment comes from workflow step attempt '{origin}', which \
                     no longer exists"
                ))
            })?;
            let actor = Actor {
                user_id,
                ip: ip
                    .parse()
                    .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
                origin: haechi_identity::Origin::Workflow {
                    execution: execution_id.to_owned(),
                },
            };
            self.read_again(&actor, origin).await
        })
    }
}
