//! Host key verification: the [`HostKeyPolicy`] and the matching of a server's key (or
//! host certificate) against OpenSSH `known_hosts` files, done here rather than by russh
//! so that hashed names, wildcard and negated patterns, `[host]:port`, `@revoked` and
//! `@cert-authority` lines, tabs and several files all work as in OpenSSH. Lines are
//! parsed with `russh::keys::ssh_key::known_hosts`; file and line are kept for messages.
//! `accept-new` appends unknown hosts to the first (user) file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, PublicKey, certificate::CertType};

use super::config::wildcard_match;

/// What to do with a server's host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Only keys already in a known_hosts file are accepted (the default).
    #[default]
    Strict,
    /// Unknown hosts are trusted on first use and appended to the user's known_hosts;
    /// a changed key is still refused.
    AcceptNew,
    /// Every key is accepted with a warning (revoked keys are still refused).
    Off,
}

impl FromStr for HostKeyPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "strict" | "yes" | "true" | "ask" => Ok(HostKeyPolicy::Strict),
            "accept-new" | "accept_new" => Ok(HostKeyPolicy::AcceptNew),
            "off" | "no" | "false" => Ok(HostKeyPolicy::Off),
            other => Err(format!(
                "host key checking `{other}`: expected strict, accept-new or off"
            )),
        }
    }
}

impl std::fmt::Display for HostKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostKeyPolicy::Strict => "strict",
            HostKeyPolicy::AcceptNew => "accept-new",
            HostKeyPolicy::Off => "off",
        })
    }
}

/// One parsed known_hosts line and where it came from.
#[derive(Debug, Clone)]
struct Line {
    file: PathBuf,
    number: usize,
    entry: Entry,
}

impl Line {
    fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.number)
    }
}

/// The host key check for one host: its known_hosts lines and the policy.
#[derive(Debug, Clone)]
pub struct HostKeyCheck {
    /// The name looked up: `host`, or `[host]:port` when the port is not 22.
    pub lookup: String,
    policy: HostKeyPolicy,
    /// Where `accept-new` writes.
    write_file: Option<PathBuf>,
    /// Files read, for messages.
    files: Vec<PathBuf>,
    /// Lines about this host (matching its name), in file order.
    lines: Vec<Line>,
}

/// The name a host has in known_hosts.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn key_text(alg: &Algorithm, key: &PublicKey) -> String {
    format!("{} key {}", alg.as_str(), key.fingerprint(HashAlg::Sha256))
}

