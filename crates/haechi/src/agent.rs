//! `haechi agent` (CONTRACT §7), the server's local agent, and the user-switch helper the agent
//! re-executes when it runs a task as another OS user. The agent itself lives in
//! `haechi-agent`; this wires it to the command line and to the server's TLS trust.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use haechi_agent::{AgentOptions, Credential, ExecHelper, Limits};

use crate::tls::{client_config, normalize_fingerprint, Pin};

#[derive(clap::Subcommand)]
enum AgentAction {
    /// Write the systemd unit that runs this agent on this node (and the environment file
    /// holding its one-time enrolment token).
    Install(crate::agent_install::InstallArgs),
}

/// The hidden subcommand the agent runs to become another user before running a script.
pub const EXEC_AS_COMMAND: &str = "agent-exec-as";

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    action: Option<AgentAction>,
    /// The server, https://HOST:PORT (the server's one HTTPS port; the agent dials out).
    /// Repeat it (or give a comma-separated list) for several servers sharing one
    /// PostgreSQL: the agent enrols with the first and, when its server dies, reconnects to
    /// the next; the executions it holds are resumed there. One load balancer address works
    /// too.
    #[arg(
        long,
        env = "HAECHI_SERVER",
        value_name = "URL",
        required = true,
        value_delimiter = ','
    )]
    server: Vec<String>,
    /// One-time enrolment token (POST /api/v1/agents/enrollment-tokens); needed only until the
    /// agent holds its own credential in the data directory.
    #[arg(long, env = "HAECHI_ENROLL_TOKEN", value_name = "TOKEN")]
    enroll_token: Option<String>,
    /// The agent's own directory: its credential (mode 0600) and its journal.
    #[arg(long, value_name = "DIR", default_value = "haechi-agent")]
    data_dir: PathBuf,
    /// Node id to enrol as (default: the host name).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Trust the server whose certificate has this SHA-256 fingerprint (printed at server
    /// start). Repeat it for several servers, each with its own self-signed certificate.
    #[arg(long, value_name = "SHA256", conflicts_with_all = ["ca", "insecure_skip_verify"])]
    server_fingerprint: Vec<String>,
    /// Trust server certificates signed by this CA (PEM).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure_skip_verify")]
    ca: Option<PathBuf>,
    /// Do not verify the server's certificate (the connection is still encrypted).
    #[arg(long)]
    insecure_skip_verify: bool,
    /// Stop when standard input closes (for supervisors and test harnesses).
    #[arg(long)]
    stop_on_stdin_eof: bool,
    /// Run scripts without their Landlock sandbox when this kernel cannot enforce it (a loud,
    /// degraded mode: scripts can then read the agent's credential). Without it such runs fail.
    #[arg(long)]
    allow_unsandboxed: bool,
    /// Scripts' open-file limit (RLIMIT_NOFILE; 0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = Limits::default().nofile)]
    script_nofile: u64,
    /// Scripts' process limit, per user (RLIMIT_NPROC; 0 = unlimited; not enforced on root).
    #[arg(long, value_name = "N", default_value_t = Limits::default().nproc)]
    script_nproc: u64,
    /// Scripts' core dump size in bytes (RLIMIT_CORE; 0 = no core dumps).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().core)]
    script_core_bytes: u64,
    /// Scripts' address space in bytes (RLIMIT_AS; 0 = unlimited).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().address_space)]
    script_address_space_bytes: u64,
    /// A label of this node, reported to the server (repeatable): `--label role=was`. Tasks
    /// target nodes by label, and scripts read them as `@OPM_ATTR.KEY@`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// A file of labels, one `KEY=VALUE` a line (`#` comments and blank lines ignored);
    /// `--label` wins over it.
    #[arg(long, value_name = "FILE")]
    labels_file: Option<PathBuf>,
}

