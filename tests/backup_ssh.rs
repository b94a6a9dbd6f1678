//! The backup modules over SSH, through the real `lifeboat` binary with playbooks and
//! an INI inventory of loopback sshd hosts (see `support/sshd.rs`): every host is this
//! machine, reached as the login user `lifeboat-test`, so the tests can look at the
//! files and processes the runs leave.
//!
//! - rsync from one sshd host to another (`dest_host`) with `link_dest` snapshots;
//! - rsync push and pull between the controller and an sshd host, dry run, rollback,
//!   known_hosts from the controller's environment, and become at the far end;
//! - a daemon managed with `manager: command`: stop, start, and rollback, seen by pids;
//! - manifest, archive, move_aside, unarchive and verify_manifest as a restore, and
//!   move_aside's rollback;
//! - prune on an sshd host.
//!
//! What `rsync` with `dest_host` needs (the ssh runs ON the source host, as its login
//! user, with the dest host's inventory variables): the file named by the dest host's
//! `ansible_ssh_private_key_file` must exist on the source host and be readable by the
//! source host's login user only (ssh refuses a key others can read); the file named by
//! `lifeboat_known_hosts` must exist there with the dest host's key as the source host
//! reaches it (`[ansible_host]:ansible_port`), or the ssh fails (BatchMode, no prompt);
//! `ansible_host` must be an address the source host can reach. The controller uses the
//! same variables for its own connection to the dest host, so here the key is a copy
//! owned by the login user (root on the controller reads it too).

#[path = "support/binary.rs"]
mod binary;
#[path = "fixtures/backup_ssh/harness.rs"]
mod harness;
#[path = "support/sshd.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{
    Runner, chmod, fill, give, host_line, lifeboat, login_ids, ok, s, user_dir, workdir,
};
use sshd::{Sshd, wait_until};

fn write(p: &Path, content: &str) {
    if let Some(d) = p.parent() {
        ok(std::fs::create_dir_all(d));
    }
    ok(std::fs::write(p, content));
}

/// Writes files under `root` and gives the whole tree to the login user.
fn user_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        write(&root.join(rel), content);
    }
    harness::sh(&format!(
        "chown -R {}:{} {}",
        login_ids().0,
        login_ids().1,
        shlex::try_quote(&s(root)).expect("quotable")
    ));
}

/// Everything observable about a tree: kind, mode, content.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in ok(std::fs::read_dir(&dir)) {
            let path = ok(entry).path();
            let meta = ok(std::fs::symlink_metadata(&path));
            let mode = meta.mode() & 0o7777;
            let desc = if meta.file_type().is_symlink() {
                format!("link {}", s(&ok(std::fs::read_link(&path))))
            } else if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {mode:o}")
            } else {
                format!(
                    "file {mode:o} {}",
                    String::from_utf8_lossy(&ok(std::fs::read(&path)))
                )
            };
            out.insert(ok(path.strip_prefix(root)).to_path_buf(), desc);
        }
    }
    out
}

/// An sshd host at `addr`, a working directory, and an inventory naming the host `name`
/// in `group`.
fn one_host(addr: &str, group: &str, name: &str) -> (Sshd, tempfile::TempDir, String) {
    let host = ok(Sshd::start(addr));
    let inventory = format!("[{group}]\n{}", host_line(name, &host, ""));
    (host, workdir(), inventory)
}

