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
    if let Some(addr) = cfg.pg_gateway_addr().or(cfg.mysql_gateway_addr()) {
        bail!("a database gateway is configured ({addr}), but this build of Haechi has no database gateway yet");
    }
    create_private_dir(&cfg.data_dir)?;
    let store = Store::open(&store_options(&cfg))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let identity = Arc::new(
        Identity::new(store.clone(), cfg.identity.clone()).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    if let Some(password) = identity
        .bootstrap(cfg.admin_password.clone())
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?
    {
        println!(
            "haechi: bootstrap user 'admin' created; its password (shown once): {}",
            password.expose_secret()
        );
    }

    let listen: SocketAddr = cfg.listen_addr();
    let tls = if cfg.plain_http {
        None
    } else {
        let (tls, fingerprint) = crate::tls::server_config(
            cfg.tls_cert.as_deref(),
            cfg.tls_key.as_deref(),
            &cfg.data_dir,
        )?;
        println!("haechi: TLS certificate SHA-256 fingerprint: {fingerprint}");
        Some(tls)
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;

    let state = AppState::new(Services {
        store: store.clone(),
        identity,
        http: HttpConfig {
            max_body_bytes: cfg.max_body_bytes,
            trusted_proxies: cfg.trusted_proxy_nets(),
            utc_offset_secs: cfg.utc_offset_secs(),
        },
        metrics: haechi_http::metrics::install(),
    });
    let router = haechi_http::router(state);
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("haechi: listening on {scheme}://{bound}");
    tracing::info!(%bound, store = ?store.backend(), "serving");

    haechi_http::serve(
        listener,
        tls,
        router,
        shutdown_signal(opts.stop_on_stdin_eof),
    )
    .await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

pub fn store_options(cfg: &Config) -> StoreOptions {
    StoreOptions {
        database_url: cfg
            .database_url
            .as_ref()
            .map(|u| u.expose_secret().to_owned()),
        sqlite_path: cfg.sqlite_path(),
        max_connections: cfg.database_max_connections,
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

async fn shutdown_signal(stop_on_stdin_eof: bool) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
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
