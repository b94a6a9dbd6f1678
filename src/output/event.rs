//! The events of a run, in the order they happen, and the [`Observer`] that receives
//! them. Every field is plain data so an event serialises to one JSON object.

use serde::{Deserialize, Serialize};

/// How a (step, host) node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Ran and changed something.
    Changed,
    /// Ran; already as desired.
    Ok,
    /// Its `when` was false (or nothing to do).
    Skipped,
    /// Failed (after its retries).
    Failed,
    /// Failed, but `ignore_errors` let the run go on.
    Ignored,
    /// Failed, and its step's `severity: warning` makes that a warning: the run goes on
    /// as if it had succeeded.
    Warning,
    /// Dry run: would change.
    WouldChange,
    /// Dry run: depends on something only a real run produces.
    Unknown,
    /// Never started: the run stopped first.
    NotRun,
    /// Interrupted while running.
    Cancelled,
}

impl NodeStatus {
    /// The word the console shows.
    pub fn label(self) -> &'static str {
        match self {
            NodeStatus::Changed => "changed",
            NodeStatus::Ok => "ok",
            NodeStatus::Skipped => "skip",
            NodeStatus::Failed => "FAILED",
            NodeStatus::Ignored => "failed (ignored)",
            NodeStatus::Warning => "warning",
            NodeStatus::WouldChange => "would change",
            NodeStatus::Unknown => "unknown",
            NodeStatus::NotRun => "not run",
            NodeStatus::Cancelled => "cancelled",
        }
    }
}

/// What a warning says in one line: the last line of its standard error (a check's own
/// words, e.g. `the newest backup of ctl01 is older than 26 hours`), else the first line
/// of its message.
pub fn warning_summary(msg: Option<&str>, stderr: &str) -> String {
    let last_err = stderr.lines().map(str::trim).rfind(|l| !l.is_empty());
    let first_msg = msg.and_then(|m| m.lines().map(str::trim).find(|l| !l.is_empty()));
    last_err
        .or(first_msg)
        .unwrap_or("the step failed")
        .to_string()
}

/// How one node's rollback went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackStatus {
    /// The compensation ran and succeeded.
    Done,
    /// There was nothing to undo (`rollback: none`, or no captured change).
    NothingToDo,
    /// The compensation failed.
    Failed,
    /// Not attempted: a rollback it must wait for failed, or the rollback was abandoned.
    LeftUndone,
}

/// How the whole run ended; each maps to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Everything succeeded (exit 0).
    Success,
    /// A step failed and the rollback completed (exit 2).
    RolledBack,
    /// A step failed and the rollback failed or was disabled (exit 3).
    RollbackIncomplete,
    /// Interrupted (exit 130).
    Interrupted,
}

impl RunOutcome {
    /// The process exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            RunOutcome::Success => 0,
            RunOutcome::RolledBack => 2,
            RunOutcome::RollbackIncomplete => 3,
            RunOutcome::Interrupted => 130,
        }
    }
}

/// Per-host counts for the recap.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HostRecap {
    /// The host.
    pub host: String,
    /// Nodes that changed (or would).
    pub changed: usize,
    /// Nodes already as desired.
    pub ok: usize,
    /// Skipped nodes.
    pub skipped: usize,
    /// Failed nodes (ignored failures included).
    pub failed: usize,
    /// Nodes whose failure was a warning (`severity: warning`).
    pub warnings: usize,
    /// Unknown (dry run) nodes.
    pub unknown: usize,
    /// Nodes never started.
    pub not_run: usize,
    /// Nodes rolled back.
    pub rolled_back: usize,
}

/// Something that happened in a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run begins.
    RunStart {
        /// Unique id of this run.
        run_id: String,
        /// Playbook name.
        playbook: String,
        /// Dry run.
        check: bool,
        /// Hosts targeted.
        hosts: Vec<String>,
        /// Number of (step, host) nodes.
        nodes: usize,
        /// RFC 3339 time.
        time: String,
    },
    /// The graph's waves (dry run plan); each entry is (step id, host).
    Plan {
        /// Waves in order; nodes of a wave have no path between them.
        waves: Vec<Vec<(String, String)>>,
    },
    /// A node starts.
    NodeStart {
        /// Step id.
        step: String,
        /// Step name.
        name: String,
        /// Inventory host.
        host: String,
        /// Seconds since the run began.
        at: f64,
    },
    /// A line of a running command's output (with -v).
    NodeOutput {
        /// Step id.
        step: String,
        /// Inventory host.
        host: String,
        /// `stdout` or `stderr`.
        stream: String,
        /// The text.
        text: String,
    },
    /// A node ends.
    NodeFinish {
        /// Step id.
        step: String,
        /// Step name.
        name: String,
        /// Inventory host.
        host: String,
        /// How it ended.
        status: NodeStatus,
        /// Seconds since the run began, at its start.
        started: f64,
        /// Seconds it took.
        duration: f64,
        /// Tries it took (retries + 1 at most).
        attempts: u32,
        /// Exit status of its command, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        rc: Option<i32>,
        /// Message (module's message or failure reason).
        #[serde(skip_serializing_if = "Option::is_none")]
        msg: Option<String>,
        /// Diff of file content (with --diff).
        #[serde(skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
        /// Standard output (trimmed to a reasonable size).
        #[serde(skip_serializing_if = "String::is_empty")]
        stdout: String,
        /// Standard error (trimmed).
        #[serde(skip_serializing_if = "String::is_empty")]
        stderr: String,
    },
    /// Rollback begins.
    RollbackStart {
        /// Why.
        reason: String,
        /// How many nodes are candidates for compensation.
        nodes: usize,
    },
    /// One node's compensation ends.
    RollbackNode {
        /// Step id.
        step: String,
        /// Step name.
        name: String,
        /// Inventory host.
        host: String,
        /// How it went.
        status: RollbackStatus,
        /// Seconds since the run began, at its start.
        started: f64,
        /// Seconds it took.
        duration: f64,
        /// What it did or why it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        msg: Option<String>,
    },
    /// Rollback ends.
    RollbackFinish {
        /// Every compensation succeeded.
        complete: bool,
        /// (step, host, why) of what is left undone.
        left_undone: Vec<(String, String, String)>,
    },
    /// A warning for the operator.
    Warning {
        /// The text.
        msg: String,
    },
    /// The run ends.
    RunEnd {
        /// How.
        outcome: RunOutcome,
        /// Its exit code.
        exit_code: i32,
        /// Seconds the run took.
        duration: f64,
        /// Per-host counts.
        recap: Vec<HostRecap>,
    },
}

/// Receives every event of a run, in order.
pub trait Observer: Send + Sync {
    /// One event.
    fn event(&self, event: &Event);
    /// The run is over: flush files.
    fn finish(&self) -> std::io::Result<()> {
        Ok(())
    }
}
