//! Database targets (the real servers behind the gateway) and their accounts. An account's
//! password is a vault credential attribute value: only the reference is stored here.

use haechi_store::{created_or_taken, in_tx, read, Store, Tx};
use haechi_types::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::policy::MAX_NAME;

/// Which wire protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Postgres,
    Mysql,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Mysql => "mysql",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "postgres" => Some(Kind::Postgres),
            "mysql" => Some(Kind::Mysql),
            _ => None,
        }
    }
}

/// TLS from the gateway to the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTls {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS required; the server's certificate is not verified (libpq's `sslmode=require`).
    /// The gateway does not send the account's password in clear or MD5 form over it.
    Require,
    /// TLS required; the server's certificate must chain to the target's `tls_ca_file` and
    /// name its `host` (libpq's `sslmode=verify-full`).
    VerifyFull,
}

impl BackendTls {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendTls::Disable => "disable",
            BackendTls::Require => "require",
            BackendTls::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str) -> BackendTls {
        match s {
            "require" => BackendTls::Require,
            "verify-full" => BackendTls::VerifyFull,
            _ => BackendTls::Disable,
        }
    }
}

/// A database server reachable through the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub tls_ca_file: Option<String>,
    /// Send the account's password in clear or MD5 form (PostgreSQL) or by MySQL full
    /// authentication even without `verify-full` TLS. Off: such logins are refused, since
    /// anyone in the middle would get the password.
    pub allow_insecure_password: bool,
    /// The Unix socket the gateway reaches the database by instead of TCP `host:port` (a
    /// gateway on the database's own machine); `host` and `port` stay the target's address.
    pub socket: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

impl Target {
    /// The socket file to connect to, when the target is reached over a Unix socket:
    /// PostgreSQL's `socket` is the directory (libpq's `host=/dir`), its file
    /// `.s.PGSQL.<port>` in it; MySQL's is the file itself (`mysql --socket`).
    pub fn socket_file(&self) -> Option<std::path::PathBuf> {
        let s = self.socket.as_deref()?;
        Some(match self.kind {
            Kind::Postgres => std::path::Path::new(s).join(format!(".s.PGSQL.{}", self.port)),
            Kind::Mysql => std::path::PathBuf::from(s),
        })
    }

    /// Whether the gateway may send the account's password itself (PostgreSQL cleartext or
    /// MD5, MySQL full authentication): over TLS whose certificate it verified, or when the
    /// target allows it explicitly.
    pub fn may_send_password(&self) -> bool {
        self.tls == BackendTls::VerifyFull || self.allow_insecure_password
    }

    /// Where the gateway connects to, for messages.
    pub fn address(&self) -> String {
        match self.socket_file() {
            Some(f) => f.display().to_string(),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// A new target (`POST /api/v1/db/targets`).
#[derive(Debug, Clone)]
pub struct NewTarget {
    pub name: String,
    pub kind: Kind,
    pub host: String,
    pub port: i64,
    pub database: String,
    pub tls: BackendTls,
    /// The CA file of a `verify-full` target (see [`Target::tls_ca_file`]).
    pub tls_ca_file: Option<String>,
    /// See [`Target::allow_insecure_password`].
    pub allow_insecure_password: bool,
    /// Reach the database over this Unix socket instead of TCP (see [`Target::socket`]).
    pub socket: Option<String>,
}

/// A database account of a target (`POST /api/v1/db/targets/{name}/accounts`).
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The database login name.
    pub account: String,
    /// The vault credential holding the password.
    pub credential_id: i64,
    /// The attribute of that credential whose value is the password (name or numeric id).
    pub attribute: String,
}

/// A registered account. Never carries the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub target: String,
    pub account: String,
    pub credential_id: i64,
    pub attribute: String,
    pub registered_by: String,
    pub created_at: i64,
}

fn name_field(field: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        return Err(Error::field(field, "is required and must not be blank"));
    }
    let n = v.chars().count();
    if n > MAX_NAME {
        return Err(Error::field(
            field,
            format_args!("must be at most {MAX_NAME} characters (got {n})"),
        ));
    }
    if v.chars().any(|c| c.is_control() || c == '@') {
        return Err(Error::field(
            field,
            "must not contain control characters or '@'",
        ));
    }
    Ok(())
}

pub(crate) fn validate_target(t: &NewTarget) -> Result<u16> {
    name_field("name", &t.name)?;
    haechi_types::ident::check_host("host", &t.host)?;
    if !(1..=65535).contains(&t.port) {
        return Err(Error::field(
            "port",
            format_args!("must be between 1 and 65535 (got {})", t.port),
        ));
    }
    if t.database.trim().is_empty() || t.database.chars().any(char::is_control) {
        return Err(Error::field(
            "database",
            "is required and must not be blank",
        ));
    }
    if let Some(socket) = &t.socket {
        validate_socket(t, socket)?;
    }
    validate_tls(t)?;
    Ok(t.port as u16)
}

