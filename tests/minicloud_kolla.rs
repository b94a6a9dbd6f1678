//! The shipped kolla example inventory (`inventory/multinode`, `deployment=kolla`)
//! against the shipped playbooks: its ten hosts are played by one machine (a copy of
//! the file, unchanged, with `host_vars/` beside it that put each host on the local
//! connection under its own `host_root`), docker by a fake `docker` command that logs
//! every call and says which containers run, and kolla's MariaDB (Galera) by a one-node
//! Galera cluster (support/mariadb.rs).
//!
//! 1. `lifeboat plan` of backup.yml: every node planned, nothing changed; the copies
//!    named are kolla's (/etc/kolla/<container>, the docker volumes);
//! 2. the real backup of the kolla trees: the right directories of the right hosts,
//!    the live instances left out;
//! 3. `lifeboat plan` of restore-service.yml for nova: the containers it would stop are
//!    kolla's (nova_api, nova_scheduler, nova_conductor, nova_novncproxy on the
//!    controllers, nova_compute and nova_ssh on the compute nodes, never nova_libvirt),
//!    the directories it would move aside are /etc/kolla's; docker was only asked,
//!    never told to stop or start anything, and nothing changed.

#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/minicloud.rs"]
mod minicloud;
#[path = "support/sshd.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use minicloud::binary::Lifeboat;
use minicloud::{NodeRun, read_events};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

const CONTROL: [&str; 3] = ["control01", "control02", "control03"];
const COMPUTE: [&str; 4] = ["compute01", "compute02", "compute03", "compute04"];
const OTHERS: [&str; 3] = ["network01", "storage01", "backup01"];

/// kolla's containers of keystone, glance and nova: on the controllers, and on the
/// compute nodes (with nova_libvirt, which a restore never stops).
const CONTROL_CONTAINERS: [&str; 8] = [
    "keystone",
    "keystone_ssh",
    "keystone_fernet",
    "glance_api",
    "nova_api",
    "nova_scheduler",
    "nova_conductor",
    "nova_novncproxy",
];
const COMPUTE_CONTAINERS: [&str; 3] = ["nova_ssh", "nova_compute", "nova_libvirt"];

/// kolla's configuration directories and volumes of keystone, glance and nova.
const CONTROL_DIRS: [&str; 10] = [
    "etc/kolla/keystone",
    "etc/kolla/keystone-ssh",
    "etc/kolla/keystone-fernet",
    "etc/kolla/glance-api",
    "etc/kolla/nova-api",
    "etc/kolla/nova-scheduler",
    "etc/kolla/nova-conductor",
    "etc/kolla/nova-novncproxy",
    "var/lib/docker/volumes/keystone_fernet_tokens/_data",
    "var/lib/docker/volumes/glance/_data",
];
const COMPUTE_DIRS: [&str; 4] = [
    "etc/kolla/nova-compute",
    "etc/kolla/nova-libvirt",
    "etc/kolla/nova-ssh",
    "var/lib/docker/volumes/nova_compute/_data",
];

fn write(path: &Path, content: &str) {
    if let Some(p) = path.parent() {
        ok(std::fs::create_dir_all(p));
    }
    ok(std::fs::write(path, content));
}

/// The kolla cloud on one machine.
struct Kolla {
    dir: tempfile::TempDir,
    inventory: PathBuf,
}

