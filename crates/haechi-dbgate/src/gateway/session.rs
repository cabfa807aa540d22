//! A person's session through the gateway, and the decisions on its statements: the
//! policies that match it (read again when they change), what an allowed statement changes in
//! the session, and whether the person may still use it ([`Liveness`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use haechi_identity::Actor;
use haechi_types::{time::now_ms, Result};
use secrecy::SecretString;

use super::pg;
use super::Verdict;
use crate::classify::Classification;
use crate::policy::Policy;
use crate::privilege::PrivSet;
use crate::targets::{Account, Kind, Target};
use crate::DbGate;

/// A person's session through the gateway: who, as which account, on which target, and the
/// policies that may grant their statements.
pub struct Session {
    pub(super) gate: Arc<DbGate>,
    pub user_id: String,
    pub account: Account,
    pub target: Target,
    pub client: SocketAddr,
    pub protocol: &'static str,
    pub(super) seen_generation: u64,
    pub(super) matches: Vec<Arc<Policy>>,
    /// SQL-level `PREPARE` names of this session and what executing them needs.
    pub prepared: HashMap<String, PrivSet>,
    /// Set after a statement changed how text is lexed: from then on only `ALL` allows.
    pub(super) lexer_uncertain: bool,
    /// PostgreSQL: the target's catalog snapshot this session decides attribute notation by.
    pub(crate) catalog: Option<Arc<pg::catalog::Catalog>>,
    /// Whether the person may still use the session (see [`Liveness`]).
    pub(super) liveness: Arc<Liveness>,
    /// The session's entry in the registry of open sessions (removed when this drops).
    pub(super) registered: crate::sessions::Registered,
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
}
