//! Test fixture: real OpenSSH `sshd` servers on loopback addresses (127.0.0.x) with free
//! ports, each in its own temporary folder with its own host key, client keys, an
//! `authorized_keys` for the login user `lifeboat-test` and a known_hosts file naming it.
//! Started with `sshd -D -e -f CONFIG`, waited for by polling its port (with a
//! deadline), killed with everything it started on Drop. Include it with
//! `#[path = "support/sshd.rs"] mod sshd;`. Tests run as root: the fixture creates the
//! user (shell /bin/sh, a known password) and `/run/sshd` when missing.
#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The login user the tests connect as.
pub const USER: &str = "lifeboat-test";
/// Its password (set by the fixture).
pub const PASSWORD: &str = "lifeboat-test-Pw1";

fn run(cmd: &mut Command) -> Result<std::process::Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// Creates the login user and sshd's privilege separation folder when missing, and sets
/// the user's password (an account with a locked password cannot log in without PAM).
pub fn ensure_user() -> Result<(), String> {
    static ONCE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = ONCE.lock().map_err(|e| e.to_string())?;
    if *done {
        return Ok(());
    }
    std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
    let exists = Command::new("id")
        .arg(USER)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        // Another test binary may create it at the same moment: check again on failure.
        let made = run(Command::new("useradd").args(["-m", "-s", "/bin/sh", USER]));
        let now = Command::new("id")
            .arg(USER)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !now {
            made?;
        }
    }
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("chpasswd: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        writeln!(stdin, "{USER}:{PASSWORD}").map_err(|e| e.to_string())?;
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("chpasswd failed".into());
    }
    *done = true;
    Ok(())
}

/// Lets the login user run anything through sudo with its password (for become tests).
pub fn ensure_sudo() -> Result<(), String> {
    ensure_user()?;
    if !Path::new("/usr/bin/sudo").exists() {
        return Err("sudo is not installed (scripts/test installs it)".into());
    }
    let path = Path::new("/etc/sudoers.d/lifeboat-test");
    let line = format!("{USER} ALL=(ALL) ALL\n");
    if std::fs::read_to_string(path).ok().as_deref() != Some(line.as_str()) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &line).map_err(|e| format!("{}: {e}", tmp.display()))?;
        chmod(&tmp, 0o440)?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Which sshd to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Loopback address to listen on.
    pub addr: String,
    /// `MaxSessions`.
    pub max_sessions: u32,
    /// `PasswordAuthentication` (and keyboard-interactive off).
    pub password: bool,
    /// Offer the SFTP subsystem.
    pub sftp: bool,
    /// More `sshd_config` lines.
    pub extra: Vec<String>,
    /// Sign the host key with this certificate authority's private key and present the
    /// certificate (`HostCertificate`), valid for the listen address.
    pub host_ca: Option<PathBuf>,
    /// Keyboard-interactive authentication on (through PAM: OpenSSH has no other
    /// keyboard-interactive device on Linux).
    pub kbd_interactive: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addr: "127.0.0.1".into(),
            max_sessions: 10,
            password: false,
            sftp: true,
            extra: Vec::new(),
            host_ca: None,
            kbd_interactive: false,
        }
    }
}

/// A running sshd.
pub struct Sshd {
    /// Its folder (config, keys, logs).
    pub dir: tempfile::TempDir,
    /// Address.
    pub addr: String,
    /// Port.
    pub port: u16,
    /// known_hosts with this server's key (as `[addr]:port`).
    pub known_hosts: PathBuf,
    /// The host's public key line (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    /// A client ed25519 key in authorized_keys.
    pub ed25519_key: PathBuf,
    /// A client RSA key in authorized_keys.
    pub rsa_key: PathBuf,
    /// A client ECDSA (nistp256) key in authorized_keys.
    pub ecdsa_key: PathBuf,
    child: Child,
}

