//! `haechi task ...` and `haechi node ...`: the client commands of the execution engine,
//! including `task run --follow`, which prints output as it arrives and exits with the worst
//! exit code of the nodes.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;

#[derive(Subcommand)]
pub enum TaskCmd {
    /// A task's instances, newest first, with how many nodes are in each status.
    Instances {
        /// Task id.
        task: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a task on nodes.
    Run {
        /// Task id.
        task: String,
        /// Node ids, comma-separated (repeatable).
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// An argument for the script (repeatable, in order).
        #[arg(long = "arg", allow_hyphen_values = true)]
        args: Vec<String>,
        /// Print the output as it arrives and exit with the worst exit code of the nodes.
        #[arg(long)]
        follow: bool,
    },
    /// List tasks.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Show a task (or one of its revisions).
    Show {
        task: String,
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Create a task from a JSON file (the body of POST /api/v1/tasks).
    Create {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Edit a task from a JSON file (a new revision; its approval goes back to N).
    Update {
        task: String,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Ask for approval.
    Request {
        task: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Show the revision under review and its diff to the last approved revision.
    Review { task: String },
    /// Approve a requested task at the revision you reviewed (`haechi task review`).
    Approve {
        task: String,
        /// The revision you reviewed; refused when the task has another one now.
        #[arg(long)]
        revision: i64,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a requested task at the revision you reviewed (`haechi task review`).
    Reject {
        task: String,
        /// The revision you reviewed; refused when the task has another one now.
        #[arg(long)]
        revision: i64,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Show a task instance and its nodes.
    Instance { instance: i64 },
    /// Cancel a task instance (or one node of it).
    Cancel {
        instance: i64,
        #[arg(long)]
        node: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Show a node.
    Show { node: String },
    /// Enable a node.
    Enable { node: String },
    /// Disable a node (it gets no new work).
    Disable { node: String },
    /// Revoke a node's agent credential (the agent must enrol again).
    Revoke { node: String },
    /// Create an enrolment token for `haechi agent --enroll-token`.
    Token {
        #[arg(long)]
        ttl_secs: Option<u64>,
        #[arg(long)]
        uses: Option<u64>,
    },
}

fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn read_json(file: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

pub async fn task(cmd: TaskCmd) -> anyhow::Result<ExitCode> {
    let c = Client::from_session()?;
    let t = |id: &str| format!("/api/v1/tasks/{}", seg(id));
    let out = match cmd {
        TaskCmd::Instances { task, limit, json } => {
            return instances(&c, &task, limit, json).await;
        }
        TaskCmd::Run {
            task,
            nodes,
            args,
            follow,
        } => {
            let body = json!({ "nodeIdList": nodes, "arguments": args });
            let detail = c
                .call(
                    Method::POST,
                    &format!("{}/instances", t(&task)),
                    Some(&body),
                )
                .await?;
            if !follow {
                detail
            } else {
                let no = detail["instance"]["taskInstanceNo"]
                    .as_i64()
                    .context("the server's answer has no instance number")?;
                eprintln!("haechi: task instance {no}");
                return follow_instance(&c, no, &nodes).await;
            }
        }
        TaskCmd::List { limit, offset } => {
            c.call(
                Method::GET,
                &format!("/api/v1/tasks?limit={limit}&offset={offset}"),
                None,
            )
            .await?
        }
        TaskCmd::Show {
            task,
            revision: None,
        } => c.call(Method::GET, &t(&task), None).await?,
        TaskCmd::Show {
            task,
            revision: Some(n),
        } => {
            c.call(Method::GET, &format!("{}/revisions/{n}", t(&task)), None)
                .await?
        }
        TaskCmd::Create { file } => {
            c.call(Method::POST, "/api/v1/tasks", Some(&read_json(&file)?))
                .await?
        }
        TaskCmd::Update { task, file } => {
            c.call(Method::PUT, &t(&task), Some(&read_json(&file)?))
                .await?
        }
        TaskCmd::Review { task } => {
            let review = c
                .call(Method::GET, &format!("{}/approval", t(&task)), None)
                .await?;
            println!(
                "{} revision {} (approval {}, requested by {}); decide with --revision {}",
                review["taskId"].as_str().unwrap_or(""),
                review["revisionNo"],
                review["apprvStatus"].as_str().unwrap_or(""),
                review["apprvRequestedBy"].as_str().unwrap_or(""),
                review["revisionNo"],
            );
            print!("{}", review["diff"].as_str().unwrap_or(""));
            return Ok(ExitCode::SUCCESS);
        }
        TaskCmd::Request { task, comment } => {
            approval(&c, &t(&task), "request", None, comment).await?
        }
        TaskCmd::Approve {
            task,
            revision,
            comment,
        } => approval(&c, &t(&task), "approve", Some(revision), comment).await?,
        TaskCmd::Reject {
            task,
            revision,
            comment,
        } => approval(&c, &t(&task), "reject", Some(revision), comment).await?,
        TaskCmd::Instance { instance } => {
            c.call(
                Method::GET,
                &format!("/api/v1/task-instances/{instance}"),
                None,
            )
            .await?
        }
        TaskCmd::Cancel { instance, node } => {
            c.call(
                Method::POST,
                &format!("/api/v1/task-instances/{instance}/cancel"),
                Some(&json!({ "nodeId": node })),
            )
            .await?
        }
    };
    print(&out);
    Ok(ExitCode::SUCCESS)
}

async fn approval(
    c: &Client,
    path: &str,
    action: &str,
    revision: Option<i64>,
    comment: Option<String>,
) -> anyhow::Result<Value> {
    c.call(
        Method::POST,
        &format!("{path}/approval"),
        Some(&json!({ "action": action, "revisionNo": revision, "comment": comment })),
    )
    .await
}

pub async fn node(cmd: NodeCmd) -> anyhow::Result<ExitCode> {
    let c = Client::from_session()?;
    let n = |id: &str| format!("/api/v1/nodes/{}", seg(id));
    let out = match cmd {
        NodeCmd::List { limit, offset } => {
            c.call(
                Method::GET,
                &format!("/api/v1/nodes?limit={limit}&offset={offset}"),
                None,
            )
            .await?
        }
        NodeCmd::Show { node } => c.call(Method::GET, &n(&node), None).await?,
        NodeCmd::Enable { node } => {
            c.call(Method::PATCH, &n(&node), Some(&json!({ "status": "E" })))
                .await?
        }
        NodeCmd::Disable { node } => {
            c.call(Method::PATCH, &n(&node), Some(&json!({ "status": "D" })))
                .await?
        }
        NodeCmd::Revoke { node } => {
            c.call(Method::POST, &format!("{}/revoke", n(&node)), None)
                .await?
        }
        NodeCmd::Token { ttl_secs, uses } => {
            c.call(
                Method::POST,
                "/api/v1/agents/enrollment-tokens",
                Some(&json!({ "ttl_secs": ttl_secs, "uses": uses })),
            )
            .await?
        }
    };
    print(&out);
    Ok(ExitCode::SUCCESS)
}

/// Where one node's output has been read to, and the partial lines not yet printed.
#[derive(Default)]
struct Cursor {
    out: i64,
    err: i64,
    done: bool,
    code: u8,
    pending_out: Vec<u8>,
    pending_err: Vec<u8>,
}

/// Polls every node's output until all have completed. With one node the bytes go straight to
/// stdout/stderr; with several, each line is prefixed with `[node] `.
async fn follow_instance(c: &Client, no: i64, nodes: &[String]) -> anyhow::Result<ExitCode> {
    let mut cursors: HashMap<&str, Cursor> = nodes
        .iter()
        .map(|n| (n.as_str(), Cursor::default()))
        .collect();
    let prefixed = nodes.len() > 1;
    let b64 = base64::engine::general_purpose::STANDARD;
    loop {
        let mut progressed = false;
        for node in nodes {
            let cur = cursors.get_mut(node.as_str()).expect("one cursor per node");
            if cur.done {
                continue;
            }
            let path = format!(
                "/api/v1/task-instances/{no}/nodes/{}/output?outOffset={}&errOffset={}",
                seg(node),
                cur.out,
                cur.err
            );
            let chunk = c.call(Method::GET, &path, None).await?;
            let out = b64
                .decode(chunk["out"].as_str().unwrap_or(""))
                .unwrap_or_default();
            let err = b64
                .decode(chunk["err"].as_str().unwrap_or(""))
                .unwrap_or_default();
            progressed |= !out.is_empty() || !err.is_empty();
            cur.out = chunk["outOffset"].as_i64().unwrap_or(cur.out);
            cur.err = chunk["errOffset"].as_i64().unwrap_or(cur.err);
            let completed = chunk["completed"].as_bool().unwrap_or(false);
            if prefixed {
                emit_lines(
                    node,
                    &mut cur.pending_out,
                    &out,
                    completed,
                    &mut std::io::stdout(),
                );
                emit_lines(
                    node,
                    &mut cur.pending_err,
                    &err,
                    completed,
                    &mut std::io::stderr(),
                );
            } else {
                let _ = std::io::stdout().write_all(&out);
                let _ = std::io::stderr().write_all(&err);
            }
            let _ = std::io::stdout().flush();
            if completed {
                cur.done = true;
                cur.code = exit_code(&chunk);
                let status = chunk["status"].as_str().unwrap_or("?");
                if status != "END" || cur.code != 0 {
                    eprintln!(
                        "haechi: node {node}: {status} (exit code {})",
                        chunk["exitCd"]
                    );
                }
            }
        }
        if cursors.values().all(|c| c.done) {
            let worst = cursors.values().map(|c| c.code).max().unwrap_or(0);
            return Ok(ExitCode::from(worst));
        }
        if !progressed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A node's process exit code: its `exitCd` when it ran to an end in 0–255, else 1.
fn exit_code(chunk: &Value) -> u8 {
    match (chunk["status"].as_str(), chunk["exitCd"].as_i64()) {
        (_, Some(c)) if (0..=255).contains(&c) && c != 0 => c as u8,
        (Some("END"), Some(0)) => 0,
        _ => 1,
    }
}

fn emit_lines(node: &str, pending: &mut Vec<u8>, data: &[u8], flush: bool, to: &mut dyn Write) {
    pending.extend_from_slice(data);
    while let Some(i) = pending.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = pending.drain(..=i).collect();
        let _ = write!(to, "[{node}] ");
        let _ = to.write_all(&line);
    }
    if flush && !pending.is_empty() {
        let _ = write!(to, "[{node}] ");
        let _ = to.write_all(pending);
        let _ = to.write_all(b"\n");
        pending.clear();
    }
}

/// `haechi task instances`: the OPMATE list of a task's instances, and each one's nodes by status.
async fn instances(c: &Client, task: &str, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let list = c
        .call(
            Method::GET,
            &format!("/opmate/task/{}/instance?limit={limit}", seg(task)),
            None,
        )
        .await?;
    let mut details = Vec::new();
    for i in list["instanceList"].as_array().into_iter().flatten() {
        let Some(no) = i["taskInstanceNo"].as_i64() else {
            continue;
        };
        details.push(
            c.call(Method::GET, &format!("/api/v1/task-instances/{no}"), None)
                .await?,
        );
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&details).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = crate::table::Table::new(&["NO", "STARTED", "ENDED", "RUNNER", "NODES"]);
    for d in &details {
        let i = &d["instance"];
        let mut by_status: std::collections::BTreeMap<String, usize> = Default::default();
        for n in d["nodes"].as_array().into_iter().flatten() {
            *by_status
                .entry(crate::table::cell(&n["status"]))
                .or_default() += 1;
        }
        let nodes = by_status
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        t.row(vec![
            crate::table::cell(&i["taskInstanceNo"]),
            crate::table::local_time(i["startAt"].as_i64()),
            crate::table::local_time(i["endAt"].as_i64()),
            crate::table::cell(&i["runnerId"]),
            nodes,
        ]);
    }
    t.print();
    println!("{} of {}", details.len(), list["totalCnt"]);
    Ok(ExitCode::SUCCESS)
}
