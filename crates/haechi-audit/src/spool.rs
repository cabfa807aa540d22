//! The durable point of `audit.durability = strict` on SQLite: an append-only file beside the
//! database, one per [`crate::Batcher`], in segments (`<database>-audit-<name>.spool.<first>`,
//! named by the number of their first record).
//!
//! A strict answer used to wait for a SQLite transaction of its event (group commit: the
//! table's last leaf and three indexes' rewritten, 4–5 pages of write-ahead log, for every few
//! events), which cost the gateway 21 µs of CPU a statement and made it 0.6× PgBouncer
//! (bench/README.md). Here the event is written to the spool before the answer leaves (one
//! `write` for the events of all the answers leaving together, see [`Spool::flush`]), and the batch writer commits it to the store a few milliseconds later, with the
//! spool's number of it in the same transaction (`audit_spools.applied`). The spool is exactly
//! as durable as such a commit: SQLite runs with `synchronous = NORMAL`, so a commit is in the
//! operating system's hands when it returns and survives the process being killed, not the
//! machine losing power; a `write` to the spool is the same.
//!
//! At start (before anything else is spooled) the records after `applied` are appended, with
//! the times they were spooled at, and the segments are removed; so after `kill -9` every
//! answered event is in the log once the server is back. A segment past [`SEGMENT_BYTES`] is
//! closed and the next one started; the writer removes a closed segment once everything in it
//! is committed (so the spool stays small under load that never stops). Readers of the log see
//! spooled events once the writers have committed them: [`crate::settle`] waits for that.
//!
//! A record is `[length: u32 LE][CRC-32C of the payload: u32 LE][payload]`, the payload the
//! record's number and time (`u64`, `i64` LE) and its seven text fields each as a `u32` LE
//! length (`u32::MAX`: none) and the bytes (no escaping: the detail is JSON already); a record that
//! does not check (a torn write, which only a machine crash can leave) ends the file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use haechi_store::inline::rusqlite::{params, Connection, OptionalExtension};
use haechi_types::{Error, Result};

use crate::{Detail, Event, Family, Outcome};

/// Slice-by-16 tables: the byte-at-a-time table was 5 % of the gateway thread's CPU.
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
const HEADER: usize = 8;

/// Past this length a segment is closed and the next one started.
pub(crate) const SEGMENT_BYTES: u64 = 4 << 20;

/// Records appended per transaction when recovering.
const RECOVER_BATCH: usize = 512;

/// One spooled event, as read back. `detail` holds the final JSON (with the origin folded in).
struct Record<'a> {
    n: u64,
    at: i64,
    user: Option<&'a str>,
    ip: Option<&'a str>,
    family: &'a str,
    action: &'a str,
    target: Option<&'a str>,
    outcome: &'a str,
    detail: &'a str,
}

/// The length written for a field that is `None`.
const NONE: u32 = u32::MAX;

/// Appends `field` as its length (`u32` LE, [`NONE`] for `None`) and bytes.
fn put(buf: &mut Vec<u8>, field: Option<&str>) -> Result<()> {
    match field {
        None => buf.extend_from_slice(&NONE.to_le_bytes()),
        Some(s) => {
            let len = u32::try_from(s.len())
                .ok()
                .filter(|l| *l != NONE)
                .ok_or_else(|| Error::invalid("an audit event field too large to spool"))?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
    }
    Ok(())
}

/// Appends record `n` (spooled at `at`) to `buf`: its header and payload (see the module).
fn encode(buf: &mut Vec<u8>, n: u64, at: i64, event: &Event, detail: &str) -> Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    buf.extend_from_slice(&n.to_le_bytes());
    buf.extend_from_slice(&at.to_le_bytes());
    put(buf, event.user.as_deref())?;
    put(buf, event.source_ip.as_deref())?;
    put(buf, Some(event.family.as_str()))?;
    put(buf, Some(&event.action))?;
    put(buf, event.target.as_deref())?;
    put(buf, Some(event.outcome.as_str()))?;
    put(buf, Some(detail))?;
    let payload = start + HEADER;
    let len = u32::try_from(buf.len() - payload)
        .map_err(|_| Error::invalid("an audit event too large to spool"))?;
    let crc = CRC.checksum(&buf[payload..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..payload].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reads the payload of a record written by [`Spool::write`]; `None` when it is not one.
fn decode(payload: &[u8]) -> Option<Record<'_>> {
    let mut rest = payload;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let n = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let at = i64::from_le_bytes(take(8)?.try_into().ok()?);
    let mut fields: [Option<&str>; 7] = [None; 7];
    for f in fields.iter_mut() {
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?);
        if len != NONE {
            *f = Some(std::str::from_utf8(take(len as usize)?).ok()?);
        }
    }
    if !rest.is_empty() {
        return None;
    }
    let [user, ip, family, action, target, outcome, detail] = fields;
    Some(Record {
        n,
        at,
        user,
        ip,
        family: family?,
        action: action?,
        target,
        outcome: outcome?,
        detail: detail?,
    })
}

