//! The engine end to end over SSH: the real `lifeboat` binary runs playbooks against
//! three sshd hosts (see `support/sshd.rs`) and, for comparison, against the same three
//! hosts as local connections. A playbook that uses every engine module, its dry run and
//! a failing run with its rollback must end the same way over both: statuses, rc,
//! stdout, messages and the files left behind.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/sshd.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use binary::Lifeboat;
use serde_json::Value;
use sshd::{Sshd, USER};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Every module of the engine, on every host.
const PLAYBOOK: &str = r#"
name: ssh-e2e
hosts: all
vars:
  dir: "{{ base }}/{{ inventory_hostname }}"
steps:
  - id: mkdir
    file:
      path: "{{ dir }}"
      state: directory
  - id: subdir
    needs: mkdir
    file:
      path: "{{ dir }}/sub/deeper"
      state: directory
      mode: "0750"
  - id: put
    needs: mkdir
    copy:
      content: "hello\n"
      dest: "{{ dir }}/a.txt"
      mode: "0640"
  - id: put-again
    needs: put
    copy:
      content: "hello\n"
      dest: "{{ dir }}/a.txt"
      mode: "0640"
  - id: put-src
    needs: mkdir
    copy:
      src: files/payload.txt
      dest: "{{ dir }}/payload.txt"
  - id: put-into-dir
    needs: subdir
    copy:
      src: files/payload.txt
      dest: "{{ dir }}/sub/"
      mode: "0604"
  - id: render
    needs: mkdir
    template:
      src: templates/motd.j2
      dest: "{{ dir }}/motd"
      mode: "0600"
  - id: read
    needs: put-again
    register: read
    command: cat {{ dir }}/a.txt
  - id: stdin-env
    needs: mkdir
    command:
      argv: [sh, -c, 'tr a-z A-Z; echo "$WHO"']
      stdin: "quiet\n"
      env:
        WHO: "{{ inventory_hostname }}"
  - id: create-once
    needs: mkdir
    command:
      argv: [touch, "{{ dir }}/created"]
      creates: "{{ dir }}/created"
  - id: create-twice
    needs: create-once
    command:
      argv: [touch, "{{ dir }}/created"]
      creates: "{{ dir }}/created"
  - id: remove-once
    needs: create-twice
    command:
      argv: [rm, "{{ dir }}/created"]
      removes: "{{ dir }}/created"
  - id: remove-twice
    needs: remove-once
    command:
      argv: [rm, "{{ dir }}/created"]
      removes: "{{ dir }}/created"
  - id: pipe-ok
    needs: read
    shell: cat {{ dir }}/a.txt | tr a-z A-Z | wc -c
  - id: pipe-fails
    needs: read
    ignore_errors: true
    shell: cat {{ dir }}/missing | wc -c
  - id: check
    needs: read
    shell: test "$(cat {{ dir }}/a.txt)" = hello && printf 'ok\n' > {{ dir }}/b.txt && cat {{ dir }}/b.txt
  - id: touch
    needs: mkdir
    file:
      path: "{{ dir }}/stamp"
      state: touch
  - id: link
    needs: check
    file:
      path: "{{ dir }}/link"
      state: link
      src: b.txt
  - id: scratch
    needs: mkdir
    copy:
      content: "scratch\n"
      dest: "{{ dir }}/scratch"
  - id: absent
    needs: scratch
    file:
      path: "{{ dir }}/scratch"
      state: absent
  - id: absent-again
    needs: absent
    file:
      path: "{{ dir }}/scratch"
      state: absent
  - id: fetch-tree
    needs: render
    fetch:
      src: "{{ dir }}/motd"
      dest: "{{ base }}/fetched"
  - id: fetch-flat
    needs: put-again
    fetch:
      src: "{{ dir }}/a.txt"
      dest: "{{ base }}/flat/{{ inventory_hostname }}.txt"
      flat: true
  - id: wait-path
    needs: touch
    wait_for:
      path: "{{ dir }}/stamp"
      timeout: 10s
  - id: wait-port
    needs: mkdir
    wait_for:
      port: "{{ probe_port }}"
      host: "{{ probe_addr }}"
      timeout: 10s
  - id: wait-cmd
    needs: check
    wait_for:
      cmd: test -s {{ dir }}/b.txt
      timeout: 10s
  - id: echo-read
    needs: read
    debug:
      msg: "read {{ read.stdout | trim }}"
  - id: fact
    needs: read
    set_fact:
      greeting: "{{ 'hel' ~ 'lo' }}"
  - id: show
    needs: fact
    debug:
      msg: "{{ greeting }} from {{ inventory_hostname }}"
  - id: verify
    needs: fact
    assert:
      that:
        - greeting == 'hello'
      fail_msg: wrong greeting
