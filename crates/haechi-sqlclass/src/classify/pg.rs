//! PostgreSQL classification with PostgreSQL's own parser (`pg_query`, the server's grammar
//! compiled in). Each statement kind maps to privileges (the table in `docs/dbgate.md`); the
//! whole tree of every statement is then walked for what runs inside it: function calls
//! (anything not a known IMMUTABLE/STABLE built-in needs `EXECUTE`), data-modifying CTEs,
//! `SELECT ... INTO`, row locks and user-defined operators.

use std::collections::HashSet;
use std::sync::OnceLock;

use pg_query::protobuf::{self, node::Node as N};
use serde::ser::{self, Serialize};

use super::cache::{self, Cache};
use super::{Classification, Needs};
use crate::privilege::{PrivSet, Privilege as P};

static SAFE_FUNCTIONS_TEXT: &str = include_str!("pg_safe_functions.txt");

/// Volatile built-ins that change nothing a policy protects (values of their own, clocks,
/// reading a sequence's last value): no `EXECUTE` needed either.
const HARMLESS_VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "currval",
    "lastval",
    "pg_backend_pid",
];

/// Built-ins that answer from the session's own backend connection: a statement calling one
/// is never pooled (see [`Classification::session_neutral`]).
const SESSION_BOUND: &[&str] = &[
    "pg_backend_pid",
    "inet_client_port",
    "inet_server_port",
    "pg_my_temp_schema",
    "pg_is_other_temp_schema",
    "pg_listening_channels",
    "pg_notification_queue_usage",
    "pg_current_xact_id_if_assigned",
    "txid_current_if_assigned",
    "pg_trigger_depth",
];

/// Functions that need `ALL` whatever else: they change the session's identity or settings
/// that decide how later statements are lexed, or reach the server's files and processes.
const NEEDS_ALL: &[&str] = &[
    "set_config",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "lo_import",
    "lo_export",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_terminate_backend",
    "pg_promote",
];

/// Operators of the built-in types (names only; an operator made of other characters, or one
/// qualified with a schema other than `pg_catalog`, is user-defined and needs `EXECUTE`).
const BUILTIN_OPERATORS: &[&str] = &[
    "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "||", "|/", "||/", "@",
    "&", "|", "#", "~", "<<", ">>", "~~", "!~~", "~~*", "!~~*", "!~", "~*", "!~*", "@>", "<@",
    "&&", "?", "?|", "?&", "->", "->>", "#>", "#>>", "#-", "@@", "@@@", "@?", "<->", "<#>", "<=>",
    "&<", "&>", "<<|", "|>>", "&<|", "|&>", "<^", ">^", "?#", "?-", "?|", "?-|", "?||", "~=",
    "<<=", ">>=", "!!", "-|-", "*=", "*<>", "*<", "*>", "*<=", "*>=", "~<~", "~<=~", "~>=~", "~>~",
    "^@",
];

fn safe_functions() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        SAFE_FUNCTIONS_TEXT
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .chain(HARMLESS_VOLATILE.iter().copied())
            .collect()
    })
}

/// Session settings a statement may change without any privilege: they only shape how
/// results are formatted or how long things may take. Anything else `SET` needs `COMMAND`;
/// settings that change the session's identity or how statement text is lexed need `ALL`.
const HARMLESS_SETTINGS: &[&str] = &[
    "application_name",
    "datestyle",
    "timezone",
    "time zone",
    "extra_float_digits",
    "intervalstyle",
    "client_min_messages",
    "bytea_output",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "transaction_isolation",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "transaction_read_only",
    "transaction",
    "session characteristics",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "work_mem",
    "jit",
];

/// Settings whose change needs `ALL`.
const IDENTITY_OR_LEXER_SETTINGS: &[&str] = &[
    "role",
    "session_authorization",
    "session authorization",
    "standard_conforming_strings",
    "backslash_quote",
    "escape_string_warning",
    "client_encoding",
    "names",
    "search_path",
    "session_replication_role",
    "session_preload_libraries",
    "local_preload_libraries",
];

/// Classifies a PostgreSQL statement string. `prepared` answers what a name given to SQL
/// `PREPARE` earlier in the session needs (for `EXECUTE name`).
pub fn classify(sql: &str, prepared: &dyn Fn(&str) -> Option<PrivSet>) -> Classification {
    classify_full(sql, prepared).0
}

