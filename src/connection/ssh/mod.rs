//! The SSH transport: [`SshConnection`] implements [`Connection`] over one russh client
//! connection per host, opened on first use (through jump hosts when configured) and
//! shared by every step on that host. Commands without standard input run in persistent
//! shells kept open on the connection ([`shell`]), one command at a time per shell; the
//! others run on their own channels. At most `max_channels` channels are open at once
//! (OpenSSH's `MaxSessions` is 10); each command's output is read as it comes, so an
//! unread output never stalls the others. Keepalives detect a dead server; a
//! step timeout kills the remote process group; a command that ends without an exit
//! status has `rc: None`; a lost connection is a [`ConnectionError`] and the next use
//! reconnects.
//!
//! Settings, highest first: the inventory (`ansible_host`, `ansible_port`, `ansible_user`,
//! `ansible_ssh_private_key_file`, `ansible_password`, `ansible_ssh_common_args`, and the
//! lifeboat variables below), then `~/.ssh/config`, then [`SshOptions`] (pool-wide, CLI)
//! and the environment. Host variables read here:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `lifeboat_known_hosts` | the only known_hosts file to read and append to (tests, sandboxes) |
//! | `lifeboat_host_key_checking` / `ansible_host_key_checking` | `strict`, `accept-new` or `off` |
//! | `lifeboat_proxy_jump` | jump hosts, `[user@]host[:port]`, comma separated |
//! | `ansible_ssh_timeout` / `ansible_timeout` | connect timeout in seconds (default 10) |
//! | `lifeboat_ssh_max_channels` | commands at once on the connection (default 8) |
//! | `lifeboat_ssh_persistent_shell` | `false`: every command on a channel of its own (default `true`) |
//! | `lifeboat_ssh_key_passphrase` | passphrase of the key files |
//!
//! Environment: `LIFEBOAT_HOST_KEY_CHECKING`, `LIFEBOAT_KNOWN_HOSTS`, `LIFEBOAT_SSH_CONFIG`
//! (see [`SshOptions::from_env`]).

pub mod auth;
pub mod config;
mod jump;
pub mod known_hosts;
mod shell;
mod transfer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use indexmap::IndexMap;
use russh::client::{self, DisconnectReason, Handle, Msg};
use russh::keys::PublicKeyOrCertificate;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use serde_json::Value as Json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc};

pub use known_hosts::HostKeyPolicy;

use super::{
    CommandOutput, CommandSpec, Connection, ConnectionError, FileStat, OutputChunk, Stream,
};
use auth::AuthSettings;
use config::HostConfig;
use known_hosts::HostKeyCheck;

/// Pool-wide SSH settings: what the command line and the environment say for every host.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Host key policy for hosts whose inventory does not set one (`--host-key-checking`);
    /// `None`: the ssh config's `StrictHostKeyChecking`, else strict.
    pub host_key_policy: Option<HostKeyPolicy>,
    /// The only known_hosts file to read and append to, instead of `~/.ssh/known_hosts`
    /// and `/etc/ssh/ssh_known_hosts` (a host's `lifeboat_known_hosts` wins).
    pub known_hosts_file: Option<PathBuf>,
    /// The ssh client configuration file (default `~/.ssh/config`).
    pub config_file: Option<PathBuf>,
    /// Read an ssh client configuration file at all.
    pub read_config: bool,
    /// Connect timeout when neither the inventory nor the ssh config gives one.
    pub connect_timeout: Duration,
    /// Channels (commands, transfers) open at once on one connection.
    pub max_channels: usize,
    /// Keepalive interval when the ssh config has no `ServerAliveInterval`.
    pub keepalive_interval: Duration,
    /// Unanswered keepalives before the connection is declared dead.
    pub keepalive_max: usize,
    /// Offer the ssh-agent's keys.
    pub use_agent: bool,
    /// The agent's socket (default `$SSH_AUTH_SOCK`).
    pub agent_socket: Option<PathBuf>,
    /// The home folder for `~` (default `$HOME`).
    pub home: Option<PathBuf>,
    /// Run commands without standard input in persistent shells (see [`shell`]).
    pub persistent_shell: bool,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            host_key_policy: None,
            known_hosts_file: None,
            config_file: None,
            read_config: true,
            connect_timeout: Duration::from_secs(10),
            max_channels: 8,
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            use_agent: true,
            agent_socket: None,
            home: None,
            persistent_shell: true,
        }
    }
}

impl SshOptions {
    /// The defaults, with `LIFEBOAT_HOST_KEY_CHECKING` (strict, accept-new, off),
    /// `LIFEBOAT_KNOWN_HOSTS` (a known_hosts file) and `LIFEBOAT_SSH_CONFIG` (an ssh config
    /// file, or `none`) applied. An invalid policy value is reported as an error.
    pub fn from_env() -> Result<SshOptions, String> {
        let mut o = SshOptions::default();
        if let Some(v) = std::env::var("LIFEBOAT_HOST_KEY_CHECKING")
            .ok()
            .filter(|v| !v.is_empty())
        {
            o.host_key_policy = Some(
                v.parse()
                    .map_err(|e| format!("LIFEBOAT_HOST_KEY_CHECKING: {e}"))?,
            );
        }
        if let Some(v) = std::env::var_os("LIFEBOAT_KNOWN_HOSTS").filter(|v| !v.is_empty()) {
            o.known_hosts_file = Some(PathBuf::from(v));
        }
        if let Some(v) = std::env::var("LIFEBOAT_SSH_CONFIG")
            .ok()
            .filter(|v| !v.is_empty())
        {
            if v.eq_ignore_ascii_case("none") {
                o.read_config = false;
            } else {
                o.config_file = Some(PathBuf::from(v));
            }
        }
        Ok(o)
    }

