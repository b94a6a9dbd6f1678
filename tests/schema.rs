//! `lifeboat schema`, checked with a real JSON Schema validator: Python's `jsonschema`
//! (pinned in tests/requirements.txt), from the venv scripts/test makes
//! (`$LIFEBOAT_TEST_VENV`, default /var/tmp/lifeboat-test-venv). Without it these tests
//! fail, saying so; they never skip.
//!
//! YAML is turned into JSON by lifeboat's own reader (`yes` stays a string, `0644` too),
//! so the validator sees what `lifeboat validate` sees. What is checked:
//! - every shipped playbook, drill and imported task file against the whole schema, and
//!   every variables file (`vars/`) against `#/definitions/vars`;
//! - every YAML example of README.md and docs/*.md: a fenced block marked `yaml` is a
//!   whole playbook, `yaml steps` a list of steps, `yaml vars` a mapping of variables;
//! - every module's example (`lifeboat modules NAME`), a list of steps;
//! - for every key of the key table, at every place it may be written, a good and a bad
//!   value: the loader and the schema must both accept the first and refuse the second;
//! - wrong playbooks `validate` refuses (an unknown key, a wrong type, two modules, ...),
//!   and forms it accepts that the schema once refused;
//! - docs/playbooks.md documents every key of the table where it may be written.

#[path = "support/binary.rs"]
mod binary;

use std::path::{Path, PathBuf};

use binary::Lifeboat;
use lifeboat::error::SourceFile;
use lifeboat::keys::{KEYS, Place, Shape};
use lifeboat::playbook::Playbook;
use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The schema `lifeboat schema` prints.
fn schema() -> Value {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Lifeboat::new(dir.path()).arg("schema").run();
    assert_eq!(out.code, 0, "lifeboat schema: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.stdout))
}

/// The venv's Python, with jsonschema at the version tests/requirements.txt pins.
fn python() -> PathBuf {
    let venv = std::env::var_os("LIFEBOAT_TEST_VENV").map_or_else(
        || PathBuf::from("/var/tmp/lifeboat-test-venv"),
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    let requirements = std::fs::read_to_string(root().join("tests/requirements.txt"))
        .unwrap_or_else(|e| panic!("tests/requirements.txt: {e}"));
    let pinned = requirements
        .lines()
        .find_map(|l| l.trim().strip_prefix("jsonschema=="))
        .unwrap_or_else(|| panic!("tests/requirements.txt pins no jsonschema"));
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('jsonschema'))",
        ])
        .output();
    let installed = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => panic!(
            "{} has no jsonschema ({}): run scripts/test, which installs tests/requirements.txt \
             into $LIFEBOAT_TEST_VENV (default /var/tmp/lifeboat-test-venv)",
            python.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "no Python venv at {} ({e}): run scripts/test, which makes it with \
             tests/requirements.txt (or set LIFEBOAT_TEST_VENV)",
            venv.display()
        ),
    };
    assert_eq!(
        installed,
        pinned,
        "{} has jsonschema {installed}, tests/requirements.txt pins {pinned}: run scripts/test",
        python.display()
    );
    python
}

/// Validates each document against the schema (`definition`: against
/// `#/definitions/NAME` of it); each case's errors, empty when it is valid. The schema
/// itself is checked first against the draft-07 meta-schema.
const VALIDATE: &str = r##"
import json, sys
from jsonschema import Draft7Validator
task = json.load(open(sys.argv[1]))
schema = task["schema"]
Draft7Validator.check_schema(schema)
out = []
for case in task["cases"]:
    s = schema
    if case["definition"] is not None:
        s = {"$ref": "#/definitions/" + case["definition"], "definitions": schema["definitions"]}
    errors = Draft7Validator(s).iter_errors(case["doc"])
    out.append(["/".join(map(str, e.absolute_path)) + ": " + e.message[:300] for e in errors])
json.dump(out, sys.stdout)
"##;

/// A document to check, named for messages.
struct Case {
    label: String,
    definition: Option<String>,
    doc: Value,
}

impl Case {
    fn playbook(label: impl Into<String>, doc: Value) -> Case {
        Case {
            label: label.into(),
            definition: None,
            doc,
        }
    }

