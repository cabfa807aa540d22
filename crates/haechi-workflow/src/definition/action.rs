//! Each step type's own fields, one parser per type.

use std::collections::BTreeMap;

use haechi_types::Result;
use serde_json::Value;

use super::fields::Fields;
use super::params::{check_param_name, scalar_text};
use super::template::{check_template, visit_strings};
use super::{
    Action, DbAccessAction, HttpAction, Secs, StepKind, TaskAction, VaultRef, WorkflowAction,
    DB_ACCESS_MAX_MS, DB_ACCESS_MIN_MS, MAX_ARGUMENTS, MAX_NAME_CHARS, MAX_NODES, MAX_PARAMS,
    MAX_TEXT_BYTES, MAX_URL_BYTES,
};

pub(super) fn action_fields(kind: StepKind) -> &'static [&'static str] {
    match kind {
        StepKind::Task => &[
            "task",
            "nodes",
            "arguments",
            "env_from_vault",
            "capture",
            "env",
        ],
        StepKind::Workflow => &["workflow", "params"],
        StepKind::Sleep => &["seconds"],
        StepKind::Http => &[
            "method",
            "url",
            "headers",
            "body",
            "expect_status",
            "host_from_params",
        ],
        StepKind::Approval => &["role"],
        StepKind::DbAccess => &["policy", "duration", "minutes"],
    }
}

const HTTP_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// The fields of a step of type `kind`.
pub(super) fn parse_action(kind: StepKind, f: &mut Fields<'_>) -> Result<Action> {
    match kind {
        StepKind::Sleep => Ok(Action::Sleep {
            seconds: f
                .seconds("seconds", false)?
                .ok_or_else(|| f.err("seconds", "is required for a sleep step"))?,
        }),
        StepKind::Approval => Ok(Action::Approval {
            role: f.req_text("role", 200)?,
        }),
        StepKind::DbAccess => parse_db_access(f),
        StepKind::Task => parse_task(f),
        StepKind::Workflow => parse_workflow(f),
        StepKind::Http => parse_http(f),
    }
}

/// A `task` step: the task, its nodes, its arguments and what it reads or captures.
fn parse_task(f: &mut Fields<'_>) -> Result<Action> {
    let task = f.req_text("task", 200)?;
    let nodes = f
        .str_list("nodes", MAX_NODES, 200)?
        .ok_or_else(|| f.err("nodes", "is required: the node ids to run the task on"))?;
    if nodes.is_empty() {
        return Err(f.err("nodes", "must name at least one node"));
    }
    for (j, n) in nodes.iter().enumerate() {
        if nodes[..j].contains(n) {
            return Err(f.err("nodes", format_args!("names node '{n}' twice")));
        }
    }
    let arguments = f
        .str_list("arguments", MAX_ARGUMENTS, 64 * 1024)?
        .unwrap_or_default();
    for (j, a) in arguments.iter().enumerate() {
        if a.contains('\0') {
            return Err(f.err(&format!("arguments[{j}]"), "must not contain a NUL byte"));
        }
        check_template(f, &format!("arguments[{j}]"), a)?;
    }
    let env_from_vault = parse_env_from_vault(f)?;
    let capture = parse_capture(f)?;
    let env = parse_env(f)?;
    for name in env.keys() {
        if env_from_vault.contains_key(name) {
            return Err(f.err(
                &format!("env.{name}"),
                "is also set by env_from_vault; name each variable once",
            ));
        }
    }
    Ok(Action::Task(TaskAction {
        task,
        nodes,
        arguments,
        env_from_vault,
        capture,
        env,
    }))
}

/// A `workflow` step: the child workflow (named, not templated) and its parameters.
fn parse_workflow(f: &mut Fields<'_>) -> Result<Action> {
    let workflow = match f.take("workflow") {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|x| x > 0) => n.to_string(),
        _ => f.req_text("workflow", MAX_NAME_CHARS)?,
    };
    if workflow.contains("${") {
        return Err(f.err(
            "workflow",
            "must name the workflow itself (its id or name); parameters are not substituted here",
        ));
    }
    let params = match f.take("params") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(o)) => {
            if o.len() > MAX_PARAMS {
                return Err(f.err("params", format_args!("at most {MAX_PARAMS} parameters")));
            }
            let mut out = BTreeMap::new();
            for (k, v) in o {
                let field = format!("params.{k}");
                let Some(t) = scalar_text(&f.path(&field), v)? else {
                    continue;
                };
                check_template(f, &field, &t)?;
                out.insert(k.clone(), t);
            }
            out
        }
        Some(_) => {
            return Err(f.err(
                "params",
                "must be an object: the child workflow's parameter → value (${name} allowed)",
            ))
        }
    };
    Ok(Action::Workflow(WorkflowAction { workflow, params }))
}