    fn home(&self) -> PathBuf {
        self.home
            .clone()
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"))
    }
}

/// One host's explicit SSH settings, as the inventory gives them (unset: ssh config or
/// defaults decide).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SshTarget {
    /// Address or name to connect to (`ansible_host`, else the inventory name); ssh
    /// config `Host` blocks match it.
    pub address: String,
    /// Port.
    pub port: Option<u16>,
    /// Remote user.
    pub user: Option<String>,
    /// Private key file, tried before the ssh config's and instead of the defaults.
    pub key_file: Option<String>,
    /// Passphrase of encrypted key files.
    pub key_passphrase: Option<String>,
    /// Password (password and keyboard-interactive authentication).
    pub password: Option<String>,
    /// `ansible_ssh_common_args`.
    pub common_args: Option<String>,
    /// Jump hosts, `[user@]host[:port]`, comma separated (`none`: no jump).
    pub proxy_jump: Option<String>,
    /// The only known_hosts file to use.
    pub known_hosts_file: Option<PathBuf>,
    /// Host key policy.
    pub host_key_policy: Option<HostKeyPolicy>,
    /// Connect timeout.
    pub connect_timeout: Option<Duration>,
    /// Channels at once.
    pub max_channels: Option<usize>,
    /// Persistent shells (`lifeboat_ssh_persistent_shell`).
    pub persistent_shell: Option<bool>,
}

fn scalar(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl SshTarget {
    /// The settings of an inventory host: its connection settings and host variables.
    pub fn from_inventory(
        settings: &crate::inventory::ConnectionSettings,
        vars: &IndexMap<String, Json>,
    ) -> Result<SshTarget, String> {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| vars.get(*n).and_then(scalar))
                .filter(|s| !s.is_empty())
        };
        let seconds = |name: &str, v: String| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{name} `{v}` is not a number of seconds"))
        };
        let host_key_policy = match var(&["lifeboat_host_key_checking"]) {
            Some(v) => Some(
                v.parse()
                    .map_err(|e| format!("lifeboat_host_key_checking: {e}"))?,
            ),
            None => var(&["ansible_host_key_checking"]).map(|v| {
                if matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "false" | "no" | "off" | "0" | "n"
                ) {
                    HostKeyPolicy::Off
                } else {
                    HostKeyPolicy::Strict
                }
            }),
        };
        let connect_timeout = match var(&["ansible_ssh_timeout", "ansible_timeout"]) {
            Some(v) => Some(seconds("ansible_ssh_timeout", v)?),
            None => None,
        };
        let max_channels = match var(&["lifeboat_ssh_max_channels"]) {
            Some(v) => Some(
                v.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        format!("lifeboat_ssh_max_channels `{v}` is not a positive number")
                    })?,
            ),
            None => None,
        };
        let persistent_shell = vars
            .get("lifeboat_ssh_persistent_shell")
            .map(crate::inventory::truthy);
        Ok(SshTarget {
            address: settings.address.clone(),
            port: settings.port,
            user: settings.user.clone(),
            key_file: settings.key_file.clone(),
            key_passphrase: var(&["lifeboat_ssh_key_passphrase"]),
            password: settings.password.clone(),
            common_args: settings.ssh_common_args.clone(),
            proxy_jump: var(&["lifeboat_proxy_jump"]),
            known_hosts_file: var(&["lifeboat_known_hosts"]).map(PathBuf::from),
            host_key_policy,
            connect_timeout,
            max_channels,
            persistent_shell,
        })
    }
}

/// One hop, fully resolved: where to connect, as whom, and how to check its key.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// Address to connect to (after `HostName`).
    pub address: String,
    /// Port.
    pub port: u16,
    /// Authentication.
    pub auth: AuthSettings,
    /// Host key check.
    pub check: Arc<HostKeyCheck>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Keepalive interval (`None`: off).
    pub keepalive: Option<Duration>,
    /// Unanswered keepalives allowed.
    pub keepalive_max: usize,
}

impl Endpoint {
    fn label(&self) -> String {
        format!("{}@{}:{}", self.auth.user, self.address, self.port)
    }
}

/// What an explicit (inventory or jump spec) setting gives for one hop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Explicit {
    pub port: Option<u16>,
    pub user: Option<String>,
    pub key_file: Option<String>,
    pub passphrase: Option<String>,
    pub password: Option<String>,
    pub common_args: Option<String>,
    pub known_hosts_file: Option<PathBuf>,
    pub policy: Option<HostKeyPolicy>,
    pub connect_timeout: Option<Duration>,
}

fn local_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "root".into())
}

