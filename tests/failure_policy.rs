//! `max_fail_percentage`: hosts that fail within the share leave the run, the others
//! finish, and only what ran on the failed hosts is rolled back; past the share, the
//! run stops and everything is rolled back (the default, 0, stops at any failure).

mod support;

use support::Test;

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
