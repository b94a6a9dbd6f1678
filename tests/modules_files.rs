//! The file modules (`copy`, `template`, `file`, `fetch`, `wait_for`) against real files
//! in temporary directories through the local connection: changed/ok, dry runs that
//! change nothing and predict right, diffs, rollback, and load-time validation.

#[path = "support/modules.rs"]
mod modules;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::connection::LocalConnection;
use lifeboat::modules::{ModuleContext, ModuleError, Outcome, lookup};
use modules::{context, example_errors, failure, vars};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    modules::fixtures("modules")
}

fn ctx_with(check: bool, diff: bool) -> ModuleContext {
    ModuleContext {
        conn: Arc::new(LocalConnection::new("localhost")),
        check,
        diff,
        vars: vars(json!({
            "cloud": { "name": "prod-east" },
            "controllers": ["ctl1", "ctl2"],
            "keep": 7,
            "region": "RegionOne",
        })),
        base_dir: fixtures(),
        ..context("db1")
    }
}

fn ctx() -> ModuleContext {
    ctx_with(false, false)
}

async fn run(module: &str, ctx: &ModuleContext, args: Json) -> Result<Outcome, ModuleError> {
    modules::run(module, ctx, &args).await
}

async fn undo(
    module: &str,
    ctx: &ModuleContext,
    args: Json,
    outcome: &Outcome,
) -> Result<Outcome, ModuleError> {
    modules::undo(module, ctx, &args, outcome).await
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("path exists")
        .permissions()
        .mode()
        & 0o7777
}

fn write(p: &Path, content: &str, mode: u32) {
    std::fs::write(p, content).expect("write");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Everything observable about a tree: kind, mode, content hash or link target.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
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
                let bytes = std::fs::read(&path).expect("read");
                format!(
                    "file {mode:o} {:x} {:?}",
                    Sha256::digest(&bytes),
                    meta.modified().ok()
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

// ---------------------------------------------------------------- copy

#[tokio::test]
async fn copy_content_is_idempotent_and_tracks_content_and_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("motd");
    let args = json!({ "content": "hello\n", "dest": s(&dest), "mode": "0640" });

    let first = run("copy", &ctx(), args.clone()).await.expect("copy runs");
    assert!(first.changed);
    assert_eq!(std::fs::read_to_string(&dest).expect("written"), "hello\n");
    assert_eq!(mode_of(&dest), 0o640);
    assert_eq!(
        first.data["sha256"],
        json!(format!("{:x}", Sha256::digest(b"hello\n")))
    );
    assert_eq!(first.data["size"], json!(6));
    assert_eq!(first.data["mode"], json!("0640"));
    assert_eq!(first.data["changed_attributes"], json!(["content", "mode"]));

    let again = run("copy", &ctx(), args.clone()).await.expect("copy runs");
    assert!(!again.changed, "same content and mode: ok");
    assert!(again.undo.is_none());

    let content = run(
        "copy",
        &ctx(),
        json!({ "content": "bye\n", "dest": s(&dest), "mode": "0640" }),
    )
    .await
    .expect("copy runs");
    assert!(content.changed);
    assert_eq!(content.data["changed_attributes"], json!(["content"]));
    assert_eq!(std::fs::read_to_string(&dest).expect("written"), "bye\n");

    let mode = run(
        "copy",
        &ctx(),
        json!({ "content": "bye\n", "dest": s(&dest), "mode": "0600" }),
    )
    .await
    .expect("copy runs");
    assert!(mode.changed);
    assert_eq!(mode.data["changed_attributes"], json!(["mode"]));
    assert_eq!(mode_of(&dest), 0o600);

    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("motd")]);
}

#[tokio::test]
async fn copy_and_undo_handle_paths_that_need_quoting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("with space");
    std::fs::create_dir(&sub).expect("mkdir");
    let dest = sub.join("it's $(x).conf");
    write(&dest, "old\n", 0o600);
    let args = json!({ "content": "new\n", "dest": s(&dest), "mode": "0644" });
    let o = run("copy", &ctx(), args.clone()).await.expect("copy runs");
    assert_eq!(std::fs::read_to_string(&dest).expect("written"), "new\n");
    undo("copy", &ctx(), args, &o).await.expect("undo runs");
    assert_eq!(std::fs::read_to_string(&dest).expect("restored"), "old\n");
    assert_eq!(mode_of(&dest), 0o600);
    assert_eq!(
        tree(&sub).len(),
        1,
        "no temporary files left: {:?}",
        tree(&sub)
    );

    // A failure after the upload removes the temporary file too.
    let bad = json!({ "content": "x", "dest": s(&dest), "owner": "no-such-user-lifeboat" });
    let e = failure(run("copy", &ctx(), bad).await);
    assert!(e.contains("cannot write"), "{e}");
    assert_eq!(
        tree(&sub).len(),
        1,
        "no temporary files left: {:?}",
        tree(&sub)
    );
    assert_eq!(std::fs::read_to_string(&dest).expect("untouched"), "old\n");
}