impl Kolla {
    fn new() -> Kolla {
        let dir = ok(tempfile::Builder::new().prefix("kolla-").tempdir());
        let root = dir.path();
        // The shipped inventory, unchanged, and host_vars beside it.
        let inventory = root.join("multinode");
        ok(std::fs::copy(
            minicloud::shipped("inventory/multinode"),
            &inventory,
        ));
        // kolla's MariaDB is a Galera cluster: the shipped inventory says galera=true.
        let db = mariadb::galera();
        db.load_openstack("kol");
        for host in CONTROL.iter().chain(&COMPUTE).chain(&OTHERS) {
            let mut vars = format!(
                "ansible_connection: local\nansible_become: false\nhost_root: {}\n",
                root.join("roots").join(host).display()
            );
            if *host == "control03" {
                // The database host: its MariaDB is the test server.
                vars.push_str("ansible_host: 127.0.0.1\n");
            }
            write(&root.join(format!("host_vars/{host}.yml")), &vars);
        }
        write(
            &root.join("group_vars/all.yml"),
            "backup_services: [keystone, glance, nova]\n\
             service_databases:\n  keystone: [kol_keystone]\n  glance: [kol_glance]\n  nova: [kol_nova]\n",
        );
        // The login of the shipped db_defaults_file, on the database host.
        let cnf = root.join("roots/control03/etc/lifeboat/mariadb-backup.cnf");
        write(
            &cnf,
            &format!(
                "[client]\nuser={}\npassword=\"{}\"\nport={}\n",
                mariadb::USER,
                mariadb::PASSWORD.replace('\\', "\\\\").replace('"', "\\\""),
                db.port
            ),
        );
        ok(std::fs::set_permissions(
            &cnf,
            std::fs::Permissions::from_mode(0o600),
        ));
        for host in CONTROL {
            let r = root.join("roots").join(host);
            for d in CONTROL_DIRS {
                write(
                    &r.join(d).join("config.json"),
                    &format!("{{\"dir\": \"{d}\"}}\n"),
                );
            }
            write(
                &r.join("var/lib/docker/volumes/keystone_fernet_tokens/_data/0"),
                "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMDA=\n",
            );
            write(
                &r.join("var/lib/docker/volumes/glance/_data/images/3f1c1a8e"),
                "image bytes\n",
            );
        }
        for host in COMPUTE {
            let r = root.join("roots").join(host);
            for d in COMPUTE_DIRS {
                write(
                    &r.join(d).join("config.json"),
                    &format!("{{\"dir\": \"{d}\"}}\n"),
                );
            }
            write(
                &r.join("var/lib/docker/volumes/nova_compute/_data/instances/6b1d2c3e/disk"),
                "a running instance's disk\n",
            );
        }
        for host in OTHERS {
            ok(std::fs::create_dir_all(root.join("roots").join(host)));
        }
        // docker: every call logged; `inspect` says the kolla containers run.
        let running = CONTROL_CONTAINERS
            .iter()
            .chain(&COMPUTE_CONTAINERS)
            .copied()
            .collect::<Vec<_>>()
            .join("\n");
        write(&root.join("running"), &format!("{running}\n"));
        let docker = root.join("bin/docker");
        write(
            &docker,
            &format!(
                "#!/bin/sh\n\
                 echo \"$*\" >> '{log}'\n\
                 if [ \"$1\" = inspect ]; then\n\
                 \x20 for name; do :; done\n\
                 \x20 if grep -qx -- \"$name\" '{running}'; then echo true; exit 0; fi\n\
                 \x20 echo \"Error: No such object: $name\" >&2; exit 1\n\
                 fi\n\
                 exit 0\n",
                log = root.join("docker.log").display(),
                running = root.join("running").display()
            ),
        );
        ok(std::fs::set_permissions(
            &docker,
            std::fs::Permissions::from_mode(0o755),
        ));
        Kolla { dir, inventory }
    }

    /// Runs `lifeboat ARGS -i multinode --events FILE`: (exit code, output, nodes).
    fn lifeboat(&self, args: &[&str], events: &str) -> (i32, String, Vec<NodeRun>) {
        let events = self.dir.path().join(events);
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Lifeboat::new(self.dir.path())
            .args(args)
            .arg("-i")
            .arg(&self.inventory)
            .arg("--events")
            .arg(&events)
            .env("PATH", path)
            .run();
        (
            out.code,
            format!("{}\n{}", out.stdout, out.stderr),
            read_events(&events).1,
        )
    }

    /// Every path under the hosts' roots with its content (directories end in `/`).
    fn tree(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let root = self.dir.path().join("roots");
        let mut stack = vec![root.clone()];
        while let Some(p) = stack.pop() {
            let rel = p.strip_prefix(&root).unwrap_or(&p).display().to_string();
            let meta = ok(std::fs::symlink_metadata(&p));
            if meta.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                for e in ok(std::fs::read_dir(&p)) {
                    stack.push(ok(e).path());
                }
            } else if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    ok(std::fs::read_link(&p))
                        .display()
                        .to_string()
                        .into_bytes(),
                );
            } else {
                out.insert(rel, ok(std::fs::read(&p)));
            }
        }
        out
    }

    fn docker_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("docker.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The node of `step` on `host`.
#[track_caller]
fn node<'a>(nodes: &'a [NodeRun], step: &str, host: &str, out: &str) -> &'a NodeRun {
    nodes
        .iter()
        .find(|n| n.step == step && n.host == host)
        .unwrap_or_else(|| panic!("no node {step} @ {host}\n{out}"))
}

