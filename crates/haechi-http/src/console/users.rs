//! Users and roles (issue 23 item 3): `/console/users` (users with their kind, roles, IP
//! allow-list, disabled and locked state, last login; create, edit, disable / enable, unlock,
//! set a password, and their live tokens with revoke), `/console/roles` (roles and their
//! permissions; custom roles created, edited, deleted), `/console/account` (the user's own
//! account: change the password, end their own sessions).
//!
//! Every action is the identity engine call of its API twin, after the same permission check
//! (`admin.users`; the own account needs only a session), so the audit event is the API's.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use haechi_identity::{NewRole, NewUser, Permission, RolePatch, User, UserKind, UserPatch};
use haechi_types::{Code, Error};
use secrecy::SecretString;

use super::session::session_ended;
use super::{page, q, see_other, when, when_opt, Chrome, Fail, Lang, Result, Session};
use crate::extract::numeric_id;
use crate::AppState;

/// `s` as one path segment (`q` writes a space as `+`, which a path keeps as a plus).
fn seg(s: &str) -> String {
    q(s).replace('+', "%20")
}

/// Users per page of the list.
const USERS_PAGE: i64 = 100;

/// A user's state in words (never colour alone): disabled, locked, or active.
pub struct UserState {
    pub word: &'static str,
    pub icon: &'static str,
    pub class: &'static str,
}

fn user_state(l: Lang, u: &User) -> UserState {
    let (key, icon, class) = if u.disabled {
        ("user_disabled", "■", "off")
    } else if u.locked {
        ("user_locked", "🔒", "bad")
    } else {
        ("user_active", "✔", "ok")
    };
    UserState {
        word: l.t(key),
        icon,
        class,
    }
}

pub struct UserLine {
    pub user_id: String,
    pub q: String,
    pub name: String,
    pub kind: &'static str,
    pub roles: String,
    pub allowed_ips: String,
    pub state: UserState,
    pub last_login: String,
}

fn kind_word(l: Lang, k: UserKind) -> &'static str {
    match k {
        UserKind::Human => l.t("kind_human"),
        UserKind::Api => l.t("kind_api"),
    }
}

fn user_line(l: Lang, off: i32, u: &User) -> UserLine {
    UserLine {
        user_id: u.user_id.clone(),
        q: seg(&u.user_id),
        name: u.name.clone(),
        kind: kind_word(l, u.kind),
        roles: u.roles.join(", "),
        allowed_ips: u.allowed_ips.join(", "),
        state: user_state(l, u),
        last_login: when_opt(u.last_login_at, off),
    }
}

/// A role as a checkbox of a user form.
pub struct RoleBox {
    pub name: String,
    pub id: String,
    pub checked: bool,
}

async fn role_boxes(state: &AppState, checked: &[String]) -> Result<Vec<RoleBox>> {
    Ok(state
        .identity
        .list_roles()
        .await?
        .into_iter()
        .map(|r| RoleBox {
            checked: checked.contains(&r.name),
            id: format!("role-{}", r.id),
            name: r.name,
        })
        .collect())
}

/// What the create form held when it failed (shown again with the error; never the password).
#[derive(Default)]
struct Draft {
    user_id: String,
    name: String,
    kind: String,
    roles: Vec<String>,
    allowed_ips: String,
    error: String,
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    c: Chrome,
    rows: Vec<UserLine>,
    total: i64,
    page_no: i64,
    pages: i64,
    roles: Vec<RoleBox>,
    draft: Draft,
}

async fn users_page(state: &AppState, s: &Session, page_no: i64, draft: Draft) -> Result<Response> {
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let (users, total) = state
        .identity
        .list_users(USERS_PAGE, (page_no - 1) * USERS_PAGE)
        .await?;
    let failed = !draft.error.is_empty();
    let roles = role_boxes(state, &draft.roles).await?;
    let mut res = page(UsersPage {
        c: Chrome::new(state, s, "users", l.t("nav_users").to_owned()),
        rows: users.iter().map(|u| user_line(l, off, u)).collect(),
        total,
        page_no,
        pages: ((total + USERS_PAGE - 1) / USERS_PAGE).max(1),
        roles,
        draft,
    })?;
    if failed {
        *res.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(res)
}

/// `GET /console/users` (`admin.users`, as `GET /api/v1/users`).
pub async fn list(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::AdminUsers)?;
    let page_no = super::page_no(&query)?;
    users_page(&state, &s, page_no, Draft::default()).await
}

