//! OPMATE (CONTRACT §3): login. Node, task and instance routes join this module with the
//! agent engine.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiResult;
use crate::extract::{ClientIp, FormOrJson};
use crate::{metrics, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/opmate/user/{user_id}/login", post(login))
}

/// `POST /opmate/user/{user_id}/login` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct OpmateLogin {
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

/// OPMATE login: `{"uuid":"<t>","resultCode":"0000","resultMsg":"Success"}`.
#[utoipa::path(post, path = "/opmate/user/{user_id}/login", tag = "opmate", request_body = OpmateLogin,
    params(("user_id" = String, Path, description = "the user's id")),
    responses((status = 200, description = "`{\"uuid\",\"resultCode\":\"0000\",\"resultMsg\":\"Success\"}`"),
              (status = 401, description = "`{\"resultCode\":\"4011\",\"resultMsg\":\"...\"}`")))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(user_id): Path<String>,
    FormOrJson(body): FormOrJson<OpmateLogin>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    use secrecy::ExposeSecret;
    match state
        .identity
        .login(&user_id, &body.password, ip, "opmate")
        .await
    {
        Ok(ok) => Ok(axum::Json(json!({
            "uuid": ok.token.expose_secret(),
            "resultCode": "0000",
            "resultMsg": "Success",
        }))),
        Err(e) => {
            metrics::login_failed("opmate");
            Err(e.into())
        }
    }
}
