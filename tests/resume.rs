//! `lifeboat resume` and `lifeboat rollback RUN_ID`, from the run journal: a killed run
//! resumes without running again what it finished (its registered results come back),
//! nor the command that was running when it was killed if that command completed (its
//! completion marker on the host), but runs again a command that died with it; a
//! changed playbook is refused unless forced; a past run is rolled back in reverse
//! order from its journal.

mod support;

use std::path::Path;
use std::process::Stdio;

use support::binary::Ran;
use support::{Output, Test};

const PLAYBOOK: &str = r#"
steps:
  - id: one
    shell: echo one >> {{ playbook_dir }}/log && echo first-result
    register: first
    rollback:
      shell: echo undo-one >> {{ playbook_dir }}/log
  - id: two
    needs: one
    shell: "touch {{ playbook_dir }}/waiting; while [ ! -e {{ playbook_dir }}/go ]; do sleep 0.05; done; echo two >> {{ playbook_dir }}/log"
    rollback:
      shell: echo undo-two >> {{ playbook_dir }}/log
  - id: three
    needs: two
    shell: echo "three {{ first.stdout | trim }}" >> {{ playbook_dir }}/log
"#;

/// The first run of the test's directory.
fn run_id(dir: &Path) -> String {
    support::run_ids(dir).into_iter().next().unwrap_or_default()
}

/// `lifeboat ARGS` in a test's directory, as its runs were.
fn lifeboat_in(dir: &Path, args: &[&str]) -> Ran {
    support::lifeboat_in(dir).args(args).run()
}

/// Runs `playbook`, waits until the file `waiting` appears (`what`: what that means),
/// and kills the controller there. The finished run keeps the test's directory.
fn killed_at(playbook: &str, waiting: &str, what: &str) -> Output {
    killed_in(Test::new(), playbook, waiting, what)
}

/// [`killed_at`], for a run that `test` sets up.
fn killed_in(test: Test, playbook: &str, waiting: &str, what: &str) -> Output {
    let mut run = test.relative_playbook().playbook(playbook).spawn();
    run.wait_until(20, what, |p| p.join(waiting).exists());
    run.signal("KILL");
    run.wait(20)
}

/// The `log` file the playbooks append to ("" when there is none).
fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

