//! Secrets everywhere: a secret from each source (environment, file, command) and
//! `no_log` values go through every place a value can go (variables, command lines,
//! standard output and error, output streamed in two pieces, registered data, facts,
//! loop items, diffs, a failing step's error, rollbacks, `debug`, assert messages, a
//! drill's verifications). Then every byte of every output (console with `-v`, the
//! events file, JUnit, the journal and everything else in the state directory, drill
//! reports in Markdown, HTML and JSON) is searched for each secret, its shell-quoted
//! and JSON-escaped forms, and a marker word inside it that a partial leak would show.

#[path = "support/binary.rs"]
mod binary;

use std::path::{Path, PathBuf};

use binary::Lifeboat;
use serde_json::Value;

/// Marker words: each secret contains one, and no output may ever contain one.
const ENV_CORE: &str = "envC0reZ9";
const FILE_CORE: &str = "fileC0reZ9";
const CMD_CORE: &str = "cmdC0reZ9";
const NOLOG_CORE: &str = "nologC0reZ9";

/// The environment secret: quotes, `;`, `$()` (a canary if it ever ran) and a space.
fn env_secret(dir: &Path) -> String {
    format!("{ENV_CORE}'sq;$(touch {}/pwned) x", dir.display())
}
/// The file secret: a tab, unicode and a backslash (the file's newline is dropped).
const FILE_SECRET: &str = "fileC0reZ9\tünï\\code";
/// What the command secret's command prints: double quotes and a backslash.
const CMD_SECRET: &str = "cmdC0reZ9 \"dq\" back\\slash";

const PLAYBOOK: &str = r#"
name: secrets-everywhere
secrets:
  env_pw: { env: LB_TEST_SECRET }
  file_pw: { file: pw.txt }
  cmd_pw: { command: 'printf "%s\n" "cmdC0reZ9 \"dq\" back\\slash"' }
vars:
  dsn: "db://admin:{{ env_pw }}@db/{{ file_pw }}"
  out: "{{ playbook_dir }}/out"
steps:
  - id: setup
    shell: mkdir -p {{ out }}

  - id: cmdline
    needs: setup
    command: printf '%s\n' {{ env_pw }} {{ file_pw }} {{ cmd_pw }}

  - id: streams
    needs: setup
    shell: |
      printf '%s\n' {{ dsn }}
      printf '%s\n' {{ cmd_pw }} >&2
      printf '%s' {{ env_pw }} > {{ out }}/env-as-received

  - id: split-stdout
    needs: setup
    shell: >-
      printf '%s' {{ env_pw }} | head -c 6;
      i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done;
      printf '%s\n' {{ env_pw }} | tail -c +7

  - id: split-stderr
    needs: setup
    shell: >-
      { printf '%s' {{ file_pw }} | head -c 6;
      i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done;
      printf '%s\n' {{ file_pw }} | tail -c +7; } >&2

  - id: registered
    needs: setup
    shell: printf '%s' {{ cmd_pw }}
    register: reg

  - id: reuse
    needs: registered
    debug: "got {{ reg.stdout }} and {{ dsn }}"

  - id: reuse-var
    needs: registered
    debug: { var: reg }

  - id: facts
    needs: setup
    set_fact: { token: "{{ file_pw }}" }

  - id: fact-used
    needs: facts
    debug: { var: token }

  - id: looped
    needs: setup
    shell: printf '%s\n' {{ item }}
    loop: ["{{ env_pw }}", "{{ cmd_pw }}", "{{ file_pw }}"]

  - id: conf-with-diff
    needs: setup
    copy: { content: "pw={{ file_pw }}\n", dest: "{{ out }}/conf" }
    rollback: none

  - id: ignored-failure
    needs: setup
    shell: printf '%s\n' {{ env_pw }} >&2; exit 4
    ignore_errors: true

  - id: missing-program
    needs: setup
    command: /nonexistent/{{ cmd_pw }}
    ignore_errors: true

  - id: quiet
    needs: setup
    no_log: true
    shell: printf '%s\n' nologC0reZ9-out; printf '%s\n' nologC0reZ9-err >&2
    register: quiet
    rollback:
      shell: printf '%s\n' nologC0reZ9-undo >&2; exit 6

  - id: quiet-assert
    needs: setup
    no_log: true
    ignore_errors: true
    assert: { that: ["false"], fail_msg: "nologC0reZ9-assert" }

  - id: quiet-debug
    needs: setup
    no_log: true
    debug: "nologC0reZ9-debug"

  - id: undone
    needs: setup
    shell: "true"
    rollback:
      shell: printf 'undo %s\n' {{ cmd_pw }} {{ env_pw }}

  - id: undo-fails
    needs: setup
    shell: "true"
    rollback:
      shell: printf '%s\n' {{ file_pw }} >&2; exit 5

  - id: final-check
    needs: [cmdline, streams, split-stdout, split-stderr, reuse, reuse-var, fact-used, looped,
            conf-with-diff, ignored-failure, missing-program, quiet, quiet-assert, quiet-debug,
            undone, undo-fails]
    assert:
      that: ["reg.stdout == 'something else'"]
      fail_msg: "expected {{ env_pw }} / {{ file_pw }} / {{ cmd_pw }}"
