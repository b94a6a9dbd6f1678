//! backup.yml's database paths on a one-node Galera cluster (support/mariadb.rs: Debian's
//! galera-4 provider, bootstrapped on loopback, with a general log) under the mini-cloud
//! (support/minicloud.rs):
//!
//! 1. `galera: true`: the node is desynchronised (`wsrep_desync = ON`) before the first
//!    dump statement reaches the server and put back in sync after the last one, as the
//!    server's general log shows; afterwards it is in sync (`Synced`) again;
//! 2. a dump that fails half way (a view over a dropped table): the rollback puts the
//!    node back in sync and leaves no half backup; with `--no-rollback` the node stays
//!    desynchronised until `lifeboat rollback RUN_ID`;
//! 3. `db_dump_all: true`: `db/all.sql.gz` holds every database and the grants, tests
//!    clean in verify-backups.yml, and rebuilds a whole (fresh) server with
//!    `mysql_restore`, tables checksum for checksum;
//! 4. `db_backup_method: physical` (on a server of its own): a chain of a full backup and
//!    an incremental, on the backup host, opened by verify-backups.yml;
//! 5. restore-control-plane.yml on a two-node Galera cluster (two servers of their own,
//!    the second joined by rsync SST): the other node stops before the first is restored
//!    and bootstraps a new cluster, then rejoins it by a full state transfer; both nodes
//!    hold the backup's checksums, the cluster has two nodes again.

#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/minicloud.rs"]
mod minicloud;
#[path = "support/sshd.rs"]
mod sshd;

use std::time::{Duration, Instant};

use minicloud::{MiniCloud, RunResult};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

const DESYNC: &str = "SET GLOBAL wsrep_desync = ON";
const RESYNC: &str = "SET GLOBAL wsrep_desync = OFF";

/// The thread id of a general log entry (`[time]<TAB><TAB>  12 Query<TAB>...`).
fn thread(entry: &str) -> String {
    entry
        .split('\t')
        .find(|f| !f.trim().is_empty() && !f.contains(':'))
        .and_then(|f| f.split_whitespace().next())
        .unwrap_or("")
        .to_string()
}

/// What the server received during one run: the positions of the desync and resync
/// statements, and of every statement of a dump tool's sessions (those that read a
/// table with `SQL_NO_CACHE`), with the number of such sessions.
struct Seen {
    desync: Vec<usize>,
    resync: Vec<usize>,
    dump: Vec<usize>,
    dump_sessions: usize,
    log: Vec<String>,
}

fn seen(db: &mariadb::MariaDb, from: usize) -> Seen {
    let log: Vec<String> = db.general_log().split_off(from);
    let at = |needle: &str| -> Vec<usize> {
        log.iter()
            .enumerate()
            .filter(|(_, e)| e.contains(needle))
            .map(|(i, _)| i)
            .collect()
    };
    let sessions: std::collections::BTreeSet<String> = log
        .iter()
        .filter(|e| e.contains("SQL_NO_CACHE"))
        .map(|e| thread(e))
        .collect();
    let dump: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, e)| sessions.contains(&thread(e)) && e.contains("Query"))
        .map(|(i, _)| i)
        .collect();
    Seen {
        desync: at(DESYNC),
        resync: at(RESYNC),
        dump,
        dump_sessions: sessions.len(),
        log,
    }
}

impl Seen {
    /// Desync once, before every dump statement; resync after every one of them.
    #[track_caller]
    fn dumps_inside_desync(&self, resyncs: usize) {
        let log = self.log.join("\n");
        assert_eq!(self.desync.len(), 1, "one desync\n{log}");
        assert_eq!(self.resync.len(), resyncs, "resyncs\n{log}");
        assert!(!self.dump.is_empty(), "no dump reached the server\n{log}");
        let first = self.dump[0];
        let last = self.dump[self.dump.len() - 1];
        assert!(
            self.desync[0] < first,
            "the node was desynchronised only after the dump began\n{log}"
        );
        assert!(
            self.resync[0] > last,
            "the node was put back in sync before the dump ended\n{log}"
        );
    }
}

