//! The shipped playbooks and drills on a real OpenStack control plane (Debian's
//! packages, see `support/openstack.rs`), run as an operator runs them: over SSH as a
//! login user with become. Each test gets the control plane reset to its golden state,
//! and drills/control-plane-restore.yml backs it up, destroys it (daemons stopped,
//! databases dropped, /etc/<service>, keystone's keys and glance's images deleted),
//! restores it and proves the restore through the APIs. The tests prove it again on
//! their own (tokens, records, credential, images, heartbeats, owners and modes), so a
//! drill whose proofs proved nothing would be caught. drills/controller-loss.yml loses
//! the controller's state and every local backup, and rebuilds it from a real Swift.

#[path = "support/openstack.rs"]
mod openstack;
#[path = "support/sshd.rs"]
mod sshd;
#[path = "support/swift.rs"]
mod swift;

use openstack::{Proofs, rig};

/// The status the console output gives `step` on `host` (`changed`, `ok`, ...).
fn status<'a>(out: &'a str, step: &str, host: &str) -> Option<&'a str> {
    out.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let (st, s, h) = (w.next()?, w.next()?, w.next()?);
        (s == step && h == host).then_some(st)
    })
}

/// Runs the control-plane drill with `extra` settings; checks that it passed, with
/// every proof a passed verification, and returns the console output.
fn drill_passes(rig: &openstack::Rig, extra: &[&str]) -> String {
    drill_passes_with(rig, "drills/control-plane-restore.yml", extra)
}

/// The same for another drill that imports tasks/cloud-proof.yml.
fn drill_passes_with(rig: &openstack::Rig, drill: &str, extra: &[&str]) -> String {
    drill_passes_env(rig, drill, extra, &[])
}

