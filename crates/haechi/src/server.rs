//! `haechi server`: opens the store, bootstraps identity, and serves every API family on one
//! HTTPS port until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use haechi_http::{AppState, HttpConfig, Services};
use haechi_identity::Identity;
use haechi_store::{Store, StoreOptions};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::config::Config;

/// Options of the process rather than of the server.
pub struct RunOptions {
    /// Stop when standard input reaches end-of-file (for supervisors and test harnesses that
    /// hold the server's stdin open for as long as they want it to run).
    pub stop_on_stdin_eof: bool,
}

pub async fn run(cfg: Config, opts: RunOptions) -> anyhow::Result<()> {
    // Not dumpable: other processes of the server's user cannot read its memory or
    // /proc/<pid>/environ (which keeps the environment it started with), and no core dump
    // holds its keys.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!("cannot mark the server not dumpable: {e}");
    }
    create_private_dir(&cfg.data_dir)?;
    // Everything that can fail for a reason outside the store (the certificate, the ports) is
    // done before the store is opened and the bootstrap user created: a first start that
    // cannot bind its port must not create `admin` and print a password nobody can use.
    let front = bind(&cfg).await?;
    let (engines, bootstrap_password) = start_engines(&cfg).await?;
    // The cross-server signal bus (PostgreSQL): each engine follows the signals it acts on.
    let (stop_signals, signals_stopped) = tokio::sync::watch::channel(false);
    let signal_listener = engines.store.listen(signals_stopped);
    let followers = [
        engines.identity.follow_signals(),
        engines.dbgate.follow_signals(),
        engines.vault.follow_signals(),
    ];

    let served = serve(&cfg, opts, front, &engines, bootstrap_password).await?;

    if let Some(agent) = served.local_agent {
        agent.abort();
    }
    engines.workflows.shutdown().await;
    let _ = served.stop_gateways.send(true);
    for g in served.gateways {
        let _ = g.await;
    }
    engines.exec.shutdown().await;
    let _ = stop_signals.send(true);
    if let Some(l) = signal_listener {
        let _ = l.await;
    }
    for f in followers {
        f.abort();
    }
    engines.dbgate.shutdown().await;
    engines.vault.shutdown().await;
    if let Some(f) = engines.forwarder {
        f.shutdown().await;
    }
    engines.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// What the server binds before it opens the store (see [`run`]).
struct Front {
    listener: TcpListener,
    bound: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The SHA-256 fingerprint of the server's certificate (none with plain HTTP).
    own_fingerprint: Option<String>,
    gateways: GatewayListeners,
}