#[tokio::test]
async fn copy_keeps_an_existing_files_mode_when_none_is_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("conf");
    write(&dest, "old\n", 0o600);
    let o = run(
        "copy",
        &ctx(),
        json!({ "content": "new\n", "dest": s(&dest) }),
    )
    .await
    .expect("copy runs");
    assert!(o.changed);
    assert_eq!(mode_of(&dest), 0o600);
    assert_eq!(o.data["mode"], json!("0600"));
}

#[tokio::test]
async fn copy_src_into_a_directory_uses_the_src_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(
        "copy",
        &ctx(),
        json!({ "src": "files/hello.txt", "dest": s(dir.path()) }),
    )
    .await
    .expect("copy runs");
    let dest = dir.path().join("hello.txt");
    assert!(o.changed);
    assert_eq!(o.data["dest"], json!(s(&dest)));
    assert_eq!(
        std::fs::read_to_string(&dest).expect("written"),
        "hello from the controller\n"
    );
    let again = run(
        "copy",
        &ctx(),
        json!({ "src": "files/hello.txt", "dest": format!("{}/", s(dir.path())) }),
    )
    .await
    .expect("copy runs");
    assert!(!again.changed);
}

#[tokio::test]
async fn copy_dry_run_changes_nothing_and_predicts_the_real_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let existing = dir.path().join("existing");
    write(&existing, "one\n", 0o644);
    let cases = [
        json!({ "content": "one\n", "dest": s(&existing), "mode": "0644" }),
        json!({ "content": "one\n", "dest": s(&existing), "mode": "0600" }),
        json!({ "content": "two\n", "dest": s(&existing) }),
        json!({ "content": "new\n", "dest": s(&dir.path().join("new")) }),
        json!({ "src": "files/hello.txt", "dest": s(dir.path()) }),
    ];
    for args in cases {
        let before = tree(dir.path());
        let predicted = run("copy", &ctx_with(true, true), args.clone())
            .await
            .expect("dry run");
        assert_eq!(
            tree(dir.path()),
            before,
            "the dry run of {args} changed files"
        );
        assert!(predicted.undo.is_none());
        let real = run("copy", &ctx(), args.clone()).await.expect("real run");
        assert_eq!(predicted.changed, real.changed, "prediction for {args}");
        assert_eq!(
            predicted.data["changed_attributes"], real.data["changed_attributes"],
            "{args}"
        );
        let after = run("copy", &ctx_with(true, false), args.clone())
            .await
            .expect("dry run");
        assert!(!after.changed, "after the real run, {args} is ok");
    }
}

#[tokio::test]
async fn copy_diff_shows_text_changes_and_calls_binary_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("conf");
    write(&dest, "a\nold\nc\n", 0o644);
    let o = run(
        "copy",
        &ctx_with(true, true),
        json!({ "content": "a\nnew\nc\n", "dest": s(&dest), "mode": "0600" }),
    )
    .await
    .expect("dry run");
    let diff = o.diff.expect("a diff");
    assert!(diff.contains("-old\n") && diff.contains("+new\n"), "{diff}");
    assert!(diff.contains("mode: 0644 -> 0600"), "{diff}");

    let o = run(
        "copy",
        &ctx_with(true, true),
        json!({ "content": "a\u{0}b", "dest": s(&dest) }),
    )
    .await
    .expect("dry run");
    assert!(o.diff.expect("a diff").contains("binary files differ"));

    let o = run(
        "copy",
        &ctx_with(true, false),
        json!({ "content": "x\n", "dest": s(&dest) }),
    )
    .await
    .expect("dry run");
    assert!(o.diff.is_none(), "no diff without --diff");
}

#[tokio::test]
async fn copy_undo_restores_content_and_mode_or_removes_a_new_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("conf");
    write(&dest, "original\n", 0o600);
    let before = tree(dir.path());
    let args = json!({ "content": "replaced\n", "dest": s(&dest), "mode": "0644" });
    let o = run("copy", &ctx(), args.clone()).await.expect("copy runs");
    assert_eq!(mode_of(&dest), 0o644);
    let u = undo("copy", &ctx(), args, &o).await.expect("undo runs");
    assert!(u.changed);
    assert_eq!(
        std::fs::read_to_string(&dest).expect("restored"),
        "original\n"
    );
    assert_eq!(mode_of(&dest), 0o600);
    let after = tree(dir.path());
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "no leftovers"
    );

    // Binary previous content survives the undo data round trip.
    let bin = dir.path().join("bin");
    std::fs::write(&bin, [0u8, 159, 146, 150, 255]).expect("write");
    let args = json!({ "content": "text", "dest": s(&bin) });
    let o = run("copy", &ctx(), args.clone()).await.expect("copy runs");
    undo("copy", &ctx(), args, &o).await.expect("undo runs");
    assert_eq!(
        std::fs::read(&bin).expect("restored"),
        vec![0u8, 159, 146, 150, 255]
    );

    // A mode-only change is undone as such.
    let args = json!({ "content": "original\n", "dest": s(&dest), "mode": "0640" });
    let o = run("copy", &ctx(), args.clone()).await.expect("copy runs");
    assert_eq!(o.data["changed_attributes"], json!(["mode"]));
    undo("copy", &ctx(), args, &o).await.expect("undo runs");
    assert_eq!(mode_of(&dest), 0o600);

    let new = dir.path().join("new");
    let args = json!({ "content": "x", "dest": s(&new) });
    let o = run("copy", &ctx(), args.clone()).await.expect("copy runs");
    assert!(new.exists());
    undo("copy", &ctx(), args, &o).await.expect("undo runs");
    assert!(!new.exists(), "undo of a new file removes it");
}

