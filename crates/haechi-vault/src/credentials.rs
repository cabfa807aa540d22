//! Credentials and their attributes: create, list, read, partial update, transfer, delete.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use haechi_identity::{Caller, Permission, Principal};
use haechi_store::inline::columns;
use haechi_store::{created_or_taken, in_tx, read, Db, Tx, Where};
use haechi_types::{time::now_ms, Code, Error, Result};
use serde_json::json;

use crate::access::{self, CredentialAccess};
use crate::model::{
    Credential, CredentialFilter, CredentialPatch, NewAttribute, NewCredential, Stamp,
};
use crate::sql::{
    self, bind_args, Arg, AttributeRow, CredentialRow, ATTRIBUTE_COLS, CREDENTIAL_COLS,
};
use crate::{check_description, check_name, limits, Vault};

/// Rendered credential lists by caller and filter, each with the list generation it was read
/// under ([`Vault::list_credentials_rendered`]), weighed by their bytes.
pub(crate) type ListCache = quick_cache::sync::Cache<ListKey, (i64, Bytes), ListWeight>;

pub(crate) fn list_cache() -> ListCache {
    ListCache::with_weighter(
        limits::LIST_CACHE_ENTRIES,
        limits::LIST_CACHE_BYTES,
        ListWeight,
    )
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct ListKey {
    uid: i64,
    admin: bool,
    filter: CredentialFilter,
}

#[derive(Clone)]
pub(crate) struct ListWeight;

impl quick_cache::Weighter<ListKey, (i64, Bytes)> for ListWeight {
    fn weight(&self, key: &ListKey, (_, body): &(i64, Bytes)) -> u64 {
        let names: usize = key.filter.names.iter().map(String::len).sum();
        (body.len() + names + std::mem::size_of::<ListKey>()) as u64
    }
}

pub(crate) fn not_modified(what: &str) -> Error {
    Error::new(Code::NotModified, format!("{what}: nothing to change"))
}

pub(crate) fn version_conflict(what: &str, given: i64, current: i64) -> Error {
    Error::conflict(format!(
        "{what} is at version {current}, not {given}: it changed since you read it; read it again and retry"
    ))
}

fn validate_new_attribute(prefix: &str, a: &NewAttribute) -> Result<()> {
    check_name(&format!("{prefix}.name"), &a.name)?;
    if let Some(d) = &a.description {
        check_description(&format!("{prefix}.description"), d)?;
    }
    Ok(())
}

fn duplicate_attribute(field: String, name: &str) -> Error {
    Error::field(field, format_args!("the credential already has an attribute named '{name}' (names are unique within a credential)"))
}

pub(crate) async fn user_exists_tx(tx: &mut Tx, id: i64) -> Result<bool> {
    let n: i64 = in_tx!(tx, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE id = $1"
    )
    .bind(id)
    .fetch_one(&mut *c)
    .await)?;
    Ok(n > 0)
}

pub(crate) async fn attributes_tx(tx: &mut Tx, credential: i64) -> Result<Vec<AttributeRow>> {
    let sql = format!(
        "SELECT {ATTRIBUTE_COLS} FROM vault_attributes a WHERE a.credential_id = $1 ORDER BY a.id"
    );
    Ok(in_tx!(tx, |c| sqlx::query_as(&sql)
        .bind(credential)
        .fetch_all(&mut *c)
        .await)?)
}

