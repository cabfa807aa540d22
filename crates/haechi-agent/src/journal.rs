//! The agent's journal: one directory per execution under `<data_dir>/jobs/<exec_id>/`, so an
//! execution is started at most once (creating its directory is the claim), its output survives
//! a lost connection, and its result survives until the server acknowledges it.
//!
//! Files: `spec.json` (the `Run` as received), `out` and `err` (output as kept, cap applied),
//! `result.json` (written once, when the execution ended).

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use haechi_protocol::{Finished, RunSpec, Stream};

use crate::AgentError;

pub struct Journal {
    dir: PathBuf,
}

/// An execution found in the journal at start.
pub struct Entry {
    pub spec: RunSpec,
    pub result: Option<Finished>,
}

impl Journal {
    pub fn open(data_dir: &Path) -> Result<Journal, AgentError> {
        let dir = data_dir.join("jobs");
        crate::fsutil::create_private_dir(&dir, 0o700)?;
        Ok(Journal { dir })
    }

    fn job_dir(&self, exec_id: i64) -> PathBuf {
        self.dir.join(exec_id.to_string())
    }

    pub fn stream_path(&self, exec_id: i64, stream: Stream) -> PathBuf {
        self.job_dir(exec_id).join(match stream {
            Stream::Out => "out",
            Stream::Err => "err",
        })
    }

    /// Claims `spec`: `Ok(false)` when the journal already has this execution.
    pub fn accept(&self, spec: &RunSpec) -> Result<bool, AgentError> {
        let dir = self.job_dir(spec.exec_id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => {
                return Err(AgentError::io(
                    format!("cannot create {}", dir.display()),
                    e,
                ))
            }
        }
        for stream in [Stream::Out, Stream::Err] {
            let path = self.stream_path(spec.exec_id, stream);
            std::fs::File::create(&path)
                .map_err(|e| AgentError::io(format!("cannot create {}", path.display()), e))?;
        }
        // The values of `env` (vault secrets) never reach the disk: only their names.
        let mut kept = spec.clone();
        for e in &mut kept.env {
            e.value.clear();
        }
        crate::fsutil::write_atomically(&dir.join("spec.json"), &serde_json::to_vec(&kept)?)?;
        crate::fsutil::sync_dir(&self.dir);
        Ok(true)
    }

    /// Records how the execution ended.
    pub fn finish(&self, result: &Finished) -> Result<(), AgentError> {
        let path = self.job_dir(result.exec_id).join("result.json");
        crate::fsutil::write_atomically(&path, &serde_json::to_vec(result)?)
    }

    /// Forgets an execution (after the server acknowledged its result).
    pub fn remove(&self, exec_id: i64) {
        let dir = self.job_dir(exec_id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", dir.display());
            }
        }
    }

    /// Every execution in the journal, oldest first. A directory without a readable spec is a
    /// claim that was interrupted before the spec was written: it is removed (the server still
    /// sees that execution as not accepted and sends it again).
    pub fn entries(&self) -> Result<Vec<Entry>, AgentError> {
        let mut ids = Vec::new();
        let read = std::fs::read_dir(&self.dir)
            .map_err(|e| AgentError::io(format!("cannot read {}", self.dir.display()), e))?;
        for entry in read.flatten() {
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut out = Vec::new();
        for id in ids {
            let dir = self.job_dir(id);
            let spec: Option<RunSpec> = std::fs::read(dir.join("spec.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(spec) = spec else {
                tracing::warn!(exec_id = id, "journal entry without a spec; removing it");
                self.remove(id);
                continue;
            };
            let result = std::fs::read(dir.join("result.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            out.push(Entry { spec, result });
        }
        Ok(out)
    }

    /// Appends to a stream file.
    pub fn append(&self, exec_id: i64, stream: Stream, data: &[u8]) -> Result<(), AgentError> {
        let path = self.stream_path(exec_id, stream);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| AgentError::io(format!("cannot open {}", path.display()), e))?;
        f.write_all(data)
            .map_err(|e| AgentError::io(format!("cannot write {}", path.display()), e))
    }

    /// Current length of a stream file.
    pub fn stream_len(&self, exec_id: i64, stream: Stream) -> u64 {
        std::fs::metadata(self.stream_path(exec_id, stream))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}
