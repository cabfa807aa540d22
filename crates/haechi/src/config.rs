//! Haechi's configuration: one [`Config`], layered built-in defaults → TOML file →
//! `HAECHI_*` environment → command line, that remembers where each value came from.
//!
//! The layers are [figment] providers. The environment and the command line are turned into
//! providers from plain data (not read by figment itself), so tests can pass an explicit
//! environment without touching the process's own.
//!
//! Secrets (`database_url`, `admin_password`, `vault_master_key`) are [`SecretString`]s: they
//! are redacted in `Debug`, serialized as `"***"`, never quoted in an error, and may be read from
//! the file named by `<key>_file` instead.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use haechi_exec::{AgentsConfig, FilesConfig, TasksConfig};
use haechi_identity::IdentityConfig;
use haechi_workflow::WorkflowConfig;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Prefix of the environment variables that set configuration keys.
const ENV_PREFIX: &str = "HAECHI_";
/// Separator of nested keys in environment variable names (`HAECHI_IDENTITY__LOCKOUT_SECS`).
const ENV_SEPARATOR: &str = "__";

/// How secrets are shown wherever configuration is displayed.
const REDACTED: &str = "***";

/// Names of the layers, as figment metadata names.
const LAYER_DEFAULT: &str = "default";
const LAYER_FILE: &str = "config file";
const LAYER_ENV: &str = "environment variable";
const LAYER_CLI: &str = "command line";

/// Each secret key and the key naming a file to read it from instead.
const SECRETS: [(&str, &str); 3] = [
    ("database_url", "database_url_file"),
    ("admin_password", "admin_password_file"),
    ("vault_master_key", "vault_master_key_file"),
];

/// Haechi's configuration (`haechi config example` prints every key with its default).
///
/// Serializing it writes each set secret as `"***"`: the serialized form is for display, and
/// does not load back with its secrets.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for the SQLite database, the generated TLS certificate and the vault key file.
    pub data_dir: PathBuf,
    /// Address the server listens on, as IP:PORT (a host name is not accepted).
    pub listen: String,
    /// PostgreSQL URL (`postgres://user:password@host:5432/db`) of a store that several servers
    /// may share; unset means the SQLite file `<data_dir>/haechi.db`.
    #[serde(serialize_with = "redact", deserialize_with = "secret")]
    pub database_url: Option<SecretString>,
    /// File holding `database_url` (one trailing newline is removed).
    pub database_url_file: Option<PathBuf>,
    /// Largest number of open database connections.
    pub database_max_connections: u32,
    /// How long a request waits for a PostgreSQL connection, in milliseconds, before it is
    /// refused with 503 (the database is down or restarting) instead of hanging.
    pub database_acquire_timeout_ms: u64,
    /// Serve plain HTTP instead of HTTPS. Allowed only on a loopback address unless
    /// `allow_plain_http_on_public_address` is also set.
    pub plain_http: bool,
    /// Allow `plain_http` on a non-loopback address (for a TLS-terminating proxy in front).
    pub allow_plain_http_on_public_address: bool,
    /// PEM certificate chain to serve; unset means a self-signed certificate generated on the
    /// first start and kept in `<data_dir>/tls/`. Set together with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// Password of the `admin` user created at the first start; unset means a random one,
    /// printed once.
    #[serde(serialize_with = "redact", deserialize_with = "secret")]
    pub admin_password: Option<SecretString>,
    /// File holding `admin_password` (one trailing newline is removed).
    pub admin_password_file: Option<PathBuf>,
    /// The vault's master key (32 random bytes in base64); unset means a key generated at the
    /// first start and kept in the data directory (Express mode).
    #[serde(serialize_with = "redact", deserialize_with = "secret")]
    pub vault_master_key: Option<SecretString>,
    /// File holding `vault_master_key` (one trailing newline is removed).
    pub vault_master_key_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Who may read `GET /metrics`: `loopback` (a client on a loopback address without a token,
    /// others with the token of a user holding `admin.settings`), `token` (everyone with such a
    /// token) or `open` (anyone).
    pub metrics_access: haechi_http::MetricsAccess,
    /// Seconds a client has to send a request's whole header, after connecting or after its
    /// previous request; an idle HTTP/1 keep-alive connection is closed after as long.
    pub http_header_timeout_secs: u64,
    /// Seconds without frames after which an HTTP/2 connection is pinged; no answer within as
    /// long closes it.
    pub http2_keepalive_secs: u64,
    /// HTTPS connections (requests and the agents' WebSockets) open at once; more are closed
    /// as they arrive.
    pub http_max_connections: usize,
    /// UTC offset (`+HH:MM` or `-HH:MM`) of the server's time zone, used for OPMATE's
    /// `YYYYMMDDHHMMSS` dates.
    pub timezone: String,
    /// Proxies (CIDRs or single addresses) whose `X-Forwarded-For` header is believed when
    /// deciding a client's IP address.
    pub trusted_proxies: Vec<String>,
    /// Log filter: a level (`trace`, `debug`, `info`, `warn`, `error`) or per-module directives
    /// such as `info,haechi_http=debug`.
    pub log_level: String,
    /// Log line format: `text` or `json`.
    pub log_format: String,
    /// Address (IP:PORT) of the PostgreSQL-protocol database gateway; unset means off.
    pub pg_gateway: Option<String>,
    /// Address (IP:PORT) of the MySQL/MariaDB-protocol database gateway; unset means off.
    pub mysql_gateway: Option<String>,
    /// Threads that carry the DB gateway's sessions; `0` means one per CPU.
    pub gateway_threads: usize,
    /// PostgreSQL statement pooling: backend connections per gateway thread shared by sessions
    /// while their statements are session-neutral; `0` turns it off.
    pub gateway_pool_size: usize,
    /// Seconds a pooled backend connection may sit with nothing to do before it is closed.
    pub gateway_pool_idle_secs: u64,
    /// Seconds between two reads of the policies' version row, the safety net behind the
    /// signal through which a policy change made on another server applies at once.
    pub gateway_policy_poll_secs: u64,
    /// The audit log: when an answer may leave relative to its event.
    pub audit: AuditConfig,
    /// Identity settings: lockout, inactivity, token lifetimes, password hashing cost.
    pub identity: IdentityConfig,
    /// Agents and nodes: heartbeats, the LOST grace, output cap, the local agent.
    pub agents: AgentsConfig,
    /// Tasks: approval, default timeout, schedules.
    pub tasks: TasksConfig,
    /// The OPMATE file repository: size limit, encryption.
    pub files: FilesConfig,
    /// Workflows: the sync wait of MDRM execute, leases between servers, http step defaults.
    pub workflow: WorkflowConfig,
    /// Where each value came from (filled by [`Config::load`]; empty means all defaults).
    #[serde(skip)]
    pub sources: Sources,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("haechi-data"),
            listen: "127.0.0.1:8443".to_string(),
            database_url: None,
            database_url_file: None,
            database_max_connections: 16,
            database_acquire_timeout_ms: 3000,
            plain_http: false,
            allow_plain_http_on_public_address: false,
            tls_cert: None,
            tls_key: None,
            admin_password: None,
            admin_password_file: None,
            vault_master_key: None,
            vault_master_key_file: None,
            max_body_bytes: 1024 * 1024,
            metrics_access: haechi_http::MetricsAccess::Loopback,
            http_header_timeout_secs: 30,
            http2_keepalive_secs: 60,
            http_max_connections: 16_384,
            timezone: "+09:00".to_string(),
            trusted_proxies: Vec::new(),
            log_level: "info".to_string(),
            log_format: "text".to_string(),
            pg_gateway: None,
            mysql_gateway: None,
            gateway_threads: 0,
            gateway_pool_size: 0,
            gateway_pool_idle_secs: 600,
            gateway_policy_poll_secs: 1,
            audit: AuditConfig::default(),
            identity: IdentityConfig::default(),
            agents: AgentsConfig::default(),
            tasks: TasksConfig::default(),
            files: FilesConfig::default(),
            workflow: WorkflowConfig::default(),
            sources: Sources::default(),
        }
    }
}