/// `verify-full` takes a CA file that holds certificates now, and a host a certificate can
/// name; only `verify-full` takes a CA file.
fn validate_tls(t: &NewTarget) -> Result<()> {
    match (&t.tls, &t.tls_ca_file) {
        (BackendTls::VerifyFull, None) => Err(Error::field(
            "tls_ca_file",
            "is required with tls \"verify-full\": the PEM file of the CA certificates the database's certificate must chain to",
        )),
        (BackendTls::VerifyFull, Some(file)) => {
            if !file.starts_with('/') || file.chars().any(char::is_control) {
                return Err(Error::field("tls_ca_file", "must be an absolute path"));
            }
            crate::gateway::ca_roots(file).map_err(|e| Error::field("tls_ca_file", e))?;
            rustls::pki_types::ServerName::try_from(t.host.trim()).map_err(|_| {
                Error::field(
                    "host",
                    "must be a DNS name or an IP address that the database's certificate names (tls \"verify-full\")",
                )
            })?;
            Ok(())
        }
        (_, Some(_)) => Err(Error::field(
            "tls_ca_file",
            "is used only with tls \"verify-full\"",
        )),
        (_, None) => Ok(()),
    }
}

/// A Unix socket address holds at most 107 bytes of path (`sun_path`).
const MAX_SOCKET_PATH: usize = 107;

