//! The credential vault in the console (issue 23 item 1): `/console/vault` (the vault's mode
//! and seal state with the unseal and mode forms, the lockers with their members, consumers
//! and credentials, and the credentials the user sees), `/console/vault/lockers/{id}` (a
//! locker and everything its members do to it). The credential page and its values are in
//! `vault_credential`.
//!
//! Every page and action calls the vault engine as the `/v2/credentialvault` API does, with
//! the same permission first (`vault.use`; `vault.settings` for mode and unseal), so the access
//! matrix is the engine's: an invisible locker or credential is a 404 page, a visible one the
//! user may not change a 403. The engine writes the audit events (family `vault`). A failed
//! action shows the page again with the reason and what the user typed (never a secret).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use haechi_identity::Permission;
use haechi_types::{Code, Error};
use haechi_vault::{CredentialFilter, LockerFilter, LockerPatch, Mode, Perms};
use secrecy::SecretString;

use super::{page, see_other, when, Chrome, Fail, Lang, Result, Session};
use crate::AppState;

/// What a page says after an action: done (`ok`) or refused (`err`, with the engine's reason).
#[derive(Default)]
pub struct Flash {
    pub ok: String,
    pub err: String,
}

/// The keys `?done=` may name (anything else shows nothing).
const DONE: &[&str] = &[
    "unchanged",
    "unsealed",
    "mode_changed",
    "locker_created",
    "locker_saved",
    "locker_deleted",
    "member_saved",
    "member_removed",
    "consumer_added",
    "consumer_removed",
    "cred_added",
    "cred_removed",
    "cred_created",
    "cred_saved",
    "cred_transferred",
    "cred_deleted",
    "value_saved",
    "value_deleted",
];

impl Flash {
    /// The message of a `?done=` key.
    pub fn of_query(l: Lang, query: &HashMap<String, String>) -> Flash {
        let ok = query
            .get("done")
            .and_then(|d| DONE.iter().find(|k| **k == d.as_str()))
            .map(|k| l.t(&format!("vd_{k}")).to_owned())
            .unwrap_or_default();
        Flash {
            ok,
            err: String::new(),
        }
    }

    pub fn err(e: &Error) -> Flash {
        Flash {
            ok: String::new(),
            err: e.message.clone(),
        }
    }
}

/// 303 to `to` with `?done=key`.
pub fn done(to: &str, key: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    see_other(&format!("{to}{sep}done={key}"))
}

/// An action's failure: "nothing to change" (the engine's 304) goes back to the page with a
/// notice; anything else shows the page again (`again`, given the reason) with the error's
/// status, or the error page when the page itself cannot be shown (an object the user may not
/// see).
pub async fn refused<F, Fut>(e: Error, back: &str, again: F) -> Result<Response>
where
    F: FnOnce(Flash) -> Fut,
    Fut: std::future::Future<Output = Result<Response>>,
{
    if e.code == Code::NotModified {
        return Ok(done(back, "unchanged"));
    }
    if matches!(e.code, Code::Internal) {
        return Err(Fail(e));
    }
    match again(Flash::err(&e)).await {
        Ok(mut res) => {
            *res.status_mut() = axum::http::StatusCode::from_u16(e.status())
                .unwrap_or(axum::http::StatusCode::BAD_REQUEST);
            Ok(res)
        }
        Err(_) => Err(Fail(e)),
    }
}

/// A numeric id from a path; anything else is a 404 page.
pub fn path_id(what: &str, raw: &str) -> Result<i64> {
    Ok(crate::extract::numeric_id(what, raw)?)
}

/// A form field, or "".
pub fn field<'a>(form: &'a HashMap<String, String>, k: &str) -> &'a str {
    form.get(k).map(String::as_str).unwrap_or("")
}

/// A whole number from a form field (400 naming it otherwise).
pub fn form_number(form: &HashMap<String, String>, k: &str) -> Result<i64> {
    let v = field(form, k).trim();
    v.parse::<i64>().map_err(|_| {
        Fail(Error::field(
            k,
            format_args!("must be a whole number (got {v:?})"),
        ))
    })
}

