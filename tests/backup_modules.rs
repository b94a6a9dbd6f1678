//! The backup and recovery modules (`service`, `rsync`, `archive`, `unarchive`,
//! `manifest`, `verify_manifest`, `move_aside`, `prune`) against real files, real
//! rsync and tar, and real daemons in temporary directories, through the local
//! connection: changed/ok, dry runs that change nothing and predict right, result
//! data, automatic rollback (or its documented absence), and load-time validation.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::connection::LocalConnection;
use lifeboat::error::SourceFile;
use lifeboat::modules::{ModuleContext, ModuleError, Outcome, lookup, validate_args};
use lifeboat::template::Templates;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

fn ctx_with(check: bool) -> ModuleContext {
    ModuleContext {
        host: "localhost".to_string(),
        conn: Arc::new(LocalConnection::new("localhost")),
        check,
        diff: false,
        timeout: Some(Duration::from_secs(60)),
        become_: None,
        sink: None,
        templates: Arc::new(Templates::new()),
        vars: minijinja::Value::from(minijinja::value::Serde(json!({
            "inventory_hostname": "localhost",
            "ansible_connection": "local",
        }))),
        base_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backup"),
        run_id: "test".to_string(),
    }
}

fn ctx() -> ModuleContext {
    ctx_with(false)
}

fn dry() -> ModuleContext {
    ctx_with(true)
}

async fn run(module: &str, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
    let m = lookup(module).expect("module is registered");
    m.run(ctx, args).await
}

async fn ok(module: &str, ctx: &ModuleContext, args: &Json) -> Outcome {
    match run(module, ctx, args).await {
        Ok(o) => o,
        Err(e) => panic!("{module} failed: {e}"),
    }
}

async fn undo(
    module: &str,
    ctx: &ModuleContext,
    args: &Json,
    outcome: &Outcome,
) -> Result<Outcome, ModuleError> {
    let m = lookup(module).expect("module is registered");
    let data = outcome.undo.clone().expect("the step captured undo data");
    m.undo(ctx, args, &data).await
}

fn failure(r: Result<Outcome, ModuleError>) -> String {
    match r {
        Ok(o) => panic!("expected a failure, got {o:?}"),
        Err(e) => e.to_string(),
    }
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
