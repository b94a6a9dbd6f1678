//! Persistent shells over a real OpenSSH server on loopback: commands without stdin run
//! one after another in one kept shell, each as if on a channel of its own (own `$$`,
//! variables, directory and `exit`), with output that no command can cut short by
//! printing the end tag; a timeout kills the shell; idle shells give their channel up
//! to transfers; `lifeboat_ssh_persistent_shell: false` turns them off.

#[path = "support/sshd.rs"]
mod sshd;

use std::time::Duration;

use lifeboat::connection::ssh::{SshConnection, SshTarget};
use lifeboat::connection::{CommandOutput, CommandSpec, Connection, Stream};
use sshd::{Sshd, options, target};
use tokio::sync::mpsc;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn conn_with(s: &Sshd, edit: impl FnOnce(&mut SshTarget)) -> SshConnection {
    let mut t = target(s);
    edit(&mut t);
    ok(SshConnection::new("h1", &t, &options()))
}

async fn sh(c: &SshConnection, script: &str) -> CommandOutput {
    ok(c.run(&CommandSpec::shell(script), None).await)
}

/// The parent pid of the command's `/bin/sh`: the persistent shell when there is one.
async fn parent(c: &SshConnection) -> String {
    let out = sh(c, "echo $PPID").await;
    assert_eq!(out.rc, Some(0), "{out:?}");
    out.stdout_text().trim().to_string()
}

/// The name of the program that started the command's shell: `sh` (the persistent
/// shell) or sshd's session process.
async fn parent_name(c: &SshConnection) -> String {
    let out = sh(c, "cat /proc/$PPID/comm").await;
    assert_eq!(out.rc, Some(0), "{out:?}");
    out.stdout_text().trim().to_string()
}

