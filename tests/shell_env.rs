//! Environment variables of `command` and `shell` steps: values reach the command as
//! data, and a name that is not an identifier is refused before anything runs.

mod support;

use support::Test;

#[test]
fn env_values_reach_shell_and_command_as_data() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: sh
    shell:
      cmd: printf '%s|%s' "$GREETING" "$TRICKY" > {{ playbook_dir }}/sh
      env: { GREETING: hello, TRICKY: "it's $(touch {{ playbook_dir }}/pwned); `id`" }
  - id: argv
    command:
      argv: [sh, -c, 'printf %s "$ONLY" > "$0"', "{{ playbook_dir }}/argv"]
      env: { ONLY: "a b" }
"#,
        )
        .run();
    out.assert_code(0);
    let tmp = out.path().display().to_string();
    assert_eq!(
        out.read("sh"),
        format!("hello|it's $(touch {tmp}/pwned); `id`")
    );
    assert_eq!(out.read("argv"), "a b");
    assert!(!out.exists("pwned"), "an env value ran as code");
}

#[test]
fn an_env_name_that_is_not_an_identifier_is_refused_at_load() {
    let out = Test::new()
        .playbook("steps:\n  - id: a\n    shell:\n      cmd: touch {{ playbook_dir }}/ran\n      env: { \"A;touch x\": 1 }\n")
        .run();
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("`A;touch x` is not a valid environment variable name"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("playbook.yaml:5:"), "{}", out.stderr);
    assert!(!out.exists("ran"));
}

/// A real run wraps `command` and `shell` in the exactly-once marker script: the command
/// still starts as under `sh -c`, with no positional parameters and none of the
/// wrapper's own variables, and its exit status and output come back as they were.
#[test]
fn the_completion_wrapper_leaves_no_trace_in_the_command() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: clean
    shell: printf '[%s][%s][%s][%s]' "$#" "${1-}" "${__lb_d-unset}" "${__lb_rc-unset}" > {{ playbook_dir }}/seen
  - id: status
    needs: clean
    shell: echo out; echo err >&2; exit 3
    register: r
    ignore_errors: true
  - id: check
    needs: status
    assert:
      that: r.rc == 3 and (r.stdout | trim) == 'out' and (r.stderr | trim) == 'err'
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.read("seen"), "[0][][unset][unset]");
}

/// A working directory that cannot be entered stops the command before anything runs,
/// also when the step sets environment variables (which come between the two).
#[test]
fn a_missing_working_directory_runs_nothing() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: moved
    command:
      argv: [touch, "{{ playbook_dir }}/ran"]
      chdir: /nonexistent-lifeboat-dir
      env: { A: "1" }
"#,
        )
        .run();
    out.assert_code(2);
    assert_eq!(out.status("moved", "localhost"), "failed");
    assert!(!out.exists("ran"), "the command ran in the wrong directory");
}