/// Resolves one hop named `name` (as on the ssh command line): returns it and its
/// ProxyJump setting.
pub(crate) fn resolve(
    name: &str,
    ex: &Explicit,
    options: &SshOptions,
) -> Result<(Endpoint, Option<String>), String> {
    let home = options.home();
    let mut cfg = HostConfig::default();
    if let Some(args) = &ex.common_args {
        config::apply_common_args(&mut cfg, args)?;
    }
    if options.read_config {
        let file = cfg
            .config_file
            .as_deref()
            .map(|f| PathBuf::from(config::expand_tilde(f, &home)))
            .or_else(|| options.config_file.clone())
            .unwrap_or_else(|| home.join(".ssh").join("config"));
        config::apply_file(&mut cfg, &file, name, &home)?;
    }
    let port = ex.port.or(cfg.port).unwrap_or(22);
    let user = ex
        .user
        .clone()
        .or(cfg.user.clone())
        .unwrap_or_else(local_user);
    let local = local_user();
    let pre = config::Tokens {
        host: name,
        port,
        user: &user,
        home: &home,
        local_user: &local,
        original: name,
    };
    let address = cfg
        .hostname
        .as_deref()
        .map(|h| config::expand_path(h, &pre))
        .unwrap_or_else(|| name.to_string());
    let tokens = config::Tokens {
        host: &address,
        ..pre
    };
    let mut key_files: Vec<PathBuf> = Vec::new();
    if let Some(k) = &ex.key_file {
        key_files.push(PathBuf::from(config::expand_path(k, &tokens)));
    }
    for k in &cfg.identity_files {
        key_files.push(PathBuf::from(config::expand_path(k, &tokens)));
    }
    if key_files.is_empty() {
        for k in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            key_files.push(home.join(".ssh").join(k));
        }
    }
    let override_file = ex
        .known_hosts_file
        .clone()
        .or_else(|| options.known_hosts_file.clone());
    let (files, write_file) = match override_file {
        Some(f) => (vec![f.clone()], Some(f)),
        None => {
            let user_files: Vec<PathBuf> = match &cfg.user_known_hosts_files {
                Some(list) => list
                    .iter()
                    .map(|f| PathBuf::from(config::expand_path(f, &tokens)))
                    .collect(),
                None => vec![
                    home.join(".ssh").join("known_hosts"),
                    home.join(".ssh").join("known_hosts2"),
                ],
            };
            let global: Vec<PathBuf> = match &cfg.global_known_hosts_files {
                Some(list) => list
                    .iter()
                    .map(|f| PathBuf::from(config::expand_path(f, &tokens)))
                    .collect(),
                None => vec![
                    PathBuf::from("/etc/ssh/ssh_known_hosts"),
                    PathBuf::from("/etc/ssh/ssh_known_hosts2"),
                ],
            };
            let write = user_files.first().cloned();
            (user_files.into_iter().chain(global).collect(), write)
        }
    };
    let policy = match ex.policy.or(options.host_key_policy) {
        Some(p) => p,
        None => match &cfg.strict_host_key_checking {
            Some(v) => v
                .parse()
                .map_err(|e| format!("StrictHostKeyChecking: {e}"))?,
            None => HostKeyPolicy::Strict,
        },
    };
    let check = HostKeyCheck::load(&address, port, &files, write_file, policy)?;
    let keepalive = match cfg.server_alive_interval {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None => Some(options.keepalive_interval),
    };
    let endpoint = Endpoint {
        address,
        port,
        auth: AuthSettings {
            user,
            key_files,
            passphrase: ex.passphrase.clone(),
            password: ex.password.clone(),
            agent_socket: options
                .use_agent
                .then(|| {
                    options
                        .agent_socket
                        .clone()
                        .or_else(|| std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from))
                })
                .flatten(),
            identities_only: cfg.identities_only.unwrap_or(false),
        },
        check: Arc::new(check),
        connect_timeout: ex
            .connect_timeout
            .or(cfg.connect_timeout)
            .unwrap_or(options.connect_timeout),
        keepalive,
        keepalive_max: cfg.server_alive_count_max.unwrap_or(options.keepalive_max),
    };
    let jump = cfg.proxy_jump.filter(|j| !j.eq_ignore_ascii_case("none"));
    Ok((endpoint, jump))
}

/// The russh client handler: checks the host key, remembers why the connection ended.
pub struct Client {
    check: Arc<HostKeyCheck>,
    refusal: Arc<StdMutex<Option<String>>>,
    lost: Arc<StdMutex<Option<String>>>,
    /// A second handle on the connection's TCP socket (direct connections only).
    socket: Arc<StdMutex<Option<socket2::Socket>>>,
}

fn set(slot: &StdMutex<Option<String>>, text: String) {
    if let Ok(mut g) = slot.lock() {
        g.get_or_insert(text);
    }
}

