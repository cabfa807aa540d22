//! Attribute values: encrypted on write, decrypted on read, each read audited.
//!
//! A standard attribute has one value (`user_id` NULL, set by the credential's owner); a
//! `userProvided` attribute has one value per user (the owner's and each consumer's own), and
//! each user sees only their own. Values are for the credential's owner and the consumers of its
//! locker only: a Locker Admin or a locker's owner/manager sees the credential but not its values.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use haechi_audit::Outcome;
use haechi_identity::{Actor, Caller, Principal};
use haechi_store::{created_or_taken, in_tx, read, Tx};
use haechi_types::{time::now_ms, Error, Result};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::access::{self, CredentialAccess};
use crate::credentials::{attributes_tx, not_modified, version_conflict};
use crate::crypto::{DataKey, Slot};
use crate::error::VaultError;
use crate::keys::Keyring;
use crate::model::{NewValue, Stamp, Value, ValuePatch};
use crate::{limits, Vault};

const VALUE_COLS: &str =
    "v.id, v.credential_id, v.attribute_id, v.user_id, v.key_id, v.nonce, v.ciphertext, \
     v.created_by, v.created_at, v.updated_by, v.updated_at, v.version";

#[derive(sqlx::FromRow)]
struct ValueRow {
    id: i64,
    credential_id: i64,
    attribute_id: i64,
    user_id: Option<i64>,
    key_id: i64,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    #[sqlx(flatten)]
    stamp: Stamp,
}

impl ValueRow {
    /// The slot its ciphertext is bound to: this row, at its version, under its data key.
    fn slot(&self) -> Slot {
        Slot {
            value: self.id,
            credential: self.credential_id,
            attribute: self.attribute_id,
            user: self.user_id.unwrap_or(0),
            version: self.stamp.version,
            key: self.key_id,
        }
    }
}

/// A row of the hot-path read: the credential with the caller's standing, and one value (or
/// none: a LEFT JOIN).
#[derive(sqlx::FromRow)]
struct ReadRow {
    #[sqlx(flatten)]
    access: access::CredentialAccessRow,
    v_id: Option<i64>,
    v_attribute_id: Option<i64>,
    v_user_id: Option<i64>,
    v_key_id: Option<i64>,
    v_nonce: Option<Vec<u8>>,
    v_ciphertext: Option<Vec<u8>>,
    v_created_by: Option<i64>,
    v_created_at: Option<i64>,
    v_updated_by: Option<i64>,
    v_updated_at: Option<i64>,
    v_version: Option<i64>,
}

impl ReadRow {
    fn split(self, credential: i64) -> (access::CredentialAccessRow, Option<ValueRow>) {
        let value = (|| {
            Some(ValueRow {
                id: self.v_id?,
                credential_id: credential,
                attribute_id: self.v_attribute_id?,
                user_id: self.v_user_id,
                key_id: self.v_key_id?,
                nonce: self.v_nonce?,
                ciphertext: self.v_ciphertext?,
                stamp: Stamp {
                    created_by: self.v_created_by?,
                    created_at: self.v_created_at?,
                    updated_by: self.v_updated_by?,
                    updated_at: self.v_updated_at?,
                    version: self.v_version?,
                },
            })
        })();
        (self.access, value)
    }
}

fn check_value(field: String, v: &SecretString) -> Result<()> {
    let n = v.expose_secret().len();
    if n > limits::VALUE_BYTES {
        return Err(Error::field(
            field,
            format_args!("must be at most {} bytes (got {n})", limits::VALUE_BYTES),
        ));
    }
    Ok(())
}

fn not_found_value(credential: i64, value: i64) -> Error {
    Error::not_found(format_args!("value {value} of credential {credential}"))
}

