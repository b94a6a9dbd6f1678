//! The backup and recovery modules (`service`, `rsync`, `archive`, `unarchive`,
//! `manifest`, `verify_manifest`, `move_aside`, `prune`) against real files, real
//! rsync and tar, and real daemons in temporary directories, through the local
//! connection: changed/ok, dry runs that change nothing and predict right, result
//! data, automatic rollback (or its documented absence), and load-time validation.

#[path = "support/modules.rs"]
mod modules;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeboat::modules::{ModuleContext, lookup};
use modules::{context, example_errors, failure, fixtures, ok, run, undo, vars};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

fn ctx_with(check: bool) -> ModuleContext {
    ModuleContext {
        check,
        vars: vars(json!({
            "inventory_hostname": "localhost",
            "ansible_connection": "local",
        })),
        base_dir: fixtures("backup"),
        ..context("localhost")
    }
}

fn ctx() -> ModuleContext {
    ctx_with(false)
}

fn dry() -> ModuleContext {
    ctx_with(true)
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn write(p: &Path, content: &str) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(p, content).expect("write");
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn sh(script: &str) {
    let st = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .status()
        .expect("bash runs");
    assert!(st.success(), "`{script}` failed");
}

/// Everything observable about a tree: kind, mode, content.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let mode = meta.permissions().mode() & 0o7777;
            let desc = if meta.file_type().is_symlink() {
                format!("link {}", s(&std::fs::read_link(&path).expect("readlink")))
            } else if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {mode:o}")
            } else {
                format!(
                    "file {mode:o} {}",
                    String::from_utf8_lossy(&std::fs::read(&path).expect("read"))
                )
            };
            out.insert(
                path.strip_prefix(root).expect("below root").to_path_buf(),
                desc,
            );
        }
    }
    out
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------- move_aside

#[tokio::test]
async fn move_aside_renames_and_rollback_moves_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nova = tmp.path().join("nova");
    write(&nova.join("nova.conf"), "[DEFAULT]\n");
    let args = json!({ "path": s(&nova) });

    // Dry run: predicts, changes nothing.
    let before = tree(tmp.path());
    let o = ok("move_aside", &dry(), &args).await;
    assert!(o.changed);
    assert!(
        o.msg.as_deref().unwrap_or("").contains("would move"),
        "{o:?}"
    );
    assert_eq!(tree(tmp.path()), before);

    let o = ok("move_aside", &ctx(), &args).await;
    assert!(o.changed);
    let new_path = o.data["new_path"].as_str().expect("new path").to_string();
    assert!(
        new_path.starts_with(&format!("{}.orig-", s(&nova))),
        "{new_path}"
    );
    assert!(!nova.exists());
    assert_eq!(
        std::fs::read_to_string(Path::new(&new_path).join("nova.conf")).expect("moved"),
        "[DEFAULT]\n"
    );

    // A restore puts something at the original path; rollback replaces it.
    write(&nova.join("restored.conf"), "new\n");
    let u = undo("move_aside", &ctx(), &args, &o).await.expect("undo");
    assert!(u.changed);
    assert!(!Path::new(&new_path).exists());
    assert!(nova.join("nova.conf").exists());
    assert!(!nova.join("restored.conf").exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // Missing: ok by default, a failure with missing: fail.
    let gone = json!({ "path": s(&tmp.path().join("absent")) });
    let o = ok("move_aside", &ctx(), &gone).await;
    assert!(!o.changed && o.undo.is_none());
    let e = failure(
        run(
            "move_aside",
            &ctx(),
            &json!({ "path": s(&tmp.path().join("absent")), "missing": "fail" }),
        )
        .await,
    );
    assert!(e.contains("does not exist"), "{e}");

    // A fixed suffix never overwrites.
    let fixed = json!({ "path": s(&nova), "suffix": ".orig" });
    std::fs::create_dir(tmp.path().join("nova.orig")).expect("mkdir");
    let e = failure(run("move_aside", &ctx(), &fixed).await);
    assert!(e.contains("already exists"), "{e}");
    assert!(nova.exists());
}

// ---------------------------------------------------------------- manifest

