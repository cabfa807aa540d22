//! The monitor: writes heartbeats to the store, marks silent nodes missing and their open
//! executions `LOST` after the grace, and re-sends what the agents connected here should have
//! (runs not yet accepted, cancels not yet obeyed), which also covers work stored by another
//! server sharing the same PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use haechi_store::read;
use haechi_types::{time::now_ms, Result};

use crate::writer::Op;
use crate::Exec;

const TICK: Duration = Duration::from_secs(1);
/// A `WAIT` execution younger than this was just dispatched; the sweep leaves it alone.
const SWEEP_MIN_AGE_MS: i64 = 3000;

pub(crate) async fn run(exec: Arc<Exec>) {
    let mut stop = exec.stopped();
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => return,
        }
        ticks += 1;
        flush_heartbeats(&exec);
        let now = now_ms();
        let agents = &exec.cfg.agents;
        let silent_ms =
            agents.heartbeat_secs as i64 * 1000 * agents.missed_heartbeats.max(1) as i64;
        // Read first: an idle server then takes no write lock at all.
        let missing_cutoff = now - silent_ms;
        let lost_cutoff = now - agents.lost_grace_secs as i64 * 1000;
        match due_marks(&exec, missing_cutoff, lost_cutoff).await {
            Ok((missing, lost)) => {
                if missing {
                    let _ = exec.writer.send(Op::MarkMissing {
                        cutoff: missing_cutoff,
                    });
                }
                if lost {
                    let _ = exec.writer.send(Op::MarkLost {
                        cutoff: lost_cutoff,
                    });
                }
            }
            Err(e) => tracing::warn!("monitor: {e}"),
        }
        if ticks.is_multiple_of(2) {
            if let Err(e) = sweep(&exec, SWEEP_MIN_AGE_MS).await {
                tracing::warn!("agent sweep failed: {e}");
            }
        }
    }
}

/// Whether some node is newly silent, and whether some open execution is on a node missing
/// for longer than the grace.
async fn due_marks(exec: &Exec, missing_cutoff: i64, lost_cutoff: i64) -> Result<(bool, bool)> {
    let missing: Option<String> = read!(exec.store, |db| {
        sqlx::query_scalar(
        "SELECT id FROM nodes WHERE missing_since IS NULL AND COALESCE(heartbeat_at, created_at) < $1 LIMIT 1"
    )
    .bind(missing_cutoff)
    .fetch_optional(db)
    .await
    })?;
    let lost: Option<i64> = read!(exec.store, |db| {
        sqlx::query_scalar(
        "SELECT e.id FROM node_executions e JOIN nodes n ON n.id = e.node_id \
         WHERE e.status IN ('WAIT', 'RUN') AND n.missing_since IS NOT NULL AND n.missing_since < $1 LIMIT 1"
    )
    .bind(lost_cutoff)
    .fetch_optional(db)
    .await
    })?;
    Ok((missing.is_some(), lost.is_some()))
}

fn flush_heartbeats(exec: &Exec) {
    let beats: Vec<(String, i64, Option<i64>)> = exec
        .heartbeats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .map(|(node, (at, skew))| (node, at, skew))
        .collect();
    if !beats.is_empty() {
        let _ = exec.writer.send(Op::Heartbeats(beats));
    }
}

/// Re-sends what the agents connected here should have: cancels not yet obeyed, and runs
/// waiting for longer than `min_age_ms` (younger ones were just sent).
pub(crate) async fn sweep(exec: &Exec, min_age_ms: i64) -> Result<()> {
    let connected: HashSet<String> = exec.hub.connected_nodes().into_iter().collect();
    let open: Vec<(i64, String, String, bool, i64)> = read!(exec.store, |db| {
        sqlx::query_as(
        "SELECT id, node_id, status, cancel_requested, created_at FROM node_executions WHERE status IN ('WAIT', 'RUN')"
    )
    .fetch_all(db)
    .await
    })?;
    let now = now_ms();
    let mut keep = HashSet::new();
    let mut wait_ids = Vec::new();
    for (id, node, status, cancel, created) in open {
        keep.insert(id);
        if !connected.contains(&node) {
            continue;
        }
        if status == "RUN" && cancel {
            exec.hub.cancel_paced(&node, id);
        } else if status == "WAIT" && created <= now - min_age_ms {
            wait_ids.push(id);
        }
    }
    exec.hub.prune_sent(&keep);
    if !wait_ids.is_empty() {
        let runs = exec.runs_by_ids(&wait_ids).await?;
        exec.hub.redispatch(runs);
    }
    Ok(())
}
