//! The OPMATE file repository (issue 24 item 8): files uploaded through the API or put by
//! running scripts, kept with their SHA-256, sealed with the vault's active data key or stored
//! as given (`files.encrypt`), at most `files.max_bytes` each.
//!
//! A running script reaches the repository only through its own agent (`haechi file get` /
//! `put` talk to a socket the agent opens for that run; the agent relays over its own
//! connection to the server): the agent gives the script a token naming its execution
//! (`hft_<exec_id>_<random>`) and tells the server the token's SHA-256 when it reports the run
//! started. The server takes a token only from the agent of the execution's node, only while
//! the execution is `WAIT` or `RUN`, and only when its hash matches; the hash is removed when
//! the execution's result is committed, and a token of an ended execution is refused whatever
//! the way it ended.
//!
//! Names: 1 to 128 letters, digits, `.`, `_` and `-`, never `..` (a name is never a path). A
//! second upload under a taken name is refused (409) unless it asks to replace the file, which
//! makes a new version (the old content is gone).

use std::sync::Arc;

use haechi_audit::{Event, Outcome};
use haechi_identity::{Actor, Caller, Permission};
use haechi_protocol::{file_token_exec, FileReply};
use haechi_store::{in_tx, read};
use haechi_types::{time::now_ms, Code, Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Exec;

/// Longest file name, in characters.
pub const MAX_FILE_NAME: usize = 128;
/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 1024;

/// A file of the repository, without its content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub name: String,
    pub description: String,
    /// Bytes of content.
    pub size: i64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Sealed with the vault's data key (`true`) or stored as given.
    pub encrypted: bool,
    /// 1 for the first upload, one more for each replace.
    pub version: i64,
    pub created_by: String,
    pub created_at: i64,
    /// Who (a user id, or `exec:<id>` for a running script) stored this version.
    pub updated_by: String,
    pub updated_at: i64,
}

/// What to store.
#[derive(Debug, Clone, Default)]
pub struct NewFile {
    pub name: String,
    pub description: String,
    /// Replace a file of that name (a new version) instead of refusing with 409.
    pub replace: bool,
}

/// The running execution a file request came from (checked by its token).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOrigin {
    pub exec_id: i64,
    pub node_id: String,
    pub task_instance_no: i64,
    pub task_id: String,
}

/// Who asks: a user through the API, or a running script through its agent.
#[derive(Clone, Copy)]
pub enum FileCaller<'a> {
    User(&'a Actor),
    Run(&'a RunOrigin),
}

impl FileCaller<'_> {
    fn event(&self, action: &str) -> Event {
        match self {
            FileCaller::User(a) => a.event(action),
            FileCaller::Run(o) => Event::new(haechi_audit::Family::Opmate, action)
                .by(format!("exec:{}", o.exec_id), None),
        }
    }

    fn who(&self) -> String {
        match self {
            FileCaller::User(a) => a.user_id.clone(),
            FileCaller::Run(o) => format!("exec:{}", o.exec_id),
        }
    }

    fn origin(&self) -> Option<&RunOrigin> {
        match self {
            FileCaller::User(_) => None,
            FileCaller::Run(o) => Some(o),
        }
    }
}

/// Checks a file name: 1 to 128 letters, digits, `.`, `_` and `-`, without `..`.
pub fn check_file_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > MAX_FILE_NAME {
        return Err(Error::field(
            "name",
            format_args!("must be 1 to {MAX_FILE_NAME} characters long"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::field(
            "name",
            format_args!(
                "may hold ASCII letters, digits, '.', '_' and '-' only (found {c:?}); a file name is not a path"
            ),
        ));
    }
    if name.contains("..") {
        return Err(Error::field(
            "name",
            "must not contain '..'; a file name is not a path",
        ));
    }
    Ok(())
}

fn check_description(d: &str) -> Result<()> {
    if d.chars().count() > MAX_DESCRIPTION || d.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::field(
            "description",
            format_args!(
                "must be at most {MAX_DESCRIPTION} characters, without control characters"
            ),
        ));
    }
    Ok(())
}

