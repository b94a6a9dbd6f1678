//! The engine end to end, through the real binary: scheduling (`needs`, parallelism),
//! rollback order and failures, retries and timeouts, variables, dry runs, located
//! errors, exit codes, events, JUnit and the informational subcommands.

mod support;

use support::{Test, snapshot, token};

/// Whether two [start, end] intervals overlap.
fn overlap(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

// ---------------------------------------------------------------- needs & scheduling

#[test]
fn needs_on_the_same_host_waits_for_the_end() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: b
    needs: [a]
    shell: echo b >> {{ playbook_dir }}/order
  - id: a
    shell: sleep 0.3; echo a >> {{ playbook_dir }}/order
"#,
        )
        .run();
    out.assert_code(0);
    let (_, a_end) = out.interval("a", "localhost");
    let (b_start, _) = out.interval("b", "localhost");
    assert!(
        b_start >= a_end,
        "b started at {b_start}, a ended at {a_end}\n{out:?}"
    );
    assert_eq!(out.read("order"), "a\nb\n");
}

#[test]
fn independent_steps_overlap() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: one
    shell: sleep 0.5
  - id: two
    shell: sleep 0.5
"#,
        )
        .run();
    out.assert_code(0);
    let (one, two) = (
        out.interval("one", "localhost"),
        out.interval("two", "localhost"),
    );
    assert!(
        overlap(one, two),
        "{one:?} and {two:?} do not overlap\n{out:?}"
    );
}

#[test]
fn host_parallelism_one_serialises_a_host() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: one
    shell: sleep 0.3
  - id: two
    shell: sleep 0.3
"#,
        )
        .args(&["--host-parallelism", "1"])
        .run();
    out.assert_code(0);
    let (one, two) = (
        out.interval("one", "localhost"),
        out.interval("two", "localhost"),
    );
    assert!(!overlap(one, two), "{one:?} and {two:?} overlap\n{out:?}");
}

#[test]
fn a_looped_import_expands_per_item_in_reverse_order_one_after_another() {
    let out = Test::new()
        .file(
            "stop.yaml",
            r#"
steps:
  - id: stop
    shell: sleep 0.1; echo "stop {{ svc }}" >> {{ playbook_dir }}/log
"#,
        )
        .playbook(
            r#"
steps:
  - id: staged
    shell: echo staged >> {{ playbook_dir }}/log
  - import: stop.yaml
    id: stop
    loop: [heat, nova, keystone]
    loop_var: svc
    loop_order: reverse
    needs: [staged]
  - id: stopped
    needs: [stop]
    shell: echo stopped >> {{ playbook_dir }}/log
"#,
        )
        .run();
    out.assert_code(0);
    for svc in ["heat", "nova", "keystone"] {
        assert_eq!(
            out.status(&format!("{svc}-stop.stop"), "localhost"),
            "changed"
        );
    }
    assert_eq!(
        out.read("log"),
        "staged\nstop keystone\nstop nova\nstop heat\nstopped\n",
        "{out:?}"
    );
}

#[test]
fn a_looped_import_together_runs_its_expansions_side_by_side() {
    let playbook = r#"
steps:
  - import: one.yaml
    loop: [a, b]
  - id: after
    needs: [one@all]
    shell: 'true'
"#;
    let out = Test::new()
        .command("graph")
        .file(
            "one.yaml",
            "steps:\n  - id: x\n    shell: echo {{ item }}\n",
        )
        .playbook(playbook)
        .run();
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("wave 1\n  a-one.x @ localhost\n  b-one.x @ localhost\n"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("after @ localhost  <- a-one.x@localhost, b-one.x@localhost"),
        "{out:?}"
    );
}

#[test]
fn a_looped_import_refuses_what_cannot_name_its_steps() {
    let out = Test::new()
        .command("validate")
        .file("one.yaml", "steps:\n  - id: x\n    shell: 'true'\n")
        .playbook("steps:\n  - import: one.yaml\n    loop: [a, 'b c']\n    loop_order: sideways\n")
        .run();
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("`loop_order: sideways` is not an order"),
        "{out:?}"
    );
    let out = Test::new()
        .command("validate")
        .file("one.yaml", "steps:\n  - id: x\n    shell: 'true'\n")
        .playbook("steps:\n  - import: one.yaml\n    loop: [a, 'b c']\n")
        .run();
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("`loop` item `b c` cannot name an import"),
        "{out:?}"
    );
    assert!(out.stderr.contains(":3:11"), "{out:?}");
}

#[test]
fn needs_an_import_id_waits_for_all_its_steps() {
    let out = Test::new()
        .file(
            "db.yaml",
            r#"
steps:
  - id: dump
    shell: sleep 0.2; echo "dump {{ who }}" >> {{ playbook_dir }}/log
  - id: check
    shell: sleep 0.3; echo "check {{ who }}" >> {{ playbook_dir }}/log
"#,
        )
        .playbook(
            r#"
vars:
  who: main
steps:
  - import: db.yaml
    id: db
    vars:
      who: imported
  - id: after
    needs: [db]
    shell: echo "after {{ who }}" >> {{ playbook_dir }}/log
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.status("db.dump", "localhost"), "changed");
    assert_eq!(out.status("db.check", "localhost"), "changed");
    let after = out.interval("after", "localhost").0;
    for s in ["db.dump", "db.check"] {
        let end = out.interval(s, "localhost").1;
        assert!(
            after >= end,
            "after started at {after}, {s} ended at {end}\n{out:?}"
        );
    }
    let log = out.read("log");
    assert!(log.contains("dump imported\n"), "{log}");
    assert!(log.contains("check imported\n"), "{log}");
    assert!(log.ends_with("after main\n"), "{log}");
}

// ---------------------------------------------------------------- finally

const DESYNC: &str = r#"
steps:
  - id: desync
    shell: echo desync >> {{ playbook_dir }}/log
    rollback:
      shell: echo undo-desync >> {{ playbook_dir }}/log
  - id: dump
    needs: [desync]
    shell: echo dump >> {{ playbook_dir }}/log; {{ 'exit 3' if fail else 'true' }}
    rollback: none
  - id: copy
    needs: [dump]
    shell: echo copy >> {{ playbook_dir }}/log
    rollback: none
  - id: resync
    needs: [dump]
    finally: true
    shell: echo resync >> {{ playbook_dir }}/log
    rollback: none
"#;

#[test]
fn a_finally_step_runs_after_a_failure_and_before_the_rollback() {
    let out = Test::new()
        .playbook(DESYNC)
        .args(&["-e", "fail=true"])
        .run();
    out.assert_code(2);
    assert_eq!(out.status("dump", "localhost"), "failed");
    assert_eq!(out.status("resync", "localhost"), "changed");
    assert_eq!(out.status("copy", "localhost"), "not_run");
    assert_eq!(
        out.read("log"),
        "desync\ndump\nresync\nundo-desync\n",
        "{out:?}"
    );
}

#[test]
fn a_finally_step_runs_in_its_place_when_nothing_fails() {
    let out = Test::new()
        .playbook(DESYNC)
        .args(&["-e", "fail=false"])
        .run();
    out.assert_code(0);
    let log = out.read("log");
    assert!(log.starts_with("desync\ndump\n"), "{log}");
    assert!(log.contains("resync\n") && log.contains("copy\n"), "{log}");
    assert!(!log.contains("undo"), "{log}");
}

// ---------------------------------------------------------------- rollback

const DIAMOND: &str = r#"
steps:
  - id: a
    shell: echo a
    rollback:
      shell: echo a >> {{ playbook_dir }}/undo
  - id: b
    needs: [a]
    shell: echo b
    rollback:
      shell: echo b >> {{ playbook_dir }}/undo
  - id: c
    needs: [a]
    shell: echo c
    rollback:
      shell: echo c >> {{ playbook_dir }}/undo
  - id: d
    needs: [b, c]
    shell: echo d; exit 7
    rollback:
      shell: echo d >> {{ playbook_dir }}/undo
