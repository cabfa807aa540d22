//! Database targets and accounts behind the gateway (CONTRACT §7), `dbpolicy.manage`.
//! An account's password stays in the vault: registering one needs the caller to be able to
//! read the credential's value, and only the reference is kept.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use haechi_dbgate::SimulateInput;
use haechi_types::Error;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::wire::all;
use super::wire::db::{Account, NewAccount, NewTarget, SessionView, Simulation, Target};
use crate::error::ApiResult;
use crate::extract::{need, Allowed, Json};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_targets, create_target))
        .routes(routes!(get_target, delete_target))
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(delete_account))
        .routes(routes!(simulate))
        .routes(routes!(list_sessions))
        .routes(routes!(end_session))
}

/// What to simulate: a person (`userId`), the address they connect from, the target (its
/// name), the database account, and a statement string.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulateBody {
    pub user_id: String,
    /// An IPv4 or IPv6 address.
    pub client_ip: String,
    pub target: String,
    pub account: String,
    pub sql: String,
}

impl SimulateBody {
    /// The engine's input; 400 naming the field for a bad address.
    pub fn input(self) -> Result<SimulateInput, Error> {
        let ip = self.client_ip.trim();
        let client_ip = ip.parse().map_err(|_| {
            Error::field(
                "clientIp",
                format_args!("'{ip}' is not an IP address (use e.g. 10.0.0.1 or 2001:db8::1)"),
            )
        })?;
        for (field, v) in [
            ("userId", &self.user_id),
            ("target", &self.target),
            ("account", &self.account),
        ] {
            if v.trim().is_empty() {
                return Err(Error::field(field, "is required"));
            }
        }
        Ok(SimulateInput {
            user_id: self.user_id,
            client_ip,
            target: self.target,
            account: self.account,
            sql: self.sql,
        })
    }
}

/// Would the gateway run this statement string for this person now? The gateway's own
/// classifier, policy matching and verdict function answer, with the policy that decides and
/// the privileges the string needs. Changes nothing.
#[utoipa::path(post, path = "/api/v1/db/simulate", tag = "db", request_body = SimulateBody,
    responses((status = 200, body = Simulation), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn simulate(
    State(state): State<AppState>,
    _caller: Allowed<need::DbPolicyManage>,
    Json(body): Json<SimulateBody>,
) -> ApiResult<axum::Json<Simulation>> {
    Ok(axum::Json(Simulation::from(
        &state.dbgate.simulate(body.input()?).await?,
    )))
}

/// The sessions open through this server's gateways.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionList {
    sessions: Vec<SessionView>,
}

/// Lists the sessions open through this server's gateways now (who, which account and
/// target, from where, since when, how many statements).
#[utoipa::path(get, path = "/api/v1/db/sessions", tag = "db",
    responses((status = 200, body = SessionList), (status = 401), (status = 403)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    _caller: Allowed<need::DbPolicyManage>,
) -> ApiResult<axum::Json<SessionList>> {
    Ok(axum::Json(SessionList {
        sessions: all(&state.dbgate.open_sessions()),
    }))
}

/// Ends an open gateway session: its connection is closed and nothing more of it runs.
#[utoipa::path(delete, path = "/api/v1/db/sessions/{id}", tag = "db", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub async fn end_session(
    State(state): State<AppState>,
    caller: Allowed<need::DbPolicyManage>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.dbgate.end_session(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
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
    let t = state.dbgate.create_target(&caller, new.into()).await?;
    Ok((StatusCode::CREATED, axum::Json(Target::from(&t))))
}

/// Lists targets.
#[utoipa::path(get, path = "/api/v1/db/targets", tag = "db",
    responses((status = 200, body = TargetList), (status = 401), (status = 403)))]
pub async fn list_targets(
    State(state): State<AppState>,
    _caller: Allowed<need::DbPolicyManage>,
) -> ApiResult<axum::Json<TargetList>> {
    Ok(axum::Json(TargetList {
        targets: all(&state.dbgate.list_targets().await?),
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
    Ok(axum::Json(Target::from(
        &state.dbgate.get_target(&name).await?,
    )))
}

/// Deletes a target and its accounts.
#[utoipa::path(delete, path = "/api/v1/db/targets/{name}", tag = "db", params(("name" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub async fn delete_target(
    State(state): State<AppState>,
    caller: Allowed<need::DbPolicyManage>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.dbgate.delete_target(&caller, &name).await?;
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
        .create_account(&caller, &name, new.into())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(Account::from(&a))))
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
        accounts: all(&state.dbgate.list_accounts(&name).await?),
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
        .delete_account(&caller, &name, &account)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
