//! `haechi agent`: the program on each node. It dials out to the server's HTTPS port over a
//! WebSocket (no inbound port on the node), enrols once with a one-time token and then uses its
//! own credential kept in its data directory, heartbeats, and runs what the server sends it.
//!
//! Layout: [`protocol`] (the wire, shared with the server), `credential` (enrolment and the
//! stored secret), `journal` (one directory per execution: never started twice, results kept
//! until acknowledged), `runner` (process, user switch, group, timeout, cancel, output cap),
//! `session` (one connection), and this file (the reconnect loop).

mod credential;
mod error;
mod fsutil;
mod journal;
pub mod protocol;
mod runner;
mod session;
mod sysinfo;

use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use credential::Credential;
pub use error::AgentError;
pub use runner::ExecHelper;
pub use session::{dial, Socket};

use journal::Journal;
use protocol::{Finished, Outcome};
use runner::{Job, Progress};

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Executions acknowledged recently, remembered so a late duplicate `Run` is not started again.
const ACKED_MEMORY: usize = 4096;

/// How to run an agent.
#[derive(Clone)]
pub struct AgentOptions {
    /// `https://HOST:PORT` (or `http://` for a server run with plain HTTP).
    pub server: String,
    /// How to trust the server (required for `https://`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The agent's own directory: credential, journal.
    pub data_dir: PathBuf,
    /// The node id to enrol as (default: the host name). Ignored once enrolled, except that a
    /// different id is an error.
    pub node_id: Option<String>,
    /// The one-time enrolment token (needed only until the agent has its credential).
    pub enroll_token: Option<String>,
    /// How to switch users when the agent runs as root.
    pub exec_helper: Option<ExecHelper>,
    /// Reported as `agentVer`.
    pub agent_ver: String,
}

/// The agent: its journal and the executions it holds.
pub(crate) struct Agent {
    opts: AgentOptions,
    journal: Arc<Journal>,
    jobs: Mutex<HashMap<i64, Arc<Job>>>,
    acked: Mutex<VecDeque<i64>>,
}

impl Agent {
    fn job(&self, exec_id: i64) -> Option<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&exec_id)
            .cloned()
    }

    fn job_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    fn was_acked(&self, exec_id: i64) -> bool {
        self.acked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&exec_id)
    }

    /// Forgets an execution whose result the server holds. One still running (the server gave
    /// up on it while the agent was away) is killed first.
    fn forget(self: &Arc<Self>, exec_id: i64) {
        {
            let mut acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
            if !acked.contains(&exec_id) {
                acked.push_back(exec_id);
                if acked.len() > ACKED_MEMORY {
                    acked.pop_front();
                }
            }
        }
        let Some(job) = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&exec_id)
        else {
            self.journal.remove(exec_id);
            return;
        };
        if job.is_finished() {
            self.journal.remove(exec_id);
            return;
        }
        tracing::warn!(
            exec_id,
            "the server closed this execution while it still ran here; killing it"
        );
        job.cancel();
        let journal = self.journal.clone();
        tokio::spawn(async move {
            let mut rx = job.progress.subscribe();
            let _ = rx.wait_for(|p| p.result.is_some()).await;
            journal.remove(exec_id);
        });
    }

    /// Journals and starts `spec` unless this agent has it already. Returns the new job.
    fn accept(self: &Arc<Self>, spec: protocol::RunSpec) -> Result<Option<Arc<Job>>, AgentError> {
        let exec_id = spec.exec_id;
        if self.job(exec_id).is_some() || self.was_acked(exec_id) {
            return Ok(None);
        }
        if !self.journal.accept(&spec)? {
            return Ok(None);
        }
        let job = Job::new(spec, Progress::default());
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(exec_id, job.clone());
        tokio::spawn(runner::run(
            job.clone(),
            self.journal.clone(),
            self.opts.exec_helper.clone(),
        ));
        Ok(Some(job))
    }
}