/// A source tree on the controller: a.txt, sub/b.txt, sub/deeper/c.bin.
fn source_tree(root: &Path) -> PathBuf {
    let src = root.join("src-tree");
    std::fs::create_dir_all(src.join("sub/deeper")).expect("dirs");
    std::fs::write(src.join("a.txt"), "alpha\n").expect("a");
    std::fs::write(src.join("sub/b.txt"), "beta\n").expect("b");
    std::fs::write(src.join("sub/deeper/c.bin"), [0u8, 1, 2, 255]).expect("c");
    src
}

#[tokio::test]
async fn copy_of_a_directory_copies_the_tree_idempotently_and_undoes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source_tree(dir.path());
    let dest = dir.path().join("dest");
    std::fs::create_dir_all(&dest).expect("dest");
    write(&dest.join("a.txt"), "old alpha\n", 0o600);
    write(&dest.join("untouched"), "mine\n", 0o644);
    let before = tree(dir.path());

    // `src/` copies the contents into dest.
    let args = json!({ "src": format!("{}/", s(&src)), "dest": s(&dest), "mode": "0640" });
    let plan = run("copy", &ctx_with(true, false), args.clone())
        .await
        .expect("dry run");
    assert!(plan.changed);
    assert_eq!(tree(dir.path()), before, "the dry run changed something");
    let o = run("copy", &ctx(), args.clone()).await.expect("copy runs");
    assert!(o.changed);
    assert_eq!(o.data["files"], json!(3));
    assert_eq!(o.data["created_dirs"], json!(2));
    assert_eq!(
        o.data["changed_files"],
        json!(["a.txt", "sub/b.txt", "sub/deeper/c.bin"])
    );
    assert_eq!(plan.data["changed_files"], o.data["changed_files"]);
    assert_eq!(
        std::fs::read_to_string(dest.join("a.txt")).expect("a"),
        "alpha\n"
    );
    assert_eq!(
        std::fs::read(dest.join("sub/deeper/c.bin")).expect("c"),
        vec![0u8, 1, 2, 255]
    );
    assert_eq!(mode_of(&dest.join("sub/b.txt")), 0o640);
    assert_eq!(
        std::fs::read_to_string(dest.join("untouched")).expect("kept"),
        "mine\n"
    );

    // Again: nothing to do. One file changed locally: only it is sent.
    let again = run("copy", &ctx(), args.clone()).await.expect("copy runs");
    assert!(!again.changed, "{again:?}");
    std::fs::write(src.join("sub/b.txt"), "beta 2\n").expect("edit");
    let third = run("copy", &ctx(), args.clone()).await.expect("copy runs");
    assert_eq!(third.data["changed_files"], json!(["sub/b.txt"]));
    undo("copy", &ctx(), args.clone(), &third)
        .await
        .expect("undo runs");
    assert_eq!(
        std::fs::read_to_string(dest.join("sub/b.txt")).expect("b"),
        "beta\n"
    );

    // Undoing the first copy puts back the old a.txt (content and mode) and removes
    // what it made: the tree is as it was, with no backup left beside it.
    undo("copy", &ctx(), args, &o).await.expect("undo runs");
    let after = tree(dir.path());
    let keys = |t: &BTreeMap<PathBuf, String>| -> Vec<PathBuf> {
        t.keys()
            .filter(|k| !k.starts_with("src-tree"))
            .cloned()
            .collect()
    };
    assert_eq!(keys(&after), keys(&before));
    assert_eq!(
        std::fs::read_to_string(dest.join("a.txt")).expect("a"),
        "old alpha\n"
    );
    assert_eq!(mode_of(&dest.join("a.txt")), 0o600);

    // `src` without a slash copies the directory itself.
    let args = json!({ "src": s(&src), "dest": s(&dest) });
    run("copy", &ctx(), args).await.expect("copy runs");
    assert_eq!(
        std::fs::read_to_string(dest.join("src-tree/sub/b.txt")).expect("b"),
        "beta 2\n"
    );
}

