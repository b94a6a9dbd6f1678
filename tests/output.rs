//! The run observers (console view, JSON-lines event log, JUnit report), driven with
//! hand-written event sequences: a real run on two hosts where a step fails and the
//! rollback fails too, a run where the rollback completes, and a dry run with a plan.
//! Also the emitter in front of them: secrets masked in every event, streamed output
//! included when a secret is cut across two chunks.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use lifeboat::output::console::{Console, ConsoleOptions};
use lifeboat::output::event::HostRecap;
use lifeboat::output::events::EventLog;
use lifeboat::output::junit::JunitReport;
use lifeboat::output::{Emitter, Event, NodeStatus, Observer, RollbackStatus, RunOutcome};

/// A writer the test keeps a handle on.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

fn run_start(check: bool, nodes: usize) -> Event {
    Event::RunStart {
        run_id: "r-123".into(),
        playbook: "demo".into(),
        check,
        hosts: vec!["ctl01".into(), "ctl02".into()],
        nodes,
        time: "2025-01-01T00:00:00Z".into(),
    }
}

fn start(step: &str, host: &str) -> Event {
    Event::NodeStart {
        step: step.into(),
        name: format!("{step} name"),
        host: host.into(),
        at: 0.0,
    }
}

fn finish(step: &str, host: &str, status: NodeStatus, msg: Option<&str>) -> Event {
    Event::NodeFinish {
        step: step.into(),
        name: format!("{step} name"),
        host: host.into(),
        status,
        started: 0.0,
        duration: 0.42,
        attempts: 1,
        rc: (status == NodeStatus::Failed).then_some(1),
        msg: msg.map(String::from),
        diff: None,
        stdout: String::new(),
        stderr: if status == NodeStatus::Failed {
            "pg_dump: connection refused\n".into()
        } else {
            String::new()
        },
    }
}

fn rollback_node(step: &str, host: &str, status: RollbackStatus, msg: Option<&str>) -> Event {
    Event::RollbackNode {
        step: step.into(),
        name: format!("{step} name"),
        host: host.into(),
        status,
        started: 1.0,
        duration: 0.1,
        msg: msg.map(String::from),
    }
}

fn recap(host: &str, changed: usize, ok: usize, skipped: usize, failed: usize) -> HostRecap {
    HostRecap {
        host: host.into(),
        changed,
        ok,
        skipped,
        failed,
        ..HostRecap::default()
    }
}

/// Two hosts; `dump-db` fails on ctl02; the rollback of `stop-api` on ctl01 fails, so
/// `write-conf` on ctl01 is left undone. Six node results: 2 changed, 1 ok, 1 skipped,
/// 1 ignored failure, 1 failure.
fn failed_run() -> Vec<Event> {
    vec![
        run_start(false, 6),
        start("stop-api", "ctl01"),
        start("stop-api", "ctl02"),
        Event::NodeOutput {
            step: "stop-api".into(),
            host: "ctl01".into(),
            stream: "stdout".into(),
            text: "stopping openstack-api".into(),
        },
        finish("stop-api", "ctl01", NodeStatus::Changed, Some("stopped")),
        finish("stop-api", "ctl02", NodeStatus::Ok, None),
        start("write-conf", "ctl01"),
        Event::NodeFinish {
            step: "write-conf".into(),
            name: "write conf".into(),
            host: "ctl01".into(),
            status: NodeStatus::Changed,
            started: 0.5,
            duration: 0.1,
            attempts: 1,
            rc: None,
            msg: None,
            diff: Some("--- a\n+++ b\n-old line\n+new line\n".into()),
            stdout: String::new(),
            stderr: String::new(),
        },
        finish(
            "cleanup",
            "ctl01",
            NodeStatus::Skipped,
            Some("when was false"),
        ),
        finish("probe", "ctl02", NodeStatus::Ignored, Some("probe failed")),
        start("dump-db", "ctl02"),
        finish(
            "dump-db",
            "ctl02",
            NodeStatus::Failed,
            Some("command exited 1"),
        ),
        Event::Warning {
            msg: "host ctl02 is slow".into(),
        },
        Event::RollbackStart {
            reason: "dump-db failed on ctl02".into(),
            nodes: 3,
        },
        rollback_node("probe", "ctl02", RollbackStatus::NothingToDo, None),
        rollback_node(
            "stop-api",
            "ctl01",
            RollbackStatus::Failed,
            Some("systemctl start failed"),
        ),
        rollback_node(
            "write-conf",
            "ctl01",
            RollbackStatus::LeftUndone,
            Some("waits for stop-api"),
        ),
        Event::RollbackFinish {
            complete: false,
            left_undone: vec![(
                "write-conf".into(),
                "ctl01".into(),
                "waits for stop-api".into(),
            )],
        },
        Event::RunEnd {
            outcome: RunOutcome::RollbackIncomplete,
            exit_code: 3,
            duration: 2.5,
            recap: vec![recap("ctl01", 2, 0, 1, 0), recap("ctl02", 0, 1, 0, 2)],
        },
    ]
}

