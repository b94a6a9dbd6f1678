//! The MariaDB modules (`mysql_dump`, `mysql_restore`, `mysql_query`,
//! `mysql_checksum`) against a real, private MariaDB server (tests/support/mariadb.rs):
//! dumps with manifests that match their files, failures that leave nothing behind,
//! a password that never reaches a command line, a round trip proven by checksums,
//! a restore that fails half way and undoes itself, rollback of a run through the
//! `lifeboat` binary, query rows and read-only detection, and load-time validation.
//! Every test works on databases of its own prefix, so they share one server.

#[path = "support/mariadb.rs"]
mod mariadb;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lifeboat::connection::{
    CommandOutput, CommandSpec, Connection, ConnectionError, FileStat, LocalConnection, OutputChunk,
};
use lifeboat::error::SourceFile;
use lifeboat::modules::{ModuleContext, Outcome, lookup, validate_args};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use mariadb::{PASSWORD, server};
use support::modules::{context, failure, ok, run};

/// A local connection that records every command line and standard input it runs.
struct Recording {
    inner: LocalConnection,
    lines: Mutex<Vec<String>>,
    stdins: Mutex<Vec<Vec<u8>>>,
}

impl Recording {
    fn new() -> Arc<Recording> {
        Arc::new(Recording {
            inner: LocalConnection::new("db1"),
            lines: Mutex::new(Vec::new()),
            stdins: Mutex::new(Vec::new()),
        })
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    fn stdins(&self) -> Vec<Vec<u8>> {
        self.stdins.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Connection for Recording {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn run(
        &self,
        spec: &CommandSpec,
        sink: Option<mpsc::UnboundedSender<OutputChunk>>,
    ) -> Result<CommandOutput, ConnectionError> {
        self.lines.lock().expect("lock").push(spec.to_shell_line());
        if let Some(s) = spec.stdin_bytes() {
            self.stdins.lock().expect("lock").push(s);
        }
        self.inner.run(spec, sink).await
    }
    async fn put_bytes(&self, data: &[u8], remote_path: &str) -> Result<(), ConnectionError> {
        self.inner.put_bytes(data, remote_path).await
    }
    async fn put_file(&self, local: &Path, remote_path: &str) -> Result<(), ConnectionError> {
        self.inner.put_file(local, remote_path).await
    }
    async fn get_file(&self, remote_path: &str, local: &Path) -> Result<(), ConnectionError> {
        self.inner.get_file(remote_path, local).await
    }
    async fn read_file(
        &self,
        remote_path: &str,
        max: u64,
    ) -> Result<Option<Vec<u8>>, ConnectionError> {
        self.inner.read_file(remote_path, max).await
    }
    async fn stat(&self, remote_path: &str) -> Result<Option<FileStat>, ConnectionError> {
        self.inner.stat(remote_path).await
    }
}

fn ctx_on(conn: Arc<dyn Connection>, check: bool) -> ModuleContext {
    ModuleContext {
        conn,
        check,
        ..context("db1")
    }
}

fn ctx() -> ModuleContext {
    context("db1")
}

fn dry() -> ModuleContext {
    ModuleContext {
        check: true,
        ..context("db1")
    }
}

/// Module arguments: the login arguments merged with `extra`.
fn with(login: Json, extra: Json) -> Json {
    let mut m = login;
    if let (Json::Object(m), Json::Object(e)) = (&mut m, extra) {
        m.extend(e);
    }
    m
}

async fn undo(module: &str, ctx: &ModuleContext, args: &Json, o: &Outcome) -> Outcome {
    let data = o.undo.clone().expect("the step captured undo data");
    match lookup(module)
        .expect("registered")
        .undo(ctx, args, &data)
        .await
    {
        Ok(o) => o,
        Err(e) => panic!("undo of {module} failed: {e}"),
    }
}

/// The checksum digest and tables of some databases.
async fn proof(dbs: &[String]) -> (String, Json) {
    let o = ok(
        "mysql_checksum",
        &ctx(),
        &with(server().login(), json!({ "databases": dbs })),
    )
    .await;
    assert!(!o.changed);
    (
        o.data["digest"].as_str().expect("digest").to_string(),
        o.data["tables"].clone(),
    )
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn sha256_file(p: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(p).expect("read")))
}

fn decompress(p: &Path) -> String {
    let bytes = std::fs::read(p).expect("read");
    let tool = if bytes.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else {
        return String::from_utf8_lossy(&bytes).into_owned();
    };
    let out = std::process::Command::new(tool)
        .args(["-dc", "--"])
        .arg(p)
        .output()
        .expect("decompress");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------- mysql_dump

#[tokio::test]
async fn dump_writes_a_verified_file_and_manifest_in_each_compression_without_the_password_in_argv()
{
    let db = server();
    let dbs = db.load_openstack("dump");
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, compress, magic) in [
        ("all.sql.gz", None, &[0x1f_u8, 0x8b][..]),
        ("all.sql.zst", None, &[0x28, 0xb5, 0x2f, 0xfd][..]),
        ("all.sql", None, &b"/*"[..]),
        ("forced.dump", Some("gzip"), &[0x1f, 0x8b][..]),
    ] {
        let conn = Recording::new();
        let dest = dir.path().join(name);
        let mut args = with(db.login(), json!({ "databases": dbs, "dest": s(&dest) }));
        if let Some(c) = compress {
            args["compress"] = json!(c);
        }
        let o = ok("mysql_dump", &ctx_on(conn.clone(), false), &args).await;
        assert!(o.changed);
        let bytes = std::fs::read(&dest).expect("dump written");
        assert!(bytes.starts_with(magic), "{name}: {:?}", &bytes[..4]);
        let sha = sha256_file(&dest);
        assert_eq!(o.data["sha256"], json!(sha), "{name}");
        assert_eq!(o.data["size"], json!(bytes.len()), "{name}");
        assert_eq!(o.data["path"], json!(s(&dest)));
        let manifest: Json = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{name}.manifest.json")))
                .expect("manifest written"),
        )
        .expect("manifest is JSON");
        assert_eq!(manifest, o.data["manifest"]);
        assert_eq!(manifest["sha256"], json!(sha));
        assert_eq!(manifest["size"], json!(bytes.len()));
        assert_eq!(manifest["databases"], json!(dbs));
        assert!(
            manifest["server_version"]
                .as_str()
                .is_some_and(|v| v.contains("MariaDB")),
            "{manifest}"
        );
        assert!(
            manifest["tool"]
                .as_str()
                .is_some_and(|v| v.contains("mariadb-dump") || v.contains("mysqldump")),
            "{manifest}"
        );
        assert!(
            manifest["consistent_point"]
                .as_str()
                .is_some_and(|v| v.ends_with('Z')),
            "{manifest}"
        );
        let text = decompress(&dest);
        assert!(
            text.trim_end()
                .lines()
                .last()
                .is_some_and(|l| l.starts_with("-- Dump completed")),
            "{name}: no trailer"
        );
        assert!(
            text.contains("CREATE DEFINER"),
            "routines and triggers are in the dump"
        );
        assert!(text.contains("PROCEDURE `count_active`"), "{name}");
        assert!(text.contains("TRIGGER instances_created"), "{name}");
        assert_eq!(
            std::fs::metadata(&dest).expect("stat").permissions().mode() & 0o777,
            0o600,
            "a dump is readable by its owner only"
        );

        // The password went through standard input, never a command line.
        let lines = conn.lines();
        assert!(!lines.is_empty());
        for l in &lines {
            assert!(!l.contains(PASSWORD), "password on a command line: {l}");
            assert!(!l.contains("p4ss"), "password on a command line: {l}");
        }
        assert!(
            conn.stdins()
                .iter()
                .any(|i| String::from_utf8_lossy(i).contains("p4ss")),
            "the password was handed over on standard input"
        );
        assert!(
            lines.iter().any(|l| l.contains("--defaults-extra-file=")),
            "{lines:?}"
        );
    }
    // No temporary file or private option file is left.
    assert_eq!(
        names(dir.path()),
        vec![
            "all.sql",
            "all.sql.gz",
            "all.sql.gz.manifest.json",
            "all.sql.manifest.json",
            "all.sql.zst",
            "all.sql.zst.manifest.json",
            "forced.dump",
            "forced.dump.manifest.json"
        ]
    );
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("read tmp")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("lifeboat-mysql."))
        .collect();
    // Other tests of this binary may hold one open at this moment; none may hold a
    // file of this test, whose commands all ended.
    assert!(leftovers.len() <= 8, "{leftovers:?}");
}