/// The node is in sync again: `wsrep_desync` is OFF at once; the state follows shortly.
#[track_caller]
fn in_sync(db: &mariadb::MariaDb) {
    assert_eq!(db.variable("wsrep_desync"), "OFF");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = db.status("wsrep_local_state_comment");
        if state == "Synced" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node is still {state} 30s after its resync"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[track_caller]
fn expect_code(run: &RunResult, code: i32) {
    assert_eq!(run.code, code, "unexpected exit code\n{}", run.out);
}

fn latest(cloud: &MiniCloud) -> String {
    ok(std::fs::read_link(cloud.backups_of("ctl01").join("latest")))
        .display()
        .to_string()
}

#[test]
fn galera_desync_around_the_dumps_and_the_all_databases_dump() {
    let db = mariadb::galera();
    assert_eq!(db.status("wsrep_cluster_size"), "1");
    let cloud = MiniCloud::start_on("gal", 56, db);

    // 1. A backup of a Galera node, with the all-databases dump.
    let from = db.general_log().len();
    let run = cloud.run_events(
        "playbooks/openstack/backup.yml",
        &["-e", "galera=true", "-e", "db_dump_all=true"],
    );
    expect_code(&run, 0);
    let s = seen(db, from);
    // The three services' dumps and the all-databases one.
    assert_eq!(s.dump_sessions, 4, "{}", s.log.join("\n"));
    s.dumps_inside_desync(1);
    in_sync(db);
    assert_eq!(run.node("galera-desync", "ctl01").status, "changed");
    assert_eq!(run.node("galera-resync", "ctl01").status, "changed");
    let good = latest(&cloud);

    // 3. The all-databases dump: every database and the grants.
    let snap = cloud.backups_of("ctl01").join(&good);
    let all = snap.join("db/all.sql.gz");
    let manifest: serde_json::Value = ok(serde_json::from_str(&ok(std::fs::read_to_string(
        snap.join("db/all.sql.gz.manifest.json"),
    ))));
    assert_eq!(manifest["all_databases"], true, "{manifest}");
    let names: Vec<&str> = manifest["databases"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    for want in ["gal_nova", "gal_glance", "gal_keystone", "mysql"] {
        assert!(names.contains(&want), "{want} is not in {manifest}");
    }
    let verify = cloud.run_events("playbooks/openstack/verify-backups.yml", &[]);
    expect_code(&verify, 0);
    let dumps = &verify.node("dumps", "ctl01").stdout;
    for want in [
        "all.sql.gz ok",
        "nova.sql.gz ok",
        "glance.sql.gz ok",
        "keystone.sql.gz ok",
    ] {
        assert!(dumps.contains(want), "{want}: {dumps}");
    }
    // A fresh server, rebuilt whole from it by the mysql_restore module.
    let scratch = mariadb::start(mariadb::Options::default());
    let rebuild = cloud.dir.path().join("rebuild.yml");
    ok(std::fs::write(
        &rebuild,
        format!(
            "name: rebuild\nhosts: localhost\nsteps:\n  - id: import\n    mysql_restore:\n      src: {}\n      login_socket: {}\n      login_user: root\n",
            all.display(),
            scratch.socket.display()
        ),
    ));
    let out = cloud.lifeboat_with(&["run", &rebuild.display().to_string()], false);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        cloud.db_checksums_on(&scratch),
        cloud.db_checksums(),
        "the rebuilt server holds the same tables"
    );
    let grants = scratch.sql(&format!(
        "SELECT COUNT(*) FROM mysql.global_priv WHERE User = {}",
        mariadb::sql_literal(minicloud::DB_USER)
    ));
    assert_eq!(grants.trim(), "1", "the grants came with the dump");

    // 2. A dump that fails half way through: a view over a table that is gone makes
    // the dump tool stop in the middle of nova's database.
    db.sql(
        "USE `gal_nova`; CREATE TABLE doomed (id INT) ENGINE=InnoDB;
         CREATE VIEW broken AS SELECT id FROM doomed; DROP TABLE doomed;",
    );
    let from = db.general_log().len();
    let run = cloud.run_events("playbooks/openstack/backup.yml", &["-e", "galera=true"]);
    expect_code(&run, 2);
    let s = seen(db, from);
    assert!(
        s.log.iter().any(|e| e.contains("broken")),
        "the dump reached the view\n{}",
        s.log.join("\n")
    );
    // Put back in sync by the rollback of the desync step.
    s.dumps_inside_desync(1);
    in_sync(db);
    assert_eq!(run.node("dump-databases", "ctl01").status, "failed");
    assert_eq!(run.node("galera-resync", "ctl01").status, "not_run");
    assert_eq!(latest(&cloud), good, "latest still names the good backup");
    let snapshots: Vec<String> = ok(std::fs::read_dir(cloud.backups_of("ctl01")))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "latest")
        .collect();
    assert_eq!(
        snapshots,
        vec![good.clone()],
        "the failed backup left nothing"
    );

    // Without the rollback the node stays desynchronised, until the run is rolled back.
    let from = db.general_log().len();
    let run = cloud.run_events(
        "playbooks/openstack/backup.yml",
        &["-e", "galera=true", "--no-rollback"],
    );
    expect_code(&run, 3);
    assert_eq!(db.variable("wsrep_desync"), "ON");
    let out = cloud.lifeboat_with(&["rollback", &run.run_id], false);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    seen(db, from).dumps_inside_desync(1);
    in_sync(db);
    db.sql("DROP VIEW `gal_nova`.`broken`");
}