#[test]
fn the_kolla_inventory_plans_kolla_containers_and_paths() {
    let k = Kolla::new();
    let before = k.tree();
    let backup = minicloud::shipped("playbooks/openstack/backup.yml");
    let backup = backup.display().to_string();

    // 1. The plan of the backup.
    let (code, out, nodes) = k.lifeboat(&["plan", &backup], "plan-backup.jsonl");
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    assert_eq!(k.tree(), before, "the dry run changed nothing");
    for n in &nodes {
        assert!(
            ["would_change", "ok", "skipped", "unknown"].contains(&n.status.as_str()),
            "{n:?}"
        );
    }
    // A loop's message is its last item's: the last directory of each list.
    for (step, host, want) in [
        (
            "keystone.copy",
            "control02",
            "/var/lib/docker/volumes/keystone_fernet_tokens/_data/",
        ),
        (
            "glance.copy",
            "control03",
            "/var/lib/docker/volumes/glance/_data/",
        ),
        ("nova.copy", "control01", "/etc/kolla/nova-novncproxy/"),
        (
            "nova.copy",
            "compute04",
            "/var/lib/docker/volumes/nova_compute/_data/",
        ),
        ("galera-desync", "control03", "would"),
        ("dump-databases", "control03", "kol_nova"),
    ] {
        let n = node(&nodes, step, host, &out);
        assert_eq!(n.status, "would_change", "{n:?}");
        assert!(
            n.msg.contains(want),
            "{step} @ {host}: {want} not in {}",
            n.msg
        );
    }
    for (step, host) in [
        ("nova.copy", "network01"),
        ("keystone.copy", "compute01"),
        ("galera-desync", "control01"),
    ] {
        assert_eq!(node(&nodes, step, host, &out).status, "skipped");
    }

    // 2. The real backup.
    let (code, out, _) = k.lifeboat(&["run", &backup], "backup.jsonl");
    assert_eq!(code, 0, "{out}");
    let backups = k.dir.path().join("roots/backup01/srv/backup/openstack");
    for host in CONTROL {
        for d in CONTROL_DIRS {
            let copy = backups
                .join(host)
                .join("latest/files")
                .join(d)
                .join("config.json");
            assert!(copy.exists(), "{}", copy.display());
        }
    }
    for host in COMPUTE {
        let snap = backups.join(host).join("latest/files");
        for d in COMPUTE_DIRS {
            assert!(snap.join(d).join("config.json").exists(), "{host}: {d}");
        }
        assert!(
            !snap
                .join("var/lib/docker/volumes/nova_compute/_data/instances")
                .exists(),
            "live instances are never backed up"
        );
        assert!(!snap.join("etc/kolla/nova-api").exists(), "{host}");
    }
    assert!(backups.join("control03/latest/db/nova.sql.gz").exists());
    assert!(!backups.join("network01/latest/files/etc").exists());

    // 3. The plan of nova's restore.
    let before = k.tree();
    let calls = k.docker_calls().len();
    let restore = minicloud::shipped("playbooks/openstack/restore-service.yml");
    let (code, out, nodes) = k.lifeboat(
        &["plan", &restore.display().to_string(), "-e", "service=nova"],
        "plan-restore.jsonl",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(k.tree(), before, "the dry run changed nothing");
    for host in CONTROL {
        let stop = node(&nodes, "stop.daemons", host, &out);
        assert_eq!(stop.status, "would_change");
        assert_eq!(
            stop.msg,
            "would stop nova_novncproxy, nova_conductor, nova_scheduler, nova_api"
        );
        assert_eq!(
            node(&nodes, "stop-compute.daemons", host, &out).status,
            "skipped"
        );
        let aside = node(&nodes, "files.move-aside", host, &out);
        assert!(
            aside.msg.contains("/etc/kolla/nova-novncproxy"),
            "{aside:?}"
        );
    }
    for host in COMPUTE {
        let stop = node(&nodes, "stop-compute.daemons", host, &out);
        assert_eq!(stop.msg, "would stop nova_compute, nova_ssh");
        let sync = node(&nodes, "files.sync-files", host, &out);
        assert!(
            sync.msg
                .contains("/var/lib/docker/volumes/nova_compute/_data"),
            "{sync:?}"
        );
    }
    assert_eq!(
        node(&nodes, "stop.daemons", "network01", &out).status,
        "skipped"
    );
    let import = node(&nodes, "database.import-database", "control03", &out);
    assert_eq!(import.status, "would_change", "{import:?}");
    // Its dump is staged by an earlier step: predicted, not a failure.
    assert!(import.msg.contains("does not exist yet"), "{import:?}");
    // docker was asked about kolla's containers, never told to do anything.
    let calls: Vec<String> = k.docker_calls().split_off(calls);
    for c in &calls {
        assert!(c.starts_with("inspect "), "a dry run ran `docker {c}`");
    }
    for name in ["nova_api", "nova_conductor", "nova_compute", "nova_ssh"] {
        assert!(
            calls.iter().any(|c| c.ends_with(&format!("-- {name}"))),
            "{name} was not inspected: {calls:?}"
        );
    }
    assert!(
        !calls.iter().any(|c| c.contains("nova_libvirt")),
        "{calls:?}"
    );
}
