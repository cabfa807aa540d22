//! The database gateway engine (CONTRACT §4, §7): DBSAFER access policies, database targets and
//! their accounts, SQL classification with each database's own grammar, and the PostgreSQL and
//! MySQL/MariaDB wire-protocol gateways that enforce the policies statement by statement.
//!
//! - `privilege`, `classify` (re-exported from the `haechi-sqlclass` crate): the 27 privilege
//!   types, and statement text → the privileges it needs (`pg` with PostgreSQL's own parser,
//!   `mysql` with a MySQL-dialect parser after expanding executable comments).
//! - `policy`, `targets`: the stored objects and their validation.
//! - `decision`: the verdict on a statement from the policies that match a session: one pure
//!   function, which both the gateway and the policy simulator (`simulate`) call.
//! - `sessions`: the registry of the sessions open through this server's gateways.
//! - `gateway`: what both protocols share (login, the per-statement verdict, audit), with
//!   `pg` and `mysql` each split into `frontend` (what clients speak to us) and `backend` (what
//!   we speak to the real database).
//!
//! Policies live in memory as an immutable snapshot that is swapped on every change; sessions
//! compare a generation counter on each statement and re-match only when it moved, so a lock,
//! an edit or an expiry applies from the next statement without a store query per statement.
//! Changes made by another server sharing the store are noticed by polling one version row.

pub mod decision;
pub mod error;
pub mod gateway;
pub mod policy;
pub mod redact;
mod secrets;
pub mod sessions;
pub mod simulate;
pub mod targets;

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use haechi_audit::{Batcher, BatcherOptions, Event};
use haechi_identity::{Actor, Caller, Identity, Permission};
use haechi_store::{Delivery, Signal, Store};
use haechi_types::{time::now_ms, Error, Result};
use haechi_vault::Vault;
use serde_json::json;

/// The classifier and the privilege types live in their own crate (`haechi-sqlclass`): the
/// gateway and the policy simulator call the same code.
pub use haechi_sqlclass::{classify, privilege};
pub use policy::{Policy, PolicyFilter, PolicyInput};
pub use privilege::{PrivSet, Privilege};
pub use sessions::SessionView;
pub use simulate::{SimulateInput, Simulation};
pub use targets::{Account, BackendTls, Kind, NewAccount, NewTarget, Target};

/// Settings of the gateway engine.
#[derive(Debug, Clone)]
pub struct DbGateConfig {
    /// The server's UTC offset in seconds: policy dates without a zone are in this offset, and
    /// generated policy ids use this day.
    pub utc_offset_secs: i32,
    /// Bytes of statement text kept in one audit event; longer text is cut with a marker.
    pub audit_statement_bytes: usize,
    /// How often another server's policy changes are looked for.
    pub poll_interval: Duration,
    /// Time allowed to connect and log in to a backend database.
    pub backend_connect_timeout: Duration,
    /// Threads that carry client sessions; `0` means one per CPU.
    pub session_threads: usize,
    /// PostgreSQL statement pooling: backend connections per session thread that sessions
    /// share while their statements are session-neutral; `0` turns pooling off.
    pub pg_pool_size: usize,
    /// A pooled backend connection with nothing to do for this long is closed.
    pub pg_pool_idle: Duration,
    /// `audit.durability`: `strict` holds the message that ends a statement's answer until
    /// the statement's event is committed; `batched` only queues the event.
    pub audit_durability: haechi_audit::Durability,
}

impl Default for DbGateConfig {
    fn default() -> Self {
        DbGateConfig {
            utc_offset_secs: 0,
            audit_statement_bytes: 2048,
            poll_interval: Duration::from_secs(1),
            backend_connect_timeout: Duration::from_secs(10),
            session_threads: 0,
            pg_pool_size: 0,
            pg_pool_idle: Duration::from_secs(600),
            audit_durability: haechi_audit::Durability::default(),
        }
    }
}

/// How long the statement audit writer waits for more events before committing a batch.
/// How long a policy change waits for the other servers' gateways to confirm it (see
/// `Gate::changed`).
const APPLIED_WAIT: Duration = Duration::from_secs(2);

