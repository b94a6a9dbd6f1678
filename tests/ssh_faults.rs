//! Runs that lose a host half-way, against real OpenSSH servers on loopback (see
//! `support/sshd.rs`): the `lifeboat` binary runs a playbook over two sshd hosts; while a
//! step runs on the first, its sshd connection is killed, reset (a TCP RST), or its whole
//! sshd is stopped (SIGSTOP) or killed (the host dies). The failure names the host, later
//! steps do not start, the other host is rolled back, nothing hangs, the journal records
//! it, and the console says what to do next.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/sshd.rs"]
mod sshd;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use binary::Lifeboat;
use nix::sys::signal::Signal;
use serde_json::Value;
use sshd::{Sshd, USER};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// `prepare` changes a file on both hosts; `long` runs on `first` only (and writes its
/// pid, then waits); `later` on both waits for it.
fn playbook(step_timeout: Option<&str>) -> String {
    let timeout = step_timeout
        .map(|t| format!("    timeout: {t}\n"))
        .unwrap_or_default();
    format!(
        r#"
name: lose-a-host
hosts: all
vars:
  dir: "{{{{ base }}}}/{{{{ inventory_hostname }}}}"
steps:
  - id: prepare
    copy:
      content: "new\n"
      dest: "{{{{ dir }}}}/state.txt"
  - id: long
    needs: prepare
    hosts: first
{timeout}    shell: echo $$ > {{{{ base }}}}/long.pid; exec sleep 20
  - id: later
    needs: long
    file:
      path: "{{{{ dir }}}}/later"
      state: touch
"#
    )
}

struct Fixture {
    first: Sshd,
    second: Sshd,
    dir: tempfile::TempDir,
    base: PathBuf,
}

fn fixture(addrs: [&str; 2], step_timeout: Option<&str>, host_vars: &str) -> (Fixture, Child) {
    fixture_with(addrs, step_timeout, host_vars, None)
}

/// [`fixture`], with an ssh config file for the client (`None`: none read).
fn fixture_with(
    addrs: [&str; 2],
    step_timeout: Option<&str>,
    host_vars: &str,
    ssh_config: Option<&str>,
) -> (Fixture, Child) {
    let first = ok(Sshd::start(addrs[0]));
    let second = ok(Sshd::start(addrs[1]));
    let dir = ok(tempfile::tempdir());
    ok(std::fs::set_permissions(
        dir.path(),
        std::fs::Permissions::from_mode(0o755),
    ));
    let base = dir.path().join("base");
    let (uid, gid) = (id("-u"), id("-g"));
    for sub in ["", "first", "second"] {
        let d = base.join(sub);
        ok(std::fs::create_dir_all(&d));
        ok(std::os::unix::fs::chown(&d, Some(uid), Some(gid)));
        if !sub.is_empty() {
            ok(std::fs::write(d.join("state.txt"), "old\n"));
            ok(std::os::unix::fs::chown(
                d.join("state.txt"),
                Some(uid),
                Some(gid),
            ));
        }
    }
    ok(std::fs::write(
        dir.path().join("playbook.yml"),
        playbook(step_timeout),
    ));
    let mut inv = String::new();
    for (name, s) in [("first", &first), ("second", &second)] {
        inv.push_str(&format!(
            "{name} ansible_host={} ansible_port={} ansible_user={USER} ansible_ssh_private_key_file={} lifeboat_known_hosts={} {host_vars}\n",
            s.addr,
            s.port,
            s.ed25519_key.display(),
            s.known_hosts.display()
        ));
    }
    ok(std::fs::write(dir.path().join("hosts.ini"), inv));
    let config = match ssh_config {
        Some(text) => {
            let path = dir.path().join("ssh_config");
            ok(std::fs::write(&path, text));
            path.display().to_string()
        }
        None => "none".to_string(),
    };
    let child = Lifeboat::new(dir.path())
        .lock_dir(base.join("locks"))
        .home(dir.path())
        .ssh_config(config)
        .arg("run")
        .arg(dir.path().join("playbook.yml"))
        .arg("-i")
        .arg(dir.path().join("hosts.ini"))
        .arg("-e")
        .arg(format!("base={}", base.display()))
        .arg("--events")
        .arg(dir.path().join("events"))
        .spawn();
    (
        Fixture {
            first,
            second,
            dir,
            base,
        },
        child,
    )
}

