//! SQL shared by the vault's operations: row types and the visibility predicates (queries
//! whose shape depends on the request build their conditions with `haechi_store::Where`).

use crate::model::{Attribute, Credential, Locker, Perms, Stamp};

pub(crate) use haechi_store::{bind_args, Arg};

/// The caller (`$uid`) holds a consumer role of the locker `locker_expr`.
pub(crate) fn is_consumer(locker_expr: &str, uid: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM vault_locker_consumers lc JOIN user_roles ur ON ur.role_id = lc.role_id \
         WHERE lc.locker_id = {locker_expr} AND ur.user_id = {uid})"
    )
}

/// Credentials `c` the caller may see: Locker Admin (`$admin`), owner, an `own`/`manage`
/// member of its locker, or a consumer of its locker. A `participate`-only member sees only
/// their own credentials.
pub(crate) fn credential_visible(uid: &str, admin: &str) -> String {
    format!(
        "({admin} OR c.owner_id = {uid} \
         OR EXISTS (SELECT 1 FROM vault_locker_members m WHERE m.locker_id = c.locker_id \
                    AND m.user_id = {uid} AND (m.can_own OR m.can_manage)) \
         OR {})",
        is_consumer("c.locker_id", uid)
    )
}

/// Lockers `l` the caller may see: Locker Admin, any member, or a consumer.
pub(crate) fn locker_visible(uid: &str, admin: &str) -> String {
    format!(
        "({admin} OR EXISTS (SELECT 1 FROM vault_locker_members m WHERE m.locker_id = l.id AND m.user_id = {uid}) \
         OR {})",
        is_consumer("l.id", uid)
    )
}

pub(crate) const CREDENTIAL_COLS: &str =
    "c.id, c.name, c.description, c.owner_id, c.locker_id, c.created_by, c.created_at, c.updated_by, c.updated_at, c.version";

pub(crate) const ATTRIBUTE_COLS: &str =
    "a.id, a.credential_id, a.name, a.description, a.user_provided, a.masked, \
     a.created_by, a.created_at, a.updated_by, a.updated_at, a.version";

pub(crate) const LOCKER_COLS: &str =
    "l.id, l.name, l.description, l.created_by, l.created_at, l.updated_by, l.updated_at, l.version";

#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub(crate) struct CredentialRow {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub owner_id: i64,
    pub locker_id: Option<i64>,
    #[sqlx(flatten)]
    pub stamp: Stamp,
}

impl CredentialRow {
    pub fn into_credential(
        self,
        attributes: Vec<Attribute>,
        completed: Option<bool>,
    ) -> Credential {
        Credential {
            id: self.id,
            name: self.name,
            description: self.description,
            owner_id: self.owner_id,
            locker_id: self.locker_id,
            stamp: self.stamp,
            attributes,
            completed,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub(crate) struct AttributeRow {
    pub id: i64,
    pub credential_id: i64,
    pub name: String,
    pub description: Option<String>,
    #[serde(deserialize_with = "haechi_store::packed::int_bool")]
    pub user_provided: bool,
    #[serde(deserialize_with = "haechi_store::packed::int_bool")]
    pub masked: bool,
    #[sqlx(flatten)]
    pub stamp: Stamp,
}

impl AttributeRow {
    pub fn into_attribute(self) -> Attribute {
        Attribute {
            id: self.id,
            name: self.name,
            description: self.description,
            user_provided: self.user_provided,
            masked: self.masked,
            stamp: self.stamp,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct LockerRow {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    #[sqlx(flatten)]
    pub stamp: Stamp,
}

impl LockerRow {
    pub fn into_locker(self) -> Locker {
        Locker {
            id: self.id,
            name: self.name,
            description: self.description,
            stamp: self.stamp,
            members: None,
            count_of_credentials: None,
        }
    }
}

#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub(crate) struct MemberRow {
    pub locker_id: i64,
    pub user_id: i64,
    pub can_own: bool,
    pub can_manage: bool,
    pub can_participate: bool,
}

impl MemberRow {
    pub fn perms(&self) -> Perms {
        Perms {
            own: self.can_own,
            manage: self.can_manage,
            participate: self.can_participate,
        }
    }
}
