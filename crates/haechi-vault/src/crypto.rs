//! The vault's cryptography, all in one place.
//!
//! - The **master key** is 32 random bytes, written as base64. It never touches the store.
//! - The **KEK** (key-encryption key) is HKDF-SHA256 of the master key with a random salt kept
//!   in the store and the info string `haechi vault kek v1`.
//! - The **key check** is a second HKDF output (info `haechi vault key check v1`) kept in the
//!   store: it tells a wrong master key from the right one without decrypting anything.
//! - **Data keys** are 32 random bytes, stored only wrapped (AES-256-GCM) by the KEK.
//! - Every **value** is AES-256-GCM under a data key with a fresh random 96-bit nonce and
//!   associated data that names its row: credential id, attribute id and user id (0 for a
//!   standard attribute's single value). A ciphertext copied into another row therefore fails
//!   to authenticate instead of decrypting into the wrong place.
//!
//! Key material lives in `secrecy`/`zeroize` types and is wiped on drop; `Debug` never shows it.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Bytes in a master key, a data key and a KEK.
pub const KEY_LEN: usize = 32;
/// Bytes in an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes in a KEK salt.
pub const SALT_LEN: usize = 32;

const KEK_INFO: &[u8] = b"haechi vault kek v1";
const CHECK_INFO: &[u8] = b"haechi vault key check v1";
const DATA_KEY_AAD: &[u8] = b"haechi vault data key v1";
const VALUE_AAD: &[u8] = b"haechi vault value v1";

/// Why a key or ciphertext was refused. Carries no key material and no plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The text is not 32 bytes in base64.
    #[error("a vault master key is 32 random bytes written in base64 (44 characters, e.g. from `openssl rand -base64 32`)")]
    KeyFormat,
    /// Authentication failed: wrong key, altered bytes, or a ciphertext from another row.
    #[error("the ciphertext does not authenticate under this key for this row")]
    Authentication,
    /// Stored bytes have the wrong length.
    #[error("stored key material is malformed")]
    Malformed,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

fn cipher(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

/// The vault master key.
pub struct MasterKey(SecretBox<[u8; KEY_LEN]>);

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> MasterKey {
        MasterKey(SecretBox::new(Box::new(random_bytes())))
    }

    /// Reads a key written in base64 (standard or URL-safe alphabet, padded or not; surrounding
    /// whitespace ignored). Anything that does not decode to exactly 32 bytes is refused.
    pub fn parse(text: &str) -> Result<MasterKey, CryptoError> {
        let text = text.trim();
        let decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .map(Zeroizing::new)
            .ok_or(CryptoError::KeyFormat)?;
        let bytes: [u8; KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::KeyFormat)?;
        let key = MasterKey(SecretBox::new(Box::new(bytes)));
        // `bytes` is a copy on the stack; wipe it.
        let mut bytes = bytes;
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    }

    /// The key in standard base64, as the key file and the environment variable hold it.
    pub fn to_base64(&self) -> SecretString {
        SecretString::from(STANDARD.encode(self.0.expose_secret()))
    }

    fn derive(&self, salt: &[u8], info: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        let hk = Hkdf::<Sha256>::new(Some(salt), self.0.expose_secret());
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        hk.expand(info, out.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// The KEK for `salt`.
    pub fn kek(&self, salt: &[u8]) -> Kek {
        Kek(cipher(&self.derive(salt, KEK_INFO)))
    }

    /// The key-check value for `salt`, as stored.
    pub fn check_value(&self, salt: &[u8]) -> Vec<u8> {
        self.derive(salt, CHECK_INFO).to_vec()
    }

    /// Whether this key is the one whose check value for `salt` is `check` (constant time).
    pub fn matches(&self, salt: &[u8], check: &[u8]) -> bool {
        let mine = self.derive(salt, CHECK_INFO);
        check.len() == KEY_LEN && bool::from(mine.as_slice().ct_eq(check))
    }

    /// Whether two keys are the same (constant time).
    pub fn same_as(&self, other: &MasterKey) -> bool {
        bool::from(
            self.0
                .expose_secret()
                .as_slice()
                .ct_eq(other.0.expose_secret().as_slice()),
        )
    }
}

impl Clone for MasterKey {
    fn clone(&self) -> Self {
        MasterKey(SecretBox::new(Box::new(*self.0.expose_secret())))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

/// A fresh random KEK salt.
pub fn new_salt() -> Vec<u8> {
    random_bytes::<SALT_LEN>().to_vec()
}

/// The key-encryption key: wraps and unwraps data keys.
pub struct Kek(Aes256Gcm);

impl Kek {
    /// `nonce || AES-256-GCM(kek, data key)`.
    pub fn wrap(&self, key: &DataKey) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let ct = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.raw.expose_secret(),
                    aad: DATA_KEY_AAD,
                },
            )
            .expect("AES-GCM encryption of 32 bytes cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn unwrap(&self, wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        if wrapped.len() != NONCE_LEN + KEY_LEN + 16 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ct) = wrapped.split_at(NONCE_LEN);
        let raw = Zeroizing::new(
            self.0
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: ct,
                        aad: DATA_KEY_AAD,
                    },
                )
                .map_err(|_| CryptoError::Authentication)?,
        );
        let bytes: [u8; KEY_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed)?;
        Ok(DataKey::from_bytes(bytes))
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek([REDACTED])")
    }
}

