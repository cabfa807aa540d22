//! MySQL / MariaDB classification.
//!
//! The text is first lexed the way the server lexes it (its version, MariaDB or MySQL, and
//! the session's `sql_mode` quoting rules): comments are dropped, executable comments
//! (`/*! ... */`, `/*!50000 ... */`, MariaDB's `/*M! ... */`) that the server would run are
//! kept as code and the others dropped, and every string literal and quoted identifier is
//! re-written in one canonical quoting. What the SQL parser then sees is exactly what the server
//! will run, so comment, quoting and escape tricks cannot hide a statement from it. The parsed
//! statements are mapped to privileges (the table in `docs/dbgate.md`).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::OnceLock;

use sqlparser::ast::{
    AlterTableOperation, Expr, ObjectName, ObjectType, OnInsert, Set, SetExpr, Statement, Visit,
    Visitor,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::{Classification, Needs};
use crate::privilege::{PrivSet, Privilege as P};

/// Which server the text is for, and how the session quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    pub mariadb: bool,
    /// `MMmmpp` as the server compares executable-comment versions (10.11.6 → 101106,
    /// 8.0.34 → 80034).
    pub version: u32,
    /// `sql_mode` has `ANSI_QUOTES`: `"..."` is an identifier.
    pub ansi_quotes: bool,
    /// `sql_mode` has `NO_BACKSLASH_ESCAPES`.
    pub no_backslash_escapes: bool,
}

impl Default for Flavor {
    fn default() -> Self {
        Flavor {
            mariadb: true,
            version: 101100,
            ansi_quotes: false,
            no_backslash_escapes: false,
        }
    }
}

impl Flavor {
    /// From the server's handshake version string (`5.5.5-10.11.6-MariaDB-0+deb12u1`,
    /// `8.0.34`).
    pub fn from_server_version(v: &str) -> Flavor {
        let mariadb = v.contains("MariaDB");
        let core = v.strip_prefix("5.5.5-").unwrap_or(v);
        let mut nums = core
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().unwrap_or(0));
        let (a, b, c) = (
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
        );
        Flavor {
            mariadb,
            version: a * 10000 + b.min(99) * 100 + c.min(99),
            ansi_quotes: false,
            no_backslash_escapes: false,
        }
    }

    /// Applies a `sql_mode` value.
    pub fn with_sql_mode(mut self, mode: &str) -> Flavor {
        let m = mode.to_ascii_uppercase();
        self.ansi_quotes = m
            .split(',')
            .any(|x| x.trim() == "ANSI_QUOTES" || x.trim() == "ANSI");
        self.no_backslash_escapes = m.split(',').any(|x| x.trim() == "NO_BACKSLASH_ESCAPES");
        self
    }
}

/// Character sets whose multi-byte characters can end in `\` or `'` (the classic escaping
/// bypass); the gateway refuses to speak them.
pub const UNSAFE_CHARSETS: &[&str] =
    &["big5", "sjis", "gbk", "cp932", "gb18030", "eucjpms", "ujis"];

/// Classifies a statement string for `flavor`. `prepared` answers what a name given to SQL
/// `PREPARE` earlier in the session needs.
pub fn classify(
    sql: &str,
    flavor: Flavor,
    prepared: &dyn Fn(&str) -> Option<PrivSet>,
) -> Classification {
    let pieces = match canonicalize(sql, flavor) {
        Ok(c) => c,
        Err(why) => return Classification::unclassifiable(why),
    };
    if pieces.is_empty() {
        return Classification::unclassifiable("the statement string is empty");
    }
    let mut out = Classification::needs(PrivSet::EMPTY, pieces.len());
    let mut needs = Needs(PrivSet::EMPTY, false);
    for piece in &pieces {
        if let Err(why) = piece_needs(piece, pieces.len(), flavor, &mut needs, &mut out, prepared) {
            return Classification::unclassifiable(why);
        }
    }
    out.needs = needs.0;
    if out.flags.lexer_change {
        out.needs.add(P::All);
    }
    out
}

