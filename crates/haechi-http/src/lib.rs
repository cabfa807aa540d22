//! Haechi's HTTP layer: one router on one port serving every product API family (CONTRACT §0),
//! each in its own module and its own error envelope, over one identity.
//!
//! Layout: `error` (envelopes), `extract` (tokens, bodies, client address), one module per
//! family (`mdrm`, `opmate`, `vault`, `admin`), `metrics`, `openapi` and `serve` (the accept
//! loop). Engines are reached through [`AppState`]; they know nothing of wire formats.

pub mod admin;
pub mod console;
pub mod dbsafer;
pub mod error;
pub mod extract;
pub mod mdrm;
pub mod metrics;
pub mod openapi;
pub mod opmate;
pub mod serve;
pub mod vault;

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use axum::extract::DefaultBodyLimit;
use axum::Router;
use haechi_identity::Identity;
use haechi_store::Store;
use ipnet::IpNet;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, ApiResult, Family};
pub use serve::{serve, ServeLimits};

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The server's UTC offset, seconds (dates in the OPMATE family).
    pub utc_offset_secs: i32,
    /// Who may read `GET /metrics`.
    pub metrics_access: MetricsAccess,
    /// SHA-256 fingerprint of the server's certificate (the console shows it in the
    /// `haechi agent --server-fingerprint` command); `None` over plain HTTP.
    pub tls_fingerprint: Option<String>,
}

/// Who may read `GET /metrics` (setting `metrics_access`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// A client on a loopback address (a local Prometheus agent, a sidecar) without a token;
    /// any other client with the token of a user holding `admin.settings`.
    #[default]
    Loopback,
    /// Every client with the token of a user holding `admin.settings`.
    Token,
    /// Anyone who reaches the port, without a token.
    Open,
}

/// What every handler can reach.
pub struct Services {
    pub store: Store,
    pub identity: Arc<Identity>,
    /// The execution engine: nodes, agents, tasks, task instances.
    pub exec: Arc<haechi_exec::Exec>,
    /// The credential vault engine.
    pub vault: Arc<haechi_vault::Vault>,
    /// The database gateway engine: DBSAFER policies, targets and accounts.
    pub dbgate: Arc<haechi_dbgate::DbGate>,
    /// The workflow engine (MDRM).
    pub workflows: Arc<haechi_workflow::Workflows>,
    pub http: HttpConfig,
    pub metrics: PrometheusHandle,
}

/// Shared state of the router. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        AppState(Arc::new(services))
    }
}

impl Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// Every API family's routes on the base document ([`openapi::ApiDoc`]): each documented route
/// is declared once, in its family's router, and its `#[utoipa::path]` gives both the route and
/// its entry in the document.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(admin::routes())
        .merge(admin::db::routes())
        .merge(dbsafer::routes())
        .merge(mdrm::routes())
        .merge(opmate::routes())
        .merge(vault::routes())
}

/// The OpenAPI document, built once: by [`router`] from the routes it serves, or on first use.
static OPENAPI_DOCUMENT: OnceLock<String> = OnceLock::new();

/// The OpenAPI document of every documented route, as pretty JSON (the exact form of the
/// committed `docs/openapi.json`); `GET /api/v1/openapi.json` serves it.
pub fn openapi_document() -> &'static str {
    OPENAPI_DOCUMENT.get_or_init(|| openapi::to_json(api_routes().into_openapi()))
}

/// The whole router: every family, the console, metrics, and the envelope/limit layers.
pub fn router(state: AppState) -> Router {
    let limit = state.http.max_body_bytes;
    let (api, document) = api_routes().split_for_parts();
    OPENAPI_DOCUMENT.get_or_init(|| openapi::to_json(document));
    Router::new()
        .merge(api)
        .merge(console::routes())
        .route("/", axum::routing::get(console::root))
        .route("/metrics", axum::routing::get(metrics_text))
        .layer(axum::middleware::from_fn(metrics::track))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(error::envelope))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError(haechi_types::Error::new(
        haechi_types::Code::NotFound,
        "no such route; see /api/v1/openapi.json",
    ))
}

/// The Prometheus text, for whom `metrics_access` lets in (401 without a token, 403 without
/// `admin.settings`).
async fn metrics_text(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    use axum::extract::FromRequestParts;
    let (mut parts, _) = req.into_parts();
    let extract::ClientIp(ip) = extract::ClientIp::from_request_parts(&mut parts, &state).await?;
    let open = match state.http.metrics_access {
        MetricsAccess::Open => true,
        MetricsAccess::Loopback => ip.is_loopback(),
        MetricsAccess::Token => false,
    };
    if !open {
        let caller = extract::Caller::from_request_parts(&mut parts, &state).await?;
        caller.require(haechi_identity::Permission::AdminSettings)?;
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    ))
}
