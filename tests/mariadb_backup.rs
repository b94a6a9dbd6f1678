//! `mariadb_backup` against real MariaDB servers under a control script
//! (tests/support/mariadb.rs `start_controlled`), each test with a server of its own
//! because restores stop it and swap its datadir: a full backup and two incrementals
//! with writes between them, restored to the moment of the last incremental (checksums
//! identical, later writes gone); prepare into a scratch directory; a broken chain
//! refused before the server is stopped; a restore that fails after the datadir moved,
//! put back with the server running on the old data; the rollback of a run that
//! restored (the old datadir back, the restored one kept aside); the disaster case, a
//! server down with an empty datadir, restored then rolled back: down again, the restore
//! kept at the printed path; the Galera variant (desync, position, bootstrap); the dry run; load-time
//! checks.

#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/sshd.rs"]
mod sshd;
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use mariadb::{Controlled, Options, PASSWORD, start_controlled};
use support::modules::{context, failure, ok, run, undo};

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn with(base: Json, more: Json) -> Json {
    let mut m = base.as_object().cloned().unwrap_or_default();
    for (k, v) in more.as_object().cloned().unwrap_or_default() {
        m.insert(k, v);
    }
    Json::Object(m)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// `CHECKSUM TABLE` of every table of the `pb_*` databases, by table.
fn checksums(db: &mariadb::MariaDb) -> BTreeMap<String, String> {
    let tables = db.sql(
        "SELECT CONCAT('`', table_schema, '`.`', table_name, '`') FROM information_schema.tables \
         WHERE table_schema LIKE 'pb\\_%' AND table_type = 'BASE TABLE' ORDER BY 1",
    );
    let list: Vec<&str> = tables.lines().filter(|l| !l.is_empty()).collect();
    assert!(!list.is_empty(), "there are tables to checksum");
    db.sql(&format!("CHECKSUM TABLE {}", list.join(", ")))
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, c)| (t.to_string(), c.to_string()))
        .collect()
}

/// A controlled server with OpenStack-like databases, and a chain store.
fn setup(opts: Options) -> (Controlled, tempfile::TempDir) {
    let server = start_controlled(opts);
    server.db.load_openstack("pb");
    let store = tempfile::Builder::new()
        .prefix("lifeboat-chains-")
        .tempdir()
        .expect("tempdir");
    (server, store)
}

fn backup_args(server: &Controlled, store: &Path, action: &str) -> Json {
    with(
        server.db.login(),
        json!({ "action": action, "dir": s(store) }),
    )
}

fn restore_args(server: &Controlled, store: &Path) -> Json {
    with(
        with(server.db.login(), server.service_args()),
        json!({ "action": "restore", "dir": s(store), "datadir": s(&server.datadir()) }),
    )
}

fn read_json(p: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("JSON")
}

/// A playbook that restores the chains of `dir` into `datadir` of the controlled server
/// (the password from the file `db-password`), then runs `rest` (more steps).
fn restore_then(server: &Controlled, dir: &Path, datadir: &Path, rest: &str) -> String {
    format!(
        r#"
secrets:
  db_password: {{ file: db-password }}
steps:
  - id: restore
    mariadb_backup:
      action: restore
      dir: {dir}
      datadir: {datadir}
      service: mariadb-test
      manager: command
      commands: {{ start: "{ctl} start", stop: "{ctl} stop", status: "{ctl} status" }}
      login_host: 127.0.0.1
      login_port: {port}
      login_user: lifeboat
      login_password: "{{{{ db_password }}}}"
{rest}"#,
        dir = s(dir),
        datadir = s(datadir),
        ctl = s(&server.ctl),
        port = server.db.port,
    )
}

fn server_pid(server: &Controlled) -> String {
    std::fs::read_to_string(server.db.dir.join("mysqld.pid"))
        .expect("pid file")
        .trim()
        .to_string()
}