#[tokio::test]
async fn failing_dumps_leave_no_file_behind() {
    let db = server();
    let dbs = db.load_openstack("fail");
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = s(&dir.path().join("x.sql.gz"));

    let mut wrong = db.login();
    wrong["login_password"] = json!("wrong");
    let e = failure(
        run(
            "mysql_dump",
            &ctx(),
            &with(wrong, json!({ "databases": dbs, "dest": dest })),
        )
        .await,
    );
    assert!(e.contains("Access denied"), "{e}");
    assert_eq!(names(dir.path()), Vec::<String>::new());

    let e = failure(
        run(
            "mysql_dump",
            &ctx(),
            &with(
                db.login(),
                json!({ "databases": ["fail_nova", "no_such_db"], "dest": dest }),
            ),
        )
        .await,
    );
    assert!(e.contains("no_such_db"), "{e}");
    assert_eq!(names(dir.path()), Vec::<String>::new());

    // The dump tool fails half way (after writing the first tables) while gzip
    // succeeds: pipefail makes it a failure, and the partial file goes.
    let e = failure(
        run(
            "mysql_dump",
            &ctx(),
            &with(
                db.login(),
                json!({ "databases": dbs, "dest": dest, "extra_args": ["--where=no_such_column = 1"] }),
            ),
        )
        .await,
    );
    assert!(e.contains("dump failed"), "{e}");
    assert_eq!(names(dir.path()), Vec::<String>::new());

    // A dump without its trailer is not a complete dump.
    let e = failure(
        run(
            "mysql_dump",
            &ctx(),
            &with(
                db.login(),
                json!({ "databases": dbs, "dest": dest, "extra_args": ["--skip-comments"] }),
            ),
        )
        .await,
    );
    assert!(e.contains("Dump completed"), "{e}");
    assert_eq!(names(dir.path()), Vec::<String>::new());

    // A dry run checks the databases too, and writes nothing.
    let e = failure(
        run(
            "mysql_dump",
            &dry(),
            &with(
                db.login(),
                json!({ "databases": ["no_such_db"], "dest": dest }),
            ),
        )
        .await,
    );
    assert!(e.contains("no_such_db"), "{e}");
    let o = ok(
        "mysql_dump",
        &dry(),
        &with(db.login(), json!({ "databases": dbs, "dest": dest })),
    )
    .await;
    assert!(o.changed, "a dump would change");
    assert!(
        o.msg.as_deref().is_some_and(|m| m.contains("would dump")),
        "{o:?}"
    );
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn dump_rollback_removes_a_new_dump_and_puts_an_old_one_back() {
    let db = server();
    db.load_openstack("undo");
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("nova.sql.gz");
    let args = with(
        db.root_login(),
        json!({ "databases": ["undo_nova"], "dest": s(&dest) }),
    );

    let first = ok("mysql_dump", &ctx(), &args).await;
    undo("mysql_dump", &ctx(), &args, &first).await;
    assert_eq!(
        names(dir.path()),
        Vec::<String>::new(),
        "a new dump is removed"
    );

    std::fs::write(&dest, "old dump").expect("write");
    std::fs::write(dir.path().join("nova.sql.gz.manifest.json"), "old manifest").expect("write");
    let second = ok("mysql_dump", &ctx(), &args).await;
    assert_ne!(std::fs::read(&dest).expect("read"), b"old dump");
    undo("mysql_dump", &ctx(), &args, &second).await;
    assert_eq!(std::fs::read_to_string(&dest).expect("read"), "old dump");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("nova.sql.gz.manifest.json")).expect("read"),
        "old manifest"
    );
    assert_eq!(
        names(dir.path()),
        vec!["nova.sql.gz", "nova.sql.gz.manifest.json"]
    );
}

