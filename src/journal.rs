//! The run journal: an append-only record of what a run did, written before the run
//! moves on, so that a run killed at any point leaves a trace of what ran.
//!
//! Layout of the state directory (`--state-dir`, default `.lifeboat/`):
//! `lock` (held by the run using the directory), `runs/<run id>/journal.jsonl`, one
//! JSON record per line, and `staging/`, where a journal is made before it appears in
//! `runs/`. Every record is written as soon as it is appended, by whoever appends it,
//! and flushed to disk (`fdatasync`) by the journal's flush thread within milliseconds
//! (a node's end, and the start of a command, within 50 ms, usually with another
//! record), or at once when someone waits for it: a node's module starts only once its
//! `node_start` is on disk, except a command in the exactly-once wrapper, which records
//! its start on the host and waits for nothing (see the executor's `start_on_disk` and
//! [`PastRun::may_have_started`]); removing the completion markers at the end waits
//! for everything, and the last record, `run_end`, is written and not waited for. The
//! records:
//! `run_start` (run id, playbook and inventory paths with the sha256 of their content,
//! the controller), `node_start`, `node_finish` (status, registered result and the
//! pre-state captured for rollback), `rollback_node`, `run_end`. Secrets are masked in
//! every record. `lifeboat runs` lists the journals. [`PastRun`] reads a run back for
//! `resume` and `rollback RUN_ID`, following the chain of runs it continues.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
        /// `-e` variables.
        #[serde(default)]
        extra_vars: Json,
        /// `--limit`.
        #[serde(default)]
        limit: Option<String>,
        /// `--tags`.
        #[serde(default)]
        tags: Vec<String>,
        /// `--skip-tags`.
        #[serde(default)]
        skip_tags: Vec<String>,
        /// The run this one resumes or rolls back.
        #[serde(default)]
        continues: Option<String>,
        /// The lock directory on the hosts (`--lock-dir`), where its completion markers are.
        #[serde(default)]
        lock_dir: Option<String>,
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
///
/// Each record is written to the file by the task that appends it, at once and in the
/// order of appending (a killed controller loses nothing written), and gets a sequence
/// number (1, 2, ...). Flushing to disk (`fdatasync`) is the flush thread's, with group
/// commit: one flush covers every record written before it. It flushes when someone
/// waits (an append that waits, [`Journal::durable`], [`Journal::flush`]), and at the
/// latest [`FLUSH_DELAY`] after a record nobody waits for, so that whoever needs that
/// record later rarely waits. Appending wakes no thread but, once per flush, the
/// flush thread.
///
/// An append that waits returns (or its future resolves) only once its record is on
/// disk, so the guarantee is per record; what changes is that the nodes of 50 hosts
/// finishing together share one disk flush instead of queueing for 50.
pub struct Journal {
    /// The file and the next record's number, under one lock.
    appender: Mutex<Appender>,
    flusher: Arc<Flusher>,
    path: PathBuf,
    mask: Box<dyn Fn(&str) -> String + Send + Sync>,
}

/// The journal file as appended to.
struct Appender {
    file: File,
    /// The number the next record gets.
    next: u64,
}

/// What appenders and the flush thread share.
struct Flusher {
    state: Mutex<FlushState>,
    wake: std::sync::Condvar,
    /// The number of the last record on disk.
    synced: AtomicU64,
}

/// The flush thread's work.
#[derive(Default)]
struct FlushState {
    /// The number of the last record written.
    written: u64,
    /// When the oldest record written and not waited for must be on disk.
    due: Option<std::time::Instant>,
    /// Who waits for a flush.
    waiters: Vec<Waiter>,
    /// The first failure (to write or to flush): every later append and wait fails
    /// with it, so a record whose appender did not wait is never silently missing from
    /// a journal that goes on.
    broken: Option<String>,
    /// The journal is gone: flush what is written and end.
    closed: bool,
}

/// Someone waiting for the disk: a blocked thread or a task.
enum Waiter {
    Thread(std::sync::mpsc::Sender<Result<(), String>>),
    Task(tokio::sync::oneshot::Sender<Result<(), String>>),
}