/// The `[audit]` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// `strict`: no vault value leaves the server before its read's audit event is committed
    /// (a crash never leaves an answered read unrecorded); `batched`: the event may be
    /// committed a few ms after the answer.
    pub durability: haechi_audit::Durability,
    /// Where every event is also sent, in order and at least once (a SIEM): each an inline
    /// table `{ name, kind = "syslog" | "file", ... }`; see docs/operations.md.
    pub sinks: Vec<haechi_audit::forward::SinkConfig>,
    /// Seconds between automatic checks of the hash chain, each recorded as an `audit.verify`
    /// event by `system` (the console shows the last result); 0 turns them off.
    pub verify_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            durability: haechi_audit::Durability::default(),
            sinks: Vec::new(),
            verify_interval_secs: 86_400,
        }
    }
}

/// Where each configuration value came from, by dotted key (`identity.lockout_secs`):
/// `default`, `config file <path>`, `environment variable HAECHI_…` or `command line --…`.
#[derive(Clone, Debug, Default)]
pub struct Sources(BTreeMap<String, String>);

impl Sources {
    /// The source of `key`; `default` for a key no layer set.
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or(LAYER_DEFAULT, String::as_str)
    }

    fn set(&mut self, key: &str, source: String) {
        self.0.insert(key.to_string(), source);
    }
}

/// Values given on the command line; they override every other layer. `None` = not given.
#[derive(Clone, Default, Serialize)]
pub struct Overrides {
    /// `--data-dir`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--listen`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--database-url` (a secret: redacted in `Debug`)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// `--plain-http`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain_http: Option<bool>,
    /// `--pg-gateway`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg_gateway: Option<String>,
    /// `--mysql-gateway`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mysql_gateway: Option<String>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| REDACTED),
            )
            .field("plain_http", &self.plain_http)
            .field("pg_gateway", &self.pg_gateway)
            .field("mysql_gateway", &self.mysql_gateway)
            .finish()
    }
}

/// The commented example configuration file: every key, its default and what it does.
pub fn example() -> &'static str {
    include_str!("config_example.toml")
}