/// An open spool (see the module).
pub(crate) struct Spool {
    /// Segments' paths without their number.
    stem: String,
    /// The segment written to, its path and length.
    path: PathBuf,
    file: File,
    len: u64,
    /// Closed segments and the number of the last record of each, oldest first.
    closed: std::collections::VecDeque<(PathBuf, u64)>,
    /// The number of the last record appended (numbers go on across segments and starts).
    last: u64,
    /// The number of the last record written to the file.
    written: u64,
    /// Records appended and not yet written (see [`Spool::flush`]).
    buf: Vec<u8>,
}

/// The segments' paths of the spool `name` of the database at `db`, without their number.
fn stem_of(db: &str, name: &str) -> String {
    format!("{db}-audit-{name}.spool.")
}

/// A new segment whose first record will be `first`: the owner's only, like the database
/// (it holds what the log holds).
fn create(stem: &str, first: u64) -> Result<(PathBuf, File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = PathBuf::from(format!("{stem}{first}"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_failed(&path, e))?;
    Ok((path, file))
}

/// The segments of `stem` on disk, oldest first.
fn segments(stem: &str) -> Result<Vec<PathBuf>> {
    let stem_path = Path::new(stem);
    let dir = match stem_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let prefix = stem_path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default()
        .to_owned();
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => return Err(io_failed(&dir, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((first, entry.path()));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

impl Spool {
    /// Appends what the spool of `name` holds past what is committed, empties it and opens it
    /// for writing. `None` for an in-memory database (nowhere to put the file).
    pub(crate) fn open(conn: &mut Connection, name: &str) -> Result<Option<Spool>> {
        let Some(db) = conn.path().filter(|p| !p.is_empty()).map(str::to_owned) else {
            return Ok(None);
        };
        let stem = stem_of(&db, name);
        let last = recover_at(conn, &stem, name)?;
        let (path, file) = create(&stem, last + 1)?;
        Ok(Some(Spool {
            stem,
            path,
            file,
            len: 0,
            closed: Default::default(),
            last,
            written: last,
            buf: Vec::with_capacity(16 * 1024),
        }))
    }

    /// The number of the last record appended.
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `event` as spooled at `at` ([`Spool::append`] and [`Spool::flush`]).
    #[cfg(test)]
    pub(crate) fn write(&mut self, event: &Event, detail: &str, at: i64) -> Result<u64> {
        let n = self.append(event, detail, at)?;
        self.flush()?;
        Ok(n)
    }

    /// Adds `event` as spooled at `at` to what the next [`Spool::flush`] writes; its detail
    /// must be final (no origin left to fold in). Returns its number. An event that cannot be
    /// spooled (a field too large) leaves nothing behind.
    pub(crate) fn append(&mut self, event: &Event, detail: &str, at: i64) -> Result<u64> {
        let n = self.last + 1;
        let start = self.buf.len();
        let encoded = encode(&mut self.buf, n, at, event, detail);
        if encoded.is_err() {
            self.buf.truncate(start);
        }
        encoded?;
        self.last = n;
        Ok(n)
    }

    /// Makes every later write fail as on a full disk.
    #[cfg(test)]
    pub(crate) fn fail_writes(&mut self) {
        self.file = OpenOptions::new().write(true).open("/dev/full").unwrap();
    }

    /// Bytes appended and not yet written.
    pub(crate) fn unwritten(&self) -> usize {
        self.buf.len()
    }

    /// The number of the last record written to the file.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Writes what was appended since the last flush, with one `write`, in a new segment when
    /// the current one is past [`SEGMENT_BYTES`]. On failure nothing of it stays in the file
    /// (or, when even that fails, the error says so) and it is dropped: the caller stops
    /// spooling, and those events' answers wait for their commit instead.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.len >= SEGMENT_BYTES {
            let (path, file) = match create(&self.stem, self.written + 1) {
                Ok(created) => created,
                Err(e) => {
                    self.buf.clear();
                    return Err(e);
                }
            };
            let old = std::mem::replace(&mut self.path, path);
            self.closed.push_back((old, self.written));
            self.file = file;
            self.len = 0;
        }
        let wrote = self.file.write_all(&self.buf);
        let bytes = self.buf.len() as u64;
        self.buf.clear();
        if let Err(e) = wrote {
            // A part written (the disk filled up) would end the file for recovery: cut it off.
            return Err(match self.file.set_len(self.len) {
                Ok(()) => io_failed(&self.path, e),
                Err(cut) => Error::unavailable(format!(
                    "{}: {e}; and a partial record could not be removed: {cut}",
                    self.path.display()
                )),
            });
        }
        self.written = self.last;
        self.len += bytes;
        Ok(())
    }

    /// The closed segments whose records are all committed (`applied` and before), taken off
    /// the spool: the caller removes them (outside its lock).
    pub(crate) fn release(&mut self, applied: u64) -> Vec<PathBuf> {
        let mut done = Vec::new();
        while self
            .closed
            .front()
            .is_some_and(|(_, last)| *last <= applied)
        {
            if let Some((path, _)) = self.closed.pop_front() {
                done.push(path);
            }
        }
        done
    }

    /// At a clean stop: every segment, the open one too, when all its records are committed
    /// (`applied` covers the last), so that the next start has nothing to read; otherwise
    /// only the closed segments [`Spool::release`] gives.
    pub(crate) fn finish(&mut self, applied: u64) -> Vec<PathBuf> {
        let mut done = self.release(applied);
        if self.last <= applied {
            done.push(self.path.clone());
        }
        done
    }
}

fn applied(conn: &Connection, name: &str) -> Result<u64> {
    let applied: Option<i64> = conn
        .query_row(
            "SELECT applied FROM audit_spools WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()
        .map_err(failed)?;
    Ok(applied.unwrap_or(0).max(0) as u64)
}

/// Appends the records of the spool's segments (`stem`) past `audit_spools.applied`, removes
/// the segments, and returns the number of the last record (or `applied` when greater).
fn recover_at(conn: &mut Connection, stem: &str, name: &str) -> Result<u64> {
    let applied = applied(conn, name)?;
    let mut last = applied;
    let mut appended = 0usize;
    let found = segments(stem)?;
    for path in &found {
        let bytes = std::fs::read(path).map_err(|e| io_failed(path, e))?;
        let (records, torn) = parse(&bytes);
        if torn > 0 {
            tracing::warn!(
                "audit spool {}: the last {torn} bytes are not a whole record (a machine crash \
                 tore the write); the records before them are kept",
                path.display()
            );
        }
        let pending: Vec<&Record> = records.iter().filter(|r| r.n > last).collect();
        for chunk in pending.chunks(RECOVER_BATCH) {
            let events = chunk
                .iter()
                .map(|r| to_event(r))
                .collect::<Result<Vec<Event>>>()?;
            let ats: Vec<i64> = chunk.iter().map(|r| r.at).collect();
            let refs: Vec<&Event> = events.iter().collect();
            let upto = chunk.last().map_or(last, |r| r.n);
            crate::blocking::append_spooled(conn, &refs, Some(&ats), Some((name, upto)))?;
            last = upto;
            appended += chunk.len();
        }
        if let Some(r) = records.last() {
            last = last.max(r.n);
        }
    }
    if appended > 0 {
        tracing::info!("audit spool {name}: {appended} events answered before the last stop appended to the log");
    }
    for path in &found {
        std::fs::remove_file(path).map_err(|e| io_failed(path, e))?;
    }
    Ok(last)
}

/// The whole records at the start of `bytes`, and how many bytes after them are not one.
fn parse(bytes: &[u8]) -> (Vec<Record<'_>>, usize) {
    let mut records: Vec<Record> = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + HEADER].try_into().unwrap_or_default());
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if len == 0 || CRC.checksum(payload) != crc {
            break;
        }
        let Some(record) = decode(payload) else {
            break;
        };
        if records.last().is_some_and(|prev| record.n <= prev.n) {
            break;
        }
        records.push(record);
        at += HEADER + len;
    }
    (records, bytes.len() - at)
}