    fn part(label: impl Into<String>, definition: &str, doc: Value) -> Case {
        Case {
            label: label.into(),
            definition: Some(definition.into()),
            doc,
        }
    }
}

/// Each case's schema errors (empty: valid), in order.
fn validate(cases: &[Case]) -> Vec<Vec<String>> {
    let python = python();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let task = dir.path().join("task.json");
    let cases_json: Vec<Value> = cases
        .iter()
        .map(|c| json!({"definition": c.definition, "doc": c.doc}))
        .collect();
    let text = serde_json::to_string(&json!({"schema": schema(), "cases": cases_json}))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&task, text).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(VALIDATE)
        .arg(&task)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        out.status.success(),
        "the validator failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<Vec<String>> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(errors.len(), cases.len());
    errors
}

/// Asserts every case is valid.
fn assert_valid(cases: &[Case]) {
    let failures: Vec<String> = cases
        .iter()
        .zip(validate(cases))
        .filter(|(_, errors)| !errors.is_empty())
        .map(|(c, errors)| format!("{}:\n    {}", c.label, errors.join("\n    ")))
        .collect();
    assert!(
        failures.is_empty(),
        "the schema refuses what lifeboat accepts:\n{}",
        failures.join("\n")
    );
}

/// YAML text as lifeboat reads it, as JSON.
fn yaml_to_json(name: &str, text: &str) -> Value {
    let file = SourceFile::new(name, text);
    lifeboat::yaml::parse(&file)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .to_json()
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_to_json(&path.display().to_string(), &text)
}

/// The `.yml` files under `dir`, at any depth, sorted.
fn yml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "yml" || x == "yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_shipped_playbook_drill_and_vars_file_matches_the_schema() {
    let mut files = yml_files(&root().join("playbooks"));
    files.extend(yml_files(&root().join("drills")));
    let mut cases = Vec::new();
    let mut vars_files = 0;
    for path in &files {
        let doc = read_yaml(path);
        let label = relative(path);
        // A file in a `vars/` directory is variables (what `vars_files:` names); every
        // other file is a playbook: a task file is one that others import.
        if path
            .parent()
            .is_some_and(|d| d.file_name().is_some_and(|n| n == "vars"))
        {
            vars_files += 1;
            cases.push(Case::part(label, "vars", doc));
        } else {
            cases.push(Case::playbook(label, doc));
        }
    }
    assert!(files.len() >= 22 && vars_files >= 3, "{files:?}");
    assert_valid(&cases);
}

/// The fenced YAML blocks of a Markdown file: (line, the words after `yaml`, text).
fn yaml_blocks(markdown: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match &mut open {
            None => {
                let info = line.trim_start().strip_prefix("```");
                if let Some(info) = info
                    && let Some(mark) = info
                        .trim()
                        .strip_prefix("yaml")
                        .or_else(|| info.trim().strip_prefix("yml"))
                    && (mark.is_empty() || mark.starts_with(' '))
                {
                    open = Some((i + 1, mark.trim().to_string(), String::new()));
                }
            }
            Some((_, _, text)) => {
                if line.trim_start().starts_with("```") {
                    out.extend(open.take());
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed ``` block");
    out
}

#[test]
fn every_yaml_example_of_the_docs_matches_the_schema() {
    let mut docs = vec![root().join("README.md")];
    let mut in_docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap_or_else(|e| panic!("docs: {e}"))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    in_docs.sort();
    docs.extend(in_docs);
    let mut cases = Vec::new();
    for doc in &docs {
        let markdown =
            std::fs::read_to_string(doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
        for (line, mark, text) in yaml_blocks(&markdown) {
            let label = format!("{}:{line} (```yaml {mark})", relative(doc));
            let value = yaml_to_json(&label, &text);
            cases.push(match mark.as_str() {
                "" => Case::playbook(label, value),
                "steps" | "vars" => Case::part(label, &mark, value),
                other => panic!(
                    "{label}: `{other}` is no mark this test knows: write `yaml` (a playbook), \
                     `yaml steps` or `yaml vars`"
                ),
            });
        }
    }
    let playbooks = cases.iter().filter(|c| c.definition.is_none()).count();
    let steps = cases
        .iter()
        .filter(|c| c.definition.as_deref() == Some("steps"))
        .count();
    assert!(playbooks >= 2 && steps >= 2, "too few examples found");
    assert_valid(&cases);
}

