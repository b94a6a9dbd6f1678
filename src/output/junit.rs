//! The JUnit XML report: one test case per (step, host) node, plus one per failed
//! compensation, written when the run is over. CI systems read it to show which step
//! failed on which host. A `severity: warning` step's failure is a `<skipped>` test
//! case of type `warning` (see docs/playbooks.md, "Output", for why not a pass).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::event::{Event, NodeStatus, Observer, RollbackStatus, warning_summary};

/// Collects node results and writes them as a JUnit XML file in [`Observer::finish`].
pub struct JunitReport {
    path: PathBuf,
    suite_name: String,
    state: Mutex<State>,
}

/// What has been collected so far.
#[derive(Default)]
struct State {
    playbook: Option<String>,
    cases: Vec<TestCase>,
    duration: Option<f64>,
}

/// A duration from seconds, tolerating negative or non-finite input.
fn secs(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds).unwrap_or_default()
}

impl JunitReport {
    /// A report to be written to `path`, with one test suite named `suite_name`.
    pub fn new(path: &Path, suite_name: &str) -> JunitReport {
        JunitReport {
            path: path.to_path_buf(),
            suite_name: suite_name.to_string(),
            state: Mutex::new(State::default()),
        }
    }

    /// The report as XML, from the events seen so far.
    pub fn to_xml(&self) -> io::Result<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut suite = TestSuite::new(self.suite_name.as_str());
        suite.add_test_cases(state.cases.iter().cloned());
        if let Some(d) = state.duration {
            suite.set_time(secs(d));
        }
        let name = state
            .playbook
            .clone()
            .unwrap_or_else(|| self.suite_name.clone());
        let mut report = Report::new(name);
        report.add_test_suite(suite);
        if let Some(d) = state.duration {
            report.set_time(secs(d));
        }
        report.to_string().map_err(io::Error::other)
    }
}

impl Observer for JunitReport {
    fn event(&self, event: &Event) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::RunStart { playbook, .. } => state.playbook = Some(playbook.clone()),
            Event::NodeFinish {
                step,
                host,
                status,
                duration,
                msg,
                stdout,
                stderr,
                attempts,
                ..
            } => {
                let tc_status = match status {
                    NodeStatus::Failed => {
                        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        let message = msg.clone().unwrap_or_else(|| status.label().to_string());
                        s.set_message(message);
                        s.set_type(status.label());
                        if !stderr.is_empty() {
                            s.set_description(stderr.as_str());
                        }
                        s
                    }
                    // An interrupted node neither passed nor failed on its own account.
                    NodeStatus::Skipped
                    | NodeStatus::NotRun
                    | NodeStatus::Unknown
                    | NodeStatus::Cancelled => {
                        let mut s = TestCaseStatus::skipped();
                        s.set_message(msg.clone().unwrap_or_else(|| status.label().to_string()));
                        s
                    }
                    // JUnit has no warning. A skip is counted and shown with its message by
                    // GitLab and Jenkins, and fails neither; the output of a passed case
                    // is not shown by GitLab at all.
                    NodeStatus::Warning => {
                        let mut s = TestCaseStatus::skipped();
                        s.set_message(format!(
                            "warning: {}",
                            warning_summary(msg.as_deref(), stderr)
                        ));
                        s.set_type("warning");
                        let said = [msg.as_deref().unwrap_or_default(), stderr.as_str()];
                        let said: Vec<&str> = said.into_iter().filter(|t| !t.is_empty()).collect();
                        if !said.is_empty() {
                            s.set_description(said.join("\n"));
                        }
                        s
                    }
                    NodeStatus::Changed
                    | NodeStatus::Ok
                    | NodeStatus::Ignored
                    | NodeStatus::WouldChange => TestCaseStatus::success(),
                };
                let mut case = TestCase::new(format!("{step} [{host}]"), tc_status);
                let classname = state.playbook.clone().unwrap_or_else(|| host.clone());
                case.set_classname(classname);
                case.set_time(secs(*duration));
                if *attempts > 1 {
                    case.add_property(Property::new("attempts", attempts.to_string()));
                }
                if *status == NodeStatus::Warning {
                    case.add_property(Property::new("severity", "warning"));
                    if !stdout.is_empty() {
                        case.set_system_out(stdout.as_str());
                    }
                    if !stderr.is_empty() {
                        case.set_system_err(stderr.as_str());
                    }
                }
                if *status == NodeStatus::Ignored {
                    let why = msg.as_deref().unwrap_or("no message");
                    case.set_system_out(format!("failed, error ignored (ignore_errors): {why}"));
                    if !stderr.is_empty() {
                        case.set_system_err(stderr.as_str());
                    }
                }
                state.cases.push(case);
            }
            Event::RollbackNode {
                step,
                host,
                status: RollbackStatus::Failed,
                duration,
                msg,
                ..
            } => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(msg.clone().unwrap_or_else(|| "rollback failed".to_string()));
                s.set_type("rollback");
                let mut case = TestCase::new(format!("rollback {step} [{host}]"), s);
                let classname = state.playbook.clone().unwrap_or_else(|| host.clone());
                case.set_classname(classname);
                case.set_time(secs(*duration));
                state.cases.push(case);
            }
            Event::RunEnd { duration, .. } => state.duration = Some(*duration),
            _ => {}
        }
    }

    fn finish(&self) -> io::Result<()> {
        let xml = self.to_xml()?;
        let mut out = BufWriter::new(File::create(&self.path)?);
        out.write_all(xml.as_bytes())?;
        out.flush()
    }
}
