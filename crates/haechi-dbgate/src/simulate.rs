//! The policy simulator: would the gateway let this person, from this address, as this
//! account on this target, run this statement string now, and why.
//!
//! It runs the gateway's own steps on the same inputs: the same target and account lookup as
//! a login, the same policy matching ([`DbGate::matching`]), the same classifier with the same
//! dialect (PostgreSQL's parser, or the MySQL dialect of the target as the gateway last saw
//! it), the same catalog snapshot for names in attribute notation, and the same pure verdict
//! function ([`crate::decision::decide`]). What it cannot know is a session's own history
//! (SQL-level `PREPARE` names, a statement that changed how text is lexed): it answers for
//! the first statement of a fresh session.

use std::net::IpAddr;

use haechi_types::{time::now_ms, Error, Result};

use crate::classify::{mysql as classify_mysql, pg as classify_pg};
use crate::decision::{self, Verdict};
use crate::targets::{self, Kind};
use crate::DbGate;

/// Longest statement text the simulator takes (the gateway audits at most a few KiB; a
/// simulated string is typed by a person).
pub const MAX_SQL: usize = 64 * 1024;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateInput {
    pub user_id: String,
    pub client_ip: IpAddr,
    /// The target's name (the database name a client gives).
    pub target: String,
    pub account: String,
    pub sql: String,
}

/// A policy that matches the person, account, target and address, and its state now.
#[derive(Debug, Clone)]
pub struct MatchedPolicy {
    pub index: i64,
    pub policy_id: String,
    /// `in force`, `locked`, `not yet valid` or `expired`.
    pub state: &'static str,
    pub sql_privileges: Vec<String>,
}

/// A needed privilege and the policy that grants it (`null`: none does).
#[derive(Debug, Clone)]
pub struct GrantOut {
    pub privilege: String,
    pub policy_index: Option<i64>,
    pub policy_id: Option<String>,
}

/// The simulator's answer.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Whether the gateway would run the statement string.
    pub allowed: bool,
    /// Whether the login itself would be admitted (some matching policy in force).
    pub login_allowed: bool,
    /// The gateway's own refusal message (the one the client would see), when refused.
    pub message: Option<String>,
    /// `postgres` or `mysql`: the classifier's dialect.
    pub dialect: &'static str,
    /// The privilege types the string needs (united over its statements).
    pub needs: Vec<String>,
    /// Of those, what no policy in force grants.
    pub missing: Vec<String>,
    /// Statements in the string.
    pub statements: usize,
    /// Why the text could not be classified (then only `ALL` allows it).
    pub unclassifiable: Option<String>,
    /// PostgreSQL: names read in attribute notation, decided by the target's catalog.
    pub attribute_names: Vec<String>,
    /// PostgreSQL: whether a catalog snapshot of the target decided them (without one, each
    /// needs `EXECUTE`, as in a gateway session that could not read it).
    pub catalog_snapshot: bool,
    /// The policies that match, in index order (the gateway unites the grants of those in force).
    pub policies: Vec<MatchedPolicy>,
    /// Which policy grants each needed privilege.
    pub granted_by: Vec<GrantOut>,
}

impl DbGate {
    /// Simulates a statement string (see the module's text). Unknown user, target or account
    /// → 404 naming it. A read: nothing changes and nothing is audited (as a policy read).
    pub async fn simulate(&self, input: SimulateInput) -> Result<Simulation> {
        if input.sql.trim().is_empty() {
            return Err(Error::field("sql", "is required: the statement to check"));
        }
        if input.sql.len() > MAX_SQL {
            return Err(Error::field(
                "sql",
                format_args!("must be at most {MAX_SQL} bytes (got {})", input.sql.len()),
            ));
        }
        let user = self.identity().get_user(input.user_id.trim()).await?;
        let target = targets::find_target(&self.store, input.target.trim())
            .await?
            .ok_or_else(|| Error::not_found(format_args!("database target '{}'", input.target)))?;
        let account = targets::find_account(&self.store, &target.name, input.account.trim())
            .await?
            .ok_or_else(|| {
                Error::not_found(format_args!(
                    "account '{}' of database target '{}'",
                    input.account, target.name
                ))
            })?;
        let ip = crate::policy::canonical(input.client_ip);
        let matches = self.matching(&user.user_id, &account.account, &target, ip);
        let now = now_ms();
        let (c, dialect, snapshot) = match target.kind {
            Kind::Postgres => {
                let mut c = classify_pg::classify(&input.sql, &|_| None);
                let catalog = self.pg_catalogs.for_session(&target.name, &None);
                crate::gateway::pg::catalog::resolve(&mut c, catalog.as_deref());
                (c, "postgres", catalog.is_some())
            }
            Kind::Mysql => {
                let flavor = self.mysql_flavor(&target.name);
                (
                    classify_mysql::classify(&input.sql, flavor, &|_| None),
                    "mysql",
                    false,
                )
            }
        };
        let login_allowed = !user.disabled && matches.iter().any(|p| p.effective(now));
        let verdict = if user.disabled {
            Verdict::Refuse {
                message: format!("user '{}' is disabled", user.user_id),
                missing: c.needs,
            }
        } else {
            decision::decide(&matches, now, &c, false)
        };
        let (allowed, message, missing) = match &verdict {
            Verdict::Allow => (true, None, Vec::new()),
            Verdict::Refuse { message, missing } => (
                false,
                Some(message.clone()),
                missing.iter().map(|p| p.as_str().to_owned()).collect(),
            ),
        };
        let sim = Simulation {
            allowed,
            login_allowed,
            message,
            dialect,
            needs: c.needs.iter().map(|p| p.as_str().to_owned()).collect(),
            missing,
            statements: c.statements,
            unclassifiable: c.unclassifiable.clone(),
            attribute_names: c.fields.iter().cloned().collect(),
            catalog_snapshot: snapshot,
            policies: matches
                .iter()
                .map(|p| MatchedPolicy {
                    index: p.index,
                    policy_id: p.policy_id.clone(),
                    state: decision::state_of(p, now),
                    sql_privileges: p.privileges.iter().map(|x| x.as_str().to_owned()).collect(),
                })
                .collect(),
            granted_by: decision::explain(&matches, now, c.needs)
                .into_iter()
                .map(|g| GrantOut {
                    privilege: g.privilege.as_str().to_owned(),
                    policy_index: g.policy.as_ref().map(|p| p.0),
                    policy_id: g.policy.map(|p| p.1),
                })
                .collect(),
        };
        Ok(sim)
    }
}
