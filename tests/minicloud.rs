//! The shipped OpenStack playbooks end to end on the mini-cloud (support/minicloud.rs):
//! a controller, a compute node and a backup host over real sshd, a real MariaDB, and
//! the OpenStack daemons played by small real processes.
//!
//! 1. backup, sabotage (drop tables, delete /etc/nova and a glance image, stop a
//!    daemon), restore nova and glance with restore-service.yml: files byte-identical
//!    to before, database checksums identical, every daemon running again;
//! 2. a restore that fails half way (a corrupt dump): the rollback leaves the cloud
//!    exactly as it was before the restore began;
//! 3. the shipped drills pass on the mini-cloud.

#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/minicloud.rs"]
mod minicloud;
#[path = "support/sshd.rs"]
mod sshd;

use std::path::Path;

use minicloud::MiniCloud;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn expect(code_and_output: (i32, String), code: i32) -> String {
    let (c, out) = code_and_output;
    assert_eq!(c, code, "unexpected exit code\n{out}");
    out
}

/// The name `latest` points at in a node's backup folder.
fn latest(cloud: &MiniCloud, host: &str) -> String {
    ok(std::fs::read_link(cloud.backups_of(host).join("latest")))
        .display()
        .to_string()
}

fn backup(cloud: &MiniCloud) -> String {
    expect(cloud.run("playbooks/openstack/backup.yml", &[]), 0);
    let name = latest(cloud, "ctl01");
    let snap = cloud.backups_of("ctl01").join(&name);
    for f in [
        "backup.json",
        "files/etc/nova/nova.conf",
        "files/etc/keystone/fernet-keys/0",
        "manifests/etc.nova.json",
        "manifests/var.lib.glance.images.json",
        "db/nova.sql.gz",
        "db/nova.sql.gz.manifest.json",
        "db/keystone.sql.gz",
    ] {
        assert!(
            snap.join(f).exists(),
            "{f} is missing from {}",
            snap.display()
        );
    }
    let cmp = cloud.backups_of("cmp01").join(latest(cloud, "cmp01"));
    assert!(cmp.join("files/etc/nova/nova.conf").exists());
    assert!(
        !cmp.join("files/var/lib/nova/instances").exists(),
        "instances are never backed up"
    );
    name
}

fn sabotage(cloud: &MiniCloud) {
    let db = mariadb::server();
    let p = &cloud.prefix;
    db.sql(&format!(
        "DROP TABLE `{p}_nova`.`instances`; DELETE FROM `{p}_glance`.`image_properties` WHERE id % 2 = 0;"
    ));
    let ctl = cloud.root("ctl01");
    ok(std::fs::remove_dir_all(ctl.join("etc/nova")));
    ok(std::fs::write(
        ctl.join("etc/glance/glance-api.conf"),
        "[DEFAULT]\nbind_port = 1\n",
    ));
    ok(std::fs::remove_file(ctl.join(
        "var/lib/glance/images/3f1c1a8e-6a2b-4b8e-9d0e-1b2c3d4e5f60",
    )));
    cloud.stop_unit("ctl01", "nova-api");
}

#[test]
fn backup_sabotage_and_restore_nova_and_glance() {
    let cloud = MiniCloud::start("mc1", 41);
    let files = cloud.node_files();
    let sums = cloud.db_checksums();
    let running = cloud.running();
    assert_eq!(running["ctl01"].len(), minicloud::CONTROL_UNITS.len());

    // The dry run of the first backup: every node planned (what earlier steps would
    // create is predicted, not failed), and nothing changed anywhere.
    let backup_yml = minicloud::shipped("playbooks/openstack/backup.yml");
    let plan = cloud.lifeboat(&["plan", &backup_yml.display().to_string()]);
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(plan.status.code(), Some(0), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    assert_eq!(cloud.node_files(), files, "the dry run changed files");
    assert_eq!(
        cloud.db_checksums(),
        sums,
        "the dry run changed the databases"
    );
    assert!(
        !cloud.backups_of("ctl01").exists(),
        "the dry run wrote a backup"
    );

    backup(&cloud);
    assert_eq!(
        cloud.node_files(),
        files,
        "a backup changes nothing on the nodes"
    );

    sabotage(&cloud);
    assert_ne!(cloud.db_checksums(), sums);
    assert!(!cloud.running()["ctl01"].contains(&"nova-api".to_string()));
    let compute_before = cloud.unit_pid("cmp01", "nova-compute");

    let out = expect(
        cloud.run("playbooks/openstack/restore-service.yml", &["service=nova"]),
        0,
    );
    assert!(out.contains("verify-files"), "{out}");
    // nova-compute on the compute node was stopped and started again.
    assert_ne!(cloud.unit_pid("cmp01", "nova-compute"), compute_before);
    expect(
        cloud.run(
            "playbooks/openstack/restore-service.yml",
            &["service=glance"],
        ),
        0,
    );

    assert_eq!(
        cloud.node_files(),
        files,
        "files are as they were backed up"
    );
    assert_eq!(
        cloud.db_checksums(),
        sums,
        "databases are as they were backed up"
    );
    assert_eq!(cloud.running(), running, "every daemon runs again");
    // The live directory of glance was moved aside, not deleted.
    let aside = ok(std::fs::read_dir(cloud.root("ctl01").join("etc")))
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("glance.orig-"));
    assert!(aside, "/etc/glance was moved aside");
    // The instance disk on the compute node was never touched.
    assert!(
        cloud
            .root("cmp01")
            .join("var/lib/nova/instances/6b1d2c3e-0000-4000-8000-000000000001/disk")
            .exists()
    );
}

