//! A bounded cache of PostgreSQL classifications, so the statements an application sends over
//! and over (the same text with other constants) are parsed once, not on every execution.
//!
//! The key is the statement's *shape*: the text with its plain constants (unsigned integers,
//! `'...'` strings) replaced by a marker byte. The shape is made by a deliberately small lexer
//! that gives up (and the exact text becomes the key) on anything whose lexing depends on
//! context: comments, dollar quotes and `$n`, backslashes or a prefix (`E'`, `U&'`, `B'`, `X'`)
//! on strings, unterminated strings, control bytes. Two texts with one shape differ only in the
//! values of constants the lexer is sure of.
//!
//! Only classifications that cannot depend on a constant's value are stored: strings whose
//! statements are all queries, DML or transaction control (see
//! [`super::pg::Classified::cacheable`]); the walk of those statements reads function and
//! operator names, never constants. `SET`, `EXPLAIN`, `COPY`, SQL `PREPARE`/`EXECUTE` and text
//! that does not parse are classified afresh every time. The cache holds classifications, not
//! verdicts: every statement is still decided against the policies as they are at that moment.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::privilege::PrivSet;

/// Entries kept at most; when full, the cache starts over (a cheap bound that keeps the hot
/// statements, which come back at once).
const CAPACITY: usize = 8192;
/// Longer statements are not cached (their parse is a small part of their cost).
const MAX_TEXT: usize = 8 * 1024;

const NUMBER: u8 = 0x01;
const STRING: u8 = 0x02;
/// First byte of a key made from the exact text (the lexer gave up).
const EXACT: u8 = 0xFF;
/// First byte of a key made from the shape.
const SHAPE: u8 = 0xFE;

/// What a cached statement string needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub needs: PrivSet,
    pub statements: usize,
    pub session_neutral: bool,
    /// Names in attribute notation (see [`super::Classification::fields`]).
    pub fields: std::sync::Arc<[String]>,
}

/// The shared cache (one per gateway engine).
#[derive(Default)]
pub struct Cache {
    map: Mutex<HashMap<Box<[u8]>, Entry>>,
}

impl Cache {
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.map.lock().ok()?.get(key).cloned()
    }

    pub fn insert(&self, key: &[u8], entry: Entry) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= CAPACITY {
                map.clear();
            }
            map.insert(key.into(), entry);
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes the cache key of `sql` into `key` (cleared first). False when the text is too long
/// to be cached.
pub fn pg_key(sql: &str, key: &mut Vec<u8>) -> bool {
    key.clear();
    if sql.len() > MAX_TEXT {
        return false;
    }
    key.push(SHAPE);
    if pg_shape(sql.as_bytes(), key).is_none() {
        key.clear();
        key.push(EXACT);
        key.extend_from_slice(sql.as_bytes());
    }
    true
}

/// Identifier characters of PostgreSQL's lexer (bytes ≥ 0x80 included), and `$`.
fn ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Appends the shape of `s` to `out`; `None` when the lexer is not sure of every constant.
fn pg_shape(s: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        let prev = if i == 0 { b' ' } else { s[i - 1] };
        match b {
            // Dollar quotes, `$n` parameters and `$` inside identifiers: context matters.
            b'$' | b'\\' => return None,
            b'-' if s.get(i + 1) == Some(&b'-') => return None,
            b'/' if s.get(i + 1) == Some(&b'*') => return None,
            b'\'' => {
                // A prefix (E, U&, B, X, N) changes how the string is read.
                if ident_char(prev) || prev == b'&' || prev == b'\'' {
                    return None;
                }
                i += 1;
                loop {
                    match s.get(i) {
                        None | Some(b'\\') => return None,
                        Some(b'\'') if s.get(i + 1) == Some(&b'\'') => i += 2,
                        Some(b'\'') => break,
                        Some(_) => i += 1,
                    }
                }
                out.push(STRING);
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match s.get(i) {
                        None => return None,
                        Some(b'"') if s.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                out.extend_from_slice(&s[start..i]);
            }
            b'0'..=b'9' if !(ident_char(prev) || prev == b'.') => {
                let start = i;
                while s.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                // Decimals, exponents, `0x…`, `1_000`, trailing junk: kept as they are.
                match s.get(i) {
                    Some(&n) if ident_char(n) || n == b'.' => out.extend_from_slice(&s[start..i]),
                    _ => out.push(NUMBER),
                }
            }
            b'\t' | b'\n' | b'\r' | 0x0c | 0x20..=0x7e | 0x80..=0xff => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Vec<u8> {
        let mut k = Vec::new();
        assert!(pg_key(s, &mut k));
        k
    }

    #[test]
    fn constants_share_a_shape() {
        assert_eq!(
            key("SELECT abalance FROM pgbench_accounts WHERE aid = 17;"),
            key("SELECT abalance FROM pgbench_accounts WHERE aid = 123456;")
        );
        assert_eq!(key("SELECT 'a''b', 2"), key("SELECT 'zz', 3"));
        assert_eq!(
            key("SELECT \"x\"\"1\" FROM t1"),
            key("SELECT \"x\"\"1\" FROM t1")
        );
        assert_eq!(key("SELECT '한국', 1"), key("SELECT 'x', 2"));
    }

    #[test]
    fn anything_unsure_is_exact_text() {
        for s in [
            "SELECT 1 -- x",
            "SELECT 1 /* x */",
            "SELECT $$a$$",
            "SELECT $1",
            "SELECT E'a\\'b'",
            "SELECT 'a\\'",
            "SELECT U&'x'",
            "SELECT X'1F'",
            "SELECT 'open",
            "SELECT \"open",
            "SELECT a$b",
            "SELECT 1\u{1}",
        ] {
            assert_eq!(key(s)[0], EXACT, "{s}");
            assert_eq!(&key(s)[1..], s.as_bytes(), "{s}");
        }
        // Identifiers and non-integer numbers are kept as they are.
        assert_ne!(key("SELECT * FROM t1"), key("SELECT * FROM t2"));
        assert_ne!(key("SELECT 1.5"), key("SELECT 2.5"));
        assert_ne!(key("SELECT 1e5"), key("SELECT 2e5"));
        assert_ne!(key("SELECT 0x1"), key("SELECT 0x2"));
        assert_ne!(key("SELECT a.1"), key("SELECT a.2"));
        let long = format!("SELECT '{}'", "x".repeat(MAX_TEXT));
        assert!(!pg_key(&long, &mut Vec::new()));
    }
}
