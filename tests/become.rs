//! Privilege escalation on the local connection: `become` with sudo (the default) and
//! with su, for a command, for a file module, and for a rollback action. The suite runs
//! as root (CI does), so becoming `nobody` proves the switch really happens.

mod support;

use support::Test;

#[test]
fn become_user_runs_commands_and_rollbacks_as_that_user() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: open
    shell: chmod 0755 {{ playbook_dir }} && mkdir -m 1777 {{ playbook_dir }}/shared
    rollback: none
  - id: sudo
    needs: open
    become: true
    become_user: nobody
    command: id -un
    register: who
    rollback:
      shell: id -un > {{ playbook_dir }}/shared/rollback-user
  - id: su
    needs: open
    become: true
    become_user: nobody
    become_method: su
    command: id -un
    register: who_su
  - id: root
    command: id -un
    register: me
  - id: report
    needs: [sudo, su, root]
    shell: printf '%s %s %s' {{ who.stdout | trim }} {{ who_su.stdout | trim }} {{ me.stdout | trim }} > {{ playbook_dir }}/users
  - id: fail
    needs: report
    shell: exit 1
"#,
        )
        .run();
    out.assert_code(2);
    assert_eq!(out.read("users"), "nobody nobody root");
    assert_eq!(
        out.read("shared/rollback-user").trim(),
        "nobody",
        "the rollback action runs with the step's become"
    );
}

#[test]
fn become_applies_to_file_modules() {
    let out = Test::new()
        .playbook(
            r#"
steps:
  - id: open
    command: chmod 0755 {{ playbook_dir }}
    rollback: none
  - id: dir
    needs: open
    file:
      path: "{{ playbook_dir }}/shared"
      state: directory
      mode: "0777"
  - id: as-nobody
    needs: dir
    become: true
    become_user: nobody
    copy:
      content: "hello\n"
      dest: "{{ playbook_dir }}/shared/by-nobody"
  - id: owner
    needs: as-nobody
    command: stat -c %U {{ playbook_dir }}/shared/by-nobody
    register: owner
  - id: check
    needs: owner
    assert:
      that: owner.stdout | trim == 'nobody'
"#,
        )
        .run();
    out.assert_code(0);
    assert_eq!(out.read("shared/by-nobody"), "hello\n");
}

#[test]
fn the_become_password_never_reaches_the_command_or_the_output() {
    let out = Test::new()
        .inventory("localhost ansible_connection=local ansible_become_password=topsecret-pw\n")
        .playbook(
            r#"
steps:
  - id: open
    command: chmod 0755 {{ playbook_dir }}
    rollback: none
  - id: read-stdin
    needs: open
    become: true
    become_user: nobody
    shell:
      cmd: cat
      stdin: payload
    register: r
  - id: check
    needs: read-stdin
    assert:
      that: r.stdout == 'payload'
  - id: show
    needs: check
    debug: "the password is {{ ansible_become_password }}"
"#,
        )
        .run();
    out.assert_code(0);
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap_or_default();
    assert!(!out.stdout.contains("topsecret-pw"), "{}", out.stdout);
    assert!(
        !events.contains("topsecret-pw"),
        "the become password is in the events"
    );
    assert!(
        out.stdout.contains("the password is ********"),
        "{}",
        out.stdout
    );
}