#[test]
fn every_module_example_matches_the_schema() {
    let cases: Vec<Case> = lifeboat::modules::registry()
        .iter()
        .map(|(name, m)| {
            let label = format!("lifeboat modules {name}");
            let doc = yaml_to_json(&label, m.doc().example);
            Case::part(label, "steps", doc)
        })
        .collect();
    assert!(cases.len() >= 20);
    assert_valid(&cases);
}

/// A value of this shape the loader accepts, and one it refuses, for `key`.
fn samples(key: &str, shape: Shape) -> (Value, Value) {
    match (key, shape) {
        // Values that must name something that is there.
        ("import", _) => (json!("sub.yml"), json!(["sub.yml"])),
        ("vars_files", _) => (json!(["vars.yml"]), json!(5)),
        (_, Shape::Text) => (json!("x"), json!(["x"])),
        (_, Shape::VarName) => (json!("x_1"), json!("1x")),
        (_, Shape::BecomeMethod) => (json!("su"), json!("doas")),
        (_, Shape::LoopOrder) => (json!("reverse"), json!("backwards")),
        (_, Shape::Severity) => (json!("warning"), json!("warn")),
        (_, Shape::Expression) => (json!("x is defined"), json!(["x"])),
        (_, Shape::Bool) => (json!(false), json!("yes")),
        (_, Shape::Count) => (json!(3), json!(-1)),
        (_, Shape::Percent) => (json!(100), json!(101)),
        (_, Shape::Duration) => (json!("1h 30m"), json!("5 parsecs")),
        (_, Shape::Texts) => (json!(["a", "b"]), json!(5)),
        (_, Shape::Ids) => (json!(["first"]), json!({"first": 1})),
        (_, Shape::Loop) => (json!([1, 2]), json!("plain")),
        (_, Shape::Vars) => (json!({"a": 1}), json!([1])),
        (_, Shape::Rollback) => (json!({"shell": "true"}), json!(5)),
        (_, Shape::Secrets) => (
            json!({"s": {"env": "HOME", "optional": true}}),
            json!({"s": {"env": "HOME", "file": "x"}}),
        ),
        (_, Shape::Defaults) => (json!({"timeout": "5s"}), json!({"read_only": true})),
        (_, Shape::ModuleDefaults) => (
            json!({"group/mysql": {"login_user": "backup"}, "restic": {"repository": "/r"}}),
            json!({"group/mysql": {"chdir": "/x"}}),
        ),
        (_, Shape::Steps) => (json!([{"shell": "true"}]), json!({"a": 1})),
        (_, Shape::Phases) => (json!({"backup": [{"shell": "true"}]}), json!([1])),
    }
}

/// A playbook with `key: value` written at `place`.
fn playbook_with(place: Place, key: &str, value: Value) -> Value {
    let first = json!({"id": "first", "shell": "true"});
    let mut pb = json!({"name": "t", "steps": [first]});
    match place {
        Place::Playbook if key == "phases" => {
            pb = json!({"name": "t", "phases": value});
        }
        Place::Playbook => pb[key] = value,
        Place::Step => {
            let mut step = json!({"id": "second", "shell": "true"});
            step[key] = value;
            pb["steps"] = json!([first, step]);
        }
        Place::Defaults => pb["defaults"] = json!({ key: value }),
        Place::Import => {
            let mut import = json!({"import": "sub.yml"});
            import[key] = value;
            pb["steps"] = json!([first, import]);
        }
    }
    pb
}

