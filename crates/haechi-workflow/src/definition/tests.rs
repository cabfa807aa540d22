use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::action::reserved_env_name;
use super::*;

fn err(v: Value) -> String {
    parse(&v).unwrap_err().message
}

#[test]
fn password_params_round_trip_and_stay_out_of_stored_text() {
    let v = json!({"name": "n", "group": "g",
        "params": {"pw": {"type": "password"}, "opt": {"type": "password", "required": false},
                   "site": {"type": "string", "default": "a"}},
        "steps": [{"name": "t", "type": "task", "task": "x", "nodes": ["n1"],
                   "arguments": ["${site}"], "env": {"PGPASSWORD": "${pw}"}}]});
    let d = parse(&v).unwrap();
    assert_eq!(d.password_params().collect::<Vec<_>>(), ["opt", "pw"]);
    assert!(d.params["pw"].is_required() && !d.params["opt"].is_required());
    // The stored form parses back to the same definition (restores go through it).
    let again = parse(&serde_json::to_value(&d).unwrap()).unwrap();
    assert_eq!(again, d);
    let given = json!({"pw": "s"});
    let r = resolve_params(&d, given.as_object().unwrap()).unwrap();
    assert_eq!(r["opt"], "");
    let e = resolve_params(&d, &Map::new()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("params.pw"));
    for (field, step) in [
        ("arguments[0]", json!({"arguments": ["${pw}"]})),
        ("env.LD_PRELOAD", json!({"env": {"LD_PRELOAD": "x"}})),
    ] {
        let mut bad = v.clone();
        for (k, x) in step.as_object().unwrap() {
            bad["steps"][0][k] = x.clone();
        }
        assert!(
            err(bad).starts_with(&format!("steps[0].{field}")),
            "{field}"
        );
    }
}

#[test]
fn workflow_steps_and_schedules_are_checked() {
    let v = json!({"name": "n", "group": "g", "params": {"site": null},
        "schedules": [{"cron": "*/2 * * * * *", "timezone": "Asia/Seoul", "params": {"site": "a"}}],
        "steps": [{"name": "w", "type": "workflow", "workflow": 7, "params": {"who": "${site}"}}]});
    let d = parse(&v).unwrap();
    assert_eq!(d.workflow_refs(), vec![(0, "7")]);
    assert_eq!(parse(&serde_json::to_value(&d).unwrap()).unwrap(), d);
    let mut bad = v.clone();
    bad["steps"][0]["params"] = json!({"who": "${nope}"});
    assert!(err(bad).starts_with("steps[0].params.who"));
    let mut bad = v.clone();
    bad["schedules"][0]["cron"] = json!("61 * * * *");
    assert!(err(bad).starts_with("schedules[0].cron"));
    let mut bad = v.clone();
    bad["schedules"][0]["timezone"] = json!("Nowhere/Else");
    assert!(err(bad).starts_with("schedules[0].timezone"));
    let mut bad = v;
    bad["schedules"][0]["params"] = json!({});
    assert!(err(bad).starts_with("schedules[0].params.site"));
}

fn db_step(extra: Value) -> Value {
    let mut step = json!({"name": "open", "type": "db_access", "policy": "P1"});
    for (k, v) in extra.as_object().unwrap() {
        step[k] = v.clone();
    }
    json!({"name": "w", "group": "g", "steps": [step]})
}

#[test]
fn db_access_durations() {
    for (given, ms) in [
        (json!({"duration": "90s"}), 90_000),
        (json!({"duration": "15m"}), 900_000),
        (json!({"duration": "1.5h"}), 5_400_000),
        (json!({"duration": "1500ms"}), 1_500),
        (json!({"duration": 30}), 30_000),
        (json!({"duration": " 2 m "}), 120_000),
        (json!({"minutes": 2.5}), 150_000),
    ] {
        let def = parse(&db_step(given.clone())).unwrap();
        let Action::DbAccess(d) = &def.steps[0].action else {
            panic!("{given}")
        };
        assert_eq!(d.duration, Secs(ms), "{given}");
        // Stored and read back unchanged.
        let text = serde_json::to_string(&def).unwrap();
        let back: Definition = serde_json::from_str(&text).unwrap();
        assert_eq!(back, def);
    }
    for (given, says) in [
        (json!({}), "is required"),
        (json!({"duration": "0s"}), "from 1 second to 24 hours"),
        (json!({"duration": "999ms"}), "from 1 second to 24 hours"),
        (json!({"duration": "24.1h"}), "from 1 second to 24 hours"),
        (json!({"duration": "1d"}), "must be a duration"),
        (json!({"duration": "-1m"}), "must be a duration"),
        (json!({"duration": [1]}), "must be a duration"),
        (json!({"minutes": 1, "duration": "1m"}), "not both"),
    ] {
        let m = err(db_step(given.clone()));
        assert!(m.contains(says), "{given}: {m}");
    }
}