"#;

#[test]
fn rollback_runs_in_reverse_dependency_order() {
    let out = Test::new().playbook(DIAMOND).run();
    out.assert_code(2);
    assert_eq!(out.status("d", "localhost"), "failed");
    assert_eq!(out.finish("d", "localhost")["rc"], 7);
    let order = out.rollback_order();
    assert_eq!(order.len(), 4, "{order:?}\n{out:?}");
    assert_eq!(order[0], "d", "the failed step's own rollback runs first");
    let mut middle = vec![order[1].clone(), order[2].clone()];
    middle.sort();
    assert_eq!(middle, ["b", "c"]);
    assert_eq!(order[3], "a");
    let lines: Vec<String> = out.read("undo").lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], "d");
    assert_eq!(lines[3], "a");
    let mut middle: Vec<&str> = vec![&lines[1], &lines[2]];
    middle.sort();
    assert_eq!(middle, ["b", "c"]);
    assert!(out.left_undone().is_empty());
    assert_eq!(out.events_of("rollback_finish")[0]["complete"], true);
    assert_eq!(out.events_of("run_end")[0]["outcome"], "rolled_back");
}

#[test]
fn rollback_none_and_auto_on_shell() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: kept
    shell: echo kept
    rollback: none
  - id: auto
    shell: echo auto
  - id: boom
    needs: [kept, auto]
    shell: exit 1
"#,
        )
        .run();
    out.assert_code(2);
    assert_eq!(out.rollback_status("kept", "localhost"), "nothing_to_do");
    assert_eq!(out.rollback_status("auto", "localhost"), "nothing_to_do");
    let auto = out
        .rollback_nodes()
        .into_iter()
        .find(|e| e["step"] == "auto")
        .cloned()
        .unwrap_or_default();
    assert!(
        auto["msg"]
            .as_str()
            .unwrap_or("")
            .contains("nothing to undo"),
        "{out:?}"
    );
    assert!(out.rollback_order().is_empty(), "{out:?}");
}

#[test]
fn a_failed_rollback_leaves_what_waits_for_it_undone() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: a
    shell: echo a
    rollback:
      shell: echo a >> {{ playbook_dir }}/undo
  - id: b
    needs: [a]
    shell: echo b
    rollback:
      shell: echo b-failed >> {{ playbook_dir }}/undo; exit 4
  - id: c
    needs: [b]
    shell: exit 1
    rollback:
      shell: echo c >> {{ playbook_dir }}/undo
"#,
        )
        .run();
    out.assert_code(3);
    assert_eq!(out.rollback_status("b", "localhost"), "failed");
    assert_eq!(out.rollback_status("a", "localhost"), "left_undone");
    assert_eq!(out.read("undo"), "c\nb-failed\n", "a must not be undone");
    let left = out.left_undone();
    let steps: Vec<&str> = left.iter().map(|(s, _, _)| s.as_str()).collect();
    assert!(steps.contains(&"b"), "{left:?}");
    assert!(steps.contains(&"a"), "{left:?}");
    let why_a = &left.iter().find(|(s, _, _)| s == "a").expect("a").2;
    assert!(why_a.contains('b'), "a's reason names b: {why_a}");
    assert!(out.stdout.contains("left undone"), "{out:?}");
    assert_eq!(
        out.events_of("run_end")[0]["outcome"],
        "rollback_incomplete"
    );
}

#[test]
fn no_rollback_undoes_nothing() {
    let out = Test::new().playbook(DIAMOND).args(&["--no-rollback"]).run();
    out.assert_code(3);
    assert!(!out.exists("undo"), "nothing is undone\n{out:?}");
    assert!(out.rollback_order().is_empty());
    let left = out.left_undone();
    let mut steps: Vec<&str> = left.iter().map(|(s, _, _)| s.as_str()).collect();
    steps.sort();
    assert_eq!(steps, ["a", "b", "c", "d"], "{out:?}");
}

// ---------------------------------------------------------------- retries & timeouts

const FLAKY: &str = r#"
steps:
  - id: flaky
    shell: |
      n=$(cat {{ playbook_dir }}/count 2>/dev/null || echo 0)
      n=$((n + 1))
      echo $n > {{ playbook_dir }}/count
      [ $n -ge 3 ]
    retries: RETRIES
    retry_delay: 0.1s
"#;

#[test]
fn retries_until_success() {
    let out = Test::new().playbook(&FLAKY.replace("RETRIES", "2")).run();
    out.assert_code(0);
    assert_eq!(out.status("flaky", "localhost"), "changed");
    assert_eq!(out.finish("flaky", "localhost")["attempts"], 3);
    assert_eq!(out.read("count").trim(), "3");
}

#[test]
fn retries_exhausted_fail() {
    let out = Test::new().playbook(&FLAKY.replace("RETRIES", "1")).run();
    out.assert_code(2);
    assert_eq!(out.status("flaky", "localhost"), "failed");
    assert_eq!(out.finish("flaky", "localhost")["attempts"], 2);
    assert_eq!(out.read("count").trim(), "2");
}

/// Whether a process is gone (or only a zombie left for init to reap).
fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn timeout_kills_the_command() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: slow
    timeout: 1s
    shell: |
      echo $$ > {{ playbook_dir }}/pid
      sleep 30 &
      echo $! > {{ playbook_dir }}/child
      wait
      echo finished
"#,
        )
        .run();
    out.assert_code(2);
    assert_eq!(out.status("slow", "localhost"), "failed");
    assert!(
        out.msg("slow", "localhost").contains("timed out"),
        "{out:?}"
    );
    for f in ["pid", "child"] {
        let pid = out.read(f).trim().to_string();
        support::wait_for(5, &format!("process {pid} ({f}) to end"), || {
            process_gone(&pid)
        });
    }
}

// ---------------------------------------------------------------- step keys

#[test]
fn when_skips() {
    let out = Test::new()
        .playbook(
            r#"
vars:
  enabled: false
  n: 3
steps:
  - id: off
    when: enabled
    shell: touch {{ playbook_dir }}/off
  - id: on
    when: n > 2 and not enabled
    shell: touch {{ playbook_dir }}/on
  - id: braces
    when: "{{ enabled }}"
    shell: touch {{ playbook_dir }}/braces
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.status("off", "localhost"), "skipped");
    assert_eq!(out.status("braces", "localhost"), "skipped");
    assert_eq!(out.status("on", "localhost"), "changed");
    assert!(!out.exists("off"));
    assert!(!out.exists("braces"));
    assert!(out.exists("on"));
}

#[test]
fn loop_register_and_results() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: each
    loop: [red, green, blue]
    shell: echo {{ item }}; echo {{ item }} >> {{ playbook_dir }}/items
    register: colours
  - id: report
    needs: [each]
    shell: >
      echo "{{ colours.results | length }} {{ colours.results[1].item }}
      {{ colours.results[2].stdout | trim }} {{ colours.changed }}" > {{ playbook_dir }}/report
  - id: say
    loop: [a, b, c, d, e]
    debug:
      msg: colour {{ item }}
  - id: once
    loop: [a]
    debug:
      msg: colour {{ item }}
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.read("items"), "red\ngreen\nblue\n");
    assert_eq!(out.read("report").trim(), "3 green blue True");
    // A loop's message says how many items ran, then the last item's.
    assert_eq!(out.msg("say", "localhost"), "5 items; the last: colour e");
    assert_eq!(out.msg("once", "localhost"), "colour a");
}

#[test]
fn a_failed_loop_item_shows_its_standard_error_as_a_step_does() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: each
    loop: [fine, broken]
    shell: "[ {{ item }} = fine ] || { echo '{{ item }} is beyond repair' >&2; exit 4; }"