/// Whether a process exists and is not a zombie (sshd's orphans go to an init that may
/// reap them late).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Waits for `cond` without blocking the runtime (the kill runs in a task of its own).
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_share_one_shell_yet_run_as_on_their_own_channel() {
    let s = ok(Sshd::start("127.0.0.70"));
    let c = conn_with(&s, |_| {});
    let first = parent(&c).await;
    assert_eq!(parent(&c).await, first, "a second shell was started");

    // Nothing one command does to its shell reaches the next.
    let out = sh(&c, "cd /tmp; export LB_LEAK=1; LB_VAR=2; umask 077; exit 4").await;
    assert_eq!(out.rc, Some(4));
    let out = sh(&c, "pwd; echo ${LB_LEAK:-unset} ${LB_VAR:-unset} $(umask)").await;
    let home = ok(sh(&c, "cd && pwd")
        .await
        .stdout_text()
        .lines()
        .next()
        .map(String::from)
        .ok_or("no home"));
    assert_eq!(out.stdout_text(), format!("{home}\nunset unset 0022\n"));
    assert_eq!(parent(&c).await, first, "`exit` ended the shell");

    // lifeboat's own scripts run in a subshell of the kept shell: they see none of its
    // variables either.
    let out = ok(c.run(&CommandSpec::sh("exit 3"), None).await);
    assert_eq!(out.rc, Some(3));
    let out = ok(c
        .run(&CommandSpec::sh("echo ${__lb_rc-unset} $$"), None)
        .await);
    assert_eq!(out.stdout_text(), format!("unset {first}\n"));

    // A function of lifeboat's own (the completion wrapper) runs in the kept shell
    // itself: `/proc/self` read by a built-in is that shell, not a subshell. Its status
    // comes back, and the shell goes on serving commands.
    let out = ok(c
        .run(
            &CommandSpec::sh_function(
                "IFS= read -r s < /proc/self/stat; echo \"${s%% *} $#\"; unset s; return 6",
            ),
            None,
        )
        .await);
    assert_eq!(
        (out.rc, out.stdout_text()),
        (Some(6), format!("{first} 0\n"))
    );
    assert_eq!(sh(&c, "echo ${s-unset}").await.stdout_text(), "unset\n");
    assert_eq!(parent(&c).await, first, "the function ended the shell");

    // A command that reads stdin gets its end at once, not the shell's input.
    let out = ok(c
        .run(
            &CommandSpec::argv(["cat"]).timeout(Some(Duration::from_secs(20))),
            None,
        )
        .await);
    assert_eq!(
        (out.rc, out.stdout.len(), out.timed_out),
        (Some(0), 0, false)
    );
    assert_eq!(sh(&c, "echo after").await.stdout_text(), "after\n");
    assert_eq!(parent(&c).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_comes_back_whole_whatever_it_holds() {
    let s = ok(Sshd::start("127.0.0.71"));
    let c = conn_with(&s, |_| {});
    // No final newline, on both streams.
    let out = sh(&c, "printf out; printf err >&2").await;
    assert_eq!(
        (out.stdout_text().as_str(), out.stderr_text().as_str()),
        ("out", "err")
    );
    // Something that looks like an end tag is output, and does not end the command.
    let fake = "lifeboat-end:0123456789abcdef0123456789abcdef:1 0";
    let out = sh(
        &c,
        &format!("echo '{fake}'; echo '{fake}' >&2; echo still; exit 5"),
    )
    .await;
    assert_eq!(out.rc, Some(5));
    assert_eq!(out.stdout_text(), format!("{fake}\nstill\n"));
    assert_eq!(out.stderr_text(), format!("{fake}\n"));
    // Binary output, and a lot of it, streamed as it comes.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let out = ok(c
        .run(
            &CommandSpec::shell("head -c 3000000 /dev/zero | tr '\\0' '\\1'; printf '\\000\\377'"),
            Some(tx),
        )
        .await);
    assert_eq!(out.stdout.len(), 3_000_002);
    assert!(out.stdout[..3_000_000].iter().all(|&b| b == 1));
    assert_eq!(&out.stdout[3_000_000..], &[0, 255]);
    let mut streamed = Vec::new();
    while let Ok((stream, data)) = rx.try_recv() {
        assert_eq!(stream, Stream::Stdout);
        streamed.extend(data);
    }
    assert_eq!(streamed, out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_shell_and_the_next_command_gets_a_new_one() {
    let s = ok(Sshd::start("127.0.0.72"));
    let c = conn_with(&s, |_| {});
    let first = parent(&c).await;
    let out = ok(c
        .run(
            &CommandSpec::shell("echo started; exec sleep 300")
                .timeout(Some(Duration::from_millis(800))),
            None,
        )
        .await);
    assert!(out.timed_out);
    assert_eq!(out.stdout_text(), "started\n");
    // The shell and its sleep are gone.
    let gone = wait_until(Duration::from_secs(10), || !alive(&first)).await;
    assert!(gone, "the timed-out shell {first} still runs");
    let next = parent(&c).await;
    assert_ne!(next, first);
    assert_eq!(sh(&c, "echo fine").await.stdout_text(), "fine\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_command_has_the_shells_status_and_the_shell_lives_on() {
    let s = ok(Sshd::start("127.0.0.73"));
    let c = conn_with(&s, |_| {});
    let first = parent(&c).await;
    let out = sh(&c, "kill -9 $$").await;
    assert_eq!(out.rc, Some(137), "{out:?}");
    assert!(out.stderr_text().contains("Killed"), "{out:?}");
    assert_eq!(parent(&c).await, first);
    // On a channel of its own, such a command has no exit status at all.
    let own = conn_with(&s, |t| t.persistent_shell = Some(false));
    let out = sh(&own, "kill -9 $$").await;
    assert_eq!(out.rc, None, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_shells_give_their_channels_up_to_transfers() {
    let s = ok(Sshd::start("127.0.0.74"));
    // Two channels: two commands at once leave two idle shells holding both.
    let c = std::sync::Arc::new(conn_with(&s, |t| t.max_channels = Some(2)));
    let (a, b) = tokio::join!(sh(&c, "sleep 0.3; echo a"), sh(&c, "sleep 0.3; echo b"));
    assert_eq!(
        (a.stdout_text(), b.stdout_text()),
        ("a\n".into(), "b\n".into())
    );
    let dir = ok(tempfile::tempdir());
    let local = dir.path().join("f");
    ok(std::fs::write(&local, b"payload"));
    let remote = format!("/tmp/lifeboat-shell-evict-{}", std::process::id());
    let put = tokio::time::timeout(Duration::from_secs(30), c.put_file(&local, &remote)).await;
    ok(ok(put.map_err(
        |_| "the transfer waited for a channel the idle shells kept",
    )));
    let out = sh(&c, &format!("cat {remote}; rm -f {remote}")).await;
    assert_eq!(out.stdout_text(), "payload");
    // Eight commands at once on two channels all complete.
    let runs = (0..8).map(|i| {
        let c = c.clone();
        async move { sh(&c, &format!("echo {i}")).await }
    });
    let outs = futures_util::future::join_all(runs).await;
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(out.stdout_text(), format!("{i}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_shells_can_be_turned_off() {
    let s = ok(Sshd::start("127.0.0.75"));
    let c = conn_with(&s, |t| t.persistent_shell = Some(false));
    let name = parent_name(&c).await;
    assert!(name.starts_with("sshd"), "{name}");
    let on = conn_with(&s, |_| {});
    assert_eq!(parent_name(&on).await, "sh");
    // The inventory variable reads as Ansible's booleans do.
    let dir = ok(tempfile::tempdir());
    let path = dir.path().join("hosts.ini");
    ok(std::fs::write(
        &path,
        "a lifeboat_ssh_persistent_shell=false\nb lifeboat_ssh_persistent_shell=no\nc lifeboat_ssh_persistent_shell=yes\nd\n",
    ));
    let inv = ok(lifeboat::inventory::Inventory::load(Some(&path)).map_err(|e| format!("{e:?}")));
    for (host, want) in [
        ("a", Some(false)),
        ("b", Some(false)),
        ("c", Some(true)),
        ("d", None),
    ] {
        let t = ok(SshTarget::from_inventory(
            &inv.connection(host),
            &inv.host_vars(host),
        ));
        assert_eq!(t.persistent_shell, want, "{host}");
    }
}
