//! Host locks, through the real binary: a run locks each host it runs on (a file naming
//! the run, the controller and its pid, the user, the playbook and the start time), so
//! a second run against the same host is refused with who holds it, locally and over
//! SSH; a stale lock (its controller process is gone) is refused with advice and broken
//! by `--break-lock`; a lock from another controller is reported with its age; locks
//! are released at the end of a successful and of a rolled-back run; `lifeboat resume`
//! takes over the locks of the run it continues; a dry run writes no lock.

#[path = "support/sshd.rs"]
mod sshd;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::binary::{Lifeboat, Ran};
use support::{LOCK_DIR, Output, Test};

/// Waits on `go` so the test decides when the run ends.
const WAITING: &str = r#"
hosts: all
steps:
  - id: hold
    shell: "touch {{ playbook_dir }}/started-{{ inventory_hostname }}; while [ ! -e {{ playbook_dir }}/go ]; do sleep 0.05; done"
  - id: after
    needs: hold
    shell: "touch {{ playbook_dir }}/after-{{ inventory_hostname }}"
"#;

const SIMPLE: &str = r#"
steps:
  - id: touch
    shell: "touch {{ playbook_dir }}/ran"
"#;

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the host name")
        .trim()
        .to_string()
}

/// A pid no process has any more.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

/// The only run id in a test directory's state dir.
fn run_id(dir: &Path) -> String {
    let mut ids = support::run_ids(dir);
    assert_eq!(ids.len(), 1, "one run in {}: {ids:?}", dir.display());
    ids.remove(0)
}

/// Plants a lock file for `host` in `lock_dir`.
fn plant_lock(lock_dir: &Path, host: &str, run: &str, controller: &str, pid: u32) -> PathBuf {
    std::fs::create_dir_all(lock_dir).expect("mkdir");
    let path = lock_dir.join(format!("{host}.lock"));
    std::fs::write(
        &path,
        format!(
            "run_id={run}\ncontroller={controller}\npid={pid}\nuser=alice\nplaybook=backup.yml\nsince=2026-01-02T03:04:05Z\n"
        ),
    )
    .expect("write the lock");
    path
}

