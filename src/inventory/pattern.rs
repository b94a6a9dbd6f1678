//! Host patterns, as Ansible evaluates them wherever a set of hosts is named.
//!
//! - `all` or `*`: every host; a group name: its hosts and its descendants' hosts; a
//!   host name: that host.
//! - `a:b` or `a,b`: union; `a:&b`: intersection; `a:!b`: difference. As in Ansible the
//!   parts are applied unions first (in order), then intersections, then exclusions;
//!   a pattern of only `&`/`!` parts starts from `all`.
//! - `group[0]`, `group[-1]`, `group[1:3]` (inclusive end, as Ansible's), `group[2:]`:
//!   subscripts of the group's hosts in inventory order.
//! - Globs (`ctl*`, `*.example.com`, `web[12]`) match group and host names.
//! - `~regex` is not supported (an error says so).
//!
//! A name that is neither a host nor a group, or a glob that matches nothing, is an
//! error, not an empty set. `localhost` alone is the implicit localhost when the
//! inventory does not define it. The result is in inventory order, without duplicates.

use std::collections::HashSet;

use globset::GlobBuilder;

use super::Inventory;
use crate::error::did_you_mean;

/// Hosts matching `pattern` in `inv` (see the module docs).
pub fn select(inv: &Inventory, pattern: &str) -> Result<Vec<String>, String> {
    let parts = split(pattern);
    if parts.is_empty() {
        return Err(format!("host pattern `{pattern}` is empty"));
    }
    let (mut regular, mut intersect, mut exclude) = (Vec::new(), Vec::new(), Vec::new());
    for p in &parts {
        if let Some(rest) = p.strip_prefix('!') {
            exclude.push(rest.trim());
        } else if let Some(rest) = p.strip_prefix('&') {
            intersect.push(rest.trim());
        } else {
            regular.push(p.as_str());
        }
    }
    if regular.is_empty() {
        regular.push("all");
    }
    let mut selected: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for p in regular {
        for h in one(inv, pattern, p)? {
            if seen.insert(h.clone()) {
                selected.push(h);
            }
        }
    }
    for p in intersect {
        let keep: HashSet<String> = one(inv, pattern, p)?.into_iter().collect();
        selected.retain(|h| keep.contains(h));
    }
    for p in exclude {
        let drop: HashSet<String> = one(inv, pattern, p)?.into_iter().collect();
        selected.retain(|h| !drop.contains(h));
    }
    // Inventory order; the implicit localhost (not in the inventory) goes last.
    let mut ordered: Vec<String> = inv
        .hosts
        .keys()
        .filter(|h| selected.contains(h))
        .cloned()
        .collect();
    ordered.extend(selected.into_iter().filter(|h| !inv.hosts.contains_key(h)));
    Ok(ordered)
}

/// Splits a pattern on `,` and on `:` outside brackets, keeping IPv6 addresses whole.
fn split(pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    for piece in pattern.split(',') {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        // An IPv6 address (several colons, no brackets around ranges) is one pattern.
        if piece.matches(':').count() >= 2
            && !piece.contains(['!', '&', '['])
            && piece
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            out.push(piece.to_string());
            continue;
        }
        let mut depth = 0i32;
        let mut cur = String::new();
        for c in piece.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            if c == ':' && depth <= 0 {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
            } else {
                cur.push(c);
            }
        }
        if !cur.trim().is_empty() {
            out.push(cur.trim().to_string());
        }
    }
    out
}

/// One part of a pattern (no operator): a name, a glob, with an optional subscript.
fn one(inv: &Inventory, whole: &str, part: &str) -> Result<Vec<String>, String> {
    let ctx = |msg: String| {
        if whole == part {
            format!("host pattern `{whole}`: {msg}")
        } else {
            format!("host pattern `{whole}` (part `{part}`): {msg}")
        }
    };
    if part.is_empty() {
        return Err(ctx(
            "an operator (`&` or `!`) has no pattern after it".into()
        ));
    }
    if part.starts_with('~') {
        return Err(ctx(
            "regular expressions (`~...`) are not supported; use a glob such as `web*`".into(),
        ));
    }
    let (base, subscript) = split_subscript(part).map_err(&ctx)?;
    let hosts = matches(inv, base).map_err(&ctx)?;
    match subscript {
        None => Ok(hosts),
        Some((start, end)) => {
            apply_subscript(&hosts, start, end).map_err(|m| ctx(format!("`{base}` {m}")))
        }
    }
}

