//! The live console view of a run: a header, one line per (step, host) node as it
//! finishes (with its message, diff and, on failure, its standard error), a spinner listing
//! what is running when the output is a terminal, streamed command output with `-v`, the
//! rollback as it happens, and a recap with the outcome and what its exit code means. In a
//! dry run the nodes are shown at the end as a plan, grouped by wave and host. A warning
//! (a `severity: warning` step that failed) is shown as a failure is, marked `warning`,
//! listed again before the recap, counted in it, and named in the outcome line.

use std::collections::{HashMap, HashSet};
use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use console::Style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::event::{
    Event, HostRecap, NodeStatus, Observer, RollbackStatus, RunOutcome, warning_summary,
};

/// How the console shows a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConsoleOptions {
    /// Stream commands' output lines as they come (`-v`), and show every node of a dry
    /// run as it finishes.
    pub verbose: bool,
    /// Color the output with ANSI escapes.
    pub color: bool,
    /// Show a spinner listing what is running (the output is a terminal).
    pub interactive: bool,
}

impl ConsoleOptions {
    /// Options for this process: color unless `NO_COLOR` is set or stdout or stderr is not
    /// a terminal; spinners when stdout is a terminal.
    pub fn detect(verbose: bool) -> ConsoleOptions {
        let stdout_tty = io::stdout().is_terminal();
        let stderr_tty = io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        ConsoleOptions {
            verbose,
            color: !no_color && stdout_tty && stderr_tty,
            interactive: stdout_tty,
        }
    }
}

/// The live console view; an [`Observer`] writing human-readable text.
pub struct Console {
    opts: ConsoleOptions,
    state: Mutex<State>,
}

/// A (step id, host) pair.
type NodeKey = (String, String);

/// Everything the console remembers while a run goes on.
struct State {
    out: Box<dyn Write + Send>,
    error: Option<io::Error>,
    progress: Option<MultiProgress>,
    spinner: Option<ProgressBar>,
    running: Vec<NodeKey>,
    check: bool,
    hosts: Vec<String>,
    step_width: usize,
    host_width: usize,
    waves: Option<Vec<Vec<NodeKey>>>,
    results: HashMap<NodeKey, (NodeStatus, Option<String>)>,
    finished: Vec<NodeKey>,
    changed: Vec<NodeKey>,
    rolled_back: HashSet<NodeKey>,
    left_undone: Option<Vec<(String, String, String)>>,
    /// The run whose nodes a rollback undoes: this run, or the past run of
    /// `lifeboat rollback RUN_ID`.
    run_id: String,
    /// Failed nodes (step, host, message and standard error), in the order they ended.
    failures: Vec<NodeKeyText>,
    /// Nodes that ended in a warning (step, host, what it says in a line), in the order
    /// they ended.
    warnings: Vec<NodeKeyText>,
    /// Failed compensations (step, host, message), in the order they ended.
    rollback_failures: Vec<NodeKeyText>,
}

/// A node and what it said: (step, host, text).
type NodeKeyText = (String, String, String);

/// Width of the status column of node lines (`would change` fits).
const STATUS_WIDTH: usize = 12;
/// Width of the status column of rollback lines (`nothing to do` fits).
const ROLLBACK_WIDTH: usize = 13;
/// How many running nodes the spinner names before summarising the rest.
const SPINNER_NAMES: usize = 3;

impl Console {
    /// A console writing to stdout.
    pub fn new(opts: ConsoleOptions) -> Console {
        Console::with_writer(opts, Box::new(io::stdout()))
    }

    /// A console writing to `writer` (tests capture the text this way, with color and
    /// interactivity off). Spinners, when `opts.interactive`, are drawn on stdout.
    pub fn with_writer(opts: ConsoleOptions, writer: Box<dyn Write + Send>) -> Console {
        Console {
            opts,
            state: Mutex::new(State {
                out: writer,
                error: None,
                progress: None,
                spinner: None,
                running: Vec::new(),
                check: false,
                hosts: Vec::new(),
                step_width: 14,
                host_width: 6,
                waves: None,
                results: HashMap::new(),
                finished: Vec::new(),
                changed: Vec::new(),
                rolled_back: HashSet::new(),
                left_undone: None,
                run_id: String::new(),
                failures: Vec::new(),
                warnings: Vec::new(),
                rollback_failures: Vec::new(),
            }),
        }
    }

