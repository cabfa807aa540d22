//! The client side of the CLI: log in once, keep the session in a file only the user can read,
//! and call the admin API with it.

use std::path::PathBuf;

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tls::{client_config, Pin};

/// How to trust the server, as the user chose on `haechi login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    Fingerprint(String),
    Ca(PathBuf),
    Insecure,
}

impl Trust {
    fn pin(&self) -> Pin {
        match self {
            Trust::Fingerprint(f) => Pin::Fingerprint(f.clone()),
            Trust::Ca(p) => Pin::Ca(p.clone()),
            Trust::Insecure => Pin::Insecure,
        }
    }
}

/// A saved login.
#[derive(Serialize, Deserialize)]
pub struct Session {
    pub server: String,
    pub token: String,
    pub trust: Trust,
    pub user_id: String,
}

/// `$HAECHI_SESSION`, else `$XDG_CONFIG_HOME/haechi/session.json`, else `~/.config/haechi/session.json`.
pub fn session_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HAECHI_SESSION") {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(x) => PathBuf::from(x),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set; set HAECHI_SESSION")?)
                .join(".config")
        }
    };
    Ok(base.join("haechi").join("session.json"))
}

impl Session {
    pub fn load() -> anyhow::Result<Session> {
        let path = session_path()?;
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("no session at {}: run 'haechi login' first", path.display())
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a Haechi session file", path.display()))
    }

    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = session_path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self)?;
        #[cfg(unix)]
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            f.write_all(text.as_bytes())?;
        }
        #[cfg(not(unix))]
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// An HTTP client bound to one server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &str, trust: &Trust, token: Option<String>) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*client_config(trust.pin())?).clone())
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Client {
            http,
            base: server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub fn from_session() -> anyhow::Result<Client> {
        let s = Session::load()?;
        Client::new(&s.server, &s.trust, Some(s.token))
    }

    /// Calls `method path` with an optional JSON body; returns the JSON answer (or `Null` for
    /// an empty one). A non-2xx answer is an error carrying the server's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = res.status();
        let text = res.text().await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let msg = value
                .get("message")
                .or_else(|| value.get("resultMsg"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            if status == StatusCode::UNAUTHORIZED && self.token.is_some() {
                bail!("{msg} (HTTP 401: the session may have expired; run 'haechi login' again)");
            }
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok(value)
    }
}

/// Reads a password: from standard input when asked to (one line), else from the terminal
/// without echo.
pub fn read_password(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    let pw = if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        rpassword::prompt_password(prompt).map_err(|_| {
            anyhow::anyhow!(
                "there is no terminal to ask for the password on: \
                 give it on standard input with --password-stdin"
            )
        })?
    };
    if pw.is_empty() {
        bail!("empty password");
    }
    Ok(pw)
}
