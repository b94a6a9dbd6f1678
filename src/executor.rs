//! The executor: schedules the graph's (step, host) nodes and runs each one.
//!
//! Scheduling: a node starts once every node it waits for has ended (ok, changed,
//! skipped, an ignored failure or a warning). At most `host_parallelism` nodes run at once on a
//! host and at most `forks` hosts have work running at once. When a node fails for
//! good (after its retries, not ignored, not a warning) or the operator interrupts, nothing new
//! starts, running nodes finish (an interrupt cancels them), and [`crate::rollback`]
//! compensates what ran.
//!
//! Running a node: evaluate `when`, render `loop` and the module's arguments with the
//! node's variables, reach the host (or its `delegate_to`) through the connection pool,
//! lock it ([`crate::lock`], once per run; a refused host fails like an unreachable
//! one), run the module with the step's timeout and retries and a completion marker
//! for each loop item ([`crate::marker`]), register the result. At the end, after the
//! rollback, the host locks are released. `resume` and `rollback RUN_ID` first lock
//! every host the continued run changed. In a dry
//! run, modules only probe (except `read_only` steps, which really run) and anything
//! that depends on a result only a real run produces is marked `unknown`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connection::{ConnectionPool, OutputChunk, Stream};
use crate::graph::Graph;
use crate::inventory::Inventory;
use crate::modules::{Module, ModuleContext, ModuleError, Outcome};
use crate::output::{Emitter, Event, NodeStatus, RunOutcome};
use crate::playbook::{Playbook, Step};
use crate::rollback::{self, RollbackReport};
use crate::template::{TemplateError, Templates};
use crate::vars::VarsCore;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Dry run: change nothing.
    pub check: bool,
    /// Show file diffs.
    pub diff: bool,
    /// Hosts with work running at once.
    pub forks: usize,
    /// Nodes running at once on one host.
    pub host_parallelism: usize,
    /// Leave everything as it is after a failure.
    pub no_rollback: bool,
    /// Stream command output.
    pub verbose: bool,
    /// This run's id.
    pub run_id: String,
    /// Lock directory on hosts without `lifeboat_lock_dir` (`--lock-dir`).
    pub lock_dir: String,
    /// Break other runs' host locks (`--break-lock`).
    pub break_lock: bool,
    /// The runs this one continues (`resume`, `rollback RUN_ID`), newest first.
    pub lineage: Vec<String>,
    /// The lock directory those runs used (where their completion markers are).
    pub past_lock_dir: Option<String>,
    /// Nodes a continued run started without recording their end, by node index: the
    /// runs whose completion markers may hold their result, newest first.
    pub in_doubt: HashMap<usize, Vec<String>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            check: false,
            diff: false,
            forks: 64,
            host_parallelism: 8,
            no_rollback: false,
            verbose: false,
            run_id: new_run_id(),
            lock_dir: crate::lock::DEFAULT_LOCK_DIR.to_string(),
            break_lock: false,
            lineage: Vec::new(),
            past_lock_dir: None,
            in_doubt: HashMap::new(),
        }
    }
}

/// How a node of `step` that failed for good (after its retries) ends: `failed`,
/// `failed (ignored)` with `ignore_errors`, or `warning` with `severity: warning`. Only
/// `failed` stops the run (or takes its host out, with `max_fail_percentage`); the
/// others count as ended for what needs them.
pub fn failure_status(step: &Step) -> NodeStatus {
    match (step.ignore_errors, step.severity) {
        (true, _) => NodeStatus::Ignored,
        (false, crate::playbook::Severity::Warning) => NodeStatus::Warning,
        (false, crate::playbook::Severity::Error) => NodeStatus::Failed,
    }
}

/// A fresh run id: UTC time and a random suffix (from the system's randomness: runs
/// started within one second must not meet in a state directory).
pub fn new_run_id() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now.chars().filter(char::is_ascii_digit).collect();
    format!("{stamp}-{}", crate::random::hex(3))
}

/// Ctrl-C presses, counted. The first stops new work and rolls back; the second
/// abandons the rollback.
#[derive(Clone)]
pub struct Interrupts {
    rx: watch::Receiver<u32>,
    /// Keeps the channel open when nobody can press (see [`Interrupts::none`]).
    _never: Option<Arc<watch::Sender<u32>>>,
}

impl Interrupts {
    /// Interrupts that never come.
    pub fn none() -> Interrupts {
        let (tx, rx) = watch::channel(0);
        Interrupts {
            rx,
            _never: Some(Arc::new(tx)),
        }
    }

    /// A pair: the sender side counts presses.
    pub fn channel() -> (watch::Sender<u32>, Interrupts) {
        let (tx, rx) = watch::channel(0);
        (tx, Interrupts { rx, _never: None })
    }

    /// Presses so far.
    pub fn count(&self) -> u32 {
        *self.rx.borrow()
    }