impl Vault {
    /// Creates a credential owned by the caller.
    pub async fn create_credential(
        &self,
        caller: &Caller,
        new: NewCredential,
    ) -> Result<Credential> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        check_name("name", &new.name)?;
        if let Some(d) = &new.description {
            check_description("description", d)?;
        }
        if new.attributes.len() > limits::ATTRIBUTES {
            return Err(Error::field(
                "attributes",
                format_args!(
                    "a credential has at most {} attributes (got {})",
                    limits::ATTRIBUTES,
                    new.attributes.len()
                ),
            ));
        }
        let mut names = HashSet::new();
        for (i, a) in new.attributes.iter().enumerate() {
            validate_new_attribute(&format!("attributes[{i}]"), a)?;
            if !names.insert(a.name.as_str()) {
                return Err(duplicate_attribute(
                    format!("attributes[{i}].name"),
                    &a.name,
                ));
            }
        }
        let now = now_ms();
        let stamp = Stamp::new(p.id, now);
        let mut tx = self.store.begin().await?;
        let inserted = in_tx!(tx, |c| {
            sqlx::query_scalar::<_, i64>(
            "INSERT INTO vault_credentials (name, description, owner_id, locker_id, created_by, created_at, updated_by, updated_at, version) \
             VALUES ($1, $2, $3, NULL, $3, $4, $3, $4, 0) RETURNING id"
        )
        .bind(&new.name)
        .bind(&new.description)
        .bind(p.id)
        .bind(now)
        .fetch_one(&mut *c)
        .await
        });
        // Names are unique per owner (issue 18 item 10): only the caller's own credentials
        // can collide, so the answer tells nothing about anyone else's.
        let id = created_or_taken(inserted, || {
            Error::conflict(format!(
                "you already own a credential named '{}'; choose another name",
                new.name
            ))
        })?;
        let mut attributes = Vec::with_capacity(new.attributes.len());
        for a in &new.attributes {
            let aid = insert_attribute(&mut tx, id, a, p.id, now).await?;
            attributes.push(crate::model::Attribute {
                id: aid,
                name: a.name.clone(),
                description: a.description.clone(),
                user_provided: a.user_provided,
                masked: a.masked,
                stamp,
            });
        }
        haechi_audit::append(
            &mut tx,
            actor.event("credential.create").target(format!("credential:{id}")).detail(json!({
                "name": new.name,
                "attributes": attributes.iter().map(|a| json!({ "id": a.id, "name": a.name })).collect::<Vec<_>>(),
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(Credential {
            id,
            name: new.name,
            description: new.description,
            owner_id: p.id,
            locker_id: None,
            stamp,
            attributes,
            completed: None,
        })
    }

    /// The list generation (migration 0017): it moves, in the same transaction, with every
    /// change that can change what [`Vault::list_credentials`] answers anyone (a credential, an
    /// attribute, whether a value is stored, a locker's members or consumers, a user's roles),
    /// on any server of the store. A list read after reading generation `g` is at least as new
    /// as `g`.
    pub async fn list_generation(&self) -> Result<i64> {
        const SQL: &str = "SELECT generation FROM vault_list_generation WHERE id = 1";
        Ok(match self.store.db() {
            Db::Sqlite(_) => columns::<(i64,)>(self.store.read_inline(SQL, &[])?)?.0,
            Db::Postgres(db) => sqlx::query_scalar(SQL).fetch_one(db).await?,
        })
    }

    /// [`Vault::list_credentials`] in the caller's wire form (`render`), answered again from
    /// memory while the list generation ([`Vault::list_generation`]) stands. A rendered list is
    /// kept under the generation read *before* its query, so it is never older than the
    /// generation it is kept under; kept per caller (its id, and whether it is a Locker Admin:
    /// all a list's visibility depends on besides the store) and filter, at most
    /// [`limits::LIST_CACHE_BYTES`] in all.
    pub async fn list_credentials_rendered(
        &self,
        p: &Principal,
        f: &CredentialFilter,
        render: impl FnOnce(Vec<Credential>) -> Result<Bytes>,
    ) -> Result<Bytes> {
        let generation = self.list_generation().await?;
        let key = ListKey {
            uid: p.id,
            admin: p.can(Permission::VaultLockerAdmin),
            filter: f.clone(),
        };
        if let Some((kept, body)) = self.lists.get(&key) {
            if kept == generation {
                return Ok(body);
            }
        }
        let body = render(self.list_credentials(p, f).await?)?;
        // Of two lists read at once, the one read under the later generation stays.
        if self
            .lists
            .peek(&key)
            .is_none_or(|(kept, _)| kept <= generation)
        {
            self.lists.insert(key, (generation, body.clone()));
        }
        Ok(body)
    }

    /// The credentials the caller may see (all for a Locker Admin), with `completed`.
    pub async fn list_credentials(
        &self,
        p: &Principal,
        f: &CredentialFilter,
    ) -> Result<Vec<Credential>> {
        self.query_credentials(p, f, None).await
    }

    /// Visible credentials, optionally only those in one locker, in id order.
    pub(crate) async fn query_credentials(
        &self,
        p: &Principal,
        f: &CredentialFilter,
        locker: Option<i64>,
    ) -> Result<Vec<Credential>> {
        if f.names.len() > limits::NAMES_PER_FILTER {
            return Err(Error::field(
                "names",
                format_args!("at most {} names per request", limits::NAMES_PER_FILTER),
            ));
        }
        let mut w = Where::default();
        let uid = w.arg(Arg::Int(p.id));
        let admin = w.arg(Arg::Bool(p.can(Permission::VaultLockerAdmin)));
        w.raw(sql::credential_visible(&uid, &admin));
        match f.consumed {
            Some(true) => w.raw(sql::is_consumer("c.locker_id", &uid)),
            Some(false) => w.raw(format!("NOT {}", sql::is_consumer("c.locker_id", &uid))),
            None => {}
        }
        if !f.names.is_empty() {
            let ph: Vec<String> = f
                .names
                .iter()
                .map(|n| w.arg(Arg::Text(n.clone())))
                .collect();
            w.raw(format!("c.name IN ({})", ph.join(", ")));
        }
        if let Some(l) = locker {
            let l = w.arg(Arg::Int(l));
            w.raw(format!("c.locker_id = {l}"));
        }
        let (limit, offset) = f.page.unwrap_or((i64::MAX, 0));
        let limit = w.arg(Arg::Int(limit));
        let offset = w.arg(Arg::Int(offset));
        // The page's credentials, and (by their ids) their attributes.
        let page = format!(
            "FROM vault_credentials c{} ORDER BY c.id LIMIT {limit} OFFSET {offset}",
            w.sql()
        );
        let args = w.args;
        let ids = format!("SELECT c.id {page}");
        #[derive(sqlx::FromRow, serde::Deserialize)]
        struct AttrWithValue {
            #[sqlx(flatten)]
            attr: AttributeRow,
            #[serde(deserialize_with = "haechi_store::packed::int_bool")]
            has_value: bool,
        }
        let has_value = format!(
            "EXISTS (SELECT 1 FROM vault_values v WHERE v.attribute_id = a.id \
               AND v.slot = CASE WHEN a.user_provided THEN {uid} ELSE 0 END)"
        );
        let cred_sql = format!("SELECT {CREDENTIAL_COLS} {page}");
        let attr_sql = format!(
            "SELECT {ATTRIBUTE_COLS}, {has_value} AS has_value \
             FROM vault_attributes a WHERE a.credential_id IN ({ids})"
        );
        let (creds, attrs): (Vec<CredentialRow>, Vec<AttrWithValue>) = match self.store.db() {
            // Read on the calling thread (a page is bounded; see `haechi_store::Inline`), the
            // rows straight into the row types.
            Db::Sqlite(_) => {
                let args = haechi_store::values(args.iter());
                (
                    self.store.rows_inline(&cred_sql, &args)?,
                    self.store.rows_inline(&attr_sql, &args)?,
                )
            }
            Db::Postgres(db) => {
                let creds = bind_args!(sqlx::query_as(&cred_sql), args)
                    .fetch_all(db)
                    .await?;
                let attrs = bind_args!(sqlx::query_as(&attr_sql), args)
                    .fetch_all(db)
                    .await?;
                (creds, attrs)
            }
        };
        let mut by_cred: HashMap<i64, (Vec<crate::model::Attribute>, bool)> = HashMap::new();
        for a in attrs {
            let entry = by_cred
                .entry(a.attr.credential_id)
                .or_insert_with(|| (Vec::new(), true));
            entry.1 &= a.has_value;
            entry.0.push(a.attr.into_attribute());
        }
        // Each credential's attributes in id order, sorted here: in SQL that order is a sort of
        // the whole page (no index has it), here a sort of each credential's few.
        Ok(creds
            .into_iter()
            .map(|c| {
                let (mut attributes, completed) =
                    by_cred.remove(&c.id).unwrap_or((Vec::new(), true));
                attributes.sort_unstable_by_key(|a| a.id);
                c.into_credential(attributes, Some(completed))
            })
            .collect())
    }

    /// One credential the caller may see (404 otherwise).
    pub async fn get_credential(&self, p: &Principal, id: i64) -> Result<Credential> {
        let acc = access::credential(&self.store, p, id)
            .await?
            .require_visible()?;
        self.credential_with_attributes(acc.row).await
    }

    pub(crate) async fn credential_with_attributes(
        &self,
        row: CredentialRow,
    ) -> Result<Credential> {
        let sql = format!("SELECT {ATTRIBUTE_COLS} FROM vault_attributes a WHERE a.credential_id = $1 ORDER BY a.id");
        let attrs: Vec<AttributeRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(row.id)
            .fetch_all(db)
            .await)?;
        Ok(row.into_credential(
            attrs
                .into_iter()
                .map(AttributeRow::into_attribute)
                .collect(),
            None,
        ))
    }

    async fn reload_credential(&self, id: i64) -> Result<Credential> {
        let sql = format!("SELECT {CREDENTIAL_COLS} FROM vault_credentials c WHERE c.id = $1");
        let row: Option<CredentialRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(db)
            .await)?;
        self.credential_with_attributes(row.ok_or_else(|| access::not_found_credential(id))?)
            .await
    }

    /// Partial update (the product's tip: send only what changes). Attributes with an `id`
    /// change that attribute; without one they are added; attributes not named stay as they are.
    /// Owner or Locker Admin. A stale `version` is 409; no change at all is 304.
    pub async fn update_credential(
        &self,
        caller: &Caller,
        id: i64,
        patch: CredentialPatch,
    ) -> Result<Credential> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        if let Some(n) = &patch.name {
            check_name("name", n)?;
        }
        if let Some(d) = &patch.description {
            check_description("description", d)?;
        }
        let mut tx = self.store.begin().await?;
        let acc = access::credential_tx(&mut tx, p, id)
            .await?
            .require_visible()?;
        acc.require_editable()?;
        let row = &acc.row;
        if patch.version != row.stamp.version {
            return Err(version_conflict(
                &format!("credential {id}"),
                patch.version,
                row.stamp.version,
            ));
        }
        if let Some(l) = patch.locker_id {
            if Some(l) != row.locker_id {
                return Err(Error::field(
                    "lockerId",
                    "a credential moves between lockers with PUT/DELETE /v2/credentialvault/lockers/{lockerId}/credentials/{id}; \
                     send the current lockerId or none",
                ));
            }
        }
        let name = patch.name.clone().filter(|n| *n != row.name);
        let description = patch
            .description
            .clone()
            .filter(|d| Some(d) != row.description.as_ref());
        let owner = patch.owner_id.filter(|o| *o != row.owner_id);
        if let Some(o) = owner {
            if !user_exists_tx(&mut tx, o).await? {
                return Err(Error::field(
                    "ownerId",
                    format_args!("there is no user with id {o}"),
                ));
            }
        }

        let existing = attributes_tx(&mut tx, id).await?;
        let plan = plan_attribute_changes(&mut tx, id, &existing, &patch).await?;
        if name.is_none() && description.is_none() && owner.is_none() && plan.is_empty() {
            return Err(not_modified(&format!("credential {id}")));
        }

        let now = now_ms();
        let updated = in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE vault_credentials SET name = $1, description = $2, owner_id = $3, updated_by = $4, updated_at = $5, \
             version = version + 1 WHERE id = $6 AND version = $7"
        )
        .bind(name.as_ref().unwrap_or(&row.name))
        .bind(description.as_ref().or(row.description.as_ref()))
        .bind(owner.unwrap_or(row.owner_id))
        .bind(p.id)
        .bind(now)
        .bind(id)
        .bind(patch.version)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        });
        let updated = created_or_taken(updated, || {
            Error::conflict(format!(
                "the owner of credential {id} already owns a credential named '{}'; choose another name",
                name.as_ref().unwrap_or(&row.name)
            ))
        })?;
        if updated != 1 {
            return Err(version_conflict(
                &format!("credential {id}"),
                patch.version,
                patch.version + 1,
            ));
        }
        plan.apply(&mut tx, id, p.id, now).await?;
        haechi_audit::append(
            &mut tx,
            actor.event("credential.update").target(format!("credential:{id}")).detail(json!({
                "name": name,
                "description_changed": description.is_some(),
                "owner_id": owner,
                "attributes_changed": plan.changed.iter().map(|a| a.id).collect::<Vec<_>>(),
                "attributes_added": plan.added.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
                "version": patch.version + 1,
            })),
        )
        .await?;
        tx.commit().await?;
        self.reload_credential(id).await
    }

    /// Gives a credential to another user (owner or Locker Admin). The same owner is 304.
    pub async fn transfer_credential(
        &self,
        caller: &Caller,
        id: i64,
        new_owner: i64,
    ) -> Result<Credential> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let mut tx = self.store.begin().await?;
        let acc = access::credential_tx(&mut tx, p, id)
            .await?
            .require_visible()?;
        acc.require_editable()?;
        if !user_exists_tx(&mut tx, new_owner).await? {
            return Err(Error::not_found(format_args!("user {new_owner}")));
        }
        if acc.row.owner_id == new_owner {
            return Err(not_modified(&format!(
                "credential {id} already belongs to user {new_owner}"
            )));
        }
        let moved = in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE vault_credentials SET owner_id = $1, updated_by = $2, updated_at = $3, version = version + 1 WHERE id = $4"
        )
        .bind(new_owner)
        .bind(p.id)
        .bind(now_ms())
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        });
        created_or_taken(moved, || {
            Error::conflict(format!(
                "user {new_owner} already owns a credential named '{}'; rename credential {id} first",
                acc.row.name
            ))
        })?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("credential.owner")
                .target(format!("credential:{id}"))
                .detail(json!({
                    "from": acc.row.owner_id, "to": new_owner,
                })),
        )
        .await?;
        tx.commit().await?;
        self.reload_credential(id).await
    }

    /// Deletes a credential with its attributes and values (owner or Locker Admin).
    pub async fn delete_credential(&self, caller: &Caller, id: i64) -> Result<()> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let mut tx = self.store.begin().await?;
        let acc: CredentialAccess = access::credential_tx(&mut tx, p, id)
            .await?
            .require_visible()?;
        acc.require_editable()?;
        in_tx!(tx, |c| sqlx::query(
            "DELETE FROM vault_credentials WHERE id = $1"
        )
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        haechi_audit::append(
            &mut tx,
            actor
                .event("credential.delete")
                .target(format!("credential:{id}"))
                .detail(json!({ "name": acc.row.name, "owner_id": acc.row.owner_id, "locker_id": acc.row.locker_id })),
        )
        .await?;
        tx.commit().await
    }
}