impl Vault {
    /// Decrypts one value for `actor`. A value that fails its integrity check (altered, moved
    /// to another row, rolled back to an older version, or its key id changed) is audited as
    /// `credential.value.integrity` (failure) and answered without any value.
    async fn decrypt(&self, actor: &Actor, ring: &Arc<Keyring>, row: ValueRow) -> Result<Value> {
        let key = self.data_key(ring, row.key_id).await?;
        let plain = match key.open(&row.nonce, &row.ciphertext, row.slot()) {
            Ok(plain) => plain,
            Err(source) => {
                haechi_audit::record(
                    &self.store,
                    actor
                        .event("credential.value.integrity")
                        .outcome(Outcome::Failure)
                        .target(format!("credential:{}", row.credential_id))
                        .detail(json!({
                            "credential": row.credential_id,
                            "value": row.id,
                            "attribute": row.attribute_id,
                            "user": row.user_id,
                            "version": row.stamp.version,
                            "key_id": row.key_id,
                            "reason": source.to_string(),
                        })),
                )
                .await?;
                return Err(VaultError::Corrupt {
                    value: row.id,
                    credential: row.credential_id,
                    attribute: row.attribute_id,
                    source,
                }
                .into());
            }
        };
        let text = std::str::from_utf8(&plain).map_err(|_| {
            Error::internal(format_args!(
                "vault value {} is not UTF-8 after decryption",
                row.id
            ))
        })?;
        Ok(Value {
            id: row.id,
            attribute_id: row.attribute_id,
            user_id: row.user_id,
            value: SecretString::from(text),
            stamp: row.stamp,
        })
    }

