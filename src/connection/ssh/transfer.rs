//! File transfer over SSH: SFTP when the server offers the subsystem (one session per
//! connection, kept for every transfer), else a stream through `cat` on an exec
//! channel. Both move data in fixed-size chunks (constant memory for any size).
//! Downloads compare the SHA-256 of what was received with the remote `sha256sum`;
//! uploads are checked by their callers before they are renamed into place. Also
//! `read_file` with its size limit.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use russh::ChannelMsg;
use russh_sftp::client::SftpSession;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use super::{Live, SshConnection, describe_russh};
use crate::connection::{CommandSpec, Connection, ConnectionError, quote};

const CHUNK: usize = 256 * 1024;
const SFTP_UNKNOWN: u8 = 0;
const SFTP_YES: u8 = 1;
const SFTP_NO: u8 = 2;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An SFTP session shared by the transfers of one connection, and the channel permit it
/// holds.
pub(super) type SharedSftp = Arc<(SftpSession, OwnedSemaphorePermit)>;

/// The connection's SFTP session (opened now if need be), or `None` when the server
/// has no SFTP.
async fn open_sftp(
    conn: &SshConnection,
) -> Result<Option<(Arc<Live>, SharedSftp)>, ConnectionError> {
    let mut retried = false;
    loop {
        let live = conn.live().await?;
        if live.sftp.load(Ordering::Relaxed) == SFTP_NO {
            return Ok(None);
        }
        let mut cached = live.sftp_session.lock().await;
        if let Some(s) = cached.as_ref() {
            return Ok(Some((live.clone(), s.clone())));
        }
        let permit = conn.permit(&live).await?;
        let ch = match conn.open_channel(&live).await {
            Ok(ch) => ch,
            Err(e) if !retried && live.is_gone() => {
                tracing::debug!("{}: {e}; trying a new connection", conn.describe());
                retried = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        let opened = start_sftp(conn, &live, ch).await?;
        return Ok(opened.map(|session| {
            let shared: SharedSftp = Arc::new((session, permit));
            *cached = Some(shared.clone());
            (live.clone(), shared)
        }));
    }
}

/// Forgets a connection's SFTP session after a transfer on it failed, so the next
/// transfer opens a new one.
async fn drop_sftp(live: &Live, shared: &SharedSftp) {
    let mut cached = live.sftp_session.lock().await;
    if cached.as_ref().is_some_and(|s| Arc::ptr_eq(s, shared)) {
        *cached = None;
    }
}

/// Starts the SFTP subsystem on a fresh session channel; `None` when the server does
/// not offer it (remembered for the connection).
async fn start_sftp(
    conn: &SshConnection,
    live: &Live,
    ch: russh::Channel<russh::client::Msg>,
) -> Result<Option<SftpSession>, ConnectionError> {
    ch.request_subsystem(true, "sftp")
        .await
        .map_err(|e| conn.err(format!("cannot start sftp: {}", describe_russh(&e))))?;
    let mut ch = ch;
    let accepted = loop {
        match tokio::time::timeout(Duration::from_secs(10), ch.wait()).await {
            Ok(Some(ChannelMsg::Success)) => break true,
            Ok(Some(ChannelMsg::Failure | ChannelMsg::Close | ChannelMsg::Eof)) | Ok(None) => {
                break false;
            }
            Ok(Some(_)) => continue,
            Err(_) => break false,
        }
    };
    if !accepted {
        live.sftp.store(SFTP_NO, Ordering::Relaxed);
        let _ = ch.close().await;
        return Ok(None);
    }
    // Up to 64 writes of 64 KiB in flight: the SSH window, not the round trip per
    // write, bounds the throughput.
    let config = russh_sftp::client::Config {
        max_concurrent_writes: 64,
        max_write_packet_len: 64 * 1024,
        ..Default::default()
    };
    match SftpSession::new_with_config(ch.into_stream(), config).await {
        Ok(s) => {
            live.sftp.store(SFTP_YES, Ordering::Relaxed);
            Ok(Some(s))
        }
        Err(e) => {
            if live.sftp.load(Ordering::Relaxed) == SFTP_UNKNOWN {
                live.sftp.store(SFTP_NO, Ordering::Relaxed);
            }
            tracing::debug!("sftp did not start ({e}); streaming through cat");
            Ok(None)
        }
    }
}

/// The remote file's SHA-256, or `None` when the host has no tool for it.
async fn remote_sha256(
    conn: &SshConnection,
    path: &str,
) -> Result<Option<String>, ConnectionError> {
    let p = quote(path);
    let line = format!(
        "if command -v sha256sum >/dev/null 2>&1; then sha256sum -- {p}; \
         elif command -v shasum >/dev/null 2>&1; then shasum -a 256 -- {p}; else exit 127; fi"
    );
    let out = conn.run(&CommandSpec::shell(line), None).await?;
    match out.rc {
        Some(0) => Ok(out
            .stdout_text()
            .split_whitespace()
            .next()
            .map(str::to_ascii_lowercase)),
        Some(127) => {
            tracing::warn!(
                "{}: no sha256sum on the host; transfer of {path} not verified",
                conn.describe()
            );
            Ok(None)
        }
        _ => Err(conn.err(format!(
            "cannot checksum {path}: {}",
            out.stderr_text().trim()
        ))),
    }
}

async fn verify(
    conn: &SshConnection,
    remote: &str,
    local_sum: &str,
    what: &str,
) -> Result<(), ConnectionError> {
    match remote_sha256(conn, remote).await? {
        Some(r) if r != local_sum => Err(conn.err(format!(
            "{what}: checksum mismatch (local sha256 {local_sum}, remote {r})"
        ))),
        _ => Ok(()),
    }
}

/// Copies a controller file to the host. Not verified here: SSH's authenticated
/// encryption protects the bytes in transit, and callers check the size (or content)
/// of the temporary file before they rename it into place.
pub(super) async fn put_file(
    conn: &SshConnection,
    local: &Path,
    remote: &str,
) -> Result<(), ConnectionError> {
    let what = format!("copying {} to {remote}", local.display());
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(|e| conn.err(format!("{what}: cannot open {}: {e}", local.display())))?;
    let mut buf = vec![0u8; CHUNK];
    let read_err =
        |e: std::io::Error| conn.err(format!("{what}: cannot read {}: {e}", local.display()));
    if let Some((live, shared)) = open_sftp(conn).await? {
        let sent = async {
            let mut out = shared
                .0
                .create(remote)
                .await
                .map_err(|e| conn.err(format!("{what}: cannot create {remote}: {e}")))?;
            loop {
                let n = file.read(&mut buf).await.map_err(read_err)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])
                    .await
                    .map_err(|e| conn.err(format!("{what}: {e}")))?;
            }
            out.shutdown()
                .await
                .map_err(|e| conn.err(format!("{what}: {e}")))
        }
        .await;
        if sent.is_err() {
            drop_sftp(&live, &shared).await;
        }
        sent?;
    } else {
        let (_live, ch, _permit) = conn
            .exec_channel(&format!("cat > {}", quote(remote)))
            .await?;
        let (mut rd, wr) = ch.split();
        // Drain the channel while writing: stderr, exit status.
        let reader = tokio::spawn(async move {
            let mut stderr = Vec::new();
            let mut rc = None;
            while let Some(m) = rd.wait().await {
                match m {
                    ChannelMsg::ExtendedData { data, .. } => stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => rc = Some(exit_status),
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            (rc, stderr)
        });
        loop {
            let n = file.read(&mut buf).await.map_err(read_err)?;
            if n == 0 {
                break;
            }
            if wr.data(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = wr.eof().await;
        let (rc, stderr) = reader.await.map_err(|e| conn.err(format!("{what}: {e}")))?;
        if rc != Some(0) {
            return Err(conn.err(format!(
                "{what}: {}",
                String::from_utf8_lossy(&stderr).trim()
            )));
        }
    }
    Ok(())
}

/// Renames a host file over SFTP, which refuses when something is at `to` (OpenSSH's
/// server links the new name, then removes the old: a name that appeared meanwhile is
/// never replaced). `Ok(false)` when the server has no SFTP.
pub(super) async fn rename_new(
    conn: &SshConnection,
    from: &str,
    to: &str,
) -> Result<bool, ConnectionError> {
    let Some((_live, shared)) = open_sftp(conn).await? else {
        return Ok(false);
    };
    shared
        .0
        .rename(from, to)
        .await
        .map_err(|e| conn.err(format!("cannot rename {from} to {to}: {e}")))?;
    Ok(true)
}

/// The permission bits of a host file (following links), or `None` when the host cannot
/// say.
async fn remote_mode(conn: &SshConnection, remote: &str) -> Result<Option<u32>, ConnectionError> {
    let line = format!("stat -L -c %a -- {}", quote(remote));
    let out = conn.run(&CommandSpec::shell(line), None).await?;
    Ok(out
        .success()
        .then(|| u32::from_str_radix(out.stdout_text().trim(), 8).ok())
        .flatten())
}

/// Copies a host file to the controller. The local file gets the host file's permission
/// bits, as a local copy would (it is private to its owner until then), so a 0600 file
/// stays private.
pub(super) async fn get_file(
    conn: &SshConnection,
    remote: &str,
    local: &Path,
) -> Result<(), ConnectionError> {
    let what = format!("copying {remote} to {}", local.display());
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(local)
        .await
        .map_err(|e| conn.err(format!("{what}: cannot create {}: {e}", local.display())))?;
    let write_err =
        |e: std::io::Error| conn.err(format!("{what}: cannot write {}: {e}", local.display()));
    let mut hasher = Sha256::new();
    if let Some((live, shared)) = open_sftp(conn).await? {
        let got = async {
            let mut input = shared
                .0
                .open(remote)
                .await
                .map_err(|e| conn.err(format!("{what}: cannot open {remote}: {e}")))?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = input
                    .read(&mut buf)
                    .await
                    .map_err(|e| conn.err(format!("{what}: {e}")))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).await.map_err(write_err)?;
            }
            let _ = input.shutdown().await;
            Ok::<(), ConnectionError>(())
        }
        .await;
        if got.is_err() {
            drop_sftp(&live, &shared).await;
        }
        got?;
    } else {
        let (live, mut ch, _permit) = conn
            .exec_channel(&format!("cat -- {}", quote(remote)))
            .await?;
        let _ = ch.eof().await;
        let mut stderr = Vec::new();
        let mut rc = None;
        let mut closed = false;
        while let Some(m) = ch.wait().await {
            match m {
                ChannelMsg::Data { data } => {
                    hasher.update(&data);
                    file.write_all(&data).await.map_err(write_err)?;
                }
                ChannelMsg::ExtendedData { data, .. } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => rc = Some(exit_status),
                ChannelMsg::Close => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        if rc != Some(0) {
            let why = if !closed && rc.is_none() {
                format!("the connection was lost: {}", live.lost_reason())
            } else {
                String::from_utf8_lossy(&stderr).trim().to_string()
            };
            return Err(conn.err(format!("{what}: {why}")));
        }
    }
    file.flush().await.map_err(write_err)?;
    file.sync_all().await.map_err(write_err)?;
    verify(conn, remote, &hex(&hasher.finalize()), &what).await?;
    match remote_mode(conn, remote).await? {
        Some(mode) => {
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(local, std::fs::Permissions::from_mode(mode & 0o777))
                .await
                .map_err(write_err)
        }
        None => {
            tracing::debug!("{what}: the host did not give the file's mode; it stays 0600");
            Ok(())
        }
    }
}

/// Reads a host file of at most `max` bytes; `None` when it does not exist.
pub(super) async fn read_file(
    conn: &SshConnection,
    remote: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, ConnectionError> {
    let p = quote(remote);
    let line = format!(
        "if [ ! -e {p} ]; then exit 100; fi; size=$(wc -c < {p}) || exit 102; \
         if [ \"$size\" -gt {max} ]; then echo \"$size\"; exit 101; fi; exec head -c {} -- {p}",
        max.saturating_add(1)
    );
    let out = conn.run(&CommandSpec::shell(line), None).await?;
    match out.rc {
        Some(0) if (out.stdout.len() as u64) <= max => Ok(Some(out.stdout)),
        Some(0) => Err(conn.err(format!(
            "{remote} grew past the {max} bytes this operation reads"
        ))),
        Some(100) => Ok(None),
        Some(101) => Err(conn.err(format!(
            "{remote} is {} bytes, more than the {max} this operation reads",
            out.stdout_text().trim()
        ))),
        _ => Err(conn.err(format!(
            "cannot read {remote}: {}",
            out.stderr_text().trim()
        ))),
    }
}
