//! Prometheus metrics of the engine (through the `metrics` facade; the HTTP layer renders them
//! at `/metrics`):
//!
//! - `haechi_workflow_executions_started_total`
//! - `haechi_workflow_executions_ended_total{status}` (`COMPLETED`, `FAILED`, `STOPPED`)
//! - `haechi_workflow_executions_driven`: executions this server drives now
//! - `haechi_workflow_step_duration_seconds{type,outcome}`: one attempt, from its start to its end
//! - `haechi_workflow_commit_duration_seconds`, `haechi_workflow_commit_batch_size`: the journal
//! - `haechi_workflow_step_actions_total{action}`: operators' retry / skip / mark_succeeded

use crate::model::RunStatus;

pub(crate) fn started() {
    metrics::counter!("haechi_workflow_executions_started_total").increment(1);
}

pub(crate) fn ended(status: RunStatus) {
    metrics::counter!("haechi_workflow_executions_ended_total", "status" => status.as_str())
        .increment(1);
}

pub(crate) fn driven(delta: f64) {
    metrics::gauge!("haechi_workflow_executions_driven").increment(delta);
}

pub(crate) fn step(kind: &'static str, ok: bool, secs: f64) {
    metrics::histogram!(
        "haechi_workflow_step_duration_seconds",
        "type" => kind,
        "outcome" => if ok { "succeeded" } else { "failed" }
    )
    .record(secs);
}

pub(crate) fn step_action(action: &'static str) {
    metrics::counter!("haechi_workflow_step_actions_total", "action" => action).increment(1);
}
