//! The file repository as a running script sees it: the agent opens a unix socket for each run
//! (in the run's private directory, mode 0600, owned by the task's OS user), gives the script
//! its path and a token for that run (`HAECHI_FILE_SOCKET`, `HAECHI_FILE_TOKEN`), and relays
//! what `haechi file get` / `put` ask over its own connection to the server. Nothing listens
//! on the network; the script never talks to the server itself.
//!
//! The socket speaks one request per connection: a JSON line ([`LocalRequest`]), followed for a
//! put by `size` bytes of content; the answer is a JSON line (the server's [`FileReply`], or the
//! agent's own refusal, without `content`), followed for a successful get by `size` bytes of
//! content.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use haechi_protocol::{AgentMsg, FileReply, FILE_TOKEN_PREFIX};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::runner::Job;

/// The variable naming the run's socket.
pub const ENV_FILE_SOCKET: &str = "HAECHI_FILE_SOCKET";
/// The variable holding the run's file token.
pub const ENV_FILE_TOKEN: &str = "HAECHI_FILE_TOKEN";
/// The socket's name in the run's directory.
pub const SOCKET_NAME: &str = "haechi-file.sock";

/// Longest request line.
const MAX_REQUEST_LINE: usize = 64 * 1024;
/// How long the server has to answer a relayed request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a request waits for the run's start (and its token) to reach the server.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Room in a relayed message besides the base64 content.
const MESSAGE_ROOM: u64 = 4096;

/// What a script asks of its run's socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LocalRequest {
    Get {
        token: String,
        name: String,
    },
    Put {
        token: String,
        name: String,
        #[serde(default)]
        description: String,
        #[serde(default)]
        replace: bool,
        /// Bytes of content after the line.
        size: u64,
    },
}

/// A new file token for execution `exec_id`: `hft_<exec_id>_<43 random characters>`.
pub fn new_token(exec_id: i64) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    let secret = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 43);
    format!("{FILE_TOKEN_PREFIX}{exec_id}_{secret}")
}

/// SHA-256 of a token, hex (what the server keeps).
pub fn token_sha256(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

struct Conn {
    generation: u64,
    tx: mpsc::Sender<Message>,
    max_message: Option<u64>,
}

/// Relays scripts' file requests over the agent's current connection to the server.
#[derive(Default)]
pub(crate) struct FileRelay {
    conn: Mutex<Option<Conn>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<FileReply>>>,
    next: AtomicU64,
}

impl FileRelay {
    /// The connection requests go over from now on; returns its generation for [`Self::detach`].
    pub fn attach(&self, tx: mpsc::Sender<Message>, max_message: Option<u64>) -> u64 {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(Conn {
            generation,
            tx,
            max_message,
        });
        generation
    }

    /// The connection ended: requests waiting on it are answered with an error.
    pub fn detach(&self, generation: u64) {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if conn.as_ref().is_some_and(|c| c.generation == generation) {
            *conn = None;
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
    }

    /// The server's answer to a relayed request.
    pub fn complete(&self, reply: FileReply) {
        if let Some(tx) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&reply.req)
        {
            let _ = tx.send(reply);
        }
    }

    /// Largest content a put may carry over the current connection.
    fn max_put(&self) -> Option<u64> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let max = conn.as_ref()?.max_message?;
        Some(max.saturating_sub(MESSAGE_ROOM) / 4 * 3)
    }

    async fn request(&self, msg: impl FnOnce(u64) -> AgentMsg) -> Result<FileReply, FileReply> {
        let req = self.next.fetch_add(1, Ordering::Relaxed);
        let tx = self
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.tx.clone())
            .ok_or_else(|| {
                FileReply::refused(
                    req,
                    503,
                    "the agent is not connected to the server now; try again",
                )
            })?;
        let (reply_tx, reply_rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req, reply_tx);
        let text = serde_json::to_string(&msg(req))
            .map_err(|e| FileReply::refused(req, 500, format!("cannot encode the request: {e}")))?;
        let lost = || {
            FileReply::refused(
                req,
                503,
                "the agent lost its connection to the server; try again",
            )
        };
        if tx.send(Message::text(text)).await.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&req);
            return Err(lost());
        }
        match tokio::time::timeout(REPLY_TIMEOUT, reply_rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(lost()),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&req);
                Err(FileReply::refused(
                    req,
                    504,
                    "the server did not answer in time",
                ))
            }
        }
    }
}

