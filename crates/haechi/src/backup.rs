//! `haechi backup` and `haechi restore`: one archive file holding a consistent snapshot of the
//! store and what lives beside it (the TLS certificate, and, encrypted with a passphrase, the TLS
//! key, the settings file and, only when asked, the vault's master key).
//!
//! The archive is a POSIX tar file whose first member is `manifest.json` (format, schema
//! version, backend, creation time, the audit chain's head, row counts, and the SHA-256 of every
//! other member). Members:
//!
//! - `store/haechi.db`: SQLite, written by `VACUUM INTO` while the server runs (one read
//!   transaction: everything committed before the backup began, nothing half-written);
//! - `store/postgres.dump`: PostgreSQL, `pg_dump --format=custom --snapshot` of a snapshot the
//!   manifest's counts were read in;
//! - `tls/cert.pem`: the server's certificate (public);
//! - `config/haechi.toml`: the settings file, when it holds no secret (else it goes into the
//!   secrets);
//! - `secrets.enc`: with a passphrase, the secrets above, sealed with AES-256-GCM under a key
//!   derived from the passphrase by Argon2id.
//!
//! Restore writes into an empty (or absent) data directory only, checks every member's hash,
//! refuses an archive from a newer schema, and verifies the restored audit chain.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use clap::Args;
use haechi_store::{Inventory, Store, StoreOptions};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::{Config, Overrides};

/// The archive format this binary writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 1;
const FORMAT: &str = "haechi-backup";
const MANIFEST: &str = "manifest.json";
const SQLITE_MEMBER: &str = "store/haechi.db";
const PG_MEMBER: &str = "store/postgres.dump";
const CERT_MEMBER: &str = "tls/cert.pem";
const CONFIG_MEMBER: &str = "config/haechi.toml";
const SECRETS_MEMBER: &str = "secrets.enc";
/// Names of the secrets inside `secrets.enc`.
const SECRET_TLS_KEY: &str = "tls/key.pem";
const SECRET_VAULT_KEY: &str = "vault.key";
const SECRET_CONFIG: &str = "config/haechi.toml";
/// The server's local agent's credential (`<data_dir>/agent/credential.json`).
const SECRET_AGENT: &str = "agent/credential.json";
/// Associated data of the sealed secrets: a sealed blob from another format cannot be passed off.
const SECRETS_AAD: &[u8] = b"haechi-backup secrets v1";
/// The shortest passphrase accepted for a new backup.
const MIN_PASSPHRASE: usize = 12;

#[derive(Args)]
pub struct BackupArgs {
    /// The server's data directory (the SQLite store, the certificate, the vault key file).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL, when the server uses PostgreSQL (`pg_dump` must be on PATH).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The archive to write (must not exist yet); created with mode 0600.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Also keep the vault's master key in the archive, encrypted with the passphrase
    /// (needs --passphrase-file). Without it, keep the key yourself: a restored store's
    /// credential values are readable only with it.
    #[arg(long, alias = "with-vault-key", requires = "passphrase_file")]
    include_vault_key: bool,
    /// File holding the passphrase that encrypts the archive's secrets (the TLS key, the
    /// settings file when it holds a secret, the vault key when asked); at least 12 characters.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The archive written by `haechi backup`.
    #[arg(long, alias = "in", value_name = "FILE")]
    from: PathBuf,
    /// The new data directory: absent or empty.
    #[arg(long, alias = "data", value_name = "DIR")]
    data_dir: PathBuf,
    /// For a PostgreSQL backup: the URL of an empty database to restore into (`pg_restore` must
    /// be on PATH).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// File holding the archive's passphrase (needed when it holds encrypted secrets).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// One member of the archive, as the manifest lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The archive's manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub haechi_version: String,
    pub schema_version: i64,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// ISO 8601, UTC.
    pub created_at: String,
    pub created_at_ms: i64,
    pub audit_head_seq: i64,
    pub audit_head_hash: String,
    pub vault_mode: Option<String>,
    /// Rows per table, as of the snapshot.
    pub counts: BTreeMap<String, i64>,
    pub members: Vec<Member>,
    /// What `secrets.enc` holds (empty when there is none).
    pub secrets: Vec<String>,
}

/// The sealed secrets (`secrets.enc`).
#[derive(Serialize, Deserialize)]
struct Sealed {
    kdf: String,
    m_kib: u32,
    t: u32,
    p: u32,
    salt: String,
    cipher: String,
    nonce: String,
    ciphertext: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn read_passphrase(path: &Path) -> Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the passphrase file {}", path.display()))?,
    );
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    if text.is_empty() {
        bail!("the passphrase file {} is empty", path.display());
    }
    Ok(text)
}

/// Argon2id cost of the passphrase key: 64 MiB, 3 passes (a backup is opened rarely; a guess
/// should be expensive).
const KDF_M_KIB: u32 = 64 * 1024;
const KDF_T: u32 = 3;
const KDF_P: u32 = 1;