    /// `text` in `style` when colors are on.
    fn paint(&self, text: &str, style: Style) -> String {
        if self.opts.color {
            style.force_styling(true).apply_to(text).to_string()
        } else {
            text.to_string()
        }
    }

    /// A node status word, padded to `width` then colored.
    fn status_word(&self, status: NodeStatus, width: usize) -> String {
        let style = match status {
            NodeStatus::Ok => Style::new().green(),
            NodeStatus::Changed => Style::new().yellow(),
            NodeStatus::Skipped => Style::new().cyan(),
            NodeStatus::Failed | NodeStatus::Cancelled => Style::new().red().bold(),
            NodeStatus::Ignored => Style::new().red(),
            NodeStatus::Warning => Style::new().yellow().bold(),
            NodeStatus::WouldChange | NodeStatus::Unknown => Style::new().magenta(),
            NodeStatus::NotRun => Style::new().dim(),
        };
        self.paint(&format!("{:<width$}", status.label()), style)
    }

    /// Handles one event with the state locked.
    fn handle(&self, st: &mut State, event: &Event) {
        match event {
            Event::RunStart {
                run_id,
                playbook,
                check,
                hosts,
                nodes,
                ..
            } => {
                st.check = *check;
                st.run_id = run_id.clone();
                st.hosts = hosts.clone();
                st.host_width = hosts
                    .iter()
                    .map(|h| h.len())
                    .fold(st.host_width, usize::max);
                let what = format!(
                    "{} on {}, run id {run_id}",
                    plural(*nodes, "node"),
                    plural(hosts.len(), "host")
                );
                let header = if *check {
                    format!("PLAN {playbook} ({what}; dry run: nothing will change)")
                } else {
                    format!("RUN {playbook} ({what})")
                };
                let header = self.paint(&header, Style::new().bold());
                st.emit(&header);
            }
            Event::Plan { waves } => {
                st.step_width = waves
                    .iter()
                    .flatten()
                    .map(|(step, _)| step.len())
                    .fold(st.step_width, usize::max);
                st.waves = Some(waves.clone());
            }
            Event::NodeStart { step, host, .. } => {
                st.step_width = st.step_width.max(step.len());
                st.running.push((step.clone(), host.clone()));
                self.update_spinner(st);
            }
            Event::NodeOutput {
                step,
                host,
                stream,
                text,
            } => {
                if self.opts.verbose {
                    for line in text.lines() {
                        let line = if stream == "stderr" {
                            self.paint(line, Style::new().red().dim())
                        } else {
                            line.to_string()
                        };
                        let prefix = self.paint(&format!("{host} | {step} |"), Style::new().dim());
                        st.emit(&format!("{prefix} {line}"));
                    }
                }
            }
            Event::NodeFinish {
                step,
                host,
                status,
                duration,
                rc,
                msg,
                diff,
                stderr,
                ..
            } => {
                let key = (step.clone(), host.clone());
                if let Some(i) = st.running.iter().position(|k| *k == key) {
                    st.running.remove(i);
                }
                self.update_spinner(st);
                st.results.insert(key.clone(), (*status, msg.clone()));
                st.finished.push(key.clone());
                if *status == NodeStatus::Changed {
                    st.changed.push(key);
                }
                if *status == NodeStatus::Failed {
                    let text = format!("{}\n{stderr}", msg.as_deref().unwrap_or_default());
                    st.failures.push((step.clone(), host.clone(), text));
                }
                if *status == NodeStatus::Warning {
                    let text = warning_summary(msg.as_deref(), stderr);
                    st.warnings.push((step.clone(), host.clone(), text));
                }
                let failed = matches!(
                    status,
                    NodeStatus::Failed | NodeStatus::Ignored | NodeStatus::Warning
                );
                // A dry run shows its nodes at the end, as a plan; only failures (and
                // everything with -v) are shown as they happen.
                if st.check && !self.opts.verbose && !failed {
                    return;
                }
                let mut text = format!(
                    "  {}  {:<sw$}  {:<hw$}  {:>7}",
                    self.status_word(*status, STATUS_WIDTH),
                    step,
                    host,
                    seconds(*duration),
                    sw = st.step_width,
                    hw = st.host_width,
                );
                if failed && let Some(rc) = rc {
                    text.push_str(&format!("  rc={rc}"));
                }
                let (first, rest) = split_msg(msg.as_deref());
                if let Some(first) = first {
                    text.push_str("  ");
                    text.push_str(first);
                }
                st.emit(&text);
                for line in rest {
                    st.emit(&format!("      {line}"));
                }
                if let Some(diff) = diff {
                    for line in diff.lines() {
                        let style = if line.starts_with("+++") || line.starts_with("---") {
                            Style::new().bold()
                        } else if line.starts_with('+') {
                            Style::new().green()
                        } else if line.starts_with('-') {
                            Style::new().red()
                        } else if line.starts_with("@@") {
                            Style::new().cyan()
                        } else {
                            Style::new()
                        };
                        let line = self.paint(line, style);
                        st.emit(&format!("      {line}"));
                    }
                }
                // Not printed twice when the message already ends with it whole (a module's
                // error often does).
                let said = msg.as_deref().unwrap_or_default();
                if failed && !stderr.trim().is_empty() && !said.trim_end().ends_with(stderr.trim())
                {
                    st.emit("      stderr:");
                    for line in stderr.trim_end().lines() {
                        let line = self.paint(line, Style::new().red());
                        st.emit(&format!("        {line}"));
                    }
                }
            }
            Event::RollbackStart { reason, nodes } => {
                // `lifeboat rollback RUN_ID` undoes that past run's nodes.
                if let Some(past) = reason.strip_prefix("rollback of run ") {
                    st.run_id = past.trim().to_string();
                }
                let header = format!(
                    "ROLLBACK ({reason}): {} to consider",
                    plural(*nodes, "node")
                );
                let header = self.paint(&header, Style::new().yellow().bold());
                st.emit(&header);
            }
            Event::RollbackNode {
                step,
                host,
                status,
                duration,
                msg,
                ..
            } => {
                let (label, style) = match status {
                    RollbackStatus::Done => ("undone", Style::new().green()),
                    RollbackStatus::NothingToDo => ("nothing to do", Style::new().dim()),
                    RollbackStatus::Failed => ("FAILED", Style::new().red().bold()),
                    RollbackStatus::LeftUndone => ("left undone", Style::new().red()),
                };
                if *status == RollbackStatus::Done {
                    st.rolled_back.insert((step.clone(), host.clone()));
                }
                if *status == RollbackStatus::Failed {
                    let text = msg.clone().unwrap_or_default();
                    st.rollback_failures
                        .push((step.clone(), host.clone(), text));
                }
                let mut text = format!(
                    "  {}  {:<sw$}  {:<hw$}  {:>7}",
                    self.paint(&format!("{label:<ROLLBACK_WIDTH$}"), style),
                    step,
                    host,
                    seconds(*duration),
                    sw = st.step_width,
                    hw = st.host_width,
                );
                let (first, rest) = split_msg(msg.as_deref());
                if let Some(first) = first {
                    text.push_str("  ");
                    text.push_str(first);
                }
                st.emit(&text);
                for line in rest {
                    st.emit(&format!("      {line}"));
                }
            }
            Event::RollbackFinish {
                complete,
                left_undone,
            } => {
                st.left_undone = Some(left_undone.clone());
                if *complete && left_undone.is_empty() {
                    let line = self.paint("rollback complete", Style::new().green());
                    st.emit(&line);
                } else {
                    let line = format!(
                        "rollback incomplete: {} left undone",
                        plural(left_undone.len(), "node")
                    );
                    let line = self.paint(&line, Style::new().red().bold());
                    st.emit(&line);
                    for (step, host, why) in left_undone {
                        let why = short_why(why);
                        st.emit(&format!(
                            "  {step:<sw$}  {host:<hw$}  {why}",
                            sw = st.step_width,
                            hw = st.host_width
                        ));
                    }
                }
            }
            Event::Warning { msg } => {
                let line = self.paint(&format!("warning: {msg}"), Style::new().yellow());
                st.emit(&line);
            }
            Event::RunEnd {
                outcome,
                exit_code,
                duration,
                recap,
            } => {
                st.running.clear();
                self.update_spinner(st);
                if st.check {
                    self.print_plan(st);
                }
                self.print_warnings(st);
                self.print_recap(st, recap);
                self.print_outcome(st, *outcome, *exit_code, *duration);
            }
        }
    }

