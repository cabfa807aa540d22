//! `haechi file get|put`: a running task's script reaches the OPMATE file repository through
//! the agent that runs it (the run's socket and token are in its environment,
//! `HAECHI_FILE_SOCKET` and `HAECHI_FILE_TOKEN`); the agent relays over its own connection to
//! the server. Outside a task run there is nothing to talk to.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use haechi_agent::files::{LocalRequest, ENV_FILE_SOCKET, ENV_FILE_TOKEN};
use haechi_protocol::FileReply;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[derive(Subcommand)]
pub enum FileCmd {
    /// Fetch a file of the repository (to standard output, or to -o PATH).
    Get {
        name: String,
        /// Write the file here (replaced) instead of standard output.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Store a file in the repository under NAME.
    Put {
        name: String,
        /// The file to store (`-` reads standard input).
        path: PathBuf,
        /// A description kept with the file.
        #[arg(long, default_value = "")]
        description: String,
        /// Replace a file of that name (a new version) instead of failing.
        #[arg(long)]
        replace: bool,
    },
}

fn run_env() -> anyhow::Result<(PathBuf, String)> {
    let socket = std::env::var_os(ENV_FILE_SOCKET).ok_or_else(|| {
        anyhow!(
            "{ENV_FILE_SOCKET} is not set: `haechi file` works inside a task run by a Haechi agent"
        )
    })?;
    let token = std::env::var(ENV_FILE_TOKEN).map_err(|_| {
        anyhow!(
            "{ENV_FILE_TOKEN} is not set: `haechi file` works inside a task run by a Haechi agent"
        )
    })?;
    Ok((PathBuf::from(socket), token))
}

pub async fn file(cmd: FileCmd) -> anyhow::Result<ExitCode> {
    let (socket, token) = run_env()?;
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .with_context(|| format!("cannot reach the agent at {}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let (request, body) = match &cmd {
        FileCmd::Get { name, .. } => (
            LocalRequest::Get {
                token,
                name: name.clone(),
            },
            None,
        ),
        FileCmd::Put {
            name,
            path,
            description,
            replace,
        } => {
            let content = if path.as_os_str() == "-" {
                let mut c = Vec::new();
                tokio::io::stdin().read_to_end(&mut c).await?;
                c
            } else {
                tokio::fs::read(path)
                    .await
                    .with_context(|| format!("cannot read {}", path.display()))?
            };
            (
                LocalRequest::Put {
                    token,
                    name: name.clone(),
                    description: description.clone(),
                    replace: *replace,
                    size: content.len() as u64,
                },
                Some(content),
            )
        }
    };
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    if let Some(b) = body {
        write.write_all(&b).await?;
    }
    write.flush().await?;
    let mut answer = Vec::new();
    read.read_until(b'\n', &mut answer).await?;
    let reply: FileReply =
        serde_json::from_slice(&answer).context("the agent's answer is not understood")?;
    if !(200..300).contains(&reply.status) {
        bail!(
            "refused ({}): {}",
            reply.status,
            reply.error.unwrap_or_else(|| "no reason given".into())
        );
    }
    match cmd {
        FileCmd::Get { output, name } => {
            let size = reply.size.unwrap_or(0);
            let mut content = Vec::new();
            (&mut read).take(size).read_to_end(&mut content).await?;
            if content.len() as u64 != size {
                bail!(
                    "the agent sent {} of {size} bytes of '{name}'",
                    content.len()
                );
            }
            match output {
                Some(p) => tokio::fs::write(&p, &content)
                    .await
                    .with_context(|| format!("cannot write {}", p.display()))?,
                None => {
                    let mut out = tokio::io::stdout();
                    out.write_all(&content).await?;
                    out.flush().await?;
                }
            }
            eprintln!(
                "{name}: {size} bytes, sha256 {}, version {}",
                reply.sha256.unwrap_or_default(),
                reply.version.unwrap_or_default()
            );
        }
        FileCmd::Put { name, .. } => {
            println!(
                "{name}: {} bytes stored, sha256 {}, version {}",
                reply.size.unwrap_or_default(),
                reply.sha256.unwrap_or_default(),
                reply.version.unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