/// One statement of the string: the forms the SQL parser does not know in MySQL's syntax are
/// recognised from their words; the rest is parsed.
fn piece_needs(
    piece: &Canonical,
    count: usize,
    flavor: Flavor,
    needs: &mut Needs,
    out: &mut Classification,
    prepared: &dyn Fn(&str) -> Option<PrivSet>,
) -> Result<(), String> {
    let t: Vec<&str> = piece.tokens_upper.iter().map(String::as_str).collect();
    match t.as_slice() {
        ["LOAD", "DATA" | "XML", rest @ ..] => {
            if count > 1 {
                return Err(
                    "LOAD DATA must be sent on its own, not in a multi-statement string".into(),
                );
            }
            let local = rest.iter().take(3).any(|w| *w == "LOCAL");
            if local {
                needs.add(P::Insert);
                needs.add(P::Command);
                out.flags.local_infile = true;
            } else {
                // A file on the database server's disk.
                needs.add(P::All);
            }
            return Ok(());
        }
        ["PREPARE", name, "FROM", "'"] => {
            let text = piece.strings.first().cloned().unwrap_or_default();
            let inner = classify(&text, flavor, prepared);
            if let Some(why) = inner.unclassifiable {
                return Err(format!("PREPARE {name}: {why}"));
            }
            if inner.statements != 1 {
                return Err(format!(
                    "PREPARE {name}: a prepared statement holds one statement"
                ));
            }
            needs.0 = needs.0.union(inner.needs);
            out.flags.lexer_change |= inner.flags.lexer_change;
            let original = piece
                .words
                .get(1)
                .cloned()
                .unwrap_or_else(|| name.to_string());
            out.prepared
                .push((original.to_ascii_lowercase(), inner.needs));
            return Ok(());
        }
        ["PREPARE", ..] => {
            return Err(
                "PREPARE from a variable: the statement text is not known before it runs".into(),
            )
        }
        ["DEALLOCATE" | "DROP", "PREPARE", _] => {
            out.deallocated
                .push(piece.words.get(2).map(|n| n.to_ascii_lowercase()));
            return Ok(());
        }
        ["EXECUTE", _, ..] => {
            let name = piece
                .words
                .get(1)
                .cloned()
                .unwrap_or_default()
                .to_ascii_lowercase();
            return match prepared(&name) {
                Some(p) => {
                    needs.0 = needs.0.union(p);
                    Ok(())
                }
                None => Err(format!(
                    "EXECUTE of prepared statement `{name}`, which was not prepared through this gateway session"
                )),
            };
        }
        _ => {}
    }
    let statements = Parser::parse_sql(&MySqlDialect {}, &piece.text)
        .map_err(|e| format!("the statement does not parse: {e}"))?;
    for st in &statements {
        statement(st, flavor, needs, out, prepared)?;
        functions(st, needs);
    }
    Ok(())
}

/// Privileges of one statement. Statements that read or change data are here; the rest go
/// on to [`session_statement`] and then [`schema_statement`].
fn statement(
    st: &Statement,
    flavor: Flavor,
    needs: &mut Needs,
    out: &mut Classification,
    prepared: &dyn Fn(&str) -> Option<PrivSet>,
) -> Result<(), String> {
    match st {
        Statement::Query(q) => {
            needs.add(P::Select);
            query_extras(q, needs);
        }
        Statement::Insert(i) => {
            needs.add(P::Insert);
            if i.replace_into {
                needs.add(P::Delete);
            }
            if matches!(i.on, Some(OnInsert::DuplicateKeyUpdate(_))) {
                needs.add(P::Update);
            }
            if let Some(src) = &i.source {
                if !matches!(*src.body, SetExpr::Values(_)) {
                    needs.add(P::Select);
                }
                query_extras(src, needs);
            }
        }
        Statement::Update(_) => needs.add(P::Update),
        Statement::Delete(_) => needs.add(P::Delete),
        Statement::Merge(_) => needs.add(P::Merge),
        Statement::Explain {
            analyze,
            statement: inner,
            ..
        } => {
            needs.add(P::Desc);
            if *analyze {
                statement(inner, flavor, needs, out, prepared)?;
            }
        }
        Statement::ExplainTable { .. } => needs.add(P::Desc),
        other => return session_statement(other, flavor, needs, out, prepared),
    }
    Ok(())
}

