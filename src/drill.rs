//! Recovery drills: a playbook whose steps are grouped into phases (`backup`,
//! `sabotage`, `restore`, `verify`), run to prove that backups restore. This module
//! prepares a drill for the executor (a failed verification is a finding to report,
//! not a reason to roll back, so verify steps never stop the run) and judges the run:
//! every verification's pass or fail, the RTO (end of sabotage to end of verify) and the
//! RPO (age of the restored data) against the drill's targets, as JSON, Markdown and
//! HTML reports and a console summary.
//!
//! Where the RPO comes from: the newest of `data.backup_time`, `data.manifest.time`
//! (RFC 3339) in the results of restore-phase steps, or a `drill_backup_time` fact set
//! by any step. The RPO is the time between that moment and the end of the restore.
//!
//! Reports mask secrets and hide the messages of `no_log` steps, like every output.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value as Json;

use crate::executor::{NodeRecord, RunReport};
use crate::graph::Graph;
use crate::output::{NodeStatus, RunOutcome};
use crate::playbook::Playbook;

/// The phases of a drill, in order.
pub const PHASES: &[&str] = &["backup", "sabotage", "restore", "verify"];

/// Exit code of a drill whose run succeeded but whose verdict is a failure (a
/// verification failed or a target was missed).
pub const EXIT_DRILL_FAILED: i32 = 4;

/// Makes a playbook ready to run as a drill: verify steps report instead of stopping.
pub fn prepare(pb: &mut Playbook) -> Result<(), String> {
    if !pb.steps.iter().any(|s| s.phase.is_some()) {
        return Err(format!(
            "`{}` has no phases: a drill groups its steps into {}",
            pb.name,
            PHASES.join(", ")
        ));
    }
    for step in &mut pb.steps {
        if let Some(p) = &step.phase
            && !PHASES.contains(&p.as_str())
        {
            return Err(format!(
                "step `{}` is in phase `{p}`; a drill's phases are {}",
                step.id,
                PHASES.join(", ")
            ));
        }
        // A `severity: warning` verification stays a warning (a passed verification
        // with a warning); it cannot be both (see the loader).
        if step.phase.as_deref() == Some("verify")
            && step.severity == crate::playbook::Severity::Error
        {
            step.ignore_errors = true;
        }
    }
    Ok(())
}

/// Timing of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Phase name.
    pub name: String,
    /// Seconds since the run began, at its first node's start.
    pub started: f64,
    /// Seconds since the run began, at its last node's end.
    pub finished: f64,
    /// Nodes in the phase.
    pub nodes: usize,
    /// Nodes that failed (verify: failed verifications).
    pub failed: usize,
}

/// One verification: a verify-phase node.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Step id.
    pub step: String,
    /// Step name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Whether it passed.
    pub passed: bool,
    /// Its message.
    pub msg: String,
}

/// A drill's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// Drill name.
    pub name: String,
    /// Run id.
    pub run_id: String,
    /// When it ran (RFC 3339).
    pub time: String,
    /// How the run ended.
    pub outcome: RunOutcome,
    /// Phases in order (those with nodes).
    pub phases: Vec<PhaseReport>,
    /// Every verification.
    pub verifications: Vec<Verification>,
    /// Recovery time in seconds: end of sabotage to end of verify.
    pub rto: Option<f64>,
    /// RTO target in seconds.
    pub rto_target: Option<f64>,
    /// Recovery point in seconds: age of the restored data at the end of the restore.
    pub rpo: Option<f64>,
    /// RPO target in seconds.
    pub rpo_target: Option<f64>,
    /// Reasons the drill failed; empty when it passed.
    pub failures: Vec<String>,
    /// The verdict.
    pub passed: bool,
}

