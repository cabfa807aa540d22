//! The workflow engine's ports onto the other engines, wired here so that `haechi-workflow`
//! depends on neither the vault nor the DB gateway: vault values for task steps'
//! `env_from_vault` ([`VaultSecrets`]) and policy unlock/lock for `db_access` steps
//! ([`DbGatePolicies`]). Both act as the user who started the execution, resolved from the
//! store at the moment of use (`Identity::principal_of`), so a right taken away since the run
//! started applies at its next step. The actor the workflow engine hands in has the execution
//! as its origin, so what the vault or the gateway audits names the execution, not an API
//! family's request.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use haechi_dbgate::{DbGate, PolicyFilter};
use haechi_identity::{Actor, Caller, Identity};
use haechi_types::{time::now_ms, Code, Result};
use haechi_vault::Vault;
use haechi_workflow::{PolicyGate, SealedSecret, SecretSealer, SecretSource};
use secrecy::SecretString;

/// [`SecretSource`] over the credential vault: the vault checks that the user may use the
/// value (owner, or a consumer of the credential's locker) and audits the read.
pub struct VaultSecrets {
    pub identity: Arc<Identity>,
    pub vault: Arc<Vault>,
}

impl SecretSource for VaultSecrets {
    fn read<'a>(
        &'a self,
        user_pk: i64,
        actor: &'a Actor,
        credential: i64,
        attribute: &'a str,
    ) -> BoxFuture<'a, Result<SecretString>> {
        Box::pin(async move {
            let p = self.identity.principal_of(user_pk).await?;
            let caller = Caller::acting_as(Arc::new(p), actor.clone());
            self.vault
                .read_attribute_value(&caller, credential, attribute)
                .await
        })
    }

    fn check<'a>(
        &'a self,
        user_pk: i64,
        credential: i64,
        attribute: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let p = self.identity.principal_of(user_pk).await?;
            self.vault
                .check_attribute_use(&p, credential, attribute)
                .await
        })
    }
}

/// [`SecretSealer`] over the credential vault's keys (password parameters of workflow runs).
pub struct VaultSealer {
    pub vault: Arc<haechi_vault::Vault>,
}

impl SecretSealer for VaultSealer {
    fn seal<'a>(
        &'a self,
        context: &'a str,
        plaintext: &'a str,
    ) -> BoxFuture<'a, Result<SealedSecret>> {
        Box::pin(async move {
            let (key_id, nonce, ciphertext) = self
                .vault
                .seal_secret(context, plaintext.as_bytes())
                .await?;
            Ok(SealedSecret {
                key_id,
                nonce,
                ciphertext,
            })
        })
    }

    fn open<'a>(
        &'a self,
        context: &'a str,
        sealed: &'a SealedSecret,
    ) -> BoxFuture<'a, Result<SecretString>> {
        Box::pin(async move {
            self.vault
                .open_secret(context, sealed.key_id, &sealed.nonce, &sealed.ciphertext)
                .await
        })
    }
}

/// [`PolicyGate`] over the DB gateway's policies.
pub struct DbGatePolicies {
    pub identity: Arc<Identity>,
    pub dbgate: Arc<DbGate>,
}

impl PolicyGate for DbGatePolicies {
    fn find<'a>(&'a self, policy: &'a str) -> BoxFuture<'a, Result<Option<i64>>> {
        Box::pin(async move {
            if let Ok(index) = policy.trim().parse::<i64>() {
                return match self.dbgate.get_policy(index).await {
                    Ok(p) => Ok(Some(p.index)),
                    Err(e) if e.code == Code::NotFound => Ok(None),
                    Err(e) => Err(e),
                };
            }
            let found = self.dbgate.list_policies(&PolicyFilter {
                policy_id: Some(policy.to_owned()),
                ..Default::default()
            });
            Ok(found.first().map(|p| p.index))
        })
    }

    fn unlock_until<'a>(
        &'a self,
        user_pk: i64,
        actor: &'a Actor,
        index: i64,
        until_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // The step acts with the rights its starter has now.
            let caller = Caller::acting_as(
                Arc::new(self.identity.principal_of(user_pk).await?),
                actor.clone(),
            );
            let left = (until_ms - now_ms()).max(0) as u64;
            self.dbgate
                .unlock_for(&caller, index, Duration::from_millis(left))
                .await
                .map(|_| ())
        })
    }

    fn lock<'a>(&'a self, actor: &'a Actor, index: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Locking again what a run unlocked is the server's own safety measure: it does
            // not depend on the starter still holding the right to unlock.
            match self
                .dbgate
                .lock(&Caller::system(actor.clone()), index)
                .await
            {
                Ok(_) => Ok(()),
                // Deleted since: nothing left to lock.
                Err(e) if e.code == Code::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}