/// [`classify`] through `cache` (see [`super::cache`]); `key` is a buffer the caller keeps
/// between statements.
pub fn classify_cached(
    sql: &str,
    prepared: &dyn Fn(&str) -> Option<PrivSet>,
    cache: &Cache,
    key: &mut Vec<u8>,
) -> Classification {
    let keyed = cache::pg_key(sql, key);
    if keyed {
        if let Some(e) = cache.get(key) {
            let mut c = Classification::needs(e.needs, e.statements);
            c.session_neutral = e.session_neutral;
            c.fields = e.fields;
            return c;
        }
    }
    let (c, cacheable) = classify_full(sql, prepared);
    if keyed && cacheable && c.unclassifiable.is_none() {
        cache.insert(
            key,
            cache::Entry {
                needs: c.needs,
                statements: c.statements,
                session_neutral: c.session_neutral,
                fields: c.fields.clone(),
            },
        );
    }
    c
}

/// Whether a top-level statement's classification can be cached: its kind and walk never
/// look at a constant's value, nor at the session (SQL `PREPARE` names).
fn cacheable(node: &N) -> bool {
    matches!(
        node,
        N::SelectStmt(_)
            | N::InsertStmt(_)
            | N::UpdateStmt(_)
            | N::DeleteStmt(_)
            | N::MergeStmt(_)
            | N::TransactionStmt(_)
    )
}

/// The classification, and whether it may be cached.
fn classify_full(sql: &str, prepared: &dyn Fn(&str) -> Option<PrivSet>) -> (Classification, bool) {
    let parsed = match pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) {
        Ok(p) => p,
        Err(e) => {
            return (
                Classification::unclassifiable(format!("the statement does not parse: {e}")),
                false,
            );
        }
    };
    let mut all_cacheable = true;
    let mut all_queries = !parsed.protobuf.stmts.is_empty();
    let mut needs = Needs(PrivSet::EMPTY, false);
    let mut out = Classification::needs(PrivSet::EMPTY, parsed.protobuf.stmts.len());
    let mut fields = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_deref().and_then(|n| n.node.as_ref()) else {
            continue;
        };
        all_cacheable &= cacheable(node);
        all_queries &= matches!(node, N::SelectStmt(_));
        if let Err(why) = statement(node, &mut needs, &mut out, prepared) {
            return (Classification::unclassifiable(why), false);
        }
        if let Err(why) = fields_of(node, &mut fields) {
            return (Classification::unclassifiable(why), false);
        }
    }
    fields.sort_unstable();
    fields.dedup();
    out.fields = fields.into();
    out.needs = needs.0;
    out.session_neutral = all_queries && !needs.1 && needs.0 == PrivSet::of(&[P::Select]);
    let cacheable = all_cacheable
        && out.prepared.is_empty()
        && out.deallocated.is_empty()
        && out.flags == super::Flags::default();
    (out, cacheable)
}

/// Privileges of one top-level statement, by family: statements that run queries or
/// evaluate expressions, those that act on the session (prepared statements, cursors,
/// transactions, settings), and the rest, whose kind alone decides.
fn statement(
    node: &N,
    needs: &mut Needs,
    out: &mut Classification,
    prepared: &dyn Fn(&str) -> Option<PrivSet>,
) -> Result<(), String> {
    match node {
        N::SelectStmt(_)
        | N::InsertStmt(_)
        | N::UpdateStmt(_)
        | N::DeleteStmt(_)
        | N::MergeStmt(_)
        | N::ExplainStmt(_)
        | N::CreateTableAsStmt(_)
        | N::CopyStmt(_)
        | N::CallStmt(_)
        | N::IndexStmt(_)
        | N::AlterTableStmt(_) => query_statement(node, needs, out, prepared),
        N::PrepareStmt(_)
        | N::ExecuteStmt(_)
        | N::DeallocateStmt(_)
        | N::DeclareCursorStmt(_)
        | N::FetchStmt(_)
        | N::ClosePortalStmt(_)
        | N::TransactionStmt(_)
        | N::VariableSetStmt(_) => session_statement(node, needs, out, prepared),
        other => object_statement(other, needs),
    }
}

