//! `haechi agent`: the program on each node. It dials out to the server's HTTPS port over a
//! WebSocket (no inbound port on the node), enrols once with a one-time token and then uses its
//! own credential kept in its data directory, heartbeats, and runs what the server sends it.
//!
//! Layout: the wire it shares with the server is the `haechi-protocol` crate; `credential`
//! (enrolment and the stored secret), `journal` (one directory per execution: never started
//! twice, results kept until acknowledged), `runner` (process, user switch, group, timeout, cancel, output cap),
//! `session` (one connection), and this file (the reconnect loop).

mod credential;
mod error;
pub mod files;
mod fsutil;
mod journal;
mod runner;
pub mod sandbox;
mod session;
mod sysinfo;

use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use credential::Credential;
pub use error::AgentError;
pub use haechi_protocol::Limits;
pub use runner::ExecHelper;
pub use session::{dial, Socket};

use haechi_protocol::{Finished, Outcome, RunSpec, Stream};
use journal::Journal;
use runner::{Job, Progress, RunPolicy, SandboxState};

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Executions acknowledged recently, remembered so a late duplicate `Run` is not started again.
const ACKED_MEMORY: usize = 4096;

/// How to run an agent.
#[derive(Clone)]
pub struct AgentOptions {
    /// `https://HOST:PORT` (or `http://` for a server run with plain HTTP): the server the
    /// agent enrols with and dials first.
    pub server: String,
    /// Other servers sharing the same store (or a load balancer's address), tried in turn
    /// when the current one cannot be reached or its connection is lost. Executions held
    /// across the switch are resumed on the new server from what the store holds.
    pub failover: Vec<String>,
    /// How to trust the server (required for `https://`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The agent's own directory: credential, journal.
    pub data_dir: PathBuf,
    /// The node id to enrol as (default: the host name). Ignored once enrolled, except that a
    /// different id is an error.
    pub node_id: Option<String>,
    /// The one-time enrolment token (needed only until the agent has its credential).
    pub enroll_token: Option<String>,
    /// The helper scripts start through (user switch, sandbox, limits).
    pub exec_helper: Option<ExecHelper>,
    /// Paths scripts must not reach besides the agent's own data directory (the server's local
    /// agent adds the server's data directory).
    pub protect: Vec<PathBuf>,
    /// Run scripts without the sandbox when the kernel cannot enforce it (loudly); otherwise
    /// such runs fail.
    pub allow_unsandboxed: bool,
    /// Refuse `root` and the agent's own user as `osUser` (the server's local agent).
    pub refuse_privileged_os_users: bool,
    /// Resource limits and umask of scripts.
    pub limits: Limits,
    /// Reported as `agentVer`.
    pub agent_ver: String,
    /// The node's own labels (`--label KEY=VALUE`, `--labels-file`), reported with `os`,
    /// `arch` and `hostname`; node groups' attributes override them in scripts.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The agent: its journal and the executions it holds.
pub(crate) struct Agent {
    opts: AgentOptions,
    policy: Arc<RunPolicy>,
    journal: Arc<Journal>,
    jobs: Mutex<HashMap<i64, Arc<Job>>>,
    acked: Mutex<VecDeque<i64>>,
    /// Relays running scripts' file requests over the current connection.
    files: Arc<files::FileRelay>,
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
    fn accept(self: &Arc<Self>, spec: RunSpec) -> Result<Option<Arc<Job>>, AgentError> {
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
            self.policy.clone(),
            self.files.clone(),
        ));
        Ok(Some(job))
    }
}

