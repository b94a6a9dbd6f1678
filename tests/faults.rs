//! Faults, end to end with the real binary: a full disk on the backup host (a small
//! tmpfs mounted for the test), a rollback step that itself fails (exit 3, exactly what
//! is left undone, and `lifeboat rollback RUN_ID` finishing the job once the cause is
//! fixed), a command that never ends (killed at its timeout with its whole process
//! group), and hosts unreachable at start (a closed port, a listener that never
//! answers). In each: no hang (every run has a deadline), the journal under the state
//! directory records what happened, and the console says what to do next.
//! SSH faults in the middle of a step are in `ssh_faults.rs`.

#[path = "support/binary.rs"]
mod binary;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use binary::Lifeboat;
use serde_json::Value;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A finished run: exit code, console, events and journal records.
struct Run {
    code: i32,
    console: String,
    events: Vec<Value>,
    journal: Vec<Value>,
    took: Duration,
}

impl Run {
    fn event(&self, kind: &str, step: &str, host: &str) -> &Value {
        self.events
            .iter()
            .find(|e| e["event"] == kind && e["step"] == step && e["host"] == host)
            .unwrap_or_else(|| panic!("no {kind} for {step} on {host}\n{}", self.console))
    }

    fn record(&self, kind: &str, step: &str, host: &str) -> &Value {
        self.journal
            .iter()
            .find(|e| e["record"] == kind && e["step"] == step && e["host"] == host)
            .unwrap_or_else(|| {
                panic!(
                    "no journal {kind} for {step} on {host}\n{:#?}\n{}",
                    self.journal, self.console
                )
            })
    }

    fn run_end(&self) -> &Value {
        self.journal
            .iter()
            .find(|e| e["record"] == "run_end")
            .unwrap_or_else(|| panic!("no run_end in the journal\n{}", self.console))
    }

    /// The console's advice line.
    fn next(&self) -> &str {
        self.console
            .lines()
            .find(|l| l.starts_with("next: "))
            .unwrap_or_else(|| panic!("no advice\n{}", self.console))
    }