#[tokio::test]
async fn manifest_and_verify_find_missing_extra_and_changed_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("etc");
    write(&root.join("a.conf"), "a\n");
    write(&root.join("sub/b.conf"), "b\n");
    write(&root.join("sub/c d.conf"), "c\n");
    write(&root.join("instances/big.img"), "disk\n");
    write(&root.join("log/x.log"), "log\n");
    let man = tmp.path().join("etc.manifest.json");
    let args = json!({ "path": s(&root), "dest": s(&man), "exclude": ["instances", "*.log"] });

    let o = ok("manifest", &dry(), &args).await;
    assert!(o.changed);
    assert!(!man.exists());

    let o = ok("manifest", &ctx(), &args).await;
    assert!(o.changed);
    assert_eq!(o.data["files"], 3, "{:?}", o.data);
    let m: Json =
        serde_json::from_str(&std::fs::read_to_string(&man).expect("manifest")).expect("json");
    assert_eq!(
        m["files"]["sub/c d.conf"]["sha256"],
        format!("{:x}", Sha256::digest(b"c\n"))
    );
    assert_eq!(m["files"]["sub/c d.conf"]["mode"], "0644");
    assert_eq!(m["files"]["a.conf"]["size"], 2);
    assert!(m["files"].get("instances/big.img").is_none());
    assert!(m["files"].get("log/x.log").is_none());

    // Same tree: ok, and the file is not rewritten.
    let o2 = ok("manifest", &ctx(), &args).await;
    assert!(!o2.changed);

    let verify = json!({ "manifest": s(&man) });
    let v = ok("verify_manifest", &ctx(), &verify).await;
    assert_eq!(v.data["ok"], true, "{:?}", v.data);
    assert!(!v.changed);

    // Missing, extra, changed content, changed mode.
    std::fs::remove_file(root.join("a.conf")).expect("rm");
    write(&root.join("sub/new.conf"), "n\n");
    write(&root.join("sub/b.conf"), "B\n");
    chmod(&root.join("sub/c d.conf"), 0o600);
    let e = failure(run("verify_manifest", &ctx(), &verify).await);
    assert!(e.contains("1 missing, 1 extra, 2 changed"), "{e}");
    assert!(e.contains("a.conf") && e.contains("sub/new.conf"), "{e}");
    let v = ok(
        "verify_manifest",
        &ctx(),
        &json!({ "manifest": s(&man), "fail_on_mismatch": false }),
    )
    .await;
    assert_eq!(v.data["ok"], false);
    assert_eq!(strings(&v.data["missing"]), vec!["a.conf"]);
    assert_eq!(strings(&v.data["extra"]), vec!["sub/new.conf"]);
    let changed: BTreeMap<String, Vec<String>> = v.data["changed"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap_or("").to_string(),
                strings(&c["differs"]),
            )
        })
        .collect();
    assert_eq!(changed["sub/b.conf"], vec!["content"]);
    assert_eq!(changed["sub/c d.conf"], vec!["mode"]);

    // The manifest changes now; rollback puts the previous one back.
    let before = std::fs::read(&man).expect("manifest");
    let o3 = ok("manifest", &ctx(), &args).await;
    assert!(o3.changed);
    assert_ne!(std::fs::read(&man).expect("manifest"), before);
    undo("manifest", &ctx(), &args, &o3).await.expect("undo");
    assert_eq!(std::fs::read(&man).expect("manifest"), before);
    // And the first one, which created it, removes it.
    undo("manifest", &ctx(), &args, &o).await.expect("undo");
    assert!(!man.exists());
}