fn derive_key(
    passphrase: &str,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| anyhow!("the archive's key derivation parameters are invalid: {e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|e| anyhow!("cannot derive the archive key: {e}"))?;
    Ok(key)
}

fn seal(passphrase: &str, secrets: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> Result<Vec<u8>> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let key = derive_key(passphrase, &salt, KDF_M_KIB, KDF_T, KDF_P)?;
    let plain: BTreeMap<&str, String> = secrets
        .iter()
        .map(|(k, v)| (k.as_str(), b64().encode(v.as_slice())))
        .collect();
    let plain = Zeroizing::new(serde_json::to_vec(&plain)?);
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| anyhow!("bad key length"))?;
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: SECRETS_AAD,
            },
        )
        .map_err(|_| anyhow!("cannot encrypt the archive's secrets"))?;
    Ok(serde_json::to_vec_pretty(&Sealed {
        kdf: "argon2id".into(),
        m_kib: KDF_M_KIB,
        t: KDF_T,
        p: KDF_P,
        salt: b64().encode(salt),
        cipher: "aes-256-gcm".into(),
        nonce: b64().encode(nonce),
        ciphertext: b64().encode(ciphertext),
    })?)
}

fn unseal(passphrase: &str, sealed: &[u8]) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>> {
    let s: Sealed = serde_json::from_slice(sealed).context("secrets.enc is not readable")?;
    if s.kdf != "argon2id" || s.cipher != "aes-256-gcm" {
        bail!(
            "secrets.enc uses {} / {}, which this version cannot open",
            s.kdf,
            s.cipher
        );
    }
    // Bound the cost an archive can ask for (a hostile archive must not exhaust memory).
    if s.m_kib > 4 * 1024 * 1024 || s.t > 100 || s.p > 64 {
        bail!("secrets.enc asks for an unreasonable key derivation cost");
    }
    let salt = b64().decode(&s.salt).context("secrets.enc: salt")?;
    let nonce = b64().decode(&s.nonce).context("secrets.enc: nonce")?;
    let ciphertext = b64()
        .decode(&s.ciphertext)
        .context("secrets.enc: ciphertext")?;
    if nonce.len() != 12 {
        bail!("secrets.enc: the nonce is not 12 bytes");
    }
    let key = derive_key(passphrase, &salt, s.m_kib, s.t, s.p)?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| anyhow!("bad key length"))?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: SECRETS_AAD,
                },
            )
            .map_err(|_| {
                anyhow!("the passphrase does not open this backup's secrets (wrong passphrase, or the archive was altered)")
            })?,
    );
    let map: BTreeMap<String, String> = serde_json::from_slice(&plain)
        .context("secrets.enc: the sealed content is not readable")?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let bytes = Zeroizing::new(
            b64()
                .decode(v.as_bytes())
                .with_context(|| format!("secrets.enc: {k}"))?,
        );
        out.insert(k, bytes);
    }
    Ok(out)
}

/// Writes `bytes` to a new file with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn create_dir_private(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn file_sha256(path: &Path) -> Result<(u64, String)> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// Whether a settings file sets one of the secret keys itself.
fn config_holds_secret(text: &str) -> bool {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        // Unparseable: treat it as secret rather than risk it.
        return true;
    };
    ["database_url", "admin_password", "vault_master_key"]
        .iter()
        .any(|k| table.contains_key(*k))
}

/// A PostgreSQL URL split into the URL without its password and the password (passed to
/// `pg_dump` / `pg_restore` in `PGPASSWORD`, never on their command line, where `ps` shows it).
fn split_pg_password(url: &str) -> Result<(String, Option<Zeroizing<String>>)> {
    let mut parsed =
        reqwest::Url::parse(url).map_err(|_| anyhow!("the database URL is not a URL"))?;
    let password = parsed
        .password()
        .map(|p| Zeroizing::new(percent_decode(p).unwrap_or_else(|| p.to_owned())));
    if password.is_some() {
        let _ = parsed.set_password(None);
    }
    Ok((parsed.to_string(), password))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn pg_tool(tool: &str, url: &str, args: &[&str]) -> Result<()> {
    let (url, password) = split_pg_password(url)?;
    let mut cmd = Command::new(tool);
    cmd.args(args).arg(format!("--dbname={url}"));
    if let Some(p) = &password {
        cmd.env("PGPASSWORD", p.as_str());
    }
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!(
                "{tool} is not on PATH: install the PostgreSQL client tools (Debian: postgresql-client, \
                 of the server's major version or newer); docs/operations.md shows the manual steps"
            )
        } else {
            anyhow!("cannot run {tool}: {e}")
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = match &password {
            Some(p) if !p.is_empty() => err.replace(p.as_str(), "***"),
            _ => err.into_owned(),
        };
        bail!("{tool} failed ({}): {}", out.status, err.trim());
    }
    Ok(())
}

