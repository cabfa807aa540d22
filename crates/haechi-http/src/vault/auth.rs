//! Control Room login and logout (`/v1/authentication`): the same token as every family.

use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiResult;
use crate::extract::{Caller, ClientIp, Json};
use crate::{metrics, AppState};

/// `POST /v1/authentication` body (the product's own example misspells `username` as
/// `usename`; both are accepted).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct VaultLogin {
    #[serde(alias = "usename")]
    username: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

/// Control Room login: `{"token":"<t>","user":{...}}`.
#[utoipa::path(post, path = "/v1/authentication", tag = "vault", request_body = VaultLogin,
    responses((status = 200, description = "`{\"token\",\"user\":{\"id\",\"username\",...}}`"),
              (status = 401, description = "`{\"code\",\"message\"}`")))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<VaultLogin>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    use secrecy::ExposeSecret;
    let ok = match state
        .identity
        .login(
            &body.username,
            &body.password,
            ip,
            haechi_audit::Family::Vault,
        )
        .await
    {
        Ok(ok) => ok,
        Err(e) => {
            metrics::login_failed("vault");
            return Err(e.into());
        }
    };
    let u = &ok.user;
    let roles = state.identity.list_roles().await?;
    let roles: Vec<_> = roles
        .iter()
        .filter(|r| u.roles.contains(&r.name))
        .map(|r| json!({ "id": r.id, "name": r.name, "version": 0 }))
        .collect();
    Ok(axum::Json(json!({
        "token": ok.token.expose_secret(),
        "user": {
            "id": u.id,
            "username": u.user_id,
            "domain": null,
            "firstName": u.name,
            "lastName": "",
            "version": 0,
            "principalId": u.id,
            "deleted": false,
            "roles": roles,
            "sysAssignedRoles": [],
            "groupNames": [],
            "emailAddress": null,
            "description": "",
            "disabled": u.disabled,
            "clientRegistered": false,
            "licenseFeatures": [],
        },
    })))
}

/// Revokes the token the request carries.
#[utoipa::path(post, path = "/v1/authentication/logout", tag = "vault",
    responses((status = 204, description = "logged out"), (status = 401, description = "no valid token")))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    state.identity.logout(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
