//! MDRM (CONTRACT §2): login here, and the four workflow endpoints in `workflow.rs`.

mod workflow;

pub use workflow::*;

use axum::extract::State;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::{ClientIp, FormOrJson};
use crate::{metrics, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(login))
        .merge(workflow::routes())
}

/// `POST /api/v1/auth` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct MdrmLogin {
    user_id: String,
    #[schema(value_type = String, format = Password)]
    pwd: SecretString,
}

/// MDRM login: `{"message":"Success","token":"Bearer <t>"}`; the whole `token` value works as
/// an `Authorization` header.
#[utoipa::path(post, path = "/api/v1/auth", tag = "mdrm", request_body = MdrmLogin,
    responses((status = 200, description = "`{\"message\":\"Success\",\"token\":\"Bearer <t>\"}`"),
              (status = 401, description = "`{\"message\":\"<reason>\"}`")))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    FormOrJson(body): FormOrJson<MdrmLogin>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    use secrecy::ExposeSecret;
    match state
        .identity
        .login(&body.user_id, &body.pwd, ip, haechi_audit::Family::Mdrm)
        .await
    {
        Ok(ok) => Ok(axum::Json(json!({
            "message": "Success",
            "token": format!("Bearer {}", ok.token.expose_secret()),
        }))),
        Err(e) => {
            metrics::login_failed("mdrm");
            Err(e.into())
        }
    }
}