impl Waiter {
    fn answer(self, result: Result<(), String>) {
        match self {
            Waiter::Thread(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Task(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// How long a record nobody waits for may stay written but not flushed: records
/// written meanwhile share the flush.
const FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// The same for a record that nothing waits for soon ([`Journal::append_unhurried`]):
/// a flush that comes earlier for another record takes it along.
const UNHURRIED_FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

impl Flusher {
    fn state(&self) -> std::sync::MutexGuard<'_, FlushState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `seq` is written: it must reach the disk within `within` (whenever the
    /// next flush comes, with `None`).
    fn written(&self, seq: u64, within: Option<std::time::Duration>) {
        let mut st = self.state();
        st.written = st.written.max(seq);
        let Some(within) = within else {
            return;
        };
        let due = std::time::Instant::now() + within;
        if st.due.is_none_or(|d| due < d) {
            st.due = Some(due);
            self.wake.notify_one();
        }
    }

    /// Asks for a flush now; `waiter` is answered once everything written so far is
    /// on disk (or at once, with the failure, when the journal is broken).
    fn wait(&self, waiter: Waiter) {
        let mut st = self.state();
        if let Some(e) = &st.broken {
            waiter.answer(Err(e.clone()));
            return;
        }
        st.waiters.push(waiter);
        self.wake.notify_one();
    }

    /// Marks the journal broken; returns the error every later append gets.
    fn break_with(&self, e: String) -> String {
        let mut st = self.state();
        let e = st.broken.get_or_insert(e).clone();
        for w in st.waiters.drain(..) {
            w.answer(Err(e.clone()));
        }
        e
    }

    fn broken(&self) -> Option<String> {
        self.state().broken.clone()
    }
}

/// The flush thread: sleeps until someone waits or a record written is due, then
/// flushes everything written so far and answers the waiters.
fn flush_thread(file: File, flusher: Arc<Flusher>) {
    let mut st = flusher.state();
    loop {
        let due = st.due.is_some_and(|d| d <= std::time::Instant::now());
        if !st.waiters.is_empty() || due || (st.closed && st.due.is_some()) {
            let target = st.written;
            let waiters = std::mem::take(&mut st.waiters);
            st.due = None;
            let result = match &st.broken {
                Some(e) => Err(e.clone()),
                None => {
                    drop(st);
                    let r = file.sync_data().map_err(|e| e.to_string());
                    st = flusher.state();
                    r
                }
            };
            match &result {
                Ok(()) => {
                    flusher.synced.fetch_max(target, Ordering::AcqRel);
                }
                Err(e) => {
                    st.broken.get_or_insert_with(|| e.clone());
                }
            }
            for w in waiters {
                w.answer(result.clone());
            }
            continue;
        }
        if st.closed {
            return;
        }
        st = match st.due {
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                flusher
                    .wake
                    .wait_timeout(st, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0)
            }
            None => flusher.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let mut st = self.flusher.state();
        st.closed = true;
        self.flusher.wake.notify_one();
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Creates `runs/<run_id>/journal.jsonl` under the state directory, beginning with
    /// `first` (the `run_start` record). `mask` hides secrets in each record's text. The
    /// run's directory appears with its first record already on disk (it is written in
    /// `staging/`, then moved into `runs/`), so a run killed at any point leaves either
    /// no journal or one that says what the run was.
    pub fn create(
        state: &StateDir,
        run_id: &str,
        first: &Record,
        mask: Box<dyn Fn(&str) -> String + Send + Sync>,
    ) -> std::io::Result<Journal> {
        let runs = state.path.join("runs");
        std::fs::create_dir_all(&runs)?;
        let dir = runs.join(run_id);
        if dir.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists", dir.display()),
            ));
        }
        // A journal is made in `staging/`, which holds nothing else, so that finding
        // the journals of runs killed before their first record costs nothing however
        // many runs `runs/` keeps (this run holds the lock: nobody else is writing one).
        let staging_dir = state.path.join("staging");
        std::fs::create_dir_all(&staging_dir)?;
        for e in std::fs::read_dir(&staging_dir)?.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
        let staging = staging_dir.join(run_id);
        std::fs::create_dir(&staging)?;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(staging.join("journal.jsonl"))?;
        let journal = Journal::over(file, dir.join("journal.jsonl"), mask)?;
        journal.append(first)?;
        std::fs::rename(&staging, &dir)?;
        // The new directory entry must survive a crash too.
        if let Ok(d) = File::open(&runs) {
            let _ = d.sync_all();
        }
        Ok(journal)
    }

    /// A journal appending to `file` (known as `path`), with its flush thread.
    fn over(
        file: File,
        path: PathBuf,
        mask: Box<dyn Fn(&str) -> String + Send + Sync>,
    ) -> std::io::Result<Journal> {
        let flusher = Arc::new(Flusher {
            state: Mutex::new(FlushState::default()),
            wake: std::sync::Condvar::new(),
            synced: AtomicU64::new(0),
        });
        let (for_flushing, shared) = (file.try_clone()?, flusher.clone());
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || flush_thread(for_flushing, shared))?;
        Ok(Journal {
            appender: Mutex::new(Appender { file, next: 1 }),
            flusher,
            path,
            mask,
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and flushes it to disk before returning (blocking the
    /// calling thread: for the run's first record and the rollback's).
    pub fn append(&self, record: &Record) -> std::io::Result<()> {
        self.write(record, None)?;
        let (tx, rx) = std::sync::mpsc::channel();
        self.flusher.wait(Waiter::Thread(tx));
        rx.recv()
            .map_err(|_| std::io::Error::other("the journal's flush thread stopped"))?
            .map_err(std::io::Error::other)
    }

    /// Appends one record without flushing it: for the run's last record, which a
    /// crash of the controller's system may lose without harm (the run then looks
    /// unfinished, and `lifeboat resume` finds nothing left to do). Written, it
    /// survives the end of this process, and the system writes it back in its time.
    pub fn append_written(&self, record: &Record) -> std::io::Result<()> {
        self.write(record, None).map(|_| ())
    }

    /// Appends one record; resolves once it is on disk. Many nodes appending at once
    /// share one flush.
    pub async fn append_async(&self, record: &Record) -> std::io::Result<()> {
        let seq = self.write(record, None)?;
        self.durable(seq).await
    }

    /// Appends one record without waiting for the disk, and returns its sequence
    /// number (see [`Journal::durable`]). It is written at once, in order, and flushed
    /// within [`FLUSH_DELAY`]; a failure to flush it fails every later append.
    pub fn append_later(&self, record: &Record) -> std::io::Result<u64> {
        self.write(record, Some(FLUSH_DELAY))
    }

    /// Appends one record that nobody will wait for soon (a node's end: what needs it
    /// waits for a later record): as [`Journal::append_later`], but flushed within
    /// [`UNHURRIED_FLUSH_DELAY`], usually with the next record's flush. A chain of
    /// steps thus pays one flush per step, not two.
    pub fn append_unhurried(&self, record: &Record) -> std::io::Result<u64> {
        self.write(record, Some(UNHURRIED_FLUSH_DELAY))
    }

    /// Resolves once the record numbered `seq` (and so every record before it) is on
    /// disk; fails when the journal could not be written. `0` is on disk from the start.
    pub async fn durable(&self, seq: u64) -> std::io::Result<()> {
        if self.flusher.synced.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flusher.wait(Waiter::Task(tx));
        rx.await
            .map_err(|_| std::io::Error::other("the journal's flush thread stopped"))?
            .map_err(std::io::Error::other)
    }

    /// Resolves once every record appended so far is on disk; fails when the journal
    /// could not be written.
    pub async fn flush(&self) -> std::io::Result<()> {
        if let Some(e) = self.flusher.broken() {
            return Err(std::io::Error::other(e));
        }
        let last = self
            .appender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next
            .saturating_sub(1);
        self.durable(last).await
    }

    /// Writes a record (masked) and returns its number; the flush thread learns when
    /// it is due (`flush_within`; `None`: with the next flush).
    fn write(
        &self,
        record: &Record,
        flush_within: Option<std::time::Duration>,
    ) -> std::io::Result<u64> {
        let mut line = (self.mask)(&serde_json::to_string(record).map_err(std::io::Error::other)?);
        line.push('\n');
        let seq = {
            let mut app = self.appender.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = self.flusher.broken() {
                return Err(std::io::Error::other(e));
            }
            if let Err(e) = app.file.write_all(line.as_bytes()) {
                return Err(std::io::Error::other(
                    self.flusher.break_with(e.to_string()),
                ));
            }
            app.next += 1;
            app.next - 1
        };
        self.flusher.written(seq, flush_within);
        Ok(seq)
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
        // A run killed while starting a command leaves that command's process holding
        // the lock for the moment it takes to start (the descriptor closes when it
        // does): when the run that holds it is gone, wait a little.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                    let gone = holder
                        .rsplit_once("pid ")
                        .and_then(|(_, p)| p.trim().parse::<u32>().ok())
                        .is_some_and(|p| crate::lock::controller_gone(p).is_some());
                    if gone && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
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
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
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

/// What a past run's journal says, for `resume` and `rollback`.
#[derive(Debug, Clone)]
pub struct PastRun {
    /// Its run id.
    pub run_id: String,
    /// Playbook path as given.
    pub playbook: String,
    /// Hash of its playbook files.
    pub playbook_sha256: String,
    /// Inventory path.
    pub inventory: Option<String>,
    /// Hash of the inventory file.
    pub inventory_sha256: Option<String>,
    /// `-e` variables.
    pub extra_vars: Json,
    /// `--limit`.
    pub limit: Option<String>,
    /// `--tags`.
    pub tags: Vec<String>,
    /// `--skip-tags`.
    pub skip_tags: Vec<String>,
    /// Nodes that ended and were not undone since, by (step id, host): status,
    /// registered result, undo data, and where they ran. A run that continues another
    /// (`resume`) includes what that one did.
    pub done: std::collections::HashMap<(String, String), (String, Json, Json, String)>,
    /// Nodes that started and never recorded their end (the controller was killed), by
    /// (step id, host): the runs that started them without an end, newest first. Their
    /// completion markers on the host say whether they completed.
    pub in_doubt: std::collections::HashMap<(String, String), Vec<String>>,
    /// This run, then the run it continues, and so on: newest first.
    pub lineage: Vec<String>,
    /// What each run of the lineage journaled, oldest first.
    pub journaled: Vec<Journaled>,
    /// The lock directory it used on the hosts (`--lock-dir`), when its journal says.
    pub lock_dir: Option<String>,
    /// Its outcome, if it ended.
    pub outcome: Option<String>,
}

/// The nodes one run journaled the start and the end of, by (step id, host).
#[derive(Debug, Clone, Default)]
pub struct Journaled {
    /// The run.
    pub run_id: String,
    /// Nodes whose start it journaled.
    pub started: std::collections::HashSet<(String, String)>,
    /// Nodes whose end it journaled.
    pub finished: std::collections::HashSet<(String, String)>,
    /// Whether it journaled its end: then every record before was on disk (the run
    /// flushes its journal before it releases its locks, and writes its end after).
    pub ended: bool,
}

impl PastRun {
    /// The runs of the lineage, newest first, that may have started `node` (a step
    /// that records its start on the host) without ending it: those that journaled its
    /// start, and every run whose journal may have lost its start in a crash of the
    /// controller's system. Such a step waits for no record of the journal (the host's
    /// completion log records it, see the executor), so a run that did not journal its
    /// end may have started any of them; a run that journaled its own end had every
    /// record on disk. A run that journaled the node's end did not leave it in doubt,
    /// and makes the runs before it irrelevant.
    pub fn may_have_started(&self, node: &(String, String)) -> Vec<String> {
        let mut runs: Vec<String> = Vec::new();
        for j in &self.journaled {
            if j.finished.contains(node) {
                runs.clear();
            } else if j.started.contains(node) || !j.ended {
                runs.retain(|r| *r != j.run_id);
                runs.insert(0, j.run_id.clone());
            }
        }
        runs
    }

    /// Reads run `run_id` from a state directory, with the runs it continues (a resumed
    /// run, resumed again, goes on from where each left off).
    pub fn load(state_dir: &Path, run_id: &str) -> Result<PastRun, String> {
        if !crate::lock::is_run_id(run_id) {
            return Err(format!("`{run_id}` is not a run id"));
        }
        let journal_of = |id: &str| state_dir.join("runs").join(id).join("journal.jsonl");
        let records = Journal::read(&journal_of(run_id)).map_err(|e| {
            format!(
                "no journal for run {run_id} in {} ({e}); `lifeboat runs` lists the runs",
                state_dir.display()
            )
        })?;
        let mut past = None;
        for r in &records {
            if let Record::RunStart {
                run_id,
                playbook,
                playbook_sha256,
                inventory,
                inventory_sha256,
                extra_vars,
                limit,
                tags,
                skip_tags,
                lock_dir,
                ..
            } = r
            {
                past = Some(PastRun {
                    run_id: run_id.clone(),
                    playbook: playbook.clone(),
                    playbook_sha256: playbook_sha256.clone(),
                    inventory: inventory.clone(),
                    inventory_sha256: inventory_sha256.clone(),
                    extra_vars: extra_vars.clone(),
                    limit: limit.clone(),
                    tags: tags.clone(),
                    skip_tags: skip_tags.clone(),
                    done: Default::default(),
                    in_doubt: Default::default(),
                    lineage: Vec::new(),
                    journaled: Vec::new(),
                    lock_dir: lock_dir.clone(),
                    outcome: None,
                });
                break;
            }
        }
        let mut past =
            past.ok_or_else(|| format!("the journal of run {run_id} has no run_start record"))?;
        // The chain of runs this one continues, oldest first.
        let mut chain = vec![(run_id.to_string(), records)];
        while let Some(prev) = chain.last().and_then(|(_, recs)| continues(recs)) {
            if !crate::lock::is_run_id(&prev)
                || chain.iter().any(|(id, _)| *id == prev)
                || chain.len() >= 1000
            {
                break;
            }
            let Ok(recs) = Journal::read(&journal_of(&prev)) else {
                break;
            };
            chain.push((prev, recs));
        }
        past.lineage = chain.iter().map(|(id, _)| id.clone()).collect();
        for (id, records) in chain.iter().rev() {
            let mut journaled = Journaled {
                run_id: id.clone(),
                ..Journaled::default()
            };
            for r in records {
                match r {
                    Record::NodeStart { step, host, .. } => {
                        let key = (step.clone(), host.clone());
                        journaled.started.insert(key.clone());
                        let runs = past.in_doubt.entry(key).or_default();
                        runs.retain(|x| x != id);
                        runs.insert(0, id.clone());
                    }
                    Record::NodeFinish {
                        step,
                        host,
                        status,
                        result,
                        undo,
                        exec_host,
                        ..
                    } => {
                        let key = (step.clone(), host.clone());
                        journaled.finished.insert(key.clone());
                        past.in_doubt.remove(&key);
                        if matches!(
                            status.as_str(),
                            "changed" | "ok" | "skipped" | "ignored" | "warning"
                        ) {
                            past.done.insert(
                                key,
                                (
                                    status.clone(),
                                    result.clone(),
                                    undo.clone(),
                                    exec_host.clone(),
                                ),
                            );
                        } else {
                            past.done.remove(&key);
                        }
                    }
                    Record::RollbackNode {
                        step, host, status, ..
                    } => {
                        if status == "done" {
                            past.done.remove(&(step.clone(), host.clone()));
                        }
                    }
                    Record::RunEnd { outcome, .. } => {
                        journaled.ended = true;
                        if *id == past.run_id {
                            past.outcome = Some(outcome.clone());
                        }
                    }
                    Record::RunStart { .. } => {}
                }
            }
            past.journaled.push(journaled);
        }
        // What later `lifeboat rollback`s of these runs undid is undone.
        if let Ok(entries) = std::fs::read_dir(state_dir.join("runs")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || past.lineage.contains(&name) {
                    continue;
                }
                let Ok(records) = Journal::read(&e.path().join("journal.jsonl")) else {
                    continue;
                };
                if !continues(&records).is_some_and(|c| past.lineage.contains(&c)) {
                    continue;
                }
                for r in records {
                    if let Record::RollbackNode {
                        step, host, status, ..
                    } = r
                        && status == "done"
                    {
                        past.done.remove(&(step, host));
                    }
                }
            }
        }
        Ok(past)
    }
}

/// The run a journal's run continues, if any.
fn continues(records: &[Record]) -> Option<String> {
    records.iter().find_map(|r| match r {
        Record::RunStart { continues, .. } => continues.clone(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(outcome: &str) -> Record {
        Record::RunEnd {
            outcome: outcome.into(),
            exit_code: 0,
            time: "t".into(),
        }
    }

    fn outcomes(path: &Path) -> Vec<String> {
        Journal::read(path)
            .expect("read")
            .into_iter()
            .filter_map(|r| match r {
                Record::RunEnd { outcome, .. } => Some(outcome),
                _ => None,
            })
            .collect()
    }

    fn journal_over(file: File, path: &Path) -> Journal {
        Journal::over(file, path.to_path_buf(), Box::new(|s: &str| s.to_string()))
            .expect("the flush thread starts")
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    /// Waits (at most 10 s) until `cond` holds.
    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn records_not_waited_for_are_written_in_order_and_a_failure_sticks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let j = journal_over(File::create(&path).expect("create"), &path);
        assert_eq!(j.append_later(&end("a")).expect("written"), 1);
        j.append(&end("b")).expect("on disk");
        assert_eq!(outcomes(&path), ["a", "b"]);
        assert_eq!(
            j.flusher.synced.load(Ordering::Acquire),
            2,
            "both are on disk"
        );
        drop(j);
        // A file that cannot be written: the first failure fails every later append,
        // also after a record nobody waited for, and flush requests too.
        let j = journal_over(File::open(&path).expect("open read-only"), &path);
        assert!(j.append_later(&end("c")).is_err());
        assert!(j.append(&end("d")).is_err());
        assert!(j.append_written(&end("e")).is_err());
        assert!(block_on(j.flush()).is_err());
        assert!(block_on(j.durable(1)).is_err());
        assert_eq!(
            j.flusher.synced.load(Ordering::Acquire),
            0,
            "nothing reached the disk"
        );
        drop(j);
        assert_eq!(outcomes(&path), ["a", "b"]);
    }

    #[test]
    fn a_record_nobody_waits_for_is_written_at_once_and_flushed_soon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let j = journal_over(File::create(&path).expect("create"), &path);
        // Written before the append returns (a killed controller loses nothing) and,
        // with nobody asking, flushed after the delay.
        j.append_later(&end("a")).expect("written");
        assert_eq!(outcomes(&path), ["a"]);
        eventually("the record is flushed", || {
            j.flusher.synced.load(Ordering::Acquire) == 1
        });
        // Waiting for a record flushes what was written before it.
        let seq = j.append_later(&end("b")).expect("written");
        j.append_written(&end("c")).expect("written");
        block_on(j.durable(seq)).expect("on disk");
        assert!(j.flusher.synced.load(Ordering::Acquire) >= 2);
        block_on(j.flush()).expect("on disk");
        assert_eq!(j.flusher.synced.load(Ordering::Acquire), 3);
        assert_eq!(outcomes(&path), ["a", "b", "c"]);
    }

    fn write(state: &Path, id: &str, records: &[Record]) {
        let dir = state.join("runs").join(id);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let text: String = records
            .iter()
            .map(|r| serde_json::to_string(r).expect("json") + "\n")
            .collect();
        std::fs::write(dir.join("journal.jsonl"), text).expect("write");
    }

    fn start(id: &str, continues: Option<&str>) -> Record {
        Record::RunStart {
            run_id: id.into(),
            playbook: "pb.yml".into(),
            playbook_sha256: String::new(),
            inventory: None,
            inventory_sha256: None,
            check: false,
            extra_vars: Json::Null,
            limit: None,
            tags: Vec::new(),
            skip_tags: Vec::new(),
            continues: continues.map(str::to_string),
            lock_dir: Some("/locks".into()),
            controller: "c pid 1".into(),
            time: String::new(),
        }
    }

    fn node_start(step: &str) -> Record {
        Record::NodeStart {
            node: 0,
            step: step.into(),
            host: "h".into(),
        }
    }

    fn finish(step: &str, status: &str) -> Record {
        Record::NodeFinish {
            node: 0,
            step: step.into(),
            host: "h".into(),
            status: status.into(),
            result: Json::Null,
            undo: Json::Null,
            exec_host: "h".into(),
        }
    }

    #[test]
    fn a_chain_of_resumes_reads_as_one_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path();
        // a: x done, y started, z started then failed.
        write(
            state,
            "a",
            &[
                start("a", None),
                node_start("x"),
                finish("x", "changed"),
                node_start("y"),
                node_start("z"),
                finish("z", "failed"),
            ],
        );
        // b continues a: y started again (waiting for a's command) and killed; w done.
        write(
            state,
            "b",
            &[
                start("b", Some("a")),
                node_start("y"),
                node_start("w"),
                finish("w", "ok"),
            ],
        );
        let past = PastRun::load(state, "b").expect("load");
        assert_eq!(past.lineage, ["b", "a"]);
        assert_eq!(past.lock_dir.as_deref(), Some("/locks"));
        let mut done: Vec<&str> = past.done.keys().map(|(s, _)| s.as_str()).collect();
        done.sort();
        assert_eq!(done, ["w", "x"]);
        assert_eq!(
            past.in_doubt.get(&("y".to_string(), "h".to_string())),
            Some(&vec!["b".to_string(), "a".to_string()])
        );
        assert_eq!(past.in_doubt.len(), 1, "z failed: not in doubt");
        let a = PastRun::load(state, "a").expect("load a");
        assert_eq!(a.lineage, ["a"]);
        assert!(a.in_doubt.contains_key(&("y".to_string(), "h".to_string())));
        assert!(PastRun::load(state, "../a").is_err());
    }

    #[test]
    fn a_command_may_have_started_in_every_run_that_journaled_its_start_or_not_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path();
        let key = |s: &str| (s.to_string(), "h".to_string());
        let end = || Record::RunEnd {
            outcome: "failed".into(),
            exit_code: 2,
            time: "t".into(),
        };
        // a: x done, y started; then a crash, which may have lost any later record.
        write(
            state,
            "a",
            &[
                start("a", None),
                node_start("x"),
                finish("x", "changed"),
                node_start("y"),
            ],
        );
        // b continues a: y done, u failed, w started; it ended, every record on disk.
        write(
            state,
            "b",
            &[
                start("b", Some("a")),
                node_start("y"),
                finish("y", "ok"),
                node_start("u"),
                finish("u", "failed"),
                node_start("w"),
                end(),
            ],
        );
        let past = PastRun::load(state, "b").expect("load");
        // a may have started anything it did not end; b only what it journaled.
        assert_eq!(past.may_have_started(&key("v")), ["a"]);
        assert_eq!(past.may_have_started(&key("w")), ["b", "a"]);
        // u's and y's ends are in b's journal: nothing in doubt.
        assert!(past.may_have_started(&key("u")).is_empty());
        assert!(past.may_have_started(&key("y")).is_empty());
        // c continues b and crashed too: it may have started v as well.
        write(state, "c", &[start("c", Some("b"))]);
        let past = PastRun::load(state, "c").expect("load");
        assert_eq!(past.may_have_started(&key("v")), ["c", "a"]);
    }
}
