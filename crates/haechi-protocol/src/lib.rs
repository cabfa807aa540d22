//! The agent protocol: what `haechi agent` and the server say to each other over one WebSocket
//! that the agent opens to the server's HTTPS port (`GET /api/v1/agents/connect`). Its own crate,
//! so that both sides depend on it and neither on the other: the agent links nothing of the
//! server, the execution engine nothing of the agent's runtime.
//!
//! Control messages are JSON text frames ([`AgentMsg`], [`ServerMsg`]); output travels in binary
//! frames ([`OutputFrame`]) so it stays byte-exact without base64 on the wire.
//!
//! A session goes:
//! 1. the agent sends [`AgentMsg::Hello`] naming every execution in its journal;
//! 2. the server answers [`ServerMsg::Welcome`]: for each of those, how much output it already
//!    holds (`resume`) or that it already has the result (`ack`); then it sends
//!    [`ServerMsg::Run`] for each execution of the node that the agent never accepted;
//! 3. the agent journals a `Run` before starting it (so it never starts one twice), streams its
//!    output from the offsets the server holds, and reports [`AgentMsg::Finished`] once all of
//!    it is sent; the server commits the result, then sends [`ServerMsg::Ack`], and only then
//!    does the agent forget the execution.

use serde::{Deserialize, Serialize};

/// Version of this protocol; the server refuses agents that speak another.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket route on the server.
pub const CONNECT_PATH: &str = "/api/v1/agents/connect";

/// The enrolment route on the server.
pub const ENROLL_PATH: &str = "/api/v1/agents/enroll";

/// `Authorization: HaechiAgent <node_id>:<secret>` authenticates an enrolled agent.
pub const AUTH_SCHEME: &str = "HaechiAgent";

/// The largest message (and frame) an agent reads from the server: a file a script gets
/// travels in one message, base64.
pub const MAX_SERVER_MESSAGE: usize = 96 * 1024 * 1024;

/// The largest output chunk an agent puts in one frame.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Bytes past an execution's output cap its truncation marker may take: the server keeps at
/// most the cap plus this many bytes of output per execution, whatever an agent sends.
pub const TRUNCATION_MARKER_ROOM: u64 = 256;

/// The line an agent writes where it drops output over the cap of `cap` bytes.
pub fn truncation_marker(cap: u64) -> String {
    format!("\n[haechi: output truncated: the cap of {cap} bytes per execution was reached]\n")
}

/// `POST /api/v1/agents/enroll` body (the HTTP layer documents it with its own copy).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollResponse {
    pub node_id: String,
    pub agent_guid: String,
    /// The agent's secret; the server keeps only its hash.
    pub secret: String,
}

/// What the agent says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMsg {
    /// First message of a session.
    Hello {
        protocol: u32,
        agent_ver: String,
        os_name: String,
        ip: String,
        hostname: String,
        /// Every execution in the agent's journal (running, or finished and not yet acknowledged).
        jobs: Vec<i64>,
        /// The node's labels: `os`, `arch`, `hostname` and the agent's configured ones
        /// (absent from older agents).
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
        /// The OS users the agent can run scripts as (absent: unknown).
        #[serde(default)]
        os_users: Option<Vec<String>>,
    },
    /// Sent every `heartbeat_secs`, with the agent's clock (unix ms) when it was sent, from
    /// which the server keeps the node's clock skew (`haechi doctor` reports it). Agents that
    /// predate the field send none.
    Heartbeat {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_ms: Option<i64>,
    },
    /// The execution was journaled and its process started (or is being reported again after a
    /// reconnect while it still runs).
    Started {
        exec_id: i64,
        at_ms: i64,
        /// SHA-256 (hex) of the file token the agent gave the script (`HAECHI_FILE_TOKEN`);
        /// the server keeps it while the execution runs (absent from older agents).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_token_sha256: Option<String>,
    },
    /// A running script asks for a file of the repository (`haechi file get`), relayed by
    /// its agent. Answered by [`ServerMsg::FileReply`] with the same `req`.
    FileGet {
        req: u64,
        /// The execution whose run socket the request came through.
        exec_id: i64,
        /// The script's `HAECHI_FILE_TOKEN`.
        token: String,
        name: String,
    },
    /// A running script stores a file in the repository (`haechi file put`), relayed by its
    /// agent. Answered by [`ServerMsg::FileReply`] with the same `req`.
    FilePut {
        req: u64,
        exec_id: i64,
        token: String,
        name: String,
        #[serde(default)]
        description: String,
        /// Replace a file of that name (a new version) instead of refusing.
        #[serde(default)]
        replace: bool,
        /// The content, base64.
        content: String,
    },
    /// The execution ended and all its output has been sent.
    Finished(Finished),
}

