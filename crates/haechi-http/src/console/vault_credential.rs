//! A credential in the console (`/console/vault/credentials/{id}`): its attributes, and for its
//! owner and its locker's consumers which values exist, masked. Opening the page reads no value
//! (the engine's `value_infos` lists them without decrypting). **Reveal** and **Copy** are
//! POSTs with the CSRF token, each one audited read of one value at that moment
//! (`Vault::read_value`); the answer carries that value only, `Cache-Control: no-store`, and
//! the page's script removes it from the DOM after [`REMASK_SECS`] (Copy never puts it there).
//!
//! Edit, transfer, delete and the value forms call the engine as the API does; a stale edit
//! (another change since the form was made) shows the conflict with the user's input kept. A
//! secret the user typed is never written back into a page.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use haechi_identity::Permission;
use haechi_types::{Code, Error};
use haechi_vault::{
    AttributePatch, CredentialPatch, NewAttribute, NewCredential, NewValue, ValuePatch,
};
use secrecy::{ExposeSecret, SecretString};

use super::vault::{
    done, field, form_number, path_id, refused, user_of, who, AttrDraft, Flash, NewDraft, NEW_ATTRS,
};
use super::{page, when, Chrome, Fail, Result, Session};
use crate::AppState;

/// Seconds a revealed value stays on the page.
pub const REMASK_SECS: u32 = 20;

/// Rows for new attributes in the edit form.
const EDIT_NEW_ATTRS: usize = 2;

pub fn credential_url(id: i64) -> String {
    format!("/console/vault/credentials/{id}")
}

/// One attribute with the caller's value of it (never the value itself, unless just revealed).
pub struct AttrLine {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub user_provided: bool,
    pub masked: bool,
    /// The caller's value (a standard one, or their own `userProvided` one): id, version,
    /// last change.
    pub value: Option<(i64, i64, String)>,
    /// The caller may set or change this value.
    pub writable: bool,
    /// The value the user has just asked to reveal (a plain form POST without the script).
    pub revealed: Option<String>,
}

/// An attribute's editable fields.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AttrFields {
    pub name: String,
    pub description: String,
    pub user_provided: bool,
    pub masked: bool,
}

impl AttrFields {
    fn of(a: &haechi_vault::Attribute) -> AttrFields {
        AttrFields {
            name: a.name.clone(),
            description: a.description.clone().unwrap_or_default(),
            user_provided: a.user_provided,
            masked: a.masked,
        }
    }

    fn summary(&self, l: super::Lang) -> String {
        let mut t = self.name.clone();
        if !self.description.is_empty() {
            t.push_str(&format!(" — {}", self.description));
        }
        t.push_str(&format!(
            " · {}",
            if self.user_provided {
                l.t("v_user_provided")
            } else {
                l.t("v_standard")
            }
        ));
        if self.masked {
            t.push_str(&format!(" · {}", l.t("v_masked")));
        }
        t
    }
}

/// An existing attribute in the edit form: what is in the fields, and what they held when the
/// form was made (hidden `o` fields: a stale edit merges against them).
pub struct AttrEdit {
    pub id: i64,
    pub typed: AttrFields,
    pub orig: AttrFields,
    /// What is stored now, when both the user and someone else changed this attribute.
    pub now: String,
}

/// The edit form's input, kept when it comes back.
pub struct EditDraft {
    pub name: String,
    pub description: String,
    pub o_name: String,
    pub o_description: String,
    pub version: i64,
    pub attrs: Vec<AttrEdit>,
    pub added: Vec<AttrDraft>,
    /// After a stale edit: the version stored now, and what is stored now in the name and
    /// the description where both the user and someone else changed them.
    pub conflict: Option<(i64, String, String)>,
}