"#,
        )
        .run();
    out.assert_code(2);
    assert!(
        out.msg("each", "localhost").starts_with("item 2 (broken):"),
        "{}",
        out.msg("each", "localhost")
    );
    assert_eq!(
        out.finish("each", "localhost")["stderr"].as_str(),
        Some("broken is beyond repair\n")
    );
    assert!(
        out.stdout
            .contains("      stderr:\n        broken is beyond repair"),
        "{}",
        out.stdout
    );
}

#[test]
fn register_exposes_rc_stdout_changed_failed_and_data() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: cmd
    shell: echo hello; exit 3
    ignore_errors: true
    register: r
  - id: fact
    set_fact:
      colour: teal
    register: f
  - id: show
    needs: [cmd, fact]
    shell: >
      echo "{{ r.rc }}|{{ r.stdout | trim }}|{{ r.changed }}|{{ r.failed }}|{{ f.data.colour }}|{{ colour }}"
      > {{ playbook_dir }}/show
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.status("cmd", "localhost"), "ignored");
    assert_eq!(out.read("show").trim(), "3|hello|False|True|teal|teal");
}

#[test]
fn assert_passes_and_fails_with_its_message() {
    let out = Test::new()
        .playbook(
            r#"
vars:
  size: 10
steps:
  - id: fine
    assert:
      that:
        - size > 5
  - id: too-small
    needs: [fine]
    assert:
      that:
        - size > 5
        - size > 100
      fail_msg: the dump is too small
"#,
        )
        .run();
    out.assert_code(2);
    assert_eq!(out.status("fine", "localhost"), "ok");
    assert_eq!(out.status("too-small", "localhost"), "failed");
    assert!(
        out.msg("too-small", "localhost")
            .contains("the dump is too small"),
        "{out:?}"
    );
}

#[test]
fn ignore_errors_lets_the_run_go_on() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: broken
    shell: exit 5
    ignore_errors: true
  - id: next
    needs: [broken]
    shell: touch {{ playbook_dir }}/next
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.status("broken", "localhost"), "ignored");
    assert_eq!(out.status("next", "localhost"), "changed");
    assert!(out.exists("next"));
    assert!(out.events_of("rollback_start").is_empty(), "{out:?}");
}

const PRECEDENCE: &str = r#"
vars:
  v: playbook
  w: playbook
vars_files:
  - vars.yml
steps:
  - id: plain
    shell: echo {{ v }} {{ w }} {{ vf }} > {{ playbook_dir }}/plain
  - id: stepvars
    vars:
      v: step
    shell: echo {{ v }} {{ w }} > {{ playbook_dir }}/stepvars
"#;

#[test]
fn step_vars_beat_playbook_vars_and_vars_files_are_read() {
    let out = Test::new()
        .file("vars.yml", "vf: fromfile\nv: file\n")
        .playbook(PRECEDENCE)
        .run();
    out.assert_code(0);
    assert_eq!(out.read("plain").trim(), "playbook playbook fromfile");
    assert_eq!(out.read("stepvars").trim(), "step playbook");
}

