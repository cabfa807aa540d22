//! From a JSON (or YAML) value to a [`Definition`]: the top level, the schedules and the
//! common step fields; each step type's own fields are in [`super::action`].

use std::collections::{BTreeMap, HashMap};

use haechi_types::{Error, Result};
use serde_json::Value;

use super::action::{action_fields, parse_action};
use super::checks::{check_cycles, check_needs, check_param_refs, check_schedule_params};
use super::fields::{kind_of, Fields};
use super::params::{parse_params, scalar_text};
use super::{
    Definition, Misfire, OnFailure, Schedule, Step, StepKind, MAX_CONCURRENCY,
    MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, MAX_RETRIES, MAX_SCHEDULES, MAX_STEPS,
    MAX_STEP_NAME_CHARS,
};

/// Parses YAML text into a JSON value (YAML is a superset; keys must be strings).
pub fn yaml_to_value(text: &[u8]) -> Result<Value> {
    let text = std::str::from_utf8(text).map_err(|_| {
        Error::new(
            haechi_types::Code::MalformedBody,
            "the YAML body is not valid UTF-8",
        )
    })?;
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        Error::new(
            haechi_types::Code::MalformedBody,
            format!("the body is not valid YAML{at}"),
        )
    })
}

/// Parses and checks a definition (everything but the task and role references, which need
/// the store: see [`Definition::references`]).
pub fn parse(value: &Value) -> Result<Definition> {
    let Some(map) = value.as_object() else {
        return Err(Error::invalid(
            "a workflow definition must be an object with name, group and steps",
        ));
    };
    let mut top = Fields::new(map, String::new());
    let name = top.req_text("name", MAX_NAME_CHARS)?;
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::field(
            "name",
            "must not be only digits (it would read as a workflow id)",
        ));
    }
    let group = top.req_text("group", MAX_NAME_CHARS)?;
    // No invisible characters or compatibility look-alikes (issue 18 item 11).
    for (field, v) in [("name", &name), ("group", &group)] {
        haechi_types::ident::check(field, v, MAX_NAME_CHARS, haechi_types::ident::Spaces::Free)?;
    }
    let description = top
        .free_text("description", MAX_DESCRIPTION_CHARS)?
        .unwrap_or_default();
    let params = parse_params(top.take("params"))?;
    let rto_secs = top.seconds("rto_secs", true)?;
    let concurrency = match top.uint("concurrency", MAX_CONCURRENCY)? {
        Some(0) => {
            return Err(Error::field(
                "concurrency",
                "must be at least 1 (leave it out for no limit)",
            ))
        }
        other => other.map(|n| n as u32),
    };
    let schedules = parse_schedules(top.take("schedules"))?;
    let steps_value = top
        .take("steps")
        .ok_or_else(|| Error::field("steps", "is required: a list of steps"))?;
    top.finish(&[
        "name",
        "group",
        "description",
        "params",
        "rto_secs",
        "concurrency",
        "schedules",
        "steps",
    ])?;
    let Some(list) = steps_value.as_array() else {
        return Err(Error::field("steps", "must be a list of steps"));
    };
    if list.is_empty() {
        return Err(Error::field("steps", "must hold at least one step"));
    }
    if list.len() > MAX_STEPS {
        return Err(Error::field(
            "steps",
            format_args!(
                "holds {} steps; at most {MAX_STEPS} are allowed",
                list.len()
            ),
        ));
    }
    let mut steps = Vec::with_capacity(list.len());
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, v) in list.iter().enumerate() {
        let step = parse_step(i, v)?;
        steps.push(step);
    }
    for (i, s) in steps.iter().enumerate() {
        if let Some(first) = seen.insert(s.name.as_str(), i) {
            return Err(Error::field(
                format!("steps[{i}].name"),
                format_args!(
                    "'{}' is already the name of steps[{first}]; step names must be unique",
                    s.name
                ),
            ));
        }
    }
    let def = Definition {
        name,
        group,
        description,
        params,
        rto_secs,
        concurrency,
        schedules,
        steps,
    };
    check_needs(&def)?;
    check_cycles(&def)?;
    check_param_refs(&def)?;
    check_schedule_params(&def)?;
    Ok(def)
}