/// Refuses an `http://` server URL that is not on this machine: the agent's secret and every
/// script and its output would cross the network in clear.
pub fn require_loopback_for_plain_http(server: &str) -> Result<(), AgentError> {
    let Some(rest) = server.strip_prefix("http://") else {
        return Ok(());
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(AgentError::Config(format!(
            "refusing {server}: plain http:// is only for a server on this machine (the agent's \
             secret would cross the network in clear); use https://"
        )))
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
    tracing::info!(node_id = %cred.node_id, server = %opts.server, failover = ?opts.failover, "agent starting");
    let journal = Arc::new(Journal::open(&opts.data_dir)?);
    let policy = Arc::new(run_policy(&opts)?);
    let agent = Arc::new(Agent {
        policy,
        opts,
        journal: journal.clone(),
        jobs: Mutex::new(HashMap::new()),
        acked: Mutex::new(VecDeque::new()),
        files: Arc::default(),
    });
    recover(&agent)?;

    tokio::pin!(shutdown);
    let mut failures: u32 = 0;
    // When the last welcomed connection ended: for a while after it, the server is most likely
    // restarting, and the agent tries again at least every ~1 s so that it is back within a
    // second or two of the server answering.
    let mut lost_at: Option<std::time::Instant> = None;
    let servers: Vec<String> = std::iter::once(agent.opts.server.clone())
        .chain(agent.opts.failover.iter().cloned())
        .collect();
    let mut current = 0usize;
    // Failures in a row since the last welcome, over every server.
    let mut tried_since_welcome = 0usize;
    loop {
        let server = servers[current].clone();
        let attempt = session::run(&agent, &cred, &server);
        let outcome = tokio::select! {
            r = attempt => r,
            _ = &mut shutdown => return Ok(()),
        };
        let mut switch_now = false;
        match outcome {
            Ok(session::Ended { welcomed }) => {
                if welcomed {
                    failures = 0;
                    tried_since_welcome = 0;
                    lost_at = Some(std::time::Instant::now());
                    // The server went away: another one takes over at once.
                    switch_now = servers.len() > 1;
                }
                tracing::info!(%server, "connection to the server closed; reconnecting");
            }
            Err(AgentError::Refused(msg)) => return Err(AgentError::Refused(msg)),
            Err(e) => {
                tracing::warn!(%server, "connection to the server failed: {e}");
                tried_since_welcome += 1;
                // Try the next server at once until each was tried once in this round.
                switch_now =
                    servers.len() > 1 && !tried_since_welcome.is_multiple_of(servers.len());
            }
        }
        if servers.len() > 1 {
            current = (current + 1) % servers.len();
            tracing::info!(server = %servers[current], "trying the next server");
        }
        failures = failures.saturating_add(1);
        let recently_connected = lost_at.is_some_and(|t| t.elapsed() < FAST_RECONNECT_FOR);
        let wait = if switch_now {
            jittered(FAILOVER_MS)
        } else if recently_connected {
            backoff(failures).min(jittered(FAST_RECONNECT_MS))
        } else {
            backoff(failures)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
}

/// How scripts will run: the sandbox (probed once), the paths it protects, the runs' directory
/// (emptied of what a killed agent left behind).
fn run_policy(opts: &AgentOptions) -> Result<RunPolicy, AgentError> {
    let mut protect = vec![opts.data_dir.clone()];
    protect.extend(opts.protect.iter().cloned());
    let probed = if opts.exec_helper.is_some() {
        sandbox::probe()
    } else {
        Err("this agent has no helper to apply the sandbox with".to_owned())
    };
    let sandbox = match probed {
        Ok(()) => {
            tracing::info!(protected = ?protect, "scripts run in a Landlock sandbox that keeps them out of the protected paths");
            SandboxState::On
        }
        Err(why) if opts.allow_unsandboxed => {
            tracing::error!(
                "DEGRADED: scripts run WITHOUT their sandbox and can read the agent's credential and journal{}: {why}",
                if opts.protect.is_empty() { "" } else { " and the server's data directory" }
            );
            SandboxState::Degraded(why)
        }
        Err(why) => {
            tracing::error!("scripts will be refused: the sandbox is unavailable: {why}");
            SandboxState::Unavailable(why)
        }
    };
    let run_root = runner::run_root(&opts.data_dir).map_err(AgentError::Config)?;
    let left = runner::clean_run_root(&run_root);
    if left > 0 {
        tracing::info!(removed = left, dir = %run_root.display(), "removed what runs of an earlier start left behind");
    }
    Ok(RunPolicy {
        helper: opts.exec_helper.clone(),
        protect,
        sandbox,
        refuse_privileged: opts.refuse_privileged_os_users,
        run_root,
        limits: opts.limits.clone(),
    })
}

/// How long after a connection that the server welcomed ended the agent keeps retrying about
/// every second, before the backoff may grow to its maximum.
const FAST_RECONNECT_FOR: Duration = Duration::from_secs(300);
/// The retry interval in that period (before jitter).
const FAST_RECONNECT_MS: u64 = 1000;
/// The wait before dialling the next server after the current one failed (before jitter):
/// short, and spread so that the agents of a dead server do not all arrive in one wave.
const FAILOVER_MS: u64 = 200;

/// Exponential backoff from 0.5 s to 30 s, with ±25 % jitter so many agents that lost the same
/// server do not return in one wave.
fn backoff(failures: u32) -> Duration {
    let base = 500u64.saturating_mul(1u64 << failures.saturating_sub(1).min(10));
    jittered(base.min(MAX_BACKOFF.as_millis() as u64))
}

/// `base` ms ±25 %.
fn jittered(base: u64) -> Duration {
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
                    out_len: agent.journal.stream_len(exec_id, Stream::Out),
                    err_len: agent.journal.stream_len(exec_id, Stream::Err),
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

/// What the helper (`haechi agent-exec-as`) is told: its arguments before `--`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExecAs {
    /// Become this user (the agent runs as root).
    pub user: Option<String>,
    /// Apply the sandbox protecting these paths.
    pub sandbox: bool,
    pub protect: Vec<PathBuf>,
    pub limits: Limits,
}

impl ExecAs {
    /// Parses `[--user U] [--sandbox] [--protect P]... [--rlimit-nofile N] [--rlimit-nproc N]
    /// [--rlimit-core N] [--rlimit-as N] [--umask OCTAL] -- PROGRAM ARGS...`; returns the options
    /// and the command.
    pub fn parse(args: &[OsString]) -> Result<(ExecAs, &[OsString]), String> {
        let mut me = ExecAs::default();
        let mut i = 0;
        let value = |i: usize, flag: &str| {
            args.get(i + 1)
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let number = |v: &OsString, flag: &str| {
            v.to_str()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| format!("{flag} takes a number"))
        };
        while i < args.len() {
            let flag = args[i].to_str().unwrap_or("");
            match flag {
                "--" => return Ok((me, &args[i + 1..])),
                "--sandbox" => {
                    me.sandbox = true;
                    i += 1;
                    continue;
                }
                "--user" => {
                    me.user = Some(
                        value(i, flag)?
                            .to_str()
                            .ok_or("--user takes a user name")?
                            .to_owned(),
                    )
                }
                "--protect" => me.protect.push(PathBuf::from(value(i, flag)?)),
                "--rlimit-nofile" => me.limits.nofile = number(value(i, flag)?, flag)?,
                "--rlimit-nproc" => me.limits.nproc = number(value(i, flag)?, flag)?,
                "--rlimit-core" => me.limits.core = number(value(i, flag)?, flag)?,
                "--rlimit-as" => me.limits.address_space = number(value(i, flag)?, flag)?,
                "--umask" => {
                    me.limits.umask = value(i, flag)?
                        .to_str()
                        .and_then(|s| u32::from_str_radix(s, 8).ok())
                        .filter(|m| *m <= 0o777)
                        .ok_or("--umask takes an octal mode")?
                }
                other => return Err(format!("unknown option {other:?}")),
            }
            i += 2;
        }
        Err("no program to run (expected `-- PROGRAM ARGS...`)".into())
    }
}

/// The helper every script starts through: sets the limits and umask, applies the sandbox
/// (before giving up root, so no `no_new_privs` is needed then and setuid programs keep
/// working inside it), becomes the task's user (its groups, gid, uid) when asked, and execs
/// `program` with `args`. Returns only on failure.
pub fn exec_as(
    opts: &ExecAs,
    program: &OsStr,
    args: &[OsString],
) -> Result<std::convert::Infallible, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    use nix::unistd::{execv, geteuid, initgroups, setgid, setuid, User};
    use std::os::unix::ffi::OsStrExt;
    let target = match &opts.user {
        Some(user) => {
            let u = User::from_name(user)
                .map_err(|e| format!("cannot look up os user '{user}': {e}"))?
                .ok_or_else(|| format!("os user '{user}' does not exist"))?;
            let name = CString::new(user.as_str())
                .map_err(|_| "the user name holds a NUL byte".to_owned())?;
            Some((u, name))
        }
        None => None,
    };
    let l = &opts.limits;
    let unlimited_if_zero = |v: u64| if v == 0 { RLIM_INFINITY } else { v };
    for (resource, wanted, name) in [
        (
            Resource::RLIMIT_NOFILE,
            unlimited_if_zero(l.nofile),
            "open files",
        ),
        (
            Resource::RLIMIT_NPROC,
            unlimited_if_zero(l.nproc),
            "processes",
        ),
        (Resource::RLIMIT_CORE, l.core, "core size"),
        (
            Resource::RLIMIT_AS,
            unlimited_if_zero(l.address_space),
            "address space",
        ),
    ] {
        // Without root a limit cannot rise above the agent's own hard limit: keep that one.
        let (_, hard) =
            getrlimit(resource).map_err(|e| format!("cannot read the limit of {name}: {e}"))?;
        let value = if geteuid().is_root() {
            wanted
        } else {
            wanted.min(hard)
        };
        setrlimit(resource, value, value)
            .map_err(|e| format!("cannot set the script's limit of {name} to {value}: {e}"))?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(l.umask));
    if opts.sandbox {
        let root = geteuid().is_root();
        match sandbox::restrict(&opts.protect, !root)? {
            sandbox::Enforced::Fully => {}
            sandbox::Enforced::Partly => eprintln!(
                "haechi-agent: warning: this kernel's Landlock is older than the agent's; the sandbox denies reading \
                 and writing the protected paths, but not every newer right"
            ),
        }
    }
    if let Some((u, name)) = &target {
        let user = &u.name;
        initgroups(name, u.gid).map_err(|e| format!("cannot set the groups of '{user}': {e}"))?;
        setgid(u.gid).map_err(|e| format!("cannot switch to the group of '{user}': {e}"))?;
        setuid(u.uid).map_err(|e| format!("cannot switch to os user '{user}': {e}"))?;
        if !u.uid.is_root() && setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
            return Err(format!("switching to '{user}' did not drop root"));
        }
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
    fn plain_http_only_to_this_machine() {
        for ok in [
            "https://10.0.0.1:8443",
            "http://127.0.0.1:8443",
            "http://localhost:8443/",
            "http://[::1]:8443",
        ] {
            assert!(require_loopback_for_plain_http(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:8443",
            "http://haechi.example:8443",
            "http://[2001:db8::1]:8443",
            "http://127.0.0.1.example:80",
        ] {
            assert!(require_loopback_for_plain_http(bad).is_err(), "{bad}");
        }
    }

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
