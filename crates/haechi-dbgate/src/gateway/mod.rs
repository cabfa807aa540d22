//! What both wire protocols share: the login of a person (CONTRACT §7), the policy that
//! applies to their session, the verdict on each statement, audit and metrics. `pg` and
//! `mysql` each keep the client side (`frontend`) apart from the database side (`backend`).

pub mod mysql;
pub mod pg;
mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use haechi_audit::{Event, Outcome};
use haechi_identity::{Actor, PermissionSet, Principal, RoleRef};
use haechi_types::{time::now_ms, Error, Result};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::classify::Classification;
use crate::policy::Policy;
use crate::privilege::PrivSet;
use crate::targets::{self, Account, Kind, Target};
use crate::DbGate;

pub use tls::backend_tls_config;
pub(crate) use tls::ca_roots;

/// A byte stream to a client or a database: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// Writes all of `bytes` and flushes them. A TLS stream may accept bytes into its own buffer
/// while the socket is full and send them only when written to again or flushed; a relay that
/// then waits to read would leave the end of a result in that buffer for good.
pub(crate) async fn send<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    w.write_all(bytes).await?;
    w.flush().await
}

/// Time a client has, from its connection, to finish TLS and hand over its login (startup,
/// password): a client that sends nothing, or sends slowly, is dropped then.
pub const PRE_AUTH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest message taken from a client before its login succeeded (a startup packet, a
/// password, a MySQL handshake response with its attributes).
pub const PRE_AUTH_MAX_MESSAGE: usize = 64 * 1024;

/// Runs `step` of a client's login, failing with `TimedOut` once `deadline` has passed.
pub(crate) async fn before<T>(
    deadline: tokio::time::Instant,
    step: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout_at(deadline, step).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not finish its login in time",
        )),
    }
}

