//! Off-site copies on the mini-cloud (support/minicloud.rs) with its "off-site region":
//! a real Swift on loopback (support/swift.rs, tempauth) and a vault host reached over
//! SFTP (a real sshd), as two restic repositories of one `offsite_repository` list.
//!
//! 1. backup.yml's offsite stage sends every node's snapshot to both repositories
//!    (tags lifeboat-node and backup-<name>, the node as restic's host) and keeps
//!    `offsite_keep` of them; a run that fails after sending forgets what it sent;
//!    verify-backups.yml finds them fresh and runs `restic check`;
//! 2. the repository password and the Swift key (secrets from the environment) are in
//!    no output, no journal and no file the runs leave;
//! 3. drills/controller-loss.yml: the controller's whole host_root, its databases and
//!    the backup host's snapshots are lost; the controller is rebuilt from Swift alone:
//!    files byte-identical, database checksums identical, every daemon running, RTO and
//!    RPO reported;
//! 4. restore-service.yml with restore_from offsite brings back glance while the
//!    backup host is still empty.

#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/minicloud.rs"]
mod minicloud;
#[path = "support/sshd.rs"]
mod sshd;
#[path = "support/swift.rs"]
mod swift;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use minicloud::MiniCloud;
use serde_json::{Value, json};
use sshd::Sshd;

/// The repositories' password: quotes and a `$`, to prove it is quoted on its way.
const PASSWORD: &str = "0ff'site-pa$$\"w0rd";

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn expect(code_and_output: (i32, String), code: i32) -> String {
    let (c, out) = code_and_output;
    assert_eq!(c, code, "unexpected exit code\n{out}");
    out
}

/// A mini-cloud on 127.0.0.{first..first+2} with a vault sshd on first+3 and both
/// off-site repositories in its inventory; the database login is in the inventory
/// (the controller's option file is lost with its host_root).
struct OffsiteCloud {
    cloud: MiniCloud,
    _vault: Sshd,
    swift_repo: String,
    sftp_repo: String,
    sftp_command: String,
}

fn start(prefix: &str, first: u8) -> OffsiteCloud {
    let sw = swift::server();
    let mut cloud = MiniCloud::start(prefix, first);
    let vault = ok(Sshd::start(&format!("127.0.0.{}", first + 3)));
    // The vault's repository directory, and its key for the backup host's login user.
    let vault_dir = cloud.dir.path().join("vault");
    ok(std::fs::create_dir_all(&vault_dir));
    let key = cloud.dir.path().join("keys/vault");
    ok(std::fs::copy(&vault.ed25519_key, &key));
    ok(std::fs::set_permissions(
        &key,
        std::fs::Permissions::from_mode(0o600),
    ));
    let chown = ok(Command::new("chown")
        .args(["-R", &format!("{}:", sshd::USER)])
        .arg(&vault_dir)
        .arg(&key)
        .output());
    assert!(chown.status.success());
    let swift_repo = format!("swift:offsite-{prefix}:/site1");
    let sftp_repo = format!(
        "sftp:{}@{}:{}/repo",
        sshd::USER,
        vault.addr,
        vault_dir.display()
    );
    let sftp_command = format!(
        "sftp.command=ssh -i {} -p {} -o UserKnownHostsFile={} -o BatchMode=yes {}@{} -s sftp",
        key.display(),
        vault.port,
        vault.known_hosts.display(),
        sshd::USER,
        vault.addr
    );
    let (port, user, password) = cloud.db_login();
    cloud.set_vars(
        None,
        json!({
            "offsite_repository": [
                {
                    "repository": swift_repo,
                    "env": {
                        "ST_AUTH": sw.auth_url(),
                        "ST_USER": swift::USER,
                        "ST_KEY": "{{ offsite_secret }}",
                    },
                },
                { "repository": sftp_repo, "options": [sftp_command] },
            ],
            "offsite_keep": { "keep_last": 2 },
            "db_login_host": "127.0.0.1",
            "db_login_port": port,
            "db_login_user": user,
            "db_password": password,
        }),
    );
    // The controller's option file is lost with its host_root: the login above is used.
    cloud.set_vars(Some("ctl01"), json!({ "db_defaults_file": "" }));
    cloud.env = vec![
        ("LIFEBOAT_OFFSITE_PASSWORD".into(), PASSWORD.into()),
        ("LIFEBOAT_OFFSITE_SECRET".into(), swift::KEY.into()),
    ];
    OffsiteCloud {
        cloud,
        _vault: vault,
        swift_repo,
        sftp_repo,
        sftp_command,
    }
}