"#;

const DRILL: &str = r#"
name: secret-drill
secrets:
  env_pw: { env: LB_TEST_SECRET }
  file_pw: { file: pw.txt }
  cmd_pw: { command: 'printf "%s\n" "cmdC0reZ9 \"dq\" back\\slash"' }
phases:
  backup:
    - id: backup
      shell: printf '%s\n' {{ env_pw }}
  sabotage:
    - id: break
      needs: backup
      shell: "true"
      rollback: none
  restore:
    - id: restore
      needs: break
      shell: printf '%s\n' {{ file_pw }}
  verify:
    - id: check
      needs: restore
      assert:
        that: ["false"]
        fail_msg: "restored {{ cmd_pw }} {{ env_pw }} {{ file_pw }}"
    - id: check-quiet
      needs: restore
      no_log: true
      assert: { that: ["false"], fail_msg: "nologC0reZ9-drill" }
"#;

/// One output: what it is, and its bytes.
struct Output {
    what: String,
    bytes: Vec<u8>,
}

/// Runs the binary in `dir` with the secret in its environment and its own state dir.
fn lifeboat(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Lifeboat::new(dir)
        .args(args)
        .env("LB_TEST_SECRET", env_secret(dir))
        .run();
    (out.code, out.stdout, out.stderr)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read the state dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The forms a secret takes in text: as is, shell-quoted, JSON-escaped (with and
/// without quotes), and JSON-escaped shell-quoted.
fn forms(secret: &str) -> Vec<String> {
    let quoted = lifeboat::connection::quote(secret);
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json_inner = json[1..json.len() - 1].to_string();
    let json_quoted = serde_json::to_string(&quoted).unwrap_or_default();
    vec![secret.to_string(), quoted, json, json_inner, json_quoted]
}

/// Asserts that no output holds any of the needles, naming the output and the place.
fn assert_nowhere(outputs: &[Output], needles: &[(String, String)]) {
    for o in outputs {
        let text = String::from_utf8_lossy(&o.bytes);
        for (name, needle) in needles {
            if let Some(at) = text.find(needle.as_str()) {
                let from = text[..at]
                    .char_indices()
                    .rev()
                    .nth(80)
                    .map_or(0, |(i, _)| i);
                panic!(
                    "{name} leaked into {} at byte {at}: ...{}...",
                    o.what,
                    &text[from..(at + needle.len()).min(text.len())]
                );
            }
        }
    }
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("the events file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event line is JSON"))
        .collect()
}

#[test]
fn no_secret_reaches_any_output() {
    let tmp = tempfile::Builder::new()
        .prefix("lifeboat-secrets")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("pw.txt"), format!("{FILE_SECRET}\n")).expect("write pw.txt");
    std::fs::write(dir.join("playbook.yml"), PLAYBOOK).expect("write the playbook");
    std::fs::write(dir.join("drill.yml"), DRILL).expect("write the drill");

    let (code, stdout, stderr) = lifeboat(
        dir,
        &[
            "run",
            "playbook.yml",
            "-v",
            "--diff",
            "--events",
            "events.jsonl",
            "--junit",
            "junit.xml",
        ],
    );
    let run_output = format!("exit {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    // A rollback failed (the secret in its error): exit 3.
    assert_eq!(code, 3, "{run_output}");

    // The values really reached the commands, byte for byte.
    let env = env_secret(dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("out/env-as-received")).expect("env-as-received"),
        env,
        "{run_output}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/conf")).expect("conf"),
        format!("pw={FILE_SECRET}\n")
    );
    assert!(!dir.join("pwned").exists(), "a secret ran as code");

    // ... and were masked where they showed.
    let evs = events(&dir.join("events.jsonl"));
    let finish = |step: &str| {
        evs.iter()
            .find(|e| e["event"] == "node_finish" && e["step"] == step)
            .unwrap_or_else(|| panic!("no node_finish for {step}\n{run_output}"))
            .clone()
    };
    assert_eq!(
        finish("cmdline")["stdout"],
        "********\n********\n********\n",
        "{run_output}"
    );
    assert_eq!(finish("streams")["stderr"], "********\n");
    assert_eq!(finish("split-stdout")["stdout"], "********\n");
    assert_eq!(finish("split-stderr")["stderr"], "********\n");
    assert_eq!(finish("quiet")["msg"], Value::Null);
    assert!(
        finish("final-check")["msg"]
            .as_str()
            .is_some_and(|m| m.contains("expected ******** / ******** / ********")),
        "{run_output}"
    );
    // Streamed output (-v): a secret written in two pieces is still masked whole.
    for (step, stream) in [("split-stdout", "stdout"), ("split-stderr", "stderr")] {
        let streamed: String = evs
            .iter()
            .filter(|e| e["event"] == "node_output" && e["step"] == step)
            .inspect(|e| assert_eq!(e["stream"], stream))
            .filter_map(|e| e["text"].as_str())
            .collect();
        assert_eq!(streamed, "********\n", "{step} streamed\n{run_output}");
        assert!(
            stdout.contains(&format!("localhost | {step} | ********")),
            "{run_output}"
        );
    }
    // The rollback ran (masked command in its message), and its failure is reported.
    let rollback = |step: &str| {
        evs.iter()
            .find(|e| e["event"] == "rollback_node" && e["step"] == step)
            .unwrap_or_else(|| panic!("no rollback_node for {step}\n{run_output}"))
            .clone()
    };
    assert_eq!(rollback("undone")["status"], "done");
    assert!(
        rollback("undone")["msg"]
            .as_str()
            .is_some_and(|m| m.contains("'********' '********'")),
        "{run_output}"
    );
    assert_eq!(rollback("undo-fails")["status"], "failed");
    assert_eq!(rollback("quiet")["status"], "failed");

    // The drill, with reports in every format.
    let (code, dstdout, dstderr) = lifeboat(
        dir,
        &[
            "drill",
            "drill.yml",
            "--report",
            "drill.md",
            "--report",
            "drill.html",
            "--report",
            "drill.json",
            "-v",
            "--events",
            "drill-events.jsonl",
            "--junit",
            "drill-junit.xml",
        ],
    );
    let drill_output = format!("exit {code}\n--- stdout\n{dstdout}\n--- stderr\n{dstderr}");
    assert_eq!(code, 4, "the verifications fail: {drill_output}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("drill.json")).expect("drill.json"))
            .expect("the JSON report");
    let msgs: Vec<&str> = report["verifications"]
        .as_array()
        .map(|v| v.iter().filter_map(|x| x["msg"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        msgs.iter()
            .any(|m| m.contains("restored ******** ******** ********")),
        "{msgs:?}"
    );
    assert!(msgs.contains(&"(hidden by no_log)"), "{msgs:?}");

    // Every output, every byte.
    let mut outputs = vec![
        Output {
            what: "the console (stdout) of the run".into(),
            bytes: stdout.into_bytes(),
        },
        Output {
            what: "stderr of the run".into(),
            bytes: stderr.into_bytes(),
        },
        Output {
            what: "the console (stdout) of the drill".into(),
            bytes: dstdout.into_bytes(),
        },
        Output {
            what: "stderr of the drill".into(),
            bytes: dstderr.into_bytes(),
        },
    ];
    for name in [
        "events.jsonl",
        "junit.xml",
        "drill.md",
        "drill.html",
        "drill.json",
        "drill-events.jsonl",
        "drill-junit.xml",
    ] {
        outputs.push(Output {
            what: name.into(),
            bytes: std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")),
        });
    }
    let state_files = files_under(&dir.join("state"));
    let journals = state_files
        .iter()
        .filter(|p| p.ends_with("journal.jsonl"))
        .count();
    assert_eq!(journals, 2, "a journal per run: {state_files:?}");
    let mut journal_outputs = Vec::new();
    for p in &state_files {
        journal_outputs.push(Output {
            what: format!("the state dir's {}", p.display()),
            bytes: std::fs::read(p).expect("read a state file"),
        });
    }
    let mut needles: Vec<(String, String)> = Vec::new();
    for (name, secret) in [
        ("the env secret", env.as_str()),
        ("the file secret", FILE_SECRET),
        ("the command secret", CMD_SECRET),
    ] {
        for f in forms(secret) {
            needles.push((format!("{name} (as {f:?})"), f));
        }
    }
    for core in [ENV_CORE, FILE_CORE, CMD_CORE] {
        needles.push((format!("the marker {core}"), core.to_string()));
    }
    let nolog = vec![("a no_log value".to_string(), NOLOG_CORE.to_string())];
    assert_nowhere(&outputs, &needles);
    assert_nowhere(&outputs, &nolog);
    assert_nowhere(&journal_outputs, &needles);
    assert_nowhere(&journal_outputs, &nolog);
    assert!(dir.join("state").is_dir());
}

#[test]
fn a_secret_source_that_fails_names_the_secret_and_runs_nothing() {
    let tmp = tempfile::Builder::new()
        .prefix("lifeboat-secrets")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("playbook.yml"),
        "secrets:\n  a: { env: LB_TEST_UNSET_SECRET_VAR }\n  b: { file: missing.txt }\n  c: { command: 'echo oops >&2; exit 7' }\nsteps:\n  - id: never\n    shell: touch ran\n",
    )
    .expect("write");
    let (code, stdout, stderr) = lifeboat(dir, &["run", "playbook.yml"]);
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, 1, "{all}");
    assert!(
        all.contains("secret `a`: environment variable LB_TEST_UNSET_SECRET_VAR is not set"),
        "{all}"
    );
    assert!(all.contains("secret `b`: cannot read"), "{all}");
    assert!(all.contains("missing.txt"), "{all}");
    assert!(all.contains("secret `c`:") && all.contains("oops"), "{all}");
    assert!(!dir.join("ran").exists());
}