/// A dry run of two waves on two hosts.
fn dry_run() -> Vec<Event> {
    vec![
        run_start(true, 4),
        Event::Plan {
            waves: vec![
                vec![
                    ("stop-api".into(), "ctl02".into()),
                    ("stop-api".into(), "ctl01".into()),
                ],
                vec![
                    ("dump-db".into(), "ctl01".into()),
                    ("copy-dump".into(), "ctl01".into()),
                ],
            ],
        },
        finish(
            "stop-api",
            "ctl01",
            NodeStatus::WouldChange,
            Some("would stop"),
        ),
        finish("stop-api", "ctl02", NodeStatus::Ok, None),
        finish("dump-db", "ctl01", NodeStatus::WouldChange, None),
        finish(
            "copy-dump",
            "ctl01",
            NodeStatus::Unknown,
            Some("needs dump-db's output"),
        ),
        Event::RunEnd {
            outcome: RunOutcome::Success,
            exit_code: 0,
            duration: 0.3,
            recap: vec![
                HostRecap {
                    unknown: 1,
                    ..recap("ctl01", 2, 0, 0, 0)
                },
                recap("ctl02", 0, 1, 0, 0),
            ],
        },
    ]
}

fn drive(observer: &dyn Observer, events: &[Event]) {
    for e in events {
        observer.event(e);
    }
    observer.finish().expect("observer finishes");
}

fn console_text(verbose: bool, events: &[Event]) -> String {
    console_text_with(verbose, false, events)
}

fn console_text_with(verbose: bool, interactive: bool, events: &[Event]) -> String {
    let buf = Shared::default();
    let console = Console::with_writer(
        ConsoleOptions {
            verbose,
            color: false,
            interactive,
        },
        Box::new(buf.clone()),
    );
    drive(&console, events);
    buf.text()
}

/// The outcome sentence (the line with the exit code) and the advice after it.
fn outcome_and_next(text: &str) -> (&str, Option<&str>) {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .rposition(|l| l.contains("(exit "))
        .unwrap_or_default();
    (
        lines.get(at).copied().unwrap_or_default(),
        lines.get(at + 1).copied(),
    )
}

/// The line of `text` that contains every one of `parts`, in order.
fn line_with<'a>(text: &'a str, parts: &[&str]) -> Option<&'a str> {
    text.lines().find(|line| {
        let mut rest = *line;
        parts.iter().all(|p| match rest.find(p) {
            Some(i) => {
                rest = &rest[i + p.len()..];
                true
            }
            None => false,
        })
    })
}