    /// Waits until at least `n` presses.
    pub async fn reached(&mut self, n: u32) {
        if self.rx.wait_for(|c| *c >= n).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What became of one node, kept for the rollback and the report.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    /// How it ended.
    pub status: NodeStatus,
    /// Seconds since the run began, at its start.
    pub started: f64,
    /// Seconds since the run began, at its end (0 for a node that never ran).
    pub finished: f64,
    /// The registered form of its result.
    pub result: Json,
    /// Per loop item: rendered arguments and captured pre-state (when any).
    pub undo: Vec<(Json, Option<Json>)>,
    /// The host its commands ran on (its `delegate_to`, or itself).
    pub exec_host: String,
    /// Its module was started (at least one attempt began): only then may it have
    /// changed anything, and only then is it compensated.
    pub entered: bool,
}

impl NodeRecord {
    fn not_run() -> Self {
        NodeRecord {
            status: NodeStatus::NotRun,
            started: 0.0,
            finished: 0.0,
            result: Json::Null,
            undo: Vec::new(),
            exec_host: String::new(),
            entered: false,
        }
    }
}

/// The end of a run.
#[derive(Debug)]
pub struct RunReport {
    /// How it ended.
    pub outcome: RunOutcome,
    /// Every node's record, by node index.
    pub records: Vec<NodeRecord>,
    /// The rollback, when one ran.
    pub rollback: Option<RollbackReport>,
    /// Why the run stopped early, if it did.
    pub stop_reason: Option<String>,
}

/// Everything a run needs, shared by its tasks.
pub struct Run {
    /// The playbook.
    pub playbook: Arc<Playbook>,
    /// The inventory.
    pub inventory: Arc<Inventory>,
    /// The graph.
    pub graph: Arc<Graph>,
    /// Variables.
    pub vars: Arc<VarsCore>,
    /// Templates.
    pub templates: Arc<Templates>,
    /// Connections.
    pub conns: Arc<ConnectionPool>,
    /// Options.
    pub opts: RunOptions,
    /// Events out.
    pub emitter: Arc<Emitter>,
    /// What running nodes have done so far, so an interrupted node keeps its undo data.
    pub partial: std::sync::Mutex<HashMap<usize, NodeRecord>>,
    /// The run journal, when the run keeps one.
    pub journal: Option<Arc<crate::journal::Journal>>,
    /// Nodes a past run already did (`lifeboat resume` / `rollback`), by node index:
    /// they are not run again; their results and undo data come from the journal.
    pub prior: HashMap<usize, NodeRecord>,
    /// The locks this run holds on its hosts.
    pub locks: crate::lock::HostLocks,
    /// The journal sequence number of each started node's start record.
    pub start_seqs: std::sync::Mutex<HashMap<usize, u64>>,
    /// How each host is reached, read from its variables once.
    pub settings: std::sync::Mutex<HashMap<String, Arc<crate::inventory::ConnectionSettings>>>,
}

enum NodeEnd {
    Done(NodeRecord),
    /// The journal could not record the node's start or end: the run stops.
    Unjournaled(NodeRecord, String),
}

impl Run {
    /// Runs the graph to its end: success, or failure and rollback.
    pub async fn execute(self: Arc<Self>, mut interrupts: Interrupts) -> RunReport {
        let started = Instant::now();
        let graph = self.graph.clone();
        let n = graph.nodes.len();
        self.emitter.emit(Event::RunStart {
            run_id: self.opts.run_id.clone(),
            playbook: self.playbook.name.clone(),
            check: self.opts.check,
            hosts: graph.hosts(),
            nodes: n,
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
        if self.opts.check {
            let waves = graph
                .waves()
                .into_iter()
                .map(|w| {
                    w.into_iter()
                        .map(|i| {
                            (
                                self.playbook.steps[graph.nodes[i].step].id.clone(),
                                graph.nodes[i].host.clone(),
                            )
                        })
                        .collect()
                })
                .collect();
            self.emitter.emit(Event::Plan { waves });
        }
        let mut records: Vec<NodeRecord> = (0..n).map(|_| NodeRecord::not_run()).collect();
        let mut waiting: Vec<usize> = graph.nodes.iter().map(|x| x.deps.len()).collect();
        let mut queues: IndexMap<String, VecDeque<usize>> = IndexMap::new();
        for h in graph.hosts() {
            queues.insert(h, VecDeque::new());
        }
        // Nodes a past run did count as ended: their results are registered again and
        // what waits for them may start.
        for (&i, rec) in &self.prior {
            let step = &self.playbook.steps[graph.nodes[i].step];
            self.restore_prior(step, &graph.nodes[i].host, rec);
            records[i] = rec.clone();
            self.finish_event(i, rec, 0, None, Some("done by the resumed run".into()));
            for &d in &graph.nodes[i].dependents {
                waiting[d] = waiting[d].saturating_sub(1);
            }
        }
        for (i, node) in graph.nodes.iter().enumerate() {
            if waiting[i] == 0 && !self.prior.contains_key(&i) {
                queues.entry(node.host.clone()).or_default().push_back(i);
            }
        }
        // A resumed run holds the hosts its predecessor changed before anything runs:
        // its rollback may have to undo there. A host another run holds refuses the
        // whole resume, which then changes nothing.
        let mut refused: Option<String> = None;
        if !self.opts.check && !self.prior.is_empty() {
            let refusals = self.prelock().await;
            if !refusals.is_empty() {
                for r in &refusals {
                    self.emitter.emit(Event::Warning { msg: r.clone() });
                }
                refused = Some(format!("the resume was refused: {}", refusals.join("; ")));
            }
        }
        let mut running_on: HashMap<String, usize> = HashMap::new();
        let mut active_hosts = 0usize;
        let mut tasks: JoinSet<(usize, NodeEnd)> = JoinSet::new();
        let mut task_node: HashMap<tokio::task::Id, usize> = HashMap::new();
        let cancel = CancellationToken::new();
        let mut stop_reason: Option<String> = refused.clone();
        let mut failed_any = false;
        // Hosts out of the run after a failure tolerated by max_fail_percentage.
        let mut failed_hosts: HashSet<String> = HashSet::new();
        let total_hosts = graph.hosts().len().max(1);
        let max_fail = self.playbook.max_fail_percentage as usize;
        let mut interrupted = false;
        let forks = self.opts.forks.max(1);
        let per_host = self.opts.host_parallelism.max(1);
        loop {
            if stop_reason.is_none() {
                for (host, queue) in queues.iter_mut() {
                    if failed_hosts.contains(host) {
                        queue.clear();
                        continue;
                    }
                    while let Some(&i) = queue.front() {
                        let running = running_on.get(host).copied().unwrap_or(0);
                        if running >= per_host || (running == 0 && active_hosts >= forks) {
                            break;
                        }
                        queue.pop_front();
                        if running == 0 {
                            active_hosts += 1;
                        }
                        running_on.insert(host.clone(), running + 1);
                        records[i].started = self.emitter.elapsed();
                        tracing::debug!(node = i, host = %host, running = running + 1, "start");
                        let run = self.clone();
                        let token = cancel.clone();
                        // The node's start and end are journaled by its own task, so
                        // the scheduler never waits for the disk, and nodes ending
                        // together share one flush. What must be on disk before the
                        // node's module starts is said at `start_on_disk`.
                        let handle = tasks.spawn(async move {
                            if let Err(e) = run.journal_start(i) {
                                return (i, NodeEnd::Unjournaled(NodeRecord::not_run(), e));
                            }
                            let rec = tokio::select! {
                                rec = run.clone().run_node(i) => rec,
                                () = token.cancelled() => run.cancelled_record(i),
                            };
                            match run.journal_finish_later(i, &rec) {
                                Ok(()) => (i, NodeEnd::Done(rec)),
                                Err(e) => (i, NodeEnd::Unjournaled(rec, e)),
                            }
                        });
                        task_node.insert(handle.id(), i);
                    }
                }
            }
            if tasks.is_empty() {
                break;
            }
            tokio::select! {
                joined = tasks.join_next_with_id() => {
                    let (i, record) = match joined {
                        Some(Ok((id, (i, NodeEnd::Done(rec))))) => {
                            task_node.remove(&id);
                            (i, rec)
                        }
                        Some(Ok((id, (i, NodeEnd::Unjournaled(rec, e))))) => {
                            task_node.remove(&id);
                            if stop_reason.is_none() {
                                stop_reason = Some(e);
                            }
                            (i, rec)
                        }
                        Some(Err(e)) => {
                            let Some(i) = task_node.remove(&e.id()) else { continue };
                            let mut rec = NodeRecord::not_run();
                            rec.status = NodeStatus::Failed;
                            rec.result = json!({"failed": true, "msg": format!("internal error: {e}")});
                            self.finish_event(i, &rec, 1, None, Some(format!("internal error: {e}")));
                            if let Err(e) = self.journal_finish_later(i, &rec)
                                && stop_reason.is_none()
                            {
                                stop_reason = Some(e);
                            }
                            (i, rec)
                        }
                        None => break,
                    };
                    let host = graph.nodes[i].host.clone();
                    let running = running_on.get(&host).copied().unwrap_or(1).saturating_sub(1);
                    running_on.insert(host, running);
                    if running == 0 {
                        active_hosts = active_hosts.saturating_sub(1);
                    }
                    let status = record.status;
                    records[i] = NodeRecord { finished: self.emitter.elapsed(), ..record };
                    if status == NodeStatus::Failed {
                        failed_any = true;
                        if !self.opts.check && stop_reason.is_none() {
                            let host = &graph.nodes[i].host;
                            let step = &self.playbook.steps[graph.nodes[i].step];
                            failed_hosts.insert(host.clone());
                            if failed_hosts.len() * 100 > max_fail * total_hosts {
                                stop_reason = Some(format!("step `{}` failed on {host}", step.id));
                            } else {
                                self.emitter.emit(Event::Warning {
                                    msg: format!(
                                        "step `{}` failed on {host}: {host} leaves the run ({} of {total_hosts} hosts failed, max_fail_percentage {max_fail})",
                                        step.id,
                                        failed_hosts.len()
                                    ),
                                });
                            }
                        }
                    }
                    if status != NodeStatus::Failed || self.opts.check {
                        for &d in &graph.nodes[i].dependents {
                            waiting[d] -= 1;
                            if waiting[d] == 0 {
                                queues.entry(graph.nodes[d].host.clone()).or_default().push_back(d);
                            }
                        }
                    }
                }
                () = interrupts.reached(1), if !interrupted => {
                    interrupted = true;
                    stop_reason = Some("interrupted (Ctrl-C)".to_string());
                    cancel.cancel();
                }
            }
        }
        // `finally` nodes the run did not reach (what they need failed, or the run
        // stopped): they run now, in wave order, once everything else has ended, and
        // before any rollback. An interrupt (Ctrl-C) skips them.
        if !interrupted && refused.is_none() {
            let mut last: Vec<usize> = (0..n)
                .filter(|&i| {
                    records[i].status == NodeStatus::NotRun
                        && !self.prior.contains_key(&i)
                        && self.playbook.steps[graph.nodes[i].step].finally
                })
                .collect();
            last.sort_by_key(|&i| graph.nodes[i].wave);
            for i in last {
                records[i].started = self.emitter.elapsed();
                let rec = match self.journal_start(i) {
                    Ok(()) => self.clone().run_node(i).await,
                    Err(e) => {
                        stop_reason.get_or_insert(e);
                        break;
                    }
                };
                if let Err(e) = self.journal_finish_later(i, &rec) {
                    stop_reason.get_or_insert(e);
                }
                if rec.status == NodeStatus::Failed {
                    failed_any = true;
                    let step = &self.playbook.steps[graph.nodes[i].step];
                    stop_reason.get_or_insert(format!(
                        "step `{}` failed on {}",
                        step.id, graph.nodes[i].host
                    ));
                }
                records[i] = NodeRecord {
                    finished: self.emitter.elapsed(),
                    ..rec
                };
            }
        }
        for (i, rec) in records.iter().enumerate() {
            if rec.status == NodeStatus::NotRun {
                self.finish_event(
                    i,
                    rec,
                    0,
                    None,
                    stop_reason.as_ref().map(|r| format!("not run: {r}")),
                );
            }
        }
        let mut rollback_report = None;
        let outcome = if let Some(reason) = &refused {
            rollback_report = Some(rollback::skipped(&self, &records, reason, None));
            RunOutcome::RollbackIncomplete
        } else if stop_reason.is_none() && !failed_hosts.is_empty() {
            // Failures within max_fail_percentage: the run finished without the failed
            // hosts; what ran on them is compensated.
            let reason = format!(
                "{} host(s) failed: {}",
                failed_hosts.len(),
                failed_hosts.iter().cloned().collect::<Vec<_>>().join(", ")
            );
            let report = if self.opts.no_rollback {
                rollback::skipped(&self, &records, "--no-rollback", Some(&failed_hosts))
            } else {
                rollback::compensate(
                    &self,
                    &records,
                    &reason,
                    &mut interrupts,
                    Some(&failed_hosts),
                )
                .await
            };
            let complete = report.complete && !self.opts.no_rollback;
            rollback_report = Some(report);
            match (interrupts.count() > 0, complete) {
                (true, _) => RunOutcome::Interrupted,
                (false, true) => RunOutcome::RolledBack,
                (false, false) => RunOutcome::RollbackIncomplete,
            }
        } else if stop_reason.is_none() {
            if failed_any {
                RunOutcome::RolledBack
            } else {
                RunOutcome::Success
            }
        } else if self.opts.check {
            // A dry run changed nothing: there is nothing to compensate.
            if interrupted {
                RunOutcome::Interrupted
            } else {
                RunOutcome::RolledBack
            }
        } else if self.opts.no_rollback {
            let report = rollback::skipped(&self, &records, "--no-rollback", None);
            rollback_report = Some(report);
            if interrupted {
                RunOutcome::Interrupted
            } else {
                RunOutcome::RollbackIncomplete
            }
        } else {
            let reason = stop_reason.clone().unwrap_or_default();
            let report =
                rollback::compensate(&self, &records, &reason, &mut interrupts, None).await;
            let complete = report.complete;
            rollback_report = Some(report);
            match (interrupted || interrupts.count() > 0, complete) {
                (true, _) => RunOutcome::Interrupted,
                (false, true) => RunOutcome::RolledBack,
                (false, false) => RunOutcome::RollbackIncomplete,
            }
        };
        self.release_locks(outcome).await;
        self.end_run(outcome, &records, rollback_report.as_ref(), started);
        RunReport {
            outcome,
            records,
            rollback: rollback_report,
            stop_reason,
        }
    }

    /// Records the run's end in the journal and tells the observers, with the recap.
    fn end_run(
        &self,
        outcome: RunOutcome,
        records: &[NodeRecord],
        rollback: Option<&RollbackReport>,
        started: Instant,
    ) {
        // Written, not flushed (everything before it was, see `release_locks`): a crash
        // of the controller's system that loses it leaves a run whose every node is
        // journaled as ended and whose locks are released.
        if let Some(j) = &self.journal
            && let Err(e) = j.append_written(&crate::journal::Record::RunEnd {
                outcome: json_word(&outcome),
                exit_code: outcome.exit_code(),
                time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            })
        {
            self.emitter.emit(Event::Warning {
                msg: journal_failure(j, e),
            });
        }
        self.emitter.emit(Event::RunEnd {
            outcome,
            exit_code: outcome.exit_code(),
            duration: started.elapsed().as_secs_f64(),
            recap: crate::report::recap(self, records, rollback),
        });
    }

    /// Registers again what a past run's node produced (its result, and `set_fact`'s facts).
    fn restore_prior(&self, step: &Step, host: &str, rec: &NodeRecord) {
        self.register(step, host, &rec.result, false);
        if step.module_name() == "set_fact"
            && let Some(Json::Object(facts)) = rec.result.get("data")
        {
            for (k, v) in facts {
                self.vars.facts.set(host, &step.scope, k, v.clone());
            }
        }
    }

    /// `lifeboat rollback RUN_ID`: compensates the nodes of `prior` (a past run's,
    /// from its journal) in reverse dependency order, running nothing else.
    pub async fn rollback_only(
        self: Arc<Self>,
        mut interrupts: Interrupts,
        continues: &str,
    ) -> RunReport {
        let started = Instant::now();
        let graph = self.graph.clone();
        self.emitter.emit(Event::RunStart {
            run_id: self.opts.run_id.clone(),
            playbook: self.playbook.name.clone(),
            check: false,
            hosts: graph.hosts(),
            nodes: graph.nodes.len(),
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
        let mut records: Vec<NodeRecord> = (0..graph.nodes.len())
            .map(|_| NodeRecord::not_run())
            .collect();
        for (&i, rec) in &self.prior {
            let step = &self.playbook.steps[graph.nodes[i].step];
            self.restore_prior(step, &graph.nodes[i].host, rec);
            records[i] = rec.clone();
        }
        // Every host to undo on is locked first; one another run holds refuses the
        // whole rollback, which then changes nothing.
        let refusals = self.prelock().await;
        let (report, outcome) = if refusals.is_empty() {
            let reason = format!("rollback of run {continues}");
            let report =
                rollback::compensate(&self, &records, &reason, &mut interrupts, None).await;
            let outcome = match (interrupts.count() > 0, report.complete) {
                (true, _) => RunOutcome::Interrupted,
                (false, true) => RunOutcome::Success,
                (false, false) => RunOutcome::RollbackIncomplete,
            };
            (report, outcome)
        } else {
            for r in &refusals {
                self.emitter.emit(Event::Warning { msg: r.clone() });
            }
            let reason = format!("the rollback was refused: {}", refusals.join("; "));
            (
                rollback::skipped(&self, &records, &reason, None),
                RunOutcome::RollbackIncomplete,
            )
        };
        self.release_locks(outcome).await;
        self.end_run(outcome, &records, Some(&report), started);
        RunReport {
            outcome,
            records,
            rollback: Some(report),
            stop_reason: None,
        }
    }

    /// This run's lock settings.
    fn lock_settings(&self) -> &crate::lock::LockSettings {
        self.locks.settings_with(|| crate::lock::LockSettings {
            me: crate::lock::LockInfo::mine(
                &self.opts.run_id,
                &self.playbook.file.path.display().to_string(),
            ),
            break_lock: self.opts.break_lock,
            lineage: self.opts.lineage.clone(),
        })
    }

    /// A host's lock directory (its `lifeboat_lock_dir`, else `--lock-dir`), and the one
    /// the continued runs used there.
    fn lock_dirs(&self, host: &str) -> (String, String) {
        let var = self
            .inventory
            .host_vars(host)
            .get(crate::lock::LOCK_DIR_VAR)
            .and_then(Json::as_str)
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        match var {
            Some(d) => (d.clone(), d),
            None => (
                self.opts.lock_dir.clone(),
                self.opts
                    .past_lock_dir
                    .clone()
                    .unwrap_or_else(|| self.opts.lock_dir.clone()),
            ),
        }
    }

    /// Locks `host` before a node runs there (once per run); in a dry run, only reads
    /// its lock and warns when a real run would be refused.
    async fn host_lock(
        &self,
        host: &str,
        conn: &Arc<dyn crate::connection::Connection>,
    ) -> Result<Option<crate::lock::Held>, crate::lock::LockError> {
        if !self.opts.check
            && let Some(done) = self.locks.cached(host).await
        {
            return done.map(Some);
        }
        let (dir, past_dir) = self.lock_dirs(host);
        let settings = self.lock_settings();
        if self.opts.check {
            if let Some(msg) = self.locks.peek(host, conn, &dir, settings).await {
                self.emitter.emit(Event::Warning { msg });
            }
            return Ok(None);
        }
        let emitter = self.emitter.clone();
        let warn = move |msg: String| emitter.emit(Event::Warning { msg });
        self.locks
            .acquire(host, conn, &dir, &past_dir, settings, &warn)
            .await
            .map(Some)
    }

    /// `resume` and `rollback RUN_ID`: locks every host the continued run's finished
    /// nodes ran on, before anything runs. Returns the refusals (an unreachable host is
    /// not one: its nodes fail as usual).
    async fn prelock(self: &Arc<Self>) -> Vec<String> {
        let hosts: std::collections::BTreeSet<String> = self
            .prior
            .values()
            .map(|r| r.exec_host.clone())
            .filter(|h| !h.is_empty())
            .collect();
        let mut tasks = JoinSet::new();
        for h in hosts {
            let run = self.clone();
            tasks.spawn(async move {
                let conn = run.conns.get(&h).await.ok()?;
                match run.host_lock(&h, &conn).await {
                    Err(crate::lock::LockError::Refused(why)) => Some(why),
                    _ => None,
                }
            });
        }
        let mut refusals = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Ok(Some(why)) = r {
                refusals.push(why);
            }
        }
        refusals.sort();
        refusals
    }

    /// Releases this run's host locks (after its rollback); a successful run also
    /// removes its completion markers and those of the runs it continued.
    async fn release_locks(&self, outcome: RunOutcome) {
        let mut clean = matches!(outcome, RunOutcome::Success);
        // Every record is on disk before the locks go (the last one, `run_end`, is not
        // waited for), and the markers go only once the journal on disk says every
        // node ended: a resume after a crash must find one or the other.
        if let Some(j) = &self.journal
            && let Err(e) = j.flush().await
        {
            clean = false;
            self.emitter.emit(Event::Warning {
                msg: format!(
                    "{}; the completion markers on the hosts are kept",
                    journal_failure(j, e)
                ),
            });
        }
        for msg in self
            .locks
            .release_all(&self.opts.run_id, &self.opts.lineage, clean)
            .await
        {
            self.emitter.emit(Event::Warning { msg });
        }
    }

    /// Appends a journal record and waits for the disk without holding a thread; the
    /// error says what could not be written.
    pub(crate) async fn journal_async(
        &self,
        record: &crate::journal::Record,
    ) -> Result<(), String> {
        match &self.journal {
            Some(j) => j
                .append_async(record)
                .await
                .map_err(|e| journal_failure(j, e)),
            None => Ok(()),
        }
    }

    /// How `host` is reached (its inventory variables are merged once per run).
    fn connection_settings(&self, host: &str) -> Arc<crate::inventory::ConnectionSettings> {
        let mut cache = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(self.inventory.connection(host)))
            .clone()
    }

    /// Journals a node's start, without waiting for the disk (see `start_on_disk`). A
    /// command that records its start on the host never waits for this record, which
    /// then goes to disk with the next flush.
    fn journal_start(&self, i: usize) -> Result<(), String> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        let node = &self.graph.nodes[i];
        let step = &self.playbook.steps[node.step];
        let record = crate::journal::Record::NodeStart {
            node: i,
            step: step.id.clone(),
            host: node.host.clone(),
        };
        let seq = if step.module.marks_its_start() && !self.opts.check {
            j.append_unhurried(&record)
        } else {
            j.append_later(&record)
        }
        .map_err(|e| journal_failure(j, e))?;
        self.start_seqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(i, seq);
        Ok(())
    }

    /// Waits, before a node can change anything, until the journal on disk shows that
    /// the node may have started: a run resumed after a crash of the controller must
    /// know to look.
    ///
    /// Most steps wait for their own start record. A command run inside the
    /// exactly-once wrapper (`marked`) records its start on the host before it runs,
    /// in its completion log, and waits for nothing: `lifeboat resume` asks the hosts'
    /// logs about every such command that a run of the lineage may have started
    /// ([`crate::journal::PastRun::may_have_started`]). A chain of commands thus never
    /// waits for the controller's disk, and flushes it seldom.
    async fn start_on_disk(&self, i: usize, marked: bool) -> Result<(), String> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        if marked {
            return Ok(());
        }
        let seq = self
            .start_seqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&i)
            .copied()
            .unwrap_or(0);
        j.durable(seq).await.map_err(|e| journal_failure(j, e))
    }

