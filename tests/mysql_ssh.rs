//! The MariaDB modules over SSH, through the real `lifeboat` binary: playbooks run on
//! an sshd host (see `support/sshd.rs`) as the login user `lifeboat-test`, which
//! reaches the private MariaDB server (see `support/mariadb.rs`, run by the tests as
//! root) over TCP on 127.0.0.1 with a password user. The password comes from a
//! playbook `secret` and must appear nowhere in the console or the event log (runs
//! are verbose, so the commands' output is in the events too).
//!
//! 1. A round trip: checksum, dump, damage with `mysql_query`, restore, checksum: the
//!    digests are the same (an `assert` step, the events, and the server itself).
//! 2. A restore whose import fails half way undoes itself: checksums prove the data is
//!    as it was before the restore.
//! 3. A run that fails after a restore rolls the restore back (the safety dump).
//! 4. With become (sudo with the inventory's password): a dump where only root writes,
//!    a query; neither password shows.

#[path = "support/binary.rs"]
mod binary;
#[path = "fixtures/backup_ssh/harness.rs"]
mod harness;
#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/sshd.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use harness::{Run, fill, host_line, lifeboat, login_ids, ok, s, user_dir, workdir};
use mariadb::{MariaDb, PASSWORD, server};
use sshd::{Options, Sshd};

/// The login arguments of every step (the password from the secret).
const LOGIN: &str = r#"
      login_host: 127.0.0.1
      login_port: @PORT@
      login_user: lifeboat
      login_password: "{{ db_password }}""#;

/// Every table's `CHECKSUM TABLE` and row count, read by root over the socket: the
/// server's own view, independent of the modules.
fn server_view(db: &MariaDb, prefix: &str) -> BTreeMap<String, String> {
    let tables = db.sql(&format!(
        "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA LIKE '{prefix}\\_%' ORDER BY 1"
    ));
    tables
        .lines()
        .map(|t| {
            let (d, n) = t.split_once('.').expect("schema.table");
            let sum = db.sql(&format!("CHECKSUM TABLE `{d}`.`{n}`"));
            let count = db.sql(&format!("SELECT COUNT(*) FROM `{d}`.`{n}`"));
            (
                t.to_string(),
                format!(
                    "{} rows, checksum {}",
                    count.trim(),
                    sum.split('\t').nth(1).unwrap_or("").trim()
                ),
            )
        })
        .collect()
}

/// The 12-character digest prefix in a `mysql_checksum` message.
fn digest_in(msg: &str) -> String {
    msg.rsplit("digest ")
        .next()
        .map(|d| d.trim().to_string())
        .filter(|d| d.len() == 12)
        .unwrap_or_else(|| panic!("no digest in {msg:?}"))
}

/// A test's setting: the shared server with the OpenStack databases of a prefix; a
/// working directory holding `backup/`, the host's TMPDIR `host-tmp/` and the password
/// file; the sshd host `db1`, whose sessions have that TMPDIR, and the inventory naming
/// it; and the `@KEY@` values of the playbooks (LOGIN, PORT, DBS, P, BACKUP).
struct Scene {
    db: &'static MariaDb,
    dir: tempfile::TempDir,
    backup: PathBuf,
    tmp: PathBuf,
    host: Sshd,
    inventory: String,
    values: Vec<(&'static str, String)>,
}

/// The [`Scene`] of databases `prefix`, the host at `addr` with more `host_vars`.
fn scene(prefix: &str, addr: &str, host_vars: &str) -> Scene {
    let db = server();
    db.load_openstack(prefix);
    let dir = workdir();
    let backup = user_dir(dir.path(), "backup");
    let tmp = user_dir(dir.path(), "host-tmp");
    let host = ok(Sshd::with(Options {
        addr: addr.into(),
        extra: vec![format!("SetEnv TMPDIR={}", s(&tmp))],
        ..Options::default()
    }));
    let inventory = format!("[db]\n{}", host_line("db1", &host, host_vars));
    ok(std::fs::write(dir.path().join("db-password"), PASSWORD));
    let values = vec![
        ("LOGIN", LOGIN.to_string()),
        ("PORT", db.port.to_string()),
        ("DBS", dbs(prefix)),
        ("P", prefix.to_string()),
        ("BACKUP", s(&backup)),
    ];
    Scene {
        db,
        dir,
        backup,
        tmp,
        host,
        inventory,
        values,
    }
}

impl Scene {
    /// A playbook template filled with the scene's values.
    fn fill(&self, template: &str) -> String {
        fill(template, &self.values)
    }