#[test]
fn extra_vars_beat_everything() {
    let out = Test::new()
        .file("vars.yml", "vf: fromfile\n")
        .playbook(PRECEDENCE)
        .args(&["-e", "v=extra", "-e", r#"{"vf": "extrafile"}"#])
        .run();
    out.assert_code(0);
    assert_eq!(out.read("plain").trim(), "extra playbook extrafile");
    assert_eq!(out.read("stepvars").trim(), "extra playbook");
}

#[test]
fn defaults_apply_to_every_step() {
    let out = Test::new()
        .playbook(
            &FLAKY
                .replace("    retries: RETRIES\n    retry_delay: 0.1s\n", "")
                .replace(
                    "steps:",
                    "defaults:\n  retries: 2\n  retry_delay: 0.1s\n  tags: [dflt]\nsteps:",
                ),
        )
        .args(&["--tags", "dflt"])
        .run();
    out.assert_code(0);
    assert_eq!(out.finish("flaky", "localhost")["attempts"], 3, "{out:?}");
}

#[test]
fn tags_and_skip_tags_select_steps() {
    const PB: &str = r#"
steps:
  - id: backup
    tags: [backup]
    shell: touch {{ playbook_dir }}/backup
  - id: restore
    tags: [restore]
    shell: touch {{ playbook_dir }}/restore
  - id: log
    tags: [always]
    shell: touch {{ playbook_dir }}/log
"#;
    let out = Test::new().playbook(PB).args(&["--tags", "backup"]).run();
    out.assert_code(0);
    assert!(out.exists("backup") && out.exists("log"), "{out:?}");
    assert!(!out.exists("restore"));
    assert!(!out.has_node("restore", "localhost"));

    let out = Test::new()
        .playbook(PB)
        .args(&["--skip-tags", "backup,always"])
        .run();
    out.assert_code(0);
    assert!(out.exists("restore"), "{out:?}");
    assert!(!out.exists("backup") && !out.exists("log"));
}

#[test]
fn limit_to_an_unknown_host_is_an_input_error() {
    let out = Test::new()
        .playbook("steps:\n  - id: a\n    shell: touch {{ playbook_dir }}/ran\n")
        .args(&["--limit", "nosuchhost"])
        .run();
    out.assert_code(1);
    assert!(out.stderr.contains("nosuchhost"), "{out:?}");
    assert!(!out.exists("ran"));
}

// ---------------------------------------------------------------- shell quoting

#[test]
fn interpolated_values_reach_the_shell_as_data() {
    let pwned = format!("/tmp/PWNED-{}", token());
    let evil = format!("'; touch {pwned}; echo ' $(id) `id` \"dq\" $HOME");
    let vars = serde_json::json!({ "v": evil }).to_string();
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: echo
    shell: echo {{ v }} > {{ playbook_dir }}/out
  - id: printf
    command: printf %s {{ v }}
    register: p
"#,
        )
        .args(&["-e", &vars])
        .run();
    out.assert_code(0);
    assert_eq!(out.read("out"), format!("{evil}\n"));
    assert_eq!(out.finish("printf", "localhost")["stdout"], evil.as_str());
    assert!(
        !std::path::Path::new(&pwned).exists(),
        "{pwned} was created"
    );
}

#[test]
fn safe_splices_shell_syntax() {
    let out = Test::new()
        .playbook(
            r#"
vars:
  script: "echo one; echo two"
steps:
  - id: spliced
    shell: "{{ script | safe }}"
  - id: quoted
    shell: "echo {{ script }}"
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.finish("spliced", "localhost")["stdout"], "one\ntwo\n");
    assert_eq!(
        out.finish("quoted", "localhost")["stdout"],
        "echo one; echo two\n"
    );
}

#[test]
fn playbook_dir_of_a_relative_playbook_path() {
    let out = Test::new()
        .relative_playbook()
        .playbook("steps:\n  - id: a\n    shell: echo {{ playbook_dir }}\n")
        .run();
    out.assert_code(0);
    let dir = out.path().canonicalize().expect("canonical tempdir");
    assert_eq!(
        out.finish("a", "localhost")["stdout"],
        format!("{}\n", dir.display()),
        "playbook_dir of `lifeboat run playbook.yaml`"
    );
}

// ---------------------------------------------------------------- dry run

const DRY: &str = r#"
steps:
  - id: create
    shell:
      cmd: mkdir -p {{ playbook_dir }}/tree/new && echo x > {{ playbook_dir }}/tree/new/f
      creates: "{{ playbook_dir }}/tree/new"
  - id: already
    command:
      cmd: touch {{ playbook_dir }}/tree/other
      creates: "{{ playbook_dir }}/tree/existing"
  - id: off
    when: false
    shell: touch {{ playbook_dir }}/tree/off
  - id: stamp
    shell: date > {{ playbook_dir }}/tree/stamp; echo stamped
    register: stamp
  - id: use-stamp
    needs: [stamp]
    shell: echo {{ stamp.stdout }} > {{ playbook_dir }}/tree/copy
  - id: look
    read_only: true
    command: cat {{ playbook_dir }}/tree/existing
    register: look
  - id: use-look
    needs: [look]
    shell: echo {{ look.stdout }} > {{ playbook_dir }}/tree/looked
"#;

fn dry_run(command: &str, args: &[&str]) {
    let t = Test::new()
        .playbook(DRY)
        .file("tree/existing", "content of existing\n")
        .file("tree/sub/deep", "deep\n")
        .command(command)
        .args(args);
    t.write_files();
    let tree = t.path().join("tree");
    std::fs::set_permissions(
        tree.join("sub/deep"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .ok();
    let before = snapshot(&tree);
    let out = t.run();
    out.assert_code(0);
    assert_eq!(
        snapshot(&out.join("tree")),
        before,
        "the tree changed\n{out:?}"
    );
    assert!(before.contains_key("existing"));
    assert_eq!(out.events_of("run_start")[0]["check"], true);
    assert_eq!(out.status("create", "localhost"), "would_change");
    assert_eq!(out.status("already", "localhost"), "ok");
    assert_eq!(out.status("off", "localhost"), "skipped");
    assert_eq!(out.status("stamp", "localhost"), "would_change");
    assert_eq!(out.status("use-stamp", "localhost"), "unknown");
    assert_eq!(
        out.finish("look", "localhost")["stdout"],
        "content of existing\n",
        "a read-only step really runs in a dry run"
    );
    assert_eq!(out.status("use-look", "localhost"), "would_change");
    assert!(
        out.msg("use-look", "localhost")
            .contains("content of existing"),
        "the read-only result is used: {out:?}"
    );
}

#[test]
fn check_changes_nothing() {
    dry_run("run", &["--check"]);
}

#[test]
fn plan_changes_nothing() {
    dry_run("plan", &[]);
}

// ---------------------------------------------------------------- located errors

/// A first step that would leave a marker, if anything ran.
const MARKER: &str = "steps:\n  - id: marker\n    shell: touch {{ playbook_dir }}/marker\n";

/// Runs a playbook that must be rejected: exit 1, nothing ran, and stderr has the
/// message and `playbook.yaml:line:column` for each (message, line, column).
#[track_caller]
fn rejected(playbook: &str, expected: &[(&str, usize, usize)]) -> support::Output {
    let out = Test::new().playbook(playbook).run();
    out.assert_code(1);
    assert!(!out.exists("marker"), "something ran\n{out:?}");
    assert!(
        !out.events.iter().any(|e| e["event"] == "node_start"),
        "{out:?}"
    );
    let file = out.join(support::PLAYBOOK).display().to_string();
    for (msg, line, col) in expected {
        assert!(out.stderr.contains(msg), "no `{msg}` in stderr\n{out:?}");
        let at = format!("{file}:{line}:{col}");
        assert!(out.stderr.contains(&at), "no `{at}` in stderr\n{out:?}");
    }
    out
}

#[test]
fn error_unknown_step_key_suggests() {
    let out = rejected(
        &format!(
            "{MARKER}  - id: a\n    shel: echo hi\n  - id: b\n    neeeds: [a]\n    shell: echo\n"
        ),
        &[
            ("unknown key or module `shel`", 5, 5),
            ("unknown key or module `neeeds`", 7, 5),
        ],
    );
    assert!(out.stderr.contains("did you mean `shell`?"), "{out:?}");
    assert!(out.stderr.contains("did you mean `needs`?"), "{out:?}");
}

#[test]
fn error_unknown_module() {
    rejected(
        &format!("{MARKER}  - id: a\n    frobnicate: {{x: 1}}\n"),
        &[("unknown key or module `frobnicate`", 5, 5)],
    );
}

#[test]
fn error_two_modules_in_one_step() {
    let out = rejected(
        &format!("{MARKER}  - id: a\n    shell: echo\n    command: echo\n"),
        &[("exactly one module", 6, 5)],
    );
    assert!(out.stderr.contains("`shell`") && out.stderr.contains("`command`"));
}

#[test]
fn error_needs_names_no_step() {
    rejected(
        &format!("{MARKER}  - id: a\n    shell: echo\n    needs: [markr]\n"),
        &[("step `a` needs `markr`, but no step has that id", 6, 13)],
    );
}

#[test]
fn error_duplicate_id() {
    let out = rejected(
        &format!("{MARKER}  - id: marker\n    shell: echo\n"),
        &[("duplicate step id `marker`", 4, 5)],
    );
    let file = out.join(support::PLAYBOOK).display().to_string();
    assert!(
        out.stderr.contains(&format!("{file}:2:5")),
        "first use\n{out:?}"
    );
}

#[test]
fn error_cycle_names_every_step() {
    let out = rejected(
        &format!(
            "{MARKER}  - id: a\n    shell: echo\n    needs: [c]\n  - id: b\n    shell: echo\n    needs: [a]\n  - id: c\n    shell: echo\n    needs: [b, marker]\n"
        ),
        &[("dependency cycle", 6, 13)],
    );
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("dependency cycle"))
        .unwrap_or_default();
    for s in ["`a`", "`b`", "`c`"] {
        assert!(line.contains(s), "{s} missing in: {line}");
    }
    assert!(
        !line.contains("`marker`"),
        "marker is not in the cycle: {line}"
    );
}

#[test]
fn error_template_syntax() {
    rejected(
        &format!("{MARKER}  - id: a\n    shell: echo {{{{ x \n"),
        &[("template syntax error", 5, 12)],
    );
}

#[test]
fn error_unknown_host_pattern() {
    rejected(
        &format!("{MARKER}  - id: a\n    hosts: dbservers\n    shell: echo\n"),
        &[("dbservers", 5, 12)],
    );
}

#[test]
fn error_wrong_argument_types_all_reported() {
    let out = rejected(
        &format!(
            "{MARKER}  - id: a\n    retries: \"x\"\n    timeout: banana\n    shell: {{cmd: [1, 2]}}\n"
        ),
        &[
            ("`retries` must be a whole number", 5, 14),
            ("`timeout` must be a duration", 6, 14),
            ("argument `cmd` of `shell` must be a string", 7, 18),
        ],
    );
    assert!(out.stderr.contains("3 errors"), "{out:?}");
}

#[test]
fn error_invalid_yaml() {
    rejected(
        &format!("{MARKER}  - id: a\n    shell: echo: [\n"),
        &[("invalid YAML", 5, 16)],
    );
}

#[test]
fn error_missing_playbook() {
    let out = Test::new().args(&["[TMP]/missing.yaml"]).run();
    out.assert_code(1);
    assert!(out.stderr.contains("missing.yaml"), "{out:?}");
    assert!(out.stderr.contains("cannot read"), "{out:?}");
    assert!(out.events.is_empty());
}

#[test]
fn validate_good_and_bad() {
    let out = Test::new()
        .command("validate")
        .playbook(&format!(
            "{MARKER}  - id: a\n    needs: [marker]\n    shell: echo\n"
        ))
        .run();
    out.assert_code(0);
    assert!(out.stdout.contains("ok (2 steps, 2 nodes)"), "{out:?}");
    assert!(!out.exists("marker"));

    let out = Test::new()
        .command("validate")
        .playbook(&format!(
            "{MARKER}  - id: a\n    needs: [nope]\n    shell: echo\n"
        ))
        .run();
    out.assert_code(1);
    let at = format!("{}:5:13", out.join(support::PLAYBOOK).display());
    assert!(out.stderr.contains(&at), "{out:?}");
    assert!(out.stderr.contains("`nope`"), "{out:?}");
}

// ---------------------------------------------------------------- interrupt

#[test]
fn interrupt_rolls_back_and_exits_130() {
    let mut running = Test::new()
        .playbook(
            r#"
steps:
  - id: slow
    shell: echo $$ > {{ playbook_dir }}/pid; touch {{ playbook_dir }}/started; sleep 30; echo never
    rollback:
      shell: touch {{ playbook_dir }}/rolled-back
  - id: later
    needs: [slow]
    shell: touch {{ playbook_dir }}/later
"#,
        )
        .spawn();
    running.wait_until(20, "the first step to start", |d| {
        d.join("started").exists() && d.join("pid").exists()
    });
    running.signal("INT");
    let out = running.wait(20);
    out.assert_code(130);
    assert!(out.exists("rolled-back"), "the rollback ran\n{out:?}");
    assert!(!out.exists("later"));
    assert_eq!(out.status("slow", "localhost"), "cancelled");
    assert_eq!(out.status("later", "localhost"), "not_run");
    assert_eq!(out.events_of("run_end")[0]["outcome"], "interrupted");
    let pid = out.read("pid").trim().to_string();
    support::wait_for(5, "the interrupted command to end", || process_gone(&pid));
}

// ---------------------------------------------------------------- events & junit

#[test]
fn events_and_junit_describe_every_node() {
    let out = Test::new()
        .playbook(
            r#"
name: report
steps:
  - id: ok
    shell: echo fine
  - id: skipped
    when: false
    shell: echo no
  - id: ignored
    shell: exit 2
    ignore_errors: true
  - id: broken
    needs: [ok, ignored]
    shell: echo bad >&2; exit 1
  - id: never
    needs: [broken]
    shell: echo never
"#,
        )
        .junit()
        .run();
    out.assert_code(2);
    let text = out.read("events.jsonl");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert!(v["event"].is_string(), "no event tag: {line}");
        assert!(v["ts"].is_string(), "no ts: {line}");
    }
    assert_eq!(out.events_of("run_start").len(), 1);
    assert_eq!(out.events_of("run_end").len(), 1);
    assert_eq!(
        out.events.first().map(|e| &e["event"]),
        Some(&"run_start".into())
    );
    assert_eq!(
        out.events.last().map(|e| &e["event"]),
        Some(&"run_end".into())
    );
    let nodes = out.events_of("run_start")[0]["nodes"]
        .as_u64()
        .expect("nodes");
    assert_eq!(nodes, 5);
    assert_eq!(out.events_of("node_finish").len(), 5);
    for (step, status) in [
        ("ok", "changed"),
        ("skipped", "skipped"),
        ("ignored", "ignored"),
        ("broken", "failed"),
        ("never", "not_run"),
    ] {
        assert_eq!(out.status(step, "localhost"), status, "{step}");
    }
    assert_eq!(out.events_of("run_end")[0]["exit_code"], 2);

    // JUnit: one test case per node, one failure.
    let xml = out.read("junit.xml");
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut cases, mut failures, mut names) = (0, 0, Vec::new());
    loop {
        match reader.read_event().expect("well-formed JUnit XML") {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                match e.name().as_ref() {
                    b"testcase" => {
                        cases += 1;
                        let name = e
                            .try_get_attribute("name")
                            .expect("attr")
                            .expect("name")
                            .unescape_value()
                            .expect("value")
                            .into_owned();
                        names.push(name);
                    }
                    b"failure" => failures += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    assert_eq!(cases, 5, "{names:?}\n{xml}");
    assert_eq!(failures, 1, "{xml}");
    assert!(names.iter().any(|n| n.contains("broken")), "{names:?}");
}

// ---------------------------------------------------------------- subcommands

#[test]
fn graph_as_dot() {
    let out = Test::new()
        .command("graph")
        .playbook("steps:\n  - id: first\n    shell: echo\n  - id: second\n    needs: [first]\n    shell: echo\n")
        .args(&["--format", "dot"])
        .run();
    out.assert_code(0);
    assert!(out.stdout.contains("digraph"), "{out:?}");
    assert!(out.stdout.contains("first @ localhost"), "{out:?}");
    assert!(out.stdout.contains("->"), "an edge: {out:?}");
}

#[test]
fn schema_is_json_with_steps() {
    let out = Test::new().command("schema").run();
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON schema");
    assert!(v["properties"]["steps"].is_object(), "{v}");
}

#[test]
fn modules_list_show_and_suggest() {
    let out = Test::new().command("modules").run();
    out.assert_code(0);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("shell ")),
        "{out:?}"
    );
    assert!(
        out.stdout.lines().any(|l| l.starts_with("command ")),
        "{out:?}"
    );

    let out = Test::new().command("modules").args(&["shell"]).run();
    out.assert_code(0);
    assert!(out.stdout.contains("ARGUMENTS"), "{out:?}");
    assert!(out.stdout.contains("EXAMPLE"), "{out:?}");
    assert!(out.stdout.contains("creates"), "{out:?}");

    let out = Test::new().command("modules").args(&["shel"]).run();
    out.assert_code(1);
    assert!(out.stderr.contains("did you mean `shell`?"), "{out:?}");
    let out = Test::new().command("modules").args(&["nope"]).run();
    out.assert_code(1);
    assert!(out.stderr.contains("no module named `nope`"), "{out:?}");
}

// ---------------------------------------------------------------- several hosts
//
// Every host is reached locally; `inventory_hostname` tells them apart.

const INVENTORY: &str = "[ctl]\nctl01 ansible_connection=local\nctl02 ansible_connection=local\n\n[cmp]\ncmp01 ansible_connection=local role=compute\n";

#[test]
fn needs_on_other_hosts_is_a_barrier() {
    let out = Test::new()
        .inventory(INVENTORY)
        .playbook(
            r#"
steps:
  - id: stop
    hosts: ctl
    shell: sleep {{ '0.4' if inventory_hostname == 'ctl02' else '0.1' }}
  - id: snapshot
    hosts: cmp
    needs: [stop]
    shell: echo snap
"#,
        )
        .run();
    out.assert_code(0);
    let start = out.interval("snapshot", "cmp01").0;
    for h in ["ctl01", "ctl02"] {
        let end = out.interval("stop", h).1;
        assert!(
            start >= end,
            "snapshot@cmp01 at {start}, stop@{h} ended {end}\n{out:?}"
        );
    }
    assert!(!out.has_node("snapshot", "ctl01"));
    assert!(!out.has_node("stop", "cmp01"));
}

/// The drill shape that once restored cmp01 before its backup finished: the sabotage
/// runs on ctl01 only, so the restore on cmp01 waits for it as a barrier, and must
/// also wait for what the sabotage needed on cmp01.
#[test]
fn needs_stays_transitive_on_each_host() {
    let playbook = r#"
hosts: all
steps:
  - id: backup
    shell: sleep {{ '0.5' if inventory_hostname == 'cmp01' else '0' }}; touch {{ inventory_hostname }}.done
  - id: sabotage
    hosts: ctl[0]
    needs: [backup]
    shell: echo break
  - id: restore
    needs: [sabotage]
    shell: test -e {{ inventory_hostname }}.done
"#;
    let out = Test::new()
        .command("graph")
        .inventory(INVENTORY)
        .playbook(playbook)
        .run();
    out.assert_code(0);
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("restore @ cmp01"))
        .unwrap_or_default();
    assert!(line.contains("sabotage@ctl01"), "{out:?}");
    assert!(line.contains("backup@cmp01"), "{out:?}");
    let out = Test::new().inventory(INVENTORY).playbook(playbook).run();
    out.assert_code(0);
    assert!(
        out.interval("restore", "cmp01").0 >= out.interval("backup", "cmp01").1,
        "{out:?}"
    );
}

