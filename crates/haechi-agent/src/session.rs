//! One connection to the server: dial, `Hello`/`Welcome`, then run what the server sends and
//! stream every held execution's output and result until the connection ends.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use haechi_protocol::{
    AgentMsg, OutputFrame, ServerMsg, Stream, CONNECT_PATH, MAX_CHUNK, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::credential::Credential;
use crate::journal::Journal;
use crate::runner::Job;
use crate::{sysinfo, Agent, AgentError};

/// How long the server has to answer `Hello`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dialling (TCP, TLS, WebSocket handshake) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// A byte stream the WebSocket runs over (TLS or, for a plain-HTTP server, TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// How a session ended without an error worth reporting.
pub struct Ended {
    /// The server welcomed the agent (the backoff starts over).
    pub welcomed: bool,
}

/// Small buffers: an agent reads little, and a load test runs thousands in one process.
pub fn ws_config() -> WebSocketConfig {
    // A file a script gets arrives in one message (base64).
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(haechi_protocol::MAX_SERVER_MESSAGE))
        .max_frame_size(Some(haechi_protocol::MAX_SERVER_MESSAGE))
}

/// Dials the server: TCP, TLS (unless the URL is `http://`), WebSocket upgrade with the
/// agent's credential. Returns the socket and the local address used (the node's `ip`).
pub async fn dial(
    server: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    authorization: &str,
) -> Result<(Socket, String), AgentError> {
    let uri: http::Uri = server
        .parse()
        .map_err(|_| AgentError::Config(format!("--server {server:?} is not a URL")))?;
    let secure = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(AgentError::Config(format!(
                "--server {server:?} must start with https:// (or http://)"
            )))
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| AgentError::Config(format!("--server {server:?} has no host")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if !secure {
        crate::require_loopback_for_plain_http(server)?;
    }
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| AgentError::Connection(format!("cannot connect to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let local_ip = tcp
            .local_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let io: Box<dyn Io> = if secure {
            let base = tls.ok_or_else(|| {
                AgentError::Config("an https:// server needs a TLS trust setting".into())
            })?;
            let mut cfg = (**base).clone();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| AgentError::Config(format!("{host:?} is not a valid server name")))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .map_err(|e| AgentError::Connection(format!("TLS with {host}:{port}: {e}")))?;
            Box::new(stream)
        } else {
            Box::new(tcp)
        };
        let scheme = if secure { "wss" } else { "ws" };
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = format!("{scheme}://{authority}{CONNECT_PATH}")
            .into_client_request()
            .map_err(|e| AgentError::Config(format!("bad server URL: {e}")))?;
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            authorization
                .parse()
                .map_err(|_| AgentError::Config("the credential is not a valid header".into()))?,
        );
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(request, io, Some(ws_config()))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(res)
                        if matches!(res.status().as_u16(), 401 | 403) =>
                    {
                        let body = res
                            .body()
                            .as_deref()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default()
                            .into_owned();
                        AgentError::Refused(format!("HTTP {}: {body}", res.status().as_u16()))
                    }
                    other => AgentError::Connection(format!("WebSocket handshake: {other}")),
                })?;
        Ok((socket, local_ip))
    };
    tokio::time::timeout(DIAL_TIMEOUT, work)
        .await
        .map_err(|_| AgentError::Connection(format!("connecting to {host}:{port} timed out")))?
}

