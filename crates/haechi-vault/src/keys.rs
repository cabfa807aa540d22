//! The master key's life: first start, Express and Manual modes, unsealing, data key rotation
//! and master key changes.
//!
//! The store holds the mode, the KEK salt, the key check and the wrapped data keys (table
//! `vault_state` and `vault_data_keys`); the master key itself is only ever in this process's
//! memory, in the environment, or in the Express key file (mode 0600) in the data directory.
//! Several servers on one PostgreSQL each unseal themselves; the mode and the keys in the store
//! are shared.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use haechi_audit::{Event, Outcome};
use haechi_identity::Caller;
use haechi_store::{in_tx, read, Delivery, Signal, Tx};
use haechi_types::{time::now_ms, Error, Result};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::crypto::{new_salt, DataKey, Kek, MasterKey, Slot};
use crate::error::VaultError;
use crate::model::{KeySource, Mode, Rekey, Rotation, Status};
use crate::Vault;

/// The unsealed vault's keys.
pub(crate) struct Keyring {
    master: MasterKey,
    salt: Vec<u8>,
    kek: Kek,
    source: KeySource,
    /// Unwrapped data keys by id, loaded on first use.
    data_keys: RwLock<HashMap<i64, Arc<DataKey>>>,
}

impl Keyring {
    fn new(master: MasterKey, salt: Vec<u8>, source: KeySource) -> Keyring {
        let kek = master.kek(&salt);
        Keyring {
            master,
            salt,
            kek,
            source,
            data_keys: RwLock::new(HashMap::new()),
        }
    }

    fn cached(&self, id: i64) -> Option<Arc<DataKey>> {
        self.data_keys.read().ok()?.get(&id).cloned()
    }

    fn remember(&self, id: i64, key: Arc<DataKey>) {
        if let Ok(mut m) = self.data_keys.write() {
            m.insert(id, key);
        }
    }

    fn cached_ids(&self) -> Vec<i64> {
        self.data_keys
            .read()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    fn forget(&self, ids: &[i64]) {
        if let Ok(mut m) = self.data_keys.write() {
            m.retain(|k, _| !ids.contains(k));
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct StateRow {
    mode: String,
    kek_salt: Vec<u8>,
    key_check: Vec<u8>,
    active_key_id: i64,
}

impl StateRow {
    fn mode(&self) -> Result<Mode> {
        Mode::parse(&self.mode)
            .ok_or_else(|| Error::internal(format_args!("vault_state.mode is {:?}", self.mode)))
    }
}

const STATE_COLS: &str = "mode, kek_salt, key_check, active_key_id";

/// The slot of a secret sealed outside the vault's tables: negative credential and attribute
/// ids (no value row has them) and the context's FNV-1a hash as the value id.
/// The tables outside the vault that hold values sealed with [`Vault::seal_secret`] (a
/// `key_id` column naming the data key): a running workflow's password parameters and the
/// OPMATE file repository's encrypted files. A rotation re-encrypts the vault's own values at
/// once; the keys these rows reference are kept for opening them (like a key version kept for
/// decryption only) until the rows are gone — a run's secrets when it ends, a file when it is
/// replaced or deleted.
const SEALED_ELSEWHERE: &[&str] = &["workflow_secret_params", "opmate_files"];

fn context_slot(context: &str, key: i64) -> Slot {
    let h = context.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Slot {
        value: h as i64,
        credential: -1,
        attribute: -1,
        user: 0,
        version: 0,
        key,
    }
}

fn system_event(action: &str) -> Event {
    Event::new(haechi_audit::Family::Vault, action).by("system", None)
}

/// Reads the key file; `Ok(None)` when there is none.
fn read_key_file(path: &Path) -> Result<Option<MasterKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => SecretString::from(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::internal(format_args!(
                "cannot read the vault key file {}: {e}",
                path.display()
            )))
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "the vault key file {} is readable by other users; make it mode 0600",
                    path.display()
                );
            }
        }
    }
    MasterKey::parse(text.expose_secret())
        .map(Some)
        .map_err(|e| {
            Error::invalid(format!(
                "the vault key file {} is not a master key: {e}",
                path.display()
            ))
        })
}

/// Writes the key file with mode 0600 (a temporary file renamed over the old one, so a crash
/// never leaves half a key).
fn write_key_file(path: &Path, key: &MasterKey) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut f = options.open(&tmp)?;
        let text = key.to_base64();
        f.write_all(text.expose_secret().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::internal(format_args!(
            "cannot write the vault key file {}: {e}",
            path.display()
        ))
    })
}

