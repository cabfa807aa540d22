//! `${name}` templates: the names a text refers to, and their substitution.

use std::collections::BTreeMap;

use haechi_types::Result;
use serde_json::Value;

use super::fields::Fields;
use super::params::check_param_name;

pub(super) fn visit_strings(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| visit_strings(x, f)),
        Value::Object(o) => o.values().for_each(|x| visit_strings(x, f)),
        _ => {}
    }
}

pub(super) fn check_template(f: &Fields<'_>, field: &str, text: &str) -> Result<()> {
    template_refs(text).map(|_| ()).map_err(|m| f.err(field, m))
}

/// The parameter names a template refers to. `${name}` is a reference; `$${` is a literal `${`.
pub fn template_refs(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            rest = tail;
            continue;
        }
        if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(
                    "has '${' without a closing '}' (write $${ for a literal ${)".to_owned(),
                );
            };
            let name = &tail[..end];
            if check_param_name("", name).is_err() {
                return Err(format!("'${{{name}}}' does not name a parameter"));
            }
            out.push(name.to_owned());
            rest = &tail[end + 1..];
        } else {
            rest = after;
        }
    }
    Ok(out)
}

/// Replaces each `${name}` in `text` by its value (`$${` stays a literal `${`). Every name
/// was checked to have a value when the execution started.
pub fn substitute(text: &str, params: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
            continue;
        }
        if let Some(tail) = after.strip_prefix('{') {
            if let Some(end) = tail.find('}') {
                let name = &tail[..end];
                match params.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push_str("${");
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &tail[end + 1..];
                continue;
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// [`substitute`] inside every string of a JSON value (keys are left alone).
pub fn substitute_json(v: &Value, params: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(substitute(s, params)),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute_json(x, params)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute_json(x, params)))
                .collect(),
        ),
        other => other.clone(),
    }
}
