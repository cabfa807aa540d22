//! Request extractors whose rejections are [`ApiError`]s, so every bad input is a 4xx in the
//! family's envelope with a message that names the field.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use bytes::Bytes;
use haechi_identity::{Origin, Permission};
use haechi_store::Paging;
use haechi_types::{Code, Error};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

/// The TCP peer of the connection, set by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The client's address: the TCP peer, or for a peer among `trusted_proxies`, the nearest
/// untrusted address in `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, state)?))
    }
}

fn client_ip(parts: &Parts, state: &AppState) -> Result<IpAddr, ApiError> {
    let peer = parts
        .extensions
        .get::<PeerAddr>()
        .map(|p| canonical(p.0.ip()))
        .ok_or_else(|| Error::internal("request without a peer address"))?;
    let trusted = &state.http.trusted_proxies;
    if trusted.is_empty() || !trusted.iter().any(|n| n.contains(&peer)) {
        return Ok(peer);
    }
    let hops: Vec<IpAddr> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect();
    Ok(hops
        .into_iter()
        .rev()
        .find(|ip| !trusted.iter().any(|n| n.contains(ip)))
        .unwrap_or(peer))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The token of a request, from any of the four carriers (CONTRACT §1):
/// `Authorization: Bearer <t>`, `Authorization: <t>`, `X-Authorization: <t>`, query `auth=<t>`.
pub fn token_of(parts: &Parts) -> Option<String> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let strip = |v: &str| {
        let v = v.trim();
        match v.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim().to_owned(),
            _ => v.to_owned(),
        }
    };
    if let Some(v) = header("authorization") {
        return Some(strip(v));
    }
    if let Some(v) = header("x-authorization") {
        return Some(strip(v));
    }
    let query = parts.uri.query()?;
    form_urlencoded_pairs(query)
        .find(|(k, _)| k == "auth")
        .map(|(_, v)| strip(&v))
}

fn form_urlencoded_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .unwrap_or_default()
        .into_iter()
}

/// An authenticated caller: the engines' one caller context ([`haechi_identity::Caller`]),
/// built once per request: who (from the token), from where (the client address), through
/// which API family (from the path: each family's routes have their own prefix) and the
/// request's id. Rejects with 401 (no or bad token) or 403 (address not allowed for the
/// account). The console builds its own, with the console as origin (`console::session`).
pub use haechi_identity::Caller;

/// The audit origin of a request to `path`: the API family its prefix belongs to.
pub fn origin_of(path: &str) -> Origin {
    Origin::Api(crate::error::Family::of(path).audit_family())
}

/// The request's id, as [`crate::error::envelope`] decided it for this request.
pub fn request_id(parts: &Parts) -> String {
    match parts.extensions.get::<crate::error::RequestId>() {
        Some(id) => id.0.to_string(),
        None => request_id_of(&parts.headers),
    }
}

/// A request id from headers: the client's `X-Request-Id` when it is a short run of visible
/// ASCII (a proxy's or a client's correlation id), else a fresh random one.
pub fn request_id_of(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 8]>()))
}

/// `Ok` when the caller holds any of `any`, else the 403 naming the first.
pub fn require_any(caller: &Caller, any: &[Permission]) -> Result<(), ApiError> {
    match any.iter().find(|p| caller.can(**p)) {
        Some(_) => Ok(()),
        None => Ok(caller.require(any[0])?),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let ip = client_ip(parts, state)?;
        let token = token_of(parts).ok_or_else(|| {
            Error::unauthenticated(
                "this route needs a token: send 'Authorization: Bearer <token>' (or X-Authorization, or ?auth=)",
            )
        })?;
        let principal = state.identity.authenticate(&token, ip).await?;
        let caller = Caller::new(principal, ip, origin_of(parts.uri.path()))
            .with_request_id(request_id(parts));
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// What a route needs, named by a type so that a handler's signature states it and
/// [`Allowed`] checks it before anything else of the request is read: a caller without the
/// right gets 401/403, never a 400 about a body or query they may not send (docs/permissions.md).
pub trait Need: Send + Sync + 'static {
    /// Holding any one of these lets the caller in (a handler may check a narrower one once it
    /// knows what is asked, e.g. `request` vs `approve`).
    const ANY: &'static [Permission];
}

/// An authenticated caller holding one of `N::ANY`. Put it first among a handler's extractors.
pub struct Allowed<N: Need> {
    pub caller: Caller,
    _need: PhantomData<N>,
}

impl<N: Need> Deref for Allowed<N> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<N: Need> FromRequestParts<AppState> for Allowed<N> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        require_any(&caller, N::ANY)?;
        Ok(Allowed {
            caller,
            _need: PhantomData,
        })
    }
}