/// Statements that act on the session or the server: transactions, settings, locks, `SHOW`,
/// calls and prepared statements.
fn session_statement(
    st: &Statement,
    flavor: Flavor,
    needs: &mut Needs,
    out: &mut Classification,
    prepared: &dyn Fn(&str) -> Option<PrivSet>,
) -> Result<(), String> {
    match st {
        Statement::StartTransaction { .. } | Statement::Savepoint { .. } => needs.add(P::Begin),
        Statement::Commit { .. } | Statement::ReleaseSavepoint { .. } => needs.add(P::Commit),
        Statement::Rollback { .. } => needs.add(P::Rollback),
        Statement::Set(s) => set(s, flavor, needs, out),
        Statement::Use(_) => needs.add(P::Connect),
        Statement::Call(_) => needs.add(P::Execute),
        Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. } => needs.add(P::Show),
        Statement::Lock(_) | Statement::LockTables { .. } | Statement::UnlockTables => {
            needs.add(P::Lock)
        }
        Statement::Flush { read_lock, .. } => {
            needs.add(P::Command);
            if *read_lock {
                needs.add(P::Lock);
            }
        }
        Statement::Kill { .. } | Statement::OptimizeTable { .. } | Statement::Analyze(_) => {
            needs.add(P::Command)
        }
        Statement::Prepare {
            name,
            statement: inner,
            ..
        } => {
            let mut inner_needs = Needs(PrivSet::EMPTY, false);
            statement(inner, flavor, &mut inner_needs, out, prepared)?;
            functions(inner, &mut inner_needs);
            needs.0 = needs.0.union(inner_needs.0);
            out.prepared
                .push((name.value.to_ascii_lowercase(), inner_needs.0));
        }
        Statement::Execute { name, .. } => {
            let name = name
                .as_ref()
                .map(object_last)
                .ok_or_else(|| "EXECUTE without a statement name".to_owned())?;
            match prepared(&name) {
                Some(p) => needs.0 = needs.0.union(p),
                None => {
                    return Err(format!(
                        "EXECUTE of prepared statement `{name}`, which was not prepared through this gateway session"
                    ))
                }
            }
        }
        Statement::Deallocate { name, .. } => out.deallocated.push(Some(name.value.clone())),
        other => return schema_statement(other, needs),
    }
    Ok(())
}