/// Full, write, incremental, write, incremental: returns the chain's name and the
/// checksums at the moment of the last incremental.
fn chain_of_three(server: &Controlled, store: &Path) -> (String, BTreeMap<String, String>) {
    let rt = runtime();
    let ctx = context("db1");
    let full = rt.block_on(ok(
        "mariadb_backup",
        &ctx,
        &backup_args(server, store, "full"),
    ));
    assert!(full.changed);
    let chain = full.data["chain"].as_str().expect("chain").to_string();
    assert_eq!(full.data["kind"], "full");
    assert_eq!(full.data["name"], "000-full");
    server.db.sql(
        "UPDATE pb_nova.instances SET vm_state = 'migrating' WHERE id % 5 = 0;
         USE pb_glance; INSERT INTO pb_glance.images SELECT UUID(), CONCAT('new-', seq), seq, 'queued', MD5(seq), 'private' FROM seq_1_to_300;",
    );
    let first = rt.block_on(ok(
        "mariadb_backup",
        &ctx,
        &backup_args(server, store, "incremental"),
    ));
    assert_eq!(first.data["name"], "001-incr");
    assert_eq!(
        first.data["from_lsn"], full.data["to_lsn"],
        "{:?}",
        first.data
    );
    server.db.sql(
        "DELETE FROM pb_keystone.assignment WHERE actor_id LIKE 'a%';
         UPDATE pb_nova.block_device_mapping SET boot_index = 1 WHERE boot_index IS NULL;
         CREATE TABLE pb_nova.migrations (id INT PRIMARY KEY, status VARCHAR(16)) ENGINE=InnoDB;
         USE pb_nova; INSERT INTO pb_nova.migrations SELECT seq, 'done' FROM seq_1_to_50;",
    );
    let second = rt.block_on(ok(
        "mariadb_backup",
        &ctx,
        &backup_args(server, store, "incremental"),
    ));
    assert_eq!(second.data["name"], "002-incr");
    assert_eq!(second.data["from_lsn"], first.data["to_lsn"]);
    assert_eq!(second.data["chain"], chain.as_str());
    (chain, checksums(&server.db))
}

#[test]
fn a_full_backup_and_two_incrementals_restore_to_the_moment_of_the_last() {
    let (server, store) = setup(Options::default());
    let (chain, at_last) = chain_of_three(&server, store.path());

    // Each piece's manifest describes its stream file.
    for name in ["000-full", "001-incr", "002-incr"] {
        let dir = store.path().join(&chain).join(name);
        let m = read_json(&dir.join("manifest.json"));
        assert_eq!(m["format"], "lifeboat-mariadb-backup/1");
        assert_eq!(m["chain"], chain.as_str());
        let file = dir.join(m["file"].as_str().expect("file"));
        let bytes = std::fs::read(&file).expect("stream file");
        assert_eq!(m["size"], bytes.len() as u64);
        assert_eq!(m["sha256"], format!("{:x}", Sha256::digest(&bytes)));
        assert!(
            m["server_version"]
                .as_str()
                .is_some_and(|v| v.contains("MariaDB"))
        );
        assert!(
            !std::fs::read_to_string(dir.join("manifest.json"))
                .expect("read")
                .contains("p4ss")
        );
    }
    assert!(
        std::fs::read_dir(store.path().join(&chain))
            .expect("chain dir")
            .all(|e| !e
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .starts_with('.')),
        "no temporary directory is left in the chain"
    );

    // Writes after the last incremental are not in the restore.
    server
        .db
        .sql("UPDATE pb_nova.instances SET memory_mb = 1; DROP TABLE pb_nova.migrations;");
    assert_ne!(checksums(&server.db), at_last);

    let rt = runtime();
    let ctx = context("db1");
    let before_pid = server_pid(&server);
    let out = rt.block_on(ok(
        "mariadb_backup",
        &ctx,
        &restore_args(&server, store.path()),
    ));
    assert!(out.changed);
    assert_eq!(
        out.data["backups"],
        json!(["000-full", "001-incr", "002-incr"])
    );
    assert!(server.running());
    assert_ne!(server_pid(&server), before_pid, "the server was restarted");
    assert_eq!(
        checksums(&server.db),
        at_last,
        "the data of the last incremental"
    );
    assert!(
        out.data["downtime_seconds"]
            .as_f64()
            .is_some_and(|d| d > 0.0)
    );
    let old = out.data["old_datadir"]
        .as_str()
        .expect("old datadir kept aside");
    assert!(
        Path::new(old).join("ibdata1").exists(),
        "the old datadir is kept aside"
    );
    // The login user came back with the data, and the restored files are the old owner's.
    assert_eq!(
        server
            .db
            .sql("SELECT COUNT(*) FROM pb_nova.migrations")
            .trim(),
        "50"
    );
}

