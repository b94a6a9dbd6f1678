//! User authentication, in OpenSSH's order: the ssh-agent's keys (`SSH_AUTH_SOCK` or a set socket), then
//! key files (the inventory's, then `IdentityFile`, else the default `~/.ssh/id_ed25519`,
//! `id_ecdsa`, `id_rsa`; ed25519, ECDSA and RSA with the best hash the server accepts;
//! an optional passphrase), then the password and keyboard-interactive with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Error as KeyError, PrivateKey, PrivateKeyWithHashAlg, load_secret_key};

use super::Client;

/// How to prove who we are.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// The remote user.
    pub user: String,
    /// Key files, tried in order (missing ones are skipped).
    pub key_files: Vec<PathBuf>,
    /// Passphrase of encrypted key files.
    pub passphrase: Option<String>,
    /// Password for `password` and `keyboard-interactive`.
    pub password: Option<String>,
    /// The ssh-agent's socket, tried first.
    pub agent_socket: Option<PathBuf>,
    /// With an agent: only its keys that match one of `key_files` (`IdentitiesOnly`).
    pub identities_only: bool,
}

/// Authenticates `handle`; on failure, says what was tried.
pub async fn authenticate(handle: &mut Handle<Client>, s: &AuthSettings) -> Result<(), String> {
    let mut tried: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let rsa_hash = match handle.best_supported_rsa_hash().await {
        Ok(h) => h.flatten(),
        Err(e) => return Err(format!("the connection closed before authentication: {e}")),
    };

    let wanted: Vec<russh::keys::PublicKey> = s
        .key_files
        .iter()
        .filter_map(|p| {
            let mut pubp = p.clone().into_os_string();
            pubp.push(".pub");
            russh::keys::load_public_key(PathBuf::from(pubp)).ok()
        })
        .collect();

    if let Some(sock) = &s.agent_socket {
        match AgentClient::connect_uds(sock).await {
            Ok(mut agent) => match agent.request_identities().await {
                Ok(ids) => {
                    for id in ids {
                        let AgentIdentity::PublicKey { key, comment } = id else {
                            continue;
                        };
                        if s.identities_only
                            && !wanted.iter().any(|w| w.key_data() == key.key_data())
                        {
                            continue;
                        }
                        let hash = if key.algorithm().is_rsa() {
                            rsa_hash
                        } else {
                            None
                        };
                        match handle
                            .authenticate_publickey_with(&s.user, key.clone(), hash, &mut agent)
                            .await
                        {
                            Ok(AuthResult::Success) => return Ok(()),
                            Ok(AuthResult::Failure { .. }) => {
                                tried.push(format!("agent key {comment}"))
                            }
                            Err(e) => notes.push(format!("agent key {comment}: {e}")),
                        }
                        if handle.is_closed() {
                            return Err(closed(&tried));
                        }
                    }
                }
                Err(e) => notes.push(format!("ssh-agent: {e}")),
            },
            Err(e) => notes.push(format!("ssh-agent: {e}")),
        }
    }

    for path in &s.key_files {
        if !path.exists() {
            continue;
        }
        let key = match load_key(path, s.passphrase.as_deref()) {
            Ok(k) => k,
            Err(e) => {
                notes.push(e);
                continue;
            }
        };
        let hash = if key.algorithm().is_rsa() {
            rsa_hash
        } else {
            None
        };
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        match handle.authenticate_publickey(&s.user, key).await {
            Ok(AuthResult::Success) => return Ok(()),
            Ok(AuthResult::Failure { .. }) => tried.push(format!("key {}", path.display())),
            Err(e) => notes.push(format!("key {}: {e}", path.display())),
        }
        if handle.is_closed() {
            return Err(closed(&tried));
        }
    }

    if let Some(password) = &s.password {
        match handle.authenticate_password(&s.user, password).await {
            Ok(AuthResult::Success) => return Ok(()),
            Ok(AuthResult::Failure { .. }) => tried.push("password".into()),
            Err(e) => notes.push(format!("password: {e}")),
        }
        if !handle.is_closed() {
            match keyboard_interactive(handle, &s.user, password).await {
                Ok(true) => return Ok(()),
                Ok(false) => tried.push("keyboard-interactive".into()),
                Err(e) => notes.push(format!("keyboard-interactive: {e}")),
            }
        }
    }

    let mut msg = format!("permission denied for user `{}`", s.user);
    if tried.is_empty() {
        msg.push_str(": no key, agent identity or password to offer");
    } else {
        msg.push_str(&format!(" (tried {})", tried.join(", ")));
    }
    if !notes.is_empty() {
        msg.push_str(&format!("; {}", notes.join("; ")));
    }
    Err(msg)
}

/// Reads a private key file; says plainly when a passphrase is missing or wrong (an
/// encrypted key that cannot be opened is skipped, like a refused key).
fn load_key(path: &Path, passphrase: Option<&str>) -> Result<PrivateKey, String> {
    let err = match load_secret_key(path, passphrase) {
        Ok(k) => return Ok(k),
        Err(e) => e,
    };
    let encrypted = matches!(err, KeyError::KeyIsEncrypted)
        || (passphrase.is_some()
            && matches!(load_secret_key(path, None), Err(KeyError::KeyIsEncrypted)));
    Err(match (encrypted, passphrase) {
        (true, None) => format!(
            "key {} is encrypted and no passphrase was given (set lifeboat_ssh_key_passphrase)",
            path.display()
        ),
        (true, Some(_)) => format!(
            "key {}: wrong passphrase (lifeboat_ssh_key_passphrase does not open it)",
            path.display()
        ),
        (false, _) => format!("key {}: {err}", path.display()),
    })
}

fn closed(tried: &[String]) -> String {
    format!(
        "the server closed the connection during authentication (after {})",
        if tried.is_empty() {
            "no attempt".to_string()
        } else {
            tried.join(", ")
        }
    )
}

/// Answers every keyboard-interactive prompt with the password (the usual PAM
/// "Password:" conversation); gives up after a few rounds.
async fn keyboard_interactive(
    handle: &mut Handle<Client>,
    user: &str,
    password: &str,
) -> Result<bool, russh::Error> {
    let mut reply = handle
        .authenticate_keyboard_interactive_start(user, None)
        .await?;
    for _ in 0..4 {
        match reply {
            KeyboardInteractiveAuthResponse::Success => return Ok(true),
            KeyboardInteractiveAuthResponse::Failure { .. } => return Ok(false),
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                let answers = prompts.iter().map(|_| password.to_string()).collect();
                reply = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await?;
            }
        }
    }
    Ok(false)
}
