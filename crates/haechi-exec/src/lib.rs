//! The execution engine (CONTRACT §3, §7): nodes and their agents, enrolment and agent
//! credentials, tasks with revisions and approval, task instances and their node executions,
//! the output store, the agent hub that dispatches work over the agents' WebSockets, the
//! heartbeat/LOST monitor, the cron scheduler and task chains.
//!
//! Durability: every state change is committed before it is acted on. An instance and its
//! node executions are stored before any `Run` leaves; an agent's report is committed before
//! the agent is acknowledged (it keeps the result in its journal until then). All changes to
//! node executions after their creation go through one writer task (`writer.rs`) that commits
//! them in small batches, which is what makes a fan-out to a thousand nodes cheap, and keeps one
//! place where an instance is found finished and its chain started.
//!
//! The engine knows nothing of HTTP or of OPMATE's wire shapes: the HTTP layer passes agent
//! WebSocket frames in and out through channels ([`Exec::serve_agent`]), and renders the
//! domain types in [`model`] as each API family wants.
//!
//! For the workflow engine: [`Exec::start_instance`] (with `origin` naming the workflow
//! execution), [`Exec::wait_instance`] / [`Exec::subscribe`] to follow it,
//! [`Exec::instance_nodes`] for per-node results, [`Exec::cancel`] to stop it, and
//! [`Exec::instances_by_origin`] to find its instances again after a restart.

mod config;
mod dryrun;
mod files;
mod groups;
mod hub;
mod instances;
pub mod model;
mod monitor;
mod nodes;
mod scheduler;
mod signals;
mod tasks;
mod windows;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haechi_store::Store;
use haechi_types::{Error, Result};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use config::{AgentsConfig, ExecConfig, FilesConfig, TasksConfig};
pub use dryrun::{DryRun, DryRunNode, DryRunRequest};
pub use files::{
    check_file_name, sha256_hex, FileCaller, FileInfo, NewFile, RunOrigin, MAX_FILE_NAME,
};
pub use groups::{
    script_attr_keys, substitute_attrs, InstanceTargets, NodeGroup, NodeGroupSpec, SkippedNode,
    TaskTargets,
};
pub use haechi_protocol::{SecretEnv, Stream};
/// Callers page exec's lists with the store's types.
pub use haechi_store::{Listed, Paging};
pub use hub::{outbound, AgentFrame, Closing, Outbound, OutboundRx, ServerFrame, OUTBOUND_FRAMES};
pub use instances::{RerunOptions, RunEnvSource, StartedInTx};
pub use model::*;
pub use nodes::{node_clocks, EnrollmentToken, NewEnrollmentToken, NodeClock};
pub use scheduler::CronSpec;
pub use tasks::{ApprovalAction, ApprovalReview, TaskSpec};
pub use windows::{OutsideWindow, RunWindow, StartError};

/// Something that happened to an instance, for observers (workflow engine, output followers).
#[derive(Debug, Clone)]
pub struct ExecEvent {
    pub instance_no: i64,
    pub node_id: String,
    pub exec_id: i64,
    pub status: ExecStatus,
    /// The instance has just ended (every node's latest execution is final).
    pub instance_ended: bool,
}

/// The environment of a run (vault values), shared by every send of it.
type RunEnv = Arc<Vec<SecretEnv>>;

/// The engine. One per server; share it behind an `Arc`.
pub struct Exec {
    store: Store,
    cfg: ExecConfig,
    hub: hub::Hub,
    writer: mpsc::UnboundedSender<writer::Op>,
    /// The server's inbound buffer of agents' messages (`agents.inbound_buffer_bytes`), in
    /// bytes: what agents sent that is not stored yet. Bounds the writer's queue.
    inbound: Arc<tokio::sync::Semaphore>,
    events: broadcast::Sender<ExecEvent>,
    /// Heartbeats received since the last flush, by node.
    heartbeats: Mutex<HashMap<String, (i64, Option<i64>)>>,
    /// Per-run environment of instances started with one (vault values), by instance: held
    /// only here, never stored, dropped when the instance ends.
    run_envs: Mutex<HashMap<i64, Arc<Vec<SecretEnv>>>>,
    /// The environment of re-runs, read again as the person who asked for each, by node
    /// execution id, with its instance (dropped with the instance's).
    rerun_envs: Mutex<HashMap<i64, (i64, RunEnv)>>,
    /// Where a re-run's environment is read again (set by the server once the workflow
    /// engine is up; absent: such re-runs are refused).
    env_source: std::sync::OnceLock<Arc<dyn RunEnvSource>>,
    /// The vault whose active data key seals the file repository's files (set by the server).
    file_vault: std::sync::OnceLock<Arc<haechi_vault::Vault>>,
    stop: watch::Sender<bool>,
}

impl Exec {
    /// Starts the engine and its background tasks (writer, monitor, scheduler).
    pub fn start(store: Store, cfg: ExecConfig) -> Arc<Exec> {
        let (wtx, wrx) = mpsc::unbounded_channel();
        let inbound = Arc::new(tokio::sync::Semaphore::new(
            cfg.agents.inbound_buffer_bytes as usize,
        ));
        let exec = Arc::new(Exec {
            store,
            cfg,
            hub: hub::Hub::default(),
            writer: wtx,
            inbound,
            events: broadcast::channel(4096).0,
            heartbeats: Mutex::new(HashMap::new()),
            run_envs: Mutex::new(HashMap::new()),
            rerun_envs: Mutex::new(HashMap::new()),
            env_source: std::sync::OnceLock::new(),
            file_vault: std::sync::OnceLock::new(),
            stop: watch::channel(false).0,
        });
        tokio::spawn(writer::run(exec.clone(), wrx));
        tokio::spawn(monitor::run(exec.clone()));
        tokio::spawn(scheduler::run(exec.clone()));
        tokio::spawn(signals::run(exec.clone()));
        exec
    }

    /// Stops the background loops and closes agent connections (agents reconnect elsewhere or
    /// when the server is back). Pending writes are committed first.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        self.flush().await;
        self.hub.close_all("the server is stopping");
    }

    pub fn config(&self) -> &ExecConfig {
        &self.cfg
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every event from now on. A slow receiver that lags loses events (`RecvError::Lagged`)
    /// and should re-read the state it follows.
    pub fn subscribe(&self) -> broadcast::Receiver<ExecEvent> {
        self.events.subscribe()
    }

    /// Waits until everything sent to the writer before this call is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(writer::Op::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Waits until instance `no` ends or `timeout` passes; returns it as it then is.
    pub async fn wait_instance(&self, no: i64, timeout: Duration) -> Result<Instance> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = self.subscribe();
        loop {
            let inst = self.get_instance(no).await?;
            if inst.end_at.is_some() || tokio::time::Instant::now() >= deadline {
                return Ok(inst);
            }
            // Another server may finish it: re-read at least every second.
            let wait = async {
                loop {
                    match events.recv().await {
                        Ok(e) if e.instance_no == no && e.instance_ended => return,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
                wait,
            )
            .await;
        }
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub(crate) fn emit(&self, e: ExecEvent) {
        let _ = self.events.send(e);
    }

    pub(crate) async fn write<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T>>) -> writer::Op,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .map_err(|_| Error::unavailable("the execution engine is stopping"))?;
        rx.await
            .map_err(|_| Error::internal("the execution writer dropped a request"))?
    }
}