fn validate_socket(t: &NewTarget, socket: &str) -> Result<()> {
    if !socket.starts_with('/') || socket.chars().any(char::is_control) {
        return Err(Error::field(
            "socket",
            "must be an absolute path (PostgreSQL: the socket directory, MySQL: the socket file)",
        ));
    }
    if t.tls != BackendTls::Disable {
        return Err(Error::field(
            "socket",
            "a target reached over a Unix socket takes no TLS: set tls to \"disable\" or leave socket out",
        ));
    }
    let file = match t.kind {
        Kind::Postgres => format!("{}/.s.PGSQL.{}", socket.trim_end_matches('/'), t.port),
        Kind::Mysql => socket.to_owned(),
    };
    if file.len() > MAX_SOCKET_PATH {
        return Err(Error::field(
            "socket",
            format_args!(
                "the socket file {file} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket address holds"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn validate_account(a: &NewAccount) -> Result<()> {
    name_field("account", &a.account)?;
    if a.attribute.trim().is_empty() {
        return Err(Error::field("attribute", "is required"));
    }
    if a.credential_id <= 0 {
        return Err(Error::field(
            "credentialId",
            "must be a credential id (a positive number)",
        ));
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct TargetRow {
    id: i64,
    name: String,
    kind: String,
    host: String,
    port: i64,
    database: String,
    tls: String,
    tls_ca_file: Option<String>,
    allow_insecure_password: bool,
    socket: Option<String>,
    created_by: String,
    created_at: i64,
}

impl TargetRow {
    fn into_target(self) -> Result<Target> {
        Ok(Target {
            id: self.id,
            kind: Kind::parse(&self.kind).ok_or_else(|| {
                Error::internal(format_args!("target {} has kind {}", self.id, self.kind))
            })?,
            name: self.name,
            host: self.host,
            port: u16::try_from(self.port).unwrap_or(0),
            database: self.database,
            tls: BackendTls::parse(&self.tls),
            tls_ca_file: self.tls_ca_file,
            allow_insecure_password: self.allow_insecure_password,
            socket: self.socket,
            created_by: self.created_by,
            created_at: self.created_at,
        })
    }
}

const TARGET_COLS: &str =
    "id, name, kind, host, port, database, tls, tls_ca_file, allow_insecure_password, socket, created_by, created_at";

pub(crate) async fn insert_target(
    tx: &mut Tx,
    t: &NewTarget,
    port: u16,
    by: &str,
    now: i64,
) -> Result<Target> {
    let r = in_tx!(tx, |c| {
        sqlx::query_scalar::<_, i64>(
        "INSERT INTO db_targets (name, kind, host, port, database, tls, socket, created_by, created_at, updated_at, \
         tls_ca_file, allow_insecure_password) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11) RETURNING id"
    )
    .bind(&t.name)
    .bind(t.kind.as_str())
    .bind(t.host.trim())
    .bind(i64::from(port))
    .bind(&t.database)
    .bind(t.tls.as_str())
    .bind(t.socket.as_deref().map(socket_dir))
    .bind(by)
    .bind(now)
    .bind(t.tls_ca_file.as_deref())
    .bind(t.allow_insecure_password)
    .fetch_one(&mut *c)
    .await
    });
    let id = created_or_taken(r, || {
        Error::conflict(format!("a target named '{}' already exists", t.name))
    })?;
    Ok(Target {
        id,
        name: t.name.clone(),
        kind: t.kind,
        host: t.host.trim().to_owned(),
        port,
        database: t.database.clone(),
        tls: t.tls,
        tls_ca_file: t.tls_ca_file.clone(),
        allow_insecure_password: t.allow_insecure_password,
        socket: t.socket.as_deref().map(|s| socket_dir(s).to_owned()),
        created_by: by.to_owned(),
        created_at: now,
    })
}

/// A socket path as stored: without trailing slashes (`/` stays `/`).
fn socket_dir(s: &str) -> &str {
    match s.trim_end_matches('/') {
        "" => "/",
        t => t,
    }
}

pub(crate) async fn list_targets(store: &Store) -> Result<Vec<Target>> {
    let sql = format!("SELECT {TARGET_COLS} FROM db_targets ORDER BY name");
    let rows: Vec<TargetRow> = read!(store, |db| sqlx::query_as(&sql).fetch_all(db).await)?;
    rows.into_iter().map(TargetRow::into_target).collect()
}

pub(crate) async fn find_target(store: &Store, name: &str) -> Result<Option<Target>> {
    let sql = format!("SELECT {TARGET_COLS} FROM db_targets WHERE name = $1");
    let row: Option<TargetRow> = read!(store, |db| sqlx::query_as(&sql)
        .bind(name)
        .fetch_optional(db)
        .await)?;
    row.map(TargetRow::into_target).transpose()
}

pub(crate) async fn delete_target(tx: &mut Tx, name: &str) -> Result<bool> {
    let n = in_tx!(tx, |c| sqlx::query(
        "DELETE FROM db_targets WHERE name = $1"
    )
    .bind(name)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: i64,
    target: String,
    account: String,
    credential_id: i64,
    attribute: String,
    registered_by: String,
    created_at: i64,
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Account {
        Account {
            id: r.id,
            target: r.target,
            account: r.account,
            credential_id: r.credential_id,
            attribute: r.attribute,
            registered_by: r.registered_by,
            created_at: r.created_at,
        }
    }
}

const ACCOUNT_SELECT: &str =
    "SELECT a.id, t.name AS target, a.account, a.credential_id, a.attribute, \
     a.registered_by, a.created_at FROM db_accounts a JOIN db_targets t ON t.id = a.target_id";

pub(crate) async fn insert_account(
    tx: &mut Tx,
    target: &Target,
    a: &NewAccount,
    by: &str,
    now: i64,
) -> Result<Account> {
    let r = in_tx!(tx, |c| {
        sqlx::query_scalar::<_, i64>(
        "INSERT INTO db_accounts (target_id, account, credential_id, attribute, registered_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"
    )
    .bind(target.id)
    .bind(&a.account)
    .bind(a.credential_id)
    .bind(&a.attribute)
    .bind(by)
    .bind(now)
    .fetch_one(&mut *c)
    .await
    });
    let id = created_or_taken(r, || {
        Error::conflict(format!(
            "target '{}' already has an account '{}'; delete it first to register it again",
            target.name, a.account
        ))
    })?;
    Ok(Account {
        id,
        target: target.name.clone(),
        account: a.account.clone(),
        credential_id: a.credential_id,
        attribute: a.attribute.clone(),
        registered_by: by.to_owned(),
        created_at: now,
    })
}

pub(crate) async fn list_accounts(store: &Store, target: &str) -> Result<Vec<Account>> {
    let sql = format!("{ACCOUNT_SELECT} WHERE t.name = $1 ORDER BY a.account");
    let rows: Vec<AccountRow> = read!(store, |db| sqlx::query_as(&sql)
        .bind(target)
        .fetch_all(db)
        .await)?;
    Ok(rows.into_iter().map(Account::from).collect())
}

pub(crate) async fn find_account(
    store: &Store,
    target: &str,
    account: &str,
) -> Result<Option<Account>> {
    let sql = format!("{ACCOUNT_SELECT} WHERE t.name = $1 AND a.account = $2");
    let row: Option<AccountRow> = read!(store, |db| sqlx::query_as(&sql)
        .bind(target)
        .bind(account)
        .fetch_optional(db)
        .await)?;
    Ok(row.map(Account::from))
}

pub(crate) async fn delete_account(tx: &mut Tx, target_id: i64, account: &str) -> Result<bool> {
    let n = in_tx!(tx, |c| sqlx::query(
        "DELETE FROM db_accounts WHERE target_id = $1 AND account = $2"
    )
    .bind(target_id)
    .bind(account)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}