impl EditDraft {
    fn of(cred: &haechi_vault::Credential) -> EditDraft {
        let name = cred.name.clone();
        let description = cred.description.clone().unwrap_or_default();
        EditDraft {
            o_name: name.clone(),
            o_description: description.clone(),
            name,
            description,
            version: cred.stamp.version,
            attrs: cred
                .attributes
                .iter()
                .map(|a| AttrEdit {
                    id: a.id,
                    typed: AttrFields::of(a),
                    orig: AttrFields::of(a),
                    now: String::new(),
                })
                .collect(),
            added: (0..EDIT_NEW_ATTRS).map(AttrDraft::blank).collect(),
            conflict: None,
        }
    }

    /// Merges the user's stale edit with what is stored now (three ways, field by field):
    /// a field the user left as it was takes the stored value; a field the user changed keeps
    /// the input, and where someone else changed it too, the stored value is shown beside it.
    /// The form then carries the stored version, so saving again applies the user's input.
    fn merge(&mut self, l: super::Lang, now: &haechi_vault::Credential) {
        let now_desc = now.description.clone().unwrap_or_default();
        let three = super::vault::merge_field;
        let name_clash = three(&mut self.name, &self.o_name.clone(), &now.name);
        let desc_clash = three(
            &mut self.description,
            &self.o_description.clone(),
            &now_desc,
        );
        for a in &mut self.attrs {
            let Some(stored) = now.attributes.iter().find(|o| o.id == a.id) else {
                continue;
            };
            let stored = AttrFields::of(stored);
            let mut clash = false;
            clash |= three(&mut a.typed.name, &a.orig.name.clone(), &stored.name);
            clash |= three(
                &mut a.typed.description,
                &a.orig.description.clone(),
                &stored.description,
            );
            if a.typed.user_provided == a.orig.user_provided {
                a.typed.user_provided = stored.user_provided;
            } else if stored.user_provided != a.orig.user_provided
                && stored.user_provided != a.typed.user_provided
            {
                clash = true;
            }
            if a.typed.masked == a.orig.masked {
                a.typed.masked = stored.masked;
            } else if stored.masked != a.orig.masked && stored.masked != a.typed.masked {
                clash = true;
            }
            a.now = if clash {
                stored.summary(l)
            } else {
                String::new()
            };
            a.orig = stored;
        }
        // Attributes someone else added meanwhile.
        let extra: Vec<AttrEdit> = now
            .attributes
            .iter()
            .filter(|o| !self.attrs.iter().any(|a| a.id == o.id))
            .map(|o| AttrEdit {
                id: o.id,
                typed: AttrFields::of(o),
                orig: AttrFields::of(o),
                now: String::new(),
            })
            .collect();
        self.attrs.extend(extra);
        self.o_name = now.name.clone();
        self.o_description = now_desc.clone();
        self.version = now.stamp.version;
        self.conflict = Some((
            now.stamp.version,
            if name_clash {
                now.name.clone()
            } else {
                String::new()
            },
            if desc_clash { now_desc } else { String::new() },
        ));
    }
}

#[derive(Template)]
#[template(path = "console/vault_credential.html")]
struct CredentialPage {
    c: Chrome,
    flash: Flash,
    id: i64,
    name: String,
    description: String,
    owner: String,
    locker: Option<(i64, String)>,
    version: i64,
    created: String,
    updated: String,
    standing: String,
    sealed: bool,
    consumes: bool,
    editable: bool,
    attrs: Vec<AttrLine>,
    draft: EditDraft,
    /// Lockers the owner may put the credential in (they are a member of).
    lockers: Vec<(i64, String)>,
    can_remove_from_locker: bool,
    remask: u32,
}

struct Extra {
    flash: Flash,
    draft: Option<EditDraft>,
    revealed: Option<(i64, SecretString)>,
}

impl Extra {
    fn flash(flash: Flash) -> Extra {
        Extra {
            flash,
            draft: None,
            revealed: None,
        }
    }
}