fn to_event(r: &Record) -> Result<Event> {
    let family = Family::parse(r.family)
        .ok_or_else(|| Error::invalid(format!("spooled event of family {:?}", r.family)))?;
    let outcome = Outcome::parse(r.outcome)
        .ok_or_else(|| Error::invalid(format!("spooled event of outcome {:?}", r.outcome)))?;
    Ok(Event {
        user: r.user.map(str::to_owned),
        source_ip: r.ip.map(str::to_owned),
        family,
        action: r.action.to_owned(),
        target: r.target.map(str::to_owned),
        outcome,
        detail: Detail::Json(r.detail.to_owned()),
        origin: None,
    })
}

fn io_failed(path: &Path, e: std::io::Error) -> Error {
    Error::unavailable(format!("audit spool {}: {e}", path.display()))
}

fn failed(e: haechi_store::inline::rusqlite::Error) -> Error {
    Error::unavailable(format!("the audit store refused the spool's state: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> Event {
        Event::new(Family::Gateway, "db.statement")
            .by("kim", Some("10.0.0.1".into()))
            .target("db-target:pg")
            .outcome(Outcome::Denied)
            .detail(serde_json::json!({ "i": i, "text": "SELECT \"x\" — 한글" }))
    }

    /// Records read back as written; a torn tail or a flipped byte ends the file there.
    #[test]
    fn records_read_back_and_a_torn_tail_ends_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.spool");
        let (created, file) = create(&format!("{}.", path.display()), 42).unwrap();
        let mut spool = Spool {
            stem: format!("{}.", path.display()),
            path: created.clone(),
            file,
            len: 0,
            closed: Default::default(),
            last: 41,
            written: 41,
            buf: Vec::new(),
        };
        for i in 0..3 {
            let e = event(i);
            let detail = e.detail.to_json().unwrap();
            assert_eq!(
                spool.write(&e, &detail, 1_000 + i as i64).unwrap(),
                42 + i as u64
            );
        }
        let bytes = std::fs::read(&created).unwrap();
        assert_eq!(bytes.len() as u64, spool.len);
        let (records, torn) = parse(&bytes);
        assert_eq!(torn, 0);
        assert_eq!(
            records.iter().map(|r| r.n).collect::<Vec<_>>(),
            [42, 43, 44]
        );
        let back = to_event(&records[1]).unwrap();
        assert_eq!(back.user.as_deref(), Some("kim"));
        assert_eq!(back.outcome, Outcome::Denied);
        assert_eq!(records[1].at, 1_001);
        match back.detail {
            Detail::Json(s) => assert!(s.contains("한글") && s.contains("\"i\":1"), "{s}"),
            Detail::Value(_) => panic!("detail not kept as text"),
        }

        // A write cut short: the whole records before it stay.
        let (_, torn) = parse(&bytes[..bytes.len() - 5]);
        assert!(torn > 0);
        assert_eq!(parse(&bytes[..bytes.len() - 5]).0.len(), 2);
        // A changed byte in the second record's payload: only the first stays.
        let first = HEADER + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        let mut bad = bytes.clone();
        bad[first + HEADER + 3] ^= 0x20;
        assert_eq!(parse(&bad).0.len(), 1);
        // Zeros (a hole a crash can leave) are not a record.
        assert_eq!(parse(&[0u8; 64]).0.len(), 0);
    }
}