/// Loads the certificate and binds the HTTP port and the gateways' ports.
async fn bind(cfg: &Config) -> anyhow::Result<Front> {
    let listen: SocketAddr = cfg.listen_addr();
    let mut own_fingerprint = None;
    let tls = if cfg.plain_http {
        None
    } else {
        let (tls, fingerprint) = crate::tls::server_config(
            cfg.tls_cert.as_deref(),
            cfg.tls_key.as_deref(),
            &cfg.data_dir,
        )?;
        own_fingerprint = Some(fingerprint);
        Some(tls)
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let gateways = bind_gateways(cfg).await?;
    Ok(Front {
        listener,
        bound,
        tls,
        own_fingerprint,
        gateways,
    })
}

/// The store and the engines the server runs on it.
struct Engines {
    store: Store,
    identity: Arc<Identity>,
    forwarder: Option<haechi_audit::forward::Forwarder>,
    vault: Arc<haechi_vault::Vault>,
    exec: Arc<haechi_exec::Exec>,
    dbgate: Arc<haechi_dbgate::DbGate>,
    workflows: Arc<haechi_workflow::Workflows>,
}

/// Opens the store, bootstraps identity (returning the generated admin password of a first
/// start) and starts the audit forwarder, then the engines.
async fn start_engines(cfg: &Config) -> anyhow::Result<(Engines, Option<secrecy::SecretString>)> {
    let store = Store::open(&store_options(cfg))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let identity = Arc::new(
        Identity::new(store.clone(), cfg.identity.clone()).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    // Audit forwarding reads the log from the store on its own tasks: no request waits on it.
    let forwarder = haechi_audit::forward::Forwarder::start(
        store.clone(),
        cfg.audit.sinks.clone(),
        haechi_audit::forward::ForwardOptions {
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "-".into()),
            ..Default::default()
        },
    );
    let bootstrap_password = identity
        .bootstrap(cfg.admin_password.clone())
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?;

    let vault = Arc::new(
        haechi_vault::Vault::open(
            store.clone(),
            haechi_vault::VaultOptions {
                data_dir: cfg.data_dir.clone(),
                master_key: cfg.vault_master_key.clone(),
                audit_durability: cfg.audit.durability,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("vault: {e}"))?,
    );
    let exec = haechi_exec::Exec::start(
        store.clone(),
        haechi_exec::ExecConfig {
            agents: cfg.agents.clone(),
            tasks: cfg.tasks.clone(),
            files: cfg.files.clone(),
            utc_offset_secs: cfg.utc_offset_secs(),
        },
    );
    let dbgate = open_dbgate(cfg, &store, &identity, &vault).await?;
    let workflows = start_workflows(cfg, &store, &identity, &vault, &exec, &dbgate).await?;
    exec.set_env_source(workflows.rerun_env_source());
    exec.set_file_vault(vault.clone());
    let engines = Engines {
        store,
        identity,
        forwarder,
        vault,
        exec,
        dbgate,
        workflows,
    };
    Ok((engines, bootstrap_password))
}

async fn open_dbgate(
    cfg: &Config,
    store: &Store,
    identity: &Arc<Identity>,
    vault: &Arc<haechi_vault::Vault>,
) -> anyhow::Result<Arc<haechi_dbgate::DbGate>> {
    haechi_dbgate::DbGate::open(
        store.clone(),
        identity.clone(),
        vault.clone(),
        haechi_dbgate::DbGateConfig {
            utc_offset_secs: cfg.utc_offset_secs(),
            session_threads: cfg.gateway_threads,
            pg_pool_size: cfg.gateway_pool_size,
            pg_pool_idle: std::time::Duration::from_secs(cfg.gateway_pool_idle_secs),
            audit_durability: cfg.audit.durability,
            poll_interval: std::time::Duration::from_secs(cfg.gateway_policy_poll_secs),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("database gateway: {e}"))
}

/// The workflow engine, wired to the other engines through the ports of [`crate::ports`].
async fn start_workflows(
    cfg: &Config,
    store: &Store,
    identity: &Arc<Identity>,
    vault: &Arc<haechi_vault::Vault>,
    exec: &Arc<haechi_exec::Exec>,
    dbgate: &Arc<haechi_dbgate::DbGate>,
) -> anyhow::Result<Arc<haechi_workflow::Workflows>> {
    haechi_workflow::Workflows::start(haechi_workflow::Options {
        store: store.clone(),
        identity: identity.clone(),
        tasks: Arc::new(haechi_workflow::ExecTasks(exec.clone())),
        secrets: Some(Arc::new(crate::ports::VaultSecrets {
            identity: identity.clone(),
            vault: vault.clone(),
        })),
        policies: Some(Arc::new(crate::ports::DbGatePolicies {
            identity: identity.clone(),
            dbgate: dbgate.clone(),
        })),
        sealer: Some(Arc::new(crate::ports::VaultSealer {
            vault: vault.clone(),
        })),
        exec: Some(exec.clone()),
        config: cfg.workflow.clone(),
        utc_offset_secs: cfg.utc_offset_secs(),
        data_dir: cfg.data_dir.clone(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("workflows: {e}"))
}

/// What serving started that the shutdown stops.
struct Served {
    local_agent: Option<tokio::task::JoinHandle<()>>,
    stop_gateways: tokio::sync::watch::Sender<bool>,
    gateways: Vec<tokio::task::JoinHandle<()>>,
}

/// Serves the APIs, the gateways and the local agent until the shutdown signal.
async fn serve(
    cfg: &Config,
    opts: RunOptions,
    front: Front,
    engines: &Engines,
    bootstrap_password: Option<secrecy::SecretString>,
) -> anyhow::Result<Served> {
    let Front {
        listener,
        bound,
        tls,
        own_fingerprint,
        gateways: gateway_listeners,
    } = front;
    let state = AppState::new(Services {
        store: engines.store.clone(),
        identity: engines.identity.clone(),
        exec: engines.exec.clone(),
        vault: engines.vault.clone(),
        dbgate: engines.dbgate.clone(),
        workflows: engines.workflows.clone(),
        http: HttpConfig {
            max_body_bytes: cfg.max_body_bytes,
            trusted_proxies: cfg.trusted_proxy_nets(),
            utc_offset_secs: cfg.utc_offset_secs(),
            metrics_access: cfg.metrics_access,
            tls_fingerprint: own_fingerprint.clone(),
        },
        metrics: haechi_http::metrics::install(),
    });
    spawn_chain_checks(engines.store.clone(), cfg.audit.verify_interval_secs);
    let router = haechi_http::router(state);
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(fingerprint) = &own_fingerprint {
        println!("haechi: TLS certificate SHA-256 fingerprint: {fingerprint}");
    }
    let shutdown = shutdown_signal(opts.stop_on_stdin_eof);
    println!("haechi: listening on {scheme}://{bound}");
    let (stop_gateways, gateways_stopped) = tokio::sync::watch::channel(false);
    let gateways = serve_gateways(
        gateway_listeners,
        &engines.dbgate,
        tls.clone(),
        &gateways_stopped,
    );
    tracing::info!(%bound, store = ?engines.store.backend(), "serving");
    let local_agent = if cfg.agents.local_agent {
        crate::agent::start_local(cfg, &engines.exec, bound, own_fingerprint.as_deref()).await
    } else {
        None
    };
    if let Some(password) = bootstrap_password {
        print_bootstrap_block(password.expose_secret(), &format!("{scheme}://{bound}"));
    }

    haechi_http::serve(listener, tls, router, cfg.serve_limits(), shutdown).await?;
    Ok(Served {
        local_agent,
        stop_gateways,
        gateways,
    })
}

/// The database gateways' listeners, bound before anything is created (see [`run`]).
struct GatewayListeners {
    pg: Option<TcpListener>,
    mysql: Option<TcpListener>,
}

/// Binds the database gateways that are configured. Their addresses are printed once bound
/// (tests and operators read the port from there).
async fn bind_gateways(cfg: &Config) -> anyhow::Result<GatewayListeners> {
    let mut bound = GatewayListeners {
        pg: None,
        mysql: None,
    };
    if let Some(raw) = &cfg.pg_gateway {
        let addr = cfg
            .pg_gateway_addr()
            .with_context(|| format!("pg_gateway {raw:?} is not an IP:PORT"))?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for the PostgreSQL gateway"))?;
        println!("haechi: PostgreSQL gateway on {}", listener.local_addr()?);
        bound.pg = Some(listener);
    }
    if let Some(raw) = &cfg.mysql_gateway {
        let addr = cfg
            .mysql_gateway_addr()
            .with_context(|| format!("mysql_gateway {raw:?} is not an IP:PORT"))?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for the MySQL gateway"))?;
        println!("haechi: MySQL gateway on {}", listener.local_addr()?);
        bound.mysql = Some(listener);
    }
    Ok(bound)
}

/// Serves the bound gateways until `stop` turns true.
fn serve_gateways(
    listeners: GatewayListeners,
    dbgate: &Arc<haechi_dbgate::DbGate>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut tasks = Vec::new();
    if let Some(listener) = listeners.pg {
        tasks.push(tokio::spawn(haechi_dbgate::gateway::pg::serve(
            listener,
            dbgate.clone(),
            tls.clone(),
            stopped(stop.clone()),
        )));
    }
    if let Some(listener) = listeners.mysql {
        tasks.push(tokio::spawn(haechi_dbgate::gateway::mysql::serve(
            listener,
            dbgate.clone(),
            tls,
            stopped(stop.clone()),
        )));
    }
    tasks
}

/// The one-time password of the bootstrap user, printed last and set apart from the log lines
/// so that it is not lost among them on a terminal.
fn print_bootstrap_block(password: &str, url: &str) {
    let rule = "=".repeat(72);
    println!(
        "\n{rule}\nhaechi: bootstrap user 'admin' created; its password (shown once): {password}\n\
         Log in at {url}/ (user admin). It is not shown again; if it is lost, stop the server\n\
         and run: haechi admin reset-password --data-dir DIR\n{rule}\n"
    );
}

pub fn store_options(cfg: &Config) -> StoreOptions {
    StoreOptions {
        database_url: cfg
            .database_url
            .as_ref()
            .map(|u| u.expose_secret().to_owned()),
        sqlite_path: cfg.sqlite_path(),
        max_connections: cfg.database_max_connections,
        acquire_timeout: std::time::Duration::from_millis(cfg.database_acquire_timeout_ms),
    }
}

/// The data directory holds keys and the store: readable by the server's user only.
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() {
        if !dir.is_dir() {
            bail!(
                "data directory {} exists and is not a directory",
                dir.display()
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// What stops the server. The SIGTERM handler is installed here, when this is called (before
/// the server says it is listening), not when the future is first polled: a SIGTERM sent as soon
/// as the server announced itself would otherwise still kill it with the default action.
fn shutdown_signal(stop_on_stdin_eof: bool) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term_stream =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let term = async move {
            #[cfg(unix)]
            if let Some(mut s) = term_stream {
                s.recv().await;
                return;
            }
            std::future::pending::<()>().await
        };
        let stdin_eof = async {
            if !stop_on_stdin_eof {
                return std::future::pending::<()>().await;
            }
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 256];
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::select! {
            _ = ctrl_c => tracing::info!("interrupted; stopping"),
            _ = term => tracing::info!("terminated; stopping"),
            _ = stdin_eof => tracing::info!("standard input closed; stopping"),
        }
    }
}

/// Checks the audit chain every `interval_secs` (0: never), recording each result as an
/// `audit.verify` event by `system` (see `haechi_audit::verify_and_record`).
fn spawn_chain_checks(store: Store, interval_secs: u64) {
    if interval_secs == 0 {
        return;
    }
    tokio::spawn(async move {
        let period = std::time::Duration::from_secs(interval_secs);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match haechi_audit::verify_and_record(&store, haechi_audit::Family::System, None).await
            {
                Ok(v) if v.broken.is_some() => {
                    tracing::error!("audit chain check: the chain is BROKEN: {:?}", v.broken)
                }
                Ok(v) => tracing::info!("audit chain check: intact, {} events", v.checked),
                Err(e) => tracing::warn!("audit chain check failed: {e}"),
            }
        }
    });
}
