//! Path traversal: `fetch`, `copy` and `unarchive` never write outside their
//! destination. Hostile inputs: remote names with `..`, symbolic links planted in a
//! fetch's destination, a copy whose dest is a link or whose src is a folder holding a
//! link out, and tar archives with `../x`, absolute members, a symlink and then a file
//! written through it, hard links to files outside. Every case runs in one playbook
//! (each step `ignore_errors`), over the local connection and over SSH (a real sshd,
//! user `lifeboat-test`), and afterwards the folder outside holds exactly what it held.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/sshd.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use binary::Lifeboat;
use serde_json::{Value, json};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn mode(p: &Path, m: u32) {
    ok(std::fs::set_permissions(
        p,
        std::fs::Permissions::from_mode(m),
    ));
}

fn mkdir(p: &Path, m: u32) {
    ok(std::fs::create_dir_all(p));
    mode(p, m);
}

// ------------------------------------------------------------------ tar archives

/// One member of a hand-made tar archive.
enum Member<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}", width = field.len() - 1);
    field[..text.len()].copy_from_slice(text.as_bytes());
}

/// A ustar archive of these members, names exactly as given (`..` and `/` included).
fn tar(members: &[Member<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        let (name, kind, link, data): (&str, u8, &str, &[u8]) = match m {
            Member::File(n, d) => (n, b'0', "", d),
            Member::Dir(n) => (n, b'5', "", b""),
            Member::Symlink(n, t) => (n, b'2', t, b""),
            Member::Hardlink(n, t) => (n, b'1', t, b""),
        };
        assert!(name.len() < 100 && link.len() < 100, "names must fit ustar");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], if kind == b'5' { 0o755 } else { 0o644 });
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 0);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

// ------------------------------------------------------------------ the playbook

const PLAYBOOK: &str = r#"
name: traversal
defaults:
  ignore_errors: true
steps:
  # fetch: a `..` in the remote name
  - id: fetch-dotdot
    fetch: { src: "{{ remote }}/../remote/data.txt", dest: "{{ d }}/fetch-dotdot" }
  # fetch: dest/<host> is a link planted to the outside
  - id: fetch-link-host
    fetch: { src: "{{ remote }}/data.txt", dest: "{{ d }}/fetch-link-host" }
  # fetch: a link deeper down, on the way to the file
  - id: fetch-link-deep
    fetch: { src: "{{ remote }}/data.txt", dest: "{{ d }}/fetch-link-deep" }
  # fetch flat: the target itself is a link to a file outside
  - id: fetch-flat-link
    fetch: { src: "{{ remote }}/data.txt", dest: "{{ d }}/fetch-flat/victim-link", flat: true }
  # fetch: an absolute remote name lands below dest/<host>
  - id: fetch-absolute
    fetch: { src: "{{ remote }}/data.txt", dest: "{{ d }}/fetch-ok" }
  # copy: dest is a link to a file outside
  - id: copy-dest-link
    copy: { content: "pwned\n", dest: "{{ w }}/copy/victim-link" }
  # copy: src is a folder that holds a link to the outside (followed, as cp -L does:
  # what it points to is read and copied inside dest)
  - id: copy-src-dir
    copy: { src: "{{ d }}/srcdir", dest: "{{ w }}/copy/from-dir" }
  # copy into a folder: under src's own name, inside it
  - id: copy-into-dir
    copy: { src: "{{ d }}/srcfile.txt", dest: "{{ w }}/copy/into/" }
  - id: unarchive-dotdot
    unarchive: { src: "{{ d }}/tars/dotdot.tar", dest: "{{ w }}/x/dotdot" }
  - id: unarchive-absolute
    unarchive: { src: "{{ d }}/tars/absolute.tar", dest: "{{ w }}/x/absolute" }
  - id: unarchive-symlink-then-file
    unarchive: { src: "{{ d }}/tars/symlink-then-file.tar", dest: "{{ w }}/x/symlink-then-file" }
  - id: unarchive-relative-symlink-then-file
    unarchive: { src: "{{ d }}/tars/relative-symlink.tar", dest: "{{ w }}/x/relative-symlink" }
  - id: unarchive-symlink-replaced-by-file
    unarchive: { src: "{{ d }}/tars/symlink-replaced.tar", dest: "{{ w }}/x/symlink-replaced" }
  - id: unarchive-hardlink-absolute
    unarchive: { src: "{{ d }}/tars/hardlink-absolute.tar", dest: "{{ w }}/x/hardlink-absolute" }
  - id: unarchive-hardlink-relative
    unarchive: { src: "{{ d }}/tars/hardlink-relative.tar", dest: "{{ w }}/x/hardlink-relative" }
  - id: unarchive-fine
    unarchive: { src: "{{ d }}/tars/fine.tar", dest: "{{ w }}/x/fine" }