impl DrillReport {
    /// Judges a finished drill run.
    pub fn evaluate(
        pb: &Playbook,
        graph: &Graph,
        run: &RunReport,
        run_id: &str,
        facts_backup_time: Option<String>,
    ) -> DrillReport {
        let records = &run.records;
        // The report is an output like any other: secrets and no_log values are hidden.
        let masker = crate::output::emitter::Masker::new(
            pb.secret_values()
                .into_iter()
                .map(|v| zeroize::Zeroizing::new(v.to_string())),
        );
        let phase_of = |i: usize| pb.steps[graph.nodes[i].step].phase.clone();
        let mut phases = Vec::new();
        for name in PHASES {
            let idx: Vec<usize> = (0..records.len())
                .filter(|&i| phase_of(i).as_deref() == Some(*name))
                .collect();
            if idx.is_empty() {
                continue;
            }
            let ran: Vec<&NodeRecord> = idx
                .iter()
                .map(|&i| &records[i])
                .filter(|r| r.status != NodeStatus::NotRun)
                .collect();
            phases.push(PhaseReport {
                name: (*name).to_string(),
                started: ran.iter().map(|r| r.started).fold(f64::INFINITY, f64::min),
                finished: ran.iter().map(|r| r.finished).fold(0.0, f64::max),
                nodes: idx.len(),
                failed: idx
                    .iter()
                    .filter(|&&i| {
                        matches!(
                            records[i].status,
                            NodeStatus::Failed | NodeStatus::Ignored | NodeStatus::Cancelled
                        )
                    })
                    .count(),
            });
        }
        for p in &mut phases {
            if !p.started.is_finite() {
                p.started = 0.0;
            }
        }
        // A verify step skipped on a node (its `when` false there) proved nothing: it is
        // no verification, neither passed nor failed.
        let verifications: Vec<Verification> = (0..records.len())
            .filter(|&i| phase_of(i).as_deref() == Some("verify"))
            .filter(|&i| records[i].status != NodeStatus::Skipped)
            .map(|i| {
                let step = &pb.steps[graph.nodes[i].step];
                let r = &records[i];
                Verification {
                    step: step.id.clone(),
                    name: step.name.clone(),
                    host: graph.nodes[i].host.clone(),
                    passed: matches!(
                        r.status,
                        NodeStatus::Ok | NodeStatus::Changed | NodeStatus::Warning
                    ),
                    msg: match r.result.get("msg").and_then(Json::as_str) {
                        None | Some("") => String::new(),
                        Some(_) if step.no_log => "(hidden by no_log)".to_string(),
                        Some(m) => masker.redact(m),
                    },
                }
            })
            .collect();
        let phase = |n: &str| phases.iter().find(|p| p.name == n);
        let rto = match (phase("sabotage"), phase("verify")) {
            (Some(s), Some(v)) if v.finished >= s.finished => Some(v.finished - s.finished),
            _ => None,
        };
        // The RPO: restored data's age when the restore ended.
        let restore_end = phase("restore").map(|p| p.finished);
        let backup_time = restore_backup_time(pb, graph, records)
            .or(facts_backup_time.and_then(|t| parse_time(&t)));
        let run_started = SystemTime::now()
            - Duration::try_from_secs_f64(records.iter().map(|r| r.finished).fold(0.0, f64::max))
                .unwrap_or_default();
        let rpo = match (backup_time, restore_end) {
            (Some(t), Some(end)) => {
                let end_wall = run_started + Duration::try_from_secs_f64(end).unwrap_or_default();
                end_wall.duration_since(t).ok().map(|d| d.as_secs_f64())
            }
            _ => None,
        };
        let rto_target = pb.rto_target.map(|d| d.as_secs_f64());
        let rpo_target = pb.rpo_target.map(|d| d.as_secs_f64());
        let mut failures = Vec::new();
        if run.outcome != RunOutcome::Success {
            failures.push(format!("the drill run did not succeed ({:?})", run.outcome));
        }
        for v in verifications.iter().filter(|v| !v.passed) {
            failures.push(format!(
                "verification `{}` failed on {}: {}",
                v.step, v.host, v.msg
            ));
        }
        if verifications.is_empty() {
            failures
                .push("no verify step ran (none, or every one skipped): nothing was proven".into());
        }
        match (rto, rto_target) {
            (Some(r), Some(t)) if r > t => {
                failures.push(format!("RTO {} is over the target {}", secs(r), secs(t)))
            }
            (None, Some(_)) => {
                failures.push("RTO unknown (the drill needs sabotage and verify phases)".into())
            }
            _ => {}
        }
        match (rpo, rpo_target) {
            (Some(r), Some(t)) if r > t => failures.push(format!("RPO {} is over the target {}", secs(r), secs(t))),
            (None, Some(_)) => failures.push(
                "RPO unknown: no restore step reported `data.backup_time` or `data.manifest.time`, and no `drill_backup_time` fact was set".into(),
            ),
            _ => {}
        }
        DrillReport {
            name: pb.name.clone(),
            run_id: run_id.to_string(),
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            outcome: run.outcome,
            phases,
            verifications,
            rto,
            rto_target,
            rpo,
            rpo_target,
            passed: failures.is_empty(),
            failures,
        }
    }

