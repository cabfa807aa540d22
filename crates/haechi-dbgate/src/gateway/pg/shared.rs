//! What the client side (`frontend`, `pool`) and the database side (`backend`) of a
//! PostgreSQL session share: the unit of work that passes from one to the other, the marker
//! statements that stand in for refused ones, and what the database reports of how it lexes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::gateway::{StatementRecord, Verdict};
use crate::privilege::PrivSet;

/// One unit of work the client side forwarded: a simple Query, or the extended-protocol
/// messages up to `Sync`. Completed by the database's ReadyForQuery.
pub struct Unit {
    pub text: String,
    pub needs: PrivSet,
    pub verdict: Verdict,
    pub started: std::time::Instant,
}

impl Unit {
    /// Its audit record once it finished with `rows` and the database's `error` (kept only for
    /// a statement that was allowed: a refused one never reached the database).
    pub fn record<'a>(&'a self, rows: u64, error: Option<&'a str>) -> StatementRecord<'a> {
        StatementRecord {
            text: &self.text,
            needs: self.needs,
            verdict: &self.verdict,
            rows,
            started: self.started,
            error: if self.verdict.allowed() { error } else { None },
        }
    }
}

/// Statement names standing in for refused statements start with this (the frontend makes
/// them, the backend recognises them in the database's errors).
pub const MARKER_PREFIX: &str = "haechi_refused_";

/// Refusal messages by the marker statement name that stands in for the refused statement.
pub type Markers = Arc<Mutex<HashMap<String, String>>>;

/// What the client side must know of how the database reads the session's text, kept by the
/// database side: how many units it has finished, and whether the database reported a setting
/// that makes it lex text otherwise than the classifier (`standard_conforming_strings` off, a
/// client encoding other than UTF-8). Any statement can change those settings behind the
/// classifier's back (a function, a trigger or a view calling `set_config`); the database
/// reports the change in a `ParameterStatus` before the `ReadyForQuery` of that unit.
#[derive(Default)]
pub struct LexWatch {
    finished: std::sync::atomic::AtomicU64,
    changed: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl LexWatch {
    /// Waits until the database has finished `units` units; then whether the lexing changed.
    pub async fn finished(&self, units: u64) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let woken = self.notify.notified();
            // `finished` before `changed`: the database side stores `changed` first.
            if self.finished.load(SeqCst) >= units {
                return self.changed.load(SeqCst);
            }
            woken.await;
        }
    }

    /// Units the database has finished.
    pub fn done(&self) -> u64 {
        self.finished.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the database reported a setting that changes the lexing.
    pub fn changed(&self) -> bool {
        self.changed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Notes a `ParameterStatus` body.
    pub(super) fn parameter(&self, body: &[u8]) {
        if parameter_changes_lexing(body) {
            self.changed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub(super) fn unit_finished(&self) {
        self.finished
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// Whether a `ParameterStatus` body reports a setting that makes the database lex text
/// otherwise than the classifier.
pub fn parameter_changes_lexing(body: &[u8]) -> bool {
    let mut parts = body.split(|b| *b == 0);
    match (parts.next(), parts.next()) {
        (Some(b"standard_conforming_strings"), Some(v)) => !v.eq_ignore_ascii_case(b"on"),
        (Some(b"client_encoding"), Some(v)) => !v.eq_ignore_ascii_case(b"UTF8"),
        _ => false,
    }
}

/// The marker name in a "prepared statement ... does not exist" message, if it is ours.
pub fn marker_in(message: &str) -> Option<&str> {
    let start = message.find(MARKER_PREFIX)?;
    let rest = &message[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_the_database_message() {
        let name = format!("{MARKER_PREFIX}00ab_7");
        let msg = format!("prepared statement \"{name}\" does not exist");
        assert_eq!(marker_in(&msg), Some(name.as_str()));
        assert_eq!(
            marker_in("prepared statement \"mine\" does not exist"),
            None
        );
    }

    #[test]
    fn lexing_changes_are_recognised() {
        assert!(parameter_changes_lexing(
            b"standard_conforming_strings\0off\0"
        ));
        assert!(!parameter_changes_lexing(
            b"standard_conforming_strings\0on\0"
        ));
        assert!(parameter_changes_lexing(b"client_encoding\0SQL_ASCII\0"));
        assert!(!parameter_changes_lexing(b"client_encoding\0utf8\0"));
        assert!(!parameter_changes_lexing(b"TimeZone\0UTC\0"));
    }
}
