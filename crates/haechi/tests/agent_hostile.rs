//! A hostile agent (issue 26 items 6 and 15): a raw WebSocket client enrolled like any agent,
//! which sends a message over the size cap, floods output past the output cap, and puts
//! newlines and escape sequences in what it says. The server closes only that connection,
//! stores at most the cap, stays within its buffers, and logs the agent's text escaped.

mod common;
mod exec_support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use exec_support::*;
use futures::{SinkExt, StreamExt};
use haechi_agent::Socket;
use haechi_protocol::{
    AgentMsg, Finished, Outcome, OutputFrame, ServerMsg, Stream, AUTH_SCHEME, MAX_CHUNK,
    PROTOCOL_VERSION, TRUNCATION_MARKER_ROOM,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// The output cap of this file's server.
const CAP: u64 = 64 * 1024;
/// The default `agents.max_message_bytes`.
const MAX_MESSAGE: usize = 1024 * 1024;

/// One plain-HTTP server (so the test dials without TLS) with a small output cap and the
/// smallest inbound buffer the configuration takes (four maximum-size messages).
fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        Server::start_with(
            exec_opts()
                .arg("--plain-http")
                .env("HAECHI_AGENTS__OUTPUT_CAP_BYTES", &CAP.to_string())
                .env(
                    "HAECHI_AGENTS__INBOUND_BUFFER_BYTES",
                    &(4 * MAX_MESSAGE).to_string(),
                ),
        )
    })
}

/// Enrols `node` through the API and returns its `Authorization` value.
async fn enrol(s: &Server, node: &str) -> String {
    let admin = admin_token(s).await;
    let token = enrollment_token(s, &admin, json!({})).await;
    let (st, body) = enroll_as(s, &token, node).await;
    assert_eq!(st, 201, "{body}");
    format!("{AUTH_SCHEME} {node}:{}", body["secret"].as_str().unwrap())
}

fn hello(hostname: &str) -> Message {
    let m = AgentMsg::Hello {
        protocol: PROTOCOL_VERSION,
        agent_ver: "hostile".into(),
        os_name: "test".into(),
        ip: "127.0.0.1".into(),
        hostname: hostname.into(),
        jobs: vec![],
        labels: Default::default(),
        os_users: None,
    };
    Message::text(serde_json::to_string(&m).unwrap())
}

