//! The real OpenStack control plane for the shipped playbooks: Debian 12's own packages
//! (keystone, glance, placement, nova, neutron, cinder; Zed), RabbitMQ, memcached and a
//! MariaDB of its own on 127.0.0.1, started by their init scripts without systemd
//! (`tests/fixtures/openstack/rig.sh`, after shared/reference/openstack-on-debian.md).
//! The packages' paths are the machine's own (/etc/keystone, /var/lib/glance/images),
//! so there is one control plane: [`rig`] hands it to one test at a time, reset to
//! the golden state (bootstrapped once, kept in /var/tmp/lifeboat-openstack-rig while
//! its scripts are unchanged). A watchdog stops every daemon when the test binary ends.
//!
//! The controller `ctl01` and the backup host `bak01` are reached as operators reach
//! them: over SSH (two sshd on 127.0.0.1 and 127.0.0.2) as the login user `lifeboat-op`
//! (shell /bin/sh) with become (sudo without a password), never as root. The database
//! login is a 0600 client option file on the controller (`db_defaults_file`).
//!
//! The proofs ([`Proofs`]) go through the real APIs with the `openstack` client and curl.
//!
//! Include it with `#[path = "support/openstack.rs"] mod openstack;` next to `sshd`.
#![allow(dead_code)]

#[path = "binary.rs"]
pub mod binary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::sshd::{self, Sshd};
use binary::{Lifeboat, Ran};

