//! One identity for every API family (CONTRACT §1): users (`human` / `api`), roles and
//! permissions, Argon2id password login with lockout, inactivity lock and per-user IP
//! allow-lists, and opaque tokens stored hashed with idle and absolute expiry.
//!
//! Authenticating a request is on every route's hot path, so resolved tokens are cached in
//! memory for `token_cache_secs`. This server drops a user's cached tokens at once when it
//! changes that user; other servers sharing one PostgreSQL see a revocation within
//! `token_cache_secs`.

mod groups;
mod offline;
mod password;
mod permission;
mod roles;
mod slots;
pub mod token;
mod tokens;
mod users;
mod validation;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use haechi_audit::{Event, Outcome};
pub use haechi_audit::{Family, Origin};
use haechi_store::{in_tx, read, Delivery, Signal, Store};
use haechi_types::{ident, time::now_ms, Code, Error, Result};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use groups::{UserGroup, UserGroupSpec};
pub use offline::random_password_string;
pub use password::{Argon2Params, Hasher};
pub use permission::{
    builtin_roles, Permission, PermissionSet, AUDITOR, LOCKER_ADMIN, SYSTEM_ADMIN,
};
pub use roles::{NewRole, Role, RolePatch};
pub use tokens::TokenInfo;
pub use users::{NewUser, User, UserKind, UserPatch};

/// Identity settings (the `[identity]` table of the configuration).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Consecutive failed logins that lock a human or api account.
    pub max_failed_logins: u32,
    /// Seconds after which a failed-login lock lifts by itself; 0 = only an admin unlocks.
    pub lockout_secs: u64,
    /// Days without a login after which a `human` account locks (`api` accounts never do).
    pub inactivity_days: u32,
    /// A token unused this long expires.
    pub token_idle_secs: u64,
    /// A token expires this long after login, however much it is used.
    pub token_max_secs: u64,
    /// How long a server trusts a token it has resolved before asking the store again.
    pub token_cache_secs: u64,
    /// Logins for one user id whose password is checked at once; more wait for their turn.
    pub max_concurrent_logins: u32,
    /// Logins for one user id that may wait for their turn; more are refused at once (503)
    /// without a check, so a flood of guesses for one account holds at most this many.
    pub max_queued_logins: u32,
    /// Argon2id cost.
    pub argon2: Argon2Params,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            max_failed_logins: 5,
            lockout_secs: 1800,
            inactivity_days: 90,
            token_idle_secs: 3600,
            token_max_secs: 12 * 3600,
            token_cache_secs: 5,
            max_concurrent_logins: 4,
            max_queued_logins: 1024,
            argon2: Argon2Params::default(),
        }
    }
}

/// Who is calling: resolved from a token on every authenticated request.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    /// The numeric user id (the vault API's `ownerId`, `members/{userId}`).
    pub id: i64,
    pub user_id: String,
    pub name: String,
    pub kind: UserKind,
    pub roles: Vec<RoleRef>,
    #[serde(skip)]
    pub permissions: PermissionSet,
    #[serde(skip)]
    pub allowed_ips: Vec<IpNet>,
    #[serde(skip)]
    pub token_id: i64,
}

/// A role as a principal holds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoleRef {
    pub id: i64,
    pub name: String,
}

impl Principal {
    pub fn can(&self, p: Permission) -> bool {
        self.permissions.has(p)
    }

