//! Database targets, accounts, open gateway sessions and the policy simulator's answer as the
//! admin API shows and takes them.

use haechi_dbgate as db;
use haechi_types::time::iso_ms;
use serde::{Deserialize, Serialize};

use super::{all, mirror_enum};

mirror_enum! {
    /// Which wire protocol a target speaks.
    #[serde(rename_all = "lowercase")]
    pub enum Kind mirrors db::Kind { Postgres, Mysql }
}

mirror_enum! {
    /// TLS from the gateway to the target.
    #[serde(rename_all = "kebab-case")]
    pub enum BackendTls mirrors db::BackendTls { Disable, Require, VerifyFull }
}

impl Default for BackendTls {
    fn default() -> Self {
        db::BackendTls::default().into()
    }
}

/// A database server reachable through the gateway.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Target {
    pub id: i64,
    /// The database name clients give to reach this target.
    pub name: String,
    pub kind: Kind,
    pub host: String,
    pub port: u16,
    /// The database (PostgreSQL) or default schema (MySQL) sessions open.
    pub database: String,
    pub tls: BackendTls,
    /// The PEM file of the CA certificates a `verify-full` target's certificate must chain to
    /// (a path on the gateway's machine, read at each connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
    /// Send the account's password in clear or MD5 form (PostgreSQL) or by MySQL full
    /// authentication even without `verify-full` TLS. Off: such logins are refused, since
    /// anyone in the middle would get the password.
    pub allow_insecure_password: bool,
    /// The Unix socket the gateway reaches the database by instead of TCP `host:port` (a
    /// gateway on the database's own machine); `host` and `port` stay the target's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&db::Target> for Target {
    fn from(t: &db::Target) -> Self {
        Target {
            id: t.id,
            name: t.name.clone(),
            kind: t.kind.into(),
            host: t.host.clone(),
            port: t.port,
            database: t.database.clone(),
            tls: t.tls.into(),
            tls_ca_file: t.tls_ca_file.clone(),
            allow_insecure_password: t.allow_insecure_password,
            socket: t.socket.clone(),
            created_by: t.created_by.clone(),
            created_at: iso_ms(t.created_at),
        }
    }
}

/// A new target (`POST /api/v1/db/targets`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct NewTarget {
    pub name: String,
    pub kind: Kind,
    pub host: String,
    pub port: i64,
    pub database: String,
    #[serde(default)]
    pub tls: BackendTls,
    /// The CA file of a `verify-full` target (see [`Target::tls_ca_file`]).
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// See [`Target::allow_insecure_password`].
    #[serde(default)]
    pub allow_insecure_password: bool,
    /// Reach the database over this Unix socket instead of TCP (see [`Target::socket`]).
    #[serde(default)]
    pub socket: Option<String>,
}

impl From<NewTarget> for db::NewTarget {
    fn from(n: NewTarget) -> Self {
        db::NewTarget {
            name: n.name,
            kind: n.kind.into(),
            host: n.host,
            port: n.port,
            database: n.database,
            tls: n.tls.into(),
            tls_ca_file: n.tls_ca_file,
            allow_insecure_password: n.allow_insecure_password,
            socket: n.socket,
        }
    }
}

/// A database account of a target (`POST /api/v1/db/targets/{name}/accounts`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct NewAccount {
    /// The database login name.
    pub account: String,
    /// The vault credential holding the password.
    #[serde(rename = "credentialId")]
    pub credential_id: i64,
    /// The attribute of that credential whose value is the password (name or numeric id).
    pub attribute: String,
}

impl From<NewAccount> for db::NewAccount {
    fn from(n: NewAccount) -> Self {
        db::NewAccount {
            account: n.account,
            credential_id: n.credential_id,
            attribute: n.attribute,
        }
    }
}

/// A registered account. Never carries the password.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Account {
    pub id: i64,
    pub target: String,
    pub account: String,
    #[serde(rename = "credentialId")]
    pub credential_id: i64,
    pub attribute: String,
    pub registered_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&db::Account> for Account {
    fn from(a: &db::Account) -> Self {
        Account {
            id: a.id,
            target: a.target.clone(),
            account: a.account.clone(),
            credential_id: a.credential_id,
            attribute: a.attribute.clone(),
            registered_by: a.registered_by.clone(),
            created_at: iso_ms(a.created_at),
        }
    }
}

/// What the API and the console show of an open session.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: String,
    pub user_id: String,
    pub account: String,
    /// The target's name.
    pub target: String,
    /// `postgres` or `mysql`.
    pub protocol: &'static str,
    pub client_ip: String,
    /// Unix milliseconds of the login.
    pub since: i64,
    /// Statement strings the session has sent (allowed and refused).
    pub statements: u64,
}

impl From<&db::SessionView> for SessionView {
    fn from(s: &db::SessionView) -> Self {
        SessionView {
            id: s.id.clone(),
            user_id: s.user_id.clone(),
            account: s.account.clone(),
            target: s.target.clone(),
            protocol: s.protocol,
            client_ip: s.client_ip.clone(),
            since: s.since,
            statements: s.statements,
        }
    }
}

/// A policy that matches the person, account, target and address, and its state now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchedPolicy {
    pub index: i64,
    pub policy_id: String,
    /// `in force`, `locked`, `not yet valid` or `expired`.
    pub state: &'static str,
    pub sql_privileges: Vec<String>,
}

impl From<&db::simulate::MatchedPolicy> for MatchedPolicy {
    fn from(p: &db::simulate::MatchedPolicy) -> Self {
        MatchedPolicy {
            index: p.index,
            policy_id: p.policy_id.clone(),
            state: p.state,
            sql_privileges: p.sql_privileges.clone(),
        }
    }
}

/// A needed privilege and the policy that grants it (`null`: none does).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantOut {
    pub privilege: String,
    pub policy_index: Option<i64>,
    pub policy_id: Option<String>,
}

impl From<&db::simulate::GrantOut> for GrantOut {
    fn from(g: &db::simulate::GrantOut) -> Self {
        GrantOut {
            privilege: g.privilege.clone(),
            policy_index: g.policy_index,
            policy_id: g.policy_id.clone(),
        }
    }
}

/// The simulator's answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
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

impl From<&db::Simulation> for Simulation {
    fn from(s: &db::Simulation) -> Self {
        Simulation {
            allowed: s.allowed,
            login_allowed: s.login_allowed,
            message: s.message.clone(),
            dialect: s.dialect,
            needs: s.needs.clone(),
            missing: s.missing.clone(),
            statements: s.statements,
            unclassifiable: s.unclassifiable.clone(),
            attribute_names: s.attribute_names.clone(),
            catalog_snapshot: s.catalog_snapshot,
            policies: all(&s.policies),
            granted_by: all(&s.granted_by),
        }
    }
}