// ---------------------------------------------------------------- mysql_restore

#[tokio::test]
async fn round_trip_dump_damage_restore_gives_identical_checksums_and_undo_brings_the_damage_back()
{
    let db = server();
    let dbs = db.load_openstack("trip");
    let (before, tables) = proof(&dbs).await;
    assert_eq!(tables["trip_nova.instances"]["rows"], json!(2000));
    assert_eq!(tables["trip_keystone.user"]["rows"], json!(1000));
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = s(&dir.path().join("trip.sql.zst"));
    ok(
        "mysql_dump",
        &ctx(),
        &with(db.login(), json!({ "databases": dbs, "dest": dest })),
    )
    .await;

    db.sql(
        "DROP TABLE trip_glance.image_properties;
         UPDATE trip_nova.instances SET vm_state = 'deleted', deleted = id WHERE id % 3 = 0;
         DELETE FROM trip_keystone.assignment WHERE actor_id LIKE 'a%';
         DROP PROCEDURE trip_nova.count_active;
         CREATE TABLE trip_nova.added_later (id INT PRIMARY KEY);",
    );
    let (damaged, _) = proof(&dbs).await;
    assert_ne!(damaged, before);

    // A dry run says what would be overwritten and changes nothing.
    let args = with(db.login(), json!({ "src": dest }));
    let d = ok("mysql_restore", &dry(), &args).await;
    assert!(d.changed);
    assert!(
        d.msg
            .as_deref()
            .is_some_and(|m| m.contains("overwrite trip_nova, trip_glance, trip_keystone")),
        "{d:?}"
    );
    assert_eq!(proof(&dbs).await.0, damaged);

    let conn = Recording::new();
    let o = ok("mysql_restore", &ctx_on(conn.clone(), false), &args).await;
    assert!(o.changed);
    assert_eq!(o.data["verified"], json!(true));
    assert_eq!(o.data["databases"], json!(dbs));
    let safety = o.data["safety_dump"]
        .as_str()
        .expect("a safety dump")
        .to_string();
    assert!(Path::new(&safety).exists());
    assert!(decompress(Path::new(&safety)).contains("added_later"));
    for l in conn.lines() {
        assert!(!l.contains("p4ss"), "password on a command line: {l}");
    }
    let (after, _) = proof(&dbs).await;
    assert_eq!(after, before, "the restore brought the dumped data back");
    assert_eq!(
        db.sql("CALL trip_nova.count_active(@n); SELECT @n;").trim(),
        "1800",
        "the procedure came back"
    );

    // Rolling the restore back puts the damaged state back, table added later included.
    undo("mysql_restore", &ctx(), &args, &o).await;
    assert_eq!(proof(&dbs).await.0, damaged);
    assert!(
        !db.sql("SHOW TABLES FROM trip_nova LIKE 'added_later'")
            .trim()
            .is_empty()
    );
}