/// Statements that run queries or evaluate expressions: their kind, plus whatever runs
/// inside them.
fn query_statement(
    node: &N,
    needs: &mut Needs,
    out: &mut Classification,
    prepared: &dyn Fn(&str) -> Option<PrivSet>,
) -> Result<(), String> {
    match node {
        N::SelectStmt(_) => {
            needs.add(P::Select);
            walk(node, needs, true)
        }
        N::InsertStmt(_) => {
            needs.add(P::Insert);
            walk(node, needs, true)
        }
        N::UpdateStmt(_) => {
            needs.add(P::Update);
            walk(node, needs, true)
        }
        N::DeleteStmt(_) => {
            needs.add(P::Delete);
            walk(node, needs, true)
        }
        N::MergeStmt(_) => {
            needs.add(P::Merge);
            walk(node, needs, true)
        }
        N::ExplainStmt(e) => {
            needs.add(P::Desc);
            let analyze = e.options.iter().any(|o| match &o.node {
                Some(N::DefElem(d)) => d.defname.eq_ignore_ascii_case("analyze") && def_true(d),
                _ => false,
            });
            if let Some(inner) = e.query.as_deref().and_then(|n| n.node.as_ref()) {
                if analyze {
                    // EXPLAIN ANALYZE runs the statement: it needs what the statement needs.
                    statement(inner, needs, out, prepared)?;
                } else {
                    // Planning alone can evaluate functions (constant folding): check them.
                    walk(inner, needs, false)?;
                }
            }
            Ok(())
        }
        N::CreateTableAsStmt(c) => {
            needs.add(P::Create);
            needs.add(P::Insert);
            match c.query.as_deref().and_then(|n| n.node.as_ref()) {
                Some(N::ExecuteStmt(x)) => execute_prepared(&x.name, needs, prepared),
                Some(inner) => walk(inner, needs, true),
                None => Ok(()),
            }
        }
        N::CopyStmt(c) => {
            if c.is_program || !c.filename.is_empty() {
                // A program or a file on the database server: outside what statement kinds say.
                needs.add(P::All);
                return Ok(());
            }
            needs.add(if c.is_from { P::Insert } else { P::Select });
            if let Some(inner) = c.query.as_deref().and_then(|n| n.node.as_ref()) {
                statement(inner, needs, out, prepared)?;
            }
            if let Some(w) = c.where_clause.as_deref().and_then(|n| n.node.as_ref()) {
                walk(w, needs, true)?;
            }
            Ok(())
        }
        N::CallStmt(c) => {
            needs.add(P::Execute);
            if let Some(f) = &c.funccall {
                let n = N::FuncCall(f.clone());
                walk(&n, needs, true)?;
            }
            Ok(())
        }
        N::IndexStmt(i) => {
            needs.add(P::Index);
            let n = N::IndexStmt(i.clone());
            walk(&n, needs, false)
        }
        N::AlterTableStmt(_) => {
            needs.add(P::Alter);
            // Defaults and USING expressions are evaluated over existing rows now.
            walk(node, needs, false)
        }
        _ => Err(no_mapping(node)),
    }
}

