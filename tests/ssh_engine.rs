//! The engine end to end over SSH: the real `lifeboat` binary runs one playbook against
//! three sshd hosts (see `support/sshd.rs`) and, for comparison, against the same three
//! hosts as local connections; every node must end the same way with the same output.

#[path = "support/sshd.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use assert_cmd::Command;
use sshd::{Sshd, USER};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

const PLAYBOOK: &str = r#"
name: ssh-e2e
hosts: all
vars:
  dir: "{{ base }}/{{ inventory_hostname }}"
steps:
  - id: mkdir
    file:
      path: "{{ dir }}"
      state: directory
  - id: put
    needs: mkdir
    copy:
      content: "hello\n"
      dest: "{{ dir }}/a.txt"
  - id: put-again
    needs: put
    copy:
      content: "hello\n"
      dest: "{{ dir }}/a.txt"
  - id: read
    needs: put-again
    command: cat {{ dir }}/a.txt
  - id: stdin-env
    needs: mkdir
    command:
      argv: [sh, -c, 'tr a-z A-Z; echo "$WHO"']
      stdin: "quiet\n"
      env:
        WHO: "{{ inventory_hostname }}"
  - id: check
    needs: read
    shell: test "$(cat {{ dir }}/a.txt)" = hello && printf 'ok\n' > {{ dir }}/b.txt && cat {{ dir }}/b.txt
  - id: touch-link
    needs: check
    file:
      path: "{{ dir }}/link"
      state: link
      src: "{{ dir }}/b.txt"
"#;

/// (step, host) -> (status, rc, stdout) from an events file.
fn finishes(events: &Path) -> BTreeMap<(String, String), (String, Option<i64>, String)> {
    let text = ok(std::fs::read_to_string(events));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = ok(serde_json::from_str(line));
        if v["event"] == "node_finish" {
            out.insert(
                (
                    v["step"].as_str().unwrap_or("").to_string(),
                    v["host"].as_str().unwrap_or("").to_string(),
                ),
                (
                    v["status"].to_string(),
                    v["rc"].as_i64(),
                    v["stdout"].as_str().unwrap_or("").to_string(),
                ),
            );
        }
    }
    out
}

fn run(dir: &Path, inventory: &str, base: &Path, tag: &str) -> std::process::Output {
    let inv = dir.join(format!("{tag}.ini"));
    ok(std::fs::write(&inv, inventory));
    let home = dir.join("home");
    ok(std::fs::create_dir_all(&home));
    ok(Command::cargo_bin("lifeboat"))
        .arg("run")
        .arg(dir.join("playbook.yml"))
        .arg("-i")
        .arg(&inv)
        .arg("-e")
        .arg(format!("base={}", base.display()))
        .arg("--events")
        .arg(dir.join(format!("{tag}.events")))
        .env("HOME", &home)
        .env("LIFEBOAT_SSH_CONFIG", "none")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("LIFEBOAT_KNOWN_HOSTS")
        .env_remove("LIFEBOAT_HOST_KEY_CHECKING")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_playbook_over_ssh_ends_like_the_same_playbook_run_locally() {
    let hosts: Vec<Sshd> = ["127.0.0.20", "127.0.0.21", "127.0.0.22"]
        .iter()
        .map(|a| ok(Sshd::start(a)))
        .collect();
    let dir = ok(tempfile::tempdir());
    ok(std::fs::write(dir.path().join("playbook.yml"), PLAYBOOK));
    let base_ssh = dir.path().join("over-ssh");
    let base_local = dir.path().join("local");
    ok(std::fs::create_dir_all(&base_ssh));
    ok(std::fs::create_dir_all(&base_local));
    // The login user writes there; it must reach it through the temp dir.
    use std::os::unix::fs::PermissionsExt;
    ok(std::fs::set_permissions(
        dir.path(),
        std::fs::Permissions::from_mode(0o755),
    ));
    ok(std::fs::set_permissions(
        &base_ssh,
        std::fs::Permissions::from_mode(0o1777),
    ));

    let mut ssh_inv = String::from("[cloud]\n");
    let mut local_inv = String::from("[cloud]\n");
    for (i, s) in hosts.iter().enumerate() {
        ssh_inv.push_str(&format!(
            "h{} ansible_host={} ansible_port={} ansible_user={USER} ansible_ssh_private_key_file={} lifeboat_known_hosts={}\n",
            i + 1,
            s.addr,
            s.port,
            s.ed25519_key.display(),
            s.known_hosts.display()
        ));
        local_inv.push_str(&format!("h{} ansible_connection=local\n", i + 1));
    }

    let over_ssh = run(dir.path(), &ssh_inv, &base_ssh, "ssh");
    assert!(
        over_ssh.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&over_ssh.stdout),
        String::from_utf8_lossy(&over_ssh.stderr)
    );
    let local = run(dir.path(), &local_inv, &base_local, "local");
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stdout)
    );

    let a = finishes(&dir.path().join("ssh.events"));
    let b = finishes(&dir.path().join("local.events"));
    assert_eq!(a.len(), 7 * 3, "{a:?}");
    assert_eq!(a, b);
    assert_eq!(
        a[&("stdin-env".to_string(), "h2".to_string())].2,
        "QUIET\nh2\n"
    );
    assert!(
        a[&("put-again".to_string(), "h1".to_string())]
            .0
            .contains("ok")
    );

    // The SSH run really ran as the login user on each host.
    let uid = ok(std::fs::metadata(base_ssh.join("h3").join("a.txt"))).uid();
    let expected = ok(std::process::Command::new("id").args(["-u", USER]).output());
    assert_eq!(
        uid.to_string(),
        String::from_utf8_lossy(&expected.stdout).trim()
    );
    for s in &hosts {
        assert!(s.log().contains("Accepted publickey"), "{}", s.log());
    }
}