fn remove_key_file(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::internal(format_args!(
            "cannot delete the vault key file {}: {e}; delete it by hand",
            path.display()
        ))),
    }
}

/// Stores a data key wrapped under `kek`, bound to its new id: the row is inserted first to
/// learn the id, then its wrapped key written (both in `tx`).
async fn insert_data_key(tx: &mut Tx, kek: &Kek, key: &DataKey, now: i64) -> Result<i64> {
    let id: i64 = in_tx!(tx, |c| sqlx::query_scalar(
        "INSERT INTO vault_data_keys (wrapped, created_at) VALUES ($1, $2) RETURNING id"
    )
    .bind(Vec::<u8>::new())
    .bind(now)
    .fetch_one(&mut *c)
    .await)?;
    in_tx!(tx, |c| sqlx::query(
        "UPDATE vault_data_keys SET wrapped = $1 WHERE id = $2"
    )
    .bind(kek.wrap(key, id))
    .bind(id)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(id)
}

/// ` FOR UPDATE` (exclusive) or ` FOR SHARE` on PostgreSQL; nothing on SQLite (one writer).
fn state_lock(tx: &Tx, exclusive: bool) -> &'static str {
    if exclusive {
        tx.backend().for_update()
    } else {
        tx.backend().for_share()
    }
}

impl Vault {
    pub(crate) async fn start(&self) -> Result<()> {
        match self.load_state().await? {
            None => self.initialize().await,
            Some(state) => match state.mode()? {
                Mode::Manual => {
                    if self.env_key.is_some() {
                        tracing::warn!(
                            "the vault is in Manual mode: HAECHI_VAULT_MASTER_KEY is not used to unseal it"
                        );
                    }
                    tracing::warn!("Manual mode: {}", crate::SEALED_MESSAGE);
                    Ok(())
                }
                Mode::Express => self.unseal_at_start(&state).await,
            },
        }
    }

    /// Seals a secret that lives outside the vault's tables (a workflow run's password
    /// parameter) with the active data key, bound to `context` (for instance
    /// `workflow-param:<name>`) as associated data. Returns the data key's id, the nonce and
    /// the ciphertext. Sealed vault → 503.
    pub async fn seal_secret(
        &self,
        context: &str,
        plaintext: &[u8],
    ) -> Result<(i64, Vec<u8>, Vec<u8>)> {
        let ring = self.keyring()?;
        let state = self
            .load_state()
            .await?
            .ok_or_else(|| Error::internal("vault_state is missing"))?;
        let key = self.data_key(&ring, state.active_key_id).await?;
        let sealed = key.seal(plaintext, context_slot(context, state.active_key_id));
        Ok((state.active_key_id, sealed.nonce, sealed.ciphertext))
    }

