//! Parameters: their declarations, their names, and the values of one execution.

use std::collections::BTreeMap;

use haechi_types::{Error, Result};
use serde_json::{Map, Value};

use super::fields::Fields;
use super::{Definition, ParamSpec, ParamType, MAX_DESCRIPTION_CHARS, MAX_PARAMS, MAX_TEXT_BYTES};

pub(super) fn parse_params(v: Option<&Value>) -> Result<BTreeMap<String, ParamSpec>> {
    let mut out = BTreeMap::new();
    let Some(v) = v else { return Ok(out) };
    if v.is_null() {
        return Ok(out);
    }
    let Some(map) = v.as_object() else {
        return Err(Error::field(
            "params",
            "must be an object: parameter name → default value (a string), null (required), \
             or {default, description}",
        ));
    };
    if map.len() > MAX_PARAMS {
        return Err(Error::field(
            "params",
            format_args!("at most {MAX_PARAMS} parameters"),
        ));
    }
    for (name, spec) in map {
        check_param_name(&format!("params.{name}"), name)?;
        let field = format!("params.{name}");
        let spec = match spec {
            Value::Null => ParamSpec {
                kind: ParamType::String,
                default: None,
                required: None,
                description: String::new(),
            },
            Value::Object(o) => {
                let mut f = Fields::new(o, field.clone());
                let kind = match f.take("type") {
                    None | Some(Value::Null) => ParamType::String,
                    Some(Value::String(t)) if t == "string" => ParamType::String,
                    Some(Value::String(t)) if t == "password" => ParamType::Password,
                    Some(other) => {
                        return Err(f.err(
                            "type",
                            format_args!("must be \"string\" or \"password\" (got {other})"),
                        ))
                    }
                };
                let default = f
                    .take("default")
                    .map(|d| scalar_text(&format!("{field}.default"), d))
                    .transpose()?
                    .flatten();
                if kind == ParamType::Password && default.is_some() {
                    return Err(f.err(
                        "default",
                        "a password parameter cannot have a default: it would be stored in the definition in clear; give the value at execute time",
                    ));
                }
                let required = match f.take("required") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => return Err(f.err("required", "must be true or false")),
                };
                let description = f
                    .free_text("description", MAX_DESCRIPTION_CHARS)?
                    .unwrap_or_default();
                f.finish(&["type", "default", "required", "description"])?;
                ParamSpec {
                    kind,
                    default,
                    required,
                    description,
                }
            }
            other => ParamSpec {
                kind: ParamType::String,
                default: scalar_text(&field, other)?,
                required: None,
                description: String::new(),
            },
        };
        out.insert(name.clone(), spec);
    }
    Ok(out)
}

/// A parameter value: strings as they are, numbers and booleans as their text; `None` for null.
pub fn scalar_text(field: &str, v: &Value) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            if s.len() > MAX_TEXT_BYTES {
                return Err(Error::field(field, "is longer than 1 MiB"));
            }
            Ok(Some(s.clone()))
        }
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(Error::field(
            field,
            "must be a string (or a number or boolean, used as text)",
        )),
    }
}

pub(super) fn check_param_name(field: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name.len() <= 100;
    if ok {
        Ok(())
    } else {
        Err(Error::field(
            field,
            format_args!(
                "'{name}' is not a valid parameter name: use letters, digits, '_', '-' and '.', \
                 starting with a letter or '_' (at most 100)"
            ),
        ))
    }
}

/// The values of an execution's parameters: each given value, else the default; a declared
/// parameter with neither, or a value for an undeclared one, is a 400.
pub fn resolve_params(
    def: &Definition,
    given: &Map<String, Value>,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, v) in given {
        if !def.params.contains_key(name) {
            let declared = if def.params.is_empty() {
                "it takes none".to_owned()
            } else {
                format!(
                    "its parameters are {}",
                    def.params.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(Error::field(
                format!("params.{name}"),
                format_args!("is not a parameter of workflow '{}' ({declared})", def.name),
            ));
        }
        if let Some(text) = scalar_text(&format!("params.{name}"), v)? {
            out.insert(name.clone(), text);
        }
    }
    for (name, spec) in &def.params {
        if out.contains_key(name) {
            continue;
        }
        match &spec.default {
            Some(d) => {
                out.insert(name.clone(), d.clone());
            }
            None if !spec.is_required() => {
                out.insert(name.clone(), String::new());
            }
            None => {
                return Err(Error::field(
                    format!("params.{name}"),
                    format_args!(
                        "is required by workflow '{}' ({})",
                        def.name,
                        if spec.is_password() {
                            "a password parameter, given at execute time"
                        } else {
                            "it has no default"
                        }
                    ),
                ))
            }
        }
    }
    Ok(out)
}