/// Hundreds of files with long names: the scripts that prepare and finish the tree are
/// far longer than one command-line argument may be (128 KiB on Linux).
#[tokio::test]
async fn copy_of_a_directory_with_many_long_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("many");
    std::fs::create_dir_all(&src).expect("src");
    let long = "n".repeat(200);
    for i in 0..400 {
        std::fs::write(src.join(format!("{long}-{i:03}")), format!("{i}\n")).expect("file");
    }
    let dest = dir.path().join("dest");
    let args = json!({ "src": format!("{}/", s(&src)), "dest": s(&dest), "mode": "0600" });
    let o = run("copy", &ctx(), args.clone()).await.expect("copy runs");
    assert_eq!(o.data["changed_files"].as_array().map(Vec::len), Some(400));
    assert_eq!(
        std::fs::read_to_string(dest.join(format!("{long}-399"))).expect("last"),
        "399\n"
    );
    undo("copy", &ctx(), args, &o).await.expect("undo runs");
    assert!(!dest.exists(), "undo removes the tree it made");
}

#[tokio::test]
async fn copy_of_a_directory_never_writes_through_links_on_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source_tree(dir.path());
    let dest = dir.path().join("dest");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&dest).expect("dest");
    std::fs::create_dir_all(&outside).expect("outside");
    std::os::unix::fs::symlink(&outside, dest.join("sub")).expect("link");
    let args = json!({ "src": format!("{}/", s(&src)), "dest": s(&dest) });
    let msg = failure(run("copy", &ctx(), args).await);
    assert!(msg.contains("sub is a symbolic link"), "{msg}");
    assert!(msg.contains("move it away first"), "{msg}");
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
    assert!(
        !dest.join("a.txt").exists(),
        "nothing written before the refusal"
    );

    // A dest whose directory does not exist is refused, naming it.
    let nowhere = dir.path().join("missing/tree");
    let args = json!({ "src": format!("{}/", s(&src)), "dest": s(&nowhere) });
    let msg = failure(run("copy", &ctx(), args.clone()).await);
    let missing = s(&dir.path().join("missing"));
    assert!(
        msg.contains(&format!("the directory {missing} does not exist")),
        "{msg}"
    );
    let plan = run("copy", &ctx_with(true, false), args)
        .await
        .expect("dry run");
    assert!(plan.changed);
    assert!(
        plan.msg
            .unwrap_or_default()
            .contains("an earlier step must create it"),
        "the dry run says what must come first"
    );
}

#[tokio::test]
async fn copy_fails_clearly_on_missing_directory_links_and_missing_src() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = failure(
        run(
            "copy",
            &ctx(),
            json!({ "content": "x", "dest": s(&dir.path().join("no/such/file")) }),
        )
        .await,
    );
    assert!(e.contains("does not exist"), "{e}");
    // A dry run cannot know whether an earlier step creates the directory: it says so.
    let dry = run(
        "copy",
        &ctx_with(true, false),
        json!({ "content": "x", "dest": s(&dir.path().join("no/such/file")) }),
    )
    .await
    .expect("dry run");
    assert!(dry.changed);
    assert!(
        dry.msg
            .unwrap_or_default()
            .contains("an earlier step must create it")
    );
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("/etc/hostname", &link).expect("symlink");
    let e = failure(run("copy", &ctx(), json!({ "content": "x", "dest": s(&link) })).await);
    assert!(e.contains("symbolic link"), "{e}");
    let e = failure(
        run(
            "copy",
            &ctx(),
            json!({ "src": "files/nope.txt", "dest": s(dir.path()) }),
        )
        .await,
    );
    assert!(e.contains("nope.txt"), "{e}");
    let e = failure(
        run(
            "copy",
            &ctx(),
            json!({ "content": "x", "dest": s(dir.path()) }),
        )
        .await,
    );
    assert!(e.contains("is a directory"), "{e}");
}

// ---------------------------------------------------------------- template

#[tokio::test]
async fn template_renders_variables_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("motd");
    let args = json!({ "src": "motd.j2", "dest": s(&dest), "mode": "0644" });
    let o = run("template", &ctx(), args.clone())
        .await
        .expect("template runs");
    assert!(o.changed);
    assert_eq!(
        std::fs::read_to_string(&dest).expect("written"),
        "Welcome to prod-east\ncontroller: ctl1\ncontroller: ctl2\nbackups kept: 7\n"
    );
    let again = run("template", &ctx(), args.clone())
        .await
        .expect("template runs");
    assert!(!again.changed);
    write(&dest, "edited by hand\n", 0o644);
    let o = run("template", &ctx(), args.clone())
        .await
        .expect("template runs");
    assert!(o.changed);
    undo("template", &ctx(), args, &o).await.expect("undo runs");
    assert_eq!(
        std::fs::read_to_string(&dest).expect("restored"),
        "edited by hand\n"
    );
}

#[tokio::test]
async fn template_with_an_undefined_variable_fails_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("out");
    let e = failure(
        run(
            "template",
            &ctx(),
            json!({ "src": "undefined.j2", "dest": s(&dest) }),
        )
        .await,
    );
    assert!(e.contains("keystone_endpont"), "{e}");
    assert!(!e.contains("`region`"), "region is defined: {e}");
    assert!(!dest.exists());
}

