//! The credential vault (CONTRACT §5): the engine behind the Control Room 11.3
//! `/v2/credentialvault` API. It knows nothing of JSON; the HTTP layer maps its objects onto the
//! product's shapes.
//!
//! - `crypto`: AES-256-GCM values under data keys wrapped by an HKDF-derived KEK.
//! - `keys`: the master key's life: first start, Express and Manual modes, unseal, data key
//!   rotation and master key change.
//! - `credentials`, `values`, `lockers`: the operations, each checking access (`access`) and
//!   auditing in the transaction of its change.
//! - `views`: read models for the web console (what the caller may do; which values exist,
//!   without reading them).
//! - value reads are audited through a [`haechi_audit::Batcher`] (the hot path; see
//!   [`Vault::read_values`]).
//!
//! While unsealed, the data keys are kept unwrapped in memory so a value read is one indexed
//! query for access, one for the values, and an AES-GCM decryption.

mod access;
mod credentials;
pub mod crypto;
mod error;
mod keys;
mod lockers;
mod model;
mod sql;
mod values;
mod views;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use haechi_store::Store;
use haechi_types::Result;
use secrecy::{ExposeSecret, SecretString};

pub use error::{VaultError, SEALED_MESSAGE};
pub use keys::{check_keys_offline, OfflineKeyCheck};
pub use model::*;
pub use views::{CredentialStanding, LockerStanding, ValueInfo};

use crate::crypto::MasterKey;
use crate::keys::Keyring;

/// Name of the Express-mode key file in the data directory.
pub const KEY_FILE: &str = "vault.key";

/// The name of the value reads' audit spool (`haechi_audit::BatcherOptions::spool`): what a
/// killed server left in it is appended when the next one starts.
const AUDIT_SPOOL: &str = "vault";

/// Limits the product documents (credential name ≤ 50, description ≤ 255, ≤ 50 attributes), and
/// Haechi's own for the rest.
pub mod limits {
    pub const NAME_CHARS: usize = 50;
    pub const DESCRIPTION_CHARS: usize = 255;
    pub const ATTRIBUTES: usize = 50;
    /// A value, in bytes of UTF-8 (room for a PEM private key).
    pub const VALUE_BYTES: usize = 16 * 1024;
    /// Values in one create request.
    pub const VALUES_PER_REQUEST: usize = 100;
    /// Names in one `names=` filter.
    pub const NAMES_PER_FILTER: usize = 100;
    /// Rendered credential lists kept in memory, in bytes in all, and the number of lists
    /// expected there (see `Vault::list_credentials_rendered`).
    pub const LIST_CACHE_BYTES: u64 = 16 * 1024 * 1024;
    pub const LIST_CACHE_ENTRIES: usize = 512;
}

/// How to open the vault.
pub struct VaultOptions {
    /// The server's data directory (the Express key file lives there).
    pub data_dir: PathBuf,
    /// `HAECHI_VAULT_MASTER_KEY`: 32 random bytes in base64.
    pub master_key: Option<SecretString>,
    /// `audit.durability`: whether a value read answers only once its event is committed.
    pub audit_durability: haechi_audit::Durability,
}

/// The vault. One per server.
pub struct Vault {
    store: Store,
    key_file: PathBuf,
    env_key: Option<MasterKey>,
    /// `None` while sealed.
    keyring: RwLock<Option<Arc<Keyring>>>,
    /// Serialises key operations (unseal, mode, rotation, rekey) on this server.
    admin: tokio::sync::Mutex<()>,
    /// Value-read audit events, appended in batches (see [`Vault::read_values`]).
    reads: haechi_audit::Batcher,
    /// Rendered credential lists (see [`Vault::list_credentials_rendered`]).
    lists: credentials::ListCache,
}

impl Vault {
    /// Opens the vault: at the very first start creates its keys (Express mode, with the key
    /// from the environment or a new key file), later unseals it in Express mode or leaves it
    /// sealed in Manual mode. A key that does not match leaves it sealed (logged), it does not
    /// stop the server. A malformed `HAECHI_VAULT_MASTER_KEY` is an error.
    pub async fn open(store: Store, opts: VaultOptions) -> Result<Vault> {
        let env_key = match &opts.master_key {
            Some(text) => Some(MasterKey::parse(text.expose_secret()).map_err(|e| {
                haechi_types::Error::invalid(format!("HAECHI_VAULT_MASTER_KEY: {e}"))
            })?),
            None => None,
        };
        let vault = Vault {
            reads: haechi_audit::Batcher::start(
                store.clone(),
                haechi_audit::BatcherOptions {
                    durability: opts.audit_durability,
                    spool: Some(AUDIT_SPOOL),
                    ..Default::default()
                },
            ),
            store,
            key_file: opts.data_dir.join(KEY_FILE),
            env_key,
            keyring: RwLock::new(None),
            admin: tokio::sync::Mutex::new(()),
            lists: credentials::list_cache(),
        };
        vault.start().await?;
        Ok(vault)
    }

    /// Stops taking value reads and waits until every queued read event is committed. Call
    /// after the HTTP server has drained and before closing the store.
    pub async fn shutdown(&self) {
        self.reads.shutdown().await;
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// A name: 1–50 characters, not blank, no control or invisible characters, in NFKC form.
pub(crate) fn check_name(field: &str, value: &str) -> Result<()> {
    use haechi_types::Error;
    if value.trim().is_empty() {
        return Err(Error::field(field, "is required and must not be blank"));
    }
    let n = value.chars().count();
    if n > limits::NAME_CHARS {
        return Err(Error::field(
            field,
            format_args!(
                "must be at most {} characters (got {n})",
                limits::NAME_CHARS
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::field(field, "must not contain control characters"));
    }
    // No invisible characters or compatibility look-alikes (issue 18 item 11).
    haechi_types::ident::check(
        field,
        value,
        limits::NAME_CHARS,
        haechi_types::ident::Spaces::Free,
    )
}

/// A description: at most 255 characters; line breaks and tabs allowed, other control
/// characters not.
pub(crate) fn check_description(field: &str, value: &str) -> Result<()> {
    use haechi_types::Error;
    let n = value.chars().count();
    if n > limits::DESCRIPTION_CHARS {
        return Err(Error::field(
            field,
            format_args!(
                "must be at most {} characters (got {n})",
                limits::DESCRIPTION_CHARS
            ),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Error::field(
            field,
            "must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(())
}
