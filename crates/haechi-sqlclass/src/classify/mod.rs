//! Statement classification: SQL text → the privilege types it needs, with each database's
//! own grammar. PostgreSQL text is parsed by PostgreSQL's parser (`pg_query`); MySQL/MariaDB
//! text by a MySQL-dialect SQL parser after executable comments are expanded the way the
//! server would run them. The full mapping, kind by kind, is in `docs/dbgate.md`.
//!
//! Every statement of a multi-statement string is classified and the needs are united: the
//! gateway lets the string through only if the policy grants all of them. Text that does not
//! parse, or a statement kind with no safe mapping, is [`Classification::unclassifiable`]: only
//! a policy granting `ALL` lets it through.

pub mod cache;
pub mod mysql;
pub mod pg;

pub mod corpus;

use crate::privilege::{PrivSet, Privilege};

/// What one statement string needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Privileges needed (united over every statement of the string).
    pub needs: PrivSet,
    /// Set when the text could not be classified: why (only `ALL` lets it through).
    pub unclassifiable: Option<String>,
    /// Statements in the string.
    pub statements: usize,
    /// Extra facts the protocol layer acts on.
    pub flags: Flags,
    /// SQL-level `PREPARE name`: what executing `name` will need.
    pub prepared: Vec<(String, PrivSet)>,
    /// SQL-level `DEALLOCATE name` (`None`: all).
    pub deallocated: Vec<Option<String>>,
    /// PostgreSQL: every statement is a plain query (`SELECT` needing nothing else: no
    /// `INTO`, no row locks, no function beyond the known IMMUTABLE/STABLE built-ins, none
    /// that reads the session's own backend), so it neither changes nor depends on session
    /// state, and any backend connection logged in as the same account with the same startup
    /// parameters answers it as the session's own would. Such strings may be pooled.
    pub session_neutral: bool,
    /// PostgreSQL: names read in attribute notation (`x.name`, `(expr).name`), each of which
    /// the database may run as the function `name(x)` instead of reading a column. The
    /// protocol layer resolves them against the target's catalog (see
    /// `gateway::pg::catalog`); a name it cannot show to be only a column needs `EXECUTE`.
    pub fields: std::sync::Arc<[String]>,
}

/// Facts about a statement string beyond its privileges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// MySQL `LOAD DATA LOCAL INFILE`: the server will ask the client for a file.
    pub local_infile: bool,
    /// The string changes how later text must be lexed (MySQL `sql_mode`, PostgreSQL
    /// `standard_conforming_strings`, client encodings): always needs `ALL`.
    pub lexer_change: bool,
}

impl Classification {
    pub fn needs(needs: PrivSet, statements: usize) -> Classification {
        Classification {
            needs,
            unclassifiable: None,
            statements,
            flags: Flags::default(),
            prepared: Vec::new(),
            deallocated: Vec::new(),
            session_neutral: false,
            fields: std::sync::Arc::from([]),
        }
    }

    pub fn unclassifiable(why: impl Into<String>) -> Classification {
        Classification {
            needs: PrivSet::of(&[Privilege::All]),
            unclassifiable: Some(why.into()),
            statements: 0,
            flags: Flags::default(),
            prepared: Vec::new(),
            deallocated: Vec::new(),
            session_neutral: false,
            fields: std::sync::Arc::from([]),
        }
    }

    /// The privileges a policy granting `granted` lacks for this string (empty = allowed).
    pub fn missing(&self, granted: PrivSet) -> PrivSet {
        granted.missing(self.needs)
    }
}

/// Adds privileges while walking; the flag notes a call of a function that answers from the
/// session's own backend (its process id, its socket), which no other connection can answer.
pub(crate) struct Needs(pub PrivSet, pub bool);

impl Needs {
    pub fn add(&mut self, p: Privilege) {
        self.0.add(p);
    }
}