"#;

const STEPS: usize = 30;

const TEMPLATE: &str =
    "Welcome to {{ inventory_hostname }}.\n{% for i in range(3) %}{{ i }}{% endfor %}\n";

/// Changes on every host, then fails on h2: everything is rolled back, and the step
/// after the failure starts nowhere.
const ROLLBACK: &str = r#"
name: ssh-rollback
hosts: all
vars:
  dir: "{{ base }}/{{ inventory_hostname }}"
steps:
  - id: replace
    copy:
      content: "new\n"
      dest: "{{ dir }}/keep.txt"
      mode: "0644"
  - id: add
    copy:
      src: files/payload.txt
      dest: "{{ dir }}/added.txt"
  - id: render
    template:
      src: templates/motd.j2
      dest: "{{ dir }}/motd"
  - id: newdir
    file:
      path: "{{ dir }}/made/inner"
      state: directory
  # A tree: replaces tree/payload.txt, makes tree/sub and tree/sub/extra.txt.
  - id: tree
    copy:
      src: files/
      dest: "{{ dir }}/tree"
      mode: "0640"
  - id: relink
    file:
      path: "{{ dir }}/current"
      state: link
      src: keep.txt
  - id: remove
    file:
      path: "{{ dir }}/victim.txt"
      state: absent
  - id: chmod
    file:
      path: "{{ dir }}/modes.txt"
      mode: "0600"
  # A barrier: boom on h2 starts once every host made its changes.
  - id: synced
    hosts: h1,h3
    needs: [replace, add, render, newdir, tree, relink, remove, chmod]
    debug:
      msg: changes made
  - id: boom
    hosts: h2
    needs: [replace, add, render, newdir, tree, relink, remove, chmod, synced]
    shell: echo failing on {{ inventory_hostname }}; exit 3
  - id: never
    needs: boom
    file:
      path: "{{ dir }}/never"
      state: touch
"#;

/// (step, host) -> (status, rc, stdout, msg) of `node_finish` events; `base` is
/// replaced by `BASE`, the owner of the files (the login user over SSH, root locally) by
/// `OWNER` and wait_for's waiting time by `N` in messages.
type Finishes = BTreeMap<(String, String), (String, Option<i64>, String, String)>;

fn events(path: &Path) -> Vec<Value> {
    ok(std::fs::read_to_string(path))
        .lines()
        .map(|l| ok(serde_json::from_str::<Value>(l)))
        .collect()
}

fn finishes(events: &[Value], base: &Path) -> Finishes {
    let base = base.display().to_string();
    let mut out = BTreeMap::new();
    for v in events.iter().filter(|v| v["event"] == "node_finish") {
        out.insert(
            (
                v["step"].as_str().unwrap_or("").to_string(),
                v["host"].as_str().unwrap_or("").to_string(),
            ),
            (
                v["status"].to_string(),
                v["rc"].as_i64(),
                v["stdout"].as_str().unwrap_or("").to_string(),
                untimed(
                    &v["msg"]
                        .as_str()
                        .unwrap_or("")
                        .replace(&base, "BASE")
                        .replace(USER, "OWNER")
                        .replace("root", "OWNER"),
                ),
            ),
        );
    }
    out
}