fn get(slot: &StdMutex<Option<String>>) -> Option<String> {
    slot.lock().ok().and_then(|g| g.clone())
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.check.verify_key(key),
            PublicKeyOrCertificate::Certificate(cert) => self.check.verify_certificate(cert),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(msg) => {
                set(&self.refusal, msg);
                Ok(false)
            }
        }
    }

    /// OpenSSH announces its host keys right after authentication, then sends debug
    /// messages and the answer to the first channel request in small packets, without
    /// `TCP_NODELAY`: its Nagle algorithm holds that answer until the debug messages are
    /// acknowledged, and Linux delays the acknowledgement by 40 ms. Asking for quick
    /// acknowledgements now takes those 40 ms off every connection.
    async fn openssh_ext_host_keys_announced(
        &mut self,
        _keys: Vec<russh::keys::PublicKey>,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Ok(slot) = self.socket.lock()
            && let Some(s) = slot.as_ref()
        {
            let _ = s.set_tcp_quickack(true);
        }
        Ok(())
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                set(
                    &self.lost,
                    format!(
                        "the server disconnected ({:?}: {})",
                        info.reason_code, info.message
                    ),
                );
                Ok(())
            }
            DisconnectReason::Error(e) => {
                set(&self.lost, describe_russh(&e));
                Err(e)
            }
        }
    }
}

fn describe_russh(e: &russh::Error) -> String {
    match e {
        russh::Error::KeepaliveTimeout => "the server stopped answering keepalives".into(),
        russh::Error::InactivityTimeout => "the connection was inactive for too long".into(),
        russh::Error::IO(io) => format!("connection error: {io}"),
        russh::Error::Disconnect => "the server disconnected".into(),
        other => other.to_string(),
    }
}

/// An open, authenticated connection (and the jump connections under it).
pub(crate) struct Live {
    handle: Handle<Client>,
    _jumps: Vec<Handle<Client>>,
    lost: Arc<StdMutex<Option<String>>>,
    /// SFTP: 0 not tried, 1 offered, 2 not offered.
    sftp: AtomicU8,
    /// The connection's SFTP session, opened on first use and kept (with the channel
    /// permit it holds) for every later transfer: starting `sftp-server` on the host
    /// costs a process per session.
    sftp_session: tokio::sync::Mutex<Option<transfer::SharedSftp>>,
    /// How long the server may take to answer a channel request.
    answer_timeout: Duration,
    /// The server stopped answering (a channel request timed out): reconnect.
    dead: AtomicBool,
    /// Persistent shells waiting for their next command.
    shells: shell::IdleShells,
}

impl Live {
    fn lost_reason(&self) -> String {
        get(&self.lost).unwrap_or_else(|| "the connection was closed".into())
    }

    /// Whether the connection can no longer be used.
    fn is_gone(&self) -> bool {
        self.handle.is_closed() || self.dead.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct ConnState {
    live: Option<Arc<Live>>,
    last_failure: Option<(Instant, ConnectionError)>,
}

/// A host reached over SSH.
pub struct SshConnection {
    host: String,
    label: String,
    hops: Vec<Endpoint>,
    target: Endpoint,
    state: tokio::sync::Mutex<ConnState>,
    permits: Arc<Semaphore>,
    persistent_shell: bool,
}

impl std::fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConnection")
            .field("host", &self.host)
            .field("target", &self.label)
            .finish()
    }
}

impl SshConnection {
    /// The connection to inventory host `host`: reads its settings and the ssh config
    /// (no network yet; the connection opens on first use).
    pub fn from_inventory(
        host: &str,
        settings: &crate::inventory::ConnectionSettings,
        vars: &IndexMap<String, Json>,
        options: &SshOptions,
    ) -> Result<SshConnection, ConnectionError> {
        let target =
            SshTarget::from_inventory(settings, vars).map_err(|message| ConnectionError {
                host: format!("{host} ({})", settings.address),
                message,
            })?;
        SshConnection::new(host, &target, options)
    }

    /// The connection to `host` with explicit settings (no network yet).
    pub fn new(
        host: &str,
        target: &SshTarget,
        options: &SshOptions,
    ) -> Result<SshConnection, ConnectionError> {
        let err = |message: String| ConnectionError {
            host: format!("{host} ({})", target.address),
            message,
        };
        let ex = Explicit {
            port: target.port,
            user: target.user.clone(),
            key_file: target.key_file.clone(),
            passphrase: target.key_passphrase.clone(),
            password: target.password.clone(),
            common_args: target.common_args.clone(),
            known_hosts_file: target.known_hosts_file.clone(),
            policy: target.host_key_policy,
            connect_timeout: target.connect_timeout,
        };
        let (endpoint, cfg_jump) = resolve(&target.address, &ex, options).map_err(err)?;
        let jump_spec = target
            .proxy_jump
            .clone()
            .or(cfg_jump)
            .filter(|j| !j.eq_ignore_ascii_case("none"));
        let hops = match jump_spec {
            Some(spec) => jump::resolve_hops(&spec, &ex, options).map_err(err)?,
            None => Vec::new(),
        };
        let mut label = endpoint.label();
        if !hops.is_empty() {
            let via: Vec<String> = hops.iter().map(Endpoint::label).collect();
            label.push_str(&format!(" via {}", via.join(", ")));
        }
        let max = target.max_channels.unwrap_or(options.max_channels).max(1);
        Ok(SshConnection {
            host: host.to_string(),
            label,
            hops,
            target: endpoint,
            state: tokio::sync::Mutex::new(ConnState::default()),
            permits: Arc::new(Semaphore::new(max)),
            persistent_shell: target.persistent_shell.unwrap_or(options.persistent_shell),
        })
    }