#[tokio::test]
async fn a_restore_that_fails_half_way_undoes_itself() {
    let db = server();
    let dbs = db.load_openstack("half");
    let dir = tempfile::tempdir().expect("tempdir");
    let full = dir.path().join("full.sql.gz");
    ok(
        "mysql_dump",
        &ctx(),
        &with(db.login(), json!({ "databases": dbs, "dest": s(&full) })),
    )
    .await;
    db.sql("UPDATE half_nova.instances SET hostname = 'changed' WHERE id < 500; DROP TABLE half_keystone.project;");
    let (before, _) = proof(&dbs).await;

    // The dump cut in the middle, as a lost transfer would leave it. Without a
    // manifest, reading it for its databases already fails: nothing is touched.
    let bytes = std::fs::read(&full).expect("read");
    let cut = dir.path().join("cut.sql.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let e = failure(
        run(
            "mysql_restore",
            &ctx(),
            &with(db.login(), json!({ "src": s(&cut) })),
        )
        .await,
    );
    assert!(e.contains("nothing was imported"), "{e}");
    assert_eq!(proof(&dbs).await.0, before);

    // With the manifest, a damaged file is refused before anything is touched, in a
    // dry run too.
    std::fs::copy(
        dir.path().join("full.sql.gz.manifest.json"),
        dir.path().join("cut.sql.gz.manifest.json"),
    )
    .expect("copy");
    for c in [ctx(), dry()] {
        let e = failure(
            run(
                "mysql_restore",
                &c,
                &with(db.login(), json!({ "src": s(&cut) })),
            )
            .await,
        );
        assert!(e.contains("does not match its manifest"), "{e}");
    }
    assert_eq!(proof(&dbs).await.0, before);

    // Without the checksum check the import starts, drops the databases, loads half
    // of them and fails: the step undoes itself from its safety dump before failing.
    let e = failure(
        run(
            "mysql_restore",
            &ctx(),
            &with(
                db.login(),
                json!({ "src": s(&cut), "verify_checksum": false }),
            ),
        )
        .await,
    );
    assert!(e.contains("import of"), "{e}");
    assert!(e.contains("unexpected end of file"), "{e}");
    assert!(e.contains("rolled back"), "{e}");
    assert_eq!(
        proof(&dbs).await.0,
        before,
        "the data is as before the restore"
    );
}