    /// Opens what [`Vault::seal_secret`] sealed for the same `context`. Sealed vault → 503;
    /// a data key retired since (a rotation) or altered bytes → an error saying so.
    pub async fn open_secret(
        &self,
        context: &str,
        key_id: i64,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<SecretString> {
        let plain = self
            .open_secret_bytes(context, key_id, nonce, ciphertext)
            .await?;
        let text = String::from_utf8(plain.to_vec())
            .map_err(|_| Error::conflict("the sealed value is not text"))?;
        Ok(SecretString::from(text))
    }

    /// [`Vault::open_secret`] for bytes that need not be text (files of the OPMATE file
    /// repository).
    pub async fn open_secret_bytes(
        &self,
        context: &str,
        key_id: i64,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let ring = self.keyring()?;
        let key = match self.data_key(&ring, key_id).await {
            Ok(k) => k,
            Err(e) if e.code == haechi_types::Code::Internal => {
                return Err(Error::conflict(format!(
                    "the value was sealed with vault data key {key_id}, which no longer exists (the data key was rotated)"
                )))
            }
            Err(e) => return Err(e),
        };
        key.open(nonce, ciphertext, context_slot(context, key_id))
            .map_err(|_| Error::conflict("the sealed value could not be opened (altered or moved)"))
    }

    async fn load_state(&self) -> Result<Option<StateRow>> {
        let sql = format!("SELECT {STATE_COLS} FROM vault_state WHERE id = 1");
        Ok(read!(self.store, |db| sqlx::query_as(&sql)
            .fetch_optional(db)
            .await)?)
    }

    async fn state_tx(tx: &mut Tx, exclusive: bool) -> Result<StateRow> {
        let sql = format!(
            "SELECT {STATE_COLS} FROM vault_state WHERE id = 1{}",
            state_lock(tx, exclusive)
        );
        let row: Option<StateRow> =
            in_tx!(tx, |c| sqlx::query_as(&sql).fetch_optional(&mut *c).await)?;
        row.ok_or_else(|| Error::internal("vault_state is missing"))
    }

    /// The first start: a master key (from the environment, an existing key file, or new and
    /// written to the key file), a salt, the key check and the first data key.
    async fn initialize(&self) -> Result<()> {
        let (master, source, wrote_file) = match (&self.env_key, read_key_file(&self.key_file)?) {
            (Some(k), _) => (k.clone(), KeySource::Environment, false),
            (None, Some(k)) => (k, KeySource::File, false),
            (None, None) => {
                let k = MasterKey::generate();
                write_key_file(&self.key_file, &k)?;
                (k, KeySource::File, true)
            }
        };
        let salt = new_salt();
        let check = master.check_value(&salt);
        let kek = master.kek(&salt);
        let data_key = DataKey::generate();
        let now = now_ms();

        let created = async {
            let mut tx = self.store.begin().await?;
            let key_id = insert_data_key(&mut tx, &kek, &data_key, now).await?;
            let inserted = in_tx!(tx, |c| sqlx::query(
                "INSERT INTO vault_state (id, mode, kek_salt, key_check, active_key_id, created_at, updated_at) \
                 VALUES (1, 'Express', $1, $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING"
            )
            .bind(&salt)
            .bind(&check)
            .bind(key_id)
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
            if inserted == 0 {
                return Ok::<_, Error>(None);
            }
            haechi_audit::append(
                &mut tx,
                system_event("vault.initialize").detail(json!({ "mode": "Express", "key_source": source.as_str() })),
            )
            .await?;
            tx.commit().await?;
            Ok(Some(key_id))
        }
        .await;

        match created {
            Ok(Some(key_id)) => {
                let ring = Keyring::new(master, salt, source);
                ring.remember(key_id, Arc::new(data_key));
                self.set_keyring(Some(Arc::new(ring)))?;
                tracing::info!(
                    key_source = source.as_str(),
                    "vault initialized in Express mode{}",
                    if wrote_file {
                        format!("; master key kept in {}", self.key_file.display())
                    } else {
                        String::new()
                    }
                );
                Ok(())
            }
            // Another server sharing the store initialized it first: use its keys.
            Ok(None) => {
                if wrote_file {
                    remove_key_file(&self.key_file)?;
                }
                Box::pin(self.start()).await
            }
            Err(e) => {
                if wrote_file {
                    let _ = remove_key_file(&self.key_file);
                }
                Err(e)
            }
        }
    }

    /// Express mode at start: unseal with the environment's key or the key file's.
    async fn unseal_at_start(&self, state: &StateRow) -> Result<()> {
        let (key, source) = match &self.env_key {
            Some(k) => (k.clone(), KeySource::Environment),
            None => match read_key_file(&self.key_file)? {
                Some(k) => (k, KeySource::File),
                None => {
                    tracing::error!(
                        "the vault is in Express mode but this server has no master key (no HAECHI_VAULT_MASTER_KEY and no {}): \
                         it stays sealed; {}",
                        self.key_file.display(),
                        crate::SEALED_MESSAGE
                    );
                    return Ok(());
                }
            },
        };
        if !key.matches(&state.kek_salt, &state.key_check) {
            tracing::error!(
                key_source = source.as_str(),
                "the vault master key from the {} does not match this vault: it stays sealed; {}",
                match source {
                    KeySource::Environment => "environment (HAECHI_VAULT_MASTER_KEY)",
                    _ => "key file",
                },
                crate::SEALED_MESSAGE
            );
            return Ok(());
        }
        self.set_keyring(Some(Arc::new(Keyring::new(
            key,
            state.kek_salt.clone(),
            source,
        ))))?;
        tracing::info!(
            key_source = source.as_str(),
            "vault unsealed (Express mode)"
        );
        Ok(())
    }

    fn set_keyring(&self, ring: Option<Arc<Keyring>>) -> Result<()> {
        *self
            .keyring
            .write()
            .map_err(|_| Error::internal("vault keyring lock poisoned"))? = ring;
        Ok(())
    }

    /// The keys, or 503 while sealed.
    pub(crate) fn keyring(&self) -> Result<Arc<Keyring>> {
        self.keyring
            .read()
            .map_err(|_| Error::internal("vault keyring lock poisoned"))?
            .clone()
            .ok_or_else(|| VaultError::Sealed.into())
    }

    /// Whether this server holds the master key (`GET keys/private`).
    pub fn applied(&self) -> bool {
        self.keyring.read().map(|k| k.is_some()).unwrap_or(false)
    }

    /// The mode, from the store (shared by every server on it).
    pub async fn mode(&self) -> Result<Mode> {
        self.load_state()
            .await?
            .ok_or_else(|| Error::internal("vault_state is missing"))?
            .mode()
    }

    /// A data key by id, unwrapped on first use. `Sealed` if the master key this server holds
    /// no longer matches the store (another server changed it).
    pub(crate) async fn data_key(&self, ring: &Arc<Keyring>, id: i64) -> Result<Arc<DataKey>> {
        if let Some(k) = ring.cached(id) {
            return Ok(k);
        }
        let wrapped: Option<Vec<u8>> = read!(self.store, |db| sqlx::query_scalar(
            "SELECT wrapped FROM vault_data_keys WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(db)
        .await)?;
        let wrapped = wrapped
            .ok_or_else(|| Error::internal(format_args!("vault data key {id} is missing")))?;
        match ring.kek.unwrap(&wrapped, id) {
            Ok(k) => {
                let k = Arc::new(k);
                ring.remember(id, k.clone());
                Ok(k)
            }
            Err(source) => {
                let state = self
                    .load_state()
                    .await?
                    .ok_or_else(|| Error::internal("vault_state is missing"))?;
                if state.kek_salt != ring.salt {
                    // The master key was changed by another server sharing the store.
                    if ring.master.matches(&state.kek_salt, &state.key_check) {
                        let fresh = Arc::new(Keyring::new(
                            ring.master.clone(),
                            state.kek_salt.clone(),
                            ring.source,
                        ));
                        let k =
                            Arc::new(fresh.kek.unwrap(&wrapped, id).map_err(|source| {
                                VaultError::CorruptDataKey { key: id, source }
                            })?);
                        fresh.remember(id, k.clone());
                        self.set_keyring(Some(fresh))?;
                        return Ok(k);
                    }
                    tracing::error!(
                        "the vault master key was changed (by another server sharing the store): this server seals \
                         its vault until the new key is applied"
                    );
                    self.set_keyring(None)?;
                    return Err(VaultError::Sealed.into());
                }
                Err(VaultError::CorruptDataKey { key: id, source }.into())
            }
        }
    }

    /// The active data key inside a write transaction (shared lock on the state row on
    /// PostgreSQL, so a rotation cannot retire it before this transaction commits).
    pub(crate) async fn active_key_tx(
        &self,
        tx: &mut Tx,
        ring: &Arc<Keyring>,
    ) -> Result<(i64, Arc<DataKey>)> {
        let state = Self::state_tx(tx, false).await?;
        let key = self.data_key(ring, state.active_key_id).await?;
        Ok((state.active_key_id, key))
    }

    fn parse_key(field: &str, text: &SecretString) -> Result<MasterKey, VaultError> {
        MasterKey::parse(text.expose_secret()).map_err(|source| VaultError::KeyFormat {
            field: field.to_owned(),
            source,
        })
    }

    /// Applies the master key (`PUT keys/private`, `haechi vault unseal`). A wrong key is 400
    /// and the vault stays as it was; both outcomes are audited. Returns whether this call
    /// unsealed the vault (false: it already was).
    pub async fn unseal(&self, caller: &Caller, field: &str, text: &SecretString) -> Result<bool> {
        let actor = &caller.actor;
        let _guard = self.admin.lock().await;
        let failed = |reason: &'static str| {
            actor
                .event("vault.unseal")
                .outcome(Outcome::Failure)
                .detail(json!({ "reason": reason }))
        };
        let key = match Self::parse_key(field, text) {
            Ok(k) => k,
            Err(e) => {
                haechi_audit::record(&self.store, failed("malformed key")).await?;
                return Err(e.into());
            }
        };
        let state = self
            .load_state()
            .await?
            .ok_or_else(|| Error::internal("vault_state is missing"))?;
        if !key.matches(&state.kek_salt, &state.key_check) {
            haechi_audit::record(&self.store, failed("wrong key")).await?;
            tracing::warn!(user = actor.user_id, ip = %actor.ip, "a wrong vault master key was applied; the vault state is unchanged");
            return Err(VaultError::WrongKey {
                field: field.to_owned(),
            }
            .into());
        }
        let was_sealed = !self.applied();
        let mut wrote_file = false;
        if was_sealed {
            if state.mode()? == Mode::Express && self.env_key.is_none() && !self.key_file.exists() {
                // Express keeps the key: a server that had none (a new server on a shared
                // PostgreSQL) keeps the applied one for its next start.
                write_key_file(&self.key_file, &key)?;
                wrote_file = true;
            }
            self.set_keyring(Some(Arc::new(Keyring::new(
                key,
                state.kek_salt.clone(),
                KeySource::Applied,
            ))))?;
            tracing::info!(
                user = actor.user_id,
                "vault unsealed with an applied master key"
            );
        }
        haechi_audit::record(
            &self.store,
            actor
                .event("vault.unseal")
                .detail(json!({ "already_unsealed": !was_sealed, "key_file_written": wrote_file })),
        )
        .await?;
        Ok(was_sealed)
    }

    /// Switches the mode (`PUT mode`); needs the current master key. To Manual: the key file is
    /// deleted. To Express: the key is kept in the key file (unless HAECHI_VAULT_MASTER_KEY
    /// holds it). Either way a sealed vault is unsealed by the key given. The same mode again
    /// is `NotModified`.
    pub async fn set_mode(
        &self,
        caller: &Caller,
        mode: Mode,
        field: &str,
        text: &SecretString,
    ) -> Result<()> {
        let actor = &caller.actor;
        let _guard = self.admin.lock().await;
        let failed = |reason: &'static str| {
            actor
                .event("vault.mode.change")
                .outcome(Outcome::Failure)
                .detail(json!({ "to": mode.as_str(), "reason": reason }))
        };
        let key = match Self::parse_key(field, text) {
            Ok(k) => k,
            Err(e) => {
                haechi_audit::record(&self.store, failed("malformed key")).await?;
                return Err(e.into());
            }
        };
        let mut tx = self.store.begin().await?;
        let state = Self::state_tx(&mut tx, true).await?;
        if !key.matches(&state.kek_salt, &state.key_check) {
            drop(tx);
            haechi_audit::record(&self.store, failed("wrong key")).await?;
            return Err(VaultError::WrongKey {
                field: field.to_owned(),
            }
            .into());
        }
        let from = state.mode()?;
        if from == mode {
            return Err(Error::new(
                haechi_types::Code::NotModified,
                "the vault is already in that mode",
            ));
        }
        let env_holds_it = self.env_key.as_ref().is_some_and(|k| k.same_as(&key));
        if mode == Mode::Express && !env_holds_it {
            write_key_file(&self.key_file, &key)?;
        }
        in_tx!(tx, |c| sqlx::query(
            "UPDATE vault_state SET mode = $1, updated_at = $2 WHERE id = 1"
        )
        .bind(mode.as_str())
        .bind(now_ms())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("vault.mode.change")
                .detail(json!({ "from": from.as_str(), "to": mode.as_str() })),
        )
        .await?;
        let committed = tx.commit().await;
        if let Err(e) = committed {
            if mode == Mode::Express && !env_holds_it {
                let _ = remove_key_file(&self.key_file);
            }
            return Err(e);
        }
        if !self.applied() {
            let source = if mode == Mode::Express && !env_holds_it {
                KeySource::File
            } else {
                KeySource::Applied
            };
            self.set_keyring(Some(Arc::new(Keyring::new(
                key,
                state.kek_salt.clone(),
                source,
            ))))?;
        }
        tracing::info!(
            user = actor.user_id,
            from = from.as_str(),
            to = mode.as_str(),
            "vault mode changed"
        );
        if mode == Mode::Manual {
            remove_key_file(&self.key_file)?;
        }
        self.store.publish(Signal::VaultKeys).await;
        Ok(())
    }

    /// Follows the other servers' vault signals: after a master key change, a mode change or
    /// a data key rotation on another server, this server checks its keys against the store
    /// at once ([`Vault::recheck_keys`]) instead of at its first failed unwrap.
    pub fn follow_signals(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let mut signals = self.store.signals().subscribe();
        tokio::spawn(async move {
            while let Some(d) = signals.recv().await {
                if !matches!(d, Delivery::Signal(Signal::VaultKeys) | Delivery::Resync) {
                    continue;
                }
                let Some(vault) = weak.upgrade() else { return };
                if let Err(e) = vault.recheck_keys().await {
                    tracing::warn!("vault key check on a signal failed: {e}");
                }
            }
        })
    }

    /// Compares this server's keys with the store's: a master key changed elsewhere is taken
    /// on when this server's key still opens it (it cannot: the change needs a new key) and
    /// otherwise seals this server until the new key is applied to it; a data key cache is
    /// dropped after a rotation; the key file follows the mode (Manual: no key on disk;
    /// Express: the key in the key file unless the environment holds it).
    pub(crate) async fn recheck_keys(&self) -> Result<()> {
        let _guard = self.admin.lock().await;
        let Some(state) = self.load_state().await? else {
            return Ok(());
        };
        let ring = self.keyring.read().ok().and_then(|k| k.clone());
        let Some(ring) = ring else {
            return Ok(());
        };
        if state.kek_salt != ring.salt {
            if ring.master.matches(&state.kek_salt, &state.key_check) {
                self.set_keyring(Some(Arc::new(Keyring::new(
                    ring.master.clone(),
                    state.kek_salt.clone(),
                    ring.source,
                ))))?;
            } else {
                tracing::error!(
                    "the vault master key was changed (by another server sharing the store): this server seals \
                     its vault until the new key is applied"
                );
                self.set_keyring(None)?;
                return Ok(());
            }
        } else {
            // A rotation retired data keys: unwrap the active one again on first use.
            let retired: Vec<i64> = ring
                .cached_ids()
                .into_iter()
                .filter(|id| *id != state.active_key_id)
                .collect();
            ring.forget(&retired);
        }
        match state.mode()? {
            Mode::Manual => {
                if remove_key_file(&self.key_file)? {
                    tracing::info!(
                        "the vault is in Manual mode now (changed on another server): removed this server's key file"
                    );
                }
            }
            Mode::Express => {
                if self.env_key.is_none() && !self.key_file.exists() {
                    write_key_file(&self.key_file, &ring.master)?;
                    tracing::info!(
                        "the vault is in Express mode now (changed on another server): wrote this server's key file"
                    );
                }
            }
        }
        Ok(())
    }

    /// The vault's state for operators.
    pub async fn status(&self) -> Result<Status> {
        let state = self
            .load_state()
            .await?
            .ok_or_else(|| Error::internal("vault_state is missing"))?;
        let count = |table: &'static str| {
            let store = self.store.clone();
            async move {
                let sql = format!("SELECT COUNT(*) FROM {table}");
                let n: i64 = read!(store, |db| sqlx::query_scalar(&sql).fetch_one(db).await)?;
                Ok::<_, Error>(n)
            }
        };
        let ring = self
            .keyring
            .read()
            .map_err(|_| Error::internal("vault keyring lock poisoned"))?
            .clone();
        Ok(Status {
            mode: state.mode()?,
            applied: ring.is_some(),
            key_source: ring.map(|r| r.source),
            key_file: self.key_file.clone(),
            key_file_present: self.key_file.exists(),
            active_data_key: state.active_key_id,
            data_keys: count("vault_data_keys").await?,
            credentials: count("vault_credentials").await?,
            values: count("vault_values").await?,
            lockers: count("vault_lockers").await?,
        })
    }