/// The [`Need`]s of the routes, one type per permission (or set of permissions).
pub mod need {
    use haechi_identity::Permission;

    macro_rules! needs {
        ($($(#[$doc:meta])* $name:ident => [$($p:ident),+];)*) => {$(
            $(#[$doc])*
            pub struct $name;
            impl super::Need for $name {
                const ANY: &'static [Permission] = &[$(Permission::$p),+];
            }
        )*};
    }

    needs! {
        AdminUsers => [AdminUsers];
        AuditRead => [AuditRead];
        WorkflowView => [WorkflowView];
        WorkflowExecute => [WorkflowExecute];
        WorkflowControl => [WorkflowControl];
        WorkflowManage => [WorkflowManage];
        NodeView => [NodeView];
        NodeManage => [NodeManage];
        TaskDevelop => [TaskDevelop];
        TaskExecute => [TaskExecute];
        /// Reading the file repository.
        FileRead => [TaskDevelop, TaskExecute];
        DbPolicyManage => [DbPolicyManage];
        VaultUse => [VaultUse];
        VaultSettings => [VaultSettings];
        /// Task approval: `request` needs `task.develop`, `approve`/`reject` `task.approve`.
        TaskDevelopOrApprove => [TaskDevelop, TaskApprove];
    }
}

/// A caller acting on their own account (the `{user_id}` of the path) or holding
/// `admin.users`; checked before the body is read.
pub struct SelfOrAdmin {
    pub caller: Caller,
    pub user_id: String,
}

impl FromRequestParts<AppState> for SelfOrAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let axum::extract::Path(user_id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| Error::not_found("no such user"))?;
        if caller.principal.user_id != user_id {
            caller.require(Permission::AdminUsers)?;
        }
        Ok(SelfOrAdmin { caller, user_id })
    }
}

/// Turns a serde error with its path into a 400 that names the field.
fn field_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> Error {
    let path = e.path().to_string();
    let inner = e.inner().to_string();
    let inner = match inner.find(" at line ") {
        Some(i) => inner[..i].to_owned(),
        None => inner,
    };
    if path == "." || path.is_empty() {
        if let Some(name) = inner
            .strip_prefix("missing field `")
            .and_then(|s| s.strip_suffix('`'))
        {
            return Error::field(name, "is required");
        }
        return Error::invalid(inner);
    }
    if let Some(name) = inner
        .strip_prefix("missing field `")
        .and_then(|s| s.strip_suffix('`'))
    {
        return Error::field(format!("{path}.{name}"), "is required");
    }
    Error::field(path, inner)
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // Parse to a tree first: only real syntax errors are "not JSON"; a value of the wrong type
    // (serde reports some of those as syntax errors, e.g. a number for an enum) names its field.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|inner| {
        Error::new(
            Code::MalformedBody,
            format!(
                "the body is not valid JSON (line {}, column {})",
                inner.line(),
                inner.column()
            ),
        )
    })?;
    serde_path_to_error::deserialize(ObjectsOnly(value)).map_err(field_error)
}

/// A JSON tree that refuses to become a struct unless it is an object. serde's derived structs
/// also accept an array of their fields in order, so `[]` would otherwise pass as a body whose
/// fields are all optional (issue 18 item 11); every other request type is read as the tree
/// reads it (a `Value`, a list).
struct ObjectsOnly(serde_json::Value);

impl<'de> serde::Deserializer<'de> for ObjectsOnly {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_any(self.0, v)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        if !self.0.is_object() {
            return Err(serde::de::Error::custom(format_args!(
                "the body must be a JSON object {{...}}, not {}",
                json_kind(&self.0)
            )));
        }
        serde::Deserializer::deserialize_struct(self.0, name, fields, v)
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_option(self.0, v)
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_enum(self.0, name, variants, v)
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_newtype_struct(self.0, name, v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

pub fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(bytes));
    serde_path_to_error::deserialize(de).map_err(field_error)
}

fn form_urlencoded_parse(bytes: &[u8]) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(bytes)
}