#[test]
fn env_names_that_change_how_programs_run_are_refused() {
    for name in [
        "LD_PRELOAD",
        "ld_library_path",
        "PATH",
        "BASH_ENV",
        "PYTHONPATH",
        "HAECHI_X",
        "LC_ALL",
        "IFS",
    ] {
        assert!(reserved_env_name(name), "{name}");
    }
    for name in ["PGPASSWORD", "DB_PASSWORD", "API_TOKEN", "MYPATH"] {
        assert!(!reserved_env_name(name), "{name}");
    }
}

#[test]
fn parameters_choose_the_host_only_when_the_definition_says_so() {
    for fixed in [
        "https://api.example/x",
        "https://api.example/${p}",
        "https://api.example:8443/v1?q=${p}",
        "http://10.0.0.1#${p}",
        "https://api.example\\${p}",
    ] {
        assert!(host_is_fixed(fixed), "{fixed}");
    }
    for open in [
        "${url}",
        "https://${host}/x",
        "https://api.example${p}/x",
        "https://api.example:${port}/x",
        "http${s}://api.example/x",
        "https://user:${pw}@api.example/x",
    ] {
        assert!(!host_is_fixed(open), "{open}");
    }
    let wf = |url: &str, extra: Value| {
        let mut step = json!({"name": "a", "type": "http", "url": url});
        step.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        parse(&json!({"name": "w", "group": "g", "params": {"host": "h"}, "steps": [step]}))
    };
    let e = wf("https://${host}/x", json!({})).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("steps[0].url"), "{e:?}");
    assert!(e.message.contains("host_from_params"), "{}", e.message);
    let def = wf("https://${host}/x", json!({"host_from_params": true})).unwrap();
    match &def.steps[0].action {
        Action::Http(h) => assert!(h.host_from_params),
        other => panic!("{other:?}"),
    }
    assert!(wf("https://h/${host}", json!({"host_from_params": "yes"})).is_err());
}

#[test]
fn plain_list_runs_in_order() {
    let def = parse(&json!({"name": "w", "group": "g", "steps": [
        {"name": "a", "type": "sleep", "seconds": 0},
        {"name": "b", "type": "sleep", "seconds": 0.5},
        {"name": "c", "type": "sleep", "seconds": 1, "needs": []},
    ]}))
    .unwrap();
    let g = def.graph();
    assert_eq!(g.needs, vec![vec![], vec![0], vec![]]);
    assert_eq!(def.steps[1].action, Action::Sleep { seconds: Secs(500) });
}

#[test]
fn round_trips_through_json() {
    let def = parse(&json!({"name": "w", "group": "g", "params": {"p": "x", "q": null},
        "steps": [
        {"name": "a", "type": "http", "url": "https://x.example/${p}", "body": {"k": "${q}"},
         "retries": 2, "retry_delay_secs": 0.5, "on_failure": "continue"},
        {"name": "b", "type": "task", "task": "t", "nodes": ["n1"], "arguments": ["${p}", "a b"]},
        {"name": "c", "type": "approval", "role": "Task Approver", "timeout_secs": 60},
    ]}))
    .unwrap();
    let text = serde_json::to_string(&def).unwrap();
    let back: Definition = serde_json::from_str(&text).unwrap();
    assert_eq!(back, def);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["steps"][0]["retry_delay_secs"], json!(0.5));
    assert_eq!(v["steps"][2]["timeout_secs"], json!(60));
    assert!(v["steps"][1].get("retries").is_none());
}