/// A user named in a form by their user ID, or by their number (`#12`; a bare `12` that is
/// nobody's user ID is taken as a number too).
pub async fn user_of(state: &AppState, k: &str, raw: &str) -> std::result::Result<i64, Error> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(Error::field(k, "name a user (their user ID, or #number)"));
    }
    if let Some(n) = raw.strip_prefix('#') {
        return n
            .trim()
            .parse::<i64>()
            .map_err(|_| Error::field(k, format_args!("{raw:?} is not #number")));
    }
    match state.identity.get_user(raw).await {
        Ok(u) => Ok(u.id),
        Err(e) if e.code == Code::NotFound => raw.parse::<i64>().map_err(|_| {
            Error::field(k, format_args!("there is no user with the user ID {raw:?}"))
        }),
        Err(e) => Err(e),
    }
}

/// `user_id (#n)`, or `#n` for a user that no longer exists.
pub fn who(names: &HashMap<i64, String>, id: i64) -> String {
    match names.get(&id) {
        Some(n) => format!("{n} (#{id})"),
        None => format!("#{id}"),
    }
}

/// A member's permissions as the page shows them.
pub fn perms_text(l: Lang, p: Perms) -> String {
    let mut v = Vec::new();
    if p.own {
        v.push(l.t("vp_own"));
    }
    if p.manage {
        v.push(l.t("vp_manage"));
    }
    if p.participate {
        v.push(l.t("vp_participate"));
    }
    v.join(", ")
}

/// `own`/`manage`/`participate` checkboxes of a form.
fn perms_of(form: &HashMap<String, String>) -> Perms {
    Perms {
        own: form.contains_key("own"),
        manage: form.contains_key("manage"),
        participate: form.contains_key("participate"),
    }
}

/// The vault pages need `vault.use` (the API's permission for every `/v2/credentialvault`
/// route but mode and key).
fn require_use(s: &Session) -> Result<()> {
    s.require(Permission::VaultUse)
}

/// The vault's state, as the page shows it.
pub struct SealView {
    pub sealed: bool,
    /// Only for `vault.settings` (as `GET /v2/credentialvault/mode`).
    pub mode: String,
    pub key_source: String,
}

async fn seal_view(state: &AppState, s: &Session) -> Result<SealView> {
    let sealed = !state.vault.applied();
    if !s.principal().can(Permission::VaultSettings) {
        return Ok(SealView {
            sealed,
            mode: String::new(),
            key_source: String::new(),
        });
    }
    let st = state.vault.status().await?;
    Ok(SealView {
        sealed: !st.applied,
        mode: st.mode.as_str().to_owned(),
        key_source: st.key_source.map(|k| k.as_str()).unwrap_or("").to_owned(),
    })
}

pub struct LockerLine {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub mine: String,
    pub members: Vec<(String, String)>,
    pub consumers: Vec<String>,
    pub credentials: Vec<(i64, String)>,
    pub count: i64,
}

pub struct CredLine {
    pub id: i64,
    pub name: String,
    pub owner: String,
    pub locker: String,
    pub attributes: usize,
    pub completed: bool,
    pub why: String,
}

/// A new attribute's row in a form (kept when the form comes back with an error).
#[derive(Clone, Default)]
pub struct AttrDraft {
    pub i: usize,
    pub name: String,
    pub description: String,
    pub user_provided: bool,
    pub masked: bool,
}

impl AttrDraft {
    pub fn blank(i: usize) -> AttrDraft {
        AttrDraft {
            i,
            masked: true,
            ..Default::default()
        }
    }