/// How much of a body past the limit is read and dropped before the 413 is sent. Over HTTP/2
/// an answer sent while the client is still sending makes the stream end in a reset, which
/// clients report as a framing error instead of the 413; reading the rest first lets the
/// stream end cleanly. Past this much the stream is reset anyway.
const DRAIN_PAST_LIMIT: usize = 16 * 1024 * 1024;

pub(crate) async fn body_bytes(
    req: Request,
    state: &AppState,
) -> Result<(Option<String>, Bytes), ApiError> {
    use futures::StreamExt;
    let ctype = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_ascii_lowercase());
    let limit = state.http.max_body_bytes;
    let mut chunks = req.into_body().into_data_stream();
    let mut body = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| Error::invalid("the request body could not be read"))?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            body.extend_from_slice(&chunk);
        } else if seen > limit.saturating_add(DRAIN_PAST_LIMIT) {
            break;
        }
    }
    if seen > limit {
        return Err(Error::new(
            Code::PayloadTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
        .into());
    }
    Ok((ctype, body.freeze()))
}

fn is_form(ctype: &str) -> bool {
    ctype.split(';').next().unwrap_or("").trim() == "application/x-www-form-urlencoded"
}

fn is_json(ctype: &str) -> bool {
    let essence = ctype.split(';').next().unwrap_or("").trim();
    essence == "application/json" || essence.ends_with("+json")
}

/// A body sent as a form that is JSON: `curl -d '{...}'` sends JSON as
/// `application/x-www-form-urlencoded`, and existing clients do that. No form body starts with
/// `{` or `[`, so the guess cannot misread a real form. Other non-JSON types stay 415.
fn looks_like_json(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[')
}

/// A JSON body (any charset parameter).
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (ctype, bytes) = body_bytes(req, state).await?;
        match ctype.as_deref() {
            Some(c) if is_json(c) => Ok(Json(parse_json(&bytes)?)),
            Some(c) if is_form(c) && looks_like_json(&bytes) => Ok(Json(parse_json(&bytes)?)),
            None if bytes.is_empty() => Ok(Json(parse_json(b"{}")?)),
            None => Ok(Json(parse_json(&bytes)?)),
            Some(other) => Err(Error::new(
                Code::UnsupportedMediaType,
                format!("send JSON with 'Content-Type: application/json' (got '{other}')"),
            )
            .into()),
        }
    }
}

/// A body that may be form-encoded or JSON with the same field names (CONTRACT §0).
pub struct FormOrJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for FormOrJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (ctype, bytes) = body_bytes(req, state).await?;
        let essence = ctype
            .as_deref()
            .map(|c| c.split(';').next().unwrap_or("").trim().to_owned());
        match essence.as_deref() {
            Some(c) if is_json(c) => Ok(FormOrJson(parse_json(&bytes)?)),
            Some("application/x-www-form-urlencoded") | None if looks_like_json(&bytes) => {
                Ok(FormOrJson(parse_json(&bytes)?))
            }
            Some("application/x-www-form-urlencoded") | None => Ok(FormOrJson(parse_form(&bytes)?)),
            Some(other) => Err(Error::new(
                Code::UnsupportedMediaType,
                format!("send form data or JSON (got '{other}')"),
            )
            .into()),
        }
    }
}

/// Query parameters, with errors that name the parameter.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        Ok(Query(parse_form(q.as_bytes())?))
    }
}

/// `limit` (default 100, at most 1000) and `offset` (default 0), CONTRACT §0, parsed into the
/// store's one paging type that every engine's lists take.
pub fn parse_page(limit: Option<&str>, offset: Option<&str>) -> Result<Paging, Error> {
    let num = |name: &str, v: Option<&str>, default: i64| -> Result<i64, Error> {
        match v {
            None | Some("") => Ok(default),
            Some(s) => s
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    Error::field(name, format_args!("must be a whole number ≥ 0 (got {s:?})"))
                }),
        }
    };
    let limit = num("limit", limit, 100)?;
    if limit > 1000 {
        return Err(Error::field("limit", "must be at most 1000"));
    }
    Ok(Paging {
        limit,
        offset: num("offset", offset, 0)?,
    })
}

/// A path parameter that must be a number; anything else is a 404 (no such object).
pub fn numeric_id(what: &str, raw: &str) -> Result<i64, Error> {
    raw.parse::<i64>()
        .map_err(|_| Error::not_found(format_args!("{what} '{raw}'")))
}