#[tokio::test]
async fn restore_into_a_scratch_database_for_a_drill() {
    let db = server();
    db.load_openstack("drill");
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = s(&dir.path().join("glance.sql"));
    ok(
        "mysql_dump",
        &ctx(),
        &with(
            db.root_login(),
            json!({ "databases": ["drill_glance"], "dest": dest }),
        ),
    )
    .await;
    let args = with(
        db.root_login(),
        json!({ "src": dest, "database": "drill_scratch" }),
    );
    let o = ok("mysql_restore", &ctx(), &args).await;
    assert_eq!(o.data["created"], json!(["drill_scratch"]));
    assert_eq!(
        o.data["safety_dump"],
        json!(null),
        "nothing existed to keep"
    );
    let (_, original) = proof(&["drill_glance".to_string()]).await;
    let (_, scratch) = proof(&["drill_scratch".to_string()]).await;
    for t in ["images", "image_properties"] {
        assert_eq!(
            original[format!("drill_glance.{t}")],
            scratch[format!("drill_scratch.{t}")],
            "{t}"
        );
    }
    undo("mysql_restore", &ctx(), &args, &o).await;
    assert!(
        !db.has_database("drill_scratch"),
        "rollback drops what it created"
    );
    assert!(db.has_database("drill_glance"));

    // A several-database dump cannot go into one database.
    let all = s(&dir.path().join("all.sql.gz"));
    ok(
        "mysql_dump",
        &ctx(),
        &with(
            db.root_login(),
            json!({ "databases": ["drill_glance", "drill_nova"], "dest": all }),
        ),
    )
    .await;
    let e = failure(
        run(
            "mysql_restore",
            &ctx(),
            &with(
                db.root_login(),
                json!({ "src": all, "database": "drill_x" }),
            ),
        )
        .await,
    );
    assert!(e.contains("several databases"), "{e}");
}

// ---------------------------------------------------------------- mysql_query

