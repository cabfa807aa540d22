//! The audit log: every login and every change, append-only and hash-chained.
//!
//! Each event's hash covers its own fields and the hash of the event before it; `audit_head`
//! holds the newest sequence number and hash. An event edited, deleted or moved in the database
//! breaks the chain at that event, and deleting the newest events breaks it at the head, so
//! [`verify`] names the first broken link. Events are appended inside the transaction of the
//! change they record: a change and its event commit together or not at all.
//!
//! Callers must never put a secret (password, token, key, vault value) in an event.

use haechi_store::{in_tx, read, Backend, Store, Tx, TxConn};
use haechi_types::{time, Error, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

mod batcher;
mod blocking;
mod spool;
pub use batcher::{settle, Batcher, BatcherOptions, Durability, Pending};
pub mod forward;

/// The hash `prev_hash` of the first event points at.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest text kept in one field of an event; longer input is cut (a log is no place for
/// megabytes of attacker-chosen text).
const MAX_FIELD: usize = 512;

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    /// The outcome stored as `s`, if it is one.
    pub fn parse(s: &str) -> Option<Outcome> {
        [Outcome::Success, Outcome::Failure, Outcome::Denied]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// The API family an event belongs to: the product API (or the console, or the server itself)
/// through which the audited action came. [`Family::as_str`] is the string stored in
/// `audit_events.family`, filtered on, hashed into the chain and shown by the API; these are
/// exactly the strings stored before the enum existed, so old and new events read alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Haechi's own admin API (`/api/v1/...`).
    Admin,
    /// MDRM: login and the workflow API, and the workflow engine's own events.
    Mdrm,
    /// OPMATE: nodes, tasks, task instances.
    Opmate,
    /// DBSAFER's policy API.
    Dbsafer,
    /// The Control Room credential vault API.
    Vault,
    /// The database gateways' sessions and statements.
    Gateway,
    /// The web console.
    Console,
    /// The server itself: startup, background sweeps, the offline CLI.
    System,
}

impl Family {
    /// Every family, in the order the console lists them.
    pub const ALL: [Family; 8] = [
        Family::Admin,
        Family::Console,
        Family::Mdrm,
        Family::Opmate,
        Family::Dbsafer,
        Family::Vault,
        Family::Gateway,
        Family::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Admin => "admin",
            Family::Mdrm => "mdrm",
            Family::Opmate => "opmate",
            Family::Dbsafer => "dbsafer",
            Family::Vault => "vault",
            Family::Gateway => "gateway",
            Family::Console => "console",
            Family::System => "system",
        }
    }

    /// The family stored as `s`, if it is one.
    pub fn parse(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Through what an action came: a request to one API family, the web console, a step of a
/// workflow execution, a scheduled run, or the server itself. It decides the event's
/// [`Family`]; an origin that is not a plain request (a workflow execution, a schedule) is
/// also written into the event's `detail` as `"origin"` (see [`Origin::label`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A request to one of the API families.
    Api(Family),
    /// A page or form of the web console.
    Console,
    /// A step of a workflow execution (its id, `EXEC_YYYYMMDD_NNNN`).
    Workflow { execution: String },
    /// A fire of a schedule: which kind and target, and the schedule's index among the
    /// target's (`workflow:12/0`, `task:backup/1`).
    Schedule { schedule: String },
    /// The server itself.
    System,
}

impl Origin {
    /// The audit family of events of this origin. Workflow steps and scheduled runs belong to
    /// the workflow engine, MDRM; the origin names which execution or schedule.
    pub fn family(&self) -> Family {
        match self {
            Origin::Api(f) => *f,
            Origin::Console => Family::Console,
            Origin::Workflow { .. } | Origin::Schedule { .. } => Family::Mdrm,
            Origin::System => Family::System,
        }
    }

    /// What an event's `detail.origin` says, for origins a family alone does not name:
    /// `workflow:<execution id>`, `schedule:<kind>:<target>/<index>`; `None` for a plain
    /// request, the console and the server (their family says it all).
    pub fn label(&self) -> Option<String> {
        match self {
            Origin::Workflow { execution } => Some(format!("workflow:{execution}")),
            Origin::Schedule { schedule } => Some(format!("schedule:{schedule}")),
            Origin::Api(_) | Origin::Console | Origin::System => None,
        }
    }
}

/// An event to append. `family` is the API family, `action` a dotted verb (`user.create`,
/// `auth.login`), `origin` what a workflow execution or schedule adds to that (see
/// [`Origin::label`]).
#[derive(Debug, Clone)]
pub struct Event {
    pub user: Option<String>,
    pub source_ip: Option<String>,
    pub family: Family,
    pub action: String,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub detail: Detail,
    pub origin: Option<String>,
}

/// An event's detail: a JSON value, or JSON text a high-rate producer serialized itself
/// (straight from a borrowed struct, without building a map first).
#[derive(Debug, Clone)]
pub enum Detail {
    Value(serde_json::Value),
    Json(String),
}

impl Detail {
    fn to_json(&self) -> Result<String> {
        match self {
            Detail::Value(v) => Ok(serde_json::to_string(v)?),
            Detail::Json(s) => Ok(s.clone()),
        }
    }

    /// The JSON text, with `"origin"` set when there is one. The origin lives inside the
    /// detail so that the hashed fields (and the stored columns) stay what they always were:
    /// events written before origins existed verify as they did.
    fn to_json_with(&self, origin: Option<&str>) -> Result<String> {
        let Some(origin) = origin else {
            return self.to_json();
        };
        let mut value = match self {
            Detail::Value(v) => v.clone(),
            Detail::Json(s) => serde_json::from_str(s)?,
        };
        match &mut value {
            // An engine's own, more precise `origin` (a task instance's
            // `EXEC_.../step/attempt`) is kept.
            serde_json::Value::Object(map) => {
                map.entry("origin").or_insert_with(|| origin.into());
            }
            other => {
                let inner = std::mem::take(other);
                *other = serde_json::json!({ "value": inner, "origin": origin });
            }
        }
        Ok(serde_json::to_string(&value)?)
    }
}

impl Event {
    pub fn new(family: Family, action: impl Into<String>) -> Self {
        Event {
            user: None,
            source_ip: None,
            family,
            action: action.into(),
            target: None,
            outcome: Outcome::Success,
            detail: Detail::Value(serde_json::Value::Object(Default::default())),
            origin: None,
        }
    }

    /// An event of `origin`'s family, with the origin recorded in its detail when it names
    /// more than the family (a workflow execution, a schedule).
    pub fn through(origin: &Origin, action: impl Into<String>) -> Self {
        let mut e = Event::new(origin.family(), action);
        e.origin = origin.label();
        e
    }

    pub fn by(mut self, user: impl Into<String>, ip: Option<String>) -> Self {
        self.user = Some(user.into());
        self.source_ip = ip;
        self
    }

    /// Records `origin` in the detail when it names more than the family (see
    /// [`Origin::label`]); the family stays as it is.
    pub fn with_origin(mut self, origin: &Origin) -> Self {
        self.origin = origin.label();
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Detail::Value(detail);
        self
    }

    /// The detail as `detail`'s JSON serialization.
    pub fn detail_of<T: Serialize>(mut self, detail: &T) -> Result<Self> {
        self.detail = Detail::Json(serde_json::to_string(detail)?);
        Ok(self)
    }
}

/// An event as stored.
#[derive(Debug, Clone, Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct StoredEvent {
    pub seq: i64,
    pub at: i64,
    pub user_id: Option<String>,
    pub source_ip: Option<String>,
    pub family: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The hash of one event: SHA-256 over each field, length-prefixed so no two different events
/// encode the same bytes.
pub fn event_hash(e: &StoredEvent) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(&e.seq.to_be_bytes());
    field(&e.at.to_be_bytes());
    field(e.user_id.as_deref().unwrap_or("\u{0}").as_bytes());
    field(e.source_ip.as_deref().unwrap_or("\u{0}").as_bytes());
    field(e.family.as_bytes());
    field(e.action.as_bytes());
    field(e.target.as_deref().unwrap_or("\u{0}").as_bytes());
    field(e.outcome.as_bytes());
    field(e.detail.as_bytes());
    field(e.prev_hash.as_bytes());
    hex::encode(h.finalize())
}