fn id(flag: &str) -> u32 {
    let out = ok(Command::new("id").args([flag, USER]).output());
    ok(String::from_utf8_lossy(&out.stdout).trim().parse())
}

/// The pid `long` wrote once it runs.
fn long_pid(base: &Path) -> u32 {
    let file = base.join("long.pid");
    let mut pid = None;
    let started = sshd::wait_until(Duration::from_secs(30), || {
        pid = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        pid.is_some()
    });
    assert!(started, "the long step never started");
    pid.unwrap_or_default()
}

/// Waits for the run to end (at most `limit`); its exit code and output.
fn finish(mut child: Child, limit: Duration) -> (i32, String) {
    let ended = sshd::wait_until(limit, || matches!(child.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = child.kill();
    }
    let out = ok(child.wait_with_output());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ended, "the run did not end within {limit:?}:\n{text}");
    (out.status.code().unwrap_or(-1), text)
}

/// Waits (at most 40 s) for the run to end and kills the `long` command (`pid`) it
/// left on the first host: the exit code, the console and the events.
fn ended(f: &Fixture, child: Child, pid: u32) -> (i32, String, Vec<Value>) {
    let (code, text) = finish(child, Duration::from_secs(40));
    sshd::signal(pid, Signal::SIGKILL);
    (code, text, events(f.dir.path()))
}

/// The `node_finish` of `long` on the first host, which failed.
fn long_failed(ev: &[Value]) -> &Value {
    let long = find(ev, "node_finish", "long", "first").unwrap_or_else(|| panic!("{ev:#?}"));
    assert_eq!(long["status"], "failed", "{long}");
    long
}

/// The per-connection sshd processes of a host (not its listener).
fn connections(host: &Sshd) -> Vec<u32> {
    host.descendants()
        .into_iter()
        .filter(|p| is_sshd(*p))
        .collect()
}

fn events(dir: &Path) -> Vec<Value> {
    ok(std::fs::read_to_string(dir.join("events")))
        .lines()
        .map(|l| ok(serde_json::from_str::<Value>(l)))
        .collect()
}

fn find<'a>(events: &'a [Value], event: &str, step: &str, host: &str) -> Option<&'a Value> {
    events
        .iter()
        .find(|v| v["event"] == event && v["step"] == step && v["host"] == host)
}

fn is_sshd(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sshd")
}

/// What both fault tests expect of the events and of the second host.
fn common_checks(f: &Fixture, ev: &[Value], text: &str) {
    // The later step never started anywhere.
    assert!(
        !ev.iter()
            .any(|v| v["event"] == "node_start" && v["step"] == "later"),
        "{text}"
    );
    // The second host was rolled back: its file is as before.
    let rb = find(ev, "rollback_node", "prepare", "second");
    assert_eq!(
        rb.map(|v| v["status"].clone()),
        Some("done".into()),
        "{ev:#?}"
    );
    assert_eq!(
        ok(std::fs::read_to_string(f.base.join("second/state.txt"))),
        "old\n"
    );
    assert!(!f.base.join("second/later").exists());
    assert!(
        f.second.log().contains("Accepted publickey"),
        "{}",
        f.second.log()
    );
}