// ---------------------------------------------------------------- file

#[tokio::test]
async fn file_directory_creates_parents_is_idempotent_and_undo_removes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a/b/c");
    let args = json!({ "path": s(&path), "state": "directory", "mode": "0750" });

    let before = tree(dir.path());
    let dry = run("file", &ctx_with(true, true), args.clone())
        .await
        .expect("dry run");
    assert!(dry.changed);
    assert_eq!(tree(dir.path()), before);
    assert_eq!(
        dry.diff.as_deref(),
        Some(format!("{}: absent -> directory, mode 0750\n", s(&path)).as_str())
    );

    let o = run("file", &ctx(), args.clone()).await.expect("file runs");
    assert!(o.changed);
    assert!(path.is_dir());
    assert_eq!(mode_of(&path), 0o750);
    assert!(
        !run("file", &ctx(), args.clone())
            .await
            .expect("file runs")
            .changed
    );

    undo("file", &ctx(), args.clone(), &o)
        .await
        .expect("undo runs");
    assert!(
        !dir.path().join("a").exists(),
        "created parents removed too"
    );
    assert!(dir.path().exists());

    // On an existing directory, a mode change is undone to the old mode.
    std::fs::create_dir(dir.path().join("d")).expect("mkdir");
    std::fs::set_permissions(dir.path().join("d"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let args = json!({ "path": s(&dir.path().join("d")), "state": "directory", "mode": "0700" });
    let o = run("file", &ctx(), args.clone()).await.expect("file runs");
    assert!(o.changed);
    assert_eq!(mode_of(&dir.path().join("d")), 0o700);
    undo("file", &ctx(), args, &o).await.expect("undo runs");
    assert_eq!(mode_of(&dir.path().join("d")), 0o755);
}

#[tokio::test]
async fn file_directory_recurse_sets_modes_below() {
    let dir = tempfile::tempdir().expect("tempdir");
    let top = dir.path().join("top");
    std::fs::create_dir_all(top.join("sub")).expect("mkdir");
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    std::fs::set_permissions(top.join("sub"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    let args = json!({ "path": s(&top), "state": "directory", "mode": "0750", "recurse": true });
    let o = run("file", &ctx(), args.clone()).await.expect("file runs");
    assert!(o.changed, "the subdirectory differs");
    assert_eq!(mode_of(&top.join("sub")), 0o750);
    assert!(!run("file", &ctx(), args).await.expect("file runs").changed);
}

#[tokio::test]
async fn file_touch_creates_or_updates_and_undo_reverts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stamp");
    let args = json!({ "path": s(&path), "state": "touch" });
    let o = run("file", &ctx(), args.clone()).await.expect("file runs");
    assert!(o.changed && path.is_file());
    let again = run("file", &ctx(), args.clone()).await.expect("file runs");
    assert!(again.changed, "touch always changes");

    // Undo of a touch on an existing file puts its modification time back.
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open")
        .set_modified(old)
        .expect("set mtime");
    let o = run("file", &ctx(), args.clone()).await.expect("file runs");
    assert_ne!(
        std::fs::metadata(&path)
            .expect("meta")
            .modified()
            .expect("mtime"),
        old
    );
    undo("file", &ctx(), args.clone(), &o)
        .await
        .expect("undo runs");
    assert_eq!(
        std::fs::metadata(&path)
            .expect("meta")
            .modified()
            .expect("mtime"),
        old
    );

    let fresh = dir.path().join("fresh");
    let args = json!({ "path": s(&fresh), "state": "touch" });
    let dry = run("file", &ctx_with(true, false), args.clone())
        .await
        .expect("dry run");
    assert!(dry.changed && !fresh.exists());
    let o = run("file", &ctx(), args.clone()).await.expect("file runs");
    undo("file", &ctx(), args, &o).await.expect("undo runs");
    assert!(!fresh.exists());
}

#[tokio::test]
async fn file_link_creates_retargets_and_undo_restores_the_old_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("current");
    let args = json!({ "path": s(&link), "state": "link", "src": "/srv/v1" });
    let o = run("file", &ctx(), args.clone()).await.expect("file runs");
    assert!(o.changed);
    assert_eq!(
        std::fs::read_link(&link).expect("a link"),
        PathBuf::from("/srv/v1")
    );
    assert!(
        !run("file", &ctx(), args.clone())
            .await
            .expect("file runs")
            .changed
    );

    let v2 = json!({ "path": s(&link), "state": "link", "src": "/srv/v2" });
    let o2 = run("file", &ctx(), v2.clone()).await.expect("file runs");
    assert!(o2.changed);
    assert_eq!(o2.data["changed_attributes"], json!(["link_target"]));
    assert_eq!(
        std::fs::read_link(&link).expect("a link"),
        PathBuf::from("/srv/v2")
    );
    undo("file", &ctx(), v2, &o2).await.expect("undo runs");
    assert_eq!(
        std::fs::read_link(&link).expect("a link"),
        PathBuf::from("/srv/v1")
    );
    undo("file", &ctx(), args, &o).await.expect("undo runs");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "created link removed"
    );

    let file = dir.path().join("plain");
    write(&file, "x", 0o644);
    let e = failure(
        run(
            "file",
            &ctx(),
            json!({ "path": s(&file), "state": "link", "src": "/x" }),
        )
        .await,
    );
    assert!(e.contains("exists as a file"), "{e}");
}