/// The same with environment variables (the secrets the drill reads).
fn drill_passes_env(
    rig: &openstack::Rig,
    drill: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> String {
    let (code, out, report) = rig.drill_env(drill, extra, env);
    assert_eq!(code, 0, "the drill did not pass:\n{out}");
    let checks: Vec<(String, String)> = report["verifications"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|c| {
                    (
                        c["step"].as_str().unwrap_or_default().to_string(),
                        c["passed"].to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for proof in [
        "token-validates",
        "password-logs-in",
        "credential-decrypts",
        "records-as-before",
        "images-download",
        "nova-status",
        "cells",
    ] {
        assert!(
            checks
                .iter()
                .any(|(s, passed)| s.ends_with(proof) && passed == "true"),
            "the proof {proof} is not a passed verification: {checks:?}\n{out}"
        );
    }
    assert!(report["rto"].as_f64().is_some_and(|r| r > 0.0), "{report}");
    assert!(report["rpo"].as_f64().is_some(), "{report}");
    out
}

#[test]
fn the_control_plane_drill_destroys_and_restores_a_real_cloud_as_an_operator_would() {
    let guard = rig();
    let rig = guard.as_ref().expect("the rig");
    let before = Proofs::take();
    let owners = openstack::owners_and_modes();
    assert_eq!(
        Proofs::validate(&before.admin_token, &before.user_token),
        "200"
    );

    let out = drill_passes(rig, &[]);
    before.check_after_restore(openstack::now().saturating_sub(60));
    // Every restored tree has its owners and modes back, the root of each tree included
    // (keystone's keys 0700 keystone:keystone, glance's images glance's).
    // (the drill's own image, made after `owners` was taken, is the only addition)
    let after = openstack::owners_and_modes();
    let lost: Vec<&str> = owners
        .lines()
        .filter(|l| !after.lines().any(|a| a == *l))
        .collect();
    assert!(
        lost.is_empty(),
        "owners or modes differ after the restore: {lost:?}\nnow:\n{after}\n{out}"
    );

    // The negative control: the same proof fails with other fernet keys.
    openstack::foreign_fernet_keys();
    assert_ne!(
        Proofs::validate(&before.admin_token, &before.user_token),
        "200",
        "a token validates with foreign fernet keys: the proof proves nothing"
    );
}

#[test]
fn the_control_plane_drill_restores_the_databases_from_a_physical_backup() {
    let guard = rig();
    let rig = guard.as_ref().expect("the rig");
    let before = Proofs::take();
    let rig_sh = openstack::fixture("rig.sh").display().to_string();
    let out = drill_passes(
        rig,
        &[
            "db_backup_method=physical",
            &format!("db_datadir={}/mysql", openstack::RIG_DIR),
            "db_service=mariadb",
            "db_service_manager=command",
            &format!(
                "{{\"db_service_commands\": {{\"start\": \"{rig_sh} db-start\", \"stop\": \"{rig_sh} db-stop\", \"status\": \"{rig_sh} db-status\"}}}}"
            ),
        ],
    );
    assert!(
        out.contains("physical-database") && out.contains("restored chain"),
        "the databases did not come from the physical backup:\n{out}"
    );
    before.check_after_restore(openstack::now().saturating_sub(60));
}

#[test]
fn the_service_drill_restores_glance_then_keystone_on_a_real_cloud() {
    let guard = rig();
    let rig = guard.as_ref().expect("the rig");
    let before = Proofs::take();
    // A copy an older restore kept of glance's images (the sabotage leaves those in
    // place, so the restore moves them aside too): the verified restore removes the old
    // copy and keeps its own.
    openstack::sh("mkdir -p /var/lib/glance/images.orig-20200101T000000Z");
    for service in ["glance", "keystone"] {
        let out = drill_passes_with(
            rig,
            "drills/service-restore.yml",
            &[&format!("drill_service={service}")],
        );
        assert!(
            out.lines()
                .any(|l| l.contains("restore.database.import-database") && l.contains("changed")),
            "{service}'s database was not restored:\n{out}"
        );
        before.check_after_restore(openstack::now().saturating_sub(60));
    }
    // The dry runs predict success (as the runs above had it) and change nothing.
    let daemons = "cat /var/run/*/*.pid | sort";
    let pids = openstack::sh(daemons);
    for playbook in [
        "playbooks/openstack/backup.yml",
        "playbooks/openstack/restore-control-plane.yml",
    ] {
        let path = openstack::shipped(playbook).display().to_string();
        let plan = rig.lifeboat(&["plan", &path]);
        assert_eq!(
            plan.code, 0,
            "the plan of {playbook} fails:\n{}\n{}",
            plan.stdout, plan.stderr
        );
    }
    assert_eq!(
        openstack::sh(daemons),
        pids,
        "a dry run stopped or started a daemon"
    );
    assert_eq!(
        Proofs::validate(&before.admin_token, &before.user_token),
        "200"
    );

    let kept = openstack::sh("ls -1d /var/lib/glance/images.orig-*");
    assert!(
        !kept.contains("20200101T000000Z") && kept.lines().count() == 1,
        "the restore should keep its own copy of glance's images and remove the older one:\n{kept}"
    );
}

#[test]
fn the_controller_loss_drill_rebuilds_the_control_plane_from_swift_alone() {
    let guard = rig();
    let rig = guard.as_ref().expect("the rig");
    let sw = swift::server();
    let before = Proofs::take();
    // The repository's password: quotes and a `$`, to prove it is quoted on its way.
    let password = "l0st-s1te'pa$$\"w0rd";
    let settings = serde_json::json!({
        "offsite_repository": [{
            "repository": format!("swift:rig-offsite-{}:/site1", std::process::id()),
            "env": {
                "ST_AUTH": sw.auth_url(),
                "ST_USER": swift::USER,
                "ST_KEY": "{{ offsite_secret }}",
            },
        }],
    })
    .to_string();
    let out = drill_passes_env(
        rig,
        "drills/controller-loss.yml",
        &[&settings],
        &[
            ("LIFEBOAT_OFFSITE_PASSWORD", password),
            ("LIFEBOAT_OFFSITE_SECRET", swift::KEY),
        ],
    );
    before.check_after_restore(openstack::now().saturating_sub(60));
    // The local backups were gone, and the restore came from Swift: the controller
    // fetched its snapshot; the drill compared the databases and every restored file.
    for (step, host) in [
        ("backups-lost", "ctl01"),
        ("controller-wiped", "ctl01"),
        ("restore.fetch.offsite-fetch", "ctl01"),
        ("restore.keystone-files.put-files", "ctl01"),
    ] {
        assert_eq!(status(&out, step, host), Some("changed"), "{step}\n{out}");
    }
    for (step, host) in [
        ("databases-as-backed-up", "ctl01"),
        ("files-as-backed-up", "ctl01"),
    ] {
        assert_eq!(status(&out, step, host), Some("ok"), "{step}\n{out}");
    }
    for secret in [password, swift::KEY] {
        assert!(!out.contains(secret), "a secret is in the output:\n{out}");
    }
}