pub async fn run(agent: &Arc<Agent>, cred: &Credential, server: &str) -> Result<Ended, AgentError> {
    let (socket, ip) = dial(server, agent.opts.tls.as_ref(), &cred.authorization()).await?;
    let (mut sink, mut incoming) = socket.split();
    let hello = AgentMsg::Hello {
        protocol: PROTOCOL_VERSION,
        agent_ver: agent.opts.agent_ver.clone(),
        os_name: sysinfo::os_name(),
        ip,
        hostname: sysinfo::hostname(),
        jobs: agent.job_ids(),
        labels: sysinfo::labels(&agent.opts.labels),
        os_users: Some(sysinfo::os_users()),
    };
    send_json(&mut sink, &hello).await?;

    let welcome = tokio::time::timeout(WELCOME_TIMEOUT, next_server_msg(&mut incoming))
        .await
        .map_err(|_| AgentError::Connection("the server did not answer the hello".into()))??;
    let ServerMsg::Welcome {
        heartbeat_secs,
        max_message_bytes,
        resume,
        ack,
        node_id,
    } = welcome
    else {
        return Err(AgentError::Protocol(
            "the server's first message was not a welcome".into(),
        ));
    };
    tracing::info!(%node_id, %server, "connected to the server");
    // From here on the server has welcomed the agent: however the connection ends, the next
    // connection starts a fresh backoff (a server killed with -9 ends it with an I/O error).
    let served: Result<Ended, AgentError> = async {
        let heartbeat = Duration::from_secs(heartbeat_secs.max(1));

        let (out_tx, mut out_rx) = mpsc::channel::<Message>(256);
        let relay = agent.files.clone();
        let generation = relay.attach(out_tx.clone(), max_message_bytes);
        let _detach = Detach(&relay, generation);
        let mut streamers = JoinSet::new();
        for id in ack {
            agent.forget(id);
        }
        for r in resume {
            if let Some(job) = agent.job(r.exec_id) {
                streamers.spawn(stream_job(
                    job,
                    agent.journal.clone(),
                    out_tx.clone(),
                    r.out,
                    r.err,
                ));
            }
        }

        let mut ticker = tokio::time::interval(heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                msg = incoming.next() => {
                    let msg = match msg {
                        None => return Ok(Ended { welcomed: true }),
                        Some(Err(e)) => return Err(AgentError::Connection(e.to_string())),
                        Some(Ok(m)) => m,
                    };
                    last_heard = Instant::now();
                    let text = match msg {
                        Message::Text(t) => t,
                        Message::Close(_) => return Ok(Ended { welcomed: true }),
                        _ => continue,
                    };
                    let msg: ServerMsg = match serde_json::from_str(text.as_str()) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!("ignoring a message the agent does not understand: {e}");
                            continue;
                        }
                    };
                    match msg {
                        ServerMsg::Run(spec) => {
                            let exec_id = spec.exec_id;
                            match agent.accept(spec) {
                                Ok(Some(job)) => {
                                    streamers.spawn(stream_job(job, agent.journal.clone(), out_tx.clone(), 0, 0));
                                }
                                Ok(None) => tracing::debug!(exec_id, "already held; not started again"),
                                Err(e) => tracing::error!(exec_id, "cannot journal the execution, not starting it: {e}"),
                            }
                        }
                        ServerMsg::Cancel { exec_id } => {
                            if let Some(job) = agent.job(exec_id) {
                                job.cancel();
                            }
                        }
                        ServerMsg::Ack { exec_id } => agent.forget(exec_id),
                        ServerMsg::FileReply(r) => agent.files.complete(r),
                        ServerMsg::HeartbeatAck | ServerMsg::Welcome { .. } => {}
                    }
                }
                Some(m) = out_rx.recv() => {
                    sink.send(m).await.map_err(|e| AgentError::Connection(e.to_string()))?;
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() > heartbeat * 3 {
                        return Err(AgentError::Connection("the server stopped answering heartbeats".into()));
                    }
                    send_json(&mut sink, &AgentMsg::Heartbeat { at_ms: Some(crate::runner::now_ms()) }).await?;
                }
            }
        }
    }
    .await;
    match served {
        Err(AgentError::Refused(msg)) => Err(AgentError::Refused(msg)),
        Err(e) => {
            tracing::warn!("connection to the server lost: {e}");
            Ok(Ended { welcomed: true })
        }
        ok => ok,
    }
}

/// Detaches the file relay from a connection when its session ends.
struct Detach<'a>(&'a crate::files::FileRelay, u64);

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        self.0.detach(self.1);
    }
}

async fn send_json<S>(sink: &mut S, msg: &AgentMsg) -> Result<(), AgentError>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let text = serde_json::to_string(msg)?;
    sink.send(Message::text(text))
        .await
        .map_err(|e| AgentError::Connection(e.to_string()))
}

async fn next_server_msg<S>(incoming: &mut S) -> Result<ServerMsg, AgentError>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match incoming.next().await {
            None => {
                return Err(AgentError::Connection(
                    "the server closed the connection".into(),
                ))
            }
            Some(Err(e)) => return Err(AgentError::Connection(e.to_string())),
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str())?),
            Some(Ok(Message::Close(frame))) => {
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(AgentError::Connection(format!(
                    "the server closed the connection: {reason}"
                )));
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// Streams one execution's output from the given offsets as it grows, then its result.
async fn stream_job(
    job: Arc<Job>,
    journal: Arc<Journal>,
    tx: mpsc::Sender<Message>,
    mut out: u64,
    mut err: u64,
) {
    let exec_id = job.spec.exec_id;
    let mut rx = job.progress.subscribe();
    let mut announced = false;
    loop {
        let p = rx.borrow_and_update().clone();
        if !announced && p.result.is_none() {
            if let Some(at) = p.started_at {
                let msg = AgentMsg::Started {
                    exec_id,
                    at_ms: at,
                    file_token_sha256: Some(crate::files::token_sha256(&job.file_token)),
                };
                let Ok(text) = serde_json::to_string(&msg) else {
                    return;
                };
                if tx.send(Message::text(text)).await.is_err() {
                    return;
                }
                announced = true;
                job.announced.send_replace(true);
            }
        }
        for (stream, pos, len) in [
            (Stream::Out, &mut out, p.out),
            (Stream::Err, &mut err, p.err),
        ] {
            if *pos >= len {
                continue;
            }
            let Ok(file) = std::fs::File::open(journal.stream_path(exec_id, stream)) else {
                tracing::error!(exec_id, "the journal lost this execution's output");
                return;
            };
            while *pos < len {
                let n = ((len - *pos) as usize).min(MAX_CHUNK);
                let mut buf = vec![0u8; n];
                match file.read_exact_at(&mut buf, *pos) {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::error!(exec_id, "cannot read the journal: {e}");
                        return;
                    }
                }
                let frame = OutputFrame::encode(exec_id, stream, *pos, &buf);
                if tx.send(Message::binary(frame)).await.is_err() {
                    return;
                }
                *pos += n as u64;
            }
        }
        if let Some(result) = p.result {
            // Everything up to the final lengths was sent above.
            let Ok(text) = serde_json::to_string(&AgentMsg::Finished(result)) else {
                return;
            };
            let _ = tx.send(Message::text(text)).await;
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