/// Appends `event` inside `tx`. The head row is locked until `tx` ends, so concurrent appends
/// (from this server or another on the same PostgreSQL) form one chain.
pub async fn append(tx: &mut Tx, event: Event) -> Result<i64> {
    append_slice(tx, std::slice::from_ref(&event)).await
}

/// Appends `events` inside `tx`, in order, as consecutive links of the one chain: the head is
/// read (and on PostgreSQL locked) once, the hashes are chained in memory, and the rows go in
/// with multi-row inserts. Returns the sequence number of the last event (the head's when
/// `events` is empty). Same guarantees as [`append`], for a fraction of the round trips.
pub async fn append_many(tx: &mut Tx, events: Vec<Event>) -> Result<i64> {
    append_slice(tx, &events).await
}

/// [`append_many`] for borrowed events (a caller that may retry keeps them).
pub async fn append_slice<E: std::borrow::Borrow<Event>>(tx: &mut Tx, events: &[E]) -> Result<i64> {
    let head = read_head(tx).await?;
    if events.is_empty() {
        return Ok(head.seq);
    }
    let stored = chain(&head, events)?;
    insert_rows(tx, &stored).await?;
    let new_head = head_of(&stored, head);
    set_head(tx, &new_head, None).await?;
    Ok(new_head.seq)
}