/// Whether lifeboat's loader accepts the playbook (written as JSON, which is YAML).
fn loads(dir: &Path, name: &str, pb: &Value) -> Result<(), String> {
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(&path, pb.to_string()).unwrap_or_else(|e| panic!("{e}"));
    Playbook::load(&path).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn the_schema_and_the_loader_agree_on_module_defaults() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let samples = [
        (
            json!({"group/mysql": {"login_port": 3307, "login_password": "{{ pw }}"}}),
            true,
        ),
        (json!({"group/mysql": {"login_port": "{{ port }}"}}), true),
        (
            json!({"mysql_query": {"database": "nova"}, "group/mysql": null}),
            true,
        ),
        (
            json!({"restic": {"repository": "/r", "env": {"ST_KEY": "k"}}}),
            true,
        ),
        (json!(null), true),
        // An unknown module, an unknown group.
        (json!({"mysql_qery": {"login_user": "x"}}), false),
        (json!({"group/mysq": {"login_user": "x"}}), false),
        // An argument no module of the group takes; one the module does not take.
        (json!({"group/mysql": {"cmd": "x"}}), false),
        (json!({"restic": {"login_user": "x"}}), false),
        // A value of the wrong type.
        (json!({"group/mysql": {"login_port": "x"}}), false),
        (json!({"restic": {"env": "x"}}), false),
        (json!({"restic": ["repository"]}), false),
        (json!(["restic"]), false),
    ];
    let mut cases = Vec::new();
    let mut loader_disagrees = Vec::new();
    for (i, (value, ok)) in samples.iter().enumerate() {
        let pb = json!({
            "name": "t",
            "module_defaults": value,
            "steps": [{"id": "q", "mysql_query": "SELECT 1"}],
        });
        let loaded = loads(dir.path(), &format!("md{i}"), &pb);
        if loaded.is_ok() != *ok {
            loader_disagrees.push(format!("{value}: {loaded:?}"));
        }
        cases.push(Case::playbook(format!("module_defaults: {value}"), pb));
    }
    assert!(
        loader_disagrees.is_empty(),
        "{}",
        loader_disagrees.join("\n")
    );
    let schema_disagrees: Vec<String> = cases
        .iter()
        .zip(validate(&cases))
        .zip(samples.iter().map(|(_, ok)| *ok))
        .filter(|((_, errors), ok)| errors.is_empty() != *ok)
        .map(|((c, errors), _)| format!("{}: {errors:?}", c.label))
        .collect();
    assert!(
        schema_disagrees.is_empty(),
        "{}",
        schema_disagrees.join("\n")
    );
}

#[test]
fn the_schema_and_the_loader_agree_on_every_key_at_every_place() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("sub.yml"),
        r#"{"steps": [{"id": "s", "shell": "true"}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("vars.yml"), "a: 1\n").unwrap_or_else(|e| panic!("{e}"));
    let mut cases = Vec::new();
    let mut expected = Vec::new();
    let mut loader_disagrees = Vec::new();
    for key in KEYS {
        for &place in key.places {
            let (good, bad) = samples(key.name, key.shape);
            for (ok, value) in [(true, good), (false, bad)] {
                let label = format!("{}: {:?} {value} (at {place:?})", key.name, key.shape);
                let pb = playbook_with(place, key.name, value);
                let loaded = loads(dir.path(), &format!("case{}", cases.len()), &pb);
                if loaded.is_ok() != ok {
                    loader_disagrees.push(format!("{label}: {loaded:?}"));
                }
                cases.push(Case::playbook(label, pb));
                expected.push(ok);
            }
        }
    }
    assert!(
        loader_disagrees.is_empty(),
        "the loader does not read these values as their shape says:\n{}",
        loader_disagrees.join("\n")
    );
    let schema_disagrees: Vec<String> = cases
        .iter()
        .zip(validate(&cases))
        .zip(expected)
        .filter(|((_, errors), ok)| errors.is_empty() != *ok)
        .map(|((c, errors), ok)| {
            let verdict = if ok { "refuses" } else { "accepts" };
            format!("the schema {verdict} {}: {errors:?}", c.label)
        })
        .collect();
    assert!(
        schema_disagrees.is_empty(),
        "the schema and the loader disagree:\n{}",
        schema_disagrees.join("\n")
    );
}

