//! Read models for a user interface (the web console): a credential or locker together with
//! what the caller may do to it, by the same predicates the operations enforce (`access`), and
//! which values exist for the caller, without decrypting or reading any of them. Opening a
//! page is not a read of a secret: only [`Vault::read_value`] is (and it is audited).

use std::collections::HashMap;

use haechi_identity::Principal;
use haechi_store::{read, Where};
use haechi_types::Result;

use crate::access;
use crate::model::{Credential, Locker, Perms, Stamp};
use crate::sql::{bind_args, Arg};
use crate::Vault;

/// What the caller may do to a credential (the rules of docs/vault.md, from `access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialStanding {
    /// The caller owns the credential.
    pub owner: bool,
    /// Change, transfer or delete it (owner or Locker Admin).
    pub editable: bool,
    /// Read its values and give their own `userProvided` values (owner or consumer).
    pub consumes: bool,
    /// The caller's permissions in the credential's locker.
    pub member: Perms,
    /// The caller holds a consumer role of the credential's locker.
    pub consumer: bool,
    /// The caller is a Locker Admin.
    pub admin: bool,
}

/// What the caller may do to a locker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockerStanding {
    /// Edit the locker, its members and consumers (`own`, `manage`, Locker Admin).
    pub manages: bool,
    /// Delete it, grant or take `own` (`own`, Locker Admin).
    pub owns: bool,
    pub member: Perms,
    pub consumer: bool,
    pub admin: bool,
}

/// A value that exists for the caller, without the value: what a page shows before Reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ValueInfo {
    pub id: i64,
    pub attribute_id: i64,
    /// The user a `userProvided` value belongs to (always the caller); `None` for a standard one.
    pub user_id: Option<i64>,
    #[sqlx(flatten)]
    pub stamp: Stamp,
}

impl Vault {
    /// A credential the caller may see (404 otherwise), with the caller's standing towards it.
    pub async fn credential_view(
        &self,
        p: &Principal,
        id: i64,
    ) -> Result<(Credential, CredentialStanding)> {
        let acc = access::credential(&self.store, p, id)
            .await?
            .require_visible()?;
        let standing = CredentialStanding {
            owner: acc.owner(),
            editable: acc.editable(),
            consumes: acc.consumes(),
            member: acc.member,
            consumer: acc.consumer,
            admin: acc.admin,
        };
        Ok((self.credential_with_attributes(acc.row).await?, standing))
    }

    /// A locker the caller may see (404 otherwise), with the caller's standing towards it.
    pub async fn locker_view(&self, p: &Principal, id: i64) -> Result<(Locker, LockerStanding)> {
        let acc = access::locker(&self.store, p, id)
            .await?
            .require_visible()?;
        let standing = LockerStanding {
            manages: acc.manages(),
            owns: acc.owns(),
            member: acc.member,
            consumer: acc.consumer,
            admin: acc.admin,
        };
        Ok((acc.row.into_locker(), standing))
    }

    /// Which values of a credential the caller may use exist (the standard attributes' values
    /// and the caller's own `userProvided` ones), with their versions: no value is decrypted
    /// and nothing is read, so nothing is audited. Same access as [`Vault::read_values`].
    pub async fn value_infos(&self, p: &Principal, credential: i64) -> Result<Vec<ValueInfo>> {
        let acc = access::credential(&self.store, p, credential)
            .await?
            .require_visible()?;
        acc.require_consumer()?;
        Ok(read!(self.store, |db| {
            sqlx::query_as(
            "SELECT v.id, v.attribute_id, v.user_id, v.created_by, v.created_at, v.updated_by, v.updated_at, v.version \
             FROM vault_values v WHERE v.credential_id = $1 AND (v.user_id IS NULL OR v.user_id = $2) ORDER BY v.id"
        )
        .bind(credential)
        .bind(p.id)
        .fetch_all(db)
        .await
        })?)
    }

    /// The `user_id` (login name) of each numeric user id that exists, for showing owners and
    /// members by name. Ids of deleted users are absent.
    pub async fn user_names(&self, ids: &[i64]) -> Result<HashMap<i64, String>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut w = Where::default();
        let ph: Vec<String> = ids.iter().map(|i| w.arg(Arg::Int(*i))).collect();
        let args = w.args;
        let sql = format!(
            "SELECT id, user_id FROM users WHERE id IN ({})",
            ph.join(", ")
        );
        let rows: Vec<(i64, String)> =
            read!(self.store, |db| bind_args!(sqlx::query_as(&sql), args)
                .fetch_all(db)
                .await)?;
        Ok(rows.into_iter().collect())
    }
}
