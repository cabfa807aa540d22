//! `haechi agent install`: writes the systemd unit that runs `haechi agent` on a node, and the
//! environment file that hands it its one-time enrolment token.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

/// The unit's name.
pub const UNIT: &str = "haechi-agent.service";

#[derive(Args)]
pub struct InstallArgs {
    /// The server, https://HOST:PORT.
    #[arg(long, value_name = "URL")]
    server: String,
    /// One-time enrolment token (POST /api/v1/agents/enrollment-tokens). Written to the
    /// environment file (mode 0600), never into the unit.
    #[arg(long, value_name = "TOKEN")]
    enroll_token: Option<String>,
    /// Read the enrolment token from this file instead (keeps it out of the shell history).
    #[arg(long, value_name = "FILE", conflicts_with = "enroll_token")]
    enroll_token_file: Option<PathBuf>,
    /// Trust the server whose certificate has this SHA-256 fingerprint.
    #[arg(long, value_name = "SHA256", conflicts_with_all = ["ca", "insecure_skip_verify"])]
    server_fingerprint: Option<String>,
    /// Trust server certificates signed by this CA (PEM).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure_skip_verify")]
    ca: Option<PathBuf>,
    /// Do not verify the server's certificate (not for production).
    #[arg(long)]
    insecure_skip_verify: bool,
    /// Node id to enrol as (default: the host name).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// The agent's own directory (its credential and journal).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/haechi-agent")]
    data_dir: PathBuf,
    /// The haechi program the unit runs.
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/haechi")]
    binary: PathBuf,
    /// Where to write the unit.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    unit_dir: PathBuf,
    /// Where to write the environment file with the enrolment token.
    #[arg(long, value_name = "FILE", default_value = "/etc/haechi/agent.env")]
    env_file: PathBuf,
    /// Replace an existing unit and environment file.
    #[arg(long)]
    force: bool,
    /// Then reload systemd and enable and start the unit (when systemd runs this machine).
    #[arg(long)]
    start: bool,
}

/// Quotes one ExecStart argument for systemd (double quotes, with `\` `"` `$` `%` escaped).
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c));
    if plain {
        return arg.to_owned();
    }
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_arg(p: &Path) -> Result<String> {
    let s = p
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", p.display()))?;
    if !p.is_absolute() {
        bail!("{s} must be an absolute path (systemd runs the unit from /)");
    }
    Ok(quote(s))
}

/// The unit's text.
pub fn unit_text(a: &InstallArgs) -> Result<String> {
    if !(a.server.starts_with("https://") || a.server.starts_with("http://")) {
        bail!("--server must be a URL such as https://haechi.example:8443");
    }
    let mut exec = vec![
        path_arg(&a.binary)?,
        "agent".into(),
        "--server".into(),
        quote(&a.server),
        "--data-dir".into(),
        path_arg(&a.data_dir)?,
    ];
    match (&a.server_fingerprint, &a.ca, a.insecure_skip_verify) {
        (Some(f), _, _) => {
            let f = crate::tls::normalize_fingerprint(f)
                .context("--server-fingerprint is not a SHA-256 fingerprint")?;
            exec.extend(["--server-fingerprint".into(), quote(&f)]);
        }
        (None, Some(ca), _) => exec.extend(["--ca".into(), path_arg(ca)?]),
        (None, None, true) => exec.push("--insecure-skip-verify".into()),
        (None, None, false) if a.server.starts_with("https://") => bail!(
            "say how the agent trusts the server: --server-fingerprint SHA256 (printed when the server starts), --ca FILE, or --insecure-skip-verify"
        ),
        _ => {}
    }
    if let Some(id) = &a.node_id {
        exec.extend(["--node-id".into(), quote(id)]);
    }
    let env_file = path_arg(&a.env_file)?;
    Ok(format!(
        "# Written by `haechi agent install`.\n\
[Unit]\n\
Description=Haechi agent (runs approved tasks sent by the Haechi server)\n\
Documentation=man:haechi(1)\n\
After=network-online.target\n\
Wants=network-online.target\n\
\n\
[Service]\n\
Type=simple\n\
# The enrolment token (HAECHI_ENROLL_TOKEN), needed only for the first connection.\n\
EnvironmentFile=-{env_file}\n\
ExecStart={exec}\n\
Restart=always\n\
RestartSec=5\n\
# The agent runs each task as the task's osUser: it starts as root and changes user for every\n\
# script, so it cannot run with NoNewPrivileges= (setuid would be refused) nor without\n\
# CAP_SETUID/CAP_SETGID, and ProtectSystem= would make every task's view of the system\n\
# read-only, which operations tasks exist to change. Scripts are confined per run instead: the\n\
# agent's Landlock sandbox keeps them from its credential and journal, and resource limits apply.\n\
# What does not reach the scripts' purpose is still taken away:\n\
UMask=0077\n\
LimitCORE=0\n\
ProtectClock=yes\n\
ProtectKernelLogs=yes\n\
LockPersonality=yes\n\
RestrictRealtime=yes\n\
StateDirectory={state}\n\
StateDirectoryMode=0700\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n",
        exec = exec.join(" "),
        state = a
            .data_dir
            .strip_prefix("/var/lib")
            .ok()
            .and_then(|p| p.to_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("haechi-agent"),
    ))
}

fn write_file(path: &Path, text: &[u8], mode: u32, force: bool) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() && !force {
        bail!("{} exists: give --force to replace it", path.display());
    }
    let tmp = path.with_extension("haechi-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = options.open(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })
}

pub fn install(a: InstallArgs) -> Result<ExitCode> {
    let unit = unit_text(&a)?;
    let token = match (&a.enroll_token, &a.enroll_token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if let Some(t) = &token {
        if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("the enrolment token must be one word (as POST /api/v1/agents/enrollment-tokens gave it)");
        }
    }
    let unit_path = a.unit_dir.join(UNIT);
    if unit_path.exists() && !a.force {
        bail!("{} exists: give --force to replace it", unit_path.display());
    }
    match &token {
        Some(t) => write_file(
            &a.env_file,
            format!("# Written by `haechi agent install`: the one-time enrolment token.\nHAECHI_ENROLL_TOKEN={t}\n").as_bytes(),
            0o600,
            a.force,
        )?,
        None => println!(
            "no --enroll-token: the agent must already be enrolled in {} (its credential is there)",
            a.data_dir.display()
        ),
    }
    write_file(&unit_path, unit.as_bytes(), 0o644, a.force)?;
    println!("wrote {}", unit_path.display());
    if token.is_some() {
        println!(
            "wrote {} (mode 0600, the enrolment token)",
            a.env_file.display()
        );
    }
    if a.start {
        if !Path::new("/run/systemd/system").exists() {
            bail!("systemd does not run this machine: start the agent with the unit's ExecStart line instead");
        }
        for args in [vec!["daemon-reload"], vec!["enable", "--now", UNIT]] {
            let status = std::process::Command::new("systemctl")
                .args(&args)
                .status()
                .context("cannot run systemctl")?;
            if !status.success() {
                bail!("systemctl {} failed ({status})", args.join(" "));
            }
        }
        println!("started {UNIT}; follow it with: journalctl -u haechi-agent -f");
    } else {
        println!("next: systemctl daemon-reload && systemctl enable --now {UNIT}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_systemd() {
        assert_eq!(quote("https://h:8443"), "https://h:8443");
        assert_eq!(quote("a b$c%d\"e"), "\"a b$$c%%d\\\"e\"");
    }
}