/// `db_backup_method: physical`: the first backup starts a chain with a full backup, the
/// second adds an incremental, both are copied to the backup host and recorded in their
/// snapshots, no dump is taken, and verify-backups.yml opens the chain up to the checked
/// snapshot's backup with a throw-away server. The server's files are readable by the mini-cloud's login user, who runs
/// mariadb-backup over ssh.
#[test]
fn physical_backups_make_a_chain_on_the_backup_host_that_verify_backups_opens() {
    let db: &'static mariadb::MariaDb = Box::leak(Box::new(mariadb::start(mariadb::Options {
        readable: true,
        ..mariadb::Options::default()
    })));
    let cloud = MiniCloud::start_on("phy", 53, db);
    let physical = ["-e", "db_backup_method=physical"];

    let first = cloud.run_events("playbooks/openstack/backup.yml", &physical);
    expect_code(&first, 0);
    assert_eq!(first.node("physical-backup", "ctl01").status, "changed");
    assert_eq!(first.node("dump-databases", "ctl01").status, "skipped");
    assert!(
        first
            .node("physical-backup", "ctl01")
            .msg
            .contains("made a full backup"),
        "{}",
        first.out
    );
    db.sql("UPDATE phy_nova.instances SET vm_state = 'shelved' WHERE id % 3 = 0");
    let second = cloud.run_events("playbooks/openstack/backup.yml", &physical);
    expect_code(&second, 0);
    assert!(
        second
            .node("physical-backup", "ctl01")
            .msg
            .contains("incremental 001-incr"),
        "{}",
        second.out
    );

    let snap = cloud.backups_of("ctl01").join(latest(&cloud));
    assert!(
        !snap.join("db/nova.sql.gz").exists(),
        "no dump with the physical method"
    );
    let record: serde_json::Value = ok(serde_json::from_str(&ok(std::fs::read_to_string(
        snap.join("db/physical.json"),
    ))));
    assert_eq!(record["name"], "001-incr", "{record}");
    let chain = record["chain"].as_str().expect("chain").to_string();
    let copy = cloud.backups_of("ctl01").join("physical").join(&chain);
    for piece in ["000-full", "001-incr"] {
        assert!(
            copy.join(piece).join("manifest.json").exists(),
            "{piece} on the backup host"
        );
    }

    let verify = cloud.run_events("playbooks/openstack/verify-backups.yml", &physical);
    expect_code(&verify, 0);
    let opened = verify.node("physical-opens", "ctl01");
    assert_eq!(opened.status, "ok", "{}", verify.out);
    assert!(
        opened
            .msg
            .contains(&format!("chain {chain} up to 001-incr")),
        "{}",
        opened.msg
    );
    assert!(opened.msg.contains("opens:"), "{}", opened.msg);
}

