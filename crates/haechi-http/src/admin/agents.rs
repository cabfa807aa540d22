//! Agents: enrolment tokens, enrolment, and the agents' WebSocket (the `haechi-protocol` crate).

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use haechi_exec::{AgentFrame, Exec, ServerFrame};
use haechi_types::Error;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::wire::exec::{EnrollmentToken, NewEnrollmentToken};
use crate::error::ApiResult;
use crate::extract::{need, Allowed, ClientIp, Json};
use crate::AppState;

/// `POST /api/v1/agents/enroll` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrollRequest {
    /// The one-time enrolment token.
    pub token: String,
    /// The node id the agent wants (default: its host name).
    pub node_id: String,
    #[serde(default)]
    pub agent_ver: String,
    #[serde(default)]
    pub os_name: String,
    #[serde(default)]
    pub hostname: String,
}

/// `POST /api/v1/agents/enroll` answer: the agent's own credential, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrollResponse {
    pub node_id: String,
    pub agent_guid: String,
    /// The agent's secret; the server keeps only its hash.
    pub secret: String,
}

impl From<EnrollRequest> for haechi_protocol::EnrollRequest {
    fn from(r: EnrollRequest) -> Self {
        haechi_protocol::EnrollRequest {
            token: r.token,
            node_id: r.node_id,
            agent_ver: r.agent_ver,
            os_name: r.os_name,
            hostname: r.hostname,
        }
    }
}

impl From<haechi_protocol::EnrollResponse> for EnrollResponse {
    fn from(r: haechi_protocol::EnrollResponse) -> Self {
        EnrollResponse {
            node_id: r.node_id,
            agent_guid: r.agent_guid,
            secret: r.secret,
        }
    }
}

/// Creates an enrolment token (`node.manage`). Give it to `haechi agent --enroll-token`.
#[utoipa::path(post, path = "/api/v1/agents/enrollment-tokens", tag = "agents", request_body = NewEnrollmentToken,
    responses((status = 201, body = EnrollmentToken), (status = 400), (status = 401), (status = 403)))]
pub async fn create_enrollment_token(
    State(state): State<AppState>,
    caller: Allowed<need::NodeManage>,
    Json(body): Json<NewEnrollmentToken>,
) -> ApiResult<impl IntoResponse> {
    let token = state
        .exec
        .create_enrollment_token(&caller, body.into())
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(EnrollmentToken::from(&token)),
    ))
}

/// Enrols an agent with an enrolment token (no user token: the enrolment token is the
/// credential). Answers the agent's own secret, once.
#[utoipa::path(post, path = "/api/v1/agents/enroll", tag = "agents", request_body = EnrollRequest, security(()),
    responses((status = 201, body = EnrollResponse), (status = 400), (status = 401),
              (status = 403, description = "the token was made for another node id, or the node exists and the token was not made for it"),
              (status = 409)))]
pub async fn enroll(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<EnrollRequest>,
) -> ApiResult<impl IntoResponse> {
    let res = state.exec.enroll(body.into(), ip).await?;
    Ok((StatusCode::CREATED, axum::Json(EnrollResponse::from(res))))
}

/// The agents' WebSocket. Authenticated with `Authorization: HaechiAgent <node_id>:<secret>`.
#[utoipa::path(get, path = "/api/v1/agents/connect", tag = "agents", security(()),
    responses((status = 101, description = "WebSocket upgrade; the agent protocol follows"),
              (status = 400, description = "not a WebSocket request"), (status = 401)))]
pub async fn connect(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let node_id = state.exec.authenticate_agent(auth).await?;
    let upgrade = upgrade
        .map_err(|_| Error::invalid("this route takes a WebSocket upgrade from `haechi agent`"))?;
    let exec = state.exec.clone();
    // A message or frame over the cap ends the connection before it is buffered whole.
    let max = exec.max_agent_message_bytes();
    Ok(upgrade
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| bridge(exec, node_id, socket)))
}

/// How long a connection the server closes has to take its close frame.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Moves frames between the socket and the engine until either side ends. Both ways are
/// bounded: the engine takes a frame only when it has room for it (the socket is not read
/// meanwhile), and an agent that does not read its frames is disconnected.
async fn bridge(exec: Arc<Exec>, node_id: String, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (in_tx, in_rx) = mpsc::channel::<AgentFrame>(2);
    let (out_tx, mut out_rx) = haechi_exec::outbound();
    let closing = out_rx.closing();
    let serve = {
        let exec = exec.clone();
        tokio::spawn(async move { exec.serve_agent(node_id, in_rx, out_tx).await })
    };
    let reader = async move {
        while let Some(Ok(m)) = stream.next().await {
            let frame = match m {
                Message::Text(t) => AgentFrame::Text(t.to_string()),
                Message::Binary(b) => AgentFrame::Binary(b.to_vec()),
                Message::Close(_) => break,
                _ => continue,
            };
            if in_tx.send(frame).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some(f) = out_rx.next().await {
            let sent = match f {
                ServerFrame::Text(t) => sink.send(Message::Text(t.into())).await,
                ServerFrame::Close(reason) => {
                    let frame = CloseFrame {
                        code: 4000,
                        reason: reason.chars().take(100).collect::<String>().into(),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
            };
            if sent.is_err() {
                break;
            }
        }
    };
    // A close the writer cannot deliver (it waits on an agent that does not read) ends the
    // connection after a grace period.
    let stuck = async move {
        closing.wait().await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
        _ = stuck => {}
    }
    let _ = serve.await;
}
