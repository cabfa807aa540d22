//! The workflow engine (CONTRACT §2, §7): MDRM's runbooks on a durable DAG scheduler.
//!
//! - `definition`: what a workflow definition may say (JSON or YAML), its checks and the
//!   `${param}` substitution.
//! - `workflows`: definitions in the store, versioned, grouped, soft-deleted.
//! - `executions`: execute, status, control, decisions and the views of a run; `actions`:
//!   operators' retry / skip / mark_succeeded of a failed step.
//! - `driver`: the per-execution state machine that moves a run forward; `steps`: one attempt
//!   of a sleep, http or task step; `journal`: the one writer that commits transitions in
//!   groups, each fenced by the execution's `rev`.
//! - `lease`: which server drives which execution (renewal, takeover, notifications).
//! - `ports`: the narrow interfaces to the execution engine (task steps), the vault
//!   (`env_from_vault`) and the DB gateway (`db_access` steps).
//!
//! Durability: every transition is committed before it is acted on. A driver holds the only
//! copy of an execution's state that may change it, on the one server holding its lease; a
//! restarted or surviving server takes the execution up from the store: a sleep waits what is
//! left, a task step follows the instance its attempt started (stored in the same
//! transaction as the attempt), an approval still waits, a paused run stays paused, and an
//! http call that was in flight is sent once more with the same `Idempotency-Key`.
//!
//! The engine knows nothing of HTTP shapes: the HTTP layer renders its types as MDRM's
//! `{"result": ...}` envelopes or the admin API.

mod actions;
pub mod config;
pub mod definition;
mod driver;
pub mod egress;
mod executions;
mod expr;
mod journal;
mod lease;
mod locks;
mod metrics;
pub mod model;
pub mod ports;
mod schedule;
mod state;
mod steps;
mod workflows;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haechi_identity::Identity;
use haechi_store::Store;
use haechi_types::{Error, Result};
use tokio::sync::watch;

pub use actions::StepActionRequest;
pub use config::WorkflowConfig;
pub use definition::{Definition, Graph};
pub use executions::{DecisionRequest, ExecuteOptions};
pub use model::*;
pub use ports::{
    ExecTasks, PolicyGate, SealedSecret, SecretSealer, SecretSource, TaskEnd, TaskRunner,
    TaskStart, VaultUse,
};
pub use schedule::{TaskSchedule, TaskScheduleView};
pub use steps::idempotency_key;

use crate::driver::DriverHandle;
use crate::journal::Journal;
use crate::steps::AttemptCtx;

/// How to start the engine.
pub struct Options {
    pub store: Store,
    pub identity: Arc<Identity>,
    pub tasks: Arc<dyn TaskRunner>,
    /// The vault, for task steps' `env_from_vault` (absent: such definitions are refused).
    pub secrets: Option<Arc<dyn SecretSource>>,
    /// The DB gateway's policies, for `db_access` steps (absent: such definitions are refused).
    pub policies: Option<Arc<dyn PolicyGate>>,
    /// The vault's keys, for password parameters (absent: such definitions run refused).
    pub sealer: Option<Arc<dyn SecretSealer>>,
    /// The execution engine, for the schedules of OPMATE tasks (absent: they do not fire).
    pub exec: Option<Arc<haechi_exec::Exec>>,
    pub config: WorkflowConfig,
    /// The server's UTC offset (`timezone`): execution ids carry the local date.
    pub utc_offset_secs: i32,
    /// The server's data directory: it keeps this server's identity among the servers
    /// sharing one store (so that after a crash it takes its own executions back at once).
    pub data_dir: PathBuf,
}

/// A definition made ready to run.
pub(crate) struct Loaded {
    pub def: Definition,
    pub graph: Graph,
    /// Some task step captures variables (`${NAME}` then reads them too).
    pub captures: bool,
}

pub(crate) struct Engine {
    pub store: Store,
    pub identity: Arc<Identity>,
    pub tasks: Arc<dyn TaskRunner>,
    pub secrets: Option<Arc<dyn SecretSource>>,
    pub policies: Option<Arc<dyn PolicyGate>>,
    pub sealer: Option<Arc<dyn SecretSealer>>,
    pub exec: Option<Arc<haechi_exec::Exec>>,
    pub cfg: WorkflowConfig,
    pub utc_offset_secs: i32,
    /// This server among those sharing the store.
    pub server_id: String,
    pub journal: Journal,
    pub attempts: Arc<AttemptCtx>,
    pub drivers: Mutex<HashMap<String, DriverHandle>>,
    defs: Mutex<HashMap<(i64, i64), Arc<Loaded>>>,
    pub shutdown: watch::Sender<bool>,
}