"#;

/// Every file under a folder, with its content (links as `-> target`).
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in ok(std::fs::read_dir(&d)).flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
            let meta = ok(std::fs::symlink_metadata(&p));
            if meta.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", ok(std::fs::read_link(&p)).display()));
            } else if meta.is_dir() {
                out.insert(rel.clone(), "dir".into());
                todo.push(p);
            } else {
                out.insert(
                    rel,
                    String::from_utf8_lossy(&ok(std::fs::read(&p))).into_owned(),
                );
            }
        }
    }
    out
}

/// The folders and files of one run; `ssh` runs it as the SSH login user.
struct Setup {
    _tmp: tempfile::TempDir,
    d: PathBuf,
    outside: PathBuf,
    remote: PathBuf,
}

fn setup() -> Setup {
    let tmp = ok(tempfile::Builder::new().prefix("lifeboat-trav").tempdir());
    let d = tmp.path().to_path_buf();
    mode(&d, 0o755);
    // The outside: world-writable, so that only lifeboat's care keeps it intact.
    let outside = d.join("outside");
    mkdir(&outside, 0o1777);
    ok(std::fs::write(outside.join("victim"), "original\n"));
    mode(&outside.join("victim"), 0o666);
    let remote = d.join("remote");
    mkdir(&remote, 0o755);
    ok(std::fs::write(remote.join("data.txt"), "remote data\n"));
    mode(&remote.join("data.txt"), 0o644);
    // Where the host side writes (copy, unarchive): writable by the SSH user too.
    mkdir(&d.join("w"), 0o1777);
    mkdir(&d.join("w/copy/into"), 0o1777);
    std::os::unix::fs::symlink(outside.join("victim"), d.join("w/copy/victim-link"))
        .unwrap_or_else(|e| panic!("{e}"));
    mkdir(&d.join("w/x"), 0o1777);
    // copy's src folder, with a link out.
    mkdir(&d.join("w/copy/from-dir"), 0o1777);
    mkdir(&d.join("locks"), 0o1777);
    mkdir(&d.join("srcdir"), 0o755);
    std::os::unix::fs::symlink(&outside, d.join("srcdir/out")).unwrap_or_else(|e| panic!("{e}"));
    ok(std::fs::write(d.join("srcfile.txt"), "inside\n"));
    mode(&d.join("srcfile.txt"), 0o644);
    // fetch's destinations, with links planted.
    Setup {
        _tmp: tmp,
        d,
        outside,
        remote,
    }
}