    /// Re-encrypts every value under a new data key in one transaction, then deletes the old
    /// data keys. A value that fails to decrypt aborts the rotation (nothing changes) and is
    /// named in the server log.
    pub async fn rotate_data_key(&self, caller: &Caller) -> Result<Rotation> {
        let actor = &caller.actor;
        let _guard = self.admin.lock().await;
        let ring = self.keyring()?;
        let new_key = DataKey::generate();
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let state = Self::state_tx(&mut tx, true).await?;
        if state.kek_salt != ring.salt {
            return Err(VaultError::Sealed.into());
        }
        let new_id = insert_data_key(&mut tx, &ring.kek, &new_key, now).await?;

        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            credential_id: i64,
            attribute_id: i64,
            user_id: Option<i64>,
            key_id: i64,
            nonce: Vec<u8>,
            ciphertext: Vec<u8>,
            version: i64,
        }
        const PAGE: i64 = 500;
        let mut after = 0i64;
        let mut reencrypted = 0i64;
        loop {
            let page: Vec<Row> = in_tx!(tx, |c| {
                sqlx::query_as(
                "SELECT id, credential_id, attribute_id, user_id, key_id, nonce, ciphertext, version FROM vault_values \
                 WHERE id > $1 AND key_id <> $2 ORDER BY id LIMIT $3"
            )
            .bind(after)
            .bind(new_id)
            .bind(PAGE)
            .fetch_all(&mut *c)
            .await
            })?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for v in page {
                let old = self.data_key(&ring, v.key_id).await?;
                let slot = Slot {
                    value: v.id,
                    credential: v.credential_id,
                    attribute: v.attribute_id,
                    user: v.user_id.unwrap_or(0),
                    version: v.version,
                    key: v.key_id,
                };
                let plain = old.open(&v.nonce, &v.ciphertext, slot).map_err(|source| {
                    VaultError::Corrupt {
                        value: v.id,
                        credential: v.credential_id,
                        attribute: v.attribute_id,
                        source,
                    }
                })?;
                let sealed = new_key.seal(
                    &plain,
                    Slot {
                        key: new_id,
                        ..slot
                    },
                );
                in_tx!(tx, |c| {
                    sqlx::query("UPDATE vault_values SET key_id = $1, nonce = $2, ciphertext = $3 WHERE id = $4")
                    .bind(new_id)
                    .bind(&sealed.nonce)
                    .bind(&sealed.ciphertext)
                    .bind(v.id)
                    .execute(&mut *c)
                    .await
                    .map(|r| r.rows_affected())
                })?;
                reencrypted += 1;
            }
        }
        in_tx!(tx, |c| sqlx::query(
            "UPDATE vault_state SET active_key_id = $1, updated_at = $2 WHERE id = 1"
        )
        .bind(new_id)
        .bind(now)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        // Values other engines sealed with `seal_secret` live in their own tables (see
        // SEALED_ELSEWHERE): the keys they reference stay, for opening only (nothing new is
        // sealed with a key that is not the active one), until those rows are gone.
        let retire_sql = format!(
            "DELETE FROM vault_data_keys WHERE id <> $1{}",
            SEALED_ELSEWHERE
                .iter()
                .map(|t| format!(
                    " AND id NOT IN (SELECT key_id FROM {t} WHERE key_id IS NOT NULL)"
                ))
                .collect::<String>()
        );
        let retired = in_tx!(tx, |c| sqlx::query(&retire_sql)
            .bind(new_id)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))? as i64;
        haechi_audit::append(
            &mut tx,
            actor
                .event("vault.data_key.rotate")
                .target(format!("data-key:{new_id}"))
                .detail(json!({
                    "key_id": new_id, "reencrypted": reencrypted, "retired_keys": retired,
                })),
        )
        .await?;
        tx.commit().await?;
        ring.remember(new_id, Arc::new(new_key));
        // Reads that loaded rows just before the commit may still ask for an old key for a
        // moment; forget the old keys a little later.
        let retired_ids: Vec<i64> = ring
            .cached_ids()
            .into_iter()
            .filter(|id| *id != new_id)
            .collect();
        let later = ring.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            later.forget(&retired_ids);
        });
        tracing::info!(
            user = actor.user_id,
            key_id = new_id,
            reencrypted,
            "vault data key rotated"
        );
        self.store.publish(Signal::VaultKeys).await;
        Ok(Rotation {
            key_id: new_id,
            reencrypted,
            retired_keys: retired,
        })
    }

    /// Changes the master key: every data key is re-wrapped under the new key's KEK (with a new
    /// salt) and the key check replaced, in one transaction. Needs the current key. The key file
    /// follows when it held the key; an environment key cannot, and the answer says so.
    pub async fn change_master_key(
        &self,
        caller: &Caller,
        current: &SecretString,
        new: &SecretString,
    ) -> Result<Rekey> {
        let actor = &caller.actor;
        let _guard = self.admin.lock().await;
        let ring = self.keyring()?;
        let current = Self::parse_key("current_key", current)?;
        let new = Self::parse_key("new_key", new)?;
        if new.same_as(&current) {
            return Err(Error::field("new_key", "is the current master key"));
        }
        let salt = new_salt();
        let check = new.check_value(&salt);
        let new_kek = new.kek(&salt);
        let mut tx = self.store.begin().await?;
        let state = Self::state_tx(&mut tx, true).await?;
        if !current.matches(&state.kek_salt, &state.key_check) {
            drop(tx);
            haechi_audit::record(
                &self.store,
                actor
                    .event("vault.master_key.change")
                    .outcome(Outcome::Failure)
                    .detail(json!({ "reason": "wrong current key" })),
            )
            .await?;
            return Err(VaultError::WrongKey {
                field: "current_key".into(),
            }
            .into());
        }
        let old_kek = current.kek(&state.kek_salt);
        let keys: Vec<(i64, Vec<u8>)> = in_tx!(tx, |c| sqlx::query_as(
            "SELECT id, wrapped FROM vault_data_keys ORDER BY id"
        )
        .fetch_all(&mut *c)
        .await)?;
        for (id, wrapped) in &keys {
            let dk = old_kek
                .unwrap(wrapped, *id)
                .map_err(|source| VaultError::CorruptDataKey { key: *id, source })?;
            in_tx!(tx, |c| sqlx::query(
                "UPDATE vault_data_keys SET wrapped = $1 WHERE id = $2"
            )
            .bind(new_kek.wrap(&dk, *id))
            .bind(*id)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
        }
        in_tx!(tx, |c| sqlx::query(
            "UPDATE vault_state SET kek_salt = $1, key_check = $2, updated_at = $3 WHERE id = 1"
        )
        .bind(&salt)
        .bind(&check)
        .bind(now_ms())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("vault.master_key.change")
                .detail(json!({ "rewrapped_keys": keys.len() })),
        )
        .await?;
        let mode = state.mode()?;
        tx.commit().await?;

        let fresh = Keyring::new(new.clone(), salt, ring.source);
        for (id, _) in &keys {
            if let Some(k) = ring.cached(*id) {
                fresh.remember(*id, k);
            }
        }
        self.set_keyring(Some(Arc::new(fresh)))?;
        self.store.publish(Signal::VaultKeys).await;

        let mut warning = None;
        let mut key_file_updated = false;
        if self.key_file.exists() || (mode == Mode::Express && self.env_key.is_none()) {
            match write_key_file(&self.key_file, &new) {
                Ok(()) => key_file_updated = true,
                Err(_) => {
                    warning = Some(format!(
                        "the new master key is in force but {} could not be rewritten (see the server log): \
                         write the new key there before the next start",
                        self.key_file.display()
                    ))
                }
            }
        }
        if mode == Mode::Express && self.env_key.is_some() {
            warning = Some(
                "HAECHI_VAULT_MASTER_KEY still holds the old key: set it to the new key before the next start, \
                 or the vault will start sealed"
                    .to_owned(),
            );
        }
        tracing::info!(
            user = actor.user_id,
            rewrapped = keys.len(),
            "vault master key changed"
        );
        Ok(Rekey {
            rewrapped_keys: keys.len() as i64,
            key_file_updated,
            warning,
        })
    }
}