/// An `http` step: method, URL (whose host parameters may choose only when allowed), headers,
/// body and expected statuses.
fn parse_http(f: &mut Fields<'_>) -> Result<Action> {
    let method = match f.take("method") {
        None | Some(Value::Null) => "GET".to_owned(),
        Some(Value::String(m)) => {
            let up = m.to_ascii_uppercase();
            if !HTTP_METHODS.contains(&up.as_str()) {
                return Err(f.err(
                    "method",
                    format_args!("'{m}' is not one of {}", HTTP_METHODS.join(", ")),
                ));
            }
            up
        }
        Some(_) => return Err(f.err("method", "must be a string such as \"POST\"")),
    };
    let url = f.req_text("url", MAX_URL_BYTES)?;
    check_template(f, "url", &url)?;
    if !url.contains("${") {
        check_url(&url).map_err(|m| f.err("url", m))?;
    } else if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(f.err("url", "must start with http:// or https://"));
    }
    let host_from_params = match f.take("host_from_params") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(f.err("host_from_params", "must be true or false")),
    };
    if !host_from_params && !host_is_fixed(&url) {
        return Err(f.err(
            "url",
            "lets a parameter choose the scheme, host or port: write them out before \
             the first ${...} (parameters may fill the path, query and fragment), or \
             set host_from_params: true to let the parameter choose where to connect \
             (the egress rules still apply)",
        ));
    }
    let headers = parse_headers(f)?;
    let body = match f.take("body") {
        None | Some(Value::Null) => None,
        Some(b) => {
            if serde_json::to_vec(b).map(|v| v.len()).unwrap_or(0) > MAX_TEXT_BYTES {
                return Err(f.err("body", "is larger than 1 MiB"));
            }
            let mut problem = None;
            visit_strings(b, &mut |s| {
                if problem.is_none() {
                    if let Err(e) = check_template(f, "body", s) {
                        problem = Some(e);
                    }
                }
            });
            if let Some(e) = problem {
                return Err(e);
            }
            Some(b.clone())
        }
    };
    let expect_status = parse_expect_status(f)?;
    Ok(Action::Http(HttpAction {
        method,
        url,
        headers,
        body,
        expect_status,
        host_from_params,
    }))
}

/// An `http` step's `headers`: valid names, one-line values, and no `Idempotency-Key` (Haechi
/// sets it).
fn parse_headers(f: &mut Fields<'_>) -> Result<BTreeMap<String, String>> {
    Ok(match f.take("headers") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(h)) => {
            let mut out = BTreeMap::new();
            for (k, v) in h {
                let field = format!("headers.{k}");
                if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    return Err(f.err(&field, "is not a valid header name"));
                }
                if k.eq_ignore_ascii_case("idempotency-key") {
                    return Err(f.err(
                        &field,
                        "is set by Haechi itself (<execution_id>/<step>/<attempt>)",
                    ));
                }
                let Some(v) = v.as_str() else {
                    return Err(f.err(&field, "must be a string"));
                };
                if v.chars().any(|c| c.is_control() && c != '\t') {
                    return Err(f.err(&field, "must not contain control characters"));
                }
                check_template(f, &field, v)?;
                out.insert(k.clone(), v.to_owned());
            }
            out
        }
        Some(_) => return Err(f.err("headers", "must be an object of header: value")),
    })
}

/// An `http` step's `expect_status`: one status or a list of them.
fn parse_expect_status(f: &mut Fields<'_>) -> Result<Option<Vec<u16>>> {
    Ok(match f.take("expect_status") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            if items.is_empty() {
                return Err(f.err("expect_status", "must name at least one status"));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item.as_u64() {
                    Some(s) if (100..=599).contains(&s) => out.push(s as u16),
                    _ => {
                        return Err(f.err(
                            "expect_status",
                            "must be an HTTP status from 100 to 599, or a list of them",
                        ))
                    }
                }
            }
            Some(out)
        }
    })
}