    /// Row `i` of a form (`a{i}_name`, `a{i}_desc`, `a{i}_kind`, `a{i}_masked`).
    pub fn of_form(form: &HashMap<String, String>, i: usize) -> AttrDraft {
        AttrDraft {
            i,
            name: field(form, &format!("a{i}_name")).trim().to_owned(),
            description: field(form, &format!("a{i}_desc")).to_owned(),
            user_provided: field(form, &format!("a{i}_kind")) == "user",
            masked: form.contains_key(&format!("a{i}_masked")),
        }
    }
}

/// The create forms' input.
#[derive(Clone, Default)]
pub struct NewDraft {
    pub locker_name: String,
    pub locker_description: String,
    pub cred_name: String,
    pub cred_description: String,
    pub attrs: Vec<AttrDraft>,
}

/// Rows for new attributes in the create form.
pub const NEW_ATTRS: usize = 6;

impl NewDraft {
    fn blank() -> NewDraft {
        NewDraft {
            attrs: (0..NEW_ATTRS).map(AttrDraft::blank).collect(),
            ..Default::default()
        }
    }
}

#[derive(Template)]
#[template(path = "console/vault.html")]
struct VaultPage {
    c: Chrome,
    flash: Flash,
    seal: SealView,
    can_use: bool,
    can_settings: bool,
    lockers: Vec<LockerLine>,
    credentials: Vec<CredLine>,
    draft: NewDraft,
}

async fn vault_page(
    state: &AppState,
    s: &Session,
    flash: Flash,
    draft: NewDraft,
) -> Result<Response> {
    let p = s.principal();
    let can_use = p.can(Permission::VaultUse);
    let can_settings = p.can(Permission::VaultSettings);
    if !can_use && !can_settings {
        require_use(s)?;
    }
    let l = s.lang;
    let seal = seal_view(state, s).await?;
    let (mut lockers, mut credentials) = (Vec::new(), Vec::new());
    if can_use {
        let listed = state
            .vault
            .list_lockers(
                p,
                &LockerFilter {
                    advanced: true,
                    ..Default::default()
                },
            )
            .await?;
        let creds = state
            .vault
            .list_credentials(p, &CredentialFilter::default())
            .await?;
        let roles: HashMap<i64, String> = state
            .identity
            .list_roles()
            .await?
            .into_iter()
            .map(|r| (r.id, r.name))
            .collect();
        let mut ids: Vec<i64> = creds.iter().map(|c| c.owner_id).collect();
        for lk in &listed {
            ids.extend(lk.members.iter().flatten().map(|m| m.user_id));
        }
        let names = state.vault.user_names(&ids).await?;
        let locker_names: HashMap<i64, String> =
            listed.iter().map(|l| (l.id, l.name.clone())).collect();
        for lk in &listed {
            let consumers = state.vault.list_consumers(p, lk.id).await?;
            let members = lk.members.clone().unwrap_or_default();
            let mine = members
                .iter()
                .find(|m| m.user_id == p.id)
                .map(|m| perms_text(l, m.perms))
                .unwrap_or_default();
            lockers.push(LockerLine {
                id: lk.id,
                name: lk.name.clone(),
                description: lk.description.clone().unwrap_or_default(),
                mine,
                members: members
                    .iter()
                    .map(|m| (who(&names, m.user_id), perms_text(l, m.perms)))
                    .collect(),
                consumers: consumers
                    .iter()
                    .map(|r| roles.get(r).cloned().unwrap_or_else(|| format!("#{r}")))
                    .collect(),
                credentials: creds
                    .iter()
                    .filter(|c| c.locker_id == Some(lk.id))
                    .map(|c| (c.id, c.name.clone()))
                    .collect(),
                count: lk.count_of_credentials.unwrap_or(0),
            });
        }
        credentials = creds
            .iter()
            .map(|c| CredLine {
                id: c.id,
                name: c.name.clone(),
                owner: who(&names, c.owner_id),
                locker: c
                    .locker_id
                    .map(|id| {
                        locker_names
                            .get(&id)
                            .cloned()
                            .unwrap_or_else(|| format!("#{id}"))
                    })
                    .unwrap_or_default(),
                attributes: c.attributes.len(),
                completed: c.completed.unwrap_or(false),
                why: if c.owner_id == p.id {
                    l.t("vw_owner").to_owned()
                } else {
                    String::new()
                },
            })
            .collect();
    }
    page(VaultPage {
        c: Chrome::new(state, s, "vault", l.t("nav_vault").to_owned()),
        flash,
        seal,
        can_use,
        can_settings,
        lockers,
        credentials,
        draft,
    })
}

