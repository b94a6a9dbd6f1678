//! The SSH transport's trust and login paths against real OpenSSH servers on loopback
//! (see `support/sshd.rs`): host certificates (`@cert-authority`, a wrong and a revoked
//! authority), ECDSA and passphrase-protected keys, keyboard-interactive login, and
//! ProxyJump chains (two hops, and a jump host whose own ProxyJump comes from the ssh
//! config).

#[path = "support/binary.rs"]
mod binary;
#[path = "support/sshd.rs"]
mod sshd;

use std::path::{Path, PathBuf};
use std::time::Duration;

use binary::Lifeboat;
use lifeboat::connection::ssh::{HostKeyPolicy, SshConnection, SshOptions, SshTarget};
use lifeboat::connection::{CommandSpec, Connection};
use sshd::{Options, Sshd, USER, options, target};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

async fn echo(t: &SshTarget, o: &SshOptions, word: &str) -> Result<String, String> {
    let c = SshConnection::new("h", t, o).map_err(|e| e.to_string())?;
    let out = c
        .run(&CommandSpec::shell(format!("echo {word}")), None)
        .await
        .map_err(|e| e.to_string())?;
    if out.rc != Some(0) {
        return Err(format!("{out:?}"));
    }
    Ok(out.stdout_text())
}

async fn refused(t: &SshTarget, o: &SshOptions) -> String {
    match echo(t, o, "x").await {
        Ok(out) => panic!("connected: {out}"),
        Err(e) => e,
    }
}

/// A new key pair `name` in `dir` (ed25519 unless `kind`), with a passphrase.
fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> PathBuf {
    let p = dir.join(name);
    let out = ok(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", "", "-f"])
        .arg(&p)
        .output());
    assert!(out.status.success(), "{out:?}");
    p
}

