//! The shipped playbooks on a real OpenStack control plane (Debian's packages, see
//! `support/openstack.rs`), run as an operator runs them: over SSH as a login user with
//! become. Each test gets the control plane reset to its golden state, makes a backup,
//! breaks the cloud, restores it with the shipped playbooks and proves the restore
//! through the real APIs.

#[path = "support/openstack.rs"]
mod openstack;
#[path = "support/sshd.rs"]
mod sshd;

use openstack::{Proofs, rig};

fn assert_ok(what: &str, (code, out): (i32, String)) -> String {
    assert_eq!(code, 0, "{what} failed:\n{out}");
    out
}

#[test]
fn backup_disaster_and_control_plane_restore_bring_the_cloud_back() {
    let guard = rig();
    let rig = guard.as_ref().expect("the rig");
    let before = Proofs::take();
    let owners = openstack::owners_and_modes();
    assert_eq!(
        Proofs::validate(&before.admin_token, &before.user_token),
        "200"
    );

    assert_ok("backup.yml", rig.run("playbooks/openstack/backup.yml", &[]));
    rig.disaster();
    assert_ne!(
        Proofs::validate(&before.admin_token, &before.user_token),
        "200",
        "keystone still validates tokens after the disaster"
    );

    let out = assert_ok(
        "restore-control-plane.yml",
        rig.run("playbooks/openstack/restore-control-plane.yml", &[]),
    );
    let restored = openstack::now();
    before.check_after_restore(restored.saturating_sub(5));

    // Every restored tree has its owners and modes back, the root of each tree included
    // (keystone's keys 0700 keystone:keystone, glance's images glance's).
    assert_eq!(
        openstack::owners_and_modes(),
        owners,
        "owners or modes differ after the restore\n{out}"
    );

    // The negative control: the same proof fails with other fernet keys.
    openstack::foreign_fernet_keys();
    assert_ne!(
        Proofs::validate(&before.admin_token, &before.user_token),
        "200",
        "a token validates with foreign fernet keys: the proof proves nothing"
    );
}
