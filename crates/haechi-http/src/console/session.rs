//! Login, logout and the session: the session is an identity token (the same kind every login
//! endpoint issues) in the cookie `__Host-haechi_session` (`HttpOnly; Secure; SameSite=Strict`),
//! so idle and absolute expiry, logout, disabling the user and a password change end it like
//! any token. Every POST carries a CSRF token: HMAC-SHA256 keyed by the session token, so only
//! a page of this session can know it and every server of a cluster can check it.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use haechi_identity::{Origin, Principal, UserKind};
use haechi_types::{Code, Error};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::i18n::{cookie, LANG_COOKIE};
use super::{page, see_other, Fail, Lang, Result, FAMILY};
use crate::extract::{request_id, Caller, ClientIp};
use crate::AppState;

/// The session cookie. `__Host-`: only ever set with `Secure`, `Path=/` and no domain.
pub const SESSION_COOKIE: &str = "__Host-haechi_session";
/// The login form's own CSRF cookie (there is no session yet to key a token by).
const LOGIN_COOKIE: &str = "__Host-haechi_login";
/// The message of a 403 for a missing or wrong CSRF token (the error page words it).
pub const CSRF_FAILED: &str = "csrf token missing or wrong";

/// A logged-in console user.
pub struct Session {
    pub caller: Caller,
    pub lang: Lang,
    pub csrf: String,
    /// The session's token (never rendered).
    pub(super) token: String,
}

impl Session {
    pub fn principal(&self) -> &Principal {
        &self.caller.principal
    }

    /// The form fields of a POST body, once its CSRF token is right (403 and nothing done
    /// otherwise).
    pub fn form(&self, body: &Bytes) -> Result<HashMap<String, String>> {
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| Error::new(Code::Forbidden, CSRF_FAILED))?;
        let mut map = HashMap::new();
        for (k, v) in fields {
            map.entry(k).or_insert(v);
        }
        let given = map.get("csrf").map(String::as_bytes).unwrap_or_default();
        if !constant_eq(given, self.csrf.as_bytes()) {
            return Err(Fail(Error::new(Code::Forbidden, CSRF_FAILED)));
        }
        Ok(map)
    }

    /// 403 unless the user holds `p` (the same check as the API twin).
    pub fn require(&self, p: haechi_identity::Permission) -> Result<()> {
        self.caller.require(p).map_err(Fail)
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The CSRF token of a session token.
pub fn csrf_of(token: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"haechi console csrf v1");
    hex::encode(mac.finalize().into_bytes())
}

/// The reason a request has no session: the login page says it.
enum NoSession {
    /// No cookie at all.
    None,
    /// A cookie whose token no longer works (expired, revoked).
    Expired,
}

fn to_login(parts: &Parts, why: NoSession) -> Response {
    let mut res = see_other(match why {
        NoSession::None => "/console/login",
        NoSession::Expired => "/console/login?expired=1",
    });
    let _ = parts;
    if matches!(why, NoSession::Expired) {
        res.headers_mut()
            .append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE));
    }
    res
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Self::Rejection> {
        let lang = Lang::of_parts(parts);
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login(parts, NoSession::None));
        };
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let principal = match state.identity.authenticate(&token, ip).await {
            Ok(p) => p,
            Err(e) if e.code == Code::Internal || e.code == Code::Unavailable => {
                return Err(Fail(e).into_response())
            }
            Err(_) => return Err(to_login(parts, NoSession::Expired)),
        };
        if principal.kind == UserKind::Api {
            return Err(to_login(parts, NoSession::Expired));
        }
        Ok(Session {
            csrf: csrf_of(&token),
            token,
            caller: Caller::new(principal, ip, Origin::Console).with_request_id(request_id(parts)),
            lang,
        })
    }
}

fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_cookie(name: &str) -> HeaderValue {
    set_cookie(name, "", Some(0))
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    l: Lang,
    csrf: String,
    user_id: String,
    message: &'static str,
    notice: &'static str,
}

