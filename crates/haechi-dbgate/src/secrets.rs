//! The one place the gateway reaches into the credential vault: reading a database account's
//! password as a given principal. The vault checks access and audits the read; the value
//! leaves this function only as a [`SecretString`].

use haechi_identity::{Actor, Principal};
use haechi_types::Result;
use haechi_vault::Vault;
use secrecy::SecretString;

/// The value of attribute `attribute` (its name, or its numeric id) of vault credential
/// `credential`, as `principal` may read it.
pub(crate) async fn read_password(
    vault: &Vault,
    principal: &Principal,
    actor: &Actor,
    credential: i64,
    attribute: &str,
) -> Result<SecretString> {
    vault
        .read_attribute_value(principal, actor, credential, attribute)
        .await
}
