//! The vault's cryptography, all in one place.
//!
//! - The **master key** is 32 random bytes, written as base64. It never touches the store.
//! - The **KEK** (key-encryption key) is HKDF-SHA256 of the master key with a random salt kept
//!   in the store and the info string `haechi vault kek v1`.
//! - The **key check** is a second HKDF output (info `haechi vault key check v1`) kept in the
//!   store: it tells a wrong master key from the right one without decrypting anything.
//! - **Data keys** are 32 random bytes, stored only wrapped (AES-256-GCM) by the KEK, with the
//!   data key's id as associated data: a wrapped key copied over another id fails to unwrap.
//! - Every **value** is AES-256-GCM under a data key with a fresh random 96-bit nonce and
//!   associated data that names its row and its state: value id, credential id, attribute id,
//!   user id (0 for a standard attribute's single value), the row's version and the data key's
//!   id. A ciphertext copied into another row, or an older ciphertext of the same row copied
//!   back over a newer one (a rollback), fails to authenticate instead of decrypting.
//!
//! **Formats.** The current format (2) marks itself with a leading byte: a stored nonce is
//! `0x02 || 12-byte nonce` (13 bytes) and a wrapped key `0x02 || nonce || ciphertext` (61 bytes).
//! The first format (no marker: a 12-byte nonce, a 60-byte wrapped key) bound a value only to
//! credential, attribute and user and a wrapped key to a constant; it still opens, so an existing
//! store upgrades in place: every write produces format 2, a data-key rotation re-seals every
//! value and a master-key change re-wraps every data key in format 2.
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
const DATA_KEY_AAD_V1: &[u8] = b"haechi vault data key v1";
const VALUE_AAD_V1: &[u8] = b"haechi vault value v1";
const DATA_KEY_AAD_V2: &[u8] = b"haechi vault data key v2";
const VALUE_AAD_V2: &[u8] = b"haechi vault value v2";
/// The leading byte of format-2 nonces and wrapped keys.
const FORMAT_2: u8 = 2;
/// Bytes in a wrapped data key of the first format: nonce, key, tag.
const WRAPPED_V1_LEN: usize = NONCE_LEN + KEY_LEN + 16;

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
    /// `0x02 || nonce || AES-256-GCM(kek, data key)`, bound to the data key's id `id`.
    pub fn wrap(&self, key: &DataKey, id: i64) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let ct = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.raw.expose_secret(),
                    aad: &wrap_aad(id),
                },
            )
            .expect("AES-GCM encryption of 32 bytes cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(FORMAT_2);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Unwraps the data key stored under id `id` (either format).
    pub fn unwrap(&self, wrapped: &[u8], id: i64) -> Result<DataKey, CryptoError> {
        let v2_aad = wrap_aad(id);
        let (body, aad): (&[u8], &[u8]) = match wrapped {
            [FORMAT_2, rest @ ..] if rest.len() == WRAPPED_V1_LEN => (rest, &v2_aad),
            _ if wrapped.len() == WRAPPED_V1_LEN => (wrapped, DATA_KEY_AAD_V1),
            _ => return Err(CryptoError::Malformed),
        };
        let (nonce, ct) = body.split_at(NONCE_LEN);
        let raw = Zeroizing::new(
            self.0
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
                .map_err(|_| CryptoError::Authentication)?,
        );
        let bytes: [u8; KEY_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed)?;
        Ok(DataKey::from_bytes(bytes))
    }
}

fn wrap_aad(id: i64) -> [u8; DATA_KEY_AAD_V2.len() + 8] {
    let mut out = [0u8; DATA_KEY_AAD_V2.len() + 8];
    out[..DATA_KEY_AAD_V2.len()].copy_from_slice(DATA_KEY_AAD_V2);
    out[DATA_KEY_AAD_V2.len()..].copy_from_slice(&id.to_be_bytes());
    out
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek([REDACTED])")
    }
}

/// Where a value lives and which state of it a ciphertext holds; bound into its ciphertext as
/// associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The value's row id.
    pub value: i64,
    pub credential: i64,
    pub attribute: i64,
    /// The user a `userProvided` value belongs to, 0 for a standard attribute's value.
    pub user: i64,
    /// The row's version (its `version` column) that this ciphertext is for.
    pub version: i64,
    /// The id of the data key that seals it.
    pub key: i64,
}

impl Slot {
    /// The associated data of the first format: credential, attribute and user only.
    fn aad_v1(&self) -> [u8; VALUE_AAD_V1.len() + 24] {
        let mut out = [0u8; VALUE_AAD_V1.len() + 24];
        let (label, ids) = out.split_at_mut(VALUE_AAD_V1.len());
        label.copy_from_slice(VALUE_AAD_V1);
        ids[..8].copy_from_slice(&self.credential.to_be_bytes());
        ids[8..16].copy_from_slice(&self.attribute.to_be_bytes());
        ids[16..].copy_from_slice(&self.user.to_be_bytes());
        out
    }

    /// The associated data of format 2: every field.
    fn aad_v2(&self) -> [u8; VALUE_AAD_V2.len() + 48] {
        let mut out = [0u8; VALUE_AAD_V2.len() + 48];
        let (label, ids) = out.split_at_mut(VALUE_AAD_V2.len());
        label.copy_from_slice(VALUE_AAD_V2);
        for (chunk, n) in ids.chunks_exact_mut(8).zip([
            self.value,
            self.credential,
            self.attribute,
            self.user,
            self.version,
            self.key,
        ]) {
            chunk.copy_from_slice(&n.to_be_bytes());
        }
        out
    }
}

