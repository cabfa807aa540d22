//! Running one execution: the script as the task's OS user, arguments as argv (never through a
//! shell string), in its own process group, with the timeout and cancel killing the whole group,
//! and its output written to the journal under the per-execution cap.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haechi_protocol::{Finished, Limits, Outcome, RunSpec, Stream};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{geteuid, Pid, User};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::watch;

use crate::journal::Journal;

/// How long a killed process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long output is still read after the script exits (background children may hold the pipes).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// The PATH scripts get.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The helper every script starts through (`program args... [--user U] [--sandbox --protect P...]
/// --rlimit-... --umask M -- <interpreter> <argv...>`, [`crate::exec_as`]): it sets the
/// script's limits and umask, applies the sandbox, drops to the user's uid, gid and groups
/// when the agent runs as root, then execs the script.
#[derive(Debug, Clone)]
pub struct ExecHelper {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// What a running execution has produced so far.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub started_at: Option<i64>,
    pub out: u64,
    pub err: u64,
    pub result: Option<Finished>,
}

/// One execution the agent holds.
pub struct Job {
    pub spec: RunSpec,
    pub progress: watch::Sender<Progress>,
    cancel: watch::Sender<bool>,
    /// The run's file token (`HAECHI_FILE_TOKEN`): only in memory, never journaled; the server
    /// gets its hash with `Started`.
    pub file_token: String,
    /// `Started` (with the token's hash) has been sent to the server.
    pub announced: watch::Sender<bool>,
}

