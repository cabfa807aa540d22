//! `haechi doctor`: checks an installation (the server running or stopped) and says, for each
//! problem, what to do. Each check prints `OK`, `WARN` or `FAIL`; the exit code is 1 when any
//! check fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use haechi_store::Store;

use crate::config::{Config, Overrides};

#[derive(Args)]
pub struct DoctorArgs {
    /// The server's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL, when the server uses PostgreSQL.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Skip asking the server's health endpoint (`listen` of the configuration).
    #[arg(long)]
    offline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One check's finding.
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    pub what: String,
    /// What to do about it (empty when OK).
    pub todo: String,
}

fn ok(check: &'static str, what: impl Into<String>) -> Finding {
    Finding {
        level: Level::Ok,
        check,
        what: what.into(),
        todo: String::new(),
    }
}

fn warn(check: &'static str, what: impl Into<String>, todo: impl Into<String>) -> Finding {
    Finding {
        level: Level::Warn,
        check,
        what: what.into(),
        todo: todo.into(),
    }
}

fn fail(check: &'static str, what: impl Into<String>, todo: impl Into<String>) -> Finding {
    Finding {
        level: Level::Fail,
        check,
        what: what.into(),
        todo: todo.into(),
    }
}

pub async fn doctor(a: DoctorArgs, config_file: Option<&Path>) -> Result<ExitCode> {
    let overrides = Overrides {
        data_dir: a.data_dir.clone(),
        database_url: a.database_url.clone(),
        ..Default::default()
    };
    let mut findings = Vec::new();
    let cfg = match Config::load(config_file, &overrides) {
        Ok(cfg) => {
            findings.push(ok(
                "configuration",
                match config_file {
                    Some(f) => format!("{} loads", f.display()),
                    None => "defaults and HAECHI_* environment load".into(),
                },
            ));
            cfg
        }
        Err(e) => {
            findings.push(fail(
                "configuration",
                format!("{e:#}"),
                "fix the key named above (haechi config example shows every key)",
            ));
            return Ok(report(&findings));
        }
    };
    findings.push(check_data_dir(&cfg.data_dir));
    findings.push(check_disk(&cfg.data_dir));
    findings.push(check_certificate(&cfg));
    if !a.offline {
        findings.push(check_health(&cfg).await);
    }
    match open_store(&cfg).await {
        Err(f) => findings.push(f),
        Ok(store) => {
            let backend = match cfg.database_url {
                Some(_) => "PostgreSQL".to_string(),
                None => format!("SQLite {}", cfg.sqlite_path().display()),
            };
            findings.push(ok("store", format!("{backend} is reachable")));
            findings.extend(check_store(&store, &cfg).await);
            store.close().await;
        }
    }
    Ok(report(&findings))
}

fn report(findings: &[Finding]) -> ExitCode {
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    for f in findings {
        println!("{:<4}  {:<width$}  {}", f.level.word(), f.check, f.what);
        if !f.todo.is_empty() {
            println!("      {:<width$}  → {}", "", f.todo);
        }
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    let count = |l: Level| findings.iter().filter(|f| f.level == l).count();
    println!(
        "\n{} checks: {} OK, {} WARN, {} FAIL",
        findings.len(),
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail)
    );
    if worst == Level::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn check_data_dir(dir: &Path) -> Finding {
    match std::fs::metadata(dir) {
        Err(e) => fail(
            "data directory",
            format!("{}: {e}", dir.display()),
            "give the server's --data-dir (the package's is /var/lib/haechi)",
        ),
        Ok(m) if !m.is_dir() => fail(
            "data directory",
            format!("{} is not a directory", dir.display()),
            "give the server's --data-dir",
        ),
        Ok(m) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o007 != 0 {
                    return warn(
                        "data directory",
                        format!(
                            "{} is mode {mode:o}: other users can enter it",
                            dir.display()
                        ),
                        format!("chmod 700 {} (it holds keys)", dir.display()),
                    );
                }
            }
            let _ = m;
            ok("data directory", dir.display().to_string())
        }
    }
}

