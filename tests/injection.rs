//! Shell injection: a corpus of hostile strings (quotes, `;`, `$()`, backticks,
//! backslashes, newlines, `*`, a leading `-`, spaces, unicode, redirections) reaches
//! commands as data, never as code. Each string is used as an inventory host name, a
//! playbook variable, an `-e` extra variable, a loop item, registered output used again,
//! in `shell` and `command` lines (through the `{{ }}` shell quoting) and as `copy` and
//! `file` paths. Every string that could run code tries to create a canary file, which
//! must never exist, and every value must arrive byte for byte. The same playbook runs
//! over the local connection and over SSH (a real sshd, user `lifeboat-test`).

#[path = "support/binary.rs"]
mod binary;
#[path = "support/sshd.rs"]
mod sshd;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use binary::Lifeboat;
use serde_json::{Value, json};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The hostile strings; those that could run code would create `canary`.
fn corpus(canary: &Path) -> Vec<String> {
    let c = canary.display();
    vec![
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!("; touch {c}"),
        format!("' ; touch {c} ; '"),
        format!("\" ; touch {c} ; \""),
        format!("\\'; touch {c} #"),
        format!("x\ntouch {c}\n"),
        format!("| touch {c}"),
        format!("&& touch {c} &"),
        format!(">{c}"),
        format!("$'\\x27'; touch {c}"),
        format!("'\"'\"'; touch {c}; '\"'\"'"),
        format!("\\\"$(touch {c})\\\""),
        "*".into(),
        "-rf --version".into(),
        "  two  spaces  ".into(),
        "ünïcødé € 😀 \u{202e}rtl".into(),
        "$HOME ${PATH} $((1+1)) %s %n %%".into(),
        "back\\slash \\\\ \\n \\t \\".into(),
        "'".into(),
        "\"".into(),
        "--".into(),
        "~root".into(),
        "tab\tcr\rend".into(),
        "".into(),
    ]
}

/// Hostile file names (no `/`, not `.` or `..`, not empty).
fn names() -> Vec<String> {
    [
        "$(touch pwned)",
        "`touch pwned`",
        "; touch pwned",
        "it's \"quoted\"",
        "new\nline",
        "*",
        "-rf",
        "  spaces  ",
        "ünï 😀",
        "back\\slash",
        "$HOME",
        "..hidden",
        "a;b|c&d>e<f",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Hostile inventory host names (legal ones: no `host:port`, no `[a:b]` range).
fn host_names(canary: &Path) -> Vec<String> {
    let c = canary.display();
    vec![
        format!("web;touch {c}"),
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        "it's \"quoted\"".into(),
        "ünï 😀 space".into(),
        "-rf".into(),
        "*".into(),
    ]
}

const PLAYBOOK: &str = r#"
name: injection
vars:
  out: "{{ base }}/{{ idx }}"
  pv: @PV@
steps:
  - id: dir
    shell: mkdir -p {{ out }}/names {{ out }}/touched && printf '%s' {{ inventory_hostname }} > {{ out }}/hostname

  - id: playbook-vars
    needs: dir
    shell: "printf '%s\\0' {% for v in pv %}{{ v }} {% endfor %} > {{ out }}/vars"

  - id: extra-vars
    needs: dir
    shell: "printf '%s\\0' {% for v in ev %}{{ v }} {% endfor %} > {{ out }}/extra"

  - id: one-extra-var
    needs: dir
    shell: printf '%s' {{ one }} > {{ out }}/one

  - id: loop-items
    needs: dir
    shell: printf '%s\0' {{ item }} >> {{ out }}/loop
    loop: "{{ pv }}"

  - id: read-back
    needs: dir
    shell: cat {{ src }}/{{ item }}
    loop: "{{ range(pv | length) | list }}"
    register: back

  - id: registered
    needs: read-back
    shell: "printf '%s\\0' {% for r in back.results %}{{ r.stdout }} {% endfor %} > {{ out }}/registered"

  - id: registered-one-by-one
    needs: read-back
    shell: printf '%s\0' {{ item.stdout }} >> {{ out }}/registered-loop
    loop: "{{ back.results }}"

  - id: command
    needs: dir
    command: "printf '%s\\0' {% for v in pv %}{{ v }} {% endfor %}"
    register: cmd

  - id: command-argv
    needs: dir
    command:
      argv: ["printf", "%s\\0", "{{ one }}", "{{ pv[0] }}", "{{ pv[3] }}"]

  - id: copy-names
    needs: dir
    copy:
      content: "{{ item }}"
      dest: "{{ out }}/names/{{ item }}"
    loop: "{{ files }}"

  - id: touch-names
    needs: dir
    file:
      path: "{{ out }}/touched/{{ item }}"
      state: touch
    loop: "{{ files }}"
"#;

/// NUL-joined, as `printf '%s\0'` writes a list.
fn nul_joined(items: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        out.extend_from_slice(i.as_bytes());
        out.push(0);
    }
    out
}

fn yaml_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}

/// How the hosts are reached.
enum Via<'a> {
    Local,
    Ssh(&'a sshd::Sshd),
}

