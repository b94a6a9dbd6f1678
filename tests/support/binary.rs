//! The one way the integration tests start the `lifeboat` binary. [`Lifeboat`] gives a
//! run the environment every test wants, all under the test's own directory: its own
//! state directory (a state directory is locked per run, so runs at once must not share
//! one), its own host lock directory and `HOME`, no colour, and nothing from the
//! environment of the person running the tests (ssh config, agent, known_hosts, host key
//! policy, tracing). A test overrides what it needs, then runs the binary to its end
//! ([`Lifeboat::run`], with a deadline) or starts it ([`Lifeboat::spawn`]).
//!
//! Included by `support/mod.rs` (as `support::binary`), and by tests that do not use
//! `mod support;` with `#[path = "support/binary.rs"] mod binary;`.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long [`Lifeboat::run`] waits by default before it kills the run and fails.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A `lifeboat` command being described.
pub struct Lifeboat {
    cmd: Command,
    args: Vec<OsString>,
    timeout: Duration,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
}

impl Lifeboat {
    /// `lifeboat`, run in `dir` (the test's own directory), with:
    /// - the state directory `dir/state` (`LIFEBOAT_STATE_DIR`);
    /// - the host lock directory `dir/locks` (`LIFEBOAT_LOCK_DIR`);
    /// - `HOME` `dir/home` (not created here);
    /// - `NO_COLOR=1` and `LIFEBOAT_SSH_CONFIG=none`;
    /// - no `SSH_AUTH_SOCK`, `LIFEBOAT_KNOWN_HOSTS`, `LIFEBOAT_HOST_KEY_CHECKING`,
    ///   `LIFEBOAT_LOG` or `RUST_LOG`;
    /// - standard input closed, and [`TIMEOUT`].
    pub fn new(dir: &Path) -> Lifeboat {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        cmd.current_dir(dir)
            .env("LIFEBOAT_STATE_DIR", dir.join("state"))
            .env("LIFEBOAT_LOCK_DIR", dir.join("locks"))
            .env("HOME", dir.join("home"))
            .env("NO_COLOR", "1")
            .env("LIFEBOAT_SSH_CONFIG", "none")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("LIFEBOAT_KNOWN_HOSTS")
            .env_remove("LIFEBOAT_HOST_KEY_CHECKING")
            .env_remove("LIFEBOAT_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        Lifeboat {
            cmd,
            args: Vec::new(),
            timeout: TIMEOUT,
            stdout: None,
            stderr: None,
        }
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Lifeboat {
        self.args.push(arg.as_ref().to_os_string());
        self.cmd.arg(arg);
        self
    }

    /// More arguments.
    pub fn args<I, S>(mut self, args: I) -> Lifeboat
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Sets an environment variable (it wins over the defaults).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Lifeboat {
        self.cmd.env(key, value);
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Lifeboat
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Lifeboat {
        self.cmd.env_remove(key);
        self
    }

    /// The state directory (`LIFEBOAT_STATE_DIR`).
    pub fn state_dir(self, dir: impl AsRef<OsStr>) -> Lifeboat {
        self.env("LIFEBOAT_STATE_DIR", dir)
    }

    /// The host lock directory (`LIFEBOAT_LOCK_DIR`).
    pub fn lock_dir(self, dir: impl AsRef<OsStr>) -> Lifeboat {
        self.env("LIFEBOAT_LOCK_DIR", dir)
    }

    /// `HOME`.
    pub fn home(self, dir: impl AsRef<OsStr>) -> Lifeboat {
        self.env("HOME", dir)
    }

    /// The ssh config file (`LIFEBOAT_SSH_CONFIG`; `none`: none read).
    pub fn ssh_config(self, file: impl AsRef<OsStr>) -> Lifeboat {
        self.env("LIFEBOAT_SSH_CONFIG", file)
    }

    /// The working directory (`dir` by default).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Lifeboat {
        self.cmd.current_dir(dir);
        self
    }

    /// How long [`Lifeboat::run`] waits.
    pub fn timeout(mut self, timeout: Duration) -> Lifeboat {
        self.timeout = timeout;
        self
    }

    /// Where a spawned run's standard output goes (piped by default).
    pub fn stdout(mut self, to: Stdio) -> Lifeboat {
        self.stdout = Some(to);
        self
    }

    /// Where a spawned run's standard error goes (piped by default).
    pub fn stderr(mut self, to: Stdio) -> Lifeboat {
        self.stderr = Some(to);
        self
    }

    /// The command line, for messages.
    fn command_line(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!("lifeboat {}", args.join(" "))
    }

    /// Runs the binary to its end; panics when it cannot start or outlives the timeout.
    pub fn run(self) -> Ran {
        let line = self.command_line();
        let out = assert_cmd::Command::from_std(self.cmd)
            .timeout(self.timeout)
            .output()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        Ran {
            line,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the binary and returns at once; its output is piped unless
    /// [`Lifeboat::stdout`] and [`Lifeboat::stderr`] say otherwise.
    pub fn spawn(mut self) -> Child {
        let line = self.command_line();
        self.cmd
            .stdout(self.stdout.take().unwrap_or_else(Stdio::piped))
            .stderr(self.stderr.take().unwrap_or_else(Stdio::piped))
            .spawn()
            .unwrap_or_else(|e| panic!("{line}: {e}"))
    }
}

/// A finished run of the binary.
pub struct Ran {
    /// The command line.
    pub line: String,
    /// Exit code (-1 when a signal ended it).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ran {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Standard output, then standard error.
    pub fn console(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.line)?;
        writeln!(f, "exit code: {}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        writeln!(f, "--- stderr ---\n{}", self.stderr)
    }
}
