//! The one place the gateway reaches into the credential vault: reading a database account's
//! password as a given caller. The vault checks access and audits the read; the value
//! leaves this function only as a [`SecretString`].

use haechi_identity::Caller;
use haechi_types::Result;
use haechi_vault::Vault;
use secrecy::SecretString;

/// The value of attribute `attribute` (its name, or its numeric id) of vault credential
/// `credential`, as `caller`'s principal may read it (the read audited as `caller`'s).
pub(crate) async fn read_password(
    vault: &Vault,
    caller: &Caller,
    credential: i64,
    attribute: &str,
) -> Result<SecretString> {
    vault
        .read_attribute_value(caller, credential, attribute)
        .await
}