impl Job {
    pub fn new(spec: RunSpec, progress: Progress) -> Arc<Job> {
        Arc::new(Job {
            file_token: crate::files::new_token(spec.exec_id),
            spec,
            progress: watch::channel(progress).0,
            cancel: watch::channel(false).0,
            announced: watch::channel(false).0,
        })
    }

    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    pub fn is_finished(&self) -> bool {
        self.progress.borrow().result.is_some()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The cap shared by both streams of one execution.
struct Cap {
    limit: u64,
    used: u64,
    truncated: bool,
}

/// Writes output to the journal, keeping at most the cap, and publishes the new lengths.
/// Secret values of the run's `env` are masked first, per stream.
struct Sink {
    job: Arc<Job>,
    journal: Arc<Journal>,
    cap: Mutex<Cap>,
    maskers: Mutex<[Masker; 2]>,
}

impl Sink {
    /// Output as the script wrote it: masked, then kept under the cap.
    fn output(&self, stream: Stream, data: &[u8]) {
        let masked = {
            let mut m = self.maskers.lock().unwrap_or_else(|p| p.into_inner());
            m[stream_slot(stream)].push(data)
        };
        self.write(stream, &masked);
    }

    /// The end of a stream: what the masker held back.
    fn close(&self, stream: Stream) {
        let rest = {
            let mut m = self.maskers.lock().unwrap_or_else(|p| p.into_inner());
            m[stream_slot(stream)].finish()
        };
        self.write(stream, &rest);
    }

    fn write(&self, stream: Stream, data: &[u8]) {
        let keep = {
            let mut cap = self.cap.lock().unwrap_or_else(|p| p.into_inner());
            if cap.truncated {
                return;
            }
            let room = cap.limit.saturating_sub(cap.used);
            if (data.len() as u64) <= room {
                cap.used += data.len() as u64;
                data.to_vec()
            } else {
                cap.truncated = true;
                let mut kept = data[..room as usize].to_vec();
                kept.extend_from_slice(haechi_protocol::truncation_marker(cap.limit).as_bytes());
                cap.used = cap.limit;
                kept
            }
        };
        if keep.is_empty() {
            return;
        }
        if let Err(e) = self.journal.append(self.job.spec.exec_id, stream, &keep) {
            tracing::error!(exec_id = self.job.spec.exec_id, "output lost: {e}");
            return;
        }
        self.job.progress.send_modify(|p| match stream {
            Stream::Out => p.out += keep.len() as u64,
            Stream::Err => p.err += keep.len() as u64,
        });
    }

    fn truncated(&self) -> bool {
        self.cap.lock().unwrap_or_else(|p| p.into_inner()).truncated
    }
}

/// Runs `job` to its end and records the result in the journal and the job's progress.
pub async fn run(
    job: Arc<Job>,
    journal: Arc<Journal>,
    policy: Arc<RunPolicy>,
    files: Arc<crate::files::FileRelay>,
) {
    let sink = Arc::new(Sink {
        job: job.clone(),
        journal: journal.clone(),
        cap: Mutex::new(Cap {
            limit: job.spec.output_cap,
            used: 0,
            truncated: false,
        }),
        maskers: Mutex::new([
            Masker::new(job.spec.env.iter().map(|e| e.value.as_bytes())),
            Masker::new(job.spec.env.iter().map(|e| e.value.as_bytes())),
        ]),
    });
    let started_at = now_ms();
    let (outcome, exit_code, reason, started) = match prepare(&job, &policy) {
        Err(reason) => {
            sink.write(Stream::Err, format!("haechi-agent: {reason}\n").as_bytes());
            (Outcome::Failed, None, Some(reason), None)
        }
        Ok(mut prepared) => {
            // The run's file socket lives exactly as long as the script runs.
            let socket = prepared.socket.take().map(|(listener, owner)| {
                tokio::spawn(crate::files::serve(listener, owner, job.clone(), files))
            });
            let (o, c, r) = execute(&job, &sink, prepared, started_at).await;
            if let Some(s) = socket {
                s.abort();
            }
            (o, c, r, Some(started_at))
        }
    };
    let progress = job.progress.borrow().clone();
    let result = Finished {
        exec_id: job.spec.exec_id,
        outcome,
        exit_code,
        reason,
        started_at_ms: started,
        ended_at_ms: now_ms(),
        out_len: progress.out,
        err_len: progress.err,
        truncated: sink.truncated(),
    };
    if let Err(e) = journal.finish(&result) {
        tracing::error!(exec_id = job.spec.exec_id, "cannot journal the result: {e}");
    }
    job.progress.send_modify(|p| p.result = Some(result));
}

/// A command ready to spawn, and the private directory of the run (its script and `TMPDIR`),
/// removed when dropped.
struct Prepared {
    command: Command,
    /// The run's file socket and the user it belongs to.
    socket: Option<(std::os::unix::net::UnixListener, nix::unistd::Uid)>,
    _dir: RunDir,
}

/// How this agent runs scripts, decided once when it starts.
#[derive(Debug, Clone)]
pub struct RunPolicy {
    /// The user-switch and sandbox helper (`haechi agent-exec-as`).
    pub helper: Option<ExecHelper>,
    /// Paths scripts must not read or change (the agent's data directory, and for the server's
    /// local agent the server's data directory).
    pub protect: Vec<PathBuf>,
    /// Whether scripts run in the Landlock sandbox.
    pub sandbox: SandboxState,
    /// Refuse `root` and the agent's own user as `osUser` (the server's local agent: its user
    /// is the server's).
    pub refuse_privileged: bool,
    /// Where runs get their private directories.
    pub run_root: PathBuf,
    /// Resource limits and umask of scripts.
    pub limits: Limits,
}

/// The sandbox as the agent found it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxState {
    /// Scripts run in the sandbox.
    On,
    /// The sandbox is unavailable (the reason) and the operator allowed running without it.
    Degraded(String),
    /// The sandbox is unavailable (the reason): scripts are refused.
    Unavailable(String),
}

fn prepare(job: &Job, policy: &RunPolicy) -> Result<Prepared, String> {
    let spec = &job.spec;
    if let Some(why) = &spec.env_unavailable {
        return Err(why.clone());
    }
    if spec.os_user.is_empty() {
        return Err("the task has no osUser".into());
    }
    let euid = geteuid();
    let me = User::from_uid(euid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| euid.to_string());
    let target = match User::from_name(&spec.os_user) {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(format!(
                "os user '{}' does not exist on this node",
                spec.os_user
            ))
        }
        Err(e) => return Err(format!("cannot look up os user '{}': {e}", spec.os_user)),
    };
    if policy.refuse_privileged && (target.uid.is_root() || target.uid == euid) {
        return Err(format!(
            "refusing to run as os user '{}' on the server's own node: root and the server's user '{me}' can reach \
             the server's keys and store; use an unprivileged user, or set agents.local_allow_privileged_os_users = true",
            spec.os_user
        ));
    }
    let switch = target.uid != euid;
    if switch && !euid.is_root() {
        return Err(format!(
            "cannot run as os user '{}': the agent runs as '{me}', not as root, so it cannot switch users \
             (run the agent as root, or set the task's osUser to '{me}')",
            spec.os_user
        ));
    }
    let sandboxed = match &policy.sandbox {
        SandboxState::On => true,
        SandboxState::Degraded(_) => false,
        SandboxState::Unavailable(why) => {
            return Err(format!(
                "refusing to run the script without its sandbox: {why} (run `haechi agent` with \
                 --allow-unsandboxed, or set agents.allow_unsandboxed_scripts = true for the local agent, to run scripts \
                 that can read the agent's credential)"
            ))
        }
    };
    let helper = match &policy.helper {
        Some(h) => h,
        None if switch => {
            return Err(format!(
                "cannot run as os user '{}': this agent cannot switch users",
                spec.os_user
            ))
        }
        None if sandboxed => return Err("this agent has no sandbox helper".into()),
        None => return Err("this agent has no helper to set the script's limits".into()),
    };

