//! `haechi`: the server, and the client commands that talk to it.

mod agent;
mod agent_install;
mod backup;
mod client;
mod config;
mod doctor;
mod file_cli;
mod logfmt;
mod ports;
mod server;
mod table;
mod tasks_cli;
mod tls;
mod vault_cli;
mod wf_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{read_password, Client, Session, Trust};
use crate::config::{Config, Overrides};

/// mimalloc instead of glibc's allocator: its per-thread heaps take no lock on the hot paths,
/// where glibc's arenas were a tenth of a 50-row list's time in malloc and futex waits on their
/// locks (bench/README.md, `reads.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Haechi: operations automation and access governance. One server for the MDRM, OPMATE,
/// DBSAFER and Control Room credential vault APIs over one identity, one audit log and one store.
#[derive(Parser)]
#[command(
    name = "haechi",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Configuration file (TOML). Also HAECHI_CONFIG.
    #[arg(long, global = true, env = "HAECHI_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTPS on one port for every API family).
    Server(ServerArgs),
    /// Log in to a server and keep the session for the other client commands.
    Login(LoginArgs),
    /// Revoke the saved session's token and forget it.
    Logout,
    /// Manage users (needs the admin.users permission).
    #[command(subcommand)]
    User(UserCmd),
    /// Manage roles.
    #[command(subcommand)]
    Role(RoleCmd),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Show or explain the configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// What waits for a decision: tasks whose approval was requested, and approval steps of
    /// running workflow executions.
    Approvals {
        /// Print the server's JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Offline administration of a data directory (the server may be stopped).
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Run an agent on this node: it dials out to the server and runs the tasks it is sent
    /// (`haechi agent install` writes a systemd unit that does it).
    Agent(agent::AgentArgs),
    /// Write a consistent backup of a running (or stopped) installation into one archive file.
    Backup(backup::BackupArgs),
    /// Restore a backup into a new, empty data directory (and, for PostgreSQL, an empty database).
    Restore(backup::RestoreArgs),
    /// Check an installation (store, migrations, vault, certificate, agents' clocks, disk,
    /// audit forwarding) and say what to do; exits non-zero when a check fails.
    Doctor(doctor::DoctorArgs),
    /// Manage and run tasks.
    #[command(subcommand)]
    Task(tasks_cli::TaskCmd),
    /// Manage nodes and enrolment tokens.
    #[command(subcommand)]
    Node(tasks_cli::NodeCmd),
    /// Administer the credential vault: status, unseal, data key rotation, master key change
    /// (needs vault.settings).
    #[command(subcommand)]
    Vault(vault_cli::VaultCmd),
    /// Manage and run workflows (MDRM runbooks) and their executions.
    #[command(subcommand)]
    Wf(wf_cli::WfCmd),
    /// Inside a task run: get or put a file of the OPMATE file repository through the agent
    /// running the task (`HAECHI_FILE_SOCKET`, `HAECHI_FILE_TOKEN`).
    #[command(subcommand)]
    File(file_cli::FileCmd),
    /// (internal) Become an OS user and run a program; the agent's user switch.
    #[command(name = "agent-exec-as", hide = true)]
    AgentExecAs(agent::ExecAsArgs),
}

#[derive(Args)]
struct ServerArgs {
    /// Directory for the SQLite store, the certificate and keys (created if missing).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (port 0 picks a free one and prints it).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// PostgreSQL URL; several servers may share one database. Without it the store is SQLite in the data dir.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Serve plain HTTP instead of HTTPS (loopback only unless allowed in the configuration).
    #[arg(long)]
    plain_http: bool,
    /// PostgreSQL gateway address, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pg_gateway: Option<String>,
    /// MySQL/MariaDB gateway address, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    mysql_gateway: Option<String>,
    /// Stop when standard input closes (for supervisors and test harnesses).
    #[arg(long)]
    stop_on_stdin_eof: bool,
    /// Do not start the local agent (configuration: agents.local_agent).
    #[arg(long)]
    no_local_agent: bool,
}

#[derive(Args)]
struct TrustArgs {
    /// Trust the server whose certificate has this SHA-256 fingerprint (printed at server start).
    #[arg(long, value_name = "SHA256", conflicts_with_all = ["ca", "insecure"])]
    fingerprint: Option<String>,
    /// Trust certificates signed by this CA (PEM).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Do not verify the server's certificate (like curl -k).
    #[arg(long, short = 'k')]
    insecure: bool,
}

