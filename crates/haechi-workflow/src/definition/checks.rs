//! Checks across the whole definition, once every step parsed: step references, cycles,
//! parameter references and the schedules' parameters.

use std::collections::{HashMap, HashSet};

use haechi_types::{Error, Result};

use super::template::{template_refs, visit_strings};
use super::{Action, Definition, ParamSpec};

/// A schedule's parameters must be the workflow's, fill every required one, and never hold a
/// password (it would sit in the definition in clear).
pub(super) fn check_schedule_params(def: &Definition) -> Result<()> {
    for (i, s) in def.schedules.iter().enumerate() {
        for name in s.params.keys() {
            match def.params.get(name) {
                None => {
                    return Err(Error::field(
                        format!("schedules[{i}].params.{name}"),
                        "is not a parameter of this workflow",
                    ))
                }
                Some(p) if p.is_password() => {
                    return Err(Error::field(
                        format!("schedules[{i}].params.{name}"),
                        "is a password parameter: a schedule cannot hold its value (it would be stored in the definition in clear)",
                    ))
                }
                _ => {}
            }
        }
        for (name, p) in &def.params {
            if p.is_required() && !s.params.contains_key(name) {
                return Err(Error::field(
                    format!("schedules[{i}].params.{name}"),
                    format_args!(
                        "is required by the workflow{}; a scheduled run has nobody to give it",
                        if p.is_password() { " (a password)" } else { "" }
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn check_needs(def: &Definition) -> Result<()> {
    let names: HashMap<&str, usize> = def
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for (i, s) in def.steps.iter().enumerate() {
        for (j, n) in s.needs.iter().flatten().enumerate() {
            if !names.contains_key(n.as_str()) {
                return Err(def.step_error(
                    i,
                    &format!("needs[{j}]"),
                    format_args!("needs '{n}', which is not a step of this workflow"),
                ));
            }
            if *n == s.name {
                return Err(def.step_error(
                    i,
                    &format!("needs[{j}]"),
                    "a step cannot need itself (a cycle)",
                ));
            }
        }
    }
    Ok(())
}

/// Finds a cycle and names it: `steps form a cycle: a → b → c → a`.
pub(super) fn check_cycles(def: &Definition) -> Result<()> {
    let graph = def.graph();
    let n = def.steps.len();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; n];
    for start in 0..n {
        if state[start] != 0 {
            continue;
        }
        // Iterative DFS: (node, next edge index).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
            if let Some(&next) = graph.needs[node].get(*edge) {
                *edge += 1;
                match state[next] {
                    0 => {
                        state[next] = 1;
                        stack.push((next, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(s, _)| *s == next).unwrap_or(0);
                        // The stack runs from a step to a step it needs; show the order they run.
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(s, _)| *s).collect();
                        cycle.reverse();
                        // Start at the step defined first, so the message is stable.
                        let first = (0..cycle.len()).min_by_key(|k| cycle[*k]).unwrap_or(0);
                        cycle.rotate_left(first);
                        let mut names: Vec<&str> =
                            cycle.iter().map(|s| def.steps[*s].name.as_str()).collect();
                        names.push(names[0]);
                        return Err(Error::field(
                            "steps",
                            format_args!(
                                "the steps form a cycle through 'needs': {}",
                                names.join(" → ")
                            ),
                        ));
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

pub(super) fn check_param_refs(def: &Definition) -> Result<()> {
    // Variables a task step captures fill `${NAME}` like parameters (in steps that run after
    // it; before, they are empty).
    let mut captured: HashSet<&str> = HashSet::new();
    for (i, s) in def.steps.iter().enumerate() {
        if let Action::Task(t) = &s.action {
            for name in t.capture.keys() {
                if def.params.contains_key(name) {
                    return Err(def.step_error(
                        i,
                        &format!("capture.{name}"),
                        format_args!("'{name}' is already a parameter of the workflow"),
                    ));
                }
                captured.insert(name.as_str());
            }
        }
    }
    for (i, s) in def.steps.iter().enumerate() {
        let mut fields: Vec<(String, &str)> = Vec::new();
        let mut body_strings: Vec<String> = Vec::new();
        // Where a password parameter may go: only a task step's `env` (never stored).
        let mut secret_ok: Vec<String> = Vec::new();
        match &s.action {
            Action::Task(t) => {
                for (j, a) in t.arguments.iter().enumerate() {
                    fields.push((format!("arguments[{j}]"), a));
                }
                for (k, v) in &t.env {
                    fields.push((format!("env.{k}"), v));
                    secret_ok.push(format!("env.{k}"));
                }
            }
            Action::Workflow(w) => {
                for (k, v) in &w.params {
                    fields.push((format!("params.{k}"), v));
                }
            }
            Action::Http(h) => {
                fields.push(("url".to_owned(), &h.url));
                for (k, v) in &h.headers {
                    fields.push((format!("headers.{k}"), v));
                }
                if let Some(b) = &h.body {
                    visit_strings(b, &mut |x| body_strings.push(x.to_owned()));
                }
            }
            _ => {}
        }
        let body = body_strings.iter().map(|b| ("body".to_owned(), b.as_str()));
        for (field, text) in fields.into_iter().chain(body) {
            for name in template_refs(text).unwrap_or_default() {
                if def.params.get(&name).is_some_and(ParamSpec::is_password)
                    && !secret_ok.contains(&field)
                {
                    return Err(def.step_error(
                        i,
                        &field,
                        format_args!(
                            "'${{{name}}}' is a password parameter: it may only reach a task \
                             through a task step's env (arguments, URLs, bodies and child \
                             workflows' params are stored and shown in clear)"
                        ),
                    ));
                }
                if !def.params.contains_key(&name) && !captured.contains(name.as_str()) {
                    let declared = if def.params.is_empty() {
                        "the workflow declares no params".to_owned()
                    } else {
                        format!(
                            "declared: {}",
                            def.params.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    };
                    return Err(def.step_error(
                        i,
                        &field,
                        format_args!(
                            "'${{{name}}}' names no parameter, so neither a default nor an \
                             execute-time value can fill it; declare it under 'params' ({declared})"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::definition::parse;

    fn problem(steps: Value) -> (String, String) {
        let e = parse(
            &json!({"name": "w", "group": "g", "params": {"p": null, "pw": {"type": "password"}},
            "steps": steps}),
        )
        .unwrap_err();
        (e.field.unwrap_or_default(), e.message)
    }

    fn sleep(name: &str, needs: Value) -> Value {
        json!({"name": name, "type": "sleep", "seconds": 1, "needs": needs})
    }

    #[test]
    fn a_cycle_is_named_from_the_first_step_in_run_order() {
        let (field, message) = problem(json!([
            sleep("start", json!([])),
            sleep("a", json!(["c", "start"])),
            sleep("b", json!(["a"])),
            sleep("c", json!(["b"])),
        ]));
        assert_eq!(field, "steps");
        assert!(message.ends_with("a → b → c → a"), "{message}");
        let (_, message) = problem(json!([sleep("a", json!(["a"]))]));
        assert!(message.contains("a step cannot need itself"), "{message}");
    }

    #[test]
    fn a_need_must_name_a_step() {
        let (field, message) = problem(json!([
            sleep("a", json!([])),
            sleep("b", json!(["a", "nope"]))
        ]));
        assert_eq!(field, "steps[1].needs[1]");
        assert_eq!(
            message,
            "steps[1].needs[1]: step 'b': needs 'nope', which is not a step of this workflow"
        );
    }

    #[test]
    fn a_step_name_is_used_once() {
        let (field, message) = problem(json!([sleep("a", json!([])), sleep("a", json!([]))]));
        assert_eq!(field, "steps[1].name");
        assert!(
            message.contains("'a' is already the name of steps[0]"),
            "{message}"
        );
    }

    #[test]
    fn a_later_step_may_be_needed_by_an_earlier_one() {
        let ok = parse(&json!({"name": "w", "group": "g", "steps": [
            sleep("a", json!(["b"])), sleep("b", json!([]))]}));
        assert!(ok.is_ok());
    }

    #[test]
    fn parameter_references_are_checked_where_they_are_written() {
        let (field, message) = problem(json!([{"name": "h", "type": "http",
            "url": "https://example.com/${pw}"}]));
        assert_eq!(field, "steps[0].url");
        assert!(message.contains("is a password parameter"), "{message}");
        let (field, message) = problem(json!([{"name": "t", "type": "task", "task": "1",
            "nodes": ["n"], "capture": {"p": "(.*)"}}]));
        assert_eq!(field, "steps[0].capture.p");
        assert!(message.contains("already a parameter"), "{message}");
        // A password may reach a task through its env.
        assert!(parse(
            &json!({"name": "w", "group": "g", "params": {"pw": {"type": "password"}},
            "steps": [{"name": "t", "type": "task", "task": "1", "nodes": ["n"],
                       "env": {"PW": "${pw}"}}]})
        )
        .is_ok());
    }

    #[test]
    fn a_schedule_fills_every_required_parameter_but_never_a_password() {
        let def = |schedules: Value| {
            parse(
                &json!({"name": "w", "group": "g", "params": {"p": null, "pw": {"type": "password", "required": false}},
                "schedules": schedules, "steps": [sleep("a", json!([]))]}),
            )
        };
        let e = def(json!([{"cron": "0 1 * * *"}])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("schedules[0].params.p"));
        let e =
            def(json!([{"cron": "0 1 * * *", "params": {"p": "x", "pw": "secret"}}])).unwrap_err();
        assert!(e.message.contains("password parameter"), "{}", e.message);
        assert!(def(json!([{"cron": "0 1 * * *", "params": {"p": "x"}}])).is_ok());
    }
}
