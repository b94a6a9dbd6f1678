//! Host patterns, evaluated as ansible-core 2.19 evaluates them (its
//! `InventoryManager.get_hosts`), wherever a set of hosts is named.
//!
//! - A pattern is split on `,` (or, with no comma, on `:` outside brackets, an IPv6
//!   address or `host:port` staying whole); parts are taken unions first, in the order
//!   written, then intersections (`&x`), then exclusions (`!x`); a pattern of only
//!   `&`/`!` parts starts from `all`.
//! - A part that is a host's name is that host. Otherwise it is matched (as a glob, or
//!   as a regular expression after `~`, anchored at the start as Python's `re.match`)
//!   against every group name, in the order groups were defined, each matching group
//!   giving its hosts; then, when no group matched or the part is a glob or regex (`.`,
//!   `?`, `*`, `[` or `~`), against host names.
//! - A group's hosts are its own, then its children's in the order listed, then their
//!   children's ([`Inventory::group_hosts`]).
//! - `x[i]`, `x[-1]`, `x[a:b]` (inclusive end), `x[a:]` pick from the part's hosts
//!   before duplicates are removed, as Ansible does (so `x[a:0]` is `x[a]`).
//!
//! Unlike Ansible, which warns and goes on with no host, a part that is neither a host
//! nor a group, or a glob that matches nothing, is an error naming the closest name.
//! `localhost` alone is the implicit local host when the inventory does not define it.

use std::collections::HashSet;

use regex::Regex;

use super::Inventory;
use crate::error::did_you_mean;

/// Hosts matching `pattern` in `inv` (see the module docs), in Ansible's order.
pub fn select(inv: &Inventory, pattern: &str) -> Result<Vec<String>, String> {
    let parts = split(pattern);
    if parts.is_empty() {
        return Err(format!("host pattern `{pattern}` is empty"));
    }
    let (mut regular, mut intersect, mut exclude) = (Vec::new(), Vec::new(), Vec::new());
    for p in &parts {
        match p.chars().next() {
            Some('!') => exclude.push(p.as_str()),
            Some('&') => intersect.push(p.as_str()),
            _ => regular.push(p.as_str()),
        }
    }
    if regular.is_empty() {
        regular.push("all");
    }
    let mut selected: Vec<String> = Vec::new();
    for p in regular.into_iter().chain(intersect).chain(exclude) {
        if inv.hosts.contains_key(p) {
            selected.push(p.to_string());
            continue;
        }
        let that = one(inv, pattern, p)?;
        if p.starts_with('!') {
            let drop: HashSet<&String> = that.iter().collect();
            selected.retain(|h| !drop.contains(h));
        } else if p.starts_with('&') {
            let keep: HashSet<&String> = that.iter().collect();
            selected.retain(|h| keep.contains(h));
        } else {
            let existing: HashSet<String> = selected.iter().cloned().collect();
            selected.extend(that.into_iter().filter(|h| !existing.contains(h)));
        }
    }
    let mut seen = HashSet::new();
    selected.retain(|h| seen.insert(h.clone()));
    Ok(selected)
}

