//! The audit of a session's statements: one `db.statement` event per statement string, with
//! its text redacted and capped, and the statement metrics.

use std::sync::Arc;
use std::time::Instant;

use haechi_audit::{Event, Outcome};

use super::{Session, Verdict};
use crate::privilege::PrivSet;
use crate::DbGate;

/// What the audit event of one statement says.
pub struct StatementRecord<'a> {
    pub text: &'a str,
    pub needs: PrivSet,
    pub verdict: &'a Verdict,
    pub rows: u64,
    pub started: Instant,
    /// The database's error code when it failed the statement.
    pub error: Option<&'a str>,
}

/// Writes the audit events of one session's statements.
#[derive(Clone)]
pub struct Auditor {
    gate: Arc<DbGate>,
    user_id: String,
    account: String,
    /// `db-target:<name>`, the audit target.
    target: String,
    target_name: String,
    client_ip: String,
    protocol: &'static str,
    /// `haechi_gateway_statements_total` handles, resolved once per session.
    allowed: metrics::Counter,
    refused: metrics::Counter,
    /// The session's registry entry (its statement count, its id for the audit).
    open: Arc<crate::sessions::OpenSession>,
}

impl Session {
    /// What the audit of this session's statements needs, for the side that sees results.
    pub fn auditor(&self) -> Auditor {
        let counter = |verdict: &'static str| metrics::counter!("haechi_gateway_statements_total", "protocol" => self.protocol, "verdict" => verdict);
        Auditor {
            gate: self.gate.clone(),
            user_id: self.user_id.clone(),
            account: self.account.account.clone(),
            target: format!("db-target:{}", self.target.name),
            target_name: self.target.name.clone(),
            client_ip: self.client.ip().to_string(),
            protocol: self.protocol,
            allowed: counter("allowed"),
            refused: counter("refused"),
            open: self.registered.open.clone(),
        }
    }
}

impl Auditor {
    /// Records the audit event of one statement string (committed when this returns under
    /// `audit.durability = strict`) and counts its verdict.
    pub async fn audit(&self, r: StatementRecord<'_>) {
        self.enqueue(r).await.committed().await;
    }

    /// Queues the audit event of one statement string and counts its verdict; the answer says
    /// when the event is durable. Events queued before any is waited for share a commit.
    pub(crate) async fn enqueue(&self, r: StatementRecord<'_>) -> crate::Queued {
        let cap = self.gate.config().audit_statement_bytes;
        let dialect = if self.protocol == "mysql" {
            crate::redact::Dialect::MySql
        } else {
            crate::redact::Dialect::Postgres
        };
        let redacted = crate::redact::redact(r.text, dialect);
        let text = cap_text(&redacted, cap);
        let (verdict, outcome, missing) = match r.verdict {
            Verdict::Allow if r.error.is_some() => ("allowed", Outcome::Failure, None),
            Verdict::Allow => ("allowed", Outcome::Success, None),
            Verdict::Refuse { missing, .. } => ("refused", Outcome::Denied, Some(missing.names())),
        };
        match r.verdict {
            Verdict::Allow => self.allowed.increment(1),
            Verdict::Refuse { .. } => self.refused.increment(1),
        }
        self.open.count_statement();
        let missing = missing.as_deref();
        let detail = StatementDetail {
            session: &self.open.id,
            protocol: self.protocol,
            account: &self.account,
            target: &self.target_name,
            statement: &text,
            verdict,
            privileges: &r.needs.names(),
            missing,
            rows: r.rows,
            // Microseconds are plenty, and a short decimal reads back exactly.
            duration_ms: (r.started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
            error: r.error,
        };
        let event = Event::new(haechi_audit::Family::Gateway, "db.statement")
            .by(self.user_id.clone(), Some(self.client_ip.clone()))
            .target(self.target.clone())
            .outcome(outcome)
            .detail_of(&detail);
        match event {
            Ok(event) => self.gate.enqueue(event).await,
            Err(e) => {
                tracing::error!("gateway audit event not recorded: {e}");
                crate::Queued::none()
            }
        }
    }
}

/// The `detail` of a `db.statement` event, serialized straight from borrowed fields (one per
/// statement through the gateway: no JSON map is built for it).
#[derive(serde::Serialize)]
struct StatementDetail<'a> {
    /// The gateway session (see [`crate::sessions`]): statements of one session share it.
    session: &'a str,
    protocol: &'a str,
    account: &'a str,
    target: &'a str,
    statement: &'a str,
    verdict: &'a str,
    privileges: &'a str,
    missing: Option<&'a str>,
    rows: u64,
    duration_ms: f64,
    error: Option<&'a str>,
}

fn cap_text(s: &str, cap: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= cap {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… [{} bytes]", &s[..end], s.len()))
}