/// `GET /console/vault` (`vault.use`, or `vault.settings` for the vault's state alone).
pub async fn index(
    State(state): State<AppState>,
    s: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    vault_page(
        &state,
        &s,
        Flash::of_query(s.lang, &query),
        NewDraft::blank(),
    )
    .await
}

/// `POST /console/vault/unseal` (`vault.settings`, as `PUT /v2/credentialvault/keys/private`):
/// the master key from the form. The key is never shown again, never logged, never audited;
/// a wrong key shows the page again with an empty field.
pub async fn unseal(State(state): State<AppState>, s: Session, body: Bytes) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::VaultSettings)?;
    let key = SecretString::from(field(&form, "key").trim().to_owned());
    drop(form);
    match state.vault.unseal(&s.caller, "key", &key).await {
        Ok(_) => Ok(done("/console/vault", "unsealed")),
        Err(e) => {
            refused(e, "/console/vault", |f| {
                vault_page(&state, &s, f, NewDraft::blank())
            })
            .await
        }
    }
}

/// `POST /console/vault/mode` (`vault.settings`, as `PUT /v2/credentialvault/mode`): needs
/// the current master key.
pub async fn set_mode(State(state): State<AppState>, s: Session, body: Bytes) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::VaultSettings)?;
    let key = SecretString::from(field(&form, "key").trim().to_owned());
    let mode = Mode::parse(field(&form, "mode")).ok_or_else(|| {
        Fail(Error::field(
            "mode",
            format_args!(
                "must be 'Express' or 'Manual' (got {:?})",
                field(&form, "mode")
            ),
        ))
    })?;
    drop(form);
    match state.vault.set_mode(&s.caller, mode, "key", &key).await {
        Ok(()) => Ok(done("/console/vault", "mode_changed")),
        Err(e) => {
            refused(e, "/console/vault", |f| {
                vault_page(&state, &s, f, NewDraft::blank())
            })
            .await
        }
    }
}

/// `POST /console/vault/lockers` (`vault.use`, as `POST /v2/credentialvault/lockers`).
pub async fn create_locker(
    State(state): State<AppState>,
    s: Session,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    require_use(&s)?;
    let name = field(&form, "name").trim().to_owned();
    let description = field(&form, "description").to_owned();
    let made = state
        .vault
        .create_locker(
            &s.caller,
            name.clone(),
            (!description.is_empty()).then(|| description.clone()),
        )
        .await;
    match made {
        Ok(l) => Ok(done(
            &format!("/console/vault/lockers/{}", l.id),
            "locker_created",
        )),
        Err(e) => {
            let mut draft = NewDraft::blank();
            draft.locker_name = name;
            draft.locker_description = description;
            refused(e, "/console/vault", |f| vault_page(&state, &s, f, draft)).await
        }
    }
}

// ---- a locker ---------------------------------------------------------------------------------

pub struct MemberLine {
    pub user_id: i64,
    pub who: String,
    pub perms: Perms,
    pub text: String,
    pub me: bool,
}

pub struct ConsumerLine {
    pub role_id: i64,
    pub name: String,
}

pub struct LockerCred {
    pub id: i64,
    pub name: String,
    pub owner: String,
    pub removable: bool,
}

/// The locker edit form's input, kept on a conflict, with what the fields held when the form
/// was made (`o_name`, `o_desc`: a stale edit merges against them).
#[derive(Default)]
pub struct LockerDraft {
    pub name: String,
    pub description: String,
    pub o_name: String,
    pub o_description: String,
    pub version: i64,
    /// After a stale edit: the version stored now, and the stored name and description where
    /// both the user and someone else changed them.
    pub conflict: Option<(i64, String, String)>,
}

