//! The shipped OpenStack playbooks end to end on the mini-cloud (support/minicloud.rs):
//! a controller, a compute node and a backup host over real sshd, a real MariaDB, and
//! the OpenStack daemons played by small real processes.
//!
//! 1. backup, sabotage (drop tables, delete /etc/nova and a glance image, stop a
//!    daemon), restore nova and glance with restore-service.yml: files byte-identical
//!    to before, database checksums identical, every daemon running again;
//! 2. a restore that fails half way (a corrupt dump): the rollback leaves the cloud
//!    exactly as it was before the restore began;
//! 3. the shipped drills pass on the mini-cloud;
//! 4. restore-control-plane.yml after keystone, glance and nova are broken: the
//!    databases first, then the services one by one in their order, the compute node
//!    last (proved from the events file's timestamps), the services this cloud does not
//!    have skipped; restore-service.yml refuses a service the backup does not cover.

#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/minicloud.rs"]
mod minicloud;
#[path = "support/sshd.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::path::Path;

use minicloud::{MiniCloud, NodeRun};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn expect(code_and_output: (i32, String), code: i32) -> String {
    let (c, out) = code_and_output;
    assert_eq!(c, code, "unexpected exit code\n{out}");
    out
}

/// What a restore must bring back: every node's files, the databases, the daemons.
struct State {
    files: BTreeMap<String, (u32, Vec<u8>)>,
    sums: BTreeMap<String, String>,
    running: BTreeMap<String, Vec<String>>,
}

impl State {
    fn of(cloud: &MiniCloud) -> State {
        State {
            files: cloud.node_files(),
            sums: cloud.db_checksums(),
            running: cloud.running(),
        }
    }

    /// Asserts the cloud is in this state again; `since` ends the messages (`files are
    /// {since}`).
    #[track_caller]
    fn assert_again(&self, cloud: &MiniCloud, since: &str, daemons: &str) {
        assert_eq!(cloud.node_files(), self.files, "files are {since}");
        assert_eq!(cloud.db_checksums(), self.sums, "databases are {since}");
        assert_eq!(cloud.running(), self.running, "{daemons}");
    }
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
    let state = State::of(&cloud);
    let (files, sums) = (&state.files, &state.sums);
    assert_eq!(state.running["ctl01"].len(), minicloud::CONTROL_UNITS.len());