/// `after 0.1s` (how long wait_for waited) becomes `after Ns`.
fn untimed(msg: &str) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while let Some(i) = rest.find(" after ") {
        out.push_str(&rest[..i + 7]);
        rest = &rest[i + 7..];
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n > 0 && rest[n..].starts_with('s') {
            out.push('N');
            rest = &rest[n..];
        }
    }
    out.push_str(rest);
    out
}

/// (step, host) -> status of `rollback_node` events.
fn rollbacks(events: &[Value]) -> BTreeMap<(String, String), String> {
    events
        .iter()
        .filter(|v| v["event"] == "rollback_node")
        .map(|v| {
            (
                (
                    v["step"].as_str().unwrap_or("").to_string(),
                    v["host"].as_str().unwrap_or("").to_string(),
                ),
                v["status"].to_string(),
            )
        })
        .collect()
}

/// Every file, folder and link under `base`: kind, permission bits, content or link
/// target; `base` itself is written `BASE` in names (fetch copies host paths).
fn tree(base: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, base_rel: &str, out: &mut BTreeMap<String, String>) {
        for e in ok(std::fs::read_dir(dir)) {
            let p = ok(e).path();
            let rel = ok(p.strip_prefix(root))
                .display()
                .to_string()
                .replace(base_rel, "BASE");
            let md = ok(std::fs::symlink_metadata(&p));
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("link -> {}", ok(std::fs::read_link(&p)).display()),
                );
            } else if md.is_dir() {
                out.insert(rel, format!("dir {mode:04o}"));
                walk(root, &p, base_rel, out);
            } else {
                let text = String::from_utf8_lossy(&ok(std::fs::read(&p))).into_owned();
                out.insert(rel, format!("file {mode:04o} {text:?}"));
            }
        }
    }
    let mut out = BTreeMap::new();
    let base_rel = base.display().to_string();
    walk(base, base, base_rel.trim_start_matches('/'), &mut out);
    out
}

struct Setup {
    hosts: Vec<Sshd>,
    dir: tempfile::TempDir,
    ssh_inv: PathBuf,
    local_inv: PathBuf,
}

fn setup(addrs: [&str; 3]) -> Setup {
    let hosts: Vec<Sshd> = addrs.iter().map(|a| ok(Sshd::start(a))).collect();
    let dir = ok(tempfile::tempdir());
    // The login user writes below it: it must be able to go through.
    ok(std::fs::set_permissions(
        dir.path(),
        std::fs::Permissions::from_mode(0o755),
    ));
    ok(std::fs::write(dir.path().join("playbook.yml"), PLAYBOOK));
    ok(std::fs::write(dir.path().join("rollback.yml"), ROLLBACK));
    ok(std::fs::create_dir_all(dir.path().join("files")));
    ok(std::fs::create_dir_all(dir.path().join("templates")));
    ok(std::fs::write(
        dir.path().join("files/payload.txt"),
        "payload line 1\npayload line 2\n",
    ));
    ok(std::fs::create_dir_all(dir.path().join("files/sub")));
    ok(std::fs::write(
        dir.path().join("files/sub/extra.txt"),
        "extra\n",
    ));
    ok(std::fs::write(
        dir.path().join("templates/motd.j2"),
        TEMPLATE,
    ));
    let mut ssh_inv = String::from("[cloud]\n");
    let mut local_inv = String::from("[cloud]\n");
    for (i, s) in hosts.iter().enumerate() {
        let probe = format!("probe_addr={} probe_port={}", s.addr, s.port);
        ssh_inv.push_str(&format!(
            "h{} ansible_host={} ansible_port={} ansible_user={USER} ansible_ssh_private_key_file={} lifeboat_known_hosts={} {probe}\n",
            i + 1,
            s.addr,
            s.port,
            s.ed25519_key.display(),
            s.known_hosts.display()
        ));
        local_inv.push_str(&format!("h{} ansible_connection=local {probe}\n", i + 1));
    }
    let (ssh_path, local_path) = (dir.path().join("ssh.ini"), dir.path().join("local.ini"));
    ok(std::fs::write(&ssh_path, ssh_inv));
    ok(std::fs::write(&local_path, local_inv));
    Setup {
        hosts,
        dir,
        ssh_inv: ssh_path,
        local_inv: local_path,
    }
}