/// restore-control-plane.yml with `db_backup_method: physical`: after the databases are
/// broken, the whole server comes back from the snapshot's chain (copied from the backup
/// host, prepared, the server stopped, its datadir swapped, started): checksums of the
/// backup. The server runs as, and belongs to, the mini-cloud's login user, who stops and
/// starts it with its control script over ssh. restore-service.yml refuses the method.
/// Then the same from off-site: the chain sent to a restic repository by backup.yml's
/// offsite stage, restored with `restore_from: offsite` once the backup host is empty.
#[test]
fn restore_control_plane_restores_the_whole_server_from_a_physical_backup() {
    ok(sshd::ensure_user());
    let server: &'static mariadb::Controlled =
        Box::leak(Box::new(mariadb::start_controlled(mariadb::Options {
            owner: Some(sshd::USER),
            ..mariadb::Options::default()
        })));
    let mut cloud = MiniCloud::start_on("phr", 76, &server.db);
    let ctl = server.ctl.display().to_string();
    let settings = cloud.dir.path().join("physical.yml");
    ok(std::fs::write(
        &settings,
        format!(
            "db_backup_method: physical\ndb_datadir: {}\ndb_service: mariadb-test\ndb_service_manager: command\n\
db_service_commands: {{start: \"{ctl} start\", stop: \"{ctl} stop\", status: \"{ctl} status\"}}\n",
            server.datadir().display()
        ),
    ));
    let with_settings = format!("@{}", settings.display());
    let physical = ["-e", with_settings.as_str()];
    expect_code(
        &cloud.run_events("playbooks/openstack/backup.yml", &physical),
        0,
    );
    let at_backup = cloud.db_checksums();

    server.db.sql(
        "DROP TABLE phr_nova.instances; DELETE FROM phr_keystone.user WHERE enabled = 0; \
         UPDATE phr_glance.images SET status = 'killed';",
    );
    assert_ne!(cloud.db_checksums(), at_backup);

    let refused = cloud.run_events(
        "playbooks/openstack/restore-service.yml",
        &["-e", with_settings.as_str(), "-e", "service=nova"],
    );
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .out
            .contains("restore it with restore-control-plane.yml"),
        "{}",
        refused.out
    );

    let run = cloud.run_events("playbooks/openstack/restore-control-plane.yml", &physical);
    expect_code(&run, 0);
    assert_eq!(run.node("physical-database", "ctl01").status, "changed");
    assert_eq!(
        run.node("nova-database.import-database", "ctl01").status,
        "skipped",
        "no dump is imported"
    );
    assert!(server.running());
    assert_eq!(
        cloud.db_checksums(),
        at_backup,
        "the databases of the backup"
    );

    // Off-site: the chains go to a restic repository (a path on the backup host) with
    // the node's snapshot; once the backup host has lost everything, the server comes
    // back from the repository alone.
    let repo = cloud.dir.path().join("offsite");
    ok(std::fs::create_dir_all(&repo));
    let chown = ok(std::process::Command::new("chown")
        .arg(format!("{}:", sshd::USER))
        .arg(&repo)
        .output());
    assert!(chown.status.success());
    cloud.env = vec![("LIFEBOAT_OFFSITE_PASSWORD".into(), "phr-0ffsite".into())];
    let repo_setting = format!("offsite_repository={}/repo", repo.display());
    let offsite = ["-e", with_settings.as_str(), "-e", repo_setting.as_str()];
    let sent = cloud.run_events("playbooks/openstack/backup.yml", &offsite);
    expect_code(&sent, 0);
    assert_eq!(
        sent.node("offsite-send-physical", "ctl01").status,
        "changed"
    );
    let at_offsite = cloud.db_checksums();
    server
        .db
        .sql("DROP TABLE phr_keystone.assignment; DELETE FROM phr_nova.block_device_mapping;");
    assert_ne!(cloud.db_checksums(), at_offsite);
    ok(std::fs::remove_dir_all(
        cloud.root("bak01").join("srv/backup"),
    ));
    // Its plan changes nothing (and cannot name the chain before fetching it).
    let plan = cloud.run_events(
        "playbooks/openstack/restore-control-plane.yml",
        &[&offsite[..], &["-e", "restore_from=offsite", "--check"]].concat(),
    );
    expect_code(&plan, 0);
    let would = plan.node("physical-database", "ctl01");
    assert!(
        would.msg.starts_with("would restore chain (the newest)"),
        "{}",
        would.msg
    );
    assert_ne!(
        cloud.db_checksums(),
        at_offsite,
        "the plan restored nothing"
    );
    let run = cloud.run_events(
        "playbooks/openstack/restore-control-plane.yml",
        &[&offsite[..], &["-e", "restore_from=offsite"]].concat(),
    );
    expect_code(&run, 0);
    assert_eq!(run.node("fetch.offsite-fetch", "ctl01").status, "changed");
    assert_eq!(run.node("physical-fetch", "ctl01").status, "changed");
    assert_eq!(run.node("physical-stage", "ctl01").status, "skipped");
    assert_eq!(run.node("physical-database", "ctl01").status, "changed");
    assert!(server.running());
    assert_eq!(
        cloud.db_checksums(),
        at_offsite,
        "the databases of the off-site backup"
    );
}