#[test]
fn event_log_writes_one_timestamped_json_object_per_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let log = EventLog::create(&path).expect("create");
    let events = failed_run();
    // Written and flushed as they come: readable before finish().
    for e in &events[..3] {
        log.event(e);
    }
    let early = std::fs::read_to_string(&path).expect("read");
    assert_eq!(early.lines().count(), 3, "each event is flushed: {early}");
    for e in &events[3..] {
        log.event(e);
    }
    log.finish().expect("finish");

    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), events.len());
    let tags: Vec<&str> = lines
        .iter()
        .map(|v| v["event"].as_str().expect("event tag"))
        .collect();
    assert_eq!(tags[0], "run_start");
    assert_eq!(tags[3], "node_output");
    assert_eq!(tags[4], "node_finish");
    assert!(tags.contains(&"rollback_start"));
    assert!(tags.contains(&"rollback_node"));
    assert!(tags.contains(&"rollback_finish"));
    assert!(tags.contains(&"warning"));
    assert_eq!(tags.last(), Some(&"run_end"));
    for v in &lines {
        let ts = v["ts"].as_str().expect("ts string");
        humantime::parse_rfc3339(ts).expect("ts is RFC 3339");
    }
    assert_eq!(lines[4]["status"], "changed");
    assert_eq!(lines[4]["msg"], "stopped");
    assert_eq!(lines.last().map(|v| v["exit_code"].clone()), Some(3.into()));
}

/// Counts of `<testcase>`, `<failure>` and `<skipped>` elements, the testcase names, and
/// the `name` attribute of the root.
fn junit_counts(xml: &str) -> (usize, usize, usize, Vec<String>, String) {
    use quick_xml::Reader;
    use quick_xml::events::Event as X;
    let mut reader = Reader::from_str(xml);
    let (mut cases, mut failures, mut skipped) = (0, 0, 0);
    let mut names = Vec::new();
    let mut root = String::new();
    loop {
        match reader.read_event().expect("valid XML") {
            X::Start(e) | X::Empty(e) => {
                let attr = |key: &[u8]| {
                    e.attributes()
                        .filter_map(Result::ok)
                        .find(|a| a.key.as_ref() == key)
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                };
                match e.name().as_ref() {
                    b"testsuites" => root = attr(b"name").unwrap_or_default(),
                    b"testcase" => {
                        cases += 1;
                        names.push(attr(b"name").unwrap_or_default());
                    }
                    b"failure" => failures += 1,
                    b"skipped" => skipped += 1,
                    _ => {}
                }
            }
            X::Eof => break,
            _ => {}
        }
    }
    (cases, failures, skipped, names, root)
}

#[test]
fn junit_has_a_case_per_node_and_failed_rollbacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("junit.xml");
    let report = JunitReport::new(&path, "lifeboat");
    drive(&report, &failed_run());
    let xml = std::fs::read_to_string(&path).expect("written by finish");
    let (cases, failures, skipped, names, root) = junit_counts(&xml);
    // 6 nodes + 1 failed compensation.
    assert_eq!(cases, 7, "{xml}");
    // dump-db, and the rollback of stop-api; the ignored failure passes.
    assert_eq!(failures, 2, "{xml}");
    assert_eq!(skipped, 1, "{xml}");
    assert_eq!(root, "demo");
    assert!(names.contains(&"dump-db [ctl02]".to_string()), "{names:?}");
    assert!(names.contains(&"rollback stop-api [ctl01]".to_string()));
    assert!(xml.contains("command exited 1"), "failure message: {xml}");
    assert!(xml.contains("pg_dump: connection refused"), "stderr: {xml}");
    assert!(xml.contains("ignore_errors"), "ignored note: {xml}");
}

#[test]
fn junit_of_a_dry_run_skips_unknown_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("junit.xml");
    let report = JunitReport::new(&path, "lifeboat");
    drive(&report, &dry_run());
    let xml = std::fs::read_to_string(&path).expect("written");
    let (cases, failures, skipped, _, _) = junit_counts(&xml);
    assert_eq!((cases, failures, skipped), (4, 0, 1), "{xml}");
}

