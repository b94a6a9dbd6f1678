//! The run journal: every node's start and end, the rollback and the run's end are on
//! disk, secrets masked; a killed run leaves a journal that says what was under way;
//! one run at a time holds a state directory; dry runs keep no journal.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::Test;

fn journals(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join(".lifeboat/runs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join("journal.jsonl"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every journal line is JSON"))
        .collect()
}

fn kinds(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["record"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_run_journals_nodes_rollback_and_end_with_secrets_referred_to_by_name() {
    let out = Test::new()
        .relative_playbook()
        .playbook(
            r#"
secrets:
  token: { value: "s3cret-journal-token" }
steps:
  - id: a
    shell: echo {{ token }}
    register: r
    rollback:
      shell: "true"
  - id: b
    needs: a
    shell: exit 1
"#,
        )
        .run();
    out.assert_code(2);
    let files = journals(out.path());
    assert_eq!(files.len(), 1, "one journal per run");
    let text = std::fs::read_to_string(&files[0]).unwrap_or_default();
    assert!(
        !text.contains("s3cret-journal-token"),
        "a secret reached the journal"
    );
    let recs = records(&files[0]);
    assert_eq!(
        kinds(&recs),
        [
            "run_start",
            "node_start",
            "node_finish",
            "node_start",
            "node_finish",
            "rollback_node",
            "rollback_node",
            "run_end"
        ]
    );
    assert_eq!(recs[0]["playbook"], "playbook.yaml");
    assert_eq!(recs[0]["playbook_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(recs[2]["status"], "changed");
    // A named secret is kept as a reference to its name (rollback and resume get its
    // value again from its source), never as its value.
    assert_eq!(recs[2]["result"]["stdout"], "@@lifeboat-secret:token:v@@\n");
    assert_eq!(recs[7]["outcome"], "rolled_back");
    let runs = Test::new()
        .command("runs")
        .args(&[
            "--state-dir",
            &out.path().join(".lifeboat").display().to_string(),
        ])
        .run();
    runs.assert_code(0);
    assert!(runs.stdout.contains("rolled_back"), "{}", runs.stdout);
}

#[test]
fn a_killed_run_leaves_a_journal_of_what_was_under_way() {
    let mut run = Test::new()
        .playbook("steps:\n  - id: long\n    shell: touch {{ playbook_dir }}/started && sleep 30\n")
        .spawn();
    run.wait_until(20, "the step to start", |p| p.join("started").exists());
    run.signal("KILL");
    let out = run.wait(20);
    let files = journals(out.path());
    assert_eq!(files.len(), 1);
    let recs = records(&files[0]);
    assert_eq!(
        kinds(&recs),
        ["run_start", "node_start"],
        "the journal must show the step started and never ended"
    );
    let runs = Test::new()
        .command("runs")
        .args(&[
            "--state-dir",
            &out.path().join(".lifeboat").display().to_string(),
        ])
        .run();
    assert!(runs.stdout.contains("unfinished"), "{}", runs.stdout);
}

#[test]
fn one_run_at_a_time_holds_a_state_directory() {
    let mut first = Test::new()
        .playbook("steps:\n  - id: long\n    shell: touch {{ playbook_dir }}/started && sleep 30\n")
        .spawn();
    first.wait_until(20, "the first run to start", |p| p.join("started").exists());
    let state = first.path().join(".lifeboat").display().to_string();
    let second = Test::new()
        .playbook("steps:\n  - id: a\n    shell: touch {{ playbook_dir }}/ran\n")
        .args(&["--state-dir", &state])
        .run();
    second.assert_code(1);
    assert!(
        second
            .stderr
            .contains("another lifeboat run holds the state directory"),
        "{}",
        second.stderr
    );
    assert!(!second.exists("ran"));
    first.signal("INT");
    first.wait(20).assert_code(130);
}

#[test]
fn a_dry_run_keeps_no_journal() {
    let out = Test::new()
        .command("plan")
        .playbook("steps:\n  - id: a\n    shell: \"true\"\n")
        .run();
    out.assert_code(0);
    assert!(journals(out.path()).is_empty());
    assert!(
        !out.path().join(".lifeboat").exists(),
        "a dry run wrote a state directory"
    );
}