    fn run_id(&self) -> String {
        self.events
            .iter()
            .find(|e| e["event"] == "run_start")
            .and_then(|e| e["run_id"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

/// Runs `lifeboat ARGS` in `dir` with its own state dir, at most `limit`.
fn lifeboat(dir: &Path, args: &[&str], limit: Duration) -> Run {
    let started = Instant::now();
    let events = dir.join(format!("events-{}.jsonl", started.elapsed().as_nanos()));
    let state = dir.join("state");
    let before: Vec<PathBuf> = journals(&state);
    let mut cmd = Lifeboat::new(dir).args(args).timeout(limit);
    if matches!(args.first(), Some(&"run") | Some(&"drill")) {
        cmd = cmd.arg("--events").arg(&events);
    }
    let out = cmd.run();
    let took = started.elapsed();
    let console = out.console();
    // The run's own journal: the one that was not there before.
    let journal = journals(&state)
        .into_iter()
        .find(|p| !before.contains(p))
        .map(|p| {
            ok(std::fs::read_to_string(p))
                .lines()
                .map(|l| ok(serde_json::from_str(l)))
                .collect()
        })
        .unwrap_or_default();
    let events = std::fs::read_to_string(&events)
        .map(|t| t.lines().map(|l| ok(serde_json::from_str(l))).collect())
        .unwrap_or_default();
    Run {
        code: out.code,
        console,
        events,
        journal,
        took,
    }
}

fn journals(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("runs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("journal.jsonl"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

fn tempdir() -> tempfile::TempDir {
    ok(tempfile::Builder::new().prefix("lifeboat-faults").tempdir())
}

// ------------------------------------------------------------------ full disk

/// A small tmpfs, unmounted on drop (lazily if something still holds it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        ok(std::fs::create_dir_all(at));
        let status = ok(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=1777"),
                "tmpfs",
            ])
            .arg(at)
            .status());
        assert!(
            status.success(),
            "mount a tmpfs at {} (tests run as root)",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

const FULL_DISK: &str = r#"
name: backup-to-a-full-disk
steps:
  - id: copy-dump
    copy: { src: src/dump.bin, dest: "{{ playbook_dir }}/backup/dump.bin" }
    ignore_errors: true
  - id: archive-etc
    archive: { src: ["{{ playbook_dir }}/src/etc"], dest: "{{ playbook_dir }}/backup/etc.tar" }
    ignore_errors: true
  - id: sync-data
    needs: [copy-dump, archive-etc]
    rsync: { src: "{{ playbook_dir }}/src/etc/", dest: "{{ playbook_dir }}/backup/etc-copy" }
    rollback:
      file: { path: "{{ playbook_dir }}/backup/etc-copy", state: absent }
  - id: after
    needs: sync-data
    shell: touch {{ playbook_dir }}/after-ran
"#;

#[test]
fn a_full_disk_fails_the_backup_names_it_and_leaves_no_partial_output() {
    let tmp = tempdir();
    let dir = tmp.path();
    let backup = Tmpfs::mount(&dir.join("backup"), "1m");
    ok(std::fs::create_dir_all(dir.join("src/etc")));
    ok(std::fs::write(dir.join("src/dump.bin"), vec![7u8; 3 << 20]));
    for i in 0..6 {
        // Incompressible enough that no file system trick makes it fit.
        let data: Vec<u8> = (0..400_000u32)
            .map(|n| (n.wrapping_mul(2_654_435_761).wrapping_add(i) >> 13) as u8)
            .collect();
        ok(std::fs::write(dir.join(format!("src/etc/f{i}")), data));
    }
    ok(std::fs::write(dir.join("playbook.yml"), FULL_DISK));
    let run = lifeboat(dir, &["run", "playbook.yml"], Duration::from_secs(60));
    let all = format!("exit {}\n{}", run.code, run.console);
    // A step failed and the rollback completed.
    assert_eq!(run.code, 2, "{all}");
    assert!(run.took < Duration::from_secs(30), "took {:?}", run.took);
    for step in ["copy-dump", "archive-etc", "sync-data"] {
        let e = run.event("node_finish", step, "localhost");
        let text = format!("{} {}", e["msg"], e["stderr"]);
        // GNU tar reports the short write, not the errno.
        assert!(
            text.contains("No space left on device")
                || (step == "archive-etc" && text.contains("Wrote only")),
            "{step}: {text}"
        );
        // The journal says the same.
        let r = run.record("node_finish", step, "localhost");
        let status = r["status"].as_str().unwrap_or_default();
        assert!(status == "failed" || status == "ignored", "{step}: {r}");
        assert!(
            r["result"]["msg"]
                .as_str()
                .is_some_and(|m| m.contains("No space left on device") || m.contains("Wrote only")),
            "{step}: {r}"
        );
    }
    assert_eq!(
        run.record("rollback_node", "sync-data", "localhost")["status"],
        "done"
    );
    assert_eq!(run.run_end()["exit_code"], 2);
    assert!(
        !dir.join("after-ran").exists(),
        "a step after the failure ran"
    );
    // Nothing partial is left on the full disk: copy's and archive's temporary files are
    // gone, and the rollback removed what rsync managed to write.
    let left: Vec<String> = ok(std::fs::read_dir(&backup.0))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left on the full disk: {left:?}\n{all}");
    assert_eq!(
        run.next(),
        "next: free space on localhost: its disk is full, then run the playbook again",
        "{all}"
    );
}

// ------------------------------------------------------------------ failed rollback

const ROLLBACK_FAILS: &str = r#"
name: rollback-fails
steps:
  - id: base
    shell: echo base >> {{ playbook_dir }}/log
    rollback:
      shell: echo undo-base >> {{ playbook_dir }}/log
  - id: config
    needs: base
    shell: echo config >> {{ playbook_dir }}/log
    rollback:
      shell: |
        test -f {{ playbook_dir }}/fixed || { echo "cannot restore the config: its backup is locked" >&2; exit 3; }
        echo undo-config >> {{ playbook_dir }}/log
  - id: side
    shell: echo side >> {{ playbook_dir }}/log
    rollback:
      shell: echo undo-side >> {{ playbook_dir }}/log
  - id: verify
    needs: [config, side]
    shell: echo "verification failed" >&2; exit 1
"#;

fn log_lines(dir: &Path) -> Vec<String> {
    ok(std::fs::read_to_string(dir.join("log")))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_failed_rollback_exits_3_says_exactly_what_is_left_and_can_be_finished_later() {
    let tmp = tempdir();
    let dir = tmp.path();
    ok(std::fs::write(dir.join("playbook.yml"), ROLLBACK_FAILS));
    let run = lifeboat(dir, &["run", "playbook.yml"], Duration::from_secs(60));
    let all = format!("exit {}\n{}", run.code, run.console);
    assert_eq!(run.code, 3, "{all}");
    // Exactly what is left undone, and why: the node whose rollback failed, and the node
    // whose rollback had to wait for it. `side` was undone.
    let finish = run
        .events
        .iter()
        .find(|e| e["event"] == "rollback_finish")
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(finish["complete"], false);
    let left: Vec<(String, String)> = finish["left_undone"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|x| {
                    (
                        x[0].as_str().unwrap_or_default().to_string(),
                        x[2].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(left[0].0, "config");
    assert!(left[0].1.starts_with("its rollback failed"), "{left:?}");
    assert!(
        left[0]
            .1
            .contains("cannot restore the config: its backup is locked"),
        "{left:?}"
    );
    assert_eq!(
        left[1],
        (
            "base".to_string(),
            "waits for the failed rollback of `config` on localhost".to_string()
        )
    );
    let mut ran: Vec<String> = log_lines(dir).into_iter().take(3).collect();
    ran.sort();
    assert_eq!(ran, ["base", "config", "side"]);
    let log = log_lines(dir);
    assert!(log.contains(&"undo-side".to_string()), "{log:?}");
    assert!(
        !log.iter().any(|l| l == "undo-config" || l == "undo-base"),
        "{log:?}"
    );
    // The console lists them and says what to do.
    assert!(
        all.contains("rollback incomplete: 2 nodes left undone"),
        "{all}"
    );
    let id = run.run_id();
    assert_eq!(
        run.next(),
        format!(
            "next: fix what made the rollback fail (shown above), then run `lifeboat rollback {id}` \
             to undo what is left; what is already undone is not undone again"
        ),
        "{all}"
    );
    // The journal records each compensation and the end.
    assert_eq!(
        run.record("rollback_node", "config", "localhost")["status"],
        "failed"
    );
    assert_eq!(
        run.record("rollback_node", "base", "localhost")["status"],
        "left_undone"
    );
    assert_eq!(
        run.record("rollback_node", "side", "localhost")["status"],
        "done"
    );
    assert_eq!(run.run_end()["exit_code"], 3);
    assert_eq!(run.run_end()["outcome"], "rollback_incomplete");

    // Doing what it says: fix the cause, roll the run back again.
    ok(std::fs::write(dir.join("fixed"), ""));
    let again = lifeboat(dir, &["rollback", &id], Duration::from_secs(60));
    assert_eq!(again.code, 0, "{}", again.console);
    let log = log_lines(dir);
    let undo: Vec<&String> = log.iter().filter(|l| l.starts_with("undo-")).collect();
    assert_eq!(
        undo,
        ["undo-side", "undo-config", "undo-base"],
        "{log:?}\n{}",
        again.console
    );
}

// ------------------------------------------------------------------ a command that never ends

#[test]
fn a_command_that_never_ends_is_killed_with_its_process_group_at_its_timeout() {
    let tmp = tempdir();
    let dir = tmp.path();
    ok(std::fs::write(
        dir.join("playbook.yml"),
        r#"
name: never-ends
steps:
  - id: hang
    timeout: 1s
    shell: |
      echo $$ > {{ playbook_dir }}/pids
      sh -c 'trap "" TERM INT HUP; while :; do :; done' &
      echo $! >> {{ playbook_dir }}/pids
      sleep 1000 &
      echo $! >> {{ playbook_dir }}/pids
      wait
"#,
    ));
    let run = lifeboat(dir, &["run", "playbook.yml"], Duration::from_secs(30));
    let all = format!("exit {}\n{}", run.code, run.console);
    assert_eq!(run.code, 2, "{all}");
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
    let e = run.event("node_finish", "hang", "localhost");
    assert_eq!(e["status"], "failed");
    assert!(
        e["msg"]
            .as_str()
            .is_some_and(|m| m.contains("timed out after 1s")),
        "{e}"
    );
    let r = run.record("node_finish", "hang", "localhost");
    assert_eq!(r["status"], "failed");
    assert!(
        r["result"]["msg"]
            .as_str()
            .is_some_and(|m| m.contains("timed out")),
        "{r}"
    );
    // Every process of the step is gone (even the one that ignores SIGTERM).
    let pids: Vec<u32> = ok(std::fs::read_to_string(dir.join("pids")))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let alive = |p: &u32| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| !s.contains(") Z "))
    };
    while pids.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<&u32> = pids.iter().filter(|p| alive(p)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
    assert_eq!(
        run.next(),
        "next: find out why `hang` on localhost ran past its timeout, or raise its `timeout:`, \
         then run the playbook again"
    );
}

// ------------------------------------------------------------------ unreachable at start

#[test]
fn hosts_unreachable_at_start_fail_fast_and_the_rest_is_rolled_back() {
    let tmp = tempdir();
    let dir = tmp.path();
    // A port nobody listens on, and a listener that accepts and then never says a word.
    let closed = {
        let l = ok(TcpListener::bind("127.0.0.1:0"));
        ok(l.local_addr()).port()
    };
    let silent = ok(TcpListener::bind("127.0.0.1:0"));
    let silent_port = ok(silent.local_addr()).port();
    ok(std::fs::write(
        dir.join("hosts.ini"),
        format!(
            "[db]\nrefused ansible_host=127.0.0.1 ansible_port={closed} ansible_user=lifeboat-test ansible_ssh_timeout=2\nsilent ansible_host=127.0.0.1 ansible_port={silent_port} ansible_user=lifeboat-test ansible_ssh_timeout=2\n[local]\nhere ansible_connection=local\n"
        ),
    ));
    ok(std::fs::write(
        dir.join("playbook.yml"),
        r#"
name: unreachable
steps:
  - id: prepare
    hosts: local
    shell: echo prepared > {{ playbook_dir }}/prepared
    rollback:
      shell: rm {{ playbook_dir }}/prepared
  - id: dump
    hosts: db
    shell: echo dumping
  - id: after
    needs: [prepare, dump]
    hosts: local
    shell: touch {{ playbook_dir }}/after
"#,
    ));
    let run = lifeboat(
        dir,
        &["run", "playbook.yml", "-i", "hosts.ini"],
        Duration::from_secs(60),
    );
    drop(silent);
    let all = format!("exit {}\n{}", run.code, run.console);
    assert_eq!(run.code, 2, "{all}");
    // The silent host costs its connect timeout, no more.
    assert!(
        run.took < Duration::from_secs(15),
        "took {:?}\n{all}",
        run.took
    );
    let refused = run.event("node_finish", "dump", "refused");
    assert_eq!(refused["status"], "failed");
    let msg = refused["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("127.0.0.1:{closed}")) && msg.contains("refused"),
        "{msg}"
    );
    let silent_end = run.event("node_finish", "dump", "silent");
    assert_eq!(silent_end["status"], "failed", "{silent_end}");
    let msg = silent_end["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("no answer within 2s"), "{msg}");
    for host in ["refused", "silent"] {
        let r = run.record("node_finish", "dump", host);
        assert_eq!(r["status"], "failed", "{r}");
        assert!(
            r["result"]["msg"]
                .as_str()
                .is_some_and(|m| m.contains("cannot connect")),
            "{r}"
        );
    }
    // What ran elsewhere is undone, and nothing after the failure started.
    assert_eq!(
        run.record("rollback_node", "prepare", "here")["status"],
        "done"
    );
    assert!(!dir.join("after").exists(), "a step after the failure ran");
    assert!(!dir.join("prepared").exists(), "prepare was not undone");
    assert!(
        run.next().starts_with("next: check that ")
            && run.next().contains(" is up and reachable over SSH (address, port, user, key), then run the playbook again"),
        "{all}"
    );
}