/// A three-way merge of one field: the user's `typed` value against the `orig` the form was
/// made from and the value `stored` now. An untouched field takes the stored value; returns
/// whether both sides changed it differently (then the user's input stays).
pub fn merge_field(typed: &mut String, orig: &str, stored: &str) -> bool {
    if typed == orig {
        *typed = stored.to_owned();
        false
    } else {
        stored != orig && stored != typed.as_str()
    }
}

#[derive(Template)]
#[template(path = "console/vault_locker.html")]
struct LockerPage {
    c: Chrome,
    flash: Flash,
    id: i64,
    name: String,
    description: String,
    version: i64,
    created: String,
    updated: String,
    mine: String,
    consumer: bool,
    manages: bool,
    owns: bool,
    draft: LockerDraft,
    members: Vec<MemberLine>,
    consumers: Vec<ConsumerLine>,
    roles: Vec<ConsumerLine>,
    credentials: Vec<LockerCred>,
    addable: Vec<(i64, String)>,
    can_add: bool,
}

async fn locker_page(
    state: &AppState,
    s: &Session,
    id: i64,
    flash: Flash,
    draft: Option<LockerDraft>,
) -> Result<Response> {
    require_use(s)?;
    let p = s.principal();
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let (locker, standing) = state.vault.locker_view(p, id).await?;
    let members = state.vault.list_members(p, id).await?;
    let consumers = state.vault.list_consumers(p, id).await?;
    let creds = state.vault.list_locker_credentials(p, id, None).await?;
    let roles = state.identity.list_roles().await?;
    let mut ids: Vec<i64> = members.iter().map(|m| m.user_id).collect();
    ids.extend(creds.iter().map(|c| c.owner_id));
    ids.push(locker.stamp.created_by);
    ids.push(locker.stamp.updated_by);
    let names = state.vault.user_names(&ids).await?;
    // Credentials the user may put here: their own (as a member), or any outside a locker
    // for a Locker Admin (the engine's rule for PUT .../lockers/{id}/credentials/{cid}).
    let can_add = standing.admin || standing.member.any();
    let addable = if can_add {
        state
            .vault
            .list_credentials(p, &CredentialFilter::default())
            .await?
            .into_iter()
            .filter(|c| c.locker_id.is_none() && (standing.admin || c.owner_id == p.id))
            .map(|c| (c.id, c.name))
            .collect()
    } else {
        Vec::new()
    };
    let role_name = |r: i64| {
        roles
            .iter()
            .find(|x| x.id == r)
            .map(|x| x.name.clone())
            .unwrap_or_else(|| format!("#{r}"))
    };
    let draft = draft.unwrap_or_else(|| LockerDraft {
        name: locker.name.clone(),
        description: locker.description.clone().unwrap_or_default(),
        o_name: locker.name.clone(),
        o_description: locker.description.clone().unwrap_or_default(),
        version: locker.stamp.version,
        conflict: None,
    });
    page(LockerPage {
        c: Chrome::new(
            state,
            s,
            "vault",
            format!("{} {}", l.t("v_locker"), locker.name),
        ),
        flash,
        id,
        name: locker.name.clone(),
        description: locker.description.clone().unwrap_or_default(),
        version: locker.stamp.version,
        created: format!(
            "{} · {}",
            who(&names, locker.stamp.created_by),
            when(locker.stamp.created_at, off)
        ),
        updated: format!(
            "{} · {}",
            who(&names, locker.stamp.updated_by),
            when(locker.stamp.updated_at, off)
        ),
        mine: perms_text(l, standing.member),
        consumer: standing.consumer,
        manages: standing.manages,
        owns: standing.owns,
        draft,
        members: members
            .iter()
            .map(|m| MemberLine {
                user_id: m.user_id,
                who: who(&names, m.user_id),
                perms: m.perms,
                text: perms_text(l, m.perms),
                me: m.user_id == p.id,
            })
            .collect(),
        consumers: consumers
            .iter()
            .map(|r| ConsumerLine {
                role_id: *r,
                name: role_name(*r),
            })
            .collect(),
        // Roles that may use the vault at all (a consumer role without `vault.use` could not
        // read through any route); the engine takes any role.
        roles: roles
            .iter()
            .filter(|r| !consumers.contains(&r.id) && r.permissions.contains(&Permission::VaultUse))
            .map(|r| ConsumerLine {
                role_id: r.id,
                name: r.name.clone(),
            })
            .collect(),
        credentials: creds
            .iter()
            .map(|c| LockerCred {
                id: c.id,
                name: c.name.clone(),
                owner: who(&names, c.owner_id),
                removable: standing.manages || (c.owner_id == p.id && standing.member.any()),
            })
            .collect(),
        addable,
        can_add,
    })
}