/// Ansible's `split_host_pattern`: on `,` when there is one; else the whole pattern when
/// it reads as one address (`fe80::1`, `web:22`), else on `:` and spaces outside
/// brackets.
fn split(pattern: &str) -> Vec<String> {
    if pattern.contains(',') {
        return pattern
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
    }
    let p = pattern.trim();
    let ipv6 = p.matches(':').count() >= 2
        && p.chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    let host_port = p.split_once(':').is_some_and(|(h, port)| {
        !h.is_empty()
            && !h.contains(['!', '&', '~', '*', '?'])
            && !port.is_empty()
            && port.chars().all(|c| c.is_ascii_digit())
    });
    if ipv6 || host_port {
        return vec![p.to_string()];
    }
    // re.findall(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '['
            && let Some(len) = chars[i + 1..].iter().position(|&d| d == ']')
        {
            cur.extend(&chars[i..=i + 1 + len]);
            i += len + 2;
            continue;
        }
        if c.is_whitespace() || matches!(c, ':' | '[' | ']') {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        i += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One part of a pattern (its `&`/`!` ignored): a name, glob or regex, maybe with a
/// subscript.
fn one(inv: &Inventory, whole: &str, part: &str) -> Result<Vec<String>, String> {
    let ctx = |msg: String| {
        if whole.trim() == part {
            format!("host pattern `{whole}`: {msg}")
        } else {
            format!("host pattern `{whole}` (part `{part}`): {msg}")
        }
    };
    let expr = part.strip_prefix(['&', '!']).unwrap_or(part);
    if expr.is_empty() {
        return Err(ctx(
            "an operator (`&` or `!`) has no pattern after it".into()
        ));
    }
    let (base, subscript) = split_subscript(expr).map_err(&ctx)?;
    let hosts = matches(inv, base).map_err(&ctx)?;
    match subscript {
        None => Ok(hosts),
        Some((start, end)) => {
            apply_subscript(&hosts, start, end).map_err(|m| ctx(format!("`{base}` {m}")))
        }
    }
}

/// Ansible's subscript: `(.+)\[(-?\d+|\d+[:-]\d*)\]$`, never on a `~regex`.
#[allow(clippy::type_complexity)]
fn split_subscript(part: &str) -> Result<(&str, Option<(i64, Option<i64>)>), String> {
    if part.starts_with('~') {
        return Ok((part, None));
    }
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
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let number = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("subscript `[{sub}]` is too large"))
    };
    if digits(sub.strip_prefix('-').unwrap_or(sub)) {
        return Ok((base, Some((number(sub)?, None))));
    }
    if let Some(sep) = sub.find([':', '-']) {
        let (a, b) = (&sub[..sep], &sub[sep + 1..]);
        if digits(a) && (b.is_empty() || digits(b)) {
            let end = if b.is_empty() { -1 } else { number(b)? };
            return Ok((base, Some((number(a)?, Some(end)))));
        }
    }
    // Not a subscript: a glob character class, left to the glob matcher.
    Ok((part, None))
}

/// Ansible's `_apply_subscript`, quirks included: `[i]` is one host (negative counts
/// from the end); `[a:b]` hosts a to b inclusive, `[a:]` a to the end, and `[a:0]`
/// (an end of 0 reads as no end) host a.
fn apply_subscript(hosts: &[String], start: i64, end: Option<i64>) -> Result<Vec<String>, String> {
    let n = hosts.len() as i64;
    if n == 0 {
        return Ok(Vec::new());
    }
    match end.filter(|e| *e != 0) {
        None => {
            let i = if start < 0 { n + start } else { start };
            if i < 0 || i >= n {
                return Err(format!(
                    "has {n} host(s); subscript [{start}] is out of range"
                ));
            }
            Ok(vec![hosts[i as usize].clone()])
        }
        Some(end) => {
            let end = if end == -1 { n - 1 } else { end };
            let (lo, hi) = (start.min(n), (end + 1).clamp(0, n));
            Ok(hosts
                .get(lo as usize..hi.max(lo) as usize)
                .unwrap_or_default()
                .to_vec())
        }
    }
}

/// Python's `fnmatch.translate` (what Ansible matches globs with), as a regex.
fn glob_regex(glob: &str) -> String {
    let chars: Vec<char> = glob.chars().collect();
    let mut re = String::from("^(?s:");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                while chars.get(i) == Some(&'*') {
                    i += 1;
                }
                re.push_str(".*");
            }
            '?' => re.push('.'),
            '[' => {
                let mut j = i;
                if chars.get(j) == Some(&'!') {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    re.push_str("\\[");
                    continue;
                }
                let stuff: String = chars[i..j].iter().collect();
                i = j + 1;
                let (negate, body) = match stuff.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, stuff.as_str()),
                };
                if body.is_empty() {
                    re.push_str(if negate { "." } else { "[^\\s\\S]" });
                    continue;
                }
                re.push('[');
                if negate {
                    re.push('^');
                }
                for (k, ch) in body.chars().enumerate() {
                    let range_dash = ch == '-' && k > 0 && k + 1 < body.chars().count();
                    if !range_dash && (matches!(ch, '\\' | '[' | ']' | '&' | '~' | '|' | '-' | '^'))
                    {
                        re.push('\\');
                    }
                    re.push(ch);
                }
                re.push(']');
            }
            other => re.push_str(&regex::escape(&other.to_string())),
        }
    }
    re.push_str(")$");
    re
}