/// `name[3]`, `name[-1]`, `name[1:3]`, `name[2:]` -> (name, (start, end)). Brackets
/// holding anything else are a glob character class (`web[!2]`); a plain number is
/// always a subscript, as in Ansible.
#[allow(clippy::type_complexity)]
fn split_subscript(part: &str) -> Result<(&str, Option<(i64, Option<i64>)>), String> {
    let Some(inner) = part.strip_suffix(']') else {
        return Ok((part, None));
    };
    let Some(open) = inner.rfind('[') else {
        return Ok((part, None));
    };
    let (base, sub) = (&inner[..open], &inner[open + 1..]);
    if base.is_empty() {
        return Ok((part, None));
    }
    let is_num = |s: &str| {
        let d = s.strip_prefix('-').unwrap_or(s);
        !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())
    };
    if is_num(sub) {
        let i = sub
            .parse::<i64>()
            .map_err(|_| format!("subscript `[{sub}]` is too large"))?;
        return Ok((base, Some((i, None))));
    }
    for sep in [':', '-'] {
        if let Some((a, b)) = sub.split_once(sep)
            && !a.is_empty()
            && a.chars().all(|c| c.is_ascii_digit())
            && (b.is_empty() || b.chars().all(|c| c.is_ascii_digit()))
        {
            let start = a
                .parse::<i64>()
                .map_err(|_| format!("subscript `[{sub}]` is too large"))?;
            let end = if b.is_empty() {
                -1
            } else {
                b.parse::<i64>()
                    .map_err(|_| format!("subscript `[{sub}]` is too large"))?
            };
            return Ok((base, Some((start, Some(end)))));
        }
    }
    // Not a subscript: a glob character class, left to the glob matcher.
    Ok((part, None))
}