/// Statements that create, change or drop schema objects, or grant and revoke.
fn schema_statement(st: &Statement, needs: &mut Needs) -> Result<(), String> {
    match st {
        Statement::Truncate(_) => needs.add(P::Truncate),
        Statement::Grant(_) => needs.add(P::Grant),
        Statement::Revoke(_) => needs.add(P::Revoke),
        Statement::CreateIndex(_) => needs.add(P::Index),
        Statement::RenameTable(_) => needs.add(P::Rename),
        Statement::AlterTable(a) => {
            let renames = a
                .operations
                .iter()
                .filter(|op| {
                    matches!(
                        op,
                        AlterTableOperation::RenameTable { .. }
                            | AlterTableOperation::RenameColumn { .. }
                            | AlterTableOperation::RenameConstraint { .. }
                    )
                })
                .count();
            if renames > 0 {
                needs.add(P::Rename);
            }
            if renames < a.operations.len() || a.operations.is_empty() {
                needs.add(P::Alter);
            }
        }
        Statement::AlterIndex { .. }
        | Statement::AlterView { .. }
        | Statement::AlterSchema(_)
        | Statement::AlterRole { .. }
        | Statement::AlterUser(_)
        | Statement::AlterFunction(_)
        | Statement::AlterType(_) => needs.add(P::Alter),
        Statement::Drop { object_type, .. } => {
            needs.add(P::Drop);
            if *object_type == ObjectType::Index {
                needs.add(P::Index);
            }
        }
        Statement::DropFunction(_)
        | Statement::DropProcedure { .. }
        | Statement::DropTrigger(_)
        | Statement::DropDomain(_)
        | Statement::DropPolicy(_) => needs.add(P::Drop),
        Statement::CreateTable(c) => {
            needs.add(P::Create);
            if let Some(q) = &c.query {
                needs.add(P::Insert);
                needs.add(P::Select);
                query_extras(q, needs);
            }
        }
        Statement::CreateView(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateTrigger(_)
        | Statement::CreateRole(_)
        | Statement::CreateUser(_)
        | Statement::CreateSequence { .. } => needs.add(P::Create),
        Statement::CreateServer(_) => needs.add(P::Link),
        Statement::Comment { .. } => needs.add(P::Comment),
        other => {
            return Err(format!(
                "no privilege mapping for this statement kind ({})",
                other
                    .to_string()
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        }
    }
    Ok(())
}

/// `SELECT ... INTO` (a new table, variables) and `FOR UPDATE` / `LOCK IN SHARE MODE`.
fn query_extras(q: &sqlparser::ast::Query, needs: &mut Needs) {
    if !q.locks.is_empty() {
        needs.add(P::Lock);
    }
    if let SetExpr::Select(s) = q.body.as_ref() {
        if s.into.is_some() {
            needs.add(P::Create);
            needs.add(P::Insert);
        }
    }
}

/// MySQL / MariaDB session variables a statement may set without any privilege.
const HARMLESS_VARIABLES: &[&str] = &[
    "autocommit",
    "character_set_results",
    "collation_connection",
    "sql_select_limit",
    "net_write_timeout",
    "net_read_timeout",
    "wait_timeout",
    "interactive_timeout",
    "time_zone",
    "lc_time_names",
    "lc_messages",
    "max_execution_time",
    "max_statement_time",
    "transaction_isolation",
    "tx_isolation",
    "transaction_read_only",
    "tx_read_only",
    "session_track_schema",
    "session_track_state_change",
    "session_track_system_variables",
    "session_track_transaction_info",
    "group_concat_max_len",
    "sql_notes",
    "sql_warnings",
    "sql_quote_show_create",
    "profiling",
    "names",
];

/// Variables that change how later statement text is lexed.
const LEXER_VARIABLES: &[&str] = &[
    "sql_mode",
    "character_set_client",
    "character_set_connection",
    "collation_database",
    "character_set_database",
];

fn set(s: &Set, flavor: Flavor, needs: &mut Needs, out: &mut Classification) {
    match s {
        Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        } => variable_needs(
            scope.is_some_and(is_global),
            &object_last(variable),
            match values.as_slice() {
                [v] => Some(v),
                _ => None,
            },
            flavor,
            needs,
            out,
        ),
        Set::ParenthesizedAssignments { variables, .. } => {
            for v in variables {
                variable_needs(false, &object_last(v), None, flavor, needs, out);
            }
        }
        Set::MultipleAssignments { assignments } => {
            for a in assignments {
                variable_needs(
                    a.scope.is_some_and(is_global),
                    &object_last(&a.name),
                    Some(&a.value),
                    flavor,
                    needs,
                    out,
                );
            }
        }
        Set::SetNames { charset_name, .. } => {
            if UNSAFE_CHARSETS.contains(&charset_name.value.to_ascii_lowercase().as_str()) {
                out.flags.lexer_change = true;
            }
        }
        Set::SetNamesDefault {} | Set::SetTransaction { .. } | Set::SetTimeZone { .. } => {}
        Set::SetRole { .. } | Set::SetSessionAuthorization(_) => needs.add(P::All),
        Set::SetSessionParam(_) => needs.add(P::Command),
    }
}

/// `sql_mode` modes that change neither how statement text is lexed nor how it parses (only
/// how the server checks and stores values).
const PLAIN_SQL_MODES: &[&str] = &[
    "ALLOW_INVALID_DATES",
    "EMPTY_STRING_IS_NULL",
    "ERROR_FOR_DIVISION_BY_ZERO",
    "NO_AUTO_CREATE_USER",
    "NO_AUTO_VALUE_ON_ZERO",
    "NO_DIR_IN_CREATE",
    "NO_ENGINE_SUBSTITUTION",
    "NO_UNSIGNED_SUBTRACTION",
    "NO_ZERO_DATE",
    "NO_ZERO_IN_DATE",
    "ONLY_FULL_GROUP_BY",
    "PAD_CHAR_TO_FULL_LENGTH",
    "REAL_AS_FLOAT",
    "SIMULTANEOUS_ASSIGNMENT",
    "STRICT_ALL_TABLES",
    "STRICT_TRANS_TABLES",
    "TIME_ROUND_FRACTIONAL",
    "TRADITIONAL",
];

/// Whether a string literal lists only [`PLAIN_SQL_MODES`].
fn plain_modes(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => match &v.value {
            sqlparser::ast::Value::SingleQuotedString(s) => s
                .split(',')
                .map(|m| m.trim().to_ascii_uppercase())
                .filter(|m| !m.is_empty())
                .all(|m| PLAIN_SQL_MODES.contains(&m.as_str())),
            _ => false,
        },
        _ => false,
    }
}

/// Whether assigning `value` to the session's `sql_mode` leaves lexing and parsing as they are:
/// `CONCAT(@@sql_mode, '<modes>', ...)` adding only [`PLAIN_SQL_MODES`] (what JDBC drivers send
/// when they connect), or a literal list of them while the session's mode has no lexing flag.
fn sql_mode_keeps_lexing(value: &Expr, flavor: Flavor) -> bool {
    if plain_modes(value) {
        return !flavor.ansi_quotes && !flavor.no_backslash_escapes;
    }
    let Expr::Function(f) = value else {
        return false;
    };
    if !object_last(&f.name).eq_ignore_ascii_case("concat") {
        return false;
    }
    let sqlparser::ast::FunctionArguments::List(list) = &f.args else {
        return false;
    };
    let args: Vec<&Expr> = list
        .args
        .iter()
        .filter_map(|a| match a {
            sqlparser::ast::FunctionArg::Unnamed(sqlparser::ast::FunctionArgExpr::Expr(e)) => {
                Some(e)
            }
            _ => None,
        })
        .collect();
    if args.len() != list.args.len() || !list.clauses.is_empty() {
        return false;
    }
    let current = |e: &Expr| match e {
        Expr::Identifier(i) => matches!(
            i.value.to_ascii_lowercase().as_str(),
            "@@sql_mode" | "@@session.sql_mode" | "@@local.sql_mode"
        ),
        Expr::CompoundIdentifier(parts) => {
            let parts: Vec<String> = parts.iter().map(|p| p.value.to_ascii_lowercase()).collect();
            matches!(
                parts
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice(),
                ["@@session", "sql_mode"] | ["@@local", "sql_mode"]
            )
        }
        _ => false,
    };
    matches!(args.split_first(), Some((first, rest)) if current(first) && rest.iter().all(|e| plain_modes(e)))
}

fn is_global(m: sqlparser::ast::ContextModifier) -> bool {
    matches!(m, sqlparser::ast::ContextModifier::Global)
}

fn variable_needs(
    global: bool,
    raw: &str,
    value: Option<&Expr>,
    flavor: Flavor,
    needs: &mut Needs,
    out: &mut Classification,
) {
    let name = raw.to_ascii_lowercase();
    // `@user_var`: the session's own values.
    if name.starts_with('@') && !name.starts_with("@@") {
        return;
    }
    let (global, name) = match name.strip_prefix("@@") {
        Some(rest) => match rest.split_once('.') {
            Some(("global", v)) | Some(("persist", v)) | Some(("persist_only", v)) => {
                (true, v.to_owned())
            }
            Some((_, v)) => (global, v.to_owned()),
            None => (global, rest.to_owned()),
        },
        None => (global, name),
    };
    if !global && name == "sql_mode" && value.is_some_and(|v| sql_mode_keeps_lexing(v, flavor)) {
        return;
    }
    if LEXER_VARIABLES.contains(&name.as_str()) {
        out.flags.lexer_change = true;
        return;
    }
    if global || !HARMLESS_VARIABLES.contains(&name.as_str()) {
        needs.add(P::Command);
    }
}

fn object_last(o: &ObjectName) -> String {
    o.0.last()
        .map(|p| match p {
            sqlparser::ast::ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// Built-in MySQL / MariaDB functions that read or compute only. Calling anything else (a
/// stored function, a UDF, or one of [`STATE_CHANGING`]) needs `EXECUTE`.
const SAFE_FUNCTIONS: &str = "ABS ACOS ADDDATE ADDTIME ADD_MONTHS AES_DECRYPT AES_ENCRYPT ANY_VALUE ASCII ASIN ATAN ATAN2 AVG \
BIN BIN_TO_UUID BIT_AND BIT_COUNT BIT_LENGTH BIT_OR BIT_XOR CAST CEIL CEILING CHAR CHAR_LENGTH CHARACTER_LENGTH CHARSET \
CHR COALESCE COERCIBILITY COLLATION COLUMN_CHECK COLUMN_CREATE COLUMN_EXISTS COLUMN_GET COLUMN_JSON COLUMN_LIST COMPRESS \
CONCAT CONCAT_WS CONNECTION_ID CONV CONVERT CONVERT_TZ COS COT COUNT CRC32 CRC32C CUME_DIST CURDATE CURRENT_DATE \
CURRENT_ROLE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER CURTIME DATABASE DATE DATE_ADD DATE_FORMAT DATE_SUB DATEDIFF \
DAY DAYNAME DAYOFMONTH DAYOFWEEK DAYOFYEAR DEFAULT DEGREES DENSE_RANK ELT EXP EXPORT_SET EXTRACT EXTRACTVALUE FIELD \
FIND_IN_SET FIRST_VALUE FLOOR FORMAT FORMAT_BYTES FORMAT_PICO_TIME FOUND_ROWS FROM_BASE64 FROM_DAYS FROM_UNIXTIME \
GREATEST GROUP_CONCAT GROUPING HEX HOUR IF IFNULL INET_ATON INET_NTOA INET6_ATON INET6_NTOA INSERT INSTR INTERVAL \
IS_IPV4 IS_IPV4_COMPAT IS_IPV4_MAPPED IS_IPV6 IS_UUID ISNULL LAG LAST_DAY LAST_INSERT_ID LAST_VALUE LASTVAL LCASE LEAD \
LEAST LEFT LENGTH LENGTHB LN LOCALTIME LOCALTIMESTAMP LOCATE LOG LOG10 LOG2 LOWER LPAD LTRIM MAKE_SET MAKEDATE MAKETIME \
MAX MD5 MEDIAN MICROSECOND MID MIN MINUTE MOD MONTH MONTHNAME NATURAL_SORT_KEY NOW NTH_VALUE NTILE NULLIF NVL NVL2 OCT \
OCTET_LENGTH ORD PERCENT_RANK PERCENTILE_CONT PERCENTILE_DISC PERIOD_ADD PERIOD_DIFF PI POSITION POW POWER QUARTER \
QUOTE RADIANS RAND RANDOM_BYTES RANK REGEXP_INSTR REGEXP_LIKE REGEXP_REPLACE REGEXP_SUBSTR REPEAT REPLACE REVERSE \
RIGHT ROUND ROW_COUNT ROW_NUMBER RPAD RTRIM SCHEMA SEC_TO_TIME SECOND SESSION_USER SFORMAT SHA SHA1 SHA2 SIGN SIN \
SOUNDEX SPACE SQRT STATEMENT_DIGEST STATEMENT_DIGEST_TEXT STD STDDEV STDDEV_POP STDDEV_SAMP STR_TO_DATE STRCMP \
SUBDATE SUBSTR SUBSTRING SUBSTRING_INDEX SUBTIME SUM SYSDATE SYSTEM_USER TAN TIME TIME_FORMAT TIME_TO_SEC TIMEDIFF \
TIMESTAMP TIMESTAMPADD TIMESTAMPDIFF TO_BASE64 TO_CHAR TO_DAYS TO_SECONDS TRIM TRUNCATE UCASE UNCOMPRESS \
UNCOMPRESSED_LENGTH UNHEX UNIX_TIMESTAMP UPDATEXML UPPER USER UTC_DATE UTC_TIME UTC_TIMESTAMP UUID UUID_SHORT \
UUID_TO_BIN VALUE VALUES VAR_POP VAR_SAMP VARIANCE VERSION WEEK WEEKDAY WEEKOFYEAR WEIGHT_STRING YEAR YEARWEEK";

/// Built-ins that change state outside the statement's result (locks held past the statement,
/// sequences, replication waits, the server's time): they need `EXECUTE`, like stored code.
pub const STATE_CHANGING: &[&str] = &[
    "GET_LOCK",
    "RELEASE_LOCK",
    "RELEASE_ALL_LOCKS",
    "SLEEP",
    "BENCHMARK",
    "NEXTVAL",
    "SETVAL",
    "MASTER_POS_WAIT",
    "MASTER_GTID_WAIT",
    "SOURCE_POS_WAIT",
    "WAIT_FOR_EXECUTED_GTID_SET",
];

/// Built-ins that reach the database server's files: `ALL` only.
const NEEDS_ALL: &[&str] = &["LOAD_FILE"];

fn safe_functions() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| SAFE_FUNCTIONS.split_whitespace().collect())
}

/// Adds what the function calls anywhere in `st` need.
fn functions(st: &Statement, needs: &mut Needs) {
    struct V<'a>(&'a mut Needs);
    impl Visitor for V<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                let qualified = f.name.0.len() > 1;
                let name = object_last(&f.name).to_ascii_uppercase();
                if NEEDS_ALL.contains(&name.as_str()) {
                    self.0.add(P::All);
                } else if qualified
                    || STATE_CHANGING.contains(&name.as_str())
                    || !(safe_functions().contains(name.as_str())
                        || name.starts_with("JSON_")
                        || name.starts_with("ST_"))
                {
                    self.0.add(P::Execute);
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = st.visit(&mut V(needs));
}

/// One statement of the string as the parser should see it, with its words (upper-cased for
/// matching, and as written), and the values of its string literals.
#[derive(Default)]
struct Canonical {
    text: String,
    tokens_upper: Vec<String>,
    words: Vec<String>,
    strings: Vec<String>,
}

impl Canonical {
    fn word(&mut self, w: &mut String) {
        if !w.is_empty() {
            self.tokens_upper.push(w.to_ascii_uppercase());
            self.words.push(std::mem::take(w));
        }
    }

    fn mark(&mut self, token: &str, original: String) {
        self.tokens_upper.push(token.to_owned());
        self.words.push(original);
    }
}

/// Lexes like the server: drops comments, inlines executable comments the server runs,
/// re-quotes strings (`'...'` with `\\` and `\'` escapes) and identifiers (`` `...` ``), and
/// splits the string into statements at `;`.
fn canonicalize(sql: &str, flavor: Flavor) -> Result<Vec<Canonical>, String> {
    let b = sql.as_bytes();
    let mut pieces = Vec::new();
    let mut cur = Canonical::default();
    let mut word = String::new();
    let mut i = 0;
    // Inside an executable comment the server runs: its `*/` ends it.
    let mut in_exec = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' if !(c == b'"' && flavor.ansi_quotes) => {
                cur.word(&mut word);
                let (value, next) = read_string(b, i, c, flavor.no_backslash_escapes)?;
                push_string(&mut cur.text, &value);
                let text = String::from_utf8_lossy(&value).into_owned();
                cur.strings.push(text.clone());
                cur.mark("'", text);
                i = next;
            }
            b'`' | b'"' => {
                cur.word(&mut word);
                let (value, next) = read_quoted_ident(b, i, c)?;
                cur.text.push('`');
                cur.text.push_str(&value.replace('`', "``"));
                cur.text.push('`');
                cur.mark("`", value);
                i = next;
            }
            b'#' => {
                cur.word(&mut word);
                i = skip_line(b, i);
                cur.text.push(' ');
            }
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2)
                    .is_none_or(|n| n.is_ascii_whitespace() || n.is_ascii_control()) =>
            {
                cur.word(&mut word);
                i = skip_line(b, i);
                cur.text.push(' ');
            }
            b'*' if in_exec && b.get(i + 1) == Some(&b'/') => {
                cur.word(&mut word);
                in_exec = false;
                i += 2;
                cur.text.push(' ');
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                cur.word(&mut word);
                if in_exec {
                    return Err("a comment inside an executable comment is ambiguous".into());
                }
                match executable(b, i, flavor)? {
                    Some((true, start)) => {
                        in_exec = true;
                        i = start;
                        cur.text.push(' ');
                    }
                    Some((false, _)) | None => {
                        let end = find_comment_end(b, i + 2)
                            .ok_or_else(|| "a comment is not closed".to_owned())?;
                        i = end;
                        cur.text.push(' ');
                    }
                }
            }
            b';' => {
                cur.word(&mut word);
                if !cur.tokens_upper.is_empty() {
                    pieces.push(std::mem::take(&mut cur));
                } else {
                    cur = Canonical::default();
                }
                i += 1;
            }
            0 => return Err("the statement contains a NUL byte".into()),
            _ => {
                let ch_len = utf8_len(c);
                let piece = sql
                    .get(i..i + ch_len)
                    .ok_or_else(|| "the statement is not valid UTF-8".to_owned())?;
                if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
                    word.push_str(piece);
                } else {
                    cur.word(&mut word);
                    if !c.is_ascii_whitespace() {
                        cur.mark(piece, piece.to_owned());
                    }
                }
                cur.text.push_str(piece);
                i += ch_len;
            }
        }
    }
    cur.word(&mut word);
    if in_exec {
        return Err("an executable comment is not closed".into());
    }
    if !cur.tokens_upper.is_empty() {
        pieces.push(cur);
    }
    Ok(pieces)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// For `/*` at `i`: `Some((runs, code_start))` for an executable comment, `None` for a plain