/// What `haechi doctor` finds of the vault's keys, without opening the vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfflineKeyCheck {
    /// No server has started on this store yet.
    Uninitialized,
    /// Manual mode: the key is applied after each start (it is not kept on the machine).
    Manual,
    /// Express mode, and the key this installation keeps (from `source`) opens the vault.
    ExpressKeyMatches(KeySource),
    /// Express mode, but no key is kept: the server would start sealed.
    ExpressNoKey,
    /// Express mode, and the kept key (from `source`) is not this vault's: it would start sealed.
    ExpressKeyMismatch(KeySource),
    /// The kept key cannot be read or is not a key.
    KeyUnreadable(String),
}

/// Checks, without opening the vault, whether the key a server started on `store` with
/// `data_dir` and `env_key` (`vault_master_key`) would use opens it.
pub async fn check_keys_offline(
    store: &haechi_store::Store,
    data_dir: &Path,
    env_key: Option<&SecretString>,
) -> Result<OfflineKeyCheck> {
    if !store.has_table("vault_state").await? {
        return Ok(OfflineKeyCheck::Uninitialized);
    }
    let sql = format!("SELECT {STATE_COLS} FROM vault_state WHERE id = 1");
    let state: Option<StateRow> = read!(store, |db| sqlx::query_as(&sql).fetch_optional(db).await)?;
    let Some(state) = state else {
        return Ok(OfflineKeyCheck::Uninitialized);
    };
    if state.mode()? == Mode::Manual {
        return Ok(OfflineKeyCheck::Manual);
    }
    let (key, source) = match env_key {
        Some(text) => match MasterKey::parse(text.expose_secret()) {
            Ok(k) => (k, KeySource::Environment),
            Err(e) => {
                return Ok(OfflineKeyCheck::KeyUnreadable(format!(
                    "vault_master_key (HAECHI_VAULT_MASTER_KEY) is not a master key: {e}"
                )))
            }
        },
        None => match read_key_file(&data_dir.join(crate::KEY_FILE)) {
            Ok(Some(k)) => (k, KeySource::File),
            Ok(None) => return Ok(OfflineKeyCheck::ExpressNoKey),
            Err(e) => return Ok(OfflineKeyCheck::KeyUnreadable(e.to_string())),
        },
    };
    Ok(if key.matches(&state.kek_salt, &state.key_check) {
        OfflineKeyCheck::ExpressKeyMatches(source)
    } else {
        OfflineKeyCheck::ExpressKeyMismatch(source)
    })
}
