//! The gateway's own failures, and what a SQL client is told of them.
//!
//! [`BackendError`] is what can go wrong between the gateway and a database (reaching it,
//! TLS, logging in as the account, the gateway's own queries). Its `Display` carries the
//! detail (addresses, the database's own text, I/O errors) and goes to the server log only;
//! a client gets a [`ClientError`]: a stable SQLSTATE (PostgreSQL) or error number (MySQL),
//! and a message that says what happened and what to do, with the reference under which the
//! detail was logged.

use std::fmt;

/// What failed between the gateway and a database.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The database's address did not take the connection.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    /// A step with the database did not finish within the target's connect timeout.
    #[error("{step} timed out")]
    Timeout { step: String },
    /// The target requires TLS and the database does not offer it.
    #[error("{address} does not accept TLS, and the target requires it")]
    TlsNotOffered { address: String },
    /// The target's TLS settings cannot be used (CA file, host name).
    #[error("{0}")]
    TlsConfig(String),
    /// The TLS handshake failed (most often: the certificate did not verify).
    #[error("TLS to {address} failed: {source}")]
    Tls {
        address: String,
        source: std::io::Error,
    },
    /// The database asks for the password itself (or a replayable hash of it), and the
    /// target does not let the gateway send it this way.
    #[error(
        "the database asks for the password in {form} form, which the gateway sends only over TLS \
         whose certificate it verified: set the target's tls to \"verify-full\" with its CA file ({otherwise})"
    )]
    InsecurePassword {
        form: &'static str,
        otherwise: &'static str,
    },
    /// The database asks for an authentication method the gateway does not speak.
    #[error("the database asks for authentication method {method}, which Haechi does not support")]
    UnsupportedAuth { method: String },
    /// The database said no to the account's login (its text in `detail`).
    #[error("the database refused the login: {detail}")]
    LoginRefused { detail: String },
    /// SCRAM went wrong: the database did not prove it knows the password, or its messages
    /// did not fit the exchange.
    #[error("SCRAM: {0}")]
    Scram(String),
    /// The database sent what its protocol does not allow at that point.
    #[error("protocol: {0}")]
    Protocol(String),
    /// One of the gateway's own queries (session settings, catalog) failed in the database.
    #[error("the gateway's query failed in the database: {0}")]
    Query(String),
    /// Reading from or writing to the database failed.
    #[error("I/O with the database: {0}")]
    Io(#[from] std::io::Error),
}

/// An error as a SQL client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// PostgreSQL's SQLSTATE, also sent in MySQL's ERR packet.
    pub sqlstate: &'static str,
    /// MySQL's error number.
    pub mysql_code: u16,
    pub message: String,
}

impl ClientError {
    /// The SQLSTATE a MySQL client gets with [`ClientError::mysql_code`] (MySQL names a
    /// refused login `28000`, PostgreSQL `28P01`).
    pub fn mysql_sqlstate(&self) -> &'static str {
        match self.sqlstate {
            "28P01" => "28000",
            s => s,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.sqlstate, self.message)
    }
}

/// MySQL's ER_ACCESS_DENIED_ERROR: the person's own login is refused.
pub const ER_ACCESS_DENIED: u16 = 1045;
/// MySQL's ER_UNKNOWN_ERROR: the database behind the gateway could not be reached or refused
/// the gateway (MySQL has no number of its own for a proxy's failure).
pub const ER_BACKEND_FAILED: u16 = 1105;

impl BackendError {
    /// The stable SQLSTATE of this kind of failure: `08001` when no connection to the
    /// database could be made (address, timeout, TLS), `08004` when the database, or the
    /// gateway on its behalf, refused the login, `08006` when the connection failed during it.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            BackendError::Connect { .. }
            | BackendError::Timeout { .. }
            | BackendError::TlsNotOffered { .. }
            | BackendError::TlsConfig(_)
            | BackendError::Tls { .. } => "08001",
            BackendError::InsecurePassword { .. }
            | BackendError::UnsupportedAuth { .. }
            | BackendError::LoginRefused { .. }
            | BackendError::Scram(_) => "08004",
            BackendError::Protocol(_) | BackendError::Query(_) | BackendError::Io(_) => "08006",
        }
    }

    /// What a person can read and act on, without the database's or the system's own text.
    fn summary(&self) -> String {
        match self {
            BackendError::Connect { .. } => {
                "the database cannot be reached; an administrator can check that it runs and the target's host and port".into()
            }
            BackendError::Timeout { .. } => {
                "the database did not answer in time; try again, or ask an administrator to check it".into()
            }
            BackendError::TlsNotOffered { .. } => {
                "the database does not accept TLS, and the target requires it; an administrator must enable TLS on the database or change the target's tls".into()
            }
            BackendError::TlsConfig(_) => {
                "the target's TLS settings cannot be used (its CA file or host name); an administrator must correct the target".into()
            }
            BackendError::Tls { .. } => {
                "the TLS handshake with the database failed: its certificate did not verify against the target's CA file and host name, or no TLS version was agreed".into()
            }
            // The gateway's own rule, and what to change: no text of the database in it.
            e @ BackendError::InsecurePassword { .. } => e.to_string(),
            BackendError::UnsupportedAuth { .. } => {
                "the database asks for an authentication method the gateway does not support (PostgreSQL: SCRAM-SHA-256, MD5, password; MySQL: mysql_native_password, caching_sha2_password); an administrator must change the account's authentication".into()
            }
            BackendError::LoginRefused { .. } => {
                "the database refused the login of the account: its password in the credential vault may be out of date, or the database does not admit the account from the gateway".into()
            }
            BackendError::Scram(_) => {
                "the database did not prove that it knows the account's password (SCRAM), so the login was stopped".into()
            }
            BackendError::Protocol(_) | BackendError::Io(_) | BackendError::Query(_) => {
                "the connection to the database failed during the login; try again".into()
            }
        }
    }

    /// Logs the detail under a new reference and returns what the client of a session whose
    /// login to `target` as `account` failed is told.
    pub fn for_client(&self, target: &str, account: &str) -> ClientError {
        let reference = reference();
        tracing::warn!(
            reference = %reference,
            %target,
            %account,
            "database gateway: cannot log in to the database: {self}"
        );
        ClientError {
            sqlstate: self.sqlstate(),
            mysql_code: ER_BACKEND_FAILED,
            message: format!(
                "cannot log in to database target '{target}' as '{account}': {} (reference {reference}; the server log has the details)",
                self.summary()
            ),
        }
    }
}