fn public_line(key: &Path) -> String {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    ok(std::fs::read_to_string(PathBuf::from(p)))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_certificates_are_verified_against_cert_authorities() {
    let dir = ok(tempfile::tempdir());
    let ca = keygen(dir.path(), "ca", "ed25519", "");
    let other_ca = keygen(dir.path(), "other_ca", "ed25519", "");
    let s = ok(Sshd::with(Options {
        addr: "127.0.0.40".into(),
        host_ca: Some(ca.clone()),
        ..Options::default()
    }));
    let name = format!("[{}]:{}", s.addr, s.port);
    let kh = dir.path().join("known_hosts");
    let mut t = target(&s);
    t.known_hosts_file = Some(kh.clone());
    t.host_key_policy = Some(HostKeyPolicy::Strict);

    // Only the authority is known, not the host's key: the certificate is what lets
    // the connection through under strict checking.
    ok(std::fs::write(
        &kh,
        format!("@cert-authority {name} {}\n", public_line(&ca)),
    ));
    assert_eq!(ok(echo(&t, &options(), "cert").await), "cert\n");
    // A wildcard authority line for the loopback range works the same way.
    ok(std::fs::write(
        &kh,
        format!("@cert-authority [127.0.0.*]:* {}\n", public_line(&ca)),
    ));
    assert_eq!(ok(echo(&t, &options(), "wild").await), "wild\n");

    // An authority that did not sign the certificate: refused, even though the plain
    // host key is not known either way.
    ok(std::fs::write(
        &kh,
        format!("@cert-authority {name} {}\n", public_line(&other_ca)),
    ));
    let msg = refused(&t, &options()).await;
    assert!(
        msg.contains("not valid for the trusted certificate authorities"),
        "{msg}"
    );

    // The signing authority is trusted but revoked: refused.
    ok(std::fs::write(
        &kh,
        format!(
            "@cert-authority {name} {ca_pub}\n@revoked * {ca_pub}\n",
            ca_pub = public_line(&ca)
        ),
    ));
    let msg = refused(&t, &options()).await;
    assert!(msg.contains("REVOKED"), "{msg}");

    // Without any authority line, the plain key in known_hosts still works.
    ok(std::fs::write(&kh, format!("{name} {}\n", s.host_key)));
    assert_eq!(ok(echo(&t, &options(), "plain").await), "plain\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_and_passphrase_protected_keys_log_in() {
    let s = ok(Sshd::start("127.0.0.41"));
    let mut t = target(&s);
    t.key_file = Some(s.ecdsa_key.to_string_lossy().into_owned());
    assert_eq!(ok(echo(&t, &options(), "ecdsa").await), "ecdsa\n");
    assert!(s.log().contains("Accepted publickey"), "{}", s.log());
    assert!(s.log().contains("ECDSA"), "{}", s.log());

    let dir = ok(tempfile::tempdir());
    let enc = keygen(dir.path(), "id_enc", "ed25519", "correct horse");
    let mut pub_file = enc.as_os_str().to_owned();
    pub_file.push(".pub");
    ok(s.authorize(Path::new(&pub_file)));
    let mut t = target(&s);
    t.key_file = Some(enc.to_string_lossy().into_owned());
    t.key_passphrase = Some("correct horse".into());
    assert_eq!(ok(echo(&t, &options(), "enc").await), "enc\n");

    t.key_passphrase = Some("wrong".into());
    let msg = refused(&t, &options()).await;
    assert!(msg.contains("wrong passphrase"), "{msg}");
    assert!(msg.contains(&enc.display().to_string()), "{msg}");

    t.key_passphrase = None;
    let msg = refused(&t, &options()).await;
    assert!(msg.contains("lifeboat_ssh_key_passphrase"), "{msg}");
}

/// The passphrase reaches the transport from the inventory's host variable.
#[test]
fn the_key_passphrase_comes_from_a_host_variable() {
    let s = ok(Sshd::start("127.0.0.42"));
    let dir = ok(tempfile::tempdir());
    let enc = keygen(dir.path(), "id_enc", "ed25519", "s3cret phrase");
    let mut pub_file = enc.as_os_str().to_owned();
    pub_file.push(".pub");
    ok(s.authorize(Path::new(&pub_file)));
    ok(std::fs::write(
        dir.path().join("playbook.yml"),
        "hosts: all\nsteps:\n  - id: who\n    command: echo logged-in\n",
    ));
    let run = |passphrase: &str, tag: &str| {
        let inv = dir.path().join(format!("{tag}.yml"));
        ok(std::fs::write(
            &inv,
            format!(
                "all:\n  hosts:\n    enc:\n      ansible_host: {}\n      ansible_port: {}\n      \
                 ansible_user: {USER}\n      ansible_ssh_private_key_file: {}\n      \
                 lifeboat_known_hosts: {}\n      lifeboat_ssh_key_passphrase: \"{passphrase}\"\n",
                s.addr,
                s.port,
                enc.display(),
                s.known_hosts.display()
            ),
        ));
        let events = dir.path().join(format!("{tag}.events"));
        let out = Lifeboat::new(dir.path())
            .state_dir(dir.path().join(format!("{tag}.state")))
            .lock_dir(dir.path().with_extension("locks"))
            .home(dir.path())
            .arg("run")
            .arg(dir.path().join("playbook.yml"))
            .arg("-i")
            .arg(&inv)
            .arg("--events")
            .arg(&events)
            .timeout(Duration::from_secs(60))
            .run();
        (out, ok(std::fs::read_to_string(events)))
    };
    let (out, events) = run("s3cret phrase", "good");
    assert!(out.success(), "{out:?}\n{events}");
    assert!(events.contains("logged-in"), "{events}");
    let (out, events) = run("not it", "bad");
    assert!(!out.success(), "{out:?}");
    assert!(events.contains("wrong passphrase"), "{events}");
    // The passphrase itself is never printed.
    let all = format!("{events}{}{}", out.stdout, out.stderr);
    assert!(!all.contains("not it"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_interactive_login_answers_the_password_prompt() {
    let s = ok(Sshd::with(Options {
        addr: "127.0.0.43".into(),
        password: false,
        kbd_interactive: true,
        ..Options::default()
    }));
    let mut t = target(&s);
    t.key_file = None;
    t.password = Some(sshd::PASSWORD.into());
    assert_eq!(ok(echo(&t, &options(), "kbd").await), "kbd\n");
    assert!(
        s.log().contains("Accepted keyboard-interactive"),
        "{}",
        s.log()
    );

    t.password = Some("wrong".into());
    let msg = refused(&t, &options()).await;
    assert!(msg.contains("permission denied"), "{msg}");
    assert!(msg.contains("keyboard-interactive"), "{msg}");
}

/// Three servers that all accept the first one's client key, and one known_hosts file
/// naming all three.
fn trio(addrs: [&str; 3]) -> (Vec<Sshd>, PathBuf) {
    let servers: Vec<Sshd> = addrs.iter().map(|a| ok(Sshd::start(a))).collect();
    let key_pub = servers[0].ed25519_key.with_extension("pub");
    let mut kh_text = String::new();
    for s in &servers {
        ok(s.authorize(&key_pub));
        kh_text.push_str(&format!("[{}]:{} {}\n", s.addr, s.port, s.host_key));
    }
    let kh = servers[0].dir.path().join("all_known_hosts");
    ok(std::fs::write(&kh, kh_text));
    (servers, kh)
}

fn accepted_count(s: &Sshd) -> usize {
    s.log().matches("Accepted publickey").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_jump_goes_through_two_hops() {
    let (servers, kh) = trio(["127.0.0.44", "127.0.0.45", "127.0.0.46"]);
    let (a, b, dest) = (&servers[1], &servers[2], &servers[0]);
    let mut t = target(dest);
    t.known_hosts_file = Some(kh);
    t.proxy_jump = Some(format!(
        "{USER}@{}:{},{USER}@{}:{}",
        a.addr, a.port, b.addr, b.port
    ));
    let c = ok(SshConnection::new("h", &t, &options()));
    let label = c.describe();
    let (ia, ib) = (
        label.find(&format!("{}:{}", a.addr, a.port)),
        label.find(&format!("{}:{}", b.addr, b.port)),
    );
    assert!(ia.is_some() && ia < ib, "{label}");
    let out = ok(c.run(&CommandSpec::shell("echo far"), None).await);
    assert_eq!(out.stdout_text(), "far\n");
    // One login on each hop and on the target, all held open by the one connection.
    for s in [a, b, dest] {
        assert_eq!(accepted_count(s), 1, "{}", s.log());
        assert_eq!(s.connection_processes().len(), 1, "{}", s.addr);
    }
    // Closing the connection closes every hop.
    drop(c);
    assert!(sshd::wait_until(Duration::from_secs(10), || {
        servers.iter().all(|s| s.connection_processes().is_empty())
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_hosts_own_proxy_jump_from_the_ssh_config_is_followed() {
    let (servers, kh) = trio(["127.0.0.47", "127.0.0.48", "127.0.0.49"]);
    let (outer, inner, dest) = (&servers[1], &servers[2], &servers[0]);
    let cfg_dir = ok(tempfile::tempdir());
    let cfg = cfg_dir.path().join("config");
    // The inventory names only `inner-bastion`; the config says how to reach it.
    ok(std::fs::write(
        &cfg,
        format!(
            "Host inner-bastion\n  HostName {}\n  Port {}\n  User {USER}\n  ProxyJump outer-bastion\n\n\
             Host outer-bastion\n  HostName {}\n  Port {}\n  User {USER}\n",
            inner.addr, inner.port, outer.addr, outer.port
        ),
    ));
    let mut o = options();
    o.read_config = true;
    o.config_file = Some(cfg.clone());
    let mut t = target(dest);
    t.known_hosts_file = Some(kh);
    t.proxy_jump = Some("inner-bastion".into());
    let c = ok(SshConnection::new("h", &t, &o));
    let label = c.describe();
    let (io, ii) = (
        label.find(&format!("{}:{}", outer.addr, outer.port)),
        label.find(&format!("{}:{}", inner.addr, inner.port)),
    );
    assert!(io.is_some() && io < ii, "{label}");
    let out = ok(c.run(&CommandSpec::shell("echo nested"), None).await);
    assert_eq!(out.stdout_text(), "nested\n");
    for s in [outer, inner, dest] {
        assert_eq!(accepted_count(s), 1, "{}: {}", s.addr, s.log());
    }

    // A loop of jump hosts is an error, not a hang.
    ok(std::fs::write(
        &cfg,
        "Host j1\n  ProxyJump j2\nHost j2\n  ProxyJump j1\n",
    ));
    t.proxy_jump = Some("j1".into());
    let msg = SshConnection::new("h", &t, &o)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("ProxyJump"), "{msg}");
}