    /// The exit code: the run's own when it did not succeed, else 0 or
    /// [`EXIT_DRILL_FAILED`].
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            RunOutcome::Success if self.passed => 0,
            RunOutcome::Success => EXIT_DRILL_FAILED,
            other => other.exit_code(),
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A short summary for the console.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "DRILL {}: {}",
            self.name,
            if self.passed { "PASSED" } else { "FAILED" }
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "  phase {:<9} {:>8}  ({} nodes, {} failed)",
                p.name,
                secs(p.finished - p.started),
                p.nodes,
                p.failed
            );
        }
        for v in &self.verifications {
            let _ = writeln!(
                out,
                "  {} {} on {}{}",
                if v.passed { "pass" } else { "FAIL" },
                v.step,
                v.host,
                if v.msg.is_empty() {
                    String::new()
                } else {
                    format!(": {}", v.msg)
                }
            );
        }
        let _ = writeln!(out, "  RTO {}", measure(self.rto, self.rto_target));
        let _ = writeln!(out, "  RPO {}", measure(self.rpo, self.rpo_target));
        for f in &self.failures {
            let _ = writeln!(out, "  - {f}");
        }
        out
    }

    /// The report as Markdown, for people.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Recovery drill: {}\n", self.name);
        let _ = writeln!(
            out,
            "**Verdict: {}**  \nRun `{}` at {}; outcome: {:?}.\n",
            if self.passed { "PASSED" } else { "FAILED" },
            self.run_id,
            self.time,
            self.outcome
        );
        let _ = writeln!(
            out,
            "| measure | value | target | ok |\n| --- | --- | --- | --- |"
        );
        for (label, v, t) in [
            ("RTO", self.rto, self.rto_target),
            ("RPO", self.rpo, self.rpo_target),
        ] {
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} |",
                v.map_or("unknown".into(), secs),
                t.map_or("-".into(), secs),
                ok_mark(v, t)
            );
        }
        let _ = writeln!(
            out,
            "\n## Phases\n\n| phase | duration | nodes | failed |\n| --- | --- | --- | --- |"
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                p.name,
                secs(p.finished - p.started),
                p.nodes,
                p.failed
            );
        }
        let _ = writeln!(
            out,
            "\n## Verifications\n\n| step | host | result | message |\n| --- | --- | --- | --- |"
        );
        for v in &self.verifications {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                md(&v.step),
                md(&v.host),
                if v.passed { "pass" } else { "**FAIL**" },
                md(&v.msg)
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\n## Why it failed\n");
            for f in &self.failures {
                let _ = writeln!(out, "- {}", md(f));
            }
        }
        out
    }

    /// The report as a self-contained HTML page.
    pub fn to_html(&self) -> String {
        let mut rows = String::new();
        for v in &self.verifications {
            let _ = write!(
                rows,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if v.passed { "pass" } else { "fail" },
                html(&v.step),
                html(&v.host),
                if v.passed { "pass" } else { "FAIL" },
                html(&v.msg)
            );
        }
        let mut phases = String::new();
        for p in &self.phases {
            let _ = write!(
                phases,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html(&p.name),
                secs(p.finished - p.started),
                p.nodes,
                p.failed
            );
        }
        let failures: String = self
            .failures
            .iter()
            .map(|f| format!("<li>{}</li>", html(f)))
            .collect();
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Drill {name}</title><style>\
body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}\
.pass{{background:#e8f5e9}}.fail{{background:#ffebee}}.verdict{{font-size:1.4em}}</style></head><body>\
<h1>Recovery drill: {name}</h1><p class=\"verdict {cls}\">Verdict: <b>{verdict}</b></p>\
<p>Run <code>{run}</code> at {time}</p>\
<table><tr><th>measure</th><th>value</th><th>target</th><th>ok</th></tr>\
<tr><td>RTO</td><td>{rto}</td><td>{rto_t}</td><td>{rto_ok}</td></tr>\
<tr><td>RPO</td><td>{rpo}</td><td>{rpo_t}</td><td>{rpo_ok}</td></tr></table>\
<h2>Phases</h2><table><tr><th>phase</th><th>duration</th><th>nodes</th><th>failed</th></tr>{phases}</table>\
<h2>Verifications</h2><table><tr><th>step</th><th>host</th><th>result</th><th>message</th></tr>{rows}</table>\
<ul>{failures}</ul></body></html>\n",
            name = html(&self.name),
            cls = if self.passed { "pass" } else { "fail" },
            verdict = if self.passed { "PASSED" } else { "FAILED" },
            run = html(&self.run_id),
            time = html(&self.time),
            rto = self.rto.map_or("unknown".into(), secs),
            rto_t = self.rto_target.map_or("-".into(), secs),
            rto_ok = ok_mark(self.rto, self.rto_target),
            rpo = self.rpo.map_or("unknown".into(), secs),
            rpo_t = self.rpo_target.map_or("-".into(), secs),
            rpo_ok = ok_mark(self.rpo, self.rpo_target),
        )
    }
}