impl Setup {
    fn plant_fetch_links(&self, host: &str) {
        let d = &self.d;
        mkdir(&d.join("fetch-link-host"), 0o755);
        std::os::unix::fs::symlink(&self.outside, d.join("fetch-link-host").join(host))
            .unwrap_or_else(|e| panic!("{e}"));
        // dest/<host>/<first part of the remote path> -> outside
        let first = self
            .remote
            .components()
            .nth(1)
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        mkdir(&d.join("fetch-link-deep").join(host), 0o755);
        std::os::unix::fs::symlink(
            &self.outside,
            d.join("fetch-link-deep").join(host).join(first),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        mkdir(&d.join("fetch-flat"), 0o755);
        std::os::unix::fs::symlink(
            self.outside.join("victim"),
            d.join("fetch-flat/victim-link"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    fn write_tars(&self) {
        let victim = self.outside.join("victim").display().to_string();
        let outside = self.outside.display().to_string();
        let tars = self.d.join("tars");
        mkdir(&tars, 0o755);
        let write = |name: &str, members: &[Member<'_>]| {
            let p = tars.join(name);
            ok(std::fs::write(&p, tar(members)));
            mode(&p, 0o644);
        };
        write(
            "dotdot.tar",
            &[
                Member::File("ok.txt", b"fine\n"),
                Member::File("../../../outside/escaped", b"pwned\n"),
            ],
        );
        write(
            "absolute.tar",
            &[Member::File(&format!("{outside}/absolute"), b"pwned\n")],
        );
        write(
            "symlink-then-file.tar",
            &[
                Member::Symlink("link", &outside),
                Member::File("link/victim", b"pwned\n"),
                Member::File("link/new", b"pwned\n"),
            ],
        );
        write(
            "relative-symlink.tar",
            &[
                Member::Symlink("link", "../../../outside"),
                Member::File("link/victim", b"pwned\n"),
            ],
        );
        write(
            "symlink-replaced.tar",
            &[
                Member::Symlink("lf", &victim),
                Member::File("lf", b"pwned\n"),
            ],
        );
        write(
            "hardlink-absolute.tar",
            &[
                Member::Hardlink("hl", &victim),
                Member::File("hl", b"pwned\n"),
            ],
        );
        write(
            "hardlink-relative.tar",
            &[
                Member::Hardlink("hl", "../../../outside/victim"),
                Member::File("hl", b"pwned\n"),
            ],
        );
        write(
            "fine.tar",
            &[
                Member::Dir("conf"),
                Member::File("conf/a.conf", b"a\n"),
                Member::Symlink("conf/link", "a.conf"),
            ],
        );
    }
}

enum Via<'a> {
    Local,
    Ssh(&'a sshd::Sshd),
}

fn run(s: &Setup, via: Via<'_>) -> (i32, Vec<Value>, String) {
    let host = "h1";
    let vars = match &via {
        Via::Local => json!({"ansible_connection": "local"}),
        Via::Ssh(srv) => json!({
            "ansible_host": srv.addr,
            "ansible_port": srv.port,
            "ansible_user": sshd::USER,
            "ansible_ssh_private_key_file": srv.ed25519_key,
            "lifeboat_known_hosts": srv.known_hosts,
        }),
    };
    let inv = json!({"all": {"hosts": {host: vars}}});
    ok(std::fs::write(s.d.join("inventory.yml"), inv.to_string()));
    ok(std::fs::write(s.d.join("playbook.yml"), PLAYBOOK));
    let extra = json!({"d": s.d, "w": s.d.join("w"), "remote": s.remote});
    mkdir(&s.d.join("home"), 0o755);
    let out = Lifeboat::new(&s.d)
        .args([
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--events",
            "events.jsonl",
        ])
        .arg("-e")
        .arg(extra.to_string())
        .run();
    let report = format!("{out:?}");
    let events = ok(std::fs::read_to_string(s.d.join("events.jsonl")))
        .lines()
        .map(|l| ok(serde_json::from_str(l)))
        .collect();
    (out.code, events, report)
}

fn traversal(via: Via<'_>) {
    let s = setup();
    s.plant_fetch_links("h1");
    s.write_tars();
    let outside_before = snapshot(&s.outside);
    let (_code, events, report) = run(&s, via);
    let finish = |step: &str| -> (String, String) {
        let e = events
            .iter()
            .find(|e| e["event"] == "node_finish" && e["step"] == step)
            .unwrap_or_else(|| panic!("no {step}\n{report}"));
        (
            e["status"].as_str().unwrap_or_default().to_string(),
            format!(
                "{} {}",
                e["msg"].as_str().unwrap_or_default(),
                e["stderr"].as_str().unwrap_or_default()
            ),
        )
    };
    let refused = |step: &str, why: &str| {
        let (status, msg) = finish(step);
        assert_eq!(status, "ignored", "{step} must fail: {msg}\n{report}");
        assert!(msg.contains(why), "{step}: expected `{why}` in: {msg}");
    };
    refused(
        "fetch-dotdot",
        "has a `..` component; fetch never writes outside dest",
    );
    refused(
        "fetch-link-host",
        "is a symbolic link; fetch never writes through links",
    );
    refused("fetch-link-deep", "is a symbolic link");
    refused("fetch-flat-link", "is a symbolic link");
    refused("copy-dest-link", "is a symbolic link");
    let (status, msg) = finish("copy-src-dir");
    assert_eq!(status, "changed", "copy-src-dir: {msg}\n{report}");
    assert_eq!(
        ok(std::fs::read_to_string(
            s.d.join("w/copy/from-dir/srcdir/out/victim")
        )),
        "original\n"
    );
    refused("unarchive-dotdot", "would land outside");
    refused("unarchive-absolute", "would land outside");
    // GNU tar refuses to write through a link it extracted, and to link outside.
    refused("unarchive-symlink-then-file", "tar could not extract");
    refused(
        "unarchive-relative-symlink-then-file",
        "tar could not extract",
    );
    refused("unarchive-hardlink-absolute", "tar could not extract");
    refused("unarchive-hardlink-relative", "tar could not extract");
    // What failed left nothing behind in its dest (the link it made is gone too).
    for case in [
        "symlink-then-file",
        "relative-symlink",
        "hardlink-absolute",
        "hardlink-relative",
        "dotdot",
        "absolute",
    ] {
        let p = s.d.join("w/x").join(case);
        assert!(
            std::fs::symlink_metadata(&p).is_err(),
            "{case}: {:?} left behind",
            snapshot(&s.d.join("w/x"))
        );
    }
    // A link replaced by a file of the same name: whatever tar leaves, nothing outside.
    let (status, msg) = finish("unarchive-symlink-replaced-by-file");
    assert!(
        status == "changed" || status == "ignored",
        "{status}: {msg}"
    );

    // What is allowed lands inside.
    assert_eq!(finish("fetch-absolute").0, "changed", "{report}");
    let fetched =
        s.d.join("fetch-ok/h1")
            .join(s.remote.strip_prefix("/").unwrap_or(&s.remote))
            .join("data.txt");
    assert_eq!(ok(std::fs::read_to_string(&fetched)), "remote data\n");
    assert_eq!(finish("copy-into-dir").0, "changed", "{report}");
    assert_eq!(
        ok(std::fs::read_to_string(s.d.join("w/copy/into/srcfile.txt"))),
        "inside\n"
    );
    assert_eq!(finish("unarchive-fine").0, "changed", "{report}");
    assert_eq!(
        ok(std::fs::read_to_string(s.d.join("w/x/fine/conf/a.conf"))),
        "a\n"
    );

    // The outside is exactly as it was.
    assert_eq!(snapshot(&s.outside), outside_before, "{report}");
}

#[test]
fn nothing_is_written_outside_the_destination_locally() {
    traversal(Via::Local);
}

#[test]
fn nothing_is_written_outside_the_destination_over_ssh() {
    let server = ok(sshd::Sshd::start("127.0.0.1"));
    traversal(Via::Ssh(&server));
}

#[test]
fn fetch_refuses_host_names_that_would_climb_out() {
    let s = setup();
    let inv = json!({"all": {"hosts": {"..": {"ansible_connection": "local"}}}});
    ok(std::fs::write(s.d.join("inventory.yml"), inv.to_string()));
    ok(std::fs::write(
        s.d.join("playbook.yml"),
        "steps:\n  - id: f\n    fetch: { src: \"{{ remote }}/data.txt\", dest: \"{{ d }}/f/sub\" }\n",
    ));
    let extra = json!({"d": s.d, "remote": s.remote});
    let out = Lifeboat::new(&s.d)
        .args(["run", "playbook.yml", "-i", "inventory.yml"])
        .arg("-e")
        .arg(extra.to_string())
        .run();
    let stdout = &out.stdout;
    assert_eq!(out.code, 2, "{stdout}");
    assert!(
        stdout.contains("the host name `..` has a `..` component"),
        "{stdout}"
    );
    assert!(!s.d.join("f").exists() || snapshot(&s.d.join("f")).is_empty());
    assert_eq!(snapshot(&s.outside).len(), 1);
}