fn store_opts(cfg: &Config, sqlite_path: PathBuf) -> StoreOptions {
    StoreOptions {
        database_url: cfg
            .database_url
            .as_ref()
            .map(|u| u.expose_secret().to_owned()),
        sqlite_path,
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_millis(cfg.database_acquire_timeout_ms),
    }
}

fn e(err: haechi_types::Error) -> anyhow::Error {
    anyhow!("{err}")
}

// ---------------------------------------------------------------- backup

pub async fn backup(a: BackupArgs, config_file: Option<&Path>) -> Result<ExitCode> {
    let overrides = Overrides {
        data_dir: a.data_dir.clone(),
        database_url: a.database_url.clone(),
        ..Default::default()
    };
    let cfg = Config::load(config_file, &overrides)?;
    let (passphrase, out_dir) = check_backup_args(&a)?;
    let staging = tempfile::Builder::new()
        .prefix(".haechi-backup-")
        .tempdir_in(&out_dir)
        .with_context(|| format!("cannot create a staging directory in {}", out_dir.display()))?;
    create_dir_private(staging.path())?;

    let created_at_ms = haechi_types::time::now_ms();
    let mut staged = Staged {
        dir: staging.path(),
        members: Vec::new(),
        notes: Vec::new(),
    };

    // The store first: the snapshot's moment is the backup's.
    let (inventory, backend) = snapshot_store(&cfg, &mut staged).await?;
    if inventory.schema_version == 0 {
        bail!("the store has no schema: it was never started by a Haechi server");
    }

    // What lives outside the store.
    let mut secrets: BTreeMap<String, Zeroizing<Vec<u8>>> = BTreeMap::new();
    let has_passphrase = passphrase.is_some();
    stage_tls(&cfg, has_passphrase, &mut secrets, &mut staged)?;
    stage_agent_credential(&cfg, has_passphrase, &mut secrets, &mut staged)?;
    if let Some(file) = config_file {
        stage_config(file, has_passphrase, &mut secrets, &mut staged)?;
    }
    if a.include_vault_key {
        let key = vault_key_to_keep(&cfg, &inventory)?;
        secrets.insert(SECRET_VAULT_KEY.into(), key);
    } else {
        staged.notes.push(
            "the vault master key is not in the archive (--include-vault-key adds it, encrypted): \
             keep it apart; a restored store's credential values open only with it"
                .into(),
        );
    }
    let secret_names = seal_secrets(
        passphrase.as_ref().map(|p| p.as_str()),
        secrets,
        &mut staged,
    )?;

    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        haechi_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: inventory.schema_version,
        backend: backend.into(),
        created_at: haechi_types::time::iso_ms(created_at_ms),
        created_at_ms,
        audit_head_seq: inventory.audit_head.0,
        audit_head_hash: inventory.audit_head.1.clone(),
        vault_mode: inventory.vault_mode.clone(),
        counts: inventory.counts.clone(),
        members: list_members(&staged.members)?,
        secrets: secret_names,
    };
    write_archive(&a.out, &manifest, &staged, created_at_ms)?;
    let Staged { notes, .. } = staged;
    drop(staging);
    print_backup_summary(&a.out, &manifest, notes);
    Ok(ExitCode::SUCCESS)
}

/// What a backup has gathered in its staging directory: the files that become archive members
/// (by member name), and the notes printed after the summary.
struct Staged<'a> {
    dir: &'a Path,
    members: Vec<(String, PathBuf)>,
    notes: Vec<String>,
}

/// The checks made before anything is written: the archive must be new, the passphrase long
/// enough, and the archive's folder a directory. Returns the passphrase and that folder.
fn check_backup_args(a: &BackupArgs) -> Result<(Option<Zeroizing<String>>, PathBuf)> {
    if a.out.exists() {
        bail!(
            "{} exists: give a new file name (a backup never overwrites a file)",
            a.out.display()
        );
    }
    let passphrase = match &a.passphrase_file {
        Some(p) => {
            let text = read_passphrase(p)?;
            if text.chars().count() < MIN_PASSPHRASE {
                bail!(
                    "the passphrase in {} is shorter than {MIN_PASSPHRASE} characters: choose a longer one",
                    p.display()
                );
            }
            Some(text)
        }
        None => None,
    };
    let out_dir = match a.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        bail!("{} is not a directory", out_dir.display());
    }
    Ok((passphrase, out_dir))
}

/// Snapshots the store into the staging directory and reads its inventory; returns the
/// inventory and the backend's name.
async fn snapshot_store(
    cfg: &Config,
    staged: &mut Staged<'_>,
) -> Result<(Inventory, &'static str)> {
    match &cfg.database_url {
        None => {
            let path = cfg.sqlite_path();
            if !path.exists() {
                bail!(
                    "no store in {}: give the server's --data-dir (or --database-url)",
                    cfg.data_dir.display()
                );
            }
            let store = Store::open_existing(&store_opts(cfg, path))
                .await
                .map_err(e)?;
            let snap = staged.dir.join("haechi.db");
            let taken = store.snapshot_sqlite_into(&snap).await;
            store.close().await;
            taken.map_err(e)?;
            let inv = inventory_of_sqlite_file(&snap).await?;
            staged.members.push((SQLITE_MEMBER.into(), snap));
            Ok((inv, "sqlite"))
        }
        Some(url) => {
            let dump = staged.dir.join("postgres.dump");
            let inv = dump_postgres(url.expose_secret(), &dump).await?;
            staged.members.push((PG_MEMBER.into(), dump));
            Ok((inv, "postgres"))
        }
    }
}