/// one (including optimizer hints `/*+`).
fn executable(b: &[u8], i: usize, flavor: Flavor) -> Result<Option<(bool, usize)>, String> {
    let mut j = i + 2;
    let mariadb_only = b.get(j) == Some(&b'M') && b.get(j + 1) == Some(&b'!');
    if mariadb_only {
        j += 2;
    } else if b.get(j) == Some(&b'!') {
        j += 1;
    } else {
        return Ok(None);
    }
    let digits = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
    let version = match digits {
        0 => None,
        5 => Some(parse_digits(&b[j..j + 5])),
        6 if flavor.mariadb => Some(parse_digits(&b[j..j + 6])),
        _ => {
            return Err(format!(
                "an executable comment with a {digits}-digit version is ambiguous"
            ))
        }
    };
    let runs = (!mariadb_only || flavor.mariadb) && version.is_none_or(|v| v <= flavor.version);
    Ok(Some((runs, j + digits)))
}

fn parse_digits(d: &[u8]) -> u32 {
    d.iter().fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'))
}

fn find_comment_end(b: &[u8], from: usize) -> Option<usize> {
    b[from..]
        .windows(2)
        .position(|w| w == b"*/")
        .map(|p| from + p + 2)
}

fn skip_line(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|c| *c == b'\n')
        .map(|p| i + p + 1)
        .unwrap_or(b.len())
}