/// The node's labels from `--labels-file` and `--label`, checked.
fn agent_labels(
    file: Option<&std::path::Path>,
    flags: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    let mut add = |origin: &str, line: &str| -> anyhow::Result<()> {
        let (k, v) = line
            .split_once('=')
            .with_context(|| format!("{origin}: {line:?} is not KEY=VALUE"))?;
        let k = k.trim();
        let ok = !k.is_empty()
            && k.len() <= 64
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        anyhow::ensure!(
            ok,
            "{origin}: label key {k:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'"
        );
        anyhow::ensure!(
            v.len() <= 4096 && !v.contains('\0'),
            "{origin}: the value of label {k} must be at most 4096 bytes, without NUL"
        );
        out.insert(k.to_owned(), v.trim().to_owned());
        Ok(())
    };
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the labels file {}", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            add(&format!("{}:{}", f.display(), i + 1), line)?;
        }
    }
    for l in flags {
        add("--label", l)?;
    }
    anyhow::ensure!(out.len() <= 256, "at most 256 labels");
    Ok(out)
}

/// `haechi agent-exec-as [--user U] [--sandbox --protect P...] [--rlimit-...] -- PROGRAM ARGS...`
/// (internal; the options are read by `haechi_agent::ExecAs::parse`).
#[derive(Args)]
pub struct ExecAsArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    args: Vec<OsString>,
}

fn helper() -> Option<ExecHelper> {
    std::env::current_exe().ok().map(|program| ExecHelper {
        program,
        args: vec![OsString::from(EXEC_AS_COMMAND)],
    })
}