fn locker_url(id: i64) -> String {
    format!("/console/vault/lockers/{id}")
}

/// `GET /console/vault/lockers/{id}` (`vault.use`; 404 for a locker the user may not see).
pub async fn locker(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    let id = path_id("locker", &id)?;
    locker_page(&state, &s, id, Flash::of_query(s.lang, &query), None).await
}

/// `POST /console/vault/lockers/{id}` (as `PUT /v2/credentialvault/lockers/{id}`): name and
/// description at the version the form was made from; a stale one shows the conflict with
/// what the user typed kept.
pub async fn update_locker(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    require_use(&s)?;
    let id = path_id("locker", &id)?;
    let version = form_number(&form, "version")?;
    let name = field(&form, "name").trim().to_owned();
    let description = field(&form, "description").to_owned();
    let patch = LockerPatch {
        version,
        name: Some(name.clone()),
        description: Some(description.clone()),
    };
    match state.vault.update_locker(&s.caller, id, patch).await {
        Ok(_) => Ok(done(&locker_url(id), "locker_saved")),
        Err(e) => {
            let mut draft = LockerDraft {
                name,
                description,
                o_name: field(&form, "o_name").to_owned(),
                o_description: field(&form, "o_desc").to_owned(),
                version,
                conflict: None,
            };
            if e.code == Code::Conflict {
                if let Ok((now, _)) = state.vault.locker_view(s.principal(), id).await {
                    if now.stamp.version != version {
                        let now_desc = now.description.unwrap_or_default();
                        let name_clash = merge_field(&mut draft.name, &draft.o_name, &now.name);
                        let desc_clash =
                            merge_field(&mut draft.description, &draft.o_description, &now_desc);
                        draft.o_name = now.name.clone();
                        draft.o_description = now_desc.clone();
                        draft.version = now.stamp.version;
                        draft.conflict = Some((
                            now.stamp.version,
                            if name_clash { now.name } else { String::new() },
                            if desc_clash { now_desc } else { String::new() },
                        ));
                    }
                }
            }
            refused(e, &locker_url(id), |f| {
                locker_page(&state, &s, id, f, Some(draft))
            })
            .await
        }
    }
}

/// `POST /console/vault/lockers/{id}/delete` (as `DELETE .../lockers/{id}`).
pub async fn delete_locker(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    require_use(&s)?;
    let id = path_id("locker", &id)?;
    match state.vault.delete_locker(&s.caller, id).await {
        Ok(()) => Ok(done("/console/vault", "locker_deleted")),
        Err(e) => refused(e, &locker_url(id), |f| locker_page(&state, &s, id, f, None)).await,
    }
}