/// Every value of a repeated form field (`roles=a&roles=b`), in order.
fn all_of(body: &Bytes, key: &str) -> Vec<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// An allow-list typed one CIDR or address a line (or separated by commas or spaces).
fn ip_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn field<'a>(form: &'a HashMap<String, String>, k: &str) -> &'a str {
    form.get(k).map(String::as_str).unwrap_or("")
}

fn kind_of(v: &str) -> Result<UserKind> {
    match v {
        "" | "human" => Ok(UserKind::Human),
        "api" => Ok(UserKind::Api),
        other => {
            Err(Error::field("kind", format_args!("must be human or api (got {other:?})")).into())
        }
    }
}

/// `POST /console/users` (`admin.users`, as `POST /api/v1/users`): a bad field shows the
/// form again with the engine's message (400) and creates nothing.
pub async fn create(State(state): State<AppState>, s: Session, body: Bytes) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::AdminUsers)?;
    let roles = all_of(&body, "roles");
    let mut draft = Draft {
        user_id: field(&form, "user_id").trim().to_owned(),
        name: field(&form, "name").trim().to_owned(),
        kind: field(&form, "kind").to_owned(),
        roles: roles.clone(),
        allowed_ips: field(&form, "allowed_ips").to_owned(),
        error: String::new(),
    };
    let kind = match kind_of(&draft.kind) {
        Ok(k) => k,
        Err(Fail(e)) => {
            draft.error = e.message;
            return users_page(&state, &s, 1, draft).await;
        }
    };
    let new = NewUser {
        user_id: draft.user_id.clone(),
        name: draft.name.clone(),
        password: SecretString::from(field(&form, "password").to_owned()),
        kind,
        roles,
        allowed_ips: ip_list(&draft.allowed_ips),
    };
    match state.identity.create_user(&s.caller, new).await {
        Ok(u) => Ok(see_other(&format!(
            "/console/users/{}?created=1",
            seg(&u.user_id)
        ))),
        Err(e) if is_input_error(&e) => {
            draft.error = e.message;
            users_page(&state, &s, 1, draft).await
        }
        Err(e) => Err(e.into()),
    }
}

/// An error the user can fix by changing the form (shown beside it, not as an error page).
fn is_input_error(e: &Error) -> bool {
    matches!(e.code, Code::InvalidRequest | Code::Conflict)
}

pub struct TokenLine {
    pub id: i64,
    pub family: String,
    pub client_ip: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    pub current: bool,
}

