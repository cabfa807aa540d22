//! The error table: every failure Haechi reports has a stable code, an HTTP status and a message a
//! person can act on. Internal failures keep their cause in the server log only.

use std::fmt;

/// Stable error codes. The string form is part of the API (clients may match on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A field is missing, has the wrong type, or a value is out of range.
    InvalidRequest,
    /// The body is not valid JSON / form data.
    MalformedBody,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// The content type is not one this route accepts.
    UnsupportedMediaType,
    /// No token, or the token is unknown, expired or revoked.
    Unauthenticated,
    /// Wrong user id or password (the message never says which).
    LoginFailed,
    /// The account is locked (failed logins, inactivity) or disabled.
    AccountLocked,
    /// The caller is authenticated but lacks the permission.
    Forbidden,
    /// The caller's address is outside the user's allow-list.
    IpNotAllowed,
    /// The object does not exist (or the caller may not know it exists).
    NotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// The request conflicts with the current state (version mismatch, duplicate, wrong state).
    Conflict,
    /// The object is locked by someone else (a workflow's edit lock).
    Locked,
    /// An update that changes nothing.
    NotModified,
    /// The vault is sealed, or a dependency is not ready.
    Unavailable,
    /// A bug or an infrastructure failure; details are only in the server log.
    Internal,
}

impl Code {
    pub fn status(self) -> u16 {
        match self {
            Code::InvalidRequest | Code::MalformedBody => 400,
            Code::PayloadTooLarge => 413,
            Code::UnsupportedMediaType => 415,
            Code::Unauthenticated | Code::LoginFailed | Code::AccountLocked => 401,
            Code::Forbidden | Code::IpNotAllowed => 403,
            Code::NotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::Conflict => 409,
            Code::Locked => 423,
            Code::NotModified => 304,
            Code::Unavailable => 503,
            Code::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::MalformedBody => "malformed_body",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::Unauthenticated => "unauthenticated",
            Code::LoginFailed => "login_failed",
            Code::AccountLocked => "account_locked",
            Code::Forbidden => "forbidden",
            Code::IpNotAllowed => "ip_not_allowed",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Conflict => "conflict",
            Code::Locked => "locked",
            Code::NotModified => "not_modified",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }
}

/// A failure to report to a client. `message` is always safe to show.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Error {
    pub code: Code,
    pub message: String,
    /// The request field the error is about, when there is one (`roles[1]`, `password`).
    pub field: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A 400 about one field: the message names the field and says what is allowed.
    pub fn field(field: impl Into<String>, message: impl fmt::Display) -> Self {
        let field = field.into();
        Self {
            code: Code::InvalidRequest,
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, message)
    }

    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(Code::NotFound, format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Code::Conflict, message)
    }

    pub fn locked(message: impl Into<String>) -> Self {
        Self::new(Code::Locked, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    /// An internal failure: the cause goes to the server log under a reference the client sees,
    /// never to the client itself.
    pub fn internal(cause: impl fmt::Display) -> Self {
        let reference: u32 = rand::random();
        tracing::error!(
            reference = format_args!("{reference:08x}"),
            "internal error: {cause}"
        );
        Self::new(
            Code::Internal,
            format!("internal error (reference {reference:08x}); the server log has the details"),
        )
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if store_unreachable(&e) {
            // The request is refused whole (nothing was committed): a clear 503 the client
            // can retry, never the driver's text.
            tracing::debug!("store unreachable: {e}");
            return Error::unavailable(
                "the database is unreachable (restarting or failing over); nothing was changed, try again shortly",
            );
        }
        Error::internal(format_args!("store: {e}"))
    }
}

/// Whether `e` means the database cannot be reached right now (no connection within the
/// acquire timeout, a connection lost, PostgreSQL shutting down or starting up), as opposed
/// to a statement that failed.
pub fn store_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // Class 08 (connection exception), 57P01..57P03 (admin/crash shutdown, cannot
            // connect now), 53300 (too many connections).
            c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::internal(format_args!("json: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_store_is_503_without_the_driver_text() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "Connection refused (os error 111) to 10.0.0.5:5432",
            )),
        ] {
            assert!(store_unreachable(&e), "{e}");
            let err = Error::from(e);
            assert_eq!(err.code, Code::Unavailable);
            assert_eq!(err.code.status(), 503);
            assert!(!err.message.contains("10.0.0.5"), "{}", err.message);
        }
        for e in [
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("x".into()),
        ] {
            assert!(!store_unreachable(&e), "{e}");
            assert_eq!(Error::from(e).code, Code::Internal);
        }
    }
}