    // The dry run of the first backup: every node planned (what earlier steps would
    // create is predicted, not failed), and nothing changed anywhere.
    let backup_yml = minicloud::shipped("playbooks/openstack/backup.yml");
    let plan = cloud.lifeboat(&["plan", &backup_yml.display().to_string()]);
    let text = plan.stdout.clone();
    assert_eq!(plan.code, 0, "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    assert_eq!(&cloud.node_files(), files, "the dry run changed files");
    assert_eq!(
        &cloud.db_checksums(),
        sums,
        "the dry run changed the databases"
    );
    assert!(
        !cloud.backups_of("ctl01").exists(),
        "the dry run wrote a backup"
    );

    backup(&cloud);
    assert_eq!(
        &cloud.node_files(),
        files,
        "a backup changes nothing on the nodes"
    );

    sabotage(&cloud);
    assert_ne!(&cloud.db_checksums(), sums);
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

    state.assert_again(&cloud, "as they were backed up", "every daemon runs again");
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

    let state = State::of(&cloud);
    let pids: Vec<Option<u32>> = ["nova-conductor", "nova-scheduler"]
        .iter()
        .map(|u| cloud.unit_pid("ctl01", u))
        .collect();

    let out = expect(
        cloud.run("playbooks/openstack/restore-service.yml", &["service=nova"]),
        2,
    );
    assert!(out.contains("import-database"), "{out}");

    state.assert_again(&cloud, "as before the restore", "the same daemons run");
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
    let state = State::of(&cloud);

    let drill = |file: &str| {
        let path = minicloud::shipped(file).display().to_string();
        let out = cloud.lifeboat(&["drill", &path]);
        let text = format!("{}\n{}", out.stdout, out.stderr);
        assert_eq!(out.code, 0, "{file} failed\n{text}");
        text
    };
    let text = drill("drills/service-restore.yml");
    assert!(text.contains("RPO"), "{text}");
    assert_eq!(cloud.node_files(), state.files, "nova is back as it was");
    assert_eq!(cloud.db_checksums(), state.sums);
    assert_eq!(cloud.running(), state.running);

    drill("drills/db-sandbox.yml");
    assert!(!mariadb::server().has_database("lifeboat_sandbox"));

    let verify = cloud.run_events("playbooks/openstack/verify-backups.yml", &[]);
    assert_eq!(verify.code, 0, "{}", verify.out);
    for host in ["ctl01", "cmp01"] {
        let n = verify.node("warning-age", host);
        assert_eq!(n.status, "changed", "{host}: {}\n{}", n.msg, verify.out);
    }
    // A backup older than backup_warning_hours is a warning (`severity: warning`): the
    // run succeeds and says so; older than backup_critical_hours, the run fails.
    let stale = cloud.run_events(
        "playbooks/openstack/verify-backups.yml",
        &["-e", r#"{"backup_warning_hours": 0}"#],
    );
    assert_eq!(stale.code, 0, "{}", stale.out);
    for host in ["ctl01", "cmp01"] {
        let n = stale.node("warning-age", host);
        assert_eq!(n.status, "warning", "{host}: {}\n{}", n.msg, stale.out);
        assert_eq!(stale.node("critical-age", host).status, "changed");
        assert_eq!(stale.node("dumps", host).status, "changed", "{}", stale.out);
    }
    for want in [
        "the newest backup of ctl01 is older than 0 hours",
        "WARNINGS (2)",
        "warnings=1",
        "no step failed, with 2 warnings: ",
    ] {
        assert!(stale.out.contains(want), "no `{want}`\n{}", stale.out);
    }
    let (code, out) = cloud.run(
        "playbooks/openstack/verify-backups.yml",
        &[r#"{"backup_critical_hours": 0}"#],
    );
    assert_eq!(code, 2, "{out}");
    // The first host to fail stops the run: either one's message.
    assert!(
        ["ctl01", "cmp01"]
            .iter()
            .any(|h| out.contains(&format!("the newest backup of {h} is older than 0 hours"))),
        "{out}"
    );
    // A damaged copy in the backup is found.
    let snap = cloud
        .backups_of("ctl01")
        .join(latest(&cloud, "ctl01"))
        .join("files/etc/keystone/keystone.conf");
    ok(std::fs::write(&snap, "tampered\n"));
    let out = expect(cloud.run("playbooks/openstack/verify-backups.yml", &[]), 2);
    assert!(out.contains("keystone.conf"), "{out}");
}

/// Breaks keystone, glance and nova: tables dropped and rows deleted, configuration
/// changed and deleted, a fernet key and a glance image deleted, daemons stopped on
/// both nodes.
fn sabotage_control_plane(cloud: &MiniCloud) {
    let p = &cloud.prefix;
    cloud.db.sql(&format!(
        "DROP TABLE `{p}_keystone`.`assignment`; DELETE FROM `{p}_keystone`.`user` WHERE enabled = 0;
         DELETE FROM `{p}_glance`.`image_properties` WHERE id % 3 = 0;
         DROP TABLE `{p}_nova`.`instances`; UPDATE `{p}_nova`.`block_device_mapping` SET boot_index = 7;"
    ));
    let ctl = cloud.root("ctl01");
    ok(std::fs::write(
        ctl.join("etc/keystone/keystone.conf"),
        "[token]\nprovider = uuid\n",
    ));
    ok(std::fs::remove_file(ctl.join("etc/keystone/fernet-keys/1")));
    // Single files: one changed, one gone, one the backup recorded absent now there.
    ok(std::fs::write(
        ctl.join("etc/default/keystone"),
        "DAEMON_ARGS=\"--http-socket :5000 --processes 16\"\n",
    ));
    ok(std::fs::remove_file(ctl.join("etc/memcached.conf")));
    ok(std::fs::write(ctl.join("etc/default/nova-api"), "stray\n"));
    ok(std::fs::write(
        ctl.join("etc/glance/glance-api.conf"),
        "[DEFAULT]\nbind_port = 1\n",
    ));
    ok(std::fs::remove_file(ctl.join(
        "var/lib/glance/images/8d7e6f5a-4b3c-2d1e-0f9a-8b7c6d5e4f30",
    )));
    ok(std::fs::remove_dir_all(ctl.join("etc/nova")));
    let cmp = cloud.root("cmp01");
    ok(std::fs::write(
        cmp.join("etc/nova/nova.conf"),
        "[DEFAULT]\ncompute_driver = fake.FakeDriver\n",
    ));
    // A stray file in /var/lib/nova (synchronised in place with --delete).
    let stray = cmp.join("var/lib/nova/.ssh/known_hosts");
    ok(std::fs::write(&stray, "stray\n"));
    let owner = ok(std::fs::metadata(cmp.join("var/lib/nova/.ssh/config")));
    ok(std::os::unix::fs::chown(
        &stray,
        Some(std::os::unix::fs::MetadataExt::uid(&owner)),
        Some(std::os::unix::fs::MetadataExt::gid(&owner)),
    ));
    for unit in ["keystone", "glance-api", "nova-api"] {
        cloud.stop_unit("ctl01", unit);
    }
    cloud.stop_unit("cmp01", "nova-compute");
}

/// The earliest start and the latest end of the nodes that `pick` selects.
#[track_caller]
fn span(nodes: &[NodeRun], what: &str, pick: impl Fn(&NodeRun) -> bool) -> (f64, f64) {
    let picked: Vec<&NodeRun> = nodes.iter().filter(|n| pick(n)).collect();
    assert!(!picked.is_empty(), "no node of {what} ran");
    (
        picked.iter().map(|n| n.start).fold(f64::INFINITY, f64::min),
        picked
            .iter()
            .map(|n| n.end)
            .fold(f64::NEG_INFINITY, f64::max),
    )
}

/// Every node of `first` ended before any node of `then` started.
#[track_caller]
fn before(nodes: &[NodeRun], first: (&str, (f64, f64)), then: (&str, (f64, f64))) {
    // The end is start + duration: allow for the rounding of that sum.
    assert!(
        first.1.1 <= then.1.0 + 1e-9,
        "{} ended at {:.4}s, after {} began at {:.4}s\n{}",
        first.0,
        first.1.1,
        then.0,
        then.1.0,
        timeline(nodes)
    );
}

/// The nodes that did something, by start time: `start-end step@host status`.
fn timeline(nodes: &[NodeRun]) -> String {
    let mut busy: Vec<&NodeRun> = nodes.iter().filter(|n| n.status != "skipped").collect();
    busy.sort_by(|a, b| a.start.total_cmp(&b.start));
    busy.iter()
        .map(|n| {
            format!(
                "{:8.4}-{:8.4} {}@{} {}",
                n.start, n.end, n.step, n.host, n.status
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The control plane's services, in the order restore-control-plane.yml restores them.
const CONTROL_PLANE: [&str; 7] = [
    "keystone",
    "glance",
    "placement",
    "nova",
    "neutron",
    "cinder",
    "heat",
];

/// The nodes of a service's turn: its files, its control daemons, its verification.
fn turn_of(service: &str, n: &NodeRun) -> bool {
    ["files", "start", "verify"]
        .iter()
        .any(|phase| n.step.starts_with(&format!("{service}-{phase}.")))
        || n.step == format!("{service}-up")
}

#[test]
fn the_control_plane_is_restored_database_first_then_service_by_service_compute_last() {
    let cloud = MiniCloud::start("mc4", 50);
    let state = State::of(&cloud);
    backup(&cloud);

    // restore-service.yml refuses what it cannot restore, before touching anything.
    let out = expect(
        cloud.run(
            "playbooks/openstack/restore-service.yml",
            &["service=placement"],
        ),
        2,
    );
    assert!(
        out.contains(
            "placement is not in backup latest of ctl01 (it covers keystone, glance, nova)"
        ),
        "{out}"
    );
    let out = expect(cloud.run("playbooks/openstack/restore-service.yml", &[]), 2);
    assert!(
        out.contains("give it with -e service=NAME, NAME being one of ceilometer, cinder, glance, heat, keystone, neutron, nova, placement, rabbitmq, swift"),
        "{out}"
    );
    assert_eq!(
        cloud.node_files(),
        state.files,
        "a refused restore changes nothing"
    );

    sabotage_control_plane(&cloud);
    assert_ne!(cloud.node_files(), state.files);
    assert_ne!(cloud.db_checksums(), state.sums);
    assert_ne!(cloud.running(), state.running);

    let run = cloud.run_events("playbooks/openstack/restore-control-plane.yml", &[]);
    let (out, nodes) = (&run.out, &run.nodes);
    assert_eq!(run.code, 0, "{out}");

    // The proofs: files byte for byte, databases, daemons.
    state.assert_again(&cloud, "as they were backed up", "every daemon runs again");

    // The work was really done, by the steps whose order is checked below.
    let status = |step: &str, host: &str| format!("{step}@{host} {}", run.node(step, host).status);
    for service in ["keystone", "glance", "nova"] {
        // /etc/nova is gone from ctl01: nova's move-aside moves only the stray
        // /etc/default/nova-api (the backup recorded none: the restore leaves none).
        let aside = "changed";
        for (step, host, want) in [
            (
                format!("{service}-database.import-database"),
                "ctl01",
                "changed",
            ),
            (format!("{service}-files.move-aside"), "ctl01", aside),
            (format!("{service}-files.put-files"), "ctl01", "changed"),
            (format!("{service}-start.daemons"), "ctl01", "changed"),
            (format!("{service}-verify.verify-files"), "ctl01", "ok"),
        ] {
            assert_eq!(status(&step, host), format!("{step}@{host} {want}"));
        }
    }
    for (step, host, want) in [
        ("nova-stop.daemons", "ctl01", "changed"),
        // stopped by the sabotage already
        ("nova-stop-compute.daemons", "cmp01", "ok"),
        ("nova-files.move-aside", "cmp01", "changed"),
        ("nova-files.sync-files", "cmp01", "changed"),
        ("nova-start-compute.daemons", "cmp01", "changed"),
    ] {
        assert_eq!(status(step, host), format!("{step}@{host} {want}"));
    }
    // The services this cloud does not have (nor its backup) are skipped, every step.
    for service in ["placement", "neutron", "cinder", "heat"] {
        let theirs: Vec<&NodeRun> = nodes
            .iter()
            .filter(|n| {
                n.step.starts_with(&format!("{service}-")) && n.step != format!("{service}-up")
            })
            .collect();
        assert!(theirs.len() >= 20, "{service}: {theirs:#?}");
        for n in theirs {
            assert_eq!(n.status, "skipped", "{n:?}");
        }
    }

    // The order, from the events' timestamps.
    let stops_compute = span(nodes, "the compute stops", |n| {
        n.step.ends_with("-stop-compute.daemons")
    });
    let stops_control = span(nodes, "the control stops", |n| {
        n.step.ends_with("-stop.daemons")
    });
    let databases = span(nodes, "the database imports", |n| {
        n.step.ends_with("-database.import-database")
    });
    before(
        nodes,
        ("the compute stops", stops_compute),
        ("the control stops", stops_control),
    );
    before(
        nodes,
        ("every stop", stops_control),
        ("the databases", databases),
    );
    // Each node stops the control plane in the reverse order.
    let stop_of = |s: &str| {
        span(nodes, s, |n| {
            n.step == format!("{s}-stop.daemons") && n.host == "ctl01"
        })
    };
    for pair in CONTROL_PLANE.windows(2) {
        before(
            nodes,
            (pair[1], stop_of(pair[1])),
            (pair[0], stop_of(pair[0])),
        );
    }
    let turns: Vec<(f64, f64)> = CONTROL_PLANE
        .iter()
        .map(|s| span(nodes, s, |n| turn_of(s, n)))
        .collect();
    before(nodes, ("the databases", databases), ("keystone", turns[0]));
    for i in 1..CONTROL_PLANE.len() {
        before(
            nodes,
            (CONTROL_PLANE[i - 1], turns[i - 1]),
            (CONTROL_PLANE[i], turns[i]),
        );
    }
    let compute = span(nodes, "the compute starts", |n| {
        n.step.ends_with("-start-compute.daemons")
    });
    before(nodes, ("heat", turns[6]), ("the compute nodes", compute));
    let every_service = span(nodes, "the services", |n| {
        CONTROL_PLANE.iter().any(|s| turn_of(s, n))
    });
    before(
        nodes,
        ("every service", every_service),
        ("the compute nodes", compute),
    );
}