#[test]
fn a_killed_connection_fails_the_step_naming_the_host_and_the_run_rolls_back() {
    let started = Instant::now();
    let (f, child) = fixture(["127.0.0.60", "127.0.0.61"], None, "");
    let pid = long_pid(&f.base);
    // Kill the first host's per-connection sshd processes (not its listener), as an
    // sshd crash or an OOM kill would.
    let procs = connections(&f.first);
    assert!(!procs.is_empty());
    for p in procs {
        sshd::signal(p, Signal::SIGKILL);
    }
    let (code, text, ev) = ended(&f, child, pid);
    // A step failed and the rollback completed: exit 2.
    assert_eq!(code, 2, "{text}\n{ev:#?}");
    let msg = long_failed(&ev)["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("first ("), "{msg}");
    assert!(
        msg.contains(&format!("{}:{}", f.first.addr, f.first.port)),
        "{msg}"
    );
    assert!(msg.contains("connection was lost"), "{msg}");
    common_checks(&f, &ev, &text);
    // The first host's listener still answers: its change is undone on a new connection.
    let rb = find(&ev, "rollback_node", "prepare", "first");
    assert_eq!(rb.map(|v| v["status"].clone()), Some("done".into()));
    assert_eq!(
        ok(std::fs::read_to_string(f.base.join("first/state.txt"))),
        "old\n"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_stopped_sshd_times_the_step_out_and_the_run_rolls_back_without_hanging() {
    let started = Instant::now();
    let (f, child) = fixture(
        ["127.0.0.62", "127.0.0.63"],
        Some("2s"),
        "ansible_ssh_timeout=2",
    );
    let pid = long_pid(&f.base);
    // The whole sshd of the first host stops answering: listener and connection.
    let mut frozen = vec![f.first.pid()];
    frozen.extend(connections(&f.first));
    for p in &frozen {
        sshd::signal(*p, Signal::SIGSTOP);
    }
    let (code, text, ev) = ended(&f, child, pid);
    for p in &frozen {
        sshd::signal(*p, Signal::SIGCONT);
    }
    let msg = long_failed(&ev)["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("timed out"), "{msg}");
    common_checks(&f, &ev, &text);
    // The first host cannot be reached for its own rollback: that is reported (exit 3,
    // rollback incomplete), naming the host and the connect timeout, not waited on.
    assert_eq!(code, 3, "{text}\n{ev:#?}");
    let rb = find(&ev, "rollback_node", "prepare", "first");
    let rb = rb.unwrap_or_else(|| panic!("{ev:#?}"));
    assert_eq!(rb["status"], "failed", "{rb}");
    let why = rb["msg"].as_str().unwrap_or_default();
    assert!(why.contains(&f.first.addr), "{why}");
    assert!(started.elapsed() < Duration::from_secs(45));
}

/// The run's journal records.
fn journal(dir: &Path) -> Vec<Value> {
    let runs = dir.join("state/runs");
    let run = ok(std::fs::read_dir(&runs))
        .flatten()
        .map(|e| e.path())
        .next()
        .unwrap_or_else(|| panic!("no run in {}", runs.display()));
    ok(std::fs::read_to_string(run.join("journal.jsonl")))
        .lines()
        .map(|l| ok(serde_json::from_str::<Value>(l)))
        .collect()
}

fn record<'a>(journal: &'a [Value], kind: &str, step: &str, host: &str) -> &'a Value {
    journal
        .iter()
        .find(|v| v["record"] == kind && v["step"] == step && v["host"] == host)
        .unwrap_or_else(|| panic!("no journal {kind} for {step} on {host}: {journal:#?}"))
}

/// Asserts the status of journal records: (record, step, host, status).
fn assert_journal(dir: &Path, expected: &[(&str, &str, &str, &str)]) {
    let j = journal(dir);
    for (kind, step, host, status) in expected {
        assert_eq!(record(&j, kind, step, host)["status"], *status);
    }
}

/// The console's advice line.
fn next_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("next: "))
        .unwrap_or_else(|| panic!("no advice in:\n{text}"))
}

/// The receive queue of the server side of TCP connections to `addr:port`, from
/// /proc/net/tcp (IPv4 loopback addresses only).
fn server_rx_queues(addr: &str, port: u16) -> Vec<u64> {
    let octets: Vec<u8> = addr.split('.').filter_map(|o| o.parse().ok()).collect();
    let local = format!(
        "{:02X}{:02X}{:02X}{:02X}:{port:04X}",
        octets[3], octets[2], octets[1], octets[0]
    );
    ok(std::fs::read_to_string("/proc/net/tcp"))
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local, remote, state 01 = established, tx:rx queues
            (f.len() > 4 && f[1] == local && f[3] == "01")
                .then(|| {
                    f[4].split(':')
                        .nth(1)
                        .and_then(|rx| u64::from_str_radix(rx, 16).ok())
                })
                .flatten()
        })
        .collect()
}

