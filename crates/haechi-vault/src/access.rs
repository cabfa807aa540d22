//! Who may do what to a credential or a locker (docs/vault.md has the whole matrix).
//!
//! Each check loads the object together with the caller's standing towards it in one query.
//! An object the caller may not see at all is reported as not found, so its existence does not
//! leak; one they can see but not change is forbidden.

use std::sync::LazyLock;

use haechi_identity::{Permission, Principal};
use haechi_store::{in_tx, read, Store, Tx};
use haechi_types::{Error, Result};

use crate::model::Perms;
use crate::sql::{self, CredentialRow, LockerRow, CREDENTIAL_COLS, LOCKER_COLS};

/// A credential and the caller's standing towards it.
#[derive(Debug, Clone)]
pub(crate) struct CredentialAccess {
    pub row: CredentialRow,
    pub uid: i64,
    /// Locker Admin: sees and manages every locker and credential's metadata.
    pub admin: bool,
    /// The caller's permissions in the credential's locker.
    pub member: Perms,
    /// The caller holds a consumer role of the credential's locker.
    pub consumer: bool,
}

impl CredentialAccess {
    pub fn owner(&self) -> bool {
        self.row.owner_id == self.uid
    }

    pub fn visible(&self) -> bool {
        self.admin || self.owner() || self.member.own || self.member.manage || self.consumer
    }

    /// Change the credential's metadata, transfer or delete it.
    pub fn editable(&self) -> bool {
        self.admin || self.owner()
    }

    /// Read values (and give one's own value of a `userProvided` attribute).
    pub fn consumes(&self) -> bool {
        self.owner() || self.consumer
    }

    /// Not found unless visible.
    pub fn require_visible(self) -> Result<Self> {
        if self.visible() {
            Ok(self)
        } else {
            Err(not_found_credential(self.row.id))
        }
    }

    pub fn require_editable(&self) -> Result<()> {
        if self.editable() {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "only the owner of credential {} or a Locker Admin may change it",
                self.row.id
            )))
        }
    }

    pub fn require_consumer(&self) -> Result<()> {
        if self.consumes() {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "the values of credential {} are for its owner and for consumers of its locker only",
                self.row.id
            )))
        }
    }
}

pub(crate) fn not_found_credential(id: i64) -> Error {
    Error::not_found(format_args!("credential {id}"))
}

pub(crate) fn not_found_locker(id: i64) -> Error {
    Error::not_found(format_args!("locker {id}"))
}

/// A credential row with the caller's (`$2`) standing towards it.
#[derive(sqlx::FromRow)]
pub(crate) struct CredentialAccessRow {
    #[sqlx(flatten)]
    row: CredentialRow,
    m_own: bool,
    m_manage: bool,
    m_participate: bool,
    consumer: bool,
}

/// The columns of a [`CredentialAccessRow`] for credential `c` and caller `$2`.
pub(crate) fn credential_access_cols() -> String {
    format!(
        "{CREDENTIAL_COLS}, COALESCE(m.can_own, FALSE) AS m_own, COALESCE(m.can_manage, FALSE) AS m_manage, \
         COALESCE(m.can_participate, FALSE) AS m_participate, {} AS consumer",
        sql::is_consumer("c.locker_id", "$2")
    )
}

/// The join that brings the caller's (`$2`) membership of credential `c`'s locker.
pub(crate) const MEMBER_JOIN: &str =
    "LEFT JOIN vault_locker_members m ON m.locker_id = c.locker_id AND m.user_id = $2";

fn credential_access_sql(lock: &str) -> String {
    format!(
        "SELECT {} FROM vault_credentials c {MEMBER_JOIN} WHERE c.id = $1{lock}",
        credential_access_cols()
    )
}

pub(crate) fn into_credential_access(
    p: &Principal,
    r: Option<CredentialAccessRow>,
) -> Option<CredentialAccess> {
    r.map(|r| CredentialAccess {
        row: r.row,
        uid: p.id,
        admin: p.can(Permission::VaultLockerAdmin),
        member: Perms {
            own: r.m_own,
            manage: r.m_manage,
            participate: r.m_participate,
        },
        consumer: r.consumer,
    })
}

