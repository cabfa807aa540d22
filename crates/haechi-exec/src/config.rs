//! Settings of the execution engine: the `[agents]` and `[tasks]` tables of the configuration.

use serde::{Deserialize, Serialize};

/// Agents and nodes (the `[agents]` table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Seconds between two heartbeats of an agent (the server tells its agents).
    pub heartbeat_secs: u64,
    /// Heartbeats a node may miss before it is marked missing.
    pub missed_heartbeats: u32,
    /// Seconds a missing node has to come back before its running executions end `LOST`.
    pub lost_grace_secs: u64,
    /// Bytes of output (stdout and stderr together) kept per execution; the rest is dropped
    /// after a marker line.
    pub output_cap_bytes: u64,
    /// Largest WebSocket message (and frame) the server reads from an agent; a larger one
    /// closes that agent's connection. Output travels in chunks of at most 64 KiB.
    pub max_message_bytes: u64,
    /// Bytes of agents' messages the server holds received but not yet stored, all agents
    /// together; each agent may hold at most four maximum-size messages of it. When it is
    /// full the server stops reading the sockets until the store catches up (backpressure).
    pub inbound_buffer_bytes: u64,
    /// Start a local agent with the server, enrolled automatically, so tasks can run on this
    /// machine at once (`haechi server --no-local-agent` turns it off).
    pub local_agent: bool,
    /// Node id of the local agent; unset means the host name.
    pub local_node_id: Option<String>,
    /// Seconds an enrolment token lives when its request does not say.
    pub enrollment_token_ttl_secs: u64,
    /// New nodes start disabled (`D`): they connect, but get no work until an admin enables
    /// them (`PATCH /api/v1/nodes/{id}`).
    pub new_nodes_disabled: bool,
    /// Let the local agent run tasks as `root` or as the server's own user. Off by default:
    /// those users can read the server's data directory (vault key, store) outside the sandbox's
    /// reach through other means (a root script could lift it by loading a module, for example).
    pub local_allow_privileged_os_users: bool,
    /// Let the local agent run scripts without their Landlock sandbox when the kernel cannot
    /// enforce it (a loud, degraded mode in which scripts can read the server's data
    /// directory). Off by default: such runs fail with the reason.
    pub allow_unsandboxed_scripts: bool,
    /// Resource limits and umask of the local agent's scripts (`haechi agent` takes them as
    /// `--script-*` options).
    pub script_limits: haechi_protocol::Limits,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            heartbeat_secs: 10,
            missed_heartbeats: 3,
            lost_grace_secs: 60,
            output_cap_bytes: 16 * 1024 * 1024,
            max_message_bytes: 1024 * 1024,
            inbound_buffer_bytes: 64 * 1024 * 1024,
            local_agent: true,
            local_node_id: None,
            enrollment_token_ttl_secs: 3600,
            new_nodes_disabled: false,
            local_allow_privileged_os_users: false,
            allow_unsandboxed_scripts: false,
            script_limits: haechi_protocol::Limits::default(),
        }
    }
}

/// Tasks, approval and schedules (the `[tasks]` table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    /// Let an approver approve a task whose approval they requested themselves.
    pub allow_self_approval: bool,
    /// Timeout of a task whose definition gives none, in seconds (0 = none).
    pub default_timeout_secs: u64,
    /// Accept 6-field schedules with a leading seconds field (for tests and demos; production
    /// schedules are 5-field cron).
    pub schedule_seconds: bool,
    /// A schedule fire missed by more than this many seconds (server down) is skipped.
    pub misfire_grace_secs: u64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            allow_self_approval: false,
            default_timeout_secs: 3600,
            schedule_seconds: false,
            misfire_grace_secs: 60,
        }
    }
}

/// The OPMATE file repository (the `[files]` table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Largest file the repository takes, in bytes (an upload or a script's put over it is
    /// refused with 413 and nothing is stored). A script's get or put travels in one message
    /// of the agent's connection, so through an agent the smaller of this and
    /// `agents.max_message_bytes` (less about a quarter for the encoding) applies.
    pub max_bytes: u64,
    /// Store files sealed with the vault's active data key (AES-256-GCM, bound to the file's
    /// name and version); `false` stores them as given. Reading an encrypted file needs the
    /// vault unsealed.
    pub encrypt: bool,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            max_bytes: 64 * 1024 * 1024,
            encrypt: true,
        }
    }
}

/// Everything the engine needs.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    pub agents: AgentsConfig,
    pub tasks: TasksConfig,
    /// The file repository.
    pub files: FilesConfig,
    /// The server's UTC offset in seconds (`timezone`): the default zone of schedules.
    pub utc_offset_secs: i32,
}
