//! Opaque bearer tokens: 256 random bits, shown to the client once, stored only as SHA-256.

use base64::Engine;
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

/// Every token starts with this, so a leaked one is easy to recognise in a scan.
pub const PREFIX: &str = "hct_";

pub fn generate() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    zeroize::Zeroize::zeroize(&mut bytes);
    SecretString::from(token)
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = super::generate();
        let b = super::generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().starts_with(super::PREFIX));
        assert_eq!(a.expose_secret().len(), 4 + 43);
        assert_eq!(super::hash(a.expose_secret()).len(), 64);
    }
}
