//! Step conditions (`if`, CONTRACT §9): expressions in CEL, the Common Expression Language,
//! through the `cel` crate. CEL is made for this: it has no loops, no I/O, no way to reach the
//! server or a shell, and evaluation is bounded by the size of its inputs. An expression reads
//! three names only:
//!
//! - `params.NAME`: the run's parameters (strings);
//! - `vars.NAME`: values captured by earlier task steps (`capture`, strings);
//! - `steps.NAME.status`: an earlier step's status (`"SUCCEEDED"`, `"FAILED"`, `"SKIPPED"`, …;
//!   `steps["name with spaces"].status` for any name).
//!
//! with `==`, `!=`, `&&`, `||`, `!`, parentheses, string and number literals, and
//! `contains(a, b)` (also written `a.contains(b)`); the rest of CEL's standard functions
//! (`size`, `startsWith`, `matches`, `in`, …) work too. A definition whose expression does not
//! parse, or names anything else, is refused when it is saved, with the line and column.

use std::collections::{BTreeMap, HashMap};

/// Longest expression, bytes.
const MAX_EXPRESSION_BYTES: usize = 4000;

/// The names an expression may read.
const ROOTS: [&str; 3] = ["params", "vars", "steps"];

fn compile(src: &str) -> Result<cel::Program, String> {
    if src.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "must be at most {MAX_EXPRESSION_BYTES} bytes (got {})",
            src.len()
        ));
    }
    if src.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    cel::Program::compile(src).map_err(|e| {
        let first = e.errors.first();
        match first {
            Some(p) => format!(
                "is not a valid expression: {} at line {}, column {}",
                p.msg,
                p.pos.0,
                p.pos.1 + 1
            ),
            None => format!("is not a valid expression: {e}"),
        }
    })
}

/// Checks an expression when a definition is saved: it parses, and reads only `params`,
/// `vars` and `steps`.
pub(crate) fn check(src: &str) -> Result<(), String> {
    let program = compile(src)?;
    let refs = program.references();
    let mut unknown: Vec<&str> = refs
        .variables()
        .into_iter()
        .filter(|v| !ROOTS.contains(v))
        .collect();
    unknown.sort_unstable();
    if let Some(v) = unknown.first() {
        return Err(format!(
            "names '{v}', which an expression cannot read: it reads params.NAME, vars.NAME and steps.NAME.status"
        ));
    }
    Ok(())
}

/// Evaluates a condition: `Ok(true)` runs the step, `Ok(false)` skips it, `Err` says why it
/// could not be decided (an unknown key, a value that is not true or false).
pub(crate) fn eval(
    src: &str,
    params: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
    steps: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let program = compile(src)?;
    let mut ctx = cel::Context::default();
    let as_map = |m: &BTreeMap<String, String>| -> HashMap<String, String> {
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let step_map: HashMap<String, HashMap<String, String>> = steps
        .iter()
        .map(|(name, status)| {
            (
                name.clone(),
                HashMap::from([("status".to_owned(), status.clone())]),
            )
        })
        .collect();
    ctx.add_variable_from_value("params", as_map(params));
    ctx.add_variable_from_value("vars", as_map(vars));
    ctx.add_variable_from_value("steps", step_map);
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "the condition gave {}, not true or false",
            describe(&other)
        )),
        Err(e) => Err(format!("the condition could not be evaluated: {e}")),
    }
}

fn describe(v: &cel::Value) -> String {
    match v {
        cel::Value::String(s) => format!("the string {:?}", s.as_str()),
        cel::Value::Int(i) => format!("the number {i}"),
        cel::Value::UInt(i) => format!("the number {i}"),
        cel::Value::Float(f) => format!("the number {f}"),
        cel::Value::Null => "null".to_owned(),
        _ => "a value".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn conditions_read_params_vars_and_statuses() {
        let params = m(&[("site", "B"), ("mode", "drill")]);
        let vars = m(&[("lag", "12")]);
        let steps = m(&[("check", "SUCCEEDED"), ("switch traffic", "FAILED")]);
        let t = |e: &str| eval(e, &params, &vars, &steps).unwrap();
        assert!(t("params.site == 'B'"));
        assert!(!t("params.site != 'B'"));
        assert!(t("steps.check.status == 'SUCCEEDED' && !(vars.lag == '0')"));
        assert!(t("steps['switch traffic'].status == 'FAILED' || false"));
        assert!(t("contains(params.mode, 'dri')"));
        assert!(t("params.mode.contains('ill')"));
        assert!(t("int(vars.lag) > 10"));
        assert!(eval("vars.nope == 'x'", &params, &vars, &steps).is_err());
        assert!(eval("params.site", &params, &vars, &steps)
            .unwrap_err()
            .contains("not true or false"));
    }

    #[test]
    fn bad_expressions_are_refused_with_their_position() {
        let e = check("params.site == ").unwrap_err();
        assert!(e.contains("line 1, column"), "{e}");
        let e = check("(params.a == 'x'").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = check("env.HOME == 'x'").unwrap_err();
        assert!(e.contains("'env'"), "{e}");
        assert!(check("params.a == 'x' && steps.b.status == 'SKIPPED'").is_ok());
        assert!(check("").is_err());
    }
}