const STATEMENT_AUDIT_LINGER: Duration = Duration::from_millis(20);

/// The name of the statement audit's spool (`haechi_audit::BatcherOptions::spool`): what a
/// killed server left in it is appended when the next one starts.
const AUDIT_SPOOL: &str = "gateway";

/// The in-memory copy of every policy.
struct Snapshot {
    policies: Vec<Arc<Policy>>,
}

/// The engine. One per server.
pub struct DbGate {
    store: Store,
    identity: Arc<Identity>,
    vault: Arc<Vault>,
    cfg: DbGateConfig,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Bumped on every reload of the snapshot; sessions re-match when it moves.
    generation: AtomicU64,
    /// The store's version row as of the last reload.
    loaded_version: AtomicI64,
    audit: Batcher,
    /// Serialises reloads so an older load never replaces a newer one.
    reload_lock: tokio::sync::Mutex<()>,
    pub(crate) cancels: gateway::CancelRegistry,
    /// Classifications of PostgreSQL statement strings seen before (by shape).
    pub(crate) pg_classes: classify::cache::Cache,
    /// PostgreSQL statement pools.
    pub(crate) pg_pools: gateway::pg::pool::Pools,
    /// PostgreSQL targets' catalog snapshots (names read in attribute notation).
    pub(crate) pg_catalogs: gateway::pg::catalog::Catalogs,
    /// The threads client sessions run on, started with the first session.
    pub(crate) session_threads: std::sync::OnceLock<gateway::SessionThreads>,
    /// The sessions open through this server's gateways.
    pub(crate) sessions: Arc<sessions::Registry>,
    /// Each MySQL target's dialect as its last session saw it (server version, `sql_mode`):
    /// the policy simulator classifies with it.
    mysql_flavors: std::sync::Mutex<std::collections::HashMap<String, classify::mysql::Flavor>>,
}

/// A gateway audit event on its way to the store (see [`DbGate::enqueue`]).
pub(crate) struct Queued(Option<haechi_audit::Pending>);

impl Queued {
    pub(crate) fn none() -> Queued {
        Queued(None)
    }

    /// Returns once the event is committed (`audit.durability = strict`) or at once (batched).
    /// A failure is logged; the statement's answer goes on regardless.
    pub(crate) async fn committed(self) {
        if let Some(p) = self.0 {
            if let Err(e) = p.committed().await {
                tracing::error!("gateway audit event not recorded: {e}");
            }
        }
    }
}