    let dir = RunDir::create(&policy.run_root, spec, &target)?;
    let (listener, socket_path) = crate::files::bind_socket(&dir.path, target.uid, target.gid)?;
    let (interpreter, interp_arg) = interpreter_of(&spec.script);
    let mut command = Command::new(&helper.program);
    command.args(&helper.args);
    if switch {
        command.arg("--user").arg(&spec.os_user);
    }
    if sandboxed {
        command.arg("--sandbox");
        for p in &policy.protect {
            command.arg("--protect").arg(p);
        }
    }
    let l = &policy.limits;
    command
        .arg("--rlimit-nofile")
        .arg(l.nofile.to_string())
        .arg("--rlimit-nproc")
        .arg(l.nproc.to_string())
        .arg("--rlimit-core")
        .arg(l.core.to_string())
        .arg("--rlimit-as")
        .arg(l.address_space.to_string())
        .arg("--umask")
        .arg(format!("{:o}", l.umask))
        .arg("--")
        .arg(&interpreter);
    if let Some(a) = interp_arg {
        command.arg(a);
    }
    command.arg(&dir.script).args(&spec.args);
    let home = target.dir.clone();
    command
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("HOME", &home)
        .env("USER", &target.name)
        .env("LOGNAME", &target.name)
        .env("SHELL", &target.shell)
        .env("TMPDIR", &dir.tmp)
        .env("HAECHI_TASK_ID", &spec.task_id)
        .env("HAECHI_NODE_ID", &spec.node_id)
        .env("HAECHI_TASK_INSTANCE_NO", spec.instance_no.to_string())
        .env("HAECHI_EXEC_NO", spec.exec_no.to_string())
        .env(crate::files::ENV_FILE_SOCKET, &socket_path)
        .env(crate::files::ENV_FILE_TOKEN, &job.file_token);
    for key in ["LANG", "LC_ALL", "TZ"] {
        if let Some(v) = std::env::var_os(key) {
            command.env(key, v);
        }
    }
    for e in &spec.env {
        command.env(&e.name, &e.value);
    }
    command
        .current_dir(if home.is_dir() {
            home.as_path()
        } else {
            Path::new("/")
        })
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    Ok(Prepared {
        command,
        socket: Some((listener, target.uid)),
        _dir: dir,
    })
}

/// The private directory of one run, `<run_root>/<exec_id>-<random>/`, owned by the task's
/// user (mode 0700): the script (mode 0500) and `tmp/` (the script's `TMPDIR`). Removed when
/// the run ends; what a killed agent left behind is removed at its next start
/// ([`clean_run_root`]).
struct RunDir {
    path: PathBuf,
    script: PathBuf,
    tmp: PathBuf,
}