#[test]
fn console_shows_a_failed_run_its_rollback_and_what_is_left_undone() {
    let text = console_text(false, &failed_run());
    assert!(
        text.starts_with("RUN demo (6 nodes on 2 hosts, run id r-123)"),
        "{text}"
    );
    assert!(line_with(&text, &["changed", "stop-api", "ctl01", "0.42s", "stopped"]).is_some());
    assert!(line_with(&text, &["ok", "stop-api", "ctl02"]).is_some());
    assert!(line_with(&text, &["skip", "cleanup", "ctl01", "when was false"]).is_some());
    assert!(line_with(&text, &["failed (ignored)", "probe", "ctl02"]).is_some());
    assert!(
        line_with(
            &text,
            &["FAILED", "dump-db", "ctl02", "rc=1", "command exited 1"]
        )
        .is_some(),
        "{text}"
    );
    assert!(line_with(&text, &["pg_dump: connection refused"]).is_some());
    // The diff, indented under its node.
    assert!(
        text.contains("      -old line\n      +new line\n"),
        "{text}"
    );
    // Without -v, command output is not streamed.
    assert!(!text.contains("stopping openstack-api"));
    assert!(text.contains("warning: host ctl02 is slow"));
    assert!(line_with(&text, &["ROLLBACK (dump-db failed on ctl02)"]).is_some());
    assert!(line_with(&text, &["nothing to do", "probe", "ctl02"]).is_some());
    assert!(
        line_with(
            &text,
            &[
                "FAILED",
                "stop-api",
                "ctl01",
                "0.10s",
                "systemctl start failed"
            ]
        )
        .is_some(),
        "{text}"
    );
    assert!(line_with(&text, &["rollback incomplete: 1 node left undone"]).is_some());
    assert!(line_with(&text, &["write-conf", "ctl01", "waits for stop-api"]).is_some());
    assert!(
        line_with(
            &text,
            &["ctl01", "changed=2 ok=0 skipped=1 failed=0 rolled_back=0"]
        )
        .is_some(),
        "{text}"
    );
    assert!(line_with(&text, &["ctl02", "changed=0 ok=1 skipped=0 failed=2"]).is_some());
    let (last, next) = outcome_and_next(&text);
    assert!(last.contains("exit 3"), "{last}");
    assert!(
        last.contains("left undone: write-conf [ctl01] (waits for stop-api)"),
        "{last}"
    );
    // A compensation failed: fix it, then `lifeboat rollback` the run again.
    assert_eq!(
        next,
        Some(
            "next: fix what made the rollback fail (shown above), then run `lifeboat rollback \
             r-123` to undo what is left; what is already undone is not undone again"
        ),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "no escapes with color off");
}

#[test]
fn console_prints_a_servers_error_lines_once() {
    let server = "ERROR 1146 (42S02): Table 'mysql.db' doesn't exist\nsecond line";
    let failed_node = |step: &str, msg: &str, stderr: &str| Event::NodeFinish {
        step: step.into(),
        name: "restore".into(),
        host: "ctl01".into(),
        status: NodeStatus::Failed,
        started: 0.0,
        duration: 0.1,
        attempts: 1,
        rc: Some(1),
        msg: Some(msg.into()),
        diff: None,
        stdout: String::new(),
        stderr: stderr.into(),
    };
    let events = vec![
        run_start(false, 3),
        // A message that already ends with the command's stderr: not repeated below it.
        failed_node(
            "restore-db",
            &format!("mysql failed: {server}"),
            &format!("{server}\n"),
        ),
        // One that does not quote it: the stderr follows (even a word of the command).
        failed_node(
            "other",
            "`echo boom >&2; exit 1` exited with status 1",
            "boom\n",
        ),
        Event::RollbackStart {
            reason: "restore-db failed on ctl01".into(),
            nodes: 1,
        },
        rollback_node(
            "stop-db",
            "ctl01",
            RollbackStatus::Failed,
            Some(&format!("start failed: {server}")),
        ),
        Event::RollbackFinish {
            complete: false,
            left_undone: vec![(
                "stop-db".into(),
                "ctl01".into(),
                format!("its rollback failed: start failed: {server}"),
            )],
        },
        Event::RunEnd {
            outcome: RunOutcome::RollbackIncomplete,
            exit_code: 3,
            duration: 1.0,
            recap: vec![recap("ctl01", 0, 0, 0, 2)],
        },
    ];
    let text = console_text(false, &events);
    assert_eq!(
        text.matches("Table 'mysql.db' doesn't exist").count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches("second line").count(), 2, "{text}");
    assert!(line_with(&text, &["stderr:"]).is_some(), "{text}");
    assert!(text.contains("        boom\n"), "{text}");
    assert!(
        line_with(
            &text,
            &[
                "stop-db",
                "ctl01",
                "its rollback failed (its error is above)"
            ]
        )
        .is_some(),
        "{text}"
    );
    let (last, _) = outcome_and_next(&text);
    assert!(
        last.contains("left undone: stop-db [ctl01] (its rollback failed (its error is above))"),
        "{last}"
    );
}