/// A stream whose first reads return bytes already read off it (a TLS ClientHello that came
/// in one read with the request to start TLS), then the stream's own.
pub(crate) struct Prefixed<T> {
    prefix: bytes::Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(prefix: bytes::Bytes, inner: T) -> Prefixed<T> {
        Prefixed { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if !me.prefix.is_empty() {
            let n = me.prefix.len().min(buf.remaining());
            buf.put_slice(&me.prefix.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Connects to where `target`'s database listens: its Unix socket when it has one, else TCP
/// `host:port` (without Nagle's delay: every message is a whole request or answer).
pub(crate) async fn dial(target: &Target) -> std::io::Result<BoxIo> {
    match target.socket_file() {
        Some(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        None => {
            let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp))
        }
    }
}

/// Why a login was refused: the message is safe to show the client.
#[derive(Debug, Clone)]
pub struct LoginRefused(pub String);

/// Why [`DbGate::login_with_password`] failed: the message is safe to show the client.
#[derive(Debug, Clone)]
pub enum LoginFailed {
    /// The person may not log in (password, policy, unknown target or account).
    Refused(String),
    /// The account's password could not be read from the vault.
    Vault(String),
}

/// The threads client sessions run on: each a single-threaded Tokio runtime that owns the
/// client's and the database's socket of its sessions. A session's bytes then go from one
/// socket to the other on one thread, with no hand-over between worker threads (which cost
/// more in wake-ups than the forwarding itself). Logins, which use the store, the identity
/// engine and the vault, still run on the server's main runtime.
pub(crate) struct SessionThreads {
    handles: Vec<tokio::runtime::Handle>,
    next: std::sync::atomic::AtomicUsize,
}

impl SessionThreads {
    /// `count` threads; `0` means half the CPUs (at least one): the database and the clients
    /// need the rest.
    fn start(count: usize) -> SessionThreads {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let count = if count == 0 { cpus.div_ceil(2) } else { count };
        let mut handles = Vec::new();
        for i in 0..count {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!("database gateway: no session runtime: {e}");
                    break;
                }
            };
            let handle = rt.handle().clone();
            let started = std::thread::Builder::new()
                .name(format!("haechi-dbgate-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()));
            match started {
                Ok(_) => handles.push(handle),
                Err(e) => {
                    tracing::warn!("database gateway: no session thread: {e}");
                    break;
                }
            }
        }
        SessionThreads {
            handles,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The runtime for the next session (round robin); the caller's when none could start.
    fn pick(&self) -> tokio::runtime::Handle {
        if self.handles.is_empty() {
            return tokio::runtime::Handle::current();
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.handles[n % self.handles.len()].clone()
    }
}

/// Moves an accepted client connection to a session thread and runs `session` there with it.
pub(crate) fn spawn_session<F, Fut>(gate: &DbGate, tcp: tokio::net::TcpStream, session: F)
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let std_tcp = match tcp.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("database gateway: cannot hand a connection over: {e}");
            return;
        }
    };
    let handle = gate
        .session_threads
        .get_or_init(|| SessionThreads::start(gate.config().session_threads))
        .pick();
    handle.spawn(async move {
        match tokio::net::TcpStream::from_std(std_tcp) {
            Ok(tcp) => session(tcp).await,
            Err(e) => tracing::warn!("database gateway: cannot take a connection over: {e}"),
        }
    });
}

/// A person's session through the gateway: who, as which account, on which target, and the
/// policies that may grant their statements.
pub struct Session {
    gate: Arc<DbGate>,
    pub user_id: String,
    pub account: Account,
    pub target: Target,
    pub client: SocketAddr,
    pub protocol: &'static str,
    seen_generation: u64,
    matches: Vec<Arc<Policy>>,
    /// SQL-level `PREPARE` names of this session and what executing them needs.
    pub prepared: HashMap<String, PrivSet>,
    /// Set after a statement changed how text is lexed: from then on only `ALL` allows.
    lexer_uncertain: bool,
    /// PostgreSQL: the target's catalog snapshot this session decides attribute notation by.
    pub(crate) catalog: Option<Arc<pg::catalog::Catalog>>,
    /// Whether the person may still use the session (see [`Liveness`]).
    liveness: Arc<Liveness>,
    /// The session's entry in the registry of open sessions (removed when this drops).
    registered: crate::sessions::Registered,
}

/// How often an open session's person is checked (token not revoked, user not disabled,
/// address still allowed).
pub const LIVENESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Set once the person of a session may no longer use it: their user was disabled, their
/// password changed (which revokes their tokens), the token they logged in with was revoked,
/// or their address left their allow-list. The session's next statements are refused, as
/// for a locked policy.
#[derive(Default)]
pub struct Liveness {
    dead: std::sync::atomic::AtomicBool,
    why: Mutex<String>,
}

impl Liveness {
    pub(crate) fn end(&self, why: String) {
        if let Ok(mut w) = self.why.lock() {
            *w = why;
        }
        self.dead.store(true, std::sync::atomic::Ordering::Release);
    }

    fn ended(&self) -> Option<String> {
        if !self.dead.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        Some(self.why.lock().map(|w| w.clone()).unwrap_or_default())
    }
}

/// Checks a session's person every [`LIVENESS_INTERVAL`] until the session is gone (or its
/// person may no longer use it); then revokes the token the login minted.
async fn watch(
    live: std::sync::Weak<Liveness>,
    gate: Arc<DbGate>,
    token: SecretString,
    minted: bool,
    ip: IpAddr,
) {
    loop {
        tokio::time::sleep(LIVENESS_INTERVAL).await;
        let Some(l) = live.upgrade() else { break };
        match gate
            .identity()
            .session_alive(token.expose_secret(), ip)
            .await
        {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.code,
                    haechi_types::Code::Unauthenticated
                        | haechi_types::Code::AccountLocked
                        | haechi_types::Code::IpNotAllowed
                ) =>
            {
                l.end(e.message);
                break;
            }
            // The store could not answer: the session goes on, and the next check decides.
            Err(e) => tracing::warn!("database gateway: cannot check an open session's user: {e}"),
        }
    }
    if minted {
        if let Err(e) = gate.identity().end_session(token.expose_secret()).await {
            tracing::warn!("database gateway: the token of an ended session was not revoked: {e}");
        }
    }
}

pub use crate::decision::Verdict;

/// What the audit event of one statement says.
pub struct StatementRecord<'a> {
    pub text: &'a str,
    pub needs: PrivSet,
    pub verdict: &'a Verdict,
    pub rows: u64,
    pub started: Instant,
    /// The database's error code when it failed the statement.
    pub error: Option<&'a str>,
}

impl DbGate {
    /// Logs a person in: `user_name` is `<user_id>@<account>`, `database` a target's name,
    /// `password` their Haechi password or a token. Refused unless a policy grants them the
    /// account on that target from `client` now.
    pub async fn login(
        self: &Arc<Self>,
        kind: Kind,
        protocol: &'static str,
        user_name: &str,
        database: &str,
        password: &SecretString,
        client: SocketAddr,
    ) -> std::result::Result<Session, LoginRefused> {
        let counted = |outcome: &'static str, m: String| {
            metrics::counter!("haechi_gateway_logins_total", "protocol" => protocol, "outcome" => outcome).increment(1);
            LoginRefused(m)
        };
        let Some((user_id, account)) = user_name.rsplit_once('@') else {
            return Err(counted(
                "failed",
                format!("log in as <haechi user>@<database account> (got '{user_name}')"),
            ));
        };
        // The password first, so that whether a target or account exists is told only to
        // someone who proved it (and costs the same time as a wrong password).
        let ip = crate::policy::canonical(client.ip());
        let (token, minted) = self
            .authenticate(user_id, password, ip)
            .await
            .map_err(|e| counted("failed", e.message))?;
        let liveness = Arc::new(Liveness::default());
        tokio::spawn(watch(
            Arc::downgrade(&liveness),
            self.clone(),
            token,
            minted,
            ip,
        ));
        let target = match targets::find_target(&self.store, database).await {
            Ok(Some(t)) if t.kind == kind => t,
            Ok(_) => {
                return Err(counted(
                    "unknown_target",
                    format!(
                        "there is no {} database target named '{database}'",
                        kind.as_str()
                    ),
                ));
            }
            Err(e) => return Err(counted("error", format!("login failed: {}", e.message))),
        };
        let account = match targets::find_account(&self.store, database, account).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Err(counted(
                    "unknown_target",
                    format!("database target '{database}' has no account '{account}'"),
                ));
            }
            Err(e) => return Err(counted("error", format!("login failed: {}", e.message))),
        };
        let matches = self.matching(user_id, &account.account, &target, ip);
        let now = now_ms();
        if !matches.iter().any(|p| p.effective(now)) {
            let why = if matches.is_empty() {
                "no DBSAFER policy".to_owned()
            } else {
                format!(
                    "DBSAFER policy {} is {}",
                    matches[0].policy_id,
                    crate::decision::state_of(&matches[0], now)
                )
            };
            self.record(
                Event::new(haechi_audit::Family::Gateway, "db.connect")
                    .by(user_id, Some(ip.to_string()))
                    .target(format!("db-target:{}", target.name))
                    .outcome(Outcome::Denied)
                    .detail(
                        json!({ "protocol": protocol, "account": account.account, "reason": why }),
                    ),
            )
            .await;
            let (user, acct, tgt) = (user_id, &account.account, &target.name);
            return Err(counted(
                "denied",
                if matches.is_empty() {
                    format!("{why} lets '{user}' use account '{acct}' on '{tgt}' from {ip}")
                } else {
                    format!("{why}: '{user}' may not use account '{acct}' on '{tgt}' from {ip}")
                },
            ));
        }
        let registered = self.sessions.register(
            user_id,
            &account.account,
            &target.name,
            protocol,
            client,
            liveness.clone(),
        );
        self.record(
            Event::new(haechi_audit::Family::Gateway, "db.connect")
                .by(user_id, Some(ip.to_string()))
                .target(format!("db-target:{}", target.name))
                .detail(json!({ "protocol": protocol, "account": account.account, "session": registered.open.id })),
        )
        .await;
        metrics::counter!("haechi_gateway_logins_total", "protocol" => protocol, "outcome" => "success").increment(1);
        Ok(Session {
            gate: self.clone(),
            user_id: user_id.to_owned(),
            account,
            target,
            client,
            protocol,
            seen_generation: self.generation(),
            matches,
            prepared: HashMap::new(),
            lexer_uncertain: false,
            catalog: None,
            liveness,
            registered,
        })
    }

    /// [`DbGate::login`] and then the account's current password from the vault, run on the
    /// server's main runtime `main` (where the store's and the vault's connections live).
    #[allow(clippy::too_many_arguments)]
    pub async fn login_with_password(
        self: &Arc<Self>,
        main: &tokio::runtime::Handle,
        kind: Kind,
        protocol: &'static str,
        user_name: String,
        database: String,
        password: SecretString,
        client: SocketAddr,
    ) -> std::result::Result<(Session, SecretString), LoginFailed> {
        let gate = self.clone();
        let work = async move {
            let session = gate
                .login(kind, protocol, &user_name, &database, &password, client)
                .await
                .map_err(|e| LoginFailed::Refused(e.0))?;
            drop(password);
            match session.backend_password().await {
                Ok(pw) => Ok((session, pw)),
                Err(e) => Err(LoginFailed::Vault(format!(
                    "cannot read the password of database account '{}' from the vault: {}",
                    session.account.account, e.message
                ))),
            }
        };
        match main.spawn(work).await {
            Ok(r) => r,
            Err(_) => Err(LoginFailed::Refused(
                "the server is shutting down".to_owned(),
            )),
        }
    }

    /// A Haechi password, or a token (then it must be the same user's). Returns the token the
    /// session's liveness is checked by (see [`Liveness`]) and whether this login minted it
    /// (then it is revoked when the session ends).
    async fn authenticate(
        &self,
        user_id: &str,
        password: &SecretString,
        ip: IpAddr,
    ) -> Result<(SecretString, bool)> {
        let secret = password.expose_secret();
        if secret.starts_with(haechi_identity::token::PREFIX) {
            let p = self.identity().authenticate(secret, ip).await?;
            if p.user_id != user_id {
                return Err(Error::unauthenticated("wrong user id or password"));
            }
            return Ok((password.clone(), false));
        }
        let ok = self
            .identity()
            .login(user_id, password, ip, haechi_audit::Family::Gateway)
            .await?;
        Ok((ok.token, true))
    }

    /// The principal an account's password is read as: the user who registered the account.
    async fn registrar(&self, user_id: &str) -> Result<Principal> {
        let user = self.identity().get_user(user_id).await?;
        if user.disabled {
            return Err(Error::unavailable(format!(
                "the account's registrar '{user_id}' is disabled; register the account again"
            )));
        }
        let roles = self.identity().list_roles().await?;
        let held: Vec<_> = roles
            .into_iter()
            .filter(|r| user.roles.contains(&r.name))
            .collect();
        let permissions = held.iter().fold(PermissionSet::default(), |acc, r| {
            acc.union(PermissionSet::of(&r.permissions))
        });
        Ok(Principal {
            id: user.id,
            user_id: user.user_id.clone(),
            name: user.name.clone(),
            kind: user.kind,
            roles: held
                .into_iter()
                .map(|r| RoleRef {
                    id: r.id,
                    name: r.name,
                })
                .collect(),
            permissions,
            allowed_ips: Vec::new(),
            token_id: 0,
        })
    }
}

