//! The scheduler: starts approved tasks with `execScheduler = E` on their cron `schedule`, in
//! the schedule's time zone, on their target nodes. Each fire is claimed with a unique row
//! (`schedule_fires`: task id, fire time), so with several servers on one PostgreSQL exactly
//! one of them starts it. A fire missed by more than `tasks.misfire_grace_secs` (the servers
//! were down) is skipped rather than run late.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use haechi_store::{in_tx, read};
use haechi_types::{time::now_ms, Result};
use jiff::tz::{Offset, TimeZone};

use crate::model::{RunnerGubun, StartInstance};
use crate::Exec;

/// Parses a schedule: 5-field cron (`minute hour day-of-month month day-of-week`), an alias
/// such as `@hourly`, or with `seconds` also 6 fields with a leading seconds field.
pub(crate) fn parse(expr: &str, seconds: bool) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !expr.starts_with('@') && fields != 5 && !(seconds && fields == 6) {
        return Err(format!(
            "{expr:?} is not a 5-field cron expression (minute hour day-of-month month day-of-week){}",
            if seconds { " or a 6-field one with seconds first" } else { "" }
        ));
    }
    CronParser::builder()
        .seconds(if seconds {
            Seconds::Optional
        } else {
            Seconds::Disallowed
        })
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a valid cron expression: {e}"))
}

/// A schedule's time zone: an IANA name (`Asia/Seoul`), `UTC`, or a fixed `±HH:MM` offset.
pub(crate) fn zone(name: &str, _default_offset: i32) -> Result<TimeZone, String> {
    if let Some(secs) = parse_offset(name) {
        return Offset::from_seconds(secs)
            .map(TimeZone::fixed)
            .map_err(|e| format!("{name:?}: {e}"));
    }
    TimeZone::get(name).map_err(|_| {
        format!("{name:?} is not a time zone (use an IANA name such as Asia/Seoul, or ±HH:MM)")
    })
}

fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 23 && m <= 59).then_some(sign * (h * 3600 + m * 60))
}

fn default_zone(offset_secs: i32) -> TimeZone {
    Offset::from_seconds(offset_secs)
        .map(TimeZone::fixed)
        .unwrap_or(TimeZone::UTC)
}

/// The first fire strictly after `after_ms`, in unix ms.
pub(crate) fn next_fire(cron: &Cron, tz: &TimeZone, after_ms: i64) -> Option<i64> {
    let ts = jiff::Timestamp::from_millisecond(after_ms).ok()?;
    let next = cron
        .find_next_occurrence(&ts.to_zoned(tz.clone()), false)
        .ok()?;
    Some(next.timestamp().as_millisecond())
}

/// A cron expression in its time zone, checked: what every schedule (a task's, a
/// workflow's) fires by.
#[derive(Debug, Clone)]
pub struct CronSpec {
    cron: Cron,
    tz: TimeZone,
}

impl CronSpec {
    /// Parses `cron` (5 fields, or with `seconds` 6 with seconds first) in zone `timezone`
    /// (an IANA name, `UTC` or `±HH:MM`; absent: the fixed offset `default_offset_secs`).
    /// The error names the field (`cron` or `timezone`) and says what is wrong.
    pub fn parse(
        cron: &str,
        timezone: Option<&str>,
        default_offset_secs: i32,
        seconds: bool,
    ) -> std::result::Result<CronSpec, (&'static str, String)> {
        let parsed = parse(cron, seconds).map_err(|e| ("cron", e))?;
        let tz = match timezone {
            Some(name) => zone(name, default_offset_secs).map_err(|e| ("timezone", e))?,
            None => default_zone(default_offset_secs),
        };
        Ok(CronSpec { cron: parsed, tz })
    }

    /// The first fire strictly after `after_ms` (unix ms).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        next_fire(&self.cron, &self.tz, after_ms)
    }
}

#[derive(sqlx::FromRow)]
struct Scheduled {
    id: String,
    revision_no: i64,
    schedule: String,
    schedule_tz: Option<String>,
    arguments: String,
    apprv_at: Option<i64>,
}

struct Parsed {
    revision_no: i64,
    cron: Cron,
    tz: TimeZone,
}

pub(crate) async fn run(exec: Arc<Exec>) {
    let tick = if exec.cfg.tasks.schedule_seconds {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    let mut stop = exec.stopped();
    let mut parsed: HashMap<String, Parsed> = HashMap::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = tick_once(&exec, &mut parsed, &mut last).await {
            tracing::warn!("scheduler: {e}");
        }
    }
}