#[test]
fn prepare_applies_a_chain_into_a_scratch_directory() {
    let (server, store) = setup(Options::default());
    let (chain, at_last) = chain_of_three(&server, store.path());
    let scratch = tempfile::tempdir().expect("tempdir");
    let target = scratch.path().join("prepared");
    let rt = runtime();
    let ctx = context("db1");
    let args =
        json!({ "action": "prepare", "dir": s(store.path()), "target": s(&target), "upto": 1 });
    let out = rt.block_on(ok("mariadb_backup", &ctx, &args));
    assert_eq!(out.data["backups"], json!(["000-full", "001-incr"]));
    let checkpoints =
        std::fs::read_to_string(target.join("xtrabackup_checkpoints")).expect("checkpoints");
    assert!(
        checkpoints.contains("backup_type = log-applied"),
        "{checkpoints}"
    );
    let incr = read_json(&store.path().join(&chain).join("001-incr/manifest.json"));
    assert!(
        checkpoints.contains(&format!("to_lsn = {}", incr["to_lsn"])),
        "prepared up to 001-incr: {checkpoints}"
    );
    assert!(target.join("pb_nova").join("instances.ibd").exists());
    assert!(!Path::new(&format!("{}.lifeboat-incr", s(&target))).exists());

    // A non-empty target is refused; the rollback removes what prepare made.
    let again = failure(rt.block_on(run("mariadb_backup", &ctx, &args)));
    assert!(again.contains("is not empty"), "{again}");
    rt.block_on(undo("mariadb_backup", &ctx, &args, &out))
        .expect("undo");
    assert!(!target.exists());

    // verify opens the whole chain with a throw-away server: the tables of the moment of
    // the last incremental, and nothing left behind.
    let v = rt.block_on(ok(
        "mariadb_backup",
        &ctx,
        &json!({ "action": "verify", "dir": s(store.path()) }),
    ));
    assert!(!v.changed);
    let seen: BTreeMap<String, String> = v.data["checksums"]
        .as_object()
        .expect("checksums")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    assert_eq!(seen, at_last);
    assert!(
        v.data["databases"]
            .as_array()
            .is_some_and(|d| d.contains(&json!("pb_nova")))
    );
    let hidden: Vec<String> = std::fs::read_dir(store.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // A damaged stream is found by its sha256 before it is applied.
    let file = store.path().join(&chain).join("001-incr").join(
        read_json(&store.path().join(&chain).join("001-incr/manifest.json"))["file"]
            .as_str()
            .expect("file"),
    );
    let mut bytes = std::fs::read(&file).expect("read");
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&file, bytes).expect("write");
    let damaged = failure(rt.block_on(run("mariadb_backup", &ctx, &args)));
    assert!(
        damaged.contains("001-incr")
            && (damaged.contains("damaged") || damaged.contains("cannot unpack")),
        "{damaged}"
    );
    assert!(!target.exists(), "a failed prepare leaves nothing behind");
    let e = failure(rt.block_on(run(
        "mariadb_backup",
        &ctx,
        &json!({ "action": "verify", "dir": s(store.path()) }),
    )));
    assert!(e.contains("001-incr"), "{e}");
}

#[test]
fn a_broken_chain_is_refused_before_the_server_is_stopped() {
    let (server, store) = setup(Options::default());
    let (chain, _) = chain_of_three(&server, store.path());
    std::fs::remove_dir_all(store.path().join(&chain).join("001-incr")).expect("remove 001");
    let before = checksums(&server.db);
    let pid = server_pid(&server);
    let rt = runtime();
    let ctx = context("db1");
    let e = failure(rt.block_on(run(
        "mariadb_backup",
        &ctx,
        &restore_args(&server, store.path()),
    )));
    assert!(
        e.contains(&format!(
            "chain {chain} is broken: backup 001 is missing (002-incr builds on it"
        )) && e.contains("upto: 0"),
        "{e}"
    );
    assert_eq!(server_pid(&server), pid, "the server was never stopped");
    assert_eq!(checksums(&server.db), before);
    let leftovers: Vec<String> = std::fs::read_dir(&server.db.dir)
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lifeboat"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "nothing was prepared or moved: {leftovers:?}"
    );

    // The same chain restores up to the full backup; an incremental refuses to build on it.
    let inc = failure(rt.block_on(run(
        "mariadb_backup",
        &ctx,
        &backup_args(&server, store.path(), "incremental"),
    )));
    assert!(inc.contains("backup 001 is missing"), "{inc}");
}