impl Session {
    pub fn gate(&self) -> &Arc<DbGate> {
        &self.gate
    }

    /// The current password of the account, read from the vault as the account's registrar
    /// (a password changed in the vault is used from the next backend login on).
    pub async fn backend_password(&self) -> Result<SecretString> {
        let principal = self.gate.registrar(&self.account.registered_by).await?;
        let actor = Actor {
            user_id: self.user_id.clone(),
            ip: self.client.ip(),
            origin: haechi_identity::Origin::Api(haechi_audit::Family::Gateway),
        };
        let caller = haechi_identity::Caller::acting_as(std::sync::Arc::new(principal), actor);
        crate::secrets::read_password(
            self.gate.vault(),
            &caller,
            self.account.credential_id,
            &self.account.attribute,
        )
        .await
    }

    /// The verdict on a classified statement string, against the policies as they are now
    /// (see [`crate::decision::decide`], which the policy simulator calls too).
    pub fn decide(&mut self, c: &Classification) -> Verdict {
        if let Some(why) = self.liveness.ended() {
            return Verdict::Refuse {
                message: format!(
                    "Haechi DB gateway: refused: {why}; this session can no longer be used, log in again"
                ),
                missing: c.needs,
            };
        }
        let generation = self.gate.generation();
        if generation != self.seen_generation {
            self.matches = self.gate.matching(
                &self.user_id,
                &self.account.account,
                &self.target,
                crate::policy::canonical(self.client.ip()),
            );
            self.seen_generation = generation;
        }
        crate::decision::decide(&self.matches, now_ms(), c, self.lexer_uncertain)
    }

