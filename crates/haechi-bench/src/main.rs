//! `haechi-loadagents`: the load tool of `bench/`. It opens many agent connections from one
//! process, each speaking the real agent protocol (`haechi_protocol`) over its own TLS
//! WebSocket with its own enrolled credential, and answers every `Run` at once as a no-op that
//! exited 0. It can then start a task on all of them and time it until every node is `END`.
//!
//! Only for loopback benchmarks: it talks to the server it is pointed at and nowhere else.

#[allow(dead_code)]
#[path = "../../haechi/src/tls.rs"]
mod tls;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::{SinkExt, StreamExt};
use haechi_protocol::{
    AgentMsg, EnrollRequest, EnrollResponse, Finished, Outcome, ServerMsg, ENROLL_PATH,
    PROTOCOL_VERSION,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(
    name = "haechi-loadagents",
    about = "Simulated Haechi agents for benchmarks (loopback only)"
)]
struct Cli {
    /// The server, https://127.0.0.1:PORT.
    #[arg(long)]
    server: String,
    /// The server certificate's SHA-256 fingerprint.
    #[arg(long)]
    fingerprint: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Connect N simulated agents (enrolling those not in --creds yet), optionally run a task on
    /// all of them and time it, then hold the connections.
    Agents {
        /// How many agents.
        #[arg(long)]
        count: usize,
        /// Node id prefix (ids are PREFIX00001...).
        #[arg(long, default_value = "load-")]
        prefix: String,
        /// Admin token: to make the enrolment token and to start the task.
        #[arg(long)]
        admin_token: String,
        /// File keeping the agents' credentials between runs (JSON lines).
        #[arg(long)]
        creds: PathBuf,
        /// Connections dialled at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// After all are connected, start this task on all of them and time it to every node END.
        #[arg(long)]
        run_task: Option<String>,
        /// How many times to run it.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Keep the connections this long after connecting (and running), reporting heartbeats.
        #[arg(long, default_value_t = 0)]
        hold_secs: u64,
    },
    /// Start a task on nodes (real agents) and time it until every node has ended.
    Run {
        #[arg(long)]
        admin_token: String,
        #[arg(long)]
        task: String,
        /// Node ids, comma-separated.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
    },
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Cred {
    node_id: String,
    secret: String,
}

fn http(tls: &Arc<rustls::ClientConfig>) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls((**tls).clone())
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(64)
        .build()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let tls = tls::client_config(tls::Pin::Fingerprint(cli.fingerprint.clone()))?;
    let http = http(&tls)?;
    match cli.cmd {
        Cmd::Agents {
            count,
            prefix,
            admin_token,
            creds,
            concurrency,
            run_task,
            runs,
            hold_secs,
        } => {
            let creds =
                ensure_creds(&cli.server, &http, &admin_token, &creds, &prefix, count).await?;
            let stats = Arc::new(Stats::default());
            let started = Instant::now();
            let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
            let mut handles = Vec::with_capacity(count);
            for c in creds {
                let permit = sem.clone().acquire_owned().await?;
                let (server, tls, stats) = (cli.server.clone(), tls.clone(), stats.clone());
                handles.push(tokio::spawn(async move {
                    simulate(server, tls, c, stats, permit).await
                }));
            }
            while stats.connected.load(Ordering::Relaxed) < count as u64 {
                if stats.failed.load(Ordering::Relaxed) > 0 {
                    bail!(
                        "{} agents failed to connect",
                        stats.failed.load(Ordering::Relaxed)
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            println!(
                "connected {count} agents in {:.2} s",
                started.elapsed().as_secs_f64()
            );
            if let Some(task) = run_task {
                let nodes: Vec<String> = (1..=count).map(|i| format!("{prefix}{i:05}")).collect();
                for i in 0..runs {
                    let secs = time_task(&cli.server, &http, &admin_token, &task, &nodes).await?;
                    println!(
                        "run {}: task on {count} nodes: POST to every node END in {secs:.3} s",
                        i + 1
                    );
                }
            }
            if hold_secs > 0 {
                let until = Instant::now() + Duration::from_secs(hold_secs);
                let mut last = stats.acks.load(Ordering::Relaxed);
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let now = stats.acks.load(Ordering::Relaxed);
                    println!(
                        "holding {} connections; heartbeat acks in the last 10 s: {}; disconnects: {}",
                        stats.connected.load(Ordering::Relaxed) - stats.dropped.load(Ordering::Relaxed),
                        now - last,
                        stats.dropped.load(Ordering::Relaxed)
                    );
                    last = now;
                }
            }
            for h in handles {
                h.abort();
            }
        }
        Cmd::Run {
            admin_token,
            task,
            nodes,
        } => {
            let secs = time_task(&cli.server, &http, &admin_token, &task, &nodes).await?;
            println!(
                "task on {} nodes: POST to every node END in {secs:.3} s",
                nodes.len()
            );
        }
    }
    Ok(())
}

#[derive(Default)]
struct Stats {
    connected: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    acks: AtomicU64,
}

/// Loads the stored credentials and enrols the missing agents (with one many-use token).
async fn ensure_creds(
    server: &str,
    http: &reqwest::Client,
    admin: &str,
    path: &PathBuf,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Cred>> {
    let mut have: Vec<Cred> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|c: &Cred| c.node_id.starts_with(prefix))
        .collect();
    have.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    have.dedup_by(|a, b| a.node_id == b.node_id);
    let missing: Vec<String> = (1..=count)
        .map(|i| format!("{prefix}{i:05}"))
        .filter(|id| !have.iter().any(|c| &c.node_id == id))
        .collect();
    if !missing.is_empty() {
        let t0 = Instant::now();
        let res: Value = http
            .post(format!("{server}/api/v1/agents/enrollment-tokens"))
            .bearer_auth(admin)
            .json(&json!({ "uses": missing.len(), "ttl_secs": 3600 }))
            .send()
            .await?
            .json()
            .await?;
        let token = res["token"]
            .as_str()
            .context("no enrolment token")?
            .to_owned();
        let new: Vec<Cred> = futures::stream::iter(missing.clone())
            .map(|node_id| {
                let (http, token) = (http.clone(), token.clone());
                async move {
                    let req = EnrollRequest {
                        token,
                        node_id: node_id.clone(),
                        agent_ver: "load".into(),
                        os_name: "simulated".into(),
                        hostname: node_id.clone(),
                    };
                    let r = http
                        .post(format!("{server}{ENROLL_PATH}"))
                        .json(&req)
                        .send()
                        .await?;
                    if !r.status().is_success() {
                        bail!(
                            "enrolling {node_id}: {}",
                            r.text().await.unwrap_or_default()
                        );
                    }
                    let e: EnrollResponse = r.json().await?;
                    Ok::<_, anyhow::Error>(Cred {
                        node_id: e.node_id,
                        secret: e.secret,
                    })
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        use std::io::Write;
        for c in &new {
            writeln!(f, "{}", serde_json::to_string(c)?)?;
        }
        println!(
            "enrolled {} agents in {:.1} s",
            new.len(),
            t0.elapsed().as_secs_f64()
        );
        have.extend(new);
    }
    have.retain(|c| {
        c.node_id
            .strip_prefix(prefix)
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n >= 1 && n <= count)
    });
    Ok(have)
}

/// One simulated agent: dial, hello, then answer runs as no-ops and heartbeat until aborted.
async fn simulate(
    server: String,
    tls: Arc<rustls::ClientConfig>,
    cred: Cred,
    stats: Arc<Stats>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut permit = Some(permit);
    let auth = format!(
        "{} {}:{}",
        haechi_protocol::AUTH_SCHEME,
        cred.node_id,
        cred.secret
    );
    let socket = match haechi_agent::dial(&server, Some(&tls), &auth).await {
        Ok((s, _)) => s,
        Err(e) => {
            eprintln!("{}: {e}", cred.node_id);
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let (mut sink, mut incoming) = socket.split();
    let hello = AgentMsg::Hello {
        protocol: PROTOCOL_VERSION,
        agent_ver: "load".into(),
        os_name: "simulated".into(),
        ip: "127.0.0.1".into(),
        hostname: cred.node_id.clone(),
        jobs: vec![],
        labels: Default::default(),
        os_users: None,
    };
    if sink
        .send(Message::text(
            serde_json::to_string(&hello).unwrap_or_default(),
        ))
        .await
        .is_err()
    {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut heartbeat = Duration::from_secs(10);
    let mut welcomed = false;
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    loop {
        tokio::select! {
            msg = incoming.next() => {
                let Some(Ok(Message::Text(t))) = msg else {
                    if matches!(msg, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    continue;
                };
                let Ok(m) = serde_json::from_str::<ServerMsg>(t.as_str()) else { continue };
                match m {
                    ServerMsg::Welcome { heartbeat_secs, .. } if !welcomed => {
                        welcomed = true;
                        heartbeat = Duration::from_secs(heartbeat_secs.max(1));
                        ticker = tokio::time::interval(heartbeat);
                        ticker.tick().await;
                        stats.connected.fetch_add(1, Ordering::Relaxed);
                        // Connected: let the next dial start (bounds simultaneous handshakes).
                        permit.take();
                    }
                    ServerMsg::Run(spec) => {
                        let now = now_ms();
                        let started = AgentMsg::Started { exec_id: spec.exec_id, at_ms: now, file_token_sha256: None };
                        let finished = AgentMsg::Finished(Finished {
                            exec_id: spec.exec_id,
                            outcome: Outcome::Exited,
                            exit_code: Some(0),
                            reason: None,
                            started_at_ms: Some(now),
                            ended_at_ms: now,
                            out_len: 0,
                            err_len: 0,
                            truncated: false,
                        });
                        for m in [started, finished] {
                            if sink.send(Message::text(serde_json::to_string(&m).unwrap_or_default())).await.is_err() {
                                stats.dropped.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                    ServerMsg::HeartbeatAck => {
                        stats.acks.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            _ = ticker.tick() => {
                if sink.send(Message::text(serde_json::to_string(&AgentMsg::Heartbeat { at_ms: None }).unwrap_or_default())).await.is_err() {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// POSTs an instance of `task` on `nodes` and polls until every node is `END`; returns seconds.
async fn time_task(
    server: &str,
    http: &reqwest::Client,
    admin: &str,
    task: &str,
    nodes: &[String],
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let res: Value = http
        .post(format!("{server}/opmate/task/{task}/instance"))
        .bearer_auth(admin)
        .json(&json!({ "nodeIdList": nodes, "arguments": [] }))
        .send()
        .await?
        .json()
        .await?;
    let no = res["taskInstanceNo"]
        .as_i64()
        .with_context(|| format!("start refused: {res}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let res: Value = http
            .get(format!("{server}/opmate/taskinstance/{no}/node"))
            .bearer_auth(admin)
            .query(&[("execStatus", "END"), ("limit", "0")])
            .send()
            .await?
            .json()
            .await?;
        if res["totalCnt"].as_u64() == Some(nodes.len() as u64) {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            bail!("instance {no} did not finish: {res}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
