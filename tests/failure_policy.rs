//! `max_fail_percentage`: hosts that fail within the share leave the run, the others
//! finish, and only what ran on the failed hosts is rolled back; past the share, the
//! run stops and everything is rolled back (the default, 0, stops at any failure).
//!
//! `severity: warning`: a failure that is a warning. The node ends `warning`, what needs
//! it runs, nothing is rolled back, the run exits 0, and the console, the events and the
//! JUnit report say so; `resume` does not run it again; the loader refuses a bad value
//! and `ignore_errors` beside it.

mod support;

use support::{Test, lifeboat_in, run_ids};

const HOSTS: &str = "[nodes]\nn1 ansible_connection=local\nn2 ansible_connection=local\nn3 ansible_connection=local\nn4 ansible_connection=local\n";

fn playbook(max: u32, failing: &str) -> String {
    format!(
        r#"
hosts: nodes
max_fail_percentage: {max}
steps:
  - id: touch
    shell: touch {{{{ playbook_dir }}}}/touched-{{{{ inventory_hostname }}}}
    rollback:
      shell: rm {{{{ playbook_dir }}}}/touched-{{{{ inventory_hostname }}}}
  - id: check
    needs: touch
    shell: "! echo {failing} | grep -qw {{{{ inventory_hostname }}}}"
  - id: finish
    needs: check
    shell: touch {{{{ playbook_dir }}}}/finished-{{{{ inventory_hostname }}}}
"#
    )
}

#[test]
fn a_failure_within_the_share_takes_only_that_host_out() {
    let out = Test::new()
        .inventory(HOSTS)
        .playbook(&playbook(25, "n2"))
        .run();
    out.assert_code(2);
    for h in ["n1", "n3", "n4"] {
        assert!(
            out.exists(&format!("finished-{h}")),
            "{h} should have finished"
        );
        assert!(
            out.exists(&format!("touched-{h}")),
            "{h} should not be rolled back"
        );
    }
    assert!(!out.exists("finished-n2"), "the failed host went on");
    assert!(
        !out.exists("touched-n2"),
        "the failed host was not rolled back"
    );
    assert_eq!(out.status("finish", "n2"), "not_run");
}

#[test]
fn a_failure_past_the_share_stops_and_rolls_back_everything() {
    let out = Test::new()
        .inventory(HOSTS)
        .playbook(&playbook(25, "n2 n3"))
        .run();
    out.assert_code(2);
    for h in ["n1", "n2", "n3", "n4"] {
        assert!(
            !out.exists(&format!("touched-{h}")),
            "{h} was not rolled back"
        );
    }
}

#[test]
fn the_default_stops_at_the_first_failure() {
    let out = Test::new()
        .inventory(HOSTS)
        .playbook(&playbook(0, "n4"))
        .run();
    out.assert_code(2);
    assert!(!out.exists("touched-n1"), "n1 was not rolled back");
}

#[test]
fn a_share_over_100_is_refused() {
    let out = Test::new()
        .command("validate")
        .playbook(&playbook(101, "x"))
        .run();
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("`max_fail_percentage: 101` is over 100"),
        "{}",
        out.stderr
    );
}

/// `check` fails on the hosts named in `failing`, as a warning: `touch` before it has a
/// rollback that would remove its file, `finish` needs it.
fn warning_playbook(failing: &str) -> String {
    format!(
        r#"
hosts: nodes
steps:
  - id: touch
    shell: touch {{{{ playbook_dir }}}}/touched-{{{{ inventory_hostname }}}}
    rollback:
      shell: rm {{{{ playbook_dir }}}}/touched-{{{{ inventory_hostname }}}}
  - id: check
    name: the backup is fresh
    needs: touch
    severity: warning
    retries: 1
    retry_delay: 0s
    shell: >-
      echo checked >> {{{{ playbook_dir }}}}/checked-{{{{ inventory_hostname }}}};
      ! echo {failing} | grep -qw {{{{ inventory_hostname }}}}
      || {{ echo "the backup of {{{{ inventory_hostname }}}} is 30 hours old" >&2; exit 1; }}
  - id: finish
    needs: check
    shell: touch {{{{ playbook_dir }}}}/finished-{{{{ inventory_hostname }}}}
"#
    )
}

