//! The one place the gateway reaches into the credential vault: reading a database account's
//! password as a given principal. The vault checks access and audits the read; the value
//! leaves this function only as a [`SecretString`].

use haechi_identity::{Actor, Principal};
use haechi_types::{Error, Result};
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
    let cred = vault.get_credential(principal, credential).await?;
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
    let values = vault.read_values(principal, actor, credential).await?;
    values
        .into_iter()
        .find(|v| v.attribute_id == attr.id)
        .map(|v| v.value)
        .ok_or_else(|| {
            Error::field(
                "attribute",
                format_args!(
                    "attribute '{}' of credential {credential} has no value you can use",
                    attr.name
                ),
            )
        })
}