async fn tick_once(
    exec: &Exec,
    parsed: &mut HashMap<String, Parsed>,
    last: &mut HashMap<String, i64>,
) -> Result<()> {
    let rows: Vec<Scheduled> = read!(exec.store, |db| {
        sqlx::query_as(
            "SELECT t.id, r.revision_no, r.schedule, r.schedule_tz, r.arguments, t.apprv_at \
         FROM tasks t JOIN task_revisions r ON r.task_id = t.id AND r.revision_no = t.revision_no \
         WHERE r.schedule IS NOT NULL AND r.exec_scheduler = 'E' AND t.apprv_status = 'A'",
        )
        .fetch_all(db)
        .await
    })?;
    let now = now_ms();
    let grace = exec.cfg.tasks.misfire_grace_secs as i64 * 1000;
    parsed.retain(|id, _| rows.iter().any(|r| &r.id == id));
    for row in rows {
        let stale = parsed
            .get(&row.id)
            .is_none_or(|p| p.revision_no != row.revision_no);
        if stale {
            let cron = match parse(&row.schedule, exec.cfg.tasks.schedule_seconds) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(task = %row.id, "schedule not usable: {e}");
                    continue;
                }
            };
            let tz = match &row.schedule_tz {
                Some(name) => zone(name, exec.cfg.utc_offset_secs)
                    .unwrap_or_else(|_| default_zone(exec.cfg.utc_offset_secs)),
                None => default_zone(exec.cfg.utc_offset_secs),
            };
            parsed.insert(
                row.id.clone(),
                Parsed {
                    revision_no: row.revision_no,
                    cron,
                    tz,
                },
            );
        }
        let Some(p) = parsed.get(&row.id) else {
            continue;
        };
        let last_fire = match last.get(&row.id) {
            Some(t) => *t,
            None => {
                let t: Option<i64> = read!(exec.store, |db| sqlx::query_scalar(
                    "SELECT MAX(fire_at) FROM schedule_fires WHERE task_id = $1"
                )
                .bind(&row.id)
                .fetch_one(db)
                .await)?;
                let t = t.unwrap_or(0);
                last.insert(row.id.clone(), t);
                t
            }
        };
        let since = last_fire.max(row.apprv_at.unwrap_or(0)).max(now - grace);
        let Some(due) = next_fire(&p.cron, &p.tz, since) else {
            continue;
        };
        if due > now {
            continue;
        }
        fire(exec, &row, due).await?;
        last.insert(row.id.clone(), due);
    }
    Ok(())
}

/// Claims the fire `due` of a task and starts its instance, in one transaction.
async fn fire(exec: &Exec, row: &Scheduled, due: i64) -> Result<()> {
    let mut tx = exec.store.begin().await?;
    let claimed = in_tx!(tx, |c| {
        sqlx::query(
        "INSERT INTO schedule_fires (task_id, fire_at, claimed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
    )
    .bind(&row.id)
    .bind(due)
    .bind(now_ms())
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    if claimed == 0 {
        return Ok(());
    }
    let req = StartInstance {
        task_id: row.id.clone(),
        // The task's targets, resolved at the fire (nodes, groups, labels).
        node_ids: Vec::new(),
        arguments: serde_json::from_str(&row.arguments).unwrap_or_default(),
        runner_gubun: RunnerGubun::Scheduler,
        runner_id: "scheduler".into(),
        origin: Some(format!("schedule:{due}")),
    };
    let runs = match exec.create_instance_in_tx(&mut tx, &req, None, None).await {
        Ok(created) => {
            let no = created.instance.task_instance_no;
            in_tx!(tx, |c| sqlx::query(
                "UPDATE schedule_fires SET instance_no = $3 WHERE task_id = $1 AND fire_at = $2"
            )
            .bind(&row.id)
            .bind(due)
            .bind(no)
            .execute(&mut *c)
            .await
            .map(|_| ()))?;
            tracing::info!(task = %row.id, instance = no, "schedule fired");
            created.runs
        }
        Err(e) if e.code() != haechi_types::Code::Internal => {
            let (reason, next_open) = match &e {
                crate::StartError::OutsideWindow(w) => (w.message.clone(), w.next_open),
                crate::StartError::Refused(e) => (e.message.clone(), None),
            };
            tracing::warn!(task = %row.id, "schedule fire skipped: {reason}");
            haechi_audit::append(
                &mut tx,
                haechi_audit::Event::new(haechi_audit::Family::System, "task.schedule.skip")
                    .target(row.id.clone())
                    .outcome(haechi_audit::Outcome::Failure)
                    .detail(serde_json::json!({
                        "fireAt": due, "reason": reason, "nextWindowOpen": next_open,
                    })),
            )
            .await?;
            Vec::new()
        }
        Err(e) => return Err(e.into_error()),
    };
    tx.commit().await?;
    exec.send_runs(runs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_only_unless_seconds() {
        assert!(parse("*/5 * * * *", false).is_ok());
        assert!(parse("@hourly", false).is_ok());
        assert!(parse("* * * *", false).is_err());
        assert!(parse("*/2 * * * * *", false).is_err());
        assert!(parse("*/2 * * * * *", true).is_ok());
        assert!(parse("61 * * * *", false).is_err());
    }

    #[test]
    fn zones() {
        assert!(zone("Asia/Seoul", 0).is_ok());
        assert!(zone("+09:00", 0).is_ok());
        assert!(zone("UTC", 0).is_ok());
        assert!(zone("Mars/Olympus", 0).is_err());
    }

    #[test]
    fn next_fire_respects_the_zone() {
        // 2024-05-20T00:30:00Z; "0 9 * * *" in Seoul (UTC+9) is 00:00Z, so the next is the 21st.
        let cron = parse("0 9 * * *", false).unwrap();
        let seoul = zone("Asia/Seoul", 0).unwrap();
        let after = 1_716_165_000_000;
        assert_eq!(next_fire(&cron, &seoul, after), Some(1_716_249_600_000));
        let utc = zone("UTC", 0).unwrap();
        assert_eq!(next_fire(&cron, &utc, after), Some(1_716_195_600_000));
    }
}