/// restore-control-plane.yml with `db_backup_method: physical` on a two-node Galera
/// cluster: the second node (played by the compute host's inventory entry, with its
/// own datadir, control script and port in its host vars) stops before the first is
/// restored, and once the first has bootstrapped a new cluster from the backup it
/// rejoins by a full state transfer (galera_rejoin): both nodes hold the backup's
/// data, Synced, in a cluster of two.
#[test]
fn a_galera_cluster_is_restored_first_node_then_the_others_by_state_transfer() {
    ok(sshd::ensure_user());
    let first: &'static mariadb::Controlled =
        Box::leak(Box::new(mariadb::start_controlled(mariadb::Options {
            galera: true,
            owner: Some(sshd::USER),
            ..mariadb::Options::default()
        })));
    let second = mariadb::start_controlled(mariadb::Options {
        galera: true,
        owner: Some(sshd::USER),
        galera_join: first.gcomm_port,
        ..mariadb::Options::default()
    });
    assert_eq!(second.db.status("wsrep_cluster_size"), "2");
    let cloud = MiniCloud::start_on("gss", 87, &first.db);
    let (_, user, password) = cloud.db_login();
    let node = |c: &mariadb::Controlled| {
        let ctl = c.ctl.display().to_string();
        serde_json::json!({
            "db_datadir": c.datadir().display().to_string(),
            "db_service_commands": {
                "start": format!("{ctl} start"),
                "stop": format!("{ctl} stop"),
                "status": format!("{ctl} status"),
            },
        })
    };
    cloud.set_vars(Some("ctl01"), node(first));
    let mut other = node(&second);
    for (k, v) in [
        ("db_defaults_file", serde_json::json!("")),
        ("db_login_host", serde_json::json!("127.0.0.1")),
        ("db_login_port", serde_json::json!(second.db.port)),
        ("db_login_user", serde_json::json!(user)),
        ("db_password", serde_json::json!(password)),
    ] {
        other[k] = v;
    }
    cloud.set_vars(Some("cmp01"), other);
    let settings = cloud.dir.path().join("galera.yml");
    ok(std::fs::write(
        &settings,
        "db_backup_method: physical\ngalera: true\ngalera_nodes: [cmp01]\ndb_service: mariadb-test\ndb_service_manager: command\n",
    ));
    let with_settings = format!("@{}", settings.display());
    let args = ["-e", with_settings.as_str()];
    expect_code(
        &cloud.run_events("playbooks/openstack/backup.yml", &args),
        0,
    );
    let at_backup = cloud.db_checksums();

    first
        .db
        .sql("DROP TABLE gss_nova.instances; DELETE FROM gss_keystone.user WHERE enabled = 0;");
    assert_ne!(
        cloud.db_checksums_on(&second.db),
        at_backup,
        "the loss reached the other node"
    );

    // The dry run says what it would do to the other node, and does nothing.
    let pid = || ok(std::fs::read_to_string(second.db.dir.join("mysqld.pid")));
    let before = pid();
    let plan = cloud.run_events(
        "playbooks/openstack/restore-control-plane.yml",
        &[&args[..], &["--check"]].concat(),
    );
    expect_code(&plan, 0);
    let would = plan.node("galera-rejoin", "cmp01");
    assert!(
        would
            .msg
            .starts_with("would stop mariadb-test (command), move grastate.dat"),
        "{}",
        would.msg
    );
    assert!(second.datadir().join("grastate.dat").exists());
    assert_eq!(pid(), before, "the other node was not restarted");
    assert_ne!(cloud.db_checksums_on(&second.db), at_backup);

    let run = cloud.run_events("playbooks/openstack/restore-control-plane.yml", &args);
    assert_eq!(
        run.code,
        0,
        "{}\nthe other node's log:\n{}",
        run.out,
        std::fs::read_to_string(second.db.dir.join("error.log")).unwrap_or_default()
    );
    expect_code(&run, 0);
    let stop = run.node("galera-others-stop", "cmp01");
    let restore = run.node("physical-database", "ctl01");
    let rejoin = run.node("galera-rejoin", "cmp01");
    assert_eq!(stop.status, "changed", "{}", run.out);
    assert_eq!(restore.status, "changed");
    assert_eq!(rejoin.status, "changed", "{}", rejoin.msg);
    assert!(
        stop.end <= restore.start,
        "the other node stops before the restore"
    );
    assert!(restore.end <= rejoin.start, "and rejoins after it");
    assert!(rejoin.msg.contains("cluster size 2"), "{}", rejoin.msg);
    assert_eq!(run.node("galera-others-stop", "ctl01").status, "skipped");
    for db in [&first.db, &second.db] {
        assert_eq!(db.status("wsrep_local_state_comment"), "Synced");
        assert_eq!(db.status("wsrep_cluster_size"), "2");
        assert_eq!(
            cloud.db_checksums_on(db),
            at_backup,
            "both nodes hold the backup"
        );
    }
}