#[test]
fn a_warning_lets_the_run_go_on_and_succeed_without_rollback() {
    let out = Test::new()
        .inventory(HOSTS)
        .playbook(&warning_playbook("n2"))
        .junit()
        .run();
    out.assert_code(0);
    // The outcome: `warning` on n2 after its retry, not failed, ignored or ok.
    assert_eq!(out.status("check", "n2"), "warning", "{out:?}");
    assert_eq!(out.finish("check", "n2")["attempts"], 2, "{out:?}");
    assert_eq!(out.read("checked-n2").lines().count(), 2, "retried once");
    assert!(
        out.finish("check", "n2")["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("is 30 hours old")),
        "{out:?}"
    );
    for h in ["n1", "n3", "n4"] {
        assert_eq!(out.status("check", h), "changed", "{out:?}");
    }
    // What needs it ran, on every host; nothing was rolled back.
    for h in ["n1", "n2", "n3", "n4"] {
        assert!(out.exists(&format!("finished-{h}")), "{h} did not finish");
        assert!(out.exists(&format!("touched-{h}")), "{h} was rolled back");
    }
    assert!(out.events_of("rollback_start").is_empty(), "{out:?}");
    // Events: the run's end is a success, and its recap counts the warning on n2.
    let end = &out.events_of("run_end")[0];
    assert_eq!(end["outcome"], "success", "{out:?}");
    assert_eq!(end["exit_code"], 0);
    let recap = end["recap"].as_array().expect("recap");
    let of = |h: &str| recap.iter().find(|r| r["host"] == h).expect("host recap");
    assert_eq!(of("n2")["warnings"], 1, "{out:?}");
    assert_eq!(of("n2")["failed"], 0, "{out:?}");
    assert_eq!(of("n1")["warnings"], 0, "{out:?}");
    // Console: the node's line, the list of warnings, the recap and the outcome.
    let line = |parts: &[&str]| {
        out.stdout
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_string)
    };
    let node_line = line(&["warning", "check", "n2", "rc=1"]);
    assert!(
        node_line.is_some(),
        "no warning line for check on n2\n{out:?}"
    );
    assert!(out.stdout.contains("is 30 hours old"), "{out:?}");
    assert!(out.stdout.contains("WARNINGS (1)"), "{out:?}");
    // The list says what the check said (its last line of standard error).
    let listed = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("WARNINGS (1)"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        ["warning", "check", "n2", "the backup of n2 is 30 hours old"]
            .iter()
            .all(|p| listed.contains(p))
            && !listed.contains("rc="),
        "{out:?}"
    );
    let recap_n2 = line(&["n2", "failed=0", "warnings=1"]);
    assert!(recap_n2.is_some(), "no warnings=1 in n2's recap\n{out:?}");
    assert!(
        line(&["n1", "failed=0"]).is_some_and(|l| !l.contains("warnings")),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("SUCCESS in ")
            && out
                .stdout
                .contains("no step failed, with 1 warning: check [n2] (exit 0)"),
        "{out:?}"
    );
    // JUnit: a skipped case of type warning, with its message and output; no failure.
    let xml = out.read("junit.xml");
    assert!(xml.contains(r#"failures="0""#), "{xml}");
    assert!(xml.contains(r#"skipped="1""#), "{xml}");
    let case = xml
        .split("<testcase ")
        .find(|c| c.starts_with(r#"name="check [n2]""#))
        .unwrap_or_else(|| panic!("no case for check [n2]\n{xml}"));
    assert!(
        case.contains(r#"<skipped message="warning: the backup of n2 is 30 hours old""#)
            && case.contains(r#"type="warning""#),
        "{case}"
    );
    assert!(
        case.contains(r#"<property name="severity" value="warning"/>"#),
        "{case}"
    );
    assert!(
        case.contains("<system-err>the backup of n2 is 30 hours old"),
        "{case}"
    );
    let passed = xml
        .split("<testcase ")
        .find(|c| c.starts_with(r#"name="check [n1]""#))
        .unwrap_or_else(|| panic!("no case for check [n1]\n{xml}"));
    assert!(
        !passed.contains("skipped") && !passed.contains("warning"),
        "{passed}"
    );
}

#[test]
fn a_warned_node_is_compensated_when_the_run_fails_for_another_reason() {
    // The warning alone would not roll back; a later failure rolls back what ran,
    // the warned node too (it may have half-applied, like an ignored failure).
    let out = Test::new()
        .inventory("[nodes]\nn1 ansible_connection=local\n")
        .playbook(
            r#"
hosts: nodes
steps:
  - id: check
    severity: warning
    shell: exit 3
    rollback:
      shell: touch {{ playbook_dir }}/check-undone
  - id: boom
    needs: check
    shell: exit 1
"#,
        )
        .run();
    out.assert_code(2);
    assert_eq!(out.status("check", "n1"), "warning", "{out:?}");
    assert_eq!(out.status("boom", "n1"), "failed", "{out:?}");
    assert_eq!(out.rollback_status("check", "n1"), "done", "{out:?}");
    assert!(out.exists("check-undone"), "{out:?}");
}

#[test]
fn a_warning_in_a_dry_run_is_a_warning_and_the_plan_succeeds() {
    let out = Test::new()
        .command("plan")
        .inventory("[nodes]\nn1 ansible_connection=local\n")
        .playbook(
            r#"
hosts: nodes
steps:
  - id: check
    severity: warning
    read_only: true
    shell: echo stale >&2; exit 1
  - id: next
    needs: check
    shell: echo next
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.status("check", "n1"), "warning", "{out:?}");
    assert_eq!(out.status("next", "n1"), "would_change", "{out:?}");
    assert!(
        out.stdout
            .contains("nothing was changed, with 1 warning: check [n1]"),
        "{out:?}"
    );
}

#[test]
fn resume_does_not_run_a_warned_node_again() {
    let test = Test::new()
        .inventory("[nodes]\nn1 ansible_connection=local\n")
        .playbook(
            r#"
hosts: nodes
defaults:
  severity: warning
steps:
  - id: check
    shell: echo ran >> {{ playbook_dir }}/count; exit 1
  - id: gate
    needs: check
    severity: error
    shell: test -e {{ playbook_dir }}/go
"#,
        );
    let dir = test.path().to_path_buf();
    let out = test.run();
    out.assert_code(2);
    assert_eq!(out.status("check", "n1"), "warning", "{out:?}");
    assert_eq!(out.status("gate", "n1"), "failed", "{out:?}");
    std::fs::write(dir.join("go"), "").expect("write go");
    let ids = run_ids(&dir);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let resumed = lifeboat_in(&dir).args(["resume", &ids[0]]).run();
    assert_eq!(resumed.code, 0, "{}{}", resumed.stdout, resumed.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.join("count")).unwrap_or_default(),
        "ran\n",
        "the warned step ran again\n{}",
        resumed.stdout
    );
}

/// Runs `validate` on a playbook that must be refused; its stderr.
#[track_caller]
fn refused(playbook: &str) -> (String, String) {
    let out = Test::new().command("validate").playbook(playbook).run();
    out.assert_code(1);
    let file = out.join(support::PLAYBOOK).display().to_string();
    (out.stderr.clone(), file)
}

#[test]
fn a_bad_severity_is_refused_where_it_is_written() {
    let (err, file) = refused("steps:\n  - id: a\n    severity: warn\n    shell: echo\n");
    assert!(err.contains("`severity: warn` is not a severity"), "{err}");
    assert!(err.contains(&format!("{file}:3:15")), "{err}");
    assert!(
        err.contains("write `warning` (a failure is reported as a warning and the run goes on) or `error` (the default)"),
        "{err}"
    );
    let (err, _) = refused("steps:\n  - id: a\n    severity: warnig\n    shell: echo\n");
    assert!(err.contains("did you mean `warning`?"), "{err}");
    let (err, file) = refused("defaults:\n  severity: [warning]\nsteps:\n  - shell: echo\n");
    assert!(
        err.contains("`severity` must be a string, found a list"),
        "{err}"
    );
    assert!(err.contains(&format!("{file}:2:13")), "{err}");
}

#[test]
fn severity_warning_and_ignore_errors_are_refused_together() {
    let (err, file) = refused(
        "steps:\n  - id: a\n    ignore_errors: true\n    severity: warning\n    shell: echo\n",
    );
    assert!(
        err.contains(
            "step `a` has both `severity: warning` and `ignore_errors: true`: a failure cannot \
             be both a warning and an ignored error"
        ),
        "{err}"
    );
    assert!(err.contains(&format!("{file}:4:5")), "{err}");
    assert!(err.contains("remove `ignore_errors`"), "{err}");
    // One of them from `defaults:`: said where the step writes the other.
    let (err, file) = refused(
        "defaults:\n  ignore_errors: true\nsteps:\n  - id: a\n    severity: warning\n    shell: echo\n",
    );
    assert!(err.contains("(`ignore_errors` from `defaults:`)"), "{err}");
    assert!(err.contains(&format!("{file}:5:5")), "{err}");
    let (err, file) = refused(
        "defaults:\n  ignore_errors: true\n  severity: warning\nsteps:\n  - id: a\n    shell: echo\n",
    );
    assert!(
        err.contains("`defaults` has both `severity: warning` and `ignore_errors: true`"),
        "{err}"
    );
    assert!(err.contains(&format!("{file}:3:3")), "{err}");
    // `ignore_errors: false` on the step settles it.
    let out = Test::new()
        .command("validate")
        .playbook("defaults:\n  ignore_errors: true\nsteps:\n  - id: a\n    ignore_errors: false\n    severity: warning\n    shell: echo\n")
        .run();
    out.assert_code(0);
}