fn lock_files(lock_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(lock_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs `t` after `place` has put something where localhost's lock goes; returns the
/// run's output and the lock's path.
fn run_over_lock(t: Test, place: impl FnOnce(&Path)) -> (Output, PathBuf) {
    let lock_dir = t.path().join(LOCK_DIR);
    ok(std::fs::create_dir_all(&lock_dir));
    let lock = lock_dir.join("localhost.lock");
    place(&lock);
    (t.run(), lock)
}

fn warnings(out: &Output) -> Vec<String> {
    out.events_of("warning")
        .iter()
        .map(|w| w["msg"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_second_run_against_a_locked_host_is_refused_with_who_holds_it() {
    let mut first = Test::new()
        .inventory("h1 ansible_connection=local\nh2 ansible_connection=local\n")
        .playbook(WAITING)
        .spawn();
    first.wait_until(20, "the first run to start", |p| {
        p.join("started-h1").exists() && p.join("started-h2").exists()
    });
    let lock_dir = first.path().join(LOCK_DIR);
    // Two inventory hosts on one machine: one lock each.
    assert_eq!(lock_files(&lock_dir), ["h1.lock", "h2.lock"]);
    let id = run_id(first.path());
    let text = std::fs::read_to_string(lock_dir.join("h1.lock")).expect("the lock");
    for line in [
        format!("run_id={id}"),
        format!("controller={}", this_host()),
        format!("pid={}", first.child.id()),
        "playbook=".to_string(),
        "user=".to_string(),
        "since=20".to_string(),
    ] {
        assert!(
            text.contains(&line),
            "`{line}` missing from the lock:\n{text}"
        );
    }

    let second = Test::new()
        .inventory("h1 ansible_connection=local\n")
        .playbook(SIMPLE)
        .args(&["--lock-dir", &lock_dir.display().to_string()])
        .run();
    second.assert_code(2);
    let msg = second.msg("touch", "h1");
    assert!(
        msg.starts_with(&format!(
            "host h1 is locked by run {id} (controller {}, pid {}, user ",
            this_host(),
            first.child.id()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("which is still running; wait for it to end"),
        "{msg}"
    );
    assert!(!second.exists("ran"), "the refused run ran its step");
    assert!(
        second.stdout.contains(&format!("locked by run {id}")),
        "{}",
        second.stdout
    );

    std::fs::write(first.path().join("go"), "").expect("go");
    let first = first.wait(30);
    first.assert_code(0);
    assert!(first.exists("after-h1") && first.exists("after-h2"));
    assert_eq!(
        lock_files(&first.join(LOCK_DIR)),
        Vec::<String>::new(),
        "a successful run releases its locks"
    );
    assert_eq!(
        support::left_in_locks(&first.join(LOCK_DIR), &["h1", "h2"], &[id]),
        Vec::<String>::new(),
        "a successful run removes its completion markers"
    );
}

#[test]
fn a_locked_host_fails_like_an_unreachable_one_and_the_others_go_on() {
    let t = Test::new()
        .inventory("h1 ansible_connection=local\nh2 ansible_connection=local\n")
        .playbook(&format!("max_fail_percentage: 50\n{WAITING}"))
        .file("go", "");
    let lock_dir = t.path().join(LOCK_DIR);
    plant_lock(
        &lock_dir,
        "h1",
        "20260101000000-beef",
        "ctl-elsewhere",
        4242,
    );
    let out = t.run();
    out.assert_code(2);
    assert_eq!(out.status("hold", "h1"), "failed");
    assert!(
        out.msg("hold", "h1")
            .starts_with("host h1 is locked by run 20260101000000-beef from another controller"),
        "{}",
        out.msg("hold", "h1")
    );
    assert_eq!(
        out.status("after", "h2"),
        "changed",
        "h2 is not locked\n{out:?}"
    );
    assert!(!out.exists("started-h1"));
    // The other run's lock is left as it was; ours is released.
    assert_eq!(lock_files(&lock_dir), ["h1.lock"]);
    let text = std::fs::read_to_string(lock_dir.join("h1.lock")).expect("lock");
    assert!(text.contains("run_id=20260101000000-beef"), "{text}");
}

#[test]
fn a_stale_lock_is_refused_with_advice_and_broken_with_break_lock() {
    let pid = dead_pid();
    let t = Test::new().playbook(SIMPLE);
    let lock_dir = t.path().join(LOCK_DIR);
    plant_lock(
        &lock_dir,
        "localhost",
        "20260101000000-dead",
        &this_host(),
        pid,
    );
    let out = t.run();
    out.assert_code(2);
    let msg = out.msg("touch", "localhost").to_string();
    assert!(
        msg.starts_with(&format!(
            "host localhost is locked by run 20260101000000-dead: stale lock of run 20260101000000-dead: its controller process {pid} is gone (controller {}, pid {pid}, user alice, playbook backup.yml, since 2026-01-02T03:04:05Z (",
            this_host()
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with("); pass --break-lock to break it, or `lifeboat resume 20260101000000-dead` to continue that run"),
        "{msg}"
    );
    assert!(!out.exists("ran"));

    let dir = out.path().to_path_buf();
    let again = lifeboat_in(&dir, &["run", "playbook.yaml", "--break-lock"]);
    assert_eq!(again.code, 0, "{again:?}");
    let stdout = &again.stdout;
    assert!(
        stdout.contains(&format!(
            "--break-lock: breaking the stale lock of run 20260101000000-dead on host localhost (its controller process {pid} is gone; controller "
        )),
        "{stdout}"
    );
    assert!(dir.join("ran").exists());
    assert_eq!(
        lock_files(&lock_dir),
        Vec::<String>::new(),
        "released at the end"
    );
}

#[test]
fn a_lock_file_that_is_empty_a_link_or_a_fifo_refuses_the_host() {
    // Empty: another run is between creating its lock and writing it, or was stopped
    // there.
    let (out, lock) = run_over_lock(Test::new().playbook(SIMPLE), |l| ok(std::fs::write(l, "")));
    let lock_dir = lock.parent().map(Path::to_path_buf).unwrap_or_default();
    out.assert_code(2);
    let msg = out.msg("touch", "localhost").to_string();
    assert_eq!(
        msg,
        format!(
            "host localhost has an empty lock file {}: another run may be taking localhost this moment, or one was stopped while writing it; run again, and if it stays empty and no lifeboat run uses localhost, remove it or pass --break-lock",
            lock.display()
        )
    );
    assert!(!out.exists("ran"));
    let dir = out.path().to_path_buf();
    let again = lifeboat_in(&dir, &["run", "playbook.yaml", "--break-lock"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again
            .stdout
            .contains("--break-lock: replacing the empty lock file"),
        "{}",
        again.stdout
    );
    assert!(dir.join("ran").exists());
    assert_eq!(lock_files(&lock_dir), Vec::<String>::new());

    // A symbolic link where the lock goes is never followed: the lock is not taken.
    let t = Test::new().playbook(SIMPLE);
    let target = t.path().join("elsewhere");
    let (out, lock) = run_over_lock(t, |l| ok(std::os::unix::fs::symlink(&target, l)));
    out.assert_code(2);
    let msg = out.msg("touch", "localhost");
    assert!(
        msg.starts_with(&format!(
            "cannot lock host localhost: the lock file {} is a symbolic link, which is never followed: remove it",
            lock.display()
        )),
        "{msg}"
    );
    assert!(!target.exists(), "the link was followed");
    assert!(!out.exists("ran"));

    // Nor is a link to a device: writing to it would take the lock for every run.
    let (out, _) = run_over_lock(Test::new().playbook(SIMPLE), |l| {
        ok(std::os::unix::fs::symlink("/dev/null", l))
    });
    out.assert_code(2);
    assert!(
        out.msg("touch", "localhost")
            .contains("is a symbolic link, which is never followed"),
        "{}",
        out.msg("touch", "localhost")
    );
    assert!(!out.exists("ran"));

    // A FIFO (nobody reading it) is refused at once, not waited on.
    let (out, fifo) = run_over_lock(Test::new().playbook(SIMPLE), |l| {
        let made = Command::new("mkfifo").arg(l).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    });
    out.assert_code(2);
    assert_eq!(
        out.msg("touch", "localhost"),
        format!(
            "cannot lock host localhost: the lock file {} is not a regular file: remove it; check that the login user can write there, or choose another directory with `lifeboat_lock_dir` (host variable) or --lock-dir",
            fifo.display()
        )
    );
    assert!(!out.exists("ran"));

    // A dry run says what a real run would meet.
    let (out, _) = run_over_lock(Test::new().command("plan").playbook(SIMPLE), |l| {
        ok(std::fs::write(l, ""))
    });
    out.assert_code(0);
    let w = warnings(&out);
    assert!(
        w.iter()
            .any(|w| w.starts_with("host localhost has an empty lock file")
                && w.ends_with("(a real run now would be refused)")),
        "{w:?}"
    );
}

#[test]
fn a_lock_whose_pid_is_another_program_is_stale() {
    // This test process is alive but is not lifeboat.
    let t = Test::new().playbook(SIMPLE);
    plant_lock(
        &t.path().join(LOCK_DIR),
        "localhost",
        "20260101000000-0001",
        &this_host(),
        std::process::id(),
    );
    let out = t.run();
    out.assert_code(2);
    let msg = out.msg("touch", "localhost");
    assert!(
        msg.contains(&format!(
            "stale lock of run 20260101000000-0001: its controller process {} is gone (pid {} is now `",
            std::process::id(),
            std::process::id()
        )),
        "{msg}"
    );
}

#[test]
fn a_lock_from_another_controller_is_reported_and_break_lock_breaks_it_loudly() {
    let t = Test::new().playbook(SIMPLE);
    let lock_dir = t.path().join(LOCK_DIR);
    plant_lock(
        &lock_dir,
        "localhost",
        "20260101000000-c0de",
        "ctl02.example",
        4242,
    );
    let out = t.run();
    out.assert_code(2);
    let msg = out.msg("touch", "localhost");
    assert!(
        msg.starts_with("host localhost is locked by run 20260101000000-c0de from another controller (controller ctl02.example, pid 4242, user alice, playbook backup.yml, since 2026-01-02T03:04:05Z ("),
        "{msg}"
    );
    assert!(
        msg.contains(" ago)); lifeboat cannot tell from here whether that run still goes: check on ctl02.example, then pass --break-lock to break the lock"),
        "{msg}"
    );
    let dir = out.path().to_path_buf();
    let broken = Test::new()
        .playbook(SIMPLE)
        .args(&[
            "--lock-dir",
            &lock_dir.display().to_string(),
            "--break-lock",
        ])
        .run();
    broken.assert_code(0);
    let w = warnings(&broken);
    assert!(
        w.iter().any(|w| w.starts_with(
            "--break-lock: BREAKING THE LOCK OF RUN 20260101000000-c0de ON HOST localhost, held from another controller (controller ctl02.example"
        ) && w.ends_with("if that run still goes, both runs may now change localhost at once")),
        "{w:?}"
    );
    assert_eq!(lock_files(&lock_dir), Vec::<String>::new());
    assert!(!dir.join("ran").exists(), "the refused run did nothing");
}

#[test]
fn a_rolled_back_run_releases_its_locks() {
    let out = Test::new()
        .playbook(
            "steps:\n  - id: a\n    shell: \"true\"\n    rollback:\n      shell: \"true\"\n  - id: b\n    needs: a\n    shell: exit 1\n",
        )
        .run();
    out.assert_code(2);
    let lock_dir = out.join(LOCK_DIR);
    assert!(lock_dir.is_dir(), "the run took a lock");
    assert_eq!(lock_files(&lock_dir), Vec::<String>::new());
}

#[test]
fn resume_takes_over_the_locks_of_the_run_it_continues() {
    let mut run = Test::new().relative_playbook().playbook(WAITING).spawn();
    run.wait_until(20, "the run to start", |p| {
        p.join("started-localhost").exists()
    });
    run.signal("KILL");
    let killed = run.wait(20);
    let dir = killed.path().to_path_buf();
    let id = run_id(&dir);
    let lock = dir.join(LOCK_DIR).join("localhost.lock");
    assert!(
        std::fs::read_to_string(&lock)
            .unwrap_or_default()
            .contains(&format!("run_id={id}")),
        "a killed run leaves its lock"
    );
    // Another run is refused: the lock is stale, and says how to go on.
    let other = lifeboat_in(
        &dir,
        &["run", "playbook.yaml", "--state-dir", "other-state"],
    );
    assert_eq!(other.code, 2);
    let stdout = &other.stdout;
    assert!(
        stdout.contains(&format!("stale lock of run {id}"))
            && stdout.contains(&format!("`lifeboat resume {id}`")),
        "{stdout}"
    );
    std::fs::write(dir.join("go"), "").expect("go");
    let resumed = lifeboat_in(&dir, &["resume", &id]);
    let stdout = &resumed.stdout;
    assert_eq!(resumed.code, 0, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "host localhost: taking over the stale lock of run {id}, which this run continues (its controller process "
        )),
        "{stdout}"
    );
    assert!(dir.join("after-localhost").exists());
    assert!(!lock.exists(), "the resumed run releases the lock");
}

#[test]
fn rollback_of_a_past_run_refuses_a_host_another_run_holds() {
    let out = Test::new()
        .playbook(
            "steps:\n  - id: a\n    shell: \"true\"\n    rollback:\n      shell: \"touch {{ playbook_dir }}/undone\"\n  - id: b\n    needs: a\n    shell: exit 1\n",
        )
        .args(&["--no-rollback"])
        .run();
    out.assert_code(3);
    let dir = out.path().to_path_buf();
    let id = run_id(&dir);
    plant_lock(
        &dir.join(LOCK_DIR),
        "localhost",
        "20260101000000-c0de",
        "ctl02.example",
        7,
    );
    let rb = lifeboat_in(&dir, &["rollback", &id]);
    let stdout = &rb.stdout;
    assert_eq!(rb.code, 3, "{stdout}");
    assert!(
        stdout.contains("the rollback was refused: host localhost is locked by run 20260101000000-c0de from another controller"),
        "{stdout}"
    );
    assert!(
        !dir.join("undone").exists(),
        "a refused rollback undoes nothing"
    );
}

#[test]
fn a_dry_run_writes_no_lock_and_warns_about_a_held_one() {
    let out = Test::new().command("plan").playbook(SIMPLE).run();
    out.assert_code(0);
    assert!(
        !out.join(LOCK_DIR).exists(),
        "a dry run created the lock directory"
    );

    let t = Test::new().command("plan").playbook(SIMPLE);
    let lock = plant_lock(
        &t.path().join(LOCK_DIR),
        "localhost",
        "20260101000000-c0de",
        "ctl02.example",
        7,
    );
    let before = std::fs::read_to_string(&lock).expect("lock");
    let out = t.run();
    out.assert_code(0);
    let w = warnings(&out);
    assert!(
        w.iter().any(|w| w.starts_with(
            "host localhost is locked by run 20260101000000-c0de from another controller"
        ) && w.ends_with("(a real run now would be refused)")),
        "{w:?}"
    );
    assert_eq!(std::fs::read_to_string(&lock).expect("lock"), before);
    assert_eq!(lock_files(&out.join(LOCK_DIR)), ["localhost.lock"]);
}

#[test]
fn a_host_variable_chooses_the_lock_directory() {
    let t = Test::new()
        .inventory("h1 ansible_connection=local lifeboat_lock_dir=[TMP]/h1-locks\n")
        .playbook(WAITING);
    let mut run = t.spawn();
    run.wait_until(20, "the run to start", |p| p.join("started-h1").exists());
    assert_eq!(lock_files(&run.path().join("h1-locks")), ["h1.lock"]);
    assert_eq!(lock_files(&run.path().join(LOCK_DIR)), Vec::<String>::new());
    std::fs::write(run.path().join("go"), "").expect("go");
    run.wait(30).assert_code(0);
}

/// A command whose host lock was taken over while its run went on (another run broke
/// it) refuses to start: the completion wrapper reads the lock's first line first.
#[test]
fn a_command_refuses_to_start_when_its_hosts_lock_names_another_run() {
    let out = Test::new()
        .inventory("h1 ansible_connection=local lifeboat_lock_dir=[TMP]/h1-locks\n")
        .playbook(
            r#"
steps:
  - id: take-over
    shell: "printf 'run_id=other\\ncontroller=elsewhere\\n' > {{ playbook_dir }}/h1-locks/h1.lock"
  - id: after
    needs: take-over
    shell: "touch {{ playbook_dir }}/after"
"#,
        )
        .run();
    out.assert_code(2);
    assert!(
        out.stdout.contains("no longer names run")
            && out.stdout.contains("not running the command"),
        "{out:?}"
    );
    assert!(
        !out.exists("after"),
        "the command ran under a lock it does not hold"
    );
}

/// The release removes this run's files from the host's marker directory; a file of
/// someone else's there stays. The directories stay for the next run (which then
/// starts no process to lock the host).
#[test]
fn a_successful_release_removes_only_its_own_files() {
    let out = Test::new()
        .inventory("h1 ansible_connection=local\nh2 ansible_connection=local\n")
        .playbook(&planting(
            "touch {{ playbook_dir }}/.lifeboat-locks/h1.markers/not-ours",
        ))
        .run();
    out.assert_code(0);
    let id = run_id(out.path());
    assert_eq!(
        support::left_in_locks(&out.join(LOCK_DIR), &["h1", "h2"], &[id]),
        ["h1.markers/not-ours"],
        "{out:?}"
    );
}

/// When the host's marker directory is not one of this user's (here: not a directory
/// at all), the run keeps its markers in a directory of its own, shared by the hosts of
/// the machine; the release removes this host's files and the run directory when they
/// are alone in it, and a file of someone else's there stays, with its directory. Two
/// hosts share the lock directory, so each first finds the other's files.
#[test]
fn a_run_whose_hosts_marker_directory_is_not_its_own_uses_a_directory_of_its_own() {
    let out = Test::new()
        .inventory("h1 ansible_connection=local\nh2 ansible_connection=local\n")
        .file(&format!("{LOCK_DIR}/h1.markers"), "")
        .file(&format!("{LOCK_DIR}/h2.markers"), "")
        .playbook(&planting(
            "test -f {{ playbook_dir }}/.lifeboat-locks/{{ lifeboat.run_id }}/h1.done && touch {{ playbook_dir }}/.lifeboat-locks/{{ lifeboat.run_id }}/not-ours",
        ))
        .run();
    out.assert_code(0);
    let id = run_id(out.path());
    let mut left: Vec<String> = std::fs::read_dir(out.join(LOCK_DIR))
        .expect("the lock directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [id.as_str(), "h1.markers", "h2.markers"], "{out:?}");
    let inside: Vec<String> = std::fs::read_dir(out.join(LOCK_DIR).join(&id))
        .expect("the run directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(inside, ["not-ours"], "only the foreign file is left");
}

/// A playbook whose first step, once, runs `plant` (a file of someone else's among
/// the markers), then a step on every host.
fn planting(plant: &str) -> String {
    format!(
        "hosts: all\nsteps:\n  - id: plant\n    shell: \"{plant}\"\n    run_once: true\n  - id: after\n    needs: plant\n    shell: \"true\"\n"
    )
}

/// `lifeboat ARGS` in `dir`, as a [`Test`] ran it there.
fn lifeboat_in(dir: &Path, args: &[&str]) -> Ran {
    support::lifeboat_in(dir).args(args).run()
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A test folder the login user can pass through, with a lock directory it can write.
fn ssh_workdir() -> (tempfile::TempDir, PathBuf) {
    let dir = ok(tempfile::tempdir());
    ok(std::fs::set_permissions(
        dir.path(),
        std::fs::Permissions::from_mode(0o755),
    ));
    let locks = dir.path().join("locks");
    ok(std::fs::create_dir_all(&locks));
    ok(std::fs::set_permissions(
        &locks,
        std::fs::Permissions::from_mode(0o1777),
    ));
    (dir, locks)
}

/// Starts `lifeboat run` over SSH in `dir`.
fn ssh_run(dir: &Path, locks: &Path, playbook: &str, state: &str) -> std::process::Child {
    Lifeboat::new(dir)
        .arg("run")
        .arg(dir.join(playbook))
        .arg("-i")
        .arg(dir.join("hosts.ini"))
        .arg("-e")
        .arg(format!("base={}", dir.display()))
        .arg("--state-dir")
        .arg(dir.join(state))
        .arg("--events")
        .arg(dir.join(format!("{state}.events")))
        .lock_dir(locks)
        .home(dir)
        .spawn()
}

#[test]
fn over_ssh_a_second_run_is_refused_and_the_first_releases_its_lock() {
    let s = ok(sshd::Sshd::start("127.0.0.1"));
    let (dir, locks) = ssh_workdir();
    let d = dir.path();
    let shared = d.join("shared");
    ok(std::fs::create_dir_all(&shared));
    ok(std::fs::set_permissions(
        &shared,
        std::fs::Permissions::from_mode(0o1777),
    ));
    ok(std::fs::write(
        d.join("hosts.ini"),
        format!(
            "db1 ansible_host={} ansible_port={} ansible_user={} ansible_ssh_private_key_file={} lifeboat_known_hosts={}\n",
            s.addr,
            s.port,
            sshd::USER,
            s.ed25519_key.display(),
            s.known_hosts.display()
        ),
    ));
    ok(std::fs::write(
        d.join("wait.yml"),
        "hosts: all\nsteps:\n  - id: hold\n    shell: \"touch {{ base }}/shared/started; while [ ! -e {{ base }}/shared/go ]; do sleep 0.05; done\"\n",
    ));
    ok(std::fs::write(
        d.join("simple.yml"),
        "hosts: all\nsteps:\n  - id: touch\n    shell: \"touch {{ base }}/shared/ran\"\n",
    ));
    let first = ssh_run(d, &locks, "wait.yml", "first");
    assert!(
        sshd::wait_until(Duration::from_secs(30), || shared.join("started").exists()),
        "the first run did not start"
    );
    let text = std::fs::read_to_string(locks.join("db1.lock")).unwrap_or_default();
    assert!(
        text.contains(&format!("pid={}", first.id())),
        "the lock names the first run's controller process:\n{text}"
    );
    let second = ok(ssh_run(d, &locks, "simple.yml", "second").wait_with_output());
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("host db1 is locked by run ")
            && stdout.contains("which is still running; wait for it to end"),
        "{stdout}"
    );
    assert!(!shared.join("ran").exists());
    ok(std::fs::write(shared.join("go"), ""));
    let first = ok(first.wait_with_output());
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    assert_eq!(
        lock_files(&locks),
        Vec::<String>::new(),
        "released over SSH"
    );
    // The lock was the login user's.
    let third = ok(ssh_run(d, &locks, "simple.yml", "third").wait_with_output());
    assert_eq!(
        third.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&third.stdout)
    );
    assert!(shared.join("ran").exists());
}

#[test]
fn a_lock_directory_that_cannot_be_made_fails_the_host_saying_what_to_do() {
    let out = Test::new()
        .playbook(SIMPLE)
        .args(&["--lock-dir", "/proc/lifeboat-no-such-dir"])
        .run();
    out.assert_code(2);
    assert_eq!(
        out.msg("touch", "localhost"),
        "cannot lock host localhost: cannot create the lock directory /proc/lifeboat-no-such-dir; check that the login user can write there, or choose another directory with `lifeboat_lock_dir` (host variable) or --lock-dir"
    );
    assert!(!out.exists("ran"));
}

#[test]
fn resume_refuses_a_host_another_run_holds_and_changes_nothing() {
    let out = Test::new()
        .playbook(
            "steps:\n  - id: a\n    shell: \"true\"\n  - id: b\n    needs: a\n    shell: \"[ -e {{ playbook_dir }}/go ] && touch {{ playbook_dir }}/b-ran\"\n",
        )
        .args(&["--no-rollback"])
        .run();
    out.assert_code(3);
    let dir = out.path().to_path_buf();
    let id = run_id(&dir);
    std::fs::write(dir.join("go"), "").expect("go");
    plant_lock(
        &dir.join(LOCK_DIR),
        "localhost",
        "20260101000000-c0de",
        "ctl02.example",
        7,
    );
    let resumed = lifeboat_in(&dir, &["resume", &id]);
    let stdout = &resumed.stdout;
    assert_eq!(resumed.code, 3, "{stdout}");
    assert!(
        stdout.contains("the resume was refused: host localhost is locked by run 20260101000000-c0de from another controller"),
        "{stdout}"
    );
    assert!(!dir.join("b-ran").exists(), "a refused resume ran a step");
}
