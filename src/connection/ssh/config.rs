//! OpenSSH client configuration as lifeboat honours it: `~/.ssh/config` (`Host` and
//! `Match host|all` blocks, `Include`, first value wins) for the keywords HostName, User,
//! Port, IdentityFile, IdentitiesOnly, ProxyJump, ConnectTimeout, ServerAliveInterval,
//! ServerAliveCountMax, UserKnownHostsFile, GlobalKnownHostsFile and
//! StrictHostKeyChecking; and `ansible_ssh_common_args` (`-o Key=Value`, `-J`, `-i`,
//! `-p`, `-l`, `-F`), which win over the file as on the `ssh` command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the configuration says about one host (every field unset when it says nothing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostConfig {
    /// `HostName`: the real address.
    pub hostname: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `IdentityFile`, in order (every occurrence counts, unlike other keywords).
    pub identity_files: Vec<String>,
    /// `IdentitiesOnly`: skip the agent's other keys.
    pub identities_only: Option<bool>,
    /// `ProxyJump`: `[user@]host[:port]`, comma separated, or `none`.
    pub proxy_jump: Option<String>,
    /// `ConnectTimeout`.
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval` (zero disables).
    pub server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`.
    pub server_alive_count_max: Option<usize>,
    /// `UserKnownHostsFile` (several files allowed; `none` gives an empty list).
    pub user_known_hosts_files: Option<Vec<String>>,
    /// `GlobalKnownHostsFile`.
    pub global_known_hosts_files: Option<Vec<String>>,
    /// `StrictHostKeyChecking` as written (`yes`, `accept-new`, `no`, `off`, `ask`).
    pub strict_host_key_checking: Option<String>,
    /// `-F`: another configuration file instead of `~/.ssh/config` (from common args).
    pub config_file: Option<String>,
}

impl HostConfig {
    /// Applies one `Keyword value` setting unless an earlier one already set it.
    pub fn apply(&mut self, keyword: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        let words = || -> Vec<String> {
            shlex::split(value)
                .unwrap_or_else(|| value.split_whitespace().map(str::to_string).collect())
        };
        let first = || words().into_iter().next().unwrap_or_default();
        let seconds = |what: &str| -> Result<Duration, String> {
            first()
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| format!("{what} `{value}` is not a number of seconds"))
        };
        match keyword.to_ascii_lowercase().as_str() {
            "hostname" if self.hostname.is_none() => self.hostname = Some(first()),
            "user" if self.user.is_none() => self.user = Some(first()),
            "port" if self.port.is_none() => {
                self.port = Some(
                    first()
                        .parse()
                        .map_err(|_| format!("Port `{value}` is not a port number"))?,
                )
            }
            "identityfile" => self.identity_files.push(first()),
            "identitiesonly" if self.identities_only.is_none() => {
                self.identities_only = Some(yes(&first()))
            }
            "proxyjump" if self.proxy_jump.is_none() => self.proxy_jump = Some(first()),
            "connecttimeout" if self.connect_timeout.is_none() => {
                self.connect_timeout = Some(seconds("ConnectTimeout")?)
            }
            "serveraliveinterval" if self.server_alive_interval.is_none() => {
                self.server_alive_interval = Some(seconds("ServerAliveInterval")?)
            }
            "serveralivecountmax" if self.server_alive_count_max.is_none() => {
                self.server_alive_count_max = Some(
                    first()
                        .parse()
                        .map_err(|_| format!("ServerAliveCountMax `{value}` is not a number"))?,
                )
            }
            "userknownhostsfile" if self.user_known_hosts_files.is_none() => {
                self.user_known_hosts_files = Some(file_list(words()))
            }
            "globalknownhostsfile" if self.global_known_hosts_files.is_none() => {
                self.global_known_hosts_files = Some(file_list(words()))
            }
            "stricthostkeychecking" if self.strict_host_key_checking.is_none() => {
                self.strict_host_key_checking = Some(first().to_ascii_lowercase())
            }
            _ => {}
        }
        Ok(())
    }
}

