//! The batch writer's appends on SQLite, on a thread of its own.
//!
//! Through sqlx, one group commit was four hand-offs to sqlx's SQLite thread and back (begin,
//! the head, the rows, commit) plus the wake-up of the writer task: about a millisecond a
//! commit on two busy CPUs, and under `audit.durability = strict` every answer waits for one
//! (bench/README.md, `pgbench.sh`: the gateway at 0.22× PgBouncer). The writer thread owns a
//! connection of its own ([`haechi_store::Inline::writer`]) and runs the whole transaction
//! itself: the commit costs what SQLite does, a few tens of microseconds. The rows and the
//! chain are exactly those of [`crate::append_slice`]; the head is read under SQLite's write
//! lock (`BEGIN IMMEDIATE`), so appends by other writers in between are chained after, not
//! lost.

use haechi_store::inline::rusqlite::{self, params, Connection};
use haechi_types::{Error, Result};

use crate::{chain_at, head_of, Event, Head, INSERT_COLS};

/// Appends `events` in one transaction of `conn`; returns the new head. Each event's time is
/// `ats`' when given (now otherwise); for events of a spool (`crate::spool`), the number of the
/// last of them is recorded as applied in the same transaction (`spooled`: the spool's name and
/// that number). `BEGIN IMMEDIATE` and `COMMIT` are cached statements like the rest (parsing
/// them each time was a tenth of a commit's CPU).
pub(crate) fn append_spooled(
    conn: &mut Connection,
    events: &[&Event],
    ats: Option<&[i64]>,
    spooled: Option<(&str, u64)>,
) -> Result<Head> {
    conn.prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]))
        .map_err(failed)?;
    match append_in(conn, events, ats, spooled) {
        Ok(head) => Ok(head),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

fn append_in(
    conn: &Connection,
    events: &[&Event],
    ats: Option<&[i64]>,
    spooled: Option<(&str, u64)>,
) -> Result<Head> {
    let head = conn
        .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")
        .and_then(|mut s| {
            s.query_row([], |r| {
                Ok(Head {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            })
        })
        .map_err(failed)?;
    let stored = chain_at(&head, events, ats)?;
    {
        let mut insert = conn
            .prepare_cached(&format!(
                "{INSERT_COLS}VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .map_err(failed)?;
        for e in &stored {
            insert
                .execute(params![
                    e.seq,
                    e.at,
                    e.user_id,
                    e.source_ip,
                    e.family,
                    e.action,
                    e.target,
                    e.outcome,
                    e.detail,
                    e.prev_hash,
                    e.hash
                ])
                .map_err(failed)?;
        }
    }
    let new_head = head_of(&stored, head);
    conn.prepare_cached("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")
        .and_then(|mut s| s.execute(params![new_head.seq, new_head.hash]))
        .map_err(failed)?;
    if let Some((name, applied)) = spooled {
        conn.prepare_cached(
            "INSERT INTO audit_spools (name, applied) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET applied = excluded.applied",
        )
        .and_then(|mut s| s.execute(params![name, applied as i64]))
        .map_err(failed)?;
    }
    conn.prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
        .map_err(failed)?;
    Ok(new_head)
}

fn failed(e: rusqlite::Error) -> Error {
    Error::unavailable(format!("the audit store refused an append: {e}"))
}