#[test]
fn needs_at_all_waits_for_every_host_even_where_the_step_runs_here() {
    let playbook = r#"
hosts: all
steps:
  - id: stage
    shell: sleep {{ '0.5' if inventory_hostname == 'cmp01' else '0' }}
  - id: stop
    needs: [stage@all]
    shell: echo stop
  - id: local
    needs: [stage]
    shell: echo local
"#;
    let out = Test::new()
        .command("graph")
        .inventory(INVENTORY)
        .playbook(playbook)
        .run();
    out.assert_code(0);
    let line = |node: &str| {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(node))
            .unwrap_or_default()
            .to_string()
    };
    for h in ["ctl01", "ctl02", "cmp01"] {
        assert!(
            line("stop @ ctl01").contains(&format!("stage@{h}")),
            "{out:?}"
        );
    }
    assert!(!line("local @ ctl01").contains("stage@cmp01"), "{out:?}");
    let out = Test::new().inventory(INVENTORY).playbook(playbook).run();
    out.assert_code(0);
    assert!(
        out.interval("stop", "ctl01").0 >= out.interval("stage", "cmp01").1,
        "{out:?}"
    );
}

#[test]
fn a_need_scoped_other_than_all_is_a_located_error() {
    let out = Test::new()
        .command("validate")
        .playbook("steps:\n  - id: a\n    shell: 'true'\n  - id: b\n    needs: [a@ctl]\n    shell: 'true'\n")
        .run();
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("step `b` needs `a@ctl`: after `@` only `all` is known"),
        "{out:?}"
    );
    assert!(out.stderr.contains(":5:"), "{out:?}");
    assert!(out.stderr.contains("write `a@all`"), "{out:?}");
}