/// Truncates a gzip dump and records the truncated file's sha256 in its manifest, as
/// if it had been damaged before its checksum was taken: the import starts, and fails
/// half way through the file.
fn corrupt_dump(dump: &Path) {
    use sha2::{Digest, Sha256};
    let data = ok(std::fs::read(dump));
    let cut = data[..data.len() / 2].to_vec();
    ok(std::fs::write(dump, &cut));
    let manifest_path = dump.with_file_name(format!(
        "{}.manifest.json",
        dump.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut manifest: serde_json::Value = ok(serde_json::from_str(&ok(std::fs::read_to_string(
        &manifest_path,
    ))));
    manifest["sha256"] = serde_json::Value::String(hex(&Sha256::digest(&cut)));
    manifest["size"] = serde_json::Value::from(cut.len());
    ok(std::fs::write(
        &manifest_path,
        ok(serde_json::to_string_pretty(&manifest)),
    ));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_restore_that_fails_half_way_leaves_the_cloud_as_it_was() {
    let cloud = MiniCloud::start("mc2", 44);
    let name = backup(&cloud);
    // Broken, but so that the daemons could still start: a rollback restarts what the
    // restore stopped, and a daemon without its /etc/nova would not start (as in life).
    let p = &cloud.prefix;
    mariadb::server().sql(&format!("DROP TABLE `{p}_nova`.`instances`"));
    ok(std::fs::write(
        cloud.root("ctl01").join("etc/nova/nova.conf"),
        "[DEFAULT]\ntransport_url = rabbit://wrong\n",
    ));
    ok(std::fs::remove_file(
        cloud.root("cmp01").join("etc/nova/nova.conf"),
    ));
    ok(std::fs::write(
        cloud.root("cmp01").join("etc/nova/extra.conf"),
        "x\n",
    ));
    cloud.stop_unit("ctl01", "nova-api");
    corrupt_dump(&cloud.backups_of("ctl01").join(&name).join("db/nova.sql.gz"));

    let files = cloud.node_files();
    let sums = cloud.db_checksums();
    let running = cloud.running();
    let pids: Vec<Option<u32>> = ["nova-conductor", "nova-scheduler"]
        .iter()
        .map(|u| cloud.unit_pid("ctl01", u))
        .collect();

    let out = expect(
        cloud.run("playbooks/openstack/restore-service.yml", &["service=nova"]),
        2,
    );
    assert!(out.contains("import-database"), "{out}");

    assert_eq!(cloud.node_files(), files, "files are as before the restore");
    assert_eq!(
        cloud.db_checksums(),
        sums,
        "databases are as before the restore"
    );
    assert_eq!(cloud.running(), running, "the same daemons run");
    // They were really stopped and started again by the rollback.
    let after: Vec<Option<u32>> = ["nova-conductor", "nova-scheduler"]
        .iter()
        .map(|u| cloud.unit_pid("ctl01", u))
        .collect();
    assert_ne!(after, pids);
}

#[test]
fn the_shipped_drills_and_verify_backups_pass_on_the_minicloud() {
    let cloud = MiniCloud::start("mc3", 47);
    let files = cloud.node_files();
    let sums = cloud.db_checksums();
    let running = cloud.running();

    let drill = |file: &str| {
        let path = minicloud::shipped(file).display().to_string();
        let out = cloud.lifeboat(&["drill", &path]);
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{file} failed\n{text}");
        text
    };
    let text = drill("drills/service-restore.yml");
    assert!(text.contains("RPO"), "{text}");
    assert_eq!(cloud.node_files(), files, "nova is back as it was");
    assert_eq!(cloud.db_checksums(), sums);
    assert_eq!(cloud.running(), running);

    drill("drills/db-sandbox.yml");
    assert!(!mariadb::server().has_database("lifeboat_sandbox"));

    expect(cloud.run("playbooks/openstack/verify-backups.yml", &[]), 0);
    // A damaged copy in the backup is found.
    let snap = cloud
        .backups_of("ctl01")
        .join(latest(&cloud, "ctl01"))
        .join("files/etc/keystone/keystone.conf");
    ok(std::fs::write(&snap, "tampered\n"));
    let out = expect(cloud.run("playbooks/openstack/verify-backups.yml", &[]), 2);
    assert!(out.contains("keystone.conf"), "{out}");
}