async fn insert_attribute(
    tx: &mut Tx,
    credential: i64,
    a: &NewAttribute,
    by: i64,
    now: i64,
) -> Result<i64> {
    Ok(in_tx!(tx, |c| {
        sqlx::query_scalar::<_, i64>(
        "INSERT INTO vault_attributes (credential_id, name, description, user_provided, masked, created_by, created_at, updated_by, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $7, 0) RETURNING id"
    )
    .bind(credential)
    .bind(&a.name)
    .bind(&a.description)
    .bind(a.user_provided)
    .bind(a.masked)
    .bind(by)
    .bind(now)
    .fetch_one(&mut *c)
    .await
    })?)
}

/// An attribute after an update.
struct ChangedAttribute {
    id: i64,
    name: String,
    description: Option<String>,
    user_provided: bool,
    masked: bool,
    renamed: bool,
}

/// What an update does to the attributes.
struct AttributePlan {
    changed: Vec<ChangedAttribute>,
    added: Vec<NewAttribute>,
}

impl AttributePlan {
    fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty()
    }

    async fn apply(&self, tx: &mut Tx, credential: i64, by: i64, now: i64) -> Result<()> {
        // Renames go through a name no user can choose (names have no control characters), so
        // swapping two attributes' names does not trip the uniqueness constraint midway.
        for a in self.changed.iter().filter(|a| a.renamed) {
            in_tx!(tx, |c| sqlx::query(
                "UPDATE vault_attributes SET name = $1 WHERE id = $2"
            )
            .bind(format!("\u{1}{}", a.id))
            .bind(a.id)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
        }
        for a in &self.changed {
            in_tx!(tx, |c| {
                sqlx::query(
                "UPDATE vault_attributes SET name = $1, description = $2, user_provided = $3, masked = $4, \
                 updated_by = $5, updated_at = $6, version = version + 1 WHERE id = $7"
            )
            .bind(&a.name)
            .bind(&a.description)
            .bind(a.user_provided)
            .bind(a.masked)
            .bind(by)
            .bind(now)
            .bind(a.id)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
            })?;
        }
        for a in &self.added {
            insert_attribute(tx, credential, a, by, now).await?;
        }
        Ok(())
    }
}