#[tokio::test]
async fn query_returns_rows_and_only_read_only_queries_run_in_a_dry_run() {
    let db = server();
    db.load_openstack("query");
    let q = |query: Json| {
        with(
            db.login(),
            json!({ "database": "query_nova", "query": query }),
        )
    };

    let o = ok(
        "mysql_query",
        &ctx(),
        &q(json!(
            "SELECT id, hostname, notes FROM instances WHERE id IN (6, 7) ORDER BY id"
        )),
    )
    .await;
    assert!(!o.changed, "a SELECT changes nothing");
    assert_eq!(o.data["rowcount"], json!(2));
    assert_eq!(o.data["read_only"], json!(true));
    assert_eq!(
        o.data["rows"],
        json!([
            { "id": "6", "hostname": "vm-6", "notes": "line one\nline\ttwo; 'quoted' 6" },
            { "id": "7", "hostname": "vm-7", "notes": null },
        ])
    );

    // Read-only queries run in a dry run too.
    let o = ok(
        "mysql_query",
        &dry(),
        &q(json!([
            "SHOW TABLES",
            "SELECT COUNT(*) AS n FROM instances"
        ])),
    )
    .await;
    assert!(!o.changed);
    assert_eq!(o.data["rows"], json!([{ "n": "2000" }]));
    assert_eq!(o.data["results"].as_array().map(Vec::len), Some(2));

    // A write is not run in a dry run, and says it would change.
    let update = q(json!(
        "UPDATE instances SET vm_state = 'x' WHERE id = 1; SELECT 1"
    ));
    let o = ok("mysql_query", &dry(), &update).await;
    assert!(o.changed);
    assert!(
        o.msg.as_deref().is_some_and(|m| m.contains("UPDATE")),
        "{o:?}"
    );
    assert_eq!(
        db.sql("SELECT vm_state FROM query_nova.instances WHERE id = 1")
            .trim(),
        "stopped"
    );
    let o = ok("mysql_query", &ctx(), &update).await;
    assert!(o.changed);
    assert_eq!(
        db.sql("SELECT vm_state FROM query_nova.instances WHERE id = 1")
            .trim(),
        "x"
    );

    // single_transaction: a failing statement leaves nothing applied.
    let mut tx = q(json!([
        "UPDATE instances SET vm_state = 'y' WHERE id = 1",
        "INSERT INTO no_such_table VALUES (1)"
    ]));
    tx["single_transaction"] = json!(true);
    let e = failure(run("mysql_query", &ctx(), &tx).await);
    assert!(e.contains("no_such_table"), "{e}");
    assert_eq!(
        db.sql("SELECT vm_state FROM query_nova.instances WHERE id = 1")
            .trim(),
        "x"
    );
}