    /// `Ok` when the principal holds `p`, else a 403 that names the missing permission.
    pub fn require(&self, p: Permission) -> Result<()> {
        if self.can(p) {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "user '{}' lacks the permission '{}' for this action",
                self.user_id,
                p.as_str()
            )))
        }
    }

    pub fn has_role_id(&self, role_id: i64) -> bool {
        self.roles.iter().any(|r| r.id == role_id)
    }

    /// The server itself as a principal, for work that no token asked for: the local agent's
    /// own enrolment, the offline password reset, a workflow run locking again the policies
    /// its steps unlocked. It holds every permission and no role, and is not an account (id 0
    /// names no user; the separation-of-duties rule is about accounts). `user_id` is the name
    /// its audit events carry (`system`, `local:reset-password`).
    pub fn system(user_id: impl Into<String>) -> Principal {
        Principal {
            id: 0,
            user_id: user_id.into(),
            name: "Haechi".to_owned(),
            kind: UserKind::Api,
            roles: Vec::new(),
            permissions: PermissionSet::of(Permission::ALL),
            allowed_ips: Vec::new(),
            token_id: 0,
        }
    }
}

/// Whether `ip` may use an account with this allow-list (empty = anywhere).
pub fn ip_allowed(allowed: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    allowed.is_empty() || allowed.iter().any(|net| net.contains(&ip))
}

/// The audit attribution of a change: who, from where, and through what (an API family, the
/// console, a workflow execution, a schedule, the server itself). The part of a [`Caller`]
/// that an audit event needs; it travels alone where no permission is checked any more (a
/// queued write, a background sweep, the offline CLI).
#[derive(Debug, Clone)]
pub struct Actor {
    /// The user id, or a system identity (`schedule`, `system`, `local:reset-password`).
    pub user_id: String,
    pub ip: IpAddr,
    pub origin: Origin,
}

impl Actor {
    /// The server itself acting as `user_id` from this host.
    pub fn system(user_id: impl Into<String>, origin: Origin) -> Actor {
        Actor {
            user_id: user_id.into(),
            ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            origin,
        }
    }

    /// An event of this actor's family, by this actor, with its origin (see
    /// [`Origin::label`]).
    pub fn event(&self, action: &str) -> Event {
        Event::through(&self.origin, action).by(self.user_id.clone(), Some(self.ip.to_string()))
    }

    /// The same as [`Actor::event`] but of `family` whatever the origin, for the few events
    /// that belong to one family by nature (a gateway session's statements).
    pub fn event_of(&self, family: Family, action: &str) -> Event {
        let mut e = self.event(action);
        e.family = family;
        e
    }
}

/// The one context of an engine call: who (the principal whose permissions count), the
/// audit attribution (who by name, from which address, through which family, console,
/// workflow execution or schedule), and the request's id. The HTTP layer builds it once per
/// request; the workflow engine builds it for a step, the scheduler for a scheduled run.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    pub actor: Actor,
    /// The id of the request this call serves (`X-Request-Id`, or one made up for it); for
    /// logs, never stored in the audit chain.
    pub request_id: Option<String>,
}

impl Caller {
    /// `principal` calling from `ip` through `origin`, attributed to the principal.
    pub fn new(principal: Arc<Principal>, ip: IpAddr, origin: Origin) -> Caller {
        let actor = Actor {
            user_id: principal.user_id.clone(),
            ip,
            origin,
        };
        Caller {
            principal,
            actor,
            request_id: None,
        }
    }

    /// The same, attributed to `actor` (a schedule acts with its owner's rights but is
    /// recorded as `schedule`).
    pub fn acting_as(principal: Arc<Principal>, actor: Actor) -> Caller {
        Caller {
            principal,
            actor,
            request_id: None,
        }
    }

    /// The server itself (see [`Principal::system`]) acting as `actor`: attributed to the
    /// actor's name and origin (the server, a workflow execution, the offline CLI).
    pub fn system(actor: Actor) -> Caller {
        Caller::acting_as(Arc::new(Principal::system(actor.user_id.clone())), actor)
    }

    pub fn with_request_id(mut self, id: impl Into<String>) -> Caller {
        self.request_id = Some(id.into());
        self
    }

    pub fn ip(&self) -> IpAddr {
        self.actor.ip
    }

    pub fn origin(&self) -> &Origin {
        &self.actor.origin
    }

    /// An audit event by this caller, of its origin's family (see [`Actor::event`]).
    pub fn event(&self, action: &str) -> Event {
        self.actor.event(action)
    }

