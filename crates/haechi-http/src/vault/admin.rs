//! Haechi's own vault administration under `/api/v1/vault` (`vault.settings`): status,
//! unseal, data key rotation and master key change. The CLI's `haechi vault` calls these.

use axum::extract::State;
use haechi_vault::Status;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::ApiResult;
use crate::extract::{need, Allowed, Json};
use crate::AppState;

/// The vault as this server sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VaultStatus {
    /// `Express` or `Manual` (shared by every server on the store).
    mode: &'static str,
    /// Whether this server holds the master key (false = sealed).
    applied: bool,
    /// Where this server's key came from: `environment`, `file` or `applied`.
    key_source: Option<&'static str>,
    /// The Express key file of this server.
    key_file: String,
    key_file_present: bool,
    active_data_key: i64,
    data_keys: i64,
    credentials: i64,
    values: i64,
    lockers: i64,
}

impl From<Status> for VaultStatus {
    fn from(s: Status) -> Self {
        VaultStatus {
            mode: s.mode.as_str(),
            applied: s.applied,
            key_source: s.key_source.map(|k| k.as_str()),
            key_file: s.key_file.display().to_string(),
            key_file_present: s.key_file_present,
            active_data_key: s.active_data_key,
            data_keys: s.data_keys,
            credentials: s.credentials,
            values: s.values,
            lockers: s.lockers,
        }
    }
}

/// The vault's mode, seal state, keys and counts.
#[utoipa::path(get, path = "/api/v1/vault/status", tag = "vault-admin",
    responses((status = 200, body = VaultStatus), (status = 401), (status = 403)))]
pub async fn vault_status(
    State(state): State<AppState>,
    _caller: Allowed<need::VaultSettings>,
) -> ApiResult<axum::Json<VaultStatus>> {
    Ok(axum::Json(state.vault.status().await?.into()))
}

/// `POST /api/v1/vault/unseal` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct UnsealIn {
    /// The master key, base64 of 32 bytes.
    #[schema(value_type = String, format = Password)]
    key: SecretString,
}

/// The result of an unseal.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UnsealOut {
    applied: bool,
    /// False when the vault was already unsealed.
    unsealed: bool,
}

/// Applies the master key (as `PUT /v2/credentialvault/keys/private`); 400 for a wrong key.
#[utoipa::path(post, path = "/api/v1/vault/unseal", tag = "vault-admin", request_body = UnsealIn,
    responses((status = 200, body = UnsealOut), (status = 400), (status = 401), (status = 403)))]
pub async fn vault_unseal(
    State(state): State<AppState>,
    caller: Allowed<need::VaultSettings>,
    Json(body): Json<UnsealIn>,
) -> ApiResult<axum::Json<UnsealOut>> {
    let unsealed = state.vault.unseal(&caller, "key", &body.key).await?;
    Ok(axum::Json(UnsealOut {
        applied: true,
        unsealed,
    }))
}

/// The result of a data key rotation.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RotateOut {
    /// The new data key's id.
    key_id: i64,
    /// Values re-encrypted under it.
    reencrypted: i64,
    /// Old data keys deleted.
    retired_keys: i64,
}

/// Re-encrypts every value under a new data key in one transaction and deletes the old keys
/// (the vault must be unsealed).
#[utoipa::path(post, path = "/api/v1/vault/rotate-data-key", tag = "vault-admin",
    responses((status = 200, body = RotateOut), (status = 401), (status = 403), (status = 503, description = "sealed")))]
pub async fn rotate_data_key(
    State(state): State<AppState>,
    caller: Allowed<need::VaultSettings>,
) -> ApiResult<axum::Json<RotateOut>> {
    let r = state.vault.rotate_data_key(&caller).await?;
    Ok(axum::Json(RotateOut {
        key_id: r.key_id,
        reencrypted: r.reencrypted,
        retired_keys: r.retired_keys,
    }))
}

/// `POST /api/v1/vault/change-master-key` body. Generate a new key with
/// `openssl rand -base64 32` (the CLI does it for you).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ChangeKeyIn {
    #[schema(value_type = String, format = Password)]
    current_key: SecretString,
    #[schema(value_type = String, format = Password)]
    new_key: SecretString,
}

/// The result of a master key change.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ChangeKeyOut {
    rewrapped_keys: i64,
    /// The Express key file now holds the new key.
    key_file_updated: bool,
    /// What the operator must still do, if anything.
    warning: Option<String>,
}

/// Re-wraps every data key under the new master key (values are untouched) in one transaction.
#[utoipa::path(post, path = "/api/v1/vault/change-master-key", tag = "vault-admin", request_body = ChangeKeyIn,
    responses((status = 200, body = ChangeKeyOut), (status = 400), (status = 401), (status = 403), (status = 503, description = "sealed")))]
pub async fn change_master_key(
    State(state): State<AppState>,
    caller: Allowed<need::VaultSettings>,
    Json(body): Json<ChangeKeyIn>,
) -> ApiResult<axum::Json<ChangeKeyOut>> {
    let r = state
        .vault
        .change_master_key(&caller, &body.current_key, &body.new_key)
        .await?;
    Ok(axum::Json(ChangeKeyOut {
        rewrapped_keys: r.rewrapped_keys,
        key_file_updated: r.key_file_updated,
        warning: r.warning,
    }))
}