#[tokio::test]
async fn manifest_of_one_file_and_of_an_absent_optional_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = tmp.path().join("default/keystone");
    write(&conf, "DAEMON_ARGS=x\n");
    chmod(&conf, 0o640);
    write(&tmp.path().join("default/glance-api"), "other\n");
    let man = tmp.path().join("keystone.json");
    let o = ok(
        "manifest",
        &ctx(),
        &json!({ "path": s(&conf), "dest": s(&man) }),
    )
    .await;
    assert_eq!(o.data["kind"], "file", "{:?}", o.data);
    let m: Json =
        serde_json::from_str(&std::fs::read_to_string(&man).expect("manifest")).expect("json");
    // The file alone, by its name: not its neighbours.
    assert_eq!(m["kind"], "file");
    assert_eq!(m["files"].as_object().map(|f| f.len()), Some(1), "{m}");
    assert_eq!(m["files"]["keystone"]["mode"], "0640");
    let verify = json!({ "manifest": s(&man) });
    ok("verify_manifest", &ctx(), &verify).await;
    write(&conf, "DAEMON_ARGS=y\n");
    let e = failure(run("verify_manifest", &ctx(), &verify).await);
    assert!(e.contains("1 changed") && e.contains("keystone"), "{e}");
    // A directory where the file was is no restore of it.
    std::fs::remove_file(&conf).expect("rm");
    std::fs::create_dir(&conf).expect("mkdir");
    let e = failure(run("verify_manifest", &ctx(), &verify).await);
    assert!(e.contains("is a directory, not a file"), "{e}");

    // An optional file that is not there: an error by default, recorded with missing: record.
    let gone = tmp.path().join("default/cinder-api");
    let man2 = tmp.path().join("cinder.json");
    let e = failure(
        run(
            "manifest",
            &ctx(),
            &json!({ "path": s(&gone), "dest": s(&man2) }),
        )
        .await,
    );
    assert!(e.contains("does not exist (give `missing: record`"), "{e}");
    let o = ok(
        "manifest",
        &ctx(),
        &json!({ "path": s(&gone), "dest": s(&man2), "missing": "record" }),
    )
    .await;
    assert_eq!(
        (o.data["kind"].clone(), o.data["files"].clone()),
        (json!("absent"), json!(0))
    );
    let verify2 = json!({ "manifest": s(&man2) });
    ok("verify_manifest", &ctx(), &verify2).await;
    write(&gone, "appeared\n");
    let e = failure(run("verify_manifest", &ctx(), &verify2).await);
    assert!(
        e.contains("exists, but the manifest") && e.contains("recorded it absent"),
        "{e}"
    );
}

// ---------------------------------------------------------------- archive

async fn round_trip(ext: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("etc/nova");
    write(&src.join("nova.conf"), "[DEFAULT]\n");
    write(&src.join("secret.conf"), "x\n");
    chmod(&src.join("secret.conf"), 0o640);
    write(&src.join("cache/junk"), "junk\n");
    std::os::unix::fs::symlink("nova.conf", src.join("link.conf")).expect("symlink");
    let dest = tmp.path().join(format!("backup/nova{ext}"));
    std::fs::create_dir_all(tmp.path().join("backup")).expect("mkdir");
    let args = json!({ "src": [s(&src)], "dest": s(&dest), "exclude": ["nova/cache"] });

    let o = ok("archive", &dry(), &args).await;
    assert!(o.changed && !dest.exists());

    let o = ok("archive", &ctx(), &args).await;
    assert!(o.changed);
    assert!(dest.exists());
    assert_eq!(
        o.data["size"],
        std::fs::metadata(&dest).expect("stat").len()
    );
    assert_eq!(o.data["sha256"].as_str().map(str::len), Some(64));
    let backup_dir: Vec<_> = std::fs::read_dir(tmp.path().join("backup"))
        .expect("read_dir")
        .collect();
    assert_eq!(backup_dir.len(), 1, "no temporary file left");

    // Exists: ok, untouched.
    let again = ok("archive", &ctx(), &args).await;
    assert!(!again.changed);

    // Restore into a fresh directory: same tree minus the excluded one.
    let restore = tmp.path().join("restore");
    let uargs = json!({ "src": s(&dest), "dest": s(&restore) });
    let d = ok("unarchive", &dry(), &uargs).await;
    assert!(d.changed && !restore.exists());
    let u = ok("unarchive", &ctx(), &uargs).await;
    assert!(u.changed);
    assert_eq!(u.data["created_dest"], true);
    let mut expected = tree(&src);
    expected.retain(|p, _| !p.starts_with("cache"));
    assert_eq!(tree(&restore.join("nova")), expected);

    // Into a directory that has it already: refused, nothing written.
    let e = failure(run("unarchive", &ctx(), &uargs).await);
    assert!(e.contains("exist there already"), "{e}");

    // Rollback of the extraction removes the created dest.
    undo("unarchive", &ctx(), &uargs, &u).await.expect("undo");
    assert!(!restore.exists());

    // Into an existing directory with other content: only the new entries go.
    write(&restore.join("keep.txt"), "keep\n");
    let u = ok("unarchive", &ctx(), &uargs).await;
    assert!(restore.join("nova/nova.conf").exists());
    undo("unarchive", &ctx(), &uargs, &u).await.expect("undo");
    assert!(!restore.join("nova").exists());
    assert!(restore.join("keep.txt").exists());

    // Rollback of the archive removes it.
    undo("archive", &ctx(), &args, &o).await.expect("undo");
    assert!(!dest.exists());
}