/// The rig's directory (MariaDB datadir, golden state, logs), as `env.sh` says.
pub const RIG_DIR: &str = "/var/tmp/lifeboat-openstack-rig";
/// The login user of the rig's hosts: sudo without a password.
pub const OP_USER: &str = "lifeboat-op";
/// keystone's port (env.sh).
pub const KEYSTONE: u16 = 25000;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` (standard input closed); its standard output, or a panic naming `what`
/// with both outputs.
fn checked(mut cmd: Command, what: &str) -> String {
    let out = ok(cmd.stdin(Stdio::null()).output());
    assert!(
        out.status.success(),
        "{what} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a bash script as root; its standard output, or a panic with its error output.
pub fn sh(script: &str) -> String {
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script]);
    checked(cmd, script)
}

/// A file of tests/fixtures/openstack.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openstack")
        .join(name)
}

/// The shipped playbooks and drills.
pub fn shipped(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn rig_sh(args: &[&str]) {
    let mut cmd = Command::new(fixture("rig.sh"));
    cmd.args(args);
    checked(cmd, &format!("rig.sh {args:?}"));
}

/// The login user with sudo without a password (created once).
fn ensure_operator() {
    sh(&format!(
        "id {u} >/dev/null 2>&1 || useradd -m -s /bin/sh {u}
         echo '{u}:'\"$(head -c 12 /dev/urandom | base64)\" | chpasswd
         f=/etc/sudoers.d/{u}
         [ \"$(cat $f 2>/dev/null)\" = '{u} ALL=(ALL) NOPASSWD: ALL' ] || {{
           echo '{u} ALL=(ALL) NOPASSWD: ALL' > $f.tmp && chmod 0440 $f.tmp && mv $f.tmp $f; }}",
        u = OP_USER
    ));
}

/// The control plane and the hosts that reach it.
pub struct Rig {
    /// Temporary directory: inventory, keys, backups, the controller's HOME.
    pub dir: tempfile::TempDir,
    /// The controller (127.0.0.1) and the backup host (127.0.0.2).
    pub ctl: Sshd,
    pub bak: Sshd,
    /// The inventory file (YAML).
    pub inventory: PathBuf,
    /// Where the backup host keeps the backups.
    pub backup_root: PathBuf,
}

static RIG: Mutex<Option<Rig>> = Mutex::new(None);

/// The control plane, reset to its golden state, for this test alone.
pub fn rig() -> MutexGuard<'static, Option<Rig>> {
    let mut guard = RIG.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        // One user of the control plane at a time on this machine (another test binary,
        // bench/w7-control-plane): held until this process ends.
        ok(std::fs::create_dir_all(RIG_DIR));
        let session = ok(std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("{RIG_DIR}/session.lock")));
        ok(session.lock());
        std::mem::forget(session);
        ensure_operator();
        // Stops every daemon once this test binary has ended, however it ends.
        ok(Command::new("setsid")
            .arg("-f")
            .arg(fixture("rig.sh"))
            .args(["watchdog", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status());
        rig_sh(&["ensure"]);
        *guard = Some(Rig::new());
    } else {
        rig_sh(&["reset"]);
        if let Some(r) = guard.as_ref() {
            let _ = std::fs::remove_dir_all(&r.backup_root);
            ok(std::fs::create_dir_all(&r.backup_root));
        }
    }
    guard
}

impl Rig {
    fn new() -> Rig {
        let dir = ok(tempfile::Builder::new().prefix("openstack-rig-").tempdir());
        sh(&format!("chmod 755 {}", dir.path().display()));
        let allow = |addr: &str| sshd::Options {
            addr: addr.into(),
            extra: vec![format!("AllowUsers {OP_USER}")],
            ..sshd::Options::default()
        };
        let ctl = ok(Sshd::with(allow("127.0.0.1")));
        let bak = ok(Sshd::with(allow("127.0.0.2")));
        // The rig is never dropped (a static): the watchdog stops these servers too.
        ok(std::fs::write(
            format!("{RIG_DIR}/run/test-pids"),
            format!("{} {}\n", ctl.pid(), bak.pid()),
        ));
        let backup_root = dir.path().join("backups");
        ok(std::fs::create_dir_all(&backup_root));
        let keys = dir.path().join("keys");
        ok(std::fs::create_dir_all(&keys));
        let host = |name: &str, s: &Sshd| {
            let key = keys.join(name);
            ok(std::fs::copy(&s.ed25519_key, &key));
            sh(&format!("chmod 600 {}", key.display()));
            json!({
                "ansible_host": s.addr,
                "ansible_port": s.port,
                "ansible_user": OP_USER,
                "ansible_become": true,
                "ansible_ssh_private_key_file": key.display().to_string(),
                "lifeboat_known_hosts": s.known_hosts.display().to_string(),
            })
        };
        let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
        let inventory = json!({
            "all": {
                "vars": {
                    // As an operator of a Debian-packaged controller without systemd sets it.
                    "deployment": "packages",
                    "service_manager": "sysv",
                    "service_wait": "180s",
                    "backup_root": backup_root.display().to_string(),
                    "backup_services": ["rabbitmq", "keystone", "glance", "placement", "nova", "neutron", "cinder"],
                    "db_defaults_file": format!("{RIG_DIR}/lifeboat-db.cnf"),
                    // The rig's ports (env.sh), not Debian's defaults.
                    "service_ready": {
                        "keystone": url(KEYSTONE, "/v3/"),
                        "glance-api": url(29292, "/"),
                        "placement-api": url(28778, "/"),
                        "nova-api": url(28774, "/"),
                        "neutron-api": url(29696, "/"),
                        "cinder-api": url(28776, "/"),
                    },
                },
                "children": {
                    "control": { "hosts": { "ctl01": host("ctl01", &ctl) } },
                    "network": { "hosts": {} },
                    "compute": { "hosts": {} },
                    "storage": { "hosts": {} },
                    "backup": { "hosts": { "bak01": host("bak01", &bak) } },
                }
            }
        });
        let path = dir.path().join("inventory.yml");
        ok(std::fs::write(
            &path,
            ok(serde_json::to_string_pretty(&inventory)),
        ));
        ok(std::fs::create_dir_all(dir.path().join("home")));
        // The host locks are taken on the hosts by the login user (LIFEBOAT_LOCK_DIR).
        sh(&format!(
            "mkdir -p {d}/locks && chown {OP_USER}: {d}/locks",
            d = dir.path().display()
        ));
        Rig {
            dir,
            ctl,
            bak,
            inventory: path,
            backup_root,
        }
    }

    /// Runs `lifeboat ARGS... -i INVENTORY` as the controller (a control-plane restore
    /// takes minutes: ten at the most).
    pub fn lifeboat(&self, args: &[&str]) -> Ran {
        self.lifeboat_env(args, &[])
    }

    /// The same with environment variables (the secrets a playbook reads).
    pub fn lifeboat_env(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        Lifeboat::new(self.dir.path())
            .timeout(Duration::from_secs(600))
            .envs(env.iter().copied())
            .args(args)
            .arg("-i")
            .arg(&self.inventory)
            .run()
    }

    /// Runs a shipped drill with `-e` settings (the admin openrc is the rig's) and a JSON
    /// report; (exit code, console output, the report).
    pub fn drill(&self, drill: &str, extra: &[&str]) -> (i32, String, serde_json::Value) {
        self.drill_env(drill, extra, &[])
    }

    /// The same with environment variables (the secrets the drill reads).
    pub fn drill_env(
        &self,
        drill: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (i32, String, serde_json::Value) {
        let path = shipped(drill).display().to_string();
        let report = self.dir.path().join("drill.json");
        let _ = std::fs::remove_file(&report);
        let report_arg = report.display().to_string();
        let openrc = format!("cloud_openrc={RIG_DIR}/admin-openrc");
        let mut args = vec![
            "drill",
            path.as_str(),
            "--report",
            report_arg.as_str(),
            "-e",
            openrc.as_str(),
        ];
        for e in extra {
            args.push("-e");
            args.push(e);
        }
        let out = self.lifeboat_env(&args, env);
        let report = std::fs::read_to_string(&report)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        (out.code, format!("{}\n{}", out.stdout, out.stderr), report)
    }
}

/// An `openstack` client command as admin (`env` overrides: another user).
fn openstack(args: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("bash");
    cmd.args([
        "-c",
        &format!(". {RIG_DIR}/admin-openrc && openstack {args}"),
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    checked(cmd, &format!("openstack {args}"))
        .trim()
        .to_string()
}

/// What the proofs compare before and after a restore: tokens issued before the
/// disaster, the records of every service by id, an encrypted credential, the images'
/// bytes against the checksums glance recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Proofs {
    /// An admin token and a user's token, issued before the disaster.
    pub admin_token: String,
    pub user_token: String,
    /// Sorted listings (ids, names, status) of every kind of record.
    pub records: BTreeMap<String, String>,
    /// The credential's id and decrypted blob.
    pub credential: (String, String),
}

const PROBE_USER: [(&str, &str); 3] = [
    ("OS_USERNAME", "probe-user"),
    ("OS_PASSWORD", "probe-user-pw"),
    ("OS_PROJECT_NAME", "probe-proj"),
];

impl Proofs {
    /// Issues the tokens and reads what a restore must bring back.
    pub fn take() -> Proofs {
        let admin_token = openstack("token issue -f value -c id", &[]);
        let user_token = openstack("token issue -f value -c id", &PROBE_USER);
        let credential = openstack("credential list -f value -c ID", &[]);
        let credential = credential.lines().next().unwrap_or_default().to_string();
        let blob = openstack(
            &format!("credential show {credential} -f value -c blob"),
            &[],
        );
        Proofs {
            admin_token,
            user_token,
            records: records(),
            credential: (credential, blob),
        }
    }

    /// HTTP status of validating `subject` with `auth` (200: valid).
    pub fn validate(auth: &str, subject: &str) -> String {
        sh(&format!(
            "curl -s -o /dev/null -m 10 -w '%{{http_code}}' -H 'X-Auth-Token: {auth}' \
             -H 'X-Subject-Token: {subject}' http://127.0.0.1:{KEYSTONE}/v3/auth/tokens || true"
        ))
    }

    /// Every proof after a restore: the old tokens validate, the user's old password
    /// logs in, the credential decrypts to the same blob, every record is there as
    /// before, every image downloads with the checksum glance recorded, nova's checks
    /// pass and every conductor and scheduler reports in after `since` (unix seconds).
    pub fn check_after_restore(&self, since: u64) {
        assert_eq!(
            Proofs::validate(&self.admin_token, &self.user_token),
            "200",
            "a token issued before the disaster does not validate"
        );
        openstack("token issue -f value -c id", &PROBE_USER);
        let blob = openstack(
            &format!("credential show {} -f value -c blob", self.credential.0),
            &[],
        );
        assert_eq!(
            blob, self.credential.1,
            "the credential decrypts differently"
        );
        // Every record listed before is there again (a drill adds its own records after
        // these were taken, and compares its own listing whole).
        let now = records();
        for (kind, before) in &self.records {
            let after = now.get(kind).map(String::as_str).unwrap_or_default();
            let lost: Vec<&str> = before
                .lines()
                .filter(|l| !after.lines().any(|a| a == *l))
                .collect();
            assert!(
                lost.is_empty(),
                "{kind} lost by the restore: {lost:?}\nnow: {after}"
            );
        }
        images_match_glance();
        let status = sh("su nova -s /bin/sh -c 'nova-status upgrade check' 2>&1");
        assert!(
            status.contains("Result: Success") && !status.contains("Failure"),
            "nova-status upgrade check: {status}"
        );
        let cells = sh("su nova -s /bin/sh -c 'nova-manage cell_v2 list_cells' 2>/dev/null");
        assert!(
            cells.contains("cell0") && cells.contains("cell1"),
            "cell_v2 list_cells: {cells}"
        );
        services_report_in(since);
    }
}

/// Sorted listings of every kind of record, by kind.
fn records() -> BTreeMap<String, String> {
    let kinds = [
        ("projects", "project list -f value -c ID -c Name"),
        ("users", "user list -f value -c ID -c Name"),
        (
            "role assignments",
            "role assignment list -f value -c Role -c User -c Project",
        ),
        ("endpoints", "endpoint list -f value -c ID -c URL"),
        ("images", "image list -f value -c ID -c Name -c Status"),
        ("flavors", "flavor list -f value -c ID -c Name"),
        (
            "servers",
            "server list --all-projects -f value -c ID -c Name -c Status",
        ),
        ("networks", "network list -f value -c ID -c Name"),
        ("subnets", "subnet list -f value -c ID -c Name -c Subnet"),
        ("ports", "port list -f value -c ID -c Name"),
        (
            "volumes",
            "volume list --all-projects -f value -c ID -c Name -c Status",
        ),
    ];
    kinds
        .iter()
        .map(|(k, c)| {
            let mut lines: Vec<String> = openstack(c, &[]).lines().map(String::from).collect();
            lines.sort();
            (k.to_string(), lines.join("\n"))
        })
        .collect()
}

/// Every image downloads, and its bytes have the checksum glance recorded.
fn images_match_glance() {
    let ids = openstack("image list -f value -c ID", &[]);
    assert!(!ids.is_empty(), "no image to download");
    for id in ids.lines() {
        let want = openstack(&format!("image show {id} -f value -c checksum"), &[]);
        let got = sh(&format!(
            ". {RIG_DIR}/admin-openrc && f=$(mktemp) && openstack image save --file $f {id} \
             && md5sum $f | cut -d' ' -f1 && rm -f $f"
        ));
        assert_eq!(got.trim(), want, "image {id} downloads other bytes");
    }
}

/// nova-conductor, nova-scheduler and cinder-scheduler are up and have reported after
/// `since` (unix seconds): a record restored from the backup says "up" for a while
/// whether the daemon runs or not, its own heartbeat proves it does.
fn services_report_in(since: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let wanted = ["nova-conductor", "nova-scheduler", "cinder-scheduler"];
    loop {
        let mut missing = Vec::new();
        let listing = format!(
            "{}\n{}",
            openstack("compute service list -f json", &[]),
            openstack("volume service list -f json", &[])
        );
        for w in wanted {
            let fresh = listing.split('{').any(|rec| {
                rec.contains(&format!("\"{w}\""))
                    && rec.contains("\"State\": \"up\"")
                    && updated_after(rec, since)
            });
            if !fresh {
                missing.push(w);
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} did not report in after the restore:\n{listing}"
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
}

fn updated_after(record: &str, since: u64) -> bool {
    let Some(at) = record
        .split("\"Updated At\": \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
    else {
        return false;
    };
    let at = at.split('.').next().unwrap_or(at);
    let secs = sh(&format!("date -u -d '{at}' +%s || echo 0"));
    secs.trim().parse::<u64>().unwrap_or(0) >= since
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Replaces keystone's fernet keys with new ones and restarts keystone and memcached:
/// the negative control (tokens of the old keys must no longer validate).
pub fn foreign_fernet_keys() {
    sh("/etc/init.d/keystone stop >/dev/null; /etc/init.d/memcached stop >/dev/null
        rm -rf /etc/keystone/fernet-keys
        keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone >/dev/null 2>&1
        /etc/init.d/memcached start >/dev/null; /etc/init.d/keystone start >/dev/null
        for i in $(seq 1 300); do
          [ \"$(curl -s -o /dev/null -m 5 -w '%{http_code}' http://127.0.0.1:25000/v3/)\" = 200 ] && exit 0
          sleep 0.2
        done; exit 1");
}

/// Owner, group and mode of everything in the trees a restore puts back, by path.
pub fn owners_and_modes() -> String {
    sh(
        "find /etc/keystone /etc/glance /etc/placement /etc/nova /etc/neutron /etc/cinder \
        /var/lib/glance/images /etc/default/keystone /etc/default/nova-api /etc/memcached.conf \
        -printf '%p %u:%g %m\\n' | sort",
    )
}