impl DbGate {
    /// Loads the policies and starts the task that notices changes made by other servers and
    /// ends time-boxed unlocks.
    pub async fn open(
        store: Store,
        identity: Arc<Identity>,
        vault: Arc<Vault>,
        cfg: DbGateConfig,
    ) -> Result<Arc<DbGate>> {
        let gate = Arc::new(DbGate {
            // Statement events come at the rate of the databases' traffic: a longer linger
            // gathers them into fewer, larger transactions (each one a handful of round trips
            // to the store's thread), at the price of a wider window a crash could lose.
            audit: Batcher::start(
                store.clone(),
                // A statement's event is written once its database has answered (it holds the
                // row count and duration) and before the message that ends the answer goes to
                // the client; `strict` spools it there on SQLite, or waits for its commit on
                // PostgreSQL (docs/dbgate.md, "Audit").
                BatcherOptions {
                    linger: STATEMENT_AUDIT_LINGER,
                    durability: cfg.audit_durability,
                    spool: Some(AUDIT_SPOOL),
                    ..BatcherOptions::default()
                },
            ),
            store,
            identity,
            vault,
            cfg,
            snapshot: RwLock::new(Arc::new(Snapshot {
                policies: Vec::new(),
            })),
            generation: AtomicU64::new(0),
            loaded_version: AtomicI64::new(-1),
            reload_lock: tokio::sync::Mutex::new(()),
            cancels: gateway::CancelRegistry::default(),
            pg_classes: classify::cache::Cache::default(),
            pg_pools: gateway::pg::pool::Pools::default(),
            pg_catalogs: gateway::pg::catalog::Catalogs::default(),
            session_threads: std::sync::OnceLock::new(),
            sessions: Arc::default(),
            mysql_flavors: std::sync::Mutex::default(),
        });
        gate.reload().await?;
        let weak = Arc::downgrade(&gate);
        let interval = gate.cfg.poll_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(gate) = weak.upgrade() else { break };
                if let Err(e) = gate.maintain().await {
                    tracing::warn!("policy refresh failed: {e}");
                }
            }
        });
        Ok(gate)
    }

    /// Waits until every queued statement audit event is committed.
    pub async fn shutdown(&self) {
        self.audit.shutdown().await;
    }

    pub fn config(&self) -> &DbGateConfig {
        &self.cfg
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One poll: reload when another server changed the policies, and persist the end of
    /// time-boxed unlocks that have run out.
    async fn maintain(&self) -> Result<()> {
        let now = now_ms();
        let expired: Vec<i64> = self
            .current()
            .policies
            .iter()
            .filter(|p| !p.locked && p.relock_at.is_some_and(|t| now >= t))
            .map(|p| p.index)
            .collect();
        for index in expired {
            self.end_timed_unlock(index, now).await?;
        }
        let stored = policy::stored_version(&self.store).await?;
        if stored != self.loaded_version.load(Ordering::Acquire) {
            self.reload().await?;
        }
        Ok(())
    }

    async fn end_timed_unlock(&self, index: i64, now: i64) -> Result<()> {
        let mut tx = self.store.begin().await?;
        let p = match policy::get_tx(&mut tx, index).await {
            Ok(p) => p,
            Err(e) if e.code == haechi_types::Code::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if p.locked || p.relock_at.is_none_or(|t| now < t) {
            return Ok(());
        }
        let mut locked = p.clone();
        locked.locked = true;
        locked.relock_at = None;
        locked.updated_at = now;
        policy::update(&mut tx, &locked).await?;
        policy::bump_version(&mut tx).await?;
        haechi_audit::append(
            &mut tx,
            Event::new(haechi_audit::Family::Dbsafer, "dbpolicy.lock")
                .by("system", None)
                .target(policy_target(&p))
                .detail(json!({ "index": index, "reason": "time-boxed unlock ended" })),
        )
        .await?;
        tx.commit().await?;
        self.changed().await
    }

    /// After a committed policy change: reloads here, tells the other servers sharing the
    /// store, and waits (at most [`APPLIED_WAIT`]) until each of them confirms that its gateway
    /// has applied it. So once a lock is answered, the next statement of every open session,
    /// on every server, is checked against it: not only the next one after a signal arrives.
    /// A server that does not confirm in time (hung, or cut off from the database) is named
    /// in the log; its own poll applies the change when it can.
    async fn changed(&self) -> Result<()> {
        let reloaded = self.reload().await;
        let version = self.loaded_version.load(Ordering::Acquire);
        let mut acks = self.store.signals().subscribe();
        self.store.publish(Signal::Policies).await;
        self.await_applied(&mut acks, version).await;
        reloaded
    }

    async fn await_applied(&self, acks: &mut haechi_store::Subscription, version: i64) {
        let mut waiting: std::collections::HashSet<u64> = match self.store.listening_servers().await
        {
            Ok(peers) => peers.into_iter().collect(),
            Err(e) => {
                tracing::warn!(
                        "policy change {version}: cannot list the other servers ({e}); not waiting for their gateways"
                    );
                return;
            }
        };
        let deadline = tokio::time::sleep(APPLIED_WAIT);
        tokio::pin!(deadline);
        while !waiting.is_empty() {
            tokio::select! {
                _ = &mut deadline => {
                    let list: Vec<String> = waiting.iter().map(|o| format!("{o:x}")).collect();
                    tracing::warn!(
                        "policy change {version}: {} other server(s) did not confirm within {:?} (listeners {}); their gateways apply it at their next poll",
                        waiting.len(),
                        APPLIED_WAIT,
                        list.join(", ")
                    );
                    return;
                }
                d = acks.recv() => match d {
                    Some(Delivery::Signal(Signal::PoliciesApplied { version: v, server }))
                        if v >= version =>
                    {
                        waiting.remove(&server);
                    }
                    Some(_) => {}
                    None => return,
                },
            }
        }
    }

    /// Follows the other servers' policy signals: a policy changed on another server is
    /// reloaded here at once (the 1 s poll of the version row stays as the safety net).
    pub fn follow_signals(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let mut signals = self.store.signals().subscribe();
        tokio::spawn(async move {
            while let Some(d) = signals.recv().await {
                if !matches!(d, Delivery::Signal(Signal::Policies) | Delivery::Resync) {
                    continue;
                }
                let Some(gate) = weak.upgrade() else { return };
                match gate.reload().await {
                    // Confirms to the server that made the change, which waits for it.
                    Ok(()) => {
                        let applied = Signal::PoliciesApplied {
                            version: gate.loaded_version.load(Ordering::Acquire),
                            server: gate.store.signals().origin(),
                        };
                        gate.store.publish(applied).await;
                    }
                    Err(e) => {
                        tracing::warn!("policy reload on a signal failed (the poll retries): {e}")
                    }
                }
            }
        })
    }

    /// Reloads every policy from the store and moves the generation on.
    pub async fn reload(&self) -> Result<()> {
        let _guard = self.reload_lock.lock().await;
        let version = policy::stored_version(&self.store).await?;
        let policies = policy::load_all(&self.store).await?;
        let snap = Arc::new(Snapshot {
            policies: policies.into_iter().map(Arc::new).collect(),
        });
        *self
            .snapshot
            .write()
            .map_err(|_| Error::internal("policy snapshot lock poisoned"))? = snap;
        self.loaded_version.store(version, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    // ----- the policy API -----

    /// Policies matching the filter, by index.
    pub fn list_policies(&self, f: &PolicyFilter) -> Vec<Policy> {
        let snap = self.current();
        let all: Vec<Policy> = snap.policies.iter().map(|p| (**p).clone()).collect();
        policy::filter(&all, f).cloned().collect()
    }

    /// Reads one policy from the store (not the snapshot: a read right after a write on
    /// another server sees it).
    pub async fn get_policy(&self, index: i64) -> Result<Policy> {
        let mut tx = self.store.begin().await?;
        let p = policy::get_tx(&mut tx, index).await?;
        tx.commit().await?;
        Ok(p)
    }

    /// The local day (`YYYYMMDD`) for generated policy ids.
    fn today(&self) -> String {
        let offset = time::UtcOffset::from_whole_seconds(self.cfg.utc_offset_secs)
            .unwrap_or(time::UtcOffset::UTC);
        let t = haechi_types::time::from_ms(now_ms()).to_offset(offset);
        format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
    }

    pub async fn create_policy(&self, caller: &Caller, input: PolicyInput) -> Result<Policy> {
        let actor = &caller.actor;
        let now = now_ms();
        let p = policy::merge(&policy::blank(now), input, true)?;
        let day = self.today();
        let mut attempt = 0;
        let created = loop {
            attempt += 1;
            let mut tx = self.store.begin().await?;
            let generated = p.policy_id.is_empty();
            match policy::insert(&mut tx, p.clone(), &day).await {
                Ok(created) => {
                    policy::bump_version(&mut tx).await?;
                    haechi_audit::append(
                        &mut tx,
                        actor
                            .event("dbpolicy.create")
                            .target(policy_target(&created))
                            .detail(policy_detail(&created)),
                    )
                    .await?;
                    tx.commit().await?;
                    break created;
                }
                // Two servers generating the same id at once: take the next number.
                Err(e) if generated && attempt < 5 && e.code == haechi_types::Code::Conflict => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        self.changed().await?;
        Ok(created)
    }

    pub async fn update_policy(
        &self,
        caller: &Caller,
        index: i64,
        input: PolicyInput,
    ) -> Result<Policy> {
        let actor = &caller.actor;
        let mut tx = self.store.begin().await?;
        let old = policy::get_tx(&mut tx, index).await?;
        let mut p = policy::merge(&old, input, false)?;
        p.updated_at = now_ms();
        policy::update(&mut tx, &p).await?;
        policy::bump_version(&mut tx).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("dbpolicy.update")
                .target(policy_target(&p))
                .detail(policy_detail(&p)),
        )
        .await?;
        tx.commit().await?;
        self.changed().await?;
        Ok(p)
    }

    pub async fn delete_policy(&self, caller: &Caller, index: i64) -> Result<()> {
        let actor = &caller.actor;
        let mut tx = self.store.begin().await?;
        let old = policy::get_tx(&mut tx, index).await?;
        policy::delete(&mut tx, index).await?;
        policy::bump_version(&mut tx).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("dbpolicy.delete")
                .target(policy_target(&old))
                .detail(json!({ "index": index })),
        )
        .await?;
        tx.commit().await?;
        self.changed().await
    }

    /// Locks or unlocks every policy matching `f` (at least one filter). Returns the indexes,
    /// in order. Unlocking also ends any time box.
    pub async fn set_locked(
        &self,
        caller: &Caller,
        f: &PolicyFilter,
        lock: bool,
    ) -> Result<Vec<i64>> {
        let actor = &caller.actor;
        if f.is_empty() {
            return Err(Error::invalid(
                "give at least one filter (policyId, userId, serverAddress, serverPort, account, policyType) to say which policies to change",
            ));
        }
        let all = policy::load_all(&self.store).await?;
        let indexes: Vec<i64> = policy::filter(&all, f).map(|p| p.index).collect();
        let mut tx = self.store.begin().await?;
        // The version row before the audit head, as every other policy change takes them:
        // the other order deadlocks against a concurrent create on PostgreSQL.
        policy::bump_version(&mut tx).await?;
        let now = now_ms();
        let mut changed = Vec::with_capacity(indexes.len());
        for index in indexes {
            let mut p = match policy::get_tx(&mut tx, index).await {
                Ok(p) => p,
                Err(e) if e.code == haechi_types::Code::NotFound => continue,
                Err(e) => return Err(e),
            };
            p.locked = lock;
            p.relock_at = None;
            p.updated_at = now;
            policy::update(&mut tx, &p).await?;
            haechi_audit::append(
                &mut tx,
                actor
                    .event(if lock {
                        "dbpolicy.lock"
                    } else {
                        "dbpolicy.unlock"
                    })
                    .target(policy_target(&p))
                    .detail(json!({ "index": index })),
            )
            .await?;
            changed.push(index);
        }
        tx.commit().await?;
        self.changed().await?;
        Ok(changed)
    }

    /// Locks one policy (the end of a workflow's `db_access` window, or the window's step
    /// failing or being stopped).
    pub async fn lock(&self, caller: &Caller, index: i64) -> Result<Policy> {
        caller.require(Permission::DbPolicyManage)?;
        self.set_one(&caller.actor, index, true, None, "dbpolicy.lock")
            .await
    }

    /// Unlocks one policy for `duration`: it grants again now and counts as locked once the
    /// window ends, even across a restart (the end is stored, not a timer).
    pub async fn unlock_for(
        &self,
        caller: &Caller,
        index: i64,
        duration: Duration,
    ) -> Result<Policy> {
        caller.require(Permission::DbPolicyManage)?;
        let until =
            now_ms().saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX));
        self.set_one(&caller.actor, index, false, Some(until), "dbpolicy.unlock")
            .await
    }

    async fn set_one(
        &self,
        actor: &Actor,
        index: i64,
        lock: bool,
        relock_at: Option<i64>,
        action: &str,
    ) -> Result<Policy> {
        let mut tx = self.store.begin().await?;
        let mut p = policy::get_tx(&mut tx, index).await?;
        p.locked = lock;
        p.relock_at = relock_at;
        p.updated_at = now_ms();
        policy::update(&mut tx, &p).await?;
        policy::bump_version(&mut tx).await?;
        haechi_audit::append(
            &mut tx,
            actor.event(action).target(policy_target(&p)).detail(json!({
                "index": index,
                "until": relock_at.map(haechi_types::time::iso_ms),
            })),
        )
        .await?;
        tx.commit().await?;
        self.changed().await?;
        Ok(p)
    }

    // ----- targets and accounts -----

    pub async fn create_target(&self, caller: &Caller, new: NewTarget) -> Result<Target> {
        let actor = &caller.actor;
        let port = targets::validate_target(&new)?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let t = targets::insert_target(&mut tx, &new, port, &actor.user_id, now).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("db.target.create")
                .target(format!("db-target:{}", t.name))
                .detail(json!({ "id": t.id, "kind": t.kind.as_str(), "host": t.host, "port": t.port, "database": t.database, "tls": t.tls.as_str(), "tls_ca_file": t.tls_ca_file, "allow_insecure_password": t.allow_insecure_password, "socket": t.socket })),
        )
        .await?;
        tx.commit().await?;
        Ok(t)
    }

    pub async fn list_targets(&self) -> Result<Vec<Target>> {
        targets::list_targets(&self.store).await
    }

    pub async fn get_target(&self, name: &str) -> Result<Target> {
        targets::find_target(&self.store, name)
            .await?
            .ok_or_else(|| Error::not_found(format_args!("database target '{name}'")))
    }

    pub async fn delete_target(&self, caller: &Caller, name: &str) -> Result<()> {
        let actor = &caller.actor;
        let mut tx = self.store.begin().await?;
        if !targets::delete_target(&mut tx, name).await? {
            return Err(Error::not_found(format_args!("database target '{name}'")));
        }
        haechi_audit::append(
            &mut tx,
            actor
                .event("db.target.delete")
                .target(format!("db-target:{name}")),
        )
        .await?;
        tx.commit().await
    }

    /// Registers an account. The caller must be able to read the vault credential's value
    /// (checked by reading it, which the vault audits); the value itself is not kept.
    pub async fn create_account(
        &self,
        caller: &Caller,
        target: &str,
        new: NewAccount,
    ) -> Result<Account> {
        let (principal, actor) = (&*caller.principal, &caller.actor);
        targets::validate_account(&new)?;
        let t = self.get_target(target).await?;
        secrets::read_password(&self.vault, caller, new.credential_id, &new.attribute).await?;
        let mut tx = self.store.begin().await?;
        let a = targets::insert_account(&mut tx, &t, &new, &principal.user_id, now_ms()).await?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("db.account.create")
                .target(format!("db-target:{}", t.name))
                .detail(json!({ "account": a.account, "credentialId": a.credential_id, "attribute": a.attribute })),
        )
        .await?;
        tx.commit().await?;
        Ok(a)
    }

    pub async fn list_accounts(&self, target: &str) -> Result<Vec<Account>> {
        self.get_target(target).await?;
        targets::list_accounts(&self.store, target).await
    }

    pub async fn delete_account(&self, caller: &Caller, target: &str, account: &str) -> Result<()> {
        let actor = &caller.actor;
        let t = self.get_target(target).await?;
        let mut tx = self.store.begin().await?;
        if !targets::delete_account(&mut tx, t.id, account).await? {
            return Err(Error::not_found(format_args!(
                "account '{account}' of database target '{target}'"
            )));
        }
        haechi_audit::append(
            &mut tx,
            actor
                .event("db.account.delete")
                .target(format!("db-target:{target}"))
                .detail(json!({ "account": account })),
        )
        .await?;
        tx.commit().await
    }

    // ----- open sessions -----

    /// The sessions open through this server's gateways now, oldest first.
    pub fn open_sessions(&self) -> Vec<SessionView> {
        self.sessions.list()
    }

    /// Ends an open session: its next statement is refused and its connection closed. 404
    /// when no session of that id is open on this server. Audited (`db.session.end`).
    pub async fn end_session(&self, caller: &Caller, id: &str) -> Result<SessionView> {
        let actor = &caller.actor;
        let open = self
            .sessions
            .get(id)
            .ok_or_else(|| Error::not_found(format_args!("open gateway session '{id}'")))?;
        let view = self
            .sessions
            .list()
            .into_iter()
            .find(|s| s.id == open.id)
            .ok_or_else(|| Error::not_found(format_args!("open gateway session '{id}'")))?;
        // The event first (strict, in its own transaction): the end is on record before it
        // takes effect.
        haechi_audit::record(
            &self.store,
            actor
                .event("db.session.end")
                .target(format!("db-target:{}", open.target))
                .detail(json!({
                    "session": open.id,
                    "user": open.user_id,
                    "account": open.account,
                    "protocol": open.protocol,
                    "clientIp": view.client_ip,
                    "statements": view.statements,
                })),
        )
        .await?;
        self.sessions.end(
            &open,
            format!("the session was ended by administrator '{}'", actor.user_id),
        );
        // The connection's task drops the session on its own thread: wait (briefly) until it
        // has, so a list read right after the answer no longer shows it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.sessions.get(&open.id).is_some() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(view)
    }

    /// The dialect the simulator classifies a MySQL target's text in: as its last session
    /// saw the server, else MariaDB's defaults.
    pub(crate) fn mysql_flavor(&self, target: &str) -> classify::mysql::Flavor {
        self.mysql_flavors
            .lock()
            .ok()
            .and_then(|m| m.get(target).copied())
            .unwrap_or_default()
    }

    pub(crate) fn note_mysql_flavor(&self, target: &str, flavor: classify::mysql::Flavor) {
        if let Ok(mut m) = self.mysql_flavors.lock() {
            if m.get(target) != Some(&flavor) {
                m.insert(target.to_owned(), flavor);
            }
        }
    }

    // ----- what the gateways use -----

    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn vault(&self) -> &Vault {
        &self.vault
    }

    pub(crate) async fn record(&self, event: Event) {
        self.enqueue(event).await.committed().await;
    }

    /// Queues a statement's event; [`Queued::committed`] says when it is durable.
    pub(crate) async fn enqueue(&self, event: Event) -> Queued {
        match self.audit.enqueue(event).await {
            Ok(p) => Queued(Some(p)),
            Err(e) => {
                tracing::error!("gateway audit event not recorded: {e}");
                Queued(None)
            }
        }
    }

    /// Policies that name this user, account, target and client, in index order.
    pub(crate) fn matching(
        &self,
        user_id: &str,
        account: &str,
        target: &Target,
        client: IpAddr,
    ) -> Vec<Arc<Policy>> {
        self.current()
            .policies
            .iter()
            .filter(|p| {
                p.user_id == user_id
                    && p.account.as_deref() == Some(account)
                    && p.server_address
                        .as_deref()
                        .is_some_and(|a| a.eq_ignore_ascii_case(&target.host))
                    && p.server_port == Some(target.port)
                    && p.sid
                        .as_deref()
                        .is_none_or(|s| s.is_empty() || s == target.database)
                    && p.admits_client(client)
            })
            .cloned()
            .collect()
    }
}

fn policy_target(p: &Policy) -> String {
    format!("dbpolicy:{}:{}", p.index, p.policy_id)
}

fn policy_detail(p: &Policy) -> serde_json::Value {
    json!({
        "index": p.index,
        "policyId": p.policy_id,
        "userId": p.user_id,
        "account": p.account,
        "clientIpBegin": p.client_ip_begin.map(|a| a.to_string()),
        "clientIpEnd": p.client_ip_end.map(|a| a.to_string()),
        "serverAddress": p.server_address,
        "serverPort": p.server_port,
        "sid": p.sid,
        "sqlPrivileges": p.privileges.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        "policyType": p.policy_type,
        "startDate": p.start_at.map(haechi_types::time::iso_ms),
        "endDate": p.end_at.map(haechi_types::time::iso_ms),
        "lock": p.locked,
    })
}