/// An encrypted value as stored: the nonce (format 2: with its leading format byte) and the
/// ciphertext (with its tag).
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

    /// Encrypts `plaintext` for `slot` under a fresh random nonce, in format 2.
    pub fn seal(&self, plaintext: &[u8], slot: Slot) -> Sealed {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &slot.aad_v2(),
                },
            )
            .expect("AES-GCM encryption of a bounded value cannot fail");
        let mut stored = Vec::with_capacity(1 + NONCE_LEN);
        stored.push(FORMAT_2);
        stored.extend_from_slice(&nonce);
        Sealed {
            nonce: stored,
            ciphertext,
        }
    }

    /// Decrypts a value of `slot` (either format); fails if the bytes were altered, belong to
    /// another slot, or (format 2) to another version of this one or another data key.
    pub fn open(
        &self,
        nonce: &[u8],
        ciphertext: &[u8],
        slot: Slot,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (v1, v2) = (slot.aad_v1(), slot.aad_v2());
        let (nonce, aad): (&[u8], &[u8]) = match nonce {
            [FORMAT_2, rest @ ..] if rest.len() == NONCE_LEN => (rest, &v2),
            _ if nonce.len() == NONCE_LEN => (nonce, &v1),
            _ => return Err(CryptoError::Malformed),
        };
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
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
        value: 7,
        credential: 12,
        attribute: 61,
        user: 0,
        version: 3,
        key: 2,
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
        let wrapped = k.kek(&salt).wrap(&dk, 2);
        assert_eq!(wrapped.len(), 61);
        assert_eq!(wrapped[0], 2, "format 2");
        let back = k.kek(&salt).unwrap(&wrapped, 2).unwrap();
        let sealed = dk.seal(b"secret", SLOT);
        assert_eq!(
            &*back.open(&sealed.nonce, &sealed.ciphertext, SLOT).unwrap(),
            b"secret"
        );
        assert_eq!(
            MasterKey::generate()
                .kek(&salt)
                .unwrap(&wrapped, 2)
                .unwrap_err(),
            CryptoError::Authentication
        );
        // A wrapped key copied over another id does not unwrap.
        assert_eq!(
            k.kek(&salt).unwrap(&wrapped, 3).unwrap_err(),
            CryptoError::Authentication
        );
        assert_eq!(
            k.kek(&salt).unwrap(&wrapped[2..], 2).unwrap_err(),
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
        assert_eq!(a.nonce.len(), 13);
        assert_eq!(a.nonce[0], 2, "format 2");
        for other in [
            Slot { value: 8, ..SLOT },
            Slot {
                credential: 13,
                ..SLOT
            },
            // An older (or newer) version of the same row: a rollback does not open.
            Slot { version: 2, ..SLOT },
            Slot { version: 4, ..SLOT },
            Slot { key: 1, ..SLOT },
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

    /// Seals as the first format did (written here by hand, byte for byte as the previous code
    /// did): a 12-byte nonce and associated data naming only credential, attribute and user.
    fn seal_first_format(dk: &DataKey, plaintext: &[u8], slot: Slot) -> Sealed {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let mut aad = b"haechi vault value v1".to_vec();
        for n in [slot.credential, slot.attribute, slot.user] {
            aad.extend_from_slice(&n.to_be_bytes());
        }
        let ciphertext = dk
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap();
        Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    #[test]
    fn the_first_format_still_opens() {
        // A wrapped key of the first format: nonce || ciphertext, constant associated data.
        let salt = new_salt();
        let k = MasterKey::generate();
        let kek = k.kek(&salt);
        let dk = DataKey::generate();
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let mut old_wrapped = nonce.to_vec();
        old_wrapped.extend(
            kek.0
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: dk.raw.expose_secret(),
                        aad: b"haechi vault data key v1",
                    },
                )
                .unwrap(),
        );
        assert_eq!(old_wrapped.len(), 60);
        let back = kek.unwrap(&old_wrapped, 5).unwrap();
        assert_eq!(back.raw.expose_secret(), dk.raw.expose_secret());
        // A value of the first format opens for its credential, attribute and user, whatever
        // the row's id, version and key id (the first format did not bind them) ...
        let old = seal_first_format(&dk, "옛 값".as_bytes(), SLOT);
        assert_eq!(old.nonce.len(), 12);
        for slot in [
            SLOT,
            Slot {
                value: 99,
                version: 0,
                key: 1,
                ..SLOT
            },
        ] {
            assert_eq!(
                &*back.open(&old.nonce, &old.ciphertext, slot).unwrap(),
                "옛 값".as_bytes()
            );
        }
        // ... and not for another slot.
        assert_eq!(
            back.open(&old.nonce, &old.ciphertext, Slot { user: 4, ..SLOT })
                .unwrap_err(),
            CryptoError::Authentication
        );
        // A format-2 nonce marker glued onto a first-format ciphertext does not open either.
        let mut marked = vec![2u8];
        marked.extend_from_slice(&old.nonce);
        assert_eq!(
            back.open(&marked, &old.ciphertext, SLOT).unwrap_err(),
            CryptoError::Authentication
        );
        assert_eq!(
            back.open(&old.nonce[1..], &old.ciphertext, SLOT)
                .unwrap_err(),
            CryptoError::Malformed
        );
    }
}