impl OffsiteCloud {
    /// `restic ARGS` on one of the repositories, as the test (not through lifeboat).
    fn restic(&self, repo: &str, args: &[&str]) -> String {
        let mut cmd = Command::new("restic");
        cmd.arg("-r")
            .arg(repo)
            .env("RESTIC_PASSWORD", PASSWORD)
            .env("RESTIC_CACHE_DIR", "/tmp/lifeboat-restic-test-cache");
        if repo == self.sftp_repo {
            cmd.args(["-o", &self.sftp_command]);
        }
        for (k, v) in swift::server().env() {
            cmd.env(k, v);
        }
        let out = ok(cmd.args(args).output());
        assert!(
            out.status.success(),
            "restic {args:?} on {repo} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The node snapshots of each host in a repository: host -> backup names, oldest
    /// first.
    fn node_snapshots(&self, repo: &str) -> BTreeMap<String, Vec<String>> {
        let text = self.restic(
            repo,
            &["--no-lock", "snapshots", "--json", "--tag", "lifeboat-node"],
        );
        let list: Vec<Value> = ok(serde_json::from_str(text.trim()));
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in list {
            let host = s["hostname"].as_str().unwrap_or_default().to_string();
            let name = s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find_map(|t| t.strip_prefix("backup-"))
                .unwrap_or_default()
                .to_string();
            out.entry(host).or_default().push(name);
        }
        out
    }
}

/// Every file under `dir` whose bytes contain one of `secrets`.
fn files_with(dir: &Path, secrets: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
        } else if meta.is_file()
            && let Ok(bytes) = std::fs::read(&p)
            && secrets
                .iter()
                .any(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes()))
        {
            found.push(p.display().to_string());
        }
    }
    found
}

/// What the controller-loss drill must bring back: the nodes' files (but the
/// controller's database option file, which no backup holds and this cloud does not
/// use), the databases and the daemons.
fn backed_up_files(cloud: &MiniCloud) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut files = cloud.node_files();
    files.retain(|k, _| !k.starts_with("ctl01:etc/mysql"));
    files
}

/// The paths missing, added or changed (mode or content) from `want` to `have`.
fn differences(
    want: &BTreeMap<String, (u32, Vec<u8>)>,
    have: &BTreeMap<String, (u32, Vec<u8>)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, (mode, bytes)) in want {
        match have.get(k) {
            None => out.push(format!("{k}: missing")),
            Some((m, _)) if m != mode => out.push(format!("{k}: mode {m:o}, was {mode:o}")),
            Some((_, b)) if b != bytes => out.push(format!("{k}: content differs")),
            Some(_) => {}
        }
    }
    for k in have.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("{k}: new"));
    }
    out
}

