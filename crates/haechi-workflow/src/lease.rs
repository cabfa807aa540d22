//! Which server drives which execution.
//!
//! Each active execution names its `owner` (a server id) and a `lease_until`. The owner renews
//! the leases of its executions every third of `lease_secs`; any server claims an active
//! execution whose lease has lapsed (its owner died), bumping `rev` so that a driver still
//! running on the old owner can no longer commit anything (every transition is fenced by
//! `rev` and owner).
//!
//! A server's id is kept in its data directory and guarded by a file lock. After a crash the
//! restarted server finds its own id on executions whose leases have not yet lapsed; the lock
//! proves the process that held them is gone, so it takes them back at once instead of
//! waiting for the lease to lapse.
//!
//! On PostgreSQL, a control or decision stored by one server reaches the driver on another
//! through `NOTIFY haechi_workflow`; the renewal also compares each execution's `rev` with its
//! driver's, so a lost notification delays a control by at most one renewal period.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use haechi_store::{read, Db};
use haechi_types::{time::now_ms, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::driver::{Driver, Msg};
use crate::Engine;

/// The channel controls and decisions are announced on (PostgreSQL).
pub(crate) const CHANNEL: &str = "haechi_workflow";

/// The lock on this server's id file, held while the server runs.
pub(crate) struct ServerLock {
    _lock: Flock<File>,
}

/// This server's id: `<host>-<random>` kept in `<data_dir>/workflow-server.id`, with the lock
/// that proves no other live process uses it. When the lock cannot be had (another server
/// runs on the same data directory, or it is not writable), an id for this process only.
pub(crate) fn server_identity(data_dir: &Path) -> (String, Option<ServerLock>) {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".to_owned());
    let ephemeral = || {
        format!(
            "{host}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        )
    };
    let lock_path = data_dir.join("workflow-server.lock");
    // Files of the data directory are the owner's only (issue 18 item 12).
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("cannot open {}: {e}; this server's executions wait for their leases to lapse after a crash", lock_path.display());
            return (ephemeral(), None);
        }
    };
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err(_) => {
            tracing::warn!(
                "another server process uses the data directory {}; this one takes an id of its own",
                data_dir.display()
            );
            return (ephemeral(), None);
        }
    };
    let id_path = data_dir.join("workflow-server.id");
    let id = match std::fs::read_to_string(&id_path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => {
            let id = format!("{host}-{:016x}", rand::random::<u64>());
            let written = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&id_path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes()));
            if let Err(e) = written {
                tracing::warn!("cannot write {}: {e}", id_path.display());
                return (ephemeral(), None);
            }
            id
        }
    };
    (id, Some(ServerLock { _lock: lock }))
}

/// After a crash: this server's own executions are free to claim at once.
pub(crate) async fn reclaim_own(eng: &Engine) -> Result<()> {
    let n = read!(eng.store.writer(), |db| sqlx::query(
        "UPDATE workflow_executions SET lease_until = 0 WHERE owner = $1 AND active"
    )
    .bind(&eng.server_id)
    .execute(db)
    .await
    .map(|r| r.rows_affected()))?;
    if n > 0 {
        tracing::info!(
            executions = n,
            "taking back the executions this server drove before it stopped"
        );
    }
    Ok(())
}