/// How an execution ended, as the agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The process exited (or was killed by a signal it did not get from us).
    Exited,
    /// The task's timeout killed the process group.
    Timeout,
    /// A cancel killed the process group.
    Cancelled,
    /// The process could not be started (unknown user, cannot switch user, no interpreter).
    Failed,
    /// The agent stopped while the process ran; its end is unknown.
    Lost,
}

/// The result of one execution.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finished {
    pub exec_id: i64,
    pub outcome: Outcome,
    /// The exit code; `128 + n` when killed by signal `n`; absent when it never ran.
    pub exit_code: Option<i32>,
    /// Why it failed, was lost, timed out or was cancelled, in words for a person.
    pub reason: Option<String>,
    pub started_at_ms: Option<i64>,
    pub ended_at_ms: i64,
    /// Total bytes of stdout and stderr sent (including a truncation marker).
    pub out_len: u64,
    pub err_len: u64,
    /// The output reached the cap and the rest was dropped.
    pub truncated: bool,
}

/// What the server says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Answer to `Hello`.
    Welcome {
        node_id: String,
        heartbeat_secs: u64,
        /// The largest message the server reads from the agent (`agents.max_message_bytes`;
        /// absent from older servers): bounds a file a script puts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_message_bytes: Option<u64>,
        /// Executions the server knows and still waits on: send output from these offsets.
        resume: Vec<Resume>,
        /// Executions whose result the server already holds (or does not know): forget them.
        ack: Vec<i64>,
    },
    /// Start an execution (ignored if the agent has it in its journal already).
    Run(RunSpec),
    /// Kill the execution's process group.
    Cancel { exec_id: i64 },
    /// The result of the execution is committed; the agent may forget it.
    Ack { exec_id: i64 },
    /// Answer to a heartbeat.
    HeartbeatAck,
    /// Answer to [`AgentMsg::FileGet`] or [`AgentMsg::FilePut`].
    FileReply(FileReply),
}

/// The server's answer to a script's file request. The agent hands the same answer on to the
/// script over the run's socket (`haechi file get|put`), with the content of a get after the
/// JSON line as raw bytes instead of in `content`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileReply {
    /// The request's number; on the run's socket, the number the agent relayed it under (0 when
    /// the agent refused it itself).
    #[serde(default)]
    pub req: u64,
    /// The HTTP status the same request would have had on the API (200, 201, 400, 401, 404,
    /// 409, 413, ...).
    pub status: u16,
    /// Why it was refused, in words for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of the content, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The file's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The content (base64) of a get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl FileReply {
    /// A refusal of request `req` with `status`, saying why.
    pub fn refused(req: u64, status: u16, error: impl Into<String>) -> FileReply {
        FileReply {
            req,
            status,
            error: Some(error.into()),
            size: None,
            sha256: None,
            version: None,
            content: None,
        }
    }
}

/// The prefix of a file token: `hft_<exec_id>_<random>`.
pub const FILE_TOKEN_PREFIX: &str = "hft_";

/// The execution a file token names (the server checks the rest against its stored hash).
pub fn file_token_exec(token: &str) -> Option<i64> {
    let rest = token.strip_prefix(FILE_TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if secret.len() < 32 {
        return None;
    }
    id.parse().ok()
}

/// Where to resume an execution's output.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Resume {
    pub exec_id: i64,
    /// Bytes of stdout the server holds.
    pub out: u64,
    /// Bytes of stderr the server holds.
    pub err: u64,
}