/// `POST /console/vault/lockers/{id}/members` (as `PUT .../lockers/{id}/members/{userId}`):
/// `user` (user ID or #number) and the permission boxes.
pub async fn set_member(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    require_use(&s)?;
    let id = path_id("locker", &id)?;
    let result = async {
        let user = user_of(&state, "user", field(&form, "user")).await?;
        state
            .vault
            .set_member(&s.caller, id, user, perms_of(&form))
            .await
    }
    .await;
    match result {
        Ok(()) => Ok(done(&locker_url(id), "member_saved")),
        Err(e) => refused(e, &locker_url(id), |f| locker_page(&state, &s, id, f, None)).await,
    }
}

/// `POST /console/vault/lockers/{id}/members/{user}/remove` (as `DELETE .../members/{userId}`).
pub async fn remove_member(
    State(state): State<AppState>,
    s: Session,
    Path((id, user)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    require_use(&s)?;
    let id = path_id("locker", &id)?;
    let user = path_id("user", &user)?;
    match state.vault.remove_member(&s.caller, id, user).await {
        Ok(()) if user == s.principal().id => Ok(done("/console/vault", "member_removed")),
        Ok(()) => Ok(done(&locker_url(id), "member_removed")),
        Err(e) => refused(e, &locker_url(id), |f| locker_page(&state, &s, id, f, None)).await,
    }
}

/// `POST /console/vault/lockers/{id}/consumers` (as `PUT .../lockers/{id}/consumers`): `role`.
pub async fn add_consumer(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    require_use(&s)?;
    let id = path_id("locker", &id)?;
    let role = form_number(&form, "role")?;
    match state.vault.add_consumer(&s.caller, id, role).await {
        Ok(()) => Ok(done(&locker_url(id), "consumer_added")),
        Err(e) => refused(e, &locker_url(id), |f| locker_page(&state, &s, id, f, None)).await,
    }
}

/// `POST /console/vault/lockers/{id}/consumers/{role}/remove`.
pub async fn remove_consumer(
    State(state): State<AppState>,
    s: Session,
    Path((id, role)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    require_use(&s)?;
    let id = path_id("locker", &id)?;
    let role = path_id("role", &role)?;
    match state.vault.remove_consumer(&s.caller, id, role).await {
        Ok(()) => Ok(done(&locker_url(id), "consumer_removed")),
        Err(e) => refused(e, &locker_url(id), |f| locker_page(&state, &s, id, f, None)).await,
    }
}

/// `POST /console/vault/lockers/{id}/credentials` (as `PUT .../lockers/{id}/credentials/{cid}`):
/// `credential`.
pub async fn add_credential(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    require_use(&s)?;
    let id = path_id("locker", &id)?;
    let credential = form_number(&form, "credential")?;
    let back = field(&form, "back") == "credential";
    let result = state
        .vault
        .add_credential_to_locker(&s.caller, id, credential)
        .await;
    let to = if back {
        super::vault_credential::credential_url(credential)
    } else {
        locker_url(id)
    };
    match result {
        Ok(_) => Ok(done(&to, "cred_added")),
        Err(e) => refused(e, &to, |f| locker_page(&state, &s, id, f, None)).await,
    }
}

/// `POST /console/vault/lockers/{id}/credentials/{cid}/remove`.
pub async fn remove_credential(
    State(state): State<AppState>,
    s: Session,
    Path((id, credential)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    require_use(&s)?;
    let id = path_id("locker", &id)?;
    let credential = path_id("credential", &credential)?;
    let to = if field(&form, "back") == "credential" {
        super::vault_credential::credential_url(credential)
    } else {
        locker_url(id)
    };
    match state
        .vault
        .remove_credential_from_locker(&s.caller, id, credential)
        .await
    {
        Ok(()) => Ok(done(&to, "cred_removed")),
        Err(e) => refused(e, &to, |f| locker_page(&state, &s, id, f, None)).await,
    }
}

/// Re-exported for the credential handlers: the index page with a create form's input.
pub async fn index_again(
    state: &AppState,
    s: &Session,
    flash: Flash,
    draft: NewDraft,
) -> Result<Response> {
    vault_page(state, s, flash, draft).await
}