/// Dials as `auth`, says hello as `hostname` and waits for the welcome.
async fn connect(s: &Server, auth: &str, hostname: &str) -> Socket {
    let (mut ws, _) = haechi_agent::dial(&s.base, None, auth).await.unwrap();
    ws.send(hello(hostname)).await.unwrap();
    match next_msg(&mut ws, Duration::from_secs(10)).await {
        Some(ServerMsg::Welcome { .. }) => ws,
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// The next control message from the server; `None` when the connection ended (or nothing
/// came within `within`, which the callers tell apart by asserting).
async fn next_msg(ws: &mut Socket, within: Duration) -> Option<ServerMsg> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(serde_json::from_str(t.as_str()).unwrap())
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Whether the server ended the connection within `within` (messages before that are read
/// and dropped).
async fn closed_within(ws: &mut Socket, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Sends a heartbeat and expects its answer.
async fn assert_heartbeat_answered(ws: &mut Socket) {
    let beat = serde_json::to_string(&AgentMsg::Heartbeat { at_ms: None }).unwrap();
    ws.send(Message::text(beat)).await.unwrap();
    assert!(matches!(
        next_msg(ws, Duration::from_secs(10)).await,
        Some(ServerMsg::HeartbeatAck)
    ));
}

/// The server process's resident memory now and at its peak, in KiB (`/proc/<pid>/status`).
fn memory_kib(s: &Server) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn a_message_over_the_size_cap_closes_only_that_connection() {
    let s = server();
    let node = node_name("oversize");
    let auth = enrol(s, &node).await;
    let mut ws = connect(s, &auth, "oversize-host").await;
    let other_node = node_name("bystander");
    let other_auth = enrol(s, &other_node).await;
    let mut other = connect(s, &other_auth, "bystander-host").await;

    // One byte over the cap, as one binary message (what an output chunk travels in).
    let _ = ws.send(Message::binary(vec![b'x'; MAX_MESSAGE + 1])).await;
    assert!(
        closed_within(&mut ws, Duration::from_secs(10)).await,
        "the server kept a connection that sent a message over agents.max_message_bytes"
    );

    // The other agent's connection is untouched, and the hostile one can come back.
    assert_heartbeat_answered(&mut other).await;
    let mut again = connect(s, &auth, "oversize-host").await;
    assert_heartbeat_answered(&mut again).await;
    let (st, _) = call(client().get(s.url("/api/v1/agents/connect"))).await;
    assert_eq!(st, 401, "the server still answers");
}

#[tokio::test]
async fn output_flooded_past_the_cap_is_dropped_and_memory_stays_bounded() {
    let s = server();
    let t = admin_token(s).await;
    let node = node_name("flood");
    let auth = enrol(s, &node).await;
    let mut ws = connect(s, &auth, "flood-host").await;
    let id = unique("flood");
    approved_task(s, &t, &id, "#!/bin/sh\ntrue\n", json!({})).await;
    let no = start(s, &t, &id, &[&node], &[]).await;
    let spec = loop {
        match next_msg(&mut ws, Duration::from_secs(10)).await {
            Some(ServerMsg::Run(spec)) => break spec,
            Some(_) => continue,
            None => panic!("the server sent no run"),
        }
    };
    assert_eq!(spec.output_cap, CAP);
    let started = AgentMsg::Started {
        exec_id: spec.exec_id,
        at_ms: 1,
        file_token_sha256: None,
    };
    ws.send(Message::text(serde_json::to_string(&started).unwrap()))
        .await
        .unwrap();

    // 1,024 times the cap, in full-size chunks at consecutive offsets of both streams, never
    // saying it truncated anything.
    let (rss_before, _) = memory_kib(s);
    let chunk = vec![b'z'; MAX_CHUNK];
    let total: u64 = 1024 * CAP;
    let begun = Instant::now();
    let mut pos = 0u64;
    while pos < total {
        for stream in [Stream::Out, Stream::Err] {
            let frame = OutputFrame::encode(spec.exec_id, stream, pos, &chunk);
            ws.send(Message::binary(frame)).await.unwrap();
        }
        pos += MAX_CHUNK as u64;
    }
    let sent_secs = begun.elapsed().as_secs_f64();
    let finished = AgentMsg::Finished(Finished {
        exec_id: spec.exec_id,
        outcome: Outcome::Exited,
        exit_code: Some(0),
        reason: Some("x".repeat(100_000)),
        started_at_ms: Some(1),
        ended_at_ms: 2,
        out_len: total,
        err_len: total,
        truncated: false,
    });
    ws.send(Message::text(serde_json::to_string(&finished).unwrap()))
        .await
        .unwrap();
    loop {
        match next_msg(&mut ws, Duration::from_secs(60)).await {
            Some(ServerMsg::Ack { exec_id }) if exec_id == spec.exec_id => break,
            Some(_) => continue,
            None => panic!("the server never acknowledged the result"),
        }
    }
    let (rss_after, peak) = memory_kib(s);
    eprintln!(
        "flood: {} MiB sent in {sent_secs:.1} s; server RSS {rss_before} KiB before, {rss_after} KiB after, peak {peak} KiB",
        (2 * total) >> 20
    );

    wait_end(s, &t, no, Duration::from_secs(30)).await;
    let n = node_detail(s, &t, no, &node, None).await;
    let stored = (b64(&n["encbase64out"]).len() + b64(&n["encbase64err"]).len()) as u64;
    assert!(
        stored <= CAP + TRUNCATION_MARKER_ROOM,
        "the server stored {stored} bytes of output for a cap of {CAP}"
    );
    assert!(stored >= CAP, "what fits under the cap is kept ({stored})");
    let (_, d) = call(
        client()
            .get(s.url(&format!("/api/v1/task-instances/{no}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(d["nodes"][0]["truncated"], true, "{d}");
    let reason = d["nodes"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        !reason.is_empty() && reason.len() <= 4096,
        "a result's reason is kept short: {} bytes",
        reason.len()
    );
    // 128 MiB went in; the server held a few MiB of it at a time (the buffer is 4 MiB).
    assert!(
        rss_after.saturating_sub(rss_before) < 64 * 1024,
        "server memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    let stored_rows = s.sql(&format!(
        "SELECT COUNT(*) FROM execution_output WHERE exec_id = {}",
        spec.exec_id
    ));
    assert!(
        stored_rows.trim().parse::<u64>().unwrap() <= 3,
        "{stored_rows}"
    );
}

#[tokio::test]
async fn what_an_agent_says_is_logged_escaped() {
    let s = server();
    let node = node_name("forger");
    let auth = enrol(s, &node).await;
    let forged = "2026-12-06T00:00:00.000000Z ERROR haechi: FAKE LOG LINE";
    let host = format!("forger-host\n{forged} one\u{1b}[2J\u{1b}[31m\r\u{85}");
    let mut ws = connect(s, &auth, &host).await;
    // A message the server does not understand: serde quotes the unknown variant in its error.
    let unknown = json!({ "type": format!("\n{forged} two \u{1b}[0m") }).to_string();
    ws.send(Message::text(unknown)).await.unwrap();
    let logs = s.logs_once_they_contain("FAKE LOG LINE two", Duration::from_secs(10));
    assert!(
        logs.contains(&format!("forger-host\\n{forged} one")),
        "the agent's host name is logged, escaped:\n{logs}"
    );
    assert!(
        logs.contains(&format!("\\n{forged} two")),
        "the message is quoted, escaped:\n{logs}"
    );
    for line in logs.lines().filter(|l| l.contains("FAKE LOG LINE")) {
        assert!(
            line.contains(&node),
            "a line of the agent's text stands on its own: {line:?}"
        );
    }
    assert!(
        !logs.contains('\u{1b}'),
        "an escape sequence reached the log"
    );
    assert!(!logs.contains('\u{85}'), "a C1 control reached the log");
}

#[tokio::test]
async fn an_agent_that_never_reads_is_disconnected() {
    let s = server();
    let node = node_name("deaf");
    let auth = enrol(s, &node).await;
    let mut ws = connect(s, &auth, "deaf-host").await;
    // Heartbeats, each answered, while the agent reads nothing: once the socket's buffers and
    // the connection's outbound queue are full, the server ends the connection instead of
    // queueing answers without end.
    let beat = serde_json::to_string(&AgentMsg::Heartbeat { at_ms: None }).unwrap();
    let (rss_before, _) = memory_kib(s);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut sent = 0u64;
    let ended = loop {
        let mut batch =
            futures::stream::iter((0..1000).map(|_| {
                Ok::<_, tokio_tungstenite::tungstenite::Error>(Message::text(beat.clone()))
            }));
        if ws.send_all(&mut batch).await.is_err() {
            break true;
        }
        sent += 1000;
        if Instant::now() > deadline {
            break false;
        }
    };
    let (rss_after, _) = memory_kib(s);
    eprintln!("deaf agent: {sent} heartbeats sent before the server ended the connection; server RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        ended,
        "the server kept answering an agent that reads nothing ({sent} heartbeats)"
    );
    assert!(s.logs().contains(&node), "the server still logs and runs");
    let _ = admin_token(s).await;
}