#[test]
fn a_restore_that_fails_after_the_datadir_moved_puts_the_old_one_back() {
    let (server, store) = setup(Options::default());
    chain_of_three(&server, store.path());
    server
        .db
        .sql("UPDATE pb_nova.instances SET hostname = 'after-the-backup'");
    let before = checksums(&server.db);
    let rt = runtime();
    let ctx = context("db1");
    // A failure before the datadir moves (galera: true, but the backup has no Galera
    // position): the server, stopped for the swap, runs again on its untouched data.
    let pid = server_pid(&server);
    let e = failure(rt.block_on(run(
        "mariadb_backup",
        &ctx,
        &with(
            restore_args(&server, store.path()),
            json!({ "galera": true }),
        ),
    )));
    assert!(
        e.contains("no Galera position")
            && e.contains("nothing was moved; mariadb-test (command) was started again"),
        "{e}"
    );
    assert!(server.running());
    assert_ne!(server_pid(&server), pid, "it was stopped for the swap");
    assert_eq!(checksums(&server.db), before);
    // The owner does not exist: the files were moved in, the chown fails.
    let args = with(
        restore_args(&server, store.path()),
        json!({ "owner": "no-such-user-lb:no-such-group-lb" }),
    );
    let e = failure(rt.block_on(run("mariadb_backup", &ctx, &args)));
    assert!(
        e.contains("the old datadir was put back and mariadb-test (command) started on it"),
        "{e}"
    );
    assert!(server.running());
    assert_eq!(
        checksums(&server.db),
        before,
        "the data of before the restore"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&server.db.dir)
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lifeboat"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A restore that succeeded is undone by the rollback the same way.
    let out = rt.block_on(ok(
        "mariadb_backup",
        &ctx,
        &restore_args(&server, store.path()),
    ));
    assert_ne!(checksums(&server.db), before);
    let back = rt
        .block_on(undo(
            "mariadb_backup",
            &ctx,
            &restore_args(&server, store.path()),
            &out,
        ))
        .expect("undo");
    assert!(back.changed, "{back:?}");
    assert!(server.running());
    assert_eq!(checksums(&server.db), before);
    // The restored datadir is kept aside, not removed, and the message says where.
    let kept = lifeboat_paths(&server);
    assert_eq!(kept, ["data.lifeboat-restored-test"], "{back:?}");
    assert!(
        server
            .db
            .dir
            .join(&kept[0])
            .join("pb_nova/instances.ibd")
            .exists(),
        "the restored copy is whole"
    );
    assert!(
        back.msg.as_deref().is_some_and(
            |m| m.contains(&kept[0]) && m.contains("mariadb-test (command) runs on it")
        ),
        "{back:?}"
    );

    // The server down and its datadir empty: a restore that fails puts the empty datadir
    // back and leaves the server stopped, as it was (it does not try to start it there).
    stop(&server);
    let datadir = server.datadir();
    std::fs::remove_dir_all(&datadir).expect("remove the datadir");
    std::fs::create_dir(&datadir).expect("an empty datadir");
    let e = failure(rt.block_on(run("mariadb_backup", &ctx, &args)));
    assert!(
        e.contains("the old datadir was put back; mariadb-test (command) is left stopped, as it was before the step"),
        "{e}"
    );
    assert!(!server.running());
    assert!(
        std::fs::read_dir(&datadir)
            .expect("the datadir")
            .next()
            .is_none(),
        "the empty datadir is back"
    );
}

#[test]
fn a_run_that_fails_after_a_physical_restore_rolls_it_back_and_a_dry_run_changes_nothing() {
    let (server, store) = setup(Options::default());
    chain_of_three(&server, store.path());
    server
        .db
        .sql("UPDATE pb_glance.images SET status = 'killed'");
    let before = checksums(&server.db);
    let pid = server_pid(&server);
    let playbook = restore_then(
        &server,
        store.path(),
        &server.datadir(),
        &format!(
            r#"  - id: verify
    needs: [restore]
    mysql_query:
      query: SELECT COUNT(*) AS n FROM pb_glance.images WHERE status = 'killed'
      login_host: 127.0.0.1
      login_port: {port}
      login_user: lifeboat
      login_password: "{{{{ db_password }}}}"
    register: killed
  - id: then-fail
    needs: [verify]
    assert: killed.data.rows[0].n == "999999"
"#,
            port = server.db.port,
        ),
    );
    // The dry run: the plan, and nothing stopped or moved.
    let plan = support::Test::new()
        .playbook(&playbook)
        .file("db-password", PASSWORD)
        .args(&["--check"])
        .run();
    assert_eq!(
        plan.status("restore", "localhost"),
        "would_change",
        "{plan:?}"
    );
    assert!(
        plan.msg("restore", "localhost")
            .contains("would prepare chain")
            && plan
                .msg("restore", "localhost")
                .contains("stop mariadb-test (command)"),
        "{plan:?}"
    );
    assert_eq!(server_pid(&server), pid);
    assert_eq!(checksums(&server.db), before);

    let out = support::Test::new()
        .playbook(&playbook)
        .file("db-password", PASSWORD)
        .run();
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.status("restore", "localhost"), "changed");
    assert_eq!(out.status("verify", "localhost"), "ok");
    assert_eq!(
        out.rollback_status("restore", "localhost"),
        "done",
        "{out:?}"
    );
    assert!(!out.stdout.contains("p4ss") && !out.stderr.contains("p4ss"));
    assert!(server.running());
    assert_eq!(
        checksums(&server.db),
        before,
        "the rollback put the old datadir back"
    );
}

/// Names in the server's directory that lifeboat made (moved aside, kept, prepared).
fn lifeboat_paths(server: &Controlled) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&server.db.dir)
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lifeboat"))
        .collect();
    names.sort();
    names
}