#[test]
fn console_verbose_streams_command_output() {
    let text = console_text(true, &failed_run());
    assert!(
        text.contains("ctl01 | stop-api | stopping openstack-api"),
        "{text}"
    );
}

#[test]
fn console_outcome_of_a_completed_rollback() {
    let mut events = failed_run();
    events.retain(|e| !matches!(e, Event::RollbackFinish { .. } | Event::RunEnd { .. }));
    events.push(Event::RollbackFinish {
        complete: true,
        left_undone: vec![],
    });
    events.push(Event::RunEnd {
        outcome: RunOutcome::RolledBack,
        exit_code: 2,
        duration: 1.0,
        recap: vec![],
    });
    let text = console_text(false, &events);
    assert!(text.contains("rollback complete"), "{text}");
    let (last, next) = outcome_and_next(&text);
    assert_eq!(
        next,
        Some("next: fix the cause of the failure shown above, then run the playbook again")
    );
    assert!(
        last.contains("rollback completed") && last.contains("exit 2"),
        "{last}"
    );
    assert!(!last.contains("left undone"));
}

#[test]
fn console_rollback_disabled_lists_changed_nodes_as_left_undone() {
    let mut events = failed_run();
    events.retain(|e| {
        !matches!(
            e,
            Event::RollbackStart { .. } | Event::RollbackNode { .. } | Event::RollbackFinish { .. }
        )
    });
    let text = console_text(false, &events);
    let (last, next) = outcome_and_next(&text);
    assert!(
        last.contains("left undone: stop-api [ctl01], write-conf [ctl01]"),
        "{last}"
    );
    assert_eq!(
        next,
        Some(
            "next: `lifeboat rollback r-123` undoes what is left; `lifeboat resume r-123` \
             carries the run on instead"
        )
    );
}

#[test]
fn console_dry_run_prints_the_plan_by_wave_and_host() {
    let text = console_text(false, &dry_run());
    assert!(
        text.starts_with(
            "PLAN demo (4 nodes on 2 hosts, run id r-123; dry run: nothing will change)"
        ),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let wave1 = lines.iter().position(|l| *l == "wave 1").expect("wave 1");
    let wave2 = lines.iter().position(|l| *l == "wave 2").expect("wave 2");
    assert!(wave1 < wave2);
    // Nodes are not shown as they finish: only in the plan, once each.
    assert_eq!(text.matches("copy-dump").count(), 1, "{text}");
    // Grouped by host in inventory order, though the plan lists ctl02 first.
    assert!(lines[wave1 + 1].contains("ctl01") && lines[wave1 + 1].contains("stop-api"));
    assert!(
        line_with(
            lines[wave1 + 1],
            &["ctl01", "stop-api", "would change", "would stop"]
        )
        .is_some()
    );
    assert!(line_with(lines[wave1 + 2], &["ctl02", "stop-api", "ok"]).is_some());
    assert!(line_with(lines[wave2 + 1], &["ctl01", "dump-db", "would change"]).is_some());
    assert!(
        line_with(
            lines[wave2 + 2],
            &["ctl01", "copy-dump", "unknown", "needs dump-db's output"]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        text.contains("plan: 2 would change, 1 ok, 1 unknown"),
        "{text}"
    );
    assert!(line_with(&text, &["ctl01", "would_change=2", "unknown=1"]).is_some());
    let last = text.lines().last().unwrap_or_default();
    assert!(last.contains("nothing was changed (exit 0)"), "{last}");
    assert!(
        text.lines().all(|l| l == l.trim_end()),
        "no trailing blanks: {text:?}"
    );
}

#[test]
fn console_spinner_never_reaches_the_writer() {
    // Interactive mode draws its spinner on the terminal, never into the text itself.
    for events in [failed_run(), dry_run()] {
        assert_eq!(
            console_text_with(false, true, &events),
            console_text(false, &events)
        );
    }
}

#[test]
fn console_colors_status_words_when_asked() {
    let buf = Shared::default();
    let console = Console::with_writer(
        ConsoleOptions {
            verbose: false,
            color: true,
            interactive: false,
        },
        Box::new(buf.clone()),
    );
    drive(&console, &failed_run());
    let text = buf.text();
    // Red (31) FAILED, yellow (33) changed, green (32) ok.
    assert!(text.contains("\u{1b}[31m\u{1b}[1mFAILED"), "{text:?}");
    assert!(text.contains("\u{1b}[33mchanged"), "{text:?}");
    assert!(text.contains("\u{1b}[32mok"), "{text:?}");
}

/// A writer that panics on its first write, then behaves.
struct PanicsOnce(Shared, bool);

impl Write for PanicsOnce {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.1 {
            self.1 = true;
            panic!("writer broke");
        }
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn console_keeps_going_after_a_panic_poisoned_its_lock() {
    let buf = Shared::default();
    let console = Console::with_writer(
        ConsoleOptions::default(),
        Box::new(PanicsOnce(buf.clone(), false)),
    );
    let events = dry_run();
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        console.event(&events[0]);
    }));
    assert!(
        first.is_err(),
        "the writer panicked while the lock was held"
    );
    drive(&console, &events[1..]);
    assert!(buf.text().contains("wave 2"), "{}", buf.text());
}

