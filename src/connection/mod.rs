//! How lifeboat reaches a host. [`Connection`] is the one interface every module uses:
//! run a command (argv or shell, with stdin, environment, timeout, become) streaming its
//! output, put a file, get a file. `local` runs on the controller itself; SSH plugs in
//! behind the same trait, so nothing above this module knows which transport it uses.

pub mod local;
pub mod ssh;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};

pub use local::LocalConnection;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Program {
    /// An argument vector, run without a shell.
    Argv(Vec<String>),
    /// A script for `/bin/sh -c` (with `set -o pipefail` where the shell has it).
    Shell(String),
    /// One of lifeboat's own POSIX `sh` scripts, run as it is (never under bash). A
    /// transport may run it in a subshell of a kept shell, where `$$` is that shell's pid,
    /// not the script's own.
    Sh(String),
    /// One of lifeboat's own POSIX `sh` scripts written as the body of a function: it
    /// ends with `return` (never `exit` or `exec`) and unsets the variables it sets, so
    /// a kept shell may run it in itself, without the subshell's process. It runs as a
    /// function named `__lb_fn`: its positional parameters are its own.
    ShFunction(String),
}

/// Privilege escalation for one command.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Become {
    /// The user to become (default root).
    pub user: Option<String>,
    /// `sudo` (default) or `su`.
    pub method: Option<String>,
    /// Password fed on stdin to sudo, never in argv.
    pub password: Option<String>,
}

/// A command to run on a host.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// The program.
    pub program: Program,
    /// Bytes written to the command's standard input, then closed.
    pub stdin: Option<Vec<u8>>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
    /// Run as another user.
    pub become_: Option<Become>,
}

impl CommandSpec {
    /// A shell script.
    pub fn shell(script: impl Into<String>) -> Self {
        CommandSpec::new(Program::Shell(script.into()))
    }

    /// One of lifeboat's own POSIX `sh` scripts (see [`Program::Sh`]).
    pub fn sh(script: impl Into<String>) -> Self {
        CommandSpec::new(Program::Sh(script.into()))
    }

    /// One of lifeboat's own scripts written as a function body (see
    /// [`Program::ShFunction`]).
    pub fn sh_function(body: impl Into<String>) -> Self {
        CommandSpec::new(Program::ShFunction(body.into()))
    }

