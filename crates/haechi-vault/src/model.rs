//! The vault's objects as the engine hands them out, and the inputs it takes. Times are unix
//! milliseconds; the HTTP layer turns these into the Control Room JSON shapes.

use secrecy::SecretString;

/// A credential with its attributes (never its values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub owner_id: i64,
    pub locker_id: Option<i64>,
    pub stamp: Stamp,
    pub attributes: Vec<Attribute>,
    /// In lists only: whether every attribute has a value the caller can use (a standard
    /// attribute's value, or the caller's own value of a `userProvided` one).
    pub completed: Option<bool>,
}

/// Who created and last changed an object, when, and its version (0 at creation, +1 per change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct Stamp {
    pub created_by: i64,
    pub created_at: i64,
    pub updated_by: i64,
    pub updated_at: i64,
    pub version: i64,
}

impl Stamp {
    pub(crate) fn new(by: i64, at: i64) -> Stamp {
        Stamp {
            created_by: by,
            created_at: at,
            updated_by: by,
            updated_at: at,
            version: 0,
        }
    }
}

/// One attribute of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    /// Each consuming user gives their own value (`true`), or the credential has one value.
    pub user_provided: bool,
    /// The console hides the value until revealed.
    pub masked: bool,
    pub stamp: Stamp,
}

/// A decrypted attribute value.
#[derive(Debug, Clone)]
pub struct Value {
    pub id: i64,
    pub attribute_id: i64,
    /// The user a `userProvided` value belongs to; `None` for a standard attribute's value.
    pub user_id: Option<i64>,
    pub value: SecretString,
    pub stamp: Stamp,
}

/// A locker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub stamp: Stamp,
    /// With `advanced` lists: the members and how many credentials the locker holds.
    pub members: Option<Vec<Member>>,
    pub count_of_credentials: Option<i64>,
}

/// A locker member and their permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub user_id: i64,
    pub perms: Perms,
}

/// A member's permissions in a locker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perms {
    /// Everything, including deleting the locker and granting `own`.
    pub own: bool,
    /// Edit the locker, its members (except owners) and consumers.
    pub manage: bool,
    /// Add and remove one's own credentials.
    pub participate: bool,
}

impl Perms {
    pub const ALL: Perms = Perms {
        own: true,
        manage: true,
        participate: true,
    };

    pub fn any(self) -> bool {
        self.own || self.manage || self.participate
    }

    /// Parses the wire names (`own`, `manage`, `participate`); the error names the bad entry.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Perms, (usize, String)> {
        let mut p = Perms::default();
        for (i, n) in names.iter().enumerate() {
            match n.as_ref() {
                "own" => p.own = true,
                "manage" => p.manage = true,
                "participate" => p.participate = true,
                other => return Err((i, other.to_owned())),
            }
        }
        Ok(p)
    }

    /// The wire names, in the order the product lists them.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::with_capacity(3);
        if self.participate {
            v.push("participate");
        }
        if self.own {
            v.push("own");
        }
        if self.manage {
            v.push("manage");
        }
        v
    }
}

/// The vault's connection mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The server unseals itself at start with a key it keeps.
    Express,
    /// Sealed after every start until someone applies the master key.
    Manual,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Express => "Express",
            Mode::Manual => "Manual",
        }
    }

    /// Case-insensitive.
    pub fn parse(s: &str) -> Option<Mode> {
        if s.eq_ignore_ascii_case("express") {
            Some(Mode::Express)
        } else if s.eq_ignore_ascii_case("manual") {
            Some(Mode::Manual)
        } else {
            None
        }
    }
}

/// A new credential.
#[derive(Debug, Clone, Default)]
pub struct NewCredential {
    pub name: String,
    pub description: Option<String>,
    pub attributes: Vec<NewAttribute>,
}

/// A new attribute.
#[derive(Debug, Clone)]
pub struct NewAttribute {
    pub name: String,
    pub description: Option<String>,
    pub user_provided: bool,
    pub masked: bool,
}

/// A partial update of a credential: absent fields keep their value.
#[derive(Debug, Clone, Default)]
pub struct CredentialPatch {
    /// The version the caller last read; another one is a conflict.
    pub version: i64,
    pub name: Option<String>,
    pub description: Option<String>,
    /// A new owner (same rules as a transfer).
    pub owner_id: Option<i64>,
    /// Must be the current locker if given (credentials move with the locker routes).
    pub locker_id: Option<i64>,
    pub attributes: Vec<AttributePatch>,
}

/// An attribute in an update: with `id` it changes that attribute, without it adds one.
#[derive(Debug, Clone, Default)]
pub struct AttributePatch {
    pub id: Option<i64>,
    pub version: Option<i64>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub user_provided: Option<bool>,
    pub masked: Option<bool>,
}

/// A value to store.
#[derive(Debug, Clone)]
pub struct NewValue {
    pub attribute_id: i64,
    pub value: SecretString,
}

/// A value update.
#[derive(Debug, Clone)]
pub struct ValuePatch {
    pub version: i64,
    /// If given, must be the value's own attribute.
    pub attribute_id: Option<i64>,
    pub value: SecretString,
}

/// A partial update of a locker.
#[derive(Debug, Clone, Default)]
pub struct LockerPatch {
    pub version: i64,
    pub name: Option<String>,
    pub description: Option<String>,
}

/// Filters of the credential list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CredentialFilter {
    /// `Some(true)`: only credentials the caller consumes through a locker's consumer role;
    /// `Some(false)`: only those the caller does not.
    pub consumed: Option<bool>,
    /// Exact names (from `name` and `names`); empty = all.
    pub names: Vec<String>,
    /// `(limit, offset)`, when the caller asked for a page.
    pub page: Option<(i64, i64)>,
}

/// Filters of the locker list.
#[derive(Debug, Clone, Default)]
pub struct LockerFilter {
    pub consumed: Option<bool>,
    pub page: Option<(i64, i64)>,
    /// Include members and credential counts.
    pub advanced: bool,
}

/// Where the master key of an unsealed vault came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Environment,
    File,
    /// Applied through the API (`PUT keys/private`, a mode switch, or `haechi vault unseal`).
    Applied,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Environment => "environment",
            KeySource::File => "file",
            KeySource::Applied => "applied",
        }
    }
}

/// The vault's state as `haechi vault status` shows it.
#[derive(Debug, Clone)]
pub struct Status {
    pub mode: Mode,
    /// Whether this server holds the master key.
    pub applied: bool,
    pub key_source: Option<KeySource>,
    pub key_file: std::path::PathBuf,
    pub key_file_present: bool,
    pub active_data_key: i64,
    pub data_keys: i64,
    pub credentials: i64,
    pub values: i64,
    pub lockers: i64,
}

/// What a data key rotation did.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    pub key_id: i64,
    pub reencrypted: i64,
    pub retired_keys: i64,
}

/// What a master key change did.
#[derive(Debug, Clone)]
pub struct Rekey {
    pub rewrapped_keys: i64,
    pub key_file_updated: bool,
    /// Something the operator must do (for instance update HAECHI_VAULT_MASTER_KEY).
    pub warning: Option<String>,
}
