//! Attribute value routes: the values themselves, decrypted for callers allowed to consume them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use haechi_types::Error;

use super::path_id;
use super::wire::{value_items, List, ValueIn, ValueOut, ValueUpdateIn};
use crate::error::ApiResult;
use crate::extract::{need, Allowed, Json};
use crate::AppState;

/// The engine names items `[i]`; a wrapped body's items are `list[i]`.
fn in_list(e: Error, wrapped: bool) -> Error {
    match (&e.field, wrapped) {
        (Some(f), true) if f.starts_with('[') => {
            let field = format!("list{f}");
            let message = e
                .message
                .strip_prefix(&format!("{f}: "))
                .unwrap_or(&e.message)
                .to_owned();
            Error::field(field, message)
        }
        _ => e,
    }
}

/// Stores values (`[{"credentialAttributeId","value"}]`, or `{"list":[...]}`): 201 with the
/// stored values. The owner sets standard attributes; the owner and consumers each set their
/// own value of `userProvided` ones. Also served at `.../attributevalue`.
#[utoipa::path(post, path = "/v2/credentialvault/credentials/{id}/attributevalues", tag = "vault",
    request_body = Vec<ValueIn>,
    params(("id" = i64, Path, description = "credential id")),
    responses((status = 201, body = Vec<ValueOut>), (status = 400), (status = 403), (status = 404), (status = 409),
              (status = 503, description = "the vault is sealed")))]
pub async fn create_values(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<(StatusCode, axum::Json<Vec<ValueOut>>)> {
    let id = path_id("credential", &id)?;
    let items = value_items::<ValueIn>(body)?;
    let wrapped = items.first().is_some_and(|(at, _)| at.starts_with("list"));
    let items = items.into_iter().map(|(_, v)| v.into()).collect();
    let values = state
        .vault
        .create_values(&caller, id, items)
        .await
        .map_err(|e| in_list(e, wrapped))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(values.iter().map(ValueOut::from).collect()),
    ))
}

/// The values the caller may use: standard attributes' values and the caller's own values of
/// `userProvided` ones (owner and consumers only). Every read is audited.
#[utoipa::path(get, path = "/v2/credentialvault/credentials/{id}/attributevalues", tag = "vault",
    params(("id" = i64, Path, description = "credential id")),
    responses((status = 200, body = List<ValueOut>), (status = 403), (status = 404),
              (status = 503, description = "the vault is sealed")))]
pub async fn list_values(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<List<ValueOut>>> {
    let id = path_id("credential", &id)?;
    let values = state.vault.read_values(&caller, id).await?;
    Ok(axum::Json(List::of(
        values.iter().map(ValueOut::from).collect(),
    )))
}

/// Changes one value (`[{"id","version","value","credentialAttributeId"}]`): 200 with the value
/// in an array; 409 on a stale version; 304 when it is the same value.
#[utoipa::path(put, path = "/v2/credentialvault/credentials/{id}/attributevalues/{value_id}", tag = "vault",
    request_body = Vec<ValueUpdateIn>,
    params(("id" = i64, Path, description = "credential id"), ("value_id" = i64, Path, description = "value id")),
    responses((status = 200, body = Vec<ValueOut>), (status = 304), (status = 400), (status = 403), (status = 404),
              (status = 409), (status = 503, description = "the vault is sealed")))]
pub async fn update_value(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path((id, value_id)): Path<(String, String)>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<axum::Json<Vec<ValueOut>>> {
    let id = path_id("credential", &id)?;
    let value_id = path_id("value", &value_id)?;
    let mut items = value_items::<ValueUpdateIn>(body)?;
    if items.len() != 1 {
        return Err(Error::invalid(format!(
            "send exactly one value to update (got {})",
            items.len()
        ))
        .into());
    }
    let (at, item) = items.remove(0);
    let wrapped = at.starts_with("list");
    let patch = item.into_patch(value_id, &at)?;
    let value = state
        .vault
        .update_value(&caller, id, value_id, patch)
        .await
        .map_err(|e| in_list(e, wrapped))?;
    Ok(axum::Json(vec![ValueOut::from(&value)]))
}

/// Deletes one value (also served at `.../values/{value_id}`).
#[utoipa::path(delete, path = "/v2/credentialvault/credentials/{id}/attributevalues/{value_id}", tag = "vault",
    params(("id" = i64, Path, description = "credential id"), ("value_id" = i64, Path, description = "value id")),
    responses((status = 204), (status = 403), (status = 404), (status = 503, description = "the vault is sealed")))]
pub async fn delete_value(
    State(state): State<AppState>,
    caller: Allowed<need::VaultUse>,
    Path((id, value_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = path_id("credential", &id)?;
    let value_id = path_id("value", &value_id)?;
    state.vault.delete_value(&caller, id, value_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