fn stop(server: &Controlled) {
    let stopped = std::process::Command::new(&server.ctl)
        .arg("stop")
        .status()
        .expect("run ctl stop");
    assert!(stopped.success(), "ctl stop");
    assert!(!server.running());
}

#[test]
fn the_rollback_of_a_restore_onto_a_lost_datadir_keeps_the_restore_and_leaves_the_server_down() {
    let (server, store) = setup(Options::default());
    let rt = runtime();
    rt.block_on(ok(
        "mariadb_backup",
        &context("db1"),
        &backup_args(&server, store.path(), "full"),
    ));
    let at_backup = checksums(&server.db);
    // The disaster: the server is down and its datadir empty.
    stop(&server);
    let datadir = server.datadir();
    for entry in std::fs::read_dir(&datadir).expect("read the datadir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove");
        } else {
            std::fs::remove_file(&path).expect("remove");
        }
    }
    let playbook = restore_then(
        &server,
        store.path(),
        &datadir,
        &format!(
            r#"  - id: count
    needs: [restore]
    mysql_query:
      query: SELECT COUNT(*) AS n FROM pb_nova.instances
      login_host: 127.0.0.1
      login_port: {port}
      login_user: lifeboat
      login_password: "{{{{ db_password }}}}"
    register: counted
  - id: then-fail
    needs: [count]
    assert: counted.data.rows[0].n == "-1"
"#,
            port = server.db.port,
        ),
    );
    let out = support::Test::new()
        .playbook(&playbook)
        .file("db-password", PASSWORD)
        .run();
    assert_eq!(out.code, 2, "the rollback is complete: {out:?}");
    assert_eq!(out.status("restore", "localhost"), "changed", "{out:?}");
    assert_eq!(
        out.status("count", "localhost"),
        "ok",
        "the server answered with the restored data: {out:?}"
    );
    assert_eq!(out.status("then-fail", "localhost"), "failed");
    assert_eq!(
        out.rollback_status("restore", "localhost"),
        "done",
        "{out:?}"
    );

    // The state of before the step: the server down, its datadir empty.
    assert!(!server.running(), "the server stays stopped, as it was");
    assert!(
        std::fs::read_dir(&datadir)
            .expect("the datadir is back")
            .next()
            .is_none(),
        "the empty datadir is back"
    );
    // The restored datadir is kept beside it, and its path is printed.
    let kept: Vec<String> = lifeboat_paths(&server);
    assert_eq!(
        kept.len(),
        1,
        "only the restored copy is left beside the datadir: {kept:?}"
    );
    assert!(kept[0].starts_with("data.lifeboat-restored-"), "{kept:?}");
    let kept = server.db.dir.join(&kept[0]);
    assert!(
        out.stdout.contains(&s(&kept)),
        "the console prints where the restore is kept ({}): {}",
        kept.display(),
        out.stdout
    );
    let undone = out
        .rollback_nodes()
        .into_iter()
        .find(|n| n["step"] == "restore")
        .and_then(|n| n["msg"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        undone.contains(&s(&kept))
            && undone.contains("not removed")
            && undone.contains("stopped, as it was before the step"),
        "{undone}"
    );
    for file in ["pb_nova/instances.ibd", "mysql/db.frm", "ibdata1"] {
        assert!(kept.join(file).exists(), "{file} is in the kept restore");
    }
    assert!(
        store
            .path()
            .read_dir()
            .expect("the chain store")
            .next()
            .is_some(),
        "the chain is still there"
    );

    // The kept copy is the whole restore: moved back by hand, the server runs on it.
    std::fs::remove_dir(&datadir).expect("remove the empty datadir");
    std::fs::rename(&kept, &datadir).expect("move the restore back");
    let started = std::process::Command::new(&server.ctl)
        .arg("start")
        .status()
        .expect("run ctl start");
    assert!(started.success(), "ctl start");
    server.db.wait_ready(Options::default(), || {});
    assert_eq!(
        checksums(&server.db),
        at_backup,
        "the kept copy is the backup's data"
    );

    // Restored into a datadir that was not there, with the server down: the rollback
    // leaves no datadir and the server down, and keeps the restore.
    stop(&server);
    let gone = server.db.dir.join("data.gone");
    std::fs::rename(&datadir, &gone).expect("move the datadir away");
    let ctx = context("db1");
    let args = restore_args(&server, store.path());
    let restored = rt.block_on(ok("mariadb_backup", &ctx, &args));
    assert!(server.running());
    assert_eq!(restored.data["old_datadir"], Json::Null);
    let back = rt
        .block_on(undo("mariadb_backup", &ctx, &args, &restored))
        .expect("undo");
    assert!(!server.running(), "{back:?}");
    assert!(!datadir.exists(), "no datadir, as before: {back:?}");
    let kept: Vec<String> = lifeboat_paths(&server);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        back.msg.as_deref().is_some_and(|m| m.contains(&kept[0])),
        "{back:?}"
    );
    assert!(
        server
            .db
            .dir
            .join(&kept[0])
            .join("pb_nova/instances.ibd")
            .exists()
    );
}