async fn credential_page(state: &AppState, s: &Session, id: i64, x: Extra) -> Result<Response> {
    s.require(Permission::VaultUse)?;
    let p = s.principal();
    let l = s.lang;
    let off = state.http.utc_offset_secs;
    let (cred, st) = state.vault.credential_view(p, id).await?;
    // Which values exist for this user: no value is read (nothing to audit).
    let infos = if st.consumes {
        state.vault.value_infos(p, id).await?
    } else {
        Vec::new()
    };
    let mut ids = vec![cred.owner_id, cred.stamp.created_by, cred.stamp.updated_by];
    ids.extend(infos.iter().map(|v| v.stamp.updated_by));
    let names = state.vault.user_names(&ids).await?;
    let locker = match cred.locker_id {
        Some(lid) => {
            let name = match state.vault.locker_view(p, lid).await {
                Ok((lk, _)) => lk.name,
                Err(_) => format!("#{lid}"),
            };
            Some((lid, name))
        }
        None => None,
    };
    // The engine lets the owner (as a member of the locker) or a Locker Admin put it in.
    let lockers = if (st.owner || st.admin) && cred.locker_id.is_none() {
        let all = state
            .vault
            .list_lockers(
                p,
                &haechi_vault::LockerFilter {
                    advanced: true,
                    ..Default::default()
                },
            )
            .await?;
        all.into_iter()
            .filter(|lk| {
                st.admin
                    || lk
                        .members
                        .iter()
                        .flatten()
                        .any(|m| m.user_id == p.id && m.perms.any())
            })
            .map(|lk| (lk.id, lk.name))
            .collect()
    } else {
        Vec::new()
    };
    let attrs = cred
        .attributes
        .iter()
        .map(|a| {
            let value = infos.iter().find(|v| v.attribute_id == a.id).map(|v| {
                (
                    v.id,
                    v.stamp.version,
                    format!(
                        "{} · {}",
                        who(&names, v.stamp.updated_by),
                        when(v.stamp.updated_at, off)
                    ),
                )
            });
            let revealed = match (&x.revealed, &value) {
                (Some((vid, text)), Some((id, _, _))) if vid == id => {
                    Some(text.expose_secret().to_owned())
                }
                _ => None,
            };
            AttrLine {
                id: a.id,
                name: a.name.clone(),
                description: a.description.clone().unwrap_or_default(),
                user_provided: a.user_provided,
                masked: a.masked,
                value,
                writable: st.consumes && (a.user_provided || st.owner),
                revealed,
            }
        })
        .collect();
    let draft = x.draft.unwrap_or_else(|| EditDraft::of(&cred));
    let mut standing = Vec::new();
    if st.owner {
        standing.push(l.t("vw_owner"));
    }
    if st.consumer {
        standing.push(l.t("vw_consumer"));
    }
    if st.member.own || st.member.manage {
        standing.push(l.t("vw_locker_admin_member"));
    }
    if st.admin && !st.owner {
        standing.push(l.t("vw_admin"));
    }
    page(CredentialPage {
        c: Chrome::new(
            state,
            s,
            "vault",
            format!("{} {}", l.t("v_credential"), cred.name),
        ),
        flash: x.flash,
        id,
        name: cred.name.clone(),
        description: cred.description.clone().unwrap_or_default(),
        owner: who(&names, cred.owner_id),
        locker,
        version: cred.stamp.version,
        created: format!(
            "{} · {}",
            who(&names, cred.stamp.created_by),
            when(cred.stamp.created_at, off)
        ),
        updated: format!(
            "{} · {}",
            who(&names, cred.stamp.updated_by),
            when(cred.stamp.updated_at, off)
        ),
        standing: standing.join(", "),
        sealed: !state.vault.applied(),
        consumes: st.consumes,
        editable: st.editable,
        attrs,
        draft,
        lockers,
        // The engine's rule for DELETE .../lockers/{id}/credentials/{cid}.
        can_remove_from_locker: cred.locker_id.is_some()
            && (st.member.own || st.member.manage || st.admin || (st.owner && st.member.any())),
        remask: REMASK_SECS,
    })
}