#[tokio::test]
async fn archive_round_trip_gzip() {
    round_trip(".tar.gz").await;
}

#[tokio::test]
async fn archive_round_trip_zstd() {
    round_trip(".tar.zst").await;
}

#[tokio::test]
async fn archive_failure_leaves_nothing_and_unarchive_rejects_traversal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("x.tar.gz");
    // A missing src fails before tar runs.
    write(&tmp.path().join("src/ok"), "ok\n");
    let e = failure(
        run(
            "archive",
            &ctx(),
            &json!({ "src": s(&tmp.path().join("src")), "dest": s(&dest), "compress": "gzip", "chdir": "/nonexistent-dir" }),
        )
        .await,
    );
    assert!(e.contains("do not exist"), "{e}");
    assert!(!dest.exists());

    // A crafted archive with `../escape` and an absolute member.
    let evil = tmp.path().join("evil.tar");
    sh(&format!(
        "cd {d} && mkdir -p in && echo x > in/x && tar --absolute-names -cf {evil} in/x ../$(basename {d})/in/x",
        d = tmp.path().display(),
        evil = evil.display()
    ));
    let out = tmp.path().join("out");
    let e = failure(
        run(
            "unarchive",
            &ctx(),
            &json!({ "src": s(&evil), "dest": s(&out) }),
        )
        .await,
    );
    assert!(e.contains("would land outside"), "{e}");
    assert!(!out.exists(), "nothing extracted");
}

// ---------------------------------------------------------------- prune

#[tokio::test]
async fn prune_never_removes_the_newest_complete_backup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // nova-1 (10 days, complete), nova-2 (9 days, complete), nova-3 (8 days, a failed
    // run: no manifest), other.txt (old, not matching).
    for (name, days, complete) in [
        ("nova-1", 10, true),
        ("nova-2", 9, true),
        ("nova-3", 8, false),
    ] {
        let p = dir.join(format!("{name}.tar.gz"));
        write(&p, name);
        if complete {
            write(&dir.join(format!("{name}.tar.gz.manifest.json")), "{}");
        }
        sh(&format!("touch -d @{} {}", now - days * 86400, p.display()));
    }
    write(&dir.join("other.txt"), "x");
    sh(&format!(
        "touch -d @{} {}",
        now - 100 * 86400,
        dir.join("other.txt").display()
    ));

    // Every backup is older than an hour: all would go but the newest complete one.
    let args = json!({ "path": s(dir), "pattern": "nova-*.tar.gz", "older_than": "1h" });
    let before = tree(dir);
    let o = ok("prune", &dry(), &args).await;
    assert!(o.changed);
    assert_eq!(
        strings(&o.data["removed"]),
        vec!["nova-3.tar.gz", "nova-1.tar.gz"]
    );
    assert_eq!(strings(&o.data["kept"]), vec!["nova-2.tar.gz"]);
    assert_eq!(o.data["newest_complete"], "nova-2.tar.gz");
    assert_eq!(strings(&o.data["incomplete"]), vec!["nova-3.tar.gz"]);
    assert_eq!(tree(dir), before, "the dry run removed nothing");

    // keep_last 2 and older than a day: nova-1 goes, with its manifest.
    let args2 = json!({ "path": s(dir), "pattern": "nova-*", "keep_last": 2, "older_than": "1d" });
    let o = ok("prune", &ctx(), &args2).await;
    assert!(o.changed);
    assert_eq!(strings(&o.data["removed"]), vec!["nova-1.tar.gz"]);
    assert!(!dir.join("nova-1.tar.gz").exists());
    assert!(!dir.join("nova-1.tar.gz.manifest.json").exists());
    assert!(dir.join("nova-2.tar.gz.manifest.json").exists());
    assert!(dir.join("other.txt").exists());
    // Rollback cannot bring it back, and says so.
    let u = undo("prune", &ctx(), &args2, &o)
        .await
        .expect("undo reports");
    assert!(!u.changed);
    assert!(
        u.msg.as_deref().unwrap_or("").contains("cannot be undone"),
        "{u:?}"
    );
    assert!(
        lookup("prune")
            .expect("prune")
            .doc()
            .rollback
            .starts_with("not possible")
    );

    // Now only the older_than rule: nova-3 goes, nova-2 stays although it is old.
    let o = ok("prune", &ctx(), &args).await;
    assert_eq!(strings(&o.data["removed"]), vec!["nova-3.tar.gz"]);
    assert!(dir.join("nova-2.tar.gz").exists());
    let o = ok("prune", &ctx(), &args).await;
    assert!(!o.changed);

    // Without any complete backup nothing is removed.
    std::fs::remove_file(dir.join("nova-2.tar.gz.manifest.json")).expect("rm");
    let o = ok("prune", &ctx(), &args).await;
    assert!(!o.changed && dir.join("nova-2.tar.gz").exists());
}