impl HostKeyCheck {
    /// Reads `files` (missing ones are skipped) for the host `host` on `port`.
    /// `write_file` is where `accept-new` appends (normally the first user file).
    pub fn load(
        host: &str,
        port: u16,
        files: &[PathBuf],
        write_file: Option<PathBuf>,
        policy: HostKeyPolicy,
    ) -> Result<HostKeyCheck, String> {
        let lookup = lookup_name(host, port);
        let mut lines = Vec::new();
        for file in files {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
            };
            for (i, raw) in text.lines().enumerate() {
                let trimmed = raw.trim();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                // Tabs and runs of blanks separate fields as well as one space.
                let normalized = trimmed.split_whitespace().collect::<Vec<_>>().join(" ");
                let Ok(entry) = normalized.parse::<Entry>() else {
                    tracing::debug!("{}:{}: unreadable known_hosts line", file.display(), i + 1);
                    continue;
                };
                if patterns_match(entry.host_patterns(), &lookup) {
                    lines.push(Line {
                        file: file.clone(),
                        number: i + 1,
                        entry,
                    });
                }
            }
        }
        Ok(HostKeyCheck {
            lookup,
            policy,
            write_file,
            files: files.to_vec(),
            lines,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> HostKeyPolicy {
        self.policy
    }

    /// Key algorithms of the plain keys known for this host, in file order: the client
    /// asks for these first, as OpenSSH does, so a host known by its RSA key is not
    /// refused for offering ed25519.
    pub fn known_algorithms(&self) -> Vec<Algorithm> {
        let mut algs: Vec<Algorithm> = Vec::new();
        for l in &self.lines {
            if l.entry.marker().is_none() {
                let a = l.entry.public_key().algorithm();
                if !algs.contains(&a) {
                    algs.push(a);
                }
            }
        }
        algs
    }

    /// Whether a certificate authority is trusted for this host.
    pub fn has_cert_authority(&self) -> bool {
        self.lines
            .iter()
            .any(|l| l.entry.marker() == Some(&Marker::CertAuthority))
    }

    fn revoked(&self, key: &PublicKey) -> Option<&Line> {
        self.lines.iter().find(|l| {
            l.entry.marker() == Some(&Marker::Revoked)
                && l.entry.public_key().key_data() == key.key_data()
        })
    }

    /// Decides on a plain host key: `Ok` to go on, `Err` with OpenSSH-like text.
    pub fn verify_key(&self, key: &PublicKey) -> Result<(), String> {
        let offered = key_text(&key.algorithm(), key);
        if let Some(l) = self.revoked(key) {
            return Err(format!(
                "the host key for {} is REVOKED ({offered}, marked @revoked at {}); refusing to connect",
                self.lookup,
                l.at()
            ));
        }
        let plain: Vec<&Line> = self
            .lines
            .iter()
            .filter(|l| l.entry.marker().is_none())
            .collect();
        if plain
            .iter()
            .any(|l| l.entry.public_key().key_data() == key.key_data())
        {
            return Ok(());
        }
        if !plain.is_empty() {
            let known: Vec<String> = plain
                .iter()
                .map(|l| {
                    let k = l.entry.public_key();
                    format!("{} at {}", key_text(&k.algorithm(), k), l.at())
                })
                .collect();
            let msg = format!(
                "REMOTE HOST IDENTIFICATION HAS CHANGED for {}: the server offered {offered}, \
                 but known_hosts has {}. Someone could be intercepting the connection, or the \
                 host key was replaced; if the change is expected, remove the old line \
                 (ssh-keygen -R '{}')",
                self.lookup,
                known.join("; "),
                self.lookup
            );
            return match self.policy {
                HostKeyPolicy::Off => {
                    tracing::warn!("{msg} (host key checking is off: connecting anyway)");
                    Ok(())
                }
                _ => Err(msg),
            };
        }
        match self.policy {
            HostKeyPolicy::Strict => Err(format!(
                "host key verification failed: no host key is known for {} ({offered} offered; \
                 looked in {}). Add it to known_hosts (ssh-keyscan), or use host key checking \
                 accept-new to trust it on first use",
                self.lookup,
                self.files_text()
            )),
            HostKeyPolicy::AcceptNew => self.append(key),
            HostKeyPolicy::Off => {
                tracing::warn!(
                    "no host key is known for {} ({offered}); host key checking is off: connecting anyway",
                    self.lookup
                );
                Ok(())
            }
        }
    }

    /// Decides on a host certificate: valid and signed by a `@cert-authority` for this
    /// host, else judged by its plain key like any other.
    pub fn verify_certificate(&self, cert: &Certificate) -> Result<(), String> {
        let cas: Vec<&Line> = self
            .lines
            .iter()
            .filter(|l| l.entry.marker() == Some(&Marker::CertAuthority))
            .collect();
        let ca_key = PublicKey::new(cert.signature_key().clone(), "");
        if let Some(l) = self.revoked(&ca_key) {
            return Err(format!(
                "the certificate authority of {}'s host certificate is REVOKED ({}) at {}",
                self.lookup,
                key_text(&ca_key.algorithm(), &ca_key),
                l.at()
            ));
        }
        if !cas.is_empty() {
            let fingerprints: Vec<_> = cas
                .iter()
                .map(|l| l.entry.public_key().fingerprint(HashAlg::Sha256))
                .collect();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let host = self
                .lookup
                .strip_prefix('[')
                .and_then(|s| s.rsplit_once(']'))
                .map_or(self.lookup.as_str(), |(h, _)| h);
            let principal_ok = cert.valid_principals().iter().any(|p| p == host);
            match cert.validate_at(now, fingerprints.iter()) {
                Ok(()) if cert.cert_type() == CertType::Host && principal_ok => return Ok(()),
                Ok(()) => {
                    return Err(format!(
                        "the host certificate of {} does not name it as a host principal (principals: {})",
                        self.lookup,
                        cert.valid_principals().join(", ")
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "the host certificate of {} is not valid for the trusted certificate authorities: {e}",
                        self.lookup
                    ));
                }
            }
        }
        let key = PublicKey::new(cert.public_key().clone(), "");
        self.verify_key(&key)
    }

    fn files_text(&self) -> String {
        if self.files.is_empty() {
            return "no known_hosts file".into();
        }
        self.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn append(&self, key: &PublicKey) -> Result<(), String> {
        let Some(file) = &self.write_file else {
            return Err(format!(
                "no known_hosts file to add {} to (accept-new)",
                self.lookup
            ));
        };
        let mut key = key.clone();
        key.set_comment("");
        let text = key
            .to_openssh()
            .map_err(|e| format!("cannot encode the host key of {}: {e}", self.lookup))?;
        append_line(file, &format!("{} {}", self.lookup, text.trim()))
            .map_err(|e| format!("cannot add {} to {}: {e}", self.lookup, file.display()))?;
        tracing::warn!(
            "permanently added {} ({}) to {}",
            self.lookup,
            key_text(&key.algorithm(), &key),
            file.display()
        );
        Ok(())
    }
}

/// Appends one line, creating the file (and its folder) when missing, and adding a
/// newline first when the file does not end with one.
fn append_line(file: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let needs_newline = std::fs::read(file)
        .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
        .unwrap_or(false);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    if needs_newline {
        f.write_all(b"\n")?;
    }
    f.write_all(format!("{line}\n").as_bytes())
}

/// Whether a line's host field names `lookup` (`host` or `[host]:port`).
fn patterns_match(patterns: &HostPatterns, lookup: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
            ring::hmac::verify(&key, lookup.as_bytes(), hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let name = lookup.to_ascii_lowercase();
            let mut matched = false;
            for p in list {
                let (neg, p) = match p.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, p.as_str()),
                };
                if wildcard_match(&p.to_ascii_lowercase(), &name) {
                    if neg {
                        return false;
                    }
                    matched = true;
                }
            }
            matched
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGy/oCqxPcZ7lj8WQmwqT5TaFgcqW/Zgw0K4UrT5EwND";

    fn pats(s: &str) -> HostPatterns {
        s.parse().unwrap_or_else(|_| panic!("bad patterns {s}"))
    }

    #[test]
    fn patterns_and_ports() {
        assert!(patterns_match(&pats("a,b,*.example.org"), "db.example.org"));
        assert!(!patterns_match(
            &pats("*.example.org,!db.example.org"),
            "db.example.org"
        ));
        assert!(patterns_match(&pats("[10.0.0.1]:2222"), "[10.0.0.1]:2222"));
        assert!(!patterns_match(&pats("10.0.0.1"), "[10.0.0.1]:2222"));
        assert!(patterns_match(&pats("[10.0.0.*]:2222"), "[10.0.0.7]:2222"));
    }

    #[test]
    fn hashed_names() {
        // `ssh-keygen -H` style: HMAC-SHA1 of the name keyed by the salt.
        let salt = b"0123456789abcdefghij".to_vec();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
        let tag = ring::hmac::sign(&key, b"[127.0.0.2]:2200");
        let mut hash = [0u8; 20];
        hash.copy_from_slice(tag.as_ref());
        let p = HostPatterns::HashedName { salt, hash };
        assert!(patterns_match(&p, "[127.0.0.2]:2200"));
        assert!(!patterns_match(&p, "127.0.0.2"));
    }

    #[test]
    fn tabs_and_policies() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = dir.path().join("kh");
        std::fs::write(&f, format!("# x\nother\t{ED}\n")).unwrap_or_else(|e| panic!("{e}"));
        let key: PublicKey = ED.parse().unwrap_or_else(|e| panic!("{e}"));
        let c = HostKeyCheck::load(
            "other",
            22,
            std::slice::from_ref(&f),
            None,
            HostKeyPolicy::Strict,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.verify_key(&key).is_ok());
        let c = HostKeyCheck::load(
            "new",
            2200,
            std::slice::from_ref(&f),
            Some(f.clone()),
            HostKeyPolicy::Strict,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = c.verify_key(&key).err().unwrap_or_default();
        assert!(err.contains("no host key is known for [new]:2200"), "{err}");
        let c = HostKeyCheck::load(
            "new",
            2200,
            std::slice::from_ref(&f),
            Some(f.clone()),
            HostKeyPolicy::AcceptNew,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.verify_key(&key).is_ok());
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(text.ends_with(&format!("[new]:2200 {ED}\n")), "{text}");
        let c = HostKeyCheck::load("new", 2200, &[f], None, HostKeyPolicy::Strict)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.verify_key(&key).is_ok());
    }

    #[test]
    fn policy_names() {
        assert_eq!("accept-new".parse(), Ok(HostKeyPolicy::AcceptNew));
        assert_eq!("no".parse(), Ok(HostKeyPolicy::Off));
        assert!("maybe".parse::<HostKeyPolicy>().is_err());
    }
}
