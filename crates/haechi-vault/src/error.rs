//! The vault's own failures, and how they map onto Haechi's error table.

use haechi_types::{Code, Error};

use crate::crypto::CryptoError;

/// What a caller sees while the vault is sealed (CONTRACT §5: the message says how to unseal).
pub const SEALED_MESSAGE: &str = "the credential vault is sealed: apply the master key with \
     PUT /v2/credentialvault/keys/private {\"privateKey\":\"<master key>\"} (or run 'haechi vault unseal')";

/// Failures particular to the vault. Everything else is a plain [`haechi_types::Error`].
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No master key applied on this server (Manual mode after a start, or a key mismatch).
    #[error("{}", SEALED_MESSAGE)]
    Sealed,
    /// A key given in a request is not 32 bytes of base64.
    #[error("{field}: {source}")]
    KeyFormat { field: String, source: CryptoError },
    /// A well-formed key that is not this vault's master key.
    #[error("{field}: is not this vault's master key")]
    WrongKey { field: String },
    /// A stored value failed to authenticate: altered, or moved from another row. The detail
    /// goes to the server log only.
    #[error("value {value} (credential {credential}, attribute {attribute}) failed to decrypt: {source}")]
    Corrupt {
        value: i64,
        credential: i64,
        attribute: i64,
        source: CryptoError,
    },
    /// A wrapped data key that the current KEK cannot open.
    #[error("data key {key} cannot be unwrapped with the master key: {source}")]
    CorruptDataKey { key: i64, source: CryptoError },
}

impl From<VaultError> for Error {
    fn from(e: VaultError) -> Error {
        match &e {
            VaultError::Sealed => Error::new(Code::Unavailable, SEALED_MESSAGE),
            VaultError::KeyFormat { field, source } => Error::field(field.clone(), source),
            VaultError::WrongKey { field } => Error::field(
                field.clone(),
                "is not this vault's master key (the key was refused; nothing changed)",
            ),
            // Logged with the details under a reference; the client sees what happened, the
            // reference and no detail.
            VaultError::Corrupt { .. } => {
                let mut err = Error::internal(format_args!("vault integrity failure: {e}"));
                err.message = format!(
                    "a stored vault value failed its integrity check: it was altered, moved or rolled back \
                     in the store (audit event credential.value.integrity; overwriting the value repairs it). {}",
                    err.message
                );
                err
            }
            // `internal` logs the cause under a reference and shows the client only that.
            VaultError::CorruptDataKey { .. } => {
                Error::internal(format_args!("vault data corruption: {e}"))
            }
        }
    }
}
