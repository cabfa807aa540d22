//! The 27 SQL privilege types of a DBSAFER policy (`sqlPrivileges`), and sets of them.

use std::fmt;

macro_rules! privileges {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// One SQL privilege type, as the DBSAFER document lists them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Privilege { $($variant),* }

        impl Privilege {
            /// Every type, in the document's order.
            pub const ALL_TYPES: &'static [Privilege] = &[$(Privilege::$variant),*];

            /// The wire name (`SELECT`, `ALL`, ...).
            pub fn as_str(self) -> &'static str {
                match self { $(Privilege::$variant => $name),* }
            }
        }
    };
}

privileges! {
    All = "ALL",
    Alter = "ALTER",
    Audit = "AUDIT",
    Begin = "BEGIN",
    Command = "COMMAND",
    Comment = "COMMENT",
    Commit = "COMMIT",
    Connect = "CONNECT",
    Create = "CREATE",
    Delete = "DELETE",
    Desc = "DESC",
    Drop = "DROP",
    Execute = "EXECUTE",
    Grant = "GRANT",
    Index = "INDEX",
    Insert = "INSERT",
    Link = "LINK",
    Lock = "LOCK",
    Merge = "MERGE",
    Rename = "RENAME",
    Revoke = "REVOKE",
    Rollback = "ROLLBACK",
    Select = "SELECT",
    Show = "SHOW",
    Synonym = "SYNONYM",
    Truncate = "TRUNCATE",
    Update = "UPDATE",
}

impl Privilege {
    /// Parses a wire name, ignoring ASCII case.
    pub fn parse(s: &str) -> Option<Privilege> {
        Privilege::ALL_TYPES
            .iter()
            .copied()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of privileges (a bit set: the check on every statement is one AND).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PrivSet(u32);

impl PrivSet {
    pub const EMPTY: PrivSet = PrivSet(0);

    pub fn of(privs: &[Privilege]) -> PrivSet {
        privs.iter().fold(PrivSet::EMPTY, |s, p| s.with(*p))
    }

    pub fn with(self, p: Privilege) -> PrivSet {
        PrivSet(self.0 | p.bit())
    }

    pub fn add(&mut self, p: Privilege) {
        self.0 |= p.bit();
    }

    pub fn union(self, other: PrivSet) -> PrivSet {
        PrivSet(self.0 | other.0)
    }

    pub fn has(self, p: Privilege) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The privileges of `needed` that a policy granting `self` lacks. `ALL` grants everything.
    pub fn missing(self, needed: PrivSet) -> PrivSet {
        if self.has(Privilege::All) {
            PrivSet::EMPTY
        } else {
            PrivSet(needed.0 & !self.0)
        }
    }

    pub fn iter(self) -> impl Iterator<Item = Privilege> {
        Privilege::ALL_TYPES
            .iter()
            .copied()
            .filter(move |p| self.has(*p))
    }

    /// The names, comma-separated (`INSERT, SELECT`).
    pub fn names(self) -> String {
        self.iter()
            .map(Privilege::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_seven_types_round_trip() {
        assert_eq!(Privilege::ALL_TYPES.len(), 27);
        for p in Privilege::ALL_TYPES {
            assert_eq!(Privilege::parse(p.as_str()), Some(*p));
            assert_eq!(Privilege::parse(&p.as_str().to_lowercase()), Some(*p));
        }
        assert_eq!(Privilege::parse("SELEC"), None);
    }

    #[test]
    fn all_grants_everything() {
        let all = PrivSet::of(&[Privilege::All]);
        let need = PrivSet::of(&[Privilege::Drop, Privilege::Select]);
        assert!(all.missing(need).is_empty());
        let sel = PrivSet::of(&[Privilege::Select]);
        assert_eq!(sel.missing(need), PrivSet::of(&[Privilege::Drop]));
        assert_eq!(need.names(), "DROP, SELECT");
    }
}
