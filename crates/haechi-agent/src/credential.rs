//! The agent's credential: obtained once by enrolment with a one-time token, kept in
//! `<data_dir>/credential.json` (mode 0600), sent on every connection afterwards.

use std::path::Path;

use haechi_protocol::{EnrollRequest, EnrollResponse, ENROLL_PATH};
use serde::{Deserialize, Serialize};

use crate::{fsutil, sysinfo, AgentError, AgentOptions};

const FILE: &str = "credential.json";

/// What an enrolled agent keeps.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credential {
    /// The server it enrolled with.
    pub server: String,
    pub node_id: String,
    pub agent_guid: String,
    /// The agent's secret (the server holds only its hash).
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("server", &self.server)
            .field("node_id", &self.node_id)
            .field("agent_guid", &self.agent_guid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credential {
    pub fn load(data_dir: &Path) -> Result<Option<Credential>, AgentError> {
        let path = data_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                AgentError::Config(format!(
                    "{} is not an agent credential: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::io(format!("cannot read {}", path.display()), e)),
        }
    }

    fn save(&self, data_dir: &Path) -> Result<(), AgentError> {
        fsutil::write_atomically(&data_dir.join(FILE), &serde_json::to_vec_pretty(self)?)
    }

    /// The `Authorization` header value.
    pub fn authorization(&self) -> String {
        format!(
            "{} {}:{}",
            haechi_protocol::AUTH_SCHEME,
            self.node_id,
            self.secret
        )
    }
}

/// Holds an exclusive lock on the data directory for the agent's lifetime (two agents on one
/// journal would start executions twice).
pub fn lock_data_dir(data_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, AgentError> {
    let path = data_dir.join("agent.lock");
    let file = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true),
        0o600,
    )
    .open(&path)
    .map_err(|e| AgentError::io(format!("cannot open {}", path.display()), e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        AgentError::Config(format!(
            "another agent is running on the data directory {}",
            data_dir.display()
        ))
    })
}

/// The stored credential, or a new one from enrolment.
pub async fn load_or_enroll(opts: &AgentOptions) -> Result<Credential, AgentError> {
    if let Some(cred) = Credential::load(&opts.data_dir)? {
        if let Some(want) = &opts.node_id {
            if *want != cred.node_id {
                return Err(AgentError::Config(format!(
                    "the data directory {} is enrolled as node '{}', not '{want}'",
                    opts.data_dir.display(),
                    cred.node_id
                )));
            }
        }
        return Ok(cred);
    }
    let token = opts.enroll_token.clone().ok_or_else(|| {
        AgentError::Config(format!(
            "the data directory {} holds no credential: pass --enroll-token (create one with POST /api/v1/agents/enrollment-tokens)",
            opts.data_dir.display()
        ))
    })?;
    let hostname = sysinfo::hostname();
    let node_id = opts.node_id.clone().unwrap_or_else(|| hostname.clone());
    let req = EnrollRequest {
        token,
        node_id,
        agent_ver: opts.agent_ver.clone(),
        os_name: sysinfo::os_name(),
        hostname,
    };
    let res = post_enroll(opts, &req).await?;
    let cred = Credential {
        server: opts.server.clone(),
        node_id: res.node_id,
        agent_guid: res.agent_guid,
        secret: res.secret,
    };
    cred.save(&opts.data_dir)?;
    tracing::info!(node_id = %cred.node_id, server = %opts.server, "agent enrolled");
    Ok(cred)
}

async fn post_enroll(
    opts: &AgentOptions,
    req: &EnrollRequest,
) -> Result<EnrollResponse, AgentError> {
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(tls) = &opts.tls {
        builder = builder.use_preconfigured_tls((**tls).clone());
    }
    let client = builder
        .build()
        .map_err(|e| AgentError::Enroll(format!("HTTP client: {e}")))?;
    let url = format!("{}{ENROLL_PATH}", opts.server.trim_end_matches('/'));
    let res = client
        .post(&url)
        .json(req)
        .send()
        .await
        .map_err(|e| AgentError::Enroll(format!("cannot reach {url}: {}", error_chain(&e))))?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or(text);
        return Err(AgentError::Enroll(format!(
            "the server answered {}: {msg}",
            status.as_u16()
        )));
    }
    serde_json::from_str(&text).map_err(|e| AgentError::Enroll(format!("unexpected answer: {e}")))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