impl RunDir {
    fn create(root: &Path, spec: &RunSpec, owner: &User) -> Result<RunDir, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", spec.exec_id))
            .tempdir_in(root)
            .map_err(|e| {
                format!(
                    "cannot create the run's directory in {}: {e}",
                    root.display()
                )
            })?
            .keep();
        let run = RunDir {
            script: dir.join(script_file_name(&spec.script_name)),
            tmp: dir.join("tmp"),
            path: dir,
        };
        let fail = |what: &str, e: std::io::Error| format!("cannot {what}: {e}");
        std::fs::create_dir(&run.tmp).map_err(|e| fail("create the run's TMPDIR", e))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&run.script)
            .map_err(|e| fail("write the script", e))?;
        file.write_all(spec.script.as_bytes())
            .map_err(|e| fail("write the script", e))?;
        drop(file);
        std::fs::set_permissions(&run.script, std::fs::Permissions::from_mode(0o500))
            .map_err(|e| fail("set the script's mode", e))?;
        for p in [&run.path, &run.tmp, &run.script] {
            nix::unistd::chown(p.as_path(), Some(owner.uid), Some(owner.gid)).map_err(|e| {
                format!(
                    "cannot give the run's files to os user '{}': {e}",
                    owner.name
                )
            })?;
        }
        Ok(run)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(dir = %self.path.display(), "cannot remove a run's directory: {e}");
        }
    }
}

/// The script's file name: `script` plus the task's `scriptName` reduced to safe characters
/// (some interpreters care about the extension).
fn script_file_name(script_name: &str) -> String {
    let suffix: String = script_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if suffix.is_empty() {
        "script".to_owned()
    } else {
        format!("script-{suffix}")
    }
}

/// The directory runs get their private directories in: `<tmp>/haechi-runs-<hash of the data
/// directory>`, owned by the agent's user (mode 0711), so one agent finds what an earlier run of
/// itself left and another agent on the host never touches it. When that name is taken by
/// something the agent does not own, a fresh random directory is used.
pub fn run_root(data_dir: &Path) -> Result<PathBuf, String> {
    let key = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let name = format!(
        "haechi-runs-{:016x}",
        fnv1a(key.as_os_str().as_encoded_bytes())
    );
    let root = std::env::temp_dir().join(name);
    match std::fs::create_dir(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", root.display())),
    }
    let ours = std::fs::symlink_metadata(&root).is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.is_dir() && m.uid() == geteuid().as_raw()
    });
    let root = if ours {
        root
    } else {
        tracing::warn!(dir = %root.display(), "the runs' directory is not the agent's own; using a fresh one");
        tempfile::Builder::new()
            .prefix("haechi-runs-")
            .tempdir()
            .map_err(|e| format!("cannot create a directory for runs: {e}"))?
            .keep()
    };
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| format!("cannot set the mode of {}: {e}", root.display()))?;
    Ok(root)
}

