//! Regressions found in review of the engine: each test pins one behaviour that was
//! once wrong (variables re-rendering data, rollback of nodes that never ran, hosts of
//! defaults and imports, imported `needs`, `--limit` ordering, `run_once` barriers,
//! `quote`, huge durations, dry-run `unknown` through `hostvars` and variables).

mod support;

use support::Test;

const HOSTS: &str = "[web]\nw1 ansible_connection=local\nw2 ansible_connection=local\n[db]\nd1 ansible_connection=local\n";

#[test]
fn registered_output_is_never_rendered_again_through_a_variable() {
    let out = Test::new()
        .playbook(
            r#"
secrets:
  pw: { value: "hunter2-secret" }
vars:
  out: "{{ r.stdout | trim }}"
steps:
  - id: a
    shell: printf '%s' '{{ "{{" | safe }} pw {{ "}}" | safe }}'
    register: r
  - id: b
    needs: a
    shell: printf '%s' {{ out }} > {{ playbook_dir }}/out
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.read("out"), "{{ pw }}");
}

#[test]
fn a_step_that_failed_before_its_module_started_is_not_compensated() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: a
    shell: "true {{ missing_variable }}"
    rollback:
      shell: touch {{ playbook_dir }}/compensated
"#,
        )
        .run();
    out.assert_code(2);
    assert!(
        !out.exists("compensated"),
        "a node that never ran was rolled back"
    );
}

#[test]
fn an_interrupted_dry_run_rolls_nothing_back() {
    let mut run = Test::new()
        .command("plan")
        .playbook(
            r#"
steps:
  - id: wait
    read_only: true
    shell: touch {{ playbook_dir }}/started && sleep 30
  - id: other
    shell: "true"
    rollback:
      shell: touch {{ playbook_dir }}/compensated
"#,
        )
        .spawn();
    run.wait_until(20, "the read-only step to start", |p| {
        p.join("started").exists()
    });
    run.signal("INT");
    let out = run.wait(20);
    out.assert_code(130);
    assert!(!out.exists("compensated"), "a dry run ran a rollback");
}

#[test]
fn defaults_hosts_and_an_import_hosts_choose_where_steps_run() {
    let out = Test::new()
        .inventory(HOSTS)
        .file(
            "sub.yaml",
            "hosts: db\nsteps:\n  - id: one\n    debug: x\n  - id: two\n    needs: one\n    debug: y\n",
        )
        .playbook(
            r#"
hosts: web
defaults:
  hosts: db
steps:
  - id: a
    debug: a
  - import: sub.yaml
    id: sub
  - import: sub.yaml
    id: pinned
    hosts: w1
"#,
        )
        .run();
    out.assert_code(0);
    assert!(
        out.has_node("a", "d1") && !out.has_node("a", "w1"),
        "defaults.hosts ignored"
    );
    assert!(
        out.has_node("sub.one", "d1") && !out.has_node("sub.one", "w1"),
        "the imported file's hosts ignored"
    );
    assert!(
        out.has_node("pinned.two", "w1") && !out.has_node("pinned.two", "d1"),
        "the import's hosts ignored"
    );
    // sub.two needs sub.one: the imported needs are prefixed and honoured.
    let (_, one_end) = out.interval("sub.one", "d1");
    let (two_start, _) = out.interval("sub.two", "d1");
    assert!(two_start >= one_end, "sub.two started before sub.one ended");
}

#[test]
fn limit_keeps_ordering_through_steps_it_empties() {
    let out = Test::new()
        .inventory(HOSTS)
        .command("graph")
        .playbook(
            "steps:\n  - id: x\n    hosts: web\n    debug: x\n  - id: a\n    hosts: db\n    needs: x\n    debug: a\n  - id: b\n    hosts: web\n    needs: a\n    debug: b\n",
        )
        .args(&["--limit", "web"])
        .run();
    out.assert_code(0);
    assert!(out.stdout.contains("b @ w1  <- x@w1"), "{}", out.stdout);
}

