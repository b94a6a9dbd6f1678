//! Opening the connection: TCP (or a `direct-tcpip` channel through the previous jump
//! host), the SSH handshake with the host key check, and authentication, hop by hop,
//! each within its connect timeout. Also reads ProxyJump specs
//! (`[user@]host[:port]`, comma separated, `ssh://` allowed).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::{Arc, Mutex as StdMutex};

use russh::client::{self, Handle};

use super::{Client, Endpoint, Explicit, Live, SshOptions, auth, get, resolve};

/// One hop of a ProxyJump spec.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hop {
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

fn parse_hop(spec: &str) -> Result<Hop, String> {
    let s = spec.trim();
    let s = s.strip_prefix("ssh://").unwrap_or(s);
    let (user, rest) = match s.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, s),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("jump host `{spec}`: unclosed `[`"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(
                p.parse()
                    .map_err(|_| format!("jump host `{spec}`: bad port"))?,
            ),
            None => None,
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                Some(
                    p.parse()
                        .map_err(|_| format!("jump host `{spec}`: bad port"))?,
                ),
            ),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("jump host `{spec}`: no host"));
    }
    Ok(Hop { user, host, port })
}

/// The jump hosts of a ProxyJump spec, each resolved through the ssh config. They share
/// the target's known_hosts override, host key policy, key passphrase and (after their
/// own) key file; never its password.
///
/// As with OpenSSH's `-J`, the first jump host's own `ProxyJump` (from the ssh config)
/// is followed, recursively: `ProxyJump inner` with `Host inner / ProxyJump outer` in
/// the config goes outer, inner, target. Later hops of a list are reached through the
/// hop before them, so their own `ProxyJump` does not apply.
pub(crate) fn resolve_hops(
    spec: &str,
    target: &Explicit,
    options: &SshOptions,
) -> Result<Vec<Endpoint>, String> {
    resolve_hops_at(spec, target, options, &mut Vec::new())
}

/// Jump hosts followed through the config at most this deep.
const MAX_JUMP_DEPTH: usize = 8;

fn resolve_hops_at(
    spec: &str,
    target: &Explicit,
    options: &SshOptions,
    seen: &mut Vec<String>,
) -> Result<Vec<Endpoint>, String> {
    if seen.len() > MAX_JUMP_DEPTH || seen.iter().any(|s| s == spec.trim()) {
        seen.push(spec.trim().to_string());
        return Err(format!(
            "ProxyJump loops or nests deeper than {MAX_JUMP_DEPTH} jump hosts: {}",
            seen.join(" <- ")
        ));
    }
    seen.push(spec.trim().to_string());
    let mut hops = Vec::new();
    for (i, part) in spec.split(',').filter(|p| !p.trim().is_empty()).enumerate() {
        let hop = parse_hop(part)?;
        let ex = Explicit {
            port: hop.port,
            user: hop.user,
            key_file: None,
            passphrase: target.passphrase.clone(),
            password: None,
            common_args: None,
            known_hosts_file: target.known_hosts_file.clone(),
            policy: target.policy,
            connect_timeout: target.connect_timeout,
        };
        let (mut endpoint, own_jump) =
            resolve(&hop.host, &ex, options).map_err(|e| format!("jump host {}: {e}", hop.host))?;
        if i == 0
            && let Some(own) = own_jump
        {
            hops.extend(resolve_hops_at(&own, target, options, seen)?);
        }
        if let Some(k) = &target.key_file {
            let home = options.home();
            let path = std::path::PathBuf::from(super::config::expand_tilde(k, &home));
            if !endpoint.auth.key_files.contains(&path) {
                endpoint.auth.key_files.push(path);
            }
        }
        hops.push(endpoint);
    }
    Ok(hops)
}

/// The ciphers to offer, best first. With AES and carry-less multiply in hardware,
/// AES-256-GCM costs both ends (russh here, OpenSSL in sshd) a fraction of what
/// ChaCha20-Poly1305 does, which is what bulk transfers feel; without them ChaCha20 is
/// the faster and constant-time choice, as in OpenSSH's own default order.
fn cipher_order() -> &'static [russh::cipher::Name] {
    use russh::cipher::{AES_128_CTR, AES_192_CTR, AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305};
    const AES_FIRST: &[russh::cipher::Name] = &[
        AES_256_GCM,
        CHACHA20_POLY1305,
        AES_256_CTR,
        AES_192_CTR,
        AES_128_CTR,
    ];
    const CHACHA_FIRST: &[russh::cipher::Name] = &[
        CHACHA20_POLY1305,
        AES_256_GCM,
        AES_256_CTR,
        AES_192_CTR,
        AES_128_CTR,
    ];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            return AES_FIRST;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
        {
            return AES_FIRST;
        }
    }
    CHACHA_FIRST
}