/// The matcher of one part: a `~regex` (anchored at the start) or a glob.
fn matcher(expr: &str) -> Result<Regex, String> {
    let (source, what) = match expr.strip_prefix('~') {
        Some(re) => (format!("^(?:{re})"), "regular expression"),
        None => (glob_regex(expr), "glob"),
    };
    Regex::new(&source).map_err(|e| {
        format!(
            "`{expr}` is not a valid {what}: {}",
            e.to_string().lines().last().unwrap_or_default().trim()
        )
    })
}

/// Ansible's `_enumerate_matches`: the hosts of every matching group (groups in the
/// order defined), then matching hosts; duplicates kept for the subscript.
fn matches(inv: &Inventory, expr: &str) -> Result<Vec<String>, String> {
    let m = matcher(expr)?;
    let groups: Vec<&String> = inv.groups.keys().filter(|g| m.is_match(g)).collect();
    let mut out: Vec<String> = Vec::new();
    for g in &groups {
        out.extend(inv.group_hosts(g));
    }
    let pattern_like = expr.starts_with('~') || expr.contains(['.', '?', '*', '[']);
    if groups.is_empty() || pattern_like {
        out.extend(inv.hosts.keys().filter(|h| m.is_match(h)).cloned());
    }
    if out.is_empty() && groups.is_empty() {
        if expr == "localhost" {
            return Ok(vec!["localhost".to_string()]);
        }
        if expr == "all" {
            return Ok(Vec::new());
        }
        if pattern_like {
            return Err(format!(
                "`{expr}` matches no host or group{}",
                known_names(inv)
            ));
        }
        return Err(unknown(inv, expr));
    }
    Ok(out)
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
        assert_eq!(split("a:b:c:&d:!e"), vec!["a", "b", "c", "&d", "!e"]);
        // As in Ansible: with a comma, only commas split.
        assert_eq!(split("a:b,c:&d"), vec!["a:b", "c:&d"]);
        assert_eq!(split(" a, &b ,!c"), vec!["a", "&b", "!c"]);
        assert_eq!(split("web:22"), vec!["web:22"]);
        assert_eq!(split("web[1:2]:db"), vec!["web[1:2]", "db"]);
        assert_eq!(split("fe80::1"), vec!["fe80::1"]);
    }

    #[test]
    fn operators_apply_unions_then_intersections_then_exclusions() {
        assert_eq!(sel("all").len(), 6);
        assert_eq!(sel("*"), sel("all"));
        assert_eq!(sel("db:web"), vec!["db1", "web2", "web1", "web3"]);
        assert_eq!(sel("web:&db"), vec!["web2"]);
        assert_eq!(sel("web:!db"), vec!["web1", "web3"]);
        assert_eq!(sel("!db:web"), vec!["web1", "web3"]);
        assert_eq!(sel("&db:web:ctl"), vec!["web2"]);
        // `all` is its children in the order defined: ctl, then app (web, db).
        assert_eq!(
            sel("!web"),
            vec!["ctl01.example.com", "ctl02.example.com", "db1"]
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
            vec!["ctl01.example.com", "ctl02.example.com", "web1"]
        );
        assert_eq!(sel("w?b[!2]"), vec!["web1", "web3"]);
        let e = inv().select("zzz*").err().unwrap_or_default();
        assert!(e.contains("`zzz*` matches no host or group"), "{e}");
    }

    #[test]
    fn regexes_match_from_the_start_like_python_re_match() {
        assert_eq!(sel("~web[13]"), vec!["web1", "web3"]);
        assert_eq!(
            sel("~.*example"),
            vec!["ctl01.example.com", "ctl02.example.com"]
        );
        // Anchored at the start only: `eb` is in `web1` but does not start it.
        assert!(inv().select("~eb").is_err());
        assert_eq!(sel("~(web|db)$"), vec!["web1", "web2", "web3", "db1"]);
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
        let e = inv().select("~web(").err().unwrap_or_default();
        assert!(
            e.contains("`~web(` is not a valid regular expression"),
            "{e}"
        );
        assert!(inv().select("").is_err());
        assert!(inv().select("web:!").is_err());
    }

    #[test]
    fn implicit_localhost() {
        assert_eq!(sel("localhost"), vec!["localhost"]);
        assert_eq!(sel("localhost:web1"), vec!["localhost", "web1"]);
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
        assert_eq!(sel("web[1:0]"), vec!["web2"]);
        assert_eq!(sel("web[0-1]"), vec!["web1", "web2"]);
    }
}