/// Kills the commands a killed controller left running (each wrapper's process group,
/// from the pid its completion marker recorded), as if they had died with it.
fn kill_left_commands(dir: &Path) {
    let locks = dir.join(support::LOCK_DIR);
    let locks = locks.to_string_lossy();
    for id in support::run_ids(dir) {
        // The pid files are in the host's scratch directory on tmpfs, or beside the log.
        let m = lifeboat::marker::MarkerPaths::of_host(&locks, "localhost", &id);
        for marker in [&m.dir, &m.scratch]
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|d| d.flatten())
        {
            let name = marker.file_name().to_string_lossy().into_owned();
            if name.starts_with(&m.prefix) && name.ends_with(".pid") {
                // The pid file holds the wrapper's pid, then its start time.
                let text = std::fs::read_to_string(marker.path()).expect("a pid file");
                let pid = text.split_whitespace().next().unwrap_or_default();
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

#[test]
fn a_killed_run_resumes_without_running_finished_steps_again() {
    let killed = killed_at(PLAYBOOK, "waiting", "step two to wait");
    let dir = killed.path().to_path_buf();
    std::fs::write(dir.join("go"), "").expect("write go");
    let id = run_id(&dir);
    let out = lifeboat_in(&dir, &["resume", &id]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let log = read_log(&dir);
    assert_eq!(
        log, "one\ntwo\nthree first-result\n",
        "each step exactly once, the result of one restored"
    );
    let stdout = &out.stdout;
    assert!(
        stdout.contains(&format!(
            "not run again: it completed under run {id}, whose controller was stopped"
        )),
        "step two completed after the kill: its result is adopted\n{stdout}"
    );
}

/// A run that kept its markers in a directory of its own (the host's marker directory
/// was not its user's) is resumed from there, and the resume's success removes that
/// directory.
#[test]
fn a_run_that_kept_its_markers_in_a_directory_of_its_own_resumes_too() {
    let not_a_dir = format!("{}/localhost.markers", support::LOCK_DIR);
    let test = Test::new().file(&not_a_dir, "");
    let killed = killed_in(test, PLAYBOOK, "waiting", "step two to wait");
    let dir = killed.path().to_path_buf();
    let id = run_id(&dir);
    let own = dir.join(support::LOCK_DIR).join(&id);
    assert!(
        own.join("localhost.done").is_file(),
        "no log in {}",
        own.display()
    );
    std::fs::remove_file(dir.join(&not_a_dir)).expect("remove the file");
    std::fs::write(dir.join("go"), "").expect("write go");
    support::wait_for(20, "step two to record its status", || {
        std::fs::read_to_string(own.join("localhost.done"))
            .is_ok_and(|t| t.contains("two@localhost.0 rc 0"))
    });
    let out = lifeboat_in(&dir, &["resume", &id]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(read_log(&dir), "one\ntwo\nthree first-result\n");
    assert!(out.stdout.contains("not run again"), "{}", out.stdout);
    assert!(!own.exists(), "the continued run's directory is left");
}

/// The completion log is on disk, the output on tmpfs: after a restart of the host
/// (here: its scratch directory removed), a command that completed is still not run
/// again, and its adopted result says its output is gone.
#[test]
fn a_completed_command_is_adopted_when_its_output_is_gone() {
    let killed = killed_at(PLAYBOOK, "waiting", "step two to wait");
    let dir = killed.path().to_path_buf();
    std::fs::write(dir.join("go"), "").expect("write go");
    let id = run_id(&dir);
    let m = lifeboat::marker::MarkerPaths::of_host(
        &dir.join(support::LOCK_DIR).to_string_lossy(),
        "localhost",
        &id,
    );
    support::wait_for(20, "step two to record its status", || {
        std::fs::read_to_string(&m.log).is_ok_and(|t| t.contains("two@localhost.0 rc 0"))
    });
    // This run's files in the host's scratch directory (which other tests share).
    let out = Path::new(&m.scratch).join(format!("{}two@localhost.0.out", m.prefix));
    assert!(out.is_file(), "no output file {}", out.display());
    for e in std::fs::read_dir(&m.scratch)
        .expect("the scratch directory")
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with(&m.prefix) {
            std::fs::remove_file(e.path()).expect("remove a scratch file");
        }
    }
    let out = lifeboat_in(&dir, &["resume", &id]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(read_log(&dir), "one\ntwo\nthree first-result\n");
    assert!(out.stdout.contains("not run again"), "{}", out.stdout);
    let journals: String = walk(&dir.join(".lifeboat/runs"))
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    assert!(
        journals.contains("the output of this command is gone: the host restarted since it ran"),
        "the adopted result does not say its output is gone"
    );
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

#[test]
fn a_command_that_died_with_the_controller_runs_again() {
    let killed = killed_at(PLAYBOOK, "waiting", "step two to wait");
    let dir = killed.path().to_path_buf();
    kill_left_commands(&dir);
    std::fs::write(dir.join("go"), "").expect("write go");
    let id = run_id(&dir);
    let out = lifeboat_in(&dir, &["resume", &id]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let log = read_log(&dir);
    assert_eq!(log, "one\ntwo\nthree first-result\n");
    assert!(
        !out.stdout.contains("not run again"),
        "nothing completed step two: it must run again"
    );
}

#[test]
fn resume_refuses_a_changed_playbook_unless_forced() {
    let killed = killed_at(PLAYBOOK, "waiting", "step two to wait");
    let dir = killed.path().to_path_buf();
    kill_left_commands(&dir);
    let id = run_id(&dir);
    let changed = PLAYBOOK.replace("echo two", "echo TWO");
    std::fs::write(dir.join("playbook.yaml"), changed).expect("write");
    std::fs::write(dir.join("go"), "").expect("write go");
    let out = lifeboat_in(&dir, &["resume", &id]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("changed since it ran"));
    let out = lifeboat_in(&dir, &["resume", &id, "--force"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let log = read_log(&dir);
    assert_eq!(log, "one\nTWO\nthree first-result\n");
}

#[test]
fn a_past_run_is_rolled_back_from_its_journal_once() {
    let out = Test::new()
        .relative_playbook()
        .file("go", "")
        .playbook(&PLAYBOOK.replace("echo \"three", "false && echo \"three"))
        .args(&["--no-rollback"])
        .run();
    out.assert_code(3);
    let dir = out.path().to_path_buf();
    let id = run_id(&dir);
    let rb = lifeboat_in(&dir, &["rollback", &id]);
    assert_eq!(rb.code, 0, "{}", rb.stdout);
    let log = read_log(&dir);
    assert_eq!(
        log, "one\ntwo\nundo-two\nundo-one\n",
        "reverse order, from the journal"
    );
    let again = lifeboat_in(&dir, &["rollback", &id]);
    assert_eq!(again.code, 0);
    let log = read_log(&dir);
    assert_eq!(
        log, "one\ntwo\nundo-two\nundo-one\n",
        "a second rollback must not undo twice"
    );
}

#[test]
fn an_unknown_run_id_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = lifeboat_in(dir.path(), &["resume", "nope"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no journal for run nope"));
}

#[test]
fn a_command_still_running_past_the_step_timeout_is_ended_not_run_twice() {
    let playbook = PLAYBOOK.replace(
        "  - id: two\n    needs: one\n",
        "  - id: two\n    needs: one\n    timeout: 3s\n",
    );
    let killed = killed_at(&playbook, "waiting", "step two to wait");
    let dir = killed.path().to_path_buf();
    let id = run_id(&dir);
    // No `go`: the command the killed run started keeps waiting past the timeout.
    let out = lifeboat_in(&dir, &["resume", &id, "--no-rollback"]);
    let stdout = &out.stdout;
    assert_eq!(out.code, 3, "{stdout}");
    let prefix = format!("this command, started by run {id}, was still running (pid ");
    let pid: u32 = stdout
        .split_once(&prefix)
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(pid, _)| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in the message:\n{stdout}"));
    assert!(
        stdout.contains(
            "when the step's timeout (3s) ran out: it was ended, as a timeout ends any command"
        ),
        "{stdout}"
    );
    support::wait_for(10, "the old command to be gone", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    });
    let log = read_log(&dir);
    assert_eq!(log, "one\n", "step two ran");
}

/// Three steps; the second and third wait for `go1` and `go2`.
const CHAIN: &str = r#"
steps:
  - id: s1
    shell: echo s1 >> {{ playbook_dir }}/log
  - id: s2
    needs: s1
    shell: "touch {{ playbook_dir }}/waiting1; while [ ! -e {{ playbook_dir }}/go1 ]; do sleep 0.05; done; echo s2 >> {{ playbook_dir }}/log"
  - id: s3
    needs: s2
    shell: "touch {{ playbook_dir }}/waiting2; while [ ! -e {{ playbook_dir }}/go2 ]; do sleep 0.05; done; echo s3 >> {{ playbook_dir }}/log"
"#;

#[test]
fn a_resume_killed_in_turn_resumes_the_whole_chain() {
    let killed = killed_at(CHAIN, "waiting1", "s2 to wait");
    let dir = killed.path().to_path_buf();
    let first = run_id(&dir);
    std::fs::write(dir.join("go1"), "").expect("go1");
    // The first resume adopts s2 and is killed in turn while s3 waits.
    let mut resume = support::lifeboat_in(&dir)
        .args(["resume", &first])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn();
    support::wait_for(20, "s3 to wait", || dir.join("waiting2").exists());
    resume.kill().expect("kill the resume");
    resume.wait().expect("wait");
    let mut ids: Vec<String> = std::fs::read_dir(dir.join(".lifeboat/runs"))
        .expect("runs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|id| *id != first)
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let second = ids.remove(0);
    std::fs::write(dir.join("go2"), "").expect("go2");
    let out = lifeboat_in(&dir, &["resume", &second]);
    let stdout = &out.stdout;
    assert_eq!(out.code, 0, "{stdout}");
    let log = read_log(&dir);
    assert_eq!(
        log, "s1\ns2\ns3\n",
        "each step once across three runs\n{stdout}"
    );
    assert!(
        stdout.contains(&format!("not run again: it completed under run {second}")),
        "s3 completed under the killed resume: adopted\n{stdout}"
    );
    assert_eq!(
        stdout.matches("done by the resumed run").count(),
        2,
        "s1 (from the first run) and s2 (adopted by the second) are done\n{stdout}"
    );
}

/// A backup and restore playbook with a secret (the restic password, from the environment):
/// gated shell steps around a real restic init, backup and restore.
const SWEEP: &str = r#"
secrets:
  pw: { env: LB_SWEEP_PW }
steps:
  - id: init
    restic: { action: init, repository: "@DIR@/repo", password: "{{ pw }}" }
    rollback: none
  - id: s1
    needs: init
    shell: "touch {{ playbook_dir }}/waiting-s1; while [ ! -e {{ playbook_dir }}/go-s1 ]; do sleep 0.05; done; echo s1 >> {{ playbook_dir }}/log"
    rollback:
      shell: echo undo-s1 >> {{ playbook_dir }}/log
  - id: send
    needs: s1
    restic: { action: backup, repository: "@DIR@/repo", password: "{{ pw }}", paths: ["@DIR@/data"] }
  - id: s2
    needs: send
    shell: "touch {{ playbook_dir }}/waiting-s2; while [ ! -e {{ playbook_dir }}/go-s2 ]; do sleep 0.05; done; echo s2 >> {{ playbook_dir }}/log"
    rollback:
      shell: echo undo-s2 >> {{ playbook_dir }}/log
  - id: s3
    needs: s2
    shell: "touch {{ playbook_dir }}/waiting-s3; while [ ! -e {{ playbook_dir }}/go-s3 ]; do sleep 0.05; done; echo s3 >> {{ playbook_dir }}/log"
    rollback:
      shell: echo undo-s3 >> {{ playbook_dir }}/log
  - id: fetch
    needs: s3
    restic: { action: restore, repository: "@DIR@/repo", password: "{{ pw }}", target: "@DIR@/restored" }
  - id: s4
    needs: fetch
    shell: "touch {{ playbook_dir }}/waiting-s4; while [ ! -e {{ playbook_dir }}/go-s4 ]; do sleep 0.05; done; echo s4 >> {{ playbook_dir }}/log"
    rollback:
      shell: echo undo-s4 >> {{ playbook_dir }}/log
"#;

/// The snapshots restic lists in the sweep's repository.
fn snapshots(dir: &Path) -> usize {
    let out = std::process::Command::new("restic")
        .arg("-r")
        .arg(dir.join("repo"))
        .args(["snapshots", "--json", "--no-lock"])
        .env("RESTIC_PASSWORD_FILE", dir.join("pw"))
        .env("RESTIC_CACHE_DIR", "/tmp/lifeboat-restic-test-cache")
        .output()
        .expect("restic runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .map(|v| v.len())
        .unwrap_or(0)
}

/// Killed with SIGKILL at each gate in turn (before s1's effect, between the backup and
/// s2, between s2 and s3, between the restore and s4): each time `resume` finishes the
/// run, a later `rollback` of it undoes everything (the restored target removed, the
/// snapshot forgotten with the password the journal refers to), every effect happens
/// exactly once, and the secret is nowhere in the state directory.
#[test]
fn killed_at_every_gate_a_run_with_a_secret_resumes_and_rolls_back_exactly_once() {
    const PW: &str = "sw33p-secret 'q' $(x)";
    for gate in ["s1", "s2", "s3", "s4"] {
        let test = Test::new().relative_playbook().env("LB_SWEEP_PW", PW);
        let dir = test.path().to_path_buf();
        // restic's own look at the repository reads the password from a 0600 file.
        let pw = dir.join("pw");
        std::fs::write(&pw, PW).expect("pw");
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        std::fs::create_dir_all(dir.join("data")).expect("data");
        std::fs::write(dir.join("data/keys"), "fernet\n").expect("data file");
        // The gates before this one are open.
        for open in ["s1", "s2", "s3", "s4"].iter().take_while(|g| **g != gate) {
            std::fs::write(dir.join(format!("go-{open}")), "").expect("go");
        }
        let playbook = SWEEP.replace("@DIR@", &dir.display().to_string());
        let killed = killed_in(
            test,
            &playbook,
            &format!("waiting-{gate}"),
            &format!("{gate} to wait"),
        );
        let dir = killed.path().to_path_buf();
        for open in ["s1", "s2", "s3", "s4"] {
            std::fs::write(dir.join(format!("go-{open}")), "").expect("go");
        }
        let first = run_id(&dir);
        // Without the secret the run had: refused, naming it and its source.
        let refused = lifeboat_in(&dir, &["resume", &first]);
        assert_ne!(refused.code, 0, "{gate}: {}", refused.stdout);
        let said = format!("{}{}", refused.stdout, refused.stderr);
        assert!(
            said.contains("secret `pw`: environment variable LB_SWEEP_PW is not set")
                && said.contains(&format!("then run `lifeboat resume {first}` again")),
            "{gate}: {said}"
        );
        let resumed = support::lifeboat_in(&dir)
            .env("LB_SWEEP_PW", PW)
            .args(["resume", &first])
            .run();
        assert_eq!(resumed.code, 0, "{gate}: {}", resumed.stdout);
        assert_eq!(read_log(&dir), "s1\ns2\ns3\ns4\n", "{gate}: each step once");
        assert_eq!(snapshots(&dir), 1, "{gate}: one backup\n{}", resumed.stdout);
        assert!(
            dir.join("restored")
                .join(
                    dir.join("data/keys")
                        .strip_prefix("/")
                        .unwrap_or(Path::new(""))
                )
                .exists(),
            "{gate}: restored\n{}",
            resumed.stdout
        );
        let last = support::run_ids(&dir).pop().unwrap_or_default();
        assert_ne!(last, first);
        let undone = support::lifeboat_in(&dir)
            .env("LB_SWEEP_PW", PW)
            .args(["rollback", &last])
            .run();
        assert_eq!(undone.code, 0, "{gate}: {}", undone.stdout);
        assert_eq!(
            read_log(&dir),
            "s1\ns2\ns3\ns4\nundo-s4\nundo-s3\nundo-s2\nundo-s1\n",
            "{gate}: each undone once, in reverse\n{}",
            undone.stdout
        );
        assert_eq!(
            snapshots(&dir),
            0,
            "{gate}: the backup forgotten\n{}",
            undone.stdout
        );
        for f in walk(&dir.join(".lifeboat")) {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            assert!(
                !text.contains("sw33p-secret"),
                "{gate}: the secret in {}",
                f.display()
            );
        }
        kill_left_commands(&dir);
    }
}