impl Setup {
    /// A fresh base folder the login user can write into.
    fn base(&self, name: &str) -> PathBuf {
        let b = self.dir.path().join(name);
        ok(std::fs::create_dir_all(&b));
        ok(std::fs::set_permissions(
            &b,
            std::fs::Permissions::from_mode(0o1777),
        ));
        b
    }

    /// Runs `lifeboat <cmd> <playbook>` over `inv` with `base`; returns its exit code
    /// and events.
    fn run(
        &self,
        cmd: &str,
        playbook: &str,
        ssh: bool,
        base: &Path,
        tag: &str,
    ) -> (i32, Vec<Value>) {
        ok(std::fs::create_dir_all(self.dir.path().join("home")));
        let events = self.dir.path().join(format!("{tag}.events"));
        let out = Lifeboat::new(self.dir.path())
            .lock_dir(self.base("locks"))
            .arg(cmd)
            .arg(self.dir.path().join(playbook))
            .arg("-i")
            .arg(if ssh { &self.ssh_inv } else { &self.local_inv })
            .arg("-e")
            .arg(format!("base={}", base.display()))
            .arg("--events")
            .arg(&events)
            .timeout(std::time::Duration::from_secs(60))
            .run();
        let code = out.code;
        if !events.exists() {
            panic!("no events from {tag}: {}\n{}", out.stdout, out.stderr);
        }
        (code, self::events(&events))
    }
}

/// Two maps are equal; otherwise the panic lists only the entries that differ.
fn assert_same<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    over_ssh: &BTreeMap<K, V>,
    local: &BTreeMap<K, V>,
) {
    let mut diff = Vec::new();
    for (k, v) in over_ssh {
        if local.get(k) != Some(v) {
            diff.push(format!("{k:?}: over ssh {v:?}, locally {:?}", local.get(k)));
        }
    }
    for (k, v) in local {
        if !over_ssh.contains_key(k) {
            diff.push(format!("{k:?}: only locally: {v:?}"));
        }
    }
    assert!(
        diff.is_empty(),
        "over SSH and locally differ:\n{}",
        diff.join("\n")
    );
}

fn key(step: &str, host: &str) -> (String, String) {
    (step.to_string(), host.to_string())
}