    /// This session's entry in the registry of open sessions: the connection waits on
    /// [`crate::sessions::OpenSession::ended`] to close when an administrator ends it.
    pub fn open(&self) -> Arc<crate::sessions::OpenSession> {
        self.registered.open.clone()
    }

    /// PostgreSQL: adds `EXECUTE` to `c` unless every name it reads in attribute notation is
    /// only a column by the target's current catalog snapshot (see [`pg::catalog`]).
    pub fn resolve_fields(&mut self, c: &mut Classification) {
        if c.fields.is_empty() {
            return;
        }
        self.catalog = self
            .gate
            .pg_catalogs
            .for_session(&self.target.name, &self.catalog);
        pg::catalog::resolve(c, self.catalog.as_deref());
    }

    /// From now on only `ALL` allows a statement: the database reads this session's text
    /// otherwise than the classifier does (see [`Session::apply`]).
    pub fn distrust_lexing(&mut self) {
        self.lexer_uncertain = true;
    }

    /// Notes what an allowed statement string changed in the session (SQL-level prepared
    /// statements, lexing).
    pub fn apply(&mut self, c: &Classification) {
        for (name, needs) in &c.prepared {
            self.prepared.insert(name.clone(), *needs);
        }
        for d in &c.deallocated {
            match d {
                Some(name) => {
                    self.prepared.remove(name);
                }
                None => self.prepared.clear(),
            }
        }
        if c.flags.lexer_change {
            self.lexer_uncertain = true;
        }
        if self.target.kind == Kind::Postgres && pg::catalog::Catalogs::invalidates(c.needs) {
            self.gate.pg_catalogs.invalidate(&self.target.name);
        }
    }