/// The vault context a version of a file is sealed for: the ciphertext opens only as that
/// name and version.
fn seal_context(name: &str, version: i64) -> String {
    format!("opmate-file:{name}:{version}")
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[derive(sqlx::FromRow)]
struct FileRow {
    name: String,
    description: String,
    size: i64,
    sha256: String,
    encryption: String,
    version: i64,
    created_by: String,
    created_at: i64,
    updated_by: String,
    updated_at: i64,
}

impl From<FileRow> for FileInfo {
    fn from(r: FileRow) -> FileInfo {
        FileInfo {
            name: r.name,
            description: r.description,
            size: r.size,
            sha256: r.sha256,
            encrypted: r.encryption == "vault",
            version: r.version,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_by: r.updated_by,
            updated_at: r.updated_at,
        }
    }
}

const INFO_COLS: &str = "name, description, size, sha256, encryption, version, created_by, created_at, updated_by, updated_at";

impl Exec {
    /// Gives the engine the vault whose active data key seals files (`files.encrypt`).
    pub fn set_file_vault(&self, vault: Arc<haechi_vault::Vault>) {
        let _ = self.file_vault.set(vault);
    }

    fn file_vault(&self) -> Result<&haechi_vault::Vault> {
        self.file_vault.get().map(|v| v.as_ref()).ok_or_else(|| {
            Error::unavailable("the file repository has no vault to seal files with")
        })
    }

    /// The size limit of the repository (`files.max_bytes`).
    pub fn max_file_bytes(&self) -> u64 {
        self.cfg.files.max_bytes
    }

    fn check_file_size(&self, len: usize) -> Result<()> {
        let max = self.cfg.files.max_bytes;
        if len as u64 > max {
            return Err(Error::new(
                Code::PayloadTooLarge,
                format!(
                    "the file is {len} bytes; the repository takes files of at most {max} bytes (files.max_bytes)"
                ),
            ));
        }
        Ok(())
    }

    /// Every file, by name, without content.
    pub async fn list_files(&self) -> Result<Vec<FileInfo>> {
        let sql = format!("SELECT {INFO_COLS} FROM opmate_files ORDER BY name");
        let rows: Vec<FileRow> = read!(self.store, |db| sqlx::query_as(&sql).fetch_all(db).await)?;
        Ok(rows.into_iter().map(FileInfo::from).collect())
    }

    /// A file without its content.
    pub async fn file_info(&self, name: &str) -> Result<FileInfo> {
        check_file_name(name)?;
        let sql = format!("SELECT {INFO_COLS} FROM opmate_files WHERE name = $1");
        let row: Option<FileRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(name)
            .fetch_optional(db)
            .await)?;
        row.map(FileInfo::from)
            .ok_or_else(|| Error::not_found(format_args!("file '{name}'")))
    }

    /// Stores a file (sealed when `files.encrypt`), audited without its content. Over the
    /// size limit → 413, a bad name → 400, a taken name without `replace` → 409; in each case
    /// nothing is stored.
    pub async fn put_file(
        &self,
        caller: FileCaller<'_>,
        new: NewFile,
        content: &[u8],
    ) -> Result<FileInfo> {
        check_file_name(&new.name)?;
        check_description(&new.description)?;
        self.check_file_size(content.len())?;
        let name = new.name.as_str();
        let current: Option<i64> = read!(self.store, |db| sqlx::query_scalar(
            "SELECT version FROM opmate_files WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(db)
        .await)?;
        if current.is_some() && !new.replace {
            return Err(Error::conflict(format!(
                "file '{name}' already exists; upload it with replace=true to store a new version"
            )));
        }
        let version = current.unwrap_or(0) + 1;
        let sha256 = sha256_hex(content);
        let (encryption, key_id, nonce, stored) = if self.cfg.files.encrypt {
            let (key_id, nonce, ct) = self
                .file_vault()?
                .seal_secret(&seal_context(name, version), content)
                .await?;
            ("vault", Some(key_id), Some(nonce), ct)
        } else {
            ("plain", None, None, content.to_vec())
        };
        let who = caller.who();
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let written = match current {
            None => in_tx!(tx, |c| {
                sqlx::query(
                "INSERT INTO opmate_files (name, description, size, sha256, encryption, key_id, nonce, content, \
                 version, created_by, created_at, updated_by, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $9, $10) ON CONFLICT (name) DO NOTHING"
            )
            .bind(name)
            .bind(&new.description)
            .bind(content.len() as i64)
            .bind(&sha256)
            .bind(encryption)
            .bind(key_id)
            .bind(nonce.as_deref())
            .bind(&stored)
            .bind(&who)
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
            })?,
            Some(old) => in_tx!(tx, |c| {
                sqlx::query(
                "UPDATE opmate_files SET description = $2, size = $3, sha256 = $4, encryption = $5, key_id = $6, \
                 nonce = $7, content = $8, version = $9, updated_by = $10, updated_at = $11 \
                 WHERE name = $1 AND version = $12"
            )
            .bind(name)
            .bind(&new.description)
            .bind(content.len() as i64)
            .bind(&sha256)
            .bind(encryption)
            .bind(key_id)
            .bind(nonce.as_deref())
            .bind(&stored)
            .bind(version)
            .bind(&who)
            .bind(now)
            .bind(old)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
            })?,
        };
        if written == 0 {
            return Err(Error::conflict(format!(
                "file '{name}' was changed by someone else meanwhile; try again"
            )));
        }
        let action = match caller {
            FileCaller::User(_) => "file.upload",
            FileCaller::Run(_) => "file.put",
        };
        haechi_audit::append(
            &mut tx,
            caller.event(action).target(name).detail(serde_json::json!({
                "size": content.len(), "sha256": sha256, "version": version,
                "encrypted": encryption == "vault", "replaced": current.is_some(),
                "origin": caller.origin(),
            })),
        )
        .await?;
        tx.commit().await?;
        self.file_info(name).await
    }

    /// A file with its content (opened with the vault's key when sealed). The read is audited
    /// (without the content) before the content is returned.
    pub async fn get_file(
        &self,
        caller: FileCaller<'_>,
        name: &str,
    ) -> Result<(FileInfo, Vec<u8>)> {
        check_file_name(name)?;
        #[derive(sqlx::FromRow)]
        struct Stored {
            key_id: Option<i64>,
            nonce: Option<Vec<u8>>,
            content: Vec<u8>,
        }
        let sql = format!("SELECT {INFO_COLS} FROM opmate_files WHERE name = $1");
        let row: Option<FileRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(name)
            .fetch_optional(db)
            .await)?;
        let Some(row) = row else {
            return Err(Error::not_found(format_args!("file '{name}'")));
        };
        let version = row.version;
        let stored: Stored = read!(self.store, |db| sqlx::query_as(
            "SELECT key_id, nonce, content FROM opmate_files WHERE name = $1 AND version = $2"
        )
        .bind(name)
        .bind(version)
        .fetch_optional(db)
        .await)?
        .ok_or_else(|| {
            Error::conflict(format!("file '{name}' was replaced meanwhile; try again"))
        })?;
        let info = FileInfo::from(row);
        let content = if info.encrypted {
            let (Some(key_id), Some(nonce)) = (stored.key_id, stored.nonce.as_deref()) else {
                return Err(Error::internal(format_args!(
                    "file '{name}' is marked sealed without a key"
                )));
            };
            self.file_vault()?
                .open_secret_bytes(&seal_context(name, version), key_id, nonce, &stored.content)
                .await?
                .to_vec()
        } else {
            stored.content
        };
        if sha256_hex(&content) != info.sha256 {
            return Err(Error::internal(format_args!(
                "file '{name}' does not match its SHA-256 (altered in the store)"
            )));
        }
        let action = match caller {
            FileCaller::User(_) => "file.download",
            FileCaller::Run(_) => "file.get",
        };
        haechi_audit::record(
            &self.store,
            caller.event(action).target(name).detail(serde_json::json!({
                "size": info.size, "sha256": info.sha256, "version": info.version,
                "origin": caller.origin(),
            })),
        )
        .await?;
        Ok((info, content))
    }

    /// Deletes a file, audited.
    pub async fn delete_file(&self, caller: &Caller, name: &str) -> Result<()> {
        caller.require(Permission::TaskDevelop)?;
        let actor = &caller.actor;
        check_file_name(name)?;
        let mut tx = self.store.begin().await?;
        let gone: Option<(String, i64)> = in_tx!(tx, |c| sqlx::query_as(
            "DELETE FROM opmate_files WHERE name = $1 RETURNING sha256, version"
        )
        .bind(name)
        .fetch_optional(&mut *c)
        .await)?;
        let Some((sha256, version)) = gone else {
            return Err(Error::not_found(format_args!("file '{name}'")));
        };
        haechi_audit::append(
            &mut tx,
            actor
                .event("file.delete")
                .target(name)
                .detail(serde_json::json!({ "sha256": sha256, "version": version })),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keeps the hash of the file token an agent gave a run of `node_id` (while that
    /// execution is open on that node; the first hash reported for it stays).
    pub(crate) async fn note_file_token(&self, node_id: &str, exec_id: i64, sha256: &str) {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            tracing::warn!(%node_id, exec_id, "ignoring a malformed file token hash");
            return;
        }
        let hash = sha256.to_ascii_lowercase();
        let r = async {
            let mut tx = self.store.begin().await?;
            in_tx!(tx, |c| sqlx::query(
                "INSERT INTO opmate_file_tokens (exec_id, node_id, token_sha256, created_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM node_executions \
                 WHERE id = $1 AND node_id = $2 AND status IN ('WAIT', 'RUN')) \
                 ON CONFLICT (exec_id) DO NOTHING"
            )
            .bind(exec_id)
            .bind(node_id)
            .bind(&hash)
            .bind(now_ms())
            .execute(&mut *c)
            .await
            .map(|_| ()))?;
            tx.commit().await
        }
        .await;
        if let Err(e) = r {
            tracing::error!(%node_id, exec_id, "cannot keep the run's file token: {e}");
        }
    }

    /// Forgets the file token of an execution whose result is committed.
    pub(crate) async fn revoke_file_token(&self, exec_id: i64) {
        let r = async {
            let mut tx = self.store.begin().await?;
            in_tx!(tx, |c| sqlx::query(
                "DELETE FROM opmate_file_tokens WHERE exec_id = $1"
            )
            .bind(exec_id)
            .execute(&mut *c)
            .await
            .map(|_| ()))?;
            tx.commit().await
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(exec_id, "cannot remove the run's file token: {e}");
        }
    }

    /// Checks a script's file token relayed by the agent of `node_id` from the run socket of
    /// execution `via`: the token's execution must be that one, on that node, still open, and
    /// the token's hash the one its agent reported. Refusals are audited (without the token).
    async fn check_file_token(&self, node_id: &str, via: i64, token: &str) -> Result<RunOrigin> {
        let invalid = || Error::unauthenticated("the file token is not valid");
        let Some(exec_id) = file_token_exec(token) else {
            return Err(invalid());
        };
        #[derive(sqlx::FromRow)]
        struct Row {
            node_id: String,
            status: String,
            instance_no: i64,
            task_id: String,
            token_sha256: Option<String>,
        }
        let row: Option<Row> = read!(self.store, |db| sqlx::query_as(
            "SELECT e.node_id, e.status, e.instance_no, i.task_id, t.token_sha256 \
             FROM node_executions e JOIN task_instances i ON i.instance_no = e.instance_no \
             LEFT JOIN opmate_file_tokens t ON t.exec_id = e.id WHERE e.id = $1"
        )
        .bind(exec_id)
        .fetch_optional(db)
        .await)?;
        let Some(row) = row else {
            return Err(invalid());
        };
        if row.node_id != node_id {
            return Err(invalid());
        }
        if !matches!(row.status.as_str(), "WAIT" | "RUN") {
            if row.token_sha256.is_some() {
                self.revoke_file_token(exec_id).await;
            }
            return Err(Error::unauthenticated(format!(
                "the file token's execution {exec_id} has ended ({}); a file token is good only while its execution runs",
                row.status
            )));
        }
        let given = sha256_hex(token.as_bytes());
        let matches = row
            .token_sha256
            .as_deref()
            .is_some_and(|h| bool::from(h.as_bytes().ct_eq(given.as_bytes())));
        if !matches {
            return Err(invalid());
        }
        if exec_id != via {
            return Err(Error::forbidden(format!(
                "the file token belongs to execution {exec_id}, not to execution {via} whose socket it came through"
            )));
        }
        Ok(RunOrigin {
            exec_id,
            node_id: row.node_id,
            task_instance_no: row.instance_no,
            task_id: row.task_id,
        })
    }

    async fn audit_refused_file_request(
        &self,
        node_id: &str,
        via: i64,
        action: &str,
        name: &str,
        e: &Error,
    ) {
        let event = Event::new(haechi_audit::Family::Opmate, action)
            .by(format!("exec:{via}"), None)
            .target(name.chars().take(MAX_FILE_NAME).collect::<String>())
            .outcome(Outcome::Denied)
            .detail(serde_json::json!({ "nodeId": node_id, "execId": via, "reason": e.message }));
        if let Err(e) = haechi_audit::record(&self.store, event).await {
            tracing::error!(%node_id, "cannot audit a refused file request: {e}");
        }
    }

    /// A script's `haechi file get`, relayed by the agent of `node_id`.
    pub(crate) async fn relay_file_get(
        &self,
        node_id: &str,
        req: u64,
        via: i64,
        token: &str,
        name: &str,
    ) -> FileReply {
        let origin = match self.check_file_token(node_id, via, token).await {
            Ok(o) => o,
            Err(e) => {
                self.audit_refused_file_request(node_id, via, "file.get", name, &e)
                    .await;
                return error_reply(req, &e);
            }
        };
        match self.get_file(FileCaller::Run(&origin), name).await {
            Ok((info, content)) => {
                let encoded_len = content.len().div_ceil(3) * 4;
                if encoded_len + 4096 > haechi_protocol::MAX_SERVER_MESSAGE {
                    return error_reply(
                        req,
                        &Error::new(
                            Code::PayloadTooLarge,
                            format!(
                                "file '{name}' ({} bytes) is too large to travel through the agent's connection",
                                info.size
                            ),
                        ),
                    );
                }
                use base64::Engine;
                FileReply {
                    req,
                    status: 200,
                    error: None,
                    size: Some(info.size as u64),
                    sha256: Some(info.sha256),
                    version: Some(info.version),
                    content: Some(base64::engine::general_purpose::STANDARD.encode(&content)),
                }
            }
            Err(e) => error_reply(req, &e),
        }
    }

    /// A script's `haechi file put`, relayed by the agent of `node_id`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn relay_file_put(
        &self,
        node_id: &str,
        req: u64,
        via: i64,
        token: &str,
        new: NewFile,
        content_b64: &str,
    ) -> FileReply {
        let origin = match self.check_file_token(node_id, via, token).await {
            Ok(o) => o,
            Err(e) => {
                self.audit_refused_file_request(node_id, via, "file.put", &new.name, &e)
                    .await;
                return error_reply(req, &e);
            }
        };
        use base64::Engine;
        let content = match base64::engine::general_purpose::STANDARD.decode(content_b64) {
            Ok(c) => c,
            Err(_) => return error_reply(req, &Error::invalid("content: is not base64")),
        };
        match self.put_file(FileCaller::Run(&origin), new, &content).await {
            Ok(info) => FileReply {
                req,
                status: 201,
                error: None,
                size: Some(info.size as u64),
                sha256: Some(info.sha256),
                version: Some(info.version),
                content: None,
            },
            Err(e) => error_reply(req, &e),
        }
    }
}

fn error_reply(req: u64, e: &Error) -> FileReply {
    FileReply::refused(req, e.status(), e.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        for good in ["a", "report.csv", "my_file-2.tar.gz", ".env"] {
            assert!(check_file_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "../x",
            "a..b",
            "..",
            "a b",
            "é",
            "x\0",
            &"n".repeat(129),
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