/// Statements that act on the session: prepared statements, cursors, transactions and
/// settings.
fn session_statement(
    node: &N,
    needs: &mut Needs,
    out: &mut Classification,
    prepared: &dyn Fn(&str) -> Option<PrivSet>,
) -> Result<(), String> {
    match node {
        N::PrepareStmt(p) => {
            let mut inner_needs = Needs(PrivSet::EMPTY, false);
            if let Some(inner) = p.query.as_deref().and_then(|n| n.node.as_ref()) {
                statement(inner, &mut inner_needs, out, prepared)?;
            }
            needs.0 = needs.0.union(inner_needs.0);
            out.prepared.push((p.name.clone(), inner_needs.0));
            Ok(())
        }
        N::ExecuteStmt(x) => {
            execute_prepared(&x.name, needs, prepared)?;
            for p in &x.params {
                if let Some(n) = &p.node {
                    walk(n, needs, true)?;
                }
            }
            Ok(())
        }
        N::DeallocateStmt(d) => {
            out.deallocated
                .push(if d.isall { None } else { Some(d.name.clone()) });
            Ok(())
        }
        N::DeclareCursorStmt(d) => {
            needs.add(P::Select);
            match d.query.as_deref().and_then(|n| n.node.as_ref()) {
                Some(inner) => statement(inner, needs, out, prepared),
                None => Ok(()),
            }
        }
        N::FetchStmt(f) => {
            // FETCH reads; MOVE only repositions.
            if !f.ismove {
                needs.add(P::Select);
            }
            Ok(())
        }
        N::ClosePortalStmt(_) => Ok(()),
        N::TransactionStmt(t) => {
            use protobuf::TransactionStmtKind as K;
            match K::try_from(t.kind).unwrap_or(K::Undefined) {
                K::TransStmtBegin | K::TransStmtStart | K::TransStmtSavepoint => {
                    needs.add(P::Begin)
                }
                K::TransStmtCommit
                | K::TransStmtRelease
                | K::TransStmtPrepare
                | K::TransStmtCommitPrepared => needs.add(P::Commit),
                K::TransStmtRollback | K::TransStmtRollbackTo | K::TransStmtRollbackPrepared => {
                    needs.add(P::Rollback)
                }
                K::Undefined => return Err("unknown transaction statement".into()),
            }
            Ok(())
        }
        N::VariableSetStmt(v) => {
            setting(v, needs);
            Ok(())
        }
        _ => Err(no_mapping(node)),
    }
}

/// Statements whose kind alone decides what they need: privileges, locks, maintenance, code
/// the text does not show; schema objects are [`schema_statement`]'s.
fn object_statement(node: &N, needs: &mut Needs) -> Result<(), String> {
    match node {
        // Anonymous code blocks run arbitrary statements the text does not show.
        N::DoStmt(_) => {
            needs.add(P::All);
            Ok(())
        }
        N::VariableShowStmt(_) => {
            needs.add(P::Show);
            Ok(())
        }
        N::LockStmt(_) => {
            needs.add(P::Lock);
            Ok(())
        }
        N::TruncateStmt(_) => {
            needs.add(P::Truncate);
            Ok(())
        }
        N::CommentStmt(_) => {
            needs.add(P::Comment);
            Ok(())
        }
        N::GrantStmt(g) => {
            needs.add(if g.is_grant { P::Grant } else { P::Revoke });
            Ok(())
        }
        N::GrantRoleStmt(g) => {
            needs.add(if g.is_grant { P::Grant } else { P::Revoke });
            Ok(())
        }
        N::AlterDefaultPrivilegesStmt(a) => {
            let grant = a.action.as_ref().is_some_and(|g| g.is_grant);
            needs.add(if grant { P::Grant } else { P::Revoke });
            Ok(())
        }
        N::VacuumStmt(_)
        | N::ClusterStmt(_)
        | N::CheckPointStmt(_)
        | N::ListenStmt(_)
        | N::UnlistenStmt(_)
        | N::NotifyStmt(_)
        | N::DiscardStmt(_)
        | N::RefreshMatViewStmt(_)
        | N::ConstraintsSetStmt(_) => {
            needs.add(P::Command);
            Ok(())
        }
        // Loading a shared library runs its code inside the server.
        N::LoadStmt(_) => {
            needs.add(P::All);
            Ok(())
        }
        other => schema_statement(other, needs),
    }
}