/// Dumps a PostgreSQL store with `pg_dump` from the snapshot its inventory was read in.
async fn dump_postgres(url: &str, dump: &Path) -> Result<Inventory> {
    let mut snap = haechi_store::PgSnapshot::open(url).await.map_err(e)?;
    let inv = snap.inventory().await.map_err(e)?;
    let dump_s = dump
        .to_str()
        .ok_or_else(|| anyhow!("{} is not a UTF-8 path", dump.display()))?
        .to_owned();
    let snapshot_arg = format!("--snapshot={}", snap.id());
    let file_arg = format!("--file={dump_s}");
    let url_owned = url.to_owned();
    let dumped = tokio::task::spawn_blocking(move || {
        pg_tool(
            "pg_dump",
            &url_owned,
            &[
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                &snapshot_arg,
                &file_arg,
            ],
        )
    })
    .await?;
    snap.close().await;
    dumped?;
    Ok(inv)
}

/// The TLS certificate goes in as a member and its key among the secrets, both only with a
/// passphrase: a private key is never kept in the clear.
fn stage_tls(
    cfg: &Config,
    has_passphrase: bool,
    secrets: &mut BTreeMap<String, Zeroizing<Vec<u8>>>,
    staged: &mut Staged<'_>,
) -> Result<()> {
    let (cert_path, key_path) = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => crate::tls::generated_cert_paths(&cfg.data_dir),
    };
    if !cert_path.exists() {
        return Ok(());
    }
    let cert = std::fs::read(&cert_path)
        .with_context(|| format!("cannot read {}", cert_path.display()))?;
    if has_passphrase {
        let key = Zeroizing::new(
            std::fs::read(&key_path)
                .with_context(|| format!("cannot read {}", key_path.display()))?,
        );
        secrets.insert(SECRET_TLS_KEY.into(), key);
        let p = staged.dir.join("cert.pem");
        write_new(&p, &cert, 0o644)?;
        staged.members.push((CERT_MEMBER.into(), p));
    } else {
        staged.notes.push(format!(
            "the TLS certificate and key ({}) are not in the archive: a private key is kept only \
             encrypted, so give --passphrase-file to include them; a server restored without \
             them generates a new certificate, whose fingerprint clients must then pin",
            cert_path.display()
        ));
    }
    Ok(())
}

/// The local agent's credential, kept only encrypted.
fn stage_agent_credential(
    cfg: &Config,
    has_passphrase: bool,
    secrets: &mut BTreeMap<String, Zeroizing<Vec<u8>>>,
    staged: &mut Staged<'_>,
) -> Result<()> {
    let agent_credential = cfg.data_dir.join(SECRET_AGENT);
    if !agent_credential.exists() {
        return Ok(());
    }
    if has_passphrase {
        let c = Zeroizing::new(
            std::fs::read(&agent_credential)
                .with_context(|| format!("cannot read {}", agent_credential.display()))?,
        );
        secrets.insert(SECRET_AGENT.into(), c);
    } else {
        staged.notes.push(
            "the local agent's credential is kept only encrypted (give --passphrase-file): \
             a server restored without it enrols its local agent again"
                .into(),
        );
    }
    Ok(())
}

/// The settings file: a member when it sets no secret, else among the secrets.
fn stage_config(
    file: &Path,
    has_passphrase: bool,
    secrets: &mut BTreeMap<String, Zeroizing<Vec<u8>>>,
    staged: &mut Staged<'_>,
) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    if !config_holds_secret(&text) {
        let p = staged.dir.join("haechi.toml");
        write_new(&p, text.as_bytes(), 0o600)?;
        staged.members.push((CONFIG_MEMBER.into(), p));
    } else if has_passphrase {
        secrets.insert(SECRET_CONFIG.into(), Zeroizing::new(text.into_bytes()));
    } else {
        staged.notes.push(format!(
            "the settings file {} sets a secret, so it is kept only encrypted: give \
             --passphrase-file to include it",
            file.display()
        ));
    }
    Ok(())
}