#[test]
fn console_names_the_past_run_to_roll_back_again() {
    let mut events = failed_run();
    for e in &mut events {
        if let Event::RollbackStart { reason, .. } = e {
            *reason = "rollback of run 20250101-old1".into();
        }
    }
    let text = console_text(false, &events);
    let (_, next) = outcome_and_next(&text);
    assert!(
        next.is_some_and(|n| n.contains("`lifeboat rollback 20250101-old1`")),
        "{text}"
    );
}

fn output(step: &str, stream: &str, text: &str) -> Event {
    Event::NodeOutput {
        step: step.into(),
        host: "ctl01".into(),
        stream: stream.into(),
        text: text.into(),
    }
}

/// The events an emitter with these secrets sends on, as JSON lines.
fn through_emitter(secrets: &[&str], events: Vec<Event>) -> Vec<serde_json::Value> {
    let buf = Shared::default();
    let log: Arc<dyn Observer> = Arc::new(EventLog::with_writer(Box::new(buf.clone())));
    let emitter = Emitter::new(vec![log], secrets.iter().map(|s| s.to_string()).collect());
    for e in events {
        emitter.emit(e);
    }
    emitter.finish().expect("finish");
    buf.text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn streamed(events: &[serde_json::Value], stream: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "node_output" && e["stream"] == stream)
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn emitter_masks_a_secret_cut_across_chunks_of_streamed_output() {
    let events = through_emitter(
        &["hunter2-secret"],
        vec![
            start("dump", "ctl01"),
            output("dump", "stdout", "password=hun"),
            output("dump", "stderr", "warn: hunter"),
            output("dump", "stdout", "ter2-sec"),
            output("dump", "stdout", "ret; done\nnext line hunt"),
            output("dump", "stderr", "2-secret!\n"),
            output("dump", "stdout", "ing\n"),
            finish("dump", "ctl01", NodeStatus::Ok, Some("hunter2-secret")),
        ],
    );
    let out = streamed(&events, "stdout");
    assert_eq!(
        out.concat(),
        "password=********; done\nnext line hunting\n",
        "{out:?}"
    );
    // Nothing that could start the secret goes out before the rest of it is known.
    assert!(
        out.iter()
            .all(|t| !t.ends_with("hun") && !t.contains("ter2")),
        "{out:?}"
    );
    assert_eq!(streamed(&events, "stderr").concat(), "warn: ********!\n");
    let text = serde_json::to_string(&events).unwrap_or_default();
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn emitter_shows_what_it_held_back_before_the_node_ends() {
    let events = through_emitter(
        &["hunter2-secret"],
        vec![
            start("dump", "ctl01"),
            output("dump", "stdout", "almost hunter2-"),
            finish("dump", "ctl01", NodeStatus::Ok, None),
            output("other", "stdout", "hunter2"),
        ],
    );
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "node_start",
            "node_output",
            "node_output",
            "node_finish",
            "node_output"
        ]
    );
    assert_eq!(
        streamed(&events, "stdout").concat(),
        "almost hunter2-hunter2"
    );
}