/// Runs the agent until `shutdown` resolves. Returns an error when it cannot go on at all
/// (no credential and no token, enrolment refused, credential revoked).
pub async fn run(
    opts: AgentOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    fsutil::create_private_dir(&opts.data_dir, 0o711)?;
    let _lock = credential::lock_data_dir(&opts.data_dir)?;
    let cred = credential::load_or_enroll(&opts).await?;
    tracing::info!(node_id = %cred.node_id, server = %opts.server, "agent starting");
    let journal = Arc::new(Journal::open(&opts.data_dir)?);
    let agent = Arc::new(Agent {
        opts,
        journal: journal.clone(),
        jobs: Mutex::new(HashMap::new()),
        acked: Mutex::new(VecDeque::new()),
    });
    recover(&agent)?;

    tokio::pin!(shutdown);
    let mut failures: u32 = 0;
    loop {
        let attempt = session::run(&agent, &cred);
        let outcome = tokio::select! {
            r = attempt => r,
            _ = &mut shutdown => return Ok(()),
        };
        match outcome {
            Ok(session::Ended { welcomed }) => {
                if welcomed {
                    failures = 0;
                }
                tracing::info!("connection to the server closed; reconnecting");
            }
            Err(AgentError::Refused(msg)) => return Err(AgentError::Refused(msg)),
            Err(e) => tracing::warn!("connection to the server failed: {e}"),
        }
        failures = failures.saturating_add(1);
        let wait = backoff(failures);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
}

/// Exponential backoff from 0.5 s to 30 s, with ±25 % jitter so many agents that lost the same
/// server do not return in one wave.
fn backoff(failures: u32) -> Duration {
    let base = 500u64.saturating_mul(1u64 << failures.saturating_sub(1).min(10));
    let base = base.min(MAX_BACKOFF.as_millis() as u64);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base - base / 4 + jitter)
}

/// Loads the journal at start. An execution without a result was running when the agent
/// stopped: its process is no longer ours to watch, so it is reported as lost.
fn recover(agent: &Arc<Agent>) -> Result<(), AgentError> {
    for entry in agent.journal.entries()? {
        let exec_id = entry.spec.exec_id;
        let result = match entry.result {
            Some(r) => r,
            None => {
                let r = Finished {
                    exec_id,
                    outcome: Outcome::Lost,
                    exit_code: None,
                    reason: Some("the agent stopped while this execution ran".into()),
                    started_at_ms: None,
                    ended_at_ms: runner::now_ms(),
                    out_len: agent.journal.stream_len(exec_id, protocol::Stream::Out),
                    err_len: agent.journal.stream_len(exec_id, protocol::Stream::Err),
                    truncated: false,
                };
                agent.journal.finish(&r)?;
                r
            }
        };
        let progress = Progress {
            started_at: result.started_at_ms,
            out: result.out_len,
            err: result.err_len,
            result: Some(result),
        };
        agent
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(exec_id, Job::new(entry.spec, progress));
    }
    Ok(())
}

/// The user-switch helper: run as root, become `user` (its groups, gid, uid) and exec
/// `program` with `args`. Returns only on failure.
pub fn exec_as(
    user: &str,
    program: &OsStr,
    args: &[OsString],
) -> Result<std::convert::Infallible, String> {
    use nix::unistd::{execv, initgroups, setgid, setuid, User};
    use std::os::unix::ffi::OsStrExt;
    let u = User::from_name(user)
        .map_err(|e| format!("cannot look up os user '{user}': {e}"))?
        .ok_or_else(|| format!("os user '{user}' does not exist"))?;
    let name = CString::new(user).map_err(|_| "the user name holds a NUL byte".to_owned())?;
    initgroups(&name, u.gid).map_err(|e| format!("cannot set the groups of '{user}': {e}"))?;
    setgid(u.gid).map_err(|e| format!("cannot switch to the group of '{user}': {e}"))?;
    setuid(u.uid).map_err(|e| format!("cannot switch to os user '{user}': {e}"))?;
    if !u.uid.is_root() && setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
        return Err(format!("switching to '{user}' did not drop root"));
    }
    let cstr = |s: &OsStr| {
        CString::new(s.as_bytes()).map_err(|_| "an argument holds a NUL byte".to_owned())
    };
    let prog = cstr(program)?;
    let mut argv = vec![prog.clone()];
    for a in args {
        argv.push(cstr(a)?);
    }
    execv(&prog, &argv).map_err(|e| format!("cannot run {}: {e}", program.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        for n in 1..40 {
            let d = backoff(n);
            assert!(d >= Duration::from_millis(375), "{d:?}");
            assert!(d <= Duration::from_millis(37_500), "{d:?}");
        }
        assert!(backoff(1) < Duration::from_secs(1));
    }
}