#[test]
fn needs_on_the_same_hosts_waits_per_host() {
    let out = Test::new()
        .inventory(INVENTORY)
        .playbook(
            r#"
hosts: ctl
steps:
  - id: a
    shell: sleep {{ '1' if inventory_hostname == 'ctl02' else '0' }}
  - id: b
    needs: [a]
    shell: echo b
"#,
        )
        .run();
    out.assert_code(0);
    for h in ["ctl01", "ctl02"] {
        assert!(
            out.interval("b", h).0 >= out.interval("a", h).1,
            "{h}\n{out:?}"
        );
    }
    assert!(
        out.interval("b", "ctl01").0 < out.interval("a", "ctl02").1,
        "b on ctl01 waits only for a on ctl01\n{out:?}"
    );
}

#[test]
fn run_once_is_one_node_and_its_result_is_everyones() {
    let out = Test::new()
        .inventory(INVENTORY)
        .playbook(
            r#"
hosts: ctl
steps:
  - id: pick
    run_once: true
    shell: echo {{ inventory_hostname }}
    register: picked
  - id: use
    needs: [pick]
    shell: echo {{ picked.stdout | trim }} > {{ playbook_dir }}/use-{{ inventory_hostname }}
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(
        out.events_of("node_finish")
            .iter()
            .filter(|e| e["step"] == "pick")
            .count(),
        1
    );
    assert_eq!(out.status("pick", "ctl01"), "changed");
    assert_eq!(out.read("use-ctl01").trim(), "ctl01");
    assert_eq!(out.read("use-ctl02").trim(), "ctl01");
}

#[test]
fn delegate_to_uses_the_delegates_connection_and_the_hosts_variables() {
    // cmp02 cannot be reached (nothing listens on port 1): the step only works if its
    // commands run through ctl01's connection.
    let inventory = format!(
        "{INVENTORY}cmp02 ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=1 role=unreachable\n"
    );
    let out = Test::new()
        .inventory(&inventory)
        .playbook(
            r#"
steps:
  - id: note
    hosts: cmp02
    delegate_to: ctl01
    timeout: 20s
    shell: echo {{ inventory_hostname }} {{ role }} > {{ playbook_dir }}/delegated
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.status("note", "cmp02"), "changed");
    assert_eq!(out.read("delegated").trim(), "cmp02 unreachable");
}

#[test]
fn limit_and_host_patterns() {
    const PB: &str = r#"
hosts: "ctl:cmp"
steps:
  - id: touch
    shell: touch {{ playbook_dir }}/{{ inventory_hostname }}
"#;
    let out = Test::new().inventory(INVENTORY).playbook(PB).run();
    out.assert_code(0);
    assert_eq!(out.events_of("node_finish").len(), 3, "{out:?}");
    assert!(out.exists("ctl01") && out.exists("ctl02") && out.exists("cmp01"));

    let out = Test::new()
        .inventory(INVENTORY)
        .playbook(PB)
        .args(&["--limit", "ctl:!ctl02"])
        .run();
    out.assert_code(0);
    assert!(out.exists("ctl01"), "{out:?}");
    assert!(!out.exists("ctl02") && !out.exists("cmp01"), "{out:?}");
    assert_eq!(out.events_of("node_finish").len(), 1, "{out:?}");
}

#[test]
fn a_failure_on_one_host_rolls_back_every_host() {
    let out = Test::new()
        .inventory(INVENTORY)
        .playbook(
            r#"
hosts: ctl
steps:
  - id: prepare
    shell: echo prepared
    rollback:
      shell: echo {{ inventory_hostname }} >> {{ playbook_dir }}/undo
  - id: apply
    needs: [prepare]
    shell: "{{ 'exit 1' if inventory_hostname == 'ctl02' else 'sleep 0.2' | safe }}"
"#,
        )
        .run();
    out.assert_code(2);
    assert_eq!(out.status("apply", "ctl02"), "failed");
    let mut undone: Vec<String> = out.read("undo").lines().map(str::to_string).collect();
    undone.sort();
    assert_eq!(undone, ["ctl01", "ctl02"], "{out:?}");
}

// ---------------------------------------------------------------- file modules
//
// A target tree under the temporary directory; a dry run must leave it byte for byte
// (and mode for mode) as it was, and a failed run's automatic rollback must put it back.

const FILE_STEPS: &str = r#"
steps:
  - id: mkdir
    file:
      path: "{{ playbook_dir }}/tree/new/dir"
      state: directory
  - id: mkdir-exists
    file:
      path: "{{ playbook_dir }}/tree/sub"
      state: directory
  - id: overwrite
    copy:
      content: "new content\n"
      dest: "{{ playbook_dir }}/tree/conf"
      mode: "0600"
  - id: same
    copy:
      content: "same\n"
      dest: "{{ playbook_dir }}/tree/same"
  - id: render
    template:
      src: motd.j2
      dest: "{{ playbook_dir }}/tree/motd"
  - id: remove
    file:
      path: "{{ playbook_dir }}/tree/sub/deep"
      state: absent
  - id: link
    file:
      path: "{{ playbook_dir }}/tree/ln"
      state: link
      src: /etc
"#;

fn file_tree_test(playbook: &str) -> (Test, std::collections::BTreeMap<String, (u32, Vec<u8>)>) {
    let t = Test::new()
        .playbook(playbook)
        .file("motd.j2", "hello {{ inventory_hostname }}\n")
        .file("tree/conf", "old content\n")
        .file("tree/same", "same\n")
        .file("tree/sub/deep", "deep\n");
    t.write_files();
    let tree = t.path().join("tree");
    for (p, mode) in [("conf", 0o640), ("sub/deep", 0o604), ("sub", 0o750)] {
        std::fs::set_permissions(
            tree.join(p),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .expect("chmod");
    }
    let before = snapshot(&tree);
    (t, before)
}

#[test]
fn dry_run_of_file_modules_changes_nothing() {
    for command in ["run", "plan"] {
        let (t, before) = file_tree_test(FILE_STEPS);
        let t = t.command(command);
        let out = if command == "run" {
            t.args(&["--check"]).run()
        } else {
            t.run()
        };
        out.assert_code(0);
        assert_eq!(
            snapshot(&out.join("tree")),
            before,
            "{command}: the tree changed\n{out:?}"
        );
        for (step, status) in [
            ("mkdir", "would_change"),
            ("mkdir-exists", "ok"),
            ("overwrite", "would_change"),
            ("same", "ok"),
            ("render", "would_change"),
            ("remove", "would_change"),
            ("link", "would_change"),
        ] {
            assert_eq!(
                out.status(step, "localhost"),
                status,
                "{command} {step}\n{out:?}"
            );
        }
    }
}

#[test]
fn rollback_of_file_modules_restores_the_tree() {
    let pb = format!(
        "{FILE_STEPS}  - id: fail\n    needs: [mkdir, mkdir-exists, overwrite, same, render, remove, link]\n    shell: exit 1\n"
    );
    let (t, before) = file_tree_test(&pb);
    let out = t.run();
    out.assert_code(2);
    for step in ["mkdir", "overwrite", "render", "remove", "link"] {
        assert_eq!(out.status(step, "localhost"), "changed", "{step}\n{out:?}");
        assert_eq!(
            out.rollback_status(step, "localhost"),
            "done",
            "{step}\n{out:?}"
        );
    }
    assert_eq!(
        snapshot(&out.join("tree")),
        before,
        "the rollback left a difference\n{out:?}"
    );
}

#[test]
fn file_modules_really_change_the_tree() {
    let (t, _) = file_tree_test(FILE_STEPS);
    let out = t.run();
    out.assert_code(0);
    assert!(out.join("tree/new/dir").is_dir());
    assert_eq!(out.read("tree/conf"), "new content\n");
    assert_eq!(out.read("tree/motd"), "hello localhost\n");
    assert!(!out.exists("tree/sub/deep"));
    assert_eq!(
        std::fs::read_link(out.join("tree/ln")).expect("a link"),
        std::path::PathBuf::from("/etc")
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(out.join("tree/conf"))
            .expect("stat")
            .permissions(),
    );
    assert_eq!(mode & 0o7777, 0o600);
}

// ---------------------------------------------------------------- more semantics

#[test]
fn secrets_are_masked_and_no_log_hides_output() {
    let out = Test::new()
        .playbook(
            r#"
secrets:
  db_password:
    value: s3cr3t-Pa55
steps:
  - id: use
    shell: echo "pw={{ db_password }}" > {{ playbook_dir }}/pw; echo "pw={{ db_password }}"
  - id: quiet
    no_log: true
    shell: echo hidden-output-xyz; exit 1
"#,
        )
        .junit()
        .run();
    out.assert_code(2);
    assert_eq!(
        out.read("pw").trim(),
        "pw=s3cr3t-Pa55",
        "the command got the value"
    );
    let events = out.read("events.jsonl");
    let junit = out.read("junit.xml");
    for (what, text) in [
        ("events", events.as_str()),
        ("stdout", out.stdout.as_str()),
        ("stderr", out.stderr.as_str()),
        ("junit", junit.as_str()),
    ] {
        assert!(!text.contains("s3cr3t-Pa55"), "secret in {what}:\n{text}");
        assert!(
            !text.contains("hidden-output-xyz"),
            "no_log output in {what}:\n{text}"
        );
    }
    assert!(
        out.finish("use", "localhost")["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("********")
    );
}

#[test]
fn rollback_actions_see_the_steps_result() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: create
    shell: mktemp -d {{ playbook_dir }}/work.XXXXXX
    rollback:
      - shell: rmdir {{ result.stdout | trim }}
      - shell: echo "removed {{ result.stdout | trim }}" >> {{ playbook_dir }}/undo
  - id: fail
    needs: [create]
    shell: exit 1
"#,
        )
        .run();
    out.assert_code(2);
    let created = out.finish("create", "localhost")["stdout"]
        .as_str()
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(created.contains("work."), "{out:?}");
    assert!(
        !std::path::Path::new(&created).exists(),
        "{created} still exists"
    );
    assert_eq!(out.read("undo").trim(), format!("removed {created}"));
}

#[test]
fn skipped_tags_are_looked_through() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: first
    shell: sleep 0.3
  - id: middle
    needs: [first]
    tags: [slow]
    shell: touch {{ playbook_dir }}/middle
  - id: last
    needs: [middle]
    shell: echo last
"#,
        )
        .args(&["--skip-tags", "slow"])
        .run();
    out.assert_code(0);
    assert!(!out.exists("middle"));
    assert!(
        out.interval("last", "localhost").0 >= out.interval("first", "localhost").1,
        "last waits for what middle waited for\n{out:?}"
    );
}