#[test]
fn emitter_masks_every_text_field_of_every_event() {
    let s = "s3cr3t-value";
    let t = |x: &str| format!("{x} {s}");
    let events = vec![
        Event::RunStart {
            run_id: "r-1".into(),
            playbook: t("pb"),
            check: false,
            hosts: vec![t("h")],
            nodes: 1,
            time: "2025-01-01T00:00:00Z".into(),
        },
        Event::Plan {
            waves: vec![vec![(t("step"), t("h"))]],
        },
        Event::NodeStart {
            step: t("step"),
            name: t("name"),
            host: t("h"),
            at: 0.0,
        },
        Event::NodeOutput {
            step: t("step"),
            host: t("h"),
            stream: "stdout".into(),
            text: t("out"),
        },
        Event::NodeFinish {
            step: t("step"),
            name: t("name"),
            host: t("h"),
            status: NodeStatus::Failed,
            started: 0.0,
            duration: 0.0,
            attempts: 1,
            rc: Some(1),
            msg: Some(t("msg")),
            diff: Some(t("+diff")),
            stdout: t("stdout"),
            stderr: t("stderr"),
        },
        Event::RollbackStart {
            reason: t("reason"),
            nodes: 1,
        },
        Event::RollbackNode {
            step: t("step"),
            name: t("name"),
            host: t("h"),
            status: RollbackStatus::Failed,
            started: 0.0,
            duration: 0.0,
            msg: Some(t("msg")),
        },
        Event::RollbackFinish {
            complete: false,
            left_undone: vec![(t("step"), t("h"), t("why"))],
        },
        Event::Warning { msg: t("warning") },
        Event::RunEnd {
            outcome: RunOutcome::RollbackIncomplete,
            exit_code: 3,
            duration: 1.0,
            recap: vec![recap(&t("h"), 0, 0, 0, 1)],
        },
    ];
    let out = through_emitter(&[s], events);
    assert_eq!(out.len(), 10);
    let text = serde_json::to_string(&out).unwrap_or_default();
    assert_eq!(text.matches("********").count(), 27, "{text}");
    assert!(!text.contains(s), "{text}");
}

#[test]
fn console_advice_follows_the_failure() {
    let cases = [
        (
            "cannot write /srv/b: No space left on device (os error 28)",
            "next: free space on ctl02: its disk is full, then run the playbook again",
        ),
        (
            "ctl02 (root@10.0.0.2:22): cannot connect to 10.0.0.2:22: no answer within 10s",
            "next: check that ctl02 is up and reachable over SSH (address, port, user, key), then run the playbook again",
        ),
        (
            "timed out after 30s",
            "next: find out why `dump-db` on ctl02 ran past its timeout, or raise its `timeout:`, then run the playbook again",
        ),
    ];
    for (msg, advice) in cases {
        let events = vec![
            run_start(false, 1),
            start("dump-db", "ctl02"),
            finish("dump-db", "ctl02", NodeStatus::Failed, Some(msg)),
            Event::RollbackStart {
                reason: "dump-db failed on ctl02".into(),
                nodes: 0,
            },
            Event::RollbackFinish {
                complete: true,
                left_undone: vec![],
            },
            Event::RunEnd {
                outcome: RunOutcome::RolledBack,
                exit_code: 2,
                duration: 1.0,
                recap: vec![],
            },
        ];
        let text = console_text(false, &events);
        assert_eq!(outcome_and_next(&text).1, Some(advice), "{text}");
    }
}