#[test]
fn names_each_problem() {
    let base = |steps: Value| json!({"name": "w", "group": "g", "steps": steps});
    assert!(err(base(json!([{"name": "a", "type": "sleep", "seconds": 1}, {"name": "a", "type": "sleep", "seconds": 1}])))
        .contains("steps[1].name: 'a' is already the name of steps[0]"));
    assert!(err(base(
        json!([{"name": "a", "type": "sleep", "seconds": 1, "needs": ["zz"]}])
    ))
    .contains("needs 'zz', which is not a step"));
    let cycle = err(base(json!([
        {"name": "a", "type": "sleep", "seconds": 1, "needs": ["c"]},
        {"name": "b", "type": "sleep", "seconds": 1},
        {"name": "c", "type": "sleep", "seconds": 1}])));
    assert!(
        cycle.contains("cycle") && cycle.contains("a → b → c → a"),
        "{cycle}"
    );
    assert!(
        err(base(json!([{"name": "a", "type": "nap", "seconds": 1}])))
            .contains("unknown step type 'nap'")
    );
    assert!(err(base(
        json!([{"name": "a", "type": "sleep", "seconds": 1, "secnds": 2}])
    ))
    .contains("steps[0].secnds: step 'a': unknown field"));
    assert!(err(base(
        json!([{"name": "a", "type": "http", "url": "https://h/${nope}"}])
    ))
    .contains("'${nope}' names no parameter"));
    assert!(
        err(base(json!([{"name": "a", "type": "sleep", "seconds": -1}])))
            .contains("steps[0].seconds")
    );
    assert!(err(base(
        json!([{"name": "a", "type": "sleep", "seconds": 1, "retries": 1.5}])
    ))
    .contains("retries"));
    assert!(err(base(
        json!([{"name": "a", "type": "sleep", "seconds": 1, "on_failure": "explode"}])
    ))
    .contains("on_failure"));
    assert!(err(base(json!([]))).contains("at least one step"));
    assert!(err(json!({"group": "g", "steps": []})).contains("name: is required"));
    assert!(err(json!({"name": "12", "group": "g", "steps": []})).contains("only digits"));
    assert!(err(base(
        json!([{"name": "a", "type": "http", "url": "ftp://x"}])
    ))
    .contains("http"));
    assert!(err(base(
        json!([{"name": "a", "type": "task", "task": "t", "nodes": []}])
    ))
    .contains("at least one node"));
}

#[test]
fn substitutes_whole_strings() {
    let mut p = BTreeMap::new();
    p.insert("a".to_owned(), "x; rm -rf /".to_owned());
    assert_eq!(substitute("pre-${a}-post", &p), "pre-x; rm -rf /-post");
    assert_eq!(substitute("$${a} $5 ${a}", &p), "${a} $5 x; rm -rf /");
    assert_eq!(template_refs("${a}${b}").unwrap(), vec!["a", "b"]);
    assert!(template_refs("${a").is_err());
    assert!(template_refs("${ a }").is_err());
}

#[test]
fn params_resolve() {
    let def = parse(
        &json!({"name": "w", "group": "g", "params": {"a": "1", "b": null, "c": {"default": 3}},
        "steps": [{"name": "s", "type": "sleep", "seconds": 0}]}),
    )
    .unwrap();
    let given = json!({"b": "B"});
    let p = resolve_params(&def, given.as_object().unwrap()).unwrap();
    assert_eq!(p["a"], "1");
    assert_eq!(p["b"], "B");
    assert_eq!(p["c"], "3");
    let missing = resolve_params(&def, &Map::new()).unwrap_err();
    assert!(missing.message.contains("params.b"));
    let unknown = resolve_params(&def, json!({"b": "x", "z": 1}).as_object().unwrap()).unwrap_err();
    assert!(unknown.message.contains("params.z"));
}

#[test]
fn yaml_is_accepted() {
    let v = yaml_to_value(
        b"name: w\ngroup: DR\nsteps:\n  - name: a\n    type: sleep\n    seconds: 1\n",
    )
    .unwrap();
    let def = parse(&v).unwrap();
    assert_eq!(def.group, "DR");
    assert!(yaml_to_value(b"name: [").is_err());
}