    /// Journals a node's end from its own task, without waiting for the disk: the
    /// record is written in order before anything appended after it, and the run moves
    /// past the node only by appending (and waiting for) a later record, such as the
    /// start of a node that needs it, or by flushing the journal before it releases
    /// its locks. It reaches the disk with the next flush (see
    /// [`crate::journal::Journal::append_unhurried`]).
    fn journal_finish_later(&self, i: usize, rec: &NodeRecord) -> Result<(), String> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        let record = self.finish_record(i, rec);
        j.append_unhurried(&record)
            .map(|_| ())
            .map_err(|e| journal_failure(j, e))
    }

    /// The `node_finish` record of a node.
    fn finish_record(&self, i: usize, rec: &NodeRecord) -> crate::journal::Record {
        let node = &self.graph.nodes[i];
        let step = &self.playbook.steps[node.step];
        // A `no_log` step's result is masked on disk too: a resumed run sees its
        // registered strings as `********`.
        let result = if step.no_log {
            crate::output::emitter::mask_strings(&rec.result)
        } else {
            rec.result.clone()
        };
        // Its rendered arguments too (the pre-state the module captured is kept: a
        // later `lifeboat rollback` needs it, and a module that undoes from its
        // arguments fails loudly on the mask rather than guessing).
        let mut undo = serde_json::to_value(&rec.undo).unwrap_or(Json::Null);
        if step.no_log
            && let Json::Array(pairs) = &mut undo
        {
            for pair in pairs.iter_mut() {
                if let Json::Array(p) = pair
                    && let Some(args) = p.first_mut()
                {
                    *args = crate::output::emitter::mask_strings(args);
                }
            }
        }
        crate::journal::Record::NodeFinish {
            node: i,
            step: step.id.clone(),
            host: node.host.clone(),
            status: json_word(&rec.status),
            result,
            undo,
            exec_host: rec.exec_host.clone(),
        }
    }

    fn cancelled_record(&self, i: usize) -> NodeRecord {
        let partial = self.lock_partial().remove(&i);
        let mut rec = partial.unwrap_or_else(|| NodeRecord {
            exec_host: self.graph.nodes[i].host.clone(),
            started: self.emitter.elapsed(),
            ..NodeRecord::not_run()
        });
        rec.status = NodeStatus::Cancelled;
        rec.finished = self.emitter.elapsed();
        rec.result = json!({"failed": true, "msg": "interrupted"});
        self.finish_event(i, &rec, 1, None, Some("interrupted while running".into()));
        rec
    }

    fn lock_partial(&self) -> std::sync::MutexGuard<'_, HashMap<usize, NodeRecord>> {
        self.partial.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Emits the node's finish event.
    fn finish_event(
        &self,
        i: usize,
        rec: &NodeRecord,
        attempts: u32,
        diff: Option<String>,
        msg: Option<String>,
    ) {
        let node = &self.graph.nodes[i];
        let step = &self.playbook.steps[node.step];
        // A loop's result holds its items' outputs; when it failed, the output shown
        // is the failed item's (the last one run), as for a step without a loop.
        let failed_item = (rec.result.get("failed") == Some(&Json::Bool(true)))
            .then(|| rec.result.get("results")?.as_array()?.last())
            .flatten();
        let text = |k: &str| {
            rec.result
                .get(k)
                .or_else(|| failed_item.and_then(|it| it.get(k)))
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (stdout, stderr, diff, msg) = if step.no_log {
            (
                String::new(),
                String::new(),
                None,
                msg.map(|_| "(hidden by no_log)".to_string()),
            )
        } else {
            (clip(&text("stdout")), clip(&text("stderr")), diff, msg)
        };
        self.emitter.emit(Event::NodeFinish {
            step: step.id.clone(),
            name: step.name.clone(),
            host: node.host.clone(),
            status: rec.status,
            started: rec.started,
            duration: (self.emitter.elapsed() - rec.started).max(0.0),
            attempts,
            rc: rec
                .result
                .get("rc")
                .and_then(Json::as_i64)
                .and_then(|r| i32::try_from(r).ok()),
            msg,
            diff,
            stdout,
            stderr,
        });
    }

    /// Runs one node to its end and reports it.
    async fn run_node(self: Arc<Self>, i: usize) -> NodeRecord {
        let node = &self.graph.nodes[i];
        let step = &self.playbook.steps[node.step];
        let host = node.host.as_str();
        let started = self.emitter.elapsed();
        self.emitter.emit(Event::NodeStart {
            step: step.id.clone(),
            name: step.name.clone(),
            host: host.to_string(),
            at: started,
        });
        let mut rec = NodeRecord {
            status: NodeStatus::Ok,
            started,
            finished: 0.0,
            result: Json::Null,
            undo: Vec::new(),
            exec_host: host.to_string(),
            entered: false,
        };
        let mut attempts = 1;
        let mut diffs: Vec<String> = Vec::new();
        let mut msg: Option<String> = None;
        let ctx = self.vars.node_context(step, host, None, &[]);
        // In a dry run, a value only a real run produces fails with a mark of its own.
        let is_unknown = |e: &TemplateError, _src: &str| {
            self.opts.check && e.message.contains(crate::vars::UNKNOWN)
        };

        // `when`
        if let Some(cond) = &step.when {
            match self.templates.eval_bool(cond, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    rec.status = NodeStatus::Skipped;
                    rec.result = json!({"changed": false, "skipped": true, "failed": false});
                    self.register(step, host, &rec.result, false);
                    self.finish_event(i, &rec, 0, None, Some(format!("when: {cond} is false")));
                    return rec;
                }
                Err(e) if is_unknown(&e, cond) => {
                    return self.unknown(
                        i,
                        rec,
                        step,
                        host,
                        format!("when: {cond} depends on a result of a real run"),
                    );
                }
                Err(e) => return self.fail(i, rec, step, host, format!("when: {cond}: {e}"), 0),
            }
        }

        // `loop`
        let items: Vec<Option<Json>> = match &step.loop_items {
            None => vec![None],
            Some(spec) => match self.templates.render_value(spec, &ctx, false) {
                Ok(Json::Array(items)) => items.into_iter().map(Some).collect(),
                Ok(other) => {
                    return self.fail(
                        i,
                        rec,
                        step,
                        host,
                        format!("loop: expected a list, got {other}"),
                        0,
                    );
                }
                Err(e) if is_unknown(&e, &spec.to_string()) => {
                    return self.unknown(
                        i,
                        rec,
                        step,
                        host,
                        "loop depends on a result of a real run".into(),
                    );
                }
                Err(e) => return self.fail(i, rec, step, host, format!("loop: {e}"), 0),
            },
        };

        // Where the commands run.
        let exec_host = match &step.delegate_to {
            None => host.to_string(),
            Some(t) => match self.templates.render_str(t, &ctx, false) {
                Ok(h) => h.trim().to_string(),
                Err(e) => return self.fail(i, rec, step, host, format!("delegate_to: {e}"), 0),
            },
        };
        if exec_host != host && !self.inventory.has_host(&exec_host) && exec_host != "localhost" {
            return self.fail(
                i,
                rec,
                step,
                host,
                format!("delegate_to: `{exec_host}` is not a host of the inventory"),
                0,
            );
        }
        rec.exec_host = exec_host.clone();
        let conn = match self.conns.get(&exec_host).await {
            Ok(c) => c,
            Err(e) => return self.fail(i, rec, step, host, format!("unreachable: {e}"), 0),
        };
        // The host is locked before anything runs there; a host another run holds
        // fails like an unreachable one.
        let held = match self.host_lock(&exec_host, &conn).await {
            Ok(h) => h,
            Err(e) => return self.fail(i, rec, step, host, e.to_string(), 0),
        };
        // Nothing has changed on the host yet: from here on, things may.
        let marked = held.is_some() && step.module.marks_its_start();
        if let Err(e) = self.start_on_disk(i, marked).await {
            return self.fail(i, rec, step, host, e, 0);
        }
        let check = self.opts.check && !step.is_read_only();
        let sink = self.output_sink(step, host);
        let settings = self.connection_settings(&exec_host);
        let become_ = step.become_with(&settings);

        let mut results = Vec::new();
        let mut changed = false;
        let mut failure: Option<(String, Json)> = None;
        for (index, item) in items.iter().enumerate() {
            // Commands record their completion on the host, so a resumed run adopts
            // what completed while the controller was down instead of running it again.
            // The files are the locked host's, where the command runs.
            let marker = held.as_ref().map(|h| crate::marker::Marker {
                paths: h.markers.clone(),
                host: exec_host.clone(),
                key: crate::marker::key(&step.id, host, index),
                lock_file: h.file.clone(),
                run_id: self.opts.run_id.clone(),
                adopt_from: self
                    .opts
                    .in_doubt
                    .get(&i)
                    .into_iter()
                    .flatten()
                    .filter(|r| crate::lock::is_run_id(r))
                    .map(|r| (r.clone(), h.past_dir.clone()))
                    .collect(),
                no_retry: Default::default(),
            });
            let ctx = match item {
                Some(it) => self.vars.node_context(step, host, Some(it), &[]),
                None => ctx.clone(),
            };
            let args = match render_args(&self.templates, &*step.module, &step.args, &ctx) {
                Ok(a) => {
                    for (at, value) in crate::modules::secret_values(&a) {
                        let name = format!(
                            "{}{}/{host}/{at}",
                            crate::modules::ARG_SECRET_PREFIX,
                            step.id
                        );
                        self.emitter.add_named_secret(&name, &value);
                    }
                    // A dry run with -v shows what the module gets: the step's own
                    // arguments with its module defaults, rendered (secrets masked).
                    if self.opts.check && self.opts.verbose && !step.no_log {
                        self.emitter.emit(Event::NodeOutput {
                            step: step.id.clone(),
                            host: host.to_string(),
                            stream: "args".into(),
                            text: format!("args: {a}\n"),
                        });
                    }
                    a
                }
                Err(e) if is_unknown(&e, &step.args.to_string()) => {
                    return self.unknown(
                        i,
                        rec,
                        step,
                        host,
                        "its arguments depend on a result of a real run".into(),
                    );
                }
                Err(e) => {
                    failure = Some((
                        format!("arguments: {e}"),
                        json!({"failed": true, "msg": format!("arguments: {e}")}),
                    ));
                    break;
                }
            };
            let mctx = ModuleContext {
                host: host.to_string(),
                conn: conn.clone(),
                check,
                diff: self.opts.diff,
                timeout: step.timeout,
                become_: become_.clone(),
                sink: sink.clone(),
                templates: self.templates.clone(),
                vars: ctx.clone(),
                base_dir: step.base_dir.clone(),
                run_id: self.opts.run_id.clone(),
            };
            rec.entered = true;
            self.lock_partial().insert(i, rec.clone());
            let (result, tries) = self.attempt(step, &mctx, &args, marker).await;
            attempts = attempts.max(tries);
            match result {
                Ok(outcome) => {
                    changed |= outcome.changed;
                    if let Some(d) = &outcome.diff {
                        diffs.push(d.clone());
                    }
                    if outcome.msg.is_some() {
                        msg = outcome.msg.clone();
                    }
                    for (k, v) in &outcome.facts {
                        self.vars.facts.set(host, &step.scope, k, v.clone());
                    }
                    results.push(outcome_json(&outcome, item.as_ref(), false));
                    rec.undo.push((args, outcome.undo));
                    self.lock_partial().insert(i, rec.clone());
                }
                Err(ModuleError::Unknown(why)) if check => {
                    self.lock_partial().remove(&i);
                    return self.unknown(i, rec, step, host, why);
                }
                Err(e) => {
                    let mut j = error_json(&e);
                    if let (Some(it), Json::Object(m)) = (item, &mut j) {
                        m.insert("item".into(), it.clone());
                    }
                    // A failed step may have half-applied: keep its arguments so an
                    // explicit rollback can see them.
                    rec.undo.push((args, None));
                    results.push(j.clone());
                    let text = match item {
                        Some(it) => format!("item {} ({}): {e}", index + 1, item_label(it)),
                        None => e.to_string(),
                    };
                    failure = Some((text, j));
                    break;
                }
            }
        }
        if step.loop_items.is_some() {
            msg = loop_msg(msg, results.len());
        }
        let result = if step.loop_items.is_some() {
            json!({
                "changed": changed,
                "failed": failure.is_some(),
                "skipped": false,
                "results": results,
                "msg": failure.as_ref().map(|(m, _)| m.clone()).or(msg.clone()),
            })
        } else {
            match (&failure, results.pop()) {
                (Some((_, j)), _) => j.clone(),
                (None, Some(r)) => r,
                (None, None) => json!({"changed": false, "failed": false}),
            }
        };
        rec.result = result;
        self.lock_partial().remove(&i);
        let diff = (!diffs.is_empty()).then(|| diffs.join("\n"));
        match failure {
            Some((m, _)) => {
                rec.status = failure_status(step);
                self.register(step, host, &rec.result, check);
                self.finish_event(i, &rec, attempts, diff, Some(m));
            }
            None => {
                rec.status = match (changed, self.opts.check && !step.is_read_only()) {
                    (true, true) => NodeStatus::WouldChange,
                    (true, false) => NodeStatus::Changed,
                    (false, _) => NodeStatus::Ok,
                };
                self.register(step, host, &rec.result, check);
                self.finish_event(i, &rec, attempts, diff, msg);
            }
        }
        rec
    }

    /// Runs the module with the step's timeout, retrying as the step says. Only the
    /// first try may adopt a result from the runs this one continues.
    async fn attempt(
        &self,
        step: &Step,
        mctx: &ModuleContext,
        args: &Json,
        mut marker: Option<crate::marker::Marker>,
    ) -> (Result<Outcome, ModuleError>, u32) {
        let mut tries = 0;
        loop {
            tries += 1;
            let fut = crate::marker::scope(marker.clone(), step.module.run(mctx, args));
            if let Some(m) = marker.as_mut() {
                m.adopt_from.clear();
            }
            // Commands end themselves at the step's timeout (keeping their output);
            // this is the backstop for modules that would overrun it.
            let result = match step.timeout {
                Some(t) => match tokio::time::timeout(t + TIMEOUT_GRACE, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(ModuleError::TimedOut {
                        after: t,
                        output: Default::default(),
                    }),
                },
                None => fut.await,
            };
            // A command an earlier run started still runs: running it now would run
            // it twice.
            let retryable = !marker
                .as_ref()
                .is_some_and(|m| m.no_retry.load(std::sync::atomic::Ordering::SeqCst));
            match result {
                Err(e)
                    if tries <= step.retries && retryable && !matches!(e, ModuleError::Args(_)) =>
                {
                    tokio::time::sleep(step.retry_delay).await;
                }
                other => return (other, tries),
            }
        }
    }

    /// Registers a node's result (on every host of a `run_once` step), or in a dry
    /// run of a changing step, marks it unknown.
    fn register(&self, step: &Step, host: &str, result: &Json, unknowable: bool) {
        let Some(name) = &step.register else { return };
        let idx = self
            .playbook
            .steps
            .iter()
            .position(|s| s.id == step.id)
            .unwrap_or(0);
        let hosts: Vec<String> = if step.run_once {
            self.graph.step_hosts.get(idx).cloned().unwrap_or_default()
        } else {
            vec![host.to_string()]
        };
        for h in hosts {
            if unknowable {
                self.vars.facts.set_unknown(&h, &step.scope, name);
            } else {
                self.vars.facts.set(&h, &step.scope, name, result.clone());
            }
        }
    }

    fn unknown(
        &self,
        i: usize,
        mut rec: NodeRecord,
        step: &Step,
        host: &str,
        why: String,
    ) -> NodeRecord {
        rec.status = NodeStatus::Unknown;
        rec.result = json!({"changed": false, "failed": false, "unknown": true});
        self.register(step, host, &rec.result, true);
        // The facts an unknown set_fact would set are unknown too, not undefined.
        if step.module_name() == "set_fact"
            && let Some(keys) = step.args.as_object()
        {
            for k in keys.keys() {
                self.vars.facts.set_unknown(host, &step.scope, k);
            }
        }
        self.finish_event(i, &rec, 0, None, Some(why));
        rec
    }

    fn fail(
        &self,
        i: usize,
        mut rec: NodeRecord,
        step: &Step,
        host: &str,
        why: String,
        attempts: u32,
    ) -> NodeRecord {
        rec.status = failure_status(step);
        rec.result = json!({"changed": false, "failed": true, "msg": why});
        self.register(step, host, &rec.result, false);
        self.finish_event(i, &rec, attempts, None, Some(why));
        rec
    }

    /// With `-v`, a channel whose chunks become `NodeOutput` events.
    fn output_sink(&self, step: &Step, host: &str) -> Option<mpsc::UnboundedSender<OutputChunk>> {
        if !self.opts.verbose || step.no_log {
            return None;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<OutputChunk>();
        let emitter = self.emitter.clone();
        let (step_id, host) = (step.id.clone(), host.to_string());
        tokio::spawn(async move {
            while let Some((stream, bytes)) = rx.recv().await {
                emitter.emit(Event::NodeOutput {
                    step: step_id.clone(),
                    host: host.clone(),
                    stream: if stream == Stream::Stdout {
                        "stdout"
                    } else {
                        "stderr"
                    }
                    .into(),
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
        });
        Some(tx)
    }
}

/// What a run says when its journal cannot be written.
fn journal_failure(j: &crate::journal::Journal, e: std::io::Error) -> String {
    format!("cannot write the run journal {}: {e}", j.path().display())
}

/// The hosts the scheduler starts work on first (those with a node that needs nothing,
/// in the graph's host order, at most `forks` of them) whose first node surely reaches
/// its host: no `when` that could skip it, no `delegate_to` that sends it elsewhere.
/// Their connections can open while the run is still being set up.
pub fn first_hosts(graph: &Graph, playbook: &Playbook, forks: usize) -> Vec<String> {
    let mut first: IndexMap<&str, usize> = IndexMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        if node.deps.is_empty() {
            first.entry(node.host.as_str()).or_insert(i);
        }
    }
    let order = graph.hosts();
    order
        .iter()
        .filter_map(|h| first.get(h.as_str()).map(|&i| (h, i)))
        .take(forks.max(1))
        .filter(|&(_, i)| {
            let step = &playbook.steps[graph.nodes[i].step];
            step.when.is_none() && step.delegate_to.is_none()
        })
        .map(|(h, _)| h.clone())
        .collect()
}

/// Renders a step's arguments: shell-quoted where the module runs them in a shell,
/// untouched where the module evaluates them itself.
pub fn render_args(
    templates: &Templates,
    module: &dyn Module,
    args: &Json,
    ctx: &minijinja::Value,
) -> Result<Json, TemplateError> {
    let Json::Object(map) = args else {
        return templates.render_value(args, ctx, false);
    };
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        let rendered = if module.raw_args().contains(&k.as_str()) {
            v.clone()
        } else if module.shell_args().contains(&k.as_str()) && v.is_string() {
            templates.render_value(v, ctx, true)?
        } else {
            templates.render_value(v, ctx, false)?
        };
        out.insert(k.clone(), rendered);
    }
    Ok(Json::Object(out))
}

/// The registered form of a module's outcome.
fn outcome_json(o: &Outcome, item: Option<&Json>, failed: bool) -> Json {
    let mut m = serde_json::Map::new();
    m.insert("changed".into(), Json::Bool(o.changed));
    m.insert("failed".into(), Json::Bool(failed));
    m.insert("skipped".into(), Json::Bool(false));
    if let Some(rc) = o.rc {
        m.insert("rc".into(), Json::from(rc));
    }
    m.insert("stdout".into(), Json::String(o.stdout.clone()));
    m.insert("stderr".into(), Json::String(o.stderr.clone()));
    m.insert(
        "stdout_lines".into(),
        Json::from(o.stdout.lines().map(str::to_string).collect::<Vec<_>>()),
    );
    m.insert("msg".into(), o.msg.clone().map_or(Json::Null, Json::String));
    m.insert("data".into(), o.data.clone());
    if let Some(it) = item {
        m.insert("item".into(), it.clone());
    }
    Json::Object(m)
}

/// The registered form of a failure.
fn error_json(e: &ModuleError) -> Json {
    let mut j = json!({"changed": false, "failed": true, "skipped": false, "msg": e.to_string()});
    let output = match e {
        ModuleError::Failed {
            output: Some(o), ..
        }
        | ModuleError::TimedOut { output: o, .. } => Some(o),
        _ => None,
    };
    if let (Some(o), Json::Object(m)) = (output, &mut j) {
        if let Some(rc) = o.rc {
            m.insert("rc".into(), Json::from(rc));
        }
        m.insert("stdout".into(), Json::String(o.stdout_text()));
        m.insert("stderr".into(), Json::String(o.stderr_text()));
    }
    j
}

/// A serialisable enum's word (`changed`, `rolled_back`...).
pub(crate) fn json_word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Output kept in events: the last 64 KiB.
fn clip(s: &str) -> String {
    const MAX: usize = 64 * 1024;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut start = s.len() - MAX;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {} bytes cut ...]\n{}", start, &s[start..])
}