/// Playbooks `lifeboat validate` refuses (with the words of its error) and ones it
/// accepts, each checked against the loader too.
fn verdicts() -> Vec<(&'static str, Option<&'static str>, &'static str)> {
    vec![
        // (what, None: valid, or Some(the loader's error), YAML)
        (
            "an unknown step key",
            Some("unknown key or module `neeeds`"),
            "steps:\n  - shell: 'true'\n    neeeds: [a]\n",
        ),
        (
            "an unknown top-level key",
            Some("unknown key `step` in playbook"),
            "step:\n  - shell: 'true'\nsteps: []\n",
        ),
        (
            "a wrong type",
            Some("`retries` must be a whole number"),
            "steps:\n  - shell: 'true'\n    retries: many\n",
        ),
        (
            "two modules in a step",
            Some("a step has exactly one module"),
            "steps:\n  - shell: 'true'\n    command: 'true'\n",
        ),
        (
            "a step without a module",
            Some("has no module"),
            "steps:\n  - id: a\n",
        ),
        (
            "an unknown module argument",
            Some("unknown argument `cmdd`"),
            "steps:\n  - shell: {cmdd: 'true'}\n",
        ),
        (
            "a missing required argument",
            Some("needs the argument `path`"),
            "steps:\n  - file: {state: directory}\n",
        ),
        (
            "a module argument of the wrong type",
            Some("must be a boolean"),
            "steps:\n  - file: {path: /tmp/x, recurse: maybe}\n",
        ),
        (
            "a bad duration",
            Some("`timeout` must be a duration"),
            "steps:\n  - shell: 'true'\n    timeout: 5 parsecs\n",
        ),
        (
            "a negative duration",
            Some("`timeout` must be a duration"),
            "steps:\n  - shell: 'true'\n    timeout: -5\n",
        ),
        (
            "a secret with two sources",
            Some("needs exactly one source"),
            "secrets:\n  s: {env: A, file: b}\nsteps:\n  - shell: 'true'\n",
        ),
        (
            "a secret with no source",
            Some("needs exactly one source"),
            "secrets:\n  s: {optional: true}\nsteps:\n  - shell: 'true'\n",
        ),
        (
            "a secret with an unknown source",
            Some("needs exactly one source"),
            "secrets:\n  s: {vault: x}\nsteps:\n  - shell: 'true'\n",
        ),
        (
            "optional: yes (a string)",
            Some("`optional` of secret `s` must be true or false"),
            "secrets:\n  s: {env: A, optional: yes}\nsteps:\n  - shell: 'true'\n",
        ),
        (
            "max_fail_percentage over 100",
            Some("is over 100"),
            "max_fail_percentage: 101\nsteps:\n  - shell: 'true'\n",
        ),
        (
            "steps and phases both",
            Some("`steps` or `phases`, not both"),
            "steps:\n  - shell: 'true'\nphases:\n  backup:\n    - shell: 'true'\n",
        ),
        ("no steps", Some("has no `steps:`"), "name: t\n"),
        (
            "a step-only key in defaults",
            Some("unknown key `read_only` in defaults"),
            "defaults: {read_only: true}\nsteps:\n  - shell: 'true'\n",
        ),
        (
            "an unknown import key",
            Some("unknown key `when` in import"),
            "steps:\n  - import: sub.yml\n    when: x\n",
        ),
        (
            "a rollback of two modules",
            Some("exactly one module key"),
            "steps:\n  - shell: 'true'\n    rollback: {shell: a, command: b}\n",
        ),
        (
            "register: true",
            Some("not a valid variable name"),
            "steps:\n  - shell: 'true'\n    register: true\n",
        ),
        (
            "a step name that is a list",
            Some("`name` must be a string"),
            "steps:\n  - name: [a]\n    shell: 'true'\n",
        ),
        (
            "a step that is a string",
            Some("a step is a mapping"),
            "steps:\n  - shell true\n",
        ),
        // Accepted.
        (
            "secrets in every form",
            None,
            "secrets:\n  a: {env: LB_A, optional: true}\n  b: {file: pw.txt, optional: false}\n  \
          c: {command: echo hi}\n  d: {value: 5}\nsteps:\n  - shell: 'true'\n",
        ),
        (
            "max_fail_percentage",
            None,
            "max_fail_percentage: 50\nsteps:\n  - shell: 'true'\n",
        ),
        (
            "phases with an import",
            None,
            "rto_target: 1h\nrpo_target: 90\nphases:\n  backup:\n    - import: sub.yml\n      \
          id: b\n      vars: {x: 1}\n      needs: []\n      hosts: all\n      tags: [t]\n      \
          phase: backup\n  verify:\n    - shell: 'true'\n      needs: b\n",
        ),
        (
            "short forms",
            None,
            "steps:\n  - shell: echo hi\n  - debug: hi\n  - assert: 1 < 2\n  - command: [ls, -l]\n",
        ),
        (
            "templates for typed arguments",
            None,
            "vars: {b: true}\nsteps:\n  - file: {path: /tmp/x, state: directory, recurse: '{{ b }}'}\n    \
          loop: '{{ [1, 2] }}'\n",
        ),
        (
            "a mode with a leading zero (a string to lifeboat)",
            None,
            "steps:\n  - file: {path: /tmp/x, mode: 0644}\n",
        ),
        (
            "durations in every form",
            None,
            "defaults: {timeout: 90, retry_delay: 1.5}\nsteps:\n  - shell: 'true'\n    \
          timeout: 1h30m\n    retry_delay: 500ms\n  - shell: 'true'\n    timeout: '2.5'\n",
        ),
        (
            "rollback forms",
            None,
            "defaults:\n  rollback: none\nsteps:\n  - shell: 'true'\n    rollback:\n  \
          - shell: 'true'\n    rollback: [{shell: a}, {command: b}]\n  - shell: 'true'\n    \
          rollback: auto\n",
        ),
        (
            "yes is a string",
            None,
            "steps:\n  - debug: yes\n    tags: [yes, 1]\n",
        ),
    ]
}

