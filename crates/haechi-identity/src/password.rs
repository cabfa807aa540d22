//! Password hashing: Argon2id, run on the blocking pool and bounded so a login flood cannot
//! exhaust memory. Unknown users are checked against a dummy hash of the same cost, so the time
//! of a failed login does not tell whether the user exists.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use haechi_types::{Error, Result};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Argon2Params {
    /// Memory per hash, KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// OWASP's Argon2id recommendation: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Argon2Params {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    dummy: Arc<String>,
}

impl Hasher {
    pub fn new(p: Argon2Params) -> Result<Hasher> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| Error::invalid(format!("argon2 parameters: {e}")))?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let mut h = Hasher {
            params,
            permits: Arc::new(Semaphore::new(cores * 2)),
            dummy: Arc::new(String::new()),
        };
        let mut random = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut random);
        h.dummy = Arc::new(h.hash_sync(&hex_string(&random))?);
        Ok(h)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    fn hash_sync(&self, password: &str) -> Result<String> {
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(Error::internal)?;
        Ok(self
            .argon2()
            .hash_password(password.as_bytes(), &salt)
            .map_err(Error::internal)?
            .to_string())
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: &SecretString) -> Result<String> {
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        let this = self.clone();
        let password = password.clone();
        tokio::task::spawn_blocking(move || this.hash_sync(password.expose_secret()))
            .await
            .map_err(Error::internal)?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no user.
    pub async fn verify(&self, password: &SecretString, stored: Option<String>) -> Result<bool> {
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        let exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.as_ref().clone());
        let this = self.clone();
        let password = password.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return false;
            };
            this.argon2()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok()
        })
        .await
        .map_err(Error::internal)?;
        Ok(ok && exists)
    }
}

fn hex_string(b: &[u8]) -> String {
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = Hasher::new(Argon2Params {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap();
        let pw = SecretString::from("correct horse 말 battery");
        let stored = h.hash(&pw).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(h.verify(&pw, Some(stored.clone())).await.unwrap());
        assert!(!h
            .verify(&SecretString::from("wrong"), Some(stored))
            .await
            .unwrap());
        assert!(!h.verify(&pw, None).await.unwrap());
    }
}