fn check_disk(dir: &Path) -> Finding {
    #[cfg(unix)]
    {
        let probe = if dir.exists() {
            dir.to_path_buf()
        } else {
            dir.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| ".".into())
        };
        match nix::sys::statvfs::statvfs(&probe) {
            Err(e) => warn(
                "disk space",
                format!("cannot read the free space of {}: {e}", probe.display()),
                "check the file system by hand (df -h)",
            ),
            Ok(s) => {
                // c_ulong / fsblkcnt_t: u64 here, narrower on some platforms.
                #[allow(clippy::unnecessary_cast)]
                let (block, avail, blocks) = (
                    s.fragment_size() as u64,
                    s.blocks_available() as u64,
                    s.blocks() as u64,
                );
                let free = avail * block;
                let total = (blocks * block).max(1);
                let pct = free as f64 * 100.0 / total as f64;
                let what = format!(
                    "{} free of {} ({pct:.1}%) on the file system of {}",
                    human(free),
                    human(total),
                    probe.display()
                );
                let todo = "free space or grow the file system: the store, the WAL and backups need room; the server stops writing when the disk is full";
                if free < 256 << 20 || pct < 1.0 {
                    fail("disk space", what, todo)
                } else if free < 1 << 30 || pct < 5.0 {
                    warn("disk space", what, todo)
                } else {
                    ok("disk space", what)
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        ok("disk space", "not checked on this platform")
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

fn check_certificate(cfg: &Config) -> Finding {
    if cfg.plain_http {
        return ok(
            "certificate",
            "plain_http: TLS is ended in front of the server",
        );
    }
    let cert = cfg
        .tls_cert
        .clone()
        .unwrap_or_else(|| crate::tls::generated_cert_paths(&cfg.data_dir).0);
    let pem = match std::fs::read(&cert) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && cfg.tls_cert.is_none() => {
            return ok(
                "certificate",
                format!(
                    "{} is not there yet: the server generates it at its first start",
                    cert.display()
                ),
            )
        }
        Err(e) => {
            return fail(
                "certificate",
                format!("cannot read {}: {e}", cert.display()),
                "set tls_cert/tls_key to readable PEM files",
            )
        }
    };
    let der = match rustls_pemfile::certs(&mut pem.as_slice()).next() {
        Some(Ok(d)) => d,
        _ => {
            return fail(
                "certificate",
                format!("{} holds no PEM certificate", cert.display()),
                "set tls_cert to a PEM certificate chain",
            )
        }
    };
    let Some(not_after) = not_after_ms(der.as_ref()) else {
        return warn(
            "certificate",
            format!("cannot read the validity of {}", cert.display()),
            "check it with: openssl x509 -noout -enddate -in FILE",
        );
    };
    let left_ms = not_after - haechi_types::time::now_ms();
    let days = left_ms / 86_400_000;
    let what = format!(
        "{} expires {} ({days} days left)",
        cert.display(),
        haechi_types::time::iso_ms(not_after)
    );
    let renew = match cfg.tls_cert {
        Some(_) => "renew the certificate and replace tls_cert/tls_key, then restart the server".to_string(),
        None => format!(
            "delete {} and its key and restart the server to generate a new one (clients that pinned the fingerprint must pin the new one), or set tls_cert/tls_key",
            cert.display()
        ),
    };
    if left_ms <= 0 {
        fail("certificate", what.replace("expires", "EXPIRED"), renew)
    } else if days < 30 {
        warn("certificate", what, renew)
    } else {
        ok("certificate", what)
    }
}

/// The `notAfter` of a DER X.509 certificate, unix ms: Certificate → tbsCertificate →
/// (version?, serialNumber, signature, issuer, validity → (notBefore, notAfter)).
pub fn not_after_ms(der: &[u8]) -> Option<i64> {
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *b.first()?;
        let first = *b.get(1)?;
        let (len, head) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *b.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        let body = b.get(head..head.checked_add(len)?)?;
        Some((tag, body, &b[head + len..]))
    }
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after; // version
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2; // serialNumber, signature, issuer
    }
    let (_, validity, _) = tlv(rest)?;
    let (_, _, after_nb) = tlv(validity)?;
    let (tag, time, _) = tlv(after_nb)?;
    let text = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i32 = text.get(0..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(0..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let n = |r: std::ops::Range<usize>| -> Option<u8> { rest.get(r)?.parse().ok() };
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(n(0..2)?).ok()?, n(2..4)?)
            .ok()?;
    let t = time::Time::from_hms(n(4..6)?, n(6..8)?, n(8..10)?).ok()?;
    let at = time::PrimitiveDateTime::new(date, t).assume_utc();
    Some((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

async fn check_health(cfg: &Config) -> Finding {
    let mut addr = cfg.listen_addr();
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let scheme = if cfg.plain_http { "http" } else { "https" };
    let url = format!("{scheme}://{addr}/api/v1/health");
    // Only the health endpoint is asked, with no credential: the certificate need not be
    // trusted for that.
    let client = match reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => return warn("server", format!("cannot build an HTTP client: {e}"), ""),
    };
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => ok("server", format!("{url} answers {}", r.status())),
        Ok(r) => fail(
            "server",
            format!("{url} answers {}", r.status()),
            "read the server's log (journalctl -u haechi)",
        ),
        Err(_) => warn(
            "server",
            format!("nothing answers at {url}"),
            "start it (systemctl start haechi), or give --offline when it is meant to be stopped",
        ),
    }
}

async fn open_store(cfg: &Config) -> std::result::Result<Store, Finding> {
    if cfg.database_url.is_none() && !cfg.sqlite_path().exists() {
        return Err(fail(
            "store",
            format!("no store at {}", cfg.sqlite_path().display()),
            "give the server's --data-dir (or --database-url); a new installation has a store after the server's first start",
        ));
    }
    Store::open_existing(&crate::server::store_options(cfg))
        .await
        .map_err(|e| {
            fail(
                "store",
                e.to_string(),
                match cfg.database_url {
                    Some(_) => "check that PostgreSQL runs and the URL (host, user, password, database) is right",
                    None => "check the file's owner and mode (the haechi user must read and write it)",
                },
            )
        })
}

async fn check_store(store: &Store, cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let latest = haechi_store::latest_schema_version();
    match store.schema_version().await {
        Err(e) => out.push(fail("migrations", e.to_string(), "check the store")),
        Ok(0) => out.push(warn(
            "migrations",
            "the store has no schema yet",
            "start the server once: it creates the schema",
        )),
        Ok(v) if v == latest => out.push(ok("migrations", format!("schema {v}, current"))),
        Ok(v) if v < latest => out.push(warn(
            "migrations",
            format!("schema {v}; this Haechi brings {latest}"),
            "take a backup (haechi backup), then start the server: it upgrades the schema in place",
        )),
        Ok(v) => out.push(fail(
            "migrations",
            format!("schema {v} is newer than this Haechi knows ({latest})"),
            "run the Haechi version that upgraded the store (or newer); a store is never moved back",
        )),
    }
    // The audit chain's head against the newest event (a full check is `haechi audit verify`).
    let head = haechi_audit::head_and_newest(store).await;
    let head_seq = match head {
        Ok((Some((seq, _)), newest)) if newest.unwrap_or(0) == seq => {
            out.push(ok("audit log", format!("{seq} events; the head matches the newest event (haechi audit verify checks every link)")));
            Some(seq)
        }
        Ok((Some((seq, _)), newest)) => {
            out.push(fail(
                "audit log",
                format!("the head says {seq} events but the newest stored is {}", newest.unwrap_or(0)),
                "run haechi audit verify to find the first broken event; keep the store as it is for investigation",
            ));
            Some(seq)
        }
        Ok((None, _)) => {
            out.push(fail(
                "audit log",
                "the audit head row is missing",
                "restore the store from a backup",
            ));
            None
        }
        Err(e) => {
            out.push(fail("audit log", e.to_string(), "check the store"));
            None
        }
    };
    out.push(check_vault(store, cfg).await);
    out.extend(check_sinks(store, cfg, head_seq).await);
    out.push(check_agents(store, cfg).await);
    out
}

async fn check_vault(store: &Store, cfg: &Config) -> Finding {
    use haechi_vault::{KeySource, OfflineKeyCheck as K};
    let source = |s: KeySource| match s {
        KeySource::Environment => "vault_master_key (HAECHI_VAULT_MASTER_KEY)".to_string(),
        _ => cfg
            .data_dir
            .join(haechi_vault::KEY_FILE)
            .display()
            .to_string(),
    };
    match haechi_vault::check_keys_offline(store, &cfg.data_dir, cfg.vault_master_key.as_ref()).await {
        Err(e) => fail("vault", e.to_string(), "check the store"),
        Ok(K::Uninitialized) => ok("vault", "not initialized yet (the server's first start does it)"),
        Ok(K::Manual) => ok(
            "vault",
            "Manual mode: sealed after every start until the master key is applied",
        ),
        Ok(K::ExpressKeyMatches(s)) => ok("vault", format!("Express mode; the key from {} opens it", source(s))),
        Ok(K::ExpressNoKey) => fail(
            "vault",
            format!(
                "Express mode but no master key is kept (no vault_master_key, no {}): the server starts sealed",
                cfg.data_dir.join(haechi_vault::KEY_FILE).display()
            ),
            "set HAECHI_VAULT_MASTER_KEY (or vault_master_key_file) to the vault's key, or restore vault.key from the backup",
        ),
        Ok(K::ExpressKeyMismatch(s)) => fail(
            "vault",
            format!("Express mode but the key from {} is not this vault's: the server starts sealed", source(s)),
            "give the key this store was made with (the one kept with its backup)",
        ),
        Ok(K::KeyUnreadable(msg)) => fail("vault", msg, "fix or replace the key (32 random bytes in base64)"),
    }
}

async fn check_sinks(store: &Store, cfg: &Config, head: Option<i64>) -> Vec<Finding> {
    let mut out = Vec::new();
    if cfg.audit.sinks.is_empty() {
        out.push(ok("audit forwarding", "no sink configured (audit.sinks)"));
        return out;
    }
    let has_table = store.has_table("audit_sink_cursors").await.unwrap_or(false);
    for sink in &cfg.audit.sinks {
        let cursor = if has_table {
            haechi_audit::forward::cursor(store, &sink.name)
                .await
                .unwrap_or(0)
        } else {
            0
        };
        let head = head.unwrap_or(0);
        let behind = (head - cursor).max(0);
        let what = format!(
            "sink {:?}: has events up to {cursor} of {head} ({behind} behind)",
            sink.name
        );
        if behind > 10_000 {
            out.push(warn(
                "audit forwarding",
                what,
                "the sink is down or slow: the server keeps retrying from its cursor; check the receiver and the server's log",
            ));
        } else {
            out.push(ok("audit forwarding", what));
        }
    }
    out
}

async fn check_agents(store: &Store, cfg: &Config) -> Finding {
    let has_skew = store.has_column("nodes", "clock_skew_ms").await;
    match has_skew {
        Ok(true) => {}
        Ok(false) => return ok("agents", "clock skew not known before the schema upgrade"),
        Err(e) => return fail("agents", e.to_string(), "check the store"),
    }
    let recent = haechi_types::time::now_ms() - cfg.agents.heartbeat_secs as i64 * 1000 * 3 * 10;
    let rows = haechi_exec::node_clocks(store, recent).await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return fail("agents", e.to_string(), "check the store"),
    };
    let missing: Vec<&str> = rows
        .iter()
        .filter(|r| r.missing_since.is_some())
        .map(|r| r.id.as_str())
        .collect();
    let worst = rows
        .iter()
        .filter_map(|r| r.clock_skew_ms.map(|s| (r.id.as_str(), s)))
        .max_by_key(|(_, s)| s.abs());
    let n = rows.len();
    let fix = "run NTP (chrony or systemd-timesyncd) on the node and on the server: schedules, dates and token lifetimes depend on the clocks";
    match worst {
        Some((id, s)) if s.abs() >= 30_000 => fail(
            "agents",
            format!(
                "node {id}'s clock is {:+.1} s off the server's ({n} agents heard recently)",
                s as f64 / 1000.0
            ),
            fix,
        ),
        Some((id, s)) if s.abs() >= 2_000 => warn(
            "agents",
            format!(
                "node {id}'s clock is {:+.1} s off the server's ({n} agents heard recently)",
                s as f64 / 1000.0
            ),
            fix,
        ),
        _ if !missing.is_empty() => warn(
            "agents",
            format!("missing (no heartbeat): {}", missing.join(", ")),
            "check the agent on those nodes (systemctl status haechi-agent)",
        ),
        Some((_, s)) => ok(
            "agents",
            format!(
                "{n} agents heard recently; the largest clock skew is {:+.3} s",
                s as f64 / 1000.0
            ),
        ),
        None => ok(
            "agents",
            format!("{n} agents heard recently; none reported its clock yet"),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_expiry_of_a_certificate_is_read() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 9);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let at = super::not_after_ms(cert.der()).unwrap();
        assert_eq!(haechi_types::time::iso_ms(at), "2031-07-09T00:00:00.000Z");
        assert_eq!(super::not_after_ms(b"\x30\x03\x02\x01\x01"), None);
    }
}