#[test]
fn timeout_applies_to_each_attempt() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: hang
    timeout: 0.3s
    retries: 1
    retry_delay: 0.1s
    shell: echo x >> {{ playbook_dir }}/tries; sleep 30; echo never
"#,
        )
        .run();
    out.assert_code(2);
    assert_eq!(out.finish("hang", "localhost")["attempts"], 2);
    assert!(
        out.msg("hang", "localhost").contains("timed out"),
        "{out:?}"
    );
    assert_eq!(out.read("tries"), "x\nx\n");
}

#[test]
fn dry_run_when_on_an_unknown_result_is_unknown() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: probe
    shell: echo maybe
    register: probe
  - id: act
    needs: [probe]
    when: probe.stdout == 'maybe'
    shell: touch {{ playbook_dir }}/act
  - id: after
    needs: [act]
    shell: touch {{ playbook_dir }}/after
"#,
        )
        .args(&["--check"])
        .run();
    out.assert_code(0);
    assert_eq!(out.status("probe", "localhost"), "would_change");
    assert_eq!(out.status("act", "localhost"), "unknown");
    assert_eq!(out.status("after", "localhost"), "would_change");
    assert!(!out.exists("act") && !out.exists("after"));
}

#[test]
fn extra_vars_from_a_file() {
    let out = Test::new()
        .file("extra.yml", "colour: purple\ncount: 3\n")
        .playbook(
            "vars:\n  colour: grey\nsteps:\n  - id: a\n    shell: echo {{ colour }} {{ count + 1 }} > {{ playbook_dir }}/out\n",
        )
        .args(&["-e", "@[TMP]/extra.yml"])
        .run();
    out.assert_code(0);
    assert_eq!(out.read("out").trim(), "purple 4");
}

#[test]
fn when_false_registers_a_skipped_result() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: maybe
    when: false
    shell: echo no
    register: r
  - id: show
    needs: [maybe]
    shell: echo {{ r.skipped }} {{ r.changed }} > {{ playbook_dir }}/out
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.read("out").trim(), "True False");
}

#[test]
fn import_errors_are_located() {
    let out = Test::new()
        .file("loop.yaml", "steps:\n  - import: playbook.yaml\n")
        .playbook(&format!(
            "{MARKER}  - import: loop.yaml\n  - import: missing.yaml\n"
        ))
        .run();
    out.assert_code(1);
    assert!(!out.exists("marker"));
    let file = out.join(support::PLAYBOOK).display().to_string();
    assert!(out.stderr.contains("imports itself"), "{out:?}");
    assert!(out.stderr.contains("missing.yaml"), "{out:?}");
    assert!(out.stderr.contains(&format!("{file}:5:13")), "{out:?}");
}

#[test]
fn second_interrupt_abandons_the_rollback() {
    let mut running = Test::new()
        .playbook(
            r#"
steps:
  - id: slow
    shell: touch {{ playbook_dir }}/started; sleep 30; echo never
    rollback:
      shell: echo $$ > {{ playbook_dir }}/rb-pid; sleep 30; echo never
"#,
        )
        .spawn();
    running.wait_until(20, "the step to start", |d| d.join("started").exists());
    running.signal("INT");
    running.wait_until(20, "the rollback to start", |d| {
        std::fs::read_to_string(d.join("rb-pid")).is_ok_and(|s| s.ends_with('\n'))
    });
    running.signal("INT");
    let out = running.wait(20);
    out.assert_code(130);
    let left = out.left_undone();
    assert!(left.iter().any(|(s, _, _)| s == "slow"), "{out:?}");
    let pid = out.read("rb-pid").trim().to_string();
    support::wait_for(5, "the abandoned rollback command to end", || {
        process_gone(&pid)
    });
}