fn yes(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "yes" | "true")
}

fn file_list(words: Vec<String>) -> Vec<String> {
    if words.len() == 1 && words[0].eq_ignore_ascii_case("none") {
        Vec::new()
    } else {
        words
    }
}

/// Reads `ansible_ssh_common_args` into `cfg` (these win over the configuration file, so
/// apply them first). Arguments other than `-o`, `-J`, `-i`, `-p`, `-l` and `-F` are
/// ignored, as are options lifeboat does not use.
pub fn apply_common_args(cfg: &mut HostConfig, args: &str) -> Result<(), String> {
    let words = shlex::split(args)
        .ok_or_else(|| format!("ansible_ssh_common_args `{args}`: unbalanced quotes"))?;
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        // `-oKey=Value` and `-o Key=Value` alike; same for the other flags.
        let (flag, attached) = if w.starts_with('-') && w.len() > 2 && w.is_char_boundary(2) {
            (w[..2].to_string(), Some(w[2..].to_string()))
        } else {
            (w.clone(), None)
        };
        let takes_value = matches!(flag.as_str(), "-o" | "-J" | "-i" | "-p" | "-l" | "-F");
        if !takes_value {
            continue;
        }
        let value = match attached {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| format!("ansible_ssh_common_args: `{flag}` needs a value"))?,
        };
        match flag.as_str() {
            "-o" => {
                let (k, v) = split_keyword(&value);
                cfg.apply(k, v)?;
            }
            "-J" => cfg.apply("ProxyJump", &value)?,
            "-i" => cfg.apply("IdentityFile", &value)?,
            "-p" => cfg.apply("Port", &value)?,
            "-l" => cfg.apply("User", &value)?,
            _ => cfg.config_file = cfg.config_file.take().or(Some(value)),
        }
    }
    Ok(())
}

/// Splits `Keyword value` or `Keyword=value`.
fn split_keyword(line: &str) -> (&str, &str) {
    let line = line.trim();
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (k, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    (k, rest)
}

/// Reads the configuration file `path` (missing is fine: nothing set) for the host named
/// `host` on the command line, into `cfg` (values already set win).
pub fn apply_file(
    cfg: &mut HostConfig,
    path: &Path,
    host: &str,
    home: &Path,
) -> Result<(), String> {
    let mut active = true;
    read_file(cfg, path, host, home, &mut active, 0)
}

fn read_file(
    cfg: &mut HostConfig,
    path: &Path,
    host: &str,
    home: &Path,
    active: &mut bool,
    depth: usize,
) -> Result<(), String> {
    if depth > 16 {
        return Err(format!("{}: Include nested too deeply", path.display()));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, value) = split_keyword(line);
        let at = || format!("{}:{}", path.display(), n + 1);
        match keyword.to_ascii_lowercase().as_str() {
            "host" => {
                let pats = shlex::split(value).unwrap_or_default();
                *active = host_matches(&pats, host);
            }
            "match" => {
                let words = shlex::split(value).unwrap_or_default();
                *active = match words.as_slice() {
                    [all] if all.eq_ignore_ascii_case("all") => true,
                    [kw, pats] if kw.eq_ignore_ascii_case("host") => {
                        let pats: Vec<String> = pats.split(',').map(str::to_string).collect();
                        host_matches(&pats, host)
                    }
                    // Other criteria (exec, user, localuser...) are not evaluated: the
                    // block does not apply.
                    _ => false,
                };
            }
            "include" if *active => {
                for pattern in shlex::split(value).unwrap_or_default() {
                    let pattern = expand_tilde(&pattern, home);
                    let full = if Path::new(&pattern).is_absolute() {
                        PathBuf::from(&pattern)
                    } else {
                        home.join(".ssh").join(&pattern)
                    };
                    for file in glob_files(&full) {
                        read_file(cfg, &file, host, home, active, depth + 1)?;
                    }
                }
            }
            _ if *active => cfg
                .apply(keyword, value)
                .map_err(|e| format!("{}: {e}", at()))?,
            _ => {}
        }
    }
    Ok(())
}

