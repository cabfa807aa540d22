//! Errors on the wire. Handlers return [`ApiError`]; it carries the internal [`Error`] out of
//! the handler untouched, and [`envelope`] renders it in the envelope of the family the request
//! belongs to (decided by path prefix, CONTRACT §0). Framework responses that carry no
//! `ApiError` (unknown route, wrong method, a rejected body) are rendered the same way, so
//! every error a client sees has its family's shape.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use haechi_types::{Code, Error};
use serde_json::json;

/// An error leaving a handler.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Clone)]
struct Pending(Arc<Error>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = status.into_response();
        res.extensions_mut().insert(Pending(Arc::new(self.0)));
        res
    }
}

/// The API families, each with its own error envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Haechi's own admin API: `{"code","message","field"?}`.
    Admin,
    /// MDRM login: `{"message"}`.
    MdrmAuth,
    /// MDRM workflow control: `{"result":"fail","message"}`.
    MdrmWorkflow,
    /// OPMATE: `{"resultCode","resultMsg"}`.
    Opmate,
    /// DBSAFER (a Spring service): `{"timestamp","status","error","message","path"}`.
    Dbsafer,
    /// Control Room credential vault: `{"code","message"}`.
    Vault,
}

impl Family {
    pub fn of(path: &str) -> Family {
        if path == "/api/v1/auth" {
            Family::MdrmAuth
        } else if path.starts_with("/services/workflow") {
            Family::MdrmWorkflow
        } else if path.starts_with("/opmate") {
            Family::Opmate
        } else if path.starts_with("/dbsafer") {
            Family::Dbsafer
        } else if path.starts_with("/v1/authentication") || path.starts_with("/v2/credentialvault")
        {
            Family::Vault
        } else {
            Family::Admin
        }
    }

    /// The audit `family` of requests of this family.
    pub fn audit_family(self) -> haechi_audit::Family {
        match self {
            Family::Admin => haechi_audit::Family::Admin,
            Family::MdrmAuth | Family::MdrmWorkflow => haechi_audit::Family::Mdrm,
            Family::Opmate => haechi_audit::Family::Opmate,
            Family::Dbsafer => haechi_audit::Family::Dbsafer,
            Family::Vault => haechi_audit::Family::Vault,
        }
    }

    pub fn render(self, e: &Error, path: &str) -> Response {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::NOT_MODIFIED {
            return status.into_response();
        }
        let body = match self {
            Family::Admin => match &e.field {
                Some(f) => json!({ "code": e.code.as_str(), "message": e.message, "field": f }),
                None => json!({ "code": e.code.as_str(), "message": e.message }),
            },
            Family::MdrmAuth => json!({ "message": e.message }),
            Family::MdrmWorkflow => json!({ "result": "fail", "message": e.message }),
            Family::Opmate => json!({ "resultCode": opmate_code(e.code), "resultMsg": e.message }),
            Family::Dbsafer => json!({
                "timestamp": haechi_types::time::iso_ms(haechi_types::time::now_ms()),
                "status": status.as_u16(),
                "error": status.canonical_reason().unwrap_or("Error"),
                "message": e.message,
                "path": path,
            }),
            Family::Vault => json!({ "code": vault_code(e.code), "message": e.message }),
        };
        let mut res = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// OPMATE result codes: `0000` is success; errors carry the HTTP status and a detail digit.
pub fn opmate_code(code: Code) -> &'static str {
    match code {
        Code::InvalidRequest => "4000",
        Code::MalformedBody => "4001",
        Code::Unauthenticated => "4010",
        Code::LoginFailed => "4011",
        Code::AccountLocked => "4012",
        Code::Forbidden => "4030",
        Code::IpNotAllowed => "4031",
        Code::NotFound => "4040",
        Code::MethodNotAllowed => "4050",
        Code::Conflict => "4090",
        Code::Locked => "4230",
        Code::PayloadTooLarge => "4130",
        Code::UnsupportedMediaType => "4150",
        Code::NotModified => "3040",
        Code::Unavailable => "5030",
        Code::Internal => "5000",
    }
}

fn vault_code(code: Code) -> &'static str {
    match code {
        Code::InvalidRequest => "request.invalid",
        Code::MalformedBody => "request.malformed",
        Code::PayloadTooLarge => "request.too_large",
        Code::UnsupportedMediaType => "request.media_type",
        Code::Unauthenticated => "auth.required",
        Code::LoginFailed => "auth.failed",
        Code::AccountLocked => "auth.locked",
        Code::Forbidden => "access.denied",
        Code::IpNotAllowed => "access.ip_denied",
        Code::NotFound => "not.found",
        Code::MethodNotAllowed => "method.not_allowed",
        Code::Conflict => "version.conflict",
        Code::Locked => "resource.locked",
        Code::NotModified => "not.modified",
        Code::Unavailable => "vault.sealed",
        Code::Internal => "server.error",
    }
}

/// The request's correlation id, decided once by [`envelope`] and kept in the request's
/// extensions: the caller context, the log span and the `X-Request-Id` answer header share it.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// The outermost middleware: gives the request its id (the client's `X-Request-Id` when it is
/// usable, else a fresh one), runs it inside a `request` log span carrying that id (so an internal
/// error's log line names the request), answers the id in `X-Request-Id`, and renders every
/// error in the request's family envelope.
pub async fn envelope(mut req: Request, next: Next) -> Response {
    let id: Arc<str> = crate::extract::request_id_of(req.headers()).into();
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", id = %id, method = %req.method());
    let mut res = tracing::Instrument::instrument(enveloped(req, next), span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

async fn enveloped(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let family = Family::of(&path);
    // A NUL byte (`%00`) names nothing Haechi stores (every name refuses control characters),
    // and PostgreSQL refuses it in text: answer 400 here for every route and family rather than
    // let a lookup fail deep inside.
    let query = req.uri().query().unwrap_or("");
    if [path.as_str(), query].iter().any(|s| {
        s.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%00"))
    }) {
        return family.render(
            &Error::invalid("the path and query must not contain a NUL byte (%00)"),
            &path,
        );
    }
    // The web console renders its own errors as pages (`console::frame`).
    if path == "/" || path == "/console" || path.starts_with("/console/") {
        return next.run(req).await;
    }
    let mut res = next.run(req).await;
    if let Some(Pending(e)) = res.extensions_mut().remove::<Pending>() {
        return family.render(&e, &path);
    }
    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        let is_json = res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if !is_json {
            return family.render(&framework_error(status), &path);
        }
    }
    res
}

/// Errors produced by the framework rather than a handler.
fn framework_error(status: StatusCode) -> Error {
    match status {
        StatusCode::NOT_FOUND => {
            Error::new(Code::NotFound, "no such route; see /api/v1/openapi.json")
        }
        StatusCode::METHOD_NOT_ALLOWED => Error::new(
            Code::MethodNotAllowed,
            "this route does not accept that HTTP method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            Error::new(Code::PayloadTooLarge, "the request body is too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            Error::new(Code::UnsupportedMediaType, "unsupported content type")
        }
        s if s.is_client_error() => Error::invalid(format!("bad request ({})", s.as_u16())),
        _ => Error::internal(format_args!("framework returned {status}")),
    }
}

/// A plain JSON 200 (used where a family wants the default status).
pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
