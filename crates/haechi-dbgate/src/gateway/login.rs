//! The login of a person through the gateway (CONTRACT §4): their Haechi password or token,
//! the target and account they name, the policies that let them in, the account's password
//! from the vault; and the watch that ends their session when they may no longer use it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use haechi_audit::{Event, Outcome};
use haechi_identity::{PermissionSet, Principal, RoleRef};
use haechi_types::{time::now_ms, Error, Result};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::session::{Liveness, Session, LIVENESS_INTERVAL};
use crate::error::LoginFailed;
use crate::targets::{self, Kind};
use crate::DbGate;

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
    ) -> std::result::Result<Session, LoginFailed> {
        let counted = |outcome: &'static str, m: String| {
            metrics::counter!("haechi_gateway_logins_total", "protocol" => protocol, "outcome" => outcome).increment(1);
            LoginFailed::Refused(m)
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
                .await?;
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
            Err(_) => Err(LoginFailed::ShuttingDown),
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
    pub(super) async fn registrar(&self, user_id: &str) -> Result<Principal> {
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