/// The end of the chain: the last event's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// [`append_slice`] for a writer that remembers where the chain ended after its own last
/// append (`hint`): the head is then moved with one conditional `UPDATE` instead of being read
/// first, which saves a round trip per transaction while this writer is the only one appending.
/// When someone else appended in between (another transaction, another server), the update
/// matches nothing, and the head is read (and locked) and the chain computed again, exactly as
/// [`append_slice`] does. Returns the new head, the hint for the next call.
pub async fn append_after<E: std::borrow::Borrow<Event>>(
    tx: &mut Tx,
    events: &[E],
    hint: Option<&Head>,
) -> Result<Head> {
    if let Some(hint) = hint {
        if !events.is_empty() {
            let stored = chain(hint, events)?;
            let new_head = head_of(&stored, hint.clone());
            if tx.backend() == Backend::Sqlite && stored.len() <= SQLITE_ROWS {
                if move_head_and_insert(tx, &stored, &new_head, hint).await? {
                    return Ok(new_head);
                }
            // The conditional update also takes the head's row lock on PostgreSQL (and SQLite's
            // write lock is held since BEGIN IMMEDIATE): nobody can append between it and the
            // inserts.
            } else if set_head(tx, &new_head, Some(hint)).await? {
                insert_rows(tx, &stored).await?;
                return Ok(new_head);
            }
        }
    }
    let head = read_head(tx).await?;
    if events.is_empty() {
        return Ok(head);
    }
    let stored = chain(&head, events)?;
    insert_rows(tx, &stored).await?;
    let new_head = head_of(&stored, head);
    set_head(tx, &new_head, None).await?;
    Ok(new_head)
}

/// Reads the head, locking it on PostgreSQL until `tx` ends (SQLite's write transactions are
/// `BEGIN IMMEDIATE`: the lock is already held).
async fn read_head(tx: &mut Tx) -> Result<Head> {
    let lock = match tx.backend() {
        Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
    };
    let (seq, hash): (i64, String) = in_tx!(tx, |c| sqlx::query_as(lock).fetch_one(&mut *c).await)?;
    Ok(Head { seq, hash })
}

/// Moves the head to `to`; with `from`, only if the head is still `from` (false when not).
async fn set_head(tx: &mut Tx, to: &Head, from: Option<&Head>) -> Result<bool> {
    let changed = match from {
        None => in_tx!(tx, |c| sqlx::query(
            "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1"
        )
        .bind(to.seq)
        .bind(&to.hash)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?,
        Some(from) => in_tx!(tx, |c| sqlx::query(
            "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3 AND hash = $4"
        )
        .bind(to.seq)
        .bind(&to.hash)
        .bind(from.seq)
        .bind(&from.hash)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?,
    };
    Ok(changed == 1)
}

/// The head after `stored` (or `head` itself when nothing is stored).
fn head_of(stored: &[StoredEvent], head: Head) -> Head {
    match stored.last() {
        Some(e) => Head {
            seq: e.seq,
            hash: e.hash.clone(),
        },
        None => head,
    }
}

/// `events` as the links after `head`, their hashes chained in memory.
fn chain<E: std::borrow::Borrow<Event>>(head: &Head, events: &[E]) -> Result<Vec<StoredEvent>> {
    chain_at(head, events, None)
}

/// [`chain`] with each event's time given (`ats`, as many as `events`: events spooled before
/// a crash keep the time they were answered at); `None`: now.
fn chain_at<E: std::borrow::Borrow<Event>>(
    head: &Head,
    events: &[E],
    ats: Option<&[i64]>,
) -> Result<Vec<StoredEvent>> {
    let now = time::now_ms();
    let mut prev = head.hash.clone();
    let mut stored = Vec::with_capacity(events.len());
    for (i, (seq, event)) in (head.seq + 1..).zip(events).enumerate() {
        let event: &Event = event.borrow();
        let mut e = StoredEvent {
            seq,
            at: ats.and_then(|a| a.get(i).copied()).unwrap_or(now),
            user_id: event.user.as_deref().map(cut),
            source_ip: event.source_ip.as_deref().map(cut),
            family: event.family.as_str().to_owned(),
            action: cut(&event.action),
            target: event.target.as_deref().map(cut),
            outcome: event.outcome.as_str().to_owned(),
            detail: event.detail.to_json_with(event.origin.as_deref())?,
            prev_hash: prev,
            hash: String::new(),
        };
        e.hash = event_hash(&e);
        prev = e.hash.clone();
        stored.push(e);
    }
    Ok(stored)
}

/// Rows per INSERT on SQLite (11 parameters each): every statement is a round trip to sqlx's
/// SQLite thread; the parameters are anonymous (see [`rows_sql`]), so binding is linear in their
/// number, and 128 rows stay far below SQLite's limit of 32,766 parameters.
const SQLITE_ROWS: usize = 128;

/// The columns of `audit_events` an append writes, in the order [`bind_rows`] binds them.
const INSERT_COLS: &str =
    "INSERT INTO audit_events (seq, at, user_id, source_ip, family, action, target, outcome, detail, prev_hash, hash) ";

/// `VALUES (..), (..)` for `rows` events: anonymous `?` parameters when `anonymous` (SQLite:
/// for a numbered one, `$n`, binding looks its name up by a linear scan,
/// `sqlite3_bind_parameter_name`, quadratic in the parameter count), `$n` otherwise.
fn rows_sql(sql: &mut String, rows: usize, anonymous: bool) {
    sql.push_str("VALUES ");
    for i in 0..rows {
        let b = i * 11;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for k in 1..=11 {
            if k > 1 {
                sql.push_str(", ");
            }
            if anonymous {
                sql.push('?');
            } else {
                sql.push('$');
                sql.push_str(&(b + k).to_string());
            }
        }
        sql.push(')');
    }
}

/// Binds the columns of `rows` in [`INSERT_COLS`] order.
fn bind_rows<'q, DB: sqlx::Database>(
    mut q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    rows: &'q [StoredEvent],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for e in rows {
        q = q
            .bind(e.seq)
            .bind(e.at)
            .bind(&e.user_id)
            .bind(&e.source_ip)
            .bind(&e.family)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.outcome)
            .bind(&e.detail)
            .bind(&e.prev_hash)
            .bind(&e.hash);
    }
    q
}