fn token_lines(off: i32, tokens: &[haechi_identity::TokenInfo]) -> Vec<TokenLine> {
    tokens
        .iter()
        .map(|t| TokenLine {
            id: t.id,
            family: t.family.clone(),
            client_ip: t.client_ip.clone(),
            created: when(t.created_at, off),
            last_used: when(t.last_used_at, off),
            expires: when(t.expires_at, off),
            current: t.current,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/user.html")]
struct UserPage {
    c: Chrome,
    u: UserLine,
    q: String,
    is_api: bool,
    disabled: bool,
    locked: bool,
    failed_logins: i64,
    created: String,
    updated: String,
    ips_text: String,
    roles: Vec<RoleBox>,
    tokens: Vec<TokenLine>,
    notice: &'static str,
    error: String,
    is_self: bool,
}

async fn user_page(
    state: &AppState,
    s: &Session,
    user_id: &str,
    notice: &'static str,
    error: String,
) -> Result<Response> {
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let u = state.identity.get_user(user_id).await?;
    let tokens = state
        .identity
        .user_tokens(user_id, s.principal().token_id)
        .await?;
    let failed = !error.is_empty();
    let mut res = page(UserPage {
        c: Chrome::new(state, s, "users", format!("{} {}", l.t("user"), u.user_id)),
        q: seg(&u.user_id),
        is_api: u.kind == UserKind::Api,
        disabled: u.disabled,
        locked: u.locked,
        failed_logins: u.failed_logins,
        created: when(u.created_at, off),
        updated: when(u.updated_at, off),
        ips_text: u.allowed_ips.join("\n"),
        roles: role_boxes(state, &u.roles).await?,
        tokens: token_lines(off, &tokens),
        notice,
        error,
        is_self: u.user_id == s.principal().user_id,
        u: user_line(l, off, &u),
    })?;
    if failed {
        *res.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(res)
}

/// `GET /console/users/{user_id}` (`admin.users`).
pub async fn show(
    State(state): State<AppState>,
    s: Session,
    Path(user_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    s.require(Permission::AdminUsers)?;
    let notice = match query.get("done").map(String::as_str) {
        _ if query.contains_key("created") => "user_created",
        Some("saved") => "saved_notice",
        Some("unlocked") => "unlocked_notice",
        Some("disabled") => "disabled_notice",
        Some("enabled") => "enabled_notice",
        Some("password") => "password_set_notice",
        Some("revoked") => "revoked_notice",
        _ => "",
    };
    user_page(&state, &s, &user_id, notice, String::new()).await
}

/// A user action's result: back to the user's page with a notice, or the page again with
/// the engine's message when the input was wrong (nothing changed).
async fn after(
    state: &AppState,
    s: &Session,
    user_id: &str,
    done: &str,
    r: haechi_types::Result<()>,
) -> Result<Response> {
    match r {
        Ok(()) => Ok(see_other(&format!(
            "/console/users/{}?done={done}",
            seg(user_id)
        ))),
        Err(e) if is_input_error(&e) && e.code != Code::NotFound => {
            user_page(state, s, user_id, "", e.message).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /console/users/{user_id}` (`admin.users`, as `PATCH /api/v1/users/{user_id}`): name,
/// roles and IP allow-list.
pub async fn update(
    State(state): State<AppState>,
    s: Session,
    Path(user_id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::AdminUsers)?;
    let patch = UserPatch {
        name: Some(field(&form, "name").trim().to_owned()),
        roles: Some(all_of(&body, "roles")),
        allowed_ips: Some(ip_list(field(&form, "allowed_ips"))),
        ..Default::default()
    };
    let r = state
        .identity
        .update_user(&s.caller, &user_id, patch)
        .await
        .map(|_| ());
    after(&state, &s, &user_id, "saved", r).await
}

/// `POST /console/users/{user_id}/state` (`admin.users`): `action` = `disable` | `enable` |
/// `unlock`, as the API's `/disable`, `/enable`, `/unlock`.
pub async fn set_state(
    State(state): State<AppState>,
    s: Session,
    Path(user_id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::AdminUsers)?;
    let caller = &s.caller;
    let (r, done) = match field(&form, "action") {
        "disable" | "enable" => {
            let disable = field(&form, "action") == "disable";
            let patch = UserPatch {
                disabled: Some(disable),
                ..Default::default()
            };
            (
                state
                    .identity
                    .update_user(caller, &user_id, patch)
                    .await
                    .map(|_| ()),
                if disable { "disabled" } else { "enabled" },
            )
        }
        "unlock" => (
            state
                .identity
                .unlock_user(caller, &user_id)
                .await
                .map(|_| ()),
            "unlocked",
        ),
        other => {
            return Err(Error::field(
                "action",
                format_args!("must be disable, enable or unlock (got {other:?})"),
            )
            .into())
        }
    };
    after(&state, &s, &user_id, done, r).await
}

/// `POST /console/users/{user_id}/password` (`admin.users`, as `PUT .../password` by an
/// admin): sets the password; every token of the user is revoked.
pub async fn set_password(
    State(state): State<AppState>,
    s: Session,
    Path(user_id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::AdminUsers)?;
    let patch = UserPatch {
        password: Some(SecretString::from(field(&form, "password").to_owned())),
        ..Default::default()
    };
    let r = state
        .identity
        .update_user(&s.caller, &user_id, patch)
        .await
        .map(|_| ());
    if r.is_ok() && user_id == s.principal().user_id {
        // The admin's own session ended with the change.
        return Ok(session_ended("/console/login?pw=1"));
    }
    after(&state, &s, &user_id, "password", r).await
}

/// `POST /console/users/{user_id}/tokens/{id}/revoke` (`admin.users`, as
/// `DELETE /api/v1/users/{user_id}/tokens/{id}`).
pub async fn revoke_token(
    State(state): State<AppState>,
    s: Session,
    Path((user_id, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    s.require(Permission::AdminUsers)?;
    let id = numeric_id("token", &id)?;
    state
        .identity
        .revoke_user_token(&s.caller, &user_id, id)
        .await?;
    if id == s.principal().token_id {
        return Ok(session_ended("/console/login?bye=1"));
    }
    Ok(see_other(&format!(
        "/console/users/{}?done=revoked",
        seg(&user_id)
    )))
}

pub struct RoleLine {
    pub name: String,
    pub q: String,
    pub description: String,
    pub permissions: Vec<&'static str>,
}

pub struct PermBox {
    pub name: &'static str,
    pub id: String,
    pub checked: bool,
}

fn perm_boxes(prefix: &str, checked: &[Permission]) -> Vec<PermBox> {
    Permission::ALL
        .iter()
        .map(|p| PermBox {
            name: p.as_str(),
            id: format!("{prefix}-{}", p.as_str().replace('.', "-")),
            checked: checked.contains(p),
        })
        .collect()
}

/// A custom role with its edit form.
pub struct RoleEdit {
    pub line: RoleLine,
    pub id: i64,
    pub boxes: Vec<PermBox>,
}

#[derive(Template)]
#[template(path = "console/roles.html")]
struct RolesPage {
    c: Chrome,
    builtin: Vec<RoleLine>,
    custom: Vec<RoleEdit>,
    can_manage: bool,
    new_boxes: Vec<PermBox>,
    new_name: String,
    new_description: String,
    error: String,
    notice: &'static str,
}

async fn roles_page(
    state: &AppState,
    s: &Session,
    notice: &'static str,
    draft: Option<(String, String, Vec<Permission>, String)>,
) -> Result<Response> {
    let l = s.lang;
    let mut builtin = Vec::new();
    let mut custom = Vec::new();
    for r in state.identity.list_roles().await? {
        let line = RoleLine {
            q: seg(&r.name),
            name: r.name.clone(),
            description: r.description.clone(),
            permissions: r.permissions.iter().map(|p| p.as_str()).collect(),
        };
        if r.builtin {
            builtin.push(line);
        } else {
            custom.push(RoleEdit {
                id: r.id,
                boxes: perm_boxes(&format!("r{}", r.id), &r.permissions),
                line,
            });
        }
    }
    let (new_name, new_description, perms, error) = draft.unwrap_or_default();
    let failed = !error.is_empty();
    let mut res = page(RolesPage {
        c: Chrome::new(state, s, "roles", l.t("nav_roles").to_owned()),
        builtin,
        custom,
        can_manage: s.principal().can(Permission::AdminUsers),
        new_boxes: perm_boxes("new", &perms),
        new_name,
        new_description,
        error,
        notice,
    })?;
    if failed {
        *res.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(res)
}

/// `GET /console/roles` (any user, as `GET /api/v1/roles`).
pub async fn roles(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    let notice = match query.get("done").map(String::as_str) {
        Some("created") => "role_created",
        Some("saved") => "saved_notice",
        Some("deleted") => "role_deleted",
        _ => "",
    };
    roles_page(&state, &s, notice, None).await
}

/// `POST /console/roles` (`admin.users`, as `POST /api/v1/roles`).
pub async fn create_role(
    State(state): State<AppState>,
    s: Session,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::AdminUsers)?;
    let perms = all_of(&body, "permissions");
    let new = NewRole {
        name: field(&form, "name").trim().to_owned(),
        description: field(&form, "description").trim().to_owned(),
        permissions: perms.clone(),
    };
    let (name, description) = (new.name.clone(), new.description.clone());
    match state.identity.create_role(&s.caller, new).await {
        Ok(_) => Ok(see_other("/console/roles?done=created")),
        Err(e) if is_input_error(&e) => {
            let checked = perms.iter().filter_map(|p| Permission::parse(p)).collect();
            roles_page(
                &state,
                &s,
                "",
                Some((name, description, checked, e.message)),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /console/roles/{role}` (`admin.users`): `action` = `save` (as `PATCH
/// /api/v1/roles/{role}`: description and permissions) or `delete` (as `DELETE`).
pub async fn update_role(
    State(state): State<AppState>,
    s: Session,
    Path(role): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::AdminUsers)?;
    let r = match field(&form, "action") {
        "save" => state
            .identity
            .update_role(
                &s.caller,
                &role,
                RolePatch {
                    name: None,
                    description: Some(field(&form, "description").trim().to_owned()),
                    permissions: Some(all_of(&body, "permissions")),
                },
            )
            .await
            .map(|_| "saved"),
        "delete" => state
            .identity
            .delete_role(&s.caller, &role)
            .await
            .map(|_| "deleted"),
        other => {
            return Err(Error::field(
                "action",
                format_args!("must be save or delete (got {other:?})"),
            )
            .into())
        }
    };
    match r {
        Ok(done) => Ok(see_other(&format!("/console/roles?done={done}"))),
        Err(e) if is_input_error(&e) && e.code != Code::NotFound => {
            roles_page(
                &state,
                &s,
                "",
                Some((String::new(), String::new(), Vec::new(), e.message)),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    c: Chrome,
    user_id: String,
    name: String,
    kind: &'static str,
    roles: String,
    permissions: Vec<&'static str>,
    tokens: Vec<TokenLine>,
    error: String,
    notice: &'static str,
}

async fn account_page(
    state: &AppState,
    s: &Session,
    notice: &'static str,
    error: String,
) -> Result<Response> {
    let l = s.lang;
    let p = s.principal();
    let tokens = state.identity.my_tokens(p).await?;
    let failed = !error.is_empty();
    let mut res = page(AccountPage {
        c: Chrome::new(state, s, "account", l.t("my_account").to_owned()),
        user_id: p.user_id.clone(),
        name: p.name.clone(),
        kind: kind_word(l, p.kind),
        roles: p
            .roles
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        permissions: p.permissions.list().iter().map(|p| p.as_str()).collect(),
        tokens: token_lines(state.http.utc_offset_secs, &tokens),
        error,
        notice,
    })?;
    if failed {
        *res.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(res)
}

/// `GET /console/account`: the user's own account (any user).
pub async fn account(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    let notice = match query.get("done").map(String::as_str) {
        Some("revoked") => "revoked_notice",
        _ => "",
    };
    account_page(&state, &s, notice, String::new()).await
}

/// `POST /console/account/password`: change your own password (as `PUT
/// /api/v1/users/{me}/password` with `current_password`). The new password is typed twice;
/// every token of the user, this session's included, is revoked, so the login page follows.
pub async fn change_password(
    State(state): State<AppState>,
    s: Session,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    let new = field(&form, "new_password");
    if new != field(&form, "confirm_password") {
        return account_page(&state, &s, "", s.lang.t("passwords_differ").to_owned()).await;
    }
    let current = SecretString::from(field(&form, "current_password").to_owned());
    let r = state
        .identity
        .change_own_password(
            &s.caller,
            &s.principal().user_id,
            &current,
            SecretString::from(new.to_owned()),
        )
        .await;
    match r {
        Ok(()) => Ok(session_ended("/console/login?pw=1")),
        Err(e) if is_input_error(&e) => account_page(&state, &s, "", e.message).await,
        Err(e) => Err(e.into()),
    }
}

/// `POST /console/account/tokens/{id}/revoke`: end one of your own sessions (as
/// `DELETE /api/v1/tokens/{id}`).
pub async fn revoke_own_token(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    let id = numeric_id("token", &id)?;
    state.identity.revoke_my_token(&s.caller, id).await?;
    if id == s.principal().token_id {
        return Ok(session_ended("/console/login?bye=1"));
    }
    Ok(see_other("/console/account?done=revoked"))
}