/// `GET /console/vault/credentials/{id}` (`vault.use`; 404 for a credential the user may not
/// see, as the API).
pub async fn page_get(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    let id = path_id("credential", &id)?;
    credential_page(
        &state,
        &s,
        id,
        Extra::flash(Flash::of_query(s.lang, &query)),
    )
    .await
}

fn attribute_of(d: &AttrDraft) -> NewAttribute {
    NewAttribute {
        name: d.name.clone(),
        description: (!d.description.is_empty()).then(|| d.description.clone()),
        user_provided: d.user_provided,
        masked: d.masked,
    }
}

/// `POST /console/vault/credentials` (as `POST /v2/credentialvault/credentials`): name,
/// description and the attribute rows that have a name.
pub async fn create(State(state): State<AppState>, s: Session, body: Bytes) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::VaultUse)?;
    let name = field(&form, "name").trim().to_owned();
    let description = field(&form, "description").to_owned();
    let rows: Vec<AttrDraft> = (0..NEW_ATTRS)
        .map(|i| AttrDraft::of_form(&form, i))
        .collect();
    let new = NewCredential {
        name: name.clone(),
        description: (!description.is_empty()).then(|| description.clone()),
        attributes: rows
            .iter()
            .filter(|a| !a.name.is_empty())
            .map(attribute_of)
            .collect(),
    };
    match state.vault.create_credential(&s.caller, new).await {
        Ok(c) => Ok(done(&credential_url(c.id), "cred_created")),
        Err(e) => {
            let draft = NewDraft {
                cred_name: name,
                cred_description: description,
                attrs: rows,
                ..Default::default()
            };
            refused(e, "/console/vault", |f| {
                super::vault::index_again(&state, &s, f, draft)
            })
            .await
        }
    }
}

/// `POST /console/vault/credentials/{id}` (as `PUT /v2/credentialvault/credentials/{id}`):
/// name, description and attributes at the version the form was made from; new attribute rows
/// with a name are added.
pub async fn update(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::VaultUse)?;
    let id = path_id("credential", &id)?;
    let version = form_number(&form, "version")?;
    let name = field(&form, "name").trim().to_owned();
    let description = field(&form, "description").to_owned();
    // The attributes the form was made with (`e{id}_...` fields, ids listed in `attrs`).
    let attr_ids: Vec<i64> = field(&form, "attrs")
        .split(',')
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    let fields = |p: &str| AttrFields {
        name: field(&form, &format!("{p}name")).trim().to_owned(),
        description: field(&form, &format!("{p}desc")).to_owned(),
        user_provided: field(&form, &format!("{p}kind")) == "user",
        masked: field(&form, &format!("{p}masked")) == "1",
    };
    let edits: Vec<AttrEdit> = attr_ids
        .iter()
        .map(|aid| AttrEdit {
            id: *aid,
            typed: fields(&format!("e{aid}_")),
            orig: fields(&format!("e{aid}_o")),
            now: String::new(),
        })
        .collect();
    let added: Vec<AttrDraft> = (0..EDIT_NEW_ATTRS)
        .map(|i| AttrDraft::of_form(&form, i))
        .collect();
    let result =
        async {
            // Descriptions: an empty field where there was none changes nothing.
            let (current, _) = state.vault.credential_view(s.principal(), id).await?;
            let desc = |typed: &str, old: &Option<String>| {
                (typed != old.as_deref().unwrap_or("")).then(|| typed.to_owned())
            };
            let mut attributes: Vec<AttributePatch> = edits
                .iter()
                .map(|a| {
                    let old = current.attributes.iter().find(|o| o.id == a.id);
                    AttributePatch {
                        id: Some(a.id),
                        version: None,
                        name: Some(a.typed.name.clone()),
                        description: match old {
                            Some(o) => desc(&a.typed.description, &o.description),
                            None => Some(a.typed.description.clone()),
                        },
                        user_provided: Some(a.typed.user_provided),
                        masked: Some(a.typed.masked),
                    }
                })
                .collect();
            attributes.extend(added.iter().filter(|a| !a.name.is_empty()).map(|a| {
                AttributePatch {
                    id: None,
                    version: None,
                    name: Some(a.name.clone()),
                    description: (!a.description.is_empty()).then(|| a.description.clone()),
                    user_provided: Some(a.user_provided),
                    masked: Some(a.masked),
                }
            }));
            let patch = CredentialPatch {
                version,
                name: Some(name.clone()),
                description: desc(&description, &current.description),
                owner_id: None,
                locker_id: None,
                attributes,
            };
            state.vault.update_credential(&s.caller, id, patch).await
        }
        .await;
    match result {
        Ok(_) => Ok(done(&credential_url(id), "cred_saved")),
        Err(e) => {
            let mut draft = EditDraft {
                name,
                description,
                o_name: field(&form, "o_name").to_owned(),
                o_description: field(&form, "o_desc").to_owned(),
                version,
                attrs: edits,
                added,
                conflict: None,
            };
            if e.code == Code::Conflict {
                if let Ok((now, _)) = state.vault.credential_view(s.principal(), id).await {
                    if now.stamp.version != version {
                        draft.merge(s.lang, &now);
                    }
                }
            }
            refused(e, &credential_url(id), |f| {
                credential_page(
                    &state,
                    &s,
                    id,
                    Extra {
                        flash: f,
                        draft: Some(draft),
                        revealed: None,
                    },
                )
            })
            .await
        }
    }
}