/// Inserts chained events with multi-row inserts.
async fn insert_rows(tx: &mut Tx, stored: &[StoredEvent]) -> Result<()> {
    // Rows per INSERT: every statement is a round trip (to PostgreSQL, or to sqlx's SQLite
    // thread).
    let (rows, anonymous) = match tx.backend() {
        Backend::Postgres => (64, false),
        Backend::Sqlite => (SQLITE_ROWS, true),
    };
    for chunk in stored.chunks(rows) {
        let mut sql = String::from(INSERT_COLS);
        rows_sql(&mut sql, chunk.len(), anonymous);
        in_tx!(tx, |c| bind_rows(sqlx::query(&sql), chunk)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// On SQLite, moves the head from `from` to `to` and inserts `stored` (at most
/// [`SQLITE_ROWS`]) in one round trip to the connection's thread: the conditional `UPDATE` and
/// an `INSERT` that adds the rows only if that update changed the head (`changes()`), sent as
/// one query. False, with nothing changed, when the head was no longer `from`.
async fn move_head_and_insert(
    tx: &mut Tx,
    stored: &[StoredEvent],
    to: &Head,
    from: &Head,
) -> Result<bool> {
    let TxConn::Sqlite(c) = tx.conn() else {
        return Err(Error::internal("move_head_and_insert is for SQLite"));
    };
    let mut sql = String::from(
        "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1 AND seq = ? AND hash = ?; ",
    );
    sql.push_str(INSERT_COLS);
    sql.push_str("SELECT * FROM (");
    rows_sql(&mut sql, stored.len(), true);
    sql.push_str(") WHERE changes() = 1");
    let q = sqlx::query(&sql)
        .bind(to.seq)
        .bind(&to.hash)
        .bind(from.seq)
        .bind(&from.hash);
    // The two statements' changes, summed: the head and every row, or nothing.
    let changed = bind_rows(q, stored).execute(&mut *c).await?.rows_affected();
    match changed {
        0 => Ok(false),
        n if n == stored.len() as u64 + 1 => Ok(true),
        n => Err(Error::internal(format!(
            "appending {} audit events changed {n} rows",
            stored.len()
        ))),
    }
}

/// Appends one event in a transaction of its own (for events that record no other change,
/// such as a failed login or a value read).
pub async fn record(store: &Store, event: Event) -> Result<i64> {
    let mut tx = store.begin().await?;
    let seq = append(&mut tx, event).await?;
    tx.commit().await?;
    Ok(seq)
}

/// Filters for [`query`], [`page`] and [`count`]; all optional, combined with AND.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub user: Option<String>,
    /// An action (`auth.login`), or a prefix of dotted actions (`user` matches `user.create`).
    pub action: Option<String>,
    /// The API family (`admin`, `gateway`, ...), exact.
    pub family: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<String>,
    /// The target, exact; or every target starting with it when it ends in `*`.
    pub target: Option<String>,
    /// A gateway session's id (`detail.session` of its `db.connect` and `db.statement` events).
    pub session: Option<String>,
    /// Keyset paging: only events older than this sequence number.
    pub before: Option<i64>,
    /// Keyset paging: only events newer than this sequence number (the page nearest to it).
    pub after: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

/// One bound value of a dynamically built condition.
enum Arg {
    Int(i64),
    Text(String),
}

/// The `WHERE` condition of `f` (without paging) and its arguments, numbered from `$1`.
fn condition(f: &Filter) -> (String, Vec<Arg>) {
    let mut cond: Vec<String> = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    let push = |args: &mut Vec<Arg>, a: Arg| {
        args.push(a);
        format!("${}", args.len())
    };
    if let Some(v) = f.from_ms {
        cond.push(format!("at >= {}", push(&mut args, Arg::Int(v))));
    }
    if let Some(v) = f.to_ms {
        cond.push(format!("at <= {}", push(&mut args, Arg::Int(v))));
    }
    if let Some(v) = &f.user {
        cond.push(format!(
            "user_id = {}",
            push(&mut args, Arg::Text(v.clone()))
        ));
    }
    if let Some(v) = &f.action {
        let exact = push(&mut args, Arg::Text(v.clone()));
        let prefix = push(
            &mut args,
            Arg::Text(format!("{}.%", haechi_store::like_escape(v))),
        );
        cond.push(format!(
            "(action = {exact} OR action LIKE {prefix} ESCAPE '\\')"
        ));
    }
    if let Some(v) = &f.family {
        cond.push(format!(
            "family = {}",
            push(&mut args, Arg::Text(v.clone()))
        ));
    }
    if let Some(v) = &f.outcome {
        cond.push(format!(
            "outcome = {}",
            push(&mut args, Arg::Text(v.clone()))
        ));
    }
    if let Some(v) = &f.target {
        match v.strip_suffix('*') {
            Some(prefix) => {
                let p = push(
                    &mut args,
                    Arg::Text(format!("{}%", haechi_store::like_escape(prefix))),
                );
                cond.push(format!("target LIKE {p} ESCAPE '\\'"));
            }
            None => cond.push(format!(
                "target = {}",
                push(&mut args, Arg::Text(v.clone()))
            )),
        }
    }
    if let Some(v) = &f.session {
        // The detail is the JSON the gateway wrote (`"session":"<16 hex digits>"`).
        let p = push(
            &mut args,
            Arg::Text(format!(
                "%\"session\":\"{}\"%",
                haechi_store::like_escape(v)
            )),
        );
        cond.push(format!(
            "family = 'gateway' AND detail LIKE {p} ESCAPE '\\'"
        ));
    }
    if let Some(v) = f.before {
        cond.push(format!("seq < {}", push(&mut args, Arg::Int(v))));
    }
    if let Some(v) = f.after {
        cond.push(format!("seq > {}", push(&mut args, Arg::Int(v))));
    }
    let cond = if cond.is_empty() {
        "1 = 1".to_owned()
    } else {
        cond.join(" AND ")
    };
    (cond, args)
}

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_str()),
            };
        }
        q
    }};
}