    /// An argument vector.
    pub fn argv<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        CommandSpec::new(Program::Argv(args.into_iter().map(Into::into).collect()))
    }

    /// A program.
    pub fn new(program: Program) -> Self {
        CommandSpec {
            program,
            stdin: None,
            env: Vec::new(),
            cwd: None,
            timeout: None,
            become_: None,
        }
    }

    /// With standard input.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// With a timeout.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// With privilege escalation.
    pub fn become_(mut self, b: Option<Become>) -> Self {
        self.become_ = b;
        self
    }

    /// The command as one shell line (for `-v` output and messages).
    pub fn display(&self) -> String {
        match &self.program {
            Program::Shell(s) | Program::Sh(s) | Program::ShFunction(s) => s.clone(),
            Program::Argv(a) => {
                shlex::try_join(a.iter().map(String::as_str)).unwrap_or_else(|_| a.join(" "))
            }
        }
    }

    /// lifeboat's own script, when the command needs nothing around it (no working
    /// directory, environment or become): a shell that evaluates it directly runs it as
    /// [`CommandSpec::to_shell_line`] would, without a second `eval` and its quoting.
    /// The flag says it is a [`Program::ShFunction`] body, which a kept shell may run in
    /// itself.
    pub fn bare_sh(&self) -> Option<(&str, bool)> {
        if self.cwd.is_some() || !self.env.is_empty() || self.become_.is_some() {
            return None;
        }
        match &self.program {
            Program::Sh(s) => Some((s, false)),
            Program::ShFunction(s) => Some((s, true)),
            _ => None,
        }
    }

    /// The shell line that runs this command, become included: what the local
    /// connection gives `/bin/sh -c` and remote transports execute. Shell scripts run
    /// under bash with `pipefail` when the host has bash, else under `/bin/sh`.
    pub fn to_shell_line(&self) -> String {
        let mut line = String::new();
        if let Some(cwd) = &self.cwd {
            // Nothing runs when the directory cannot be entered.
            line.push_str(&format!("cd {} || exit; ", quote(cwd)));
        }
        for (k, v) in &self.env {
            // Names are checked where they are read (modules); one that is not a
            // shell identifier never reaches the line, so it cannot carry code.
            if is_env_name(k) {
                line.push_str(&format!("export {k}={}; ", quote(v)));
            }
        }
        match &self.program {
            Program::Shell(s) => {
                let q = quote(s);
                line.push_str(&format!(
                    "if command -v bash >/dev/null 2>&1; then exec bash -o pipefail -c {q}; else exec /bin/sh -c {q}; fi"
                ));
            }
            Program::Sh(s) => {
                line.push_str(&format!("eval {}", quote(s)));
            }
            Program::ShFunction(body) => line.push_str(&sh_function_call(body)),
            Program::Argv(a) => {
                line.push_str("exec ");
                line.push_str(&a.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" "));
            }
        }
        match &self.become_ {
            None => line,
            Some(b) => {
                let user = quote(b.user.as_deref().unwrap_or("root"));
                let script = quote(&line);
                match (b.method.as_deref(), b.password.is_some()) {
                    (Some("su"), _) => format!("su {user} -s /bin/sh -c {script}"),
                    // The password is the first line of stdin. The shell reads exactly
                    // that line (never more), hands it to `sudo -v` in a here-document
                    // (never argv), and forgets it. The command then runs with `sudo -n`
                    // on the cached credentials (sudo keys them to the parent process
                    // when there is no terminal, so both are children of this shell),
                    // and gets the rest of stdin: the password never reaches the
                    // command, even when sudo needs none.
                    (_, true) => format!(
                        "IFS= read -r LIFEBOAT_BECOME_PW\n\
                         sudo -S -v -p '' 2>/dev/null <<LIFEBOAT_BECOME_EOF\n\
                         $LIFEBOAT_BECOME_PW\n\
                         LIFEBOAT_BECOME_EOF\n\
                         LIFEBOAT_BECOME_PW=\n\
                         sudo -n -H -u {user} /bin/sh -c {script}"
                    ),
                    (_, false) => format!("sudo -n -H -u {user} /bin/sh -c {script}"),
                }
            }
        }
    }

    /// Standard input as sent: the become password line first, when there is one.
    pub fn stdin_bytes(&self) -> Option<Vec<u8>> {
        // Only sudo takes the password this way; su would need a terminal.
        let password = self
            .become_
            .as_ref()
            .filter(|b| b.method.as_deref() != Some("su"))
            .and_then(|b| b.password.as_ref());
        match (password, &self.stdin) {
            (None, None) => None,
            (None, Some(s)) => Some(s.clone()),
            (Some(p), rest) => {
                let mut v = format!("{p}\n").into_bytes();
                v.extend(rest.iter().flatten());
                Some(v)
            }
        }
    }
}

/// The lines that define a [`Program::ShFunction`] body as the function `__lb_fn` and
/// call it: the status of the last line is the function's.
pub fn sh_function_call(body: &str) -> String {
    format!("__lb_fn() {{\n{body}\n}}\n__lb_fn")
}

/// Whether a name can be an environment variable in a shell: letters, digits and `_`,
/// not starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Quotes a text as one shell word, the same way wherever it appears: as it is when
/// every character is plain (letters, digits, `+-./:@]_`), otherwise in single quotes
/// with each `'` written `'\''`. A NUL byte, which no shell word can hold, is dropped.
/// Because the quoting of a part never depends on what surrounds it, a secret inside a
/// longer value is always written the same way, so outputs can mask it (see
/// [`sq_content`]). One pass: every command pays for quoting its wrapper, a script of a
/// kilobyte and more.
pub fn quote(s: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"+-./:@]_".contains(&b);
    if !s.is_empty() && s.bytes().all(plain) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 16);
    out.push('\'');
    push_sq_content(&mut out, s);
    out.push('\'');
    out
}

/// How [`quote`] writes a text between its single quotes.
pub fn sq_content(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_sq_content(&mut out, s);
    out
}

fn push_sq_content(out: &mut String, s: &str) {
    for (i, part) in s.split('\'').enumerate() {
        if i > 0 {
            out.push_str("'\\''");
        }
        if part.contains('\0') {
            out.extend(part.chars().filter(|&c| c != '\0'));
        } else {
            out.push_str(part);
        }
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of a running command's output, for `-v` streaming.
pub type OutputChunk = (Stream, Vec<u8>);

/// What a finished command produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandOutput {
    /// Exit status; `None` when the command ended without one (killed, lost).
    pub rc: Option<i32>,
    /// Everything written to standard output.
    pub stdout: Vec<u8>,
    /// Everything written to standard error.
    pub stderr: Vec<u8>,
    /// The timeout ended it.
    pub timed_out: bool,
}

impl CommandOutput {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.rc == Some(0)
    }

    /// Standard output as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A transport failed: the host could not be reached or the channel broke. A command
/// that ran and failed is not this; it is a [`CommandOutput`] with a non-zero `rc`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{host}: {message}")]
pub struct ConnectionError {
    /// The host (and address) concerned.
    pub host: String,
    /// What happened.
    pub message: String,
}

/// File metadata as modules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// `file`, `directory`, `link` or `other`.
    pub kind: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner name.
    pub owner: String,
    /// Group name.
    pub group: String,
    /// Size in bytes.
    pub size: u64,
    /// The target, for a symbolic link.
    pub link_target: Option<String>,
}