/// Why a person's login to the gateway failed. Every message is safe to show the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoginFailed {
    /// The person may not log in (password, policy, unknown target or account).
    #[error("{0}")]
    Refused(String),
    /// The account's password could not be read from the vault.
    #[error("{0}")]
    Vault(String),
    /// The server is stopping and takes no login.
    #[error("the server is shutting down; connect again shortly")]
    ShuttingDown,
}

impl LoginFailed {
    /// The error the client gets.
    pub fn for_client(&self) -> ClientError {
        let (sqlstate, mysql_code) = match self {
            // invalid_password; MySQL's access denied (as the database itself answers).
            LoginFailed::Refused(_) => ("28P01", ER_ACCESS_DENIED),
            // The person was admitted; the gateway cannot act for them.
            LoginFailed::Vault(_) => ("08004", ER_BACKEND_FAILED),
            // cannot_connect_now
            LoginFailed::ShuttingDown => ("57P03", ER_BACKEND_FAILED),
        };
        ClientError {
            sqlstate,
            mysql_code,
            message: self.to_string(),
        }
    }
}

/// A short reference for a log line, to quote in what a client is told.
pub fn reference() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<BackendError> {
        let io = || std::io::Error::other("secret-detail 10.1.2.3:5432");
        vec![
            BackendError::Connect {
                address: "10.1.2.3:5432".into(),
                source: io(),
            },
            BackendError::Timeout {
                step: "connecting to 10.1.2.3:5432".into(),
            },
            BackendError::TlsNotOffered {
                address: "10.1.2.3:5432".into(),
            },
            BackendError::TlsConfig("cannot read the CA file /secret-detail/ca.pem".into()),
            BackendError::Tls {
                address: "10.1.2.3:5432".into(),
                source: io(),
            },
            BackendError::UnsupportedAuth {
                method: "secret-detail".into(),
            },
            BackendError::LoginRefused {
                detail: "password authentication failed for user \"secret-detail\"".into(),
            },
            BackendError::Scram("secret-detail".into()),
            BackendError::Protocol("secret-detail".into()),
            BackendError::Query("secret-detail".into()),
            BackendError::Io(io()),
        ]
    }

    #[test]
    fn clients_get_no_detail_only_a_reference() {
        for e in all() {
            let c = e.for_client("orders", "app");
            assert!(
                !c.message.contains("secret-detail") && !c.message.contains("10.1.2.3"),
                "{e:?} leaked into {c}"
            );
            assert!(
                c.message
                    .starts_with("cannot log in to database target 'orders' as 'app': "),
                "{c}"
            );
            let reference = c
                .message
                .split("(reference ")
                .nth(1)
                .and_then(|r| r.split(';').next())
                .unwrap_or_default();
            assert_eq!(reference.len(), 8, "{c}");
            assert!(reference.chars().all(|ch| ch.is_ascii_hexdigit()), "{c}");
            assert_eq!(c.mysql_code, ER_BACKEND_FAILED);
            assert!(e.to_string().contains("secret-detail") || e.to_string().contains("10.1.2.3"));
        }
    }

    #[test]
    fn codes_are_stable_per_kind() {
        let codes: Vec<&str> = all().iter().map(BackendError::sqlstate).collect();
        assert_eq!(
            codes,
            [
                "08001", "08001", "08001", "08001", "08001", "08004", "08004", "08004", "08006",
                "08006", "08006"
            ]
        );
        let insecure = BackendError::InsecurePassword {
            form: "MD5",
            otherwise: "or allow_insecure_password",
        };
        assert_eq!(insecure.sqlstate(), "08004");
        let c = insecure.for_client("t", "a");
        assert!(
            c.message.contains("in MD5 form") && c.message.contains("verify-full"),
            "{c}"
        );
    }

    #[test]
    fn two_failures_get_two_references() {
        let e = BackendError::Scram("x".into());
        assert_ne!(
            e.for_client("t", "a").message,
            e.for_client("t", "a").message
        );
    }

    #[test]
    fn login_failures_keep_their_message_and_get_their_code() {
        let refused = LoginFailed::Refused("no DBSAFER policy lets 'kim' use account 'app'".into());
        let c = refused.for_client();
        assert_eq!((c.sqlstate, c.mysql_code), ("28P01", ER_ACCESS_DENIED));
        assert_eq!(c.message, "no DBSAFER policy lets 'kim' use account 'app'");
        let c = LoginFailed::Vault("cannot read".into()).for_client();
        assert_eq!((c.sqlstate, c.mysql_code), ("08004", ER_BACKEND_FAILED));
        let c = LoginFailed::ShuttingDown.for_client();
        assert_eq!(c.sqlstate, "57P03");
        assert!(c.message.contains("shutting down"));
    }
}