    /// `Ok` when the principal holds `p`, else a 403 that names the missing permission.
    pub fn require(&self, p: Permission) -> Result<()> {
        self.principal.require(p)
    }

    pub fn can(&self, p: Permission) -> bool {
        self.principal.can(p)
    }
}

/// A successful login.
pub struct LoginOk {
    pub token: SecretString,
    pub user: User,
}

struct CachedToken {
    principal: Arc<Principal>,
    expires_at: i64,
    loaded_at: i64,
    last_used: AtomicI64,
    persisted_last_used: AtomicI64,
}

/// The identity service. One per server; cheap to share behind an `Arc`.
pub struct Identity {
    store: Store,
    cfg: IdentityConfig,
    hasher: Hasher,
    cache: RwLock<HashMap<String, Arc<CachedToken>>>,
    login_slots: slots::LoginSlots,
}

/// The answer to every failed login, whatever the reason (see [`Identity::login`]).
pub const LOGIN_FAILED: &str = "wrong user id or password";

/// The token cache is swept of expired entries whenever it grows to a power of two this size
/// or above.
const CACHE_SWEEP_AT: usize = 1024;

/// How often (ms) a token's last use is written back to the store, at most (and at least four
/// times per idle window, so another server reading it never sees a busy token as idle).
const LAST_USED_PERSIST_MS: i64 = 30_000;

