//! `lifeboat drill`: phases, verifications, RTO and RPO against targets, the verdict's
//! exit code, and the JSON, Markdown and HTML reports.

mod support;

use support::Test;

/// A drill over a directory in the test's temporary directory; `verify` and the
/// targets are filled in per test.
fn drill(targets: &str, verify: &str) -> String {
    format!(
        r#"
name: tmp-drill
{targets}
vars:
  live: "{{{{ playbook_dir }}}}/live"
  backup: "{{{{ playbook_dir }}}}/backup"
phases:
  backup:
    - id: seed
      shell: mkdir -p {{{{ live }}}} && echo data > {{{{ live }}}}/file
    - id: copy
      needs: seed
      shell: cp -a {{{{ live }}}} {{{{ backup }}}}
    - id: stamp
      needs: copy
      set_fact:
        drill_backup_time: "{{{{ now() }}}}"
  sabotage:
    - id: break
      needs: stamp
      shell: rm -rf {{{{ live }}}}
      rollback: none
  restore:
    - id: restore
      needs: break
      shell: cp -a {{{{ backup }}}} {{{{ live }}}}
  verify:
{verify}
"#
    )
}

const GOOD_VERIFY: &str = "    - id: same\n      needs: restore\n      command: cmp {{ live }}/file {{ backup }}/file\n    - id: not-here\n      needs: restore\n      when: false\n      command: \"false\"\n";

#[test]
fn a_passing_drill_reports_verifications_rto_and_rpo() {
    let out = Test::new()
        .command("drill")
        .playbook(&drill("rto_target: 1m\nrpo_target: 1h", GOOD_VERIFY))
        .args(&[
            "--report",
            "[TMP]/r.json",
            "--report",
            "[TMP]/r.md",
            "--report",
            "[TMP]/r.html",
        ])
        .run();
    out.assert_code(0);
    assert!(
        out.stdout.contains("DRILL tmp-drill: PASSED"),
        "{}",
        out.stdout
    );
    let report: serde_json::Value =
        serde_json::from_str(&out.read("r.json")).expect("the JSON report parses");
    assert_eq!(report["passed"], true);
    assert_eq!(report["verifications"][0]["step"], "same");
    assert_eq!(report["verifications"][0]["passed"], true);
    assert_eq!(
        report["verifications"].as_array().map(Vec::len),
        Some(1),
        "a skipped verify step is no verification: {report}"
    );
    let phases: Vec<&str> = report["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(phases, ["backup", "sabotage", "restore", "verify"]);
    let rto = report["rto"].as_f64().expect("an RTO");
    let rpo = report["rpo"].as_f64().expect("an RPO");
    assert!((0.0..60.0).contains(&rto), "rto {rto}");
    assert!((0.0..3600.0).contains(&rpo), "rpo {rpo}");
    assert!(out.read("r.md").contains("**Verdict: PASSED**"));
    assert!(out.read("r.html").contains("<b>PASSED</b>"));
}

#[test]
fn a_failed_verification_fails_the_drill_without_rolling_back_the_restore() {
    let verify = "    - id: wrong\n      needs: restore\n      command: grep -q nothing-like-this {{ live }}/file\n";
    let out = Test::new()
        .command("drill")
        .playbook(&drill("", verify))
        .args(&["--report", "[TMP]/r.json"])
        .run();
    out.assert_code(4);
    assert!(
        out.stdout.contains("FAIL wrong on localhost"),
        "{}",
        out.stdout
    );
    assert!(
        out.exists("live/file"),
        "a failed verification is a finding, not a reason to undo the restore"
    );
    let report: serde_json::Value =
        serde_json::from_str(&out.read("r.json")).expect("the JSON report parses");
    assert_eq!(report["passed"], false);
    assert_eq!(report["verifications"][0]["passed"], false);
}

#[test]
fn a_missed_target_fails_the_drill() {
    let out = Test::new()
        .command("drill")
        .playbook(&drill("rpo_target: 0s", GOOD_VERIFY))
        .run();
    out.assert_code(4);
    assert!(out.stdout.contains("MISSED"), "{}", out.stdout);
    assert!(out.stdout.contains("RPO"), "{}", out.stdout);
}

#[test]
fn a_playbook_without_phases_is_not_a_drill() {
    let out = Test::new()
        .command("drill")
        .playbook("steps:\n  - id: a\n    debug: hi\n")
        .run();
    out.assert_code(1);
    assert!(out.stderr.contains("has no phases"), "{}", out.stderr);
}

#[test]
fn a_warned_verification_passes_the_drill_as_a_warning() {
    let verify = "    - id: same\n      needs: restore\n      command: cmp {{ live }}/file {{ backup }}/file\n    - id: spare-copy\n      needs: restore\n      severity: warning\n      shell: echo no spare copy >&2; exit 1\n";
    let out = Test::new()
        .command("drill")
        .playbook(&drill("", verify))
        .args(&["--report", "[TMP]/r.json"])
        .run();
    out.assert_code(0);
    assert_eq!(out.status("spare-copy", "localhost"), "warning", "{out:?}");
    assert!(out.stdout.contains("WARNINGS (1)"), "{}", out.stdout);
    assert!(
        out.stdout.contains("DRILL tmp-drill: PASSED"),
        "{}",
        out.stdout
    );
    let report: serde_json::Value =
        serde_json::from_str(&out.read("r.json")).expect("the JSON report parses");
    let spare = report["verifications"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["step"] == "spare-copy")
        .unwrap_or_else(|| panic!("no spare-copy verification: {report}"));
    assert_eq!(spare["passed"], true, "{report}");
}