#[tokio::test]
async fn checksum_sees_every_change_and_leaves_out_system_schemas() {
    let db = server();
    let dbs = db.load_openstack("sum");
    let (a, tables) = proof(&dbs).await;
    assert_eq!(tables.as_object().map(|m| m.len()), Some(8));
    assert!(tables["sum_nova.instances"]["checksum"].as_u64().is_some());
    assert_eq!(proof(&dbs).await.0, a, "stable");
    // Tables left out (a service's heartbeats): changes there are not seen, by either
    // way of naming them; every other change still is.
    let without = |exclude: Json| {
        with(
            server().login(),
            json!({ "databases": dbs, "exclude_tables": exclude }),
        )
    };
    let o = ok("mysql_checksum", &ctx(), &without(json!(["images"]))).await;
    assert_eq!(o.data["excluded"], json!(["sum_glance.images"]));
    assert_eq!(o.data["table_count"], 7);
    let quiet = o.data["digest"].clone();
    db.sql("UPDATE sum_glance.images SET size = size + 1 LIMIT 1");
    let (b, _) = proof(&dbs).await;
    assert_ne!(a, b);
    for exclude in [json!(["images"]), json!("sum_glance.images")] {
        let o = ok("mysql_checksum", &ctx(), &without(exclude)).await;
        assert_eq!(o.data["digest"], quiet);
    }

    // Default: every user database the login sees, none of the server's own. (A
    // user that sees only this test's databases: other tests change theirs meanwhile.)
    db.sql(
        "CREATE USER IF NOT EXISTS 'sumonly'@'localhost';
         GRANT ALL PRIVILEGES ON `sum\\_%`.* TO 'sumonly'@'localhost';
         GRANT SELECT ON mysql.* TO 'sumonly'@'localhost';",
    );
    let only = json!({ "login_socket": db.socket.to_string_lossy(), "login_user": "sumonly" });
    let o = ok("mysql_checksum", &dry(), &only).await;
    assert_eq!(
        o.data["databases"],
        json!(["sum_glance", "sum_keystone", "sum_nova"])
    );
    assert_eq!(o.data["digest"], json!(b));
    // A defaults file of the host's gives the rest of the login: with the password
    // as an argument (our option file includes it), or with the password in it.
    let dir = tempfile::tempdir().expect("tempdir");
    let cnf = dir.path().join("client.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[client]\nhost=127.0.0.1\nport={}\nuser=lifeboat\n",
            db.port
        ),
    )
    .expect("write");
    let args = json!({ "databases": dbs, "defaults_file": s(&cnf), "login_password": PASSWORD });
    assert_eq!(
        ok("mysql_checksum", &ctx(), &args).await.data["digest"],
        json!(b)
    );
    let escaped = PASSWORD.replace('\\', "\\\\").replace('"', "\\\"");
    std::fs::write(
        &cnf,
        format!(
            "[client]\nhost=127.0.0.1\nport={}\nuser=lifeboat\npassword=\"{escaped}\"\n",
            db.port
        ),
    )
    .expect("write");
    let args = json!({ "databases": dbs, "defaults_file": s(&cnf) });
    assert_eq!(
        ok("mysql_checksum", &ctx(), &args).await.data["digest"],
        json!(b)
    );

    let e = failure(
        run(
            "mysql_checksum",
            &ctx(),
            &with(db.root_login(), json!({ "databases": ["no_such_db"] })),
        )
        .await,
    );
    assert!(e.contains("no_such_db"), "{e}");
}

// ---------------------------------------------------------------- through the binary

#[test]
fn a_run_that_fails_after_a_restore_rolls_the_restore_back() {
    let db = server();
    let dbs = db.load_openstack("play");
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = s(&dir.path().join("play.sql.gz"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        ok(
            "mysql_dump",
            &ctx(),
            &with(db.login(), json!({ "databases": dbs, "dest": dump })),
        )
        .await;
    });
    db.sql("UPDATE play_nova.instances SET memory_mb = 1 WHERE id < 100");
    let (before, _) = rt.block_on(proof(&dbs));

    let playbook = format!(
        r#"
secrets:
  db_password: {{ file: db-password }}
vars:
  db: {{ login_host: 127.0.0.1, login_port: {port}, login_user: lifeboat }}
steps:
  - id: proof-before
    mysql_checksum:
      databases: [play_nova, play_glance, play_keystone]
      login_host: "{{{{ db.login_host }}}}"
      login_port: "{{{{ db.login_port }}}}"
      login_user: "{{{{ db.login_user }}}}"
      login_password: "{{{{ db_password }}}}"
    register: before
  - id: restore
    needs: [proof-before]
    mysql_restore:
      src: {dump}
      login_host: 127.0.0.1
      login_port: {port}
      login_user: lifeboat
      login_password: "{{{{ db_password }}}}"
    register: restored
  - id: count
    needs: [restore]
    mysql_query:
      query: SELECT COUNT(*) AS n FROM play_nova.instances WHERE memory_mb = 1
      login_socket: {socket}
      login_user: root
    register: count
  - id: then-fail
    needs: [count]
    assert: count.data.rows[0].n == "999"
"#,
        port = db.port,
        socket = db.socket.display(),
    );
    let out = support::Test::new()
        .playbook(&playbook)
        .file("db-password", PASSWORD)
        .run();
    assert_ne!(out.code, 0, "{out:?}");
    assert_eq!(out.status("proof-before", "localhost"), "ok");
    assert_eq!(out.status("restore", "localhost"), "changed");
    assert_eq!(out.status("count", "localhost"), "ok");
    assert_eq!(out.rollback_status("restore", "localhost"), "done");
    assert!(!out.stdout.contains("p4ss"), "the secret is masked");
    let (after, _) = rt.block_on(proof(&dbs));
    assert_eq!(after, before, "the rollback re-imported the safety dump");

    // The same playbook as a dry run: restore predicted, nothing changed.
    let out = support::Test::new()
        .playbook(&playbook)
        .file("db-password", PASSWORD)
        .args(&["--check"])
        .run();
    assert_eq!(out.status("restore", "localhost"), "would_change");
    assert_eq!(rt.block_on(proof(&dbs)).0, before);
}