#[test]
fn an_optional_secret_whose_source_is_absent_is_undefined_and_one_that_is_there_is_masked() {
    let tmp = tempfile::Builder::new()
        .prefix("lifeboat-secrets")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("playbook.yml"),
        "secrets:\n  absent: { env: LB_TEST_UNSET_SECRET_VAR, optional: true }\n  gone: { file: missing.txt, optional: true }\n  there: { env: LB_TEST_SECRET, optional: true }\n\
steps:\n  - id: show\n    shell: printf '%s|%s|%s\\n' {{ absent | default('fallback') }} {{ gone is defined }} {{ there }} > seen; cat seen\n",
    )
    .expect("write");
    let (code, stdout, stderr) = lifeboat(dir, &["run", "-v", "playbook.yml"]);
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, 0, "{all}");
    let seen = std::fs::read_to_string(dir.join("seen")).expect("the step ran");
    assert_eq!(seen, format!("fallback|False|{}\n", env_secret(dir)));
    assert!(all.contains("fallback|False|********"), "{all}");
    assert!(!all.contains(ENV_CORE), "{all}");

    // `optional` is true or false, said where it is written.
    std::fs::write(
        dir.join("bad.yml"),
        "secrets:\n  s: { env: X, optional: sometimes }\nsteps:\n  - id: never\n    shell: touch ran\n",
    )
    .expect("write");
    let (code, stdout, stderr) = lifeboat(dir, &["run", "bad.yml"]);
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, 1, "{all}");
    assert!(
        all.contains("bad.yml:2:")
            && all.contains("`optional` of secret `s` must be true or false"),
        "{all}"
    );
    assert!(!dir.join("ran").exists());
}
