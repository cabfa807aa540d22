//! Typed, step-aware reading of one JSON object's fields.

use std::fmt;

use haechi_types::{Error, Result};
use serde_json::{Map, Value};

use super::{Secs, MAX_SECONDS_MS};

/// Typed access to the fields of one object, remembering which were read so the rest can be
/// reported as unknown.
pub(super) struct Fields<'a> {
    pub(super) map: &'a Map<String, Value>,
    pub(super) at: String,
    pub(super) step: Option<String>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(map: &'a Map<String, Value>, at: String) -> Self {
        Fields {
            map,
            at,
            step: None,
        }
    }

    pub(super) fn path(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    pub(super) fn err(&self, key: &str, message: impl fmt::Display) -> Error {
        match &self.step {
            Some(s) => Error::field(self.path(key), format_args!("step '{s}': {message}")),
            None => Error::field(self.path(key), message),
        }
    }

    pub(super) fn take(&mut self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// A required one-line text: not blank, no control characters, at most `max` characters.
    pub(super) fn req_text(&mut self, key: &str, max: usize) -> Result<String> {
        match self.take(key) {
            None | Some(Value::Null) => Err(self.err(key, "is required")),
            Some(Value::String(s)) => {
                if s.trim().is_empty() {
                    return Err(self.err(key, "must not be blank"));
                }
                if s.chars().count() > max {
                    return Err(self.err(key, format_args!("must be at most {max} characters")));
                }
                if s.chars().any(char::is_control) {
                    return Err(self.err(key, "must not contain control characters"));
                }
                Ok(s.clone())
            }
            Some(other) => Err(self.err(
                key,
                format_args!("must be a string (got {})", kind_of(other)),
            )),
        }
    }

    /// Optional free text (line breaks and tabs allowed).
    pub(super) fn free_text(&mut self, key: &str, max: usize) -> Result<Option<String>> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                if s.chars().count() > max {
                    return Err(self.err(key, format_args!("must be at most {max} characters")));
                }
                if s.chars()
                    .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
                {
                    return Err(self.err(key, "must not contain control characters"));
                }
                Ok(Some(s.clone()))
            }
            Some(other) => Err(self.err(
                key,
                format_args!("must be a string (got {})", kind_of(other)),
            )),
        }
    }

    pub(super) fn uint(&mut self, key: &str, max: u64) -> Result<Option<u64>> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => Err(self.err(
                    key,
                    format_args!("must be a whole number from 0 to {max} (got {v})"),
                )),
            },
        }
    }

    /// Seconds as a number (fractions to the millisecond); `positive` refuses 0.
    pub(super) fn seconds(&mut self, key: &str, positive: bool) -> Result<Option<Secs>> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let max = MAX_SECONDS_MS / 1000;
                let bad = || {
                    self.err(
                        key,
                        format_args!(
                            "must be a number of seconds {} {max} (got {v})",
                            if positive {
                                "above 0 and at most"
                            } else {
                                "from 0 to"
                            }
                        ),
                    )
                };
                let x = v.as_f64().filter(|x| x.is_finite()).ok_or_else(bad)?;
                let ms = (x * 1000.0).round();
                if ms < 0.0 || ms > MAX_SECONDS_MS as f64 || (positive && ms < 1.0) {
                    return Err(bad());
                }
                Ok(Some(Secs(ms as u64)))
            }
        }
    }

    pub(super) fn str_list(
        &mut self,
        key: &str,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Option<Vec<String>>> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => {
                if items.len() > max_items {
                    return Err(self.err(key, format_args!("at most {max_items} items")));
                }
                let mut out = Vec::with_capacity(items.len());
                for (j, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if s.len() <= max_bytes => out.push(s.clone()),
                        Value::String(_) => {
                            return Err(self.err(
                                &format!("{key}[{j}]"),
                                format_args!("is longer than {max_bytes} bytes"),
                            ))
                        }
                        other => {
                            return Err(self.err(
                                &format!("{key}[{j}]"),
                                format_args!("must be a string (got {})", kind_of(other)),
                            ))
                        }
                    }
                }
                Ok(Some(out))
            }
            Some(other) => Err(self.err(
                key,
                format_args!("must be a list of strings (got {})", kind_of(other)),
            )),
        }
    }

    /// Reports the first field not in `allowed`.
    pub(super) fn finish(self, allowed: &[&str]) -> Result<()> {
        if let Some(k) = self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(self.err(
                k,
                format_args!("unknown field; the fields here are {}", allowed.join(", ")),
            ));
        }
        Ok(())
    }
}

pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
