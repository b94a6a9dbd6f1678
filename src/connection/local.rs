//! The `local` connection: commands run as processes on the controller itself, each in
//! its own process group so a timeout ends the whole tree. This is the embedded default
//! (the implicit `localhost`) and the reference the SSH transport must behave like.

use std::path::Path;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::{
    CommandOutput, CommandSpec, Connection, ConnectionError, FileStat, OutputChunk, Stream,
};

/// Runs everything on the controller.
#[derive(Debug, Clone)]
pub struct LocalConnection {
    host: String,
}

impl LocalConnection {
    /// A local connection for the inventory host `host`.
    pub fn new(host: impl Into<String>) -> Self {
        LocalConnection { host: host.into() }
    }

    fn err(&self, message: impl Into<String>) -> ConnectionError {
        ConnectionError {
            host: format!("{} (local)", self.host),
            message: message.into(),
        }
    }
}

async fn pump(
    mut reader: impl AsyncRead + Unpin,
    stream: Stream,
    sink: Option<mpsc::UnboundedSender<OutputChunk>>,
) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(s) = &sink {
                    let _ = s.send((stream, buf[..n].to_vec()));
                }
                all.extend_from_slice(&buf[..n]);
            }
        }
    }
    all
}

#[async_trait]
impl Connection for LocalConnection {
    fn describe(&self) -> String {
        format!("{} (local)", self.host)
    }

    async fn run(
        &self,
        spec: &CommandSpec,
        sink: Option<mpsc::UnboundedSender<OutputChunk>>,
    ) -> Result<CommandOutput, ConnectionError> {
        // Never the command itself: it may hold secrets.
        tracing::debug!(host = %self.host, "run a command");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(spec.to_shell_line());
        let stdin = spec.stdin_bytes();
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| self.err(format!("cannot start /bin/sh: {e}")))?;
        let pid = child.id();
        // Dropped early (a step timeout, Ctrl-C): end the whole process group.
        let mut guard = GroupGuard(pid);
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = w.write_all(&data).await;
                let _ = w.shutdown().await;
            });
        }
        let out = child
            .stdout
            .take()
            .map(|r| tokio::spawn(pump(r, Stream::Stdout, sink.clone())));
        let err = child
            .stderr
            .take()
            .map(|r| tokio::spawn(pump(r, Stream::Stderr, sink)));
        let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
        let waited = match deadline {
            Some(d) => tokio::time::timeout_at(d, child.wait()).await.ok(),
            None => Some(child.wait().await),
        };
        let (status, mut timed_out) = match waited {
            Some(Ok(status)) => (status.code(), false),
            Some(Err(e)) => return Err(self.err(format!("waiting for the command failed: {e}"))),
            None => {
                kill_group(pid);
                let _ = child.wait().await;
                (None, true)
            }
        };
        // A background child that keeps the output open keeps the command running, up
        // to the same deadline; then its group is ended too. Daemons must detach from
        // stdout/stderr (setsid, redirections) to outlive their step.
        let mut output = Box::pin(async move {
            let stdout = match out {
                Some(h) => h.await.unwrap_or_default(),
                None => Vec::new(),
            };
            let stderr = match err {
                Some(h) => h.await.unwrap_or_default(),
                None => Vec::new(),
            };
            (stdout, stderr)
        });
        let (stdout, stderr) = match deadline {
            Some(d) if !timed_out => match tokio::time::timeout_at(d, &mut output).await {
                Ok(o) => o,
                Err(_) => {
                    kill_group(pid);
                    timed_out = true;
                    // A holder outside the group (its own session) may keep the pipe:
                    // give up on the rest of the output rather than wait for it.
                    tokio::time::timeout(std::time::Duration::from_secs(1), &mut output)
                        .await
                        .unwrap_or_default()
                }
            },
            _ => output.await,
        };
        guard.0 = None;
        Ok(CommandOutput {
            rc: if timed_out { None } else { status },
            stdout,
            stderr,
            timed_out,
        })
    }

    async fn put_bytes(&self, data: &[u8], remote_path: &str) -> Result<(), ConnectionError> {
        tokio::fs::write(remote_path, data)
            .await
            .map_err(|e| self.err(format!("cannot write {remote_path}: {e}")))
    }

    async fn put_file(&self, local: &Path, remote_path: &str) -> Result<(), ConnectionError> {
        tokio::fs::copy(local, remote_path)
            .await
            .map(|_| ())
            .map_err(|e| {
                self.err(format!(
                    "cannot copy {} to {remote_path}: {e}",
                    local.display()
                ))
            })
    }

    async fn get_file(&self, remote_path: &str, local: &Path) -> Result<(), ConnectionError> {
        tokio::fs::copy(remote_path, local)
            .await
            .map(|_| ())
            .map_err(|e| {
                self.err(format!(
                    "cannot copy {remote_path} to {}: {e}",
                    local.display()
                ))
            })
    }

    async fn read_file(
        &self,
        remote_path: &str,
        max: u64,
    ) -> Result<Option<Vec<u8>>, ConnectionError> {
        match tokio::fs::metadata(remote_path).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(format!("cannot read {remote_path}: {e}"))),
            Ok(m) if m.len() > max => {
                return Err(self.err(format!(
                    "{remote_path} is {} bytes, more than the {max} this operation reads",
                    m.len()
                )));
            }
            Ok(_) => {}
        }
        tokio::fs::read(remote_path)
            .await
            .map(Some)
            .map_err(|e| self.err(format!("cannot read {remote_path}: {e}")))
    }

    async fn stat(&self, remote_path: &str) -> Result<Option<FileStat>, ConnectionError> {
        stat_via_command(self, remote_path, None).await
    }
}

/// `stat` through a command, so every transport reports owners and modes alike.
pub async fn stat_via_command(
    conn: &(impl Connection + ?Sized),
    path: &str,
    become_: Option<&super::Become>,
) -> Result<Option<FileStat>, ConnectionError> {
    let line = format!(
        "if [ -e {p} ] || [ -L {p} ]; then stat -c '%F|%a|%U|%G|%s' -- {p}; readlink -- {p} || true; else echo absent; fi",
        p = super::quote(path)
    );
    let out = conn
        .run(&CommandSpec::shell(line).become_(become_.cloned()), None)
        .await?;
    let text = out.stdout_text();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    if first == "absent" || !out.success() {
        return Ok(None);
    }
    file_stat_from(first, lines.next().map(str::to_string))
        .map(Some)
        .map_err(|message| ConnectionError {
            host: conn.describe(),
            message: format!("{message} for {path}"),
        })
}

/// A [`FileStat`] from the output of `stat -c '%F|%a|%U|%G|%s'` and, for a symbolic
/// link, its `readlink`.
pub(crate) fn file_stat_from(fields: &str, link: Option<String>) -> Result<FileStat, String> {
    let parts: Vec<&str> = fields.split('|').collect();
    if parts.len() != 5 {
        return Err(format!("unexpected stat output `{fields}`"));
    }
    let kind = match parts[0] {
        "directory" => "directory",
        "symbolic link" => "link",
        k if k.contains("regular") => "file",
        _ => "other",
    };
    Ok(FileStat {
        kind: kind.to_string(),
        mode: u32::from_str_radix(parts[1], 8).unwrap_or(0),
        owner: parts[2].to_string(),
        group: parts[3].to_string(),
        size: parts[4].parse().unwrap_or(0),
        link_target: link.filter(|_| kind == "link"),
    })
}

/// Kills a command's process group when dropped while the command still runs.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

/// Ends a timed-out command and everything it started in its process group.
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
