//! What this engine does with the other servers' signals (`haechi_store::signal`), and what
//! it tells them: work stored by one server for an agent connected to another is sent at
//! once instead of at the monitor's next sweep, and so are cancels. The sweep stays, as the
//! safety net; after the signal listener reconnected, one sweep runs at once.

use std::collections::BTreeSet;
use std::sync::Arc;

use haechi_protocol::RunSpec;
use haechi_store::{read, Backend, Delivery, Signal};
use haechi_types::Result;

use crate::Exec;

pub(crate) async fn run(exec: Arc<Exec>) {
    let mut signals = exec.store.signals().subscribe();
    let mut stop = exec.stopped();
    loop {
        let d = tokio::select! {
            d = signals.recv() => match d {
                Some(d) => d,
                None => return,
            },
            _ = stop.changed() => return,
        };
        let done = match d {
            Delivery::Signal(Signal::Work { instance }) => work(&exec, instance).await,
            Delivery::Signal(Signal::Cancel { instance }) => cancels(&exec, instance).await,
            Delivery::Signal(_) => Ok(()),
            Delivery::Resync => crate::monitor::sweep(&exec, 0).await,
        };
        if let Err(e) = done {
            tracing::warn!(
                "acting on a signal from another server failed (the sweep retries): {e}"
            );
        }
    }
}

/// Another server stored runs of `instance`: send those whose agents are connected here.
async fn work(exec: &Exec, instance: i64) -> Result<()> {
    if exec.hub.connected_count() == 0 {
        return Ok(());
    }
    let runs = exec.waiting_runs_here(instance).await?;
    exec.hub.redispatch(runs);
    Ok(())
}

/// Another server marked executions of `instance` to cancel: tell the agents here that may
/// hold them.
async fn cancels(exec: &Exec, instance: i64) -> Result<()> {
    if exec.hub.connected_count() == 0 {
        return Ok(());
    }
    let rows: Vec<(String, i64)> = read!(exec.store, |db| sqlx::query_as(
        "SELECT node_id, id FROM node_executions \
         WHERE instance_no = $1 AND latest AND cancel_requested AND status IN ('RUN', 'CANCEL')"
    )
    .bind(instance)
    .fetch_all(db)
    .await)?;
    for (node, id) in rows {
        exec.hub.cancel(&node, id);
    }
    Ok(())
}

impl Exec {
    /// Sends runs to the agents connected here, and tells the other servers sharing the store
    /// about the instances that have runs for agents not connected here.
    pub(crate) fn send_runs(&self, runs: Vec<(String, RunSpec)>) {
        if self.store.backend() == Backend::Postgres {
            let elsewhere: BTreeSet<i64> = runs
                .iter()
                .filter(|(node, _)| !self.hub.is_connected(node))
                .map(|(_, spec)| spec.instance_no)
                .collect();
            for instance in elsewhere {
                self.store.publish_detached(Signal::Work { instance });
            }
        }
        self.hub.dispatch(runs);
    }

    /// Tells the other servers that these instances have executions to cancel.
    pub(crate) fn announce_cancels(&self, instances: Vec<i64>) {
        if self.store.backend() != Backend::Postgres {
            return;
        }
        for instance in instances {
            self.store.publish_detached(Signal::Cancel { instance });
        }
    }
}