#[test]
fn offsite_copies_and_the_controller_loss_drill() {
    let oc = start("off", 80);
    let cloud = &oc.cloud;
    let secrets = [PASSWORD, swift::KEY];
    let mut outputs = String::new();

    // 1. Two backups: each node's snapshot in both repositories, by backup name.
    for _ in 0..2 {
        outputs.push_str(&expect(cloud.run("playbooks/openstack/backup.yml", &[]), 0));
    }
    let names = |host: &str| {
        let mut v: Vec<String> = ok(std::fs::read_dir(cloud.backups_of(host)))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "latest")
            .collect();
        v.sort();
        v
    };
    for repo in [&oc.swift_repo, &oc.sftp_repo] {
        let snaps = oc.node_snapshots(repo);
        assert_eq!(
            snaps.keys().collect::<Vec<_>>(),
            ["cmp01", "ctl01"],
            "{repo}"
        );
        for host in ["ctl01", "cmp01"] {
            assert_eq!(snaps[host], names(host), "{repo}: {host}'s backups");
        }
    }
    assert!(
        !swift::server().objects("offsite-off").is_empty(),
        "the Swift container holds the repository"
    );
    // The snapshot holds the node's snapshot directory at its root: its dumps too.
    let listing = oc.restic(&oc.swift_repo, &["ls", "--host", "ctl01", "latest"]);
    for f in [
        "/backup.json",
        "/files/etc/keystone/fernet-keys/0",
        "/manifests/etc.nova.json",
        "/db/nova.sql.gz",
    ] {
        assert!(
            listing.lines().any(|l| l == f),
            "{f} is not in the off-site snapshot:\n{listing}"
        );
    }

    // A run that fails after sending (its off-site retention is refused) forgets the
    // snapshots it sent, in both repositories.
    let before = oc.node_snapshots(&oc.swift_repo);
    let out = expect(
        cloud.run(
            "playbooks/openstack/backup.yml",
            &["offsite_prune=sometimes"],
        ),
        2,
    );
    assert!(out.contains("prune must be true or false"), "{out}");
    assert!(out.contains("forgot snapshot"), "{out}");
    outputs.push_str(&out);
    assert_eq!(oc.node_snapshots(&oc.swift_repo), before);
    assert_eq!(oc.node_snapshots(&oc.sftp_repo), before);

    // verify-backups: fresh, of the checked backup, and sound.
    let run = cloud.run_events("playbooks/openstack/verify-backups.yml", &[]);
    assert_eq!(run.code, 0, "{}", run.out);
    let check = run.node("offsite-check", "ctl01");
    assert_eq!(check.status, "ok", "{}", run.out);
    assert!(
        check.msg.contains(&format!(
            "{} has no errors (5% of the data read back)",
            oc.sftp_repo
        )),
        "{}",
        check.msg
    );
    for host in ["ctl01", "cmp01"] {
        for step in ["offsite-critical-age", "offsite-warning-age"] {
            let n = run.node(step, host);
            assert_eq!(
                n.status, "changed",
                "{step} on {host}: {}\n{}",
                n.msg, run.out
            );
            assert!(
                n.stdout.contains("the newest off-site snapshot of"),
                "{}",
                n.stdout
            );
        }
    }
    outputs.push_str(&run.out);
    // Older than backup_warning_hours: a warning in every repository, and a success.
    let stale = cloud.run_events(
        "playbooks/openstack/verify-backups.yml",
        &["-e", r#"{"backup_warning_hours": 0}"#],
    );
    assert_eq!(stale.code, 0, "{}", stale.out);
    for host in ["ctl01", "cmp01"] {
        let n = stale.node("offsite-warning-age", host);
        assert_eq!(n.status, "warning", "{host}: {}\n{}", n.msg, stale.out);
        assert_eq!(stale.node("offsite-critical-age", host).status, "changed");
    }
    assert!(
        stale.out.contains(&format!(
            "the newest off-site snapshot of ctl01 in {} is older than 0 hours",
            oc.swift_repo
        )),
        "{}",
        stale.out
    );
    outputs.push_str(&stale.out);

    // 3. The site is lost; the controller comes back from Swift alone.
    let state_files = backed_up_files(cloud);
    let state_sums = cloud.db_checksums();
    let state_running = cloud.running();
    let path = minicloud::shipped("drills/controller-loss.yml")
        .display()
        .to_string();
    let ran = cloud.lifeboat(&["drill", &path]);
    let text = format!("{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(ran.code, 0, "the drill failed\n{text}");
    assert!(text.contains("RTO") && text.contains("RPO"), "{text}");
    outputs.push_str(&text);
    assert!(
        !cloud.backups_of("ctl01").exists(),
        "the backup host lost every snapshot"
    );
    let differ = differences(&state_files, &backed_up_files(cloud));
    assert!(
        differ.is_empty(),
        "the nodes' files are not back as they were: {differ:#?}"
    );
    assert_eq!(cloud.db_checksums(), state_sums, "the databases are back");
    assert_eq!(cloud.running(), state_running, "every daemon runs again");
    // The drill's backup was the third: offsite_keep (keep_last 2) forgot the first.
    for repo in [&oc.swift_repo, &oc.sftp_repo] {
        let snaps = oc.node_snapshots(repo);
        assert_eq!(snaps["ctl01"].len(), 2, "{repo}: {snaps:?}");
    }

    // The plan of a whole restore from off-site, the backup host still empty: it names
    // the snapshot each node would fetch, and changes nothing.
    let plan = cloud.run_events(
        "playbooks/openstack/restore-control-plane.yml",
        &["-e", "restore_from=offsite", "--check"],
    );
    assert_eq!(plan.code, 0, "{}", plan.out);
    for host in ["ctl01", "cmp01"] {
        let fetch = plan.node("fetch.offsite-fetch", host);
        assert!(
            fetch.msg.starts_with("would restore snapshot"),
            "{host}: {}",
            fetch.msg
        );
    }
    // keystone runs, so the plan would stop it; the plan goes on to the end.
    assert_eq!(
        plan.node("keystone-stop.daemons", "ctl01").status,
        "would_change"
    );
    // ... and past it: keystone's verification is reached (skipped: nothing restored).
    assert_eq!(
        plan.node("keystone-verify.verify-files", "ctl01").status,
        "skipped"
    );
    assert!(differences(&state_files, &backed_up_files(cloud)).is_empty());
    assert_eq!(cloud.db_checksums(), state_sums);
    assert_eq!(cloud.running(), state_running);
    outputs.push_str(&plan.out);

    // The plan of one service from off-site: the same, for the nodes glance runs on.
    let plan = cloud.run_events(
        "playbooks/openstack/restore-service.yml",
        &[
            "-e",
            "service=glance",
            "-e",
            "restore_from=offsite",
            "--check",
        ],
    );
    assert_eq!(plan.code, 0, "{}", plan.out);
    let fetch = plan.node("fetch.offsite-fetch", "ctl01");
    assert!(
        fetch.msg.starts_with("would restore snapshot"),
        "{}",
        fetch.msg
    );
    assert_eq!(plan.node("stop.daemons", "ctl01").status, "would_change");
    // ... and goes on to the end (verification skipped: nothing was restored).
    assert_eq!(plan.node("verify.verify-files", "ctl01").status, "skipped");
    assert!(differences(&state_files, &backed_up_files(cloud)).is_empty());
    assert_eq!(cloud.running(), state_running);
    outputs.push_str(&plan.out);

    // 4. One service from off-site while the backup host is still empty.
    let image = cloud
        .root("ctl01")
        .join("var/lib/glance/images/8d7e6f5a-4b3c-2d1e-0f9a-8b7c6d5e4f30");
    let content = ok(std::fs::read(&image));
    ok(std::fs::remove_file(&image));
    outputs.push_str(&expect(
        cloud.run(
            "playbooks/openstack/restore-service.yml",
            &["service=glance", "restore_from=offsite"],
        ),
        0,
    ));
    assert_eq!(ok(std::fs::read(&image)), content, "the image is back");
    assert_eq!(cloud.running(), state_running);
    assert!(
        !cloud.root("ctl01").join("var/tmp/lifeboat").exists()
            || ok(std::fs::read_dir(
                cloud.root("ctl01").join("var/tmp/lifeboat")
            ))
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("offsite-")),
        "the fetched copies are removed"
    );

    // 2. No secret in any output, journal or file of the runs.
    for s in secrets {
        assert!(!outputs.contains(s), "a secret is in the output");
    }
    let leaked = files_with(cloud.dir.path(), &secrets);
    assert!(leaked.is_empty(), "secrets in {leaked:?}");
}

#[test]
fn restoring_from_offsite_without_a_repository_is_refused_before_anything_runs() {
    let cloud = MiniCloud::start("offn", 84);
    let out = expect(
        cloud.run(
            "playbooks/openstack/restore-service.yml",
            &["service=nova", "restore_from=offsite"],
        ),
        2,
    );
    assert!(
        out.contains("restore_from is offsite, but offsite_repository is unset"),
        "{out}"
    );
    assert_eq!(
        cloud.running()["ctl01"].len(),
        minicloud::CONTROL_UNITS.len()
    );
    let out = expect(
        cloud.run(
            "playbooks/openstack/restore-control-plane.yml",
            &["restore_from=elsewhere"],
        ),
        2,
    );
    assert!(
        out.contains("restore_from is elsewhere: give backup_host"),
        "{out}"
    );
    let out = expect(
        cloud.run(
            "playbooks/openstack/backup.yml",
            &["offsite_repository=/srv/restic"],
        ),
        2,
    );
    assert!(
        out.contains("the off-site repository /srv/restic has no password"),
        "{out}"
    );
}