    /// What the audit of this session's statements needs, for the side that sees results.
    pub fn auditor(&self) -> Auditor {
        let counter = |verdict: &'static str| metrics::counter!("haechi_gateway_statements_total", "protocol" => self.protocol, "verdict" => verdict);
        Auditor {
            gate: self.gate.clone(),
            user_id: self.user_id.clone(),
            account: self.account.account.clone(),
            target: format!("db-target:{}", self.target.name),
            target_name: self.target.name.clone(),
            client_ip: self.client.ip().to_string(),
            protocol: self.protocol,
            allowed: counter("allowed"),
            refused: counter("refused"),
            open: self.registered.open.clone(),
        }
    }
}

/// Writes the audit events of one session's statements.
#[derive(Clone)]
pub struct Auditor {
    gate: Arc<DbGate>,
    user_id: String,
    account: String,
    /// `db-target:<name>`, the audit target.
    target: String,
    target_name: String,
    client_ip: String,
    protocol: &'static str,
    /// `haechi_gateway_statements_total` handles, resolved once per session.
    allowed: metrics::Counter,
    refused: metrics::Counter,
    /// The session's registry entry (its statement count, its id for the audit).
    open: Arc<crate::sessions::OpenSession>,
}

impl Auditor {
    /// Records the audit event of one statement string (committed when this returns under
    /// `audit.durability = strict`) and counts its verdict.
    pub async fn audit(&self, r: StatementRecord<'_>) {
        self.enqueue(r).await.committed().await;
    }