#[test]
fn a_failed_loop_item_stops_the_loop_and_is_in_the_results() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: each
    loop: [1, 2, 3]
    shell: echo {{ item }} >> {{ playbook_dir }}/items; echo out-{{ item }}; [ {{ item }} -ne 2 ]
    register: r
    ignore_errors: true
  - id: show
    needs: [each]
    shell: >
      echo "{{ r.failed }} {{ r.results | length }} {{ r.results[-1].item }}
      {{ r.results[-1].failed }} {{ r.results[-1].rc }} {{ r.results[-1].stdout | trim }}"
      > {{ playbook_dir }}/show
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.status("each", "localhost"), "ignored");
    assert!(
        out.msg("each", "localhost").starts_with("item 2 (2): "),
        "the message names the item that failed: {}",
        out.msg("each", "localhost")
    );
    assert_eq!(
        out.read("items"),
        "1\n2\n",
        "the first failed item stops the loop"
    );
    assert_eq!(
        out.read("show").trim(),
        "True 2 2 True 1 out-2",
        "results has one entry per item run, the failed one included\n{out:?}"
    );
}

#[test]
fn forks_one_runs_one_host_at_a_time() {
    let out = Test::new()
        .inventory(INVENTORY)
        .playbook("hosts: ctl\nsteps:\n  - id: a\n    shell: sleep 0.3\n")
        .args(&["--forks", "1"])
        .run();
    out.assert_code(0);
    let (one, two) = (out.interval("a", "ctl01"), out.interval("a", "ctl02"));
    assert!(!overlap(one, two), "{one:?} {two:?}\n{out:?}");

    let out = Test::new()
        .inventory(INVENTORY)
        .playbook("hosts: ctl\nsteps:\n  - id: a\n    shell: sleep 0.5\n")
        .run();
    out.assert_code(0);
    let (one, two) = (out.interval("a", "ctl01"), out.interval("a", "ctl02"));
    assert!(
        overlap(one, two),
        "hosts run in parallel: {one:?} {two:?}\n{out:?}"
    );
}

#[test]
fn hostvars_show_other_hosts_facts() {
    let out = Test::new()
        .inventory(INVENTORY)
        .playbook(
            r#"
steps:
  - id: fact
    hosts: ctl
    set_fact:
      token: "t-{{ inventory_hostname }}"
  - id: collect
    hosts: cmp
    needs: [fact]
    shell: echo {{ hostvars['ctl01'].token }} {{ hostvars['ctl02'].token }} {{ groups['ctl'] | join(',') }} > {{ playbook_dir }}/collected
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.read("collected").trim(), "t-ctl01 t-ctl02 ctl01,ctl02");
}

#[test]
fn rollback_of_a_delegated_step_uses_the_delegate() {
    let inventory =
        format!("{INVENTORY}cmp02 ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=1\n");
    let out = Test::new()
        .inventory(&inventory)
        .playbook(
            r#"
steps:
  - id: note
    hosts: cmp02
    delegate_to: ctl01
    timeout: 20s
    shell: echo done
    rollback:
      shell: echo "{{ inventory_hostname }}" >> {{ playbook_dir }}/undo
  - id: fail
    hosts: ctl01
    needs: [note]
    shell: exit 1
"#,
        )
        .run();
    out.assert_code(2);
    assert_eq!(out.rollback_status("note", "cmp02"), "done", "{out:?}");
    assert_eq!(out.read("undo").trim(), "cmp02");
}

#[test]
fn group_names_and_run_once_under_limit() {
    let out = Test::new()
        .inventory(INVENTORY)
        .playbook(
            r#"
steps:
  - id: ctl-only
    when: "'ctl' in group_names"
    shell: touch {{ playbook_dir }}/ctl-only-{{ inventory_hostname }}
  - id: once
    hosts: ctl
    run_once: true
    shell: touch {{ playbook_dir }}/once-{{ inventory_hostname }}
"#,
        )
        .args(&["--limit", "ctl02:cmp01"])
        .run();
    out.assert_code(0);
    assert_eq!(out.status("ctl-only", "cmp01"), "skipped");
    assert!(out.exists("ctl-only-ctl02"), "{out:?}");
    assert!(!out.exists("ctl-only-ctl01"), "ctl01 is not in the limit");
    assert!(
        out.exists("once-ctl02"),
        "run_once takes the first host of the limit\n{out:?}"
    );
    assert!(!out.exists("once-ctl01"));
}

#[test]
fn a_failure_behind_a_barrier_stops_the_other_group() {
    let out = Test::new()
        .inventory(INVENTORY)
        .playbook(
            r#"
steps:
  - id: stop
    hosts: ctl
    shell: "{{ 'exit 1' if inventory_hostname == 'ctl02' else 'true' | safe }}"
  - id: snapshot
    hosts: cmp
    needs: [stop]
    shell: touch {{ playbook_dir }}/snapshot
"#,
        )
        .run();
    out.assert_code(2);
    assert_eq!(out.status("stop", "ctl02"), "failed");
    assert_eq!(out.status("snapshot", "cmp01"), "not_run");
    assert!(!out.exists("snapshot"));
}

#[test]
fn interrupt_with_no_rollback_leaves_everything() {
    let mut running = Test::new()
        .playbook(
            r#"
steps:
  - id: slow
    shell: touch {{ playbook_dir }}/started; sleep 30; echo never
    rollback:
      shell: touch {{ playbook_dir }}/rolled-back
"#,
        )
        .args(&["--no-rollback"])
        .spawn();
    running.wait_until(20, "the step to start", |d| d.join("started").exists());
    running.signal("INT");
    let out = running.wait(20);
    out.assert_code(130);
    assert!(!out.exists("rolled-back"), "{out:?}");
    let left = out.left_undone();
    assert!(left.iter().any(|(s, _, _)| s == "slow"), "{out:?}");
}

// ---------------------------------------------------------------- module defaults

/// `module_defaults`: the step's own argument wins, then the module's entry, then an
/// import's over its importer's; rollback actions get them too.
#[test]
fn module_defaults_fill_arguments_the_step_does_not_give() {
    let out = Test::new()
        .file("a/.keep", "")
        .file("b/.keep", "")
        .file("c/.keep", "")
        .file(
            "sub.yaml",
            "steps:\n  - id: where\n    shell: basename \"$PWD\" >> {{ playbook_dir }}/log\n",
        )
        .playbook(
            r#"
module_defaults:
  shell:
    chdir: "{{ playbook_dir }}/{{ dir }}"
vars:
  dir: a
steps:
  - id: default
    shell: basename "$PWD" >> {{ playbook_dir }}/log
  - id: own
    needs: default
    shell: {cmd: 'basename "$PWD" >> {{ playbook_dir }}/log', chdir: "{{ playbook_dir }}/c"}
  - import: sub.yaml
    id: sub
    needs: own
    module_defaults: {shell: {chdir: "{{ playbook_dir }}/b"}}
  - id: fail
    needs: sub
    shell: exit 3
    rollback:
      shell: basename "$PWD" > {{ playbook_dir }}/undone
"#,
        )
        .run();
    out.assert_code(2);
    assert_eq!(out.read("log"), "a\nc\nb\n");
    assert_eq!(out.read("undone"), "a\n");
}

/// A dry run with -v shows the merged arguments; a secret one given by a group default
/// is masked there as when the step writes it.
#[test]
fn plan_shows_merged_arguments_with_secret_defaults_masked() {
    let out = Test::new()
        .playbook(
            r#"
module_defaults:
  group/mysql:
    login_user: backup
    login_password: "{{ db_pw }}"
steps:
  - id: wipe
    mysql_query: DELETE FROM t
"#,
        )
        .args(&["--check", "-v", "-e", "db_pw=Zq9SecretPw"])
        .run();
    out.assert_code(0);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("args: ") && text.contains("\"login_user\":\"backup\""),
        "{text}"
    );
    assert!(text.contains("\"login_password\":\"********\""), "{text}");
    assert!(!text.contains("Zq9SecretPw"), "{text}");
}