/// The credential and the caller's standing, from the read pool; 404 when it does not exist.
pub(crate) async fn credential(store: &Store, p: &Principal, id: i64) -> Result<CredentialAccess> {
    static SQL: LazyLock<String> = LazyLock::new(|| credential_access_sql(""));
    let row: Option<CredentialAccessRow> = read!(store, |db| sqlx::query_as(SQL.as_str())
        .bind(id)
        .bind(p.id)
        .fetch_optional(db)
        .await)?;
    into_credential_access(p, row).ok_or_else(|| not_found_credential(id))
}

/// The same inside a write transaction, with the credential's row locked on PostgreSQL.
pub(crate) async fn credential_tx(tx: &mut Tx, p: &Principal, id: i64) -> Result<CredentialAccess> {
    let sql = credential_access_sql(&tx.backend().for_update_of("c"));
    let row: Option<CredentialAccessRow> = in_tx!(tx, |c| sqlx::query_as(&sql)
        .bind(id)
        .bind(p.id)
        .fetch_optional(&mut *c)
        .await)?;
    into_credential_access(p, row).ok_or_else(|| not_found_credential(id))
}

/// A locker and the caller's standing towards it.
#[derive(Debug, Clone)]
pub(crate) struct LockerAccess {
    pub row: LockerRow,
    pub admin: bool,
    pub member: Perms,
    pub consumer: bool,
}

impl LockerAccess {
    pub fn visible(&self) -> bool {
        self.admin || self.member.any() || self.consumer
    }

    /// Edit the locker, its members and consumers.
    pub fn manages(&self) -> bool {
        self.admin || self.member.own || self.member.manage
    }

    /// Delete the locker, grant or take `own`.
    pub fn owns(&self) -> bool {
        self.admin || self.member.own
    }

    pub fn require_visible(self) -> Result<Self> {
        if self.visible() {
            Ok(self)
        } else {
            Err(not_found_locker(self.row.id))
        }
    }

    pub fn require_manage(&self) -> Result<()> {
        if self.manages() {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "changing locker {} needs the 'own' or 'manage' permission in it (or Locker Admin)",
                self.row.id
            )))
        }
    }

    pub fn require_own(&self, what: &str) -> Result<()> {
        if self.owns() {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "{what} in locker {} needs the 'own' permission in it (or Locker Admin)",
                self.row.id
            )))
        }
    }
}

#[derive(sqlx::FromRow)]
struct LockerAccessRow {
    #[sqlx(flatten)]
    row: LockerRow,
    m_own: bool,
    m_manage: bool,
    m_participate: bool,
    consumer: bool,
}

fn locker_access_sql(lock: &str) -> String {
    format!(
        "SELECT {LOCKER_COLS}, COALESCE(m.can_own, FALSE) AS m_own, COALESCE(m.can_manage, FALSE) AS m_manage, \
         COALESCE(m.can_participate, FALSE) AS m_participate, {} AS consumer \
         FROM vault_lockers l \
         LEFT JOIN vault_locker_members m ON m.locker_id = l.id AND m.user_id = $2 \
         WHERE l.id = $1{lock}",
        sql::is_consumer("l.id", "$2")
    )
}

fn into_locker_access(p: &Principal, r: Option<LockerAccessRow>) -> Option<LockerAccess> {
    r.map(|r| LockerAccess {
        row: r.row,
        admin: p.can(Permission::VaultLockerAdmin),
        member: Perms {
            own: r.m_own,
            manage: r.m_manage,
            participate: r.m_participate,
        },
        consumer: r.consumer,
    })
}

pub(crate) async fn locker(store: &Store, p: &Principal, id: i64) -> Result<LockerAccess> {
    static SQL: LazyLock<String> = LazyLock::new(|| locker_access_sql(""));
    let row: Option<LockerAccessRow> = read!(store, |db| sqlx::query_as(SQL.as_str())
        .bind(id)
        .bind(p.id)
        .fetch_optional(db)
        .await)?;
    into_locker_access(p, row).ok_or_else(|| not_found_locker(id))
}

pub(crate) async fn locker_tx(tx: &mut Tx, p: &Principal, id: i64) -> Result<LockerAccess> {
    let sql = locker_access_sql(&tx.backend().for_update_of("l"));
    let row: Option<LockerAccessRow> = in_tx!(tx, |c| sqlx::query_as(&sql)
        .bind(id)
        .bind(p.id)
        .fetch_optional(&mut *c)
        .await)?;
    into_locker_access(p, row).ok_or_else(|| not_found_locker(id))
}