/// The vault master key for `--include-vault-key`: the configured one, else the key file's.
fn vault_key_to_keep(cfg: &Config, inventory: &Inventory) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(k) = &cfg.vault_master_key {
        return Ok(Zeroizing::new(
            format!("{}\n", k.expose_secret()).into_bytes(),
        ));
    }
    let path = cfg.data_dir.join(haechi_vault::KEY_FILE);
    match std::fs::read(&path) {
        Ok(b) => Ok(Zeroizing::new(b)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "--include-vault-key: this installation keeps no vault master key ({} is \
             absent and vault_master_key is not set{}); keep the key you apply \
             with your own records",
            path.display(),
            if inventory.vault_mode.as_deref() == Some("Manual") {
                ": the vault is in Manual mode"
            } else {
                ""
            }
        ),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Seals the gathered secrets into `secrets.enc` (with a passphrase and something to seal);
/// returns their names, which the manifest lists. The clear secrets are dropped here.
fn seal_secrets(
    passphrase: Option<&str>,
    secrets: BTreeMap<String, Zeroizing<Vec<u8>>>,
    staged: &mut Staged<'_>,
) -> Result<Vec<String>> {
    let secret_names: Vec<String> = secrets.keys().cloned().collect();
    if let Some(passphrase) = passphrase {
        if !secrets.is_empty() {
            let sealed = seal(passphrase, &secrets)?;
            let p = staged.dir.join("secrets.enc");
            write_new(&p, &sealed, 0o600)?;
            staged.members.push((SECRETS_MEMBER.into(), p));
        }
    }
    Ok(secret_names)
}

/// The manifest's list of members, with their sizes and hashes.
fn list_members(members: &[(String, PathBuf)]) -> Result<Vec<Member>> {
    let mut listed = Vec::new();
    for (name, path) in members {
        let (bytes, sha256) = file_sha256(path)?;
        listed.push(Member {
            name: name.clone(),
            bytes,
            sha256,
        });
    }
    Ok(listed)
}

/// The archive: written beside its final name, then renamed, so a half-written archive never
/// carries the name.
fn write_archive(out: &Path, manifest: &Manifest, staged: &Staged<'_>, at_ms: i64) -> Result<()> {
    let partial = staged.dir.join("archive.tar");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options
            .open(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut tar = tar::Builder::new(file);
        let manifest_json = serde_json::to_vec_pretty(manifest)?;
        append_bytes(&mut tar, MANIFEST, &manifest_json, at_ms)?;
        for (name, path) in &staged.members {
            let mut f = File::open(path)?;
            let len = f.metadata()?.len();
            let mut header = header_for(len, at_ms);
            tar.append_data(&mut header, name, &mut f)
                .with_context(|| format!("cannot write {name} into the archive"))?;
        }
        let file = tar.into_inner().context("cannot finish the archive")?;
        file.sync_all()?;
    }
    std::fs::hard_link(&partial, out)
        .or_else(|_| std::fs::rename(&partial, out))
        .with_context(|| format!("cannot create {}", out.display()))
}

fn print_backup_summary(out: &Path, manifest: &Manifest, notes: Vec<String>) {
    let total: i64 = manifest.counts.values().sum();
    println!(
        "backup written to {}: {} store, schema {}, {} rows in {} tables, audit events 1..{} (head {}), taken at {}",
        out.display(),
        manifest.backend,
        manifest.schema_version,
        total,
        manifest.counts.len(),
        manifest.audit_head_seq,
        short_hash(&manifest.audit_head_hash),
        manifest.created_at,
    );
    if !manifest.secrets.is_empty() {
        println!(
            "encrypted with the passphrase: {}",
            manifest.secrets.join(", ")
        );
    }
    for n in notes {
        println!("note: {n}");
    }
}

fn short_hash(h: &str) -> &str {
    &h[..h.len().min(16)]
}

fn header_for(len: u64, at_ms: i64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(len);
    header.set_mode(0o600);
    header.set_mtime((at_ms / 1000).max(0) as u64);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
    at_ms: i64,
) -> Result<()> {
    let mut header = header_for(bytes.len() as u64, at_ms);
    tar.append_data(&mut header, name, bytes)
        .with_context(|| format!("cannot write {name} into the archive"))
}

/// The inventory of a SQLite snapshot file.
async fn inventory_of_sqlite_file(path: &Path) -> Result<Inventory> {
    let store = Store::open_existing(&StoreOptions {
        database_url: None,
        sqlite_path: path.to_path_buf(),
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(30),
    })
    .await
    .map_err(e)?;
    let inv = store.inventory().await;
    store.close().await;
    inv.map_err(e)
}

// ---------------------------------------------------------------- restore

/// Reads the manifest (the first member) of an archive.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut tar = tar::Archive::new(file);
    let mut entries = tar.entries().with_context(|| {
        format!(
            "{} is not a Haechi backup (not a tar archive)",
            path.display()
        )
    })?;
    let first = entries
        .next()
        .ok_or_else(|| anyhow!("{} is empty: not a Haechi backup", path.display()))?
        .with_context(|| {
            format!(
                "{} is not a Haechi backup (not a tar archive)",
                path.display()
            )
        })?;
    parse_manifest(path, first)
}