#[test]
fn the_schema_refuses_what_validate_refuses_and_accepts_what_it_accepts() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("sub.yml"),
        "steps:\n  - id: s\n    shell: 'true'\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let verdicts = verdicts();
    let mut cases = Vec::new();
    for (i, (what, error, yaml)) in verdicts.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.yml"));
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
        match (Playbook::load(&path), error) {
            (Ok(_), None) => {}
            (Err(e), Some(words)) => {
                assert!(
                    e.to_string().contains(words),
                    "{what}: the loader said\n{e}"
                )
            }
            (Ok(_), Some(_)) => panic!("{what}: the loader accepts it"),
            (Err(e), None) => panic!("{what}: the loader refuses it:\n{e}"),
        }
        cases.push(Case::playbook(*what, yaml_to_json(what, yaml)));
    }
    let wrong: Vec<String> = verdicts
        .iter()
        .zip(validate(&cases))
        .filter(|((_, error, _), errors)| errors.is_empty() != error.is_none())
        .map(|((what, error, _), errors)| match error {
            Some(_) => format!("accepts {what}"),
            None => format!("refuses {what}: {errors:?}"),
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "the schema {}",
        wrong.join("\nthe schema ")
    );
}

/// The text of the section of `markdown` under `heading`, to the next heading.
fn section<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let start = markdown
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("docs/playbooks.md has no `{heading}`"));
    let body = &markdown[start + heading.len() + 2..];
    body.find("\n#").map_or(body, |end| &body[..end])
}

#[test]
fn the_docs_name_every_key_where_it_may_be_written() {
    let markdown = std::fs::read_to_string(root().join("docs/playbooks.md"))
        .unwrap_or_else(|e| panic!("docs/playbooks.md: {e}"));
    let top = section(&markdown, "## Top-level keys");
    // The `defaults` row lists exactly the keys `defaults:` takes.
    let row = top
        .lines()
        .find(|l| l.starts_with("| `defaults` |"))
        .unwrap_or_else(|| panic!("no `defaults` row"));
    let mut listed: Vec<&str> = row.split('`').skip(3).step_by(2).collect();
    listed.sort_unstable();
    let mut defaults = lifeboat::keys::names(Place::Defaults);
    defaults.sort_unstable();
    assert_eq!(listed, defaults, "the `defaults` row of docs/playbooks.md");
    let mut missing = Vec::new();
    for (place, text) in [
        (Place::Playbook, top),
        (Place::Step, section(&markdown, "## Steps")),
        (Place::Import, section(&markdown, "### Imports")),
    ] {
        for name in lifeboat::keys::names(place) {
            if !text.contains(&format!("`{name}`")) && !text.contains(&format!("{name}:")) {
                missing.push(format!("{name} ({place:?})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/playbooks.md does not document: {missing:?}"
    );
}