#[test]
fn every_module_ends_over_ssh_as_it_does_locally_and_so_does_the_dry_run() {
    let s = setup(["127.0.0.20", "127.0.0.21", "127.0.0.22"]);
    let (base_ssh, base_local) = (s.base("over-ssh"), s.base("local"));

    // The dry run on nothing yet: the same marks (registered results are unknown).
    let (code_ssh, plan_ssh) = s.run("plan", "playbook.yml", true, &base_ssh, "plan0-ssh");
    let (code_local, plan_local) = s.run("plan", "playbook.yml", false, &base_local, "plan0-local");
    assert_eq!((code_ssh, code_local), (0, 0), "{:?}", plan_ssh.last());
    let (a, b) = (
        finishes(&plan_ssh, &base_ssh),
        finishes(&plan_local, &base_local),
    );
    assert_eq!(a.len(), STEPS * 3, "{a:?}");
    assert_same(&a, &b);
    assert_eq!(a[&key("put", "h1")].0, "\"would_change\"");
    assert_eq!(a[&key("echo-read", "h1")].0, "\"unknown\"");
    assert_eq!(
        tree(&base_ssh),
        BTreeMap::new(),
        "the dry run changed something"
    );

    let (code, run_ssh) = s.run("run", "playbook.yml", true, &base_ssh, "ssh");
    assert_eq!(code, 0, "{run_ssh:#?}");
    let (code, run_local) = s.run("run", "playbook.yml", false, &base_local, "local");
    assert_eq!(code, 0, "{run_local:#?}");
    let (a, b) = (
        finishes(&run_ssh, &base_ssh),
        finishes(&run_local, &base_local),
    );
    assert_eq!(a.len(), STEPS * 3, "{a:?}");
    assert_same(&a, &b);
    for h in ["h1", "h2", "h3"] {
        for (step, status) in [
            ("put", "changed"),
            ("put-again", "ok"),
            ("create-once", "changed"),
            ("create-twice", "ok"),
            ("remove-once", "changed"),
            ("remove-twice", "ok"),
            ("pipe-ok", "changed"),
            ("pipe-fails", "ignored"),
            ("absent", "changed"),
            ("absent-again", "ok"),
            ("fetch-tree", "changed"),
            ("fetch-flat", "changed"),
            ("wait-port", "ok"),
            ("verify", "ok"),
        ] {
            assert_eq!(a[&key(step, h)].0, format!("\"{status}\""), "{step} on {h}");
        }
    }
    assert_eq!(a[&key("stdin-env", "h2")].2, "QUIET\nh2\n");
    assert_eq!(a[&key("pipe-ok", "h1")].2, "6\n");
    // The pipe's first command failed: pipefail made the step fail.
    assert_eq!(a[&key("pipe-fails", "h3")].1, Some(1));
    assert!(a[&key("show", "h3")].3.contains("hello from h3"), "{a:?}");
    assert!(a[&key("echo-read", "h1")].3.contains("read hello"), "{a:?}");

    // The same files, modes, contents and links, on the hosts and fetched (a fetched
    // file keeps its mode: a private file stays private on the controller).
    let (ta, tb) = (tree(&base_ssh), tree(&base_local));
    assert_same(&ta, &tb);
    assert_eq!(ta["h1/a.txt"], "file 0640 \"hello\\n\"");
    assert_eq!(ta["h2/sub/deeper"], "dir 0750");
    assert_eq!(
        ta["h3/sub/payload.txt"],
        "file 0604 \"payload line 1\\npayload line 2\\n\""
    );
    assert_eq!(ta["h1/link"], "link -> b.txt");
    assert_eq!(ta["h2/motd"], "file 0600 \"Welcome to h2.\\n012\\n\"");
    assert_eq!(ta["flat/h3.txt"], "file 0640 \"hello\\n\"");
    assert_eq!(
        ta["fetched/h1/BASE/h1/motd"],
        "file 0600 \"Welcome to h1.\\n012\\n\""
    );
    assert!(!ta.contains_key("h1/scratch") && !ta.contains_key("h1/created"));

    // The dry run after the run: the same marks again.
    let (code_ssh, plan_ssh) = s.run("plan", "playbook.yml", true, &base_ssh, "plan1-ssh");
    let (code_local, plan_local) = s.run("plan", "playbook.yml", false, &base_local, "plan1-local");
    assert_eq!((code_ssh, code_local), (0, 0), "{:?}", plan_ssh.last());
    let (a, b) = (
        finishes(&plan_ssh, &base_ssh),
        finishes(&plan_local, &base_local),
    );
    assert_same(&a, &b);
    assert_eq!(a[&key("put", "h2")].0, "\"ok\"");
    assert_eq!(a[&key("touch", "h2")].0, "\"would_change\"");
    assert_eq!(ta, tree(&base_ssh), "the dry run changed something");

    // The SSH run really ran as the login user on each host.
    let uid = ok(std::fs::metadata(base_ssh.join("h3").join("a.txt"))).uid();
    let expected = ok(std::process::Command::new("id").args(["-u", USER]).output());
    assert_eq!(
        uid.to_string(),
        String::from_utf8_lossy(&expected.stdout).trim()
    );
    for h in &s.hosts {
        assert!(h.log().contains("Accepted publickey"), "{}", h.log());
    }
}