#[test]
fn backups_roll_back_and_start_new_chains_when_asked() {
    let server = start_controlled(Options::default());
    server.db.load_openstack("pb");
    let store = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let ctx = context("db1");
    // No chain yet: an incremental fails with what to do, or makes a full backup.
    let e = failure(rt.block_on(run(
        "mariadb_backup",
        &ctx,
        &backup_args(&server, store.path(), "incremental"),
    )));
    assert!(
        e.contains("no complete full backup") && e.contains("full_if_missing"),
        "{e}"
    );
    let auto = with(
        backup_args(&server, store.path(), "incremental"),
        json!({ "full_if_missing": true, "max_incrementals": 1 }),
    );
    let a = rt.block_on(ok("mariadb_backup", &context("db1"), &auto));
    assert_eq!(a.data["kind"], "full", "{:?}", a.msg);
    let b = rt.block_on(ok("mariadb_backup", &ContextWith::run_id("r2"), &auto));
    assert_eq!(b.data["name"], "001-incr");
    let c = rt.block_on(ok("mariadb_backup", &ContextWith::run_id("r3"), &auto));
    assert_eq!(
        c.data["kind"], "full",
        "max_incrementals reached: {:?}",
        c.msg
    );
    assert_eq!(c.data["chain"], "r3");
    assert!(
        c.msg
            .as_deref()
            .is_some_and(|m| m.contains("max_incrementals 1"))
    );

    // The rollback removes the backup and the chain a full backup made.
    rt.block_on(undo("mariadb_backup", &ctx, &auto, &c))
        .expect("undo");
    assert!(!store.path().join("r3").exists());
    rt.block_on(undo("mariadb_backup", &ctx, &auto, &b))
        .expect("undo");
    assert!(!store.path().join("test/001-incr").exists());
    assert!(store.path().join("test/000-full/manifest.json").exists());

    // A dry run makes nothing.
    let check = rt.block_on(ok(
        "mariadb_backup",
        &lifeboat::modules::ModuleContext {
            check: true,
            ..context("db1")
        },
        &backup_args(&server, store.path(), "incremental"),
    ));
    assert!(check.changed);
    assert!(
        check
            .msg
            .as_deref()
            .is_some_and(|m| m.contains("would make incremental 001-incr")),
        "{check:?}"
    );
    assert!(!store.path().join("test/001-incr").exists());
}

/// Contexts with another run id.
struct ContextWith;

impl ContextWith {
    fn run_id(id: &str) -> lifeboat::modules::ModuleContext {
        lifeboat::modules::ModuleContext {
            run_id: id.to_string(),
            ..context("db1")
        }
    }
}

#[test]
fn a_galera_node_is_desynced_for_its_backup_and_bootstrapped_from_its_restore() {
    let (server, store) = setup(Options {
        galera: true,
        general_log: true,
        ..Options::default()
    });
    let rt = runtime();
    let ctx = context("db1");
    let galera = |action: &str| {
        with(
            backup_args(&server, store.path(), action),
            json!({ "galera": true }),
        )
    };
    let full = rt.block_on(ok("mariadb_backup", &ctx, &galera("full")));
    server
        .db
        .sql("UPDATE pb_nova.instances SET vcpus = 64 WHERE id < 10");
    let inc = rt.block_on(ok(
        "mariadb_backup",
        &ContextWith::run_id("g2"),
        &galera("incremental"),
    ));
    let uuid = server.db.status("wsrep_cluster_state_uuid");
    assert_eq!(inc.data["manifest"]["galera_cluster_uuid"], uuid.as_str());
    assert!(
        inc.data["manifest"]["galera_seqno_after"]
            .as_str()
            .is_some_and(|n| n.parse::<i64>().is_ok())
    );
    assert!(full.data["manifest"]["galera"].as_bool().unwrap_or(false));
    let log = server.db.general_log();
    let on = log
        .iter()
        .filter(|l| l.contains("wsrep_desync = ON"))
        .count();
    let off = log
        .iter()
        .filter(|l| l.contains("wsrep_desync = OFF"))
        .count();
    assert_eq!((on, off), (2, 2), "desynced and resynced for each backup");
    assert_eq!(server.db.variable("wsrep_desync"), "OFF");
    let at_backup = checksums(&server.db);
    server
        .db
        .sql("DELETE FROM pb_nova.instances WHERE id > 100");

    let args = with(
        restore_args(&server, store.path()),
        json!({ "galera": true }),
    );
    rt.block_on(ok("mariadb_backup", &ctx, &args));
    let grastate =
        std::fs::read_to_string(server.datadir().join("grastate.dat")).unwrap_or_default();
    // The server rewrites grastate.dat once it runs; it bootstrapped from the position.
    server.db.wait_ready(
        Options {
            galera: true,
            general_log: true,
            ..Options::default()
        },
        || {},
    );
    assert_eq!(
        server.db.status("wsrep_cluster_state_uuid"),
        uuid,
        "the cluster kept its identity: {grastate}"
    );
    assert_eq!(server.db.status("wsrep_local_state_comment"), "Synced");
    assert_eq!(checksums(&server.db), at_backup);
}

