//! The `restic` module for real: restic 0.14 from Debian, through the `lifeboat` binary
//! with playbooks, on the local host and on sshd hosts (as the login user
//! `lifeboat-test`), against local, `sftp:` (an sshd host as the repository host),
//! `swift:` (a real Swift on loopback, `support/swift.rs`) and `rclone:` S3 (rclone's S3
//! backend against Swift's s3api) repositories.
//!
//! - load-time checks, located, with advice;
//! - init (a second init is ok), backup (result data), snapshots, restore byte-identical
//!   (the previous target moved aside, put back by rollback), forget (keep policies,
//!   never the newest snapshot of a host), check with read_data_subset; the dry run;
//! - a failed run's snapshot is forgotten by the rollback;
//! - the password and the Swift key on no process's argv (`ps` sampled while restic
//!   runs) and in no output (console, events, state directory).

#[path = "support/binary.rs"]
mod binary;
#[path = "fixtures/backup_ssh/harness.rs"]
mod harness;
#[path = "support/modules.rs"]
mod modules;
#[path = "support/sshd.rs"]
mod sshd;
#[path = "support/swift.rs"]
mod swift;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use harness::{Run, fill, give, host_line, lifeboat_env, ok, s, user_dir, workdir};
use serde_json::Value;
use sshd::{Sshd, USER};

/// The repository password: quotes, `$()`, a `;` and a marker word, so a leak shows.
const PASSWORD: &str = "r3sticC0reZ9 'sq' \"dq\" $(touch /tmp/lifeboat-restic-pwned); x";
/// The marker word inside the password.
const PASSWORD_CORE: &str = "r3sticC0reZ9";

/// The playbook header every test uses: the password from the environment.
const HEAD: &str = "name: restic-test\nsecrets:\n  restic_pw: { env: LB_RESTIC_PW }\n  swift_key: { env: LB_SWIFT_KEY }\nsteps:\n";

fn run(dir: &Path, tag: &str, inventory: &str, steps: &str, args: &[&str]) -> Run {
    lifeboat_env(
        dir,
        tag,
        &format!("{HEAD}{steps}"),
        inventory,
        args,
        &[
            ("LB_RESTIC_PW", PASSWORD.to_string()),
            ("LB_SWIFT_KEY", swift::KEY.to_string()),
        ],
    )
}

#[track_caller]
fn assert_ok(r: &Run) {
    assert_eq!(r.code, 0, "{r:?}");
}

/// The registered result data of `step`, which [`show`] printed.
fn data(r: &Run, step: &str, host: &str) -> Value {
    let msg = r.msg(&format!("show-{step}"), host);
    let json = msg
        .split_once(" = ")
        .map(|(_, j)| j)
        .unwrap_or_else(|| panic!("show-{step} printed no value: {msg}\n{r:?}"));
    ok(serde_json::from_str(json))
}

/// A step without its [`show`] (registered data is unknown in a dry run).
fn plain(step: &str) -> String {
    step.split("    register: reg_")
        .next()
        .unwrap_or(step)
        .to_string()
}

/// Registers a step's result and shows its data (the events carry no result data):
/// the step `show-ID`.
fn show(id: &str) -> String {
    format!(
        "    register: reg_{u}\n  - id: show-{id}\n    needs: {id}\n    debug: {{ var: reg_{u}.data }}\n",
        u = id.replace('-', "_")
    )
}

