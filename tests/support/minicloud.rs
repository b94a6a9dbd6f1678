//! The mini-cloud: a small OpenStack-shaped cloud on loopback for the shipped
//! playbooks. Three sshd hosts (see `sshd.rs`): a controller `ctl01`, a compute node
//! `cmp01` and a backup host `bak01`, each with its own `host_root` (a temporary
//! directory owned by the login user) holding its config trees and glance images; a
//! real MariaDB (see `mariadb.rs`: the shared server, or one of the binary's own such
//! as its Galera node) with the nova, glance and keystone databases of a scenario's
//! prefix; and the OpenStack daemons played by small real processes
//! (`tests/fixtures/minicloud/daemon.sh`, `service_manager: command`). Also: reading a
//! run's events file (`--events`), to prove in which order its steps ran.
//!
//! Include it with `#[path = "support/minicloud.rs"] mod minicloud;` next to
//! `sshd` and `mariadb`; it brings `binary` (as `minicloud::binary`).
#![allow(dead_code)]

#[path = "binary.rs"]
pub mod binary;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::mariadb::{self, MariaDb};
use crate::sshd::{self, Sshd};
use binary::{Lifeboat, Ran};

/// The MariaDB user of the mini-cloud (TCP on 127.0.0.1), with a plain password.
pub const DB_USER: &str = "minicloud";
const DB_PASSWORD: &str = "minicloud-Pw1";

/// The daemons on each node (the shipped defaults of `vars/services.yml`).
pub const CONTROL_UNITS: &[&str] = &[
    "memcached",
    "keystone",
    "glance-api",
    "nova-api",
    "nova-conductor",
    "nova-scheduler",
    "nova-novncproxy",
];
/// The daemons of the compute node.
pub const COMPUTE_UNITS: &[&str] = &["nova-compute"];