/// A restore whose login reaches another server than the one it stops is refused
/// before anything moves, and the server it stopped is left as it was: a server that was
/// stopped is not started.
#[test]
fn a_restore_that_logs_in_to_another_server_leaves_the_stopped_one_stopped() {
    let (server, store) = setup(Options::default());
    let rt = runtime();
    let ctx = context("db1");
    rt.block_on(ok(
        "mariadb_backup",
        &ctx,
        &backup_args(&server, store.path(), "full"),
    ));
    let other = start_controlled(Options::default());
    stop(&server);
    let args = with(
        restore_args(&server, store.path()),
        json!({ "login_port": other.db.port }),
    );
    let e = failure(rt.block_on(run("mariadb_backup", &ctx, &args)));
    assert!(
        e.contains("still answers")
            && e.contains("mariadb-test (command) is left stopped, as it was"),
        "{e}"
    );
    assert!(!server.running(), "the stopped server was not started");
    assert!(
        server.datadir().join("ibdata1").exists(),
        "nothing was moved"
    );
    assert!(lifeboat_paths(&server).is_empty());
}

/// galera_rejoin's rollback leaves the node as it was before the step: a node that was
/// running rejoins again (by a whole copy) and runs, Synced; a node that was stopped
/// stays stopped, its new grastate.dat removed.
#[test]
fn the_rollback_of_a_rejoin_leaves_the_node_as_it_was_before_the_step() {
    // The nodes run as a user that is not root, as in tests/minicloud_galera.rs: the
    // rsync state transfer of nodes run as root fails.
    sshd::ensure_user().expect("the test user");
    let first = start_controlled(Options {
        galera: true,
        owner: Some(sshd::USER),
        ..Options::default()
    });
    let second = start_controlled(Options {
        galera: true,
        owner: Some(sshd::USER),
        galera_join: first.gcomm_port,
        ..Options::default()
    });
    assert_eq!(second.db.status("wsrep_cluster_size"), "2");
    let rt = runtime();
    let ctx = context("db2");
    let args = with(
        with(second.db.login(), second.service_args()),
        json!({ "datadir": s(&second.datadir()), "wait": "3m" }),
    );

    // Running before the step: running, Synced, after its rollback.
    let out = rt.block_on(ok("galera_rejoin", &ctx, &args));
    assert_eq!(out.data["state"], "Synced", "{out:?}");
    let pid = server_pid(&second);
    let back = rt
        .block_on(undo("galera_rejoin", &ctx, &args, &out))
        .expect("undo");
    assert!(second.running(), "{back:?}");
    assert_ne!(server_pid(&second), pid, "it was stopped and started again");
    assert!(
        back.msg
            .as_deref()
            .is_some_and(|m| m.contains("as it ran before the step")),
        "{back:?}"
    );
    assert_eq!(second.db.status("wsrep_local_state_comment"), "Synced");
    assert_eq!(second.db.status("wsrep_cluster_size"), "2");

    // Stopped before the step (as the restore playbook leaves it): stopped after its
    // rollback, its next start a whole copy.
    stop(&second);
    let out = rt.block_on(ok("galera_rejoin", &ctx, &args));
    assert!(second.running());
    let back = rt
        .block_on(undo("galera_rejoin", &ctx, &args, &out))
        .expect("undo");
    assert!(!second.running(), "{back:?}");
    assert!(!second.datadir().join("grastate.dat").exists());
    assert!(
        back.msg
            .as_deref()
            .is_some_and(|m| m.contains("as it was before the step")),
        "{back:?}"
    );
}

// ---------------------------------------------------------------- validation

use support::modules::validation_messages as errors;