fn parse_manifest<R: Read>(path: &Path, mut entry: tar::Entry<'_, R>) -> Result<Manifest> {
    let name = entry.path()?.to_string_lossy().into_owned();
    if name != MANIFEST {
        bail!(
            "{} is not a Haechi backup: its first member is {name:?}, not {MANIFEST}",
            path.display()
        );
    }
    if entry.size() > 16 << 20 {
        bail!("{}: the manifest is too large", path.display());
    }
    let mut text = Vec::new();
    entry.read_to_end(&mut text)?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{}: the manifest is not readable", path.display()))?;
    if manifest.format != FORMAT {
        bail!(
            "{} is not a Haechi backup (format {:?})",
            path.display(),
            manifest.format
        );
    }
    if manifest.format_version > FORMAT_VERSION {
        bail!(
            "{} is in archive format {}, newer than this Haechi reads ({FORMAT_VERSION}): restore it with Haechi {} or newer",
            path.display(),
            manifest.format_version,
            manifest.haechi_version
        );
    }
    let latest = haechi_store::latest_schema_version();
    if manifest.schema_version > latest {
        bail!(
            "{} holds a store of schema version {} (made by Haechi {}), newer than this Haechi knows ({latest}): \
             restore it with Haechi {} or newer; a store is never moved to an older version",
            path.display(),
            manifest.schema_version,
            manifest.haechi_version,
            manifest.haechi_version
        );
    }
    Ok(manifest)
}

/// What a data directory holds that makes it unfit to restore into (`None` when it is absent
/// or empty).
fn occupied(dir: &Path) -> Result<Option<String>> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries
            .next()
            .transpose()?
            .map(|e| e.file_name().to_string_lossy().into_owned())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => {
            Ok(Some("(it is a file)".into()))
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// The name the settings file from the archive gets in the restored data directory.
const RESTORED_CONFIG: &str = "haechi.toml.from-backup";

pub async fn restore(a: RestoreArgs) -> Result<ExitCode> {
    let (manifest, passphrase) = check_restore_args(&a)?;

    // Extract into a staging directory beside the target, checking every member's hash.
    let parent = match a.data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".haechi-restore-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a staging directory in {}", parent.display()))?;
    create_dir_private(staging.path())?;
    let extracted = staging.path().join("archive");
    create_dir_private(&extracted)?;
    let got = extract_members(&a.from, &manifest, &extracted)?;
    let secrets = match (got.get(SECRETS_MEMBER), &passphrase) {
        (Some(path), Some(p)) => unseal(p, &std::fs::read(path)?)?,
        (Some(_), None) => bail!("this backup holds encrypted secrets: give --passphrase-file"),
        (None, _) => BTreeMap::new(),
    };

    // The new data directory, built in staging and moved into place at the end.
    let new_dir = staging.path().join("data");
    create_dir_private(&new_dir)?;
    let restored_inventory = match manifest.backend.as_str() {
        "sqlite" => {
            let src = got
                .get(SQLITE_MEMBER)
                .ok_or_else(|| anyhow!("the archive has no {SQLITE_MEMBER}"))?;
            let db = new_dir.join("haechi.db");
            std::fs::rename(src, &db)?;
            inventory_of_sqlite_file(&db).await?
        }
        _ => restore_postgres(a.database_url.as_deref().unwrap_or_default(), &got).await?,
    };
    if restored_inventory.counts != manifest.counts
        || restored_inventory.audit_head
            != (manifest.audit_head_seq, manifest.audit_head_hash.clone())
    {
        bail!("the restored store does not match the manifest's counts and audit head: the archive is inconsistent");
    }
    let config_text = restore_outside_store(&got, &secrets, &new_dir)?;
    let checked = verify_restored_chain(a.database_url.clone(), &new_dir).await?;

    // Into place: the target was absent or empty.
    if a.data_dir.exists() {
        std::fs::remove_dir(&a.data_dir).with_context(|| {
            format!(
                "cannot replace the empty directory {}",
                a.data_dir.display()
            )
        })?;
    }
    std::fs::rename(&new_dir, &a.data_dir).with_context(|| {
        format!(
            "cannot move the restored data into {}",
            a.data_dir.display()
        )
    })?;
    drop(staging);

    print_restore_summary(&a, &manifest, &secrets, config_text.is_some(), checked);
    Ok(ExitCode::SUCCESS)
}