    /// Shows, hides or refreshes the spinner listing the running nodes.
    fn update_spinner(&self, st: &mut State) {
        if !self.opts.interactive {
            return;
        }
        if st.running.is_empty() {
            if let Some(spinner) = st.spinner.take() {
                spinner.finish_and_clear();
                if let Some(progress) = &st.progress {
                    progress.remove(&spinner);
                }
            }
            return;
        }
        let mut names: Vec<String> = st
            .running
            .iter()
            .take(SPINNER_NAMES)
            .map(|(step, host)| format!("{step} [{host}]"))
            .collect();
        if st.running.len() > SPINNER_NAMES {
            names.push(format!("+{} more", st.running.len() - SPINNER_NAMES));
        }
        let message = format!("running {}", names.join(", "));
        match &st.spinner {
            Some(spinner) => spinner.set_message(message),
            None => {
                let progress = st
                    .progress
                    .get_or_insert_with(|| {
                        MultiProgress::with_draw_target(ProgressDrawTarget::stdout())
                    })
                    .clone();
                let spinner = progress.add(ProgressBar::new_spinner());
                if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                    spinner.set_style(style);
                }
                spinner.set_message(message);
                spinner.enable_steady_tick(Duration::from_millis(100));
                st.spinner = Some(spinner);
            }
        }
    }

    /// The dry-run plan: every node by wave and host, with what it would do.
    fn print_plan(&self, st: &mut State) {
        let waves = match &st.waves {
            Some(waves) => waves.clone(),
            None => vec![st.finished.clone()],
        };
        let mut counts: Vec<(NodeStatus, usize)> = Vec::new();
        for (i, wave) in waves.iter().enumerate() {
            let title = self.paint(&format!("wave {}", i + 1), Style::new().bold());
            st.emit(&title);
            // Hosts in inventory order, then any others in the order they appear.
            let mut hosts: Vec<&String> = st
                .hosts
                .iter()
                .filter(|h| wave.iter().any(|(_, host)| host == *h))
                .collect();
            for (_, host) in wave {
                if !hosts.contains(&host) {
                    hosts.push(host);
                }
            }
            let mut lines = Vec::new();
            for host in hosts {
                for (step, _) in wave.iter().filter(|(_, h)| h == host) {
                    let (status, msg) = st
                        .results
                        .get(&(step.clone(), host.clone()))
                        .cloned()
                        .unwrap_or((NodeStatus::NotRun, None));
                    match counts.iter_mut().find(|(s, _)| *s == status) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((status, 1)),
                    }
                    let (first, rest) = split_msg(msg.as_deref());
                    // Pad the status only when a message follows it.
                    let width = if first.is_some() { STATUS_WIDTH } else { 0 };
                    let mut line = format!(
                        "  {host:<hw$}  {step:<sw$}  {}",
                        self.status_word(status, width),
                        hw = st.host_width,
                        sw = st.step_width
                    );
                    if let Some(first) = first {
                        line.push_str("  ");
                        line.push_str(first);
                    }
                    lines.push(line);
                    lines.extend(rest.iter().map(|l| format!("      {l}")));
                }
            }
            for line in lines {
                st.emit(&line);
            }
        }
        let summary: Vec<String> = counts
            .iter()
            .map(|(status, n)| format!("{n} {}", status.label()))
            .collect();
        if !summary.is_empty() {
            st.emit(&format!("plan: {}", summary.join(", ")));
        }
    }

    /// Every warning again, in a line each, where the run's end is read.
    fn print_warnings(&self, st: &mut State) {
        if st.warnings.is_empty() {
            return;
        }
        let title = self.paint(
            &format!("WARNINGS ({})", st.warnings.len()),
            Style::new().yellow().bold(),
        );
        st.emit(&title);
        let lines: Vec<String> = st
            .warnings
            .iter()
            .map(|(step, host, said)| {
                format!(
                    "  {}  {step:<sw$}  {host:<hw$}  {said}",
                    self.status_word(NodeStatus::Warning, 0),
                    sw = st.step_width,
                    hw = st.host_width
                )
            })
            .collect();
        for line in lines {
            st.emit(&line);
        }
    }

    /// Per-host counts.
    fn print_recap(&self, st: &mut State, recap: &[HostRecap]) {
        if recap.is_empty() {
            return;
        }
        let title = self.paint("RECAP", Style::new().bold());
        st.emit(&title);
        let width = recap
            .iter()
            .map(|r| r.host.len())
            .fold(st.host_width, usize::max);
        let changed = if st.check { "would_change" } else { "changed" };
        for r in recap {
            let count = |name: &str, n: usize, style: Style| {
                let text = format!("{name}={n}");
                if n > 0 {
                    self.paint(&text, style)
                } else {
                    text
                }
            };
            let mut fields = vec![
                count(changed, r.changed, Style::new().yellow()),
                count("ok", r.ok, Style::new().green()),
                count("skipped", r.skipped, Style::new().cyan()),
                count("failed", r.failed, Style::new().red()),
            ];
            if r.warnings > 0 {
                fields.push(count("warnings", r.warnings, Style::new().yellow()));
            }
            if st.check || r.unknown > 0 {
                fields.push(count("unknown", r.unknown, Style::new().magenta()));
            }
            if r.not_run > 0 {
                fields.push(count("not_run", r.not_run, Style::new().dim()));
            }
            if r.rolled_back > 0 || st.left_undone.is_some() {
                fields.push(count("rolled_back", r.rolled_back, Style::new().yellow()));
            }
            st.emit(&format!("{:<width$}  {}", r.host, fields.join(" ")));
        }
    }

    /// The outcome sentence, with what the exit code means.
    fn print_outcome(&self, st: &mut State, outcome: RunOutcome, code: i32, duration: f64) {
        let took = seconds(duration);
        // Warnings never change the outcome; a successful run names them.
        let warned = match st.warnings.as_slice() {
            [] => String::new(),
            list => format!(
                ", with {}: {}",
                plural(list.len(), "warning"),
                list.iter()
                    .map(|(step, host, _)| format!("{step} [{host}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let (text, style) = match outcome {
            RunOutcome::Success if st.check => (
                format!("PLAN done in {took}: nothing was changed{warned} (exit {code})"),
                Style::new().green().bold(),
            ),
            RunOutcome::Success if !warned.is_empty() => (
                format!("SUCCESS in {took}: no step failed{warned} (exit {code})"),
                Style::new().yellow().bold(),
            ),
            RunOutcome::Success => (
                format!("SUCCESS in {took}: every step succeeded (exit {code})"),
                Style::new().green().bold(),
            ),
            RunOutcome::RolledBack if st.check => (
                format!(
                    "PLAN FAILED in {took}: a step failed in the dry run; nothing was changed \
                     (exit {code})"
                ),
                Style::new().red().bold(),
            ),
            RunOutcome::RolledBack => (
                format!(
                    "ROLLED BACK in {took}: a step failed and the rollback completed (exit {code})"
                ),
                Style::new().yellow().bold(),
            ),
            RunOutcome::RollbackIncomplete => (
                format!(
                    "FAILED in {took}: a step failed and the rollback failed or was disabled \
                     (exit {code}); left undone: {}",
                    st.left_undone_list()
                ),
                Style::new().red().bold(),
            ),
            RunOutcome::Interrupted => {
                let mut text = format!("INTERRUPTED after {took} (exit {code})");
                if !st.check {
                    text.push_str(&format!("; left undone: {}", st.left_undone_list()));
                }
                (text, Style::new().red().bold())
            }
        };
        let text = self.paint(&text, style);
        st.emit(&text);
        if let Some(next) = st.next_step(outcome) {
            let next = self.paint(&format!("next: {next}"), Style::new().bold());
            st.emit(&next);
        }
    }
}

/// Why a node is left undone, in one line: a failed rollback's error was printed on
/// its rollback line already (printing the server's lines again buries the next step).
fn short_why(why: &str) -> &str {
    if why.starts_with("its rollback failed") {
        "its rollback failed (its error is above)"
    } else {
        why.lines().next().unwrap_or_default()
    }
}

impl State {
    /// Writes `text` (one or more lines), pausing the spinner so lines don't tear.
    fn emit(&mut self, text: &str) {
        let State {
            out,
            error,
            progress,
            spinner,
            ..
        } = self;
        let mut write = || -> io::Result<()> {
            for line in text.lines() {
                writeln!(out, "{}", line.trim_end())?;
            }
            out.flush()
        };
        let result = match (progress.as_ref(), spinner.is_some()) {
            (Some(progress), true) => progress.suspend(write),
            _ => write(),
        };
        if let Err(e) = result {
            error.get_or_insert(e);
        }
    }

    /// What the operator should do after this outcome, if anything: what the first
    /// failure calls for (a full disk, a host out of reach, a timeout), then how to go on.
    fn next_step(&self, outcome: RunOutcome) -> Option<String> {
        let id = &self.run_id;
        let anything_left = match &self.left_undone {
            Some(list) => !list.is_empty(),
            None => self.changed.iter().any(|k| !self.rolled_back.contains(k)),
        };
        match outcome {
            _ if self.check => None,
            RunOutcome::Success => None,
            RunOutcome::RolledBack => Some(format!(
                "{}, then run the playbook again",
                remedy(
                    self.failures.first(),
                    "fix the cause of the failure shown above"
                )
            )),
            RunOutcome::RollbackIncomplete | RunOutcome::Interrupted if anything_left => {
                Some(if self.rollback_failures.is_empty() {
                    format!(
                        "`lifeboat rollback {id}` undoes what is left; `lifeboat resume {id}` carries \
                         the run on instead"
                    )
                } else {
                    format!(
                        "{}, then run `lifeboat rollback {id}` to undo what is left; what is already \
                         undone is not undone again",
                        remedy(
                            self.rollback_failures.first(),
                            "fix what made the rollback fail (shown above)"
                        )
                    )
                })
            }
            RunOutcome::RollbackIncomplete | RunOutcome::Interrupted => None,
        }
    }

    /// What is left undone, as `step [host]` items: the rollback's own list when it ran,
    /// otherwise the nodes that changed and were not rolled back.
    fn left_undone_list(&self) -> String {
        let items: Vec<String> = match &self.left_undone {
            Some(list) => list
                .iter()
                .map(|(step, host, why)| format!("{step} [{host}] ({})", short_why(why)))
                .collect(),
            None => self
                .changed
                .iter()
                .filter(|k| !self.rolled_back.contains(*k))
                .map(|(step, host)| format!("{step} [{host}]"))
                .collect(),
        };
        if items.is_empty() {
            "nothing".to_string()
        } else {
            items.join(", ")
        }
    }
}

impl Observer for Console {
    fn event(&self, event: &Event) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.handle(&mut st, event);
    }

    fn finish(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(spinner) = st.spinner.take() {
            spinner.finish_and_clear();
        }
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        st.out.flush()
    }
}

/// What a failure calls for, from its message: `fallback` when nothing specific.
fn remedy(failure: Option<&NodeKeyText>, fallback: &str) -> String {
    let Some((step, host, text)) = failure else {
        return fallback.to_string();
    };
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    // tar says `Wrote only 4096 of 10240 bytes` when the disk fills up under it.
    if has(&[
        "No space left on device",
        "Disk quota exceeded",
        "Wrote only ",
    ]) {
        format!("free space on {host}: its disk is full")
    } else if has(&[
        "cannot connect",
        "connection was lost",
        "Connection reset",
        "unreachable",
        "no answer within",
    ]) {
        format!("check that {host} is up and reachable over SSH (address, port, user, key)")
    } else if has(&["timed out after"]) {
        format!("find out why `{step}` on {host} ran past its timeout, or raise its `timeout:`")
    } else {
        fallback.to_string()
    }
}

/// `n thing` or `n things`.
fn plural(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("{n} {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// A duration for people: `0.42s`, `12.30s`, `2m05s`.
fn seconds(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_string();
    }
    if secs < 60.0 {
        format!("{secs:.2}s")
    } else {
        let whole = secs.round() as u64;
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// A message's first line (shown on the node's line) and its other lines.
fn split_msg(msg: Option<&str>) -> (Option<&str>, Vec<&str>) {
    let Some(msg) = msg.map(str::trim_end).filter(|m| !m.is_empty()) else {
        return (None, Vec::new());
    };
    let mut lines = msg.lines();
    let first = lines.next();
    (first, lines.collect())
}