/// Files each host starts the rollback playbook with.
fn seed(base: &Path, owner: Option<(u32, u32)>) {
    for h in ["h1", "h2", "h3"] {
        let d = base.join(h);
        ok(std::fs::create_dir_all(&d));
        let files = [
            ("keep.txt", "old\n", 0o600),
            ("old.txt", "older\n", 0o644),
            ("victim.txt", "victim\n", 0o640),
            ("modes.txt", "modes\n", 0o644),
        ];
        for (name, text, mode) in files {
            ok(std::fs::write(d.join(name), text));
            ok(std::fs::set_permissions(
                d.join(name),
                std::fs::Permissions::from_mode(mode),
            ));
        }
        ok(std::os::unix::fs::symlink("old.txt", d.join("current")));
        ok(std::fs::create_dir_all(d.join("tree")));
        ok(std::fs::write(d.join("tree/payload.txt"), "old payload\n"));
        if let Some((uid, gid)) = owner {
            for p in [
                "",
                "tree",
                "tree/payload.txt",
                "keep.txt",
                "old.txt",
                "victim.txt",
                "modes.txt",
                "current",
            ] {
                ok(std::os::unix::fs::lchown(d.join(p), Some(uid), Some(gid)));
            }
        }
    }
}

#[test]
fn a_failing_step_rolls_back_over_ssh_as_it_does_locally() {
    let s = setup(["127.0.0.23", "127.0.0.24", "127.0.0.25"]);
    let (base_ssh, base_local) = (s.base("rb-ssh"), s.base("rb-local"));
    let uid = |flag: &str| -> u32 {
        let out = ok(std::process::Command::new("id").args([flag, USER]).output());
        ok(String::from_utf8_lossy(&out.stdout).trim().parse())
    };
    seed(&base_ssh, Some((uid("-u"), uid("-g"))));
    seed(&base_local, None);
    let before = tree(&base_ssh);
    assert_eq!(before, tree(&base_local));

    let (code_ssh, ev_ssh) = s.run("run", "rollback.yml", true, &base_ssh, "rb-ssh");
    let (code_local, ev_local) = s.run("run", "rollback.yml", false, &base_local, "rb-local");
    // Exit 2: a step failed and the rollback completed.
    assert_eq!(code_ssh, 2, "{ev_ssh:#?}");
    assert_eq!(code_local, 2, "{ev_local:#?}");
    let (a, b) = (
        finishes(&ev_ssh, &base_ssh),
        finishes(&ev_local, &base_local),
    );
    assert_same(&a, &b);
    let boom = &a[&key("boom", "h2")];
    assert_eq!(boom.0, "\"failed\"");
    assert_eq!(boom.1, Some(3));
    assert_eq!(boom.2, "failing on h2\n");
    assert_eq!(a[&key("synced", "h1")].0, "\"ok\"");
    for h in ["h1", "h2", "h3"] {
        assert_eq!(a[&key("tree", h)].0, "\"changed\"", "tree on {h}");
    }
    for h in ["h1", "h2", "h3"] {
        assert_eq!(a[&key("never", h)].0, "\"not_run\"");
    }
    // The step after the failure never started.
    assert!(
        !ev_ssh
            .iter()
            .any(|v| v["event"] == "node_start" && v["step"] == "never"),
        "{ev_ssh:#?}"
    );
    let (ra, rb) = (rollbacks(&ev_ssh), rollbacks(&ev_local));
    assert_same(&ra, &rb);
    for h in ["h1", "h2", "h3"] {
        for step in [
            "replace", "add", "render", "newdir", "tree", "relink", "remove", "chmod",
        ] {
            assert_eq!(
                ra.get(&key(step, h)).map(String::as_str),
                Some("\"done\""),
                "{step} on {h}: {ra:?}"
            );
        }
    }
    // Every host is back where it started, over SSH as locally.
    assert_eq!(tree(&base_ssh), before);
    assert_eq!(tree(&base_local), before);
    let kept = ok(std::fs::metadata(base_ssh.join("h1/keep.txt")));
    assert_eq!(kept.uid(), uid("-u"));
}