impl Identity {
    pub fn new(store: Store, cfg: IdentityConfig) -> Result<Identity> {
        let hasher = Hasher::new(cfg.argon2)?;
        Ok(Identity {
            store,
            cfg,
            hasher,
            cache: RwLock::new(HashMap::new()),
            login_slots: slots::LoginSlots::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.cfg
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Creates the built-in roles (and brings their permissions up to date), and at the first
    /// start the `admin` user. Returns the generated admin password when one was generated.
    pub async fn bootstrap(
        &self,
        admin_password: Option<SecretString>,
    ) -> Result<Option<SecretString>> {
        roles::ensure_builtin_roles(&self.store).await?;
        users::fill_name_keys(&self.store).await?;
        let count: i64 = read!(self.store, |db| sqlx::query_scalar(
            "SELECT COUNT(*) FROM users"
        )
        .fetch_one(db)
        .await)?;
        if count > 0 {
            return Ok(None);
        }
        let (password, generated) = match admin_password {
            Some(p) => {
                // The bootstrap password meets the same policy as every other.
                validation::validate_password(&p).map_err(|e| {
                    Error::invalid(format!(
                        "the first admin password (HAECHI_ADMIN_PASSWORD or admin_password) {}",
                        e.message.trim_start_matches("password: ")
                    ))
                })?;
                (p, false)
            }
            None => (validation::random_password(), true),
        };
        let hash = self.hasher.hash(&password).await?;
        let created = users::insert_bootstrap_admin(&self.store, &hash).await?;
        Ok((created && generated).then_some(password))
    }

    /// Waits for one of the account's password-check turns (see [`slots`]).
    pub(crate) async fn password_check_turn(&self, user_id: &str) -> Result<slots::Slot> {
        self.login_slots
            .enter(
                &ident::fold(user_id),
                self.cfg.max_concurrent_logins,
                self.cfg.max_queued_logins,
            )
            .await
    }

    /// The one login behind every login endpoint (MDRM, OPMATE, vault, the DB gateways).
    ///
    /// Every failure answers the same 401 "wrong user id or password", whatever the reason: an
    /// unknown user, a wrong password, or an account that may not log in now (disabled, locked
    /// after failed logins or for inactivity, address outside its allow-list), even when the
    /// password was right. So the answer tells a guesser nothing once the account is locked;
    /// the audit event keeps the true reason. Each attempt costs one Argon2 verification, also
    /// for an unknown user.
    ///
    /// The outcome is decided after the verification, inside one write transaction that holds
    /// the user's row (`FOR UPDATE` on PostgreSQL; SQLite's write transactions are serial), so
    /// logins running at once cannot each read "not locked" and count past the limit, and a
    /// right password that arrives after the limit was reached is refused. At most
    /// `max_concurrent_logins` logins per user id are verified at once; up to
    /// `max_queued_logins` more wait for their turn, and more than that are refused at once
    /// with 503 without a password check.
    pub async fn login(
        &self,
        user_id: &str,
        password: &SecretString,
        ip: IpAddr,
        family: Family,
    ) -> Result<LoginOk> {
        self.login_checked(user_id, password, ip, family, false)
            .await
    }

    /// [`Identity::login`] for the web console, where `api` accounts may not log in
    /// (CONTRACT §1, §8): the same checks and audit, and an `api` account is refused like every
    /// other refusal (the audit event says why).
    pub async fn login_human(
        &self,
        user_id: &str,
        password: &SecretString,
        ip: IpAddr,
        family: Family,
    ) -> Result<LoginOk> {
        self.login_checked(user_id, password, ip, family, true)
            .await
    }

    async fn login_checked(
        &self,
        user_id: &str,
        password: &SecretString,
        ip: IpAddr,
        family: Family,
        humans_only: bool,
    ) -> Result<LoginOk> {
        let _slot = self.password_check_turn(user_id).await?;
        let row = users::find_login_row(&self.store, user_id).await?;
        let ok = self
            .hasher
            .verify(password, row.as_ref().map(|r| r.password_hash.clone()))
            .await?;
        let failed = || Error::new(Code::LoginFailed, LOGIN_FAILED);
        let audit_failure = |reason: &'static str| {
            Event::new(family, "auth.login")
                .by(user_id.to_owned(), Some(ip.to_string()))
                .outcome(Outcome::Failure)
                .detail(serde_json::json!({ "reason": reason }))
        };
        let Some(row) = row else {
            haechi_audit::record(&self.store, audit_failure("bad credentials")).await?;
            return Err(failed());
        };
        let mut tx = self.store.begin().await?;
        let now = now_ms();
        // The row as it stands now, held until the transaction ends.
        let Some(state) = users::lock_login_row(&mut tx, row.id).await? else {
            // Deleted while the password was being checked.
            haechi_audit::append(&mut tx, audit_failure("bad credentials")).await?;
            tx.commit().await?;
            return Err(failed());
        };
        // A password changed meanwhile: the one just checked is no longer the password.
        let ok = ok && state.password_hash == row.password_hash;
        let lock_active = state.locked_at.is_some_and(|at| {
            self.cfg.lockout_secs == 0 || now - at < self.cfg.lockout_secs as i64 * 1000
        });
        if !ok {
            if !lock_active {
                // A lock that has run out starts a fresh count.
                let before = if state.locked_at.is_some() {
                    0
                } else {
                    state.failed_logins
                };
                users::set_failed_logins(
                    &mut tx,
                    row.id,
                    before + 1,
                    self.cfg.max_failed_logins,
                    now,
                )
                .await?;
            }
            let reason = if lock_active {
                "bad credentials; account locked"
            } else {
                "bad credentials"
            };
            haechi_audit::append(&mut tx, audit_failure(reason)).await?;
            tx.commit().await?;
            return Err(failed());
        }
        let refusal = if state.disabled {
            Some("disabled")
        } else if lock_active {
            Some("locked")
        } else if state.kind()? == UserKind::Human && self.inactive(&state, now) {
            Some("inactive")
        } else if !ip_allowed(&state.allowed_ips()?, ip) {
            Some("ip not allowed")
        } else if humans_only && state.kind()? == UserKind::Api {
            Some("api account: no console login")
        } else {
            None
        };
        if let Some(reason) = refusal {
            haechi_audit::append(&mut tx, audit_failure(reason)).await?;
            tx.commit().await?;
            return Err(failed());
        }

        let token = token::generate();
        let hash = token::hash(token.expose_secret());
        let expires_at = now + self.cfg.token_max_secs as i64 * 1000;
        in_tx!(tx, |c| {
            sqlx::query(
            "INSERT INTO tokens (token_hash, user_id, family, client_ip, created_at, last_used_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $5, $6)"
        )
        .bind(&hash)
        .bind(row.id)
        .bind(family.as_str())
        .bind(ip.to_string())
        .bind(now)
        .bind(expires_at)
        .execute(&mut *c).await.map(|r| r.rows_affected())
        })?;
        in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_at = NULL, last_login_at = $1 WHERE id = $2"
        )
        .bind(now)
        .bind(row.id)
        .execute(&mut *c).await.map(|r| r.rows_affected())
        })?;
        haechi_audit::append(
            &mut tx,
            Event::new(family, "auth.login").by(row.user_id.clone(), Some(ip.to_string())),
        )
        .await?;
        tx.commit().await?;
        let user = users::get_user(&self.store, &row.user_id).await?;
        Ok(LoginOk { token, user })
    }

    fn inactive(&self, row: &users::LoginRow, now: i64) -> bool {
        if self.cfg.inactivity_days == 0 {
            return false;
        }
        let last = row.last_login_at.unwrap_or(0).max(row.activity_reset_at);
        now - last > self.cfg.inactivity_days as i64 * 86_400_000
    }

    /// Resolves a token presented on a request from `ip`.
    pub async fn authenticate(&self, token: &str, ip: IpAddr) -> Result<Arc<Principal>> {
        if !token.starts_with(token::PREFIX) || token.len() > 128 {
            return Err(Error::unauthenticated("the token is not valid"));
        }
        let hash = token::hash(token);
        let now = now_ms();
        let cached = self
            .cache
            .read()
            .map_err(Error::internal)?
            .get(&hash)
            .cloned();
        let entry = match cached {
            Some(e) if now - e.loaded_at < self.cfg.token_cache_secs as i64 * 1000 => e,
            stale => {
                let fresh = self.load_token(&hash, now).await?;
                if let Some(old) = stale {
                    fresh
                        .last_used
                        .fetch_max(old.last_used.load(Ordering::Relaxed), Ordering::Relaxed);
                    fresh.persisted_last_used.fetch_max(
                        old.persisted_last_used.load(Ordering::Relaxed),
                        Ordering::Relaxed,
                    );
                }
                let mut cache = self.cache.write().map_err(Error::internal)?;
                if cache.len() >= CACHE_SWEEP_AT && cache.len().is_power_of_two() {
                    // Tokens that are never presented again would otherwise stay forever.
                    let idle_ms = self.cfg.token_idle_secs as i64 * 1000;
                    cache.retain(|_, e| {
                        now < e.expires_at && now - e.last_used.load(Ordering::Relaxed) <= idle_ms
                    });
                }
                cache.insert(hash.clone(), fresh.clone());
                fresh
            }
        };
        let idle_ms = self.cfg.token_idle_secs as i64 * 1000;
        if now >= entry.expires_at || now - entry.last_used.load(Ordering::Relaxed) > idle_ms {
            self.cache.write().map_err(Error::internal)?.remove(&hash);
            return Err(Error::unauthenticated(
                "the token has expired; log in again",
            ));
        }
        if !ip_allowed(&entry.principal.allowed_ips, ip) {
            return Err(Error::new(
                Code::IpNotAllowed,
                "requests from this address are not allowed for this account",
            ));
        }
        entry.last_used.store(now, Ordering::Relaxed);
        let persisted = entry.persisted_last_used.load(Ordering::Relaxed);
        if now - persisted > LAST_USED_PERSIST_MS.min(idle_ms / 4)
            && entry
                .persisted_last_used
                .compare_exchange(persisted, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let store = self.store.clone();
            let token_id = entry.principal.token_id;
            tokio::spawn(async move {
                let r = read!(store.writer(), |db| sqlx::query(
                    "UPDATE tokens SET last_used_at = $1 WHERE id = $2 AND last_used_at < $1"
                )
                .bind(now)
                .bind(token_id)
                .execute(db)
                .await
                .map(|r| r.rows_affected()));
                if let Err(e) = r {
                    tracing::warn!("could not record token use: {e}");
                }
            });
        }
        Ok(entry.principal.clone())
    }

    async fn load_token(&self, hash: &str, now: i64) -> Result<Arc<CachedToken>> {
        let row = tokens::find_token(&self.store, hash).await?;
        let Some(row) = row else {
            return Err(Error::unauthenticated("the token is not valid"));
        };
        if row.revoked_at.is_some() {
            return Err(Error::unauthenticated(
                "the token was revoked; log in again",
            ));
        }
        if row.disabled {
            return Err(Error::unauthenticated("the account is disabled"));
        }
        // Idle expiry is checked by the caller, after merging the last use this server saw
        // (the stored one is written back only every few seconds).
        if now >= row.expires_at {
            return Err(Error::unauthenticated(
                "the token has expired; log in again",
            ));
        }
        let roles = roles::roles_of(&self.store, row.user_pk).await?;
        let permissions = roles
            .iter()
            .fold(PermissionSet::default(), |acc, r| acc.union(r.1));
        let principal = Principal {
            id: row.user_pk,
            user_id: row.user_id.clone(),
            name: row.name.clone(),
            kind: UserKind::parse(&row.kind)?,
            roles: roles.into_iter().map(|r| r.0).collect(),
            permissions,
            allowed_ips: validation::parse_allowed_ips(&row.allowed_ips)?,
            token_id: row.token_id,
        };
        Ok(Arc::new(CachedToken {
            principal: Arc::new(principal),
            expires_at: row.expires_at,
            loaded_at: now,
            last_used: AtomicI64::new(row.last_used_at),
            persisted_last_used: AtomicI64::new(row.last_used_at),
        }))
    }

    /// Forgets every cached token of a user, here and (through the signal bus) on every
    /// other server sharing the store, so a change to that user applies to the next request
    /// everywhere.
    pub async fn forget_user(&self, user_pk: i64) {
        self.evict_user(user_pk);
        self.store
            .publish(Signal::UserChanged { user: user_pk })
            .await;
    }

    async fn forget_token(&self, token_id: i64) {
        self.evict_token(token_id);
        self.store
            .publish(Signal::TokenRevoked { token: token_id })
            .await;
    }

    /// Forgets every cached token, here and on the other servers (a role changed).
    pub async fn forget_all(&self) {
        self.evict_all();
        self.store.publish(Signal::RolesChanged).await;
    }

    fn evict_user(&self, user_pk: i64) {
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, e| e.principal.id != user_pk);
        }
    }

    fn evict_token(&self, token_id: i64) {
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, e| e.principal.token_id != token_id);
        }
    }

    fn evict_all(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }

    /// Follows the other servers' identity signals until the store's bus closes: a token
    /// revoked or a user changed on another server is evicted from this server's cache at
    /// once. After the listener reconnected (signals may have been missed) the whole cache
    /// is dropped.
    pub fn follow_signals(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        let mut signals = self.store.signals().subscribe();
        tokio::spawn(async move {
            while let Some(d) = signals.recv().await {
                let Some(me) = me.upgrade() else { return };
                match d {
                    Delivery::Signal(Signal::TokenRevoked { token }) => me.evict_token(token),
                    Delivery::Signal(Signal::UserChanged { user }) => me.evict_user(user),
                    Delivery::Signal(Signal::RolesChanged) | Delivery::Resync => me.evict_all(),
                    Delivery::Signal(_) => {}
                }
            }
        })
    }

    /// Whether a long-lived session opened with `token` (a database gateway session) may go
    /// on from `ip`: the token is not revoked (logout, password change), its user is not
    /// disabled, and `ip` is in the user's allow-list now. Unlike [`Identity::authenticate`],
    /// the token's idle and maximum age do not end it, and the store is read every time (no
    /// cache), so a change made on another server counts at the next check.
    pub async fn session_alive(&self, token: &str, ip: IpAddr) -> Result<()> {
        let row = tokens::find_token(&self.store, &token::hash(token))
            .await?
            .ok_or_else(|| Error::unauthenticated("the login is no longer valid"))?;
        // Disabling a user revokes their tokens too: say the cause.
        if row.disabled {
            return Err(Error::new(Code::AccountLocked, "the account is disabled"));
        }
        if row.revoked_at.is_some() {
            return Err(Error::unauthenticated(
                "the login was revoked (password changed, logged out, or revoked)",
            ));
        }
        if !ip_allowed(&validation::parse_allowed_ips(&row.allowed_ips)?, ip) {
            return Err(Error::new(
                Code::IpNotAllowed,
                "the account may no longer connect from this address",
            ));
        }
        Ok(())
    }

    /// Revokes `token` by its value, when a session it was minted for has ended.
    pub async fn end_session(&self, token: &str) -> Result<()> {
        let hash = token::hash(token);
        let now = now_ms();
        let revoked: Option<i64> = read!(self.store.writer(), |db| {
            sqlx::query_scalar(
            "UPDATE tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL RETURNING id"
        )
        .bind(now)
        .bind(&hash)
        .fetch_optional(db)
        .await
        })?;
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(&hash);
        }
        if let Some(id) = revoked {
            self.store.publish(Signal::TokenRevoked { token: id }).await;
        }
        Ok(())
    }

    /// Revokes the caller's own token (every family's logout).
    pub async fn logout(&self, caller: &Caller) -> Result<()> {
        let principal = &caller.principal;
        let mut tx = self.store.begin().await?;
        tokens::revoke_token(&mut tx, principal.id, principal.token_id).await?;
        haechi_audit::append(&mut tx, caller.event("auth.logout")).await?;
        tx.commit().await?;
        self.forget_token(principal.token_id).await;
        Ok(())
    }

    /// The caller's live tokens.
    pub async fn my_tokens(&self, principal: &Principal) -> Result<Vec<TokenInfo>> {
        tokens::tokens_of(
            &self.store,
            principal.id,
            principal.token_id,
            now_ms(),
            self.cfg.token_idle_secs,
        )
        .await
    }

    /// Revokes one of the caller's own tokens.
    pub async fn revoke_my_token(&self, caller: &Caller, token_id: i64) -> Result<()> {
        let (principal, actor) = (&*caller.principal, &caller.actor);
        let mut tx = self.store.begin().await?;
        if !tokens::revoke_token(&mut tx, principal.id, token_id).await? {
            return Err(Error::not_found(format_args!("token {token_id}")));
        }
        haechi_audit::append(
            &mut tx,
            actor.event("token.revoke").target(token_id.to_string()),
        )
        .await?;
        tx.commit().await?;
        self.forget_token(token_id).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_caller_holds_every_permission_and_keeps_its_attribution() {
        let actor = Actor::system(
            "workflow",
            Origin::Workflow {
                execution: "EXEC_20261206_0001".into(),
            },
        );
        let caller = Caller::system(actor);
        for p in Permission::ALL {
            assert!(caller.can(*p), "{p:?}");
        }
        assert!(caller.principal.roles.is_empty());
        assert_eq!(caller.principal.id, 0);
        assert_eq!(caller.actor.user_id, "workflow");
        let e = caller.event("dbpolicy.lock");
        assert_eq!(e.user.as_deref(), Some("workflow"));
        assert_eq!(e.family, Family::Mdrm);
        assert_eq!(e.origin.as_deref(), Some("workflow:EXEC_20261206_0001"));
    }
}