#[tokio::test]
async fn file_absent_removes_and_undo_recreates_files_but_not_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    write(&path, "keep me\n", 0o600);
    let args = json!({ "path": s(&path), "state": "absent" });
    let before = tree(dir.path());
    let dry = run("file", &ctx_with(true, false), args.clone())
        .await
        .expect("dry run");
    assert!(dry.changed);
    assert_eq!(tree(dir.path()), before);
    let o = run("file", &ctx(), args.clone()).await.expect("file runs");
    assert!(o.changed && !path.exists());
    assert!(
        !run("file", &ctx(), args.clone())
            .await
            .expect("file runs")
            .changed,
        "already absent: ok"
    );
    undo("file", &ctx(), args, &o).await.expect("undo runs");
    assert_eq!(
        std::fs::read_to_string(&path).expect("recreated"),
        "keep me\n"
    );
    assert_eq!(mode_of(&path), 0o600);

    let tree_dir = dir.path().join("tree");
    std::fs::create_dir_all(tree_dir.join("x/y")).expect("mkdir");
    let args = json!({ "path": s(&tree_dir), "state": "absent" });
    let o = run("file", &ctx(), args.clone()).await.expect("file runs");
    assert!(!tree_dir.exists());
    let e = failure(undo("file", &ctx(), args, &o).await);
    assert!(e.contains("cannot be restored"), "{e}");
}

#[tokio::test]
async fn file_state_file_only_sets_attributes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    let e = failure(run("file", &ctx(), json!({ "path": s(&path), "mode": "0600" })).await);
    assert!(e.contains("does not exist"), "{e}");
    assert!(!path.exists(), "state file never creates");
    write(&path, "x", 0o644);
    let args = json!({ "path": s(&path), "mode": "0600" });
    let o = run("file", &ctx(), args.clone()).await.expect("file runs");
    assert!(o.changed);
    assert_eq!(mode_of(&path), 0o600);
    assert!(
        !run("file", &ctx(), args.clone())
            .await
            .expect("file runs")
            .changed
    );
    undo("file", &ctx(), args, &o).await.expect("undo runs");
    assert_eq!(mode_of(&path), 0o644);
}

// ---------------------------------------------------------------- fetch

#[tokio::test]
async fn fetch_writes_below_dest_per_host_and_is_idempotent() {
    let host = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let src = host.path().join("dump.sql");
    write(&src, "CREATE TABLE t;\n", 0o600);
    let args = json!({ "src": s(&src), "dest": s(local.path()) });

    let dry = run("fetch", &ctx_with(true, false), args.clone())
        .await
        .expect("dry run");
    assert!(dry.changed);
    assert!(tree(local.path()).is_empty(), "the dry run fetched nothing");

    let o = run("fetch", &ctx(), args.clone())
        .await
        .expect("fetch runs");
    let expected = local
        .path()
        .join("db1")
        .join(src.strip_prefix("/").expect("absolute"));
    assert!(o.changed);
    assert_eq!(o.data["dest"], json!(s(&expected)));
    assert_eq!(
        std::fs::read_to_string(&expected).expect("fetched"),
        "CREATE TABLE t;\n"
    );
    assert_eq!(
        o.data["sha256"],
        json!(format!("{:x}", Sha256::digest(b"CREATE TABLE t;\n")))
    );
    assert!(
        !run("fetch", &ctx(), args.clone())
            .await
            .expect("fetch runs")
            .changed
    );
    assert!(
        !run("fetch", &ctx_with(true, false), args.clone())
            .await
            .expect("dry run")
            .changed
    );

    // Undo of a first fetch removes the file and the directories it created.
    undo("fetch", &ctx(), args, &o).await.expect("undo runs");
    assert!(tree(local.path()).is_empty(), "{:?}", tree(local.path()));
}

#[tokio::test]
async fn fetch_flat_replaces_and_undo_restores_the_previous_local_file() {
    let host = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let src = host.path().join("keystone.conf");
    write(&src, "new\n", 0o644);
    let dest = local.path().join("keystone.conf.bak");
    std::fs::write(&dest, "old\n").expect("write");
    let args = json!({ "src": s(&src), "dest": s(&dest), "flat": true });
    let o = run("fetch", &ctx(), args.clone())
        .await
        .expect("fetch runs");
    assert!(o.changed);
    assert_eq!(std::fs::read_to_string(&dest).expect("fetched"), "new\n");
    undo("fetch", &ctx(), args, &o).await.expect("undo runs");
    assert_eq!(std::fs::read_to_string(&dest).expect("restored"), "old\n");
    assert_eq!(tree(local.path()).len(), 1, "no temporary files left");

    // flat with a directory dest (trailing slash) writes dest/<name>.
    let o = run(
        "fetch",
        &ctx(),
        json!({ "src": s(&src), "dest": format!("{}/", s(local.path())), "flat": true }),
    )
    .await
    .expect("fetch runs");
    assert_eq!(
        o.data["dest"],
        json!(s(&local.path().join("keystone.conf")))
    );
}

