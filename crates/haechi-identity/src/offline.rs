//! Administration straight on the store, for when nobody can log in (`haechi admin ...`).

use haechi_types::Result;
use secrecy::{ExposeSecret, SecretString};

use crate::{validation, Actor, Caller, Identity, UserPatch};

/// The audit attribution of an offline change: the operator at the server's console.
fn offline_actor() -> Actor {
    Actor::system("local:reset-password", crate::Origin::System)
}

/// A random password of the strength the bootstrap user gets.
pub fn random_password_string() -> String {
    validation::random_password().expose_secret().to_owned()
}

impl Identity {
    /// Sets `user_id`'s password (checked against the password policy), unlocks the user and
    /// revokes their tokens, each audited, as an admin's `PATCH` and unlock would.
    pub async fn reset_password_offline(
        &self,
        user_id: &str,
        password: SecretString,
    ) -> Result<()> {
        let caller = Caller::system(offline_actor());
        self.update_user(
            &caller,
            user_id,
            UserPatch {
                password: Some(password),
                ..Default::default()
            },
        )
        .await?;
        self.unlock_user(&caller, user_id).await?;
        Ok(())
    }
}