/// Where a value lives; bound into its ciphertext as associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub credential: i64,
    pub attribute: i64,
    /// The user a `userProvided` value belongs to, 0 for a standard attribute's value.
    pub user: i64,
}

impl Slot {
    fn aad(&self) -> [u8; VALUE_AAD.len() + 24] {
        let mut out = [0u8; VALUE_AAD.len() + 24];
        let (label, ids) = out.split_at_mut(VALUE_AAD.len());
        label.copy_from_slice(VALUE_AAD);
        ids[..8].copy_from_slice(&self.credential.to_be_bytes());
        ids[8..16].copy_from_slice(&self.attribute.to_be_bytes());
        ids[16..].copy_from_slice(&self.user.to_be_bytes());
        out
    }
}

/// An encrypted value as stored: the nonce and the ciphertext (with its tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A data key: encrypts values.
pub struct DataKey {
    raw: SecretBox<[u8; KEY_LEN]>,
    cipher: Aes256Gcm,
}

impl DataKey {
    pub fn generate() -> DataKey {
        DataKey::from_bytes(random_bytes())
    }

    fn from_bytes(mut bytes: [u8; KEY_LEN]) -> DataKey {
        let key = DataKey {
            cipher: cipher(&bytes),
            raw: SecretBox::new(Box::new(bytes)),
        };
        zeroize::Zeroize::zeroize(&mut bytes);
        key
    }

    /// Encrypts `plaintext` for `slot` under a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], slot: Slot) -> Sealed {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let aad = slot.aad();
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a bounded value cannot fail");
        Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Decrypts a value of `slot`; fails if the bytes were altered or belong to another slot.
    pub fn open(
        &self,
        nonce: &[u8],
        ciphertext: &[u8],
        slot: Slot,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if nonce.len() != NONCE_LEN {
            return Err(CryptoError::Malformed);
        }
        let aad = slot.aad();
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Authentication)
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOT: Slot = Slot {
        credential: 12,
        attribute: 61,
        user: 0,
    };

    #[test]
    fn master_key_parses_base64_of_32_bytes_only() {
        let k = MasterKey::generate();
        let text = k.to_base64();
        let back = MasterKey::parse(text.expose_secret()).unwrap();
        assert!(k.same_as(&back));
        let url = URL_SAFE_NO_PAD.encode(k.0.expose_secret());
        assert!(MasterKey::parse(&format!("  {url}\n")).unwrap().same_as(&k));
        assert_eq!(
            MasterKey::parse("ABC123").unwrap_err(),
            CryptoError::KeyFormat
        );
        assert_eq!(
            MasterKey::parse(&STANDARD.encode([7u8; 31])).unwrap_err(),
            CryptoError::KeyFormat
        );
        assert_eq!(MasterKey::parse("").unwrap_err(), CryptoError::KeyFormat);
        assert_eq!(format!("{k:?}"), "MasterKey([REDACTED])");
    }

    #[test]
    fn key_check_tells_right_from_wrong() {
        let salt = new_salt();
        let k = MasterKey::generate();
        let check = k.check_value(&salt);
        assert!(k.matches(&salt, &check));
        assert!(!MasterKey::generate().matches(&salt, &check));
        assert!(!k.matches(&new_salt(), &check));
        assert!(!k.matches(&salt, &check[..31]));
    }

    #[test]
    fn data_keys_wrap_and_unwrap_only_under_their_kek() {
        let salt = new_salt();
        let k = MasterKey::generate();
        let dk = DataKey::generate();
        let wrapped = k.kek(&salt).wrap(&dk);
        let back = k.kek(&salt).unwrap(&wrapped).unwrap();
        let sealed = dk.seal(b"secret", SLOT);
        assert_eq!(
            &*back.open(&sealed.nonce, &sealed.ciphertext, SLOT).unwrap(),
            b"secret"
        );
        assert_eq!(
            MasterKey::generate()
                .kek(&salt)
                .unwrap(&wrapped)
                .unwrap_err(),
            CryptoError::Authentication
        );
        assert_eq!(
            k.kek(&salt).unwrap(&wrapped[1..]).unwrap_err(),
            CryptoError::Malformed
        );
    }

    #[test]
    fn values_are_bound_to_their_slot_and_nonces_are_fresh() {
        let dk = DataKey::generate();
        let a = dk.seal("Jane.Smith 한글".as_bytes(), SLOT);
        let b = dk.seal("Jane.Smith 한글".as_bytes(), SLOT);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(
            &*dk.open(&a.nonce, &a.ciphertext, SLOT).unwrap(),
            "Jane.Smith 한글".as_bytes()
        );
        for other in [
            Slot {
                credential: 13,
                ..SLOT
            },
            Slot {
                attribute: 62,
                ..SLOT
            },
            Slot { user: 5, ..SLOT },
        ] {
            assert_eq!(
                dk.open(&a.nonce, &a.ciphertext, other).unwrap_err(),
                CryptoError::Authentication
            );
        }
        let mut tampered = a.ciphertext.clone();
        tampered[0] ^= 1;
        assert_eq!(
            dk.open(&a.nonce, &tampered, SLOT).unwrap_err(),
            CryptoError::Authentication
        );
        assert_eq!(
            DataKey::generate()
                .open(&a.nonce, &a.ciphertext, SLOT)
                .unwrap_err(),
            CryptoError::Authentication
        );
    }
}