// ---------------------------------------------------------------- rsync

fn inode(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat").ino()
}

#[tokio::test]
async fn rsync_link_dest_snapshots_dry_run_and_rollback() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("images");
    write(&src.join("same.img"), "unchanged\n");
    write(&src.join("changes.img"), "v1\n");
    write(&src.join("skip.tmp"), "tmp\n");
    let snaps = tmp.path().join("snaps");
    std::fs::create_dir(&snaps).expect("mkdir");
    let src_arg = format!("{}/", s(&src));
    let snap = |n: &str| {
        json!({
            "src": src_arg, "dest": s(&snaps.join(n)), "link_dest": "../s1",
            "hardlinks": true, "numeric_ids": true, "exclude": ["*.tmp"],
        })
    };

    let first = json!({ "src": src_arg, "dest": s(&snaps.join("s1")), "exclude": ["*.tmp"] });
    let o = ok("rsync", &ctx(), &first).await;
    assert!(o.changed);
    assert!(o.data["count"].as_u64().unwrap_or(0) >= 2, "{:?}", o.data);
    assert!(!snaps.join("s1/skip.tmp").exists());
    // Again: nothing itemized, ok.
    let o = ok("rsync", &ctx(), &first).await;
    assert!(!o.changed, "{:?}", o.data);

    write(&src.join("changes.img"), "v2 longer\n");
    // Dry run: lists the changes, creates nothing.
    let before = tree(&snaps);
    let d = ok("rsync", &dry(), &snap("s2")).await;
    assert!(d.changed);
    let listed = strings(&d.data["changes"]).join("\n");
    assert!(listed.contains("changes.img"), "{listed}");
    assert!(!listed.contains("same.img"), "{listed}");
    assert_eq!(tree(&snaps), before);

    let o = ok("rsync", &ctx(), &snap("s2")).await;
    assert!(o.changed);
    assert_eq!(
        inode(&snaps.join("s2/same.img")),
        inode(&snaps.join("s1/same.img")),
        "unchanged files are hard links into the previous snapshot"
    );
    assert_ne!(
        inode(&snaps.join("s2/changes.img")),
        inode(&snaps.join("s1/changes.img"))
    );
    assert_eq!(
        std::fs::read_to_string(snaps.join("s1/changes.img")).expect("read"),
        "v1\n"
    );
    // Rollback of a snapshot the step created removes it.
    undo("rsync", &ctx(), &snap("s2"), &o).await.expect("undo");
    assert!(!snaps.join("s2").exists());
    assert!(snaps.join("s1/same.img").exists());

    // Into an existing tree with rollback_snapshot: rollback restores it as it was.
    let mirror = tmp.path().join("mirror");
    write(&mirror.join("old.img"), "old\n");
    write(&mirror.join("changes.img"), "v0\n");
    let before = tree(&mirror);
    let args =
        json!({ "src": src_arg, "dest": s(&mirror), "delete": true, "rollback_snapshot": true });
    let o = ok("rsync", &ctx(), &args).await;
    assert!(o.changed);
    assert!(!mirror.join("old.img").exists());
    let snapshot = o.data["snapshot"].as_str().expect("snapshot").to_string();
    assert_eq!(
        std::fs::read_to_string(Path::new(&snapshot).join("changes.img")).expect("read"),
        "v0\n",
        "rsync did not write through the snapshot's hard links"
    );
    undo("rsync", &ctx(), &args, &o).await.expect("undo");
    assert_eq!(tree(&mirror), before);
    assert!(!Path::new(&snapshot).exists());

    // Push from the controller to a host on the local connection.
    let pushed = tmp.path().join("pushed");
    let o = ok(
        "rsync",
        &ctx(),
        &json!({ "src": src_arg, "dest": s(&pushed), "mode": "push" }),
    )
    .await;
    assert!(o.changed && pushed.join("same.img").exists());

    // A failure: exit status and message.
    let e = failure(
        run(
            "rsync",
            &ctx(),
            &json!({ "src": s(&tmp.path().join("nope/")), "dest": s(&tmp.path().join("x")) }),
        )
        .await,
    );
    assert!(e.contains("rsync exit 23"), "{e}");
}

