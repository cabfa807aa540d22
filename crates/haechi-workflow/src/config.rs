//! Settings of the workflow engine: the `[workflow]` table of the configuration.

use serde::{Deserialize, Serialize};

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
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig {
            sync_wait_secs: 300,
            lease_secs: 15,
            http_timeout_secs: 60,
            retry_max_delay_secs: 300,
            http_accept_invalid_certs: false,
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
        Ok(())
    }
}