/// Removes what runs left in `root` (the agent was killed while they ran). Called at start,
/// before any run, while the agent holds its data directory's lock.
pub fn clean_run_root(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let gone = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match gone {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot remove what an earlier run left: {e}")
            }
        }
    }
    removed
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The interpreter of a script: its `#!` line (program and at most one argument, as the kernel
/// reads it), else `/bin/sh`. Running the interpreter on the file, rather than the file itself,
/// works on `noexec` temporary directories too.
pub fn interpreter_of(script: &str) -> (String, Option<String>) {
    if let Some(rest) = script.strip_prefix("#!") {
        let line = rest.lines().next().unwrap_or("").trim();
        if !line.is_empty() {
            return match line.split_once(char::is_whitespace) {
                Some((prog, arg)) if !arg.trim().is_empty() => {
                    (prog.to_owned(), Some(arg.trim().to_owned()))
                }
                _ => (line.to_owned(), None),
            };
        }
    }
    ("/bin/sh".to_owned(), None)
}

async fn execute(
    job: &Arc<Job>,
    sink: &Arc<Sink>,
    mut prepared: Prepared,
    started_at: i64,
) -> (Outcome, Option<i32>, Option<String>) {
    let mut child = match prepared.command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("cannot start the script: {e}");
            sink.write(Stream::Err, format!("haechi-agent: {reason}\n").as_bytes());
            return (Outcome::Failed, None, Some(reason));
        }
    };
    job.progress
        .send_modify(|p| p.started_at = Some(started_at));
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, Stream::Out, sink.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, Stream::Err, sink.clone())));
    }

    let timeout = job.spec.timeout_secs;
    let deadline = async {
        if timeout == 0 {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(Duration::from_secs(timeout)).await
        }
    };
    let mut cancel = job.cancel.subscribe();
    let cancelled = async move {
        let _ = cancel.wait_for(|c| *c).await;
    };
    enum End {
        Exited(std::io::Result<std::process::ExitStatus>),
        Timeout,
        Cancelled,
    }
    let end = tokio::select! {
        s = child.wait() => End::Exited(s),
        _ = deadline => End::Timeout,
        _ = cancelled => End::Cancelled,
    };
    let (outcome, status, reason) = match end {
        End::Exited(s) => {
            // What the script left running in its group (background children) ends with it.
            if let Some(pgid) = pgid {
                end_group(pgid).await;
            }
            (Outcome::Exited, s.ok(), None)
        }
        End::Timeout => {
            let s = kill_group(&mut child, pgid).await;
            (
                Outcome::Timeout,
                s,
                Some(format!(
                    "timed out after {timeout} s; the process group was killed"
                )),
            )
        }
        End::Cancelled => {
            let s = kill_group(&mut child, pgid).await;
            (
                Outcome::Cancelled,
                s,
                Some("cancelled; the process group was killed".to_owned()),
            )
        }
    };
    let drain = async {
        for p in &mut pumps {
            let _ = p.await;
        }
    };
    if tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await.is_err() {
        for p in &pumps {
            p.abort();
        }
    }
    let code = status.map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)));
    (outcome, code, reason)
}

async fn pump(mut from: impl tokio::io::AsyncRead + Unpin, stream: Stream, sink: Arc<Sink>) {
    let mut buf = vec![0u8; haechi_protocol::MAX_CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => sink.output(stream, &buf[..n]),
        }
    }
    sink.close(stream);
}

fn stream_slot(stream: Stream) -> usize {
    match stream {
        Stream::Out => 0,
        Stream::Err => 1,
    }
}

/// What replaces a secret value in the output.
pub const MASK: &[u8] = b"****";

/// Replaces every occurrence of secret values in a stream with [`MASK`], also when an
/// occurrence is split across reads: it holds back a tail that could still grow into a secret
/// (at most the longest secret's length − 1 bytes) until the next chunk or the end. Where
/// secrets overlap, the longest one matching at a position wins. Empty values are ignored.
/// Everything else passes byte for byte.
pub struct Masker {
    /// Longest first.
    secrets: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl Masker {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Masker {
        let mut secrets: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Masker {
            secrets,
            held: Vec::new(),
        }
    }

    /// The next chunk; returns what can be passed on now.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return data.to_vec();
        }
        self.held.extend_from_slice(data);
        self.scan(false)
    }

    /// The end of the stream: the rest, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.secrets.is_empty() {
            return Vec::new();
        }
        self.scan(true)
    }

    fn scan(&mut self, end: bool) -> Vec<u8> {
        let buf = std::mem::take(&mut self.held);
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'outer: while i < buf.len() {
            let rest = &buf[i..];
            for s in &self.secrets {
                if rest.len() < s.len() {
                    // A longer secret may still complete with the next chunk: wait for it
                    // (before settling for a shorter one that matches here now).
                    if !end && s.starts_with(rest) {
                        self.held = rest.to_vec();
                        break 'outer;
                    }
                } else if rest.starts_with(s) {
                    out.extend_from_slice(MASK);
                    i += s.len();
                    continue 'outer;
                }
            }
            out.push(buf[i]);
            i += 1;
        }
        out
    }
}