/// The checks made before anything is written: an empty target, a readable manifest whose
/// backend matches the arguments, and a passphrase when the archive holds secrets. Returns the
/// manifest and the passphrase.
fn check_restore_args(a: &RestoreArgs) -> Result<(Manifest, Option<Zeroizing<String>>)> {
    if let Some(what) = occupied(&a.data_dir)? {
        bail!(
            "refusing to restore into {}: it is not empty (it holds {what}); restore into a new or empty directory",
            a.data_dir.display()
        );
    }
    let manifest = read_manifest(&a.from)?;
    match (manifest.backend.as_str(), &a.database_url) {
        ("sqlite", Some(_)) => bail!(
            "this backup is of a SQLite store: restore it without --database-url (moving a store between backends is not supported)"
        ),
        ("postgres", None) => bail!(
            "this backup is of a PostgreSQL store: give --database-url of an empty database to restore it into"
        ),
        ("sqlite" | "postgres", _) => {}
        (other, _) => bail!("this backup's backend {other:?} is unknown"),
    }
    if let Some(url) = &a.database_url {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("--database-url must be a PostgreSQL URL (postgres://...)");
        }
    }
    let passphrase = match (&a.passphrase_file, manifest.secrets.is_empty()) {
        (Some(p), _) => Some(read_passphrase(p)?),
        (None, false) => bail!(
            "this backup holds encrypted secrets ({}): give --passphrase-file",
            manifest.secrets.join(", ")
        ),
        (None, true) => None,
    };
    Ok((manifest, passphrase))
}

/// Extracts every member after the manifest into `extracted`, checking each against the
/// manifest (listed, once, with its size and SHA-256) and that none it lists is missing.
/// Returns the extracted files by member name.
fn extract_members(
    from: &Path,
    manifest: &Manifest,
    extracted: &Path,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut got: BTreeMap<String, PathBuf> = BTreeMap::new();
    let file = File::open(from)?;
    let mut tar = tar::Archive::new(file);
    for (i, entry) in tar.entries()?.enumerate() {
        let mut entry = entry.context("the archive is damaged")?;
        if i == 0 {
            continue; // the manifest, read above
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let Some(listed) = manifest.members.iter().find(|m| m.name == name) else {
            bail!("the archive holds {name:?}, which its manifest does not list: it was altered");
        };
        if got.contains_key(&name) {
            bail!("the archive holds {name:?} twice: it was altered");
        }
        let dest = extracted.join(format!("m{i}"));
        let (n, sha256) = copy_hashed(&mut entry, &dest)?;
        if n != listed.bytes || sha256 != listed.sha256 {
            bail!("{name} in the archive does not match its SHA-256 in the manifest: the archive is damaged or was altered");
        }
        got.insert(name, dest);
    }
    for m in &manifest.members {
        if !got.contains_key(&m.name) {
            bail!(
                "the archive lacks {}, which its manifest lists: it is truncated",
                m.name
            );
        }
    }
    Ok(got)
}

/// Copies an archive member into a new private file; returns its length and SHA-256.
fn copy_hashed(entry: &mut impl Read, dest: &Path) -> Result<(u64, String)> {
    let mut out = std::fs::OpenOptions::new();
    out.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        out.mode(0o600);
    }
    let mut out = out.open(dest)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = entry.read(&mut buf).context("the archive is damaged")?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        out.write_all(&buf[..k])?;
        n += k as u64;
    }
    out.sync_all()?;
    Ok((n, hex::encode(h.finalize())))
}

fn pg_restore_opts(url: &str) -> StoreOptions {
    StoreOptions {
        database_url: Some(url.to_owned()),
        sqlite_path: PathBuf::new(),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(30),
    }
}

/// Restores a PostgreSQL dump into an empty database with `pg_restore`; returns the restored
/// store's inventory.
async fn restore_postgres(url: &str, got: &BTreeMap<String, PathBuf>) -> Result<Inventory> {
    let store = Store::open_existing(&pg_restore_opts(url))
        .await
        .map_err(e)?;
    let tables = store.inventory().await.map_err(e)?;
    store.close().await;
    if !tables.counts.is_empty() {
        bail!(
            "refusing to restore into this database: it is not empty (it has {} tables, such as {}); create an empty database",
            tables.counts.len(),
            tables.counts.keys().next().cloned().unwrap_or_default()
        );
    }
    let dump = got
        .get(PG_MEMBER)
        .ok_or_else(|| anyhow!("the archive has no {PG_MEMBER}"))?
        .to_str()
        .ok_or_else(|| anyhow!("staging path is not UTF-8"))?
        .to_owned();
    let url_owned = url.to_owned();
    tokio::task::spawn_blocking(move || {
        pg_tool(
            "pg_restore",
            &url_owned,
            &[
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                &dump,
            ],
        )
    })
    .await??;
    let store = Store::open_existing(&pg_restore_opts(url))
        .await
        .map_err(e)?;
    let inv = store.inventory().await;
    store.close().await;
    inv.map_err(e)
}