impl Config {
    /// Loads the configuration: defaults, then `config_file` (when given; it must exist), then
    /// the process's `HAECHI_*` environment variables, then `overrides`; then reads secrets
    /// from their `*_file`s and validates the result.
    pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> Result<Config> {
        let known = key_tree();
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if env_key_path(name, &known).is_none() {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| anyhow!("environment variable {name} is not valid UTF-8"))?;
            env.push((name.to_string(), value));
        }
        Config::load_from(config_file, &env, overrides)
    }

    /// Removes the secret keys' environment variables (`HAECHI_VAULT_MASTER_KEY`,
    /// `HAECHI_DATABASE_URL`, `HAECHI_ADMIN_PASSWORD`) from this process once the configuration
    /// holds them, so no child process can inherit them. Call it before any other thread runs:
    /// changing the environment races with threads reading it.
    pub fn remove_secrets_from_env() {
        for (key, _) in SECRETS {
            let name = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase());
            if std::env::var_os(&name).is_some() {
                std::env::remove_var(&name);
            }
        }
    }

    /// [`Config::load`] with an explicit environment instead of the process's. Variables
    /// without the `HAECHI_` prefix, and `HAECHI_*` variables that name no key (such as
    /// `HAECHI_CONFIG`), are ignored.
    pub fn load_from(
        config_file: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Config> {
        let known = key_tree();
        let mut figment = Figment::from(Layer::new(
            Metadata::named(LAYER_DEFAULT),
            to_dict(&Config::default()).context("serializing the default configuration")?,
        ));
        if let Some(path) = config_file {
            figment = figment.merge(file_layer(path, &known)?);
        }
        figment = figment
            .merge(env_layer(env, &known)?)
            .merge(cli_layer(overrides)?);

        let mut config: Config = figment
            .extract()
            .map_err(|e| anyhow!("invalid configuration: {e}"))?;
        config.sources = sources_of(&figment, &known);
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Every effective key with its value and where it came from, one `key = value  # source`
    /// line each (`haechi config show`). Secrets are shown as `***`.
    pub fn explain(&self) -> String {
        let tree = match serde_json::to_value(self) {
            Ok(tree) => tree,
            Err(e) => return format!("# the configuration cannot be displayed: {e}\n"),
        };
        let mut rows = Vec::new();
        for (key, value) in leaves(&tree) {
            let shown = if value.is_null() {
                "(not set)".to_string()
            } else if is_secret(&key) {
                REDACTED.to_string()
            } else {
                render_value(value)
            };
            rows.push((
                format!("{key} = {shown}"),
                self.sources.get(&key).to_string(),
            ));
        }
        let width = rows
            .iter()
            .map(|(line, _)| line.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (line, source) in rows {
            let pad = width - line.chars().count();
            out.push_str(&format!("{line}{:pad$}  # {source}\n", ""));
        }
        out
    }

    /// The SQLite database file used when `database_url` is unset.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("haechi.db")
    }

    /// The address to listen on.
    ///
    /// # Panics
    ///
    /// If `listen` was changed after [`Config::load`] (which validates it) to something that is
    /// not an IP:PORT.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .parse()
            .unwrap_or_else(|e| panic!("listen {:?} is not an IP:PORT: {e}", self.listen))
    }

    /// The PostgreSQL gateway's address, when it is on.
    pub fn pg_gateway_addr(&self) -> Option<SocketAddr> {
        self.pg_gateway.as_deref().and_then(|a| a.parse().ok())
    }

    /// The MySQL gateway's address, when it is on.
    pub fn mysql_gateway_addr(&self) -> Option<SocketAddr> {
        self.mysql_gateway.as_deref().and_then(|a| a.parse().ok())
    }

    /// `timezone` as seconds east of UTC (`+09:00` → 32400).
    ///
    /// # Panics
    ///
    /// If `timezone` was changed after [`Config::load`] (which validates it) to something
    /// that is not `±HH:MM`.
    pub fn utc_offset_secs(&self) -> i32 {
        parse_utc_offset(&self.timezone)
            .unwrap_or_else(|| panic!("timezone {:?} is not ±HH:MM", self.timezone))
    }

    /// The HTTP server's deadlines and connection cap.
    pub fn serve_limits(&self) -> haechi_http::ServeLimits {
        haechi_http::ServeLimits {
            header_timeout: std::time::Duration::from_secs(self.http_header_timeout_secs),
            http2_keepalive: std::time::Duration::from_secs(self.http2_keepalive_secs),
            max_connections: self.http_max_connections,
        }
    }

    /// `trusted_proxies` as networks (a single address is a /32 or /128 network); entries
    /// that do not parse are left out ([`Config::load`] rejects them).
    pub fn trusted_proxy_nets(&self) -> Vec<IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|p| parse_net(p))
            .collect()
    }

    /// Replaces each secret given as `<key>_file` by the file's content.
    fn read_secret_files(&mut self) -> Result<()> {
        let slots = [
            (&mut self.database_url, &self.database_url_file),
            (&mut self.admin_password, &self.admin_password_file),
            (&mut self.vault_master_key, &self.vault_master_key_file),
        ];
        for ((key, file_key), (secret, file)) in SECRETS.into_iter().zip(slots) {
            let Some(path) = file else { continue };
            if secret.is_some() {
                bail!(
                    "both {key} (from {}) and {file_key} (from {}) are set: set only one of them",
                    self.sources.get(key),
                    self.sources.get(file_key)
                );
            }
            let file_source = self.sources.get(file_key).to_string();
            let mut text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read {file_key} {} (from {file_source})",
                    path.display()
                )
            })?;
            if text.ends_with("\r\n") {
                text.truncate(text.len() - 2);
            } else if text.ends_with('\n') {
                text.truncate(text.len() - 1);
            }
            *secret = Some(SecretString::from(text));
            self.sources.set(
                key,
                format!(
                    "file {} (named by {file_key} from {file_source})",
                    path.display()
                ),
            );
        }
        Ok(())
    }

    /// Checks every value that can be wrong; the error names the key and where it came from.
    fn validate(&self) -> Result<()> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(self.invalid("data_dir", "\"\"", "must name a directory"));
        }
        let listen = self.socket_addr("listen", &self.listen)?;
        self.validate_store()?;
        self.validate_agents()?;
        self.validate_workflow()?;
        self.validate_http(listen)?;
        self.validate_logging()?;
        if let Err(m) = haechi_audit::forward::validate(&self.audit.sinks) {
            bail!("invalid {m} (from {})", self.sources.get("audit.sinks"));
        }
        self.validate_gateway(listen)
    }

    /// The store's settings: secrets set but empty, the database URL, the pool.
    fn validate_store(&self) -> Result<()> {
        let secrets = [
            ("database_url", &self.database_url),
            ("admin_password", &self.admin_password),
            ("vault_master_key", &self.vault_master_key),
        ];
        for (key, secret) in secrets {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().is_empty())
            {
                return Err(self.invalid(key, REDACTED, "is empty; leave it unset instead"));
            }
        }
        if let Some(url) = &self.database_url {
            let url = url.expose_secret();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(self.invalid(
                    "database_url",
                    REDACTED,
                    "must be a PostgreSQL URL starting with postgres:// or postgresql://; \
                     leave it unset to use the SQLite file in data_dir",
                ));
            }
        }
        if self.database_max_connections == 0 {
            return Err(self.invalid("database_max_connections", 0, "must be at least 1"));
        }
        if !(100..=600_000).contains(&self.database_acquire_timeout_ms) {
            return Err(self.invalid(
                "database_acquire_timeout_ms",
                self.database_acquire_timeout_ms,
                "must be between 100 and 600000",
            ));
        }
        Ok(())
    }

    /// The `[agents]` section.
    fn validate_agents(&self) -> Result<()> {
        if self.agents.heartbeat_secs == 0 || self.agents.heartbeat_secs > 3600 {
            return Err(self.invalid(
                "agents.heartbeat_secs",
                self.agents.heartbeat_secs,
                "must be 1 to 3600",
            ));
        }
        if self.agents.missed_heartbeats == 0 {
            return Err(self.invalid("agents.missed_heartbeats", 0, "must be at least 1"));
        }
        if self.agents.output_cap_bytes < 1024 {
            return Err(self.invalid(
                "agents.output_cap_bytes",
                self.agents.output_cap_bytes,
                "must be at least 1024",
            ));
        }
        let min_message = (haechi_protocol::MAX_CHUNK + 1024) as u64;
        if !(min_message..=(64 << 20)).contains(&self.agents.max_message_bytes) {
            return Err(self.invalid(
                "agents.max_message_bytes",
                self.agents.max_message_bytes,
                format!("must be {min_message} to 67108864 (64 MiB)"),
            ));
        }
        if self.agents.inbound_buffer_bytes < self.agents.max_message_bytes * 4
            || self.agents.inbound_buffer_bytes > u32::MAX as u64
        {
            return Err(self.invalid(
                "agents.inbound_buffer_bytes",
                self.agents.inbound_buffer_bytes,
                "must be at least four times agents.max_message_bytes and below 4 GiB",
            ));
        }
        Ok(())
    }

    /// The `[workflow]` section.
    fn validate_workflow(&self) -> Result<()> {
        let wf = &self.workflow;
        if !(2..=3600).contains(&wf.lease_secs) {
            return Err(self.invalid("workflow.lease_secs", wf.lease_secs, "must be 2 to 3600"));
        }
        if wf.sync_wait_secs > 86_400 {
            return Err(self.invalid(
                "workflow.sync_wait_secs",
                wf.sync_wait_secs,
                "must be at most 86400",
            ));
        }
        if !(1..=86_400).contains(&wf.http_timeout_secs) {
            return Err(self.invalid(
                "workflow.http_timeout_secs",
                wf.http_timeout_secs,
                "must be 1 to 86400",
            ));
        }
        if !(1..=86_400).contains(&wf.retry_max_delay_secs) {
            return Err(self.invalid(
                "workflow.retry_max_delay_secs",
                wf.retry_max_delay_secs,
                "must be 1 to 86400",
            ));
        }
        if !(1..=haechi_workflow::config::MAX_BODY_BYTES).contains(&wf.http_body_max_bytes) {
            return Err(self.invalid(
                "workflow.http_body_max_bytes",
                wf.http_body_max_bytes,
                format_args!("must be 1 to {}", haechi_workflow::config::MAX_BODY_BYTES),
            ));
        }
        if let Err(m) = wf.egress() {
            let key = m.split('[').next().unwrap_or("workflow.http_allow");
            bail!("invalid {m} (from {})", self.sources.get(key));
        }
        Ok(())
    }

    /// The HTTP server's settings: plain HTTP only on loopback (unless allowed), the TLS pair,
    /// the limits, the time zone and the trusted proxies.
    fn validate_http(&self, listen: SocketAddr) -> Result<()> {
        if self.plain_http && !listen.ip().is_loopback() && !self.allow_plain_http_on_public_address
        {
            bail!(
                "plain_http = true (from {}) with listen = {listen} (from {}), which is not a \
                 loopback address: plain HTTP would expose passwords and tokens on the network. \
                 Serve HTTPS (set plain_http = false), listen on 127.0.0.1 or [::1], or, when a \
                 TLS-terminating proxy sits in front, also set \
                 allow_plain_http_on_public_address = true \
                 (HAECHI_ALLOW_PLAIN_HTTP_ON_PUBLIC_ADDRESS=true)",
                self.sources.get("plain_http"),
                self.sources.get("listen"),
            );
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => bail!(
                "tls_cert is set (from {}) but tls_key is not: set both (a PEM certificate \
                 chain and its private key), or neither for a generated self-signed certificate",
                self.sources.get("tls_cert")
            ),
            (None, Some(_)) => bail!(
                "tls_key is set (from {}) but tls_cert is not: set both (a PEM certificate \
                 chain and its private key), or neither for a generated self-signed certificate",
                self.sources.get("tls_key")
            ),
            _ => {}
        }

        for (key, v) in [
            ("http_header_timeout_secs", self.http_header_timeout_secs),
            ("http2_keepalive_secs", self.http2_keepalive_secs),
            ("http_max_connections", self.http_max_connections as u64),
        ] {
            if v == 0 {
                return Err(self.invalid(key, 0, "must be at least 1"));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(self.invalid("max_body_bytes", 0, "must be at least 1"));
        }
        if parse_utc_offset(&self.timezone).is_none() {
            return Err(self.invalid(
                "timezone",
                format!("{:?}", self.timezone),
                "must be a UTC offset +HH:MM or -HH:MM, such as +09:00 (use +00:00 for UTC)",
            ));
        }
        for proxy in &self.trusted_proxies {
            if parse_net(proxy).is_none() {
                return Err(self.invalid(
                    "trusted_proxies",
                    format!("{proxy:?}"),
                    "each entry must be a CIDR such as 10.0.0.0/8 or a single IP address",
                ));
            }
        }
        Ok(())
    }

    fn validate_logging(&self) -> Result<()> {
        if self.log_level.trim().is_empty() {
            return Err(self.invalid("log_level", "\"\"", "must be a level such as info"));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(self.invalid(
                "log_format",
                format!("{:?}", self.log_format),
                "must be \"text\" or \"json\"",
            ));
        }
        Ok(())
    }

    /// The DB gateway's settings, and that no two listeners share an address.
    fn validate_gateway(&self, listen: SocketAddr) -> Result<()> {
        if self.gateway_threads > 256 {
            return Err(self.invalid(
                "gateway_threads",
                self.gateway_threads,
                "must be 0 (one per CPU) or a thread count of at most 256",
            ));
        }

        if self.gateway_pool_size > 1024 {
            return Err(self.invalid(
                "gateway_pool_size",
                self.gateway_pool_size,
                "must be 0 (no pooling) or a connection count of at most 1024",
            ));
        }

        if !(1..=3600).contains(&self.gateway_policy_poll_secs) {
            return Err(self.invalid(
                "gateway_policy_poll_secs",
                self.gateway_policy_poll_secs,
                "must be a number of seconds from 1 to 3600",
            ));
        }
        if !(1..=86_400).contains(&self.gateway_pool_idle_secs) {
            return Err(self.invalid(
                "gateway_pool_idle_secs",
                self.gateway_pool_idle_secs,
                "must be a number of seconds from 1 to 86400",
            ));
        }

        let mut bound = vec![("listen", listen)];
        for (key, addr) in [
            ("pg_gateway", &self.pg_gateway),
            ("mysql_gateway", &self.mysql_gateway),
        ] {
            let Some(addr) = addr else { continue };
            let addr = self.socket_addr(key, addr)?;
            if let Some((other, _)) = bound.iter().find(|(_, a)| *a == addr) {
                return Err(self.invalid(
                    key,
                    format!("{:?}", addr.to_string()),
                    format!("is also the address of {other}; each listener needs its own port"),
                ));
            }
            bound.push((key, addr));
        }
        Ok(())
    }

    fn socket_addr(&self, key: &str, value: &str) -> Result<SocketAddr> {
        value.parse().map_err(|_| {
            self.invalid(
                key,
                format!("{value:?}"),
                "must be an IP address and port such as 127.0.0.1:8443 or [::1]:8443 \
                 (a host name is not accepted)",
            )
        })
    }

    fn invalid(
        &self,
        key: &str,
        shown: impl fmt::Display,
        why: impl fmt::Display,
    ) -> anyhow::Error {
        anyhow!(
            "invalid {key} = {shown} (from {}): {why}",
            self.sources.get(key)
        )
    }
}