/// Statements that create, change or drop schema objects and database links.
fn schema_statement(node: &N, needs: &mut Needs) -> Result<(), String> {
    match node {
        N::ReindexStmt(_) => {
            needs.add(P::Index);
            Ok(())
        }
        N::RenameStmt(_) => {
            needs.add(P::Rename);
            Ok(())
        }
        N::DropStmt(_)
        | N::DropdbStmt(_)
        | N::DropRoleStmt(_)
        | N::DropOwnedStmt(_)
        | N::DropTableSpaceStmt(_)
        | N::DropSubscriptionStmt(_)
        | N::DropUserMappingStmt(_) => {
            needs.add(P::Drop);
            Ok(())
        }
        // Database links: foreign data wrappers, servers, user mappings, foreign tables.
        N::CreateFdwStmt(_)
        | N::AlterFdwStmt(_)
        | N::CreateForeignServerStmt(_)
        | N::AlterForeignServerStmt(_)
        | N::CreateUserMappingStmt(_)
        | N::AlterUserMappingStmt(_) => {
            needs.add(P::Link);
            Ok(())
        }
        N::CreateForeignTableStmt(_) | N::ImportForeignSchemaStmt(_) => {
            needs.add(P::Link);
            needs.add(P::Create);
            Ok(())
        }
        N::CreateSubscriptionStmt(_) | N::AlterSubscriptionStmt(_) => {
            needs.add(P::Link);
            Ok(())
        }
        N::CreateStmt(_)
        | N::CreateSchemaStmt(_)
        | N::ViewStmt(_)
        | N::CreateSeqStmt(_)
        | N::CreateFunctionStmt(_)
        | N::CreateTrigStmt(_)
        | N::CreateDomainStmt(_)
        | N::CompositeTypeStmt(_)
        | N::CreateEnumStmt(_)
        | N::CreateRangeStmt(_)
        | N::DefineStmt(_)
        | N::CreateExtensionStmt(_)
        | N::CreatedbStmt(_)
        | N::CreateRoleStmt(_)
        | N::RuleStmt(_)
        | N::CreatePolicyStmt(_)
        | N::CreateCastStmt(_)
        | N::CreateConversionStmt(_)
        | N::CreateOpClassStmt(_)
        | N::CreateOpFamilyStmt(_)
        | N::CreateEventTrigStmt(_)
        | N::CreatePublicationStmt(_)
        | N::CreateTableSpaceStmt(_)
        | N::CreateStatsStmt(_)
        | N::CreateTransformStmt(_)
        | N::CreatePlangStmt(_)
        | N::CreateAmStmt(_) => {
            needs.add(P::Create);
            Ok(())
        }
        N::AlterDomainStmt(_)
        | N::AlterCollationStmt(_)
        | N::AlterExtensionStmt(_)
        | N::AlterExtensionContentsStmt(_)
        | N::AlterPolicyStmt(_)
        | N::AlterEventTrigStmt(_)
        | N::AlterRoleStmt(_)
        | N::AlterRoleSetStmt(_)
        | N::AlterSeqStmt(_)
        | N::AlterOpFamilyStmt(_)
        | N::AlterFunctionStmt(_)
        | N::AlterObjectDependsStmt(_)
        | N::AlterObjectSchemaStmt(_)
        | N::AlterOwnerStmt(_)
        | N::AlterOperatorStmt(_)
        | N::AlterTypeStmt(_)
        | N::AlterEnumStmt(_)
        | N::AlterDatabaseStmt(_)
        | N::AlterDatabaseRefreshCollStmt(_)
        | N::AlterDatabaseSetStmt(_)
        | N::AlterSystemStmt(_)
        | N::AlterTableSpaceOptionsStmt(_)
        | N::AlterTableMoveAllStmt(_)
        | N::AlterStatsStmt(_)
        | N::AlterTsdictionaryStmt(_)
        | N::AlterTsconfigurationStmt(_)
        | N::AlterPublicationStmt(_)
        | N::ReplicaIdentityStmt(_)
        | N::SecLabelStmt(_)
        | N::ReassignOwnedStmt(_) => {
            needs.add(P::Alter);
            Ok(())
        }
        other => Err(no_mapping(other)),
    }
}

/// The error for a statement kind with no safe mapping.
fn no_mapping(n: &N) -> String {
    format!("no privilege mapping for statement kind {}", kind_name(n))
}

fn kind_name(n: &N) -> String {
    let dbg = format!("{n:?}");
    dbg.split('(').next().unwrap_or("unknown").to_owned()
}

fn def_true(d: &protobuf::DefElem) -> bool {
    match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
        None => true,
        Some(N::Boolean(b)) => b.boolval,
        Some(N::String(s)) => !matches!(
            s.sval.to_ascii_lowercase().as_str(),
            "false" | "off" | "0" | "no"
        ),
        Some(N::Integer(i)) => i.ival != 0,
        Some(_) => true,
    }
}

