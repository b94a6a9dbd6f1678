//! The SSH transport against real OpenSSH servers on loopback (see `support/sshd.rs`):
//! commands, authentication, host key checking, jump hosts, concurrency, timeouts, lost
//! connections and file transfer.

#[path = "support/sshd.rs"]
mod sshd;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lifeboat::connection::ssh::{HostKeyPolicy, SshConnection, SshOptions, SshTarget};
use lifeboat::connection::{CommandSpec, Connection, Stream};
use sha2::{Digest, Sha256};
use sshd::{Options, Sshd, USER, options, target};
use tokio::sync::mpsc;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn conn(s: &Sshd) -> SshConnection {
    ok(SshConnection::new("h1", &target(s), &options()))
}

async fn sh(c: &SshConnection, script: &str) -> lifeboat::connection::CommandOutput {
    ok(c.run(&CommandSpec::shell(script), None).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_commands_with_output_status_stdin_and_env() {
    let s = ok(Sshd::start("127.0.0.2"));
    let c = conn(&s);
    let out = sh(&c, "echo out; echo err >&2; id -un").await;
    assert_eq!(out.rc, Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), format!("out\n{USER}\n"));
    assert_eq!(out.stderr_text(), "err\n");
    assert!(!out.timed_out);

    let out = sh(&c, "exit 3").await;
    assert_eq!(out.rc, Some(3));

    let out = ok(c
        .run(
            &CommandSpec::argv(["tr", "a-z", "A-Z"]).stdin("hello\n"),
            None,
        )
        .await);
    assert_eq!(out.stdout_text(), "HELLO\n");

    let mut spec = CommandSpec::argv(["sh", "-c", "printf '%s|%s' \"$GREETING\" \"$(pwd)\""]);
    spec.env = vec![("GREETING".into(), "hi there".into())];
    spec.cwd = Some("/tmp".into());
    let out = ok(c.run(&spec, None).await);
    assert_eq!(out.stdout_text(), "hi there|/tmp");

    // A command that fails with output on both streams, streamed to a sink.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let out = ok(c
        .run(&CommandSpec::argv(["ls", "/nonexistent-path"]), Some(tx))
        .await);
    assert_ne!(out.rc, Some(0));
    let mut streamed = Vec::new();
    while let Ok((stream, data)) = rx.try_recv() {
        assert_eq!(stream, Stream::Stderr);
        streamed.extend(data);
    }
    assert_eq!(streamed, out.stderr);
    assert!(out.stderr_text().contains("nonexistent-path"));

    // Killed by a signal: the status its shell gives (tests/ssh_shell.rs has the case
    // of a command on a channel of its own, which has none).
    let out = sh(&c, "kill -9 $$").await;
    assert_eq!(out.rc, Some(128 + 9), "{out:?}");
    assert!(!out.timed_out);

    // stat works over the transport.
    let st = ok(c.stat("/etc/passwd").await);
    assert_eq!(st.map(|s| s.kind), Some("file".to_string()));
    assert_eq!(ok(c.stat("/nonexistent-path").await), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_with_rsa_keys_agent_and_password() {
    let s = ok(Sshd::with(Options {
        addr: "127.0.0.3".into(),
        password: true,
        ..Options::default()
    }));
    // RSA key (rsa-sha2 signature).
    let mut t = target(&s);
    t.key_file = Some(s.rsa_key.to_string_lossy().into_owned());
    let c = ok(SshConnection::new("h", &t, &options()));
    assert_eq!(sh(&c, "echo rsa").await.stdout_text(), "rsa\n");

    // Password only.
    let mut t = target(&s);
    t.key_file = None;
    t.password = Some(sshd::PASSWORD.into());
    let c = ok(SshConnection::new("h", &t, &options()));
    assert_eq!(sh(&c, "echo pw").await.stdout_text(), "pw\n");

    // A wrong password: refused, saying what was tried.
    t.password = Some("wrong".into());
    let c = ok(SshConnection::new("h", &t, &options()));
    let e = c.run(&CommandSpec::shell("true"), None).await.err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("permission denied"), "{msg}");
    assert!(msg.contains("password"), "{msg}");

    // ssh-agent holding the ed25519 key.
    let sock = s.dir.path().join("agent.sock");
    let mut agent = ok(std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn());
    assert!(sshd::wait_until(Duration::from_secs(5), || sock.exists()));
    let added = ok(std::process::Command::new("ssh-add")
        .arg(&s.ed25519_key)
        .env("SSH_AUTH_SOCK", &sock)
        .output());
    assert!(added.status.success(), "{added:?}");
    let mut t = target(&s);
    t.key_file = None;
    let mut o = options();
    o.use_agent = true;
    o.agent_socket = Some(sock.clone());
    let c = ok(SshConnection::new("h", &t, &o));
    let out = sh(&c, "echo agent").await;
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(out.stdout_text(), "agent\n");
    assert!(s.log().contains("Accepted publickey"), "{}", s.log());
}

fn other_key() -> String {
    // Any ed25519 key that is not the server's.
    let dir = ok(tempfile::tempdir());
    let p = dir.path().join("k");
    let st = ok(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(&p)
        .status());
    assert!(st.success());
    ok(std::fs::read_to_string(p.with_extension("pub")))
        .trim()
        .to_string()
}

fn fingerprint(key_line: &str) -> String {
    let k: russh::keys::PublicKey = ok(key_line.parse());
    k.fingerprint(russh::keys::HashAlg::Sha256).to_string()
}

async fn connect_err(s: &Sshd, t: &SshTarget, o: &SshOptions) -> String {
    let c = ok(SshConnection::new("h", t, o));
    match c.run(&CommandSpec::shell("true"), None).await {
        Ok(out) => panic!("connected: {out:?}"),
        Err(e) => {
            let _ = s;
            e.to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_keys_are_checked() {
    let s = ok(Sshd::start("127.0.0.4"));
    let dir = ok(tempfile::tempdir());
    let kh = dir.path().join("known_hosts");
    let name = format!("[{}]:{}", s.addr, s.port);
    let mut t = target(&s);
    t.known_hosts_file = Some(kh.clone());

    // Unknown host: refused under strict.
    ok(std::fs::write(&kh, ""));
    let msg = connect_err(&s, &t, &options()).await;
    assert!(
        msg.contains(&format!("no host key is known for {name}")),
        "{msg}"
    );
    assert!(msg.contains(&fingerprint(&s.host_key)), "{msg}");

    // Changed key: refused with both fingerprints and file:line.
    let other = other_key();
    ok(std::fs::write(&kh, format!("# first\n{name}\t{other}\n")));
    let msg = connect_err(&s, &t, &options()).await;
    assert!(msg.contains("HAS CHANGED"), "{msg}");
    assert!(msg.contains(&fingerprint(&s.host_key)), "{msg}");
    assert!(msg.contains(&fingerprint(&other)), "{msg}");
    assert!(msg.contains(&format!("{}:2", kh.display())), "{msg}");

    // Revoked: refused even though the key is also listed.
    ok(std::fs::write(
        &kh,
        format!("{name} {}\n@revoked * {}\n", s.host_key, s.host_key),
    ));
    let msg = connect_err(&s, &t, &options()).await;
    assert!(msg.contains("REVOKED"), "{msg}");

    // Wildcard pattern with a negation that does not apply.
    ok(std::fs::write(
        &kh,
        format!("[127.0.0.*]:{},!nothing {}\n", s.port, s.host_key),
    ));
    let c = ok(SshConnection::new("h", &t, &options()));
    assert_eq!(sh(&c, "echo ok").await.stdout_text(), "ok\n");

    // Hashed entry (ssh-keygen -H).
    ok(std::fs::write(&kh, format!("{name} {}\n", s.host_key)));
    let st = ok(std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output());
    assert!(st.status.success(), "{st:?}");
    assert!(ok(std::fs::read_to_string(&kh)).starts_with("|1|"));
    let c = ok(SshConnection::new("h", &t, &options()));
    assert_eq!(sh(&c, "echo hashed").await.stdout_text(), "hashed\n");

    // accept-new: an unknown host is added, then known.
    ok(std::fs::write(&kh, ""));
    let mut o = options();
    o.host_key_policy = Some(HostKeyPolicy::AcceptNew);
    let c = ok(SshConnection::new("h", &t, &o));
    assert_eq!(sh(&c, "echo new").await.stdout_text(), "new\n");
    let text = ok(std::fs::read_to_string(&kh));
    assert_eq!(text, format!("{name} {}\n", s.host_key));
    let c = ok(SshConnection::new("h", &t, &options()));
    assert_eq!(sh(&c, "echo known").await.stdout_text(), "known\n");

    // accept-new still refuses a changed key; off lets it through.
    ok(std::fs::write(&kh, format!("{name} {other}\n")));
    let msg = connect_err(&s, &t, &o).await;
    assert!(msg.contains("HAS CHANGED"), "{msg}");
    t.host_key_policy = Some(HostKeyPolicy::Off);
    let c = ok(SshConnection::new("h", &t, &options()));
    assert_eq!(sh(&c, "echo off").await.stdout_text(), "off\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumps_through_a_proxy_host() {
    let jump = ok(Sshd::start("127.0.0.5"));
    let s = ok(Sshd::start("127.0.0.6"));
    // The jump host accepts the target's client key too; one known_hosts names both.
    let pubkey = ok(std::fs::read_to_string(s.ed25519_key.with_extension("pub")));
    let ak = jump.dir.path().join("authorized_keys");
    let mut keys = ok(std::fs::read_to_string(&ak));
    keys.push_str(&pubkey);
    ok(std::fs::write(&ak, keys));
    let kh = s.dir.path().join("both_known_hosts");
    ok(std::fs::write(
        &kh,
        format!(
            "[{}]:{} {}\n[{}]:{} {}\n",
            jump.addr, jump.port, jump.host_key, s.addr, s.port, s.host_key
        ),
    ));
    let mut t = target(&s);
    t.known_hosts_file = Some(kh.clone());
    t.proxy_jump = Some(format!("{USER}@{}:{}", jump.addr, jump.port));
    let c = ok(SshConnection::new("h", &t, &options()));
    assert!(c.describe().contains("via"), "{}", c.describe());
    let out = sh(&c, "echo through").await;
    assert_eq!(out.stdout_text(), "through\n");
    assert!(!jump.connection_processes().is_empty());
    assert!(jump.log().contains("Accepted publickey"), "{}", jump.log());

    // The same through ansible_ssh_common_args.
    let mut t = target(&s);
    t.known_hosts_file = Some(kh);
    t.common_args = Some(format!("-o ProxyJump={USER}@{}:{}", jump.addr, jump.port));
    let c = ok(SshConnection::new("h", &t, &options()));
    assert!(c.describe().contains("via"), "{}", c.describe());
    assert_eq!(sh(&c, "echo again").await.stdout_text(), "again\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_commands_at_once_share_one_connection() {
    let s = ok(Sshd::with(Options {
        addr: "127.0.0.7".into(),
        max_sessions: 10,
        ..Options::default()
    }));
    let c = Arc::new(conn(&s));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let c = c.clone();
        tasks.spawn(async move {
            let out = ok(c
                .run(&CommandSpec::shell(format!("sleep 0.2; echo {i}")), None)
                .await);
            (i, out)
        });
    }
    let mut seen = 0;
    while let Some(r) = tasks.join_next().await {
        let (i, out) = ok(r);
        assert_eq!(out.rc, Some(0), "{out:?}");
        assert_eq!(out.stdout_text(), format!("{i}\n"));
        seen += 1;
    }
    assert_eq!(seen, 24);
    // One connection: one connection handler under the listener.
    assert_eq!(s.connection_processes().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_output_does_not_hold_up_other_commands() {
    let s = ok(Sshd::start("127.0.0.8"));
    let c = Arc::new(conn(&s));
    let order = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let big = {
        let c = c.clone();
        let order = order.clone();
        tokio::spawn(async move {
            let out = ok(c
                .run(&CommandSpec::shell("head -c 50000000 /dev/zero"), Some(tx))
                .await);
            (order.fetch_add(1, Ordering::SeqCst), out)
        })
    };
    // Once the big output flows, run small commands beside it.
    assert!(rx.recv().await.is_some());
    let mut small = Vec::new();
    for i in 0..4 {
        let c = c.clone();
        let order = order.clone();
        small.push(tokio::spawn(async move {
            let out = ok(c.run(&CommandSpec::shell(format!("echo {i}")), None).await);
            assert_eq!(out.stdout_text(), format!("{i}\n"));
            order.fetch_add(1, Ordering::SeqCst)
        }));
    }
    // Nobody reads the big command's stream any more: it must not matter.
    drop(rx);
    for h in small {
        let finished = ok(h.await);
        assert!(finished < 4, "a small command finished after the big one");
    }
    let (finished, out) = ok(big.await);
    assert_eq!(finished, 4);
    assert_eq!(out.rc, Some(0));
    assert_eq!(out.stdout.len(), 50_000_000);
}

fn started_sink() -> (
    mpsc::UnboundedSender<lifeboat::connection::OutputChunk>,
    mpsc::UnboundedReceiver<lifeboat::connection::OutputChunk>,
) {
    mpsc::unbounded_channel()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_times_the_command_out() {
    let s = ok(Sshd::start("127.0.0.9"));
    let mut t = target(&s);
    t.connect_timeout = Some(Duration::from_secs(2));
    let c = Arc::new(ok(SshConnection::new("h1", &t, &options())));
    let (tx, mut rx) = started_sink();
    let run = {
        let c = c.clone();
        tokio::spawn(async move {
            c.run(
                &CommandSpec::shell("echo started; sleep 30").timeout(Some(Duration::from_secs(2))),
                Some(tx),
            )
            .await
        })
    };
    assert!(rx.recv().await.is_some());
    // The server stops answering: every process of this connection is frozen.
    for p in s.descendants() {
        sshd::signal(p, nix::sys::signal::Signal::SIGSTOP);
    }
    let out = ok(tokio::time::timeout(Duration::from_secs(20), run).await);
    let out = ok(ok(out));
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.rc, None);
    assert_eq!(out.stdout_text(), "started\n");
    // The frozen connection does not answer a new channel request within the connect
    // timeout: it is given up and the command runs on a new connection (the listener
    // still accepts).
    let started = std::time::Instant::now();
    let out = ok(tokio::time::timeout(Duration::from_secs(20), sh(&c, "echo again")).await);
    assert_eq!(out.stdout_text(), "again\n");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(s.connection_processes().len(), 2);
    for p in s.descendants() {
        sshd::signal(p, nix::sys::signal::Signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_remote_command() {
    let s = ok(Sshd::start("127.0.0.10"));
    let c = conn(&s);
    let marker = format!("lifeboat-timeout-{}", std::process::id());
    let out = ok(c
        .run(
            &CommandSpec::shell(format!("echo started; sleep 300 # {marker}\n"))
                .timeout(Some(Duration::from_millis(700))),
            None,
        )
        .await);
    assert!(out.timed_out);
    assert_eq!(out.rc, None);
    assert_eq!(out.stdout_text(), "started\n");
    // The remote sleep (and its shell) are gone.
    let gone = sshd::wait_until(Duration::from_secs(10), || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output();
        matches!(out, Ok(o) if o.stdout.is_empty())
    });
    assert!(gone, "the remote command still runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_is_reported_and_reopened() {
    let s = ok(Sshd::start("127.0.0.11"));
    let c = Arc::new(conn(&s));
    let (tx, mut rx) = started_sink();
    let run = {
        let c = c.clone();
        tokio::spawn(async move {
            c.run(&CommandSpec::shell("echo started; sleep 30"), Some(tx))
                .await
        })
    };
    assert!(rx.recv().await.is_some());
    // Kill the connection's sshd processes (monitor and session), as a crash would.
    for p in s.descendants() {
        sshd::signal(p, nix::sys::signal::Signal::SIGKILL);
    }
    let res = ok(ok(tokio::time::timeout(Duration::from_secs(20), run).await));
    let msg = match res {
        Ok(out) => panic!("no error: {out:?}"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("connection was lost"), "{msg}");
    assert!(msg.contains(&format!("{}:{}", s.addr, s.port)), "{msg}");
    // The next command reconnects.
    assert_eq!(sh(&c, "echo back").await.stdout_text(), "back\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_hosts_fail_with_the_address_and_reason() {
    // Nothing listens on this port.
    let port = {
        let l = ok(std::net::TcpListener::bind(("127.0.0.12", 0)));
        ok(l.local_addr()).port()
    };
    let t = SshTarget {
        address: "127.0.0.12".into(),
        port: Some(port),
        user: Some(USER.into()),
        ..SshTarget::default()
    };
    let c = ok(SshConnection::new("dead", &t, &options()));
    let msg = c
        .run(&CommandSpec::shell("true"), None)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains(&format!("127.0.0.12:{port}")), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");

    // Something accepts but never speaks SSH: the connect timeout.
    let silent = ok(std::net::TcpListener::bind(("127.0.0.12", 0)));
    let t = SshTarget {
        port: Some(ok(silent.local_addr()).port()),
        connect_timeout: Some(Duration::from_millis(500)),
        ..t
    };
    let c = ok(SshConnection::new("silent", &t, &options()));
    let msg = c
        .run(&CommandSpec::shell("true"), None)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("connect timeout"), "{msg}");
}

fn sha256_file(p: &std::path::Path) -> String {
    let mut h = Sha256::new();
    h.update(ok(std::fs::read(p)));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

async fn transfers(s: &Sshd, sftp: bool) {
    let c = conn(s);
    let dir = ok(tempfile::tempdir());
    let local = dir.path().join("big.bin");
    // 20 MB of varied bytes.
    let mut data = Vec::with_capacity(20 << 20);
    let mut x: u32 = 12345;
    while data.len() < 20 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        data.extend_from_slice(&x.to_le_bytes());
    }
    ok(std::fs::write(&local, &data));
    drop(data);
    let remote = format!("/tmp/lifeboat-ssh-test-{}-{}", s.port, std::process::id());
    ok(c.put_file(&local, &remote).await);
    let back = dir.path().join("back.bin");
    ok(c.get_file(&remote, &back).await);
    assert_eq!(sha256_file(&local), sha256_file(&back));

    ok(c.put_bytes(b"small\n", &remote).await);
    assert_eq!(
        ok(c.read_file(&remote, 100).await),
        Some(b"small\n".to_vec())
    );
    let msg = c
        .read_file(&remote, 3)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("6 bytes"), "{msg}");
    assert_eq!(ok(c.read_file("/nonexistent-path", 100).await), None);
    let msg = c
        .get_file("/nonexistent-path", &back)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("/nonexistent-path"), "{msg}");

    // A rename that never replaces: over SFTP it moves a file to a free name and
    // refuses a taken one (both files stay); without SFTP it does nothing and says so.
    let (moved, taken) = (format!("{remote}.moved"), format!("{remote}.taken"));
    ok(c.put_bytes(b"other\n", &taken).await);
    let renamed = ok(c.rename_new(&remote, &moved).await);
    assert_eq!(renamed, sftp, "{}", s.log());
    if renamed {
        assert_eq!(ok(c.read_file(&remote, 100).await), None);
        assert_eq!(
            ok(c.read_file(&moved, 100).await),
            Some(b"small\n".to_vec())
        );
        let msg = c
            .rename_new(&moved, &taken)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains(&format!("cannot rename {moved} to {taken}")),
            "{msg}"
        );
        assert_eq!(
            ok(c.read_file(&taken, 100).await),
            Some(b"other\n".to_vec())
        );
        assert_eq!(
            ok(c.read_file(&moved, 100).await),
            Some(b"small\n".to_vec())
        );
    } else {
        assert_eq!(
            ok(c.read_file(&remote, 100).await),
            Some(b"small\n".to_vec())
        );
    }
    sh(&c, &format!("rm -f {remote} {moved} {taken}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_move_over_sftp() {
    let s = ok(Sshd::start("127.0.0.13"));
    transfers(&s, true).await;
    assert!(s.log().contains("sftp"), "{}", s.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_move_without_sftp() {
    let s = ok(Sshd::with(Options {
        addr: "127.0.0.14".into(),
        sftp: false,
        ..Options::default()
    }));
    transfers(&s, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_config_names_the_host_and_the_inventory_wins() {
    let s = ok(Sshd::start("127.0.0.15"));
    let cfg = s.dir.path().join("ssh_config");
    ok(std::fs::write(
        &cfg,
        format!(
            "Host other\n  Port 1\n\nHost alias-*\n  HostName {}\n  Port {}\n  User {USER}\n  \
             IdentityFile {}\n  UserKnownHostsFile {}\n  ConnectTimeout 3\n  ServerAliveInterval 5\n",
            s.addr,
            s.port,
            s.ed25519_key.display(),
            s.known_hosts.display()
        ),
    ));
    let mut o = options();
    o.read_config = true;
    o.config_file = Some(cfg);
    let t = SshTarget {
        address: "alias-target".into(),
        ..SshTarget::default()
    };
    let c = ok(SshConnection::new("h", &t, &o));
    assert!(
        c.describe()
            .contains(&format!("{USER}@{}:{}", s.addr, s.port)),
        "{}",
        c.describe()
    );
    assert_eq!(
        sh(&c, "echo via-config").await.stdout_text(),
        "via-config\n"
    );

    // Inventory values win over the file: a wrong user from the inventory is refused.
    let t = SshTarget {
        address: "alias-target".into(),
        user: Some("nobody".into()),
        ..SshTarget::default()
    };
    let c = ok(SshConnection::new("h", &t, &o));
    assert!(c.describe().contains(&format!("nobody@{}", s.addr)));
    let msg = c
        .run(&CommandSpec::shell("true"), None)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("permission denied for user `nobody`"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn become_runs_through_sudo_with_the_password_on_stdin() {
    ok(sshd::ensure_sudo());
    let s = ok(Sshd::start("127.0.0.16"));
    let c = conn(&s);
    let with_password = lifeboat::connection::Become {
        user: None,
        method: None,
        password: Some(sshd::PASSWORD.into()),
    };
    let out = ok(c
        .run(
            &CommandSpec::shell("id -un; cat")
                .stdin("after the password\n")
                .become_(Some(with_password)),
            None,
        )
        .await);
    assert_eq!(out.rc, Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), "root\nafter the password\n");

    // Without a password sudo -n refuses rather than waiting for one.
    let out = ok(c
        .run(
            &CommandSpec::shell("id -un").become_(Some(lifeboat::connection::Become::default())),
            None,
        )
        .await);
    assert_ne!(out.rc, Some(0), "{out:?}");
}