fn inode(p: &Path) -> u64 {
    ok(std::fs::metadata(p)).ino()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = ok(std::fs::read_dir(dir))
        .map(|e| ok(e).file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- rsync host to host

const SNAPSHOTS: &str = r#"
name: rsync-host-to-host
hosts: src1
steps:
  - id: snap1
    rsync:
      src: @SRC@/
      dest: @SNAPS@/s1
      dest_host: dest1
      hardlinks: true
      exclude: ["*.tmp"]
  - id: change
    needs: snap1
    shell: printf 'v2 longer\n' > @SRC@/changes.img
  - id: snap2
    needs: change
    rsync:
      src: @SRC@/
      dest: @SNAPS@/s2
      dest_host: dest1
      link_dest: ../s1
      hardlinks: true
      exclude: ["*.tmp"]
  - id: snap2-again
    needs: snap2
    rsync:
      src: @SRC@/
      dest: @SNAPS@/s2
      dest_host: dest1
      link_dest: ../s1
      hardlinks: true
      exclude: ["*.tmp"]
  - id: inodes
    needs: snap2-again
    hosts: dest1
    command: stat -c '%i %n' @SNAPS@/s1/same.img @SNAPS@/s2/same.img @SNAPS@/s1/changes.img @SNAPS@/s2/changes.img
"#;

#[test]
fn rsync_from_host_to_host_makes_link_dest_snapshots() {
    let src_host = ok(Sshd::start("127.0.0.41"));
    let dest_host = ok(Sshd::start("127.0.0.42"));
    let dir = workdir();
    let src = user_dir(dir.path(), "src-data");
    user_tree(
        &src,
        &[
            ("same.img", "unchanged\n"),
            ("changes.img", "v1\n"),
            ("skip.tmp", "tmp\n"),
            ("sub/deep.img", "deep\n"),
        ],
    );
    let snaps = user_dir(dir.path(), "snaps");
    // The dest host's key, where the source host's login user can read it (0600, its own).
    let keys = user_dir(dir.path(), "keys");
    chmod(&keys, 0o700);
    let key = keys.join("dest_ed25519");
    ok(std::fs::copy(&dest_host.ed25519_key, &key));
    give(&key);
    chmod(&key, 0o600);
    let inventory = format!(
        "[backup]\n{}{}",
        host_line("src1", &src_host, ""),
        host_line("dest1", &dest_host, "")
    )
    .replace(
        &format!("ansible_ssh_private_key_file={}", s(&dest_host.ed25519_key)),
        &format!("ansible_ssh_private_key_file={}", s(&key)),
    );
    assert!(inventory.contains(&s(&key)));
    let site = Runner::new(dir.path(), &inventory);
    let values = [("SRC", s(&src)), ("SNAPS", s(&snaps))];

    // A dry run itemizes and creates nothing on the dest host.
    let dry = site.check("dry", &fill(SNAPSHOTS, &values));
    dry.assert_code(0);
    assert_eq!(dry.status("snap1", "src1"), "would_change");
    assert_eq!(names(&snaps), Vec::<String>::new(), "{dry:?}");

    let accepted = |h: &Sshd| {
        h.log()
            .matches("Accepted publickey for lifeboat-test")
            .count()
    };
    let before = accepted(&dest_host);
    let run = site.run("snaps", &fill(SNAPSHOTS, &values));
    run.assert_code(0);
    assert_eq!(run.status("snap1", "src1"), "changed");
    assert_eq!(run.status("snap2", "src1"), "changed");
    assert_eq!(
        run.status("snap2-again", "src1"),
        "ok",
        "nothing to itemize the second time\n{run:?}"
    );
    let msg = run.msg("snap2", "src1");
    assert!(msg.contains("changes.img"), "{msg}");
    assert!(!msg.contains("same.img"), "{msg}");

    // On the dest host, as its own `stat` sees it: the unchanged file is one inode in
    // both snapshots, the changed one is new.
    let stat = run.finish("inodes", "dest1")["stdout"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let ino: BTreeMap<String, String> = stat
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(i, n)| (n.trim_start_matches(&s(&snaps)).to_string(), i.to_string()))
        .collect();
    assert_eq!(ino.len(), 4, "{stat}");
    assert_eq!(ino["/s1/same.img"], ino["/s2/same.img"], "{stat}");
    assert_ne!(ino["/s1/changes.img"], ino["/s2/changes.img"], "{stat}");
    assert_eq!(
        ino["/s2/same.img"],
        inode(&snaps.join("s2/same.img")).to_string()
    );
    assert_eq!(
        ok(std::fs::read_to_string(snaps.join("s1/changes.img"))),
        "v1\n"
    );
    assert_eq!(
        ok(std::fs::read_to_string(snaps.join("s2/changes.img"))),
        "v2 longer\n"
    );
    assert_eq!(inode(&snaps.join("s2/sub/deep.img")), {
        inode(&snaps.join("s1/sub/deep.img"))
    });
    assert!(!snaps.join("s1/skip.tmp").exists());
    // Written by the login user on the dest side; the source host connected to it.
    assert_eq!(
        ok(std::fs::metadata(snaps.join("s2/changes.img"))).uid(),
        login_ids().0
    );
    // The dest host saw the three rsync logins from the source host, and the
    // controller's own for `inodes`.
    assert_eq!(accepted(&dest_host) - before, 4, "{}", dest_host.log());
}

const TO_CONTROLLER: &str = r#"
name: rsync-to-the-controller
hosts: src1
steps:
  - id: copy
    rsync:
      src: @SRC@/
      dest: @DEST@
      dest_host: vault
"#;

#[test]
fn rsync_to_a_dest_host_on_the_local_connection_lands_on_the_controller() {
    let src_host = ok(Sshd::start("127.0.0.48"));
    let dir = workdir();
    let src = user_dir(dir.path(), "src-data");
    user_tree(&src, &[("nova.conf", "[DEFAULT]\n"), ("sub/a", "a\n")]);
    // The controller's store: root's, not writable by the source host's login user.
    let store = dir.path().join("vault-store");
    ok(std::fs::create_dir(&store));
    chmod(&store, 0o755);
    let inventory = format!(
        "[backup]\n{}vault ansible_connection=local\n",
        host_line("src1", &src_host, "")
    );
    let site = Runner::new(dir.path(), &inventory);
    let dest = store.join("nova");
    let play = fill(TO_CONTROLLER, &[("SRC", s(&src)), ("DEST", s(&dest))]);
    let r = site.run("copy", &play);
    r.assert_code(0);
    assert_eq!(r.status("copy", "src1"), "changed");
    assert_eq!(tree(&dest), tree(&src));
    let again = site.run("again", &play);
    assert_eq!(again.status("copy", "src1"), "ok", "{again:?}");

    // The other way: from a host on the local connection to an sshd host. That ssh runs
    // on the controller, so the controller's LIFEBOAT_KNOWN_HOSTS verifies the host.
    let inventory = format!(
        "[backup]\nsrc1 ansible_connection=local\n{}",
        host_line("vault", &src_host, "")
    )
    .replace(
        &format!("lifeboat_known_hosts={}", s(&src_host.known_hosts)),
        "",
    );
    let back = user_dir(dir.path(), "back");
    let play = fill(
        TO_CONTROLLER,
        &[("SRC", s(&dest)), ("DEST", s(&back.join("nova")))],
    );
    let r = harness::lifeboat_env(
        dir.path(),
        "back",
        &play,
        &inventory,
        &[],
        &[("LIFEBOAT_KNOWN_HOSTS", s(&src_host.known_hosts))],
    );
    r.assert_code(0);
    assert_eq!(tree(&back.join("nova")), tree(&src));
    assert_eq!(
        ok(std::fs::metadata(back.join("nova/sub/a"))).uid(),
        login_ids().0,
        "written by the login user at the far end"
    );
}

// ---------------------------------------------------------------- rsync push and pull

const PUSH_PULL: &str = r#"
name: rsync-push-pull
hosts: host1
steps:
  - id: push
    rsync:
      mode: push
      src: @CTL_SRC@/
      dest: @HOST@/@PUSHED@
  - id: pull
    rsync:
      mode: pull
      src: @HOST_SRC@/
      dest: @CTL@/@PULLED@
  - id: after
    needs: [push, pull]
    shell: "@AFTER@"
"#;

#[test]
fn rsync_push_and_pull_between_the_controller_and_an_sshd_host() {
    let (host, dir, inventory) = one_host("127.0.0.44", "backup", "host1");
    let site = Runner::new(dir.path(), &inventory);
    let ctl = dir.path().join("controller");
    let ctl_src = ctl.join("etc-nova");
    write(&ctl_src.join("nova.conf"), "[DEFAULT]\ndebug = false\n");
    write(&ctl_src.join("policy.d/a b.yaml"), "rule: x\n");
    let host_dir = user_dir(dir.path(), "host");
    let host_src = host_dir.join("glance-images");
    user_tree(
        &host_src,
        &[("img-1", "disk one\n"), ("img-2", "disk two\n")],
    );
    let play = |pushed: &str, pulled: &str, after: &str| {
        fill(
            PUSH_PULL,
            &[
                ("CTL_SRC", s(&ctl_src)),
                ("HOST", s(&host_dir)),
                ("PUSHED", pushed.to_string()),
                ("HOST_SRC", s(&host_src)),
                ("CTL", s(&ctl)),
                ("PULLED", pulled.to_string()),
                ("AFTER", after.to_string()),
            ],
        )
    };

    // Dry run: both would change, nothing is written on either side.
    let d = site.check("dry", &play("pushed", "pulled", "true"));
    d.assert_code(0);
    assert_eq!(d.status("push", "host1"), "would_change");
    assert_eq!(d.status("pull", "host1"), "would_change");
    assert!(!host_dir.join("pushed").exists() && !ctl.join("pulled").exists());

    let r = site.run("sync", &play("pushed", "pulled", "true"));
    r.assert_code(0);
    assert_eq!(r.status("push", "host1"), "changed");
    assert_eq!(r.status("pull", "host1"), "changed");
    assert_eq!(tree(&host_dir.join("pushed")), tree(&ctl_src));
    assert_eq!(tree(&ctl.join("pulled")), tree(&host_src));
    // The far end of the push wrote as the login user.
    assert_eq!(
        ok(std::fs::metadata(host_dir.join("pushed/policy.d/a b.yaml"))).uid(),
        login_ids().0
    );
    let again = site.run("again", &play("pushed", "pulled", "true"));
    again.assert_code(0);
    assert_eq!(again.status("push", "host1"), "ok", "{again:?}");
    assert_eq!(again.status("pull", "host1"), "ok", "{again:?}");

    // A later failure rolls both back: the new dest on the host (over SSH) and the new
    // dest on the controller are removed; the earlier ones stay.
    let f = site.run("fail", &play("pushed2", "pulled2", "exit 3"));
    assert_ne!(f.code, 0, "{f:?}");
    assert_eq!(f.status("push", "host1"), "changed");
    assert_eq!(f.status("after", "host1"), "failed");
    assert_eq!(
        f.rollback_status("push", "host1").as_deref(),
        Some("done"),
        "{f:?}"
    );
    assert_eq!(
        f.rollback_status("pull", "host1").as_deref(),
        Some("done"),
        "{f:?}"
    );
    assert!(!host_dir.join("pushed2").exists(), "{f:?}");
    assert!(!ctl.join("pulled2").exists(), "{f:?}");
    assert!(host_dir.join("pushed/nova.conf").exists());
    assert!(ctl.join("pulled/img-1").exists());

    // Known hosts from the controller's environment, as the run's own connection takes
    // them: rsync's ssh verifies the host with the same file.
    let bare = inventory.replace(
        &format!("lifeboat_known_hosts={}", s(&host.known_hosts)),
        "",
    );
    assert!(!bare.contains("lifeboat_known_hosts"));
    let e = harness::lifeboat_env(
        dir.path(),
        "env",
        &play("pushed3", "pulled3", "true"),
        &bare,
        &[],
        &[("LIFEBOAT_KNOWN_HOSTS", s(&host.known_hosts))],
    );
    e.assert_code(0);
    assert_eq!(e.status("push", "host1"), "changed");
    assert_eq!(tree(&host_dir.join("pushed3")), tree(&ctl_src));
    assert_eq!(tree(&ctl.join("pulled3")), tree(&host_src));
}

/// Lets the login user run rsync (only) through sudo without a password, as a backup
/// host would for push and pull with become. (`sshd::ensure_sudo` gives it everything
/// with its password; sudo -v still asks for that, as every entry must be NOPASSWD.)
fn passwordless_rsync() {
    let path = Path::new("/etc/sudoers.d/lifeboat-test-rsync");
    let rsync = harness::sh("command -v rsync");
    let line = format!("{} ALL=(ALL) NOPASSWD: {}\n", sshd::USER, rsync.trim());
    if std::fs::read_to_string(path).ok().as_deref() != Some(line.as_str()) {
        let tmp = path.with_file_name("lifeboat-test-rsync-tmp");
        ok(std::fs::write(&tmp, &line));
        chmod(&tmp, 0o440);
        ok(std::fs::rename(&tmp, path));
    }
}

const BECOME: &str = r#"
name: rsync-become
hosts: host1
steps:
  - id: pull
    become: @BECOME@
    rsync:
      mode: pull
      src: @HOST_SRC@/
      dest: @CTL@/@PULLED@
  - id: push
    become: @BECOME@
    rsync:
      mode: push
      src: @CTL_SRC@/
      dest: @HOST@/@PUSHED@
"#;

#[test]
fn rsync_push_and_pull_with_become_run_the_far_end_as_root() {
    passwordless_rsync();
    let (host, dir, inventory) = one_host("127.0.0.46", "backup", "host1");
    let site = Runner::new(dir.path(), &inventory);
    let ctl = dir.path().join("controller");
    let ctl_src = ctl.join("etc-nova");
    write(&ctl_src.join("nova.conf"), "[DEFAULT]\n");
    // On the host: a file only root reads, as /etc/nova/nova.conf is.
    let host_dir = user_dir(dir.path(), "host");
    let host_src = host_dir.join("etc-keystone");
    write(&host_src.join("keystone.conf"), "[token]\n");
    chmod(&host_src.join("keystone.conf"), 0o600);
    let play = |become_: &str, n: &str| {
        fill(
            BECOME,
            &[
                ("BECOME", become_.to_string()),
                ("HOST_SRC", s(&host_src)),
                ("CTL", s(&ctl)),
                ("PULLED", format!("pulled{n}")),
                ("CTL_SRC", s(&ctl_src)),
                ("HOST", s(&host_dir)),
                ("PUSHED", format!("pushed{n}")),
            ],
        )
    };

    // Without become the login user cannot read it: exit 23.
    let r = site.run("plain", &play("false", "1"));
    assert_eq!(r.status("pull", "host1"), "failed", "{r:?}");
    assert!(r.msg("pull", "host1").contains("exit 23"), "{r:?}");

    // With become (sudo without a password, for rsync): it is read, and the pushed
    // files belong to root as on the controller.
    let r = site.run("become", &play("true", "2"));
    r.assert_code(0);
    assert_eq!(
        ok(std::fs::read_to_string(ctl.join("pulled2/keystone.conf"))),
        "[token]\n"
    );
    assert_eq!(
        ok(std::fs::metadata(host_dir.join("pushed2/nova.conf"))).uid(),
        0
    );

    // With a become password (sudo would need it on the far end's stdin): refused.
    let with_pw = format!(
        "[backup]\n{}",
        host_line("host1", &host, "ansible_become_password=x")
    );
    let r = lifeboat(dir.path(), "pw", &play("true", "3"), &with_pw, &[]);
    assert_eq!(r.status("pull", "host1"), "failed", "{r:?}");
    assert!(
        r.msg("pull", "host1").contains("without a password"),
        "{r:?}"
    );
    assert!(!ctl.join("pulled3").exists());
}

// ---------------------------------------------------------------- service

/// Whether a process runs (a zombie does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|st| {
            !st.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

/// The uid a process runs as.
fn uid_of(pid: u32) -> Option<u32> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn pid_in(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Kills the daemons a test left, by the pids in its run directory.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if let Some(pid) = pid_in(&e.path()) {
                sshd::signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

const SERVICE: &str = r#"
name: services-over-ssh
hosts: ctl1
steps:
  - id: service
    service:
      names: @NAMES@
      state: @STATE@
      manager: command
      wait: 10s
      commands:
        start: setsid -f bash @DAEMON@ @RUN@/{name}.pid </dev/null >/dev/null 2>&1
        stop: kill "$(cat @RUN@/{name}.pid)" && rm -f @RUN@/{name}.pid
        status: >-
          p=$(cat @RUN@/{name}.pid 2>/dev/null) && [ -d /proc/$p ] &&
          ! grep -q '^State:[[:space:]]*Z' /proc/$p/status
    register: svc
  - id: then
    needs: service
    shell: "@THEN@"
"#;

#[test]
fn services_over_ssh_stop_start_and_roll_back_seen_by_their_pids() {
    let (_host, dir, inventory) = one_host("127.0.0.43", "control", "ctl1");
    let site = Runner::new(dir.path(), &inventory);
    let run_dir = user_dir(dir.path(), "run");
    let _reaper = Reaper(run_dir.clone());
    let daemon = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backup/daemon.sh");
    let pidfile = |n: &str| run_dir.join(format!("{n}.pid"));
    let play = |names: &str, state: &str, then: &str| {
        fill(
            SERVICE,
            &[
                ("DAEMON", s(&daemon)),
                ("RUN", s(&run_dir)),
                ("NAMES", names.to_string()),
                ("STATE", state.to_string()),
                ("THEN", then.to_string()),
            ],
        )
    };
    let (uid, _) = login_ids();

    // Start api: it runs as the login user, and outlives the SSH session.
    let r = site.run("start", &play("[api]", "started", "true"));
    r.assert_code(0);
    assert_eq!(r.status("service", "ctl1"), "changed");
    let api1 = pid_in(&pidfile("api")).expect("api's pid");
    assert!(alive(api1));
    assert_eq!(uid_of(api1), Some(uid));
    let r = site.run("again", &play("[api]", "started", "true"));
    assert_eq!(r.status("service", "ctl1"), "ok", "{r:?}");
    assert_eq!(pid_in(&pidfile("api")), Some(api1));

    // A dry run of a stop predicts and stops nothing.
    let r = site.check("dry", &play("[api, worker]", "stopped", "true"));
    assert_eq!(r.status("service", "ctl1"), "would_change", "{r:?}");
    assert!(alive(api1));

    // Stop api and worker (not running), then fail: while the run goes on api is gone;
    // the rollback starts api again (a new pid), and leaves worker stopped.
    // Exit 7 when api's process is gone (a zombie counts as gone) and its pid file too.
    let then = format!(
        "if [ -d /proc/{api1} ] && ! grep -q '^State:[[:space:]]*Z' /proc/{api1}/status; then exit 1; fi; test ! -e {} || exit 2; exit 7",
        s(&pidfile("api"))
    );
    let r = site.run("stop-fail", &play("[api, worker]", "stopped", &then));
    assert_ne!(r.code, 0);
    assert_eq!(r.status("service", "ctl1"), "changed");
    assert_eq!(
        r.finish("then", "ctl1")["rc"],
        7,
        "api was stopped then\n{r:?}"
    );
    assert_eq!(
        r.rollback_status("service", "ctl1").as_deref(),
        Some("done"),
        "{r:?}"
    );
    assert!(wait_until(Duration::from_secs(10), || !alive(api1)));
    let api2 = pid_in(&pidfile("api")).expect("api runs again after the rollback");
    assert_ne!(api1, api2);
    assert!(alive(api2));
    assert_eq!(uid_of(api2), Some(uid));
    assert!(!pidfile("worker").exists(), "worker was not running before");

    // Start worker, then fail: the rollback stops worker; api, running before, stays.
    let r = site.run("start-fail", &play("[api, worker]", "started", "exit 1"));
    assert_ne!(r.code, 0);
    assert_eq!(r.status("service", "ctl1"), "changed");
    assert_eq!(
        r.rollback_status("service", "ctl1").as_deref(),
        Some("done"),
        "{r:?}"
    );
    assert!(!pidfile("worker").exists(), "{r:?}");
    assert!(alive(api2));
    assert_eq!(pid_in(&pidfile("api")), Some(api2));
}

// ---------------------------------------------------------------- files

const RESTORE_FILES: &str = r#"
name: files-over-ssh
hosts: ctl1
steps:
  - id: manifest
    manifest:
      path: @ETC@/nova
      dest: @BACKUP@/nova.manifest.json
      exclude: ["*.log"]
  - id: archive
    needs: manifest
    archive:
      src: [@ETC@/nova]
      dest: @BACKUP@/nova.tar.zst
      exclude: ["*.log"]
    register: archived
  - id: aside
    needs: archive
    move_aside:
      path: @ETC@/nova
    register: aside
  - id: unarchive
    needs: aside
    unarchive:
      src: @BACKUP@/nova.tar.zst
      dest: @ETC@
  - id: verify
    needs: unarchive
    verify_manifest:
      manifest: @BACKUP@/nova.manifest.json
    register: verified
  - id: then
    needs: verify
    shell: "@THEN@"
"#;

#[test]
fn archive_manifest_and_move_aside_over_ssh_restore_and_roll_back() {
    let (_host, dir, inventory) = one_host("127.0.0.45", "control", "ctl1");
    let site = Runner::new(dir.path(), &inventory);
    let etc = user_dir(dir.path(), "etc");
    let backup = user_dir(dir.path(), "backup");
    user_tree(
        &etc.join("nova"),
        &[
            ("nova.conf", "[DEFAULT]\ntransport_url = rabbit://\n"),
            ("api-paste.ini", "[pipeline:main]\n"),
            ("policy.d/x y.yaml", "rule: admin\n"),
            ("nova-manage.log", "noise\n"),
        ],
    );
    chmod(&etc.join("nova/nova.conf"), 0o640);
    ok(std::os::unix::fs::symlink(
        "nova.conf",
        etc.join("nova/current.conf"),
    ));
    harness::sh(&format!(
        "chown -h {} {}",
        login_ids().0,
        s(&etc.join("nova/current.conf"))
    ));
    let original = tree(&etc.join("nova"));
    let play = |then: &str| {
        fill(
            RESTORE_FILES,
            &[
                ("ETC", s(&etc)),
                ("BACKUP", s(&backup)),
                ("THEN", then.to_string()),
            ],
        )
    };

    // The restore procedure: describe, archive, move aside, extract, verify.
    let r = site.run_with("restore", &play("true"), &["-v"]);
    r.assert_code(0);
    for step in ["manifest", "archive", "aside", "unarchive"] {
        assert_eq!(r.status(step, "ctl1"), "changed", "{step}\n{r:?}");
    }
    assert_eq!(r.status("verify", "ctl1"), "ok");
    let mut expected = original.clone();
    expected.remove(Path::new("nova-manage.log"));
    assert_eq!(tree(&etc.join("nova")), expected, "extracted as archived");
    let aside: Vec<String> = names(&etc)
        .into_iter()
        .filter(|n| n.starts_with("nova.orig-"))
        .collect();
    assert_eq!(aside.len(), 1, "{:?}", names(&etc));
    assert_eq!(
        tree(&etc.join(&aside[0])),
        original,
        "moved aside untouched"
    );
    let (uid, _) = login_ids();
    for f in ["nova.tar.zst", "nova.manifest.json"] {
        assert_eq!(ok(std::fs::metadata(backup.join(f))).uid(), uid, "{f}");
    }
    let zst = ok(std::fs::read(backup.join("nova.tar.zst")));
    assert!(zst.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));

    // verify_manifest over SSH sees a change.
    write(&etc.join("nova/nova.conf"), "tampered\n");
    give(&etc.join("nova/nova.conf"));
    let check = r#"
hosts: ctl1
steps:
  - id: verify
    verify_manifest:
      manifest: @BACKUP@/nova.manifest.json
"#;
    let v = site.run("verify", &fill(check, &[("BACKUP", s(&backup))]));
    assert_eq!(v.status("verify", "ctl1"), "failed", "{v:?}");
    assert!(v.msg("verify", "ctl1").contains("nova.conf"), "{v:?}");

    // Start over from the original tree; this time a later step fails: the rollback
    // removes what was extracted, moves the original back, removes the archive and
    // the manifest.
    harness::sh(&format!(
        "rm -rf {etc}/nova {backup}/* && mv {etc}/{aside} {etc}/nova",
        etc = s(&etc),
        backup = s(&backup),
        aside = aside[0]
    ));
    assert_eq!(tree(&etc.join("nova")), original);
    let f = site.run("fail", &play("exit 5"));
    assert_ne!(f.code, 0, "{f:?}");
    for step in ["unarchive", "aside", "archive", "manifest"] {
        assert_eq!(
            f.rollback_status(step, "ctl1").as_deref(),
            Some("done"),
            "{step}\n{f:?}"
        );
    }
    assert_eq!(tree(&etc.join("nova")), original, "{f:?}");
    assert_eq!(names(&etc), vec!["nova"], "nothing left aside");
    assert_eq!(names(&backup), Vec::<String>::new());
}

// ---------------------------------------------------------------- prune

const PRUNE: &str = r#"
name: prune-over-ssh
hosts: ctl1
steps:
  - id: prune
    prune:
      path: @DIR@
      pattern: "nova-*.tar.gz"
      older_than: 1h
    register: pruned
  - id: show
    needs: prune
    debug:
      msg: "removed={{ pruned.data.removed | join(',') }} kept={{ pruned.data.kept | join(',') }}"
"#;

#[test]
fn prune_over_ssh_keeps_the_newest_complete_backup() {
    let (_host, dir, inventory) = one_host("127.0.0.47", "control", "ctl1");
    let site = Runner::new(dir.path(), &inventory);
    let backups = user_dir(dir.path(), "backups");
    let now = ok(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)).as_secs();
    // nova-1 and nova-2 complete (with a manifest), nova-3 from a failed run.
    for (name, days, complete) in [
        ("nova-1", 10, true),
        ("nova-2", 9, true),
        ("nova-3", 8, false),
    ] {
        let mut files = vec![(format!("{name}.tar.gz"), name.to_string())];
        if complete {
            files.push((format!("{name}.tar.gz.manifest.json"), "{}".to_string()));
        }
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        user_tree(&backups, &refs);
        harness::sh(&format!(
            "touch -d @{} {}",
            now - days * 86400,
            s(&backups.join(format!("{name}.tar.gz")))
        ));
    }
    let before = names(&backups);
    let play = fill(PRUNE, &[("DIR", s(&backups))]);

    let d = site.check("dry", &play);
    d.assert_code(0);
    assert_eq!(d.status("prune", "ctl1"), "would_change");
    assert!(
        d.msg("prune", "ctl1")
            .ends_with(": nova-3.tar.gz, nova-1.tar.gz"),
        "{d:?}"
    );
    assert_eq!(names(&backups), before, "the dry run removed nothing");

    let r = site.run("prune", &play);
    r.assert_code(0);
    assert_eq!(r.status("prune", "ctl1"), "changed");
    assert_eq!(
        r.msg("show", "ctl1"),
        "removed=nova-3.tar.gz,nova-1.tar.gz kept=nova-2.tar.gz"
    );
    assert_eq!(
        names(&backups),
        vec!["nova-2.tar.gz", "nova-2.tar.gz.manifest.json"]
    );
    let again = site.run("again", &play);
    assert_eq!(again.status("prune", "ctl1"), "ok", "{again:?}");
}