fn execute_prepared(
    name: &str,
    needs: &mut Needs,
    prepared: &dyn Fn(&str) -> Option<PrivSet>,
) -> Result<(), String> {
    match prepared(name) {
        Some(p) => {
            needs.0 = needs.0.union(p);
            Ok(())
        }
        None => Err(format!(
            "EXECUTE of prepared statement \"{name}\", which was not prepared through this gateway session"
        )),
    }
}

fn setting(v: &protobuf::VariableSetStmt, needs: &mut Needs) {
    use protobuf::VariableSetKind as K;
    let kind = K::try_from(v.kind).unwrap_or(K::Undefined);
    let name = v.name.to_ascii_lowercase();
    if kind == K::VarResetAll {
        needs.add(P::Command);
        return;
    }
    if IDENTITY_OR_LEXER_SETTINGS.contains(&name.as_str()) {
        // client_encoding back to UTF8 (what drivers send) changes nothing.
        let utf8 = matches!(name.as_str(), "client_encoding" | "names")
            && v.args.iter().all(|a| match &a.node {
                Some(N::AConst(c)) => matches!(
                    &c.val,
                    Some(protobuf::a_const::Val::Sval(s)) if matches!(s.sval.to_ascii_uppercase().as_str(), "UTF8" | "UTF-8" | "UNICODE")
                ),
                _ => false,
            })
            && !v.args.is_empty();
        if !utf8 {
            needs.add(P::All);
        }
        return;
    }
    if kind == K::VarSetMulti || HARMLESS_SETTINGS.contains(&name.as_str()) {
        return;
    }
    needs.add(P::Command);
}

/// Walks `node`'s whole tree. `executes` says whether nested data-modifying statements run
/// now (a query) or not (planning only, DDL expressions).
fn walk(node: &N, needs: &mut Needs, executes: bool) -> Result<(), String> {
    let mut w = Walker::new(executes, None);
    node.serialize(&mut w).map_err(|e| e.0)?;
    needs.0 = needs.0.union(w.needs);
    needs.1 |= w.session_bound;
    Ok(())
}

/// Adds to `fields` every name `node`'s whole tree reads in attribute notation: the second
/// and later names of a column reference (`t.name`, `s.t.name`, `t.c.name`) and the field
/// names of an indirection (`(expr).name`). PostgreSQL reads such a name as a column when the
/// row has one, and otherwise as a call of the function `name` with the row as its argument
/// (`t.f` is `f(t)`), so the text alone cannot tell which it is. Names given as assignment
/// targets (`INSERT INTO t (c.f)`, `UPDATE t SET c.f = ...`) are not read and not added.
fn fields_of(node: &N, fields: &mut Vec<String>) -> Result<(), String> {
    let mut w = Walker::new(false, Some(std::mem::take(fields)));
    node.serialize(&mut w).map_err(|e| e.0)?;
    *fields = w.fields.unwrap_or_default();
    Ok(())
}

/// Decides what a called function needs from its qualified name.
pub fn function_needs(parts: &[String], needs: &mut PrivSet) {
    let (schema, name) = match parts {
        [name] => (None, name.as_str()),
        [schema, name] => (Some(schema.as_str()), name.as_str()),
        [.., schema, name] => (Some(schema.as_str()), name.as_str()),
        [] => return,
    };
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("dblink") {
        needs.add(P::Link);
        needs.add(P::Execute);
        return;
    }
    if NEEDS_ALL.contains(&lower.as_str()) {
        needs.add(P::All);
        return;
    }
    let builtin_schema = schema.is_none_or(|s| s.eq_ignore_ascii_case("pg_catalog"));
    if !(builtin_schema && safe_functions().contains(name)) {
        needs.add(P::Execute);
    }
}

fn operator_needs(parts: &[String], needs: &mut PrivSet) {
    let (schema, op) = match parts {
        [op] => (None, op.as_str()),
        [schema, op] => (Some(schema.as_str()), op.as_str()),
        _ => (Some(""), ""),
    };
    let builtin_schema = schema.is_none_or(|s| s.eq_ignore_ascii_case("pg_catalog"));
    if !(builtin_schema && BUILTIN_OPERATORS.contains(&op)) {
        needs.add(P::Execute);
    }
}

#[derive(Debug)]
struct WalkError(String);

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WalkError {}