/// Writes what lives outside the store into the new data directory: the TLS certificate and
/// key, the vault key, the agent's credential and the settings file (under
/// [`RESTORED_CONFIG`]). Returns the settings file's text, when the archive held one.
fn restore_outside_store(
    got: &BTreeMap<String, PathBuf>,
    secrets: &BTreeMap<String, Zeroizing<Vec<u8>>>,
    new_dir: &Path,
) -> Result<Option<Vec<u8>>> {
    if let Some(cert) = got.get(CERT_MEMBER) {
        if let Some(key) = secrets.get(SECRET_TLS_KEY) {
            let tls = new_dir.join("tls");
            create_dir_private(&tls)?;
            write_new(&tls.join("key.pem"), key, 0o600)?;
            write_new(&tls.join("cert.pem"), &std::fs::read(cert)?, 0o644)?;
        }
    }
    if let Some(key) = secrets.get(SECRET_VAULT_KEY) {
        write_new(&new_dir.join(haechi_vault::KEY_FILE), key, 0o600)?;
    }
    if let Some(c) = secrets.get(SECRET_AGENT) {
        let agent = new_dir.join("agent");
        create_dir_private(&agent)?;
        write_new(&new_dir.join(SECRET_AGENT), c, 0o600)?;
    }
    let config_text = match (secrets.get(SECRET_CONFIG), got.get(CONFIG_MEMBER)) {
        (Some(c), _) => Some(c.to_vec()),
        (None, Some(p)) => Some(std::fs::read(p)?),
        _ => None,
    };
    if let Some(text) = &config_text {
        write_new(&new_dir.join(RESTORED_CONFIG), text, 0o600)?;
    }
    Ok(config_text)
}

/// Verifies the restored store's audit chain; returns how many events were checked.
async fn verify_restored_chain(database_url: Option<String>, new_dir: &Path) -> Result<i64> {
    let verify_store = Store::open_existing(&StoreOptions {
        database_url,
        sqlite_path: new_dir.join("haechi.db"),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(30),
    })
    .await
    .map_err(e)?;
    let verified = haechi_audit::verify(&verify_store).await;
    verify_store.close().await;
    let verified = verified.map_err(e)?;
    if let Some(b) = verified.broken {
        bail!(
            "the restored audit chain is broken at event {}: {} (the archive is not usable)",
            b.seq,
            b.reason
        );
    }
    Ok(verified.checked)
}

fn print_restore_summary(
    a: &RestoreArgs,
    manifest: &Manifest,
    secrets: &BTreeMap<String, Zeroizing<Vec<u8>>>,
    config_restored: bool,
    checked: i64,
) {
    let total: i64 = manifest.counts.values().sum();
    println!(
        "restored {} ({} store, schema {}, taken {}) into {}: {} rows in {} tables; audit chain intact: {} events verified",
        a.from.display(),
        manifest.backend,
        manifest.schema_version,
        manifest.created_at,
        a.data_dir.display(),
        total,
        manifest.counts.len(),
        checked
    );
    if manifest.schema_version < haechi_store::latest_schema_version() {
        println!(
            "the store is at schema {}; the server upgrades it to {} when it starts",
            manifest.schema_version,
            haechi_store::latest_schema_version()
        );
    }
    if !secrets.contains_key(SECRET_TLS_KEY) {
        println!("note: the archive held no TLS key: the server generates a new certificate; clients must pin its new fingerprint");
    }
    match (
        secrets.contains_key(SECRET_VAULT_KEY),
        manifest.vault_mode.as_deref(),
    ) {
        (true, _) => println!("the vault master key was restored to {}", a.data_dir.join(haechi_vault::KEY_FILE).display()),
        (false, Some("Manual")) => println!(
            "the vault is in Manual mode: after the server starts, apply the master key (haechi vault unseal)"
        ),
        (false, Some(_)) => println!(
            "the vault master key was not in the archive: start the server with HAECHI_VAULT_MASTER_KEY set to it \
             (or put it in {}), or credential values stay sealed",
            a.data_dir.join(haechi_vault::KEY_FILE).display()
        ),
        (false, None) => {}
    }
    if config_restored {
        println!(
            "the settings file was restored as {}: review its paths, then pass it with --config",
            a.data_dir.join(RESTORED_CONFIG).display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_with_the_passphrase_only() {
        let mut s = BTreeMap::new();
        s.insert("vault.key".to_string(), Zeroizing::new(b"k3y".to_vec()));
        let sealed = seal("correct horse battery", &s).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("k3y"));
        let open = unseal("correct horse battery", &sealed).unwrap();
        assert_eq!(open["vault.key"].as_slice(), b"k3y");
        let err = unseal("wrong horse battery", &sealed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("passphrase does not open"), "{err}");
    }

    #[test]
    fn a_password_never_reaches_the_command_line() {
        let (url, pw) = split_pg_password("postgres://u:p%40ss@h:5432/db").unwrap();
        assert_eq!(url, "postgres://u@h:5432/db");
        assert_eq!(pw.unwrap().as_str(), "p@ss");
        let (url, pw) = split_pg_password("postgres://u@h/db").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert!(pw.is_none());
    }

    #[test]
    fn settings_with_a_secret_are_kept_encrypted() {
        assert!(config_holds_secret(
            "database_url = \"postgres://u:p@h/db\"\n"
        ));
        assert!(!config_holds_secret(
            "listen = \"0.0.0.0:8443\"\n[audit]\ndurability = \"strict\"\n"
        ));
        assert!(config_holds_secret("not toml ["));
    }
}
