//! Database targets and accounts behind the gateway (CONTRACT §7), `dbpolicy.manage`.
//! An account's password stays in the vault: registering one needs the caller to be able to
//! read the credential's value, and only the reference is kept.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::Router;
use haechi_dbgate::{Account, NewAccount, NewTarget, Target};
use serde::Serialize;

use crate::error::ApiResult;
use crate::extract::{need, Allowed, Json};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/db/targets", get(list_targets).post(create_target))
        .route(
            "/api/v1/db/targets/{name}",
            get(get_target).delete(delete_target),
        )
        .route(
            "/api/v1/db/targets/{name}/accounts",
            get(list_accounts).post(create_account),
        )
        .route(
            "/api/v1/db/targets/{name}/accounts/{account}",
            delete(delete_account),
        )
}

/// All targets.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TargetList {
    targets: Vec<Target>,
}

/// A target's accounts.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AccountList {
    accounts: Vec<Account>,
}

/// Registers a database server (`postgres` or `mysql`); clients reach it with its `name` as
/// the database name.
#[utoipa::path(post, path = "/api/v1/db/targets", tag = "db", request_body = NewTarget,
    responses((status = 201, body = Target), (status = 400), (status = 401), (status = 403), (status = 409)))]
pub async fn create_target(
    State(state): State<AppState>,
    caller: Allowed<need::DbPolicyManage>,
    Json(new): Json<NewTarget>,
) -> ApiResult<impl IntoResponse> {
    let t = state.dbgate.create_target(&caller.actor(), new).await?;
    Ok((StatusCode::CREATED, axum::Json(t)))
}

/// Lists targets.
#[utoipa::path(get, path = "/api/v1/db/targets", tag = "db",
    responses((status = 200, body = TargetList), (status = 401), (status = 403)))]
pub async fn list_targets(
    State(state): State<AppState>,
    _caller: Allowed<need::DbPolicyManage>,
) -> ApiResult<axum::Json<TargetList>> {
    Ok(axum::Json(TargetList {
        targets: state.dbgate.list_targets().await?,
    }))
}

/// Reads a target.
#[utoipa::path(get, path = "/api/v1/db/targets/{name}", tag = "db", params(("name" = String, Path)),
    responses((status = 200, body = Target), (status = 401), (status = 403), (status = 404)))]
pub async fn get_target(
    State(state): State<AppState>,
    _caller: Allowed<need::DbPolicyManage>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Target>> {
    Ok(axum::Json(state.dbgate.get_target(&name).await?))
}

/// Deletes a target and its accounts.
#[utoipa::path(delete, path = "/api/v1/db/targets/{name}", tag = "db", params(("name" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub async fn delete_target(
    State(state): State<AppState>,
    caller: Allowed<need::DbPolicyManage>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.dbgate.delete_target(&caller.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Registers a database account whose password is attribute `attribute` of vault credential
/// `credentialId` (the caller must be able to read that value).
#[utoipa::path(post, path = "/api/v1/db/targets/{name}/accounts", tag = "db", params(("name" = String, Path)),
    request_body = NewAccount,
    responses((status = 201, body = Account), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn create_account(
    State(state): State<AppState>,
    caller: Allowed<need::DbPolicyManage>,
    Path(name): Path<String>,
    Json(new): Json<NewAccount>,
) -> ApiResult<impl IntoResponse> {
    let a = state
        .dbgate
        .create_account(&caller.principal, &caller.actor(), &name, new)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(a)))
}

/// Lists a target's accounts (never their passwords).
#[utoipa::path(get, path = "/api/v1/db/targets/{name}/accounts", tag = "db", params(("name" = String, Path)),
    responses((status = 200, body = AccountList), (status = 401), (status = 403), (status = 404)))]
pub async fn list_accounts(
    State(state): State<AppState>,
    _caller: Allowed<need::DbPolicyManage>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<AccountList>> {
    Ok(axum::Json(AccountList {
        accounts: state.dbgate.list_accounts(&name).await?,
    }))
}

/// Removes an account from a target.
#[utoipa::path(delete, path = "/api/v1/db/targets/{name}/accounts/{account}", tag = "db",
    params(("name" = String, Path), ("account" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub async fn delete_account(
    State(state): State<AppState>,
    caller: Allowed<need::DbPolicyManage>,
    Path((name, account)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state
        .dbgate
        .delete_account(&caller.actor(), &name, &account)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