/// One execution to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunSpec {
    pub exec_id: i64,
    /// The node it runs on (the script sees it as `HAECHI_NODE_ID`).
    #[serde(default)]
    pub node_id: String,
    pub task_id: String,
    pub revision_no: i64,
    pub instance_no: i64,
    pub exec_no: i64,
    pub script_name: String,
    pub script: String,
    pub args: Vec<String>,
    pub os_user: String,
    /// 0 = no timeout.
    pub timeout_secs: u64,
    /// Bytes of stdout + stderr kept; the rest is dropped after a marker.
    pub output_cap: u64,
    /// Environment variables for this run only (vault values of a workflow's task step): the
    /// agent never journals their values and masks every occurrence in the output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<SecretEnv>,
    /// Set when the run needs `env` but the server no longer holds the values (they live only
    /// in memory, and the server restarted): the agent does not start the script and reports
    /// the run failed with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_unavailable: Option<String>,
}

/// One environment variable of [`RunSpec::env`]. Its `Debug` never shows the value.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretEnv {
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretEnv")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    pub fn code(self) -> u8 {
        match self {
            Stream::Out => 1,
            Stream::Err => 2,
        }
    }

    pub fn from_code(c: u8) -> Option<Stream> {
        match c {
            1 => Some(Stream::Out),
            2 => Some(Stream::Err),
            _ => None,
        }
    }
}

/// A chunk of output: binary frame `exec_id (i64 BE) | stream (u8) | pos (u64 BE) | bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFrame {
    pub exec_id: i64,
    pub stream: Stream,
    /// Offset of `data` in the stream.
    pub pos: u64,
    pub data: Vec<u8>,
}

const HEADER: usize = 8 + 1 + 8;

impl OutputFrame {
    pub fn encode(exec_id: i64, stream: Stream, pos: u64, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + data.len());
        out.extend_from_slice(&exec_id.to_be_bytes());
        out.push(stream.code());
        out.extend_from_slice(&pos.to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    pub fn decode(frame: &[u8]) -> Option<OutputFrame> {
        if frame.len() < HEADER {
            return None;
        }
        let exec_id = i64::from_be_bytes(frame[0..8].try_into().ok()?);
        let stream = Stream::from_code(frame[8])?;
        let pos = u64::from_be_bytes(frame[9..17].try_into().ok()?);
        Some(OutputFrame {
            exec_id,
            stream,
            pos,
            data: frame[HEADER..].to_vec(),
        })
    }
}

/// Resource limits set on every script (`setrlimit`, soft and hard), and its umask. The agent
/// applies them (`haechi agent --script-*`); the server's configuration holds those of its
/// local agent (`[agents] script_limits`), which is why both sides share the type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open files (`RLIMIT_NOFILE`).
    pub nofile: u64,
    /// Processes of the script's user (`RLIMIT_NPROC`; not enforced on root).
    pub nproc: u64,
    /// Core dump size in bytes (`RLIMIT_CORE`; 0: none, so no memory image with secrets is left).
    pub core: u64,
    /// Address space in bytes (`RLIMIT_AS`; 0: unlimited).
    pub address_space: u64,
    /// The umask scripts start with (octal in the helper's arguments; 0o077 = 63).
    pub umask: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nofile: 8192,
            nproc: 4096,
            core: 0,
            address_space: 0,
            umask: 0o077,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_frame_round_trip() {
        let bytes = OutputFrame::encode(42, Stream::Err, 7, &[0, 255, 10]);
        let f = OutputFrame::decode(&bytes).unwrap();
        assert_eq!(
            f,
            OutputFrame {
                exec_id: 42,
                stream: Stream::Err,
                pos: 7,
                data: vec![0, 255, 10]
            }
        );
        assert!(OutputFrame::decode(&bytes[..5]).is_none());
    }

    #[test]
    fn the_truncation_marker_fits_its_room() {
        assert!(truncation_marker(u64::MAX).len() as u64 <= TRUNCATION_MARKER_ROOM);
    }

    #[test]
    fn messages_are_tagged() {
        let m = serde_json::to_value(AgentMsg::Started {
            exec_id: 1,
            at_ms: 2,
            file_token_sha256: None,
        })
        .unwrap();
        assert_eq!(m["type"], "started");
        let s: ServerMsg = serde_json::from_str(r#"{"type":"ack","exec_id":3}"#).unwrap();
        assert!(matches!(s, ServerMsg::Ack { exec_id: 3 }));
    }
}