/// `POST /console/vault/credentials/{id}/owner` (as `PUT .../credentials/{id}/owner/{ownerId}`):
/// `owner` (user ID or #number).
pub async fn transfer(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::VaultUse)?;
    let id = path_id("credential", &id)?;
    let result = async {
        let owner = user_of(&state, "owner", field(&form, "owner")).await?;
        state.vault.transfer_credential(&s.caller, id, owner).await
    }
    .await;
    match result {
        // The new owner may be the only one who sees it now.
        Ok(_) => match state.vault.credential_view(s.principal(), id).await {
            Ok(_) => Ok(done(&credential_url(id), "cred_transferred")),
            Err(_) => Ok(done("/console/vault", "cred_transferred")),
        },
        Err(e) => {
            refused(e, &credential_url(id), |f| {
                credential_page(&state, &s, id, Extra::flash(f))
            })
            .await
        }
    }
}

/// `POST /console/vault/credentials/{id}/locker` (as `PUT .../lockers/{lockerId}/credentials/{id}`):
/// puts the credential into the locker `locker`.
pub async fn put_in_locker(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::VaultUse)?;
    let id = path_id("credential", &id)?;
    let locker = form_number(&form, "locker")?;
    match state
        .vault
        .add_credential_to_locker(&s.caller, locker, id)
        .await
    {
        Ok(_) => Ok(done(&credential_url(id), "cred_added")),
        Err(e) => {
            refused(e, &credential_url(id), |f| {
                credential_page(&state, &s, id, Extra::flash(f))
            })
            .await
        }
    }
}

/// `POST /console/vault/credentials/{id}/delete` (as `DELETE .../credentials/{id}`).
pub async fn delete(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    s.require(Permission::VaultUse)?;
    let id = path_id("credential", &id)?;
    match state.vault.delete_credential(&s.caller, id).await {
        Ok(()) => Ok(done("/console/vault", "cred_deleted")),
        Err(e) => {
            refused(e, &credential_url(id), |f| {
                credential_page(&state, &s, id, Extra::flash(f))
            })
            .await
        }
    }
}