const EVENT_COLS: &str =
    "seq, at, user_id, source_ip, family, action, target, outcome, detail, prev_hash, hash";

/// One page of events matching `f`, newest first: `limit` events from `offset`, older than
/// `before`, or (with `after`) the `limit` events just newer than `after`. Keyset paging by
/// sequence number (`before`/`after`) costs the same on the millionth page as on the first.
pub async fn page(store: &Store, f: &Filter) -> Result<Vec<StoredEvent>> {
    settle().await;
    page_settled(store, f).await
}

/// [`page`] once the spools have settled.
async fn page_settled(store: &Store, f: &Filter) -> Result<Vec<StoredEvent>> {
    let (cond, mut args) = condition(f);
    let ascending = f.after.is_some() && f.before.is_none();
    let n = args.len();
    args.push(Arg::Int(f.limit));
    args.push(Arg::Int(f.offset));
    let sql = format!(
        "SELECT {EVENT_COLS} FROM audit_events WHERE {cond} ORDER BY seq {} LIMIT ${} OFFSET ${}",
        if ascending { "ASC" } else { "DESC" },
        n + 1,
        n + 2
    );
    let mut events: Vec<StoredEvent> = read!(store, |db| bind_all!(sqlx::query_as(&sql), &args)
        .fetch_all(db)
        .await)?;
    if ascending {
        events.reverse();
    }
    Ok(events)
}

/// How many events match `f` (paging fields ignored).
pub async fn count(store: &Store, f: &Filter) -> Result<i64> {
    settle().await;
    count_settled(store, f).await
}

/// [`count`] once the spools have settled.
async fn count_settled(store: &Store, f: &Filter) -> Result<i64> {
    let f = Filter {
        before: None,
        after: None,
        ..f.clone()
    };
    let (cond, args) = condition(&f);
    let sql = format!("SELECT COUNT(*) FROM audit_events WHERE {cond}");
    Ok(read!(store, |db| bind_all!(
        sqlx::query_scalar(&sql),
        &args
    )
    .fetch_one(db)
    .await)?)
}

/// Events matching `f`, newest first, and how many match in all.
pub async fn query(store: &Store, f: &Filter) -> Result<(Vec<StoredEvent>, i64)> {
    settle().await;
    let events = page_settled(store, f).await?;
    let total = count_settled(store, f).await?;
    Ok((events, total))
}

/// The head row (`seq`, `hash`; `None` when the row is missing) and the newest stored event's
/// `seq`: a quick consistency look (`haechi doctor`); [`verify`] checks every link.
pub async fn head_and_newest(store: &Store) -> Result<(Option<(i64, String)>, Option<i64>)> {
    settle().await;
    let head: Option<(i64, String)> = read!(store, |db| sqlx::query_as(
        "SELECT seq, hash FROM audit_head WHERE id = 1"
    )
    .fetch_optional(db)
    .await)?;
    let newest: Option<i64> = read!(store, |db| sqlx::query_scalar(
        "SELECT MAX(seq) FROM audit_events"
    )
    .fetch_one(db)
    .await)?;
    Ok((head, newest))
}