fn parse_schedules(v: Option<&Value>) -> Result<Vec<Schedule>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let Some(list) = v.as_array() else {
        return Err(Error::field(
            "schedules",
            "must be a list of {\"cron\", \"timezone\"?, \"params\"?, \"misfire\"?}",
        ));
    };
    if list.len() > MAX_SCHEDULES {
        return Err(Error::field(
            "schedules",
            format_args!("at most {MAX_SCHEDULES} schedules"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = format!("schedules[{i}]");
        let Some(map) = item.as_object() else {
            return Err(Error::field(&at, "must be an object with cron"));
        };
        let mut f = Fields::new(map, at.clone());
        let cron = f.req_text("cron", 200)?;
        let timezone = match f.take("timezone") {
            None | Some(Value::Null) => None,
            Some(_) => Some(f.req_text("timezone", 100)?),
        };
        haechi_exec::CronSpec::parse(&cron, timezone.as_deref(), 0, true)
            .map_err(|(field, m)| Error::field(format!("{at}.{field}"), m))?;
        let params = match f.take("params") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(o)) => {
                let mut p = BTreeMap::new();
                for (k, v) in o {
                    if let Some(t) = scalar_text(&format!("{at}.params.{k}"), v)? {
                        p.insert(k.clone(), t);
                    }
                }
                p
            }
            Some(_) => return Err(f.err("params", "must be an object: name → value")),
        };
        let misfire = match f.take("misfire") {
            None | Some(Value::Null) => Misfire::RunOnce,
            Some(Value::String(s)) if s == "run_once" => Misfire::RunOnce,
            Some(Value::String(s)) if s == "skip" => Misfire::Skip,
            Some(other) => {
                return Err(f.err(
                    "misfire",
                    format_args!("must be \"run_once\" or \"skip\" (got {other})"),
                ))
            }
        };
        f.finish(&["cron", "timezone", "params", "misfire"])?;
        out.push(Schedule {
            cron,
            timezone,
            params,
            misfire,
        });
    }
    Ok(out)
}

fn parse_step(i: usize, v: &Value) -> Result<Step> {
    let at = format!("steps[{i}]");
    let Some(map) = v.as_object() else {
        return Err(Error::field(&at, "must be an object with name and type"));
    };
    let mut f = Fields::new(map, at.clone());
    let name = f.req_text("name", MAX_STEP_NAME_CHARS)?;
    f.step = Some(name.clone());
    let kind_text = f.req_text("type", 50)?;
    let Some(kind) = StepKind::ALL.into_iter().find(|k| k.as_str() == kind_text) else {
        return Err(f.err(
            "type",
            format_args!(
                "unknown step type '{kind_text}'; the types are {}",
                StepKind::ALL.map(StepKind::as_str).join(", ")
            ),
        ));
    };
    let needs = match f.take("needs") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(items)) => {
            let mut out: Vec<String> = Vec::with_capacity(items.len());
            for (j, item) in items.iter().enumerate() {
                let Some(s) = item.as_str() else {
                    return Err(f.err(&format!("needs[{j}]"), "must be a step name (a string)"));
                };
                if out.iter().any(|o| o == s) {
                    return Err(f.err("needs", format_args!("names '{s}' twice")));
                }
                out.push(s.to_owned());
            }
            Some(out)
        }
        Some(_) => return Err(f.err("needs", "must be a list of step names")),
    };
    let timeout_secs = f.seconds("timeout_secs", true)?;
    let retries = f.uint("retries", MAX_RETRIES)?.unwrap_or(0) as u32;
    let retry_delay_secs = f.seconds("retry_delay_secs", false)?;
    let retry_backoff = match f.take("retry_backoff") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(x) if (1.0..=10.0).contains(&x) => Some(x),
            _ => return Err(f.err("retry_backoff", "must be a number from 1 to 10")),
        },
    };
    let retry_max_delay_secs = f.seconds("retry_max_delay_secs", false)?;
    let on_failure = match f.take("on_failure") {
        None | Some(Value::Null) => OnFailure::Stop,
        Some(Value::String(s)) if s == "stop" => OnFailure::Stop,
        Some(Value::String(s)) if s == "continue" => OnFailure::Continue,
        Some(Value::String(s)) if s == "ask" => OnFailure::Ask,
        Some(other) => {
            return Err(f.err(
                "on_failure",
                format_args!("must be \"stop\", \"continue\" or \"ask\" (got {other})"),
            ))
        }
    };
    let rto_secs = f.seconds("rto_secs", true)?;
    let condition = match f.take("if") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => {
            crate::expr::check(e).map_err(|m| f.err("if", m))?;
            Some(e.clone())
        }
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(other) => {
            return Err(f.err(
                "if",
                format_args!("must be an expression (a string), got {}", kind_of(other)),
            ))
        }
    };
    let action = parse_action(kind, &mut f)?;
    let mut allowed = vec![
        "name",
        "type",
        "needs",
        "timeout_secs",
        "retries",
        "retry_delay_secs",
        "retry_backoff",
        "retry_max_delay_secs",
        "on_failure",
        "rto_secs",
        "if",
    ];
    allowed.extend_from_slice(action_fields(kind));
    f.finish(&allowed)?;
    Ok(Step {
        name,
        action,
        needs,
        timeout_secs,
        retries,
        retry_delay_secs,
        retry_backoff,
        retry_max_delay_secs,
        on_failure,
        rto_secs,
        condition,
    })
}