fn keygen(path: &Path, kind: &str) -> Result<(), String> {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-C", "", "-f"])
        .arg(path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run(&mut cmd).map(|_| ())
}

fn free_port(addr: &str) -> Result<u16, String> {
    let l = TcpListener::bind((addr, 0)).map_err(|e| format!("bind {addr}:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

impl Sshd {
    /// Starts an sshd with the default options on `addr`.
    pub fn start(addr: &str) -> Result<Sshd, String> {
        Sshd::with(Options {
            addr: addr.into(),
            ..Options::default()
        })
    }

    /// Starts an sshd.
    pub fn with(o: Options) -> Result<Sshd, String> {
        ensure_user()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        // sshd reads authorized_keys as the user: the folder must be traversable.
        chmod(dir.path(), 0o755)?;
        let d = dir.path();
        keygen(&d.join("host_ed25519_key"), "ed25519")?;
        keygen(&d.join("id_ed25519"), "ed25519")?;
        keygen(&d.join("id_rsa"), "rsa")?;
        keygen(&d.join("id_ecdsa"), "ecdsa")?;
        let mut auth = String::new();
        for k in ["id_ed25519.pub", "id_rsa.pub", "id_ecdsa.pub"] {
            auth.push_str(&std::fs::read_to_string(d.join(k)).map_err(|e| e.to_string())?);
        }
        std::fs::write(d.join("authorized_keys"), auth).map_err(|e| e.to_string())?;
        chmod(&d.join("authorized_keys"), 0o644)?;
        let host_key = std::fs::read_to_string(d.join("host_ed25519_key.pub"))
            .map_err(|e| e.to_string())?
            .trim()
            .to_string();
        if let Some(ca) = &o.host_ca {
            run(Command::new("ssh-keygen")
                .args(["-q", "-s"])
                .arg(ca)
                .args(["-h", "-I", "lifeboat-test-host", "-n", &o.addr])
                .arg(d.join("host_ed25519_key.pub")))?;
        }
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port(&o.addr)?;
            let mut conf = vec![
                format!("ListenAddress {}:{port}", o.addr),
                format!("HostKey {}", d.join("host_ed25519_key").display()),
                format!("PidFile {}", d.join("sshd.pid").display()),
                format!("AuthorizedKeysFile {}", d.join("authorized_keys").display()),
                format!("UsePAM {}", if o.kbd_interactive { "yes" } else { "no" }),
                "StrictModes no".into(),
                "PubkeyAuthentication yes".into(),
                format!(
                    "PasswordAuthentication {}",
                    if o.password { "yes" } else { "no" }
                ),
                format!(
                    "KbdInteractiveAuthentication {}",
                    if o.kbd_interactive { "yes" } else { "no" }
                ),
                format!("MaxSessions {}", o.max_sessions),
                "MaxStartups 100".into(),
                "AllowTcpForwarding yes".into(),
                format!("AllowUsers {USER}"),
                "LogLevel VERBOSE".into(),
            ];
            if o.host_ca.is_some() {
                conf.push(format!(
                    "HostCertificate {}",
                    d.join("host_ed25519_key-cert.pub").display()
                ));
            }
            if o.sftp {
                conf.push("Subsystem sftp internal-sftp".into());
            }
            conf.extend(o.extra.iter().cloned());
            let conf_path = d.join("sshd_config");
            std::fs::write(&conf_path, conf.join("\n") + "\n").map_err(|e| e.to_string())?;
            let log = std::fs::File::create(d.join("sshd.log")).map_err(|e| e.to_string())?;
            let mut child = {
                use std::os::unix::process::CommandExt;
                Command::new("/usr/sbin/sshd")
                    .args(["-D", "-e", "-f"])
                    .arg(&conf_path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .process_group(0)
                    .spawn()
                    .map_err(|e| format!("cannot start /usr/sbin/sshd: {e}"))?
            };
            match wait_ready(&mut child, &o.addr, port) {
                Ok(()) => {
                    let known_hosts = d.join("known_hosts");
                    std::fs::write(&known_hosts, format!("[{}]:{port} {host_key}\n", o.addr))
                        .map_err(|e| e.to_string())?;
                    return Ok(Sshd {
                        addr: o.addr.clone(),
                        port,
                        known_hosts,
                        host_key,
                        ed25519_key: d.join("id_ed25519"),
                        rsa_key: d.join("id_rsa"),
                        ecdsa_key: d.join("id_ecdsa"),
                        child,
                        dir,
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
                    last_err = format!("{e}\n{log}");
                }
            }
        }
        Err(format!("sshd did not start: {last_err}"))
    }

    /// The listener's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Every process started under the listener (connection handlers, sessions).
    pub fn descendants(&self) -> Vec<u32> {
        descendants(self.pid())
    }

    /// Adds a public key file's line to authorized_keys.
    pub fn authorize(&self, public_key: &Path) -> Result<(), String> {
        let line = std::fs::read_to_string(public_key)
            .map_err(|e| format!("{}: {e}", public_key.display()))?;
        let ak = self.dir.path().join("authorized_keys");
        let mut keys = std::fs::read_to_string(&ak).map_err(|e| e.to_string())?;
        keys.push_str(&line);
        std::fs::write(&ak, keys).map_err(|e| e.to_string())
    }

    /// The per-connection sshd processes (direct children of the listener).
    pub fn connection_processes(&self) -> Vec<u32> {
        children(self.pid())
    }
}

/// Waits until the port answers with an SSH banner, or the server exits, or 10 s pass.
fn wait_ready(child: &mut Child, addr: &str, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sshd exited: {status}"));
        }
        if let Ok(mut s) = TcpStream::connect((addr, port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 8];
            if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("nothing answered on {addr}:{port} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parent pid of a process, from /proc.
fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: read after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| ppid(*p) == Some(pid))
        .collect()
}

/// Every process under `pid`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children(p) {
            all.push(c);
            todo.push(c);
        }
    }
    all
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        use nix::sys::signal::Signal;
        let all = self.descendants();
        for p in &all {
            signal(*p, Signal::SIGCONT);
            signal(*p, Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Client options that ignore the machine's own ~/.ssh and agent.
pub fn options() -> lifeboat::connection::ssh::SshOptions {
    lifeboat::connection::ssh::SshOptions {
        use_agent: false,
        read_config: false,
        home: Some(PathBuf::from("/nonexistent-lifeboat-home")),
        connect_timeout: Duration::from_secs(5),
        ..lifeboat::connection::ssh::SshOptions::default()
    }
}

/// How a client reaches `s` as the test user, with its ed25519 key and known_hosts.
pub fn target(s: &Sshd) -> lifeboat::connection::ssh::SshTarget {
    lifeboat::connection::ssh::SshTarget {
        address: s.addr.clone(),
        port: Some(s.port),
        user: Some(USER.into()),
        key_file: Some(s.ed25519_key.to_string_lossy().into_owned()),
        known_hosts_file: Some(s.known_hosts.clone()),
        ..lifeboat::connection::ssh::SshTarget::default()
    }
}