/// One event by its sequence number.
pub async fn get(store: &Store, seq: i64) -> Result<StoredEvent> {
    settle().await;
    let sql = format!("SELECT {EVENT_COLS} FROM audit_events WHERE seq = $1");
    let e: Option<StoredEvent> = read!(store, |db| sqlx::query_as(&sql)
        .bind(seq)
        .fetch_optional(db)
        .await)?;
    e.ok_or_else(|| Error::not_found(format_args!("audit event {seq}")))
}

/// The action of the event that records a check of the chain.
pub const VERIFY_ACTION: &str = "audit.verify";

/// Checks the chain now and records the result as an event of its own (`audit.verify`, by
/// `by`, family `family`), so when the chain was last checked, by whom, and what was found
/// are themselves part of the chain.
pub async fn verify_and_record(
    store: &Store,
    family: Family,
    by: Option<(&str, String)>,
) -> Result<Verification> {
    let v = verify(store).await?;
    let mut e = Event::new(family, VERIFY_ACTION)
        .target("audit-log")
        .outcome(if v.broken.is_some() {
            Outcome::Failure
        } else {
            Outcome::Success
        })
        .detail(serde_json::json!({
            "checked": v.checked,
            "brokenSeq": v.broken.as_ref().map(|b| b.seq),
            "reason": v.broken.as_ref().map(|b| b.reason.clone()),
        }));
    if let Some((user, ip)) = by {
        e = e.by(user, Some(ip));
    }
    record(store, e).await?;
    Ok(v)
}

/// The newest recorded check of the chain (see [`verify_and_record`]), if any.
pub async fn last_verification(store: &Store) -> Result<Option<StoredEvent>> {
    let sql = format!(
        "SELECT {EVENT_COLS} FROM audit_events WHERE action = $1 ORDER BY seq DESC LIMIT 1"
    );
    Ok(read!(store, |db| sqlx::query_as(&sql)
        .bind(VERIFY_ACTION)
        .fetch_optional(db)
        .await)?)
}

/// The result of checking the chain.
#[derive(Debug, Clone)]
pub struct Verification {
    /// Events checked.
    pub checked: i64,
    /// The first broken link, if any.
    pub broken: Option<Broken>,
}

/// Where and how the chain breaks.
#[derive(Debug, Clone)]
pub struct Broken {
    /// The sequence number of the first event that does not verify.
    pub seq: i64,
    pub reason: String,
}