    /// `lifeboat run` of `playbook` against the scene's host (see [`lifeboat`]).
    fn run(&self, tag: &str, playbook: &str, args: &[&str]) -> Run {
        lifeboat(self.dir.path(), tag, playbook, &self.inventory, args)
    }
}

/// The names in a folder.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = ok(std::fs::read_dir(dir))
        .map(|e| ok(e).file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn dbs(prefix: &str) -> String {
    format!("[{prefix}_nova, {prefix}_glance, {prefix}_keystone]")
}

const ROUND_TRIP: &str = r#"
name: db-round-trip-over-ssh
hosts: db
secrets:
  db_password: { file: db-password }
steps:
  - id: tmpdir
    command: printenv TMPDIR
  - id: before
    needs: tmpdir
    mysql_checksum:
      databases: @DBS@@LOGIN@
    register: before
  - id: dump
    needs: before
    mysql_dump:
      databases: @DBS@
      dest: @BACKUP@/all.sql.gz@LOGIN@
    register: dumped
  - id: damage
    needs: dump
    mysql_query:
      query:
        - DROP TABLE @P@_glance.image_properties
        - UPDATE @P@_nova.instances SET vm_state = 'deleted', deleted = id WHERE id % 3 = 0
        - DELETE FROM @P@_keystone.assignment WHERE actor_id LIKE 'a%'
        - DROP PROCEDURE @P@_nova.count_active
        - CREATE TABLE @P@_nova.added_later (id INT PRIMARY KEY)@LOGIN@
  - id: damaged
    needs: damage
    mysql_checksum:
      databases: @DBS@@LOGIN@
    register: damaged
  - id: really-damaged
    needs: damaged
    assert:
      that:
        - damaged.data.digest != before.data.digest
        - damaged.data.tables["@P@_nova.added_later"].rows == 0
  - id: restore
    needs: really-damaged
    mysql_restore:
      src: "{{ dumped.data.path }}"@LOGIN@
    register: restored
  - id: after
    needs: restore
    mysql_checksum:
      databases: @DBS@@LOGIN@
    register: after
  - id: same
    needs: after
    assert:
      that:
        - after.data.digest == before.data.digest
        - after.data.tables == before.data.tables
        - restored.data.verified
      fail_msg: "the restore did not bring the dumped data back"
  - id: show
    needs: same
    debug:
      msg: "before={{ before.data.digest }} after={{ after.data.digest }} safety={{ restored.data.safety_dump }}"
"#;

#[test]
fn round_trip_over_ssh_checksum_dump_damage_restore_gives_the_same_digest() {
    let sc = scene("sshrt", "127.0.0.31", "");
    let (db, backup, tmp) = (sc.db, &sc.backup, &sc.tmp);
    let playbook = sc.fill(ROUND_TRIP);
    let view_before = server_view(db, "sshrt");
    assert_eq!(view_before.len(), 8, "{view_before:?}");

    let run = sc.run("round-trip", &playbook, &["-v"]);
    run.assert_code(0);
    for (step, status) in [
        ("before", "ok"),
        ("dump", "changed"),
        ("damage", "changed"),
        ("damaged", "ok"),
        ("really-damaged", "ok"),
        ("restore", "changed"),
        ("after", "ok"),
        ("same", "ok"),
        ("show", "ok"),
    ] {
        assert_eq!(run.status(step, "db1"), status, "{step}\n{run:?}");
    }
    // The events carry the digests: before and after are the same, the damage differs.
    let before = digest_in(&run.msg("before", "db1"));
    let damaged = digest_in(&run.msg("damaged", "db1"));
    let after = digest_in(&run.msg("after", "db1"));
    assert_eq!(before, after, "{run:?}");
    assert_ne!(before, damaged, "{run:?}");
    let show = run.msg("show", "db1");
    let full = |k: &str| {
        show.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {show}"))
            .to_string()
    };
    assert_eq!(full("before="), full("after="));
    assert!(full("before=").starts_with(&before), "{show}");

    // The server agrees, table by table, and the procedure came back.
    assert_eq!(server_view(db, "sshrt"), view_before);
    assert_eq!(
        db.sql("CALL sshrt_nova.count_active(@n); SELECT @n;")
            .trim(),
        "1800"
    );

    // It ran over SSH as the login user: the dump and the safety dump are its files,
    // readable by it alone.
    let (uid, _) = login_ids();
    let dump = backup.join("all.sql.gz");
    let meta = ok(std::fs::metadata(&dump));
    assert_eq!(meta.uid(), uid);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(backup.join("all.sql.gz.manifest.json").exists());
    let safety = full("safety=");
    assert!(safety.starts_with(&s(backup)), "{safety}");
    assert_eq!(ok(std::fs::metadata(&safety)).uid(), uid);
    assert!(
        sc.host.log().contains("Accepted publickey"),
        "{}",
        sc.host.log()
    );

    // The password never showed, and the private option files (made in the session's
    // TMPDIR) are gone.
    run.assert_hidden(PASSWORD);
    run.assert_hidden("p4ss");
    assert_eq!(
        run.finish("tmpdir", "db1")["stdout"].as_str(),
        Some(format!("{}\n", s(tmp)).as_str())
    );
    assert_eq!(entries(tmp), Vec::<String>::new());
}

const HALF_WAY: &str = r#"
name: db-restore-fails-half-way-over-ssh
hosts: db
secrets:
  db_password: { file: db-password }
steps:
  - id: dump
    mysql_dump:
      databases: @DBS@
      dest: @BACKUP@/full.sql.gz@LOGIN@
  - id: cut
    needs: dump
    shell: |
      size=$(stat -c %s @BACKUP@/full.sql.gz)
      head -c $((size / 2)) @BACKUP@/full.sql.gz > @BACKUP@/cut.sql.gz
      cp @BACKUP@/full.sql.gz.manifest.json @BACKUP@/cut.sql.gz.manifest.json
  - id: change
    needs: cut
    mysql_query:
      query:
        - UPDATE @P@_nova.instances SET hostname = 'changed' WHERE id < 500
        - DROP TABLE @P@_keystone.project@LOGIN@
  - id: before
    needs: change
    mysql_checksum:
      databases: @DBS@@LOGIN@
    register: before
  - id: refused
    needs: before
    mysql_restore:
      src: @BACKUP@/cut.sql.gz@LOGIN@
    ignore_errors: true
    register: refused
  - id: restore
    needs: refused
    mysql_restore:
      src: @BACKUP@/cut.sql.gz
      verify_checksum: false@LOGIN@
    ignore_errors: true
    register: restored
  - id: after
    needs: restore
    mysql_checksum:
      databases: @DBS@@LOGIN@
    register: after
  - id: same
    needs: after
    assert:
      that:
        - refused.failed
        - "'does not match its manifest' in refused.msg"
        - restored.failed
        - "'rolled back' in restored.msg"
        - after.data.digest == before.data.digest
        - after.data.tables == before.data.tables
      fail_msg: "the failed restore did not put the data back"
"#;

#[test]
fn a_restore_that_fails_half_way_over_ssh_rolls_itself_back() {
    let sc = scene("sshhalf", "127.0.0.32", "");
    let (db, tmp) = (sc.db, &sc.tmp);
    let playbook = sc.fill(HALF_WAY);

    let run = sc.run("half-way", &playbook, &["-v"]);
    for (step, status) in [
        ("dump", "changed"),
        ("cut", "changed"),
        ("change", "changed"),
        ("before", "ok"),
        ("refused", "ignored"),
        ("restore", "ignored"),
        ("after", "ok"),
        ("same", "ok"),
    ] {
        assert_eq!(run.status(step, "db1"), status, "{step}\n{run:?}");
    }
    run.assert_code(0);
    let msg = run.msg("restore", "db1");
    assert!(msg.contains("import of"), "{msg}");
    assert!(msg.contains("rolled back"), "{msg}");
    assert_eq!(
        digest_in(&run.msg("before", "db1")),
        digest_in(&run.msg("after", "db1"))
    );
    // The server agrees: the changes made before the restore are there, the table
    // dropped before it is still gone.
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM sshhalf_nova.instances WHERE hostname = 'changed'")
            .trim(),
        "499"
    );
    assert!(
        db.sql("SHOW TABLES FROM sshhalf_keystone LIKE 'project'")
            .trim()
            .is_empty()
    );
    run.assert_hidden(PASSWORD);
    run.assert_hidden("p4ss");
    assert_eq!(entries(tmp), Vec::<String>::new());
}

const FAIL_AFTER: &str = r#"
name: db-run-fails-after-the-restore-over-ssh
hosts: db
secrets:
  db_password: { file: db-password }
steps:
  - id: restore
    mysql_restore:
      src: @BACKUP@/old.sql.gz@LOGIN@
  - id: then-fail
    needs: restore
    assert:
      that: restore.changed and 1 == 2
      fail_msg: a later step fails
"#;

#[test]
fn a_run_that_fails_after_a_restore_over_ssh_rolls_the_restore_back() {
    let sc = scene("sshrb", "127.0.0.33", "");
    let (db, tmp) = (sc.db, &sc.tmp);
    // An old dump, then newer data.
    let dump = sc.fill(
        "hosts: db\nsteps:\n  - id: dump\n    mysql_dump:\n      databases: @DBS@\n      dest: @BACKUP@/old.sql.gz@LOGIN@\nsecrets:\n  db_password: { file: db-password }\n",
    );
    sc.run("dump", &dump, &[]).assert_code(0);
    db.sql("UPDATE sshrb_nova.instances SET memory_mb = 1 WHERE id < 100; CREATE TABLE sshrb_glance.newer (id INT);");
    let newer = server_view(db, "sshrb");

    let run = sc.run("fail-after", &sc.fill(FAIL_AFTER), &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert_eq!(run.status("restore", "db1"), "changed");
    assert_eq!(run.status("then-fail", "db1"), "failed");
    assert_eq!(
        run.rollback_status("restore", "db1").as_deref(),
        Some("done"),
        "{run:?}"
    );
    assert_eq!(
        server_view(db, "sshrb"),
        newer,
        "the rollback re-imported the safety dump"
    );
    run.assert_hidden(PASSWORD);
    run.assert_hidden("p4ss");
    assert_eq!(entries(tmp), Vec::<String>::new());
}

const BECOME: &str = r#"
name: db-with-become-over-ssh
hosts: db
secrets:
  db_password: { file: db-password }
steps:
  - id: whoami
    become: true
    command: id -un
  - id: dump
    become: true
    mysql_dump:
      databases: [@P@_glance]
      dest: @ROOT_ONLY@/glance.sql.zst@LOGIN@
  - id: count
    become: true
    needs: dump
    mysql_query:
      query: SELECT COUNT(*) AS n FROM @P@_glance.images@LOGIN@
    register: count
  - id: check
    needs: count
    assert: count.data.rows[0].n == "500"
"#;

#[test]
fn the_modules_run_with_become_over_ssh() {
    ok(sshd::ensure_sudo());
    let sc = scene(
        "sshbe",
        "127.0.0.34",
        &format!("ansible_become_password={}", sshd::PASSWORD),
    );
    // Only root writes here: the dump needs the become.
    let root_only = sc.dir.path().join("root-only");
    ok(std::fs::create_dir(&root_only));
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let playbook = fill(
        BECOME,
        &[
            ("LOGIN", LOGIN.to_string()),
            ("PORT", sc.db.port.to_string()),
            ("P", "sshbe".to_string()),
            ("ROOT_ONLY", s(&root_only)),
        ],
    );
    let run = sc.run("become", &playbook, &["-v"]);
    run.assert_code(0);
    assert_eq!(
        run.finish("whoami", "db1")["stdout"].as_str(),
        Some("root\n")
    );
    assert_eq!(run.status("dump", "db1"), "changed");
    assert_eq!(run.status("check", "db1"), "ok");
    assert_eq!(
        ok(std::fs::metadata(root_only.join("glance.sql.zst"))).uid(),
        0
    );
    run.assert_hidden(PASSWORD);
    run.assert_hidden("p4ss");
    run.assert_hidden(sshd::PASSWORD);
}