// ---------------------------------------------------------------- validation

use support::modules::validation_messages as errors;

#[test]
fn arguments_are_checked_at_load() {
    let cases = [
        (
            "mysql_dump: { databases: all, dest: /b/x.sql.gz, compress: bzip2 }",
            "bzip2",
        ),
        (
            "mysql_dump: { databases: all, dest: /b/x.sql.gz, compress: zstd }",
            "extension",
        ),
        (
            "mysql_dump: { databases: [], dest: /b/x.sql }",
            "empty list",
        ),
        (
            "mysql_dump: { databases: [nova, all], dest: /b/x.sql }",
            "inside a list",
        ),
        (
            "mysql_dump: { databases: all, dest: /b/ }",
            "not a directory",
        ),
        (
            "mysql_dump: { dest: /b/x.sql }",
            "needs the argument `databases`",
        ),
        (
            "mysql_dump: { databases: all, dest: /b/x.sql, login_host: db, login_socket: /s }",
            "not both",
        ),
        (
            "mysql_dump: { databases: all, dest: /b/x.sql, login_port: 70000 }",
            "not a port",
        ),
        (
            "mysql_dump: { databases: all, dest: /b/x.sql, pasword: x }",
            "unknown argument",
        ),
        (
            "mysql_restore: { src: /b/x.sql, safety_dump: false, safety_dir: /t }",
            "safety_dump is false",
        ),
        (
            "mysql_restore: { database: nova }",
            "needs the argument `src`",
        ),
        ("mysql_query: \"  ;  \"", "empty"),
        ("mysql_query: { query: [1] }", "must be a string"),
        ("mysql_checksum: { databases: all }", "not accepted"),
    ];
    for (step, want) in cases {
        let errs = errors(step);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{step}: expected `{want}` in {errs:?}"
        );
    }
    for good in [
        "mysql_dump: { databases: all, dest: /b/x.sql.gz, login_socket: /run/mysqld/mysqld.sock }",
        "mysql_dump: { databases: nova, dest: /b/x, compress: zstd, extra_args: [--hex-blob] }",
        "mysql_restore: { src: /b/x.sql.gz, database: scratch, login_port: 3306 }",
        "mysql_query: SELECT 1",
        "mysql_checksum: [nova, glance]",
        "mysql_checksum: {}",
    ] {
        assert_eq!(errors(good), Vec::<String>::new(), "{good}");
    }
    // Every example validates, and every module documents itself.
    for name in [
        "mysql_dump",
        "mysql_restore",
        "mysql_query",
        "mysql_checksum",
    ] {
        let doc = lookup(name).expect("registered").doc();
        assert!(!doc.summary.is_empty() && !doc.description.is_empty() && !doc.rollback.is_empty());
        assert!(!doc.returns.is_empty());
        let file = SourceFile::new("example.yml", doc.example);
        let node = lifeboat::yaml::parse(&file).expect("example parses");
        for step in node.as_seq().expect("a list of steps") {
            for (k, v) in step.as_map().expect("a step") {
                if let Some(m) = k.as_str().and_then(lookup) {
                    let errs = validate_args(&*m, k, v, &file);
                    assert!(errs.is_empty(), "{name} example: {errs:?}");
                }
            }
        }
    }
}