fn login_form(
    l: Lang,
    user_id: String,
    message: &'static str,
    notice: &'static str,
) -> Result<Response> {
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    let csrf = hex::encode(raw);
    let mut res = page(LoginPage {
        l,
        csrf: csrf.clone(),
        user_id,
        message,
        notice,
    })?;
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &csrf, Some(3600)),
    );
    Ok(res)
}

/// `GET /console/login`.
pub async fn login_page(headers: HeaderMap, uri: axum::http::Uri) -> Result<Response> {
    let l = Lang::of_headers(&headers);
    let q = uri.query().unwrap_or("");
    let notice = if q.contains("expired=1") {
        "session_expired"
    } else if q.contains("bye=1") {
        "logged_out"
    } else if q.contains("pw=1") {
        "password_changed"
    } else {
        ""
    };
    login_form(l, String::new(), "", notice)
}

/// `POST /console/login`: the one identity login (lockout, IP allow-list, audit), refusing
/// `api` accounts; on success the session cookie and the dashboard.
pub async fn login_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let l = Lang::of_headers(&headers);
    let fields: HashMap<String, String> =
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .unwrap_or_default()
            .into_iter()
            .collect();
    let given = fields.get("csrf").cloned().unwrap_or_default();
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let user_id = fields.get("user_id").cloned().unwrap_or_default();
    if expected.is_empty() || !constant_eq(given.as_bytes(), expected.as_bytes()) {
        let mut res = login_form(l, user_id, "login_expired", "")?;
        *res.status_mut() = axum::http::StatusCode::FORBIDDEN;
        return Ok(res);
    }
    let password = SecretString::from(fields.get("password").cloned().unwrap_or_default());
    match state
        .identity
        .login_human(user_id.trim(), &password, ip, FAMILY)
        .await
    {
        Ok(ok) => {
            let mut res = see_other("/console/");
            let h = res.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, ok.token.expose_secret(), None),
            );
            h.append(header::SET_COOKIE, clear_cookie(LOGIN_COOKIE));
            Ok(res)
        }
        Err(e) if e.code == Code::Internal => Err(Fail(e)),
        Err(e) => {
            let busy = e.code == Code::Unavailable;
            let mut res = login_form(
                l,
                user_id,
                if busy { "login_busy" } else { "login_failed" },
                "",
            )?;
            *res.status_mut() = axum::http::StatusCode::from_u16(e.status())
                .unwrap_or(axum::http::StatusCode::UNAUTHORIZED);
            Ok(res)
        }
    }
}

/// `POST /console/logout`: revokes the session's token (audited) and clears the cookie.
pub async fn logout(State(state): State<AppState>, s: Session, body: Bytes) -> Result<Response> {
    s.form(&body)?;
    state.identity.logout(&s.caller).await?;
    let mut res = see_other("/console/login?bye=1");
    res.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE));
    Ok(res)
}

/// 303 to `to` (a login page) for a session that has just ended (its token revoked by a
/// password change or a revoke): the cookie goes too.
pub(super) fn session_ended(to: &str) -> Response {
    let mut res = see_other(to);
    res.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE));
    res
}

/// `POST /console/lang`: the user's choice of language, kept in a cookie.
pub async fn set_lang(s: Session, body: Bytes) -> Result<Response> {
    let form = s.form(&body)?;
    let lang = form
        .get("lang")
        .and_then(|v| Lang::parse(v))
        .ok_or_else(|| Error::field("lang", "must be ko or en"))?;
    // Back to the page the form was on: a console path only, never another site.
    let back = form
        .get("back")
        .filter(|b| b.starts_with("/console/") && !b.contains("//") && !b.contains('\\'))
        .cloned()
        .unwrap_or_else(|| "/console/".to_owned());
    let mut res = see_other(&back);
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LANG_COOKIE, lang.code(), Some(365 * 86_400)),
    );
    Ok(res)
}

/// `POST /console/keepalive`: a use of the session (the token's idle time starts again).
pub async fn keepalive(s: Session, body: Bytes) -> Result<Response> {
    s.form(&body)?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