/// Ansible's `_apply_subscript`: `[i]` is one host (negative counts from the end);
/// `[a:b]` is hosts a to b inclusive; `[a:]` is a to the end.
fn apply_subscript(hosts: &[String], start: i64, end: Option<i64>) -> Result<Vec<String>, String> {
    let n = hosts.len() as i64;
    let index = |i: i64| if i < 0 { n + i } else { i };
    match end {
        None => {
            let i = index(start);
            if i < 0 || i >= n {
                return Err(format!(
                    "has {n} host(s); subscript [{start}] is out of range"
                ));
            }
            Ok(vec![hosts[i as usize].clone()])
        }
        Some(end) => {
            let end = if end == -1 { n - 1 } else { end };
            if start >= n {
                return Err(format!(
                    "has {n} host(s); subscript [{start}:] starts past the end"
                ));
            }
            let hi = (end + 1).min(n);
            if hi <= start {
                return Ok(Vec::new());
            }
            Ok(hosts[start as usize..hi as usize].to_vec())
        }
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Hosts named by one plain name or glob.
fn matches(inv: &Inventory, name: &str) -> Result<Vec<String>, String> {
    if name == "all" || name == "*" {
        return Ok(inv.hosts());
    }
    if !is_glob(name) {
        if inv.groups.contains_key(name) {
            return Ok(inv.group_hosts(name));
        }
        if inv.hosts.contains_key(name) {
            return Ok(vec![name.to_string()]);
        }
        if name == "localhost" {
            return Ok(vec!["localhost".to_string()]);
        }
        return Err(unknown(inv, name));
    }
    let glob = GlobBuilder::new(name)
        .literal_separator(false)
        .build()
        .map_err(|e| format!("`{name}` is not a valid glob: {e}"))?
        .compile_matcher();
    let mut set: HashSet<String> = HashSet::new();
    for g in inv.groups.keys() {
        if glob.is_match(g) {
            set.extend(inv.group_hosts(g));
        }
    }
    for h in inv.hosts.keys() {
        if glob.is_match(h) {
            set.insert(h.clone());
        }
    }
    if set.is_empty() {
        return Err(format!(
            "`{name}` matches no host or group{}",
            known_names(inv)
        ));
    }
    Ok(inv
        .hosts
        .keys()
        .filter(|h| set.contains(*h))
        .cloned()
        .collect())
}

fn unknown(inv: &Inventory, name: &str) -> String {
    let candidates = inv
        .groups
        .keys()
        .chain(inv.hosts.keys())
        .map(String::as_str);
    match did_you_mean(name, candidates) {
        Some(s) => format!("no host or group named `{name}` (did you mean `{s}`?)"),
        None => format!("no host or group named `{name}`{}", known_names(inv)),
    }
}

/// "; known groups: a, b, ...; hosts: x, y, ..." (a few of each).
fn known_names(inv: &Inventory) -> String {
    const SHOWN: usize = 8;
    let list = |names: Vec<&String>| {
        let more = names.len().saturating_sub(SHOWN);
        let mut s = names
            .iter()
            .take(SHOWN)
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if more > 0 {
            s.push_str(&format!(" and {more} more"));
        }
        s
    };
    let groups: Vec<&String> = inv
        .groups
        .keys()
        .filter(|g| *g != "all" && *g != "ungrouped")
        .collect();
    let hosts: Vec<&String> = inv.hosts.keys().collect();
    let mut s = String::new();
    if !groups.is_empty() {
        s.push_str(&format!("; known groups: {}", list(groups)));
    }
    if !hosts.is_empty() {
        s.push_str(&format!("; known hosts: {}", list(hosts)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SourceFile;

    fn inv() -> Inventory {
        Inventory::from_ini(&SourceFile::new(
            "h.ini",
            "[web]\nweb1\nweb2\nweb3\n[db]\ndb1\nweb2\n[ctl]\nctl01.example.com\nctl02.example.com\n[app:children]\nweb\ndb\n",
        ))
        .unwrap_or_default()
    }

    fn sel(p: &str) -> Vec<String> {
        inv().select(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn splitting() {
        assert_eq!(split("a:b,c:&d:!e"), vec!["a", "b", "c", "&d", "!e"]);
        assert_eq!(split("web[1:2]:db"), vec!["web[1:2]", "db"]);
        assert_eq!(split("fe80::1"), vec!["fe80::1"]);
    }

    #[test]
    fn operators_apply_unions_then_intersections_then_exclusions() {
        assert_eq!(sel("all").len(), 6);
        assert_eq!(sel("*"), sel("all"));
        assert_eq!(sel("db:web"), vec!["web1", "web2", "web3", "db1"]);
        assert_eq!(sel("web:&db"), vec!["web2"]);
        assert_eq!(sel("web:!db"), vec!["web1", "web3"]);
        assert_eq!(sel("!db:web"), vec!["web1", "web3"]);
        assert_eq!(sel("&db:web:ctl"), vec!["web2"]);
        assert_eq!(
            sel("!web"),
            vec!["db1", "ctl01.example.com", "ctl02.example.com"]
        );
        assert_eq!(sel("web1,db1"), vec!["web1", "db1"]);
    }

    #[test]
    fn subscripts_follow_ansible() {
        assert_eq!(sel("web[0]"), vec!["web1"]);
        assert_eq!(sel("web[-1]"), vec!["web3"]);
        assert_eq!(sel("web[0:1]"), vec!["web1", "web2"]);
        assert_eq!(sel("web[1:]"), vec!["web2", "web3"]);
        assert_eq!(sel("app[1:3]"), vec!["web2", "web3", "db1"]);
        assert!(inv().select("web[5]").is_err());
    }

    #[test]
    fn globs() {
        assert_eq!(sel("ctl*"), vec!["ctl01.example.com", "ctl02.example.com"]);
        assert_eq!(
            sel("*.example.com:web1"),
            vec!["web1", "ctl01.example.com", "ctl02.example.com"]
        );
        assert_eq!(sel("w?b[!2]"), vec!["web1", "web3"]);
        let e = inv().select("zzz*").err().unwrap_or_default();
        assert!(e.contains("`zzz*` matches no host or group"), "{e}");
    }

    #[test]
    fn unknown_names_are_errors_with_suggestions() {
        let e = inv().select("wbe").err().unwrap_or_default();
        assert_eq!(
            e,
            "host pattern `wbe`: no host or group named `wbe` (did you mean `web`?)"
        );
        let e = inv().select("web:qqqqqqq").err().unwrap_or_default();
        assert!(e.starts_with("host pattern `web:qqqqqqq` (part `qqqqqqq`): no host or group named `qqqqqqq`; known groups: web, db, ctl, app; known hosts: web1"), "{e}");
        assert!(inv().select("~web.*").is_err());
        assert!(inv().select("").is_err());
        assert!(inv().select("web:!").is_err());
    }

    #[test]
    fn implicit_localhost() {
        assert_eq!(sel("localhost"), vec!["localhost"]);
        assert_eq!(sel("localhost:web1"), vec!["web1", "localhost"]);
        assert!(inv().select("localhost*").is_err());
    }

    #[test]
    fn odd_patterns_do_not_panic() {
        for p in [
            ":",
            ",",
            "::",
            "[",
            "]",
            "a[",
            "[0]",
            "web[",
            "web[-9999999999999999999]",
            "web[1:0]",
            "web[99999999999999999999:]",
            "!",
            "&",
            "!&",
            "web[a-",
            "**[",
            "web[-1:2]",
            "web[0-1]",
        ] {
            let _ = inv().select(p);
        }
        assert_eq!(sel("web[1:0]"), Vec::<String>::new());
        assert_eq!(sel("web[0-1]"), vec!["web1", "web2"]);
    }
}