/// The newest backup time reported by a restore-phase step.
fn restore_backup_time(pb: &Playbook, graph: &Graph, records: &[NodeRecord]) -> Option<SystemTime> {
    let mut times = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if pb.steps[graph.nodes[i].step].phase.as_deref() != Some("restore") {
            continue;
        }
        let mut candidates = vec![r.result.get("data")];
        if let Some(Json::Array(items)) = r.result.get("results") {
            candidates.extend(items.iter().map(|it| it.get("data")));
        }
        for data in candidates.into_iter().flatten() {
            for t in [
                data.get("backup_time"),
                data.get("manifest").and_then(|m| m.get("time")),
            ]
            .into_iter()
            .flatten()
            {
                if let Some(t) = t.as_str().and_then(parse_time) {
                    times.push(t);
                }
            }
        }
    }
    times.into_iter().max()
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim()).ok()
}

fn secs(s: f64) -> String {
    if s >= 120.0 {
        humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string()
    } else {
        format!("{s:.2}s")
    }
}

fn measure(v: Option<f64>, t: Option<f64>) -> String {
    match (v, t) {
        (Some(v), Some(t)) => format!(
            "{} (target {}) {}",
            secs(v),
            secs(t),
            if v <= t { "ok" } else { "MISSED" }
        ),
        (Some(v), None) => format!("{} (no target)", secs(v)),
        (None, Some(t)) => format!("unknown (target {}) MISSED", secs(t)),
        (None, None) => "unknown (no target)".into(),
    }
}

fn ok_mark(v: Option<f64>, t: Option<f64>) -> &'static str {
    match (v, t) {
        (Some(v), Some(t)) if v <= t => "yes",
        (_, Some(_)) => "NO",
        _ => "-",
    }
}

fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