#[tokio::test]
async fn fetch_refuses_paths_that_climb_out_of_dest_and_handles_missing_src() {
    let local = tempfile::tempdir().expect("tempdir");
    let e = failure(
        run(
            "fetch",
            &ctx(),
            json!({ "src": "/etc/../../etc/hostname", "dest": s(local.path()) }),
        )
        .await,
    );
    assert!(e.contains("never writes outside dest"), "{e}");
    let e = failure(
        run(
            "fetch",
            &ctx(),
            json!({ "src": "/etc/..", "dest": s(local.path()), "flat": true }),
        )
        .await,
    );
    assert!(e.contains("never writes outside dest"), "{e}");
    let mut evil = ctx();
    evil.host = "..".to_string();
    let e = failure(
        run(
            "fetch",
            &evil,
            json!({ "src": "/etc/hostname", "dest": s(local.path()) }),
        )
        .await,
    );
    assert!(e.contains("never writes outside dest"), "{e}");
    assert!(tree(local.path()).is_empty());

    let missing = json!({ "src": "/no/such/file", "dest": s(local.path()) });
    let dry = run("fetch", &ctx_with(true, false), missing.clone())
        .await
        .expect("dry run");
    assert!(
        dry.changed,
        "a dump made by an earlier step would be fetched"
    );
    let e = failure(run("fetch", &ctx(), missing).await);
    assert!(e.contains("does not exist"), "{e}");
    let o = run(
        "fetch",
        &ctx(),
        json!({ "src": "/no/such/file", "dest": s(local.path()), "fail_on_missing": false }),
    )
    .await
    .expect("fetch runs");
    assert!(!o.changed);
}

// ---------------------------------------------------------------- wait_for

#[tokio::test]
async fn wait_for_path_that_appears_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ready");
    let creator = {
        let path = path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            std::fs::write(&path, "status: READY\n")
        })
    };
    let start = Instant::now();
    let o = run(
        "wait_for",
        &ctx(),
        json!({ "path": s(&path), "search_regex": "READY$", "timeout": "20s", "sleep": 0.1 }),
    )
    .await
    .expect("waits until the file appears");
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(!o.changed);
    assert!(o.data["elapsed"].as_f64().is_some_and(|e| e > 0.0));
    creator.await.expect("task").expect("file written");

    let gone = run(
        "wait_for",
        &ctx(),
        json!({ "path": s(&dir.path().join("never")), "state": "absent", "timeout": 5 }),
    )
    .await
    .expect("absent already");
    assert!(!gone.changed);
}

#[tokio::test]
async fn wait_for_cmd_and_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("m");
    let creator = {
        let marker = marker.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            std::fs::write(&marker, "")
        })
    };
    run(
        "wait_for",
        &ctx(),
        json!({ "cmd": format!("test -e {}", s(&marker)), "timeout": "20s" }),
    )
    .await
    .expect("the command comes to succeed");
    creator.await.expect("task").expect("marker written");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let o = run(
        "wait_for",
        &ctx(),
        json!({ "port": port, "timeout": "20s" }),
    )
    .await
    .expect("port is open");
    assert!(!o.changed);
    drop(listener);
    run(
        "wait_for",
        &ctx(),
        json!({ "port": port, "state": "stopped", "timeout": "20s" }),
    )
    .await
    .expect("port is closed once the listener is gone");
}

#[tokio::test]
async fn wait_for_times_out_with_a_clear_message() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let start = Instant::now();
    let e = failure(
        run(
            "wait_for",
            &ctx(),
            json!({ "port": port, "timeout": "1s", "sleep": 0.2 }),
        )
        .await,
    );
    assert_eq!(e, format!("port {port} on 127.0.0.1 not open after 1s"));
    assert!(start.elapsed() < Duration::from_secs(10));
    let e = failure(
        run(
            "wait_for",
            &ctx(),
            json!({ "path": "/no/such/path", "timeout": 0.5 }),
        )
        .await,
    );
    assert!(
        e.contains("/no/such/path does not exist after 500ms"),
        "{e}"
    );
    let e = failure(
        run(
            "wait_for",
            &ctx(),
            json!({ "cmd": "false", "timeout": 0.5 }),
        )
        .await,
    );
    assert!(e.contains("`false` did not succeed within 500ms"), "{e}");

    // A dry run checks once and does not wait out the timeout.
    let start = Instant::now();
    let o = run(
        "wait_for",
        &ctx_with(true, false),
        json!({ "path": "/no/such/path", "timeout": "5m" }),
    )
    .await
    .expect("dry run");
    assert!(!o.changed);
    assert!(o.msg.unwrap_or_default().contains("would wait"));
    assert!(start.elapsed() < Duration::from_secs(10));
}