fn is_secret(key: &str) -> bool {
    SECRETS.iter().any(|(secret, _)| *secret == key)
}

/// `±HH:MM` → seconds east of UTC.
fn parse_utc_offset(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = |i: usize| -> Option<i32> {
        let (hi, lo) = (b[i], b[i + 1]);
        (hi.is_ascii_digit() && lo.is_ascii_digit())
            .then(|| i32::from(hi - b'0') * 10 + i32::from(lo - b'0'))
    };
    let (hours, minutes) = (digits(1)?, digits(4)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

/// A CIDR, or a single address as a host network.
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

// ---- serde helpers for secrets ----

fn redact<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

/// Reads a secret from any scalar (so that `admin_password = 1234` in TOML, or an environment
/// value that looks like a number, still works) and never quotes the value in an error.
fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    struct Scalar(SecretString);

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ScalarVisitor).map(Scalar)
        }
    }

    struct ScalarVisitor;

    impl Visitor<'_> for ScalarVisitor {
        type Value = SecretString;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretString, E> {
            Ok(SecretString::from(v))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<SecretString, E> {
            Ok(SecretString::from(v))
        }
        fn visit_char<E: de::Error>(self, v: char) -> Result<SecretString, E> {
            Ok(SecretString::from(v.to_string()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<SecretString, E> {
            Ok(SecretString::from(v.to_string()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<SecretString, E> {
            Ok(SecretString::from(v.to_string()))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<SecretString, E> {
            Ok(SecretString::from(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<SecretString, E> {
            Ok(SecretString::from(v.to_string()))
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<SecretString, E> {
            Ok(SecretString::from(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<SecretString, E> {
            Ok(SecretString::from(v.to_string()))
        }
    }

    Ok(Option::<Scalar>::deserialize(d)?.map(|s| s.0))
}

// ---- the layers ----

/// A figment provider over data already in hand, under a name that says which layer it is.
struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Layer {
    fn new(metadata: Metadata, dict: Dict) -> Layer {
        Layer { metadata, dict }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn to_dict<T: Serialize>(value: &T) -> Result<Dict> {
    Value::serialize(value)
        .map_err(|e| anyhow!("{e}"))?
        .into_dict()
        .ok_or_else(|| anyhow!("not a table"))
}

/// The TOML file. Unknown keys are errors (typo protection). Parse errors give the position
/// but not the offending line, which could hold a secret.
fn file_layer(path: &Path, known: &serde_json::Value) -> Result<Layer> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let dict: Dict = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let (line, column) = line_column(&text, span.start);
                format!(" at line {line}, column {column}")
            })
            .unwrap_or_default();
        anyhow!(
            "config file {} is not valid TOML{at}: {}",
            path.display(),
            e.message()
        )
    })?;
    check_known_keys(&dict, known, "", path)?;
    let metadata =
        Metadata::from(LAYER_FILE, path).interpolater(|_: &Profile, keys: &[&str]| keys.join("."));
    Ok(Layer::new(metadata, dict))
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn check_known_keys(
    dict: &Dict,
    known: &serde_json::Value,
    prefix: &str,
    path: &Path,
) -> Result<()> {
    let Some(known) = known.as_object() else {
        return Ok(());
    };
    for (key, value) in dict {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(expected) = known.get(key) else {
            let hint = closest(key, known.keys().map(String::as_str))
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            let table = if prefix.is_empty() {
                String::new()
            } else {
                format!(" in [{prefix}]")
            };
            bail!(
                "unknown key `{full}` in config file {}{hint}; the keys{table} are: {}",
                path.display(),
                known
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if let Value::Dict(_, inner) = value {
            check_known_keys(inner, expected, &full, path)?;
        }
    }
    Ok(())
}

/// The known key closest to a misspelt one, if it is close enough to be the likely intent.
fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(key, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The `HAECHI_*` variables that name a key. Values are typed by the key's default: booleans
/// and numbers are parsed, lists are `[a, b]` or `a,b`, everything else stays a string (so
/// a password that looks like a number is not mangled). An empty value for a key that is unset
/// by default counts as unset.
fn env_layer(env: &[(String, String)], known: &serde_json::Value) -> Result<Layer> {
    let mut dict = Dict::new();
    for (name, raw) in env {
        let Some((path, default)) = env_key_path(name, known) else {
            continue;
        };
        if default.is_null() && raw.is_empty() {
            continue;
        }
        let value = env_value(name, raw, default, &path)?;
        insert_nested(&mut dict, &path, value);
    }
    let metadata = Metadata::named(LAYER_ENV).interpolater(|_: &Profile, keys: &[&str]| {
        format!(
            "{ENV_PREFIX}{}",
            keys.join(ENV_SEPARATOR).to_ascii_uppercase()
        )
    });
    Ok(Layer::new(metadata, dict))
}

/// The key path an environment variable sets and the key's default, if it names a key.
fn env_key_path<'a>(
    name: &str,
    known: &'a serde_json::Value,
) -> Option<(Vec<String>, &'a serde_json::Value)> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let path: Vec<String> = rest
        .split(ENV_SEPARATOR)
        .map(str::to_ascii_lowercase)
        .collect();
    let mut node = known;
    for key in &path {
        node = node.as_object()?.get(key)?;
    }
    (!node.is_object()).then_some((path, node))
}

fn env_value(name: &str, raw: &str, default: &serde_json::Value, path: &[String]) -> Result<Value> {
    let key = path.join(".");
    Ok(match default {
        serde_json::Value::Bool(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::from(true),
            "false" | "0" | "no" | "off" => Value::from(false),
            _ => bail!("invalid {key}: {name}={raw:?} must be true or false"),
        },
        serde_json::Value::Number(_) => {
            let raw = raw.trim();
            if let Ok(n) = raw.parse::<u64>() {
                Value::from(n)
            } else if let Ok(n) = raw.parse::<i64>() {
                Value::from(n)
            } else {
                bail!("invalid {key}: {name}={raw:?} must be a whole number")
            }
        }
        serde_json::Value::Array(_) => {
            let raw = raw.trim();
            let items: Vec<String> = raw
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .unwrap_or(raw)
                .split(',')
                .map(|item| item.trim().trim_matches('"').trim().to_string())
                .filter(|item| !item.is_empty())
                .collect();
            Value::from(items)
        }
        _ => Value::from(raw.to_string()),
    })
}

fn insert_nested(dict: &mut Dict, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict
        .entry(first.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert_nested(inner, rest, value);
    }
}

fn cli_layer(overrides: &Overrides) -> Result<Layer> {
    let dict = to_dict(overrides).context("invalid command-line value")?;
    let metadata = Metadata::named(LAYER_CLI).interpolater(|_: &Profile, keys: &[&str]| {
        format!("--{}", keys.join("-").replace('_', "-"))
    });
    Ok(Layer::new(metadata, dict))
}

/// The source of every key, from the metadata of the layer that set it last.
fn sources_of(figment: &Figment, known: &serde_json::Value) -> Sources {
    let mut sources = Sources::default();
    for (key, _) in leaves(known) {
        let Some(metadata) = figment.find_metadata(&key) else {
            continue;
        };
        let keys: Vec<&str> = key.split('.').collect();
        let source = match metadata.name.as_ref() {
            LAYER_ENV | LAYER_CLI => format!(
                "{} {}",
                metadata.name,
                metadata.interpolate(figment.profile(), &keys)
            ),
            LAYER_FILE => match &metadata.source {
                Some(file) => format!("{LAYER_FILE} {file}"),
                None => LAYER_FILE.to_string(),
            },
            _ => continue,
        };
        sources.set(&key, source);
    }
    sources
}

// ---- the key tree ----

/// The default configuration as a JSON tree: tables are objects, every other key a leaf.
fn key_tree() -> serde_json::Value {
    serde_json::to_value(Config::default()).expect("the default configuration serializes")
}

/// Every leaf of a JSON tree with its dotted key, in key order.
fn leaves(tree: &serde_json::Value) -> Vec<(String, &serde_json::Value)> {
    fn walk<'a>(
        prefix: &str,
        node: &'a serde_json::Value,
        out: &mut Vec<(String, &'a serde_json::Value)>,
    ) {
        match node.as_object() {
            Some(map) => {
                for (key, child) in map {
                    let full = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&full, child, out);
                }
            }
            None => out.push((prefix.to_string(), node)),
        }
    }
    let mut out = Vec::new();
    walk("", tree, &mut out);
    out
}

/// A value as it would be written in TOML.
fn render_value(value: &serde_json::Value) -> String {
    toml::Value::try_from(value).map_or_else(|_| value.to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(
        file: Option<&Path>,
        env_pairs: &[(&str, &str)],
        overrides: &Overrides,
    ) -> Result<Config> {
        Config::load_from(file, &env(env_pairs), overrides)
    }

    fn error(result: Result<Config>) -> String {
        format!("{:#}", result.expect_err("expected a configuration error"))
    }

    fn tree(config: &Config) -> serde_json::Value {
        serde_json::to_value(config).unwrap()
    }

    #[test]
    fn defaults() {
        let c = load(None, &[], &Overrides::default()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("haechi-data"));
        assert_eq!(c.listen_addr(), "127.0.0.1:8443".parse().unwrap());
        assert_eq!(
            c.sqlite_path(),
            PathBuf::from("haechi-data").join("haechi.db")
        );
        assert_eq!(c.database_max_connections, 16);
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.utc_offset_secs(), 9 * 3600);
        assert_eq!(c.log_format, "text");
        assert!(c.database_url.is_none() && c.admin_password.is_none());
        assert!(c.pg_gateway_addr().is_none());
        assert_eq!(c.identity.max_failed_logins, 5);
        assert_eq!(tree(&c), tree(&Config::default()));
        assert_eq!(c.sources.get("listen"), "default");
    }

    #[test]
    fn precedence_default_file_env_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "haechi.toml",
            r#"
            listen = "127.0.0.1:1001"
            data_dir = "/from/file"
            log_level = "debug"
            trusted_proxies = ["10.0.0.0/8"]

            [identity]
            max_failed_logins = 7
            lockout_secs = 60

            [identity.argon2]
            iterations = 3
            "#,
        );
        let env_pairs = [
            ("HAECHI_LISTEN", "127.0.0.1:1002"),
            ("HAECHI_LOG_LEVEL", "warn"),
            ("HAECHI_IDENTITY__MAX_FAILED_LOGINS", "3"),
            ("HAECHI_DATABASE_MAX_CONNECTIONS", "4"),
            ("HAECHI_TRUSTED_PROXIES", "192.168.0.0/16, 10.1.2.3"),
            ("HAECHI_PLAIN_HTTP", "true"),
        ];
        let overrides = Overrides {
            listen: Some("127.0.0.1:1003".into()),
            pg_gateway: Some("127.0.0.1:6432".into()),
            ..Overrides::default()
        };
        let c = load(Some(&file), &env_pairs, &overrides).unwrap();

        assert_eq!(c.listen, "127.0.0.1:1003");
        assert_eq!(c.sources.get("listen"), "command line --listen");
        assert_eq!(c.log_level, "warn");
        assert_eq!(
            c.sources.get("log_level"),
            "environment variable HAECHI_LOG_LEVEL"
        );
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(
            c.sources.get("data_dir"),
            format!("config file {}", file.display())
        );
        assert_eq!(c.timezone, "+09:00");
        assert_eq!(c.sources.get("timezone"), "default");
        assert_eq!(c.identity.max_failed_logins, 3);
        assert_eq!(
            c.sources.get("identity.max_failed_logins"),
            "environment variable HAECHI_IDENTITY__MAX_FAILED_LOGINS"
        );
        assert_eq!(c.identity.lockout_secs, 60);
        assert_eq!(c.identity.inactivity_days, 90);
        assert_eq!(c.identity.argon2.iterations, 3);
        assert_eq!(c.identity.argon2.memory_kib, 19 * 1024);
        assert_eq!(c.database_max_connections, 4);
        assert!(c.plain_http);
        assert_eq!(c.trusted_proxies, ["192.168.0.0/16", "10.1.2.3"]);
        assert_eq!(c.trusted_proxy_nets().len(), 2);
        assert_eq!(c.pg_gateway_addr(), Some("127.0.0.1:6432".parse().unwrap()));
        assert_eq!(c.sources.get("pg_gateway"), "command line --pg-gateway");
    }

    #[test]
    fn unrelated_environment_is_ignored() {
        let c = load(
            None,
            &[
                ("HAECHI_TEST_PG_URL", "postgres://x"),
                ("HAECHI_CONFIG", "/nowhere.toml"),
                ("HAECHI_IDENTITY", "x"),
                ("HAECHI_IDENTITY__NOPE", "1"),
                ("PATH", "/bin"),
            ],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(tree(&c), tree(&Config::default()));
    }

    #[test]
    fn environment_values_that_look_like_numbers_stay_strings() {
        let c = load(
            None,
            &[
                ("HAECHI_ADMIN_PASSWORD", "123456"),
                ("HAECHI_LOG_LEVEL", "1"),
            ],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.admin_password.unwrap().expose_secret(), "123456");
        assert_eq!(c.log_level, "1");
    }

    #[test]
    fn empty_environment_value_leaves_an_optional_key_unset() {
        let c = load(
            None,
            &[("HAECHI_ADMIN_PASSWORD", ""), ("HAECHI_PG_GATEWAY", "")],
            &Overrides::default(),
        )
        .unwrap();
        assert!(c.admin_password.is_none());
        assert!(c.pg_gateway.is_none());
    }

    #[test]
    fn secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let pw = write(&dir, "pw", "s3cret pass\n");
        let key = write(&dir, "key", "a2V5\r\n");
        let url = write(&dir, "url", "postgres://u:p@db/haechi\n\n");
        let file = write(
            &dir,
            "haechi.toml",
            &format!("vault_master_key_file = {:?}\n", key.display().to_string()),
        );
        let c = load(
            Some(&file),
            &[
                ("HAECHI_ADMIN_PASSWORD_FILE", pw.to_str().unwrap()),
                ("HAECHI_DATABASE_URL_FILE", url.to_str().unwrap()),
            ],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            c.admin_password.as_ref().unwrap().expose_secret(),
            "s3cret pass"
        );
        assert_eq!(c.vault_master_key.as_ref().unwrap().expose_secret(), "a2V5");
        // Only one trailing newline is removed.
        assert_eq!(
            c.database_url.as_ref().unwrap().expose_secret(),
            "postgres://u:p@db/haechi\n"
        );
        assert!(c
            .sources
            .get("admin_password")
            .contains(&pw.display().to_string()));
        assert!(c
            .sources
            .get("admin_password")
            .contains("HAECHI_ADMIN_PASSWORD_FILE"));
    }

    #[test]
    fn secret_and_its_file_together_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let pw = write(&dir, "pw", "from-file");
        let file = write(
            &dir,
            "haechi.toml",
            "admin_password = \"in-the-file-secret\"\n",
        );
        let msg = error(load(
            Some(&file),
            &[("HAECHI_ADMIN_PASSWORD_FILE", pw.to_str().unwrap())],
            &Overrides::default(),
        ));
        assert!(
            msg.contains("admin_password") && msg.contains("admin_password_file"),
            "{msg}"
        );
        assert!(msg.contains("HAECHI_ADMIN_PASSWORD_FILE"), "{msg}");
        assert!(
            !msg.contains("in-the-file-secret") && !msg.contains("from-file"),
            "{msg}"
        );
    }

    #[test]
    fn missing_secret_file_names_the_file_and_key() {
        let msg = error(load(
            None,
            &[("HAECHI_VAULT_MASTER_KEY_FILE", "/nonexistent/haechi-key")],
            &Overrides::default(),
        ));
        assert!(msg.contains("vault_master_key_file"), "{msg}");
        assert!(msg.contains("/nonexistent/haechi-key"), "{msg}");
    }

    #[test]
    fn secrets_stay_out_of_debug_explain_and_errors() {
        let overrides = Overrides {
            database_url: Some("postgres://u:db-secret-pw@h/d".into()),
            ..Overrides::default()
        };
        let c = load(
            None,
            &[
                ("HAECHI_ADMIN_PASSWORD", "hunter2-admin"),
                ("HAECHI_VAULT_MASTER_KEY", "vault-secret-key"),
            ],
            &overrides,
        )
        .unwrap();
        let shown = [
            format!("{c:?}"),
            c.explain(),
            format!("{overrides:?}"),
            serde_json::to_string(&c).unwrap(),
        ];
        for text in &shown {
            for secret in ["hunter2-admin", "vault-secret-key", "db-secret-pw"] {
                assert!(!text.contains(secret), "{secret} leaked into {text}");
            }
        }

        let msg = error(load(
            None,
            &[("HAECHI_DATABASE_URL", "mysql://u:leaky-pw@h/d")],
            &Overrides::default(),
        ));
        assert!(
            msg.contains("database_url") && !msg.contains("leaky-pw"),
            "{msg}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "bad.toml", "admin_password = \"unterminated-secret\n");
        let msg = error(load(Some(&file), &[], &Overrides::default()));
        assert!(
            msg.contains("line 1") && !msg.contains("unterminated-secret"),
            "{msg}"
        );

        let file = write(&dir, "num.toml", "admin_password = 424242\n");
        let c = load(Some(&file), &[], &Overrides::default()).unwrap();
        assert_eq!(c.admin_password.unwrap().expose_secret(), "424242");
    }

    #[test]
    fn explain_shows_values_and_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "haechi.toml",
            "log_format = \"json\"\n[identity]\nlockout_secs = 5\n",
        );
        let overrides = Overrides {
            data_dir: Some("/srv/haechi".into()),
            ..Overrides::default()
        };
        let c = load(
            Some(&file),
            &[
                ("HAECHI_ADMIN_PASSWORD", "pw-secret"),
                ("HAECHI_IDENTITY__ARGON2__PARALLELISM", "2"),
            ],
            &overrides,
        )
        .unwrap();
        let text = c.explain();
        let line = |key: &str| -> &str {
            text.lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("no {key} in\n{text}"))
        };
        assert!(
            line("listen").contains("\"127.0.0.1:8443\"") && line("listen").ends_with("# default")
        );
        assert!(line("log_format").contains("\"json\""));
        assert!(line("log_format").ends_with(&format!("# config file {}", file.display())));
        assert!(line("identity.lockout_secs").contains("= 5 "));
        assert!(line("data_dir").ends_with("# command line --data-dir"));
        assert!(line("admin_password").starts_with("admin_password = ***"));
        assert!(line("admin_password").ends_with("# environment variable HAECHI_ADMIN_PASSWORD"));
        assert!(
            line("identity.argon2.parallelism").ends_with("HAECHI_IDENTITY__ARGON2__PARALLELISM")
        );
        assert!(line("tls_cert").contains("(not set)"));
        assert!(!text.contains("pw-secret"));
        assert_eq!(text.lines().count(), leaves(&key_tree()).len());
    }

    #[test]
    fn plain_http_only_on_loopback_unless_allowed() {
        let on = |listen: &str| Overrides {
            plain_http: Some(true),
            listen: Some(listen.into()),
            ..Overrides::default()
        };
        assert!(load(None, &[], &on("127.0.0.1:8080")).is_ok());
        assert!(load(None, &[], &on("[::1]:8080")).is_ok());
        let msg = error(load(None, &[], &on("0.0.0.0:8080")));
        assert!(
            msg.contains("plain_http") && msg.contains("allow_plain_http_on_public_address"),
            "{msg}"
        );
        assert!(msg.contains("command line --plain-http"), "{msg}");
        let c = load(
            None,
            &[("HAECHI_ALLOW_PLAIN_HTTP_ON_PUBLIC_ADDRESS", "true")],
            &on("0.0.0.0:8080"),
        )
        .unwrap();
        assert!(c.plain_http && c.allow_plain_http_on_public_address);
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("HAECHI_LISTEN", "nope", "listen"),
            ("HAECHI_LISTEN", "localhost:8443", "listen"),
            ("HAECHI_TIMEZONE", "9", "timezone"),
            ("HAECHI_TIMEZONE", "+24:00", "timezone"),
            ("HAECHI_TRUSTED_PROXIES", "10.0.0.0/33", "trusted_proxies"),
            ("HAECHI_LOG_FORMAT", "xml", "log_format"),
            ("HAECHI_PG_GATEWAY", "db:5432", "pg_gateway"),
            ("HAECHI_MYSQL_GATEWAY", "127.0.0.1:8443", "mysql_gateway"),
            ("HAECHI_GATEWAY_THREADS", "1000", "gateway_threads"),
            ("HAECHI_GATEWAY_THREADS", "many", "gateway_threads"),
            ("HAECHI_GATEWAY_POOL_SIZE", "5000", "gateway_pool_size"),
            (
                "HAECHI_GATEWAY_POOL_IDLE_SECS",
                "0",
                "gateway_pool_idle_secs",
            ),
            (
                "HAECHI_GATEWAY_POLICY_POLL_SECS",
                "0",
                "gateway_policy_poll_secs",
            ),
            (
                "HAECHI_DATABASE_ACQUIRE_TIMEOUT_MS",
                "5",
                "database_acquire_timeout_ms",
            ),
            (
                "HAECHI_GATEWAY_POOL_IDLE_SECS",
                "-5",
                "HAECHI_GATEWAY_POOL_IDLE_SECS",
            ),
            ("HAECHI_MAX_BODY_BYTES", "lots", "max_body_bytes"),
            (
                "HAECHI_DATABASE_MAX_CONNECTIONS",
                "0",
                "database_max_connections",
            ),
            ("HAECHI_PLAIN_HTTP", "maybe", "plain_http"),
            ("HAECHI_TLS_CERT", "/etc/cert.pem", "tls_key"),
            (
                "HAECHI_IDENTITY__MAX_FAILED_LOGINS",
                "-1",
                "HAECHI_IDENTITY__MAX_FAILED_LOGINS",
            ),
        ];
        for (var, value, key) in cases {
            let msg = error(load(None, &[(var, value)], &Overrides::default()));
            assert!(
                msg.contains(key),
                "{var}={value}: {msg:?} does not name {key}"
            );
        }
        let msg = error(load(
            None,
            &[("HAECHI_TIMEZONE", "9")],
            &Overrides::default(),
        ));
        assert!(msg.contains("HAECHI_TIMEZONE"), "{msg}");
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "typo.toml", "lisen = \"127.0.0.1:1\"\n");
        let msg = error(load(Some(&file), &[], &Overrides::default()));
        assert!(
            msg.contains("`lisen`") && msg.contains("did you mean `listen`"),
            "{msg}"
        );
        assert!(msg.contains(&file.display().to_string()), "{msg}");

        let file = write(&dir, "nested.toml", "[identity]\nmax_failed_login = 3\n");
        let msg = error(load(Some(&file), &[], &Overrides::default()));
        assert!(
            msg.contains("identity.max_failed_login") && msg.contains("max_failed_logins"),
            "{msg}"
        );

        let file = write(&dir, "type.toml", "[identity]\nlockout_secs = \"long\"\n");
        let msg = error(load(Some(&file), &[], &Overrides::default()));
        assert!(msg.contains("\"identity.lockout_secs\""), "{msg}");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let msg = error(load(
            Some(Path::new("/nonexistent/haechi.toml")),
            &[],
            &Overrides::default(),
        ));
        assert!(msg.contains("/nonexistent/haechi.toml"), "{msg}");
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("+09:00"), Some(32400));
        assert_eq!(parse_utc_offset("-05:30"), Some(-19800));
        assert_eq!(parse_utc_offset("+00:00"), Some(0));
        for bad in ["9", "+9:00", "09:00", "+09:60", "+0900", "+09:0a", "+0९:00"] {
            assert_eq!(parse_utc_offset(bad), None, "{bad}");
        }
    }

    // ---- the example file ----

    /// `section.key` → the value written for it, from every `key = value` line of the example,
    /// commented out or not.
    fn example_keys() -> BTreeMap<String, String> {
        let mut keys = BTreeMap::new();
        let mut section = String::new();
        for line in example().lines() {
            let line = line.trim();
            let body = line.strip_prefix('#').map_or(line, str::trim_start);
            if let Some(name) = body.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
                section = name.trim().to_string();
                continue;
            }
            let Some((key, value)) = body.split_once('=') else {
                continue;
            };
            let key = key.trim();
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                continue;
            }
            let full = if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            };
            keys.insert(full, value.trim().to_string());
        }
        keys
    }

    #[test]
    fn example_loads_as_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "example.toml", example());
        let c = load(Some(&file), &[], &Overrides::default()).unwrap();
        assert_eq!(tree(&c), tree(&Config::default()));
    }

    #[test]
    fn example_lists_every_key_with_its_default() {
        let documented = example_keys();
        let defaults = key_tree();
        let all = leaves(&defaults);
        for (key, default) in &all {
            let written = documented
                .get(key)
                .unwrap_or_else(|| panic!("config_example.toml does not list `{key}`"));
            if default.is_null() {
                continue;
            }
            let parsed: toml::Table = toml::from_str(&format!("v = {written}"))
                .unwrap_or_else(|e| panic!("`{key} = {written}` in the example is not TOML: {e}"));
            assert_eq!(
                serde_json::to_value(&parsed["v"]).unwrap(),
                **default,
                "the example's value of `{key}` is not its default"
            );
        }
        for key in documented.keys() {
            assert!(
                all.iter().any(|(k, _)| k == key),
                "config_example.toml lists `{key}`, which is not a key"
            );
        }
    }
}