/// Binds the run's socket in `dir`, mode 0600, owned by `uid`/`gid`.
pub(crate) fn bind_socket(
    dir: &Path,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
) -> Result<(std::os::unix::net::UnixListener, PathBuf), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(SOCKET_NAME);
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .map_err(|e| format!("cannot open the run's file socket: {e}"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot set the file socket's mode: {e}"))?;
    nix::unistd::chown(path.as_path(), Some(uid), Some(gid))
        .map_err(|e| format!("cannot give the file socket to the task's os user: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot set up the file socket: {e}"))?;
    Ok((listener, path))
}

/// Serves the run's socket until aborted (when the run ends).
pub(crate) async fn serve(
    listener: std::os::unix::net::UnixListener,
    owner: nix::unistd::Uid,
    job: Arc<Job>,
    relay: Arc<FileRelay>,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                exec_id = job.spec.exec_id,
                "cannot serve the run's file socket: {e}"
            );
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(exec_id = job.spec.exec_id, "the run's file socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Only the task's user (or root) talks to its run's socket.
        let allowed = stream
            .peer_cred()
            .is_ok_and(|c| c.uid() == owner.as_raw() || c.uid() == 0);
        if !allowed {
            tracing::warn!(
                exec_id = job.spec.exec_id,
                "refused a file socket connection of another user"
            );
            continue;
        }
        tokio::spawn(handle(stream, job.clone(), relay.clone()));
    }
}

async fn handle(stream: UnixStream, job: Arc<Job>, relay: Arc<FileRelay>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    let request = match (&mut read)
        .take(MAX_REQUEST_LINE as u64)
        .read_until(b'\n', &mut line)
        .await
    {
        Ok(_) => serde_json::from_slice::<LocalRequest>(&line)
            .map_err(|e| FileReply::refused(0, 400, format!("not a file request: {e}"))),
        Err(e) => Err(FileReply::refused(
            0,
            400,
            format!("cannot read the request: {e}"),
        )),
    };
    let (reply, content) = match request {
        Ok(r) => answer(r, &mut read, &job, &relay).await,
        Err(r) => (r, None),
    };
    let mut text = serde_json::to_vec(&reply).unwrap_or_default();
    text.push(b'\n');
    if write.write_all(&text).await.is_err() {
        return;
    }
    if let Some(c) = content {
        let _ = write.write_all(&c).await;
    }
    let _ = write.shutdown().await;
}

async fn answer(
    request: LocalRequest,
    read: &mut (impl tokio::io::AsyncRead + Unpin),
    job: &Arc<Job>,
    relay: &FileRelay,
) -> (FileReply, Option<Vec<u8>>) {
    let exec_id = job.spec.exec_id;
    // The server learns the token's hash with the run's start: wait until that was sent.
    let mut announced = job.announced.subscribe();
    if tokio::time::timeout(ANNOUNCE_TIMEOUT, announced.wait_for(|a| *a))
        .await
        .is_err()
    {
        return (
            FileReply::refused(
                0,
                503,
                "the agent has not reached the server since the run started; try again",
            ),
            None,
        );
    }
    let reply = match request {
        LocalRequest::Get { token, name } => {
            relay
                .request(|req| AgentMsg::FileGet {
                    req,
                    exec_id,
                    token,
                    name,
                })
                .await
        }
        LocalRequest::Put {
            token,
            name,
            description,
            replace,
            size,
        } => {
            if let Some(max) = relay.max_put().filter(|m| size > *m) {
                return (
                    FileReply::refused(
                        0,
                        413,
                        format!(
                            "the file is {size} bytes; through the agent a script puts at most {max} bytes \
                             (the server's agents.max_message_bytes)"
                        ),
                    ),
                    None,
                );
            }
            let mut content = Vec::new();
            match read.take(size).read_to_end(&mut content).await {
                Ok(n) if n as u64 == size => {}
                _ => {
                    return (
                        FileReply::refused(0, 400, format!("expected {size} bytes of content")),
                        None,
                    )
                }
            }
            let content = base64::engine::general_purpose::STANDARD.encode(&content);
            relay
                .request(|req| AgentMsg::FilePut {
                    req,
                    exec_id,
                    token,
                    name,
                    description,
                    replace,
                    content,
                })
                .await
        }
    };
    let mut r = match reply {
        Ok(r) => r,
        Err(refused) => return (refused, None),
    };
    // The content follows the line as raw bytes.
    let content = match r
        .content
        .take()
        .map(|c| base64::engine::general_purpose::STANDARD.decode(c))
    {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => {
            return (
                FileReply::refused(r.req, 502, "the server's answer was not base64"),
                None,
            )
        }
    };
    if let Some(c) = &content {
        r.size = Some(c.len() as u64);
    }
    (r, content)
}