    /// Queues the audit event of one statement string and counts its verdict; the answer says
    /// when the event is durable. Events queued before any is waited for share a commit.
    pub(crate) async fn enqueue(&self, r: StatementRecord<'_>) -> crate::Queued {
        let cap = self.gate.config().audit_statement_bytes;
        let dialect = if self.protocol == "mysql" {
            crate::redact::Dialect::MySql
        } else {
            crate::redact::Dialect::Postgres
        };
        let redacted = crate::redact::redact(r.text, dialect);
        let text = cap_text(&redacted, cap);
        let (verdict, outcome, missing) = match r.verdict {
            Verdict::Allow if r.error.is_some() => ("allowed", Outcome::Failure, None),
            Verdict::Allow => ("allowed", Outcome::Success, None),
            Verdict::Refuse { missing, .. } => ("refused", Outcome::Denied, Some(missing.names())),
        };
        match r.verdict {
            Verdict::Allow => self.allowed.increment(1),
            Verdict::Refuse { .. } => self.refused.increment(1),
        }
        self.open.count_statement();
        let missing = missing.as_deref();
        let detail = StatementDetail {
            session: &self.open.id,
            protocol: self.protocol,
            account: &self.account,
            target: &self.target_name,
            statement: &text,
            verdict,
            privileges: &r.needs.names(),
            missing,
            rows: r.rows,
            // Microseconds are plenty, and a short decimal reads back exactly.
            duration_ms: (r.started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
            error: r.error,
        };
        let event = Event::new(haechi_audit::Family::Gateway, "db.statement")
            .by(self.user_id.clone(), Some(self.client_ip.clone()))
            .target(self.target.clone())
            .outcome(outcome)
            .detail_of(&detail);
        match event {
            Ok(event) => self.gate.enqueue(event).await,
            Err(e) => {
                tracing::error!("gateway audit event not recorded: {e}");
                crate::Queued::none()
            }
        }
    }
}

/// The `detail` of a `db.statement` event, serialized straight from borrowed fields (one per
/// statement through the gateway: no JSON map is built for it).
#[derive(serde::Serialize)]
struct StatementDetail<'a> {
    /// The gateway session (see [`crate::sessions`]): statements of one session share it.
    session: &'a str,
    protocol: &'a str,
    account: &'a str,
    target: &'a str,
    statement: &'a str,
    verdict: &'a str,
    privileges: &'a str,
    missing: Option<&'a str>,
    rows: u64,
    duration_ms: f64,
    error: Option<&'a str>,
}

fn cap_text(s: &str, cap: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= cap {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… [{} bytes]", &s[..end], s.len()))
}

/// Cancel keys handed to PostgreSQL clients, mapped to the real backend's.
#[derive(Default)]
pub(crate) struct CancelRegistry {
    keys: Mutex<HashMap<(i32, i32), pg::CancelTarget>>,
}

impl CancelRegistry {
    pub(crate) fn insert(&self, key: (i32, i32), target: pg::CancelTarget) {
        if let Ok(mut k) = self.keys.lock() {
            k.insert(key, target);
        }
    }

    pub(crate) fn remove(&self, key: (i32, i32)) {
        if let Ok(mut k) = self.keys.lock() {
            k.remove(&key);
        }
    }

    pub(crate) fn get(&self, key: (i32, i32)) -> Option<pg::CancelTarget> {
        self.keys.lock().ok().and_then(|k| k.get(&key).cloned())
    }
}