/// Ends what is left of a process group whose leader has exited: SIGTERM, then SIGKILL to
/// whatever is still there after the grace.
async fn end_group(pgid: Pid) {
    if killpg(pgid, Signal::SIGTERM).is_err() {
        return; // nothing left
    }
    let deadline = tokio::time::Instant::now() + KILL_GRACE;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if killpg(pgid, None).is_err() {
            return;
        }
    }
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// SIGTERM to the group, SIGKILL after a grace; returns the script's exit status.
async fn kill_group(
    child: &mut tokio::process::Child,
    pgid: Option<Pid>,
) -> Option<std::process::ExitStatus> {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGTERM);
    }
    if let Ok(s) = tokio::time::timeout(KILL_GRACE, child.wait()).await {
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        return s.ok();
    }
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let _ = child.start_kill();
    child.wait().await.ok()
}

#[cfg(test)]
mod tests {
    use super::{interpreter_of, Masker};

    fn mask_chunks(secrets: &[&str], chunks: &[&str]) -> String {
        let mut m = Masker::new(secrets.iter().map(|s| s.as_bytes()));
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c.as_bytes()));
        }
        out.extend(m.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_whole_and_split_occurrences() {
        assert_eq!(mask_chunks(&["s3cret"], &["pw=s3cret\n"]), "pw=****\n");
        assert_eq!(
            mask_chunks(&["s3cret"], &["pw=s3", "cr", "et!"]),
            "pw=****!"
        );
        // Every split point of a two-chunk stream.
        let text = "a s3cret b s3cret";
        for cut in 0..=text.len() {
            let (x, y) = text.split_at(cut);
            assert_eq!(
                mask_chunks(&["s3cret"], &[x, y]),
                "a **** b ****",
                "cut at {cut}"
            );
        }
        // One byte at a time.
        let bytes: Vec<String> = text.chars().map(String::from).collect();
        let parts: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(mask_chunks(&["s3cret"], &parts), "a **** b ****");
    }

    #[test]
    fn near_misses_pass_unchanged() {
        assert_eq!(
            mask_chunks(&["s3cret"], &["s3cre", "X s3cr"]),
            "s3creX s3cr"
        );
        assert_eq!(mask_chunks(&["aab"], &["aaab"]), "a****");
        assert_eq!(mask_chunks(&["aab"], &["aa", "aab"]), "aa****");
    }

    #[test]
    fn overlapping_and_several_secrets() {
        // The longer one wins where both match; the shorter one alone is masked too.
        assert_eq!(
            mask_chunks(&["abc", "abcdef"], &["x abcdef y abc z"]),
            "x **** y **** z"
        );
        assert_eq!(
            mask_chunks(&["abc", "abcdef"], &["x abc", "def y abc", "d"]),
            "x **** y ****d"
        );
        assert_eq!(
            mask_chunks(&["one", "two"], &["one+tw", "o=three"]),
            "****+****=three"
        );
        // Repeated secrets.
        assert_eq!(mask_chunks(&["xx"], &["xxxxx"]), "********x");
    }

    #[test]
    fn empty_values_are_ignored() {
        assert_eq!(mask_chunks(&[""], &["anything"]), "anything");
        assert_eq!(mask_chunks(&["", "k"], &["okay"]), "o****ay");
        assert_eq!(mask_chunks(&[], &["a", "b"]), "ab");
    }

    #[test]
    fn binary_output_passes_byte_exact() {
        let mut m = Masker::new([&b"\xff\x00"[..]]);
        let mut out = m.push(&[1, 0xff]);
        out.extend(m.push(&[0x00, 0xfe, 0xff]));
        out.extend(m.finish());
        assert_eq!(out, [&[1u8][..], b"****", &[0xfe, 0xff]].concat());
    }

    #[test]
    fn shebang() {
        assert_eq!(
            interpreter_of("#!/bin/bash\necho"),
            ("/bin/bash".into(), None)
        );
        assert_eq!(
            interpreter_of("#!/usr/bin/env python3\n"),
            ("/usr/bin/env".into(), Some("python3".into()))
        );
        assert_eq!(interpreter_of("echo hi"), ("/bin/sh".into(), None));
        assert_eq!(interpreter_of("#!\necho"), ("/bin/sh".into(), None));
    }
}