/// One way of reaching a host.
#[async_trait]
pub trait Connection: Send + Sync {
    /// The host name as the inventory names it, and how it is reached.
    fn describe(&self) -> String;

    /// Opens the connection now, when it otherwise opens on first use (a connection
    /// opened early is then ready for the first command; the error is also what that
    /// command would meet). Nothing runs on the host.
    async fn open(&self) -> Result<(), ConnectionError> {
        Ok(())
    }

    /// Runs a command to its end (or its timeout), sending output chunks to `sink`
    /// while it runs when one is given.
    async fn run(
        &self,
        spec: &CommandSpec,
        sink: Option<mpsc::UnboundedSender<OutputChunk>>,
    ) -> Result<CommandOutput, ConnectionError>;

    /// Writes `data` to `remote_path` on the host (not atomically; callers write a
    /// temporary name and rename).
    async fn put_bytes(&self, data: &[u8], remote_path: &str) -> Result<(), ConnectionError>;

    /// Copies a controller file to `remote_path` on the host, in constant memory.
    async fn put_file(&self, local: &Path, remote_path: &str) -> Result<(), ConnectionError>;

    /// Copies a host file to `local` on the controller.
    async fn get_file(&self, remote_path: &str, local: &Path) -> Result<(), ConnectionError>;

    /// Reads a host file into memory; `None` when it does not exist.
    async fn read_file(
        &self,
        remote_path: &str,
        max: u64,
    ) -> Result<Option<Vec<u8>>, ConnectionError>;

    /// Metadata of a host path (not following a final symlink); `None` when absent.
    async fn stat(&self, remote_path: &str) -> Result<Option<FileStat>, ConnectionError>;

    /// Renames `from` to `to` on the host, failing when something is at `to` (it never
    /// replaces), without starting a process there where the transport can (SFTP's
    /// rename). `Ok(false)`: this transport cannot, nothing was done; the caller renames
    /// some other way.
    async fn rename_new(&self, _from: &str, _to: &str) -> Result<bool, ConnectionError> {
        Ok(false)
    }
}

/// One connection per host, opened on first use and shared by every step on it.
pub struct ConnectionPool {
    inventory: Arc<crate::inventory::Inventory>,
    ssh_options: ssh::SshOptions,
    open: Mutex<HashMap<String, Arc<dyn Connection>>>,
}

impl ConnectionPool {
    /// A pool over an inventory's connection settings; SSH hosts get `ssh_options`
    /// (what the command line and environment say for every host).
    pub fn new(inventory: Arc<crate::inventory::Inventory>, ssh_options: ssh::SshOptions) -> Self {
        ConnectionPool {
            inventory,
            ssh_options,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Starts opening the connections to `hosts` in the background, so that the
    /// handshakes overlap whatever the controller does before their first command. A
    /// connection that fails is tried again by its first command only when that command
    /// comes after the failure.
    pub fn open_early(self: &Arc<Self>, hosts: Vec<String>) {
        for host in hosts {
            let pool = self.clone();
            tokio::spawn(async move {
                if let Ok(conn) = pool.get(&host).await {
                    let _ = conn.open().await;
                }
            });
        }
    }

    /// The connection to a host, opening it on first use.
    pub async fn get(&self, host: &str) -> Result<Arc<dyn Connection>, ConnectionError> {
        let mut open = self.open.lock().await;
        if let Some(c) = open.get(host) {
            return Ok(c.clone());
        }
        let settings = self.inventory.connection(host);
        let conn: Arc<dyn Connection> = match settings.kind {
            crate::inventory::ConnectionKind::Local => Arc::new(LocalConnection::new(host)),
            crate::inventory::ConnectionKind::Ssh => {
                let vars = self.inventory.host_vars(host);
                Arc::new(ssh::SshConnection::from_inventory(
                    host,
                    &settings,
                    &vars,
                    &self.ssh_options,
                )?)
            }
        };
        open.insert(host.to_string(), conn.clone());
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_line_quotes_every_word() {
        let spec = CommandSpec::argv(["echo", "a b", "$(id)"]);
        let line = spec.to_shell_line();
        assert!(line.contains("'a b'"), "{line}");
        assert!(line.contains("'$(id)'"), "{line}");
    }
}