    /// Stores values for attributes of a credential (all or none). The owner sets standard
    /// attributes' values; the owner and consumers each set their own value of `userProvided`
    /// ones. An attribute that already has the caller's value is 409 (change it with an update).
    pub async fn create_values(
        &self,
        caller: &Caller,
        credential: i64,
        items: Vec<NewValue>,
    ) -> Result<Vec<Value>> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        if items.is_empty() {
            return Err(Error::invalid(
                "the body holds no value: send [{\"credentialAttributeId\":N,\"value\":\"...\"}]",
            ));
        }
        if items.len() > limits::VALUES_PER_REQUEST {
            return Err(Error::invalid(format!(
                "at most {} values per request",
                limits::VALUES_PER_REQUEST
            )));
        }
        for (i, item) in items.iter().enumerate() {
            check_value(format!("[{i}].value"), &item.value)?;
        }
        let mut tx = self.store.begin().await?;
        let acc = access::credential_tx(&mut tx, p, credential)
            .await?
            .require_visible()?;
        acc.require_consumer()?;
        let ring = self.keyring()?;
        let attributes = attributes_tx(&mut tx, credential).await?;
        let (key_id, key) = self.active_key_tx(&mut tx, &ring).await?;
        let now = now_ms();
        let mut slots = HashSet::new();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let field = format!("[{i}].credentialAttributeId");
            let Some(attr) = attributes.iter().find(|a| a.id == item.attribute_id) else {
                return Err(Error::field(
                    field,
                    format_args!(
                        "credential {credential} has no attribute {}",
                        item.attribute_id
                    ),
                ));
            };
            if !attr.user_provided && !acc.owner() {
                return Err(Error::forbidden(format!(
                    "attribute {} of credential {credential} is a standard attribute: only the credential's owner sets its value",
                    attr.id
                )));
            }
            let user = attr.user_provided.then_some(p.id);
            // The row's id is filled in by `insert_value`.
            let slot = Slot {
                value: 0,
                credential,
                attribute: attr.id,
                user: user.unwrap_or(0),
                version: 0,
                key: key_id,
            };
            if !slots.insert(slot.attribute) {
                return Err(Error::field(
                    field,
                    format_args!("attribute {} appears twice", attr.id),
                ));
            }
            let id = self
                .insert_value(&mut tx, &key, key_id, slot, user, &item.value, p.id, now)
                .await?;
            out.push(Value {
                id,
                attribute_id: attr.id,
                user_id: user,
                value: item.value,
                stamp: Stamp::new(p.id, now),
            });
        }
        haechi_audit::append(
            &mut tx,
            actor.event("credential.value.create").target(format!("credential:{credential}")).detail(json!({
                "credential": credential,
                "values": out.iter().map(|v| json!({ "id": v.id, "attribute": v.attribute_id, "user": v.user_id })).collect::<Vec<_>>(),
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_value(
        &self,
        tx: &mut Tx,
        key: &DataKey,
        key_id: i64,
        slot: Slot,
        user: Option<i64>,
        value: &SecretString,
        by: i64,
        now: i64,
    ) -> Result<i64> {
        // Look first: on PostgreSQL a failed INSERT would abort the whole transaction.
        let existing: Option<i64> = in_tx!(tx, |c| sqlx::query_scalar(
            "SELECT id FROM vault_values WHERE attribute_id = $1 AND slot = $2"
        )
        .bind(slot.attribute)
        .bind(slot.user)
        .fetch_optional(&mut *c)
        .await)?;
        let taken = |existing: Option<i64>| {
            let which = existing.map(|v| format!(" (id {v})")).unwrap_or_default();
            let fix = existing
                .map(|v| {
                    format!(
                        "PUT /v2/credentialvault/credentials/{}/attributevalues/{v}",
                        slot.credential
                    )
                })
                .unwrap_or_else(|| "PUT .../attributevalues/{id}".to_owned());
            Error::conflict(format!(
                "attribute {} already has {} value{which}; change it with {fix}",
                slot.attribute,
                if user.is_some() { "your" } else { "a" },
            ))
        };
        if existing.is_some() {
            return Err(taken(existing));
        }
        // The ciphertext is bound to the row's id: insert the row to learn it, then seal and
        // write the value (both in `tx`: no empty row is ever visible).
        let inserted = in_tx!(tx, |c| {
            sqlx::query_scalar::<_, i64>(
            "INSERT INTO vault_values (credential_id, attribute_id, user_id, slot, key_id, nonce, ciphertext, \
             created_by, created_at, updated_by, updated_at, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $7, $8, 0) RETURNING id"
        )
        .bind(slot.credential)
        .bind(slot.attribute)
        .bind(user)
        .bind(slot.user)
        .bind(key_id)
        .bind(Vec::<u8>::new())
        .bind(by)
        .bind(now)
        .fetch_one(&mut *c)
        .await
        });
        // Another server sharing the store may have inserted it in between.
        let id = created_or_taken(inserted, || taken(None))?;
        let sealed = key.seal(
            value.expose_secret().as_bytes(),
            Slot {
                value: id,
                version: 0,
                key: key_id,
                ..slot
            },
        );
        in_tx!(tx, |c| sqlx::query(
            "UPDATE vault_values SET nonce = $1, ciphertext = $2 WHERE id = $3"
        )
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(id)
    }

    /// The value of one attribute (by name, or by its numeric id) of a credential the caller
    /// may use, for the engines that hand a value on (the DB gateway's backend logins,
    /// workflow task steps' `env_from_vault`). Access and audit as [`Vault::read_values`].
    pub async fn read_attribute_value(
        &self,
        caller: &Caller,
        credential: i64,
        attribute: &str,
    ) -> Result<SecretString> {
        let attr = self
            .usable_attribute(&caller.principal, credential, attribute)
            .await?;
        self.read_values(caller, credential)
            .await?
            .into_iter()
            .find(|v| v.attribute_id == attr.id)
            .map(|v| v.value)
            .ok_or_else(|| {
                Error::field(
                    "attribute",
                    format_args!(
                        "attribute '{}' of credential {credential} has no value user '{}' can use",
                        attr.name, caller.principal.user_id
                    ),
                )
            })
    }

    /// Whether the caller may use the values of attribute `attribute` (its name, or its
    /// numeric id) of credential `credential`, by the rule of [`Vault::read_values`], without
    /// reading any value: for whoever wires a credential into something that others will run
    /// (a workflow's `env_from_vault`). Invisible → 404; visible but not usable → 403.
    pub async fn check_attribute_use(
        &self,
        p: &Principal,
        credential: i64,
        attribute: &str,
    ) -> Result<()> {
        self.usable_attribute(p, credential, attribute)
            .await
            .map(|_| ())
    }

    /// The attribute named `attribute` of a credential whose values the caller may use.
    async fn usable_attribute(
        &self,
        p: &Principal,
        credential: i64,
        attribute: &str,
    ) -> Result<crate::model::Attribute> {
        let acc = access::credential(&self.store, p, credential)
            .await?
            .require_visible()?;
        acc.require_consumer()?;
        let cred = self.credential_with_attributes(acc.row).await?;
        let attr = cred
            .attributes
            .iter()
            .find(|a| a.name == attribute)
            .or_else(|| {
                attribute
                    .parse::<i64>()
                    .ok()
                    .and_then(|id| cred.attributes.iter().find(|a| a.id == id))
            })
            .ok_or_else(|| {
                Error::field(
                    "attribute",
                    format_args!(
                        "credential {credential} has no attribute '{attribute}' (it has: {})",
                        cred.attributes
                            .iter()
                            .map(|a| a.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        Ok(attr.clone())
    }

    /// The values of a credential the caller may use: standard attributes' values and the
    /// caller's own values of `userProvided` attributes. The read is audited (who, which
    /// credential, which attributes; never the values).
    ///
    /// Reads are the hot path and each audit event is a write: the event goes through the
    /// audit [`haechi_audit::Batcher`], which appends what is queued in one transaction (one
    /// link each in the hash chain, in order). Under `audit.durability = strict` (the default)
    /// this returns only once the event has committed, so no value leaves the server without its
    /// record (group commit: readers waiting at the same moment share a transaction); under
    /// `batched` it returns once the event is queued, and a crash can lose the events of the last
    /// few milliseconds. Figures of both: bench/README.md.
    pub async fn read_values(&self, caller: &Caller, credential: i64) -> Result<Vec<Value>> {
        self.read_some(caller, credential, None).await
    }

    /// One value of a credential the caller may use (as [`Vault::read_values`]: a standard
    /// attribute's value or the caller's own), read and audited on its own: the web console's
    /// Reveal and Copy, each one audited read of that one value at that moment. `via` says
    /// which (it goes into the event; never the value). Another user's value, or one that does
    /// not exist, is 404 and nothing is read.
    pub async fn read_value(
        &self,
        caller: &Caller,
        credential: i64,
        value: i64,
        via: &'static str,
    ) -> Result<Value> {
        let mut values = self
            .read_some(caller, credential, Some((value, via)))
            .await?;
        values
            .pop()
            .ok_or_else(|| not_found_value(credential, value))
    }

    /// [`Vault::read_values`], or with `only` the one value `only.0` (audited with `via`).
    async fn read_some(
        &self,
        caller: &Caller,
        credential: i64,
        only: Option<(i64, &'static str)>,
    ) -> Result<Vec<Value>> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        // The hot path: the credential, the caller's standing and the values in one query.
        fn sql(one: bool) -> String {
            format!(
                "SELECT {}, v.id AS v_id, v.attribute_id AS v_attribute_id, v.user_id AS v_user_id, \
                 v.key_id AS v_key_id, v.nonce AS v_nonce, v.ciphertext AS v_ciphertext, \
                 v.created_by AS v_created_by, v.created_at AS v_created_at, v.updated_by AS v_updated_by, \
                 v.updated_at AS v_updated_at, v.version AS v_version \
                 FROM vault_credentials c {} \
                 LEFT JOIN vault_values v ON v.credential_id = c.id AND (v.user_id IS NULL OR v.user_id = $2){} \
                 WHERE c.id = $1 ORDER BY v.id",
                access::credential_access_cols(),
                access::MEMBER_JOIN,
                if one { " AND v.id = $3" } else { "" }
            )
        }
        static ALL: LazyLock<String> = LazyLock::new(|| sql(false));
        static ONE: LazyLock<String> = LazyLock::new(|| sql(true));
        let rows: Vec<ReadRow> = match only {
            None => read!(self.store, |db| sqlx::query_as(ALL.as_str())
                .bind(credential)
                .bind(p.id)
                .fetch_all(db)
                .await)?,
            Some((value, _)) => read!(self.store, |db| sqlx::query_as(ONE.as_str())
                .bind(credential)
                .bind(p.id)
                .bind(value)
                .fetch_all(db)
                .await)?,
        };
        let mut rows = rows.into_iter();
        let Some(first) = rows.next() else {
            return Err(access::not_found_credential(credential));
        };
        let (first, first_value) = first.split(credential);
        let acc = access::into_credential_access(p, Some(first))
            .ok_or_else(|| access::not_found_credential(credential))?
            .require_visible()?;
        acc.require_consumer()?;
        let ring = self.keyring()?;
        let rows: Vec<ValueRow> = first_value
            .into_iter()
            .chain(rows.filter_map(|r| r.split(credential).1))
            .collect();
        if let Some((value, _)) = only {
            if rows.is_empty() {
                return Err(not_found_value(credential, value));
            }
        }
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            values.push(self.decrypt(actor, &ring, row).await?);
        }
        let mut detail = json!({
            "credential": credential,
            "attributes": values.iter().map(|v| v.attribute_id).collect::<Vec<_>>(),
        });
        if let Some((value, via)) = only {
            detail["value"] = json!(value);
            detail["via"] = json!(via);
        }
        self.reads
            .record(
                actor
                    .event("credential.value.read")
                    .target(format!("credential:{credential}"))
                    .detail(detail),
            )
            .await?;
        Ok(values)
    }

    /// Loads one value for a change, checking the caller may change it: standard values are the
    /// owner's to change; a `userProvided` value only its own user's (others' are not found).
    async fn value_for_change(
        &self,
        tx: &mut Tx,
        p: &Principal,
        credential: i64,
        value: i64,
    ) -> Result<(CredentialAccess, ValueRow)> {
        let acc = access::credential_tx(tx, p, credential)
            .await?
            .require_visible()?;
        acc.require_consumer()?;
        let sql = format!(
            "SELECT {VALUE_COLS} FROM vault_values v WHERE v.id = $1 AND v.credential_id = $2"
        );
        let row: Option<ValueRow> = in_tx!(tx, |c| sqlx::query_as(&sql)
            .bind(value)
            .bind(credential)
            .fetch_optional(&mut *c)
            .await)?;
        let row = row.ok_or_else(|| not_found_value(credential, value))?;
        match row.user_id {
            Some(u) if u != p.id => return Err(not_found_value(credential, value)),
            None if !acc.owner() => {
                return Err(Error::forbidden(format!(
                    "value {value} belongs to a standard attribute: only the owner of credential {credential} changes it"
                )))
            }
            _ => {}
        }
        Ok((acc, row))
    }

    /// Changes one value. A stale `version` is 409; the same value again is 304.
    pub async fn update_value(
        &self,
        caller: &Caller,
        credential: i64,
        value: i64,
        patch: ValuePatch,
    ) -> Result<Value> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        check_value("[0].value".into(), &patch.value)?;
        let mut tx = self.store.begin().await?;
        let (_, row) = self.value_for_change(&mut tx, p, credential, value).await?;
        let ring = self.keyring()?;
        if let Some(a) = patch.attribute_id {
            if a != row.attribute_id {
                return Err(Error::field(
                    "[0].credentialAttributeId",
                    format_args!(
                        "value {value} belongs to attribute {}, not {a}",
                        row.attribute_id
                    ),
                ));
            }
        }
        if patch.version != row.stamp.version {
            return Err(version_conflict(
                &format!("value {value}"),
                patch.version,
                row.stamp.version,
            ));
        }
        let slot = row.slot();
        let unchanged =
            match self
                .data_key(&ring, row.key_id)
                .await?
                .open(&row.nonce, &row.ciphertext, slot)
            {
                Ok(old) => old.as_slice() == patch.value.expose_secret().as_bytes(),
                Err(e) => {
                    // Overwriting a value that no longer decrypts is how an operator repairs it.
                    tracing::warn!(
                        value,
                        credential,
                        "replacing a vault value that failed to decrypt: {e}"
                    );
                    false
                }
            };
        if unchanged {
            return Err(not_modified(&format!("value {value}")));
        }
        let (key_id, key) = self.active_key_tx(&mut tx, &ring).await?;
        let sealed = key.seal(
            patch.value.expose_secret().as_bytes(),
            Slot {
                version: row.stamp.version + 1,
                key: key_id,
                ..slot
            },
        );
        let now = now_ms();
        in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE vault_values SET key_id = $1, nonce = $2, ciphertext = $3, updated_by = $4, updated_at = $5, \
             version = version + 1 WHERE id = $6"
        )
        .bind(key_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(p.id)
        .bind(now)
        .bind(value)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        })?;
        haechi_audit::append(
            &mut tx,
            actor.event("credential.value.update").target(format!("credential:{credential}")).detail(json!({
                "credential": credential, "value": value, "attribute": row.attribute_id, "user": row.user_id,
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(Value {
            id: value,
            attribute_id: row.attribute_id,
            user_id: row.user_id,
            value: patch.value,
            stamp: Stamp {
                updated_by: p.id,
                updated_at: now,
                version: row.stamp.version + 1,
                ..row.stamp
            },
        })
    }

    /// Deletes one value (same rights as changing it).
    pub async fn delete_value(&self, caller: &Caller, credential: i64, value: i64) -> Result<()> {
        let (p, actor) = (&*caller.principal, &caller.actor);
        let mut tx = self.store.begin().await?;
        let (_, row) = self.value_for_change(&mut tx, p, credential, value).await?;
        self.keyring()?;
        in_tx!(tx, |c| sqlx::query(
            "DELETE FROM vault_values WHERE id = $1"
        )
        .bind(value)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        haechi_audit::append(
            &mut tx,
            actor.event("credential.value.delete").target(format!("credential:{credential}")).detail(json!({
                "credential": credential, "value": value, "attribute": row.attribute_id, "user": row.user_id,
            })),
        )
        .await?;
        tx.commit().await
    }
}