// ---------------------------------------------------------------- service

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/backup")
        .join(name)
}

/// Whether a process runs (a zombie does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|st| {
            !st.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

fn pid_in(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Polls until `f` holds, failing after 10 seconds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops whatever daemons a test left, by the pids in its run directory.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if let Some(pid) = pid_in(&e.path()) {
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

fn command_manager(run: &Path) -> Json {
    let pid = format!("{}/{{name}}.pid", s(run));
    json!({
        "start": format!(
            "setsid -f bash {} {pid} </dev/null >/dev/null 2>&1",
            s(&fixture("daemon.sh"))
        ),
        "stop": format!("kill \"$(cat {pid})\" && rm -f {pid}"),
        "status": format!(
            "p=$(cat {pid} 2>/dev/null) && [ -d /proc/$p ] && ! grep -q '^State:[[:space:]]*Z' /proc/$p/status"
        ),
    })
}

#[tokio::test]
async fn service_command_manager_stop_dry_run_and_rollback() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run_dir = tmp.path().join("run");
    std::fs::create_dir(&run_dir).expect("mkdir");
    let _reaper = Reaper(run_dir.clone());
    let commands = command_manager(&run_dir);
    let pidfile = |n: &str| run_dir.join(format!("{n}.pid"));

    // api runs, worker does not.
    let start_api = json!({ "name": "api", "state": "started", "manager": "command", "commands": commands, "wait": "10s" });
    let o = ok("service", &ctx(), &start_api).await;
    assert!(o.changed);
    let api1 = pid_in(&pidfile("api")).expect("api's pid");
    assert!(alive(api1));
    let again = ok("service", &ctx(), &start_api).await;
    assert!(!again.changed, "already running: ok");

    let both = |state: &str| json!({ "names": ["api", "worker"], "state": state, "manager": "command", "commands": commands });
    // Dry run of a start: only worker would change; nothing is started.
    let d = ok("service", &dry(), &both("started")).await;
    assert!(d.changed);
    assert_eq!(d.msg.as_deref(), Some("would start worker"));
    assert!(!pidfile("worker").exists());

    // Stop both: api stops (its process ends), worker stays stopped.
    let o = ok("service", &ctx(), &both("stopped")).await;
    assert!(o.changed);
    eventually("api's process ends", || !alive(api1));
    let services = o.data["services"].as_array().expect("services");
    assert_eq!(
        services[0],
        json!({ "name": "api", "before": "running", "after": "stopped", "changed": true })
    );
    assert_eq!(
        services[1],
        json!({ "name": "worker", "before": "stopped", "after": "stopped", "changed": false })
    );

    // Rollback restarts exactly what the step stopped.
    let u = undo("service", &ctx(), &both("stopped"), &o)
        .await
        .expect("undo");
    assert!(u.changed);
    let api2 = pid_in(&pidfile("api")).expect("api runs again");
    assert_ne!(api1, api2);
    assert!(alive(api2));
    assert!(!pidfile("worker").exists(), "worker was not running before");

    // A start step's rollback stops what it started.
    let o = ok("service", &ctx(), &both("started")).await;
    let worker = pid_in(&pidfile("worker")).expect("worker runs");
    undo("service", &ctx(), &both("started"), &o)
        .await
        .expect("undo");
    eventually("worker's process ends", || !alive(worker));
    assert!(alive(api2), "api was running before the step: it stays");
}

/// A folder with `init.d/glance-api` (the LSB fixture script) starting `daemon.sh`, whose
/// pid file is `run/glance-api.pid`; the reaper ends the daemons left when it drops.
fn sysv_glance_api() -> (tempfile::TempDir, Reaper) {
    let tmp = tempfile::tempdir().expect("tempdir");
    for d in ["init.d", "run"] {
        std::fs::create_dir(tmp.path().join(d)).expect("mkdir");
    }
    let reaper = Reaper(tmp.path().join("run"));
    std::fs::copy(fixture("daemon.sh"), tmp.path().join("daemon.sh")).expect("copy");
    std::fs::copy(
        fixture("sysv-service.sh"),
        tmp.path().join("init.d/glance-api"),
    )
    .expect("copy");
    (tmp, reaper)
}

#[tokio::test]
async fn service_sysv_scripts_start_restart_and_rollback() {
    let (tmp, _reaper) = sysv_glance_api();
    let init_dir = s(&tmp.path().join("init.d"));
    let pidfile = tmp.path().join("run/glance-api.pid");
    let args = |state: &str, manager: &str| json!({ "name": "glance-api", "state": state, "manager": manager, "init_dir": init_dir });

    // auto finds the init script (no systemd as init in the test environment, or a
    // sysv script named explicitly).
    let manager = if Path::new("/run/systemd/system").exists() {
        "sysv"
    } else {
        "auto"
    };
    let o = ok("service", &ctx(), &args("started", manager)).await;
    assert!(o.changed);
    assert_eq!(o.data["manager"], "sysv");
    let first = pid_in(&pidfile).expect("pid");
    assert!(alive(first));

    let r = ok("service", &ctx(), &args("restarted", "sysv")).await;
    assert!(r.changed);
    let second = pid_in(&pidfile).expect("pid");
    assert_ne!(first, second);
    eventually("the old process ends", || !alive(first));
    assert!(alive(second));
    // Rolling back a restart of a running service leaves it running.
    let u = undo("service", &ctx(), &args("restarted", "sysv"), &r)
        .await
        .expect("undo");
    assert!(!u.changed);
    assert!(alive(second));

    // Rolling back the start stops it.
    undo("service", &ctx(), &args("started", "sysv"), &o)
        .await
        .expect("undo");
    eventually("the daemon ends", || !alive(second));

    // A service that never reaches its state fails after `wait`.
    let e = failure(
        run(
            "service",
            &ctx(),
            &json!({ "name": "x", "state": "started", "manager": "command", "wait": "1s",
                     "commands": { "start": "true", "stop": "true", "status": "false" } }),
        )
        .await,
    );
    assert!(e.contains("still not running"), "{e}");
}

/// Debian's uwsgi init scripts answer `status` with `pidof uwsgi_python311`: "running"
/// while any of them runs. With `pidfiles`, the daemon's own pid file decides.
#[tokio::test]
async fn service_pidfiles_decide_running_where_the_init_script_lies() {
    let (tmp, _reaper) = sysv_glance_api();
    // `keystone`: an init script whose status always says running; it starts and stops
    // the glance-api daemon of the fixture (pid file run/glance-api.pid).
    let liar = tmp.path().join("init.d/keystone");
    std::fs::write(
        &liar,
        "#!/bin/sh\ncase \"$1\" in status) exit 0 ;; *) exec \"$(dirname \"$0\")/glance-api\" \"$1\" ;; esac\n",
    )
    .expect("write");
    std::fs::set_permissions(&liar, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let init_dir = s(&tmp.path().join("init.d"));
    let pidfile = tmp.path().join("run/glance-api.pid");
    let args = |state: &str, pidfiles: Json| {
        json!({ "names": ["keystone", "nova-novncproxy"], "state": state, "manager": "sysv",
                "init_dir": init_dir, "pidfiles": pidfiles, "missing": "skip" })
    };

    // Without pid files the lie wins: "already running", nothing started.
    let o = ok("service", &ctx(), &args("started", json!({}))).await;
    assert!(!o.changed, "{o:?}");
    assert!(pid_in(&pidfile).is_none());

    // With its pid file the daemon is started, and the service not installed is left out.
    let files = json!({ "keystone": s(&pidfile) });
    let o = ok("service", &ctx(), &args("started", files.clone())).await;
    assert!(o.changed);
    let pid = pid_in(&pidfile).expect("pid");
    assert!(alive(pid));
    assert_eq!(o.data["services"][1]["name"], "nova-novncproxy");
    assert_eq!(o.data["services"][1]["before"], "absent");
    let msg = o.msg.clone().unwrap_or_default();
    assert!(msg.contains("not installed: nova-novncproxy"), "{msg}");

    let o = ok("service", &ctx(), &args("stopped", files.clone())).await;
    assert!(o.changed);
    eventually("the daemon ends", || !alive(pid));
    // The rollback of the stop starts it again, by the same pid file.
    undo("service", &ctx(), &args("stopped", files.clone()), &o)
        .await
        .expect("undo");
    let again = pid_in(&pidfile).expect("pid after the rollback");
    assert!(alive(again));
    ok("service", &ctx(), &args("stopped", files)).await;
    eventually("the daemon ends", || !alive(again));

    // A service that is not installed fails unless `missing: skip`.
    let e = failure(
        run(
            "service",
            &ctx(),
            &json!({ "name": "nova-novncproxy", "state": "started", "manager": "sysv",
                     "init_dir": init_dir }),
        )
        .await,
    );
    assert!(e.contains("nova-novncproxy"), "{e}");

    // systemd named on a host whose init is not systemd is refused, not read as "stopped".
    if !Path::new("/run/systemd/system").exists() {
        let e = failure(
            run(
                "service",
                &ctx(),
                &json!({ "name": "glance-api", "state": "stopped", "manager": "systemd" }),
            )
            .await,
        );
        assert!(
            e.contains("systemd is not running on this host") && e.contains("sysv"),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------- validation and docs

fn validate(step: &str) -> Vec<String> {
    modules::validate(step)
        .into_iter()
        .map(|e| e.message)
        .collect()
}

#[test]
fn arguments_are_checked_when_the_playbook_loads() {
    assert!(validate("service:\n  names: [a, b]\n  state: stopped\n").is_empty());
    assert_eq!(
        validate("service:\n  name: a\n  state: halted\n"),
        vec!["unknown state `halted` for `service`"]
    );
    assert_eq!(
        validate("service:\n  name: a\n  names: [b]\n  state: started\n"),
        vec!["`service` takes `name` or `names`, not both"]
    );
    assert_eq!(
        validate("service:\n  name: a\n  state: started\n  manager: command\n"),
        vec!["`manager: command` needs `commands: {start, stop, status}`"]
    );
    assert_eq!(
        validate(
            "service:\n  name: a\n  state: started\n  manager: command\n  commands: {start: x, stop: y}\n"
        ),
        vec!["`commands` needs `status`"]
    );
    assert_eq!(
        validate("rsync:\n  src: a\n  dest: b\n  mode: sideways\n"),
        vec!["unknown mode `sideways` for `rsync`"]
    );
    assert_eq!(
        validate("rsync:\n  src: a\n  dest: b\n  mode: push\n  dest_host: db2\n"),
        vec!["`dest_host` is for host-to-host copies, not mode `push`"]
    );
    assert!(
        validate("rsync:\n  src: a\n  dset: b\n")
            .iter()
            .any(|e| e.contains("unknown argument `dset`"))
    );
    assert_eq!(
        validate("archive:\n  src: /etc/nova\n  dest: /b/x.tar.gz\n  compress: bzip2\n"),
        vec!["unknown compress `bzip2` for `archive`"]
    );
    assert_eq!(
        validate("prune:\n  path: /b\n  pattern: \"*.tar\"\n"),
        vec!["`prune` needs `keep_last`, `older_than` or both"]
    );
    assert!(
        validate("prune:\n  path: /b\n  pattern: \"*.tar\"\n  older_than: soon\n")[0]
            .contains("must be a duration")
    );
    assert_eq!(
        validate("move_aside:\n  path: /etc/nova\n  missing: maybe\n"),
        vec!["unknown missing `maybe` for `move_aside`"]
    );
    assert!(validate("move_aside: /etc/nova\n").is_empty());
    assert!(
        validate("manifest:\n  path: /etc\n")
            .iter()
            .any(|e| e.contains("`dest`"))
    );
    assert!(validate("verify_manifest:\n  manifest: /m.json\n").is_empty());
}

#[test]
fn every_backup_module_documents_itself() {
    for name in [
        "service",
        "rsync",
        "archive",
        "unarchive",
        "manifest",
        "verify_manifest",
        "move_aside",
        "prune",
    ] {
        let doc = lookup(name).expect("registered").doc();
        assert_eq!(doc.name, name);
        assert!(!doc.open_args, "{name}");
        assert!(
            !doc.summary.is_empty() && !doc.description.is_empty() && !doc.rollback.is_empty(),
            "{name}"
        );
        assert!(!doc.returns.is_empty(), "{name}");
        assert!(doc.args.iter().all(|a| !a.doc.is_empty()), "{name}");
        let errors = example_errors(name);
        assert!(
            errors.is_empty(),
            "{name}: {:?}",
            errors.iter().map(|e| &e.message).collect::<Vec<_>>()
        );
    }
}