#[test]
fn a_reset_connection_fails_the_step_and_the_host_is_rolled_back_on_a_new_one() {
    let started = Instant::now();
    // Keepalives every second: something arrives for the server while it is stopped.
    let (f, child) = fixture_with(
        ["127.0.0.64", "127.0.0.65"],
        None,
        "",
        Some("Host *\n  ServerAliveInterval 1\n"),
    );
    let pid = long_pid(&f.base);
    let procs = connections(&f.first);
    assert!(!procs.is_empty());
    // Stop the connection's sshd processes until a keepalive sits unread in their
    // socket, then kill them: closing a socket with unread data sends a TCP RST.
    for p in &procs {
        sshd::signal(*p, Signal::SIGSTOP);
    }
    let unread = sshd::wait_until(Duration::from_secs(20), || {
        server_rx_queues(&f.first.addr, f.first.port)
            .iter()
            .any(|q| *q > 0)
    });
    assert!(unread, "no keepalive reached the stopped sshd");
    for p in &procs {
        sshd::signal(*p, Signal::SIGKILL);
    }
    let (code, text, ev) = ended(&f, child, pid);
    assert_eq!(code, 2, "{text}\n{ev:#?}");
    let msg = long_failed(&ev)["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("{}:{}", f.first.addr, f.first.port)),
        "{msg}"
    );
    assert!(msg.contains("connection was lost"), "{msg}");
    common_checks(&f, &ev, &text);
    // The listener still answers: the first host's change is undone on a new connection.
    assert_eq!(
        ok(std::fs::read_to_string(f.base.join("first/state.txt"))),
        "old\n"
    );
    assert_journal(
        f.dir.path(),
        &[
            ("node_finish", "long", "first", "failed"),
            ("rollback_node", "prepare", "first", "done"),
        ],
    );
    assert_eq!(
        next_line(&text),
        "next: check that first is up and reachable over SSH (address, port, user, key), then \
         run the playbook again"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_host_that_dies_mid_step_is_left_undone_and_the_console_says_how_to_finish() {
    let started = Instant::now();
    let (f, child) = fixture(["127.0.0.66", "127.0.0.67"], None, "ansible_ssh_timeout=2");
    let pid = long_pid(&f.base);
    // The whole host goes: its sshd listener and every connection.
    let mut all = vec![f.first.pid()];
    all.extend(connections(&f.first));
    for p in &all {
        sshd::signal(*p, Signal::SIGKILL);
    }
    let (code, text, ev) = ended(&f, child, pid);
    // Its own change cannot be undone: exit 3, and it says so.
    assert_eq!(code, 3, "{text}\n{ev:#?}");
    let long = long_failed(&ev);
    assert!(
        long["msg"]
            .as_str()
            .is_some_and(|m| m.contains("connection was lost")),
        "{long}"
    );
    common_checks(&f, &ev, &text);
    let rb = find(&ev, "rollback_node", "prepare", "first").unwrap_or_else(|| panic!("{ev:#?}"));
    assert_eq!(rb["status"], "failed");
    assert!(
        rb["msg"]
            .as_str()
            .is_some_and(|m| m.contains("cannot connect")),
        "{rb}"
    );
    assert_eq!(
        ok(std::fs::read_to_string(f.base.join("first/state.txt"))),
        "new\n",
        "nothing could undo it"
    );
    assert_journal(
        f.dir.path(),
        &[
            ("node_finish", "long", "first", "failed"),
            ("rollback_node", "prepare", "first", "failed"),
            ("rollback_node", "prepare", "second", "done"),
        ],
    );
    let run_id = ev
        .iter()
        .find(|e| e["event"] == "run_start")
        .and_then(|e| e["run_id"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("left undone: prepare [first]"), "{text}");
    assert_eq!(
        next_line(&text),
        format!(
            "next: check that first is up and reachable over SSH (address, port, user, key), then \
             run `lifeboat rollback {run_id}` to undo what is left; what is already undone is not \
             undone again"
        )
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