/// A `db_access` step: the policy (named, not templated) and a window from 1 s to 24 h.
fn parse_db_access(f: &mut Fields<'_>) -> Result<Action> {
    let policy = match f.take("policy") {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|x| x > 0) => n.to_string(),
        _ => f.req_text("policy", 200)?,
    };
    if policy.contains("${") {
        return Err(f.err(
            "policy",
            "must name the policy itself (its policyId or index); parameters are not substituted here",
        ));
    }
    let duration = match (f.take("duration"), f.take("minutes")) {
        (Some(_), Some(_)) => {
            return Err(f.err("minutes", "give either duration or minutes, not both"))
        }
        (Some(d), None) => parse_duration(d).map_err(|m| f.err("duration", m))?,
        (None, Some(m)) => match m.as_f64().filter(|x| x.is_finite()) {
            Some(x) => Secs((x * 60_000.0).round().max(0.0) as u64),
            None => return Err(f.err("minutes", "must be a number of minutes")),
        },
        (None, None) => {
            return Err(f.err(
                "duration",
                "is required for a db_access step: how long the policy stays unlocked (\"90s\", \"15m\", \"1h\", or minutes: N)",
            ))
        }
    };
    if !(DB_ACCESS_MIN_MS..=DB_ACCESS_MAX_MS).contains(&duration.ms()) {
        let key = if f.map.contains_key("minutes") {
            "minutes"
        } else {
            "duration"
        };
        return Err(f.err(
            key,
            format_args!("must be from 1 second to 24 hours (got {duration})"),
        ));
    }
    Ok(Action::DbAccess(DbAccessAction { policy, duration }))
}

/// A task step's `env`: `{"NAME": "template"}`.
fn parse_env(f: &mut Fields<'_>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(v) = f.take("env").filter(|v| !v.is_null()) else {
        return Ok(out);
    };
    let Some(map) = v.as_object() else {
        return Err(f.err(
            "env",
            "must be an object: NAME → value (\"${param}\" to pass a parameter)",
        ));
    };
    if map.len() > MAX_ENV_FROM_VAULT {
        return Err(f.err(
            "env",
            format_args!("names at most {MAX_ENV_FROM_VAULT} variables"),
        ));
    }
    for (name, t) in map {
        let field = format!("env.{name}");
        check_env_name(f, &field, name)?;
        let Some(t) = t.as_str() else {
            return Err(f.err(
                &field,
                "must be a string (\"${param}\" to pass a parameter)",
            ));
        };
        if t.len() > 64 * 1024 || t.contains('\0') {
            return Err(f.err(&field, "must be at most 64 KiB, without NUL bytes"));
        }
        check_template(f, &field, t)?;
        out.insert(name.clone(), t.to_owned());
    }
    Ok(out)
}

fn check_env_name(f: &Fields<'_>, field: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 100;
    if !valid {
        return Err(f.err(
            field,
            "is not a valid environment variable name (letters, digits and '_', not starting with a digit)",
        ));
    }
    if reserved_env_name(name) {
        return Err(f.err(
            field,
            "is set by the agent itself or changes how programs run (PATH, LD_*, BASH_ENV…); choose another name",
        ));
    }
    Ok(())
}

/// Most `capture` variables of one step.
const MAX_CAPTURES: usize = 50;
/// Longest `capture` regex, bytes.
const MAX_CAPTURE_REGEX: usize = 1000;

/// A task step's `capture`: `{"NAME": "regex with one group"}`.
fn parse_capture(f: &mut Fields<'_>) -> Result<BTreeMap<String, String>> {
    let Some(v) = f.take("capture") else {
        return Ok(BTreeMap::new());
    };
    let Some(map) = v.as_object() else {
        if v.is_null() {
            return Ok(BTreeMap::new());
        }
        return Err(f.err(
            "capture",
            "must be an object: variable name → a regex with one group",
        ));
    };
    if map.len() > MAX_CAPTURES {
        return Err(f.err("capture", format_args!("at most {MAX_CAPTURES} variables")));
    }
    let mut out = BTreeMap::new();
    for (name, re) in map {
        let field = format!("capture.{name}");
        check_param_name(&f.path(&field), name)?;
        let Some(re) = re.as_str() else {
            return Err(f.err(&field, "must be a regex (a string)"));
        };
        if re.len() > MAX_CAPTURE_REGEX {
            return Err(f.err(
                &field,
                format_args!("must be at most {MAX_CAPTURE_REGEX} bytes"),
            ));
        }
        let compiled = regex::RegexBuilder::new(re)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| f.err(&field, format_args!("is not a valid regex: {e}")))?;
        if compiled.captures_len() != 2 {
            return Err(f.err(
                &field,
                format_args!(
                    "must have exactly one group (the value to capture); it has {}",
                    compiled.captures_len() - 1
                ),
            ));
        }
        out.insert(name.clone(), re.to_owned());
    }
    Ok(out)
}

const MAX_ENV_FROM_VAULT: usize = 50;