/// Files named by a path whose last component may hold `*` or `?`.
fn glob_files(path: &Path) -> Vec<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![path.to_path_buf()];
    }
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| wildcard_match(&name, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Whether `host` matches a `Host` line: some positive pattern matches and no negated one.
pub fn host_matches(patterns: &[String], host: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if wildcard_match(&neg.to_ascii_lowercase(), &host.to_ascii_lowercase()) {
                return false;
            }
        } else if wildcard_match(&p.to_ascii_lowercase(), &host.to_ascii_lowercase()) {
            matched = true;
        }
    }
    matched
}

/// OpenSSH glob: `*` any run of characters, `?` exactly one.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// `~/x` to `HOME/x`.
pub fn expand_tilde(path: &str, home: &Path) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest).to_string_lossy().into_owned(),
        None if path == "~" => home.to_string_lossy().into_owned(),
        None => path.to_string(),
    }
}

/// Expands `~` and the tokens `%h` (host), `%p` (port), `%r` (remote user), `%d` (home),
/// `%u` (local user), `%n` (name as given) and `%%` in a path setting.
pub fn expand_path(value: &str, tokens: &Tokens<'_>) -> String {
    let value = expand_tilde(value, tokens.home);
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(tokens.host),
            Some('p') => out.push_str(&tokens.port.to_string()),
            Some('r') => out.push_str(tokens.user),
            Some('d') => out.push_str(&tokens.home.to_string_lossy()),
            Some('u') => out.push_str(tokens.local_user),
            Some('n') => out.push_str(tokens.original),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Values of the `%` tokens.
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    /// `%h`.
    pub host: &'a str,
    /// `%p`.
    pub port: u16,
    /// `%r`.
    pub user: &'a str,
    /// `%d`.
    pub home: &'a Path,
    /// `%u`.
    pub local_user: &'a str,
    /// `%n`.
    pub original: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.example.org", "db1.example.org"));
        assert!(wildcard_match("db?", "db1"));
        assert!(!wildcard_match("db?", "db12"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn first_value_wins_and_blocks_match() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "# comment\nHost ctl* !ctl9\n  HostName 10.0.0.1\n  Port=2222\n  IdentityFile ~/.ssh/a\n\
             Host *\n  User admin\n  Port 22\n  IdentityFile %d/b\n  ProxyJump bastion\n\
             Match host ctl1\n  ConnectTimeout 3\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let home = Path::new("/home/op");
        let mut c = HostConfig::default();
        apply_common_args(
            &mut c,
            "-o ProxyJump=jump1 -oUser=root -o 'ServerAliveInterval 5'",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        apply_file(&mut c, &path, "ctl1", home).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!(c.port, Some(2222));
        assert_eq!(c.user.as_deref(), Some("root"));
        assert_eq!(c.proxy_jump.as_deref(), Some("jump1"));
        assert_eq!(c.identity_files, vec!["~/.ssh/a", "%d/b"]);
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.server_alive_interval, Some(Duration::from_secs(5)));

        let mut c = HostConfig::default();
        apply_file(&mut c, &path, "ctl9", home).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.hostname, None);
        assert_eq!(c.port, Some(22));
    }

    #[test]
    fn tokens_expand() {
        let t = Tokens {
            host: "h",
            port: 22,
            user: "r",
            home: Path::new("/home/op"),
            local_user: "op",
            original: "n",
        };
        assert_eq!(
            expand_path("~/.ssh/id_%h_%r_%%", &t),
            "/home/op/.ssh/id_h_r_%"
        );
    }
}