/// Walks the whole chain, oldest first, in pages.
pub async fn verify(store: &Store) -> Result<Verification> {
    settle().await;
    const PAGE: i64 = 1000;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_owned();
    let mut checked = 0i64;
    let mut after = 0i64;
    // The head first: events appended while this runs (after it) are not judged, and every
    // event up to it is committed, since the head moves in the transaction that appends.
    let (head_seq, head_hash): (i64, String) = read!(store, |db| sqlx::query_as(
        "SELECT seq, hash FROM audit_head WHERE id = 1"
    )
    .fetch_one(db)
    .await)?;
    loop {
        let page: Vec<StoredEvent> = read!(store, |db| {
            sqlx::query_as(
            "SELECT seq, at, user_id, source_ip, family, action, target, outcome, detail, prev_hash, hash \
             FROM audit_events WHERE seq > $1 AND seq <= $3 ORDER BY seq LIMIT $2"
        )
        .bind(after)
        .bind(PAGE)
        .bind(head_seq)
        .fetch_all(db)
        .await
        })?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            let broken = |reason: String| Verification {
                checked,
                broken: Some(Broken {
                    seq: expected_seq,
                    reason,
                }),
            };
            if e.seq != expected_seq {
                return Ok(broken(format!(
                    "event {expected_seq} is missing (the next stored event is {})",
                    e.seq
                )));
            }
            if e.prev_hash != prev {
                return Ok(broken(format!(
                    "event {} does not follow event {}: its link to the previous hash is wrong (moved or reordered)",
                    e.seq,
                    e.seq - 1
                )));
            }
            if event_hash(e) != e.hash {
                return Ok(broken(format!(
                    "event {} was modified: its content does not match its hash",
                    e.seq
                )));
            }
            prev = e.hash.clone();
            expected_seq += 1;
            checked += 1;
        }
    }
    if head_seq != checked || head_hash != prev {
        let seq = checked + 1;
        return Ok(Verification {
            checked,
            broken: Some(Broken {
                seq,
                reason: if head_seq > checked {
                    format!(
                        "events {seq} to {head_seq} are missing: the log ends at {checked} but {head_seq} were written"
                    )
                } else {
                    "the chain head does not match the last event".to_owned()
                },
            }),
        });
    }
    if checked == 0 && head_hash != GENESIS {
        return Err(Error::internal("audit head is corrupt"));
    }
    // Events beyond the head that no append wrote: the newest stored event first, then the
    // head again (it only moves forward, together with the event it records).
    let (newest,): (Option<i64>,) = read!(store, |db| sqlx::query_as(
        "SELECT max(seq) FROM audit_events"
    )
    .fetch_one(db)
    .await)?;
    let (head_now,): (i64,) = read!(store, |db| sqlx::query_as(
        "SELECT seq FROM audit_head WHERE id = 1"
    )
    .fetch_one(db)
    .await)?;
    if let Some(newest) = newest.filter(|n| *n > head_now) {
        return Ok(Verification {
            checked,
            broken: Some(Broken {
                seq: head_now + 1,
                reason: format!(
                    "events {} to {newest} are stored after the chain head ({head_now}): they were not appended through the log",
                    head_now + 1
                ),
            }),
        });
    }
    Ok(Verification {
        checked,
        broken: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A SQLite store in `dir` (also for the batcher's tests).
    pub(crate) async fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&haechi_store::StoreOptions::sqlite(
            dir.path().join("audit.db"),
        ))
        .await
        .unwrap()
    }

    fn events(n: usize, action: &str) -> Vec<Event> {
        (0..n).map(|_| Event::new(Family::Admin, action)).collect()
    }

    async fn append_hinted(store: &Store, n: usize, hint: Option<&Head>) -> Head {
        let mut tx = store.begin().await.unwrap();
        let head = append_after(&mut tx, &events(n, "hinted"), hint)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        head
    }

    /// The filters combine with AND, keyset paging walks every event once in either
    /// direction, and a session id finds the gateway events that carry it.
    #[tokio::test]
    async fn filters_and_keyset_paging() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let mut tx = store.begin().await.unwrap();
        let mut evs = Vec::new();
        for i in 0..25 {
            let mut e = Event::new(if i % 2 == 0 { Family::Gateway } else { Family::Admin }, "db.statement")
                .by(if i % 3 == 0 { "kim" } else { "lee" }, None)
                .target(format!("db-target:t{}", i % 4))
                .detail(serde_json::json!({ "session": if i < 10 { "00000000000000aa" } else { "00000000000000bb" } }));
            if i % 5 == 0 {
                e = e.outcome(Outcome::Denied);
            }
            evs.push(e);
        }
        evs.push(Event::new(Family::Admin, "db.statement.other").by("kim", None));
        evs.push(Event::new(Family::Admin, "dbx").by("kim", None));
        append_many(&mut tx, evs).await.unwrap();
        tx.commit().await.unwrap();
        let f = |build: &dyn Fn(&mut Filter)| {
            let mut f = Filter {
                limit: 100,
                ..Default::default()
            };
            build(&mut f);
            f
        };
        let n = |fl: Filter| {
            let store = store.clone();
            async move { count(&store, &fl).await.unwrap() }
        };
        assert_eq!(n(f(&|f| f.action = Some("db.statement".into()))).await, 26);
        assert_eq!(
            n(f(&|f| f.action = Some("db".into()))).await,
            26,
            "a prefix is dotted"
        );
        assert_eq!(n(f(&|f| f.family = Some("gateway".into()))).await, 13);
        assert_eq!(n(f(&|f| f.outcome = Some("denied".into()))).await, 5);
        assert_eq!(n(f(&|f| f.target = Some("db-target:t1".into()))).await, 6);
        assert_eq!(n(f(&|f| f.target = Some("db-target:*".into()))).await, 25);
        assert_eq!(
            n(f(&|f| f.target = Some("db-target:%".into()))).await,
            0,
            "% is literal"
        );
        assert_eq!(
            n(f(&|f| {
                f.user = Some("kim".into());
                f.family = Some("gateway".into());
            }))
            .await,
            5
        );
        assert_eq!(
            n(f(&|f| f.session = Some("00000000000000aa".into()))).await,
            5
        );
        // Keyset: pages of 4, older then newer, every event once.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let p = page(
                &store,
                &f(&|f| {
                    f.limit = 4;
                    f.before = before;
                }),
            )
            .await
            .unwrap();
            if p.is_empty() {
                break;
            }
            assert!(p.windows(2).all(|w| w[0].seq > w[1].seq));
            before = p.last().map(|e| e.seq);
            seen.extend(p.iter().map(|e| e.seq));
        }
        assert_eq!(seen, (1..=27).rev().collect::<Vec<_>>());
        let newer = page(
            &store,
            &f(&|f| {
                f.limit = 3;
                f.after = Some(10);
            }),
        )
        .await
        .unwrap();
        assert_eq!(
            newer.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![13, 12, 11]
        );
        assert_eq!(get(&store, 12).await.unwrap().seq, 12);
        assert_eq!(
            get(&store, 999).await.unwrap_err().code,
            haechi_types::Code::NotFound
        );
        // A check of the chain is itself recorded, and is the last one.
        assert!(last_verification(&store).await.unwrap().is_none());
        let v = verify_and_record(&store, Family::Admin, Some(("kim", "10.0.0.1".into())))
            .await
            .unwrap();
        assert!(v.broken.is_none());
        let last = last_verification(&store).await.unwrap().unwrap();
        assert_eq!(last.user_id.as_deref(), Some("kim"));
        assert!(last.detail.contains("\"checked\":27"), "{}", last.detail);
    }

    /// A writer's remembered head is used while it is right and ignored once another
    /// transaction has appended: the chain stays one unbroken chain either way.
    #[tokio::test]
    async fn a_stale_head_hint_falls_back_to_reading_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let first = append_hinted(&store, 3, None).await;
        let second = append_hinted(&store, 2, Some(&first)).await;
        assert_eq!(second.seq, first.seq + 2);

        // Someone else appends: the hint `second` is now stale.
        record(&store, Event::new(Family::Admin, "other"))
            .await
            .unwrap();
        let third = append_hinted(&store, 4, Some(&second)).await;
        assert_eq!(third.seq, second.seq + 5, "the other event keeps its place");

        // A hint that never was the head (wrong hash) is not trusted either.
        let forged = Head {
            seq: third.seq,
            hash: "0".repeat(64),
        };
        let fourth = append_hinted(&store, 1, Some(&forged)).await;
        assert_eq!(fourth.seq, third.seq + 1);

        // More events than one statement takes on SQLite (several inserts), then a single one
        // again, each with the right hint.
        let fifth = append_hinted(&store, SQLITE_ROWS * 2 + 3, Some(&fourth)).await;
        assert_eq!(fifth.seq, fourth.seq + SQLITE_ROWS as i64 * 2 + 3);
        let sixth = append_hinted(&store, 1, Some(&fifth)).await;
        assert_eq!(sixth.seq, fifth.seq + 1);
        let fourth = sixth;

        let v = verify(&store).await.unwrap();
        assert_eq!(v.checked, fourth.seq);
        assert!(v.broken.is_none(), "chain broken: {:?}", v.broken);
        let head: (i64, String) = read!(store, |db| sqlx::query_as(
            "SELECT seq, hash FROM audit_head WHERE id = 1"
        )
        .fetch_one(db)
        .await)
        .unwrap();
        assert_eq!(head, (fourth.seq, fourth.hash));
    }

    /// Every family's string is the one stored before the enum existed, and parses back.
    #[test]
    fn family_strings_are_the_stored_ones() {
        let names: Vec<&str> = Family::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(
            names,
            ["admin", "console", "mdrm", "opmate", "dbsafer", "vault", "gateway", "system"]
        );
        for f in Family::ALL {
            assert_eq!(Family::parse(f.as_str()), Some(f));
        }
        assert_eq!(Family::parse("workflow"), None);
    }

    /// An origin a family does not name goes into the detail (next to what was there, JSON
    /// value or JSON text), is hashed with it, and the chain verifies; a plain request's event
    /// is stored exactly as before.
    #[tokio::test]
    async fn origins_are_recorded_in_the_detail() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let run = Origin::Workflow {
            execution: "EXEC_20261206_0001".into(),
        };
        assert_eq!(run.family(), Family::Mdrm);
        let fire = Origin::Schedule {
            schedule: "workflow:12/0".into(),
        };
        let api = Origin::Api(Family::Dbsafer);
        let events = vec![
            Event::through(&run, "dbpolicy.unlock").detail(serde_json::json!({ "index": 7 })),
            Event::through(&fire, "workflow.execute")
                .detail_of(&serde_json::json!({ "wf_id": "12" }))
                .unwrap(),
            Event::through(&api, "dbpolicy.lock").detail(serde_json::json!({ "index": 7 })),
            Event::new(Family::Opmate, "schedule.skip").with_origin(&fire),
            Event::through(&run, "task.instance.create")
                .detail(serde_json::json!({ "origin": "EXEC_20261206_0001/s/1" })),
        ];
        let mut tx = store.begin().await.unwrap();
        append_many(&mut tx, events).await.unwrap();
        tx.commit().await.unwrap();
        let (stored, _) = query(
            &store,
            &Filter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let by_action = |a: &str| stored.iter().find(|e| e.action == a).unwrap().clone();
        let detail =
            |e: &StoredEvent| -> serde_json::Value { serde_json::from_str(&e.detail).unwrap() };

        let unlock = by_action("dbpolicy.unlock");
        assert_eq!(unlock.family, "mdrm");
        assert_eq!(
            detail(&unlock),
            serde_json::json!({ "index": 7, "origin": "workflow:EXEC_20261206_0001" })
        );
        let fired = by_action("workflow.execute");
        assert_eq!(fired.family, "mdrm");
        assert_eq!(detail(&fired)["origin"], "schedule:workflow:12/0");
        assert_eq!(detail(&fired)["wf_id"], "12");
        let lock = by_action("dbpolicy.lock");
        assert_eq!(lock.family, "dbsafer");
        assert_eq!(lock.detail, r#"{"index":7}"#);
        let skip = by_action("schedule.skip");
        assert_eq!(skip.family, "opmate");
        assert_eq!(detail(&skip)["origin"], "schedule:workflow:12/0");
        let instance = by_action("task.instance.create");
        assert_eq!(instance.family, "mdrm");
        assert_eq!(
            detail(&instance)["origin"],
            "EXEC_20261206_0001/s/1",
            "the engine's own kept"
        );

        let v = verify(&store).await.unwrap();
        assert!(v.broken.is_none(), "chain broken: {:?}", v.broken);
    }
}