#[test]
fn a_run_once_step_waits_for_every_host_of_what_it_needs() {
    let out = Test::new()
        .inventory(HOSTS)
        .command("graph")
        .playbook(
            "hosts: web\nsteps:\n  - id: restart\n    debug: r\n  - id: check\n    run_once: true\n    needs: restart\n    debug: c\n",
        )
        .run();
    out.assert_code(0);
    assert!(
        out.stdout.contains("check @ w1  <- restart@w1, restart@w2"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_quote_filter_is_not_quoted_twice() {
    let out = Test::new()
        .playbook(
            "vars:\n  p: \"a b\"\nsteps:\n  - id: a\n    shell: printf '[%s]' {{ p | quote }} > {{ playbook_dir }}/out\n",
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.read("out"), "[a b]");
}

#[test]
fn a_huge_duration_is_an_error_not_a_panic() {
    let out = Test::new()
        .command("validate")
        .playbook("steps:\n  - id: a\n    timeout: 1.0e300\n    debug: x\n")
        .run();
    out.assert_code(1);
    assert!(
        out.stderr.contains("`timeout` must be a duration"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_dry_run_marks_unknown_through_hostvars_and_variables() {
    let out = Test::new()
        .inventory(HOSTS)
        .command("plan")
        .playbook(
            r#"
steps:
  - id: dump
    hosts: db
    shell: echo dumped
    register: dump
  - id: via-hostvars
    hosts: web
    needs: dump
    shell: echo {{ hostvars['d1'].dump.stdout }}
  - id: via-var
    hosts: db
    needs: dump
    vars:
      sum: "{{ dump.stdout }}"
    shell: echo {{ sum }}
  - id: typo
    hosts: db
    needs: dump
    shell: echo {{ dumpp.stdout }}
"#,
        )
        .run();
    assert_eq!(out.status("via-hostvars", "w1"), "unknown");
    assert_eq!(out.status("via-var", "d1"), "unknown");
    assert_eq!(
        out.status("typo", "d1"),
        "failed",
        "a typo must not pass as unknown"
    );
}

#[test]
fn delegate_to_a_host_outside_the_inventory_fails() {
    let out = Test::new()
        .inventory(HOSTS)
        .playbook("steps:\n  - id: a\n    hosts: d1\n    delegate_to: db-typo\n    debug: x\n")
        .run();
    out.assert_code(2);
    assert!(
        out.msg("a", "d1")
            .contains("`db-typo` is not a host of the inventory"),
        "{}",
        out.msg("a", "d1")
    );
}

#[test]
fn a_dry_run_carries_unknown_through_set_fact() {
    let out = Test::new()
        .command("plan")
        .playbook(
            r#"
steps:
  - id: read
    shell: echo hello
    register: read
  - id: remember
    needs: read
    set_fact:
      greeting: "{{ read.stdout | trim }}"
  - id: use
    needs: remember
    shell: echo {{ greeting }}
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.status("remember", "localhost"), "unknown");
    assert_eq!(out.status("use", "localhost"), "unknown");
}

/// Two imports of one file that register the same name each read their own result,
/// even when a step of the other import registers it in between (here: `b.s`, skipped,
/// registers `r` after `a.s` and before `a.use` reads it).
#[test]
fn each_import_reads_what_its_own_steps_registered() {
    let out = Test::new()
        .file(
            "part.yaml",
            r#"
steps:
  - id: s
    when: go
    shell: echo ran-{{ label }}
    register: r
  - id: wait
    needs: s
    shell: i=0; while [ ! -e {{ playbook_dir }}/{{ gate }} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; [ -e {{ playbook_dir }}/{{ gate }} ]
  - id: use
    needs: wait
    shell: printf '%s' {{ r.stdout | default('skipped') | trim }} > {{ playbook_dir }}/seen-{{ label }}
"#,
        )
        .playbook(
            r#"
steps:
  - import: part.yaml
    id: a
    vars: { go: true, label: a, gate: b-done }
  - import: part.yaml
    id: b
    needs: a.s
    vars: { go: false, label: b, gate: playbook.yaml }
  - id: b-done
    needs: b.s
    shell: touch {{ playbook_dir }}/b-done
  - id: after
    needs: [a.use, b.use]
    shell: printf '%s' {{ r.stdout | default('skipped') | trim }} > {{ playbook_dir }}/seen-main
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.status("b.s", "localhost"), "skipped");
    assert_eq!(
        out.read("seen-a"),
        "ran-a",
        "import a read import b's result"
    );
    assert_eq!(out.read("seen-b"), "skipped");
    // The main playbook's steps see the last result registered anywhere, as before.
    assert_eq!(out.read("seen-main"), "skipped");
}