// ---------------------------------------------------------------- validation

fn validate(step: &str) -> Vec<String> {
    modules::validate(step)
        .into_iter()
        .map(|e| e.message)
        .collect()
}

#[test]
fn validation_of_copy_and_template() {
    assert!(validate("copy:\n  content: x\n  dest: /etc/motd\n  mode: \"0644\"\n").is_empty());
    assert_eq!(
        validate("copy:\n  src: a\n  content: x\n  dest: /etc/motd\n"),
        vec!["`copy` takes exactly one of `src` and `content`, both given"]
    );
    assert_eq!(
        validate("copy:\n  dest: /etc/motd\n"),
        vec!["`copy` needs `src` or `content`"]
    );
    let e = validate("copy:\n  content: x\n  dest: /etc/motd\n  mode: 644\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("must be a mode string"), "{e:?}");
    assert_eq!(
        validate("copy:\n  content: x\n  dest: /etc/motd\n  mode: \"rw\"\n"),
        vec!["mode `rw` is not an octal mode"]
    );
    assert_eq!(
        validate("copy:\n  content: x\n  dest: /etc/\n"),
        vec!["with `content`, dest must be a file path, not a directory"]
    );
    assert!(validate("copy:\n  src: x\n  dest: /etc/\n  mode: \"{{ m }}\"\n").is_empty());
    assert_eq!(
        validate("template:\n  src: a.j2\n"),
        vec!["module `template` needs the argument `dest`"]
    );
    assert!(
        validate("template:\n  src: a.j2\n  dst: /x\n")
            .iter()
            .any(|m| m.contains("unknown argument `dst`"))
    );
}

#[test]
fn validation_of_file() {
    assert!(
        validate("file:\n  path: /srv/x\n  state: directory\n  mode: \"0755\"\n  recurse: true\n")
            .is_empty()
    );
    assert_eq!(
        validate("file:\n  path: /srv/x\n  state: link\n"),
        vec!["`state: link` needs `src`, the link's target"]
    );
    assert_eq!(
        validate("file:\n  path: /srv/x\n  state: dir\n"),
        vec!["unknown state `dir` for `file`"]
    );
    assert_eq!(
        validate("file:\n  path: /srv/x\n  state: touch\n  src: /y\n"),
        vec!["`src` is only for `state: link`, not `touch`"]
    );
    assert_eq!(
        validate("file:\n  path: /srv/x\n  state: absent\n  mode: \"0600\"\n"),
        vec!["`mode` has no meaning with `state: absent`"]
    );
    assert_eq!(
        validate("file:\n  path: /srv/x\n  recurse: true\n"),
        vec!["`recurse` is only for `state: directory`"]
    );
}

#[test]
fn validation_of_fetch_and_wait_for() {
    assert!(validate("fetch:\n  src: /var/x\n  dest: backups/\n  flat: false\n").is_empty());
    assert!(
        validate("fetch:\n  src: /var/x\n  dest: b\n  flat: yes\n")[0]
            .contains("must be a boolean")
    );
    assert_eq!(
        validate("fetch:\n  dest: b\n"),
        vec!["module `fetch` needs the argument `src`"]
    );

    assert!(validate("wait_for:\n  port: 5432\n  timeout: 30s\n").is_empty());
    assert_eq!(
        validate("wait_for:\n  port: 5432\n  path: /x\n"),
        vec!["`wait_for` takes exactly one of `port`, `path` and `cmd`, found port, path"]
    );
    assert_eq!(
        validate("wait_for:\n  timeout: 5s\n"),
        vec!["`wait_for` needs one of `port`, `path` and `cmd`"]
    );
    assert_eq!(
        validate("wait_for:\n  port: 70000\n"),
        vec!["port 70000 is not a TCP port (1-65535)"]
    );
    assert_eq!(
        validate("wait_for:\n  path: /x\n  state: started\n"),
        vec!["state `started` does not apply to `path`"]
    );
    assert_eq!(
        validate("wait_for:\n  cmd: \"true\"\n  host: db\n"),
        vec!["`host` is only for `port`"]
    );
    assert!(validate("wait_for:\n  port: 1\n  timeout: soon\n")[0].contains("must be a duration"));
}

#[test]
fn every_file_module_documents_itself() {
    for name in ["copy", "template", "file", "fetch", "wait_for"] {
        let doc = lookup(name).expect("registered").doc();
        assert_eq!(doc.name, name);
        assert!(!doc.open_args, "{name}");
        assert!(
            !doc.summary.is_empty() && !doc.description.is_empty() && !doc.rollback.is_empty(),
            "{name}"
        );
        assert!(doc.args.iter().all(|a| !a.doc.is_empty()), "{name}");
        assert!(example_errors(name).is_empty(), "{name}");
    }
}