async fn plan_attribute_changes(
    tx: &mut Tx,
    credential: i64,
    existing: &[AttributeRow],
    patch: &CredentialPatch,
) -> Result<AttributePlan> {
    let mut plan = AttributePlan {
        changed: Vec::new(),
        added: Vec::new(),
    };
    // Final name of every attribute, to check uniqueness after all changes.
    let mut final_names: HashMap<i64, String> =
        existing.iter().map(|a| (a.id, a.name.clone())).collect();
    let mut seen = HashSet::new();
    let mut added_names: Vec<(usize, String)> = Vec::new();
    for (i, ap) in patch.attributes.iter().enumerate() {
        let prefix = format!("attributes[{i}]");
        if let Some(n) = &ap.name {
            check_name(&format!("{prefix}.name"), n)?;
        }
        if let Some(d) = &ap.description {
            check_description(&format!("{prefix}.description"), d)?;
        }
        let Some(aid) = ap.id else {
            let Some(name) = ap.name.clone() else {
                return Err(Error::field(
                    format!("{prefix}.name"),
                    "is required for a new attribute (one without an id)",
                ));
            };
            added_names.push((i, name.clone()));
            plan.added.push(NewAttribute {
                name,
                description: ap.description.clone(),
                user_provided: ap.user_provided.unwrap_or(true),
                masked: ap.masked.unwrap_or(false),
            });
            continue;
        };
        if !seen.insert(aid) {
            return Err(Error::field(
                format!("{prefix}.id"),
                format_args!("attribute {aid} appears twice"),
            ));
        }
        let Some(old) = existing.iter().find(|a| a.id == aid) else {
            return Err(Error::field(
                format!("{prefix}.id"),
                format_args!("credential {credential} has no attribute {aid}"),
            ));
        };
        if let Some(v) = ap.version {
            if v != old.stamp.version {
                return Err(version_conflict(
                    &format!("attribute {aid}"),
                    v,
                    old.stamp.version,
                ));
            }
        }
        let new = ChangedAttribute {
            id: aid,
            name: ap.name.clone().unwrap_or_else(|| old.name.clone()),
            description: ap.description.clone().or_else(|| old.description.clone()),
            user_provided: ap.user_provided.unwrap_or(old.user_provided),
            masked: ap.masked.unwrap_or(old.masked),
            renamed: ap.name.as_ref().is_some_and(|n| *n != old.name),
        };
        if new.name == old.name
            && new.description == old.description
            && new.user_provided == old.user_provided
            && new.masked == old.masked
        {
            continue;
        }
        if new.user_provided != old.user_provided {
            let values: i64 = in_tx!(tx, |c| sqlx::query_scalar(
                "SELECT COUNT(*) FROM vault_values WHERE attribute_id = $1"
            )
            .bind(aid)
            .fetch_one(&mut *c)
            .await)?;
            if values > 0 {
                return Err(Error::conflict(format!(
                    "attribute {aid} has {values} value(s): delete them before changing userProvided"
                )));
            }
        }
        final_names.insert(aid, new.name.clone());
        plan.changed.push(new);
    }
    let total = existing.len() + plan.added.len();
    if total > limits::ATTRIBUTES {
        return Err(Error::field(
            "attributes",
            format_args!(
                "a credential has at most {} attributes (this update would make {total})",
                limits::ATTRIBUTES
            ),
        ));
    }
    let mut names: HashSet<&str> = HashSet::new();
    for n in final_names.values() {
        if !names.insert(n.as_str()) {
            let i = patch
                .attributes
                .iter()
                .position(|a| a.name.as_deref() == Some(n.as_str()))
                .unwrap_or(0);
            return Err(duplicate_attribute(format!("attributes[{i}].name"), n));
        }
    }
    for (i, n) in &added_names {
        if !names.insert(n.as_str()) {
            return Err(duplicate_attribute(format!("attributes[{i}].name"), n));
        }
    }
    Ok(plan)
}
