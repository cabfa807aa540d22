//! `haechi wf ...`: the client commands of the workflow engine, including
//! `wf run NAME --follow`, which prints every step transition (and the output of task steps)
//! as it happens and exits non-zero unless the run completes.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::Client;

#[derive(Subcommand)]
pub enum WfCmd {
    /// Run a workflow (by id or name).
    Run {
        /// Workflow id or name.
        workflow: String,
        /// A parameter, NAME=VALUE (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Print every step transition and the output of task steps as they happen, and exit
        /// non-zero unless the run completes.
        #[arg(long)]
        follow: bool,
    },
    /// List workflows.
    List {
        #[arg(long)]
        group: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Show a workflow's definition (or one of its versions).
    Show {
        workflow: String,
        /// A version (default: the current one).
        #[arg(long, value_name = "VERSION")]
        rev: Option<i64>,
    },
    /// Create a workflow from a definition file (JSON, or YAML for .yaml/.yml files).
    Create {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Make a new version of a workflow from a definition file.
    Update {
        workflow: String,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Delete a workflow (its runs stay readable).
    Delete { workflow: String },
    /// Executions, newest first, with filters.
    Executions {
        /// Only this workflow's (id).
        #[arg(long)]
        workflow: Option<String>,
        /// RUNNING, PAUSED, COMPLETED, FAILED or STOPPED.
        #[arg(long)]
        status: Option<String>,
        /// Started by this user id.
        #[arg(long)]
        started_by: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show an execution with every step.
    Status {
        execution: String,
        /// Print every step transition and task output until the run ends (as `run --follow`).
        #[arg(long)]
        follow: bool,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop, pause or resume an execution.
    Control {
        execution: String,
        /// stop, pause or resume
        action: String,
    },
    /// The RTO report of an execution: each step's target against its real duration.
    Report {
        execution: String,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A workflow's schedules and their next fires, as a table.
    Schedules {
        workflow: String,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// An operator's action on a failed step: retry it, skip it or mark it as succeeded.
    Step {
        #[command(subcommand)]
        action: StepCmd,
    },
    /// Approve or reject an approval step.
    Decide {
        execution: String,
        step: String,
        /// approve or reject
        action: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

/// `haechi wf step ...`.
#[derive(Subcommand)]
pub enum StepCmd {
    /// Start a new attempt of a failed step (a FAILED run goes on from it).
    Retry {
        execution: String,
        step: String,
        /// Why (required; audited and shown on the step).
        #[arg(long)]
        reason: String,
        /// A task step's argument for the new attempt (repeatable; replaces the definition's).
        #[arg(long = "arg", value_name = "ARG")]
        args: Vec<String>,
    },
    /// Skip a failed step (or a waiting step of a paused run); its dependents go on.
    Skip {
        execution: String,
        step: String,
        #[arg(long)]
        reason: String,
    },
    /// Mark a failed step as succeeded after checking by hand; its dependents go on.
    MarkSucceeded {
        execution: String,
        step: String,
        #[arg(long)]
        reason: String,
    },
}

fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn read_definition(file: &PathBuf) -> anyhow::Result<Value> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    if yaml {
        haechi_workflow::definition::yaml_to_value(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.message))
    } else {
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", file.display()))
    }
}

pub async fn wf(cmd: WfCmd) -> anyhow::Result<ExitCode> {
    let c = Arc::new(Client::from_session()?);
    match cmd {
        WfCmd::Run {
            workflow,
            params,
            follow,
        } => run(c, &workflow, &params, follow).await,
        WfCmd::List {
            group,
            limit,
            offset,
        } => list(&c, group, limit, offset).await,
        WfCmd::Show { workflow, rev } => show(&c, &workflow, rev).await,
        WfCmd::Create { file } => {
            let def = read_definition(&file)?;
            printed(
                c.call(Method::POST, "/api/v1/workflows", Some(&def))
                    .await?,
            )
        }
        WfCmd::Update { workflow, file } => {
            let def = read_definition(&file)?;
            let path = format!("/api/v1/workflows/{}", segment(&workflow));
            printed(c.call(Method::PUT, &path, Some(&def)).await?)
        }
        WfCmd::Delete { workflow } => {
            let path = format!("/api/v1/workflows/{}", segment(&workflow));
            c.call(Method::DELETE, &path, None).await?;
            println!("deleted {workflow}");
            Ok(ExitCode::SUCCESS)
        }
        WfCmd::Executions {
            workflow,
            status,
            started_by,
            limit,
            json,
        } => executions(&c, [workflow, status, started_by], limit, json).await,
        WfCmd::Status {
            execution,
            follow: true,
            ..
        } => follow_execution(c, &execution).await,
        WfCmd::Status {
            execution, json, ..
        } => {
            let view = get_execution(&c, &execution).await?;
            Ok(printed_as(&view, json, print_execution))
        }
        WfCmd::Control { execution, action } => {
            let path = format!("/api/v1/executions/{}/control", segment(&execution));
            let body = json!({ "action": action });
            printed(c.call(Method::POST, &path, Some(&body)).await?)
        }
        WfCmd::Schedules { workflow, json } => schedules(&c, &workflow, json).await,
        WfCmd::Report { execution, json } => {
            let path = format!("/api/v1/executions/{}/report", segment(&execution));
            let report = c.call(Method::GET, &path, None).await?;
            Ok(printed_as(&report, json, print_report))
        }
        WfCmd::Step { action } => step_action(&c, action).await,
        WfCmd::Decide {
            execution,
            step,
            action,
            comment,
        } => {
            let path = format!(
                "/api/v1/executions/{}/steps/{}/decision",
                segment(&execution),
                segment(&step)
            );
            let body = json!({ "action": action, "comment": comment });
            printed(c.call(Method::POST, &path, Some(&body)).await?)
        }
    }
}

/// Prints an answer as JSON: what a subcommand without a human view shows.
fn printed(v: Value) -> anyhow::Result<ExitCode> {
    print_json(&v);
    Ok(ExitCode::SUCCESS)
}

/// Prints a document as JSON (`--json`) or through its human view.
fn printed_as(doc: &Value, json: bool, human: fn(&Value)) -> ExitCode {
    if json {
        print_json(doc);
    } else {
        human(doc);
    }
    ExitCode::SUCCESS
}

/// An execution as it stands.
async fn get_execution(c: &Client, execution: &str) -> anyhow::Result<Value> {
    c.call(
        Method::GET,
        &format!("/api/v1/executions/{}", segment(execution)),
        None,
    )
    .await
}

/// `wf list`.
async fn list(
    c: &Client,
    group: Option<String>,
    limit: u32,
    offset: u32,
) -> anyhow::Result<ExitCode> {
    let mut path = format!("/api/v1/workflows?limit={limit}&offset={offset}");
    if let Some(g) = group {
        path.push_str(&format!("&group={}", segment(&g)));
    }
    printed(c.call(Method::GET, &path, None).await?)
}

/// `wf show`.
async fn show(c: &Client, workflow: &str, rev: Option<i64>) -> anyhow::Result<ExitCode> {
    let mut path = format!("/api/v1/workflows/{}", segment(workflow));
    if let Some(v) = rev {
        path.push_str(&format!("?version={v}"));
    }
    printed(c.call(Method::GET, &path, None).await?)
}

/// `wf executions`, filtered by workflow, status and who started them (in that order).
async fn executions(
    c: &Client,
    filters: [Option<String>; 3],
    limit: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut path = format!("/api/v1/executions?limit={limit}");
    for (k, v) in ["wf_id", "status", "started_by"].into_iter().zip(filters) {
        if let Some(v) = v {
            path.push_str(&format!("&{k}={}", segment(&v)));
        }
    }
    let list = c.call(Method::GET, &path, None).await?;
    Ok(printed_as(&list, json, print_executions))
}

/// `wf schedules`: a workflow's schedules and their next fire times.
async fn schedules(c: &Client, workflow: &str, json: bool) -> anyhow::Result<ExitCode> {
    let path = format!("/api/v1/workflows/{}", segment(workflow));
    let doc = c.call(Method::GET, &path, None).await?;
    if json {
        print_json(
            &json!({ "id": doc["id"], "schedules": doc["schedules"], "next_fires": doc["next_fires"] }),
        );
    } else {
        print_schedules(&doc);
    }
    Ok(ExitCode::SUCCESS)
}

/// `wf step retry|skip|mark-succeeded`, then the execution as it stands.
async fn step_action(c: &Client, action: StepCmd) -> anyhow::Result<ExitCode> {
    let (execution, step, body) = match action {
        StepCmd::Retry {
            execution,
            step,
            reason,
            args,
        } => {
            let mut body = json!({ "action": "retry", "reason": reason });
            if !args.is_empty() {
                body["arguments"] = json!(args);
            }
            (execution, step, body)
        }
        StepCmd::Skip {
            execution,
            step,
            reason,
        } => (
            execution,
            step,
            json!({ "action": "skip", "reason": reason }),
        ),
        StepCmd::MarkSucceeded {
            execution,
            step,
            reason,
        } => (
            execution,
            step,
            json!({ "action": "mark_succeeded", "reason": reason }),
        ),
    };
    c.call(
        Method::POST,
        &format!(
            "/api/v1/executions/{}/steps/{}/actions",
            segment(&execution),
            segment(&step)
        ),
        Some(&body),
    )
    .await?;
    let view = get_execution(c, &execution).await?;
    print_execution(&view);
    Ok(ExitCode::SUCCESS)
}

fn parse_params(params: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--param {p:?}: write NAME=VALUE");
        };
        if k.is_empty() {
            bail!("--param {p:?}: the name is empty");
        }
        out.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(out)
}

async fn run(
    c: Arc<Client>,
    workflow: &str,
    params: &[String],
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let params = parse_params(params)?;
    let started = c
        .call(
            Method::POST,
            &format!("/api/v1/workflows/{}/executions", segment(workflow)),
            Some(&json!({ "params": params })),
        )
        .await?;
    let id = started["execution_id"]
        .as_str()
        .context("the server's answer has no execution_id")?
        .to_owned();
    if !follow {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{id} started ({} version {})",
        started["workflow_name"].as_str().unwrap_or(workflow),
        started["version"]
    );
    follow_execution(c, &id).await
}

/// Prints an execution's transitions (from its start) and its task steps' output until it
/// ends; exits 0 when it completes, 2 when it failed, 3 when it was stopped.
async fn follow_execution(c: Arc<Client>, id: &str) -> anyhow::Result<ExitCode> {
    let id = id.to_owned();
    let mut after = 0i64;
    let mut followed: HashSet<i64> = HashSet::new();
    let mut followers = Vec::new();
    let status = loop {
        let page = c
            .call(
                Method::GET,
                &format!(
                    "/api/v1/executions/{}/events?after={after}&wait_secs=30",
                    segment(&id)
                ),
                None,
            )
            .await?;
        for e in page["events"].as_array().into_iter().flatten() {
            print_event(e);
            if let (Some(no), Some(step)) = (e["taskInstanceNo"].as_i64(), e["step"].as_str()) {
                if followed.insert(no) {
                    followers.push(tokio::spawn(follow_output(c.clone(), step.to_owned(), no)));
                }
            }
        }
        after = page["next"].as_i64().unwrap_or(after);
        let status = page["status"].as_str().unwrap_or("").to_owned();
        if matches!(status.as_str(), "COMPLETED" | "FAILED" | "STOPPED")
            && page["events"].as_array().is_none_or(|a| a.is_empty())
        {
            break status;
        }
    };
    for f in followers {
        let _ = tokio::time::timeout(Duration::from_secs(10), f).await;
    }
    let view = get_execution(&c, &id).await?;
    match status.as_str() {
        "COMPLETED" => {
            println!("{id} COMPLETED");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            let why = view["error"].as_str().unwrap_or("");
            println!(
                "{id} {other}{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            );
            Ok(ExitCode::from(if other == "STOPPED" { 3 } else { 2 }))
        }
    }
}

fn print_event(e: &Value) {
    let at = e["at"].as_i64().unwrap_or(0);
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let clock = format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
    let status = e["status"].as_str().unwrap_or("");
    let message = e["message"].as_str().unwrap_or("");
    let attempt = e["attempt"].as_i64().unwrap_or(0);
    let what = match e["step"].as_str() {
        Some(step) if attempt > 1 => format!("step {step} (attempt {attempt})"),
        Some(step) => format!("step {step}"),
        None => "run".to_owned(),
    };
    if message.is_empty() {
        println!("{clock} {what} {status}");
    } else {
        println!("{clock} {what} {status}: {message}");
    }
}

/// Prints the output of every node of a task step's instance as it arrives, prefixed with the
/// step and node.
async fn follow_output(c: Arc<Client>, step: String, no: i64) {
    let detail = match c
        .call(Method::GET, &format!("/api/v1/task-instances/{no}"), None)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("[{step}] cannot follow task instance {no}: {e:#}");
            return;
        }
    };
    let nodes: Vec<String> = detail["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["nodeId"].as_str().map(str::to_owned))
        .collect();
    let mut offsets: HashMap<String, (i64, i64, bool)> =
        nodes.iter().map(|n| (n.clone(), (0, 0, false))).collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    loop {
        let mut all_done = true;
        for node in &nodes {
            let Some(&(out, err, done)) = offsets.get(node) else {
                continue;
            };
            if done {
                continue;
            }
            let path = format!(
                "/api/v1/task-instances/{no}/nodes/{}/output?outOffset={out}&errOffset={err}",
                segment(node)
            );
            let chunk = match c.call(Method::GET, &path, None).await {
                Ok(v) => v,
                Err(_) => {
                    all_done = false;
                    continue;
                }
            };
            for (field, to_err) in [("out", false), ("err", true)] {
                let bytes = b64
                    .decode(chunk[field].as_str().unwrap_or(""))
                    .unwrap_or_default();
                if bytes.is_empty() {
                    continue;
                }
                let text = String::from_utf8_lossy(&bytes);
                for line in text.lines() {
                    if to_err {
                        eprintln!("[{step}/{node}] {line}");
                    } else {
                        println!("[{step}/{node}] {line}");
                    }
                }
            }
            let _ = std::io::stdout().flush();
            let completed = chunk["completed"].as_bool().unwrap_or(false);
            offsets.insert(
                node.clone(),
                (
                    chunk["outOffset"].as_i64().unwrap_or(out),
                    chunk["errOffset"].as_i64().unwrap_or(err),
                    completed,
                ),
            );
            all_done &= completed;
        }
        if all_done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

use crate::table::{cell, local_time, Table};

fn print_schedules(doc: &Value) {
    let schedules = doc["schedules"].as_array().cloned().unwrap_or_default();
    if schedules.is_empty() {
        println!(
            "workflow {} ({}) has no schedules",
            cell(&doc["name"]),
            cell(&doc["id"])
        );
        return;
    }
    let mut t = Table::new(&["#", "CRON", "TIME ZONE", "MISFIRE", "PARAMS"]);
    for (i, s) in schedules.iter().enumerate() {
        let params = s["params"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", cell(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        t.row(vec![
            i.to_string(),
            cell(&s["cron"]),
            s["timezone"].as_str().unwrap_or("(server)").to_owned(),
            s["misfire"].as_str().unwrap_or("run_once").to_owned(),
            params,
        ]);
    }
    t.print();
    println!();
    let mut n = Table::new(&["NEXT FIRE", "#", "CRON"]);
    for f in doc["next_fires"].as_array().cloned().unwrap_or_default() {
        n.row(vec![
            local_time(f["at"].as_i64()),
            cell(&f["schedule"]),
            cell(&f["cron"]),
        ]);
    }
    n.print();
}

fn print_executions(list: &Value) {
    let mut t = Table::new(&[
        "EXECUTION",
        "WORKFLOW",
        "STATUS",
        "STEP",
        "STARTED BY",
        "STARTED",
        "ENDED",
    ]);
    let items = list["executions"].as_array().cloned().unwrap_or_default();
    for e in &items {
        t.row(vec![
            cell(&e["execution_id"]),
            format!("{} ({})", cell(&e["workflow_name"]), cell(&e["wf_id"])),
            cell(&e["status"]),
            cell(&e["current_step"]),
            cell(&e["started_by"]),
            local_time(e["created_at"].as_i64()),
            local_time(e["ended_at"].as_i64()),
        ]);
    }
    t.print();
    println!("{} of {}", items.len(), list["total"]);
}

fn print_execution(v: &Value) {
    println!(
        "{}  {} ({} v{})  {}  started by {} at {}, ended {}",
        cell(&v["execution_id"]),
        cell(&v["workflow_name"]),
        cell(&v["wf_id"]),
        cell(&v["version"]),
        cell(&v["status"]),
        cell(&v["started_by"]),
        local_time(v["created_at"].as_i64()),
        local_time(v["ended_at"].as_i64()),
    );
    if let Some(e) = v["error"].as_str() {
        println!("error: {e}");
    }
    let mut t = Table::new(&[
        "STEP", "TYPE", "STATUS", "ATTEMPTS", "STARTED", "ENDED", "DETAIL",
    ]);
    for s in v["steps"].as_array().into_iter().flatten() {
        let detail = if let Some(no) = s["taskInstanceNo"].as_i64() {
            format!("task instance {no}")
        } else if let Some(d) = s["decision"].as_object() {
            format!(
                "{} by {}",
                cell(d.get("action").unwrap_or(&Value::Null)),
                cell(d.get("by").unwrap_or(&Value::Null))
            )
        } else {
            String::new()
        };
        let detail = match s["error"].as_str() {
            Some(e) if detail.is_empty() => e.to_owned(),
            Some(e) => format!("{detail}; {e}"),
            None => detail,
        };
        t.row(vec![
            cell(&s["name"]),
            cell(&s["type"]),
            cell(&s["status"]),
            cell(&s["attempts"]),
            local_time(s["started_at"].as_i64()),
            local_time(s["ended_at"].as_i64()),
            detail,
        ]);
    }
    t.print();
    let mut actions = Table::new(&["STEP", "ACTION", "BY", "AT", "ATTEMPT", "REASON"]);
    let mut any = false;
    for s in v["steps"].as_array().into_iter().flatten() {
        for a in s["actions"].as_array().into_iter().flatten() {
            any = true;
            let mut what = cell(&a["action"]);
            if let Some(args) = a["arguments"].as_array() {
                let args: Vec<String> = args.iter().map(cell).collect();
                what = format!("{what} [{}]", args.join(" "));
            }
            actions.row(vec![
                cell(&s["name"]),
                what,
                cell(&a["by"]),
                local_time(a["at"].as_i64()),
                cell(&a["attempt"]),
                cell(&a["reason"]),
            ]);
        }
    }
    if any {
        println!("operator actions:");
        actions.print();
    }
}

fn secs_cell(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{x:.1}s"))
        .unwrap_or_else(|| "-".to_owned())
}

fn within_cell(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".to_owned(),
        Some(false) => "MISSED".to_owned(),
        None => "-".to_owned(),
    }
}

fn print_report(r: &Value) {
    println!(
        "{}  {} ({} v{})  {}  started by {} at {}, ended {}",
        cell(&r["execution_id"]),
        cell(&r["workflow_name"]),
        cell(&r["wf_id"]),
        cell(&r["version"]),
        cell(&r["status"]),
        cell(&r["started_by"]),
        local_time(r["created_at"].as_i64()),
        local_time(r["ended_at"].as_i64()),
    );
    let mut t = Table::new(&[
        "STEP",
        "TYPE",
        "STATUS",
        "RTO",
        "ACTUAL",
        "WITHIN",
        "ATTEMPTS",
        "DECISIONS",
    ]);
    for s in r["steps"].as_array().into_iter().flatten() {
        let decisions: Vec<String> = s["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                format!(
                    "{} by {}: {}",
                    cell(&a["action"]),
                    cell(&a["by"]),
                    cell(&a["reason"])
                )
            })
            .collect();
        t.row(vec![
            cell(&s["name"]),
            cell(&s["type"]),
            cell(&s["status"]),
            secs_cell(&s["rto_secs"]),
            secs_cell(&s["duration_secs"]),
            within_cell(&s["within_rto"]),
            cell(&s["attempts"]),
            if decisions.is_empty() {
                "-".to_owned()
            } else {
                decisions.join("; ")
            },
        ]);
    }
    t.row(vec![
        "(whole run)".to_owned(),
        "-".to_owned(),
        cell(&r["status"]),
        secs_cell(&r["rto_secs"]),
        secs_cell(&r["duration_secs"]),
        within_cell(&r["within_rto"]),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    t.print();
}