/// Runs `haechi agent` until Ctrl-C or SIGTERM.
pub async fn run(a: AgentArgs) -> anyhow::Result<ExitCode> {
    if let Some(AgentAction::Install(i)) = a.action {
        return crate::agent_install::install(i);
    }
    init_logging();
    let servers: Vec<String> = a
        .server
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let Some(first) = servers.first().cloned() else {
        anyhow::bail!("--server: give at least one server URL");
    };
    let https = first.starts_with("https://");
    if servers.iter().any(|s| s.starts_with("https://") != https) {
        anyhow::bail!("--server: every server URL must use the same scheme (https:// or http://)");
    }
    let tls = if https {
        let pin = match (
            a.server_fingerprint.is_empty(),
            &a.ca,
            a.insecure_skip_verify,
        ) {
            (false, _, _) => Pin::AnyFingerprint(
                a.server_fingerprint
                    .iter()
                    .map(|f| {
                        normalize_fingerprint(f)
                            .context("--server-fingerprint is not a SHA-256 fingerprint")
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?,
            ),
            (true, Some(ca), _) => Pin::Ca(ca.clone()),
            (true, None, true) => {
                tracing::warn!(
                    "INSECURE: --insecure-skip-verify trusts any certificate: anyone between this \
                     node and {} can pose as the server, take this agent's secret and send it \
                     scripts to run; pin the server with --server-fingerprint instead",
                    first
                );
                Pin::Insecure
            }
            (true, None, false) => {
                anyhow::bail!(
                    "say how to trust the server: --server-fingerprint SHA256 (printed when the server starts), --ca FILE, or --insecure-skip-verify"
                )
            }
        };
        Some(client_config(pin)?)
    } else {
        for s in &servers {
            haechi_agent::require_loopback_for_plain_http(s).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        None
    };
    if let Some(cred) = Credential::load(&a.data_dir).map_err(|e| anyhow::anyhow!("{e}"))? {
        let known = servers
            .iter()
            .any(|s| cred.server.trim_end_matches('/') == s.trim_end_matches('/'));
        if !known {
            tracing::warn!(enrolled_with = %cred.server, "the data directory was enrolled with another server URL");
        }
    }
    let labels = agent_labels(a.labels_file.as_deref(), &a.labels)?;
    let opts = AgentOptions {
        labels,
        server: first,
        failover: servers[1..].to_vec(),
        tls,
        data_dir: a.data_dir,
        node_id: a.node_id,
        enroll_token: a.enroll_token,
        exec_helper: helper(),
        protect: Vec::new(),
        allow_unsandboxed: a.allow_unsandboxed,
        refuse_privileged_os_users: false,
        limits: Limits {
            nofile: a.script_nofile,
            nproc: a.script_nproc,
            core: a.script_core_bytes,
            address_space: a.script_address_space_bytes,
            ..Limits::default()
        },
        agent_ver: env!("CARGO_PKG_VERSION").to_owned(),
    };
    haechi_agent::run(opts, shutdown(a.stop_on_stdin_eof))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// The user-switch helper: never returns on success (the script replaces it).
pub fn exec_as(a: &ExecAsArgs) -> ExitCode {
    let parsed = haechi_agent::ExecAs::parse(&a.args).and_then(|(opts, command)| {
        command
            .split_first()
            .map(|(program, args)| (opts, program, args))
            .ok_or_else(|| "no program to run".to_owned())
    });
    let (opts, program, args) = match parsed {
        Ok(x) => x,
        Err(e) => {
            eprintln!("haechi-agent: {e}");
            return ExitCode::from(126);
        }
    };
    match haechi_agent::exec_as(&opts, program, args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("haechi-agent: {e}");
            ExitCode::from(126)
        }
    }
}

/// Starts the server's own agent in this process, enrolled automatically with a token the
/// server makes for it, so a task can run on this machine at once. Returns its task.
pub async fn start_local(
    cfg: &crate::config::Config,
    exec: &Arc<haechi_exec::Exec>,
    bound: SocketAddr,
    fingerprint: Option<&str>,
) -> Option<tokio::task::JoinHandle<()>> {
    let data_dir = cfg.data_dir.join("agent");
    let host = match bound.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let authority = SocketAddr::new(host, bound.port());
    let (server, tls) = match fingerprint {
        Some(fp) => match client_config(Pin::Fingerprint(fp.to_owned())) {
            Ok(tls) => (format!("https://{authority}"), Some(tls)),
            Err(e) => {
                tracing::error!("local agent not started: {e:#}");
                return None;
            }
        },
        None => (format!("http://{authority}"), None),
    };
    let node_id = cfg
        .agents
        .local_node_id
        .clone()
        .unwrap_or_else(local_hostname);
    let enrolled = matches!(Credential::load(&data_dir), Ok(Some(_)));
    let enroll_token = if enrolled {
        None
    } else {
        let caller = haechi_identity::Caller::system(haechi_identity::Actor::system(
            "system",
            haechi_identity::Origin::System,
        ));
        // Made for the local node's id, so it also enrols that node again after its
        // credential was revoked.
        let req = haechi_exec::NewEnrollmentToken {
            ttl_secs: Some(600),
            uses: Some(1),
            node_id: Some(node_id.clone()),
        };
        match exec.create_enrollment_token(&caller, req).await {
            Ok(t) => Some(t.token),
            Err(e) => {
                tracing::error!("local agent not started: cannot make its enrolment token: {e}");
                return None;
            }
        }
    };
    let opts = AgentOptions {
        server,
        failover: Vec::new(),
        tls,
        data_dir,
        node_id: Some(node_id),
        enroll_token,
        exec_helper: helper(),
        // The server's data directory holds the vault key, the store, the TLS key and this
        // agent's own directory.
        protect: vec![cfg.data_dir.clone()],
        allow_unsandboxed: cfg.agents.allow_unsandboxed_scripts,
        refuse_privileged_os_users: !cfg.agents.local_allow_privileged_os_users,
        limits: cfg.agents.script_limits.clone(),
        agent_ver: env!("CARGO_PKG_VERSION").to_owned(),
        labels: std::collections::BTreeMap::from([("local".to_owned(), "true".to_owned())]),
    };
    println!(
        "haechi: local agent starting (node id: {})",
        opts.node_id.as_deref().unwrap_or_default()
    );
    Some(tokio::spawn(async move {
        if let Err(e) = haechi_agent::run(opts, std::future::pending()).await {
            tracing::error!("local agent stopped: {e}");
        }
    }))
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HAECHI_LOG_LEVEL")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .fmt_fields(crate::logfmt::EscapedFields::default())
        .init();
}

async fn shutdown(stop_on_stdin_eof: bool) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    // A plain thread, not tokio's stdin: a blocked tokio stdin read would keep the runtime
    // from shutting down when the agent ends for another reason.
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    if stop_on_stdin_eof {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = eof_tx.send(());
        });
    }
    let stdin_eof = async {
        if eof_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
        _ = stdin_eof => {}
    }
    tracing::info!("agent stopping");
}