#[derive(Args)]
struct LoginArgs {
    /// Server URL, e.g. https://127.0.0.1:8443
    #[arg(long, env = "HAECHI_SERVER")]
    server: String,
    /// User id.
    #[arg(long, short = 'u', default_value = "admin")]
    user: String,
    /// Read the password from standard input instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    trust: TrustArgs,
}

#[derive(Subcommand)]
enum UserCmd {
    /// List users.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Show one user.
    Show { user_id: String },
    /// Create a user; the password is prompted for (or read from stdin).
    Create {
        user_id: String,
        #[arg(long)]
        name: String,
        /// human or api
        #[arg(long, default_value = "human")]
        kind: String,
        /// A role name (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// An allowed client address or CIDR (repeatable; none = anywhere).
        #[arg(long = "allow-ip")]
        allowed_ips: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's name, roles, allowed IPs or kind.
    Update {
        user_id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// Replace the roles (repeatable).
        #[arg(long = "role")]
        roles: Option<Vec<String>>,
        /// Replace the allowed IPs (repeatable).
        #[arg(long = "allow-ip")]
        allowed_ips: Option<Vec<String>>,
    },
    /// Set a user's password (revokes their tokens).
    Passwd {
        user_id: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user (revokes their tokens).
    Disable { user_id: String },
    /// Enable a disabled user.
    Enable { user_id: String },
    /// Lift a failed-login or inactivity lock.
    Unlock { user_id: String },
    /// Delete a user.
    Delete { user_id: String },
}

#[derive(Subcommand)]
enum RoleCmd {
    /// List roles and their permissions.
    List,
    /// Create a custom role.
    Create {
        name: String,
        /// A permission (repeatable), e.g. workflow.view
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a custom role.
    Delete { role: String },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain of the audit log offline (server running or stopped); exits non-zero
    /// naming the first broken event.
    Verify {
        /// The server's data directory (for the SQLite store).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// PostgreSQL URL, when the server uses PostgreSQL.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Check a copy of the log that audit forwarding wrote (JSON-lines files, or syslog
    /// messages as a SIEM stored them), link by link; with --data-dir / --database-url also
    /// against the store. Exits non-zero naming the first problem.
    VerifyExport {
        /// The exported files, oldest first (rotated files: `audit.jsonl.2 audit.jsonl.1 audit.jsonl`).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The server's data directory, to compare with the store.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// PostgreSQL URL, to compare with the store.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// List events through the server (Auditor role).
    List {
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Set a new password for a user straight in the store, unlock the user and end their
    /// sessions: the way back in when the bootstrap password was lost. Prints a random password
    /// unless one is given on standard input. Audited as `user.update` by `local:reset-password`.
    ResetPassword {
        /// The server's data directory (for the SQLite store).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// PostgreSQL URL, when the server uses PostgreSQL.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// The user whose password is reset.
        #[arg(long, default_value = "admin")]
        user: String,
        /// Read the new password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print a commented configuration file with every key and its default.
    Example,
    /// Print the effective configuration and where each value came from (secrets hidden).
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::AgentExecAs(a) = &cli.command {
        // The agent's user switch: no runtime, straight to exec.
        return agent::exec_as(a);
    }
    // The server's configuration is read while this is the only thread, so the secrets it took
    // from the environment can be removed from it safely: no child ever inherits them.
    let server_cfg = match &cli.command {
        Command::Server(a) => match server_config(a, cli.config.as_deref()) {
            Ok(cfg) => {
                Config::remove_secrets_from_env();
                Some(cfg)
            }
            Err(e) => {
                eprintln!("haechi: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("haechi: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(dispatch(cli, server_cfg)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("haechi: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Everything that matters was awaited inside `dispatch`. What may be left is a blocking
    // read that cannot be cancelled (the standard input watched by `--stop-on-stdin-eof`, when
    // the server stopped on a signal instead): dropping the runtime would wait for it forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(logfmt::filter_for(&cfg.log_level)));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if cfg.log_format == "json" {
        builder.json().init();
    } else {
        builder.fmt_fields(logfmt::EscapedFields::default()).init();
    }
}

/// The configuration of `haechi server`.
fn server_config(a: &ServerArgs, config: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let overrides = Overrides {
        data_dir: a.data_dir.clone(),
        listen: a.listen.clone(),
        database_url: a.database_url.clone(),
        plain_http: a.plain_http.then_some(true),
        pg_gateway: a.pg_gateway.clone(),
        mysql_gateway: a.mysql_gateway.clone(),
    };
    let mut cfg = Config::load(config, &overrides)?;
    if a.no_local_agent {
        cfg.agents.local_agent = false;
    }
    Ok(cfg)
}

async fn dispatch(cli: Cli, server_cfg: Option<Config>) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Server(a) => {
            let cfg = server_cfg.context("the server's configuration was not loaded")?;
            init_logging(&cfg);
            server::run(
                cfg,
                server::RunOptions {
                    stop_on_stdin_eof: a.stop_on_stdin_eof,
                },
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Login(a) => login(a).await,
        Command::Logout => {
            let client = Client::from_session()?;
            client
                .call(Method::DELETE, "/api/v1/tokens/current", None)
                .await?;
            let path = client::session_path()?;
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            println!("logged out");
            Ok(ExitCode::SUCCESS)
        }
        Command::User(cmd) => user(cmd).await,
        Command::Role(cmd) => role(cmd).await,
        Command::Audit(cmd) => audit(cmd, cli.config.as_deref()).await,
        Command::Admin(cmd) => admin(cmd, cli.config.as_deref()).await,
        Command::Approvals { json } => approvals(json).await,
        Command::Config(ConfigCmd::Example) => {
            print!("{}", config::example());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCmd::Show) => {
            let cfg = Config::load(cli.config.as_deref(), &Overrides::default())?;
            print!("{}", cfg.explain());
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(a) => agent::run(a).await,
        Command::Backup(a) => backup::backup(a, cli.config.as_deref()).await,
        Command::Restore(a) => backup::restore(a).await,
        Command::Doctor(a) => doctor::doctor(a, cli.config.as_deref()).await,
        Command::Task(cmd) => tasks_cli::task(cmd).await,
        Command::Node(cmd) => tasks_cli::node(cmd).await,
        Command::Vault(cmd) => vault_cli::vault(cmd).await,
        Command::Wf(cmd) => wf_cli::wf(cmd).await,
        Command::File(cmd) => file_cli::file(cmd).await,
        Command::AgentExecAs(a) => Ok(agent::exec_as(&a)),
    }
}

fn trust_of(t: &TrustArgs) -> anyhow::Result<Trust> {
    Ok(match (&t.fingerprint, &t.ca, t.insecure) {
        (Some(f), _, _) => Trust::Fingerprint(
            tls::normalize_fingerprint(f).context("--fingerprint is not a SHA-256 fingerprint")?,
        ),
        (None, Some(ca), _) => Trust::Ca(ca.clone()),
        (None, None, true) => Trust::Insecure,
        (None, None, false) => anyhow::bail!(
            "say how to trust the server: --fingerprint SHA256 (printed when the server starts), --ca FILE, or --insecure"
        ),
    })
}

async fn login(a: LoginArgs) -> anyhow::Result<ExitCode> {
    let trust = trust_of(&a.trust)?;
    let password = read_password(&format!("password for {}: ", a.user), a.password_stdin)?;
    let client = Client::new(&a.server, &trust, None)?;
    let answer = client
        .call(
            Method::POST,
            "/api/v1/auth",
            Some(&json!({ "user_id": a.user, "pwd": password })),
        )
        .await?;
    let token = answer
        .get("token")
        .and_then(Value::as_str)
        .and_then(|t| t.strip_prefix("Bearer "))
        .context("the server's answer has no token")?
        .to_owned();
    let path = Session {
        server: a.server,
        token,
        trust,
        user_id: a.user.clone(),
    }
    .save()?;
    println!("logged in as {} (session in {})", a.user, path.display());
    Ok(ExitCode::SUCCESS)
}

fn print_json(v: &Value) {
    use std::io::Write;
    // A closed pipe (`haechi user list | head`) is not an error worth a panic.
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn user(cmd: UserCmd) -> anyhow::Result<ExitCode> {
    let c = Client::from_session()?;
    let u = |id: &str| format!("/api/v1/users/{}", path_segment(id));
    let out = match cmd {
        UserCmd::List { limit, offset } => {
            c.call(
                Method::GET,
                &format!("/api/v1/users?limit={limit}&offset={offset}"),
                None,
            )
            .await?
        }
        UserCmd::Show { user_id } => c.call(Method::GET, &u(&user_id), None).await?,
        UserCmd::Create {
            user_id,
            name,
            kind,
            roles,
            allowed_ips,
            password_stdin,
        } => {
            let password = read_password(&format!("password for {user_id}: "), password_stdin)?;
            let body = json!({ "user_id": user_id, "name": name, "kind": kind, "roles": roles,
                               "allowed_ips": allowed_ips, "password": password });
            c.call(Method::POST, "/api/v1/users", Some(&body)).await?
        }
        UserCmd::Update {
            user_id,
            name,
            kind,
            roles,
            allowed_ips,
        } => {
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(k) = kind {
                body["kind"] = json!(k);
            }
            if let Some(r) = roles {
                body["roles"] = json!(r);
            }
            if let Some(ips) = allowed_ips {
                body["allowed_ips"] = json!(ips);
            }
            c.call(Method::PATCH, &u(&user_id), Some(&body)).await?
        }
        UserCmd::Passwd {
            user_id,
            password_stdin,
        } => {
            let password = read_password(&format!("new password for {user_id}: "), password_stdin)?;
            c.call(
                Method::PUT,
                &format!("{}/password", u(&user_id)),
                Some(&json!({ "password": password })),
            )
            .await?;
            println!("password changed; the user's tokens were revoked");
            return Ok(ExitCode::SUCCESS);
        }
        UserCmd::Disable { user_id } => {
            c.call(Method::POST, &format!("{}/disable", u(&user_id)), None)
                .await?
        }
        UserCmd::Enable { user_id } => {
            c.call(Method::POST, &format!("{}/enable", u(&user_id)), None)
                .await?
        }
        UserCmd::Unlock { user_id } => {
            c.call(Method::POST, &format!("{}/unlock", u(&user_id)), None)
                .await?
        }
        UserCmd::Delete { user_id } => {
            c.call(Method::DELETE, &u(&user_id), None).await?;
            println!("deleted {user_id}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    print_json(&out);
    Ok(ExitCode::SUCCESS)
}

async fn role(cmd: RoleCmd) -> anyhow::Result<ExitCode> {
    let c = Client::from_session()?;
    let out = match cmd {
        RoleCmd::List => c.call(Method::GET, "/api/v1/roles", None).await?,
        RoleCmd::Create {
            name,
            permissions,
            description,
        } => {
            let body =
                json!({ "name": name, "permissions": permissions, "description": description });
            c.call(Method::POST, "/api/v1/roles", Some(&body)).await?
        }
        RoleCmd::Delete { role } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/roles/{}", path_segment(&role)),
                None,
            )
            .await?;
            println!("deleted {role}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    print_json(&out);
    Ok(ExitCode::SUCCESS)
}

async fn approvals(json_out: bool) -> anyhow::Result<ExitCode> {
    use crate::table::{cell, local_time, Table};
    let c = Client::from_session()?;
    let tasks = c
        .call(Method::GET, "/api/v1/tasks?apprv_status=Q&limit=1000", None)
        .await?;
    let running = c
        .call(
            Method::GET,
            "/api/v1/executions?status=RUNNING&limit=1000",
            None,
        )
        .await?;
    let mut steps = Vec::new();
    for e in running["executions"].as_array().into_iter().flatten() {
        let Some(id) = e["execution_id"].as_str() else {
            continue;
        };
        let view = c
            .call(Method::GET, &format!("/api/v1/executions/{id}"), None)
            .await?;
        for s in view["steps"].as_array().into_iter().flatten() {
            if s["type"] == "approval" && s["status"] == "RUNNING" {
                steps.push(json!({
                    "execution_id": id,
                    "workflow_name": view["workflow_name"],
                    "started_by": view["started_by"],
                    "step": s["name"],
                    "waiting_since": s["started_at"],
                }));
            }
        }
    }
    if json_out {
        let all = json!({ "tasks": tasks["tasks"], "approval_steps": steps });
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("Tasks waiting for approval (haechi task review ID, then haechi task approve ID --revision N):");
    let mut t = Table::new(&["TASK", "REVISION", "SCRIPT", "REQUESTED BY", "CHANGED"]);
    for task in tasks["tasks"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&task["id"]),
            cell(&task["revisionNo"]),
            cell(&task["scriptName"]),
            cell(&task["apprvRequestedBy"]),
            local_time(task["updatedAt"].as_i64()),
        ]);
    }
    t.print();
    println!();
    println!(
        "Approval steps of running workflows (haechi wf decide EXECUTION STEP approve|reject):"
    );
    let mut t = Table::new(&[
        "EXECUTION",
        "WORKFLOW",
        "STEP",
        "STARTED BY",
        "WAITING SINCE",
    ]);
    for s in &steps {
        t.row(vec![
            cell(&s["execution_id"]),
            cell(&s["workflow_name"]),
            cell(&s["step"]),
            cell(&s["started_by"]),
            local_time(s["waiting_since"].as_i64()),
        ]);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}

async fn admin(cmd: AdminCmd, config_file: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let AdminCmd::ResetPassword {
        data_dir,
        database_url,
        user,
        password_stdin,
    } = cmd;
    let overrides = Overrides {
        data_dir,
        database_url,
        ..Default::default()
    };
    let cfg = Config::load(config_file, &overrides)?;
    if cfg.database_url.is_none() && !cfg.sqlite_path().exists() {
        anyhow::bail!(
            "no store in {}: give the server's --data-dir (or --database-url)",
            cfg.data_dir.display()
        );
    }
    let (password, generated) = if password_stdin {
        (read_password("", true)?, false)
    } else {
        (haechi_identity::random_password_string(), true)
    };
    let store = haechi_store::Store::open_existing(&server::store_options(&cfg))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let identity = haechi_identity::Identity::new(store.clone(), cfg.identity.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let outcome = identity
        .reset_password_offline(&user, secrecy::SecretString::from(password.clone()))
        .await;
    store.close().await;
    outcome.map_err(|e| anyhow::anyhow!("{e}"))?;
    if generated {
        println!("new password of '{user}' (shown once): {password}");
    } else {
        println!("password of '{user}' reset");
    }
    println!("'{user}' is unlocked and its tokens are revoked (a running server drops them within seconds)");
    Ok(ExitCode::SUCCESS)
}

async fn audit(cmd: AuditCmd, config_file: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Verify {
            data_dir,
            database_url,
        } => {
            let overrides = Overrides {
                data_dir,
                database_url,
                ..Default::default()
            };
            let cfg = Config::load(config_file, &overrides)?;
            let store = haechi_store::Store::open_existing(&server::store_options(&cfg))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let v = haechi_audit::verify(&store)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            store.close().await;
            match v.broken {
                None => {
                    println!("audit chain intact: {} events verified", v.checked);
                    Ok(ExitCode::SUCCESS)
                }
                Some(b) => {
                    println!(
                        "audit chain BROKEN at event {}: {} ({} events verified before it)",
                        b.seq, b.reason, v.checked
                    );
                    Ok(ExitCode::from(2))
                }
            }
        }
        AuditCmd::VerifyExport {
            files,
            data_dir,
            database_url,
        } => verify_export(files, data_dir, database_url, config_file).await,
        AuditCmd::List {
            from,
            to,
            user,
            action,
            limit,
        } => {
            let c = Client::from_session()?;
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [
                ("from", from),
                ("to", to),
                ("user", user),
                ("action", action),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", path_segment(&v)));
                }
            }
            print_json(
                &c.call(Method::GET, &format!("/api/v1/audit?{}", q.join("&")), None)
                    .await?,
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `haechi audit verify-export`.
async fn verify_export(
    files: Vec<PathBuf>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    config_file: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    use haechi_audit::forward::{check_export, parse_export_line, stored_hash};
    let mut events = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            match parse_export_line(line) {
                None => {}
                Some(Ok(e)) => events.push(e),
                Some(Err(why)) => {
                    println!("{}:{}: {why}", f.display(), n + 1);
                    return Ok(ExitCode::from(2));
                }
            }
        }
    }
    // With a store: its hashes of the events in the export (and of the one before the first).
    let mut hashes = std::collections::HashMap::new();
    let against_store = data_dir.is_some() || database_url.is_some();
    if against_store {
        let overrides = Overrides {
            data_dir,
            database_url,
            ..Default::default()
        };
        let cfg = Config::load(config_file, &overrides)?;
        let store = haechi_store::Store::open_existing(&server::store_options(&cfg))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut wanted: Vec<i64> = events.iter().map(|e| e.seq).collect();
        if let Some(first) = events.first() {
            wanted.push(first.seq - 1);
        }
        wanted.sort_unstable();
        wanted.dedup();
        for seq in wanted.into_iter().filter(|s| *s > 0) {
            let h = stored_hash(&store, seq)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            hashes.insert(seq, h);
        }
        store.close().await;
    }
    let check = check_export(events, |seq| {
        if against_store {
            Some(hashes.get(&seq).cloned().flatten())
        } else {
            None
        }
    });
    match (&check.broken, check.first_seq, check.last_seq) {
        (Some((seq, why)), _, _) => {
            println!(
                "export BROKEN at event {seq}: {why} ({} events verified before it)",
                check.checked
            );
            Ok(ExitCode::from(2))
        }
        (None, Some(first), Some(last)) => {
            println!(
                "export intact: events {first} to {last} ({} events{}{}) verified{}",
                check.checked,
                if check.repeats > 0 { ", " } else { "" },
                if check.repeats > 0 {
                    format!("{} repeats told apart by seq", check.repeats)
                } else {
                    String::new()
                },
                if against_store {
                    " against the store"
                } else {
                    " link by link"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            println!("the files hold no Haechi audit event");
            Ok(ExitCode::from(2))
        }
    }
}
