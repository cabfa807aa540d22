//! Settings of the workflow engine: the `[workflow]` table of the configuration.

use serde::{Deserialize, Serialize};

use crate::egress::EgressPolicy;

/// Workflows (the `[workflow]` table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkflowConfig {
    /// Longest time `POST /services/workflow/execute` with `sync=true` waits for the run to
    /// end before it answers with the run's current state, in seconds.
    pub sync_wait_secs: u64,
    /// Seconds a server's claim on an execution lasts without renewal. When a server dies,
    /// another one sharing the PostgreSQL store takes its executions over after this long.
    /// The claim is renewed every third of it.
    pub lease_secs: u64,
    /// Timeout of an http step whose definition gives no `timeout_secs`, in seconds.
    pub http_timeout_secs: u64,
    /// Longest wait between two tries of a step whose definition gives no
    /// `retry_max_delay_secs`, in seconds.
    pub retry_max_delay_secs: u64,
    /// Accept any TLS certificate on https calls of http steps (for test endpoints with
    /// self-signed certificates; never in production).
    pub http_accept_invalid_certs: bool,
    /// Where http steps may connect: CIDRs (`10.20.0.0/16`), addresses, host names
    /// (`api.example.com`) or wildcard names (`*.corp.example`). Empty: anywhere the deny
    /// rules leave. Not empty: only what it names. Checked on every address a name resolves
    /// to, before connecting.
    pub http_allow: Vec<String>,
    /// Where http steps may not connect (same forms as `http_allow`; deny wins). Link-local
    /// networks and the cloud metadata addresses are always denied besides these.
    pub http_deny: Vec<String>,
    /// Bytes of an http step's response body read and kept in the step's result; the rest is
    /// not read (the result says `"truncated": true`).
    pub http_body_max_bytes: u64,
    /// A workflow's edit lock ends when its holder has not used it (taken, renewed, edited)
    /// for this long, in seconds; the next user then takes it.
    pub edit_lock_idle_secs: u64,
    /// How often the scheduler looks for due fires, in milliseconds.
    pub schedule_tick_ms: u64,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig {
            sync_wait_secs: 300,
            lease_secs: 15,
            http_timeout_secs: 60,
            retry_max_delay_secs: 300,
            http_accept_invalid_certs: false,
            http_allow: Vec::new(),
            http_deny: Vec::new(),
            http_body_max_bytes: 1024,
            edit_lock_idle_secs: 1800,
            schedule_tick_ms: 500,
        }
    }
}

impl WorkflowConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_secs < 2 || self.lease_secs > 3600 {
            return Err(format!(
                "workflow.lease_secs = {} must be 2 to 3600",
                self.lease_secs
            ));
        }
        if self.sync_wait_secs > 86_400 {
            return Err(format!(
                "workflow.sync_wait_secs = {} must be at most 86400",
                self.sync_wait_secs
            ));
        }
        if self.http_timeout_secs == 0 || self.http_timeout_secs > 86_400 {
            return Err(format!(
                "workflow.http_timeout_secs = {} must be 1 to 86400",
                self.http_timeout_secs
            ));
        }
        if self.retry_max_delay_secs == 0 || self.retry_max_delay_secs > 86_400 {
            return Err(format!(
                "workflow.retry_max_delay_secs = {} must be 1 to 86400",
                self.retry_max_delay_secs
            ));
        }
        if self.http_body_max_bytes == 0 || self.http_body_max_bytes > MAX_BODY_BYTES {
            return Err(format!(
                "workflow.http_body_max_bytes = {} must be 1 to {MAX_BODY_BYTES}",
                self.http_body_max_bytes
            ));
        }
        if self.edit_lock_idle_secs == 0 || self.edit_lock_idle_secs > 7 * 86_400 {
            return Err(format!(
                "workflow.edit_lock_idle_secs = {} must be 1 to 604800",
                self.edit_lock_idle_secs
            ));
        }
        if !(100..=60_000).contains(&self.schedule_tick_ms) {
            return Err(format!(
                "workflow.schedule_tick_ms = {} must be 100 to 60000",
                self.schedule_tick_ms
            ));
        }
        self.egress().map(|_| ())
    }

    /// The egress policy of http steps; the error names the key and the entry.
    pub fn egress(&self) -> Result<EgressPolicy, String> {
        EgressPolicy::new(&self.http_allow, &self.http_deny)
    }
}

/// Largest `http_body_max_bytes`: 1 MiB.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