#[test]
fn arguments_are_checked_at_load_with_their_place() {
    let cases = [
        (
            "mariadb_backup: { action: snapshot, dir: /b }",
            "unknown action `snapshot`",
        ),
        (
            "mariadb_backup: { action: full, dir: /b, datadir: /var/lib/mysql }",
            "`datadir` is not an argument of action full",
        ),
        (
            "mariadb_backup: { action: prepare, dir: /b }",
            "action prepare needs `target`",
        ),
        (
            "mariadb_backup: { action: restore, dir: /b }",
            "action restore needs `datadir`",
        ),
        (
            "mariadb_backup: { action: restore, dir: /b, datadir: /d, upto: yesterday }",
            "upto `yesterday`",
        ),
        (
            "mariadb_backup: { action: full, dir: /b, chain: ../x }",
            "is not a chain name",
        ),
        (
            "mariadb_backup: { action: full, dir: /b, compress: bzip2 }",
            "unknown compress `bzip2`",
        ),
        (
            "mariadb_backup: { action: restore, dir: /b, datadir: /d, commands: {start: a, stop: b, status: c} }",
            "only for `manager: command`",
        ),
        (
            "mariadb_backup: { action: full }",
            "needs the argument `dir`",
        ),
    ];
    for (step, want) in cases {
        let errs = errors(step);
        assert!(errs.iter().any(|e| e.contains(want)), "{step}: {errs:?}");
        assert!(errs.iter().all(|e| e.contains("play.yml:1:")), "{errs:?}");
    }
    assert!(errors("mariadb_backup: { action: incremental, dir: /b, full_if_missing: true, max_incrementals: 6 }").is_empty());
    assert!(support::modules::example_errors("mariadb_backup").is_empty());

    // galera_rejoin (the other nodes of a restored cluster) takes the same service and
    // login arguments.
    for (step, want) in [
        (
            "galera_rejoin: { service: mariadb }",
            "needs the argument `datadir`",
        ),
        (
            "galera_rejoin: { datadir: /d, manager: command }",
            "`manager: command` needs `commands: {start, stop, status}`",
        ),
        (
            "galera_rejoin: { datadir: /d, manager: upstart }",
            "unknown manager `upstart`",
        ),
        (
            "galera_rejoin: { datadir: /d, login_host: h, login_socket: /s }",
            "login_socket",
        ),
        ("galera_rejoin: { datadir: /d, sst: rsync }", "sst"),
    ] {
        let errs = errors(step);
        assert!(errs.iter().any(|e| e.contains(want)), "{step}: {errs:?}");
        assert!(errs.iter().all(|e| e.contains("play.yml:1:")), "{errs:?}");
    }
    assert!(support::modules::example_errors("galera_rejoin").is_empty());
}

#[test]
fn retention_removes_whole_chains_by_their_last_backup_and_never_the_newest_complete_one() {
    let server = start_controlled(Options::default());
    server.db.load_openstack("pb");
    let store = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let full = |id: &str| {
        rt.block_on(ok(
            "mariadb_backup",
            &ContextWith::run_id(id),
            &with(
                backup_args(&server, store.path(), "full"),
                json!({ "chain": id }),
            ),
        ))
    };
    full("2024-old");
    full("2025-mid");
    // The middle chain's full backup is old, its incremental recent: the chain stays.
    rt.block_on(ok(
        "mariadb_backup",
        &ContextWith::run_id("r-inc"),
        &with(
            backup_args(&server, store.path(), "incremental"),
            json!({ "chain": "2025-mid" }),
        ),
    ));
    let age = |path: &Path, days: u64| {
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86400);
        let f = std::fs::File::open(path).expect("open");
        f.set_modified(t).expect("set mtime");
    };
    age(&store.path().join("2024-old"), 30);
    age(&store.path().join("2025-mid/000-full"), 30);
    let prune = json!({
        "path": s(store.path()),
        "pattern": "[0-9]*",
        "older_than": "7d",
        "complete_marker": "{name}/000-full/manifest.json",
    });
    let out = rt.block_on(ok("prune", &context("db1"), &prune));
    assert_eq!(out.data["removed"], json!(["2024-old"]), "{:?}", out.data);
    assert!(
        store
            .path()
            .join("2025-mid/000-full/manifest.json")
            .exists()
    );
    assert!(
        store
            .path()
            .join("2025-mid/001-incr/manifest.json")
            .exists()
    );
    // Every chain old: the newest complete one stays, whole.
    age(&store.path().join("2025-mid"), 30);
    let out = rt.block_on(ok("prune", &context("db1"), &prune));
    assert_eq!(out.data["removed"], json!([]), "{:?}", out.data);
    let restored = rt.block_on(ok(
        "mariadb_backup",
        &context("db1"),
        &json!({ "action": "prepare", "dir": s(store.path()), "target": s(&store.path().join(".p")) }),
    ));
    assert_eq!(restored.data["backups"], json!(["000-full", "001-incr"]));
}