/// `POST /console/vault/credentials/{id}/values` (as `POST .../attributevalues`): `attribute`
/// and `value`. The value is never shown back, also not when it is refused.
pub async fn create_value(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let mut form = s.form(&body)?;
    s.require(Permission::VaultUse)?;
    let id = path_id("credential", &id)?;
    let attribute = form_number(&form, "attribute")?;
    let value = SecretString::from(form.remove("value").unwrap_or_default());
    drop(form);
    let result = if value.expose_secret().is_empty() {
        Err(Error::field("value", "is empty: type the value to store"))
    } else {
        state
            .vault
            .create_values(
                &s.caller,
                id,
                vec![NewValue {
                    attribute_id: attribute,
                    value,
                }],
            )
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => Ok(done(&credential_url(id), "value_saved")),
        Err(e) => {
            refused(e, &credential_url(id), |f| {
                credential_page(&state, &s, id, Extra::flash(f))
            })
            .await
        }
    }
}

/// `POST /console/vault/credentials/{id}/values/{vid}` (as `PUT .../attributevalues/{vid}`):
/// `version` and the new `value`.
pub async fn update_value(
    State(state): State<AppState>,
    s: Session,
    Path((id, vid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let mut form = s.form(&body)?;
    s.require(Permission::VaultUse)?;
    let id = path_id("credential", &id)?;
    let vid = path_id("value", &vid)?;
    let version = form_number(&form, "version")?;
    let value = SecretString::from(form.remove("value").unwrap_or_default());
    drop(form);
    let result = if value.expose_secret().is_empty() {
        Err(Error::field("value", "is empty: type the new value"))
    } else {
        state
            .vault
            .update_value(
                &s.caller,
                id,
                vid,
                ValuePatch {
                    version,
                    attribute_id: None,
                    value,
                },
            )
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => Ok(done(&credential_url(id), "value_saved")),
        Err(e) => {
            refused(e, &credential_url(id), |f| {
                credential_page(&state, &s, id, Extra::flash(f))
            })
            .await
        }
    }
}

/// `POST /console/vault/credentials/{id}/values/{vid}/delete`.
pub async fn delete_value(
    State(state): State<AppState>,
    s: Session,
    Path((id, vid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    s.require(Permission::VaultUse)?;
    let id = path_id("credential", &id)?;
    let vid = path_id("value", &vid)?;
    match state.vault.delete_value(&s.caller, id, vid).await {
        Ok(()) => Ok(done(&credential_url(id), "value_deleted")),
        Err(e) => {
            refused(e, &credential_url(id), |f| {
                credential_page(&state, &s, id, Extra::flash(f))
            })
            .await
        }
    }
}

/// `POST /console/vault/credentials/{id}/values/{vid}/reveal` (`vault.use`; the engine lets
/// only the owner and the locker's consumers read, as `GET .../attributevalues`): one audited
/// read of one value (`via=copy` for Copy). With `Accept: application/json` (the page's
/// script) the answer is `{"value","remaskSecs"}`; without the script, the page with that one
/// value shown. Always `Cache-Control: no-store`.
pub async fn reveal(
    State(state): State<AppState>,
    s: Session,
    Path((id, vid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::VaultUse)?;
    let id = path_id("credential", &id)?;
    let vid = path_id("value", &vid)?;
    let via = if field(&form, "via") == "copy" {
        "console.copy"
    } else {
        "console.reveal"
    };
    let value = state
        .vault
        .read_value(&s.caller, id, vid, via)
        .await
        .map_err(Fail)?;
    let json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let mut res = if json {
        axum::Json(serde_json::json!({
            "value": value.value.expose_secret(),
            "remaskSecs": REMASK_SECS,
        }))
        .into_response()
    } else {
        credential_page(
            &state,
            &s,
            id,
            Extra {
                flash: Flash::default(),
                draft: None,
                revealed: Some((vid, value.value)),
            },
        )
        .await?
    };
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}
