//! The run journal: an append-only record of what a run did, written before the run
//! moves on, so that a run killed at any point leaves a trace of what ran.
//!
//! Layout of the state directory (`--state-dir`, default `.lifeboat/`):
//! `lock` (held by the run using the directory), and `runs/<run id>/journal.jsonl`,
//! one JSON record per line, each flushed to disk (fsync) before the run goes on:
//! `run_start` (run id, playbook and inventory paths with the sha256 of their content,
//! the controller), `node_start`, `node_finish` (status, registered result and the
//! pre-state captured for rollback), `rollback_node`, `run_end`. Secrets are masked in
//! every record. `lifeboat runs` lists the journals.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// One line of a journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The run begins.
    RunStart {
        /// Run id.
        run_id: String,
        /// Playbook path, as given.
        playbook: String,
        /// sha256 of every playbook file read (imports included), in order.
        playbook_sha256: String,
        /// Inventory path, if any.
        inventory: Option<String>,
        /// sha256 of the inventory file, if it is a file.
        inventory_sha256: Option<String>,
        /// Dry run.
        check: bool,
        /// The controller's host name and process id.
        controller: String,
        /// RFC 3339 time.
        time: String,
    },
    /// A node starts.
    NodeStart {
        /// Node index in the graph.
        node: usize,
        /// Step id.
        step: String,
        /// Host.
        host: String,
    },
    /// A node ends.
    NodeFinish {
        /// Node index in the graph.
        node: usize,
        /// Step id.
        step: String,
        /// Host.
        host: String,
        /// How it ended (as in events).
        status: String,
        /// The registered result.
        result: Json,
        /// Per loop item: rendered arguments and captured pre-state.
        undo: Json,
        /// Where its commands ran.
        exec_host: String,
    },
    /// A node's compensation ends.
    RollbackNode {
        /// Node index.
        node: usize,
        /// Step id.
        step: String,
        /// Host.
        host: String,
        /// How it went (as in events).
        status: String,
    },
    /// The run ends.
    RunEnd {
        /// Outcome (as in events).
        outcome: String,
        /// Exit code.
        exit_code: i32,
        /// RFC 3339 time.
        time: String,
    },
}

/// An open journal, appending records.
pub struct Journal {
    file: Mutex<File>,
    path: PathBuf,
    mask: Box<dyn Fn(&str) -> String + Send + Sync>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Creates `runs/<run_id>/journal.jsonl` under the state directory. `mask` hides
    /// secrets in each record's text.
    pub fn create(
        state: &StateDir,
        run_id: &str,
        mask: Box<dyn Fn(&str) -> String + Send + Sync>,
    ) -> std::io::Result<Journal> {
        let dir = state.path.join("runs").join(run_id);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("journal.jsonl");
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        // The new directory entry must survive a crash too.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(Journal {
            file: Mutex::new(file),
            path,
            mask,
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and flushes it to disk before returning.
    pub fn append(&self, record: &Record) -> std::io::Result<()> {
        let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        let line = (self.mask)(&line);
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_data()
    }

    /// Reads a journal; a last line cut short by a crash is ignored.
    pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
        let text = std::fs::read_to_string(path)?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<Record>(l).ok())
            .collect())
    }
}

/// The state directory, locked for the life of this value.
#[derive(Debug)]
pub struct StateDir {
    /// Its path.
    pub path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Opens (creating) and locks a state directory. Another run holding it is an
    /// error naming that run.
    pub fn lock(path: &Path, run_id: &str) -> Result<StateDir, String> {
        std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create the state directory {}: {e}", path.display()))?;
        let lock_path = path.join("lock");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(format!(
                    "another lifeboat run holds the state directory {} ({}); wait for it to end, or use another --state-dir",
                    path.display(),
                    holder.trim()
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", lock_path.display()));
            }
        }
        let _ = file.set_len(0);
        let _ = writeln!(file, "run {run_id}, pid {}", std::process::id());
        Ok(StateDir {
            path: path.to_path_buf(),
            _lock: file,
        })
    }
}

/// sha256 of files' content, in order, as hex.
pub fn hash_files<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for t in texts {
        h.update(t.as_bytes());
        h.update([0u8]);
    }
    format!("{:x}", h.finalize())
}

/// One run in the state directory, for `lifeboat runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// Playbook path.
    pub playbook: String,
    /// When it started.
    pub started: String,
    /// Outcome, or `unfinished` (killed, or still running).
    pub status: String,
    /// Nodes finished.
    pub nodes_finished: usize,
}

/// Every run journal under a state directory, oldest first.
pub fn list_runs(state_dir: &Path) -> Vec<RunSummary> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("runs")) else {
        return Vec::new();
    };
    let mut out: Vec<RunSummary> = entries
        .flatten()
        .filter_map(|e| {
            let records = Journal::read(&e.path().join("journal.jsonl")).ok()?;
            let mut s = RunSummary {
                run_id: e.file_name().to_string_lossy().into_owned(),
                playbook: String::new(),
                started: String::new(),
                status: "unfinished".into(),
                nodes_finished: 0,
            };
            for r in records {
                match r {
                    Record::RunStart { playbook, time, .. } => {
                        s.playbook = playbook;
                        s.started = time;
                    }
                    Record::NodeFinish { .. } => s.nodes_finished += 1,
                    Record::RunEnd { outcome, .. } => s.status = outcome,
                    _ => {}
                }
            }
            Some(s)
        })
        .collect();
    out.sort_by(|a, b| a.started.cmp(&b.started).then(a.run_id.cmp(&b.run_id)));
    out
}