/// Reads a string literal starting at `i` (the quote); returns its value and the index after.
fn read_string(b: &[u8], i: usize, q: u8, no_backslash: bool) -> Result<(Vec<u8>, usize), String> {
    let mut v = Vec::new();
    let mut j = i + 1;
    while j < b.len() {
        let c = b[j];
        if c == b'\\' && !no_backslash {
            let n = *b.get(j + 1).ok_or("a string literal is not closed")?;
            match n {
                b'0' => v.push(0),
                b'b' => v.push(8),
                b'n' => v.push(b'\n'),
                b'r' => v.push(b'\r'),
                b't' => v.push(b'\t'),
                b'Z' => v.push(26),
                b'%' | b'_' => {
                    v.push(b'\\');
                    v.push(n);
                }
                other => v.push(other),
            }
            j += 2;
        } else if c == q {
            if b.get(j + 1) == Some(&q) {
                v.push(q);
                j += 2;
            } else {
                return Ok((v, j + 1));
            }
        } else {
            v.push(c);
            j += 1;
        }
    }
    Err("a string literal is not closed".into())
}

fn read_quoted_ident(b: &[u8], i: usize, q: u8) -> Result<(String, usize), String> {
    let mut v = Vec::new();
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                v.push(q);
                j += 2;
                continue;
            }
            let s =
                String::from_utf8(v).map_err(|_| "an identifier is not valid UTF-8".to_owned())?;
            return Ok((s, j + 1));
        }
        v.push(b[j]);
        j += 1;
    }
    Err("a quoted identifier is not closed".into())
}