/// Runs restic on the controller as root against `repo` (the test's own look).
fn restic(repo: &str, env: &[(String, String)], args: &[&str]) -> String {
    let out = ok(Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("RESTIC_CACHE_DIR", "/tmp/lifeboat-restic-test-cache")
        .env_remove("AWS_CA_BUNDLE")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output());
    assert!(
        out.status.success(),
        "restic {args:?} on {repo} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The snapshots of a repository, as restic lists them.
fn snapshot_list(repo: &str, env: &[(String, String)]) -> Vec<Value> {
    let text = restic(repo, env, &["snapshots", "--json"]);
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(Value::Array(v)) => v,
        _ => Vec::new(),
    }
}

fn write(p: &Path, content: &[u8]) {
    if let Some(d) = p.parent() {
        ok(std::fs::create_dir_all(d));
    }
    ok(std::fs::write(p, content));
}

/// A small tree like a service's configuration: nested files, modes, a link, an
/// empty directory and a name with a space.
fn make_tree(root: &Path, salt: &str) {
    write(
        &root.join("nova.conf"),
        format!("[DEFAULT]\nsalt={salt}\n").as_bytes(),
    );
    write(&root.join("policy.d/01-admin.yaml"), b"admin: role:admin\n");
    write(&root.join("with space/x.bin"), &[0u8, 1, 2, 255, 254]);
    ok(std::fs::create_dir_all(root.join("empty")));
    ok(std::os::unix::fs::symlink(
        "nova.conf",
        root.join("link.conf"),
    ));
    ok(std::fs::set_permissions(
        root.join("nova.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    ));
}

/// Everything observable about a tree: kind, mode and content (or link target).
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in ok(std::fs::read_dir(&dir)) {
            let path = ok(entry).path();
            let meta = ok(std::fs::symlink_metadata(&path));
            let rel = ok(path.strip_prefix(root)).to_path_buf();
            let mode = meta.mode() & 0o7777;
            let desc = if meta.file_type().is_symlink() {
                format!("link {}", s(&ok(std::fs::read_link(&path))))
            } else if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {mode:o}")
            } else {
                format!("file {mode:o} {:?}", ok(std::fs::read(&path)))
            };
            out.insert(rel, desc);
        }
    }
    out
}

/// Every file under `dir`, recursively, except below the `skip` directories.
fn files_under(dir: &Path, skip: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if skip.iter().any(|s| d.starts_with(s)) {
            continue;
        }
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Asserts that no secret (as is, shell-quoted, JSON-escaped, or its marker word) is
/// in the run's console and events, nor in any file of the working directory outside
/// `skip` (the repositories, which hold it encrypted, and the data trees).
#[track_caller]
fn assert_no_secret(r: &Run, dir: &Path, skip: &[PathBuf]) {
    let quoted = lifeboat::connection::quote(PASSWORD);
    let json = serde_json::to_string(PASSWORD).unwrap_or_default();
    let needles = [
        PASSWORD.to_string(),
        quoted,
        json[1..json.len() - 1].to_string(),
        PASSWORD_CORE.to_string(),
        swift::KEY.to_string(),
    ];
    let mut outputs = vec![
        ("console".to_string(), r.console()),
        ("events".to_string(), r.events_text.clone()),
    ];
    for f in files_under(dir, skip) {
        if let Ok(bytes) = std::fs::read(&f) {
            outputs.push((s(&f), String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    for (what, text) in &outputs {
        for n in &needles {
            assert!(
                !text.contains(n.as_str()),
                "a secret ({n}) leaked into {what}"
            );
        }
    }
    assert!(
        !Path::new("/tmp/lifeboat-restic-pwned").exists(),
        "the password ran as code"
    );
}

/// Samples `ps -eo args` until stopped; returns every restic command line seen and
/// whether a secret was on any line.
fn sample_argv(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Vec<String>, Vec<String>)> {
    std::thread::spawn(move || {
        let mut restic_lines = Vec::new();
        let mut leaks = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if let Ok(out) = Command::new("ps").args(["-eo", "args"]).output() {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    if line.contains(PASSWORD_CORE) || line.contains(swift::KEY) {
                        leaks.push(line.to_string());
                    }
                    if line.starts_with("restic ") {
                        restic_lines.push(line.to_string());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (restic_lines, leaks)
    })
}

#[test]
fn load_time_checks_are_located_and_say_what_to_do() {
    let errs = |step: &str| -> Vec<String> {
        modules::validate(step)
            .iter()
            .map(|e| e.to_string())
            .collect()
    };
    let base = "restic:\n  repository: /r\n  password: x\n";
    assert!(errs(&format!("{base}  action: init\n")).is_empty());
    assert!(modules::example_errors("restic").is_empty());

    let e = errs(&format!("{base}  action: bakup\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("unknown action `bakup`"), "{e:?}");
    assert!(e[0].contains("play.yml:4:11"), "{e:?}");
    assert!(e[0].contains("did you mean `backup`?"), "{e:?}");

    let e = errs(&format!("{base}  action: backup\n"));
    assert!(
        e[0].contains("the restic action `backup` needs `paths`"),
        "{e:?}"
    );
    assert!(e[0].contains("play.yml:2:3"), "{e:?}");

    let e = errs(&format!("{base}  action: forget\n  prune: true\n"));
    assert!(e[0].contains("needs a keep policy"), "{e:?}");
    assert!(e[0].contains("keep_daily"), "{e:?}");

    let e = errs(&format!("{base}  action: init\n  target: /x\n"));
    assert!(
        e[0].contains("`target` does not apply to the restic action `init`"),
        "{e:?}"
    );
    assert!(e[0].contains("play.yml:5:3"), "{e:?}");

    let e = errs(&format!("{base}  action: restore\n  target: /\n"));
    assert!(e[0].contains("not `/`"), "{e:?}");
    assert!(e[0].contains("play.yml:5:11"), "{e:?}");

    let e = errs("restic:\n  repository: /r\n  action: init\n");
    assert!(e[0].contains("give `password` or `password_file`"), "{e:?}");
    let e = errs("restic:\n  repository: /r\n  action: init\n  password: a\n  password_file: /f\n");
    assert!(e[0].contains("give `password` or `password_file`"), "{e:?}");

    let e = errs(&format!(
        "{base}  action: check\n  read_data_subset: lots\n"
    ));
    assert!(e[0].contains("read_data_subset `lots`"), "{e:?}");
    assert!(e[0].contains("10%"), "{e:?}");

    let e = errs(&format!("{base}  action: forget\n  keep_last: -2\n"));
    assert!(e[0].contains("`keep_last` must be 0 or more"), "{e:?}");

    let e = errs(&format!("{base}  action: init\n  env:\n    ST-KEY: x\n"));
    assert!(
        e[0].contains("`ST-KEY` is not an environment variable name"),
        "{e:?}"
    );
}

/// init, backup, snapshots, restore over a previous target, forget, check, dry run
/// and rollback, for one host and one repository.
fn lifecycle(
    dir: &Path,
    inventory: &str,
    host: &str,
    repo: &str,
    repo_env: &[(String, String)],
    env_yaml: &str,
    data_root: &Path,
) {
    let src = data_root.join("src");
    let target = data_root.join("restored");
    make_tree(&src, "one");
    write(&target.join("old.txt"), b"before the restore\n");
    harness::sh(&format!(
        "chown -R --reference={} {}",
        s(data_root),
        s(data_root)
    ));
    let values = [
        ("REPO", repo.to_string()),
        ("SRC", s(&src)),
        ("TARGET", s(&target)),
        ("ENV", env_yaml.to_string()),
    ];
    let step = |id: &str, body: &str| -> String {
        fill(
            &format!(
                "  - id: {id}\n    restic:\n      repository: \"@REPO@\"\n      password: \"{{{{ restic_pw }}}}\"\n@ENV@{body}{}",
                show(id)
            ),
            &values,
        )
    };

    // init, twice: created, then ok.
    let init = step("init", "      action: init\n");
    let r = run(dir, "init1", inventory, &init, &[]);
    assert_ok(&r);
    assert_eq!(r.status("init", host), "changed", "{r:?}");
    assert_eq!(data(&r, "init", host)["created"], true);
    let r = run(dir, "init2", inventory, &init, &[]);
    assert_ok(&r);
    assert_eq!(r.status("init", host), "ok", "{r:?}");
    assert_eq!(data(&r, "init", host)["created"], false);

    // A dry run of a backup predicts a change and makes no snapshot.
    let backup = step(
        "backup",
        "      action: backup\n      paths: [\"@SRC@\"]\n      tags: [nova, test]\n      exclude: [\"*.tmp\"]\n",
    );
    let r = run(dir, "backup-dry", inventory, &plain(&backup), &["--check"]);
    assert_ok(&r);
    assert_eq!(r.status("backup", host), "would_change", "{r:?}");
    assert!(snapshot_list(repo, repo_env).is_empty());

    // backup: a snapshot with restic's summary in the result.
    write(&src.join("scratch.tmp"), b"left out\n");
    harness::sh(&format!(
        "chown -R --reference={} {}",
        s(data_root),
        s(data_root)
    ));
    let r = run(dir, "backup1", inventory, &backup, &[]);
    assert_ok(&r);
    assert_eq!(r.status("backup", host), "changed", "{r:?}");
    let d = &data(&r, "backup", host);
    let id1 = d["snapshot_id"]
        .as_str()
        .expect("a snapshot id")
        .to_string();
    // Three regular files: scratch.tmp is excluded, and restic counts no link.
    assert_eq!(d["files_new"], 3, "{d}");
    assert_eq!(d["total_files_processed"], 3, "{d}");
    assert_eq!(d["hostname"], host);
    assert!(d["data_added"].as_u64().is_some_and(|n| n > 0), "{d}");
    let snaps = snapshot_list(repo, repo_env);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["short_id"], id1.as_str());
    assert_eq!(snaps[0]["hostname"], host);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["nova", "test"]));

    // Two more snapshots, the second with changed content.
    write(&src.join("nova.conf"), b"[DEFAULT]\nsalt=two\n");
    let r = run(dir, "backup2", inventory, &backup, &[]);
    assert_ok(&r);
    assert_eq!(data(&r, "backup", host)["files_changed"], 1, "{r:?}");
    let r = run(dir, "backup3", inventory, &backup, &[]);
    assert_ok(&r);
    let id3 = data(&r, "backup", host)["snapshot_id"]
        .as_str()
        .expect("id")
        .to_string();
    // Nothing changed: every file is unmodified (restic 0.14 still writes a snapshot).
    assert_eq!(data(&r, "backup", host)["files_unmodified"], 3, "{r:?}");
    assert_eq!(data(&r, "backup", host)["files_new"], 0, "{r:?}");

    // snapshots: the list, filtered by tag.
    let list = step("list", "      action: snapshots\n      tags: [nova]\n");
    let r = run(dir, "list", inventory, &list, &[]);
    assert_ok(&r);
    assert_eq!(r.status("list", host), "ok");
    assert_eq!(data(&r, "list", host)["count"], 3, "{r:?}");
    assert_eq!(data(&r, "list", host)["latest"]["short_id"], id3.as_str());
    let r = run(
        dir,
        "list-none",
        inventory,
        &step("list", "      action: snapshots\n      tags: [glance]\n"),
        &[],
    );
    assert_eq!(data(&r, "list", host)["count"], 0, "{r:?}");

    // restore latest: byte-identical, the previous target moved aside; a later step
    // fails, and the rollback puts the previous target back.
    let restore = step(
        "restore",
        "      action: restore\n      target: \"@TARGET@\"\n      tags: [nova]\n",
    );
    let failing = format!("{restore}  - id: later\n    needs: show-restore\n    shell: exit 7\n");
    let before = tree(&target);
    let r = run(dir, "restore-fail", inventory, &failing, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.status("restore", host), "changed", "{r:?}");
    assert_eq!(
        r.rollback_status("restore", host).as_deref(),
        Some("done"),
        "{r:?}"
    );
    assert_eq!(
        tree(&target),
        before,
        "rollback put the previous target back"
    );
    assert!(
        !ok(std::fs::read_dir(data_root))
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("lifeboat-aside")),
        "nothing left aside"
    );

    let r = run(dir, "restore", inventory, &restore, &[]);
    assert_ok(&r);
    let d = &data(&r, "restore", host);
    assert_eq!(d["snapshot_id"], id3.as_str(), "{d}");
    let aside = PathBuf::from(d["moved_aside"].as_str().expect("moved aside"));
    assert_eq!(tree(&aside), before);
    let mut want = tree(&src);
    want.remove(Path::new("scratch.tmp"));
    let restored_root = target.join(ok(src.strip_prefix("/")));
    assert_eq!(tree(&restored_root), want, "restored byte for byte");

    // A restore of a named (older) snapshot.
    let older = step(
        "restore-old",
        &format!(
            "      action: restore\n      target: \"@TARGET@-old\"\n      snapshot: \"{id1}\"\n"
        ),
    );
    let r = run(dir, "restore-old", inventory, &older, &[]);
    assert_ok(&r);
    let old_conf = PathBuf::from(format!("{}-old", s(&target)))
        .join(ok(src.strip_prefix("/")))
        .join("nova.conf");
    assert_eq!(
        ok(std::fs::read_to_string(old_conf)),
        "[DEFAULT]\nsalt=one\n"
    );

    // forget: keep_last 2 removes the oldest; its dry run says so and removes nothing.
    let forget = step(
        "forget",
        "      action: forget\n      keep_last: 2\n      prune: true\n",
    );
    let r = run(dir, "forget-dry", inventory, &plain(&forget), &["--check"]);
    assert_ok(&r);
    assert_eq!(r.status("forget", host), "would_change", "{r:?}");
    assert_eq!(
        r.msg("forget", host),
        format!("would forget 1 snapshots: {id1}"),
        "{r:?}"
    );
    assert_eq!(snapshot_list(repo, repo_env).len(), 3);
    let r = run(dir, "forget", inventory, &forget, &[]);
    assert_ok(&r);
    assert_eq!(r.status("forget", host), "changed", "{r:?}");
    let left: Vec<String> = snapshot_list(repo, repo_env)
        .iter()
        .map(|s| s["short_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&id1) && left.contains(&id3), "{left:?}");
    // Again: nothing to forget, ok.
    let r = run(dir, "forget-again", inventory, &forget, &[]);
    assert_eq!(r.status("forget", host), "ok", "{r:?}");

    // check, reading all the data back.
    let check = step(
        "check",
        "      action: check\n      read_data_subset: 100%\n",
    );
    let r = run(dir, "check", inventory, &check, &[]);
    assert_ok(&r);
    assert_eq!(r.status("check", host), "ok", "{r:?}");
    assert!(r.msg("check", host).contains("no errors"), "{r:?}");

    // A backup whose run fails later is forgotten by the rollback.
    let failing = format!("{backup}  - id: later\n    needs: show-backup\n    shell: exit 7\n");
    let r = run(dir, "backup-fail", inventory, &failing, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    let made = data(&r, "backup", host)["snapshot_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(
        r.rollback_status("backup", host).as_deref(),
        Some("done"),
        "{r:?}"
    );
    let left: Vec<String> = snapshot_list(repo, repo_env)
        .iter()
        .map(|s| s["short_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        !left.contains(&made),
        "the failed run's snapshot is gone: {left:?}"
    );

    assert_no_secret(&r, dir, &[]);
}

#[test]
fn local_host_local_repository() {
    let tmp = workdir();
    let dir = tmp.path();
    let repo = dir.join("repo");
    let data_root = dir.join("data");
    ok(std::fs::create_dir_all(&data_root));
    lifecycle(
        dir,
        "db1 ansible_connection=local\n",
        "db1",
        &s(&repo),
        &[],
        "",
        &data_root,
    );
}

#[test]
fn ssh_host_swift_repository_and_secrets_off_argv() {
    let tmp = workdir();
    let dir = tmp.path();
    let sw = swift::server();
    let host = ok(Sshd::start("127.0.0.1"));
    let inventory = host_line("ctl1", &host, "");
    let data_root = user_dir(dir, "data");
    let env_yaml = format!(
        "      env:\n        ST_AUTH: \"{}\"\n        ST_USER: \"{}\"\n        ST_KEY: \"{{{{ swift_key }}}}\"\n",
        sw.auth_url(),
        swift::USER
    );
    let repo = "swift:lifeboat-ssh:/ctl1";
    lifecycle(
        dir,
        &inventory,
        "ctl1",
        repo,
        &sw.env(),
        &env_yaml,
        &data_root,
    );
    assert!(
        sw.objects("lifeboat-ssh")
            .iter()
            .any(|o| o.starts_with("ctl1/snapshots/")),
        "the snapshots are in the Swift container"
    );

    // A backup of 64 MiB, long enough for `ps` to see restic: no secret on any argv.
    let big = data_root.join("big");
    ok(std::fs::create_dir_all(&big));
    for i in 0..8 {
        harness::sh(&format!("head -c 8388608 /dev/urandom > {}/f{i}", s(&big)));
    }
    give(&big);
    harness::sh(&format!("chown -R {USER} {}", s(&big)));
    let steps = fill(
        "  - id: big\n    restic:\n      action: backup\n      repository: \"@REPO@\"\n      password: \"{{ restic_pw }}\"\n@ENV@      paths: [\"@BIG@\"]\n",
        &[
            ("REPO", repo.to_string()),
            ("ENV", env_yaml.clone()),
            ("BIG", s(&big)),
        ],
    );
    // Over SSH (the script reaches the host's kept shell on its standard input) and on
    // the local host (the connection runs `sh -c LINE`: a secret on that line would show).
    let local = "ctl1 ansible_connection=local\n".to_string();
    for (tag, inv) in [("big-ssh", &inventory), ("big-local", &local)] {
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_argv(stop.clone());
        let r = run(dir, tag, inv, &steps, &["-v"]);
        stop.store(true, Ordering::SeqCst);
        let (restic_lines, leaks) = sampler.join().expect("the sampler");
        assert_ok(&r);
        assert!(
            leaks.is_empty(),
            "{tag}: secrets on a command line: {leaks:?}"
        );
        assert!(
            restic_lines.iter().any(|l| l.contains("backup --json")),
            "{tag}: ps saw the restic backup run: {restic_lines:?}"
        );
        assert_no_secret(&r, dir, std::slice::from_ref(&big));
    }
}

#[test]
fn local_host_sftp_repository() {
    let tmp = workdir();
    let dir = tmp.path();
    let vault = ok(Sshd::start("127.0.0.1"));
    let repo_dir = user_dir(dir, "vault");
    let data_root = dir.join("data");
    ok(std::fs::create_dir_all(&data_root));
    let repo = format!("sftp:{USER}@127.0.0.1:{}", s(&repo_dir.join("repo")));
    let command = format!(
        "sftp.command=ssh -i {} -p {} -o UserKnownHostsFile={} -o BatchMode=yes {USER}@127.0.0.1 -s sftp",
        s(&vault.ed25519_key),
        vault.port,
        s(&vault.known_hosts)
    );
    let env_yaml = format!("      options: [\"{command}\"]\n");
    // The test's own restic calls reach the vault the same way.
    let look = |args: &[&str]| {
        let mut all = vec!["-o", command.as_str()];
        all.extend_from_slice(args);
        restic(&repo, &[], &all)
    };
    let r = run(
        dir,
        "sftp-init",
        "db1 ansible_connection=local\n",
        &fill(
            "  - id: init\n    restic:\n      action: init\n      repository: \"@REPO@\"\n      password: \"{{ restic_pw }}\"\n@ENV@",
            &[("REPO", repo.clone()), ("ENV", env_yaml.clone())],
        ),
        &[],
    );
    assert_ok(&r);
    assert_eq!(r.status("init", "db1"), "changed", "{r:?}");
    assert!(
        repo_dir.join("repo/config").exists(),
        "the repository is on the vault"
    );
    let src = data_root.join("src");
    make_tree(&src, "sftp");
    let steps = fill(
        "  - id: backup\n    restic:\n      action: backup\n      repository: \"@REPO@\"\n      password: \"{{ restic_pw }}\"\n@ENV@      paths: [\"@SRC@\"]\n\
\x20\x20- id: restore\n    needs: backup\n    restic:\n      action: restore\n      repository: \"@REPO@\"\n      password: \"{{ restic_pw }}\"\n@ENV@      target: \"@TARGET@\"\n      include: [\"@SRC@/policy.d\"]\n",
        &[
            ("REPO", repo.clone()),
            ("ENV", env_yaml.clone()),
            ("SRC", s(&src)),
            ("TARGET", s(&data_root.join("restored"))),
        ],
    );
    // restic's private directories go to TMPDIR: none is left once the run ends.
    let tmpdir = dir.join("tmp");
    ok(std::fs::create_dir_all(&tmpdir));
    let r = lifeboat_env(
        dir,
        "sftp-backup",
        &format!("{HEAD}{steps}"),
        "db1 ansible_connection=local\n",
        &[],
        &[
            ("LB_RESTIC_PW", PASSWORD.to_string()),
            ("LB_SWIFT_KEY", swift::KEY.to_string()),
            ("TMPDIR", s(&tmpdir)),
        ],
    );
    assert_ok(&r);
    let left: Vec<String> = ok(std::fs::read_dir(&tmpdir))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("lifeboat-restic."))
        .collect();
    assert!(left.is_empty(), "private directories left: {left:?}");
    let restored = data_root.join("restored").join(ok(src.strip_prefix("/")));
    let got = tree(&restored);
    let want: BTreeMap<PathBuf, String> = tree(&src)
        .into_iter()
        .filter(|(k, _)| k.starts_with("policy.d"))
        .collect();
    assert_eq!(got, want, "only the included part, byte for byte");
    let text = look(&["snapshots", "--json"]);
    assert!(text.contains(&s(&src)), "{text}");
    assert_no_secret(&r, dir, &[]);
}

#[test]
fn s3_through_rclone_against_swift_s3api() {
    let tmp = workdir();
    let dir = tmp.path();
    let sw = swift::server();
    let data_root = dir.join("data");
    let src = data_root.join("src");
    make_tree(&src, "s3");
    let mut env_yaml = String::from("      env:\n");
    for (k, v) in sw.s3_env() {
        let v = if k.ends_with("SECRET_ACCESS_KEY") {
            "{{ swift_key }}".to_string()
        } else {
            v
        };
        env_yaml.push_str(&format!("        {k}: \"{}\"\n", v.replace('"', "\\\"")));
    }
    let repo = "rclone:lbs3:lifeboat-s3/db1".to_string();
    let steps = fill(
        "  - id: init\n    restic:\n      action: init\n      repository: \"@REPO@\"\n      password: \"{{ restic_pw }}\"\n@ENV@\
\x20\x20- id: backup\n    needs: init\n    restic:\n      action: backup\n      repository: \"@REPO@\"\n      password: \"{{ restic_pw }}\"\n@ENV@      paths: [\"@SRC@\"]\n\
\x20\x20- id: restore\n    needs: backup\n    restic:\n      action: restore\n      repository: \"@REPO@\"\n      password: \"{{ restic_pw }}\"\n@ENV@      target: \"@TARGET@\"\n\
\x20\x20- id: check\n    needs: restore\n    restic:\n      action: check\n      repository: \"@REPO@\"\n      password: \"{{ restic_pw }}\"\n@ENV@      read_data_subset: 1/1\n",
        &[
            ("REPO", repo.clone()),
            ("ENV", env_yaml),
            ("SRC", s(&src)),
            ("TARGET", s(&data_root.join("restored"))),
        ],
    );
    // An inherited AWS_CA_BUNDLE must not break rclone against a plain-http endpoint.
    let r = lifeboat_env(
        dir,
        "s3",
        &format!("{HEAD}{steps}"),
        "db1 ansible_connection=local\n",
        &[],
        &[
            ("LB_RESTIC_PW", PASSWORD.to_string()),
            ("LB_SWIFT_KEY", swift::KEY.to_string()),
            ("AWS_CA_BUNDLE", "/nonexistent/ca.pem".to_string()),
        ],
    );
    assert_ok(&r);
    let restored = data_root.join("restored").join(ok(src.strip_prefix("/")));
    assert_eq!(tree(&restored), tree(&src));
    // The objects are in the bucket, seen through Swift.
    assert!(
        sw.objects("lifeboat-s3")
            .iter()
            .any(|o| o.starts_with("db1/data/")),
        "{:?}",
        sw.objects("lifeboat-s3")
    );
    assert_no_secret(&r, dir, &[]);
}

#[test]
fn forget_never_removes_the_newest_snapshot_of_a_host() {
    let tmp = workdir();
    let dir = tmp.path();
    let repo = s(&dir.join("repo"));
    let src = dir.join("src");
    make_tree(&src, "f");
    restic(&repo, &[], &["init"]);
    for host in ["a", "a", "a", "b"] {
        restic(&repo, &[], &["backup", "--host", host, &s(&src)]);
    }
    // keep_last 0 and a keep_within that keeps nothing older than now: restic alone
    // would be told to keep nothing; the newest of each host stays.
    let steps = fill(
        &format!(
            "  - id: forget\n    restic:\n      action: forget\n      repository: \"@REPO@\"\n      password: \"{{{{ restic_pw }}}}\"\n      keep_last: 0\n{}",
            show("forget")
        ),
        &[("REPO", repo.clone())],
    );
    let r = run(dir, "forget", "db1 ansible_connection=local\n", &steps, &[]);
    assert_ok(&r);
    let d = &data(&r, "forget", "db1");
    assert_eq!(d["removed"].as_array().map(Vec::len), Some(2), "{d}");
    let left = snapshot_list(&repo, &[]);
    let mut hosts: Vec<&str> = left.iter().filter_map(|s| s["hostname"].as_str()).collect();
    hosts.sort();
    assert_eq!(hosts, vec!["a", "b"], "{left:?}");
}

#[test]
fn a_wrong_password_fails_with_advice() {
    let tmp = workdir();
    let dir = tmp.path();
    let repo = s(&dir.join("repo"));
    let out = ok(Command::new("restic")
        .args(["-r", &repo, "init"])
        .env("RESTIC_PASSWORD", "another password")
        .output());
    assert!(out.status.success());
    let steps = fill(
        "  - id: init\n    restic:\n      action: init\n      repository: \"@REPO@\"\n      password: \"{{ restic_pw }}\"\n",
        &[("REPO", repo)],
    );
    let r = run(dir, "wrong", "db1 ansible_connection=local\n", &steps, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.msg("init", "db1")
            .contains("check the repository password"),
        "{r:?}"
    );
}

/// The shape docs/openstack.md documents: one send to a list of repositories (a path
/// and a Swift container), `env` from the loop item, then retention and a check.
#[test]
fn one_send_to_a_list_of_repositories() {
    let tmp = workdir();
    let dir = tmp.path();
    let sw = swift::server();
    let local_repo = s(&dir.join("second-site"));
    let src = dir.join("latest");
    make_tree(&src, "list");
    let playbook = fill(
        r#"vars:
  offsite_repositories:
    - { repository: "swift:lifeboat-list:/site1", env: { ST_AUTH: "@AUTH@", ST_USER: "@USER@", ST_KEY: "{{ swift_key }}" } }
    - { repository: "@LOCAL@", env: {} }
"#,
        &[
            ("AUTH", sw.auth_url()),
            ("USER", swift::USER.to_string()),
            ("LOCAL", local_repo.clone()),
        ],
    );
    let steps = fill(
        r#"  - id: offsite-init
    restic: { action: init, repository: "{{ item.repository }}", env: "{{ item.env }}", password: "{{ restic_pw }}" }
    loop: "{{ offsite_repositories }}"
  - id: offsite-send
    needs: offsite-init
    restic:
      action: backup
      repository: "{{ item.repository }}"
      env: "{{ item.env }}"
      password: "{{ restic_pw }}"
      paths: ["@SRC@"]
      hostname: controller1
      tags: [lifeboat]
    loop: "{{ offsite_repositories }}"
  - id: offsite-retention
    needs: offsite-send
    restic: { action: forget, repository: "{{ item.repository }}", env: "{{ item.env }}", password: "{{ restic_pw }}", keep_daily: 7, prune: true }
    loop: "{{ offsite_repositories }}"
  - id: offsite-check
    needs: offsite-retention
    restic: { action: check, repository: "{{ item.repository }}", env: "{{ item.env }}", password: "{{ restic_pw }}", read_data_subset: 50% }
    loop: "{{ offsite_repositories }}"
"#,
        &[("SRC", s(&src))],
    );
    let text = format!("{HEAD}{steps}").replacen("steps:\n", &format!("{playbook}steps:\n"), 1);
    let r = lifeboat_env(
        dir,
        "list",
        &text,
        "backup ansible_connection=local\n",
        &[],
        &[
            ("LB_RESTIC_PW", PASSWORD.to_string()),
            ("LB_SWIFT_KEY", swift::KEY.to_string()),
        ],
    );
    assert_ok(&r);
    for repo in [
        ("swift:lifeboat-list:/site1", sw.env()),
        (local_repo.as_str(), Vec::new()),
    ] {
        let snaps = snapshot_list(repo.0, &repo.1);
        assert_eq!(snaps.len(), 1, "{repo:?}: {snaps:?}");
        assert_eq!(snaps[0]["hostname"], "controller1");
    }
    assert_no_secret(&r, dir, &[]);
}

/// `lifeboat modules restic` documents the actions, the secrets' way and the rollback.
#[test]
fn the_module_documents_itself() {
    let out = ok(Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["modules", "restic"])
        .env("NO_COLOR", "1")
        .output());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "init | backup | restore | forget | check | snapshots",
        "RESTIC_PASSWORD_FILE",
        "never appear on a command line",
        "read_data_subset",
        "keep_within",
        "newest snapshot of a host is never removed",
        "forgets the snapshot it made",
    ] {
        assert!(text.contains(want), "`{want}` missing from:\n{text}");
    }
}

/// In a dry run, `snapshots` and `check` really run (they change nothing), and `init`
/// of a missing repository predicts a change and creates nothing.
#[test]
fn dry_run_reads_and_predicts() {
    let tmp = workdir();
    let dir = tmp.path();
    let repo = s(&dir.join("repo"));
    let missing = s(&dir.join("missing"));
    restic(&repo, &[], &["init"]);
    let src = dir.join("src");
    make_tree(&src, "dry");
    restic(&repo, &[], &["backup", "--host", "db1", &s(&src)]);
    let steps = fill(
        "  - id: list\n    restic: { action: snapshots, repository: \"@REPO@\", password: \"{{ restic_pw }}\" }\n\
\x20\x20- id: check\n    restic: { action: check, repository: \"@REPO@\", password: \"{{ restic_pw }}\" }\n\
\x20\x20- id: init\n    restic: { action: init, repository: \"@MISSING@\", password: \"{{ restic_pw }}\" }\n\
\x20\x20- id: first-send\n    needs: init\n    restic: { action: backup, repository: \"@MISSING@\", password: \"{{ restic_pw }}\", paths: [\"@SRC@\"] }\n\
\x20\x20- id: first-list\n    needs: first-send\n    restic: { action: snapshots, repository: \"@MISSING@\", password: \"{{ restic_pw }}\" }\n\
\x20\x20- id: first-forget\n    needs: first-send\n    restic: { action: forget, repository: \"@MISSING@\", password: \"{{ restic_pw }}\", keep_last: 1 }\n",
        &[
            ("REPO", repo.clone()),
            ("MISSING", missing.clone()),
            ("SRC", s(&src)),
        ],
    );
    let r = run(
        dir,
        "dry",
        "db1 ansible_connection=local\n",
        &steps,
        &["--check"],
    );
    assert_ok(&r);
    assert_eq!(r.status("list", "db1"), "ok", "{r:?}");
    assert!(r.msg("list", "db1").starts_with("1 snapshots in"), "{r:?}");
    assert_eq!(r.status("check", "db1"), "ok", "{r:?}");
    assert_eq!(r.status("init", "db1"), "would_change", "{r:?}");
    // A first off-site send: what reads the repository its init makes cannot be known
    // before the run; the plan says so and does not fail.
    for step in ["first-send", "first-list", "first-forget"] {
        assert_eq!(r.status(step, "db1"), "unknown", "{step}: {r:?}");
        assert!(
            r.msg(step, "db1")
                .contains("does not exist yet (an earlier `init` makes it"),
            "{step}: {r:?}"
        );
    }
    assert!(
        !Path::new(&missing).exists(),
        "a dry run created a repository"
    );
}

/// The run id of a run in `dir`, and its journal's text.
fn journal_of(dir: &Path, r: &Run) -> (String, String) {
    let run_id = r.events[0]["run_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let journal = ok(std::fs::read_to_string(
        dir.join("state/runs").join(&run_id).join("journal.jsonl"),
    ));
    (run_id, journal)
}

/// A backup of `.` (with chdir) and its restore into a new target: the target gets the
/// directory's own mode and owner back (restic keeps none for it and makes it 0700).
#[test]
fn a_restore_of_dot_gives_the_target_its_own_mode_and_owner() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = workdir();
    let dir = tmp.path();
    let repo = s(&dir.join("repo"));
    restic(&repo, &[], &["init"]);
    let src = dir.join("keys");
    make_tree(&src, "dot");
    harness::sh(&format!(
        "chown -R nobody:nogroup {0} && chmod 0751 {0}",
        s(&src)
    ));
    let target = dir.join("restored/keys");
    let steps = fill(
        "  - id: send\n    restic: { action: backup, repository: \"@REPO@\", password: \"{{ restic_pw }}\", chdir: \"@SRC@\", paths: [.] }\n\
\x20\x20- id: back\n    needs: send\n    restic: { action: restore, repository: \"@REPO@\", password: \"{{ restic_pw }}\", target: \"@TARGET@\" }\n",
        &[
            ("REPO", repo.clone()),
            ("SRC", s(&src)),
            ("TARGET", s(&target)),
        ],
    );
    let r = run(dir, "dot", "db1 ansible_connection=local\n", &steps, &[]);
    assert_ok(&r);
    let snaps = snapshot_list(&repo, &[]);
    assert_eq!(
        snaps[0]["tags"],
        serde_json::json!(["lifeboat-root:0751:nobody:nogroup"])
    );
    let meta = ok(std::fs::metadata(&target));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o751, "{r:?}");
    let owner = harness::sh(&format!("stat -c %U:%G {}", s(&target)));
    assert_eq!(owner.trim(), "nobody:nogroup");
    assert_eq!(tree(&target), tree(&src));
}

/// A past run whose password came from the environment is undone by `lifeboat
/// rollback` once the environment gives the password again: its journal holds a
/// reference to the secret, never the value (nor the mask in its place). Without it,
/// the rollback is refused before anything runs, naming the secret and its source.
#[test]
fn a_past_run_with_a_secret_is_rolled_back_when_its_source_gives_it_again() {
    let tmp = workdir();
    let dir = tmp.path();
    let repo = s(&dir.join("repo"));
    restic(&repo, &[], &["init"]);
    let src = dir.join("src");
    make_tree(&src, "past");
    let steps = fill(
        "  - id: send\n    restic: { action: backup, repository: \"@REPO@\", password: \"{{ restic_pw }}\", paths: [\"@SRC@\"] }\n",
        &[("REPO", repo.clone()), ("SRC", s(&src))],
    );
    // Optional, as the shipped playbooks declare theirs: the run had it, the rollback
    // must have it again.
    let r = lifeboat_env(
        dir,
        "past",
        &format!(
            "name: past\nsecrets:\n  restic_pw: {{ env: LB_RESTIC_PW, optional: true }}\nsteps:\n{steps}"
        ),
        "db1 ansible_connection=local\n",
        &[],
        &[("LB_RESTIC_PW", PASSWORD.to_string())],
    );
    assert_ok(&r);
    assert_eq!(snapshot_list(&repo, &[]).len(), 1);
    let (run_id, journal) = journal_of(dir, &r);
    assert!(
        journal.contains("@@lifeboat-secret:restic_pw:"),
        "{journal}"
    );
    assert!(!journal.contains("********"), "{journal}");
    assert_no_secret(&r, dir, &[]);

    let rollback = |env: &[(&str, &str)]| {
        let home = dir.join("controller-home");
        binary::Lifeboat::new(dir)
            .lock_dir(user_dir(dir, "locks"))
            .home(&home)
            .env_remove("LB_RESTIC_PW")
            .envs(env.iter().copied())
            .timeout(Duration::from_secs(90))
            .args(["rollback", &run_id])
            .run()
    };
    let refused = rollback(&[("LB_SWIFT_KEY", swift::KEY)]);
    assert_ne!(refused.code, 0, "{refused:?}");
    let text = refused.console();
    assert!(
text.contains("recorded step `send` on db1 with the secret `restic_pw`, which has no value now (environment variable LB_RESTIC_PW, which is not set)")
            && text.contains(&format!("then run `lifeboat rollback {run_id}` again")),
        "{text}"
    );
    assert_eq!(
        snapshot_list(&repo, &[]).len(),
        1,
        "a refused rollback did something"
    );

    let undone = rollback(&[("LB_RESTIC_PW", PASSWORD), ("LB_SWIFT_KEY", swift::KEY)]);
    assert_eq!(undone.code, 0, "{undone:?}");
    assert!(snapshot_list(&repo, &[]).is_empty(), "{undone:?}");
    let text = undone.console();
    assert!(!text.contains(PASSWORD_CORE), "{text}");
}

/// A password that is no `secrets:` entry but an inventory variable, given to an
/// argument that is secret by nature (`password`): masked in every output, kept in the
/// journal as a reference to the step's argument, and rendered again from the
/// inventory by a later `lifeboat rollback`, which then forgets the snapshot.
#[test]
fn a_password_from_the_inventory_is_no_clear_text_in_the_journal_and_rolls_back() {
    let tmp = workdir();
    let dir = tmp.path();
    let repo = s(&dir.join("repo"));
    let pw = "inv3ntoryPw0rd-Zq";
    let env = [("RESTIC_PASSWORD".to_string(), pw.to_string())];
    restic(&repo, &env, &["init"]);
    let src = dir.join("src");
    make_tree(&src, "inv");
    let steps = fill(
        "  - id: send\n    restic: { action: backup, repository: \"@REPO@\", password: \"{{ inv_pw }}\", paths: [\"@SRC@\"] }\n",
        &[("REPO", repo.clone()), ("SRC", s(&src))],
    );
    let inventory = format!("db1 ansible_connection=local inv_pw={pw}\n");
    let r = lifeboat_env(
        dir,
        "inv",
        &format!("name: inv\nsteps:\n{steps}"),
        &inventory,
        &["-v", "--junit", &s(&dir.join("inv.xml"))],
        &[],
    );
    assert_ok(&r);
    assert_eq!(snapshot_list(&repo, &env).len(), 1);
    let (run_id, journal) = journal_of(dir, &r);
    assert!(
        journal.contains("@@lifeboat-secret:arg/send/db1/password:"),
        "{journal}"
    );
    let junit = ok(std::fs::read_to_string(dir.join("inv.xml")));
    for (what, text) in [
        ("journal", &journal),
        ("events", &r.events_text),
        ("JUnit file", &junit),
    ] {
        assert!(!text.contains(pw), "the password is in the {what}:\n{text}");
    }
    assert!(!r.console().contains(pw), "{}", r.console());
    for f in files_under(&dir.join("state"), &[]) {
        let text = String::from_utf8_lossy(&ok(std::fs::read(&f))).into_owned();
        assert!(!text.contains(pw), "the password is in {}", f.display());
    }

    let home = dir.join("controller-home");
    let undone = binary::Lifeboat::new(dir)
        .lock_dir(user_dir(dir, "locks"))
        .home(&home)
        .timeout(Duration::from_secs(90))
        .args(["rollback", &run_id])
        .run();
    assert_eq!(undone.code, 0, "{undone:?}");
    assert!(snapshot_list(&repo, &env).is_empty(), "{undone:?}");
    assert!(!undone.console().contains(pw));
}

/// A backup restic reports incomplete (exit 3: a file it could not read) fails, and
/// the snapshot it wrote is forgotten at once: nothing later may trust it.
#[test]
fn an_incomplete_backup_fails_and_leaves_no_snapshot() {
    let tmp = workdir();
    let dir = tmp.path();
    let host = ok(Sshd::start("127.0.0.1"));
    let inventory = host_line("node1", &host, "");
    let data_root = user_dir(dir, "data");
    let src = data_root.join("src");
    make_tree(&src, "partial");
    harness::sh(&format!("chown -R {USER} {}", s(&data_root)));
    // Root's, unreadable to the login user restic runs as.
    write(&src.join("secret.key"), b"root only\n");
    harness::chmod(&src.join("secret.key"), 0o600);
    let repo = s(&data_root.join("repo"));
    let steps = fill(
        "  - id: init\n    restic: { action: init, repository: \"@REPO@\", password: \"{{ restic_pw }}\" }\n\
\x20\x20- id: backup\n    needs: init\n    restic: { action: backup, repository: \"@REPO@\", password: \"{{ restic_pw }}\", paths: [\"@SRC@\"] }\n",
        &[("REPO", repo.clone()), ("SRC", s(&src))],
    );
    let r = run(dir, "partial", &inventory, &steps, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.status("backup", "node1"), "failed", "{r:?}");
    let msg = r.msg("backup", "node1");
    assert!(
        msg.contains("was incomplete") && msg.contains("forgotten"),
        "{msg}"
    );
    assert!(
        msg.contains("secret.key"),
        "restic's complaint is shown: {msg}"
    );
    assert!(snapshot_list(&repo, &[]).is_empty(), "{r:?}");
}

/// The same password given by `module_defaults:` instead of the step: a default is as
/// if the step had written it, so it is masked, journaled as a reference to the step's
/// argument, and rendered again from the inventory by `lifeboat rollback`.
#[test]
fn a_password_from_module_defaults_is_journaled_as_a_reference_and_rolls_back() {
    let tmp = workdir();
    let dir = tmp.path();
    let repo = s(&dir.join("repo"));
    let pw = "m0duleDefaultPw-Kx";
    let env = [("RESTIC_PASSWORD".to_string(), pw.to_string())];
    restic(&repo, &env, &["init"]);
    let src = dir.join("src");
    make_tree(&src, "md");
    let playbook = fill(
        "name: md\nmodule_defaults:\n  restic: { repository: \"@REPO@\", password: \"{{ inv_pw }}\" }\nsteps:\n  - id: send\n    restic: { action: backup, paths: [\"@SRC@\"] }\n",
        &[("REPO", repo.clone()), ("SRC", s(&src))],
    );
    let inventory = format!("db1 ansible_connection=local inv_pw={pw}\n");
    let r = lifeboat_env(dir, "md", &playbook, &inventory, &["-v"], &[]);
    assert_ok(&r);
    assert_eq!(snapshot_list(&repo, &env).len(), 1);
    let (run_id, journal) = journal_of(dir, &r);
    assert!(
        journal.contains("@@lifeboat-secret:arg/send/db1/password:"),
        "{journal}"
    );
    assert!(!journal.contains(pw), "{journal}");
    assert!(!r.events_text.contains(pw), "{}", r.events_text);
    assert!(!r.console().contains(pw), "{}", r.console());

    let home = dir.join("controller-home");
    let undone = binary::Lifeboat::new(dir)
        .lock_dir(user_dir(dir, "locks"))
        .home(&home)
        .timeout(Duration::from_secs(90))
        .args(["rollback", &run_id])
        .run();
    assert_eq!(undone.code, 0, "{undone:?}");
    assert!(snapshot_list(&repo, &env).is_empty(), "{undone:?}");
    assert!(!undone.console().contains(pw));
}