    fn err(&self, message: impl Into<String>) -> ConnectionError {
        ConnectionError {
            host: self.describe(),
            message: message.into(),
        }
    }

    /// Opens the connection now (it otherwise opens on first use), so that an
    /// unreachable host is reported before any step runs on it.
    pub async fn connect(&self) -> Result<(), ConnectionError> {
        self.live().await.map(|_| ())
    }

    /// The open connection, opening (or reopening) it when needed. Callers that waited
    /// while an attempt failed get that failure instead of trying again at once.
    async fn live(&self) -> Result<Arc<Live>, ConnectionError> {
        let asked = Instant::now();
        let mut st = self.state.lock().await;
        if let Some(l) = &st.live {
            if !l.is_gone() {
                return Ok(l.clone());
            }
            tracing::debug!("{}: {}; reconnecting", self.label, l.lost_reason());
            st.live = None;
        }
        if let Some((at, e)) = &st.last_failure
            && *at >= asked
        {
            return Err(e.clone());
        }
        match jump::connect_chain(&self.hops, &self.target).await {
            Ok(live) => {
                let live = Arc::new(live);
                st.live = Some(live.clone());
                st.last_failure = None;
                Ok(live)
            }
            Err(message) => {
                let e = self.err(message);
                st.last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// A channel permit; when none is free, idle persistent shells are closed to free
    /// theirs before waiting.
    async fn permit(&self, live: &Live) -> Result<OwnedSemaphorePermit, ConnectionError> {
        loop {
            match self.permits.clone().try_acquire_owned() {
                Ok(p) => return Ok(p),
                Err(TryAcquireError::Closed) => {
                    return Err(self.err("the connection is shutting down"));
                }
                Err(TryAcquireError::NoPermits) => {
                    if !live.shells.evict_one() {
                        break;
                    }
                }
            }
        }
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.err("the connection is shutting down"))
    }

    /// A permit and a new session channel on the open connection. When the server does
    /// not answer the channel request in time (a hung or stopped server process), the
    /// connection is dropped and the request is tried once more on a new connection:
    /// nothing ran yet, so trying again is safe.
    async fn session_channel(
        &self,
    ) -> Result<(Arc<Live>, OwnedSemaphorePermit, russh::Channel<Msg>), ConnectionError> {
        let mut retried = false;
        loop {
            let live = self.live().await?;
            let permit = self.permit(&live).await?;
            match self.open_channel(&live).await {
                Ok(ch) => return Ok((live, permit, ch)),
                Err(e) if !retried && live.is_gone() => {
                    tracing::debug!("{}: {e}; trying a new connection", self.label);
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens a session channel, retrying briefly when the server refuses one (its
    /// `MaxSessions` reached by channels still closing). A server that does not answer
    /// within the connect timeout marks the connection dead.
    async fn open_channel(&self, live: &Live) -> Result<russh::Channel<Msg>, ConnectionError> {
        let mut delay = Duration::from_millis(20);
        for attempt in 0..8 {
            let answer =
                tokio::time::timeout(live.answer_timeout, live.handle.channel_open_session()).await;
            let Ok(answer) = answer else {
                live.dead.store(true, Ordering::Relaxed);
                return Err(self.err(format!(
                    "the server did not answer a channel request within {}s; the connection \
                     is given up",
                    live.answer_timeout.as_secs_f64()
                )));
            };
            match answer {
                Ok(c) => return Ok(c),
                Err(russh::Error::ChannelOpenFailure(reason)) => {
                    if attempt == 7 {
                        return Err(
                            self.err(format!("the server refused to open a channel: {reason:?}"))
                        );
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    return Err(self.err(format!(
                        "cannot open a channel: {} ({})",
                        live.lost_reason(),
                        describe_russh(&e)
                    )));
                }
            }
        }
        Err(self.err("the server refused to open a channel"))
    }

    /// Runs `line` as it is (no pid marker) on a fresh channel: for transfers.
    async fn exec_channel(
        &self,
        line: &str,
    ) -> Result<(Arc<Live>, russh::Channel<Msg>, OwnedSemaphorePermit), ConnectionError> {
        let (live, permit, ch) = self.session_channel().await?;
        ch.exec(true, line)
            .await
            .map_err(|e| self.err(format!("cannot start `{line}`: {}", describe_russh(&e))))?;
        Ok((live, ch, permit))
    }
}

impl SshConnection {
    /// Runs a command without standard input in a persistent shell: an idle one of
    /// this connection's, else a new one. A shell found broken before the command was
    /// sent to it is replaced once: nothing ran.
    async fn run_in_shell(
        &self,
        spec: &CommandSpec,
        sink: Option<mpsc::UnboundedSender<OutputChunk>>,
    ) -> Result<CommandOutput, ConnectionError> {
        // lifeboat's own scripts are evaluated as they are, once; a function body runs
        // in the shell itself.
        let (line, place) = match spec.bare_sh() {
            Some((body, true)) => (
                std::borrow::Cow::Owned(super::sh_function_call(body)),
                shell::Place::InShell,
            ),
            Some((script, false)) => (std::borrow::Cow::Borrowed(script), shell::Place::Subshell),
            None => (
                std::borrow::Cow::Owned(spec.to_shell_line()),
                if matches!(
                    spec.program,
                    super::Program::Sh(_) | super::Program::ShFunction(_)
                ) && spec.become_.is_none()
                {
                    shell::Place::Subshell
                } else {
                    shell::Place::OwnSh
                },
            ),
        };
        let mut retried = false;
        let (live, mut busy) = loop {
            let live = self.live().await?;
            let (mut sh, pooled) = match live.shells.take() {
                Some(sh) => (sh, true),
                None => match self.start_shell(&live).await {
                    Ok(sh) => (sh, false),
                    Err(e) if !retried && live.is_gone() => {
                        tracing::debug!("{}: {e}; trying a new connection", self.label);
                        retried = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let (script, frame) = sh.next(&line, place);
            if let Err(e) = sh.write.data(script.as_bytes()).await {
                sh.close();
                if pooled && !retried {
                    retried = true;
                    continue;
                }
                return Err(self.err(format!(
                    "cannot start the command: {} ({})",
                    live.lost_reason(),
                    describe_russh(&e)
                )));
            }
            let busy = Busy {
                shell: Some(sh),
                frame,
                stdout: Vec::new(),
                stderr: Vec::new(),
                live: live.clone(),
                permits: self.permits.clone(),
            };
            break (live, busy);
        };
        let ended = match spec.timeout {
            Some(t) => tokio::time::timeout(t, busy.read(sink)).await.ok(),
            None => Some(busy.read(sink).await),
        };
        match ended {
            None => {
                busy.kill();
                let (stdout, stderr) = busy.take_output();
                Ok(CommandOutput {
                    rc: None,
                    stdout,
                    stderr,
                    timed_out: true,
                })
            }
            Some(Ok(())) => {
                if let Some(sh) = busy.shell.take() {
                    live.shells.put(sh, &self.permits);
                }
                let rc = busy.frame.rc;
                let (stdout, stderr) = busy.take_output();
                Ok(CommandOutput {
                    rc,
                    stdout,
                    stderr,
                    timed_out: false,
                })
            }
            Some(Err(End::Refused)) => {
                busy.kill();
                Err(self.err(
                    "the server refused to start a shell for the command; if it only allows \
                     certain commands, set `lifeboat_ssh_persistent_shell: false` for this host",
                ))
            }
            Some(Err(End::Lost)) => {
                busy.kill();
                Err(self.err(format!(
                    "the connection was lost while the command ran: {}",
                    live.lost_reason()
                )))
            }
            Some(Err(End::Closed)) => {
                busy.kill();
                let (stdout, mut stderr) = busy.take_output();
                stderr.extend_from_slice(
                    b"\n[lifeboat: the remote shell ended before the command did]\n",
                );
                Ok(CommandOutput {
                    rc: None,
                    stdout,
                    stderr,
                    timed_out: false,
                })
            }
        }
    }

    /// A new persistent shell on a new channel.
    async fn start_shell(&self, live: &Live) -> Result<shell::Shell, ConnectionError> {
        let permit = self.permit(live).await?;
        let ch = self.open_channel(live).await?;
        ch.exec(true, shell::START).await.map_err(|e| {
            self.err(format!(
                "cannot start a shell: {} ({})",
                live.lost_reason(),
                describe_russh(&e)
            ))
        })?;
        let (rd, wr) = ch.split();
        Ok(shell::Shell::new(rd, wr, permit))
    }
}

/// A command running in a persistent shell. Dropped before the command ended (its
/// caller went away), it kills the shell and the command with it.
struct Busy {
    shell: Option<shell::Shell>,
    frame: shell::Frame,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    live: Arc<Live>,
    permits: Arc<Semaphore>,
}

impl Busy {
    /// Reads the command's output up to its end tags.
    async fn read(&mut self, sink: Option<mpsc::UnboundedSender<OutputChunk>>) -> Result<(), End> {
        let Some(sh) = self.shell.as_mut() else {
            return Err(End::Lost);
        };
        while !self.frame.done() {
            let Some(msg) = sh.read.wait().await else {
                return Err(End::Lost);
            };
            let (stream, mine) = match msg {
                ChannelMsg::Data { data } => {
                    let data = sh.stdout(&data);
                    (Stream::Stdout, self.frame.feed(shell::Side::Out, &data))
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    (Stream::Stderr, self.frame.feed(shell::Side::Err, &data))
                }
                ChannelMsg::Failure => return Err(End::Refused),
                ChannelMsg::Eof
                | ChannelMsg::Close
                | ChannelMsg::ExitStatus { .. }
                | ChannelMsg::ExitSignal { .. } => return Err(End::Closed),
                _ => continue,
            };
            if mine.is_empty() {
                continue;
            }
            if let Some(s) = &sink {
                let _ = s.send((stream, mine.clone()));
            }
            match stream {
                Stream::Stdout => self.stdout.extend_from_slice(&mine),
                Stream::Stderr => self.stderr.extend_from_slice(&mine),
            }
        }
        Ok(())
    }

    /// The output so far, with what was held back as a possible tag.
    fn take_output(&mut self) -> (Vec<u8>, Vec<u8>) {
        let mut stdout = std::mem::take(&mut self.stdout);
        stdout.extend(self.frame.leftover(shell::Side::Out));
        let mut stderr = std::mem::take(&mut self.stderr);
        stderr.extend(self.frame.leftover(shell::Side::Err));
        (stdout, stderr)
    }

    /// Kills the shell (and the command in it); it is never used again.
    fn kill(&mut self) {
        if let Some(sh) = self.shell.take() {
            sh.kill(self.live.clone(), self.permits.clone());
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The marker the wrapper prints on stderr before the command: the remote shell's pid,
/// which is also its process group (sshd starts each session's shell with `setsid`).
const PID_MARKER: &[u8] = b"lifeboat-pid:";

/// The line sent to the server: report the process group, then run the command under
/// `/bin/sh` whatever the login shell is.
fn wrap(line: &str) -> String {
    format!(
        "echo lifeboat-pid:$$ >&2; exec /bin/sh -c {}",
        super::quote(line)
    )
}

/// What a command's channel has produced so far.
#[derive(Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Stderr held back until the pid marker is found (or given up on).
    pending: Vec<u8>,
    marker_done: bool,
    pid: Option<u32>,
    rc: Option<i32>,
    signal: Option<String>,
    exec_refused: bool,
}

impl Collected {
    /// Takes stderr bytes, stripping the pid marker line; returns what is real stderr.
    fn stderr_bytes(&mut self, data: &[u8]) -> Vec<u8> {
        if self.marker_done {
            return data.to_vec();
        }
        self.pending.extend_from_slice(data);
        match shell::marker_line(&self.pending, PID_MARKER, true) {
            Some((start, end, pid)) => {
                self.pid = pid;
                let mut out = self.pending[..start].to_vec();
                out.extend_from_slice(&self.pending[end..]);
                self.pending.clear();
                self.marker_done = true;
                out
            }
            None if self.pending.len() > 4096 => {
                self.marker_done = true;
                std::mem::take(&mut self.pending)
            }
            None => Vec::new(),
        }
    }
}

/// How a channel's reading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server closed the channel.
    Closed,
    /// The connection went away under it.
    Lost,
    /// The server refused the request that starts it (a persistent shell).
    Refused,
}

/// Reads one command's channel to its end, in its own task; holds the channel's permit
/// until the channel is closed.
async fn read_channel(
    mut rd: ChannelReadHalf,
    shared: Arc<StdMutex<Collected>>,
    sink: Option<mpsc::UnboundedSender<OutputChunk>>,
    _permit: OwnedSemaphorePermit,
) -> End {
    let end = loop {
        let Some(msg) = rd.wait().await else {
            break End::Lost;
        };
        let Ok(mut c) = shared.lock() else {
            break End::Lost;
        };
        match msg {
            ChannelMsg::Data { data } => {
                if let Some(s) = &sink {
                    let _ = s.send((Stream::Stdout, data.to_vec()));
                }
                c.stdout.extend_from_slice(&data);
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                let real = c.stderr_bytes(&data);
                if !real.is_empty() {
                    if let Some(s) = &sink {
                        let _ = s.send((Stream::Stderr, real.clone()));
                    }
                    c.stderr.extend_from_slice(&real);
                }
            }
            ChannelMsg::ExitStatus { exit_status } => {
                c.rc = Some(i32::try_from(exit_status).unwrap_or(i32::MAX));
            }
            ChannelMsg::ExitSignal { signal_name, .. } => {
                c.signal = Some(format!("{signal_name:?}"));
            }
            ChannelMsg::Failure => c.exec_refused = true,
            ChannelMsg::Close => break End::Closed,
            _ => {}
        }
    };
    if let Ok(mut c) = shared.lock() {
        let rest = std::mem::take(&mut c.pending);
        if !rest.is_empty() {
            c.stderr.extend_from_slice(&rest);
        }
    }
    end
}

/// Ends a command that outlived its timeout (or whose caller went away): TERM then KILL
/// to its remote process group over a second channel, then closes its channel.
async fn kill_remote(
    live: Arc<Live>,
    permits: Arc<Semaphore>,
    pid: Option<u32>,
    write: Arc<ChannelWriteHalf<Msg>>,
) {
    if let Some(pid) = pid.filter(|p| *p > 1) {
        let work = async {
            let _permit = tokio::time::timeout(Duration::from_secs(5), permits.acquire_owned())
                .await
                .ok()?
                .ok()?;
            let mut ch = live.handle.channel_open_session().await.ok()?;
            let line = format!(
                "kill -s TERM -- -{pid} 2>/dev/null && {{ sleep 1; kill -s KILL -- -{pid} 2>/dev/null; }}; true"
            );
            ch.exec(false, line).await.ok()?;
            let _ = ch.eof().await;
            while let Some(m) = ch.wait().await {
                if matches!(m, ChannelMsg::Close) {
                    break;
                }
            }
            Some(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
    }
    let _ = write.close().await;
}

/// What a [`RunGuard`] needs to end a command.
type Armed = (
    Arc<Live>,
    Arc<Semaphore>,
    Arc<StdMutex<Collected>>,
    Arc<ChannelWriteHalf<Msg>>,
);

/// Kills the remote command if the run is abandoned before it ends.
struct RunGuard {
    armed: Option<Armed>,
}

impl RunGuard {
    fn fire(&mut self) {
        if let Some((live, permits, shared, write)) = self.armed.take() {
            let pid = shared.lock().ok().and_then(|c| c.pid);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(kill_remote(live, permits, pid, write));
            }
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.fire();
    }
}

#[async_trait]
impl Connection for SshConnection {
    fn describe(&self) -> String {
        format!("{} ({})", self.host, self.label)
    }

    async fn open(&self) -> Result<(), ConnectionError> {
        self.connect().await
    }

    async fn run(
        &self,
        spec: &CommandSpec,
        sink: Option<mpsc::UnboundedSender<OutputChunk>>,
    ) -> Result<CommandOutput, ConnectionError> {
        if self.persistent_shell && spec.stdin_bytes().is_none() {
            return self.run_in_shell(spec, sink).await;
        }
        let (live, permit, channel) = self.session_channel().await?;
        let line = wrap(&spec.to_shell_line());
        channel.exec(true, line).await.map_err(|e| {
            self.err(format!(
                "cannot start the command: {} ({})",
                live.lost_reason(),
                describe_russh(&e)
            ))
        })?;
        let (rd, wr) = channel.split();
        let wr = Arc::new(wr);
        let shared = Arc::new(StdMutex::new(Collected::default()));
        let mut reader = tokio::spawn(read_channel(rd, shared.clone(), sink, permit));
        let mut guard = RunGuard {
            armed: Some((
                live.clone(),
                self.permits.clone(),
                shared.clone(),
                wr.clone(),
            )),
        };
        {
            let wr = wr.clone();
            let stdin = spec.stdin_bytes();
            tokio::spawn(async move {
                if let Some(data) = stdin {
                    let _ = wr.data(&data[..]).await;
                }
                let _ = wr.eof().await;
            });
        }
        let ended = match spec.timeout {
            Some(t) => tokio::time::timeout(t, &mut reader).await.ok(),
            None => Some((&mut reader).await),
        };
        let snapshot =
            |c: &mut Collected| (std::mem::take(&mut c.stdout), std::mem::take(&mut c.stderr));
        match ended {
            None => {
                guard.fire();
                let (stdout, stderr) = shared
                    .lock()
                    .map(|mut c| snapshot(&mut c))
                    .unwrap_or_default();
                Ok(CommandOutput {
                    rc: None,
                    stdout,
                    stderr,
                    timed_out: true,
                })
            }
            Some(joined) => {
                guard.armed = None;
                let end = joined.unwrap_or(End::Lost);
                let mut c = shared
                    .lock()
                    .map_err(|_| self.err("internal error: output lock poisoned"))?;
                if c.exec_refused && c.rc.is_none() {
                    return Err(self.err("the server refused to run the command"));
                }
                if end == End::Lost && c.rc.is_none() {
                    return Err(self.err(format!(
                        "the connection was lost while the command ran: {}",
                        live.lost_reason()
                    )));
                }
                if let (None, Some(sig)) = (c.rc, &c.signal) {
                    let note = format!("\n[lifeboat: the command was killed by signal {sig}]\n");
                    c.stderr.extend_from_slice(note.as_bytes());
                }
                let (stdout, stderr) = snapshot(&mut c);
                Ok(CommandOutput {
                    rc: c.rc,
                    stdout,
                    stderr,
                    timed_out: false,
                })
            }
        }
    }

    async fn put_bytes(&self, data: &[u8], remote_path: &str) -> Result<(), ConnectionError> {
        let spec = CommandSpec::shell(format!("cat > {}", super::quote(remote_path))).stdin(data);
        let out = self.run(&spec, None).await?;
        if out.success() {
            Ok(())
        } else {
            Err(self.err(format!(
                "cannot write {remote_path}: {}",
                out.stderr_text().trim()
            )))
        }
    }

    async fn put_file(&self, local: &Path, remote_path: &str) -> Result<(), ConnectionError> {
        transfer::put_file(self, local, remote_path).await
    }

    async fn get_file(&self, remote_path: &str, local: &Path) -> Result<(), ConnectionError> {
        transfer::get_file(self, remote_path, local).await
    }

    async fn read_file(
        &self,
        remote_path: &str,
        max: u64,
    ) -> Result<Option<Vec<u8>>, ConnectionError> {
        transfer::read_file(self, remote_path, max).await
    }

    async fn stat(&self, remote_path: &str) -> Result<Option<FileStat>, ConnectionError> {
        super::local::stat_via_command(self, remote_path, None).await
    }

    async fn rename_new(&self, from: &str, to: &str) -> Result<bool, ConnectionError> {
        transfer::rename_new(self, from, to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_stripped_from_stderr() {
        let mut c = Collected::default();
        assert!(c.stderr_bytes(b"noise\nlifeboat-pi").is_empty());
        assert_eq!(c.stderr_bytes(b"d:1234\nreal err"), b"noise\nreal err");
        assert_eq!(c.pid, Some(1234));
        assert_eq!(c.stderr_bytes(b"lifeboat-pid:5\n"), b"lifeboat-pid:5\n");
    }
}