/// Gives up every lease this server holds (a clean stop).
pub(crate) async fn release_all(eng: &Engine) -> Result<()> {
    read!(eng.store.writer(), |db| sqlx::query(
        "UPDATE workflow_executions SET lease_until = 0 WHERE owner = $1 AND active"
    )
    .bind(&eng.server_id)
    .execute(db)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Renews this server's leases every third of `lease_secs` and claims lapsed ones.
pub(crate) async fn run(eng: Arc<Engine>) {
    let period = Duration::from_millis(eng.cfg.lease_secs * 1000 / 3);
    let mut shutdown = eng.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = renew_and_claim(&eng).await {
            tracing::warn!("workflow lease renewal failed: {}", e.message);
        }
    }
}

/// Renews the leases of this server's executions, tells drivers that lost theirs, pokes
/// drivers whose execution changed, starts drivers that are missing, and claims executions
/// whose lease lapsed.
pub(crate) async fn renew_and_claim(eng: &Arc<Engine>) -> Result<()> {
    let lease_ms = eng.cfg.lease_secs as i64 * 1000;
    let now = now_ms();
    // On PostgreSQL the rows are locked in id order, as the journal takes them, so a renewal
    // and a journal batch never wait for each other in a cycle.
    let renew = format!(
        "UPDATE workflow_executions SET lease_until = $1 WHERE id IN \
         (SELECT id FROM workflow_executions WHERE owner = $2 AND active ORDER BY id{}) \
         RETURNING id, rev",
        eng.store.backend().for_update()
    );
    let owned: Vec<(String, i64)> = read!(eng.store.writer(), |db| sqlx::query_as(&renew)
        .bind(now + lease_ms)
        .bind(&eng.server_id)
        .fetch_all(db)
        .await)?;
    let owned: HashMap<String, i64> = owned.into_iter().collect();
    let mut missing = Vec::new();
    {
        let drivers = eng.drivers.lock().unwrap_or_else(|p| p.into_inner());
        for (id, h) in drivers.iter() {
            match owned.get(id) {
                None => {
                    let _ = h.tx.send(Msg::LeaseLost);
                }
                Some(rev) if *rev > h.rev.load(Ordering::Relaxed) => {
                    let _ = h.tx.send(Msg::Poke);
                }
                Some(_) => {}
            }
        }
        for id in owned.keys() {
            if !drivers.contains_key(id) {
                missing.push(id.clone());
            }
        }
    }
    for id in missing {
        Driver::spawn(eng, &id).await?;
    }
    claim_lapsed(eng, now, lease_ms).await
}

async fn claim_lapsed(eng: &Arc<Engine>, now: i64, lease_ms: i64) -> Result<()> {
    loop {
        let lapsed: Vec<String> = read!(eng.store, |db| {
            sqlx::query_scalar(
            "SELECT id FROM workflow_executions WHERE active AND lease_until < $1 ORDER BY lease_until LIMIT 500"
        )
        .bind(now)
        .fetch_all(db)
        .await
        })?;
        if lapsed.is_empty() {
            return Ok(());
        }
        let mut claimed = 0;
        for id in &lapsed {
            let n = read!(eng.store.writer(), |db| sqlx::query(
                "UPDATE workflow_executions SET owner = $1, lease_until = $2, rev = rev + 1 \
                 WHERE id = $3 AND active AND lease_until < $4"
            )
            .bind(&eng.server_id)
            .bind(now + lease_ms)
            .bind(id)
            .bind(now)
            .execute(db)
            .await
            .map(|r| r.rows_affected()))?;
            if n == 1 {
                claimed += 1;
                tracing::info!(execution = %id, "driving an execution whose lease had lapsed");
                Driver::spawn(eng, id).await?;
            }
        }
        if lapsed.len() < 500 || claimed == 0 {
            return Ok(());
        }
    }
}

/// Announces that execution `id` changed (PostgreSQL; SQLite has one server).
pub(crate) fn notify_sql() -> &'static str {
    "SELECT pg_notify($1, $2)"
}

/// On PostgreSQL: a task that pokes local drivers when another server announces a change.
pub(crate) fn listen(eng: Arc<Engine>) -> Option<tokio::task::JoinHandle<()>> {
    let pool = match eng.store.db() {
        Db::Postgres(p) => p.clone(),
        Db::Sqlite(_) => return None,
    };
    Some(tokio::spawn(async move {
        let mut shutdown = eng.shutdown.subscribe();
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("workflow notifications: cannot connect: {e}");
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!("workflow notifications: cannot listen: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    n = listener.recv() => match n {
                        Ok(n) => eng.poke(n.payload()),
                        Err(e) => {
                            tracing::warn!("workflow notifications: {e}; reconnecting");
                            break;
                        }
                    }
                }
            }
        }
    }))
}