impl ser::Error for WalkError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        WalkError(msg.to_string())
    }
}

struct Frame {
    name: &'static str,
    field: &'static str,
}

/// A serde serializer that serializes nothing: it walks the parse tree (every node type
/// derives `Serialize`) and notes what the statement runs. Using serde means no node type can
/// be forgotten by a hand-written traversal.
struct Walker {
    frames: Vec<Frame>,
    /// Qualified names of function calls being read (innermost last).
    funcs: Vec<Vec<String>>,
    /// Operator names being read.
    ops: Vec<Vec<String>>,
    needs: PrivSet,
    /// A [`SESSION_BOUND`] function is called.
    session_bound: bool,
    executes: bool,
    /// The first struct is the statement itself (its own kind is mapped by the caller).
    top: bool,
    /// Names read so far in each column reference being read (innermost last).
    column_refs: Vec<usize>,
    /// Collects names read in attribute notation (see [`fields_of`]) when set.
    fields: Option<Vec<String>>,
}

impl Walker {
    fn new(executes: bool, fields: Option<Vec<String>>) -> Walker {
        Walker {
            frames: Vec::with_capacity(32),
            funcs: Vec::new(),
            ops: Vec::new(),
            needs: PrivSet::EMPTY,
            session_bound: false,
            executes,
            top: true,
            column_refs: Vec::new(),
            fields,
        }
    }

    /// The nearest frame that is not one of the `Node` / `String` wrappers.
    fn owner(&self) -> Option<&Frame> {
        self.frames
            .iter()
            .rev()
            .find(|f| !matches!(f.name, "Node" | "String"))
    }

    fn enter(&mut self, name: &'static str) {
        let top = std::mem::replace(&mut self.top, false);
        match name {
            "FuncCall" => self.funcs.push(Vec::new()),
            "AExpr" => self.ops.push(Vec::new()),
            "ColumnRef" => self.column_refs.push(0),
            "InsertStmt" if self.executes && !top => self.needs.add(P::Insert),
            "UpdateStmt" if self.executes && !top => self.needs.add(P::Update),
            "DeleteStmt" if self.executes && !top => self.needs.add(P::Delete),
            "MergeStmt" if self.executes && !top => self.needs.add(P::Merge),
            "IntoClause" if self.executes => {
                self.needs.add(P::Create);
                self.needs.add(P::Insert);
            }
            "LockingClause" if self.executes => self.needs.add(P::Lock),
            _ => {}
        }
        self.frames.push(Frame { name, field: "" });
    }

    fn leave(&mut self) {
        if let Some(f) = self.frames.pop() {
            match f.name {
                "FuncCall" => {
                    if let Some(parts) = self.funcs.pop() {
                        if parts.last().is_some_and(|n| {
                            SESSION_BOUND.contains(&n.to_ascii_lowercase().as_str())
                        }) {
                            self.session_bound = true;
                        }
                        function_needs(&parts, &mut self.needs);
                    }
                }
                "AExpr" => {
                    if let Some(parts) = self.ops.pop() {
                        operator_needs(&parts, &mut self.needs);
                    }
                }
                "ColumnRef" => {
                    self.column_refs.pop();
                }
                _ => {}
            }
        }
    }

    fn string(&mut self, v: &str) {
        let in_sval = self
            .frames
            .last()
            .is_some_and(|f| f.name == "String" && f.field == "sval");
        if !in_sval {
            return;
        }
        match self.owner().map(|f| (f.name, f.field)) {
            Some(("FuncCall", "funcname")) => {
                if let Some(parts) = self.funcs.last_mut() {
                    parts.push(v.to_owned());
                }
            }
            Some(("AExpr", "name")) => {
                if let Some(parts) = self.ops.last_mut() {
                    parts.push(v.to_owned());
                }
            }
            Some(("ColumnRef", "fields")) => {
                let read = self.column_refs.last_mut().map(|n| {
                    *n += 1;
                    *n
                });
                if read.is_some_and(|n| n > 1) {
                    if let Some(f) = &mut self.fields {
                        f.push(v.to_owned());
                    }
                }
            }
            Some(("AIndirection", "indirection")) => {
                if let Some(f) = &mut self.fields {
                    f.push(v.to_owned());
                }
            }
            _ => {}
        }
    }