/// A running mini-cloud.
pub struct MiniCloud {
    /// Temporary directory: inventory, keys, host roots, the controller's HOME.
    pub dir: tempfile::TempDir,
    /// The sshd hosts by inventory name.
    pub hosts: BTreeMap<String, Sshd>,
    /// Each host's `host_root`.
    pub roots: BTreeMap<String, PathBuf>,
    /// The database prefix of this cloud.
    pub prefix: String,
    /// Its MariaDB server.
    pub db: &'static MariaDb,
    /// The inventory file.
    pub inventory: PathBuf,
    /// Environment variables every run of lifeboat gets (secrets such as
    /// LIFEBOAT_OFFSITE_PASSWORD).
    pub env: Vec<(String, String)>,
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn sh(script: &str) {
    let out = ok(Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .output());
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, content: &[u8]) {
    if let Some(p) = path.parent() {
        ok(std::fs::create_dir_all(p));
    }
    ok(std::fs::write(path, content));
}

/// Deterministic pseudo-random bytes (a glance image).
fn image(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The repository's mini-cloud fixtures.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/minicloud")
        .join(name)
}

/// The shipped playbooks and drills.
pub fn shipped(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

impl MiniCloud {
    /// Starts a cloud whose hosts listen on `127.0.0.<first>`, `<first+1>`, `<first+2>`
    /// and whose databases are `<prefix>_nova`, `<prefix>_glance`, `<prefix>_keystone`
    /// on the shared MariaDB server.
    pub fn start(prefix: &str, first: u8) -> MiniCloud {
        MiniCloud::start_on(prefix, first, mariadb::server())
    }

    /// Like [`MiniCloud::start`], with its databases on `db`.
    pub fn start_on(prefix: &str, first: u8, db: &'static MariaDb) -> MiniCloud {
        let dir = ok(tempfile::Builder::new().prefix("minicloud-").tempdir());
        ok(std::fs::set_permissions(
            dir.path(),
            std::fs::Permissions::from_mode(0o755),
        ));
        let names = ["ctl01", "cmp01", "bak01"];
        let mut hosts = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            let addr = format!("127.0.0.{}", first as usize + i);
            hosts.insert(n.to_string(), ok(Sshd::start(&addr)));
        }
        db.load_openstack(prefix);
        db.sql(&format!(
            "CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';
             GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'127.0.0.1';"
        ));
        let daemon = dir.path().join("bin/daemon.sh");
        write(&daemon, &ok(std::fs::read(fixture("daemon.sh"))));
        ok(std::fs::set_permissions(
            &daemon,
            std::fs::Permissions::from_mode(0o755),
        ));

        let mut roots = BTreeMap::new();
        for n in names {
            let root = dir.path().join("roots").join(n);
            ok(std::fs::create_dir_all(root.join("run")));
            roots.insert(n.to_string(), root);
        }
        seed_controller(&roots["ctl01"], db);
        seed_compute(&roots["cmp01"]);

        // The nodes reach each other with rsync over ssh as the login user: it needs
        // the keys the inventory names. Each host's key is copied for that user.
        let keys = dir.path().join("keys");
        ok(std::fs::create_dir_all(&keys));
        let mut inv_hosts = serde_json::Map::new();
        for (n, s) in &hosts {
            let key = keys.join(n);
            ok(std::fs::copy(&s.ed25519_key, &key));
            ok(std::fs::set_permissions(
                &key,
                std::fs::Permissions::from_mode(0o600),
            ));
            inv_hosts.insert(
                n.clone(),
                json!({
                    "ansible_host": s.addr,
                    "ansible_port": s.port,
                    "ansible_user": sshd::USER,
                    "ansible_ssh_private_key_file": key.display().to_string(),
                    "lifeboat_known_hosts": s.known_hosts.display().to_string(),
                    "host_root": roots[n].display().to_string(),
                }),
            );
        }
        sh(&format!(
            "chown -R {u}: {roots} {keys}",
            u = sshd::USER,
            roots = dir.path().join("roots").display(),
            keys = keys.display()
        ));
        let host = |n: &str| json!({ n: inv_hosts[n] });
        let inventory = json!({
            "all": {
                "vars": {
                    "minicloud_daemon": daemon.display().to_string(),
                    "db_prefix": prefix,
                },
                "children": {
                    "control": { "hosts": host("ctl01") },
                    "network": { "hosts": {} },
                    "compute": { "hosts": host("cmp01") },
                    "storage": { "hosts": {} },
                    "backup": { "hosts": host("bak01") },
                }
            }
        });
        let inv_dir = dir.path().join("inventory");
        let inv_path = inv_dir.join("inventory.yml");
        write(
            &inv_path,
            ok(serde_json::to_string_pretty(&inventory)).as_bytes(),
        );
        write(
            &inv_dir.join("group_vars/all.yml"),
            &ok(std::fs::read(fixture("group_vars/all.yml"))),
        );
        ok(std::fs::create_dir_all(dir.path().join("home")));

        let cloud = MiniCloud {
            dir,
            hosts,
            roots,
            prefix: prefix.to_string(),
            db,
            inventory: inv_path,
            env: Vec::new(),
        };
        for u in CONTROL_UNITS {
            cloud.start_unit("ctl01", u);
        }
        for u in COMPUTE_UNITS {
            cloud.start_unit("cmp01", u);
        }
        cloud
    }

    /// A host's root.
    pub fn root(&self, host: &str) -> &Path {
        &self.roots[host]
    }

    /// Runs `lifeboat ARGS... -i INVENTORY` as the controller.
    pub fn lifeboat(&self, args: &[&str]) -> Ran {
        self.lifeboat_with(args, true)
    }

    /// Runs `lifeboat ARGS...` as the controller, with `-i INVENTORY` when `inventory`
    /// (`rollback` and `resume` take none: the journal names it).
    pub fn lifeboat_with(&self, args: &[&str], inventory: bool) -> Ran {
        let mut cmd = Lifeboat::new(self.dir.path())
            .lock_dir(self.dir.path().join("roots/.locks"))
            .args(args);
        if inventory {
            cmd = cmd.arg("-i").arg(&self.inventory);
        }
        cmd.envs(self.env.iter().cloned()).run()
    }

    /// Adds variables to the inventory: to `all` (host `None`) or to one host. They win
    /// over `group_vars/all.yml` only at the host level, as in Ansible.
    pub fn set_vars(&self, host: Option<&str>, vars: serde_json::Value) {
        let text = ok(std::fs::read_to_string(&self.inventory));
        let mut inv: serde_json::Value = ok(serde_json::from_str(&text));
        let target = match host {
            None => &mut inv["all"]["vars"],
            Some(h) => {
                let groups = ["control", "network", "compute", "storage", "backup"];
                let g = groups
                    .iter()
                    .find(|g| !inv["all"]["children"][**g]["hosts"][h].is_null())
                    .unwrap_or_else(|| panic!("{h} is not in the inventory"));
                &mut inv["all"]["children"][*g]["hosts"][h]
            }
        };
        for (k, v) in vars.as_object().cloned().unwrap_or_default() {
            target[k] = v;
        }
        write(
            &self.inventory,
            ok(serde_json::to_string_pretty(&inv)).as_bytes(),
        );
    }

    /// Where the database of this cloud listens, and its login (user, password): for
    /// clouds that log in with db_login_* rather than the controller's option file.
    pub fn db_login(&self) -> (u16, &'static str, &'static str) {
        (self.db.port, DB_USER, DB_PASSWORD)
    }

    /// Runs a shipped playbook and returns (exit code, console output).
    pub fn run(&self, playbook: &str, extra: &[&str]) -> (i32, String) {
        let path = shipped(playbook);
        let path = path.display().to_string();
        let mut args = vec!["run", path.as_str()];
        for e in extra {
            args.push("-e");
            args.push(e);
        }
        let out = self.lifeboat(&args);
        (out.code, format!("{}\n{}", out.stdout, out.stderr))
    }

    /// Runs a shipped playbook with `--events` (and `extra` arguments, e.g. `-e k=v` or
    /// `--no-rollback`) and returns what the run did.
    pub fn run_events(&self, playbook: &str, extra: &[&str]) -> RunResult {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let events = self.dir.path().join(format!("events-{n}.jsonl"));
        let path = shipped(playbook).display().to_string();
        let events_arg = events.display().to_string();
        let mut args = vec!["run", path.as_str(), "--events", events_arg.as_str()];
        args.extend(extra);
        let out = self.lifeboat(&args);
        let (run_id, nodes) = read_events(&events);
        RunResult {
            code: out.code,
            out: format!("{}\n{}", out.stdout, out.stderr),
            run_id,
            nodes,
        }
    }

    /// The pid of a running daemon, when it runs.
    pub fn unit_pid(&self, host: &str, unit: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.root(host).join(format!("run/{unit}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        (!zombie).then_some(pid)
    }

    /// The daemons running on each host, by name.
    pub fn running(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for (host, units) in [("ctl01", CONTROL_UNITS), ("cmp01", COMPUTE_UNITS)] {
            let up: Vec<String> = units
                .iter()
                .filter(|u| self.unit_pid(host, u).is_some())
                .map(|u| u.to_string())
                .collect();
            out.insert(host.to_string(), up);
        }
        out
    }

    /// Starts a daemon as the login user, as the inventory's start command does, and
    /// waits for its pid file.
    pub fn start_unit(&self, host: &str, unit: &str) {
        let root = self.root(host).display().to_string();
        let daemon = self.dir.path().join("bin/daemon.sh");
        sh(&format!(
            "su -s /bin/sh {u} -c 'setsid -f bash {d} {unit} {root} </dev/null >/dev/null 2>&1'",
            u = sshd::USER,
            d = daemon.display()
        ));
        wait("the daemon's pid file", || {
            self.unit_pid(host, unit).is_some()
        });
    }

    /// Stops a daemon (sabotage) and waits until it is gone.
    pub fn stop_unit(&self, host: &str, unit: &str) {
        let pid = self
            .unit_pid(host, unit)
            .unwrap_or_else(|| panic!("{unit} is not running on {host}"));
        sh(&format!("kill {pid}"));
        ok(std::fs::remove_file(
            self.root(host).join(format!("run/{unit}.pid")),
        ));
        wait("the daemon's end", || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .map(|s| {
                        s.lines()
                            .any(|l| l.starts_with("State:") && l.contains('Z'))
                    })
                    .unwrap_or(true)
        });
    }

    /// The database names of this cloud.
    pub fn databases(&self) -> Vec<String> {
        ["nova", "glance", "keystone"]
            .iter()
            .map(|s| format!("{}_{s}", self.prefix))
            .collect()
    }

    /// `db.table -> (rows, CHECKSUM TABLE)` of every table of this cloud's databases.
    pub fn db_checksums(&self) -> BTreeMap<String, String> {
        self.db_checksums_on(self.db)
    }

    /// [`MiniCloud::db_checksums`] of this cloud's databases on another server (where a
    /// dump of them was imported).
    pub fn db_checksums_on(&self, db: &MariaDb) -> BTreeMap<String, String> {
        let list = self
            .databases()
            .iter()
            .map(|d| mariadb::sql_literal(d))
            .collect::<Vec<_>>()
            .join(",");
        let tables = db.sql(&format!(
            "SELECT CONCAT('`', TABLE_SCHEMA, '`.`', TABLE_NAME, '`') FROM information_schema.TABLES
             WHERE TABLE_SCHEMA IN ({list}) AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
        ));
        let mut out = BTreeMap::new();
        for t in tables.lines().filter(|l| !l.is_empty()) {
            let rows = db.sql(&format!("SELECT COUNT(*) FROM {t}"));
            let sum = db.sql(&format!("CHECKSUM TABLE {t}"));
            let sum = sum.split('\t').nth(1).unwrap_or("").trim().to_string();
            out.insert(t.to_string(), format!("{} {sum}", rows.trim()));
        }
        out
    }

    /// Every file, directory and link under the nodes' roots (ctl01, cmp01) with mode
    /// and content, leaving out what the playbooks and daemons keep on the side: pid
    /// files, scratch and safety dumps, the `.orig-*` copies moved aside and the
    /// rollback snapshots rsync leaves.
    pub fn node_files(&self) -> BTreeMap<String, (u32, Vec<u8>)> {
        let mut out = BTreeMap::new();
        for host in ["ctl01", "cmp01"] {
            let root = self.root(host);
            let mut stack = vec![root.to_path_buf()];
            while let Some(p) = stack.pop() {
                let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if rel == "run"
                    || rel == "var/tmp"
                    || rel == "var/backups"
                    || name.contains(".orig-")
                    || name.contains(".lifeboat-")
                {
                    continue;
                }
                let meta = ok(std::fs::symlink_metadata(&p));
                let mode = meta.permissions().mode();
                let key = format!("{host}:{rel}");
                if meta.is_dir() {
                    out.insert(format!("{key}/"), (mode, Vec::new()));
                    for e in ok(std::fs::read_dir(&p)) {
                        stack.push(ok(e).path());
                    }
                } else if meta.file_type().is_symlink() {
                    let t = ok(std::fs::read_link(&p));
                    out.insert(
                        format!("{key}@"),
                        (mode, t.display().to_string().into_bytes()),
                    );
                } else {
                    out.insert(key, (mode, ok(std::fs::read(&p))));
                }
            }
        }
        out
    }

    /// The backup host's folder for a node.
    pub fn backups_of(&self, host: &str) -> PathBuf {
        self.root("bak01").join("srv/backup").join(host)
    }
}

impl Drop for MiniCloud {
    fn drop(&mut self) {
        // Stop the daemons this cloud started (by their pid files), then the sshds.
        for root in self.roots.values() {
            for e in std::fs::read_dir(root.join("run"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Some(pid) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                {
                    sshd::signal(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    }
}

/// What a run did, from its exit code, console and events file.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The exit code.
    pub code: i32,
    /// stdout and stderr.
    pub out: String,
    /// The run's id (its `run_start` event).
    pub run_id: String,
    /// Its nodes, in the order they finished.
    pub nodes: Vec<NodeRun>,
}

impl RunResult {
    /// The node of `step` on `host`.
    #[track_caller]
    pub fn node(&self, step: &str, host: &str) -> &NodeRun {
        self.nodes
            .iter()
            .find(|n| n.step == step && n.host == host)
            .unwrap_or_else(|| panic!("no node {step} @ {host}\n{}", self.out))
    }
}

/// One node of a run, read from its `node_finish` event.
#[derive(Debug, Clone)]
pub struct NodeRun {
    /// Step id.
    pub step: String,
    /// Inventory host.
    pub host: String,
    /// `ok`, `changed`, `skipped`, `failed`, ...
    pub status: String,
    /// Seconds since the run began, when the node started and when it ended.
    pub start: f64,
    pub end: f64,
    /// Its message and standard output.
    pub msg: String,
    pub stdout: String,
}

/// The run id and the nodes of a run from its events file (`--events`), the nodes in
/// the order they finished.
pub fn read_events(events: &Path) -> (String, Vec<NodeRun>) {
    let text = ok(std::fs::read_to_string(events));
    let mut run_id = String::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let e: serde_json::Value = ok(serde_json::from_str(line));
        let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        if e["event"] == "run_start" {
            run_id = s("run_id");
        }
        if e["event"] != "node_finish" {
            continue;
        }
        let start = e["started"].as_f64().unwrap_or(f64::NAN);
        out.push(NodeRun {
            step: s("step"),
            host: s("host"),
            status: s("status"),
            start,
            end: start + e["duration"].as_f64().unwrap_or(f64::NAN),
            msg: s("msg"),
            stdout: s("stdout"),
        });
    }
    (run_id, out)
}

/// Polls until `f` holds, failing after 15 seconds.
pub fn wait(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn seed_controller(root: &Path, db: &MariaDb) {
    let w = |rel: &str, content: &str| write(&root.join(rel), content.as_bytes());
    w(
        "etc/nova/nova.conf",
        "[DEFAULT]\ntransport_url = rabbit://openstack@ctl01\n[api_database]\nconnection = mysql+pymysql://nova@ctl01/nova_api\n",
    );
    w(
        "etc/nova/api-paste.ini",
        "[composite:osapi_compute]\nuse = call:nova.api.openstack.urlmap:urlmap_factory\n",
    );
    w(
        "etc/nova/rootwrap.d/compute.filters",
        "[Filters]\nkill: KillFilter, root, /bin/kill\n",
    );
    w("var/lib/nova/keys/README", "nova state on the controller\n");
    w(
        "etc/glance/glance-api.conf",
        "[DEFAULT]\nbind_port = 9292\n[glance_store]\nfilesystem_store_datadir = /var/lib/glance/images/\n",
    );
    for (i, id) in [
        "3f1c1a8e-6a2b-4b8e-9d0e-1b2c3d4e5f60",
        "8d7e6f5a-4b3c-2d1e-0f9a-8b7c6d5e4f30",
    ]
    .iter()
    .enumerate()
    {
        write(
            &root.join(format!("var/lib/glance/images/{id}")),
            &image(i as u64 + 1, 256 * 1024),
        );
    }
    w("etc/keystone/keystone.conf", "[token]\nprovider = fernet\n");
    // Debian's per-daemon overrides (an operator's files: keystone's here, nova-api's
    // absent) and memcached's configuration: single files the backup covers.
    w(
        "etc/default/keystone",
        "DAEMON_ARGS=\"--ini /etc/keystone/keystone-uwsgi.ini --http-socket 127.0.0.1:5000\"\n",
    );
    w("etc/memcached.conf", "-m 64\n-p 11211\n-l 127.0.0.1\n");
    w(
        "etc/keystone/fernet-keys/0",
        "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMDA=\n",
    );
    w(
        "etc/keystone/fernet-keys/1",
        "YmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vMTE=\n",
    );
    w(
        "etc/keystone/credential-keys/0",
        "Y3JlZGVudGlhbGtleWNyZWRlbnRpYWxrZXljcmVkMDA=\n",
    );
    w("var/lib/keystone/README", "keystone state\n");
    // The database login of the playbooks: a 0600 client option file.
    w(
        "etc/mysql/lifeboat.cnf",
        &format!(
            "[client]\nuser={DB_USER}\npassword={DB_PASSWORD}\nhost=127.0.0.1\nport={}\n",
            db.port
        ),
    );
    ok(std::fs::set_permissions(
        root.join("etc/mysql/lifeboat.cnf"),
        std::fs::Permissions::from_mode(0o600),
    ));
    ok(std::fs::set_permissions(
        root.join("etc/keystone/fernet-keys"),
        std::fs::Permissions::from_mode(0o700),
    ));
}

fn seed_compute(root: &Path) {
    let w = |rel: &str, content: &[u8]| write(&root.join(rel), content);
    w(
        "etc/nova/nova.conf",
        b"[DEFAULT]\ncompute_driver = libvirt.LibvirtDriver\n[libvirt]\nvirt_type = kvm\n",
    );
    w("var/lib/nova/.ssh/config", b"StrictHostKeyChecking no\n");
    // A running instance's disk: never backed up, never touched by a restore.
    w(
        "var/lib/nova/instances/6b1d2c3e-0000-4000-8000-000000000001/disk",
        &image(42, 128 * 1024),
    );
}
