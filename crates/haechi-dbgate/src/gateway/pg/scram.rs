//! The client side of SCRAM-SHA-256 (RFC 5802 / 7677, without channel binding) and of
//! PostgreSQL's MD5 password exchange, for logging in to the backend with the vault password.

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::BackendError;

type HmacSha256 = Hmac<Sha256>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// A SCRAM exchange in progress.
pub struct Scram {
    client_first_bare: String,
    nonce: String,
    salted: Option<Zeroizing<[u8; 32]>>,
    auth_message: String,
}

impl Scram {
    pub fn new() -> Scram {
        let raw: [u8; 18] = rand::random();
        let nonce = B64.encode(raw);
        Scram {
            client_first_bare: format!("n=,r={nonce}"),
            nonce,
            salted: None,
            auth_message: String::new(),
        }
    }

    /// `client-first-message` (no channel binding).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Answers `server-first-message` with `client-final-message`.
    pub fn client_final(
        &mut self,
        server_first: &str,
        password: &[u8],
    ) -> Result<String, BackendError> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v.to_owned()),
                Some(("s=", v)) => salt = B64.decode(v).ok(),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(BackendError::Scram(
                "the database sent a malformed SCRAM challenge".into(),
            ));
        };
        if !nonce.starts_with(&self.nonce) || iterations == 0 || iterations > 10_000_000 {
            return Err(BackendError::Scram(
                "the database sent an invalid SCRAM challenge".into(),
            ));
        }
        let mut salted = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, iterations, salted.as_mut());
        let client_key = hmac(salted.as_ref(), b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        self.salted = Some(salted);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks `server-final-message` (proves the database knew the password too).
    pub fn verify_server(&self, server_final: &str) -> Result<(), BackendError> {
        let salted = self
            .salted
            .as_ref()
            .ok_or_else(|| BackendError::Scram("out of order".into()))?;
        let Some(v) = server_final.strip_prefix("v=") else {
            return Err(BackendError::Scram(format!(
                "the database refused the SCRAM proof ({server_final})"
            )));
        };
        let server_key = hmac(salted.as_ref(), b"Server Key");
        let expected = hmac(&server_key, self.auth_message.as_bytes());
        let got = B64
            .decode(v.split(',').next().unwrap_or(""))
            .map_err(|_| BackendError::Scram("malformed server signature".into()))?;
        if got.as_slice() != expected.as_slice() {
            return Err(BackendError::Scram(
                "the database's signature does not match".into(),
            ));
        }
        Ok(())
    }
}

/// PostgreSQL's MD5 response: `md5` + md5(md5(password + user) + salt).
pub fn md5_response(user: &str, password: &[u8], salt: &[u8]) -> String {
    let mut inner = Md5::new();
    inner.update(password);
    inner.update(user.as_bytes());
    let inner = hex::encode(inner.finalize());
    let mut outer = Md5::new();
    outer.update(inner.as_bytes());
    outer.update(salt);
    format!("md5{}", hex::encode(outer.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_postgres() {
        // SELECT 'md5' || md5(md5('secret' || 'alice') || 'abcd')
        let r = md5_response("alice", b"secret", b"abcd");
        assert!(r.starts_with("md5") && r.len() == 35);
    }

    #[test]
    fn scram_round_trip_against_a_server_computation() {
        let mut c = Scram::new();
        let first = c.client_first();
        assert!(first.starts_with("n,,n=,r="));
        let snonce = format!("{}SERVER", c.nonce);
        let salt = B64.encode(b"0123456789abcdef");
        let server_first = format!("r={snonce},s={salt},i=4096");
        let fin = c.client_final(&server_first, b"pencil").unwrap();
        assert!(fin.contains(",p="));
        // The server side, computed independently.
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"pencil", b"0123456789abcdef", 4096, &mut salted);
        let server_key = hmac(&salted, b"Server Key");
        let sig = hmac(&server_key, c.auth_message.as_bytes());
        c.verify_server(&format!("v={}", B64.encode(sig))).unwrap();
        assert!(c.verify_server("v=AAAA").is_err());
    }
}