impl Engine {
    /// A version's definition, parsed once and kept.
    pub(crate) async fn loaded(&self, workflow_id: i64, version: i64) -> Result<Arc<Loaded>> {
        if let Some(l) = self
            .defs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(workflow_id, version))
        {
            return Ok(l.clone());
        }
        let def = workflows::load_version(&self.store, workflow_id, version).await?;
        let captures = def
            .steps
            .iter()
            .any(|s| matches!(&s.action, definition::Action::Task(t) if !t.capture.is_empty()));
        let loaded = Arc::new(Loaded {
            graph: def.graph(),
            captures,
            def,
        });
        let mut defs = self.defs.lock().unwrap_or_else(|p| p.into_inner());
        if defs.len() > 2000 {
            defs.clear();
        }
        defs.insert((workflow_id, version), loaded.clone());
        Ok(loaded)
    }

    /// Tells the local driver of `id`, if any, to read its execution again.
    pub(crate) fn poke(&self, id: &str) {
        if let Some(h) = self
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            let _ = h.tx.send(driver::Msg::Poke);
        }
    }

    pub(crate) fn status_watch(&self, id: &str) -> Option<watch::Receiver<(RunStatus, i64)>> {
        self.drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|h| h.status.clone())
    }
}

/// The workflow engine. One per server.
pub struct Workflows {
    eng: Arc<Engine>,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    _lock: Option<lease::ServerLock>,
}

impl Workflows {
    /// Starts the engine: the journal, the lease keeper (which at once takes back this
    /// server's own executions after a crash and any whose lease has lapsed), and on
    /// PostgreSQL the listener for other servers' controls.
    pub async fn start(opts: Options) -> Result<Arc<Workflows>> {
        opts.config.validate().map_err(Error::invalid)?;
        let (server_id, lock) = lease::server_identity(&opts.data_dir);
        let egress = Arc::new(opts.config.egress().map_err(Error::invalid)?);
        // No redirects (a hop could lead anywhere) and no proxy from the environment (the
        // egress rules would see only the proxy): every connection goes to an address the
        // resolver checked.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(egress::EgressResolver {
                policy: egress.clone(),
            }))
            .danger_accept_invalid_certs(opts.config.http_accept_invalid_certs)
            .user_agent(concat!("haechi-workflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format_args!("http client: {e}")))?;
        let eng = Arc::new(Engine {
            journal: Journal::start(opts.store.clone(), opts.tasks.clone()),
            attempts: Arc::new(AttemptCtx {
                http,
                tasks: opts.tasks.clone(),
                policies: opts.policies.clone(),
                http_timeout_ms: opts.config.http_timeout_secs * 1000,
                egress,
                http_body_max_bytes: opts.config.http_body_max_bytes as usize,
            }),
            store: opts.store,
            identity: opts.identity,
            tasks: opts.tasks,
            secrets: opts.secrets,
            policies: opts.policies,
            sealer: opts.sealer,
            exec: opts.exec,
            cfg: opts.config,
            utc_offset_secs: opts.utc_offset_secs,
            server_id,
            drivers: Mutex::new(HashMap::new()),
            defs: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
        });
        if lock.is_some() {
            lease::reclaim_own(&eng).await?;
        }
        lease::renew_and_claim(&eng).await?;
        let mut background = vec![
            tokio::spawn(lease::run(eng.clone())),
            tokio::spawn(schedule::run(eng.clone())),
        ];
        if let Some(listener) = lease::listen(eng.clone()) {
            background.push(listener);
        }
        tracing::info!(server = %eng.server_id, "workflow engine started");
        Ok(Arc::new(Workflows {
            eng,
            background: Mutex::new(background),
            _lock: lock,
        }))
    }

    /// Stops every driver (attempts under way are cut; they are taken up again by the next
    /// server to drive them) and gives up this server's leases so another server may take
    /// its executions over at once.
    pub async fn shutdown(&self) {
        self.eng.shutdown.send_replace(true);
        let handles: Vec<_> =
            std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            h.abort();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self
            .eng
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = lease::release_all(&self.eng).await {
            tracing::warn!("could not release workflow leases: {}", e.message);
        }
    }

    /// Where the execution engine reads the vault environment of a re-run of an instance a
    /// task step started (`Exec::set_env_source`).
    pub fn rerun_env_source(&self) -> Arc<dyn haechi_exec::RunEnvSource> {
        Arc::new(ports::StepEnv(Arc::downgrade(&self.eng)))
    }

    pub fn config(&self) -> &WorkflowConfig {
        &self.eng.cfg
    }

    /// This server's id among the servers sharing the store (execution owners).
    pub fn server_id(&self) -> &str {
        &self.eng.server_id
    }
}