fn parse_env_from_vault(f: &mut Fields<'_>) -> Result<BTreeMap<String, VaultRef>> {
    let mut out = BTreeMap::new();
    let Some(v) = f.take("env_from_vault") else {
        return Ok(out);
    };
    if v.is_null() {
        return Ok(out);
    }
    let Some(map) = v.as_object() else {
        return Err(f.err(
            "env_from_vault",
            "must be an object: NAME → {\"credentialId\": N, \"attribute\": \"password\"}",
        ));
    };
    if map.len() > MAX_ENV_FROM_VAULT {
        return Err(f.err(
            "env_from_vault",
            format_args!("names at most {MAX_ENV_FROM_VAULT} variables"),
        ));
    }
    for (name, r) in map {
        let field = format!("env_from_vault.{name}");
        check_env_name(f, &field, name)?;
        let Some(o) = r.as_object() else {
            return Err(f.err(
                &field,
                "must be {\"credentialId\": N, \"attribute\": \"name\"}",
            ));
        };
        let mut g = Fields::new(o, format!("{}.{field}", f.at));
        g.step = f.step.clone();
        let credential_id = match g.take("credentialId") {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|x| x > 0) => n.as_i64().unwrap_or(0),
            Some(Value::String(s)) if s.parse::<i64>().is_ok_and(|x| x > 0) => {
                s.parse().unwrap_or(0)
            }
            _ => {
                return Err(g.err(
                    "credentialId",
                    "is required: the numeric id of a vault credential",
                ))
            }
        };
        let attribute = g.req_text("attribute", 200)?;
        g.finish(&["credentialId", "attribute"])?;
        out.insert(
            name.clone(),
            VaultRef {
                credential_id,
                attribute,
            },
        );
    }
    Ok(out)
}

/// A duration: a number of seconds, or a string of a number and a unit (`90s`, `15m`, `1.5h`;
/// a bare number in a string is seconds).
fn parse_duration(v: &Value) -> std::result::Result<Secs, String> {
    let bad = || format!("must be a duration such as \"90s\", \"15m\" or \"1h\" (got {v})");
    let (num, unit_ms) = match v {
        Value::Number(n) => (n.as_f64().ok_or_else(bad)?, 1000.0),
        Value::String(s) => {
            let t = s.trim();
            let (n, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
                Some((i, _)) => (&t[..i], &t[i..]),
                None => (t, "s"),
            };
            let unit_ms = match unit {
                "ms" => 1.0,
                "s" | "sec" | "secs" => 1000.0,
                "m" | "min" | "mins" => 60_000.0,
                "h" => 3_600_000.0,
                _ => return Err(bad()),
            };
            (n.trim().parse::<f64>().map_err(|_| bad())?, unit_ms)
        }
        _ => return Err(bad()),
    };
    if !num.is_finite() || num < 0.0 {
        return Err(bad());
    }
    Ok(Secs((num * unit_ms).round() as u64))
}

/// Names the agent sets itself, or that change how programs load or behave (an injected
/// library, a shell start-up file): an `env_from_vault` name may not be one of them.
pub(super) fn reserved_env_name(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "IFS",
        "ENV",
        "BASH_ENV",
        "CDPATH",
        "PS4",
        "SHELLOPTS",
        "BASHOPTS",
        "GLOBIGNORE",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "PERL5LIB",
        "PERL5OPT",
        "PERLLIB",
        "RUBYLIB",
        "RUBYOPT",
        "NODE_OPTIONS",
        "NODE_PATH",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "LANG",
        "TZ",
        "TMPDIR",
    ];
    let up = name.to_ascii_uppercase();
    EXACT.contains(&up.as_str())
        || up.starts_with("HAECHI_")
        || up.starts_with("LD_")
        || up.starts_with("LC_")
        || up.starts_with("BASH_FUNC_")
        || up.starts_with("DYLD_")
}

/// Checks an absolute http(s) URL.
pub fn check_url(url: &str) -> std::result::Result<reqwest::Url, String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        Ok(_) => Err(format!(
            "'{url}' must be an http:// or https:// URL with a host"
        )),
        Err(e) => Err(format!("'{url}' is not a valid URL ({e})")),
    }
}

/// Does a URL template write its scheme, host and port out in full before anything is
/// substituted, so that no parameter can change where the step connects? (Any `$` counts as
/// the start of a substitution here.)
pub fn host_is_fixed(url: &str) -> bool {
    let literal = url.find('$').map_or(url, |i| &url[..i]);
    if literal.len() == url.len() {
        return true;
    }
    let Some(start) = literal.find("://").map(|i| i + 3) else {
        return false;
    };
    // The authority ends at the first of these; what follows cannot change the host.
    let Some(end) = literal[start..]
        .find(['/', '?', '#', '\\'])
        .map(|i| start + i)
    else {
        return false;
    };
    end > start && check_url(&format!("{}/", &literal[..end])).is_ok()
}