fn push_string(out: &mut String, value: &[u8]) {
    out.push('\'');
    for ch in String::from_utf8_lossy(value).chars() {
        match ch {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon_with(s: &str, f: Flavor) -> String {
        canonicalize(s, f)
            .unwrap()
            .iter()
            .map(|p| p.text.trim().to_owned())
            .collect::<Vec<_>>()
            .join(";")
    }

    fn canon(s: &str) -> String {
        canon_with(s, Flavor::default())
    }

    #[test]
    fn executable_comments_follow_the_server() {
        let maria = Flavor::default();
        let mysql = Flavor::from_server_version("8.0.34");
        assert!(!mysql.mariadb && mysql.version == 80034);
        assert_eq!(
            Flavor::from_server_version("5.5.5-10.11.6-MariaDB-0+deb12u1").version,
            101106
        );
        assert!(canon("SELECT 1 /*! ; DROP TABLE t */").contains("DROP TABLE t"));
        assert!(canon("SELECT 1 /*!50000 ; DROP TABLE t */").contains("DROP"));
        assert!(!canon("SELECT 1 /*!999999 ; DROP TABLE t */").contains("DROP"));
        assert!(canon("SELECT 1 /*M! ; DROP TABLE t */").contains("DROP"));
        let on_mysql = canon_with("SELECT 1 /*M! ; DROP TABLE t */", mysql);
        assert!(!on_mysql.contains("DROP"));
        assert!(canonicalize("SELECT 1 /*!5000 x */", maria).is_err());
        assert!(!canon("SELECT 1 /* ; DROP TABLE t */").contains("DROP"));
        assert!(!canon("SELECT 1 -- ; DROP TABLE t").contains("DROP"));
        assert!(canon("SELECT 1--1").contains("1--1"));
        assert!(!canon("SELECT 1 # ; DROP TABLE t").contains("DROP"));
    }

    #[test]
    fn strings_are_requoted() {
        assert_eq!(canon(r#"SELECT "a\"b", 'c''d'"#), r#"SELECT 'a"b', 'c\'d'"#);
        let nb = Flavor::default().with_sql_mode("NO_BACKSLASH_ESCAPES");
        let t = canon_with(r"SELECT 'a\'; DROP TABLE t; -- '", nb);
        assert_eq!(t, r"SELECT 'a\\';DROP TABLE t", "{t}");
        let t = canon(r"SELECT 'a\'; DROP TABLE t; -- '");
        assert_eq!(t, r"SELECT 'a\'; DROP TABLE t; -- '", "{t}");
        let aq = Flavor::default().with_sql_mode("ANSI_QUOTES");
        assert_eq!(canon_with(r#"SELECT "col""#, aq), "SELECT `col`");
    }

    #[test]
    fn sql_mode_changes_that_keep_lexing_need_nothing() {
        let none = |_: &str| None;
        let needs = |sql: &str, f: Flavor| classify(sql, f, &none).needs;
        let plain = Flavor::default();
        // What MariaDB Connector/J sends at connect.
        let jdbc = "set autocommit=1, session_track_schema=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')";
        assert_eq!(needs(jdbc, plain), PrivSet::EMPTY);
        assert_eq!(
            needs(
                "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE'",
                plain
            ),
            PrivSet::EMPTY
        );
        for lexing in [
            "SET sql_mode = concat(@@sql_mode, ',ANSI_QUOTES')",
            "SET sql_mode = concat(@@sql_mode, ',STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES')",
            "SET sql_mode = concat(@@global.sql_mode, ',STRICT_TRANS_TABLES')",
            "SET sql_mode = concat(@x, ',STRICT_TRANS_TABLES')",
            "SET sql_mode = 'ORACLE'",
            "SET sql_mode = 'PIPES_AS_CONCAT'",
            "SET sql_mode = @x",
            "SET GLOBAL sql_mode = 'STRICT_TRANS_TABLES'",
        ] {
            assert!(needs(lexing, plain).has(P::All), "{lexing}");
        }
        // Replacing the whole mode drops a lexing flag the session has.
        let aq = plain.with_sql_mode("ANSI_QUOTES");
        assert!(needs("SET sql_mode = 'STRICT_TRANS_TABLES'", aq).has(P::All));
        assert_eq!(
            needs(
                "SET sql_mode = concat(@@sql_mode, ',STRICT_TRANS_TABLES')",
                aq
            ),
            PrivSet::EMPTY
        );
    }
}