/// How long past a step's timeout the executor waits for a module before it gives up
/// on it (commands are ended at the timeout itself by their connection).
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// The duration a retry waits, for docs.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A loop item as a message names it: its JSON, cut to 60 characters.
fn item_label(item: &Json) -> String {
    let text = match item {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

/// The message of a loop step whose last item said `last`: that, or how many items ran
/// and that (every item's is in `results`).
fn loop_msg(last: Option<String>, items: usize) -> Option<String> {
    let last = last?;
    Some(if items == 1 {
        last
    } else {
        format!("{items} items; the last: {last}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Selection;

    #[test]
    fn loop_messages_count_the_items_and_give_the_last() {
        assert_eq!(loop_msg(None, 3), None);
        assert_eq!(loop_msg(Some("x".into()), 1).as_deref(), Some("x"));
        assert_eq!(
            loop_msg(Some("d".into()), 4).as_deref(),
            Some("4 items; the last: d")
        );
        assert_eq!(item_label(&serde_json::json!("web")), "web");
        assert_eq!(item_label(&serde_json::json!({"n": 1})), "{\"n\":1}");
        let long = item_label(&serde_json::json!("x".repeat(100)));
        assert_eq!(long.chars().count(), 60);
        assert!(long.ends_with('…'));
    }

    fn graph_of(playbook: &str, inventory: &str) -> (Playbook, Graph) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pb_path, inv_path) = (dir.path().join("pb.yml"), dir.path().join("hosts.ini"));
        std::fs::write(&pb_path, playbook).expect("write");
        std::fs::write(&inv_path, inventory).expect("write");
        let pb = Playbook::load(&pb_path).expect("a playbook");
        let inv = Inventory::load(Some(&inv_path)).expect("an inventory");
        let graph = Graph::build(&pb, &inv, &Selection::default()).expect("a graph");
        (pb, graph)
    }

    #[test]
    fn the_first_hosts_are_those_the_scheduler_starts_and_surely_reaches() {
        let inventory = "[web]\nw1 ansible_connection=local\nw2 ansible_connection=local\n\
                         [db]\nd1 ansible_connection=local\nd2 ansible_connection=local\n";
        let (pb, graph) = graph_of(
            "hosts: all\nsteps:\n  - id: a\n    command: /bin/true\n  - id: b\n    needs: a\n    command: /bin/true\n",
            inventory,
        );
        assert_eq!(first_hosts(&graph, &pb, 64), ["w1", "w2", "d1", "d2"]);
        // No more than the scheduler starts at once.
        assert_eq!(first_hosts(&graph, &pb, 3), ["w1", "w2", "d1"]);
        assert_eq!(first_hosts(&graph, &pb, 0), ["w1"]);
        // A first step that may be skipped, or that runs elsewhere, opens nothing early.
        let (pb, graph) = graph_of(
            "steps:\n  - id: maybe\n    hosts: web\n    when: \"false\"\n    command: /bin/true\n  - id: there\n    hosts: db\n    delegate_to: w1\n    command: /bin/true\n  - id: then\n    hosts: all\n    needs: [maybe, there]\n    command: /bin/true\n",
            inventory,
        );
        assert_eq!(first_hosts(&graph, &pb, 64), Vec::<String>::new());
    }
}