fn russh_config(ep: &Endpoint) -> Arc<client::Config> {
    let mut preferred = russh::Preferred::default();
    // Ask first for the key types known_hosts has for this host, as OpenSSH does.
    let known = ep.check.known_algorithms();
    if !known.is_empty() {
        let mut order: Vec<russh::keys::Algorithm> = Vec::new();
        for a in known {
            // An RSA key serves every RSA signature algorithm.
            if matches!(a, russh::keys::Algorithm::Rsa { .. }) {
                for b in preferred
                    .key
                    .iter()
                    .filter(|b| matches!(b, russh::keys::Algorithm::Rsa { .. }))
                {
                    if !order.contains(b) {
                        order.push(b.clone());
                    }
                }
            } else if preferred.key.contains(&a) && !order.contains(&a) {
                order.push(a);
            }
        }
        for b in preferred.key.iter() {
            if !order.contains(b) {
                order.push(b.clone());
            }
        }
        preferred.key = Cow::Owned(order);
    }
    if ep.check.has_cert_authority() {
        preferred.host_key_certificates = preferred.key.clone();
    }
    preferred.cipher = Cow::Borrowed(cipher_order());
    Arc::new(client::Config {
        keepalive_interval: ep.keepalive,
        keepalive_max: ep.keepalive_max,
        inactivity_timeout: None,
        nodelay: true,
        preferred,
        ..Default::default()
    })
}

/// Connects through `hops` to `target`.
pub(crate) async fn connect_chain(hops: &[Endpoint], target: &Endpoint) -> Result<Live, String> {
    let mut opened: Vec<Handle<Client>> = Vec::new();
    let mut lost = Arc::new(StdMutex::new(None));
    for (i, ep) in hops.iter().chain(std::iter::once(target)).enumerate() {
        let is_target = i == hops.len();
        let refusal = Arc::new(StdMutex::new(None));
        lost = Arc::new(StdMutex::new(None));
        let socket = Arc::new(StdMutex::new(None));
        let handler = Client {
            check: ep.check.clone(),
            refusal: refusal.clone(),
            lost: lost.clone(),
            socket: socket.clone(),
        };
        let config = russh_config(ep);
        let what = if is_target {
            format!("{}:{}", ep.address, ep.port)
        } else {
            format!("jump host {}:{}", ep.address, ep.port)
        };
        let previous = opened.last();
        let attempt = async {
            let connected = match previous {
                None => {
                    let stream = tokio::net::TcpStream::connect((ep.address.as_str(), ep.port))
                        .await
                        .map_err(|e| format!("cannot connect to {what}: connection error: {e}"))?;
                    // As `client::connect` would: small SSH packets must not wait.
                    let _ = stream.set_nodelay(true);
                    // For the handler, which asks for quick acknowledgements once
                    // authenticated (see `Client`).
                    if let Ok(mut slot) = socket.lock() {
                        *slot = socket2::SockRef::from(&stream).try_clone().ok();
                    }
                    client::connect_stream(config, stream, handler).await
                }
                Some(prev) => {
                    let ch = prev
                        .channel_open_direct_tcpip(
                            ep.address.clone(),
                            u32::from(ep.port),
                            "127.0.0.1",
                            0,
                        )
                        .await
                        .map_err(|e| {
                            format!("cannot reach {what} through the previous jump host: {e}")
                        })?;
                    client::connect_stream(config, ch.into_stream(), handler).await
                }
            };
            let mut handle = connected.map_err(|e| match get(&refusal) {
                Some(msg) => msg,
                None => format!("cannot connect to {what}: {}", super::describe_russh(&e)),
            })?;
            auth::authenticate(&mut handle, &ep.auth)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            Ok::<_, String>(handle)
        };
        let handle = tokio::time::timeout(ep.connect_timeout, attempt)
            .await
            .map_err(|_| {
                format!(
                    "cannot connect to {what}: no answer within {}s (connect timeout)",
                    ep.connect_timeout.as_secs_f64()
                )
            })??;
        opened.push(handle);
    }
    let handle = opened
        .pop()
        .ok_or_else(|| "internal error: no connection was opened".to_string())?;
    Ok(Live {
        handle,
        _jumps: opened,
        lost,
        sftp: AtomicU8::new(0),
        sftp_session: tokio::sync::Mutex::new(None),
        shells: super::shell::IdleShells::default(),
        answer_timeout: target.connect_timeout,
        dead: AtomicBool::new(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_specs() {
        assert_eq!(
            parse_hop("admin@bastion:2222").ok(),
            Some(Hop {
                user: Some("admin".into()),
                host: "bastion".into(),
                port: Some(2222)
            })
        );
        assert_eq!(
            parse_hop("ssh://[::1]:22").ok(),
            Some(Hop {
                user: None,
                host: "::1".into(),
                port: Some(22)
            })
        );
        assert!(parse_hop("h:x").is_err());
    }
}