fn run_corpus(via: Via<'_>) {
    let tmp = ok(tempfile::Builder::new().prefix("lifeboat-inject").tempdir());
    let dir = tmp.path();
    // The login user of the SSH run writes here too.
    ok(std::fs::set_permissions(
        dir,
        std::fs::Permissions::from_mode(0o1777),
    ));
    let canary = dir.join("pwned");
    let values = corpus(&canary);
    let files = names();
    let hosts = host_names(&canary);
    let base = dir.join("out");
    ok(std::fs::create_dir_all(&base));
    ok(std::fs::set_permissions(
        &base,
        std::fs::Permissions::from_mode(0o1777),
    ));
    let src = dir.join("src");
    ok(std::fs::create_dir_all(&src));
    for (i, v) in values.iter().enumerate() {
        ok(std::fs::write(src.join(i.to_string()), v));
    }
    ok(std::fs::write(
        dir.join("playbook.yml"),
        PLAYBOOK.replace("@PV@", &yaml_list(&values)),
    ));
    // A YAML inventory: every host name hostile, each with its own output folder.
    let mut inv = serde_json::Map::new();
    for (i, h) in hosts.iter().enumerate() {
        let vars = match &via {
            Via::Local => json!({"ansible_connection": "local", "idx": i}),
            Via::Ssh(s) => json!({
                "ansible_host": s.addr,
                "ansible_port": s.port,
                "ansible_user": sshd::USER,
                "ansible_ssh_private_key_file": s.ed25519_key,
                "lifeboat_known_hosts": s.known_hosts,
                "idx": i,
            }),
        };
        inv.insert(h.clone(), vars);
    }
    let inventory = json!({"all": {"hosts": inv}});
    ok(std::fs::write(
        dir.join("inventory.yml"),
        ok(serde_json::to_string_pretty(&inventory)),
    ));
    let extra = json!({
        "base": base,
        "src": src,
        "ev": values,
        "one": values[3],
        "files": files,
    });
    ok(std::fs::create_dir_all(dir.join("home")));
    let out = Lifeboat::new(dir)
        .args([
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--events",
            "events.jsonl",
        ])
        .arg("-e")
        .arg(extra.to_string())
        .run();
    let report = format!("{out:?}");
    assert_eq!(out.code, 0, "{report}");
    assert!(!canary.exists(), "a hostile string ran as code\n{report}");
    assert!(
        !dir.join("home/pwned").exists(),
        "a hostile name ran as code"
    );

    let events: Vec<Value> = ok(std::fs::read_to_string(dir.join("events.jsonl")))
        .lines()
        .map(|l| ok(serde_json::from_str(l)))
        .collect();
    let read =
        |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}\n{report}", p.display()));
    let all = nul_joined(&values);
    for (i, host) in hosts.iter().enumerate() {
        let out = base.join(i.to_string());
        assert_eq!(
            String::from_utf8_lossy(&read(out.join("hostname"))),
            *host,
            "host name"
        );
        for what in ["vars", "extra", "loop", "registered", "registered-loop"] {
            assert!(
                read(out.join(what)) == all,
                "{what} on {host:?}: {:?}",
                String::from_utf8_lossy(&read(out.join(what)))
            );
        }
        assert_eq!(String::from_utf8_lossy(&read(out.join("one"))), values[3]);
        let finish = |step: &str| {
            events
                .iter()
                .find(|e| e["event"] == "node_finish" && e["step"] == step && e["host"] == *host)
                .unwrap_or_else(|| panic!("no {step} on {host}\n{report}"))
        };
        assert_eq!(
            finish("command")["stdout"].as_str().map(str::as_bytes),
            Some(all.as_slice()),
            "command on {host:?}"
        );
        assert_eq!(
            finish("command-argv")["stdout"].as_str().map(str::as_bytes),
            Some(nul_joined(&[values[3].clone(), values[0].clone(), values[3].clone()]).as_slice()),
            "command argv on {host:?}"
        );
        for folder in ["names", "touched"] {
            let listed: BTreeSet<String> = ok(std::fs::read_dir(out.join(folder)))
                .map(|e| ok(e).file_name().to_string_lossy().into_owned())
                .collect();
            let expected: BTreeSet<String> = files.iter().cloned().collect();
            assert_eq!(listed, expected, "{folder} on {host:?}");
        }
        for f in &files {
            assert_eq!(
                String::from_utf8_lossy(&read(out.join("names").join(f))),
                *f,
                "content of {f:?}"
            );
        }
    }
    assert!(!canary.exists(), "a hostile string ran as code");
}

#[test]
fn hostile_strings_are_data_locally() {
    run_corpus(Via::Local);
}

#[test]
fn hostile_strings_are_data_over_ssh() {
    let server = ok(sshd::Sshd::start("127.0.0.1"));
    run_corpus(Via::Ssh(&server));
}

#[test]
fn registered_output_with_template_syntax_stays_text() {
    let tmp = ok(tempfile::Builder::new().prefix("lifeboat-inject").tempdir());
    let dir = tmp.path();
    let canary = dir.join("pwned");
    let evil = format!(
        "{{{{ 7 * 7 }}}} {{% for x in range(3) %}}{{{{ x }}}}{{% endfor %}} $(touch {})",
        canary.display()
    );
    ok(std::fs::write(dir.join("evil"), &evil));
    ok(std::fs::write(
        dir.join("playbook.yml"),
        "steps:\n  - id: read\n    shell: cat {{ playbook_dir }}/evil\n    register: r\n  - id: use\n    needs: read\n    shell: printf '%s' {{ r.stdout }} > {{ playbook_dir }}/got\n  - id: copy\n    needs: read\n    copy: { content: \"{{ r.stdout }}\", dest: \"{{ playbook_dir }}/copied\" }\n",
    ));
    let out = Lifeboat::new(dir).args(["run", "playbook.yml"]).run();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(ok(std::fs::read_to_string(dir.join("got"))), evil);
    assert_eq!(ok(std::fs::read_to_string(dir.join("copied"))), evil);
    assert!(!canary.exists());
}
