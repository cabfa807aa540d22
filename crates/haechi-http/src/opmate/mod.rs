//! OPMATE (CONTRACT §3): login, nodes, tasks and task instances, in OPMATE's own shapes
//! (`resultCode`/`resultMsg` envelopes, `YYYYMMDDHHMMSS` dates in the server's time zone,
//! `encbase64out`). The engine behind them is `haechi-exec`; this module only translates.
//!
//! `wire.rs` holds the shared translation helpers; one file per resource: `nodes.rs`,
//! `tasks.rs`, `instances.rs`.

mod instances;
mod nodes;
mod tasks;
pub(crate) mod wire;

pub use instances::*;
pub use nodes::*;
pub use tasks::*;
pub use wire::node_status as node_status_filter;

use axum::extract::{Path, State};
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
        .routes(routes!(nodes::list_nodes))
        .routes(routes!(tasks::list_tasks))
        .routes(routes!(
            instances::create_instance,
            instances::list_instances
        ))
        .routes(routes!(instances::list_instance_nodes))
        .routes(routes!(instances::rerun_node, instances::get_instance_node))
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
        .login(&user_id, &body.password, ip, haechi_audit::Family::Opmate)
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