    fn int(&mut self, v: i64) {
        // INSERT ... ON CONFLICT DO UPDATE updates rows.
        if let Some(f) = self.frames.last() {
            if f.name == "OnConflictClause"
                && f.field == "action"
                && v == protobuf::OnConflictAction::OnconflictUpdate as i64
                && self.executes
            {
                self.needs.add(P::Update);
            }
        }
    }
}

type R = Result<(), WalkError>;

impl ser::Serializer for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, _: bool) -> R {
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> R {
        self.int(v.into());
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> R {
        self.int(v.into());
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> R {
        self.int(v.into());
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> R {
        self.int(v);
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> R {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> R {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> R {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> R {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> R {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> R {
        Ok(())
    }
    fn serialize_char(self, _: char) -> R {
        Ok(())
    }
    fn serialize_str(self, v: &str) -> R {
        self.string(v);
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> R {
        Ok(())
    }
    fn serialize_none(self) -> R {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> R {
        v.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, WalkError> {
        // A SELECT with a target list reads; a VALUES list (empty target list) does not.
        let reads = self
            .frames
            .last()
            .is_some_and(|f| f.name == "SelectStmt" && f.field == "target_list");
        if reads && self.executes && len.unwrap_or(1) > 0 {
            self.needs.add(P::Select);
        }
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self, WalkError> {
        self.enter(name);
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, WalkError> {
        self.enter(name);
        Ok(self)
    }
}

impl ser::SerializeSeq for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, k: &T) -> R {
        k.serialize(&mut **self)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, v: &T) -> R {
        if let Some(f) = self.frames.last_mut() {
            f.field = key;
        }
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        self.leave();
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, v: &T) -> R {
        if let Some(f) = self.frames.last_mut() {
            f.field = key;
        }
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        self.leave();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::cache::Cache;

    fn neutral(sql: &str) -> bool {
        classify(sql, &|_| None).session_neutral
    }

    #[test]
    fn only_plain_queries_are_session_neutral() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
            "select count(*), max(a) from t where b > 3 group by a",
            "SELECT 1; SELECT 2",
            "WITH x AS (SELECT a FROM t) SELECT * FROM x",
            "SELECT now(), current_setting('search_path'), upper('x')",
            "VALUES (1), (2)",
        ] {
            assert!(neutral(sql), "{sql}");
        }
        for sql in [
            "SET search_path = x",
            "SELECT 1; SET application_name = 'x'",
            "BEGIN",
            "INSERT INTO t VALUES (1)",
            "SELECT * FROM t FOR UPDATE",
            "SELECT a INTO new_t FROM t",
            "WITH d AS (DELETE FROM t RETURNING a) SELECT * FROM d",
            "SELECT nextval('s')",
            "SELECT pg_backend_pid()",
            "SELECT inet_client_port()",
            "SELECT pg_advisory_lock(1)",
            "SELECT my_function(a) FROM t",
            "SELECT set_config('x.y', 'z', false)",
            "PREPARE p AS SELECT 1",
            "EXECUTE p",
            "DECLARE c CURSOR FOR SELECT 1",
            "LISTEN ch",
            "COPY t TO STDOUT",
            "SHOW search_path",
            "EXPLAIN SELECT 1",
            "DISCARD ALL",
            "CREATE TEMP TABLE x (a int)",
            "SELEC 1",
            "",
        ] {
            assert!(!neutral(sql), "{sql}");
        }
    }

    #[test]
    fn the_cache_keeps_session_neutrality() {
        let cache = Cache::default();
        let mut key = Vec::new();
        for _ in 0..2 {
            let c = classify_cached("SELECT a FROM t WHERE a = 1", &|_| None, &cache, &mut key);
            assert!(c.session_neutral);
            let c = classify_cached(
                "SELECT pg_backend_pid() WHERE 1 = 1",
                &|_| None,
                &cache,
                &mut key,
            );
            assert!(!c.session_neutral);
            let c = classify_cached(
                "UPDATE t SET a = 1 WHERE a = 2",
                &|_| None,
                &cache,
                &mut key,
            );
            assert!(!c.session_neutral);
        }
        assert_eq!(cache.len(), 3);
    }
}
